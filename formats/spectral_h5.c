/* The HDF5 file of moeq spectral (layout: docs/STATS.md, "spectral files"). The only file that
 * includes hdf5.h for spectra. Written from one thread, to a temporary name next to the
 * destination, renamed into place at the end. Object modification times are not stored, so
 * the same run gives the same bytes. */
#include "moeq_spectral.h"

#include <hdf5.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SPEC_FORMAT_VERSION 1

struct moeq_spec_h5 {
    hid_t file, gcpl, dcpl;
    char *path, *tmp;
    moeq_spec_opts o;
    moeq_spec_h5_meta meta;
    uint8_t *is_moe;
};

static const struct { const char *name; size_t off; int rand_only; } F64_COLS[] = {
    {"alpha", offsetof(moeq_spec_result, alpha), 0},
    {"alpha_hill", offsetof(moeq_spec_result, alpha_hill), 0},
    {"alpha_ks", offsetof(moeq_spec_result, alpha_ks), 0},
    {"ks_xmin", offsetof(moeq_spec_result, ks_xmin), 0},
    {"ks_d", offsetof(moeq_spec_result, ks_d), 0},
    {"ks_sigma", offsetof(moeq_spec_result, ks_sigma), 0},
    {"stable_rank", offsetof(moeq_spec_result, stable_rank), 0},
    {"log_norm", offsetof(moeq_spec_result, log_norm), 0},
    {"log_spectral_norm", offsetof(moeq_spec_result, log_spectral_norm), 0},
    {"alpha_weighted", offsetof(moeq_spec_result, alpha_weighted), 0},
    {"log_alpha_norm", offsetof(moeq_spec_result, log_alpha_norm), 0},
    {"var", offsetof(moeq_spec_result, var), 0},
    {"lambda_max", offsetof(moeq_spec_result, lambda_max), 0},
    {"rand_lambda_max", offsetof(moeq_spec_result, rand_lambda_max), 1},
    {"ww_softrank", offsetof(moeq_spec_result, ww_softrank), 1},
    {"rand_distance", offsetof(moeq_spec_result, rand_distance), 1},
};
static const struct { const char *name; size_t off; } I64_COLS[] = {
    {"rows", offsetof(moeq_spec_result, rows)},
    {"cols", offsetof(moeq_spec_result, cols)},
    {"n_eigs", offsetof(moeq_spec_result, n_eigs)},
    {"n_eigs_total", offsetof(moeq_spec_result, n_eigs_total)},
    {"n_tiles", offsetof(moeq_spec_result, n_tiles)},
    {"hill_k", offsetof(moeq_spec_result, hill_k)},
    {"ks_n_tail", offsetof(moeq_spec_result, ks_n_tail)},
    {"ks_fingers", offsetof(moeq_spec_result, ks_fingers)},
    {"nonfinite", offsetof(moeq_spec_result, nonfinite)},
};

static moeq_status h5fail(moeq_spec_h5 *h, moeq_error *err, const char *what, const char *obj)
{
    return moeq_fail(err, MOEQ_ERR_IO, "%s: HDF5 could not %s %s", h ? h->tmp : "?", what, obj ? obj : "");
}

/* A fixed-length UTF-8 string type of size n (n >= 1, NUL-terminated). */
static hid_t str_type(size_t n)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return t;
    if (H5Tset_size(t, n < 1 ? 1 : n) < 0 || H5Tset_strpad(t, H5T_STR_NULLTERM) < 0 ||
        H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

static int attr_write(hid_t loc, const char *name, hid_t type, const void *v)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    if (sp < 0) return -1;
    hid_t a = H5Acreate2(loc, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, type, v) < 0 ? -1 : 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc;
}
static int attr_str(hid_t loc, const char *name, const char *v)
{
    if (!v) v = "";
    hid_t t = str_type(strlen(v) + 1);
    if (t < 0) return -1;
    int rc = attr_write(loc, name, t, v);
    H5Tclose(t);
    return rc;
}
static int attr_i64(hid_t loc, const char *name, int64_t v) { return attr_write(loc, name, H5T_NATIVE_INT64, &v); }
static int attr_f64(hid_t loc, const char *name, double v) { return attr_write(loc, name, H5T_NATIVE_DOUBLE, &v); }

/* Writes a dataset of `rank` dims; file type = memory type except for strings. */
static int ds_write(moeq_spec_h5 *h, hid_t loc, const char *name, hid_t mtype, int rank, const hsize_t *dims,
                    const void *data)
{
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    if (sp < 0) return -1;
    hid_t d = H5Dcreate2(loc, name, mtype, sp, H5P_DEFAULT, h->dcpl, H5P_DEFAULT);
    int rc = d < 0 || H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0 ? -1 : 0;
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    return rc;
}

