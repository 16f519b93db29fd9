/* int8-activation GEMM (AVX-512 VNNI) of the int codecs: the formula of moeq_x8_quantize
 * (include/moeq_kernels.h), Y = W X^T with X quantized per 32-column block.
 *
 * Layout. vpdpbusd multiplies 4 u8 by 4 s8 per int32 lane. Here the vector operand holds the
 * activations of 16 tokens at 4 columns (s8) and the broadcast operand 4 codes of one row (u8),
 * so that:
 *  - codes only need decoding to one byte per column in their natural order (a row at a time,
 *    no transpose: a 4-byte broadcast from memory is free on the load ports);
 *  - the activations are transposed once per call to xt[k][v][16 tokens][4 bytes]
 *    (k = column / 4, v = token / 16), one 16x16 dword transpose per 64 columns of 16 tokens;
 *  - block scales dx are per token, i.e. one vector per (block, 16 tokens), a memory operand.
 * A register tile is RM rows x TM vectors of 16 tokens: per 4 columns TM loads, RM broadcasts,
 * RM*TM vpdpbusd. After each 32-column block the int32 sums are converted and multiply-added
 * with dx into a per-group float sum; at the end of a group that is scaled by the row's s_g
 * and the zero term s_g z_g sum_{b in g} dx_b sxq_b (per token, computed once per call) is
 * subtracted. Every (row, token) is computed by the same sequence of operations wherever the
 * row falls in a tile or a call, so results do not depend on the row split.
 * Tokens are padded to a multiple of 16 with zero activations (their outputs are dropped). */
#include "kernels/x86/qmat_x86.h"
#include "kernels/x86/avx512_inl.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))
#define RM 6   /* rows per register tile */
#define TM 2   /* vectors of 16 tokens per register tile: RM*TM int32 + RM*TM float accumulators */

/* ---- activations ---------------------------------------------------------------------- */

/* lane b = the max over the 16 lanes of a[b] (a transposed reduction: 2 shuffles and one max
 * per vector instead of a horizontal reduction each) */
INLINE __m512 reduce16_max(const __m512 a[16])
{
    __m512 t[8], u[4], w0, w1;
    for (int i = 0; i < 8; i++)   /* lanes 0-1: a[2i] folded to 8 values, lanes 2-3: a[2i+1] */
        t[i] = _mm512_max_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xee));
    for (int i = 0; i < 4; i++)   /* 128-bit lane L of u[j]: 4 values of a[4j + L] */
        u[i] = _mm512_max_ps(_mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0xdd));
    w0 = _mm512_max_ps(_mm512_unpacklo_ps(u[0], u[1]), _mm512_unpackhi_ps(u[0], u[1]));
    w1 = _mm512_max_ps(_mm512_unpacklo_ps(u[2], u[3]), _mm512_unpackhi_ps(u[2], u[3]));
    __m512 x = _mm512_max_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(w0), _mm512_castps_pd(w1))),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(w0), _mm512_castps_pd(w1))));
    /* element 4L + e of x is a[4e + L] */
    return _mm512_permutexvar_ps(_mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0), x);
}

/* moeq_x8_quantize of one token, vectorized with the same IEEE operations (max |x|, 127 / m,
 * x * inv rounded half to even, clamp, m / 127), so the int8 values and dx are bit-identical
 * (the unit test checks it on ties); 16 blocks at a time so the divisions are vector ones.
 * dx gets nb rounded up to 16 entries (zero past nb); sxq is summed later from the transposed
 * bytes. Returns 0 on NaN/Inf. */
