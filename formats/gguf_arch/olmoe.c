/* GGUF architecture olmoe (llama.cpp src/models/olmoe.cpp): q/k RMSNorm over the whole
 * projection ({n_embd}), so grouped KV heads are written as heads (GA_KV_EXPAND: each KV head's
 * k/v rows and k-norm weights once per query head of its group, the same attention exactly);
 * the GPT-2 pre-tokenizer is llama.cpp's "olmo"; the top-k weights never renormalized. */
#include "formats/gguf_arch.h"

static const moeq_gguf_tdesc layer[] = {
    GA_T("attn_norm.weight", GA_VEC, GA_ALL, GA_PLAIN, attn_norm),
    GA_T("attn_q.weight", GA_MAT, GA_ALL, GA_PLAIN, q),
    GA_T("attn_k.weight", GA_MAT, GA_ALL, GA_KV_EXPAND, k),
    GA_T("attn_v.weight", GA_MAT, GA_ALL, GA_KV_EXPAND, v),
    GA_T("attn_output.weight", GA_MAT, GA_ALL, GA_PLAIN, o),
    GA_T("attn_q.bias", GA_VEC, GA_ALL, GA_PLAIN, q_bias),    /* attention_bias true */
    GA_T("attn_k.bias", GA_VEC, GA_ALL, GA_PLAIN, k_bias),
    GA_T("attn_v.bias", GA_VEC, GA_ALL, GA_PLAIN, v_bias),
    GA_T("attn_q_norm.weight", GA_VEC, GA_ALL, GA_PLAIN, q_norm),
    GA_T("attn_k_norm.weight", GA_VEC, GA_ALL, GA_KV_EXPAND, k_norm),
    GA_T("ffn_norm.weight", GA_VEC, GA_ALL, GA_PLAIN, mlp_norm),
    GA_T("ffn_gate_inp.weight", GA_ROUTER, GA_MOE, GA_PLAIN, router),
    GA_X("ffn_gate_exps.weight", GA_EXPERTS, GA_MOE, MOEQ_PROJ_GATE),
    GA_X("ffn_up_exps.weight", GA_EXPERTS, GA_MOE, MOEQ_PROJ_UP),
    GA_X("ffn_down_exps.weight", GA_EXPERTS, GA_MOE, MOEQ_PROJ_DOWN),
};

static void meta(moeq_gguf_meta *mw)
{
    const moeq_config *c = mw->x->c;
    moeq_gguf_meta_common(mw, c->kv_heads * mw->x->kv_repeat, c->head_dim, 0);
}

const moeq_gguf_arch moeq_gguf_arch_olmoe = {
    .arch = "olmoe",
    .model_types = (const char *const[]){ "olmoe", NULL },
    .expert_ff_key = "feed_forward_length",
    .renorm = 0,
    .qk_norm = MOEQ_QK_NORM_FULL,
    .pre_gpt2 = "olmo",
    .layer = layer,
    .n_layer = GA_COUNT(layer),
    .meta = meta,
    .read_config = moeq_gguf_read_config_std,
    .read_layer = moeq_gguf_read_layer_std,
};
