/* safetensors reader: parses the header with jansson and applies the reference reader's
 * validation rules (ST-n, listed in docs/FORMAT-safetensors.md) before any tensor view is
 * handed out, so every view lies inside the buffer. Files are mapped read-only. */
#include "moeq_safetensors.h"
#include "moeq_core.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The reference reader refuses headers above this size (HeaderTooLarge). */
#define ST_MAX_HEADER 100000000ull

struct moeq_st_file {
    char *label;            /* path or caller label; tensors' `file` points here */
    const uint8_t *buf;     /* the whole image */
    size_t len;
    void *map;              /* non-NULL when we own an mmap of buf */
    size_t map_len;
    moeq_tensor *tensors;   /* sorted by data offset */
    size_t n;
    const moeq_tensor **by_name; /* tensors sorted by name, for binary search */
    char *arena;            /* names, metadata keys and values */
    char **meta_kv;         /* 2 * n_meta pointers into arena: key, value, key, value ... */
    size_t n_meta;
};

/* ---- dtypes ------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    unsigned bits;
    moeq_dtype dt;
} st_dtype_info;

/* The reference crate's dtype list; those moeq does not compute with map to OTHER. */
static const st_dtype_info st_dtypes[] = {
    {"BOOL", 8, MOEQ_DT_BOOL},       {"F4", 4, MOEQ_DT_OTHER},
    {"F6_E2M3", 6, MOEQ_DT_OTHER},   {"F6_E3M2", 6, MOEQ_DT_OTHER},
    {"U8", 8, MOEQ_DT_U8},           {"I8", 8, MOEQ_DT_I8},
    {"F8_E5M2", 8, MOEQ_DT_OTHER},   {"F8_E4M3", 8, MOEQ_DT_F8_E4M3},
    {"F8_E8M0", 8, MOEQ_DT_OTHER},   {"F8_E4M3FNUZ", 8, MOEQ_DT_OTHER},
    {"F8_E5M2FNUZ", 8, MOEQ_DT_OTHER}, {"I16", 16, MOEQ_DT_I16},
    {"U16", 16, MOEQ_DT_U16},        {"F16", 16, MOEQ_DT_F16},
    {"BF16", 16, MOEQ_DT_BF16},      {"I32", 32, MOEQ_DT_I32},
    {"U32", 32, MOEQ_DT_U32},        {"F32", 32, MOEQ_DT_F32},
    {"C64", 64, MOEQ_DT_OTHER},      {"F64", 64, MOEQ_DT_F64},
    {"I64", 64, MOEQ_DT_I64},        {"U64", 64, MOEQ_DT_U64},
};

static const st_dtype_info *st_dtype_lookup(const char *s)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(st_dtypes[i].name, s) == 0) return &st_dtypes[i];
    return NULL;
}

size_t moeq_dtype_size(moeq_dtype dt)
{
    switch (dt) {
    case MOEQ_DT_BOOL: case MOEQ_DT_I8: case MOEQ_DT_U8: case MOEQ_DT_F8_E4M3: return 1;
    case MOEQ_DT_F16: case MOEQ_DT_BF16: case MOEQ_DT_I16: case MOEQ_DT_U16: return 2;
    case MOEQ_DT_F32: case MOEQ_DT_I32: case MOEQ_DT_U32: return 4;
    case MOEQ_DT_F64: case MOEQ_DT_I64: case MOEQ_DT_U64: return 8;
    case MOEQ_DT_UNKNOWN: case MOEQ_DT_OTHER: return 0;
    }
    return 0;
}

const char *moeq_dtype_name(moeq_dtype dt)
{
    switch (dt) {
    case MOEQ_DT_F32: return "F32";
    case MOEQ_DT_F16: return "F16";
    case MOEQ_DT_BF16: return "BF16";
    case MOEQ_DT_F64: return "F64";
    case MOEQ_DT_I8: return "I8";
    case MOEQ_DT_U8: return "U8";
    case MOEQ_DT_I16: return "I16";
    case MOEQ_DT_U16: return "U16";
    case MOEQ_DT_I32: return "I32";
    case MOEQ_DT_U32: return "U32";
    case MOEQ_DT_I64: return "I64";
    case MOEQ_DT_U64: return "U64";
    case MOEQ_DT_BOOL: return "BOOL";
    case MOEQ_DT_OTHER: return "OTHER";
    case MOEQ_DT_F8_E4M3: return "F8_E4M3";
    case MOEQ_DT_UNKNOWN: return "UNKNOWN";
    }
    return "UNKNOWN";
}

