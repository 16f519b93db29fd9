/* config.json of a supported MoE family (jansson). Rules CF-n are cited in messages and
 * tests; docs/FAMILIES.md lists the keys and defaults of each family.
 *   CF-1  the text is a JSON object (duplicate keys rejected: their meaning is ambiguous)
 *   CF-2  model_type is a string naming a supported family
 *   CF-3  integer sizes present, integral, within range
 *   CF-4  heads, kv_heads and head_dim consistent (kv_heads | heads, head_dim or heads | hidden)
 *   CF-5  expert count (num_local_experts / num_experts) and 1 <= top_k <= experts
 *   CF-6  RoPE: theta > 0 from rope_parameters (v5) or rope_theta (v4); only "default" type
 *   CF-7  decoder_sparse_step >= 1, mlp_only_layers indexes of existing layers
 *   CF-8  booleans (tie_word_embeddings, norm_topk_prob, qkv_bias / attention_bias)
 *   CF-9  features the forward pass does not implement (hidden_act, sliding window, clip_qkv)
 *   CF-10 rms_norm_eps a finite number in (0, 1)
 *   CF-11 quantization_config: quant_method "fp8" (e4m3, weight_block_size [r, c]); others refused */
#include "moeq_model.h"
#include "formats/family.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct cfg_ctx {
    const json_t *root;
    const char *path;
    moeq_error *err;
} cfg_ctx;

/* The key's value, NULL when absent or JSON null (transformers writes null for "unset"). */
static const json_t *get(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return (v && !json_is_null(v)) ? v : NULL;
}

static moeq_status bad(const cfg_ctx *c, const char *rule, const char *key, const char *what)
{
    return moeq_fail(c->err, MOEQ_ERR_FORMAT, "%s: %s: key '%s': %s", c->path, rule, key, what);
}

/* An integer in [lo, hi]; accepts integral JSON reals (1024.0) because some writers emit
 * floats for sizes. Missing: default when !required. */
static moeq_status get_int(const cfg_ctx *c, const json_t *obj, const char *key, const char *rule,
                           int required, int64_t def, int64_t lo, int64_t hi, int64_t *out)
{
    const json_t *v = get(obj, key);
    char msg[160];
    if (!v) {
        if (required) return bad(c, rule, key, "missing");
        *out = def;
        return MOEQ_OK;
    }
    int64_t x;
    if (json_is_integer(v)) {
        json_int_t j = json_integer_value(v);
        if (j < lo || j > hi) goto range;
        x = (int64_t)j;
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d == floor(d))) {
            snprintf(msg, sizeof msg, "expected an integer, got %.17g", d);
            return bad(c, rule, key, msg);
        }
        /* compare as doubles before converting: (int64_t)d is undefined outside the range */
        if (!(d >= (double)lo && d <= (double)hi && fabs(d) < 9.0e18)) goto range;
        x = (int64_t)d;
    } else {
        return bad(c, rule, key, "wrong type (expected an integer)");
    }
    *out = x;
    return MOEQ_OK;
range:
    snprintf(msg, sizeof msg, "out of range (expected %lld..%lld)", (long long)lo, (long long)hi);
    return bad(c, rule, key, msg);
}

/* A finite number (integer or real). */
static moeq_status get_real(const cfg_ctx *c, const json_t *obj, const char *key, const char *rule,
                            int required, double def, double *out, int *present)
{
    const json_t *v = get(obj, key);
    if (present) *present = v != NULL;
    if (!v) {
        if (required) return bad(c, rule, key, "missing");
        *out = def;
        return MOEQ_OK;
    }
    if (!json_is_number(v)) return bad(c, rule, key, "wrong type (expected a number)");
    double d = json_number_value(v);
    if (!isfinite(d)) return bad(c, rule, key, "not a finite number");
    *out = d;
    return MOEQ_OK;
}

static moeq_status get_bool(const cfg_ctx *c, const json_t *obj, const char *key, const char *rule,
                            int def, int *out, int *present)
{
    const json_t *v = get(obj, key);
    if (present) *present = v != NULL;
    if (!v) {
        *out = def;
        return MOEQ_OK;
    }
    if (!json_is_boolean(v)) return bad(c, rule, key, "wrong type (expected true or false)");
    *out = json_is_true(v) ? 1 : 0;
    return MOEQ_OK;
}

