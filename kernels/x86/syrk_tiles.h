/* The driver shared by syrk_avx2.c and syrk_avx512.c (included after each defines MR, NR and
 * its tile kernel TILE(c, ldc, pi, pj, n)): X is widened to float64 and packed twice, into
 * panels of NR columns ([panel][t][NR]: a tile's columns) and of MR columns ([block][t][MR]: its
 * rows' values), the last of each zero-padded, so that a tile reads both contiguously (rows of X
 * are d doubles apart: 4 KiB at d = 512, every row in the same L1 set). The rows' values of one
 * i-block (n · MR doubles) stay in L1 while the column panels stream from L2. Tiles inside the triangle run on C in place; tiles on the diagonal or past d run on a
 * copy of their valid elements and store only those. Each element is summed over the rows in
 * order by one FMA per row, from C's value: the reference's bits. */
#include <string.h>

static void dsyrk_tiles(int64_t d, int64_t n, const float *X, double *C, double *P)
{
    const int64_t np = (d + NR - 1) / NR, nb = (d + MR - 1) / MR;
    double *Q = P + np * n * NR;
    for (int64_t b = 0; b < nb; b++) {
        double *dst = Q + b * n * MR;
        const int64_t c0 = b * MR, w = d - c0 < MR ? d - c0 : MR;
        for (int64_t t = 0; t < n; t++) {
            const float *x = X + t * d + c0;
            double *o = dst + t * MR;
            int64_t c = 0;
            for (; c < w; c++) o[c] = (double)x[c];
            for (; c < MR; c++) o[c] = 0.0;
        }
    }
    for (int64_t p = 0; p < np; p++) {
        double *dst = P + p * n * NR;
        const int64_t c0 = p * NR, w = d - c0 < NR ? d - c0 : NR;
        for (int64_t t = 0; t < n; t++) {
            const float *x = X + t * d + c0;
            double *o = dst + t * NR;
            int64_t c = 0;
            for (; c < w; c++) o[c] = (double)x[c];
            for (; c < NR; c++) o[c] = 0.0;
        }
    }
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
