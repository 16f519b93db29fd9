/* AVX512-BF16 GEMM of bf16 weights as stored: Y = X Wᵀ with `vdpbf16ps` (built with -mavx512bf16
 * on top of AVX-512; called only after cpuid). vdpbf16ps multiplies pairs of bf16 and adds both
 * products to a float32 lane, 32 multiply-adds per instruction: twice the float32 FMA's.
 *
 * Orientation (that of the vnni int8 GEMM): a lane is a token, so the weights need no packing.
 * The activations of a call are converted once into pairs (x[2j], x[2j+1]) and transposed to
 * [token vector][pair j][16 tokens]; a register tile of 8 rows x 3 token vectors (48 tokens, 24
 * accumulators) takes, per pair j, 3 activation loads, 8 broadcasts of the 32-bit weight pair
 * (w[r][2j], w[r][2j+1]) read straight from the row, and 24 vdpbf16ps. Rows past r1 repeat a
 * valid row, tokens past n are zero lanes; their outputs are dropped.
 *
 * Activations, two variants (docs/KERNELS.md "Float weights"):
 *  - bf16:   x rounded to bf16 (round to nearest even): one vdpbf16ps per pair; x's rounding
 *            (2^-9 relative) is the error it adds.
 *  - bf16x2: x = hi + lo, both bf16 (lo the rounding of x - hi, exact in float32): two
 *            vdpbf16ps per pair into the same chain, x kept to 2^-18 relative, the speed of a
 *            float32 FMA kernel without widening or packing the weights.
 * Determinism: an output (row, token) is one lane's chain over the pairs in k order, the same
 * operations wherever the row and the token fall, so results ignore the row and token split
 * (and threads). bf16 takes every call through its tiles, so a token's results do not depend on
 * how many share the call either (task scoring packs sequences; test_task). bf16x2's calls of
 * fewer than 16 tokens, f16 weights and f32 weights that are not all bf16 values take the float
 * kernels (moeq_avx512_wgemm, the bits of moeq_avx2_wgemm: its n >= 16 / n < 16 rule is kept). */
#include "kernels/x86/x86.h"
#include "kernels/x86/qmat_x86.h"
#include "kernels/x86/avx512_inl.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#define RT 8    /* weight rows per register tile */
#define TV 3    /* token vectors (16 tokens each) per register tile */
#define MIN_TOKENS 16

/* 16 floats of x from column c (masked at the row's end) */
static inline __m512 xload(const float *x, int64_t c, int64_t K)
{
    if (c + 16 <= K) return _mm512_loadu_ps(x + c);
    if (c >= K) return _mm512_setzero_ps();
    return _mm512_maskz_loadu_ps((__mmask16)((1u << (K - c)) - 1), x + c);
}

/* Activations of n tokens as bf16 pairs, [ntv][K2s][16] 32-bit lanes (K2 = ceil(K / 2) pairs, an
 * odd K's last pair (x[K-1], 0), pairs K2..K2s zero); tokens past n are zeros. split: also the
 * low parts (x - hi rounded), stored after the high parts (lo = xp + ntv * K2s * 16). Token
 * vectors [v0, v1) only. K2s is K2 here, K2 rounded up to 16 for AMX's tiles (wmat_amx.c). */
void moeq_bf16_pack_x(const float *X, int64_t n, int64_t ldx, int64_t K, int64_t K2s, int split, int64_t v0, int64_t v1,
                      uint32_t *xp)
{
    const int64_t ntv = (n + 15) / 16;
    uint32_t *lo = xp + ntv * K2s * 16;
    for (int64_t v = v0; v < v1; v++)
        for (int64_t j0 = 0; j0 < K2s; j0 += 16) {
            __m512i h[16], l[16];
            for (int t = 0; t < 16; t++) {
                const int64_t i = v * 16 + t;
                if (i >= n) {
                    h[t] = l[t] = _mm512_setzero_si512();
                    continue;
                }
                const float *x = X + i * ldx;
                const __m512 a = xload(x, 2 * j0, K), b = xload(x, 2 * j0 + 16, K);
                const __m512bh hb = _mm512_cvtne2ps_pbh(b, a);   /* x[2 j0 .. 2 j0 + 32) in order */
                h[t] = (__m512i)hb;
                if (split) {
                    /* hi widened back (bf16 is the top half of a float), in column order */
                    const __m512 ha = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(h[t])), 16));
                    const __m512 hb2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(h[t], 1)), 16));
                    l[t] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(b, hb2), _mm512_sub_ps(a, ha));
                }
            }
            const int64_t nj = K2s - j0 < 16 ? K2s - j0 : 16;
            __m512i o[16];
            transpose16(h, o);
            for (int64_t j = 0; j < nj; j++) _mm512_storeu_si512(xp + (v * K2s + j0 + j) * 16, o[j]);
            if (split) {
                transpose16(l, o);
                for (int64_t j = 0; j < nj; j++) _mm512_storeu_si512(lo + (v * K2s + j0 + j) * 16, o[j]);
            }
        }
}

