/* GGUF architecture gpt-oss (llama.cpp src/models/openai-moe.cpp; the converter's
 * conversion/gpt_oss.py): q/k/v/o biases and per-head sinks, post_attention_norm for the MLP
 * norm, a router with a bias, expert biases {rows, n_expert}, sliding layers by
 * attention.sliding_window_pattern, YaRN, the clamped SwiGLU its graph hard-codes; the top-k
 * weights are a softmax over the selected logits (= renormalized). */
#include "formats/gguf_arch.h"
#include "formats/family.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NEED(...) GA_NEED(c, __VA_ARGS__)
#define src moeq_gguf_source

static const moeq_gguf_tdesc layer[] = {
    GA_T("attn_norm.weight", GA_VEC, GA_ALL, GA_PLAIN, attn_norm),
    GA_T("attn_q.weight", GA_MAT, GA_ALL, GA_PLAIN, q),
    GA_T("attn_k.weight", GA_MAT, GA_ALL, GA_PLAIN, k),
    GA_T("attn_v.weight", GA_MAT, GA_ALL, GA_PLAIN, v),
    GA_T("attn_output.weight", GA_MAT, GA_ALL, GA_PLAIN, o),
    GA_T("attn_q.bias", GA_VEC, GA_ALL, GA_PLAIN, q_bias),
    GA_T("attn_k.bias", GA_VEC, GA_ALL, GA_PLAIN, k_bias),
    GA_T("attn_v.bias", GA_VEC, GA_ALL, GA_PLAIN, v_bias),
    GA_T("attn_output.bias", GA_VEC, GA_ALL, GA_PLAIN, o_bias),
    GA_T("attn_sinks.weight", GA_VEC, GA_ALL, GA_PLAIN, sinks),
    GA_T("post_attention_norm.weight", GA_VEC, GA_ALL, GA_PLAIN, mlp_norm),   /* there is no ffn_norm */
    GA_T("ffn_gate_inp.weight", GA_ROUTER, GA_MOE, GA_PLAIN, router),
    GA_T("ffn_gate_inp.bias", GA_VEC, GA_MOE, GA_PLAIN, router_lin_bias),
    GA_X("ffn_gate_exps.weight", GA_EXPERTS, GA_MOE, MOEQ_PROJ_GATE),
    GA_X("ffn_up_exps.weight", GA_EXPERTS, GA_MOE, MOEQ_PROJ_UP),
    GA_X("ffn_down_exps.weight", GA_EXPERTS, GA_MOE, MOEQ_PROJ_DOWN),
    /* expert e's row from moeq_model_expert_bias: gate and up de-interleaved from
     * gate_up_proj_bias, as the converter's [..., ::2] / [..., 1::2] */
    GA_X("ffn_gate_exps.bias", GA_EXPERT_BIAS, GA_MOE_EBIAS, MOEQ_PROJ_GATE),
    GA_X("ffn_up_exps.bias", GA_EXPERT_BIAS, GA_MOE_EBIAS, MOEQ_PROJ_UP),
    GA_X("ffn_down_exps.bias", GA_EXPERT_BIAS, GA_MOE_EBIAS, MOEQ_PROJ_DOWN),
};

/* The period p of llama.cpp's set_swa_pattern(p) that gives c's sliding layers (layer l slides
 * when p is 0 or l % p < p - 1; gpt-oss's default is 2: even layers), -1 when none does. */
static int swa_period(const moeq_config *c)
{
    for (int64_t p = 0; p <= c->layers + 1; p++) {
        int64_t q = p == 0 ? 2 : p == 2 ? 0 : p;   /* 2 first: the default needs no key */
        int ok = 1;
        for (int64_t l = 0; ok && l < c->layers; l++) ok = c->layer_sliding[l] == (q == 0 || l % q < q - 1);
        if (ok) return (int)q;
    }
    return -1;
}


