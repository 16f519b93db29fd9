/* A tokenizer.json rebuilt from a GGUF's tokenizer.ggml.* keys, for `--text` on GGUF files that
 * carry no tokenizer.huggingface.json (llama.cpp's own files).
 * - Byte-level BPE (`gpt2`): the pre-tokenizer regex of its tokenizer.ggml.pre name (the table of
 *   docs/FORMAT-gguf.md, read backwards), control tokens (type 3) as special added tokens.
 * - SentencePiece-style (`llama`), as llama.cpp's llm_tokenizer_spm runs it (src/llama-vocab.cpp):
 *   each text piece between special tokens gets one space prepended (add_space_prefix, default
 *   on), spaces become U+2581, then the adjacent pair whose concatenation is a vocabulary token of
 *   the highest score merges first (leftmost on ties), and symbols that are no token fall back
 *   to <0xXX> byte tokens. Expressed as a BPE model with byte_fallback: for every token t, each
 *   pair (a, b) of tokens with a + b = t is a merge, ranked by t's score (equal scores share a
 *   rank: moeq's "merge_ranks", so that the leftmost goes first as in llama.cpp); a normalizer
 *   Prepend("\u2581") + Replace(" ", "\u2581") applied to each piece between added tokens; unknown,
 *   control and user-defined tokens (types 2, 3, 4) as added tokens matched on the raw text
 *   (llama.cpp's tokenize with parse_special, the ids of Hugging Face's encode); BOS/EOS by
 *   add_bos_token/add_eos_token (defaults on/off) and bos/eos_token_id (defaults 1/2).
 *   What this cannot express is refused (MOEQ_ERR_UNSUPPORTED, naming the tokens), never
 *   tokenized differently: a token that SPM builds from a character that is no token (moeq's
 *   byte fallback splits that character first), a token built from a <0xXX> byte token (moeq
 *   would merge fallback bytes), a missing <0xXX>, two special tokens that overlap (a suffix of
 *   one is a prefix of the other; llama.cpp matches the longest token first everywhere,
 *   tokenizers leftmost-longest; runs of one character are exempt, both give the same), and
 *   Phi-3 names (general.name: llama.cpp strips ASCII whitespace after special tokens), tokens
 *   that are not UTF-8 or hold a NUL. Empty tokens are named [EMPTY_i] as llama.cpp names them.
 *   A `llama` vocabulary without tokenizer.ggml.scores (llama.cpp would merge with every score
 *   0), a NaN score and duplicate tokens (llama.cpp's loader rejects them) are broken input
 *   (MOEQ_ERR_FORMAT). docs/FORMAT-gguf.md lists every case. */
#include "moeq_gguf.h"
#include "moeq_tokenizer.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static const char *const LLAMA3_RE =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *const QWEN2_RE =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static json_t *byte_level(int use_regex)
{
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                     "use_regex", use_regex);
}

/* ---- SentencePiece (`llama`) ------------------------------------------------------------- */

/* token text -> id, open addressing over the token list */
typedef struct tmap {
    const char **s;
    const uint32_t *n;
    int32_t *slot;
    size_t cap;
} tmap;

