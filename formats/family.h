/* Per-family architecture tables: the tensor names a Hugging Face MoE checkpoint uses and the
 * config.json keys and defaults that decide its routing. One table entry per model_type;
 * adding a family adds an entry here (and at most a few lines of forward code), never a tool
 * change. docs/FAMILIES.md describes every entry.
 *
 * Tensor-name patterns are printf formats: per-layer patterns take the layer as their first
 * %lld, per-expert patterns take the layer then the expert. Global names take no argument.
 * Lists of alternatives (routers, expert layouts) end with NULL; the first present one wins. */
#ifndef MOEQ_FAMILY_H
#define MOEQ_FAMILY_H

#include <stddef.h>
#include <stdint.h>
#include "moeq_model.h"

#define MOEQ_FAMILY_ALT 4   /* alternatives per name, NULL-terminated (so at most 3 used) */

typedef enum moeq_renorm_rule {
    MOEQ_RENORM_ALWAYS = 0,   /* mixtral: top-k weights always divided by their sum */
    MOEQ_RENORM_KEY = 1       /* norm_topk_prob key, family default when absent */
} moeq_renorm_rule;

typedef enum moeq_sparse_rule {
    MOEQ_SPARSE_ALL = 0,      /* every layer is MoE (mixtral, olmoe) */
    MOEQ_SPARSE_QWEN = 1,     /* decoder_sparse_step + mlp_only_layers decide (qwen2/3_moe) */
    MOEQ_SPARSE_FIRST_K = 2,  /* layers from first_k_dense_replace on are MoE (deepseek) */
    MOEQ_SPARSE_ERNIE = 3     /* (l+1) % moe_layer_interval == 0, start <= l <= end index */
} moeq_sparse_rule;

typedef struct moeq_family {
    const char *model_type;

    /* ---- config.json rules (formats/config.c) ---- */
    const char *moe_inter_key;     /* routed expert's intermediate size */
    const char *dense_inter_key;   /* dense MLP intermediate size, NULL when no dense layers */
    const char *shared_inter_key;  /* shared expert intermediate size, NULL when none */
    moeq_renorm_rule renorm;
    int norm_topk_default;         /* when renorm == KEY and the key is absent */
    moeq_sparse_rule sparse;
    moeq_qk_norm qk_norm;
    /* "qkv_bias" (q/k/v biases) or "attention_bias" (q/k/v/o biases: true is unsupported,
     * the view has no o bias); NULL when the family never has biases */
    const char *qkv_bias_key;
    int qkv_bias_default;
    int tie_default;               /* tie_word_embeddings when absent */
    double rope_theta_default;     /* when neither rope_parameters nor rope_theta is given */
    int has_sliding_window;        /* 1 when a non-null sliding_window changes attention */

    /* ---- forward-pass variants (model/fwd.h) ---- */
    moeq_attn_kind attn;
    moeq_router_kind router_kind;
    const char *experts_key;       /* another name of the routed expert count (n_routed_experts) */
    const char *shared_count_key;  /* shared width = this count x moe_inter (n_shared_experts) */
    int shared_count_default;
    int64_t first_k_dense_default; /* MOEQ_SPARSE_FIRST_K: first_k_dense_replace when absent */
    double routed_scaling_default; /* routed_scaling_factor when absent; 0: the family has none */
    int64_t n_group_default, topk_group_default;
    const char *rope_interleave_key;   /* NULL: rope_interleave_default always */
    int rope_interleave_default;
    int yarn_mscale_scale;         /* softmax scale x get_mscale(factor, mscale_all_dim)^2 */
    const char *qk_norm_key;       /* bool key turning qk_norm on (use_qk_norm); NULL: always */
    int attention_bias_qkv_only;   /* attention_bias gives q/k/v biases only (o_proj has none) */
    int partial_rotary;            /* partial_rotary_factor rotates only the first channels */
    const char *topk_key;          /* top-k key when not num_experts_per_tok (moe_k) */
    const char *refuse_true_key;   /* a bool key whose true value is unsupported (use_bias) */
    moeq_norm_kind norm;
    int attention_bias_o;          /* attention_bias gives o_proj a bias too, which is supported */
    const char *lm_head_bias_key;  /* bool key: lm_head has a bias */
    /* gpt_oss: layer_types may name "sliding_attention" layers (window sliding_window; default
     * layer_types: even layers sliding), attention sinks, the clamped SwiGLU, its expert layout */
    int sliding_layers;
    int attn_sinks;
    moeq_act_kind act;
    moeq_expert_layout expert_layout;

    /* ---- tensor names (model/view.c) ---- */
    const char *embed, *lm_head, *final_norm;
    const char *attn_norm, *mlp_norm;                 /* per layer */
    const char *q, *k, *v, *o;                        /* per layer, weights */
    const char *q_bias, *k_bias, *v_bias;             /* per layer, used when qkv_bias */
    const char *q_norm, *k_norm;                      /* per layer, used when qk_norm != NONE */
    const char *router[MOEQ_FAMILY_ALT];              /* per layer */
    /* per-expert layout: [proj GATE/UP/DOWN][alternative], per layer and expert */
    const char *expert[3][MOEQ_FAMILY_ALT];
    /* transformers v5 fused layout: gate_up [E, 2I, H], down [E, H, I], per layer */
    const char *fused_gate_up[MOEQ_FAMILY_ALT];
    const char *fused_down[MOEQ_FAMILY_ALT];
    const char *shared[3];                            /* gate, up, down; NULL when none */
    const char *shared_expert_gate;                   /* [1, H]; NULL when none */
    const char *dense[3];                             /* gate, up, down of dense layers */
    /* MLA (attn == MOEQ_ATTN_MLA), per layer; q is q_proj when q_lora_rank is null */
    const char *q_a, *q_a_norm, *q_b, *kv_a, *kv_a_norm, *kv_b;
    const char *router_bias[MOEQ_FAMILY_ALT];         /* per layer, [E] (or [1, E]); none: NULL */
    int router_bias_rows;                             /* 1: stored as [1, E] (ERNIE) */
    const char *o_bias, *attn_norm_bias, *mlp_norm_bias, *final_norm_bias, *lm_head_bias;
    const char *sinks;                                /* per layer, [heads] */
    const char *router_lin_bias;                      /* per layer, [E]: added to the logits */
    /* MOEQ_EXPERTS_GPTOSS, per layer: [E, 2I] (interleaved like the columns) and [E, H]; an
     * MXFP4 source stores fused_gate_up / fused_down as NAME_blocks and NAME_scales */
    const char *fused_gate_up_bias, *fused_down_bias;
} moeq_family;

/* The table entry for model_type, NULL when unsupported. */
const moeq_family *moeq_family_find(const char *model_type);
size_t moeq_family_count(void);
const moeq_family *moeq_family_at(size_t i);
/* Writes "mixtral, qwen2_moe, ..." (for error messages) into buf. */
void moeq_family_list(char *buf, size_t cap);

/* Formats a tensor name from a pattern. Returns 0 on success, -1 when pattern is NULL or the
 * name does not fit in cap bytes. */
int moeq_family_name(char *buf, size_t cap, const char *pattern, int64_t layer, int64_t expert);

#endif
