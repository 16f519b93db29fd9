/* AMX-BF16 GEMM (built with -mamx-tile -mamx-bf16 on top of AVX512-BF16; called only after
 * dispatch.c has checked cpuid and obtained the OS's permission for the tile data). Set `amx`:
 * bf16f with these kernels for the float weights and for the packed codecs' gemm.
 *
 * One tdpbf16ps multiplies a 16 x 32 bf16 tile by a 32 x 16 one (pairs interleaved) into 16 x 16
 * float32 accumulators: 8,192 multiply-adds, 16 times vdpbf16ps's 512. The weights are tile A as
 * stored (16 rows, 32 columns of a row = 64 bytes, rows ld apart: no packing); the activations
 * are tile B in the bf16x2 set's prepared layout, [token vector][pair][16 tokens], whose 16
 * pairs of a vector are 16 rows of 64 bytes (moeq_bf16_pack_x, pairs padded to a multiple of 16
 * with zeros). C = W_blk X_blkᵀ is rows x tokens, stored and transposed into Y.
 *
 * Accuracy as bf16x2: x = hi + lo, both bf16, two products per weight into one float32 chain
 * (x kept to 2^-18). Weights that are not bf16 (the packed codecs' dequantized values) are
 * split the same way, w = wh + wl, and take wh·xh + wh·xl + wl·xh (the dropped
 * wl·xl and the split are 2^-16 relative at most): no int8 rounding, the KLD of the reference.
 *
 * Tiles: C 0..3 = (row block 0..1) x (token vector 0..1), A 4..5 (row blocks), B 6..7 (token
 * vectors): 32 rows x 32 tokens per unit. Per 32-column step: the A and B loads, then 4
 * tdpbf16ps per product (8 or 12 per step).
 *
 * Determinism: an output (row, token) is the same sequence of tile products over k steps
 * (hi·xh, hi·xl, lo·xh per step) wherever it falls, so results ignore the row and token split;
 * rows and tokens past the ends are zero in the tiles and dropped. AMX flushes denormal inputs
 * and results to zero (|values| below 2^-126): no effect on activations of a language model. */
#include "kernels/x86/x86.h"
#include "kernels/x86/qmat_x86.h"
#include "kernels/x86/avx512_inl.h"
#include "kernels/x86/amx_inl.h"
#include "kernels/x86/avx2_inl.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

/* bf16 weights take the tiles for any number of tokens: a tile product costs the same for 1 or
 * 16 tokens, and even one token's is as fast as the dot-product tiles (which were 11% of a bf16
 * eval's profile for the experts that get fewer than 16 tokens). The packed codecs' decoding is
 * paid per call, so batches of fewer than Q_MIN_TOKENS take bf16f's kernels. */
#define Q_MIN_TOKENS 4
#define STEP 32         /* columns per tile product */

/* pairs of a row of K columns, padded to whole tiles (16 pairs): the B layout's stride */
static inline int64_t k2s(int64_t K) { return ((K + 1) / 2 + 15) / 16 * 16; }

/* The A operand of a row block: hi (and lo when the weights were split) with rows stride bytes
 * apart for steps < fs; steps from fs on read thi (16 x 32, zero-padded tail columns: bf16 rows
 * only, as split rows are decoded whole). */
typedef struct {
    const uint16_t *hi, *lo, *thi;
    int64_t stride, fs;
} ablk;

static inline __attribute__((always_inline)) const uint16_t *asrc(const ablk *a, int lo, int64_t s, int64_t *st)
{
    if (s < a->fs) {
        *st = a->stride;
        return (lo ? a->lo : a->hi) + STEP * s;
    }
    *st = 64;
    (void)lo;
    return a->thi;
}

#define DP(RB, TV) \
    do { \
        _tile_dpbf16ps(0, 4, 6); \
        if (TV == 2) _tile_dpbf16ps(1, 4, 7); \
        if (RB == 2) _tile_dpbf16ps(2, 5, 6); \
        if (RB == 2 && TV == 2) _tile_dpbf16ps(3, 5, 7); \
    } while (0)

