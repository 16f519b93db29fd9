/* Activation kernels (moeq_kernel_set.softmax, .swiglu; kernels/ref/act.c, x86/act_avx2.c, act_avx512.c):
 * the reference against float64 math, every variant against the reference at awkward lengths
 * (1..70 around the 16-lane tails), with sinks, masked (-inf) scores, large and tiny
 * arguments; a row past nv is zeroed; each variant's sum of probabilities is 1. */
#include "harness.h"
#include "moeq_kernels.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static uint32_t rng = 777;
static float frand(void)   /* uniform in [-1, 1) */
{
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 8388608.0f - 1.0f;
}

static const moeq_kernel_set *sets[8];
static int nsets;

/* the row's probabilities in float64 from its float scores (the definition) */
static void softmax64(const float *s, int64_t nv, float scale, float sink, double *p)
{
    double mx = sink;
    for (int64_t j = 0; j < nv; j++) if (s[j] != -INFINITY && (double)(s[j] * scale) > mx) mx = (double)(s[j] * scale);
    double sum = sink == -INFINITY ? 0 : exp((double)sink - mx);
    for (int64_t j = 0; j < nv; j++) {
        p[j] = s[j] == -INFINITY ? 0 : exp((double)(s[j] * scale) - mx);
        sum += p[j];
    }
    for (int64_t j = 0; j < nv; j++) p[j] /= sum;
}

static void test_softmax(void)
{
    float s[80], row[80];
    double p[80];
    for (int trial = 0; trial < 4; trial++)
        for (int64_t nv = 1; nv <= 70; nv++) {
            const int64_t n = nv + (nv % 3) * 5;
            const float scale = trial == 3 ? 1.0f : 0.125f, amp = trial == 2 ? 400.0f : 8.0f;
            const float sink = trial == 1 ? 0.5f : -INFINITY;
            for (int64_t j = 0; j < n; j++) s[j] = frand() * amp;
            if (nv > 3 && trial == 0) s[1] = s[nv - 2] = -INFINITY;   /* masked keys */
            softmax64(s, nv, scale, sink, p);
            for (int k = 0; k < nsets; k++) {
                for (int64_t j = 0; j < n; j++) row[j] = s[j];
                sets[k]->softmax(row, nv, n, scale, sink);
                double worst = 0, sum = 0;
                int zero = 1;
                for (int64_t j = 0; j < nv; j++) {
                    /* float32 steps: scale, subtract, exp (<= 2 ulp), sum of nv terms, divide */
                    const double tol = 4e-7 * p[j] + 2e-7 * (double)nv * 6e-8 + 1e-30;
                    const double d = fabs((double)row[j] - p[j]) - tol * (1 + 0.5 * (double)nv);
                    if (d > worst) worst = d;
                    sum += row[j];
                }
                for (int64_t j = nv; j < n; j++) zero &= row[j] == 0.0f;
                CHECK_MSG(worst <= 0, "%s softmax nv %lld trial %d: off by %g beyond the bound", sets[k]->name,
                          (long long)nv, trial, worst);
                CHECK_MSG(zero, "%s softmax nv %lld: row past nv not zeroed", sets[k]->name, (long long)nv);
                if (sink == -INFINITY) CHECK_NEAR(sum, 1.0, 1e-5);
                if (trial == 0 && nv > 3) CHECK(row[1] == 0.0f && row[nv - 2] == 0.0f);
            }
        }
}

static void test_swiglu(void)
{
    float g[80], u[80], out[80];
    for (int trial = 0; trial < 3; trial++)
        for (int64_t n = 1; n <= 70; n++) {
            const float amp = trial == 0 ? 4.0f : trial == 1 ? 30.0f : 120.0f;
            for (int64_t i = 0; i < n; i++) {
                g[i] = frand() * amp;
                u[i] = frand();
            }
            for (int k = 0; k < nsets; k++) {
                for (int64_t i = 0; i < n; i++) out[i] = g[i];
                sets[k]->swiglu(out, u, n);
                for (int64_t i = 0; i < n; i++) {
                    const double want = (double)g[i] / (1.0 + exp(-(double)g[i])) * (double)u[i];
                    CHECK_MSG(fabs((double)out[i] - want) <= 5e-7 * fabs(want) + 1e-30, "%s swiglu(%g, %g) = %.9g, want %.9g",
                              sets[k]->name, (double)g[i], (double)u[i], (double)out[i], want);
                }
            }
        }
    /* very negative gates give 0 (of either sign), not NaN; a NaN is carried */
    float gg[3] = { -200.0f, -1e30f, NAN }, uu[3] = { 1, 1, 1 };
    for (int k = 0; k < nsets; k++) {
        float o[3] = { gg[0], gg[1], gg[2] };
        sets[k]->swiglu(o, uu, 3);
        CHECK_MSG(o[0] == 0.0f && o[1] == 0.0f && isnan(o[2]), "%s swiglu extremes: %g %g %g", sets[k]->name, (double)o[0],
                  (double)o[1], (double)o[2]);
    }
}

int main(void)
{
    const char *names[] = {"ref", "avx2", "avx512", "vnni", "bf16", "bf16x2", "bf16f", "amx"};
    for (int i = 0; i < 8; i++) {
        const moeq_kernel_set *k = moeq_kernels_get(names[i]);
        if (k) sets[nsets++] = k;
    }
    printf("  activation kernel sets here: %d\n", nsets);
    RUN_TEST(test_softmax);
    RUN_TEST(test_swiglu);
    HARNESS_EXIT();
}
