/* AVX2 + FMA GEMM of float weights as stored (F32, F16, BF16): Y = X Wᵀ with no widened copy of
 * W (built with -mavx2 -mfma -mf16c; called only after cpuid). A register tile of 2 rows x 6
 * tokens keeps 12 accumulators of 8 lanes over k (16 columns a step, in two halves of 8); the
 * weights are widened in registers, which is exact: bf16 by zero-extension and a shift, f16 by
 * vcvtph2ps, both in natural column order as f32 loads are, so bf16 weights and their float32
 * values give the same bits. Each (row, token) is
 * one chain of FMAs in k order per lane, a fixed horizontal sum and a scalar tail: the same
 * operations wherever it falls, so results ignore the row and token split (and threads).
 * Rows are taken in chunks of ~128 KB of weights (L2) and swept by every token tile; a token
 * tile's activations (4 x cols floats) stay in L1. Error: float32 sums of cols / 8 products
 * per lane, 3 adds across lanes and an FMA per tail column (cols % 16):
 * |y - y_exact| <= (cols / 8 + cols % 16 + 3) * 2^-24 * sum |w x| (docs/KERNELS.md). */
#include "kernels/x86/x86.h"
#include "kernels/x86/qmat_x86.h"

#include <immintrin.h>
#include "kernels/x86/avx2_inl.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TR 2                       /* weight rows per register tile */
#define TT 6                       /* tokens per register tile */
#define CHUNK_BYTES (128 * 1024)   /* weights swept by one token tile before the next chunk */

static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Half h (0, 1) of the 16 weights at column k of a row, widened in natural order (columns
 * k + 8h .. k + 8h + 7): bf16 by zero-extension to 32-bit lanes and a shift. Every storage type
 * gives the same lanes, so a matrix gives the same bits whether it is stored as bf16 or as its
 * widened float32 values (the forward pass relies on that for overrides). */
static inline __m256 wload(moeq_wtype type, const void *row, int64_t k, int h)
{
    if (type == MOEQ_W_BF16) {
        const __m128i raw = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + k + 8 * h));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
    }
    if (type == MOEQ_W_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + k + 8 * h)));
    return _mm256_loadu_ps((const float *)row + k + 8 * h);
}

static inline float wscalar(moeq_wtype type, const void *row, int64_t k)
{
    if (type == MOEQ_W_BF16) {
        uint32_t b = (uint32_t)((const uint16_t *)row)[k] << 16;
        float f;
        memcpy(&f, &b, 4);
        return f;
    }
    if (type == MOEQ_W_F16) return _cvtsh_ss(((const uint16_t *)row)[k]);
    return ((const float *)row)[k];
}

/* R x T outputs (R <= TR, T <= TT; constants after inlining): rows w[0..R), tokens x[0..T). */
static inline __attribute__((always_inline)) void tile(moeq_wtype type, int R, int T, const void *const *w,
                                                       const float *const *x, int64_t K, float *y, int64_t ldy)
{
    __m256 acc[TR][TT];
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
#pragma GCC unroll 6
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    const int64_t K16 = K & ~(int64_t)15;
    for (int64_t k = 0; k < K16; k += 16)
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m256 wv[TR];
#pragma GCC unroll 6
            for (int r = 0; r < R; r++) wv[r] = wload(type, w[r], k, h);
#pragma GCC unroll 6
            for (int t = 0; t < T; t++) {
                const __m256 xv = _mm256_loadu_ps(x[t] + k + 8 * h);
#pragma GCC unroll 6
                for (int r = 0; r < R; r++) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
            }
        }
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
#pragma GCC unroll 6
        for (int t = 0; t < T; t++) {
            float s = hsum8(acc[r][t]);
            for (int64_t k = K16; k < K; k++) s = fmaf(wscalar(type, w[r], k), x[t][k], s);
            y[t * ldy + r] = s;
        }
}

