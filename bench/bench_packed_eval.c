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
#include "bench/bench_common.h"

/* window j of b, its time added to *seconds */
static int run_window(bench_model *b, int64_t ctx, int64_t j, double *seconds)
{
    moeq_error err = {0};
    double t0 = moeq_now();
    if (moeq_forward(b->r, b->ids + j * ctx, ctx, b->logits, NULL, &err) != MOEQ_OK) {
        fprintf(stderr, "forward: %s\n", err.detail);
        return 0;
    }
    *seconds += moeq_now() - t0;
    return 1;
}

int main(int argc, char **argv)
{
    bench_opts o = { .ctx = 512, .windows = 8 };
    int i = bench_options(argc, argv, &o);
    if (i < 0) return 1;
    if ((argc - i) % 3 || argc == i) {
        fprintf(stderr, "usage: bench_packed_eval [--threads N] [--ctx N] [--windows N] ORIGINAL PACKED TOKENS ...\n");
        return 1;
    }
    o.threads = moeq_threads_init(o.threads);
    printf("{\"threads\": %d, \"kernel\": \"%s\", \"pairs\": [", o.threads, moeq_kernels()->name);
    for (int k = 0; i < argc; i += 3, k++) {
        bench_model a, b;
        if (!bench_model_open(argv[i], argv[i + 2], &o, &a) || !bench_model_open(argv[i + 1], argv[i + 2], &o, &b))
            return 2;
        const int64_t w = a.windows;
        double sa = 0, sb = 0;
        /* warm-up: page in both models' weights */
        if (!run_window(&a, o.ctx, 0, &sa) || !run_window(&b, o.ctx, 0, &sb)) return 2;
        sa = sb = 0;
        for (int64_t j = 0; j < w; j++)
            if (!run_window(&a, o.ctx, j, &sa) || !run_window(&b, o.ctx, j, &sb)) return 2;
        double ta = (double)(w * o.ctx) / sa, tb = (double)(w * o.ctx) / sb;
        fprintf(stderr, "%s vs %s, ctx %lld, %lld windows: %.0f vs %.0f tokens/s, packed/original = %.2fx\n",
                argv[i + 1], argv[i], (long long)o.ctx, (long long)w, tb, ta, tb / ta);
        printf("%s{\"original\": \"%s\", \"packed\": \"%s\", \"ctx\": %lld, \"windows\": %lld, "
               "\"original_tokens_per_s\": %.1f, \"packed_tokens_per_s\": %.1f, \"ratio\": %.3f}",
               k ? ", " : "", argv[i], argv[i + 1], (long long)o.ctx, (long long)w, ta, tb, tb / ta);
        bench_model_close(&a);
        bench_model_close(&b);
    }
    printf("]}\n");
    return 0;
}
