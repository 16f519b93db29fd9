/* Calibration statistics: counts, PSD Hessians, brute-force references, layer-wise driver vs a
 * whole-model pass, thread-count independence, peak memory against docs/STATS.md, bad inputs. */
#include <lapacke.h>
#undef I   /* <complex.h>, pulled in by lapacke.h */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include "float_kernels.h"
#include "harness.h"
#include "moeq_calib.h"
#include "moeq_core.h"
#include "moeq_kernels.h"
#include "moeq_safetensors.h"

static const char *MODELS[] = {"tiny-mixtral", "tiny-qwen2moe", "tiny-qwen3moe", "tiny-olmoe"};

static int quick(void) { return getenv("MOEQ_TEST_QUICK") != NULL; }

static int32_t *load_tokens(const moeq_model *m, int64_t *n)
{
    moeq_error err = {0};
    int32_t *ids = NULL;
    if (moeq_tokens_load(FIXTURES "/heldout.safetensors", moeq_model_config(m)->vocab, &ids, n, &err) != MOEQ_OK)
        fprintf(stderr, "  %s\n", err.detail);
    return ids;
}

static moeq_model *open_model(const char *name)
{
    char p[256];
    snprintf(p, sizeof p, FIXTURES "/%s", name);
    moeq_error err = {0};
    moeq_model *m = NULL;
    if (moeq_model_open(p, &m, &err) != MOEQ_OK) fprintf(stderr, "  %s\n", err.detail);
    return m;
}

/* ---- digests: every array of a layer's statistics, bit for bit ---------------------------- */

static uint64_t acc_digest(const moeq_calib_acc *a, uint64_t h)
{
    if (!a->dim) return h;
    size_t d = (size_t)a->dim;
    h = XXH64(&a->rows, sizeof a->rows, h);
    h = XXH64(&a->weight_sum, sizeof a->weight_sum, h);
    if (a->hess) h = XXH64(a->hess, d * d * sizeof(double), h);
    h = XXH64(a->sum2, d * sizeof(double), h);
    if (a->phi2_sum) h = XXH64(a->phi2_sum, d * sizeof(double), h);
    if (a->phi2_max) h = XXH64(a->phi2_max, d * sizeof(double), h);
    return h;
}

static uint64_t layer_digest(const moeq_calib_layer *L)
{
    uint64_t h = XXH64(&L->tokens, sizeof L->tokens, (uint64_t)L->layer);
    if (L->is_moe)
        for (int64_t e = 0; e < L->n_experts; e++) {
            h = XXH64(&L->expert_tokens[e], sizeof(int64_t), h);
            h = XXH64(&L->logit_sum[e], sizeof(double), h);
            h = XXH64(&L->logit_m2[e], sizeof(double), h);
            h = acc_digest(&L->expert_in[e], h);
            h = acc_digest(&L->expert_down[e], h);
        }
    const moeq_calib_acc *o[] = {&L->shared_in, &L->shared_down, &L->attn_in, &L->attn_o, &L->dense_in,
                                 &L->dense_down, &L->q_b_in, &L->kv_b_in};
    for (int i = 0; i < 8; i++) h = acc_digest(o[i], h);
    return h;
}

typedef struct digests {
    uint64_t d[16];
    int n;
} digests;

static moeq_status on_layer_digest(void *user, const moeq_calib_layer *L, moeq_error *err)
{
    (void)err;
    digests *d = user;
    if (L->layer < 16) d->d[L->layer] = layer_digest(L);
    d->n++;
    return MOEQ_OK;
}

/* ---- counts, symmetry, PSD --------------------------------------------------------------- */

static double min_eig_ratio(const double *H, int64_t d, double *maxe)
{
    double *a = malloc((size_t)(d * d) * sizeof(double)), *w = malloc((size_t)d * sizeof(double));
    memcpy(a, H, (size_t)(d * d) * sizeof(double));
    lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'N', 'L', (lapack_int)d, a, (lapack_int)d, w);
    double mn = info ? -INFINITY : w[0], mx = info ? 0 : w[d - 1];
    free(a);
    free(w);
    *maxe = mx;
    return mx > 0 ? mn / mx : mn;
}

typedef struct check_ctx {
    const moeq_config *c;
    int64_t tokens;
    int psd_checked, failures;
} check_ctx;

static void check_hess(check_ctx *cc, const moeq_calib_acc *a, const char *what, int64_t layer, int64_t e)
{
    if (!a->dim || !a->hess) return;
    int64_t d = a->dim;
    int sym = 1;
    double trace = 0, s2 = 0;
    for (int64_t i = 0; i < d; i++) {
        trace += a->hess[i * d + i];
        s2 += a->sum2[i];
        for (int64_t j = 0; j < i; j++) sym &= a->hess[i * d + j] == a->hess[j * d + i];
    }
    CHECK_MSG(sym, "layer %lld expert %lld %s not symmetric", (long long)layer, (long long)e, what);
    /* chunked sums (hsyrk_sum): each entry within b sqrt(H_ii H_jj) of the exact one, so the
     * trace within b of Σx² (float64 in row order) and the error's norm below b · trace, which
     * bounds how far below zero an eigenvalue can go */
    const double b = moeq_kernels()->hsyrk_sum ? moeq_hsyrk_bound(moeq_kernels()->hsyrk_sums, MOEQ_HSYRK_ROWS) : 0;
    CHECK_MSG(fabs(trace - s2) <= (b > 0 ? b : 1e-12) * s2, "layer %lld expert %lld %s trace %.17g vs Σx² %.17g",
              (long long)layer, (long long)e, what, trace, s2);
    if (a->rows == 0) return;
    double mx, r = min_eig_ratio(a->hess, d, &mx);
    /* rank-deficient Hessians (fewer rows than dim) have zero eigenvalues that round to
     * about ±d·eps·max */
    CHECK_MSG(r >= (b > 0 ? -b * s2 / mx : -1e-12) && mx > 0, "layer %lld expert %lld %s min eig / max eig = %g",
              (long long)layer, (long long)e, what, r);
    cc->psd_checked++;
}

