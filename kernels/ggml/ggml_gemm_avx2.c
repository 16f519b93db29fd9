/* AVX2 matmul over ggml types (built with -mavx2 -mfma -mf16c; dispatch.c's cpuid check comes
 * first): ggml_gemm_avx512.c with 8 lanes, plus TQ1_0 and TQ2_0. Hot types decoded with the scalar
 * code's float operations (bit-identical to moeq_ggml_dequant_row), float32 FMA dots, four tokens a pass. */
#include "kernels/ggml/ggml_gemm.h"

#include <immintrin.h>
#include <stdlib.h>

static inline __m256i u8x8(const uint8_t *p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)); }

static void dq_q8_0(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += 34, y += 32) {
        const __m256 d = _mm256_set1_ps(gg_h2f(b));
        for (int k = 0; k < 32; k += 8) {
            __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b + 2 + k))));
            _mm256_storeu_ps(y + k, _mm256_mul_ps(v, d));
        }
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
    const __m256i m4 = _mm256_set1_epi32(0xf), one = _mm256_set1_epi32(1);
    for (int64_t i = 0; i < nb; i++, b += five ? 176 : 144, y += 256) {
        const float d = gg_h2f(b), min = gg_h2f(b + 2);
        const uint8_t *qh = b + 16, *qs = b + (five ? 48 : 16);
        for (int j = 0; j < 8; j++) {
            int sc, m;
            scale_min_k4(j, b + 4, &sc, &m);
            const __m256 d1 = _mm256_set1_ps(d * sc), m1 = _mm256_set1_ps(min * m);
            for (int h = 0; h < 4; h++) {
                __m256i v = u8x8(qs + 32 * (j / 2) + 8 * h);
                v = _mm256_and_si256((j & 1) ? _mm256_srli_epi32(v, 4) : v, m4);
                if (five) {
                    __m256i hb = _mm256_and_si256(_mm256_srli_epi32(u8x8(qh + 8 * h), j), one);
                    v = _mm256_add_epi32(v, _mm256_slli_epi32(hb, 4));
                }
                _mm256_storeu_ps(y + 32 * j + 8 * h, _mm256_sub_ps(_mm256_mul_ps(d1, _mm256_cvtepi32_ps(v)), m1));
            }
        }
    }
}

static void dq_q6_k(const uint8_t *b, float *y, int64_t nb)
{
    const __m256i m4 = _mm256_set1_epi32(0xf), m2 = _mm256_set1_epi32(3), c32 = _mm256_set1_epi32(32);
    for (int64_t i = 0; i < nb; i++, b += 210, y += 256) {
        const float d = gg_h2f(b + 208);
        for (int e = 0; e < 256; e += 8) {
            const int h = e / 128, g = (e % 128) / 32, l = e % 32;
            __m256i lo = u8x8(b + 64 * h + l + 32 * (g & 1));
            if (g >= 2) lo = _mm256_srli_epi32(lo, 4);
            lo = _mm256_and_si256(lo, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi32(u8x8(b + 128 + 32 * h + l), 2 * g), m2);
            __m256i q = _mm256_sub_epi32(_mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)), c32);
            const __m256 a = _mm256_set1_ps(d * (int8_t)b[192 + e / 16]);
            _mm256_storeu_ps(y + e, _mm256_mul_ps(a, _mm256_cvtepi32_ps(q)));
        }
    }
}

/* 16-entry table lookup of 4-bit indices: two 8-entry permutes and a blend on bit 3 */
static inline __m256 lut16(__m256i idx, __m256 t_lo, __m256 t_hi)
{
    __m256 a = _mm256_permutevar8x32_ps(t_lo, idx), b = _mm256_permutevar8x32_ps(t_hi, idx);
    __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));   /* bit 3 -> sign bit */
    return _mm256_blendv_ps(a, b, sel);
}

static void dq_iq4_xs(const uint8_t *b, float *y, int64_t nb)
{
    const __m256 t_lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)gg_iq4nl_values)));
    const __m256 t_hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(gg_iq4nl_values + 8))));
    const __m256i m4 = _mm256_set1_epi32(0xf);
    for (int64_t i = 0; i < nb; i++, b += 136) {
        const float d = gg_h2f(b);
        const uint16_t sh = gg_rd16(b + 2);
        for (int ib = 0; ib < 8; ib++, y += 32) {
            const int ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xf) | (((sh >> (2 * ib)) & 3) << 4);
            const __m256 dl = _mm256_set1_ps(d * (ls - 32));
            for (int h = 0; h < 2; h++) {
                __m256i v = u8x8(b + 8 + 16 * ib + 8 * h);
                _mm256_storeu_ps(y + 8 * h, _mm256_mul_ps(dl, lut16(_mm256_and_si256(v, m4), t_lo, t_hi)));
                _mm256_storeu_ps(y + 16 + 8 * h, _mm256_mul_ps(dl, lut16(_mm256_srli_epi32(v, 4), t_lo, t_hi)));
            }
        }
    }
}

