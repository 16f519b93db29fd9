/* The C forward pass against transformers 5.17 (tests/fixtures/tiny-NAME/ref, made by
 * make_fixtures.py): logits of a 128-token window to 1e-3 x max|logit| with float32
 * activations (MOEQ_KERNEL=float's set), and with the set cpuid picks where its activations are
 * bf16 or int8: KL(transformers || moeq) and top-1 agreement over the window (a routing flip
 * moves single logits by far more than 1e-3); perplexity over the held-out tokens to 0.1%, and
 * the --ref metrics against the mixtral fixture. */
#include <jansson.h>
#include <stdlib.h>
#include "harness.h"
#include "logits_close.h"
#include "moeq_core.h"
#include "moeq_eval.h"
#include "moeq_kernels.h"
#include "moeq_model.h"

static const char *FIXTURE_NAMES[] = {"tiny-mixtral", "tiny-qwen2moe", "tiny-qwen3moe", "tiny-olmoe",
                                      "tiny-qwen3moe-256"};
#define N_FIXTURES 5

static json_t *load_reference(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, FIXTURES "/%s/ref/reference.json", name);
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    CHECK_MSG(j != NULL, "%s: %s", path, jerr.text);
    return j;
}

static double ref_number(json_t *j, const char *a, const char *b, const char *c)
{
    json_t *v = json_object_get(j, a);
    if (v && b) v = json_object_get(v, b);
    if (v && c) v = json_object_get(v, c);
    return v ? json_number_value(v) : NAN;
}

static void check_logits(const char *name, int threads)
{
    char dir[512], lpath[512];
    snprintf(dir, sizeof dir, FIXTURES "/%s", name);
    snprintf(lpath, sizeof lpath, FIXTURES "/%s/ref/logits.safetensors", name);
    moeq_error err = {0};
    moeq_model *m = NULL;
    moeq_st_file *lf = NULL;
    CHECK_MSG(moeq_model_open(dir, &m, &err) == MOEQ_OK, "%s", err.detail);
    CHECK_MSG(moeq_st_open(lpath, &lf, &err) == MOEQ_OK, "%s", err.detail);
    if (!m || !lf) goto out;
    const moeq_tensor *tt = moeq_st_find(lf, "tokens"), *tl = moeq_st_find(lf, "logits");
    CHECK(tt && tl && tt->dtype == MOEQ_DT_I32 && tl->dtype == MOEQ_DT_F32);
    if (!tt || !tl) goto out;
    int64_t n = tt->numel, V = moeq_model_config(m)->vocab;
    CHECK(tl->numel == n * V);
    int32_t *tok = malloc((size_t)n * sizeof *tok);
    float *want = malloc((size_t)(n * V) * sizeof *want), *got = malloc((size_t)(n * V) * sizeof *got);
    memcpy(tok, tt->data, (size_t)n * sizeof *tok);   /* the mapping may be unaligned for I32 */
    memcpy(want, tl->data, (size_t)(n * V) * sizeof *want);
    moeq_runner *r = NULL;
    CHECK_MSG(moeq_runner_create(m, n, threads, &r, &err) == MOEQ_OK, "%s", err.detail);
    if (r) CHECK_MSG(moeq_forward(r, tok, n, got, NULL, &err) == MOEQ_OK, "%s", err.detail);
    logits_close(name, threads, want, got, n, V);
    moeq_runner_free(r);
    free(tok);
    free(want);
    free(got);
out:
    moeq_st_close(lf);
    moeq_model_close(m);
}

static void test_logits_match_transformers(void)
{
    /* the set cpuid picks (or MOEQ_KERNEL's), then float32 activations where that set has none */
    const moeq_kernel_set *def = moeq_kernels(), *fl = moeq_kernels_get("float");
    for (int i = 0; i < N_FIXTURES; i++) check_logits(FIXTURE_NAMES[i], 1);
    if (!def->float_acts) {
        moeq_kernels_use(fl);
        for (int i = 0; i < N_FIXTURES; i++) check_logits(FIXTURE_NAMES[i], 1);
        moeq_kernels_use(def);
    }
}

