/* Tests of the safetensors reader, checkpoints and token files: the real fixtures against an
 * independent header parse, then a catalogue of broken inputs (one rule each) built in a temp
 * directory by a tiny writer, and the committed copies in tests/broken/safetensors/. */
#define _XOPEN_SOURCE 700 /* nftw for temp-dir cleanup */
#include "harness.h"
#include "moeq_safetensors.h"

#include <ftw.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- tiny writer ------------------------------------------------------------------- */

/* An image: u64 LE header length (n_override when >= 0), the header text, data_len bytes
 * of a known pattern. */
static uint8_t *st_image(const char *header, int64_t n_override, size_t data_len, size_t *len)
{
    size_t h = strlen(header);
    uint64_t n = n_override >= 0 ? (uint64_t)n_override : (uint64_t)h;
    *len = 8 + h + data_len;
    uint8_t *b = malloc(*len ? *len : 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(n >> (8 * i));
    memcpy(b + 8, header, h);
    for (size_t i = 0; i < data_len; i++) b[8 + h + i] = (uint8_t)(i * 7 + 1);
    return b;
}

static int write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = len ? fwrite(data, 1, len, f) : 0;
    fclose(f);
    return w == len ? 0 : -1;
}

static void write_image(const char *path, const char *header, size_t data_len)
{
    size_t len;
    uint8_t *b = st_image(header, -1, data_len, &len);
    CHECK(write_file(path, b, len) == 0);
    free(b);
}

static char g_tmp[64];

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

static void tmp_cleanup(void)
{
    if (g_tmp[0]) nftw(g_tmp, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void tpath(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", g_tmp, name);
}

static int contains(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

#define CHECK_ERR(st, err, want, ...)                                                          \
    do {                                                                                       \
        CHECK_MSG((st) == (want), "status %d, want %d: %s", (int)(st), (int)(want),            \
                  (err).detail);                                                               \
        const char *frags_[] = {__VA_ARGS__, NULL};                                            \
        for (int i_ = 0; frags_[i_]; i_++)                                                     \
            CHECK_MSG(contains((err).detail, frags_[i_]), "'%s' not in: %s", frags_[i_],       \
                      (err).detail);                                                           \
    } while (0)

/* The valid base image (same as tests/broken/make_broken.py). */
#define A_ "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"
#define B_ "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]}"
#define META_ "\"__metadata__\":{\"format\":\"pt\"}"

/* ---- valid inputs ------------------------------------------------------------------ */

static void test_dtype_helpers(void)
{
    CHECK(moeq_dtype_size(MOEQ_DT_BF16) == 2);
    CHECK(moeq_dtype_size(MOEQ_DT_F32) == 4);
    CHECK(moeq_dtype_size(MOEQ_DT_I64) == 8);
    CHECK(moeq_dtype_size(MOEQ_DT_BOOL) == 1);
    CHECK(moeq_dtype_size(MOEQ_DT_OTHER) == 0);
    CHECK(strcmp(moeq_dtype_name(MOEQ_DT_BF16), "BF16") == 0);
    CHECK(strcmp(moeq_dtype_name(MOEQ_DT_U32), "U32") == 0);
}

static void test_parse_valid_image(void)
{
    /* b listed first, and the header padded with spaces like the reference writer does */
    size_t len;
    uint8_t *img = st_image("{" B_ "," META_ "," A_ "}    ", -1, 32, &len);
    moeq_st_file *f = NULL;
    moeq_error err = {0};
    moeq_status st = moeq_st_parse(img, len, "mem", &f, &err);
    CHECK_MSG(st == MOEQ_OK, "%s", err.detail);
    if (st == MOEQ_OK) {
        size_t data_start = len - 32;
        CHECK(moeq_st_count(f) == 2);
        const moeq_tensor *a = moeq_st_tensor(f, 0), *b = moeq_st_tensor(f, 1);
        CHECK(strcmp(a->name, "a") == 0 && strcmp(b->name, "b") == 0); /* offset order */
        CHECK(a->dtype == MOEQ_DT_F32 && b->dtype == MOEQ_DT_BF16);
        CHECK(strcmp(b->dtype_name, "BF16") == 0);
        CHECK(a->ndim == 2 && a->shape[0] == 2 && a->shape[1] == 3 && a->numel == 6);
        CHECK(a->nbytes == 24 && b->nbytes == 8);
        CHECK(a->file_offset == data_start && b->file_offset == data_start + 24);
        CHECK(a->data == img + data_start);
        CHECK(((const uint8_t *)b->data)[0] == (uint8_t)(24 * 7 + 1));
        CHECK(strcmp(a->file, "mem") == 0);
        CHECK(moeq_st_find(f, "b") == b && moeq_st_find(f, "a") == a);
        CHECK(moeq_st_find(f, "c") == NULL && moeq_st_find(f, "") == NULL);
        CHECK(moeq_st_metadata(f, "format") && strcmp(moeq_st_metadata(f, "format"), "pt") == 0);
        CHECK(moeq_st_metadata(f, "other") == NULL);
        CHECK(moeq_st_tensor(f, 2) == NULL);
        moeq_st_close(f);
    }
    free(img);

    /* Edge cases the reference accepts: no tensors, scalars, empty tensors, sub-byte dtypes
     * that fill whole bytes (OTHER), leading whitespace. */
    img = st_image(" {\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
                   "\"z\":{\"dtype\":\"F16\",\"shape\":[0,5],\"data_offsets\":[8,8]},"
                   "\"q\":{\"dtype\":\"F4\",\"shape\":[2,3],\"data_offsets\":[8,11]},"
                   "\"e\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[11,12]}}",
                   -1, 12, &len);
    st = moeq_st_parse(img, len, "mem", &f, &err);
    CHECK_MSG(st == MOEQ_OK, "%s", err.detail);
    if (st == MOEQ_OK) {
        CHECK(moeq_st_count(f) == 4);
        const moeq_tensor *s = moeq_st_find(f, "s"), *z = moeq_st_find(f, "z"),
                          *q = moeq_st_find(f, "q"), *e = moeq_st_find(f, "e");
        CHECK(s && s->ndim == 0 && s->numel == 1 && s->nbytes == 8);
        CHECK(z && z->numel == 0 && z->nbytes == 0);
        CHECK(q && q->dtype == MOEQ_DT_OTHER && strcmp(q->dtype_name, "F4") == 0 && q->nbytes == 3);
        CHECK(e && e->dtype == MOEQ_DT_F8_E4M3 && strcmp(e->dtype_name, "F8_E4M3") == 0 && e->nbytes == (uint64_t)e->numel);
        CHECK(moeq_st_tensor(f, 0) == s);
        moeq_st_close(f);
    }
    free(img);

    img = st_image("{}", -1, 0, &len);
    st = moeq_st_parse(img, len, "mem", &f, &err);
    CHECK_MSG(st == MOEQ_OK, "%s", err.detail);
    if (st == MOEQ_OK) {
        CHECK(moeq_st_count(f) == 0 && moeq_st_find(f, "a") == NULL);
        moeq_st_close(f);
    }
    free(img);
}

static void test_open_errors(void)
{
    moeq_st_file *f = (moeq_st_file *)1;
    moeq_error err = {0};
    moeq_status st = moeq_st_open("tests/fixtures/does-not-exist.safetensors", &f, &err);
    /* a missing input is bad input (exit 2), as for every other file moeq reads */
    CHECK_ERR(st, err, MOEQ_ERR_NOT_FOUND, "does-not-exist.safetensors", "cannot open");
    CHECK(f == NULL);
    st = moeq_st_open("tests/fixtures", &f, &err);
    CHECK_ERR(st, err, MOEQ_ERR_IO, "tests/fixtures", "not a regular file");
    st = moeq_st_parse(NULL, 0, "nothing", &f, &err);
    CHECK_ERR(st, err, MOEQ_ERR_FORMAT, "nothing", "ST-1");
}

/* ---- fixtures ---------------------------------------------------------------------- */

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    *len = fread(b, 1, (size_t)n, fp);
    fclose(fp);
    return b;
}

/* Checks one file against an independent parse of its header: same tensors, shapes,
 * dtypes, absolute offsets; returns the sum of data bytes and the tensor count. */
static uint64_t check_against_header(const char *path, const moeq_tensor *(*find)(const void *,
                                     const char *), const void *h, size_t *count)
{
    size_t len = 0;
    uint8_t *b = slurp(path, &len);
    CHECK_MSG(b && len >= 8, "%s", path);
    if (!b || len < 8) { free(b); return 0; }
    uint64_t n = 0;
    memcpy(&n, b, 8); /* x86: little-endian */
    json_t *root = json_loadb((const char *)b + 8, (size_t)n, 0, NULL);
    CHECK(root != NULL);
    uint64_t sum = 0;
    const char *key;
    json_t *v;
    *count = 0;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) continue;
        (*count)++;
        const moeq_tensor *t = find(h, key);
        CHECK_MSG(t != NULL, "%s: %s", path, key);
        if (!t) continue;
        CHECK(strcmp(t->dtype_name, json_string_value(json_object_get(v, "dtype"))) == 0);
        json_t *shape = json_object_get(v, "shape");
        CHECK((size_t)t->ndim == json_array_size(shape));
        for (size_t d = 0; d < json_array_size(shape) && d < MOEQ_MAX_DIMS; d++)
            CHECK(t->shape[d] == json_integer_value(json_array_get(shape, d)));
        json_t *off = json_object_get(v, "data_offsets");
        uint64_t b0 = (uint64_t)json_integer_value(json_array_get(off, 0));
        uint64_t b1 = (uint64_t)json_integer_value(json_array_get(off, 1));
        CHECK(t->file_offset == 8 + n + b0);
        CHECK(t->nbytes == b1 - b0);
        CHECK(strcmp(t->file, path) == 0);
        /* the view shows the file's bytes */
        CHECK(t->nbytes == 0 || memcmp(t->data, b + 8 + n + b0, (size_t)t->nbytes) == 0);
        sum += b1 - b0;
    }
    CHECK(sum == len - 8 - n); /* contiguous data, no trailing bytes */
    json_decref(root);
    free(b);
    return sum;
}