static int32_t tmap_get(const tmap *m, const char *s, size_t n)
{
    for (size_t i = (size_t)XXH3_64bits(s, n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        int32_t id = m->slot[i];
        if (id < 0) return -1;
        if (m->n[id] == n && !memcmp(m->s[id], s, n)) return id;
    }
}

/* Inserts id; returns the id already holding that text, or -1. */
static int32_t tmap_put(tmap *m, int32_t id)
{
    size_t i = (size_t)XXH3_64bits(m->s[id], m->n[id]) & (m->cap - 1);
    for (; m->slot[i] >= 0; i = (i + 1) & (m->cap - 1))
        if (m->n[m->slot[i]] == m->n[id] && !memcmp(m->s[m->slot[i]], m->s[id], m->n[id])) return m->slot[i];
    m->slot[i] = id;
    return -1;
}

static size_t u8len1(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

/* 1 when s is one UTF-8 character as llama.cpp's symbol split cuts it (unicode_len_utf8) */
static int one_char(const char *s, size_t n) { return n > 0 && u8len1((unsigned char)s[0]) == n; }

/* 1 when s is one character repeated (a run: "  ", "\n\n\n") */
static int is_run(const char *s, size_t n)
{
    size_t c = u8len1((unsigned char)s[0]);
    if (c > n || n % c) return 0;
    for (size_t i = c; i < n; i += c)
        if (memcmp(s, s + i, c)) return 0;
    return 1;
}

static int valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t l = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (!l || i + l > n || (l == 2 && c < 0xC2)) return 0;
        uint32_t cp = l == 1 ? c : c & (0x7F >> l);
        for (size_t k = 1; k < l; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if ((l == 3 && cp < 0x800) || (l == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += l;
    }
    return 1;
}

typedef struct spm_merge {
    int32_t a, b, t;
    float score;
} spm_merge;

static int cmp_merge(const void *x, const void *y)
{
    const spm_merge *p = x, *q = y;   /* highest score first; then by token and split, for a fixed order */
    if (p->score != q->score) return p->score > q->score ? -1 : 1;
    if (p->t != q->t) return p->t < q->t ? -1 : 1;
    return (p->a > q->a) - (p->a < q->a);
}

static uint32_t le32(const unsigned char *q)
{
    return (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
}

static json_t *str_n(const char *s, size_t n) { return json_stringn(s, n); }

static moeq_status spm_json(const moeq_gguf *g, const moeq_gguf_kv *tk, const moeq_gguf_kv *ty, char **out, size_t *len,
                            moeq_error *err)
{
    const char *L = moeq_gguf_label(g);
    const moeq_gguf_kv *sk = moeq_gguf_find_kv(g, "tokenizer.ggml.scores");
    if (!sk)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF tokenizer.ggml.model 'llama' without tokenizer.ggml.scores: a "
                         "SentencePiece vocabulary merges by score (llama.cpp would take every score as 0)", L);
    if (sk->type != MOEQ_GGUF_ARRAY || (sk->elem != MOEQ_GGUF_F32 && sk->elem != MOEQ_GGUF_I32) || sk->count != tk->count)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF tokenizer.ggml.scores must be %llu FLOAT32 (or INT32) values", L,
                         (unsigned long long)tk->count);
    if (tk->count == 0 || tk->count >= INT32_MAX)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF tokenizer.ggml.tokens holds %llu tokens", L,
                         (unsigned long long)tk->count);
    int sp_prefix = 1, add_bos = 1, add_eos = 0;
    moeq_status st;
    if ((st = moeq_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", 0, &sp_prefix, err)) ||
        (st = moeq_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", 0, &add_bos, err)) ||
        (st = moeq_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", 0, &add_eos, err)))
        return st;
    const size_t n = (size_t)tk->count;
    /* llama.cpp: bos 1, eos 2 unless the keys name an id inside the vocabulary */
    int64_t bos = n > 1 ? 1 : -1, eos = n > 2 ? 2 : -1;
    uint32_t v32;
    if (moeq_gguf_find_kv(g, "tokenizer.ggml.bos_token_id")) {
        if ((st = moeq_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", 1, &v32, err))) return st;
        if (v32 < n) bos = v32;
    }
    if (moeq_gguf_find_kv(g, "tokenizer.ggml.eos_token_id")) {
        if ((st = moeq_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", 1, &v32, err))) return st;
        if (v32 < n) eos = v32;
    }
    if ((add_bos && bos < 0) || (add_eos && eos < 0))
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF add_%s_token is set but the vocabulary of %zu tokens has no %s id",
                         L, add_bos && bos < 0 ? "bos" : "eos", n, add_bos && bos < 0 ? "BOS" : "EOS");
    const char *name;
    uint64_t nn;
    if (moeq_gguf_find_kv(g, "general.name") && moeq_gguf_get_str(g, "general.name", 1, &name, &nn, err) == MOEQ_OK) {
        char low[256];
        size_t k = 0;
        for (; k < nn && k + 1 < sizeof low; k++) low[k] = (char)(name[k] >= 'A' && name[k] <= 'Z' ? name[k] + 32 : name[k]);
        low[k] = 0;
        if (strstr(low, "phi-3") || strstr(low, "phi3"))
            return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF general.name '%s' names a Phi-3 model: llama.cpp strips "
                             "ASCII whitespace after its special tokens there (LLAMA_TOKEN_ATTR_RSTRIP), which the rebuilt "
                             "tokenizer does not; use --tokens", L, low);
    }
    moeq_error_clear(err);

    const char **s = calloc(n, sizeof *s);
    uint32_t *sl = calloc(n, sizeof *sl);
    int32_t *type = malloc(n * sizeof *type);
    float *score = malloc(n * sizeof *score);
    char **owned = calloc(n, sizeof *owned);
    tmap m = { s, sl, NULL, 16 };
    while (m.cap < 2 * n) m.cap *= 2;
    m.slot = malloc(m.cap * sizeof *m.slot);
    spm_merge *mg = NULL;
    size_t nmg = 0, cmg = 0;
    int32_t *pre_head = NULL, *pre_next = NULL, *sp_ids = NULL;
    tmap pm = { 0 };
    const char **pstr = NULL;
    uint32_t *plen = NULL;
    json_t *root = NULL;
    st = MOEQ_OK;
    if (!s || !sl || !type || !score || !owned || !m.slot) goto nomem;
    for (size_t i = 0; i < m.cap; i++) m.slot[i] = -1;
    const unsigned char *p = tk->value;
    for (size_t i = 0; i < n; i++) {
        uint64_t l = 0;
        for (int b = 7; b >= 0; b--) l = l << 8 | p[b];
        s[i] = (const char *)p + 8;
        sl[i] = (uint32_t)l;
        p += 8 + l;
        if (l == 0) {   /* llama.cpp's name for an empty token */
            if (!(owned[i] = malloc(32))) goto nomem;
            snprintf(owned[i], 32, "[EMPTY_%zu]", i);
            s[i] = owned[i];
            sl[i] = (uint32_t)strlen(owned[i]);
        }
        if (memchr(s[i], 0, sl[i]) || !valid_utf8((const unsigned char *)s[i], sl[i])) {
            st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF token %zu is %s; the rebuilt tokenizer takes UTF-8 tokens "
                           "without NUL", L, i, memchr(s[i], 0, sl[i]) ? "text with a NUL byte" : "not valid UTF-8");
            goto out;
        }
        type[i] = ty ? (int32_t)le32(ty->value + 4 * i) : 1;
        uint32_t sc = le32(sk->value + 4 * i);
        if (sk->elem == MOEQ_GGUF_I32) score[i] = (float)(int32_t)sc;
        else memcpy(&score[i], &sc, 4);
        if (score[i] != score[i]) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF tokenizer.ggml.scores[%zu] (token '%.*s') is NaN", L, i,
                           (int)(sl[i] < 40 ? sl[i] : 40), s[i]);
            goto out;
        }
        int32_t dup = tmap_put(&m, (int32_t)i);
        if (dup >= 0) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF token %zu '%.*s' repeats token %d (llama.cpp refuses a "
                           "vocabulary with duplicates)", L, i, (int)(sl[i] < 40 ? sl[i] : 40), s[i], dup);
            goto out;
        }
    }
    int32_t byte_id[256];
    for (int b = 0; b < 256; b++) {
        char hx[8];
        snprintf(hx, sizeof hx, "<0x%02X>", b);
        if ((byte_id[b] = tmap_get(&m, hx, 6)) < 0) {
            st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF SentencePiece vocabulary without the byte token %s: the "
                           "rebuilt tokenizer needs all 256 <0xXX> tokens for byte fallback", L, hx);
            goto out;
        }
    }
    /* the merges: every split of every token into a symbol pair that SPM can see */
    for (size_t t = 0; t < n; t++) {
        for (uint32_t k = 1; k < sl[t]; k++) {
            if (((unsigned char)s[t][k] & 0xC0) == 0x80) continue;   /* inside a character */
            int32_t a = tmap_get(&m, s[t], k), b = tmap_get(&m, s[t] + k, sl[t] - k);
            int ca = a < 0 && one_char(s[t], k), cb = b < 0 && one_char(s[t] + k, sl[t] - k);
            if ((a >= 0 || ca) && (b >= 0 || cb) && (ca || cb)) {
                st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF token %zu '%.*s' is built by SentencePiece from '%.*s', "
                               "a character that is no token; moeq's byte fallback splits such characters before "
                               "merging, so the rebuilt tokenizer would differ", L, t, (int)sl[t], s[t],
                               (int)(ca ? k : sl[t] - k), ca ? s[t] : s[t] + k);
                goto out;
            }
            if (a < 0 || b < 0) continue;
            for (int x = 0; x < 256; x++)
                if (a == byte_id[x] || b == byte_id[x]) {
                    st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF token %zu '%.*s' is built from the byte token "
                                   "<0x%02X>; the rebuilt tokenizer would also merge fallback bytes into it", L, t,
                                   (int)sl[t], s[t], x);
                    goto out;
                }
            if (nmg == cmg) {
                size_t c2 = cmg ? 2 * cmg : 1024;
                spm_merge *q = realloc(mg, c2 * sizeof *q);
                if (!q) goto nomem;
                mg = q;
                cmg = c2;
            }
            mg[nmg++] = (spm_merge){ a, b, (int32_t)t, score[t] };
        }
    }
    qsort(mg, nmg, sizeof *mg, cmp_merge);
    /* special tokens: unknown, control, user-defined (llama.cpp's cache_special_tokens) */
    size_t nsp = 0, ptot = 0;
    if (!(sp_ids = malloc(n * sizeof *sp_ids))) goto nomem;
    for (size_t i = 0; i < n; i++)
        if (type[i] == 2 || type[i] == 3 || type[i] == 4) {
            sp_ids[nsp++] = (int32_t)i;
            ptot += sl[i] - 1;
        }
    /* overlap: a proper suffix of one special token that is a proper prefix of another */
    pm.cap = 16;
    while (pm.cap < 2 * ptot + 2) pm.cap *= 2;
    pstr = calloc(ptot + 1, sizeof *pstr);
    plen = calloc(ptot + 1, sizeof *plen);
    pm.slot = malloc(pm.cap * sizeof *pm.slot);
    pre_head = malloc((ptot + 1) * sizeof *pre_head);   /* prefix entry -> first owner (a list over pre_next) */
    pre_next = malloc((ptot + 1) * 2 * sizeof *pre_next);
    if (!pstr || !plen || !pm.slot || !pre_head || !pre_next) goto nomem;
    pm.s = pstr;
    pm.n = plen;
    for (size_t i = 0; i < pm.cap; i++) pm.slot[i] = -1;
    size_t np = 0, nown = 0;   /* pre_next: pairs (owner, next) */
    for (size_t j = 0; j < nsp; j++) {
        int32_t id = sp_ids[j];
        for (uint32_t k = 1; k < sl[id]; k++) {
            pstr[np] = s[id];
            plen[np] = k;
            int32_t e = tmap_put(&pm, (int32_t)np);
            if (e < 0) { e = (int32_t)np++; pre_head[e] = -1; }
            pre_next[2 * nown] = id;
            pre_next[2 * nown + 1] = pre_head[e];
            pre_head[e] = (int32_t)nown++;
        }
    }
    for (size_t j = 0; j < nsp; j++) {
        int32_t a = sp_ids[j];
        for (uint32_t k = 1; k < sl[a]; k++) {
            int32_t e = tmap_get(&pm, s[a] + k, sl[a] - k);
            for (int32_t o = e >= 0 ? pre_head[e] : -1; o >= 0; o = pre_next[2 * o + 1]) {
                int32_t b = pre_next[2 * o];
                if (b == a || (is_run(s[a], sl[a]) && is_run(s[b], sl[b]) && !memcmp(s[a], s[b], u8len1((unsigned char)s[a][0]))))
                    continue;
                st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF special tokens %d '%.*s' and %d '%.*s' overlap ('%.*s'): "
                               "llama.cpp matches the longer one first everywhere, the rebuilt tokenizer the leftmost; use "
                               "--tokens", L, a, (int)sl[a], s[a], b, (int)sl[b], s[b], (int)(sl[a] - k), s[a] + k);
                goto out;
            }
        }
    }

    json_t *vocab = json_object(), *merges = json_array(), *ranks = json_array(), *added = json_array();
    root = json_object();
    if (!vocab || !merges || !ranks || !added || !root) {
        json_decref(vocab); json_decref(merges); json_decref(ranks); json_decref(added);
        goto nomem;
    }
    json_object_set_new(root, "version", json_string("1.0"));
    json_object_set_new(root, "added_tokens", added);
    int fail = 0;
    for (size_t j = 0; j < nsp; j++) {
        int32_t id = sp_ids[j];
        fail |= json_array_append_new(added, json_pack("{s:I, s:o, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)id, "content",
                                                       str_n(s[id], sl[id]), "single_word", 0, "lstrip", 0, "rstrip", 0,
                                                       "normalized", 0, "special", type[id] != 4));
    }
    json_t *repl = json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern", "String", " ", "content", "\xe2\x96\x81");
    json_object_set_new(root, "normalizer", sp_prefix ? json_pack("{s:s, s:[{s:s, s:s}, o]}", "type", "Sequence", "normalizers",
                                                                  "type", "Prepend", "prepend", "\xe2\x96\x81", repl)
                                                      : repl);
    json_object_set_new(root, "pre_tokenizer", json_null());
    json_t *single = json_array(), *spt = json_object();
    if (add_bos) {
        json_array_append_new(single, json_pack("{s:{s:s, s:i}}", "SpecialToken", "id", "bos", "type_id", 0));
        json_object_set_new(spt, "bos", json_pack("{s:s, s:[I], s:[o]}", "id", "bos", "ids", (json_int_t)bos, "tokens",
                                                  str_n(s[bos], sl[bos])));
    }
    json_array_append_new(single, json_pack("{s:{s:s, s:i}}", "Sequence", "id", "A", "type_id", 0));
    if (add_eos) {
        json_array_append_new(single, json_pack("{s:{s:s, s:i}}", "SpecialToken", "id", "eos", "type_id", 0));
        json_object_set_new(spt, "eos", json_pack("{s:s, s:[I], s:[o]}", "id", "eos", "ids", (json_int_t)eos, "tokens",
                                                  str_n(s[eos], sl[eos])));
    }
    json_object_set_new(root, "post_processor", json_pack("{s:s, s:o, s:o, s:o}", "type", "TemplateProcessing", "single", single,
                                                          "pair", json_deep_copy(single), "special_tokens", spt));
    json_t *dec = json_pack("[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}]", "type", "Replace", "pattern", "String", "\xe2\x96\x81",
                            "content", " ", "type", "ByteFallback", "type", "Fuse");
    if (sp_prefix) json_array_append_new(dec, json_pack("{s:s, s:s, s:i, s:i}", "type", "Strip", "content", " ", "start", 1, "stop", 0));
    json_object_set_new(root, "decoder", json_pack("{s:s, s:o}", "type", "Sequence", "decoders", dec));
    for (size_t i = 0; i < n; i++) {
        char *k = owned[i];
        if (!k) {   /* the image's text is not NUL-terminated */
            if (!(owned[i] = k = malloc(sl[i] + 1))) { fail = 1; break; }
            memcpy(k, s[i], sl[i]);
            k[sl[i]] = 0;
        }
        fail |= json_object_set_new(vocab, k, json_integer((json_int_t)i));
    }
    int32_t rank = 0;
    for (size_t r = 0; r < nmg && !fail; r++) {
        if (r > 0 && mg[r].score != mg[r - 1].score) rank++;
        fail |= json_array_append_new(merges, json_pack("[o, o]", str_n(s[mg[r].a], sl[mg[r].a]), str_n(s[mg[r].b], sl[mg[r].b])));
        fail |= json_array_append_new(ranks, json_integer(rank));
    }
    fail |= json_object_set_new(root, "model", json_pack("{s:s, s:o, s:o, s:o, s:n, s:b, s:b, s:b}", "type", "BPE", "vocab", vocab,
                                                         "merges", merges, "merge_ranks", ranks, "unk_token", "fuse_unk", 0,
                                                         "byte_fallback", 1, "ignore_merges", 0));
    char *text = fail ? NULL : json_dumps(root, JSON_COMPACT);
    if (!text) goto nomem;
    *out = text;
    *len = strlen(text);
    goto out;
