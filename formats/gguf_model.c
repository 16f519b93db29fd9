/* A GGUF file as a moeq model: metadata -> moeq_config, GGUF tensor names -> the family's
 * Hugging Face names (formats/family.c patterns), 3-D expert tensors -> per-expert views. Every
 * tensor the model needs is checked here against the metadata (type, exact ne), with errors in
 * GGUF terms; model/view.c then resolves the names as for a checkpoint. */
#include "formats/gguf_model.h"
#include "formats/gguf_arch.h"
#include "formats/family.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The architectures, one file of formats/gguf_arch/ and one entry here each; the order is the
 * one error messages list them in. */
#define ARCHS(X) X(llama) X(qwen2moe) X(qwen3moe) X(olmoe) X(deepseek2) X(gpt_oss)
#define ARCH_DECL(n) extern const moeq_gguf_arch moeq_gguf_arch_##n;
#define ARCH_ADDR(n) &moeq_gguf_arch_##n,
ARCHS(ARCH_DECL)
static const moeq_gguf_arch *const archs[] = { ARCHS(ARCH_ADDR) };
#define N_ARCHS (sizeof archs / sizeof archs[0])

const moeq_gguf_arch *moeq_gguf_arch_find(const char *arch)
{
    for (size_t i = 0; i < N_ARCHS; i++)
        if (!strcmp(archs[i]->arch, arch)) return archs[i];
    return NULL;
}

const moeq_gguf_arch *moeq_gguf_arch_of_model_type(const char *model_type)
{
    for (size_t i = 0; i < N_ARCHS; i++)
        for (const char *const *t = archs[i]->model_types; *t; t++)
            if (!strcmp(*t, model_type)) return archs[i];
    return NULL;
}

void moeq_gguf_arch_list(char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < N_ARCHS; i++) {
        int w = snprintf(buf + n, cap - n, "%s%s", i ? ", " : "", archs[i]->arch);
        if (w < 0 || (size_t)w >= cap - n) break;
        n += (size_t)w;
    }
}

typedef moeq_gguf_rctx mctx;

/* a key the model needs and the file lacks: a broken file (exit 2), not a missing input */
static moeq_status missing_is_format(moeq_error *err, moeq_status st)
{
    if (st == MOEQ_ERR_NOT_FOUND) {
        st = MOEQ_ERR_FORMAT;
        if (err) err->code = st;
    }
    return st;
}

static moeq_status get_u(mctx *c, const char *k, int required, uint32_t lo, uint32_t hi, int64_t *out)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", c->a->arch, k);
    uint32_t v = 0;
    moeq_status st = moeq_gguf_get_u32(c->g, key, required, &v, c->err);
    if (st) return missing_is_format(c->err, st);
    if (!moeq_gguf_find_kv(c->g, key)) return MOEQ_OK;
    if (v < lo || v > hi)
        return moeq_fail(c->err, MOEQ_ERR_FORMAT, "%s: GGUF key '%s' = %u is out of range %u..%u", moeq_gguf_label(c->g),
                         key, v, lo, hi);
    *out = v;
    return MOEQ_OK;
}

