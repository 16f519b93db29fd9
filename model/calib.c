/* Calibration statistics: the layer-wise driver, the per-layer accumulator and moeq_calibrate.
 * The forward pass calls expert hooks inside a critical section, so the hooks only copy rows
 * into a per-window stash; the float64 accumulation runs afterwards in parallel over
 * (expert, input) tasks, each task summing its rows in token order with one single-threaded
 * BLAS call per window. The order of every sum is thus fixed by the input alone. */
#include "moeq_eval.h"
#include "moeq_calib.h"
#include "moeq_core.h"
#include "moeq_dist.h"
#include "moeq_kernels.h"
#include "moeq_resume.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

/* model/calib_blas.c: C (lower) += Xᵀ X, float64, single-threaded */

/* Rows are widened to float64 ROW_BLOCK at a time: the scratch stays small for wide inputs
 * (a 5632-wide shared expert) while dsyrk still gets blocks big enough to run fast. */
#define ROW_BLOCK 256

/* ---- layer-wise driver ------------------------------------------------------------------ */

/* The residual stream after a layer, saved for --resume: one float32 file of every window
 * (rank r writes its own windows at their offsets), named by the layer so that the file the
 * resume record points to is never the one being written. */
static void stream_name(char *buf, size_t cap, const char *dir, int64_t layer)
{
    if (layer < 0) snprintf(buf, cap, "%s/stream.tmp", dir);
    else snprintf(buf, cap, "%s/stream-%04lld.bin", dir, (long long)layer);
}

static moeq_status stream_io(const char *path, int writing, float *x, int64_t W, size_t win,
                             moeq_error *err)
{
    int fd = open(path, writing ? O_WRONLY : O_RDONLY);
    if (fd < 0) return moeq_fail(err, MOEQ_ERR_IO, "%s: %s", path, strerror(errno));
    moeq_status st = MOEQ_OK;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || (uint64_t)sb.st_size != (uint64_t)W * win * 4)
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: %lld bytes, a stream of %lld windows needs %llu", path,
                       (long long)sb.st_size, (long long)W, (unsigned long long)((uint64_t)W * win * 4));
    int R = moeq_dist_rank(), N = moeq_dist_size();
    for (int64_t w = R, j = 0; st == MOEQ_OK && w < W; w += N, j++) {
        char *p = (char *)(x + (size_t)j * win);
        size_t left = win * 4;
        off_t off = (off_t)((uint64_t)w * win * 4);
        while (left > 0) {
            ssize_t k = writing ? pwrite(fd, p, left, off) : pread(fd, p, left, off);
            if (k <= 0) {
                st = moeq_fail(err, MOEQ_ERR_IO, "%s: %s at byte %lld", path, k < 0 ? strerror(errno) : "short read",
                               (long long)off);
                break;
            }
            p += k; left -= (size_t)k; off += k;
        }
    }
    if (st == MOEQ_OK && writing && fsync(fd) != 0)
        st = moeq_fail(err, MOEQ_ERR_IO, "%s: fsync: %s", path, strerror(errno));
    close(fd);
    return st;
}

/* Saves the stream after `layer`: rank 0 sizes the temporary, every rank writes its windows,
 * rank 0 renames it to the layer's name and drops the previous layer's. */
static moeq_status stream_save(const moeq_layerwise *lw, int64_t layer, float *x, size_t win,
                               moeq_error *err)
{
    char tmp[4096], fin[4096], old[4096];
    stream_name(tmp, sizeof tmp, lw->resume_dir, -1);
    moeq_status st = MOEQ_OK;
    if (moeq_dist_rank() == 0) {
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || ftruncate(fd, (off_t)((uint64_t)lw->windows * win * 4)) != 0)
            st = moeq_fail(err, MOEQ_ERR_IO, "%s: %s", tmp, strerror(errno));
        if (fd >= 0) close(fd);
    }
    st = moeq_dist_agree(st, err);
    if (st == MOEQ_OK) st = stream_io(tmp, 1, x, lw->windows, win, err);
    st = moeq_dist_agree(st, err);
    if (st == MOEQ_OK && moeq_dist_rank() == 0) {
        stream_name(fin, sizeof fin, lw->resume_dir, layer);
        if (rename(tmp, fin) != 0) st = moeq_fail(err, MOEQ_ERR_IO, "rename %s: %s", tmp, strerror(errno));
    }
    st = moeq_dist_agree(st, err);
    if (st == MOEQ_OK && lw->layer_saved) st = lw->layer_saved(lw->user, layer, err);
    if (st == MOEQ_OK && moeq_dist_rank() == 0 && layer > 0) {
        stream_name(old, sizeof old, lw->resume_dir, layer - 1);
        unlink(old);
    }
    return st;
}

int64_t moeq_layerwise_resume_start(const moeq_resume *rs, const char *dir, int64_t layers)
{
    int64_t L = 0;
    while (L < layers && moeq_resume_done(rs, L)) L++;
    /* a layer's unit is written before its stream: without that stream, redo the layer */
    char path[4096];
    struct stat sb;
    for (; L > 0; L--) {
        stream_name(path, sizeof path, dir, L - 1);
        if (stat(path, &sb) == 0) break;
    }
    return L;
}

void moeq_layerwise_resume_clean(const char *dir, int64_t layers)
{
    char path[4096];
    for (int64_t l = -1; l < layers; l++) {
        stream_name(path, sizeof path, dir, l);
        unlink(path);
    }
}

moeq_status moeq_layerwise_run(const moeq_model *m, const int32_t *tokens,
                               const moeq_layerwise *lw, moeq_error *err)
{
    const moeq_config *c = moeq_model_config(m);
    int64_t ctx = lw->ctx, W = lw->windows, H = c->hidden;
    int R = moeq_dist_rank(), N = moeq_dist_size();
    if (ctx <= 0 || W <= 0 || lw->first_layer < 0 || lw->first_layer > c->layers ||
        (lw->first_layer > 0 && !lw->resume_dir))
        return moeq_fail(err, MOEQ_ERR_MISUSE, "layer-wise run of %lld windows of %lld tokens from layer %lld",
                         (long long)W, (long long)ctx, (long long)lw->first_layer);
    if (N > 1 && !lw->collector)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "a layer-wise run over %d MPI ranks needs its collector", N);
    /* this rank's windows: w = R, R + N, ... (all of them in a one-rank run) */
    int64_t own = W > R ? (W - R + N - 1) / N : 0;
    size_t win = (size_t)(ctx * H);
    size_t bytes = (size_t)(own ? own : 1) * win * sizeof(float);
    float *x = malloc(bytes);
    float *x_in = lw->keep_inputs ? malloc(bytes) : NULL;
    moeq_runner *r = NULL;
    moeq_status st = MOEQ_OK;
    if (!x || (lw->keep_inputs && !x_in)) {
        st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory holding the residual stream of %lld "
                       "tokens (%.1f MiB)", (long long)(own * ctx), (double)bytes / 1048576.0);
        goto done;
    }
    st = moeq_runner_create(m, ctx, lw->threads, &r, err);
    if (st == MOEQ_OK && lw->first_layer > 0) {
        char path[4096];
        stream_name(path, sizeof path, lw->resume_dir, lw->first_layer - 1);
        st = stream_io(path, 0, x, W, win, err);
    } else {
        for (int64_t w = R, j = 0; st == MOEQ_OK && w < W; w += N, j++)
            st = moeq_forward_embed(r, tokens + w * ctx, ctx, x + (size_t)j * win, err);
    }
    st = moeq_dist_agree(st, err);
    /* one layer's pages at a time: the embedding is done with, each layer is dropped once its
     * windows (and a re-run) are through, the next one is read ahead */
    moeq_model_release_head(m);
    for (int64_t l = lw->first_layer; st == MOEQ_OK && l < c->layers; l++) {
        if (l + 1 < c->layers) moeq_model_prefetch_layer(m, l + 1);
        const moeq_hooks *hk = lw->layer_hooks ? lw->layer_hooks(lw->user, l) : NULL;
        if (x_in) memcpy(x_in, x, (size_t)own * win * sizeof(float));
        /* rank 0 takes the windows in order; the others compute theirs and send them */
        for (int64_t w = 0; st == MOEQ_OK && w < W; w++) {
            int o = moeq_dist_owner(w);
            if (o == R) {
                st = moeq_forward_layer(r, l, x + (size_t)(w / N) * win, ctx, hk, err);
                if (st != MOEQ_OK || !hk) continue;
                if (R == 0) {
                    if (lw->window_done) st = lw->window_done(lw->user, l, w, err);
                } else {
                    st = moeq_calib_collector_send(lw->collector, 0, err);
                }
            } else if (R == 0 && hk) {
                st = moeq_calib_collector_recv(lw->collector, o, err);
                if (st == MOEQ_OK && lw->window_done) st = lw->window_done(lw->user, l, w, err);
            }
        }
        int rerun = 0;
        if (st == MOEQ_OK && lw->layer_done) st = lw->layer_done(lw->user, l, &rerun, err);
        if (st == MOEQ_OK && rerun) {
            if (!x_in) {
                st = moeq_fail(err, MOEQ_ERR_MISUSE, "layer %lld asks for a re-run without "
                               "keep_inputs", (long long)l);
                break;
            }
            memcpy(x, x_in, (size_t)own * win * sizeof(float));
            for (int64_t j = 0; st == MOEQ_OK && j < own; j++)
                st = moeq_forward_layer(r, l, x + (size_t)j * win, ctx, NULL, err);
        }
        moeq_model_release_layer(m, l);
        if (st == MOEQ_OK && lw->resume_dir) st = stream_save(lw, l, x, win, err);
    }
