/* General safetensors writer (include/moeq_st_writer.h): sharding as huggingface_hub, tensor
 * order inside a file as the reference writer, tensors streamed one at a time. */
#include "moeq_st_writer.h"
#include "moeq_core.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int moeq_st_dtype_rank(moeq_dtype dt)
{
    /* safetensors' Dtype enum order (BOOL, F4, F6_*, U8, I8, F8_*, I16, U16, F16, BF16, I32,
     * U32, F32, C64, F64, I64, U64), restricted to the dtypes moeq names */
    switch (dt) {
    case MOEQ_DT_BOOL: return 0;
    case MOEQ_DT_U8: return 4;
    case MOEQ_DT_I8: return 5;
    case MOEQ_DT_F8_E4M3: return 7;   /* FP8 sources copied as they are (prune) */
    case MOEQ_DT_I16: return 9;
    case MOEQ_DT_U16: return 10;
    case MOEQ_DT_F16: return 11;
    case MOEQ_DT_BF16: return 12;
    case MOEQ_DT_I32: return 13;
    case MOEQ_DT_U32: return 14;
    case MOEQ_DT_F32: return 15;
    case MOEQ_DT_F64: return 17;
    case MOEQ_DT_I64: return 18;
    case MOEQ_DT_U64: return 19;
    default: return -1;
    }
}

typedef struct ent { size_t i; const moeq_st_out *t; } ent;
static int cmp_ent(const void *a, const void *b)
{
    const ent *x = a, *y = b;
    int rx = moeq_st_dtype_rank(x->t->dtype), ry = moeq_st_dtype_rank(y->t->dtype);
    if (rx != ry) return ry - rx;   /* dtype descending */
    return strcmp(x->t->name, y->t->name);
}
static int cmp_name(const void *a, const void *b)
{
    return strcmp((*(const moeq_st_out *const *)a)->name, (*(const moeq_st_out *const *)b)->name);
}

static uint64_t tensor_bytes(const moeq_st_out *t)
{
    uint64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (uint64_t)t->shape[d];
    return n * moeq_dtype_size(t->dtype);
}