static moeq_status on_layer_check(void *user, const moeq_calib_layer *L, moeq_error *err)
{
    (void)err;
    check_ctx *cc = user;
    CHECK(L->tokens == cc->tokens);
    if (L->is_moe) {
        int64_t sum = 0;
        double wsum = 0;
        for (int64_t e = 0; e < L->n_experts; e++) {
            sum += L->expert_tokens[e];
            CHECK(L->expert_in[e].rows == L->expert_tokens[e] && L->expert_down[e].rows == L->expert_tokens[e]);
            wsum += L->expert_down[e].weight_sum;
            CHECK(L->logit_m2[e] >= 0);
            check_hess(cc, &L->expert_in[e], "H_in", L->layer, e);
            check_hess(cc, &L->expert_down[e], "H_down", L->layer, e);
            for (int64_t j = 0; j < L->expert_down[e].dim; j++)
                CHECK(L->expert_down[e].phi2_max[j] <= L->expert_down[e].phi2_sum[j] &&
                      L->expert_down[e].phi2_sum[j] <= L->expert_down[e].sum2[j]);   /* 0 < r <= 1 */
        }
        CHECK_MSG(sum == cc->c->top_k * cc->tokens, "layer %lld: Σ n_e = %lld, top_k × tokens = %lld",
                  (long long)L->layer, (long long)sum, (long long)(cc->c->top_k * cc->tokens));
        if (cc->c->norm_topk_prob)
            CHECK_NEAR(wsum, (double)cc->tokens, 1e-5 * (double)cc->tokens);
        else
            CHECK(wsum > 0 && wsum < (double)cc->tokens);
        check_hess(cc, &L->shared_in, "shared H_in", L->layer, -1);
        check_hess(cc, &L->shared_down, "shared H_down", L->layer, -1);
        CHECK((L->shared_in.dim > 0) == (cc->c->shared_inter > 0));
        if (L->shared_in.dim) CHECK(L->shared_in.rows == cc->tokens);
    }
    check_hess(cc, &L->attn_in, "attn_in", L->layer, -1);
    check_hess(cc, &L->attn_o, "attn_o", L->layer, -1);
    check_hess(cc, &L->dense_in, "dense_in", L->layer, -1);
    check_hess(cc, &L->dense_down, "dense_down", L->layer, -1);
    return MOEQ_OK;
}

static void test_calib_counts_symmetric_psd(void)
{
    for (int i = quick(); i < 4; i += quick() ? 2 : 1) {   /* quick: qwen2moe, olmoe */
        moeq_model *m = open_model(MODELS[i]);
        if (!m) { CHECK(0); continue; }
        int64_t n = 0;
        int32_t *ids = load_tokens(m, &n);
        check_ctx cc = {.c = moeq_model_config(m), .tokens = 4 * 64};
        moeq_calib_opts o = {.ctx = 64, .max_tokens = 4 * 64 + 17, .scope_all = i == 1, .threads = 2,
                             .user = &cc, .on_layer = on_layer_check};
        moeq_calib_result res;
        moeq_error err = {0};
        CHECK_MSG(moeq_calibrate(m, ids, n, NULL, &o, &res, &err) == MOEQ_OK, "%s", err.detail);
        CHECK(res.tokens == 256 && res.windows == 4 && res.min_tokens == 2 * cc.c->hidden);
        int64_t moe = 0;
        for (int64_t l = 0; l < cc.c->layers; l++) moe += cc.c->layer_is_moe[l];
        CHECK(res.n_moe_layers == moe);
        CHECK(cc.psd_checked > 8);
        moeq_calib_result_free(&res);
        free(ids);
        moeq_model_close(m);
    }
}

/* ---- brute force: an independent pass with the test's own hooks ---------------------------
 * Accumulates, in long double with plain loops, Σ x xᵀ, Σ h hᵀ, Σ (r h)², max (r h)² and the
 * token counts of every routed expert of one layer, and the router logits' mean and variance
 * (two passes over stored logits), straight from moeq_forward's hooks. */
typedef struct brute {
    int64_t layer, E, H, I, S, tokens;
    long double *hin, *hdn, *phi2, *sh_in, *sh_dn, *sh_phi2;
    double *phimax, *sh_phimax;
    int64_t *cnt;
    float *logits;   /* [tokens, E] */
    const float *wsg;
    float *sh_x;     /* last shared input (for the gate) */
} brute;

