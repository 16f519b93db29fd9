/* AVX-512 Hessian accumulation (moeq_kernel_set.dsyrk of the AVX-512 sets): tiles of 8 rows x 24
 * columns of C, 24 accumulators, per row of X 3 loads of the column panel and 8 broadcasts of
 * the rows' values; the panels and edges in syrk_tiles.h. The bits of kernels/ref/syrk.c and of
 * the avx2 kernel. */
#include "moeq_kernels.h"
#include "kernels/x86/x86.h"

#include <immintrin.h>

#define MR 8
#define NR 24

/* the accumulators are named, not an array: GCC at -O2 kept an array in memory */
#define ROW(r)                                                     \
    do {                                                           \
        const __m512d a = _mm512_set1_pd(pt[r]);                   \
        c##r##0 = _mm512_fmadd_pd(a, b0, c##r##0);                 \
        c##r##1 = _mm512_fmadd_pd(a, b1, c##r##1);                 \
        c##r##2 = _mm512_fmadd_pd(a, b2, c##r##2);                 \
    } while (0)
#define LOAD(r)                                                                                      \
    __m512d c##r##0 = _mm512_loadu_pd(c + (r) * ldc), c##r##1 = _mm512_loadu_pd(c + (r) * ldc + 8),  \
            c##r##2 = _mm512_loadu_pd(c + (r) * ldc + 16)
#define STORE(r)                                                                                     \
    _mm512_storeu_pd(c + (r) * ldc, c##r##0), _mm512_storeu_pd(c + (r) * ldc + 8, c##r##1),         \
        _mm512_storeu_pd(c + (r) * ldc + 16, c##r##2)

static void tile(double *c, int64_t ldc, const double *pi, const double *pj, int64_t n)
{
    LOAD(0); LOAD(1); LOAD(2); LOAD(3); LOAD(4); LOAD(5); LOAD(6); LOAD(7);
    for (int64_t t = 0; t < n; t++) {
        const double *pt = pi + t * MR, *q = pj + t * NR;
        const __m512d b0 = _mm512_loadu_pd(q), b1 = _mm512_loadu_pd(q + 8), b2 = _mm512_loadu_pd(q + 16);
        ROW(0); ROW(1); ROW(2); ROW(3); ROW(4); ROW(5); ROW(6); ROW(7);
    }
    STORE(0); STORE(1); STORE(2); STORE(3); STORE(4); STORE(5); STORE(6); STORE(7);
}

#define TILE tile
#include "kernels/x86/syrk_tiles.h"

void moeq_avx512_dsyrk(int64_t d, int64_t n, const float *X, double *C, double *scratch)
{
    dsyrk_tiles(d, n, X, C, scratch);
}
