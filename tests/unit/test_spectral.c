/* moeq spectral against independent references: float64 LAPACK (dgesvd, a different algorithm
 * from the dgesdd/dsyevd/sgesdd the library uses) with plainly written Hill and KS fits on the
 * fixtures; Pareto spectra of known exponent; gram vs full; FARMS pooled tiles vs per-tile
 * dgesvd, bit-identical across runs and thread counts; the fast KS search vs exhaustive; bad
 * matrices flagged, never errors. */
#include <cblas.h>
#include <lapacke.h>
#include <stdlib.h>
#include "harness.h"
#include "moeq_core.h"
#include "moeq_model.h"
#include "moeq_spectral.h"

static int quick(void) { return getenv("MOEQ_TEST_QUICK") != NULL; }

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-300); }

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ascending λ of a float32 row-major matrix via float64 dgesvd */
static int64_t ref_esd(const float *W, int64_t r, int64_t c, double *out)
{
    double *a = malloc((size_t)(r * c) * sizeof *a), *sup = malloc((size_t)(r + c) * sizeof *sup);
    for (int64_t i = 0; i < r * c; i++) a[i] = W[i];
    int64_t mn = r < c ? r : c;
    double d = 0;
    lapack_int info = LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'N', (lapack_int)r, (lapack_int)c, a, (lapack_int)c, out, &d, 1, &d, 1, sup);
    free(a); free(sup);
    if (info) return -1;
    for (int64_t i = 0; i < mn; i++) out[i] *= out[i];
    qsort(out, (size_t)mn, sizeof *out, cmpd);
    return mn;
}

/* Hill and KS written from algorithms.md §1.2 / §1.5 as directly as possible */
static double ref_hill(const double *l, int64_t n)
{
    int64_t k = n / 10 > 10 ? n / 10 : 10;
    if (k > n - 1) k = n - 1;
    double s = 0;
    for (int64_t i = n - k; i < n; i++) s += log(l[i] / l[n - k - 1]);
    return 1 + k / s;
}
static double ref_ks(const double *l, int64_t n, double *xmin)
{
    double best = 2, ba = NAN;
    for (int64_t i = 0; i <= n - 2; i++) {
        int64_t m = n - i;
        double s = 0;
        for (int64_t j = i; j < n; j++) s += log(l[j]);
        double a = 1 + m / (s - m * log(l[i])), D = 1;
        if (a > 1) {
            D = 0;
            for (int64_t j = 0; j < m; j++) D = fmax(D, fabs(1 - pow(l[i + j] / l[i], 1 - a) - (double)j / m));
        }
        if (D < best) { best = D; ba = a; *xmin = l[i]; }
    }
    return ba;
}

static int64_t kept(double *e, int64_t n)
{
    int64_t k0 = 0;
    while (k0 < n && !(e[k0] > 1e-5)) k0++;
    memmove(e, e + k0, (size_t)(n - k0) * sizeof *e);
    return n - k0;
}