/* YaRN keys of a rope_parameters / rope_scaling object (_compute_yarn_parameters). */
static moeq_status parse_yarn(const cfg_ctx *c, const json_t *rp, const char *obj, moeq_config *cfg)
{
    char key[96];
    moeq_status st;
    int present = 0;
    snprintf(key, sizeof key, "%s.original_max_position_embeddings", obj);
    if (!get(rp, "original_max_position_embeddings")) return bad(c, "CF-6", key, "missing (needed by YaRN)");
    if ((st = get_real(c, rp, "original_max_position_embeddings", "CF-6", 1, 0, &cfg->rope_orig_max, NULL)))
        return st;
    if (!(cfg->rope_orig_max >= 1)) return bad(c, "CF-6", key, "out of range (expected >= 1)");
    /* factor absent: max_position_embeddings / original (DeepSeek's convention) */
    if ((st = get_real(c, rp, "factor", "CF-6", 0, (double)cfg->max_positions / cfg->rope_orig_max,
                       &cfg->rope_factor, NULL)))
        return st;
    snprintf(key, sizeof key, "%s.factor", obj);
    if (!(cfg->rope_factor > 0)) return bad(c, "CF-6", key, "out of range (expected > 0)");
    double bf = 0, bs = 0, ms = 0, msa = 0, af = 0;
    if ((st = get_real(c, rp, "beta_fast", "CF-6", 0, 0, &bf, NULL))) return st;
    if ((st = get_real(c, rp, "beta_slow", "CF-6", 0, 0, &bs, NULL))) return st;
    cfg->rope_beta_fast = bf != 0 ? bf : 32;   /* `or 32`: 0 and absent alike */
    cfg->rope_beta_slow = bs != 0 ? bs : 1;
    if (!(cfg->rope_beta_fast > 0 && cfg->rope_beta_slow > 0)) {
        snprintf(key, sizeof key, "%s.beta_fast", obj);
        return bad(c, "CF-6", key, "beta_fast and beta_slow must be > 0");
    }
    if ((st = get_real(c, rp, "mscale", "CF-6", 0, 0, &ms, NULL))) return st;
    if ((st = get_real(c, rp, "mscale_all_dim", "CF-6", 0, 0, &msa, NULL))) return st;
    if ((st = get_real(c, rp, "attention_factor", "CF-6", 0, 0, &af, &present))) return st;
    const double f = cfg->rope_factor;
#define GET_MSCALE(s, m) ((s) <= 1 ? 1.0 : 0.1 * (m) * log(s) + 1.0)
    if (present) cfg->rope_attn_factor = af;
    else if (ms != 0 && msa != 0) cfg->rope_attn_factor = GET_MSCALE(f, ms) / GET_MSCALE(f, msa);
    else cfg->rope_attn_factor = GET_MSCALE(f, 1.0);
    cfg->rope_truncate = 1;
    if ((st = get_bool(c, rp, "truncate", "CF-6", 1, &cfg->rope_truncate, NULL))) return st;
    if (cfg->family->yarn_mscale_scale && msa != 0) {
        double m = GET_MSCALE(f, msa);
        cfg->attn_scale *= m * m;   /* yarn_apply_mscale */
    }
#undef GET_MSCALE
    return MOEQ_OK;
}

/* A longrope factor list of rope_dim / 2 positive numbers. */
static moeq_status longrope_factors(const cfg_ctx *c, const json_t *rp, const char *key, int64_t half, float *out)
{
    char k[64], msg[128];
    snprintf(k, sizeof k, "rope_parameters.%s", key);
    const json_t *a = get(rp, key);
    if (!a) return bad(c, "CF-6", k, "missing (needed by longrope)");
    if (!json_is_array(a) || (int64_t)json_array_size(a) != half) {
        snprintf(msg, sizeof msg, "expected an array of %lld numbers (rotary dim / 2)", (long long)half);
        return bad(c, "CF-6", k, msg);
    }
    for (int64_t i = 0; i < half; i++) {
        const json_t *e = json_array_get(a, (size_t)i);
        if (!json_is_number(e) || !(json_number_value(e) > 0) || !isfinite(json_number_value(e))) {
            snprintf(msg, sizeof msg, "element %lld is not a positive number", (long long)i);
            return bad(c, "CF-6", k, msg);
        }
        out[i] = (float)json_number_value(e);
    }
    return MOEQ_OK;
}

/* longrope (_compute_longrope_parameters; phimoe's rotary picks the mscale by window length). */
static moeq_status parse_longrope(const cfg_ctx *c, const json_t *rp, moeq_config *cfg)
{
    moeq_status st;
    int64_t half = cfg->rope_dim / 2;
    if (half > MOEQ_ROPE_MAX_FACTORS) return bad(c, "CF-6", "rope_parameters", "longrope over too many channels");
    if ((st = longrope_factors(c, rp, "short_factor", half, cfg->rope_short))) return st;
    if ((st = longrope_factors(c, rp, "long_factor", half, cfg->rope_long))) return st;
    const json_t *src = get(rp, "original_max_position_embeddings") ? rp : c->root;
    if ((st = get_real(c, src, "original_max_position_embeddings", "CF-6", 1, 0, &cfg->rope_orig_max, NULL)))
        return st;
    if (!(cfg->rope_orig_max >= 1))
        return bad(c, "CF-6", "original_max_position_embeddings", "out of range (expected >= 1)");
    double factor, af = 0;
    int present = 0;
    if ((st = get_real(c, rp, "factor", "CF-6", 0, (double)cfg->max_positions / cfg->rope_orig_max, &factor, NULL)))
        return st;
    if ((st = get_real(c, rp, "attention_factor", "CF-6", 0, 0, &af, &present))) return st;
    if (!present) af = factor <= 1.0 ? 1.0 : sqrt(1 + log(factor) / log(cfg->rope_orig_max));
    cfg->rope_attn_factor = af;
    if ((st = get_real(c, rp, "short_mscale", "CF-6", 0, af, &cfg->rope_short_mscale, NULL))) return st;
    if ((st = get_real(c, rp, "long_mscale", "CF-6", 0, af, &cfg->rope_long_mscale, NULL))) return st;
    return MOEQ_OK;
}

