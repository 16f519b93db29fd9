/* Dequantizing kernels: every variant this CPU supports against the reference (dequant bit
 * for bit; gemv/gemm against dequantize + float64 products) at awkward sizes, every codec;
 * unsupported shapes rejected. */
#include "harness.h"
#include "qmat_testutil.h"
#include "moeq_kernels.h"
#include "moeq_quant.h"
#include "moeq_core.h"

#include <stdlib.h>

static void test_variants_against_reference(void)
{
    const char *names[] = { "avx2", "avx512", "bf16f", "amx" };
    const int64_t rows_l[] = { 1, 2, 3, 7, 17, 33, 100 };
    const int64_t cols_l[] = { 32, 96, 160, 256 };
    const int64_t batch_l[] = { 1, 3, 17, 64 };
    const int bits_l[] = { 2, 3, 4, 8 }, group_l[] = { 32, 64, 128, 0 };
    int quick = getenv("MOEQ_TEST_QUICK") != NULL;
    int variants = 0;
    for (int vi = 0; vi < 4; vi++) {
        const moeq_kernel_set *ks = moeq_kernels_get(names[vi]);
        if (!ks) continue;
        variants++;
        for (int bi = 0; bi < 4; bi++)
            for (int gi = 0; gi < 4; gi++)
                for (int sym = 0; sym < 2; sym++)
                    for (int ri = 0; ri < 7; ri += quick ? 3 : 2)
                        for (int ci = 0; ci < 4; ci += quick ? 2 : 1) {
                            qm m;
                            int64_t R = rows_l[ri], C = cols_l[ci];
                            CHECK(make(&m, bits_l[bi], group_l[gi], sym, R, C) == 0);
                            float *d0 = malloc((size_t)(R * C) * 4), *d1 = malloc((size_t)(R * C) * 4);
                            moeq_kernels_ref.dequant(&m.q, 0, R, d0);
                            ks->dequant(&m.q, 0, R, d1);
                            CHECK_MSG(!memcmp(d0, d1, (size_t)(R * C) * 4), "%s dequant b%d g%d s%d %lldx%lld",
                                      ks->name, bits_l[bi], group_l[gi], sym, (long long)R, (long long)C);
                            for (int ni = 0; ni < 4; ni++) {
                                int64_t n = batch_l[ni];
                                float *X = malloc((size_t)(n * C) * 4), *Y0 = malloc((size_t)(n * R) * 4);
                                float *Y1 = malloc((size_t)(n * R) * 4), *Y2 = malloc((size_t)(n * R) * 4);
                                for (int64_t i = 0; i < n * C; i++) X[i] = frand();
                                moeq_kernels_ref.gemm(&m.q, X, n, C, 0, R, Y0, R);
                                ks->gemm(&m.q, X, n, C, 0, R, Y1, R);
                                moeq_sgemm_nt(n, R, C, X, C, d0, C, 0.0f, Y2, R);   /* dequantize + sgemm */
                                double worst = 0, worst2 = 0;
                                for (int64_t i = 0; i < n * R; i++) {
                                    double sc = 0;   /* sum |w x|; the fast path's zero term s*z*sum(x) cancels a few bits */
                                    for (int64_t c = 0; c < C; c++)
                                        sc += fabs((double)d0[(i % R) * C + c] * X[(i / R) * C + c]);
                                    double e1 = fabs((double)Y1[i] - Y0[i]) / (sc + 1e-30);
                                    double e2 = fabs((double)Y2[i] - Y0[i]) / (sc + 1e-30);
                                    worst = e1 > worst ? e1 : worst;
                                    worst2 = e2 > worst2 ? e2 : worst2;
                                }
                                CHECK_MSG(worst < 3e-5, "%s gemm b%d g%d s%d %lldx%lld n%lld: rel err %.3g", ks->name,
                                          bits_l[bi], group_l[gi], sym, (long long)R, (long long)C, (long long)n, worst);
                                CHECK(worst2 < 2e-6);
                                if (n == 1) {
                                    ks->gemv(&m.q, X, 0, R, Y2);
                                    for (int64_t r = 0; r < R; r++)
                                        CHECK_MSG(fabs((double)Y2[r] - Y0[r]) <= 2e-6 * (fabs((double)Y0[r]) + 1) * C,
                                                  "%s gemv row %lld", ks->name, (long long)r);
                                    /* a row range: same values as the full call */
                                    if (R > 2) {
                                        ks->gemv(&m.q, X, 1, R - 1, Y1);
                                        CHECK(!memcmp(Y1, Y2 + 1, (size_t)(R - 2) * 4));
                                    }
                                }
                                free(X); free(Y0); free(Y1); free(Y2);
                            }
                            free(d0); free(d1); free(m.raw);
                        }
    }
    CHECK(variants >= 1 || !moeq_kernels_get("avx2"));
}