/* Outputs of token vector v of a tile: acc[r][v] lane i is (row r, token 16 v + i). Two 8 x 8
 * transposes in the 256-bit halves put token i's 8 rows in one half; stored to Y[i][0..R) for
 * i < ni (R <= 8 rows kept). */
static inline __attribute__((always_inline)) void store8x16(__m512 acc[RT][TV], int v, float *Y, int64_t ldy, int R,
                                                            int64_t ni)
{
    __m512 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm512_unpacklo_ps(acc[2 * i][v], acc[2 * i + 1][v]);
        t[2 * i + 1] = _mm512_unpackhi_ps(acc[2 * i][v], acc[2 * i + 1][v]);
    }
    for (int i = 0; i < 2; i++) {
        u[4 * i + 0] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
        u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
    /* as in AVX2's transpose8, per 256-bit half: u[i] (i < 4) holds rows 0..3 of tokens i, i + 4
     * (blocks 0, 1) and i + 8, i + 12 (blocks 2, 3); u[i + 4] rows 4..7 of the same tokens */
    const __mmask8 m = (__mmask8)((1u << R) - 1);
    for (int i = 0; i < 4; i++) {
        const __m512 lo = _mm512_shuffle_f32x4(u[i], u[i + 4], 0x88), hi = _mm512_shuffle_f32x4(u[i], u[i + 4], 0xdd);
        /* lo = [u_i.0, u_i.2, u_i+4.0, u_i+4.2]: tokens i, i + 8 (rows 0..3), then rows 4..7 */
        const __m512 a = _mm512_shuffle_f32x4(lo, lo, 0xd8), b = _mm512_shuffle_f32x4(hi, hi, 0xd8);
        /* a = [u_i.0, u_i+4.0, u_i.2, u_i+4.2]: token i rows 0..7, token i + 8 rows 0..7;
         * b the same for tokens i + 4, i + 12 */
        const int64_t ti[4] = {i, i + 8, i + 4, i + 12};
        const __m256 hv[4] = {_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1), _mm512_castps512_ps256(b),
                              _mm512_extractf32x8_ps(b, 1)};
        for (int k = 0; k < 4; k++)
            if (ti[k] < ni) {
                if (R == RT) _mm256_storeu_ps(Y + ti[k] * ldy, hv[k]);
                else _mm256_mask_storeu_ps(Y + ti[k] * ldy, m, hv[k]);
            }
    }
}

/* T token vectors (<= TV, constant after inlining) x RT rows over K2 pairs. w: RT row pointers;
 * xh (and xl when split): the tile's first token vector, vectors vs lanes apart; odd: the last
 * pair holds one column. Outputs to Y (row 0 of the tile, token 0), R rows and ni tokens kept. */
static inline __attribute__((always_inline)) void tile(int T, int split, const uint16_t *const *w, const uint32_t *xh,
                                                       const uint32_t *xl, int64_t K2, int64_t vs, int odd, float *Y,
                                                       int64_t ldy, int R, int64_t ni)
{
    __m512 acc[RT][TV];
#pragma GCC unroll 8
    for (int r = 0; r < RT; r++)
#pragma GCC unroll 3
        for (int v = 0; v < T; v++) acc[r][v] = _mm512_setzero_ps();
    const int64_t full = odd ? K2 - 1 : K2;
    for (int64_t j = 0; j <= full; j++) {
        if (j == full && !odd) break;
        __m512bh xv[TV], lv[TV];
#pragma GCC unroll 3
        for (int v = 0; v < T; v++) {
            xv[v] = (__m512bh)_mm512_loadu_si512(xh + v * vs + j * 16);
            if (split) lv[v] = (__m512bh)_mm512_loadu_si512(xl + v * vs + j * 16);
        }
#pragma GCC unroll 8
        for (int r = 0; r < RT; r++) {
            uint32_t p;
            if (j < full) memcpy(&p, w[r] + 2 * j, 4);   /* (w[2j], w[2j+1]) as one 32-bit lane */
            else p = w[r][2 * j];                         /* odd K: (w[K-1], 0) */
            const __m512bh wb = (__m512bh)_mm512_set1_epi32((int)p);
#pragma GCC unroll 3
            for (int v = 0; v < T; v++) {
                acc[r][v] = _mm512_dpbf16_ps(acc[r][v], wb, xv[v]);
                if (split) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], wb, lv[v]);
            }
        }
    }
