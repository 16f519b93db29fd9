/* tokenizer.json: ids and decoded text against tokenizers 0.23 (tests/fixtures/tokenizers/refs.json,
 * made by make_tokenizer_refs.py on the GPU machine), the held-out token file made at fixture
 * time, round trips, and the broken-input catalogue. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"
#include "moeq_safetensors.h"
#include "moeq_tokenizer.h"

#define TOKDIR FIXTURES "/tokenizers"

static json_t *refs;

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) { free(p); p = NULL; }
    fclose(f);
    if (p) p[n] = 0;
    *len = (size_t)n;
    return p;
}

/* The text a reference entry was made from: heldout, torture, or torture line N. */
static char *ref_text(const char *name, size_t *len)
{
    if (!strcmp(name, "heldout")) return slurp(FIXTURES "/heldout.txt", len);
    char *all = slurp(TOKDIR "/torture.txt", len);
    if (!all || !strcmp(name, "torture")) return all;
    int line = atoi(name + strlen("torture:"));
    char *p = all;
    for (int i = 0; i < line && p; i++) {
        p = strchr(p, '\n');
        if (p) p++;
    }
    char *e = p ? strchr(p, '\n') : NULL;
    size_t n = p ? (e ? (size_t)(e - p) : strlen(p)) : 0;
    char *r = malloc(n + 1);
    memcpy(r, p ? p : "", n);
    r[n] = 0;
    free(all);
    *len = n;
    return r;
}

static int same_ids(const char *what, const int32_t *ids, int64_t n, json_t *ref)
{
    int64_t m = (int64_t)json_array_size(ref);
    int64_t k = 0;
    while (k < n && k < m && ids[k] == json_integer_value(json_array_get(ref, (size_t)k))) k++;
    if (k == n && k == m) return 1;
    fprintf(stderr, "  %s: %lld ids vs %lld in the reference, first difference at %lld:", what, (long long)n,
            (long long)m, (long long)k);
    for (int64_t j = k > 3 ? k - 3 : 0; j < k + 4; j++)
        fprintf(stderr, " [%lld] %d/%lld", (long long)j, j < n ? ids[j] : -1,
                j < m ? (long long)json_integer_value(json_array_get(ref, (size_t)j)) : -1LL);
    fputc('\n', stderr);
    return 0;
}

/* Every text of one tokenizer: ids without and with special tokens, and decode(ids). */
static void check_tokenizer(const char *name)
{
    json_t *e = json_object_get(json_object_get(refs, "tokenizers"), name);
    CHECK_MSG(e != NULL, "no references for %s", name);
    if (!e) return;
    moeq_tokenizer *t;
    moeq_error err = {0};
    const char *file = json_string_value(json_object_get(e, "file"));
    CHECK_MSG(moeq_tokenizer_load(file, &t, &err) == MOEQ_OK, "%s", err.detail);
    if (err.code) return;
    const char *tn;
    json_t *r;
    int texts = 0, same = 0;
    json_object_foreach(json_object_get(e, "texts"), tn, r) {
        size_t len;
        char *s = ref_text(tn, &len);
        int32_t *ids, *ids2;
        int64_t n, n2;
        char what[96], *dec;
        size_t dl;
        snprintf(what, sizeof what, "%s %s", name, tn);
        texts++;
        CHECK_MSG(moeq_tokenize(t, s, len, 0, &ids, &n, &err) == MOEQ_OK, "%s: %s", what, err.detail);
        CHECK_MSG(moeq_tokenize(t, s, len, 1, &ids2, &n2, &err) == MOEQ_OK, "%s: %s", what, err.detail);
        int ok = same_ids(what, ids, n, json_object_get(r, "ids"));
        snprintf(what, sizeof what, "%s %s (add_special_tokens)", name, tn);
        ok &= same_ids(what, ids2, n2, json_object_get(r, "ids_special"));
        CHECK_MSG(moeq_detokenize(t, ids, n, 0, &dec, &dl, &err) == MOEQ_OK, "%s", err.detail);
        json_t *rd = json_object_get(r, "decoded");
        int dok = dec && dl == json_string_length(rd) && !memcmp(dec, json_string_value(rd), dl);
        if (!dok) fprintf(stderr, "  %s %s: decoded text differs:\n   moeq: %.200s\n   ref:  %.200s\n", name, tn, dec ? dec : "", json_string_value(rd));
        ok &= dok;
        same += ok;
        free(s);
        free(ids);
        free(ids2);
        free(dec);
    }
    CHECK_MSG(same == texts, "%s: %d of %d texts identical", name, same, texts);
    fprintf(stderr, "  %s: %d/%d texts identical to tokenizers %s\n", name, same, texts,
            json_string_value(json_object_get(refs, "tokenizers_version")));
    moeq_tokenizer_free(t);
}

