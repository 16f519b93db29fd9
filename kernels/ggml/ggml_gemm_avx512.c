/* AVX-512 matmul over ggml types (built with -mavx512f/bw/vl/dq; dispatch.c's cpuid check
 * comes first). Q8_0, Q4_K, Q5_K, Q6_K, IQ4_XS, MXFP4, TQ1_0 and TQ2_0 are decoded 16 values per
 * vector with the scalar code's float operations (int → float, one multiply, one subtract: bit-identical to
 * moeq_ggml_dequant_row); the other types through the scalar decoder. Dots: float32 FMA,
 * four tokens per pass over a decoded chunk, one accumulator vector per token. */
#include "kernels/ggml/ggml_gemm.h"

#include <immintrin.h>
#include <stdlib.h>


static void dq_q8_0(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += 34, y += 32) {
        const __m512 d = _mm512_set1_ps(gg_h2f(b));
        __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 2))));
        __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 18))));
        _mm512_storeu_ps(y, _mm512_mul_ps(lo, d));
        _mm512_storeu_ps(y + 16, _mm512_mul_ps(hi, d));
    }
}

static inline void scale_min_k4(int j, const uint8_t *q, int *d, int *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static void dq_q45_k(const uint8_t *b, float *y, int64_t nb, int five)
{
    const __m512i m4 = _mm512_set1_epi32(0xf), one = _mm512_set1_epi32(1);
    for (int64_t i = 0; i < nb; i++, b += five ? 176 : 144, y += 256) {
        const float d = gg_h2f(b), min = gg_h2f(b + 2);
        const uint8_t *qh = b + 16, *qs = b + (five ? 48 : 16);
        for (int j = 0; j < 8; j++) {
            int sc, m;
            scale_min_k4(j, b + 4, &sc, &m);
            const __m512 d1 = _mm512_set1_ps(d * sc), m1 = _mm512_set1_ps(min * m);
            for (int h = 0; h < 2; h++) {
                __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(qs + 32 * (j / 2) + 16 * h)));
                v = _mm512_and_si512((j & 1) ? _mm512_srli_epi32(v, 4) : v, m4);
                if (five) {
                    __m512i hb = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(qh + 16 * h)));
                    hb = _mm512_and_si512(_mm512_srli_epi32(hb, j), one);
                    v = _mm512_add_epi32(v, _mm512_slli_epi32(hb, 4));
                }
                _mm512_storeu_ps(y + 32 * j + 16 * h, _mm512_sub_ps(_mm512_mul_ps(d1, _mm512_cvtepi32_ps(v)), m1));
            }
        }
    }
}

static void dq_q6_k(const uint8_t *b, float *y, int64_t nb)
{
    const __m512i m4 = _mm512_set1_epi32(0xf), m2 = _mm512_set1_epi32(3), c32 = _mm512_set1_epi32(32);
    for (int64_t i = 0; i < nb; i++, b += 210, y += 256) {
        const float d = gg_h2f(b + 208);
        for (int e = 0; e < 256; e += 16) {
            const int h = e / 128, g = (e % 128) / 32, l = e % 32;
            __m512i lo = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + 64 * h + l + 32 * (g & 1))));
            if (g >= 2) lo = _mm512_srli_epi32(lo, 4);
            lo = _mm512_and_si512(lo, m4);
            __m512i hi = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + 128 + 32 * h + l)));
            hi = _mm512_and_si512(_mm512_srli_epi32(hi, 2 * g), m2);
            __m512i q = _mm512_sub_epi32(_mm512_or_si512(lo, _mm512_slli_epi32(hi, 4)), c32);
            const __m512 a = _mm512_set1_ps(d * (int8_t)b[192 + e / 16]);
            _mm512_storeu_ps(y + e, _mm512_mul_ps(a, _mm512_cvtepi32_ps(q)));
        }
    }
}

static void dq_iq4_xs(const uint8_t *b, float *y, int64_t nb)
{
    __m512 tbl = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)gg_iq4nl_values)));
    const __m512i m4 = _mm512_set1_epi32(0xf);
    for (int64_t i = 0; i < nb; i++, b += 136) {
        const float d = gg_h2f(b);
        const uint16_t sh = gg_rd16(b + 2);
        for (int ib = 0; ib < 8; ib++, y += 32) {
            const int ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xf) | (((sh >> (2 * ib)) & 3) << 4);
            const __m512 dl = _mm512_set1_ps(d * (ls - 32));
            __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + 8 + 16 * ib)));
            __m512 lo = _mm512_permutexvar_ps(_mm512_and_si512(v, m4), tbl);
            __m512 hi = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), tbl);
            _mm512_storeu_ps(y, _mm512_mul_ps(dl, lo));
            _mm512_storeu_ps(y + 16, _mm512_mul_ps(dl, hi));
        }
    }
}

