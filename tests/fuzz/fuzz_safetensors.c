/* libFuzzer target: the safetensors parser on arbitrary bytes. On success every tensor's
 * bytes are summed, so ASan proves each view lies inside the input. The same bytes also go
 * through the index parser (rules CK-1..CK-4). */
#include <stdint.h>
#include <string.h>

#include "moeq_safetensors.h"

static volatile uint64_t g_sink; /* keeps the reads from being optimized away */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    moeq_st_file *f = NULL;
    moeq_error err;
    if (moeq_st_parse(data, size, "fuzz", &f, &err) == MOEQ_OK) {
        uint64_t sum = 0, bytes = 0;
        for (size_t i = 0; i < moeq_st_count(f); i++) {
            const moeq_tensor *t = moeq_st_tensor(f, i);
            const uint8_t *p = t->data;
            for (uint64_t k = 0; k < t->nbytes; k++) sum += p[k];
            bytes += t->nbytes;
            /* lookup by name finds the same tensor */
            if (moeq_st_find(f, t->name) != t) __builtin_trap();
            if (t->file_offset + t->nbytes > size) __builtin_trap();
        }
        (void)moeq_st_metadata(f, "format");
        if (bytes > size) __builtin_trap();
        g_sink = sum;
        moeq_st_close(f);
    } else if (err.code == MOEQ_OK || err.detail[0] == '\0') {
        __builtin_trap(); /* every failure carries a detail */
    }
    size_t nt, ns;
    (void)moeq_ckpt_parse_index((const char *)data, size, "fuzz-index", &nt, &ns, &err);
    return 0;
}
