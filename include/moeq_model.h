/* The model: config.json of a supported family, a view over the checkpoint's matrices
 * (no copies), and the float32 forward pass with observation hooks. */
#ifndef MOEQ_MODEL_H
#define MOEQ_MODEL_H

#include <stdint.h>
#include "moeq_status.h"
#include "moeq_safetensors.h"

typedef enum moeq_qk_norm {
    MOEQ_QK_NORM_NONE = 0,
    MOEQ_QK_NORM_HEAD = 1,   /* RMSNorm of size head_dim applied to each head (Qwen3) */
    MOEQ_QK_NORM_FULL = 2    /* RMSNorm over the whole q / k projection output (OLMoE) */
} moeq_qk_norm;

#define MOEQ_MAX_LAYERS 1024

/* Forward-pass variants (model/fwd.h), chosen by the family table and config.json. */
typedef enum moeq_attn_kind {
    MOEQ_ATTN_GQA = 0,      /* grouped-query attention, q/k/v/o projections */
    MOEQ_ATTN_MLA = 1       /* DeepSeek multi-head latent attention (q/kv LoRA, decoupled rope) */
} moeq_attn_kind;

typedef enum moeq_router_kind {
    MOEQ_ROUTER_SOFTMAX = 0,        /* softmax over experts, top-k, optional renorm */
    MOEQ_ROUTER_SIGMOID_GROUP = 1,  /* DeepSeek-V3: sigmoid, +bias for choice, group-limited */
    MOEQ_ROUTER_SOFTMAX_GROUP = 2,  /* DeepSeek-V2: softmax, greedy or group-limited greedy */
    MOEQ_ROUTER_SOFTMAX_BIAS = 3,   /* ERNIE-4.5: softmax, +bias for choice, renorm with a floor */
    MOEQ_ROUTER_SPARSEMIXER = 4,    /* Phi-3.5-MoE: sparsemixer top-2 (eval mode) */
    MOEQ_ROUTER_TOPK_SOFTMAX = 5    /* GPT-OSS: top-k logits, softmax over the k chosen */
} moeq_router_kind;

/* Routed expert activation (model/fwd.h). */
typedef enum moeq_act_kind {
    MOEQ_ACT_SWIGLU = 0,          /* down(silu(gate) * up) */
    MOEQ_ACT_SWIGLU_CLAMP = 1     /* GPT-OSS: gate <= limit, |up| <= limit, (up + 1) * gate * sigmoid(alpha gate) */
} moeq_act_kind;

/* How routed experts are stored (model/view.c). */
typedef enum moeq_expert_layout {
    MOEQ_EXPERTS_HF = 0,          /* per-expert [out, in] tensors, or v5 fused [E, 2I, H] / [E, H, I] */
    MOEQ_EXPERTS_GPTOSS = 1       /* gate_up_proj [E, H, 2I] (x @ W, gate = even columns, up = odd),
                                   * down_proj [E, I, H], with biases; or MXFP4 *_blocks / *_scales */
} moeq_expert_layout;

#define MOEQ_GROUP_ROUTER_MAX_EXPERTS 4096   /* sigmoid/softmax group routers (CF-5) */

typedef enum moeq_rope_kind {
    MOEQ_ROPE_DEFAULT = 0,
    MOEQ_ROPE_YARN = 1,
    MOEQ_ROPE_LONGROPE = 2       /* Phi-3.5: per-frequency short / long factors and mscales */
} moeq_rope_kind;

#define MOEQ_ROPE_MAX_FACTORS 512   /* longrope factor lists: rope_dim / 2 entries */

typedef enum moeq_norm_kind {
    MOEQ_NORM_RMS = 0,
    MOEQ_NORM_LAYER = 1          /* LayerNorm with weight and bias (phimoe) */
} moeq_norm_kind;

