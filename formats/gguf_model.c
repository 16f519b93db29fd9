/* A GGUF file as a moeq model: metadata -> moeq_config, GGUF tensor names -> the family's
 * Hugging Face names (formats/family.c patterns), 3-D expert tensors -> per-expert views. Every
 * tensor the model needs is checked here against the metadata (type, exact ne), with errors in
 * GGUF terms; model/view.c then resolves the names as for a checkpoint. */
#include "formats/gguf_model.h"
#include "formats/family.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* llama.cpp's graphs fix what the HF configs leave open: llama (Mixtral) and qwen3moe always
 * renormalize the top-k weights, qwen2moe and olmoe never (src/models/ARCH.cpp, norm_w). */
static const moeq_gguf_arch archs[] = {
    { "llama", "mixtral", 1, "feed_forward_length", 1, 0, MOEQ_QK_NORM_NONE, 0, 0, 0 },
    { "qwen2moe", "qwen2_moe", 0, "expert_feed_forward_length", 0, 1, MOEQ_QK_NORM_NONE, 1, 0, 0 },
    { "qwen3moe", "qwen3_moe", 0, "expert_feed_forward_length", 1, 0, MOEQ_QK_NORM_HEAD, 0, 0, 0 },
    { "olmoe", "olmoe", 0, "feed_forward_length", 0, 0, MOEQ_QK_NORM_FULL, 0, 0, 0 },
    /* MLA (docs/export.md): renorm is a key here (expert_weights_norm), not fixed by the graph; the
     * first row is the one a file's architecture finds (its gating key picks the family) */
    { "deepseek2", "deepseek_v3", 0, "expert_feed_forward_length", -1, 1, MOEQ_QK_NORM_NONE, 0, 1, 0 },
    { "deepseek2", "deepseek_v2", 0, "expert_feed_forward_length", -1, 1, MOEQ_QK_NORM_NONE, 0, 1, 0 },
    /* llama.cpp src/models/openai-moe.cpp: softmax over the selected logits (= renormalized) */
    { "gpt-oss", "gpt_oss", 0, "expert_feed_forward_length", 1, 0, MOEQ_QK_NORM_NONE, 1, 0, 1 },
};
#define N_ARCHS (sizeof archs / sizeof archs[0])

const moeq_gguf_arch *moeq_gguf_arch_find(const char *arch)
{
    for (size_t i = 0; i < N_ARCHS; i++)
        if (!strcmp(archs[i].arch, arch)) return &archs[i];
    return NULL;
}

const moeq_gguf_arch *moeq_gguf_arch_of_model_type(const char *model_type)
{
    for (size_t i = 0; i < N_ARCHS; i++)
        if (!strcmp(archs[i].model_type, model_type)) return &archs[i];
    return NULL;
}

void moeq_gguf_arch_list(char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < N_ARCHS; i++) {
        if (i && !strcmp(archs[i].arch, archs[i - 1].arch)) continue;
        int w = snprintf(buf + n, cap - n, "%s%s", i ? ", " : "", archs[i].arch);
        if (w < 0 || (size_t)w >= cap - n) break;
        n += (size_t)w;
    }
}

typedef struct mctx {
    const moeq_gguf *g;
    const moeq_gguf_arch *a;
    moeq_config *cfg;
    moeq_error *err;
    moeq_gguf_src *s;
    size_t n, cap;
} mctx;

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

static moeq_status config_from_meta(mctx *c)
{
    const moeq_gguf *g = c->g;
    moeq_config *cfg = c->cfg;
    const char *L = moeq_gguf_label(g);
    moeq_status st;
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", c->a->model_type);
    cfg->family = moeq_family_find(c->a->model_type);
    if (!cfg->family) return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED, "%s: no moeq family %s", L, c->a->model_type);
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
    if (c->a->shared && (st = get_u(c, "expert_shared_feed_forward_length", 0, 1, 1 << 24, &shared))) return st;
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
    if (moeq_gguf_find_kv(g, key) && !(sn == 4 && !memcmp(s, "none", 4)) && !(c->a->oai && sn == 4 && !memcmp(s, "yarn", 4)))
        return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF key '%s' = '%.*s': only unscaled RoPE is supported%s", L,
                         key, (int)(sn < 32 ? sn : 32), s, c->a->oai ? " (gpt-oss: none or yarn)" : "");
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
    if (c->a->shared && !shared && moeq_gguf_find_tensor(g, "blk.0.ffn_gate_shexp.weight"))
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

