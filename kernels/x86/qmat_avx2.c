/* AVX2 + FMA kernels of the int codecs (built with -mavx2 -mfma -mf16c; called only after
 * cpuid). gemv: per group, the float products sum(q * x) are accumulated in 8 lanes, scaled
 * once per group, and the zero term scale * zero * sum(x of the group) is subtracted per row
 * (sum(x) computed once per call). dequant matches the reference bit for bit. gemm: tiles of
 * rows dequantized into an L2-resident buffer, then the float-weight kernel on the tile. */
#include "kernels/x86/x86.h"
#include "kernels/x86/qmat_x86.h"
#include "kernels/x86/avx2_inl.h"
#include "moeq_core.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

void moeq_x86_group_xsum(const moeq_qmat *w, const float *x, float *xs)
{
    int64_t ng = moeq_qmat_groups(w);
    for (int64_t g = 0; g < ng; g++) {
        const float *p = x + g * w->group;
        __m256 s = _mm256_setzero_ps();
        for (int64_t c = 0; c < moeq_qmat_group_len(w, g); c += 8) s = _mm256_add_ps(s, _mm256_loadu_ps(p + c));
        xs[g] = hsum8(s);
    }
}

/* One row of gemv with the AVX2 decoder; xs = per-group sums of x. */
float moeq_avx2_row_dot(const moeq_qmat *w, int64_t r, const float *x, const float *xs)
{
    const int bits = w->bits, bb = 4 * bits;
    const int64_t ng = moeq_qmat_groups(w), bpg = w->group / 32;
    const uint8_t *codes = w->codes + r * moeq_qmat_row_bytes(w);
    const uint16_t *sc = w->scales + r * ng, *zp = w->zeros ? w->zeros + r * ng : NULL;
    const float zsym = (float)(1 << (bits - 1));
    __m256 acc = _mm256_setzero_ps();
    float zterm = 0.0f;
    for (int64_t g = 0; g < ng; g++) {
        __m256 p0 = _mm256_setzero_ps(), p1 = _mm256_setzero_ps();
        for (int64_t k = 0, nk = moeq_qmat_group_len(w, g) / 32; k < nk; k++) {
            int64_t blk = g * bpg + k;
            const float *xb = x + blk * 32;
            __m256i v[4];
            decode_block(bits, codes + blk * bb, v);
            p0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v[0]), _mm256_loadu_ps(xb), p0);
            p1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v[1]), _mm256_loadu_ps(xb + 8), p1);
            p0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v[2]), _mm256_loadu_ps(xb + 16), p0);
            p1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v[3]), _mm256_loadu_ps(xb + 24), p1);
        }
        float s = _cvtsh_ss(sc[g]);
        float z = zp ? _cvtsh_ss(zp[g]) : zsym;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(s), _mm256_add_ps(p0, p1), acc);
        zterm += s * z * xs[g];
    }
    return hsum8(acc) - zterm;
}

void moeq_avx2_dequant(const moeq_qmat *w, int64_t r0, int64_t r1, float *dst)
{
    const int bits = w->bits, bb = 4 * bits;
    const int64_t ng = moeq_qmat_groups(w), bpg = w->group / 32;
    const float zsym = (float)(1 << (bits - 1));
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *codes = w->codes + r * moeq_qmat_row_bytes(w);
        float *d = dst + (r - r0) * w->cols;
        for (int64_t g = 0; g < ng; g++) {
            __m256 s = _mm256_set1_ps(_cvtsh_ss(w->scales[r * ng + g]));
            __m256 z = _mm256_set1_ps(w->zeros ? _cvtsh_ss(w->zeros[r * ng + g]) : zsym);
            for (int64_t k = 0, nk = moeq_qmat_group_len(w, g) / 32; k < nk; k++) {
                int64_t blk = g * bpg + k;
                __m256i v[4];
                decode_block(bits, codes + blk * bb, v);
                for (int j = 0; j < 4; j++)   /* (q - z) * s: the reference's order, no FMA */
                    _mm256_storeu_ps(d + blk * 32 + 8 * j, _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(v[j]), z), s));
            }
        }
    }
}

static void avx2_gemv(const moeq_qmat *w, const float *x, int64_t r0, int64_t r1, float *y)
{
    float stack[512], *xs = moeq_qmat_groups(w) <= 512 ? stack : malloc((size_t)moeq_qmat_groups(w) * sizeof(float));
    if (!xs) return;
    moeq_x86_group_xsum(w, x, xs);
    for (int64_t r = r0; r < r1; r++) y[r - r0] = moeq_avx2_row_dot(w, r, x, xs);
    if (xs != stack) free(xs);
}

/* Tiles of rows: dequantize (fast path) then sgemm; small batches go through gemv per token. */
void moeq_x86_gemm(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                   float *Y, int64_t ldy, moeq_dequant_fn dq, moeq_gemv_fn gv)
{
    if (n < 4) {
        float *tmp = malloc((size_t)(r1 - r0) * sizeof(float));
        if (!tmp) return;
        for (int64_t i = 0; i < n; i++) {
            gv(w, X + i * ldx, r0, r1, tmp);
            memcpy(Y + i * ldy, tmp, (size_t)(r1 - r0) * sizeof(float));
        }
        free(tmp);
        return;
    }
    int64_t tile = MOEQ_X86_GEMM_TILE_BYTES / (w->cols * 4);
    if (tile < 8) tile = 8;
    if (tile > r1 - r0) tile = r1 - r0;
    float *buf = aligned_alloc(64, ((size_t)(tile * w->cols) * sizeof(float) + 63) / 64 * 64);
    if (!buf) return;
    for (int64_t t0 = r0; t0 < r1; t0 += tile) {
        int64_t t1 = t0 + tile < r1 ? t0 + tile : r1;
        dq(w, t0, t1, buf);
        moeq_sgemm_nt(n, t1 - t0, w->cols, X, ldx, buf, w->cols, 0.0f, Y + (t0 - r0), ldy);
    }
    free(buf);
}

