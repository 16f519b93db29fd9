/* ik_llama.cpp's IQ2_KS (type 145, 2.1875 bits per weight; docs/GGML-TYPES.md): a row starts
 * with an f16 row scale d, then super-blocks of 256 (70 bytes: extra u16, scales[4], qs[64]).
 * Sub-block ib (32 values) has a 5-bit scale ls (low nibble of scales[ib / 2] at 4·(ib % 2), high
 * bit extra bit 8 + ib) and a shift bit (extra bit ib) choosing the half of the grid
 * {-31, -13, 1, 17 | -26, -8, 6, 22}; value j of it is d·(ls − 16)·grid[q] with q the 2 bits at
 * 2·(ib % 4) of qs[32·(ib / 4) + j]. The quantizer follows ik's in spirit (sub-block scales by a
 * weighted search, the row scale from them by make_qx_quants with nmax 16) and then, for each of a
 * few row scales (that one, a plain max-based one, least-squares refits), chooses every sub-block's
 * scale, shift and codes exhaustively under the f16 row scale, keeping the row of least weighted
 * squared error. */
#include "kernels/ggml/ggml_impl.h"

#include <stdlib.h>

#define SUB 32
#define NSUB (GG_QK_K / SUB)
#define BYTES 70


static inline int sub_ls(const uint8_t *b, int ib)
{
    return ((b[2 + ib / 2] >> (4 * (ib % 2))) & 0xf) | (((gg_rd16(b) >> (8 + ib)) & 1) << 4);
}
static inline int sub_shift(const uint8_t *b, int ib) { return (gg_rd16(b) >> ib) & 1; }

/* ---- dequantization ------------------------------------------------------------------------- */

/* ik's dequantize_row_iq2_ks: dl = d·(ls − 16) in float32, then dl·value */
static void dq_blocks(const uint8_t *meta, const uint8_t *b, float *y, int64_t nb)
{
    const float d = gg_h2f(meta);
    for (int64_t i = 0; i < nb; i++, b += BYTES) {
        const uint8_t *qs = b + 2 + NSUB / 2;
        for (int ib = 0; ib < NSUB; ib++, y += SUB) {
            const float dl = d * (sub_ls(b, ib) - 16);
            const int8_t *v = gg_iq2nl_values + 4 * sub_shift(b, ib);
            const uint8_t *q = qs + SUB * (ib / 4);
            const int sh = 2 * (ib % 4);
            for (int j = 0; j < SUB; j++) y[j] = dl * v[(q[j] >> sh) & 3];
        }
    }
}

static void dq_iq2_ks(const uint8_t *src, float *dst, int64_t nb) { dq_blocks(src, src + 2, dst, nb); }

/* ---- GPTQ grid -------------------------------------------------------------------------------- */

/* value = A·t − B with t = gg_iq2nl_values[L] (L < 4), A = d·(ls − 16), B = −5·A for a shifted sub-block:
 * the shifted half is the first + 5. Exact in float32: d has 11 significant bits, ls − 16 five,
 * so A (16 bits), A·t (21), 5·A (19) and their sum A·(t + 5) (21) need no rounding, and dequant's
 * one product A·(t + 5) is the same number. */
static void grid_iq2_ks(const uint8_t *meta, const uint8_t *b, float *A, float *B)
{
    const float d = gg_h2f(meta);
    for (int ib = 0; ib < NSUB; ib++) {
        const float a = d * (sub_ls(b, ib) - 16), bb = sub_shift(b, ib) ? -5.f * a : 0.f;
        for (int j = 0; j < SUB; j++) { A[SUB * ib + j] = a; B[SUB * ib + j] = bb; }
    }
}

static void pk_iq2_ks(uint8_t *b, const uint8_t *L)
{
    uint8_t *qs = b + 2 + NSUB / 2;
    memset(qs, 0, GG_QK_K / 4);
    for (int ib = 0; ib < NSUB; ib++)
        for (int j = 0; j < SUB; j++) qs[SUB * (ib / 4) + j] |= (uint8_t)((L[SUB * ib + j] & 3) << (2 * (ib % 4)));
}

/* ---- quantization ----------------------------------------------------------------------------- */

/* ik's weights for a super-block x[256]: qw·sqrt(σ² + x²) with importances, else σ²/4 + x²
 * (σ² = 1.5·mean x²) */
static void block_weights(const float *x, const float *qw, float *wt)
{
    float sumx2 = 0;
    for (int j = 0; j < GG_QK_K; j++) sumx2 += x[j] * x[j];
    const float sigma2 = 1.5f * sumx2 / GG_QK_K;
    for (int j = 0; j < GG_QK_K; j++)
        wt[j] = qw ? qw[j] * sqrtf(sigma2 + x[j] * x[j]) : 0.25f * sigma2 + x[j] * x[j];
}

