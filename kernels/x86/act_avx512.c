/* AVX-512 activation kernels (moeq_kernel_set.softmax, .swiglu): expf for 16 lanes at once, a
 * profile of eval having found libm's scalar expf at 6-8% (attention's softmax, SwiGLU).
 * exp(x) = 2^k · p(r), k = round(x / ln 2), r = x - k ln 2 (ln 2 in two parts, exact products),
 * p the degree-7 Taylor polynomial (|r| <= ln2/2: truncation 2e-8, about 2 ulp with rounding); 2^k
 * by vscalefps, which gives 0 below the range and inf above it. Sums go 16 lanes wide, then
 * lanes in a fixed order: the same bits for any thread count. Tested against kernels/ref/act.c
 * (tests/unit/test_kernels_act.c). */
#include "moeq_kernels.h"
#include "kernels/x86/x86.h"
#include "kernels/x86/avx512_inl.h"

#include <immintrin.h>
#include <math.h>

void moeq_avx512_softmax(float *row, int64_t nv, int64_t n, float scale, float sink)
{
    const __m512 vs = _mm512_set1_ps(scale);
    __m512 vm = _mm512_set1_ps(sink);
    int64_t j = 0;
    for (; j + 16 <= nv; j += 16) {
        const __m512 s = _mm512_mul_ps(_mm512_loadu_ps(row + j), vs);
        _mm512_storeu_ps(row + j, s);
        vm = _mm512_max_ps(vm, s);
    }
    const __mmask16 tail = (__mmask16)((1u << (nv - j)) - 1);
    if (j < nv) {
        const __m512 s = _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, row + j), vs);
        _mm512_mask_storeu_ps(row + j, tail, s);
        vm = _mm512_mask_max_ps(vm, tail, vm, s);
    }
    const float mx = _mm512_reduce_max_ps(vm);
    const __m512 m = _mm512_set1_ps(mx);
    __m512 acc = _mm512_setzero_ps();
    for (j = 0; j + 16 <= nv; j += 16) {
        const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(row + j), m));
        _mm512_storeu_ps(row + j, e);
        acc = _mm512_add_ps(acc, e);
    }
    if (j < nv) {
        const __m512 e = _mm512_maskz_mov_ps(tail, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, row + j), m)));
        _mm512_mask_storeu_ps(row + j, tail, e);
        acc = _mm512_add_ps(acc, e);
    }
    float lanes[16], sum = 0;
    _mm512_storeu_ps(lanes, acc);
    for (int l = 0; l < 16; l++) sum += lanes[l];
    if (sink != -INFINITY) sum += expf(sink - mx);
    const __m512 inv = _mm512_set1_ps(1.0f / sum);
    for (j = 0; j + 16 <= nv; j += 16) _mm512_storeu_ps(row + j, _mm512_mul_ps(_mm512_loadu_ps(row + j), inv));
    if (j < nv) _mm512_mask_storeu_ps(row + j, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, row + j), inv));
    for (j = nv; j < n; j++) row[j] = 0.0f;
}

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
