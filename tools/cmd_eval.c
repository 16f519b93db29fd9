/* moeq eval MODEL --tokens F [--ref MODEL]: perplexity and agreement with a reference. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common.h"
#include "moeq_core.h"
#include "moeq_eval.h"
#include "moeq_kernels.h"
#include "moeq_tokenizer.h"

static const char *EVAL_HELP =
    "usage: moeq eval MODEL (--tokens FILE | --text FILE) [--ctx N] [--max-tokens N]\n"
    "                 [--ref MODEL] [--threads N] [--json] [-q]\n"
    "       moeq eval MODEL --task FILE [--task-format jsonl|hellaswag|winogrande] [--limit N]\n"
    "                 [--ref MODEL] [--task-dump FILE] [--threads N] [--json] [-q]\n\n"
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
    "                    tokens_per_s, threads, kernels, and with --ref: ppl_ref, ppl_ratio,\n"
    "                    kld_mean, kld_median, kld_p99, same_top1, delta_p_rms\n"
    "  -q                no human-readable text or progress\n\n"
    "Multiple-choice tasks (docs/eval.md, \"Tasks\"): each choice is scored as the sum of the\n"
    "log-probabilities of its tokens after the context (lm-evaluation-harness's loglikelihood);\n"
    "acc picks the highest sum, acc_norm the highest sum per UTF-8 byte of the choice.\n"
    "  --task FILE       the tasks: jsonl ({\"context\", \"choices\": [...], \"gold\", \"id\"?} per\n"
    "                    line), or llama.cpp's hellaswag text or winogrande CSV\n"
    "  --task-format F   jsonl, hellaswag or winogrande (default: by extension .jsonl, .txt, .csv)\n"
    "  --limit N         the first N tasks\n"
    "  --ref MODEL       with --task: agreement of the picks, acc_diff and its paired stderr\n"
    "  --task-dump FILE  every request as JSON: tokens, ll, greedy, nbytes, the picks\n"
    "  --task-pack N     tokens per forward pass, tasks packed together (default 512)\n"
    "  --task-unshared   each choice in its own plain pass (no prefix sharing; for checking)\n"
    "  --json            with --task: tasks, acc, acc_stderr, acc_norm, acc_norm_stderr,\n"
    "                    requests, scored_tokens, tasks_per_s, scored_tokens_per_s, kernels; with --ref:\n"
    "                    agreement, acc_diff, acc_diff_stderr, acc_ref, acc_norm_ref, ...\n";

static void progress(void *user, int64_t window, int64_t windows, double tps, double ppl)
{
    (void)user;
    fprintf(stderr, "\r[%lld/%lld] %.0f tokens/s, ppl %.4f   ", (long long)window, (long long)windows, tps, ppl);
    if (window == windows) fputc('\n', stderr);
    fflush(stderr);
}

static void task_progress(void *user, int64_t done, int64_t total, double tps)
{
    (void)user;
    fprintf(stderr, "\r[%lld/%lld] %.1f tasks/s   ", (long long)done, (long long)total, tps);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

/* JSON numbers; a standard error of fewer than 2 tasks is NaN, written as null */
static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *ids_json(const int32_t *v, int64_t n)
{
    json_t *a = json_array();
    for (int64_t i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

/* --task-dump: per task and request, what was scored (tests compare it to transformers) */
static int write_dump(const char *out, const char *task_path, const moeq_task_set *ts, const moeq_task_result *res)
{
    json_t *o = json_object(), *tasks = json_array();
    json_object_set_new(o, "format", json_string(moeq_task_format_name(ts->format)));
    json_object_set_new(o, "file", json_string(task_path));
    json_object_set_new(o, "acc", num(res->acc));
    json_object_set_new(o, "acc_norm", num(res->acc_norm));
    for (int64_t i = 0; i < res->tasks; i++) {
        const moeq_task *t = &ts->tasks[i];
        const moeq_task_score *s = &res->per_task[i];
        json_t *tj = json_object(), *reqs = json_array();
        json_object_set_new(tj, "id", json_string(t->id));
        json_object_set_new(tj, "line", json_integer(t->line));
        json_object_set_new(tj, "gold", json_integer(t->gold));
        json_object_set_new(tj, "pick", json_integer(s->pick));
        json_object_set_new(tj, "pick_norm", json_integer(s->pick_norm));
        if (res->has_ref) {
            json_object_set_new(tj, "pick_ref", json_integer(s->pick_ref));
            json_object_set_new(tj, "pick_norm_ref", json_integer(s->pick_norm_ref));
        }
        for (int32_t k = 0; k < t->n_req; k++) {
            const moeq_task_req_score *r = &s->req[k];
            json_t *rj = json_object();
            json_object_set_new(rj, "context_tokens", ids_json(r->ctx_tokens, r->n_ctx));
            json_object_set_new(rj, "continuation_tokens", ids_json(r->cont_tokens, r->n_cont));
            json_object_set_new(rj, "ll", num(r->ll));
            json_object_set_new(rj, "greedy", json_boolean(r->greedy));
            json_object_set_new(rj, "nbytes", json_integer(r->nbytes));
            if (res->has_ref) json_object_set_new(rj, "ll_ref", num(r->ll_ref));
            json_array_append_new(reqs, rj);
        }
        json_object_set_new(tj, "requests", reqs);
        json_array_append_new(tasks, tj);
    }
    json_object_set_new(o, "tasks", tasks);
    int bad = json_dump_file(o, out, JSON_COMPACT) != 0;
    json_decref(o);
    if (bad) {
        fprintf(stderr, "moeq eval: I/O error: %s: cannot write the task dump\n", out);
        return 4;
    }
    return 0;
}

static int run_tasks(const tool_common *tc, const char *path, const char *ref_path, const char *task_path,
                     int fmt, const char *dump, const moeq_task_opts *opts)
{
    moeq_error err = {0};
    moeq_model *m = NULL, *ref = NULL;
    moeq_task_set *ts = NULL;
    moeq_task_result res = {0};
    int rc = 0;
    if (moeq_tasks_load(task_path, (moeq_task_format)fmt, &ts, &err) != MOEQ_OK ||
        moeq_model_open(path, &m, &err) != MOEQ_OK ||
        (ref_path && moeq_model_open(ref_path, &ref, &err) != MOEQ_OK) ||
        moeq_task_eval(m, ref, ts, task_path, opts, &res, &err) != MOEQ_OK) {
        rc = tool_report("eval", &err);
        goto done;
    }
    FILE *h = tool_human(tc);
    if (h) {
        fprintf(h, "model      %s\n", path);
        fprintf(h, "tasks      %lld of %s (%s), %lld requests, %lld scored tokens\n", (long long)res.tasks,
                task_path, moeq_task_format_name(ts->format), (long long)res.requests, (long long)res.scored_tokens);
        fprintf(h, "acc        %.4f +- %.4f\n", res.acc, res.acc_stderr);
        fprintf(h, "acc_norm   %.4f +- %.4f\n", res.acc_norm, res.acc_norm_stderr);
        if (res.has_ref) {
            fprintf(h, "reference  %s: acc %.4f, acc_norm %.4f\n", ref_path, res.acc_ref, res.acc_norm_ref);
            fprintf(h, "agreement  %.4f (acc_norm picks %.4f)\n", res.agreement, res.agreement_norm);
            fprintf(h, "acc diff   %+.4f +- %.4f (acc_norm %+.4f +- %.4f)\n", res.acc_diff, res.acc_diff_stderr,
                    res.acc_norm_diff, res.acc_norm_diff_stderr);
        }
        fprintf(h, "speed      %.1f tasks/s, %.0f scored tokens/s (%lld passes of %lld tokens, %d threads, %s kernels)\n",
                res.tasks_per_s, res.scored_tokens_per_s, (long long)res.passes, (long long)res.packed_tokens,
                moeq_threads(), moeq_kernels()->name);
    }
    if (dump && (rc = write_dump(dump, task_path, ts, &res))) goto done;
    if (tc->json) {
        json_t *o = json_object();
        json_object_set_new(o, "format", json_string(moeq_task_format_name(ts->format)));
        json_object_set_new(o, "tasks", json_integer(res.tasks));
        json_object_set_new(o, "acc", num(res.acc));
        json_object_set_new(o, "acc_stderr", num(res.acc_stderr));
        json_object_set_new(o, "acc_norm", num(res.acc_norm));
        json_object_set_new(o, "acc_norm_stderr", num(res.acc_norm_stderr));
        json_object_set_new(o, "requests", json_integer(res.requests));
        json_object_set_new(o, "scored_tokens", json_integer(res.scored_tokens));
        json_object_set_new(o, "passes", json_integer(res.passes));
        json_object_set_new(o, "packed_tokens", json_integer(res.packed_tokens));
        json_object_set_new(o, "tasks_per_s", num(res.tasks_per_s));
        json_object_set_new(o, "scored_tokens_per_s", num(res.scored_tokens_per_s));
        json_object_set_new(o, "threads", json_integer(moeq_threads()));
        json_object_set_new(o, "kernels", json_string(moeq_kernels()->name));
        if (res.has_ref) {
            json_object_set_new(o, "agreement", num(res.agreement));
            json_object_set_new(o, "agreement_norm", num(res.agreement_norm));
            json_object_set_new(o, "acc_diff", num(res.acc_diff));
            json_object_set_new(o, "acc_diff_stderr", num(res.acc_diff_stderr));
            json_object_set_new(o, "acc_norm_diff", num(res.acc_norm_diff));
            json_object_set_new(o, "acc_norm_diff_stderr", num(res.acc_norm_diff_stderr));
            json_object_set_new(o, "acc_ref", num(res.acc_ref));
            json_object_set_new(o, "acc_norm_ref", num(res.acc_norm_ref));
        }
        rc = tool_print_json(o);
    }
done:
    moeq_task_result_free(&res);
    moeq_tasks_free(ts);
    moeq_model_close(m);
    moeq_model_close(ref);
    return rc;
}

int cmd_eval(int argc, char **argv)
{
    tool_common tc = {0};
    const char *path = NULL, *tokens_path = NULL, *text_path = NULL, *ref_path = NULL;
    const char *task_path = NULL, *task_format = NULL, *dump = NULL;
    int64_t ctx = 512, max_tokens = 0, limit = 0, pack = 512;
    int unshared = 0, ctx_given = 0;
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
            ctx_given = 1;
        } else if (!strcmp(a, "--task")) {
            if (!(task_path = tool_value("eval", argc, argv, &i))) return 1;
        } else if (!strcmp(a, "--task-format")) {
            if (!(task_format = tool_value("eval", argc, argv, &i))) return 1;
        } else if (!strcmp(a, "--task-dump")) {
            if (!(dump = tool_value("eval", argc, argv, &i))) return 1;
        } else if (!strcmp(a, "--limit")) {
            if (!(v = tool_value("eval", argc, argv, &i)) || tool_parse_int("eval", a, v, 1, &limit)) return 1;
        } else if (!strcmp(a, "--task-pack")) {
            if (!(v = tool_value("eval", argc, argv, &i)) || tool_parse_int("eval", a, v, 1, &pack)) return 1;
        } else if (!strcmp(a, "--task-unshared")) {
            unshared = 1;
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
    if (task_path) {
        if (tokens_path || text_path || ctx_given || max_tokens)
            return tool_usage_error("eval", "--task does not go with --tokens, --text, --ctx or --max-tokens");
        int fmt = task_format ? moeq_task_format_from_name(task_format) : moeq_task_format_from_path(task_path);
        if (fmt < 0 && task_format)
            return tool_usage_error("eval", "--task-format %s: not jsonl, hellaswag or winogrande", task_format);
        if (fmt < 0)
            return tool_usage_error("eval", "cannot tell the format of %s from its extension (.jsonl, .txt, .csv); "
                                    "give --task-format", task_path);
        tc.progress = !tc.quiet && isatty(2);
        moeq_threads_init(tc.threads);
        moeq_task_opts topts = {.limit = limit, .pack = pack, .unshared = unshared, .threads = moeq_threads(),
                                .progress = tc.progress ? task_progress : NULL};
        return run_tasks(&tc, path, ref_path, task_path, fmt, dump, &topts);
    }
    if (task_format || dump || limit || unshared || pack != 512)
        return tool_usage_error("eval", "--task-format, --task-dump, --limit, --task-pack and --task-unshared "
                                "go with --task");
    if (!tokens_path && !text_path) return tool_usage_error("eval", "give --tokens FILE, --text FILE or --task FILE");
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
        fprintf(h, "speed      %.1f tokens/s (%d threads, %s kernels)\n", res.tokens_per_s, moeq_threads(),
                moeq_kernels()->name);
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
        json_object_set_new(o, "kernels", json_string(moeq_kernels()->name));
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
