/* Calibration statistics: the layer-wise driver, the per-layer accumulator and moeq_calibrate.
 * The forward pass calls expert hooks inside a critical section, so the hooks only copy rows
 * into a per-window stash; the float64 accumulation runs afterwards in parallel over
 * (expert, input) tasks, each task summing its rows in token order with one single-threaded
 * BLAS call per window. The order of every sum is thus fixed by the input alone. */
#include "moeq_eval.h"
#include "moeq_calib.h"
#include "moeq_core.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* model/calib_blas.c: C (lower) += Xᵀ X, float64, single-threaded */

/* Rows are widened to float64 ROW_BLOCK at a time: the scratch stays small for wide inputs
 * (a 5632-wide shared expert) while dsyrk still gets blocks big enough to run fast. */
#define ROW_BLOCK 256

/* ---- layer-wise driver ------------------------------------------------------------------ */

moeq_status moeq_layerwise_run(const moeq_model *m, const int32_t *tokens,
                               const moeq_layerwise *lw, moeq_error *err)
{
    const moeq_config *c = moeq_model_config(m);
    int64_t ctx = lw->ctx, W = lw->windows, H = c->hidden;
    if (ctx <= 0 || W <= 0)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "layer-wise run of %lld windows of %lld tokens",
                         (long long)W, (long long)ctx);
    size_t win = (size_t)(ctx * H);
    float *x = malloc((size_t)W * win * sizeof(float));
    float *x_in = lw->keep_inputs ? malloc((size_t)W * win * sizeof(float)) : NULL;
    moeq_runner *r = NULL;
    moeq_status st = MOEQ_OK;
    if (!x || (lw->keep_inputs && !x_in)) {
        st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory holding the residual stream of %lld "
                       "tokens (%.1f MiB)", (long long)(W * ctx),
                       (double)W * (double)win * 4.0 / 1048576.0);
        goto done;
    }
    st = moeq_runner_create(m, ctx, lw->threads, &r, err);
    for (int64_t w = 0; st == MOEQ_OK && w < W; w++)
        st = moeq_forward_embed(r, tokens + w * ctx, ctx, x + (size_t)w * win, err);
    for (int64_t l = 0; st == MOEQ_OK && l < c->layers; l++) {
        const moeq_hooks *hk = lw->layer_hooks ? lw->layer_hooks(lw->user, l) : NULL;
        if (x_in) memcpy(x_in, x, (size_t)W * win * sizeof(float));
        for (int64_t w = 0; st == MOEQ_OK && w < W; w++) {
            st = moeq_forward_layer(r, l, x + (size_t)w * win, ctx, hk, err);
            if (st == MOEQ_OK && lw->window_done) st = lw->window_done(lw->user, l, w, err);
        }
        int rerun = 0;
        if (st == MOEQ_OK && lw->layer_done) st = lw->layer_done(lw->user, l, &rerun, err);
        if (st == MOEQ_OK && rerun) {
            if (!x_in) {
                st = moeq_fail(err, MOEQ_ERR_MISUSE, "layer %lld asks for a re-run without "
                               "keep_inputs", (long long)l);
                break;
            }
            memcpy(x, x_in, (size_t)W * win * sizeof(float));
            for (int64_t w = 0; st == MOEQ_OK && w < W; w++)
                st = moeq_forward_layer(r, l, x + (size_t)w * win, ctx, NULL, err);
        }
    }
done:
    moeq_runner_free(r);
    free(x);
    free(x_in);
    return st;
}

/* ---- collector ---------------------------------------------------------------------------- */

typedef struct task {       /* one accumulator and this window's rows for it */
    moeq_calib_acc *a;
    const float *x, *w;
    int64_t n;
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
    stash s_in, s_down, q_in, o_in, d_in, d_down;
    float *w_sg;              /* shared expert's sigmoid gate [H], NULL when none */
    double *scratch;          /* [threads, ROW_BLOCK * maxdim] rows widened to float64 */
    struct task *tasks;       /* [2E + 6] accumulation tasks of one flush */
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

static void acc_init(moeq_calib_collector *c, moeq_calib_acc *a, int64_t dim, int phi)
{
    a->dim = dim;
    if (!c->diag) a->hess = col_alloc(c, (size_t)(dim * dim), sizeof(double));
    a->sum2 = col_alloc(c, (size_t)dim, sizeof(double));
    if (phi) {
        a->phi2_sum = col_alloc(c, (size_t)dim, sizeof(double));
        a->phi2_max = col_alloc(c, (size_t)dim, sizeof(double));
    }
}

static void acc_zero(moeq_calib_acc *a)
{
    if (!a->dim) return;
    a->rows = 0;
    a->weight_sum = 0;
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
        c->L.tokens += n;   /* every layer's attention sees every token once per window */
        if (c->scope_all) stash_put(c, &c->q_in, x, n, dim);
        break;
    case MOEQ_PROJ_O: if (c->scope_all) stash_put(c, &c->o_in, x, n, dim); break;
    case MOEQ_PROJ_SHARED_GATE: stash_put(c, &c->s_in, x, n, dim); break;
    case MOEQ_PROJ_SHARED_DOWN: stash_put(c, &c->s_down, x, n, dim); break;
    case MOEQ_PROJ_DENSE_GATE: if (c->scope_all) stash_put(c, &c->d_in, x, n, dim); break;
    case MOEQ_PROJ_DENSE_DOWN: if (c->scope_all) stash_put(c, &c->d_down, x, n, dim); break;
    default: break;
    }
}

