/* The model view over the four fixtures: shapes of every layer view, the fused-expert slice
 * against a manual one, parameter counts against the checkpoint, and rejection of configs and
 * checkpoints that disagree (shape, dtype, model_type, missing lm_head). */
#include "moeq_model.h"
#include "harness.h"

#include <dirent.h>
#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *fixtures[4] = { "tiny-mixtral", "tiny-qwen2moe", "tiny-qwen3moe", "tiny-olmoe" };

static moeq_model *open_fixture(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, FIXTURES "/%s", name);
    moeq_model *m = NULL;
    moeq_error err = { 0 };
    if (moeq_model_open(path, &m, &err) != MOEQ_OK) fprintf(stderr, "  %s: %s\n", path, err.detail);
    return m;
}

static int mat_is(const moeq_mat *m, int64_t rows, int64_t cols)
{
    return m->data && m->rows == rows && m->cols == cols && m->tensor && m->index == -1 &&
           (m->dtype == MOEQ_DT_BF16 || m->dtype == MOEQ_DT_F16 || m->dtype == MOEQ_DT_F32);
}

static void test_layer_shapes(void)
{
    for (int i = 0; i < 4; i++) {
        moeq_model *m = open_fixture(fixtures[i]);
        CHECK(m != NULL);
        if (!m) continue;
        const moeq_config *c = moeq_model_config(m);
        const int64_t H = c->hidden, qd = c->heads * c->head_dim, kd = c->kv_heads * c->head_dim;
        CHECK(strstr(moeq_model_path(m), fixtures[i]) != NULL);
        CHECK(moeq_model_checkpoint(m) != NULL);
        CHECK(mat_is(moeq_model_embed(m), c->vocab, H));
        CHECK(mat_is(moeq_model_lm_head(m), c->vocab, H));
        CHECK((moeq_model_lm_head(m)->data == moeq_model_embed(m)->data) == (c->tie_embeddings != 0));
        CHECK(moeq_model_final_norm(m)->n == H && moeq_model_final_norm(m)->data);
        CHECK(moeq_model_layer(m, -1) == NULL && moeq_model_layer(m, c->layers) == NULL);
        for (int64_t l = 0; l < c->layers; l++) {
            const moeq_layer_view *v = moeq_model_layer(m, l);
            CHECK(v != NULL);
            if (!v) continue;
            CHECK(v->attn_norm.n == H && v->mlp_norm.n == H && v->attn_norm.data && v->mlp_norm.data);
            CHECK(mat_is(&v->q, qd, H) && mat_is(&v->k, kd, H) && mat_is(&v->v, kd, H) && mat_is(&v->o, H, qd));
            CHECK((v->q_bias.data != NULL) == (c->qkv_bias != 0));
            if (c->qkv_bias) CHECK(v->q_bias.n == qd && v->k_bias.n == kd && v->v_bias.n == kd);
            if (c->qk_norm == MOEQ_QK_NORM_HEAD) CHECK(v->q_norm.n == c->head_dim && v->k_norm.n == c->head_dim);
            if (c->qk_norm == MOEQ_QK_NORM_FULL) CHECK(v->q_norm.n == qd && v->k_norm.n == kd);
            if (c->qk_norm == MOEQ_QK_NORM_NONE) CHECK(v->q_norm.data == NULL && v->k_norm.data == NULL);
            CHECK(v->is_moe == c->layer_is_moe[l]);
            if (!v->is_moe) {
                CHECK(mat_is(&v->dense_gate, c->dense_inter, H) && mat_is(&v->dense_up, c->dense_inter, H));
                CHECK(mat_is(&v->dense_down, H, c->dense_inter));
                CHECK(v->router.data == NULL);
                moeq_mat e;
                moeq_error err;
                CHECK(moeq_model_expert(m, l, 0, MOEQ_PROJ_GATE, &e, &err) == MOEQ_ERR_MISUSE);
                continue;
            }
            CHECK(mat_is(&v->router, c->n_experts, H));
            CHECK(v->dense_gate.data == NULL);
            if (c->shared_inter) {
                CHECK(mat_is(&v->shared_gate, c->shared_inter, H) && mat_is(&v->shared_up, c->shared_inter, H));
                CHECK(mat_is(&v->shared_down, H, c->shared_inter) && mat_is(&v->shared_expert_gate, 1, H));
            } else {
                CHECK(v->shared_gate.data == NULL && v->shared_expert_gate.data == NULL);
            }
            for (int64_t e = 0; e < c->n_experts; e++) {
                moeq_mat g, u, d;
                moeq_error err;
                CHECK(moeq_model_expert(m, l, e, MOEQ_PROJ_GATE, &g, &err) == MOEQ_OK);
                CHECK(moeq_model_expert(m, l, e, MOEQ_PROJ_UP, &u, &err) == MOEQ_OK);
                CHECK(moeq_model_expert(m, l, e, MOEQ_PROJ_DOWN, &d, &err) == MOEQ_OK);
                CHECK(g.rows == c->moe_inter && g.cols == H && u.rows == c->moe_inter && u.cols == H);
                CHECK(d.rows == H && d.cols == c->moe_inter);
                CHECK(g.data && u.data && d.data && g.data != u.data);
                CHECK(g.index == (moeq_model_fused_experts(m) ? e : -1));
            }
            moeq_mat x;
            moeq_error err;
            CHECK(moeq_model_expert(m, l, c->n_experts, MOEQ_PROJ_GATE, &x, &err) == MOEQ_ERR_MISUSE);
            CHECK(moeq_model_expert(m, l, 0, MOEQ_PROJ_Q, &x, &err) == MOEQ_ERR_MISUSE);
        }
        moeq_model_close(m);
    }
}