/* index of the nearest of 4 points (ascending when up, else descending) to a, by their
 * midpoints m; branch-free (random data mispredicts every branch), ties to the lower index */
static inline int nearest4(const float *m, int up, float a)
{
    if (up) return (a > m[0]) + (a > m[1]) + (a > m[2]);
    return (a < m[0]) + (a < m[1]) + (a < m[2]);
}

/* The best (ls, shift, codes) of one sub-block under the f16 row scale d: each ls of [lo, hi]
 * and both halves, each value to its nearest decoded point (as dequant computes it); ties keep
 * the first. Returns the weighted squared error, its codes in q, and adds sumqx, sumq2 of the
 * integer values (ls − 16)·grid for the row scale's least-squares refit. */
static float sub_search(float d, const float *x, const float *w, int lo, int hi, int *ls_out, int *sh_out,
                        uint8_t *q, double *sumqx, double *sumq2)
{
    float best = -1;
    int bls = lo, bsh = 0;
    for (int sh = 0; sh < 2; sh++) {
        const int8_t *v = gg_iq2nl_values + 4 * sh;
        for (int ls = lo; ls <= hi; ls++) {
            const float dl = d * (ls - 16);
            float e = 0;
            if (dl == 0) {
                for (int j = 0; j < SUB; j++) e += w[j] * x[j] * x[j];
            } else {
                float p[4], m[3];
                for (int k = 0; k < 4; k++) p[k] = dl * v[k];
                for (int k = 0; k < 3; k++) m[k] = 0.5f * (p[k] + p[k + 1]);
                const int up = dl > 0;
                for (int j = 0; j < SUB && (best < 0 || e < best); j++) {
                    const float t = x[j] - p[nearest4(m, up, x[j])];
                    e += w[j] * t * t;
                }
            }
            if (best < 0 || e < best) { best = e; bls = ls; bsh = sh; }
        }
    }
    const float dl = d * (bls - 16);
    const int8_t *v = gg_iq2nl_values + 4 * bsh;
    float p[4], m[3];
    for (int k = 0; k < 4; k++) p[k] = dl * v[k];
    for (int k = 0; k < 3; k++) m[k] = 0.5f * (p[k] + p[k + 1]);
    double sqx = 0, sq2 = 0;
    for (int j = 0; j < SUB; j++) {
        const int bk = dl == 0 ? 0 : nearest4(m, dl > 0, x[j]);
        q[j] = (uint8_t)bk;
        const double iq = (double)(bls - 16) * v[bk];
        sqx += (double)w[j] * iq * x[j];
        sq2 += (double)w[j] * iq * iq;
    }
    *ls_out = bls;
    *sh_out = bsh;
    *sumqx += sqx;
    *sumq2 += sq2;
    return best;
}

/* one super-block of x under the row scale d (f16 value) into b: scale fields and codes. s: the
 * sub-blocks' own scales (the search then tries ls within 2 of s / d + 16), NULL: every ls. */
static double block_fixed_d(float d, const float *x, const float *w, const float *s, uint8_t *b, double *sumqx,
                            double *sumq2)
{
    uint8_t L[GG_QK_K];
    uint16_t extra = 0;
    double err = 0;
    memset(b + 2, 0, NSUB / 2);
    for (int ib = 0; ib < NSUB; ib++) {
        int ls, sh, lo = 0, hi = 31;
        if (s && d != 0) {
            const float r = s[ib] / d;
            const int c = r > 64 ? 64 : r < -64 ? -64 : gg_nearest_int(r) + 16;
            lo = c - 2 < 0 ? 0 : c - 2 > 31 ? 31 : c - 2;
            hi = c + 2 > 31 ? 31 : c + 2 < lo ? lo : c + 2;
        }
        err += sub_search(d, x + SUB * ib, w + SUB * ib, lo, hi, &ls, &sh, L + SUB * ib, sumqx, sumq2);
        b[2 + ib / 2] |= (uint8_t)((ls & 0xf) << (4 * (ib % 2)));
        extra |= (uint16_t)(((ls >> 4) << (8 + ib)) | (sh << ib));
    }
    gg_wr16(b, extra);
    pk_iq2_ks(b, L);
    return err;
}

/* a whole row under row scale d (rounded to f16 here) into dst; its weighted error. s: the
 * sub-block scales or NULL (block_fixed_d) */
static double encode_row(float d, const float *x, const float *qw, const float *s, uint8_t *dst, int64_t nb,
                         double *sumqx, double *sumq2)
{
    float wt[GG_QK_K];
    gg_put_h(dst, d);
    const float dh = gg_h2f(dst);
    double err = 0;
    *sumqx = *sumq2 = 0;
    for (int64_t i = 0; i < nb; i++) {
        block_weights(x + GG_QK_K * i, qw ? qw + GG_QK_K * i : NULL, wt);
        err += block_fixed_d(dh, x + GG_QK_K * i, wt, s ? s + NSUB * i : NULL, dst + 2 + BYTES * i, sumqx, sumq2);
    }
    return err;
}

