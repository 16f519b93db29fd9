/* The int8-activation VNNI GEMM (kernels/x86/qmat_gemm_vnni.c) against the plain-C formula
 * moeq_ref_gemm_x8 within float32 rounding of its terms, at awkward sizes (every codec, groups
 * straddling or exceeding the 64-column transposes, short last groups, batches that are not a
 * multiple of 16, row ranges inside the matrix, strided X and Y); rounding ties of the
 * activations; NaN/Inf tokens refused; a row's bits independent of how rows are split; gate and
 * up over one preparation (moeq_vnni_gemm_x8_pair) equal to two GEMMs. */
#include "harness.h"
#include "qmat_testutil.h"
#include "moeq_kernels.h"
#include "moeq_quant.h"
#include "kernels/x86/qmat_x86.h"

#include <stdlib.h>

/* One case: rows [r0, r1) of an R x C matrix, n tokens with leading dimensions ldx, ldy.
 * Returns the number of (token, row) values outside the bound. */
static int one_case(int bits, int group, int sym, int64_t R, int64_t C, int64_t n, int64_t r0, int64_t r1,
                    int64_t ldx, int64_t ldy, int ties)
{
    qm m;
    CHECK(make(&m, bits, group, sym, R, C) == 0);
    const int64_t nr = r1 - r0;
    float *d = malloc((size_t)(R * C) * 4), *X = malloc((size_t)(n * ldx) * 4);
    float *Y8 = malloc((size_t)(n * ldy) * 4), *Yv = malloc((size_t)(n * ldy) * 4);
    moeq_kernels_ref.dequant(&m.q, 0, R, d);
    for (int64_t i = 0; i < n * ldx; i++) {
        if (ties) {   /* blocks with max |x| 127 (scale exactly 1) and values on .5: round half to even */
            int64_t c = i % ldx;
            X[i] = c % 32 == 0 ? 127.0f : (float)((int)(frand() * 100)) + 0.5f;
        } else {
            X[i] = frand() * (i % 29 == 3 ? 40 : 1);
        }
    }
    if (n > 1 && !ties)
        for (int64_t c = 0; c < C; c++) X[ldx + c] = 0.0f;   /* token 1 all zero */
    for (int64_t i = 0; i < n * ldy; i++) Y8[i] = Yv[i] = -7.0f;
    moeq_ref_gemm_x8(&m.q, X, n, ldx, r0, r1, Y8, ldy);
    int rc = moeq_vnni_gemm_x8(&m.q, X, n, ldx, r0, r1, Yv, ldy);
    CHECK_MSG(rc == 1, "b%d g%d s%d %lldx%lld n%lld: not handled", bits, group, sym, (long long)R, (long long)C,
              (long long)n);
    int bad = 0;
    for (int64_t i = 0; rc == 1 && i < n; i++) {
        for (int64_t r = r0; r < r1; r++) {
            double tol = 2e-6 * x8_terms(&m, d, r, X + i * ldx) + 1e-30;
            double e = fabs((double)Yv[i * ldy + (r - r0)] - Y8[i * ldy + (r - r0)]);
            if (!(e <= tol)) {
                if (bad++ < 3)
                    fprintf(stderr, "  b%d g%d s%d %lldx%lld n%lld rows %lld..%lld token %lld row %lld: %.9g vs %.9g\n",
                            bits, group, sym, (long long)R, (long long)C, (long long)n, (long long)r0, (long long)r1,
                            (long long)i, (long long)r, Yv[i * ldy + (r - r0)], Y8[i * ldy + (r - r0)]);
            }
        }
        for (int64_t j = nr; j < ldy; j++) CHECK(Yv[i * ldy + j] == -7.0f);   /* nothing outside the range */
    }
    free(d); free(X); free(Y8); free(Yv); free(m.raw);
    return bad;
}

