/* Reference activation kernels (moeq_kernel_set.softmax, .swiglu): plain C with libm's expf, in
 * the order the forward pass always used; the truth the SIMD variants are tested against. */
#include "moeq_kernels.h"

#include <math.h>

void moeq_ref_softmax(float *row, int64_t nv, int64_t n, float scale, float sink)
{
    float mx = sink;   /* a sink (gpt_oss) is one more logit of the row, its value dropped */
    for (int64_t j = 0; j < nv; j++) {
        row[j] *= scale;
        if (row[j] > mx) mx = row[j];
    }
    float sum = sink == -INFINITY ? 0.0f : expf(sink - mx);
    for (int64_t j = 0; j < nv; j++) {
        row[j] = row[j] == -INFINITY ? 0.0f : expf(row[j] - mx);
        sum += row[j];
    }
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < nv; j++) row[j] *= inv;
    for (int64_t j = nv; j < n; j++) row[j] = 0.0f;
}

void moeq_ref_swiglu(float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