static void brute_linear(void *user, int64_t layer, int64_t expert, moeq_proj proj, const float *x, int64_t n,
                         int64_t dim, const int32_t *ti, const float *w)
{
    (void)ti;
    brute *b = user;
    if (layer != b->layer) return;
    if (expert >= 0 && proj == MOEQ_PROJ_GATE) {
        b->cnt[expert] += n;
        long double *h = b->hin + expert * dim * dim;
        for (int64_t t = 0; t < n; t++)
            for (int64_t i = 0; i < dim; i++)
                for (int64_t j = 0; j < dim; j++) h[i * dim + j] += (long double)x[t * dim + i] * x[t * dim + j];
    } else if (expert >= 0 && proj == MOEQ_PROJ_DOWN) {
        long double *h = b->hdn + expert * dim * dim;
        for (int64_t t = 0; t < n; t++)
            for (int64_t i = 0; i < dim; i++) {
                for (int64_t j = 0; j < dim; j++) h[i * dim + j] += (long double)x[t * dim + i] * x[t * dim + j];
                double p = (double)w[t] * (double)x[t * dim + i];
                b->phi2[expert * dim + i] += (long double)p * p;
                if (p * p > b->phimax[expert * dim + i]) b->phimax[expert * dim + i] = p * p;
            }
    } else if (proj == MOEQ_PROJ_SHARED_GATE) {
        memcpy(b->sh_x, x, (size_t)(n * dim) * sizeof(float));
        for (int64_t t = 0; t < n; t++)
            for (int64_t i = 0; i < dim; i++)
                for (int64_t j = 0; j < dim; j++) b->sh_in[i * dim + j] += (long double)x[t * dim + i] * x[t * dim + j];
    } else if (proj == MOEQ_PROJ_SHARED_DOWN) {
        for (int64_t t = 0; t < n; t++) {
            double g = 1;
            if (b->wsg) {   /* the gate as transformers computes it: sigmoid(x · w) */
                double z = 0;
                for (int64_t i = 0; i < b->H; i++) z += (double)b->sh_x[t * b->H + i] * b->wsg[i];
                g = (float)(1 / (1 + exp(-(double)(float)z)));
            }
            for (int64_t i = 0; i < dim; i++) {
                for (int64_t j = 0; j < dim; j++) b->sh_dn[i * dim + j] += (long double)x[t * dim + i] * x[t * dim + j];
                double p = g * x[t * dim + i];
                b->sh_phi2[i] += (long double)p * p;
                if (p * p > b->sh_phimax[i]) b->sh_phimax[i] = p * p;
            }
        }
    }
}

static void brute_router(void *user, int64_t layer, const float *logits, int64_t n, int64_t E)
{
    brute *b = user;
    if (layer != b->layer) return;
    memcpy(b->logits + b->tokens * E, logits, (size_t)(n * E) * sizeof(float));
    b->tokens += n;
}

typedef struct got {
    int64_t layer;
    uint64_t ok;
    brute *b;
} got;

static double rel(long double a, double b, long double scale) { return (double)(fabsl(a - (long double)b) / scale); }

/* With a chunked kernel set (hsyrk_sum: MOEQ_HSYRK_ROWS's sums), each entry is within its kind's
 * bound (moeq_hsyrk_bound) of Σ|x_i x_j| <= sqrt(H_ii H_jj) of the exact sum: the worst
 * |H - H_brute| as a fraction of that bound (<= 1). Float64 sets are held to 1e-12 instead. */
static int chunked(void) { return moeq_kernels()->hsyrk_sum != NULL; }
static double chunk_err(const long double *ref, const double *val, int64_t d)
{
    const double bound = moeq_hsyrk_bound(moeq_kernels()->hsyrk_sums, MOEQ_HSYRK_ROWS);
    double w = 0;
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++) {
            const double e = (double)fabsl(ref[i * d + j] - (long double)val[i * d + j]) / (bound * sqrt((double)(ref[i * d + i] * ref[j * d + j])) + 1e-300);
            w = fmax(w, e);
        }
    return w;
}

static moeq_status on_layer_compare(void *user, const moeq_calib_layer *L, moeq_error *err)
{
    (void)err;
    got *g = user;
    if (L->layer != g->layer) return MOEQ_OK;
    brute *b = g->b;
    g->ok = 1;
    double worst = 0, worst_chunk = 0;
    const int ch = chunked();
    for (int64_t e = 0; e < b->E; e++) {
        CHECK(L->expert_tokens[e] == b->cnt[e]);
        long double tr = 0, sc = 0;
        for (int64_t i = 0; i < b->H; i++) tr += b->hin[e * b->H * b->H + i * b->H + i];
        double tr_got = 0;
        for (int64_t i = 0; i < b->H; i++) tr_got += L->expert_in[e].hess[i * b->H + i];
        CHECK_MSG(rel(tr, tr_got, tr) < (ch ? 3.0 * ldexp(1.0, -16) + 768 * ldexp(1.0, -24) : 1e-13),
                  "expert %lld: trace %.17Lg vs Σ‖x‖² %.17g", (long long)e, tr, tr_got);
        sc = tr / (long double)b->H;   /* mean diagonal: the scale of the entries */
        if (ch) worst_chunk = fmax(worst_chunk, chunk_err(b->hin + e * b->H * b->H, L->expert_in[e].hess, b->H));
        else
            for (int64_t i = 0; i < b->H * b->H; i++) worst = fmax(worst, rel(b->hin[e * b->H * b->H + i], L->expert_in[e].hess[i], sc));
        long double trd = 0;
        for (int64_t i = 0; i < b->I; i++) trd += b->hdn[e * b->I * b->I + i * b->I + i];
        sc = trd / (long double)b->I;
        if (ch) worst_chunk = fmax(worst_chunk, chunk_err(b->hdn + e * b->I * b->I, L->expert_down[e].hess, b->I));
        else
            for (int64_t i = 0; i < b->I * b->I; i++) worst = fmax(worst, rel(b->hdn[e * b->I * b->I + i], L->expert_down[e].hess[i], sc));
        for (int64_t i = 0; i < b->I; i++) {
            worst = fmax(worst, rel(b->phi2[e * b->I + i], L->expert_down[e].phi2_sum[i], sc));
            CHECK(b->phimax[e * b->I + i] == L->expert_down[e].phi2_max[i]);
        }
        /* router logits: two-pass mean and variance */
        long double mean = 0, var = 0;
        for (int64_t t = 0; t < b->tokens; t++) mean += b->logits[t * b->E + e];
        mean /= b->tokens;
        for (int64_t t = 0; t < b->tokens; t++) var += (b->logits[t * b->E + e] - mean) * (b->logits[t * b->E + e] - mean);
        var /= b->tokens;
        CHECK_NEAR(L->logit_sum[e], (double)mean, 1e-12 * (1 + fabsl(mean)));
        CHECK_NEAR(L->logit_m2[e] / (double)L->tokens, (double)var, 1e-11 * (double)var);
    }
    if (b->S) {
        long double sc = 0;
        for (int64_t i = 0; i < b->H; i++) sc += b->sh_in[i * b->H + i];
        sc /= b->H;
        if (ch) worst_chunk = fmax(worst_chunk, chunk_err(b->sh_in, L->shared_in.hess, b->H));
        else
            for (int64_t i = 0; i < b->H * b->H; i++) worst = fmax(worst, rel(b->sh_in[i], L->shared_in.hess[i], sc));
        sc = 0;
        for (int64_t i = 0; i < b->S; i++) sc += b->sh_dn[i * b->S + i];
        sc /= b->S;
        if (ch) worst_chunk = fmax(worst_chunk, chunk_err(b->sh_dn, L->shared_down.hess, b->S));
        else
            for (int64_t i = 0; i < b->S * b->S; i++) worst = fmax(worst, rel(b->sh_dn[i], L->shared_down.hess[i], sc));
        for (int64_t i = 0; i < b->S; i++) {
            worst = fmax(worst, rel(b->sh_phi2[i], L->shared_down.phi2_sum[i], sc));
            CHECK_MSG(b->sh_phimax[i] == L->shared_down.phi2_max[i], "shared channel %lld: max %.17g vs %.17g",
                      (long long)i, b->sh_phimax[i], L->shared_down.phi2_max[i]);
        }
    }
    printf("  layer %lld: worst |H - H_brute| / mean diag = %.3g (float64 sums)", (long long)L->layer, worst);
    if (ch) printf(", chunked Hessians at %.3g of their bound", worst_chunk);
    printf("\n");
    CHECK_MSG(worst < 1e-12, "worst relative difference %.3g", worst);
    CHECK_MSG(worst_chunk <= 1.0, "chunked Hessians at %.3g of their error bound", worst_chunk);
    return MOEQ_OK;
}