static void test_expert_names(void)
{
    moeq_model *m = open_fixture("tiny-mixtral");
    CHECK(m && !moeq_model_fused_experts(m));
    if (m) {
        moeq_mat e;
        moeq_error err;
        CHECK(moeq_model_expert(m, 2, 5, MOEQ_PROJ_UP, &e, &err) == MOEQ_OK);
        CHECK(strcmp(e.tensor, "model.layers.2.block_sparse_moe.experts.5.w3.weight") == 0);
        CHECK(e.data == moeq_ckpt_find(moeq_model_checkpoint(m), e.tensor)->data);
        CHECK(strcmp(moeq_model_layer(m, 3)->router.tensor, "model.layers.3.block_sparse_moe.gate.weight") == 0);
        moeq_model_close(m);
    }
    CHECK(strcmp(moeq_proj_name(MOEQ_PROJ_GATE), "gate") == 0);
    CHECK(strcmp(moeq_proj_name(MOEQ_PROJ_SHARED_DOWN), "shared_down") == 0);
    CHECK(strcmp(moeq_proj_name(MOEQ_PROJ_ROUTER), "router") == 0);
    CHECK(strcmp(moeq_proj_name(MOEQ_PROJ_COUNT), "unknown") == 0);
}

/* qwen3moe is stored fused: expert e's views must be exactly the slices of the 3-D tensors. */
static void test_fused_slice(void)
{
    moeq_model *m = open_fixture("tiny-qwen3moe");
    CHECK(m && moeq_model_fused_experts(m));
    if (!m) return;
    const moeq_config *c = moeq_model_config(m);
    const moeq_tensor *gu = moeq_ckpt_find(moeq_model_checkpoint(m), "model.layers.2.mlp.experts.gate_up_proj");
    const moeq_tensor *dn = moeq_ckpt_find(moeq_model_checkpoint(m), "model.layers.2.mlp.experts.down_proj");
    CHECK(gu && dn && gu->dtype == MOEQ_DT_BF16);
    if (!gu || !dn) { moeq_model_close(m); return; }
    const int64_t E = c->n_experts, I = c->moe_inter, H = c->hidden;
    CHECK(gu->shape[0] == E && gu->shape[1] == 2 * I && gu->shape[2] == H);
    float *want = malloc((size_t)(I * H) * sizeof(float)), *got = malloc((size_t)(I * H) * sizeof(float));
    for (int64_t e = 0; e < E; e++) {
        moeq_mat g, u, d;
        moeq_error err;
        CHECK(moeq_model_expert(m, 2, e, MOEQ_PROJ_GATE, &g, &err) == MOEQ_OK);
        CHECK(moeq_model_expert(m, 2, e, MOEQ_PROJ_UP, &u, &err) == MOEQ_OK);
        CHECK(moeq_model_expert(m, 2, e, MOEQ_PROJ_DOWN, &d, &err) == MOEQ_OK);
        CHECK(strcmp(g.tensor, gu->name) == 0 && g.index == e && strcmp(d.tensor, dn->name) == 0);
        /* manual slice: element [e, r, c] of a BF16 [E, 2I, H] tensor, widened by hand */
        const uint16_t *raw = gu->data;
        for (int which = 0; which < 2; which++) {
            for (int64_t r = 0; r < I; r++)
                for (int64_t k = 0; k < H; k++) {
                    uint32_t bits = (uint32_t)raw[(e * 2 * I + which * I + r) * H + k] << 16;
                    memcpy(&want[r * H + k], &bits, 4);
                }
            moeq_mat_to_f32(which ? &u : &g, 0, I, got);
            CHECK(memcmp(want, got, (size_t)(I * H) * sizeof(float)) == 0);
        }
        const uint16_t *rd = dn->data;
        for (int64_t r = 0; r < H; r++)
            for (int64_t k = 0; k < I; k++) {
                uint32_t bits = (uint32_t)rd[(e * H + r) * I + k] << 16;
                memcpy(&want[r * I + k], &bits, 4);
            }
        moeq_mat_to_f32(&d, 0, H, got);
        CHECK(memcmp(want, got, (size_t)(H * I) * sizeof(float)) == 0);
        /* a partial row range of the up slice */
        moeq_mat_to_f32(&u, 5, 9, got);
        CHECK((const uint16_t *)u.data == raw + (e * 2 * I + I) * H);
    }
    free(want);
    free(got);
    moeq_model_close(m);
}

