/* moeq eval: perplexity over non-overlapping windows and, against a reference model, the
 * metrics llama.cpp's perplexity tool reports (KLD mean/median/p99, same top-1, Δp RMS).
 * Log-softmax and all sums run in double. */
#include "moeq_eval.h"
#include "moeq_core.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double moeq_quantile_inplace(double *v, int64_t n, double q)
{
    if (n <= 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double pos = q * (double)(n - 1);
    int64_t lo = (int64_t)floor(pos);
    if (lo >= n - 1) return v[n - 1];
    double frac = pos - (double)lo;
    return v[lo] + (v[lo + 1] - v[lo]) * frac;
}

/* log-sum-exp of a row of logits, and its argmax */
static double row_lse(const float *l, int64_t V, int64_t *argmax)
{
    double mx = -INFINITY;
    int64_t am = 0;
    for (int64_t j = 0; j < V; j++)
        if (l[j] > mx) { mx = l[j]; am = j; }
    double s = 0;
    for (int64_t j = 0; j < V; j++) s += exp((double)l[j] - mx);
    *argmax = am;
    return mx + log(s);
}

moeq_status moeq_token_windows(const moeq_model *m, const int32_t *tokens, int64_t n, int64_t ctx,
                               int64_t max_tokens, int64_t *windows, moeq_error *err)
{
    int64_t V = moeq_model_config(m)->vocab;
    int64_t usable = max_tokens > 0 && max_tokens < n ? max_tokens : n;
    *windows = ctx > 0 ? usable / ctx : 0;
    if (*windows == 0)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%lld tokens are fewer than one window of --ctx %lld",
                         (long long)usable, (long long)ctx);
    for (int64_t i = 0; i < *windows * ctx; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return moeq_fail(err, MOEQ_ERR_RANGE, "token id %d at position %lld is outside the vocabulary "
                             "0..%lld of %s", tokens[i], (long long)i, (long long)V - 1, moeq_model_path(m));
    return MOEQ_OK;
}

moeq_status moeq_eval_ref_cache_init(moeq_eval_ref_cache *c, const moeq_model *ref, const int32_t *tokens, int64_t n,
                                     int64_t ctx, int64_t max_tokens, uint64_t max_bytes, moeq_error *err)
{
    memset(c, 0, sizeof *c);
    int64_t windows = 0;
    if (ctx < 2) return moeq_fail(err, MOEQ_ERR_MISUSE, "--ctx %lld: a window needs at least 2 tokens", (long long)ctx);
    moeq_status st = moeq_token_windows(ref, tokens, n, ctx, max_tokens, &windows, err);
    if (st) return st;
    const moeq_config *cf = moeq_model_config(ref);
    const int64_t V = cf->vocab;
    const double bytes = (double)windows * (double)ctx * (double)V * sizeof(float);
    const double hbytes = (double)(cf->layers + 1) * (double)windows * (double)ctx * (double)cf->hidden * sizeof(float);
    if (bytes > (double)max_bytes) return MOEQ_OK;
    c->logits = malloc((size_t)bytes);
    if (!c->logits) return MOEQ_OK;   /* no cache: slower, same results */
    if (bytes + hbytes <= (double)max_bytes) c->hidden = malloc((size_t)hbytes);   /* NULL: whole passes */
    c->windows = windows;
    c->ctx = ctx;
    c->vocab = V;
    c->layers = cf->layers;
    c->dim = cf->hidden;
    return MOEQ_OK;
}

void moeq_eval_ref_cache_free(moeq_eval_ref_cache *c)
{
    if (!c) return;
    free(c->logits);
    free(c->hidden);
    memset(c, 0, sizeof *c);
}

moeq_status moeq_eval(const moeq_model *model, const moeq_model *ref, const int32_t *tokens,
                      int64_t n, const moeq_eval_opts *opts, moeq_eval_result *res,
                      moeq_error *err)
{
    memset(res, 0, sizeof *res);
    const moeq_config *c = moeq_model_config(model);
    int64_t ctx = opts->ctx, V = c->vocab;
    if (ctx < 2) return moeq_fail(err, MOEQ_ERR_MISUSE, "--ctx %lld: a window needs at least 2 tokens", (long long)ctx);
    if (ref && moeq_model_config(ref)->vocab != V)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s has a vocabulary of %lld tokens but the reference %s has %lld",
                         moeq_model_path(model), (long long)V, moeq_model_path(ref),
                         (long long)moeq_model_config(ref)->vocab);
    int64_t windows;
    moeq_status wst = moeq_token_windows(model, tokens, n, ctx, opts->max_tokens, &windows, err);
    if (wst != MOEQ_OK) return wst;

    moeq_runner *run = NULL, *run_ref = NULL;
    float *logits = NULL, *logits_ref = NULL;
    double *kld = NULL, *rows = NULL;   /* rows: [ctx, 5] one window's per-position terms */
    moeq_eval_ref_cache *rc = opts->ref_cache;
    if (!ref || !rc || !rc->logits || rc->windows != windows || rc->ctx != ctx || rc->vocab != V) rc = NULL;
    const int cached = rc && rc->filled;
    const int64_t L = c->layers, Hd = c->hidden;
    /* the reference's states per layer, stored while filling, read from start_layer on */
    float *hid = rc && rc->hidden && rc->layers == L && rc->dim == Hd ? rc->hidden : NULL;
    const int64_t start = cached && hid && opts->start_layer > 0 && opts->start_layer <= L ? opts->start_layer : 0;
    float *xbuf = NULL;
    moeq_status st = moeq_runner_create(model, ctx, opts->threads, &run, err);
    if (st == MOEQ_OK && ref && !cached) st = moeq_runner_create(ref, ctx, opts->threads, &run_ref, err);
    if (st == MOEQ_OK) {
        logits = malloc((size_t)(ctx * V) * sizeof(float));
        rows = malloc((size_t)(5 * ctx) * sizeof(double));
        if (ref) {
            logits_ref = rc ? NULL : malloc((size_t)(ctx * V) * sizeof(float));
            kld = malloc((size_t)(windows * (ctx - 1)) * sizeof(double));
        }
        if ((hid && !cached) || start > 0) xbuf = malloc((size_t)(ctx * Hd) * sizeof *xbuf);
        if (!logits || !rows || (ref && ((!rc && !logits_ref) || !kld)) || (((hid && !cached) || start > 0) && !xbuf))
            st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for %lld x %lld logits", (long long)ctx, (long long)V);
    }
    double nll_sum = 0, nll_ref_sum = 0, kld_sum = 0, dp2_sum = 0, seconds = 0;
    const int nth = opts->threads > 0 ? opts->threads : omp_get_max_threads();
    int64_t same = 0, count = 0;
    for (int64_t w = 0; st == MOEQ_OK && w < windows; w++) {
        const int32_t *win = tokens + w * ctx;
        double t0 = moeq_now();
        if (start > 0) {   /* layers before start are the reference's: resume from its states */
            memcpy(xbuf, hid + (start * windows + w) * ctx * Hd, (size_t)(ctx * Hd) * sizeof *xbuf);
            for (int64_t l = start; st == MOEQ_OK && l < L; l++) st = moeq_forward_layer(run, l, xbuf, ctx, NULL, err);
            if (st == MOEQ_OK) st = moeq_forward_head(run, xbuf, ctx, logits, err);
        } else {
            st = moeq_forward(run, win, ctx, logits, NULL, err);
        }
        seconds += moeq_now() - t0;
        float *lref = rc ? rc->logits + w * ctx * V : logits_ref;
        if (st == MOEQ_OK && ref && !cached && hid) {   /* the same pass, its states kept */
            st = moeq_forward_embed(run_ref, win, ctx, xbuf, err);
            for (int64_t l = 0; st == MOEQ_OK && l <= L; l++) {
                memcpy(hid + (l * windows + w) * ctx * Hd, xbuf, (size_t)(ctx * Hd) * sizeof *xbuf);
                if (l < L) st = moeq_forward_layer(run_ref, l, xbuf, ctx, NULL, err);
            }
            if (st == MOEQ_OK) st = moeq_forward_head(run_ref, xbuf, ctx, lref, err);
        } else if (st == MOEQ_OK && ref && !cached) {
            st = moeq_forward(run_ref, win, ctx, lref, NULL, err);
        }
        if (st != MOEQ_OK) break;
        /* each position's terms in parallel (rows[i]: nll, nll_ref, kld, dp, same), then summed in
         * position order: the sums' bits do not depend on the threads */
#pragma omp parallel for schedule(static) num_threads(nth) if (V * ctx >= 65536)
        for (int64_t i = 0; i < ctx - 1; i++) {
            const float *l = logits + i * V;
            int64_t am, am_ref;
            double lse = row_lse(l, V, &am), *o = rows + 5 * i;
            int32_t tgt = win[i + 1];
            o[0] = lse - l[tgt];
            if (ref) {
                const float *lr = lref + i * V;
                double lse_r = row_lse(lr, V, &am_ref);
                o[1] = lse_r - lr[tgt];
                double k = 0;
                for (int64_t j = 0; j < V; j++) {
                    double lpr = lr[j] - lse_r, lp = l[j] - lse;
                    k += exp(lpr) * (lpr - lp);
                }
                o[2] = k;
                o[3] = exp(l[tgt] - lse) - exp(lr[tgt] - lse_r);
                o[4] = am == am_ref;
            }
        }
        for (int64_t i = 0; i + 1 < ctx; i++) {
            const double *o = rows + 5 * i;
            nll_sum += o[0];
            if (ref) {
                nll_ref_sum += o[1];
                kld[count] = o[2];
                kld_sum += o[2];
                dp2_sum += o[3] * o[3];
                same += o[4] != 0;
            }
            count++;
        }
        if (opts->progress)
            opts->progress(opts->user, w + 1, windows, (double)((w + 1) * ctx) / seconds,
                           exp(nll_sum / (double)count));
    }
    if (st == MOEQ_OK && rc) rc->filled = 1;
    if (st == MOEQ_OK) {
        res->ctx = ctx;
        res->windows = windows;
        res->tokens = count;
        res->nll_mean = nll_sum / (double)count;
        res->ppl = exp(res->nll_mean);
        res->seconds = seconds;
        res->tokens_per_s = (double)(windows * ctx) / seconds;
        if (ref) {
            res->has_ref = 1;
            res->ppl_ref = exp(nll_ref_sum / (double)count);
            res->ppl_ratio = res->ppl / res->ppl_ref;
            res->kld_mean = kld_sum / (double)count;
            res->same_top1 = (double)same / (double)count;
            res->delta_p_rms = sqrt(dp2_sum / (double)count);
            res->kld_median = moeq_quantile_inplace(kld, count, 0.5);
            res->kld_p99 = moeq_quantile_inplace(kld, count, 0.99);
        }
    }
    free(kld);
    free(rows);
    free(xbuf);
    free(logits);
    free(logits_ref);
    moeq_runner_free(run);
    moeq_runner_free(run_ref);
    return st;
}
