/* Round-to-nearest quantization (docs/FORMAT.md "RTN") and the driver that writes a .moeq
 * file from a model: every checkpoint tensor in checkpoint order, routed-expert matrices (or
 * all linear matrices with --scope all) under the chosen codec, everything else as it was.
 * Fused v5 expert tensors are split per expert (FORMAT.md F-15). */
#include "moeq_quant.h"
#include "moeq_ggml.h"
#include "moeq_tdict.h"
#include "moeq_core.h"
#include "moeq_kernels.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Packs one row of codes q[0..cols) into the 32-element block layout of FORMAT.md ("Int codec
 * layout"); RTN and GPTQ both write through it. */
void moeq_pack_codes_row(const uint8_t *q, int64_t cols, int bits, uint8_t *codes)
{
    for (int64_t b = 0; b < cols / 32; b++) {
        const uint8_t *c = q + 32 * b;
        uint8_t *o = codes + b * 4 * bits;
        switch (bits) {
        case 8: memcpy(o, c, 32); break;
        case 4: for (int k = 0; k < 16; k++) o[k] = (uint8_t)(c[k] | c[k + 16] << 4); break;
        case 2:
            for (int k = 0; k < 8; k++) o[k] = (uint8_t)(c[k] | c[k + 8] << 2 | c[k + 16] << 4 | c[k + 24] << 6);
            break;
        default: {
            uint32_t hb = 0;
            for (int k = 0; k < 8; k++)
                o[k] = (uint8_t)((c[k] & 3) | (c[k + 8] & 3) << 2 | (c[k + 16] & 3) << 4 | (c[k + 24] & 3) << 6);
            for (int k = 0; k < 32; k++) hb |= (uint32_t)(c[k] >> 2 & 1) << k;
            for (int k = 0; k < 4; k++) o[8 + k] = (uint8_t)(hb >> (8 * k));
        }
        }
    }
}

static void quant_row(const float *w, int64_t cols, int bits, int group, int sym, uint8_t *codes,
                      uint16_t *scales, uint16_t *zeros, uint8_t *q)
{
    const int maxq = (1 << bits) - 1, half = 1 << (bits - 1);
    for (int64_t g0 = 0; g0 < cols; g0 += group) {
        const float *x = w + g0;
        const int glen = cols - g0 < group ? (int)(cols - g0) : group;   /* the last group may be shorter */
        float mn = x[0], mx = x[0];
        for (int j = 1; j < glen; j++) {
            mn = x[j] < mn ? x[j] : mn;
            mx = x[j] > mx ? x[j] : mx;
        }
        float scale, zero;
        if (sym) {
            float amax = fabsf(mn) > fabsf(mx) ? fabsf(mn) : fabsf(mx);
            scale = amax > 0 ? amax / (float)(half - 1) : 1.0f;
            for (int j = 0; j < glen; j++) {
                float v = rintf(x[j] / scale);
                v = v < -half ? (float)-half : v > half - 1 ? (float)(half - 1) : v;
                q[g0 + j] = (uint8_t)((int)v + half);
            }
            zero = (float)half;
        } else {
            scale = mx > mn ? (mx - mn) / (float)maxq : (mn != 0 ? fabsf(mn) : 1.0f);
            zero = rintf(-mn / scale);
            for (int j = 0; j < glen; j++) {
                float v = rintf(x[j] / scale) + zero;
                v = v < 0 ? 0.0f : v > (float)maxq ? (float)maxq : v;
                q[g0 + j] = (uint8_t)v;
            }
        }
        scales[g0 / group] = moeq_f32_to_f16(scale);
        if (zeros) zeros[g0 / group] = moeq_f32_to_f16(zero);
    }
    /* pack the row in 32-element blocks (FORMAT.md "Int codec layout") */
    moeq_pack_codes_row(q, cols, bits, codes);
}

