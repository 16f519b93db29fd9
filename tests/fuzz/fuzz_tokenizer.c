/* libFuzzer target for the tokenizer. First byte:
 *   < 0x80: the rest is text for one of the five reference tokenizers (byte % 5); encode must
 *           succeed exactly when the text is valid UTF-8, every id must lie in the vocabulary,
 *           decode must succeed, and the lossless byte-level tokenizer must round-trip.
 *   >= 0x80: the rest is a tokenizer.json image; when it loads, a fixed text must encode and
 *           decode without error (bad ids are the only decode error allowed: added tokens may
 *           leave holes in the id space). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "moeq_tokenizer.h"

static moeq_tokenizer *toks[5];

static void load_all(void)
{
    static int done;
    if (done) return;
    done = 1;
    static const char *files[5] = {
        "tests/fixtures/tiny-mixtral/tokenizer.json", "tests/fixtures/tokenizers/tok_llama3.json",
        "tests/fixtures/tokenizers/tok_nfkc.json", "tests/fixtures/tokenizers/tok_metaspace.json",
        "tests/fixtures/tokenizers/tok_legacy.json"};
    for (int i = 0; i < 5; i++) {
        moeq_error err = {0};
        if (moeq_tokenizer_load(files[i], &toks[i], &err) != MOEQ_OK) {
            fprintf(stderr, "fuzz_tokenizer: %s\n", err.detail);
            abort();
        }
    }
}

static int valid_utf8(const uint8_t *s, size_t n)
{
    /* independent of the library's validator: decode and re-encode through the rules of RFC 3629 */
    for (size_t i = 0; i < n;) {
        uint32_t c = s[i], need = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : 9;
        if (need == 9 || i + need >= n) return 0;
        uint32_t cp = need == 0 ? c : need == 1 ? (c & 31) : need == 2 ? (c & 15) : (c & 7);
        for (uint32_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 63);
        }
        if ((need == 1 && cp < 0x80) || (need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp < 0xE000))
            return 0;
        i += need + 1;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    load_all();
    moeq_error err = {0};
    int32_t *ids = NULL;
    int64_t n = 0;
    char *txt = NULL;
    size_t tl = 0;
    if (data[0] < 0x80) {
        const moeq_tokenizer *t = toks[data[0] % 5];
        const char *s = (const char *)data + 1;
        size_t len = size - 1;
        moeq_status st = moeq_tokenize(t, s, len, data[0] & 0x40, &ids, &n, &err);
        if ((st == MOEQ_OK) != valid_utf8(data + 1, len)) abort();
        if (st != MOEQ_OK) return 0;
        for (int64_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= moeq_tokenizer_vocab_size(t)) abort();
        if (moeq_detokenize(t, ids, n, 0, &txt, &tl, &err) != MOEQ_OK) abort();
        if (data[0] % 5 == 0 && (tl != len || memcmp(txt, s, len))) abort();
        free(ids);
        free(txt);
        return 0;
    }
    moeq_tokenizer *t = NULL;
    if (moeq_tokenizer_parse((const char *)data + 1, size - 1, "fuzz.json", &t, &err) != MOEQ_OK) {
        if (t || !err.detail[0]) abort();
        return 0;
    }
    static const char text[] = "Hello, world! 123 caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd <s> [MARK]  \t\n end";
    if (moeq_tokenize(t, text, sizeof text - 1, 1, &ids, &n, &err) != MOEQ_OK) abort();
    moeq_status st = moeq_detokenize(t, ids, n, 0, &txt, &tl, &err);
    if (st != MOEQ_OK && st != MOEQ_ERR_RANGE) abort();
    free(ids);
    free(txt);
    moeq_tokenizer_free(t);
    return 0;
}
