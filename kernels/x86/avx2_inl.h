/* AVX2 helpers shared by qmat_avx2.c and wmat_avx2.c (internal; include after <immintrin.h>,
 * in files built with -mavx2): an int codec's block decoded to lanes, an 8 x 8 transpose. */
#ifndef MOEQ_AVX2_INL_H
#define MOEQ_AVX2_INL_H
#include <immintrin.h>
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

#endif
