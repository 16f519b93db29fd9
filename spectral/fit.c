/* Power-law tail fits of an ascending ESD: AlphaQ's Hill estimator and WeightWatcher's
 * continuous KS fit (algorithms.md §1.2, §1.5). */
#include "moeq_spectral.h"

#include <math.h>
#include <stdlib.h>

double moeq_spec_hill(const double *lam, int64_t n, int64_t *k_out, int *clamped)
{
    int cl = 0;
    int64_t k = n / 10 > 10 ? n / 10 : 10;
    if (k > n - 1) { k = n - 1; cl = 1; }
    if (k_out) *k_out = k;
    if (clamped) *clamped = cl;
    if (n < 2 || k < 1) return NAN;
    double ref = lam[n - k - 1];
    if (!(ref > 0)) return NAN;
    double s = 0;
    for (int64_t i = n - k; i < n; i++) s += log(lam[i] / ref);
    if (!(s > 0)) return NAN;   /* flat tail: no exponent */
    return 1.0 + (double)k / s;
}

/* D_i for candidate i against the tail lam[i..n) with exponent a, using ln λ (L), over every
 * step-th tail point. Stops as soon as the running maximum exceeds `stop` (it can then no
 * longer win the argmin). */
static double ks_distance(const double *L, int64_t i, int64_t n, double a, double stop, int64_t step)
{
    const int64_t m = n - i;
    const double e = 1.0 - a, li = L[i], inv = 1.0 / (double)m;
    double dmax = 0;
    for (int64_t j = 0; j < m; j += step) {
        double dev = fabs(1.0 - exp(e * (L[i + j] - li)) - (double)j * inv);
        if (dev > dmax) {
            dmax = dev;
            if (dmax > stop) break;
        }
    }
    return dmax;
}

/* The fit over candidates [lo, hi] of lam[0..n) with logs L and suffix sums S of L: the
 * candidate with the smallest D, the lowest index among equal D (WeightWatcher's argmin).
 * The fast path gives the same answer with far fewer exp() calls: a first pass over every
 * 64th candidate finds a good bound, then each candidate is first checked on every 32nd tail
 * point (a lower bound of its D) and scanned in full only when that stays below the bound. */
static void ks_search(const double *L, const double *S, int64_t n, int64_t lo, int64_t hi, int exhaustive,
                      moeq_ks_fit *fit)
{
    double best_d = INFINITY, best_a = NAN;
    int64_t best_i = -1;
    const int64_t stride = exhaustive ? 1 : 64;
    for (int pass = exhaustive ? 1 : 0; pass < 2; pass++)
        for (int64_t i = lo; i <= hi; i += pass ? 1 : stride) {
            const int64_t m = n - i;
            const double den = S[i] - (double)m * L[i];
            const double a = 1.0 + (double)m / den;
            double d;
            if (!(den > 0) || !(a > 1.0) || !isfinite(a)) {
                d = 1.0;   /* WW: no fit, distance 1 */
            } else if (exhaustive) {
                d = ks_distance(L, i, n, a, INFINITY, 1);
            } else {
                /* lower bound from a coarse grid, then the full scan; both stop once the
                 * running maximum exceeds the best (such a candidate cannot win) */
                d = ks_distance(L, i, n, a, best_d, 32);
                if (!(d > best_d)) d = ks_distance(L, i, n, a, best_d, 1);
            }
            if (d < best_d || (d == best_d && i < best_i)) { best_d = d; best_i = i; best_a = d < 1.0 ? a : NAN; }
        }
    fit->i_xmin = best_i;
    fit->alpha = best_a;
    fit->d = best_i >= 0 ? best_d : NAN;
    fit->n_tail = best_i >= 0 ? n - best_i : 0;
    fit->xmin = best_i >= 0 ? exp(L[best_i]) : NAN;
    fit->sigma = isfinite(best_a) ? (best_a - 1.0) / sqrt((double)fit->n_tail) : NAN;
    fit->fingers = 0;
    fit->at_bound = best_i < 0 || !isfinite(best_a) || best_i == hi || fit->n_tail < 10;
}

/* Logs and suffix sums (summed from the top so the tail sums carry no bulk rounding). */
static int prep(const double *lam, int64_t n, double **L, double **S)
{
    *L = malloc((size_t)n * sizeof **L);
    *S = malloc((size_t)(n + 1) * sizeof **S);
    if (!*L || !*S) { free(*L); free(*S); return -1; }
    for (int64_t i = 0; i < n; i++) (*L)[i] = log(lam[i]);
    (*S)[n] = 0;
    for (int64_t i = n - 1; i >= 0; i--) (*S)[i] = (*S)[i + 1] + (*L)[i];
    return 0;
}