/* IQ2_K: index q + 4·bit into the 8-entry grid, times d·(ls − 8), a sub-block per vector */
static void dq_iq2_k(const uint8_t *b, float *y, int64_t nb)
{
    const __m512 tbl = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)gg_iq2nl_values)));
    const __m512i m2 = _mm512_set1_epi32(3);
    for (int64_t i = 0; i < nb; i++, b += 76) {
        const float d = gg_h2f(b);
        const unsigned extra = gg_rd16(b + 2);
        for (int ib = 0; ib < 16; ib++, y += 16) {
            const __m512 dl = _mm512_set1_ps(d * (((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xf) - 8));
            const __m128i sh = _mm_cvtsi32_si128(2 * ((ib / 2) % 4));
            const __m512i off = _mm512_set1_epi32((int)(extra >> ib & 1) * 4);
            __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + 12 + 32 * (ib / 8) + 16 * (ib % 2))));
            v = _mm512_add_epi32(_mm512_and_si512(_mm512_srl_epi32(v, sh), m2), off);
            _mm512_storeu_ps(y, _mm512_mul_ps(dl, _mm512_permutexvar_ps(v, tbl)));
        }
    }
}

static void dq_mxfp4(const uint8_t *b, float *y, int64_t nb)
{
    __m512 tbl = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)gg_mxfp4_values)));
    const __m512i m4 = _mm512_set1_epi32(0xf);
    for (int64_t i = 0; i < nb; i++, b += 17, y += 32) {
        const __m512 d = _mm512_set1_ps(gg_e8m0_half(b[0]));
        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + 1)));
        _mm512_storeu_ps(y, _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_and_si512(v, m4), tbl), d));
        _mm512_storeu_ps(y + 16, _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), tbl), d));
    }
}

static inline __m512i u8x16(const uint8_t *p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)); }

/* TQ2_0: 2-bit codes q, (q − 1)·d as the scalar code */
static void dq_tq2_0(const uint8_t *b, float *y, int64_t nb)
{
    const __m512i m2 = _mm512_set1_epi32(3), one = _mm512_set1_epi32(1);
    for (int64_t i = 0; i < nb; i++, b += 66) {
        const __m512 d = _mm512_set1_ps(gg_h2f(b + 64));
        for (int h = 0; h < 2; h++)
            for (int n = 0; n < 4; n++, y += 32)
                for (int k = 0; k < 32; k += 16) {
                    __m512i q = _mm512_and_si512(_mm512_srli_epi32(u8x16(b + 32 * h + k), 2 * n), m2);
                    _mm512_storeu_ps(y + k, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q, one)), d));
                }
    }
}

/* TQ1_0: trit k of byte B is ((B·3^k mod 256)·3) >> 8, the scalar code's integer steps */
static const int tq_pow3[5] = {1, 3, 9, 27, 81};

static inline __m512 tq1_trits(const uint8_t *p, int k, __m512 d)
{
    const __m512i ff = _mm512_set1_epi32(0xff), one = _mm512_set1_epi32(1);
    __m512i v = _mm512_and_si512(_mm512_mullo_epi32(u8x16(p), _mm512_set1_epi32(tq_pow3[k])), ff);
    v = _mm512_srli_epi32(_mm512_add_epi32(v, _mm512_add_epi32(v, v)), 8);
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(v, one)), d);
}

static void dq_tq1_0(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += 54) {
        const float df = gg_h2f(b + 52);
        const __m512 d = _mm512_set1_ps(df);
        for (int k = 0; k < 5; k++, y += 32)
            for (int m = 0; m < 32; m += 16) _mm512_storeu_ps(y + m, tq1_trits(b + m, k, d));
        for (int k = 0; k < 5; k++, y += 16) _mm512_storeu_ps(y, tq1_trits(b + 32, k, d));
        /* qh: 4 bytes, 16 values; scalar (1/16 of the block) */
        for (int k = 0; k < 4; k++)
            for (int j = 0; j < 4; j++) {
                const uint8_t v = (uint8_t)(b[48 + j] * tq_pow3[k]);
                *y++ = (float)((((uint16_t)v * 3) >> 8) - 1) * df;
            }
    }
}

static void dq_q4_k(const uint8_t *b, float *y, int64_t nb) { dq_q45_k(b, y, nb, 0); }
static void dq_q5_k(const uint8_t *b, float *y, int64_t nb) { dq_q45_k(b, y, nb, 1); }

