/* Model view overrides (moeq_model_set_override, what sequential GPTQ installs): an override
 * with the widened checkpoint values leaves the logits bit-identical, a different one changes
 * them (routed experts, fused v5 experts, attention, the shared expert, embeddings and head),
 * and clearing restores the checkpoint views. moeq_eval's reference cache (measured plan costs):
 * the cached logits and the resumed passes (start_layer) give the results of whole passes, bit
 * for bit. */
#include "moeq_model.h"
#include "moeq_eval.h"
#include "harness.h"

#include <stdlib.h>
#include <string.h>

static const char *fixtures[2] = { "tiny-qwen2moe", "tiny-qwen3moe" };

static float *logits_of(moeq_model *m, const int32_t *tok, int64_t n)
{
    const moeq_config *c = moeq_model_config(m);
    float *lg = malloc((size_t)(n * c->vocab) * sizeof *lg);
    moeq_runner *r = NULL;
    moeq_error err = { 0 };
    int ok = lg && moeq_runner_create(m, n, 1, &r, &err) == MOEQ_OK &&
             moeq_forward(r, tok, n, lg, NULL, &err) == MOEQ_OK;
    moeq_runner_free(r);
    if (!ok) { free(lg); return NULL; }
    return lg;
}

static void test_overrides(void)
{
    int32_t tok[24];
    for (int i = 0; i < 24; i++) tok[i] = (i * 37 + 5) % 1000;
    for (int fi = 0; fi < 2; fi++) {
        char path[256];
        snprintf(path, sizeof path, FIXTURES "/%s", fixtures[fi]);
        moeq_model *m = NULL;
        moeq_error err = { 0 };
        CHECK(moeq_model_open(path, &m, &err) == MOEQ_OK);
        if (!m) continue;
        const moeq_config *c = moeq_model_config(m);
        size_t V = (size_t)(24 * c->vocab);
        float *base = logits_of(m, tok, 24);
        CHECK(base != NULL);
        /* every matrix of layer 0 replaced by its own widened values: same logits bit for bit */
        moeq_mat orig[3];
        float *w[3], *wo = NULL;
        for (int p = 0; p < 3; p++) {
            CHECK(moeq_model_expert(m, 0, 1, (moeq_proj)p, &orig[p], &err) == MOEQ_OK);
            w[p] = malloc((size_t)(orig[p].rows * orig[p].cols) * sizeof(float));
            moeq_mat_to_f32(&orig[p], 0, orig[p].rows, w[p]);
            CHECK(moeq_model_set_override(m, 0, 1, (moeq_proj)p, w[p], &err) == MOEQ_OK);
        }
        const moeq_mat *o = &moeq_model_layer(m, 0)->o;
        const char *o_name = o->tensor;
        wo = malloc((size_t)(o->rows * o->cols) * sizeof(float));
        moeq_mat_to_f32(o, 0, o->rows, wo);
        CHECK(moeq_model_set_override(m, 0, -1, MOEQ_PROJ_O, wo, &err) == MOEQ_OK);
        moeq_mat v;
        CHECK(moeq_model_expert(m, 0, 1, MOEQ_PROJ_UP, &v, &err) == MOEQ_OK);
        CHECK(v.dtype == MOEQ_DT_F32 && v.data == w[1] && v.tensor == orig[1].tensor && v.index == orig[1].index);
        CHECK(moeq_model_layer(m, 0)->o.dtype == MOEQ_DT_F32 && moeq_model_layer(m, 0)->o.data == wo &&
              moeq_model_layer(m, 0)->o.tensor == o_name);
        float *same = logits_of(m, tok, 24);
        CHECK(same && base && memcmp(same, base, V * sizeof(float)) == 0);
        /* a changed down projection and o: different logits */
        for (int64_t i = 0; i < orig[2].rows * orig[2].cols; i++) w[2][i] *= 0.5f;
        for (int64_t i = 0; i < 64; i++) wo[i] += 0.25f;
        float *diff = logits_of(m, tok, 24);
        CHECK(diff && base && memcmp(diff, base, V * sizeof(float)) != 0);
        /* the shared expert (qwen2moe) can be overridden too; bad requests are refused */
        if (moeq_model_layer(m, 0)->shared_down.data)
            CHECK(moeq_model_set_override(m, 0, -1, MOEQ_PROJ_SHARED_DOWN, NULL, &err) == MOEQ_OK);
        else
            CHECK(moeq_model_set_override(m, 0, -1, MOEQ_PROJ_SHARED_DOWN, wo, &err) == MOEQ_ERR_MISUSE);
        CHECK(moeq_model_set_override(m, 0, -1, MOEQ_PROJ_ROUTER, wo, &err) == MOEQ_ERR_MISUSE);
        CHECK(moeq_model_set_override(m, 0, c->n_experts, MOEQ_PROJ_GATE, wo, &err) == MOEQ_ERR_MISUSE);
        CHECK(moeq_model_set_override(m, c->layers, -1, MOEQ_PROJ_Q, wo, &err) == MOEQ_ERR_MISUSE);
        moeq_model_clear_overrides(m);
        CHECK(moeq_model_expert(m, 0, 1, MOEQ_PROJ_DOWN, &v, &err) == MOEQ_OK);
        CHECK(v.dtype == orig[2].dtype && v.data == orig[2].data);
        float *back = logits_of(m, tok, 24);
        CHECK(back && base && memcmp(back, base, V * sizeof(float)) == 0);
        free(base); free(same); free(diff); free(back); free(wo);
        for (int p = 0; p < 3; p++) free(w[p]);
        moeq_model_close(m);
    }
}

