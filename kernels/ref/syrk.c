/* Reference Hessian accumulation (moeq_kernel_set.dsyrk): C += Xᵀ X on the lower triangle for
 * float rows X, each element summed over the rows in order. The product of two floats is exact
 * in float64, so a multiply then an add rounds once, as a fused multiply-add does: a SIMD kernel
 * that keeps the order (x86/syrk_avx2.c, syrk_avx512.c) gives the same bits. Rows outermost:
 * C's row i and X's row t stay in cache, and every element still takes the rows in order.
 * Calibrate's Hessians went through OpenBLAS's dsyrk before: its speed then depended on the core
 * type OpenBLAS detected (OPENBLAS_CORETYPE), and its bits on the kernel it picked. */
#include "moeq_kernels.h"
#include <math.h>
#include <stdint.h>
#include <string.h>

void moeq_ref_dsyrk(int64_t d, int64_t n, const float *X, double *C, double *scratch)
{
    (void)scratch;
    for (int64_t t = 0; t < n; t++) {
        const float *x = X + t * d;
        for (int64_t i = 0; i < d; i++) {
            const double xi = (double)x[i];
            double *c = C + i * d;
            for (int64_t j = 0; j <= i; j++) c[j] += xi * (double)x[j];
        }
    }
}

/* bf16 of x rounded to nearest even, as a float (NaN stays NaN, a denormal becomes a zero) */
static float bf16_rne(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7F800000u) == 0) u &= 0x80000000u;   /* denormals are zero, as vcvtneps2bf16's */
    else if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu)) u |= 0x00400000u;   /* quiet NaN */
    else u += 0x7FFFu + ((u >> 16) & 1u);
    u &= 0xFFFF0000u;
    float r;
    memcpy(&r, &u, 4);
    return r;
}

static size_t held_at(int64_t d, int64_t p, int64_t row, int64_t f)   /* a bf16's index */
{
    const int64_t nb = (d + 31) / 32 * 2, s = row / 32, k = (row % 32) / 2;
    return 2 * ((((size_t)(p * nb + f / 16) * (MOEQ_HSYRK_ROWS / 32) + (size_t)s) * 256) + 16 * (size_t)k +
                (size_t)(f % 16)) + (size_t)(row & 1);
}

static uint16_t bits16(float x)   /* the high half of a float whose low half is zero */
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)(u >> 16);
}

static float of16(uint16_t b)
{
    const uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

void moeq_ref_hsyrk_pack(int64_t d, const float *X, int64_t n, int64_t row0, void *held)
{
    uint16_t *H = held;
    const int64_t nb = (d + 31) / 32 * 2;
    for (int64_t t = 0; t < n; t++)
        for (int64_t f = 0; f < 16 * nb; f++) {
            const float x = f < d ? X[t * d + f] : 0.0f, h = bf16_rne(x);
            H[held_at(d, 0, row0 + t, f)] = bits16(h);
            H[held_at(d, 1, row0 + t, f)] = bits16(bf16_rne(x - h));
        }
}

/* The chunked accumulation (MOEQ_HSYRK_ROWS says what it sums): per element, one float32 sum in
 * row order of hh, mh, hm (each product exact in float32), then into C in float64. */
void moeq_ref_hsyrk_sum(int64_t d, int64_t nrows, const void *held, double *C, void *scratch)
{
    (void)scratch;
    const uint16_t *H = held;
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j <= i; j++) {
            float s = 0.0f;
            for (int64_t t = 0; t < nrows; t++) {
                const float hi = of16(H[held_at(d, 0, t, i)]), hj = of16(H[held_at(d, 0, t, j)]);
                const float mi = of16(H[held_at(d, 1, t, i)]), mj = of16(H[held_at(d, 1, t, j)]);
                s += hi * hj;
                s += mi * hj;
                s += hi * mj;
            }
            C[i * d + j] += (double)s;
        }
}

/* The f32x256 kind: x as it is, 16 features per panel, rows of a panel contiguous. */
static size_t fheld_at(int64_t row, int64_t f)
{
    return ((size_t)(f / 16) * MOEQ_HSYRK_ROWS + (size_t)row) * 16 + (size_t)(f % 16);
}

void moeq_ref_fsyrk_pack(int64_t d, const float *X, int64_t n, int64_t row0, void *held)
{
    float *H = held;
    const int64_t w = (d + 15) / 16 * 16;
    for (int64_t t = 0; t < n; t++)
        for (int64_t f = 0; f < w; f++) H[fheld_at(row0 + t, f)] = f < d ? X[t * d + f] : 0.0f;
}

/* per element, one float32 fused multiply-add per row in row order from zero, then into C in
 * float64: the bits every f32x256 variant gives */
void moeq_ref_fsyrk_sum(int64_t d, int64_t nrows, const void *held, double *C, void *scratch)
{
    (void)scratch;
    const float *H = held;
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j <= i; j++) {
            float s = 0.0f;
            for (int64_t t = 0; t < nrows; t++) s = fmaf(H[fheld_at(t, i)], H[fheld_at(t, j)], s);
            C[i * d + j] += (double)s;
        }
}

void moeq_hsyrk_pad(const moeq_kernel_set *ks, int64_t d, int64_t n, void *held)
{
    if (!ks->hsyrk_sums || strcmp(ks->hsyrk_sums, "bf16x2-f32x256")) return;   /* f32x256 sums nrows exactly */
    uint16_t *H = held;
    const int64_t nb = (d + 31) / 32 * 2;
    for (int64_t r = n; r % 32; r++)
        for (int64_t f = 0; f < 16 * nb; f++) {
            H[held_at(d, 0, r, f)] = 0;
            H[held_at(d, 1, r, f)] = 0;
        }
}

double moeq_hsyrk_bound(const char *sums, int64_t nr)
{
    if (!sums || !strcmp(sums, "f64")) return 0.0;
    /* the float32 sum of nr terms (3 nr for bf16x2), each rounding to 2^-24 of the running sum */
    if (!strcmp(sums, "f32x256")) return (double)(nr + 1) * ldexp(1.0, -24);
    return 3.0 * ldexp(1.0, -16) + 3.0 * (double)nr * ldexp(1.0, -24);
}

void moeq_hsyrk(const moeq_kernel_set *ks, int64_t d, int64_t n, const float *X, double *C, void *held,
                void *scratch)
{
    for (int64_t r0 = 0; r0 < n; r0 += MOEQ_HSYRK_ROWS) {
        const int64_t nr = n - r0 < MOEQ_HSYRK_ROWS ? n - r0 : MOEQ_HSYRK_ROWS;
        ks->hsyrk_pack(d, X + r0 * d, nr, 0, held);
        moeq_hsyrk_pad(ks, d, nr, held);
        ks->hsyrk_sum(d, nr, held, C, scratch);
    }
}