done:
    moeq_runner_free(r);
    free(x);
    free(x_in);
    return st;
}

/* ---- collector ---------------------------------------------------------------------------- */

typedef struct task {       /* one accumulator and its rows: x then x2 (pending rows, then the window's) */
    moeq_calib_acc *a;
    const float *x, *w;
    int64_t n;
    const float *x2, *w2;
    int64_t n2;
    int last;               /* then the rows still held and the mirror (the layer's end) */
    double cost;            /* run_tasks' estimate of its multiply-adds */
    int64_t idx;            /* its place in the list, the tie-break of the order by cost */
} task;

typedef struct stash {        /* rows of one linear input for the current window */
    float *x;                 /* [cap, dim] */
    float *w;                 /* [cap] weights, or NULL */
    int64_t n, cap, dim;
} stash;

struct moeq_calib_collector {
    const moeq_model *m;
    const moeq_config *c;
    int64_t max_n, layer;
    int diag, scope_all, nthreads, overflow;
    uint64_t bytes;
    int alloc_failed;
    moeq_hooks hooks;
    moeq_calib_layer L;
    /* routed experts: one arena of K * max_n rows; each expert takes a contiguous range in the
     * order its hook arrives (any order: only the location, not the sums, depends on it) */
    float *ax, *ah, *aw;      /* [K*max_n, H], [K*max_n, I], [K*max_n] */
    int64_t fill;
    int64_t *e_off, *e_n;     /* [E] this window's range of each expert, e_n = -1 when none */
    /* Routed experts' rows held back over windows, pend_cap per expert, and accumulated
     * PEND_ROWS at a time: a window gives an expert ~K·n/E rows (32 at ctx 256 in 16 experts
     * top-2), and a dsyrk over so few rows spends its time reading and writing the expert's
     * H² Hessian, not multiplying. The sums' order, hence their bits, is the same (dsyrk adds
     * rows in order whatever the split). 0: none held (diagonals only, or no budget). */
    int64_t pend_cap;
    float *px, *ph, *pw;      /* [E, pend_cap, H], [E, pend_cap, I], [E, pend_cap] */
    int64_t *pend_n;          /* [E] rows held */
    stash s_in, s_down, q_in, o_in, d_in, d_down, qb_in, kvb_in;   /* qb/kvb: MLA's latents */
    int64_t win_n;            /* tokens of the stashed window (the Q hook's row count) */
    float *logits;            /* [max_n, E] the stashed window's router logits */
    int has_logits;
    int stash_only;           /* MPI rank other than 0: stash and forward, no statistics */
    float *w_sg;              /* shared expert's sigmoid gate [H], NULL when none */
    double *scratch;          /* [threads, MOEQ_DSYRK_SCRATCH(maxdim, ROW_BLOCK)]: dsyrk's */
    struct task *tasks;       /* [2E + 8] accumulation tasks of one flush ([4E + 8] with val) */
    int has_val;              /* L.val_in / L.val_down exist */
    int64_t maxdim;
};

static void *col_alloc(moeq_calib_collector *c, size_t n, size_t size)
{
    if (n == 0) n = 1;
    void *p = calloc(n, size);
    if (!p) c->alloc_failed = 1;
    else c->bytes += (uint64_t)n * size;
    return p;
}

/* zeroed and 64-byte aligned (the chunked kernels' held rows: whole cache lines) */
static void *col_alloc64(moeq_calib_collector *c, size_t n)
{
    void *p = NULL;
    n = (n + 63) / 64 * 64;
    if (posix_memalign(&p, 64, n ? n : 64)) p = NULL;
    if (!p) c->alloc_failed = 1;
    else {
        memset(p, 0, n);
        c->bytes += (uint64_t)n;
    }
    return p;
}

static void acc_init(moeq_calib_collector *c, moeq_calib_acc *a, int64_t dim, int phi)
{
    a->dim = dim;
    if (c->stash_only) return;
    if (!c->diag) a->hess = col_alloc(c, (size_t)(dim * dim), sizeof(double));
    if (!c->diag && moeq_kernels()->hsyrk_sum) a->held = col_alloc64(c, MOEQ_HSYRK_HELD(dim));
    a->sum2 = col_alloc(c, (size_t)dim, sizeof(double));
    if (phi) {
        a->phi2_sum = col_alloc(c, (size_t)dim, sizeof(double));
        a->phi2_max = col_alloc(c, (size_t)dim, sizeof(double));
    }
}

static void acc_zero(moeq_calib_acc *a)
{
    if (!a->dim || !a->sum2) return;
    a->rows = 0;
    a->weight_sum = 0;
    a->held_n = 0;
    size_t d = (size_t)a->dim;
    if (a->hess) memset(a->hess, 0, d * d * sizeof(double));
    memset(a->sum2, 0, d * sizeof(double));
    if (a->phi2_sum) memset(a->phi2_sum, 0, d * sizeof(double));
    if (a->phi2_max) memset(a->phi2_max, 0, d * sizeof(double));
}

static void acc_free(moeq_calib_acc *a)
{
    free(a->hess);
    free(a->sum2);
    free(a->phi2_sum);
    free(a->phi2_max);
    free(a->held);
}

static void stash_init(moeq_calib_collector *c, stash *s, int64_t cap, int64_t dim, int weights)
{
    s->cap = cap;
    s->dim = dim;
    s->n = 0;
    s->x = col_alloc(c, (size_t)(cap * dim), sizeof(float));
    if (weights) s->w = col_alloc(c, (size_t)cap, sizeof(float));
}

static void stash_put(moeq_calib_collector *c, stash *s, const float *x, int64_t n, int64_t dim)
{
    if (!s->x || dim != s->dim || n > s->cap) {
        c->overflow = 1;
        return;
    }
    memcpy(s->x, x, (size_t)(n * dim) * sizeof(float));
    s->n = n;
}

static void hook_linear(void *user, int64_t layer, int64_t expert, moeq_proj proj, const float *x,
                        int64_t n, int64_t dim, const int32_t *token_index, const float *weights)
{
    moeq_calib_collector *c = user;
    (void)token_index;   /* rows arrive in token order; positions are not needed */
    if (layer != c->layer) return;
    const moeq_config *cf = c->c;
    if (expert >= 0) {
        int64_t H = cf->hidden, I = cf->moe_inter, cap = cf->top_k * c->max_n;
        if (expert >= cf->n_experts) { c->overflow = 1; return; }
        if (proj == MOEQ_PROJ_GATE) {
            if (dim != H || c->e_n[expert] >= 0 || c->fill + n > cap) { c->overflow = 1; return; }
            c->e_off[expert] = c->fill;
            c->e_n[expert] = n;
            c->fill += n;
            memcpy(c->ax + c->e_off[expert] * H, x, (size_t)(n * H) * sizeof(float));
            memcpy(c->aw + c->e_off[expert], weights, (size_t)n * sizeof(float));
        } else if (proj == MOEQ_PROJ_DOWN) {
            if (dim != I || c->e_n[expert] != n) { c->overflow = 1; return; }
            memcpy(c->ah + c->e_off[expert] * I, x, (size_t)(n * I) * sizeof(float));
        }
        return;
    }
    switch (proj) {
    case MOEQ_PROJ_Q:
        c->win_n = n;   /* every layer's attention sees every token once per window */
        if (c->scope_all) stash_put(c, &c->q_in, x, n, dim);
        break;
    case MOEQ_PROJ_O: if (c->scope_all) stash_put(c, &c->o_in, x, n, dim); break;
    case MOEQ_PROJ_SHARED_GATE: stash_put(c, &c->s_in, x, n, dim); break;
    case MOEQ_PROJ_SHARED_DOWN: stash_put(c, &c->s_down, x, n, dim); break;
    case MOEQ_PROJ_DENSE_GATE: if (c->scope_all) stash_put(c, &c->d_in, x, n, dim); break;
    case MOEQ_PROJ_DENSE_DOWN: if (c->scope_all) stash_put(c, &c->d_down, x, n, dim); break;
    case MOEQ_PROJ_Q_B: if (c->scope_all) stash_put(c, &c->qb_in, x, n, dim); break;
    case MOEQ_PROJ_KV_B: if (c->scope_all) stash_put(c, &c->kvb_in, x, n, dim); break;
    default: break;
    }
}

/* Router logits are stashed with the window and folded into the statistics at the flush,
 * like every other row, so a window computed on another MPI rank takes the same path. */
