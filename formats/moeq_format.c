/* Reader and deep check of the packed .moeq format. Every check cites its rule in
 * docs/FORMAT.md; lengths are checked before reads and sums before they can overflow. The
 * index is JSON, parsed by jansson. zstd-compressed tensors are decompressed at open. */
#include "moeq_pack.h"
#include "moeq_core.h"
#include "moeq_ggml.h"
#include "moeq_tdict.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

struct moeq_pack {
    char *path;
    const unsigned char *buf;
    size_t len;
    void *map;               /* mmap of the file, NULL when parsed from memory */
    size_t map_len;
    json_t *index;
    char *metadata;
    uint64_t index_offset;
    moeq_pack_file_entry *files;
    size_t nfiles;
    moeq_pack_tensor *tensors;
    size_t ntensors;
    moeq_pack_source *sources;
    size_t nsources;
    void **owned;            /* decompressed buffers */
    size_t nowned;
    /* lookups by binary search (a model has ~100k tensors): indices sorted by name, and the
     * tensors sorted by (source, source_offset) */
    size_t *tensor_by_name, *source_by_name, *file_by_name, *tensor_by_piece;
};

static uint64_t rd64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static const struct { const char *name; moeq_dtype dt; } RAW_DTYPES[] = {
    {"BF16", MOEQ_DT_BF16}, {"F16", MOEQ_DT_F16}, {"F32", MOEQ_DT_F32},
};

static moeq_dtype dtype_of(const char *s)
{
    for (size_t i = 0; i < 3; i++)
        if (!strcmp(s, RAW_DTYPES[i].name)) return RAW_DTYPES[i].dt;
    return MOEQ_DT_UNKNOWN;
}

int moeq_codec_format(const moeq_codec *c, char *buf, size_t cap)
{
    if (c->type == MOEQ_CODEC_RAW) {
        const char *n = c->dtype == MOEQ_DT_UNKNOWN ? "keep" : moeq_dtype_name(c->dtype);
        char low[16];
        size_t i = 0;
        for (; n[i] && i < sizeof low - 1; i++) low[i] = (char)(n[i] >= 'A' && n[i] <= 'Z' ? n[i] + 32 : n[i]);
        low[i] = '\0';
        return snprintf(buf, cap, "%s", low);
    }
    if (c->type == MOEQ_CODEC_GGML) {
        const moeq_ggml_type_info *ti = moeq_ggml_type_get(c->gtype);
        const char *n = ti ? ti->name : "?";
        char low[16];
        size_t i = 0;
        for (; n[i] && i < sizeof low - 1; i++) low[i] = (char)(n[i] >= 'A' && n[i] <= 'Z' ? n[i] + 32 : n[i]);
        low[i] = '\0';
        return snprintf(buf, cap, "%s", low);
    }
    if (c->type == MOEQ_CODEC_TDICT) return snprintf(buf, cap, "t1d");
    if (c->group == 0) return snprintf(buf, cap, "q%dc%c", c->bits, c->sym ? 's' : 'a');
    return snprintf(buf, cap, "q%dg%d%c", c->bits, c->group, c->sym ? 's' : 'a');
}

moeq_status moeq_codec_parse(const char *s, moeq_codec *out, moeq_error *err)
{
    memset(out, 0, sizeof *out);
    if (!strcmp(s, "keep")) { out->type = MOEQ_CODEC_RAW; out->dtype = MOEQ_DT_UNKNOWN; return MOEQ_OK; }
    if (!strcmp(s, "bf16")) { out->type = MOEQ_CODEC_RAW; out->dtype = MOEQ_DT_BF16; return MOEQ_OK; }
    if (!strcmp(s, "f16")) { out->type = MOEQ_CODEC_RAW; out->dtype = MOEQ_DT_F16; return MOEQ_OK; }
    if (!strcmp(s, "f32")) { out->type = MOEQ_CODEC_RAW; out->dtype = MOEQ_DT_F32; return MOEQ_OK; }
    if (!strcmp(s, "t1d")) { out->type = MOEQ_CODEC_TDICT; return MOEQ_OK; }
    const moeq_ggml_type_info *ti = moeq_ggml_type_by_name(s);
    if (ti && ti->block > 1) {   /* a ggml block type; the float ones are the raw codecs above */
        out->type = MOEQ_CODEC_GGML;
        out->gtype = (int)ti->type;
        return MOEQ_OK;
    }
    int bits = 0, group = 0, n = 0;
    char kind = 0;
    if (sscanf(s, "q%dg%d%c%n", &bits, &group, &kind, &n) == 3 && s[n] == '\0') {
        if (group != 32 && group != 64 && group != 128) goto bad;
    } else if (sscanf(s, "q%dc%c%n", &bits, &kind, &n) == 2 && s[n] == '\0') {
        group = 0;
    } else {
        goto bad;
    }
    if ((bits != 2 && bits != 3 && bits != 4 && bits != 8) || (kind != 'a' && kind != 's')) goto bad;
    out->type = MOEQ_CODEC_INT;
    out->bits = bits;
    out->group = group;
    out->sym = kind == 's';
    return MOEQ_OK;
bad:
    if (!strncmp(s, "t1", 2))   /* a near miss of t1d (not of tq1_0, tq2_0): named apart from the list below */
        return moeq_fail(err, MOEQ_ERR_MISUSE, "codec '%s': want t1d (ternary, dictionary coded, sub-1-bit), keep, "
                         "bf16, f16, f32, qBgGa|s, qBca|s or a ggml block type", s);
    return moeq_fail(err, MOEQ_ERR_MISUSE, "codec '%s': want keep, bf16, f16, f32, qBgGa|s (B in 2,3,4,8; "
                     "G in 32,64,128), qBca|s (per channel) or a ggml block type (q2_k, q3_k, q4_k, q5_k, q6_k, "
                     "iq4_xs, iq4_nl, q4_0, q4_1, q5_0, q5_1, q8_0, mxfp4, tq1_0, tq2_0, iq2_k, iq2_ks)", s);
}

