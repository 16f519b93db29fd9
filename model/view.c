/* The model view: config.json + checkpoint resolved through the family table into per-layer
 * matrix views that point into the mapping (no copies). Every tensor the forward pass uses is
 * checked once here for presence, dtype and exact shape, so later code can trust the views. */
#include "moeq_model.h"
#include "formats/family.h"
#include "moeq_pack.h"
#include "moeq_tdict.h"
#include "moeq_ggml.h"
#include "moeq_prune.h"
#include "moeq_core.h"
#include "moeq_gguf.h"
#include "formats/gguf_model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CONFIG_MAX_BYTES ((long)16 << 20)   /* config.json is a few KB; refuse absurd files */
#define NAME_MAX_LEN 512

enum { CAT_ATTN, CAT_ROUTER, CAT_SHARED, CAT_ROUTED, CAT_EMBED, CAT_OTHER, CAT_N };

struct moeq_model {
    char *path;
    moeq_config cfg;
    moeq_checkpoint *ckpt;       /* NULL for a packed model */
    moeq_pack *pack;             /* a .moeq file, else NULL */
    moeq_tensor *psrc;           /* packed: one tensor per source (docs/FORMAT.md F-15) */
    size_t npsrc;
    moeq_gguf *gguf;             /* a GGUF file, else NULL */
    moeq_gguf_src *gsrc;         /* its weights under the family's names, sorted */
    size_t ngsrc;
    int fused;
    moeq_layer_view *layers;
    /* per-expert layout: [layer][expert][GATE/UP/DOWN]; NULL entries for dense layers */
    const moeq_tensor **experts;
    /* fused layout: per layer, NULL for dense layers (MXFP4: the *_blocks tensors) */
    const moeq_tensor **fused_gate_up, **fused_down;
    /* MOEQ_EXPERTS_GPTOSS, per layer: biases [E, 2I] / [E, H]; MXFP4 *_scales */
    const moeq_tensor **gu_bias, **down_bias, **gu_scales, **down_scales;
    moeq_mat embed, lm_head;
    moeq_vec final_norm, final_norm_bias, lm_head_bias;
    moeq_param_counts counts;
    /* overrides (moeq_model_set_override): float32 replacements the accessors return */
    const float **xover;         /* [layer][expert][GATE/UP/DOWN], NULL until the first one */
    moeq_layer_view *lover;      /* [layer] copies with overridden matrices */
    uint8_t *lover_on;           /* [layer] 1 when lover[layer] is the view to return */
    moeq_mat hover[2];           /* embedding, LM head overrides (moeq_model_set_head_override) */
    uint8_t hover_on[2];
    int32_t *widths;             /* pruned: [layer * n_experts + e] from config.json, else NULL */
    moeq_release_mode release;   /* forward pass page release (moeq_model_set_release) */
};

/* Resolution state: the tensors claimed so far (to count the rest as "other"). */
typedef struct rctx {
    moeq_model *m;
    moeq_error *err;
    const moeq_tensor **used;
    size_t n_used, cap_used;
    int64_t cat[CAT_N];
} rctx;

/* Tensor lookup over a checkpoint or, for a packed model, over its sources. */
static const moeq_tensor *mfind(const moeq_model *m, const char *name)
{
    if (m->gguf) {
        const moeq_gguf_src *s = moeq_gguf_src_find(m->gsrc, m->ngsrc, name);
        return s ? &s->t : NULL;
    }
    if (!m->pack) return moeq_ckpt_find(m->ckpt, name);
    /* psrc[i] is source i of the pack; the pack's lookup is a binary search */
    const moeq_pack_source *s = moeq_pack_find_source(m->pack, name);
    return s ? &m->psrc[s - moeq_pack_source_at(m->pack, 0)] : NULL;
}
static size_t mcount(const moeq_model *m)
{
    return m->gguf ? m->ngsrc : m->pack ? m->npsrc : moeq_ckpt_count(m->ckpt);
}
static const moeq_tensor *mtensor(const moeq_model *m, size_t i)
{
    if (m->gguf) return i < m->ngsrc ? &m->gsrc[i].t : NULL;
    return m->pack ? (i < m->npsrc ? &m->psrc[i] : NULL) : moeq_ckpt_tensor(m->ckpt, i);
}

/* A packed piece with an int codec turns the view into a kernel view (mat->q). */
static void pack_fix(const moeq_model *m, moeq_mat *v, int64_t elem_off)
{
    if (m->gguf && v->tensor && v->dtype == MOEQ_DT_OTHER) {
        /* a GGUF block type: the view's tensor is one of m->gsrc (moeq_gguf_src starts with it) */
        const moeq_gguf_src *s = moeq_gguf_src_find(m->gsrc, m->ngsrc, v->tensor);
        if (s) {
            v->gtype = s->gtype;
            v->grow = s->row_bytes;
        }
        return;
    }
    if (!m->pack || !v->tensor) return;
    const moeq_pack_tensor *t = moeq_pack_find_piece(m->pack, v->tensor, elem_off);
    if (!t) return;
    if (t->codec.type == MOEQ_CODEC_INT) {
        v->q = &t->q;
        v->dtype = MOEQ_DT_OTHER;
    } else if (t->codec.type == MOEQ_CODEC_TDICT) {   /* t1d: its own kernel (moeq_tdict.h), data = its raw bytes */
        v->gtype = MOEQ_TDICT_GTYPE;
        v->grow = 0;
        v->dtype = MOEQ_DT_OTHER;
    } else if (t->codec.type == MOEQ_CODEC_GGML) {   /* a ggml block type: the GGUF weights' kernels */
        v->gtype = t->codec.gtype;
        v->grow = moeq_ggml_row_bytes((moeq_ggml_type)t->codec.gtype, t->shape[1]);
        v->dtype = MOEQ_DT_OTHER;
    } else {
        v->dtype = t->codec.dtype;
    }
    v->data = t->data;
}

static void fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t n = 0;
    int w = snprintf(buf, cap, "[");
    if (w > 0) n = (size_t)w;
    for (int i = 0; i < ndim && n < cap; i++) {
        w = snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
        if (w < 0) return;
        n += (size_t)w;
    }
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

static moeq_status claim(rctx *r, const moeq_tensor *t, int cat)
{
    if (r->n_used == r->cap_used) {
        size_t cap = r->cap_used ? r->cap_used * 2 : 256;
        const moeq_tensor **nu = realloc(r->used, cap * sizeof *nu);
        if (!nu) return moeq_fail(r->err, MOEQ_ERR_NOMEM, "model view: out of memory");
        r->used = nu;
        r->cap_used = cap;
    }
    r->used[r->n_used++] = t;
    r->cat[cat] += t->numel;
    return MOEQ_OK;
}

/* The block-scale tensor of an FP8 weight: NAME_scale_inv (DeepSeek's "weight_scale_inv"). */
static const moeq_tensor *fp8_scale_of(const moeq_model *m, const moeq_tensor *t)
{
    char name[NAME_MAX_LEN + 16];
    int w = snprintf(name, sizeof name, "%s_scale_inv", t->name);
    return w > 0 && (size_t)w < sizeof name ? mfind(m, name) : NULL;
}

/* An F8_E4M3 matrix of a source with quantization_config fp8 (CF-11): its scale tensor must
 * exist, be F32 or BF16 and have the ceil-sized grid of the configured blocks. The scale is
 * claimed with the "other" parameters. */