static void test_bytelevel_refs(void) { check_tokenizer("bytelevel"); }
static void test_llama3_split_refs(void) { check_tokenizer("llama3"); }
static void test_nfkc_digits_refs(void) { check_tokenizer("nfkc"); }
static void test_metaspace_byte_fallback_refs(void) { check_tokenizer("metaspace"); }
static void test_legacy_llama_refs(void) { check_tokenizer("legacy"); }

/* The fixtures' held-out token file holds the first 16384 ids of heldout.txt, tokenized when the
 * fixtures were trained: a second, independent reference. */
static void test_heldout_token_file(void)
{
    moeq_tokenizer *t;
    moeq_error err = {0};
    int32_t *ids, *ref;
    int64_t n, nref;
    CHECK(moeq_tokenizer_load(FIXTURES "/tiny-qwen3moe", &t, &err) == MOEQ_OK);
    if (err.code) return;
    CHECK(moeq_tokenize_file(t, FIXTURES "/heldout.txt", 1, &ids, &n, &err) == MOEQ_OK);
    CHECK(moeq_tokens_load(FIXTURES "/heldout.safetensors", 0, &ref, &nref, &err) == MOEQ_OK);
    CHECK(n >= nref && nref == 16384);
    int64_t k = 0;
    while (k < nref && k < n && ids[k] == ref[k]) k++;
    CHECK_MSG(k == nref, "first difference at %lld", (long long)k);
    free(ids);
    free(ref);
    moeq_tokenizer_free(t);
}

/* Lossless byte-level tokenizer: decode(encode(x)) == x on every text, specials included. */
static void test_round_trip(void)
{
    moeq_tokenizer *t;
    moeq_error err = {0};
    CHECK(moeq_tokenizer_load(FIXTURES "/tiny-mixtral/tokenizer.json", &t, &err) == MOEQ_OK);
    if (err.code) return;
    const char *files[] = {FIXTURES "/heldout.txt", TOKDIR "/torture.txt"};
    for (int f = 0; f < 2; f++) {
        size_t len, dl;
        char *s = slurp(files[f], &len), *d;
        int32_t *ids;
        int64_t n;
        CHECK(moeq_tokenize(t, s, len, 1, &ids, &n, &err) == MOEQ_OK);
        CHECK(moeq_detokenize(t, ids, n, 0, &d, &dl, &err) == MOEQ_OK);
        CHECK_MSG(dl == len && !memcmp(d, s, len), "%s does not round-trip", files[f]);
        free(s);
        free(ids);
        free(d);
    }
    /* every byte value alone and in a run of random bytes made valid: arbitrary UTF-8 */
    char s[8];
    for (uint32_t cp = 1; cp < 0x110000; cp += (cp < 0x800 ? 1 : 97)) {
        if (cp >= 0xD800 && cp < 0xE000) continue;
        size_t k = 0;
        if (cp < 0x80) s[k++] = (char)cp;
        else if (cp < 0x800) { s[k++] = (char)(0xC0 | (cp >> 6)); s[k++] = (char)(0x80 | (cp & 63)); }
        else if (cp < 0x10000) { s[k++] = (char)(0xE0 | (cp >> 12)); s[k++] = (char)(0x80 | ((cp >> 6) & 63)); s[k++] = (char)(0x80 | (cp & 63)); }
        else { s[k++] = (char)(0xF0 | (cp >> 18)); s[k++] = (char)(0x80 | ((cp >> 12) & 63)); s[k++] = (char)(0x80 | ((cp >> 6) & 63)); s[k++] = (char)(0x80 | (cp & 63)); }
        int32_t *ids;
        int64_t n;
        char *d;
        size_t dl;
        if (moeq_tokenize(t, s, k, 0, &ids, &n, &err) != MOEQ_OK) { CHECK_MSG(0, "U+%04X: %s", cp, err.detail); break; }
        CHECK(moeq_detokenize(t, ids, n, 0, &d, &dl, &err) == MOEQ_OK);
        int ok = dl == k && !memcmp(d, s, k);
        CHECK_MSG(ok, "U+%04X does not round-trip", cp);
        free(ids);
        free(d);
        if (!ok) break;
    }
    moeq_tokenizer_free(t);
}

/* Invalid UTF-8 is refused with its byte offset; decoding bytes that are not UTF-8 gives
 * U+FFFD per maximal invalid subsequence, as String::from_utf8_lossy. */
