/* The t1d kernel with AVX2 + FMA (moeq_tdict.h): each row's codewords decoded once into a
 * dense float row (a pair symbol indexes the row's 9 pairs of level values: one 8-byte store per
 * pair), then an 8-lane FMA dot with every token (four accumulators, summed in a fixed order).
 * The decode costs one LUT read per codeword and one store per pair, so it is amortized over the
 * tokens; for one token it is about the reference's trit loop without its branches. Results
 * differ from the reference only by the summation order (docs/KERNELS.md: the tolerance). */
#include "moeq_tdict.h"
#include "moeq_kernels.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static inline float hsum8(__m256 v)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

void moeq_tdict_gemm_avx2(const void *raw, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1, float *Y,
                          int64_t ldy)
{
    moeq_tdict_view v;
    moeq_tdict_view_of(raw, &v);
    const moeq_tdict *d = moeq_tdict_get(v.k);
    const int64_t K = v.cols;
    float *w = aligned_alloc(32, ((size_t)K + 4 * MOEQ_TDICT_MAXPAIRS + 7) / 8 * 32);
    if (!d || !w) {
        free(w);
        for (int64_t i = 0; i < n; i++)
            for (int64_t r = r0; r < r1; r++) Y[i * ldy + (r - r0)] = NAN;   /* out of memory: visible */
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        const float lv[3] = { 0.0f, moeq_f16_to_f32(v.levels[2 * r + 1]), moeq_f16_to_f32(v.levels[2 * r]) };
        uint64_t pv[9];   /* pair symbol -> its two floats, as one 8-byte store */
        for (int s = 0; s < 9; s++) {
            float two[2] = { lv[s / 3], lv[s % 3] };
            memcpy(&pv[s], two, 8);
        }
        unsigned char *o = (unsigned char *)w;
        for (uint32_t i = v.off[r]; i < v.off[r + 1]; i++) {
            uint64_t e = d->lut[v.cw[i]];
            int len = (int)(e & 15);
            e >>= 4;
            for (int j = 0; j < len; j++, e >>= 4, o += 8) memcpy(o, &pv[e & 15], 8);
        }
        for (int64_t t = 0; t < n; t++) {
            const float *x = X + t * ldx;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            int64_t c = 0;
            for (; c + 32 <= K; c += 32) {
                a0 = _mm256_fmadd_ps(_mm256_load_ps(w + c), _mm256_loadu_ps(x + c), a0);
                a1 = _mm256_fmadd_ps(_mm256_load_ps(w + c + 8), _mm256_loadu_ps(x + c + 8), a1);
                a2 = _mm256_fmadd_ps(_mm256_load_ps(w + c + 16), _mm256_loadu_ps(x + c + 16), a2);
                a3 = _mm256_fmadd_ps(_mm256_load_ps(w + c + 24), _mm256_loadu_ps(x + c + 24), a3);
            }
            for (; c + 8 <= K; c += 8) a0 = _mm256_fmadd_ps(_mm256_load_ps(w + c), _mm256_loadu_ps(x + c), a0);
            float s = hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
            for (; c < K; c++) s += w[c] * x[c];
            Y[t * ldy + (r - r0)] = s;
        }
    }
    free(w);
}