static void hook_router(void *user, int64_t layer, const float *logits, int64_t n, int64_t E)
{
    moeq_calib_collector *c = user;
    if (layer != c->layer) return;
    if (E != c->L.n_experts || n > c->max_n || !c->logits) { c->overflow = 1; return; }
    memcpy(c->logits, logits, (size_t)(n * E) * sizeof(float));
    c->has_logits = 1;
}

/* Welford per expert over the window's tokens in order; base tokens came before. */
static void router_stats(moeq_calib_collector *c, const float *logits, int64_t n, int64_t base)
{
    int64_t E = c->L.n_experts;
    for (int64_t t = 0; t < n; t++) {
        double cnt = (double)(base + t + 1);
        for (int64_t e = 0; e < E; e++) {
            double v = logits[t * E + e], d = v - c->L.logit_sum[e];
            c->L.logit_sum[e] += d / cnt;
            c->L.logit_m2[e] += d * (v - c->L.logit_sum[e]);
        }
    }
}

void moeq_calib_collector_free(moeq_calib_collector *c)
{
    if (!c) return;
    if (c->L.expert_in)
        for (int64_t e = 0; e < c->L.n_experts; e++) {
            acc_free(&c->L.expert_in[e]);
            acc_free(&c->L.expert_down[e]);
        }
    free(c->L.expert_in);
    free(c->L.expert_down);
    if (c->L.val_in)
        for (int64_t e = 0; e < c->L.n_experts; e++) {
            acc_free(&c->L.val_in[e]);
            acc_free(&c->L.val_down[e]);
        }
    free(c->L.val_in);
    free(c->L.val_down);
    free(c->L.expert_tokens);
    free(c->L.logit_sum);
    free(c->L.logit_m2);
    moeq_calib_acc *accs[] = {&c->L.shared_in, &c->L.shared_down, &c->L.attn_in, &c->L.attn_o,
                              &c->L.dense_in, &c->L.dense_down, &c->L.q_b_in, &c->L.kv_b_in};
    for (size_t i = 0; i < sizeof accs / sizeof accs[0]; i++) acc_free(accs[i]);
    stash *ss[] = {&c->s_in, &c->s_down, &c->q_in, &c->o_in, &c->d_in, &c->d_down, &c->qb_in, &c->kvb_in};
    for (size_t i = 0; i < sizeof ss / sizeof ss[0]; i++) { free(ss[i]->x); free(ss[i]->w); }
    free(c->ax); free(c->ah); free(c->aw); free(c->e_off); free(c->e_n);
    free(c->px); free(c->ph); free(c->pw); free(c->pend_n);
    free(c->w_sg); free(c->scratch); free(c->tasks); free(c->logits);
    free(c);
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

static moeq_status collector_create(const moeq_model *m, int64_t max_tokens, int diag, int scope_all,
                                    int threads, int stash_only, moeq_calib_collector **out, moeq_error *err);

moeq_status moeq_calib_collector_create(const moeq_model *m, int64_t max_tokens, int diag,
                                        int scope_all, int threads, moeq_calib_collector **out,
                                        moeq_error *err)
{
    return collector_create(m, max_tokens, diag, scope_all, threads, moeq_dist_rank() != 0, out, err);
}

moeq_status moeq_calib_collector_create_full(const moeq_model *m, int64_t max_tokens, int diag,
                                             int scope_all, int threads, moeq_calib_collector **out,
                                             moeq_error *err)
{
    return collector_create(m, max_tokens, diag, scope_all, threads, 0, out, err);
}

/* Rows held per routed expert (see pend_cap): PEND_ROWS within a budget of the larger of 64 MiB
 * and 1/16 of the experts' Hessians; below 16 rows, none. */
#define PEND_ROWS 256
static int64_t pend_rows(const moeq_config *cf, int diag)
{
    const int64_t H = cf->hidden, I = cf->moe_inter, E = cf->n_experts;
    /* none with a chunked kernel: its held rows (moeq_calib_acc.held) batch them already */
    if (diag || E <= 0 || moeq_kernels()->hsyrk_sum) return 0;
    const double hess = 8.0 * (double)E * (double)(H * H + I * I), row = 4.0 * (double)E * (double)(H + I + 1);
    const double budget = hess / 16 > 64.0 * 1048576 ? hess / 16 : 64.0 * 1048576;
    const int64_t r = budget / row >= PEND_ROWS ? PEND_ROWS : (int64_t)(budget / row);
    return r >= 16 ? r : 0;
}

static moeq_status collector_create(const moeq_model *m, int64_t max_tokens, int diag, int scope_all,
                                    int threads, int stash_only, moeq_calib_collector **out, moeq_error *err)
{
    *out = NULL;
    const moeq_config *cf = moeq_model_config(m);
    if (max_tokens <= 0 || max_tokens > (1 << 20))
        return moeq_fail(err, MOEQ_ERR_MISUSE, "window of %lld tokens is outside 1..1048576",
                         (long long)max_tokens);
    /* Statistics are laid out at the full expert width: a ragged pruned model (experts stored
     * at their pruned widths) is refused; its zero-filled form calibrates as usual. */
    const int32_t *widths = moeq_model_expert_widths(m);
    for (int64_t l = 0; widths && l < cf->layers; l++) {
        if (!cf->layer_is_moe[l]) continue;
        for (int64_t e = 0; e < cf->n_experts; e++) {
            moeq_mat g;
            moeq_error lerr;
            if (widths[l * cf->n_experts + e] > 0 &&
                moeq_model_expert(m, l, e, MOEQ_PROJ_GATE, &g, &lerr) == MOEQ_OK && g.rows != cf->moe_inter)
                return moeq_fail(err, MOEQ_ERR_UNSUPPORTED,
                                 "%s: layer %lld expert %lld is stored at its pruned width %lld (ragged layout); "
                                 "calibrate the zero-filled form (moeq prune --layout zero-fill) or the model "
                                 "before pruning", moeq_model_path(m), (long long)l, (long long)e, (long long)g.rows);
        }
    }
    moeq_calib_collector *c = calloc(1, sizeof *c);
    if (!c) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory creating the calibration collector");
    c->m = m;
    c->c = cf;
    c->max_n = max_tokens;
    c->diag = diag;
    c->scope_all = scope_all;
    c->nthreads = threads > 0 ? threads : omp_get_max_threads();
    c->layer = -1;
    c->stash_only = stash_only;
    int64_t H = cf->hidden, I = cf->moe_inter, S = cf->shared_inter, E = cf->n_experts;
    int64_t K = cf->top_k, n = max_tokens, q = cf->heads * cf->v_head_dim;
    int any_moe = 0, any_dense = 0;
    for (int64_t l = 0; l < cf->layers; l++) {
        if (cf->layer_is_moe[l]) any_moe = 1;
        else any_dense = 1;
    }
    c->maxdim = max64(H, q);
    if (any_moe && E > 0) {
        c->L.n_experts = E;
        c->L.expert_tokens = col_alloc(c, (size_t)E, sizeof(int64_t));
        c->L.logit_sum = col_alloc(c, (size_t)E, sizeof(double));
        c->L.logit_m2 = col_alloc(c, (size_t)E, sizeof(double));
        c->L.expert_in = col_alloc(c, (size_t)E, sizeof(moeq_calib_acc));
        c->L.expert_down = col_alloc(c, (size_t)E, sizeof(moeq_calib_acc));
        c->logits = col_alloc(c, (size_t)(n * E), sizeof(float));
        for (int64_t e = 0; !c->alloc_failed && e < E; e++) {
            acc_init(c, &c->L.expert_in[e], H, 0);
            acc_init(c, &c->L.expert_down[e], I, 1);
        }
        c->ax = col_alloc(c, (size_t)(K * n * H), sizeof(float));
        c->ah = col_alloc(c, (size_t)(K * n * I), sizeof(float));
        c->aw = col_alloc(c, (size_t)(K * n), sizeof(float));
        c->e_off = col_alloc(c, (size_t)E, sizeof(int64_t));
        c->e_n = col_alloc(c, (size_t)E, sizeof(int64_t));
        c->pend_cap = stash_only ? 0 : pend_rows(cf, diag);
        if (c->pend_cap) {
            c->px = col_alloc(c, (size_t)(E * c->pend_cap * H), sizeof(float));
            c->ph = col_alloc(c, (size_t)(E * c->pend_cap * I), sizeof(float));
            c->pw = col_alloc(c, (size_t)(E * c->pend_cap), sizeof(float));
            c->pend_n = col_alloc(c, (size_t)E, sizeof(int64_t));
        }
        c->maxdim = max64(c->maxdim, I);
        if (S > 0) {
            acc_init(c, &c->L.shared_in, H, 0);
            acc_init(c, &c->L.shared_down, S, 1);
            stash_init(c, &c->s_in, n, H, 0);
            stash_init(c, &c->s_down, n, S, 1);
            c->maxdim = max64(c->maxdim, S);
        }
    }
    if (scope_all) {
        acc_init(c, &c->L.attn_in, H, 0);
        acc_init(c, &c->L.attn_o, q, 0);
        stash_init(c, &c->q_in, n, H, 0);
        stash_init(c, &c->o_in, n, q, 0);
        if (cf->attn == MOEQ_ATTN_MLA) {   /* q_b's and kv_b's inputs: the normed latents */
            if (cf->q_lora_rank > 0) {
                acc_init(c, &c->L.q_b_in, cf->q_lora_rank, 0);
                stash_init(c, &c->qb_in, n, cf->q_lora_rank, 0);
            }
            acc_init(c, &c->L.kv_b_in, cf->kv_lora_rank, 0);
            stash_init(c, &c->kvb_in, n, cf->kv_lora_rank, 0);
            c->maxdim = max64(c->maxdim, max64(cf->q_lora_rank, cf->kv_lora_rank));
        }
        if (any_dense) {
            acc_init(c, &c->L.dense_in, H, 0);
            acc_init(c, &c->L.dense_down, cf->dense_inter, 0);
            stash_init(c, &c->d_in, n, H, 0);
            stash_init(c, &c->d_down, n, cf->dense_inter, 0);
            c->maxdim = max64(c->maxdim, cf->dense_inter);
        }
    }
    if (!c->stash_only && !diag)   /* dsyrk's; diagonals need none */
        c->scratch = col_alloc(c, (size_t)c->nthreads * MOEQ_DSYRK_SCRATCH(c->maxdim, ROW_BLOCK), sizeof(double));
    c->tasks = col_alloc(c, (size_t)(2 * E + 8), sizeof(struct task));
    if (c->alloc_failed) {
        moeq_calib_collector_free(c);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for one layer's calibration statistics");
    }
    c->hooks.user = c;
    c->hooks.linear_input = hook_linear;
    c->hooks.router_logits = hook_router;
    *out = c;
    return MOEQ_OK;
}

uint64_t moeq_calib_collector_bytes(const moeq_calib_collector *c) { return c ? c->bytes : 0; }
const moeq_hooks *moeq_calib_collector_hooks(moeq_calib_collector *c) { return &c->hooks; }
const moeq_calib_layer *moeq_calib_collector_layer(const moeq_calib_collector *c) { return &c->L; }

static void window_clear(moeq_calib_collector *c)
{
    c->fill = 0;
    c->win_n = 0;
    c->has_logits = 0;
    for (int64_t e = 0; c->e_n && e < c->L.n_experts; e++) c->e_n[e] = -1;
    stash *ss[] = {&c->s_in, &c->s_down, &c->q_in, &c->o_in, &c->d_in, &c->d_down, &c->qb_in, &c->kvb_in};
    for (size_t i = 0; i < sizeof ss / sizeof ss[0]; i++) ss[i]->n = 0;
}

moeq_status moeq_calib_collector_reset(moeq_calib_collector *c, int64_t layer, moeq_error *err)
{
    const moeq_config *cf = c->c;
    if (layer < 0 || layer >= cf->layers)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "layer %lld outside 0..%lld", (long long)layer,
                         (long long)cf->layers - 1);
    c->layer = layer;
    c->overflow = 0;
    c->L.layer = layer;
    c->L.is_moe = cf->layer_is_moe[layer] != 0;
    c->L.tokens = 0;
    int64_t E = c->L.n_experts;
    if (E) {
        memset(c->L.expert_tokens, 0, (size_t)E * sizeof(int64_t));
        if (c->pend_n) memset(c->pend_n, 0, (size_t)E * sizeof(int64_t));
        memset(c->L.logit_sum, 0, (size_t)E * sizeof(double));
        memset(c->L.logit_m2, 0, (size_t)E * sizeof(double));
        for (int64_t e = 0; e < E; e++) {
            acc_zero(&c->L.expert_in[e]);
            acc_zero(&c->L.expert_down[e]);
            if (c->has_val) {
                acc_zero(&c->L.val_in[e]);
                acc_zero(&c->L.val_down[e]);
            }
        }
    }
    c->L.val_tokens = 0;
    moeq_calib_acc *accs[] = {&c->L.shared_in, &c->L.shared_down, &c->L.attn_in, &c->L.attn_o,
                              &c->L.dense_in, &c->L.dense_down, &c->L.q_b_in, &c->L.kv_b_in};
    for (size_t i = 0; i < sizeof accs / sizeof accs[0]; i++) acc_zero(accs[i]);
    free(c->w_sg);
    c->w_sg = NULL;
    const moeq_layer_view *V = moeq_model_layer(c->m, layer);
    if (V->is_moe && V->shared_expert_gate.data) {
        c->w_sg = malloc((size_t)cf->hidden * sizeof(float));
        if (!c->w_sg) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
        moeq_mat_to_f32(&V->shared_expert_gate, 0, 1, c->w_sg);
    }
    window_clear(c);
    return MOEQ_OK;
}

