/* Hessian accumulation (moeq_kernel_set.dsyrk; kernels/ref/syrk.c, x86/syrk_avx2.c,
 * syrk_avx512.c): the reference against a long double sum of the exact products of its float
 * inputs, every variant against the reference bit for bit at awkward sizes (d around the 4 x 12
 * and 8 x 24 tiles, n from 1 row), the upper triangle untouched, and rows added in two calls
 * equal to one call (calibrate splits its rows into blocks of 256).
 *
 * The chunked accumulation (hsyrk_pack / hsyrk_sum; x86/syrk_amx.c for bf16x2-f32x256,
 * syrk_avx512.c and syrk_avx2.c for f32x256): every set's packing gives its kind's reference's bytes (rows at odd
 * and even offsets, tails of d, denormals, the partner rows' halves untouched); the references'
 * and each variant's sums are within their kind's error bound (moeq_hsyrk_bound) of the long
 * double sums, and f32x256 variants give its reference's bits; rows split at a chunk boundary
 * give one call's bits. */
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

/* the reference of a set's kind (hsyrk_sums) */
static moeq_kernel_set ref_of(const moeq_kernel_set *k)
{
    moeq_kernel_set ref = moeq_kernels_ref;
    const int f32 = !strcmp(k->hsyrk_sums, "f32x256");
    ref.hsyrk_pack = f32 ? moeq_ref_fsyrk_pack : moeq_ref_hsyrk_pack;
    ref.hsyrk_sum = f32 ? moeq_ref_fsyrk_sum : moeq_ref_hsyrk_sum;
    ref.hsyrk_sums = k->hsyrk_sums;
    ref.name = f32 ? "ref f32x256" : "ref bf16x2-f32x256";
    return ref;
}

static void test_hsyrk_pack(void)
{
    const int64_t ds[] = { 1, 5, 15, 16, 17, 31, 32, 33, 100, 257 };
    for (size_t a = 0; a < sizeof ds / sizeof *ds; a++) {
        const int64_t d = ds[a], n = 40;
        float *X = malloc((size_t)(n * d) * sizeof *X);
        fill(X, n, d);
        X[0] = 1e-40f;           /* a denormal: zero in both */
        if (n * d > 3) X[3] = -0.0f;
        const size_t hb = MOEQ_HSYRK_HELD(d);
        uint8_t *H0 = aligned_alloc(64, hb), *H1 = aligned_alloc(64, hb);   /* held chunks are 64-byte aligned */
        for (int k = 0; k < nsets; k++) {
            if (!sets[k]->hsyrk_pack) continue;
            const moeq_kernel_set ref = ref_of(sets[k]);
            /* rows 0..6 at 0, rows 7..39 at an odd offset 101: garbage elsewhere stays as it was */
            for (size_t i = 0; i < hb; i++) H0[i] = H1[i] = (uint8_t)(i * 7 + 3);
            ref.hsyrk_pack(d, X, 7, 0, H0);
            ref.hsyrk_pack(d, X + 7 * d, n - 7, 101, H0);
            sets[k]->hsyrk_pack(d, X, 7, 0, H1);
            sets[k]->hsyrk_pack(d, X + 7 * d, n - 7, 101, H1);
            size_t bad = 0;
            for (size_t i = 0; i < hb; i++) bad += H0[i] != H1[i];
            CHECK_MSG(!bad, "%s hsyrk_pack d %lld: %zu bytes differ from the reference", sets[k]->name, (long long)d, bad);
        }
        free(H0);
        free(H1);
        free(X);
    }
}

