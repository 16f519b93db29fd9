/* ggml's 32-value ("legacy") blocks: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (docs/GGML-TYPES.md).
 * Element e and e + 16 share a byte (low, high nibble). Dequantization and the reference
 * quantizers follow llama.cpp's float operations exactly; the weighted quantizers are its
 * quantize_row_*_impl with importance weights (weight = w · sqrt(σ² + x²), σ² the row's mean
 * square). */
#include "kernels/ggml/ggml_impl.h"

#include <float.h>

enum { QK = 32 };

/* ---- packing shared by the five types ---------------------------------------------------- */

static void pack_nibbles(uint8_t *qs, const uint8_t *L)
{
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((L[j] & 0xf) | ((L[j + 16] & 0xf) << 4));
}

static void pack_5bit(uint8_t *qh, uint8_t *qs, const uint8_t *L)
{
    uint32_t h = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((L[j] & 0x0f) | ((L[j + 16] & 0x0f) << 4));
        h |= ((L[j] & 0x10u) >> 4) << j;
        h |= ((L[j + 16] & 0x10u) >> 4) << (j + 16);
    }
    for (int k = 0; k < 4; k++) qh[k] = (uint8_t)(h >> (8 * k));
}

static inline uint32_t rd32(const uint8_t *p) { return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

/* the row's σ² of the weighted quantizers, and the per-block weights from it */
static float row_sigma2(const float *x, int64_t n)
{
    float s = 0;
    for (int64_t j = 0; j < n; j++) s += x[j] * x[j];
    return s / n;
}

static void block_weights(const float *xb, const float *qw, float sigma2, float *w)
{
    for (int j = 0; j < QK; j++) w[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
}

/* ---- Q4_0: d f16, qs[16]; y = (q - 8)·d -------------------------------------------------- */

static void dq_q4_0(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += 18, y += QK) {
        const float d = gg_h2f(b);
        for (int j = 0; j < 16; j++) {
            y[j] = ((b[2 + j] & 0x0f) - 8) * d;
            y[j + 16] = ((b[2 + j] >> 4) - 8) * d;
        }
    }
}

static void q_q4_0(const float *x, const float *qw, uint8_t *b, int64_t n)
{
    float sigma2 = qw ? row_sigma2(x, n) : 0, w[QK];
    for (int64_t i = 0; i < n / QK; i++, x += QK, b += 18) {
        uint8_t L[QK];
        if (qw) {
            block_weights(x, qw + i * QK, sigma2, w);
            int8_t l8[QK];
            float d = gg_make_qx_quants(QK, 8, x, l8, 1, w);
            gg_put_h(b, d);
            for (int j = 0; j < QK; j++) L[j] = (uint8_t)l8[j];
        } else {
            float amax = 0, max = 0;
            for (int j = 0; j < QK; j++)
                if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
            const float d = max / -8;
            const float id = d ? 1.0f / d : 0.0f;
            gg_put_h(b, d);
            for (int j = 0; j < QK; j++) {
                int q = gg_trunc_i8(x[j] * id + 8.5f);
                L[j] = (uint8_t)(q < 15 ? q : 15);
            }
        }
        pack_nibbles(b + 2, L);
    }
}

static void grid_q4_0(const uint8_t *b, float *A, float *B)
{
    for (int e = 0; e < QK; e++) { A[e] = gg_h2f(b); B[e] = 0; }
}
static void pk_q4_0(uint8_t *b, const uint8_t *L) { pack_nibbles(b + 2, L); }

/* ---- Q4_1: d, m f16, qs[16]; y = q·d + m ------------------------------------------------- */

static void dq_q4_1(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += 20, y += QK) {
        const float d = gg_h2f(b), m = gg_h2f(b + 2);
        for (int j = 0; j < 16; j++) {
            y[j] = (b[4 + j] & 0x0f) * d + m;
            y[j + 16] = (b[4 + j] >> 4) * d + m;
        }
    }
}

/* min/max reference of Q4_1 and Q5_1: d = (max − min)/nmax, codes rounded by +0.5 */
static void minmax_block(const float *x, int nmax, uint8_t *b, uint8_t *L)
{
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < QK; j++) {
        if (x[j] < min) min = x[j];
        if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / nmax;
    const float id = d ? 1.0f / d : 0.0f;
    gg_put_h(b, d);
    gg_put_h(b + 2, min);
    for (int j = 0; j < QK; j++) {
        int q = gg_trunc_i8((x[j] - min) * id + 0.5f);
        if (nmax == 15) q = q < 15 ? q : 15;
        L[j] = (uint8_t)q;
    }
}