/* One shard file: tensors e[0..n) already sorted. */
static moeq_status write_shard(const char *path, ent *e, size_t n, moeq_st_fill_fn fill, void *user,
                               void *buf, moeq_error *err)
{
    json_t *hdr = json_object(), *meta = json_object();
    if (!hdr || !meta) {
        json_decref(hdr);
        json_decref(meta);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", path);
    }
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(hdr, "__metadata__", meta);
    uint64_t off = 0;
    for (size_t k = 0; k < n; k++) {
        const moeq_st_out *t = e[k].t;
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++) json_array_append_new(shape, json_integer(t->shape[d]));
        uint64_t nb = tensor_bytes(t);
        json_t *o = json_object();
        json_object_set_new(o, "dtype", json_string(moeq_dtype_name(t->dtype)));
        json_object_set_new(o, "shape", shape);
        json_object_set_new(o, "data_offsets", json_pack("[II]", (json_int_t)off, (json_int_t)(off + nb)));
        json_object_set_new(hdr, t->name, o);
        off += nb;
    }
    char *js = json_dumps(hdr, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(hdr);
    if (!js) return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory for the header", path);
    size_t hl = strlen(js), pad = (8 - hl % 8) % 8;
    FILE *f = fopen(path, "wbx");   /* x: never replace a file */
    if (!f) {
        free(js);
        return moeq_fail(err, MOEQ_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    uint8_t le[8];
    uint64_t hlen = hl + pad;
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)(hlen >> (8 * i));
    int bad = fwrite(le, 1, 8, f) != 8 || fwrite(js, 1, hl, f) != hl;
    for (size_t i = 0; i < pad && !bad; i++) bad = fputc(' ', f) == EOF;
    free(js);
    moeq_status st = MOEQ_OK;
    for (size_t k = 0; k < n && !bad; k++) {
        const moeq_st_out *t = e[k].t;
        size_t nb = (size_t)tensor_bytes(t);
        const void *src = t->data;
        if (!src) {
            if ((st = fill(user, e[k].i, buf, err))) break;
            src = buf;
        }
        bad = nb && fwrite(src, 1, nb, f) != nb;   /* host is little-endian (x86-64, aarch64) */
        if (src == t->data) moeq_pages_release(src, nb);   /* written: drop the mapped pages */
    }
    if (fclose(f) != 0) bad = 1;
    if (st) return st;
    if (bad) return moeq_fail(err, MOEQ_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return MOEQ_OK;
}

moeq_status moeq_st_write_dir(const char *dir, const moeq_st_out *tensors, size_t n,
                              uint64_t max_shard_bytes, moeq_st_fill_fn fill, void *user,
                              size_t *nshards, moeq_error *err)
{
    if (nshards) *nshards = 0;
    /* checks first: unique names, known dtypes, sizes */
    const moeq_st_out **byname = calloc(n ? n : 1, sizeof *byname);
    size_t *shard_of = calloc(n ? n : 1, sizeof *shard_of);
    ent *e = calloc(n ? n : 1, sizeof *e);
    void *buf = NULL;
    json_t *wm = NULL;
    moeq_status st = MOEQ_OK;
    if (!byname || !shard_of || !e) {
        st = moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    uint64_t maxb = 0, total = 0;
    for (size_t i = 0; i < n; i++) {
        const moeq_st_out *t = &tensors[i];
        if (!t->name || !t->name[0] || moeq_st_dtype_rank(t->dtype) < 0 || t->ndim < 0 || t->ndim > MOEQ_MAX_DIMS ||
            (!t->data && !fill)) {
            st = moeq_fail(err, MOEQ_ERR_MISUSE, "%s: tensor %zu: bad name, dtype, rank or no data", dir, i);
            goto done;
        }
        for (int d = 0; d < t->ndim; d++)
            if (t->shape[d] < 0) {
                st = moeq_fail(err, MOEQ_ERR_MISUSE, "%s: tensor '%s': negative dimension", dir, t->name);
                goto done;
            }
        uint64_t nb = tensor_bytes(t);
        if (nb > maxb && !t->data) maxb = nb;
        total += nb;
        byname[i] = t;
    }
    qsort(byname, n, sizeof *byname, cmp_name);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(byname[i]->name, byname[i - 1]->name)) {
            st = moeq_fail(err, MOEQ_ERR_MISUSE, "%s: tensor '%s' given twice", dir, byname[i]->name);
            goto done;
        }
    /* shards in the given order (huggingface_hub: a tensor that does not fit starts a new one) */
    size_t ns = 1;
    uint64_t cur = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t nb = tensor_bytes(&tensors[i]);
        if (max_shard_bytes && cur > 0 && cur + nb > max_shard_bytes) {
            ns++;
            cur = 0;
        }
        cur += nb;
        shard_of[i] = ns - 1;
    }
    if (maxb) {
        buf = malloc((size_t)maxb);
        if (!buf) {
            st = moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory for a tensor of %llu bytes", dir,
                           (unsigned long long)maxb);
            goto done;
        }
    }
    if (ns > 1 && !(wm = json_object())) {
        st = moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    for (size_t s = 0; s < ns && st == MOEQ_OK; s++) {
        char fname[64], path[4200];
        if (ns == 1) snprintf(fname, sizeof fname, "model.safetensors");
        else snprintf(fname, sizeof fname, "model-%05zu-of-%05zu.safetensors", s + 1, ns);
        snprintf(path, sizeof path, "%s/%s", dir, fname);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (shard_of[i] == s) {
                e[k++] = (ent){ i, &tensors[i] };
                if (wm) json_object_set_new(wm, tensors[i].name, json_string(fname));
            }
        qsort(e, k, sizeof *e, cmp_ent);
        st = write_shard(path, e, k, fill, user, buf, err);
    }
    if (st == MOEQ_OK && wm) {
        /* the hub's index: {"metadata": {"total_size": bytes of tensor data}, "weight_map": {...}} */
        char path[4200];
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        json_t *ix = json_object();
        json_object_set_new(ix, "metadata", json_pack("{sI}", "total_size", (json_int_t)total));
        json_object_set(ix, "weight_map", wm);
        FILE *f = fopen(path, "wbx");
        int bad = !f || json_dumpf(ix, f, JSON_INDENT(2) | JSON_SORT_KEYS) != 0 || fputc('\n', f) == EOF;
        if (f && fclose(f) != 0) bad = 1;
        json_decref(ix);
        if (bad) st = moeq_fail(err, MOEQ_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    }
    if (st == MOEQ_OK && nshards) *nshards = ns;
done:
    json_decref(wm);
    free(buf);
    free(e);
    free(shard_of);
    free(byname);
    return st;
}
