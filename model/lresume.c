/* Layer checkpoints for --resume (include/moeq_lresume.h). */
#include "moeq_lresume.h"
#include "moeq_dist.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define MANIFEST "manifest.json"
#define FORMAT "moeq-resume"

static void path_of(char *buf, size_t cap, const char *dir, const char *name)
{
    snprintf(buf, cap, "%s/%s", dir, name);
}

static void layer_name(char *buf, size_t cap, const char *dir, int64_t layer)
{
    snprintf(buf, cap, "%s/layer-%04lld.bin", dir, (long long)layer);
}

/* Writes bytes to path through path.tmp: write, fsync, rename. */
static moeq_status write_atomic(const char *path, const void *a, size_t na, const void *b, size_t nb,
                                moeq_error *err)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return moeq_fail(err, MOEQ_ERR_IO, "%s: %s", tmp, strerror(errno));
    const void *parts[2] = {a, b};
    size_t lens[2] = {na, nb};
    moeq_status st = MOEQ_OK;
    for (int i = 0; i < 2 && st == MOEQ_OK; i++) {
        const char *p = parts[i];
        size_t left = lens[i];
        while (left > 0) {
            ssize_t k = write(fd, p, left);
            if (k <= 0) { st = moeq_fail(err, MOEQ_ERR_IO, "%s: %s", tmp, strerror(errno)); break; }
            p += k;
            left -= (size_t)k;
        }
    }
    if (st == MOEQ_OK && fsync(fd) != 0) st = moeq_fail(err, MOEQ_ERR_IO, "%s: fsync: %s", tmp, strerror(errno));
    close(fd);
    if (st == MOEQ_OK && rename(tmp, path) != 0) st = moeq_fail(err, MOEQ_ERR_IO, "rename %s: %s", tmp, strerror(errno));
    if (st != MOEQ_OK) unlink(tmp);
    return st;
}

static json_t *inputs_json(const moeq_lresume_input *in, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++)
        json_object_set_new(o, in[i].key, in[i].text ? json_string(in[i].text) : json_integer(in[i].value));
    return o;
}

static moeq_status check_manifest(const char *dir, const char *stage, const moeq_lresume_input *in, size_t n_in,
                                  int64_t *done, moeq_error *err)
{
    char path[4200];
    path_of(path, sizeof path, dir, MANIFEST);
    *done = 0;
    struct stat sb;
    if (stat(path, &sb) != 0) return MOEQ_OK;   /* a new checkpoint */
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j) return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: line %d: %s", path, je.line, je.text);
    moeq_status st = MOEQ_OK;
    const char *fmt = json_string_value(json_object_get(j, "format"));
    const char *stg = json_string_value(json_object_get(j, "stage"));
    json_t *ld = json_object_get(j, "layers_done"), *inp = json_object_get(j, "inputs");
    if (!fmt || strcmp(fmt, FORMAT) || !stg || !json_is_integer(ld) || !json_is_object(inp))
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: not a moeq resume manifest (format, stage, layers_done, inputs)", path);
    else if (strcmp(stg, stage))
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "--resume %s holds a '%s' run, not a '%s' run", dir, stg, stage);
    for (size_t i = 0; st == MOEQ_OK && i < n_in; i++) {
        json_t *v = json_object_get(inp, in[i].key);
        int same = in[i].text ? (json_is_string(v) && !strcmp(json_string_value(v), in[i].text))
                              : (json_is_integer(v) && json_integer_value(v) == in[i].value);
        if (!same) {
            char *was = v ? json_dumps(v, JSON_ENCODE_ANY) : NULL;
            if (in[i].text)
                st = moeq_fail(err, MOEQ_ERR_FORMAT, "--resume %s: the stopped run had %s = %s, this one has '%s'; "
                               "use another directory or the same inputs", dir, in[i].key, was ? was : "(none)", in[i].text);
            else
                st = moeq_fail(err, MOEQ_ERR_FORMAT, "--resume %s: the stopped run had %s = %s, this one has %lld; "
                               "use another directory or the same inputs", dir, in[i].key, was ? was : "(none)",
                               (long long)in[i].value);
            free(was);
        }
    }
    if (st == MOEQ_OK) *done = json_integer_value(ld);
    if (st == MOEQ_OK && *done < 0) st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: layers_done %lld", path, (long long)*done);
    json_decref(j);
    return st;
}

