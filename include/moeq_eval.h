/* Perplexity and llama.cpp-style agreement metrics over non-overlapping windows. */
#ifndef MOEQ_EVAL_H
#define MOEQ_EVAL_H

#include <stdint.h>
#include "moeq_model.h"

typedef struct moeq_eval_opts {
    int64_t ctx;          /* window length in tokens (>= 2) */
    int64_t max_tokens;   /* use at most this many tokens of the input (<= 0: all) */
    int threads;          /* <= 0: all cores */
    /* called after each window; may be NULL */
    void (*progress)(void *user, int64_t window, int64_t windows, double tokens_per_s, double ppl);
    void *user;
} moeq_eval_opts;

typedef struct moeq_eval_result {
    double ppl, nll_mean;
    int64_t tokens;       /* next-token predictions counted: windows * (ctx - 1) */
    int64_t ctx, windows;
    double tokens_per_s;  /* window tokens run through the evaluated model per second */
    double seconds;
    int has_ref;
    double ppl_ref, ppl_ratio, kld_mean, kld_median, kld_p99, same_top1, delta_p_rms;
} moeq_eval_result;

/* Runs model (and ref, when not NULL, on the same windows) over tokens[0..n). Windows are
 * tokens [w*ctx, (w+1)*ctx); a last partial window is dropped. The NLL of position i+1 is
 * predicted from position i inside each window. KLD is KL(ref || model) per position. */
moeq_status moeq_eval(const moeq_model *model, const moeq_model *ref, const int32_t *tokens,
                      int64_t n, const moeq_eval_opts *opts, moeq_eval_result *res,
                      moeq_error *err);

/* The window protocol shared by eval, calibrate and sequential GPTQ: of tokens[0..n) (at most
 * max_tokens when > 0), *windows whole windows of ctx tokens are used; every id among them must
 * be in the model's vocabulary. No whole window: MOEQ_ERR_FORMAT; a bad id: MOEQ_ERR_RANGE. */
moeq_status moeq_token_windows(const moeq_model *m, const int32_t *tokens, int64_t n, int64_t ctx,
                               int64_t max_tokens, int64_t *windows, moeq_error *err);

/* q-quantile of v[0..n) with linear interpolation (numpy/torch default); sorts v in place. */
double moeq_quantile_inplace(double *v, int64_t n, double q);

#endif
