/* config.json parsing (CF-n rules) on the four fixtures and a catalogue of broken configs;
 * the family table; BF16/F16 widening against independent formulas. */
#include "moeq_model.h"
#include "formats/family.h"
#include "harness.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = malloc(1 << 20);
    *len = buf ? fread(buf, 1, 1 << 20, f) : 0;
    fclose(f);
    return buf;
}

static moeq_status parse_fixture(const char *name, moeq_config *c, moeq_error *err)
{
    char path[256];
    snprintf(path, sizeof path, FIXTURES "/%s/config.json", name);
    size_t len = 0;
    char *buf = slurp(path, &len);
    if (!buf) {
        fprintf(stderr, "  cannot read %s\n", path);
        return MOEQ_ERR_IO;
    }
    moeq_status st = moeq_config_parse(buf, len, path, c, err);
    if (st) fprintf(stderr, "  %s: %s\n", path, err->detail);
    free(buf);
    return st;
}

static void test_common_fields(void)
{
    const char *names[4] = { "tiny-mixtral", "tiny-qwen2moe", "tiny-qwen3moe", "tiny-olmoe" };
    for (int i = 0; i < 4; i++) {
        moeq_config c;
        moeq_error err;
        CHECK(parse_fixture(names[i], &c, &err) == MOEQ_OK);
        CHECK(c.family != NULL && strcmp(c.family->model_type, c.model_type) == 0);
        CHECK(c.vocab == 1024 && c.hidden == 128 && c.layers == 4 && c.heads == 4 && c.kv_heads == 2);
        CHECK(c.n_experts == 8 && c.max_positions == 1024);
        CHECK_NEAR(c.rms_eps, 1e-6, 1e-15);
    }
}

static void test_mixtral(void)
{
    moeq_config c;
    moeq_error err;
    CHECK(parse_fixture("tiny-mixtral", &c, &err) == MOEQ_OK);
    CHECK(strcmp(c.model_type, "mixtral") == 0);
    CHECK(c.head_dim == 32);   /* head_dim: null → hidden / heads */
    CHECK(c.moe_inter == 160 && c.dense_inter == 0 && c.shared_inter == 0);
    CHECK(c.top_k == 2 && c.norm_topk_prob == 1 && c.tie_embeddings == 0 && c.qkv_bias == 0);
    CHECK(c.qk_norm == MOEQ_QK_NORM_NONE);
    CHECK_NEAR(c.rope_theta, 10000.0, 0);
    for (int l = 0; l < 4; l++) CHECK(c.layer_is_moe[l] == 1);
    CHECK(c.layer_is_moe[4] == 0);
}

static void test_qwen2moe(void)
{
    moeq_config c;
    moeq_error err;
    CHECK(parse_fixture("tiny-qwen2moe", &c, &err) == MOEQ_OK);
    CHECK(strcmp(c.model_type, "qwen2_moe") == 0);
    CHECK(c.moe_inter == 96 && c.dense_inter == 256 && c.shared_inter == 192);
    CHECK(c.qkv_bias == 1 && c.tie_embeddings == 1 && c.norm_topk_prob == 0);
    CHECK(c.qk_norm == MOEQ_QK_NORM_NONE);
    CHECK_NEAR(c.rope_theta, 50000.0, 0);
    CHECK(c.layer_is_moe[0] == 1 && c.layer_is_moe[1] == 0 && c.layer_is_moe[2] == 1 && c.layer_is_moe[3] == 1);
}

static void test_qwen3moe(void)
{
    moeq_config c;
    moeq_error err;
    CHECK(parse_fixture("tiny-qwen3moe", &c, &err) == MOEQ_OK);
    CHECK(strcmp(c.model_type, "qwen3_moe") == 0);
    CHECK(c.head_dim == 48 && c.qk_norm == MOEQ_QK_NORM_HEAD);
    CHECK(c.norm_topk_prob == 1 && c.tie_embeddings == 0 && c.qkv_bias == 0);
    CHECK(c.moe_inter == 96 && c.shared_inter == 0);
    CHECK(c.n_experts == 8);   /* from num_local_experts, as transformers 5 writes it */
    CHECK_NEAR(c.rope_theta, 1e6, 0);
    for (int l = 0; l < 4; l++) CHECK(c.layer_is_moe[l] == 1);
}

