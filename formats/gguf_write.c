/* GGUF v3 writer, the layout of gguf-py's GGUFWriter: header, KVs, tensor infos, zero padding to
 * 32 bytes, then tensor data in info order, each tensor padded to 32 (rule G-9, which mainline
 * llama.cpp enforces). Metadata and infos are collected in memory (they are small); data is
 * streamed to a temporary sibling that finish renames into place. */
#include "moeq_gguf.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct bbuf {
    unsigned char *p;
    size_t n, cap;
    int oom;
} bbuf;

static void put(bbuf *b, const void *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        unsigned char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void put_le(bbuf *b, uint64_t v, int n)
{
    unsigned char t[8];
    for (int i = 0; i < n; i++) t[i] = (unsigned char)(v >> (8 * i));
    put(b, t, (size_t)n);
}

static void put_str(bbuf *b, const char *s, size_t n)
{
    put_le(b, n, 8);
    put(b, s, n);
}

struct moeq_gguf_writer {
    char *path, *tmp;
    FILE *fp;
    bbuf kv, ti;
    uint64_t nkv, nt;
    uint64_t *sizes;            /* bytes of each declared tensor */
    size_t cap_sizes;
    uint64_t cur, cur_done;     /* tensor being written and its bytes so far */
    uint64_t written;
    int finished;
};

moeq_status moeq_gguf_writer_create(const char *path, moeq_gguf_writer **out, moeq_error *err)
{
    *out = NULL;
    moeq_gguf_writer *w = calloc(1, sizeof *w);
    if (!w) return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", path);
    size_t n = strlen(path);
    w->path = strdup(path);
    w->tmp = malloc(n + 32);
    if (!w->path || !w->tmp) {
        moeq_gguf_writer_free(w);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(w->tmp, n + 32, "%s.tmp.%ld", path, (long)getpid());
    *out = w;
    return MOEQ_OK;
}

void moeq_gguf_writer_free(moeq_gguf_writer *w)
{
    if (!w) return;
    if (w->fp) fclose(w->fp);
    if (!w->finished && w->tmp) unlink(w->tmp);
    free(w->path);
    free(w->tmp);
    free(w->kv.p);
    free(w->ti.p);
    free(w->sizes);
    free(w);
}

static moeq_status key(moeq_gguf_writer *w, const char *k, moeq_gguf_vtype t)
{
    put_str(&w->kv, k, strlen(k));
    put_le(&w->kv, (uint64_t)t, 4);
    w->nkv++;
    return w->kv.oom ? MOEQ_ERR_NOMEM : MOEQ_OK;
}

moeq_status moeq_gguf_w_u32(moeq_gguf_writer *w, const char *k, uint32_t v)
{
    key(w, k, MOEQ_GGUF_U32);
    put_le(&w->kv, v, 4);
    return w->kv.oom ? MOEQ_ERR_NOMEM : MOEQ_OK;
}

moeq_status moeq_gguf_w_i32(moeq_gguf_writer *w, const char *k, int32_t v)
{
    key(w, k, MOEQ_GGUF_I32);
    put_le(&w->kv, (uint32_t)v, 4);
    return w->kv.oom ? MOEQ_ERR_NOMEM : MOEQ_OK;
}

moeq_status moeq_gguf_w_f32(moeq_gguf_writer *w, const char *k, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    key(w, k, MOEQ_GGUF_F32);
    put_le(&w->kv, u, 4);
    return w->kv.oom ? MOEQ_ERR_NOMEM : MOEQ_OK;
}

moeq_status moeq_gguf_w_bool(moeq_gguf_writer *w, const char *k, int v)
{
    key(w, k, MOEQ_GGUF_BOOL);
    put_le(&w->kv, v ? 1 : 0, 1);
    return w->kv.oom ? MOEQ_ERR_NOMEM : MOEQ_OK;
}

moeq_status moeq_gguf_w_str(moeq_gguf_writer *w, const char *k, const char *v, size_t n)
{
    key(w, k, MOEQ_GGUF_STRING);
    put_str(&w->kv, v, n);
    return w->kv.oom ? MOEQ_ERR_NOMEM : MOEQ_OK;
}

moeq_status moeq_gguf_w_raw(moeq_gguf_writer *w, const char *k, moeq_gguf_vtype t, const void *raw, uint64_t n)
{
    key(w, k, t);
    put(&w->kv, raw, (size_t)n);
    return w->kv.oom ? MOEQ_ERR_NOMEM : MOEQ_OK;
}

static void arr_head(moeq_gguf_writer *w, const char *k, moeq_gguf_vtype et, uint64_t n)
{
    key(w, k, MOEQ_GGUF_ARRAY);
    put_le(&w->kv, (uint64_t)et, 4);
    put_le(&w->kv, n, 8);
}

moeq_status moeq_gguf_w_arr_str(moeq_gguf_writer *w, const char *k, const char *const *v, const size_t *lens,
                                uint64_t n)
{
    arr_head(w, k, MOEQ_GGUF_STRING, n);
    for (uint64_t i = 0; i < n; i++) put_str(&w->kv, v[i], lens ? lens[i] : strlen(v[i]));
    return w->kv.oom ? MOEQ_ERR_NOMEM : MOEQ_OK;
}

moeq_status moeq_gguf_w_arr_i32(moeq_gguf_writer *w, const char *k, const int32_t *v, uint64_t n)
{
    arr_head(w, k, MOEQ_GGUF_I32, n);
    for (uint64_t i = 0; i < n; i++) put_le(&w->kv, (uint32_t)v[i], 4);
    return w->kv.oom ? MOEQ_ERR_NOMEM : MOEQ_OK;
}

moeq_status moeq_gguf_w_arr_f32(moeq_gguf_writer *w, const char *k, const float *v, uint64_t n)
{
    arr_head(w, k, MOEQ_GGUF_F32, n);
    for (uint64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        put_le(&w->kv, u, 4);
    }
    return w->kv.oom ? MOEQ_ERR_NOMEM : MOEQ_OK;
}

static uint64_t pad32(uint64_t n) { return (n + 31) / 32 * 32; }

moeq_status moeq_gguf_w_tensor(moeq_gguf_writer *w, const char *name, int n_dims, const int64_t *ne, int type,
                               moeq_error *err)
{
    size_t nl = strlen(name);
    if (nl == 0 || nl >= MOEQ_GGUF_MAX_NAME)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "%s: tensor name '%s' must be 1..63 bytes", w->path, name);
    if (n_dims < 1 || n_dims > 4) return moeq_fail(err, MOEQ_ERR_MISUSE, "%s: tensor '%s': n_dims %d", w->path, name, n_dims);
    uint64_t rb = moeq_gguf_row_bytes(type, ne[0]);
    if (!rb) {
        const moeq_gguf_type *t = moeq_gguf_type_get(type);
        return moeq_fail(err, MOEQ_ERR_MISUSE, "%s: tensor '%s': %lld values per row do not fill %s blocks", w->path,
                         name, (long long)ne[0], t ? t->name : "unknown-type");
    }
    uint64_t rows = 1;
    for (int i = 1; i < n_dims; i++) rows *= (uint64_t)ne[i];
    if (w->nt == w->cap_sizes) {
        size_t cap = w->cap_sizes ? w->cap_sizes * 2 : 256;
        uint64_t *s = realloc(w->sizes, cap * sizeof *s);
        if (!s) return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", w->path);
        w->sizes = s;
        w->cap_sizes = cap;
    }
    uint64_t off = 0;
    for (uint64_t i = 0; i < w->nt; i++) off += pad32(w->sizes[i]);
    w->sizes[w->nt++] = rb * rows;
    put_str(&w->ti, name, nl);
    put_le(&w->ti, (uint64_t)n_dims, 4);
    for (int i = 0; i < n_dims; i++) put_le(&w->ti, (uint64_t)ne[i], 8);
    put_le(&w->ti, (uint64_t)type, 4);
    put_le(&w->ti, off, 8);
    return w->ti.oom ? moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", w->path) : MOEQ_OK;
}

static moeq_status wr(moeq_gguf_writer *w, const void *p, size_t n, moeq_error *err)
{
    if (n && fwrite(p, 1, n, w->fp) != n)
        return moeq_fail(err, MOEQ_ERR_IO, "%s: write failed: %s", w->tmp, strerror(errno));
    w->written += n;
    return MOEQ_OK;
}

static moeq_status zeros(moeq_gguf_writer *w, uint64_t n, moeq_error *err)
{
    static const unsigned char z[32];
    return wr(w, z, (size_t)n, err);
}

moeq_status moeq_gguf_w_begin_data(moeq_gguf_writer *w, moeq_error *err)
{
    if (w->kv.oom) return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", w->path);
    w->fp = fopen(w->tmp, "wb");
    if (!w->fp) return moeq_fail(err, MOEQ_ERR_IO, "%s: cannot create: %s", w->tmp, strerror(errno));
    bbuf h = { 0 };
    put(&h, "GGUF", 4);
    put_le(&h, 3, 4);
    put_le(&h, w->nt, 8);
    put_le(&h, w->nkv, 8);
    if (h.oom) return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", w->path);
    moeq_status st = wr(w, h.p, h.n, err);
    free(h.p);
    if (!st) st = wr(w, w->kv.p, w->kv.n, err);
    if (!st) st = wr(w, w->ti.p, w->ti.n, err);
    if (!st) st = zeros(w, pad32(w->written) - w->written, err);
    w->cur = 0;
    w->cur_done = 0;
    /* zero-byte tensors cannot occur (rows and block bytes are positive) */
    return st;
}

moeq_status moeq_gguf_w_data(moeq_gguf_writer *w, const void *p, size_t n, moeq_error *err)
{
    const unsigned char *s = p;
    while (n) {
        if (w->cur >= w->nt)
            return moeq_fail(err, MOEQ_ERR_MISUSE, "%s: more tensor data than the %" PRIu64 " tensors declared",
                             w->path, w->nt);
        uint64_t left = w->sizes[w->cur] - w->cur_done, k = n < left ? n : left;
        moeq_status st = wr(w, s, (size_t)k, err);
        if (st) return st;
        s += k;
        n -= (size_t)k;
        w->cur_done += k;
        if (w->cur_done == w->sizes[w->cur]) {
            if ((st = zeros(w, pad32(w->sizes[w->cur]) - w->sizes[w->cur], err))) return st;
            w->cur++;
            w->cur_done = 0;
        }
    }
    return MOEQ_OK;
}

moeq_status moeq_gguf_writer_finish(moeq_gguf_writer *w, uint64_t *bytes, moeq_error *err)
{
    if (!w->fp || w->cur != w->nt)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "%s: %" PRIu64 " of %" PRIu64 " tensors written", w->path, w->cur,
                         w->nt);
    int bad = fflush(w->fp) != 0 || fsync(fileno(w->fp)) != 0;
    bad |= fclose(w->fp) != 0;
    w->fp = NULL;
    if (bad) return moeq_fail(err, MOEQ_ERR_IO, "%s: write failed: %s", w->tmp, strerror(errno));
    if (rename(w->tmp, w->path) != 0)
        return moeq_fail(err, MOEQ_ERR_IO, "%s: cannot rename to %s: %s", w->tmp, w->path, strerror(errno));
    w->finished = 1;
    if (bytes) *bytes = w->written;
    return MOEQ_OK;
}