/* CF-6 */
static moeq_status parse_rope(const cfg_ctx *c, const moeq_family *fam, moeq_config *cfg)
{
    moeq_status st;
    const json_t *rp = get(c->root, "rope_parameters");
    int have_theta = 0;
    const json_t *yarn = NULL, *longrope = NULL;
    const char *yarn_obj = NULL;
    if (rp) {
        if (!json_is_object(rp)) return bad(c, "CF-6", "rope_parameters", "wrong type (expected an object)");
        const json_t *type = get(rp, "rope_type");
        if (type) {
            if (!json_is_string(type))
                return bad(c, "CF-6", "rope_parameters.rope_type", "wrong type (expected a string)");
            if (strcmp(json_string_value(type), "yarn") == 0) {
                yarn = rp;
                yarn_obj = "rope_parameters";
            } else if (strcmp(json_string_value(type), "longrope") == 0) {
                longrope = rp;
            } else if (strcmp(json_string_value(type), "default") != 0) {
                return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED,
                                 "%s: CF-6: key 'rope_parameters.rope_type': \"%.64s\" is not supported "
                                 "(\"default\", \"yarn\" or \"longrope\")", c->path, json_string_value(type));
            }
        }
        const json_t *th = get(rp, "rope_theta");
        if (th) {
            if (!json_is_number(th))
                return bad(c, "CF-6", "rope_parameters.rope_theta", "wrong type (expected a number)");
            cfg->rope_theta = json_number_value(th);
            if (!(cfg->rope_theta > 0) || !isfinite(cfg->rope_theta))
                return bad(c, "CF-6", "rope_parameters.rope_theta", "out of range (expected > 0)");
            have_theta = 1;
        }
    }
    /* v4: rope_scaling null or {"type"/"rope_type": "default" | "yarn", ...} */
    const json_t *rs = get(c->root, "rope_scaling");
    if (rs && !yarn && !longrope) {
        if (!json_is_object(rs)) return bad(c, "CF-6", "rope_scaling", "wrong type (expected an object)");
        const char *keys[2] = { "rope_type", "type" };
        for (int i = 0; i < 2; i++) {
            const json_t *type = get(rs, keys[i]);
            if (!type) continue;
            if (json_is_string(type) && strcmp(json_string_value(type), "yarn") == 0) {
                yarn = rs;
                yarn_obj = "rope_scaling";
                break;
            }
            if (json_is_string(type) && strcmp(json_string_value(type), "longrope") == 0) {
                longrope = rs;
                break;
            }
            if (!json_is_string(type) || strcmp(json_string_value(type), "default") != 0)
                return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED,
                                 "%s: CF-6: key 'rope_scaling.%s': only \"default\" and \"yarn\" RoPE are "
                                 "supported", c->path, keys[i]);
        }
    }
    if (!have_theta) {
        int present = 0;
        st = get_real(c, c->root, "rope_theta", "CF-6", 0, fam->rope_theta_default, &cfg->rope_theta,
                      &present);
        if (st) return st;
        if (!(cfg->rope_theta > 0)) return bad(c, "CF-6", "rope_theta", "out of range (expected > 0)");
    }
    cfg->rope_type = MOEQ_ROPE_DEFAULT;
    cfg->rope_attn_factor = 1.0;
    if (yarn) {
        cfg->rope_type = MOEQ_ROPE_YARN;
        if ((st = parse_yarn(c, yarn, yarn_obj, cfg))) return st;
    }
    if (longrope) {
        cfg->rope_type = MOEQ_ROPE_LONGROPE;
        if ((st = parse_longrope(c, longrope, cfg))) return st;
    }
    if (fam->partial_rotary) {
        /* rope_parameters.partial_rotary_factor (v5), else the top-level key (v4) */
        double prf = 1.0;
        const char *where = rp && get(rp, "partial_rotary_factor") ? "rope_parameters.partial_rotary_factor"
                                                                   : "partial_rotary_factor";
        if ((st = get_real(c, rp && get(rp, "partial_rotary_factor") ? rp : c->root, "partial_rotary_factor",
                           "CF-6", 0, 1.0, &prf, NULL)))
            return st;
        int64_t d = (int64_t)((double)cfg->head_dim * prf);   /* int(head_dim * factor) */
        if (!(prf > 0 && prf <= 1) || d < 2 || d % 2) return bad(c, "CF-6", where, "out of range (expected "
                                                                 "0 < factor <= 1 giving an even channel count)");
        cfg->rope_dim = d;
    }
    cfg->rope_interleave = fam->rope_interleave_default;
    if (fam->rope_interleave_key &&
        (st = get_bool(c, c->root, fam->rope_interleave_key, "CF-6", fam->rope_interleave_default,
                       &cfg->rope_interleave, NULL)))
        return st;
    return MOEQ_OK;
}

/* MLA sizes (DeepseekV3Config / DeepseekV2Config; their defaults when absent). head_dim
 * becomes the query/key head size nope + rope, RoPE covers the rope part. */
