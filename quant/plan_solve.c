/* The exact solver of the budgeted codec choice (a multiple-choice knapsack):
 *   1. Lagrangian relaxation: for μ each item takes argmin cost + μ·size; bisection on μ finds
 *      the smallest μ whose choice fits. Its dual value is a lower bound on the optimum.
 *   2. Greedy fill: upgrade by best cost decrease per extra size while the slack allows.
 *   3. Reduced-cost fixing: an option whose reduced cost exceeds (greedy − bound) cannot be in
 *      any solution at least as good as the greedy one, so it is dropped; items left with one
 *      option are fixed.
 *   4. The remaining items are solved exactly by dynamic programming over their extra size
 *      beyond their smallest option, in units of the gcd of the sizes.
 * With convex costs (the usual case) step 3 leaves only the few items at the multiplier's
 * threshold, so the DP is tiny even for 10 000 matrices. */
#include "moeq_plan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) { int64_t t = a % b; a = b; b = t; }
    return a;
}

/* Each item's Lagrangian choice at mu (ties: smaller size, then lower index); returns Σ size. */
static int64_t lagr(int64_t n, int k, const double *cost, const int64_t *size, double mu, int *ch, double *val)
{
    int64_t used = 0;
    double v = 0;
    for (int64_t i = 0; i < n; i++) {
        int best = 0;
        double bv = cost[i * k] + mu * (double)size[i * k];
        for (int j = 1; j < k; j++) {
            double x = cost[i * k + j] + mu * (double)size[i * k + j];
            if (x < bv || (x == bv && size[i * k + j] < size[i * k + best])) { bv = x; best = j; }
        }
        ch[i] = best;
        used += size[i * k + best];
        v += bv;
    }
    if (val) *val = v;
    return used;
}

