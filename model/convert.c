/* Widening of BF16 / F16 / F32 weights to float32. Plain loops over bit patterns so the
 * compiler vectorizes them; the F16 path is exact for every half value (subnormals, inf,
 * NaN payloads), checked against an ldexp formula over all 65536 patterns in test_config. */
#include "moeq_model.h"
#include "moeq_kernels.h"
#include "moeq_gguf.h"
#include "moeq_tdict.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* IEEE binary16 → binary32. Normal numbers re-bias the exponent (15 → 127); subnormals are
 * m·2^-24, computed exactly in float; inf/NaN keep the payload. Branch-free selects. */
static inline float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7fffu;
    uint32_t normal = (em << 13) + ((uint32_t)(127 - 15) << 23);
    uint32_t infnan = (em << 13) | 0x7f800000u;
    float sub = (float)em * 0x1p-24f;          /* exact: em < 2^10 */
    uint32_t subbits;
    memcpy(&subbits, &sub, sizeof subbits);
    /* masks instead of branches so the loop vectorizes */
    uint32_t is_inf = 0u - (uint32_t)(em >= 0x7c00u);
    uint32_t is_norm = 0u - (uint32_t)(em >= 0x0400u);
    uint32_t r = (infnan & is_inf) | (normal & is_norm & ~is_inf) | (subbits & ~is_norm);
    return bits_f32(r | sign);
}

/* Blocks of 16 with a constant inner trip count: GCC's -O2 cost model vectorizes only those. */
#define BLK 16

static void row_to_f32(moeq_dtype dt, const void *src, int64_t n, float *dst)
{
    int64_t nb = n - n % BLK;
    switch (dt) {
    case MOEQ_DT_BF16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < nb; i += BLK)
            for (int j = 0; j < BLK; j++) dst[i + j] = bits_f32((uint32_t)s[i + j] << 16);
        for (int64_t i = nb; i < n; i++) dst[i] = bits_f32((uint32_t)s[i] << 16);
        break;
    }
    case MOEQ_DT_F16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < nb; i += BLK)
            for (int j = 0; j < BLK; j++) dst[i + j] = f16_to_f32(s[i + j]);
        for (int64_t i = nb; i < n; i++) dst[i] = f16_to_f32(s[i]);
        break;
    }
    case MOEQ_DT_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        break;
    default:
        /* the model view admits only the three dtypes above; zeros keep a misuse visible
         * without reading memory of an unknown layout */
        memset(dst, 0, (size_t)n * sizeof(float));
        break;
    }
}

/* e4m3fn: sign, 4 exponent bits (bias 7), 3 mantissa bits; exponent 0 is subnormal, 0x7f and
 * 0xff are NaN, there is no infinity. Exact in float. */
static float e4m3_value(unsigned b)
{
    unsigned e = (b >> 3) & 15, mant = b & 7;
    float v;
    if (e == 15 && mant == 7) v = NAN;
    else if (e == 0) v = ldexpf((float)mant, -9);            /* mant/8 * 2^-6 */
    else v = ldexpf((float)(8 + mant), (int)e - 10);          /* (1 + mant/8) * 2^(e-7) */
    return (b & 0x80) ? -v : v;
}

/* Rows [r0, r1) of a block-scaled FP8 matrix: each value times its block's scale, in float
 * (the float32 product transformers' dequantization computes). */
static void fp8_rows_to_f32(const moeq_mat *m, int64_t r0, int64_t r1, float *dst)
{
    static float lut[256];
    static int lut_ready;   /* benign race: every thread writes the same values */
    if (!lut_ready) {
        for (unsigned b = 0; b < 256; b++) lut[b] = e4m3_value(b);
        lut_ready = 1;
    }
    const int64_t C = m->cols, bc = m->block_cols, nsc = m->scale_cols;
    float srow[4096];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *src = (const uint8_t *)m->data + (size_t)r * (size_t)C;
        int64_t sr = r / m->block_rows;
        /* the view checked nsc = ceil(C / bc) <= 4096 (CF-11) */
        if (m->scale_dtype == MOEQ_DT_F32) memcpy(srow, (const float *)m->scale + sr * nsc, (size_t)nsc * sizeof(float));
        else row_to_f32(m->scale_dtype, (const uint16_t *)m->scale + sr * nsc, nsc, srow);
        float *d = dst + (r - r0) * C;
        for (int64_t c = 0; c < C; c++) d[c] = lut[src[c]] * srow[c / bc];
    }
}

/* e2m1 (MXFP4 elements): sign, 2 exponent bits, 1 mantissa bit; mxfp4.py's FP4_VALUES. */
static const float e2m1_lut[16] = { 0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                    -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f };

