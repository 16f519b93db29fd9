/* Calibration: run the model on calibration tokens layer by layer and collect, per MoE layer
 * and routed expert, the float64 statistics GPTQ, Hessian bit allocation, CAMERA and HEAPr
 * need (input Hessians, routing counts and weights, micro-expert energies, router logits),
 * then write them to an HDF5 file (layout: docs/STATS.md, "calibration files").
 *
 * Three layers of API:
 *  - moeq_layerwise_run: the layer-by-layer driver. It keeps the residual stream of every
 *    calibration window for the current layer, runs that layer on every window (with the
 *    caller's hooks), then calls the caller back; the callback may change the layer's weights
 *    and ask for the layer to be re-run on its inputs, which is what sequential GPTQ needs
 *    (statistics from layer L's inputs, quantize L, feed quantized L's outputs to L + 1).
 *  - moeq_calib_collector: the accumulator of one layer, fed by moeq_hooks (usable with the
 *    driver or with a whole-model moeq_forward).
 *  - moeq_calibrate: driver + collector + HDF5 writer, what `moeq calibrate` runs. */
#ifndef MOEQ_CALIB_H
#define MOEQ_CALIB_H

#include <stdint.h>
#include "moeq_model.h"

/* ---- layer-wise driver ------------------------------------------------------------------ */

typedef struct moeq_layerwise {
    int64_t ctx;          /* window length */
    int64_t windows;      /* tokens[w*ctx, (w+1)*ctx) for w < windows */
    int threads;          /* runner threads (<= 0: all cores) */
    int keep_inputs;      /* keep a copy of each layer's inputs so layer_done may ask for a re-run */
    void *user;
    /* hooks for layer `layer`'s pass over the windows; NULL (or a NULL function) for none */
    const moeq_hooks *(*layer_hooks)(void *user, int64_t layer);
    /* after window `window` of `layer` ran with the hooks; may be NULL */
    moeq_status (*window_done)(void *user, int64_t layer, int64_t window, moeq_error *err);
    /* after every window of `layer` ran. Setting *rerun = 1 (needs keep_inputs) runs the layer
     * again, without hooks, on its saved inputs: the weights the model view exposes then are
     * what the next layer sees. May be NULL. */
    moeq_status (*layer_done)(void *user, int64_t layer, int *rerun, moeq_error *err);
    /* MPI (docs/scale.md): window w runs on rank moeq_dist_owner(w), which alone holds its
     * residual stream. Rank 0 takes every window in order: its own through window_done, the
     * others' received into collector (moeq_calib_collector_recv) then window_done; an owner
     * other than 0 sends the collector's stash instead (moeq_calib_collector_send). Windows of a
     * layer without hooks are not sent. layer_done runs on every rank and must set the same
     * *rerun on all. collector is needed with more than one rank. */
    struct moeq_calib_collector *collector;
    /* Resume: with resume_dir, the stream after each layer is saved there (every rank writes
     * its windows), then layer_saved runs on every rank (rank 0 records the layer as done).
     * first_layer > 0 starts at that layer from the stream saved after first_layer - 1. */
    const char *resume_dir;
    int64_t first_layer;
    moeq_status (*layer_saved)(void *user, int64_t layer, moeq_error *err);
} moeq_layerwise;

/* Resume helpers for drivers that keep one checkpoint unit per layer (include/moeq_resume.h)
 * and write it before the driver saves the layer's stream: the layer to start at (finished
 * units in a row whose stream exists), and the removal of the stream files. */
struct moeq_resume;
int64_t moeq_layerwise_resume_start(const struct moeq_resume *rs, const char *dir, int64_t layers);
void moeq_layerwise_resume_clean(const char *dir, int64_t layers);

/* Runs embed, then every layer on all windows, layer after layer. Holds windows*ctx*hidden
 * floats of residual stream (twice with keep_inputs) plus one runner workspace. */
