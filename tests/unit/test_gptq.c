/* GPTQ against a plain reference (unblocked column loop, hand-written Cholesky and inverse),
 * its output error against RTN's on fixture matrices with their calibration Hessians, thread
 * determinism, the RTN fallback, and the calibration reader's identity check. */
#include "harness.h"
#include "moeq_calib.h"
#include "moeq_core.h"
#include "moeq_gptq.h"
#include "moeq_kernels.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t rng = 88172645463325252ull;
static double urand(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

/* Plain GPTQ from the formulas (algorithms.md §6.1): no blocks, every later column updated at
 * once; Cholesky and inverse by hand in float64. Grid as documented: f16 scale, rint. */
static void gptq_ref(const float *w, int64_t rows, int64_t n, const double *H, int bits, int g, int sym,
                     double damp, float *wq)
{
    double *A = calloc((size_t)(n * n), sizeof *A), *L = calloc((size_t)(n * n), sizeof *L);
    double *Inv = calloc((size_t)(n * n), sizeof *Inv), *U = calloc((size_t)(n * n), sizeof *U);
    double mean = 0;
    for (int64_t j = 0; j < n; j++) mean += H[j * n + j] > 0 ? H[j * n + j] : 1;
    mean /= (double)n;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            int dead = !(H[i * n + i] > 0) || !(H[j * n + j] > 0);
            A[i * n + j] = i == j ? (dead ? 1 : H[i * n + i]) + damp * mean : dead ? 0 : H[i * n + j];
        }
    /* A = L Lᵀ */
    for (int64_t j = 0; j < n; j++) {
        double s = A[j * n + j];
        for (int64_t k = 0; k < j; k++) s -= L[j * n + k] * L[j * n + k];
        L[j * n + j] = sqrt(s);
        for (int64_t i = j + 1; i < n; i++) {
            double t = A[i * n + j];
            for (int64_t k = 0; k < j; k++) t -= L[i * n + k] * L[j * n + k];
            L[i * n + j] = t / L[j * n + j];
        }
    }
    /* Inv = A⁻¹ column by column: L y = e, Lᵀ x = y */
    double *y = malloc((size_t)n * sizeof *y);
    for (int64_t c = 0; c < n; c++) {
        for (int64_t i = 0; i < n; i++) {
            double t = i == c;
            for (int64_t k = 0; k < i; k++) t -= L[i * n + k] * y[k];
            y[i] = t / L[i * n + i];
        }
        for (int64_t i = n - 1; i >= 0; i--) {
            double t = y[i];
            for (int64_t k = i + 1; k < n; k++) t -= L[k * n + i] * Inv[k * n + c];
            Inv[i * n + c] = t / L[i * n + i];
        }
    }
    /* Inv = Uᵀ U, U upper: U[i][i] = sqrt(Inv_ii - Σ_k<i U_ki²), U[i][j] = (Inv_ij - Σ_k<i U_ki U_kj) / U_ii */
    for (int64_t i = 0; i < n; i++) {
        double s = Inv[i * n + i];
        for (int64_t k = 0; k < i; k++) s -= U[k * n + i] * U[k * n + i];
        U[i * n + i] = sqrt(s);
        for (int64_t j = i + 1; j < n; j++) {
            double t = Inv[i * n + j];
            for (int64_t k = 0; k < i; k++) t -= U[k * n + i] * U[k * n + j];
            U[i * n + j] = t / U[i * n + i];
        }
    }
    const int maxq = (1 << bits) - 1, half = 1 << (bits - 1);
    double *W = malloc((size_t)n * sizeof *W);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < n; j++) W[j] = w[r * n + j];
        float s = 1, z = 0;
        for (int64_t i = 0; i < n; i++) {
            if (i % g == 0) {
                int64_t len = n - i < g ? n - i : g;
                double mn = W[i], mx = W[i];
                for (int64_t j = i; j < i + len; j++) { mn = W[j] < mn ? W[j] : mn; mx = W[j] > mx ? W[j] : mx; }
                float sc;
                if (sym) { double am = fabs(mn) > fabs(mx) ? fabs(mn) : fabs(mx); sc = am > 0 ? (float)(am / (half - 1)) : 1.0f; }
                else sc = mx > mn ? (float)((mx - mn) / maxq) : (mn != 0 ? (float)fabs(mn) : 1.0f);
                s = moeq_f16_to_f32(moeq_f32_to_f16(sc));
                z = sym ? (float)half : moeq_f16_to_f32(moeq_f32_to_f16(rintf((float)(-mn / s))));
            }
            double v = rint(W[i] / s) + z;
            int q = v < 0 ? 0 : v > maxq ? maxq : (int)v;
            float dq = s * ((float)q - z);
            wq[r * n + i] = dq;
            double e = (W[i] - dq) / U[i * n + i];
            for (int64_t j = i + 1; j < n; j++) W[j] -= e * U[i * n + j];
        }
    }
    free(A); free(L); free(Inv); free(U); free(y); free(W);
}

