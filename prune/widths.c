/* "moeq_expert_widths" in config.json (docs/prune.md): the ragged widths of a pruned model. */
#include "moeq_prune.h"

#include <jansson.h>
#include <stdlib.h>

moeq_status moeq_expert_widths_parse(const char *json, size_t len, const char *path,
                                     const moeq_config *cfg, int32_t **out, moeq_error *err)
{
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (!root) return MOEQ_OK;   /* the config parser has reported or will report it */
    json_t *w = json_object_get(root, "moeq_expert_widths");
    if (!w || json_is_null(w)) {
        json_decref(root);
        return MOEQ_OK;
    }
    const int64_t L = cfg->layers, E = cfg->n_experts;
    moeq_status st = MOEQ_OK;
    int32_t *v = NULL;
    if (!json_is_array(w) || (int64_t)json_array_size(w) != L) {
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: 'moeq_expert_widths' must be an array of %lld per-layer arrays",
                       path, (long long)L);
        goto done;
    }
    v = calloc((size_t)(L * (E > 0 ? E : 1)), sizeof *v);
    if (!v) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", path); goto done; }
    for (int64_t l = 0; l < L; l++) {
        json_t *a = json_array_get(w, (size_t)l);
        if (!cfg->layer_is_moe[l]) {
            if (!json_is_null(a) && !(json_is_array(a) && json_array_size(a) == 0)) {
                st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: 'moeq_expert_widths'[%lld]: layer %lld is dense, [] expected",
                               path, (long long)l, (long long)l);
                goto done;
            }
            continue;
        }
        if (!json_is_array(a) || (int64_t)json_array_size(a) != E) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: 'moeq_expert_widths'[%lld]: an array of %lld widths expected",
                           path, (long long)l, (long long)E);
            goto done;
        }
        int64_t live = 0;
        for (int64_t e = 0; e < E; e++) {
            json_t *x = json_array_get(a, (size_t)e);
            json_int_t f = json_is_integer(x) ? json_integer_value(x) : -1;
            if (f < 0 || f > cfg->moe_inter) {
                st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: 'moeq_expert_widths'[%lld][%lld]: width must be an integer "
                               "in 0..%lld (moe_inter)", path, (long long)l, (long long)e, (long long)cfg->moe_inter);
                goto done;
            }
            v[l * E + e] = (int32_t)f;
            live += f > 0;
        }
        if (live < cfg->top_k) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: 'moeq_expert_widths'[%lld]: %lld experts left, fewer than top_k %lld",
                           path, (long long)l, (long long)live, (long long)cfg->top_k);
            goto done;
        }
    }
done:
    json_decref(root);
    if (st) free(v);
    else *out = v;
    return st;
}
