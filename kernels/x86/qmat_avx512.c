/* AVX-512 (F, BW, VL) gemv of the int codecs. 4- and 8-bit blocks decode to 16 lanes in
 * column order directly. 2- and 3-bit blocks are decoded two at a time (64 columns, 16 lanes
 * per shift): their lanes hold columns c, c+32 interleaved in runs of 8, so x is permuted once
 * per call into that order. Groups of 32 for 2/3 bits use the AVX2 row. dequant and the gemm
 * tiles reuse the AVX2 code (memory-bound, and bit-identical to the reference). */
#include "kernels/x86/x86.h"
#include "kernels/x86/qmat_x86.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

static float row_dot_48(const moeq_qmat *w, int64_t r, const float *x, const float *xs)
{
    const int bits = w->bits, bb = 4 * bits;
    const int64_t ng = moeq_qmat_groups(w), bpg = w->group / 32;
    const uint8_t *codes = w->codes + r * moeq_qmat_row_bytes(w);
    const uint16_t *sc = w->scales + r * ng, *zp = w->zeros ? w->zeros + r * ng : NULL;
    const float zsym = (float)(1 << (bits - 1));
    const __m512i m15 = _mm512_set1_epi32(15);
    __m512 acc = _mm512_setzero_ps();
    float zterm = 0.0f;
    for (int64_t g = 0; g < ng; g++) {
        __m512 p0 = _mm512_setzero_ps(), p1 = _mm512_setzero_ps();
        for (int64_t k = 0, nk = moeq_qmat_group_len(w, g) / 32; k < nk; k++) {
            int64_t blk = g * bpg + k;
            const uint8_t *b = codes + blk * bb;
            const float *xb = x + blk * 32;
            __m512i lo, hi;
            if (bits == 4) {
                __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)b));
                lo = _mm512_and_si512(v, m15);
                hi = _mm512_srli_epi32(v, 4);
            } else {
                lo = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)b));
                hi = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + 16)));
            }
            p0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo), _mm512_loadu_ps(xb), p0);
            p1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), _mm512_loadu_ps(xb + 16), p1);
        }
        float s = _cvtsh_ss(sc[g]);
        float z = zp ? _cvtsh_ss(zp[g]) : zsym;
        acc = _mm512_fmadd_ps(_mm512_set1_ps(s), _mm512_add_ps(p0, p1), acc);
        zterm += s * z * xs[g];
    }
    return _mm512_reduce_add_ps(acc) - zterm;
}

/* x permuted per 64 columns: for j in 0..3, x[c+8j .. +8] then x[c+32+8j .. +8]. */
static void permute_x(const float *x, int64_t cols, float *xp)
{
    for (int64_t c = 0; c < cols; c += 64)
        for (int j = 0; j < 4; j++) {
            memcpy(xp + c + 16 * j, x + c + 8 * j, 8 * sizeof(float));
            memcpy(xp + c + 16 * j + 8, x + c + 32 + 8 * j, 8 * sizeof(float));
        }
}