/* A random positive semi-definite H = XᵀX of m samples with correlated columns. */
static void rand_hessian(int64_t n, int64_t m, double *H)
{
    double *X = malloc((size_t)(m * n) * sizeof *X);
    for (int64_t t = 0; t < m; t++) {
        double common = nrand();
        for (int64_t j = 0; j < n; j++) X[t * n + j] = nrand() * (1 + 0.1 * (double)(j % 7)) + 0.5 * common;
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t t = 0; t < m; t++) s += X[t * n + i] * X[t * n + j];
            H[i * n + j] = s;
        }
    free(X);
}

static void test_gptq_matches_reference(void)
{
    const struct { int64_t rows, cols; int bits, group, sym, block; } cases[] = {
        { 7, 96, 3, 32, 0, 128 }, { 5, 160, 4, 64, 1, 32 }, { 9, 64, 2, 0, 0, 16 }, { 3, 224, 8, 128, 0, 64 },
        { 4, 96, 3, 64, 1, 32 },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int64_t R = cases[c].rows, n = cases[c].cols;
        float *w = malloc((size_t)(R * n) * sizeof *w), *wq = malloc((size_t)(R * n) * sizeof *wq),
              *wr = malloc((size_t)(R * n) * sizeof *wr), *wd = malloc((size_t)(R * n) * sizeof *wd);
        double *H = malloc((size_t)(n * n) * sizeof *H);
        for (int64_t i = 0; i < R * n; i++) w[i] = (float)(0.05 * nrand());
        rand_hessian(n, 2 * n, H);
        if (c == 1) for (int64_t j = 0; j < n; j++) H[5 * n + j] = H[j * n + 5] = 0;   /* a dead column */
        int g = cases[c].group ? cases[c].group : (int)n;
        uint64_t so, zo, nb = moeq_qmat_bytes(cases[c].bits, g, cases[c].sym, R, n, &so, &zo);
        uint8_t *raw = malloc((size_t)nb);
        moeq_error err;
        moeq_gptq_opts o = { .damp = 0.01, .block = cases[c].block, .threads = 2 };
        moeq_gptq_info info;
        CHECK(moeq_gptq_quantize(w, R, n, H, cases[c].bits, cases[c].group, cases[c].sym, &o, raw, wq, &info, &err) == MOEQ_OK);
        gptq_ref(w, R, n, H, cases[c].bits, g, cases[c].sym, 0.01, wr);
        int64_t diff = 0;
        for (int64_t i = 0; i < R * n; i++) diff += wq[i] != wr[i];
        CHECK_MSG(diff == 0, "case %zu: %lld of %lld weights differ from the reference", c, (long long)diff,
                  (long long)(R * n));
        /* the bytes decode (reference kernel) to the weights GPTQ reports */
        moeq_qmat q = { .bits = cases[c].bits, .group = g, .sym = cases[c].sym, .rows = R, .cols = n, .codes = raw,
                        .scales = (const uint16_t *)(void *)(raw + so),
                        .zeros = cases[c].sym ? NULL : (const uint16_t *)(void *)(raw + zo) };
        moeq_kernels_ref.dequant(&q, 0, R, wd);
        CHECK(memcmp(wd, wq, (size_t)(R * n) * sizeof *wq) == 0);
        if (c == 1) CHECK(info.dead_cols == 1);
        free(w); free(wq); free(wr); free(wd); free(H); free(raw);
    }
}

