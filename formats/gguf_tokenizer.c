/* A tokenizer.json rebuilt from a GGUF's tokenizer.ggml.* keys, for `--text` on GGUF files that
 * carry no tokenizer.huggingface.json (llama.cpp's own files): byte-level BPE (`gpt2`) with the
 * pre-tokenizer regex of its tokenizer.ggml.pre name (the table of docs/FORMAT-gguf.md, read
 * backwards), control tokens (type 3) as special added tokens. SentencePiece-style (`llama`)
 * vocabularies are refused: their merges live in scores, which tokenizer.json cannot express. */
#include "moeq_gguf.h"
#include "moeq_tokenizer.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static const char *const LLAMA3_RE =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *const QWEN2_RE =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static json_t *byte_level(int use_regex)
{
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                     "use_regex", use_regex);
}

moeq_status moeq_gguf_tokenizer_json(const moeq_gguf *g, char **out, size_t *len, moeq_error *err)
{
    *out = NULL;
    *len = 0;
    const char *L = moeq_gguf_label(g), *model, *pre = "default";
    uint64_t mn, pn = 7;
    moeq_status st = moeq_gguf_get_str(g, "tokenizer.ggml.model", 1, &model, &mn, err);
    if (st) return st;
    if (moeq_gguf_find_kv(g, "tokenizer.ggml.pre") && (st = moeq_gguf_get_str(g, "tokenizer.ggml.pre", 1, &pre, &pn, err)))
        return st;
    if (!(mn == 4 && !memcmp(model, "gpt2", 4)))
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF tokenizer.ggml.model '%.*s': --text rebuilds only byte-level "
                         "BPE ('gpt2') tokenizers; use --tokens", L, (int)(mn < 32 ? mn : 32), model);
    const char *re = NULL;
    if (pn == 6 && !memcmp(pre, "qwen2", 5)) re = QWEN2_RE;
    else if (pn == 9 && !memcmp(pre, "llama-bpe", 9)) re = LLAMA3_RE;
    else if (!((pn == 5 && !memcmp(pre, "gpt-2", 5)) || (pn == 4 && !memcmp(pre, "olmo", 4))))
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF tokenizer.ggml.pre '%.*s' is not in moeq's table (gpt-2, olmo, "
                         "llama-bpe, qwen2); use --tokens", L, (int)(pn < 32 ? pn : 32), pre);
    const moeq_gguf_kv *tk = moeq_gguf_find_kv(g, "tokenizer.ggml.tokens"), *mk = moeq_gguf_find_kv(g, "tokenizer.ggml.merges"),
                       *ty = moeq_gguf_find_kv(g, "tokenizer.ggml.token_type");
    if (!tk || tk->type != MOEQ_GGUF_ARRAY || tk->elem != MOEQ_GGUF_STRING || !mk || mk->type != MOEQ_GGUF_ARRAY ||
        mk->elem != MOEQ_GGUF_STRING)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF tokenizer.ggml.tokens and tokenizer.ggml.merges must be arrays of "
                         "strings", L);
    if (ty && (ty->type != MOEQ_GGUF_ARRAY || ty->elem != MOEQ_GGUF_I32 || ty->count != tk->count))
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF tokenizer.ggml.token_type must be %llu INT32 values", L,
                         (unsigned long long)tk->count);
    json_t *vocab = json_object(), *merges = json_array(), *added = json_array();
    /* walk the arrays once (moeq_gguf_arr_str is linear per call) */
    const unsigned char *p = tk->value;
    for (uint64_t i = 0; i < tk->count; i++) {
        uint64_t n = 0;
        for (int b = 7; b >= 0; b--) n = n << 8 | p[b];
        json_t *s = json_stringn((const char *)p + 8, (size_t)n);
        int type = 1;
        if (ty) {
            const unsigned char *q = ty->value + 4 * i;
            type = (int)(int32_t)((uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24);
        }
        if (s && (type == 3 || type == 4))
            json_array_append_new(added, json_pack("{s:I, s:O, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)i, "content",
                                                   s, "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized",
                                                   type == 4, "special", type == 3));
        if (s) json_object_set_new(vocab, json_string_value(s), json_integer((json_int_t)i));
        json_decref(s);
        p += 8 + n;
    }
    p = mk->value;
    for (uint64_t i = 0; i < mk->count; i++) {
        uint64_t n = 0;
        for (int b = 7; b >= 0; b--) n = n << 8 | p[b];
        json_array_append_new(merges, json_stringn((const char *)p + 8, (size_t)n));
        p += 8 + n;
    }
    json_t *pt = re ? json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, o]}", "type", "Sequence", "pretokenizers", "type",
                                "Split", "pattern", "Regex", re, "behavior", "Isolated", "invert", 0, byte_level(0))
                    : byte_level(1);
    json_t *root = json_pack("{s:s, s:o, s:n, s:o, s:o, s:o, s:{s:s, s:o, s:o, s:b, s:b}}", "version", "1.0", "added_tokens",
                             added, "normalizer", "pre_tokenizer", pt, "post_processor", byte_level(1), "decoder",
                             byte_level(1), "model", "type", "BPE", "vocab", vocab, "merges", merges, "ignore_merges",
                             re == LLAMA3_RE, "byte_fallback", 0);
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!text) return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory for the tokenizer", L);
    *out = text;
    *len = strlen(text);
    return MOEQ_OK;
}

moeq_status moeq_gguf_tokenizer(const moeq_gguf *g, struct moeq_tokenizer **out, moeq_error *err)
{
    const char *s;
    uint64_t n;
    moeq_status st = moeq_gguf_get_str(g, "tokenizer.huggingface.json", 0, &s, &n, err);
    if (st) return st;
    /* the whole tokenizer.json, a key of the GGUF spec that moeq's export writes */
    if (moeq_gguf_find_kv(g, "tokenizer.huggingface.json")) return moeq_tokenizer_parse(s, (size_t)n, moeq_gguf_label(g), out, err);
    char *text = NULL;   /* llama.cpp's own files: rebuilt from tokenizer.ggml.* */
    size_t len = 0;
    if ((st = moeq_gguf_tokenizer_json(g, &text, &len, err))) return st;
    st = moeq_tokenizer_parse(text, len, moeq_gguf_label(g), out, err);
    free(text);
    return st;
}