static void brute_force_model(const char *name, int64_t layer)
{
    moeq_model *m = open_model(name);
    if (!m) { CHECK(0); return; }
    const moeq_config *c = moeq_model_config(m);
    int64_t n = 0, ctx = 64, W = quick() ? 2 : 4;
    int32_t *ids = load_tokens(m, &n);
    brute b = {.layer = layer, .E = c->n_experts, .H = c->hidden, .I = c->moe_inter, .S = c->shared_inter};
    int64_t H = b.H, I = b.I, S = b.S, E = b.E;
    b.hin = calloc((size_t)(E * H * H), sizeof(long double));
    b.hdn = calloc((size_t)(E * I * I), sizeof(long double));
    b.phi2 = calloc((size_t)(E * I), sizeof(long double));
    b.phimax = calloc((size_t)(E * I), sizeof(double));
    b.cnt = calloc((size_t)E, sizeof(int64_t));
    b.logits = calloc((size_t)(W * ctx * E), sizeof(float));
    b.sh_in = calloc((size_t)(H * H), sizeof(long double));
    b.sh_dn = calloc((size_t)(S * S + 1), sizeof(long double));
    b.sh_phi2 = calloc((size_t)(S + 1), sizeof(long double));
    b.sh_phimax = calloc((size_t)(S + 1), sizeof(double));
    b.sh_x = calloc((size_t)(ctx * H), sizeof(float));
    float *wsg = NULL;
    const moeq_layer_view *V = moeq_model_layer(m, layer);
    if (V->shared_expert_gate.data) {
        wsg = malloc((size_t)H * sizeof(float));
        moeq_mat_to_f32(&V->shared_expert_gate, 0, 1, wsg);
        b.wsg = wsg;
    }
    moeq_hooks hk = {.user = &b, .linear_input = brute_linear, .router_logits = brute_router};
    moeq_runner *r = NULL;
    moeq_error err = {0};
    float *logits = malloc((size_t)(ctx * c->vocab) * sizeof(float));
    CHECK(moeq_runner_create(m, ctx, 2, &r, &err) == MOEQ_OK);
    for (int64_t w = 0; r && w < W; w++) CHECK(moeq_forward(r, ids + w * ctx, ctx, logits, &hk, &err) == MOEQ_OK);
    got g = {.layer = layer, .b = &b};
    moeq_calib_opts o = {.ctx = ctx, .max_tokens = W * ctx, .threads = 2, .user = &g, .on_layer = on_layer_compare};
    moeq_calib_result res;
    CHECK_MSG(moeq_calibrate(m, ids, n, NULL, &o, &res, &err) == MOEQ_OK, "%s", err.detail);
    CHECK(g.ok);
    moeq_calib_result_free(&res);
    moeq_runner_free(r);
    free(logits);
    free(b.hin); free(b.hdn); free(b.phi2); free(b.phimax); free(b.cnt); free(b.logits);
    free(b.sh_in); free(b.sh_dn); free(b.sh_phi2); free(b.sh_phimax); free(b.sh_x); free(wsg);
    free(ids);
    moeq_model_close(m);
}

static void test_calib_brute_force_qwen2moe_shared_gated(void) { brute_force_model("tiny-qwen2moe", 2); }
static void test_calib_brute_force_olmoe_top4(void) { brute_force_model("tiny-olmoe", 3); }

/* ---- layer-wise driver == whole-model pass with hooks ------------------------------------ */

typedef struct multi {
    moeq_calib_collector *col[16];
} multi;