static void test_gptq_threads_and_act_order(void)
{
    int64_t R = 130, n = 192;
    float *w = malloc((size_t)(R * n) * sizeof *w);
    double *H = malloc((size_t)(n * n) * sizeof *H);
    for (int64_t i = 0; i < R * n; i++) w[i] = (float)(0.05 * nrand());
    rand_hessian(n, 3 * n, H);
    uint64_t nb = moeq_qmat_bytes(4, 64, 0, R, n, NULL, NULL);
    uint8_t *a = malloc((size_t)nb), *b = malloc((size_t)nb);
    float *qa = malloc((size_t)(R * n) * sizeof *qa), *qr = malloc((size_t)(R * n) * sizeof *qr);
    moeq_error err;
    for (int act = 0; act < 2; act++) {
        moeq_gptq_opts o1 = { .damp = 0.01, .act_order = act, .threads = 1 }, o3 = o1;
        o3.threads = 3;
        CHECK(moeq_gptq_quantize(w, R, n, H, 4, 64, 0, &o1, a, qa, NULL, &err) == MOEQ_OK);
        CHECK(moeq_gptq_quantize(w, R, n, H, 4, 64, 0, &o3, b, NULL, NULL, &err) == MOEQ_OK);
        CHECK(memcmp(a, b, (size_t)nb) == 0);
        moeq_rtn_dequant_f32(w, R, n, 4, 64, 0, qr);
        double eg = moeq_hessian_error(w, qa, R, n, H), er = moeq_hessian_error(w, qr, R, n, H);
        CHECK_MSG(eg < 0.8 * er, "act_order %d: GPTQ error %g vs RTN %g", act, eg, er);
    }
    free(w); free(H); free(a); free(b); free(qa); free(qr);
}

static void test_hessian_error_reference(void)
{
    int64_t R = 70, n = 33;
    float *w = malloc((size_t)(R * n) * sizeof *w), *q = malloc((size_t)(R * n) * sizeof *q);
    double *H = malloc((size_t)(n * n) * sizeof *H);
    for (int64_t i = 0; i < R * n; i++) { w[i] = (float)nrand(); q[i] = (float)nrand(); }
    rand_hessian(n, 40, H);
    double ref = 0;
    for (int64_t r = 0; r < R; r++)
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++)
                ref += ((double)w[r * n + i] - q[r * n + i]) * H[i * n + j] * ((double)w[r * n + j] - q[r * n + j]);
    CHECK_NEAR(moeq_hessian_error(w, q, R, n, H), ref, 1e-9 * fabs(ref));
    free(w); free(q); free(H);
}

static void test_gptq_fallback_rtn(void)
{
    /* a NaN Hessian can never be factorized: 3 retries, then plain RTN bytes */
    int64_t R = 4, n = 64;
    float w[256];
    for (int i = 0; i < 256; i++) w[i] = (float)nrand();
    double *H = malloc((size_t)(n * n) * sizeof *H);
    rand_hessian(n, 100, H);
    H[1 * n + 2] = H[2 * n + 1] = NAN;
    uint64_t nb = moeq_qmat_bytes(3, 32, 0, R, n, NULL, NULL);
    uint8_t *a = malloc((size_t)nb), *b = malloc((size_t)nb);
    moeq_error err;
    moeq_gptq_info info;
    CHECK(moeq_gptq_quantize(w, R, n, H, 3, 32, 0, NULL, a, NULL, &info, &err) == MOEQ_OK);
    CHECK(info.rtn_fallback == 1 && info.retries == 3);
    CHECK(moeq_rtn_quantize(w, R, n, 3, 32, 0, b, &err) == MOEQ_OK);
    CHECK(memcmp(a, b, (size_t)nb) == 0);
    free(H); free(a); free(b);
}

