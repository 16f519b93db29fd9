/* AMX Hessian accumulation (moeq_kernel_set.hsyrk of the amx set): C += Xᵀ X on the lower
 * triangle, by chunks of MOEQ_HSYRK_ROWS rows whose sums are taken in float32 by the tiles and
 * then added to C in float64; what is summed is MOEQ_HSYRK_ROWS's (include/moeq_kernels.h).
 * The order of additions inside a tile product is the hardware's (not documented), so this
 * matches kernels/ref/syrk.c's moeq_ref_hsyrk to float32 rounding, not bit for bit
 * (tests/unit/test_kernels_syrk.c bounds both against the exact sums).
 *
 * Why: dsyrk's float64 multiply-adds run at 16 per cycle, the tiles' bf16 products at 512. On a
 * Xeon with AMX the forward pass runs through the tiles and calibrate's float64 Hessians were
 * 35% of its time, half again the forward pass (docs/calibrate.md, Speed).
 *
 * Layout (scratch, parts p = h, m): B[p][J][s] = 16 row pairs of step s (32 rows) x 16 features
 * J·16.. as dwords (row 2k in the low half, 2k + 1 in the high half: the tiles' pair layout);
 * A's tiles are their 16 x 16 dword transposes (16 features x 32 rows), made per row panel of
 * two blocks into a small buffer that stays in L1 while every J of the panel reads it. Tiles:
 * C 0..3 = (I, J), (I, J+1), (I+1, J), (I+1, J+1); A parts 4, 5 (I, I+1); B parts 6, 7 (J,
 * J+1); per step hh, mh, hm: 10 tile loads for 12 products. Memory traffic bounds the speed, not
 * the products: per chunk the rows, B (the rows' size) and C's lower triangle (8 d² bytes read
 * and written once).
 *
 * Determinism: a chunk's sums are a fixed sequence of tile products whatever else is in the
 * call; rows past n are zero (x + 0 = x in float32). Callers that split rows at multiples of
 * MOEQ_HSYRK_ROWS get the bits of one call. AMX flushes denormals (below 2^-126) to zero. */
#include "kernels/x86/x86.h"
#include "kernels/x86/avx512_inl.h"
#include "kernels/x86/amx_inl.h"

#include <immintrin.h>
#include <string.h>

/* h = bf16(x), m = bf16(x - h) (rounded to nearest even; x - h is exact), as 16-bit lanes of dwords */
static inline void split2(__m512 x, __m512i *h, __m512i *m)
{
    const __m512i xh = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x));
    const __m512 r = _mm512_sub_ps(x, _mm512_castsi512_ps(_mm512_slli_epi32(xh, 16)));
    *h = xh;
    *m = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(r));
}

/* the tile of part p, feature block j, step s in a layout of nb blocks and ns steps */
static inline size_t toff(int64_t p, int64_t j, int64_t s, int64_t nb, int64_t ns)
{
    return ((size_t)(p * nb + j) * (size_t)ns + (size_t)s) * 256;
}

/* Rows X[0, n) into the held chunk's rows row0.. (MOEQ_HSYRK_HELD's layout; held 64-byte
 * aligned). A row pair of the call (an even row and the next) is stored as whole dwords; a row
 * alone as its 16-bit halves, by masked stores that leave its partner row's halves as they are. */
void moeq_amx_hsyrk_pack(int64_t d, const float *X, int64_t n, int64_t row0, void *held)
{
    const int64_t nb = (d + 31) / 32 * 2, ns = MOEQ_HSYRK_ROWS / 32;
    uint32_t *H = held;
    for (int64_t t = 0; t < n;) {
        const int64_t r = row0 + t, s = r / 32, k = (r % 32) / 2, hi = r & 1, pair = !hi && t + 1 < n;
        const float *x = X + t * d;
        for (int64_t J = 0; J < nb; J++) {
            const int64_t f0 = 16 * J, nf = d - f0 < 0 ? 0 : d - f0 < 16 ? d - f0 : 16;
            const __mmask16 fm = (__mmask16)((1u << nf) - 1u);
            uint32_t *bh = H + toff(0, J, s, nb, ns) + 16 * (size_t)k, *bm = H + toff(1, J, s, nb, ns) + 16 * (size_t)k;
            __m512i h, m;
            split2(_mm512_maskz_loadu_ps(fm, x + f0), &h, &m);
            if (pair) {
                __m512i h2, m2;
                split2(_mm512_maskz_loadu_ps(fm, x + d + f0), &h2, &m2);
                /* past the caches: the chunk is read again only when it fills, windows later */
                _mm512_stream_si512((void *)bh, _mm512_or_si512(h, _mm512_slli_epi32(h2, 16)));
                _mm512_stream_si512((void *)bm, _mm512_or_si512(m, _mm512_slli_epi32(m2, 16)));
            } else {
                const __mmask32 half = hi ? 0xAAAAAAAAu : 0x55555555u;
                if (hi) {
                    h = _mm512_slli_epi32(h, 16);
                    m = _mm512_slli_epi32(m, 16);
                }
                _mm512_mask_storeu_epi16(bh, half, h);
                _mm512_mask_storeu_epi16(bm, half, m);
            }
        }
        t += pair ? 2 : 1;
    }
    _mm_sfence();   /* the streamed stores before any later read, on this thread or another */
}