static moeq_status parse_mla(const cfg_ctx *c, moeq_config *cfg)
{
    moeq_status st;
    const int64_t BIG = (int64_t)1 << 16;
    const json_t *ql = json_object_get(c->root, "q_lora_rank");
    if (ql && json_is_null(ql)) cfg->q_lora_rank = 0;   /* null: a plain q_proj */
    else if ((st = get_int(c, c->root, "q_lora_rank", "CF-4", 0, 1536, 1, BIG, &cfg->q_lora_rank))) return st;
    if ((st = get_int(c, c->root, "kv_lora_rank", "CF-4", 0, 512, 1, BIG, &cfg->kv_lora_rank))) return st;
    if ((st = get_int(c, c->root, "qk_nope_head_dim", "CF-4", 0, 128, 0, BIG, &cfg->qk_nope_dim))) return st;
    if ((st = get_int(c, c->root, "qk_rope_head_dim", "CF-4", 0, 64, 2, BIG, &cfg->qk_rope_dim))) return st;
    if ((st = get_int(c, c->root, "v_head_dim", "CF-4", 0, 128, 1, BIG, &cfg->v_head_dim))) return st;
    if (cfg->qk_rope_dim % 2) return bad(c, "CF-4", "qk_rope_head_dim", "odd (RoPE rotates pairs)");
    if (cfg->kv_heads != cfg->heads)
        return bad(c, "CF-4", "num_key_value_heads", "differs from num_attention_heads (MLA expands "
                   "keys and values per head)");
    cfg->head_dim = cfg->qk_nope_dim + cfg->qk_rope_dim;
    cfg->rope_dim = cfg->qk_rope_dim;
    return MOEQ_OK;
}

/* Routing options of the group-limited routers (CF-5). */
static moeq_status parse_groups(const cfg_ctx *c, const moeq_family *fam, moeq_config *cfg)
{
    moeq_status st;
    char msg[192];
    if ((st = get_real(c, c->root, "routed_scaling_factor", "CF-5", 0, fam->routed_scaling_default,
                       &cfg->routed_scaling, NULL)))
        return st;
    if (!(cfg->routed_scaling > 0)) return bad(c, "CF-5", "routed_scaling_factor", "out of range (expected > 0)");
    if ((st = get_int(c, c->root, "n_group", "CF-5", 0, fam->n_group_default, 1, 65536, &cfg->n_group))) return st;
    if ((st = get_int(c, c->root, "topk_group", "CF-5", 0, fam->topk_group_default, 1, 65536, &cfg->topk_group)))
        return st;
    if (cfg->n_experts > MOEQ_GROUP_ROUTER_MAX_EXPERTS) {
        snprintf(msg, sizeof msg, "%lld experts; this router handles at most %d", (long long)cfg->n_experts,
                 MOEQ_GROUP_ROUTER_MAX_EXPERTS);
        return bad(c, "CF-5", fam->experts_key ? fam->experts_key : "num_local_experts", msg);
    }
    if (fam->router_kind == MOEQ_ROUTER_SOFTMAX_GROUP) {
        const json_t *tm = get(c->root, "topk_method");
        const char *m = tm && json_is_string(tm) ? json_string_value(tm) : tm ? "" : "greedy";
        if (strcmp(m, "greedy") == 0) cfg->group_limited = 0;
        else if (strcmp(m, "group_limited_greedy") == 0) cfg->group_limited = 1;
        else
            return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED, "%s: CF-5: key 'topk_method': \"%.64s\" is not "
                             "supported (\"greedy\" or \"group_limited_greedy\")", c->path, m);
        if (!cfg->group_limited) return MOEQ_OK;   /* groups unused */
    }
    int grouped = cfg->n_group > 1 && cfg->topk_group < cfg->n_group;
    if (cfg->n_experts % cfg->n_group) {
        snprintf(msg, sizeof msg, "%lld does not divide the %lld experts", (long long)cfg->n_group,
                 (long long)cfg->n_experts);
        return bad(c, "CF-5", "n_group", msg);
    }
    if (cfg->topk_group > cfg->n_group) {
        snprintf(msg, sizeof msg, "%lld > n_group %lld", (long long)cfg->topk_group, (long long)cfg->n_group);
        return bad(c, "CF-5", "topk_group", msg);
    }
    if (grouped && fam->router_kind == MOEQ_ROUTER_SIGMOID_GROUP && cfg->n_experts / cfg->n_group < 2)
        return bad(c, "CF-5", "n_group", "groups of one expert (the group score sums the best two)");
    if (grouped && cfg->topk_group * (cfg->n_experts / cfg->n_group) < cfg->top_k) {
        snprintf(msg, sizeof msg, "%lld groups of %lld experts hold fewer than num_experts_per_tok %lld",
                 (long long)cfg->topk_group, (long long)(cfg->n_experts / cfg->n_group), (long long)cfg->top_k);
        return bad(c, "CF-5", "topk_group", msg);
    }
    return MOEQ_OK;
}

