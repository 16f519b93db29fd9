/* moeq bench kernel: measured rates of the packed kernels, each against a baseline measured in
 * the same run with the same threads (docs/bench.md). GEMV is memory-bound: its packed bytes
 * per second are compared with a plain read of as many bytes; GEMM at batch 64 is compared
 * with OpenBLAS sgemm on the same matrix in float32 and with dequantize-then-sgemm. */
#include "moeq_bench.h"
#include "moeq_core.h"
#include "moeq_kernels.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define ROW_BLOCK 64

static uint64_t xs64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* One packed matrix with pseudo-random codes, scales near 0.01, integer zeros. */
static uint8_t *make_qmat(int bits, int group, int64_t rows, int64_t cols, uint64_t seed, moeq_qmat *q)
{
    uint64_t so, zo, n = moeq_qmat_bytes(bits, group, 0, rows, cols, &so, &zo);
    uint8_t *raw = aligned_alloc(64, (n + 63) / 64 * 64);
    if (!raw) return NULL;
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    int64_t ng = rows * ((cols + group - 1) / group);
    uint64_t codes = (uint64_t)rows * (uint64_t)cols * (uint64_t)bits / 8;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < (int64_t)(codes / 8); i++) {
        uint64_t t = seed + (uint64_t)i * 0x9E3779B97F4A7C15ull + 1;
        uint64_t v = xs64(&t);
        memcpy(raw + 8 * i, &v, 8);
    }
    memset(raw + codes / 8 * 8, 0, so - codes / 8 * 8);
    memset(raw + so, 0, n - so);
    uint16_t *sc = (uint16_t *)(void *)(raw + so), *zp = (uint16_t *)(void *)(raw + zo);
    for (int64_t g = 0; g < ng; g++) {
        sc[g] = moeq_f32_to_f16(0.005f + (float)(xs64(&s) % 1000) * 1e-5f);
        zp[g] = moeq_f32_to_f16((float)((1 << (bits - 1)) - 1 + (int)(xs64(&s) % 3)));
    }
    *q = (moeq_qmat){ .bits = bits, .group = group, .sym = 0, .rows = rows, .cols = cols, .codes = raw,
                      .scales = sc, .zeros = zp };
    return raw;
}

static void fill_f32(float *x, int64_t n, uint64_t seed)
{
    uint64_t s = seed * 7 + 3;
    for (int64_t i = 0; i < n; i++) x[i] = (float)((int64_t)(xs64(&s) % 2001) - 1000) * 1e-3f;
}

/* Read bandwidth: a 64-bit integer sum over buf (vectorizes; associative, so the compiler may
 * split it into independent lanes), each thread its static share, best of reps; once plainly
 * and once with a software prefetch 2 KB ahead (as the kernels do), the better of the two, so
 * that the kernels are not compared with a weaker reader than themselves. */
static double membw(const uint64_t *buf, int64_t words, int reps)
{
    double best = 1e30;
    volatile uint64_t sink = 0;
    for (int r = 0; r < 2 * reps; r++) {
        double t0 = moeq_now();
        uint64_t tot = 0;
        if (r % 2 == 0) {
#pragma omp parallel for schedule(static) reduction(+ : tot)
            for (int64_t i = 0; i < words; i++) tot += buf[i];
        } else {
#pragma omp parallel for schedule(static) reduction(+ : tot)
            for (int64_t i = 0; i < words; i += 8) {
                __builtin_prefetch(buf + i + 256);
                for (int k = 0; k < 8 && i + k < words; k++) tot += buf[i + k];
            }
        }
        double t = moeq_now() - t0;
        sink += tot;
        if (t < best) best = t;
    }
    (void)sink;
    return (double)words * 8 / best / 1e9;
}

