/* Weight spectra and heavy-tail (HT-SR) fits per matrix: the empirical spectral density
 * λ = σ(W)² in three modes (full SVD, float64 gram, FARMS tiles), the Hill and WeightWatcher KS
 * power-law fits, norm metrics, the model-wide driver, the HDF5 writer and SVG plots.
 * docs/spectral.md has the formulas; docs/STATS.md the file layout. */
#ifndef MOEQ_SPECTRAL_H
#define MOEQ_SPECTRAL_H

#include <stdint.h>
#include "moeq_model.h"
#include "moeq_status.h"

typedef enum moeq_spec_mode {
    MOEQ_SPEC_FULL = 0,   /* all singular values of W: dgesdd, values only, float64 */
    MOEQ_SPEC_GRAM = 1,   /* eigenvalues of WᵀW or WWᵀ (smaller side): dsyrk + dsyevd, float64 */
    MOEQ_SPEC_FARMS = 2   /* pooled σ² of seeded non-overlapping tiles (AlphaQ's default) */
} moeq_spec_mode;

typedef enum moeq_spec_estimator { MOEQ_SPEC_HILL = 0, MOEQ_SPEC_KS = 1 } moeq_spec_estimator;

typedef enum moeq_spec_ks_fix {
    MOEQ_KS_FIX_NONE = 0,
    MOEQ_KS_FIX_XMIN_PEAK = 1,   /* xmin restricted to [0.95, 1.5] x the log-histogram peak */
    MOEQ_KS_FIX_CLIP_XMAX = 2    /* drop up to 10 top "fingers" when that lowers alpha by > 1 */
} moeq_spec_ks_fix;

typedef enum moeq_spec_scope { MOEQ_SPEC_SCOPE_EXPERTS = 0, MOEQ_SPEC_SCOPE_ALL = 1 } moeq_spec_scope;

typedef struct moeq_spec_opts {
    moeq_spec_mode mode;
    moeq_spec_estimator estimator;   /* which fit is reported as `alpha` */
    moeq_spec_ks_fix ks_fix;
    int64_t tile;                    /* FARMS tile side, default 128 */
    int64_t max_blocks;              /* FARMS tiles kept at most, default 256 */
    uint64_t seed;                   /* FARMS tile choice and --randomize shuffles */
    double evals_thresh;             /* eigenvalues <= this are dropped before fitting (1e-5) */
    int64_t min_evals;               /* fewer kept eigenvalues: no fit, flagged (10) */
    int randomize;                   /* also the ESD of the shuffled matrix */
} moeq_spec_opts;

void moeq_spec_opts_default(moeq_spec_opts *o);
const char *moeq_spec_mode_name(moeq_spec_mode m);           /* "full", "gram", "farms" */
const char *moeq_spec_estimator_name(moeq_spec_estimator e); /* "hill", "ks" */
const char *moeq_spec_ks_fix_name(moeq_spec_ks_fix f);       /* "none", "xmin_peak", "clip_xmax" */

/* Per-matrix flags: why a value is missing or should not be trusted. */
enum {
    MOEQ_SPEC_F_NONFINITE = 1u << 0,   /* NaN/Inf weights: nothing computed */
    MOEQ_SPEC_F_ZERO = 1u << 1,        /* all weights zero */
    MOEQ_SPEC_F_TOO_FEW = 1u << 2,     /* fewer than min_evals eigenvalues above the threshold */
    MOEQ_SPEC_F_HILL_BOUND = 1u << 3,  /* Hill's k was clamped to n-1, or its tail is flat */
    MOEQ_SPEC_F_KS_BOUND = 1u << 4,    /* KS xmin at an end of its search range, or no fit */
    MOEQ_SPEC_F_FARMS_FULL = 1u << 5,  /* FARMS: smaller than one tile, full mode used */
    MOEQ_SPEC_F_LAPACK = 1u << 6       /* LAPACK did not converge: nothing computed */
};
/* Writes the names of the set flags, comma-separated ("nonfinite,too_few"), into buf. */
void moeq_spec_flags_str(uint32_t flags, char *buf, size_t cap);
/* A flag set that means `alpha` must not be used (it is NaN then). */
#define MOEQ_SPEC_F_BAD (MOEQ_SPEC_F_NONFINITE | MOEQ_SPEC_F_ZERO | MOEQ_SPEC_F_TOO_FEW | MOEQ_SPEC_F_LAPACK)

typedef struct moeq_spec_result {
    int64_t rows, cols;
    int64_t n_eigs_total;    /* eigenvalues computed (pooled over tiles in FARMS) */
    int64_t n_eigs;          /* kept for the fits (> evals_thresh) */
    int64_t n_tiles;         /* FARMS tiles used (0 otherwise) */
    int64_t nonfinite;       /* NaN/Inf weights counted */
    double alpha;            /* the chosen estimator; NaN when flagged BAD */
    double alpha_hill, alpha_ks;
    int64_t hill_k;
    double ks_xmin, ks_d, ks_sigma;   /* KS: xmin, KS distance, (alpha-1)/sqrt(n_tail) */
    int64_t ks_n_tail, ks_fingers;    /* eigenvalues >= xmin; top ones clipped by clip_xmax */
    double stable_rank, log_norm, log_spectral_norm, alpha_weighted, log_alpha_norm;
    double var;                       /* population variance of the entries (float64) */
    double lambda_max;
    /* --randomize: the shuffled matrix's spectrum */
    double rand_lambda_max, ww_softrank, rand_distance;
    uint32_t flags;
} moeq_spec_result;