static void test_olmoe(void)
{
    moeq_config c;
    moeq_error err;
    CHECK(parse_fixture("tiny-olmoe", &c, &err) == MOEQ_OK);
    CHECK(strcmp(c.model_type, "olmoe") == 0);
    CHECK(c.qk_norm == MOEQ_QK_NORM_FULL && c.top_k == 4 && c.norm_topk_prob == 0);
    CHECK(c.moe_inter == 96 && c.head_dim == 32 && c.tie_embeddings == 0);
    for (int l = 0; l < 4; l++) CHECK(c.layer_is_moe[l] == 1);
}

/* A minimal valid config; catalogue entries splice keys into it. */
#define BASE_KEYS                                                                              \
    "\"vocab_size\": 100, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "              \
    "\"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-5, \"num_experts_per_tok\": 2, "    \
    "\"num_local_experts\": 4, \"intermediate_size\": 32"

typedef struct bad_case {
    const char *name;
    const char *json;
    moeq_status code;
    const char *fragment;   /* must appear in the detail message */
} bad_case;

static const bad_case catalogue[] = {
    { "not JSON", "{\"model_type\": ", MOEQ_ERR_FORMAT, "CF-1: not valid JSON" },
    { "empty input", "", MOEQ_ERR_FORMAT, "CF-1" },
    { "not an object", "[1, 2, 3]", MOEQ_ERR_FORMAT, "CF-1: top-level value is not a JSON object" },
    { "duplicate key", "{\"model_type\": \"mixtral\", \"model_type\": \"olmoe\"}", MOEQ_ERR_FORMAT, "CF-1" },
    { "model_type missing", "{\"hidden_size\": 64}", MOEQ_ERR_FORMAT, "key 'model_type': missing" },
    { "model_type not a string", "{\"model_type\": 3}", MOEQ_ERR_FORMAT, "key 'model_type': wrong type" },
    { "unknown model_type", "{\"model_type\": \"llama\", \"hidden_size\": 64}", MOEQ_ERR_UNSUPPORTED,
      "model_type \"llama\" is not supported (supported: mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v3, "
      "kimi_k2, glm4_moe, dots1, ernie4_5_moe, phimoe, deepseek_v2, gpt_oss)" },
    { "hidden_size missing", "{\"model_type\": \"mixtral\", " BASE_KEYS "}", MOEQ_ERR_FORMAT,
      "CF-3: key 'hidden_size': missing" },
    { "hidden_size a string", "{\"model_type\": \"mixtral\", \"hidden_size\": \"64\", " BASE_KEYS "}",
      MOEQ_ERR_FORMAT, "CF-3: key 'hidden_size': wrong type (expected an integer)" },
    { "hidden_size fractional", "{\"model_type\": \"mixtral\", \"hidden_size\": 64.5, " BASE_KEYS "}",
      MOEQ_ERR_FORMAT, "key 'hidden_size': expected an integer, got 64.5" },
    { "hidden_size negative", "{\"model_type\": \"mixtral\", \"hidden_size\": -64, " BASE_KEYS "}",
      MOEQ_ERR_FORMAT, "key 'hidden_size': out of range" },
    { "heads not dividing hidden", "{\"model_type\": \"mixtral\", \"hidden_size\": 66, " BASE_KEYS "}",
      MOEQ_ERR_FORMAT, "CF-4: key 'num_attention_heads': 4 does not divide hidden_size 66" },
    { "kv_heads not dividing heads",
      "{\"model_type\": \"mixtral\", \"hidden_size\": 64, \"num_key_value_heads\": 3, " BASE_KEYS "}",
      MOEQ_ERR_FORMAT, "CF-4: key 'num_key_value_heads': 3 does not divide num_attention_heads 4" },
    { "top_k > experts",
      "{\"model_type\": \"mixtral\", \"hidden_size\": 64, \"vocab_size\": 100, \"num_hidden_layers\": 2,"
      " \"num_attention_heads\": 4, \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-5,"
      " \"num_experts_per_tok\": 5, \"num_local_experts\": 4, \"intermediate_size\": 32}",
      MOEQ_ERR_FORMAT, "CF-5: key 'num_experts_per_tok': out of range (5 > 4 experts)" },
    { "expert counts disagree",
      "{\"model_type\": \"olmoe\", \"hidden_size\": 64, \"num_experts\": 8, " BASE_KEYS "}",
      MOEQ_ERR_FORMAT, "CF-5: key 'num_local_experts': 4 disagrees with num_experts 8" },
    { "layers 0",
      "{\"model_type\": \"mixtral\", \"hidden_size\": 64, \"vocab_size\": 100, \"num_hidden_layers\": 0,"
      " \"num_attention_heads\": 4, \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-5,"
      " \"num_experts_per_tok\": 2, \"num_local_experts\": 4, \"intermediate_size\": 32}",
      MOEQ_ERR_FORMAT, "CF-3: key 'num_hidden_layers': out of range (expected 1..1024)" },
    { "unsupported rope_type",
      "{\"model_type\": \"mixtral\", \"hidden_size\": 64, \"rope_parameters\": {\"rope_type\": \"dynamic\","
      " \"rope_theta\": 10000.0}, " BASE_KEYS "}",
      MOEQ_ERR_UNSUPPORTED, "key 'rope_parameters.rope_type': \"dynamic\" is not supported" },
    { "yarn without original_max_position_embeddings",
      "{\"model_type\": \"mixtral\", \"hidden_size\": 64, \"rope_parameters\": {\"rope_type\": \"yarn\","
      " \"rope_theta\": 10000.0, \"factor\": 4}, " BASE_KEYS "}",
      MOEQ_ERR_FORMAT, "CF-6: key 'rope_parameters.original_max_position_embeddings': missing" },
    { "deepseek n_group not dividing the experts",
      "{\"model_type\": \"deepseek_v3\", \"hidden_size\": 64, \"moe_intermediate_size\": 16, \"n_group\": 3, "
      "\"topk_group\": 1, " BASE_KEYS "}",
      MOEQ_ERR_FORMAT, "CF-5: key 'n_group': 3 does not divide the 4 experts" },
    { "deepseek groups of one expert",
      "{\"model_type\": \"deepseek_v3\", \"hidden_size\": 64, \"moe_intermediate_size\": 16, \"n_group\": 4, "
      "\"topk_group\": 2, " BASE_KEYS "}",
      MOEQ_ERR_FORMAT, "CF-5: key 'n_group': groups of one expert" },
    { "unknown quant_method",
      "{\"model_type\": \"mixtral\", \"hidden_size\": 64, \"quantization_config\": {\"quant_method\": \"gptq\"}, "
      BASE_KEYS "}",
      MOEQ_ERR_UNSUPPORTED, "CF-11: key 'quantization_config.quant_method': \"gptq\" is not supported" },
    { "unsupported v4 rope_scaling",
      "{\"model_type\": \"mixtral\", \"hidden_size\": 64, \"rope_scaling\": {\"type\": \"linear\"}, " BASE_KEYS "}",
      MOEQ_ERR_UNSUPPORTED, "key 'rope_scaling.type'" },
    { "rope_theta a string",
      "{\"model_type\": \"mixtral\", \"hidden_size\": 64, \"rope_theta\": \"big\", " BASE_KEYS "}",
      MOEQ_ERR_FORMAT, "CF-6: key 'rope_theta': wrong type" },
    { "rms_norm_eps zero",
      "{\"model_type\": \"mixtral\", \"hidden_size\": 64, \"vocab_size\": 100, \"num_hidden_layers\": 2,"
      " \"num_attention_heads\": 4, \"max_position_embeddings\": 64, \"rms_norm_eps\": 0,"
      " \"num_experts_per_tok\": 2, \"num_local_experts\": 4, \"intermediate_size\": 32}",
      MOEQ_ERR_FORMAT, "CF-10: key 'rms_norm_eps': out of range" },
    { "mlp_only_layers out of range",
      "{\"model_type\": \"qwen2_moe\", \"hidden_size\": 64, \"moe_intermediate_size\": 16,"
      " \"shared_expert_intermediate_size\": 16, \"mlp_only_layers\": [5], " BASE_KEYS "}",
      MOEQ_ERR_FORMAT, "CF-7: key 'mlp_only_layers': element 0: layer 5 out of range" },
    { "decoder_sparse_step 0",
      "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"moe_intermediate_size\": 16,"
      " \"decoder_sparse_step\": 0, " BASE_KEYS "}",
      MOEQ_ERR_FORMAT, "CF-7: key 'decoder_sparse_step': out of range" },
    { "tie_word_embeddings not a bool",
      "{\"model_type\": \"mixtral\", \"hidden_size\": 64, \"tie_word_embeddings\": 1, " BASE_KEYS "}",
      MOEQ_ERR_FORMAT, "CF-8: key 'tie_word_embeddings': wrong type" },
    { "attention_bias true (o bias)",
      "{\"model_type\": \"olmoe\", \"hidden_size\": 64, \"attention_bias\": true, " BASE_KEYS "}",
      MOEQ_ERR_UNSUPPORTED, "CF-8: key 'attention_bias'" },
    { "hidden_act gelu",
      "{\"model_type\": \"mixtral\", \"hidden_size\": 64, \"hidden_act\": \"gelu\", " BASE_KEYS "}",
      MOEQ_ERR_UNSUPPORTED, "CF-9: key 'hidden_act'" },
    { "olmoe clip_qkv",
      "{\"model_type\": \"olmoe\", \"hidden_size\": 64, \"clip_qkv\": 8.0, " BASE_KEYS "}",
      MOEQ_ERR_UNSUPPORTED, "CF-9: key 'clip_qkv'" },
    { "qwen sliding window",
      "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"moe_intermediate_size\": 16,"
      " \"use_sliding_window\": true, " BASE_KEYS "}",
      MOEQ_ERR_UNSUPPORTED, "CF-9: key 'use_sliding_window'" },
    { "mixtral short sliding window",
      "{\"model_type\": \"mixtral\", \"hidden_size\": 64, \"sliding_window\": 16, " BASE_KEYS "}",
      MOEQ_ERR_UNSUPPORTED, "CF-9: key 'sliding_window': 16 < max_position_embeddings 64" },
    { "qwen2_moe without shared size",
      "{\"model_type\": \"qwen2_moe\", \"hidden_size\": 64, \"moe_intermediate_size\": 16, " BASE_KEYS "}",
      MOEQ_ERR_FORMAT, "CF-3: key 'shared_expert_intermediate_size': missing" },
    { "no expert count",
      "{\"model_type\": \"mixtral\", \"hidden_size\": 64, \"vocab_size\": 100, \"num_hidden_layers\": 2,"
      " \"num_attention_heads\": 4, \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-5,"
      " \"num_experts_per_tok\": 2, \"intermediate_size\": 32}",
      MOEQ_ERR_FORMAT, "CF-5: key 'num_local_experts': missing (nor num_experts)" },
};

