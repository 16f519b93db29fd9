/* Token files for --tokens: a safetensors file with one 1-D integer tensor, or raw
 * little-endian uint32. Rules TK-n are listed in docs/FORMAT-safetensors.md. */
#include "moeq_safetensors.h"
#include "moeq_core.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Decodes little-endian bytes without alignment assumptions (views may be unaligned). */
static uint64_t load_le(const uint8_t *p, size_t size)
{
    uint64_t v = 0;
    for (size_t i = size; i-- > 0;) v = (v << 8) | p[i];
    return v;
}

/* TK-6: every id fits int32 (the output type) and, when vocab > 0, lies in [0, vocab). */
static moeq_status check_id(const char *path, int64_t idx, int64_t id, int64_t vocab,
                            uint64_t offset, moeq_error *err)
{
    if (vocab > 0 && (id < 0 || id >= vocab))
        return moeq_fail(err, MOEQ_ERR_RANGE,
                         "%s: token %" PRId64 " is id %" PRId64 ", outside the vocabulary of %"
                         PRId64 " ids (TK-6, offset %" PRIu64 ")", path, idx, id, vocab, offset);
    if (id < INT32_MIN || id > INT32_MAX)
        return moeq_fail(err, MOEQ_ERR_RANGE,
                         "%s: token %" PRId64 " is id %" PRId64 ", which does not fit in 32 bits "
                         "(TK-6, offset %" PRIu64 ")", path, idx, id, offset);
    return MOEQ_OK;
}

static moeq_status load_st(const char *path, int64_t vocab, int32_t **ids, int64_t *n,
                           moeq_error *err)
{
    moeq_st_file *f;
    moeq_status st = moeq_st_open(path, &f, err);
    if (st != MOEQ_OK) return st;
    /* TK-1: exactly one tensor, so there is no guessing which one holds the tokens. */
    if (moeq_st_count(f) != 1) {
        size_t c = moeq_st_count(f);
        st = moeq_fail(err, MOEQ_ERR_FORMAT,
                       "%s: a token file holds exactly one tensor, this one has %zu%s%s%s%s%s "
                       "(TK-1)", path, c, c ? " ('" : "", c ? moeq_st_tensor(f, 0)->name : "",
                       c > 1 ? "', '" : "", c > 1 ? moeq_st_tensor(f, 1)->name : "",
                       c > 2 ? "', ...)" : c ? "')" : "");
        goto out;
    }
    const moeq_tensor *t = moeq_st_tensor(f, 0);
    /* TK-2: integer ids only. */
    if (t->dtype != MOEQ_DT_I32 && t->dtype != MOEQ_DT_I64 && t->dtype != MOEQ_DT_U32) {
        st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED,
                       "%s: tensor '%s' has dtype %s; token ids must be I32, I64 or U32 (TK-2, "
                       "offset %" PRIu64 ")", path, t->name, t->dtype_name, t->file_offset);
        goto out;
    }
    /* TK-3: one flat sequence. */
    if (t->ndim != 1) {
        char shp[160];
        size_t k = (size_t)snprintf(shp, sizeof shp, "[");
        for (int d = 0; d < t->ndim && k < sizeof shp; d++)
            k += (size_t)snprintf(shp + k, sizeof shp - k, "%s%" PRId64, d ? ", " : "", t->shape[d]);
        if (k < sizeof shp) snprintf(shp + k, sizeof shp - k, "]");
        st = moeq_fail(err, MOEQ_ERR_FORMAT,
                       "%s: tensor '%s' has shape %s; token ids must be 1-D (TK-3, offset %" PRIu64
                       ")", path, t->name, shp, t->file_offset);
        goto out;
    }
    /* TK-5: something to evaluate. */
    if (t->numel == 0) {
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: tensor '%s' contains no tokens (TK-5, offset %"
                       PRIu64 ")", path, t->name, t->file_offset);
        goto out;
    }
    size_t es = moeq_dtype_size(t->dtype);
    if ((uint64_t)t->numel > SIZE_MAX / sizeof(int32_t)) {
        st = moeq_fail(err, MOEQ_ERR_NOMEM, "%s: too many tokens", path);
        goto out;
    }
    int32_t *out_ids = malloc((size_t)t->numel * sizeof *out_ids);
    if (!out_ids) {
        st = moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory for %" PRId64 " tokens", path,
                       t->numel);
        goto out;
    }
    const uint8_t *p = t->data;
    for (int64_t i = 0; i < t->numel; i++) {
        uint64_t raw = load_le(p + (size_t)i * es, es);
        int64_t id = t->dtype == MOEQ_DT_I32   ? (int64_t)(int32_t)(uint32_t)raw
                     : t->dtype == MOEQ_DT_U32 ? (int64_t)raw
                                               : (int64_t)raw; /* I64: two's complement */
        st = check_id(path, i, id, vocab, t->file_offset + (uint64_t)i * es, err);
        if (st != MOEQ_OK) {
            free(out_ids);
            goto out;
        }
        out_ids[i] = (int32_t)id;
    }
    *ids = out_ids;
    *n = t->numel;
    st = MOEQ_OK;
out:
    moeq_st_close(f);
    return st;
}

static moeq_status load_raw(const char *path, int64_t vocab, int32_t **ids, int64_t *n,
                            moeq_error *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    moeq_status rs = moeq_read_file(path, UINT64_MAX, "a token file", (void **)&buf, &len, err);
    if (rs != MOEQ_OK) return rs;
    uint64_t size = (uint64_t)len;
    /* TK-5 */
    if (size == 0) {
        free(buf);
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: contains no tokens (TK-5, offset 0)", path);
    }
    /* TK-4: raw files are whole little-endian uint32 values. */
    if (size % 4) {
        free(buf);
        return moeq_fail(err, MOEQ_ERR_FORMAT,
                         "%s: raw token file is %" PRIu64 " bytes, not a multiple of 4 (TK-4, "
                         "offset %" PRIu64 ")", path, size, size - size % 4);
    }
    int64_t count = (int64_t)(size / 4);
    /* Decode in place: element i is read before it is overwritten, same width. */
    int32_t *out_ids = (int32_t *)(void *)buf;
    for (int64_t i = 0; i < count; i++) {
        int64_t id = (int64_t)load_le(buf + (size_t)i * 4, 4);
        moeq_status st = check_id(path, i, id, vocab, (uint64_t)i * 4, err);
        if (st != MOEQ_OK) {
            free(buf);
            return st;
        }
        int32_t v = (int32_t)id;
        memcpy(&out_ids[i], &v, sizeof v);
    }
    *ids = out_ids;
    *n = count;
    return MOEQ_OK;
}

moeq_status moeq_tokens_load(const char *path, int64_t vocab, int32_t **ids, int64_t *n,
                             moeq_error *err)
{
    if (!path || !ids || !n) return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_tokens_load: NULL argument");
    *ids = NULL;
    *n = 0;
    if (ends_with(path, ".safetensors")) return load_st(path, vocab, ids, n, err);
    return load_raw(path, vocab, ids, n, err);
}