/* Welford per expert over tokens in order. */
static void hook_router(void *user, int64_t layer, const float *logits, int64_t n, int64_t E)
{
    moeq_calib_collector *c = user;
    if (layer != c->layer) return;
    if (E != c->L.n_experts) { c->overflow = 1; return; }
    int64_t base = c->L.tokens - n;   /* the Q hook of this window already counted n tokens */
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
    free(c->L.expert_tokens);
    free(c->L.logit_sum);
    free(c->L.logit_m2);
    moeq_calib_acc *accs[] = {&c->L.shared_in, &c->L.shared_down, &c->L.attn_in, &c->L.attn_o,
                              &c->L.dense_in, &c->L.dense_down};
    for (size_t i = 0; i < sizeof accs / sizeof accs[0]; i++) acc_free(accs[i]);
    stash *ss[] = {&c->s_in, &c->s_down, &c->q_in, &c->o_in, &c->d_in, &c->d_down};
    for (size_t i = 0; i < sizeof ss / sizeof ss[0]; i++) { free(ss[i]->x); free(ss[i]->w); }
    free(c->ax); free(c->ah); free(c->aw); free(c->e_off); free(c->e_n);
    free(c->w_sg); free(c->scratch); free(c->tasks);
    free(c);
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

moeq_status moeq_calib_collector_create(const moeq_model *m, int64_t max_tokens, int diag,
                                        int scope_all, int threads, moeq_calib_collector **out,
                                        moeq_error *err)
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
    int64_t H = cf->hidden, I = cf->moe_inter, S = cf->shared_inter, E = cf->n_experts;
    int64_t K = cf->top_k, n = max_tokens, q = cf->heads * cf->head_dim;
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
        for (int64_t e = 0; !c->alloc_failed && e < E; e++) {
            acc_init(c, &c->L.expert_in[e], H, 0);
            acc_init(c, &c->L.expert_down[e], I, 1);
        }
        c->ax = col_alloc(c, (size_t)(K * n * H), sizeof(float));
        c->ah = col_alloc(c, (size_t)(K * n * I), sizeof(float));
        c->aw = col_alloc(c, (size_t)(K * n), sizeof(float));
        c->e_off = col_alloc(c, (size_t)E, sizeof(int64_t));
        c->e_n = col_alloc(c, (size_t)E, sizeof(int64_t));
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
        if (any_dense) {
            acc_init(c, &c->L.dense_in, H, 0);
            acc_init(c, &c->L.dense_down, cf->dense_inter, 0);
            stash_init(c, &c->d_in, n, H, 0);
            stash_init(c, &c->d_down, n, cf->dense_inter, 0);
            c->maxdim = max64(c->maxdim, cf->dense_inter);
        }
    }
    c->scratch = col_alloc(c, (size_t)c->nthreads * (size_t)(ROW_BLOCK * c->maxdim), sizeof(double));
    c->tasks = col_alloc(c, (size_t)(2 * E + 6), sizeof(struct task));
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
    for (int64_t e = 0; c->e_n && e < c->L.n_experts; e++) c->e_n[e] = -1;
    stash *ss[] = {&c->s_in, &c->s_down, &c->q_in, &c->o_in, &c->d_in, &c->d_down};
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
        memset(c->L.logit_sum, 0, (size_t)E * sizeof(double));
        memset(c->L.logit_m2, 0, (size_t)E * sizeof(double));
        for (int64_t e = 0; e < E; e++) {
            acc_zero(&c->L.expert_in[e]);
            acc_zero(&c->L.expert_down[e]);
        }
    }
    moeq_calib_acc *accs[] = {&c->L.shared_in, &c->L.shared_down, &c->L.attn_in, &c->L.attn_o,
                              &c->L.dense_in, &c->L.dense_down};
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