static float row_dot_23(const moeq_qmat *w, int64_t r, const float *xp, const float *xs)
{
    const int bits = w->bits, bb = 4 * bits;
    const int64_t ng = moeq_qmat_groups(w), ppg = w->group / 64;
    const uint8_t *codes = w->codes + r * moeq_qmat_row_bytes(w);
    const uint16_t *sc = w->scales + r * ng, *zp = w->zeros ? w->zeros + r * ng : NULL;
    const float zsym = (float)(1 << (bits - 1));
    const __m512i m3 = _mm512_set1_epi32(3), one = _mm512_set1_epi32(1);
    const __m512i sh0 = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7);
    __m512 acc = _mm512_setzero_ps();
    float zterm = 0.0f;
    for (int64_t g = 0; g < ng; g++) {
        __m512 p0 = _mm512_setzero_ps(), p1 = _mm512_setzero_ps();
        for (int64_t k = 0, nk = moeq_qmat_group_len(w, g) / 64; k < nk; k++) {
            int64_t pair = g * ppg + k;
            const uint8_t *a = codes + pair * 2 * bb, *b = a + bb;
            const float *xb = xp + pair * 64;
            __m128i bytes = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)a), _mm_loadl_epi64((const __m128i *)b));
            __m512i v = _mm512_cvtepu8_epi32(bytes);
            __m512i q0 = _mm512_and_si512(v, m3);
            __m512i q1 = _mm512_and_si512(_mm512_srli_epi32(v, 2), m3);
            __m512i q2 = _mm512_and_si512(_mm512_srli_epi32(v, 4), m3);
            __m512i q3 = _mm512_srli_epi32(v, 6);
            if (bits == 3) {
                uint32_t ha, hb;
                memcpy(&ha, a + 8, 4);
                memcpy(&hb, b + 8, 4);
                __m512i hv = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32((int)ha)),
                                                _mm256_set1_epi32((int)hb), 1);
                __m512i sh = sh0, eight = _mm512_set1_epi32(8);
                q0 = _mm512_or_si512(q0, _mm512_slli_epi32(_mm512_and_si512(_mm512_srlv_epi32(hv, sh), one), 2));
                sh = _mm512_add_epi32(sh, eight);
                q1 = _mm512_or_si512(q1, _mm512_slli_epi32(_mm512_and_si512(_mm512_srlv_epi32(hv, sh), one), 2));
                sh = _mm512_add_epi32(sh, eight);
                q2 = _mm512_or_si512(q2, _mm512_slli_epi32(_mm512_and_si512(_mm512_srlv_epi32(hv, sh), one), 2));
                sh = _mm512_add_epi32(sh, eight);
                q3 = _mm512_or_si512(q3, _mm512_slli_epi32(_mm512_and_si512(_mm512_srlv_epi32(hv, sh), one), 2));
            }
            p0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q0), _mm512_loadu_ps(xb), p0);
            p1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q1), _mm512_loadu_ps(xb + 16), p1);
            p0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q2), _mm512_loadu_ps(xb + 32), p0);
            p1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q3), _mm512_loadu_ps(xb + 48), p1);
        }
        float s = _cvtsh_ss(sc[g]);
        float z = zp ? _cvtsh_ss(zp[g]) : zsym;
        acc = _mm512_fmadd_ps(_mm512_set1_ps(s), _mm512_add_ps(p0, p1), acc);
        zterm += s * z * xs[g];
    }
    return _mm512_reduce_add_ps(acc) - zterm;
}

/* Software prefetch of a row two ahead (codes, scales, zeros): a matrix far larger than the
 * cache is streamed from three arrays, and the hardware prefetchers alone left the rotated
 * 4-bit GEMV at about half the read bandwidth (docs/bench.md). */
static void prefetch_row(const moeq_qmat *w, int64_t r, int64_t r1)
{
    if (r >= r1) return;
    int64_t rb = moeq_qmat_row_bytes(w), ng = moeq_qmat_groups(w);
    const char *c = (const char *)(w->codes + r * rb);
    for (int64_t o = 0; o < rb; o += 64) _mm_prefetch(c + o, _MM_HINT_T0);
    const char *sc = (const char *)(w->scales + r * ng);
    for (int64_t o = 0; o < 2 * ng; o += 64) _mm_prefetch(sc + o, _MM_HINT_T0);
    if (w->zeros) {
        const char *zp = (const char *)(w->zeros + r * ng);
        for (int64_t o = 0; o < 2 * ng; o += 64) _mm_prefetch(zp + o, _MM_HINT_T0);
    }
}

void moeq_avx512_gemv(const moeq_qmat *w, const float *x, int64_t r0, int64_t r1, float *y)
{
    int64_t ng = moeq_qmat_groups(w);
    int permuted = (w->bits == 2 || w->bits == 3) && w->group % 64 == 0 && w->cols % 64 == 0;
    float *xs = malloc((size_t)ng * sizeof(float) + (permuted ? (size_t)w->cols * sizeof(float) : 0));
    if (!xs) return;
    moeq_x86_group_xsum(w, x, xs);
    if (permuted) {
        float *xp = xs + ng;
        permute_x(x, w->cols, xp);
        for (int64_t r = r0; r < r1; r++) {
            prefetch_row(w, r + 2, r1);
            y[r - r0] = row_dot_23(w, r, xp, xs);
        }
    } else if (w->bits == 4 || w->bits == 8) {
        for (int64_t r = r0; r < r1; r++) {
            prefetch_row(w, r + 2, r1);
            y[r - r0] = row_dot_48(w, r, x, xs);
        }
    } else {
        for (int64_t r = r0; r < r1; r++) y[r - r0] = moeq_avx2_row_dot(w, r, x, xs);
    }
    free(xs);
}

static void avx512_gemm(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                        float *Y, int64_t ldy)
{
    moeq_x86_gemm(w, X, n, ldx, r0, r1, Y, ldy, moeq_avx2_dequant, moeq_avx512_gemv);
}

const moeq_kernel_set moeq_kernels_avx512 = { "avx512", moeq_avx2_dequant, moeq_avx512_gemv, avx512_gemm, moeq_avx512_wgemm, NULL, NULL, NULL, NULL,
                                             moeq_avx512_swiglu, moeq_avx512_dsyrk,
                                             moeq_avx512_attend, NULL, moeq_avx512_fsyrk_pack,
                                            moeq_avx512_fsyrk_sum, "f32x256", 1 };