static moeq_status gemv_case(const moeq_kernel_set *ks, int bits, int group, int64_t rows, int64_t cols,
                             int64_t mats, int reps, double membw_gbs, moeq_bench_gemv *out, moeq_error *err)
{
    moeq_qmat *q = calloc((size_t)mats, sizeof *q);
    uint8_t **raw = calloc((size_t)mats, sizeof *raw);
    float *x = malloc((size_t)cols * sizeof *x), *y = malloc((size_t)(rows * mats) * sizeof *y);
    moeq_status st = MOEQ_OK;
    if (!q || !raw || !x || !y) {
        st = moeq_fail(err, MOEQ_ERR_NOMEM, "bench: out of memory");
        goto done;
    }
    for (int64_t m = 0; m < mats; m++)
        if (!(raw[m] = make_qmat(bits, group, rows, cols, (uint64_t)(m + 1) * 1000 + (uint64_t)bits, &q[m]))) {
            st = moeq_fail(err, MOEQ_ERR_NOMEM, "bench: out of memory for %lld packed matrices", (long long)mats);
            goto done;
        }
    fill_f32(x, cols, 5);
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {   /* the first pass warms (page faults, caches) */
        double t0 = moeq_now();
#pragma omp parallel
        for (int64_t m = 0; m < mats; m++) moeq_qmat_gemv_par(ks, &q[m], x, y + m * rows);
        double t = moeq_now() - t0;
        if (r && t < best) best = t;
    }
    double bytes = (double)mats * (double)moeq_qmat_bytes(bits, group, 0, rows, cols, NULL, NULL);
    *out = (moeq_bench_gemv){ .variant = ks->name, .bits = bits, .group = group, .rows = rows, .cols = cols, .mats = mats, .bytes = bytes,
                              .gbs = bytes / best / 1e9, .ratio_to_membw = bytes / best / 1e9 / membw_gbs,
                              .gweights_s = (double)mats * (double)rows * (double)cols / best / 1e9,
                              .ms_per_matrix = best / (double)mats * 1e3 };
done:
    for (int64_t m = 0; raw && m < mats; m++) free(raw[m]);
    free(raw);
    free(q);
    free(x);
    free(y);
    return st;
}

static moeq_status gemm_case(const moeq_kernel_set *ks, int bits, int group, int64_t rows, int64_t cols,
                             int64_t batch, int reps, moeq_bench_gemm *out, moeq_error *err)
{
    moeq_qmat q;
    uint8_t *raw = make_qmat(bits, group, rows, cols, 77, &q);
    float *W = malloc((size_t)(rows * cols) * sizeof *W), *D = malloc((size_t)(rows * cols) * sizeof *D);
    float *X = malloc((size_t)(batch * cols) * sizeof *X), *Y = malloc((size_t)(batch * rows) * sizeof *Y);
    moeq_status st = MOEQ_OK;
    if (!raw || !W || !X || !Y || !D) {
        st = moeq_fail(err, MOEQ_ERR_NOMEM, "bench: out of memory for the GEMM case");
        goto done;
    }
    int64_t nb = (rows + ROW_BLOCK - 1) / ROW_BLOCK;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        int64_t r0 = b * ROW_BLOCK, r1 = r0 + ROW_BLOCK < rows ? r0 + ROW_BLOCK : rows;
        ks->dequant(&q, r0, r1, W + r0 * cols);
    }
    fill_f32(X, batch * cols, 9);
    int nt = omp_get_max_threads();
    double best[3] = { 1e30, 1e30, 1e30 };
    for (int r = 0; r < reps + 1; r++) {
        for (int which = 0; which < 3; which++) {
            double t0 = moeq_now();
            if (which == 0) {
                /* sgemm on the float32 matrix: one contiguous share of rows per thread */
#pragma omp parallel
                {
                    int t = omp_get_thread_num();
                    int64_t per = (rows + nt - 1) / nt, r0 = t * per, r1 = r0 + per < rows ? r0 + per : rows;
                    if (r0 < r1) moeq_sgemm_nt(batch, r1 - r0, cols, X, cols, W + r0 * cols, cols, 0.0f, Y + r0, rows);
                }
            } else if (which == 1) {
                /* the packed kernel, split as the forward pass splits it */
#pragma omp parallel for schedule(dynamic, 1)
                for (int64_t b = 0; b < nb; b++) {
                    int64_t r0 = b * ROW_BLOCK, r1 = r0 + ROW_BLOCK < rows ? r0 + ROW_BLOCK : rows;
                    ks->gemm(&q, X, batch, cols, r0, r1, Y + r0, rows);
                }
            } else {
                /* dequantize the whole matrix to float32, then sgemm */
#pragma omp parallel
                {
                    int t = omp_get_thread_num();
                    int64_t per = (rows + nt - 1) / nt, r0 = t * per, r1 = r0 + per < rows ? r0 + per : rows;
                    if (r0 < r1) {
                        ks->dequant(&q, r0, r1, D + r0 * cols);
                        moeq_sgemm_nt(batch, r1 - r0, cols, X, cols, D + r0 * cols, cols, 0.0f, Y + r0, rows);
                    }
                }
            }
            double t = moeq_now() - t0;
            if (r && t < best[which]) best[which] = t;
        }
    }
    double fl = 2.0 * (double)rows * (double)cols * (double)batch / 1e9;
    *out = (moeq_bench_gemm){ .bits = bits, .group = group, .rows = rows, .cols = cols, .batch = batch,
                              .gflops = fl / best[1], .sgemm_gflops = fl / best[0], .dequant_sgemm_gflops = fl / best[2],
                              .ratio_to_sgemm = best[0] / best[1], .ratio_to_dequant_sgemm = best[2] / best[1] };