typedef struct moeq_config {
    char model_type[32];
    const struct moeq_family *family;
    int64_t vocab, hidden, layers, heads, kv_heads, head_dim;
    int64_t dense_inter;         /* intermediate size of dense (non-MoE) MLP layers */
    int64_t moe_inter;           /* intermediate size of one routed expert */
    int64_t shared_inter;        /* shared expert's intermediate size, 0 when none */
    int64_t n_experts, top_k;
    int norm_topk_prob;          /* renormalize the top-k routing weights */
    int qkv_bias;
    moeq_qk_norm qk_norm;
    int tie_embeddings;
    double rope_theta, rms_eps;
    int64_t max_positions;
    uint8_t layer_is_moe[MOEQ_MAX_LAYERS];

    /* ---- variants (formats/config.c; docs/FAMILIES.md) ---- */
    moeq_attn_kind attn;
    moeq_router_kind router;
    moeq_rope_kind rope_type;
    int64_t rope_dim;            /* channels of a head that RoPE rotates (even) */
    int rope_interleave;         /* 1: pairs (2i, 2i+1); 0: pairs (i, i + rope_dim/2) */
    double rope_factor, rope_orig_max, rope_beta_fast, rope_beta_slow;   /* YaRN */
    int rope_truncate;           /* YaRN: round the correction range to integers */
    double rope_attn_factor;     /* cos/sin multiplier (YaRN attention_factor), 1 otherwise */
    double attn_scale;           /* softmax scale of q·k */
    int64_t v_head_dim;          /* value head size (head_dim except MLA) */
    /* MLA: head_dim = qk_nope_dim + qk_rope_dim; q_lora_rank 0 means a plain q_proj */
    int64_t q_lora_rank, kv_lora_rank, qk_nope_dim, qk_rope_dim;
    int64_t n_group, topk_group; /* group-limited routing (1 group: none) */
    int group_limited;           /* DeepSeek-V2 topk_method "group_limited_greedy" */
    /* quantization_config (CF-11): fp8 block scales of F8_E4M3 weights, 0 when none */
    int fp8;
    int64_t fp8_block_rows, fp8_block_cols;
    double routed_scaling;       /* routing weights x this (1 unless the family has it) */
    double renorm_min;           /* ERNIE: renormalization divides by max(sum, this) */
    double jitter_eps;           /* sparsemixer: router_jitter_noise */
    moeq_norm_kind norm;
    int o_bias, lm_head_bias;    /* o_proj / lm_head biases (phimoe) */
    /* longrope: inverse frequencies 1 / (factor_i * theta^(2i/d)) with the short factors while
     * the window fits rope_orig_max, else long; cos/sin x the matching mscale */
    float rope_short[MOEQ_ROPE_MAX_FACTORS], rope_long[MOEQ_ROPE_MAX_FACTORS];
    double rope_short_mscale, rope_long_mscale;
    /* sliding-window layers (layer_types, gpt_oss): a query of such a layer sees the keys
     * j > i - sliding_window (itself included) */
    int64_t sliding_window;
    uint8_t layer_sliding[MOEQ_MAX_LAYERS];
    int attn_sinks;              /* per-head learned sink logit in the softmax denominator */
    moeq_act_kind act;
    double act_alpha, act_limit; /* MOEQ_ACT_SWIGLU_CLAMP */
    moeq_expert_layout expert_layout;
    int expert_bias;             /* routed experts' linears have biases (gpt_oss) */
    int mxfp4;                   /* quantization_config mxfp4: experts as *_blocks / *_scales */
} moeq_config;

/* Parses config.json text. path names the file in errors. */
moeq_status moeq_config_parse(const char *json, size_t len, const char *path,
                              moeq_config *cfg, moeq_error *err);

