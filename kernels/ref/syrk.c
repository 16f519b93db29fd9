/* Reference Hessian accumulation (moeq_kernel_set.dsyrk): C += Xᵀ X on the lower triangle for
 * float rows X, each element summed over the rows in order with one fused multiply-add per row
 * (the product of two floats is exact in float64), so that a SIMD kernel that keeps the order
 * (x86/syrk_avx2.c, syrk_avx512.c) gives the same bits. Calibrate's Hessians went through
 * OpenBLAS's dsyrk before: its speed then depended on the core type OpenBLAS detected
 * (OPENBLAS_CORETYPE), and its bits on the kernel it picked. */
#include "moeq_kernels.h"

#include <math.h>

void moeq_ref_dsyrk(int64_t d, int64_t n, const float *X, double *C, double *scratch)
{
    (void)scratch;
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j <= i; j++) {
            double c = C[i * d + j];
            for (int64_t t = 0; t < n; t++) c = fma((double)X[t * d + i], (double)X[t * d + j], c);
            C[i * d + j] = c;
        }
}