/* The codec to name when a ggml type's block does not divide cols: the 32-block codec of about
 * the same bits per weight. */
static const struct { moeq_ggml_type t; const char *near; } GGML_NEAR[] = {
    {MOEQ_GGML_Q2_K, "q2g32s"}, {MOEQ_GGML_Q3_K, "q3g32s"}, {MOEQ_GGML_Q4_K, "iq4_nl"}, {MOEQ_GGML_IQ4_XS, "iq4_nl"},
    {MOEQ_GGML_Q5_K, "q5_0"},   {MOEQ_GGML_Q6_K, "q8_0"},   {MOEQ_GGML_TQ1_0, "q2g32s"}, {MOEQ_GGML_TQ2_0, "q2g32s"},
    {MOEQ_GGML_IQ2_K, "q2g32s"},
    {MOEQ_GGML_IQ2_KS, "q2g32s"},
};

moeq_status moeq_codec_check(const moeq_codec *c, int64_t rows, int64_t cols, moeq_error *err)
{
    if (c->type == MOEQ_CODEC_INT) {
        int g = c->group ? c->group : (int)(cols <= INT32_MAX ? cols : 0);
        if (!g) return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "per-channel group larger than 2^31");
        return moeq_qmat_check(c->bits, g, rows, cols, err);
    }
    if (c->type == MOEQ_CODEC_TDICT) {
        if (rows <= 0 || cols <= 0) return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "empty matrix");
        if (!moeq_tdict_raw_bound(rows, cols))
            return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "t1d: %lld x %lld is too large (its codewords must fit "
                             "u32 offsets: rows x ceil(cols / 2) < 2^32)", (long long)rows, (long long)cols);
        return MOEQ_OK;
    }
    if (c->type != MOEQ_CODEC_GGML) return moeq_fail(err, MOEQ_ERR_MISUSE, "not a matrix codec");
    const moeq_ggml_type_info *ti = moeq_ggml_type_get(c->gtype);
    if (!ti || ti->block <= 1)
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "ggml type %d is not a block type moeq supports", c->gtype);
    if (rows <= 0 || cols <= 0) return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "empty matrix");
    if (cols % ti->block) {
        const char *near = NULL;
        for (size_t i = 0; i < sizeof GGML_NEAR / sizeof GGML_NEAR[0]; i++)
            if ((int)GGML_NEAR[i].t == c->gtype) near = GGML_NEAR[i].near;
        if (cols % 32 == 0 && near)
            return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "cols %lld is not a multiple of %s's block of %d; the "
                             "nearest codec that fits is %s", (long long)cols, ti->name, ti->block, near);
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "cols %lld is not a multiple of %s's block of %d%s",
                         (long long)cols, ti->name, ti->block, cols % 32 ? " (nor of 32: no matrix codec fits; keep it)" : "");
    }
    return MOEQ_OK;
}

uint64_t moeq_codec_raw_bytes(const moeq_codec *c, int64_t rows, int64_t cols)
{
    moeq_error e;
    if (moeq_codec_check(c, rows, cols, &e)) return 0;
    if (c->type == MOEQ_CODEC_TDICT) return moeq_tdict_raw_bound(rows, cols);   /* data-dependent: the bound */
    if (c->type == MOEQ_CODEC_GGML) {
        uint64_t rb = moeq_ggml_row_bytes((moeq_ggml_type)c->gtype, cols);
        return (uint64_t)rows > UINT64_MAX / rb ? 0 : (uint64_t)rows * rb;
    }
    return moeq_qmat_bytes(c->bits, c->group ? c->group : (int)cols, c->sym, rows, cols, NULL, NULL);
}

double moeq_codec_bpw(const moeq_codec *c, int64_t cols)
{
    /* t1d before coding: the dictionary's expected rate at QMoE's p0, plus f16 lo, hi and a u32
     * offset per row (the coded size of a tensor is in its header: moeq_tdict_size_of) */
    if (c->type == MOEQ_CODEC_TDICT) return cols > 0 ? moeq_tdict_rate(MOEQ_TDICT_K_DEFAULT) + 64.0 / (double)cols : 0;
    if (c->type == MOEQ_CODEC_GGML) {
        const moeq_ggml_type_info *ti = moeq_ggml_type_get(c->gtype);
        if (!ti || ti->block <= 0) return 0;
        /* row meta (IQ2_KS's f16 row scale) spread over the row's cols */
        return 8.0 * ti->bytes / ti->block + (cols > 0 ? 8.0 * ti->row_meta / (double)cols : 0);
    }
    if (c->type != MOEQ_CODEC_INT || cols <= 0) return c->type == MOEQ_CODEC_RAW ? 8.0 * (double)moeq_dtype_size(c->dtype) : 0;
    int64_t g = c->group ? c->group : cols, ng = (cols + g - 1) / g;
    return c->bits + (double)ng * (c->sym ? 16 : 32) / (double)cols;
}

void moeq_codec_dequant(const moeq_codec *c, const void *raw, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                        float *dst)
{
    if (r0 < 0 || r1 > rows || r0 >= r1 || moeq_codec_raw_bytes(c, rows, cols) == 0) return;
    if (c->type == MOEQ_CODEC_TDICT) {   /* a checked tensor (moeq_tdict_check) */
        moeq_tdict_dequant(raw, r0, r1, dst);
        return;
    }
    if (c->type == MOEQ_CODEC_GGML) {
        size_t rb = moeq_ggml_row_bytes((moeq_ggml_type)c->gtype, cols);
        for (int64_t r = r0; r < r1; r++)
            moeq_ggml_dequant_row((moeq_ggml_type)c->gtype, (const unsigned char *)raw + (size_t)r * rb,
                                  dst + (size_t)(r - r0) * (size_t)cols, cols);
        return;
    }
    int g = c->group ? c->group : (int)cols;
    uint64_t so, zo;
    moeq_qmat_bytes(c->bits, g, c->sym, rows, cols, &so, &zo);
    const unsigned char *d = raw;
    moeq_qmat q = { .bits = c->bits, .group = g, .sym = c->sym, .rows = rows, .cols = cols, .codes = d,
                    .scales = (const uint16_t *)(const void *)(d + so),
                    .zeros = c->sym ? NULL : (const uint16_t *)(const void *)(d + zo) };
    moeq_kernels_ref.dequant(&q, r0, r1, dst);
}

