/* AVX-512 helpers shared by wmat_avx512.c and wmat_amx.c (internal; files built with AVX-512). */
#ifndef MOEQ_AVX512_INL_H
#define MOEQ_AVX512_INL_H
#include <immintrin.h>

/* 16 x 16 transpose of 32-bit lanes: r[i] lane j -> o[j] lane i (r is scratch). */
static inline void transpose16(__m512i r[16], __m512i o[16])
{
    __m512i *t = o;
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    /* r[4a + b]: block q holds tokens 4a..4a+3 of pair 4q + b; gather the blocks */
    for (int i = 0; i < 4; i++) {
        __m512i a0 = _mm512_shuffle_i32x4(r[i], r[4 + i], 0x88), a1 = _mm512_shuffle_i32x4(r[i], r[4 + i], 0xdd);
        __m512i b0 = _mm512_shuffle_i32x4(r[8 + i], r[12 + i], 0x88), b1 = _mm512_shuffle_i32x4(r[8 + i], r[12 + i], 0xdd);
        o[i] = _mm512_shuffle_i32x4(a0, b0, 0x88);
        o[4 + i] = _mm512_shuffle_i32x4(a1, b1, 0x88);
        o[8 + i] = _mm512_shuffle_i32x4(a0, b0, 0xdd);
        o[12 + i] = _mm512_shuffle_i32x4(a1, b1, 0xdd);
    }
}

#endif