/* The grouped-query architectures: keys of llama.cpp's loader (llm_load_hparams) for them. */
moeq_status moeq_gguf_read_config_std(mctx *c)
{
    const moeq_gguf *g = c->g;
    moeq_config *cfg = c->cfg;
    const char *L = moeq_gguf_label(g);
    moeq_status st;
    memset(cfg, 0, sizeof *cfg);
    const char *mt = c->a->model_types[0];
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", mt);
    cfg->family = moeq_family_find(mt);
    if (!cfg->family) return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED, "%s: no moeq family %s", L, mt);
    int64_t hd = 0, vd = 0, rot = 0, shared = 0, ctx = 2048;
    if ((st = get_u(c, "block_count", 1, 1, MOEQ_MAX_LAYERS, &cfg->layers))) return st;
    if ((st = get_u(c, "embedding_length", 1, 1, 1 << 20, &cfg->hidden))) return st;
    if ((st = get_u(c, "attention.head_count", 1, 1, 4096, &cfg->heads))) return st;
    cfg->kv_heads = cfg->heads;
    if ((st = get_u(c, "attention.head_count_kv", 0, 1, 4096, &cfg->kv_heads))) return st;
    if ((st = get_u(c, "attention.key_length", 0, 2, 4096, &hd))) return st;
    if ((st = get_u(c, "attention.value_length", 0, 2, 4096, &vd))) return st;
    if ((st = get_u(c, "context_length", 0, 1, UINT32_MAX, &ctx))) return st;
    if ((st = get_u(c, "expert_count", 1, 1, 65536, &cfg->n_experts))) return st;
    if ((st = get_u(c, "expert_used_count", 1, 1, 65536, &cfg->top_k))) return st;
    if ((st = get_u(c, c->a->expert_ff_key, 0, 1, 1 << 24, &cfg->moe_inter))) return st;
    if (c->a->shared_ff_key && (st = get_u(c, c->a->shared_ff_key, 0, 1, 1 << 24, &shared))) return st;
    /* qwen archs: the dense MLP width (no dense layers here, kept so a re-export writes it back) */
    if (strcmp(c->a->expert_ff_key, "feed_forward_length") &&
        (st = get_u(c, "feed_forward_length", 0, 1, 1 << 24, &cfg->dense_inter)))
        return st;
    cfg->max_positions = ctx;
    if (!hd) {
        if (cfg->hidden % cfg->heads)
            return moeq_fail(c->err, MOEQ_ERR_FORMAT, "%s: GGUF: embedding_length %lld is not a multiple of head_count "
                             "%lld and attention.key_length is missing", L, (long long)cfg->hidden, (long long)cfg->heads);
        hd = cfg->hidden / cfg->heads;
    }
    cfg->head_dim = hd;
    if (vd && vd != hd)
        return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF: attention.value_length %lld differs from key_length "
                         "%lld (not supported)", L, (long long)vd, (long long)hd);
    if (hd % 2) return moeq_fail(c->err, MOEQ_ERR_FORMAT, "%s: GGUF: head dimension %lld is odd", L, (long long)hd);
    if (cfg->heads % cfg->kv_heads)
        return moeq_fail(c->err, MOEQ_ERR_FORMAT, "%s: GGUF: head_count %lld is not a multiple of head_count_kv %lld", L,
                         (long long)cfg->heads, (long long)cfg->kv_heads);
    if (cfg->top_k > cfg->n_experts)
        return moeq_fail(c->err, MOEQ_ERR_FORMAT, "%s: GGUF: expert_used_count %lld exceeds expert_count %lld", L,
                         (long long)cfg->top_k, (long long)cfg->n_experts);
    rot = hd;
    if ((st = get_u(c, "rope.dimension_count", 0, 1, 4096, &rot))) return st;
    if (rot != hd)
        return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF: rope.dimension_count %lld differs from the head "
                         "dimension %lld (partial RoPE is not supported)", L, (long long)rot, (long long)hd);
    char key[128];
    const char *s;
    uint64_t sn;
    snprintf(key, sizeof key, "%s.rope.scaling.type", c->a->arch);
    if ((st = moeq_gguf_get_str(g, key, 0, &s, &sn, c->err))) return st;
    if (moeq_gguf_find_kv(g, key) && !(sn == 4 && !memcmp(s, "none", 4)) &&
        !(c->a->rope_yarn && sn == 4 && !memcmp(s, "yarn", 4))) {
        char also[64] = "";
        if (c->a->rope_yarn) snprintf(also, sizeof also, " (%s: none or yarn)", c->a->arch);
        return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF key '%s' = '%.*s': only unscaled RoPE is supported%s", L,
                         key, (int)(sn < 32 ? sn : 32), s, also);
    }
    float f = 10000.0f;
    snprintf(key, sizeof key, "%s.rope.freq_base", c->a->arch);
    if ((st = moeq_gguf_get_f32(g, key, 0, &f, c->err))) return st;
    if (!(f > 0 && isfinite(f)))
        return moeq_fail(c->err, MOEQ_ERR_FORMAT, "%s: GGUF key '%s' = %g is not a positive number", L, key, (double)f);
    cfg->rope_theta = f;
    /* what formats/config.c derives for a hub directory of these (grouped-query, plain RoPE,
     * softmax top-k) families: the forward pass's variants read these fields */
    cfg->attn = cfg->family->attn;
    cfg->router = cfg->family->router_kind;
    cfg->norm = cfg->family->norm;
    cfg->routed_scaling = 1.0;
    cfg->n_group = cfg->topk_group = 1;
    cfg->v_head_dim = hd;
    cfg->rope_dim = hd;
    cfg->rope_type = MOEQ_ROPE_DEFAULT;
    cfg->rope_interleave = 0;
    cfg->rope_attn_factor = 1.0;
    cfg->attn_scale = 1.0 / sqrt((double)hd);
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", c->a->arch);
    if ((st = moeq_gguf_get_f32(g, key, 1, &f, c->err))) return missing_is_format(c->err, st);
    if (!(f > 0 && f < 1))
        return moeq_fail(c->err, MOEQ_ERR_FORMAT, "%s: GGUF key '%s' = %g is not in (0, 1)", L, key, (double)f);
    cfg->rms_eps = f;
    cfg->norm_topk_prob = c->a->renorm;
    snprintf(key, sizeof key, "%s.expert_weights_norm", c->a->arch);
    if ((st = moeq_gguf_get_bool(g, key, 0, &cfg->norm_topk_prob, c->err))) return st;
    cfg->shared_inter = shared;
    cfg->qk_norm = c->a->qk_norm;
    for (int64_t l = 0; l < cfg->layers; l++) cfg->layer_is_moe[l] = 1;
    const moeq_gguf_tensor *emb = moeq_gguf_find_tensor(g, "token_embd.weight");
    if (!emb || emb->n_dims != 2)
        return moeq_fail(c->err, MOEQ_ERR_FORMAT, "%s: GGUF tensor 'token_embd.weight' is %s", L,
                         emb ? "not 2-D" : "missing");
    cfg->vocab = emb->ne[1];
    cfg->tie_embeddings = moeq_gguf_find_tensor(g, "output.weight") == NULL;
    cfg->qkv_bias = moeq_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
    if (!cfg->moe_inter) {   /* absent key: the expert tensor's rows (llama.cpp does the same) */
        const moeq_gguf_tensor *ge = moeq_gguf_find_tensor(g, "blk.0.ffn_gate_exps.weight");
        if (!ge || ge->n_dims != 3)
            return moeq_fail(c->err, MOEQ_ERR_FORMAT, "%s: GGUF: no %s.%s and no 3-D 'blk.0.ffn_gate_exps.weight'", L,
                             c->a->arch, c->a->expert_ff_key);
        cfg->moe_inter = ge->ne[1];
    }
    if (c->a->shared_ff_key && !shared && moeq_gguf_find_tensor(g, "blk.0.ffn_gate_shexp.weight"))
        cfg->shared_inter = moeq_gguf_find_tensor(g, "blk.0.ffn_gate_shexp.weight")->ne[1];
    return MOEQ_OK;
}