static const moeq_tensor *find_st(const void *h, const char *name) { return moeq_st_find(h, name); }
static const moeq_tensor *find_ck(const void *h, const char *name) { return moeq_ckpt_find(h, name); }

static void test_fixture_single_file(void)
{
    const char *path = FIXTURES "/tiny-qwen2moe/model.safetensors";
    moeq_st_file *f = NULL;
    moeq_error err = {0};
    moeq_status st = moeq_st_open(path, &f, &err);
    CHECK_MSG(st == MOEQ_OK, "%s", err.detail);
    if (st != MOEQ_OK) return;
    size_t count = 0;
    uint64_t sum = check_against_header(path, find_st, f, &count);
    CHECK(count == moeq_st_count(f) && count == 128);
    CHECK(sum == 3075072);
    const moeq_tensor *e = moeq_st_find(f, "model.embed_tokens.weight");
    CHECK(e && e->dtype == MOEQ_DT_BF16 && e->ndim == 2 && e->shape[0] == 1024 && e->shape[1] == 128);
    for (size_t i = 1; i < moeq_st_count(f); i++)
        CHECK(moeq_st_tensor(f, i - 1)->file_offset + moeq_st_tensor(f, i - 1)->nbytes ==
              moeq_st_tensor(f, i)->file_offset);
    moeq_st_close(f);

    /* the same file as a checkpoint: directory and file path */
    moeq_checkpoint *c = NULL;
    st = moeq_ckpt_open(FIXTURES "/tiny-qwen2moe/", &c, &err);
    CHECK_MSG(st == MOEQ_OK, "%s", err.detail);
    if (st == MOEQ_OK) {
        CHECK(moeq_ckpt_shards(c) == 1 && moeq_ckpt_count(c) == 128);
        CHECK(moeq_ckpt_bytes(c) == 3075072);
        CHECK(strcmp(moeq_ckpt_dir(c), FIXTURES "/tiny-qwen2moe") == 0);
        CHECK(moeq_ckpt_find(c, "model.embed_tokens.weight") != NULL);
        moeq_ckpt_close(c);
    }
    st = moeq_ckpt_open(path, &c, &err);
    CHECK_MSG(st == MOEQ_OK, "%s", err.detail);
    if (st == MOEQ_OK) {
        CHECK(strcmp(moeq_ckpt_dir(c), FIXTURES "/tiny-qwen2moe") == 0);
        CHECK(moeq_ckpt_count(c) == 128);
        moeq_ckpt_close(c);
    }
}

