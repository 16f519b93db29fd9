/* Checkpoints: one .safetensors file, or a directory with model.safetensors or
 * model.safetensors.index.json + shards. The index is cross-checked against the shards
 * (rules CK-n, docs/FORMAT-safetensors.md) so that name lookup never lies. */
#include "moeq_safetensors.h"
#include "moeq_core.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CK_INDEX_NAME "model.safetensors.index.json"
#define CK_SINGLE_NAME "model.safetensors"
/* An index of 100k tensors is ~10 MB; anything this large is not an index. */
#define CK_MAX_INDEX_BYTES (512u << 20)

struct moeq_checkpoint {
    char *dir;
    moeq_st_file **shards;
    size_t n_shards;
    const moeq_tensor **order;    /* shard order, then data offset */
    const moeq_tensor **by_name;  /* sorted by name for binary search */
    size_t n;
    uint64_t bytes;
};

/* A parsed, validated index: the JSON plus its distinct shard names, sorted. */
typedef struct ck_index {
    json_t *root;
    json_t *weight_map;
    char **shards;       /* distinct shard file names (borrowed from root), sorted */
    size_t n_shards;
    int has_total;
    uint64_t total_size;
} ck_index;

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp((*(const moeq_tensor *const *)a)->name, (*(const moeq_tensor *const *)b)->name);
}

static void ck_index_free(ck_index *ix)
{
    free(ix->shards);
    json_decref(ix->root);
    memset(ix, 0, sizeof *ix);
}

static size_t ck_shard_index(const ck_index *ix, const char *name)
{
    size_t lo = 0, hi = ix->n_shards;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, ix->shards[mid]);
        if (c == 0) return mid;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return (size_t)-1;
}

static moeq_status ck_parse_index(const char *json, size_t len, const char *label, ck_index *ix,
                                  moeq_error *err)
{
    memset(ix, 0, sizeof *ix);
    if (!json && len) return moeq_fail(err, MOEQ_ERR_MISUSE, "%s: NULL buffer", label);
    json_error_t jerr;
    /* CK-1: the index is one valid JSON document without duplicate keys. */
    ix->root = json_loadb(json ? json : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (!ix->root)
        return moeq_fail(err, MOEQ_ERR_FORMAT,
                         "%s: not valid JSON: %s at line %d column %d (CK-1, offset %d)", label,
                         jerr.text, jerr.line, jerr.column, jerr.position);
    /* CK-2: an object whose weight_map maps tensor names to shard file names (strings). */
    if (!json_is_object(ix->root)) {
        ck_index_free(ix);
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: index is not a JSON object (CK-2, offset 0)",
                         label);
    }
    ix->weight_map = json_object_get(ix->root, "weight_map");
    if (!json_is_object(ix->weight_map)) {
        ck_index_free(ix);
        return moeq_fail(err, MOEQ_ERR_FORMAT,
                         "%s: weight_map is missing or not an object (CK-2, offset 0)", label);
    }
    /* CK-3: metadata is ignored except total_size, which must be a non-negative integer. */
    json_t *meta = json_object_get(ix->root, "metadata");
    if (meta && !json_is_null(meta)) {
        if (!json_is_object(meta)) {
            ck_index_free(ix);
            return moeq_fail(err, MOEQ_ERR_FORMAT,
                             "%s: metadata is not an object (CK-3, offset 0)", label);
        }
        json_t *ts = json_object_get(meta, "total_size");
        if (ts) {
            /* some writers store it as a float; accept it when it is a whole number */
            double d = json_is_real(ts) ? json_real_value(ts) : -1.0;
            if (json_is_integer(ts) && json_integer_value(ts) >= 0) {
                ix->total_size = (uint64_t)json_integer_value(ts);
            } else if (json_is_real(ts) && d >= 0 && d < 1.8e19 && d == (double)(uint64_t)d) {
                ix->total_size = (uint64_t)d;
            } else {
                ck_index_free(ix);
                return moeq_fail(err, MOEQ_ERR_FORMAT,
                                 "%s: metadata.total_size is not a non-negative integer (CK-3, "
                                 "offset 0)", label);
            }
            ix->has_total = 1;
        }
    }

    size_t n = json_object_size(ix->weight_map);
    ix->shards = malloc((n ? n : 1) * sizeof *ix->shards);
    if (!ix->shards) {
        ck_index_free(ix);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", label);
    }
    const char *key;
    json_t *val;
    size_t k = 0;
    json_object_foreach(ix->weight_map, key, val) {
        if (!json_is_string(val)) {
            moeq_status st = moeq_fail(err, MOEQ_ERR_FORMAT,
                                       "%s: weight_map entry for tensor '%s' is not a string "
                                       "(CK-2, offset 0)", label, key);
            ck_index_free(ix);
            return st;
        }
        const char *s = json_string_value(val);
        /* CK-4: a shard is a plain file name inside the checkpoint directory. */
        if (!*s || strchr(s, '/') || strchr(s, '\\') || strstr(s, "..")) {
            moeq_status st = moeq_fail(err, MOEQ_ERR_FORMAT,
                                       "%s: tensor '%s': shard name '%.200s' must be a plain "
                                       "file name in the checkpoint directory (no '/' or '..') "
                                       "(CK-4, offset 0)", label, key, s);
            ck_index_free(ix);
            return st;
        }
        ix->shards[k++] = (char *)s;
    }
    qsort(ix->shards, k, sizeof *ix->shards, cmp_str_ptr);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (u == 0 || strcmp(ix->shards[u - 1], ix->shards[i]) != 0) ix->shards[u++] = ix->shards[i];
    ix->n_shards = u;
    return MOEQ_OK;
}