moeq_status moeq_layerwise_run(const moeq_model *m, const int32_t *tokens,
                               const moeq_layerwise *lw, moeq_error *err);

/* ---- one layer's statistics ------------------------------------------------------------- */

/* Statistics of the input x (dim values per token) of one linear, over the rows it saw. */
typedef struct moeq_calib_acc {
    int64_t dim;          /* 0: not collected */
    int64_t rows;         /* tokens accumulated */
    double *hess;         /* [dim, dim] Σ x xᵀ (lower triangle until moeq_calib_collector_finish
                             mirrors it); NULL in diagonal-only mode */
    double *sum2;         /* [dim] Σ x_j² (the diagonal; llama.cpp imatrix's in_sum2) */
    double *phi2_sum;     /* [dim] Σ (r x_j)², r the token's routing (or shared-gate) weight:
                             CAMERA's L2 term; NULL for inputs that are not down-projection inputs */
    double *phi2_max;     /* [dim] max (r x_j)²: CAMERA's LINF term */
    double weight_sum;    /* Σ r over the rows (routed experts and gated shared experts) */
    /* the collector's own: rows not yet in hess when the kernel set sums by chunks
     * (moeq_kernel_set.hsyrk_sum), packed (MOEQ_HSYRK_HELD(dim) bytes), and how many; NULL
     * otherwise */
    void *held;
    int64_t held_n;
} moeq_calib_acc;

typedef struct moeq_calib_layer {
    int64_t layer;
    int is_moe;
    int64_t tokens;                 /* tokens run through the layer */
    int64_t n_experts;              /* 0 for dense layers */
    int64_t *expert_tokens;         /* [E] n_e: tokens routed to e (top-k hits) */
    double *logit_sum, *logit_m2;   /* [E] router logit mean and Welford M2 (variance = M2/tokens);
                                       logit_sum holds the running mean */
    moeq_calib_acc *expert_in;      /* [E] input of gate and up */
    moeq_calib_acc *expert_down;    /* [E] h = silu(gate x) ⊙ (up x), input of down */
    moeq_calib_acc shared_in, shared_down;   /* shared expert (all tokens); dim 0 when none */
    moeq_calib_acc attn_in, attn_o;          /* scope all: input of q/k/v, input of o */
    moeq_calib_acc dense_in, dense_down;     /* scope all, dense layers: MLP inputs */
    /* scope all, MLA (deepseek): input of q_b (the normed q latent; dim 0 without q LoRA) and of
     * kv_b (the normed kv latent); q_a, kv_a and q_proj read attn_in */
    moeq_calib_acc q_b_in, kv_b_in;
    /* the validation split (moeq_calib_collector_enable_val): the same Σ x xᵀ (and Σ x²) of the
     * routed experts over the validation windows only, which the statistics above include too;
     * NULL without a split */
    moeq_calib_acc *val_in, *val_down;       /* [E] */
    int64_t val_tokens;                      /* tokens of the validation windows */
} moeq_calib_layer;

typedef struct moeq_calib_collector moeq_calib_collector;

/* An accumulator for one layer at a time; windows of up to max_tokens tokens. diag: keep only
 * diagonals. scope_all: also attention (q/k/v and o) and dense-MLP inputs. */
moeq_status moeq_calib_collector_create(const moeq_model *m, int64_t max_tokens, int diag,
                                        int scope_all, int threads, moeq_calib_collector **out,
                                        moeq_error *err);
void moeq_calib_collector_free(moeq_calib_collector *c);
/* Zeroes the statistics and points the collector at `layer`. */
moeq_status moeq_calib_collector_reset(moeq_calib_collector *c, int64_t layer, moeq_error *err);
/* Hooks that stash the current window's rows of the collector's layer (other layers ignored). */
const moeq_hooks *moeq_calib_collector_hooks(moeq_calib_collector *c);
/* MPI: sends the stashed window to rank dst (and clears it), or receives one from rank src
 * into the stash, ready for moeq_calib_collector_flush. On ranks other than 0 the collector
 * holds no statistics: it stashes, sends, and its flush is refused. */