/* A sharded fixture against its index, parsed here independently. */
static void check_sharded(const char *dir, size_t want_shards, size_t want_tensors)
{
    char ipath[512];
    snprintf(ipath, sizeof ipath, "%s/model.safetensors.index.json", dir);
    json_t *idx = json_load_file(ipath, 0, NULL);
    CHECK(idx != NULL);
    if (!idx) return;
    json_t *wm = json_object_get(idx, "weight_map");
    uint64_t total = (uint64_t)json_integer_value(json_object_get(json_object_get(idx, "metadata"),
                                                                  "total_size"));
    moeq_checkpoint *c = NULL;
    moeq_error err = {0};
    moeq_status st = moeq_ckpt_open(dir, &c, &err);
    CHECK_MSG(st == MOEQ_OK, "%s", err.detail);
    if (st != MOEQ_OK) { json_decref(idx); return; }
    CHECK(moeq_ckpt_shards(c) == want_shards);
    CHECK(moeq_ckpt_count(c) == want_tensors && json_object_size(wm) == want_tensors);
    CHECK(moeq_ckpt_bytes(c) == total);
    CHECK(strcmp(moeq_ckpt_dir(c), dir) == 0);
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v) {
        const moeq_tensor *t = moeq_ckpt_find(c, key);
        CHECK_MSG(t != NULL, "%s", key);
        char want[512];
        snprintf(want, sizeof want, "%s/%s", dir, json_string_value(v));
        CHECK_MSG(t && strcmp(t->file, want) == 0, "%s in %s", key, t ? t->file : "-");
    }
    /* every shard against an independent header parse; sums add up to total_size */
    uint64_t sum = 0;
    size_t count = 0;
    for (size_t s = 1; s <= want_shards; s++) {
        char sp[512];
        size_t n = 0;
        snprintf(sp, sizeof sp, "%s/model-%05zu-of-%05zu.safetensors", dir, s, want_shards);
        sum += check_against_header(sp, find_ck, c, &n);
        count += n;
    }
    CHECK(sum == total && count == want_tensors);
    /* ckpt_tensor enumerates each tensor once */
    uint64_t sum2 = 0;
    for (size_t i = 0; i < moeq_ckpt_count(c); i++) sum2 += moeq_ckpt_tensor(c, i)->nbytes;
    CHECK(sum2 == total);
    CHECK(moeq_ckpt_tensor(c, moeq_ckpt_count(c)) == NULL);
    CHECK(moeq_ckpt_find(c, "no.such.tensor") == NULL);
    const moeq_tensor *e = moeq_ckpt_find(c, "model.embed_tokens.weight");
    CHECK(e && e->ndim == 2 && e->shape[0] == 1024 && e->shape[1] == 128 && e->dtype == MOEQ_DT_BF16);
    moeq_ckpt_close(c);

    /* the index named directly */
    st = moeq_ckpt_open(ipath, &c, &err);
    CHECK_MSG(st == MOEQ_OK, "%s", err.detail);
    if (st == MOEQ_OK) {
        CHECK(moeq_ckpt_count(c) == want_tensors && moeq_ckpt_shards(c) == want_shards);
        moeq_ckpt_close(c);
    }
    /* and its text through the memory entry point */
    size_t len = 0, nt = 0, ns = 0;
    uint8_t *txt = slurp(ipath, &len);
    st = moeq_ckpt_parse_index((const char *)txt, len, ipath, &nt, &ns, &err);
    CHECK_MSG(st == MOEQ_OK, "%s", err.detail);
    CHECK(nt == want_tensors && ns == want_shards);
    free(txt);
    json_decref(idx);
}

static void test_fixture_mixtral(void) { check_sharded(FIXTURES "/tiny-mixtral", 6, 127); }
static void test_fixture_olmoe(void) { check_sharded(FIXTURES "/tiny-olmoe", 2, 135); }

static void test_fixture_heldout_tokens(void)
{
    const char *path = FIXTURES "/heldout.safetensors";
    moeq_st_file *f = NULL;
    moeq_error err = {0};
    moeq_status st = moeq_st_open(path, &f, &err);
    CHECK_MSG(st == MOEQ_OK, "%s", err.detail);
    if (st != MOEQ_OK) return;
    CHECK(moeq_st_count(f) == 1);
    const moeq_tensor *t = moeq_st_tensor(f, 0);
    CHECK(t->dtype == MOEQ_DT_I32 && t->ndim == 1 && t->shape[0] == 16384);
    int32_t *ids = NULL;
    int64_t n = 0;
    st = moeq_tokens_load(path, 1024, &ids, &n, &err);
    CHECK_MSG(st == MOEQ_OK, "%s", err.detail);
    if (st == MOEQ_OK) {
        CHECK(n == 16384);
        int32_t maxid = 0;
        for (int64_t i = 0; i < n; i++) {
            int32_t v;
            memcpy(&v, (const uint8_t *)t->data + 4 * i, 4);
            if (v != ids[i]) { CHECK(v == ids[i]); break; }
            if (v > maxid) maxid = v;
        }
        free(ids);
        /* a vocabulary one smaller than the largest id must be rejected, naming the vocab */
        ids = NULL;
        st = moeq_tokens_load(path, maxid, &ids, &n, &err);
        char want[64];
        snprintf(want, sizeof want, "id %d", (int)maxid);
        CHECK_ERR(st, err, MOEQ_ERR_RANGE, path, "TK-6", want);
        CHECK(ids == NULL);
    }
    /* the same ids as a raw .bin */
    char bin[128];
    tpath(bin, sizeof bin, "heldout.bin");
    CHECK(write_file(bin, t->data, (size_t)t->nbytes) == 0);
    int32_t *ids2 = NULL;
    int64_t n2 = 0;
    st = moeq_tokens_load(bin, 0, &ids2, &n2, &err);
    CHECK_MSG(st == MOEQ_OK, "%s", err.detail);
    CHECK(n2 == 16384 && ids2 && memcmp(ids2, t->data, 4 * 16384) == 0);
    free(ids2);
    moeq_st_close(f);
}

