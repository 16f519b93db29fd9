/* ggml's non-linear 4-bit types (docs/GGML-TYPES.md): IQ4_NL (blocks of 32: d f16, qs[16])
 * and IQ4_XS (super-blocks of 256: d f16, scales_h u16, scales_l[4], qs[128]; 8 sub-blocks
 * of 32 with 6-bit scales ls − 32). Values are d·kvalues[q] with llama.cpp's 16-entry grid.
 * Both quantizers are llama.cpp's quantize_row_iq4_nl_impl with ntry = 7, which is what
 * llama-quantize runs with and without an imatrix (its quantize_row_iq4_nl_ref, ntry −1, is
 * used by nothing that writes files): per sub-block the best of 15 scales against the grid by
 * weighted least squares, then for IQ4_XS the sub-block scales rounded to d·(l − 32). */
#include "kernels/ggml/ggml_impl.h"

const int8_t gg_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static void pack_nibbles32(uint8_t *qs, const uint8_t *L, int n)
{
    for (int i = 0; i < n / 32; i++)
        for (int j = 0; j < 16; j++) qs[16 * i + j] = (uint8_t)((L[32 * i + j] & 0xf) | ((L[32 * i + 16 + j] & 0xf) << 4));
}

/* one (super-)block of sbs values in sub-blocks of 32; writes d (dh), the codes, and for
 * IQ4_XS the scales. qw: the block's importances or NULL (then x²). */
static void iq4_block(int sbs, const float *x, uint8_t *dh, uint8_t *q4, uint8_t *scales_h, uint8_t *scales_l,
                      const float *qw)
{
    const int8_t *values = gg_iq4nl_values;
    const int ntry = 7, nsub = sbs / 32;
    float scales[8], weight[32];
    uint8_t L[GG_QK_K];
    memset(L, 0, sizeof L);
    float sigma2 = 0;
    for (int j = 0; j < sbs; j++) sigma2 += x[j] * x[j];
    sigma2 *= 2.f / sbs;
    memset(q4, 0, (size_t)sbs / 2);
    gg_put_h(dh, 0.f);
    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < nsub; ib++) {
        const float *xb = x + 32 * ib;
        uint8_t *Lb = L + 32 * ib;
        if (qw) {
            for (int j = 0; j < 32; j++) weight[j] = qw[32 * ib + j] * sqrtf(sigma2 + xb[j] * xb[j]);
        } else {
            for (int j = 0; j < 32; j++) weight[j] = xb[j] * xb[j];
        }
        float amax = 0, max = 0;
        for (int j = 0; j < 32; j++) {
            float ax = fabsf(xb[j]);
            if (ax > amax) { amax = ax; max = xb[j]; }
        }
        if (amax < GG_EPS) {
            scales[ib] = 0;
            continue;
        }
        float d = -max / values[0];
        float id = 1 / d;
        float sumqx = 0, sumq2 = 0;
        for (int j = 0; j < 32; j++) {
            int l = gg_best_index_int8(16, values, id * xb[j]);
            Lb[j] = (uint8_t)l;
            float q = values[l], w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
        float best = d * sumqx;
        for (int itry = -ntry; itry <= ntry; itry++) {
            id = (itry + values[0]) / max;
            sumqx = sumq2 = 0;
            for (int j = 0; j < 32; j++) {
                int l = gg_best_index_int8(16, values, id * xb[j]);
                float q = values[l], w = weight[j];
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
            if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        if (fabsf(d) > amax_scale) { amax_scale = fabsf(d); max_scale = d; }
    }
    if (nsub > 1) {
        gg_wr16(scales_h, 0);
        float d = -max_scale / 32;
        gg_put_h(dh, d);
        float id = d ? 1 / d : 0.f;
        uint16_t sh = 0;
        for (int ib = 0; ib < nsub; ib++) {
            int l = gg_nearest_int(id * scales[ib]);
            l = l < -32 ? -32 : l > 31 ? 31 : l;
            float dl = d * l;
            float idl = dl ? 1 / dl : 0.f;
            for (int j = 0; j < 32; j++) L[32 * ib + j] = (uint8_t)gg_best_index_int8(16, values, idl * x[32 * ib + j]);
            l += 32;
            if (ib % 2 == 0) scales_l[ib / 2] = (uint8_t)(l & 0xf);
            else scales_l[ib / 2] |= (uint8_t)((l & 0xf) << 4);
            sh |= (uint16_t)((l >> 4) << (2 * (ib % 8)));
        }
        gg_wr16(scales_h, sh);
    } else {
        gg_put_h(dh, scales[0]);
        float id = scales[0] ? 1 / scales[0] : 0;
        for (int j = 0; j < sbs; j++) L[j] = (uint8_t)gg_best_index_int8(16, values, id * x[j]);
    }
    pack_nibbles32(q4, L, sbs);
}

/* ---- IQ4_NL -------------------------------------------------------------------------------- */

static void dq_iq4_nl(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += 18, y += 32) {
        const float d = gg_h2f(b);
        for (int j = 0; j < 16; j++) {
            y[j] = d * gg_iq4nl_values[b[2 + j] & 0xf];
            y[j + 16] = d * gg_iq4nl_values[b[2 + j] >> 4];
        }
    }
}

static void q_iq4_nl(const float *x, const float *qw, uint8_t *b, int64_t n)
{
    for (int64_t i = 0; i < n / 32; i++)
        iq4_block(32, x + 32 * i, b + 18 * i, b + 18 * i + 2, NULL, NULL, qw ? qw + 32 * i : NULL);
}

static void grid_iq4_nl(const uint8_t *b, float *A, float *B)
{
    for (int e = 0; e < 32; e++) { A[e] = gg_h2f(b); B[e] = 0; }
}
static void pk_iq4_nl(uint8_t *b, const uint8_t *L) { pack_nibbles32(b + 2, L, 32); }

/* ---- IQ4_XS -------------------------------------------------------------------------------- */

static inline int iq4xs_ls(const uint8_t *b, int ib)
{
    return ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xf) | (((gg_rd16(b + 2) >> (2 * ib)) & 3) << 4);
}