/* Which matrix of a layer. Routed-expert projections first. */
typedef enum moeq_proj {
    MOEQ_PROJ_GATE = 0, MOEQ_PROJ_UP, MOEQ_PROJ_DOWN,
    MOEQ_PROJ_Q, MOEQ_PROJ_K, MOEQ_PROJ_V, MOEQ_PROJ_O,
    MOEQ_PROJ_SHARED_GATE, MOEQ_PROJ_SHARED_UP, MOEQ_PROJ_SHARED_DOWN,
    MOEQ_PROJ_ROUTER,
    MOEQ_PROJ_SHARED_EXPERT_GATE,  /* qwen2_moe's sigmoid gate [1, hidden] */
    MOEQ_PROJ_DENSE_GATE, MOEQ_PROJ_DENSE_UP, MOEQ_PROJ_DENSE_DOWN,
    /* MLA: q_a and kv_a read the attention input (hooked as Q); q_b and kv_b read the
     * normed latents */
    MOEQ_PROJ_Q_A, MOEQ_PROJ_Q_B, MOEQ_PROJ_KV_A, MOEQ_PROJ_KV_B,
    MOEQ_PROJ_COUNT
} moeq_proj;

const char *moeq_proj_name(moeq_proj p);   /* "gate", "up", "down", "q", ... */

/* A 2-D row-major view [rows, cols] = [out_features, in_features] into the mapping. */
typedef struct moeq_mat {
    const char *tensor;      /* checkpoint tensor name */
    int64_t index;           /* expert index inside a fused tensor, -1 otherwise */
    moeq_dtype dtype;        /* F32, F16 or BF16 */
    int64_t rows, cols;
    const void *data;        /* first element of the view */
    /* packed int codec (docs/FORMAT.md): the kernels' view, dtype is MOEQ_DT_OTHER; NULL for
     * plain F32/F16/BF16 views. moeq_mat_to_f32 dequantizes these through the kernels. */
    const struct moeq_qmat *q;
    /* F8_E4M3 views (block-scaled sources): value = fp8 x scale[r / block_rows][c / block_cols],
     * the scale grid [ceil(rows / block_rows), scale_cols] in scale_dtype (F32 or BF16), from
     * the weight's `weight_scale_inv` tensor. NULL otherwise. */
    const void *scale;
    moeq_dtype scale_dtype;
    int64_t scale_cols, block_rows, block_cols;
    const char *scale_tensor;
    /* a GGUF weight of a ggml block type (moeq_gguf.h): its type id and row stride in bytes,
     * dtype MOEQ_DT_OTHER; 0 for every other view (F32 is never a block type) */
    int gtype;
    uint64_t grow;
    /* Strided views (gpt_oss's transposed, interleaved experts): element (r, c) is element
     * r * rstep + c * cstep of data; 0, 0 for the row-major views. MXFP4 views (mx_scales set,
     * dtype U8): row r's blocks start r * rstep block rows (cols / 2 bytes each) after data,
     * its e8m0 scales r * rstep * (cols / 32) bytes after mx_scales; value of (r, c) =
     * e2m1(nibble c: low first) x 2^(scale[c / 32] - 127). moeq_mat_to_f32 reads all of them;
     * moeq_mat_widens says when a view must be widened before the kernels take it. */
    int64_t rstep, cstep;
    const uint8_t *mx_scales;
    const char *mx_scale_tensor;
} moeq_mat;

typedef struct moeq_vec {    /* a 1-D weight: norms, biases */
    const char *tensor;
    moeq_dtype dtype;
    int64_t n;
    const void *data;
} moeq_vec;

typedef struct moeq_layer_view {
    moeq_vec attn_norm, mlp_norm;
    moeq_mat q, k, v, o;
    moeq_vec q_bias, k_bias, v_bias;      /* data NULL when absent */
    moeq_vec q_norm, k_norm;              /* data NULL when absent */
    int is_moe;
    moeq_mat router;                      /* [n_experts, hidden] */
    moeq_mat dense_gate, dense_up, dense_down;
    moeq_mat shared_gate, shared_up, shared_down;   /* data NULL when no shared expert */
    moeq_mat shared_expert_gate;          /* [1, hidden], data NULL when absent */
    /* MLA (data NULL otherwise): q = q_proj when q_lora_rank is 0, k and v are empty */
    moeq_mat q_a, q_b, kv_a, kv_b;        /* [q_lora, H], [heads*hd, q_lora], [kv_lora+rope, H], ... */
    moeq_vec q_a_norm, kv_a_norm;
    moeq_vec router_bias;                 /* e_score_correction_bias [E], data NULL when none */
    moeq_vec o_bias, attn_norm_bias, mlp_norm_bias;   /* data NULL when absent */
    moeq_vec sinks;                       /* attention sink logits [heads] (gpt_oss), else NULL */
    moeq_vec router_lin_bias;             /* the router linear's bias, added to its logits (gpt_oss) */
} moeq_layer_view;

