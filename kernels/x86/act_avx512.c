/* AVX-512 activation kernel (moeq_kernel_set.swiglu): expf for 16 lanes at once, a profile of
 * eval having found libm's scalar expf at 6-8% (attention's softmax then, SwiGLU).
 * exp(x) = 2^k · p(r), k = round(x / ln 2), r = x - k ln 2 (ln 2 in two parts, exact products),
 * p the degree-7 Taylor polynomial (|r| <= ln2/2: truncation 2e-8, about 2 ulp with rounding); 2^k
 * by vscalefps, which gives 0 below the range and inf above it. Tested against kernels/ref/act.c
 * (tests/unit/test_kernels_act.c). */
#include "moeq_kernels.h"
#include "kernels/x86/x86.h"
#include "kernels/x86/avx512_inl.h"

#include <immintrin.h>
#include <math.h>

void moeq_avx512_swiglu(float *g, const float *u, int64_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 x = _mm512_loadu_ps(g + i);
        const __m512 s = _mm512_div_ps(x, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
        _mm512_storeu_ps(g + i, _mm512_mul_ps(s, _mm512_loadu_ps(u + i)));
    }
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        const __m512 x = _mm512_maskz_loadu_ps(m, g + i);
        const __m512 s = _mm512_div_ps(x, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
        _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, u + i)));
    }
}
