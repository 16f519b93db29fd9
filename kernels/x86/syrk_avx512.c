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

/* The f32x256 chunked accumulation (moeq_kernel_set.hsyrk_* of the AVX-512 sets; the kind's
 * definition and held layout at MOEQ_HSYRK_ROWS, include/moeq_kernels.h). Why: dsyrk's float64
 * multiply-adds are 8 per instruction and were a quarter of calibrate's time on a Zen 5; these
 * are 16, and a chunk's sums stay in registers over its 256 rows, so C (8 d² bytes, past L2 at
 * d = 512) is read and written once per chunk rather than once per call. Tiles: 8 features i
 * (a half panel: the broadcasts) by up to 3 panels of 16 features j, 24 accumulators; each lane
 * is fmaf(x_i, x_j, s) over the rows in order from zero, so every variant gives the reference's
 * bits, whatever the tile shape. */
#define PR MOEQ_HSYRK_ROWS

void moeq_avx512_fsyrk_pack(int64_t d, const float *X, int64_t n, int64_t row0, void *held)
{
    float *H = held;
    const int64_t np = (d + 15) / 16;
    /* full 64-byte lines, read when the chunk fills (windows later): past the cache */
    for (int64_t t = 0; t < n; t++)
        for (int64_t p = 0; p < np; p++) {
            const int64_t w = d - 16 * p;
            const __mmask16 m = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1);
            _mm512_stream_ps(H + ((size_t)p * PR + (size_t)(row0 + t)) * 16, _mm512_maskz_loadu_ps(m, X + t * d + 16 * p));
        }
    _mm_sfence();
}

/* C[i, jb + l] += (double)lane l, for the lanes with jb + l <= i (and so < d) */
static inline __attribute__((always_inline)) void fsyrk_flush(double *C, int64_t d, int64_t i, int64_t jb, __m512 s)
{
    const int64_t cnt = i - jb + 1;
    if (cnt <= 0) return;
    const unsigned m = cnt >= 16 ? 0xFFFFu : (1u << cnt) - 1;
    const __mmask8 ml = (__mmask8)(m & 0xFF), mh = (__mmask8)(m >> 8);
    double *c = C + i * d + jb;
    const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(s));
    const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1)));
    _mm512_mask_storeu_pd(c, ml, _mm512_add_pd(_mm512_maskz_loadu_pd(ml, c), lo));
    if (mh) _mm512_mask_storeu_pd(c + 8, mh, _mm512_add_pd(_mm512_maskz_loadu_pd(mh, c + 8), hi));
}

#define FROW(r)                                                              \
    do {                                                                     \
        const __m512 a = _mm512_set1_ps(pa[r]);                              \
        s##r##0 = _mm512_fmadd_ps(a, b0, s##r##0);                           \
        if (np > 1) s##r##1 = _mm512_fmadd_ps(a, b1, s##r##1);               \
        if (np > 2) s##r##2 = _mm512_fmadd_ps(a, b2, s##r##2);               \
    } while (0)
#define FZERO(r) __m512 s##r##0 = _mm512_setzero_ps(), s##r##1 = s##r##0, s##r##2 = s##r##0
#define FOUT(r)                                                                 \
    do {                                                                        \
        if (i0 + (r) < d) {                                                     \
            fsyrk_flush(C, d, i0 + (r), j0, s##r##0);                           \
            if (np > 1) fsyrk_flush(C, d, i0 + (r), j0 + 16, s##r##1);          \
            if (np > 2) fsyrk_flush(C, d, i0 + (r), j0 + 32, s##r##2);          \
        }                                                                       \
    } while (0)

/* rows i0..i0+7 (A: their values, 16 floats a row) by panels j0 / 16 .. + np - 1 (B) */
static inline __attribute__((always_inline)) void fsyrk_tile(const float *A, const float *B, int64_t nr, double *C,
                                                             int64_t d, int64_t i0, int64_t j0, const int np)
{
    FZERO(0); FZERO(1); FZERO(2); FZERO(3); FZERO(4); FZERO(5); FZERO(6); FZERO(7);
    for (int64_t t = 0; t < nr; t++) {
        const float *pa = A + t * 16, *pb = B + t * 16;
        const __m512 b0 = _mm512_load_ps(pb);
        const __m512 b1 = np > 1 ? _mm512_load_ps(pb + PR * 16) : b0;
        const __m512 b2 = np > 2 ? _mm512_load_ps(pb + 2 * PR * 16) : b0;
        FROW(0); FROW(1); FROW(2); FROW(3); FROW(4); FROW(5); FROW(6); FROW(7);
    }
    FOUT(0); FOUT(1); FOUT(2); FOUT(3); FOUT(4); FOUT(5); FOUT(6); FOUT(7);
}

static void fsyrk_tile3(const float *A, const float *B, int64_t nr, double *C, int64_t d, int64_t i0, int64_t j0)
{
    fsyrk_tile(A, B, nr, C, d, i0, j0, 3);
}
static void fsyrk_tile2(const float *A, const float *B, int64_t nr, double *C, int64_t d, int64_t i0, int64_t j0)
{
    fsyrk_tile(A, B, nr, C, d, i0, j0, 2);
}
static void fsyrk_tile1(const float *A, const float *B, int64_t nr, double *C, int64_t d, int64_t i0, int64_t j0)
{
    fsyrk_tile(A, B, nr, C, d, i0, j0, 1);
}

void moeq_avx512_fsyrk_sum(int64_t d, int64_t nrows, const void *held, double *C, void *scratch)
{
    (void)scratch;
    const float *H = held;
    for (int64_t i0 = 0; i0 < d; i0 += 8) {
        const float *A = H + (size_t)(i0 / 16) * PR * 16 + i0 % 16;
        const int64_t last = (i0 + 7 < d ? i0 + 7 : d - 1) / 16;   /* the last panel with j <= i */
        for (int64_t p = 0; p <= last; p += 3) {
            const float *B = H + (size_t)p * PR * 16;
            const int64_t np = last - p + 1;
            if (np >= 3) fsyrk_tile3(A, B, nrows, C, d, i0, 16 * p);
            else if (np == 2) fsyrk_tile2(A, B, nrows, C, d, i0, 16 * p);
            else fsyrk_tile1(A, B, nrows, C, d, i0, 16 * p);
        }
    }
}
