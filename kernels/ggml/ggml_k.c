/* ggml's 256-value K-quant super-blocks: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (docs/GGML-TYPES.md).
 * Sub-blocks of 16 (Q2_K, Q3_K, Q6_K) or 32 (Q4_K, Q5_K) values have integer scales (and
 * mins) times one f16 d (and dmin) per super-block. The reference quantizers (no weights) are
 * llama.cpp's quantize_row_*_ref; the weighted ones its quantize_row_*_impl with an imatrix:
 * each sub-block's scale/min from a weighted search, then the sub-block scales themselves
 * quantized by a weighted search (weights = the sub-block's total importance), then the codes
 * requantized against the rounded scales. Float operations in llama.cpp's order throughout. */
#include "kernels/ggml/ggml_impl.h"

#define QK_K GG_QK_K

static inline int imax(int a, int b) { return a > b ? a : b; }
static inline int imin(int a, int b) { return a < b ? a : b; }

/* ---- shared packing ------------------------------------------------------------------------ */

/* 2-bit planes of Q2_K and Q3_K: byte 32·h + l holds elements 128h + l + 32g at bits 2g */
static void pack_2bit(uint8_t *qs, const uint8_t *L)
{
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (uint8_t)((L[j + l] & 3) | ((L[j + l + 32] & 3) << 2) | ((L[j + l + 64] & 3) << 4) |
                                      ((L[j + l + 96] & 3) << 6));
}
static inline int code_2bit(const uint8_t *qs, int e) { return (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3; }

/* Q4_K / Q5_K: 6-bit scale and min of sub-block j in 12 bytes */
static void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}
static void put_scale_min_k4(uint8_t *s, const uint8_t *ls, const uint8_t *lm)
{
    memset(s, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (uint8_t)((ls[j] & 0xf) | ((lm[j] & 0xf) << 4));
            s[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            s[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

/* Q3_K: 6-bit signed scale (stored + 32) of sub-block j in 12 bytes */
static void put_scales_q3(uint8_t *s, int j, int l)
{
    if (j < 8) s[j] = (uint8_t)(l & 0xf);
    else s[j - 8] |= (uint8_t)((l & 0xf) << 4);
    l >>= 4;
    s[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
}
static int get_scale_q3(const uint8_t *s, int j)
{
    int lo = j < 8 ? s[j] & 0xf : s[j - 8] >> 4;
    return (lo | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
}

/* =========================== Q2_K: scales[16] qs[64] d dmin (84) =========================== */

static void dq_q2_k(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += 84, y += QK_K) {
        const float d = gg_h2f(b + 80), min = gg_h2f(b + 82);
        for (int e = 0; e < QK_K; e += 16) {
            const uint8_t sc = b[e / 16];
            const float dl = d * (sc & 0xf), ml = min * (sc >> 4);
            for (int l = 0; l < 16; l++) y[e + l] = dl * (int8_t)code_2bit(b + 16, e + l) - ml;
        }
    }
}

/* codes against the rounded scales (sub-blocks whose scale is 0 keep the search's codes) */
static void requant_q2_k(const float *x, const uint8_t *b, uint8_t *L)
{
    for (int j = 0; j < QK_K / 16; j++) {
        const float d = gg_h2f(b + 80) * (b[j] & 0xf);
        if (!d) continue;
        const float dm = gg_h2f(b + 82) * (b[j] >> 4);
        for (int ii = 0; ii < 16; ii++) L[16 * j + ii] = (uint8_t)imax(0, imin(3, gg_nearest_int((x[16 * j + ii] + dm) / d)));
    }
}

static void q_q2_k(const float *x, const float *qw, uint8_t *b, int64_t n)
{
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K, b += 84) {
        uint8_t L[QK_K], Laux[16];
        float mins[16], scales[16], w[16];
        if (qw) {
            const float *q = qw + i * QK_K;
            float sw[16] = {0}, sumx2 = 0;
            uint8_t Ls[16], Lm[16];
            for (int j = 0; j < QK_K; j++) sumx2 += x[j] * x[j];
            float sigma2 = sumx2 / QK_K;
            for (int j = 0; j < 16; j++) {
                for (int l = 0; l < 16; l++) w[l] = q[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
                for (int l = 0; l < 16; l++) sw[j] += w[l];
                scales[j] = gg_make_qkx3_quants(16, 3, x + 16 * j, w, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36, 0);
            }
            float dm = gg_make_qp_quants(16, 15, scales, Ls, sw);
            float mm = gg_make_qp_quants(16, 15, mins, Lm, sw);
            gg_put_h(b + 80, dm);
            gg_put_h(b + 82, mm);
            for (int j = 0; j < 16; j++) b[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
        } else {
            float max_scale = 0, max_min = 0;
            for (int j = 0; j < 16; j++) {
                for (int l = 0; l < 16; l++) w[l] = fabsf(x[16 * j + l]);
                scales[j] = gg_make_qkx2_quants(16, 3, x + 16 * j, w, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, 1);
                if (scales[j] > max_scale) max_scale = scales[j];
                if (mins[j] > max_min) max_min = mins[j];
            }
            if (max_scale > 0) {
                float iscale = 15.f / max_scale;
                for (int j = 0; j < 16; j++) b[j] = (uint8_t)gg_nearest_int(iscale * scales[j]);
                gg_put_h(b + 80, max_scale / 15.f);
            } else {
                memset(b, 0, 16);
                gg_put_h(b + 80, 0.f);
            }
            if (max_min > 0) {
                float iscale = 15.f / max_min;
                for (int j = 0; j < 16; j++) b[j] |= (uint8_t)((unsigned)gg_nearest_int(iscale * mins[j]) << 4);
                gg_put_h(b + 82, max_min / 15.f);
            } else {
                gg_put_h(b + 82, 0.f);
            }
        }
        requant_q2_k(x, b, L);
        pack_2bit(b + 16, L);
    }
}

static void grid_q2_k(const uint8_t *b, float *A, float *B)
{
    const float d = gg_h2f(b + 80), min = gg_h2f(b + 82);
    for (int e = 0; e < QK_K; e++) {
        A[e] = d * (b[e / 16] & 0xf);
        B[e] = min * (b[e / 16] >> 4);
    }
}
static void pk_q2_k(uint8_t *b, const uint8_t *L) { pack_2bit(b + 16, L); }

/* ====================== Q3_K: hmask[32] qs[64] scales[12] d (110) ========================== */

static void dq_q3_k(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += 110, y += QK_K) {
        const float d_all = gg_h2f(b + 108);
        for (int e = 0; e < QK_K; e += 16) {
            const float dl = d_all * get_scale_q3(b + 96, e / 16);
            for (int l = 0; l < 16; l++) {
                const int k = e + l, h = (b[k % 32] >> (k / 32)) & 1;
                y[k] = dl * ((int8_t)code_2bit(b + 32, k) - (h ? 0 : 4));
            }
        }
    }
}

/* the 3-bit codes: L in [0, 8) = q + 4; bit 2 goes to hmask[e % 32] bit e / 32 */
static void pack_q3_k(uint8_t *b, const uint8_t *L)
{
    uint8_t low[QK_K];
    memset(b, 0, 32);
    for (int e = 0; e < QK_K; e++) {
        low[e] = L[e];
        if (L[e] > 3) {
            b[e % 32] |= (uint8_t)(1u << (e / 32));
            low[e] = (uint8_t)(L[e] - 4);
        }
    }
    pack_2bit(b + 32, low);
}

static void requant_q3_k(const float *x, const uint8_t *b, int8_t *L)
{
    for (int j = 0; j < 16; j++) {
        const float d = gg_h2f(b + 108) * get_scale_q3(b + 96, j);
        if (!d) continue;
        for (int ii = 0; ii < 16; ii++) L[16 * j + ii] = (int8_t)(imax(-4, imin(3, gg_nearest_int(x[16 * j + ii] / d))) + 4);
    }
}

static void q_q3_k(const float *x, const float *qw, uint8_t *b, int64_t n)
{
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K, b += 110) {
        int8_t L[QK_K];
        float scales[16];
        uint8_t *s = b + 96;
        memset(s, 0, 12);
        if (qw) {
            const float *q = qw + i * QK_K;
            float w[16], sw[16], sumx2 = 0;
            int8_t Ls[16];
            for (int j = 0; j < QK_K; j++) sumx2 += x[j] * x[j];
            float sigma2 = 2 * sumx2 / QK_K;
            for (int j = 0; j < 16; j++) {
                for (int l = 0; l < 16; l++) w[l] = q[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
                float sumw = 0;
                for (int l = 0; l < 16; l++) sumw += w[l];
                sw[j] = sumw;
                scales[j] = gg_make_qx_quants(16, 4, x + 16 * j, L + 16 * j, 1, w);
            }
            float d_block = gg_make_qx_quants(16, 32, scales, Ls, 1, sw);
            for (int j = 0; j < 16; j++) put_scales_q3(s, j, Ls[j]);
            gg_put_h(b + 108, d_block);
        } else {
            float max_scale = 0, amax = 0;
            for (int j = 0; j < 16; j++) {
                scales[j] = gg_make_q3_quants(16, 4, x + 16 * j, L + 16 * j, 1);
                float a = fabsf(scales[j]);
                if (a > amax) { amax = a; max_scale = scales[j]; }
            }
            if (max_scale) {
                float iscale = -32.f / max_scale;
                for (int j = 0; j < 16; j++) {
                    int8_t l = (int8_t)gg_nearest_int(iscale * scales[j]);
                    put_scales_q3(s, j, imax(-32, imin(31, l)) + 32);
                }
                gg_put_h(b + 108, 1 / iscale);
            } else {
                gg_put_h(b + 108, 0.f);
            }
        }
        requant_q3_k(x, b, L);
        pack_q3_k(b, (const uint8_t *)L);
    }
}

static void grid_q3_k(const uint8_t *b, float *A, float *B)
{
    const float d_all = gg_h2f(b + 108);
    for (int e = 0; e < QK_K; e++) {
        A[e] = d_all * get_scale_q3(b + 96, e / 16);
        B[e] = 0;
    }
}

/* ================== Q4_K: d dmin scales[12] qs[128] (144); Q5_K + qh[32] (176) ================= */

/* value of element e: d·sc_j·q − dmin·m_j, j = e / 32; 4 low bits from qs[32·(e/64) + e%32]
 * (low nibble when e % 64 < 32), Q5_K's fifth from qh[e % 32] bit e / 32 */
static void dq_q45_k(const uint8_t *b, float *y, int64_t nb, int five)
{
    const int bytes = five ? 176 : 144;
    for (int64_t i = 0; i < nb; i++, b += bytes, y += QK_K) {
        const float d = gg_h2f(b), min = gg_h2f(b + 2);
        const uint8_t *qh = b + 16, *qs = b + (five ? 48 : 16);
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            get_scale_min_k4(j, b + 4, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            const uint8_t *q = qs + 32 * (j / 2);
            for (int l = 0; l < 32; l++) {
                int v = (j & 1) ? q[l] >> 4 : q[l] & 0xf;
                if (five) v += (qh[l] >> j) & 1 ? 16 : 0;
                y[32 * j + l] = d1 * v - m1;
            }
        }
    }
}
static void dq_q4_k(const uint8_t *b, float *y, int64_t nb) { dq_q45_k(b, y, nb, 0); }
static void dq_q5_k(const uint8_t *b, float *y, int64_t nb) { dq_q45_k(b, y, nb, 1); }

static void pack_q45_k(uint8_t *b, const uint8_t *L, int five)
{
    uint8_t *qs = b + (five ? 48 : 16);
    if (five) memset(b + 16, 0, 32);
    for (int j = 0; j < QK_K; j += 64)
        for (int l = 0; l < 32; l++) {
            int l1 = L[j + l], l2 = L[j + l + 32];
            if (five) {
                if (l1 > 15) { l1 -= 16; b[16 + l] |= (uint8_t)(1u << (j / 32)); }
                if (l2 > 15) { l2 -= 16; b[16 + l] |= (uint8_t)(2u << (j / 32)); }
            }
            qs[j / 2 + l] = (uint8_t)((l1 & 0xf) | ((l2 & 0xf) << 4));
        }
}

static void q_q45_k(const float *x, const float *qw, uint8_t *b, int64_t n, int five)
{
    const int nmax = five ? 31 : 15, bytes = five ? 176 : 144;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K, b += bytes) {
        uint8_t L[QK_K], Laux[32], Ls[8], Lm[8];
        float w[32], mins[8], scales[8];
        if (qw) {
            const float *q = qw + i * QK_K;
            float sw[8], sum_x2 = 0;
            for (int l = 0; l < QK_K; l++) sum_x2 += x[l] * x[l];
            float sigma2 = 2 * sum_x2 / QK_K;
            for (int j = 0; j < 8; j++) {
                for (int l = 0; l < 32; l++) w[l] = q[32 * j + l] * sqrtf(sigma2 + x[32 * j + l] * x[32 * j + l]);
                float sumw = 0;
                for (int l = 0; l < 32; l++) sumw += w[l];
                sw[j] = sumw;
                scales[j] = gg_make_qkx3_quants(32, nmax, x + 32 * j, w, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36, 0);
            }
            float d_block = gg_make_qp_quants(8, 63, scales, Ls, sw);
            float m_block = gg_make_qp_quants(8, 63, mins, Lm, sw);
            for (int j = 0; j < 8; j++) {
                Ls[j] = (uint8_t)imin(63, Ls[j]);
                Lm[j] = (uint8_t)imin(63, Lm[j]);
            }
            put_scale_min_k4(b + 4, Ls, Lm);
            gg_put_h(b, d_block);
            gg_put_h(b + 2, m_block);
        } else {
            float max_scale = 0, max_min = 0;
            for (int j = 0; j < 8; j++) {
                float sum_x2 = 0;
                for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
                float av_x = sqrtf(sum_x2 / 32);
                for (int l = 0; l < 32; l++) w[l] = av_x + fabsf(x[32 * j + l]);
                scales[j] = five ? gg_make_qkx2_quants(32, 31, x + 32 * j, w, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15, 0)
                                 : gg_make_qkx2_quants(32, 15, x + 32 * j, w, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20, 0);
                if (scales[j] > max_scale) max_scale = scales[j];
                if (mins[j] > max_min) max_min = mins[j];
            }
            float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
            float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
            for (int j = 0; j < 8; j++) {
                uint8_t ls = (uint8_t)gg_nearest_int(inv_scale * scales[j]);
                uint8_t lm = (uint8_t)gg_nearest_int(inv_min * mins[j]);
                Ls[j] = (uint8_t)imin(63, ls);
                Lm[j] = (uint8_t)imin(63, lm);
            }
            put_scale_min_k4(b + 4, Ls, Lm);
            gg_put_h(b, max_scale / 63.f);
            gg_put_h(b + 2, max_min / 63.f);
        }
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            get_scale_min_k4(j, b + 4, &sc, &m);
            const float d = gg_h2f(b) * sc;
            if (!d) continue;
            const float dm = gg_h2f(b + 2) * m;
            for (int ii = 0; ii < 32; ii++)
                L[32 * j + ii] = (uint8_t)imax(0, imin(nmax, gg_nearest_int((x[32 * j + ii] + dm) / d)));
        }
        pack_q45_k(b, L, five);
    }
}
static void q_q4_k(const float *x, const float *qw, uint8_t *b, int64_t n) { q_q45_k(x, qw, b, n, 0); }
static void q_q5_k(const float *x, const float *qw, uint8_t *b, int64_t n) { q_q45_k(x, qw, b, n, 1); }

static void grid_q45_k(const uint8_t *b, float *A, float *B)
{
    const float d = gg_h2f(b), min = gg_h2f(b + 2);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        get_scale_min_k4(j, b + 4, &sc, &m);
        for (int l = 0; l < 32; l++) {
            A[32 * j + l] = d * sc;
            B[32 * j + l] = min * m;
        }
    }
}
static void pk_q4_k(uint8_t *b, const uint8_t *L) { pack_q45_k(b, L, 0); }
static void pk_q5_k(uint8_t *b, const uint8_t *L) { pack_q45_k(b, L, 1); }

/* ===================== Q6_K: ql[128] qh[64] int8 scales[16] d (210) ======================== */

/* element e = 128h + 32g + l: low 4 bits ql[64h + l + 32·(g&1)] (high nibble when g >= 2),
 * high 2 bits (qh[32h + l] >> 2g) & 3; value d·sc[e/16]·(q − 32) */
static inline int code_q6(const uint8_t *b, int e)
{
    const int h = e / 128, g = (e % 128) / 32, l = e % 32;
    const uint8_t lo = b[64 * h + l + 32 * (g & 1)];
    return ((g >= 2 ? lo >> 4 : lo & 0xf) | (((b[128 + 32 * h + l] >> (2 * g)) & 3) << 4));
}

static void dq_q6_k(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += 210, y += QK_K) {
        const float d = gg_h2f(b + 208);
        for (int e = 0; e < QK_K; e++) y[e] = d * (int8_t)b[192 + e / 16] * (int8_t)(code_q6(b, e) - 32);
    }
}

static void pack_q6_k(uint8_t *b, const uint8_t *L)
{
    uint8_t *ql = b, *qh = b + 128;
    for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32)
        for (int l = 0; l < 32; l++) {
            const uint8_t q1 = L[j + l] & 0xf, q2 = L[j + l + 32] & 0xf, q3 = L[j + l + 64] & 0xf, q4 = L[j + l + 96] & 0xf;
            ql[l] = (uint8_t)(q1 | (q3 << 4));
            ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
            qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                              ((L[j + l + 96] >> 4) << 6));
        }
}