static void test_full_vs_lapack64_fixtures(void)
{
    const char *fx[] = {"tiny-mixtral", "tiny-qwen2moe", "tiny-qwen3moe", "tiny-olmoe"};
    double worst_h = 0, worst_k = 0, worst_n = 0;
    int compared = 0, ks_same_xmin = 0;
    for (int f = 0; f < 4; f++) {
        char path[256];
        snprintf(path, sizeof path, FIXTURES "/%s", fx[f]);
        moeq_model *m = NULL;
        moeq_error err = {0};
        CHECK_MSG(moeq_model_open(path, &m, &err) == MOEQ_OK, "%s", err.detail);
        if (!m) continue;
        moeq_spec_item *items = NULL;
        size_t n = 0;
        CHECK(moeq_spec_list(m, MOEQ_SPEC_SCOPE_ALL, &items, &n, &err) == MOEQ_OK);
        moeq_spec_opts o;
        moeq_spec_opts_default(&o);
        o.mode = MOEQ_SPEC_FULL;
        moeq_spec_ws *ws = moeq_spec_ws_new();
        for (size_t i = 0; i < n; i += quick() ? 7 : 1) {
            const moeq_mat *mm = &items[i].mat;
            moeq_spec_result r;
            double *e = malloc((size_t)(mm->rows < mm->cols ? mm->rows : mm->cols) * sizeof *e);
            float *W = malloc((size_t)(mm->rows * mm->cols) * sizeof *W);
            moeq_mat_to_f32(mm, 0, mm->rows, W);
            CHECK(moeq_spec_matrix(mm, &o, 1, ws, &r, NULL, NULL, &err) == MOEQ_OK);
            int64_t ne = ref_esd(W, mm->rows, mm->cols, e);
            double tot = 0;
            for (int64_t j = 0; j < ne; j++) tot += e[j];
            int64_t nk = kept(e, ne);
            CHECK(r.n_eigs == nk);
            if (nk >= 10) {
                double xmin = 0, ah = ref_hill(e, nk), ak = ref_ks(e, nk, &xmin);
                worst_h = fmax(worst_h, rel(r.alpha_hill, ah));
                CHECK_MSG(rel(r.alpha_hill, ah) < 1e-6, "%s hill %.12g vs %.12g", items[i].tensor, r.alpha_hill, ah);
                if (rel(r.ks_xmin, xmin) < 1e-6) {
                    ks_same_xmin++;
                    worst_k = fmax(worst_k, rel(r.alpha_ks, ak));
                    CHECK_MSG(rel(r.alpha_ks, ak) < 1e-6, "%s ks %.12g vs %.12g", items[i].tensor, r.alpha_ks, ak);
                }
                CHECK(r.alpha == r.alpha_hill);
                compared++;
            } else {
                CHECK(r.flags & MOEQ_SPEC_F_TOO_FEW);
                CHECK(isnan(r.alpha));
            }
            worst_n = fmax(worst_n, rel(r.log_norm, log10(tot)));
            CHECK(rel(r.log_norm, log10(tot)) < 1e-9);
            CHECK(rel(r.stable_rank, tot / e[nk - 1]) < 1e-6 || nk == 0);
            free(e);
            free(W);
        }
        moeq_spec_ws_free(ws);
        free(items);
        moeq_model_close(m);
    }
    /* the KS argmin may land on a neighbouring xmin only on near-ties; most must agree */
    CHECK(compared > 20 && ks_same_xmin * 10 >= compared * 9);
    fprintf(stderr, "  full vs dgesvd: %d matrices, worst rel err hill %.2e, ks %.2e (%d same xmin), log_norm %.2e\n",
            compared, worst_h, worst_k, ks_same_xmin, worst_n);
}

/* Gaussian by Box-Muller from a 64-bit LCG */
static double gauss(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    double a = ((*s >> 11) + 0.5) / 9007199254740992.0;
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    double b = ((*s >> 11) + 0.5) / 9007199254740992.0;
    return sqrt(-2 * log(a)) * cos(6.283185307179586 * b);
}

/* Q (n x k, column-major, orthonormal columns) from the QR of a Gaussian matrix */
static double *orthonormal(int64_t n, int64_t k, uint64_t seed)
{
    double *q = malloc((size_t)(n * k) * sizeof *q), *tau = malloc((size_t)k * sizeof *tau);
    for (int64_t i = 0; i < n * k; i++) q[i] = gauss(&seed);
    LAPACKE_dgeqrf(LAPACK_COL_MAJOR, (lapack_int)n, (lapack_int)k, q, (lapack_int)n, tau);
    LAPACKE_dorgqr(LAPACK_COL_MAJOR, (lapack_int)n, (lapack_int)k, (lapack_int)k, q, (lapack_int)n, tau);
    free(tau);
    return q;
}

/* W = U diag(σ) Vᵀ (rows x cols, row-major float32) whose λ = σ² are a stratified sample of a
 * Pareto law p(λ) ∝ λ^-a on [1, ∞) (u in stratum i, λ = (1-u)^(-1/(a-1))) */
static float *pareto_matrix(int64_t R, int64_t C, double a, uint64_t seed)
{
    int64_t k = R < C ? R : C;
    double *U = orthonormal(R, k, seed), *V = orthonormal(C, k, seed + 7), *s = malloc((size_t)k * sizeof *s);
    uint64_t g = seed * 31 + 1;
    for (int64_t i = 0; i < k; i++) {
        g = g * 6364136223846793005ull + 1442695040888963407ull;
        double u = ((double)i + ((g >> 11) + 0.5) / 9007199254740992.0) / (double)k;
        s[i] = sqrt(pow(1 - u, -1.0 / (a - 1)));
    }
    float *W = calloc((size_t)(R * C), sizeof *W);
    double *Wd = malloc((size_t)(R * C) * sizeof *Wd);
    for (int64_t t = 0; t < k; t++)
        for (int64_t i = 0; i < R; i++) U[t * R + i] *= s[t] * 0.01;   /* scale-free fits: any scale */
    /* column-major Wᵀ [C, R] = V · (U diag σ)ᵀ, i.e. row-major W [R, C] */
    cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, (blasint)C, (blasint)R, (blasint)k, 1.0, V, (blasint)C, U,
                (blasint)R, 0.0, Wd, (blasint)C);
    for (int64_t i = 0; i < R * C; i++) W[i] = (float)Wd[i];
    free(U); free(V); free(s); free(Wd);
    return W;
}

