/* ik_llama.cpp's IQ2_K (type 137, 2.375 bits per weight; docs/GGML-TYPES.md): super-blocks of
 * 256 as d f16, extra u16, scales[8], qs[64]; 16 sub-blocks of 16 values, each with a 4-bit
 * scale ls (value ls − 8) and one bit of extra that selects the shifted half of the 8-entry
 * grid: value = d·(ls − 8)·iq2nl[q + 4·bit]. Sub-block ib's codes are the 2-bit field
 * 2·((ib/2) % 4) of qs[32·(ib/8) + 16·(ib % 2) + j].
 *
 * The quantizer is ik's quantize_row_iq2_k_impl (written from its rule: per sub-block the
 * exhaustive weighted least-squares fit of a scale to the plain and the shifted grid, both
 * signs, over every split of the sorted values into the 4 levels; the 16 scales onto
 * d·(ls − 8) by make_qx_quants; codes for the rounded scales; d = 1.03 × the refitted scale),
 * then a descent on the same weighted error that keeps ik's block unless it finds a better one:
 * the least-squares d for the codes, and for a given d the best (ls, bit, codes) of each
 * sub-block. So the weighted error is never above ik's (the weights ik's search uses). */
#include "kernels/ggml/ggml_impl.h"

/* ik's iq2nl_values: the first four the plain grid, the last four the same + 5 (the shift is
 * what makes the GPTQ grid A·t − B with B = −5·A exact) */
const int8_t gg_iq2nl_values[8] = {-31, -13, 1, 17, -26, -8, 6, 22};

#define IQ2K_BYTES 76
#define SUB 16
#define NSUB (GG_QK_K / SUB)

static inline uint8_t *qs_of(uint8_t *b) { return b + 12; }
/* position of element e's code: byte offset in qs and bit shift */
static inline int code_byte(int e) { return 32 * (e / 128) + 16 * ((e / 16) % 2) + e % 16; }
static inline int code_shift(int e) { return 2 * ((e / 32) % 4); }
static inline int sub_ls(const uint8_t *b, int ib) { return (b[4 + ib / 2] >> (4 * (ib % 2))) & 0xf; }

static void dq_iq2_k(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += IQ2K_BYTES) {
        const float d = gg_h2f(b);
        unsigned extra = gg_rd16(b + 2);
        const uint8_t *qs = b + 12;
        int shift = 0;
        for (int ib32 = 0; ib32 < 8; ib32++, y += 32) {
            const float dl1 = d * ((b[4 + ib32] & 0xf) - 8);
            const float dl2 = d * ((b[4 + ib32] >> 4) - 8);
            const int8_t *v1 = gg_iq2nl_values + (extra & 1 ? 4 : 0);
            const int8_t *v2 = gg_iq2nl_values + (extra & 2 ? 4 : 0);
            extra >>= 2;
            for (int j = 0; j < 16; j++) {
                y[j] = dl1 * v1[(qs[j] >> shift) & 3];
                y[j + 16] = dl2 * v2[(qs[j + 16] >> shift) & 3];
            }
            shift += 2;
            if (shift == 8) { qs += 32; shift = 0; }
        }
    }
}

/* ik's best_index_iq2nl: nearest of 4 ascending values, ties up */
static inline int best4(const int8_t *v, float x)
{
    int i = x < v[1] ? 0 : x > v[2] ? 2 : 1;
    return x - v[i] < v[i + 1] - x ? i : i + 1;
}

/* the search's weights of one super-block (ik's: imatrix · sqrt(σ² + x²), or σ²/4 + x²) */
static void block_weights(const float *x, const float *qw, float sigma2, float *wt)
{
    for (int j = 0; j < GG_QK_K; j++)
        wt[j] = qw ? qw[j] * sqrtf(sigma2 + x[j] * x[j]) : 0.25f * sigma2 + x[j] * x[j];
}

/* ik's fit of one sub-block: the scale d and whether the shifted grid won. Values sorted
 * ascending (ties by index, as std::sort on (x, j) pairs); levels in order split at i1<=i2<=i3,
 * each grid tried ascending and descending (negative scales). */
