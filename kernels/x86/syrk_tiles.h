/* The driver shared by syrk_avx2.c and syrk_avx512.c (included after each defines MR, NR and
 * its tile kernel TILE(c, ldc, pi, pj, n)): X is widened to float64 and packed twice, into
 * panels of NR columns ([panel][t][NR]: a tile's columns) and of MR columns ([block][t][MR]: its
 * rows' values), the last of each zero-padded, so that a tile reads both contiguously (rows of X
 * are d doubles apart: 4 KiB at d = 512, every row in the same L1 set). The rows' values of one
 * i-block (n · MR doubles) stay in L1 while the column panels stream from L2. Tiles inside the triangle run on C in place; tiles on the diagonal or past d run on a
 * copy of their valid elements and store only those. Each element is summed over the rows in
 * order by one FMA per row, from C's value: the reference's bits. */
#include <immintrin.h>
#include <string.h>

/* X [n, d] widened into panels of w columns (a multiple of 4): [panel][t][w], the last
 * zero-padded; full panels 4 floats at a time (GCC at -O2 kept the loop scalar) */
static inline __attribute__((always_inline)) void pack_panels(int64_t d, int64_t n, const float *X, int64_t w,
                                                              double *P)
{
    for (int64_t c0 = 0; c0 < d; c0 += w) {
        double *dst = P + c0 / w * n * w;
        const int64_t wc = d - c0 < w ? d - c0 : w;
        if (wc == w) {
            for (int64_t t = 0; t < n; t++)
                for (int64_t c = 0; c < w; c += 4)
                    _mm256_storeu_pd(dst + t * w + c, _mm256_cvtps_pd(_mm_loadu_ps(X + t * d + c0 + c)));
            continue;
        }
        for (int64_t t = 0; t < n; t++) {
            const float *x = X + t * d + c0;
            double *o = dst + t * w;
            int64_t c = 0;
            for (; c < wc; c++) o[c] = (double)x[c];
            for (; c < w; c++) o[c] = 0.0;
        }
    }
}

static void dsyrk_tiles(int64_t d, int64_t n, const float *X, double *C, double *P)
{
    double *Q = P + (d + NR - 1) / NR * n * NR;
    pack_panels(d, n, X, NR, P);
    pack_panels(d, n, X, MR, Q);
    for (int64_t i0 = 0; i0 < d; i0 += MR) {
        const double *pi = Q + (i0 / MR) * n * MR;
        for (int64_t j0 = 0; j0 <= i0 + MR - 1 && j0 < d; j0 += NR) {
            const double *pj = P + (j0 / NR) * n * NR;
            if (j0 + NR - 1 <= i0 && i0 + MR <= d) {
                TILE(C + i0 * d + j0, d, pi, pj, n);
                continue;
            }
            double buf[MR * NR];
            memset(buf, 0, sizeof buf);
            for (int64_t r = 0; r < MR && i0 + r < d; r++)
                for (int64_t j = j0; j < j0 + NR && j < d && j <= i0 + r; j++) buf[r * NR + j - j0] = C[(i0 + r) * d + j];
            TILE(buf, NR, pi, pj, n);
            for (int64_t r = 0; r < MR && i0 + r < d; r++)
                for (int64_t j = j0; j < j0 + NR && j < d && j <= i0 + r; j++) C[(i0 + r) * d + j] = buf[r * NR + j - j0];
        }
    }
}
