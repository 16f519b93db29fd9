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
 *   CF-10 rms_norm_eps a finite number in (0, 1) */
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

/* CF-6 */
static moeq_status parse_rope(const cfg_ctx *c, const moeq_family *fam, moeq_config *cfg)
{
    moeq_status st;
    const json_t *rp = get(c->root, "rope_parameters");
    int have_theta = 0;
    if (rp) {
        if (!json_is_object(rp)) return bad(c, "CF-6", "rope_parameters", "wrong type (expected an object)");
        const json_t *type = get(rp, "rope_type");
        if (type) {
            if (!json_is_string(type))
                return bad(c, "CF-6", "rope_parameters.rope_type", "wrong type (expected a string)");
            if (strcmp(json_string_value(type), "default") != 0)
                return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED,
                                 "%s: CF-6: key 'rope_parameters.rope_type': \"%.64s\" is not supported "
                                 "(only \"default\" RoPE)", c->path, json_string_value(type));
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
    /* v4: rope_scaling null or {"type"/"rope_type": "default"} */
    const json_t *rs = get(c->root, "rope_scaling");
    if (rs) {
        if (!json_is_object(rs)) return bad(c, "CF-6", "rope_scaling", "wrong type (expected an object)");
        const char *keys[2] = { "rope_type", "type" };
        for (int i = 0; i < 2; i++) {
            const json_t *type = get(rs, keys[i]);
            if (!type) continue;
            if (!json_is_string(type) || strcmp(json_string_value(type), "default") != 0)
                return moeq_fail(c->err, MOEQ_ERR_UNSUPPORTED,
                                 "%s: CF-6: key 'rope_scaling.%s': only \"default\" RoPE is supported",
                                 c->path, keys[i]);
        }
    }
    if (!have_theta) {
        int present = 0;
        st = get_real(c, c->root, "rope_theta", "CF-6", 0, fam->rope_theta_default, &cfg->rope_theta,
                      &present);
        if (st) return st;
        if (!(cfg->rope_theta > 0)) return bad(c, "CF-6", "rope_theta", "out of range (expected > 0)");
    }
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
    if (cfg->heads * cfg->head_dim > BIG) {
        st = bad(c, "CF-4", "head_dim", "num_attention_heads * head_dim out of range");
        goto done;
    }

    /* CF-5: transformers 5 writes num_local_experts for every family, v4 qwen/olmoe
     * num_experts: accept either, and both only when they agree */
    {
        int64_t a = -1, b = -1;
        if ((st = get_int(c, root, "num_local_experts", "CF-5", 0, -1, 1, 65536, &a))) goto done;
        if ((st = get_int(c, root, "num_experts", "CF-5", 0, -1, 1, 65536, &b))) goto done;
        if (a < 0 && b < 0) { st = bad(c, "CF-5", "num_local_experts", "missing (nor num_experts)"); goto done; }
        if (a >= 0 && b >= 0 && a != b) {
            char msg[160];
            snprintf(msg, sizeof msg, "%lld disagrees with num_experts %lld", (long long)a, (long long)b);
            st = bad(c, "CF-5", "num_local_experts", msg);
            goto done;
        }
        cfg->n_experts = a >= 0 ? a : b;
        if ((st = get_int(c, root, "num_experts_per_tok", "CF-5", 1, 0, 1, 65536, &cfg->top_k))) goto done;
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

    if ((st = parse_rope(c, fam, cfg))) goto done;

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
        if (cfg->qkv_bias && strcmp(fam->qkv_bias_key, "attention_bias") == 0) {
            /* attention_bias also gives o_proj a bias, which the layer view cannot hold */
            st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED,
                           "%s: CF-8: key 'attention_bias': true (q/k/v/o biases) is not supported", path);
            goto done;
        }
    }
    cfg->qk_norm = fam->qk_norm;

    if ((st = check_features(c, fam))) goto done;
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