/* ---- broken safetensors ------------------------------------------------------------ */

typedef struct {
    const char *name;
    const char *header;
    int64_t n_override; /* -1: the header's length */
    size_t data_len;
    int64_t file_len;   /* -1: the whole image; else truncated to this */
    moeq_status code;
    const char *frag[4];
} st_case;

static const st_case ST_CASES[] = {
    {"empty", "", -1, 0, 0, MOEQ_ERR_FORMAT, {"ST-1", "0 bytes"}},
    {"seven", "{}", -1, 0, 7, MOEQ_ERR_FORMAT, {"ST-1", "7 bytes"}},
    {"n_too_large", "{}", 200000000, 0, -1, MOEQ_ERR_FORMAT, {"ST-2", "200000000"}},
    {"n_huge", "{}", INT64_MAX, 0, -1, MOEQ_ERR_FORMAT, {"ST-2"}},
    {"n_past_eof", "{}", 1000, 0, -1, MOEQ_ERR_FORMAT, {"ST-3", "1000"}},
    {"not_json", "{not json}", -1, 0, -1, MOEQ_ERR_FORMAT, {"ST-4"}},
    {"bad_utf8", "{\"\xff\":1}", -1, 0, -1, MOEQ_ERR_FORMAT, {"ST-4"}},
    {"json_then_junk", "{} x", -1, 0, -1, MOEQ_ERR_FORMAT, {"ST-4"}},
    {"not_object", "[1, 2]", -1, 0, -1, MOEQ_ERR_FORMAT, {"ST-5"}},
    {"not_object_num", "42", -1, 0, -1, MOEQ_ERR_FORMAT, {"ST-4"}},
    {"dup_key", "{" A_ "," A_ "}", -1, 24, -1, MOEQ_ERR_FORMAT, {"ST-6", "\"a\""}},
    {"meta_not_string", "{\"__metadata__\":{\"format\":1}," A_ "}", -1, 24, -1, MOEQ_ERR_FORMAT,
     {"ST-7", "'format'"}},
    {"meta_nested", "{\"__metadata__\":{\"x\":{\"y\":\"z\"}}," A_ "}", -1, 24, -1, MOEQ_ERR_FORMAT,
     {"ST-7", "'x'"}},
    {"meta_not_object", "{\"__metadata__\":\"pt\"," A_ "}", -1, 24, -1, MOEQ_ERR_FORMAT, {"ST-7"}},
    {"entry_not_object", "{" A_ ",\"b\":[1]}", -1, 24, -1, MOEQ_ERR_FORMAT, {"ST-8", "tensor 'b'"}},
    {"bad_dtype", "{" A_ ",\"b\":{\"dtype\":\"F33\",\"shape\":[4],\"data_offsets\":[24,32]}}", -1,
     32, -1, MOEQ_ERR_FORMAT, {"ST-8", "tensor 'b'", "F33", "header offset 65"}},
    {"dtype_lowercase", "{\"a\":{\"dtype\":\"f32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", -1,
     24, -1, MOEQ_ERR_FORMAT, {"ST-8", "tensor 'a'", "'f32'"}},
    {"dtype_missing", "{\"a\":{\"shape\":[2,3],\"data_offsets\":[0,24]}}", -1, 24, -1,
     MOEQ_ERR_FORMAT, {"ST-8", "tensor 'a'"}},
    {"shape_negative", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2,3],\"data_offsets\":[0,24]}}", -1,
     24, -1, MOEQ_ERR_FORMAT, {"ST-9", "tensor 'a'"}},
    {"shape_not_array", "{\"a\":{\"dtype\":\"F32\",\"shape\":6,\"data_offsets\":[0,24]}}", -1, 24,
     -1, MOEQ_ERR_FORMAT, {"ST-9", "tensor 'a'"}},
    {"shape_float", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0,3],\"data_offsets\":[0,24]}}", -1,
     24, -1, MOEQ_ERR_FORMAT, {"ST-9", "tensor 'a'"}},
    {"shape_9_dims",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,2,3],\"data_offsets\":[0,24]}}", -1, 24,
     -1, MOEQ_ERR_FORMAT, {"ST-9", "tensor 'a'", "9 dims"}},
    {"offsets_missing", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3]}}", -1, 24, -1, MOEQ_ERR_FORMAT,
     {"ST-10", "tensor 'a'"}},
    {"offsets_three", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24,24]}}", -1,
     24, -1, MOEQ_ERR_FORMAT, {"ST-10", "tensor 'a'"}},
    {"offsets_negative", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[-24,0]}}",
     -1, 24, -1, MOEQ_ERR_FORMAT, {"ST-10", "tensor 'a'"}},
    {"offsets_reversed", "{" A_ ",\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[32,24]}}",
     -1, 32, -1, MOEQ_ERR_FORMAT, {"ST-10", "tensor 'b'", "[32, 24]"}},
    {"product_overflow",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,24]}}", -1,
     24, -1, MOEQ_ERR_FORMAT, {"ST-11", "tensor 'a'", "[4294967296, 4294967296]"}},
    {"bits_overflow",
     "{\"a\":{\"dtype\":\"F64\",\"shape\":[1152921504606846976],\"data_offsets\":[0,24]}}", -1,
     24, -1, MOEQ_ERR_FORMAT, {"ST-11", "tensor 'a'"}},
    {"overflow_hidden_by_zero",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,0],\"data_offsets\":[0,0]}}", -1,
     0, -1, MOEQ_ERR_FORMAT, {"ST-11", "tensor 'a'"}},
    {"subbyte", "{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", -1, 2, -1,
     MOEQ_ERR_FORMAT, {"ST-12", "tensor 'a'", "12 bits"}},
    {"size_mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", -1,
     20, -1, MOEQ_ERR_FORMAT, {"ST-13", "tensor 'a'", "[0, 20] give 20 bytes", "needs 24"}},
    {"gap", "{" A_ ",\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[28,36]}}", -1, 36,
     -1, MOEQ_ERR_FORMAT, {"ST-14", "tensor 'b'", "gap"}},
    {"overlap", "{" A_ ",\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[20,28]}}", -1,
     28, -1, MOEQ_ERR_FORMAT, {"ST-14", "tensor 'b'", "overlap"}},
    {"same_range", "{" A_ ",\"b\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,24]}}", -1,
     24, -1, MOEQ_ERR_FORMAT, {"ST-14", "overlap"}},
    {"not_from_zero", "{\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[8,16]}}", -1, 16,
     -1, MOEQ_ERR_FORMAT, {"ST-14", "tensor 'b'", "expected begin 0"}},
    {"trailing", "{" META_ "," A_ "," B_ "}", -1, 37, -1, MOEQ_ERR_FORMAT,
     {"ST-15", "5 trailing bytes"}},
    {"trailing_no_tensors", "{}", -1, 3, -1, MOEQ_ERR_FORMAT, {"ST-15", "3 trailing bytes"}},
    {"truncated", "{" META_ "," A_ "," B_ "}", -1, 22, -1, MOEQ_ERR_FORMAT,
     {"ST-15", "tensor 'b'", "truncated"}},
};