static void test_catalogue(void)
{
    for (size_t i = 0; i < sizeof catalogue / sizeof catalogue[0]; i++) {
        const bad_case *b = &catalogue[i];
        moeq_config c;
        moeq_error err = { 0 };
        moeq_status st = moeq_config_parse(b->json, strlen(b->json), "broken/config.json", &c, &err);
        CHECK_MSG(st == b->code, "%s: status %d, expected %d (%s)", b->name, (int)st, (int)b->code, err.detail);
        CHECK_MSG(strstr(err.detail, b->fragment) != NULL, "%s: message \"%s\" lacks \"%s\"", b->name,
                  err.detail, b->fragment);
        CHECK_MSG(strstr(err.detail, "broken/config.json") == err.detail, "%s: message does not start with "
                  "the file name: %s", b->name, err.detail);
    }
}

static void test_accepted_variants(void)
{
    moeq_config c;
    moeq_error err = { 0 };
    /* v4: top-level rope_theta, rope_scaling null, num_experts, float sizes, head_dim given */
    const char *v4 = "{\"model_type\": \"qwen2_moe\", \"hidden_size\": 64.0, \"vocab_size\": 100,"
                     " \"num_hidden_layers\": 4, \"num_attention_heads\": 4, \"max_position_embeddings\": 64,"
                     " \"rms_norm_eps\": 1e-6, \"num_experts_per_tok\": 2, \"num_experts\": 4,"
                     " \"moe_intermediate_size\": 16, \"intermediate_size\": 48,"
                     " \"shared_expert_intermediate_size\": 24, \"rope_theta\": 1000000,"
                     " \"rope_scaling\": null, \"decoder_sparse_step\": 2, \"head_dim\": 8}";
    CHECK(moeq_config_parse(v4, strlen(v4), "v4.json", &c, &err) == MOEQ_OK);
    CHECK_NEAR(c.rope_theta, 1e6, 0);
    CHECK(c.hidden == 64 && c.head_dim == 8 && c.n_experts == 4 && c.kv_heads == 4);
    CHECK(c.qkv_bias == 1 && c.tie_embeddings == 0 && c.norm_topk_prob == 0);
    /* decoder_sparse_step 2: layers 1 and 3 are MoE */
    CHECK(!c.layer_is_moe[0] && c.layer_is_moe[1] && !c.layer_is_moe[2] && c.layer_is_moe[3]);

    /* both expert keys agreeing; mixtral ignores norm_topk_prob (always renormalizes); long
     * sliding window is plain causal attention; no rope at all → family default */
    const char *mx = "{\"model_type\": \"mixtral\", \"hidden_size\": 64, \"num_experts\": 4,"
                     " \"norm_topk_prob\": false, \"sliding_window\": 4096, " BASE_KEYS "}";
    CHECK(moeq_config_parse(mx, strlen(mx), "mx.json", &c, &err) == MOEQ_OK);
    CHECK(c.norm_topk_prob == 1 && c.n_experts == 4);
    CHECK_NEAR(c.rope_theta, 1e6, 0);
    CHECK(c.max_positions == 64);

    /* qwen3_moe defaults: norm_topk_prob false when absent (Qwen3MoeConfig) */
    const char *q3 = "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"moe_intermediate_size\": 16,"
                     " \"mlp_only_layers\": [0], " BASE_KEYS "}";
    CHECK(moeq_config_parse(q3, strlen(q3), "q3.json", &c, &err) == MOEQ_OK);
    CHECK(c.norm_topk_prob == 0 && c.qk_norm == MOEQ_QK_NORM_HEAD && c.dense_inter == 32);
    CHECK(!c.layer_is_moe[0] && c.layer_is_moe[1]);

    /* NULL arguments are misuse, not a crash */
    CHECK(moeq_config_parse(NULL, 0, "x", &c, &err) == MOEQ_ERR_MISUSE);
}