typedef struct moeq_model moeq_model;

/* Opens a Hugging Face directory (config.json + safetensors), a packed .moeq file (config
 * embedded, docs/FORMAT.md), or a GGUF file (docs/FORMAT-gguf.md: config from its metadata): checks every tensor the family needs for presence, shape and
 * dtype (BF16/F16/F32, or an int codec in a .moeq). */
moeq_status moeq_model_open(const char *path, moeq_model **out, moeq_error *err);
void moeq_model_close(moeq_model *m);
const moeq_config *moeq_model_config(const moeq_model *m);
const moeq_checkpoint *moeq_model_checkpoint(const moeq_model *m);   /* NULL for a .moeq file */
struct moeq_pack;
const struct moeq_pack *moeq_model_pack(const moeq_model *m);         /* NULL unless a .moeq file */
struct moeq_gguf;
const struct moeq_gguf *moeq_model_gguf(const moeq_model *m);         /* NULL unless a GGUF file */
const char *moeq_model_path(const moeq_model *m);
int moeq_model_fused_experts(const moeq_model *m);   /* 1 when stored as v5 fused tensors */
/* A pruned model's expert widths from config.json "moeq_expert_widths" ([layer * n_experts + e];
 * 0: the expert is gone and masked out of the router), or NULL (docs/prune.md). Expert views of
 * a pruned model have rows = the stored width (ragged) or moe_inter (zero-filled); a width-0
 * expert may have no tensors (its views are empty: tensor and data NULL, rows 0). */
const int32_t *moeq_model_expert_widths(const moeq_model *m);
const moeq_layer_view *moeq_model_layer(const moeq_model *m, int64_t layer);
/* Routed expert e's gate, up or down of a MoE layer. */
moeq_status moeq_model_expert(const moeq_model *m, int64_t layer, int64_t expert, moeq_proj proj,
                              moeq_mat *out, moeq_error *err);
/* Routed expert e's bias of gate, up or down ([rows] of its view) as float32 into dst: 1 when
 * the family's experts have biases (gpt_oss), 0 (dst untouched) otherwise. Arguments as
 * moeq_model_expert, unchecked beyond that (-1 when invalid). */
int moeq_model_expert_bias(const moeq_model *m, int64_t layer, int64_t expert, moeq_proj proj, float *dst);
/* Overrides (sequential GPTQ): from now on the view of a matrix is float32 `data` (same shape,
 * owned by the caller and kept alive until cleared; NULL restores the original). expert >= 0:
 * routed expert's GATE/UP/DOWN as moeq_model_expert returns it; expert -1: a layer matrix
 * (Q, K, V, O, SHARED_*, DENSE_*) as moeq_model_layer returns it. Not thread-safe: set them
 * between forward passes. */
moeq_status moeq_model_set_override(moeq_model *m, int64_t layer, int64_t expert, moeq_proj proj,
                                    const float *data, moeq_error *err);
/* The same for the embedding (which 0: [vocab, hidden]) and the LM head (which 1); a tied head
 * is overridden apart from the embedding (a GGUF holds both). */
moeq_status moeq_model_set_head_override(moeq_model *m, int which, const float *data, moeq_error *err);
void moeq_model_clear_overrides(moeq_model *m);   /* every override, back to the checkpoint */
/* The view of a whole 2-D checkpoint tensor with its FP8 block scales attached when it is an
 * F8_E4M3 weight (moeq_mat_to_f32 then dequantizes it), for stages that walk the tensors. */
moeq_mat moeq_model_tensor_view(const moeq_model *m, const moeq_tensor *t);
/* 1 when t is the weight_scale_inv of an F8_E4M3 weight of an fp8 source (consumed by the
 * weight's view, never written on its own). */