static moeq_status check_fp8(rctx *r, const moeq_tensor *t, int ndim, const int64_t *shape)
{
    const moeq_config *c = &r->m->cfg;
    if (!c->fp8)
        return moeq_fail(r->err, MOEQ_ERR_UNSUPPORTED, "%s: tensor '%s': dtype F8_E4M3 without "
                         "quantization_config.quant_method \"fp8\" in config.json (block scales unknown)",
                         t->file, t->name);
    if (ndim != 2)
        return moeq_fail(r->err, MOEQ_ERR_UNSUPPORTED, "%s: tensor '%s': F8_E4M3 is supported for 2-D weights "
                         "only", t->file, t->name);
    const moeq_tensor *sc = fp8_scale_of(r->m, t);
    if (!sc)
        return moeq_fail(r->err, MOEQ_ERR_FORMAT, "%s: tensor '%s_scale_inv' not found: F8_E4M3 weight '%s' "
                         "needs its block scales", t->file, t->name, t->name);
    int64_t gr = (shape[0] + c->fp8_block_rows - 1) / c->fp8_block_rows;
    int64_t gc = (shape[1] + c->fp8_block_cols - 1) / c->fp8_block_cols;
    if ((sc->dtype != MOEQ_DT_F32 && sc->dtype != MOEQ_DT_BF16) || sc->ndim != 2 || sc->shape[0] != gr ||
        sc->shape[1] != gc || sc->nbytes != (uint64_t)sc->numel * moeq_dtype_size(sc->dtype) || !sc->data) {
        char got[160];
        fmt_shape(got, sizeof got, sc->ndim, sc->shape);
        return moeq_fail(r->err, MOEQ_ERR_FORMAT, "%s: tensor '%s': %s %s, expected F32 or BF16 [%lld, %lld] "
                         "(%lld x %lld blocks of [%lld, %lld])", sc->file, sc->name,
                         sc->dtype_name[0] ? sc->dtype_name : moeq_dtype_name(sc->dtype), got, (long long)gr,
                         (long long)gc, (long long)c->fp8_block_rows, (long long)c->fp8_block_cols,
                         (long long)shape[0], (long long)shape[1]);
    }
    if (gc > 4096)
        return moeq_fail(r->err, MOEQ_ERR_UNSUPPORTED, "%s: tensor '%s': %lld scale blocks per row (at most "
                         "4096)", sc->file, sc->name, (long long)gc);
    return claim(r, sc, CAT_OTHER);   /* params.total stays the element count of every tensor */
}

/* Checks dtype and exact shape of a tensor the model needs. */
static moeq_status check_tensor(rctx *r, const moeq_tensor *t, int ndim, const int64_t *shape)
{
    /* GGUF weights of a block type were checked by formats/gguf_model.c (type, ne, bytes) */
    const int gblock = r->m->gguf && t->dtype == MOEQ_DT_OTHER && ndim == 2;
    if (t->dtype == MOEQ_DT_F8_E4M3) {
        moeq_status st = check_fp8(r, t, ndim, shape);
        if (st) return st;
    } else if (!gblock && t->dtype != MOEQ_DT_BF16 && t->dtype != MOEQ_DT_F16 && t->dtype != MOEQ_DT_F32)
        return moeq_fail(r->err, MOEQ_ERR_UNSUPPORTED,
                         "%s: tensor '%s': dtype %s is not supported (BF16, F16 or F32)", t->file,
                         t->name, t->dtype_name[0] ? t->dtype_name : moeq_dtype_name(t->dtype));
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char got[160], want[160];
        fmt_shape(got, sizeof got, t->ndim, t->shape);
        fmt_shape(want, sizeof want, ndim, shape);
        return moeq_fail(r->err, MOEQ_ERR_FORMAT,
                         "%s: tensor '%s': shape %s does not match %s expected from config.json",
                         t->file, t->name, got, want);
    }
    /* the safetensors reader checks this too; the views below rely on it */
    if ((!gblock && t->nbytes != (uint64_t)t->numel * moeq_dtype_size(t->dtype)) || !t->data)
        return moeq_fail(r->err, MOEQ_ERR_FORMAT, "%s: tensor '%s': %llu data bytes for %lld elements",
                         t->file, t->name, (unsigned long long)t->nbytes, (long long)t->numel);
    return MOEQ_OK;
}

/* Finds the first present name among NULL-terminated alternatives (or a single pattern when
 * n_alt == 1). Missing and required: MOEQ_ERR_FORMAT naming every name tried. */
static moeq_status find_alt(rctx *r, const char *const *pats, int n_alt, int64_t layer, int64_t expert,
                            int required, int ndim, const int64_t *shape, int cat,
                            const moeq_tensor **out)
{
    char name[NAME_MAX_LEN], tried[3 * NAME_MAX_LEN];
    size_t nt = 0;
    tried[0] = '\0';
    *out = NULL;
    for (int i = 0; i < n_alt && pats[i]; i++) {
        if (moeq_family_name(name, sizeof name, pats[i], layer, expert) != 0)
            return moeq_fail(r->err, MOEQ_ERR_MISUSE, "model view: tensor name pattern too long");
        const moeq_tensor *t = mfind(r->m, name);
        if (t) {
            moeq_status st = check_tensor(r, t, ndim, shape);
            if (st) return st;
            if ((st = claim(r, t, cat))) return st;
            *out = t;
            return MOEQ_OK;
        }
        int w = snprintf(tried + nt, sizeof tried - nt, "%s'%s'", i ? " or " : "", name);
        if (w > 0 && (size_t)w < sizeof tried - nt) nt += (size_t)w;
    }
    if (!required) return MOEQ_OK;
    char want[160];
    fmt_shape(want, sizeof want, ndim, shape);
    return moeq_fail(r->err, MOEQ_ERR_FORMAT, "%s: tensor %s not found (expected shape %s)",
                     r->m->ckpt && moeq_ckpt_dir(r->m->ckpt) ? moeq_ckpt_dir(r->m->ckpt) : r->m->path, tried, want);
}

static moeq_status find1(rctx *r, const char *pat, int64_t layer, int required, int ndim,
                         const int64_t *shape, int cat, const moeq_tensor **out)
{
    const char *pats[2] = { pat, NULL };
    *out = NULL;
    if (!pat) {
        if (!required) return MOEQ_OK;
        return moeq_fail(r->err, MOEQ_ERR_MISUSE, "model view: family '%s' has no tensor name for a "
                         "required weight", r->m->cfg.model_type);
    }
    return find_alt(r, pats, 1, layer, -1, required, ndim, shape, cat, out);
}

static moeq_mat mat_of_m(const moeq_model *mod, const moeq_tensor *t)
{
    moeq_mat m = { 0 };
    m.index = -1;
    if (!t) return m;
    m.tensor = t->name;
    m.dtype = t->dtype;
    m.rows = t->shape[0];
    m.cols = t->ndim > 1 ? t->shape[1] : 1;
    m.data = t->data;
    if (t->dtype == MOEQ_DT_F8_E4M3) {   /* check_fp8 validated the scale at open */
        const moeq_tensor *sc = fp8_scale_of(mod, t);
        if (sc) {
            m.scale = sc->data;
            m.scale_dtype = sc->dtype;
            m.scale_cols = sc->shape[1];
            m.scale_tensor = sc->name;
            m.block_rows = mod->cfg.fp8_block_rows;
            m.block_cols = mod->cfg.fp8_block_cols;
        }
    }
    return m;
}
#define mat_of(t) mat_of_m(r->m, (t))

static moeq_vec vec_of(const moeq_tensor *t)
{
    moeq_vec v = { 0 };
    if (!t) return v;
    v.tensor = t->name;
    v.dtype = t->dtype;
    v.n = t->numel;
    v.data = t->data;
    return v;
}

#define SHAPE(...) ((const int64_t[]){ __VA_ARGS__ })
#define NDIM(...) ((int)(sizeof(SHAPE(__VA_ARGS__)) / sizeof(int64_t)))
#define FIND(pat, layer, req, cat, outp, ...)                                                  \
    find1(r, (pat), (layer), (req), NDIM(__VA_ARGS__), SHAPE(__VA_ARGS__), (cat), (outp))

/* MLA (attn_mla.c): q LoRA or q_proj, kv LoRA with the decoupled rope part, o_proj. */
static moeq_status resolve_mla(rctx *r, int64_t l, moeq_layer_view *lv)
{
    const moeq_config *c = &r->m->cfg;
    const moeq_family *f = c->family;
    const int64_t H = c->hidden, qd = c->heads * c->head_dim, QL = c->q_lora_rank, R = c->kv_lora_rank;
    const moeq_tensor *t;
    moeq_status st;
    if (QL > 0) {
        if ((st = FIND(f->q_a, l, 1, CAT_ATTN, &t, QL, H))) return st;
        lv->q_a = mat_of(t);
        if ((st = FIND(f->q_a_norm, l, 1, CAT_ATTN, &t, QL))) return st;
        lv->q_a_norm = vec_of(t);
        if ((st = FIND(f->q_b, l, 1, CAT_ATTN, &t, qd, QL))) return st;
        lv->q_b = mat_of(t);
    } else {
        if ((st = FIND(f->q, l, 1, CAT_ATTN, &t, qd, H))) return st;
        lv->q = mat_of(t);
    }
    if ((st = FIND(f->kv_a, l, 1, CAT_ATTN, &t, R + c->qk_rope_dim, H))) return st;
    lv->kv_a = mat_of(t);
    if ((st = FIND(f->kv_a_norm, l, 1, CAT_ATTN, &t, R))) return st;
    lv->kv_a_norm = vec_of(t);
    if ((st = FIND(f->kv_b, l, 1, CAT_ATTN, &t, c->heads * (c->qk_nope_dim + c->v_head_dim), R))) return st;
    lv->kv_b = mat_of(t);
    if ((st = FIND(f->o, l, 1, CAT_ATTN, &t, H, c->heads * c->v_head_dim))) return st;
    lv->o = mat_of(t);
    return MOEQ_OK;
}