typedef void (*deq_fn)(const uint8_t *, float *, int64_t);
static deq_fn fast_dequant(const gg_codec *c)
{
    switch (c->type) {
    case MOEQ_GGML_Q8_0: return dq_q8_0;
    case MOEQ_GGML_Q4_K: return dq_q4_k;
    case MOEQ_GGML_Q5_K: return dq_q5_k;
    case MOEQ_GGML_Q6_K: return dq_q6_k;
    case MOEQ_GGML_IQ4_XS: return dq_iq4_xs;
    case MOEQ_GGML_MXFP4: return dq_mxfp4;
    case MOEQ_GGML_IQ2_K: return dq_iq2_k;
    case MOEQ_GGML_TQ1_0: return dq_tq1_0;
    case MOEQ_GGML_TQ2_0: return dq_tq2_0;
    default: return c->dequant;
    }
}

/* four tokens (x0..x3) against len decoded values w; acc carried across chunks. A row whose
 * length is not a multiple of 16 (float types: any length) ends in a masked load, so nothing past
 * the row is read and the missing lanes add zero. */
static inline void dot4(const float *w, int64_t len, const float *x0, const float *x1, const float *x2, const float *x3,
                        __m512 acc[4])
{
    int64_t k = 0;
    for (; k + 16 <= len; k += 16) {
        const __m512 v = _mm512_loadu_ps(w + k);
        acc[0] = _mm512_fmadd_ps(v, _mm512_loadu_ps(x0 + k), acc[0]);
        acc[1] = _mm512_fmadd_ps(v, _mm512_loadu_ps(x1 + k), acc[1]);
        acc[2] = _mm512_fmadd_ps(v, _mm512_loadu_ps(x2 + k), acc[2]);
        acc[3] = _mm512_fmadd_ps(v, _mm512_loadu_ps(x3 + k), acc[3]);
    }
    if (k < len) {
        const __mmask16 m = (__mmask16)((1u << (len - k)) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(m, w + k);
        acc[0] = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(m, x0 + k), acc[0]);
        acc[1] = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(m, x1 + k), acc[1]);
        acc[2] = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(m, x2 + k), acc[2]);
        acc[3] = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(m, x3 + k), acc[3]);
    }
}

/* one token: dot4's first accumulator alone (the same sums, a quarter of the work) */
static inline void dot1(const float *w, int64_t len, const float *x0, __m512 *acc)
{
    int64_t k = 0;
    for (; k + 16 <= len; k += 16) *acc = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x0 + k), *acc);
    if (k < len) {
        const __mmask16 m = (__mmask16)((1u << (len - k)) - 1);
        *acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + k), _mm512_maskz_loadu_ps(m, x0 + k), *acc);
    }
}

static void rows512(const gg_codec *c, const uint8_t *W, int64_t r0, int64_t r1, int64_t cols, const float *X, int64_t n,
                    float *Y, int64_t ldy)
{
    const deq_fn deq = fast_dequant(c);
    const size_t rb = gg_row_bytes(c, cols);
    float chunk[GG_CHUNK] __attribute__((aligned(64)));
    /* more than 4 tokens: decode the row once (same sums as decoding per pass) */
    float *full = n > 4 ? aligned_alloc(64, (size_t)((cols + 15) / 16 * 16) * sizeof(float)) : NULL;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = W + (size_t)r * rb;
        if (full) deq(row, full, cols / c->block);   /* whole rows: a row-meta type's own dequant */
        for (int64_t i0 = 0; i0 < n; i0 += 4) {
            /* missing tokens of the last pass repeat token i0; their sums are dropped */
            const float *x[4];
            for (int t = 0; t < 4; t++) x[t] = X + (i0 + t < n ? i0 + t : i0) * cols;
            __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
            for (int64_t c0 = 0; c0 < cols; c0 += GG_CHUNK) {
                const int64_t len = cols - c0 < GG_CHUNK ? cols - c0 : GG_CHUNK;
                const float *w = full ? full + c0 : chunk;
                if (!full && c->row_meta) gg_dequant_blocks(c, row, c0 / c->block, chunk, len / c->block);
                else if (!full) deq(row + (size_t)(c0 / c->block) * (size_t)c->bytes, chunk, len / c->block);
                if (n - i0 == 1) dot1(w, len, x[0] + c0, &acc[0]);
                else dot4(w, len, x[0] + c0, x[1] + c0, x[2] + c0, x[3] + c0, acc);
            }
            for (int t = 0; t < 4 && i0 + t < n; t++) Y[(i0 + t) * ldy + r] = _mm512_reduce_add_ps(acc[t]);
        }
    }
    free(full);
}

const gg_gemm_variant gg_gemm_avx512 = {"avx512", rows512};