static void q_q4_1(const float *x, const float *qw, uint8_t *b, int64_t n)
{
    float sigma2 = qw ? row_sigma2(x, n) : 0, w[QK];
    for (int64_t i = 0; i < n / QK; i++, x += QK, b += 20) {
        uint8_t L[QK], Laux[QK];
        if (qw) {
            block_weights(x, qw + i * QK, sigma2, w);
            float min, d = gg_make_qkx3_quants(QK, 15, x, w, L, &min, Laux, -0.9f, 0.05f, 36, 0);
            gg_put_h(b, d);
            gg_put_h(b + 2, -min);
        } else {
            minmax_block(x, 15, b, L);
        }
        pack_nibbles(b + 4, L);
    }
}

static void grid_q4_1(const uint8_t *b, float *A, float *B)
{
    for (int e = 0; e < QK; e++) { A[e] = gg_h2f(b); B[e] = -gg_h2f(b + 2); }
}
static void pk_q4_1(uint8_t *b, const uint8_t *L) { pack_nibbles(b + 4, L); }

/* ---- Q5_0: d f16, qh u32, qs[16]; y = (q - 16)·d ----------------------------------------- */

static void dq_5(const uint8_t *qh4, const uint8_t *qs, int q[QK])
{
    const uint32_t qh = rd32(qh4);
    for (int j = 0; j < 16; j++) {
        q[j] = (qs[j] & 0x0f) | (int)(((qh >> j) << 4) & 0x10);
        q[j + 16] = (qs[j] >> 4) | (int)((qh >> (j + 12)) & 0x10);
    }
}

static void dq_q5_0(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += 22, y += QK) {
        const float d = gg_h2f(b);
        int q[QK];
        dq_5(b + 2, b + 6, q);
        for (int j = 0; j < QK; j++) y[j] = (q[j] - 16) * d;
    }
}

static void q_q5_0(const float *x, const float *qw, uint8_t *b, int64_t n)
{
    float sigma2 = qw ? row_sigma2(x, n) : 0, w[QK];
    for (int64_t i = 0; i < n / QK; i++, x += QK, b += 22) {
        uint8_t L[QK];
        if (qw) {
            block_weights(x, qw + i * QK, sigma2, w);
            int8_t l8[QK];
            float d = gg_make_qx_quants(QK, 16, x, l8, 1, w);
            gg_put_h(b, d);
            for (int j = 0; j < QK; j++) L[j] = (uint8_t)l8[j];
        } else {
            float amax = 0, max = 0;
            for (int j = 0; j < QK; j++)
                if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
            const float d = max / -16;
            const float id = d ? 1.0f / d : 0.0f;
            gg_put_h(b, d);
            for (int j = 0; j < QK; j++) {
                int q = gg_trunc_i8(x[j] * id + 16.5f);
                L[j] = (uint8_t)(q < 31 ? q : 31);
            }
        }
        pack_5bit(b + 2, b + 6, L);
    }
}

static void grid_q5_0(const uint8_t *b, float *A, float *B) { grid_q4_0(b, A, B); }
static void pk_q5_0(uint8_t *b, const uint8_t *L) { pack_5bit(b + 2, b + 6, L); }

/* ---- Q5_1: d, m f16, qh u32, qs[16]; y = q·d + m ----------------------------------------- */

static void dq_q5_1(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += 24, y += QK) {
        const float d = gg_h2f(b), m = gg_h2f(b + 2);
        int q[QK];
        dq_5(b + 4, b + 8, q);
        for (int j = 0; j < QK; j++) y[j] = q[j] * d + m;
    }
}

static void q_q5_1(const float *x, const float *qw, uint8_t *b, int64_t n)
{
    float sigma2 = qw ? row_sigma2(x, n) : 0, w[QK];
    for (int64_t i = 0; i < n / QK; i++, x += QK, b += 24) {
        uint8_t L[QK], Laux[QK];
        if (qw) {
            block_weights(x, qw + i * QK, sigma2, w);
            float min, d = gg_make_qkx3_quants(QK, 31, x, w, L, &min, Laux, -0.9f, 0.05f, 36, 0);
            gg_put_h(b, d);
            gg_put_h(b + 2, -min);
        } else {
            minmax_block(x, 31, b, L);
        }
        pack_5bit(b + 4, b + 8, L);
    }
}

