/* Reference kernels of the int codecs: plain C, no intrinsics, kept forever as the truth.
 * dequant computes w = scale * (q - zero) in float32 (the fast variants match it bit for
 * bit); gemv/gemm dot the dequantized row with x in float64 and round once. */
#include "moeq_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

float moeq_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, em = h & 0x7fffu, r;
    if (em >= 0x7c00u) r = (em << 13) | 0x7f800000u;                 /* inf / NaN */
    else if (em >= 0x0400u) r = (em << 13) + ((uint32_t)(127 - 15) << 23);
    else {
        float sub = (float)em * 0x1p-24f;                             /* exact */
        memcpy(&r, &sub, 4);
    }
    r |= sign;
    float f;
    memcpy(&f, &r, 4);
    return f;
}

uint16_t moeq_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);        /* rounds to >= 65520: inf */
    if (ax < 0x38800000u) {                                          /* subnormal half or zero */
        if (ax < 0x33000000u) return (uint16_t)sign;                 /* < 2^-25: rounds to 0 */
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)(ax >> 23);                           /* 14 + (113 - e) */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = ax - ((uint32_t)(127 - 15) << 23);
    uint32_t q = r >> 13, rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1))) q++;
    return (uint16_t)(sign | q);
}

moeq_status moeq_qmat_check(int bits, int group, int64_t rows, int64_t cols, moeq_error *err)
{
    if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%d-bit codes are not supported (2, 3, 4 or 8)", bits);
    if (rows <= 0 || cols <= 0 || rows > ((int64_t)1 << 40) || cols > ((int64_t)1 << 31))
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "matrix [%lld, %lld] is empty or too large", (long long)rows,
                         (long long)cols);
    if (cols % 32)
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "cols %lld is not a multiple of 32 (the code block)",
                         (long long)cols);
    if (group <= 0 || group % 32)
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "group %d is not a positive multiple of 32", group);
    return MOEQ_OK;
}

static uint64_t up64(uint64_t x) { return (x + 63) / 64 * 64; }

uint64_t moeq_qmat_bytes(int bits, int group, int sym, int64_t rows, int64_t cols, uint64_t *scales_off,
                         uint64_t *zeros_off)
{
    uint64_t codes = (uint64_t)rows * (uint64_t)cols * (uint64_t)bits / 8;
    uint64_t ng = (uint64_t)rows * (uint64_t)((cols + group - 1) / group);
    uint64_t so = up64(codes), zo = up64(so + 2 * ng);
    if (scales_off) *scales_off = so;
    if (zeros_off) *zeros_off = sym ? 0 : zo;
    return sym ? so + 2 * ng : zo + 2 * ng;
}

/* codes of one 32-element block into q[0..32) */
static void unpack_block(int bits, const uint8_t *b, uint8_t *q)
{
    switch (bits) {
    case 8:
        memcpy(q, b, 32);
        break;
    case 4:
        for (int k = 0; k < 16; k++) {
            q[k] = b[k] & 15;
            q[k + 16] = b[k] >> 4;
        }
        break;
    case 2:
        for (int k = 0; k < 32; k++) q[k] = (b[k & 7] >> (2 * (k >> 3))) & 3;
        break;
    default: {   /* 3 */
        uint32_t h = (uint32_t)b[8] | (uint32_t)b[9] << 8 | (uint32_t)b[10] << 16 | (uint32_t)b[11] << 24;
        for (int k = 0; k < 32; k++) q[k] = (uint8_t)(((b[k & 7] >> (2 * (k >> 3))) & 3) | ((h >> k) & 1) << 2);
        break;
    }
    }
}

static void dequant_row(const moeq_qmat *w, int64_t r, float *dst)
{
    const uint8_t *codes = w->codes + r * moeq_qmat_row_bytes(w);
    int64_t ng = moeq_qmat_groups(w), bb = 4 * w->bits;   /* bytes per 32-block */
    float zsym = (float)(1 << (w->bits - 1));
    uint8_t q[32];
    for (int64_t g = 0; g < ng; g++) {
        float s = moeq_f16_to_f32(w->scales[r * ng + g]);
        float z = w->zeros ? moeq_f16_to_f32(w->zeros[r * ng + g]) : zsym;
        for (int64_t blk = 0; blk < moeq_qmat_group_len(w, g) / 32; blk++) {
            int64_t c0 = g * w->group + blk * 32;
            unpack_block(w->bits, codes + (c0 / 32) * bb, q);
            for (int k = 0; k < 32; k++) dst[c0 + k] = ((float)q[k] - z) * s;
        }
    }
}