/* One unit: RB row blocks x TV token vectors over steps k steps; xh / xl the unit's first token
 * vector, vectors vs lanes apart. split: the weights have lo parts. C tile (rb, tv) goes to
 * cbuf + (2 rb + tv) * 256 as [16 rows][16 tokens]. */
static inline __attribute__((always_inline)) void unit(int RB, int TV, int split, const ablk *a, const uint32_t *xh,
                                                       const uint32_t *xl, int64_t vs, int64_t steps, float *cbuf)
{
    _tile_zero(0);
    if (TV == 2) _tile_zero(1);
    if (RB == 2) _tile_zero(2);
    if (RB == 2 && TV == 2) _tile_zero(3);
    for (int64_t s = 0; s < steps; s++) {
        int64_t st0, st1 = 64;
        const uint16_t *p0 = asrc(&a[0], 0, s, &st0), *p1 = RB == 2 ? asrc(&a[1], 0, s, &st1) : NULL;
        _tile_loadd(4, p0, st0);
        if (RB == 2) _tile_loadd(5, p1, st1);
        _tile_loadd(6, xh + s * 256, 64);
        if (TV == 2) _tile_loadd(7, xh + vs + s * 256, 64);
        DP(RB, TV);
        _tile_loadd(6, xl + s * 256, 64);
        if (TV == 2) _tile_loadd(7, xl + vs + s * 256, 64);
        DP(RB, TV);
        if (split) {
            p0 = asrc(&a[0], 1, s, &st0);
            _tile_loadd(4, p0, st0);
            if (RB == 2) {
                p1 = asrc(&a[1], 1, s, &st1);
                _tile_loadd(5, p1, st1);
            }
            _tile_loadd(6, xh + s * 256, 64);
            if (TV == 2) _tile_loadd(7, xh + vs + s * 256, 64);
            DP(RB, TV);
        }
    }
    _tile_stored(0, cbuf, 64);
    if (TV == 2) _tile_stored(1, cbuf + 256, 64);
    if (RB == 2) _tile_stored(2, cbuf + 512, 64);
    if (RB == 2 && TV == 2) _tile_stored(3, cbuf + 768, 64);
}

typedef void (*unit_fn)(const ablk *, const uint32_t *, const uint32_t *, int64_t, int64_t, float *);
#define UNIT(S, RB, TV) \
    static void unit_##S##_##RB##_##TV(const ablk *a, const uint32_t *xh, const uint32_t *xl, int64_t vs, int64_t steps, \
                                       float *cbuf) \
    { unit(RB, TV, S, a, xh, xl, vs, steps, cbuf); }
UNIT(0, 1, 1) UNIT(0, 1, 2) UNIT(0, 2, 1) UNIT(0, 2, 2) UNIT(1, 1, 1) UNIT(1, 1, 2) UNIT(1, 2, 1) UNIT(1, 2, 2)
static const unit_fn units[2][2][2] = { { { unit_0_1_1, unit_0_1_2 }, { unit_0_2_1, unit_0_2_2 } },
                                        { { unit_1_1_1, unit_1_1_2 }, { unit_1_2_1, unit_1_2_2 } } };

/* C tile [16 rows][16 tokens] -> Y[token][row]: R rows and nt tokens kept. */
static void store_tile(const float *c, float *Y, int64_t ldy, int R, int64_t nt)
{
    __m512i r[16], o[16];
    for (int m = 0; m < 16; m++) r[m] = _mm512_load_si512(c + 16 * m);
    transpose16(r, o);
    const __mmask16 mk = (__mmask16)((1u << R) - 1);
    for (int64_t t = 0; t < nt && t < 16; t++) _mm512_mask_storeu_ps(Y + t * ldy, mk, _mm512_castsi512_ps(o[t]));
}

/* A weight source: fills a row block's A operand. bf16 rows are read in place (copied only for
 * a short last block or the tail columns); a packed codec's rows are dequantized and split
 * into hi / lo bf16 rows of Kp columns, zero-padded, in the block's buffers. */
