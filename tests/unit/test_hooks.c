/* Observation hooks and workspace size: what calibration will rely on.
 * - every routed token appears exactly top_k times among the experts' gate inputs, with the
 *   routing weights implied by the router logits the router hook saw (recomputed here in
 *   float64, independently of the forward pass);
 * - an expert's gate input rows equal the post-attention-normed hidden state of their token,
 *   so applying the expert's own matrices to them reproduces its down input (h = silu(g)·u);
 * - the workspace bytes equal the formula in docs/eval.md, and peak RSS stays within
 *   workspace + checkpoint bytes + a fixed allowance. */
#include <stdlib.h>
#include "harness.h"
#include "moeq_core.h"
#include "moeq_model.h"
#include "moeq_kernels.h"

typedef struct obs {
    const moeq_model *m;
    int64_t n, layer;         /* window length; the MoE layer under test */
    float *router;            /* [n, E] copied from the router hook */
    int *seen;                /* [n]: times each token was routed */
    double *wsum;             /* [n]: sum of routing weights of each token */
    double max_down_err;      /* max |down input - silu(gate x) * (up x)| */
    int q_calls, o_calls, bad_dims;
    int64_t gate_rows, down_rows;
} obs;

static void on_router(void *user, int64_t layer, const float *logits, int64_t n, int64_t E)
{
    obs *o = user;
    if (layer == o->layer) memcpy(o->router, logits, (size_t)(n * E) * sizeof(float));
}

static float *pending_x;   /* gate input of the current expert, to check its down input */
static int64_t pending_n;

static void on_linear(void *user, int64_t layer, int64_t expert, moeq_proj proj, const float *x,
                      int64_t n, int64_t dim, const int32_t *rows, const float *w)
{
    obs *o = user;
    const moeq_config *c = moeq_model_config(o->m);
    if (proj == MOEQ_PROJ_Q) { o->q_calls++; if (n != o->n || dim != c->hidden) o->bad_dims++; }
    if (proj == MOEQ_PROJ_O) { o->o_calls++; if (dim != c->heads * c->head_dim) o->bad_dims++; }
    if (layer != o->layer || expert < 0) return;
    if (proj == MOEQ_PROJ_GATE) {
        if (dim != c->hidden || !rows || !w) { o->bad_dims++; return; }
        o->gate_rows += n;
        for (int64_t i = 0; i < n; i++) { o->seen[rows[i]]++; o->wsum[rows[i]] += w[i]; }
        free(pending_x);
        pending_x = malloc((size_t)(n * dim) * sizeof(float));
        memcpy(pending_x, x, (size_t)(n * dim) * sizeof(float));
        pending_n = n;
    } else if (proj == MOEQ_PROJ_DOWN) {
        if (dim != c->moe_inter || n != pending_n) { o->bad_dims++; return; }
        o->down_rows += n;
        moeq_mat g, u;
        moeq_error err;
        if (moeq_model_expert(o->m, layer, expert, MOEQ_PROJ_GATE, &g, &err) || moeq_model_expert(o->m, layer, expert, MOEQ_PROJ_UP, &u, &err)) { o->bad_dims++; return; }
        int64_t H = c->hidden, I = c->moe_inter;
        float *wg = malloc((size_t)(I * H) * sizeof(float)), *wu = malloc((size_t)(I * H) * sizeof(float));
        moeq_mat_to_f32(&g, 0, I, wg);
        moeq_mat_to_f32(&u, 0, I, wu);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < I; j++) {
                double a = 0, b = 0;
                for (int64_t k = 0; k < H; k++) {
                    a += (double)pending_x[i * H + k] * wg[j * H + k];
                    b += (double)pending_x[i * H + k] * wu[j * H + k];
                }
                double h = a / (1 + exp(-a)) * b, d = fabs(h - x[i * I + j]) / (1 + fabs(h));
                if (d > o->max_down_err) o->max_down_err = d;
            }
        free(wg);
        free(wu);
    }
}