/* Adds rows x[n, dim] (weights w or NULL) to a: Σ x xᵀ with one dsyrk per block of rows
 * widened to float64, the diagonal and CAMERA's φ² sums in row order. */
static void accumulate(moeq_calib_acc *a, const float *x, const float *w, int64_t n, double *dx)
{
    int64_t d = a->dim;
    if (n <= 0 || d <= 0) return;
    for (int64_t r0 = 0; r0 < n; r0 += ROW_BLOCK) {
        int64_t nb = n - r0 < ROW_BLOCK ? n - r0 : ROW_BLOCK;
        for (int64_t i = 0; i < nb * d; i++) dx[i] = (double)x[r0 * d + i];
        if (a->hess) moeq_dsyrk_tn(d, nb, dx, 1.0, a->hess);
        for (int64_t t = 0; t < nb; t++) {
            const double *row = dx + t * d;
            for (int64_t j = 0; j < d; j++) a->sum2[j] += row[j] * row[j];
            if (a->phi2_sum) {
                double r = w ? (double)w[r0 + t] : 1.0;
                for (int64_t j = 0; j < d; j++) {
                    double p = r * row[j], p2 = p * p;
                    a->phi2_sum[j] += p2;
                    if (p2 > a->phi2_max[j]) a->phi2_max[j] = p2;
                }
            }
            if (w) a->weight_sum += (double)w[r0 + t];
        }
    }
    a->rows += n;
}

moeq_status moeq_calib_collector_flush(moeq_calib_collector *c, moeq_error *err)
{
    if (c->layer < 0) return moeq_fail(err, MOEQ_ERR_MISUSE, "collector flushed before a reset");
    if (c->overflow)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "layer %lld: hook rows did not match the collector "
                         "(window longer than %lld tokens, or an unexpected shape)",
                         (long long)c->layer, (long long)c->max_n);
    const moeq_config *cf = c->c;
    int64_t E = c->L.n_experts, H = cf->hidden, I = cf->moe_inter;
    task *tasks = c->tasks;
    int64_t nt = 0;
    if (c->L.is_moe && E > 0) {
        for (int64_t e = 0; e < E; e++) {
            int64_t ne = c->e_n[e];
            if (ne <= 0) continue;
            c->L.expert_tokens[e] += ne;
            const float *w = c->aw + c->e_off[e];
            tasks[nt++] = (task){&c->L.expert_in[e], c->ax + c->e_off[e] * H, w, ne};
            tasks[nt++] = (task){&c->L.expert_down[e], c->ah + c->e_off[e] * I, w, ne};
        }
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
            tasks[nt++] = (task){&c->L.shared_in, c->s_in.x, NULL, c->s_in.n};
            tasks[nt++] = (task){&c->L.shared_down, c->s_down.x, c->s_down.w, c->s_down.n};
        }
    }
    if (c->scope_all) {
        tasks[nt++] = (task){&c->L.attn_in, c->q_in.x, NULL, c->q_in.n};
        tasks[nt++] = (task){&c->L.attn_o, c->o_in.x, NULL, c->o_in.n};
        if (!c->L.is_moe && c->L.dense_in.dim) {
            tasks[nt++] = (task){&c->L.dense_in, c->d_in.x, NULL, c->d_in.n};
            tasks[nt++] = (task){&c->L.dense_down, c->d_down.x, NULL, c->d_down.n};
        }
    }
    /* Largest tasks first so the dynamic schedule balances; which thread runs a task does not
     * change its result. */
#pragma omp parallel for schedule(dynamic, 1) num_threads(c->nthreads)
    for (int64_t i = 0; i < nt; i++) {
        double *dx = c->scratch + (size_t)omp_get_thread_num() * (size_t)(ROW_BLOCK * c->maxdim);
        accumulate(tasks[i].a, tasks[i].x, tasks[i].w, tasks[i].n, dx);
    }
    window_clear(c);
    return MOEQ_OK;
}

static void mirror(moeq_calib_acc *a)
{
    if (!a->dim || !a->hess) return;
    int64_t d = a->dim;
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = i + 1; j < d; j++) a->hess[i * d + j] = a->hess[j * d + i];
}

void moeq_calib_collector_finish(moeq_calib_collector *c)
{
    for (int64_t e = 0; e < c->L.n_experts; e++) {
        mirror(&c->L.expert_in[e]);
        mirror(&c->L.expert_down[e]);
    }
    moeq_calib_acc *accs[] = {&c->L.shared_in, &c->L.shared_down, &c->L.attn_in, &c->L.attn_o,
                              &c->L.dense_in, &c->L.dense_down};
    for (size_t i = 0; i < sizeof accs / sizeof accs[0]; i++) mirror(accs[i]);
}