static moeq_status resolve_attention(rctx *r, int64_t l, moeq_layer_view *lv)
{
    const moeq_config *c = &r->m->cfg;
    const moeq_family *f = c->family;
    const int64_t H = c->hidden, qd = c->heads * c->head_dim, kd = c->kv_heads * c->head_dim;
    const moeq_tensor *t;
    moeq_status st;
    if ((st = FIND(f->attn_norm, l, 1, CAT_OTHER, &t, H))) return st;
    lv->attn_norm = vec_of(t);
    if ((st = FIND(f->mlp_norm, l, 1, CAT_OTHER, &t, H))) return st;
    lv->mlp_norm = vec_of(t);
    if (c->norm == MOEQ_NORM_LAYER) {
        if ((st = FIND(f->attn_norm_bias, l, 1, CAT_OTHER, &t, H))) return st;
        lv->attn_norm_bias = vec_of(t);
        if ((st = FIND(f->mlp_norm_bias, l, 1, CAT_OTHER, &t, H))) return st;
        lv->mlp_norm_bias = vec_of(t);
    }
    if (c->o_bias) {
        if ((st = FIND(f->o_bias, l, 1, CAT_ATTN, &t, H))) return st;
        lv->o_bias = vec_of(t);
    }
    if (c->attn_sinks) {
        if ((st = FIND(f->sinks, l, 1, CAT_ATTN, &t, c->heads))) return st;
        lv->sinks = vec_of(t);
    }
    if (c->attn == MOEQ_ATTN_MLA) return resolve_mla(r, l, lv);
    if ((st = FIND(f->q, l, 1, CAT_ATTN, &t, qd, H))) return st;
    lv->q = mat_of(t);
    if ((st = FIND(f->k, l, 1, CAT_ATTN, &t, kd, H))) return st;
    lv->k = mat_of(t);
    if ((st = FIND(f->v, l, 1, CAT_ATTN, &t, kd, H))) return st;
    lv->v = mat_of(t);
    if ((st = FIND(f->o, l, 1, CAT_ATTN, &t, H, qd))) return st;
    lv->o = mat_of(t);
    if (c->qkv_bias) {
        if ((st = FIND(f->q_bias, l, 1, CAT_ATTN, &t, qd))) return st;
        lv->q_bias = vec_of(t);
        if ((st = FIND(f->k_bias, l, 1, CAT_ATTN, &t, kd))) return st;
        lv->k_bias = vec_of(t);
        if ((st = FIND(f->v_bias, l, 1, CAT_ATTN, &t, kd))) return st;
        lv->v_bias = vec_of(t);
    }
    if (c->qk_norm == MOEQ_QK_NORM_HEAD) {
        if ((st = FIND(f->q_norm, l, 1, CAT_ATTN, &t, c->head_dim))) return st;
        lv->q_norm = vec_of(t);
        if ((st = FIND(f->k_norm, l, 1, CAT_ATTN, &t, c->head_dim))) return st;
        lv->k_norm = vec_of(t);
    } else if (c->qk_norm == MOEQ_QK_NORM_FULL) {
        if ((st = FIND(f->q_norm, l, 1, CAT_ATTN, &t, qd))) return st;
        lv->q_norm = vec_of(t);
        if ((st = FIND(f->k_norm, l, 1, CAT_ATTN, &t, kd))) return st;
        lv->k_norm = vec_of(t);
    }
    return MOEQ_OK;
}

/* An MXFP4 tensor (gpt_oss experts): the weight pattern's name + suffix ("_blocks" [E, R, K/32, 16]
 * or "_scales" [E, R, K/32]), U8 of exactly that shape. */
static moeq_status find_mx(rctx *r, const char *pat, const char *suffix, int64_t l, int ndim, const int64_t *shape,
                           int cat, const moeq_tensor **out)
{
    char base[NAME_MAX_LEN], name[NAME_MAX_LEN + 16], want[160], got[160];
    *out = NULL;
    if (moeq_family_name(base, sizeof base, pat, l, -1) != 0)
        return moeq_fail(r->err, MOEQ_ERR_MISUSE, "model view: tensor name pattern too long");
    snprintf(name, sizeof name, "%s%s", base, suffix);
    fmt_shape(want, sizeof want, ndim, shape);
    const moeq_tensor *t = mfind(r->m, name);
    if (!t)
        return moeq_fail(r->err, MOEQ_ERR_FORMAT, "%s: tensor '%s' not found (expected U8 %s): quantization_config "
                         "mxfp4 stores '%s' as blocks and scales%s", r->m->ckpt && moeq_ckpt_dir(r->m->ckpt) ?
                         moeq_ckpt_dir(r->m->ckpt) : r->m->path, name, want, base,
                         mfind(r->m, base) ? " (a float tensor of that name is present)" : "");
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (t->dtype != MOEQ_DT_U8 || !same) {
        fmt_shape(got, sizeof got, t->ndim, t->shape);
        return moeq_fail(r->err, MOEQ_ERR_FORMAT, "%s: tensor '%s': %s %s, expected U8 %s (MXFP4: per 32 inputs "
                         "16 bytes of e2m1 pairs and one e8m0 scale, from config.json's shape)", t->file, t->name,
                         t->dtype_name[0] ? t->dtype_name : moeq_dtype_name(t->dtype), got, want);
    }
    if (t->nbytes != (uint64_t)t->numel || !t->data)
        return moeq_fail(r->err, MOEQ_ERR_FORMAT, "%s: tensor '%s': %llu data bytes for %lld elements", t->file,
                         t->name, (unsigned long long)t->nbytes, (long long)t->numel);
    *out = t;
    return claim(r, t, cat);
}

/* gpt_oss experts: gate_up [E, H, 2I] and down [E, I, H] as x @ W (bf16 on re-uploads), or MXFP4
 * blocks of the transposed [E, 2I, H] / [E, H, I] (the hub's), and their biases. */
static moeq_status resolve_gptoss_experts(rctx *r, int64_t l)
{
    moeq_model *m = r->m;
    const moeq_config *c = &m->cfg;
    const moeq_family *f = c->family;
    const int64_t H = c->hidden, E = c->n_experts, I = c->moe_inter, I2 = 2 * I;
    moeq_status st;
    /* pruned (docs/prune.md): zero-filled only, so the views keep their full width */
    if (c->mxfp4) {
        if ((st = find_mx(r, f->fused_gate_up[0], "_blocks", l, 4, SHAPE(E, I2, H / 32, 16), CAT_ROUTED,
                          &m->fused_gate_up[l])) ||
            (st = find_mx(r, f->fused_gate_up[0], "_scales", l, 3, SHAPE(E, I2, H / 32), CAT_OTHER, &m->gu_scales[l])) ||
            (st = find_mx(r, f->fused_down[0], "_blocks", l, 4, SHAPE(E, H, I / 32, 16), CAT_ROUTED,
                          &m->fused_down[l])) ||
            (st = find_mx(r, f->fused_down[0], "_scales", l, 3, SHAPE(E, H, I / 32), CAT_OTHER, &m->down_scales[l])))
            return st;
    } else {
        char name[NAME_MAX_LEN + 16];
        if (moeq_family_name(name, sizeof name - 8, f->fused_gate_up[0], l, -1) == 0 && strcat(name, "_blocks") &&
            mfind(m, name))
            return moeq_fail(r->err, MOEQ_ERR_UNSUPPORTED, "%s: tensor '%s': MXFP4 blocks without "
                             "quantization_config.quant_method \"mxfp4\" in config.json", m->path, name);
        if ((st = find_alt(r, f->fused_gate_up, MOEQ_FAMILY_ALT, l, -1, 1, 3, SHAPE(E, H, I2), CAT_ROUTED,
                           &m->fused_gate_up[l])))
            return st;
        if ((st = find_alt(r, f->fused_down, MOEQ_FAMILY_ALT, l, -1, 1, 3, SHAPE(E, I, H), CAT_ROUTED,
                           &m->fused_down[l])))
            return st;
        if (m->fused_gate_up[l]->dtype == MOEQ_DT_F8_E4M3 || m->fused_down[l]->dtype == MOEQ_DT_F8_E4M3)
            return moeq_fail(r->err, MOEQ_ERR_UNSUPPORTED, "%s: tensor '%s': F8_E4M3 experts of %s are not "
                             "supported", m->path, m->fused_gate_up[l]->name, c->model_type);
    }
    if ((st = find1(r, f->fused_gate_up_bias, l, 1, 2, SHAPE(E, I2), CAT_ROUTED, &m->gu_bias[l]))) return st;
    return find1(r, f->fused_down_bias, l, 1, 2, SHAPE(E, H), CAT_ROUTED, &m->down_bias[l]);
}