/* ---- building blocks (tests and the benchmark call them directly) ---------------------- */

/* Thread-private buffers, grown on demand. */
typedef struct moeq_spec_ws moeq_spec_ws;
moeq_spec_ws *moeq_spec_ws_new(void);
void moeq_spec_ws_free(moeq_spec_ws *ws);

/* Upper bound on the eigenvalues one matrix yields in a mode (to size eigs buffers). */
int64_t moeq_spec_max_eigs(int64_t rows, int64_t cols, const moeq_spec_opts *o);

/* ESD of a float32 row-major [rows, cols] matrix, ascending, into eigs (capacity from
 * moeq_spec_max_eigs). key makes the FARMS tile choice differ per matrix but not per run.
 * *n_tiles gets the FARMS tiles used (0 = not FARMS or fallback). Returns MOEQ_ERR_NUMERIC
 * when LAPACK fails to converge, MOEQ_ERR_NOMEM. W is not modified. */
moeq_status moeq_spec_esd(const float *W, int64_t rows, int64_t cols, const moeq_spec_opts *o,
                          uint64_t key, moeq_spec_ws *ws, double *eigs, int64_t *n,
                          int64_t *n_tiles, moeq_error *err);

/* Hill estimator on ascending lam[0..n): k = max(10, floor(0.1 n)) clamped to n-1.
 * Returns NaN when n < 2 or the tail is flat; *k_out and *clamped may be NULL. */
double moeq_spec_hill(const double *lam, int64_t n, int64_t *k_out, int *clamped);

/* WeightWatcher's continuous power-law fit on ascending positive lam[0..n): every candidate
 * xmin (restricted by fix), MLE alpha, KS distance, smallest distance wins. */
typedef struct moeq_ks_fit {
    double alpha, xmin, d, sigma;
    int64_t i_xmin, n_tail, fingers;
    int at_bound;   /* chosen xmin is an end of the candidate range, or no candidate fits */
} moeq_ks_fit;
moeq_status moeq_spec_ks(const double *lam, int64_t n, moeq_spec_ks_fix fix, moeq_ks_fit *fit,
                         moeq_error *err);
/* Plain reference of the unrestricted fit: every candidate's full KS scan (O(n²), tests). */
void moeq_spec_ks_ref(const double *lam, int64_t n, moeq_ks_fit *fit);

/* Everything for one matrix view: widens it, checks finiteness, ESD, fits, metrics. Bad
 * matrices (NaN/Inf, zero, too small) are flagged in *res with NaN values, not errors.
 * eigs may be NULL; else it receives the ascending ESD (*n_eigs entries). */
moeq_status moeq_spec_matrix(const moeq_mat *m, const moeq_spec_opts *o, uint64_t key,
                             moeq_spec_ws *ws, moeq_spec_result *res, double *eigs,
                             int64_t *n_eigs, moeq_error *err);

/* Stable key of a matrix (FNV-1a of the tensor name and index): seeds its FARMS tiles. */
uint64_t moeq_spec_key(const char *tensor, int64_t index);

/* ---- model driver ------------------------------------------------------------------------ */

#define MOEQ_SPEC_NAME_MAX 256

typedef struct moeq_spec_item {
    char tensor[MOEQ_SPEC_NAME_MAX];   /* checkpoint name; fused experts as "name[e]" */
    int64_t layer, expert;             /* expert -1 when not a routed expert */
    moeq_proj proj;
    moeq_mat mat;
} moeq_spec_item;

/* The matrices of a scope in a fixed order: per layer, routed experts e-major (gate, up,
 * down), then with SCOPE_ALL q, k, v, o, router, shared expert, its gate, the dense MLP.
 * *items is malloc'ed. */
moeq_status moeq_spec_list(const moeq_model *m, moeq_spec_scope scope, moeq_spec_item **items,
                           size_t *n, moeq_error *err);

/* Called on the calling thread, in item order, once per matrix; eigs is the ascending ESD
 * (valid during the call). A non-OK return stops the run with that status. */
typedef moeq_status (*moeq_spec_sink)(void *user, size_t i, const moeq_spec_item *item,
                                      const moeq_spec_result *res, const double *eigs,
                                      int64_t n_eigs, moeq_error *err);

/* Runs every item over `threads` OpenMP threads (BLAS single-threaded inside), a batch of
 * 2 x threads matrices in memory at a time; results[i] gets item i. Deterministic: the same
 * bits whatever the thread count. */
