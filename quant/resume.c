/* Checkpoint directories (include/moeq_resume.h): a manifest and one atomically written blob per
 * finished unit. */
#include "moeq_resume.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define UNIT_MAGIC "MOEQCKPT"
#define UNIT_VERSION 1
#define UNIT_HEADER 40

struct moeq_resume {
    char dir[4096];
    int64_t n_units, n_done;
    uint8_t *done;
};

/* ---- fields -------------------------------------------------------------------------------- */

static void set_name(moeq_resume_field *f, const char *name)
{
    snprintf(f->name, sizeof f->name, "%s", name);
}

void moeq_resume_field_hash(moeq_resume_field *f, const char *name, const void *data, size_t n)
{
    set_name(f, name);
    snprintf(f->value, sizeof f->value, "xxh64:%016llx", (unsigned long long)XXH64(data, n, 0));
}

void moeq_resume_field_text(moeq_resume_field *f, const char *name, const char *text)
{
    size_t n = strlen(text);
    if (n < sizeof f->value && !strchr(text, '\n') && !strchr(text, '\r')) {
        set_name(f, name);
        memcpy(f->value, text, n + 1);
        return;
    }
    moeq_resume_field_hash(f, name, text, n);
}

moeq_status moeq_resume_field_file(moeq_resume_field *f, const char *name, const char *path, moeq_error *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return moeq_fail(err, errno == ENOENT ? MOEQ_ERR_NOT_FOUND : MOEQ_ERR_IO, "%s: cannot open: %s", path,
                         strerror(errno));
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0) { fclose(fp); return moeq_fail(err, MOEQ_ERR_IO, "%s: cannot stat", path); }
    uint64_t size = (uint64_t)sb.st_size;
    const uint64_t whole = (uint64_t)256 << 20, part = (uint64_t)1 << 20;
    XXH64_state_t *h = XXH64_createState();
    char *buf = malloc(1 << 20);
    moeq_status st = MOEQ_OK;
    if (!h || !buf) st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    if (st == MOEQ_OK) {
        XXH64_reset(h, 0);
        XXH64_update(h, &size, sizeof size);
        /* spans to hash: the whole file, or its first and last MiB */
        uint64_t spans[2][2] = { { 0, size }, { 0, 0 } };
        if (size > whole) {
            spans[0][1] = part;
            spans[1][0] = size - part;
            spans[1][1] = size;
        }
        for (int s = 0; s < 2 && st == MOEQ_OK; s++) {
            if (spans[s][1] <= spans[s][0]) continue;
            if (fseeko(fp, (off_t)spans[s][0], SEEK_SET) != 0) { st = moeq_fail(err, MOEQ_ERR_IO, "%s: seek", path); break; }
            for (uint64_t left = spans[s][1] - spans[s][0]; left > 0;) {
                size_t k = left < (1u << 20) ? (size_t)left : (size_t)1 << 20;
                if (fread(buf, 1, k, fp) != k) { st = moeq_fail(err, MOEQ_ERR_IO, "%s: short read", path); break; }
                XXH64_update(h, buf, k);
                left -= k;
            }
        }
    }
    if (st == MOEQ_OK) {
        set_name(f, name);
        snprintf(f->value, sizeof f->value, "size:%llu xxh64:%016llx", (unsigned long long)size,
                 (unsigned long long)XXH64_digest(h));
    }
    if (h) XXH64_freeState(h);
    free(buf);
    fclose(fp);
    return st;
}

/* ---- directory ----------------------------------------------------------------------------- */

static void unit_path(const moeq_resume *r, int64_t unit, char *p, size_t cap)
{
    snprintf(p, cap, "%s/unit-%08lld.bin", r->dir, (long long)unit);
}

/* Writes data to path through path.tmp, fsync and rename. */
static moeq_status write_atomic(const char *path, const void *h, size_t hn, const void *data, size_t n,
                                moeq_error *err)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return moeq_fail(err, MOEQ_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    const void *parts[2] = { h, data };
    size_t lens[2] = { hn, n };
    for (int i = 0; i < 2; i++) {
        const char *p = parts[i];
        for (size_t off = 0; off < lens[i];) {
            ssize_t k = write(fd, p + off, lens[i] - off);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) {
                int e = errno;
                close(fd);
                unlink(tmp);
                return moeq_fail(err, MOEQ_ERR_IO, "%s: write failed: %s", tmp, strerror(e));
            }
            off += (size_t)k;
        }
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        unlink(tmp);
        return moeq_fail(err, MOEQ_ERR_IO, "%s: cannot flush: %s", tmp, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return moeq_fail(err, MOEQ_ERR_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(e));
    }
    return MOEQ_OK;
}