static int quantize_token(const float *x, int64_t cols, int8_t *xq, float *dx)
{
    const __m512 lim = _mm512_set1_ps(127.0f), nlim = _mm512_set1_ps(-127.0f);
    const int64_t nb = cols / 32;
    for (int64_t b0 = 0; b0 < nb; b0 += 16) {
        const int nblk = nb - b0 < 16 ? (int)(nb - b0) : 16;
        __m512 a[16];
        __mmask16 bad = 0;
        for (int j = 0; j < 16; j++) {
            if (j >= nblk) {
                a[j] = _mm512_setzero_ps();
                continue;
            }
            __m512 v0 = _mm512_loadu_ps(x + 32 * (b0 + j)), v1 = _mm512_loadu_ps(x + 32 * (b0 + j) + 16);
            /* 0x99: QNaN | SNaN | +Inf | -Inf */
            bad |= _mm512_fpclass_ps_mask(v0, 0x99) | _mm512_fpclass_ps_mask(v1, 0x99);
            a[j] = _mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1));
        }
        if (bad) return 0;
        __m512 m = reduce16_max(a);
        __m512 inv = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(m, _mm512_setzero_ps(), _CMP_GT_OQ), lim, m);
        _mm512_storeu_ps(dx + b0, _mm512_div_ps(m, lim));
        float invs[16];
        _mm512_storeu_ps(invs, inv);
        for (int j = 0; j < nblk; j++) {
            const float *p = x + 32 * (b0 + j);
            __m512 vi = _mm512_set1_ps(invs[j]);
            __m512 q0 = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(p), vi), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            __m512 q1 = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(p + 16), vi), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            q0 = _mm512_max_ps(_mm512_min_ps(q0, lim), nlim);
            q1 = _mm512_max_ps(_mm512_min_ps(q1, lim), nlim);
            _mm_storeu_si128((__m128i *)(void *)(xq + 32 * (b0 + j)), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q0)));
            _mm_storeu_si128((__m128i *)(void *)(xq + 32 * (b0 + j) + 16), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q1)));
        }
    }
    return 1;
}

/* 16 rows of 16 dwords transposed in place: r[j] becomes column j (avx512_inl.h's transpose) */
INLINE void transpose16_inplace(__m512i r[16])
{
    __m512i o[16];
    transpose16(r, o);
    for (int i = 0; i < 16; i++) r[i] = o[i];
}

/* ---- codes ----------------------------------------------------------------------------- */

/* one row's codes to one byte per column, natural order (FORMAT.md "Int codec layout") */
static void decode_row(int bits, const uint8_t *p, int64_t cols, uint8_t *dst)
{
    const int64_t nb = cols / 32;
    switch (bits) {
    case 8:
        memcpy(dst, p, (size_t)cols);
        break;
    case 4: {   /* block: 16 bytes, low nibbles = columns 0..15, high = 16..31 */
        const __m128i m15 = _mm_set1_epi8(15);
        for (int64_t b = 0; b < nb; b++) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + 16 * b));
            _mm_storeu_si128((__m128i *)(void *)(dst + 32 * b), _mm_and_si128(v, m15));
            _mm_storeu_si128((__m128i *)(void *)(dst + 32 * b + 16), _mm_and_si128(_mm_srli_epi16(v, 4), m15));
        }
        break;
    }
    default: {  /* 2 bits: 8 bytes, bits 2p..2p+1 = columns 8p..8p+7; 3 bits: + a word of bit 2 */
        const int64_t bb = 4 * bits;
        const __m256i four = _mm256_set1_epi8(4);
        for (int64_t b = 0; b < nb; b++) {
            uint64_t v;
            memcpy(&v, p + bb * b, 8);
            const uint64_t m3 = 0x0303030303030303ull;
            __m256i q = _mm256_set_epi64x((long long)((v >> 6) & m3), (long long)((v >> 4) & m3),
                                          (long long)((v >> 2) & m3), (long long)(v & m3));
            if (bits == 3) {
                uint32_t h;
                memcpy(&h, p + bb * b + 8, 4);
                q = _mm256_or_si256(q, _mm256_maskz_mov_epi8((__mmask32)h, four));
            }
            _mm256_storeu_si256((__m256i *)(void *)(dst + 32 * b), q);
        }
        break;
    }
    }
}

/* ---- the register tile ------------------------------------------------------------------ */

typedef struct gctx {
    int64_t cols, nk, nb, ng, group, nv, npad;
    const int8_t *xt;    /* [nk][nv][64] */
    const float *dxt;    /* [nb][npad]: dx of each token's block */
    const float *gsq;    /* [ng][npad]: sum_{b in g} dx_b sxq_b */
} gctx;