/* What llama.cpp's gpt-oss graph hard-codes or reads (docs/export.md). */
static moeq_status check(const moeq_model *m, const moeq_gguf_export_opts *o, moeq_error *err)
{
    const moeq_config *c = moeq_model_config(m);
    const char *why = NULL;
    if (c->act != MOEQ_ACT_SWIGLU_CLAMP || fabs(c->act_alpha - 1.702) > 1e-9 || fabs(c->act_limit - 7) > 1e-9)
        why = "an expert activation other than the clamped SwiGLU with alpha 1.702 and limit 7";
    else if (!c->qkv_bias || !c->o_bias)
        why = "attention_bias false (the loader requires attn_output.bias)";
    else if (!c->attn_sinks) why = "no attention sinks";
    else if (c->router != MOEQ_ROUTER_TOPK_SOFTMAX || fabs(c->routed_scaling - 1) > 1e-12)
        why = "a router other than softmax over the top-k logits";
    else if (c->rope_dim != c->head_dim || c->rope_interleave)
        why = "partial or interleaved RoPE (llama.cpp ropes whole heads, rotate-half)";
    else if (c->rope_type != MOEQ_ROPE_DEFAULT && c->rope_type != MOEQ_ROPE_YARN)
        why = "a RoPE scaling other than none or yarn";
    else if (fabs(c->attn_scale * sqrt((double)c->head_dim) - 1) > 1e-9)
        why = "a softmax scale other than 1/sqrt(head_dim)";
    else if (c->sliding_window < 1 || c->sliding_window > UINT32_MAX)
        why = "sliding_window out of range";
    else if (swa_period(c) == 1)
        why = "layer_types without a sliding_attention layer (the loader asserts one for its iSWA cache)";
    else if (swa_period(c) < 0)
        why = "layer_types: the sliding layers are not llama.cpp's pattern (layer l slides when l % p < p - 1 "
              "for a period p: attention.sliding_window_pattern)";
    if (!why && c->rope_type == MOEQ_ROPE_YARN) {
        double ms = c->rope_factor <= 1 ? 1.0 : 0.1 * log(c->rope_factor) + 1.0;
        if (c->rope_beta_fast != 32 || c->rope_beta_slow != 1)
            why = "YaRN beta_fast/beta_slow other than 32/1 (the loader does not read them)";
        else if (fabs(c->rope_attn_factor / ms - 1) > 1e-6)
            why = "a YaRN attention_factor other than 0.1 ln(factor) + 1";
        else if (c->rope_orig_max < 1 || c->rope_orig_max > UINT32_MAX || c->rope_orig_max != floor(c->rope_orig_max))
            why = "rope original_max_position_embeddings out of range";
        else if (!c->rope_truncate && !o->yarn_truncate)
            why = "YaRN truncate false (llama.cpp rounds the correction range, ggml_rope_yarn_corr_dims; "
                  "pass --yarn-truncate to accept that)";
    }
    if (why)
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: %s: llama.cpp's gpt-oss graph cannot express it",
                         moeq_model_path(m), why);
    return MOEQ_OK;
}

/* conversion/gpt_oss.py + base.py's rope keys; llama.cpp src/models/openai-moe.cpp */
static void meta(moeq_gguf_meta *mw)
{
    const moeq_config *c = mw->x->c;
    moeq_gguf_meta_common(mw, c->kv_heads, c->head_dim, 1);
    moeq_gguf_meta_u32(mw, "attention.sliding_window", c->sliding_window);
    int p = swa_period(c);
    if (p != 2) moeq_gguf_meta_u32(mw, "attention.sliding_window_pattern", p);   /* the loader's default is 2 */
    if (c->rope_type == MOEQ_ROPE_YARN) {
        moeq_gguf_meta_str(mw, "rope.scaling.type", "yarn");
        moeq_gguf_meta_f32(mw, "rope.scaling.factor", c->rope_factor);
        moeq_gguf_meta_u32(mw, "rope.scaling.original_context_length", (int64_t)c->rope_orig_max);
        moeq_gguf_meta_f32(mw, "rope.scaling.yarn_beta_fast", c->rope_beta_fast);   /* written as the converter does; */
        moeq_gguf_meta_f32(mw, "rope.scaling.yarn_beta_slow", c->rope_beta_slow);   /* the loader keeps 32 and 1 */
    }
}

