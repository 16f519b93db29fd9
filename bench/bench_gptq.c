/* GPTQ against RTN on Qwen1.5-MoE-sized expert matrices (gate/up [1408, 2048], down
 * [2048, 1408]) with random weights and Hessians of 4096 samples, both measured in this run;
 * the extrapolated time of a whole Qwen1.5-MoE (24 layers x 60 experts x 3 matrices, gate and up
 * sharing one factorization); and plan solving for 10 000 matrices.
 * usage: bench_gptq [--threads N] [--bits B] [--reps N]. One line per figure on stderr, JSON on stdout. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "moeq_core.h"
#include "moeq_gptq.h"
#include "moeq_kernels.h"
#include "moeq_plan.h"

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static float nrand(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    double u = ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    double v = ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
    return (float)(sqrt(-2 * log(u)) * cos(6.283185307179586 * v));
}

/* H = XᵀX for X [m, n] with a few strong directions, through float64 dsyrk. */
static void make_h(int64_t n, int64_t m, double *H)
{
    double *X = malloc((size_t)(m * n) * sizeof *X);
    for (int64_t t = 0; t < m; t++) {
        double c = nrand();
        for (int64_t j = 0; j < n; j++) X[t * n + j] = nrand() * (1 + (j % 17 == 0 ? 4 : 0)) + 0.3 * c;
    }
    moeq_dsyrk_tn(n, m, X, 0.0, H);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++) H[i * n + j] = H[j * n + i];
    free(X);
}