/* CF-11: the source's own quantization (docs/FAMILIES.md, "Source formats"). */
static moeq_status parse_quant(const cfg_ctx *c, moeq_config *cfg)
{
    const json_t *q = get(c->root, "quantization_config");
    if (!q) return MOEQ_OK;
    if (!json_is_object(q)) return bad(c, "CF-11", "quantization_config", "wrong type (expected an object)");
    const json_t *m = get(q, "quant_method");
    if (!m) return bad(c, "CF-11", "quantization_config.quant_method", "missing");
    if (!json_is_string(m)) return bad(c, "CF-11", "quantization_config.quant_method", "wrong type (expected a string)");
    if (strcmp(json_string_value(m), "mxfp4") == 0 && cfg->expert_layout == MOEQ_EXPERTS_GPTOSS) {
        /* gpt_oss ships its routed experts as *_blocks / *_scales (docs/FAMILIES.md) */
        if (cfg->hidden % 32 || cfg->moe_inter % 32)
            return bad(c, "CF-11", "quantization_config.quant_method",
                       "mxfp4 needs hidden_size and intermediate_size multiples of 32");
        cfg->mxfp4 = 1;
        return MOEQ_OK;
    }
    if (strcmp(json_string_value(m), "fp8") != 0)
        return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED, "%s: CF-11: key 'quantization_config.quant_method': "
                         "\"%.64s\" is not supported (\"fp8\" block-scaled e4m3%s)", c->path, json_string_value(m),
                         cfg->expert_layout == MOEQ_EXPERTS_GPTOSS ? ", \"mxfp4\" experts" : "");
    const json_t *fmt = get(q, "fmt");
    if (fmt && (!json_is_string(fmt) || strcmp(json_string_value(fmt), "e4m3") != 0))
        return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED, "%s: CF-11: key 'quantization_config.fmt': only \"e4m3\" "
                         "is supported", c->path);
    cfg->fp8 = 1;
    cfg->fp8_block_rows = cfg->fp8_block_cols = 128;
    const json_t *bs = get(q, "weight_block_size");
    if (bs) {
        if (!json_is_array(bs) || json_array_size(bs) != 2)
            return bad(c, "CF-11", "quantization_config.weight_block_size", "expected [rows, cols]");
        int64_t v[2];
        for (int i = 0; i < 2; i++) {
            const json_t *e = json_array_get(bs, (size_t)i);
            if (!json_is_integer(e) || json_integer_value(e) < 1 || json_integer_value(e) > 65536)
                return bad(c, "CF-11", "quantization_config.weight_block_size", "elements must be integers in 1..65536");
            v[i] = (int64_t)json_integer_value(e);
        }
        cfg->fp8_block_rows = v[0];
        cfg->fp8_block_cols = v[1];
    }
    if ((cfg->hidden + cfg->fp8_block_cols - 1) / cfg->fp8_block_cols > 4096)
        return bad(c, "CF-11", "quantization_config.weight_block_size", "more than 4096 blocks per row");
    return MOEQ_OK;
}

/* CF-7: layer_is_moe */
static moeq_status parse_sparse(const cfg_ctx *c, const moeq_family *fam, moeq_config *cfg)
{
    memset(cfg->layer_is_moe, 0, sizeof cfg->layer_is_moe);
    if (fam->sparse == MOEQ_SPARSE_ALL) {
        for (int64_t l = 0; l < cfg->layers; l++) cfg->layer_is_moe[l] = 1;
        return MOEQ_OK;
    }
    if (fam->sparse == MOEQ_SPARSE_ERNIE) {
        /* Ernie4_5_MoeDecoderLayer; an end index of -1 means the last layer */
        int64_t start, end, step;
        moeq_status st = get_int(c, c->root, "moe_layer_start_index", "CF-7", 0, 1, 0, MOEQ_MAX_LAYERS, &start);
        if (!st) st = get_int(c, c->root, "moe_layer_end_index", "CF-7", 0, -1, -1, MOEQ_MAX_LAYERS, &end);
        if (!st) st = get_int(c, c->root, "moe_layer_interval", "CF-7", 0, 1, 1, MOEQ_MAX_LAYERS, &step);
        if (st) return st;
        if (end == -1) end = cfg->layers - 1;
        for (int64_t l = 0; l < cfg->layers; l++) cfg->layer_is_moe[l] = (l + 1) % step == 0 && l >= start && l <= end;
        return MOEQ_OK;
    }
    if (fam->sparse == MOEQ_SPARSE_FIRST_K) {
        /* transformers ignores moe_layer_freq: every layer from first_k_dense_replace on */
        int64_t k;
        moeq_status st = get_int(c, c->root, "first_k_dense_replace", "CF-7", 0, fam->first_k_dense_default, 0,
                                 MOEQ_MAX_LAYERS, &k);
        if (st) return st;
        for (int64_t l = 0; l < cfg->layers; l++) cfg->layer_is_moe[l] = l >= k;
        return MOEQ_OK;
    }
    int64_t step;
    moeq_status st = get_int(c, c->root, "decoder_sparse_step", "CF-7", 0, 1, 1, MOEQ_MAX_LAYERS, &step);
    if (st) return st;
    /* transformers (Qwen2MoeDecoderLayer): MoE unless listed in mlp_only_layers, and only
     * every decoder_sparse_step-th layer */
    for (int64_t l = 0; l < cfg->layers; l++)
        cfg->layer_is_moe[l] = cfg->n_experts > 0 && (l + 1) % step == 0;
    const json_t *mol = get(c->root, "mlp_only_layers");
    if (mol) {
        if (!json_is_array(mol)) return bad(c, "CF-7", "mlp_only_layers", "wrong type (expected an array)");
        for (size_t i = 0; i < json_array_size(mol); i++) {
            const json_t *e = json_array_get(mol, i);
            char msg[160];
            if (!json_is_integer(e)) {
                snprintf(msg, sizeof msg, "element %zu: wrong type (expected an integer)", i);
                return bad(c, "CF-7", "mlp_only_layers", msg);
            }
            json_int_t l = json_integer_value(e);
            if (l < 0 || l >= cfg->layers) {
                snprintf(msg, sizeof msg, "element %zu: layer %lld out of range (expected 0..%lld)", i,
                         (long long)l, (long long)cfg->layers - 1);
                return bad(c, "CF-7", "mlp_only_layers", msg);
            }
            cfg->layer_is_moe[l] = 0;
        }
    }
    return MOEQ_OK;
}