static void test_invalid_utf8(void)
{
    moeq_tokenizer *t;
    moeq_error err = {0};
    CHECK(moeq_tokenizer_load(FIXTURES "/tiny-mixtral", &t, &err) == MOEQ_OK);
    if (err.code) return;
    const char *bad[] = {"ab\xff", "abc\xc3", "a\xed\xa0\x80", "ab\xc0\xaf", "\xf4\x90\x80\x80", "ok\xe2\x82"};
    const size_t off[] = {2, 3, 1, 2, 0, 2};
    for (int i = 0; i < 6; i++) {
        int32_t *ids;
        int64_t n;
        char want[64];
        CHECK(moeq_tokenize(t, bad[i], strlen(bad[i]), 0, &ids, &n, &err) == MOEQ_ERR_FORMAT);
        snprintf(want, sizeof want, "byte offset %zu", off[i]);
        CHECK_MSG(strstr(err.detail, want) != NULL, "%s", err.detail);
    }
    /* ByteLevel chars of bytes E2 82 (a cut euro sign) then 'A': one U+FFFD, then A */
    int32_t ids[3] = {moeq_tokenizer_token_id(t, "\xc3\xa2"), moeq_tokenizer_token_id(t, "\xc4\xa4"),
                      moeq_tokenizer_token_id(t, "A")};
    CHECK(ids[0] >= 0 && ids[1] >= 0 && ids[2] >= 0);
    char *d;
    size_t dl;
    CHECK(moeq_detokenize(t, ids, 3, 0, &d, &dl, &err) == MOEQ_OK);
    CHECK(dl == 4 && !memcmp(d, "\xef\xbf\xbd" "A", 4));
    free(d);
    int32_t big = 99999;
    CHECK(moeq_detokenize(t, &big, 1, 0, &d, &dl, &err) == MOEQ_ERR_RANGE);
    CHECK(strstr(err.detail, "99999") != NULL);
    moeq_tokenizer_free(t);
}

/* Broken and unsupported tokenizer.json files: the exact status and the component named. */
static void test_broken_catalogue(void)
{
    static const struct {
        const char *json, *want;
        moeq_status code;
    } cases[] = {
        {"{", "not valid JSON", MOEQ_ERR_FORMAT},
        {"[]", "not a JSON object", MOEQ_ERR_FORMAT},
        {"{}", "model: missing", MOEQ_ERR_FORMAT},
        {"{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", "unsupported model type 'Unigram'", MOEQ_ERR_UNSUPPORTED},
        {"{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", "unsupported model type 'WordPiece'", MOEQ_ERR_UNSUPPORTED},
        {"{\"model\":{\"type\":\"BPE\"}}", "model.vocab: missing", MOEQ_ERR_FORMAT},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1}}}", "token 'a' has an id", MOEQ_ERR_FORMAT},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}}", "model.merges[0]: token 'b'", MOEQ_ERR_FORMAT},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a\"]}}", "model.merges[0]: merge 'a' is not two", MOEQ_ERR_FORMAT},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[7]}}", "model.merges[0]", MOEQ_ERR_FORMAT},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"dropout\":0.1}}", "model.dropout", MOEQ_ERR_UNSUPPORTED},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"unk_token\":\"<unk>\"}}", "model.unk_token: '<unk>' is not", MOEQ_ERR_FORMAT},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"normalizer\":{\"type\":\"Lowercase\"}}", "normalizer: unsupported normalizer type 'Lowercase'", MOEQ_ERR_UNSUPPORTED},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},{\"type\":\"Precompiled\"}]}}", "normalizer.normalizers[1]: unsupported normalizer type 'Precompiled'", MOEQ_ERR_UNSUPPORTED},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"pre_tokenizer\":{\"type\":\"Whitespace\"}}", "pre_tokenizer: unsupported pre-tokenizer type 'Whitespace'", MOEQ_ERR_UNSUPPORTED},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}}", "PCRE2 rejects the pattern", MOEQ_ERR_FORMAT},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Sideways\"}}", "unknown Split behavior 'Sideways'", MOEQ_ERR_UNSUPPORTED},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\bx\"},\"behavior\":\"Isolated\"}}", "unsupported regex construct \\b", MOEQ_ERR_UNSUPPORTED},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{},\"behavior\":\"Isolated\"}}", "pattern must be", MOEQ_ERR_FORMAT},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"ab\"}}", "'replacement' must be one character", MOEQ_ERR_FORMAT},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"_\",\"prepend_scheme\":\"sometimes\"}}", "unknown prepend_scheme", MOEQ_ERR_UNSUPPORTED},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"post_processor\":{\"type\":\"BertProcessing\"}}", "post_processor: unsupported post-processor type 'BertProcessing'", MOEQ_ERR_UNSUPPORTED},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\"}},{\"Sequence\":{\"id\":\"A\"}}],\"special_tokens\":{}}}", "special token '<s>' missing", MOEQ_ERR_FORMAT},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"decoder\":{\"type\":\"WordPiece\"}}", "decoder: unsupported decoder type 'WordPiece'", MOEQ_ERR_UNSUPPORTED},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"decoder\":{\"type\":\"Strip\",\"content\":\" \",\"start\":-1,\"stop\":0}}", "Strip wants integer", MOEQ_ERR_FORMAT},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"pre_tokenizer\":{\"type\":\"Sequence\"}}", "pre_tokenizer: Sequence without 'pretokenizers'", MOEQ_ERR_FORMAT},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Fuse\"},{}]}}", "decoder.decoders[1]: missing 'type'", MOEQ_ERR_FORMAT},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"post_processor\":{\"type\":\"Sequence\",\"processors\":7}}", "post_processor: Sequence without 'processors'", MOEQ_ERR_FORMAT},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"normalizer\":{\"type\":7}}", "normalizer: missing 'type'", MOEQ_ERR_FORMAT},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"added_tokens\":[{\"id\":-3,\"content\":\"x\"}]}", "added_tokens[0]: 'id'", MOEQ_ERR_FORMAT},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"added_tokens\":[{\"id\":3,\"content\":\"\"}]}", "added_tokens[0]: 'content'", MOEQ_ERR_FORMAT},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"aa\":1},\"merges\":[[\"a\",\"a\"]],\"merge_ranks\":[]}}", "model.merge_ranks: must be an array of one rank per merge", MOEQ_ERR_FORMAT},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"aa\":1},\"merges\":[[\"a\",\"a\"]],\"merge_ranks\":[-1]}}", "model.merges[0]: merge_ranks entry is not an integer", MOEQ_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        moeq_tokenizer *t = NULL;
        moeq_error err = {0};
        moeq_status st = moeq_tokenizer_parse(cases[i].json, strlen(cases[i].json), "case.json", &t, &err);
        CHECK_MSG(st == cases[i].code && strstr(err.detail, cases[i].want) && strstr(err.detail, "case.json"),
                  "case %zu: status %d, detail '%s', wanted '%s'", i, (int)st, err.detail, cases[i].want);
        CHECK(t == NULL);
        moeq_tokenizer_free(t);
    }
    moeq_tokenizer *t;
    moeq_error err = {0};
    CHECK(moeq_tokenizer_load("tests/fixtures/no-such-model", &t, &err) == MOEQ_ERR_NOT_FOUND);
    CHECK(moeq_tokenizer_load(FIXTURES "/tokenizers", &t, &err) == MOEQ_ERR_NOT_FOUND);
    CHECK(strstr(err.detail, "no tokenizer.json") != NULL);
}