moeq_status moeq_rtn_quantize(const float *w, int64_t rows, int64_t cols, int bits, int group, int sym,
                              uint8_t *raw, moeq_error *err)
{
    int g = group ? group : (int)cols;
    moeq_status st = moeq_qmat_check(bits, g, rows, cols, err);
    if (st) return st;
    uint64_t so, zo, total = moeq_qmat_bytes(bits, g, sym, rows, cols, &so, &zo);
    memset(raw, 0, (size_t)total);
    int64_t rb = cols * bits / 8, ng = (cols + g - 1) / g;
    int fail = 0;
#pragma omp parallel
    {
        uint8_t *q = malloc((size_t)cols);
        if (!q) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++)
            if (q)
                quant_row(w + r * cols, cols, bits, g, sym, raw + r * rb, (uint16_t *)(void *)(raw + so) + r * ng,
                          sym ? NULL : (uint16_t *)(void *)(raw + zo) + r * ng, q);
        free(q);
    }
    if (fail) return moeq_fail(err, MOEQ_ERR_NOMEM, "RTN: out of memory");
    return MOEQ_OK;
}

/* Shannon entropy (bits) of the codes of a packed matrix. */
static double code_entropy(const moeq_qmat *q)
{
    double cnt[256] = {0};
    const moeq_kernel_set *ks = &moeq_kernels_ref;
    (void)ks;
    int64_t rb = moeq_qmat_row_bytes(q);
    for (int64_t r = 0; r < q->rows; r++) {
        const uint8_t *b = q->codes + r * rb;
        for (int64_t blk = 0; blk < q->cols / 32; blk++) {
            const uint8_t *p = b + blk * 4 * q->bits;
            for (int k = 0; k < 32; k++) {
                int v;
                switch (q->bits) {
                case 8: v = p[k]; break;
                case 4: v = k < 16 ? p[k] & 15 : p[k - 16] >> 4; break;
                case 2: v = (p[k & 7] >> (2 * (k >> 3))) & 3; break;
                default: v = ((p[k & 7] >> (2 * (k >> 3))) & 3) | ((p[8 + k / 8] >> (k % 8)) & 1) << 2;
                }
                cnt[v]++;
            }
        }
    }
    double n = (double)q->rows * (double)q->cols, h = 0;
    for (int i = 0; i < 256; i++)
        if (cnt[i] > 0) h -= cnt[i] / n * log2(cnt[i] / n);
    return h;
}

typedef struct role { const char *name; int quant; } role;

/* Names of the matrices in scope: routed experts (and, for scope all, every linear). */
static int in_scope(const moeq_model *m, const char *name, moeq_quant_scope scope, int *is_expert)
{
    const moeq_config *c = moeq_model_config(m);
    *is_expert = 0;
    for (int64_t l = 0; l < c->layers; l++) {
        const moeq_layer_view *L = moeq_model_layer(m, l);
        if (L->is_moe)
            for (int64_t e = 0; e < c->n_experts; e++)
                for (int p = 0; p < 3; p++) {
                    moeq_mat v;
                    if (moeq_model_expert(m, l, e, (moeq_proj)p, &v, NULL) == MOEQ_OK && v.tensor &&
                        !strcmp(v.tensor, name)) {
                        *is_expert = 1;
                        return 1;
                    }
                }
        if (scope != MOEQ_SCOPE_ALL) continue;
        const moeq_mat *mats[] = { &L->q, &L->k, &L->v, &L->o, &L->dense_gate, &L->dense_up, &L->dense_down,
                                   &L->shared_gate, &L->shared_up, &L->shared_down,
                                   &L->q_a, &L->q_b, &L->kv_a, &L->kv_b };   /* MLA */
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++)
            if (mats[i]->tensor && !strcmp(mats[i]->tensor, name)) return 1;
    }
    return 0;
}

moeq_status moeq_quant_piece_codec(const moeq_model *m, const moeq_quant_opts *o, const char *tensor,
                                   const char *piece, moeq_codec *out, moeq_error *err)
{
    /* the same order as moeq_quantize_rtn's loop: scope, then rules, then the plan */
    int is_expert;
    moeq_codec cd = { .type = MOEQ_CODEC_RAW, .dtype = MOEQ_DT_UNKNOWN };
    if (in_scope(m, tensor, o->scope, &is_expert)) cd = o->codec;
    if (o->n_rules) {
        moeq_rule_set *rs = NULL;
        moeq_status st = moeq_rule_set_compile(o->rules, o->n_rules, &rs, err);
        if (st != MOEQ_OK) return st;
        const moeq_tensor_rule *rule = moeq_rule_set_match(rs, piece);
        if (rule) cd = rule->codec;
        moeq_rule_set_free(rs);
    }
    if (o->codec_for) o->codec_for(o->cb_user, piece, &cd);
    *out = cd;
    return MOEQ_OK;
}