static void wr32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i); }
static void wr64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> 8 * i); }
static uint32_t rd32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint64_t rd64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }

/* The manifest text for stage, units and fields. */
static char *manifest_text(const char *stage, int64_t n_units, const moeq_resume_field *fields, size_t nf,
                           size_t *len)
{
    size_t cap = 128 + strlen(stage) + nf * (MOEQ_RESUME_NAME_MAX + MOEQ_RESUME_VALUE_MAX + 8);
    char *t = malloc(cap);
    if (!t) return NULL;
    size_t n = (size_t)snprintf(t, cap, "moeq-resume 1\nstage %s\nunits %lld\n", stage, (long long)n_units);
    for (size_t i = 0; i < nf; i++)
        n += (size_t)snprintf(t + n, cap - n, "field %s %s\n", fields[i].name, fields[i].value);
    *len = n;
    return t;
}

/* Length of the key of a manifest line: "stage", "units", or "field NAME". */
static size_t key_len(const char *w, size_t wl)
{
    const char *sp = memchr(w, ' ', wl);
    size_t kl = sp ? (size_t)(sp - w) : wl;
    if (sp && kl == 5 && !strncmp(w, "field", 5)) {
        const char *sp2 = memchr(sp + 1, ' ', wl - kl - 1);
        kl = sp2 ? (size_t)(sp2 - w) : wl;
    }
    return kl;
}

/* The line of text with the key w[0..kl), or NULL. */
static const char *find_key(const char *text, const char *w, size_t kl, size_t *fl)
{
    const char *t = text;
    while (*t) {
        const char *te = strchr(t, '\n');
        size_t tl = te ? (size_t)(te - t) : strlen(t);
        if (tl >= kl && !strncmp(t, w, kl) && (tl == kl || t[kl] == ' ')) { *fl = tl; return t; }
        t = te ? te + 1 : t + tl;
    }
    return NULL;
}

/* Compares a manifest on disk with the one this run would write, naming the first difference. */
static moeq_status check_manifest(const char *path, const char *text, const char *want, moeq_error *err)
{
    if (!strcmp(text, want)) return MOEQ_OK;
    /* line by line: report the first line of want that the file lacks or holds differently */
    const char *w = want;
    while (*w) {
        const char *we = strchr(w, '\n');
        size_t wl = we ? (size_t)(we - w) : strlen(w);
        size_t kl = key_len(w, wl), fl = 0;
        const char *found = find_key(text, w, kl, &fl);
        const char *key = !strncmp(w, "field ", 6) ? w + 6 : w;
        int keyl = (int)(kl - (size_t)(key - w));
        if (!found)
            return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: the checkpoint was made by another run: it has no '%.*s' "
                             "(now '%.*s'); use another --resume directory or remove this one", path, keyl, key,
                             (int)(wl > kl ? wl - kl - 1 : 0), w + (wl > kl ? kl + 1 : wl));
        if (fl != wl || strncmp(found, w, wl))
            return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: the checkpoint was made with other inputs or options: "
                             "'%.*s' was '%.*s', now '%.*s'; use another --resume directory or remove this one",
                             path, keyl, key, (int)(fl > kl ? fl - kl - 1 : 0), found + (fl > kl ? kl + 1 : fl),
                             (int)(wl > kl ? wl - kl - 1 : 0), w + (wl > kl ? kl + 1 : wl));
        w = we ? we + 1 : w + wl;
    }
    /* a line of the file this run does not write (an option of another method) */
    for (const char *t = text; *t;) {
        const char *te = strchr(t, '\n');
        size_t tl = te ? (size_t)(te - t) : strlen(t), kl = key_len(t, tl), fl;
        if (tl && !find_key(want, t, kl, &fl)) {
            const char *key = !strncmp(t, "field ", 6) ? t + 6 : t;
            return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: the checkpoint was made with other options: '%.*s' was "
                             "'%.*s', now not set; use another --resume directory or remove this one", path,
                             (int)(kl - (size_t)(key - t)), key, (int)(tl > kl ? tl - kl - 1 : 0),
                             t + (tl > kl ? kl + 1 : tl));
        }
        t = te ? te + 1 : t + tl;
    }
    return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: the checkpoint was made by another run (extra lines); use another "
                     "--resume directory or remove this one", path);
}