static void dq_iq4_xs(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += 136) {
        const float d = gg_h2f(b);
        for (int ib = 0; ib < 8; ib++, y += 32) {
            const float dl = d * (iq4xs_ls(b, ib) - 32);
            const uint8_t *qs = b + 8 + 16 * ib;
            for (int j = 0; j < 16; j++) {
                y[j] = dl * gg_iq4nl_values[qs[j] & 0xf];
                y[j + 16] = dl * gg_iq4nl_values[qs[j] >> 4];
            }
        }
    }
}

static void q_iq4_xs(const float *x, const float *qw, uint8_t *b, int64_t n)
{
    for (int64_t i = 0; i < n / GG_QK_K; i++) {
        uint8_t *blk = b + 136 * i;
        iq4_block(GG_QK_K, x + GG_QK_K * i, blk, blk + 8, blk + 2, blk + 4, qw ? qw + GG_QK_K * i : NULL);
    }
}

static void grid_iq4_xs(const uint8_t *b, float *A, float *B)
{
    const float d = gg_h2f(b);
    for (int e = 0; e < GG_QK_K; e++) {
        A[e] = d * (iq4xs_ls(b, e / 32) - 32);
        B[e] = 0;
    }
}
static void pk_iq4_xs(uint8_t *b, const uint8_t *L) { pack_nibbles32(b + 8, L, GG_QK_K); }

const gg_codec gg_codec_iq4_nl = {MOEQ_GGML_IQ4_NL, "IQ4_NL", 32, 18, dq_iq4_nl, q_iq4_nl, 16, 0, gg_iq4nl_values,
                                  grid_iq4_nl, pk_iq4_nl};
const gg_codec gg_codec_iq4_xs = {MOEQ_GGML_IQ4_XS, "IQ4_XS", GG_QK_K, 136, dq_iq4_xs, q_iq4_xs, 16, 0, gg_iq4nl_values,
                                  grid_iq4_xs, pk_iq4_xs};
