/* moeq eval --task: multiple-choice accuracy by lm-evaluation-harness's loglikelihood method.
 *
 * Requests are tokenized as the harness does (trailing spaces of the context move to the
 * continuation; continuation tokens = encode(context + continuation)[len(encode(context)):]).
 * A task becomes one "unit" of a packed forward pass: the longest common token prefix of its
 * requests' inputs once (a segment every request sees), then each request's remaining input
 * tokens as its own segment, positions continuing after the prefix (moeq_forward_packed).
 * Units are packed greedily into passes of opts->pack tokens, and the LM head runs only on the
 * rows that predict a continuation token. The input of a request is context + continuation
 * minus its last token, so a one-token choice adds no tokens at all. */
#include "moeq_eval.h"
#include "moeq_core.h"
#include "moeq_tokenizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double moeq_mean_stderr(const double *x, int64_t n)
{
    if (n < 2) return NAN;
    double m = 0, v = 0;
    for (int64_t i = 0; i < n; i++) m += x[i];
    m /= (double)n;
    for (int64_t i = 0; i < n; i++) v += (x[i] - m) * (x[i] - m);
    return sqrt(v / (double)(n - 1) / (double)n);
}

double moeq_paired_stderr(const double *x, const double *y, int64_t n)
{
    if (n < 2) return NAN;
    double *d = malloc((size_t)n * sizeof *d);
    if (!d) return NAN;
    for (int64_t i = 0; i < n; i++) d[i] = x[i] - y[i];
    double s = moeq_mean_stderr(d, n);
    free(d);
    return s;
}

void moeq_task_result_free(moeq_task_result *res)
{
    if (!res || !res->per_task) return;
    for (int64_t i = 0; i < res->tasks; i++) {
        moeq_task_score *s = &res->per_task[i];
        if (!s->req) continue;
        /* requests of a task were allocated together: see tokenize_task */
        free(s->req[0].ctx_tokens);
        free(s->req);
    }
    free(res->per_task);
    res->per_task = NULL;
}

/* Tokenizes the requests of task t into sc->req (one allocation holds all token arrays). */
static moeq_status tokenize_task(const moeq_tokenizer *tok, const moeq_task *t, const char *path,
                                 int64_t vocab, int64_t window, moeq_task_score *sc, moeq_error *err)
{
    sc->req = calloc((size_t)t->n_req, sizeof *sc->req);
    if (!sc->req) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory tokenizing tasks");
    int32_t **ctx = calloc((size_t)t->n_req * 2, sizeof *ctx), **whole = ctx ? ctx + t->n_req : NULL;
    int64_t *nctx = calloc((size_t)t->n_req * 2, sizeof *nctx), *nwhole = nctx ? nctx + t->n_req : NULL;
    moeq_status st = ctx && nctx ? MOEQ_OK : moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory tokenizing tasks");
    int64_t total = 0;
    for (int32_t k = 0; st == MOEQ_OK && k < t->n_req; k++) {
        const char *c = t->req[k].context, *x = t->req[k].continuation;
        size_t nc = strlen(c), nx = strlen(x), sp = 0;
        while (sp < nc && c[nc - 1 - sp] == ' ') sp++;   /* trailing spaces go to the continuation */
        char *joined = malloc(nc + nx + 1);
        if (!joined) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory tokenizing tasks"); break; }
        memcpy(joined, c, nc);
        memcpy(joined + nc, x, nx + 1);
        st = moeq_tokenize(tok, joined, nc - sp, 0, &ctx[k], &nctx[k], err);
        if (st == MOEQ_OK) st = moeq_tokenize(tok, joined, nc + nx, 0, &whole[k], &nwhole[k], err);
        free(joined);
        if (st != MOEQ_OK) {
            moeq_error_prefix(err, "%s:%lld: task '%s' choice %d", path, (long long)t->line, t->id, k);
            break;
        }
        sc->req[k].nbytes = (int64_t)(sp + nx);
        if (nctx[k] == 0)
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: task '%s' choice %d: the context tokenizes to no tokens "
                           "(the harness would start it with the end-of-text token; not supported)", path,
                           (long long)t->line, t->id, k);
        else if (nwhole[k] <= nctx[k])
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: task '%s' choice %d: the continuation adds no tokens",
                           path, (long long)t->line, t->id, k);
        else if (nwhole[k] - 1 > window)   /* the input: context + continuation minus its last token */
            st = moeq_fail(err, MOEQ_ERR_RANGE, "%s:%lld: task '%s' choice %d: the model reads %lld tokens "
                           "(context + continuation - 1), more than its window of %lld (max_position_embeddings)",
                           path, (long long)t->line, t->id, k, (long long)(nwhole[k] - 1), (long long)window);
        total += nctx[k] + (nwhole[k] - nctx[k]);
    }
    int32_t *buf = st == MOEQ_OK ? malloc((size_t)total * sizeof *buf) : NULL;
    if (st == MOEQ_OK && !buf) st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory tokenizing tasks");
    for (int32_t k = 0, off = 0; st == MOEQ_OK && k < t->n_req; k++) {
        moeq_task_req_score *r = &sc->req[k];
        r->n_ctx = nctx[k];
        r->n_cont = nwhole[k] - nctx[k];
        r->ctx_tokens = buf + off;
        memcpy(r->ctx_tokens, ctx[k], (size_t)r->n_ctx * sizeof *buf);
        r->cont_tokens = buf + off + r->n_ctx;
        memcpy(r->cont_tokens, whole[k] + nctx[k], (size_t)r->n_cont * sizeof *buf);
        off += (int32_t)(r->n_ctx + r->n_cont);
        for (int64_t j = 0; j < r->n_ctx + r->n_cont && st == MOEQ_OK; j++)
            if (r->ctx_tokens[j] < 0 || r->ctx_tokens[j] >= vocab)
                st = moeq_fail(err, MOEQ_ERR_RANGE, "%s:%lld: task '%s' choice %d: token id %d is outside the "
                               "model's vocabulary of %lld", path, (long long)t->line, t->id, k, r->ctx_tokens[j],
                               (long long)vocab);
    }
    if (st != MOEQ_OK && buf) {
        free(buf);
        for (int32_t k = 0; k < t->n_req; k++) sc->req[k].ctx_tokens = NULL;
    }
    if (st != MOEQ_OK) {
        free(sc->req);
        sc->req = NULL;
    }
    for (int32_t k = 0; ctx && k < t->n_req; k++) {
        free(ctx[k]);
        free(whole[k]);
    }
    free(ctx);
    free(nctx);
    return st;
}