void moeq_pack_close(moeq_pack *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->nowned; i++) free(p->owned[i]);
    free(p->owned);
    free(p->files);
    free(p->tensors);
    free(p->sources);
    free(p->metadata);
    free(p->tensor_by_name);
    free(p->source_by_name);
    free(p->file_by_name);
    free(p->tensor_by_piece);
    if (p->index) json_decref(p->index);
    if (p->map) {
        moeq_map_unregister(p->map);
        munmap(p->map, p->map_len);
    }
    free(p->path);
    free(p);
}

#define FAIL(code, ...) do { st = moeq_fail(err, code, __VA_ARGS__); goto fail; } while (0)

/* An integer field >= 0 of a JSON object. */
static int get_u64(json_t *o, const char *key, uint64_t *v)
{
    json_t *x = json_object_get(o, key);
    if (!json_is_integer(x) || json_integer_value(x) < 0) return -1;
    *v = (uint64_t)json_integer_value(x);
    return 0;
}

static int parse_hex64(const char *s, uint64_t *v)
{
    if (!s || strlen(s) != 16) return -1;
    uint64_t r = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        r = r << 4 | (uint64_t)d;
    }
    *v = r;
    return 0;
}

/* F-9: offset, size, xxh64 of a blob entry, inside the data area. */
static moeq_status parse_blob(moeq_pack *p, json_t *o, const char *what, const char *name,
                              moeq_pack_blob *b, moeq_error *err)
{
    memset(b, 0, sizeof *b);
    json_t *h = json_object_get(o, "xxh64");
    if (get_u64(o, "offset", &b->offset) || get_u64(o, "size", &b->size))
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: %s '%s': offset/size missing or not a non-negative "
                         "integer (F-9)", p->path, what, name);
    if (!json_is_string(h) || parse_hex64(json_string_value(h), &b->xxh64))
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: %s '%s': xxh64 is not 16 lowercase hex digits (F-9)",
                         p->path, what, name);
    if (b->offset % MOEQ_PACK_ALIGN || b->offset < MOEQ_PACK_ALIGN || b->offset > p->index_offset ||
        b->size > p->index_offset - b->offset)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: %s '%s': data [%llu, +%llu) is not 64-aligned inside "
                         "the data area [64, %llu) (F-9)", p->path, what, name,
                         (unsigned long long)b->offset, (unsigned long long)b->size,
                         (unsigned long long)p->index_offset);
    b->raw_size = b->size;
    return MOEQ_OK;
}

static int valid_name(const char *s, size_t maxlen)
{
    size_t n = strlen(s);
    return n >= 1 && n <= maxlen;
}

static int parse_shape(json_t *a, int *ndim, int64_t *shape, int64_t *numel)
{
    if (!json_is_array(a)) return -1;
    size_t n = json_array_size(a);
    if (n < 1 || n > MOEQ_MAX_DIMS) return -1;
    int64_t prod = 1;
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(a, i);
        if (!json_is_integer(x)) return -1;
        json_int_t d = json_integer_value(x);
        if (d <= 0 || prod > INT64_MAX / d) return -1;
        prod *= d;
        shape[i] = d;
    }
    *ndim = (int)n;
    *numel = prod;
    return 0;
}

typedef struct span { uint64_t off, size; const char *name; } span;
static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}
typedef struct piece { int64_t src, off, n; const char *name; } piece;
static int cmp_piece(const void *a, const void *b)
{
    const piece *x = a, *y = b;
    if (x->src != y->src) return x->src < y->src ? -1 : 1;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* qsort_r is not C11: the index sorts read the handle through a thread-local pointer, set
 * around each qsort */
static _Thread_local const moeq_pack *sort_ctx;
static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(sort_ctx->tensors[*(const size_t *)a].name, sort_ctx->tensors[*(const size_t *)b].name);
}
static int cmp_source_name(const void *a, const void *b)
{
    return strcmp(sort_ctx->sources[*(const size_t *)a].name, sort_ctx->sources[*(const size_t *)b].name);
}
static int cmp_file_name(const void *a, const void *b)
{
    return strcmp(sort_ctx->files[*(const size_t *)a].name, sort_ctx->files[*(const size_t *)b].name);
}
static int cmp_tensor_piece(const void *a, const void *b)
{
    const moeq_pack_tensor *x = &sort_ctx->tensors[*(const size_t *)a], *y = &sort_ctx->tensors[*(const size_t *)b];
    if (x->source_index != y->source_index) return x->source_index < y->source_index ? -1 : 1;
    return x->source_offset < y->source_offset ? -1 : x->source_offset > y->source_offset;
}
static size_t *sorted_index(const moeq_pack *p, size_t n, int (*cmp)(const void *, const void *))
{
    size_t *ix = malloc((n ? n : 1) * sizeof *ix);
    if (!ix) return NULL;
    for (size_t i = 0; i < n; i++) ix[i] = i;
    sort_ctx = p;
    qsort(ix, n, sizeof *ix, cmp);
    sort_ctx = NULL;
    return ix;
}
/* position of name in a name-sorted index, or -1 */
#define BSEARCH_NAME(arr, ix, n, key, out) do { \
        size_t lo_ = 0, hi_ = (n); (out) = -1; \
        while (lo_ < hi_) { \
            size_t mid_ = lo_ + (hi_ - lo_) / 2; \
            int c_ = strcmp((arr)[(ix)[mid_]].name, (key)); \
            if (c_ == 0) { (out) = (int64_t)(ix)[mid_]; break; } \
            if (c_ < 0) lo_ = mid_ + 1; else hi_ = mid_; \
        } \
    } while (0)