typedef void (*tile_fn)(const void *const *, const float *const *, int64_t, float *, int64_t);
#define TILE(TY, R, T) \
    static void tile_##TY##_##R##_##T(const void *const *w, const float *const *x, int64_t K, float *y, int64_t ldy) \
    { tile(MOEQ_W_##TY, R, T, w, x, K, y, ldy); }
#define TILES(TY) TILE(TY, 1, 1) TILE(TY, 1, 2) TILE(TY, 1, 3) TILE(TY, 1, 4) TILE(TY, 1, 5) TILE(TY, 1, 6) \
    TILE(TY, 2, 1) TILE(TY, 2, 2) TILE(TY, 2, 3) TILE(TY, 2, 4) TILE(TY, 2, 5) TILE(TY, 2, 6)
TILES(F32)
TILES(F16)
TILES(BF16)
#define ROW(TY) { tile_##TY##_1_1, tile_##TY##_1_2, tile_##TY##_1_3, tile_##TY##_1_4, tile_##TY##_1_5, tile_##TY##_1_6 }, \
                { tile_##TY##_2_1, tile_##TY##_2_2, tile_##TY##_2_3, tile_##TY##_2_4, tile_##TY##_2_5, tile_##TY##_2_6 }
static const tile_fn tiles[3][TR][TT] = { { ROW(F32) }, { ROW(F16) }, { ROW(BF16) } };

/* ---- batches: outer products over a packed panel (the 6 x 16 kernel of BLIS / OpenBLAS) ----
 * A panel is 16 rows of W over KC columns, widened and transposed into [KC][16] floats (16 KB,
 * L1), packed once per call and swept by every tile of 6 tokens: per column k, two panel loads,
 * six broadcasts of x[t][k] and 12 FMAs into 6 x 2 vector accumulators. Each output is one
 * chain of FMAs in k order (column blocks continue the chain through Y, exactly), so a (row,
 * token) gets the same bits wherever it falls. Rows past the matrix are packed as zeros and
 * their outputs dropped. */
#define PR MOEQ_X86_PANEL_ROWS
#define PT 6     /* tokens per register tile */
#define KC 256   /* columns per panel */

/* 8 consecutive weights of a row from column k, widened (natural order). */
static inline __m256 wload8(moeq_wtype type, const void *row, int64_t k)
{
    if (type == MOEQ_W_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + k))), 16));
    if (type == MOEQ_W_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + k)));
    return _mm256_loadu_ps((const float *)row + k);
}

/* Panel [kc][16] of rows r..r+nr, columns k0..k0+kc: 8 x 8 blocks widened and transposed in
 * registers; missing rows are zeros. */
void moeq_avx2_pack_panel(moeq_wtype type, const unsigned char *base, int64_t ld, int64_t r, int64_t nr, int64_t k0,
                          int64_t kc, float *P)
{
    const size_t es = type == MOEQ_W_F32 ? 4 : 2;
    const void *rows[PR];
    for (int64_t j = 0; j < PR; j++) rows[j] = j < nr ? base + (size_t)(r + j) * (size_t)ld * es : NULL;
    const int64_t kc8 = kc & ~(int64_t)7;
    for (int jb = 0; jb < PR; jb += 8) {
        if (jb >= nr) {
            for (int64_t k = 0; k < kc; k++) _mm256_storeu_ps(P + k * PR + jb, _mm256_setzero_ps());
            continue;
        }
        for (int64_t k = 0; k < kc8; k += 8) {
            __m256 v[8];
            for (int j = 0; j < 8; j++) {
                if (jb + j < nr) {
                    /* weights come from memory once per window: fetch 4 lines ahead of the panel */
                    _mm_prefetch((const char *)rows[jb + j] + (size_t)(k0 + k) * es + 256, _MM_HINT_T0);
                    v[j] = wload8(type, rows[jb + j], k0 + k);
                } else {
                    v[j] = _mm256_setzero_ps();
                }
            }
            transpose8(v);
            for (int j = 0; j < 8; j++) _mm256_storeu_ps(P + (k + j) * PR + jb, v[j]);
        }
        for (int64_t k = kc8; k < kc; k++)
            for (int j = 0; j < 8; j++) P[k * PR + jb + j] = jb + j < nr ? wscalar(type, rows[jb + j], k0 + k) : 0.0f;
    }
}

/* T tokens (<= PT, constant after inlining) x 16 rows over kc columns; first: start the chains
 * at zero, else continue them from Y. nr: rows of the panel kept (<= 16). */
static inline __attribute__((always_inline)) void otile(int T, const float *P, const float *const *x, int64_t kc,
                                                        int first, float *y, int64_t ldy, int nr)
{
    __m256 acc[PT][2];
    float tmp[PR];
#pragma GCC unroll 6
    for (int t = 0; t < T; t++) {
        if (first) {
            acc[t][0] = acc[t][1] = _mm256_setzero_ps();
        } else if (nr == PR) {
            acc[t][0] = _mm256_loadu_ps(y + t * ldy);
            acc[t][1] = _mm256_loadu_ps(y + t * ldy + 8);
        } else {
            memset(tmp, 0, sizeof tmp);
            memcpy(tmp, y + t * ldy, (size_t)nr * sizeof(float));
            acc[t][0] = _mm256_loadu_ps(tmp);
            acc[t][1] = _mm256_loadu_ps(tmp + 8);
        }
    }
    for (int64_t k = 0; k < kc; k++) {
        const __m256 w0 = _mm256_loadu_ps(P + k * PR), w1 = _mm256_loadu_ps(P + k * PR + 8);
#pragma GCC unroll 6
        for (int t = 0; t < T; t++) {
            const __m256 xb = _mm256_broadcast_ss(x[t] + k);
            acc[t][0] = _mm256_fmadd_ps(w0, xb, acc[t][0]);
            acc[t][1] = _mm256_fmadd_ps(w1, xb, acc[t][1]);
        }
    }
#pragma GCC unroll 6
    for (int t = 0; t < T; t++) {
        if (nr == PR) {
            _mm256_storeu_ps(y + t * ldy, acc[t][0]);
            _mm256_storeu_ps(y + t * ldy + 8, acc[t][1]);
        } else {
            _mm256_storeu_ps(tmp, acc[t][0]);
            _mm256_storeu_ps(tmp + 8, acc[t][1]);
            memcpy(y + t * ldy, tmp, (size_t)nr * sizeof(float));
        }
    }
}