/* Rows x[n, d] into a->hess by the kernel set's chunked kernels: packed into the held chunk as
 * they come, each full chunk summed, in the accumulator's row order (the rest held until the
 * chunk fills or the layer ends), so the sums do not depend on how the rows arrive (windows,
 * threads). */
static void held_add(moeq_calib_acc *a, const float *x, int64_t n, void *scratch)
{
    const moeq_kernel_set *ks = moeq_kernels();
    const int64_t d = a->dim, R = MOEQ_HSYRK_ROWS;
    while (n > 0) {
        const int64_t take = n < R - a->held_n ? n : R - a->held_n;
        ks->hsyrk_pack(d, x, take, a->held_n, a->held);
        a->held_n += take;
        x += take * d;
        n -= take;
        if (a->held_n == R) {
            ks->hsyrk_sum(d, R, a->held, a->hess, scratch);
            a->held_n = 0;
        }
    }
}

static void held_flush(moeq_calib_acc *a, void *scratch)
{
    if (!a->held || !a->held_n) return;
    moeq_hsyrk_pad(moeq_kernels(), a->dim, a->held_n, a->held);
    moeq_kernels()->hsyrk_sum(a->dim, a->held_n, a->held, a->hess, scratch);
    a->held_n = 0;
}

/* Adds rows x[n, dim] (weights w or NULL) to a: Σ x xᵀ by the kernel set's hsyrk_sum when it has one
 * (held_add), else in float64 by its dsyrk per block of rows (bits that do not depend on the
 * CPU's SIMD width; scratch: its buffer); the diagonal and CAMERA's φ² sums in float64 in row
 * order either way. */
static void accumulate(moeq_calib_acc *a, const float *x, const float *w, int64_t n, double *scratch)
{
    const moeq_kernel_set *ks = moeq_kernels();
    int64_t d = a->dim;
    if (n <= 0 || d <= 0) return;
    if (a->hess && a->held) held_add(a, x, n, scratch);
    for (int64_t r0 = 0; r0 < n; r0 += ROW_BLOCK) {
        int64_t nb = n - r0 < ROW_BLOCK ? n - r0 : ROW_BLOCK;
        if (a->hess && !a->held) ks->dsyrk(d, nb, x + r0 * d, a->hess, scratch);
        for (int64_t t = 0; t < nb; t++) {
            const float *row = x + (r0 + t) * d;
            /* omp simd: each j is its own chain, so vector lanes give the same bits */
            double *s2 = a->sum2;
#pragma omp simd
            for (int64_t j = 0; j < d; j++) s2[j] += (double)row[j] * (double)row[j];
            if (a->phi2_sum) {
                const double r = w ? (double)w[r0 + t] : 1.0;
                double *ps = a->phi2_sum, *pm = a->phi2_max;
#pragma omp simd
                for (int64_t j = 0; j < d; j++) {
                    const double p = r * (double)row[j], p2 = p * p;
                    ps[j] += p2;
                    pm[j] = p2 > pm[j] ? p2 : pm[j];
                }
            }
            if (w) a->weight_sum += (double)w[r0 + t];
        }
    }
    a->rows += n;
}

moeq_status moeq_calib_collector_enable_val(moeq_calib_collector *c, moeq_error *err)
{
    int64_t E = c->L.n_experts;
    if (c->has_val || E == 0 || c->stash_only) return MOEQ_OK;
    if (c->diag)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "a validation split needs full Hessians (not --diag)");
    struct task *t = col_alloc(c, (size_t)(4 * E + 8), sizeof *t);
    c->L.val_in = col_alloc(c, (size_t)E, sizeof(moeq_calib_acc));
    c->L.val_down = col_alloc(c, (size_t)E, sizeof(moeq_calib_acc));
    for (int64_t e = 0; !c->alloc_failed && e < E; e++) {
        acc_init(c, &c->L.val_in[e], c->c->hidden, 0);
        acc_init(c, &c->L.val_down[e], c->c->moe_inter, 0);
    }
    if (t) {
        free(c->tasks);
        c->tasks = t;
    }
    c->has_val = 1;   /* the free path needs it even after a failed allocation */
    if (c->alloc_failed) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for the validation Hessians");
    return MOEQ_OK;
}

/* the lower triangle copied onto the upper, in 32 x 32 blocks (a column at a time would read a
 * cache line per element) */
