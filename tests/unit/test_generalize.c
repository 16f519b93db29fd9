/* Quantization that generalizes (docs/quantize.md, "Generalization"): the calibration file's
 * validation split against a calibration of the validation windows alone, the shrunk Hessian
 * of undersampled experts against a float64 brute force, and --damp auto's choice against the
 * validation error recomputed here for every candidate. */
#include "harness.h"
#include "moeq_calib.h"
#include "moeq_core.h"
#include "moeq_gptq.h"
#include "moeq_kernels.h"

#include <hdf5.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static moeq_model *open_model(const char *name)
{
    char p[256];
    snprintf(p, sizeof p, FIXTURES "/%s", name);
    moeq_error err = {0};
    moeq_model *m = NULL;
    if (moeq_model_open(p, &m, &err) != MOEQ_OK) fprintf(stderr, "  %s\n", err.detail);
    return m;
}

static int32_t *load_tokens(const moeq_model *m, int64_t *n)
{
    moeq_error err = {0};
    int32_t *ids = NULL;
    if (moeq_tokens_load(FIXTURES "/heldout.safetensors", moeq_model_config(m)->vocab, &ids, n, &err) != MOEQ_OK)
        fprintf(stderr, "  %s\n", err.detail);
    return ids;
}

static char g_dir[] = "/tmp/moeq_gen_XXXXXX";

/* A file with the validation split (every 3rd of 6 windows of 32: windows 2, 5), one of the
 * validation windows alone, one of the whole run without a split. */
static void test_val_split_is_the_validation_windows(void)
{
    moeq_model *m = open_model("tiny-mixtral");
    if (!m) { CHECK(0); return; }
    const moeq_config *c = moeq_model_config(m);
    int64_t n = 0, ctx = 32, W = 6;
    int32_t *ids = load_tokens(m, &n);
    char a[300], b[300], v[300];
    snprintf(a, sizeof a, "%s/split.h5", g_dir);
    snprintf(b, sizeof b, "%s/nosplit.h5", g_dir);
    snprintf(v, sizeof v, "%s/valonly.h5", g_dir);
    int32_t *val_ids = malloc(sizeof *val_ids * 2 * ctx);
    for (int k = 0; k < 2; k++) memcpy(val_ids + k * ctx, ids + (3 * k + 2) * ctx, sizeof *ids * ctx);
    moeq_calib_opts o = {.ctx = ctx, .max_tokens = W * ctx, .threads = 2, .val_every = 3};
    moeq_calib_result res;
    moeq_error err = {0};
    CHECK_MSG(moeq_calibrate(m, ids, n, a, &o, &res, &err) == MOEQ_OK, "%s", err.detail);
    CHECK(res.val_windows == 2 && res.val_every == 3);
    moeq_calib_result_free(&res);
    o.val_every = 0;
    CHECK(moeq_calibrate(m, ids, n, b, &o, &res, &err) == MOEQ_OK);
    moeq_calib_result_free(&res);
    o.max_tokens = 0;
    CHECK(moeq_calibrate(m, val_ids, 2 * ctx, v, &o, &res, &err) == MOEQ_OK);
    moeq_calib_result_free(&res);
    moeq_calib_file *fa = NULL, *fb = NULL, *fv = NULL;
    CHECK(moeq_calib_file_open(a, m, &fa, &err) == MOEQ_OK);
    CHECK(moeq_calib_file_open(b, m, &fb, &err) == MOEQ_OK);
    CHECK(moeq_calib_file_open(v, m, &fv, &err) == MOEQ_OK);
    if (!fa || !fb || !fv) { CHECK(0); goto done; }
    CHECK(moeq_calib_file_val_windows(fa) == 2 && moeq_calib_file_val_windows(fb) == 0);
    CHECK(moeq_calib_file_split_tokens(fa, MOEQ_SPLIT_VAL) == 2 * ctx);
    CHECK(moeq_calib_file_split_tokens(fa, MOEQ_SPLIT_CAL) == 4 * ctx);
    {
        int64_t H = c->hidden, I = c->moe_inter, dmax = H > I ? H : I;
        double *h1 = malloc(sizeof(double) * dmax * dmax), *h2 = malloc(sizeof(double) * dmax * dmax);
        double *h3 = malloc(sizeof(double) * dmax * dmax);
        int bad_val = 0, bad_all = 0, bad_cal = 0, bad_rows = 0;
        for (int64_t l = 0; l < c->layers; l++)
            for (int64_t e = 0; e < c->n_experts; e++)
                for (int down = 0; down < 2; down++) {
                    int64_t d = down ? I : H, r1, r2, r3;
                    /* the split's validation Hessian is a calibration of those windows alone */
                    CHECK(moeq_calib_file_hessian_split(fa, l, e, down, MOEQ_SPLIT_VAL, h1, d, &r1, &err) == MOEQ_OK);
                    CHECK(moeq_calib_file_hessian(fv, l, e, down, h2, d, &r2, &err) == MOEQ_OK);
                    bad_val += memcmp(h1, h2, sizeof(double) * d * d) != 0 || r1 != r2;
                    /* the full statistics do not change with the split */
                    CHECK(moeq_calib_file_hessian(fa, l, e, down, h1, d, &r1, &err) == MOEQ_OK);
                    CHECK(moeq_calib_file_hessian(fb, l, e, down, h3, d, &r3, &err) == MOEQ_OK);
                    bad_all += memcmp(h1, h3, sizeof(double) * d * d) != 0 || r1 != r3;
                    /* H_cal + H_val = H (within rounding of one subtraction) */
                    CHECK(moeq_calib_file_hessian_split(fa, l, e, down, MOEQ_SPLIT_CAL, h3, d, &r3, &err) == MOEQ_OK);
                    bad_rows += r3 + r2 != r1;
                    for (int64_t i = 0; i < d * d; i++) {
                        double scale = fabs(h1[i / d * d + i / d]) + fabs(h1[i % d * d + i % d]) + 1e-300;
                        if (fabs(h3[i] + h2[i] - h1[i]) > 1e-13 * scale) { bad_cal++; break; }
                    }
                }
        CHECK_MSG(!bad_val && !bad_all && !bad_cal && !bad_rows, "val %d all %d cal %d rows %d", bad_val, bad_all,
                  bad_cal, bad_rows);
        /* a file without the split refuses CAL and VAL */
        CHECK(moeq_calib_file_hessian_split(fb, 0, 0, 0, MOEQ_SPLIT_VAL, h1, H, NULL, &err) == MOEQ_ERR_MISUSE);
        free(h1);
        free(h2);
        free(h3);
    }
done:
    moeq_calib_file_close(fa);
    moeq_calib_file_close(fb);
    moeq_calib_file_close(fv);
    unlink(a);
    unlink(b);
    unlink(v);
    free(val_ids);
    free(ids);
    moeq_model_close(m);
}

