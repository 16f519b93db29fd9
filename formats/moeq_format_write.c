/* Writer of the packed .moeq format (docs/FORMAT.md). Blobs are streamed to a temporary file
 * in the destination directory at 64-byte aligned offsets; finish appends the JSON index,
 * writes the 64-byte prefix, flushes and renames. The output depends only on what is written
 * and in which order (zstd at a fixed level in one thread is deterministic). */
#include "moeq_pack.h"
#include "moeq_ggml.h"
#include "moeq_tdict.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

struct moeq_pack_writer {
    char *path, *tmp;
    FILE *fp;
    uint64_t at;          /* next write offset */
    int zlevel;
    ZSTD_CCtx *cctx;
    void *zbuf;
    size_t zcap;
    json_t *files, *tensors, *sources;
};

static void wr64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static void wr32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i)); }

void moeq_pack_writer_abort(moeq_pack_writer *w)
{
    if (!w) return;
    if (w->fp) fclose(w->fp);
    if (w->tmp) unlink(w->tmp);
    if (w->cctx) ZSTD_freeCCtx(w->cctx);
    free(w->zbuf);
    json_decref(w->files);
    json_decref(w->tensors);
    json_decref(w->sources);
    free(w->path);
    free(w->tmp);
    free(w);
}

moeq_status moeq_pack_writer_open(const char *path, int zstd_level, moeq_pack_writer **out,
                                  moeq_error *err)
{
    *out = NULL;
    if (zstd_level < 0 || zstd_level > ZSTD_maxCLevel())
        return moeq_fail(err, MOEQ_ERR_MISUSE, "zstd level %d outside 0..%d", zstd_level, ZSTD_maxCLevel());
    moeq_pack_writer *w = calloc(1, sizeof *w);
    if (!w) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    size_t n = strlen(path);
    w->path = strdup(path);
    w->tmp = malloc(n + 32);
    w->files = json_array();
    w->tensors = json_array();
    w->sources = json_array();
    if (!w->path || !w->tmp || !w->files || !w->tensors || !w->sources) {
        moeq_pack_writer_abort(w);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    }
    snprintf(w->tmp, n + 32, "%s.tmp.%ld", path, (long)getpid());
    w->fp = fopen(w->tmp, "wb");
    if (!w->fp) {
        moeq_status st = moeq_fail(err, MOEQ_ERR_IO, "%s: cannot create: %s", w->tmp, strerror(errno));
        free(w->tmp);
        w->tmp = NULL;
        moeq_pack_writer_abort(w);
        return st;
    }
    unsigned char zero[64] = {0};
    if (fwrite(zero, 1, 64, w->fp) != 64) {
        moeq_pack_writer_abort(w);
        return moeq_fail(err, MOEQ_ERR_IO, "%s: write failed", path);
    }
    w->at = 64;
    w->zlevel = zstd_level;
    if (zstd_level > 0) {
        w->cctx = ZSTD_createCCtx();
        if (!w->cctx || ZSTD_isError(ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, zstd_level)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_checksumFlag, 1)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_contentSizeFlag, 1))) {
            moeq_pack_writer_abort(w);
            return moeq_fail(err, MOEQ_ERR_DEPENDENCY, "zstd: cannot create a compression context");
        }
    }
    *out = w;
    return MOEQ_OK;
}

/* Pads to 64 and writes a blob; fills offset/size/xxh64 in o. */
static moeq_status put_blob(moeq_pack_writer *w, json_t *o, const void *data, size_t len, moeq_error *err)
{
    static const unsigned char zero[64];
    uint64_t pad = (MOEQ_PACK_ALIGN - w->at % MOEQ_PACK_ALIGN) % MOEQ_PACK_ALIGN;
    if ((pad && fwrite(zero, 1, (size_t)pad, w->fp) != pad) || (len && fwrite(data, 1, len, w->fp) != len))
        return moeq_fail(err, MOEQ_ERR_IO, "%s: write failed: %s", w->tmp, strerror(errno));
    w->at += pad;
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)XXH64(data, len, 0));
    json_object_set_new(o, "offset", json_integer((json_int_t)w->at));
    json_object_set_new(o, "size", json_integer((json_int_t)len));
    json_object_set_new(o, "xxh64", json_string(hex));
    w->at += len;
    return MOEQ_OK;
}

