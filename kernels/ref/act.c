/* Reference activation kernel (moeq_kernel_set.swiglu): plain C with libm's expf; the truth the
 * SIMD variants are tested against. (Attention's softmax is inside the attend kernels, whose
 * truth is kernels/ref/attn.c.) */
#include "moeq_kernels.h"

#include <math.h>

void moeq_ref_swiglu(float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
