/* The family table. Defaults follow the transformers 5 config classes (MixtralConfig,
 * Qwen2MoeConfig, Qwen3MoeConfig, OlmoeConfig); docs/FAMILIES.md lists them. */
#include "formats/family.h"

#include <stdio.h>
#include <string.h>

/* Names every family here shares (Llama-style decoder). */
#define COMMON_NAMES                                                                          \
    .embed = "model.embed_tokens.weight", .lm_head = "lm_head.weight",                       \
    .final_norm = "model.norm.weight",                                                        \
    .attn_norm = "model.layers.%lld.input_layernorm.weight",                                  \
    .mlp_norm = "model.layers.%lld.post_attention_layernorm.weight",                          \
    .q = "model.layers.%lld.self_attn.q_proj.weight",                                         \
    .k = "model.layers.%lld.self_attn.k_proj.weight",                                         \
    .v = "model.layers.%lld.self_attn.v_proj.weight",                                         \
    .o = "model.layers.%lld.self_attn.o_proj.weight",                                         \
    .q_bias = "model.layers.%lld.self_attn.q_proj.bias",                                      \
    .k_bias = "model.layers.%lld.self_attn.k_proj.bias",                                      \
    .v_bias = "model.layers.%lld.self_attn.v_proj.bias",                                      \
    .q_norm = "model.layers.%lld.self_attn.q_norm.weight",                                    \
    .k_norm = "model.layers.%lld.self_attn.k_norm.weight",                                    \
    .fused_gate_up = { "model.layers.%lld.mlp.experts.gate_up_proj", NULL },                  \
    .fused_down = { "model.layers.%lld.mlp.experts.down_proj", NULL }

/* Qwen/OLMoE naming of the per-expert layout, router and dense MLP. */
#define MLP_NAMES                                                                             \
    .router = { "model.layers.%lld.mlp.gate.weight", NULL },                                  \
    .expert = { { "model.layers.%lld.mlp.experts.%lld.gate_proj.weight", NULL },              \
                { "model.layers.%lld.mlp.experts.%lld.up_proj.weight", NULL },                \
                { "model.layers.%lld.mlp.experts.%lld.down_proj.weight", NULL } },            \
    .dense = { "model.layers.%lld.mlp.gate_proj.weight", "model.layers.%lld.mlp.up_proj.weight", \
               "model.layers.%lld.mlp.down_proj.weight" }

/* DeepSeek's MLA attention, router bias, shared experts (deepseek_v2, deepseek_v3, kimi_k2). */
#define DEEPSEEK_NAMES                                                                        \
    COMMON_NAMES,                                                                             \
    MLP_NAMES,                                                                                \
    .q_a = "model.layers.%lld.self_attn.q_a_proj.weight",                                     \
    .q_a_norm = "model.layers.%lld.self_attn.q_a_layernorm.weight",                           \
    .q_b = "model.layers.%lld.self_attn.q_b_proj.weight",                                     \
    .kv_a = "model.layers.%lld.self_attn.kv_a_proj_with_mqa.weight",                          \
    .kv_a_norm = "model.layers.%lld.self_attn.kv_a_layernorm.weight",                         \
    .kv_b = "model.layers.%lld.self_attn.kv_b_proj.weight",                                   \
    .shared = { "model.layers.%lld.mlp.shared_experts.gate_proj.weight",                      \
                "model.layers.%lld.mlp.shared_experts.up_proj.weight",                        \
                "model.layers.%lld.mlp.shared_experts.down_proj.weight" }

/* DeepSeek-V3 (V3.1, R1) and Kimi-K2 (model_type kimi_k2, the same graph): DeepseekV3Config
 * defaults. Sigmoid group-limited routing with e_score_correction_bias; rope_interleave. */