static void mirror(moeq_calib_acc *a)
{
    if (!a->dim || !a->hess) return;
    const int64_t d = a->dim, B = 32;
    double *h = a->hess;
    for (int64_t i0 = 0; i0 < d; i0 += B)
        for (int64_t j0 = i0; j0 < d; j0 += B) {
            const int64_t i1 = i0 + B < d ? i0 + B : d, j1 = j0 + B < d ? j0 + B : d;
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = j0 > i + 1 ? j0 : i + 1; j < j1; j++) h[i * d + j] = h[j * d + i];
        }
}

static int by_cost(const void *pa, const void *pb)
{
    const task *a = pa, *b = pb;
    if (a->cost != b->cost) return a->cost > b->cost ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* Runs tasks[0, nt): one accumulator per task, parallel over tasks, the costliest first (with a
 * chunked kernel a window completes a few experts' chunks among many tasks that only copy
 * rows: in list order the last chunk could start when the other threads are done). Which thread
 * runs a task, and when, does not change its result. */
static void run_tasks(moeq_calib_collector *c, int64_t nt)
{
    task *tasks = c->tasks;
    for (int64_t i = 0; i < nt; i++) {
        task *t = &tasks[i];
        const double d = (double)t->a->dim, rows = (double)(t->n + t->n2);
        double mults = rows;   /* rows summed now */
        if (t->a->hess && t->a->held) {
            const int64_t R = MOEQ_HSYRK_ROWS, got = t->a->held_n + t->n + t->n2;
            mults = (double)(got / R * R) + (t->last && got % R ? (double)R : 0.0);
        }
        t->cost = (t->a->hess ? mults * d * d + (t->last ? d * d / 2 : 0.0) : 0.0) + rows * d;
        t->idx = i;
    }
    qsort(tasks, (size_t)nt, sizeof *tasks, by_cost);
#pragma omp parallel for schedule(dynamic, 1) num_threads(c->nthreads)
    for (int64_t i = 0; i < nt; i++) {
        double *sc = c->scratch ? c->scratch + (size_t)omp_get_thread_num() * MOEQ_DSYRK_SCRATCH(c->maxdim, ROW_BLOCK)
                                : NULL;
        accumulate(tasks[i].a, tasks[i].x, tasks[i].w, tasks[i].n, sc);
        accumulate(tasks[i].a, tasks[i].x2, tasks[i].w2, tasks[i].n2, sc);
        if (tasks[i].last) {   /* the layer's last task of this accumulator: its sums are final */
            held_flush(tasks[i].a, sc);
            mirror(tasks[i].a);
        }
    }
}

moeq_status moeq_calib_collector_flush(moeq_calib_collector *c, moeq_error *err)
{
    return moeq_calib_collector_flush_split(c, 0, err);
}

moeq_status moeq_calib_collector_flush_split(moeq_calib_collector *c, int val, moeq_error *err)
{
    if (val && !c->has_val)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "layer %lld: validation window without a validation split",
                         (long long)c->layer);
    if (c->layer < 0) return moeq_fail(err, MOEQ_ERR_MISUSE, "collector flushed before a reset");
    if (c->overflow)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "layer %lld: hook rows did not match the collector "
                         "(window longer than %lld tokens, or an unexpected shape)",
                         (long long)c->layer, (long long)c->max_n);
    if (c->stash_only)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "layer %lld: this MPI rank only forwards its windows to rank 0",
                         (long long)c->layer);
    const moeq_config *cf = c->c;
    int64_t E = c->L.n_experts, H = cf->hidden, I = cf->moe_inter;
    task *tasks = c->tasks;
    int64_t nt = 0;
    if (c->has_logits) router_stats(c, c->logits, c->win_n, c->L.tokens);
    c->L.tokens += c->win_n;
    if (c->L.is_moe && E > 0) {
        /* Rows held back (pend_cap) are summed for every expert at once when one of them would
         * overflow: one expert's tasks alone would leave the other threads idle. */
        const int64_t P = c->pend_cap;
        int drain = !P;
        for (int64_t e = 0; P && e < E; e++) drain |= c->e_n[e] > 0 && c->pend_n[e] + c->e_n[e] > P;
        for (int64_t e = 0; e < E; e++) {
            const int64_t ne = c->e_n[e] > 0 ? c->e_n[e] : 0, pn = P ? c->pend_n[e] : 0;
            if (!ne && !(drain && pn)) continue;
            c->L.expert_tokens[e] += ne;
            const float *w = c->aw + c->e_off[e], *xi = c->ax + c->e_off[e] * H, *xh = c->ah + c->e_off[e] * I;
            if (!ne) w = xi = xh = NULL;
            if (!drain) {   /* held back for a later flush or finish */
                memcpy(c->px + (e * P + pn) * H, xi, (size_t)(ne * H) * sizeof(float));
                memcpy(c->ph + (e * P + pn) * I, xh, (size_t)(ne * I) * sizeof(float));
                memcpy(c->pw + e * P + pn, w, (size_t)ne * sizeof(float));
                c->pend_n[e] += ne;
            } else {        /* the rows held, then this window's */
                const float *pw = P ? c->pw + e * P : NULL;
                tasks[nt++] = (task){&c->L.expert_in[e], P ? c->px + e * P * H : NULL, pw, pn, xi, w, ne, 0, 0, 0};
                tasks[nt++] = (task){&c->L.expert_down[e], P ? c->ph + e * P * I : NULL, pw, pn, xh, w, ne, 0, 0, 0};
                if (P) c->pend_n[e] = 0;
            }
            if (val && ne) {   /* the same rows again into their own sums: H_cal = H − H_val */
                tasks[nt++] = (task){&c->L.val_in[e], c->ax + c->e_off[e] * H, NULL, ne, NULL, NULL, 0, 0, 0, 0};
                tasks[nt++] = (task){&c->L.val_down[e], c->ah + c->e_off[e] * I, NULL, ne, NULL, NULL, 0, 0, 0, 0};
            }
        }
        if (val) c->L.val_tokens += c->win_n;
        if (c->L.shared_in.dim && c->s_in.n) {
            /* the shared expert's output is scaled by sigmoid(w_sg · x) when it has that gate
             * (Qwen2-MoE), computed exactly as the forward pass does; 1 otherwise */
            for (int64_t t = 0; t < c->s_in.n; t++) {
                float g = 1.0f;
                if (c->w_sg) {
                    double z = 0;
                    for (int64_t i = 0; i < H; i++) z += (double)c->s_in.x[t * H + i] * c->w_sg[i];
                    g = (float)(1.0 / (1.0 + exp(-(double)(float)z)));
                }
                c->s_down.w[t] = g;
            }
            tasks[nt++] = (task){&c->L.shared_in, c->s_in.x, NULL, c->s_in.n, NULL, NULL, 0, 0, 0, 0};
            tasks[nt++] = (task){&c->L.shared_down, c->s_down.x, c->s_down.w, c->s_down.n, NULL, NULL, 0, 0, 0, 0};
        }
    }
    if (c->scope_all) {
        tasks[nt++] = (task){&c->L.attn_in, c->q_in.x, NULL, c->q_in.n, NULL, NULL, 0, 0, 0, 0};
        tasks[nt++] = (task){&c->L.attn_o, c->o_in.x, NULL, c->o_in.n, NULL, NULL, 0, 0, 0, 0};
        if (c->L.q_b_in.dim) tasks[nt++] = (task){&c->L.q_b_in, c->qb_in.x, NULL, c->qb_in.n, NULL, NULL, 0, 0, 0, 0};
        if (c->L.kv_b_in.dim) tasks[nt++] = (task){&c->L.kv_b_in, c->kvb_in.x, NULL, c->kvb_in.n, NULL, NULL, 0, 0, 0, 0};
        if (!c->L.is_moe && c->L.dense_in.dim) {
            tasks[nt++] = (task){&c->L.dense_in, c->d_in.x, NULL, c->d_in.n, NULL, NULL, 0, 0, 0, 0};
            tasks[nt++] = (task){&c->L.dense_down, c->d_down.x, NULL, c->d_down.n, NULL, NULL, 0, 0, 0, 0};
        }
    }
    run_tasks(c, nt);
    window_clear(c);
    return MOEQ_OK;
}

/* ---- a window's rows between MPI ranks ---------------------------------------------------- */

/* One window's stash as bytes (p NULL: only its size): tokens, router logits, the expert arena
 * and the six per-input stashes, in a fixed order. */
static size_t put(uint8_t *p, size_t off, const void *src, size_t n)
{
    if (p && n) memcpy(p + off, src, n);
    return off + n;
}

static stash *stash_list(moeq_calib_collector *c, int i)
{
    stash *ss[] = {&c->s_in, &c->s_down, &c->q_in, &c->o_in, &c->d_in, &c->d_down, &c->qb_in, &c->kvb_in};
    return ss[i];
}

