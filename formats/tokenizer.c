/* tokenizer.json in C, built to give the ids of Hugging Face tokenizers 0.23 (docs/tokenize.md).
 * The pipeline follows tokenizers' TokenizerImpl::encode: split the raw text on the added tokens
 * that are not normalized, normalize each remaining piece, split it on the normalized added
 * tokens, pre-tokenize, run the BPE model on each word, post-process. Regexes go through PCRE2
 * (UTF + UCP, JIT), Unicode normalization through utf8proc. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "moeq_tokenizer.h"
#include "moeq_gguf.h"

#include <errno.h>
#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>
#include <xxhash.h>

/* ---------- small containers ---------- */

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static int buf_reserve(buf *b, size_t extra)
{
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_add(buf *b, const void *s, size_t len)
{
    if (buf_reserve(b, len)) return -1;
    if (len) memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = 0;
    return 0;
}

/* string -> int32 map, open addressing; keys are copies owned by the map */
typedef struct smap {
    char **key;
    uint32_t *klen;
    int32_t *val;
    size_t cap, n;
} smap;

static uint64_t shash(const char *s, size_t len) { return XXH3_64bits(s, len); }

static int smap_init(smap *m, size_t want)
{
    size_t cap = 16;
    while (cap < want * 2) cap *= 2;
    m->key = calloc(cap, sizeof *m->key);
    m->klen = calloc(cap, sizeof *m->klen);
    m->val = calloc(cap, sizeof *m->val);
    m->cap = cap;
    m->n = 0;
    return (m->key && m->klen && m->val) ? 0 : -1;
}

static void smap_free(smap *m)
{
    if (m->key)
        for (size_t i = 0; i < m->cap; i++) free(m->key[i]);
    free(m->key);
    free(m->klen);
    free(m->val);
}

static int32_t smap_get(const smap *m, const char *s, size_t len)
{
    if (!m->cap) return -1;
    size_t i = (size_t)shash(s, len) & (m->cap - 1);
    for (;;) {
        if (!m->key[i]) return -1;
        if (m->klen[i] == len && !memcmp(m->key[i], s, len)) return m->val[i];
        i = (i + 1) & (m->cap - 1);
    }
}

/* Returns 1 when inserted, 0 when the key existed (value replaced), -1 on no memory. */
static int smap_put(smap *m, const char *s, size_t len, int32_t v)
{
    if ((m->n + 1) * 2 > m->cap) {
        smap o = *m;
        if (smap_init(m, o.n + 1 > o.cap ? o.n + 1 : o.cap)) { *m = o; return -1; }
        for (size_t i = 0; i < o.cap; i++)
            if (o.key[i]) {
                size_t j = (size_t)shash(o.key[i], o.klen[i]) & (m->cap - 1);
                while (m->key[j]) j = (j + 1) & (m->cap - 1);
                m->key[j] = o.key[i];
                m->klen[j] = o.klen[i];
                m->val[j] = o.val[i];
                m->n++;
            }
        free(o.key);
        free(o.klen);
        free(o.val);
    }
    size_t i = (size_t)shash(s, len) & (m->cap - 1);
    while (m->key[i]) {
        if (m->klen[i] == len && !memcmp(m->key[i], s, len)) { m->val[i] = v; return 0; }
        i = (i + 1) & (m->cap - 1);
    }
    char *k = malloc(len + 1);
    if (!k) return -1;
    memcpy(k, s, len);
    k[len] = 0;
    m->key[i] = k;
    m->klen[i] = (uint32_t)len;
    m->val[i] = v;
    m->n++;
    return 1;
}

/* (left id, right id) -> (rank, merged id) */
typedef struct mmap_ {
    uint64_t *key;
    int32_t *rank, *id;
    size_t cap;
} mmap_;

static size_t mhash(uint64_t k)
{
    k ^= k >> 29;
    k *= 0xbf58476d1ce4e5b9ULL; /* splitmix64 finalizer: cheap and well mixed */
    k ^= k >> 32;
    return (size_t)k;
}

static int mmap_get(const mmap_ *m, int32_t a, int32_t b, int32_t *rank, int32_t *id)
{
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = mhash(k) & (m->cap - 1);
    while (m->rank[i] >= 0) {
        if (m->key[i] == k) { *rank = m->rank[i]; *id = m->id[i]; return 1; }
        i = (i + 1) & (m->cap - 1);
    }
    return 0;
}

/* ---------- components ---------- */

enum { N_NFC, N_NFKC, N_NFD, N_NFKD, N_PREPEND, N_REPLACE, N_STRIP };
enum { P_BYTELEVEL, P_SPLIT, P_METASPACE, P_DIGITS };
enum { B_REMOVED, B_ISOLATED, B_PREV, B_NEXT, B_CONTIG };
enum { D_BYTELEVEL, D_METASPACE, D_BYTEFALLBACK, D_FUSE, D_STRIP, D_REPLACE };
enum { PS_ALWAYS, PS_NEVER, PS_FIRST };

typedef struct op {
    int kind;
    pcre2_code *re;        /* Split / Replace pattern (String patterns compile as literals) */
    char *str, *content;   /* Prepend text; Replace content; Metaspace replacement */
    size_t slen, clen;
    int behavior, invert;  /* Split */
    int left, right;       /* Strip normalizer; Strip decoder start/stop counts */
    int add_prefix_space, use_regex, prepend, split, individual;
    uint32_t ch;           /* Strip decoder content char; Metaspace replacement char */
} op;

typedef struct added {
    char *content, *match; /* match: content as normalized when normalized is set */
    size_t len, mlen;
    int32_t id;
    int special, lstrip, rstrip, single_word, normalized;
} added;

typedef struct aset {      /* added tokens of one kind bucketed by first byte, longest first */
    int32_t *idx;
    size_t off[257];
} aset;

struct moeq_tokenizer {
    char *label;
    smap vocab;
    char **id_tok;         /* id -> token string (vocabulary, then added tokens override) */
    uint32_t *id_len;
    uint8_t *id_special;
    int64_t nid;
    mmap_ merges;
    int32_t unk_id, byte_ids[256];
    int fuse_unk, byte_fallback, ignore_merges;
    int meta_safe;         /* a word may be cut before each U+2581 without changing its ids */
    char *cont_prefix, *eow_suffix;
    size_t cp_len, eow_len;
    op *norm, *pre, *dec;
    int nnorm, npre, ndec, has_decoder;
    added *add;
    size_t nadd;
    aset raw_set, norm_set;
    int32_t *tmpl_pre, *tmpl_post;
    size_t ntmpl_pre, ntmpl_post;
    pcre2_code *ws_re, *word_re, *num_re;
    char bl_enc[256][3];
    uint8_t bl_len[256];
    int16_t bl_dec[512];   /* ByteLevel char -> byte (-1: not a ByteLevel char) */
};

/* ---------- UTF-8 ---------- */

/* Length of the valid UTF-8 prefix of s; *bad_len is the length of the invalid sequence that
 * follows, as Rust's Utf8Error::error_len (0: an incomplete sequence reaching the end). */
static size_t utf8_valid(const uint8_t *s, size_t len, size_t *bad_len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t w = (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
        if (!w) { *bad_len = 1; return i; }
        if (i + 1 >= len) { *bad_len = 0; return i; }
        uint8_t c1 = s[i + 1];
        uint8_t lo = 0x80, hi = 0xBF;
        if (c == 0xE0) lo = 0xA0;
        else if (c == 0xED) hi = 0x9F;
        else if (c == 0xF0) lo = 0x90;
        else if (c == 0xF4) hi = 0x8F;
        if (c1 < lo || c1 > hi) { *bad_len = 1; return i; }
        for (size_t k = 2; k < w; k++) {
            if (i + k >= len) { *bad_len = 0; return i; }
            if ((s[i + k] & 0xC0) != 0x80) { *bad_len = k; return i; }
        }
        i += w;
    }
    *bad_len = 0;
    return len;
}

static size_t u8len(uint8_t c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

static uint32_t u8dec(const char *s, size_t *l)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t n = u8len(p[0]);
    uint32_t c = n == 1 ? p[0] : n == 2 ? (p[0] & 0x1Fu) : n == 3 ? (p[0] & 0x0Fu) : (p[0] & 0x07u);
    for (size_t k = 1; k < n; k++) c = (c << 6) | (p[k] & 0x3Fu);
    *l = n;
    return c;
}

static size_t u8enc(uint32_t c, char *o)
{
    if (c < 0x80) { o[0] = (char)c; return 1; }
    if (c < 0x800) { o[0] = (char)(0xC0 | (c >> 6)); o[1] = (char)(0x80 | (c & 0x3F)); return 2; }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12)); o[1] = (char)(0x80 | ((c >> 6) & 0x3F)); o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18)); o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F)); o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* String::from_utf8_lossy: each maximal invalid subsequence becomes one U+FFFD. */
static int lossy_add(buf *o, const char *s, size_t len)
{
    while (len) {
        size_t bad, ok = utf8_valid((const uint8_t *)s, len, &bad);
        if (buf_add(o, s, ok)) return -1;
        if (ok == len) break;
        if (buf_add(o, "\xEF\xBF\xBD", 3)) return -1;
        size_t skip = bad ? bad : len - ok;
        s += ok + skip;
        len -= ok + skip;
    }
    return 0;
}

/* ---------- regex ---------- */

/* Oniguruma (tokenizers' engine) and PCRE2 agree on \s, \d, \p{..} with UCP; \w differs (PCRE2
 * 10.42: L, N, _; Oniguruma: L, M, Nd, Pc) and \h is a hex digit in Oniguruma. Rewrite those. */