moeq_status moeq_pack_write_file(moeq_pack_writer *w, const char *name, const void *data,
                                 size_t len, moeq_error *err)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(name));
    moeq_status st = put_blob(w, o, data, len, err);
    json_array_append_new(w->files, o);
    return st;
}

static json_t *shape_json(int ndim, const int64_t *shape)
{
    json_t *a = json_array();
    for (int i = 0; i < ndim; i++) json_array_append_new(a, json_integer((json_int_t)shape[i]));
    return a;
}

moeq_status moeq_pack_write_source(moeq_pack_writer *w, const char *name, moeq_dtype dtype,
                                   int ndim, const int64_t *shape, moeq_error *err)
{
    (void)err;
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(name));
    json_object_set_new(o, "dtype", json_string(moeq_dtype_name(dtype)));
    json_object_set_new(o, "shape", shape_json(ndim, shape));
    json_array_append_new(w->sources, o);
    return MOEQ_OK;
}

moeq_status moeq_pack_write_tensor(moeq_pack_writer *w, const char *name, int ndim,
                                   const int64_t *shape, const moeq_codec *codec,
                                   const char *source, int64_t source_offset, const void *raw,
                                   size_t raw_size, uint64_t *stored_size, moeq_error *err)
{
    if (codec->type != MOEQ_CODEC_RAW) {   /* F-12, F-13: refuse what the reader would refuse */
        moeq_error e2;
        moeq_status st0;
        if (ndim != 2 || moeq_codec_check(codec, shape[0], shape[1], &e2))
            return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "tensor '%s': %s (F-12)", name,
                             ndim != 2 ? "a matrix codec needs a 2-D shape" : e2.detail);
        if (codec->type == MOEQ_CODEC_TDICT) {   /* self-describing: the reader's check (F-13) */
            if ((st0 = moeq_tdict_check(raw, raw_size, shape[0], shape[1], &e2)))
                return moeq_fail(err, MOEQ_ERR_MISUSE, "tensor '%s': %s (F-13)", name, e2.detail);
        } else if (moeq_codec_raw_bytes(codec, shape[0], shape[1]) != raw_size)
            return moeq_fail(err, MOEQ_ERR_MISUSE, "tensor '%s': %zu raw bytes, the codec and shape imply %llu (F-13)",
                             name, raw_size, (unsigned long long)moeq_codec_raw_bytes(codec, shape[0], shape[1]));
    }
    json_t *o = json_object(), *c = json_object();
    json_object_set_new(o, "name", json_string(name));
    json_object_set_new(o, "shape", shape_json(ndim, shape));
    if (codec->type == MOEQ_CODEC_RAW) {
        json_object_set_new(c, "type", json_string("raw"));
        json_object_set_new(c, "dtype", json_string(moeq_dtype_name(codec->dtype)));
    } else if (codec->type == MOEQ_CODEC_TDICT) {
        json_object_set_new(c, "type", json_string("t1d"));
    } else if (codec->type == MOEQ_CODEC_GGML) {
        const moeq_ggml_type_info *ti = moeq_ggml_type_get(codec->gtype);
        json_object_set_new(c, "type", json_string("ggml"));
        json_object_set_new(c, "ggml_type", json_string(ti ? ti->name : "?"));
    } else {
        json_object_set_new(c, "type", json_string("int"));
        json_object_set_new(c, "bits", json_integer(codec->bits));
        json_object_set_new(c, "group", json_integer(codec->group));
        json_object_set_new(c, "sym", json_boolean(codec->sym));
    }
    json_object_set_new(o, "codec", c);
    json_object_set_new(o, "source", json_string(source));
    json_object_set_new(o, "source_offset", json_integer((json_int_t)source_offset));
    const void *data = raw;
    size_t len = raw_size;
    if (w->cctx && raw_size > 0) {
        size_t bound = ZSTD_compressBound(raw_size);
        if (bound > w->zcap) {
            void *nb = realloc(w->zbuf, bound);
            if (!nb) {
                json_decref(o);
                return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory compressing '%s'", name);
            }
            w->zbuf = nb;
            w->zcap = bound;
        }
        ZSTD_CCtx_reset(w->cctx, ZSTD_reset_session_only);
        size_t r = ZSTD_compress2(w->cctx, w->zbuf, w->zcap, raw, raw_size);
        if (ZSTD_isError(r)) {
            json_decref(o);
            return moeq_fail(err, MOEQ_ERR_DEPENDENCY, "zstd: compressing '%s': %s", name, ZSTD_getErrorName(r));
        }
        data = w->zbuf;
        len = r;
        json_object_set_new(o, "zstd", json_true());
        json_object_set_new(o, "raw_size", json_integer((json_int_t)raw_size));
    }
    moeq_status st = put_blob(w, o, data, len, err);
    json_array_append_new(w->tensors, o);
    if (stored_size) *stored_size = len;
    return st;
}