static void test_logits_independent_of_threads(void)
{
    /* 1, 2 and 3 threads split rows, heads and experts unevenly; logits must be identical bit
     * for bit, at window sizes below, at and above the row block of the matmuls */
    moeq_error err = {0};
    moeq_model *m = NULL;
    CHECK_MSG(moeq_model_open(FIXTURES "/tiny-qwen2moe", &m, &err) == MOEQ_OK, "%s", err.detail);
    int32_t *ids = NULL;
    int64_t n = 0;
    CHECK_MSG(moeq_tokens_load(FIXTURES "/heldout.safetensors", 1024, &ids, &n, &err) == MOEQ_OK, "%s", err.detail);
    if (!m || !ids) { moeq_model_close(m); free(ids); return; }
    const int64_t sizes[] = {77, 256, 300};
    int64_t V = 1024;
    for (int si = 0; si < 3; si++) {
        int64_t w = sizes[si];
        float *ref = malloc((size_t)(w * V) * sizeof *ref), *got = malloc((size_t)(w * V) * sizeof *got);
        for (int threads = 1; threads <= 3; threads++) {
            moeq_runner *r = NULL;
            CHECK(moeq_runner_create(m, w, threads, &r, &err) == MOEQ_OK);
            if (r) CHECK(moeq_forward(r, ids + 1000, w, threads == 1 ? ref : got, NULL, &err) == MOEQ_OK);
            if (threads > 1)
                CHECK_MSG(memcmp(ref, got, (size_t)(w * V) * sizeof *ref) == 0, "window %lld, %d threads",
                          (long long)w, threads);
            moeq_runner_free(r);
        }
        free(ref);
        free(got);
    }
    free(ids);
    moeq_model_close(m);
}

static void test_layerwise_steps_equal_forward(void)
{
    moeq_error err = {0};
    moeq_model *m = NULL;
    CHECK_MSG(moeq_model_open(FIXTURES "/tiny-qwen2moe", &m, &err) == MOEQ_OK, "%s", err.detail);
    if (!m) return;
    const moeq_config *c = moeq_model_config(m);
    int64_t n = 50, V = c->vocab;
    int32_t tok[50];
    for (int i = 0; i < 50; i++) tok[i] = (i * 131 + 7) % 1024;
    float *a = malloc((size_t)(n * V) * sizeof *a), *b = malloc((size_t)(n * V) * sizeof *b);
    float *x = malloc((size_t)(n * c->hidden) * sizeof *x);
    moeq_runner *r = NULL;
    CHECK(moeq_runner_create(m, 64, 2, &r, &err) == MOEQ_OK);
    if (r) {
        CHECK(moeq_forward(r, tok, n, a, NULL, &err) == MOEQ_OK);
        CHECK(moeq_forward_embed(r, tok, n, x, &err) == MOEQ_OK);
        for (int64_t l = 0; l < c->layers; l++) CHECK(moeq_forward_layer(r, l, x, n, NULL, &err) == MOEQ_OK);
        CHECK(moeq_forward_head(r, x, n, b, &err) == MOEQ_OK);
        CHECK(memcmp(a, b, (size_t)(n * V) * sizeof *a) == 0);
        CHECK(moeq_forward_layer(r, c->layers, x, n, NULL, &err) == MOEQ_ERR_MISUSE);
        CHECK(moeq_forward(r, tok, 65, a, NULL, &err) == MOEQ_ERR_MISUSE);
    }
    moeq_runner_free(r);
    free(a);
    free(b);
    free(x);
    moeq_model_close(m);
}

