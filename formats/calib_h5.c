/* Calibration statistics files (HDF5; layout in docs/STATS.md, "calibration files").
 * The only file that includes hdf5.h for calibration files. Written through a temporary name
 * in the destination directory and renamed at the end; object timestamps are off so the same
 * run gives the same bytes. HDF5's own error printing is turned off: errors become statuses
 * whose detail carries the innermost HDF5 message. */
#include "moeq_calib.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <hdf5.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CALIB_FORMAT_VERSION 1
#define CALIB_TOOL_VERSION "0.1.0"

struct moeq_calib_h5 {
    char *path, *tmp;
    hid_t file, layers;
    int compress;   /* deflate level of the Hessians, 0: none */
    int64_t val_every;   /* the validation split: its datasets are written when > 0 */
};

/* The innermost (first) message of the HDF5 error stack. */
static herr_t first_msg(unsigned n, const H5E_error2_t *e, void *data)
{
    if (n == 0 && e->desc) snprintf(data, 256, "%s (%s)", e->desc, e->func_name ? e->func_name : "?");
    return 0;
}

static moeq_status h5_fail(moeq_error *err, const char *path, const char *what)
{
    char msg[256] = "no detail";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, first_msg, msg);
    H5Eclear2(H5E_DEFAULT);
    return moeq_fail(err, MOEQ_ERR_IO, "%s: cannot write %s: HDF5: %s%s%s", path, what, msg,
                     errno ? "; " : "", errno ? strerror(errno) : "");
}

moeq_status moeq_calib_h5_check_path(const char *path, moeq_error *err)
{
    struct stat sb;
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode))
        return moeq_fail(err, MOEQ_ERR_IO, "%s: output exists and is not a regular file", path);
    char *copy = strdup(path);
    if (!copy) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    const char *dir = dirname(copy);
    int ok = stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode);
    int e = errno;
    moeq_status st = MOEQ_OK;
    if (!ok)
        st = moeq_fail(err, MOEQ_ERR_IO, "%s: output directory %s %s", path, dir,
                       e == ENOENT || e == 0 ? "does not exist" : strerror(e));
    free(copy);
    return st;
}

static herr_t attr_raw(hid_t obj, const char *name, hid_t type, const void *v)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = sp < 0 ? -1 : H5Acreate2(obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = a < 0 ? -1 : H5Awrite(a, type, v);
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    return r;
}

static herr_t attr_i64(hid_t obj, const char *name, int64_t v) { return attr_raw(obj, name, H5T_STD_I64LE, &v); }
static herr_t attr_f64(hid_t obj, const char *name, double v) { return attr_raw(obj, name, H5T_IEEE_F64LE, &v); }
static herr_t attr_u64(hid_t obj, const char *name, uint64_t v) { return attr_raw(obj, name, H5T_STD_U64LE, &v); }

/* Fixed-length UTF-8 strings, NUL-padded (h5py reads them as bytes/str). */
static herr_t attr_str(hid_t obj, const char *name, const char *s)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    size_t n = strlen(s);
    herr_t r = H5Tset_size(t, n ? n : 1);
    if (r >= 0) r = H5Tset_strpad(t, H5T_STR_NULLPAD);
    if (r >= 0) r = H5Tset_cset(t, H5T_CSET_UTF8);
    if (r >= 0) r = attr_raw(obj, name, t, n ? s : "");
    H5Tclose(t);
    return r;
}