static hid_t group_open_or_create(moeq_spec_h5 *h, hid_t loc, const char *name)
{
    htri_t ex = H5Lexists(loc, name, H5P_DEFAULT);
    if (ex > 0) return H5Gopen2(loc, name, H5P_DEFAULT);
    if (ex < 0) return -1;
    return H5Gcreate2(loc, name, H5P_DEFAULT, h->gcpl, H5P_DEFAULT);
}

static void h5_close(moeq_spec_h5 *h)
{
    if (h->file >= 0) H5Fclose(h->file);
    if (h->gcpl >= 0) H5Pclose(h->gcpl);
    if (h->dcpl >= 0) H5Pclose(h->dcpl);
    h->file = h->gcpl = h->dcpl = -1;
}

static void h5_free(moeq_spec_h5 *h)
{
    if (!h) return;
    free(h->path);
    free(h->tmp);
    free(h->is_moe);
    free(h);
}

void moeq_spec_h5_abort(moeq_spec_h5 *h)
{
    if (!h) return;
    h5_close(h);
    if (h->tmp) unlink(h->tmp);
    h5_free(h);
}

moeq_status moeq_spec_h5_create(const char *path, const moeq_spec_opts *o,
                                const moeq_spec_h5_meta *meta, moeq_spec_h5 **out,
                                moeq_error *err)
{
    if (!path || !o || !meta || !out || meta->layers < 0 || meta->experts < 0)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_spec_h5_create: bad argument");
    *out = NULL;
    /* library code never prints: HDF5's own error stack printing is switched off */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    moeq_spec_h5 *h = calloc(1, sizeof *h);
    if (!h) return moeq_fail(err, MOEQ_ERR_NOMEM, "moeq_spec_h5_create");
    h->file = h->gcpl = h->dcpl = -1;
    size_t pl = strlen(path);
    h->path = malloc(pl + 1);
    h->tmp = malloc(pl + 32);
    h->is_moe = calloc((size_t)meta->layers + 1, 1);
    if (!h->path || !h->tmp || !h->is_moe) { h5_free(h); return moeq_fail(err, MOEQ_ERR_NOMEM, "moeq_spec_h5_create"); }
    memcpy(h->path, path, pl + 1);
    snprintf(h->tmp, pl + 32, "%s.tmp%ld", path, (long)getpid());
    if (meta->layer_is_moe) memcpy(h->is_moe, meta->layer_is_moe, (size_t)meta->layers);
    h->o = *o;
    h->meta = *meta;
    h->meta.layer_is_moe = h->is_moe;

    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    /* readable by HDF5 1.8+ (older h5py and tools): no newer object formats */
    if (fapl >= 0) H5Pset_libver_bounds(fapl, H5F_LIBVER_EARLIEST, H5F_LIBVER_V18);
    h->file = H5Fcreate(h->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl >= 0 ? fapl : H5P_DEFAULT);
    if (fapl >= 0) H5Pclose(fapl);
    if (h->file < 0) {
        moeq_status st = moeq_fail(err, MOEQ_ERR_IO, "%s: cannot create (HDF5)", h->tmp);
        h5_free(h);
        return st;
    }
    h->gcpl = H5Pcreate(H5P_GROUP_CREATE);
    h->dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (h->gcpl < 0 || h->dcpl < 0 || H5Pset_obj_track_times(h->gcpl, 0) < 0 || H5Pset_obj_track_times(h->dcpl, 0) < 0) {
        moeq_status st = h5fail(h, err, "set up", "property lists");
        moeq_spec_h5_abort(h);
        return st;
    }
    char flagnames[256];
    moeq_spec_flags_str(0xffffffffu, flagnames, sizeof flagnames);
    hid_t f = h->file;
    int bad = attr_str(f, "format", "moeq-spectral") | attr_i64(f, "format_version", SPEC_FORMAT_VERSION) |
              attr_str(f, "tool", "moeq spectral") | attr_str(f, "tool_version", meta->tool_version) |
              attr_str(f, "model", meta->model_path) | attr_str(f, "model_type", meta->model_type) |
              attr_str(f, "mode", moeq_spec_mode_name(o->mode)) |
              attr_str(f, "estimator", moeq_spec_estimator_name(o->estimator)) |
              attr_str(f, "ks_fix", moeq_spec_ks_fix_name(o->ks_fix)) | attr_str(f, "scope", meta->scope) |
              attr_i64(f, "tile", o->tile) | attr_i64(f, "max_blocks", o->max_blocks) |
              attr_i64(f, "seed", (int64_t)o->seed) | attr_f64(f, "evals_thresh", o->evals_thresh) |
              attr_i64(f, "min_evals", o->min_evals) | attr_i64(f, "randomize", o->randomize) |
              attr_i64(f, "layers", meta->layers) | attr_i64(f, "experts", meta->experts) |
              attr_str(f, "projs", "gate,up,down") | attr_str(f, "flag_bits", flagnames) |
              attr_i64(f, "save_eigs", meta->save_eigs);
    if (bad) {
        moeq_status st = h5fail(h, err, "write", "root attributes");
        moeq_spec_h5_abort(h);
        return st;
    }
    *out = h;
    return MOEQ_OK;
}