static size_t window_record(moeq_calib_collector *c, uint8_t *p)
{
    const moeq_config *cf = c->c;
    int64_t E = c->e_n ? c->L.n_experts : 0, H = cf->hidden, I = cf->moe_inter;
    int64_t hl = c->has_logits;
    size_t o = put(p, 0, &c->win_n, 8);
    o = put(p, o, &hl, 8);
    if (hl) o = put(p, o, c->logits, (size_t)(c->win_n * c->L.n_experts) * 4);
    o = put(p, o, &c->fill, 8);
    if (E) {
        o = put(p, o, c->e_off, (size_t)E * 8);
        o = put(p, o, c->e_n, (size_t)E * 8);
        o = put(p, o, c->ax, (size_t)(c->fill * H) * 4);
        o = put(p, o, c->ah, (size_t)(c->fill * I) * 4);
        o = put(p, o, c->aw, (size_t)c->fill * 4);
    }
    for (int i = 0; i < 8; i++) {
        stash *t = stash_list(c, i);
        o = put(p, o, &t->n, 8);
        if (t->n > 0) o = put(p, o, t->x, (size_t)(t->n * t->dim) * 4);
    }
    return o;
}

static int take(const uint8_t *p, size_t len, size_t *o, void *dst, size_t n)
{
    if (len - *o < n) return 0;
    if (n) memcpy(dst, p + *o, n);
    *o += n;
    return 1;
}

static moeq_status window_load(moeq_calib_collector *c, const uint8_t *p, size_t len, int src,
                               moeq_error *err)
{
    const moeq_config *cf = c->c;
    int64_t E = c->e_n ? c->L.n_experts : 0, H = cf->hidden, I = cf->moe_inter, hl = 0;
    size_t o = 0;
    int ok = take(p, len, &o, &c->win_n, 8) && c->win_n >= 0 && c->win_n <= c->max_n &&
             take(p, len, &o, &hl, 8) && (hl == 0 || (hl == 1 && c->logits)) &&
             (!hl || take(p, len, &o, c->logits, (size_t)(c->win_n * c->L.n_experts) * 4)) &&
             take(p, len, &o, &c->fill, 8) && c->fill >= 0 && c->fill <= cf->top_k * c->max_n;
    c->has_logits = (int)hl;
    if (ok && E) {
        ok = take(p, len, &o, c->e_off, (size_t)E * 8) && take(p, len, &o, c->e_n, (size_t)E * 8);
        for (int64_t e = 0; ok && e < E; e++)
            ok = c->e_n[e] < 0 || (c->e_off[e] >= 0 && c->e_n[e] <= c->fill - c->e_off[e]);
        ok = ok && take(p, len, &o, c->ax, (size_t)(c->fill * H) * 4) &&
             take(p, len, &o, c->ah, (size_t)(c->fill * I) * 4) && take(p, len, &o, c->aw, (size_t)c->fill * 4);
    }
    for (int i = 0; ok && i < 8; i++) {
        stash *t = stash_list(c, i);
        ok = take(p, len, &o, &t->n, 8) && t->n >= 0 && (t->n == 0 || (t->x && t->n <= t->cap)) &&
             (t->n == 0 || take(p, len, &o, t->x, (size_t)(t->n * t->dim) * 4));
    }
    if (!ok || o != len)
        return moeq_fail(err, MOEQ_ERR_IO, "layer %lld: malformed window record of %zu bytes from rank %d",
                         (long long)c->layer, len, src);
    return MOEQ_OK;
}

moeq_status moeq_calib_collector_send(moeq_calib_collector *c, int dst, moeq_error *err)
{
    if (c->overflow)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "layer %lld: hook rows did not match the collector",
                         (long long)c->layer);
    size_t n = window_record(c, NULL);
    uint8_t *p = malloc(n ? n : 1);
    if (!p) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for a %zu-byte window record", n);
    window_record(c, p);
    moeq_status st = moeq_dist_send_blob(p, n, dst, MOEQ_TAG_CALIB_WINDOW, err);
    free(p);
    window_clear(c);
    return st;
}

moeq_status moeq_calib_collector_recv(moeq_calib_collector *c, int src, moeq_error *err)
{
    void *p = NULL;
    size_t n = 0;
    moeq_status st = moeq_dist_recv_blob(&p, &n, src, MOEQ_TAG_CALIB_WINDOW, err);
    if (st == MOEQ_OK) st = window_load(c, p, n, src, err);
    free(p);
    return st;
}

void moeq_calib_collector_finish(moeq_calib_collector *c)
{
    int64_t nt = 0;   /* the rows still held: pending expert rows, then every chunk's rest */
    const int64_t P = c->pend_cap, H = c->c->hidden, I = c->c->moe_inter;
    moeq_calib_acc *accs[] = {&c->L.shared_in, &c->L.shared_down, &c->L.attn_in, &c->L.attn_o,
                              &c->L.dense_in, &c->L.dense_down, &c->L.q_b_in, &c->L.kv_b_in};
    const size_t na = sizeof accs / sizeof accs[0];
    for (int64_t e = 0; e < c->L.n_experts; e++) {
        const int64_t pn = P ? c->pend_n[e] : 0;
        c->tasks[nt++] = (task){&c->L.expert_in[e], pn ? c->px + e * P * H : NULL, pn ? c->pw + e * P : NULL, pn,
                                NULL, NULL, 0, 1, 0, 0};
        c->tasks[nt++] = (task){&c->L.expert_down[e], pn ? c->ph + e * P * I : NULL, pn ? c->pw + e * P : NULL, pn,
                                NULL, NULL, 0, 1, 0, 0};
        if (P) c->pend_n[e] = 0;
        if (c->has_val) {
            c->tasks[nt++] = (task){&c->L.val_in[e], NULL, NULL, 0, NULL, NULL, 0, 1, 0, 0};
            c->tasks[nt++] = (task){&c->L.val_down[e], NULL, NULL, 0, NULL, NULL, 0, 1, 0, 0};
        }
    }
    for (size_t i = 0; i < na; i++) c->tasks[nt++] = (task){accs[i], NULL, NULL, 0, NULL, NULL, 0, 1, 0, 0};
    run_tasks(c, nt);   /* each task also mirrors its Hessian, in parallel */
}

/* ---- a finished layer's statistics as bytes (resume checkpoints) ---------------------------- */

static void acc_list(moeq_calib_layer *L, moeq_calib_acc **out, int64_t *n)
{
    int64_t k = 0;
    for (int64_t e = 0; e < L->n_experts; e++) { out[k++] = &L->expert_in[e]; out[k++] = &L->expert_down[e]; }
    for (int64_t e = 0; L->val_in && e < L->n_experts; e++) { out[k++] = &L->val_in[e]; out[k++] = &L->val_down[e]; }
    moeq_calib_acc *rest[] = {&L->shared_in, &L->shared_down, &L->attn_in, &L->attn_o, &L->dense_in, &L->dense_down,
                              &L->q_b_in, &L->kv_b_in};
    for (int i = 0; i < 8; i++) out[k++] = rest[i];
    *n = k;
}

static moeq_status layer_pack(moeq_calib_layer *L, moeq_buf *b, moeq_error *err)
{
    int64_t hdr[5] = {L->layer, L->is_moe, L->tokens, L->n_experts, L->val_tokens}, na;
    moeq_buf_put(b, hdr, sizeof hdr);
    if (L->n_experts) {
        moeq_buf_put(b, L->expert_tokens, (size_t)L->n_experts * 8);
        moeq_buf_put(b, L->logit_sum, (size_t)L->n_experts * 8);
        moeq_buf_put(b, L->logit_m2, (size_t)L->n_experts * 8);
    }
    moeq_calib_acc **accs = malloc((size_t)(4 * L->n_experts + 8) * sizeof *accs);
    if (!accs) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    acc_list(L, accs, &na);
    for (int64_t i = 0; i < na; i++) {
        moeq_calib_acc *a = accs[i];
        int64_t h[5] = {a->dim, a->rows, a->hess != NULL, a->phi2_sum != NULL, a->sum2 != NULL};
        moeq_buf_put(b, h, sizeof h);
        moeq_buf_put(b, &a->weight_sum, 8);
        size_t d = (size_t)a->dim;
        if (a->hess) moeq_buf_put(b, a->hess, d * d * 8);
        if (a->sum2) moeq_buf_put(b, a->sum2, d * 8);
        if (a->phi2_sum) { moeq_buf_put(b, a->phi2_sum, d * 8); moeq_buf_put(b, a->phi2_max, d * 8); }
    }
    free(accs);
    return b->oom ? moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory packing layer %lld", (long long)L->layer) : MOEQ_OK;
}

