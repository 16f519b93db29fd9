/* make bench: matmul over GGUF block types (kernels/ggml/). Per type, y = W x over matrices
 * of 4096 x 4096 rotated through > 256 MB (so every pass streams from memory), in GB/s of
 * weight bytes and as a ratio to the read bandwidth measured in the same run; and a batch of
 * 16 tokens on one cache-resident 2048 x 4096 matrix in GFLOP/s, the variant in use against the
 * plain-C reference. Threads: OpenMP's (OMP_NUM_THREADS). */
#include "moeq_ggml.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static uint64_t s = 1;
static float frand(void)
{
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    return (float)((double)(s >> 11) / 9007199254740992.0 * 2 - 1);
}

/* read bandwidth: sum of a buffer as large as the rotation, best of reps */
static double membw(const uint64_t *b, size_t words)
{
    double best = 1e30;
    volatile uint64_t sink = 0;
    for (int r = 0; r < 4; r++) {
        double t = now();
        uint64_t acc = 0;
#pragma omp parallel for reduction(+ : acc) schedule(static)
        for (size_t i = 0; i < words; i++) acc += b[i];
        sink += acc;
        t = now() - t;
        best = t < best ? t : best;
    }
    (void)sink;
    return (double)words * 8 / best / 1e9;
}

int main(int argc, char **argv)
{
    const int quick = argc > 1 && !strcmp(argv[1], "--quick");
    static const moeq_ggml_type types[] = {MOEQ_GGML_Q4_K, MOEQ_GGML_Q6_K, MOEQ_GGML_Q8_0, MOEQ_GGML_Q5_K,
                                           MOEQ_GGML_IQ4_XS, MOEQ_GGML_Q4_0, MOEQ_GGML_Q3_K, MOEQ_GGML_Q2_K,
                                           MOEQ_GGML_TQ2_0, MOEQ_GGML_TQ1_0};
    const int64_t rows = 4096, cols = 4096;
    const double pool = quick ? 32e6 : 320e6;
    float *w = malloc(cols * 4), *x = malloc(16 * cols * 4), *y = malloc(16 * rows * 4);
    for (int64_t i = 0; i < 16 * cols; i++) x[i] = frand();
    size_t words = (size_t)(pool / 8);
    uint64_t *buf = malloc(words * 8);
    for (size_t i = 0; i < words; i++) buf[i] = i * 2654435761u;
    double bw = membw(buf, words);
    free(buf);
    printf("ggml matmul, variant %s, %d threads, read bandwidth %.1f GB/s\n", moeq_ggml_gemm_name(),
           omp_get_max_threads(), bw);
    printf("%-7s %9s %9s %8s %12s %12s %8s\n", "type", "bpw", "GB/s", "/membw", "n=16 GFLOP/s", "ref GFLOP/s", "x ref");
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        moeq_ggml_type t = types[k];
        size_t rb = moeq_ggml_row_bytes(t, cols), mb = rb * rows;
        int nm = (int)(pool / (double)mb) + 1;
        uint8_t *W = malloc(mb * nm);
        /* one matrix quantized (64 distinct rows), copied over the rotation */
        for (int64_t r = 0; r < rows; r++) {
            if (r < 64) {
                for (int64_t c = 0; c < cols; c++) w[c] = frand();
                moeq_ggml_quant_row(t, w, NULL, W + rb * r, cols);
            } else {
                memcpy(W + rb * r, W + rb * (r % 64), rb);
            }
        }
        for (int m = 1; m < nm; m++) memcpy(W + mb * m, W, mb);
        /* gemv, streaming */
        double best = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            double t0 = now();
            for (int m = 0; m < nm; m++) moeq_ggml_gemm(t, W + mb * m, rows, cols, x, 1, y);
            t0 = (now() - t0) / nm;
            best = t0 < best ? t0 : best;
        }
        double gbs = (double)mb / best / 1e9;
        /* 16 tokens on one 2048-row matrix, the variant in use and the reference */
        const int64_t r2 = 2048;
        double tb = 1e30, tr = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            double t0 = now();
            moeq_ggml_gemm(t, W, r2, cols, x, 16, y);
            t0 = now() - t0;
            tb = t0 < tb ? t0 : tb;
            if (rep == 0 || !quick) {   /* the reference is slow: once in --quick */
                t0 = now();
                moeq_ggml_gemm_with("ref", t, W, r2, cols, x, 16, y);
                t0 = now() - t0;
                tr = t0 < tr ? t0 : tr;
            }
        }
        double fl = 2.0 * r2 * cols * 16;
        printf("%-7s %9.3f %9.1f %8.2f %12.1f %12.1f %8.1f\n", moeq_ggml_type_get(t)->name, rb * 8.0 / cols, gbs, gbs / bw,
               fl / tb / 1e9, fl / tr / 1e9, tr / tb);
        free(W);
    }
    free(w); free(x); free(y);
    return 0;
}