static int translate_onig(const char *p, size_t len, buf *o, char *why, size_t whylen)
{
    int in_class = 0;
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < len) {
            char d = p[++i];
            const char *w = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}", *h = "0-9a-fA-F";
            int r = 0;
            if (d == 'w') r = in_class ? buf_add(o, w, strlen(w)) : (buf_add(o, "[", 1) || buf_add(o, w, strlen(w)) || buf_add(o, "]", 1));
            else if (d == 'h') r = in_class ? buf_add(o, h, strlen(h)) : (buf_add(o, "[", 1) || buf_add(o, h, strlen(h)) || buf_add(o, "]", 1));
            else if ((d == 'W' || d == 'H') && !in_class)
                r = buf_add(o, "[^", 2) || buf_add(o, d == 'W' ? w : h, strlen(d == 'W' ? w : h)) || buf_add(o, "]", 1);
            else if (d == 'W' || d == 'H' || d == 'b' || d == 'B') {
                snprintf(why, whylen, "\\%c (Oniguruma's meaning cannot be kept in PCRE2%s)", d,
                         in_class ? " inside a character class" : "");
                return 1;
            } else {
                char e[2] = {'\\', d};
                r = buf_add(o, e, 2);
            }
            if (r) return -1;
            continue;
        }
        if (c == '[') {
            in_class++;
            if (buf_add(o, "[", 1)) return -1;
            /* a ']' right after '[' or '[^' is a literal */
            if (i + 1 < len && p[i + 1] == '^') { if (buf_add(o, "^", 1)) return -1; i++; }
            if (i + 1 < len && p[i + 1] == ']') { if (buf_add(o, "\\]", 2)) return -1; i++; }
            continue;
        }
        if (c == ']' && in_class) in_class--;
        if (buf_add(o, &c, 1)) return -1;
    }
    return 0;
}

static pcre2_code *re_compile(const char *pat, size_t len, int literal, char *why, size_t whylen)
{
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP, &ec,
                                   &eo, NULL);
    if (!re) {
        char msg[160];
        pcre2_get_error_message(ec, (PCRE2_UCHAR *)msg, sizeof msg);
        snprintf(why, whylen, "PCRE2 rejects the pattern at offset %zu: %s", (size_t)eo, msg);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* interpreter when JIT is unavailable */
    return re;
}

/* ---------- JSON loading ---------- */

typedef struct lctx {
    moeq_tokenizer *t;
    moeq_error *err;
    const char *label;
} lctx;

static moeq_status bad(lctx *c, moeq_status code, const char *where, const char *fmt, const char *a)
{
    char what[400];
    snprintf(what, sizeof what, fmt, a ? a : "");
    return moeq_fail(c->err, code, "%s: %s: %s", c->label, where, what);
}

static moeq_status nomem(lctx *c) { return moeq_fail(c->err, MOEQ_ERR_NOMEM, "%s: out of memory", c->label); }

static int jbool(json_t *o, const char *k, int dflt)
{
    json_t *v = json_object_get(o, k);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static char *jdup(json_t *s, size_t *len)
{
    size_t n = json_string_length(s);
    char *p = malloc(n + 1);
    if (p) { memcpy(p, json_string_value(s), n); p[n] = 0; }
    if (len) *len = n;
    return p;
}

/* {"String": s} or {"Regex": r} */
static moeq_status load_pattern(lctx *c, json_t *pat, const char *where, pcre2_code **re, char **lit, size_t *litlen)
{
    json_t *s = json_object_get(pat, "String"), *r = json_object_get(pat, "Regex");
    char why[300];
    if (json_is_string(s)) {
        if (lit && !(*lit = jdup(s, litlen))) return nomem(c);
        if (json_string_length(s) == 0) return bad(c, MOEQ_ERR_UNSUPPORTED, where, "an empty String pattern%s", NULL);
        if (!(*re = re_compile(json_string_value(s), json_string_length(s), 1, why, sizeof why)))
            return bad(c, MOEQ_ERR_FORMAT, where, "%s", why);
        return MOEQ_OK;
    }
    if (json_is_string(r)) {
        buf b = {0};
        int tr = translate_onig(json_string_value(r), json_string_length(r), &b, why, sizeof why);
        if (tr < 0) { free(b.p); return nomem(c); }
        if (tr > 0) { free(b.p); return bad(c, MOEQ_ERR_UNSUPPORTED, where, "unsupported regex construct %s", why); }
        *re = re_compile(b.p ? b.p : "", b.n, 0, why, sizeof why);
        free(b.p);
        if (!*re) return bad(c, MOEQ_ERR_FORMAT, where, "%s", why);
        return MOEQ_OK;
    }
    return bad(c, MOEQ_ERR_FORMAT, where, "pattern must be {\"String\": ...} or {\"Regex\": ...}%s", NULL);
}

static moeq_status push_op(lctx *c, op **arr, int *n, op **out)
{
    op *a = realloc(*arr, (size_t)(*n + 1) * sizeof **arr);
    if (!a) return nomem(c);
    *arr = a;
    memset(&a[*n], 0, sizeof **arr);
    *out = &a[(*n)++];
    return MOEQ_OK;
}

static moeq_status one_char(lctx *c, json_t *v, const char *where, const char *key, uint32_t *ch, char **s, size_t *len)
{
    json_t *x = json_object_get(v, key);
    if (!json_is_string(x)) return bad(c, MOEQ_ERR_FORMAT, where, "'%s' must be a string", key);
    size_t l = json_string_length(x), cl;
    if (l == 0 || (u8dec(json_string_value(x), &cl), cl != l))
        return bad(c, MOEQ_ERR_FORMAT, where, "'%s' must be one character", key);
    *ch = u8dec(json_string_value(x), &cl);
    if (s && !(*s = jdup(x, len))) return nomem(c);
    return MOEQ_OK;
}

typedef moeq_status (*step_loader)(lctx *c, json_t *v, const char *where);

/* The head shared by the normalizer, pre-tokenizer, decoder and post-processor loaders: the
 * step's 'type' into *type; a "Sequence" is loaded here, each element of its `list` through
 * `self`, and *type is left NULL. */
static moeq_status step_type(lctx *c, json_t *v, const char *where, const char *list, step_loader self,
                             const char **type)
{
    *type = NULL;
    json_t *ty = json_object_get(v, "type");
    if (!json_is_string(ty)) return bad(c, MOEQ_ERR_FORMAT, where, "missing 'type'%s", NULL);
    const char *k = json_string_value(ty);
    if (strcmp(k, "Sequence")) {
        *type = k;
        return MOEQ_OK;
    }
    json_t *arr = json_object_get(v, list);
    if (!json_is_array(arr)) return bad(c, MOEQ_ERR_FORMAT, where, "Sequence without '%s'", list);
    char sub[256];
    for (size_t i = 0; i < json_array_size(arr); i++) {
        snprintf(sub, sizeof sub, "%s.%s[%zu]", where, list, i);
        moeq_status st = self(c, json_array_get(arr, i), sub);
        if (st) return st;
    }
    return MOEQ_OK;
}

static moeq_status load_normalizer(lctx *c, json_t *v, const char *where)
{
    moeq_tokenizer *t = c->t;
    if (!v || json_is_null(v)) return MOEQ_OK;
    const char *k;
    moeq_status st = step_type(c, v, where, "normalizers", load_normalizer, &k);
    if (st || !k) return st;
    op *o;
    if ((st = push_op(c, &t->norm, &t->nnorm, &o))) return st;
    if (!strcmp(k, "NFC")) o->kind = N_NFC;
    else if (!strcmp(k, "NFKC")) o->kind = N_NFKC;
    else if (!strcmp(k, "NFD")) o->kind = N_NFD;
    else if (!strcmp(k, "NFKD")) o->kind = N_NFKD;
    else if (!strcmp(k, "Prepend")) {
        o->kind = N_PREPEND;
        json_t *p = json_object_get(v, "prepend");
        if (!json_is_string(p)) return bad(c, MOEQ_ERR_FORMAT, where, "Prepend without 'prepend'%s", NULL);
        if (!(o->str = jdup(p, &o->slen))) return nomem(c);
    } else if (!strcmp(k, "Replace")) {
        o->kind = N_REPLACE;
        json_t *ct = json_object_get(v, "content");
        if (!json_is_string(ct)) return bad(c, MOEQ_ERR_FORMAT, where, "Replace without 'content'%s", NULL);
        if (!(o->content = jdup(ct, &o->clen))) return nomem(c);
        if ((st = load_pattern(c, json_object_get(v, "pattern"), where, &o->re, NULL, NULL))) return st;
    } else if (!strcmp(k, "Strip")) {
        o->kind = N_STRIP;
        o->left = jbool(v, "strip_left", 0);
        o->right = jbool(v, "strip_right", 0);
    } else
        return bad(c, MOEQ_ERR_UNSUPPORTED, where, "unsupported normalizer type '%s'", k);
    return MOEQ_OK;
}

static int parse_behavior(const char *s)
{
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    for (int i = 0; i < 5; i++)
        if (!strcmp(s, names[i])) return i;
    return -1;
}

static int parse_scheme(json_t *v, int *out)
{
    json_t *ps = json_object_get(v, "prepend_scheme");
    if (!ps) { /* older files: add_prefix_space */
        *out = jbool(v, "add_prefix_space", 1) ? PS_ALWAYS : PS_NEVER;
        return 0;
    }
    const char *s = json_string_value(ps);
    if (!s) return -1;
    if (!strcmp(s, "always")) *out = PS_ALWAYS;
    else if (!strcmp(s, "never")) *out = PS_NEVER;
    else if (!strcmp(s, "first")) *out = PS_FIRST;
    else return -1;
    return 0;
}

static moeq_status load_pretok(lctx *c, json_t *v, const char *where)
{
    moeq_tokenizer *t = c->t;
    if (!v || json_is_null(v)) return MOEQ_OK;
    const char *k;
    moeq_status st = step_type(c, v, where, "pretokenizers", load_pretok, &k);
    if (st || !k) return st;
    op *o;
    if ((st = push_op(c, &t->pre, &t->npre, &o))) return st;
    if (!strcmp(k, "ByteLevel")) {
        o->kind = P_BYTELEVEL;
        o->add_prefix_space = jbool(v, "add_prefix_space", 1);
        o->use_regex = jbool(v, "use_regex", 1);
        if (o->use_regex) {
            static const char gpt2[] =
                "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
            char why[300];
            if (!(o->re = re_compile(gpt2, sizeof gpt2 - 1, 0, why, sizeof why)))
                return bad(c, MOEQ_ERR_DEPENDENCY, where, "%s", why);
        }
    } else if (!strcmp(k, "Split")) {
        o->kind = P_SPLIT;
        json_t *b = json_object_get(v, "behavior");
        if (!json_is_string(b) || (o->behavior = parse_behavior(json_string_value(b))) < 0)
            return bad(c, MOEQ_ERR_UNSUPPORTED, where, "unknown Split behavior '%s'",
                       json_is_string(b) ? json_string_value(b) : "(missing)");
        o->invert = jbool(v, "invert", 0);
        if ((st = load_pattern(c, json_object_get(v, "pattern"), where, &o->re, NULL, NULL))) return st;
    } else if (!strcmp(k, "Metaspace")) {
        o->kind = P_METASPACE;
        if ((st = one_char(c, v, where, "replacement", &o->ch, &o->str, &o->slen))) return st;
        if (parse_scheme(v, &o->prepend)) return bad(c, MOEQ_ERR_UNSUPPORTED, where, "unknown prepend_scheme%s", NULL);
        o->split = jbool(v, "split", 1);
    } else if (!strcmp(k, "Digits")) {
        o->kind = P_DIGITS;
        o->individual = jbool(v, "individual_digits", 0);
    } else
        return bad(c, MOEQ_ERR_UNSUPPORTED, where, "unsupported pre-tokenizer type '%s'", k);
    return MOEQ_OK;
}

static moeq_status load_decoder(lctx *c, json_t *v, const char *where)
{
    moeq_tokenizer *t = c->t;
    if (!v || json_is_null(v)) return MOEQ_OK;
    t->has_decoder = 1;
    const char *k;
    moeq_status st = step_type(c, v, where, "decoders", load_decoder, &k);
    if (st || !k) return st;
    op *o;
    if ((st = push_op(c, &t->dec, &t->ndec, &o))) return st;
    if (!strcmp(k, "ByteLevel")) o->kind = D_BYTELEVEL;
    else if (!strcmp(k, "ByteFallback")) o->kind = D_BYTEFALLBACK;
    else if (!strcmp(k, "Fuse")) o->kind = D_FUSE;
    else if (!strcmp(k, "Metaspace")) {
        o->kind = D_METASPACE;
        if ((st = one_char(c, v, where, "replacement", &o->ch, NULL, NULL))) return st;
        if (parse_scheme(v, &o->prepend)) return bad(c, MOEQ_ERR_UNSUPPORTED, where, "unknown prepend_scheme%s", NULL);
    } else if (!strcmp(k, "Strip")) {
        o->kind = D_STRIP;
        if ((st = one_char(c, v, where, "content", &o->ch, NULL, NULL))) return st;
        json_t *a = json_object_get(v, "start"), *b = json_object_get(v, "stop");
        if (!json_is_integer(a) || !json_is_integer(b) || json_integer_value(a) < 0 || json_integer_value(b) < 0 ||
            json_integer_value(a) > 1000000 || json_integer_value(b) > 1000000)
            return bad(c, MOEQ_ERR_FORMAT, where, "Strip wants integer 'start' and 'stop' >= 0%s", NULL);
        o->left = (int)json_integer_value(a);
        o->right = (int)json_integer_value(b);
    } else if (!strcmp(k, "Replace")) {
        o->kind = D_REPLACE;
        json_t *ct = json_object_get(v, "content");
        if (!json_is_string(ct)) return bad(c, MOEQ_ERR_FORMAT, where, "Replace without 'content'%s", NULL);
        if (!(o->content = jdup(ct, &o->clen))) return nomem(c);
        if ((st = load_pattern(c, json_object_get(v, "pattern"), where, &o->re, NULL, NULL))) return st;
    } else
        return bad(c, MOEQ_ERR_UNSUPPORTED, where, "unsupported decoder type '%s'", k);
    return MOEQ_OK;
}

static moeq_status load_post(lctx *c, json_t *v, const char *where)
{
    moeq_tokenizer *t = c->t;
    if (!v || json_is_null(v)) return MOEQ_OK;
    const char *k;
    moeq_status st = step_type(c, v, where, "processors", load_post, &k);
    if (st || !k) return st;
    if (!strcmp(k, "ByteLevel")) return MOEQ_OK; /* changes offsets only, never ids */
    char sub[256];
    if (strcmp(k, "TemplateProcessing")) return bad(c, MOEQ_ERR_UNSUPPORTED, where, "unsupported post-processor type '%s'", k);
    if (t->tmpl_pre || t->tmpl_post) return bad(c, MOEQ_ERR_UNSUPPORTED, where, "two TemplateProcessing steps%s", NULL);
    json_t *single = json_object_get(v, "single"), *sp = json_object_get(v, "special_tokens");
    if (!json_is_array(single) || !json_is_object(sp))
        return bad(c, MOEQ_ERR_FORMAT, where, "TemplateProcessing wants 'single' and 'special_tokens'%s", NULL);
    int seen_a = 0;
    for (size_t i = 0; i < json_array_size(single); i++) {
        json_t *piece = json_array_get(single, i), *x;
        snprintf(sub, sizeof sub, "%s.single[%zu]", where, i);
        if ((x = json_object_get(piece, "Sequence"))) {
            if (seen_a) return bad(c, MOEQ_ERR_UNSUPPORTED, sub, "a single template with the sequence twice%s", NULL);
            seen_a = 1;
            continue;
        }
        x = json_object_get(piece, "SpecialToken");
        json_t *name = json_object_get(x, "id");
        if (!json_is_string(name)) return bad(c, MOEQ_ERR_FORMAT, sub, "neither Sequence nor SpecialToken with an 'id'%s", NULL);
        json_t *ids = json_object_get(json_object_get(sp, json_string_value(name)), "ids");
        if (!json_is_array(ids)) return bad(c, MOEQ_ERR_FORMAT, sub, "special token '%s' missing from special_tokens", json_string_value(name));
        int32_t **arr = seen_a ? &t->tmpl_post : &t->tmpl_pre;
        size_t *na = seen_a ? &t->ntmpl_post : &t->ntmpl_pre;
        for (size_t j = 0; j < json_array_size(ids); j++) {
            json_t *id = json_array_get(ids, j);
            if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) > INT32_MAX)
                return bad(c, MOEQ_ERR_FORMAT, sub, "special token '%s' has an invalid id", json_string_value(name));
            int32_t *a = realloc(*arr, (*na + 1) * sizeof **arr);
            if (!a) return nomem(c);
            a[(*na)++] = (int32_t)json_integer_value(id);
            *arr = a;
        }
    }
    if (!seen_a) return bad(c, MOEQ_ERR_UNSUPPORTED, where, "a single template without $A%s", NULL);
    return MOEQ_OK;
}

