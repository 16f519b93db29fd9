/* The t1d kernels' speed (docs/KERNELS.md "t1d"): one [rows, cols] matrix of gaussian weights
 * (RTN ternary: p0 about 0.9), Y = X Wᵀ for 1 token (decode) and 16 tokens, single-threaded,
 * ref and avx2, beside the kernel set's int q2 (per channel) and bf16 products of the same
 * shape. Prints ms per product and weights per ns.
 *   build/rel/bench/bench_tdict [rows cols reps] */
#include "moeq_core.h"
#include "moeq_kernels.h"
#include "moeq_quant.h"
#include "moeq_tdict.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t s = 88172645463325252ull;
static double nrand(void)
{
    double a = 0;
    for (int i = 0; i < 12; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        a += (double)(s >> 11) / 9007199254740992.0;
    }
    return a - 6;
}

typedef void (*kfn)(const void *, const float *, int64_t, int64_t, int64_t, int64_t, float *, int64_t);

int main(int argc, char **argv)
{
    int64_t rows = argc > 1 ? atoll(argv[1]) : 4096, cols = argc > 2 ? atoll(argv[2]) : 4096;
    int reps = argc > 3 ? atoi(argv[3]) : 20;
    float *w = malloc((size_t)(rows * cols) * sizeof *w), *X = malloc((size_t)(16 * cols) * sizeof *X),
          *Y = malloc((size_t)(16 * rows) * sizeof *Y);
    for (int64_t i = 0; i < rows * cols; i++) w[i] = (float)(0.02 * nrand());
    for (int64_t i = 0; i < 16 * cols; i++) X[i] = (float)nrand();
    uint64_t cap = moeq_tdict_raw_bound(rows, cols);
    uint8_t *raw = malloc((size_t)cap);
    moeq_error e;
    moeq_tdict_stats st;
    double t0 = moeq_now();
    if (moeq_tdict_quantize(w, rows, cols, NULL, NULL, 0, raw, cap, NULL, &st, &e)) {
        fprintf(stderr, "%s\n", e.detail);
        return 1;
    }
    printf("t1d %lldx%lld: p0 %.3f (k %d), %.4f bits per weight, quantized+coded in %.2f s\n", (long long)rows,
           (long long)cols, st.p0, st.k, st.bpw, moeq_now() - t0);
    const moeq_kernel_set *ks = moeq_kernels();
    struct { const char *name; kfn f; } K[] = { { "t1d ref", moeq_tdict_gemm_ref }, { "t1d avx2", moeq_tdict_gemm_avx2 } };
    for (int n = 1; n <= 16; n += 15)
        for (int k = 0; k < (strcmp(ks->name, "ref") ? 2 : 1); k++) {
            K[k].f(raw, X, n, cols, 0, rows, Y, rows);
            t0 = moeq_now();
            for (int r = 0; r < reps; r++) K[k].f(raw, X, n, cols, 0, rows, Y, rows);
            double dt = (moeq_now() - t0) / reps;
            printf("%-9s n=%-2d %8.3f ms  %6.2f weights/ns  (%.1f MB coded)\n", K[k].name, n, 1e3 * dt,
                   (double)(rows * cols) / dt * 1e-9, (double)st.bytes / 1e6);
        }
    /* the set's int q2 per channel and bf16 products, same shape */
    uint64_t qb = moeq_qmat_bytes(2, (int)cols, 0, rows, cols, NULL, NULL);
    uint8_t *qr = malloc((size_t)qb);
    if (!moeq_rtn_quantize(w, rows, cols, 2, 0, 0, qr, &e)) {
        uint64_t so, zo;
        moeq_qmat_bytes(2, (int)cols, 0, rows, cols, &so, &zo);
        moeq_qmat q = { .bits = 2, .group = (int)cols, .sym = 0, .rows = rows, .cols = cols, .codes = qr,
                        .scales = (const uint16_t *)(void *)(qr + so), .zeros = (const uint16_t *)(void *)(qr + zo) };
        for (int n = 1; n <= 16; n += 15) {
            ks->gemm(&q, X, n, cols, 0, rows, Y, rows);
            t0 = moeq_now();
            for (int r = 0; r < reps; r++) ks->gemm(&q, X, n, cols, 0, rows, Y, rows);
            double dt = (moeq_now() - t0) / reps;
            printf("%-9s n=%-2d %8.3f ms  %6.2f weights/ns  (%s set, %.1f MB)\n", "q2ca", n, 1e3 * dt,
                   (double)(rows * cols) / dt * 1e-9, ks->name, (double)qb / 1e6);
        }
    }
    uint16_t *bf = malloc((size_t)(rows * cols) * 2);
    for (int64_t i = 0; i < rows * cols; i++) {
        uint32_t x;
        memcpy(&x, &w[i], 4);
        bf[i] = (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
    }
    moeq_wmat wm = { .type = MOEQ_W_BF16, .rows = rows, .cols = cols, .data = bf };
    for (int n = 1; n <= 16; n += 15) {
        ks->wgemm(&wm, X, n, cols, 0, rows, Y, rows);
        t0 = moeq_now();
        for (int r = 0; r < reps; r++) ks->wgemm(&wm, X, n, cols, 0, rows, Y, rows);
        double dt = (moeq_now() - t0) / reps;
        printf("%-9s n=%-2d %8.3f ms  %6.2f weights/ns  (%s set, %.1f MB)\n", "bf16", n, 1e3 * dt,
               (double)(rows * cols) / dt * 1e-9, ks->name, (double)(rows * cols) * 2 / 1e6);
    }
    free(w); free(X); free(Y); free(raw); free(qr); free(bf);
    return 0;
}