static float fit_sub(const float *xb, const float *w, int *shifted)
{
    float sx[SUB], sumx[SUB + 1], sumw[SUB + 1];
    int idx[SUB];
    for (int j = 0; j < SUB; j++) { sx[j] = xb[j]; idx[j] = j; }
    for (int a = 1; a < SUB; a++) {   /* insertion sort: stable, so ties keep index order */
        float v = sx[a];
        int k = idx[a], b = a - 1;
        while (b >= 0 && sx[b] > v) { sx[b + 1] = sx[b]; idx[b + 1] = idx[b]; b--; }
        sx[b + 1] = v;
        idx[b + 1] = k;
    }
    sumx[0] = sumw[0] = 0;
    for (int j = 0; j < SUB; j++) {
        sumw[j + 1] = sumw[j] + w[idx[j]];
        sumx[j + 1] = sumx[j] + w[idx[j]] * xb[idx[j]];
    }
    const int8_t *grids[2] = {gg_iq2nl_values, gg_iq2nl_values + 4};
    float best = 0, d = 0;
    *shifted = 0;
    for (int i1 = 0; i1 < SUB; i1++)
        for (int i2 = i1; i2 < SUB; i2++)
            for (int i3 = i2; i3 < SUB; i3++) {
                const float cx[4] = {sumx[i1] - sumx[0], sumx[i2] - sumx[i1], sumx[i3] - sumx[i2], sumx[SUB] - sumx[i3]};
                const float cw[4] = {sumw[i1] - sumw[0], sumw[i2] - sumw[i1], sumw[i3] - sumw[i2], sumw[SUB] - sumw[i3]};
                /* ik's order: plain, shifted, plain reversed, shifted reversed */
                for (int rev = 0; rev < 2; rev++)
                    for (int g = 0; g < 2; g++) {
                        const int8_t *v = grids[g];
                        const int k0 = rev ? 3 : 0, k1 = rev ? 2 : 1, k2 = rev ? 1 : 2, k3 = rev ? 0 : 3;
                        float sumqx = cx[0] * v[k0] + cx[1] * v[k1] + cx[2] * v[k2] + cx[3] * v[k3];
                        float sumq2 = cw[0] * v[k0] * v[k0] + cw[1] * v[k1] * v[k1] + cw[2] * v[k2] * v[k2] +
                                      cw[3] * v[k3] * v[k3];
                        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                            d = sumqx / sumq2;
                            best = d * sumqx;
                            *shifted = g;
                        }
                    }
            }
    return d;
}

/* ik's block: 1 when it wrote a non-zero block (b is zeroed first either way) */
static int ik_block(const float *x, const float *wt, uint8_t *b)
{
    float scales[NSUB], sw[NSUB];
    int8_t Ls[NSUB];
    memset(b, 0, IQ2K_BYTES);
    unsigned extra = 0;
    float max_abs = 0;
    for (int ib = 0; ib < NSUB; ib++) {
        const float *xb = x + SUB * ib, *w = wt + SUB * ib;
        float amax = 0;
        sw[ib] = 0;
        for (int j = 0; j < SUB; j++) {
            sw[ib] += w[j];
            if (fabsf(xb[j]) > amax) amax = fabsf(xb[j]);
        }
        if (amax < 1e-16f) {
            scales[ib] = 0;
            continue;
        }
        int sh;
        scales[ib] = fit_sub(xb, w, &sh);
        if (sh) extra |= 1u << ib;
        if (fabsf(scales[ib]) > max_abs) max_abs = fabsf(scales[ib]);
    }
    if (!max_abs) return 0;
    float d = gg_make_qx_quants(NSUB, 8, scales, Ls, 1, sw);
    if (!d) return 0;
    gg_wr16(b + 2, (uint16_t)extra);
    const float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    uint8_t *qs = qs_of(b);
    for (int ib = 0; ib < NSUB; ib++) {
        int ls = gg_nearest_int(id * scales[ib]);
        ls = ls < -8 ? -8 : ls > 7 ? 7 : ls;
        b[4 + ib / 2] |= (uint8_t)((ls + 8) << (4 * (ib % 2)));
        const float dl = d * ls;
        if (!dl) continue;
        const int8_t *v = gg_iq2nl_values + (extra >> ib & 1 ? 4 : 0);
        const float idl = 1 / dl;
        for (int j = 0; j < SUB; j++) {
            const int e = SUB * ib + j;
            const int k = best4(v, idl * x[e]);
            qs[code_byte(e)] |= (uint8_t)(k << code_shift(e));
            const float q = (float)(v[k] * ls), w = wt[e];
            sumqx += w * q * x[e];
            sumq2 += w * q * q;
        }
    }
    gg_put_h(b, 1.030f * (sumq2 > 0 ? sumqx / sumq2 : d));
    return 1;
}