static moeq_status set_id_token(lctx *c, int64_t id, const char *s, size_t len)
{
    moeq_tokenizer *t = c->t;
    if (id >= t->nid) {
        int64_t n = id + 1;
        char **a = realloc(t->id_tok, (size_t)n * sizeof *a);
        if (!a) return nomem(c);
        t->id_tok = a;
        uint32_t *l = realloc(t->id_len, (size_t)n * sizeof *l);
        if (!l) return nomem(c);
        t->id_len = l;
        uint8_t *sp = realloc(t->id_special, (size_t)n);
        if (!sp) return nomem(c);
        t->id_special = sp;
        for (int64_t i = t->nid; i < n; i++) { a[i] = NULL; l[i] = 0; sp[i] = 0; }
        t->nid = n;
    }
    free(t->id_tok[id]);
    if (!(t->id_tok[id] = malloc(len + 1))) return nomem(c);
    memcpy(t->id_tok[id], s, len);
    t->id_tok[id][len] = 0;
    t->id_len[id] = (uint32_t)len;
    return MOEQ_OK;
}

static moeq_status normalize(const moeq_tokenizer *t, const char *s, size_t len, buf *out, int *first, moeq_error *err);

typedef struct skey {
    uint8_t first;
    size_t len;
    int32_t idx;
} skey;

static int cmp_set(const void *a, const void *b)
{
    const skey *x = a, *y = b;
    if (x->first != y->first) return x->first < y->first ? -1 : 1;
    if (x->len != y->len) return x->len > y->len ? -1 : 1; /* longest first: leftmost-longest */
    return x->idx < y->idx ? -1 : 1;
}

static moeq_status build_set(lctx *c, aset *s, int normalized)
{
    moeq_tokenizer *t = c->t;
    size_t n = 0;
    skey *k = malloc((t->nadd + 1) * sizeof *k);
    if (!k || !(s->idx = malloc((t->nadd + 1) * sizeof *s->idx))) { free(k); return nomem(c); }
    for (size_t i = 0; i < t->nadd; i++)
        if (t->add[i].normalized == normalized && t->add[i].mlen > 0)
            k[n++] = (skey){(uint8_t)t->add[i].match[0], t->add[i].mlen, (int32_t)i};
    qsort(k, n, sizeof *k, cmp_set);
    for (size_t i = 0; i < n; i++) s->idx[i] = k[i].idx;
    size_t j = 0;
    for (int b = 0; b < 256; b++) {
        s->off[b] = j;
        while (j < n && k[j].first == b) j++;
    }
    s->off[256] = n;
    free(k);
    return MOEQ_OK;
}

