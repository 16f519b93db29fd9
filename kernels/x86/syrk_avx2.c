/* AVX2 Hessian accumulation (moeq_kernel_set.dsyrk of the avx2 set): tiles of 4 rows x 12
 * columns of C, 12 accumulators, per row of X 3 loads of the column panel and 4 broadcasts of
 * the rows' values; the panels and edges in syrk_tiles.h. The bits of kernels/ref/syrk.c. */
#include "moeq_kernels.h"
#include "kernels/x86/x86.h"

#include <immintrin.h>

#define MR 4
#define NR 12

/* the accumulators are named, not an array: GCC at -O2 kept an array in memory */
#define ROW(r)                                                     \
    do {                                                           \
        const __m256d a = _mm256_broadcast_sd(pt + (r));           \
        c##r##0 = _mm256_fmadd_pd(a, b0, c##r##0);                 \
        c##r##1 = _mm256_fmadd_pd(a, b1, c##r##1);                 \
        c##r##2 = _mm256_fmadd_pd(a, b2, c##r##2);                 \
    } while (0)
#define LOAD(r)                                                                                      \
    __m256d c##r##0 = _mm256_loadu_pd(c + (r) * ldc), c##r##1 = _mm256_loadu_pd(c + (r) * ldc + 4),  \
            c##r##2 = _mm256_loadu_pd(c + (r) * ldc + 8)
#define STORE(r)                                                                                     \
    _mm256_storeu_pd(c + (r) * ldc, c##r##0), _mm256_storeu_pd(c + (r) * ldc + 4, c##r##1),         \
        _mm256_storeu_pd(c + (r) * ldc + 8, c##r##2)

static void tile(double *c, int64_t ldc, const double *pi, const double *pj, int64_t n)
{
    LOAD(0); LOAD(1); LOAD(2); LOAD(3);
    for (int64_t t = 0; t < n; t++) {
        const double *pt = pi + t * MR, *q = pj + t * NR;
        const __m256d b0 = _mm256_loadu_pd(q), b1 = _mm256_loadu_pd(q + 4), b2 = _mm256_loadu_pd(q + 8);
        ROW(0); ROW(1); ROW(2); ROW(3);
    }
    STORE(0); STORE(1); STORE(2); STORE(3);
}

#define TILE tile
#include "kernels/x86/syrk_tiles.h"

void moeq_avx2_dsyrk(int64_t d, int64_t n, const float *X, double *C, double *scratch)
{
    dsyrk_tiles(d, n, X, C, scratch);
}

/* The f32x256 chunked accumulation for the avx2 set (the kind and its held layout at
 * MOEQ_HSYRK_ROWS, include/moeq_kernels.h; the AVX-512 variant in syrk_avx512.c): float32
 * multiply-adds do 8 products where dsyrk's do 4, and a chunk's sums stay in registers over its
 * 256 rows. Tiles: 6 features i (each broadcast from its own panel) by one panel of 16 j, 12
 * accumulators; each lane is fmaf(x_i, x_j, s) over the rows in order from zero: the
 * reference's bits. */
#define PR MOEQ_HSYRK_ROWS

void moeq_avx2_fsyrk_pack(int64_t d, const float *X, int64_t n, int64_t row0, void *held)
{
    float *H = held;
    const int64_t np = (d + 15) / 16;
    for (int64_t t = 0; t < n; t++)
        for (int64_t p = 0; p < np; p++) {
            float *o = H + ((size_t)p * PR + (size_t)(row0 + t)) * 16;
            const float *x = X + t * d + 16 * p;
            if (d - 16 * p >= 16) {   /* full 64-byte lines, read when the chunk fills: past the cache */
                _mm256_stream_ps(o, _mm256_loadu_ps(x));
                _mm256_stream_ps(o + 8, _mm256_loadu_ps(x + 8));
                continue;
            }
            for (int64_t f = 0; f < 16; f++) o[f] = 16 * p + f < d ? x[f] : 0.0f;
        }
    _mm_sfence();
}

#define FROW(r)                                                   \
    do {                                                          \
        const __m256 a = _mm256_broadcast_ss(p##r + t * 16);      \
        s##r##0 = _mm256_fmadd_ps(a, b0, s##r##0);                \
        s##r##1 = _mm256_fmadd_ps(a, b1, s##r##1);                \
    } while (0)
#define FOUT(r) fsyrk_flush(C, d, i0 + (r), j0, s##r##0, s##r##1)

/* C[i, j0 + l] += (double)lane l for j0 + l <= i (rows i past d are not stored) */
static inline __attribute__((always_inline)) void fsyrk_flush(double *C, int64_t d, int64_t i, int64_t j0, __m256 lo,
                                                              __m256 hi)
{
    if (i >= d) return;
    float v[16];
    _mm256_storeu_ps(v, lo);
    _mm256_storeu_ps(v + 8, hi);
    double *c = C + i * d;
    for (int64_t l = 0; l < 16 && j0 + l <= i; l++) c[j0 + l] += (double)v[l];
}

/* rows i0..i0+5 (their values at p0..p5, row stride 16 floats) by the panel at B */
static void fsyrk_tile(const float *p0, const float *p1, const float *p2, const float *p3, const float *p4,
                       const float *p5, const float *B, int64_t nr, double *C, int64_t d, int64_t i0, int64_t j0)
{
    __m256 s00 = _mm256_setzero_ps(), s01 = s00, s10 = s00, s11 = s00, s20 = s00, s21 = s00;
    __m256 s30 = s00, s31 = s00, s40 = s00, s41 = s00, s50 = s00, s51 = s00;
    for (int64_t t = 0; t < nr; t++) {
        const __m256 b0 = _mm256_load_ps(B + t * 16), b1 = _mm256_load_ps(B + t * 16 + 8);
        FROW(0); FROW(1); FROW(2); FROW(3); FROW(4); FROW(5);
    }
    FOUT(0); FOUT(1); FOUT(2); FOUT(3); FOUT(4); FOUT(5);
}

void moeq_avx2_fsyrk_sum(int64_t d, int64_t nrows, const void *held, double *C, void *scratch)
{
    (void)scratch;
    const float *H = held;
    for (int64_t i0 = 0; i0 < d; i0 += 6) {
        const float *p[6];
        for (int r = 0; r < 6; r++) {   /* a row past d reads row i0's values (inside the chunk) */
            const int64_t i = i0 + r < d ? i0 + r : i0;
            p[r] = H + (size_t)(i / 16) * PR * 16 + i % 16;
        }
        const int64_t last = (i0 + 5 < d ? i0 + 5 : d - 1) / 16;   /* the last panel with j <= i */
        for (int64_t J = 0; J <= last; J++)
            fsyrk_tile(p[0], p[1], p[2], p[3], p[4], p[5], H + (size_t)J * PR * 16, nrows, C, d, i0, 16 * J);
    }
}