static moeq_status get_f(mctx *c, const char *k, int required, float *out)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", c->a->arch, k);
    moeq_status st = moeq_gguf_get_f32(c->g, key, required, out, c->err);
    if (st) return missing_is_format(c->err, st);
    if (!isfinite(*out))
        return moeq_fail(c->err, MOEQ_ERR_FORMAT, "%s: GGUF key '%s' is not finite", moeq_gguf_label(c->g), key);
    return MOEQ_OK;
}

moeq_status moeq_gguf_read_u(mctx *c, const char *k, int required, uint32_t lo, uint32_t hi, int64_t *out)
{
    return get_u(c, k, required, lo, hi, out);
}

moeq_status moeq_gguf_read_f(mctx *c, const char *k, int required, float *out)
{
    return get_f(c, k, required, out);
}

static moeq_gguf_src *add(mctx *c)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        moeq_gguf_src *ns = realloc(c->s, cap * sizeof *ns);
        if (!ns) return NULL;
        c->s = ns;
        c->cap = cap;
    }
    moeq_gguf_src *s = &c->s[c->n++];
    memset(s, 0, sizeof *s);
    return s;
}

static void fmt_ne(char *buf, size_t cap, int nd, const int64_t *ne)
{
    size_t n = 0;
    n += (size_t)snprintf(buf, cap, "{");
    for (int i = 0; i < nd && n < cap; i++) n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)ne[i]);
    if (n < cap) snprintf(buf + n, cap - n, "}");
}