static moeq_status load_added(lctx *c, json_t *arr)
{
    moeq_tokenizer *t = c->t;
    char where[64];
    moeq_status st;
    if (json_is_null(arr) || !arr) return MOEQ_OK;
    if (!json_is_array(arr)) return bad(c, MOEQ_ERR_FORMAT, "added_tokens", "must be an array%s", NULL);
    if (!(t->add = calloc(json_array_size(arr) + 1, sizeof *t->add))) return nomem(c);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *a = json_array_get(arr, i), *id = json_object_get(a, "id"), *ct = json_object_get(a, "content");
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= INT32_MAX)
            return bad(c, MOEQ_ERR_FORMAT, where, "'id' must be an integer in [0, 2^31-1)%s", NULL);
        if (!json_is_string(ct) || json_string_length(ct) == 0)
            return bad(c, MOEQ_ERR_FORMAT, where, "'content' must be a non-empty string%s", NULL);
        added *d = &t->add[t->nadd++];
        if (!(d->content = jdup(ct, &d->len))) return nomem(c);
        d->id = (int32_t)json_integer_value(id);
        d->special = jbool(a, "special", 0);
        d->lstrip = jbool(a, "lstrip", 0);
        d->rstrip = jbool(a, "rstrip", 0);
        d->single_word = jbool(a, "single_word", 0);
        d->normalized = jbool(a, "normalized", !d->special);
        if ((st = set_id_token(c, d->id, d->content, d->len))) return st;
        t->id_special[d->id] = (uint8_t)d->special;
    }
    /* Normalized added tokens are matched after normalization, so their own text is
     * normalized first (AddedVocabulary::refresh_added_tokens). */
    for (size_t i = 0; i < t->nadd; i++) {
        added *d = &t->add[i];
        if (!d->normalized || !t->nnorm) {
            if (!(d->match = malloc(d->len + 1))) return nomem(c);
            memcpy(d->match, d->content, d->len + 1);
            d->mlen = d->len;
            continue;
        }
        buf b = {0};
        int first = 1;
        if ((st = normalize(t, d->content, d->len, &b, &first, c->err))) { free(b.p); return st; }
        d->match = b.p ? b.p : calloc(1, 1);
        d->mlen = b.n;
        if (!d->match) return nomem(c);
        /* tokenizers 0.23 decodes a normalized added token as its normalized text (measured:
         * Prepend+Replace turns "[MARK]" into "\u2581[MARK]", decoded " [MARK]") */
        if ((st = set_id_token(c, d->id, d->match, d->mlen))) return st;
    }
    if ((st = build_set(c, &t->raw_set, 0)) || (st = build_set(c, &t->norm_set, 1))) return st;
    return MOEQ_OK;
}

static moeq_status load_model(lctx *c, json_t *m)
{
    moeq_tokenizer *t = c->t;
    moeq_status st;
    if (!json_is_object(m)) return bad(c, MOEQ_ERR_FORMAT, "model", "missing or not an object%s", NULL);
    json_t *ty = json_object_get(m, "type");
    if (ty && !json_is_string(ty)) return bad(c, MOEQ_ERR_FORMAT, "model.type", "not a string%s", NULL);
    if (ty && strcmp(json_string_value(ty), "BPE"))
        return bad(c, MOEQ_ERR_UNSUPPORTED, "model", "unsupported model type '%s' (only BPE)", json_string_value(ty));
    json_t *vocab = json_object_get(m, "vocab"), *merges = json_object_get(m, "merges");
    if (!json_is_object(vocab)) return bad(c, MOEQ_ERR_FORMAT, "model.vocab", "missing or not an object%s", NULL);
    json_t *drop = json_object_get(m, "dropout");
    if (drop && !json_is_null(drop) && !(json_is_number(drop) && json_number_value(drop) == 0.0))
        return bad(c, MOEQ_ERR_UNSUPPORTED, "model.dropout", "BPE dropout is random; moeq supports null or 0%s", NULL);
    t->fuse_unk = jbool(m, "fuse_unk", 0);
    t->byte_fallback = jbool(m, "byte_fallback", 0);
    t->ignore_merges = jbool(m, "ignore_merges", 0);
    json_t *cp = json_object_get(m, "continuing_subword_prefix"), *ew = json_object_get(m, "end_of_word_suffix");
    if (json_is_string(cp) && !(t->cont_prefix = jdup(cp, &t->cp_len))) return nomem(c);
    if (json_is_string(ew) && !(t->eow_suffix = jdup(ew, &t->eow_len))) return nomem(c);
    if (smap_init(&t->vocab, json_object_size(vocab) + 16)) return nomem(c);
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= INT32_MAX)
            return bad(c, MOEQ_ERR_FORMAT, "model.vocab", "token '%s' has an id that is not an integer in [0, 2^31-1)", key);
        size_t kl = strlen(key);
        if (smap_put(&t->vocab, key, kl, (int32_t)json_integer_value(val)) < 0) return nomem(c);
        if ((st = set_id_token(c, json_integer_value(val), key, kl))) return st;
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_ids[b] = smap_get(&t->vocab, name, 6);
    }
    t->unk_id = -1;
    json_t *unk = json_object_get(m, "unk_token");
    if (json_is_string(unk)) {
        t->unk_id = smap_get(&t->vocab, json_string_value(unk), json_string_length(unk));
        if (t->unk_id < 0) return bad(c, MOEQ_ERR_FORMAT, "model.unk_token", "'%s' is not in the vocabulary", json_string_value(unk));
    }
    size_t nm = json_is_array(merges) ? json_array_size(merges) : 0;
    if (merges && !json_is_array(merges)) return bad(c, MOEQ_ERR_FORMAT, "model.merges", "not an array%s", NULL);
    /* "merge_ranks" (moeq's, not a tokenizers key): the rank of each merge, where merges may
     * share one and the leftmost pair of the lowest rank goes first. The tokenizer rebuilt from
     * a SentencePiece GGUF (formats/gguf_tokenizer.c) gives tokens of equal score one rank, as
     * llama.cpp's SPM merges them leftmost first. Without it, merge i has rank i. */
    json_t *ranks = json_object_get(m, "merge_ranks");
    if (ranks && !(json_is_array(ranks) && json_array_size(ranks) == nm))
        return bad(c, MOEQ_ERR_FORMAT, "model.merge_ranks", "must be an array of one rank per merge%s", NULL);
    size_t cap = 16;
    while (cap < nm * 2 + 2) cap *= 2;
    t->merges.cap = cap;
    t->merges.key = calloc(cap, sizeof *t->merges.key);
    t->merges.rank = malloc(cap * sizeof *t->merges.rank);
    t->merges.id = malloc(cap * sizeof *t->merges.id);
    if (!t->merges.key || !t->merges.rank || !t->merges.id) return nomem(c);
    for (size_t i = 0; i < cap; i++) t->merges.rank[i] = -1;
    buf cat = {0};
    char where[64];
    for (size_t i = 0; i < nm; i++) {
        json_t *e = json_array_get(merges, i);
        const char *a, *b;
        size_t al, bl;
        snprintf(where, sizeof where, "model.merges[%zu]", i);
        if (json_is_string(e)) { /* "a b": exactly one space (tokenizers' legacy form) */
            a = json_string_value(e);
            const char *sp = memchr(a, ' ', json_string_length(e));
            if (!sp || memchr(sp + 1, ' ', json_string_length(e) - (size_t)(sp + 1 - a))) {
                free(cat.p);
                return bad(c, MOEQ_ERR_FORMAT, where, "merge '%s' is not two tokens separated by one space", a);
            }
            al = (size_t)(sp - a);
            b = sp + 1;
            bl = json_string_length(e) - al - 1;
        } else if (json_is_array(e) && json_array_size(e) == 2 && json_is_string(json_array_get(e, 0)) &&
                   json_is_string(json_array_get(e, 1))) {
            a = json_string_value(json_array_get(e, 0));
            al = json_string_length(json_array_get(e, 0));
            b = json_string_value(json_array_get(e, 1));
            bl = json_string_length(json_array_get(e, 1));
        } else {
            free(cat.p);
            return bad(c, MOEQ_ERR_FORMAT, where, "a merge is \"a b\" or [\"a\", \"b\"]%s", NULL);
        }
        int32_t ia = smap_get(&t->vocab, a, al), ib = smap_get(&t->vocab, b, bl);
        cat.n = 0;
        if (buf_add(&cat, a, al) || buf_add(&cat, b + (t->cont_prefix && bl >= t->cp_len && !memcmp(b, t->cont_prefix, t->cp_len) ? t->cp_len : 0),
                                            bl - (t->cont_prefix && bl >= t->cp_len && !memcmp(b, t->cont_prefix, t->cp_len) ? t->cp_len : 0))) {
            free(cat.p);
            return nomem(c);
        }
        int32_t inew = smap_get(&t->vocab, cat.p, cat.n);
        if (ia < 0 || ib < 0 || inew < 0) {
            char what[200];
            snprintf(what, sizeof what, "token '%.60s' of the merge is not in the vocabulary",
                     ia < 0 ? a : ib < 0 ? b : cat.p);
            free(cat.p);
            return bad(c, MOEQ_ERR_FORMAT, where, "%s", what);
        }
        uint64_t k = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
        size_t j = mhash(k) & (cap - 1);
        while (t->merges.rank[j] >= 0 && t->merges.key[j] != k) j = (j + 1) & (cap - 1);
        /* tokenizers collects the merges into a HashMap: a repeated pair keeps the last rank */
        t->merges.key[j] = k;
        json_t *rk = ranks ? json_array_get(ranks, i) : NULL;
        if (rk && !(json_is_integer(rk) && json_integer_value(rk) >= 0 && json_integer_value(rk) < INT32_MAX)) {
            free(cat.p);
            return bad(c, MOEQ_ERR_FORMAT, where, "merge_ranks entry is not an integer in [0, 2^31-1)%s", NULL);
        }
        t->merges.rank[j] = rk ? (int32_t)json_integer_value(rk) : (int32_t)i;
        t->merges.id[j] = inew;
    }
    free(cat.p);
    /* SentencePiece-style vocabularies (Metaspace without split, Llama's legacy normalizers) run
     * BPE on whole lines. When no merge result holds U+2581 after its first char, no symbol can
     * ever span the boundary before a U+2581, so cutting the word there gives the same ids and
     * lets the word cache work. Needs U+2581 in the vocabulary (so no unk fuses across it), and
     * neither ignore_merges (a whole-word lookup) nor prefixes/suffixes. */
    t->meta_safe = smap_get(&t->vocab, "\xe2\x96\x81", 3) >= 0 && !t->ignore_merges && !t->cont_prefix && !t->eow_suffix;
    for (size_t j = 0; t->meta_safe && j < cap; j++) {
        if (t->merges.rank[j] < 0) continue;
        const char *tok = t->id_tok[t->merges.id[j]];
        size_t tl = t->id_len[t->merges.id[j]];
        for (size_t k = 1; k + 3 <= tl; k++)
            if (!memcmp(tok + k, "\xe2\x96\x81", 3)) { t->meta_safe = 0; break; }
    }
    return MOEQ_OK;
}