static void test_broken_safetensors(void)
{
    for (size_t i = 0; i < sizeof ST_CASES / sizeof ST_CASES[0]; i++) {
        const st_case *c = &ST_CASES[i];
        size_t len;
        uint8_t *img = st_image(c->header, c->n_override, c->data_len, &len);
        if (c->file_len >= 0 && (size_t)c->file_len < len) len = (size_t)c->file_len;
        char path[128];
        snprintf(path, sizeof path, "%s/%s.safetensors", g_tmp, c->name);
        CHECK(write_file(path, img, len) == 0);
        moeq_st_file *f = NULL;
        moeq_error err = {0};
        moeq_status st = moeq_st_open(path, &f, &err);
        fprintf(stderr, "  [%s] %s\n", c->name, err.detail);
        CHECK_MSG(st == c->code, "%s: status %d, want %d: %s", c->name, (int)st, (int)c->code,
                  err.detail);
        CHECK_MSG(contains(err.detail, path), "%s: path missing: %s", c->name, err.detail);
        for (int k = 0; k < 4 && c->frag[k]; k++)
            CHECK_MSG(contains(err.detail, c->frag[k]), "%s: '%s' not in: %s", c->name,
                      c->frag[k], err.detail);
        CHECK(f == NULL);
        if (f) moeq_st_close(f);
        /* the memory entry point on an exact-size copy gives the same verdict */
        uint8_t *exact = malloc(len ? len : 1);
        memcpy(exact, img, len);
        moeq_error err2 = {0};
        st = moeq_st_parse(exact, len, "label", &f, &err2);
        CHECK_MSG(st == c->code && contains(err2.detail, "label:"), "%s: %s", c->name, err2.detail);
        if (f) moeq_st_close(f);
        free(exact);
        free(img);
        /* and as a checkpoint (the path ends in .safetensors) */
        moeq_checkpoint *ck = NULL;
        st = moeq_ckpt_open(path, &ck, &err);
        CHECK_MSG(st == c->code && contains(err.detail, path), "%s: %s", c->name, err.detail);
        if (ck) moeq_ckpt_close(ck);
    }
}

/* ---- broken checkpoints ------------------------------------------------------------ */

#define S1_ "{" A_ "}"
#define S2_ "{\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]}}"
#define N1_ "model-00001-of-00002.safetensors"
#define N2_ "model-00002-of-00002.safetensors"
#define IDX_(wm) "{\"metadata\":{\"total_size\":32},\"weight_map\":{" wm "}}"
#define GOOD_WM_ "\"a\":\"" N1_ "\",\"b\":\"" N2_ "\""

/* Makes g_tmp/name with an index text (NULL: none) and the two shards (NULL: absent). */
static void make_ckpt_dir(char *dir, size_t cap, const char *name, const char *index,
                          const char *s1, size_t d1, const char *s2, size_t d2)
{
    snprintf(dir, cap, "%s/%s", g_tmp, name);
    CHECK(mkdir(dir, 0755) == 0);
    char p[512];
    if (index) {
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
        CHECK(write_file(p, index, strlen(index)) == 0);
    }
    if (s1) { snprintf(p, sizeof p, "%s/" N1_, dir); write_image(p, s1, d1); }
    if (s2) { snprintf(p, sizeof p, "%s/" N2_, dir); write_image(p, s2, d2); }
}

static char warned[MOEQ_ERROR_DETAIL_MAX];
static void keep_warning(const char *msg) { snprintf(warned, sizeof warned, "%s", msg); }