static moeq_status layer_unpack(moeq_calib_layer *L, const uint8_t *p, size_t len, int64_t layer,
                                const char *dir, moeq_error *err)
{
    size_t o = 0;
    int64_t hdr[5], na;
    int ok = take(p, len, &o, hdr, sizeof hdr) && hdr[0] == layer && hdr[3] == L->n_experts;
    if (ok) { L->layer = hdr[0]; L->is_moe = (int)hdr[1]; L->tokens = hdr[2]; L->val_tokens = hdr[4]; }
    if (ok && L->n_experts)
        ok = take(p, len, &o, L->expert_tokens, (size_t)L->n_experts * 8) &&
             take(p, len, &o, L->logit_sum, (size_t)L->n_experts * 8) &&
             take(p, len, &o, L->logit_m2, (size_t)L->n_experts * 8);
    moeq_calib_acc **accs = malloc((size_t)(4 * L->n_experts + 8) * sizeof *accs);
    if (!accs) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    acc_list(L, accs, &na);
    for (int64_t i = 0; ok && i < na; i++) {
        moeq_calib_acc *a = accs[i];
        int64_t h[5];
        ok = take(p, len, &o, h, sizeof h) && h[0] == a->dim && h[2] == (a->hess != NULL) &&
             h[3] == (a->phi2_sum != NULL) && h[4] == (a->sum2 != NULL) && take(p, len, &o, &a->weight_sum, 8);
        if (!ok) break;
        a->rows = h[1];
        size_t d = (size_t)a->dim;
        if (a->hess) ok = take(p, len, &o, a->hess, d * d * 8);
        if (ok && a->sum2) ok = take(p, len, &o, a->sum2, d * 8);
        if (ok && a->phi2_sum) ok = take(p, len, &o, a->phi2_sum, d * 8) && take(p, len, &o, a->phi2_max, d * 8);
    }
    free(accs);
    if (!ok || o != len)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "--resume %s: layer %lld's checkpoint does not fit this run's "
                         "statistics (written by another version or with other options)", dir, (long long)layer);
    return MOEQ_OK;
}

moeq_status moeq_calib_collector_bcast(moeq_calib_collector *c, int root, moeq_error *err)
{
    if (moeq_dist_size() == 1) return MOEQ_OK;
    moeq_buf b = {0};
    moeq_status st = MOEQ_OK;
    if (moeq_dist_rank() == root) st = layer_pack(&c->L, &b, err);
    else if (c->stash_only) st = moeq_fail(err, MOEQ_ERR_MISUSE, "a stash-only collector cannot take statistics");
    if (st != MOEQ_OK) { free(b.p); return st; }
    void *p = b.p;
    size_t n = b.n;
    st = moeq_dist_bcast_blob(&p, &n, root, err);
    if (st == MOEQ_OK && moeq_dist_rank() != root) st = layer_unpack(&c->L, p, n, c->layer, "(broadcast)", err);
    free(p);
    return st;
}

/* ---- moeq calibrate -------------------------------------------------------------------- */

typedef struct calib_run {
    moeq_calib_collector *col;
    moeq_calib_h5 *h5;
    const moeq_calib_opts *o;
    moeq_calib_result *res;
    int64_t layers, tokens;
    double t0;
    moeq_resume *rs;          /* rank 0 with --resume */
    int64_t val_every;        /* the validation split, 0: none */
} calib_run;

static const moeq_hooks *run_hooks(void *user, int64_t layer)
{
    calib_run *cr = user;
    moeq_error e;
    if (moeq_calib_collector_reset(cr->col, layer, &e) != MOEQ_OK) return NULL;
    return moeq_calib_collector_hooks(cr->col);
}

static moeq_status run_window(void *user, int64_t layer, int64_t window, moeq_error *err)
{
    (void)layer;
    calib_run *cr = user;
    int64_t k = cr->val_every;
    return moeq_calib_collector_flush_split(cr->col, k > 0 && window % k == k - 1, err);
}

/* Coverage, the caller's callback and the HDF5 group of one finished layer (rank 0), whether
 * it was just computed or read back from a resume checkpoint. */
static moeq_status layer_finished(calib_run *cr, const moeq_calib_layer *L, int64_t layer, moeq_error *err)
{
    uint8_t *flags = NULL;
    if (L->is_moe && L->n_experts) {
        moeq_calib_coverage *cv = &cr->res->moe_layers[cr->res->n_moe_layers++];
        cv->layer = layer;
        cv->n_experts = L->n_experts;
        cv->expert_tokens = malloc((size_t)L->n_experts * sizeof(int64_t));
        cv->flag = malloc((size_t)L->n_experts);
        if (!cv->expert_tokens || !cv->flag) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
        for (int64_t e = 0; e < L->n_experts; e++) {
            int64_t ne = L->expert_tokens[e];
            cv->expert_tokens[e] = ne;
            cv->flag[e] = ne == 0 ? MOEQ_CALIB_DEAD
                        : ne < cr->res->min_tokens ? MOEQ_CALIB_UNDERSAMPLED : MOEQ_CALIB_OK;
            cv->dead += ne == 0;
            cv->undersampled += ne > 0 && ne < cr->res->min_tokens;
        }
        flags = cv->flag;
    }
    moeq_status st = MOEQ_OK;
    if (cr->o->on_layer) st = cr->o->on_layer(cr->o->user, L, err);
    if (st == MOEQ_OK && cr->h5) st = moeq_calib_h5_write_layer(cr->h5, L, flags, err);
    return st;
}

static moeq_status run_layer_done(void *user, int64_t layer, int *rerun, moeq_error *err)
{
    calib_run *cr = user;
    *rerun = 0;
    if (moeq_dist_rank() != 0) return MOEQ_OK;   /* rank 0 holds the statistics */
    moeq_calib_collector_finish(cr->col);
    const moeq_calib_layer *L = moeq_calib_collector_layer(cr->col);
    if (L->layer != layer || L->tokens != cr->tokens)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "layer %lld saw %lld tokens, expected %lld",
                         (long long)layer, (long long)L->tokens, (long long)cr->tokens);
    moeq_status st = layer_finished(cr, L, layer, err);
    if (st == MOEQ_OK && cr->o->resume_dir) {
        moeq_buf b = {0};
        st = layer_pack(&cr->col->L, &b, err);
        if (st == MOEQ_OK) st = moeq_resume_write(cr->rs, layer, b.p, b.n, err);
        free(b.p);
    }
    if (st == MOEQ_OK && cr->o->progress) {
        double el = moeq_now() - cr->t0;
        cr->o->progress(cr->o->user, layer + 1, cr->layers,
                        el > 0 ? (double)cr->tokens * (double)(layer + 1) / (double)cr->layers / el : 0);
    }
    return st;
}

/* Resume: the layers a stopped run finished, read back into the HDF5 file and the coverage
 * in order, exactly as they were written then. */
static moeq_status replay_layers(calib_run *cr, int64_t done, moeq_error *err)
{
    moeq_status st = MOEQ_OK;
    for (int64_t l = 0; st == MOEQ_OK && l < done; l++) {
        void *p = NULL;
        size_t n = 0;
        st = moeq_calib_collector_reset(cr->col, l, err);
        if (st == MOEQ_OK) st = moeq_resume_read(cr->rs, l, &p, &n, err);
        if (st == MOEQ_OK) st = layer_unpack(&cr->col->L, p, n, l, cr->o->resume_dir, err);
        if (st == MOEQ_OK) st = layer_finished(cr, &cr->col->L, l, err);
        free(p);
    }
    return st;
}

void moeq_calib_result_free(moeq_calib_result *r)
{
    if (!r) return;
    for (int64_t i = 0; i < r->n_moe_layers; i++) {
        free(r->moe_layers[i].expert_tokens);
        free(r->moe_layers[i].flag);
    }
    free(r->moe_layers);
    memset(r, 0, sizeof *r);
}

/* Collector heap in bytes, mirroring moeq_calib_collector_create (docs/STATS.md). */
static uint64_t collector_formula(const moeq_config *cf, int64_t n, int threads, int diag,
                                  int scope_all)
{
    int64_t H = cf->hidden, I = cf->moe_inter, S = cf->shared_inter, E = cf->n_experts;
    int64_t K = cf->top_k, q = cf->heads * cf->v_head_dim, F = cf->dense_inter;
    int any_moe = 0, any_dense = 0;
    for (int64_t l = 0; l < cf->layers; l++) {
        if (cf->layer_is_moe[l]) any_moe = 1;
        else any_dense = 1;
    }
    uint64_t b = 0;
    /* with a chunked kernel (hsyrk_sum), each Hessian holds a chunk of its rows, packed */
    const int held = !diag && moeq_kernels()->hsyrk_sum;
#define ACC(d, phi) (b += 8 * (uint64_t)((diag ? 0 : (d) * (d)) + (phi ? 3 : 1) * (d)) + (held ? MOEQ_HSYRK_HELD(d) : 0))
    int64_t maxdim = max64(H, q);
    if (any_moe && E > 0) {
        b += (uint64_t)E * (8 + 8 + 8 + 2 * sizeof(moeq_calib_acc) + 8 + 8);
        for (int64_t e = 0; e < E; e++) { ACC(H, 0); ACC(I, 1); }
        b += 4 * (uint64_t)(K * n * (H + I + 1));
        const int64_t P = pend_rows(cf, diag);   /* the rows held back */
        if (P) b += 4 * (uint64_t)(E * P * (H + I + 1)) + 8 * (uint64_t)E;
        maxdim = max64(maxdim, I);
        if (S > 0) {
            ACC(H, 0); ACC(S, 1);
            b += 4 * (uint64_t)(n * H + n * S + n);
            maxdim = max64(maxdim, S);
        }
    }
    if (scope_all) {
        ACC(H, 0); ACC(q, 0);
        b += 4 * (uint64_t)(n * H + n * q);
        if (cf->attn == MOEQ_ATTN_MLA) {
            const int64_t QL = cf->q_lora_rank, R = cf->kv_lora_rank;
            if (QL > 0) { ACC(QL, 0); b += 4 * (uint64_t)(n * QL); }
            ACC(R, 0);
            b += 4 * (uint64_t)(n * R);
            maxdim = max64(maxdim, max64(QL, R));
        }
        if (any_dense) {
            ACC(H, 0); ACC(F, 0);
            b += 4 * (uint64_t)(n * H + n * F);
            maxdim = max64(maxdim, F);
        }
    }
#undef ACC
    b += (uint64_t)(2 * E + 8) * sizeof(task);
    return b + (diag ? 0 : 8 * (uint64_t)threads * MOEQ_DSYRK_SCRATCH(maxdim, ROW_BLOCK));
}