/* ---- helpers ------------------------------------------------------------------------ */

static void st_free(moeq_st_file *f)
{
    if (!f) return;
    if (f->map) {
        moeq_map_unregister(f->map);
        munmap(f->map, f->map_len);
    }
    free(f->label);
    free(f->tensors);
    free(f->by_name);
    free(f->arena);
    free(f->meta_kv);
    free(f);
}

static void fmt_shape(char *out, size_t cap, const int64_t *shape, int ndim)
{
    size_t k = 0;
    int w = snprintf(out, cap, "[");
    k = w > 0 ? (size_t)w : 0;
    for (int d = 0; d < ndim && k < cap; d++) {
        w = snprintf(out + k, cap - k, "%s%" PRId64, d ? ", " : "", shape[d]);
        if (w < 0) break;
        k += (size_t)w;
    }
    if (k < cap) snprintf(out + k, cap - k, "]");
}

/* Reads a JSON integer as a non-negative value; 0 when it is not one. */
static int json_nonneg(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v)) return 0;
    json_int_t x = json_integer_value(v);
    if (x < 0) return 0;
    *out = (uint64_t)x;
    return 1;
}

static int cmp_offset(const void *a, const void *b)
{
    const moeq_tensor *x = a, *y = b;
    if (x->file_offset != y->file_offset) return x->file_offset < y->file_offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name); /* names are unique: a total, deterministic order */
}

static int cmp_name_ptr(const void *a, const void *b)
{
    return strcmp((*(const moeq_tensor *const *)a)->name, (*(const moeq_tensor *const *)b)->name);
}

/* Byte offset in the file of "key" in the header, for error messages (jansson gives no
 * positions for values); the header start when the key is written with escapes. */
static uint64_t key_offset(const uint8_t *hdr, uint64_t n, const char *key)
{
    size_t kl = strlen(key);
    if (kl + 2 > n) return 8;
    for (uint64_t i = 0; i + kl + 2 <= n; i++)
        if (hdr[i] == '"' && hdr[i + kl + 1] == '"' && memcmp(hdr + i + 1, key, kl) == 0) {
            uint64_t j = i + kl + 2; /* a key is followed by optional spaces and ':' */
            while (j < n && (hdr[j] == ' ' || hdr[j] == '\t' || hdr[j] == '\n' || hdr[j] == '\r')) j++;
            if (j < n && hdr[j] == ':') return 8 + i;
        }
    return 8;
}
/* Only evaluated on error paths: a scan per key would make parsing quadratic. */
#define KOFF key_offset(buf + 8, n, key)

/* ---- parse -------------------------------------------------------------------------- */