static moeq_status parse_codec(moeq_pack *p, json_t *c, const char *name, moeq_codec *out,
                               moeq_error *err)
{
    memset(out, 0, sizeof *out);
    json_t *type = json_object_get(c, "type");
    if (!json_is_object(c) || !json_is_string(type))
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: tensor '%s': codec is not an object with a type (F-12)",
                         p->path, name);
    const char *t = json_string_value(type);
    if (!strcmp(t, "raw")) {
        json_t *d = json_object_get(c, "dtype");
        out->type = MOEQ_CODEC_RAW;
        out->dtype = json_is_string(d) ? dtype_of(json_string_value(d)) : MOEQ_DT_UNKNOWN;
        if (out->dtype == MOEQ_DT_UNKNOWN)
            return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: tensor '%s': raw dtype is not BF16, F16 or F32 "
                             "(F-12)", p->path, name);
        return MOEQ_OK;
    }
    if (!strcmp(t, "ggml")) {
        json_t *g = json_object_get(c, "ggml_type");
        const moeq_ggml_type_info *ti = json_is_string(g) ? moeq_ggml_type_by_name(json_string_value(g)) : NULL;
        if (!json_is_string(g))
            return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: tensor '%s': ggml codec needs a ggml_type string (F-12)",
                             p->path, name);
        /* exactly as llama.cpp spells it: "Q4_K", not "q4_k" */
        if (!ti || ti->block <= 1 || strcmp(ti->name, json_string_value(g)))
            return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: tensor '%s': ggml_type '%.32s' is not a block type this "
                             "reader supports (F-12)", p->path, name, json_string_value(g));
        out->type = MOEQ_CODEC_GGML;
        out->gtype = (int)ti->type;
        return MOEQ_OK;
    }
    if (!strcmp(t, "t1d")) {   /* its p0 byte and sizes are in the data (checked with F-13) */
        out->type = MOEQ_CODEC_TDICT;
        return MOEQ_OK;
    }
    if (strcmp(t, "int"))
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: tensor '%s': codec type '%.32s' is not raw, int, ggml or t1d "
                         "(F-12)", p->path, name, t);
    json_t *b = json_object_get(c, "bits"), *g = json_object_get(c, "group"), *s = json_object_get(c, "sym");
    if (!json_is_integer(b) || !json_is_integer(g) || !json_is_boolean(s))
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: tensor '%s': int codec needs integer bits, group and "
                         "boolean sym (F-12)", p->path, name);
    json_int_t bits = json_integer_value(b), group = json_integer_value(g);
    if ((bits != 2 && bits != 3 && bits != 4 && bits != 8) ||
        (group != 0 && group != 32 && group != 64 && group != 128))
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: tensor '%s': int codec bits %lld group %lld: bits must "
                         "be 2, 3, 4 or 8 and group 0, 32, 64 or 128 (F-12)", p->path, name,
                         (long long)bits, (long long)group);
    out->type = MOEQ_CODEC_INT;
    out->bits = (int)bits;
    out->group = (int)group;
    out->sym = json_is_true(s);
    return MOEQ_OK;
}

static moeq_status decompress(moeq_pack *p, moeq_pack_tensor *t, moeq_error *err)
{
    const void *src = p->buf + t->blob.offset;
    unsigned long long cs = ZSTD_getFrameContentSize(src, (size_t)t->blob.size);
    if (cs == ZSTD_CONTENTSIZE_ERROR || cs == ZSTD_CONTENTSIZE_UNKNOWN || cs != t->blob.raw_size)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: tensor '%s': zstd frame at offset %llu does not declare "
                         "content size raw_size=%llu (F-14)", p->path, t->name,
                         (unsigned long long)t->blob.offset, (unsigned long long)t->blob.raw_size);
    if (t->blob.raw_size > (uint64_t)SIZE_MAX - 64)
        return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: tensor '%s': too large", p->path, t->name);
    void *dst = aligned_alloc(MOEQ_PACK_ALIGN, ((size_t)t->blob.raw_size + 63) / 64 * 64 + 64);
    if (!dst) return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: tensor '%s': out of memory for %llu bytes",
                               p->path, t->name, (unsigned long long)t->blob.raw_size);
    void **no = realloc(p->owned, (p->nowned + 1) * sizeof *no);
    if (!no) {
        free(dst);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", p->path);
    }
    p->owned = no;
    p->owned[p->nowned++] = dst;
    size_t r = ZSTD_decompress(dst, (size_t)t->blob.raw_size, src, (size_t)t->blob.size);
    if (ZSTD_isError(r) || r != t->blob.raw_size)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: tensor '%s': zstd frame at offset %llu: %s (F-14)",
                         p->path, t->name, (unsigned long long)t->blob.offset,
                         ZSTD_isError(r) ? ZSTD_getErrorName(r) : "short content");
    t->data = dst;
    moeq_pages_release(src, (size_t)t->blob.size);   /* the frame is read once (a no-op in memory) */
    return MOEQ_OK;
}

