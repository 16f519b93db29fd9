/* moeq bench kernel (docs/bench.md): GEMV and GEMM of the packed codecs against the memory
 * bandwidth and OpenBLAS sgemm measured in the same run with the same threads. */
#ifndef MOEQ_BENCH_H
#define MOEQ_BENCH_H

#include <stdint.h>
#include "moeq_status.h"

typedef struct moeq_bench_gemv {
    const char *variant;   /* the kernel set in use: "vnni", "avx512", "avx2" or "ref" */
    int bits, group;
    int64_t rows, cols;
    int64_t mats;          /* matrices rotated over (1: cache-resident) */
    double bytes;          /* packed bytes read per pass (codes, scales, zeros) */
    double gbs, ratio_to_membw, gweights_s, ms_per_matrix;
} moeq_bench_gemv;

typedef struct moeq_bench_gemm {
    int bits, group;
    int64_t rows, cols, batch;
    double gflops, ratio_to_sgemm, ratio_to_dequant_sgemm;
    double sgemm_gflops, dequant_sgemm_gflops;
} moeq_bench_gemm;

#define MOEQ_BENCH_MAX 24

typedef struct moeq_bench_result {
    const char *kernel;     /* "ref", "avx2", "avx512" */
    int threads;
    double membw_gbs;       /* read bandwidth over the same bytes as the 4-bit rotation */
    double pool_bytes;      /* bytes of the 4-bit rotation */
    int ngemv, ngemm;
    moeq_bench_gemv gemv[MOEQ_BENCH_MAX];
    moeq_bench_gemm gemm[MOEQ_BENCH_MAX];
} moeq_bench_result;

/* quick: small sizes (tests); else 4-bit GEMV over >= 1 GiB of 14336 x 4096 matrices rotated,
 * 2/3/8-bit over the same matrix count, each width once more on one cache-resident matrix
 * (Mixtral's expert shape), GEMM at batch 64. Uses moeq_kernels() and the OpenMP threads. */
moeq_status moeq_bench_kernel(int quick, moeq_bench_result *res, moeq_error *err);

#endif
