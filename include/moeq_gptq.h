/* GPTQ with per-expert Hessians (docs/quantize.md, "GPTQ"), the calibration-file reader it
 * and `moeq plan --cost hessian` use, and the list of routed-expert matrices by packed name. */
#ifndef MOEQ_GPTQ_H
#define MOEQ_GPTQ_H

#include <stdint.h>
#include "moeq_model.h"
#include "moeq_pack.h"
#include "moeq_quant.h"

/* ---- calibration files (formats/calib_h5_read.c; layout in docs/STATS.md) ---------------- */

typedef struct moeq_calib_file moeq_calib_file;

/* Opens a calibration file and checks it was measured on m: format, version, model_type,
 * hidden, layers, n_experts, moe_inter, vocab and model_bytes must match (else FORMAT, exit 2,
 * naming the attribute). */
moeq_status moeq_calib_file_open(const char *path, const moeq_model *m, moeq_calib_file **out,
                                 moeq_error *err);
void moeq_calib_file_close(moeq_calib_file *f);
int64_t moeq_calib_file_min_tokens(const moeq_calib_file *f);
int moeq_calib_file_diag(const moeq_calib_file *f);
/* n_e and the coverage flag (moeq_calib_flag) of a routed expert. */
moeq_status moeq_calib_file_expert(moeq_calib_file *f, int64_t layer, int64_t expert,
                                   int64_t *tokens, int *flag, moeq_error *err);
/* Σ x xᵀ of expert e's gate/up input (down = 0, [H, H]) or down input (down = 1, [I, I]) into
 * H; expert -1: the sum over every expert of the layer. *rows (may be NULL): its token count. */
moeq_status moeq_calib_file_hessian(moeq_calib_file *f, int64_t layer, int64_t expert, int down,
                                    double *H, int64_t dim, int64_t *rows, moeq_error *err);
/* Σ x xᵀ [dim, dim] of a layer's subgroup (docs/STATS.md: "attn_in", "attn_o", "shared_in",
 * "shared_down", "dense_in", "dense_down") into H, *rows its tokens. NOT_FOUND when the file has
 * no such group (written without --scope all, or a layer without it); FORMAT on a bad shape. */
moeq_status moeq_calib_file_group_hessian(moeq_calib_file *f, int64_t layer, const char *group, double *H,
                                          int64_t dim, int64_t *rows, moeq_error *err);

/* The validation split (docs/calibrate.md): every val_every-th window's expert rows also summed
 * on their own. SPLIT_ALL: every window (the statistics above); SPLIT_VAL: the validation
 * windows; SPLIT_CAL: the others (H − H_val). Files without a split have 0 validation windows,
 * and asking them for CAL or VAL is MOEQ_ERR_MISUSE. */
enum { MOEQ_SPLIT_ALL = 0, MOEQ_SPLIT_CAL = 1, MOEQ_SPLIT_VAL = 2 };
int64_t moeq_calib_file_val_windows(const moeq_calib_file *f);
int64_t moeq_calib_file_split_tokens(const moeq_calib_file *f, int split);   /* tokens of the layer in the split */
moeq_status moeq_calib_file_expert_split(moeq_calib_file *f, int64_t layer, int64_t expert, int split,
                                         int64_t *tokens, moeq_error *err);
moeq_status moeq_calib_file_hessian_split(moeq_calib_file *f, int64_t layer, int64_t expert, int down, int split,
                                          double *H, int64_t dim, int64_t *rows, moeq_error *err);

/* ---- GPTQ on one matrix (quant/gptq.c) --------------------------------------------------- */

typedef struct moeq_gptq_opts {
    double damp;       /* relative damping: λ = damp · mean(diag H); default 0.01 when <= 0 */
    int act_order;     /* columns by descending diag H, with static groups (from the original W) */
    int block;         /* lazy-update block width; 128 when <= 0 */
    int threads;       /* <= 0: moeq_threads() */
    int grid_steps;    /* > 1: each group's starting grid by the clipping search of moeq_grid_search
                        * weighted by diag H over that many ratios; <= 1: min/max */
} moeq_gptq_opts;

