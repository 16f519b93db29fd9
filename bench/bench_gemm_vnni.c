/* The int8-activation VNNI GEMM (moeq_vnni_gemm_x8) against, in the same run, the float path
 * of the packed codecs (avx512: dequantized L2 tiles + sgemm) and OpenBLAS sgemm on the same
 * matrix in float32. Threads split the rows in blocks of 64 as model/forward.c's par_qmatmul
 * does; every kernel call is single-threaded. GFLOP/s count 2 * rows * cols * n; best of reps.
 * Usage: bench_gemm_vnni [--reps N] */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "moeq_core.h"
#include "moeq_kernels.h"
#include "kernels/x86/qmat_x86.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return rng;
}
static float frand(void) { return (float)((double)(next() >> 11) / 9007199254740992.0) * 2.0f - 1.0f; }

typedef struct mat { moeq_qmat q; uint8_t *raw; float *f; } mat;

/* random codes, scales about 0.01, integer zeros: the kernels' work does not depend on values */
static void make(mat *m, int bits, int group, int64_t rows, int64_t cols)
{
    uint64_t so, zo, nbytes = moeq_qmat_bytes(bits, group, 0, rows, cols, &so, &zo);
    m->raw = malloc((size_t)nbytes);
    uint64_t codes = (uint64_t)(rows * cols * bits / 8), ng = (uint64_t)(rows * ((cols + group - 1) / group));
    for (uint64_t i = 0; i < codes; i++) m->raw[i] = (uint8_t)(next() >> 56);
    uint16_t *s = (uint16_t *)(void *)(m->raw + so), *z = (uint16_t *)(void *)(m->raw + zo);
    for (uint64_t i = 0; i < ng; i++) {
        s[i] = moeq_f32_to_f16(0.01f * (1.5f + frand()));
        z[i] = moeq_f32_to_f16((float)(next() >> 60 & ((1u << bits) - 1)));
    }
    m->q = (moeq_qmat){ bits, group, 0, rows, cols, m->raw, s, z };
    m->f = malloc((size_t)(rows * cols) * sizeof(float));
    moeq_kernels_ref.dequant(&m->q, 0, rows, m->f);
}

enum { VNNI, FLOATPATH, SGEMM };
#define ROWBLOCK 64

static void run(int kind, const mat *m, const float *X, int64_t n, float *Y, int threads)
{
    const moeq_kernel_set *ks = moeq_kernels_get("avx512");
    int64_t N = m->q.rows, K = m->q.cols, nb = (N + ROWBLOCK - 1) / ROWBLOCK;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t b = 0; b < nb; b++) {
        int64_t r0 = b * ROWBLOCK, r1 = r0 + ROWBLOCK < N ? r0 + ROWBLOCK : N;
        if (kind == VNNI) {
            if (!moeq_vnni_gemm_x8(&m->q, X, n, K, r0, r1, Y + r0, N)) abort();
        } else if (kind == FLOATPATH) {
            ks->gemm(&m->q, X, n, K, r0, r1, Y + r0, N);
        } else {
            moeq_sgemm_nt(n, r1 - r0, K, X, K, m->f + r0 * K, K, 0.0f, Y + r0, N);
        }
    }
}

static double best_gflops(int kind, const mat *m, const float *X, int64_t n, float *Y, int threads, int reps)
{
    double flop = 2.0 * (double)m->q.rows * (double)m->q.cols * (double)n, best = 1e30;
    run(kind, m, X, n, Y, threads);   /* warm up: pages, caches */
    for (int r = 0; r < reps; r++) {
        double t0 = moeq_now();
        run(kind, m, X, n, Y, threads);
        double t = moeq_now() - t0;
        best = t < best ? t : best;
    }
    return flop / best / 1e9;
}

static void bench(const char *name, int bits, int group, int64_t rows, int64_t cols, const int64_t *ns, int nn, int reps)
{
    mat m;
    make(&m, bits, group, rows, cols);
    int64_t nmax = 0;
    for (int i = 0; i < nn; i++) nmax = ns[i] > nmax ? ns[i] : nmax;
    float *X = malloc((size_t)(nmax * cols) * 4), *Y = malloc((size_t)(nmax * rows) * 4);
    for (int64_t i = 0; i < nmax * cols; i++) X[i] = frand();
    for (int i = 0; i < nn; i++)
        for (int th = 1; th <= 2; th++) {
            double gv = best_gflops(VNNI, &m, X, ns[i], Y, th, reps);
            double gf = best_gflops(FLOATPATH, &m, X, ns[i], Y, th, reps);
            double gs = best_gflops(SGEMM, &m, X, ns[i], Y, th, reps);
            printf("%-8s %5lld x %-5lld n %-4lld threads %d  GFLOP/s vnni %7.1f  float path %7.1f  sgemm f32 %7.1f"
                   "   vnni/sgemm %.2fx  vnni/float path %.2fx  float path/sgemm %.2fx\n",
                   name, (long long)rows, (long long)cols, (long long)ns[i], th, gv, gf, gs, gv / gs, gv / gf, gf / gs);
            fflush(stdout);
        }
    free(X); free(Y); free(m.raw); free(m.f);
}

int main(int argc, char **argv)
{
    int reps = 5;
    for (int i = 1; i + 1 < argc; i += 2)
        if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
    if (!moeq_kernels_get("vnni") || !moeq_kernels_get("avx512")) {
        printf("bench_gemm_vnni: this CPU has no AVX-512 VNNI; nothing to measure\n");
        return 0;
    }
    moeq_threads_init(2);   /* OpenBLAS pinned to one thread; we split over rows */
    printf("int8-activation GEMM (VNNI) vs the float path (dequant tiles + sgemm) vs sgemm on f32, best of %d\n", reps);
    const int64_t big[] = { 8, 16, 64 }, tiny[] = { 128 };
    bench("q4 g64", 4, 64, 14336, 4096, big, 3, reps);
    bench("q2 g64", 2, 64, 14336, 4096, big, 3, reps);
    /* the tiny fixtures' expert shapes (hidden 128, intermediate 160) */
    bench("q4 g64", 4, 64, 160, 128, tiny, 1, reps * 200);
    bench("q4 g64", 4, 64, 128, 160, tiny, 1, reps * 200);
    bench("q4 g32", 4, 32, 160, 128, tiny, 1, reps * 200);
    return 0;
}