/* weighted squared error of block b against x, its values as dq_iq2_k computes them */
static double block_err(const uint8_t *b, const float *x, const float *wt)
{
    float y[GG_QK_K];
    dq_iq2_k(b, y, 1);
    double e = 0;
    for (int j = 0; j < GG_QK_K; j++) {
        const double r = (double)x[j] - y[j];
        e += (double)wt[j] * r * r;
    }
    return e;
}

/* c <- b with d the least-squares scale of b's codes and sub-block scales; 0 when none */
static int refit_d(const uint8_t *b, const float *x, const float *wt, uint8_t *c)
{
    const unsigned extra = gg_rd16(b + 2);
    double sqx = 0, sq2 = 0;
    for (int e = 0; e < GG_QK_K; e++) {
        const int ib = e / SUB, k = (b[12 + code_byte(e)] >> code_shift(e)) & 3;
        const double q = (double)(sub_ls(b, ib) - 8) * gg_iq2nl_values[k + (extra >> ib & 1 ? 4 : 0)];
        sqx += (double)wt[e] * q * x[e];
        sq2 += (double)wt[e] * q * q;
    }
    if (!(sq2 > 0)) return 0;
    memcpy(c, b, IQ2K_BYTES);
    gg_put_h(c, (float)(sqx / sq2));
    return 1;
}

/* c <- b with, for b's d, each sub-block's (ls, bit, codes) of least weighted error, values
 * computed as dq_iq2_k does (ties: the lower ls, the plain grid) */
static void refit_subs(const uint8_t *b, const float *x, const float *wt, uint8_t *c)
{
    const float d = gg_h2f(b);
    memset(c, 0, IQ2K_BYTES);
    memcpy(c, b, 2);
    unsigned extra = 0;
    uint8_t *qs = qs_of(c);
    for (int ib = 0; ib < NSUB; ib++) {
        double best = -1;
        int bls = 8, bbit = 0;
        uint8_t bk[SUB] = {0};
        for (int ls = 0; ls < 16; ls++) {
            const float dl = d * (ls - 8);
            for (int bit = 0; bit < 2; bit++) {
                const int8_t *v = gg_iq2nl_values + 4 * bit;
                double err = 0;
                uint8_t kk[SUB];
                /* the nearest code on the grid's own scale (x / dl); the block's error decides */
                const float idl = dl ? 1 / dl : 0.f;
                for (int j = 0; j < SUB; j++) {
                    const int e = SUB * ib + j;
                    const int k = dl ? best4(v, idl * x[e]) : 0;
                    const double r = (double)x[e] - (double)(dl * v[k]);
                    kk[j] = (uint8_t)k;
                    err += (double)wt[e] * r * r;
                }
                if (best < 0 || err < best) {
                    best = err;
                    bls = ls;
                    bbit = bit;
                    memcpy(bk, kk, SUB);
                }
            }
        }
        c[4 + ib / 2] |= (uint8_t)(bls << (4 * (ib % 2)));
        extra |= (unsigned)bbit << ib;
        for (int j = 0; j < SUB; j++) qs[code_byte(SUB * ib + j)] |= (uint8_t)(bk[j] << code_shift(SUB * ib + j));
    }
    gg_wr16(c + 2, (uint16_t)extra);
}

/* ik's QHelper: a sub-block of 16 whose importances or values are all but zero gets the
 * weight 1e-9 everywhere */