static hid_t group_create(hid_t parent, const char *name)
{
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    if (gcpl < 0) return -1;
    H5Pset_obj_track_times(gcpl, 0);
    hid_t g = H5Gcreate2(parent, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5Pclose(gcpl);
    return g;
}

/* A dataset of rank 1..3 with final dims; rank-3 ones are chunked one expert per chunk,
 * byte-shuffled and deflated (level 1: Hessians compress little, so cheap is right). */
static herr_t write_ds_level(hid_t g, const char *name, hid_t type, int rank, const hsize_t *dims,
                             const void *data, int level)
{
    hid_t sp = H5Screate_simple(rank, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    herr_t r = sp < 0 || dcpl < 0 ? -1 : H5Pset_obj_track_times(dcpl, 0);
    hsize_t total = 1;
    for (int i = 0; i < rank; i++) total *= dims[i];
    if (r >= 0 && total > 0 && (rank >= 2 || total >= 1024)) {
        hsize_t chunk[3] = {1, 1, 1};
        for (int i = 0; i < rank; i++) chunk[i] = dims[i];
        if (rank == 3) chunk[0] = 1;
        r = H5Pset_chunk(dcpl, rank, chunk);
        if (r >= 0 && level > 0) r = H5Pset_shuffle(dcpl);
        if (r >= 0 && level > 0) r = H5Pset_deflate(dcpl, (unsigned)level);
    }
    hid_t d = r < 0 ? -1 : H5Dcreate2(g, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    r = d < 0 ? -1 : (total ? H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : 0);
    if (d >= 0) H5Dclose(d);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (sp >= 0) H5Sclose(sp);
    return r;
}

/* Vectors and counts compress well and cost little: always deflated. */
static herr_t write_ds(hid_t g, const char *name, hid_t type, int rank, const hsize_t *dims,
                       const void *data)
{
    return write_ds_level(g, name, type, rank, dims, data, 1);
}

/* [E, d, d] written one expert (one chunk) at a time from each accumulator's own buffer. */
static herr_t write_hess_stack(hid_t g, const char *name, const moeq_calib_acc *a, int64_t E, int level)
{
    hsize_t d = (hsize_t)a[0].dim, dims[3] = {(hsize_t)E, d, d}, chunk[3] = {1, d, d};
    hid_t sp = H5Screate_simple(3, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    herr_t r = sp < 0 || dcpl < 0 ? -1 : H5Pset_obj_track_times(dcpl, 0);
    if (r >= 0) r = H5Pset_chunk(dcpl, 3, chunk);
    /* float64 sums have random low mantissa bits: deflate saves ~10% on Hessians for about the
     * cost of the whole accumulation (docs/calibrate.md, "Speed"), so it is opt-in */
    if (r >= 0 && level > 0) r = H5Pset_shuffle(dcpl);
    if (r >= 0 && level > 0) r = H5Pset_deflate(dcpl, (unsigned)level);
    /* no chunk cache: each chunk goes straight from the accumulator to the file (a cache would
     * copy chunks smaller than it, an expert's 512 KiB H_down at I = 256, first) */
    hid_t dapl = r < 0 ? -1 : H5Pcreate(H5P_DATASET_ACCESS);
    if (dapl < 0 || H5Pset_chunk_cache(dapl, 0, 0, 1.0) < 0) r = -1;
    hid_t ds = r < 0 ? -1 : H5Dcreate2(g, name, H5T_IEEE_F64LE, sp, H5P_DEFAULT, dcpl, dapl);
    if (dapl >= 0) H5Pclose(dapl);
    hsize_t mdims[3] = {1, d, d};
    hid_t msp = H5Screate_simple(3, mdims, NULL);
    r = ds < 0 || msp < 0 ? -1 : 0;
    for (int64_t e = 0; r >= 0 && e < E; e++) {
        hsize_t start[3] = {(hsize_t)e, 0, 0};
        r = H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, mdims, NULL);
        if (r >= 0) r = H5Dwrite(ds, H5T_NATIVE_DOUBLE, msp, sp, H5P_DEFAULT, a[e].hess);
    }
    if (msp >= 0) H5Sclose(msp);
    if (ds >= 0) H5Dclose(ds);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (sp >= 0) H5Sclose(sp);
    return r;
}

/* [E, d] rows gathered from a per-expert vector field. */
static herr_t write_vec_stack(hid_t g, const char *name, const moeq_calib_acc *a, int64_t E,
                              size_t field)
{
    int64_t d = a[0].dim;
    double *buf = malloc((size_t)(E * d) * sizeof(double));
    if (!buf) return -1;
    for (int64_t e = 0; e < E; e++)
        memcpy(buf + e * d, *(double *const *)((const char *)&a[e] + field), (size_t)d * sizeof(double));
    hsize_t dims[2] = {(hsize_t)E, (hsize_t)d};
    herr_t r = write_ds(g, name, H5T_IEEE_F64LE, 2, dims, buf);
    free(buf);
    return r;
}

static herr_t write_acc(hid_t parent, const char *name, const moeq_calib_acc *a, int level)
{
    if (!a->dim) return 0;
    hid_t g = group_create(parent, name);
    if (g < 0) return -1;
    hsize_t d = (hsize_t)a->dim, dd[2] = {d, d};
    herr_t r = attr_i64(g, "rows", a->rows);
    if (r >= 0) r = attr_i64(g, "dim", a->dim);
    if (r >= 0 && a->phi2_sum) r = attr_f64(g, "weight_sum", a->weight_sum);
    if (r >= 0 && a->hess) r = write_ds_level(g, "hessian", H5T_IEEE_F64LE, 2, dd, a->hess, level);
    if (r >= 0) r = write_ds(g, "sum2", H5T_IEEE_F64LE, 1, &d, a->sum2);
    if (r >= 0 && a->phi2_sum) r = write_ds(g, "phi2_sum", H5T_IEEE_F64LE, 1, &d, a->phi2_sum);
    if (r >= 0 && a->phi2_max) r = write_ds(g, "phi2_max", H5T_IEEE_F64LE, 1, &d, a->phi2_max);
    H5Gclose(g);
    return r;
}

/* Upper bound of the file size: every dataset uncompressed, deflate's worst-case growth (well
 * under 1% plus a few bytes per chunk), and HDF5 metadata (object headers, B-trees, attributes). */
static uint64_t calib_file_bound(const moeq_config *c, const moeq_calib_h5_meta *meta)
{
    uint64_t H = (uint64_t)c->hidden, I = (uint64_t)c->moe_inter, S = (uint64_t)c->shared_inter;
    uint64_t E = (uint64_t)c->n_experts, q = (uint64_t)(c->heads * c->head_dim), F = (uint64_t)c->dense_inter;
    uint64_t full = meta->diag ? 0 : 1, total = 1u << 20;
    for (int64_t l = 0; l < c->layers; l++) {
        uint64_t b = 65536;
        if (c->layer_is_moe[l]) {
            b += E * (full * (H * H + I * I) + H + 3 * I + 6) * 8 + E * 1024;
            if (meta->val_every > 0) b += E * (full * (H * H + I * I) + 1) * 8 + 4096;
            if (S) b += (full * (H * H + S * S) + H + 3 * S) * 8 + 4096;
        } else if (meta->scope_all) {
            b += (full * (H * H + F * F) + H + F) * 8 + 4096;
        }
        if (meta->scope_all) b += (full * (H * H + q * q) + H + q) * 8 + 4096;
        if (meta->scope_all && c->attn == MOEQ_ATTN_MLA) {   /* q_b_in, kv_b_in */
            uint64_t QL = (uint64_t)c->q_lora_rank, R = (uint64_t)c->kv_lora_rank;
            b += (full * (QL * QL + R * R) + QL + R) * 8 + 8192;
        }
        total += b + b / 64;
    }
    return total;
}

void moeq_calib_h5_abort(moeq_calib_h5 *w)
{
    if (!w) return;
    if (w->layers >= 0) H5Gclose(w->layers);
    if (w->file >= 0) H5Fclose(w->file);
    H5Eclear2(H5E_DEFAULT);
    if (w->tmp) unlink(w->tmp);
    free(w->path);
    free(w->tmp);
    free(w);
}

moeq_status moeq_calib_h5_create(const char *path, const moeq_model *m,
                                 const moeq_calib_h5_meta *meta, moeq_calib_h5 **out,
                                 moeq_error *err)
{
    *out = NULL;
    moeq_status st = moeq_calib_h5_check_path(path, err);
    if (st != MOEQ_OK) return st;
    /* HDF5's exit handler would retry closing a file whose close failed, and crash: a process
     * that saw a write failure exits without it (first HDF5 call of the process only) */
    H5dont_atexit();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);   /* library code never prints */
    moeq_calib_h5 *w = calloc(1, sizeof *w);
    if (!w) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    w->file = w->layers = -1;
    w->compress = meta->compress;
    w->val_every = meta->val_every;
    w->path = strdup(path);
    char *copy = strdup(path);
    size_t tl = strlen(path) + 32;
    w->tmp = malloc(tl);
    if (!w->path || !copy || !w->tmp) {
        free(copy);
        moeq_calib_h5_abort(w);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    }
    /* a hidden temporary in the destination directory, so the final rename is atomic */
    char *base = strrchr(copy, '/');
    if (base) {
        *base = 0;
        snprintf(w->tmp, tl, "%s/.%s.tmp.XXXXXX", copy, base + 1);
    } else {
        snprintf(w->tmp, tl, ".%s.tmp.XXXXXX", path);
    }
    free(copy);
    int fd = mkstemp(w->tmp);
    if (fd < 0) {
        st = moeq_fail(err, MOEQ_ERR_IO, "%s: cannot create a temporary file %s: %s", path, w->tmp,
                       strerror(errno));
        free(w->tmp);
        w->tmp = NULL;
        moeq_calib_h5_abort(w);
        return st;
    }
    /* Reserve the largest size the file can reach before writing anything: a full disk then
     * fails here, cleanly, instead of inside HDF5 (whose state after a failed write cannot be
     * closed safely). HDF5 truncates the file to its real end when it is closed. */
    mode_t mask = umask(0);   /* mkstemp makes 0600; give the file the usual 0666 & ~umask */
    umask(mask);
    if (fchmod(fd, 0666 & ~mask) != 0) { /* keep 0600: not worth failing the run */ }
    uint64_t reserve = calib_file_bound(moeq_model_config(m), meta);
    int fe = posix_fallocate(fd, 0, (off_t)reserve);
    close(fd);
    if (fe != 0 && fe != EINVAL && fe != EOPNOTSUPP) {
        st = moeq_fail(err, MOEQ_ERR_IO, "%s: cannot reserve %.1f MiB for the output: %s", path,
                       (double)reserve / 1048576.0, strerror(fe));
        moeq_calib_h5_abort(w);
        return st;
    }
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS), fcpl = H5Pcreate(H5P_FILE_CREATE);
    /* readable by HDF5 1.8 and later (h5py, h5dump, older tools) */
    if (fapl >= 0) H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
    if (fcpl >= 0) H5Pset_obj_track_times(fcpl, 0);
    errno = 0;
    w->file = fapl < 0 || fcpl < 0 ? -1 : H5Fcreate(w->tmp, H5F_ACC_TRUNC, fcpl, fapl);
    if (fapl >= 0) H5Pclose(fapl);
    if (fcpl >= 0) H5Pclose(fcpl);
    if (w->file < 0) {
        st = h5_fail(err, path, "the file");
        moeq_calib_h5_abort(w);
        return st;
    }
    const moeq_config *c = moeq_model_config(m);
    hid_t f = w->file;
    herr_t r = attr_str(f, "format", "moeq-calib");
    if (r >= 0) r = attr_i64(f, "format_version", CALIB_FORMAT_VERSION);
    if (r >= 0) r = attr_str(f, "tool", "moeq");
    if (r >= 0) r = attr_str(f, "tool_version", CALIB_TOOL_VERSION);
    if (r >= 0) r = attr_str(f, "model_path", moeq_model_path(m));
    if (r >= 0) r = attr_str(f, "model_type", c->model_type);
    if (r >= 0) r = attr_u64(f, "model_bytes", moeq_ckpt_bytes(moeq_model_checkpoint(m)));
    if (r >= 0) r = attr_i64(f, "hidden", c->hidden);
    if (r >= 0) r = attr_i64(f, "layers", c->layers);
    if (r >= 0) r = attr_i64(f, "n_experts", c->n_experts);
    if (r >= 0) r = attr_i64(f, "top_k", c->top_k);
    if (r >= 0) r = attr_i64(f, "moe_inter", c->moe_inter);
    if (r >= 0) r = attr_i64(f, "shared_inter", c->shared_inter);
    if (r >= 0) r = attr_i64(f, "dense_inter", c->dense_inter);
    if (r >= 0) r = attr_i64(f, "norm_topk_prob", c->norm_topk_prob);
    if (r >= 0) r = attr_i64(f, "vocab", c->vocab);
    if (r >= 0) r = attr_str(f, "tokens_source", meta->tokens_source ? meta->tokens_source : "");
    if (r >= 0) r = attr_u64(f, "tokens_xxh64", meta->tokens_xxh64);
    if (r >= 0) r = attr_i64(f, "tokens", meta->tokens);
    if (r >= 0) r = attr_i64(f, "ctx", meta->ctx);
    if (r >= 0) r = attr_i64(f, "windows", meta->windows);
    if (r >= 0) r = attr_i64(f, "min_tokens", meta->min_tokens);
    if (r >= 0) r = attr_i64(f, "diag", meta->diag);
    if (r >= 0) r = attr_str(f, "scope", meta->scope_all ? "all" : "experts");
    if (r >= 0) r = attr_str(f, "dtype", "f64");
    if (r >= 0) r = attr_i64(f, "compress", meta->compress);
    if (r >= 0) r = attr_i64(f, "val_every", meta->val_every);
    if (r >= 0) r = attr_i64(f, "val_windows", meta->val_windows);
    if (r >= 0 && meta->hessian_sums) r = attr_str(f, "hessian_sums", meta->hessian_sums);
    if (r >= 0) w->layers = group_create(f, "layers");
    if (r < 0 || w->layers < 0) {
        st = h5_fail(err, path, "the root attributes");
        moeq_calib_h5_abort(w);
        return st;
    }
    *out = w;
    return MOEQ_OK;
}

moeq_status moeq_calib_h5_write_layer(moeq_calib_h5 *w, const moeq_calib_layer *L,
                                      const uint8_t *flags, moeq_error *err)
{
    char name[32];
    snprintf(name, sizeof name, "L%03lld", (long long)L->layer);
    errno = 0;
    hid_t g = group_create(w->layers, name);
    herr_t r = g < 0 ? -1 : attr_i64(g, "layer", L->layer);
    if (r >= 0) r = attr_i64(g, "is_moe", L->is_moe);
    if (r >= 0) r = attr_i64(g, "tokens", L->tokens);
    int64_t E = L->n_experts;
    if (r >= 0 && L->is_moe && E > 0) {
        hsize_t e1 = (hsize_t)E;
        double *tmp = malloc((size_t)E * 2 * sizeof(double));
        if (!tmp) r = -1;
        if (r >= 0) r = attr_i64(g, "n_experts", E);
        if (r >= 0) r = write_ds(g, "expert_tokens", H5T_STD_I64LE, 1, &e1, L->expert_tokens);
        if (r >= 0) {
            for (int64_t e = 0; e < E; e++) tmp[e] = L->expert_down[e].weight_sum;
            r = write_ds(g, "expert_weight_sum", H5T_IEEE_F64LE, 1, &e1, tmp);
        }
        if (r >= 0) {
            for (int64_t e = 0; e < E; e++)
                tmp[e] = L->tokens ? (double)L->expert_tokens[e] / (double)L->tokens : 0;
            r = write_ds(g, "router_freq", H5T_IEEE_F64LE, 1, &e1, tmp);
        }
        if (r >= 0) r = write_ds(g, "router_logit_mean", H5T_IEEE_F64LE, 1, &e1, L->logit_sum);
        if (r >= 0) {
            for (int64_t e = 0; e < E; e++) tmp[e] = L->tokens ? L->logit_m2[e] / (double)L->tokens : 0;
            r = write_ds(g, "router_logit_var", H5T_IEEE_F64LE, 1, &e1, tmp);
        }
        if (r >= 0 && flags) r = write_ds(g, "coverage", H5T_STD_U8LE, 1, &e1, flags);
        free(tmp);
        if (r >= 0 && L->expert_in[0].hess) r = write_hess_stack(g, "hessian_in", L->expert_in, E, w->compress);
        if (r >= 0 && L->expert_down[0].hess) r = write_hess_stack(g, "hessian_down", L->expert_down, E, w->compress);
        if (r >= 0) r = write_vec_stack(g, "in_sum2", L->expert_in, E, offsetof(moeq_calib_acc, sum2));
        if (r >= 0) r = write_vec_stack(g, "down_sum2", L->expert_down, E, offsetof(moeq_calib_acc, sum2));
        if (r >= 0) r = write_vec_stack(g, "phi2_sum", L->expert_down, E, offsetof(moeq_calib_acc, phi2_sum));
        if (r >= 0) r = write_vec_stack(g, "phi2_max", L->expert_down, E, offsetof(moeq_calib_acc, phi2_max));
        if (r >= 0 && L->val_in && w->val_every > 0) {   /* the validation split (docs/calibrate.md) */
            int64_t *vt = malloc((size_t)E * sizeof *vt);
            if (!vt) r = -1;
            for (int64_t e = 0; r >= 0 && e < E; e++) vt[e] = L->val_in[e].rows;
            if (r >= 0) r = attr_i64(g, "val_tokens", L->val_tokens);
            if (r >= 0) r = write_ds(g, "val_expert_tokens", H5T_STD_I64LE, 1, &e1, vt);
            free(vt);
            if (r >= 0) r = write_hess_stack(g, "val_hessian_in", L->val_in, E, w->compress);
            if (r >= 0) r = write_hess_stack(g, "val_hessian_down", L->val_down, E, w->compress);
        }
    }
    if (r >= 0 && L->is_moe) r = write_acc(g, "shared_in", &L->shared_in, w->compress);
    if (r >= 0 && L->is_moe) r = write_acc(g, "shared_down", &L->shared_down, w->compress);
    if (r >= 0) r = write_acc(g, "attn_in", &L->attn_in, w->compress);
    if (r >= 0) r = write_acc(g, "attn_o", &L->attn_o, w->compress);
    if (r >= 0) r = write_acc(g, "q_b_in", &L->q_b_in, w->compress);     /* MLA; dim 0 otherwise */
    if (r >= 0) r = write_acc(g, "kv_b_in", &L->kv_b_in, w->compress);
    if (r >= 0 && !L->is_moe) r = write_acc(g, "dense_in", &L->dense_in, w->compress);
    if (r >= 0 && !L->is_moe) r = write_acc(g, "dense_down", &L->dense_down, w->compress);
    if (g >= 0 && H5Gclose(g) < 0) r = -1;
    /* push this layer's chunks out now so a full disk shows up at the layer that hit it */
    if (r >= 0) r = H5Fflush(w->file, H5F_SCOPE_LOCAL);
    if (r < 0) return h5_fail(err, w->path, name);
    return MOEQ_OK;
}

moeq_status moeq_calib_h5_commit(moeq_calib_h5 *w, uint64_t *file_bytes, moeq_error *err)
{
    errno = 0;
    herr_t r = H5Gclose(w->layers);
    w->layers = -1;
    if (r >= 0) r = H5Fflush(w->file, H5F_SCOPE_LOCAL);
    if (H5Fclose(w->file) < 0) r = -1;
    w->file = -1;
    moeq_status st = MOEQ_OK;
    if (r < 0) st = h5_fail(err, w->path, "the file");
    if (st == MOEQ_OK) {
        /* data on disk before the name points at it */
        int fd = open(w->tmp, O_RDONLY);
        if (fd < 0 || fsync(fd) != 0)
            st = moeq_fail(err, MOEQ_ERR_IO, "%s: cannot sync %s: %s", w->path, w->tmp, strerror(errno));
        if (fd >= 0) close(fd);
    }
    struct stat sb;
    if (st == MOEQ_OK && file_bytes) *file_bytes = stat(w->tmp, &sb) == 0 ? (uint64_t)sb.st_size : 0;
    if (st == MOEQ_OK && rename(w->tmp, w->path) != 0)
        st = moeq_fail(err, MOEQ_ERR_IO, "%s: cannot rename %s to it: %s", w->path, w->tmp, strerror(errno));
    if (st == MOEQ_OK) {
        free(w->tmp);
        w->tmp = NULL;
    }
    moeq_calib_h5_abort(w);
    return st;
}
