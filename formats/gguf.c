/* GGUF v3 reader over mmap. Rules G-1..G-12 (docs/FORMAT-gguf.md) follow llama.cpp's
 * gguf_init_from_file_impl (v0.4.0), the stricter of the two consumers: every length is checked
 * against the bytes left before it is read, every size product for overflow, and tensor data
 * must lie at exactly the padded running offset that mainline requires. */
#include "moeq_gguf.h"
#include "moeq_core.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ggml's enum ggml_type: block sizes and bytes per block (ggml.c type_traits); ik_llama.cpp's
 * types (ids from 137 on) with their row meta (the rows above leave it 0). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
static const moeq_gguf_type types[] = {
    { 0, "F32", 1, 4 },        { 1, "F16", 1, 2 },         { 2, "Q4_0", 32, 18 },
    { 3, "Q4_1", 32, 20 },     { 6, "Q5_0", 32, 22 },      { 7, "Q5_1", 32, 24 },
    { 8, "Q8_0", 32, 34 },     { 9, "Q8_1", 32, 36 },      { 10, "Q2_K", 256, 84 },
    { 11, "Q3_K", 256, 110 },  { 12, "Q4_K", 256, 144 },   { 13, "Q5_K", 256, 176 },
    { 14, "Q6_K", 256, 210 },  { 15, "Q8_K", 256, 292 },   { 16, "IQ2_XXS", 256, 66 },
    { 17, "IQ2_XS", 256, 74 }, { 18, "IQ3_XXS", 256, 98 }, { 19, "IQ1_S", 256, 50 },
    { 20, "IQ4_NL", 32, 18 },  { 21, "IQ3_S", 256, 110 },  { 22, "IQ2_S", 256, 82 },
    { 23, "IQ4_XS", 256, 136 },{ 24, "I8", 1, 1 },         { 25, "I16", 1, 2 },
    { 26, "I32", 1, 4 },       { 27, "I64", 1, 8 },        { 28, "F64", 1, 8 },
    { 29, "IQ1_M", 256, 56 },  { 30, "BF16", 1, 2 },       { 34, "TQ1_0", 256, 54 },
    { 35, "TQ2_0", 256, 66 },  { 39, "MXFP4", 32, 17 },
    { 137, "IQ2_K", 256, 76 },   /* ik_llama.cpp only */
    { 145, "IQ2_KS", 256, 70, 2 },
};
#pragma GCC diagnostic pop
#define N_TYPES (sizeof types / sizeof types[0])

const moeq_gguf_type *moeq_gguf_type_get(int id)
{
    for (size_t i = 0; i < N_TYPES; i++)
        if (types[i].id == id) return &types[i];
    return NULL;
}

const moeq_gguf_type *moeq_gguf_type_by_name(const char *name)
{
    if (!name) return NULL;
    for (size_t i = 0; i < N_TYPES; i++)
        if (!strcasecmp(types[i].name, name)) return &types[i];
    return NULL;
}

static const char *const vtype_names[] = { "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32",
                                           "FLOAT32", "BOOL", "STRING", "ARRAY", "UINT64", "INT64",
                                           "FLOAT64" };
static const int vtype_size[] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };

const char *moeq_gguf_vtype_name(int t)
{
    return t >= 0 && t <= 12 ? vtype_names[t] : "unknown";
}

struct moeq_gguf {
    char *label;
    const unsigned char *buf;
    size_t len;
    void *map;                 /* owned mmap, NULL for a parsed buffer */
    uint32_t version, alignment;
    uint64_t data_offset;
    moeq_gguf_kv *kv;
    size_t nkv;
    moeq_gguf_tensor *t;
    size_t nt;
    size_t *t_sorted;          /* tensor indexes sorted by name, for lookup */
    char *names;               /* arena of NUL-terminated keys and names */
};

typedef struct rd {
    const unsigned char *b;
    size_t len, pos;
    const char *label;
    moeq_error *err;
} rd;

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* G-3: a read of n bytes must fit in what is left */
static moeq_status need(rd *r, uint64_t n, const char *what, const char *name)
{
    if (n > r->len - r->pos)
        return moeq_fail(r->err, MOEQ_ERR_FORMAT,
                         "%s: GGUF G-3: %s%s%s%s at offset %zu needs %" PRIu64 " bytes, %zu left (truncated file)",
                         r->label, what, name ? " of '" : "", name ? name : "", name ? "'" : "", r->pos, n,
                         r->len - r->pos);
    return MOEQ_OK;
}