/* ---- the pieces a quantize run writes, in file order ------------------------------------- */

enum { TF_EXPERT = 1, TF_LINEAR = 2, TF_LAYER = 4, TF_GATE_UP = 8 };
typedef struct tmap { const char *name; int64_t layer, expert; int flags; } tmap;

static int cmp_tmap(const void *a, const void *b)
{
    return strcmp(((const tmap *)a)->name, ((const tmap *)b)->name);
}

static moeq_status tmap_add(tmap **v, size_t *n, size_t *cap, const char *name, int64_t layer, int64_t expert,
                            int flags, moeq_error *err)
{
    if (!name) return MOEQ_OK;
    if (*n == *cap) {
        size_t nc = *cap ? 2 * *cap : 256;
        tmap *p = realloc(*v, nc * sizeof *p);
        if (!p) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
        *v = p;
        *cap = nc;
    }
    (*v)[(*n)++] = (tmap){ name, layer, expert, flags };
    return MOEQ_OK;
}

/* Every tensor a layer view names, with its layer, its expert (per-expert tensors) and whether
 * it is a routed expert or a linear matrix of --scope all: the same sets in_scope walks. Sorted
 * by name; a name listed twice keeps the union of its flags. */
static moeq_status tmap_build(const moeq_model *m, tmap **out, size_t *nout, moeq_error *err)
{
    const moeq_config *c = moeq_model_config(m);
    tmap *v = NULL;
    size_t n = 0, cap = 0;
    moeq_status st = MOEQ_OK;
    for (int64_t l = 0; l < c->layers && st == MOEQ_OK; l++) {
        const moeq_layer_view *L = moeq_model_layer(m, l);
        if (L->is_moe)
            for (int64_t e = 0; e < c->n_experts && st == MOEQ_OK; e++)
                for (int p = 0; p < 3 && st == MOEQ_OK; p++) {
                    moeq_mat x;
                    if (moeq_model_expert(m, l, e, (moeq_proj)p, &x, NULL) == MOEQ_OK && x.tensor)
                        st = tmap_add(&v, &n, &cap, x.tensor, l, x.index < 0 ? e : -1,
                                      TF_EXPERT | TF_LAYER | (p != MOEQ_PROJ_DOWN ? TF_GATE_UP : 0), err);
                }
        const moeq_mat *lin[] = { &L->q, &L->k, &L->v, &L->o, &L->dense_gate, &L->dense_up, &L->dense_down,
                                  &L->shared_gate, &L->shared_up, &L->shared_down,
                                  &L->q_a, &L->q_b, &L->kv_a, &L->kv_b };   /* MLA */
        for (size_t i = 0; i < sizeof lin / sizeof lin[0] && st == MOEQ_OK; i++)
            st = tmap_add(&v, &n, &cap, lin[i]->tensor, l, -1, TF_LINEAR | TF_LAYER, err);
        const moeq_mat *other[] = { &L->router, &L->shared_expert_gate };
        for (size_t i = 0; i < 2 && st == MOEQ_OK; i++)
            st = tmap_add(&v, &n, &cap, other[i]->tensor, l, -1, TF_LAYER, err);
    }
    if (st) { free(v); return st; }
    qsort(v, n, sizeof *v, cmp_tmap);
    size_t k = 0;   /* merge duplicates (fused tensors are named once per expert) */
    for (size_t i = 0; i < n; i++) {
        if (k && !strcmp(v[k - 1].name, v[i].name)) {
            v[k - 1].flags |= v[i].flags;
            if (v[k - 1].expert != v[i].expert) v[k - 1].expert = -1;
            continue;
        }
        v[k++] = v[i];
    }
    *out = v;
    *nout = k;
    return MOEQ_OK;
}

static const tmap *tmap_find(const tmap *v, size_t n, const char *name)
{
    tmap key = { name, 0, 0, 0 };
    return n ? bsearch(&key, v, n, sizeof *v, cmp_tmap) : NULL;
}