static moeq_mat f32_mat(const float *W, int64_t r, int64_t c, const char *name)
{
    return (moeq_mat){.tensor = name, .index = -1, .dtype = MOEQ_DT_F32, .rows = r, .cols = c, .data = W};
}

static void test_pareto_recovery(void)
{
    const double exps[2] = {2.5, 4.0};
    const int64_t R = quick() ? 700 : 1100, C = quick() ? 600 : 1000;
    moeq_spec_ws *ws = moeq_spec_ws_new();
    for (int t = 0; t < 2; t++) {
        float *W = pareto_matrix(R, C, exps[t], 100 + (uint64_t)t);
        moeq_mat m = f32_mat(W, R, C, "pareto");
        for (int mode = MOEQ_SPEC_FULL; mode <= MOEQ_SPEC_GRAM; mode++) {
            moeq_spec_opts o;
            moeq_spec_opts_default(&o);
            o.mode = (moeq_spec_mode)mode;
            moeq_spec_result r;
            moeq_error err = {0};
            CHECK(moeq_spec_matrix(&m, &o, 1, ws, &r, NULL, NULL, &err) == MOEQ_OK);
            fprintf(stderr, "  Pareto a=%.1f %s: hill %.4f, ks %.4f (xmin %.3g, tail %lld)\n", exps[t],
                    moeq_spec_mode_name(o.mode), r.alpha_hill, r.alpha_ks, r.ks_xmin, (long long)r.ks_n_tail);
            CHECK_NEAR(r.alpha_hill, exps[t], 0.15);
            CHECK_NEAR(r.alpha_ks, exps[t], 0.15);
            CHECK(r.n_eigs == (R < C ? R : C));
        }
        free(W);
    }
    moeq_spec_ws_free(ws);
}

static void test_gram_vs_full(void)
{
    moeq_model *m = NULL;
    moeq_error err = {0};
    CHECK(moeq_model_open(FIXTURES "/tiny-qwen2moe", &m, &err) == MOEQ_OK);
    if (!m) return;
    moeq_spec_item *items = NULL;
    size_t n = 0;
    CHECK(moeq_spec_list(m, MOEQ_SPEC_SCOPE_ALL, &items, &n, &err) == MOEQ_OK);
    moeq_spec_opts of, og;
    moeq_spec_opts_default(&of);
    of.mode = MOEQ_SPEC_FULL;
    og = of;
    og.mode = MOEQ_SPEC_GRAM;
    moeq_spec_result *rf = calloc(n, sizeof *rf), *rg = calloc(n, sizeof *rg);
    CHECK(moeq_spec_run(items, n, &of, 2, rf, NULL, NULL, &err) == MOEQ_OK);
    CHECK(moeq_spec_run(items, n, &og, 2, rg, NULL, NULL, &err) == MOEQ_OK);
    double worst = 0, worst_ks = 0;
    int ks_cmp = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK(rf[i].flags == rg[i].flags || ((rf[i].flags ^ rg[i].flags) & ~MOEQ_SPEC_F_KS_BOUND) == 0);
        if (!isfinite(rf[i].alpha_hill)) continue;
        worst = fmax(worst, rel(rg[i].alpha_hill, rf[i].alpha_hill));
        CHECK_MSG(rel(rg[i].alpha_hill, rf[i].alpha_hill) < 1e-3, "%s", items[i].tensor);
        if (rel(rg[i].ks_xmin, rf[i].ks_xmin) < 1e-6) {
            ks_cmp++;
            worst_ks = fmax(worst_ks, rel(rg[i].alpha_ks, rf[i].alpha_ks));
            CHECK(rel(rg[i].alpha_ks, rf[i].alpha_ks) < 1e-3);
        }
        CHECK(rel(rg[i].log_norm, rf[i].log_norm) < 1e-9);
    }
    fprintf(stderr, "  gram vs full on %zu matrices: worst rel alpha hill %.2e, ks %.2e (%d)\n", n, worst, worst_ks, ks_cmp);
    /* and on a Pareto matrix, where the two estimators see a real tail */
    float *W = pareto_matrix(400, 300, 3.0, 5);
    moeq_mat pm = f32_mat(W, 400, 300, "p");
    moeq_spec_ws *ws = moeq_spec_ws_new();
    moeq_spec_result a, b;
    CHECK(moeq_spec_matrix(&pm, &of, 1, ws, &a, NULL, NULL, &err) == MOEQ_OK);
    CHECK(moeq_spec_matrix(&pm, &og, 1, ws, &b, NULL, NULL, &err) == MOEQ_OK);
    CHECK(rel(a.alpha_hill, b.alpha_hill) < 1e-3 && rel(a.alpha_ks, b.alpha_ks) < 1e-3);
    moeq_spec_ws_free(ws);
    free(W); free(rf); free(rg); free(items);
    moeq_model_close(m);
}