moeq_status moeq_pack_parse(const void *buf, size_t len, const char *label, moeq_pack **out,
                            moeq_error *err)
{
    *out = NULL;
    moeq_status st = MOEQ_OK;
    span *spans = NULL;
    piece *pieces = NULL;
    moeq_pack *p = calloc(1, sizeof *p);
    if (!p) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    p->path = strdup(label ? label : "(memory)");
    if (!p->path) FAIL(MOEQ_ERR_NOMEM, "out of memory");
    p->buf = buf;
    p->len = len;
    const unsigned char *b = buf;
    if (len < 64 || memcmp(b, "MOEQPACK", 8))   /* F-1 */
        FAIL(MOEQ_ERR_FORMAT, "%s: not a .moeq file: %s (F-1)", p->path,
             len < 64 ? "shorter than the 64-byte prefix" : "magic at offset 0 is not MOEQPACK");
    uint32_t version = rd32(b + 8), flags = rd32(b + 12);
    if (version != MOEQ_PACK_VERSION)   /* F-2 */
        FAIL(MOEQ_ERR_UNSUPPORTED, "%s: version %u at offset 8 is not supported (this reader: 1) (F-2)",
             p->path, version);
    int reserved_nonzero = flags != 0;
    for (int i = 48; i < 64; i++) reserved_nonzero |= b[i] != 0;
    if (reserved_nonzero)   /* F-3 */
        FAIL(MOEQ_ERR_FORMAT, "%s: flags (offset 12) or reserved bytes (48..63) are not zero (F-3)", p->path);
    uint64_t ioff = rd64(b + 16), ilen = rd64(b + 24), ihash = rd64(b + 32), fsize = rd64(b + 40);
    if (fsize != len)   /* F-5 */
        FAIL(MOEQ_ERR_FORMAT, "%s: file_size field (offset 40) says %llu bytes, the file has %zu (F-5: "
             "truncated or extended)", p->path, (unsigned long long)fsize, len);
    if (ioff % MOEQ_PACK_ALIGN || ioff < 64 || ilen < 2 || ilen > MOEQ_PACK_INDEX_MAX || ioff > len ||
        ilen != len - ioff)   /* F-6 */
        FAIL(MOEQ_ERR_FORMAT, "%s: index at offset %llu length %llu (prefix offset 16/24) does not end the "
             "file of %zu bytes on a 64-byte boundary (F-6)", p->path, (unsigned long long)ioff,
             (unsigned long long)ilen, len);
    p->index_offset = ioff;
    if (XXH64(b + ioff, (size_t)ilen, 0) != ihash)   /* F-7 */
        FAIL(MOEQ_ERR_FORMAT, "%s: index checksum mismatch (xxh64 at offset 32) (F-7)", p->path);
    json_error_t je;
    p->index = json_loadb((const char *)b + ioff, (size_t)ilen, JSON_REJECT_DUPLICATES, &je);
    if (!p->index || !json_is_object(p->index))   /* F-8 */
        FAIL(MOEQ_ERR_FORMAT, "%s: index at offset %llu is not a JSON object: %s (F-8)", p->path,
             (unsigned long long)ioff, p->index ? "not an object" : je.text);
    json_t *fmt = json_object_get(p->index, "format"), *ver = json_object_get(p->index, "version");
    json_t *jf = json_object_get(p->index, "files"), *jt = json_object_get(p->index, "tensors");
    json_t *js = json_object_get(p->index, "sources"), *jm = json_object_get(p->index, "metadata");
    if (!json_is_string(fmt) || strcmp(json_string_value(fmt), "moeq") || !json_is_integer(ver) ||
        json_integer_value(ver) != 1 || !json_is_array(jf) || !json_is_array(jt) || !json_is_array(js) ||
        (jm && !json_is_object(jm)))
        FAIL(MOEQ_ERR_FORMAT, "%s: index needs format \"moeq\", version 1, arrays files, tensors, sources "
             "and an optional metadata object (F-8)", p->path);
    if (jm) p->metadata = json_dumps(jm, JSON_COMPACT | JSON_SORT_KEYS);

    size_t nf = json_array_size(jf), nt = json_array_size(jt), ns = json_array_size(js);
    p->files = calloc(nf ? nf : 1, sizeof *p->files);
    p->tensors = calloc(nt ? nt : 1, sizeof *p->tensors);
    p->sources = calloc(ns ? ns : 1, sizeof *p->sources);
    spans = calloc(nf + nt + 1, sizeof *spans);
    pieces = calloc(nt + 1, sizeof *pieces);
    if (!p->files || !p->tensors || !p->sources || !spans || !pieces)
        FAIL(MOEQ_ERR_NOMEM, "%s: out of memory for the index", p->path);
    size_t nspan = 0;

    /* F-15 sources */
    for (size_t i = 0; i < ns; i++) {
        json_t *o = json_array_get(js, i), *n = json_object_get(o, "name"), *d = json_object_get(o, "dtype");
        moeq_pack_source *s = &p->sources[i];
        if (!json_is_string(n) || !valid_name(json_string_value(n), 511) || !json_is_string(d) ||
            parse_shape(json_object_get(o, "shape"), &s->ndim, s->shape, &s->numel))
            FAIL(MOEQ_ERR_FORMAT, "%s: sources[%zu]: needs a name (1..511 bytes), dtype and shape (F-15)",
                 p->path, i);
        s->name = json_string_value(n);
        s->dtype = dtype_of(json_string_value(d));
        if (s->dtype == MOEQ_DT_UNKNOWN)
            FAIL(MOEQ_ERR_UNSUPPORTED, "%s: source '%s': dtype '%.16s' is not BF16, F16 or F32 (F-15)",
                 p->path, s->name, json_string_value(d));
        p->nsources++;
    }
    if (!(p->source_by_name = sorted_index(p, ns, cmp_source_name))) FAIL(MOEQ_ERR_NOMEM, "%s: out of memory", p->path);
    for (size_t i = 1; i < ns; i++)
        if (!strcmp(p->sources[p->source_by_name[i]].name, p->sources[p->source_by_name[i - 1]].name))
            FAIL(MOEQ_ERR_FORMAT, "%s: source '%s' listed twice (F-15)", p->path, p->sources[p->source_by_name[i]].name);

    /* F-10 files */
    for (size_t i = 0; i < nf; i++) {
        json_t *o = json_array_get(jf, i), *n = json_object_get(o, "name");
        if (!json_is_object(o) || !json_is_string(n))
            FAIL(MOEQ_ERR_FORMAT, "%s: files[%zu] has no name (F-10)", p->path, i);
        const char *name = json_string_value(n);
        if (!valid_name(name, 255) || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
            FAIL(MOEQ_ERR_FORMAT, "%s: files[%zu]: name '%.64s' is not a plain file name (F-10)", p->path, i, name);
        moeq_pack_file_entry *f = &p->files[i];
        f->name = name;
        if ((st = parse_blob(p, o, "file", name, &f->blob, err))) goto fail;
        f->data = b + f->blob.offset;
        spans[nspan++] = (span){ f->blob.offset, f->blob.size, name };
        p->nfiles++;
    }
    if (!(p->file_by_name = sorted_index(p, nf, cmp_file_name))) FAIL(MOEQ_ERR_NOMEM, "%s: out of memory", p->path);
    for (size_t i = 1; i < nf; i++)
        if (!strcmp(p->files[p->file_by_name[i]].name, p->files[p->file_by_name[i - 1]].name))
            FAIL(MOEQ_ERR_FORMAT, "%s: file '%s' listed twice (F-10)", p->path, p->files[p->file_by_name[i]].name);
    if (!moeq_pack_find_file(p, "config.json"))
        FAIL(MOEQ_ERR_FORMAT, "%s: no embedded config.json (F-10)", p->path);

    /* F-11..F-14 tensors */
    for (size_t i = 0; i < nt; i++) {
        json_t *o = json_array_get(jt, i), *n = json_object_get(o, "name");
        if (!json_is_object(o) || !json_is_string(n) || !valid_name(json_string_value(n), 511))
            FAIL(MOEQ_ERR_FORMAT, "%s: tensors[%zu]: name missing or not 1..511 bytes (F-11)", p->path, i);
        moeq_pack_tensor *t = &p->tensors[i];
        t->name = json_string_value(n);
        if (parse_shape(json_object_get(o, "shape"), &t->ndim, t->shape, &t->numel))
            FAIL(MOEQ_ERR_FORMAT, "%s: tensor '%s': shape is not 1..8 positive dimensions with an int64 "
                 "product (F-11)", p->path, t->name);
        if ((st = parse_codec(p, json_object_get(o, "codec"), t->name, &t->codec, err))) goto fail;
        if ((st = parse_blob(p, o, "tensor", t->name, &t->blob, err))) goto fail;
        json_t *z = json_object_get(o, "zstd");
        t->blob.zstd = json_is_true(z);
        if (t->blob.zstd && get_u64(o, "raw_size", &t->blob.raw_size))
            FAIL(MOEQ_ERR_FORMAT, "%s: tensor '%s': zstd without raw_size (F-11)", p->path, t->name);
        uint64_t want;
        if (t->codec.type == MOEQ_CODEC_RAW) {
            size_t es = moeq_dtype_size(t->codec.dtype);
            if ((uint64_t)t->numel > UINT64_MAX / es)
                FAIL(MOEQ_ERR_FORMAT, "%s: tensor '%s': size overflows (F-13)", p->path, t->name);
            want = (uint64_t)t->numel * es;
        } else {
            if (t->ndim != 2)
                FAIL(MOEQ_ERR_FORMAT, "%s: tensor '%s': a matrix codec (%s) needs a 2-D shape, got %d dimensions (F-12)",
                     p->path, t->name, t->codec.type == MOEQ_CODEC_GGML ? "ggml" : t->codec.type == MOEQ_CODEC_TDICT ? "t1d" : "int",
                     t->ndim);
            moeq_error e2;
            if (moeq_codec_check(&t->codec, t->shape[0], t->shape[1], &e2))
                FAIL(MOEQ_ERR_UNSUPPORTED, "%s: tensor '%s': %s (F-12)", p->path, t->name, e2.detail);
            want = moeq_codec_raw_bytes(&t->codec, t->shape[0], t->shape[1]);
            if (!want) FAIL(MOEQ_ERR_FORMAT, "%s: tensor '%s': size overflows (F-13)", p->path, t->name);
            /* t1d: the size its header says, checked with the data after F-14 (at most the bound) */
            if (t->codec.type == MOEQ_CODEC_TDICT && t->blob.raw_size <= want) want = t->blob.raw_size;
        }
        if (t->blob.raw_size != want)   /* F-13 */
            FAIL(MOEQ_ERR_FORMAT, "%s: tensor '%s': %s %llu bytes, the codec and shape imply %llu (F-13)",
                 p->path, t->name, t->blob.zstd ? "raw_size" : "size", (unsigned long long)t->blob.raw_size,
                 (unsigned long long)want);
        json_t *src = json_object_get(o, "source"), *soff = json_object_get(o, "source_offset");
        if (!json_is_string(src) || !json_is_integer(soff) || json_integer_value(soff) < 0)
            FAIL(MOEQ_ERR_FORMAT, "%s: tensor '%s': source or source_offset missing (F-15)", p->path, t->name);
        t->source = json_string_value(src);
        t->source_offset = json_integer_value(soff);
        BSEARCH_NAME(p->sources, p->source_by_name, ns, t->source, t->source_index);
        if (t->source_index < 0)
            FAIL(MOEQ_ERR_FORMAT, "%s: tensor '%s': source '%.128s' is not in the sources table (F-15)",
                 p->path, t->name, t->source);
        const moeq_pack_source *s = &p->sources[t->source_index];
        if (t->source_offset > s->numel || t->numel > s->numel - t->source_offset)
            FAIL(MOEQ_ERR_FORMAT, "%s: tensor '%s': elements [%lld, +%lld) outside source '%s' of %lld (F-15)",
                 p->path, t->name, (long long)t->source_offset, (long long)t->numel, s->name, (long long)s->numel);
        pieces[i] = (piece){ t->source_index, t->source_offset, t->numel, t->name };
        spans[nspan++] = (span){ t->blob.offset, t->blob.size, t->name };
        p->ntensors++;
    }
    if (!(p->tensor_by_name = sorted_index(p, nt, cmp_tensor_name)) ||
        !(p->tensor_by_piece = sorted_index(p, nt, cmp_tensor_piece)))
        FAIL(MOEQ_ERR_NOMEM, "%s: out of memory", p->path);
    for (size_t i = 1; i < nt; i++)
        if (!strcmp(p->tensors[p->tensor_by_name[i]].name, p->tensors[p->tensor_by_name[i - 1]].name))
            FAIL(MOEQ_ERR_FORMAT, "%s: tensor '%s' listed twice (F-11)", p->path, p->tensors[p->tensor_by_name[i]].name);
    /* F-9: no overlap */
    qsort(spans, nspan, sizeof *spans, cmp_span);
    for (size_t i = 1; i < nspan; i++)
        if (spans[i].off < spans[i - 1].off + spans[i - 1].size)
            FAIL(MOEQ_ERR_FORMAT, "%s: blobs '%s' and '%s' overlap at offset %llu (F-9)", p->path,
                 spans[i - 1].name, spans[i].name, (unsigned long long)spans[i].off);
    /* F-15: pieces cover every source exactly once */
    qsort(pieces, nt, sizeof *pieces, cmp_piece);
    size_t k = 0;
    for (size_t si = 0; si < ns; si++) {
        int64_t at = 0;
        for (; k < nt && pieces[k].src == (int64_t)si; k++) {
            if (pieces[k].off != at)
                FAIL(MOEQ_ERR_FORMAT, "%s: source '%s': tensor '%s' starts at element %lld, expected %lld "
                     "(gap or overlap) (F-15)", p->path, p->sources[si].name, pieces[k].name,
                     (long long)pieces[k].off, (long long)at);
            at += pieces[k].n;
        }
        if (at != p->sources[si].numel)
            FAIL(MOEQ_ERR_FORMAT, "%s: source '%s': tensors cover %lld of its %lld elements (F-15)", p->path,
                 p->sources[si].name, (long long)at, (long long)p->sources[si].numel);
    }
    /* F-14 decompress; then kernel views */
    for (size_t i = 0; i < nt; i++) {
        moeq_pack_tensor *t = &p->tensors[i];
        if (t->blob.zstd) {
            if ((st = decompress(p, t, err))) goto fail;
        } else {
            t->data = b + t->blob.offset;
        }
        if (t->codec.type == MOEQ_CODEC_TDICT) {   /* F-13 for t1d: the header, offsets and codewords */
            moeq_error e2;
            moeq_status ts = moeq_tdict_check(t->data, t->blob.raw_size, t->shape[0], t->shape[1], &e2);
            if (ts) FAIL(ts, "%s: tensor '%s' (data at offset %llu): %s (F-13)", p->path, t->name,
                         (unsigned long long)t->blob.offset, e2.detail);
        }
        if (t->codec.type == MOEQ_CODEC_INT) {
            uint64_t so, zo;
            int g = t->codec.group ? t->codec.group : (int)t->shape[1];
            moeq_qmat_bytes(t->codec.bits, g, t->codec.sym, t->shape[0], t->shape[1], &so, &zo);
            const unsigned char *d = t->data;
            t->q = (moeq_qmat){ .bits = t->codec.bits, .group = g, .sym = t->codec.sym, .rows = t->shape[0],
                                .cols = t->shape[1], .codes = d, .scales = (const uint16_t *)(const void *)(d + so),
                                .zeros = t->codec.sym ? NULL : (const uint16_t *)(const void *)(d + zo) };
        }
    }
    free(spans);
    free(pieces);
    *out = p;
    return MOEQ_OK;
fail:
    free(spans);
    free(pieces);
    moeq_pack_close(p);
    return st;
}

int moeq_pack_is_packed(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char m[8];
    int ok = fread(m, 1, 8, f) == 8 && !memcmp(m, "MOEQPACK", 8);
    fclose(f);
    return ok;
}

moeq_status moeq_pack_open(const char *path, moeq_pack **out, moeq_error *err)
{
    *out = NULL;
    void *map;
    size_t len;
    moeq_status st = moeq_map_file(path, &map, &len, err);
    if (st != MOEQ_OK) return st;
    static const unsigned char empty[1];
    moeq_map_register(map, len);   /* its pages may be released (moeq_pages_release) */
    st = moeq_pack_parse(map ? map : empty, len, path, out, err);
    if (st != MOEQ_OK) {
        if (map) {
            moeq_map_unregister(map);
            munmap(map, len);
        }
        return st;
    }
    (*out)->map = map;
    (*out)->map_len = len;
    return MOEQ_OK;
}

/* F-16 for a ggml codec: its f16 scales (d, dmin) decide whether a value can be non-finite,
 * and a block's values are finite exactly when they are; each row is decoded and scanned. */
static moeq_status ggml_check_finite(const moeq_pack *p, const moeq_pack_tensor *t, moeq_error *err)
{
    const int64_t rows = t->shape[0], cols = t->shape[1];
    const moeq_ggml_type_info *ti = moeq_ggml_type_get(t->codec.gtype);
    float *row = malloc((size_t)cols * sizeof *row);
    if (!row) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    moeq_status st = MOEQ_OK;
    for (int64_t r = 0; r < rows && !st; r++) {
        moeq_codec_dequant(&t->codec, t->data, rows, cols, r, r + 1, row);
        for (int64_t c = 0; c < cols; c++)
            if (!isfinite(row[c])) {
                st = moeq_fail(err, MOEQ_ERR_NUMERIC, "%s: tensor '%s': %s block %lld of row %lld (byte %llu of "
                               "its data) decodes to %s: a scale is not finite (F-16)", p->path, t->name, ti->name,
                               (long long)(c / ti->block), (long long)r,
                               (unsigned long long)((uint64_t)r * moeq_ggml_row_bytes((moeq_ggml_type)t->codec.gtype, cols)),
                               isnan(row[c]) ? "NaN" : "Inf");
                break;
            }
    }
    free(row);
    return st;
}

/* F-9 checksums and padding, F-16 finite scales and raw floats. */
moeq_status moeq_pack_verify(const moeq_pack *p, moeq_error *err)
{
    size_t n = p->nfiles + p->ntensors;
    span *sp = calloc(n + 1, sizeof *sp);
    if (!sp) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < p->nfiles; i++) {
        const moeq_pack_file_entry *f = &p->files[i];
        sp[i] = (span){ f->blob.offset, f->blob.size, f->name };
        if (XXH64(p->buf + f->blob.offset, (size_t)f->blob.size, 0) != f->blob.xxh64) {
            free(sp);
            return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: file '%s' at offset %llu: checksum mismatch (F-9)",
                             p->path, f->name, (unsigned long long)f->blob.offset);
        }
    }
    moeq_status st = MOEQ_OK;
    for (size_t i = 0; i < p->ntensors && st == MOEQ_OK; i++) {
        const moeq_pack_tensor *t = &p->tensors[i];
        sp[p->nfiles + i] = (span){ t->blob.offset, t->blob.size, t->name };
        if (XXH64(p->buf + t->blob.offset, (size_t)t->blob.size, 0) != t->blob.xxh64) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: tensor '%s' at offset %llu: checksum mismatch (F-9)",
                           p->path, t->name, (unsigned long long)t->blob.offset);
            break;
        }
        if (t->codec.type == MOEQ_CODEC_INT) {
            int64_t ng = t->q.rows * moeq_qmat_groups(&t->q);
            for (int pass = 0; pass < (t->q.sym ? 1 : 2); pass++) {
                const uint16_t *v = pass ? t->q.zeros : t->q.scales;
                for (int64_t j = 0; j < ng; j++)
                    if ((v[j] & 0x7c00u) == 0x7c00u) {
                        st = moeq_fail(err, MOEQ_ERR_NUMERIC, "%s: tensor '%s': %s of row %lld group %lld is "
                                       "%s (F-16)", p->path, t->name, pass ? "zero" : "scale",
                                       (long long)(j / moeq_qmat_groups(&t->q)),
                                       (long long)(j % moeq_qmat_groups(&t->q)), (v[j] & 0x3ff) ? "NaN" : "Inf");
                        break;
                    }
                if (st) break;
            }
        } else if (t->codec.type == MOEQ_CODEC_GGML) {
            st = ggml_check_finite(p, t, err);
        } else if (t->codec.type == MOEQ_CODEC_TDICT) {
            /* F-16: its levels were checked finite at open with the rest of its layout */
        } else {
            moeq_tensor view = { .name = t->name, .dtype = t->codec.dtype, .ndim = t->ndim, .numel = t->numel,
                                 .data = t->data, .nbytes = t->blob.raw_size, .file = p->path,
                                 .file_offset = t->blob.offset };
            memcpy(view.shape, t->shape, sizeof view.shape);
            st = moeq_tensor_check_finite(&view, NULL, err);
        }
        moeq_pages_release(p->buf + t->blob.offset, (size_t)t->blob.size);   /* read once */
    }
    if (st == MOEQ_OK) {
        /* F-9 zero padding between blobs and before the index */
        qsort(sp, n, sizeof *sp, cmp_span);
        uint64_t at = 64;
        for (size_t i = 0; i <= n && st == MOEQ_OK; i++) {
            uint64_t end = i < n ? sp[i].off : p->index_offset;
            for (uint64_t o = at; o < end; o++)
                if (p->buf[o]) {
                    st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: padding byte at offset %llu is not zero (F-9)",
                                   p->path, (unsigned long long)o);
                    break;
                }
            if (i < n) at = sp[i].off + sp[i].size;
        }
    }
    free(sp);
    return st;
}