static void byte_level_tables(moeq_tokenizer *t)
{
    /* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the rest to 256+n. */
    int n = 0;
    for (int i = 0; i < 512; i++) t->bl_dec[i] = -1;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        uint32_t cp = keep ? (uint32_t)b : (uint32_t)(256 + n++);
        t->bl_len[b] = (uint8_t)u8enc(cp, t->bl_enc[b]);
        t->bl_dec[cp] = (int16_t)b;
    }
}

moeq_status moeq_tokenizer_parse(const char *json, size_t len, const char *label, moeq_tokenizer **out,
                                 moeq_error *err)
{
    *out = NULL;
    if (!label) label = "tokenizer.json";
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_ALLOW_NUL, &je);
    if (!root)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: not valid JSON: %s at line %d column %d (byte %d)", label, je.text,
                         je.line, je.column, je.position);
    moeq_tokenizer *t = calloc(1, sizeof *t);
    lctx c = {t, err, label};
    moeq_status st = MOEQ_OK;
    if (!t || !(t->label = strdup(label))) { st = nomem(&c); goto done; }
    if (!json_is_object(root)) { st = bad(&c, MOEQ_ERR_FORMAT, "(top level)", "not a JSON object%s", NULL); goto done; }
    byte_level_tables(t);
    char why[300];
    /* Rust's char::is_whitespace, regex \w and char::is_numeric, used by Strip, added-token
     * lstrip/rstrip/single_word and Digits. */
    static const char ws[] = "\\p{White_Space}", word[] = "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]",
                      num[] = "\\p{N}";
    if (!(t->ws_re = re_compile(ws, sizeof ws - 1, 0, why, sizeof why)) ||
        !(t->word_re = re_compile(word, sizeof word - 1, 0, why, sizeof why)) ||
        !(t->num_re = re_compile(num, sizeof num - 1, 0, why, sizeof why))) {
        st = moeq_fail(err, MOEQ_ERR_DEPENDENCY, "%s: %s", label, why);
        goto done;
    }
    if ((st = load_model(&c, json_object_get(root, "model")))) goto done;
    if ((st = load_normalizer(&c, json_object_get(root, "normalizer"), "normalizer"))) goto done;
    if ((st = load_pretok(&c, json_object_get(root, "pre_tokenizer"), "pre_tokenizer"))) goto done;
    if ((st = load_post(&c, json_object_get(root, "post_processor"), "post_processor"))) goto done;
    if ((st = load_decoder(&c, json_object_get(root, "decoder"), "decoder"))) goto done;
    if ((st = load_added(&c, json_object_get(root, "added_tokens")))) goto done;
done:
    json_decref(root);
    if (st) { moeq_tokenizer_free(t); return st; }
    *out = t;
    return MOEQ_OK;
}

moeq_status moeq_tokenizer_load(const char *path, moeq_tokenizer **out, moeq_error *err)
{
    *out = NULL;
    struct stat sb;
    char file[4096];
    if (stat(path, &sb) != 0) return moeq_fail(err, MOEQ_ERR_NOT_FOUND, "%s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) {
        snprintf(file, sizeof file, "%s/tokenizer.json", path);
        if (stat(file, &sb) != 0)
            return moeq_fail(err, MOEQ_ERR_NOT_FOUND, "%s: no tokenizer.json in the model directory", path);
    } else if (moeq_gguf_is_path(path)) {   /* a GGUF's tokenizer (formats/gguf_tokenizer.c) */
        moeq_gguf *g = NULL;
        moeq_status st = moeq_gguf_open(path, &g, err);
        if (st == MOEQ_OK) st = moeq_gguf_tokenizer(g, out, err);
        moeq_gguf_close(g);
        return st;
    } else
        snprintf(file, sizeof file, "%s", path);
    FILE *f = fopen(file, "rb");
    if (!f) return moeq_fail(err, MOEQ_ERR_IO, "%s: %s", file, strerror(errno));
    size_t n = (size_t)sb.st_size;
    char *p = malloc(n + 1);
    if (!p) { fclose(f); return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", file); }
    size_t got = fread(p, 1, n, f);
    fclose(f);
    if (got != n) { free(p); return moeq_fail(err, MOEQ_ERR_IO, "%s: short read", file); }
    moeq_status st = moeq_tokenizer_parse(p, n, file, out, err);
    free(p);
    return st;
}

static void free_ops(op *o, int n)
{
    for (int i = 0; i < n; i++) {
        pcre2_code_free(o[i].re);
        free(o[i].str);
        free(o[i].content);
    }
    free(o);
}

void moeq_tokenizer_free(moeq_tokenizer *t)
{
    if (!t) return;
    free(t->label);
    smap_free(&t->vocab);
    for (int64_t i = 0; i < t->nid; i++) free(t->id_tok[i]);
    free(t->id_tok);
    free(t->id_len);
    free(t->id_special);
    free(t->merges.key);
    free(t->merges.rank);
    free(t->merges.id);
    free(t->cont_prefix);
    free(t->eow_suffix);
    free_ops(t->norm, t->nnorm);
    free_ops(t->pre, t->npre);
    free_ops(t->dec, t->ndec);
    for (size_t i = 0; i < t->nadd; i++) { free(t->add[i].content); free(t->add[i].match); }
    free(t->add);
    free(t->raw_set.idx);
    free(t->norm_set.idx);
    free(t->tmpl_pre);
    free(t->tmpl_post);
    pcre2_code_free(t->ws_re);
    pcre2_code_free(t->word_re);
    pcre2_code_free(t->num_re);
    free(t);
}

int64_t moeq_tokenizer_vocab_size(const moeq_tokenizer *t) { return t->nid; }

int32_t moeq_tokenizer_token_id(const moeq_tokenizer *t, const char *token)
{
    size_t l = strlen(token);
    for (size_t i = 0; i < t->nadd; i++)
        if (t->add[i].len == l && !memcmp(t->add[i].content, token, l)) return t->add[i].id;
    return smap_get(&t->vocab, token, l);
}

/* ---------- encoding ---------- */

typedef struct sym {
    int32_t id;
    int prev, next;
    size_t len;
} sym;

typedef struct hent {
    uint64_t key; /* rank << 32 | pos: lowest rank first, then leftmost, in one compare */
    int32_t id;
} hent;

#define HKEY(rank, pos) (((uint64_t)(uint32_t)(rank) << 32) | (uint32_t)(pos))

typedef struct ectx {
    const moeq_tokenizer *t;
    moeq_error *err;
    pcre2_match_data *md;
    pcre2_match_context *mc;
    pcre2_jit_stack *js;
    int32_t *ids;
    int64_t n, cap;
    sym *syms;
    size_t nsym_cap;
    hent *heap;
    size_t heap_cap;
    buf key;
    smap cache;          /* word -> entry, as tokenizers' BPE cache; per call, so no locking */
    int32_t *cache_ent;  /* entry e: ids cache_ids[cache_ent[2e] .. + cache_ent[2e+1]] */
    int32_t *cache_ids;
    size_t ncache, cache_ent_cap, ncache_ids, cache_ids_cap;
} ectx;

#define CACHE_WORD_MAX 64
#define CACHE_ENTRIES 65536

static moeq_status enomem(ectx *c) { return moeq_fail(c->err, MOEQ_ERR_NOMEM, "tokenize: out of memory"); }

static moeq_status emit(ectx *c, int32_t id)
{
    if (c->n == c->cap) {
        int64_t cap = c->cap ? c->cap * 2 : 1024;
        int32_t *p = realloc(c->ids, (size_t)cap * sizeof *p);
        if (!p) return enomem(c);
        c->ids = p;
        c->cap = cap;
    }
    c->ids[c->n++] = id;
    return MOEQ_OK;
}

/* Anchored single-char test: length of the char at off if re matches it, else 0. */
static size_t char_is(const moeq_tokenizer *t, const pcre2_code *re, const char *s, size_t len, size_t off,
                      pcre2_match_data *md)
{
    (void)t;
    if (off >= len) return 0;
    int rc = pcre2_match(re, (PCRE2_SPTR)s, len, off, PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, md, NULL);
    return rc >= 0 ? u8len((uint8_t)s[off]) : 0;
}

static size_t prev_char(const char *s, size_t off)
{
    do off--; while (off > 0 && ((uint8_t)s[off] & 0xC0) == 0x80);
    return off;
}

static int heap_less(const hent *a, const hent *b) { return a->key < b->key; }

static moeq_status heap_push(ectx *c, size_t *n, hent e)
{
    if (*n == c->heap_cap) {
        size_t cap = c->heap_cap ? c->heap_cap * 2 : 256;
        hent *h = realloc(c->heap, cap * sizeof *h);
        if (!h) return enomem(c);
        c->heap = h;
        c->heap_cap = cap;
    }
    size_t i = (*n)++;
    c->heap[i] = e;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&c->heap[i], &c->heap[p])) break;
        hent x = c->heap[i]; c->heap[i] = c->heap[p]; c->heap[p] = x;
        i = p;
    }
    return MOEQ_OK;
}

static void sift_down(hent *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && heap_less(&h[l], &h[m])) m = l;
        if (r < n && heap_less(&h[r], &h[m])) m = r;
        if (m == i) return;
        hent x = h[i]; h[i] = h[m]; h[m] = x;
        i = m;
    }
}

static void heapify(hent *h, size_t n)
{
    for (size_t i = n / 2; i-- > 0;) sift_down(h, n, i);
}

static hent heap_pop(ectx *c, size_t *n)
{
    hent top = c->heap[0];
    c->heap[0] = c->heap[--(*n)];
    sift_down(c->heap, *n, 0);
    return top;
}

static moeq_status add_sym(ectx *c, int *ns, int32_t id, size_t len)
{
    if ((size_t)*ns == c->nsym_cap) {
        size_t cap = c->nsym_cap ? c->nsym_cap * 2 : 256;
        sym *s = realloc(c->syms, cap * sizeof *s);
        if (!s) return enomem(c);
        c->syms = s;
        c->nsym_cap = cap;
    }
    sym *s = &c->syms[*ns];
    s->id = id;
    s->len = len;
    s->prev = *ns - 1;
    s->next = *ns + 1;
    (*ns)++;
    return MOEQ_OK;
}