moeq_status moeq_ckpt_parse_index(const char *json, size_t len, const char *label,
                                  size_t *n_tensors, size_t *n_shards, moeq_error *err)
{
    ck_index ix;
    if (!label) label = "<memory>";
    moeq_status st = ck_parse_index(json, len, label, &ix, err);
    if (st != MOEQ_OK) return st;
    if (n_tensors) *n_tensors = json_object_size(ix.weight_map);
    if (n_shards) *n_shards = ix.n_shards;
    ck_index_free(&ix);
    return MOEQ_OK;
}

/* ---- opening ------------------------------------------------------------------------ */

static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

void moeq_ckpt_close(moeq_checkpoint *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->n_shards; i++) moeq_st_close(c->shards[i]);
    free(c->shards);
    free(c->order);
    free(c->by_name);
    free(c->dir);
    free(c);
}

/* Builds the tensor tables once every shard is open; CK-8 rejects a name held twice. */
static moeq_status ck_build_tables(moeq_checkpoint *c, moeq_error *err)
{
    size_t n = 0;
    for (size_t s = 0; s < c->n_shards; s++) n += moeq_st_count(c->shards[s]);
    c->order = malloc((n ? n : 1) * sizeof *c->order);
    c->by_name = malloc((n ? n : 1) * sizeof *c->by_name);
    if (!c->order || !c->by_name)
        return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", c->dir);
    size_t k = 0;
    c->bytes = 0;
    for (size_t s = 0; s < c->n_shards; s++)
        for (size_t i = 0; i < moeq_st_count(c->shards[s]); i++) {
            const moeq_tensor *t = moeq_st_tensor(c->shards[s], i);
            c->order[k] = c->by_name[k] = t;
            k++;
            c->bytes += t->nbytes; /* each shard's sum is bounded by its file size */
        }
    c->n = k;
    qsort(c->by_name, k, sizeof *c->by_name, cmp_tensor_name);
    for (size_t i = 1; i < k; i++)
        if (strcmp(c->by_name[i - 1]->name, c->by_name[i]->name) == 0) {
            const moeq_tensor *a = c->by_name[i - 1], *b = c->by_name[i];
            return moeq_fail(err, MOEQ_ERR_FORMAT,
                             "%s: tensor '%s' is in two shards: %s (offset %" PRIu64 ") and %s "
                             "(offset %" PRIu64 ") (CK-8)", c->dir, a->name, a->file,
                             a->file_offset, b->file, b->file_offset);
        }
    return MOEQ_OK;
}

static moeq_status ck_open_index(moeq_checkpoint *c, const char *index_path, moeq_error *err)
{
    char *json;
    size_t len;
    moeq_status st = moeq_read_file(index_path, CK_MAX_INDEX_BYTES, "an index (CK-1, offset 0)",
                                     (void **)&json, &len, err);
    if (st != MOEQ_OK) return st;
    ck_index ix;
    st = ck_parse_index(json, len, index_path, &ix, err);
    free(json);
    if (st != MOEQ_OK) return st;

    c->shards = calloc(ix.n_shards ? ix.n_shards : 1, sizeof *c->shards);
    if (!c->shards) {
        ck_index_free(&ix);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", index_path);
    }
    /* Each shard is opened once, however many entries point to it. */
    for (size_t s = 0; s < ix.n_shards; s++) {
        char *p = path_join(c->dir, ix.shards[s]);
        if (!p) {
            st = moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", index_path);
            goto out;
        }
        struct stat sb;
        /* CK-5: every shard the index names exists (a missing one is a broken checkpoint,
         * not an I/O failure) and parses (its own error names the shard). */
        if (stat(p, &sb) != 0 && errno == ENOENT) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT,
                           "%s: names shard '%s', but %s does not exist (CK-5)", index_path,
                           ix.shards[s], p);
            free(p);
            goto out;
        }
        st = moeq_st_open(p, &c->shards[s], err);
        free(p);
        if (st != MOEQ_OK) {
            moeq_error_prefix(err, "%s: shard '%s' (CK-5)", index_path, ix.shards[s]);
            goto out;
        }
        c->n_shards = s + 1;
    }
    st = ck_build_tables(c, err);
    if (st != MOEQ_OK) goto out;

    /* CK-6: every index entry names a tensor that its shard holds. */
    const char *key;
    json_t *val;
    json_object_foreach(ix.weight_map, key, val) {
        const char *shard = json_string_value(val);
        size_t s = ck_shard_index(&ix, shard);
        if (s == (size_t)-1 || !moeq_st_find(c->shards[s], key)) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT,
                           "%s: tensor '%s' is mapped to shard '%s', which has no such tensor "
                           "(CK-6, shard %s/%s)", index_path, key, shard, c->dir, shard);
            goto out;
        }
    }
    /* CK-7: every tensor of every shard is in the index. Names are unique (CK-8) and each
     * entry matched a distinct tensor (CK-6), so equal counts mean none is missing. */
    if (c->n != json_object_size(ix.weight_map)) {
        for (size_t i = 0; i < c->n; i++) {
            const moeq_tensor *t = c->order[i];
            if (!json_object_get(ix.weight_map, t->name)) {
                st = moeq_fail(err, MOEQ_ERR_FORMAT,
                               "%s: tensor '%s' in shard %s (offset %" PRIu64 ") is absent from "
                               "the index (CK-7)", index_path, t->name, t->file, t->file_offset);
                goto out;
            }
        }
    }
    /* CK-9: metadata.total_size, when given, should be the sum of tensor data bytes; released
     * checkpoints get it wrong and transformers ignores it, so a mismatch is a warning */
    if (ix.has_total && ix.total_size != c->bytes)
        moeq_warn("%s: metadata.total_size is %" PRIu64 " but the shards hold %" PRIu64
                  " bytes of tensor data (CK-9; ignored, as transformers does)", index_path, ix.total_size,
                  c->bytes);
    st = MOEQ_OK;