static void multi_linear(void *user, int64_t layer, int64_t expert, moeq_proj proj, const float *x, int64_t n,
                         int64_t dim, const int32_t *ti, const float *w)
{
    multi *mu = user;
    const moeq_hooks *h = moeq_calib_collector_hooks(mu->col[layer]);
    h->linear_input(h->user, layer, expert, proj, x, n, dim, ti, w);
}

static void multi_router(void *user, int64_t layer, const float *l, int64_t n, int64_t E)
{
    multi *mu = user;
    const moeq_hooks *h = moeq_calib_collector_hooks(mu->col[layer]);
    h->router_logits(h->user, layer, l, n, E);
}

static void test_calib_layerwise_equals_whole_model(void)
{
    for (int i = 0; i < 4; i += quick() ? 3 : 1) {   /* quick: mixtral, olmoe */
        moeq_model *m = open_model(MODELS[i]);
        if (!m) { CHECK(0); continue; }
        const moeq_config *c = moeq_model_config(m);
        int64_t n = 0, ctx = 96, W = quick() ? 2 : 3;
        int32_t *ids = load_tokens(m, &n);
        int scope_all = i % 2;
        multi mu = {{0}};
        moeq_error err = {0};
        for (int64_t l = 0; l < c->layers; l++) {
            CHECK(moeq_calib_collector_create(m, ctx, 0, scope_all, 2, &mu.col[l], &err) == MOEQ_OK);
            CHECK(moeq_calib_collector_reset(mu.col[l], l, &err) == MOEQ_OK);
        }
        moeq_hooks hk = {.user = &mu, .linear_input = multi_linear, .router_logits = multi_router};
        moeq_runner *r = NULL;
        float *logits = malloc((size_t)(ctx * c->vocab) * sizeof(float));
        CHECK(moeq_runner_create(m, ctx, 2, &r, &err) == MOEQ_OK);
        for (int64_t w = 0; w < W; w++) {
            CHECK(moeq_forward(r, ids + w * ctx, ctx, logits, &hk, &err) == MOEQ_OK);
            for (int64_t l = 0; l < c->layers; l++) CHECK(moeq_calib_collector_flush(mu.col[l], &err) == MOEQ_OK);
        }
        digests d = {{0}, 0};
        moeq_calib_opts o = {.ctx = ctx, .max_tokens = W * ctx, .scope_all = scope_all, .threads = 2, .user = &d,
                             .on_layer = on_layer_digest};
        moeq_calib_result res;
        CHECK_MSG(moeq_calibrate(m, ids, n, NULL, &o, &res, &err) == MOEQ_OK, "%s", err.detail);
        CHECK(d.n == c->layers);
        for (int64_t l = 0; l < c->layers; l++) {
            moeq_calib_collector_finish(mu.col[l]);
            CHECK_MSG(layer_digest(moeq_calib_collector_layer(mu.col[l])) == d.d[l], "%s layer %lld differs",
                      MODELS[i], (long long)l);
            moeq_calib_collector_free(mu.col[l]);
        }
        moeq_calib_result_free(&res);
        moeq_runner_free(r);
        free(logits);
        free(ids);
        moeq_model_close(m);
    }
}

/* ---- thread counts, diag mode, re-runs ------------------------------------------------- */

static void run_digests(moeq_model *m, const int32_t *ids, int64_t n, int threads, int diag, digests *d)
{
    memset(d, 0, sizeof *d);
    moeq_calib_opts o = {.ctx = 128, .max_tokens = 384, .diag = diag, .scope_all = 1, .threads = threads,
                         .user = d, .on_layer = on_layer_digest};
    moeq_calib_result res;
    moeq_error err = {0};
    CHECK_MSG(moeq_calibrate(m, ids, n, NULL, &o, &res, &err) == MOEQ_OK, "%s", err.detail);
    moeq_calib_result_free(&res);
}

static void test_calib_bit_identical_across_threads(void)
{
    for (int i = 0; i < 4; i += quick() ? 4 : 1) {   /* quick: mixtral */
        moeq_model *m = open_model(MODELS[i]);
        if (!m) { CHECK(0); continue; }
        int64_t n = 0;
        int32_t *ids = load_tokens(m, &n);
        digests a, b, c3;
        moeq_threads_init(1);
        run_digests(m, ids, n, 1, 0, &a);
        moeq_threads_init(2);
        run_digests(m, ids, n, 2, 0, &b);
        moeq_threads_init(3);   /* more threads than cores: a different split again */
        run_digests(m, ids, n, 3, 0, &c3);
        moeq_threads_init(2);
        CHECK(a.n == moeq_model_config(m)->layers);
        CHECK_MSG(!memcmp(a.d, b.d, sizeof a.d) && !memcmp(a.d, c3.d, sizeof a.d), "%s", MODELS[i]);
        free(ids);
        moeq_model_close(m);
    }
}

/* --diag keeps the same diagonals and CAMERA sums, bit for bit, without the matrices. */
typedef struct diag_cmp {
    double s[16][1];   /* digest of each layer's diagonals */
} diag_cmp;

static moeq_status on_layer_sums(void *user, const moeq_calib_layer *L, moeq_error *err)
{
    (void)err;
    diag_cmp *dc = user;
    uint64_t h = 0;
    for (int64_t e = 0; e < L->n_experts && L->is_moe; e++) {
        h = XXH64(L->expert_in[e].sum2, (size_t)L->expert_in[e].dim * 8, h);
        h = XXH64(L->expert_down[e].sum2, (size_t)L->expert_down[e].dim * 8, h);
        h = XXH64(L->expert_down[e].phi2_sum, (size_t)L->expert_down[e].dim * 8, h);
        h = XXH64(L->expert_down[e].phi2_max, (size_t)L->expert_down[e].dim * 8, h);
    }
    dc->s[L->layer][0] = (double)h;
    return MOEQ_OK;
}

