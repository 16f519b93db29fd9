/* GGUF architecture deepseek2 (llama.cpp src/models/deepseek2.cpp), for DeepSeek-V3/R1
 * (sigmoid gating) and DeepSeek-V2 (softmax): MLA stored as MHA (layout A of
 * docs/FORMAT-gguf.md: attn_kv_b whole, as the legacy converter writes it), leading dense
 * layers, the router's correction bias, shared experts counted in units of the expert width,
 * DeepSeek routing and YaRN as keys (renormalization is a key here, not fixed by the graph). */
#include "formats/gguf_arch.h"
#include "formats/family.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define NEED(...) GA_NEED(c, __VA_ARGS__)
#define src moeq_gguf_source

static const moeq_gguf_tdesc layer[] = {
    GA_T("attn_norm.weight", GA_VEC, GA_ALL, GA_PLAIN, attn_norm),
    GA_T("attn_q.weight", GA_MAT, GA_ALL, GA_PLAIN, q),              /* q_lora_rank 0 (V2-Lite) */
    GA_T("attn_output.weight", GA_MAT, GA_ALL, GA_PLAIN, o),
    GA_T("attn_q.bias", GA_VEC, GA_ALL, GA_PLAIN, q_bias),
    GA_T("attn_k.bias", GA_VEC, GA_ALL, GA_PLAIN, k_bias),
    GA_T("attn_v.bias", GA_VEC, GA_ALL, GA_PLAIN, v_bias),
    GA_T("attn_q_a_norm.weight", GA_VEC, GA_ALL, GA_PLAIN, q_a_norm),
    GA_T("attn_kv_a_norm.weight", GA_VEC, GA_ALL, GA_PLAIN, kv_a_norm),
    GA_T("attn_q_a.weight", GA_MAT, GA_ALL, GA_PLAIN, q_a),
    GA_T("attn_q_b.weight", GA_MAT, GA_ALL, GA_PLAIN, q_b),
    GA_T("attn_kv_a_mqa.weight", GA_MAT, GA_ALL, GA_PLAIN, kv_a),
    GA_T("attn_kv_b.weight", GA_MAT, GA_ALL, GA_PLAIN, kv_b),
    GA_T("ffn_norm.weight", GA_VEC, GA_ALL, GA_PLAIN, mlp_norm),
    GA_T("ffn_gate.weight", GA_MAT, GA_DENSE, GA_PLAIN, dense_gate),
    GA_T("ffn_up.weight", GA_MAT, GA_DENSE, GA_PLAIN, dense_up),
    GA_T("ffn_down.weight", GA_MAT, GA_DENSE, GA_PLAIN, dense_down),
    GA_T("ffn_gate_inp.weight", GA_ROUTER, GA_MOE, GA_PLAIN, router),
    GA_T("exp_probs_b.bias", GA_VEC, GA_MOE, GA_PLAIN, router_bias),
    GA_X("ffn_gate_exps.weight", GA_EXPERTS, GA_MOE, MOEQ_PROJ_GATE),
    GA_X("ffn_up_exps.weight", GA_EXPERTS, GA_MOE, MOEQ_PROJ_UP),
    GA_X("ffn_down_exps.weight", GA_EXPERTS, GA_MOE, MOEQ_PROJ_DOWN),
    GA_T("ffn_gate_shexp.weight", GA_MAT, GA_ALL, GA_PLAIN, shared_gate),
    GA_T("ffn_up_shexp.weight", GA_MAT, GA_ALL, GA_PLAIN, shared_up),
    GA_T("ffn_down_shexp.weight", GA_MAT, GA_ALL, GA_PLAIN, shared_down),
};