/* G-4: a string, copied NUL-terminated into the arena at *arena (enough room reserved) */
static moeq_status rd_str(rd *r, const char *what, const char *owner, const unsigned char **s, uint64_t *n)
{
    moeq_status st = need(r, 8, what, owner);
    if (st) return st;
    uint64_t l = le(r->b + r->pos, 8);
    r->pos += 8;
    if ((st = need(r, l, what, owner))) return st;
    *s = r->b + r->pos;
    *n = l;
    r->pos += (size_t)l;
    return MOEQ_OK;
}

static void gguf_free(moeq_gguf *g)
{
    if (!g) return;
    if (g->map) {
        moeq_map_unregister(g->map);
        munmap(g->map, g->len);
    }
    free(g->label);
    free(g->kv);
    free(g->t);
    free(g->t_sorted);
    free(g->names);
    free(g);
}

static int cmp_kv(const void *a, const void *b)
{
    return strcmp(((const moeq_gguf_kv *)a)->key, ((const moeq_gguf_kv *)b)->key);
}

static const moeq_gguf_tensor *g_sort_base;
static int cmp_tidx(const void *a, const void *b)
{
    return strcmp(g_sort_base[*(const size_t *)a].name, g_sort_base[*(const size_t *)b].name);
}

/* Skips one value of type t (G-5), checking its bytes; arrays of strings walk each string. */
static moeq_status skip_value(rd *r, int t, const char *key, moeq_gguf_kv *kv)
{
    moeq_status st;
    if (t < 0 || t > 12)
        return moeq_fail(r->err, MOEQ_ERR_FORMAT, "%s: GGUF G-5: key '%s' at offset %zu: value type %d is not a "
                         "GGUF type (0..12)", r->label, key, r->pos - 4, t);
    kv->type = (moeq_gguf_vtype)t;
    kv->elem = (moeq_gguf_vtype)t;
    kv->count = 1;
    if (t == MOEQ_GGUF_STRING) {
        kv->value = r->b + r->pos;
        kv->offset = r->pos;
        const unsigned char *s;
        uint64_t n;
        return rd_str(r, "string value", key, &s, &n);
    }
    if (t != MOEQ_GGUF_ARRAY) {
        if ((st = need(r, (uint64_t)vtype_size[t], "value", key))) return st;
        kv->value = r->b + r->pos;
        kv->offset = r->pos;
        if (t == MOEQ_GGUF_BOOL && r->b[r->pos] > 1)
            return moeq_fail(r->err, MOEQ_ERR_FORMAT, "%s: GGUF G-5: key '%s' at offset %zu: BOOL value %u is not "
                             "0 or 1", r->label, key, r->pos, r->b[r->pos]);
        r->pos += (size_t)vtype_size[t];
        return MOEQ_OK;
    }
    if ((st = need(r, 12, "array header", key))) return st;
    int32_t et = (int32_t)le(r->b + r->pos, 4);
    uint64_t cnt = le(r->b + r->pos + 4, 8);
    if (et < 0 || et > 12 || et == MOEQ_GGUF_ARRAY)
        return moeq_fail(r->err, MOEQ_ERR_FORMAT, "%s: GGUF G-5: key '%s' at offset %zu: array element type %d "
                         "is not allowed (0..12, no nested arrays)", r->label, key, r->pos, (int)et);
    r->pos += 12;
    kv->elem = (moeq_gguf_vtype)et;
    kv->count = cnt;
    kv->value = r->b + r->pos;
    kv->offset = r->pos;
    if (et != MOEQ_GGUF_STRING) {
        uint64_t es = (uint64_t)vtype_size[et];
        if (cnt > (r->len - r->pos) / es)
            return moeq_fail(r->err, MOEQ_ERR_FORMAT, "%s: GGUF G-3: key '%s' at offset %zu: array of %" PRIu64
                             " %s needs %" PRIu64 "+ bytes, %zu left (truncated file)", r->label, key, r->pos,
                             cnt, vtype_names[et], cnt, r->len - r->pos);
        if (et == MOEQ_GGUF_BOOL)
            for (uint64_t i = 0; i < cnt; i++)
                if (r->b[r->pos + i] > 1)
                    return moeq_fail(r->err, MOEQ_ERR_FORMAT, "%s: GGUF G-5: key '%s' at offset %zu: BOOL value "
                                     "%u is not 0 or 1", r->label, key, r->pos + (size_t)i, r->b[r->pos + i]);
        r->pos += (size_t)(cnt * es);
        return MOEQ_OK;
    }
    /* each string takes at least its 8-byte length: bounds the loop before walking it */
    if (cnt > (r->len - r->pos) / 8)
        return moeq_fail(r->err, MOEQ_ERR_FORMAT, "%s: GGUF G-3: key '%s' at offset %zu: array of %" PRIu64
                         " strings cannot fit in the %zu bytes left (truncated file)", r->label, key, r->pos, cnt,
                         r->len - r->pos);
    for (uint64_t i = 0; i < cnt; i++) {
        const unsigned char *s;
        uint64_t n;
        if ((st = rd_str(r, "array string", key, &s, &n))) return st;
    }
    return MOEQ_OK;
}

