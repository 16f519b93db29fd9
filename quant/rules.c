/* --tensor-type REGEX=CODEC rules, compiled once (PCRE2) and matched in order: quantize and
 * plan share them. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "moeq_quant.h"

#include <pcre2.h>
#include <stdlib.h>

struct moeq_rule_set {
    const moeq_tensor_rule *rules;
    int n;
    pcre2_code **re;
    pcre2_match_data *md;
};

void moeq_rule_set_free(moeq_rule_set *s)
{
    if (!s) return;
    for (int i = 0; s->re && i < s->n; i++) pcre2_code_free(s->re[i]);
    free(s->re);
    pcre2_match_data_free(s->md);
    free(s);
}

moeq_status moeq_rule_set_compile(const moeq_tensor_rule *rules, int n, moeq_rule_set **out, moeq_error *err)
{
    *out = NULL;
    moeq_rule_set *s = calloc(1, sizeof *s);
    if (!s) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    s->rules = rules;
    s->n = n;
    s->re = calloc((size_t)n + 1, sizeof *s->re);
    s->md = pcre2_match_data_create(4, NULL);
    if (!s->re || !s->md) {
        moeq_rule_set_free(s);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        int ec;
        PCRE2_SIZE eo;
        s->re[i] = pcre2_compile((PCRE2_SPTR)rules[i].regex, PCRE2_ZERO_TERMINATED, 0, &ec, &eo, NULL);
        if (!s->re[i]) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(ec, msg, sizeof msg);
            moeq_rule_set_free(s);
            return moeq_fail(err, MOEQ_ERR_MISUSE, "--tensor-type '%s': %s at offset %zu", rules[i].regex,
                             (const char *)msg, (size_t)eo);
        }
    }
    *out = s;
    return MOEQ_OK;
}

const moeq_tensor_rule *moeq_rule_set_match(moeq_rule_set *s, const char *name)
{
    for (int i = 0; s && i < s->n; i++)
        if (pcre2_match(s->re[i], (PCRE2_SPTR)name, PCRE2_ZERO_TERMINATED, 0, 0, s->md, NULL) >= 0)
            return &s->rules[i];
    return NULL;
}