/* What llama.cpp's deepseek2 graph can express (docs/export.md). */
static moeq_status check(const moeq_model *m, const moeq_gguf_export_opts *o, moeq_error *err)
{
    (void)o;
    const moeq_config *c = moeq_model_config(m);
    const char *why = NULL;
    int64_t lead = 0;
    while (lead < c->layers && !c->layer_is_moe[lead]) lead++;
    for (int64_t l = lead; l < c->layers && !why; l++)
        if (!c->layer_is_moe[l]) why = "a dense layer after a MoE layer (only leading dense layers)";
    if (!why && c->q_lora_rank == 0 && c->layers != 26 && c->layers != 27)
        why = "no q_lora_rank (a plain q_proj): llama.cpp's loader takes that only for 26- or 27-layer models "
              "(DeepSeek-V2-Lite) and requires attn_q_a/attn_q_b otherwise";
    if (!why && c->attn != MOEQ_ATTN_MLA) why = "attention that is not MLA";
    if (!why && !c->rope_interleave) why = "non-interleaved RoPE (llama.cpp's deepseek2 ropes pairs 2i, 2i+1)";
    if (!why && c->group_limited) why = "group_limited_greedy routing";
    if (!why && c->router != MOEQ_ROUTER_SIGMOID_GROUP && c->router != MOEQ_ROUTER_SOFTMAX_GROUP)
        why = "a router other than DeepSeek's softmax or sigmoid";
    if (!why && c->rope_type == MOEQ_ROPE_YARN &&
        (fabs(c->rope_attn_factor - 1) > 1e-6 || c->rope_beta_fast != 32 || c->rope_beta_slow != 1))
        why = "YaRN with an attention factor other than 1 or betas other than 32/1";
    if (!why && c->rope_type == MOEQ_ROPE_LONGROPE) why = "longrope";
    if (why)
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: %s: llama.cpp's deepseek2 graph cannot express it",
                         moeq_model_path(m), why);
    return MOEQ_OK;
}

/* llama.cpp src/models/deepseek2.cpp load_arch_hparams */
static void meta(moeq_gguf_meta *mw)
{
    const moeq_config *c = mw->x->c;
    moeq_gguf_meta_common(mw, c->heads, c->v_head_dim, 1);   /* MLA layout A: MHA */
    moeq_gguf_meta_u32(mw, "leading_dense_block_count", mw->x->dense_lead);
    if (c->q_lora_rank > 0) moeq_gguf_meta_u32(mw, "attention.q_lora_rank", c->q_lora_rank);
    moeq_gguf_meta_u32(mw, "attention.kv_lora_rank", c->kv_lora_rank);
    moeq_gguf_meta_u32(mw, "rope.dimension_count", c->qk_rope_dim);
    moeq_gguf_meta_u32(mw, "expert_shared_count", c->moe_inter > 0 ? c->shared_inter / c->moe_inter : 0);
    moeq_gguf_meta_f32(mw, "expert_weights_scale", c->routed_scaling);
    moeq_gguf_meta_bool(mw, "expert_weights_norm", c->norm_topk_prob);
    moeq_gguf_meta_u32(mw, "expert_gating_func", c->router == MOEQ_ROUTER_SIGMOID_GROUP ? 2 : 1);
    moeq_gguf_meta_u32(mw, "expert_group_count", c->n_group);
    moeq_gguf_meta_u32(mw, "expert_group_used_count", c->topk_group);
    moeq_gguf_meta_u32(mw, "vocab_size", c->vocab);
    if (c->rope_type == MOEQ_ROPE_YARN) {
        /* HF's softmax scale is m(factor, mscale_all_dim)^2 / sqrt(d) (config.c folds it into
         * attn_scale); llama.cpp rebuilds it from yarn_log_multiplier = 0.1 * mscale_all_dim */
        double m2 = c->attn_scale * sqrt((double)c->head_dim), lf = log(c->rope_factor);
        double msa = lf > 0 && m2 > 0 ? (sqrt(m2) - 1) / (0.1 * lf) : 0;
        moeq_gguf_meta_str(mw, "rope.scaling.type", "yarn");
        moeq_gguf_meta_f32(mw, "rope.scaling.factor", c->rope_factor);
        moeq_gguf_meta_u32(mw, "rope.scaling.original_context_length", (int64_t)c->rope_orig_max);
        moeq_gguf_meta_f32(mw, "rope.scaling.yarn_log_multiplier", 0.1 * msa);
    }
}

/* deepseek2 (llama.cpp src/models/deepseek2.cpp; docs/FORMAT-gguf.md): MLA sizes, leading dense
 * layers, DeepSeek routing, YaRN — the config formats/config.c derives for deepseek_v3 (sigmoid
 * gating) or deepseek_v2 (softmax). MLA stored as MHA (layout A: attn_kv_b whole). */