moeq_status moeq_gguf_parse(const void *buf, size_t len, const char *label, moeq_gguf **out,
                            moeq_error *err)
{
    if (!out || (!buf && len)) return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_gguf_parse: NULL argument");
    *out = NULL;
    if (!label) label = "gguf";
    rd r = { .b = buf, .len = len, .pos = 0, .label = label, .err = err };
    moeq_status st;
    /* G-1: magic and the fixed header */
    if (len < 4 || memcmp(buf, "GGUF", 4) != 0)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF G-1: no GGUF magic at offset 0%s", label,
                         len < 4 ? " (file shorter than 4 bytes)" : "");
    if (len < 24)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF G-1: %zu bytes, shorter than the 24-byte header "
                         "(truncated file)", label, len);
    const unsigned char *b = buf;
    uint32_t version = (uint32_t)le(b + 4, 4);
    /* G-2: version 3 little-endian only (a byte-swapped 3 is a big-endian file) */
    if (version == 0x03000000u)
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF G-2: big-endian GGUF at offset 4 is not supported",
                         label);
    if (version != 3)
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: GGUF G-2: version %u at offset 4 is not supported "
                         "(only version 3)", label, version);
    uint64_t nt = le(b + 8, 8), nkv = le(b + 16, 8);
    r.pos = 24;
    /* a KV takes at least 8 + 1 + 4 + 1 bytes and a tensor info 8 + 1 + 4 + 8 + 4 + 8: counts
     * that cannot fit are refused before anything is allocated */
    if (nkv > (len - 24) / 14)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF G-3: n_kv %" PRIu64 " at offset 16 cannot fit in a file "
                         "of %zu bytes", label, nkv, len);
    if (nt > (len - 24) / 33)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF G-3: n_tensors %" PRIu64 " at offset 8 cannot fit in a "
                         "file of %zu bytes", label, nt, len);
    moeq_gguf *g = calloc(1, sizeof *g);
    if (!g) return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", label);
    g->buf = b;
    g->len = len;
    g->version = version;
    g->alignment = MOEQ_GGUF_DEFAULT_ALIGNMENT;
    g->label = strdup(label);
    g->kv = calloc(nkv ? (size_t)nkv : 1, sizeof *g->kv);
    g->t = calloc(nt ? (size_t)nt : 1, sizeof *g->t);
    g->t_sorted = calloc(nt ? (size_t)nt : 1, sizeof *g->t_sorted);
    /* every key and name fits in the file, plus one NUL each */
    g->names = malloc(len + (size_t)nkv + (size_t)nt + 1);
    if (!g->label || !g->kv || !g->t || !g->t_sorted || !g->names) {
        gguf_free(g);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", label);
    }
    size_t arena = 0;
    for (uint64_t i = 0; i < nkv; i++) {
        const unsigned char *s;
        uint64_t n;
        size_t at = r.pos;
        if ((st = rd_str(&r, "key", NULL, &s, &n))) goto fail;
        if (n == 0 || memchr(s, 0, (size_t)n)) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF G-4: key %" PRIu64 " at offset %zu is %s", label, i, at,
                           n ? "a string with a NUL byte" : "empty");
            goto fail;
        }
        char *key = g->names + arena;
        memcpy(key, s, (size_t)n);
        key[n] = '\0';
        arena += (size_t)n + 1;
        g->kv[i].key = key;
        if ((st = need(&r, 4, "value type", key))) goto fail;
        int32_t t = (int32_t)le(b + r.pos, 4);
        r.pos += 4;
        size_t v0 = r.pos;
        if ((st = skip_value(&r, t, key, &g->kv[i]))) goto fail;
        g->kv[i].raw = b + v0;
        g->kv[i].raw_len = r.pos - v0;
        g->nkv++;
    }
    /* G-6: keys are unique */
    qsort(g->kv, g->nkv, sizeof *g->kv, cmp_kv);
    for (size_t i = 1; i < g->nkv; i++)
        if (!strcmp(g->kv[i].key, g->kv[i - 1].key)) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF G-6: duplicate key '%s' (offsets %" PRIu64 " and %" PRIu64 ")",
                           label, g->kv[i].key, g->kv[i - 1].offset, g->kv[i].offset);
            goto fail;
        }
    /* G-7: general.alignment, when present, is a UINT32 power of two */
    const moeq_gguf_kv *al = moeq_gguf_find_kv(g, "general.alignment");
    if (al) {
        if (al->type != MOEQ_GGUF_U32) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF G-7: key 'general.alignment' at offset %" PRIu64 " has type "
                           "%s, not UINT32", label, al->offset, moeq_gguf_vtype_name(al->type));
            goto fail;
        }
        uint32_t a = (uint32_t)le(al->value, 4);
        if (a == 0 || (a & (a - 1))) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF G-7: key 'general.alignment' at offset %" PRIu64 " is %u, "
                           "not a power of two", label, al->offset, a);
            goto fail;
        }
        g->alignment = a;
    }
    /* G-8: tensor infos */
    for (uint64_t i = 0; i < nt; i++) {
        const unsigned char *s;
        uint64_t n;
        size_t at = r.pos;
        moeq_gguf_tensor *t = &g->t[i];
        if ((st = rd_str(&r, "tensor name", NULL, &s, &n))) goto fail;
        char *name = g->names + arena;
        memcpy(name, s, (size_t)n);
        name[n] = '\0';
        arena += (size_t)n + 1;
        t->name = name;
        if (n == 0 || n >= MOEQ_GGUF_MAX_NAME || memchr(s, 0, (size_t)n)) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF G-8: tensor %" PRIu64 " name at offset %zu is %s", label,
                           i, at, n == 0 ? "empty" : n >= MOEQ_GGUF_MAX_NAME ? "64 bytes or longer" : "a string with a NUL byte");
            goto fail;
        }
        if ((st = need(&r, 4, "n_dims", name))) goto fail;
        uint32_t nd = (uint32_t)le(b + r.pos, 4);
        if (nd < 1 || nd > 4) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF G-8: tensor '%s' at offset %zu: n_dims %u is not 1..4",
                           label, name, r.pos, nd);
            goto fail;
        }
        r.pos += 4;
        if ((st = need(&r, 8ull * nd + 12, "shape, type and offset", name))) goto fail;
        int64_t numel = 1;
        t->n_dims = (int)nd;
        for (int j = 0; j < 4; j++) t->ne[j] = 1;
        for (uint32_t j = 0; j < nd; j++) {
            int64_t e = (int64_t)le(b + r.pos + 8 * j, 8);
            if (e < 1 || e > INT64_MAX / numel) {
                st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF G-8: tensor '%s' at offset %zu: ne[%u] = %lld %s", label,
                               name, r.pos + 8 * (size_t)j, j, (long long)e,
                               e < 1 ? "is not positive" : "makes the element count overflow");
                goto fail;
            }
            t->ne[j] = e;
            numel *= e;
        }
        r.pos += 8 * (size_t)nd;
        int32_t ty = (int32_t)le(b + r.pos, 4);
        const moeq_gguf_type *ti = moeq_gguf_type_get(ty);
        if (!ti) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF G-8: tensor '%s' at offset %zu: type %d is not a ggml type",
                           label, name, r.pos, (int)ty);
            goto fail;
        }
        if (t->ne[0] % ti->block) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF G-8: tensor '%s': %lld elements per row is not a multiple "
                           "of %s's block of %d", label, name, (long long)t->ne[0], ti->name, ti->block);
            goto fail;
        }
        t->type = ty;
        t->numel = numel;
        /* numel < 2^63, bytes/elem <= 9.125 and row meta <= 2 per row (ne[0] >= 256): fits in uint64 */
        t->nbytes = (uint64_t)(numel / ti->block) * (uint64_t)ti->bytes +
                    (uint64_t)(numel / t->ne[0]) * (uint64_t)ti->row_meta;
        t->offset = le(b + r.pos + 4, 8);
        r.pos += 12;
        g->nt++;
    }
    /* G-10: the data section starts at the next alignment boundary */
    uint64_t a = g->alignment;
    uint64_t ds = ((uint64_t)r.pos + a - 1) / a * a;
    g->data_offset = ds;
    if (nt && ds > len) {
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF G-10: data section at offset %" PRIu64 " is past the end of "
                       "the file (%zu bytes)", label, ds, len);
        goto fail;
    }
    /* G-9: offsets are the padded running sum in info order; G-11: data inside the file */
    uint64_t expect = 0;
    for (size_t i = 0; i < g->nt; i++) {
        moeq_gguf_tensor *t = &g->t[i];
        if (t->offset != expect) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF G-9: tensor '%s' has data offset %" PRIu64 ", expected %"
                           PRIu64 " (tensors in info order, each padded to %u)", label, t->name, t->offset, expect,
                           g->alignment);
            goto fail;
        }
        if (t->nbytes > len - ds || t->offset > len - ds - t->nbytes) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF G-11: tensor '%s': %" PRIu64 " bytes at offset %" PRIu64
                           " run past the end of the file (%zu bytes)", label, t->name, t->nbytes, ds + t->offset, len);
            goto fail;
        }
        t->file_offset = ds + t->offset;
        t->data = b + t->file_offset;
        uint64_t padded = (t->nbytes + a - 1) / a * a;
        expect += padded;
    }
    /* G-12: tensor names are unique */
    for (size_t i = 0; i < g->nt; i++) g->t_sorted[i] = i;
    g_sort_base = g->t;   /* single-threaded parse; the comparator reads this */
    qsort(g->t_sorted, g->nt, sizeof *g->t_sorted, cmp_tidx);
    for (size_t i = 1; i < g->nt; i++)
        if (!strcmp(g->t[g->t_sorted[i]].name, g->t[g->t_sorted[i - 1]].name)) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF G-12: duplicate tensor name '%s'", label,
                           g->t[g->t_sorted[i]].name);
            goto fail;
        }
    *out = g;
    return MOEQ_OK;