/* The int8-activation variant: the plain-C formula against the float64 truth within the bound
 * of rounding x (sum |w| dx / 2), and the VNNI kernels against the plain-C formula within
 * float32 rounding, at awkward sizes: cols with a short last chunk (32, 96, 160, 352, 544),
 * groups straddling chunks (96), one group per chunk or more (128, 256, per channel). */
static void test_int8_activations(void)
{
    const int64_t rows_l[] = { 1, 2, 3, 7, 17, 33, 100 };
    const int64_t cols_l[] = { 32, 96, 160, 256, 352, 544 };
    const int bits_l[] = { 2, 3, 4, 8 }, group_l[] = { 32, 64, 96, 128, 256, 0 };
    const moeq_kernel_set *ks = moeq_kernels_get("vnni");
    int quick = getenv("MOEQ_TEST_QUICK") != NULL;
    enum { N = 5 };
    for (int bi = 0; bi < 4; bi++)
        for (int gi = 0; gi < 6; gi++)
            for (int sym = 0; sym < 2; sym++)
                for (int ri = quick ? 3 : 0; ri < 7; ri += quick ? 3 : 1)
                    for (int ci = 0; ci < 6; ci += quick ? 2 : 1) {
                        int64_t R = rows_l[ri], C = cols_l[ci];
                        qm m;
                        CHECK(make(&m, bits_l[bi], group_l[gi], sym, R, C) == 0);
                        float *d = malloc((size_t)(R * C) * 4), *X = malloc((size_t)(N * C) * 4);
                        float *Y0 = malloc((size_t)(N * R) * 4), *Y8 = malloc((size_t)(N * R) * 4);
                        float *Yv = malloc((size_t)(N * R) * 4), *y = malloc((size_t)R * 4);
                        int8_t *xq = malloc((size_t)C);
                        float *dx = malloc((size_t)(C / 32) * 4);
                        int32_t *sxq = malloc((size_t)(C / 32) * 4);
                        moeq_kernels_ref.dequant(&m.q, 0, R, d);
                        /* token 0 has one large value per block, token 1 is all zero */
                        for (int64_t i = 0; i < N * C; i++) X[i] = i / C == 1 ? 0.0f : frand() * (i % 29 == 3 ? 40 : 1);
                        moeq_kernels_ref.gemm(&m.q, X, N, C, 0, R, Y0, R);
                        moeq_ref_gemm_x8(&m.q, X, N, C, 0, R, Y8, R);
                        /* gemm over 5 tokens (the int8 GEMM) and over 3 (gemv per token inside gemm) */
                        float *Yv3 = malloc((size_t)(3 * R) * 4);
                        if (ks) {
                            ks->gemm(&m.q, X, N, C, 0, R, Yv, R);
                            ks->gemm(&m.q, X, 3, C, 0, R, Yv3, R);
                        }
                        char what[96];
                        snprintf(what, sizeof what, "b%d g%d s%d %lldx%lld", bits_l[bi], group_l[gi], sym, (long long)R,
                                 (long long)C);
                        for (int64_t i = 0; i < N; i++) {
                            const float *x = X + i * C;
                            CHECK(moeq_x8_quantize(x, C, xq, dx, sxq) == 1);
                            if (ks) ks->gemv(&m.q, x, 0, R, y);
                            for (int64_t r = 0; r < R; r++) {
                                double bound = 0, sw = 0;
                                for (int64_t c = 0; c < C; c++) {
                                    bound += fabs((double)d[r * C + c]) * dx[c / 32] / 2;
                                    sw += fabs((double)d[r * C + c] * x[c]);
                                }
                                double e = fabs((double)Y8[i * R + r] - Y0[i * R + r]);
                                CHECK_MSG(e <= bound * (1 + 1e-6) + 1e-6 * sw, "x8 formula %s token %lld row %lld: %.3g > %.3g",
                                          what, (long long)i, (long long)r, e, bound);
                                if (!ks) continue;
                                double tol = 2e-6 * x8_terms(&m, d, r, x) + 1e-30;
                                CHECK_MSG(fabs((double)y[r] - Y8[i * R + r]) <= tol, "vnni gemv %s token %lld row %lld: %.9g vs %.9g",
                                          what, (long long)i, (long long)r, y[r], Y8[i * R + r]);
                                CHECK_MSG(fabs((double)Yv[i * R + r] - Y8[i * R + r]) <= tol, "vnni gemm %s token %lld row %lld",
                                          what, (long long)i, (long long)r);
                                if (i < 3)
                                    CHECK_MSG(fabs((double)Yv3[i * R + r] - Y8[i * R + r]) <= tol,
                                              "vnni gemm n=3 %s token %lld row %lld", what, (long long)i, (long long)r);
                            }
                            if (ks && R > 2) {   /* a row range: the same values as the whole call */
                                float *y1 = malloc((size_t)R * 4);
                                ks->gemv(&m.q, x, 1, R - 1, y1);
                                CHECK(!memcmp(y1, y + 1, (size_t)(R - 2) * 4));
                                free(y1);
                            }
                        }
                        if (ks) {   /* NaN or Inf in x: the float kernel's result, which carries it */
                            X[C / 2] = NAN;
                            ks->gemv(&m.q, X, 0, R, y);
                            for (int64_t r = 0; r < R; r++) CHECK(isnan(y[r]));
                            X[C / 2] = INFINITY;
                            CHECK(moeq_x8_quantize(X, C, xq, dx, sxq) == 0);
                        }
                        free(d); free(X); free(Y0); free(Y8); free(Yv); free(Yv3); free(y); free(xq); free(dx); free(sxq);
                        free(m.raw);
                    }
}