/* IQ2_K: the 8-entry grid as one float vector, index q + 4·bit of the sub-block's extra bit,
 * times d·(ls − 8) (the scalar code's one multiply) */
static void dq_iq2_k(const uint8_t *b, float *y, int64_t nb)
{
    const __m256 tbl = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)gg_iq2nl_values)));
    const __m256i m2 = _mm256_set1_epi32(3);
    for (int64_t i = 0; i < nb; i++, b += 76) {
        const float d = gg_h2f(b);
        const unsigned extra = gg_rd16(b + 2);
        for (int ib = 0; ib < 16; ib++, y += 16) {
            const __m256 dl = _mm256_set1_ps(d * (((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xf) - 8));
            const __m128i sh = _mm_cvtsi32_si128(2 * ((ib / 2) % 4));
            const __m256i off = _mm256_set1_epi32((int)(extra >> ib & 1) * 4);
            const uint8_t *q = b + 12 + 32 * (ib / 8) + 16 * (ib % 2);
            for (int h = 0; h < 2; h++) {
                __m256i v = _mm256_add_epi32(_mm256_and_si256(_mm256_srl_epi32(u8x8(q + 8 * h), sh), m2), off);
                _mm256_storeu_ps(y + 8 * h, _mm256_mul_ps(dl, _mm256_permutevar8x32_ps(tbl, v)));
            }
        }
    }
}

/* MXFP4: e2m1 table lookup times the block's power-of-two half scale (one multiply, as the scalar code) */
static void dq_mxfp4(const uint8_t *b, float *y, int64_t nb)
{
    const __m256 t_lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)gg_mxfp4_values)));
    const __m256 t_hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(gg_mxfp4_values + 8))));
    const __m256i m4 = _mm256_set1_epi32(0xf);
    for (int64_t i = 0; i < nb; i++, b += 17, y += 32) {
        const __m256 d = _mm256_set1_ps(gg_e8m0_half(b[0]));
        for (int h = 0; h < 2; h++) {
            __m256i v = u8x8(b + 1 + 8 * h);
            _mm256_storeu_ps(y + 8 * h, _mm256_mul_ps(lut16(_mm256_and_si256(v, m4), t_lo, t_hi), d));
            _mm256_storeu_ps(y + 16 + 8 * h, _mm256_mul_ps(lut16(_mm256_srli_epi32(v, 4), t_lo, t_hi), d));
        }
    }
}

/* TQ2_0: 2-bit codes q, (q − 1)·d as the scalar code */
static void dq_tq2_0(const uint8_t *b, float *y, int64_t nb)
{
    const __m256i m2 = _mm256_set1_epi32(3), one = _mm256_set1_epi32(1);
    for (int64_t i = 0; i < nb; i++, b += 66) {
        const __m256 d = _mm256_set1_ps(gg_h2f(b + 64));
        for (int h = 0; h < 2; h++)
            for (int n = 0; n < 4; n++, y += 32)
                for (int k = 0; k < 32; k += 8) {
                    __m256i q = _mm256_and_si256(_mm256_srli_epi32(u8x8(b + 32 * h + k), 2 * n), m2);
                    _mm256_storeu_ps(y + k, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, one)), d));
                }
    }
}

/* TQ1_0: trit k of byte B is ((B·3^k mod 256)·3) >> 8, the scalar code's integer steps */
static const int tq_pow3[5] = {1, 3, 9, 27, 81};

static inline __m256 tq1_trits(const uint8_t *p, int k, __m256 d)
{
    const __m256i ff = _mm256_set1_epi32(0xff), one = _mm256_set1_epi32(1);
    __m256i v = _mm256_and_si256(_mm256_mullo_epi32(u8x8(p), _mm256_set1_epi32(tq_pow3[k])), ff);
    v = _mm256_srli_epi32(_mm256_add_epi32(v, _mm256_add_epi32(v, v)), 8);
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(v, one)), d);
}