fail:
    gguf_free(g);
    return st;
}

moeq_status moeq_gguf_open(const char *path, moeq_gguf **out, moeq_error *err)
{
    if (!out || !path) return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_gguf_open: NULL argument");
    *out = NULL;
    void *map;
    size_t len;
    moeq_status st = moeq_map_file(path, &map, &len, err);
    if (st != MOEQ_OK) return st;
    moeq_gguf *g = NULL;
    static const unsigned char empty[1];
    st = moeq_gguf_parse(map ? map : empty, len, path, &g, err);
    if (st) {
        if (map) munmap(map, len);
        return st;
    }
    g->map = map;
    if (map) moeq_map_register(map, len);
    *out = g;
    return MOEQ_OK;
}

void moeq_gguf_close(moeq_gguf *g) { gguf_free(g); }

int moeq_gguf_is_gguf(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return 0;
    char m[4];
    int ok = fread(m, 1, 4, fp) == 4 && !memcmp(m, "GGUF", 4);
    fclose(fp);
    return ok;
}

int moeq_gguf_is_path(const char *path)
{
    size_t n = path ? strlen(path) : 0;
    if (!n) return 0;
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) return 0;
    return (n > 5 && !strcasecmp(path + n - 5, ".gguf")) || moeq_gguf_is_gguf(path);
}