/* gpt-oss (llama.cpp src/models/openai-moe.cpp): sinks, attention and expert biases, sliding
 * layers (l % p < p - 1 for attention.sliding_window_pattern p, default 2), YaRN as llama.cpp
 * computes it (correction range rounded: truncate; cos/sin x 0.1 ln(factor) + 1, x attn_factor),
 * the clamped SwiGLU with the alpha 1.702 and limit 7 its graph hard-codes. Experts are
 * per-expert views (MOEQ_EXPERTS_HF) with the biases of the family. */
static moeq_status config_oai(moeq_gguf_rctx *c)
{
    const moeq_gguf *g = c->g;
    moeq_config *cfg = c->cfg;
    const char *L = moeq_gguf_label(g);
    moeq_status st;
    int64_t win = 0, period = 2, orig = 0;
    float factor = 0, af = 1, swa_base = (float)cfg->rope_theta;
    if ((st = moeq_gguf_read_u(c, "attention.sliding_window", 1, 1, UINT32_MAX, &win)) ||
        (st = moeq_gguf_read_u(c, "attention.sliding_window_pattern", 0, 0, MOEQ_MAX_LAYERS, &period)) ||
        (st = moeq_gguf_read_f(c, "rope.freq_base_swa", 0, &swa_base)))
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
        if ((st = moeq_gguf_read_f(c, "rope.scaling.factor", 1, &factor)) ||
            (st = moeq_gguf_read_u(c, "rope.scaling.original_context_length", 1, 1, UINT32_MAX, &orig)) ||
            (st = moeq_gguf_read_f(c, "rope.scaling.attn_factor", 0, &af)))
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

/* gpt-oss's expert biases: down {H, E} is the family's [E, H] as it is; gate and up {I, E} are
 * interleaved into an F32 heap copy [E, 2I] (gate = even entries), the hub's gate_up_proj_bias. */
static moeq_status expert_biases(moeq_gguf_rctx *c, int64_t l)
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


/* the grouped-query keys, then gpt-oss's own */
static moeq_status read_config(moeq_gguf_rctx *c)
{
    moeq_status st = moeq_gguf_read_config_std(c);
    return st ? st : config_oai(c);
}

static moeq_status read_layer(moeq_gguf_rctx *c, int64_t l)
{
    const moeq_family *f = c->cfg->family;
    const moeq_gguf_tensor *t;
    moeq_status st;
    if ((st = moeq_gguf_read_norms(c, l, "post_attention_norm.weight")) || (st = moeq_gguf_read_attn(c, l, 0)) ||
        (st = moeq_gguf_read_router(c, l)))
        return st;
    if ((st = NEED("ffn_gate_inp.bias", l, 1, 1, &t, c->cfg->n_experts)) ||
        (st = src(c, f->router_lin_bias, l, -1, t, 0, 1, 1)))
        return st;
    if ((st = moeq_gguf_read_experts(c, l)) || (c->cfg->expert_bias && (st = expert_biases(c, l))) ||
        (st = moeq_gguf_read_shared(c, l)))
        return st;
    return MOEQ_OK;
}

const moeq_gguf_arch moeq_gguf_arch_gpt_oss = {
    .arch = "gpt-oss",
    .model_types = (const char *const[]){ "gpt_oss", NULL },
    .expert_ff_key = "expert_feed_forward_length",
    .renorm = 1,
    .qk_norm = MOEQ_QK_NORM_NONE,
    .rope_yarn = 1,
    .layer = layer,
    .n_layer = GA_COUNT(layer),
    .check = check,
    .meta = meta,
    .read_config = read_config,
    .read_layer = read_layer,
};