/* model.merge_ranks (moeq's): merges of one rank go leftmost first, as llama.cpp's SPM merges
 * tokens of equal score; without it merge i has rank i */
static void test_merge_ranks(void)
{
    static const char *const js[] = {
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"ba\":3},\"merges\":[[\"a\",\"b\"],[\"b\",\"a\"]]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"ba\":3},\"merges\":[[\"a\",\"b\"],[\"b\",\"a\"]],"
        "\"merge_ranks\":[0,0]}}",
    };
    static const int32_t want[2][2] = { { 1, 2 }, { 3, 1 } };   /* "bab": b|ab by rank, ba|b leftmost */
    for (int k = 0; k < 2; k++) {
        moeq_tokenizer *t = NULL;
        moeq_error err = {0};
        int32_t *ids = NULL;
        int64_t n = 0;
        CHECK(moeq_tokenizer_parse(js[k], strlen(js[k]), "ranks.json", &t, &err) == MOEQ_OK);
        CHECK(t && moeq_tokenize(t, "bab", 3, 0, &ids, &n, &err) == MOEQ_OK);
        CHECK_MSG(n == 2 && ids[0] == want[k][0] && ids[1] == want[k][1], "case %d: %lld ids, %d %d", k, (long long)n,
                  n > 0 ? ids[0] : -1, n > 1 ? ids[1] : -1);
        free(ids);
        moeq_tokenizer_free(t);
    }
}

int main(void)
{
    size_t len;
    char *s = slurp(TOKDIR "/refs.json", &len);
    json_error_t je;
    refs = s ? json_loadb(s, len, 0, &je) : NULL;
    free(s);
    if (!refs) { printf("FAIL test_tokenizer (cannot read refs.json)\n"); return 1; }
    RUN_TEST(test_bytelevel_refs);
    RUN_TEST(test_llama3_split_refs);
    RUN_TEST(test_nfkc_digits_refs);
    RUN_TEST(test_metaspace_byte_fallback_refs);
    RUN_TEST(test_legacy_llama_refs);
    RUN_TEST(test_heldout_token_file);
    RUN_TEST(test_round_trip);
    RUN_TEST(test_invalid_utf8);
    RUN_TEST(test_broken_catalogue);
    RUN_TEST(test_merge_ranks);
    json_decref(refs);
    HARNESS_EXIT();
}
