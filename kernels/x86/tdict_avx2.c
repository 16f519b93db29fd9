/* The t1d kernel with AVX2 + FMA (moeq_tdict.h): each row's codewords decoded once into a
 * dense float row (a codeword's 28 trits expanded 8 lanes at a time: variable shift, mask,
 * vpermps of the row's levels; 4 stores whatever its length, the next codeword overwriting the
 * excess: no branch on the length), then an 8-lane FMA dot with every token (four accumulators,
 * summed in a fixed order). The decode (one LUT read per codeword, prefetched) is amortized over
 * the tokens. Results differ from the reference only by the summation order (docs/KERNELS.md:
 * the tolerance). */
#include "moeq_tdict.h"
#include "moeq_kernels.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PF 16

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
    /* 32 floats of slack: a codeword's 28 trits are expanded as 4 x 8 lanes whatever its length */
    float *w = aligned_alloc(32, ((size_t)K + 64 + 7) / 8 * 32);
    if (!d || !w) {
        free(w);
        for (int64_t i = 0; i < n; i++)
            for (int64_t r = r0; r < r1; r++) Y[i * ldy + (r - r0)] = NAN;   /* out of memory: visible */
        return;
    }
    const __m256i sh = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14), three = _mm256_set1_epi32(3);
    for (int64_t r = r0; r < r1; r++) {
        /* lane t of the level vector: the value of trit t (0, hi, lo) */
        const __m256 lv = _mm256_setr_ps(0.0f, moeq_f16_to_f32(v.levels[2 * r + 1]), moeq_f16_to_f32(v.levels[2 * r]),
                                         0.0f, 0.0f, 0.0f, 0.0f, 0.0f);
        float *o = w;
        const uint32_t c0 = v.off[r], c1 = v.off[r + 1];
        /* the LUT (512 KiB) misses L2 at random: its entries are fetched PF codewords ahead */
        for (uint32_t i = c0; i < c1 && i < c0 + PF; i++) _mm_prefetch((const char *)&d->lut[v.cw[i]], _MM_HINT_T0);
        for (uint32_t i = c0; i < c1; i++) {
            if (i + PF < (uint32_t)v.count) _mm_prefetch((const char *)&d->lut[v.cw[i + PF]], _MM_HINT_T0);
            const uint64_t e = d->lut[v.cw[i]], x = e >> 4;
            /* 8 trits (16 bits) per vector: shift each lane to its field, mask, look up its level */
            for (int q = 0; q < 4; q++) {
                __m256i b = _mm256_set1_epi32((int)((x >> (16 * q)) & 0xffff));
                b = _mm256_and_si256(_mm256_srlv_epi32(b, sh), three);
                _mm256_storeu_ps(o + 8 * q, _mm256_permutevar8x32_ps(lv, b));
            }
            o += 2 * (e & 15);
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
