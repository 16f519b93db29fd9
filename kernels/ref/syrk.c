/* Reference Hessian accumulation (moeq_kernel_set.dsyrk): C += Xᵀ X on the lower triangle for
 * float rows X, each element summed over the rows in order. The product of two floats is exact
 * in float64, so a multiply then an add rounds once, as a fused multiply-add does: a SIMD kernel
 * that keeps the order (x86/syrk_avx2.c, syrk_avx512.c) gives the same bits. Rows outermost:
 * C's row i and X's row t stay in cache, and every element still takes the rows in order.
 * Calibrate's Hessians went through OpenBLAS's dsyrk before: its speed then depended on the core
 * type OpenBLAS detected (OPENBLAS_CORETYPE), and its bits on the kernel it picked. */
#include "moeq_kernels.h"

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