static moeq_status bpe_word_uncached(ectx *c, const char *s, size_t len);
static moeq_status bpe_word_piece(ectx *c, const char *s, size_t len);

/* BPE::tokenize on one pre-token through a cache of short words (the ids do not depend on it). */
static moeq_status bpe_word(ectx *c, const char *s, size_t len)
{
    moeq_status st;
    if (len > CACHE_WORD_MAX && c->t->meta_safe) {
        size_t a = 0;
        for (size_t i = 1; i + 3 <= len; i++)
            if (!memcmp(s + i, "\xe2\x96\x81", 3)) {
                if ((st = bpe_word_piece(c, s + a, i - a))) return st;
                a = i;
            }
        return bpe_word_piece(c, s + a, len - a);
    }
    return bpe_word_piece(c, s, len);
}

static moeq_status bpe_word_piece(ectx *c, const char *s, size_t len)
{
    moeq_status st;
    if (len > CACHE_WORD_MAX) return bpe_word_uncached(c, s, len);
    int32_t e = smap_get(&c->cache, s, len);
    if (e >= 0) {
        for (int32_t k = 0; k < c->cache_ent[2 * e + 1]; k++)
            if ((st = emit(c, c->cache_ids[c->cache_ent[2 * e] + k]))) return st;
        return MOEQ_OK;
    }
    int64_t before = c->n;
    if ((st = bpe_word_uncached(c, s, len))) return st;
    if (c->ncache >= CACHE_ENTRIES) return MOEQ_OK;
    size_t cnt = (size_t)(c->n - before);
    if (c->ncache_ids + cnt > c->cache_ids_cap) {
        size_t cap = c->cache_ids_cap ? c->cache_ids_cap * 2 : 4096;
        while (cap < c->ncache_ids + cnt) cap *= 2;
        int32_t *p = realloc(c->cache_ids, cap * sizeof *p);
        if (!p) return enomem(c);
        c->cache_ids = p;
        c->cache_ids_cap = cap;
    }
    if (c->ncache * 2 + 2 > c->cache_ent_cap) {
        size_t cap = c->cache_ent_cap ? c->cache_ent_cap * 2 : 4096;
        int32_t *p = realloc(c->cache_ent, cap * sizeof *p);
        if (!p) return enomem(c);
        c->cache_ent = p;
        c->cache_ent_cap = cap;
    }
    if ((!c->cache.cap && smap_init(&c->cache, 1024)) || smap_put(&c->cache, s, len, (int32_t)c->ncache) < 0)
        return enomem(c);
    c->cache_ent[2 * c->ncache] = (int32_t)c->ncache_ids;
    c->cache_ent[2 * c->ncache + 1] = (int32_t)cnt;
    if (cnt) memcpy(c->cache_ids + c->ncache_ids, c->ids + before, cnt * sizeof *c->ids);
    c->ncache_ids += cnt;
    c->ncache++;
    return MOEQ_OK;
}

/* tokenizers' Word::merge_all without dropout on one pre-token. */
static moeq_status bpe_word_uncached(ectx *c, const char *s, size_t len)
{
    const moeq_tokenizer *t = c->t;
    moeq_status st;
    if (t->ignore_merges) {
        int32_t id = smap_get(&t->vocab, s, len);
        if (id >= 0) return emit(c, id);
    }
    int ns = 0;
    int32_t unk = -1;
    size_t unk_len = 0;
    for (size_t i = 0; i < len;) {
        size_t cl = u8len((uint8_t)s[i]);
        if (i + cl > len) cl = len - i;
        const char *k = s + i;
        size_t kl = cl;
        if ((t->cont_prefix && i > 0) || (t->eow_suffix && i + cl == len)) {
            c->key.n = 0;
            if ((i > 0 && t->cont_prefix && buf_add(&c->key, t->cont_prefix, t->cp_len)) || buf_add(&c->key, s + i, cl) ||
                (i + cl == len && t->eow_suffix && buf_add(&c->key, t->eow_suffix, t->eow_len)))
                return enomem(c);
            k = c->key.p;
            kl = c->key.n;
        }
        int32_t id = smap_get(&t->vocab, k, kl);
        if (id >= 0) {
            if (unk >= 0) {
                if ((st = add_sym(c, &ns, unk, unk_len))) return st;
                unk = -1;
            }
            if ((st = add_sym(c, &ns, id, cl))) return st;
        } else {
            int done = 0;
            if (t->byte_fallback) {
                int all = 1;
                for (size_t j = 0; j < cl; j++) all &= t->byte_ids[(uint8_t)s[i + j]] >= 0;
                if (all) {
                    /* as tokenizers: a pending unk is not flushed before byte tokens */
                    for (size_t j = 0; j < cl; j++)
                        if ((st = add_sym(c, &ns, t->byte_ids[(uint8_t)s[i + j]], 1))) return st;
                    done = 1;
                }
            }
            if (!done && t->unk_id >= 0) {
                if (unk >= 0 && t->fuse_unk) unk_len += cl;
                else {
                    if (unk >= 0 && (st = add_sym(c, &ns, unk, unk_len))) return st;
                    unk = t->unk_id;
                    unk_len = cl;
                }
            }
        }
        i += cl;
    }
    if (unk >= 0 && (st = add_sym(c, &ns, unk, unk_len))) return st;
    if (ns == 0) return MOEQ_OK;
    c->syms[ns - 1].next = -1;
    size_t nh = 0;
    if ((size_t)ns > c->heap_cap) {
        hent *h = realloc(c->heap, (size_t)ns * sizeof *h);
        if (!h) return enomem(c);
        c->heap = h;
        c->heap_cap = (size_t)ns;
    }
    for (int i = 0; i + 1 < ns; i++) {
        int32_t r, id;
        if (mmap_get(&t->merges, c->syms[i].id, c->syms[i + 1].id, &r, &id)) c->heap[nh++] = (hent){HKEY(r, i), id};
    }
    heapify(c->heap, nh); /* O(n) instead of n pushes: long words (Metaspace without split) */
    while (nh) {
        hent top = heap_pop(c, &nh);
        int pos = (int)(uint32_t)top.key;
        sym *a = &c->syms[pos];
        if (a->len == 0 || a->next == -1) continue;
        int nx = a->next;
        sym right = c->syms[nx];
        int32_t r, id;
        if (!mmap_get(&t->merges, a->id, right.id, &r, &id) || id != top.id) continue; /* stale */
        a->id = top.id;
        a->len += right.len;
        a->next = right.next;
        c->syms[nx].len = 0;
        if (right.next > -1 && right.next < ns) c->syms[right.next].prev = pos;
        if (a->prev >= 0 && mmap_get(&t->merges, c->syms[a->prev].id, a->id, &r, &id) &&
            (st = heap_push(c, &nh, (hent){HKEY(r, a->prev), id})))
            return st;
        a = &c->syms[pos];
        if (a->next >= 0 && a->next < ns && mmap_get(&t->merges, a->id, c->syms[a->next].id, &r, &id) &&
            (st = heap_push(c, &nh, (hent){HKEY(r, pos), id})))
            return st;
    }
    for (int i = 0; i < ns; i++)
        if (c->syms[i].len && (st = emit(c, c->syms[i].id))) return st;
    return MOEQ_OK;
}

typedef struct seg {
    size_t a, b;
    int m;
} seg;

typedef struct segv {
    seg *v;
    size_t n, cap;
} segv;

static int segv_push(segv *s, size_t a, size_t b, int m)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 32;
        seg *p = realloc(s->v, cap * sizeof *p);
        if (!p) return -1;
        s->v = p;
        s->cap = cap;
    }
    s->v[s->n++] = (seg){a, b, m};
    return 0;
}

/* Pattern::find_matches: (offsets, is_match) covering the whole string. */
static moeq_status find_matches(ectx *c, const pcre2_code *re, const char *s, size_t len, segv *out)
{
    out->n = 0;
    if (len == 0) return segv_push(out, 0, 0, 0) ? enomem(c) : MOEQ_OK;
    size_t prev = 0, off = 0;
    while (off <= len) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, len, off, PCRE2_NO_UTF_CHECK, c->md, c->mc);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            char msg[160];
            pcre2_get_error_message(rc, (PCRE2_UCHAR *)msg, sizeof msg);
            return moeq_fail(c->err, MOEQ_ERR_DEPENDENCY, "tokenize: PCRE2 match failed: %s", msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t a = ov[0], b = ov[1];
        if (prev != a && segv_push(out, prev, a, 0)) return enomem(c);
        if (segv_push(out, a, b, 1)) return enomem(c);
        prev = b;
        if (b == a) {
            if (b >= len) break;
            off = b + u8len((uint8_t)s[b]);
        } else
            off = b;
    }
    if (prev != len && segv_push(out, prev, len, 0)) return enomem(c);
    return MOEQ_OK;
}

/* NormalizedString::split's behaviours applied to find_matches' output, in place. */
static void apply_behavior(segv *sv, int behavior, int invert)
{
    if (invert)
        for (size_t i = 0; i < sv->n; i++) sv->v[i].m = !sv->v[i].m;
    size_t k = 0;
    int prevm = 0;
    switch (behavior) {
    case B_ISOLATED: return;
    case B_REMOVED:
        for (size_t i = 0; i < sv->n; i++)
            if (!sv->v[i].m) sv->v[k++] = sv->v[i];
        sv->n = k;
        return;
    case B_PREV:
        for (size_t i = 0; i < sv->n; i++) {
            seg g = sv->v[i];
            if (g.m && !prevm && k > 0) sv->v[k - 1].b = g.b;
            else sv->v[k++] = g;
            prevm = g.m;
        }
        sv->n = k;
        return;
    case B_CONTIG:
        for (size_t i = 0; i < sv->n; i++) {
            seg g = sv->v[i];
            if (g.m == prevm && k > 0) sv->v[k - 1].b = g.b;
            else sv->v[k++] = g;
            prevm = g.m;
        }
        sv->n = k;
        return;
    case B_NEXT: /* folds from the right */
        k = sv->n;
        for (size_t i = sv->n; i-- > 0;) {
            seg g = sv->v[i];
            if (g.m && !prevm && k < sv->n) sv->v[k].a = g.a;
            else sv->v[--k] = g;
            prevm = g.m;
        }
        memmove(sv->v, sv->v + k, (sv->n - k) * sizeof *sv->v);
        sv->n -= k;
        return;
    }
}