/* pooled FARMS ESD = union of the chosen tiles' spectra (tiles chosen as documented), and the
 * same bits for 1 and 2 threads and two runs */
static void test_farms(void)
{
    const int64_t R = 520, C = 400;   /* 4 x 3 tiles of 128, ragged edges ignored */
    float *W = malloc((size_t)(R * C) * sizeof *W);
    uint64_t s = 9;
    for (int64_t i = 0; i < R * C; i++) W[i] = (float)(0.02 * gauss(&s));
    moeq_spec_opts o;
    moeq_spec_opts_default(&o);
    moeq_spec_ws *ws = moeq_spec_ws_new();
    int64_t n = 0, tiles = 0;
    double *e = malloc(12 * 128 * sizeof *e), *ref = malloc(12 * 128 * sizeof *ref);
    moeq_error err = {0};
    CHECK(moeq_spec_esd(W, R, C, &o, 1, ws, e, &n, &tiles, &err) == MOEQ_OK);
    CHECK(n == 12 * 128 && tiles == 12);
    int64_t m = 0;
    float *tile = malloc(128 * 128 * sizeof *tile);
    for (int64_t bi = 0; bi < 4; bi++)
        for (int64_t bj = 0; bj < 3; bj++) {
            for (int64_t r = 0; r < 128; r++) memcpy(tile + r * 128, W + (bi * 128 + r) * C + bj * 128, 128 * sizeof(float));
            m += ref_esd(tile, 128, 128, ref + m);
        }
    qsort(ref, (size_t)m, sizeof *ref, cmpd);
    double worst = 0;
    for (int64_t i = 0; i < m; i++) worst = fmax(worst, fabs(e[i] - ref[i]) / ref[m - 1]);
    CHECK_MSG(worst < 1e-5, "pooled tiles vs dgesvd: %.3g", worst);
    /* sampling: 5 of 12 tiles; depends on seed and key, not on anything else */
    o.max_blocks = 5;
    double *e2 = malloc(12 * 128 * sizeof *e2);
    CHECK(moeq_spec_esd(W, R, C, &o, 1, ws, e, &n, &tiles, &err) == MOEQ_OK && n == 5 * 128 && tiles == 5);
    CHECK(moeq_spec_esd(W, R, C, &o, 1, ws, e2, &n, &tiles, &err) == MOEQ_OK);
    CHECK(memcmp(e, e2, (size_t)n * sizeof *e) == 0);
    o.seed = 77;
    CHECK(moeq_spec_esd(W, R, C, &o, 1, ws, e2, &n, &tiles, &err) == MOEQ_OK);
    CHECK(memcmp(e, e2, (size_t)n * sizeof *e) != 0);
    o.seed = 0;

    /* the driver: 24 matrices (distinct keys), threads 1 and 2, twice */
    moeq_spec_item items[24];
    for (int i = 0; i < 24; i++) {
        memset(&items[i], 0, sizeof items[i]);
        snprintf(items[i].tensor, sizeof items[i].tensor, "m.%d", i);
        items[i].mat = f32_mat(W + (i % 3) * 100, R - 3, C, items[i].tensor);   /* stays inside W */
        items[i].expert = i;
    }
    moeq_spec_result r1[24], r2[24], r3[24];
    memset(r1, 0, sizeof r1); memset(r2, 0, sizeof r2); memset(r3, 0, sizeof r3);
    CHECK(moeq_spec_run(items, 24, &o, 1, r1, NULL, NULL, &err) == MOEQ_OK);
    CHECK(moeq_spec_run(items, 24, &o, 2, r2, NULL, NULL, &err) == MOEQ_OK);
    CHECK(moeq_spec_run(items, 24, &o, 2, r3, NULL, NULL, &err) == MOEQ_OK);
    CHECK(memcmp(r1, r2, sizeof r1) == 0);
    CHECK(memcmp(r2, r3, sizeof r1) == 0);
    int differ = 0;
    for (int i = 1; i < 24; i++) differ += r1[i].alpha_hill != r1[0].alpha_hill;
    CHECK(differ > 0);   /* different keys sample different tiles */
    /* smaller than a tile: full mode, flagged */
    moeq_mat small = f32_mat(W, 100, 300, "small");
    moeq_spec_result rs;
    CHECK(moeq_spec_matrix(&small, &o, 1, ws, &rs, NULL, NULL, &err) == MOEQ_OK);
    CHECK((rs.flags & MOEQ_SPEC_F_FARMS_FULL) && rs.n_eigs_total == 100 && rs.n_tiles == 0);
    free(W); free(e); free(e2); free(ref); free(tile);
    moeq_spec_ws_free(ws);
}