/* continuous weighted least-squares scale of one sub-block (ik's fast search: the extreme value
 * on either end of either half of the grid, 27 nudges each, nearest codes, refit) */
static float sub_scale(const float *x, const float *w)
{
    float amax = 0, max = 0;
    for (int j = 0; j < SUB; j++)
        if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); max = x[j]; }
    if (amax < 1e-16f) return 0;
    float best = 0, d = 0;
    for (int sh = 0; sh < 2; sh++) {
        const int8_t *v = gg_iq2nl_values + 4 * sh;
        const float vf[4] = {v[0], v[1], v[2], v[3]};
        const float m[3] = {0.5f * (v[0] + v[1]), 0.5f * (v[1] + v[2]), 0.5f * (v[2] + v[3])};
        for (int end = 0; end < 2; end++)
            for (int itry = -13; itry <= 13; itry++) {
                const float id = (vf[end ? 3 : 0] + 0.5f * itry) / max;
                float sumqx = 0, sumq2 = 0;
                for (int j = 0; j < SUB; j++) {
                    const float q = vf[nearest4(m, 1, id * x[j])];
                    sumqx += w[j] * q * x[j];
                    sumq2 += w[j] * q * q;
                }
                if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                    d = sumqx / sumq2;
                    best = d * sumqx;
                }
            }
    }
    return d;
}

static void q_iq2_ks(const float *x, const float *qw, uint8_t *dst, int64_t n)
{
    const int64_t nb = n / GG_QK_K, ns = nb * NSUB;
    const size_t rb = 2 + (size_t)nb * BYTES;
    float *scales = ns <= INT32_MAX ? malloc((size_t)ns * sizeof *scales) : NULL;
    float *sw = malloc((size_t)ns * sizeof *sw);
    int8_t *Ls = malloc((size_t)ns);
    uint8_t *tmp = malloc(rb);
    float wt[GG_QK_K], smax = 0;
    /* 1. each sub-block's own scale; the largest in magnitude gives the plain row scale */
    for (int64_t i = 0; i < nb; i++) {
        block_weights(x + GG_QK_K * i, qw ? qw + GG_QK_K * i : NULL, wt);
        for (int ib = 0; ib < NSUB; ib++) {
            const float s = sub_scale(x + GG_QK_K * i + SUB * ib, wt + SUB * ib);
            float sum = 0;
            for (int j = 0; j < SUB; j++) sum += wt[SUB * ib + j];
            if (fabsf(s) > fabsf(smax)) smax = s;
            if (scales && sw) { scales[i * NSUB + ib] = s; sw[i * NSUB + ib] = sum; }
        }
    }
    double sumqx, sumq2;
    const float *sv = scales && sw ? scales : NULL;
    double best = encode_row(-smax / 16, x, qw, sv, dst, nb, &sumqx, &sumq2);
    if (scales && sw && Ls && tmp) {
        /* 2. ik's row scale: the sub-block scales onto [-16, 16) by make_qx_quants */
        const float d = gg_make_qx_quants((int)ns, 16, scales, Ls, 1, sw);
        double sx, s2, e = encode_row(d, x, qw, sv, tmp, nb, &sx, &s2);
        if (e < best) { best = e; sumqx = sx; sumq2 = s2; memcpy(dst, tmp, rb); }
        /* 3. least-squares refits of the best row scale for its codes */
        for (int it = 0; it < 3 && sumq2 > 0; it++) {
            e = encode_row((float)(sumqx / sumq2), x, qw, sv, tmp, nb, &sx, &s2);
            if (!(e < best)) break;
            best = e; sumqx = sx; sumq2 = s2;
            memcpy(dst, tmp, rb);
        }
    }
    /* no memory for the search: the plain row scale's row, still the exhaustive sub-blocks */
    free(scales); free(sw); free(Ls); free(tmp);
}

/* GPTQ's regrid of one super-block under the row's fixed scale */
static void qb_iq2_ks(const uint8_t *meta, const float *x, const float *qw, uint8_t *b)
{
    float wt[GG_QK_K];
    double sx = 0, s2 = 0;
    block_weights(x, qw, wt);
    block_fixed_d(gg_h2f(meta), x, wt, NULL, b, &sx, &s2);
}

const gg_codec gg_codec_iq2_ks = {
    MOEQ_GGML_IQ2_KS, "IQ2_KS", GG_QK_K, BYTES, dq_iq2_ks, q_iq2_ks, 4, 0, gg_iq2nl_values, NULL, pk_iq2_ks,
    2, dq_blocks, grid_iq2_ks, qb_iq2_ks, MOEQ_GGML_RT_IK,
};
