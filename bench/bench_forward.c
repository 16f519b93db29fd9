/* Forward-pass throughput against the machine's sgemm rate, both measured in this run.
 * usage: bench_forward [--threads N] [--ctx N] [--windows N] MODEL TOKENS [MODEL TOKENS ...]
 * Prints one line per model and a JSON object on stdout. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "moeq_core.h"
#include "moeq_model.h"
#include "bench/bench_common.h"

/* Aggregate sgemm rate: every thread multiplies its own [M,K]·[N,K]ᵀ, as the forward pass
 * does around single-threaded BLAS calls. */
static double sgemm_gflops(int threads, int64_t M, int64_t N, int64_t K, double *seconds_out)
{
    float **a = calloc((size_t)threads, sizeof *a), **b = calloc((size_t)threads, sizeof *b),
          **c = calloc((size_t)threads, sizeof *c);
    for (int t = 0; t < threads; t++) {
        a[t] = malloc((size_t)(M * K) * sizeof(float));
        b[t] = malloc((size_t)(N * K) * sizeof(float));
        c[t] = malloc((size_t)(M * N) * sizeof(float));
        for (int64_t i = 0; i < M * K; i++) a[t][i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
        for (int64_t i = 0; i < N * K; i++) b[t][i] = (float)((i * 104729) % 1000) / 1000.0f - 0.5f;
    }
    int reps = 0;
    double t0 = moeq_now(), el = 0;
    do {
#pragma omp parallel for num_threads(threads) schedule(static, 1)
        for (int t = 0; t < threads; t++) moeq_sgemm_nt(M, N, K, a[t], K, b[t], K, 0.0f, c[t], N);
        reps++;
        el = moeq_now() - t0;
    } while (el < 1.0 || reps < 3);
    for (int t = 0; t < threads; t++) { free(a[t]); free(b[t]); free(c[t]); }
    free(a); free(b); free(c);
    *seconds_out = el;
    return 2.0 * (double)M * (double)N * (double)K * threads * reps / el / 1e9;
}

int main(int argc, char **argv)
{
    bench_opts o = { .ctx = 512, .windows = 4 };
    int i = bench_options(argc, argv, &o);
    if (i < 0) return 1;
    if ((argc - i) % 2 || argc == i) {
        fprintf(stderr, "usage: bench_forward [--threads N] [--ctx N] [--windows N] MODEL TOKENS ...\n");
        return 1;
    }
    const int64_t ctx = o.ctx;
    int threads = o.threads = moeq_threads_init(o.threads);
    double sg_s;
    double peak = sgemm_gflops(threads, 512, 2048, 2048, &sg_s);
    fprintf(stderr, "sgemm (OpenBLAS, %d threads, each 512x2048x2048): %.1f GFLOP/s\n", threads, peak);
    printf("{\"threads\": %d, \"sgemm_gflops\": %.2f, \"models\": [", threads, peak);
    for (int k = 0; i < argc; i += 2, k++) {
        moeq_error err = {0};
        bench_model b;
        if (!bench_model_open(argv[i], argv[i + 1], &o, &b)) return 2;
        const moeq_config *c = moeq_model_config(b.m);
        const int64_t w = b.windows;
        moeq_forward(b.r, b.ids, ctx, b.logits, NULL, &err);   /* warm-up: page in the weights */
        double t0 = moeq_now();
        for (int64_t j = 0; j < w; j++) moeq_forward(b.r, b.ids + j * ctx, ctx, b.logits, NULL, &err);
        double el = moeq_now() - t0;
        double flops = moeq_forward_flops(c, ctx) * (double)w;
        double gf = flops / el / 1e9, tps = (double)(w * ctx) / el;
        fprintf(stderr, "%-40s ctx %lld: %8.0f tokens/s, %6.1f GFLOP/s = %.2f of sgemm; workspace %.1f MiB, peak RSS %.1f MiB\n",
                argv[i], (long long)ctx, tps, gf, gf / peak, (double)moeq_runner_bytes(b.r) / 1048576.0,
                (double)moeq_peak_rss() / 1048576.0);
        printf("%s{\"model\": \"%s\", \"ctx\": %lld, \"windows\": %lld, \"tokens_per_s\": %.1f, \"gflops\": %.2f, "
               "\"ratio_to_sgemm\": %.3f, \"workspace_bytes\": %llu}",
               k ? ", " : "", argv[i], (long long)ctx, (long long)w, tps, gf, gf / peak,
               (unsigned long long)moeq_runner_bytes(b.r));
        bench_model_close(&b);
    }
    printf("]}\n");
    return 0;
}