/* Input token p of request r: context, then the continuation minus its last token. */
static int32_t input_token(const moeq_task_req_score *r, int64_t p)
{
    return p < r->n_ctx ? r->ctx_tokens[p] : r->cont_tokens[p - r->n_ctx];
}
static int64_t input_len(const moeq_task_req_score *r) { return r->n_ctx + r->n_cont - 1; }

/* Length of the common token prefix of a task's request inputs. */
static int64_t common_prefix(const moeq_task_score *s, int32_t n_req)
{
    int64_t P = input_len(&s->req[0]);
    for (int32_t k = 1; k < n_req; k++) {
        int64_t L = input_len(&s->req[k]), j = 0;
        if (L < P) P = L;
        while (j < P && input_token(&s->req[k], j) == input_token(&s->req[0], j)) j++;
        P = j;
    }
    return P;
}

static int64_t unit_tokens(const moeq_task_score *s, int32_t n_req)
{
    int64_t P = common_prefix(s, n_req), u = P;
    for (int32_t k = 0; k < n_req; k++) u += input_len(&s->req[k]) - P;
    return u;
}

/* One forward pass: several units. row_of[i]: the logits row of packed token i, or -1. */
typedef struct pass {
    int64_t cap, n, nrows, nunits;
    int32_t *tok, *pos, *seg, *see, *rows, *row_of, *units;
    int32_t nseg;
} pass;

static void pass_reset(pass *p)
{
    p->n = p->nrows = p->nunits = 0;
    p->nseg = 0;
}

static int32_t pass_row(pass *p, int64_t i)
{
    if (p->row_of[i] < 0) {
        p->row_of[i] = (int32_t)p->nrows;
        p->rows[p->nrows++] = (int32_t)i;
    }
    return p->row_of[i];
}

/* Appends task s; start[k] receives, for request k, the packed index of its input position
 * p >= P as start[k] + (p - P), and prefix the index of position 0. */
static void pass_add(pass *p, moeq_task_score *s, int32_t n_req, int64_t *prefix, int64_t *start)
{
    int64_t P = common_prefix(s, n_req);
    int32_t shared = p->nseg++;
    *prefix = p->n;
    p->units[p->nunits++] = (int32_t)p->n;   /* a task is an independent block */
    for (int64_t j = 0; j < P; j++) {
        int64_t i = p->n++;
        p->tok[i] = input_token(&s->req[0], j);
        p->pos[i] = (int32_t)j;
        p->seg[i] = shared;
        p->see[i] = -1;
        p->row_of[i] = -1;
    }
    for (int32_t k = 0; k < n_req; k++) {
        int32_t own = p->nseg++;
        start[k] = p->n;
        for (int64_t j = P; j < input_len(&s->req[k]); j++) {
            int64_t i = p->n++;
            p->tok[i] = input_token(&s->req[k], j);
            p->pos[i] = (int32_t)j;
            p->seg[i] = own;
            p->see[i] = shared;
            p->row_of[i] = -1;
        }
    }
}

