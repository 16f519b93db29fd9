/* AVX2 activation kernels (moeq_kernel_set.softmax, .swiglu of the avx2 set): expf for 8 lanes,
 * a profile of eval on an AVX2-only Zen 3 having found libm's scalar expf and the reference
 * softmax and SwiGLU at 9% of the time. The same method as act_avx512.c: exp(x) = 2^k · p(r),
 * k = round(x / ln 2), r = x - k ln 2 (ln 2 in two parts), p the degree-7 Taylor polynomial.
 * AVX2 has no vscalefps: 2^k is built in the exponent bits, x clamped to [-87, 88.72] first so
 * that k stays a normal exponent; lanes below -87 (exp < 1.7e-38, and -inf) are set to 0, lanes
 * above ln(FLT_MAX) to inf, as expf gives; a NaN is carried.
 * Sums go 8 lanes wide, then lanes in a fixed order: the same bits for any thread count. Tested
 * against kernels/ref/act.c (tests/unit/test_kernels_act.c). */
#include "moeq_kernels.h"
#include "kernels/x86/x86.h"

#include <immintrin.h>
#include <math.h>

static inline __m256 exp8(__m256 x)
{
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f), ln2hi = _mm256_set1_ps(0.693145751953125f),
                 ln2lo = _mm256_set1_ps(1.428606765330187045e-06f), lo = _mm256_set1_ps(-87.0f);
    const __m256 hi = _mm256_set1_ps(88.72f);
    const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ), over = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
    x = _mm256_min_ps(hi, _mm256_max_ps(lo, x));   /* NaN is the second operand: kept */
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, ln2hi, x);
    r = _mm256_fnmadd_ps(k, ln2lo, r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    /* k in [-126, 128]: 2^k as (k + 127) << 23, and k = 128 (x near 88.72) as 2^127 · 2p */
    const __m256i ki = _mm256_cvtps_epi32(k);
    const __m256i top = _mm256_cmpgt_epi32(ki, _mm256_set1_epi32(127));
    const __m256i ke = _mm256_sub_epi32(ki, _mm256_and_si256(top, _mm256_set1_epi32(1)));
    const __m256 two_k = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(ke, _mm256_set1_epi32(127)), 23));
    p = _mm256_blendv_ps(p, _mm256_add_ps(p, p), _mm256_castsi256_ps(top));
    const __m256 e = _mm256_andnot_ps(under, _mm256_mul_ps(p, two_k));
    return _mm256_blendv_ps(e, _mm256_set1_ps(INFINITY), over);
}

/* lanes [0, n) of a tail (n < 8) as a mask */
static inline __m256i tail_mask(int64_t n)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), idx);
}

void moeq_avx2_softmax(float *row, int64_t nv, int64_t n, float scale, float sink)
{
    const __m256 vs = _mm256_set1_ps(scale);
    __m256 vm = _mm256_set1_ps(sink);
    int64_t j = 0;
    for (; j + 8 <= nv; j += 8) {
        const __m256 s = _mm256_mul_ps(_mm256_loadu_ps(row + j), vs);
        _mm256_storeu_ps(row + j, s);
        vm = _mm256_max_ps(vm, s);
    }
    float mx;
    {
        float lanes[8];
        _mm256_storeu_ps(lanes, vm);
        mx = lanes[0];
        for (int l = 1; l < 8; l++) mx = lanes[l] > mx ? lanes[l] : mx;
        for (int64_t t = j; t < nv; t++) {
            row[t] *= scale;
            if (row[t] > mx) mx = row[t];
        }
    }
    const __m256 m = _mm256_set1_ps(mx);
    __m256 acc = _mm256_setzero_ps();
    for (j = 0; j + 8 <= nv; j += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(row + j), m));
        _mm256_storeu_ps(row + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    if (j < nv) {
        const __m256i tm = tail_mask(nv - j);
        const __m256 e = _mm256_and_ps(_mm256_castsi256_ps(tm),
                                       exp8(_mm256_sub_ps(_mm256_maskload_ps(row + j, tm), m)));
        _mm256_maskstore_ps(row + j, tm, e);
        acc = _mm256_add_ps(acc, e);
    }
    float lanes[8], sum = 0;
    _mm256_storeu_ps(lanes, acc);
    for (int l = 0; l < 8; l++) sum += lanes[l];
    if (sink != -INFINITY) sum += expf(sink - mx);
    const __m256 inv = _mm256_set1_ps(1.0f / sum);
    for (j = 0; j + 8 <= nv; j += 8) _mm256_storeu_ps(row + j, _mm256_mul_ps(_mm256_loadu_ps(row + j), inv));
    for (; j < nv; j++) row[j] *= 1.0f / sum;
    for (j = nv; j < n; j++) row[j] = 0.0f;
}

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