moeq_status moeq_pack_writer_finish(moeq_pack_writer *w, const char *metadata_json, moeq_error *err)
{
    moeq_status st = MOEQ_OK;
    json_t *idx = json_object();
    json_object_set_new(idx, "format", json_string("moeq"));
    json_object_set_new(idx, "version", json_integer(MOEQ_PACK_VERSION));
    json_object_set(idx, "files", w->files);
    json_object_set(idx, "tensors", w->tensors);
    json_object_set(idx, "sources", w->sources);
    if (metadata_json) {
        json_error_t je;
        json_t *m = json_loads(metadata_json, 0, &je);
        if (m) json_object_set_new(idx, "metadata", m);
    }
    char *text = json_dumps(idx, JSON_COMPACT);
    json_decref(idx);
    if (!text) {
        moeq_pack_writer_abort(w);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory writing the index");
    }
    static const unsigned char zero[64];
    size_t len = strlen(text);
    uint64_t pad = (MOEQ_PACK_ALIGN - w->at % MOEQ_PACK_ALIGN) % MOEQ_PACK_ALIGN;
    unsigned char pre[64] = {0};
    memcpy(pre, "MOEQPACK", 8);
    wr32(pre + 8, MOEQ_PACK_VERSION);
    wr64(pre + 16, w->at + pad);
    wr64(pre + 24, len);
    wr64(pre + 32, XXH64(text, len, 0));
    wr64(pre + 40, w->at + pad + len);
    if ((pad && fwrite(zero, 1, (size_t)pad, w->fp) != pad) || fwrite(text, 1, len, w->fp) != len ||
        fseek(w->fp, 0, SEEK_SET) != 0 || fwrite(pre, 1, 64, w->fp) != 64 || fflush(w->fp) != 0 ||
        fsync(fileno(w->fp)) != 0)
        st = moeq_fail(err, MOEQ_ERR_IO, "%s: write failed: %s", w->tmp, strerror(errno));
    free(text);
    if (fclose(w->fp) != 0 && st == MOEQ_OK)
        st = moeq_fail(err, MOEQ_ERR_IO, "%s: close failed: %s", w->tmp, strerror(errno));
    w->fp = NULL;
    if (st == MOEQ_OK && rename(w->tmp, w->path) != 0)
        st = moeq_fail(err, MOEQ_ERR_IO, "%s: rename to %s failed: %s", w->tmp, w->path, strerror(errno));
    if (st == MOEQ_OK) {
        free(w->tmp);
        w->tmp = NULL;   /* renamed: nothing to unlink */
    }
    moeq_pack_writer_abort(w);
    return st;
}