/* deepseek2 (llama.cpp src/models/deepseek2.cpp; docs/FORMAT-gguf.md): MLA sizes, leading dense
 * layers, DeepSeek routing, YaRN — the config formats/config.c derives for deepseek_v3 (sigmoid
 * gating) or deepseek_v2 (softmax). MLA stored as MHA (layout A: attn_kv_b whole). */
static moeq_status config_mla(mctx *c)
{
    const moeq_gguf *g = c->g;
    moeq_config *cfg = c->cfg;
    const char *L = moeq_gguf_label(g);
    moeq_status st;
    memset(cfg, 0, sizeof *cfg);
    int64_t hd = 0, vd = 0, rot = 0, ctx = 2048, lead = 0, nshared = 0, gating = 1, orig = 0;
    float scale = 1, theta = 10000, eps = 0, factor = 1, logmul = 0;
    if ((st = get_u(c, "block_count", 1, 1, MOEQ_MAX_LAYERS, &cfg->layers)) ||
        (st = get_u(c, "embedding_length", 1, 1, 1 << 20, &cfg->hidden)) ||
        (st = get_u(c, "attention.head_count", 1, 1, 4096, &cfg->heads)) ||
        (st = get_u(c, "attention.key_length", 1, 2, 4096, &hd)) ||
        (st = get_u(c, "attention.value_length", 1, 1, 4096, &vd)) ||
        (st = get_u(c, "rope.dimension_count", 1, 2, 4096, &rot)) ||
        (st = get_u(c, "context_length", 0, 1, UINT32_MAX, &ctx)) ||
        (st = get_u(c, "expert_count", 1, 1, MOEQ_GROUP_ROUTER_MAX_EXPERTS, &cfg->n_experts)) ||
        (st = get_u(c, "expert_used_count", 1, 1, 65536, &cfg->top_k)) ||
        (st = get_u(c, "expert_feed_forward_length", 1, 1, 1 << 24, &cfg->moe_inter)) ||
        (st = get_u(c, "feed_forward_length", 0, 1, 1 << 24, &cfg->dense_inter)) ||
        (st = get_u(c, "leading_dense_block_count", 0, 0, MOEQ_MAX_LAYERS, &lead)) ||
        (st = get_u(c, "attention.q_lora_rank", 0, 1, 1 << 20, &cfg->q_lora_rank)) ||
        (st = get_u(c, "attention.kv_lora_rank", 1, 1, 1 << 20, &cfg->kv_lora_rank)) ||
        (st = get_u(c, "expert_shared_count", 0, 0, 4096, &nshared)) ||
        (st = get_u(c, "expert_gating_func", 0, 1, 2, &gating)) ||
        (st = get_u(c, "expert_group_count", 0, 1, 65536, &cfg->n_group)) ||
        (st = get_u(c, "expert_group_used_count", 0, 1, 65536, &cfg->topk_group)) ||
        (st = get_f(c, "expert_weights_scale", 0, &scale)) || (st = get_f(c, "rope.freq_base", 0, &theta)) ||
        (st = get_f(c, "attention.layer_norm_rms_epsilon", 1, &eps)))
        return st;
    cfg->n_group = cfg->n_group ? cfg->n_group : 1;
    cfg->topk_group = cfg->topk_group ? cfg->topk_group : 1;
    int64_t kvh = cfg->heads;
    if ((st = get_u(c, "attention.head_count_kv", 0, 1, 4096, &kvh))) return st;
    const char *why = kvh != cfg->heads ? "head_count_kv differs from head_count (moeq reads MLA stored as MHA, layout A)"
                      : rot % 2 || rot >= hd ? "rope.dimension_count is odd or not below key_length"
                      : lead > cfg->layers ? "leading_dense_block_count exceeds block_count"
                      : cfg->top_k > cfg->n_experts ? "expert_used_count exceeds expert_count"
                      : cfg->n_experts % cfg->n_group || cfg->topk_group > cfg->n_group ? "expert group counts do not fit the experts"
                      : !(scale > 0) || !(theta > 0) || !(eps > 0 && eps < 1) ? "expert_weights_scale, rope.freq_base or the epsilon out of range"
                      : lead > 0 && !cfg->dense_inter ? "leading dense layers without feed_forward_length" : NULL;
    if (why) return moeq_fail(c->err, MOEQ_ERR_FORMAT, "%s: GGUF deepseek2: %s", L, why);
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", gating == 2 ? "deepseek_v3" : "deepseek_v2");
    cfg->family = moeq_family_find(cfg->model_type);
    if (!cfg->family) return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED, "%s: no moeq family %s", L, cfg->model_type);
    cfg->kv_heads = cfg->heads;
    cfg->head_dim = hd;
    cfg->qk_rope_dim = cfg->rope_dim = rot;
    cfg->qk_nope_dim = hd - rot;
    cfg->v_head_dim = vd;
    cfg->rope_interleave = 1;   /* llama.cpp ropes deepseek2 pairs (2i, 2i+1) */
    cfg->max_positions = ctx;
    cfg->rope_theta = theta;
    cfg->rms_eps = eps;
    cfg->attn = MOEQ_ATTN_MLA;
    cfg->router = cfg->family->router_kind;
    cfg->norm = cfg->family->norm;
    cfg->routed_scaling = scale;
    cfg->shared_inter = nshared * cfg->moe_inter;
    cfg->qk_norm = MOEQ_QK_NORM_NONE;
    cfg->norm_topk_prob = 0;
    char key[128];
    snprintf(key, sizeof key, "%s.expert_weights_norm", c->a->arch);
    if ((st = moeq_gguf_get_bool(g, key, 0, &cfg->norm_topk_prob, c->err))) return st;
    for (int64_t l = 0; l < cfg->layers; l++) cfg->layer_is_moe[l] = l >= lead;
    cfg->rope_type = MOEQ_ROPE_DEFAULT;
    cfg->rope_attn_factor = 1.0;
    cfg->attn_scale = 1.0 / sqrt((double)hd);
    const char *s;
    uint64_t sn;
    snprintf(key, sizeof key, "%s.rope.scaling.type", c->a->arch);
    if ((st = moeq_gguf_get_str(g, key, 0, &s, &sn, c->err))) return st;
    if (moeq_gguf_find_kv(g, key) && !(sn == 4 && !memcmp(s, "none", 4))) {
        if (!(sn == 4 && !memcmp(s, "yarn", 4)))
            return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF key '%s' = '%.*s': deepseek2 takes none or yarn", L,
                             key, (int)(sn < 32 ? sn : 32), s);
        float af = 1;
        if ((st = get_f(c, "rope.scaling.factor", 1, &factor)) ||
            (st = get_u(c, "rope.scaling.original_context_length", 1, 1, UINT32_MAX, &orig)) ||
            (st = get_f(c, "rope.scaling.yarn_log_multiplier", 0, &logmul)) || (st = get_f(c, "rope.scaling.attn_factor", 0, &af)))
            return st;
        if (!(factor > 0) || fabsf(af - 1) > 1e-6f)
            return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF deepseek2: YaRN factor %g / attn_factor %g (factor > 0 "
                             "and attn_factor 1 are supported)", L, (double)factor, (double)af);
        cfg->rope_type = MOEQ_ROPE_YARN;
        cfg->rope_factor = factor;
        cfg->rope_orig_max = (double)orig;
        cfg->rope_beta_fast = 32;
        cfg->rope_beta_slow = 1;
        cfg->rope_truncate = 1;
        /* the converter's yarn_log_multiplier is 0.1 * mscale_all_dim: the softmax scale gets
         * get_mscale(factor, mscale_all_dim)^2 (config.c's yarn_apply_mscale) */
        double msa = (double)logmul / 0.1, m = factor <= 1 ? 1.0 : 0.1 * msa * log((double)factor) + 1.0;
        cfg->attn_scale *= m * m;
    }
    const moeq_gguf_tensor *emb = moeq_gguf_find_tensor(g, "token_embd.weight");
    if (!emb || emb->n_dims != 2)
        return moeq_fail(c->err, MOEQ_ERR_FORMAT, "%s: GGUF tensor 'token_embd.weight' is %s", L, emb ? "not 2-D" : "missing");
    cfg->vocab = emb->ne[1];
    cfg->tie_embeddings = moeq_gguf_find_tensor(g, "output.weight") == NULL;
    return MOEQ_OK;
}