static void test_against_formula(void)
{
    if (!moeq_kernels_get("vnni")) {
        printf("note: no AVX-512 VNNI on this CPU: the int8 GEMM is not tested\n");
        return;
    }
    const int64_t rows_l[] = { 1, 3, 17, 100 };
    const int64_t cols_l[] = { 32, 96, 160, 256, 352, 544 };
    const int64_t n_l[] = { 4, 5, 17, 64, 100 };
    const int bits_l[] = { 2, 3, 4, 8 }, group_l[] = { 32, 64, 96, 128, 256, 0 };
    int quick = getenv("MOEQ_TEST_QUICK") != NULL, bad = 0, cases = 0, k = 0;
    for (int bi = 0; bi < 4; bi++)
        for (int gi = 0; gi < 6; gi++)
            for (int sym = 0; sym < 2; sym++)
                for (int ci = 0; ci < 6; ci += quick ? 3 : 1) {
                    /* rows and batch cycle through their lists so every pair meets every codec */
                    k++;
                    int64_t R = rows_l[k % 4], C = cols_l[ci], n = n_l[(k / 4) % 5];
                    int64_t r0 = R > 2 && k % 3 ? 1 : 0, r1 = R > 2 && k % 2 ? R - 1 : R;
                    int64_t ldx = k % 5 == 0 ? C + 32 : C, ldy = (r1 - r0) + (k % 4 == 1 ? 3 : 0);
                    bad += one_case(bits_l[bi], group_l[gi], sym, R, C, n, r0, r1, ldx, ldy, 0);
                    cases++;
                }
    /* every batch size and row count on two codecs */
    for (int ni = 0; ni < 5; ni++)
        for (int ri = 0; ri < 4; ri++) {
            bad += one_case(4, 64, 0, rows_l[ri], 352, n_l[ni], 0, rows_l[ri], 352, rows_l[ri], 0);
            bad += one_case(3, 96, 1, rows_l[ri], 160, n_l[ni], 0, rows_l[ri], 160, rows_l[ri], 0);
            cases += 2;
        }
    CHECK_MSG(bad == 0, "%d values outside the float32 bound in %d cases", bad, cases);
}

/* x exactly on .5 after scaling: a kernel that does not round half to even as
 * moeq_x8_quantize does is off by s * |q - z| somewhere, far outside the bound */
static void test_rounding_ties(void)
{
    if (!moeq_kernels_get("vnni")) return;
    int bad = 0;
    for (int bits = 2; bits <= 8; bits *= 2) bad += one_case(bits, 32, 0, 17, 160, 17, 0, 17, 160, 17, 1);
    bad += one_case(3, 64, 1, 17, 96, 5, 0, 17, 96, 17, 1);
    CHECK_MSG(bad == 0, "%d values off on ties", bad);
}

static void test_nonfinite_refused(void)
{
    if (!moeq_kernels_get("vnni")) return;
    qm m;
    const int64_t R = 9, C = 96, n = 6;
    CHECK(make(&m, 4, 32, 0, R, C) == 0);
    float *X = malloc((size_t)(n * C) * 4), *Y = malloc((size_t)(n * R) * 4);
    for (int64_t i = 0; i < n * C; i++) X[i] = frand();
    const float bad_v[] = { NAN, INFINITY, -INFINITY };
    for (int j = 0; j < 3; j++) {
        for (int64_t i = 0; i < n * R; i++) Y[i] = 3.0f;
        X[4 * C + 70] = bad_v[j];   /* token 4 of 6 */
        CHECK(moeq_vnni_gemm_x8(&m.q, X, n, C, 0, R, Y, R) == 0);
        int untouched = 1;
        for (int64_t i = 0; i < n * R; i++) untouched &= Y[i] == 3.0f;
        CHECK(untouched);
    }
    X[4 * C + 70] = 0.5f;
    CHECK(moeq_vnni_gemm_x8(&m.q, X, n, C, 0, R, Y, R) == 1);
    free(X); free(Y); free(m.raw);
}

