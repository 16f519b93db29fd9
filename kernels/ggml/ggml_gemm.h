/* The matmul variants over ggml block types (kernels/ggml/ggml_gemm*.c). */
#ifndef MOEQ_GGML_GEMM_H
#define MOEQ_GGML_GEMM_H

#include "kernels/ggml/ggml_impl.h"

#define GG_CHUNK 256   /* values decoded at a time: one K-quant super-block, 8 legacy blocks */

typedef struct gg_gemm_variant {
    const char *name;
    /* Y[i * ldy + r] = sum_c W[r][c] X[i * cols + c] for r in [r0, r1), i < n; one thread */
    void (*rows)(const gg_codec *c, const uint8_t *W, int64_t r0, int64_t r1, int64_t cols, const float *X,
                 int64_t n, float *Y, int64_t ldy);
} gg_gemm_variant;

extern const gg_gemm_variant gg_gemm_ref, gg_gemm_avx2, gg_gemm_avx512;
const gg_gemm_variant *gg_gemm_get(const char *name);

#endif