/* CF-9: sliding-window layers (gpt_oss): layer_types of "sliding_attention" / "full_attention",
 * one per layer (GptOssConfig's default: even layers sliding), window sliding_window (128). */
static moeq_status parse_layer_types(const cfg_ctx *c, moeq_config *cfg)
{
    moeq_status st = get_int(c, c->root, "sliding_window", "CF-9", 0, 128, 1, INT64_MAX, &cfg->sliding_window);
    if (st) return st;
    const json_t *lt = get(c->root, "layer_types");
    if (!lt) {
        for (int64_t l = 0; l < cfg->layers; l++) cfg->layer_sliding[l] = l % 2 == 0;
        return MOEQ_OK;
    }
    if (!json_is_array(lt)) return bad(c, "CF-9", "layer_types", "wrong type (expected an array)");
    if ((int64_t)json_array_size(lt) != cfg->layers) {
        char msg[160];
        snprintf(msg, sizeof msg, "%zu entries for num_hidden_layers %lld", json_array_size(lt),
                 (long long)cfg->layers);
        return bad(c, "CF-9", "layer_types", msg);
    }
    for (int64_t l = 0; l < cfg->layers; l++) {
        const json_t *e = json_array_get(lt, (size_t)l);
        const char *v = json_is_string(e) ? json_string_value(e) : "";
        if (strcmp(v, "sliding_attention") != 0 && strcmp(v, "full_attention") != 0)
            return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED, "%s: CF-9: key 'layer_types': element %lld is not "
                             "\"sliding_attention\" or \"full_attention\"", c->path, (long long)l);
        cfg->layer_sliding[l] = v[0] == 's';
    }
    return MOEQ_OK;
}

/* CF-9: features whose forward pass moeq does not implement. */
static moeq_status check_features(const cfg_ctx *c, const moeq_family *fam)
{
    const json_t *act = get(c->root, "hidden_act");
    if (act && (!json_is_string(act) || strcmp(json_string_value(act), "silu") != 0))
        return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED,
                         "%s: CF-9: key 'hidden_act': only \"silu\" is supported", c->path);
    const json_t *clip = get(c->root, "clip_qkv");
    if (clip)
        return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED,
                         "%s: CF-9: key 'clip_qkv': clipping q/k/v is not supported (expected null)",
                         c->path);
    const json_t *lt = get(c->root, "layer_types");
    if (lt && json_is_array(lt) && !fam->sliding_layers)
        for (size_t i = 0; i < json_array_size(lt); i++) {
            const json_t *e = json_array_get(lt, i);
            if (!json_is_string(e) || strcmp(json_string_value(e), "full_attention") != 0)
                return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED, "%s: CF-9: key 'layer_types': element %zu is "
                                 "not \"full_attention\" (only full causal attention is supported)", c->path, i);
        }
    if (fam->sparse == MOEQ_SPARSE_QWEN) {
        int sw = 0;
        moeq_status st = get_bool(c, c->root, "use_sliding_window", "CF-9", 0, &sw, NULL);
        if (st) return st;
        if (sw)
            return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED,
                             "%s: CF-9: key 'use_sliding_window': sliding-window attention is not "
                             "supported", c->path);
    }
    return MOEQ_OK;
}

