/* moeq bench eval MODEL: forward-pass speed of moeq eval in one run (docs/bench.md, "Eval"):
 * bf16 and packed weights at ctx 256 and 512, with OPENBLAS_CORETYPE set and unset, KLD of each
 * fast kernel variant against the plain-C reference kernels, calibrate against eval, and an
 * optional llama.cpp / ik_llama.cpp llama-perplexity peer on the same text. Every figure comes
 * from a child process (moeq eval, moeq calibrate, the peer) run alternately in this run, so
 * the environment of each is its own; this file only starts them and divides their results. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common.h"
#include "moeq_core.h"
#include "moeq_eval.h"
#include "moeq_kernels.h"

static const char *HELP =
    "usage: moeq bench eval MODEL (--tokens F | --text F) [--packed F.moeq] [--ctx-list 256,512]\n"
    "       [--max-tokens N] [--reps N] [--kld-tokens N] [--peer PATH --peer-model F.gguf --text F]\n"
    "       [--peer-packed F.gguf] [--no-calibrate] [--threads N] [--json] [-q]\n\n"
    "Runs `moeq eval` on MODEL (bf16/f16/f32 as stored) and on a packed copy (--packed, else a\n"
    "4-bit g64 RTN copy of the routed experts quantized into a temporary directory) at each ctx,\n"
    "each with OPENBLAS_CORETYPE as in the environment (Haswell when unset) and without it,\n"
    "alternately, best of --reps (default 2) runs of --max-tokens tokens (default 4096).\n"
    "KLD: `moeq eval PACKED --ref MODEL` over --kld-tokens (default 16384: on a trained model\n"
    "the ratio of 4,096 tokens moved between 1.00 and 1.05 with the text) with each fast kernel\n"
    "variant this CPU has and with MOEQ_KERNEL=ref; ratio = fast / ref (target <= 1.05).\n"
    "Calibrate: `moeq calibrate MODEL` over the same tokens at the first ctx, its tokens_per_s (as\n"
    "eval's: loading and tokenizing left out), best of --reps, / eval's bf16 tokens/s.\n"
    "--peer PATH: a llama-perplexity binary run on --peer-model (the same weights as GGUF) over\n"
    "the --text file at the same ctx and threads, --max-tokens / ctx windows (--chunks); its\n"
    "tokens/s from \"prompt eval time = T ms / N tokens\" (asked for with -lv 4), else from its\n"
    "first pass's \"seconds per pass\", and moeq's / peer's. Its runs and calibrate's alternate with\n"
    "moeq's evals (each after the ctx and weights it is compared with), best of --reps: ratios of\n"
    "runs made minutes apart on a shared machine measure its load. Exit 2 when the peer fails or\n"
    "prints neither.\n"
    "--peer-packed F.gguf: the peer's model for the packed weights (e.g. the packed copy exported\n"
    "with `moeq export gguf`); without it both moeq runs are compared with --peer-model.\n"
    "--threads N: threads of every run (default 2).\n"
    "OPENBLAS_CORETYPE: ratio = best unset / best set; paired = the median over reps of each\n"
    "rep's unset / set, the two runs back to back and in turn first (one slow run on a shared\n"
    "machine moves the first, not the second).\n"
    "JSON: runs [{weights, ctx, tokens_per_s, tokens_per_s_no_coretype, coretype_ratio,\n"
    "coretype_ratio_paired,\n"
    "peer_tokens_per_s, ratio}], kld [{kernel, kld_mean, kld_mean_ref, ratio}],\n"
    "calibrate_tokens_per_s, calibrate_ratio_to_eval, threads.\n";

/* Runs argv with env changes (unset: a variable removed; set: "NAME=VALUE" entries), stdout
 * into buf (NUL-terminated, truncated at cap). Returns the exit status, -1 if it did not run. */