moeq_status moeq_st_parse(const void *buf_, size_t len, const char *label, moeq_st_file **out,
                          moeq_error *err)
{
    const uint8_t *buf = buf_;
    if (!out) return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_st_parse: out is NULL");
    *out = NULL;
    if (!label) label = "<memory>";
    if (!buf && len) return moeq_fail(err, MOEQ_ERR_MISUSE, "%s: NULL buffer", label);

    /* ST-1: the 8-byte header length must be there. */
    if (len < 8)
        return moeq_fail(err, MOEQ_ERR_FORMAT,
                         "%s: file is %zu bytes, shorter than the 8-byte header length "
                         "(ST-1, offset 0)", label, len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | buf[i];
    /* ST-2: the reference reader caps the header at 100,000,000 bytes. */
    if (n > ST_MAX_HEADER)
        return moeq_fail(err, MOEQ_ERR_FORMAT,
                         "%s: header length %" PRIu64 " exceeds the limit of 100000000 bytes "
                         "(ST-2, offset 0)", label, n);
    /* ST-3: header must lie inside the file (n <= 1e8, so 8 + n cannot overflow). */
    if (n > (uint64_t)len - 8)
        return moeq_fail(err, MOEQ_ERR_FORMAT,
                         "%s: header length %" PRIu64 " runs past the end of the file "
                         "(%zu bytes) (ST-3, offset 0)", label, n, len);
    const uint64_t data_start = 8 + n;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        uint64_t at = 8 + (jerr.position > 0 ? (uint64_t)jerr.position : 0);
        /* ST-6: duplicate keys are forbidden by the spec; jansson reports them for us. */
        if (json_error_code(&jerr) == json_error_duplicate_key)
            return moeq_fail(err, MOEQ_ERR_FORMAT,
                             "%s: header has a duplicate key: %s (ST-6, header offset %" PRIu64
                             ")", label, jerr.text, at);
        /* ST-4: header must be UTF-8 JSON. */
        return moeq_fail(err, MOEQ_ERR_FORMAT,
                         "%s: header is not valid UTF-8 JSON: %s (ST-4, header offset %" PRIu64
                         ")", label, jerr.text, at);
    }
    /* ST-5: the header is one JSON object. */
    if (!json_is_object(root)) {
        json_decref(root);
        return moeq_fail(err, MOEQ_ERR_FORMAT,
                         "%s: header is not a JSON object (ST-5, header offset 8)", label);
    }

    moeq_status st = MOEQ_OK;
    moeq_st_file *f = calloc(1, sizeof *f);
    if (!f) { json_decref(root); return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", label); }
    f->buf = buf;
    f->len = len;
    f->label = strdup(label);

    /* Count entries and the bytes of all strings we keep, so one arena holds them. */
    const char *key;
    json_t *val;
    size_t n_ent = 0, arena_len = 0, n_meta = 0;
    json_t *meta = json_object_get(root, "__metadata__");
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) continue;
        n_ent++;
        arena_len += strlen(key) + 1;
    }
    if (meta) {
        /* ST-7: __metadata__ is a flat string -> string map. */
        if (!json_is_object(meta)) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT,
                           "%s: __metadata__ is not an object of strings (ST-7, header offset 8)",
                           label);
            goto fail;
        }
        json_object_foreach(meta, key, val) {
            if (!json_is_string(val)) {
                st = moeq_fail(err, MOEQ_ERR_FORMAT,
                               "%s: __metadata__ value for '%s' is not a string (ST-7, header "
                               "offset %" PRIu64 ")", label, key, KOFF);
                goto fail;
            }
            n_meta++;
            arena_len += strlen(key) + 1 + json_string_length(val) + 1;
        }
    }
    if (!f->label) goto nomem;
    f->arena = malloc(arena_len ? arena_len : 1);
    f->tensors = calloc(n_ent ? n_ent : 1, sizeof *f->tensors);
    f->by_name = malloc((n_ent ? n_ent : 1) * sizeof *f->by_name);
    f->meta_kv = malloc((n_meta ? 2 * n_meta : 1) * sizeof *f->meta_kv);
    if (!f->arena || !f->tensors || !f->by_name || !f->meta_kv) goto nomem;

    char *ap = f->arena;
    if (meta) {
        size_t m = 0;
        json_object_foreach(meta, key, val) {
            size_t kl = strlen(key), vl = json_string_length(val);
            f->meta_kv[2 * m] = ap;
            memcpy(ap, key, kl + 1);
            ap += kl + 1;
            f->meta_kv[2 * m + 1] = ap;
            /* jansson rejects \u0000 by default, so the value is a proper C string */
            memcpy(ap, json_string_value(val), vl + 1);
            ap += vl + 1;
            m++;
        }
        f->n_meta = m;
    }

    size_t t = 0;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) continue;
        moeq_tensor *tn = &f->tensors[t];
        size_t kl = strlen(key);
        memcpy(ap, key, kl + 1);
        tn->name = ap;
        ap += kl + 1;
        tn->file = f->label;

        /* ST-8: each entry is an object with a dtype from the reference list. */
        if (!json_is_object(val)) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT,
                           "%s: tensor '%s': entry is not an object (ST-8, header offset %" PRIu64 ")",
                           label, key, KOFF);
            goto fail;
        }
        json_t *jd = json_object_get(val, "dtype");
        if (!json_is_string(jd)) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT,
                           "%s: tensor '%s': dtype is missing or not a string (ST-8, header "
                           "offset %" PRIu64 ")", label, key, KOFF);
            goto fail;
        }
        const st_dtype_info *di = st_dtype_lookup(json_string_value(jd));
        if (!di) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT,
                           "%s: tensor '%s': unknown dtype '%.32s' (ST-8, header offset %" PRIu64 ")",
                           label, key, json_string_value(jd), KOFF);
            goto fail;
        }
        tn->dtype = di->dt;
        snprintf(tn->dtype_name, sizeof tn->dtype_name, "%s", di->name);

        /* ST-9: shape is an array of at most MOEQ_MAX_DIMS non-negative integers. */
        json_t *js = json_object_get(val, "shape");
        if (!json_is_array(js)) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT,
                           "%s: tensor '%s': shape is missing or not an array (ST-9, header "
                           "offset %" PRIu64 ")", label, key, KOFF);
            goto fail;
        }
        if (json_array_size(js) > MOEQ_MAX_DIMS) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT,
                           "%s: tensor '%s': shape has %zu dims, more than %d (ST-9, header "
                           "offset %" PRIu64 ")", label, key, json_array_size(js), MOEQ_MAX_DIMS, KOFF);
            goto fail;
        }
        tn->ndim = (int)json_array_size(js);
        /* ST-11: element count and bit count must fit in 64 bits (checked arithmetic). */
        uint64_t numel = 1;
        int overflow = 0;
        for (int d = 0; d < tn->ndim; d++) {
            uint64_t dim;
            if (!json_nonneg(json_array_get(js, (size_t)d), &dim)) {
                st = moeq_fail(err, MOEQ_ERR_FORMAT,
                               "%s: tensor '%s': shape dim %d is not a non-negative integer "
                               "(ST-9, header offset %" PRIu64 ")", label, key, d, KOFF);
                goto fail;
            }
            tn->shape[d] = (int64_t)dim; /* json_int_t is signed 64-bit: fits */
            if (!overflow && __builtin_mul_overflow(numel, dim, &numel)) overflow = 1;
        }

        /* ST-10: data_offsets is [begin, end] of non-negative integers with begin <= end. */
        json_t *jo = json_object_get(val, "data_offsets");
        uint64_t begin, end;
        if (!json_is_array(jo) || json_array_size(jo) != 2 ||
            !json_nonneg(json_array_get(jo, 0), &begin) ||
            !json_nonneg(json_array_get(jo, 1), &end)) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT,
                           "%s: tensor '%s': data_offsets is missing or not two non-negative "
                           "integers (ST-10, header offset %" PRIu64 ")", label, key, KOFF);
            goto fail;
        }
        if (begin > end) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT,
                           "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                           "] end before begin (ST-10, header offset %" PRIu64 ")", label, key, begin, end, KOFF);
            goto fail;
        }

        char shp[160];
        fmt_shape(shp, sizeof shp, tn->shape, tn->ndim);
        uint64_t bits;
        if (overflow || __builtin_mul_overflow(numel, (uint64_t)di->bits, &bits) ||
            numel > (uint64_t)INT64_MAX) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT,
                           "%s: tensor '%s': shape %s of %s overflows 64 bits (ST-11, header "
                           "offset %" PRIu64 ")", label, key, shp, di->name, KOFF);
            goto fail;
        }
        /* ST-12: sub-byte dtypes must fill whole bytes. */
        if (bits % 8) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT,
                           "%s: tensor '%s': shape %s of %s is %" PRIu64 " bits, not a whole "
                           "number of bytes (ST-12, header offset %" PRIu64 ")", label, key, shp, di->name,
                           bits, KOFF);
            goto fail;
        }
        /* ST-13: the byte range must be exactly the tensor's size. */
        if (end - begin != bits / 8) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT,
                           "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] give %" PRIu64
                           " bytes but shape %s of %s needs %" PRIu64 " (ST-13, header offset %" PRIu64 ")",
                           label, key, begin, end, end - begin, shp, di->name, bits / 8, KOFF);
            goto fail;
        }
        tn->numel = (int64_t)numel;
        tn->nbytes = end - begin;
        tn->file_offset = begin; /* relative for now; made absolute after layout checks */
        t++;
    }
    f->n = t;

    /* ST-14: sorted by offset, tensors tile the data buffer from 0 with no gap or overlap. */
    qsort(f->tensors, f->n, sizeof *f->tensors, cmp_offset);
    uint64_t pos = 0;
    for (size_t i = 0; i < f->n; i++) {
        moeq_tensor *tn = &f->tensors[i];
        uint64_t b = tn->file_offset, e = b + tn->nbytes;
        if (b != pos) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT,
                           "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] %s: "
                           "expected begin %" PRIu64 " (ST-14, file offset %" PRIu64 ")",
                           label, tn->name, b, e,
                           b > pos ? "leave a gap after the previous tensor"
                                   : "overlap the previous tensor",
                           pos, data_start + (b < pos ? b : pos));
            goto fail;
        }
        pos = e;
    }
    /* ST-15: the data buffer ends exactly at the end of the file (no trailing bytes, and
     * no truncation). pos <= 2^63 and data_start <= 1e8+8, so the sum cannot overflow. */
    if (data_start + pos != (uint64_t)len) {
        const char *who = f->n ? f->tensors[f->n - 1].name : NULL;
        if (data_start + pos > (uint64_t)len)
            st = moeq_fail(err, MOEQ_ERR_FORMAT,
                           "%s: %s%s%sdata ends at byte %" PRIu64 " but the file has %zu bytes "
                           "(truncated) (ST-15, file offset %zu)", label, who ? "tensor '" : "",
                           who ? who : "", who ? "': " : "", data_start + pos, len, len);
        else
            st = moeq_fail(err, MOEQ_ERR_FORMAT,
                           "%s: %" PRIu64 " trailing bytes after %s%s%s "
                           "(ST-15, file offset %" PRIu64 ")", label,
                           (uint64_t)len - data_start - pos, who ? "the last tensor '" : "the header",
                           who ? who : "", who ? "'" : "", data_start + pos);
        goto fail;
    }

    for (size_t i = 0; i < f->n; i++) {
        moeq_tensor *tn = &f->tensors[i];
        tn->file_offset += data_start;
        tn->data = buf + tn->file_offset;
        f->by_name[i] = tn;
    }
    qsort(f->by_name, f->n, sizeof *f->by_name, cmp_name_ptr);

    json_decref(root);
    *out = f;
    return MOEQ_OK;