/* Per-expert or fused: decided once from the first MoE layer, then required everywhere. */
static void detect_layout(moeq_model *m)
{
    const moeq_family *f = m->cfg.family;
    char name[NAME_MAX_LEN];
    m->fused = m->cfg.expert_layout == MOEQ_EXPERTS_GPTOSS;   /* its only layout */
    if (m->fused) return;
    for (int64_t l = 0; l < m->cfg.layers; l++) {
        if (!m->cfg.layer_is_moe[l]) continue;
        for (int i = 0; i < MOEQ_FAMILY_ALT && f->fused_gate_up[i]; i++)
            if (moeq_family_name(name, sizeof name, f->fused_gate_up[i], l, -1) == 0 &&
                mfind(m, name))
                m->fused = 1;
        return;
    }
}

/* The stored width of a pruned expert whose config width W differs from I: the gate tensor's
 * rows when they are W (ragged) or I (zero-filled); other row counts disagree with config.json. */
static moeq_status ragged_width(rctx *r, const char *const *pats, int64_t l, int64_t e, int64_t W, int64_t I,
                                int64_t *F)
{
    char name[NAME_MAX_LEN];
    *F = W;
    for (int i = 0; i < MOEQ_FAMILY_ALT && pats[i]; i++) {
        if (moeq_family_name(name, sizeof name, pats[i], l, e) != 0) continue;
        const moeq_tensor *t = mfind(r->m, name);
        if (!t) continue;
        if (t->ndim == 2 && (t->shape[0] == W || t->shape[0] == I)) {
            *F = t->shape[0];
            return MOEQ_OK;
        }
        return moeq_fail(r->err, MOEQ_ERR_FORMAT, "%s: tensor '%s': %lld rows, but config.json "
                         "'moeq_expert_widths'[%lld][%lld] is %lld (and moe_inter %lld): the widths disagree "
                         "with the tensors", t->file, t->name, (long long)t->shape[0], (long long)l,
                         (long long)e, (long long)W, (long long)I);
    }
    return MOEQ_OK;
}

static moeq_status resolve_mlp(rctx *r, int64_t l, moeq_layer_view *lv)
{
    moeq_model *m = r->m;
    const moeq_config *c = &m->cfg;
    const moeq_family *f = c->family;
    const int64_t H = c->hidden, E = c->n_experts, I = c->moe_inter;
    const moeq_tensor *t;
    moeq_status st;
    lv->is_moe = c->layer_is_moe[l];
    if (!lv->is_moe) {
        int64_t D = c->dense_inter;
        if (!f->dense[0] || D <= 0)
            return moeq_fail(r->err, MOEQ_ERR_UNSUPPORTED, "%s: layer %lld is dense but family '%s' has no "
                             "dense MLP", m->path, (long long)l, c->model_type);
        if ((st = FIND(f->dense[0], l, 1, CAT_OTHER, &t, D, H))) return st;
        lv->dense_gate = mat_of(t);
        if ((st = FIND(f->dense[1], l, 1, CAT_OTHER, &t, D, H))) return st;
        lv->dense_up = mat_of(t);
        if ((st = FIND(f->dense[2], l, 1, CAT_OTHER, &t, H, D))) return st;
        lv->dense_down = mat_of(t);
        return MOEQ_OK;
    }
    if ((st = find_alt(r, f->router, MOEQ_FAMILY_ALT, l, -1, 1, 2, SHAPE(E, H), CAT_ROUTER, &t))) return st;
    lv->router = mat_of(t);
    if (f->router_bias[0]) {
        if (f->router_bias_rows)
            st = find_alt(r, f->router_bias, MOEQ_FAMILY_ALT, l, -1, 1, 2, SHAPE(1, E), CAT_ROUTER, &t);
        else
            st = find_alt(r, f->router_bias, MOEQ_FAMILY_ALT, l, -1, 1, 1, SHAPE(E), CAT_ROUTER, &t);
        if (st) return st;
        lv->router_bias = vec_of(t);
    }
    if (f->router_lin_bias) {
        if ((st = FIND(f->router_lin_bias, l, 1, CAT_ROUTER, &t, E))) return st;
        lv->router_lin_bias = vec_of(t);
    }
    if (c->expert_layout == MOEQ_EXPERTS_GPTOSS) {
        if ((st = resolve_gptoss_experts(r, l))) return st;
    } else if (m->fused) {
        const int64_t I2 = 2 * I;   /* I <= 2^24 (CF-3) */
        if ((st = find_alt(r, f->fused_gate_up, MOEQ_FAMILY_ALT, l, -1, 1, 3, SHAPE(E, I2, H), CAT_ROUTED,
                           &m->fused_gate_up[l])))
            return st;
        if ((st = find_alt(r, f->fused_down, MOEQ_FAMILY_ALT, l, -1, 1, 3, SHAPE(E, H, I), CAT_ROUTED,
                           &m->fused_down[l])))
            return st;
    } else {
        for (int64_t e = 0; e < E; e++) {
            const moeq_tensor **slot = &m->experts[(l * E + e) * 3];
            /* pruned (docs/prune.md): ragged [f_e, H] tensors, or zero-filled ones of the full
             * width; width 0 may have no tensors at all */
            int64_t F = I, W = m->widths ? m->widths[l * E + e] : I;
            if (W != I && (st = ragged_width(r, f->expert[0], l, e, W, I, &F))) return st;
            int req = F > 0;
            if ((st = find_alt(r, f->expert[0], MOEQ_FAMILY_ALT, l, e, req, 2, SHAPE(F, H), CAT_ROUTED, &slot[0])))
                return st;
            if ((st = find_alt(r, f->expert[1], MOEQ_FAMILY_ALT, l, e, req, 2, SHAPE(F, H), CAT_ROUTED, &slot[1])))
                return st;
            if ((st = find_alt(r, f->expert[2], MOEQ_FAMILY_ALT, l, e, req, 2, SHAPE(H, F), CAT_ROUTED, &slot[2])))
                return st;
        }
    }
    /* expert biases of another layout: a GGUF of gpt-oss (formats/gguf_model.c: per-expert
     * weights, gate and up biases interleaved back into [E, 2I] like the hub's) */
    if (c->expert_bias && c->expert_layout != MOEQ_EXPERTS_GPTOSS &&
        ((st = find1(r, f->fused_gate_up_bias, l, 1, 2, SHAPE(E, 2 * I), CAT_ROUTED, &m->gu_bias[l])) ||
         (st = find1(r, f->fused_down_bias, l, 1, 2, SHAPE(E, H), CAT_ROUTED, &m->down_bias[l]))))
        return st;
    if (c->shared_inter > 0) {
        const int64_t S = c->shared_inter;
        if ((st = FIND(f->shared[0], l, 1, CAT_SHARED, &t, S, H))) return st;
        lv->shared_gate = mat_of(t);
        if ((st = FIND(f->shared[1], l, 1, CAT_SHARED, &t, S, H))) return st;
        lv->shared_up = mat_of(t);
        if ((st = FIND(f->shared[2], l, 1, CAT_SHARED, &t, H, S))) return st;
        lv->shared_down = mat_of(t);
        if (f->shared_expert_gate) {
            if ((st = FIND(f->shared_expert_gate, l, 1, CAT_SHARED, &t, 1, H))) return st;
            lv->shared_expert_gate = mat_of(t);
        }
    }
    return MOEQ_OK;
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(const moeq_tensor *const *)a, y = (uintptr_t)*(const moeq_tensor *const *)b;
    return x < y ? -1 : x > y;
}

