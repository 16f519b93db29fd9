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