#pragma GCC unroll 3
    for (int v = 0; v < T; v++) store8x16(acc, v, Y + v * 16 * ldy, ldy, R, ni - v * 16);
}

typedef void (*tile_fn)(const uint16_t *const *, const uint32_t *, const uint32_t *, int64_t, int64_t, int, float *,
                        int64_t, int, int64_t);
#define TILE(S, T) \
    static void tile_##S##_##T(const uint16_t *const *w, const uint32_t *xh, const uint32_t *xl, int64_t K2, int64_t vs, \
                               int odd, float *Y, int64_t ldy, int R, int64_t ni) \
    { tile(T, S, w, xh, xl, K2, vs, odd, Y, ldy, R, ni); }
TILE(0, 1) TILE(0, 2) TILE(0, 3) TILE(1, 1) TILE(1, 2) TILE(1, 3)
static const tile_fn tiles[2][TV] = { { tile_0_1, tile_0_2, tile_0_3 }, { tile_1_1, tile_1_2, tile_1_3 } };

/* Rows [r0, r1) of a float32 matrix as bf16 when every value is one (low 16 bits zero), else
 * NULL (also when out of memory). The scan stops at the first other value. */
uint16_t *moeq_bf16_rows(const moeq_wmat *w, int64_t r0, int64_t r1)
{
    const int64_t K = w->cols, ld = moeq_wmat_ld(w);
    const __m512i lowm = _mm512_set1_epi32(0xffff);
    for (int64_t r = r0; r < r1; r++) {
        const uint32_t *row = (const uint32_t *)w->data + (size_t)r * (size_t)ld;
        int64_t c = 0;
        for (; c + 16 <= K; c += 16)
            if (_mm512_test_epi32_mask(_mm512_loadu_si512(row + c), lowm)) return NULL;
        for (; c < K; c++)
            if (row[c] & 0xffff) return NULL;
    }
    uint16_t *b = malloc((size_t)((r1 - r0) * K) * 2 + 64);
    if (!b) return NULL;
    for (int64_t r = r0; r < r1; r++) {
        const uint32_t *row = (const uint32_t *)w->data + (size_t)r * (size_t)ld;
        for (int64_t c = 0; c < K; c++) b[(r - r0) * K + c] = (uint16_t)(row[c] >> 16);
    }
    return b;
}

static size_t xbytes(int64_t n, int64_t K, int split)
{
    size_t b = (size_t)((n + 15) / 16 * ((K + 1) / 2) * 16) * 4 * (split ? 2 : 1);
    return (b + 63) / 64 * 64;
}

/* rows [r0, r1) of bf16 w times the prepared activations xp of n tokens */
static void mul_prepared(const moeq_wmat *w, const uint32_t *xp, int64_t n, int64_t r0, int64_t r1, float *Y, int64_t ldy,
                         int split)
{
    const int64_t K = w->cols, K2 = (K + 1) / 2, ntv = (n + 15) / 16, vs = K2 * 16;
    const uint32_t *xl = xp + ntv * vs;
    const uint16_t *base = w->data;
    const int64_t ld = moeq_wmat_ld(w);
    for (int64_t r = r0; r < r1; r += RT) {
        const int R = r1 - r < RT ? (int)(r1 - r) : RT;
        const uint16_t *rows[RT];
        for (int j = 0; j < RT; j++) rows[j] = base + (size_t)(r + (j < R ? j : 0)) * (size_t)ld;
        for (int64_t v0 = 0; v0 < ntv; v0 += TV) {
            const int T = ntv - v0 < TV ? (int)(ntv - v0) : TV;
            const int64_t i0 = v0 * 16, ni = n - i0 < T * 16 ? n - i0 : T * 16;
            tiles[split][T - 1](rows, xp + v0 * vs, xl + v0 * vs, K2, vs, (int)(K & 1), Y + i0 * ldy + (r - r0), ldy, R, ni);
        }
    }
}

static void wgemm_bf16(const moeq_wmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1, float *Y,
                       int64_t ldy, int split, const void *prepared)
{
    if (n <= 0 || r1 <= r0) return;
    if ((split && n < MIN_TOKENS) || w->type == MOEQ_W_F16) {
        moeq_avx512_wgemm(w, X, n, ldx, r0, r1, Y, ldy);
        return;
    }
    if (w->type == MOEQ_W_F32) {
        /* a float32 matrix of bf16 values (a widened bf16 matrix: overrides) takes this path
         * too, so a matrix gives the same bits in either storage; any other takes AVX2's */
        uint16_t *b = moeq_bf16_rows(w, r0, r1);
        if (!b) {
            moeq_avx512_wgemm(w, X, n, ldx, r0, r1, Y, ldy);
            return;
        }
        const moeq_wmat wb = {MOEQ_W_BF16, r1 - r0, w->cols, b, 0};
        wgemm_bf16(&wb, X, n, ldx, 0, r1 - r0, Y, ldy, split, prepared);
        free(b);
        return;
    }
    if (prepared) {
        mul_prepared(w, prepared, n, r0, r1, Y, ldy, split);
        return;
    }
    const int64_t K = w->cols;
    uint32_t *xp = aligned_alloc(64, xbytes(n, K, split));
    if (!xp) return;
    moeq_bf16_pack_x(X, n, ldx, K, (K + 1) / 2, split, 0, (n + 15) / 16, xp);
    mul_prepared(w, xp, n, r0, r1, Y, ldy, split);
    free(xp);
}