/* Everything no pattern claimed (rotary buffers, extra heads...) counts as "other". */
static moeq_status count_params(rctx *r)
{
    moeq_model *m = r->m;
    qsort(r->used, r->n_used, sizeof *r->used, cmp_ptr);
    for (size_t i = 1; i < r->n_used; i++)
        if (r->used[i] == r->used[i - 1])   /* a table entry matching twice is a table bug */
            return moeq_fail(r->err, MOEQ_ERR_FORMAT, "%s: tensor '%s' matched two roles", m->path,
                             r->used[i]->name);
    size_t n = mcount(m);
    for (size_t i = 0; i < n; i++) {
        const moeq_tensor *t = mtensor(m, i);
        if (!t || bsearch(&t, r->used, r->n_used, sizeof *r->used, cmp_ptr)) continue;
        r->cat[CAT_OTHER] += t->numel;
    }
    moeq_param_counts *pc = &m->counts;
    pc->attention = r->cat[CAT_ATTN];
    pc->router = r->cat[CAT_ROUTER];
    pc->shared_experts = r->cat[CAT_SHARED];
    pc->routed_experts = r->cat[CAT_ROUTED];
    pc->embeddings = r->cat[CAT_EMBED];
    pc->other = r->cat[CAT_OTHER];
    pc->total = pc->attention + pc->router + pc->shared_experts + pc->routed_experts + pc->embeddings +
                pc->other;
    return MOEQ_OK;
}

static moeq_status resolve(moeq_model *m, moeq_error *err)
{
    const moeq_config *c = &m->cfg;
    const moeq_family *f = c->family;
    rctx rr = { .m = m, .err = err };
    rctx *r = &rr;
    moeq_status st;
    const int64_t L = c->layers, E = c->n_experts;
    const moeq_tensor *t;

    m->layers = calloc((size_t)L, sizeof *m->layers);
    m->fused_gate_up = calloc((size_t)L, sizeof *m->fused_gate_up);
    m->fused_down = calloc((size_t)L, sizeof *m->fused_down);
    m->gu_bias = calloc((size_t)L, sizeof *m->gu_bias);
    m->down_bias = calloc((size_t)L, sizeof *m->down_bias);
    m->gu_scales = calloc((size_t)L, sizeof *m->gu_scales);
    m->down_scales = calloc((size_t)L, sizeof *m->down_scales);
    if (!m->layers || !m->fused_gate_up || !m->fused_down || !m->gu_bias || !m->down_bias || !m->gu_scales ||
        !m->down_scales)
        return moeq_fail(err, MOEQ_ERR_NOMEM, "model view: out of memory");
    detect_layout(m);
    if (!m->fused) {
        /* L <= 1024 and E <= 65536 (CF-3, CF-5): the product fits */
        m->experts = calloc((size_t)(L * E * 3), sizeof *m->experts);
        if (!m->experts) return moeq_fail(err, MOEQ_ERR_NOMEM, "model view: out of memory");
    }

    if ((st = FIND(f->embed, -1, 1, CAT_EMBED, &t, c->vocab, c->hidden))) goto out;
    m->embed = mat_of_m(m, t);
    if (c->tie_embeddings) {
        m->lm_head = m->embed;
        /* some writers store the tied copy anyway: count it with the embeddings */
        const moeq_tensor *extra = mfind(m, f->lm_head);
        if (extra && extra != t && extra->ndim == 2 && extra->shape[0] == c->vocab &&
            extra->shape[1] == c->hidden && (st = claim(r, extra, CAT_EMBED)))
            goto out;
    } else {
        if ((st = FIND(f->lm_head, -1, 1, CAT_EMBED, &t, c->vocab, c->hidden))) {
            moeq_error_prefix(err, "tie_word_embeddings is false");
            goto out;
        }
        m->lm_head = mat_of_m(m, t);
    }
    if ((st = FIND(f->final_norm, -1, 1, CAT_OTHER, &t, c->hidden))) goto out;
    m->final_norm = vec_of(t);
    if (c->norm == MOEQ_NORM_LAYER) {
        if ((st = FIND(f->final_norm_bias, -1, 1, CAT_OTHER, &t, c->hidden))) goto out;
        m->final_norm_bias = vec_of(t);
    }
    if (c->lm_head_bias) {
        if ((st = FIND(f->lm_head_bias, -1, 1, CAT_EMBED, &t, c->vocab))) goto out;
        m->lm_head_bias = vec_of(t);
    }

    for (int64_t l = 0; l < L; l++) {
        if ((st = resolve_attention(r, l, &m->layers[l]))) goto out;
        if ((st = resolve_mlp(r, l, &m->layers[l]))) goto out;
    }
    st = count_params(r);
    if (st == MOEQ_OK && (m->pack || m->gguf)) {
        pack_fix(m, &m->embed, 0);
        pack_fix(m, &m->lm_head, 0);
        for (int64_t l = 0; l < L; l++) {
            moeq_layer_view *lv = &m->layers[l];
            moeq_mat *mats[] = { &lv->q, &lv->k, &lv->v, &lv->o, &lv->router, &lv->dense_gate, &lv->dense_up,
                                 &lv->dense_down, &lv->shared_gate, &lv->shared_up, &lv->shared_down,
                                 &lv->shared_expert_gate, &lv->q_a, &lv->q_b, &lv->kv_a, &lv->kv_b };
            for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) pack_fix(m, mats[i], 0);
        }
    }
out:
    free(r->used);
    return st;
}