static void test_family_table(void)
{
    CHECK(moeq_family_count() == 12);
    CHECK(moeq_family_find("olmoe") == moeq_family_at(3));
    CHECK(moeq_family_find("llama") == NULL);
    CHECK(moeq_family_at(99) == NULL);
    char name[128];
    const moeq_family *mx = moeq_family_find("mixtral");
    CHECK(moeq_family_name(name, sizeof name, mx->expert[MOEQ_PROJ_DOWN][0], 3, 7) == 0);
    CHECK(strcmp(name, "model.layers.3.block_sparse_moe.experts.7.w2.weight") == 0);
    CHECK(moeq_family_name(name, sizeof name, mx->router[1], 12, -1) == 0);
    CHECK(strcmp(name, "model.layers.12.mlp.gate.weight") == 0);
    CHECK(moeq_family_name(name, 8, mx->router[0], 1, -1) == -1);   /* truncated */
    CHECK(moeq_family_name(name, sizeof name, NULL, 1, -1) == -1);
    const moeq_family *q2 = moeq_family_find("qwen2_moe");
    CHECK(moeq_family_name(name, sizeof name, q2->fused_gate_up[0], 0, -1) == 0);
    CHECK(strcmp(name, "model.layers.0.mlp.experts.gate_up_proj") == 0);
    /* every family names every weight the view needs */
    for (size_t i = 0; i < moeq_family_count(); i++) {
        const moeq_family *f = moeq_family_at(i);
        CHECK(f->embed && f->lm_head && f->final_norm && f->attn_norm && f->mlp_norm);
        CHECK(f->q && f->k && f->v && f->o && f->router[0] && f->fused_gate_up[0] && f->fused_down[0]);
        /* gpt_oss's hub layout is fused with biases; its per-expert names are a GGUF's rows */
        if (f->expert_layout == MOEQ_EXPERTS_GPTOSS) CHECK(f->fused_gate_up_bias && f->fused_down_bias);
        for (int p = 0; p < 3; p++) CHECK(f->expert[p][0] != NULL);
        CHECK(f->moe_inter_key != NULL);
    }
}