typedef struct moeq_gptq_info {
    int retries;        /* Cholesky retries with damping × 10 */
    int rtn_fallback;   /* 1: every retry failed, the matrix is plain RTN */
    double damp;        /* relative damping that succeeded */
    int64_t dead_cols;  /* columns with a zero Hessian diagonal */
} moeq_gptq_info;

/* The factorization GPTQ needs from H: upper Cholesky factor U of (H + λI)⁻¹ (dead columns set
 * to 1 on the diagonal first) and, with act_order, the column order. Gate and up share one.
 * Retries with damping × 10 up to three times; MOEQ_ERR_NUMERIC when all fail (info says). */
typedef struct moeq_gptq_hinv moeq_gptq_hinv;
moeq_status moeq_gptq_hinv_create(const double *H, int64_t cols, const moeq_gptq_opts *o,
                                  moeq_gptq_hinv **out, moeq_gptq_info *info, moeq_error *err);
void moeq_gptq_hinv_free(moeq_gptq_hinv *h);
/* The factor's storage: U [n, n] row-major upper triangle, (H + λI)⁻¹ = UᵀU in the column order
 * *perm gives (position -> original column; NULL without act_order). For other grids' GPTQ
 * (quant/ggml_gptq.c). */
const double *moeq_gptq_hinv_factor(const moeq_gptq_hinv *h, int64_t *n, const int64_t **perm);
/* GPTQ of w [rows, cols] with a prepared factorization (same outputs as moeq_gptq_quantize). */
moeq_status moeq_gptq_apply(const moeq_gptq_hinv *h, const float *w, int64_t rows, int64_t cols,
                            int bits, int group, int sym, int block, int threads, uint8_t *raw,
                            float *wq, moeq_error *err);

/* Quantizes w [rows, cols] (float32) under the int codec (bits, group 0 = per channel, sym)
 * with error feedback through H [cols, cols] (symmetric float64, any positive scale; not
 * modified). raw receives moeq_qmat_bytes bytes exactly as moeq_rtn_quantize lays them out;
 * wq (may be NULL) the dequantized weights. Rows go in fixed blocks of 64 over the threads, so
 * the bytes do not depend on the thread count. Grids: scale rounded to f16 before the codes
 * are chosen (so the error fed back is the one the kernels will see). */
moeq_status moeq_gptq_quantize(const float *w, int64_t rows, int64_t cols, const double *H,
                               int bits, int group, int sym, const moeq_gptq_opts *o,
                               uint8_t *raw, float *wq, moeq_gptq_info *info, moeq_error *err);

/* The same grid without error feedback (RTN with f16-rounded scales), dequantized into wq. */
void moeq_rtn_dequant_f32(const float *w, int64_t rows, int64_t cols, int bits, int group, int sym,
                          float *wq);

/* tr((W − Q) H (W − Q)ᵀ) in float64, W and Q [rows, cols], H [cols, cols]. */
double moeq_hessian_error(const float *w, const float *q, int64_t rows, int64_t cols,
                          const double *H);

/* ---- routed-expert matrices by packed name ----------------------------------------------- */

typedef struct moeq_expert_mat {
    char name[600];        /* the packed name moeq quantize gives it (FORMAT.md F-15) */
    int64_t layer, expert;
    moeq_proj proj;        /* GATE, UP or DOWN */
    moeq_mat mat;
} moeq_expert_mat;

/* Every routed-expert matrix, layer-major, expert, gate/up/down; *out malloc'ed, sorted list
 * index by name in *by_name (malloc'ed, may be NULL). */
moeq_status moeq_expert_mats(const moeq_model *m, moeq_expert_mat **out, size_t *n, moeq_error *err);
/* Index of name in the list, or -1 (linear search over a name-sorted copy is left to callers;
 * this one sorts once per call site through moeq_expert_index). */