/* the same bits for a row whether it is computed alone, in blocks of 5 or 64, or all at once */
static void test_row_split_invariant(void)
{
    if (!moeq_kernels_get("vnni")) return;
    const int64_t R = 131, C = 288, n = 37;
    const int bits_l[] = { 2, 3, 4, 8 };
    for (int bi = 0; bi < 4; bi++) {
        qm m;
        CHECK(make(&m, bits_l[bi], 64, bi & 1, R, C) == 0);
        float *X = malloc((size_t)(n * C) * 4), *Y0 = malloc((size_t)(n * R) * 4), *Y1 = malloc((size_t)(n * R) * 4);
        for (int64_t i = 0; i < n * C; i++) X[i] = frand();
        CHECK(moeq_vnni_gemm_x8(&m.q, X, n, C, 0, R, Y0, R) == 1);
        const int64_t splits[] = { 1, 5, 7, 64 };
        for (int si = 0; si < 4; si++) {
            memset(Y1, 0, (size_t)(n * R) * 4);
            for (int64_t a = 0; a < R; a += splits[si]) {
                int64_t b = a + splits[si] < R ? a + splits[si] : R;
                CHECK(moeq_vnni_gemm_x8(&m.q, X, n, C, a, b, Y1 + a, R) == 1);
            }
            CHECK_MSG(!memcmp(Y0, Y1, (size_t)(n * R) * 4), "b%d split %lld", bits_l[bi], (long long)splits[si]);
        }
        /* and a token's bits do not depend on the batch it is in (tokens 16..36 alone) */
        CHECK(moeq_vnni_gemm_x8(&m.q, X + 16 * C, n - 16, C, 0, R, Y1, R) == 1);
        CHECK(!memcmp(Y0 + 16 * R, Y1, (size_t)((n - 16) * R) * 4));
        free(X); free(Y0); free(Y1); free(m.raw);
    }
}

/* gate and up over one preparation (gemm_pair): each result is the single GEMM's bit for bit,
 * also when the two matrices have different bits; shapes that differ are not handled */
static void test_pair_same_bits(void)
{
    if (!moeq_kernels_get("vnni")) return;
    const int64_t R = 67, C = 160, n = 21;
    const int pairs[][2] = { { 4, 4 }, { 4, 2 }, { 3, 8 } };
    for (int pi = 0; pi < 3; pi++) {
        qm a, b;
        CHECK(make(&a, pairs[pi][0], 32, 0, R, C) == 0);
        CHECK(make(&b, pairs[pi][1], 32, pi & 1, R, C) == 0);
        float *X = malloc((size_t)(n * (C + 5)) * 4), *Ya = malloc((size_t)(n * R) * 4), *Yb = malloc((size_t)(n * R) * 4);
        float *Za = malloc((size_t)(n * R) * 4), *Zb = malloc((size_t)(n * R) * 4);
        for (int64_t i = 0; i < n * (C + 5); i++) X[i] = frand();
        CHECK(moeq_vnni_gemm_x8(&a.q, X, n, C + 5, 0, R, Ya, R) == 1);
        CHECK(moeq_vnni_gemm_x8(&b.q, X, n, C + 5, 0, R, Yb, R) == 1);
        CHECK(moeq_vnni_gemm_x8_pair(&a.q, &b.q, X, n, C + 5, Za, Zb, R) == 1);
        CHECK_MSG(!memcmp(Ya, Za, (size_t)(n * R) * 4) && !memcmp(Yb, Zb, (size_t)(n * R) * 4), "pair b%d/b%d",
                  pairs[pi][0], pairs[pi][1]);
        free(X); free(Ya); free(Yb); free(Za); free(Zb); free(a.raw); free(b.raw);
    }
    qm a, b;
    CHECK(make(&a, 4, 32, 0, R, C) == 0);
    CHECK(make(&b, 4, 64, 0, R, C) == 0);
    float X[4 * 160], Y[4 * 67], Z[4 * 67];
    for (int i = 0; i < 4 * 160; i++) X[i] = frand();
    CHECK(moeq_vnni_gemm_x8_pair(&a.q, &b.q, X, 4, C, Y, Z, R) == 0);   /* groups differ */
    free(a.raw); free(b.raw);
}

int main(void)
{
    RUN_TEST(test_against_formula);
    RUN_TEST(test_rounding_ties);
    RUN_TEST(test_nonfinite_refused);
    RUN_TEST(test_row_split_invariant);
    RUN_TEST(test_pair_same_bits);
    HARNESS_EXIT();
}