static void test_reference_dequant_formula(void)
{
    /* one group by hand: asymmetric 4-bit, w = s * (q - z) */
    float w[32];
    for (int k = 0; k < 32; k++) w[k] = -1.0f + (float)k / 16.0f;   /* min -1, max 0.9375 */
    uint64_t so, zo, n = moeq_qmat_bytes(4, 32, 0, 1, 32, &so, &zo);
    uint8_t *raw = calloc(1, (size_t)n);
    moeq_error err;
    CHECK(moeq_rtn_quantize(w, 1, 32, 4, 32, 0, raw, &err) == 0);
    float scale = (0.9375f + 1.0f) / 15.0f, zero = rintf(1.0f / scale);
    uint16_t s16, z16;
    memcpy(&s16, raw + so, 2);
    memcpy(&z16, raw + zo, 2);
    CHECK(s16 == moeq_f32_to_f16(scale) && z16 == moeq_f32_to_f16(zero));
    moeq_qmat q = { 4, 32, 0, 1, 32, raw, (const uint16_t *)(void *)(raw + so), (const uint16_t *)(void *)(raw + zo) };
    float d[32];
    moeq_kernels_ref.dequant(&q, 0, 1, d);
    for (int k = 0; k < 32; k++) {
        float qq = rintf(w[k] / scale) + zero;
        qq = qq < 0 ? 0 : qq > 15 ? 15 : qq;
        CHECK(d[k] == (qq - moeq_f16_to_f32(z16)) * moeq_f16_to_f32(s16));
    }
    free(raw);
}

static void test_f16_round_trip(void)
{
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) continue;   /* NaN payloads */
        CHECK_MSG(moeq_f32_to_f16(moeq_f16_to_f32((uint16_t)h)) == h, "half %04x", h);
    }
    CHECK(moeq_f32_to_f16(65520.0f) == 0x7c00u && moeq_f32_to_f16(65519.0f) == 0x7bffu);
    CHECK(moeq_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00u);            /* tie to even */
    CHECK(moeq_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02u);
}

static void test_unsupported_shapes_rejected(void)
{
    moeq_error err = {0};
    CHECK(moeq_qmat_check(4, 64, 8, 100, &err) == MOEQ_ERR_UNSUPPORTED && strstr(err.detail, "multiple of 32"));
    CHECK(moeq_qmat_check(5, 64, 8, 128, &err) == MOEQ_ERR_UNSUPPORTED && strstr(err.detail, "5-bit"));
    CHECK(moeq_qmat_check(4, 48, 8, 128, &err) == MOEQ_ERR_UNSUPPORTED && strstr(err.detail, "group 48"));
    CHECK(moeq_qmat_check(4, 64, 8, 96, &err) == MOEQ_OK);   /* shorter last group */
    float w[100] = {0};
    uint8_t raw[4096];
    CHECK(moeq_rtn_quantize(w, 1, 100, 4, 32, 0, raw, &err) == MOEQ_ERR_UNSUPPORTED);
}

int main(void)
{
    RUN_TEST(test_f16_round_trip);
    RUN_TEST(test_reference_dequant_formula);
    RUN_TEST(test_unsupported_shapes_rejected);
    RUN_TEST(test_variants_against_reference);
    RUN_TEST(test_int8_activations);
    HARNESS_EXIT();
}