static void test_head_overrides(void)
{
    int32_t tok[24];
    for (int i = 0; i < 24; i++) tok[i] = (i * 37 + 5) % 1000;
    moeq_model *m = NULL;
    moeq_error err = { 0 };
    CHECK(moeq_model_open(FIXTURES "/tiny-qwen3moe", &m, &err) == MOEQ_OK);
    if (!m) return;
    const moeq_config *c = moeq_model_config(m);
    const size_t V = (size_t)(24 * c->vocab), n = (size_t)(c->vocab * c->hidden);
    float *base = logits_of(m, tok, 24), *we = malloc(n * sizeof *we), *wh = malloc(n * sizeof *wh);
    CHECK(base && we && wh);
    if (!base || !we || !wh) goto out;
    const moeq_mat *e0 = moeq_model_embed(m), *h0 = moeq_model_lm_head(m);
    moeq_mat_to_f32(e0, 0, e0->rows, we);
    moeq_mat_to_f32(h0, 0, h0->rows, wh);
    CHECK(moeq_model_set_head_override(m, 0, we, &err) == MOEQ_OK && moeq_model_set_head_override(m, 1, wh, &err) == MOEQ_OK);
    CHECK(moeq_model_embed(m)->data == we && moeq_model_lm_head(m)->data == wh && moeq_model_embed(m)->dtype == MOEQ_DT_F32);
    float *same = logits_of(m, tok, 24);
    CHECK(same && memcmp(same, base, V * sizeof(float)) == 0);
    for (size_t i = 0; i < n; i += 7) wh[i] *= 0.5f;   /* the head alone: other logits */
    float *diff = logits_of(m, tok, 24);
    CHECK(diff && memcmp(diff, base, V * sizeof(float)) != 0);
    CHECK(moeq_model_set_head_override(m, 2, wh, &err) == MOEQ_ERR_MISUSE);
    moeq_model_clear_overrides(m);
    CHECK(moeq_model_embed(m)->data == e0->data && moeq_model_lm_head(m)->data == h0->data);
    free(same); free(diff);
out:
    free(base); free(we); free(wh);
    moeq_model_close(m);
}

/* moeq_eval against a reference: whole passes, then through the cache (filling, then cached
 * logits with the forward pass resumed at the overridden layer), the same numbers bit for bit. */
static void test_eval_cache(void)
{
    moeq_model *m = NULL, *mm = NULL;
    moeq_error err = { 0 };
    CHECK(moeq_model_open(FIXTURES "/tiny-qwen3moe", &m, &err) == MOEQ_OK && moeq_model_open(FIXTURES "/tiny-qwen3moe", &mm, &err) == MOEQ_OK);
    if (!m || !mm) { moeq_model_close(m); moeq_model_close(mm); return; }
    const moeq_config *c = moeq_model_config(m);
    int32_t tok[96];
    for (int i = 0; i < 96; i++) tok[i] = (i * 53 + 11) % 1000;
    const int64_t l = c->layers - 1;
    moeq_mat v;
    CHECK(moeq_model_expert(mm, l, 0, MOEQ_PROJ_DOWN, &v, &err) == MOEQ_OK);
    float *w = malloc((size_t)(v.rows * v.cols) * sizeof *w);
    CHECK(w != NULL);
    if (!w) goto out;
    moeq_mat_to_f32(&v, 0, v.rows, w);
    for (int64_t i = 0; i < v.rows * v.cols; i++) w[i] *= 0.75f;
    CHECK(moeq_model_set_override(mm, l, 0, MOEQ_PROJ_DOWN, w, &err) == MOEQ_OK);
    moeq_eval_ref_cache rc;
    CHECK(moeq_eval_ref_cache_init(&rc, m, tok, 96, 32, 0, 1u << 30, &err) == MOEQ_OK && rc.logits && rc.hidden);
    moeq_eval_opts plain = { .ctx = 32, .threads = 1 }, cached = { .ctx = 32, .threads = 1, .ref_cache = &rc, .start_layer = l };
    moeq_eval_result a, b, d;
    CHECK(moeq_eval(mm, m, tok, 96, &plain, &a, &err) == MOEQ_OK);
    CHECK(moeq_eval(mm, m, tok, 96, &cached, &b, &err) == MOEQ_OK && rc.filled);   /* fills */
    CHECK(moeq_eval(mm, m, tok, 96, &cached, &d, &err) == MOEQ_OK);                /* resumes at l */
    CHECK(a.kld_mean > 0 && a.kld_mean == b.kld_mean && a.kld_mean == d.kld_mean && a.ppl == d.ppl &&
          a.ppl_ref == d.ppl_ref && a.same_top1 == d.same_top1 && a.kld_p99 == d.kld_p99);
    moeq_eval_ref_cache_free(&rc);
out:
    free(w);
    moeq_model_close(m);
    moeq_model_close(mm);
}

int main(void)
{
    RUN_TEST(test_overrides);
    RUN_TEST(test_head_overrides);
    RUN_TEST(test_eval_cache);
    HARNESS_EXIT();
}
