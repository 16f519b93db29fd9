/* llama.cpp's (ggml's) tensor block types: layouts, dequantization, quantization in each type's own
 * grid, and the matmul kernels the forward pass runs GGUF weights through.
 *
 * Contract between the GGUF container code (formats/gguf*.c: reader, writer, model loading) and the
 * codecs (one file per type family under kernels/, a plain-C reference for each, SIMD for the hot
 * ones). Layouts and formulas: ../shared/research/gguf-export.md and docs/FORMAT-gguf.md. Type ids
 * are ggml's `enum ggml_type` values, pinned. */
#ifndef MOEQ_GGML_H
#define MOEQ_GGML_H

#include <stddef.h>
#include <stdint.h>
#include "moeq_status.h"

typedef enum moeq_ggml_type {
    MOEQ_GGML_F32 = 0,
    MOEQ_GGML_F16 = 1,
    MOEQ_GGML_Q4_0 = 2,
    MOEQ_GGML_Q4_1 = 3,
    MOEQ_GGML_Q5_0 = 6,
    MOEQ_GGML_Q5_1 = 7,
    MOEQ_GGML_Q8_0 = 8,
    MOEQ_GGML_Q2_K = 10,
    MOEQ_GGML_Q3_K = 11,
    MOEQ_GGML_Q4_K = 12,
    MOEQ_GGML_Q5_K = 13,
    MOEQ_GGML_Q6_K = 14,
    MOEQ_GGML_IQ4_NL = 20,
    MOEQ_GGML_IQ4_XS = 23,
    MOEQ_GGML_BF16 = 30,
    MOEQ_GGML_TQ1_0 = 34,
    MOEQ_GGML_TQ2_0 = 35,
    MOEQ_GGML_MXFP4 = 39,
    MOEQ_GGML_IQ2_K = 137,   /* ik_llama.cpp's id (mainline llama.cpp has no such type) */
    MOEQ_GGML_IQ2_KS = 145,   /* ik_llama.cpp's (not in mainline ggml): an f16 scale per row */
} moeq_ggml_type;

typedef struct moeq_ggml_type_info {
    moeq_ggml_type type;
    const char *name;        /* "Q4_K", as llama.cpp spells it */
    int block;               /* values per block (1 for F32/F16/BF16) */
    int bytes;               /* bytes per block */
    int row_meta;            /* bytes at the start of each row before its blocks (IQ2_KS: 2), else 0 */
    int runtimes;            /* MOEQ_GGML_RT_* bits: the runtimes that load the type */
} moeq_ggml_type_info;

/* Runtimes that load a type: mainline llama.cpp (and node-llama-cpp) and ik_llama.cpp. Most types
 * load in both; the ternary TQ1_0/TQ2_0 only in mainline (ik_llama.cpp dropped them), IQ2_K and
 * IQ2_KS only in ik_llama.cpp. A GGUF mixing the two kinds loads nowhere. */
#define MOEQ_GGML_RT_LLAMA 1
#define MOEQ_GGML_RT_IK 2

/* NULL for a type id moeq does not support (the caller names it in its error). */
const moeq_ggml_type_info *moeq_ggml_type_get(int type);
/* Case-insensitive name lookup ("q4_k", "Q4_K"); NULL when unknown. */
const moeq_ggml_type_info *moeq_ggml_type_by_name(const char *name);
/* Bytes of one row of n values (row_meta + n / block * bytes); 0 when n is not a multiple of
 * the type's block. */
size_t moeq_ggml_row_bytes(moeq_ggml_type t, int64_t n);

/* Dequantize one row of n values (n a multiple of the block): exactly llama.cpp's
 * dequantize_row_* (float32 arithmetic in the same order, so results are bit-identical). */
void moeq_ggml_dequant_row(moeq_ggml_type t, const void *src, float *dst, int64_t n);

/* Quantize one row of n values into t's grid. imp: per-column importance weights (the diagonal
 * of the input Hessian, as llama.cpp's imatrix), NULL for none. Without weights the result equals
 * llama.cpp's quantize_row_*_ref; with weights, a weighted scale/min search. MXFP4 (both cases):
 * each block's exponent is the one of least (weighted) squared error among llama.cpp's and its
 * neighbours (docs/GGML-TYPES.md), never worse than llama.cpp's. TQ1_0/TQ2_0 with weights (llama.cpp
 * ignores an imatrix for them): each block's scale by weighted least squares over the ternary
 * codes, never worse than the reference in weighted error. Deterministic. */
void moeq_ggml_quant_row(moeq_ggml_type t, const float *src, const float *imp, void *dst, int64_t n);

