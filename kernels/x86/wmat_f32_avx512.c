/* AVX-512 float-weight GEMM for batches (the avx512 and vnni sets' wgemm, and the bf16 sets' for
 * weights that are not bf16: attention's K and Vᵀ, f16, FP8 widened, dequantized tiles). The
 * panel of wmat_avx2.c ([kc][16] floats: 16 rows of W, moeq_avx2_pack_panel) is one 16-lane
 * vector per column, swept by register tiles of 12 tokens: per column one panel load and 12
 * FMAs with the token's x broadcast from memory, 12 accumulators (enough to cover the FMA
 * latency on two pipes, which AVX2's 6 x 2 ymm did at half the width). Each output is the same
 * FMA chain in k order as in wmat_avx2.c, so the bits are moeq_avx2_wgemm's, and calls of
 * fewer than 16 tokens go to its dot-product tiles. */
#include "kernels/x86/x86.h"
#include "kernels/x86/qmat_x86.h"

#include <immintrin.h>
#include <stdlib.h>

#define PR MOEQ_X86_PANEL_ROWS   /* wmat_avx2.c's layout */
#define PT 12    /* tokens per register tile */

static inline __attribute__((always_inline)) void otile(int T, const float *P, const float *const *x, int64_t kc,
                                                        int first, float *y, int64_t ldy, int nr)
{
    const __mmask16 m = (__mmask16)((1u << nr) - 1);
    __m512 acc[PT];
#pragma GCC unroll 12
    for (int t = 0; t < T; t++) acc[t] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, y + t * ldy);
    for (int64_t k = 0; k < kc; k++) {
        const __m512 wv = _mm512_loadu_ps(P + k * PR);
#pragma GCC unroll 12
        for (int t = 0; t < T; t++) acc[t] = _mm512_fmadd_ps(wv, _mm512_set1_ps(x[t][k]), acc[t]);
    }
#pragma GCC unroll 12
    for (int t = 0; t < T; t++) _mm512_mask_storeu_ps(y + t * ldy, m, acc[t]);
}

#define OTILE(T) \
    static void otile_##T(const float *P, const float *const *x, int64_t kc, int first, float *y, int64_t ldy, int nr) \
    { otile(T, P, x, kc, first, y, ldy, nr); }
OTILE(1) OTILE(2) OTILE(3) OTILE(4) OTILE(5) OTILE(6) OTILE(7) OTILE(8) OTILE(9) OTILE(10) OTILE(11) OTILE(12)
static const moeq_x86_otile_fn otiles[PT] = { otile_1, otile_2, otile_3, otile_4, otile_5, otile_6,
                                     otile_7, otile_8, otile_9, otile_10, otile_11, otile_12 };

void moeq_avx512_wgemm(const moeq_wmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                       float *Y, int64_t ldy)
{
    if (n <= 0 || r1 <= r0) return;
    if (n < MOEQ_X86_PANEL_MIN_TOKENS) {
        moeq_avx2_wgemm(w, X, n, ldx, r0, r1, Y, ldy);
        return;
    }
    moeq_avx512_panel_gemm(moeq_avx2_pack_wpanel, w, w->cols, X, n, ldx, r0, r1, Y, ldy);
}

void moeq_avx512_panel_gemm(moeq_x86_panel_fn pack, const void *src, int64_t K, const float *X, int64_t n, int64_t ldx,
                            int64_t r0, int64_t r1, float *Y, int64_t ldy)
{
    moeq_x86_panel_loop(pack, src, K, X, n, ldx, r0, r1, Y, ldy, otiles, PT);
}

/* the avx512 and vnni sets' packed gemm for batches: dequantized tiles through this kernel */
void moeq_avx512_gemm_tiled(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                            float *Y, int64_t ldy)
{
    moeq_x86_gemm_tiled(w, X, n, ldx, r0, r1, Y, ldy, moeq_avx512_wgemm, moeq_avx512_panel_gemm);
}