static void ik_row_weights(const float *x, const float *qw, float *w, int64_t n)
{
    const float eps = 1e-9f, eps2 = eps * eps;
    for (int64_t i = 0; i < n; i += SUB) {
        float sw2 = 0, sx2 = 0, swx = 0;
        for (int j = 0; j < SUB; j++) {
            w[i + j] = qw[i + j];
            sw2 += w[i + j] * w[i + j];
            sx2 += x[i + j] * x[i + j];
            swx += w[i + j] * fabsf(x[i + j]);
        }
        if (sw2 > SUB * eps2 && sx2 > SUB * eps2 && swx > SUB * eps2) continue;
        for (int j = 0; j < SUB; j++) w[i + j] = eps;
    }
}

static void quant_rows(const float *x, const float *qw, uint8_t *dst, int64_t n, int descent)
{
    float wt[GG_QK_K], wq[GG_QK_K];
    uint8_t best[IQ2K_BYTES], cand[IQ2K_BYTES], cur[IQ2K_BYTES];
    for (int64_t i = 0; i < n / GG_QK_K; i++) {
        const float *xb = x + GG_QK_K * i;
        uint8_t *b = dst + IQ2K_BYTES * i;
        float sumx2 = 0;
        for (int j = 0; j < GG_QK_K; j++) sumx2 += xb[j] * xb[j];
        const float sigma2 = 1.5f * sumx2 / GG_QK_K;
        if (qw) ik_row_weights(xb, qw + GG_QK_K * i, wq, GG_QK_K);
        block_weights(xb, qw ? wq : NULL, sigma2, wt);
        if (!ik_block(xb, wt, best) || !descent) {
            memcpy(b, best, IQ2K_BYTES);
            continue;
        }
        /* descent: alternate the two refits from ik's block, keep the best seen */
        double e_best = block_err(best, xb, wt);
        memcpy(cur, best, IQ2K_BYTES);
        for (int it = 0; it < 4; it++) {
            int better = 0;
            if (refit_d(cur, xb, wt, cand)) {
                double e = block_err(cand, xb, wt);
                memcpy(cur, cand, IQ2K_BYTES);
                if (e < e_best) { e_best = e; memcpy(best, cand, IQ2K_BYTES); better = 1; }
            }
            if (gg_h2f(cur) != 0 && isfinite(gg_h2f(cur))) {
                refit_subs(cur, xb, wt, cand);
                double e = block_err(cand, xb, wt);
                memcpy(cur, cand, IQ2K_BYTES);
                if (e < e_best) { e_best = e; memcpy(best, cand, IQ2K_BYTES); better = 1; }
            }
            if (!better) break;
        }
        memcpy(b, best, IQ2K_BYTES);
    }
}

static void q_iq2_k(const float *x, const float *qw, uint8_t *dst, int64_t n) { quant_rows(x, qw, dst, n, 1); }
void gg_iq2k_quant_ik(const float *x, const float *qw, uint8_t *dst, int64_t n) { quant_rows(x, qw, dst, n, 0); }

/* element e: A = d·(ls − 8) as dq_iq2_k computes dl; the shifted grid is the plain one + 5, so
 * A·(t + 5) = A·t − B with B = −5·A, exact in float32 (d has 11 significant bits, ls − 8 at
 * most 4, t + 5 at most 5: every product and the sum fit in 24 bits) */
static void grid_iq2_k(const uint8_t *b, float *A, float *B)
{
    const float d = gg_h2f(b);
    const unsigned extra = gg_rd16(b + 2);
    for (int e = 0; e < GG_QK_K; e++) {
        const int ib = e / SUB;
        const float dl = d * (sub_ls(b, ib) - 8);
        A[e] = dl;
        B[e] = extra >> ib & 1 ? -(dl * 5) : 0.f;
    }
}

static void pk_iq2_k(uint8_t *b, const uint8_t *L)
{
    uint8_t *qs = qs_of(b);
    memset(qs, 0, GG_QK_K / 4);
    for (int e = 0; e < GG_QK_K; e++) qs[code_byte(e)] |= (uint8_t)((L[e] & 3) << code_shift(e));
}

const gg_codec gg_codec_iq2_k = {MOEQ_GGML_IQ2_K, "IQ2_K", GG_QK_K, IQ2K_BYTES, dq_iq2_k, q_iq2_k, 4, 0, gg_iq2nl_values,
                                 grid_iq2_k, pk_iq2_k, 0, NULL, NULL, NULL, MOEQ_GGML_RT_IK};