/* rows w8[0..R) (stride cols), token vectors v0..v0+T: out[r][16t + i] */
INLINE void tile(const gctx *c, int R, int T, const uint8_t *w8, const float *sf, const float *szf, int64_t v0,
                 float *out)
{
    __m512 acc[RM][TM];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) acc[r][t] = _mm512_setzero_ps();
    const int64_t vs = c->nv * 64;   /* bytes per k step of xt */
    for (int64_t g = 0; g < c->ng; g++) {
        int64_t b0 = g * c->group / 32, b1 = b0 + c->group / 32;
        if (b1 > c->nb) b1 = c->nb;   /* the last group is shorter when group does not divide cols */
        __m512 fa[RM][TM];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) fa[r][t] = _mm512_setzero_ps();
        for (int64_t b = b0; b < b1; b++) {
            __m512i ia[RM][TM];
#pragma GCC unroll 8
            for (int r = 0; r < R; r++)
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) ia[r][t] = _mm512_setzero_si512();
            const int8_t *xp = c->xt + (8 * b) * vs + v0 * 64;
            const uint8_t *wp = w8 + 32 * b;
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                __m512i a[TM];
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) a[t] = _mm512_load_si512(xp + k * vs + 64 * t);
#pragma GCC unroll 8
                for (int r = 0; r < R; r++) {
                    int32_t w4;
                    memcpy(&w4, wp + r * c->cols + 4 * k, 4);
                    __m512i wb = _mm512_set1_epi32(w4);
#pragma GCC unroll 8
                    for (int t = 0; t < T; t++) ia[r][t] = _mm512_dpbusd_epi32(ia[r][t], wb, a[t]);
                }
            }
            const float *dxp = c->dxt + b * c->npad + v0 * 16;
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                __m512 d = _mm512_load_ps(dxp + 16 * t);
#pragma GCC unroll 8
                for (int r = 0; r < R; r++) fa[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[r][t]), d, fa[r][t]);
            }
        }
        const float *gp = c->gsq + g * c->npad + v0 * 16;
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            __m512 q = _mm512_load_ps(gp + 16 * t);
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                acc[r][t] = _mm512_fmadd_ps(fa[r][t], _mm512_set1_ps(sf[r * c->ng + g]), acc[r][t]);
                acc[r][t] = _mm512_fnmadd_ps(_mm512_set1_ps(szf[r * c->ng + g]), q, acc[r][t]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) _mm512_storeu_ps(out + r * TM * 16 + 16 * t, acc[r][t]);
}

typedef void (*tile_fn)(const gctx *, const uint8_t *, const float *, const float *, int64_t, float *);
#define TILE(R, T)                                                                                         \
    static void tile_##R##_##T(const gctx *c, const uint8_t *w8, const float *sf, const float *szf, int64_t v0, \
                               float *out)                                                                 \
    {                                                                                                      \
        tile(c, R, T, w8, sf, szf, v0, out);                                                               \
    }
TILE(1, 1) TILE(2, 1) TILE(3, 1) TILE(4, 1) TILE(5, 1) TILE(6, 1)
TILE(1, 2) TILE(2, 2) TILE(3, 2) TILE(4, 2) TILE(5, 2) TILE(6, 2)
static const tile_fn tiles[RM][TM] = {
    { tile_1_1, tile_1_2 }, { tile_2_1, tile_2_2 }, { tile_3_1, tile_3_2 },
    { tile_4_1, tile_4_2 }, { tile_5_1, tile_5_2 }, { tile_6_1, tile_6_2 },
};

/* ---- the call ----------------------------------------------------------------------------- */

/* The activations' side of the GEMM (quantized, transposed, zero terms per group): depends on X,
 * the columns and the group only, so one preparation serves every matrix of that shape (an
 * expert's gate and up). Returns the block to free (NULL: not handled, nothing to free). */