static moeq_status read_config(moeq_gguf_rctx *c)
{
    const moeq_gguf *g = c->g;
    moeq_config *cfg = c->cfg;
    const char *L = moeq_gguf_label(g);
    moeq_status st;
    memset(cfg, 0, sizeof *cfg);
    int64_t hd = 0, vd = 0, rot = 0, ctx = 2048, lead = 0, nshared = 0, gating = 1, orig = 0;
    float scale = 1, theta = 10000, eps = 0, factor = 1, logmul = 0;
    if ((st = moeq_gguf_read_u(c, "block_count", 1, 1, MOEQ_MAX_LAYERS, &cfg->layers)) ||
        (st = moeq_gguf_read_u(c, "embedding_length", 1, 1, 1 << 20, &cfg->hidden)) ||
        (st = moeq_gguf_read_u(c, "attention.head_count", 1, 1, 4096, &cfg->heads)) ||
        (st = moeq_gguf_read_u(c, "attention.key_length", 1, 2, 4096, &hd)) ||
        (st = moeq_gguf_read_u(c, "attention.value_length", 1, 1, 4096, &vd)) ||
        (st = moeq_gguf_read_u(c, "rope.dimension_count", 1, 2, 4096, &rot)) ||
        (st = moeq_gguf_read_u(c, "context_length", 0, 1, UINT32_MAX, &ctx)) ||
        (st = moeq_gguf_read_u(c, "expert_count", 1, 1, MOEQ_GROUP_ROUTER_MAX_EXPERTS, &cfg->n_experts)) ||
        (st = moeq_gguf_read_u(c, "expert_used_count", 1, 1, 65536, &cfg->top_k)) ||
        (st = moeq_gguf_read_u(c, "expert_feed_forward_length", 1, 1, 1 << 24, &cfg->moe_inter)) ||
        (st = moeq_gguf_read_u(c, "feed_forward_length", 0, 1, 1 << 24, &cfg->dense_inter)) ||
        (st = moeq_gguf_read_u(c, "leading_dense_block_count", 0, 0, MOEQ_MAX_LAYERS, &lead)) ||
        (st = moeq_gguf_read_u(c, "attention.q_lora_rank", 0, 1, 1 << 20, &cfg->q_lora_rank)) ||
        (st = moeq_gguf_read_u(c, "attention.kv_lora_rank", 1, 1, 1 << 20, &cfg->kv_lora_rank)) ||
        (st = moeq_gguf_read_u(c, "expert_shared_count", 0, 0, 4096, &nshared)) ||
        (st = moeq_gguf_read_u(c, "expert_gating_func", 0, 1, 2, &gating)) ||
        (st = moeq_gguf_read_u(c, "expert_group_count", 0, 1, 65536, &cfg->n_group)) ||
        (st = moeq_gguf_read_u(c, "expert_group_used_count", 0, 1, 65536, &cfg->topk_group)) ||
        (st = moeq_gguf_read_f(c, "expert_weights_scale", 0, &scale)) || (st = moeq_gguf_read_f(c, "rope.freq_base", 0, &theta)) ||
        (st = moeq_gguf_read_f(c, "attention.layer_norm_rms_epsilon", 1, &eps)))
        return st;
    cfg->n_group = cfg->n_group ? cfg->n_group : 1;
    cfg->topk_group = cfg->topk_group ? cfg->topk_group : 1;
    int64_t kvh = cfg->heads;
    if ((st = moeq_gguf_read_u(c, "attention.head_count_kv", 0, 1, 4096, &kvh))) return st;
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
        if ((st = moeq_gguf_read_f(c, "rope.scaling.factor", 1, &factor)) ||
            (st = moeq_gguf_read_u(c, "rope.scaling.original_context_length", 1, 1, UINT32_MAX, &orig)) ||
            (st = moeq_gguf_read_f(c, "rope.scaling.yarn_log_multiplier", 0, &logmul)) || (st = moeq_gguf_read_f(c, "rope.scaling.attn_factor", 0, &af)))
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


/* deepseek2's tensors (layout A) onto the DeepSeek family's names. */
static moeq_status read_layer(moeq_gguf_rctx *c, int64_t l)
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


const moeq_gguf_arch moeq_gguf_arch_deepseek2 = {
    .arch = "deepseek2",
    /* the first is the family a file's architecture finds before its gating key picks one */
    .model_types = (const char *const[]){ "deepseek_v3", "deepseek_v2", NULL },
    .expert_ff_key = "expert_feed_forward_length",
    .renorm = -1,
    .qk_norm = MOEQ_QK_NORM_NONE,
    .leading_dense = 1,
    .layer = layer,
    .n_layer = GA_COUNT(layer),
    .check = check,
    .meta = meta,
    .read_config = read_config,
    .read_layer = read_layer,
};