/* Y[n, rows] = X[n, cols] · Wᵀ for W a [rows, cols] matrix of type t stored row after row
 * (row stride moeq_ggml_row_bytes(t, cols)); float32 activations. Dispatches like the packed
 * kernels (cpuid, MOEQ_KERNEL); every variant is tested against the reference. */
void moeq_ggml_gemm(moeq_ggml_type t, const void *W, int64_t rows, int64_t cols,
                    const float *X, int64_t n, float *Y);

/* moeq_ggml_gemm through a named variant ("ref", "avx2", "avx512"; NULL: the one
 * moeq_ggml_gemm picks). 0 when that variant is not available here or the arguments are bad
 * (nothing written), else 1. For tests and benchmarks. */
int moeq_ggml_gemm_with(const char *variant, moeq_ggml_type t, const void *W, int64_t rows, int64_t cols,
                        const float *X, int64_t n, float *Y);
/* The variant moeq_ggml_gemm runs here ("ref", "avx2", "avx512"). */
const char *moeq_ggml_gemm_name(void);

/* ---- RTN and GPTQ on a ggml grid (quant/ggml_gptq.c) --------------------------------------- */

/* moeq_ggml_quant_row over the rows of w [rows, cols] into dst (rows * row bytes), parallel over
 * rows (the bytes do not depend on the thread count). d [cols]: importances of the columns (a
 * Hessian diagonal, any positive scale; scaled to mean 1 here), NULL or all zero: llama.cpp's
 * unweighted reference. Errors: MISUSE (cols not a multiple of the block), NOMEM. */
moeq_status moeq_ggml_quantize_rows(moeq_ggml_type t, const float *w, int64_t rows, int64_t cols, const double *d,
                                    void *dst, moeq_error *err);


struct moeq_gptq_opts;
struct moeq_gptq_info;
struct moeq_gptq_hinv;

/* Quantizes w [rows, cols] (float32, row-major, rows = output features) into type t, row after
 * row at dst (rows * moeq_ggml_row_bytes(t, cols) bytes), with GPTQ error feedback through H
 * [cols, cols] (float64, symmetric, any positive scale: Σ x xᵀ of the expert's inputs, as
 * quant/gptq.c takes it). The columns are swept in order, each block's scales and mins found
 * by the weighted search of moeq_ggml_quant_row (importances diag(H)) on the block's values when
 * the sweep reaches it (o->act_order: by descending diag(H), the grids searched once on the
 * original rows; a type with row metadata, IQ2_KS, first gets its row scale from the weighted
 * search of the whole original row, and its blocks are searched under it), and each value is
 * rounded to the nearest point of its block's grid,
 * its error fed forward through the Cholesky factor of (H + λI)⁻¹ (moeq_gptq_hinv_create: the
 * damping and retries of o). Never fails on the data: H == NULL or a zero diagonal (dead or
 * undersampled expert) gives the weighted search with the fallback weight 1 and no feedback, a
 * failed factorization the weighted search with diag(H) (info->rtn_fallback = 1 in both). wq
 * (may be NULL): the dequantized result, exactly what moeq_ggml_dequant_row gives. Float types
 * (F32/F16/BF16) are converted. Deterministic, independent of o->threads. Errors: MISUSE (cols
 * not a multiple of the block, unknown type), NOMEM. */
moeq_status moeq_ggml_gptq(moeq_ggml_type t, const float *w, int64_t rows, int64_t cols, const double *H,
                           const struct moeq_gptq_opts *o, void *dst, float *wq, struct moeq_gptq_info *info,
                           moeq_error *err);
/* The same in two steps, so that matrices of one Hessian (an expert's gate and up) share the
 * factorization: *h from moeq_ggml_gptq_factor (NULL when H is NULL or dead, or cannot be
 * factorized: moeq_ggml_gptq's fallbacks), then moeq_ggml_gptq_with for each matrix with the same
 * H and o. The bytes are moeq_ggml_gptq's. Free *h with moeq_gptq_hinv_free. Errors: NOMEM. */
moeq_status moeq_ggml_gptq_factor(const double *H, int64_t cols, const struct moeq_gptq_opts *o,
                                  struct moeq_gptq_hinv **h, moeq_error *err);
moeq_status moeq_ggml_gptq_with(moeq_ggml_type t, const float *w, int64_t rows, int64_t cols, const double *H,
                                const struct moeq_gptq_hinv *h, const struct moeq_gptq_opts *o, void *dst, float *wq,
                                struct moeq_gptq_info *info, moeq_error *err);

#endif