nomem:
    st = moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory for the tokenizer", L);
out:
    json_decref(root);
    for (size_t i = 0; owned && i < n; i++) free(owned[i]);
    free(owned);
    free(s);
    free(sl);
    free(type);
    free(score);
    free(m.slot);
    free(mg);
    free(sp_ids);
    free(pstr);
    free(plen);
    free(pm.slot);
    free(pre_head);
    free(pre_next);
    return st;
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
    if (mn == 5 && !memcmp(model, "llama", 5)) {
        const moeq_gguf_kv *tk = moeq_gguf_find_kv(g, "tokenizer.ggml.tokens"), *ty = moeq_gguf_find_kv(g, "tokenizer.ggml.token_type");
        if (!tk || tk->type != MOEQ_GGUF_ARRAY || tk->elem != MOEQ_GGUF_STRING)
            return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF tokenizer.ggml.tokens must be an array of strings", L);
        if (ty && (ty->type != MOEQ_GGUF_ARRAY || ty->elem != MOEQ_GGUF_I32 || ty->count != tk->count))
            return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF tokenizer.ggml.token_type must be %llu INT32 values", L,
                             (unsigned long long)tk->count);
        return spm_json(g, tk, ty, out, len, err);
    }
    if (!(mn == 4 && !memcmp(model, "gpt2", 4)))
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF tokenizer.ggml.model '%.*s': --text rebuilds byte-level BPE "
                         "('gpt2') and SentencePiece ('llama') tokenizers; use --tokens", L, (int)(mn < 32 ? mn : 32), model);
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