moeq_status moeq_spec_run(const moeq_spec_item *items, size_t n, const moeq_spec_opts *o,
                          int threads, moeq_spec_result *results, moeq_spec_sink sink,
                          void *user, moeq_error *err);

/* ---- over MPI ranks (spectral/spec_dist.c; docs/spectral.md "Under mpirun") ------------- */

/* moeq_spec_run with the items dealt to the MPI ranks (item i to moeq_dist_owner(i)); every
 * rank calls it with the same arguments. Each rank computes only its own items, `threads`
 * threads each; rank 0 receives every result in item order, fills results[0..n) and alone
 * calls sink, in item order. eigs reach rank 0's sink for another rank's item only with
 * send_eigs (else NULL, 0). Other ranks fill results only for their own items. The output is
 * bit-identical whatever the rank count (each matrix is computed by one thread of one rank).
 * A failure on rank 0 is returned there. A failure on another rank is handed to rank 0, which
 * returns it (detail "rank R (HOST): ..."); the failing rank then waits until the job is ended
 * (the tool's tool_report ends it with MPI_Abort once rank 0 has cleaned up), so the caller
 * must end the job on any failure. One rank: moeq_spec_run. */
moeq_status moeq_spec_run_dist(const moeq_spec_item *items, size_t n, const moeq_spec_opts *o,
                               int threads, int send_eigs, moeq_spec_result *results,
                               moeq_spec_sink sink, void *user, moeq_error *err);
/* Collective: the ESD of items[idx] (every rank passes the same idx). Its owner computes it;
 * rank 0 gets its result and all its ascending eigenvalues (*eigs malloc'ed, *n_eigs; of them
 * the last res->n_eigs are the kept ones); other ranks get *eigs NULL. Failures as above. */
moeq_status moeq_spec_esd_dist(const moeq_spec_item *items, size_t n, size_t idx,
                               const moeq_spec_opts *o, moeq_spec_result *res, double **eigs,
                               int64_t *n_eigs, moeq_error *err);

/* Alpha statistics of the routed-expert matrices of one projection (GATE/UP/DOWN) in one layer
 * (layer -1: all layers). flagged counts matrices with a BAD or bound flag. */
typedef struct moeq_spec_summary {
    int64_t count, fitted, flagged;
    double median, min, max;   /* over the fitted (finite alpha) matrices; NaN when none */
} moeq_spec_summary;
void moeq_spec_summarize(const moeq_spec_item *items, const moeq_spec_result *res, size_t n,
                         int64_t layer, moeq_proj proj, moeq_spec_summary *out);
/* Flags that make a matrix "flagged" in summaries: BAD ones and fits at a bound. */
#define MOEQ_SPEC_F_REPORT (MOEQ_SPEC_F_BAD | MOEQ_SPEC_F_HILL_BOUND | MOEQ_SPEC_F_KS_BOUND)

/* ---- HDF5 statistics file (formats/spectral_h5.c; layout in docs/STATS.md) ------------- */

typedef struct moeq_spec_h5 moeq_spec_h5;

typedef struct moeq_spec_h5_meta {
    const char *model_path, *model_type, *scope, *tool_version;
    int64_t layers, experts;
    const uint8_t *layer_is_moe;   /* [layers] */
    int save_eigs;
} moeq_spec_h5_meta;

/* Opens a temporary file next to path; moeq_spec_h5_finish renames it into place. */
moeq_status moeq_spec_h5_create(const char *path, const moeq_spec_opts *o,
                                const moeq_spec_h5_meta *meta, moeq_spec_h5 **out,
                                moeq_error *err);
/* Stores one matrix's ESD (with save_eigs); call in item order. */
moeq_status moeq_spec_h5_put_eigs(moeq_spec_h5 *h, const moeq_spec_item *item,
                                  const double *eigs, int64_t n, moeq_error *err);
/* Writes the per-layer [expert, proj] tables and the flat /matrices table, closes and renames.
 * Frees h whatever the outcome. */
moeq_status moeq_spec_h5_finish(moeq_spec_h5 *h, const moeq_spec_item *items,
                                const moeq_spec_result *res, size_t n, moeq_error *err);
/* Closes and removes the temporary file. */
void moeq_spec_h5_abort(moeq_spec_h5 *h);

/* ---- SVG plots (spectral/plot.c) --------------------------------------------------------- */

/* Heat map of values[layers][experts] (NaN drawn grey, rows where row_valid is 0 labelled
 * "dense"), viridis colour scale with a colour bar. Written atomically. */
moeq_status moeq_spec_svg_heatmap(const char *path, const char *title, const char *value_label,
                                  const double *values, int64_t layers, int64_t experts,
                                  const uint8_t *row_valid, moeq_error *err);
/* Log-log complementary CDF of the ascending ESD with the KS fit (from xmin) and the Hill fit
 * (from its reference eigenvalue) drawn over it. */
moeq_status moeq_spec_svg_esd(const char *path, const char *title, const double *eigs,
                              int64_t n, const moeq_spec_result *res, moeq_error *err);

#endif