/* Finds GGUF tensor gname (per-layer when l >= 0), checks ne exactly, and returns it. */
moeq_status moeq_gguf_need(mctx *c, const char *gname, int64_t l, int required, int vec, int nd, const int64_t *ne,
                          const moeq_gguf_tensor **out)
{
    char name[96];
    if (l >= 0) snprintf(name, sizeof name, "blk.%lld.%s", (long long)l, gname);
    else snprintf(name, sizeof name, "%s", gname);
    const char *L = moeq_gguf_label(c->g);
    const moeq_gguf_tensor *t = moeq_gguf_find_tensor(c->g, name);
    *out = NULL;
    char want[96], got[96];
    fmt_ne(want, sizeof want, nd, ne);
    if (!t) {
        if (!required) return MOEQ_OK;
        return moeq_fail(c->err, MOEQ_ERR_FORMAT, "%s: GGUF tensor '%s' not found (expected ne %s for architecture %s)",
                         L, name, want, c->a->arch);
    }
    /* a trailing ne of 1 is the same shape ({n_embd, 1} for qwen2moe's shared gate) */
    int tnd = t->n_dims;
    while (tnd > nd && t->ne[tnd - 1] == 1) tnd--;
    int same = tnd == nd;
    for (int i = 0; same && i < nd; i++) same = t->ne[i] == ne[i];
    if (!same) {
        fmt_ne(got, sizeof got, t->n_dims, t->ne);
        return moeq_fail(c->err, MOEQ_ERR_FORMAT, "%s: GGUF tensor '%s' at offset %" PRIu64 ": ne %s does not match %s "
                         "expected from the GGUF metadata", L, name, t->file_offset, got, want);
    }
    const moeq_gguf_type *ty = moeq_gguf_type_get(t->type);
    int ok = vec ? (t->type == 0 || t->type == 1 || t->type == 30) : moeq_gguf_type_computable(t->type);
    if (!ok)
        return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF tensor '%s' at offset %" PRIu64 ": type %s is not "
                         "supported%s", L, name, t->file_offset, ty->name,
                         vec ? " for a vector (F32, F16 or BF16)" : " by this build");
    *out = t;
    return MOEQ_OK;
}