static moeq_status read_config(const char *dir, moeq_config *cfg, int32_t **widths, moeq_error *err)
{
    char path[4096];
    int w = snprintf(path, sizeof path, "%s/config.json", dir);
    if (w < 0 || (size_t)w >= sizeof path) return moeq_fail(err, MOEQ_ERR_MISUSE, "%s: path too long", dir);
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return moeq_fail(err, errno == ENOENT ? MOEQ_ERR_NOT_FOUND : MOEQ_ERR_IO, "%s: cannot open: %s", path,
                         strerror(errno));
    char *buf = NULL;
    long len = -1;
    if (fseek(fp, 0, SEEK_END) == 0) len = ftell(fp);
    if (len < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        fclose(fp);
        return moeq_fail(err, MOEQ_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    }
    if (len > CONFIG_MAX_BYTES) {
        fclose(fp);
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: %ld bytes, larger than any config.json (limit %ld)", path,
                         len, CONFIG_MAX_BYTES);
    }
    buf = malloc((size_t)len + 1);
    if (!buf) {
        fclose(fp);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t got = fread(buf, 1, (size_t)len, fp);
    int rerr = ferror(fp);
    fclose(fp);
    if (rerr || got != (size_t)len) {
        free(buf);
        return moeq_fail(err, MOEQ_ERR_IO, "%s: short read (%zu of %ld bytes)", path, got, len);
    }
    moeq_status st = moeq_config_parse(buf, got, path, cfg, err);
    if (st == MOEQ_OK) st = moeq_expert_widths_parse(buf, got, path, cfg, widths, err);
    free(buf);
    return st;
}

/* A packed model: config.json from the file (F-10), one tensor per source (F-15) whose data
 * points at its piece when the source is not split; split sources (fused experts) are reached
 * through moeq_model_expert, which finds the piece by element offset. */
static moeq_status open_packed(moeq_model *m, const char *path, moeq_error *err)
{
    moeq_status st = moeq_pack_open(path, &m->pack, err);
    if (st) return st;
    const moeq_pack_file_entry *cf = moeq_pack_find_file(m->pack, "config.json");
    char label[4200];
    snprintf(label, sizeof label, "%s:config.json", path);
    if ((st = moeq_config_parse(cf->data, (size_t)cf->blob.size, label, &m->cfg, err))) return st;
    if ((st = moeq_expert_widths_parse(cf->data, (size_t)cf->blob.size, label, &m->cfg, &m->widths, err))) return st;
    m->npsrc = moeq_pack_nsources(m->pack);
    m->psrc = calloc(m->npsrc ? m->npsrc : 1, sizeof *m->psrc);
    if (!m->psrc) return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", path);
    static const unsigned char placeholder[64];
    for (size_t i = 0; i < m->npsrc; i++) {
        const moeq_pack_source *s = moeq_pack_source_at(m->pack, i);
        moeq_tensor *t = &m->psrc[i];
        t->name = s->name;
        t->dtype = s->dtype;
        snprintf(t->dtype_name, sizeof t->dtype_name, "%s", moeq_dtype_name(s->dtype));
        t->ndim = s->ndim;
        memcpy(t->shape, s->shape, sizeof t->shape);
        t->numel = s->numel;
        t->nbytes = (uint64_t)s->numel * moeq_dtype_size(s->dtype);
        t->file = moeq_pack_path(m->pack);
        const moeq_pack_tensor *pc = moeq_pack_find_piece(m->pack, s->name, 0);
        /* raw and unsplit: the bytes themselves; otherwise views go through pack_fix */
        t->data = pc && pc->numel == s->numel && pc->codec.type == MOEQ_CODEC_RAW && pc->codec.dtype == s->dtype
                      ? pc->data : placeholder;
    }
    return MOEQ_OK;
}

/* A GGUF file: config from its metadata, weights under the family's names (formats/gguf_model.c). */
static moeq_status open_gguf(moeq_model *m, const char *path, moeq_error *err)
{
    moeq_status st = moeq_gguf_open(path, &m->gguf, err);
    if (st) return st;
    return moeq_gguf_model_map(m->gguf, &m->cfg, &m->gsrc, &m->ngsrc, err);
}

moeq_status moeq_model_open(const char *path, moeq_model **out, moeq_error *err)
{
    if (!path || !out) return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_model_open: NULL argument");
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return moeq_fail(err, errno == ENOENT ? MOEQ_ERR_NOT_FOUND : MOEQ_ERR_IO, "%s: %s", path,
                         strerror(errno));
    moeq_model *m = calloc(1, sizeof *m);
    if (!m) return moeq_fail(err, MOEQ_ERR_NOMEM, "moeq_model_open: out of memory");
    size_t plen = strlen(path);
    m->path = malloc(plen + 1);
    char *dir = malloc(plen + 2);
    moeq_status st;
    if (!m->path || !dir) {
        st = moeq_fail(err, MOEQ_ERR_NOMEM, "moeq_model_open: out of memory");
        goto fail;
    }
    memcpy(m->path, path, plen + 1);
    memcpy(dir, path, plen + 1);
    if (!S_ISDIR(sb.st_mode)) {
        /* a single .safetensors file: config.json lives next to it */
        char *slash = strrchr(dir, '/');
        if (slash) *slash = '\0';
        else memcpy(dir, ".", 2);
    }
    /* by magic, or by name so that a .moeq with a broken magic gets the format's error (F-1) */
    if (!S_ISDIR(sb.st_mode) && moeq_gguf_is_path(path)) {
        if ((st = open_gguf(m, path, err))) goto fail;
    } else if (!S_ISDIR(sb.st_mode) && (moeq_pack_is_packed(path) || (plen > 5 && !strcmp(path + plen - 5, ".moeq")))) {
        if ((st = open_packed(m, path, err))) goto fail;
    } else {
        if ((st = read_config(dir, &m->cfg, &m->widths, err))) goto fail;
        if ((st = moeq_ckpt_open(path, &m->ckpt, err))) goto fail;
    }
    if ((st = resolve(m, err))) goto fail;
    free(dir);
    *out = m;
    return MOEQ_OK;
fail:
    free(dir);
    moeq_model_close(m);
    return st;
}

void moeq_model_close(moeq_model *m)
{
    if (!m) return;
    if (m->ckpt) moeq_ckpt_close(m->ckpt);
    moeq_pack_close(m->pack);
    free(m->psrc);
    moeq_gguf_srcs_free(m->gsrc, m->ngsrc);
    moeq_gguf_close(m->gguf);
    free(m->layers);
    free(m->experts);
    free(m->fused_gate_up);
    free(m->fused_down);
    free(m->gu_bias);
    free(m->down_bias);
    free(m->gu_scales);
    free(m->down_scales);
    free(m->xover);
    free(m->lover);
    free(m->lover_on);
    free(m->widths);
    free(m->path);
    free(m);
}

const moeq_config *moeq_model_config(const moeq_model *m) { return m ? &m->cfg : NULL; }
const moeq_checkpoint *moeq_model_checkpoint(const moeq_model *m) { return m ? m->ckpt : NULL; }
const moeq_pack *moeq_model_pack(const moeq_model *m) { return m ? m->pack : NULL; }
const moeq_gguf *moeq_model_gguf(const moeq_model *m) { return m ? m->gguf : NULL; }
const char *moeq_model_path(const moeq_model *m) { return m ? m->path : NULL; }
int moeq_model_fused_experts(const moeq_model *m) { return m ? m->fused : 0; }
const int32_t *moeq_model_expert_widths(const moeq_model *m) { return m ? m->widths : NULL; }

/* ---- overrides -------------------------------------------------------------------------- */

/* A routed expert's view turned into a float32 view of its override, names kept. */
static void override_expert(const moeq_model *m, int64_t layer, int64_t expert, moeq_proj proj, moeq_mat *v)
{
    const float *d = m->xover ? m->xover[(layer * m->cfg.n_experts + expert) * 3 + (int)proj] : NULL;
    if (!d) return;
    v->dtype = MOEQ_DT_F32;
    v->data = d;
    v->q = NULL;
    v->rstep = v->cstep = 0;   /* overrides are row-major [rows, cols] */
    v->mx_scales = NULL;
}

static moeq_mat *layer_mat(moeq_layer_view *lv, moeq_proj proj)
{
    switch (proj) {
    case MOEQ_PROJ_Q: return &lv->q;
    case MOEQ_PROJ_K: return &lv->k;
    case MOEQ_PROJ_V: return &lv->v;
    case MOEQ_PROJ_O: return &lv->o;
    case MOEQ_PROJ_SHARED_GATE: return &lv->shared_gate;
    case MOEQ_PROJ_SHARED_UP: return &lv->shared_up;
    case MOEQ_PROJ_SHARED_DOWN: return &lv->shared_down;
    case MOEQ_PROJ_DENSE_GATE: return &lv->dense_gate;
    case MOEQ_PROJ_DENSE_UP: return &lv->dense_up;
    case MOEQ_PROJ_DENSE_DOWN: return &lv->dense_down;
    case MOEQ_PROJ_Q_A: return &lv->q_a;
    case MOEQ_PROJ_Q_B: return &lv->q_b;
    case MOEQ_PROJ_KV_A: return &lv->kv_a;
    case MOEQ_PROJ_KV_B: return &lv->kv_b;
    default: return NULL;
    }
}

moeq_status moeq_model_set_override(moeq_model *m, int64_t layer, int64_t expert, moeq_proj proj,
                                    const float *data, moeq_error *err)
{
    if (!m || layer < 0 || layer >= m->cfg.layers)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_model_set_override: layer %lld out of range",
                         (long long)layer);
    const int64_t L = m->cfg.layers, E = m->cfg.n_experts;
    if (expert >= 0) {
        moeq_mat v;
        moeq_status st = moeq_model_expert(m, layer, expert, proj, &v, err);   /* checks the rest */
        if (st) return st;
        if (!m->xover && !data) return MOEQ_OK;
        if (!m->xover && !(m->xover = calloc((size_t)(L * E * 3), sizeof *m->xover)))
            return moeq_fail(err, MOEQ_ERR_NOMEM, "moeq_model_set_override: out of memory");
        m->xover[(layer * E + expert) * 3 + (int)proj] = data;
        return MOEQ_OK;
    }
    moeq_mat *orig = layer_mat(&m->layers[layer], proj);
    if (!orig || !orig->tensor)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_model_set_override: layer %lld has no %s matrix",
                         (long long)layer, moeq_proj_name(proj));
    if (!m->lover) {
        m->lover = calloc((size_t)L, sizeof *m->lover);
        m->lover_on = calloc((size_t)L, 1);
        if (!m->lover || !m->lover_on)
            return moeq_fail(err, MOEQ_ERR_NOMEM, "moeq_model_set_override: out of memory");
    }
    if (!m->lover_on[layer]) {
        m->lover[layer] = m->layers[layer];
        m->lover_on[layer] = 1;
    }
    moeq_mat *v = layer_mat(&m->lover[layer], proj);
    *v = *orig;
    if (data) {
        v->dtype = MOEQ_DT_F32;
        v->data = data;
        v->q = NULL;
    }
    return MOEQ_OK;
}

moeq_status moeq_model_set_head_override(moeq_model *m, int which, const float *data, moeq_error *err)
{
    if (!m || which < 0 || which > 1)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_model_set_head_override: which is 0 (embedding) or 1 (LM head)");
    /* a tied head is the embedding's view: each gets its own override all the same (GGUF writes both) */
    const moeq_mat *orig = which ? &m->lm_head : &m->embed;
    if (!data) { m->hover_on[which] = 0; return MOEQ_OK; }
    m->hover[which] = *orig;
    moeq_mat *v = &m->hover[which];
    v->dtype = MOEQ_DT_F32;
    v->data = data;
    v->q = NULL;
    v->rstep = v->cstep = 0;
    v->mx_scales = NULL;
    v->gtype = 0;
    m->hover_on[which] = 1;
    return MOEQ_OK;
}

void moeq_model_clear_overrides(moeq_model *m)
{
    if (!m) return;
    m->hover_on[0] = m->hover_on[1] = 0;
    if (m->xover) memset(m->xover, 0, (size_t)(m->cfg.layers * m->cfg.n_experts * 3) * sizeof *m->xover);
    if (m->lover_on) memset(m->lover_on, 0, (size_t)m->cfg.layers);
}