int moeq_model_is_fp8_scale(const moeq_model *m, const moeq_tensor *t);
/* MXFP4 sources (gpt_oss): 1 when t is a U8 NAME_scales tensor, consumed by its NAME_blocks'
 * views; moeq_model_mx_blocks: 1 when t is a NAME_blocks tensor, with NAME in base (cap bytes)
 * and the shape of the bf16 tensor it encodes ([E, in, out], as gpt_oss's bf16 checkpoints). */
int moeq_model_is_mx_scale(const moeq_model *m, const moeq_tensor *t);
int moeq_model_mx_blocks(const moeq_model *m, const moeq_tensor *t, char *base, size_t cap, int64_t shape[3]);
const moeq_mat *moeq_model_embed(const moeq_model *m);     /* [vocab, hidden] */
const moeq_mat *moeq_model_lm_head(const moeq_model *m);   /* == embed when tied */
const moeq_vec *moeq_model_final_norm(const moeq_model *m);
const moeq_vec *moeq_model_final_norm_bias(const moeq_model *m);   /* data NULL unless LayerNorm */
const moeq_vec *moeq_model_lm_head_bias(const moeq_model *m);      /* data NULL when none */

typedef struct moeq_param_counts {
    int64_t total, attention, router, shared_experts, routed_experts, embeddings, other;
} moeq_param_counts;
void moeq_model_param_counts(const moeq_model *m, moeq_param_counts *out);

/* Widens a row range of a matrix view to float32: dst[r - r0][c] for r in [r0, r1). */
void moeq_mat_to_f32(const moeq_mat *m, int64_t r0, int64_t r1, float *dst);
void moeq_vec_to_f32(const moeq_vec *v, float *dst);
/* 1 when the kernels cannot take the view as stored (FP8 blocks, MXFP4, strided): widen it
 * with moeq_mat_to_f32 first. Packed and GGUF views have their own kernels: 0. */
int moeq_mat_widens(const moeq_mat *m);

/* ---- mapped pages (docs/eval.md, "Memory") ---------------------------------------------
 * Weights are read through read-only mappings; the pages a stage touched count in its RSS until
 * released. These drop a finished part's pages (madvise MADV_DONTNEED: clean, re-read from the
 * page cache or the file on the next touch, so results are unchanged) or ask for readahead
 * (MADV_WILLNEED). Heap views (overrides, decompressed zstd frames) are left alone. Whole pages
 * are dropped, those shared with a neighbouring tensor included. Thread-safe. */
void moeq_mat_release(const moeq_mat *m);
void moeq_vec_release(const moeq_vec *v);
void moeq_mat_prefetch(const moeq_mat *m);
void moeq_mat_release_rows(const moeq_mat *m, int64_t r0, int64_t r1);   /* rows [r0, r1) */
/* Every matrix and vector of the layer, its routed experts included (the checkpoint's bytes,
 * also while an override is installed). layer out of range: nothing. */
void moeq_model_release_layer(const moeq_model *m, int64_t layer);
void moeq_model_prefetch_layer(const moeq_model *m, int64_t layer);
/* Embeddings, final norm and LM head (the non-layer weights). */
void moeq_model_release_head(const moeq_model *m);
/* Every tensor of the model. */
void moeq_model_release_all(const moeq_model *m);
/* Bytes of the model's weights (checkpoint tensor data, or the .moeq file size). */
uint64_t moeq_model_mapped_bytes(const moeq_model *m);

/* Whether the forward pass releases each part (embedding, layer, head) when it moves on to
 * another one, and prefetches the next layer. AUTO (the default): on when the model's mapped
 * bytes exceed an eighth of physical memory, or as the environment variable MOEQ_RELEASE says
 * (0/off: never, 1/on: always). Eval re-reads every layer per window, so for a model that fits
 * in RAM releasing only turns page-table hits into minor faults; for a larger one it bounds RSS
 * to about one layer. Set it before creating a runner. */
