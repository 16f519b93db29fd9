/* Pruning: the OBS removal against the closed-form optimal compensation (float64 LAPACK) on
 * small random instances, the single-column choice against brute force, and routing of a
 * pruned model (removed experts masked) against a reference computed here from the logits. */
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "harness.h"
#include "moeq_core.h"
#include "moeq_model.h"
#include "moeq_prune.h"
#include "moeq_safetensors.h"

static uint64_t rs = 12345;
static double urand(void)
{
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rs >> 11) / 9007199254740992.0 - 0.5;
}

/* loss tr(D H Dᵀ), D = W' − W */
static double loss(const double *W, const double *Wp, const double *H, int64_t rows, int64_t cols)
{
    double s = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < cols; i++)
            for (int64_t j = 0; j < cols; j++)
                s += (Wp[r * cols + i] - W[r * cols + i]) * H[i * cols + j] * (Wp[r * cols + j] - W[r * cols + j]);
    return s;
}

/* The optimum with columns S removed: per row, Δ_K = H_KK⁻¹ H_KS W_S (solved with dposv). */
static void reference(const double *W, const double *H, int64_t rows, int64_t cols, const int *gone, double *Wp)
{
    int64_t K = 0, idx[32];
    for (int64_t i = 0; i < cols; i++)
        if (!gone[i]) idx[K++] = i;
    double A[32 * 32], b[32];
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t a = 0; a < K; a++) {
            for (int64_t c = 0; c < K; c++) A[a * K + c] = H[idx[a] * cols + idx[c]];
            b[a] = 0;
            for (int64_t s = 0; s < cols; s++)
                if (gone[s]) b[a] += H[idx[a] * cols + s] * W[r * cols + s];
        }
        LAPACKE_dposv(LAPACK_ROW_MAJOR, 'L', (lapack_int)K, 1, A, (lapack_int)K, b, 1);
        for (int64_t i = 0; i < cols; i++) Wp[r * cols + i] = gone[i] ? 0 : W[r * cols + i];
        for (int64_t a = 0; a < K; a++) Wp[r * cols + idx[a]] += b[a];
    }
}

static void test_obs_matches_closed_form(void)
{
    double worst = 0;
    for (int trial = 0; trial < 200; trial++) {
        int64_t cols = 3 + trial % 10, rows = 1 + trial % 5, n = 3 * cols, k = 1 + trial % (cols - 1);
        double X[13 * 40], H[13 * 13], W[5 * 13], Wp[5 * 13], R[5 * 13];
        for (int64_t i = 0; i < cols * n; i++) X[i] = urand();
        for (int64_t i = 0; i < cols; i++)
            for (int64_t j = 0; j < cols; j++) {
                double s = 0;
                for (int64_t t = 0; t < n; t++) s += X[i * n + t] * X[j * n + t];
                H[i * cols + j] = s;
            }
        for (int64_t i = 0; i < rows * cols; i++) W[i] = Wp[i] = urand();
        int64_t removed[13];
        moeq_error err = {0};
        CHECK(moeq_obs_remove(Wp, rows, cols, H, k, 1, 1e-12, removed, &err) == MOEQ_OK);
        int gone[13] = {0};
        for (int64_t i = 0; i < k; i++) gone[removed[i]] = 1;
        reference(W, H, rows, cols, gone, R);
        for (int64_t i = 0; i < rows * cols; i++) {
            double d = fabs(Wp[i] - R[i]) / (1 + fabs(R[i]));
            if (d > worst) worst = d;
        }
        if (k == 1) {   /* the first choice is the brute-force best single column */
            double best = INFINITY, got = loss(W, Wp, H, rows, cols);
            for (int64_t c = 0; c < cols; c++) {
                int g1[13] = {0};
                g1[c] = 1;
                reference(W, H, rows, cols, g1, R);
                double l = loss(W, R, H, rows, cols);
                if (l < best) best = l;
            }
            CHECK_MSG(got <= best * (1 + 1e-8) + 1e-12, "OBS chose loss %g, brute force %g", got, best);
        }
        /* compensation never loses to plain zeroing of the same columns */
        double Z[5 * 13];
        for (int64_t i = 0; i < rows * cols; i++) Z[i] = gone[i % cols] ? 0 : W[i];
        CHECK(loss(W, Wp, H, rows, cols) <= loss(W, Z, H, rows, cols) * (1 + 1e-9) + 1e-12);
    }
    CHECK_MSG(worst < 1e-8, "OBS vs closed form: %g", worst);
    /* without compensation: the lowest ||w_c||² H_cc columns, zeroed */
    double H[9] = {4, 1, 0, 1, 3, 0, 0, 0, 1}, W[6] = {1, 1, 3, 2, 0.5, 3}, sal[3];
    moeq_error err = {0};
    CHECK(moeq_obs_saliency(W, 2, 3, H, 0, 0, sal, &err) == MOEQ_OK);
    CHECK_NEAR(sal[0], 5 * 4, 1e-12);
    CHECK_NEAR(sal[1], 1.25 * 3, 1e-12);
    int64_t rem[1];
    CHECK(moeq_obs_remove(W, 2, 3, H, 1, 0, 0, rem, &err) == MOEQ_OK);
    CHECK(rem[0] == 1 && W[1] == 0 && W[4] == 0 && W[0] == 1 && W[5] == 3);
}