static void expect_ckpt(const char *dir, moeq_status want, const char *f1, const char *f2,
                        const char *f3)
{
    moeq_checkpoint *c = NULL;
    moeq_error err = {0};
    moeq_status st = moeq_ckpt_open(dir, &c, &err);
    fprintf(stderr, "  [%s] %s\n", dir, err.detail);
    CHECK_ERR(st, err, want, dir, f1, f2, f3);
    CHECK(c == NULL);
    if (c) moeq_ckpt_close(c);
}

static void test_ckpt_valid_synthetic(void)
{
    char dir[256];
    make_ckpt_dir(dir, sizeof dir, "ok_sharded", IDX_(GOOD_WM_), S1_, 24, S2_, 8);
    moeq_checkpoint *c = NULL;
    moeq_error err = {0};
    moeq_status st = moeq_ckpt_open(dir, &c, &err);
    CHECK_MSG(st == MOEQ_OK, "%s", err.detail);
    if (st == MOEQ_OK) {
        CHECK(moeq_ckpt_shards(c) == 2 && moeq_ckpt_count(c) == 2 && moeq_ckpt_bytes(c) == 32);
        const moeq_tensor *b = moeq_ckpt_find(c, "b");
        CHECK(b && b->nbytes == 8 && contains(b->file, N2_));
        CHECK(moeq_ckpt_tensor(c, 0) == moeq_ckpt_find(c, "a")); /* shard order */
        moeq_ckpt_close(c);
    }
    /* a directory with model.safetensors only */
    snprintf(dir, sizeof dir, "%s/ok_single", g_tmp);
    CHECK(mkdir(dir, 0755) == 0);
    char p[300];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_image(p, "{" A_ "," B_ "}", 32);
    st = moeq_ckpt_open(dir, &c, &err);
    CHECK_MSG(st == MOEQ_OK, "%s", err.detail);
    if (st == MOEQ_OK) {
        CHECK(moeq_ckpt_shards(c) == 1 && moeq_ckpt_count(c) == 2 && moeq_ckpt_bytes(c) == 32);
        moeq_ckpt_close(c);
    }
    /* an index without metadata, many entries into one shard: opened once */
    make_ckpt_dir(dir, sizeof dir, "ok_nometa",
                  "{\"weight_map\":{\"a\":\"" N1_ "\",\"b\":\"" N1_ "\"}}", "{" A_ "," B_ "}", 32,
                  NULL, 0);
    st = moeq_ckpt_open(dir, &c, &err);
    CHECK_MSG(st == MOEQ_OK, "%s", err.detail);
    if (st == MOEQ_OK) {
        CHECK(moeq_ckpt_shards(c) == 1 && moeq_ckpt_count(c) == 2);
        moeq_ckpt_close(c);
    }
    /* a file that is neither */
    snprintf(p, sizeof p, "%s/weights.bin", g_tmp);
    CHECK(write_file(p, "x", 1) == 0);
    st = moeq_ckpt_open(p, &c, &err);
    CHECK_ERR(st, err, MOEQ_ERR_UNSUPPORTED, p, "CK-11");
    st = moeq_ckpt_open("tests/fixtures/no-such-model", &c, &err);
    CHECK_ERR(st, err, MOEQ_ERR_IO, "tests/fixtures/no-such-model");
}