static void no_fit(moeq_ks_fit *fit)
{
    fit->alpha = fit->xmin = fit->d = fit->sigma = NAN;
    fit->i_xmin = -1;
    fit->n_tail = fit->fingers = 0;
    fit->at_bound = 1;
}

void moeq_spec_ks_ref(const double *lam, int64_t n, moeq_ks_fit *fit)
{
    double *L, *S;
    if (n < 2 || prep(lam, n, &L, &S)) { no_fit(fit); return; }
    ks_search(L, S, n, 0, n - 2, 1, fit);
    free(L);
    free(S);
}

moeq_status moeq_spec_ks(const double *lam, int64_t n, moeq_spec_ks_fix fix, moeq_ks_fit *fit,
                         moeq_error *err)
{
    if (!fit || (n > 0 && !lam)) return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_spec_ks: NULL argument");
    if (n < 3) { no_fit(fit); return MOEQ_OK; }
    for (int64_t i = 0; i < n; i++)
        if (!(lam[i] > 0) || !isfinite(lam[i]) || (i && lam[i] < lam[i - 1]))
            return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_spec_ks: eigenvalue %lld is not positive ascending", (long long)i);
    double *L, *S;
    if (prep(lam, n, &L, &S)) return moeq_fail(err, MOEQ_ERR_NOMEM, "moeq_spec_ks: %lld eigenvalues", (long long)n);
    int64_t lo = 0, hi = n - 2;
    int window_failed = 0;
    if (fix == MOEQ_KS_FIX_XMIN_PEAK) {
        /* peak of the 100-bin histogram of log10 λ; xmin searched in [0.95, 1.5] x peak */
        enum { BINS = 100 };
        int64_t cnt[BINS] = {0};
        double a = L[0] / log(10.0), b = L[n - 1] / log(10.0), w = (b - a) / BINS;
        int64_t arg = 0;
        if (w > 0) {
            for (int64_t i = 0; i < n; i++) {
                int64_t k = (int64_t)((L[i] / log(10.0) - a) / w);
                if (k >= BINS) k = BINS - 1;
                if (k < 0) k = 0;
                cnt[k]++;
            }
            for (int64_t k = 1; k < BINS; k++) if (cnt[k] > cnt[arg]) arg = k;
        }
        double peak = pow(10.0, a + (double)arg * w), xlo = 0.95 * peak, xhi = 1.5 * peak;
        int64_t l2 = 0;
        while (l2 < n && lam[l2] < xlo) l2++;
        int64_t h2 = l2;
        while (h2 + 1 < n && lam[h2 + 1] <= xhi) h2++;
        if (h2 > n - 2) h2 = n - 2;
        if (l2 <= h2 && lam[l2] <= xhi) { lo = l2; hi = h2; }
        else window_failed = 1;
    }
    ks_search(L, S, n, lo, hi, 0, fit);
    if (fix == MOEQ_KS_FIX_XMIN_PEAK) {
        /* a window edge is only a bound when the window is narrower than the whole range */
        fit->at_bound = window_failed || fit->i_xmin < 0 || !isfinite(fit->alpha) ||
                        ((fit->i_xmin == lo && lo > 0) || fit->i_xmin == hi) || fit->n_tail < 10;
    }
    if (fix == MOEQ_KS_FIX_CLIP_XMAX && isfinite(fit->alpha)) {
        /* WeightWatcher's finger fix: drop the top idx eigenvalues (2..10) and accept the first
         * refit whose alpha is lower by more than 1; stop once alpha <= 2 */
        for (int64_t idx = 2; idx <= 10 && n - idx >= 3; idx++) {
            moeq_ks_fit f2;
            /* suffix sums of the clipped spectrum: S'[i] = S[i] - S[n-idx] */
            double *S2 = malloc((size_t)(n - idx + 1) * sizeof *S2);
            if (!S2) { free(L); free(S); return moeq_fail(err, MOEQ_ERR_NOMEM, "moeq_spec_ks: clip"); }
            for (int64_t i = n - idx; i >= 0; i--) S2[i] = i == n - idx ? 0 : S2[i + 1] + L[i];
            ks_search(L, S2, n - idx, 0, n - idx - 2, 0, &f2);
            free(S2);
            if (!isfinite(f2.alpha) || f2.alpha <= 2.0) break;
            if (fit->alpha - f2.alpha > 1.0) {
                f2.fingers = idx;
                *fit = f2;
                break;
            }
        }
    }
    free(L);
    free(S);
    return MOEQ_OK;
}