/* A source named by family pattern pat (layer l, expert e) viewing rows [r0, r0+rows) of t. */
moeq_status moeq_gguf_source(mctx *c, const char *pat, int64_t l, int64_t e, const moeq_gguf_tensor *t, int64_t r0,
                       int64_t rows, int vec)
{
    if (!t) return MOEQ_OK;
    moeq_gguf_src *s = add(c);
    if (!s) return moeq_fail(c->err, MOEQ_ERR_NOMEM, "%s: out of memory", moeq_gguf_label(c->g));
    if (moeq_family_name(s->name, sizeof s->name, pat, l, e))
        return moeq_fail(c->err, MOEQ_ERR_MISUSE, "gguf: tensor name pattern too long");
    const moeq_gguf_type *ty = moeq_gguf_type_get(t->type);
    uint64_t rb = moeq_gguf_row_bytes(t->type, t->ne[0]);
    s->t.name = s->name;
    s->gguf_name = t->name;
    s->gtype = t->type;
    s->row_bytes = rb;
    s->t.file = moeq_gguf_label(c->g);
    s->t.file_offset = t->file_offset + (uint64_t)r0 * rb;
    s->t.data = (const unsigned char *)t->data + (uint64_t)r0 * rb;
    s->t.nbytes = (uint64_t)rows * rb;
    snprintf(s->t.dtype_name, sizeof s->t.dtype_name, "%s", ty->name);
    s->t.dtype = t->type == 0 ? MOEQ_DT_F32 : t->type == 1 ? MOEQ_DT_F16 : t->type == 30 ? MOEQ_DT_BF16 : MOEQ_DT_OTHER;
    if (s->t.dtype != MOEQ_DT_OTHER) s->gtype = 0;
    if (vec) {
        s->t.ndim = 1;
        s->t.shape[0] = t->ne[0];
    } else {
        s->t.ndim = 2;
        s->t.shape[0] = rows;
        s->t.shape[1] = t->ne[0];
    }
    s->t.numel = vec ? t->ne[0] : rows * t->ne[0];
    return MOEQ_OK;
}

/* llama's converter interleaved each head's rows (new 2i+j = old j*hd/2+i): a heap copy in
 * Hugging Face order, whole rows moved, so any block type stays exact. */
static moeq_status unpermute(mctx *c, moeq_gguf_src *s, int64_t heads)
{
    int64_t hd = c->cfg->head_dim, half = hd / 2;
    uint64_t rb = s->row_bytes;
    unsigned char *d = malloc((size_t)(s->t.shape[0] * (int64_t)rb));
    if (!d) return moeq_fail(c->err, MOEQ_ERR_NOMEM, "%s: out of memory", moeq_gguf_label(c->g));
    const unsigned char *src0 = s->t.data;
    for (int64_t h = 0; h < heads; h++)
        for (int64_t j = 0; j < 2; j++)
            for (int64_t i = 0; i < half; i++)
                memcpy(d + (size_t)((h * hd + j * half + i) * (int64_t)rb), src0 + (size_t)((h * hd + 2 * i + j) * (int64_t)rb), rb);
    s->owned = d;
    s->t.data = d;
    return MOEQ_OK;
}

moeq_status moeq_gguf_fail_nomem(mctx *c)
{
    return moeq_fail(c->err, MOEQ_ERR_NOMEM, "%s: out of memory", moeq_gguf_label(c->g));
}

static int cmp_src(const void *a, const void *b)
{
    return strcmp(((const moeq_gguf_src *)a)->name, ((const moeq_gguf_src *)b)->name);
}

#define NEED(gname, l, req, vec, outp, ...) GA_NEED(c, (gname), (l), (req), (vec), (outp), __VA_ARGS__)
#define src moeq_gguf_source

moeq_status moeq_gguf_read_norms(mctx *c, int64_t l, const char *mlp_norm)
{
    const moeq_family *f = c->cfg->family;
    const int64_t H = c->cfg->hidden;
    const moeq_gguf_tensor *t;
    moeq_status st;
    if ((st = NEED("attn_norm.weight", l, 1, 1, &t, H)) || (st = src(c, f->attn_norm, l, -1, t, 0, 1, 1))) return st;
    if ((st = NEED(mlp_norm, l, 1, 1, &t, H)) || (st = src(c, f->mlp_norm, l, -1, t, 0, 1, 1))) return st;
    return MOEQ_OK;
}