typedef enum { SRC_BF16, SRC_Q } src_kind;
typedef struct {
    src_kind kind;
    const void *p;   /* moeq_wmat (BF16) or moeq_qmat */
    int64_t K, Kp;
    uint16_t *buf[4];   /* per block: hi [16][Kp] then lo [16][Kp] (tails: [16][32] each); two
                         * sets used in turn, so a unit's stores do not wait on the tile loads
                         * of the one before (16% of a packed eval's profile on one store) */
} wsrc;

/* 32 floats (a: columns 0-15, b: 16-31) as bf16 hi and lo = bf16(x - hi) */
static inline void split32(__m512 a, __m512 b, uint16_t *hi, uint16_t *lo)
{
    const __m512i h = (__m512i)_mm512_cvtne2ps_pbh(b, a);
    const __m512 ha = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(h)), 16));
    const __m512 hb = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(h, 1)), 16));
    _mm512_storeu_si512(hi, h);
    _mm512_storeu_si512(lo, (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(b, hb), _mm512_sub_ps(a, ha)));
}

static inline wsrc source(src_kind kind, const void *p, int64_t K)
{
    return (wsrc){kind, p, K, 0, {NULL, NULL, NULL, NULL}};
}

static void fill(wsrc *s, int b, int64_t r, int R, ablk *a)
{
    const int64_t K = s->K, Kp = s->Kp, steps = Kp / STEP;
    uint16_t *hi = s->buf[b], *lo = hi + 16 * Kp;
    if (s->kind == SRC_BF16) {
        const moeq_wmat *w = s->p;
        const int64_t ld = moeq_wmat_ld(w);
        const uint16_t *base = (const uint16_t *)w->data + (size_t)r * (size_t)ld;
        if (R < 16) {   /* a short last block: copied, zero-padded */
            memset(hi, 0, (size_t)(16 * Kp) * 2);
            for (int j = 0; j < R; j++) memcpy(hi + j * Kp, base + (size_t)j * (size_t)ld, (size_t)K * 2);
            *a = (ablk){hi, NULL, NULL, Kp * 2, steps};
            return;
        }
        const int64_t fs = K / STEP;
        *a = (ablk){base, NULL, hi, ld * 2, fs};
        if (fs < steps) {   /* the tail columns of the 16 rows */
            memset(hi, 0, 16 * STEP * 2);
            for (int j = 0; j < 16; j++)
                memcpy(hi + j * STEP, base + (size_t)j * (size_t)ld + fs * STEP, (size_t)(K - fs * STEP) * 2);
        }
        return;
    }
    /* a packed codec: each 32-column block of a row decoded, dequantized as the reference does
     * ((q - z) * s in float32: moeq_avx2_dequant's values) and split, with no float32 copy */
    const moeq_qmat *q = s->p;
    const int bits = q->bits, bb = 4 * bits;
    const int64_t ng = moeq_qmat_groups(q), bpg = q->group / 32, rbytes = moeq_qmat_row_bytes(q);
    const float zsym = (float)(1 << (bits - 1));
    /* 4-bit codes: a group's 16 values (q - z) * s, split once, are two 16-entry tables, and a
     * block is 32 lookups (vpermw) into hi and lo: the same bits, a third of the work */
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m256i m15 = _mm256_set1_epi16(15);
    for (int j = 0; j < R; j++) {
        const int64_t row = r + j;
        const uint8_t *codes = q->codes + row * rbytes;
        uint16_t *h = hi + j * Kp, *l = lo + j * Kp;
        for (int64_t g = 0; g < ng; g++) {
            const __m512 sc = _mm512_set1_ps(_cvtsh_ss(q->scales[row * ng + g]));
            const __m512 z = _mm512_set1_ps(q->zeros ? _cvtsh_ss(q->zeros[row * ng + g]) : zsym);
            const int64_t nk = moeq_qmat_group_len(q, g) / 32;
            if (bits == 4) {
                const __m512 f = _mm512_mul_ps(_mm512_sub_ps(iota, z), sc);
                const __m256i th = (__m256i)_mm512_cvtneps_pbh(f);
                const __m512 fh = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(th), 16));
                const __m512i thi = _mm512_castsi256_si512(th);
                const __m512i tlo = _mm512_castsi256_si512((__m256i)_mm512_cvtneps_pbh(_mm512_sub_ps(f, fh)));
                for (int64_t k = 0; k < nk; k++) {
                    const int64_t blk = g * bpg + k;
                    const __m256i x = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(codes + blk * bb)));
                    const __m512i idx = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(x, m15)),
                                                           _mm256_srli_epi16(x, 4), 1);
                    _mm512_storeu_si512(h + blk * 32, _mm512_permutexvar_epi16(idx, thi));
                    _mm512_storeu_si512(l + blk * 32, _mm512_permutexvar_epi16(idx, tlo));
                }
                continue;
            }
            for (int64_t k = 0; k < nk; k++) {
                const int64_t blk = g * bpg + k;
                __m256i v[4];
                decode_block(bits, codes + blk * bb, v);
                const __m512 f0 = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_inserti64x4(_mm512_castsi256_si512(v[0]), v[1], 1)), z), sc);
                const __m512 f1 = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_inserti64x4(_mm512_castsi256_si512(v[2]), v[3], 1)), z), sc);
                split32(f0, f1, h + blk * 32, l + blk * 32);
            }
        }
    }
    if (R < 16) {
        memset(hi + R * Kp, 0, (size_t)((16 - R) * Kp) * 2);
        memset(lo + R * Kp, 0, (size_t)((16 - R) * Kp) * 2);
    }
    *a = (ablk){hi, lo, NULL, Kp * 2, steps};
}