#define DEEPSEEK_V3_ROW(type)                                                                 \
    {                                                                                         \
        .model_type = type,                                                                   \
        .moe_inter_key = "moe_intermediate_size",                                             \
        .dense_inter_key = "intermediate_size",                                               \
        .renorm = MOEQ_RENORM_KEY, .norm_topk_default = 1,                                    \
        .sparse = MOEQ_SPARSE_FIRST_K, .first_k_dense_default = 3,                            \
        .qk_norm = MOEQ_QK_NORM_NONE,                                                         \
        .qkv_bias_key = "attention_bias", .qkv_bias_default = 0,                              \
        .tie_default = 0, .rope_theta_default = 10000.0,                                      \
        .attn = MOEQ_ATTN_MLA, .router_kind = MOEQ_ROUTER_SIGMOID_GROUP,                      \
        .experts_key = "n_routed_experts",                                                    \
        .shared_count_key = "n_shared_experts", .shared_count_default = 1,                    \
        .routed_scaling_default = 2.5, .n_group_default = 8, .topk_group_default = 4,         \
        .rope_interleave_key = "rope_interleave", .rope_interleave_default = 1,               \
        .yarn_mscale_scale = 1,                                                               \
        DEEPSEEK_NAMES,                                                                       \
        .router_bias = { "model.layers.%lld.mlp.gate.e_score_correction_bias", NULL },        \
    }