typedef struct moeq_expert_index moeq_expert_index;
moeq_status moeq_expert_index_build(const moeq_expert_mat *mats, size_t n, moeq_expert_index **out,
                                    moeq_error *err);
int64_t moeq_expert_index_find(const moeq_expert_index *ix, const char *name);
void moeq_expert_index_free(moeq_expert_index *ix);

/* ---- moeq quantize --method gptq --------------------------------------------------------- */

typedef enum moeq_gptq_fallback {
    MOEQ_FALLBACK_RTN = 0, MOEQ_FALLBACK_LAYER_MEAN = 1,
    MOEQ_FALLBACK_SHRINK = 2   /* the expert's Hessian shrunk toward the layer's pooled one (moeq_hessian_shrink) */
} moeq_gptq_fallback;

/* H' = (n_e·Ĥ_e + n0·Ĥ_pool) / (n_e + n0) with Ĥ the per-token means (H_e / n_e, H_pool /
 * n_pool), i.e. (H_e + (n0 / n_pool)·H_pool) / (n_e + n0): an undersampled expert's Hessian
 * shrunk toward its layer's pooled Hessian by how many tokens it saw (n_e = 0: Ĥ_pool). n0 > 0.
 * n_pool <= 0 copies H_e. out may be H_e; dim² entries. */
void moeq_hessian_shrink(const double *H_e, int64_t n_e, const double *H_pool, int64_t n_pool, double n0,
                         int64_t dim, double *out);

/* --damp auto: the candidates tried per layer and input (docs/quantize.md, "Generalization"). */
#define MOEQ_DAMP_CANDIDATES 4
extern const double moeq_damp_candidates[MOEQ_DAMP_CANDIDATES];

/* One --damp auto decision: layer, input kind (0: gate/up, 1: down) and codec. */
typedef struct moeq_gptq_damp_choice {
    int64_t layer;
    int kind, bits, group, sym;
    int gtype;                                   /* a ggml codec's type (bits 0), else 0 */
    double damp;                                 /* the candidate chosen */
    double val_err[MOEQ_DAMP_CANDIDATES];        /* Σ tr(ΔW H_val ΔWᵀ) on the probe rows per candidate */
    int64_t experts[2];                          /* the busiest experts probed (-1: none) */
} moeq_gptq_damp_choice;

/* Per-layer report of a calibrated run: Σ tr(ΔW H ΔWᵀ) over the layer's routed-expert
 * matrices, with each expert's own Hessian of the calibration split (cal) and of the
 * validation split (val), divided by the split's tokens (the mean squared output change per
 * token of the layer's experts). */
typedef struct moeq_gptq_layer_rep {
    double err_cal, err_val;
    int64_t pieces;
    double damp_sum[2];       /* Σ damping used per input kind (gate/up, down), for the mean */
    int64_t damp_n[2];
} moeq_gptq_layer_rep;

typedef struct moeq_gptq_fallback_rec {
    char tensor[600];
    char kind[16];       /* "rtn", "layer-mean", "shrunk" or "damping" */
    char reason[200];
} moeq_gptq_fallback_rec;