/* log-sum-exp of a row of logits and its first argmax, in double */
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

/* Scores request r from logits rows: the row predicting continuation token t is rowidx[t]. */
static void score_request(const float *logits, int64_t V, const int32_t *rowidx, const int32_t *cont,
                          int64_t n_cont, double *ll, int *greedy)
{
    double sum = 0;
    int g = 1;
    for (int64_t t = 0; t < n_cont; t++) {
        const float *l = logits + (int64_t)rowidx[t] * V;
        int64_t am;
        double lse = row_lse(l, V, &am);
        sum += (double)l[cont[t]] - lse;
        g &= am == cont[t];
    }
    *ll = sum;
    *greedy = g;
}

static void pick(const moeq_task *t, moeq_task_score *s, int ref)
{
    int32_t best = 0, bestn = 0;
    for (int32_t k = 1; k < t->n_req; k++) {
        double a = ref ? s->req[k].ll_ref : s->req[k].ll, b = ref ? s->req[best].ll_ref : s->req[best].ll;
        if (a > b) best = k;
        double an = (ref ? s->req[k].ll_ref : s->req[k].ll) / (double)s->req[k].nbytes;
        double bn = (ref ? s->req[bestn].ll_ref : s->req[bestn].ll) / (double)s->req[bestn].nbytes;
        if (an > bn) bestn = k;
    }
    if (ref) { s->pick_ref = best; s->pick_norm_ref = bestn; }
    else { s->pick = best; s->pick_norm = bestn; }
}

typedef struct scorer {
    const moeq_model *model, *ref;
    moeq_runner *run, *run_ref;
    float *logits, *logits_ref;
    int64_t V;
    double seconds;
    int64_t passes, packed;
} scorer;

/* The unshared path: each request alone through moeq_forward, logits of every position. */
static moeq_status score_unshared(scorer *sc, moeq_task_score *s, int32_t n_req, int32_t *rowidx,
                                  moeq_error *err)
{
    for (int32_t k = 0; k < n_req; k++) {
        moeq_task_req_score *r = &s->req[k];
        int64_t L = input_len(r);
        for (int64_t t = 0; t < r->n_cont; t++) rowidx[t] = (int32_t)(r->n_ctx - 1 + t);
        double t0 = moeq_now();
        moeq_status st = moeq_forward(sc->run, r->ctx_tokens, L, sc->logits, NULL, err);
        if (st != MOEQ_OK) return st;
        score_request(sc->logits, sc->V, rowidx, r->cont_tokens, r->n_cont, &r->ll, &r->greedy);
        sc->seconds += moeq_now() - t0;
        sc->passes++;
        sc->packed += L;
        if (sc->ref) {
            st = moeq_forward(sc->run_ref, r->ctx_tokens, L, sc->logits_ref, NULL, err);
            if (st != MOEQ_OK) return st;
            score_request(sc->logits_ref, sc->V, rowidx, r->cont_tokens, r->n_cont, &r->ll_ref, &r->greedy_ref);
        }
    }
    return MOEQ_OK;
}

