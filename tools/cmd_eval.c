/* moeq eval MODEL --tokens F [--ref MODEL]: perplexity and agreement with a reference. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common.h"
#include "moeq_core.h"
#include "moeq_eval.h"
#include "moeq_tokenizer.h"

static const char *EVAL_HELP =
    "usage: moeq eval MODEL (--tokens FILE | --text FILE) [--ctx N] [--max-tokens N]\n"
    "                 [--ref MODEL] [--threads N] [--json] [-q]\n\n"
    "Runs MODEL over non-overlapping windows of N tokens and reports the perplexity\n"
    "exp(mean NLL) of the next-token predictions inside each window (N-1 per window; a last\n"
    "partial window is dropped). With --ref, runs the reference on the same windows and adds\n"
    "llama.cpp's agreement metrics: PPL ratio, KL(ref || model) mean/median/p99, same top-1\n"
    "and the RMS of the change in the probability of the correct token.\n\n"
    "  --tokens FILE     token ids: a safetensors file with one 1-D I32/I64/U32 tensor, or raw\n"
    "                    little-endian uint32 (.bin, .u32)\n"
    "  --text FILE       UTF-8 text tokenized with MODEL's tokenizer.json (the ids of Hugging\n"
    "                    Face tokenizers' encode(text), special tokens included)\n"
    "  --ctx N           window length (default 512)\n"
    "  --max-tokens N    use at most the first N tokens\n"
    "  --ref MODEL       reference model (same vocabulary) for KLD / top-1 agreement\n"
    "  --threads N       worker threads (default: all cores; BLAS runs single-threaded inside)\n"
    "  --json            result as JSON on stdout: ppl, nll_mean, tokens, ctx, windows,\n"
    "                    tokens_per_s, and with --ref: ppl_ref, ppl_ratio, kld_mean, kld_median,\n"
    "                    kld_p99, same_top1, delta_p_rms\n"
    "  -q                no human-readable text or progress\n";

static void progress(void *user, int64_t window, int64_t windows, double tps, double ppl)
{
    (void)user;
    fprintf(stderr, "\r[%lld/%lld] %.0f tokens/s, ppl %.4f   ", (long long)window, (long long)windows, tps, ppl);
    if (window == windows) fputc('\n', stderr);
    fflush(stderr);
}

int cmd_eval(int argc, char **argv)
{
    tool_common tc = {0};
    const char *path = NULL, *tokens_path = NULL, *text_path = NULL, *ref_path = NULL;
    int64_t ctx = 512, max_tokens = 0;
    for (int i = 1; i < argc; i++) {
        int r = tool_common_option("eval", argc, argv, &i, &tc);
        if (r < 0) return 1;
        if (r) continue;
        const char *a = argv[i], *v;
        if (!strcmp(a, "--tokens")) {
            if (!(tokens_path = tool_value("eval", argc, argv, &i))) return 1;
        } else if (!strcmp(a, "--text")) {
            if (!(text_path = tool_value("eval", argc, argv, &i))) return 1;
        } else if (!strcmp(a, "--ref")) {
            if (!(ref_path = tool_value("eval", argc, argv, &i))) return 1;
        } else if (!strcmp(a, "--ctx")) {
            if (!(v = tool_value("eval", argc, argv, &i)) || tool_parse_int("eval", a, v, 2, &ctx)) return 1;
        } else if (!strcmp(a, "--max-tokens")) {
            if (!(v = tool_value("eval", argc, argv, &i)) || tool_parse_int("eval", a, v, 1, &max_tokens)) return 1;
        } else if (a[0] == '-' && a[1]) {
            return tool_usage_error("eval", "unknown option %s", a);
        } else if (path) {
            return tool_usage_error("eval", "one MODEL only (got '%s' and '%s')", path, a);
        } else {
            path = a;
        }
    }
    if (tc.help) { fputs(EVAL_HELP, stdout); return 0; }
    if (!path) return tool_usage_error("eval", "missing MODEL");
    if (!tokens_path && !text_path) return tool_usage_error("eval", "give --tokens FILE or --text FILE");
    if (tokens_path && text_path) return tool_usage_error("eval", "give --tokens or --text, not both");
    tc.progress = !tc.quiet && isatty(2);
    moeq_threads_init(tc.threads);

    moeq_error err = {0};
    moeq_model *m = NULL, *ref = NULL;
    int32_t *ids = NULL;
    int64_t n = 0;
    int rc = 0;
    if (moeq_model_open(path, &m, &err) != MOEQ_OK ||
        (ref_path && moeq_model_open(ref_path, &ref, &err) != MOEQ_OK) ||
        (tokens_path && moeq_tokens_load(tokens_path, moeq_model_config(m)->vocab, &ids, &n, &err) != MOEQ_OK) ||
        (text_path && moeq_model_tokenize_file(m, text_path, &ids, &n, &err) != MOEQ_OK)) {
        rc = tool_report("eval", &err);
        goto done;
    }
    moeq_eval_opts opts = {.ctx = ctx, .max_tokens = max_tokens, .threads = moeq_threads(),
                           .progress = tc.progress ? progress : NULL};
    moeq_eval_result res;
    if (moeq_eval(m, ref, ids, n, &opts, &res, &err) != MOEQ_OK) {
        rc = tool_report("eval", &err);
        goto done;
    }
    FILE *h = tool_human(&tc);
    if (h) {
        fprintf(h, "model      %s\n", path);
        fprintf(h, "windows    %lld x %lld tokens, %lld predictions\n", (long long)res.windows, (long long)res.ctx,
                (long long)res.tokens);
        fprintf(h, "ppl        %.4f (mean NLL %.6f)\n", res.ppl, res.nll_mean);
        if (res.has_ref) {
            fprintf(h, "ppl_ref    %.4f (%s), ratio %.6f\n", res.ppl_ref, ref_path, res.ppl_ratio);
            fprintf(h, "KLD        mean %.6f, median %.6f, p99 %.6f\n", res.kld_mean, res.kld_median, res.kld_p99);
            fprintf(h, "same top-1 %.4f%%\n", 100.0 * res.same_top1);
            fprintf(h, "delta-p    RMS %.4f%%\n", 100.0 * res.delta_p_rms);
        }
        fprintf(h, "speed      %.1f tokens/s (%d threads)\n", res.tokens_per_s, moeq_threads());
    }
    if (tc.json) {
        json_t *o = json_object();
        json_object_set_new(o, "ppl", json_real(res.ppl));
        json_object_set_new(o, "nll_mean", json_real(res.nll_mean));
        json_object_set_new(o, "tokens", json_integer(res.tokens));
        json_object_set_new(o, "ctx", json_integer(res.ctx));
        json_object_set_new(o, "windows", json_integer(res.windows));
        json_object_set_new(o, "tokens_per_s", json_real(res.tokens_per_s));
        json_object_set_new(o, "threads", json_integer(moeq_threads()));
        if (res.has_ref) {
            json_object_set_new(o, "ppl_ref", json_real(res.ppl_ref));
            json_object_set_new(o, "ppl_ratio", json_real(res.ppl_ratio));
            json_object_set_new(o, "kld_mean", json_real(res.kld_mean));
            json_object_set_new(o, "kld_median", json_real(res.kld_median));
            json_object_set_new(o, "kld_p99", json_real(res.kld_p99));
            json_object_set_new(o, "same_top1", json_real(res.same_top1));
            json_object_set_new(o, "delta_p_rms", json_real(res.delta_p_rms));
        }
        rc = tool_print_json(o);
    }
done:
    free(ids);
    moeq_model_close(m);
    moeq_model_close(ref);
    return rc;
}