/* ---- moeq calibrate -------------------------------------------------------------------- */

typedef struct calib_run {
    moeq_calib_collector *col;
    moeq_calib_h5 *h5;
    const moeq_calib_opts *o;
    moeq_calib_result *res;
    int64_t layers, tokens;
    double t0;
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
    (void)window;
    calib_run *cr = user;
    return moeq_calib_collector_flush(cr->col, err);
}

static moeq_status run_layer_done(void *user, int64_t layer, int *rerun, moeq_error *err)
{
    calib_run *cr = user;
    *rerun = 0;
    moeq_calib_collector_finish(cr->col);
    const moeq_calib_layer *L = moeq_calib_collector_layer(cr->col);
    if (L->layer != layer || L->tokens != cr->tokens)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "layer %lld saw %lld tokens, expected %lld",
                         (long long)layer, (long long)L->tokens, (long long)cr->tokens);
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
    if (st == MOEQ_OK && cr->o->progress) {
        double el = moeq_now() - cr->t0;
        cr->o->progress(cr->o->user, layer + 1, cr->layers,
                        el > 0 ? (double)cr->tokens * (double)(layer + 1) / (double)cr->layers / el : 0);
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
    int64_t K = cf->top_k, q = cf->heads * cf->head_dim, F = cf->dense_inter;
    int any_moe = 0, any_dense = 0;
    for (int64_t l = 0; l < cf->layers; l++) {
        if (cf->layer_is_moe[l]) any_moe = 1;
        else any_dense = 1;
    }
    uint64_t b = 0;
#define ACC(d, phi) (b += 8 * (uint64_t)((diag ? 0 : (d) * (d)) + (phi ? 3 : 1) * (d)))
    int64_t maxdim = max64(H, q);
    if (any_moe && E > 0) {
        b += (uint64_t)E * (8 + 8 + 8 + 2 * sizeof(moeq_calib_acc) + 8 + 8);
        for (int64_t e = 0; e < E; e++) { ACC(H, 0); ACC(I, 1); }
        b += 4 * (uint64_t)(K * n * (H + I + 1));
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
        if (any_dense) {
            ACC(H, 0); ACC(F, 0);
            b += 4 * (uint64_t)(n * H + n * F);
            maxdim = max64(maxdim, F);
        }
    }
#undef ACC
    b += (uint64_t)(2 * E + 6) * sizeof(task);
    return b + 8 * (uint64_t)threads * (uint64_t)(ROW_BLOCK * maxdim);
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
    int64_t H = cf->hidden, I = cf->moe_inter, S = cf->shared_inter, q = cf->heads * cf->head_dim;
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
    int64_t n_moe = 0;
    for (int64_t l = 0; l < cf->layers; l++) n_moe += cf->layer_is_moe[l] != 0;
    res->moe_layers = calloc((size_t)(n_moe ? n_moe : 1), sizeof *res->moe_layers);
    if (!res->moe_layers) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");

    calib_run cr = {.o = o, .res = res, .layers = cf->layers, .tokens = res->tokens};
    moeq_status st = MOEQ_OK;
    if (out_path) {
        moeq_calib_h5_meta meta = {
            .tokens_source = o->tokens_source,
            .tokens_xxh64 = XXH64(tokens, (size_t)res->tokens * sizeof(int32_t), 0),
            .tokens = res->tokens, .ctx = ctx, .windows = W, .min_tokens = res->min_tokens,
            .diag = o->diag, .scope_all = o->scope_all, .compress = o->compress};
        st = moeq_calib_h5_create(out_path, m, &meta, &cr.h5, err);
    }
    if (st == MOEQ_OK)
        st = moeq_calib_collector_create(m, ctx, o->diag, o->scope_all, threads, &cr.col, err);
    if (st == MOEQ_OK) {
        moeq_layerwise lw = {.ctx = ctx, .windows = W, .threads = threads, .user = &cr,
                             .layer_hooks = run_hooks, .window_done = run_window,
                             .layer_done = run_layer_done};
        cr.t0 = moeq_now();
        st = moeq_layerwise_run(m, tokens, &lw, err);
        res->seconds = moeq_now() - cr.t0;
        res->tokens_per_s = res->seconds > 0 ? (double)res->tokens / res->seconds : 0;
    }
    moeq_calib_collector_free(cr.col);
    if (cr.h5) {
        if (st == MOEQ_OK) st = moeq_calib_h5_commit(cr.h5, &res->file_bytes, err);
        else moeq_calib_h5_abort(cr.h5);
    }
    if (st != MOEQ_OK) moeq_calib_result_free(res);
    return st;
}
