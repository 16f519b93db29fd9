/* A minimal safetensors writer: header JSON ({"__metadata__":{"format":"pt"}} then the tensors in
 * order, contiguous offsets), padded with spaces to a multiple of 8 as the reference writer does,
 * little-endian data; written to a temporary file next to the destination and renamed, so a
 * failure never leaves a partial file and an input is never overwritten in place. */
#include "moeq_safetensors.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

moeq_status moeq_st_write(const char *path, const moeq_st_out *tensors, size_t n, moeq_error *err)
{
    json_t *hdr = json_object();
    json_t *meta = json_object();
    uint64_t off = 0;
    if (!hdr || !meta) { json_decref(hdr); json_decref(meta); return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", path); }
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(hdr, "__metadata__", meta);
    for (size_t i = 0; i < n; i++) {
        const moeq_st_out *t = &tensors[i];
        size_t es = moeq_dtype_size(t->dtype);
        if (!es || t->ndim < 0 || t->ndim > MOEQ_MAX_DIMS || !t->name) {
            json_decref(hdr);
            return moeq_fail(err, MOEQ_ERR_MISUSE, "%s: tensor %zu: bad dtype, rank or name", path, i);
        }
        uint64_t numel = 1;
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++) {
            numel *= (uint64_t)t->shape[d];
            json_array_append_new(shape, json_integer(t->shape[d]));
        }
        json_t *e = json_object();
        json_object_set_new(e, "dtype", json_string(moeq_dtype_name(t->dtype)));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets", json_pack("[II]", (json_int_t)off, (json_int_t)(off + numel * es)));
        json_object_set_new(hdr, t->name, e);
        off += numel * es;
    }
    char *js = json_dumps(hdr, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(hdr);
    if (!js) return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", path);
    size_t hl = strlen(js), pad = (8 - hl % 8) % 8;
    char tmp[4096];
    const char *slash = strrchr(path, '/');
    int dl = slash ? (int)(slash - path) : 1;
    snprintf(tmp, sizeof tmp, "%.*s/.%s.tmp.XXXXXX", dl, slash ? path : ".", slash ? slash + 1 : path);
    int fd = mkstemp(tmp);
    if (fd < 0) { free(js); return moeq_fail(err, MOEQ_ERR_IO, "%s: cannot create a temporary file: %s", path, strerror(errno)); }
    fchmod(fd, 0644); /* mkstemp makes 0600; outputs are ordinary files */
    FILE *f = fdopen(fd, "wb");
    if (!f) { close(fd); unlink(tmp); free(js); return moeq_fail(err, MOEQ_ERR_IO, "%s: %s", path, strerror(errno)); }
    uint8_t le[8];
    uint64_t hlen = hl + pad;
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)(hlen >> (8 * i));
    int bad = fwrite(le, 1, 8, f) != 8 || fwrite(js, 1, hl, f) != hl;
    for (size_t i = 0; i < pad && !bad; i++) bad = fputc(' ', f) == EOF;
    free(js);
    for (size_t i = 0; i < n && !bad; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < tensors[i].ndim; d++) numel *= (uint64_t)tensors[i].shape[d];
        size_t nb = (size_t)(numel * moeq_dtype_size(tensors[i].dtype));
        bad = nb && fwrite(tensors[i].data, 1, nb, f) != nb; /* host is little-endian (x86-64, aarch64) */
    }
    if (fclose(f) != 0) bad = 1;
    if (bad || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return moeq_fail(err, MOEQ_ERR_IO, "%s: write failed: %s", path, strerror(e));
    }
    return MOEQ_OK;
}