/* Broken validation splits: each gives its exact error, naming the attribute or dataset. */
static void test_val_split_broken_files(void)
{
    moeq_model *m = open_model("tiny-mixtral");
    if (!m) { CHECK(0); return; }
    int64_t n = 0;
    int32_t *ids = load_tokens(m, &n);
    char a[300];
    snprintf(a, sizeof a, "%s/broken.h5", g_dir);
    moeq_calib_opts o = {.ctx = 32, .max_tokens = 4 * 32, .threads = 2, .val_every = 2};
    moeq_calib_result res;
    moeq_error err = {0};
    CHECK(moeq_calibrate(m, ids, n, a, &o, &res, &err) == MOEQ_OK);
    moeq_calib_result_free(&res);
    /* more validation windows than the file has windows */
    hid_t f = H5Fopen(a, H5F_ACC_RDWR, H5P_DEFAULT);
    int64_t v = 9;
    hid_t at = H5Aopen(f, "val_windows", H5P_DEFAULT);
    H5Awrite(at, H5T_NATIVE_INT64, &v);
    H5Aclose(at);
    H5Fclose(f);
    moeq_calib_file *cf = NULL;
    CHECK(moeq_calib_file_open(a, m, &cf, &err) == MOEQ_ERR_FORMAT);
    CHECK_MSG(strstr(err.detail, "'val_every'/'val_windows' missing or out of range (9 windows of 32 tokens)") != NULL,
              "%s", err.detail);
    moeq_calib_file_close(cf);
    cf = NULL;
    /* back in range, but layer 1's validation Hessians removed */
    f = H5Fopen(a, H5F_ACC_RDWR, H5P_DEFAULT);
    v = 2;
    at = H5Aopen(f, "val_windows", H5P_DEFAULT);
    H5Awrite(at, H5T_NATIVE_INT64, &v);
    H5Aclose(at);
    H5Ldelete(f, "/layers/L001/val_hessian_in", H5P_DEFAULT);
    H5Fclose(f);
    CHECK(moeq_calib_file_open(a, m, &cf, &err) == MOEQ_OK);
    if (cf) {
        const moeq_config *c = moeq_model_config(m);
        double *H = malloc(sizeof(double) * c->hidden * c->hidden);
        CHECK(moeq_calib_file_hessian_split(cf, 1, 0, 0, MOEQ_SPLIT_CAL, H, c->hidden, NULL, &err) == MOEQ_ERR_FORMAT);
        CHECK_MSG(strstr(err.detail, "dataset /layers/L001/val_hessian_in is missing") != NULL, "%s", err.detail);
        CHECK(moeq_calib_file_hessian_split(cf, 0, 0, 0, MOEQ_SPLIT_CAL, H, c->hidden, NULL, &err) == MOEQ_OK);
        free(H);
    }
    moeq_calib_file_close(cf);
    unlink(a);
    free(ids);
    moeq_model_close(m);
}

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static double urand(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

/* moeq_hessian_shrink against the per-token means computed from the token vectors themselves:
 * (n_e·mean_e(x xᵀ) + n0·mean_pool(x xᵀ)) / (n_e + n0). */
static void test_shrink_formula_brute_force(void)
{
    enum { D = 7, E = 4 };
    const int64_t ns[E] = {0, 3, 40, 500};
    double X[E][500][D];
    for (int e = 0; e < E; e++)
        for (int t = 0; t < ns[e]; t++)
            for (int j = 0; j < D; j++) X[e][t][j] = (urand() - 0.5) * (1 + e) + (j == e ? 1 : 0);
    double H[E][D * D] = {{0}}, Hp[D * D] = {0};
    int64_t np = 0;
    for (int e = 0; e < E; e++) {
        for (int t = 0; t < ns[e]; t++)
            for (int i = 0; i < D; i++)
                for (int j = 0; j < D; j++) H[e][i * D + j] += X[e][t][i] * X[e][t][j];
        for (int i = 0; i < D * D; i++) Hp[i] += H[e][i];
        np += ns[e];
    }
    const double n0s[] = {7, 100};
    double worst = 0;
    for (int k = 0; k < 2; k++)
        for (int e = 0; e < E; e++) {
            double out[D * D];
            moeq_hessian_shrink(H[e], ns[e], Hp, np, n0s[k], D, out);
            for (int i = 0; i < D; i++)
                for (int j = 0; j < D; j++) {
                    long double me = 0, mp = 0;   /* the means, token by token */
                    for (int t = 0; t < ns[e]; t++) me += (long double)X[e][t][i] * X[e][t][j];
                    if (ns[e]) me /= ns[e];
                    for (int f = 0; f < E; f++)
                        for (int t = 0; t < ns[f]; t++) mp += (long double)X[f][t][i] * X[f][t][j];
                    mp /= np;
                    long double want = (ns[e] * me + n0s[k] * mp) / (ns[e] + n0s[k]);
                    worst = fmax(worst, fabs((double)(want - out[i * D + j])) / (fabs((double)want) + 1e-12));
                }
        }
    CHECK_MSG(worst < 1e-12, "worst relative error %.3g", worst);
    /* a dead expert gets the pooled mean; in place works */
    double out[D * D];
    memcpy(out, H[0], sizeof out);
    moeq_hessian_shrink(out, 0, Hp, np, 5, D, out);
    CHECK_NEAR(out[3 * D + 2], Hp[3 * D + 2] / np, 1e-15);
}

/* A calibration file with a validation split where most experts are well sampled. */
static const char *split_file(moeq_model *m, const char *name, int64_t windows, int64_t min_tokens)
{
    static char path[300];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    int64_t n = 0;
    int32_t *ids = load_tokens(m, &n);
    moeq_calib_opts o = {.ctx = 64, .max_tokens = windows * 64, .threads = 2, .val_every = 4, .min_tokens = min_tokens};
    moeq_calib_result res;
    moeq_error err = {0};
    moeq_status st = moeq_calibrate(m, ids, n, path, &o, &res, &err);
    if (st) fprintf(stderr, "  %s\n", err.detail);
    moeq_calib_result_free(&res);
    free(ids);
    return st ? NULL : path;
}

/* tr(D H Dᵀ) by plain loops in long double. */
static double herr(const float *w, const float *q, int64_t R, int64_t n, const double *H)
{
    long double s = 0;
    for (int64_t r = 0; r < R; r++)
        for (int64_t i = 0; i < n; i++) {
            double di = (double)w[r * n + i] - q[r * n + i];
            for (int64_t j = 0; j < n; j++) s += (long double)di * H[i * n + j] * ((double)w[r * n + j] - q[r * n + j]);
        }
    return (double)s;
}

/* --damp auto on one layer's gate/up input: the choice is the argmin of the validation error
 * recomputed here (GPTQ of the busiest experts' first 64 rows on H_cal for every candidate,
 * error on H_val by plain loops), and the piece's bytes are GPTQ on H_cal with that damping. */
static void test_damp_auto_is_validation_argmin(void)
{
    moeq_model *m = open_model("tiny-qwen3moe");
    if (!m) { CHECK(0); return; }
    const char *path = split_file(m, "auto.h5", 16, 32);
    moeq_calib_file *cf = NULL;
    moeq_error err = {0};
    if (!path || moeq_calib_file_open(path, m, &cf, &err)) { CHECK(0); moeq_model_close(m); return; }
    const moeq_config *c = moeq_model_config(m);
    moeq_expert_mat *mats = NULL;
    size_t nm = 0;
    moeq_expert_index *ix = NULL;
    CHECK(moeq_expert_mats(m, &mats, &nm, &err) == MOEQ_OK);
    CHECK(moeq_expert_index_build(mats, nm, &ix, &err) == MOEQ_OK);
    moeq_gptq_run run = { .m = m, .calib = cf, .opts = { .threads = 2, .grid_steps = 8 }, .mats = mats, .n_mats = nm,
                          .index = ix, .fallback = MOEQ_FALLBACK_SHRINK, .damp_auto = 1, .split = MOEQ_SPLIT_CAL,
                          .report = 1 };
    const int64_t layer = 1, H = c->hidden;
    /* the busiest two well-sampled experts of the layer */
    int64_t e1 = -1, e2 = -1, n1 = -1, n2 = -1;
    for (int64_t e = 0; e < c->n_experts; e++) {
        int64_t n;
        int fl;
        CHECK(moeq_calib_file_expert(cf, layer, e, &n, &fl, &err) == MOEQ_OK);
        if (fl != MOEQ_CALIB_OK) continue;
        if (n > n1) { e2 = e1; n2 = n1; e1 = e; n1 = n; }
        else if (n > n2) { e2 = e; n2 = n; }
    }
    CHECK(e2 >= 0);
    moeq_codec cd = { .type = MOEQ_CODEC_INT, .bits = 3, .group = 32, .sym = 0 };
    double want[MOEQ_DAMP_CANDIDATES] = {0};
    double *Hc = malloc(sizeof(double) * H * H), *Hv = malloc(sizeof(double) * H * H);
    int64_t ex[2] = {e1, e2};
    for (int k = 0; k < 2 && ex[k] >= 0; k++) {
        CHECK(moeq_calib_file_hessian_split(cf, layer, ex[k], 0, MOEQ_SPLIT_CAL, Hc, H, NULL, &err) == MOEQ_OK);
        CHECK(moeq_calib_file_hessian_split(cf, layer, ex[k], 0, MOEQ_SPLIT_VAL, Hv, H, NULL, &err) == MOEQ_OK);
        for (int p = 0; p < 2; p++) {
            const moeq_expert_mat *x = NULL;
            for (size_t i = 0; i < nm; i++)
                if (mats[i].layer == layer && mats[i].expert == ex[k] && mats[i].proj == (moeq_proj)p) x = &mats[i];
            int64_t R = x->mat.rows < 64 ? x->mat.rows : 64, n = x->mat.cols;
            float *w = malloc(sizeof(float) * R * n), *wq = malloc(sizeof(float) * R * n);
            uint8_t *raw = malloc(moeq_qmat_bytes(3, 32, 0, R, n, NULL, NULL));
            moeq_mat_to_f32(&x->mat, 0, R, w);
            for (int ci = 0; ci < MOEQ_DAMP_CANDIDATES; ci++) {
                moeq_gptq_opts o = { .damp = moeq_damp_candidates[ci], .threads = 1, .grid_steps = 8 };
                CHECK(moeq_gptq_quantize(w, R, n, Hc, 3, 32, 0, &o, raw, wq, NULL, &err) == MOEQ_OK);
                want[ci] += herr(w, wq, R, n, Hv);
            }
            free(w); free(wq); free(raw);
        }
    }
    int best = 0;
    for (int ci = 1; ci < MOEQ_DAMP_CANDIDATES; ci++) if (want[ci] < want[best]) best = ci;
    /* the driver, through one gate piece of an expert of that layer */
    const moeq_expert_mat *x = NULL;
    for (size_t i = 0; i < nm; i++)
        if (mats[i].layer == layer && mats[i].expert == e1 && mats[i].proj == MOEQ_PROJ_GATE) x = &mats[i];
    int64_t R = x->mat.rows, n = x->mat.cols;
    float *w = malloc(sizeof(float) * R * n);
    uint64_t total = moeq_qmat_bytes(3, 32, 0, R, n, NULL, NULL);
    uint8_t *raw = malloc(total), *raw2 = malloc(total);
    moeq_mat_to_f32(&x->mat, 0, R, w);
    CHECK_MSG(moeq_gptq_piece(&run, x->name, w, R, n, &cd, raw, &err) == MOEQ_OK, "%s", err.detail);
    CHECK(run.n_choices == 1);
    if (run.n_choices == 1) {
        const moeq_gptq_damp_choice *ch = &run.choices[0];
        CHECK(ch->layer == layer && ch->kind == 0 && ch->experts[0] == e1 && ch->experts[1] == e2);
        for (int ci = 0; ci < MOEQ_DAMP_CANDIDATES; ci++)
            CHECK_MSG(fabs(ch->val_err[ci] - want[ci]) <= 1e-9 * want[ci], "candidate %d: %.12g vs %.12g", ci,
                      ch->val_err[ci], want[ci]);
        CHECK_MSG(ch->damp == moeq_damp_candidates[best], "chose %g, argmin %g", ch->damp, moeq_damp_candidates[best]);
        /* the piece: GPTQ on the calibration split with the chosen damping and the weighted grids */
        moeq_gptq_opts o = { .damp = ch->damp, .threads = 1, .grid_steps = 8 };
        CHECK(moeq_calib_file_hessian_split(cf, layer, e1, 0, MOEQ_SPLIT_CAL, Hc, H, NULL, &err) == MOEQ_OK);
        CHECK(moeq_gptq_quantize(w, R, n, Hc, 3, 32, 0, &o, raw2, NULL, NULL, &err) == MOEQ_OK);
        CHECK(memcmp(raw, raw2, total) == 0);
    }
    /* an undersampled expert's piece is GPTQ with the shrunk Hessian */
    int64_t eu = -1, nu = 0;
    for (int64_t e = 0; e < c->n_experts && eu < 0; e++) {
        int fl;
        CHECK(moeq_calib_file_expert(cf, layer, e, &nu, &fl, &err) == MOEQ_OK);
        if (fl == MOEQ_CALIB_UNDERSAMPLED) eu = e;
    }
    if (eu >= 0) {
        for (size_t i = 0; i < nm; i++)
            if (mats[i].layer == layer && mats[i].expert == eu && mats[i].proj == MOEQ_PROJ_GATE) x = &mats[i];
        moeq_mat_to_f32(&x->mat, 0, R, w);
        size_t nfb = run.n_fallbacks;
        CHECK(moeq_gptq_piece(&run, x->name, w, R, n, &cd, raw, &err) == MOEQ_OK);
        CHECK(run.n_fallbacks == nfb + 1 && !strcmp(run.fallbacks[nfb].kind, "shrunk"));
        double *Hp = malloc(sizeof(double) * H * H);
        int64_t ne, np;
        CHECK(moeq_calib_file_hessian_split(cf, layer, eu, 0, MOEQ_SPLIT_CAL, Hc, H, &ne, &err) == MOEQ_OK);
        CHECK(moeq_calib_file_hessian_split(cf, layer, -1, 0, MOEQ_SPLIT_CAL, Hp, H, &np, &err) == MOEQ_OK);
        moeq_hessian_shrink(Hc, ne, Hp, np, (double)n, H, Hc);
        moeq_gptq_opts o = { .damp = run.choices[0].damp, .threads = 1, .grid_steps = 8 };
        CHECK(moeq_gptq_quantize(w, R, n, Hc, 3, 32, 0, &o, raw2, NULL, NULL, &err) == MOEQ_OK);
        CHECK(memcmp(raw, raw2, total) == 0);
        free(Hp);
    } else {
        printf("  no undersampled expert in layer %lld\n", (long long)layer);
    }
    free(w); free(raw); free(raw2); free(Hc); free(Hv);
    moeq_gptq_run_free(&run);
    moeq_expert_index_free(ix);
    free(mats);
    moeq_calib_file_close(cf);
    unlink(path);
    moeq_model_close(m);
}

int main(void)
{
    moeq_threads_init(2);
    if (!mkdtemp(g_dir)) return 1;
    RUN_TEST(test_val_split_is_the_validation_windows);
    RUN_TEST(test_val_split_broken_files);
    RUN_TEST(test_shrink_formula_brute_force);
    RUN_TEST(test_damp_auto_is_validation_argmin);
    rmdir(g_dir);
    HARNESS_EXIT();
}