moeq_status moeq_quant_pieces(const moeq_model *m, const moeq_quant_opts *o, moeq_quant_piece **out, size_t *nout,
                              int64_t *n_items, moeq_error *err)
{
    *out = NULL;
    *nout = 0;
    if (n_items) *n_items = 0;
    const moeq_checkpoint *ck = moeq_model_checkpoint(m);
    if (!ck) return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: quantize reads a Hugging Face directory, not a "
                              ".moeq file", moeq_model_path(m));
    const moeq_config *c = moeq_model_config(m);
    moeq_rule_set *rs = NULL;
    tmap *tm = NULL;
    size_t ntm = 0, n = 0, cap = 0;
    int64_t *item_of = NULL, items = 0;
    moeq_quant_piece *v = NULL;
    moeq_status st = moeq_rule_set_compile(o->rules, o->n_rules, &rs, err);
    if (st == MOEQ_OK) st = tmap_build(m, &tm, &ntm, err);
    size_t nie = (size_t)(c->layers > 0 ? c->layers : 1) * (size_t)(c->n_experts > 0 ? c->n_experts : 1);
    if (st == MOEQ_OK && !(item_of = malloc(nie * sizeof *item_of))) st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    if (st) goto done;
    for (size_t i = 0; i < nie; i++) item_of[i] = -1;
    int64_t I = c->moe_inter;
    size_t nt = moeq_ckpt_count(ck);
    for (size_t ti = 0; ti < nt && st == MOEQ_OK; ti++) {
        const moeq_tensor *t = moeq_ckpt_tensor(ck, ti);
        /* folded into its F8 weight / MXFP4 blocks */
        if (moeq_model_is_fp8_scale(m, t) || moeq_model_is_mx_scale(m, t)) continue;
        const tmap *tv = tmap_find(tm, ntm, t->name);
        int is_expert = tv && (tv->flags & TF_EXPERT);
        int want = is_expert || (o->scope == MOEQ_SCOPE_ALL && tv && (tv->flags & TF_LINEAR));
        int fused = is_expert && t->ndim >= 3;
        /* gpt_oss: pieces are the experts' [out, in] views, named after the bf16 tensor */
        int strided = fused && c->expert_layout == MOEQ_EXPERTS_GPTOSS;
        char base[512];   /* names fit in 512 bytes (the view's limit) */
        int64_t bshape[3];
        if (!moeq_model_mx_blocks(m, t, base, sizeof base, bshape)) snprintf(base, sizeof base, "%.511s", t->name);
        /* by role, not shape: down [E, H, I] has 2I rows too when H == 2I (glm4_moe fixture) */
        int gate_up = fused && (tv->flags & TF_GATE_UP);
        int64_t np = fused ? t->shape[0] * (gate_up ? 2 : 1) : 1;
        if (n + (size_t)np > cap) {
            size_t nc = cap ? 2 * cap : 1024;
            while (nc < n + (size_t)np) nc *= 2;
            moeq_quant_piece *p = realloc(v, nc * sizeof *p);
            if (!p) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); break; }
            v = p;
            cap = nc;
        }
        int64_t per = fused ? t->shape[1] * t->shape[2] : 0;
        for (int64_t k = 0; k < np && st == MOEQ_OK; k++) {
            moeq_quant_piece *pc = &v[n++];
            memset(pc, 0, sizeof *pc);
            pc->tensor = ti;
            pc->fused = fused;
            pc->matrix = fused || t->ndim == 2;
            pc->unit = tv && (tv->flags & TF_LAYER) ? tv->layer : c->layers;
            pc->item = -1;
            int64_t e = -1;
            if (strided) {
                const int64_t H = c->hidden;
                e = gate_up ? k / 2 : k;
                pc->strided = 1;
                pc->expert = e;
                pc->proj = gate_up ? (k % 2 ? MOEQ_PROJ_UP : MOEQ_PROJ_GATE) : MOEQ_PROJ_DOWN;
                if (gate_up) {
                    snprintf(pc->name, sizeof pc->name, "%s[%lld].%s", base, (long long)e, k % 2 ? "up" : "gate");
                    pc->rows = I; pc->cols = H; pc->off = e * 2 * I * H + (k % 2 ? I * H : 0);
                } else {
                    snprintf(pc->name, sizeof pc->name, "%s[%lld]", base, (long long)e);
                    pc->rows = H; pc->cols = I; pc->off = e * H * I;
                }
            } else if (fused) {
                e = gate_up ? k / 2 : k;
                if (gate_up) {
                    snprintf(pc->name, sizeof pc->name, "%s[%lld].%s", t->name, (long long)e, k % 2 ? "up" : "gate");
                    pc->rows = I; pc->cols = t->shape[2]; pc->off = e * per + (k % 2 ? I * t->shape[2] : 0);
                } else {
                    snprintf(pc->name, sizeof pc->name, "%s[%lld]", t->name, (long long)e);
                    pc->rows = t->shape[1]; pc->cols = t->shape[2]; pc->off = e * per;
                }
            } else {
                snprintf(pc->name, sizeof pc->name, "%s", t->name);
                pc->rows = t->shape[0];
                pc->cols = t->ndim == 2 ? t->shape[1] : 0;
                pc->off = 0;
                if (is_expert) e = tv->expert;
            }
            /* scope, then the first matching rule, then the plan */
            /* an FP8 source matrix kept raw is written dequantized to bf16 (F-15 has no FP8) */
            /* and MXFP4 blocks as the bf16 tensor they encode */
            const moeq_dtype keep = t->dtype == MOEQ_DT_F8_E4M3 || t->dtype == MOEQ_DT_U8 ? MOEQ_DT_BF16 : t->dtype;
            moeq_codec cd = { .type = MOEQ_CODEC_RAW, .dtype = keep };
            if (want && pc->matrix) cd = o->codec;
            const moeq_tensor_rule *rule = pc->matrix ? moeq_rule_set_match(rs, pc->name) : NULL;
            if (rule) cd = rule->codec;
            if (pc->matrix && o->codec_for) o->codec_for(o->cb_user, pc->name, &cd);
            if (cd.type == MOEQ_CODEC_RAW && cd.dtype == MOEQ_DT_UNKNOWN) cd.dtype = keep;
            pc->codec = cd;
            if (cd.type == MOEQ_CODEC_RAW && cd.dtype != keep) {
                st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "tensor '%s': converting %s to another float dtype "
                               "is not supported; use keep or an int codec", pc->name, moeq_dtype_name(t->dtype));
            } else if (cd.type != MOEQ_CODEC_RAW && !pc->matrix) {
                st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "tensor '%s': a matrix codec needs a 2-D tensor", pc->name);
            } else if (cd.type != MOEQ_CODEC_RAW) {   /* int or ggml */
                moeq_error e2;
                if (moeq_codec_check(&cd, pc->rows, pc->cols, &e2))
                    st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "tensor '%s' [%lld, %lld]: %s", pc->name,
                                   (long long)pc->rows, (long long)pc->cols, e2.detail);
                /* a routed expert's pieces are one work item (gate and up share a factorization) */
                if (is_expert && e >= 0 && e < c->n_experts && pc->unit < c->layers) {
                    int64_t *slot = &item_of[pc->unit * c->n_experts + e];
                    if (*slot < 0) *slot = items++;
                    pc->item = *slot;
                } else pc->item = items++;
            }
        }
    }