static void *prep_x8(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, gctx *cp_out, uint8_t **w8_out,
                     float **sf_out, float **szf_out)
{
    if (n < 1 || w->cols % 32 || w->group % 32 || (w->bits != 2 && w->bits != 3 && w->bits != 4 && w->bits != 8))
        return NULL;
    gctx c;
    c.cols = w->cols;
    c.nb = w->cols / 32;
    c.ng = moeq_qmat_groups(w);
    c.group = w->group;
    c.nv = (n + 15) / 16;
    c.npad = 16 * c.nv;
    const int64_t cp = (w->cols + 63) / 64 * 64;   /* columns padded to whole transposes */
    c.nk = cp / 4;
    const int64_t nbp = (c.nb + 15) / 16 * 16;   /* blocks padded to whole transposes */
    size_t need = (size_t)(c.npad * cp)                       /* xn: natural int8 */
                  + (size_t)(c.npad * cp)                     /* xt */
                  + (size_t)(c.nb * c.npad) * 4 * 2           /* dxt, sxq */
                  + (size_t)(c.ng * c.npad) * 4               /* gsq */
                  + (size_t)(RM * w->cols)                    /* w8 */
                  + (size_t)(RM * c.ng) * 4 * 2               /* sf, szf */
                  + (size_t)(c.npad * nbp) * 4                /* dxn: dx per token */
                  + 64 * 10;
    void *mem = malloc(need);
    if (!mem) return NULL;
    char *m = (char *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
#define TAKE(ptr, bytes) do { ptr = (void *)m; m += ((size_t)(bytes) + 63) / 64 * 64; } while (0)
    int8_t *xn, *xt;
    float *dxt, *gsq, *sf, *szf;
    int32_t *sxq;
    uint8_t *w8;
    TAKE(xn, c.npad * cp);
    TAKE(xt, c.npad * cp);
    TAKE(dxt, c.nb * c.npad * 4);
    TAKE(sxq, c.nb * c.npad * 4);
    TAKE(gsq, c.ng * c.npad * 4);
    TAKE(w8, RM * w->cols);
    TAKE(sf, RM * c.ng * 4);
    TAKE(szf, RM * c.ng * 4);
    float *dxn;
    TAKE(dxn, c.npad * nbp * 4);
#undef TAKE
    /* quantize: token i's int8 row in xn[i * cp], its dx in dxn[i * nbp] */
    memset(xn, 0, (size_t)(c.npad * cp));
    memset(dxn, 0, (size_t)(c.npad * nbp) * 4);
    for (int64_t i = 0; i < n; i++)
        if (!quantize_token(X + i * ldx, w->cols, xn + i * cp, dxn + i * nbp)) {
            free(mem);
            return NULL;
        }
    /* transposes: dxt[b][token]; xt[k][v][token][4 bytes] and, from it, sxq[b][token] (the sum
     * of a block's int8 values: dpbusd with all-ones bytes over its 8 k steps) */
    for (int64_t v = 0; v < c.nv; v++)
        for (int64_t b0 = 0; b0 < nbp; b0 += 16) {
            __m512i rr[16];
            for (int i = 0; i < 16; i++) rr[i] = _mm512_load_si512(dxn + (16 * v + i) * nbp + b0);
            transpose16_inplace(rr);
            for (int j = 0; j < 16 && b0 + j < c.nb; j++) _mm512_store_si512(dxt + (b0 + j) * c.npad + 16 * v, rr[j]);
        }
    const __m512i ones = _mm512_set1_epi8(1);
    for (int64_t v = 0; v < c.nv; v++)
        for (int64_t k0 = 0; k0 < c.nk; k0 += 16) {
            __m512i rr[16];
            for (int i = 0; i < 16; i++) rr[i] = _mm512_load_si512(xn + (16 * v + i) * cp + 4 * k0);
            transpose16_inplace(rr);
            for (int j = 0; j < 16; j++) _mm512_store_si512(xt + ((k0 + j) * c.nv + v) * 64, rr[j]);
            for (int h = 0; h < 2 && (k0 / 8 + h) < c.nb; h++) {
                __m512i sum = _mm512_setzero_si512();
                for (int j = 0; j < 8; j++) sum = _mm512_dpbusd_epi32(sum, ones, rr[8 * h + j]);
                _mm512_store_si512(sxq + (k0 / 8 + h) * c.npad + 16 * v, sum);
            }
        }
    /* zero terms per group and token, summed over blocks in order */
    memset(gsq, 0, (size_t)(c.ng * c.npad) * 4);
    for (int64_t b = 0; b < c.nb; b++) {
        float *gp = gsq + (b * 32 / w->group) * c.npad;
        for (int64_t i = 0; i < c.npad; i += 16)
            _mm512_store_ps(gp + i, _mm512_fmadd_ps(_mm512_load_ps(dxt + b * c.npad + i),
                                                     _mm512_cvtepi32_ps(_mm512_load_si512(sxq + b * c.npad + i)),
                                                     _mm512_load_ps(gp + i)));
    }
    c.xt = xt;
    c.dxt = dxt;
    c.gsq = gsq;

    *cp_out = c;
    *w8_out = w8;
    *sf_out = sf;
    *szf_out = szf;
    return mem;
}

/* rows [r0, r1) of w times the prepared activations (c, with w's scratch w8, sf, szf) */
static void mul_x8(const moeq_qmat *w, const gctx *cc, uint8_t *w8, float *sf, float *szf, int64_t n, int64_t r0,
                   int64_t r1, float *Y, int64_t ldy)
{
    const gctx c = *cc;
    const int64_t rb = moeq_qmat_row_bytes(w), ng = c.ng;
    const float zsym = (float)(1 << (w->bits - 1));
    float out[RM * TM * 16];
    for (int64_t ra = r0; ra < r1; ra += RM) {
        int R = r1 - ra < RM ? (int)(r1 - ra) : RM;
        for (int r = 0; r < R; r++) {
            decode_row(w->bits, w->codes + (ra + r) * rb, w->cols, w8 + r * w->cols);
            for (int64_t g = 0; g < ng; g++) {
                float s = moeq_f16_to_f32(w->scales[(ra + r) * ng + g]);
                float z = w->zeros ? moeq_f16_to_f32(w->zeros[(ra + r) * ng + g]) : zsym;
                sf[r * ng + g] = s;
                szf[r * ng + g] = s * z;
            }
        }
        for (int64_t v0 = 0; v0 < c.nv; v0 += TM) {
            int T = c.nv - v0 < TM ? (int)(c.nv - v0) : TM;
            tiles[R - 1][T - 1](&c, w8, sf, szf, v0, out);
            /* out is [row][token]; Y wants each token's R rows contiguous: one 16x16 transpose
             * per 16 tokens and a masked store per token (scalar stores strided by ldy cost as
             * much as the tile on the fixtures' 160 x 128 matrices) */
            for (int t = 0; t < T; t++) {
                __m512i rr[16];
                for (int r = 0; r < 16; r++)
                    rr[r] = r < R ? _mm512_castps_si512(_mm512_loadu_ps(out + r * TM * 16 + 16 * t)) : _mm512_setzero_si512();
                transpose16_inplace(rr);
                for (int64_t j = 0, i0 = 16 * (v0 + t); j < 16 && i0 + j < n; j++)
                    _mm512_mask_storeu_ps(Y + (i0 + j) * ldy + (ra - r0), (__mmask16)((1u << R) - 1), _mm512_castsi512_ps(rr[j]));
            }
        }
    }
}

int moeq_vnni_gemm_x8(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                      float *Y, int64_t ldy)
{
    if (r1 <= r0) return 0;
    gctx c;
    uint8_t *w8;
    float *sf, *szf;
    void *mem = prep_x8(w, X, n, ldx, &c, &w8, &sf, &szf);
    if (!mem) return 0;
    mul_x8(w, &c, w8, sf, szf, n, r0, r1, Y, ldy);
    free(mem);
    return 1;
}

int moeq_vnni_gemm_x8_pair(const moeq_qmat *a, const moeq_qmat *b, const float *X, int64_t n, int64_t ldx, float *Ya,
                           float *Yb, int64_t ldy)
{
    if (a->cols != b->cols || a->group != b->group || a->rows != b->rows) return 0;
    gctx c;
    uint8_t *w8;
    float *sf, *szf;
    void *mem = prep_x8(a, X, n, ldx, &c, &w8, &sf, &szf);
    if (!mem) return 0;
    const int okb = b->bits == 2 || b->bits == 3 || b->bits == 4 || b->bits == 8;
    if (okb) {
        mul_x8(a, &c, w8, sf, szf, n, 0, a->rows, Ya, ldy);
        mul_x8(b, &c, w8, sf, szf, n, 0, b->rows, Yb, ldy);
    }
    free(mem);
    return okb;
}