const char *moeq_gguf_label(const moeq_gguf *g) { return g->label; }
uint32_t moeq_gguf_version(const moeq_gguf *g) { return g->version; }
uint32_t moeq_gguf_alignment(const moeq_gguf *g) { return g->alignment; }
uint64_t moeq_gguf_data_offset(const moeq_gguf *g) { return g->data_offset; }
uint64_t moeq_gguf_size(const moeq_gguf *g) { return g->len; }
size_t moeq_gguf_nkv(const moeq_gguf *g) { return g->nkv; }
const moeq_gguf_kv *moeq_gguf_kv_at(const moeq_gguf *g, size_t i) { return i < g->nkv ? &g->kv[i] : NULL; }
size_t moeq_gguf_ntensors(const moeq_gguf *g) { return g->nt; }
const moeq_gguf_tensor *moeq_gguf_tensor_at(const moeq_gguf *g, size_t i) { return i < g->nt ? &g->t[i] : NULL; }

const moeq_gguf_kv *moeq_gguf_find_kv(const moeq_gguf *g, const char *key)
{
    size_t lo = 0, hi = g->nkv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->kv[mid].key, key);
        if (!c) return &g->kv[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const moeq_gguf_tensor *moeq_gguf_find_tensor(const moeq_gguf *g, const char *name)
{
    size_t lo = 0, hi = g->nt;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const moeq_gguf_tensor *t = &g->t[g->t_sorted[mid]];
        int c = strcmp(t->name, name);
        if (!c) return t;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static moeq_status get_typed(const moeq_gguf *g, const char *key, int required, moeq_gguf_vtype want,
                             const moeq_gguf_kv **out, moeq_error *err)
{
    const moeq_gguf_kv *kv = moeq_gguf_find_kv(g, key);
    *out = NULL;
    if (!kv) {
        if (!required) return MOEQ_OK;
        return moeq_fail(err, MOEQ_ERR_NOT_FOUND, "%s: GGUF key '%s' (%s) is missing", g->label, key,
                         vtype_names[want]);
    }
    if (kv->type != want)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: GGUF key '%s' at offset %" PRIu64 " has type %s, expected %s",
                         g->label, key, kv->offset, moeq_gguf_vtype_name(kv->type), vtype_names[want]);
    *out = kv;
    return MOEQ_OK;
}

moeq_status moeq_gguf_get_u32(const moeq_gguf *g, const char *key, int required, uint32_t *out, moeq_error *err)
{
    const moeq_gguf_kv *kv;
    moeq_status st = get_typed(g, key, required, MOEQ_GGUF_U32, &kv, err);
    if (!st && kv) *out = (uint32_t)le(kv->value, 4);
    return st;
}

moeq_status moeq_gguf_get_f32(const moeq_gguf *g, const char *key, int required, float *out, moeq_error *err)
{
    const moeq_gguf_kv *kv;
    moeq_status st = get_typed(g, key, required, MOEQ_GGUF_F32, &kv, err);
    if (!st && kv) {
        uint32_t u = (uint32_t)le(kv->value, 4);
        memcpy(out, &u, 4);
    }
    return st;
}

moeq_status moeq_gguf_get_bool(const moeq_gguf *g, const char *key, int required, int *out, moeq_error *err)
{
    const moeq_gguf_kv *kv;
    moeq_status st = get_typed(g, key, required, MOEQ_GGUF_BOOL, &kv, err);
    if (!st && kv) *out = kv->value[0] != 0;
    return st;
}

moeq_status moeq_gguf_get_str(const moeq_gguf *g, const char *key, int required, const char **s, uint64_t *n,
                              moeq_error *err)
{
    const moeq_gguf_kv *kv;
    moeq_status st = get_typed(g, key, required, MOEQ_GGUF_STRING, &kv, err);
    if (!st && kv) {
        *n = le(kv->value, 8);
        *s = (const char *)kv->value + 8;
    }
    return st;
}

int moeq_gguf_arr_str(const moeq_gguf_kv *kv, uint64_t i, const char **s, uint64_t *n)
{
    if (!kv || kv->type != MOEQ_GGUF_ARRAY || kv->elem != MOEQ_GGUF_STRING || i >= kv->count) return -1;
    const unsigned char *p = kv->value;
    for (uint64_t k = 0; k < i; k++) p += 8 + le(p, 8);   /* lengths checked at parse */
    *n = le(p, 8);
    *s = (const char *)p + 8;
    return 0;
}