const char *moeq_pack_path(const moeq_pack *p) { return p->path; }
uint64_t moeq_pack_file_size(const moeq_pack *p) { return p->len; }
size_t moeq_pack_nfiles(const moeq_pack *p) { return p->nfiles; }
const moeq_pack_file_entry *moeq_pack_file(const moeq_pack *p, size_t i) { return i < p->nfiles ? &p->files[i] : NULL; }
const moeq_pack_file_entry *moeq_pack_find_file(const moeq_pack *p, const char *name)
{
    int64_t i;
    BSEARCH_NAME(p->files, p->file_by_name, p->nfiles, name, i);
    return i < 0 ? NULL : &p->files[i];
}
size_t moeq_pack_ntensors(const moeq_pack *p) { return p->ntensors; }
const moeq_pack_tensor *moeq_pack_tensor_at(const moeq_pack *p, size_t i) { return i < p->ntensors ? &p->tensors[i] : NULL; }
const moeq_pack_tensor *moeq_pack_find(const moeq_pack *p, const char *name)
{
    int64_t i;
    BSEARCH_NAME(p->tensors, p->tensor_by_name, p->ntensors, name, i);
    return i < 0 ? NULL : &p->tensors[i];
}
size_t moeq_pack_nsources(const moeq_pack *p) { return p->nsources; }
const moeq_pack_source *moeq_pack_source_at(const moeq_pack *p, size_t i) { return i < p->nsources ? &p->sources[i] : NULL; }
const moeq_pack_source *moeq_pack_find_source(const moeq_pack *p, const char *name)
{
    int64_t i;
    BSEARCH_NAME(p->sources, p->source_by_name, p->nsources, name, i);
    return i < 0 ? NULL : &p->sources[i];
}
const moeq_pack_tensor *moeq_pack_find_piece(const moeq_pack *p, const char *source, int64_t off)
{
    const moeq_pack_source *s = moeq_pack_find_source(p, source);
    if (!s) return NULL;
    int64_t si = s - p->sources;
    size_t lo = 0, hi = p->ntensors;
    while (lo < hi) {   /* tensor_by_piece is sorted by (source_index, source_offset) */
        size_t mid = lo + (hi - lo) / 2;
        const moeq_pack_tensor *t = &p->tensors[p->tensor_by_piece[mid]];
        if (t->source_index == si && t->source_offset == off) return t;
        if (t->source_index < si || (t->source_index == si && t->source_offset < off)) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}
const char *moeq_pack_metadata(const moeq_pack *p) { return p->metadata; }