/* rows [r0, r1) of the source times the prepared activations xp of n tokens */
static void mul(wsrc *s, const uint32_t *xp, int64_t n, int64_t r0, int64_t r1, float *Y, int64_t ldy)
{
    const int64_t K2s = k2s(s->K), ntv = (n + 15) / 16, vs = K2s * 16;
    const int64_t steps = K2s / 16;
    const int split = s->kind != SRC_BF16;
    s->Kp = steps * STEP;
    const size_t blk = (size_t)(32 * s->Kp) * 2;   /* hi + lo of 16 rows */
    uint16_t *mem = aligned_alloc(64, 4 * blk);
    if (!mem) return;
    for (int b = 0; b < 4; b++) s->buf[b] = mem + b * (blk / 2);
    float cbuf[1024] __attribute__((aligned(64)));
    const uint32_t *xl = xp + ntv * vs;
    moeq_amx_tiles_on();
    for (int64_t r = r0; r < r1; r += 32) {
        const int RB = r1 - r > 16 ? 2 : 1;
        ablk a[2];
        int R[2];
        for (int b = 0; b < RB; b++) {
            R[b] = r1 - (r + 16 * b) < 16 ? (int)(r1 - (r + 16 * b)) : 16;
            fill(s, b + ((r - r0) / 32 & 1) * 2, r + 16 * b, R[b], &a[b]);
        }
        for (int64_t v = 0; v < ntv; v += 2) {
            const int TV = ntv - v >= 2 ? 2 : 1;
            units[split][RB - 1][TV - 1](a, xp + v * vs, xl + v * vs, vs, steps, cbuf);
            for (int b = 0; b < RB; b++)
                for (int t = 0; t < TV; t++)
                    store_tile(cbuf + (2 * b + t) * 256, Y + (v + t) * 16 * ldy + (r - r0) + 16 * b, ldy, R[b],
                               n - (v + t) * 16);
        }
    }
    _tile_release();
    free(mem);
}

/* An expert's gate and up in one pass over the activations: a unit's two row blocks are the
 * same 16 rows of gate and of up, so each B tile load serves both, and SwiGLU runs on the C
 * tiles before they leave: Hs[i][r] = silu(g) · u. Each tile product, hence each g and u, is
 * what mul gives alone, and the set's swiglu is elementwise: the bits of mul, mul, swiglu. */