static void test_perplexity_matches_transformers(void)
{
    moeq_error err = {0};
    int32_t *ids = NULL;
    int64_t n = 0;
    CHECK_MSG(moeq_tokens_load(FIXTURES "/heldout.safetensors", 1024, &ids, &n, &err) == MOEQ_OK, "%s", err.detail);
    if (!ids) return;
    moeq_model *base = NULL;
    CHECK_MSG(moeq_model_open(FIXTURES "/tiny-mixtral", &base, &err) == MOEQ_OK, "%s", err.detail);
    /* Under the sanitizers (MOEQ_TEST_QUICK) one fixture with --ref is enough to exercise the
     * code; the release run checks all four against transformers. */
    int quick = getenv("MOEQ_TEST_QUICK") != NULL;
    for (int i = quick ? 2 : 0; i < (quick ? 3 : N_FIXTURES); i++) {
        char dir[512];
        snprintf(dir, sizeof dir, FIXTURES "/%s", FIXTURE_NAMES[i]);
        json_t *ref = load_reference(FIXTURE_NAMES[i]);
        moeq_model *m = NULL;
        CHECK_MSG(moeq_model_open(dir, &m, &err) == MOEQ_OK, "%s", err.detail);
        if (!m || !ref) { json_decref(ref); moeq_model_close(m); continue; }
        int with_ref = i > 0 && base && json_object_get(ref, "vs_tiny-mixtral");
        moeq_eval_opts o = {.ctx = 128, .threads = 0};
        moeq_eval_result res;
        CHECK_MSG(moeq_eval(m, with_ref ? base : NULL, ids, n, &o, &res, &err) == MOEQ_OK, "%s", err.detail);
        double want = ref_number(ref, "ppl", "128", "ppl");
        printf("  %s: ppl %.6f, transformers %.6f (rel %.2e), %lld windows, %.0f tokens/s\n", FIXTURE_NAMES[i],
               res.ppl, want, fabs(res.ppl / want - 1), (long long)res.windows, res.tokens_per_s);
        CHECK_MSG(fabs(res.ppl / want - 1) <= 1e-3, "%s ppl %g vs %g", FIXTURE_NAMES[i], res.ppl, want);
        CHECK(res.tokens == (int64_t)ref_number(ref, "ppl", "128", "tokens"));
        CHECK(res.windows == (int64_t)ref_number(ref, "ppl", "128", "windows"));
        if (with_ref) {
            /* KL(mixtral || this) etc., computed independently by make_fixtures.py in float64 */
            const char *k = "vs_tiny-mixtral";
            double kld = ref_number(ref, k, "128", "kld_mean");
            printf("  %s vs mixtral: kld %.6f (%.6f) median %.6f (%.6f) p99 %.6f (%.6f) top1 %.6f (%.6f) dp %.6f (%.6f)\n",
                   FIXTURE_NAMES[i], res.kld_mean, kld, res.kld_median, ref_number(ref, k, "128", "kld_median"),
                   res.kld_p99, ref_number(ref, k, "128", "kld_p99"), res.same_top1,
                   ref_number(ref, k, "128", "same_top1"), res.delta_p_rms, ref_number(ref, k, "128", "delta_p_rms"));
            CHECK(fabs(res.kld_mean / kld - 1) < 2e-3);
            CHECK(fabs(res.kld_median / ref_number(ref, k, "128", "kld_median") - 1) < 5e-3);
            CHECK(fabs(res.kld_p99 / ref_number(ref, k, "128", "kld_p99") - 1) < 5e-3);
            CHECK(fabs(res.same_top1 - ref_number(ref, k, "128", "same_top1")) < 2e-3);
            CHECK(fabs(res.delta_p_rms / ref_number(ref, k, "128", "delta_p_rms") - 1) < 2e-3);
            json_t *base_ref = load_reference("tiny-mixtral");
            double base_ppl = ref_number(base_ref, "ppl", "128", "ppl");
            CHECK_MSG(fabs(res.ppl_ref / base_ppl - 1) <= 1e-3, "ppl_ref %g vs %g", res.ppl_ref, base_ppl);
            CHECK_NEAR(res.ppl_ratio, res.ppl / res.ppl_ref, 1e-12);
            json_decref(base_ref);
        }
        json_decref(ref);
        moeq_model_close(m);
    }
    moeq_model_close(base);
    free(ids);
}

static void test_self_reference_is_zero(void)
{
    moeq_error err = {0};
    int32_t *ids = NULL;
    int64_t n = 0;
    moeq_model *m = NULL;
    CHECK(moeq_tokens_load(FIXTURES "/heldout.safetensors", 1024, &ids, &n, &err) == MOEQ_OK);
    CHECK(moeq_model_open(FIXTURES "/tiny-olmoe", &m, &err) == MOEQ_OK);
    if (m && ids) {
        moeq_eval_opts o = {.ctx = 64, .max_tokens = 640};
        moeq_eval_result res;
        CHECK(moeq_eval(m, m, ids, n, &o, &res, &err) == MOEQ_OK);
        CHECK(res.windows == 10 && res.tokens == 630);
        CHECK(res.kld_mean == 0 && res.same_top1 == 1 && res.delta_p_rms == 0 && res.ppl_ratio == 1);
    }
    moeq_model_close(m);
    free(ids);
}

static void test_quantile_against_brute_force(void)
{
    double v[] = {5, 1, 4, 2, 3};
    CHECK_NEAR(moeq_quantile_inplace(v, 5, 0.5), 3, 0);
    double w[] = {0, 10};
    CHECK_NEAR(moeq_quantile_inplace(w, 2, 0.99), 9.9, 1e-12);
    double one[] = {7};
    CHECK_NEAR(moeq_quantile_inplace(one, 1, 0.99), 7, 0);
}

int main(void)
{
    moeq_threads_init(0);
    RUN_TEST(test_logits_match_transformers);
    RUN_TEST(test_logits_independent_of_threads);
    RUN_TEST(test_layerwise_steps_equal_forward);
    RUN_TEST(test_perplexity_matches_transformers);
    RUN_TEST(test_self_reference_is_zero);
    RUN_TEST(test_quantile_against_brute_force);
    HARNESS_EXIT();
}