/* Runs a full pass over units [u0, u1) of the scored tasks and scores their requests. */
static moeq_status score_pass(scorer *sc, pass *p, moeq_task_score *scores, const moeq_task *tasks,
                              int64_t u0, int64_t u1, int64_t *prefix, int64_t *start, int32_t *rowidx,
                              int64_t max_req, moeq_error *err)
{
    /* rows: every position that predicts a continuation token, in request order */
    for (int64_t u = u0; u < u1; u++) {
        moeq_task_score *s = &scores[u];
        int64_t P = common_prefix(s, tasks[u].n_req);
        for (int32_t k = 0; k < tasks[u].n_req; k++) {
            moeq_task_req_score *r = &s->req[k];
            for (int64_t t = 0; t < r->n_cont; t++) {
                int64_t q = r->n_ctx - 1 + t;   /* input position predicting cont[t] */
                pass_row(p, q < P ? prefix[u - u0] + q : start[(u - u0) * max_req + k] + (q - P));
            }
        }
    }
    moeq_packing pk = {.pos = p->pos, .seg = p->seg, .see = p->see, .rows = p->rows, .nrows = p->nrows,
                       .units = p->units, .nunits = p->nunits};
    double t0 = moeq_now();
    moeq_status st = moeq_forward_packed(sc->run, p->tok, p->n, &pk, sc->logits, err);
    sc->seconds += moeq_now() - t0;
    if (st == MOEQ_OK && sc->ref) st = moeq_forward_packed(sc->run_ref, p->tok, p->n, &pk, sc->logits_ref, err);
    if (st != MOEQ_OK) return st;
    for (int64_t u = u0; u < u1; u++) {
        moeq_task_score *s = &scores[u];
        int64_t P = common_prefix(s, tasks[u].n_req);
        for (int32_t k = 0; k < tasks[u].n_req; k++) {
            moeq_task_req_score *r = &s->req[k];
            for (int64_t t = 0; t < r->n_cont; t++) {
                int64_t q = r->n_ctx - 1 + t;
                rowidx[t] = p->row_of[q < P ? prefix[u - u0] + q : start[(u - u0) * max_req + k] + (q - P)];
            }
            double s0 = moeq_now();
            score_request(sc->logits, sc->V, rowidx, r->cont_tokens, r->n_cont, &r->ll, &r->greedy);
            sc->seconds += moeq_now() - s0;
            if (sc->ref)
                score_request(sc->logits_ref, sc->V, rowidx, r->cont_tokens, r->n_cont, &r->ll_ref, &r->greedy_ref);
        }
    }
    sc->passes++;
    sc->packed += p->n;
    return MOEQ_OK;
}

