/* Pruning of routed experts (docs/prune.md): micro-expert channels scored by weight norms
 * (magnitude), CAMERA-P energies (camera) or Optimal-Brain-Surgeon saliencies on the
 * down-projection input Hessian (hessian, with the OBS update that compensates the remaining
 * columns), or whole experts (expert). The result has ragged expert widths f_e (0: the expert
 * is gone and masked out of the router), recorded in config.json as "moeq_expert_widths". */
#ifndef MOEQ_PRUNE_H
#define MOEQ_PRUNE_H

#include <stddef.h>
#include <stdint.h>
#include "moeq_model.h"

struct moeq_calib_file;

/* ---- ragged widths in config.json ------------------------------------------------------- */

/* "moeq_expert_widths": one array per layer, [] (or null) for dense layers and n_experts
 * integers in [0, moe_inter] for MoE layers, at least top_k of them non-zero. Absent: *out is
 * NULL. Else *out is malloc'ed [layers * n_experts] (0 for dense layers). A malformed key is
 * MOEQ_ERR_FORMAT naming path and the entry. */
moeq_status moeq_expert_widths_parse(const char *json, size_t len, const char *path,
                                     const moeq_config *cfg, int32_t **out, moeq_error *err);

/* ---- the OBS step (prune/obs.c), exposed for tests --------------------------------------- */

/* Removes n_remove of the cols columns of W [rows, cols] (row-major float64, the input
 * dimension is cols) given the input Hessian H [cols, cols] (symmetric, not modified), one at a
 * time, each time the column of least saliency ||W[:,c]||² / [H⁻¹]_cc among those left. With
 * compensate, the remaining columns get the OBS update W -= W[:,c] H⁻¹[c,:] / [H⁻¹]_cc, which
 * minimizes tr(ΔW H ΔWᵀ) given the removed columns are zero; without, the removed columns are
 * just zeroed and the saliency is the diagonal one ||W[:,c]||² H_cc (chosen once, up front).
 * H⁻¹ is that of H + λI, λ = damp · mean(diag H) (λ = 1 when diag H is all zero). removed[k]
 * gets the k-th column removed (may be NULL). MOEQ_ERR_NUMERIC if H + λI is not positive
 * definite. */
moeq_status moeq_obs_remove(double *W, int64_t rows, int64_t cols, const double *H, int64_t n_remove,
                            int compensate, double damp, int64_t *removed, moeq_error *err);

/* Saliency of each column before any removal: ||W[:,c]||² / [H⁻¹]_cc (compensate) or
 * ||W[:,c]||² H_cc; out [cols]. */
moeq_status moeq_obs_saliency(const double *W, int64_t rows, int64_t cols, const double *H, int compensate,
                              double damp, double *out, moeq_error *err);

/* ---- moeq prune -------------------------------------------------------------------------- */

typedef enum moeq_prune_score {
    MOEQ_PRUNE_MAGNITUDE = 0, MOEQ_PRUNE_CAMERA, MOEQ_PRUNE_HESSIAN, MOEQ_PRUNE_EXPERT
} moeq_prune_score;

typedef enum moeq_prune_layout {
    MOEQ_PRUNE_ZERO_FILL = 0,   /* uniform widths, removed channels zero: transformers loads it */
    MOEQ_PRUNE_RAGGED = 1       /* per-expert tensors [f_e, H] / [H, f_e]: moeq only, smaller, faster */
} moeq_prune_layout;

typedef struct moeq_prune_opts {
    moeq_prune_score score;
    double ratio;         /* fraction of routed-expert channels (experts for EXPERT), in (0, 1) */
    int scope_global;     /* rank over all MoE layers instead of per layer */
    int64_t min_width;    /* channel scores: experts keep at least this many channels (0: may go) */
    int64_t multiple;     /* channel scores: widths rounded up to a multiple of this (0/1: none) by
                             keeping the best-scored of the channels chosen for removal */
    double rho;           /* camera: weight of the max term; default 0.9 when < 0 */
    int compensate;       /* hessian: OBS update of the remaining down columns */
    double damp;          /* hessian: relative damping; 0.01 when <= 0 */
    moeq_prune_layout layout;
    const char *calib_path;   /* the calibration file behind calib (camera reads its phi2 vectors) */
    int threads;
} moeq_prune_opts;

typedef struct moeq_prune_result {
    int64_t channels_total, removed_channels, removed_experts, experts_total;
    int64_t params_before, params_after;     /* whole model, as counted by the model view */
    uint64_t bytes_before, bytes_after;      /* tensor data, source dtype (after: as if ragged) */
    uint64_t bytes_written;                  /* tensor data written */
    int32_t *widths;                         /* [layers * n_experts], malloc'ed */
    double seconds;
} moeq_prune_result;

void moeq_prune_result_free(moeq_prune_result *r);

/* Scores the routed-expert channels (or experts) of every MoE layer, chooses what to remove, and
 * with out_dir != NULL writes a Hugging Face directory there (built under a temporary name next
 * to it and renamed; out_dir must not exist or be empty): config.json with
 * "moeq_expert_widths", the other files of the source, and every tensor, the routed experts
 * pruned in the chosen layout. calib is required for camera, hessian and expert. An already
 * pruned model is refused (MOEQ_ERR_UNSUPPORTED). */
moeq_status moeq_prune(const moeq_model *m, struct moeq_calib_file *calib, const moeq_prune_opts *o,
                       const char *out_dir, moeq_prune_result *res, moeq_error *err);

/* Per-channel scores of expert (layer, e) under score (not EXPERT) into out[moe_inter]; for
 * tests and the results script. */
moeq_status moeq_prune_channel_scores(const moeq_model *m, struct moeq_calib_file *calib,
                                      const moeq_prune_opts *o, int64_t layer, int64_t e, double *out,
                                      moeq_error *err);

#endif