moeq_status moeq_resume_open(const char *dir, const char *stage, const moeq_resume_field *fields, size_t n_fields,
                             int64_t n_units, moeq_resume **out, moeq_error *err)
{
    *out = NULL;
    if (n_units < 0 || n_units > ((int64_t)1 << 40))
        return moeq_fail(err, MOEQ_ERR_MISUSE, "resume: %lld units", (long long)n_units);
    if (strlen(dir) > 4000) return moeq_fail(err, MOEQ_ERR_MISUSE, "resume: directory name too long");
    moeq_resume *r = calloc(1, sizeof *r);
    if (!r || !(r->done = calloc((size_t)(n_units ? n_units : 1), 1))) {
        free(r);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    }
    snprintf(r->dir, sizeof r->dir, "%s", dir);
    r->n_units = n_units;
    moeq_status st = MOEQ_OK;
    size_t wl = 0;
    char *want = manifest_text(stage, n_units, fields, n_fields, &wl);
    char mpath[4200];
    snprintf(mpath, sizeof mpath, "%s/manifest", dir);
    struct stat sb;
    if (!want) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); goto done; }
    if (stat(dir, &sb) != 0) {
        if (errno != ENOENT || mkdir(dir, 0755) != 0) {
            st = moeq_fail(err, MOEQ_ERR_IO, "%s: cannot create the checkpoint directory: %s", dir, strerror(errno));
            goto done;
        }
    } else if (!S_ISDIR(sb.st_mode)) {
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: --resume wants a directory", dir);
        goto done;
    }
    FILE *fp = fopen(mpath, "rb");
    if (fp) {
        char *text = malloc(wl + 4096 + 1);
        size_t got = text ? fread(text, 1, wl + 4096, fp) : 0;
        fclose(fp);
        if (!text) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); goto done; }
        text[got] = 0;
        if (strncmp(text, "moeq-resume 1\n", 14))
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: not a moeq checkpoint manifest", mpath);
        else st = check_manifest(mpath, text, want, err);
        free(text);
        if (st) goto done;
    } else {
        /* a new checkpoint: the directory must be empty (never mix with other files) */
        DIR *d = opendir(dir);
        struct dirent *de;
        int other = 0;
        while (d && (de = readdir(d)))
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) other = 1;
        if (d) closedir(d);
        if (!d) { st = moeq_fail(err, MOEQ_ERR_IO, "%s: cannot read the directory", dir); goto done; }
        if (other) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: holds files but no checkpoint manifest: not a --resume "
                           "directory (give an empty or new one)", dir);
            goto done;
        }
        if ((st = write_atomic(mpath, want, wl, NULL, 0, err))) goto done;
    }
    /* finished units; leftovers of a killed write (*.tmp) go */
    DIR *d = opendir(dir);
    if (!d) { st = moeq_fail(err, MOEQ_ERR_IO, "%s: cannot read the directory", dir); goto done; }
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t nl = strlen(de->d_name);
        char p[4400];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (nl > 4 && !strcmp(de->d_name + nl - 4, ".tmp") && !strncmp(de->d_name, "unit-", 5)) {
            unlink(p);
            continue;
        }
        long long u;
        char tail[8];
        if (sscanf(de->d_name, "unit-%8lld.bi%1s", &u, tail) != 2 || nl != 17 || strcmp(de->d_name + 13, ".bin"))
            continue;
        if (u < 0 || u >= n_units) continue;
        FILE *uf = fopen(p, "rb");
        uint8_t h[UNIT_HEADER];
        int ok = uf && fread(h, 1, UNIT_HEADER, uf) == UNIT_HEADER && !memcmp(h, UNIT_MAGIC, 8) &&
                 rd32(h + 8) == UNIT_VERSION && rd64(h + 16) == (uint64_t)u;
        if (ok && fstat(fileno(uf), &sb) == 0) ok = (uint64_t)sb.st_size == UNIT_HEADER + rd64(h + 24);
        if (uf) fclose(uf);
        if (!ok) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: not a complete checkpoint unit (remove it to recompute it)", p);
            break;
        }
        if (!r->done[u]) r->n_done++;
        r->done[u] = 1;
    }
    closedir(d);
done:
    free(want);
    if (st) { moeq_resume_close(r); return st; }
    *out = r;
    return MOEQ_OK;
}

void moeq_resume_close(moeq_resume *r)
{
    if (!r) return;
    free(r->done);
    free(r);
}