/* State of a GPTQ run, handed to moeq_quantize_rtn through moeq_quant_opts.quantize. */
typedef struct moeq_gptq_run {
    const moeq_model *m;
    moeq_calib_file *calib;
    moeq_gptq_opts opts;
    moeq_gptq_fallback fallback;
    const moeq_expert_mat *mats;
    const moeq_expert_index *index;
    size_t n_mats;            /* entries of mats (needed by moeq_gptq_sequential) */
    /* filled during the run */
    moeq_gptq_fallback_rec *fallbacks;
    size_t n_fallbacks, cap_fallbacks;
    int64_t gptq_matrices;
    double seconds_gptq;
    /* sequential GPTQ (quant/gptq_seq.c): the statistics of the layer being quantized replace
     * calib (experts below min_tokens are undersampled), and the pieces it quantized are served
     * from stored[i] (indexed like mats) when moeq_quantize_rtn writes the file */
    const struct moeq_calib_layer *stats;
    int64_t min_tokens;
    struct moeq_gptq_stored *stored;
    /* the factorization cache: the last (layer, expert, kind) prepared (gate and up share it) */
    moeq_gptq_hinv *hinv;
    moeq_gptq_info hinv_info;
    int hinv_ok;
    int64_t H_layer, H_expert;
    int H_kind;
    /* ---- generalization (docs/quantize.md, "Generalization"); all zero: the behaviour before */
    int rtn;                  /* RTN with the calibration file: weighted grids (opts.grid_steps) and the report */
    int damp_auto;            /* choose opts.damp per layer, input kind and codec on the validation split */
    double tdict_damp;        /* t1d's damping: QMoE's 0.1 unless --damp D (<= 0: 0.1) */
    int split;                /* MOEQ_SPLIT_CAL: fit the calibration windows, hold the validation ones out */
    double shrink_n0;         /* prior strength of MOEQ_FALLBACK_SHRINK in tokens; <= 0: the matrix's columns */
    int report;               /* compute the per-layer Hessian errors (needs calib) */
    moeq_gptq_layer_rep *layers;   /* [model layers] filled when report */
    moeq_gptq_damp_choice *choices;
    size_t n_choices, cap_choices;
    /* the note of the last piece quantized here (the MPI/resume records carry it to rank 0) */
    struct { int valid, kind; int64_t layer; double damp, err_cal, err_val; } note;
    /* caches: the expert's own split Hessians, the layer's pooled one per input kind */
    double *Hc, *Hv, *Hpool[2];
    int64_t Hc_layer, Hc_expert, Hpool_layer[2];
    int Hc_kind;
    int64_t Hc_rows, Hpool_rows[2];
    double H_damp;            /* the damping the cached factorization was asked for */
    /* the last layer subgroup's Hessian read (q, k and v share attn_in; gate and up their input) */
    double *Hg;
    const char *Hg_group;     /* NULL: none */
    int64_t Hg_layer, Hg_dim, Hg_rows;
} moeq_gptq_run;

/* Adds a piece's note (from its owner or a checkpoint) to r's per-layer report. */
moeq_status moeq_gptq_note_piece(moeq_gptq_run *r, int64_t layer, int kind, double damp, double err_cal,
                                 double err_val, moeq_error *err);

typedef struct moeq_gptq_stored {
    uint8_t *raw;          /* moeq_qmat_bytes bytes of the piece's codes, or NULL */
    uint64_t size;
    moeq_codec codec;
} moeq_gptq_stored;

/* The moeq_quant_opts.quantize callback for a moeq_gptq_run (user). */
moeq_status moeq_gptq_piece(void *user, const char *name, const float *w, int64_t rows, int64_t cols,
                            const moeq_codec *codec, uint8_t *raw, moeq_error *err);
void moeq_gptq_run_free(moeq_gptq_run *r);
/* Appends a fallback record to r (the MPI and resume driver rebuilds rank 0's list in file order). */
moeq_status moeq_gptq_add_fallback(moeq_gptq_run *r, const char *tensor, const char *kind, const char *reason,
                                   moeq_error *err);

/* ---- moeq quantize over MPI ranks and with checkpoints (quant/quant_dist.c) --------------- */

struct moeq_resume_field;

typedef struct moeq_quant_run {
    moeq_gptq_run *gptq;           /* NULL: RTN (quantize callback of the options, or RTN) */
    const char *resume_dir;        /* checkpoint directory (--resume), NULL for none */
    /* the run's identity in the manifest, beside the model's (config, tensor table, a few bytes
     * of every tensor) and the pieces' codecs the driver adds: option fields, and files hashed
     * by content (calib, plan) */
    const struct moeq_resume_field *fields;
    size_t n_fields;
    struct { const char *name, *path; } files[4];
    size_t n_files;
    /* filled on return */
    int64_t units;                 /* checkpoint units: the layers, and one for other matrices */
    int64_t units_resumed;         /* units with codes taken from the checkpoint */
    int64_t units_written;         /* unit checkpoints this run wrote */
    uint64_t bytes_sent;           /* MPI bytes this rank sent */
} moeq_quant_run;