const moeq_layer_view *moeq_model_layer(const moeq_model *m, int64_t layer)
{
    if (!m || layer < 0 || layer >= m->cfg.layers) return NULL;
    if (m->lover_on && m->lover_on[layer]) return &m->lover[layer];
    return &m->layers[layer];
}

/* gpt_oss's expert e as [out, in] views (docs/FAMILIES.md): bf16 gate (i, h) = gate_up[e][h][2i],
 * up = [2i + 1], down (o, i) = down[e][i][o]; MXFP4 rows of the [E, 2I, H] / [E, H, I] blocks
 * (gate = even rows, up = odd). Sizes were checked at open. */
static void gptoss_expert(const moeq_model *m, int64_t layer, int64_t e, moeq_proj proj, const moeq_tensor *t,
                          moeq_mat *out)
{
    const int64_t H = m->cfg.hidden, I = m->cfg.moe_inter;
    const int down = proj == MOEQ_PROJ_DOWN, up = proj == MOEQ_PROJ_UP;
    moeq_mat v = { .tensor = t->name, .index = e, .dtype = t->dtype };
    v.rows = down ? H : I;
    v.cols = down ? I : H;
    if (m->cfg.mxfp4) {
        const moeq_tensor *sc = down ? m->down_scales[layer] : m->gu_scales[layer];
        const int64_t R = down ? H : 2 * I, K = v.cols;   /* block rows of one expert, inputs */
        const int64_t row0 = e * R + (up ? 1 : 0);
        v.data = (const uint8_t *)t->data + (size_t)row0 * (size_t)(K / 2);
        v.mx_scales = (const uint8_t *)sc->data + (size_t)row0 * (size_t)(K / 32);
        v.mx_scale_tensor = sc->name;
        v.rstep = down ? 1 : 2;
    } else {
        const size_t es = moeq_dtype_size(t->dtype);
        size_t off = down ? (size_t)e * (size_t)(I * H) : (size_t)e * (size_t)(2 * I * H) + (up ? 1 : 0);
        v.data = (const unsigned char *)t->data + off * es;
        v.rstep = down ? 1 : 2;
        v.cstep = down ? H : 2 * I;
    }
    *out = v;
}

int moeq_model_expert_bias(const moeq_model *m, int64_t layer, int64_t expert, moeq_proj proj, float *dst)
{
    if (!m || !dst || layer < 0 || layer >= m->cfg.layers || expert < 0 || expert >= m->cfg.n_experts ||
        proj > MOEQ_PROJ_DOWN || !m->cfg.layer_is_moe[layer])
        return -1;
    if (!m->cfg.expert_bias) return 0;
    const moeq_tensor *t = proj == MOEQ_PROJ_DOWN ? m->down_bias[layer] : m->gu_bias[layer];
    if (!t) return -1;
    const int64_t n = t->shape[1];
    const size_t es = moeq_dtype_size(t->dtype);
    const unsigned char *row = (const unsigned char *)t->data + (size_t)(expert * n) * es;
    /* gate_up_proj_bias interleaves like the columns: gate = even entries, up = odd */
    const int64_t step = proj == MOEQ_PROJ_DOWN ? 1 : 2, first = proj == MOEQ_PROJ_UP ? 1 : 0;
    for (int64_t i = 0; i < n / step; i++) {
        moeq_vec one = { .tensor = t->name, .dtype = t->dtype, .n = 1, .data = row + (size_t)(first + i * step) * es };
        moeq_vec_to_f32(&one, dst + i);
    }
    return 1;
}

/* The checkpoint's view of a routed expert's matrix (no override); arguments checked. */
static void expert_raw(const moeq_model *m, int64_t layer, int64_t expert, moeq_proj proj, moeq_mat *out)
{
    if (!m->fused) {
        *out = mat_of_m(m, m->experts[(layer * m->cfg.n_experts + expert) * 3 + (int)proj]);
        pack_fix(m, out, 0);
        return;
    }
    const int64_t H = m->cfg.hidden, I = m->cfg.moe_inter;
    const moeq_tensor *t = proj == MOEQ_PROJ_DOWN ? m->fused_down[layer] : m->fused_gate_up[layer];
    if (m->cfg.expert_layout == MOEQ_EXPERTS_GPTOSS && !m->pack) {
        gptoss_expert(m, layer, expert, proj, t, out);
        return;
    }
    size_t es = moeq_dtype_size(t->dtype);
    /* gate_up [E, 2I, H]: gate rows 0..I-1, up rows I..2I-1; down [E, H, I]. Sizes were
     * checked against the tensor's byte count at open, so these offsets are inside it. */
    size_t off;
    moeq_mat v = { .tensor = t->name, .index = expert, .dtype = t->dtype };
    if (proj == MOEQ_PROJ_DOWN) {
        off = (size_t)expert * (size_t)(H * I);
        v.rows = H;
        v.cols = I;
    } else {
        off = (size_t)expert * (size_t)(2 * I * H) + (proj == MOEQ_PROJ_UP ? (size_t)(I * H) : 0);
        v.rows = I;
        v.cols = H;
    }
    v.data = (const unsigned char *)t->data + off * es;
    pack_fix(m, &v, (int64_t)off);
    *out = v;
}

moeq_status moeq_model_expert(const moeq_model *m, int64_t layer, int64_t expert, moeq_proj proj,
                              moeq_mat *out, moeq_error *err)
{
    if (!m || !out) return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_model_expert: NULL argument");
    if (layer < 0 || layer >= m->cfg.layers)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_model_expert: layer %lld out of range 0..%lld",
                         (long long)layer, (long long)m->cfg.layers - 1);
    if (!m->cfg.layer_is_moe[layer])
        return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_model_expert: layer %lld is a dense layer",
                         (long long)layer);
    if (expert < 0 || expert >= m->cfg.n_experts)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_model_expert: expert %lld out of range 0..%lld",
                         (long long)expert, (long long)m->cfg.n_experts - 1);
    if (proj != MOEQ_PROJ_GATE && proj != MOEQ_PROJ_UP && proj != MOEQ_PROJ_DOWN)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_model_expert: projection %d is not gate, up or down",
                         (int)proj);
    expert_raw(m, layer, expert, proj, out);
    override_expert(m, layer, expert, proj, out);
    return MOEQ_OK;
}

moeq_mat moeq_model_tensor_view(const moeq_model *m, const moeq_tensor *t) { return mat_of_m(m, t); }

int moeq_model_is_fp8_scale(const moeq_model *m, const moeq_tensor *t)
{
    if (!m || !t || !m->cfg.fp8) return 0;
    size_t len = strlen(t->name);
    if (len <= 10 || strcmp(t->name + len - 10, "_scale_inv") != 0 || len - 10 >= NAME_MAX_LEN) return 0;
    char name[NAME_MAX_LEN];
    memcpy(name, t->name, len - 10);
    name[len - 10] = '\0';
    const moeq_tensor *w = mfind(m, name);
    return w && w->dtype == MOEQ_DT_F8_E4M3;
}

static int name_ends(const char *name, const char *suffix, size_t *stem)
{
    size_t n = strlen(name), k = strlen(suffix);
    *stem = n > k ? n - k : 0;
    return n > k && !strcmp(name + n - k, suffix);
}

int moeq_model_is_mx_scale(const moeq_model *m, const moeq_tensor *t)
{
    size_t stem;
    return m && t && m->cfg.mxfp4 && t->dtype == MOEQ_DT_U8 && t->ndim == 3 && name_ends(t->name, "_scales", &stem);
}

int moeq_model_mx_blocks(const moeq_model *m, const moeq_tensor *t, char *base, size_t cap, int64_t shape[3])
{
    size_t stem;
    if (!m || !t || !m->cfg.mxfp4 || t->dtype != MOEQ_DT_U8 || t->ndim != 4 || !name_ends(t->name, "_blocks", &stem) ||
        stem >= cap)
        return 0;
    memcpy(base, t->name, stem);
    base[stem] = '\0';
    shape[0] = t->shape[0];
    shape[1] = t->shape[2] * 32;   /* inputs */
    shape[2] = t->shape[1];        /* outputs */
    return 1;
}