static void check_model(const char *dir, int64_t layer)
{
    moeq_error err = {0};
    moeq_model *m = NULL;
    int32_t *ids = NULL;
    int64_t total = 0;
    CHECK_MSG(moeq_model_open(dir, &m, &err) == MOEQ_OK, "%s", err.detail);
    CHECK(moeq_tokens_load(FIXTURES "/heldout.safetensors", 1024, &ids, &total, &err) == MOEQ_OK);
    if (!m || !ids) { moeq_model_close(m); free(ids); return; }
    const moeq_config *c = moeq_model_config(m);
    int64_t n = 96, E = c->n_experts, K = c->top_k, V = c->vocab;
    obs o = {.m = m, .n = n, .layer = layer};
    o.router = calloc((size_t)(n * E), sizeof(float));
    o.seen = calloc((size_t)n, sizeof(int));
    o.wsum = calloc((size_t)n, sizeof(double));
    float *logits = malloc((size_t)(n * V) * sizeof(float));
    moeq_hooks hk = {.user = &o, .linear_input = on_linear, .router_logits = on_router};
    moeq_runner *r = NULL;
    CHECK(moeq_runner_create(m, n, 2, &r, &err) == MOEQ_OK);
    if (r) CHECK_MSG(moeq_forward(r, ids + 333, n, logits, &hk, &err) == MOEQ_OK, "%s", err.detail);
    CHECK_MSG(o.bad_dims == 0, "%d calls with wrong shapes", o.bad_dims);
    CHECK(o.q_calls == c->layers && o.o_calls == c->layers);
    CHECK(o.gate_rows == n * K && o.down_rows == n * K);
    /* float32 activations: ~1e-6; bf16 ones (the bf16 set): 3e-3..5e-3 measured; a wrong
     * activation or a missing gate gives ~1 */
    const double tol = moeq_kernels()->float_acts ? 1e-4 : 2e-2;
    CHECK_MSG(o.max_down_err < tol, "down input differs from silu(gate x) * up x by %g (%s kernels)", o.max_down_err,
              moeq_kernels()->name);
    for (int64_t t = 0; t < n; t++) {
        CHECK(o.seen[t] == K);
        /* routing weights recomputed from the hooked logits in float64 */
        const float *l = o.router + t * E;
        double mx = -INFINITY, s = 0, top = 0;
        for (int64_t e = 0; e < E; e++) mx = fmax(mx, l[e]);
        for (int64_t e = 0; e < E; e++) s += exp(l[e] - mx);
        int used[64] = {0};
        for (int64_t k = 0; k < K; k++) {
            int64_t best = -1;
            for (int64_t e = 0; e < E; e++)
                if (!used[e] && (best < 0 || l[e] > l[best])) best = e;
            used[best] = 1;
            top += exp(l[best] - mx) / s;
        }
        double want = c->norm_topk_prob ? 1.0 : top;
        CHECK_MSG(fabs(o.wsum[t] - want) < 1e-5, "token %lld: weights sum %g, want %g", (long long)t, o.wsum[t], want);
    }
    moeq_runner_free(r);
    free(logits);
    free(o.router);
    free(o.seen);
    free(o.wsum);
    free(pending_x);
    pending_x = NULL;
    free(ids);
    moeq_model_close(m);
}

static void test_hooks_mixtral_renormalized(void) { check_model(FIXTURES "/tiny-mixtral", 2); }
static void test_hooks_qwen2moe_not_renormalized(void) { check_model(FIXTURES "/tiny-qwen2moe", 2); }
static void test_hooks_qwen3moe_fused(void) { check_model(FIXTURES "/tiny-qwen3moe", 0); }
static void test_hooks_olmoe_top4(void) { check_model(FIXTURES "/tiny-olmoe", 3); }

