/* AVX2 activation kernel (moeq_kernel_set.swiglu of the avx2 set): expf for 8 lanes, a profile
 * of eval on an AVX2-only Zen 3 having found libm's scalar expf and the reference softmax (then)
 * and SwiGLU at 9% of the time. The same method as act_avx512.c: exp(x) = 2^k · p(r),
 * k = round(x / ln 2), r = x - k ln 2 (ln 2 in two parts), p the degree-7 Taylor polynomial.
 * AVX2 has no vscalefps: 2^k is built in the exponent bits, x clamped to [-87, 88.72] first so
 * that k stays a normal exponent; lanes below -87 (exp < 1.7e-38, and -inf) are set to 0, lanes
 * above ln(FLT_MAX) to inf, as expf gives; a NaN is carried.
 * Tested against kernels/ref/act.c (tests/unit/test_kernels_act.c). */
#include "moeq_kernels.h"
#include "kernels/x86/x86.h"
#include "kernels/x86/avx2_inl.h"

#include <immintrin.h>
#include <math.h>

void moeq_avx2_swiglu(float *g, const float *u, int64_t n)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 s = _mm256_div_ps(x, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
    if (i < n) {
        const __m256i tm = tail_mask(n - i);
        const __m256 x = _mm256_maskload_ps(g + i, tm);
        const __m256 s = _mm256_div_ps(x, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
        _mm256_maskstore_ps(g + i, tm, _mm256_mul_ps(s, _mm256_maskload_ps(u + i, tm)));
    }
}
