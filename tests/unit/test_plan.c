/* The plan solver against brute force on many small random instances (convex and arbitrary
 * costs, equal and unequal sizes, tight and loose budgets), infeasible budgets, and a
 * 10 000-matrix instance solved exactly in well under a second. */
#include "harness.h"
#include "moeq_core.h"
#include "moeq_plan.h"

#include <stdint.h>
#include <stdlib.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double urand(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static double brute(int n, int k, const double *c, const int64_t *s, int64_t cap)
{
    double best = INFINITY;
    int64_t total = 1;
    for (int i = 0; i < n; i++) total *= k;
    for (int64_t code = 0; code < total; code++) {
        int64_t x = code, used = 0;
        double v = 0;
        for (int i = 0; i < n; i++) {
            int j = (int)(x % k);
            x /= k;
            used += s[i * k + j];
            v += c[i * k + j];
        }
        if (used <= cap && v < best) best = v;
    }
    return best;
}

static void test_solver_brute_force(void)
{
    const int bits[4] = { 2, 3, 4, 8 };
    int mismatches = 0, inexact = 0, instances = 0;
    for (int t = 0; t < 3000; t++) {
        int n = 1 + (int)(urand() * 8), k = 4, mode = t % 3;
        double c[32];
        int64_t s[32];
        for (int i = 0; i < n; i++) {
            int64_t nw = mode == 0 ? 1 : 1 + (int64_t)(urand() * 5);   /* equal or unequal sizes */
            double sens = urand() * 10;
            for (int j = 0; j < k; j++) {
                s[i * k + j] = nw * bits[j];
                c[i * k + j] = mode == 2 ? urand() : (double)nw * sens * pow(4.0, -bits[j]);   /* arbitrary or convex */
            }
        }
        int64_t mn = 0, mx = 0;
        for (int i = 0; i < n; i++) { mn += s[i * k]; mx += s[i * k + 3]; }
        int64_t cap = mn + (int64_t)(urand() * (double)(mx - mn + 1));
        int ch[8];
        moeq_plan_solve_info info;
        moeq_error err;
        CHECK(moeq_plan_solve(n, k, c, s, cap, 0, ch, &info, &err) == MOEQ_OK);
        double v = 0;
        int64_t used = 0;
        for (int i = 0; i < n; i++) { v += c[i * k + ch[i]]; used += s[i * k + ch[i]]; }
        double b = brute(n, k, c, s, cap);
        CHECK(used <= cap);
        CHECK_NEAR(v, info.cost, 1e-12);
        if (fabs(v - b) > 1e-12 * (1 + fabs(b))) mismatches++;
        inexact += !info.exact;
        instances++;
    }
    CHECK_MSG(mismatches == 0, "%d of %d instances differ from brute force", mismatches, instances);
    CHECK(inexact == 0);
}

static void test_solver_infeasible(void)
{
    double c[4] = { 1, 0.5, 0.25, 0.1 };
    int64_t s[4] = { 2, 3, 4, 8 };
    int ch[1];
    moeq_plan_solve_info info;
    moeq_error err;
    CHECK(moeq_plan_solve(1, 4, c, s, 1, 0, ch, &info, &err) == MOEQ_ERR_RANGE);
    CHECK(moeq_plan_solve(1, 4, c, s, 100, 0, ch, &info, &err) == MOEQ_OK && ch[0] == 3);
}

static void test_solver_10000(void)
{
    const int n = 10000, k = 4, bits[4] = { 2, 3, 4, 8 };
    double *c = malloc((size_t)(n * k) * sizeof *c);
    int64_t *s = malloc((size_t)(n * k) * sizeof *s);
    int *ch = malloc((size_t)n * sizeof *ch);
    for (int i = 0; i < n; i++) {
        double sens = exp(3 * urand());
        for (int j = 0; j < k; j++) {
            s[i * k + j] = (int64_t)2883584 * bits[j];   /* 2048 x 1408 weights, bits */
            c[i * k + j] = sens * 2883584.0 * pow(4.0, -bits[j]);
        }
    }
    int64_t cap = (int64_t)(3.0 * 2883584.0 * n);
    moeq_plan_solve_info info;
    moeq_error err;
    double t0 = moeq_now();
    CHECK(moeq_plan_solve(n, k, c, s, cap, 0, ch, &info, &err) == MOEQ_OK);
    double secs = moeq_now() - t0;
    printf("  10000 matrices: %.3f s, exact %d, %lld free items after fixing\n", secs, info.exact,
           (long long)info.free_items);
    CHECK(secs < 1.0);
    CHECK(info.exact);
    CHECK(info.used <= cap);
    free(c); free(s); free(ch);
}

int main(void)
{
    RUN_TEST(test_solver_brute_force);
    RUN_TEST(test_solver_infeasible);
    RUN_TEST(test_solver_10000);
    HARNESS_EXIT();
}