static int mul_swiglu(wsrc *g, wsrc *u, const uint32_t *xp, int64_t n, int64_t rows, float *Hs, int64_t ldh)
{
    const int64_t K2s = k2s(g->K), ntv = (n + 15) / 16, vs = K2s * 16;
    const int64_t steps = K2s / 16;
    const int split = g->kind != SRC_BF16;
    g->Kp = u->Kp = steps * STEP;
    const size_t blk = (size_t)(32 * g->Kp) * 2;
    uint16_t *mem = aligned_alloc(64, 4 * blk);
    if (!mem) return 0;
    for (int b = 0; b < 2; b++) {
        g->buf[b] = mem + b * (blk / 2);
        u->buf[b] = mem + (2 + b) * (blk / 2);
    }
    float cbuf[1024] __attribute__((aligned(64)));
    const uint32_t *xl = xp + ntv * vs;
    moeq_amx_tiles_on();
    for (int64_t r = 0; r < rows; r += 16) {
        const int R = rows - r < 16 ? (int)(rows - r) : 16, set = (int)(r / 16 & 1);
        ablk a[2];
        fill(g, set, r, R, &a[0]);
        fill(u, set, r, R, &a[1]);
        for (int64_t v = 0; v < ntv; v += 2) {
            const int TV = ntv - v >= 2 ? 2 : 1;
            units[split][1][TV - 1](a, xp + v * vs, xl + v * vs, vs, steps, cbuf);
            for (int t = 0; t < TV; t++) {
                moeq_avx512_swiglu(cbuf + t * 256, cbuf + 512 + t * 256, 256);
                store_tile(cbuf + t * 256, Hs + (v + t) * 16 * ldh + r, ldh, R, n - (v + t) * 16);
            }
        }
    }
    _tile_release();
    free(mem);
    return 1;
}

static size_t xbytes(int64_t n, int64_t K)
{
    return (size_t)((n + 15) / 16 * k2s(K) * 16) * 4 * 2;
}

static uint32_t *prep(const float *X, int64_t n, int64_t ldx, int64_t K)
{
    uint32_t *xp = aligned_alloc(64, (xbytes(n, K) + 63) / 64 * 64);
    if (xp) moeq_bf16_pack_x(X, n, ldx, K, k2s(K), 1, 0, (n + 15) / 16, xp);
    return xp;
}

static void wgemm_amx(const moeq_wmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1, float *Y,
                      int64_t ldy, const void *prepared)
{
    if (n <= 0 || r1 <= r0) return;
    if (w->type == MOEQ_W_F16) {
        moeq_avx512_wgemm(w, X, n, ldx, r0, r1, Y, ldy);
        return;
    }
    wsrc s = source(SRC_BF16, w, w->cols);
    uint16_t *b = NULL;
    moeq_wmat wb;
    if (w->type == MOEQ_W_F32) {
        /* bf16 values in float32 storage take the bf16 path (the same bits either way); other
         * float32 matrices (attention's K and Vᵀ) keep float32 FMAs: split into bf16 parts they
         * would lose 2^-16 of the scores, which moved tiny-qwen3moe's logits by 1.6e-5 */
        b = moeq_bf16_rows(w, r0, r1);
        if (!b) {
            moeq_avx512_wgemm(w, X, n, ldx, r0, r1, Y, ldy);
            return;
        }
        wb = (moeq_wmat){MOEQ_W_BF16, r1 - r0, w->cols, b, 0};
        s.p = &wb;
    }
    const int64_t rr0 = b ? 0 : r0, rr1 = b ? r1 - r0 : r1;
    uint32_t *xp = prepared ? (uint32_t *)prepared : prep(X, n, ldx, w->cols);
    if (xp) mul(&s, xp, n, rr0, rr1, Y, ldy);
    if (!prepared) free(xp);
    free(b);
}

static void amx_wgemm(const moeq_wmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1, float *Y,
                      int64_t ldy)
{
    wgemm_amx(w, X, n, ldx, r0, r1, Y, ldy, NULL);
}