done:
    free(raw);
    free(W);
    free(D);
    free(X);
    free(Y);
    return st;
}

moeq_status moeq_bench_kernel(int quick, moeq_bench_result *res, moeq_error *err)
{
    memset(res, 0, sizeof *res);
    const moeq_kernel_set *ks = moeq_kernels();
    res->kernel = ks->name;
    res->threads = omp_get_max_threads();
    /* Mixtral's expert shape: 14336 outputs, 4096 inputs; quick: a small one */
    const int64_t rows = quick ? 512 : 14336, cols = quick ? 1024 : 4096;
    const int group = 64, reps = quick ? 1 : 3;
    uint64_t b4 = moeq_qmat_bytes(4, group, 0, rows, cols, NULL, NULL);
    const uint64_t pool = quick ? ((uint64_t)16 << 20) : ((uint64_t)1 << 30);
    int64_t mats = (int64_t)((pool + b4 - 1) / b4);
    res->pool_bytes = (double)mats * (double)b4;
    /* bandwidth over a buffer of the same size as the 4-bit rotation */
    int64_t words = (int64_t)(res->pool_bytes / 8);
    uint64_t *buf = malloc((size_t)words * 8);
    if (!buf) return moeq_fail(err, MOEQ_ERR_NOMEM, "bench: out of memory for %lld bytes", (long long)words * 8);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < words; i++) buf[i] = (uint64_t)i * 0x9E3779B97F4A7C15ull;
    res->membw_gbs = membw(buf, words, reps + 2);
    free(buf);
    moeq_status st;
    static const int widths[] = { 4, 3, 2, 8 };
    for (int i = 0; i < 3; i++)   /* rotated: much larger than the last-level cache (8-bit: resident only) */
        if ((st = gemv_case(ks, widths[i], group, rows, cols, mats, reps, res->membw_gbs, &res->gemv[res->ngemv++], err)))
            return st;
    for (int i = 0; i < 4; i++)   /* one matrix, cache-resident: the llama.cpp comparison */
        if ((st = gemv_case(ks, widths[i], group, rows, cols, 1, quick ? 2 : 30, res->membw_gbs,
                            &res->gemv[res->ngemv++], err)))
            return st;
    const int64_t batch = quick ? 16 : 64;
    for (int i = 0; i < 2; i++)
        if ((st = gemm_case(ks, i ? 2 : 4, group, quick ? 256 : 14336, quick ? 512 : 4096, batch, quick ? 1 : 3,
                            &res->gemm[res->ngemm++], err)))
            return st;
    return MOEQ_OK;
}