static moeq_status pretok(ectx *c, int opi, const char *s, size_t len, int first);

static moeq_status recurse_segs(ectx *c, int opi, const char *s, segv *sv, int first)
{
    moeq_status st;
    for (size_t i = 0; i < sv->n; i++) {
        seg g = sv->v[i];
        if (g.b > g.a && (st = pretok(c, opi + 1, s + g.a, g.b - g.a, first && g.a == 0))) return st;
    }
    return MOEQ_OK;
}

/* Pre-tokenizer opi on one piece, then the next ones on each of its parts; the BPE model at
 * the end. first: the piece starts at offset 0 of the original text (Metaspace "first"). */
static moeq_status pretok(ectx *c, int opi, const char *s, size_t len, int first)
{
    const moeq_tokenizer *t = c->t;
    if (len == 0) return MOEQ_OK;
    if (opi == t->npre) return bpe_word(c, s, len);
    const op *o = &t->pre[opi];
    segv sv = {0};
    buf b = {0};
    moeq_status st = MOEQ_OK;
    switch (o->kind) {
    case P_BYTELEVEL: {
        const char *src = s;
        size_t n = len;
        buf pre = {0};
        if (o->add_prefix_space && s[0] != ' ') {
            if (buf_add(&pre, " ", 1) || buf_add(&pre, s, len)) { free(pre.p); return enomem(c); }
            src = pre.p;
            n = pre.n;
        }
        if (o->use_regex) st = find_matches(c, o->re, src, n, &sv);
        else if (segv_push(&sv, 0, n, 0)) st = enomem(c);
        for (size_t i = 0; !st && i < sv.n; i++) {
            seg g = sv.v[i];
            if (g.b == g.a) continue;
            b.n = 0;
            for (size_t j = g.a; j < g.b; j++)
                if (buf_add(&b, t->bl_enc[(uint8_t)src[j]], t->bl_len[(uint8_t)src[j]])) { st = enomem(c); break; }
            if (!st) st = pretok(c, opi + 1, b.p, b.n, first && g.a == 0);
        }
        free(pre.p);
        break;
    }
    case P_SPLIT:
        if (!(st = find_matches(c, o->re, s, len, &sv))) {
            apply_behavior(&sv, o->behavior, o->invert);
            st = recurse_segs(c, opi, s, &sv, first);
        }
        break;
    case P_DIGITS:
        if (!(st = find_matches(c, t->num_re, s, len, &sv))) {
            apply_behavior(&sv, o->individual ? B_ISOLATED : B_CONTIG, 0);
            st = recurse_segs(c, opi, s, &sv, first);
        }
        break;
    case P_METASPACE: {
        int pre = o->prepend == PS_ALWAYS || (o->prepend == PS_FIRST && first);
        /* the prefix check is on the text after spaces became the replacement */
        int starts = (s[0] == ' ') || (len >= o->slen && !memcmp(s, o->str, o->slen));
        if (pre && !starts && buf_add(&b, o->str, o->slen)) { st = enomem(c); break; }
        for (size_t i = 0; i < len; i++) {
            int r = s[i] == ' ' ? buf_add(&b, o->str, o->slen) : buf_add(&b, s + i, 1);
            if (r) { st = enomem(c); break; }
        }
        if (st) break;
        if (!o->split) { st = pretok(c, opi + 1, b.p, b.n, first); break; }
        /* split on each replacement char, MergedWithNext */
        sv.n = 0;
        size_t prev = 0;
        for (size_t i = 0; i < b.n;) {
            size_t cl = u8len((uint8_t)b.p[i]);
            if (cl == o->slen && !memcmp(b.p + i, o->str, cl)) {
                if (prev != i && segv_push(&sv, prev, i, 0)) { st = enomem(c); break; }
                if (segv_push(&sv, i, i + cl, 1)) { st = enomem(c); break; }
                prev = i + cl;
            }
            i += cl;
        }
        if (!st && prev != b.n && segv_push(&sv, prev, b.n, 0)) st = enomem(c);
        if (!st) {
            apply_behavior(&sv, B_NEXT, 0);
            st = recurse_segs(c, opi, b.p, &sv, first);
        }
        break;
    }
    }
    free(sv.v);
    free(b.p);
    return st;
}

/* One normalizer step per op; *first turns 0 when leading text is removed (the piece then no
 * longer starts at original offset 0, which Metaspace "first" looks at). */
static moeq_status normalize(const moeq_tokenizer *t, const char *s, size_t len, buf *out, int *first, moeq_error *err)
{
    buf a = {0}, b = {0};
    moeq_status st = MOEQ_OK;
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md || buf_add(&a, s, len)) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "normalize: out of memory"); goto out; }
    for (int i = 0; i < t->nnorm; i++) {
        const op *o = &t->norm[i];
        b.n = 0;
        if (buf_reserve(&b, 0)) goto oom;
        switch (o->kind) {
        case N_NFC: case N_NFKC: case N_NFD: case N_NFKD: {
            if (a.n == 0) { b.p[0] = 0; break; }
            int opt = UTF8PROC_STABLE | (o->kind == N_NFC || o->kind == N_NFKC ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE) |
                      (o->kind == N_NFKC || o->kind == N_NFKD ? UTF8PROC_COMPAT : 0);
            utf8proc_uint8_t *r = NULL;
            utf8proc_ssize_t rl = utf8proc_map((const utf8proc_uint8_t *)a.p, (utf8proc_ssize_t)a.n, &r, opt);
            if (rl < 0) {
                st = moeq_fail(err, MOEQ_ERR_DEPENDENCY, "normalize: utf8proc: %s", utf8proc_errmsg(rl));
                goto out;
            }
            int e = buf_add(&b, r, (size_t)rl);
            free(r);
            if (e) goto oom;
            break;
        }
        case N_PREPEND:
            if (a.n && (buf_add(&b, o->str, o->slen) || buf_add(&b, a.p, a.n))) goto oom;
            break;
        case N_REPLACE: {
            size_t off = 0, prev = 0;
            while (off <= a.n) {
                int rc = pcre2_match(o->re, (PCRE2_SPTR)a.p, a.n, off, PCRE2_NO_UTF_CHECK, md, NULL);
                if (rc < 0) break;
                PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
                if (ov[1] == ov[0]) { /* empty matches replace nothing */
                    if (ov[0] >= a.n) break;
                    off = ov[0] + u8len((uint8_t)a.p[ov[0]]);
                    continue;
                }
                if (ov[0] == 0 && o->clen == 0) *first = 0;
                if (buf_add(&b, a.p + prev, ov[0] - prev) || buf_add(&b, o->content, o->clen)) goto oom;
                prev = off = ov[1];
            }
            if (buf_add(&b, a.p + prev, a.n - prev)) goto oom;
            break;
        }
        case N_STRIP: {
            size_t l = 0, r = a.n, k;
            if (o->left)
                while (l < r && (k = char_is(t, t->ws_re, a.p, a.n, l, md))) l += k;
            if (o->right)
                while (r > l) {
                    size_t p = prev_char(a.p, r);
                    if (!char_is(t, t->ws_re, a.p, a.n, p, md)) break;
                    r = p;
                }
            if (l > 0 && r > l) *first = 0;
            if (buf_add(&b, a.p + l, r - l)) goto oom;
            break;
        }
        }
        buf x = a; a = b; b = x;
    }
    free(b.p);
    free(out->p);
    *out = a;
    pcre2_match_data_free(md);
    return MOEQ_OK;
oom:
    st = moeq_fail(err, MOEQ_ERR_NOMEM, "normalize: out of memory");
out:
    free(a.p);
    free(b.p);
    pcre2_match_data_free(md);
    return st;
}

/* AddedVocabulary::find_matches: leftmost-longest matches of one set, with single_word,
 * lstrip and rstrip; gaps are text pieces. */
static moeq_status split_added(ectx *c, const aset *set, const char *s, size_t len, int first, int level);

static moeq_status text_piece(ectx *c, const char *s, size_t len, int first, int level)
{
    const moeq_tokenizer *t = c->t;
    if (len == 0) return MOEQ_OK;
    if (level == 0) {
        buf nb = {0};
        moeq_status st = normalize(t, s, len, &nb, &first, c->err);
        if (!st) st = split_added(c, &t->norm_set, nb.p ? nb.p : "", nb.n, first, 1);
        free(nb.p);
        return st;
    }
    return pretok(c, 0, s, len, first);
}

static moeq_status split_added(ectx *c, const aset *set, const char *s, size_t len, int first, int level)
{
    const moeq_tokenizer *t = c->t;
    moeq_status st;
    size_t start_off = 0;
    if (set->off[256] == 0) return text_piece(c, s, len, first, level);
    for (size_t i = 0; i < len;) {
        uint8_t fb = (uint8_t)s[i];
        const added *hit = NULL;
        for (size_t j = set->off[fb]; j < set->off[fb + 1]; j++) {
            const added *d = &t->add[set->idx[j]];
            if (d->mlen <= len - i && !memcmp(s + i, d->match, d->mlen)) { hit = d; break; }
        }
        if (!hit) { i++; continue; }
        size_t a = i, b = i + hit->mlen;
        i = b; /* the automaton goes on after the match whatever the flags decide */
        if (hit->single_word) {
            int sw = a == 0 || !char_is(t, t->word_re, s, len, prev_char(s, a), c->md);
            int ew = b == len || !char_is(t, t->word_re, s, len, b, c->md);
            if (!sw || !ew) continue;
        }
        if (hit->lstrip) {
            size_t ns = a;
            while (ns > 0) {
                size_t p = prev_char(s, ns);
                if (!char_is(t, t->ws_re, s, len, p, c->md)) break;
                ns = p;
            }
            a = ns > start_off ? ns : start_off;
        }
        if (hit->rstrip) {
            size_t k;
            while (b < len && (k = char_is(t, t->ws_re, s, len, b, c->md))) b += k;
        }
        if (start_off < a && (st = text_piece(c, s + start_off, a - start_off, first && start_off == 0, level))) return st;
        if ((st = emit(c, hit->id))) return st;
        start_off = b; /* the scan goes on at the match's end even when rstrip took more */
    }
    if (start_off < len) return text_piece(c, s + start_off, len - start_off, first && start_off == 0, level);
    return MOEQ_OK;
}