static void test_broken_checkpoints(void)
{
    char dir[256];
    make_ckpt_dir(dir, sizeof dir, "missing_shard", IDX_(GOOD_WM_), S1_, 24, NULL, 0);
    expect_ckpt(dir, MOEQ_ERR_FORMAT, "CK-5", N2_, "does not exist");

    make_ckpt_dir(dir, sizeof dir, "not_in_shard", IDX_(GOOD_WM_ ",\"c\":\"" N2_ "\""), S1_, 24,
                  S2_, 8);
    expect_ckpt(dir, MOEQ_ERR_FORMAT, "CK-6", "tensor 'c'", N2_);

    make_ckpt_dir(dir, sizeof dir, "not_in_index", IDX_(GOOD_WM_), S1_, 24,
                  "{\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
                  "\"c\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[8,10]}}", 10);
    expect_ckpt(dir, MOEQ_ERR_FORMAT, "CK-7", "tensor 'c'", N2_);

    make_ckpt_dir(dir, sizeof dir, "in_two_shards", IDX_(GOOD_WM_), "{" A_ "," B_ "}", 32, S2_, 8);
    expect_ckpt(dir, MOEQ_ERR_FORMAT, "CK-8", "tensor 'b'", N1_);

    make_ckpt_dir(dir, sizeof dir, "bad_json", "{\"weight_map\": {\"a\": ", S1_, 24, NULL, 0);
    expect_ckpt(dir, MOEQ_ERR_FORMAT, "CK-1", "model.safetensors.index.json", "line 1");

    make_ckpt_dir(dir, sizeof dir, "dup_json_key", "{\"weight_map\":{\"a\":\"" N1_ "\",\"a\":\""
                  N1_ "\"}}", S1_, 24, NULL, 0);
    expect_ckpt(dir, MOEQ_ERR_FORMAT, "CK-1", "duplicate", "model.safetensors.index.json");

    make_ckpt_dir(dir, sizeof dir, "index_not_object", "[]", S1_, 24, NULL, 0);
    expect_ckpt(dir, MOEQ_ERR_FORMAT, "CK-2", "not a JSON object", "index.json");

    make_ckpt_dir(dir, sizeof dir, "no_weight_map", "{\"metadata\":{}}", S1_, 24, NULL, 0);
    expect_ckpt(dir, MOEQ_ERR_FORMAT, "CK-2", "weight_map", "index.json");

    make_ckpt_dir(dir, sizeof dir, "wm_not_string", "{\"weight_map\":{\"a\":1}}", S1_, 24, NULL, 0);
    expect_ckpt(dir, MOEQ_ERR_FORMAT, "CK-2", "tensor 'a'", "index.json");

    make_ckpt_dir(dir, sizeof dir, "dotdot", "{\"weight_map\":{\"a\":\"../" N1_ "\"}}", S1_, 24,
                  NULL, 0);
    expect_ckpt(dir, MOEQ_ERR_FORMAT, "CK-4", "tensor 'a'", "../" N1_);

    make_ckpt_dir(dir, sizeof dir, "slash", "{\"weight_map\":{\"a\":\"/etc/passwd\"}}", S1_, 24,
                  NULL, 0);
    expect_ckpt(dir, MOEQ_ERR_FORMAT, "CK-4", "tensor 'a'", "/etc/passwd");

    make_ckpt_dir(dir, sizeof dir, "bad_total", "{\"metadata\":{\"total_size\":-1},"
                  "\"weight_map\":{\"a\":\"" N1_ "\"}}", S1_, 24, NULL, 0);
    expect_ckpt(dir, MOEQ_ERR_FORMAT, "CK-3", "total_size", "index.json");

    /* CK-9: a total_size that disagrees with the shards is a warning (transformers ignores it) */
    make_ckpt_dir(dir, sizeof dir, "wrong_total", "{\"metadata\":{\"total_size\":33},"
                  "\"weight_map\":{" GOOD_WM_ "}}", S1_, 24, S2_, 8);
    {
        moeq_checkpoint *c = NULL;
        moeq_error err = {0};
        warned[0] = '\0';
        moeq_set_warn_handler(keep_warning);
        CHECK_MSG(moeq_ckpt_open(dir, &c, &err) == MOEQ_OK, "%s", err.detail);
        moeq_set_warn_handler(NULL);
        CHECK_MSG(strstr(warned, "CK-9") && strstr(warned, "33") && strstr(warned, "32 bytes") &&
                  strstr(warned, "index.json"), "warning '%s'", warned);
        moeq_ckpt_close(c);
    }

    /* a truncated shard: its own rule (ST-15) and its path */
    make_ckpt_dir(dir, sizeof dir, "truncated_shard", IDX_(GOOD_WM_), S1_, 24, S2_, 5);
    expect_ckpt(dir, MOEQ_ERR_FORMAT, "CK-5", "ST-15", N2_);

    make_ckpt_dir(dir, sizeof dir, "no_model_files", NULL, NULL, 0, NULL, 0);
    expect_ckpt(dir, MOEQ_ERR_NOT_FOUND, "CK-10", "model.safetensors.index.json", "nor model.safetensors");

    /* the memory entry point: the index rules without shards */
    moeq_error err = {0};
    size_t nt = 9, ns = 9;
    const char *good = IDX_(GOOD_WM_ ",\"c\":\"" N2_ "\"");
    CHECK(moeq_ckpt_parse_index(good, strlen(good), "mem", &nt, &ns, &err) == MOEQ_OK);
    CHECK(nt == 3 && ns == 2);
    CHECK(moeq_ckpt_parse_index("", 0, "mem", &nt, &ns, &err) == MOEQ_ERR_FORMAT);
    CHECK(contains(err.detail, "CK-1") && contains(err.detail, "mem"));
}

/* ---- broken token files ------------------------------------------------------------ */

static void expect_tokens(const char *path, int64_t vocab, moeq_status want, const char *f1,
                          const char *f2, const char *f3)
{
    int32_t *ids = (int32_t *)1;
    int64_t n = 7;
    moeq_error err = {0};
    moeq_status st = moeq_tokens_load(path, vocab, &ids, &n, &err);
    fprintf(stderr, "  [%s] %s\n", path, err.detail);
    CHECK_ERR(st, err, want, path, f1, f2, f3);
    CHECK(ids == NULL && n == 0);
}