static void ref_dequant(const moeq_qmat *w, int64_t r0, int64_t r1, float *dst)
{
    for (int64_t r = r0; r < r1; r++) dequant_row(w, r, dst + (r - r0) * w->cols);
}

static void ref_gemm(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                     float *Y, int64_t ldy)
{
    float *row = malloc((size_t)w->cols * sizeof(float));
    if (!row) return;   /* callers size their work; a failed 16-KB malloc leaves Y unwritten */
    for (int64_t r = r0; r < r1; r++) {
        dequant_row(w, r, row);
        for (int64_t i = 0; i < n; i++) {
            const float *x = X + i * ldx;
            double acc = 0;
            for (int64_t c = 0; c < w->cols; c++) acc += (double)row[c] * x[c];
            Y[i * ldy + (r - r0)] = (float)acc;
        }
    }
    free(row);
}

static void ref_gemv(const moeq_qmat *w, const float *x, int64_t r0, int64_t r1, float *y)
{
    ref_gemm(w, x, 1, w->cols, r0, r1, y, 0);
}

const moeq_kernel_set moeq_kernels_ref = { "ref", ref_dequant, ref_gemv, ref_gemm, moeq_ref_wgemm, NULL, NULL, NULL, NULL,
                                          moeq_ref_swiglu, moeq_ref_dsyrk, moeq_ref_attend, NULL, NULL, NULL, NULL, 1 };

int moeq_x8_quantize(const float *x, int64_t cols, int8_t *xq, float *dx, int32_t *sxq)
{
    for (int64_t b = 0; b < cols / 32; b++) {
        const float *p = x + 32 * b;
        float m = 0.0f;
        for (int k = 0; k < 32; k++) {
            if (!isfinite(p[k])) return 0;
            m = fmaxf(m, fabsf(p[k]));
        }
        float inv = m > 0.0f ? 127.0f / m : 0.0f;
        int32_t s = 0;
        for (int k = 0; k < 32; k++) {
            /* |p[k] * inv| <= 127 up to one rounding: the clamp keeps the int8 range exact */
            float v = rintf(p[k] * inv);
            v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
            xq[32 * b + k] = (int8_t)v;
            s += (int32_t)v;
        }
        dx[b] = m / 127.0f;
        sxq[b] = s;
    }
    return 1;
}

void moeq_ref_gemm_x8(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                      float *Y, int64_t ldy)
{
    int64_t nb = w->cols / 32, ng = moeq_qmat_groups(w), bb = 4 * w->bits;
    int8_t *xq = malloc((size_t)w->cols);
    float *dx = malloc((size_t)nb * sizeof(float));
    int32_t *sxq = malloc((size_t)nb * sizeof(int32_t));
    double zsym = (double)(1 << (w->bits - 1));
    uint8_t q[32];
    for (int64_t i = 0; xq && dx && sxq && i < n; i++) {
        if (!moeq_x8_quantize(X + i * ldx, w->cols, xq, dx, sxq)) {
            ref_gemm(w, X + i * ldx, 1, ldx, r0, r1, Y + i * ldy, 0);
            continue;
        }
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *codes = w->codes + r * moeq_qmat_row_bytes(w);
            double acc = 0;
            for (int64_t g = 0; g < ng; g++) {
                double s = moeq_f16_to_f32(w->scales[r * ng + g]);
                double z = w->zeros ? moeq_f16_to_f32(w->zeros[r * ng + g]) : zsym;
                double part = 0;
                for (int64_t b = g * w->group / 32; b < (g * w->group + moeq_qmat_group_len(w, g)) / 32; b++) {
                    unpack_block(w->bits, codes + b * bb, q);
                    int64_t dot = 0;
                    for (int k = 0; k < 32; k++) dot += (int64_t)q[k] * xq[32 * b + k];
                    part += (double)dx[b] * ((double)dot - z * sxq[b]);
                }
                acc += s * part;
            }
            Y[i * ldy + (r - r0)] = (float)acc;
        }
    }
    free(xq);
    free(dx);
    free(sxq);
}