/* Rows [r0, r1) of an MXFP4 view: per 32 columns one e8m0 scale 2^(s - 127), 16 bytes of two
 * e2m1 codes each (column 2t in the low nibble, 2t + 1 in the high one), as transformers'
 * convert_moe_packed_tensors decodes them; the products are exact in float. */
static void mxfp4_rows_to_f32(const moeq_mat *m, int64_t r0, int64_t r1, float *dst)
{
    const int64_t C = m->cols, G = C / 32;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *b = (const uint8_t *)m->data + (size_t)(r * m->rstep) * (size_t)(C / 2);
        const uint8_t *sc = m->mx_scales + (size_t)(r * m->rstep) * (size_t)G;
        float *d = dst + (r - r0) * C;
        for (int64_t g = 0; g < G; g++) {
            /* e8m0 255 is NaN in the OCP spec; ldexp gives inf like transformers' ldexp */
            float s = ldexpf(1.0f, (int)sc[g] - 127);
            for (int t = 0; t < 16; t++) {
                uint8_t x = b[g * 16 + t];
                d[g * 32 + 2 * t] = e2m1_lut[x & 15] * s;
                d[g * 32 + 2 * t + 1] = e2m1_lut[x >> 4] * s;
            }
        }
    }
}

/* Rows [r0, r1) of a strided view, column by column so that the inner loop walks rstep (the
 * short stride of gpt_oss's transposed experts). */
static void strided_rows_to_f32(const moeq_mat *m, int64_t r0, int64_t r1, float *dst)
{
    const int64_t C = m->cols, n = r1 - r0;
    const size_t es = m->dtype == MOEQ_DT_F32 ? 4 : 2;
    float col[256];
    for (int64_t c = 0; c < C; c++)
        for (int64_t i0 = 0; i0 < n; i0 += 256) {
            int64_t nb = n - i0 < 256 ? n - i0 : 256;
            const unsigned char *base = (const unsigned char *)m->data + (size_t)((r0 + i0) * m->rstep + c * m->cstep) * es;
            if (m->rstep == 1) row_to_f32(m->dtype, base, nb, col);
            else {
                uint16_t h[256];
                uint32_t w[256];
                for (int64_t i = 0; i < nb; i++) {
                    if (es == 4) memcpy(&w[i], base + (size_t)(i * m->rstep) * 4, 4);
                    else memcpy(&h[i], base + (size_t)(i * m->rstep) * 2, 2);
                }
                row_to_f32(m->dtype, es == 4 ? (const void *)w : (const void *)h, nb, col);
            }
            for (int64_t i = 0; i < nb; i++) dst[(i0 + i) * C + c] = col[i];
        }
}

int moeq_mat_widens(const moeq_mat *m)
{
    if (!m || m->q || m->gtype) return 0;
    return m->dtype == MOEQ_DT_F8_E4M3 || m->mx_scales != NULL || m->rstep != 0 || m->cstep != 0;
}

void moeq_mat_to_f32(const moeq_mat *m, int64_t r0, int64_t r1, float *dst)
{
    if (!m || !dst || !m->data || r0 < 0 || r1 > m->rows || r0 >= r1) return;
    if (m->mx_scales) {
        mxfp4_rows_to_f32(m, r0, r1, dst);
        return;
    }
    if (!m->q && !m->gtype && (m->rstep || m->cstep)) {
        strided_rows_to_f32(m, r0, r1, dst);
        return;
    }
    if (m->q) {
        moeq_kernels()->dequant(m->q, r0, r1, dst);
        return;
    }
    if (m->dtype == MOEQ_DT_F8_E4M3) {
        if (m->scale) fp8_rows_to_f32(m, r0, r1, dst);
        else memset(dst, 0, (size_t)((r1 - r0) * m->cols) * sizeof(float));   /* not a view moeq builds */
        return;
    }
    if (m->gtype == MOEQ_TDICT_GTYPE) {
        moeq_tdict_dequant(m->data, r0, r1, dst);
        return;
    }
    if (m->gtype) {   /* a GGUF block type, row by row */
        for (int64_t r = r0; r < r1; r++)
            moeq_gguf_row_to_f32(m->gtype, (const unsigned char *)m->data + (size_t)r * m->grow,
                                 dst + (size_t)(r - r0) * (size_t)m->cols, m->cols);
        return;
    }
    size_t es = m->dtype == MOEQ_DT_F32 ? 4 : 2;   /* the view admits F32, F16, BF16 */
    const unsigned char *base = (const unsigned char *)m->data + (size_t)r0 * (size_t)m->cols * es;
    row_to_f32(m->dtype, base, (r1 - r0) * m->cols, dst);
}

void moeq_vec_to_f32(const moeq_vec *v, float *dst)
{
    if (!v || !dst || !v->data || v->n <= 0) return;
    row_to_f32(v->dtype, v->data, v->n, dst);
}