out:
    ck_index_free(&ix);
    return st;
}

static moeq_status ck_open_single(moeq_checkpoint *c, const char *file, moeq_error *err)
{
    c->shards = calloc(1, sizeof *c->shards);
    if (!c->shards) return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", file);
    moeq_status st = moeq_st_open(file, &c->shards[0], err);
    if (st != MOEQ_OK) return st;
    c->n_shards = 1;
    return ck_build_tables(c, err);
}

moeq_status moeq_ckpt_open(const char *path, moeq_checkpoint **out, moeq_error *err)
{
    if (!path || !out) return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_ckpt_open: NULL argument");
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return moeq_fail(err, MOEQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    moeq_checkpoint *c = calloc(1, sizeof *c);
    if (!c) return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", path);
    moeq_status st;
    if (S_ISDIR(sb.st_mode)) {
        c->dir = strdup(path);
        if (!c->dir) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", path); goto fail; }
        size_t l = strlen(c->dir);
        while (l > 1 && c->dir[l - 1] == '/') c->dir[--l] = '\0'; /* "dir/" -> "dir" */
        char *ip = path_join(c->dir, CK_INDEX_NAME), *sp = path_join(c->dir, CK_SINGLE_NAME);
        if (!ip || !sp) {
            free(ip);
            free(sp);
            st = moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", path);
            goto fail;
        }
        struct stat s1, s2;
        if (stat(ip, &s1) == 0) {
            st = ck_open_index(c, ip, err);
        } else if (stat(sp, &s2) == 0) {
            st = ck_open_single(c, sp, err);
        } else {
            /* CK-10: a directory must hold one of the two entry files. */
            st = moeq_fail(err, MOEQ_ERR_NOT_FOUND,
                           "%s: no checkpoint here: neither %s nor %s exists (CK-10)", c->dir,
                           CK_INDEX_NAME, CK_SINGLE_NAME);
        }
        free(ip);
        free(sp);
    } else {
        c->dir = dir_of(path);
        if (!c->dir) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", path); goto fail; }
        if (ends_with(path, ".safetensors")) {
            st = ck_open_single(c, path, err);
        } else if (ends_with(path, ".json")) {
            st = ck_open_index(c, path, err); /* an index named directly */
        } else {
            /* CK-11: other files are not checkpoints this reader knows. */
            st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED,
                           "%s: not a checkpoint: expected a directory, a .safetensors file or "
                           "an index .json (CK-11)", path);
        }
    }
    if (st != MOEQ_OK) goto fail;
    *out = c;
    return MOEQ_OK;
fail:
    moeq_ckpt_close(c);
    return st;
}

const char *moeq_ckpt_dir(const moeq_checkpoint *c) { return c ? c->dir : NULL; }
size_t moeq_ckpt_count(const moeq_checkpoint *c) { return c ? c->n : 0; }
uint64_t moeq_ckpt_bytes(const moeq_checkpoint *c) { return c ? c->bytes : 0; }
size_t moeq_ckpt_shards(const moeq_checkpoint *c) { return c ? c->n_shards : 0; }

const moeq_tensor *moeq_ckpt_tensor(const moeq_checkpoint *c, size_t i)
{
    return c && i < c->n ? c->order[i] : NULL;
}

const moeq_tensor *moeq_ckpt_find(const moeq_checkpoint *c, const char *name)
{
    if (!c || !name) return NULL;
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(name, c->by_name[mid]->name);
        if (cmp == 0) return c->by_name[mid];
        if (cmp < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}
