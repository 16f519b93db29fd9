/* BLAS entry points and thread configuration. OpenBLAS is kept single-threaded and moeq
 * splits work over OpenMP threads itself, so BLAS threads and ours never compete for cores. */
#include "moeq_core.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int g_threads = 1;

void moeq_sgemm_nt(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                   const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)M, (blasint)N, (blasint)K,
                1.0f, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

void moeq_sgemm_nn(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                   const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)M, (blasint)N, (blasint)K,
                1.0f, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

void moeq_dsyrk_tn(int64_t d, int64_t n, const double *X, double beta, double *C)
{
    if (d <= 0) return;
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, (blasint)d, (blasint)n, 1.0, X, (blasint)d,
                beta, C, (blasint)d);
}

void moeq_dsyrk_nt(int64_t d, int64_t n, const double *X, double beta, double *C)
{
    if (d <= 0) return;
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasNoTrans, (blasint)d, (blasint)n, 1.0, X, (blasint)n,
                beta, C, (blasint)d);
}

void moeq_dgemm_nn(int64_t M, int64_t N, int64_t K, double alpha, const double *A, int64_t lda,
                   const double *B, int64_t ldb, double beta, double *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)M, (blasint)N, (blasint)K,
                alpha, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

void moeq_sgemm_nt_ref(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                       const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) s += (double)A[i * lda + k] * (double)B[j * ldb + k];
            C[i * ldc + j] = (float)(s + (beta != 0.0f ? (double)beta * C[i * ldc + j] : 0.0));
        }
}

int moeq_threads_init(int requested)
{
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int n = requested > 0 ? requested : (online > 0 ? (int)online : 1);
    g_threads = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(1);
    return n;
}

int moeq_threads(void) { return g_threads; }

double moeq_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

uint64_t moeq_peak_rss(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    uint64_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) {
            unsigned long long v = 0;
            if (sscanf(line + 6, "%llu", &v) == 1) kb = v;
            break;
        }
    fclose(f);
    return kb * 1024;
}