void moeq_avx512bf16_wgemm(const moeq_wmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                           float *Y, int64_t ldy)
{
    wgemm_bf16(w, X, n, ldx, r0, r1, Y, ldy, 0, NULL);
}

void moeq_avx512bf16x2_wgemm(const moeq_wmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                             float *Y, int64_t ldy)
{
    wgemm_bf16(w, X, n, ldx, r0, r1, Y, ldy, 1, NULL);
}

/* Prepared activations (moeq_kernel_set.wx_*): the same packing, done once for several calls. */
static size_t wx_bytes_1(int64_t n, int64_t K) { return n < 1 ? 0 : xbytes(n, K, 0); }
static size_t wx_bytes_2(int64_t n, int64_t K) { return n < MIN_TOKENS ? 0 : xbytes(n, K, 1); }
static void wx_prep_1(const float *X, int64_t n, int64_t ldx, int64_t K, int64_t v0, int64_t v1, void *buf)
{
    moeq_bf16_pack_x(X, n, ldx, K, (K + 1) / 2, 0, v0, v1, buf);
}
static void wx_prep_2(const float *X, int64_t n, int64_t ldx, int64_t K, int64_t v0, int64_t v1, void *buf)
{
    moeq_bf16_pack_x(X, n, ldx, K, (K + 1) / 2, 1, v0, v1, buf);
}
static void wgemm_wx_1(const moeq_wmat *w, const void *buf, const float *X, int64_t n, int64_t ldx, int64_t r0,
                       int64_t r1, float *Y, int64_t ldy)
{
    wgemm_bf16(w, X, n, ldx, r0, r1, Y, ldy, 0, buf);
}
static void wgemm_wx_2(const moeq_wmat *w, const void *buf, const float *X, int64_t n, int64_t ldx, int64_t r0,
                       int64_t r1, float *Y, int64_t ldy)
{
    wgemm_bf16(w, X, n, ldx, r0, r1, Y, ldy, 1, buf);
}

/* The packed codecs as in the vnni set (int8 activations), the bf16 weights through vdpbf16ps. */
const moeq_kernel_set moeq_kernels_bf16 = { "bf16", moeq_avx2_dequant, moeq_vnni_gemv, moeq_vnni_gemm,
                                            moeq_avx512bf16_wgemm, wx_bytes_1, wx_prep_1, wgemm_wx_1,
                                            moeq_vnni_gemm_pair, moeq_avx512_swiglu, moeq_avx512_dsyrk,
                                            moeq_avx512_attend, NULL, moeq_avx512_fsyrk_pack,
                                            moeq_avx512_fsyrk_sum, "f32x256", 0 };
const moeq_kernel_set moeq_kernels_bf16x2 = { "bf16x2", moeq_avx2_dequant, moeq_vnni_gemv, moeq_vnni_gemm,
                                              moeq_avx512bf16x2_wgemm, wx_bytes_2, wx_prep_2, wgemm_wx_2,
                                              moeq_vnni_gemm_pair, moeq_avx512_swiglu, moeq_avx512_dsyrk,
                                            moeq_avx512_attend, NULL, moeq_avx512_fsyrk_pack,
                                            moeq_avx512_fsyrk_sum, "f32x256", 0 };
/* bf16x2's float weights with the packed codecs in float32 (no int8 activations: the accuracy of
 * the reference, docs/KERNELS.md), the packed gemm by dequantized tiles. */
const moeq_kernel_set moeq_kernels_bf16f = { "bf16f", moeq_avx2_dequant, moeq_avx512_gemv, moeq_avx512_gemm_tiled,
                                             moeq_avx512bf16x2_wgemm, wx_bytes_2, wx_prep_2, wgemm_wx_2,
                                             NULL, moeq_avx512_swiglu, moeq_avx512_dsyrk,
                                            moeq_avx512_attend, NULL, moeq_avx512_fsyrk_pack,
                                            moeq_avx512_fsyrk_sum, "f32x256", 1 };
