/* Task scoring (moeq eval --task) against eval's tokens/s for the same number of scored tokens,
 * both measured in this run, alternately, best of --reps: tasks/s, scored tokens/s, and their
 * ratio to eval's window tokens/s over ceil(scored / ctx) windows of ctx 512 (target >= 0.8).
 * Both times are wall clock around the library call (task: tokenization, packed passes and
 * scoring; eval: windows and their NLL). Also the packed path against --task-unshared.
 * usage: bench_task [--threads N] [--reps N] TASKFILE TOKENS MODEL [MODEL...]
 * Prints one line per model on stderr and a JSON object on stdout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "moeq_core.h"
#include "moeq_eval.h"
#include "moeq_safetensors.h"

int main(int argc, char **argv)
{
    int threads = 2, reps = 3, i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 1; }
    }
    if (argc - i < 3) {
        fprintf(stderr, "usage: bench_task [--threads N] [--reps N] TASKFILE TOKENS MODEL [MODEL...]\n");
        return 1;
    }
    const char *task_path = argv[i], *tok_path = argv[i + 1];
    moeq_threads_init(threads);
    moeq_error err = {0};
    moeq_task_set *ts = NULL;
    int fmt = moeq_task_format_from_path(task_path);
    if (fmt < 0 || moeq_tasks_load(task_path, (moeq_task_format)fmt, &ts, &err) != MOEQ_OK) {
        fprintf(stderr, "%s: %s\n", task_path, fmt < 0 ? "unknown format" : err.detail);
        return 2;
    }
    printf("{\"task_file\": \"%s\", \"threads\": %d, \"runs\": [", task_path, threads);
    int rc = 0;
    for (int a = i + 2; a < argc; a++) {
        moeq_model *m = NULL;
        int32_t *ids = NULL;
        int64_t n = 0;
        if (moeq_model_open(argv[a], &m, &err) != MOEQ_OK ||
            moeq_tokens_load(tok_path, moeq_model_config(m)->vocab, &ids, &n, &err) != MOEQ_OK) {
            fprintf(stderr, "%s: %s\n", argv[a], err.detail);
            rc = 2;
            moeq_model_close(m);
            continue;
        }
        double best_task = 1e30, best_eval = 1e30, best_unshared = 1e30;
        moeq_task_result tr = {0};
        moeq_eval_result er = {0};
        int64_t ctx = 512, scored = 0, windows = 0;
        for (int r = 0; r < reps && rc == 0; r++) {
            moeq_task_opts to = {.threads = threads};
            double t0 = moeq_now();
            if (moeq_task_eval(m, NULL, ts, task_path, &to, &tr, &err) != MOEQ_OK) { rc = 3; break; }
            double t1 = moeq_now();
            if (t1 - t0 < best_task) best_task = t1 - t0;
            scored = tr.scored_tokens;
            moeq_task_result_free(&tr);
            windows = (scored + ctx - 1) / ctx;
            if (windows * ctx > n) windows = n / ctx;
            moeq_eval_opts eo = {.ctx = ctx, .max_tokens = windows * ctx, .threads = threads};
            t0 = moeq_now();
            if (moeq_eval(m, NULL, ids, n, &eo, &er, &err) != MOEQ_OK) { rc = 3; break; }
            t1 = moeq_now();
            if (t1 - t0 < best_eval) best_eval = t1 - t0;
            to.unshared = 1;
            t0 = moeq_now();
            if (moeq_task_eval(m, NULL, ts, task_path, &to, &tr, &err) != MOEQ_OK) { rc = 3; break; }
            t1 = moeq_now();
            if (t1 - t0 < best_unshared) best_unshared = t1 - t0;
            moeq_task_result_free(&tr);
        }
        if (rc) {
            fprintf(stderr, "%s: %s\n", argv[a], err.detail);
            moeq_model_close(m);
            free(ids);
            break;
        }
        double tasks_s = (double)ts->n / best_task, scored_s = (double)scored / best_task;
        double eval_s = (double)(windows * ctx) / best_eval, ratio = scored_s / eval_s;
        fprintf(stderr, "%-32s %lld tasks, %lld scored tokens: %.1f tasks/s, %.0f scored tokens/s; eval %.0f "
                "tokens/s over %lld windows: ratio %.2f (target 0.8); unshared %.1f tasks/s (packed %.2fx)\n",
                argv[a], (long long)ts->n, (long long)scored, tasks_s, scored_s, eval_s, (long long)windows, ratio,
                (double)ts->n / best_unshared, best_unshared / best_task);
        printf("%s{\"model\": \"%s\", \"tasks\": %lld, \"scored_tokens\": %lld, \"tasks_per_s\": %.3f, "
               "\"scored_tokens_per_s\": %.1f, \"eval_tokens_per_s\": %.1f, \"eval_windows\": %lld, \"ratio\": %.4f, "
               "\"unshared_tasks_per_s\": %.3f}", a > i + 2 ? ", " : "", argv[a], (long long)ts->n, (long long)scored,
               tasks_s, scored_s, eval_s, (long long)windows, ratio, (double)ts->n / best_unshared);
        free(ids);
        moeq_model_close(m);
    }
    printf("]}\n");
    moeq_tasks_free(ts);
    return rc;
}