/* ---- routing of a pruned model ----------------------------------------------------------- */

typedef struct rt {
    int64_t layer, n, E, K;
    float *logits;
    double *w;     /* [n, E] routing weight each expert got */
    int masked_hits;
    const int32_t *live;
} rt;

static void on_router(void *user, int64_t layer, const float *logits, int64_t n, int64_t E)
{
    rt *o = user;
    if (layer == o->layer) memcpy(o->logits, logits, (size_t)(n * E) * sizeof(float));
}

static void on_linear(void *user, int64_t layer, int64_t expert, moeq_proj proj, const float *x, int64_t n,
                      int64_t dim, const int32_t *ti, const float *weights)
{
    (void)x;
    (void)dim;
    rt *o = user;
    if (layer != o->layer || expert < 0 || proj != MOEQ_PROJ_GATE) return;
    if (!o->live[expert]) o->masked_hits++;
    for (int64_t i = 0; i < n; i++) o->w[(ti ? ti[i] : i) * o->E + expert] = weights[i];
}

static void test_routing_masks_removed_experts(void)
{
    /* tiny-mixtral with experts 1 and 6 of every layer removed (zero-filled widths) */
    char dir[] = "/tmp/moeq_test_prune_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    const char *src = FIXTURES "/tiny-mixtral";
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "for f in %s/*.safetensors %s/model.safetensors.index.json; do ln -s \"$(realpath $f)\" %s/; done && "
             "python3 -c \"import json; c=json.load(open('%s/config.json')); "
             "c['moeq_expert_widths']=[[0 if e in (1,6) else c['intermediate_size'] for e in range(8)] for l in range(4)]; "
             "json.dump(c, open('%s/config.json','w'))\"", src, src, dir, src, dir);
    CHECK(system(cmd) == 0);
    moeq_error err = {0};
    moeq_model *m = NULL;
    int32_t *ids = NULL;
    int64_t total = 0;
    CHECK_MSG(moeq_model_open(dir, &m, &err) == MOEQ_OK, "%s", err.detail);
    CHECK(moeq_tokens_load(FIXTURES "/heldout.safetensors", 1024, &ids, &total, &err) == MOEQ_OK);
    if (m && ids) {
        const moeq_config *c = moeq_model_config(m);
        int64_t n = 64, E = c->n_experts, K = c->top_k;
        for (int64_t layer = 0; layer < c->layers; layer++) {
            rt o = { .layer = layer, .n = n, .E = E, .K = K, .live = moeq_model_expert_widths(m) + layer * E };
            o.logits = calloc((size_t)(n * E), sizeof(float));
            o.w = calloc((size_t)(n * E), sizeof(double));
            float *out = malloc((size_t)(n * c->vocab) * sizeof(float));
            moeq_hooks hk = { .user = &o, .linear_input = on_linear, .router_logits = on_router };
            moeq_runner *r = NULL;
            CHECK(moeq_runner_create(m, n, 2, &r, &err) == MOEQ_OK);
            if (r) CHECK_MSG(moeq_forward(r, ids + 100, n, out, &hk, &err) == MOEQ_OK, "%s", err.detail);
            CHECK(o.masked_hits == 0);
            double worst = 0;
            for (int64_t t = 0; t < n; t++) {
                /* reference: router rows of removed experts deleted, top-k, renormalized */
                const float *z = o.logits + t * E;
                int sel[8] = {0};
                double ref[8] = {0}, sum = 0;
                for (int64_t s = 0; s < K; s++) {
                    int64_t b = -1;
                    for (int64_t e = 0; e < E; e++)
                        if (o.live[e] && !sel[e] && (b < 0 || z[e] > z[b])) b = e;
                    sel[b] = 1;
                }
                for (int64_t e = 0; e < E; e++)
                    if (sel[e]) sum += exp((double)z[e]);
                for (int64_t e = 0; e < E; e++)
                    if (sel[e]) ref[e] = exp((double)z[e]) / sum;
                for (int64_t e = 0; e < E; e++) worst = fmax(worst, fabs(ref[e] - o.w[t * E + e]));
            }
            CHECK_MSG(worst < 1e-6, "layer %lld: routing weights differ from the reference by %g", (long long)layer, worst);
            moeq_runner_free(r);
            free(out);
            free(o.logits);
            free(o.w);
        }
    }
    moeq_model_close(m);
    free(ids);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

int main(void)
{
    moeq_threads_init(2);
    RUN_TEST(test_obs_matches_closed_form);
    RUN_TEST(test_routing_masks_removed_experts);
    HARNESS_EXIT();
}