/* Collective under mpirun (every rank calls it with the same arguments): moeq_quantize_rtn with
 * the int pieces dealt to ranks (moeq_dist_owner over work items: a routed expert's pieces, or
 * one other matrix) and rank 0 alone writing out_path, byte-identical to one process. With
 * qr->resume_dir, rank 0 writes a checkpoint per finished layer and takes finished layers from it
 * (a manifest of other inputs: MOEQ_ERR_FORMAT naming the field). Errors every rank sees (the
 * pieces, the checkpoint directory, the output's temporary) are agreed; a rank failing mid-run
 * returns its own error (the tool ends the job). One process without resume_dir: exactly
 * moeq_quantize_rtn. o->quantize (GPTQ) is called with o->cb_user on the piece's owner; qr->gptq
 * receives rank 0's fallbacks and counts in file order. MOEQ_TEST_STOP_AFTER_LAYER=N (test hook)
 * makes the run fail after writing N unit checkpoints. */
moeq_status moeq_quantize_run(const moeq_model *m, const moeq_quant_opts *o, moeq_quant_run *qr, const char *out_path,
                              moeq_quant_result *res, moeq_error *err);

/* ---- sequential GPTQ (quant/gptq_seq.c) -------------------------------------------------- */

typedef struct moeq_gptq_seq_opts {
    int64_t ctx;          /* window length; 512 when <= 0 */
    int64_t max_tokens;   /* use at most this many tokens (<= 0: all); a last partial window is dropped */
    int64_t min_tokens;   /* experts with fewer tokens are undersampled (--fallback); <= 0: 2 * hidden */
    int threads;          /* <= 0: all cores */
    /* checkpoint directory (--resume): each finished layer's codes and the residual stream are
     * saved there; started again with the same inputs the run continues after the last
     * finished layer and gives the same codes. moeq_gptq_seq_done removes it once the caller
     * has written the file. NULL: none. */
    const char *resume_dir;
    void *user;
    void (*progress)(void *user, int64_t layers_done, int64_t layers, double seconds);   /* may be NULL */
} moeq_gptq_seq_opts;

typedef struct moeq_gptq_seq_result {
    int64_t tokens, windows, ctx;
    int64_t layers_quantized, gptq_pieces;
    int64_t resumed_layers;   /* layers read back from the --resume checkpoint */
    double seconds;
    struct moeq_resume *resume;   /* the open checkpoint (rank 0 with resume_dir), for moeq_gptq_seq_done */
} moeq_gptq_seq_result;

/* Quantizes the model layer by layer on tokens[0..n) (windows of ctx): layer L's expert
 * Hessians come from the inputs the already-quantized layers 0..L-1 produce. Every routed-expert
 * piece that qo gives an int codec is quantized through moeq_gptq_piece with the layer's
 * statistics and stored in r->stored; moeq_quantize_rtn with r as the quantize callback then
 * writes those codes. Layer matrices outside the routed experts (scope all) are RTN, installed
 * for the layers above. r needs m, opts, fallback, mats, n_mats and index; r->calib is unused.
 * The model's overrides are cleared on return. Bad tokens (fewer than one window, ids outside
 * the vocabulary): MOEQ_ERR_FORMAT / MOEQ_ERR_RANGE. */
moeq_status moeq_gptq_sequential(moeq_gptq_run *r, moeq_model *m, const moeq_quant_opts *qo,
                                 const int32_t *tokens, int64_t n, const moeq_gptq_seq_opts *so,
                                 moeq_gptq_seq_result *res, moeq_error *err);

/* After the file is written (written = 1) the --resume checkpoint's files are removed;
 * otherwise (a failure) it is kept for the next try. Either way it is closed. */
void moeq_gptq_seq_done(moeq_gptq_seq_result *res, const char *resume_dir, int64_t layers, int written);

#endif
