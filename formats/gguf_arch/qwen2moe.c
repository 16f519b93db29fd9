/* GGUF architecture qwen2moe (llama.cpp src/models/qwen2moe.cpp): q/k/v biases, a shared
 * expert with its sigmoid gate (ffn_gate_inp_shexp, {n_embd}); the graph never renormalizes
 * the top-k weights. */
#include "formats/gguf_arch.h"

static const moeq_gguf_tdesc layer[] = {
    GA_T("attn_norm.weight", GA_VEC, GA_ALL, GA_PLAIN, attn_norm),
    GA_T("attn_q.weight", GA_MAT, GA_ALL, GA_PLAIN, q),
    GA_T("attn_k.weight", GA_MAT, GA_ALL, GA_PLAIN, k),
    GA_T("attn_v.weight", GA_MAT, GA_ALL, GA_PLAIN, v),
    GA_T("attn_output.weight", GA_MAT, GA_ALL, GA_PLAIN, o),
    GA_T("attn_q.bias", GA_VEC, GA_ALL, GA_PLAIN, q_bias),
    GA_T("attn_k.bias", GA_VEC, GA_ALL, GA_PLAIN, k_bias),
    GA_T("attn_v.bias", GA_VEC, GA_ALL, GA_PLAIN, v_bias),
    GA_T("ffn_norm.weight", GA_VEC, GA_ALL, GA_PLAIN, mlp_norm),
    GA_T("ffn_gate_inp.weight", GA_ROUTER, GA_MOE, GA_PLAIN, router),
    GA_X("ffn_gate_exps.weight", GA_EXPERTS, GA_MOE, MOEQ_PROJ_GATE),
    GA_X("ffn_up_exps.weight", GA_EXPERTS, GA_MOE, MOEQ_PROJ_UP),
    GA_X("ffn_down_exps.weight", GA_EXPERTS, GA_MOE, MOEQ_PROJ_DOWN),
    GA_T("ffn_gate_inp_shexp.weight", GA_ROUTER, GA_ALL, GA_PLAIN, shared_expert_gate),
    GA_T("ffn_gate_shexp.weight", GA_MAT, GA_ALL, GA_PLAIN, shared_gate),
    GA_T("ffn_up_shexp.weight", GA_MAT, GA_ALL, GA_PLAIN, shared_up),
    GA_T("ffn_down_shexp.weight", GA_MAT, GA_ALL, GA_PLAIN, shared_down),
};

static void meta(moeq_gguf_meta *mw)
{
    const moeq_config *c = mw->x->c;
    moeq_gguf_meta_common(mw, c->kv_heads, c->head_dim, 0);
}

const moeq_gguf_arch moeq_gguf_arch_qwen2moe = {
    .arch = "qwen2moe",
    .model_types = (const char *const[]){ "qwen2_moe", NULL },
    .expert_ff_key = "expert_feed_forward_length",
    .shared_ff_key = "expert_shared_feed_forward_length",
    .renorm = 0,
    .qk_norm = MOEQ_QK_NORM_NONE,
    .layer = layer,
    .n_layer = GA_COUNT(layer),
    .meta = meta,
    .read_config = moeq_gguf_read_config_std,
    .read_layer = moeq_gguf_read_layer_std,
};