moeq_status moeq_calib_collector_send(moeq_calib_collector *c, int dst, moeq_error *err);
moeq_status moeq_calib_collector_recv(moeq_calib_collector *c, int src, moeq_error *err);
/* The same, holding statistics on every rank (sequential GPTQ quantizes a layer's experts on
 * all ranks from the statistics rank 0 collected and broadcast). */
moeq_status moeq_calib_collector_create_full(const moeq_model *m, int64_t max_tokens, int diag,
                                             int scope_all, int threads, moeq_calib_collector **out,
                                             moeq_error *err);
/* Collective: root's finished (mirrored) layer statistics copied into every rank's collector. */
moeq_status moeq_calib_collector_bcast(moeq_calib_collector *c, int root, moeq_error *err);
/* Accumulates the stashed window into the statistics (parallel over experts; each expert's
 * rows in token order, so results do not depend on the thread count). */
moeq_status moeq_calib_collector_flush(moeq_calib_collector *c, moeq_error *err);
/* Adds routed-expert validation accumulators (L.val_in, L.val_down) to a collector (not
 * diagonal-only); call before the first reset. */
moeq_status moeq_calib_collector_enable_val(moeq_calib_collector *c, moeq_error *err);
/* moeq_calib_collector_flush; val = 1 also adds the window's expert rows to the validation
 * accumulators (needs enable_val). */
moeq_status moeq_calib_collector_flush_split(moeq_calib_collector *c, int val, moeq_error *err);
/* Mirrors the Hessians' lower triangles into the upper ones; call once after the last flush. */
void moeq_calib_collector_finish(moeq_calib_collector *c);
const moeq_calib_layer *moeq_calib_collector_layer(const moeq_calib_collector *c);
/* Heap bytes the collector holds (formula in docs/STATS.md). */
uint64_t moeq_calib_collector_bytes(const moeq_calib_collector *c);

/* ---- moeq calibrate -------------------------------------------------------------------- */

typedef enum moeq_calib_flag { MOEQ_CALIB_OK = 0, MOEQ_CALIB_UNDERSAMPLED = 1, MOEQ_CALIB_DEAD = 2 } moeq_calib_flag;

typedef struct moeq_calib_opts {
    int64_t ctx;          /* window length (>= 1); default 512 when <= 0 */
    int64_t max_tokens;   /* use at most this many tokens (<= 0: all) */
    int64_t min_tokens;   /* experts with fewer tokens are undersampled; <= 0: 2 * hidden */
    int diag;             /* diagonals only */
    int scope_all;        /* also attention and dense MLP inputs */
    int compress;         /* deflate level 0..9 of the Hessians (0: stored raw, the default) */
    int threads;          /* <= 0: all cores */
    /* validation split: window w with w % val_every == val_every − 1 also goes into per-expert
     * validation Hessians (docs/calibrate.md); 0: none. Ignored with diag. */
    int64_t val_every;
    const char *tokens_source;   /* recorded in the file; may be NULL */
    /* checkpoint directory (--resume): after each layer its statistics and the residual stream
     * are saved there; a run started again with the same inputs continues after the last
     * finished layer and writes the same file. Removed after success. NULL: none. */
    const char *resume_dir;
    void *user;
    void (*progress)(void *user, int64_t layers_done, int64_t layers, double tokens_per_s);
    /* called with each layer's finished statistics before it is written; may be NULL */
    moeq_status (*on_layer)(void *user, const moeq_calib_layer *L, moeq_error *err);
} moeq_calib_opts;

typedef struct moeq_calib_coverage {     /* one MoE layer */
    int64_t layer, n_experts;
    int64_t *expert_tokens;              /* [E] */
    uint8_t *flag;                       /* [E] moeq_calib_flag */
    int64_t dead, undersampled;          /* counts */
} moeq_calib_coverage;