static void test_ks_fast_equals_exhaustive(void)
{
    const int64_t sizes[] = {3, 4, 11, 17, 100, 257, 1000, 4099};
    uint64_t s = 3;
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        int64_t n = sizes[t];
        double *l = malloc((size_t)n * sizeof *l);
        for (int rep = 0; rep < 3; rep++) {
            for (int64_t i = 0; i < n; i++) {
                double g = gauss(&s);
                l[i] = rep == 0 ? exp(g) : rep == 1 ? g * g + 0.1 : pow(1 - fabs(g) / 10 + 1e-3, -1.0 / 1.7);
            }
            qsort(l, (size_t)n, sizeof *l, cmpd);
            moeq_ks_fit a, b;
            moeq_error err = {0};
            CHECK(moeq_spec_ks(l, n, MOEQ_KS_FIX_NONE, &a, &err) == MOEQ_OK);
            moeq_spec_ks_ref(l, n, &b);
            CHECK_MSG(a.i_xmin == b.i_xmin && (a.alpha == b.alpha || (isnan(a.alpha) && isnan(b.alpha))) && a.d == b.d,
                      "n %lld rep %d: fast i=%lld a=%.17g d=%.17g, ref i=%lld a=%.17g d=%.17g", (long long)n, rep,
                      (long long)a.i_xmin, a.alpha, a.d, (long long)b.i_xmin, b.alpha, b.d);
            if (n >= 11 && n <= 1000) {
                double xmin = 0, ak = ref_ks(l, n, &xmin);
                CHECK_MSG(rel(a.alpha, ak) < 1e-9 || rel(a.xmin, xmin) > 0, "pow reference %.12g vs %.12g", a.alpha, ak);
            }
            /* finger fixes: xmin_peak stays in its window, clip_xmax only accepts a drop > 1 */
            moeq_ks_fit p, c;
            CHECK(moeq_spec_ks(l, n, MOEQ_KS_FIX_XMIN_PEAK, &p, &err) == MOEQ_OK);
            CHECK(moeq_spec_ks(l, n, MOEQ_KS_FIX_CLIP_XMAX, &c, &err) == MOEQ_OK);
            CHECK(c.fingers == 0 || (c.fingers >= 2 && c.fingers <= 10 && a.alpha - c.alpha > 1.0));
            CHECK(p.i_xmin >= 0 || n < 3);
        }
        free(l);
    }
}

static void test_hill_by_hand(void)
{
    /* n = 12: k = 10, ref = λ[1]; λ = 1, 2, 4, ..., 2^11 → Σ ln(λ_i/2) = ln2·(1+...+10) = 55 ln 2 */
    double l[12];
    for (int i = 0; i < 12; i++) l[i] = ldexp(1.0, i);
    int64_t k;
    int cl;
    double a = moeq_spec_hill(l, 12, &k, &cl);
    CHECK(k == 10 && !cl);
    CHECK_NEAR(a, 1 + 10 / (55 * log(2.0)), 1e-14);
    CHECK(isnan(moeq_spec_hill(l, 1, NULL, NULL)));
    a = moeq_spec_hill(l, 10, &k, &cl);   /* k clamped to 9 */
    CHECK(k == 9 && cl && isfinite(a));
    double flat[20];
    for (int i = 0; i < 20; i++) flat[i] = 3.0;
    CHECK(isnan(moeq_spec_hill(flat, 20, NULL, NULL)));
}