static void test_calib_diag_mode_same_diagonals(void)
{
    moeq_model *m = open_model("tiny-qwen3moe");
    if (!m) { CHECK(0); return; }
    int64_t n = 0;
    int32_t *ids = load_tokens(m, &n);
    diag_cmp full = {0}, dg = {0};
    moeq_calib_opts o = {.ctx = 128, .max_tokens = 512, .threads = 2, .user = &full, .on_layer = on_layer_sums};
    moeq_calib_result res;
    moeq_error err = {0};
    CHECK(moeq_calibrate(m, ids, n, NULL, &o, &res, &err) == MOEQ_OK);
    moeq_calib_result_free(&res);
    o.diag = 1;
    o.user = &dg;
    CHECK(moeq_calibrate(m, ids, n, NULL, &o, &res, &err) == MOEQ_OK);
    moeq_calib_result_free(&res);
    for (int l = 0; l < 4; l++) CHECK(full.s[l][0] == dg.s[l][0] && full.s[l][0] != 0);
    /* and the collector holds no matrices */
    moeq_calib_collector *c = NULL;
    CHECK(moeq_calib_collector_create(m, 64, 1, 0, 1, &c, &err) == MOEQ_OK);
    if (c) {
        CHECK(moeq_calib_collector_layer(c)->expert_in[0].hess == NULL);
        CHECK(moeq_calib_collector_bytes(c) < 1u << 20);
    }
    moeq_calib_collector_free(c);
    free(ids);
    moeq_model_close(m);
}

/* The driver's re-run path (what sequential GPTQ uses): with unchanged weights, re-running each
 * layer on its saved inputs changes nothing downstream; without keep_inputs it is refused. */
typedef struct rerun_ctx {
    moeq_calib_collector *col;
    int keep, calls;
    digests d;
} rerun_ctx;

static const moeq_hooks *rr_hooks(void *user, int64_t layer)
{
    rerun_ctx *rc = user;
    moeq_calib_collector_reset(rc->col, layer, NULL);
    return moeq_calib_collector_hooks(rc->col);
}

static moeq_status rr_window(void *user, int64_t layer, int64_t w, moeq_error *err)
{
    (void)layer;
    (void)w;
    rerun_ctx *rc = user;
    return moeq_calib_collector_flush(rc->col, err);
}

static moeq_status rr_done(void *user, int64_t layer, int *rerun, moeq_error *err)
{
    (void)err;
    rerun_ctx *rc = user;
    moeq_calib_collector_finish(rc->col);
    rc->d.d[layer] = layer_digest(moeq_calib_collector_layer(rc->col));
    rc->calls++;
    *rerun = 1;
    return MOEQ_OK;
}

static void test_calib_layerwise_rerun(void)
{
    moeq_model *m = open_model("tiny-mixtral");
    if (!m) { CHECK(0); return; }
    int64_t n = 0;
    int32_t *ids = load_tokens(m, &n);
    moeq_error err = {0};
    rerun_ctx rc = {0};
    CHECK(moeq_calib_collector_create(m, 64, 0, 0, 2, &rc.col, &err) == MOEQ_OK);
    moeq_layerwise lw = {.ctx = 64, .windows = 3, .threads = 2, .keep_inputs = 1, .user = &rc,
                         .layer_hooks = rr_hooks, .window_done = rr_window, .layer_done = rr_done};
    CHECK(moeq_layerwise_run(m, ids, &lw, &err) == MOEQ_OK);
    CHECK(rc.calls == 4);
    digests plain = {{0}, 0};
    moeq_calib_opts o = {.ctx = 64, .max_tokens = 192, .threads = 2, .user = &plain, .on_layer = on_layer_digest};
    moeq_calib_result res;
    CHECK(moeq_calibrate(m, ids, n, NULL, &o, &res, &err) == MOEQ_OK);
    moeq_calib_result_free(&res);
    CHECK(!memcmp(plain.d, rc.d.d, sizeof plain.d));
    lw.keep_inputs = 0;
    CHECK(moeq_layerwise_run(m, ids, &lw, &err) == MOEQ_ERR_MISUSE);
    CHECK(strstr(err.detail, "keep_inputs") != NULL);
    moeq_calib_collector_free(rc.col);
    free(ids);
    moeq_model_close(m);
}

/* ---- files, bad inputs ------------------------------------------------------------------ */

static int file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

static int dir_has_temp(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls -A %s | grep -q '\\.tmp\\.'", dir);
    return system(cmd) == 0;
}

