/* The one BLAS call of calibration, kept apart because cblas.h drags in <complex.h> (whose
 * `I` macro clashes with the usual name of the intermediate size). core/la.c's owner may
 * move it next to moeq_sgemm_nt as a moeq_dsyrk wrapper. */
#include <cblas.h>
#include <stdint.h>

/* C[d, d] (lower triangle) += Xᵀ X for row-major X[n, d] in float64, single-threaded. */
void moeq_calib_dsyrk_tn(int64_t d, int64_t n, const double *X, double *C);

void moeq_calib_dsyrk_tn(int64_t d, int64_t n, const double *X, double *C)
{
    if (d <= 0 || n <= 0) return;
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, (blasint)d, (blasint)n, 1.0, X, (blasint)d,
                1.0, C, (blasint)d);
}