static void eig_name(const moeq_spec_item *it, char *buf, size_t cap)
{
    if (it->expert >= 0) snprintf(buf, cap, "e%03lld_%s", (long long)it->expert, moeq_proj_name(it->proj));
    else snprintf(buf, cap, "%s", moeq_proj_name(it->proj));
}

moeq_status moeq_spec_h5_put_eigs(moeq_spec_h5 *h, const moeq_spec_item *item,
                                  const double *eigs, int64_t n, moeq_error *err)
{
    if (!h || !item || (n > 0 && !eigs) || n < 0) return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_spec_h5_put_eigs");
    char lname[32], dname[64];
    snprintf(lname, sizeof lname, "L%03lld", (long long)item->layer);
    eig_name(item, dname, sizeof dname);
    hid_t g0 = group_open_or_create(h, h->file, "layers");
    hid_t g1 = g0 >= 0 ? group_open_or_create(h, g0, lname) : -1;
    hid_t g2 = g1 >= 0 ? group_open_or_create(h, g1, "eigs") : -1;
    hsize_t dims[1] = {(hsize_t)n};
    int bad = g2 < 0 || ds_write(h, g2, dname, H5T_NATIVE_DOUBLE, 1, dims, n ? eigs : (const void *)"");
    if (!bad) {
        hid_t d = H5Dopen2(g2, dname, H5P_DEFAULT);
        bad = d < 0 || attr_str(d, "tensor", item->tensor) < 0;
        if (d >= 0) H5Dclose(d);
    }
    if (g2 >= 0) H5Gclose(g2);
    if (g1 >= 0) H5Gclose(g1);
    if (g0 >= 0) H5Gclose(g0);
    return bad ? h5fail(h, err, "write eigenvalues of", item->tensor) : MOEQ_OK;
}

/* Writes every column for the results sel[0..n) (NULL entries: missing, NaN / -1 / flags 0)
 * into loc with dims (rank 1 or 2). */
static int write_columns(moeq_spec_h5 *h, hid_t loc, const moeq_spec_item *const *its,
                         const moeq_spec_result *const *sel, size_t n, int rank, const hsize_t *dims, int with_index)
{
    double *f = malloc((n ? n : 1) * sizeof *f);
    int64_t *iv = malloc((n ? n : 1) * sizeof *iv);
    uint32_t *u = malloc((n ? n : 1) * sizeof *u);
    size_t smax = 2, pmax = 2;
    for (size_t i = 0; i < n; i++)
        if (its[i]) {
            size_t l = strlen(its[i]->tensor) + 1, p = strlen(moeq_proj_name(its[i]->proj)) + 1;
            if (l > smax) smax = l;
            if (p > pmax) pmax = p;
        }
    char *s = calloc((n ? n : 1), smax > pmax ? smax : pmax);
    int bad = !f || !iv || !u || !s;
    for (size_t c = 0; !bad && c < sizeof F64_COLS / sizeof F64_COLS[0]; c++) {
        if (F64_COLS[c].rand_only && !h->o.randomize) continue;
        for (size_t i = 0; i < n; i++)
            f[i] = sel[i] ? *(const double *)((const char *)sel[i] + F64_COLS[c].off) : NAN;
        bad |= ds_write(h, loc, F64_COLS[c].name, H5T_NATIVE_DOUBLE, rank, dims, f) < 0;
    }
    for (size_t c = 0; !bad && c < sizeof I64_COLS / sizeof I64_COLS[0]; c++) {
        for (size_t i = 0; i < n; i++)
            iv[i] = sel[i] ? *(const int64_t *)((const char *)sel[i] + I64_COLS[c].off) : -1;
        bad |= ds_write(h, loc, I64_COLS[c].name, H5T_NATIVE_INT64, rank, dims, iv) < 0;
    }
    if (!bad) {
        for (size_t i = 0; i < n; i++) u[i] = sel[i] ? sel[i]->flags : 0;
        bad |= ds_write(h, loc, "flags", H5T_NATIVE_UINT32, rank, dims, u) < 0;
    }
    if (!bad) {
        hid_t t = str_type(smax);
        for (size_t i = 0; i < n; i++)
            if (its[i]) memcpy(s + i * smax, its[i]->tensor, strlen(its[i]->tensor) + 1);
        bad |= t < 0 || ds_write(h, loc, "tensor", t, rank, dims, s) < 0;
        if (t >= 0) H5Tclose(t);
    }
    if (!bad && with_index) {
        for (size_t i = 0; i < n; i++) iv[i] = its[i]->layer;
        bad |= ds_write(h, loc, "layer", H5T_NATIVE_INT64, rank, dims, iv) < 0;
        for (size_t i = 0; i < n; i++) iv[i] = its[i]->expert;
        bad |= ds_write(h, loc, "expert", H5T_NATIVE_INT64, rank, dims, iv) < 0;
        hid_t t = str_type(pmax);
        memset(s, 0, n * pmax);
        for (size_t i = 0; i < n; i++) {
            const char *p = moeq_proj_name(its[i]->proj);
            memcpy(s + i * pmax, p, strlen(p) + 1);
        }
        bad |= t < 0 || ds_write(h, loc, "proj", t, rank, dims, s) < 0;
        if (t >= 0) H5Tclose(t);
    }
    free(f); free(iv); free(u); free(s);
    return bad ? -1 : 0;
}

