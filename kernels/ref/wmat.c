/* Reference GEMM of float weights (F32, F16, BF16 as stored): plain C, the truth the fast
 * variants are tested against. Each product w * x is exact in float64 (a widened weight has at
 * most 24 significant bits, x 24), the sum is float64 and rounded once. */
#include "moeq_kernels.h"

#include <string.h>

static double weight(const moeq_wmat *w, int64_t r, int64_t c)
{
    size_t i = (size_t)r * (size_t)moeq_wmat_ld(w) + (size_t)c;
    switch (w->type) {
    case MOEQ_W_F16: return moeq_f16_to_f32(((const uint16_t *)w->data)[i]);
    case MOEQ_W_BF16: {
        uint32_t b = (uint32_t)((const uint16_t *)w->data)[i] << 16;   /* bf16 is the top half of a float */
        float f;
        memcpy(&f, &b, 4);
        return f;
    }
    default: return ((const float *)w->data)[i];
    }
}

void moeq_ref_wgemm(const moeq_wmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                    float *Y, int64_t ldy)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t r = r0; r < r1; r++) {
            double s = 0;
            for (int64_t c = 0; c < w->cols; c++) s += weight(w, r, c) * (double)X[i * ldx + c];
            Y[i * ldy + (r - r0)] = (float)s;
        }
}

/* x rounded to bf16 as vcvtne2ps2bf16 does: nearest even, NaN kept (quiet). */
static float round_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) u |= 0x00400000u;
    else u += 0x7fffu + ((u >> 16) & 1);
    u &= 0xffff0000u;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void moeq_ref_wgemm_bf16x(const moeq_wmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                          float *Y, int64_t ldy)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t r = r0; r < r1; r++) {
            double s = 0;
            for (int64_t c = 0; c < w->cols; c++) s += weight(w, r, c) * (double)round_bf16(X[i * ldx + c]);
            Y[i * ldy + (r - r0)] = (float)s;
        }
}