typedef struct moeq_calib_result {
    int64_t tokens, ctx, windows, min_tokens;
    int64_t val_every, val_windows;      /* the validation split (0: none) */
    int64_t n_moe_layers;
    moeq_calib_coverage *moe_layers;     /* [n_moe_layers] in layer order */
    double seconds, tokens_per_s;        /* token-layers / layers per second over this run's layers */
    int64_t resumed_layers;              /* layers read back from --resume's checkpoint */
    uint64_t comm_bytes;                 /* bytes all MPI ranks sent to each other (0: one rank) */
    uint64_t bytes_formula;              /* moeq_calib_memory_bytes for this run */
    uint64_t file_bytes;                 /* size of the written file (0 without one) */
} moeq_calib_result;

void moeq_calib_result_free(moeq_calib_result *r);

/* Calibrates on tokens[0..n) in non-overlapping windows of ctx tokens (a last partial window
 * is dropped) and writes out_path (NULL: no file) through a temporary name in its directory,
 * renamed at the end: on any failure nothing is left under out_path. */
moeq_status moeq_calibrate(const moeq_model *m, const int32_t *tokens, int64_t n,
                           const char *out_path, const moeq_calib_opts *o,
                           moeq_calib_result *res, moeq_error *err);

/* How this CPU's kernel set sums Hessians (the file's root attribute `hessian_sums`):
 * "f64" (float64, row by row, each product exact: dsyrk) or "bf16x2-f32x256" (two bf16 parts
 * per value, float32 sums per chunk of 256 rows, then float64: hsyrk_sum; MOEQ_HSYRK_ROWS);
 * NULL with diag (no Hessians). */
const char *moeq_calib_hessian_sums(int diag);

/* Peak heap of moeq_calibrate over `tokens` tokens (a multiple of ctx), excluding the mapped
 * checkpoint pages: residual stream + runner workspace + collector + HDF5 chunk buffers
 * (docs/STATS.md, "Memory"). */
uint64_t moeq_calib_memory_bytes(const moeq_model *m, int64_t tokens, int64_t ctx, int threads,
                                 int diag, int scope_all);

/* ---- the HDF5 writer (formats/calib_h5.c) ---------------------------------------------- */

typedef struct moeq_calib_h5 moeq_calib_h5;

typedef struct moeq_calib_h5_meta {
    const char *tokens_source;
    uint64_t tokens_xxh64;        /* hash of the token ids used (little-endian int32) */
    int64_t tokens, ctx, windows, min_tokens;
    int diag, scope_all;
    int compress;                 /* deflate level (with byte shuffle) of the Hessians; 0: none */
    int64_t val_every, val_windows;   /* the validation split; 0: none */
    const char *hessian_sums;     /* moeq_calib_hessian_sums(diag); NULL: no attribute */
} moeq_calib_h5_meta;

/* Creates a temporary file next to path with the root attributes. */
moeq_status moeq_calib_h5_create(const char *path, const moeq_model *m,
                                 const moeq_calib_h5_meta *meta, moeq_calib_h5 **out,
                                 moeq_error *err);
/* Writes one layer's group (flags: [E] moeq_calib_flag for MoE layers, else NULL). */
moeq_status moeq_calib_h5_write_layer(moeq_calib_h5 *w, const moeq_calib_layer *L,
                                      const uint8_t *flags, moeq_error *err);
/* Flushes, closes and renames to the final name; frees w. On failure removes the temporary. */
moeq_status moeq_calib_h5_commit(moeq_calib_h5 *w, uint64_t *file_bytes, moeq_error *err);
/* Closes and removes the temporary file; frees w. */
void moeq_calib_h5_abort(moeq_calib_h5 *w);
/* Checks that path can be written: its directory exists and it is not an existing
 * non-regular file (a device such as /dev/full) or a directory. */
moeq_status moeq_calib_h5_check_path(const char *path, moeq_error *err);

#endif