static void test_param_counts(void)
{
    for (int i = 0; i < 4; i++) {
        moeq_model *m = open_fixture(fixtures[i]);
        CHECK(m != NULL);
        if (!m) continue;
        const moeq_config *c = moeq_model_config(m);
        const moeq_checkpoint *ck = moeq_model_checkpoint(m);
        int64_t sum = 0;
        for (size_t t = 0; t < moeq_ckpt_count(ck); t++) sum += moeq_ckpt_tensor(ck, t)->numel;
        moeq_param_counts p;
        moeq_model_param_counts(m, &p);
        CHECK_MSG(p.total == sum, "%s: total %lld, checkpoint %lld", fixtures[i], (long long)p.total, (long long)sum);
        CHECK(p.total == p.attention + p.router + p.shared_experts + p.routed_experts + p.embeddings + p.other);
        int64_t moe_layers = 0;
        for (int64_t l = 0; l < c->layers; l++) moe_layers += c->layer_is_moe[l];
        const int64_t H = c->hidden, I = c->moe_inter, E = c->n_experts;
        CHECK(p.router == moe_layers * E * H);
        CHECK(p.routed_experts == moe_layers * E * 3 * I * H);
        CHECK(p.embeddings == (c->tie_embeddings ? 1 : 2) * c->vocab * H);
        CHECK(p.shared_experts == moe_layers * (c->shared_inter ? 3 * c->shared_inter * H + H : 0));
        moeq_model_close(m);
    }
}

/* ---- broken variants: a temp dir with an edited config.json and links to the shards ------- */

typedef void (*config_edit)(json_t *cfg);

static int make_variant(const char *fixture, config_edit edit, const char *replace_file,
                        const void *replace_data, size_t replace_len, char *dir, size_t cap)
{
    char src[PATH_MAX], abs_src[PATH_MAX];
    snprintf(src, sizeof src, FIXTURES "/%s", fixture);
    if (!realpath(src, abs_src)) return -1;
    snprintf(dir, cap, "/tmp/moeq-view-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    DIR *d = opendir(abs_src);
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "config.json") == 0 || strcmp(e->d_name, "ref") == 0) continue;
        char from[PATH_MAX + 256], to[PATH_MAX + 256];
        snprintf(from, sizeof from, "%s/%s", abs_src, e->d_name);
        snprintf(to, sizeof to, "%s/%s", dir, e->d_name);
        if (replace_file && strcmp(e->d_name, replace_file) == 0) {
            FILE *f = fopen(to, "wb");
            if (!f || fwrite(replace_data, 1, replace_len, f) != replace_len) { if (f) fclose(f); closedir(d); return -1; }
            fclose(f);
        } else if (symlink(from, to) != 0) {
            closedir(d);
            return -1;
        }
    }
    closedir(d);
    char cpath[PATH_MAX + 32];
    snprintf(cpath, sizeof cpath, "%s/config.json", abs_src);
    json_t *cfg = json_load_file(cpath, 0, NULL);
    if (!cfg) return -1;
    if (edit) edit(cfg);
    snprintf(cpath, sizeof cpath, "%s/config.json", dir);
    int rc = json_dump_file(cfg, cpath, JSON_INDENT(2));
    json_decref(cfg);
    return rc;
}