static void dq_tq1_0(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += 54) {
        const float df = gg_h2f(b + 52);
        const __m256 d = _mm256_set1_ps(df);
        for (int k = 0; k < 5; k++, y += 32)
            for (int m = 0; m < 32; m += 8) _mm256_storeu_ps(y + m, tq1_trits(b + m, k, d));
        for (int k = 0; k < 5; k++, y += 16)
            for (int m = 0; m < 16; m += 8) _mm256_storeu_ps(y + m, tq1_trits(b + 32 + m, k, d));
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

static inline float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* lanes 0..n-1 set (0 < n < 8) */
static inline __m256i tail_mask(int64_t n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline void dot4(const float *w, int64_t len, const float *x0, const float *x1, const float *x2, const float *x3,
                        __m256 acc[4])
{
    int64_t k = 0;
    for (; k + 8 <= len; k += 8) {
        const __m256 v = _mm256_loadu_ps(w + k);
        acc[0] = _mm256_fmadd_ps(v, _mm256_loadu_ps(x0 + k), acc[0]);
        acc[1] = _mm256_fmadd_ps(v, _mm256_loadu_ps(x1 + k), acc[1]);
        acc[2] = _mm256_fmadd_ps(v, _mm256_loadu_ps(x2 + k), acc[2]);
        acc[3] = _mm256_fmadd_ps(v, _mm256_loadu_ps(x3 + k), acc[3]);
    }
    if (k < len) {   /* a float row of any length: a masked load reads nothing past it */
        const __m256i m = tail_mask(len - k);
        const __m256 v = _mm256_maskload_ps(w + k, m);
        acc[0] = _mm256_fmadd_ps(v, _mm256_maskload_ps(x0 + k, m), acc[0]);
        acc[1] = _mm256_fmadd_ps(v, _mm256_maskload_ps(x1 + k, m), acc[1]);
        acc[2] = _mm256_fmadd_ps(v, _mm256_maskload_ps(x2 + k, m), acc[2]);
        acc[3] = _mm256_fmadd_ps(v, _mm256_maskload_ps(x3 + k, m), acc[3]);
    }
}

/* one token: dot4's first accumulator alone (the same sums, a quarter of the work) */
static inline void dot1(const float *w, int64_t len, const float *x0, __m256 *acc)
{
    int64_t k = 0;
    for (; k + 8 <= len; k += 8) *acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x0 + k), *acc);
    if (k < len) {
        const __m256i m = tail_mask(len - k);
        *acc = _mm256_fmadd_ps(_mm256_maskload_ps(w + k, m), _mm256_maskload_ps(x0 + k, m), *acc);
    }
}

static void rows256(const gg_codec *c, const uint8_t *W, int64_t r0, int64_t r1, int64_t cols, const float *X, int64_t n,
                    float *Y, int64_t ldy)
{
    const deq_fn deq = fast_dequant(c);
    const size_t rb = gg_row_bytes(c, cols);
    float chunk[GG_CHUNK] __attribute__((aligned(32)));
    float *full = n > 4 ? aligned_alloc(64, (size_t)((cols + 15) / 16 * 16) * sizeof(float)) : NULL;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = W + (size_t)r * rb;
        if (full) deq(row, full, cols / c->block);   /* whole rows: a row-meta type's own dequant */
        for (int64_t i0 = 0; i0 < n; i0 += 4) {
            const float *x[4];
            for (int t = 0; t < 4; t++) x[t] = X + (i0 + t < n ? i0 + t : i0) * cols;
            __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
            for (int64_t c0 = 0; c0 < cols; c0 += GG_CHUNK) {
                const int64_t len = cols - c0 < GG_CHUNK ? cols - c0 : GG_CHUNK;
                const float *w = full ? full + c0 : chunk;
                if (!full && c->row_meta) gg_dequant_blocks(c, row, c0 / c->block, chunk, len / c->block);
                else if (!full) deq(row + (size_t)(c0 / c->block) * (size_t)c->bytes, chunk, len / c->block);
                if (n - i0 == 1) dot1(w, len, x[0] + c0, &acc[0]);
                else dot4(w, len, x[0] + c0, x[1] + c0, x[2] + c0, x[3] + c0, acc);
            }
            for (int t = 0; t < 4 && i0 + t < n; t++) Y[(i0 + t) * ldy + r] = hsum(acc[t]);
        }
    }
    free(full);
}

const gg_gemm_variant gg_gemm_avx2 = {"avx2", rows256};
