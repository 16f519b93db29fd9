/* Quantization that generalizes (docs/quantize.md, "Generalization"): the calibration file's
 * validation split against a calibration of the validation windows alone, the shrunk Hessian
 * of undersampled experts against a float64 brute force, and --damp auto's choice against the
 * validation error recomputed here for every candidate. */
#include "harness.h"
#include "moeq_calib.h"
#include "moeq_core.h"
#include "moeq_gptq.h"
#include "moeq_kernels.h"

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

/* A file with the validation split (every 3rd of 9 windows of 64: windows 2, 5, 8), one of the
 * validation windows alone, one of the whole run without a split. */
static void test_val_split_is_the_validation_windows(void)
{
    moeq_model *m = open_model("tiny-mixtral");
    if (!m) { CHECK(0); return; }
    const moeq_config *c = moeq_model_config(m);
    int64_t n = 0, ctx = 64, W = 9;
    int32_t *ids = load_tokens(m, &n);
    char a[300], b[300], v[300];
    snprintf(a, sizeof a, "%s/split.h5", g_dir);
    snprintf(b, sizeof b, "%s/nosplit.h5", g_dir);
    snprintf(v, sizeof v, "%s/valonly.h5", g_dir);
    int32_t *val_ids = malloc(sizeof *val_ids * 3 * ctx);
    for (int k = 0; k < 3; k++) memcpy(val_ids + k * ctx, ids + (3 * k + 2) * ctx, sizeof *ids * ctx);
    moeq_calib_opts o = {.ctx = ctx, .max_tokens = W * ctx, .threads = 2, .val_every = 3};
    moeq_calib_result res;
    moeq_error err = {0};
    CHECK_MSG(moeq_calibrate(m, ids, n, a, &o, &res, &err) == MOEQ_OK, "%s", err.detail);
    CHECK(res.val_windows == 3 && res.val_every == 3);
    moeq_calib_result_free(&res);
    o.val_every = 0;
    CHECK(moeq_calibrate(m, ids, n, b, &o, &res, &err) == MOEQ_OK);
    moeq_calib_result_free(&res);
    o.max_tokens = 0;
    CHECK(moeq_calibrate(m, val_ids, 3 * ctx, v, &o, &res, &err) == MOEQ_OK);
    moeq_calib_result_free(&res);
    moeq_calib_file *fa = NULL, *fb = NULL, *fv = NULL;
    CHECK(moeq_calib_file_open(a, m, &fa, &err) == MOEQ_OK);
    CHECK(moeq_calib_file_open(b, m, &fb, &err) == MOEQ_OK);
    CHECK(moeq_calib_file_open(v, m, &fv, &err) == MOEQ_OK);
    if (!fa || !fb || !fv) { CHECK(0); goto done; }
    CHECK(moeq_calib_file_val_windows(fa) == 3 && moeq_calib_file_val_windows(fb) == 0);
    CHECK(moeq_calib_file_split_tokens(fa, MOEQ_SPLIT_VAL) == 3 * ctx);
    CHECK(moeq_calib_file_split_tokens(fa, MOEQ_SPLIT_CAL) == 6 * ctx);
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

int main(void)
{
    moeq_threads_init(2);
    if (!mkdtemp(g_dir)) return 1;
    RUN_TEST(test_val_split_is_the_validation_windows);
    rmdir(g_dir);
    HARNESS_EXIT();
}