static const moeq_family families[] = {
    {
        /* Mixtral: w1 = gate, w3 = up, w2 = down under block_sparse_moe; v5 re-saves as
         * mlp.gate + fused mlp.experts.*. Top-k weights are always renormalized. */
        .model_type = "mixtral",
        .moe_inter_key = "intermediate_size",
        .renorm = MOEQ_RENORM_ALWAYS, .norm_topk_default = 1,
        .sparse = MOEQ_SPARSE_ALL,
        .qk_norm = MOEQ_QK_NORM_NONE,
        .qkv_bias_key = NULL, .qkv_bias_default = 0,   /* MixtralAttention has no biases */
        .tie_default = 0, .rope_theta_default = 1e6,
        .has_sliding_window = 1,
        COMMON_NAMES,
        .router = { "model.layers.%lld.block_sparse_moe.gate.weight",
                    "model.layers.%lld.mlp.gate.weight", NULL },
        .expert = { { "model.layers.%lld.block_sparse_moe.experts.%lld.w1.weight",
                      "model.layers.%lld.mlp.experts.%lld.gate_proj.weight", NULL },
                    { "model.layers.%lld.block_sparse_moe.experts.%lld.w3.weight",
                      "model.layers.%lld.mlp.experts.%lld.up_proj.weight", NULL },
                    { "model.layers.%lld.block_sparse_moe.experts.%lld.w2.weight",
                      "model.layers.%lld.mlp.experts.%lld.down_proj.weight", NULL } },
    },
    {
        /* Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B): shared expert gated by
         * sigmoid(shared_expert_gate), q/k/v biases, dense layers via mlp_only_layers. */
        .model_type = "qwen2_moe",
        .moe_inter_key = "moe_intermediate_size",
        .dense_inter_key = "intermediate_size",
        .shared_inter_key = "shared_expert_intermediate_size",
        .renorm = MOEQ_RENORM_KEY, .norm_topk_default = 0,
        .sparse = MOEQ_SPARSE_QWEN,
        .qk_norm = MOEQ_QK_NORM_NONE,
        /* v4 configs have no key and always use biases; v5 writes qkv_bias (default true) */
        .qkv_bias_key = "qkv_bias", .qkv_bias_default = 1,
        .tie_default = 0, .rope_theta_default = 10000.0,
        COMMON_NAMES,
        MLP_NAMES,
        .shared = { "model.layers.%lld.mlp.shared_expert.gate_proj.weight",
                    "model.layers.%lld.mlp.shared_expert.up_proj.weight",
                    "model.layers.%lld.mlp.shared_expert.down_proj.weight" },
        .shared_expert_gate = "model.layers.%lld.mlp.shared_expert_gate.weight",
    },
    {
        /* Qwen3-MoE: per-head q/k RMSNorm of size head_dim, no biases by default. */
        .model_type = "qwen3_moe",
        .moe_inter_key = "moe_intermediate_size",
        .dense_inter_key = "intermediate_size",
        .renorm = MOEQ_RENORM_KEY, .norm_topk_default = 0,   /* Qwen3MoeConfig default */
        .sparse = MOEQ_SPARSE_QWEN,
        .qk_norm = MOEQ_QK_NORM_HEAD,
        .qkv_bias_key = "attention_bias", .qkv_bias_default = 0,
        .tie_default = 0, .rope_theta_default = 10000.0,
        COMMON_NAMES,
        MLP_NAMES,
    },
    {
        /* OLMoE: q/k RMSNorm over the whole projection output; every layer MoE. */
        .model_type = "olmoe",
        .moe_inter_key = "intermediate_size",
        .renorm = MOEQ_RENORM_KEY, .norm_topk_default = 0,
        .sparse = MOEQ_SPARSE_ALL,
        .qk_norm = MOEQ_QK_NORM_FULL,
        .qkv_bias_key = "attention_bias", .qkv_bias_default = 0,
        .tie_default = 0, .rope_theta_default = 10000.0,
        COMMON_NAMES,
        MLP_NAMES,
    },
    DEEPSEEK_V3_ROW("deepseek_v3"),
    DEEPSEEK_V3_ROW("kimi_k2"),
    {
        /* GLM-4.5 / 4.6 / Air (Glm4MoeConfig): grouped-query attention with q/k/v biases
         * (attention_bias; o_proj has none), per-head q/k RMSNorm when use_qk_norm, partial
         * rotary (rotate-half over the first partial_rotary_factor of each head), the
         * DeepSeek-V3 router. */
        .model_type = "glm4_moe",
        .moe_inter_key = "moe_intermediate_size",
        .dense_inter_key = "intermediate_size",
        .renorm = MOEQ_RENORM_KEY, .norm_topk_default = 1,
        .sparse = MOEQ_SPARSE_FIRST_K, .first_k_dense_default = 1,
        .qk_norm = MOEQ_QK_NORM_HEAD, .qk_norm_key = "use_qk_norm",
        .qkv_bias_key = "attention_bias", .qkv_bias_default = 0, .attention_bias_qkv_only = 1,
        .tie_default = 0, .rope_theta_default = 10000.0,
        .attn = MOEQ_ATTN_GQA, .router_kind = MOEQ_ROUTER_SIGMOID_GROUP,
        .experts_key = "n_routed_experts",
        .shared_count_key = "n_shared_experts", .shared_count_default = 1,
        .routed_scaling_default = 1.0, .n_group_default = 1, .topk_group_default = 1,
        .partial_rotary = 1,
        COMMON_NAMES,
        MLP_NAMES,
        .shared = { "model.layers.%lld.mlp.shared_experts.gate_proj.weight",
                    "model.layers.%lld.mlp.shared_experts.up_proj.weight",
                    "model.layers.%lld.mlp.shared_experts.down_proj.weight" },
        .router_bias = { "model.layers.%lld.mlp.gate.e_score_correction_bias", NULL },
    },
    {
        /* dots.llm1 (Dots1Config): Qwen3 attention (per-head q/k RMSNorm before RoPE) with the
         * DeepSeek-V3 router and shared experts; every layer full attention. */
        .model_type = "dots1",
        .moe_inter_key = "moe_intermediate_size",
        .dense_inter_key = "intermediate_size",
        .renorm = MOEQ_RENORM_KEY, .norm_topk_default = 0,
        .sparse = MOEQ_SPARSE_FIRST_K, .first_k_dense_default = 0,
        .qk_norm = MOEQ_QK_NORM_HEAD,
        .qkv_bias_key = "attention_bias", .qkv_bias_default = 0,
        .tie_default = 0, .rope_theta_default = 10000.0,
        .attn = MOEQ_ATTN_GQA, .router_kind = MOEQ_ROUTER_SIGMOID_GROUP,
        .experts_key = "n_routed_experts",
        .shared_count_key = "n_shared_experts", .shared_count_default = 0,
        .routed_scaling_default = 1.0, .n_group_default = 1, .topk_group_default = 1,
        COMMON_NAMES,
        MLP_NAMES,
        .shared = { "model.layers.%lld.mlp.shared_experts.gate_proj.weight",
                    "model.layers.%lld.mlp.shared_experts.up_proj.weight",
                    "model.layers.%lld.mlp.shared_experts.down_proj.weight" },
        .router_bias = { "model.layers.%lld.mlp.gate.e_score_correction_bias", NULL },
    },
    {
        /* ERNIE-4.5-MoE (Ernie4_5_MoeConfig): softmax router whose moe_statics correction bias
         * steers the choice only, renormalized by max(sum, moe_norm_min); shared experts; MoE
         * layers by interval and start/end index; RoPE on interleaved pairs; tied embeddings. */
        .model_type = "ernie4_5_moe",
        .moe_inter_key = "moe_intermediate_size",
        .dense_inter_key = "intermediate_size",
        .renorm = MOEQ_RENORM_ALWAYS, .norm_topk_default = 1,
        .sparse = MOEQ_SPARSE_ERNIE,
        .qk_norm = MOEQ_QK_NORM_NONE,
        .qkv_bias_key = NULL, .refuse_true_key = "use_bias",
        .tie_default = 1, .rope_theta_default = 500000.0,
        .attn = MOEQ_ATTN_GQA, .router_kind = MOEQ_ROUTER_SOFTMAX_BIAS,
        .experts_key = "moe_num_experts", .topk_key = "moe_k",
        .shared_count_key = "moe_num_shared_experts", .shared_count_default = 2,
        .rope_interleave_default = 1,
        COMMON_NAMES,
        MLP_NAMES,
        .shared = { "model.layers.%lld.mlp.shared_experts.gate_proj.weight",
                    "model.layers.%lld.mlp.shared_experts.up_proj.weight",
                    "model.layers.%lld.mlp.shared_experts.down_proj.weight" },
        .router_bias = { "model.layers.%lld.mlp.moe_statics.e_score_correction_bias",
                         "model.layers.%lld.mlp.gate.moe_statics.e_score_correction_bias", NULL },
        .router_bias_rows = 1,
    },
    {
        /* Phi-3.5-MoE (PhimoeConfig): LayerNorm with bias, q/k/v/o biases (attention_bias),
         * lm_head bias, sparsemixer top-2 routing, longrope; mixtral's expert names (v5 renames
         * block_sparse_moe to mlp and gate to router). */
        .model_type = "phimoe",
        .moe_inter_key = "intermediate_size",
        .renorm = MOEQ_RENORM_ALWAYS, .norm_topk_default = 0,
        .sparse = MOEQ_SPARSE_ALL,
        .qk_norm = MOEQ_QK_NORM_NONE,
        .qkv_bias_key = "attention_bias", .qkv_bias_default = 0, .attention_bias_o = 1,
        .lm_head_bias_key = "lm_head_bias",
        .tie_default = 0, .rope_theta_default = 1e6,
        .has_sliding_window = 1,
        .attn = MOEQ_ATTN_GQA, .router_kind = MOEQ_ROUTER_SPARSEMIXER,
        .norm = MOEQ_NORM_LAYER,
        COMMON_NAMES,
        .router = { "model.layers.%lld.block_sparse_moe.gate.weight",
                    "model.layers.%lld.mlp.router.weight", NULL },
        .expert = { { "model.layers.%lld.block_sparse_moe.experts.%lld.w1.weight", NULL },
                    { "model.layers.%lld.block_sparse_moe.experts.%lld.w3.weight", NULL },
                    { "model.layers.%lld.block_sparse_moe.experts.%lld.w2.weight", NULL } },
        .o_bias = "model.layers.%lld.self_attn.o_proj.bias",
        .attn_norm_bias = "model.layers.%lld.input_layernorm.bias",
        .mlp_norm_bias = "model.layers.%lld.post_attention_layernorm.bias",
        .final_norm_bias = "model.norm.bias",
        .lm_head_bias = "lm_head.bias",
    },
    {
        /* DeepSeek-V2 (V2-Lite, V2.5): softmax routing, greedy or group_limited_greedy (group
         * max), no renormalization; RoPE always on interleaved pairs (complex multiply). */
        .model_type = "deepseek_v2",
        .moe_inter_key = "moe_intermediate_size",
        .dense_inter_key = "intermediate_size",
        .renorm = MOEQ_RENORM_KEY, .norm_topk_default = 0,
        .sparse = MOEQ_SPARSE_FIRST_K, .first_k_dense_default = 0,
        .qk_norm = MOEQ_QK_NORM_NONE,
        .qkv_bias_key = "attention_bias", .qkv_bias_default = 0,
        .tie_default = 0, .rope_theta_default = 10000.0,
        .attn = MOEQ_ATTN_MLA, .router_kind = MOEQ_ROUTER_SOFTMAX_GROUP,
        .experts_key = "n_routed_experts",
        .shared_count_key = "n_shared_experts", .shared_count_default = 2,
        .routed_scaling_default = 1.0, .n_group_default = 1, .topk_group_default = 1,
        .rope_interleave_key = NULL, .rope_interleave_default = 1,
        .yarn_mscale_scale = 1,
        DEEPSEEK_NAMES,
    },
    {
        /* GPT-OSS (GptOssConfig): GQA with q/k/v/o biases and per-head sinks, alternating
         * sliding-window / full layers, YaRN (truncate false), router linear with bias (top-k of
         * the logits, softmax over the k), clamped SwiGLU experts with biases stored transposed
         * and interleaved (MOEQ_EXPERTS_GPTOSS), MXFP4 on the hub. */
        .model_type = "gpt_oss",
        .moe_inter_key = "intermediate_size",
        .renorm = MOEQ_RENORM_ALWAYS, .norm_topk_default = 1,
        .sparse = MOEQ_SPARSE_ALL,
        .qk_norm = MOEQ_QK_NORM_NONE,
        .qkv_bias_key = "attention_bias", .qkv_bias_default = 1, .attention_bias_o = 1,
        .tie_default = 0, .rope_theta_default = 150000.0,
        .attn = MOEQ_ATTN_GQA, .router_kind = MOEQ_ROUTER_TOPK_SOFTMAX,
        .sliding_layers = 1, .attn_sinks = 1, .act = MOEQ_ACT_SWIGLU_CLAMP,
        .expert_layout = MOEQ_EXPERTS_GPTOSS,
        COMMON_NAMES,
        .router = { "model.layers.%lld.mlp.router.weight", NULL },
        .o_bias = "model.layers.%lld.self_attn.o_proj.bias",
        .sinks = "model.layers.%lld.self_attn.sinks",
        .router_lin_bias = "model.layers.%lld.mlp.router.bias",
        .fused_gate_up_bias = "model.layers.%lld.mlp.experts.gate_up_proj_bias",
        .fused_down_bias = "model.layers.%lld.mlp.experts.down_proj_bias",
        /* a GGUF of gpt-oss only (formats/gguf_model.c): its de-interleaved [out, in] experts */
        .expert = { { "model.layers.%lld.mlp.experts.%lld.gate_proj.weight", NULL },
                    { "model.layers.%lld.mlp.experts.%lld.up_proj.weight", NULL },
                    { "model.layers.%lld.mlp.experts.%lld.down_proj.weight", NULL } },
    },
};