/* ---- widening ---------------------------------------------------------------------------- */

/* Independent reference: the value of a binary16 pattern by its definition. */
static double half_ref(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v;
    if (e == 0) v = ldexp((double)m, -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = ldexp(1024.0 + m, e - 25);
    return s ? -v : v;
}

static void test_f16_all_patterns(void)
{
    enum { N = 65536 };
    static uint16_t src[N];
    static float dst[N + 3];
    for (int i = 0; i < N; i++) src[i] = (uint16_t)i;
    moeq_mat m = { .tensor = "t", .index = -1, .dtype = MOEQ_DT_F16, .rows = 256, .cols = 256, .data = src };
    moeq_mat_to_f32(&m, 0, 256, dst);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        double r = half_ref((uint16_t)i);
        float f = dst[i];
        int ok;
        if (isnan(r)) {
            uint32_t u;
            memcpy(&u, &f, 4);
            /* NaN stays NaN with the same sign and payload (shifted into the top mantissa bits) */
            ok = isnan(f) && (u >> 31) == (uint32_t)(i >> 15) && ((u >> 13) & 0x3ff) == (uint32_t)(i & 0x3ff);
        } else {
            ok = (double)f == r && !signbit(f) == !signbit(r);
        }
        if (!ok && bad++ < 5) fprintf(stderr, "  half 0x%04x: got %.9g want %.9g\n", i, (double)f, r);
    }
    CHECK(bad == 0);
    /* a row range in the middle, and a vector with an odd length (scalar tail) */
    float part[3 * 256];
    moeq_mat_to_f32(&m, 100, 103, part);
    CHECK(memcmp(part, dst + 100 * 256, sizeof part) == 0);
    moeq_vec v = { .tensor = "v", .dtype = MOEQ_DT_F16, .n = 37, .data = src + 0x3c00 };
    float vout[37];
    moeq_vec_to_f32(&v, vout);
    CHECK(vout[0] == 1.0f && vout[36] == (float)half_ref(0x3c00 + 36));
}

