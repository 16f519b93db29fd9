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
} moeq_ggml_type;

typedef struct moeq_ggml_type_info {
    moeq_ggml_type type;
    const char *name;        /* "Q4_K", as llama.cpp spells it */
    int block;               /* values per block (1 for F32/F16/BF16) */
    int bytes;               /* bytes per block */
} moeq_ggml_type_info;

/* NULL for a type id moeq does not support (the caller names it in its error). */
const moeq_ggml_type_info *moeq_ggml_type_get(int type);
/* Case-insensitive name lookup ("q4_k", "Q4_K"); NULL when unknown. */
const moeq_ggml_type_info *moeq_ggml_type_by_name(const char *name);
/* Bytes of one row of n values; 0 when n is not a multiple of the type's block. */
size_t moeq_ggml_row_bytes(moeq_ggml_type t, int64_t n);

/* Dequantize one row of n values (n a multiple of the block): exactly llama.cpp's
 * dequantize_row_* (float32 arithmetic in the same order, so results are bit-identical). */
void moeq_ggml_dequant_row(moeq_ggml_type t, const void *src, float *dst, int64_t n);

/* Quantize one row of n values into t's grid. imp: per-column importance weights (the diagonal
 * of the input Hessian, as llama.cpp's imatrix), NULL for none. Without weights the result equals
 * llama.cpp's quantize_row_*_ref; with weights, a weighted scale/min search. Deterministic. */
void moeq_ggml_quant_row(moeq_ggml_type t, const float *src, const float *imp, void *dst, int64_t n);

/* Y[n, rows] = X[n, cols] · Wᵀ for W a [rows, cols] matrix of type t stored row after row
 * (row stride moeq_ggml_row_bytes(t, cols)); float32 activations. Dispatches like the packed
 * kernels (cpuid, MOEQ_KERNEL); every variant is tested against the reference. */
void moeq_ggml_gemm(moeq_ggml_type t, const void *W, int64_t rows, int64_t cols,
                    const float *X, int64_t n, float *Y);

#endif