static void test_bad_matrices(void)
{
    moeq_spec_opts o;
    moeq_spec_opts_default(&o);
    moeq_spec_ws *ws = moeq_spec_ws_new();
    moeq_error err = {0};
    float *W = calloc(200 * 150, sizeof *W);
    uint64_t s = 1;
    for (int i = 0; i < 200 * 150; i++) W[i] = (float)gauss(&s);
    moeq_spec_result r;
    for (int mode = 0; mode < 3; mode++) {
        o.mode = (moeq_spec_mode)mode;
        W[77] = NAN;
        moeq_mat m = f32_mat(W, 200, 150, "nan");
        CHECK(moeq_spec_matrix(&m, &o, 1, ws, &r, NULL, NULL, &err) == MOEQ_OK);
        CHECK((r.flags & MOEQ_SPEC_F_NONFINITE) && r.nonfinite == 1 && isnan(r.alpha) && isnan(r.var));
        W[77] = INFINITY;
        W[78] = -INFINITY;
        CHECK(moeq_spec_matrix(&m, &o, 1, ws, &r, NULL, NULL, &err) == MOEQ_OK);
        CHECK((r.flags & MOEQ_SPEC_F_NONFINITE) && r.nonfinite == 2 && isnan(r.alpha));
        W[77] = W[78] = 0;
        float *Z = calloc(200 * 150, sizeof *Z);
        moeq_mat z = f32_mat(Z, 200, 150, "zero");
        CHECK(moeq_spec_matrix(&z, &o, 1, ws, &r, NULL, NULL, &err) == MOEQ_OK);
        CHECK((r.flags & MOEQ_SPEC_F_ZERO) && isnan(r.alpha) && r.var == 0);
        free(Z);
        moeq_mat row = f32_mat(W, 1, 150, "row");
        CHECK(moeq_spec_matrix(&row, &o, 1, ws, &r, NULL, NULL, &err) == MOEQ_OK);
        CHECK((r.flags & MOEQ_SPEC_F_TOO_FEW) && r.n_eigs == 1 && isnan(r.alpha) && isfinite(r.log_norm));
        moeq_mat col = f32_mat(W, 150, 1, "col");
        CHECK(moeq_spec_matrix(&col, &o, 1, ws, &r, NULL, NULL, &err) == MOEQ_OK);
        CHECK((r.flags & MOEQ_SPEC_F_TOO_FEW) && isnan(r.alpha));
        /* rank 1: one eigenvalue above the threshold */
        for (int i = 0; i < 40; i++) for (int j = 0; j < 30; j++) W[i * 30 + j] = (float)(i + 1) * (float)(j + 1);
        moeq_mat r1 = f32_mat(W, 40, 30, "rank1");
        CHECK(moeq_spec_matrix(&r1, &o, 1, ws, &r, NULL, NULL, &err) == MOEQ_OK);
        CHECK((r.flags & MOEQ_SPEC_F_TOO_FEW) && isnan(r.alpha) && r.stable_rank < 1.0001);
        for (int i = 0; i < 200 * 150; i++) W[i] = (float)gauss(&s);
    }
    char buf[128];
    moeq_spec_flags_str(MOEQ_SPEC_F_NONFINITE | MOEQ_SPEC_F_TOO_FEW, buf, sizeof buf);
    CHECK(strcmp(buf, "nonfinite,too_few") == 0);
    free(W);
    moeq_spec_ws_free(ws);
}

int main(void)
{
    moeq_threads_init(2);
    RUN_TEST(test_hill_by_hand);
    RUN_TEST(test_ks_fast_equals_exhaustive);
    RUN_TEST(test_full_vs_lapack64_fixtures);
    RUN_TEST(test_pareto_recovery);
    RUN_TEST(test_gram_vs_full);
    RUN_TEST(test_farms);
    RUN_TEST(test_bad_matrices);
    HARNESS_EXIT();
}
