/* Optimal Brain Surgeon removal of input columns of one linear (docs/prune.md, "hessian"):
 * the down projection of an expert, whose inputs are the expert's micro-expert channels. */
#include "moeq_prune.h"

#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Hinv = (H + λI)⁻¹ via Cholesky (float64 LAPACK), full symmetric. */
static moeq_status damped_inverse(const double *H, int64_t n, double damp, double *Hinv, moeq_error *err)
{
    double mean = 0;
    for (int64_t i = 0; i < n; i++) mean += H[i * n + i];
    mean /= (double)(n > 0 ? n : 1);
    double lam = mean > 0 ? (damp > 0 ? damp : 0.01) * mean : 1.0;
    memcpy(Hinv, H, (size_t)(n * n) * sizeof *Hinv);
    for (int64_t i = 0; i < n; i++) Hinv[i * n + i] += lam;
    if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', (lapack_int)n, Hinv, (lapack_int)n) != 0 ||
        LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'L', (lapack_int)n, Hinv, (lapack_int)n) != 0)
        return moeq_fail(err, MOEQ_ERR_NUMERIC, "OBS: H + %g I is not positive definite", lam);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++) Hinv[j * n + i] = Hinv[i * n + j];
    return MOEQ_OK;
}

static double col_norm2(const double *W, int64_t rows, int64_t cols, int64_t c)
{
    double s = 0;
    for (int64_t r = 0; r < rows; r++) s += W[r * cols + c] * W[r * cols + c];
    return s;
}

moeq_status moeq_obs_saliency(const double *W, int64_t rows, int64_t cols, const double *H, int compensate,
                              double damp, double *out, moeq_error *err)
{
    if (!compensate) {
        for (int64_t c = 0; c < cols; c++) out[c] = col_norm2(W, rows, cols, c) * H[c * cols + c];
        return MOEQ_OK;
    }
    double *Hinv = malloc((size_t)(cols * cols) * sizeof *Hinv);
    if (!Hinv) return moeq_fail(err, MOEQ_ERR_NOMEM, "OBS: out of memory");
    moeq_status st = damped_inverse(H, cols, damp, Hinv, err);
    for (int64_t c = 0; st == MOEQ_OK && c < cols; c++) out[c] = col_norm2(W, rows, cols, c) / Hinv[c * cols + c];
    free(Hinv);
    return st;
}

typedef struct ranked { double s; int64_t c; } ranked;
static int cmp_ranked(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->s != y->s) return x->s < y->s ? -1 : 1;
    return x->c < y->c ? -1 : x->c > y->c;
}

moeq_status moeq_obs_remove(double *W, int64_t rows, int64_t cols, const double *H, int64_t n_remove,
                            int compensate, double damp, int64_t *removed, moeq_error *err)
{
    if (n_remove < 0 || n_remove > cols) return moeq_fail(err, MOEQ_ERR_MISUSE, "OBS: n_remove out of range");
    if (!compensate) {
        ranked *rk = malloc((size_t)(cols > 0 ? cols : 1) * sizeof *rk);
        if (!rk) return moeq_fail(err, MOEQ_ERR_NOMEM, "OBS: out of memory");
        for (int64_t c = 0; c < cols; c++) rk[c] = (ranked){ col_norm2(W, rows, cols, c) * H[c * cols + c], c };
        qsort(rk, (size_t)cols, sizeof *rk, cmp_ranked);
        for (int64_t k = 0; k < n_remove; k++) {
            for (int64_t r = 0; r < rows; r++) W[r * cols + rk[k].c] = 0;
            if (removed) removed[k] = rk[k].c;
        }
        free(rk);
        return MOEQ_OK;
    }
    double *Hinv = malloc((size_t)(cols * cols) * sizeof *Hinv);
    unsigned char *gone = calloc((size_t)(cols > 0 ? cols : 1), 1);
    double *rowc = malloc((size_t)(cols > 0 ? cols : 1) * sizeof *rowc);
    moeq_status st = Hinv && gone && rowc ? damped_inverse(H, cols, damp, Hinv, err)
                                  : moeq_fail(err, MOEQ_ERR_NOMEM, "OBS: out of memory");
    for (int64_t k = 0; st == MOEQ_OK && k < n_remove; k++) {
        int64_t best = -1;
        double bs = 0;
        for (int64_t c = 0; c < cols; c++) {
            if (gone[c]) continue;
            double s = col_norm2(W, rows, cols, c) / Hinv[c * cols + c];
            if (best < 0 || s < bs) { best = c; bs = s; }
        }
        const int64_t c = best;
        const double d = Hinv[c * cols + c];
        if (!(d > 0)) { st = moeq_fail(err, MOEQ_ERR_NUMERIC, "OBS: [H⁻¹]_cc = %g is not positive", d); break; }
        /* W -= W[:,c] Hinv[c,:] / d: the least-squares correction of the columns left */
        for (int64_t r = 0; r < rows; r++) {
            double a = W[r * cols + c] / d;
            if (a != 0)
                for (int64_t j = 0; j < cols; j++)
                    if (!gone[j]) W[r * cols + j] -= a * Hinv[c * cols + j];
            W[r * cols + c] = 0;
        }
        /* Hinv of the remaining columns: one Gaussian elimination step on c (row c saved first:
         * the loop overwrites it) */
        memcpy(rowc, Hinv + c * cols, (size_t)cols * sizeof *rowc);
        for (int64_t i = 0; i < cols; i++) {
            double a = Hinv[i * cols + c] / d;
            if (a != 0)
                for (int64_t j = 0; j < cols; j++) Hinv[i * cols + j] -= a * rowc[j];
        }
        gone[c] = 1;
        for (int64_t j = 0; j < cols; j++) Hinv[c * cols + j] = Hinv[j * cols + c] = 0;
        Hinv[c * cols + c] = 1;   /* keeps the removed column inert */
        if (removed) removed[k] = c;
    }
    free(Hinv);
    free(gone);
    free(rowc);
    return st;
}
