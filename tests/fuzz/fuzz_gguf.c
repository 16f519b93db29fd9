/* libFuzzer target: the GGUF header / KV / tensor-info parser (moeq_gguf_parse, rules
 * G-1..G-12) on arbitrary bytes. On success every key's value, every string of every string
 * array and every tensor's data bytes are read, so ASan proves each view lies inside the input,
 * and every lookup finds what it indexes. Each input also runs with its tensor offsets rewritten
 * to the padded running sum (G-9), so mutations reach the checks after it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moeq_gguf.h"

static volatile uint64_t g_sink;

static int one(const uint8_t *data, size_t size)
{
    moeq_gguf *g = NULL;
    moeq_error err;
    memset(&err, 0, sizeof err);
    if (moeq_gguf_parse(data, size, "fuzz", &g, &err) != MOEQ_OK) {
        if (err.code == MOEQ_OK || err.detail[0] == '\0') __builtin_trap();   /* every failure has a detail */
        return 0;
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < moeq_gguf_nkv(g); i++) {
        const moeq_gguf_kv *kv = moeq_gguf_kv_at(g, i);
        if (moeq_gguf_find_kv(g, kv->key) != kv) __builtin_trap();
        if (kv->type == MOEQ_GGUF_ARRAY && kv->elem == MOEQ_GGUF_STRING) {
            for (uint64_t k = 0; k < kv->count && k < 64; k++) {
                const char *s;
                uint64_t n;
                if (moeq_gguf_arr_str(kv, k, &s, &n)) __builtin_trap();
                for (uint64_t j = 0; j < n; j++) sum += (uint8_t)s[j];
            }
        } else if (kv->type == MOEQ_GGUF_STRING) {
            const char *s;
            uint64_t n;
            moeq_error e2;
            if (moeq_gguf_get_str(g, kv->key, 1, &s, &n, &e2)) __builtin_trap();
            for (uint64_t j = 0; j < n; j++) sum += (uint8_t)s[j];
        } else {
            sum += kv->value[0];
        }
    }
    for (size_t i = 0; i < moeq_gguf_ntensors(g); i++) {
        const moeq_gguf_tensor *t = moeq_gguf_tensor_at(g, i);
        if (moeq_gguf_find_tensor(g, t->name) != t) __builtin_trap();
        const uint8_t *p = t->data;
        for (uint64_t k = 0; k < t->nbytes; k++) sum += p[k];
    }
    char *tj = NULL;   /* the tokenizer rebuild walks the string arrays once more */
    size_t tl = 0;
    moeq_error e3;
    if (moeq_gguf_tokenizer_json(g, &tj, &tl, &e3) == MOEQ_OK) sum += tl;
    free(tj);
    g_sink = sum;
    moeq_gguf_close(g);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (one(data, size) || size < 24) return 0;
    /* parse once more with the offsets a writer would have put: locate each tensor info by
     * re-reading the header the way the parser does, stopping at anything inconsistent */
    uint8_t *fix = malloc(size);
    if (!fix) return 0;
    memcpy(fix, data, size);
    size_t pos = 24;
    uint64_t nkv = 0, nt = 0;
    for (int i = 7; i >= 0; i--) nt = nt << 8 | fix[8 + i], nkv = nkv << 8 | fix[16 + i];
    /* skip the KVs only when they are simple scalars or strings; otherwise give up */
    for (uint64_t i = 0; i < nkv && pos + 12 <= size; i++) {
        uint64_t l = 0;
        for (int k = 7; k >= 0; k--) l = l << 8 | fix[pos + k];
        if (l > size - pos - 12) goto done;
        pos += 8 + l;
        uint32_t t = (uint32_t)fix[pos] | (uint32_t)fix[pos + 1] << 8 | (uint32_t)fix[pos + 2] << 16 | (uint32_t)fix[pos + 3] << 24;
        pos += 4;
        static const int sz[] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };
        if (t == 8) {
            if (pos + 8 > size) goto done;
            uint64_t sl = 0;
            for (int k = 7; k >= 0; k--) sl = sl << 8 | fix[pos + k];
            if (sl > size - pos - 8) goto done;
            pos += 8 + sl;
        } else if (t <= 12 && t != 9) {
            pos += (size_t)sz[t];
        } else {
            goto done;
        }
    }
    uint64_t off = 0;
    for (uint64_t i = 0; i < nt && nt < 4096; i++) {
        if (pos + 8 > size) goto done;
        uint64_t l = 0;
        for (int k = 7; k >= 0; k--) l = l << 8 | fix[pos + k];
        if (l > size - pos - 8) goto done;
        pos += 8 + l;
        if (pos + 4 > size) goto done;
        uint32_t nd = fix[pos];
        if (nd < 1 || nd > 4 || pos + 4 + 8 * nd + 12 > size) goto done;
        pos += 4;
        uint64_t numel = 1, ne0 = 1;
        for (uint32_t j = 0; j < nd; j++) {
            uint64_t e = 0;
            for (int k = 7; k >= 0; k--) e = e << 8 | fix[pos + 8 * j + k];
            if (e == 0 || e > (1u << 20)) goto done;
            if (j == 0) ne0 = e;
            numel *= e;
            if (numel > (1u << 24)) goto done;
        }
        pos += 8 * nd;
        int32_t ty = (int32_t)((uint32_t)fix[pos] | (uint32_t)fix[pos + 1] << 8 | (uint32_t)fix[pos + 2] << 16 | (uint32_t)fix[pos + 3] << 24);
        const moeq_gguf_type *ti = moeq_gguf_type_get(ty);
        if (!ti) goto done;
        for (int k = 0; k < 8; k++) fix[pos + 4 + k] = (uint8_t)(off >> (8 * k));
        uint64_t nb = numel / (uint64_t)ti->block * (uint64_t)ti->bytes + numel / ne0 * (uint64_t)ti->row_meta;
        off += (nb + 31) / 32 * 32;
        pos += 12;
    }
    one(fix, size);
done:
    free(fix);
    return 0;
}
