/* Forward-pass speed of a packed .moeq file against its original checkpoint, both measured
 * in this run: the windows of the two models are timed alternately (A B A B ...), so that a
 * change in the machine's load hits both, and the ratio is of the summed times.
 * usage: bench_packed_eval [--threads N] [--ctx N] [--windows N] ORIGINAL PACKED TOKENS ...
 * Prints one line per pair on stderr and a JSON object on stdout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "moeq_core.h"
#include "moeq_kernels.h"
#include "moeq_model.h"

typedef struct side {
    moeq_model *m;
    moeq_runner *r;
    float *logits;
    double seconds;
} side;

static int open_side(const char *path, int64_t ctx, int threads, side *s)
{
    moeq_error err = {0};
    memset(s, 0, sizeof *s);
    if (moeq_model_open(path, &s->m, &err) != MOEQ_OK || moeq_runner_create(s->m, ctx, threads, &s->r, &err) != MOEQ_OK) {
        fprintf(stderr, "%s: %s\n", path, err.detail);
        return 0;
    }
    s->logits = malloc((size_t)(ctx * moeq_model_config(s->m)->vocab) * sizeof(float));
    return s->logits != NULL;
}

static void close_side(side *s)
{
    moeq_runner_free(s->r);
    free(s->logits);
    moeq_model_close(s->m);
}

static int run_window(side *s, const int32_t *ids, int64_t ctx)
{
    moeq_error err = {0};
    double t0 = moeq_now();
    if (moeq_forward(s->r, ids, ctx, s->logits, NULL, &err) != MOEQ_OK) {
        fprintf(stderr, "forward: %s\n", err.detail);
        return 0;
    }
    s->seconds += moeq_now() - t0;
    return 1;
}

int main(int argc, char **argv)
{
    int threads = 0;
    int64_t ctx = 512, windows = 8;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc) ctx = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--windows") && i + 1 < argc) windows = atoll(argv[++i]);
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 1; }
    }
    if ((argc - i) % 3 || argc == i) {
        fprintf(stderr, "usage: bench_packed_eval [--threads N] [--ctx N] [--windows N] ORIGINAL PACKED TOKENS ...\n");
        return 1;
    }
    threads = moeq_threads_init(threads);
    printf("{\"threads\": %d, \"kernel\": \"%s\", \"pairs\": [", threads, moeq_kernels()->name);
    for (int k = 0; i < argc; i += 3, k++) {
        side a, b;
        if (!open_side(argv[i], ctx, threads, &a) || !open_side(argv[i + 1], ctx, threads, &b)) return 2;
        moeq_error err = {0};
        int32_t *ids = NULL;
        int64_t n = 0;
        if (moeq_tokens_load(argv[i + 2], moeq_model_config(a.m)->vocab, &ids, &n, &err) != MOEQ_OK) {
            fprintf(stderr, "%s: %s\n", argv[i + 2], err.detail);
            return 2;
        }
        int64_t w = n / ctx < windows ? n / ctx : windows;
        if (w < 1) {
            fprintf(stderr, "%s: fewer than %lld tokens\n", argv[i + 2], (long long)ctx);
            return 2;
        }
        /* warm-up: page in both models' weights */
        if (!run_window(&a, ids, ctx) || !run_window(&b, ids, ctx)) return 2;
        a.seconds = b.seconds = 0;
        for (int64_t j = 0; j < w; j++)
            if (!run_window(&a, ids + j * ctx, ctx) || !run_window(&b, ids + j * ctx, ctx)) return 2;
        double ta = (double)(w * ctx) / a.seconds, tb = (double)(w * ctx) / b.seconds;
        fprintf(stderr, "%s vs %s, ctx %lld, %lld windows: %.0f vs %.0f tokens/s, packed/original = %.2fx\n",
                argv[i + 1], argv[i], (long long)ctx, (long long)w, tb, ta, tb / ta);
        printf("%s{\"original\": \"%s\", \"packed\": \"%s\", \"ctx\": %lld, \"windows\": %lld, "
               "\"original_tokens_per_s\": %.1f, \"packed_tokens_per_s\": %.1f, \"ratio\": %.3f}",
               k ? ", " : "", argv[i], argv[i + 1], (long long)ctx, (long long)w, ta, tb, tb / ta);
        free(ids);
        close_side(&a);
        close_side(&b);
    }
    printf("]}\n");
    return 0;
}