static void test_workspace_formula_and_peak_rss(void)
{
    moeq_error err = {0};
    moeq_model *m = NULL;
    CHECK(moeq_model_open(FIXTURES "/tiny-qwen2moe", &m, &err) == MOEQ_OK);
    if (!m) return;
    const moeq_config *c = moeq_model_config(m);
    int64_t n = 256, T = 3, H = c->hidden, q = c->heads * c->head_dim, kv = c->kv_heads * c->head_dim;
    int64_t F = c->dense_inter > c->shared_inter ? c->dense_inter : c->shared_inter, I = c->moe_inter;
    int64_t E = c->n_experts, K = c->top_k;
    moeq_runner *r = NULL;
    CHECK(moeq_runner_create(m, n, (int)T, &r, &err) == MOEQ_OK);
    /* docs/eval.md, "Memory" */
    uint64_t floats = (uint64_t)(n * (3 * H + 2 * q + 4 * kv + 2 * F + 1 + E + K + K * H + c->head_dim)) +
                      (uint64_t)(H + 3 * H + 2 * q + 3 * kv + E) +
                      (uint64_t)(T * (n * (2 * H + 2 * I + 1) + 512 * H));
    uint64_t ints = (uint64_t)(n * K + 2 * E * n + E);   /* routing tables, the experts by size */
    uint64_t want = 4 * floats + 4 * ints + 8 * (uint64_t)E + (uint64_t)T * 88 /* thread_scratch structs: 11 pointers */;
    /* attention per thread: the fused kernel's scratch and a byte mask of 64 queries
     * (docs/eval.md, "Memory") */
    const moeq_kernel_set *ks = moeq_kernels();
    const int64_t hd = c->head_dim > c->v_head_dim ? c->head_dim : c->v_head_dim;
    want += (uint64_t)T * (4 * MOEQ_ATTN_SCRATCH(hd, hd) + (uint64_t)(64 * n));
    /* kernel sets that prepare activations (bf16 wgemm): blocks of 512 tokens for the runner, n
     * tokens of H per thread for an expert's gate and up (docs/eval.md, "Memory") */
    if (ks->wx_bytes) {
        int64_t kmax = H > q ? H : q, nb = n < 512 ? n : 512;
        kmax = kmax > F ? kmax : F;
        kmax = kmax > I ? kmax : I;
        uint64_t stride = ks->wx_bytes(nb, kmax);
        if (stride) want += (uint64_t)((n + 511) / 512) * stride;
        want += (uint64_t)T * ks->wx_bytes(n, H);
    }
    CHECK_MSG(moeq_runner_bytes(r) == want, "workspace %llu bytes, formula %llu", (unsigned long long)moeq_runner_bytes(r),
              (unsigned long long)want);
#if !defined(__SANITIZE_ADDRESS__)
    int32_t tok[256];
    for (int i = 0; i < 256; i++) tok[i] = (i * 37) % 1024;
    float *logits = malloc((size_t)(n * c->vocab) * sizeof(float));
    if (r) CHECK(moeq_forward(r, tok, n, logits, NULL, &err) == MOEQ_OK);
    uint64_t rss = moeq_peak_rss(), bound = moeq_runner_bytes(r) + (uint64_t)(n * c->vocab) * 4 +
                                             moeq_ckpt_bytes(moeq_model_checkpoint(m)) + (64u << 20);
    printf("  peak RSS %.1f MiB, bound %.1f MiB (workspace %.1f MiB)\n", rss / 1048576.0, bound / 1048576.0,
           moeq_runner_bytes(r) / 1048576.0);
    CHECK(rss > 0 && rss <= bound);
    free(logits);
#endif
    moeq_runner_free(r);
    moeq_model_close(m);
}

int main(void)
{
    moeq_threads_init(2);
    RUN_TEST(test_hooks_mixtral_renormalized);
    RUN_TEST(test_hooks_qwen2moe_not_renormalized);
    RUN_TEST(test_hooks_qwen3moe_fused);
    RUN_TEST(test_hooks_olmoe_top4);
    RUN_TEST(test_workspace_formula_and_peak_rss);
    HARNESS_EXIT();
}