void moeq_resume_remove(moeq_resume *r)
{
    if (!r) return;
    char p[4200];
    for (int64_t u = 0; u < r->n_units; u++) {
        unit_path(r, u, p, sizeof p);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/manifest", r->dir);
    unlink(p);
    rmdir(r->dir);   /* only when empty: files of the caller's own stay */
    moeq_resume_close(r);
}

const char *moeq_resume_dir(const moeq_resume *r) { return r->dir; }
int moeq_resume_done(const moeq_resume *r, int64_t unit) { return unit >= 0 && unit < r->n_units && r->done[unit]; }
int64_t moeq_resume_n_done(const moeq_resume *r) { return r->n_done; }

moeq_status moeq_resume_write(moeq_resume *r, int64_t unit, const void *data, size_t n, moeq_error *err)
{
    if (unit < 0 || unit >= r->n_units) return moeq_fail(err, MOEQ_ERR_MISUSE, "resume: unit %lld", (long long)unit);
    uint8_t h[UNIT_HEADER] = {0};
    memcpy(h, UNIT_MAGIC, 8);
    wr32(h + 8, UNIT_VERSION);
    wr64(h + 16, (uint64_t)unit);
    wr64(h + 24, (uint64_t)n);
    wr64(h + 32, XXH64(data, n, 0));
    char p[4200];
    unit_path(r, unit, p, sizeof p);
    moeq_status st = write_atomic(p, h, sizeof h, data, n, err);
    if (st) return st;
    if (!r->done[unit]) r->n_done++;
    r->done[unit] = 1;
    return MOEQ_OK;
}

moeq_status moeq_resume_read(moeq_resume *r, int64_t unit, void **data, size_t *n, moeq_error *err)
{
    *data = NULL;
    *n = 0;
    char p[4200];
    unit_path(r, unit, p, sizeof p);
    FILE *fp = fopen(p, "rb");
    if (!fp) return moeq_fail(err, MOEQ_ERR_IO, "%s: cannot open: %s", p, strerror(errno));
    uint8_t h[UNIT_HEADER];
    moeq_status st = MOEQ_OK;
    uint8_t *b = NULL;
    uint64_t len = 0;
    if (fread(h, 1, UNIT_HEADER, fp) != UNIT_HEADER || memcmp(h, UNIT_MAGIC, 8) || rd32(h + 8) != UNIT_VERSION ||
        rd64(h + 16) != (uint64_t)unit)
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: bad checkpoint header", p);
    if (st == MOEQ_OK) {
        len = rd64(h + 24);
        if (len > (uint64_t)SIZE_MAX / 2) st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: bad length", p);
        else if (!(b = malloc(len ? (size_t)len : 1))) st = moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", p);
        else if (fread(b, 1, (size_t)len, fp) != (size_t)len) st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: truncated", p);
        else if (XXH64(b, (size_t)len, 0) != rd64(h + 32))
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: checksum mismatch (remove the file to recompute the unit)", p);
    }
    fclose(fp);
    if (st) { free(b); return st; }
    if (len == 0) { free(b); b = NULL; }
    *data = b;
    *n = (size_t)len;
    return MOEQ_OK;
}

/* ---- buffers ------------------------------------------------------------------------------- */

void moeq_buf_put(moeq_buf *b, const void *data, size_t n)
{
    if (b->oom || n == 0) return;
    if (b->n + n > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n) nc *= 2;
        uint8_t *p = realloc(b->p, nc);
        if (!p) { b->oom = 1; return; }
        b->p = p;
        b->cap = nc;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

void moeq_buf_u32(moeq_buf *b, uint32_t v) { uint8_t t[4]; wr32(t, v); moeq_buf_put(b, t, 4); }
void moeq_buf_u64(moeq_buf *b, uint64_t v) { uint8_t t[8]; wr64(t, v); moeq_buf_put(b, t, 8); }
void moeq_buf_f64(moeq_buf *b, double v) { uint64_t u; memcpy(&u, &v, 8); moeq_buf_u64(b, u); }
void moeq_buf_str(moeq_buf *b, const char *s)
{
    size_t n = strlen(s);
    moeq_buf_u32(b, (uint32_t)n);
    moeq_buf_put(b, s, n);
}
void moeq_buf_free(moeq_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

const void *moeq_rd_bytes(moeq_rd *r, size_t n)
{
    if (r->bad || n > r->n - r->off) { r->bad = 1; return NULL; }
    const void *p = r->p + r->off;
    r->off += n;
    return p;
}
uint32_t moeq_rd_u32(moeq_rd *r) { const uint8_t *p = moeq_rd_bytes(r, 4); return p ? rd32(p) : 0; }
uint64_t moeq_rd_u64(moeq_rd *r) { const uint8_t *p = moeq_rd_bytes(r, 8); return p ? rd64(p) : 0; }
double moeq_rd_f64(moeq_rd *r) { uint64_t u = moeq_rd_u64(r); double v; memcpy(&v, &u, 8); return v; }
void moeq_rd_str(moeq_rd *r, char *buf, size_t cap)
{
    uint32_t n = moeq_rd_u32(r);
    const char *s = moeq_rd_bytes(r, n);
    size_t k = s ? (n < cap - 1 ? n : cap - 1) : 0;
    if (k) memcpy(buf, s, k);
    buf[k] = 0;
}