static void test_hsyrk_sum(void)
{
    const int64_t ds[] = { 1, 3, 9, 16, 17, 31, 32, 33, 47, 49, 64, 96, 100, 257 };
    const int64_t ns[] = { 1, 2, 31, 33, 256, 300, 512 };
    /* both kinds' references, then every set that has one of them */
    moeq_kernel_set refs[2];
    const moeq_kernel_set *all[12];
    int na = 0;
    refs[0] = moeq_kernels_ref;
    refs[0].hsyrk_sums = "bf16x2-f32x256";
    refs[0] = ref_of(&refs[0]);
    refs[1] = moeq_kernels_ref;
    refs[1].hsyrk_sums = "f32x256";
    refs[1] = ref_of(&refs[1]);
    all[na++] = &refs[0];
    all[na++] = &refs[1];
    for (int k = 0; k < nsets; k++)
        if (sets[k]->hsyrk_sum) all[na++] = sets[k];
    printf("  hsyrk kernel sets here: %d besides the references\n", na - 2);
    for (size_t a = 0; a < sizeof ds / sizeof *ds; a++)
        for (size_t b = 0; b < sizeof ns / sizeof *ns; b++) {
            const int64_t d = ds[a], n = ns[b];
            float *X = malloc((size_t)(n * d) * sizeof *X);
            fill(X, n, d);
            double *C = malloc((size_t)(d * d) * sizeof *C), *C2 = malloc((size_t)(d * d) * sizeof *C2);
            void *H = aligned_alloc(64, MOEQ_HSYRK_HELD(d)), *S = malloc(MOEQ_HSYRK_SCRATCH);
            for (int k = 0; k < na; k++) {
                for (int64_t i = 0; i < d * d; i++) C[i] = 0.5;   /* accumulates onto C */
                moeq_hsyrk(all[k], d, n, X, C, H, S);
                if (k > 1 && !strcmp(all[k]->hsyrk_sums, "f32x256")) {   /* f32x256: the reference's bits */
                    for (int64_t i = 0; i < d * d; i++) C2[i] = 0.5;
                    moeq_hsyrk(&refs[1], d, n, X, C2, H, S);
                    int64_t diff = 0;
                    for (int64_t i = 0; i < d * d; i++) diff += memcmp(&C[i], &C2[i], sizeof *C) != 0;
                    CHECK_MSG(!diff, "%s hsyrk d %lld n %lld: %lld elements differ from the reference's bits",
                              all[k]->name, (long long)d, (long long)n, (long long)diff);
                }
                double worst = 0;
                int64_t upper = 0;
                for (int64_t i = 0; i < d; i++)
                    for (int64_t j = 0; j < d; j++) {
                        if (j > i) {
                            upper += C[i * d + j] != 0.5;
                            continue;
                        }
                        double e = 0;
                        for (int64_t r0 = 0; r0 < n; r0 += MOEQ_HSYRK_ROWS) {   /* the bound per chunk */
                            const int64_t nr = n - r0 < MOEQ_HSYRK_ROWS ? n - r0 : MOEQ_HSYRK_ROWS;
                            long double s = 0, abs = 0;
                            for (int64_t t = r0; t < r0 + nr; t++) {
                                const long double p = (long double)X[t * d + i] * (long double)X[t * d + j];
                                s += p;
                                abs += fabsl(p);
                            }
                            (void)s;
                            e += moeq_hsyrk_bound(all[k]->hsyrk_sums, nr) * (double)abs;
                        }
                        long double s = 0.5L;
                        for (int64_t t = 0; t < n; t++) s += (long double)X[t * d + i] * (long double)X[t * d + j];
                        const double err = (double)fabsl((long double)C[i * d + j] - s);
                        const double rel = err / (e + 1e-300);
                        if (rel > worst) worst = rel;
                    }
                CHECK_MSG(worst <= 1.0, "%s hsyrk d %lld n %lld: %.3g of the error bound", all[k]->name, (long long)d,
                          (long long)n, worst);
                CHECK_MSG(!upper, "%s hsyrk d %lld n %lld: wrote %lld upper elements", all[k]->name, (long long)d,
                          (long long)n, (long long)upper);
                if (n > MOEQ_HSYRK_ROWS) {   /* rows split at a chunk boundary: one call's bits */
                    for (int64_t i = 0; i < d * d; i++) C2[i] = 0.5;
                    moeq_hsyrk(all[k], d, MOEQ_HSYRK_ROWS, X, C2, H, S);
                    moeq_hsyrk(all[k], d, n - MOEQ_HSYRK_ROWS, X + MOEQ_HSYRK_ROWS * d, C2, H, S);
                    CHECK_MSG(!memcmp(C, C2, (size_t)(d * d) * sizeof *C), "%s hsyrk d %lld n %lld: a split at %d rows "
                              "changed the bits", all[k]->name, (long long)d, (long long)n, MOEQ_HSYRK_ROWS);
                }
            }
            free(X);
            free(C);
            free(C2);
            free(H);
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
    RUN_TEST(test_hsyrk_pack);
    RUN_TEST(test_hsyrk_sum);
    HARNESS_EXIT();
}