static size_t amx_wx_bytes(int64_t n, int64_t K) { return xbytes(n, K); }
static void amx_wx_prep(const float *X, int64_t n, int64_t ldx, int64_t K, int64_t v0, int64_t v1, void *buf)
{
    moeq_bf16_pack_x(X, n, ldx, K, k2s(K), 1, v0, v1, buf);
}
static void amx_wgemm_wx(const moeq_wmat *w, const void *buf, const float *X, int64_t n, int64_t ldx, int64_t r0,
                         int64_t r1, float *Y, int64_t ldy)
{
    wgemm_amx(w, X, n, ldx, r0, r1, Y, ldy, buf);
}

/* Packed codecs, Q_MIN_TOKENS tokens or more: each block of 16 rows decoded to the reference's
 * values and split (fill); fewer tokens: bf16f's kernels. */
static void amx_gemm(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1, float *Y,
                     int64_t ldy)
{
    if (n < Q_MIN_TOKENS) {
        moeq_avx512_gemm_tiled(w, X, n, ldx, r0, r1, Y, ldy);
        return;
    }
    if (r1 <= r0) return;
    uint32_t *xp = prep(X, n, ldx, w->cols);
    if (!xp) return;
    wsrc s = source(SRC_Q, w, w->cols);
    mul(&s, xp, n, r0, r1, Y, ldy);
    free(xp);
}

/* an expert's gate and up over one preparation of X (each result amx_gemm's bits) */
static int amx_gemm_pair(const moeq_qmat *a, const moeq_qmat *b, const float *X, int64_t n, int64_t ldx, float *Ya,
                         float *Yb, int64_t ldy)
{
    if (n < Q_MIN_TOKENS || a->cols != b->cols) return 0;
    uint32_t *xp = prep(X, n, ldx, a->cols);
    if (!xp) return 0;
    wsrc sa = source(SRC_Q, a, a->cols), sb = source(SRC_Q, b, b->cols);
    mul(&sa, xp, n, 0, a->rows, Ya, ldy);
    mul(&sb, xp, n, 0, b->rows, Yb, ldy);
    free(xp);
    return 1;
}

/* gate_up_swiglu: packed gate and up (qg, qu) or bf16 ones (wg, wu), all rows, the tokens
 * prepared once. 0: not handled (other weights, too few tokens for the packed decoding). */
static int amx_gate_up_swiglu(const moeq_qmat *qg, const moeq_qmat *qu, const moeq_wmat *wg, const moeq_wmat *wu,
                              const float *X, int64_t n, int64_t ldx, float *Hs, int64_t ldh)
{
    wsrc g, u;
    if (qg && qu) {
        if (n < Q_MIN_TOKENS || qg->cols != qu->cols || qg->rows != qu->rows) return 0;
        g = source(SRC_Q, qg, qg->cols);
        u = source(SRC_Q, qu, qu->cols);
    } else if (wg && wu && wg->type == MOEQ_W_BF16 && wu->type == MOEQ_W_BF16 && wg->cols == wu->cols &&
               wg->rows == wu->rows) {
        g = source(SRC_BF16, wg, wg->cols);
        u = source(SRC_BF16, wu, wu->cols);
    } else {
        return 0;
    }
    if (n <= 0) return 1;
    uint32_t *xp = prep(X, n, ldx, g.K);
    if (!xp) return 0;
    const int done = mul_swiglu(&g, &u, xp, n, qg ? qg->rows : wg->rows, Hs, ldh);
    free(xp);
    return done;
}

const moeq_kernel_set moeq_kernels_amx = { "amx", moeq_avx2_dequant, moeq_avx512_gemv, amx_gemm,
                                           amx_wgemm, amx_wx_bytes, amx_wx_prep, amx_wgemm_wx,
                                           amx_gemm_pair, moeq_avx512_swiglu, moeq_avx512_dsyrk,
                                           moeq_avx512_attend, amx_gate_up_swiglu,
                                           moeq_amx_hsyrk_pack, moeq_amx_hsyrk_sum, "bf16x2-f32x256", 1 };