done:
    free(item_of);
    free(tm);
    moeq_rule_set_free(rs);
    if (st) { free(v); return st; }
    *out = v;
    *nout = n;
    if (n_items) *n_items = items;
    return MOEQ_OK;
}

moeq_status moeq_codec_quantize_rtn(const moeq_codec *c, const float *w, int64_t rows, int64_t cols, uint8_t *raw,
                                    moeq_error *err)
{
    if (c->type == MOEQ_CODEC_GGML) return moeq_ggml_quantize_rows((moeq_ggml_type)c->gtype, w, rows, cols, NULL, raw, err);
    if (c->type == MOEQ_CODEC_TDICT)   /* raw: moeq_codec_raw_bytes (the bound) */
        return moeq_tdict_quantize(w, rows, cols, NULL, NULL, 0, raw, moeq_tdict_raw_bound(rows, cols), NULL, NULL, err);
    if (c->type != MOEQ_CODEC_INT) return moeq_fail(err, MOEQ_ERR_MISUSE, "RTN: not a matrix codec");
    return moeq_rtn_quantize(w, rows, cols, c->bits, c->group, c->sym, raw, err);
}

/* float -> bf16, round to nearest even, NaN kept quiet (as unpack rounds). */
static void moeq_f32_to_bf16_rows(const float *src, uint16_t *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t x;
        memcpy(&x, &src[i], 4);
        if ((x & 0x7fffffffu) > 0x7f800000u) dst[i] = (uint16_t)((x >> 16) | 0x40u);
        else dst[i] = (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
    }
}

