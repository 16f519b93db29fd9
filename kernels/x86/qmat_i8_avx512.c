/* Experiment (docs/bench.md): llama.cpp's int8-activation trick for the 4-bit GEMV. x is
 * quantized once per call to int8 per 32-column block (dx = max|x| / 127, round to nearest),
 * and each group's dot product is an integer one with AVX-512 VNNI (vpdpbusd: u8 codes x s8
 * activations, 4 products per int32 lane), scaled once per group:
 *   y[r] = sum_g s_g * (sum_b dx_b * sum_{c in b} q_c xq_c  -  z_g * sum_b dx_b * sum_{c in b} xq_c).
 * Only q4 with groups and cols multiple of 64. It is an approximation of W x (x is rounded);
 * `moeq bench kernel` measures it against the float kernel, and it is not part of any kernel
 * set: the forward pass never uses it (it did not pay, see docs/bench.md). */
#include "moeq_bench.h"
#include "moeq_kernels.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c")))

int moeq_i8_gemv_supported(const moeq_qmat *w)
{
    return w->bits == 4 && w->group % 64 == 0 && w->cols % 64 == 0 &&
           __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("f16c");
}

/* xq permuted per 64 columns into the lane order of the decoded codes: block A's columns
 * 0..15, block B's 0..15, A's 16..31, B's 16..31; dxl[c/16] the scale of each 16-lane run;
 * gs[g] = sum_b dx_b * sum(xq in b) over the group. */
static void quantize_x(const moeq_qmat *w, const float *x, int8_t *xq, float *dxl, float *gs)
{
    int64_t nb = w->cols / 32;
    for (int64_t g = 0; g < moeq_qmat_groups(w); g++) gs[g] = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const float *p = x + 32 * b;
        float m = 0.0f;
        for (int k = 0; k < 32; k++) m = fmaxf(m, fabsf(p[k]));
        float dx = m / 127.0f, inv = m > 0 ? 127.0f / m : 0.0f;
        int s = 0;
        int64_t pair = b / 2, half = b % 2;   /* A = even block, B = odd block of the 64 */
        for (int k = 0; k < 32; k++) {
            int v = (int)lrintf(p[k] * inv);
            s += v;
            /* lane position: run (k / 16) * 2 + half of the 64-lane group */
            xq[pair * 64 + ((k / 16) * 2 + half) * 16 + (k % 16)] = (int8_t)v;
        }
        dxl[pair * 4 + 0 + half] = dx;   /* run 0/1: low nibbles of A/B */
        dxl[pair * 4 + 2 + half] = dx;   /* run 2/3: high nibbles of A/B */
        gs[(32 * b) / w->group] += dx * (float)s;
    }
}

TGT static float row_dot(const moeq_qmat *w, int64_t r, const int8_t *xq, const float *dxl, const float *gs)
{
    const int64_t ng = moeq_qmat_groups(w), ppg = w->group / 64;
    const uint8_t *codes = w->codes + r * moeq_qmat_row_bytes(w);
    const uint16_t *sc = w->scales + r * ng, *zp = w->zeros ? w->zeros + r * ng : NULL;
    const __m256i m15 = _mm256_set1_epi8(15);
    __m512 acc = _mm512_setzero_ps();
    float zterm = 0.0f;
    for (int64_t g = 0; g < ng; g++) {
        __m512 pg = _mm512_setzero_ps();
        for (int64_t k = 0; k < ppg; k++) {
            int64_t pair = g * ppg + k;
            __m256i v = _mm256_loadu_si256((const __m256i *)(codes + pair * 32));
            __m256i lo = _mm256_and_si256(v, m15), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m15);
            __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, _mm512_loadu_si512(xq + pair * 64));
            /* lanes 0-3: A lo, 4-7: B lo, 8-11: A hi, 12-15: B hi -> the scale of each run */
            __m128 s4 = _mm_loadu_ps(dxl + pair * 4);
            __m512 dxv = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                                               _mm512_castps128_ps512(s4));
            pg = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), dxv, pg);
        }
        float s = _cvtsh_ss(sc[g]);
        float z = zp ? _cvtsh_ss(zp[g]) : 8.0f;
        acc = _mm512_fmadd_ps(_mm512_set1_ps(s), pg, acc);
        zterm += s * z * gs[g];
    }
    return _mm512_reduce_add_ps(acc) - zterm;
}

void moeq_i8_gemv(const moeq_qmat *w, const float *x, int64_t r0, int64_t r1, float *y)
{
    int64_t ng = moeq_qmat_groups(w);
    int8_t *xq = aligned_alloc(64, (size_t)((w->cols + 63) / 64 * 64));
    float *dxl = malloc((size_t)(w->cols / 16 + ng) * sizeof(float));
    if (!xq || !dxl) {
        free(xq);
        free(dxl);
        return;
    }
    quantize_x(w, x, xq, dxl, dxl + w->cols / 16);
    for (int64_t r = r0; r < r1; r++) y[r - r0] = row_dot(w, r, xq, dxl, dxl + w->cols / 16);
    free(xq);
    free(dxl);
}
