/* AVX2 + FMA kernels of the int codecs (built with -mavx2 -mfma -mf16c; called only after
 * cpuid). gemv: per group, the float products sum(q * x) are accumulated in 8 lanes, scaled
 * once per group, and the zero term scale * zero * sum(x of the group) is subtracted per row
 * (sum(x) computed once per call). dequant matches the reference bit for bit. gemm: tiles of
 * rows dequantized into an L2-resident buffer, then the float-weight kernel on the tile. */
#include "kernels/x86/x86.h"
#include "kernels/x86/qmat_x86.h"
#include "moeq_core.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

/* 32 codes of one block as four vectors of 8 int32: columns 0-7, 8-15, 16-23, 24-31. */
static inline void decode_block(int bits, const uint8_t *b, __m256i v[4])
{
    const __m256i m3 = _mm256_set1_epi32(3), m15 = _mm256_set1_epi32(15);
    switch (bits) {
    case 8:
        for (int k = 0; k < 4; k++) v[k] = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b + 8 * k)));
        break;
    case 4: {
        __m256i a = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)b));
        __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b + 8)));
        v[0] = _mm256_and_si256(a, m15);
        v[1] = _mm256_and_si256(c, m15);
        v[2] = _mm256_srli_epi32(a, 4);
        v[3] = _mm256_srli_epi32(c, 4);
        break;
    }
    case 2: {
        __m256i a = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)b));
        v[0] = _mm256_and_si256(a, m3);
        v[1] = _mm256_and_si256(_mm256_srli_epi32(a, 2), m3);
        v[2] = _mm256_and_si256(_mm256_srli_epi32(a, 4), m3);
        v[3] = _mm256_srli_epi32(a, 6);
        break;
    }
    default: {   /* 3: low two bits as 2-bit, bit 2 from the word at b + 8 */
        __m256i a = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)b));
        uint32_t h;
        memcpy(&h, b + 8, 4);
        __m256i hv = _mm256_set1_epi32((int)h), one = _mm256_set1_epi32(1);
        __m256i sh = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), eight = _mm256_set1_epi32(8);
        for (int k = 0; k < 4; k++) {
            __m256i lo = _mm256_and_si256(_mm256_srlv_epi32(a, _mm256_set1_epi32(2 * k)), m3);
            __m256i hi = _mm256_slli_epi32(_mm256_and_si256(_mm256_srlv_epi32(hv, sh), one), 2);
            v[k] = _mm256_or_si256(lo, hi);
            sh = _mm256_add_epi32(sh, eight);
        }
        break;
    }
    }
}

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

void moeq_x86_gemm_tiled(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1, float *Y,
                         int64_t ldy, moeq_wgemm_fn wgemm)
{
    if (n < 4) {
        moeq_x86_gemm(w, X, n, ldx, r0, r1, Y, ldy, moeq_avx2_dequant, avx2_gemv);
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
    moeq_x86_gemm_tiled(w, X, n, ldx, r0, r1, Y, ldy, moeq_avx2_wgemm);
}

const moeq_kernel_set moeq_kernels_avx2 = { "avx2", moeq_avx2_dequant, avx2_gemv, moeq_avx2_gemm, moeq_avx2_wgemm, NULL, NULL, NULL, NULL,
                                           moeq_avx2_softmax, moeq_avx2_swiglu, moeq_avx2_dsyrk };
