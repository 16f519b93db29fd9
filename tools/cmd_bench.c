/* moeq bench kernel: the packed kernels' rates against memory bandwidth and sgemm measured in
 * the same run (docs/bench.md). */
#include <stdio.h>
#include <string.h>
#include "common.h"
#include "moeq_bench.h"
#include "moeq_core.h"
#include "moeq_kernels.h"

static const char *BENCH_HELP =
    "usage: moeq bench kernel [--quick] [--json] [-q] [--threads N]\n"
    "       moeq bench eval MODEL ... (moeq bench eval --help)\n\n"
    "Measures, with the kernel variant in use (MOEQ_KERNEL=ref|avx2|avx512|vnni|bf16|bf16x2|bf16f|amx\n"
    "forces one, MOEQ_KERNEL=float the best with float32 activations) and N threads (default: all cores):\n"
    "  membw    read bandwidth over as many bytes as the 4-bit GEMV rotation (the better of a\n           plain read and one prefetching 2 KB ahead, as the kernels do)\n"
    "  gemv     y = W x, q4/q3/q2 g64 asymmetric, over >= 1 GiB of 14336 x 4096 matrices rotated\n"
    "           (far larger than the last-level cache), then q4/q3/q2/q8 on one cache-resident\n"
    "           matrix of that shape (Mixtral's expert; compare with llama.cpp in docs/bench.md)\n"
    "  gemm     Y = W X at batch 64 vs OpenBLAS sgemm on the same matrix in float32 and vs\n"
    "           dequantize-then-sgemm\n"
    "  --quick  small sizes (seconds; for tests)\n"
    "JSON: kernel, threads, membw_gbs, gemv [{bits, group, rows, cols, gbs, ratio_to_membw,\n"
    "variant, mats, gweights_s, ms_per_matrix}], gemm [{bits, group, rows, cols, batch, gflops,\n"
    "ratio_to_sgemm, ratio_to_dequant_sgemm, sgemm_gflops, dequant_sgemm_gflops}].\n";

int cmd_bench(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "eval")) return cmd_bench_eval(argc - 1, argv + 1);
    tool_common tc = {0};
    const char *what = NULL;
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        int r = tool_common_option("bench", argc, argv, &i, &tc);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (argv[i][0] == '-' && argv[i][1]) return tool_usage_error("bench", "unknown option %s", argv[i]);
        else if (what) return tool_usage_error("bench", "one benchmark only (got '%s' and '%s')", what, argv[i]);
        else what = argv[i];
    }
    if (tc.help) { fputs(BENCH_HELP, stdout); return 0; }
    if (!what) return tool_usage_error("bench", "missing the benchmark name (kernel, eval)");
    if (strcmp(what, "kernel")) return tool_usage_error("bench", "unknown benchmark '%s' (kernel, eval)", what);
    moeq_threads_init(tc.threads);
    moeq_error err = {0};
    moeq_bench_result r;
    FILE *h = tool_human(&tc);
    if (h) fprintf(h, "moeq bench kernel: %s kernels (%s), %d threads%s\n", moeq_kernels()->name, moeq_kernels_note(),
                   moeq_threads(), quick ? ", quick sizes" : "");
    if (moeq_bench_kernel(quick, &r, &err) != MOEQ_OK) return tool_report("bench", &err);
    if (h) {
        fprintf(h, "memory bandwidth  %.2f GB/s (read, %.0f MiB)\n", r.membw_gbs, r.pool_bytes / 1048576.0);
        fprintf(h, "gemv  variant bits group  rows x cols    mats  GB/s   x membw  Gweights/s  ms/matrix\n");
        for (int i = 0; i < r.ngemv; i++) {
            const moeq_bench_gemv *g = &r.gemv[i];
            fprintf(h, "      %-7s %4d %5d  %5lld x %-5lld %5lld %6.2f  %6.3f  %9.2f  %9.3f\n", g->variant, g->bits, g->group,
                    (long long)g->rows, (long long)g->cols, (long long)g->mats, g->gbs, g->ratio_to_membw,
                    g->gweights_s, g->ms_per_matrix);
        }
        fprintf(h, "gemm  bits group  rows x cols   batch  GFLOP/s  x sgemm  x dequant+sgemm  (sgemm %.1f)\n",
                r.ngemm ? r.gemm[0].sgemm_gflops : 0.0);
        for (int i = 0; i < r.ngemm; i++) {
            const moeq_bench_gemm *g = &r.gemm[i];
            fprintf(h, "      %4d %5d  %5lld x %-5lld %5lld  %7.1f  %6.3f  %6.3f\n", g->bits, g->group, (long long)g->rows,
                    (long long)g->cols, (long long)g->batch, g->gflops, g->ratio_to_sgemm, g->ratio_to_dequant_sgemm);
        }
    }
    if (!tc.json) return 0;
    json_t *o = json_object(), *gv = json_array(), *gm = json_array();
    json_object_set_new(o, "kernel", json_string(r.kernel));
    json_object_set_new(o, "threads", json_integer(r.threads));
    json_object_set_new(o, "membw_gbs", json_real(r.membw_gbs));
    for (int i = 0; i < r.ngemv; i++) {
        const moeq_bench_gemv *g = &r.gemv[i];
        json_array_append_new(gv, json_pack("{ss si si sI sI sf sf sI sf sf}", "variant", g->variant, "bits", g->bits, "group", g->group,
                                            "rows", (json_int_t)g->rows, "cols", (json_int_t)g->cols, "gbs", g->gbs,
                                            "ratio_to_membw", g->ratio_to_membw, "mats", (json_int_t)g->mats,
                                            "gweights_s", g->gweights_s, "ms_per_matrix", g->ms_per_matrix));
    }
    for (int i = 0; i < r.ngemm; i++) {
        const moeq_bench_gemm *g = &r.gemm[i];
        json_array_append_new(gm, json_pack("{si si sI sI sI sf sf sf sf sf}", "bits", g->bits, "group", g->group,
                                            "rows", (json_int_t)g->rows, "cols", (json_int_t)g->cols,
                                            "batch", (json_int_t)g->batch, "gflops", g->gflops,
                                            "ratio_to_sgemm", g->ratio_to_sgemm,
                                            "ratio_to_dequant_sgemm", g->ratio_to_dequant_sgemm,
                                            "sgemm_gflops", g->sgemm_gflops,
                                            "dequant_sgemm_gflops", g->dequant_sgemm_gflops));
    }
    json_object_set_new(o, "gemv", gv);
    json_object_set_new(o, "gemm", gm);
    return tool_print_json(o);
}
