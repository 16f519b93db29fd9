/* Perplexity and llama.cpp-style agreement metrics over non-overlapping windows. */
#ifndef MOEQ_EVAL_H
#define MOEQ_EVAL_H

#include <stdint.h>
#include "moeq_model.h"

/* The reference's logits kept between moeq_eval calls on the same tokens and ctx (plan's
 * measured costs score hundreds of overrides against one reference): the first call computes
 * and stores them, later ones read them instead of running the reference. Results are the same
 * bit for bit. */
typedef struct moeq_eval_ref_cache {
    float *logits;        /* [windows * ctx * vocab], NULL: no cache (the reference runs each time) */
    float *hidden;        /* [(layers + 1) * windows * ctx * hidden]: the reference's hidden states at
                             each layer's input (and the head's), or NULL */
    int64_t windows, ctx, vocab, layers, dim;
    int filled;
} moeq_eval_ref_cache;
/* Allocates the cache for the windows moeq_eval will use, when it takes at most max_bytes
 * (the hidden states too when they also fit); otherwise c->logits stays NULL (not an error).
 * Bad tokens: moeq_token_windows's errors. */
moeq_status moeq_eval_ref_cache_init(moeq_eval_ref_cache *c, const moeq_model *ref, const int32_t *tokens, int64_t n,
                                     int64_t ctx, int64_t max_tokens, uint64_t max_bytes, moeq_error *err);
void moeq_eval_ref_cache_free(moeq_eval_ref_cache *c);

typedef struct moeq_eval_opts {
    int64_t ctx;          /* window length in tokens (>= 2) */
    int64_t max_tokens;   /* use at most this many tokens of the input (<= 0: all) */
    int threads;          /* <= 0: all cores */
    /* called after each window; may be NULL */
    void (*progress)(void *user, int64_t window, int64_t windows, double tokens_per_s, double ppl);
    void *user;
    moeq_eval_ref_cache *ref_cache;   /* may be NULL; used only with a reference of its shape */
    /* with a filled ref_cache holding hidden states: the model differs from the reference only
     * in layers >= start_layer (layers: only in the head), so its forward pass starts there from
     * the reference's hidden states (the same values as running the layers before it). 0: all. */
    int64_t start_layer;
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

/* ---- multiple-choice tasks (docs/eval.md, "Tasks") ------------------------------------------
 * lm-evaluation-harness's loglikelihood scoring: each choice is a request (context,
 * continuation) scored by the sum of the log-probabilities of its continuation tokens. */

typedef enum moeq_task_format {
    MOEQ_TASK_JSONL = 0,       /* {"context", "choices": [...], "gold", "id"?} per line */
    MOEQ_TASK_HELLASWAG = 1,   /* llama.cpp's hellaswag text: context, gold, 4 endings per task */
    MOEQ_TASK_WINOGRANDE = 2   /* llama.cpp's winogrande CSV: index,sentence,option1,option2,answer */
} moeq_task_format;

/* "jsonl" | "hellaswag" | "winogrande" -> the format, -1 for anything else. */
int moeq_task_format_from_name(const char *name);
/* By extension: .jsonl/.json jsonl, .txt hellaswag, .csv winogrande; -1 otherwise. */
int moeq_task_format_from_path(const char *path);
const char *moeq_task_format_name(moeq_task_format f);

typedef struct moeq_task_request {
    char *context, *continuation;   /* as the format builds them (before spaces move) */
} moeq_task_request;

typedef struct moeq_task {
    char *id;
    int64_t line;       /* 1-based line of the file where the task starts */
    int32_t gold;       /* index of the correct request */
    int32_t n_req;      /* >= 2 */
    moeq_task_request *req;
} moeq_task;

typedef struct moeq_task_set {
    moeq_task_format format;
    int64_t n;
    moeq_task *tasks;
} moeq_task_set;

/* Parses a task file held in memory; path names it in errors, which give the line:
 * "PATH:LINE: ...". Every task has a non-empty context, >= 2 non-empty choices and a gold index
 * in range; invalid UTF-8 or a NUL byte is an error. MOEQ_ERR_FORMAT (or RANGE for gold). */
moeq_status moeq_tasks_parse(const char *data, size_t len, const char *path, moeq_task_format fmt,
                             moeq_task_set **out, moeq_error *err);
moeq_status moeq_tasks_load(const char *path, moeq_task_format fmt, moeq_task_set **out,
                            moeq_error *err);
void moeq_tasks_free(moeq_task_set *ts);

typedef struct moeq_task_opts {
    int64_t limit;      /* the first N tasks (<= 0: all) */
    int64_t pack;       /* tokens per forward pass, several tasks packed (<= 0: 512); a longer
                         * task runs alone */
    int unshared;       /* each request in its own plain causal pass (moeq_forward): no prefix
                         * sharing, no packing; the check of the packed path */
    int threads;
    void (*progress)(void *user, int64_t done, int64_t total, double tasks_per_s);
    void *user;
} moeq_task_opts;

typedef struct moeq_task_req_score {
    int32_t *ctx_tokens, *cont_tokens;   /* encode(context) and encode(context+cont)[n_ctx:] */
    int64_t n_ctx, n_cont;
    int64_t nbytes;                      /* UTF-8 bytes of the continuation (spaces moved) */
    double ll, ll_ref;                   /* sum of log p of the continuation tokens */
    int greedy, greedy_ref;              /* every continuation token is the argmax */
} moeq_task_req_score;

typedef struct moeq_task_score {
    int32_t pick, pick_norm;             /* argmax ll, argmax ll / nbytes (first on ties) */
    int32_t pick_ref, pick_norm_ref;
    moeq_task_req_score *req;            /* [n_req of the task] */
} moeq_task_score;

typedef struct moeq_task_result {
    int64_t tasks;
    double acc, acc_stderr, acc_norm, acc_norm_stderr;   /* stderr: sqrt(p(1-p)/(n-1)), NaN if n < 2 */
    int has_ref;
    double acc_ref, acc_norm_ref;
    double agreement, agreement_norm;    /* fraction of tasks where both models pick the same */
    double acc_diff, acc_diff_stderr;    /* acc - acc_ref; sd(d_i)/sqrt(n), d_i in {-1, 0, 1} */
    double acc_norm_diff, acc_norm_diff_stderr;
    int64_t requests, scored_tokens;     /* continuation tokens scored */
    int64_t passes, packed_tokens;       /* forward passes of the model and tokens through them */
    double seconds;                      /* the model's passes and scoring (the reference's excluded) */
    double tasks_per_s, scored_tokens_per_s;
    moeq_task_score *per_task;           /* [tasks] */
} moeq_task_result;

/* Scores the first opts->limit tasks of ts with model (and ref, same vocabulary, on the same
 * tokens). path names the task file in errors: a context or continuation that tokenizes to no
 * tokens, or a request longer than the model's max_position_embeddings, is MOEQ_ERR_FORMAT /
 * MOEQ_ERR_RANGE naming the line. */
moeq_status moeq_task_eval(const moeq_model *model, const moeq_model *ref, const moeq_task_set *ts,
                           const char *path, const moeq_task_opts *opts, moeq_task_result *res,
                           moeq_error *err);
void moeq_task_result_free(moeq_task_result *res);

/* Standard errors of the reports: of a mean of 0/1 outcomes (the harness's mean_stderr), and
 * of the mean of paired differences x[i] - y[i]. NaN when n < 2. */
double moeq_mean_stderr(const double *x, int64_t n);
double moeq_paired_stderr(const double *x, const double *y, int64_t n);

#endif