moeq_status moeq_task_eval(const moeq_model *model, const moeq_model *ref, const moeq_task_set *ts,
                           const char *path, const moeq_task_opts *opts, moeq_task_result *res,
                           moeq_error *err)
{
    memset(res, 0, sizeof *res);
    const moeq_config *c = moeq_model_config(model);
    int64_t V = c->vocab;
    if (ref && moeq_model_config(ref)->vocab != V)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s has a vocabulary of %lld tokens but the reference %s has %lld",
                         moeq_model_path(model), (long long)V, moeq_model_path(ref),
                         (long long)moeq_model_config(ref)->vocab);
    int64_t n = opts->limit > 0 && opts->limit < ts->n ? opts->limit : ts->n;
    int64_t window = c->max_positions > 0 ? c->max_positions : INT32_MAX;
    if (ref && moeq_model_config(ref)->max_positions > 0 && moeq_model_config(ref)->max_positions < window)
        window = moeq_model_config(ref)->max_positions;
    res->per_task = calloc((size_t)n, sizeof *res->per_task);
    if (!res->per_task) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for %lld tasks", (long long)n);
    res->tasks = n;

    moeq_tokenizer *tok = NULL;
    moeq_status st = moeq_model_tokenizer(model, &tok, err);
    int64_t max_unit = 1, max_req = 1, max_cont = 1, max_input = 1;
    for (int64_t i = 0; st == MOEQ_OK && i < n; i++) {
        const moeq_task *t = &ts->tasks[i];
        st = tokenize_task(tok, t, path, V, window, &res->per_task[i], err);
        if (st != MOEQ_OK) break;
        int64_t u = unit_tokens(&res->per_task[i], t->n_req);
        if (u > max_unit) max_unit = u;
        if (t->n_req > max_req) max_req = t->n_req;
        for (int32_t k = 0; k < t->n_req; k++) {
            moeq_task_req_score *r = &res->per_task[i].req[k];
            if (r->n_cont > max_cont) max_cont = r->n_cont;
            if (input_len(r) > max_input) max_input = input_len(r);
            res->requests++;
            res->scored_tokens += r->n_cont;
        }
    }
    moeq_tokenizer_free(tok);

    int64_t pack = opts->pack > 0 ? opts->pack : 512;
    int64_t cap = opts->unshared ? max_input : (max_unit > pack ? max_unit : pack);
    scorer sc = {.model = model, .ref = ref, .V = V};
    pass p = {.cap = cap};
    int64_t *prefix = NULL, *start = NULL;
    int32_t *rowidx = NULL;
    if (st == MOEQ_OK) st = moeq_runner_create(model, cap, opts->threads, &sc.run, err);
    if (st == MOEQ_OK && ref) st = moeq_runner_create(ref, cap, opts->threads, &sc.run_ref, err);
    if (st == MOEQ_OK) {
        sc.logits = malloc((size_t)cap * (size_t)V * sizeof(float));
        sc.logits_ref = ref ? malloc((size_t)cap * (size_t)V * sizeof(float)) : NULL;
        int32_t *b = malloc((size_t)cap * 7 * sizeof(int32_t));
        p.tok = b;
        if (b) {
            p.pos = b + cap; p.seg = b + 2 * cap; p.see = b + 3 * cap; p.rows = b + 4 * cap; p.row_of = b + 5 * cap;
            p.units = b + 6 * cap;
        }
        /* a pass holds at most cap units (each has at least one token or one row) */
        prefix = malloc((size_t)cap * sizeof *prefix);
        start = malloc((size_t)(cap * max_req) * sizeof *start);
        rowidx = malloc((size_t)max_cont * sizeof *rowidx);
        if (!sc.logits || (ref && !sc.logits_ref) || !b || !prefix || !start || !rowidx)
            st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for task passes of %lld tokens", (long long)cap);
    }

    int64_t u0 = 0;
    for (int64_t i = 0; st == MOEQ_OK && i < n; i++) {
        const moeq_task *t = &ts->tasks[i];
        moeq_task_score *s = &res->per_task[i];
        int64_t done = -1;   /* tasks scored when a pass ran */
        if (opts->unshared) {
            st = score_unshared(&sc, s, t->n_req, rowidx, err);
            done = i + 1;
        } else {
            int64_t u = unit_tokens(s, t->n_req);
            if (p.n + u > cap || i - u0 >= cap) {   /* the pass is full: run it */
                st = score_pass(&sc, &p, res->per_task, ts->tasks, u0, i, prefix, start, rowidx, max_req, err);
                pass_reset(&p);
                done = u0 = i;
            }
            if (st == MOEQ_OK) pass_add(&p, s, t->n_req, &prefix[i - u0], &start[(i - u0) * max_req]);
            if (st == MOEQ_OK && i == n - 1) {
                st = score_pass(&sc, &p, res->per_task, ts->tasks, u0, n, prefix, start, rowidx, max_req, err);
                done = n;
            }
        }
        if (st == MOEQ_OK && opts->progress && done > 0)
            opts->progress(opts->user, done, n, sc.seconds > 0 ? (double)done / sc.seconds : 0);
    }

    if (st == MOEQ_OK) {
        double *a = malloc((size_t)n * 4 * sizeof *a), *an = a ? a + n : NULL;
        double *ar = a ? a + 2 * n : NULL, *anr = a ? a + 3 * n : NULL;
        if (!a) st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for %lld tasks", (long long)n);
        int64_t agree = 0, agree_n = 0;
        for (int64_t i = 0; st == MOEQ_OK && i < n; i++) {
            const moeq_task *t = &ts->tasks[i];
            moeq_task_score *s = &res->per_task[i];
            pick(t, s, 0);
            a[i] = s->pick == t->gold;
            an[i] = s->pick_norm == t->gold;
            res->acc += a[i];
            res->acc_norm += an[i];
            if (ref) {
                pick(t, s, 1);
                ar[i] = s->pick_ref == t->gold;
                anr[i] = s->pick_norm_ref == t->gold;
                res->acc_ref += ar[i];
                res->acc_norm_ref += anr[i];
                agree += s->pick == s->pick_ref;
                agree_n += s->pick_norm == s->pick_norm_ref;
            }
        }
        if (st == MOEQ_OK) {
            res->acc /= (double)n;
            res->acc_norm /= (double)n;
            res->acc_stderr = moeq_mean_stderr(a, n);
            res->acc_norm_stderr = moeq_mean_stderr(an, n);
            if (ref) {
                res->has_ref = 1;
                res->acc_ref /= (double)n;
                res->acc_norm_ref /= (double)n;
                res->agreement = (double)agree / (double)n;
                res->agreement_norm = (double)agree_n / (double)n;
                res->acc_diff = res->acc - res->acc_ref;
                res->acc_norm_diff = res->acc_norm - res->acc_norm_ref;
                res->acc_diff_stderr = moeq_paired_stderr(a, ar, n);
                res->acc_norm_diff_stderr = moeq_paired_stderr(an, anr, n);
            }
            res->passes = sc.passes;
            res->packed_tokens = sc.packed;
            res->seconds = sc.seconds;
            res->tasks_per_s = sc.seconds > 0 ? (double)n / sc.seconds : 0;
            res->scored_tokens_per_s = sc.seconds > 0 ? (double)res->scored_tokens / sc.seconds : 0;
        }
        free(a);
    }
    free(p.tok);
    free(prefix);
    free(start);
    free(rowidx);
    free(sc.logits);
    free(sc.logits_ref);
    moeq_runner_free(sc.run);
    moeq_runner_free(sc.run_ref);
    if (st != MOEQ_OK) {
        moeq_task_result_free(res);
        res->tasks = 0;
    }
    return st;
}
