/* AVX-512 helpers shared by the kernel files built with AVX-512 (internal). */
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

/* exp of 16 lanes (act_avx512.c's softmax and SwiGLU, attn_avx512.c): k = round(x / ln 2),
 * r = x - k ln 2 (ln 2 in two parts), the degree-7 Taylor polynomial of r, 2^k by vscalefps:
 * 0 below the range (-inf too), inf above it. */
static inline __m512 exp16(__m512 x)
{
    const __m512 log2e = _mm512_set1_ps(1.44269504088896341f), ln2hi = _mm512_set1_ps(0.693145751953125f),
                 ln2lo = _mm512_set1_ps(1.428606765330187045e-06f);
    x = _mm512_max_ps(x, _mm512_set1_ps(-110.0f));   /* below: 0 (scalef underflows); -inf too */
    x = _mm512_min_ps(x, _mm512_set1_ps(89.0f));
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, ln2hi, x);
    r = _mm512_fnmadd_ps(k, ln2lo, r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, k);
}

#endif