static void q_q6_k(const float *x, const float *qw, uint8_t *b, int64_t n)
{
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K, b += 210) {
        int8_t L[QK_K];
        float scales[16], max_scale = 0, max_abs = 0;
        for (int ib = 0; ib < 16; ib++) {
            /* llama.cpp hands the raw importance to the search here (no σ² term) */
            const float s = gg_make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, 1, qw ? qw + i * QK_K + 16 * ib : NULL);
            scales[ib] = s;
            if (fabsf(s) > max_abs) { max_abs = fabsf(s); max_scale = s; }
        }
        if (max_abs < GG_EPS) {
            memset(b, 0, 210);
            gg_put_h(b + 208, 0.f);
            continue;
        }
        float iscale = -128.f / max_scale;
        gg_put_h(b + 208, 1 / iscale);
        for (int ib = 0; ib < 16; ib++) b[192 + ib] = (uint8_t)(int8_t)imin(127, gg_nearest_int(iscale * scales[ib]));
        for (int j = 0; j < 16; j++) {
            const float d = gg_h2f(b + 208) * (int8_t)b[192 + j];
            if (!d) continue;
            for (int ii = 0; ii < 16; ii++) L[16 * j + ii] = (int8_t)(imax(-32, imin(31, gg_nearest_int(x[16 * j + ii] / d))) + 32);
        }
        pack_q6_k(b, (const uint8_t *)L);
    }
}

