/* Internal interface of the forward pass: the runner's workspace and the helpers that the
 * per-family variants share. forward.c drives a layer; the variants are one file each:
 *   attention  attn_gqa.c (grouped-query, RoPE on whole heads; sinks and sliding windows),
 *              attn_mla.c (DeepSeek MLA)
 *   positions  rope.c (default, YaRN; rotate-half or interleaved pairs, partial rotary)
 *   routers    router_softmax.c (softmax top-k), router_sigmoid_group.c (DeepSeek-V3 sigmoid,
 *              group-limited, bias for choice), router_softmax_group.c (DeepSeek-V2 greedy),
 *              router_softmax_bias.c (ERNIE-4.5: softmax, bias for choice, floored renorm),
 *              router_sparsemixer.c (Phi-3.5-MoE), router_topk_softmax.c (GPT-OSS)
 *   activations SwiGLU (forward.c), act_swiglu_clamp.c (GPT-OSS, with the experts' biases)
 * The family table (formats/family.c) picks them through moeq_config's attn / router fields;
 * docs/FAMILIES.md lists which family uses what. Not installed: include only from model/. */
#ifndef MOEQ_MODEL_FWD_H
#define MOEQ_MODEL_FWD_H

#include "moeq_model.h"
#include "moeq_core.h"
#include "moeq_kernels.h"

#include <stdint.h>

#define LM_HEAD_CHUNK 512   /* vocabulary rows per task of the LM head */

/* Element-wise loops smaller than this run on one thread: waking the team costs more than the
 * work, and much more when other processes share the cores. */
#define PAR_MIN_ELEMS ((int64_t)1 << 17)

typedef struct thread_scratch {
    float *xe, *ge, *ue, *ye; /* gathered inputs [n, H], gate/up [n, I], output [n, H] */
    float *we;               /* routing weight of each gathered row [n] */
    float *scores;           /* attention scores of one query block [ATT_QBLOCK, n], or the fused
                              * kernel's scratch (moeq_kernel_set.attend) */
    uint8_t *amask;          /* the fused kernel's visibility bytes [n][ATT_QBLOCK] (packed passes, windows) */
    float *lm;               /* LM head rows [LM_HEAD_CHUNK, H] */
    float *f8;               /* one expert matrix widened [I, H] (FP8, MXFP4, strided), else NULL */
    float *eb;               /* one expert's gate, up, down biases [2I + H] (gpt_oss), else NULL */
    void *wx;                /* an expert's prepared activations (kernel sets with wx_prep), else NULL */
} thread_scratch;

struct moeq_runner {
    uint64_t bytes;        /* heap held by the workspace */
    int alloc_failed;
    const moeq_model *m;
    const moeq_config *c;
    int64_t max_n;
    int nthreads;
    int64_t q_dim, kv_dim, v_dim, att_dim, expert_inter_max, mlp_inter_max;
    float *x, *h, *q, *k, *v, *att, *mlp_out;      /* activations */
    float *ffn_g, *ffn_u;                          /* dense/shared MLP [n, inter] */
    float *gate_scalar;                            /* shared expert sigmoid gate [n] */
    float *router_logits;                          /* [n, E] */
    int32_t *topk_idx;                             /* [n, K] */
    float *topk_w;                                 /* [n, K] */
    float *slot_out;                               /* [n, K, H] weighted expert outputs */
    int64_t *e_count;                              /* [E] */
    int32_t *e_order;                              /* [E] experts by token count, most first */
    int32_t *e_rows, *e_slot;                      /* [E, n] token and slot of each row */
    float *rope_cos, *rope_sin;                    /* [n, rope_dim / 2] */
    float *kc, *vt;                                /* per kv head: keys [n, dqk], values [n, dv] (fused
                                                    * attention) or transposed [dv, n] */
    float *w_sg;                                   /* shared expert gate row, widened [H] */
    float *vbuf;                                   /* small vectors: norms and biases */
    float *rbias;                                  /* router correction bias [E] */
    float *lm_bias;                                /* lm_head bias [vocab], NULL when none */
    /* MLA (attn_mla.c): latents [n, q_lora] and [n, kv_lora + rope], the expanded k_nope|v
     * rows [n, heads * (nope + v)] */
    float *lat_q, *lat_kv, *kvb;
    float *f8buf;                                  /* one FP8 layer matrix widened (fp8 sources) */
    void *wx;                                      /* prepared activations of a matmul (wx_prep), else NULL */
    size_t wx_stride;                              /* bytes per block of WTOK_BLOCK tokens in wx */
    thread_scratch *ts;
    int release;           /* moeq_model_releases: drop a part's mapped pages when moving on */
    int64_t resident;      /* the part whose pages were touched last: a layer, PART_* */
    const moeq_packing *pk; /* moeq_forward_packed's positions and segments; NULL: one window */
    /* set by an attention variant around fwd_attend (attn_gqa.c, gpt_oss): per-head sink logits
     * [heads] (NULL: none) and the sliding window (0: full causal) */
    const float *att_sinks;
    int64_t att_window;
    float *sinkbuf;                                /* [heads] */
};