static void test_bf16_and_f32(void)
{
    enum { N = 65536 };
    static uint16_t src[N];
    static float dst[N];
    for (int i = 0; i < N; i++) src[i] = (uint16_t)i;
    moeq_mat m = { .tensor = "t", .index = -1, .dtype = MOEQ_DT_BF16, .rows = 512, .cols = 128, .data = src };
    moeq_mat_to_f32(&m, 0, 512, dst);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        /* bf16 is the top half of a float32 */
        int s = i >> 15, e = (i >> 7) & 0xff, mant = i & 0x7f;
        double r = e == 0 ? ldexp(mant, -133) : e == 255 ? (mant ? NAN : INFINITY) : ldexp(128.0 + mant, e - 134);
        if (s) r = -r;
        float f = dst[i];
        int ok = isnan(r) ? isnan(f) : ((double)f == r && !signbit(f) == !signbit(r));
        if (!ok && bad++ < 5) fprintf(stderr, "  bf16 0x%04x: got %.9g want %.9g\n", i, (double)f, r);
    }
    CHECK(bad == 0);
    float f32[7] = { 1.5f, -2.0f, 0.0f, 3.25f, 1e-30f, -7.0f, 42.0f }, out[7];
    moeq_mat mf = { .tensor = "f", .index = -1, .dtype = MOEQ_DT_F32, .rows = 7, .cols = 1, .data = f32 };
    moeq_mat_to_f32(&mf, 2, 5, out);
    CHECK(out[0] == 0.0f && out[1] == 3.25f && out[2] == 1e-30f);
    moeq_vec vf = { .tensor = "f", .dtype = MOEQ_DT_F32, .n = 7, .data = f32 };
    moeq_vec_to_f32(&vf, out);
    CHECK(memcmp(out, f32, sizeof f32) == 0);
}

int main(void)
{
    RUN_TEST(test_common_fields);
    RUN_TEST(test_mixtral);
    RUN_TEST(test_qwen2moe);
    RUN_TEST(test_qwen3moe);
    RUN_TEST(test_olmoe);
    RUN_TEST(test_catalogue);
    RUN_TEST(test_accepted_variants);
    RUN_TEST(test_family_table);
    RUN_TEST(test_f16_all_patterns);
    RUN_TEST(test_bf16_and_f32);
    HARNESS_EXIT();
}
