/* make bench: moeq spectral's speed on Qwen1.5-MoE's expert shape (2048 x 1408, bf16), in
 * matrices per second for each mode, measured two ways in the same run:
 *   outer  OpenMP over matrices, BLAS/LAPACK single-threaded inside (what moeq spectral does)
 *   inner  one matrix at a time, OpenBLAS threaded inside
 * and the time a whole Qwen1.5-MoE (24 layers x 60 experts x 3 matrices) would take at the
 * better measured rate. Usage: bench_spectral [--rows R --cols C --reps N --threads T] */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "moeq_core.h"
#include "moeq_spectral.h"

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

/* Gaussian bulk (std 0.02) plus 16 rank-one spikes of power-law strength: the shape of a
 * trained expert's ESD (MP bulk and a heavy tail), so the fits do realistic work. */
static uint16_t *make_matrix(int64_t R, int64_t C)
{
    uint16_t *w = malloc((size_t)(R * C) * sizeof *w);
    float *f = malloc((size_t)(R * C) * sizeof *f);
    float *u = malloc((size_t)R * sizeof *u), *v = malloc((size_t)C * sizeof *v);
    uint64_t s = 12345;
    for (int64_t i = 0; i < R * C; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double a = ((s >> 11) + 0.5) / 9007199254740992.0;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double b = ((s >> 11) + 0.5) / 9007199254740992.0;
        f[i] = (float)(0.02 * sqrt(-2 * log(a)) * cos(6.283185307179586 * b));
    }
    for (int k = 0; k < 16; k++) {
        double str = 0.5 * pow(k + 1.0, -0.7);
        for (int64_t i = 0; i < R; i++) { s = s * 6364136223846793005ull + 1442695040888963407ull; u[i] = (float)((((s >> 11) & 1) ? 1 : -1) / sqrt((double)R)); }
        for (int64_t j = 0; j < C; j++) { s = s * 6364136223846793005ull + 1442695040888963407ull; v[j] = (float)((((s >> 11) & 1) ? 1 : -1) / sqrt((double)C)); }
        for (int64_t i = 0; i < R; i++)
            for (int64_t j = 0; j < C; j++) f[i * C + j] += (float)(str * u[i] * v[j]);
    }
    for (int64_t i = 0; i < R * C; i++) w[i] = to_bf16(f[i]);
    free(f); free(u); free(v);
    return w;
}

static double run(const moeq_spec_item *items, int64_t n, const moeq_spec_opts *o, int threads,
                  moeq_spec_result *res)
{
    moeq_error err = {0};
    double t0 = moeq_now();
    if (moeq_spec_run(items, (size_t)n, o, threads, res, NULL, NULL, &err) != MOEQ_OK) {
        fprintf(stderr, "bench_spectral: %s\n", err.detail);
        exit(1);
    }
    return moeq_now() - t0;
}

int main(int argc, char **argv)
{
    int64_t R = 2048, C = 1408, reps = 1;
    int T = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--rows")) R = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--cols")) C = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) T = atoi(argv[i + 1]);
    }
    T = moeq_threads_init(T);
    const int64_t model_matrices = 24 * 60 * 3;
    uint16_t *w = make_matrix(R, C);
    /* per mode, matrices per run: enough for every thread to get the same count */
    const moeq_spec_mode modes[3] = {MOEQ_SPEC_FULL, MOEQ_SPEC_GRAM, MOEQ_SPEC_FARMS};
    const int64_t count[3] = {2 * T * reps, 2 * T * reps, 4 * T * reps};
    int64_t nmax = count[2];
    moeq_spec_item *items = calloc((size_t)nmax, sizeof *items);
    moeq_spec_result *res = calloc((size_t)nmax, sizeof *res), *res1 = calloc((size_t)nmax, sizeof *res1);
    for (int64_t i = 0; i < nmax; i++) {
        snprintf(items[i].tensor, sizeof items[i].tensor, "bench.experts.%lld.down_proj.weight", (long long)i);
        items[i].mat = (moeq_mat){.tensor = items[i].tensor, .index = -1, .dtype = MOEQ_DT_BF16, .rows = R, .cols = C, .data = w};
        items[i].expert = i;
        items[i].proj = MOEQ_PROJ_DOWN;
    }
    printf("bench_spectral: %lldx%lld bf16, %d threads; both fits (Hill and KS) on every matrix\n",
           (long long)R, (long long)C, T);
    printf("%-6s %8s %14s %14s %12s %8s %9s %16s\n", "mode", "matrices", "outer mat/s", "inner mat/s",
           "outer/inner", "n_eigs", "alpha", "model (min)");
    double best_rate[3];
    for (int mi = 0; mi < 3; mi++) {
        moeq_spec_opts o;
        moeq_spec_opts_default(&o);
        o.mode = modes[mi];
        int64_t n = count[mi];
        /* outer: OpenMP over matrices, OpenBLAS pinned to one thread */
        openblas_set_num_threads(1);
        double t_outer = run(items, n, &o, T, res);
        /* inner: one matrix at a time, OpenBLAS with T threads */
        openblas_set_num_threads(T);
        double t_inner = run(items, n / 2, &o, 1, res1);
        openblas_set_num_threads(1);
        double r_out = (double)n / t_outer, r_in = (double)(n / 2) / t_inner;
        best_rate[mi] = r_out > r_in ? r_out : r_in;
        printf("%-6s %8lld %14.3f %14.3f %12.2f %8lld %9.4f %16.2f\n", moeq_spec_mode_name(modes[mi]), (long long)n,
               r_out, r_in, r_out / r_in, (long long)res[0].n_eigs, res[0].alpha_hill,
               (double)model_matrices / best_rate[mi] / 60.0);
    }
    printf("Qwen1.5-MoE (%lld matrices of %lldx%lld), at the better rate: full %.1f min, gram %.1f min, farms %.1f min "
           "(target < 10 min for farms or gram)\n", (long long)model_matrices, (long long)R, (long long)C,
           model_matrices / best_rate[0] / 60, model_matrices / best_rate[1] / 60, model_matrices / best_rate[2] / 60);
    printf("speed ratios: gram/full %.2f, farms/full %.2f; peak RSS %.1f MiB\n", best_rate[1] / best_rate[0],
           best_rate[2] / best_rate[0], (double)moeq_peak_rss() / 1048576.0);
    free(items); free(res); free(res1); free(w);
    return 0;
}