#define OTILE(T) \
    static void otile_##T(const float *P, const float *const *x, int64_t kc, int first, float *y, int64_t ldy, int nr) \
    { otile(T, P, x, kc, first, y, ldy, nr); }
OTILE(1) OTILE(2) OTILE(3) OTILE(4) OTILE(5) OTILE(6)
static const moeq_x86_otile_fn otiles[PT] = { otile_1, otile_2, otile_3, otile_4, otile_5, otile_6 };

void moeq_x86_panel_loop(moeq_x86_panel_fn pack, const void *src, int64_t K, const float *X, int64_t n, int64_t ldx,
                         int64_t r0, int64_t r1, float *Y, int64_t ldy, const moeq_x86_otile_fn *ot, int pt)
{
    float *P = aligned_alloc(64, (size_t)(KC * PR) * sizeof(float));
    if (!P) return;
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
        const int64_t kc = K - k0 < KC ? K - k0 : KC;
        for (int64_t r = r0; r < r1; r += PR) {
            const int nr = r1 - r < PR ? (int)(r1 - r) : PR;
            pack(src, r, nr, k0, kc, P);
            /* ceil(n / pt) tiles of balanced sizes (32 tokens: 6 6 5 5 5 5, not 6 6 6 6 6 2, whose
             * last tile's 4 chains would wait on the FMA latency); a token's chain is the same in
             * any tile, so this changes no bits */
            const int64_t ntl = (n + pt - 1) / pt, base = n / ntl, extra = n % ntl;
            for (int64_t i = 0, tl = 0; i < n; tl++) {
                const int T = (int)(base + (tl < extra));
                const float *xr[MOEQ_X86_MAX_PT];
                for (int t = 0; t < T; t++) xr[t] = X + (i + t) * ldx + k0;
                ot[T - 1](P, xr, kc, k0 == 0, Y + i * ldy + (r - r0), ldy, nr);
                i += T;
            }
        }
    }
    free(P);
}

void moeq_avx2_pack_wpanel(const void *src, int64_t r, int64_t nr, int64_t k0, int64_t kc, float *P)
{
    const moeq_wmat *w = src;
    moeq_avx2_pack_panel(w->type, w->data, moeq_wmat_ld(w), r, nr, k0, kc, P);
}

void moeq_avx2_panel_gemm(moeq_x86_panel_fn pack, const void *src, int64_t K, const float *X, int64_t n, int64_t ldx,
                          int64_t r0, int64_t r1, float *Y, int64_t ldy)
{
    moeq_x86_panel_loop(pack, src, K, X, n, ldx, r0, r1, Y, ldy, otiles, PT);
}

/* n >= MOEQ_X86_PANEL_MIN_TOKENS: panels; fewer: the dot-product tiles below */
void moeq_avx2_wgemm(const moeq_wmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                     float *Y, int64_t ldy)
{
    if (n <= 0 || r1 <= r0) return;
    if (n >= MOEQ_X86_PANEL_MIN_TOKENS) {
        moeq_avx2_panel_gemm(moeq_avx2_pack_wpanel, w, w->cols, X, n, ldx, r0, r1, Y, ldy);
        return;
    }
    const int64_t K = w->cols;
    const size_t es = w->type == MOEQ_W_F32 ? 4 : 2;
    int64_t chunk = CHUNK_BYTES / ((int64_t)es * K) / TR * TR;
    if (chunk < TR) chunk = TR;
    const unsigned char *base = w->data;
    for (int64_t c0 = r0; c0 < r1; c0 += chunk) {
        const int64_t c1 = c0 + chunk < r1 ? c0 + chunk : r1;
        for (int64_t i = 0; i < n; i += TT) {
            const int T = n - i < TT ? (int)(n - i) : TT;
            const float *xr[TT];
            for (int t = 0; t < T; t++) xr[t] = X + (i + t) * ldx;
            for (int64_t r = c0; r < c1; r += TR) {
                const int R = c1 - r < TR ? (int)(c1 - r) : TR;
                const void *wr[TR];
                for (int j = 0; j < R; j++) wr[j] = base + (size_t)(r + j) * (size_t)moeq_wmat_ld(w) * es;
                tiles[w->type][R - 1][T - 1](wr, xr, K, Y + i * ldy + (r - r0), ldy);
            }
        }
    }
}