moeq_status moeq_config_parse(const char *json, size_t len, const char *path, moeq_config *cfg,
                              moeq_error *err)
{
    if (!path) path = "config.json";
    if (!json || !cfg) return moeq_fail(err, MOEQ_ERR_MISUSE, "%s: moeq_config_parse: NULL argument", path);
    memset(cfg, 0, sizeof *cfg);

    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: CF-1: not valid JSON: %s at line %d column %d (byte %d)",
                         path, jerr.text, jerr.line, jerr.column, jerr.position);
    cfg_ctx cc = { root, path, err };
    const cfg_ctx *c = &cc;
    moeq_status st = MOEQ_OK;
    if (!json_is_object(root)) {
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: CF-1: top-level value is not a JSON object", path);
        goto done;
    }

    /* CF-2 */
    const json_t *mt = get(root, "model_type");
    if (!mt) { st = bad(c, "CF-2", "model_type", "missing"); goto done; }
    if (!json_is_string(mt)) { st = bad(c, "CF-2", "model_type", "wrong type (expected a string)"); goto done; }
    const moeq_family *fam = moeq_family_find(json_string_value(mt));
    if (!fam) {
        char list[256];
        moeq_family_list(list, sizeof list);
        st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED,
                       "%s: CF-2: model_type \"%.64s\" is not supported (supported: %s)", path,
                       json_string_value(mt), list);
        goto done;
    }
    cfg->family = fam;
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", fam->model_type);

    /* CF-3: sizes. Bounds keep every product of two of them inside int64 and token ids in
     * int32; they are far above any released model. */
    const int64_t BIG = (int64_t)1 << 24;
    if ((st = get_int(c, root, "vocab_size", "CF-3", 1, 0, 1, INT32_MAX, &cfg->vocab))) goto done;
    if ((st = get_int(c, root, "hidden_size", "CF-3", 1, 0, 1, BIG, &cfg->hidden))) goto done;
    if ((st = get_int(c, root, "num_hidden_layers", "CF-3", 1, 0, 1, MOEQ_MAX_LAYERS, &cfg->layers))) goto done;
    if ((st = get_int(c, root, "num_attention_heads", "CF-3", 1, 0, 1, 65536, &cfg->heads))) goto done;
    if ((st = get_int(c, root, "num_key_value_heads", "CF-3", 0, cfg->heads, 1, 65536, &cfg->kv_heads))) goto done;
    if ((st = get_int(c, root, "max_position_embeddings", "CF-3", 1, 0, 1, (int64_t)1 << 30,
                      &cfg->max_positions))) goto done;
    if ((st = get_int(c, root, fam->moe_inter_key, "CF-3", 1, 0, 1, BIG, &cfg->moe_inter))) goto done;
    if (fam->dense_inter_key &&
        (st = get_int(c, root, fam->dense_inter_key, "CF-3", 1, 0, 1, BIG, &cfg->dense_inter))) goto done;
    if (fam->shared_inter_key &&
        (st = get_int(c, root, fam->shared_inter_key, "CF-3", 1, 0, 1, BIG, &cfg->shared_inter))) goto done;
    if (fam->shared_count_key) {
        int64_t ns;
        if ((st = get_int(c, root, fam->shared_count_key, "CF-3", 0, fam->shared_count_default, 0, 4096, &ns)))
            goto done;
        cfg->shared_inter = ns * cfg->moe_inter;
    }

    /* CF-4 */
    if (cfg->heads % cfg->kv_heads != 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "%lld does not divide num_attention_heads %lld",
                 (long long)cfg->kv_heads, (long long)cfg->heads);
        st = bad(c, "CF-4", "num_key_value_heads", msg);
        goto done;
    }
    if (get(root, "head_dim")) {
        if ((st = get_int(c, root, "head_dim", "CF-4", 1, 0, 1, 65536, &cfg->head_dim))) goto done;
    } else {
        if (cfg->hidden % cfg->heads != 0) {
            char msg[192];
            snprintf(msg, sizeof msg, "%lld does not divide hidden_size %lld and head_dim is not given",
                     (long long)cfg->heads, (long long)cfg->hidden);
            st = bad(c, "CF-4", "num_attention_heads", msg);
            goto done;
        }
        cfg->head_dim = cfg->hidden / cfg->heads;
    }
    cfg->attn = fam->attn;
    cfg->router = fam->router_kind;
    cfg->routed_scaling = 1.0;
    cfg->n_group = cfg->topk_group = 1;
    if (cfg->attn == MOEQ_ATTN_MLA && (st = parse_mla(c, cfg))) goto done;
    if (cfg->attn != MOEQ_ATTN_MLA) {
        cfg->v_head_dim = cfg->head_dim;
        cfg->rope_dim = cfg->head_dim;
    }
    if (cfg->heads * cfg->head_dim > BIG || cfg->heads * cfg->v_head_dim > BIG) {
        st = bad(c, "CF-4", "head_dim", "num_attention_heads * head_dim out of range");
        goto done;
    }

    /* CF-5: transformers 5 writes num_local_experts for every family, v4 qwen/olmoe
     * num_experts: accept either, and both only when they agree */
    {
        int64_t a = -1, b = -1;
        if ((st = get_int(c, root, "num_local_experts", "CF-5", 0, -1, 1, 65536, &a))) goto done;
        if ((st = get_int(c, root, "num_experts", "CF-5", 0, -1, 1, 65536, &b))) goto done;
        if (fam->experts_key && a < 0 &&
            (st = get_int(c, root, fam->experts_key, "CF-5", 0, -1, 1, 65536, &a))) goto done;
        if (a < 0 && b < 0) { st = bad(c, "CF-5", "num_local_experts", "missing (nor num_experts)"); goto done; }
        if (a >= 0 && b >= 0 && a != b) {
            char msg[160];
            snprintf(msg, sizeof msg, "%lld disagrees with num_experts %lld", (long long)a, (long long)b);
            st = bad(c, "CF-5", "num_local_experts", msg);
            goto done;
        }
        cfg->n_experts = a >= 0 ? a : b;
        if ((st = get_int(c, root, fam->topk_key ? fam->topk_key : "num_experts_per_tok", "CF-5", 1, 0, 1, 65536,
                          &cfg->top_k))) goto done;
        if (cfg->top_k > cfg->n_experts) {
            char msg[160];
            snprintf(msg, sizeof msg, "out of range (%lld > %lld experts)", (long long)cfg->top_k,
                     (long long)cfg->n_experts);
            st = bad(c, "CF-5", "num_experts_per_tok", msg);
            goto done;
        }
    }

    /* CF-10 */
    if ((st = get_real(c, root, "rms_norm_eps", "CF-10", 1, 0, &cfg->rms_eps, NULL))) goto done;
    if (!(cfg->rms_eps > 0 && cfg->rms_eps < 1)) {
        st = bad(c, "CF-10", "rms_norm_eps", "out of range (expected 0 < eps < 1)");
        goto done;
    }

    cfg->attn_scale = 1.0 / sqrt((double)cfg->head_dim);   /* YaRN may correct it (parse_yarn) */
    if ((st = parse_rope(c, fam, cfg))) goto done;
    if ((cfg->router == MOEQ_ROUTER_SIGMOID_GROUP || cfg->router == MOEQ_ROUTER_SOFTMAX_GROUP) &&
        (st = parse_groups(c, fam, cfg))) goto done;
    if (cfg->router == MOEQ_ROUTER_SPARSEMIXER) {
        if (cfg->top_k != 2) { st = bad(c, "CF-5", "num_experts_per_tok", "sparsemixer routes exactly 2 experts"); goto done; }
        if ((st = get_real(c, root, "router_jitter_noise", "CF-5", 0, 0.01, &cfg->jitter_eps, NULL))) goto done;
    }
    if (cfg->router == MOEQ_ROUTER_SOFTMAX_BIAS) {
        if ((st = get_real(c, root, "moe_norm_min", "CF-5", 0, 1e-12, &cfg->renorm_min, NULL))) goto done;
        if (!(cfg->renorm_min >= 0)) { st = bad(c, "CF-5", "moe_norm_min", "out of range (expected >= 0)"); goto done; }
        if (cfg->n_experts > MOEQ_GROUP_ROUTER_MAX_EXPERTS) {
            st = bad(c, "CF-5", fam->experts_key, "more experts than this router handles (4096)");
            goto done;
        }
    }

    /* CF-8 */
    if ((st = get_bool(c, root, "tie_word_embeddings", "CF-8", fam->tie_default, &cfg->tie_embeddings, NULL)))
        goto done;
    if (fam->renorm == MOEQ_RENORM_ALWAYS) {
        cfg->norm_topk_prob = 1;
    } else if ((st = get_bool(c, root, "norm_topk_prob", "CF-8", fam->norm_topk_default,
                              &cfg->norm_topk_prob, NULL))) {
        goto done;
    }
    if (fam->qkv_bias_key) {
        if ((st = get_bool(c, root, fam->qkv_bias_key, "CF-8", fam->qkv_bias_default, &cfg->qkv_bias, NULL)))
            goto done;
        if (cfg->qkv_bias && fam->attention_bias_o) cfg->o_bias = 1;
        if (cfg->qkv_bias && strcmp(fam->qkv_bias_key, "attention_bias") == 0 && !fam->attention_bias_qkv_only &&
            !fam->attention_bias_o) {
            /* attention_bias also gives o_proj a bias, which the layer view cannot hold */
            st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED,
                           "%s: CF-8: key 'attention_bias': true (q/k/v/o biases) is not supported", path);
            goto done;
        }
    }
    cfg->qk_norm = fam->qk_norm;
    cfg->norm = fam->norm;
    if (fam->lm_head_bias_key &&
        (st = get_bool(c, root, fam->lm_head_bias_key, "CF-8", 0, &cfg->lm_head_bias, NULL))) goto done;
    if (fam->refuse_true_key) {
        int on = 0;
        if ((st = get_bool(c, root, fam->refuse_true_key, "CF-8", 0, &on, NULL))) goto done;
        if (on) {
            st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: CF-8: key '%s': true (biases on every linear) is not "
                           "supported", path, fam->refuse_true_key);
            goto done;
        }
    }
    if (fam->qk_norm_key) {
        int on = 0;
        if ((st = get_bool(c, root, fam->qk_norm_key, "CF-8", 0, &on, NULL))) goto done;
        if (!on) cfg->qk_norm = MOEQ_QK_NORM_NONE;
    }

    cfg->act = fam->act;
    cfg->act_alpha = 1.702;   /* GptOssExperts hard-codes alpha and limit (transformers 5.17) */
    cfg->act_limit = 7.0;
    cfg->expert_layout = fam->expert_layout;
    cfg->expert_bias = fam->expert_layout == MOEQ_EXPERTS_GPTOSS;
    cfg->attn_sinks = fam->attn_sinks;
    if (fam->sliding_layers && (st = parse_layer_types(c, cfg))) goto done;
    if ((st = check_features(c, fam))) goto done;
    if ((st = parse_quant(c, cfg))) goto done;
    if (fam->has_sliding_window) {
        /* a window at least as long as any position is plain causal attention */
        int64_t sw = 0;
        if ((st = get_int(c, root, "sliding_window", "CF-9", 0, 0, 1, INT64_MAX, &sw))) goto done;
        if (sw > 0 && sw < cfg->max_positions) {
            st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED,
                           "%s: CF-9: key 'sliding_window': %lld < max_position_embeddings %lld; "
                           "sliding-window attention is not supported", path, (long long)sw,
                           (long long)cfg->max_positions);
            goto done;
        }
    }
    st = parse_sparse(c, fam, cfg);

done:
    json_decref(root);
    return st;
}
