/* Float-weight GEMM (wgemm, bf16/f16/f32 weights as stored) against OpenBLAS sgemm on the
 * widened matrix, both measured in this run, one thread, at the forward pass's shapes: an
 * expert (few tokens), an attention projection and an LM-head chunk (a whole window).
 * usage: bench_wgemm   Prints one line per shape and a JSON object on stdout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "moeq_core.h"
#include "moeq_kernels.h"

static uint16_t bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

/* seconds per call, at least 0.3 s of calls */
#define TIME(expr) ({ int reps_ = 0; double t0_ = moeq_now(), el_; do { expr; reps_++; el_ = moeq_now() - t0_; } \
                      while (el_ < 0.3); el_ / reps_; })

int main(void)
{
    moeq_threads_init(1);
    const moeq_kernel_set *ks = moeq_kernels();
    struct { const char *what; int64_t N, K, n; } shapes[] = {
        {"expert gate [256x512], 32 tokens", 256, 512, 32}, {"expert down [512x256], 32 tokens", 512, 256, 32},
        {"expert gate, 4 tokens", 256, 512, 4}, {"q proj [512x512], 256 tokens", 512, 512, 256},
        {"lm head chunk [512x512], 512 tokens", 512, 512, 512}, {"Mixtral-size expert [2048x1024], 64 tokens", 2048, 1024, 64}};
    printf("{\"kernel\": \"%s\", \"shapes\": [", ks->name);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int64_t N = shapes[s].N, K = shapes[s].K, n = shapes[s].n;
        float *W = malloc((size_t)(N * K) * 4), *Wf = malloc((size_t)(N * K) * 4), *X = malloc((size_t)(n * K) * 4);
        float *Y = malloc((size_t)(n * N) * 4);
        uint16_t *Wb = malloc((size_t)(N * K) * 2);
        for (int64_t i = 0; i < N * K; i++) {
            W[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
            Wb[i] = bf16(W[i]);
        }
        for (int64_t i = 0; i < n * K; i++) X[i] = (float)((i * 104729) % 1000) / 1000.0f - 0.5f;
        moeq_wmat wb = {MOEQ_W_BF16, N, K, Wb, 0}, wf = {MOEQ_W_F32, N, K, W, 0};
        double t_b = TIME(ks->wgemm(&wb, X, n, K, 0, N, Y, N));
        double t_f = TIME(ks->wgemm(&wf, X, n, K, 0, N, Y, N));
        double t_s = TIME(moeq_sgemm_nt(n, N, K, X, K, W, K, 0.0f, Y, N));
        double t_ws = TIME({ for (int64_t i = 0; i < N * K; i++) { uint32_t u = (uint32_t)Wb[i] << 16; memcpy(&Wf[i], &u, 4); }
                             moeq_sgemm_nt(n, N, K, X, K, Wf, K, 0.0f, Y, N); });
        double fl = 2.0 * N * K * n / 1e9;
        fprintf(stderr, "%-44s wgemm bf16 %6.1f GFLOP/s, f32 %6.1f | sgemm f32 %6.1f, widen+sgemm %6.1f | bf16 x sgemm %.2f, x widen+sgemm %.2f\n",
                shapes[s].what, fl / t_b, fl / t_f, fl / t_s, fl / t_ws, t_s / t_b, t_ws / t_b);
        printf("%s{\"rows\": %lld, \"cols\": %lld, \"tokens\": %lld, \"bf16_gflops\": %.2f, \"f32_gflops\": %.2f, "
               "\"sgemm_gflops\": %.2f, \"widen_sgemm_gflops\": %.2f, \"ratio_to_sgemm\": %.3f}",
               s ? ", " : "", (long long)N, (long long)K, (long long)n, fl / t_b, fl / t_f, fl / t_s, fl / t_ws, t_s / t_b);
        free(W); free(Wf); free(X); free(Y); free(Wb);
    }
    printf("]}\n");
    return 0;
}