static void remove_variant(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[PATH_MAX + 256];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static void edit_hidden(json_t *cfg) { json_object_set_new(cfg, "hidden_size", json_integer(64)); }
static void edit_type(json_t *cfg) { json_object_set_new(cfg, "model_type", json_string("granitemoe")); }
static void edit_untie(json_t *cfg) { json_object_set_new(cfg, "tie_word_embeddings", json_false()); }
static void edit_experts(json_t *cfg)
{
    json_object_set_new(cfg, json_object_get(cfg, "num_experts") ? "num_experts" : "num_local_experts",
                        json_integer(9));
}

static moeq_status open_variant(const char *fixture, config_edit edit, const char *file, const void *data,
                                size_t len, moeq_error *err)
{
    char dir[64];
    if (make_variant(fixture, edit, file, data, len, dir, sizeof dir) != 0) {
        fprintf(stderr, "  cannot build a variant of %s\n", fixture);
        return MOEQ_ERR_IO;
    }
    moeq_model *m = NULL;
    moeq_status st = moeq_model_open(dir, &m, err);
    moeq_model_close(m);
    remove_variant(dir);
    return st;
}

static void test_shape_mismatch(void)
{
    moeq_error err = { 0 };
    CHECK(open_variant("tiny-mixtral", edit_hidden, NULL, NULL, 0, &err) == MOEQ_ERR_FORMAT);
    CHECK_MSG(strstr(err.detail, "tensor 'model.embed_tokens.weight'") &&
              strstr(err.detail, "shape [1024, 128] does not match [1024, 64]"), "%s", err.detail);
    /* an expert count the router disagrees with (per-expert olmoe, sharded) */
    CHECK(open_variant("tiny-olmoe", edit_experts, NULL, NULL, 0, &err) == MOEQ_ERR_FORMAT);
    CHECK_MSG(strstr(err.detail, "model.layers.0.mlp.gate.weight") && strstr(err.detail, "[8, 128]") &&
              strstr(err.detail, "[9, 128]"), "%s", err.detail);
    /* and the fused layout */
    CHECK(open_variant("tiny-qwen3moe", edit_experts, NULL, NULL, 0, &err) == MOEQ_ERR_FORMAT);
    CHECK_MSG(strstr(err.detail, "[8, 128]") && strstr(err.detail, "[9, 128]"), "%s", err.detail);
}

static void test_unknown_type_and_missing(void)
{
    moeq_error err = { 0 };
    CHECK(open_variant("tiny-qwen3moe", edit_type, NULL, NULL, 0, &err) == MOEQ_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(err.detail, "\"granitemoe\"") && strstr(err.detail, "config.json"), "%s", err.detail);
    /* qwen2moe stores no lm_head (tied); untied it must be missing */
    CHECK(open_variant("tiny-qwen2moe", edit_untie, NULL, NULL, 0, &err) == MOEQ_ERR_FORMAT);
    CHECK_MSG(strstr(err.detail, "'lm_head.weight' not found"), "%s", err.detail);
    moeq_model *m = NULL;
    CHECK(moeq_model_open("/nonexistent/moeq-model", &m, &err) == MOEQ_ERR_NOT_FOUND && m == NULL);
    CHECK(strstr(err.detail, "/nonexistent/moeq-model") != NULL);
    CHECK(moeq_model_open(FIXTURES, &m, &err) == MOEQ_ERR_NOT_FOUND);   /* no config.json */
    CHECK_MSG(strstr(err.detail, FIXTURES "/config.json"), "%s", err.detail);
}

/* Rewrites model.safetensors of tiny-qwen2moe with one norm declared I32 (same byte count). */
static void test_bad_dtype(void)
{
    FILE *f = fopen(FIXTURES "/tiny-qwen2moe/model.safetensors", "rb");
    CHECK(f != NULL);
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)len);
    CHECK(fread(buf, 1, (size_t)len, f) == (size_t)len);
    fclose(f);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | buf[i];
    json_t *h = json_loadb((const char *)buf + 8, (size_t)hlen, 0, NULL);
    CHECK(h != NULL);
    json_t *t = json_object_get(h, "model.layers.0.input_layernorm.weight");
    CHECK(t != NULL);
    json_object_set_new(t, "dtype", json_string("I32"));
    json_object_set_new(t, "shape", json_pack("[i]", 64));   /* 64 x 4 bytes = 128 x 2 */
    char *nh = json_dumps(h, JSON_COMPACT);
    size_t nlen = strlen(nh), padded = (nlen + 7) & ~(size_t)7;
    size_t data_len = (size_t)len - 8 - (size_t)hlen, out_len = 8 + padded + data_len;
    unsigned char *out = malloc(out_len);
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(out + 8, nh, nlen);
    memset(out + 8 + nlen, ' ', padded - nlen);
    memcpy(out + 8 + padded, buf + 8 + hlen, data_len);
    moeq_error err = { 0 };
    CHECK(open_variant("tiny-qwen2moe", NULL, "model.safetensors", out, out_len, &err) == MOEQ_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(err.detail, "tensor 'model.layers.0.input_layernorm.weight': dtype I32 is not supported"),
              "%s", err.detail);
    free(out);
    free(nh);
    json_decref(h);
    free(buf);
}

int main(void)
{
    RUN_TEST(test_layer_shapes);
    RUN_TEST(test_expert_names);
    RUN_TEST(test_fused_slice);
    RUN_TEST(test_param_counts);
    RUN_TEST(test_shape_mismatch);
    RUN_TEST(test_unknown_type_and_missing);
    RUN_TEST(test_bad_dtype);
    HARNESS_EXIT();
}