const char *moeq_calib_hessian_sums(int diag)
{
    if (diag) return NULL;
    return moeq_kernels()->hsyrk_sum ? moeq_kernels()->hsyrk_sums : "f64";
}

uint64_t moeq_calib_memory_bytes(const moeq_model *m, int64_t tokens, int64_t ctx, int threads,
                                 int diag, int scope_all)
{
    const moeq_config *cf = moeq_model_config(m);
    int T = threads > 0 ? threads : omp_get_max_threads();
    moeq_runner *r = NULL;
    uint64_t runner = 0;
    if (moeq_runner_create(m, ctx, T, &r, NULL) == MOEQ_OK) runner = moeq_runner_bytes(r);
    moeq_runner_free(r);
    int64_t H = cf->hidden, I = cf->moe_inter, S = cf->shared_inter, q = cf->heads * cf->v_head_dim;
    int64_t big = diag ? max64(H, I) : max64(max64(H * H, I * I), max64(S * S, scope_all ? q * q : 0));
    /* HDF5 keeps one chunk and its deflated copy (at most the same size plus a margin) */
    uint64_t h5 = 2 * 8 * (uint64_t)big + 8 * (uint64_t)big / 1000 + 1024;
    /* plus a fixed allowance for the HDF5 library (its code pages, metadata cache, free lists)
     * and OpenMP thread stacks: 5.8 MiB measured on the fixtures */
    return 4 * (uint64_t)(tokens * H) + runner + collector_formula(cf, ctx, T, diag, scope_all) + h5 +
           (8u << 20);
}

moeq_status moeq_calibrate(const moeq_model *m, const int32_t *tokens, int64_t n,
                           const char *out_path, const moeq_calib_opts *o,
                           moeq_calib_result *res, moeq_error *err)
{
    memset(res, 0, sizeof *res);
    const moeq_config *cf = moeq_model_config(m);
    int64_t ctx = o->ctx > 0 ? o->ctx : 512;
    int64_t W;
    moeq_status wst = moeq_token_windows(m, tokens, n, ctx, o->max_tokens, &W, err);
    if (wst != MOEQ_OK) return wst;
    int threads = o->threads > 0 ? o->threads : omp_get_max_threads();
    res->ctx = ctx;
    res->windows = W;
    res->tokens = W * ctx;
    res->min_tokens = o->min_tokens > 0 ? o->min_tokens : 2 * cf->hidden;
    res->bytes_formula = moeq_calib_memory_bytes(m, res->tokens, ctx, threads, o->diag, o->scope_all);
    /* the validation split: windows w % K == K − 1; none when the run has fewer than K windows */
    int64_t K = o->val_every > 0 && !o->diag && cf->n_experts > 0 ? o->val_every : 0;
    if (K && W / K == 0) K = 0;
    res->val_every = K;
    res->val_windows = K ? W / K : 0;
    if (K) {
        int64_t E = cf->n_experts, H = cf->hidden, I = cf->moe_inter;
        res->bytes_formula += (uint64_t)E * (8 * (uint64_t)(H * H + H + I * I + I) + 2 * sizeof(moeq_calib_acc)) +
                              (uint64_t)(4 * E + 8) * sizeof(task);
    }
    int64_t n_moe = 0;
    for (int64_t l = 0; l < cf->layers; l++) n_moe += cf->layer_is_moe[l] != 0;
    res->moe_layers = calloc((size_t)(n_moe ? n_moe : 1), sizeof *res->moe_layers);
    if (!res->moe_layers) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");

    calib_run cr = {.o = o, .res = res, .layers = cf->layers, .tokens = res->tokens, .val_every = K};
    int root = moeq_dist_rank() == 0;
    uint64_t sent0 = moeq_dist_bytes_sent();
    uint64_t tok_hash = XXH64(tokens, (size_t)res->tokens * sizeof(int32_t), 0);
    char hash_hex[17];
    snprintf(hash_hex, sizeof hash_hex, "%016llx", (unsigned long long)tok_hash);
    moeq_resume_field in[12];
    size_t nin = 0;
    char v[64];
#define FIELD_I(name, val) (snprintf(v, sizeof v, "%lld", (long long)(val)), moeq_resume_field_text(&in[nin++], name, v))
    moeq_resume_field_text(&in[nin++], "model_type", cf->model_type);
    FIELD_I("layers", cf->layers);
    FIELD_I("hidden", cf->hidden);
    FIELD_I("experts", cf->n_experts);
    moeq_resume_field_text(&in[nin++], "tokens_xxh64", hash_hex);
    FIELD_I("tokens", res->tokens);
    FIELD_I("ctx", ctx);
    FIELD_I("min_tokens", res->min_tokens);
    FIELD_I("diag", o->diag);
    FIELD_I("scope_all", o->scope_all);
    FIELD_I("compress", o->compress);
    FIELD_I("val_every", K);
#undef FIELD_I
    int64_t done = 0;
    moeq_status st = MOEQ_OK;
    if (o->resume_dir && root) {
        st = moeq_resume_open(o->resume_dir, "calibrate", in, nin, cf->layers, &cr.rs, err);
        if (st == MOEQ_OK) done = moeq_layerwise_resume_start(cr.rs, o->resume_dir, cf->layers);
    }
    st = moeq_dist_agree(st, err);
    if (st == MOEQ_OK) st = moeq_dist_bcast(&done, sizeof done, 0, err);
    res->resumed_layers = done;
    if (st == MOEQ_OK && out_path && root) {
        moeq_calib_h5_meta meta = {
            .tokens_source = o->tokens_source,
            .tokens_xxh64 = tok_hash,
            .tokens = res->tokens, .ctx = ctx, .windows = W, .min_tokens = res->min_tokens,
            .diag = o->diag, .scope_all = o->scope_all, .compress = o->compress,
            .val_every = K, .val_windows = res->val_windows, .hessian_sums = moeq_calib_hessian_sums(o->diag)};
        st = moeq_calib_h5_create(out_path, m, &meta, &cr.h5, err);
    }
    if (st == MOEQ_OK)
        st = moeq_calib_collector_create(m, ctx, o->diag, o->scope_all, threads, &cr.col, err);
    if (st == MOEQ_OK && K) st = moeq_calib_collector_enable_val(cr.col, err);
    if (st == MOEQ_OK && root && done > 0) st = replay_layers(&cr, done, err);
    st = moeq_dist_agree(st, err);
    if (st == MOEQ_OK && done < cf->layers) {
        moeq_layerwise lw = {.ctx = ctx, .windows = W, .threads = threads, .user = &cr,
                             .layer_hooks = run_hooks, .window_done = run_window,
                             .layer_done = run_layer_done, .collector = cr.col,
                             .resume_dir = o->resume_dir,
                             .first_layer = done};
        cr.t0 = moeq_now();
        st = moeq_layerwise_run(m, tokens, &lw, err);
        res->seconds = moeq_now() - cr.t0;
        res->tokens_per_s = res->seconds > 0 ? (double)res->tokens * (double)(cf->layers - done) /
                                                   (double)cf->layers / res->seconds : 0;
    }
    moeq_calib_collector_free(cr.col);
    if (cr.h5) {
        if (st == MOEQ_OK) st = moeq_calib_h5_commit(cr.h5, &res->file_bytes, err);
        else moeq_calib_h5_abort(cr.h5);
    }
    /* a failure inside the run is one rank's (the others may be waiting for it): it is
     * returned as it is, and the tool ends the job; a clean finish is agreed */
    if (st == MOEQ_OK) st = moeq_dist_agree(st, err);
    res->comm_bytes = moeq_dist_bytes_sent() - sent0;
    if (st == MOEQ_OK) st = moeq_dist_sum_u64(&res->comm_bytes, err);
    if (st == MOEQ_OK && cr.rs) {   /* the file is in place: the checkpoint has served */
        moeq_layerwise_resume_clean(o->resume_dir, cf->layers);
        moeq_resume_remove(cr.rs);
        cr.rs = NULL;
    }
    moeq_resume_close(cr.rs);
    if (st != MOEQ_OK) moeq_calib_result_free(res);
    return st;
}