static int run_child(char *const *argv, const char *unset, char *const *set, int nset, char *buf, size_t cap,
                     double *seconds)
{
    int fd[2];
    if (pipe(fd)) return -1;
    double t0 = moeq_now();
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 1);
        if (unset) unsetenv(unset);
        if (getenv("MOEQ_WAIT_CHOSEN")) {   /* the wait policy moeq chose for itself (moeq.c) */
            unsetenv("OMP_WAIT_POLICY");
            unsetenv("GOMP_SPINCOUNT");
            unsetenv("MOEQ_WAIT_CHOSEN");
        }
        for (int i = 0; i < nset; i++) putenv(set[i]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fd[1]);
    size_t len = 0;
    ssize_t k;
    char sink[4096];
    while ((k = read(fd[0], len + 1 < cap ? buf + len : sink, len + 1 < cap ? cap - 1 - len : sizeof sink)) > 0)
        if (len + 1 < cap) len += (size_t)k;
    buf[len] = 0;
    close(fd[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (seconds) *seconds = moeq_now() - t0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char self_path[4096];

/* moeq eval (h5 NULL) or moeq calibrate -o h5 as a child: returns its JSON key `key` (NaN on
 * failure). Both report tokens_per_s over their own work (model loading and tokenizing left out). */
static double child_run(const char *h5, const char *model, const char *ref, const char *tok_opt, const char *tok_path,
                        int64_t ctx, int64_t max_tokens, int threads, const char *unset, char *const *set, int nset,
                        const char *key)
{
    char c[32], m[32], t[32];
    snprintf(c, sizeof c, "%lld", (long long)ctx);
    snprintf(m, sizeof m, "%lld", (long long)max_tokens);
    snprintf(t, sizeof t, "%d", threads);
    char *argv[20];
    int a = 0;
    argv[a++] = self_path; argv[a++] = h5 ? "calibrate" : "eval"; argv[a++] = (char *)model;
    argv[a++] = (char *)tok_opt; argv[a++] = (char *)tok_path;
    argv[a++] = "--ctx"; argv[a++] = c; argv[a++] = "--max-tokens"; argv[a++] = m;
    argv[a++] = "--threads"; argv[a++] = t; argv[a++] = "--json"; argv[a++] = "-q";
    if (ref) { argv[a++] = "--ref"; argv[a++] = (char *)ref; }
    if (h5) { argv[a++] = "-o"; argv[a++] = (char *)h5; }
    argv[a] = NULL;
    static char buf[1 << 20];   /* calibrate's JSON lists every layer */
    if (run_child(argv, unset, set, nset, buf, sizeof buf, NULL) != 0) return NAN;
    json_t *o = json_loads(buf, 0, NULL);
    double v = o ? json_number_value(json_object_get(o, key)) : NAN;
    if (o && !json_object_get(o, key)) v = NAN;
    json_decref(o);
    return v;
}

/* The peer's prompt-processing rate, from what llama-perplexity prints (stdout and stderr merged):
 * 1. llama_perf_context_print's "prompt eval time = T ms / N tokens (...)": N / T, every
 *    decoded window counted (llama.cpp and ik_llama.cpp builds that print it);
 * 2. else its first pass's "X seconds per pass" (builds whose library log hides the perf lines):
 *    one pass decodes `pass_tokens` tokens (-b ctx: one window), the pass timed by the tool.
 * Returns tokens/s, or NaN with *how naming the line that was missing. */
static double peer_rate(const char *out, int64_t pass_tokens, const char **how)
{
    const char *p = strstr(out, "prompt eval time");
    if (p) {
        const char *eq = strchr(p, '=');
        char *end;
        double ms = eq ? strtod(eq + 1, &end) : 0;
        const char *slash = eq ? strchr(eq, '/') : NULL;
        double n = slash ? strtod(slash + 1, &end) : 0;
        if (ms > 0 && n > 0) {
            *how = "prompt eval time";
            return n * 1e3 / ms;
        }
    }
    for (const char *s = strstr(out, "seconds per pass"); s; s = NULL) {
        const char *b = s;
        while (b > out && b[-1] == ' ') b--;
        const char *e = b;
        while (b > out && (b[-1] == '.' || (b[-1] >= '0' && b[-1] <= '9'))) b--;
        if (b == e) break;
        double sec = atof(b);
        if (sec > 0) {
            *how = "seconds per pass";
            return (double)pass_tokens / sec;
        }
    }
    *how = NULL;
    return NAN;
}

/* The last `lines` lines of a child's output, for a message. */
static const char *tail_lines(const char *out, int lines)
{
    const char *e = out + strlen(out);
    while (e > out && e[-1] == '\n') e--;
    const char *s = e;
    while (s > out && lines > 0)
        if (*--s == '\n') lines--;
    return s == out ? s : s + 1;
}

/* One llama-perplexity run over `chunks` windows of ctx tokens (moeq eval's --max-tokens); NaN,
 * with a message on stderr naming the reason and the peer's last lines, when it fails or prints no
 * speed. llama.cpp since 2026 logs its library's perf lines only at verbosity 4 (`-lv 4`): asked
 * for first, and the run repeated without it when the peer refuses the option. */
static double peer_run(const char *peer, const char *gguf, const char *text, int64_t ctx, int64_t chunks,
                       int threads)
{
    static char buf[1 << 20];
    int rc = -1;
    for (int verbose = 1; verbose >= 0; verbose--) {
        char cmd[8192];
        /* the peer prints its timings on stderr: run it through sh to merge them into the pipe */
        snprintf(cmd, sizeof cmd, "exec \"$0\" -m \"$1\" -f \"$2\" -c %lld -b %lld -t %d --chunks %lld%s 2>&1",
                 (long long)ctx, (long long)ctx, threads, (long long)(chunks > 0 ? chunks : 1),
                 verbose ? " -lv 4" : "");
        char *argv[] = {"/bin/sh", "-c", cmd, (char *)peer, (char *)gguf, (char *)text, NULL};
        rc = run_child(argv, NULL, NULL, 0, buf, sizeof buf, NULL);
        if (rc == 0) break;
    }
    if (rc != 0) {
        fprintf(stderr, "moeq bench eval: the peer %s on %s (ctx %lld) exited with status %d; its last lines:\n%s\n",
                peer, gguf, (long long)ctx, rc, tail_lines(buf, 8));
        return NAN;
    }
    const char *how;
    double v = peer_rate(buf, ctx, &how);
    if (v != v)
        fprintf(stderr,
                "moeq bench eval: the peer %s on %s (ctx %lld) printed no speed (neither a \"prompt eval time = T ms / "
                "N tokens\" line nor \"X seconds per pass\"); its last lines:\n%s\n",
                peer, gguf, (long long)ctx, tail_lines(buf, 8));
    return v;
}

static int parse_ctx_list(const char *s, int64_t *ctx, int max)
{
    int n = 0;
    while (*s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 2) return -1;
        ctx[n++] = v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

int cmd_bench_eval(int argc, char **argv)
{
    tool_common tc = {0};
    const char *model = NULL, *packed = NULL, *tokens = NULL, *text = NULL, *peer = NULL, *peer_model = NULL;
    const char *peer_packed = NULL;
    const char *ctx_list = "256,512";
    /* kld_tokens: on the trained q3-512 one 256-token window gave vnni 1.10 x the reference's
     * KLD and 16,384 tokens 1.018; five 4,096-token pieces of its text gave bf16 1.00-1.05
     * (docs/bench.md) */
    int64_t max_tokens = 4096, reps = 2, kld_tokens = 16384;
    int calibrate = 1;
    tc.threads = 2;
    for (int i = 1; i < argc; i++) {
        int r = tool_common_option("bench eval", argc, argv, &i, &tc);
        if (r < 0) return 1;
        if (r) continue;
        const char *a = argv[i], *v;
        if (!strcmp(a, "--packed")) { if (!(packed = tool_value("bench eval", argc, argv, &i))) return 1; }
        else if (!strcmp(a, "--tokens")) { if (!(tokens = tool_value("bench eval", argc, argv, &i))) return 1; }
        else if (!strcmp(a, "--text")) { if (!(text = tool_value("bench eval", argc, argv, &i))) return 1; }
        else if (!strcmp(a, "--peer")) { if (!(peer = tool_value("bench eval", argc, argv, &i))) return 1; }
        else if (!strcmp(a, "--peer-model")) { if (!(peer_model = tool_value("bench eval", argc, argv, &i))) return 1; }
        else if (!strcmp(a, "--peer-packed")) { if (!(peer_packed = tool_value("bench eval", argc, argv, &i))) return 1; }
        else if (!strcmp(a, "--ctx-list")) { if (!(ctx_list = tool_value("bench eval", argc, argv, &i))) return 1; }
        else if (!strcmp(a, "--no-calibrate")) calibrate = 0;
        else if (!strcmp(a, "--max-tokens") || !strcmp(a, "--reps") || !strcmp(a, "--kld-tokens")) {
            int64_t *dst = a[2] == 'm' ? &max_tokens : a[2] == 'r' ? &reps : &kld_tokens;
            if (!(v = tool_value("bench eval", argc, argv, &i)) || tool_parse_int("bench eval", a, v, 0, dst)) return 1;
        } else if (a[0] == '-' && a[1]) return tool_usage_error("bench eval", "unknown option %s", a);
        else if (model) return tool_usage_error("bench eval", "one MODEL only (got '%s' and '%s')", model, a);
        else model = a;
    }
    if (tc.help) { fputs(HELP, stdout); return 0; }
    if (!model) return tool_usage_error("bench eval", "missing MODEL");
    if (!tokens && !text) return tool_usage_error("bench eval", "give --tokens FILE or --text FILE");
    if (peer && (!peer_model || !text)) return tool_usage_error("bench eval", "--peer needs --peer-model F.gguf and --text F");
    if (peer_packed && !peer) return tool_usage_error("bench eval", "--peer-packed needs --peer PATH");
    int64_t ctx[8];
    int nctx = parse_ctx_list(ctx_list, ctx, 8);
    if (nctx <= 0) return tool_usage_error("bench eval", "--ctx-list '%s' is not a list of integers >= 2", ctx_list);
    if (reps < 1) reps = 1;
    ssize_t sl = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    if (sl <= 0) {
        fprintf(stderr, "moeq bench eval: cannot find its own executable\n");
        return 4;
    }
    self_path[sl] = 0;
    const char *tok_opt = tokens ? "--tokens" : "--text", *tok_path = tokens ? tokens : text;
    const int threads = tc.threads > 0 ? tc.threads : 2;
    FILE *h = tool_human(&tc);

    /* the packed copy: a 4-bit g64 RTN quantization in a temporary directory */
    char tmpdir[] = "/tmp/moeq-bench-eval-XXXXXX", qpath[4200] = "", h5[4200] = "";
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "moeq bench eval: cannot create a temporary directory: %s\n", strerror(errno));
        return 4;
    }
    static char buf[1 << 16];
    if (!packed) {
        snprintf(qpath, sizeof qpath, "%s/q4g64.moeq", tmpdir);
        char *qa[] = {self_path, "quantize", (char *)model, "--bits", "4", "--group", "64", "-o", qpath, "-q", NULL};
        if (h) fprintf(h, "quantizing a 4-bit g64 copy into %s\n", qpath);
        if (run_child(qa, NULL, NULL, 0, buf, sizeof buf, NULL) != 0) {
            fprintf(stderr, "moeq bench eval: moeq quantize %s failed\n", model);
            rmdir(tmpdir);
            return 2;
        }
        packed = qpath;
    }
    const char *ct = getenv("OPENBLAS_CORETYPE");
    char ctset[64];
    snprintf(ctset, sizeof ctset, "OPENBLAS_CORETYPE=%.40s", ct && *ct ? ct : "Haswell");
    char *set_ct[] = {ctset};
    const char *wname[2] = {"bf16", "packed"}, *wpath[2] = {model, packed};
    double tps[8][2][2];   /* ctx, weights, coretype set / unset: best of reps */
    double pairs[8][2][64];   /* ctx, weights, rep (the first 64): that rep's unset / set */
    double paired[8][2];      /* their median */
    for (int c = 0; c < nctx; c++)
        for (int w = 0; w < 2; w++) tps[c][w][0] = tps[c][w][1] = NAN;
    int failed = 0;
    double cal_tps = NAN;
    if (calibrate) snprintf(h5, sizeof h5, "%s/calib.h5", tmpdir);
    /* the peer's runs alternate with moeq's (after each ctx and weights' pair), best of reps like
     * moeq's: a shared machine's load moves by tens of percent over minutes, and a ratio of two
     * phases run minutes apart measured that, not the programs */
    double peer_tps[8][2];   /* ctx, weights (the packed ones on --peer-packed when given) */
    for (int c = 0; c < nctx; c++) peer_tps[c][0] = peer_tps[c][1] = NAN;
    int peer_failed = 0;
    for (int64_t rep = 0; rep < reps; rep++)
        for (int c = 0; c < nctx; c++)
            for (int w = 0; w < 2; w++) {
                double rv[2] = {NAN, NAN};
                /* set then unset, and the other way round every other rep: the second run of a
                 * pair was the faster one on the Zen 5 VM whatever the variable */
                for (int ee = 0; ee < 2; ee++) {
                    const int e = rep & 1 ? 1 - ee : ee;
                    double v = rv[e] = child_run(NULL, wpath[w], NULL, tok_opt, tok_path, ctx[c], max_tokens, threads,
                                          e ? "OPENBLAS_CORETYPE" : NULL, e ? NULL : set_ct, e ? 0 : 1, "tokens_per_s");
                    if (v != v) failed = 1;
                    else if (!(tps[c][w][e] >= v)) tps[c][w][e] = v;
                    if (h) fprintf(h, "  run %lld: %-6s ctx %4lld %-28s %8.1f tokens/s\n", (long long)rep + 1, wname[w],
                                   (long long)ctx[c], e ? "OPENBLAS_CORETYPE unset" : ctset, v);
                }
                if (rep < 64) pairs[c][w][rep] = rv[1] / rv[0];
                const char *pg = w ? peer_packed : peer_model;
                if (peer && pg) {
                    double v = peer_run(peer, pg, text, ctx[c], max_tokens / ctx[c], threads);
                    if (v != v) peer_failed = 1;
                    else if (!(peer_tps[c][w] >= v)) peer_tps[c][w] = v;
                    if (h) fprintf(h, "  run %lld: peer ctx %4lld %s %8.1f tokens/s\n", (long long)rep + 1, (long long)ctx[c], pg, v);
                }
                if (calibrate && c == 0 && w == 0) {   /* calibrate beside the eval it is compared with */
                    double cv = child_run(h5, model, NULL, tok_opt, tok_path, ctx[0], max_tokens, threads, NULL, set_ct, 1,
                                          "tokens_per_s");
                    unlink(h5);
                    if (!(cal_tps >= cv)) cal_tps = cv;
                    if (h) fprintf(h, "  run %lld: calibrate ctx %4lld %8.1f tokens/s\n", (long long)rep + 1, (long long)ctx[0], cv);
                }
            }
    for (int c = 0; peer && !peer_packed && c < nctx; c++) peer_tps[c][1] = peer_tps[c][0];
    for (int c = 0; c < nctx; c++)
        for (int w = 0; w < 2; w++) {
            double v[64];
            int64_t nv = 0;
            for (int64_t r = 0; r < reps && r < 64; r++)
                if (pairs[c][w][r] == pairs[c][w][r]) v[nv++] = pairs[c][w][r];
            paired[c][w] = nv ? moeq_quantile_inplace(v, nv, 0.5) : NAN;
        }

    /* KLD of the packed model against MODEL with each fast variant and with the reference */
    enum { NV = 8 };
    const char *variants[NV] = {"ref", "avx2", "avx512", "vnni", "bf16", "bf16x2", "bf16f", "amx"};
    double kld[NV];
    char kset[NV][48];
    for (int k = 0; k < NV; k++) {
        kld[k] = NAN;
        if (k && !moeq_kernels_get(variants[k])) continue;
        snprintf(kset[k], sizeof kset[k], "MOEQ_KERNEL=%s", variants[k]);
        char *ks[] = {kset[k], ctset};
        kld[k] = child_run(NULL, packed, model, tok_opt, tok_path, ctx[0], kld_tokens, threads, NULL, ks, 2, "kld_mean");
        if (h) fprintf(h, "  KLD packed vs %s, %-6s kernels, %lld tokens: %.6g\n", model, variants[k],
                       (long long)kld_tokens, kld[k]);
    }

    if (qpath[0]) unlink(qpath);
    rmdir(tmpdir);

    if (h) {
        fprintf(h, "moeq bench eval %s: %d threads, best of %lld, %lld tokens per run\n", model, threads,
                (long long)reps, (long long)max_tokens);
        fprintf(h, "weights  ctx  tokens/s  no CORETYPE  ratio  paired   peer tokens/s  moeq/peer\n");
        for (int c = 0; c < nctx; c++)
            for (int w = 0; w < 2; w++)
                fprintf(h, "%-7s %4lld  %8.1f  %11.1f  %5.3f  %6.3f  %13.1f  %9.3f\n", wname[w], (long long)ctx[c],
                        tps[c][w][0], tps[c][w][1], tps[c][w][1] / tps[c][w][0], paired[c][w], peer_tps[c][w],
                        tps[c][w][0] / peer_tps[c][w]);
        for (int k = 1; k < NV; k++)
            if (kld[k] == kld[k])
                fprintf(h, "KLD packed vs bf16: %s %.6g, ref %.6g, ratio %.4f (target <= 1.05)\n", variants[k], kld[k],
                        kld[0], kld[k] / kld[0]);
        if (calibrate)
            fprintf(h, "calibrate %.1f tokens/s, %.3f x eval bf16 ctx %lld (target >= 0.8)\n", cal_tps,
                    cal_tps / tps[0][0][0], (long long)ctx[0]);
    }
    if (tc.json) {
        json_t *o = json_object(), *runs = json_array(), *kl = json_array();
        json_object_set_new(o, "threads", json_integer(threads));
        for (int c = 0; c < nctx; c++)
            for (int w = 0; w < 2; w++) {
                json_t *r = json_object();
                json_object_set_new(r, "weights", json_string(wname[w]));
                json_object_set_new(r, "ctx", json_integer(ctx[c]));
                json_object_set_new(r, "tokens_per_s", tps[c][w][0] == tps[c][w][0] ? json_real(tps[c][w][0]) : json_null());
                json_object_set_new(r, "tokens_per_s_no_coretype",
                                    tps[c][w][1] == tps[c][w][1] ? json_real(tps[c][w][1]) : json_null());
                double cr = tps[c][w][1] / tps[c][w][0];
                json_object_set_new(r, "coretype_ratio", cr == cr ? json_real(cr) : json_null());
                json_object_set_new(r, "coretype_ratio_paired",
                                    paired[c][w] == paired[c][w] ? json_real(paired[c][w]) : json_null());
                json_object_set_new(r, "peer_tokens_per_s",
                                    peer_tps[c][w] == peer_tps[c][w] ? json_real(peer_tps[c][w]) : json_null());
                double pr = tps[c][w][0] / peer_tps[c][w];
                json_object_set_new(r, "ratio", pr == pr ? json_real(pr) : json_null());
                json_array_append_new(runs, r);
            }
        for (int k = 1; k < NV; k++)
            if (kld[k] == kld[k])
                json_array_append_new(kl, json_pack("{ss sf sf sf}", "kernel", variants[k], "kld_mean", kld[k],
                                                    "kld_mean_ref", kld[0], "ratio", kld[k] / kld[0]));
        json_object_set_new(o, "runs", runs);
        json_object_set_new(o, "kld", kl);
        json_object_set_new(o, "calibrate_tokens_per_s", cal_tps == cal_tps ? json_real(cal_tps) : json_null());
        double rr = cal_tps / tps[0][0][0];
        json_object_set_new(o, "calibrate_ratio_to_eval", rr == rr ? json_real(rr) : json_null());
        int rc = tool_print_json(o);
        if (rc) return rc;
    }
    if (failed) {
        fprintf(stderr, "moeq bench eval: a moeq eval run failed (run it alone to see why)\n");
        return 2;
    }
    if (peer_failed) {
        fprintf(stderr, "moeq bench eval: the peer gave no speed (its message is above)\n");
        return 2;
    }
    return 0;
}