static void test_calib_files_and_bad_inputs(void)
{
    moeq_model *m = open_model("tiny-olmoe");
    if (!m) { CHECK(0); return; }
    int64_t n = 0;
    int32_t *ids = load_tokens(m, &n);
    char dir[] = "/tmp/moeq_calib_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char out[300], out2[300], missing[300];
    snprintf(out, sizeof out, "%s/a.h5", dir);
    snprintf(out2, sizeof out2, "%s/b.h5", dir);
    snprintf(missing, sizeof missing, "%s/no/such/dir/c.h5", dir);
    moeq_calib_opts o = {.ctx = 64, .max_tokens = 128, .threads = 1};
    moeq_calib_result res;
    moeq_error err = {0};
    /* same bytes across runs and thread counts */
    moeq_threads_init(1);
    CHECK(moeq_calibrate(m, ids, n, out, &o, &res, &err) == MOEQ_OK);
    CHECK(res.file_bytes > 0);
    moeq_calib_result_free(&res);
    moeq_threads_init(2);
    o.threads = 2;
    CHECK(moeq_calibrate(m, ids, n, out2, &o, &res, &err) == MOEQ_OK);
    moeq_calib_result_free(&res);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "cmp -s %s %s", out, out2);
    CHECK_MSG(system(cmd) == 0, "files differ across thread counts");

    /* too few tokens for one window */
    o.max_tokens = 63;
    CHECK(moeq_calibrate(m, ids, n, out2, &o, &res, &err) == MOEQ_ERR_FORMAT);
    CHECK(strstr(err.detail, "fewer than one window") != NULL);
    o.max_tokens = 128;
    /* token id >= vocab */
    int32_t bad[128];
    memcpy(bad, ids, sizeof bad);
    bad[100] = 1024;
    CHECK(moeq_calibrate(m, bad, 128, out2, &o, &res, &err) == MOEQ_ERR_RANGE);
    CHECK(strstr(err.detail, "1024") && strstr(err.detail, "position 100"));
    /* output directory missing: nothing created */
    CHECK(moeq_calibrate(m, ids, n, missing, &o, &res, &err) == MOEQ_ERR_IO);
    CHECK(strstr(err.detail, "does not exist") != NULL);
    CHECK(!file_exists(missing));
    /* an existing non-regular file (a device) is refused, not replaced */
    CHECK(moeq_calibrate(m, ids, n, "/dev/null", &o, &res, &err) == MOEQ_ERR_IO);
    CHECK(strstr(err.detail, "not a regular file") != NULL);
    CHECK(moeq_calibrate(m, ids, n, dir, &o, &res, &err) == MOEQ_ERR_IO);
    /* none of the failures left a temporary behind */
    CHECK(!dir_has_temp(dir));
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    free(ids);
    moeq_model_close(m);
}

/* ---- peak memory against docs/STATS.md -------------------------------------------------- */

#if !defined(__SANITIZE_ADDRESS__)
static uint64_t current_rss(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) sscanf(line + 6, "%llu", &kb);
    if (f) fclose(f);
    return kb * 1024;
}
#endif

static void test_calib_peak_rss_formula(void)
{
#if defined(__SANITIZE_ADDRESS__)
    printf("  skipped under ASan (shadow memory)\n");
#else
    moeq_model *m = open_model("tiny-qwen2moe");
    if (!m) { CHECK(0); return; }
    int64_t n = 0;
    int32_t *ids = load_tokens(m, &n);
    const moeq_config *c = moeq_model_config(m);
    uint64_t before = current_rss();
    int64_t tokens = quick() ? 4096 : 16384;
    moeq_calib_opts o = {.ctx = 512, .max_tokens = tokens, .threads = 2};
    moeq_calib_result res;
    moeq_error err = {0};
    char out[] = "/tmp/moeq_calib_rss_XXXXXX";
    int fd = mkstemp(out);
    if (fd >= 0) close(fd);
    CHECK(moeq_calibrate(m, ids, n, out, &o, &res, &err) == MOEQ_OK);
    uint64_t peak = moeq_peak_rss(), ckpt = moeq_ckpt_bytes(moeq_model_checkpoint(m));
    uint64_t states = (uint64_t)tokens * (uint64_t)c->hidden * 4;
    uint64_t bound = before + res.bytes_formula + ckpt + (2u << 20);   /* 2 MiB: libc arenas */
    printf("  peak RSS grew %.1f MiB; formula %.1f MiB (residual stream %.1f MiB) + checkpoint %.1f MiB\n",
           (double)(peak - before) / 1048576.0, res.bytes_formula / 1048576.0, states / 1048576.0,
           ckpt / 1048576.0);
    CHECK_MSG(peak <= bound, "peak %llu > bound %llu", (unsigned long long)peak, (unsigned long long)bound);
    /* and the formula is not loose: the residual stream of all tokens is really held, and the
     * measured growth is most of the prediction */
    CHECK(peak >= before + states);
    CHECK_MSG((double)(peak - before) >= 0.75 * (double)(res.bytes_formula + ckpt), "formula too loose");
    moeq_calib_result_free(&res);
    unlink(out);
    free(ids);
    moeq_model_close(m);
#endif
}

/* ---- MLA's compressed projections (deepseek) ----------------------------------------------
 * The collector's Hessians of q_b's and kv_b's inputs (scope all) against Σ c cᵀ recomputed in
 * float64 from the layer input x: h = RMSNorm(x), the latents q_a·h and the first kv_lora_rank
 * rows of kv_a·h, each RMSNorm'ed with its weight at eps 1e-6 (DeepseekV3RMSNorm). */
typedef struct mla_ctx {
    int64_t layer;
    double *hq, *hkv;     /* copies of the collector's q_b_in / kv_b_in Hessians */
    int64_t rows_q, rows_kv;
} mla_ctx;

static moeq_status on_layer_mla(void *user, const moeq_calib_layer *L, moeq_error *err)
{
    (void)err;
    mla_ctx *x = user;
    if (L->layer != x->layer) return MOEQ_OK;
    const int64_t QL = L->q_b_in.dim, R = L->kv_b_in.dim;
    if (QL && L->q_b_in.hess && (x->hq = malloc((size_t)(QL * QL) * sizeof(double))))
        memcpy(x->hq, L->q_b_in.hess, (size_t)(QL * QL) * sizeof(double));
    if (R && L->kv_b_in.hess && (x->hkv = malloc((size_t)(R * R) * sizeof(double))))
        memcpy(x->hkv, L->kv_b_in.hess, (size_t)(R * R) * sizeof(double));
    x->rows_q = L->q_b_in.rows;
    x->rows_kv = L->kv_b_in.rows;
    return MOEQ_OK;
}

