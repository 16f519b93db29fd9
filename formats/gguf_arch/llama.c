/* GGUF architecture llama, as which llama.cpp runs Mixtral (src/models/llama.cpp): the
 * converter interleaves each head's q/k rows for its rope NORM (GA_PERMUTE_*), the graph
 * always renormalizes the top-k weights, the expert width is feed_forward_length. */
#include "formats/gguf_arch.h"

static const moeq_gguf_tdesc layer[] = {
    GA_T("attn_norm.weight", GA_VEC, GA_ALL, GA_PLAIN, attn_norm),
    GA_T("attn_q.weight", GA_MAT, GA_ALL, GA_PERMUTE_Q, q),
    GA_T("attn_k.weight", GA_MAT, GA_ALL, GA_PERMUTE_K, k),
    GA_T("attn_v.weight", GA_MAT, GA_ALL, GA_PLAIN, v),
    GA_T("attn_output.weight", GA_MAT, GA_ALL, GA_PLAIN, o),
    GA_T("ffn_norm.weight", GA_VEC, GA_ALL, GA_PLAIN, mlp_norm),
    GA_T("ffn_gate_inp.weight", GA_ROUTER, GA_MOE, GA_PLAIN, router),
    GA_X("ffn_gate_exps.weight", GA_EXPERTS, GA_MOE, MOEQ_PROJ_GATE),
    GA_X("ffn_up_exps.weight", GA_EXPERTS, GA_MOE, MOEQ_PROJ_UP),
    GA_X("ffn_down_exps.weight", GA_EXPERTS, GA_MOE, MOEQ_PROJ_DOWN),
};

static void meta(moeq_gguf_meta *mw)
{
    const moeq_config *c = mw->x->c;
    moeq_gguf_meta_common(mw, c->kv_heads, c->head_dim, 0);
    moeq_gguf_meta_u32(mw, "rope.dimension_count", c->head_dim);
    moeq_gguf_meta_u32(mw, "vocab_size", c->vocab);
}

/* the q/k rows read back in Hugging Face order */
static moeq_status read_layer(moeq_gguf_rctx *c, int64_t l)
{
    moeq_status st;
    if ((st = moeq_gguf_read_norms(c, l, "ffn_norm.weight")) || (st = moeq_gguf_read_attn(c, l, 1)) ||
        (st = moeq_gguf_read_router(c, l)) || (st = moeq_gguf_read_experts(c, l)) || (st = moeq_gguf_read_shared(c, l)))
        return st;
    return MOEQ_OK;
}

const moeq_gguf_arch moeq_gguf_arch_llama = {
    .arch = "llama",
    .model_types = (const char *const[]){ "mixtral", NULL },
    .expert_ff_key = "feed_forward_length",
    .renorm = 1,
    .qk_norm = MOEQ_QK_NORM_NONE,
    .layer = layer,
    .n_layer = GA_COUNT(layer),
    .meta = meta,
    .read_config = moeq_gguf_read_config_std,
    .read_layer = read_layer,
};
