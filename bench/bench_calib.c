/* Calibration throughput against the forward pass (eval) on the same tokens, both measured in
 * this run, with full float64 Hessians and the HDF5 file written; plus the accuracy of the
 * float32 alternative (per-window sgemm blocks summed in float64) against float64 dsyrk.
 * usage: bench_calib [--threads N] [--ctx N] [--windows N] [--out DIR] MODEL TOKENS [...]
 * Prints one line per model on stderr and a JSON object on stdout. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "moeq_calib.h"
#include "moeq_core.h"
#include "moeq_safetensors.h"
#include "bench/bench_common.h"

/* One expert's H_in over the first windows: float64 (what moeq stores) against float32 blocks
 * X_wᵀX_w per window (sgemm) summed in float64; returns max |diff| / max |H|. */
typedef struct f32cmp {
    int64_t layer, expert, H;
    double *h64, *h32;
    float *blk;
} f32cmp;

static void cmp_hook(void *user, int64_t layer, int64_t expert, moeq_proj proj, const float *x, int64_t n,
                     int64_t dim, const int32_t *ti, const float *w)
{
    (void)ti;
    (void)w;
    f32cmp *f = user;
    if (layer != f->layer || expert != f->expert || proj != MOEQ_PROJ_GATE) return;
    /* XᵀX in float32 through sgemm: transpose into blk's second half, then [dim,n]·[dim,n]ᵀ */
    float *xt = calloc((size_t)(n * dim), sizeof(float));
    if (!xt) return;
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = 0; j < dim; j++) xt[j * n + t] = x[t * dim + j];
    moeq_sgemm_nt(dim, dim, n, xt, n, xt, n, 0.0f, f->blk, dim);
    for (int64_t i = 0; i < dim * dim; i++) f->h32[i] += f->blk[i];
    for (int64_t t = 0; t < n; t++)
        for (int64_t i = 0; i < dim; i++)
            for (int64_t j = 0; j < dim; j++) f->h64[i * dim + j] += (double)x[t * dim + i] * x[t * dim + j];
    free(xt);
}

static double f32_accuracy(moeq_model *m, const int32_t *ids, int64_t ctx, int64_t windows)
{
    const moeq_config *c = moeq_model_config(m);
    int64_t H = c->hidden, l = 0;
    while (l < c->layers && !c->layer_is_moe[l]) l++;
    f32cmp f = {.layer = l, .expert = 0, .H = H};
    f.h64 = calloc((size_t)(H * H), sizeof(double));
    f.h32 = calloc((size_t)(H * H), sizeof(double));
    f.blk = calloc((size_t)(H * H), sizeof(float));
    moeq_hooks hk = {.user = &f, .linear_input = cmp_hook};
    moeq_runner *r = NULL;
    moeq_error err = {0};
    float *logits = malloc((size_t)(ctx * c->vocab) * sizeof(float));
    double worst = NAN;
    if (moeq_runner_create(m, ctx, 0, &r, &err) == MOEQ_OK) {
        for (int64_t w = 0; w < windows; w++) moeq_forward(r, ids + w * ctx, ctx, logits, &hk, &err);
        double mx = 0, d = 0;
        for (int64_t i = 0; i < H * H; i++) {
            mx = fmax(mx, fabs(f.h64[i]));
            d = fmax(d, fabs(f.h64[i] - f.h32[i]));
        }
        worst = mx > 0 ? d / mx : 0;
    }
    moeq_runner_free(r);
    free(logits);
    free(f.h64);
    free(f.h32);
    free(f.blk);
    return worst;
}

int main(int argc, char **argv)
{
    bench_opts bo = { .ctx = 512, .windows = 32, .out = "build/bench" };
    int i = bench_options(argc, argv, &bo);
    if (i < 0) return 1;
    if ((argc - i) % 2 || argc == i) {
        fprintf(stderr, "usage: bench_calib [--threads N] [--ctx N] [--windows N] [--out DIR] MODEL TOKENS ...\n");
        return 1;
    }
    const int64_t ctx = bo.ctx;
    const int threads = bo.threads = moeq_threads_init(bo.threads);
    printf("{\"threads\": %d, \"models\": [", threads);
    for (int k = 0; i < argc; i += 2, k++) {
        moeq_error err = {0};
        bench_model b;
        if (!bench_model_open(argv[i], argv[i + 1], &bo, &b)) return 2;
        moeq_model *m = b.m;
        moeq_runner *r = b.r;
        const int32_t *ids = b.ids;
        float *logits = b.logits;
        const int64_t n = b.n, w = b.windows;
        moeq_forward(r, ids, ctx, logits, NULL, &err);   /* warm-up: page in the weights */
        /* best of 3 for each, interleaved, so none gets a quieter machine: eval, calibrate
         * without a file (accumulation only), with the file (default: Hessians raw), and with
         * --compress 1 */
        double best[4] = {1e30, 1e30, 1e30, 1e30};
        uint64_t fbytes[4] = {0};
        char out[512];
        snprintf(out, sizeof out, "%s/bench_calib.h5", bo.out);
        for (int rep = 0; rep < 3; rep++) {
            double t0 = moeq_now();
            for (int64_t j = 0; j < w; j++) moeq_forward(r, ids + j * ctx, ctx, logits, NULL, &err);
            double el = moeq_now() - t0;
            if (el < best[0]) best[0] = el;
            for (int v = 1; v < 4; v++) {
                moeq_calib_opts o = {.ctx = ctx, .max_tokens = w * ctx, .threads = threads, .compress = v == 3};
                moeq_calib_result res;
                t0 = moeq_now();
                if (moeq_calibrate(m, ids, n, v == 1 ? NULL : out, &o, &res, &err) != MOEQ_OK) {
                    fprintf(stderr, "%s: calibrate: %s\n", argv[i], err.detail);
                    return 2;
                }
                el = moeq_now() - t0;
                if (el < best[v]) best[v] = el;
                fbytes[v] = res.file_bytes;
                moeq_calib_result_free(&res);
            }
        }
        double tps[4];
        for (int v = 0; v < 4; v++) tps[v] = (double)(w * ctx) / best[v];
        double acc = f32_accuracy(m, ids, ctx, w < 4 ? w : 4);
        fprintf(stderr, "%-30s %lld x %lld tokens: eval %6.0f tok/s; calibrate %6.0f tok/s = %.2f of eval "
                        "(accumulation only %.2f, --compress 1 %.2f); file %.1f MiB (--compress 1: %.1f MiB); "
                        "float32-block H_in rel. error %.1e\n",
                argv[i], (long long)w, (long long)ctx, tps[0], tps[2], tps[2] / tps[0], tps[1] / tps[0],
                tps[3] / tps[0], fbytes[2] / 1048576.0, fbytes[3] / 1048576.0, acc);
        printf("%s{\"model\": \"%s\", \"ctx\": %lld, \"windows\": %lld, \"eval_tokens_per_s\": %.1f, "
               "\"calib_tokens_per_s\": %.1f, \"ratio\": %.3f, \"ratio_no_file\": %.3f, \"ratio_compress1\": %.3f, "
               "\"file_bytes\": %llu, \"file_bytes_compress1\": %llu, \"f32_block_rel_err\": %.3g}",
               k ? ", " : "", argv[i], (long long)ctx, (long long)w, tps[0], tps[2], tps[2] / tps[0],
               tps[1] / tps[0], tps[3] / tps[0], (unsigned long long)fbytes[2], (unsigned long long)fbytes[3], acc);
        remove(out);
        bench_model_close(&b);
    }
    printf("]}\n");
    return 0;
}
