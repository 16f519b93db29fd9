/* libFuzzer target: moeq_config_parse on arbitrary bytes. Any status is fine; crashes,
 * sanitizer reports and an inconsistent accepted config are not. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moeq_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    moeq_config cfg;
    moeq_error err;
    moeq_status st = moeq_config_parse((const char *)data, size, "fuzz/config.json", &cfg, &err);
    if (st == MOEQ_OK) {
        /* invariants every accepted config keeps (the view and forward pass rely on them) */
        if (!cfg.family || cfg.layers < 1 || cfg.layers > MOEQ_MAX_LAYERS || cfg.heads % cfg.kv_heads ||
            cfg.top_k < 1 || cfg.top_k > cfg.n_experts || cfg.head_dim < 1 || !(cfg.rms_eps > 0) ||
            !(cfg.rope_theta > 0))
            abort();
    } else if (memchr(err.detail, '\0', sizeof err.detail) == NULL || err.code != st) {
        abort();
    }
    return 0;
}