moeq_status moeq_quantize_pieces_write(const moeq_model *m, const moeq_quant_opts *o, const moeq_quant_piece *pcs,
                                       size_t npcs, const char *out_path, moeq_quant_result *res, moeq_error *err)
{
    memset(res, 0, sizeof *res);
    const moeq_checkpoint *ck = moeq_model_checkpoint(m);
    if (!ck) return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: quantize reads a Hugging Face directory, not a "
                              ".moeq file", moeq_model_path(m));
    moeq_status st = MOEQ_OK;
    moeq_pack_writer *w = NULL;
    float *wf = NULL;
    uint8_t *raw = NULL;
    size_t wf_cap = 0, raw_cap = 0;
    st = moeq_pack_writer_open(out_path, o->zstd_level, &w, err);
    if (o->opened) st = o->opened(o->cb_user, st, err);
    if (st) goto done;
    /* embedded files (F-10) */
    static const char *const files[] = { "config.json", "tokenizer.json", "tokenizer_config.json",
                                         "generation_config.json", "special_tokens_map.json" };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char p[4600];
        snprintf(p, sizeof p, "%s/%s", moeq_ckpt_dir(ck), files[i]);
        FILE *fp = fopen(p, "rb");
        if (!fp) {
            if (i == 0) { st = moeq_fail(err, MOEQ_ERR_NOT_FOUND, "%s: cannot open", p); goto done; }
            continue;
        }
        fseek(fp, 0, SEEK_END);
        long len = ftell(fp);
        fseek(fp, 0, SEEK_SET);
        char *buf = len >= 0 ? malloc((size_t)len + 1) : NULL;
        size_t got = buf ? fread(buf, 1, (size_t)len, fp) : 0;
        fclose(fp);
        if (!buf || got != (size_t)len) {
            free(buf);
            st = moeq_fail(err, MOEQ_ERR_IO, "%s: cannot read", p);
            goto done;
        }
        if (i == 0 && (moeq_model_config(m)->fp8 || moeq_model_config(m)->mxfp4)) {
            /* the packed file holds no FP8 weights (kept matrices are bf16): its config.json, and
             * so an unpacked directory's, must not claim quantization_config fp8 */
            json_t *cj = json_loadb(buf, got, 0, NULL);
            char *txt = NULL;
            if (cj && json_object_del(cj, "quantization_config") == 0)
                txt = json_dumps(cj, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            json_decref(cj);
            if (txt) {
                free(buf);
                buf = txt;
                got = strlen(txt);
            }
        }
        st = moeq_pack_write_file(w, files[i], buf, got, err);
        free(buf);
        if (st) goto done;
    }
    size_t n = moeq_ckpt_count(ck);
    double code_bits = 0, total_bits = 0, ent_bits = 0, ent_w = 0;   /* entropy over int-codec weights */
    for (size_t i = 0; i < n; i++) {
        const moeq_tensor *t = moeq_ckpt_tensor(ck, i);
        if (moeq_model_is_fp8_scale(m, t) || moeq_model_is_mx_scale(m, t)) continue;
        moeq_dtype sdt = t->dtype == MOEQ_DT_F8_E4M3 ? MOEQ_DT_BF16 : t->dtype;   /* as unpack writes it */
        char base[600];
        int64_t bshape[3];
        if (moeq_model_mx_blocks(m, t, base, sizeof base, bshape))   /* MXFP4: the bf16 tensor it encodes */
            st = moeq_pack_write_source(w, base, MOEQ_DT_BF16, 3, bshape, err);
        else
            st = moeq_pack_write_source(w, t->name, sdt, t->ndim, t->shape, err);
        if (st) goto done;
    }
    for (size_t k = 0; k < npcs; k++) {
        const moeq_quant_piece *pc = &pcs[k];
        const moeq_tensor *t = moeq_ckpt_tensor(ck, pc->tensor);
        const moeq_codec cd = pc->codec;
        const int fused = pc->fused;
        size_t es = moeq_dtype_size(t->dtype);
        uint64_t before = fused ? (uint64_t)(pc->rows * pc->cols) * es : t->nbytes, stored = 0;
        int64_t shape2[2] = { pc->rows, pc->cols };
        double ent = -1;
        char src_name[600];
        int64_t bshape[3];
        if (!moeq_model_mx_blocks(m, t, src_name, sizeof src_name, bshape)) snprintf(src_name, sizeof src_name, "%s", t->name);
        moeq_mat xv = { 0 };   /* a strided piece's expert view (gpt_oss) */
        if (pc->strided && (st = moeq_model_expert(m, pc->unit, pc->expert, (moeq_proj)pc->proj, &xv, err))) break;
        if (pc->strided) before = t->dtype == MOEQ_DT_U8 ? (uint64_t)(pc->rows * pc->cols) * 17 / 32
                                                          : (uint64_t)(pc->rows * pc->cols) * es;
        if (cd.type == MOEQ_CODEC_RAW && pc->strided) {
            /* the [rows, cols] matrix in the kept dtype (bf16 for MXFP4: exact) */
            size_t nel = (size_t)(pc->rows * pc->cols), oes = moeq_dtype_size(cd.dtype);
            if (nel > wf_cap) { free(wf); wf = malloc(nel * sizeof *wf); wf_cap = wf ? nel : 0; }
            if (nel * oes > raw_cap) { free(raw); raw = malloc(nel * oes); raw_cap = raw ? nel * oes : 0; }
            if (!wf || !raw) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for '%s'", pc->name); break; }
            moeq_mat_to_f32(&xv, 0, pc->rows, wf);
            if (cd.dtype == MOEQ_DT_F32) memcpy(raw, wf, nel * 4);
            else if (cd.dtype == MOEQ_DT_F16)
                for (size_t i = 0; i < nel; i++) ((uint16_t *)(void *)raw)[i] = moeq_f32_to_f16(wf[i]);
            else moeq_f32_to_bf16_rows(wf, (uint16_t *)(void *)raw, (int64_t)nel);
            st = moeq_pack_write_tensor(w, pc->name, 2, shape2, &cd, src_name, pc->off, raw, nel * oes, &stored, err);
        } else if (cd.type == MOEQ_CODEC_RAW && t->dtype == MOEQ_DT_F8_E4M3) {
            /* dequantized per block, rounded to bf16 */
            moeq_mat v = moeq_model_tensor_view(m, t);
            size_t nel = (size_t)(v.rows * v.cols);
            if (nel > wf_cap) { free(wf); wf = malloc(nel * sizeof *wf); wf_cap = wf ? nel : 0; }
            if (nel * 2 > raw_cap) { free(raw); raw = malloc(nel * 2); raw_cap = raw ? nel * 2 : 0; }
            if (!wf || !raw) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for '%s'", pc->name); break; }
            moeq_mat_to_f32(&v, 0, v.rows, wf);
            moeq_f32_to_bf16_rows(wf, (uint16_t *)(void *)raw, (int64_t)nel);
            st = moeq_pack_write_tensor(w, pc->name, t->ndim, t->shape, &cd, t->name, 0, raw, nel * 2, &stored, err);
        } else if (cd.type == MOEQ_CODEC_RAW) {
            const unsigned char *src = (const unsigned char *)t->data + (size_t)pc->off * es;
            st = moeq_pack_write_tensor(w, pc->name, fused ? 2 : t->ndim, fused ? shape2 : t->shape, &cd,
                                        t->name, pc->off, src, (size_t)before, &stored, err);
        } else {   /* int or ggml codec */
            size_t nel = (size_t)(pc->rows * pc->cols);
            uint64_t rsz = moeq_codec_raw_bytes(&cd, pc->rows, pc->cols);
            if (rsz > raw_cap) { free(raw); raw = malloc((size_t)rsz); raw_cap = raw ? (size_t)rsz : 0; }
            if (!raw) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for '%s'", pc->name); break; }
            int given = 0;
            if (o->provide && (st = o->provide(o->cb_user, k, pc, raw, (size_t)rsz, &given, err))) break;
            if (!given) {
                if (nel > wf_cap) { free(wf); wf = malloc(nel * sizeof *wf); wf_cap = wf ? nel : 0; }
                if (!wf) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for '%s'", pc->name); break; }
                moeq_mat v = { .tensor = t->name, .index = -1, .dtype = t->dtype, .rows = pc->rows, .cols = pc->cols,
                               .data = (const unsigned char *)t->data + (size_t)pc->off * es };
                if (t->dtype == MOEQ_DT_F8_E4M3) v = moeq_model_tensor_view(m, t);   /* with its scales */
                if (pc->strided) v = xv;
                moeq_mat_to_f32(&v, 0, pc->rows, wf);
                st = o->quantize ? o->quantize(o->cb_user, pc->name, wf, pc->rows, pc->cols, &cd, raw, err)
                                 : moeq_codec_quantize_rtn(&cd, wf, pc->rows, pc->cols, raw, err);
                if (st) break;
            }
            if (cd.type == MOEQ_CODEC_TDICT) rsz = moeq_tdict_size_of(raw);   /* coded: its header says */
            double nw = (double)nel;
            if (cd.type == MOEQ_CODEC_INT) {
                int g = cd.group ? cd.group : (int)pc->cols;
                uint64_t so, zo;
                moeq_qmat_bytes(cd.bits, g, cd.sym, pc->rows, pc->cols, &so, &zo);
                moeq_qmat q = { .bits = cd.bits, .group = g, .sym = cd.sym, .rows = pc->rows, .cols = pc->cols,
                                .codes = raw, .scales = (const uint16_t *)(void *)(raw + so),
                                .zeros = cd.sym ? NULL : (const uint16_t *)(void *)(raw + zo) };
                ent = code_entropy(&q);
                code_bits += nw * cd.bits;
                total_bits += nw * cd.bits + (double)(pc->rows * ((pc->cols + g - 1) / g)) * (cd.sym ? 16 : 32);
            } else if (cd.type == MOEQ_CODEC_TDICT) {   /* the coded size: codewords, and with levels and offsets */
                double cwb = 8.0 * (double)(rsz - moeq_tdict_raw_size(pc->rows, 0));
                code_bits += cwb;
                total_bits += 8.0 * (double)rsz;
            } else {   /* ggml blocks interleave codes and scales: both counts are the type's bits per weight */
                double bpw = moeq_codec_bpw(&cd, pc->cols);
                code_bits += nw * bpw;
                total_bits += nw * bpw;
            }
            st = moeq_pack_write_tensor(w, pc->name, 2, shape2, &cd, src_name, pc->off, raw, (size_t)rsz,
                                        &stored, err);
            res->quant_weights += (int64_t)nel;
            res->quantized++;
            if (ent >= 0) { ent_bits += nw * ent; ent_w += nw; }
            res->raw_bytes_out += rsz;
        }
        if (st) break;
        /* the piece is written: drop its mapped pages (docs/quantize.md, "Memory") */
        if (pc->strided) moeq_mat_release(&xv);
        else moeq_pages_release((const unsigned char *)t->data + (size_t)pc->off * es, (size_t)before);
        if (cd.type == MOEQ_CODEC_RAW) res->raw_bytes_out += before;
        res->tensors++;
        res->bytes_in += before;
        res->bytes_out += stored;
        if (o->progress)
            o->progress(o->user, res->tensors, -1, pc->name, fused ? 2 : t->ndim, fused ? shape2 : t->shape, &cd,
                        before, stored, ent);
    }
    if (st) goto done;
    if (res->quant_weights > 0) {
        res->code_bits = code_bits / (double)res->quant_weights;
        res->total_bits = total_bits / (double)res->quant_weights;
        res->entropy_bits = ent_w > 0 ? ent_bits / ent_w : 0;
    }
    st = moeq_pack_writer_finish(w, o->metadata_json, err);
    w = NULL;
    if (st == MOEQ_OK) {
        FILE *fp = fopen(out_path, "rb");
        if (fp) {
            fseek(fp, 0, SEEK_END);
            res->file_bytes = (uint64_t)ftell(fp);
            fclose(fp);
        }
    }
done:
    if (w) moeq_pack_writer_abort(w);
    free(wf);
    free(raw);
    return st;
}

moeq_status moeq_quantize_rtn(const moeq_model *m, const moeq_quant_opts *o, const char *out_path,
                              moeq_quant_result *res, moeq_error *err)
{
    memset(res, 0, sizeof *res);
    moeq_quant_piece *pcs = NULL;
    size_t n = 0;
    moeq_status st = moeq_quant_pieces(m, o, &pcs, &n, NULL, err);
    if (st == MOEQ_OK) st = moeq_quantize_pieces_write(m, o, pcs, n, out_path, res, err);
    free(pcs);
    return st;
}
