/* What the forward-pass benchmarks share: their options, and a model opened with its token
 * file, a runner and a logits buffer. Header-only: each bench is one program. */
#ifndef MOEQ_BENCH_COMMON_H
#define MOEQ_BENCH_COMMON_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "moeq_model.h"
#include "moeq_safetensors.h"

typedef struct bench_opts {
    int threads;
    int64_t ctx, windows;
    const char *out;   /* --out DIR, where the bench takes one */
} bench_opts;

/* --threads N, --ctx N, --windows N and, when o->out is set (its default), --out DIR; returns
 * the index of the first argument after the options, or -1 after saying what is wrong. */
static inline int bench_options(int argc, char **argv, bench_opts *o)
{
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) o->threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc) o->ctx = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--windows") && i + 1 < argc) o->windows = atoll(argv[++i]);
        else if (o->out && !strcmp(argv[i], "--out") && i + 1 < argc) o->out = argv[++i];
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return -1;
        }
    }
    return i;
}

typedef struct bench_model {
    moeq_model *m;
    int32_t *ids;
    int64_t n, windows;   /* tokens, and whole ctx-token windows to time (at most o->windows) */
    moeq_runner *r;
    float *logits;        /* ctx x vocab */
} bench_model;

/* opens MODEL and TOKENS for o->ctx-token windows on o->threads threads; 0 after saying why not */
static inline int bench_model_open(const char *model, const char *tokens, const bench_opts *o, bench_model *b)
{
    moeq_error err = {0};
    memset(b, 0, sizeof *b);
    if (moeq_model_open(model, &b->m, &err) != MOEQ_OK ||
        moeq_tokens_load(tokens, moeq_model_config(b->m)->vocab, &b->ids, &b->n, &err) != MOEQ_OK) {
        fprintf(stderr, "%s: %s\n", model, err.detail);
        return 0;
    }
    b->windows = b->n / o->ctx < o->windows ? b->n / o->ctx : o->windows;
    b->logits = malloc((size_t)(o->ctx * moeq_model_config(b->m)->vocab) * sizeof(float));
    if (b->windows < 1 || !b->logits || moeq_runner_create(b->m, o->ctx, o->threads, &b->r, &err) != MOEQ_OK) {
        fprintf(stderr, "%s: cannot run %lld-token windows: %s\n", model, (long long)o->ctx, err.detail);
        return 0;
    }
    return 1;
}

static inline void bench_model_close(bench_model *b)
{
    moeq_runner_free(b->r);
    free(b->logits);
    free(b->ids);
    moeq_model_close(b->m);
}
#endif
