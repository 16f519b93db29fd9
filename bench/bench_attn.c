/* Attention per head at the forward pass's task shapes (blocks of 64 queries, causal, head dim
 * 64 or 128): the set's fused kernel (attend) against the plain-C reference's, one thread,
 * thread CPU time (other processes' load does not count). (Until every set had attend, the
 * baseline was the wgemm + softmax + wgemm path; that path and the softmax kernels are gone.)
 * usage: bench_attn [n]   Prints one line per head dim: microseconds per head, both kernels. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "moeq_kernels.h"

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define TIME(expr) ({ int reps_ = 0; double t0_ = cpu_now(), el_; do { expr; reps_++; el_ = cpu_now() - t0_; } \
                      while (el_ < 0.5); el_ / reps_; })

static void head_fused(void (*attend)(const moeq_attn_task *), int64_t n, int64_t d, const float *Q, const float *K,
                       const float *V, float *scr, float *O)
{
    for (int64_t i0 = 0; i0 < n; i0 += 64) {
        const int64_t i1 = i0 + 64 < n ? i0 + 64 : n;
        const moeq_attn_task t = {i1 - i0, i1, d, d, Q + i0 * d, d, K, d, V, d, i0, NULL, 0, 0.125f, -INFINITY,
                                  O + i0 * d, d, scr};
        attend(&t);
    }
}

int main(int argc, char **argv)
{
    const int64_t n = argc > 1 ? atoll(argv[1]) : 512;
    const moeq_kernel_set *ks = moeq_kernels();
    for (int64_t d = 64; d <= 128; d *= 2) {
        float *Q = malloc((size_t)(n * d) * 4), *K = malloc((size_t)(n * d) * 4), *V = malloc((size_t)(n * d) * 4);
        float *O = malloc((size_t)(n * d) * 4);
        float *scr = malloc(MOEQ_ATTN_SCRATCH(d, d) * 4);
        for (int64_t i = 0; i < n * d; i++) {
            Q[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
            K[i] = (float)((i * 104729) % 1000) / 1000.0f - 0.5f;
            V[i] = (float)((i * 31337) % 1000) / 1000.0f - 0.5f;
        }
        const double tw = TIME(head_fused(moeq_ref_attend, n, d, Q, K, V, scr, O));
        const double tf = TIME(head_fused(ks->attend, n, d, Q, K, V, scr, O));
        const double fl = 4.0 * (double)d * (double)n * (double)(n + 1) / 2;   /* the visible products */
        printf("%s n %lld d %lld: reference %.1f us (%.1f GFLOP/s), %s %.1f us (%.1f GFLOP/s), x%.2f\n",
               ks->name, (long long)n, (long long)d, tw * 1e6, fl / tw * 1e-9, ks->name, tf * 1e6, fl / tf * 1e-9, tw / tf);
        free(Q), free(K), free(V), free(O), free(scr);
    }
    return 0;
}