static void grid_q6_k(const uint8_t *b, float *A, float *B)
{
    const float d = gg_h2f(b + 208);
    for (int e = 0; e < QK_K; e++) {
        A[e] = d * (int8_t)b[192 + e / 16];
        B[e] = 0;
    }
}

const gg_codec gg_codec_q2_k = {MOEQ_GGML_Q2_K, "Q2_K", QK_K, 84, dq_q2_k, q_q2_k, 4, 0, NULL, grid_q2_k, pk_q2_k};
const gg_codec gg_codec_q3_k = {MOEQ_GGML_Q3_K, "Q3_K", QK_K, 110, dq_q3_k, q_q3_k, 8, 4, NULL, grid_q3_k, pack_q3_k};
const gg_codec gg_codec_q4_k = {MOEQ_GGML_Q4_K, "Q4_K", QK_K, 144, dq_q4_k, q_q4_k, 16, 0, NULL, grid_q45_k, pk_q4_k};
const gg_codec gg_codec_q5_k = {MOEQ_GGML_Q5_K, "Q5_K", QK_K, 176, dq_q5_k, q_q5_k, 32, 0, NULL, grid_q45_k, pk_q5_k};
const gg_codec gg_codec_q6_k = {MOEQ_GGML_Q6_K, "Q6_K", QK_K, 210, dq_q6_k, q_q6_k, 64, 32, NULL, grid_q6_k, pack_q6_k};