/* A's tiles of row blocks I, I + 1 (both parts, every step) as the transposes of B's, into a
 * panel laid out as B with nb = 2: 32 KiB at most, read by every J of the row panel */
static void panel(const uint32_t *B, int64_t I, int64_t nb, int64_t ns, int64_t NS, uint32_t *P)
{
    for (int64_t p = 0; p < 2; p++)
        for (int64_t b = 0; b < 2; b++)
            for (int64_t s = 0; s < ns; s++) {
                const uint32_t *src = B + toff(p, I + b, s, nb, NS);
                uint32_t *dst = P + toff(p, b, s, 2, NS);
                __m512i r[16], o[16];
                for (int k = 0; k < 16; k++) r[k] = _mm512_loadu_si512(src + 16 * k);
                transpose16(r, o);
                for (int i = 0; i < 16; i++) _mm512_store_si512(dst + 16 * i, o[i]);
            }
}

/* C rows 16I.., columns 16J.. += t (a float32 16 x 16 tile), the lower triangle only */
static inline void flush(double *C, int64_t d, int64_t I, int64_t J, const float *t)
{
    const int64_t r0 = 16 * I, c0 = 16 * J, nr = d - r0 < 16 ? d - r0 : 16, nc = d - c0 < 16 ? d - c0 : 16;
    if (nr <= 0 || nc <= 0 || J > I) return;
    for (int64_t i = 0; i < nr; i++) {
        int64_t lim = I == J ? i + 1 : nc;   /* diagonal block: columns j <= i */
        if (lim > nc) lim = nc;
        const __mmask16 m = (__mmask16)((1u << lim) - 1u);
        const __m512 a = _mm512_load_ps(t + 16 * i);
        double *c = C + (r0 + i) * d + c0;
        const __mmask8 m0 = (__mmask8)(m & 0xFF), m1 = (__mmask8)(m >> 8);
        _mm512_mask_storeu_pd(c, m0, _mm512_add_pd(_mm512_maskz_loadu_pd(m0, c),
                                                  _mm512_cvtps_pd(_mm512_castps512_ps256(a))));
        if (m1)
            _mm512_mask_storeu_pd(c + 8, m1, _mm512_add_pd(_mm512_maskz_loadu_pd(m1, c + 8),
                                                          _mm512_cvtps_pd(_mm512_extractf32x8_ps(a, 1))));
    }
}

#define TL(t, base, p, blk, s, nbb) _tile_loadd(t, (base) + toff(p, blk, s, nbb, NS), 64)
#define DP4()                            \
    do {                                 \
        _tile_dpbf16ps(0, 4, 6);         \
        _tile_dpbf16ps(1, 4, 7);         \
        _tile_dpbf16ps(2, 5, 6);         \
        _tile_dpbf16ps(3, 5, 7);         \
    } while (0)

void moeq_amx_hsyrk_sum(int64_t d, int64_t nrows, const void *held, double *C, void *scratch)
{
    if (d <= 0 || nrows <= 0) return;
    const int64_t nb = (d + 31) / 32 * 2, ns = (nrows + 31) / 32;   /* feature blocks, in pairs */
    const int64_t NS = MOEQ_HSYRK_ROWS / 32;
    const uint32_t *B = held;
    uint32_t *P = (uint32_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);   /* A's row panel */
    float *t = (float *)(P + (size_t)(4 * NS) * 256);                         /* four 16 x 16 tiles */
    moeq_amx_tiles_on();
    for (int64_t I = 0; I < nb; I += 2) {   /* row panels: C's rows are written in order */
        panel(B, I, nb, ns, NS, P);
        for (int64_t J = 0; J <= I; J += 2) {
            if (J + 2 <= I) {   /* the next group's C lines: 32 rows d apart, more streams than the
                                 * prefetchers follow (1-1.5% of a calibrate) */
                const double *cn = C + 16 * I * d + 16 * (J + 2);
                for (int64_t i = 0; i < 32 && 16 * I + i < d; i++)
                    for (int c = 0; c < 4; c++) _mm_prefetch((const char *)(cn + i * d + 8 * c), _MM_HINT_T0);
            }
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int64_t s = 0; s < ns; s++) {
                TL(6, B, 0, J, s, nb);
                TL(7, B, 0, J + 1, s, nb);
                TL(4, P, 0, 0, s, 2);
                TL(5, P, 0, 1, s, 2);
                DP4();   /* hh */
                TL(4, P, 1, 0, s, 2);
                TL(5, P, 1, 1, s, 2);
                DP4();   /* mh */
                TL(6, B, 1, J, s, nb);
                TL(7, B, 1, J + 1, s, nb);
                TL(4, P, 0, 0, s, 2);
                TL(5, P, 0, 1, s, 2);
                DP4();   /* hm */
            }
            _tile_stored(0, t, 64);
            _tile_stored(1, t + 256, 64);
            _tile_stored(2, t + 512, 64);
            _tile_stored(3, t + 768, 64);
            flush(C, d, I, J, t);
            flush(C, d, I, J + 1, t + 256);
            flush(C, d, I + 1, J, t + 512);
            flush(C, d, I + 1, J + 1, t + 768);
        }
    }
    _tile_release();
}