moeq_status moeq_tokenize(const moeq_tokenizer *t, const char *text, size_t len, int add_special, int32_t **ids,
                          int64_t *n, moeq_error *err)
{
    *ids = NULL;
    *n = 0;
    size_t badl, ok = utf8_valid((const uint8_t *)text, len, &badl);
    if (ok != len)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "invalid UTF-8 at byte offset %zu (tokenizers accepts valid UTF-8 only)", ok);
    ectx c = {.t = t, .err = err};
    moeq_status st = MOEQ_OK;
    c.md = pcre2_match_data_create(1, NULL);
    c.mc = pcre2_match_context_create(NULL);
    c.js = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, NULL);
    if (!c.md || !c.mc || !c.js) { st = enomem(&c); goto out; }
    pcre2_jit_stack_assign(c.mc, NULL, c.js);
    if (add_special)
        for (size_t i = 0; i < t->ntmpl_pre && !st; i++) st = emit(&c, t->tmpl_pre[i]);
    if (!st) st = split_added(&c, &t->raw_set, text, len, 1, 0);
    if (add_special)
        for (size_t i = 0; i < t->ntmpl_post && !st; i++) st = emit(&c, t->tmpl_post[i]);
    if (!st && !c.ids && !(c.ids = malloc(sizeof *c.ids))) st = enomem(&c);
out:
    pcre2_match_data_free(c.md);
    pcre2_match_context_free(c.mc);
    pcre2_jit_stack_free(c.js);
    free(c.syms);
    free(c.heap);
    free(c.key.p);
    smap_free(&c.cache);
    free(c.cache_ent);
    free(c.cache_ids);
    if (st) { free(c.ids); return st; }
    *ids = c.ids;
    *n = c.n;
    return MOEQ_OK;
}

moeq_status moeq_tokenize_file(const moeq_tokenizer *t, const char *path, int add_special, int32_t **ids,
                               int64_t *n, moeq_error *err)
{
    *ids = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return moeq_fail(err, errno == ENOENT ? MOEQ_ERR_NOT_FOUND : MOEQ_ERR_IO, "%s: %s", path, strerror(errno));
    buf b = {0};
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (buf_add(&b, chunk, got)) { fclose(f); free(b.p); return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", path); }
    int rerr = ferror(f);
    fclose(f);
    if (rerr) { free(b.p); return moeq_fail(err, MOEQ_ERR_IO, "%s: read error", path); }
    moeq_status st = moeq_tokenize(t, b.p ? b.p : "", b.n, add_special, ids, n, err);
    free(b.p);
    if (st) moeq_error_prefix(err, "%s", path);
    return st;
}

/* ---------- decoding ---------- */

typedef struct tlist {
    buf *v;
    size_t n, cap;
} tlist;

static int tl_push(tlist *l, const char *s, size_t len)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        buf *p = realloc(l->v, cap * sizeof *p);
        if (!p) return -1;
        l->v = p;
        l->cap = cap;
    }
    l->v[l->n] = (buf){0};
    if (buf_add(&l->v[l->n], s, len)) return -1;
    l->n++;
    return 0;
}

static void tl_free(tlist *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i].p);
    free(l->v);
    *l = (tlist){0};
}

static int byte_token(const buf *b, uint8_t *out)
{
    /* u8::from_str_radix(&token[3..5], 16): two hex digits, or '+' and one */
    if (b->n != 6 || memcmp(b->p, "<0x", 3) || b->p[5] != '>') return 0;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char ch = b->p[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
        if (i == 3 && ch == '+') continue;
        if (d < 0) return 0;
        v = v * 16 + d;
    }
    *out = (uint8_t)v;
    return 1;
}

static int flush_bytes(tlist *o, buf *bytes)
{
    if (!bytes->n) return 0;
    size_t bl, ok = utf8_valid((const uint8_t *)bytes->p, bytes->n, &bl);
    int r = 0;
    if (ok == bytes->n) r = tl_push(o, bytes->p, bytes->n);
    else
        for (size_t i = 0; i < bytes->n && !r; i++) r = tl_push(o, "\xEF\xBF\xBD", 3);
    bytes->n = 0;
    return r;
}

static moeq_status decode_op(const moeq_tokenizer *t, const op *o, tlist *in, tlist *o_out, pcre2_match_data *md)
{
    tlist out = {0};
    buf acc = {0};
    int r = 0;
    switch (o->kind) {
    case D_BYTELEVEL: /* all tokens to bytes, then from_utf8_lossy into one token */
        for (size_t i = 0; i < in->n && !r; i++) {
            buf *tk = &in->v[i];
            size_t mark = acc.n, cl;
            int all = 1;
            for (size_t j = 0; j < tk->n && all; j += cl) {
                uint32_t cp = u8dec(tk->p + j, &cl);
                if (cp < 512 && t->bl_dec[cp] >= 0) {
                    uint8_t byte = (uint8_t)t->bl_dec[cp];
                    r |= buf_add(&acc, &byte, 1);
                } else all = 0;
            }
            if (!all) { acc.n = mark; r |= buf_add(&acc, tk->p, tk->n); }
        }
        if (!r) {
            buf l = {0};
            r = lossy_add(&l, acc.p ? acc.p : "", acc.n) || tl_push(&out, l.p ? l.p : "", l.n);
            free(l.p);
        }
        break;
    case D_BYTEFALLBACK:
        for (size_t i = 0; i < in->n && !r; i++) {
            uint8_t byte;
            if (byte_token(&in->v[i], &byte)) r = buf_add(&acc, &byte, 1);
            else r = flush_bytes(&out, &acc) || tl_push(&out, in->v[i].p, in->v[i].n);
        }
        if (!r) r = flush_bytes(&out, &acc);
        break;
    case D_FUSE:
        for (size_t i = 0; i < in->n && !r; i++) r = buf_add(&acc, in->v[i].p, in->v[i].n);
        if (!r) r = tl_push(&out, acc.p ? acc.p : "", acc.n);
        break;
    case D_METASPACE:
        for (size_t i = 0; i < in->n && !r; i++) {
            acc.n = 0;
            r = buf_reserve(&acc, 0);
            for (size_t j = 0, cl; j < in->v[i].n && !r; j += cl) {
                uint32_t cp = u8dec(in->v[i].p + j, &cl);
                if (cp == o->ch) {
                    if (!(i == 0 && o->prepend != PS_NEVER)) r = buf_add(&acc, " ", 1);
                } else r = buf_add(&acc, in->v[i].p + j, cl);
            }
            if (!r) r = tl_push(&out, acc.p, acc.n);
        }
        break;
    case D_STRIP:
        for (size_t i = 0; i < in->n && !r; i++) {
            const char *p = in->v[i].p;
            size_t n = in->v[i].n, a = 0, b = n, cl;
            for (int k = 0; k < o->left && a < n; k++) {
                if (u8dec(p + a, &cl) != o->ch) break;
                a += cl;
            }
            for (int k = 0; k < o->right && b > a; k++) {
                size_t q = prev_char(p, b);
                if (u8dec(p + q, &cl) != o->ch) break;
                b = q;
            }
            r = tl_push(&out, p + a, b - a);
        }
        break;
    case D_REPLACE:
        for (size_t i = 0; i < in->n && !r; i++) {
            const char *p = in->v[i].p;
            size_t n = in->v[i].n, off = 0, prev = 0;
            acc.n = 0;
            r = buf_reserve(&acc, 0);
            while (!r && off <= n) {
                if (pcre2_match(o->re, (PCRE2_SPTR)p, n, off, PCRE2_NO_UTF_CHECK, md, NULL) < 0) break;
                PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
                if (ov[1] == ov[0]) {
                    if (ov[0] >= n) break;
                    off = ov[0] + u8len((uint8_t)p[ov[0]]);
                    continue;
                }
                r = buf_add(&acc, p + prev, ov[0] - prev) || buf_add(&acc, o->content, o->clen);
                prev = off = ov[1];
            }
            if (!r) r = buf_add(&acc, p + prev, n - prev) || tl_push(&out, acc.p, acc.n);
        }
        break;
    }
    free(acc.p);
    if (r) { tl_free(&out); return MOEQ_ERR_NOMEM; }
    tl_free(in);
    *o_out = out;
    return MOEQ_OK;
}

moeq_status moeq_detokenize(const moeq_tokenizer *t, const int32_t *ids, int64_t n, int skip_special, char **text,
                            size_t *len, moeq_error *err)
{
    *text = NULL;
    *len = 0;
    tlist l = {0};
    moeq_status st = MOEQ_OK;
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md) return moeq_fail(err, MOEQ_ERR_NOMEM, "detokenize: out of memory");
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->nid || !t->id_tok[id]) {
            st = moeq_fail(err, MOEQ_ERR_RANGE, "token %lld is id %d, which has no token in %s", (long long)i, (int)id,
                           t->label);
            goto out;
        }
        if (skip_special && t->id_special[id]) continue;
        if (tl_push(&l, t->id_tok[id], t->id_len[id])) goto oom;
    }
    for (int i = 0; i < t->ndec; i++)
        if (decode_op(t, &t->dec[i], &l, &l, md)) goto oom;
    buf o = {0};
    if (buf_reserve(&o, 0)) goto oom;
    for (size_t i = 0; i < l.n; i++)
        if ((i && !t->has_decoder && buf_add(&o, " ", 1)) || buf_add(&o, l.v[i].p, l.v[i].n)) { free(o.p); goto oom; }
    *text = o.p;
    *len = o.n;
    goto out;
oom:
    st = moeq_fail(err, MOEQ_ERR_NOMEM, "detokenize: out of memory");
out:
    tl_free(&l);
    pcre2_match_data_free(md);
    return st;
}
