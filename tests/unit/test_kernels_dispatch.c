/* The kernel sets' float_acts flag against what their kernels do, MOEQ_KERNEL=float's choice,
 * and moeq_kernels_use. float_acts = 1 promises float32 activations in every product: on
 * inputs with full float32 mantissas, the bf16-weight wgemm and the packed gemm of each such set
 * stay within float32 rounding (2^-15 of sum |w x|) of the float64 reference. A set with 0 rounds
 * the activations somewhere (bf16: 2^-9; int8 per 32-column block: 2^-8), which shows as an
 * error above 2^-13 of sum |w x| on one of the two. */
#include <stdlib.h>
#include <string.h>
#include "harness.h"
#include "moeq_kernels.h"
#include "qmat_testutil.h"

static const char *NAMES[] = {"ref", "avx2", "avx512", "vnni", "bf16", "bf16x2", "bf16f", "amx"};
#define N_NAMES 8

static uint16_t to_bf16(float f)   /* round to nearest even (finite inputs) */
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

/* max over outputs (token t, row r) of |Yf - Yr| / sum_c |w[r][c] x[t][c]|, w dense R x C */
static double max_rel_err(const float *w, const float *X, const float *Yr, const float *Yf, int64_t R, int64_t C,
                          int64_t n)
{
    double worst = 0;
    for (int64_t t = 0; t < n; t++)
        for (int64_t r = 0; r < R; r++) {
            double mag = 0;
            for (int64_t c = 0; c < C; c++) mag += fabs((double)w[r * C + c] * X[t * C + c]);
            double e = fabs((double)Yf[t * R + r] - Yr[t * R + r]) / mag;
            if (e != e || worst != worst) worst = NAN;   /* a NaN stays: the checks then fail */
            else if (e > worst) worst = e;
        }
    return worst;
}

/* max over outputs of |fast - ref| / sum |w x|, bf16 weights R x C, n tokens */
static double wgemm_err(const moeq_kernel_set *ks, int64_t R, int64_t C, int64_t n)
{
    uint16_t *w = malloc((size_t)(R * C) * 2);
    float *wf = malloc((size_t)(R * C) * 4), *X = malloc((size_t)(n * C) * 4);
    float *Yr = malloc((size_t)(n * R) * 4), *Yf = malloc((size_t)(n * R) * 4);
    for (int64_t i = 0; i < R * C; i++) {
        w[i] = to_bf16(frand());
        uint32_t u = (uint32_t)w[i] << 16;
        memcpy(&wf[i], &u, 4);
    }
    for (int64_t i = 0; i < n * C; i++) X[i] = frand();
    moeq_wmat m = {MOEQ_W_BF16, R, C, w, 0};
    moeq_ref_wgemm(&m, X, n, C, 0, R, Yr, R);
    ks->wgemm(&m, X, n, C, 0, R, Yf, R);
    double worst = max_rel_err(wf, X, Yr, Yf, R, C, n);
    free(w);
    free(wf);
    free(X);
    free(Yr);
    free(Yf);
    return worst;
}

/* the same for a packed q4 g32 matrix through the set's gemm */
static double gemm_err(const moeq_kernel_set *ks, int64_t R, int64_t C, int64_t n)
{
    qm m;
    if (make(&m, 4, 32, 0, R, C)) { CHECK(0); return 1; }
    float *d = malloc((size_t)(R * C) * 4), *X = malloc((size_t)(n * C) * 4);
    float *Yr = malloc((size_t)(n * R) * 4), *Yf = malloc((size_t)(n * R) * 4);
    moeq_kernels_ref.dequant(&m.q, 0, R, d);
    for (int64_t i = 0; i < n * C; i++) X[i] = frand();
    moeq_kernels_ref.gemm(&m.q, X, n, C, 0, R, Yr, R);
    ks->gemm(&m.q, X, n, C, 0, R, Yf, R);
    double worst = max_rel_err(d, X, Yr, Yf, R, C, n);
    free(m.raw);
    free(d);
    free(X);
    free(Yr);
    free(Yf);
    return worst;
}

static void test_float_acts_flag_holds(void)
{
    int seen = 0;
    for (int i = 0; i < N_NAMES; i++) {
        const moeq_kernel_set *ks = moeq_kernels_get(NAMES[i]);
        if (!ks) continue;
        seen++;
        CHECK(!strcmp(ks->name, NAMES[i]));
        double ew = wgemm_err(ks, 40, 96, 37), eg = gemm_err(ks, 40, 96, 37);
        printf("  %-6s float_acts %d: bf16 wgemm %.3g, q4 gemm %.3g of sum |w x|\n", ks->name, ks->float_acts, ew,
               eg);
        CHECK_MSG(ew == ew && eg == eg, "%s: NaN in its results", ks->name);
        if (ks->float_acts)
            CHECK_MSG(ew <= 0x1p-15 && eg <= 0x1p-15, "%s claims float32 activations: errors %g, %g", ks->name, ew,
                      eg);
        else
            CHECK_MSG(ew > 0x1p-13 || eg > 0x1p-13, "%s claims rounded activations but both errors are %g, %g",
                      ks->name, ew, eg);
    }
    CHECK(seen >= 1);
}

static void test_float_alias(void)
{
    const moeq_kernel_set *f = moeq_kernels_get("float");
    CHECK(f && f->float_acts);
    /* the first of amx, bf16f, avx512, avx2 this CPU has, else ref */
    const char *order[] = {"amx", "bf16f", "avx512", "avx2"};
    const moeq_kernel_set *want = &moeq_kernels_ref;
    for (int i = 0; i < 4; i++)
        if (moeq_kernels_get(order[i])) { want = moeq_kernels_get(order[i]); break; }
    CHECK_MSG(f == want, "float picked %s, want %s", f ? f->name : "(none)", want->name);
    CHECK(moeq_kernels_get("nonesuch") == NULL);
}

static void test_use_and_reset(void)
{
    const moeq_kernel_set *def = moeq_kernels();
    moeq_kernels_use(&moeq_kernels_ref);
    CHECK(moeq_kernels() == &moeq_kernels_ref);
    CHECK(strstr(moeq_kernels_note(), "ref") != NULL);
    moeq_kernels_use(NULL);   /* back to MOEQ_KERNEL / cpuid */
    CHECK(moeq_kernels() == def);
}

int main(void)
{
    RUN_TEST(test_float_acts_flag_holds);
    RUN_TEST(test_float_alias);
    RUN_TEST(test_use_and_reset);
    HARNESS_EXIT();
}