moeq_status moeq_spec_h5_finish(moeq_spec_h5 *h, const moeq_spec_item *items,
                                const moeq_spec_result *res, size_t n, moeq_error *err)
{
    if (!h) return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_spec_h5_finish: NULL handle");
    if (n && (!items || !res)) { moeq_spec_h5_abort(h); return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_spec_h5_finish"); }
    const int64_t L = h->meta.layers, E = h->meta.experts;
    const size_t cells = (size_t)E * 3;
    const moeq_spec_result **sel = calloc(n > cells ? n : cells ? cells : 1, sizeof *sel);
    const moeq_spec_item **its = calloc(n > cells ? n : cells ? cells : 1, sizeof *its);
    moeq_status st = MOEQ_OK;
    if (!sel || !its) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "moeq_spec_h5_finish"); goto fail; }
    hid_t g0 = group_open_or_create(h, h->file, "layers");
    if (g0 < 0) { st = h5fail(h, err, "create", "/layers"); goto fail; }
    for (int64_t l = 0; l < L && st == MOEQ_OK; l++) {
        char lname[32];
        snprintf(lname, sizeof lname, "L%03lld", (long long)l);
        hid_t g1 = group_open_or_create(h, g0, lname);
        int bad = g1 < 0 || attr_i64(g1, "layer", l) < 0 || attr_i64(g1, "is_moe", h->is_moe[l]) < 0;
        if (!bad && h->is_moe[l] && E > 0) {
            memset(sel, 0, cells * sizeof *sel);
            memset(its, 0, cells * sizeof *its);
            size_t found = 0;
            for (size_t i = 0; i < n; i++)
                if (items[i].layer == l && items[i].expert >= 0 && items[i].expert < E && items[i].proj <= MOEQ_PROJ_DOWN) {
                    size_t c = (size_t)items[i].expert * 3 + (size_t)items[i].proj;
                    sel[c] = &res[i];
                    its[c] = &items[i];
                    found++;
                }
            if (found) {
                hsize_t dims[2] = {(hsize_t)E, 3};
                bad = write_columns(h, g1, its, sel, cells, 2, dims, 0) < 0;
            }
        }
        if (g1 >= 0) H5Gclose(g1);
        if (bad) st = h5fail(h, err, "write layer", lname);
    }
    H5Gclose(g0);
    if (st != MOEQ_OK) goto fail;
    /* flat table: every matrix of the run, in processing order */
    hid_t gm = H5Gcreate2(h->file, "matrices", H5P_DEFAULT, h->gcpl, H5P_DEFAULT);
    if (gm < 0) { st = h5fail(h, err, "create", "/matrices"); goto fail; }
    for (size_t i = 0; i < n; i++) { sel[i] = &res[i]; its[i] = &items[i]; }
    hsize_t dims[1] = {(hsize_t)n};
    int bad = attr_i64(gm, "count", (int64_t)n) < 0 || (n && write_columns(h, gm, its, sel, n, 1, dims, 1) < 0);
    H5Gclose(gm);
    if (bad) { st = h5fail(h, err, "write", "/matrices"); goto fail; }
    free(sel);
    free(its);
    if (H5Fclose(h->file) < 0) {
        h->file = -1;
        st = h5fail(h, err, "close", "the file");
        moeq_spec_h5_abort(h);
        return st;
    }
    h->file = -1;
    h5_close(h);
    if (rename(h->tmp, h->path) != 0) {
        st = moeq_fail(err, MOEQ_ERR_IO, "%s: cannot rename %s into place", h->path, h->tmp);
        unlink(h->tmp);
    }
    h5_free(h);
    return st;
fail:
    free(sel);
    free(its);
    moeq_spec_h5_abort(h);
    return st;
}