moeq_status moeq_plan_solve(int64_t n, int k, const double *cost, const int64_t *size, int64_t capacity,
                            int64_t max_cells, int *choice, moeq_plan_solve_info *info, moeq_error *err)
{
    memset(info, 0, sizeof *info);
    if (n == 0) { info->exact = 1; return MOEQ_OK; }
    if (k < 1) return moeq_fail(err, MOEQ_ERR_MISUSE, "plan: no candidate");
    if (max_cells <= 0) max_cells = 200000000;
    int64_t minsum = 0;
    double cscale = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t mn = size[i * k];
        for (int j = 0; j < k; j++) {
            if (size[i * k + j] < 0 || !isfinite(cost[i * k + j]))
                return moeq_fail(err, MOEQ_ERR_RANGE, "plan: item %lld option %d has a negative size or a "
                                 "non-finite cost", (long long)i, j);
            mn = size[i * k + j] < mn ? size[i * k + j] : mn;
            cscale = fabs(cost[i * k + j]) > cscale ? fabs(cost[i * k + j]) : cscale;
        }
        minsum += mn;
    }
    if (minsum > capacity)
        return moeq_fail(err, MOEQ_ERR_RANGE, "plan: the budget (%lld) is below what the smallest candidates need "
                         "(%lld)", (long long)capacity, (long long)minsum);
    int *cur = malloc((size_t)n * sizeof *cur);
    int *tmp = malloc((size_t)n * sizeof *tmp);
    if (!cur || !tmp) { free(cur); free(tmp); return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); }
    /* 1. bisection: mu = 0 fits? else find hi with a fitting choice */
    double lo = 0, hi = 1, dual = -INFINITY, dv;
    int64_t used = lagr(n, k, cost, size, 0, cur, &dv);
    if (used <= capacity) {
        hi = 0;
    } else {
        while (lagr(n, k, cost, size, hi, tmp, NULL) > capacity && hi < 1e300) hi *= 4;
        for (int it = 0; it < 200 && hi - lo > 1e-15 * hi; it++) {
            double mid = 0.5 * (lo + hi);
            int64_t u = lagr(n, k, cost, size, mid, tmp, &dv);
            double d = dv - mid * (double)capacity;
            if (d > dual) dual = d;
            if (u <= capacity) hi = mid;
            else lo = mid;
        }
        used = lagr(n, k, cost, size, hi, cur, NULL);
    }
    lagr(n, k, cost, size, hi, tmp, &dv);
    if (dv - hi * (double)capacity > dual) dual = dv - hi * (double)capacity;
    info->mu = hi;
    /* 2. greedy fill of the slack */
    for (;;) {
        int64_t bi = -1;
        int bj = 0;
        double bratio = 0;
        for (int64_t i = 0; i < n; i++) {
            int c = cur[i];
            for (int j = 0; j < k; j++) {
                int64_t ds = size[i * k + j] - size[i * k + c];
                double dc = cost[i * k + j] - cost[i * k + c];
                if (dc >= 0 || used + ds > capacity) continue;
                double r = ds > 0 ? dc / (double)ds : -INFINITY;
                if (bi < 0 || r < bratio) { bi = i; bj = j; bratio = r; }
            }
        }
        if (bi < 0) break;
        used += size[bi * k + bj] - size[bi * k + cur[bi]];
        cur[bi] = bj;
    }
    double ub = 0;
    for (int64_t i = 0; i < n; i++) ub += cost[i * k + cur[i]];
    if (dual > ub) dual = ub;
    memcpy(choice, cur, (size_t)n * sizeof *choice);
    info->cost = ub;
    info->used = used;
    info->lower_bound = dual;
    /* 3. reduced-cost fixing at mu = hi (the bound used is the dual at hi, valid for any mu) */
    double mu = hi, lb_mu = dv - mu * (double)capacity;
    double gap = ub - lb_mu, tol = 1e-9 * (cscale > 0 ? cscale : 1) * 1e-3 + 1e-12 * fabs(ub);
    uint8_t *allow = calloc((size_t)(n * k), 1);
    int64_t *freeidx = malloc((size_t)n * sizeof *freeidx);
    int64_t nfree = 0, fixed_size = 0;
    if (!allow || !freeidx) { free(cur); free(tmp); free(allow); free(freeidx); return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); }
    for (int64_t i = 0; i < n; i++) {
        double best = cost[i * k + tmp[i]] + mu * (double)size[i * k + tmp[i]];
        int cnt = 0;
        for (int j = 0; j < k; j++) {
            double rc = cost[i * k + j] + mu * (double)size[i * k + j] - best;
            if (rc <= gap + tol + 1e-9 * fabs(best)) { allow[i * k + j] = 1; cnt++; }
        }
        if (cnt <= 1) {
            int j = tmp[i];
            for (int jj = 0; jj < k; jj++) if (allow[i * k + jj]) j = jj;
            fixed_size += size[i * k + j];
            tmp[i] = j;
        } else {
            freeidx[nfree++] = i;
        }
    }
    info->free_items = nfree;
    /* 4. DP over the free items' extra sizes */
    int64_t capleft = capacity - fixed_size, g = 0, base = 0, maxextra = 0;
    for (int64_t f = 0; f < nfree; f++) {
        int64_t i = freeidx[f], mn = INT64_MAX, mx = 0;
        for (int j = 0; j < k; j++)
            if (allow[i * k + j]) { mn = size[i * k + j] < mn ? size[i * k + j] : mn; mx = size[i * k + j] > mx ? size[i * k + j] : mx; }
        base += mn;
        maxextra += mx - mn;
        for (int j = 0; j < k; j++)
            if (allow[i * k + j]) g = gcd64(g, size[i * k + j] - mn);
    }
    int exact = 0;
    if (capleft >= base) {
        int64_t extra = capleft - base < maxextra ? capleft - base : maxextra;
        if (g == 0) g = 1;
        int64_t W = extra / g;
        if (nfree == 0) {
            exact = 1;
        } else if ((double)nfree * (double)(W + 1) <= (double)max_cells) {
            double *dp = malloc((size_t)(W + 1) * sizeof *dp), *nd = malloc((size_t)(W + 1) * sizeof *nd);
            uint8_t *pick = malloc((size_t)(nfree * (W + 1)));
            if (dp && nd && pick) {
                for (int64_t w = 0; w <= W; w++) dp[w] = w == 0 ? 0 : INFINITY;
                for (int64_t f = 0; f < nfree; f++) {
                    int64_t i = freeidx[f], mn = INT64_MAX;
                    for (int j = 0; j < k; j++) if (allow[i * k + j] && size[i * k + j] < mn) mn = size[i * k + j];
                    for (int64_t w = 0; w <= W; w++) { nd[w] = INFINITY; pick[f * (W + 1) + w] = 255; }
                    for (int j = 0; j < k; j++) {
                        if (!allow[i * k + j]) continue;
                        int64_t dw = (size[i * k + j] - mn) / g;
                        double c = cost[i * k + j];
                        for (int64_t w = dw; w <= W; w++) {
                            double v = dp[w - dw] + c;
                            if (v < nd[w]) { nd[w] = v; pick[f * (W + 1) + w] = (uint8_t)j; }
                        }
                    }
                    double *t = dp; dp = nd; nd = t;
                }
                int64_t bw = -1;
                for (int64_t w = 0; w <= W; w++) if (isfinite(dp[w]) && (bw < 0 || dp[w] < dp[bw])) bw = w;
                if (bw >= 0) {
                    for (int64_t f = nfree - 1; f >= 0; f--) {
                        int64_t i = freeidx[f], mn = INT64_MAX;
                        for (int j = 0; j < k; j++) if (allow[i * k + j] && size[i * k + j] < mn) mn = size[i * k + j];
                        int j = pick[f * (W + 1) + bw];
                        tmp[i] = j;
                        bw -= (size[i * k + j] - mn) / g;
                    }
                    exact = 1;
                }
            }
            free(dp); free(nd); free(pick);
        }
    }
    if (exact) {
        double c = 0;
        int64_t u = 0;
        for (int64_t i = 0; i < n; i++) { c += cost[i * k + tmp[i]]; u += size[i * k + tmp[i]]; }
        if (u <= capacity && c <= ub) {
            memcpy(choice, tmp, (size_t)n * sizeof *choice);
            info->cost = c;
            info->used = u;
        }
        info->lower_bound = info->cost;
    }
    info->exact = exact;
    free(cur); free(tmp); free(allow); free(freeidx);
    return MOEQ_OK;
}