moeq_status moeq_lresume_open(const char *dir, const char *stage, const moeq_lresume_input *in, size_t n_in,
                           int64_t *layers_done, moeq_error *err)
{
    moeq_status st = MOEQ_OK;
    int64_t done = 0;
    if (moeq_dist_rank() == 0) {
        struct stat sb;
        if (stat(dir, &sb) != 0) {
            if (mkdir(dir, 0755) != 0)
                st = moeq_fail(err, MOEQ_ERR_IO, "--resume %s: cannot create it: %s", dir, strerror(errno));
        } else if (!S_ISDIR(sb.st_mode)) {
            st = moeq_fail(err, MOEQ_ERR_IO, "--resume %s is not a directory", dir);
        }
        if (st == MOEQ_OK) st = check_manifest(dir, stage, in, n_in, &done, err);
    }
    st = moeq_dist_agree(st, err);
    if (st == MOEQ_OK) st = moeq_dist_bcast(&done, sizeof done, 0, err);
    *layers_done = done;
    return st;
}

moeq_status moeq_lresume_commit(const char *dir, const char *stage, const moeq_lresume_input *in, size_t n_in,
                             int64_t layers_done, moeq_error *err)
{
    json_t *j = json_object();
    json_object_set_new(j, "format", json_string(FORMAT));
    json_object_set_new(j, "version", json_integer(1));
    json_object_set_new(j, "stage", json_string(stage));
    json_object_set_new(j, "layers_done", json_integer(layers_done));
    json_object_set_new(j, "inputs", inputs_json(in, n_in));
    char *text = json_dumps(j, JSON_INDENT(1));
    json_decref(j);
    if (!text) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for the resume manifest");
    char path[4200];
    path_of(path, sizeof path, dir, MANIFEST);
    moeq_status st = write_atomic(path, text, strlen(text), "\n", 1, err);
    free(text);
    return st;
}

moeq_status moeq_lresume_put(const char *dir, int64_t layer, const void *buf, size_t n, moeq_error *err)
{
    char path[4200];
    layer_name(path, sizeof path, dir, layer);
    uint64_t h = XXH64(buf, n, 0);
    return write_atomic(path, buf, n, &h, sizeof h, err);
}

moeq_status moeq_lresume_get(const char *dir, int64_t layer, void **buf, size_t *n, moeq_error *err)
{
    char path[4200];
    layer_name(path, sizeof path, dir, layer);
    *buf = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return moeq_fail(err, MOEQ_ERR_FORMAT, "--resume: %s is missing: %s", path, strerror(errno));
    moeq_status st = MOEQ_OK;
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0) len = ftell(f);
    rewind(f);
    char *p = len >= 8 ? malloc((size_t)len) : NULL;
    if (len < 8) st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: %ld bytes, shorter than its checksum", path, len);
    else if (!p) st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory reading %s", path);
    else if (fread(p, 1, (size_t)len, f) != (size_t)len) st = moeq_fail(err, MOEQ_ERR_IO, "%s: short read", path);
    fclose(f);
    if (st == MOEQ_OK) {
        uint64_t h;
        memcpy(&h, p + len - 8, 8);
        if (h != XXH64(p, (size_t)len - 8, 0))
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: checksum mismatch (a damaged checkpoint)", path);
    }
    if (st != MOEQ_OK) { free(p); return st; }
    *buf = p;
    *n = (size_t)len - 8;
    return MOEQ_OK;
}

void moeq_lresume_remove(const char *dir, int64_t layers)
{
    char path[4200];
    for (int64_t l = 0; l < layers; l++) {
        layer_name(path, sizeof path, dir, l);
        unlink(path);
        snprintf(path, sizeof path, "%s/stream-%04lld.bin", dir, (long long)l);
        unlink(path);
    }
    path_of(path, sizeof path, dir, "stream.tmp");
    unlink(path);
    path_of(path, sizeof path, dir, MANIFEST);
    unlink(path);
    rmdir(dir);   /* only when empty: files of the user's stay */
}