typedef enum moeq_release_mode {
    MOEQ_RELEASE_AUTO = 0, MOEQ_RELEASE_OFF = 1, MOEQ_RELEASE_ON = 2
} moeq_release_mode;
void moeq_model_set_release(moeq_model *m, moeq_release_mode mode);
int moeq_model_releases(const moeq_model *m);   /* 1 when the forward pass releases */

/* ---- forward pass ---------------------------------------------------------------------- */

/* Observation hooks; a NULL function pointer costs nothing. Pointers passed to a hook are
 * valid only during the call. x is row-major [n, dim]; token_index[i] is the position in the
 * window of row i (NULL means rows are positions 0..n-1). */
typedef struct moeq_hooks {
    void *user;
    /* input of a linear: proj GATE (shared by gate and up) or DOWN of routed expert `expert`,
     * SHARED_GATE / SHARED_DOWN of the shared expert, Q (shared by q/k/v) and O with expert -1.
     * weights: routing weight of each row for routed experts, else NULL. */
    void (*linear_input)(void *user, int64_t layer, int64_t expert, moeq_proj proj,
                         const float *x, int64_t n, int64_t dim, const int32_t *token_index,
                         const float *weights);
    /* router logits [n, n_experts] of a MoE layer (before softmax). */
    void (*router_logits)(void *user, int64_t layer, const float *logits, int64_t n,
                          int64_t n_experts);
} moeq_hooks;

typedef struct moeq_runner moeq_runner;

/* A reusable workspace for windows of up to max_tokens tokens. threads <= 0 means all cores. */
moeq_status moeq_runner_create(const moeq_model *m, int64_t max_tokens, int threads,
                               moeq_runner **out, moeq_error *err);
void moeq_runner_free(moeq_runner *r);
/* Runs tokens[0..n) as one causal window; logits is [n, vocab] float32. */
moeq_status moeq_forward(moeq_runner *r, const int32_t *tokens, int64_t n, float *logits,
                         const moeq_hooks *hooks, moeq_error *err);

/* Several short sequences in one pass (task scoring: one context, several continuations, and
 * several tasks per pass). Token i has RoPE position pos[i] (0 <= pos[i] <= i) and segment
 * seg[i]; it attends to the tokens j <= i with seg[j] == seg[i] or seg[j] == see[i] (the
 * segment of its shared context; -1: none). Logits are computed for rows[0..nrows) only:
 * logits is [nrows, vocab]. One segment with pos[i] == i is moeq_forward (up to the rounding
 * of the LM head's row blocks). */
typedef struct moeq_packing {
    const int32_t *pos, *seg, *see;
    const int32_t *rows;
    int64_t nrows;
    /* optional (NULL: one block): starts of independent blocks (units[0] == 0, ascending);
     * segment ids grow from block to block (checked), and attention runs per block */
    const int32_t *units;
    int64_t nunits;
} moeq_packing;
moeq_status moeq_forward_packed(moeq_runner *r, const int32_t *tokens, int64_t n,
                                const moeq_packing *pk, float *logits, moeq_error *err);

/* The same pass in steps, for layer-wise drivers (calibration keeps the hidden states of all
 * windows for one layer at a time; sequential GPTQ feeds a quantized layer's output to the
 * next). x is the residual stream [n, hidden] of one window (positions 0..n-1).
 * moeq_forward == embed, every layer in order, head: bit for bit. */
moeq_status moeq_forward_embed(moeq_runner *r, const int32_t *tokens, int64_t n, float *x,
                               moeq_error *err);
moeq_status moeq_forward_layer(moeq_runner *r, int64_t layer, float *x, int64_t n,
                               const moeq_hooks *hooks, moeq_error *err);
moeq_status moeq_forward_head(moeq_runner *r, const float *x, int64_t n, float *logits,
                              moeq_error *err);

/* Floating-point operations of one forward window of n tokens, as computed: every matrix
 * product (attention scores over the full n x n square), top-k routed experts, LM head. */
double moeq_forward_flops(const moeq_config *c, int64_t n);
/* Bytes of heap the runner holds (its workspace); the formula is in docs/eval.md. */
uint64_t moeq_runner_bytes(const moeq_runner *r);

#endif