int main(int argc, char **argv)
{
    int threads = 0, bits = 3, reps = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bits") && i + 1 < argc) bits = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    }
    threads = moeq_threads_init(threads);
    const int64_t Hd = 2048, I = 1408;
    const int group = 128;
    double *Hin = malloc((size_t)(Hd * Hd) * sizeof *Hin), *Hdn = malloc((size_t)(I * I) * sizeof *Hdn);
    float *w = malloc((size_t)(Hd * I) * sizeof *w);
    uint8_t *raw = malloc((size_t)moeq_qmat_bytes(bits, group, 0, Hd, I, NULL, NULL) + 4096);
    make_h(Hd, 4096, Hin);
    make_h(I, 4096, Hdn);
    for (int64_t i = 0; i < Hd * I; i++) w[i] = 0.02f * nrand();
    moeq_error err;
    moeq_gptq_opts o = { .damp = 0.01, .threads = threads };
    double t_fact_in = 1e30, t_fact_dn = 1e30, t_gate = 1e30, t_down = 1e30, t_rtn_gate = 1e30, t_rtn_down = 1e30;
    for (int r = 0; r < reps; r++) {
        moeq_gptq_hinv *hin = NULL, *hdn = NULL;
        moeq_gptq_info info;
        double t0 = moeq_now();
        if (moeq_gptq_hinv_create(Hin, Hd, &o, &hin, &info, &err)) { fprintf(stderr, "%s\n", err.detail); return 3; }
        double t1 = moeq_now();
        if (moeq_gptq_apply(hin, w, I, Hd, bits, group, 0, 128, threads, raw, NULL, &err)) { fprintf(stderr, "%s\n", err.detail); return 3; }
        double t2 = moeq_now();
        if (moeq_gptq_hinv_create(Hdn, I, &o, &hdn, &info, &err)) { fprintf(stderr, "%s\n", err.detail); return 3; }
        double t3 = moeq_now();
        if (moeq_gptq_apply(hdn, w, Hd, I, bits, group, 0, 128, threads, raw, NULL, &err)) { fprintf(stderr, "%s\n", err.detail); return 3; }
        double t4 = moeq_now();
        moeq_rtn_quantize(w, I, Hd, bits, group, 0, raw, &err);
        double t5 = moeq_now();
        moeq_rtn_quantize(w, Hd, I, bits, group, 0, raw, &err);
        double t6 = moeq_now();
        t_fact_in = fmin(t_fact_in, t1 - t0); t_gate = fmin(t_gate, t2 - t1); t_fact_dn = fmin(t_fact_dn, t3 - t2);
        t_down = fmin(t_down, t4 - t3); t_rtn_gate = fmin(t_rtn_gate, t5 - t4); t_rtn_down = fmin(t_rtn_down, t6 - t5);
        moeq_gptq_hinv_free(hin);
        moeq_gptq_hinv_free(hdn);
    }
    /* per expert: one H_in factorization for gate and up, one H_down factorization */
    double per_expert = t_fact_in + 2 * t_gate + t_fact_dn + t_down;
    double per_matrix_down = t_fact_dn + t_down;   /* a 2048 x 1408 matrix with its own factorization */
    double model_min = per_expert * 24 * 60 / 60.0;
    double rtn_expert = 2 * t_rtn_gate + t_rtn_down;
    fprintf(stderr, "GPTQ %d-bit g%d, %d threads: down [2048, 1408] %.3f s (factorization %.3f s + updates %.3f s), "
            "gate [1408, 2048] %.3f s + factorization %.3f s shared with up\n", bits, group, threads, per_matrix_down,
            t_fact_dn, t_down, t_gate, t_fact_in);
    fprintf(stderr, "RTN: down %.4f s, gate %.4f s; GPTQ / RTN per expert: %.0fx\n", t_rtn_down, t_rtn_gate,
            per_expert / rtn_expert);
    fprintf(stderr, "Qwen1.5-MoE (24 x 60 experts x 3 matrices), extrapolated: GPTQ %.1f min, RTN %.2f min (target < 60 min)\n",
            model_min, rtn_expert * 24 * 60 / 60.0);
    /* plan solve, 10 000 matrices */
    const int n = 10000, k = 4, b4[4] = { 2, 3, 4, 8 };
    double *c = malloc((size_t)(n * k) * sizeof *c);
    int64_t *s = malloc((size_t)(n * k) * sizeof *s);
    int *ch = malloc((size_t)n * sizeof *ch);
    for (int i = 0; i < n; i++) {
        double sens = exp(3.0 * fabs(nrand()));
        for (int j = 0; j < k; j++) {
            s[i * k + j] = (int64_t)(Hd * I) * b4[j];
            c[i * k + j] = sens * (double)(Hd * I) * pow(4.0, -b4[j]) * (1 + 0.1 * fabs(nrand()));
        }
    }
    moeq_plan_solve_info info;
    double tp = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = moeq_now();
        if (moeq_plan_solve(n, k, c, s, (int64_t)(2.75 * (double)(Hd * I) * n), 0, ch, &info, &err)) { fprintf(stderr, "%s\n", err.detail); return 3; }
        tp = fmin(tp, moeq_now() - t0);
    }
    fprintf(stderr, "plan solve, 10000 matrices at 2.75 bits: %.4f s (exact %d, %lld items left to the DP)\n", tp, info.exact,
            (long long)info.free_items);
    printf("{\"threads\":%d,\"bits\":%d,\"group\":%d,\"gptq_down_s\":%.4f,\"gptq_gate_s\":%.4f,\"factor_in_s\":%.4f,"
           "\"factor_down_s\":%.4f,\"rtn_down_s\":%.5f,\"rtn_gate_s\":%.5f,\"gptq_over_rtn\":%.1f,\"qwen15_moe_min\":%.2f,"
           "\"plan_10000_s\":%.5f,\"plan_exact\":%d,\"peak_rss_mib\":%.1f}\n", threads, bits, group, per_matrix_down, t_gate,
           t_fact_in, t_fact_dn, t_rtn_down, t_rtn_gate, per_expert / rtn_expert, model_min, tp, info.exact,
           (double)moeq_peak_rss() / 1048576.0);
    free(Hin); free(Hdn); free(w); free(raw); free(c); free(s); free(ch);
    return 0;
}