void *fwd_alloc(moeq_runner *r, size_t n, size_t size);

/* Y[n, W->rows] = X[n, W->cols] · Wᵀ through the kernels (packed, or float weights as stored;
 * FP8 widened first), in fixed blocks (results ignore the thread count). */
void fwd_linear(moeq_runner *r, const moeq_mat *W, const float *X, int64_t n, float *Y);
/* fwd_linear of three matrices over the same X (attention's q, k, v): plain float weights of
 * one K and type share one preparation of X and one parallel region; the same bits. */
void fwd_linear3(moeq_runner *r, const moeq_mat *A, const moeq_mat *B, const moeq_mat *C, const float *X, int64_t n,
                 float *YA, float *YB, float *YC);
/* y[i] = w ⊙ x[i] / rms(x[i]) over dim values of each of n rows spaced stride apart. */
void fwd_rmsnorm_rows(const float *x, float *y, int64_t n, int64_t dim, int64_t stride, const float *w,
                      double eps);
void fwd_add_bias(float *x, int64_t n, int64_t dim, const float *b);
/* Causal softmax attention of every head: S = Q_h K_gᵀ · scale, softmax, O_h = S V_g with
 * g = h / (heads / kv_heads). Row p of head h of q starts at q + p * qs + h * qh (dqk values),
 * likewise k (kv head g, dqk values) and v (dv values); out rows hold heads × dv (stride os). */
void fwd_attend(moeq_runner *r, int64_t n, int64_t heads, int64_t kv_heads, int64_t dqk, int64_t dv,
                const float *q, int64_t qs, int64_t qh, const float *k, int64_t ks, int64_t kh,
                const float *v, int64_t vs, int64_t vh, float scale, float *out, int64_t os);

/* ---- positions (rope.c) ---- */
/* cos/sin tables [n, rope_dim / 2] for positions 0..n-1, as transformers computes them
 * (attention_factor folded in). */
moeq_status fwd_rope_tables(const moeq_config *c, int64_t n, float *cos_t, float *sin_t, moeq_error *err);
/* Rotates the first rope_dim channels of `heads` heads of n rows: head h of row p starts at
 * x + p * row_stride + h * head_stride. Pairs (i, i + d/2) or, interleaved, (2i, 2i + 1). */
void fwd_rope_apply(const moeq_runner *r, float *x, int64_t n, int64_t heads, int64_t row_stride,
                    int64_t head_stride);

/* ---- attention variants ---- */
void fwd_attn_gqa(moeq_runner *r, int64_t layer, int64_t n, const moeq_hooks *hooks);
void fwd_attn_mla(moeq_runner *r, int64_t layer, int64_t n, const moeq_hooks *hooks);

/* ---- routers: one token's logits [E] → expert indices and weights [K] ----
 * live: a pruned model's mask (NULL: all live); bias: correction bias [E] or NULL. */
typedef void (*fwd_router_fn)(const moeq_config *c, const float *logits, const float *bias,
                              const int32_t *live, int32_t *idx, float *w);
/* idx[0..K) = the K largest score[e] among experts with ok[e] != 0, descending (ties: lower
 * index first); when fewer than K are ok, the rest follow from the others (as torch.topk
 * over -inf-masked scores would pick them). */
static inline void fwd_topk(const float *score, const uint8_t *ok, int64_t E, int64_t K, int32_t *idx)
{
    for (int64_t s = 0; s < K; s++) {
        int64_t best = -1;
        int best_ok = 0;
        for (int64_t e = 0; e < E; e++) {
            int taken = 0;
            for (int64_t t = 0; t < s; t++) taken |= idx[t] == e;
            if (taken) continue;
            int eok = ok[e] != 0;
            if (best < 0 || eok > best_ok || (eok == best_ok && score[e] > score[best])) {
                best = e;
                best_ok = eok;
            }
        }
        idx[s] = (int32_t)best;
    }
}
/* group-limited routers keep per-token scratch on the stack: config.c refuses more experts */
#define FWD_GROUP_MAX_E MOEQ_GROUP_ROUTER_MAX_EXPERTS

void fwd_route_softmax(const moeq_config *c, const float *logits, const float *bias, const int32_t *live,
                       int32_t *idx, float *w);
void fwd_route_sigmoid_group(const moeq_config *c, const float *logits, const float *bias,
                             const int32_t *live, int32_t *idx, float *w);
void fwd_route_softmax_group(const moeq_config *c, const float *logits, const float *bias,
                             const int32_t *live, int32_t *idx, float *w);
void fwd_route_softmax_bias(const moeq_config *c, const float *logits, const float *bias,
                            const int32_t *live, int32_t *idx, float *w);
void fwd_route_topk_softmax(const moeq_config *c, const float *logits, const float *bias, const int32_t *live,
                            int32_t *idx, float *w);
void fwd_route_sparsemixer(const moeq_config *c, const float *logits, const float *bias,
                           const int32_t *live, int32_t *idx, float *w);

/* ---- expert activations: g[i] = act(g[i], u[i]) over count values ---- */
void fwd_act_swiglu_clamp(const moeq_config *c, float *g, const float *u, int64_t count);

#endif