#define N_FAMILIES (sizeof families / sizeof families[0])

const moeq_family *moeq_family_find(const char *model_type)
{
    if (!model_type) return NULL;
    for (size_t i = 0; i < N_FAMILIES; i++)
        if (strcmp(families[i].model_type, model_type) == 0) return &families[i];
    return NULL;
}

size_t moeq_family_count(void) { return N_FAMILIES; }

const moeq_family *moeq_family_at(size_t i) { return i < N_FAMILIES ? &families[i] : NULL; }

void moeq_family_list(char *buf, size_t cap)
{
    /* built from the table so the message can never miss a family */
    size_t n = 0;
    if (!buf || cap == 0) return;
    buf[0] = '\0';
    for (size_t i = 0; i < N_FAMILIES; i++) {
        int w = snprintf(buf + n, cap - n, "%s%s", i ? ", " : "", families[i].model_type);
        if (w < 0 || (size_t)w >= cap - n) break;
        n += (size_t)w;
    }
}

int moeq_family_name(char *buf, size_t cap, const char *pattern, int64_t layer, int64_t expert)
{
    if (!pattern || !buf || cap == 0) return -1;
    /* patterns come from the constant table above: extra arguments are ignored by printf */
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#endif
    int w = snprintf(buf, cap, pattern, (long long)layer, (long long)expert);
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
    return (w < 0 || (size_t)w >= cap) ? -1 : 0;
}