moeq_status moeq_gguf_read_attn(mctx *c, int64_t l, int permute)
{
    const moeq_config *cfg = c->cfg;
    const moeq_family *f = cfg->family;
    const int64_t H = cfg->hidden, qd = cfg->heads * cfg->head_dim, kd = cfg->kv_heads * cfg->head_dim;
    const moeq_gguf_tensor *t;
    moeq_status st;
    const char *qkvo[4] = { "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight" };
    const char *pats[4] = { f->q, f->k, f->v, f->o };
    const int64_t outs[4] = { qd, kd, kd, H }, ins[4] = { H, H, H, qd };
    for (int i = 0; i < 4; i++) {
        if ((st = NEED(qkvo[i], l, 1, 0, &t, ins[i], outs[i])) || (st = src(c, pats[i], l, -1, t, 0, outs[i], 0)))
            return st;
        if (permute && i < 2 && (st = unpermute(c, &c->s[c->n - 1], i == 0 ? cfg->heads : cfg->kv_heads)))
            return st;
    }
    if (cfg->qkv_bias) {
        const char *bn[3] = { "attn_q.bias", "attn_k.bias", "attn_v.bias" };
        const char *bp[3] = { f->q_bias, f->k_bias, f->v_bias };
        if (permute)   /* the converter permutes the biases too; not read back here */
            return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF: q/k biases of architecture %s are not supported",
                             moeq_gguf_label(c->g), c->a->arch);
        for (int i = 0; i < 3; i++)
            if ((st = NEED(bn[i], l, 1, 1, &t, outs[i])) || (st = src(c, bp[i], l, -1, t, 0, 1, 1))) return st;
    }
    if (cfg->qk_norm != MOEQ_QK_NORM_NONE) {
        int64_t qn = cfg->qk_norm == MOEQ_QK_NORM_HEAD ? cfg->head_dim : qd;
        int64_t kn = cfg->qk_norm == MOEQ_QK_NORM_HEAD ? cfg->head_dim : kd;
        if ((st = NEED("attn_q_norm.weight", l, 1, 1, &t, qn)) || (st = src(c, f->q_norm, l, -1, t, 0, 1, 1))) return st;
        if ((st = NEED("attn_k_norm.weight", l, 1, 1, &t, kn)) || (st = src(c, f->k_norm, l, -1, t, 0, 1, 1))) return st;
    }
    if (cfg->o_bias && ((st = NEED("attn_output.bias", l, 1, 1, &t, H)) || (st = src(c, f->o_bias, l, -1, t, 0, 1, 1))))
        return st;
    if (cfg->attn_sinks &&
        ((st = NEED("attn_sinks.weight", l, 1, 1, &t, cfg->heads)) || (st = src(c, f->sinks, l, -1, t, 0, 1, 1))))
        return st;
    return MOEQ_OK;
}

moeq_status moeq_gguf_read_router(mctx *c, int64_t l)
{
    const moeq_gguf_tensor *t;
    moeq_status st;
    const int64_t H = c->cfg->hidden, E = c->cfg->n_experts;
    if ((st = NEED("ffn_gate_inp.weight", l, 1, 0, &t, H, E)) || (st = src(c, c->cfg->family->router[0], l, -1, t, 0, E, 0)))
        return st;
    return MOEQ_OK;
}

moeq_status moeq_gguf_read_experts(mctx *c, int64_t l)
{
    const moeq_family *f = c->cfg->family;
    const int64_t H = c->cfg->hidden, E = c->cfg->n_experts, I = c->cfg->moe_inter;
    const moeq_gguf_tensor *t;
    moeq_status st;
    const char *ex[3] = { "ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight" };
    for (int p = 0; p < 3; p++) {
        int64_t in = p == 2 ? I : H, out = p == 2 ? H : I;
        if ((st = NEED(ex[p], l, 1, 0, &t, in, out, E))) return st;
        for (int64_t e = 0; e < E; e++)
            if ((st = src(c, f->expert[p][0], l, e, t, e * out, out, 0))) return st;
    }
    return MOEQ_OK;
}