const moeq_mat *moeq_model_embed(const moeq_model *m) { return !m ? NULL : m->hover_on[0] ? &m->hover[0] : &m->embed; }
const moeq_mat *moeq_model_lm_head(const moeq_model *m) { return !m ? NULL : m->hover_on[1] ? &m->hover[1] : &m->lm_head; }
const moeq_vec *moeq_model_final_norm(const moeq_model *m) { return m ? &m->final_norm : NULL; }
const moeq_vec *moeq_model_final_norm_bias(const moeq_model *m) { return m ? &m->final_norm_bias : NULL; }
const moeq_vec *moeq_model_lm_head_bias(const moeq_model *m) { return m ? &m->lm_head_bias : NULL; }

void moeq_model_param_counts(const moeq_model *m, moeq_param_counts *out)
{
    if (!out) return;
    if (!m) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = m->counts;
}

const char *moeq_proj_name(moeq_proj p)
{
    static const char *const names[MOEQ_PROJ_COUNT] = {
        [MOEQ_PROJ_GATE] = "gate", [MOEQ_PROJ_UP] = "up", [MOEQ_PROJ_DOWN] = "down",
        [MOEQ_PROJ_Q] = "q", [MOEQ_PROJ_K] = "k", [MOEQ_PROJ_V] = "v", [MOEQ_PROJ_O] = "o",
        [MOEQ_PROJ_SHARED_GATE] = "shared_gate", [MOEQ_PROJ_SHARED_UP] = "shared_up",
        [MOEQ_PROJ_SHARED_DOWN] = "shared_down", [MOEQ_PROJ_ROUTER] = "router",
        [MOEQ_PROJ_SHARED_EXPERT_GATE] = "shared_expert_gate",
        [MOEQ_PROJ_DENSE_GATE] = "dense_gate", [MOEQ_PROJ_DENSE_UP] = "dense_up",
        [MOEQ_PROJ_DENSE_DOWN] = "dense_down",
        [MOEQ_PROJ_Q_A] = "q_a", [MOEQ_PROJ_Q_B] = "q_b", [MOEQ_PROJ_KV_A] = "kv_a", [MOEQ_PROJ_KV_B] = "kv_b",
    };
    if ((int)p < 0 || p >= MOEQ_PROJ_COUNT) return "unknown";
    return names[p];
}

/* ---- mapped pages ----------------------------------------------------------------------- */

static void rows_pages(const moeq_mat *v, int64_t r0, int64_t r1, int prefetch)
{
    void (*f)(const void *, size_t) = prefetch ? moeq_pages_prefetch : moeq_pages_release;
    if (!v || v->cols <= 0 || r0 < 0 || r1 > v->rows || r0 >= r1) return;
    const size_t n = (size_t)(r1 - r0);
    if (v->q) {
        const moeq_qmat *q = v->q;
        size_t rb = (size_t)moeq_qmat_row_bytes(q), gb = (size_t)moeq_qmat_groups(q) * sizeof(uint16_t);
        f(q->codes + (size_t)r0 * rb, n * rb);
        f((const unsigned char *)q->scales + (size_t)r0 * gb, n * gb);
        if (q->zeros) f((const unsigned char *)q->zeros + (size_t)r0 * gb, n * gb);
    } else if (v->mx_scales) {   /* MXFP4 rows rstep block rows apart */
        size_t rb = (size_t)v->cols / 2, sb = (size_t)v->cols / 32, span = (size_t)((r1 - 1 - r0) * v->rstep + 1);
        f((const unsigned char *)v->data + (size_t)(r0 * v->rstep) * rb, span * rb);
        f(v->mx_scales + (size_t)(r0 * v->rstep) * sb, span * sb);
    } else if (v->data && (v->rstep || v->cstep)) {   /* strided: the whole extent of the view */
        size_t es = moeq_dtype_size(v->dtype);
        f(v->data, (size_t)((v->rows - 1) * v->rstep + (v->cols - 1) * v->cstep + 1) * es);
    } else if (v->data && v->gtype == MOEQ_TDICT_GTYPE) {   /* variable-length rows: the whole tensor */
        f(v->data, (size_t)moeq_tdict_size_of(v->data));
    } else if (v->data) {
        size_t rb = v->gtype ? (size_t)v->grow : (size_t)v->cols * moeq_dtype_size(v->dtype);
        f((const unsigned char *)v->data + (size_t)r0 * rb, n * rb);
    }
}

static void mat_pages(const moeq_mat *v, int prefetch) { if (v) rows_pages(v, 0, v->rows, prefetch); }

void moeq_mat_release(const moeq_mat *v) { mat_pages(v, 0); }
void moeq_mat_prefetch(const moeq_mat *v) { mat_pages(v, 1); }
void moeq_mat_release_rows(const moeq_mat *v, int64_t r0, int64_t r1) { rows_pages(v, r0, r1, 0); }

void moeq_vec_release(const moeq_vec *v)
{
    if (v && v->data && v->n > 0) moeq_pages_release(v->data, (size_t)v->n * moeq_dtype_size(v->dtype));
}

static void layer_pages(const moeq_model *m, int64_t l, int prefetch)
{
    if (!m || l < 0 || l >= m->cfg.layers) return;
    const moeq_layer_view *L = &m->layers[l];   /* the checkpoint's, not an override */
    const moeq_mat *mats[] = { &L->q, &L->k, &L->v, &L->o, &L->router, &L->dense_gate, &L->dense_up,
                               &L->dense_down, &L->shared_gate, &L->shared_up, &L->shared_down,
                               &L->shared_expert_gate, &L->q_a, &L->q_b, &L->kv_a, &L->kv_b };
    for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) mat_pages(mats[i], prefetch);
    if (!prefetch) {
        const moeq_vec *vecs[] = { &L->attn_norm, &L->mlp_norm, &L->q_bias, &L->k_bias, &L->v_bias,
                                   &L->q_norm, &L->k_norm, &L->q_a_norm, &L->kv_a_norm, &L->router_bias,
                                   &L->o_bias, &L->attn_norm_bias, &L->mlp_norm_bias };
        for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) moeq_vec_release(vecs[i]);
    }
    if (!m->cfg.layer_is_moe[l]) return;
    for (int64_t e = 0; e < m->cfg.n_experts; e++)
        for (int p = MOEQ_PROJ_GATE; p <= MOEQ_PROJ_DOWN; p++) {
            moeq_mat v;
            expert_raw(m, l, e, (moeq_proj)p, &v);
            mat_pages(&v, prefetch);
        }
}

void moeq_model_release_layer(const moeq_model *m, int64_t layer) { layer_pages(m, layer, 0); }
void moeq_model_prefetch_layer(const moeq_model *m, int64_t layer) { layer_pages(m, layer, 1); }

void moeq_model_release_head(const moeq_model *m)
{
    if (!m) return;
    moeq_mat_release(&m->embed);
    moeq_mat_release(&m->lm_head);
    moeq_vec_release(&m->final_norm);
}

void moeq_model_release_all(const moeq_model *m)
{
    if (!m) return;
    if (m->gguf) {
        for (size_t i = 0; i < moeq_gguf_ntensors(m->gguf); i++) {
            const moeq_gguf_tensor *t = moeq_gguf_tensor_at(m->gguf, i);
            moeq_pages_release(t->data, (size_t)t->nbytes);
        }
        return;
    }
    if (m->pack) {
        for (size_t i = 0; i < moeq_pack_ntensors(m->pack); i++) {
            const moeq_pack_tensor *t = moeq_pack_tensor_at(m->pack, i);
            moeq_pages_release(t->data, (size_t)t->blob.raw_size);
        }
        return;
    }
    for (size_t i = 0; i < moeq_ckpt_count(m->ckpt); i++) moeq_tensor_release(moeq_ckpt_tensor(m->ckpt, i));
}

uint64_t moeq_model_mapped_bytes(const moeq_model *m)
{
    if (!m) return 0;
    if (m->gguf) return moeq_gguf_size(m->gguf);
    return m->pack ? moeq_pack_file_size(m->pack) : moeq_ckpt_bytes(m->ckpt);
}

void moeq_model_set_release(moeq_model *m, moeq_release_mode mode)
{
    if (m) m->release = mode;
}

int moeq_model_releases(const moeq_model *m)
{
    if (!m || m->release == MOEQ_RELEASE_OFF) return 0;
    if (m->release == MOEQ_RELEASE_ON) return 1;
    const char *e = getenv("MOEQ_RELEASE");
    if (e && (!strcmp(e, "1") || !strcmp(e, "on"))) return 1;
    if (e && (!strcmp(e, "0") || !strcmp(e, "off"))) return 0;
    uint64_t ram = moeq_phys_mem();
    return ram > 0 && moeq_model_mapped_bytes(m) > ram / 8;
}