static void grid_q5_1(const uint8_t *b, float *A, float *B) { grid_q4_1(b, A, B); }
static void pk_q5_1(uint8_t *b, const uint8_t *L) { pack_5bit(b + 4, b + 8, L); }

/* ---- Q8_0: d f16, int8 qs[32]; y = q·d ---------------------------------------------------- */

static void dq_q8_0(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += 34, y += QK) {
        const float d = gg_h2f(b);
        for (int j = 0; j < QK; j++) y[j] = (int8_t)b[2 + j] * d;
    }
}

/* llama.cpp ignores the importance for Q8_0; moeq fits the scale by weighted least squares
 * over the candidate grids 127 ± 0.1·k (codes in [−127, 127]), keeping the reference's
 * scale when nothing beats it. */
static float q8_weighted(const float *x, const float *w, int8_t *q)
{
    float amax = 0;
    for (int j = 0; j < QK; j++) amax = amax > fabsf(x[j]) ? amax : fabsf(x[j]);
    if (amax < GG_EPS) {
        memset(q, 0, QK);
        return 0;
    }
    float d = amax / 127, best = -1;
    for (int j = 0; j < QK; j++) q[j] = (int8_t)gg_round_i8(x[j] / d);
    for (int k = -9; k <= 0; k++) {
        float is = (127 + 0.1f * k) / amax, sx = 0, s2 = 0;
        int8_t l[QK];
        for (int j = 0; j < QK; j++) {
            int v = gg_nearest_int(is * x[j]);
            v = v < -127 ? -127 : v > 127 ? 127 : v;
            l[j] = (int8_t)v;
            sx += w[j] * x[j] * v;
            s2 += w[j] * v * v;
        }
        if (s2 > 0 && sx * sx > best * s2) {
            best = sx * sx / s2;
            d = sx / s2;
            memcpy(q, l, QK);
        }
    }
    return d;
}

static void q_q8_0(const float *x, const float *qw, uint8_t *b, int64_t n)
{
    for (int64_t i = 0; i < n / QK; i++, x += QK, b += 34) {
        if (qw) {
            int8_t q[QK];
            gg_put_h(b, q8_weighted(x, qw + i * QK, q));
            memcpy(b + 2, q, QK);
            continue;
        }
        float amax = 0;
        for (int j = 0; j < QK; j++) amax = amax > fabsf(x[j]) ? amax : fabsf(x[j]);
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        gg_put_h(b, d);
        for (int j = 0; j < QK; j++) b[2 + j] = (uint8_t)(int8_t)gg_round_i8(x[j] * id);
    }
}

static void grid_q8_0(const uint8_t *b, float *A, float *B) { grid_q4_0(b, A, B); }
static void pk_q8_0(uint8_t *b, const uint8_t *L)
{
    for (int j = 0; j < QK; j++) b[2 + j] = (uint8_t)(L[j] - 128);
}

const gg_codec gg_codec_q4_0 = {MOEQ_GGML_Q4_0, "Q4_0", QK, 18, dq_q4_0, q_q4_0, 16, 8, NULL, grid_q4_0, pk_q4_0};
const gg_codec gg_codec_q4_1 = {MOEQ_GGML_Q4_1, "Q4_1", QK, 20, dq_q4_1, q_q4_1, 16, 0, NULL, grid_q4_1, pk_q4_1};
const gg_codec gg_codec_q5_0 = {MOEQ_GGML_Q5_0, "Q5_0", QK, 22, dq_q5_0, q_q5_0, 32, 16, NULL, grid_q5_0, pk_q5_0};
const gg_codec gg_codec_q5_1 = {MOEQ_GGML_Q5_1, "Q5_1", QK, 24, dq_q5_1, q_q5_1, 32, 0, NULL, grid_q5_1, pk_q5_1};
/* Q8_0 codes for GPTQ: L = q + 128, q in [−128, 127] */
const gg_codec gg_codec_q8_0 = {MOEQ_GGML_Q8_0, "Q8_0", QK, 34, dq_q8_0, q_q8_0, 256, 128, NULL, grid_q8_0, pk_q8_0};