/* gpt-oss (llama.cpp src/models/openai-moe.cpp): sinks, attention and expert biases, sliding
 * layers (l % p < p - 1 for attention.sliding_window_pattern p, default 2), YaRN as llama.cpp
 * computes it (correction range rounded: truncate; cos/sin x 0.1 ln(factor) + 1, x attn_factor),
 * the clamped SwiGLU with the alpha 1.702 and limit 7 its graph hard-codes. Experts are
 * per-expert views (MOEQ_EXPERTS_HF) with the biases of the family. */
static moeq_status config_oai(mctx *c)
{
    const moeq_gguf *g = c->g;
    moeq_config *cfg = c->cfg;
    const char *L = moeq_gguf_label(g);
    moeq_status st;
    int64_t win = 0, period = 2, orig = 0;
    float factor = 0, af = 1, swa_base = (float)cfg->rope_theta;
    if ((st = get_u(c, "attention.sliding_window", 1, 1, UINT32_MAX, &win)) ||
        (st = get_u(c, "attention.sliding_window_pattern", 0, 0, MOEQ_MAX_LAYERS, &period)) ||
        (st = get_f(c, "rope.freq_base_swa", 0, &swa_base)))
        return st;
    if (swa_base != (float)cfg->rope_theta)
        return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF gpt-oss: rope.freq_base_swa %g differs from "
                         "rope.freq_base %g (not supported)", L, (double)swa_base, cfg->rope_theta);
    cfg->sliding_window = win;
    for (int64_t l = 0; l < cfg->layers; l++) cfg->layer_sliding[l] = period == 0 || l % period < period - 1;
    cfg->attn_sinks = 1;
    cfg->o_bias = 1;
    cfg->act = MOEQ_ACT_SWIGLU_CLAMP;
    cfg->act_alpha = 1.702;
    cfg->act_limit = 7.0;
    cfg->expert_layout = MOEQ_EXPERTS_HF;
    cfg->expert_bias = 1;
    char key[128];
    const char *s;
    uint64_t sn;
    snprintf(key, sizeof key, "%s.rope.scaling.type", c->a->arch);
    if ((st = moeq_gguf_get_str(g, key, 0, &s, &sn, c->err))) return st;
    if (moeq_gguf_find_kv(g, key) && sn == 4 && !memcmp(s, "yarn", 4)) {
        if ((st = get_f(c, "rope.scaling.factor", 1, &factor)) ||
            (st = get_u(c, "rope.scaling.original_context_length", 1, 1, UINT32_MAX, &orig)) ||
            (st = get_f(c, "rope.scaling.attn_factor", 0, &af)))
            return st;
        if (!(factor > 0) || !(af > 0))
            return moeq_fail(c->err, MOEQ_ERR_FORMAT, "%s: GGUF gpt-oss: YaRN factor %g / attn_factor %g (> 0 expected)",
                             L, (double)factor, (double)af);
        cfg->rope_type = MOEQ_ROPE_YARN;
        cfg->rope_factor = factor;
        cfg->rope_orig_max = (double)orig;
        cfg->rope_beta_fast = 32;   /* llama.cpp's loader does not read the yarn_beta_* keys */
        cfg->rope_beta_slow = 1;
        cfg->rope_truncate = 1;     /* ggml_rope_yarn_corr_dims floors and ceils */
        cfg->rope_attn_factor = (factor <= 1 ? 1.0 : 0.1 * log((double)factor) + 1.0) * af;
    }
    return MOEQ_OK;
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
static moeq_status need_t(mctx *c, const char *gname, int64_t l, int required, int vec, int nd, const int64_t *ne,
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
static moeq_status src(mctx *c, const char *pat, int64_t l, int64_t e, const moeq_gguf_tensor *t, int64_t r0,
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

static int cmp_src(const void *a, const void *b)
{
    return strcmp(((const moeq_gguf_src *)a)->name, ((const moeq_gguf_src *)b)->name);
}

#define NE(...) ((const int64_t[]){ __VA_ARGS__ })
#define NDN(...) ((int)(sizeof(NE(__VA_ARGS__)) / sizeof(int64_t)))
#define NEED(gname, l, req, vec, outp, ...) need_t(c, (gname), (l), (req), (vec), NDN(__VA_ARGS__), NE(__VA_ARGS__), (outp))

/* gpt-oss's expert biases: down {H, E} is the family's [E, H] as it is; gate and up {I, E} are
 * interleaved into an F32 heap copy [E, 2I] (gate = even entries), the hub's gate_up_proj_bias. */
static moeq_status expert_biases(mctx *c, int64_t l)
{
    const moeq_config *cfg = c->cfg;
    const moeq_family *f = cfg->family;
    const int64_t H = cfg->hidden, E = cfg->n_experts, I = cfg->moe_inter;
    const moeq_gguf_tensor *gt, *ut, *dt;
    moeq_status st;
    if ((st = NEED("ffn_gate_exps.bias", l, 1, 1, &gt, I, E)) || (st = NEED("ffn_up_exps.bias", l, 1, 1, &ut, I, E)) ||
        (st = NEED("ffn_down_exps.bias", l, 1, 1, &dt, H, E)) || (st = src(c, f->fused_down_bias, l, -1, dt, 0, E, 0)) ||
        (st = src(c, f->fused_gate_up_bias, l, -1, gt, 0, E, 0)))
        return st;
    moeq_gguf_src *s = &c->s[c->n - 1];
    float *d = malloc((size_t)(E * 2 * I) * sizeof *d), *row = malloc((size_t)I * sizeof *row);
    if (!d || !row) {
        free(d);
        free(row);
        return moeq_fail(c->err, MOEQ_ERR_NOMEM, "%s: out of memory", moeq_gguf_label(c->g));
    }
    for (int k = 0; k < 2; k++) {
        const moeq_gguf_tensor *t = k ? ut : gt;
        const moeq_dtype dty = t->type == 0 ? MOEQ_DT_F32 : t->type == 1 ? MOEQ_DT_F16 : MOEQ_DT_BF16;
        const uint64_t rb = moeq_gguf_row_bytes(t->type, I);
        for (int64_t e = 0; e < E; e++) {
            moeq_vec v = { .tensor = t->name, .dtype = dty, .n = I, .data = (const unsigned char *)t->data + e * rb };
            moeq_vec_to_f32(&v, row);
            for (int64_t i = 0; i < I; i++) d[e * 2 * I + 2 * i + k] = row[i];
        }
    }
    free(row);
    s->owned = d;
    s->t.data = d;
    s->t.dtype = MOEQ_DT_F32;
    snprintf(s->t.dtype_name, sizeof s->t.dtype_name, "F32");
    s->t.shape[1] = 2 * I;
    s->t.numel = E * 2 * I;
    s->t.nbytes = (uint64_t)s->t.numel * 4;
    s->row_bytes = (uint64_t)(2 * I) * 4;
    s->gtype = 0;
    return MOEQ_OK;
}

static moeq_status map_layer(mctx *c, int64_t l)
{
    const moeq_config *cfg = c->cfg;
    const moeq_family *f = cfg->family;
    const int64_t H = cfg->hidden, qd = cfg->heads * cfg->head_dim, kd = cfg->kv_heads * cfg->head_dim;
    const int64_t E = cfg->n_experts, I = cfg->moe_inter, S = cfg->shared_inter;
    const moeq_gguf_tensor *t;
    moeq_status st;
    if ((st = NEED("attn_norm.weight", l, 1, 1, &t, H)) || (st = src(c, f->attn_norm, l, -1, t, 0, 1, 1))) return st;
    if ((st = NEED(c->a->oai ? "post_attention_norm.weight" : "ffn_norm.weight", l, 1, 1, &t, H)) ||
        (st = src(c, f->mlp_norm, l, -1, t, 0, 1, 1)))
        return st;
    const char *qkvo[4] = { "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight" };
    const char *pats[4] = { f->q, f->k, f->v, f->o };
    const int64_t outs[4] = { qd, kd, kd, H }, ins[4] = { H, H, H, qd };
    for (int i = 0; i < 4; i++) {
        if ((st = NEED(qkvo[i], l, 1, 0, &t, ins[i], outs[i])) || (st = src(c, pats[i], l, -1, t, 0, outs[i], 0)))
            return st;
        if (c->a->permute_qk && i < 2 && (st = unpermute(c, &c->s[c->n - 1], i == 0 ? cfg->heads : cfg->kv_heads)))
            return st;
    }
    if (cfg->qkv_bias) {
        const char *bn[3] = { "attn_q.bias", "attn_k.bias", "attn_v.bias" };
        const char *bp[3] = { f->q_bias, f->k_bias, f->v_bias };
        if (c->a->permute_qk)
            return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF: q/k biases of architecture llama are not supported",
                             moeq_gguf_label(c->g));
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
    if ((st = NEED("ffn_gate_inp.weight", l, 1, 0, &t, H, E)) || (st = src(c, f->router[0], l, -1, t, 0, E, 0))) return st;
    if (c->a->oai &&
        ((st = NEED("ffn_gate_inp.bias", l, 1, 1, &t, E)) || (st = src(c, f->router_lin_bias, l, -1, t, 0, 1, 1))))
        return st;
    const char *ex[3] = { "ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight" };
    for (int p = 0; p < 3; p++) {
        int64_t in = p == 2 ? I : H, out = p == 2 ? H : I;
        if ((st = NEED(ex[p], l, 1, 0, &t, in, out, E))) return st;
        for (int64_t e = 0; e < E; e++)
            if ((st = src(c, f->expert[p][0], l, e, t, e * out, out, 0))) return st;
    }
    if (cfg->expert_bias && (st = expert_biases(c, l))) return st;
    if (S > 0) {
        const char *sh[3] = { "ffn_gate_shexp.weight", "ffn_up_shexp.weight", "ffn_down_shexp.weight" };
        for (int p = 0; p < 3; p++) {
            int64_t in = p == 2 ? S : H, out = p == 2 ? H : S;
            if ((st = NEED(sh[p], l, 1, 0, &t, in, out)) || (st = src(c, f->shared[p], l, -1, t, 0, out, 0))) return st;
        }
        if (f->shared_expert_gate) {
            if ((st = NEED("ffn_gate_inp_shexp.weight", l, 1, 0, &t, H))) return st;
            if ((st = src(c, f->shared_expert_gate, l, -1, t, 0, 1, 0))) return st;
        }
    }
    return MOEQ_OK;
}


/* deepseek2's tensors (layout A) onto the DeepSeek family's names. */
static moeq_status map_layer_mla(mctx *c, int64_t l)
{
    const moeq_config *cfg = c->cfg;
    const moeq_family *f = cfg->family;
    const int64_t H = cfg->hidden, Q = cfg->q_lora_rank, KV = cfg->kv_lora_rank, nh = cfg->heads;
    const int64_t E = cfg->n_experts, I = cfg->moe_inter, S = cfg->shared_inter, F = cfg->dense_inter;
    const moeq_gguf_tensor *t;
    moeq_status st;
    if ((st = NEED("attn_norm.weight", l, 1, 1, &t, H)) || (st = src(c, f->attn_norm, l, -1, t, 0, 1, 1))) return st;
    if ((st = NEED("ffn_norm.weight", l, 1, 1, &t, H)) || (st = src(c, f->mlp_norm, l, -1, t, 0, 1, 1))) return st;
    if (Q > 0) {
        if ((st = NEED("attn_q_a.weight", l, 1, 0, &t, H, Q)) || (st = src(c, f->q_a, l, -1, t, 0, Q, 0)) ||
            (st = NEED("attn_q_a_norm.weight", l, 1, 1, &t, Q)) || (st = src(c, f->q_a_norm, l, -1, t, 0, 1, 1)) ||
            (st = NEED("attn_q_b.weight", l, 1, 0, &t, Q, nh * cfg->head_dim)) ||
            (st = src(c, f->q_b, l, -1, t, 0, nh * cfg->head_dim, 0)))
            return st;
    } else if ((st = NEED("attn_q.weight", l, 1, 0, &t, H, nh * cfg->head_dim)) ||
               (st = src(c, f->q, l, -1, t, 0, nh * cfg->head_dim, 0))) {
        return st;
    }
    const int64_t kvb = nh * (cfg->qk_nope_dim + cfg->v_head_dim);
    if ((st = NEED("attn_kv_a_mqa.weight", l, 1, 0, &t, H, KV + cfg->qk_rope_dim)) ||
        (st = src(c, f->kv_a, l, -1, t, 0, KV + cfg->qk_rope_dim, 0)) ||
        (st = NEED("attn_kv_a_norm.weight", l, 1, 1, &t, KV)) || (st = src(c, f->kv_a_norm, l, -1, t, 0, 1, 1)) ||
        (st = NEED("attn_kv_b.weight", l, 1, 0, &t, KV, kvb)) || (st = src(c, f->kv_b, l, -1, t, 0, kvb, 0)) ||
        (st = NEED("attn_output.weight", l, 1, 0, &t, nh * cfg->v_head_dim, H)) ||
        (st = src(c, f->o, l, -1, t, 0, H, 0)))
        return st;
    if (!cfg->layer_is_moe[l]) {
        const char *dn[3] = { "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight" };
        for (int p = 0; p < 3; p++) {
            int64_t in = p == 2 ? F : H, out = p == 2 ? H : F;
            if ((st = NEED(dn[p], l, 1, 0, &t, in, out)) || (st = src(c, f->dense[p], l, -1, t, 0, out, 0))) return st;
        }
        return MOEQ_OK;
    }
    if ((st = NEED("ffn_gate_inp.weight", l, 1, 0, &t, H, E)) || (st = src(c, f->router[0], l, -1, t, 0, E, 0))) return st;
    if (f->router_bias[0] &&
        ((st = NEED("exp_probs_b.bias", l, cfg->router == MOEQ_ROUTER_SIGMOID_GROUP, 1, &t, E)) ||
         (st = src(c, f->router_bias[0], l, -1, t, 0, 1, 1))))
        return st;
    const char *ex[3] = { "ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight" };
    for (int p = 0; p < 3; p++) {
        int64_t in = p == 2 ? I : H, out = p == 2 ? H : I;
        if ((st = NEED(ex[p], l, 1, 0, &t, in, out, E))) return st;
        for (int64_t e = 0; e < E; e++)
            if ((st = src(c, f->expert[p][0], l, e, t, e * out, out, 0))) return st;
    }
    if (S > 0) {
        const char *sh[3] = { "ffn_gate_shexp.weight", "ffn_up_shexp.weight", "ffn_down_shexp.weight" };
        for (int p = 0; p < 3; p++) {
            int64_t in = p == 2 ? S : H, out = p == 2 ? H : S;
            if ((st = NEED(sh[p], l, 1, 0, &t, in, out)) || (st = src(c, f->shared[p], l, -1, t, 0, out, 0))) return st;
        }
    }
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
    if ((st = a->mla ? config_mla(c) : config_from_meta(c))) return st;
    if (a->oai && (st = config_oai(c))) return st;
    const moeq_family *f = cfg->family;
    const moeq_gguf_tensor *t;
    const int64_t H = cfg->hidden, V = cfg->vocab;
    if ((st = NEED("token_embd.weight", -1, 1, 0, &t, H, V)) || (st = src(c, f->embed, -1, -1, t, 0, V, 0))) goto fail;
    if (!cfg->tie_embeddings &&
        ((st = NEED("output.weight", -1, 1, 0, &t, H, V)) || (st = src(c, f->lm_head, -1, -1, t, 0, V, 0))))
        goto fail;
    if ((st = NEED("output_norm.weight", -1, 1, 1, &t, H)) || (st = src(c, f->final_norm, -1, -1, t, 0, 1, 1))) goto fail;
    for (int64_t l = 0; l < cfg->layers; l++)
        if ((st = a->mla ? map_layer_mla(c, l) : map_layer(c, l))) goto fail;
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