/* Fixture: calibrate tiny-qwen2moe on 1024 held-out tokens, then on a few expert matrices GPTQ's
 * output error with the expert's Hessian is below RTN's; a calib file opened against another
 * model is refused. */
static void test_gptq_fixture_vs_rtn(void)
{
    char dir[] = "/tmp/moeq_test_gptq_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[128];
    snprintf(path, sizeof path, "%s/c.h5", dir);
    moeq_error err = {0};
    moeq_model *m = NULL, *other = NULL;
    CHECK(moeq_model_open(FIXTURES "/tiny-qwen2moe", &m, &err) == MOEQ_OK);
    int32_t *ids = NULL;
    int64_t ntoks = 0;
    CHECK(moeq_tokens_load(FIXTURES "/heldout.safetensors", moeq_model_config(m)->vocab, &ids, &ntoks, &err) == MOEQ_OK);
    moeq_calib_opts co = { .ctx = 256, .max_tokens = 1024, .min_tokens = 32, .threads = 2 };
    moeq_calib_result res;
    CHECK(moeq_calibrate(m, ids, ntoks, path, &co, &res, &err) == MOEQ_OK);
    moeq_calib_result_free(&res);
    moeq_calib_file *cf = NULL;
    CHECK(moeq_calib_file_open(path, m, &cf, &err) == MOEQ_OK);
    moeq_expert_mat *mats = NULL;
    size_t nm = 0;
    CHECK(moeq_expert_mats(m, &mats, &nm, &err) == MOEQ_OK);
    int compared = 0, better = 0;
    for (size_t i = 0; cf && i < nm && compared < 6; i += 5) {
        int64_t ntok;
        int flag;
        CHECK(moeq_calib_file_expert(cf, mats[i].layer, mats[i].expert, &ntok, &flag, &err) == MOEQ_OK);
        if (flag) continue;
        int64_t R = mats[i].mat.rows, n = mats[i].mat.cols;
        float *w = malloc((size_t)(R * n) * sizeof *w), *qg = malloc((size_t)(R * n) * sizeof *qg),
              *qr = malloc((size_t)(R * n) * sizeof *qr);
        double *H = malloc((size_t)(n * n) * sizeof *H);
        uint8_t *raw = malloc((size_t)moeq_qmat_bytes(3, 32, 0, R, n, NULL, NULL));
        moeq_mat_to_f32(&mats[i].mat, 0, R, w);
        CHECK(moeq_calib_file_hessian(cf, mats[i].layer, mats[i].expert, mats[i].proj == MOEQ_PROJ_DOWN, H, n, NULL,
                                      &err) == MOEQ_OK);
        CHECK(moeq_gptq_quantize(w, R, n, H, 3, 32, 0, NULL, raw, qg, NULL, &err) == MOEQ_OK);
        moeq_rtn_dequant_f32(w, R, n, 3, 32, 0, qr);
        double eg = moeq_hessian_error(w, qg, R, n, H), er = moeq_hessian_error(w, qr, R, n, H);
        CHECK_MSG(eg < er, "%s: GPTQ %g vs RTN %g", mats[i].name, eg, er);
        better += eg < er;
        compared++;
        free(w); free(qg); free(qr); free(H); free(raw);
    }
    CHECK(compared >= 3 && better == compared);
    /* identity check: the same file against another model */
    CHECK(moeq_model_open(FIXTURES "/tiny-olmoe", &other, &err) == MOEQ_OK);
    moeq_calib_file *bad = NULL;
    CHECK(moeq_calib_file_open(path, other, &bad, &err) == MOEQ_ERR_FORMAT);
    CHECK(strstr(err.detail, "another model") != NULL);
    moeq_calib_file_close(cf);
    free(mats);
    moeq_model_close(other);
    moeq_model_close(m);
    free(ids);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    moeq_threads_init(2);
    RUN_TEST(test_gptq_matches_reference);
    RUN_TEST(test_gptq_threads_and_act_order);
    RUN_TEST(test_hessian_error_reference);
    RUN_TEST(test_gptq_fallback_rtn);
    RUN_TEST(test_gptq_fixture_vs_rtn);
    HARNESS_EXIT();
}