moeq_status moeq_gguf_read_shared(mctx *c, int64_t l)
{
    const moeq_family *f = c->cfg->family;
    const int64_t H = c->cfg->hidden, S = c->cfg->shared_inter;
    const moeq_gguf_tensor *t;
    moeq_status st;
    if (S <= 0) return MOEQ_OK;
    const char *sh[3] = { "ffn_gate_shexp.weight", "ffn_up_shexp.weight", "ffn_down_shexp.weight" };
    for (int p = 0; p < 3; p++) {
        int64_t in = p == 2 ? S : H, out = p == 2 ? H : S;
        if ((st = NEED(sh[p], l, 1, 0, &t, in, out)) || (st = src(c, f->shared[p], l, -1, t, 0, out, 0))) return st;
    }
    if (f->shared_expert_gate) {
        if ((st = NEED("ffn_gate_inp_shexp.weight", l, 1, 0, &t, H))) return st;
        if ((st = src(c, f->shared_expert_gate, l, -1, t, 0, 1, 0))) return st;
    }
    return MOEQ_OK;
}

moeq_status moeq_gguf_read_layer_std(mctx *c, int64_t l)
{
    moeq_status st;
    if ((st = moeq_gguf_read_norms(c, l, "ffn_norm.weight")) || (st = moeq_gguf_read_attn(c, l, 0)) ||
        (st = moeq_gguf_read_router(c, l)) || (st = moeq_gguf_read_experts(c, l)) || (st = moeq_gguf_read_shared(c, l)))
        return st;
    return MOEQ_OK;
}

moeq_status moeq_gguf_model_map(const moeq_gguf *g, moeq_config *cfg, moeq_gguf_src **out, size_t *n,
                                moeq_error *err)
{
    *out = NULL;
    *n = 0;
    const char *arch;
    uint64_t an;
    const char *L = moeq_gguf_label(g);
    moeq_status st = moeq_gguf_get_str(g, "general.architecture", 1, &arch, &an, err);
    if (st) return missing_is_format(err, st);
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)(an < 63 ? an : 63), arch);
    const moeq_gguf_arch *a = memchr(arch, 0, (size_t)an) ? NULL : moeq_gguf_arch_find(name);
    if (!a) {
        char list[128];
        moeq_gguf_arch_list(list, sizeof list);
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF key 'general.architecture' = '%s' is not supported "
                         "(supported: %s)", L, name, list);
    }
    mctx mc = { .g = g, .a = a, .cfg = cfg, .err = err }, *c = &mc;
    if ((st = a->read_config(c))) return st;
    const moeq_family *f = cfg->family;
    const moeq_gguf_tensor *t;
    const int64_t H = cfg->hidden, V = cfg->vocab;
    if ((st = NEED("token_embd.weight", -1, 1, 0, &t, H, V)) || (st = src(c, f->embed, -1, -1, t, 0, V, 0))) goto fail;
    if (!cfg->tie_embeddings &&
        ((st = NEED("output.weight", -1, 1, 0, &t, H, V)) || (st = src(c, f->lm_head, -1, -1, t, 0, V, 0))))
        goto fail;
    if ((st = NEED("output_norm.weight", -1, 1, 1, &t, H)) || (st = src(c, f->final_norm, -1, -1, t, 0, 1, 1))) goto fail;
    for (int64_t l = 0; l < cfg->layers; l++)
        if ((st = a->read_layer(c, l))) goto fail;
    qsort(c->s, c->n, sizeof *c->s, cmp_src);
    /* names point into the array: fix them after the moves */
    for (size_t i = 0; i < c->n; i++) c->s[i].t.name = c->s[i].name;
    *out = c->s;
    *n = c->n;
    return MOEQ_OK;
fail:
    moeq_gguf_srcs_free(c->s, c->n);
    return st;
}

void moeq_gguf_srcs_free(moeq_gguf_src *s, size_t n)
{
    if (!s) return;
    for (size_t i = 0; i < n; i++) free(s[i].owned);
    free(s);
}

const moeq_gguf_src *moeq_gguf_src_find(const moeq_gguf_src *s, size_t n, const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(s[mid].name, name);
        if (!r) return &s[mid];
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}
