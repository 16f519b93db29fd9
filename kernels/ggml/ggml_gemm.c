/* Y[n, rows] = X[n, cols] · Wᵀ over GGUF weights, without dequantizing the matrix: each row is
 * decoded a chunk (≤ 256 values) at a time into a small buffer and dotted with the tokens.
 * Variants: "ref" (the scalar dequantization, dot in float64 in column order, rounded once),
 * "avx2" and "avx512" (kernels/ggml/ggml_gemm_avx2.c, ggml_gemm_avx512.c: SIMD dequantization
 * of the hot types, bit-identical to the scalar one, and float32 FMA dots). Activations stay
 * float32 in every variant: llama.cpp's int8 (Q8_K) activations tripled the KLD in issue 12's
 * measurements. Rows go to the threads in fixed blocks and each output is one thread's fixed
 * sequence of operations, so results do not depend on the thread count. The variant follows
 * the packed kernels' choice (moeq_kernels(): cpuid, or MOEQ_KERNEL=ref|avx2|avx512|vnni, vnni
 * meaning avx512 here). */
#include "kernels/ggml/ggml_gemm.h"
#include "kernels/x86/x86.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define ROW_BLOCK 16

static void ref_rows(const gg_codec *c, const uint8_t *W, int64_t r0, int64_t r1, int64_t cols, const float *X,
                     int64_t n, float *Y, int64_t ldy)
{
    const size_t rb = gg_row_bytes(c, cols);
    float w[GG_CHUNK];
    double *acc = malloc((size_t)(n > 0 ? n : 1) * sizeof *acc);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = W + (size_t)r * rb;
        if (acc) {
            memset(acc, 0, (size_t)n * sizeof *acc);
            for (int64_t c0 = 0; c0 < cols; c0 += GG_CHUNK) {
                int64_t len = cols - c0 < GG_CHUNK ? cols - c0 : GG_CHUNK;
                gg_dequant_blocks(c, row, c0 / c->block, w, len / c->block);
                for (int64_t i = 0; i < n; i++) {
                    const float *x = X + i * cols + c0;
                    double s = acc[i];
                    for (int64_t k = 0; k < len; k++) s += (double)w[k] * (double)x[k];
                    acc[i] = s;
                }
            }
            for (int64_t i = 0; i < n; i++) Y[i * ldy + r] = (float)acc[i];
        } else {
            /* no memory for the accumulators: token by token, the same sums */
            for (int64_t i = 0; i < n; i++) {
                double s = 0;
                for (int64_t c0 = 0; c0 < cols; c0 += GG_CHUNK) {
                    int64_t len = cols - c0 < GG_CHUNK ? cols - c0 : GG_CHUNK;
                    gg_dequant_blocks(c, row, c0 / c->block, w, len / c->block);
                    for (int64_t k = 0; k < len; k++) s += (double)w[k] * (double)X[i * cols + c0 + k];
                }
                Y[i * ldy + r] = (float)s;
            }
        }
    }
    free(acc);
}

const gg_gemm_variant gg_gemm_ref = {"ref", ref_rows};

const gg_gemm_variant *gg_gemm_get(const char *name)
{
    if (!strcmp(name, "ref")) return &gg_gemm_ref;
#if defined(MOEQ_HAVE_X86)
    /* the packed kernels' cpuid checks decide what this CPU runs */
    if (!strcmp(name, "avx2") && moeq_kernels_get("avx2")) return &gg_gemm_avx2;
    if ((!strcmp(name, "avx512") || !strcmp(name, "vnni")) && moeq_kernels_get("avx512")) return &gg_gemm_avx512;
#endif
    return NULL;
}

static const gg_gemm_variant *chosen(void)
{
    const gg_gemm_variant *v = gg_gemm_get(moeq_kernels()->name);
    return v ? v : &gg_gemm_ref;
}

static void run(const gg_gemm_variant *v, const gg_codec *c, const void *W, int64_t rows, int64_t cols, const float *X,
                int64_t n, float *Y)
{
    const int64_t nblk = (rows + ROW_BLOCK - 1) / ROW_BLOCK;
    const int par = rows * cols * (n > 0 ? n : 1) >= (1 << 18) && !omp_in_parallel();
#pragma omp parallel for schedule(static) if (par)
    for (int64_t b = 0; b < nblk; b++) {
        int64_t r0 = b * ROW_BLOCK, r1 = r0 + ROW_BLOCK < rows ? r0 + ROW_BLOCK : rows;
        v->rows(c, W, r0, r1, cols, X, n, Y, rows);
    }
}

void moeq_ggml_gemm(moeq_ggml_type t, const void *W, int64_t rows, int64_t cols, const float *X, int64_t n, float *Y)
{
    const gg_codec *c = gg_codec_get(t);
    if (!c || rows <= 0 || cols <= 0 || n <= 0 || cols % c->block) return;
    run(chosen(), c, W, rows, cols, X, n, Y);
}

int moeq_ggml_gemm_with(const char *variant, moeq_ggml_type t, const void *W, int64_t rows, int64_t cols,
                        const float *X, int64_t n, float *Y)
{
    const gg_gemm_variant *v = variant ? gg_gemm_get(variant) : chosen();
    const gg_codec *c = gg_codec_get(t);
    if (!v || !c || rows <= 0 || cols <= 0 || n <= 0 || cols % c->block) return 0;
    run(v, c, W, rows, cols, X, n, Y);
    return 1;
}

const char *moeq_ggml_gemm_name(void) { return chosen()->name; }