/* rows of y [n, d] = RMSNorm(rows of y) with weight w (float64) */
static void rms64(double *y, int64_t n, int64_t d, const float *w, double eps)
{
    for (int64_t t = 0; t < n; t++) {
        double ss = 0;
        for (int64_t j = 0; j < d; j++) ss += y[t * d + j] * y[t * d + j];
        double inv = 1.0 / sqrt(ss / (double)d + eps);
        for (int64_t j = 0; j < d; j++) y[t * d + j] *= inv * w[j];
    }
}

/* Σ_t lat_t lat_tᵀ, lat = RMSNorm(h · Wᵀ) over W's first `rows` rows, against the collector's H */
static double latent_err(const double *h, int64_t n, int64_t Hd, const moeq_mat *W, int64_t rows, const moeq_vec *nw,
                         const double *hc)
{
    float *wf = malloc((size_t)(W->rows * W->cols) * sizeof *wf), *nf = malloc((size_t)rows * sizeof *nf);
    double *lat = calloc((size_t)(n * rows), sizeof *lat);
    moeq_mat_to_f32(W, 0, W->rows, wf);
    moeq_vec_to_f32(nw, nf);
    for (int64_t t = 0; t < n; t++)
        for (int64_t r = 0; r < rows; r++) {
            double z = 0;
            for (int64_t j = 0; j < Hd; j++) z += h[t * Hd + j] * wf[r * Hd + j];
            lat[t * rows + r] = z;
        }
    rms64(lat, n, rows, nf, 1e-6);
    double worst = 0, diag = 0;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < rows; j++) {
            double want = 0;
            for (int64_t t = 0; t < n; t++) want += lat[t * rows + i] * lat[t * rows + j];
            if (i == j) diag += want / (double)rows;
            double d = fabs(want - hc[i * rows + j]);
            if (!(d <= worst)) worst = d;
        }
    free(wf);
    free(nf);
    free(lat);
    return worst / diag;
}

static void test_calib_mla_latent_hessians(void)
{
    const moeq_kernel_set *prev_ks = use_float_kernels();
    moeq_model *m = open_model("tiny-deepseekv3");
    if (!m) { CHECK(0); moeq_kernels_use(prev_ks); return; }
    const moeq_config *c = moeq_model_config(m);
    int64_t n = 0, ctx = 64;
    int32_t *ids = load_tokens(m, &n);
    mla_ctx mx = {.layer = 1};
    moeq_calib_opts o = {.ctx = ctx, .max_tokens = ctx, .scope_all = 1, .threads = 2, .user = &mx,
                         .on_layer = on_layer_mla};
    moeq_calib_result res;
    moeq_error err = {0};
    CHECK_MSG(moeq_calibrate(m, ids, n, NULL, &o, &res, &err) == MOEQ_OK, "%s", err.detail);
    moeq_calib_result_free(&res);
    CHECK(mx.hq && mx.hkv && mx.rows_q == ctx && mx.rows_kv == ctx);
    /* the layer input of the same window, then its normed attention input in float64 */
    const int64_t Hd = c->hidden;
    float *x = malloc((size_t)(ctx * Hd) * sizeof *x), *wn = malloc((size_t)Hd * sizeof *wn);
    double *h = malloc((size_t)(ctx * Hd) * sizeof *h);
    moeq_runner *r = NULL;
    CHECK(moeq_runner_create(m, ctx, 2, &r, &err) == MOEQ_OK);
    CHECK(moeq_forward_embed(r, ids, ctx, x, &err) == MOEQ_OK);
    for (int64_t l = 0; l < mx.layer; l++) CHECK(moeq_forward_layer(r, l, x, ctx, NULL, &err) == MOEQ_OK);
    moeq_runner_free(r);
    const moeq_layer_view *L = moeq_model_layer(m, mx.layer);
    moeq_vec_to_f32(&L->attn_norm, wn);
    for (int64_t i = 0; i < ctx * Hd; i++) h[i] = x[i];
    rms64(h, ctx, Hd, wn, c->rms_eps);
    if (mx.hq && mx.hkv) {
        double eq = latent_err(h, ctx, Hd, &L->q_a, c->q_lora_rank, &L->q_a_norm, mx.hq);
        double ekv = latent_err(h, ctx, Hd, &L->kv_a, c->kv_lora_rank, &L->kv_a_norm, mx.hkv);
        printf("  layer %lld: q_b input |H - H64| / mean diag %.3g, kv_b input %.3g\n", (long long)mx.layer, eq, ekv);
        /* float32 forward vs float64: ~1e-6 relative */
        CHECK_MSG(eq < 1e-4 && ekv < 1e-4, "q_b %g kv_b %g", eq, ekv);
    }
    free(x);
    free(wn);
    free(h);
    free(mx.hq);
    free(mx.hkv);
    free(ids);
    moeq_model_close(m);
    moeq_kernels_use(prev_ks);
}

int main(void)
{
    moeq_threads_init(2);
    RUN_TEST(test_calib_peak_rss_formula);   /* first: the high-water mark is per process */
    RUN_TEST(test_calib_counts_symmetric_psd);
    RUN_TEST(test_calib_brute_force_qwen2moe_shared_gated);
    RUN_TEST(test_calib_brute_force_olmoe_top4);
    RUN_TEST(test_calib_layerwise_equals_whole_model);
    RUN_TEST(test_calib_bit_identical_across_threads);
    RUN_TEST(test_calib_diag_mode_same_diagonals);
    RUN_TEST(test_calib_layerwise_rerun);
    RUN_TEST(test_calib_files_and_bad_inputs);
    RUN_TEST(test_calib_mla_latent_hessians);
    HARNESS_EXIT();
}