nomem:
    st = moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory reading the header", label);
fail:
    json_decref(root);
    st_free(f);
    return st;
}

moeq_status moeq_st_open(const char *path, moeq_st_file **out, moeq_error *err)
{
    if (!out || !path) return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_st_open: NULL argument");
    *out = NULL;
    void *map;
    size_t len;
    moeq_status st = moeq_map_file(path, &map, &len, err);
    if (st != MOEQ_OK) return st;   /* an empty file is reported by ST-1 below */
    moeq_st_file *f = NULL;
    st = moeq_st_parse(map, len, path, &f, err);
    if (st != MOEQ_OK) {
        if (map) munmap(map, len);
        return st;
    }
    f->map = map;
    f->map_len = len;
    moeq_map_register(map, len);   /* its pages may be released (moeq_pages_release) */
    *out = f;
    return MOEQ_OK;
}

void moeq_st_close(moeq_st_file *f) { st_free(f); }

void moeq_tensor_release(const moeq_tensor *t)
{
    if (t && t->data) moeq_pages_release(t->data, (size_t)t->nbytes);
}

void moeq_tensor_prefetch(const moeq_tensor *t)
{
    if (t && t->data) moeq_pages_prefetch(t->data, (size_t)t->nbytes);
}

size_t moeq_st_count(const moeq_st_file *f) { return f ? f->n : 0; }

const moeq_tensor *moeq_st_tensor(const moeq_st_file *f, size_t i)
{
    return f && i < f->n ? &f->tensors[i] : NULL;
}

const moeq_tensor *moeq_st_find(const moeq_st_file *f, const char *name)
{
    if (!f || !name) return NULL;
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const moeq_tensor *t = f->by_name[mid];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

const char *moeq_st_metadata(const moeq_st_file *f, const char *key)
{
    if (!f || !key) return NULL;
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_kv[2 * i], key) == 0) return f->meta_kv[2 * i + 1];
    return NULL;
}