static void test_broken_tokens(void)
{
    char p[256];
    tpath(p, sizeof p, "tok_empty.bin");
    CHECK(write_file(p, "", 0) == 0);
    expect_tokens(p, 0, MOEQ_ERR_FORMAT, "TK-5", "contains no tokens", "offset 0");

    tpath(p, sizeof p, "tok_seven.u32");
    CHECK(write_file(p, "1234567", 7) == 0);
    expect_tokens(p, 0, MOEQ_ERR_FORMAT, "TK-4", "7 bytes", "multiple of 4");

    tpath(p, sizeof p, "tok_f32.safetensors");
    write_image(p, "{\"tokens\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16);
    expect_tokens(p, 0, MOEQ_ERR_UNSUPPORTED, "TK-2", "tensor 'tokens'", "F32");

    tpath(p, sizeof p, "tok_2d.safetensors");
    write_image(p, "{\"tokens\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16);
    expect_tokens(p, 0, MOEQ_ERR_FORMAT, "TK-3", "tensor 'tokens'", "[2, 2]");

    tpath(p, sizeof p, "tok_two.safetensors");
    write_image(p, "{\"t1\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                   "\"t2\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    expect_tokens(p, 0, MOEQ_ERR_FORMAT, "TK-1", "'t1'", "'t2'");

    tpath(p, sizeof p, "tok_none.safetensors");
    write_image(p, "{\"tokens\":{\"dtype\":\"I32\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0);
    expect_tokens(p, 0, MOEQ_ERR_FORMAT, "TK-5", "tensor 'tokens'", "contains no tokens");

    tpath(p, sizeof p, "tok_broken.safetensors");
    write_image(p, "{\"tokens\":{\"dtype\":\"I32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 12);
    expect_tokens(p, 0, MOEQ_ERR_FORMAT, "ST-15", "tensor 'tokens'", "truncated");

    uint8_t raw[16] = {1, 0, 0, 0, 2, 0, 0, 0, 0x88, 0x13, 0, 0, 3, 0, 0, 0}; /* 1 2 5000 3 */
    tpath(p, sizeof p, "tok_big.bin");
    CHECK(write_file(p, raw, sizeof raw) == 0);
    expect_tokens(p, 1024, MOEQ_ERR_RANGE, "TK-6", "token 2 is id 5000", "1024 ids");
    int32_t *ids = NULL;
    int64_t n = 0;
    moeq_error err = {0};
    CHECK(moeq_tokens_load(p, 0, &ids, &n, &err) == MOEQ_OK); /* no vocab: no range check */
    CHECK(n == 4 && ids && ids[2] == 5000);
    free(ids);

    uint8_t hi[4] = {0xff, 0xff, 0xff, 0xff}; /* 2^32-1 does not fit int32 */
    tpath(p, sizeof p, "tok_u32max.bin");
    CHECK(write_file(p, hi, 4) == 0);
    expect_tokens(p, 0, MOEQ_ERR_RANGE, "TK-6", "token 0", "4294967295");

    /* I64 with a negative id; U32 ids: valid */
    tpath(p, sizeof p, "tok_neg.safetensors");
    {
        size_t len;
        uint8_t *img = st_image("{\"ids\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}",
                                -1, 16, &len);
        memset(img + len - 16, 0, 16);
        memset(img + len - 8, 0xff, 8); /* ids: 0, -1 */
        CHECK(write_file(p, img, len) == 0);
        free(img);
    }
    expect_tokens(p, 10, MOEQ_ERR_RANGE, "TK-6", "token 1 is id -1", "10 ids");
    tpath(p, sizeof p, "tok_u32.safetensors");
    {
        size_t len;
        uint8_t *img = st_image("{\"ids\":{\"dtype\":\"U32\",\"shape\":[3],\"data_offsets\":[0,12]}}",
                                -1, 12, &len);
        uint8_t v[12] = {7, 0, 0, 0, 9, 0, 0, 0, 0, 1, 0, 0};
        memcpy(img + len - 12, v, 12);
        CHECK(write_file(p, img, len) == 0);
        free(img);
    }
    CHECK(moeq_tokens_load(p, 1024, &ids, &n, &err) == MOEQ_OK);
    CHECK(n == 3 && ids && ids[0] == 7 && ids[1] == 9 && ids[2] == 256);
    free(ids);
}

/* ---- the committed copies ---------------------------------------------------------- */

static moeq_status status_by_name(const char *s)
{
    if (strcmp(s, "MOEQ_ERR_FORMAT") == 0) return MOEQ_ERR_FORMAT;
    if (strcmp(s, "MOEQ_ERR_UNSUPPORTED") == 0) return MOEQ_ERR_UNSUPPORTED;
    if (strcmp(s, "MOEQ_ERR_RANGE") == 0) return MOEQ_ERR_RANGE;
    if (strcmp(s, "MOEQ_ERR_IO") == 0) return MOEQ_ERR_IO;
    if (strcmp(s, "MOEQ_ERR_NOT_FOUND") == 0) return MOEQ_ERR_NOT_FOUND;
    return MOEQ_OK;
}

static void test_broken_committed(void)
{
    const char *base = "tests/broken/safetensors";
    char line[2048];
    snprintf(line, sizeof line, "%s/expected.tsv", base);
    FILE *fp = fopen(line, "r");
    CHECK_MSG(fp != NULL, "missing %s (run tests/broken/make_broken.py)", line);
    if (!fp) return;
    int rows = 0;
    while (fgets(line, sizeof line, fp)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        line[strcspn(line, "\n")] = '\0';
        char *name = strtok(line, "\t"), *stname = strtok(NULL, "\t"), *ex = strtok(NULL, "\t"),
             *frags = strtok(NULL, "\t");
        CHECK(name && stname && ex && frags);
        if (!name || !stname || !ex || !frags) continue;
        /* WARNING rows open fine and must warn with the fragments (CK-9) */
        int warn = strcmp(stname, "WARNING") == 0;
        moeq_status want = warn ? MOEQ_OK : status_by_name(stname);
        CHECK(warn ? atoi(ex) == 0 : want != MOEQ_OK && moeq_status_exit_code(want) == atoi(ex));
        warned[0] = '\0';
        moeq_set_warn_handler(keep_warning);
        char path[512];
        snprintf(path, sizeof path, "%s/%s", base, name);
        moeq_error err = {0};
        moeq_status st;
        if (strncmp(name, "tokens/", 7) == 0) {
            int32_t *ids = NULL;
            int64_t n = 0;
            st = moeq_tokens_load(path, 1024, &ids, &n, &err);
            free(ids);
        } else {
            moeq_checkpoint *c = NULL;
            st = moeq_ckpt_open(path, &c, &err);
            if (c) moeq_ckpt_close(c);
        }
        moeq_set_warn_handler(NULL);
        CHECK_MSG(st == want, "%s: status %d, want %d: %s", name, (int)st, (int)want, err.detail);
        const char *msg = warn ? warned : err.detail;
        CHECK_MSG(contains(msg, path), "%s: %s", name, msg);
        for (char *f = strtok(frags, "|"); f; f = strtok(NULL, "|"))
            CHECK_MSG(contains(msg, f), "%s: '%s' not in: %s", name, f, msg);
        rows++;
    }
    fclose(fp);
    CHECK(rows >= 40);
}

int main(void)
{
    snprintf(g_tmp, sizeof g_tmp, "/tmp/moeq_test_st_XXXXXX");
    if (!mkdtemp(g_tmp)) { perror("mkdtemp"); return 1; }
    RUN_TEST(test_dtype_helpers);
    RUN_TEST(test_parse_valid_image);
    RUN_TEST(test_open_errors);
    RUN_TEST(test_fixture_single_file);
    RUN_TEST(test_fixture_mixtral);
    RUN_TEST(test_fixture_olmoe);
    RUN_TEST(test_fixture_heldout_tokens);
    RUN_TEST(test_broken_safetensors);
    RUN_TEST(test_ckpt_valid_synthetic);
    RUN_TEST(test_broken_checkpoints);
    RUN_TEST(test_broken_tokens);
    RUN_TEST(test_broken_committed);
    tmp_cleanup();
    HARNESS_EXIT();
}
