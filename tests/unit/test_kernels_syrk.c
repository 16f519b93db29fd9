/* Hessian accumulation (moeq_kernel_set.dsyrk; kernels/ref/syrk.c, x86/syrk_avx2.c,
 * syrk_avx512.c): the reference against a long double sum of the exact products of its float
 * inputs, every variant against the reference bit for bit at awkward sizes (d around the 4 x 12
 * and 8 x 24 tiles, n from 1 row), the upper triangle untouched, and rows added in two calls
 * equal to one call (calibrate splits its rows into blocks of 256). */
#include "harness.h"
#include "moeq_kernels.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint32_t rng = 4242;
static float frand(void)   /* uniform in [-1, 1) */
{
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 8388608.0f - 1.0f;
}

static const moeq_kernel_set *sets[8];
static int nsets;

static void fill(float *X, int64_t n, int64_t d)
{
    for (int64_t i = 0; i < n * d; i++) X[i] = frand() * (i % 7 == 0 ? 30.0f : 1.0f);
}

static void test_reference(void)
{
    const int64_t d = 37, n = 300;
    float *X = malloc((size_t)(n * d) * sizeof *X);
    double *C = calloc((size_t)(d * d), sizeof *C);
    fill(X, n, d);
    moeq_ref_dsyrk(d, n, X, C, NULL);
    double worst = 0;
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j <= i; j++) {
            long double s = 0, a = 0;
            for (int64_t t = 0; t < n; t++) {
                s += (long double)X[t * d + i] * (long double)X[t * d + j];
                a += fabsl((long double)X[t * d + i] * (long double)X[t * d + j]);
            }
            const double e = (double)(fabsl((long double)C[i * d + j] - s) / (a + 1e-300L));
            if (e > worst) worst = e;
        }
    /* n roundings of a float64 sum: <= n · 2^-53 of the sum of |terms| */
    CHECK_MSG(worst <= (double)n * 1.2e-16, "reference off by %g of sum |x_i x_j|", worst);
    free(X);
    free(C);
}

static void test_variants(void)
{
    const int64_t ds[] = { 1, 2, 3, 4, 5, 7, 8, 9, 11, 12, 13, 16, 23, 24, 25, 31, 33, 47, 48, 49, 64, 100, 131, 256 };
    const int64_t ns[] = { 1, 2, 5, 17, 256 };
    for (size_t a = 0; a < sizeof ds / sizeof *ds; a++)
        for (size_t b = 0; b < sizeof ns / sizeof *ns; b++) {
            const int64_t d = ds[a], n = ns[b];
            float *X = malloc((size_t)(n * d) * sizeof *X);
            double *C0 = malloc((size_t)(d * d) * sizeof *C0), *C = malloc((size_t)(d * d) * sizeof *C),
                   *S = malloc(MOEQ_DSYRK_SCRATCH(d, n) * sizeof *S);
            fill(X, n, d);
            for (int64_t i = 0; i < d * d; i++) C0[i] = (double)frand();   /* accumulates onto C */
            double *R = malloc((size_t)(d * d) * sizeof *R);
            memcpy(R, C0, (size_t)(d * d) * sizeof *R);
            moeq_ref_dsyrk(d, n, X, R, S);
            for (int k = 0; k < nsets; k++) {
                memcpy(C, C0, (size_t)(d * d) * sizeof *C);
                sets[k]->dsyrk(d, n, X, C, S);
                int64_t bad = 0, upper = 0;
                for (int64_t i = 0; i < d; i++)
                    for (int64_t j = 0; j < d; j++) {
                        if (j <= i && memcmp(&C[i * d + j], &R[i * d + j], sizeof(double))) bad++;
                        if (j > i && C[i * d + j] != C0[i * d + j]) upper++;
                    }
                CHECK_MSG(!bad, "%s dsyrk d %lld n %lld: %lld elements differ from the reference", sets[k]->name,
                          (long long)d, (long long)n, (long long)bad);
                CHECK_MSG(!upper, "%s dsyrk d %lld n %lld: wrote %lld upper elements", sets[k]->name, (long long)d,
                          (long long)n, (long long)upper);
                if (n > 2) {   /* rows [0, n1) then [n1, n): the same bits */
                    const int64_t n1 = n / 3;
                    memcpy(C, C0, (size_t)(d * d) * sizeof *C);
                    sets[k]->dsyrk(d, n1, X, C, S);
                    sets[k]->dsyrk(d, n - n1, X + n1 * d, C, S);
                    int64_t split = 0;
                    for (int64_t i = 0; i < d; i++)
                        for (int64_t j = 0; j <= i; j++) split += memcmp(&C[i * d + j], &R[i * d + j], sizeof(double)) != 0;
                    CHECK_MSG(!split, "%s dsyrk d %lld n %lld in two calls: %lld elements differ", sets[k]->name,
                              (long long)d, (long long)n, (long long)split);
                }
            }
            free(X);
            free(C0);
            free(C);
            free(R);
            free(S);
        }
}

int main(void)
{
    const char *names[] = { "ref", "avx2", "avx512", "vnni", "bf16", "bf16x2", "bf16f", "amx" };
    for (int i = 0; i < 8; i++) {
        const moeq_kernel_set *k = moeq_kernels_get(names[i]);
        if (k) sets[nsets++] = k;
    }
    printf("  dsyrk kernel sets here: %d\n", nsets);
    RUN_TEST(test_reference);
    RUN_TEST(test_variants);
    HARNESS_EXIT();
}