/* Batches of 4 or more: tiles of rows dequantized into an L2-resident buffer (~128 KB) and
 * multiplied by the float-weight kernel (wmat_avx2.c), not OpenBLAS, whose speed on a CPU it
 * does not know depends on OPENBLAS_CORETYPE. Smaller batches: gemv per token. */
#define AVX2_TILE_BYTES (128 * 1024)

/* Panel [kc][16] of rows r..r+nr of an int codec from column k0 (k0, kc multiples of 32): per
 * 32-column block, 8 rows decoded and dequantized as moeq_avx2_dequant does ((q - z) · s, no
 * FMA: the same values), then transposed in registers; missing rows are zeros. */
void moeq_avx2_pack_qpanel(const void *src, int64_t r, int64_t nr, int64_t k0, int64_t kc, float *P)
{
    const moeq_qmat *w = src;
    const int bits = w->bits, bb = 4 * bits;
    const int64_t ng = moeq_qmat_groups(w), G = w->group > 0 ? w->group : w->cols, rb = moeq_qmat_row_bytes(w);
    const float zsym = (float)(1 << (bits - 1));
    const int64_t PR = MOEQ_X86_PANEL_ROWS;
    for (int jb = 0; jb < PR; jb += 8) {
        if (jb >= nr) {
            for (int64_t k = 0; k < kc; k++) _mm256_storeu_ps(P + k * PR + jb, _mm256_setzero_ps());
            continue;
        }
        for (int64_t blk = k0 / 32; blk < (k0 + kc) / 32; blk++) {
            const int64_t g = blk * 32 / G;
            __m256 v[4][8];
            for (int j = 0; j < 8; j++) {
                if (jb + j >= nr) {
                    for (int q = 0; q < 4; q++) v[q][j] = _mm256_setzero_ps();
                    continue;
                }
                const int64_t row = r + jb + j;
                const __m256 s = _mm256_set1_ps(_cvtsh_ss(w->scales[row * ng + g]));
                const __m256 z = _mm256_set1_ps(w->zeros ? _cvtsh_ss(w->zeros[row * ng + g]) : zsym);
                __m256i q[4];
                decode_block(bits, w->codes + row * rb + blk * bb, q);
                for (int i = 0; i < 4; i++) v[i][j] = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(q[i]), z), s);
            }
            for (int i = 0; i < 4; i++) {
                transpose8(v[i]);
                float *o = P + (blk * 32 - k0 + 8 * i) * PR + jb;
                for (int c = 0; c < 8; c++) _mm256_storeu_ps(o + c * PR, v[i][c]);
            }
        }
    }
}

void moeq_x86_gemm_tiled(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1, float *Y,
                         int64_t ldy, moeq_wgemm_fn wgemm, moeq_x86_panel_gemm_fn pgemm)
{
    if (n < 4) {
        moeq_x86_gemm(w, X, n, ldx, r0, r1, Y, ldy, moeq_avx2_dequant, avx2_gemv);
        return;
    }
    if (n >= MOEQ_X86_PANEL_MIN_TOKENS) {
        pgemm(moeq_avx2_pack_qpanel, w, w->cols, X, n, ldx, r0, r1, Y, ldy);
        return;
    }
    int64_t tile = AVX2_TILE_BYTES / (w->cols * 4);
    if (tile < 8) tile = 8;
    if (tile > r1 - r0) tile = r1 - r0;
    float *buf = aligned_alloc(64, ((size_t)(tile * w->cols) * sizeof(float) + 63) / 64 * 64);
    if (!buf) return;
    for (int64_t t0 = r0; t0 < r1; t0 += tile) {
        int64_t t1 = t0 + tile < r1 ? t0 + tile : r1;
        moeq_avx2_dequant(w, t0, t1, buf);
        moeq_wmat f = {MOEQ_W_F32, t1 - t0, w->cols, buf, 0};
        wgemm(&f, X, n, ldx, 0, t1 - t0, Y + (t0 - r0), ldy);
    }
    free(buf);
}

void moeq_avx2_gemm(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1, float *Y,
                    int64_t ldy)
{
    moeq_x86_gemm_tiled(w, X, n, ldx, r0, r1, Y, ldy, moeq_avx2_wgemm, moeq_avx2_panel_gemm);
}

const moeq_kernel_set moeq_kernels_avx2 = { "avx2", moeq_avx2_dequant, avx2_gemv, moeq_avx2_gemm, moeq_avx2_wgemm, NULL, NULL, NULL, NULL,
                                           moeq_avx2_swiglu, moeq_avx2_dsyrk, moeq_avx2_attend, NULL,
                                           moeq_avx2_fsyrk_pack, moeq_avx2_fsyrk_sum, "f32x256", 1 };
