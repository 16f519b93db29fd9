/* AVX2 helpers shared by the kernel files built with -mavx2 (internal): an int codec's block
 * decoded to lanes, an 8 x 8 transpose, exp of 8 lanes (act_avx2.c, attn_avx2.c). */
#ifndef MOEQ_AVX2_INL_H
#define MOEQ_AVX2_INL_H
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
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

/* 8 vectors of 8 floats transposed in registers (rows become columns) */
static inline void transpose8(__m256 r[8])
{
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

/* exp of 8 lanes, act_avx512.c's method without vscalefps (act_avx2.c's header): x clamped to
 * [-87, 88.72] so that 2^k is a normal float built in the exponent bits; lanes below -87 (-inf
 * too) are 0, above ln(FLT_MAX) inf; NaN is carried. */
static inline __m256 exp8(__m256 x)
{
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f), ln2hi = _mm256_set1_ps(0.693145751953125f),
                 ln2lo = _mm256_set1_ps(1.428606765330187045e-06f), lo = _mm256_set1_ps(-87.0f);
    const __m256 hi = _mm256_set1_ps(88.72f);
    const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ), over = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
    x = _mm256_min_ps(hi, _mm256_max_ps(lo, x));   /* NaN is the second operand: kept */
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, ln2hi, x);
    r = _mm256_fnmadd_ps(k, ln2lo, r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    /* k in [-126, 128]: 2^k as (k + 127) << 23, and k = 128 (x near 88.72) as 2^127 · 2p */
    const __m256i ki = _mm256_cvtps_epi32(k);
    const __m256i top = _mm256_cmpgt_epi32(ki, _mm256_set1_epi32(127));
    const __m256i ke = _mm256_sub_epi32(ki, _mm256_and_si256(top, _mm256_set1_epi32(1)));
    const __m256 two_k = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(ke, _mm256_set1_epi32(127)), 23));
    p = _mm256_blendv_ps(p, _mm256_add_ps(p, p), _mm256_castsi256_ps(top));
    const __m256 e = _mm256_andnot_ps(under, _mm256_mul_ps(p, two_k));
    return _mm256_blendv_ps(e, _mm256_set1_ps(INFINITY), over);
}

/* lanes [0, n) of a tail (n < 8) as a mask */
static inline __m256i tail_mask(int64_t n)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), idx);
}

#endif
