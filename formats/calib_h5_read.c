/* Reader of calibration files (docs/STATS.md, "calibration files"): identity check against
 * the model, per-expert counts and coverage, one expert's Hessian read as one chunk. Every
 * read checks the dataset's rank, shape and that it exists before touching it. */
#include "moeq_gptq.h"
#include "moeq_calib.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "formats/h5_attr.h"

struct moeq_calib_file {
    char *path;
    hid_t file;
    int64_t layers, experts, hidden, inter, min_tokens, diag;
    int64_t tokens, ctx, val_every, val_windows;   /* the validation split: 0 in files without one */
};

static herr_t first_msg(unsigned n, const H5E_error2_t *e, void *data)
{
    if (n == 0 && e->desc) snprintf(data, 256, "%s", e->desc);
    return 0;
}

static moeq_status rd_fail(moeq_error *err, const char *path, const char *what)
{
    char msg[256] = "no detail";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, first_msg, msg);
    H5Eclear2(H5E_DEFAULT);
    return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: %s: HDF5: %s", path, what, msg);
}

moeq_status moeq_calib_file_open(const char *path, const moeq_model *m, moeq_calib_file **out,
                                 moeq_error *err)
{
    *out = NULL;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);   /* library code never prints */
    FILE *fp = fopen(path, "rb");
    if (!fp) return moeq_fail(err, MOEQ_ERR_NOT_FOUND, "%s: cannot open the calibration file", path);
    fclose(fp);
    if (H5Fis_hdf5(path) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: not an HDF5 file (a calibration file from moeq calibrate)", path);
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return rd_fail(err, path, "cannot open");
    moeq_calib_file *c = calloc(1, sizeof *c);
    if (!c || !(c->path = strdup(path))) {
        H5Fclose(f);
        free(c);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    }
    c->file = f;
    moeq_status st = MOEQ_OK;
    char s[256];
    int64_t v;
    const moeq_config *cf = moeq_model_config(m);
    if (moeq_h5_attr_str(f, "format", s, sizeof s) || strcmp(s, "moeq-calib")) {
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: root attribute 'format' is not moeq-calib", path);
        goto fail;
    }
    if (moeq_h5_attr_i64(f, "format_version", &v) || v != 1) {
        st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: root attribute 'format_version': version 1 expected", path);
        goto fail;
    }
    if (moeq_h5_attr_str(f, "model_type", s, sizeof s) || strcmp(s, cf->model_type)) {
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: root attribute 'model_type' is '%s', the model is '%s': a "
                       "calibration file of another model", path, s, cf->model_type);
        goto fail;
    }
    const struct { const char *name; int64_t want; } ids[] = {
        { "hidden", cf->hidden }, { "layers", cf->layers }, { "n_experts", cf->n_experts },
        { "top_k", cf->top_k }, { "moe_inter", cf->moe_inter }, { "vocab", cf->vocab },
    };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (moeq_h5_attr_i64(f, ids[i].name, &v) || v != ids[i].want) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: root attribute '%s' is %lld, the model has %lld: a "
                           "calibration file of another model", path, ids[i].name, (long long)v,
                           (long long)ids[i].want);
            goto fail;
        }
    const moeq_checkpoint *ck = moeq_model_checkpoint(m);
    uint64_t mb = 0;
    int64_t mbs = 0;
    if (ck && (moeq_h5_attr_i64(f, "model_bytes", &mbs) || (mb = (uint64_t)mbs) != moeq_ckpt_bytes(ck))) {
        H5Eclear2(H5E_DEFAULT);
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: root attribute 'model_bytes' is %llu, the model has %llu bytes: "
                       "a calibration file of another model", path, (unsigned long long)mb,
                       (unsigned long long)moeq_ckpt_bytes(ck));
        goto fail;
    }
    if (moeq_h5_attr_i64(f, "min_tokens", &c->min_tokens) || moeq_h5_attr_i64(f, "diag", &c->diag)) {
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: root attributes 'min_tokens'/'diag' missing", path);
        goto fail;
    }
    if (moeq_h5_attr_i64(f, "tokens", &c->tokens) || moeq_h5_attr_i64(f, "ctx", &c->ctx)) {
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: root attributes 'tokens'/'ctx' missing", path);
        goto fail;
    }
    /* written since the validation split; older files have none */
    if (H5Aexists(f, "val_every") > 0 &&
        (moeq_h5_attr_i64(f, "val_every", &c->val_every) || moeq_h5_attr_i64(f, "val_windows", &c->val_windows) ||
         c->val_every < 0 || c->val_windows < 0 || c->ctx <= 0 || c->val_windows > c->tokens / c->ctx)) {
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: root attributes 'val_every'/'val_windows' missing or out of range "
                       "(%lld windows of %lld tokens)", path, (long long)c->val_windows, (long long)c->ctx);
        goto fail;
    }
    H5Eclear2(H5E_DEFAULT);
    if (c->val_every == 0) c->val_windows = 0;
    c->layers = cf->layers;
    c->experts = cf->n_experts;
    c->hidden = cf->hidden;
    c->inter = cf->moe_inter;
    *out = c;
    return MOEQ_OK;
fail:
    H5Eclear2(H5E_DEFAULT);
    moeq_calib_file_close(c);
    return st;
}

void moeq_calib_file_close(moeq_calib_file *f)
{
    if (!f) return;
    H5Fclose(f->file);
    free(f->path);
    free(f);
}

int64_t moeq_calib_file_min_tokens(const moeq_calib_file *f) { return f->min_tokens; }
int moeq_calib_file_diag(const moeq_calib_file *f) { return (int)f->diag; }

/* Opens /layers/LNNN/name and checks its rank and shape. */
static moeq_status open_ds(moeq_calib_file *f, int64_t layer, const char *name, int rank, const hsize_t *dims,
                           hid_t *out, moeq_error *err)
{
    char p[96];
    snprintf(p, sizeof p, "/layers/L%03lld/%s", (long long)layer, name);
    if (H5Lexists(f->file, "/layers", H5P_DEFAULT) <= 0 || H5Oexists_by_name(f->file, p, H5P_DEFAULT) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: dataset %s is missing%s", f->path, p,
                         !strncmp(name, "hessian", 7) && f->diag ? " (the file was written with --diag)" : "");
    }
    hid_t d = H5Dopen2(f->file, p, H5P_DEFAULT);
    if (d < 0) return rd_fail(err, f->path, p);
    hid_t sp = H5Dget_space(d);
    hsize_t got[4] = {0};
    int r = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    int ok = r == rank && r <= 4 && H5Sget_simple_extent_dims(sp, got, NULL) == rank;
    for (int i = 0; ok && i < rank; i++) ok = got[i] == dims[i];
    if (sp >= 0) H5Sclose(sp);
    if (!ok) {
        H5Dclose(d);
        H5Eclear2(H5E_DEFAULT);
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: dataset %s has rank %d or a shape other than the model's",
                         f->path, p, r);
    }
    *out = d;
    return MOEQ_OK;
}

moeq_status moeq_calib_file_expert(moeq_calib_file *f, int64_t layer, int64_t expert,
                                   int64_t *tokens, int *flag, moeq_error *err)
{
    if (layer < 0 || layer >= f->layers || expert < 0 || expert >= f->experts)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "calib: layer %lld expert %lld out of range", (long long)layer,
                         (long long)expert);
    hsize_t dims[1] = { (hsize_t)f->experts };
    int64_t n[1024];
    uint8_t cov[1024];
    int64_t *nb = f->experts <= 1024 ? n : malloc((size_t)f->experts * 8);
    uint8_t *cb = f->experts <= 1024 ? cov : malloc((size_t)f->experts);
    moeq_status st = MOEQ_OK;
    hid_t d = -1;
    if (!nb || !cb) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); goto done; }
    if ((st = open_ds(f, layer, "expert_tokens", 1, dims, &d, err))) goto done;
    if (H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, nb) < 0) { st = rd_fail(err, f->path, "expert_tokens"); goto done; }
    H5Dclose(d);
    d = -1;
    if ((st = open_ds(f, layer, "coverage", 1, dims, &d, err))) goto done;
    if (H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, cb) < 0) { st = rd_fail(err, f->path, "coverage"); goto done; }
    *tokens = nb[expert];
    *flag = cb[expert];
    if (*tokens < 0 || *flag > 2)
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: layer %lld expert %lld: expert_tokens %lld / coverage %d out of "
                       "range", f->path, (long long)layer, (long long)expert, (long long)*tokens, *flag);
done:
    if (d >= 0) H5Dclose(d);
    if (nb != n) free(nb);
    if (cb != cov) free(cb);
    return st;
}

/* One [dim, dim] chunk of a [E, dim, dim] dataset into H. */
static moeq_status read_one(moeq_calib_file *f, hid_t d, int64_t e, int64_t dim, double *H, moeq_error *err)
{
    hid_t fs = H5Dget_space(d);
    hsize_t start[3] = { (hsize_t)e, 0, 0 }, count[3] = { 1, (hsize_t)dim, (hsize_t)dim };
    /* a memory space of the selection's own shape: HDF5 copies the chunk in one piece (a flat
     * [dim²] one made it walk the selection element by element, 20% of a GPTQ run) */
    hid_t ms = H5Screate_simple(3, count, NULL);
    herr_t r = fs < 0 || ms < 0 ? -1 : H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    if (r >= 0) r = H5Dread(d, H5T_NATIVE_DOUBLE, ms, fs, H5P_DEFAULT, H);
    if (fs >= 0) H5Sclose(fs);
    if (ms >= 0) H5Sclose(ms);
    return r < 0 ? rd_fail(err, f->path, "reading a Hessian") : MOEQ_OK;
}

/* Σ over a [E, dim, dim] dataset's expert chunk (expert -1: all of them, in order) into H. */
static moeq_status read_stack(moeq_calib_file *f, int64_t layer, int64_t expert, const char *name, double *H,
                              int64_t dim, moeq_error *err)
{
    hsize_t dims[3] = { (hsize_t)f->experts, (hsize_t)dim, (hsize_t)dim };
    hid_t d;
    moeq_status st = open_ds(f, layer, name, 3, dims, &d, err);
    if (st) return st;
    if (expert >= 0) {
        st = read_one(f, d, expert, dim, H, err);
    } else {
        double *tmp = malloc((size_t)(dim * dim) * sizeof *tmp);
        if (!tmp) st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
        memset(H, 0, (size_t)(dim * dim) * sizeof *H);
        for (int64_t e = 0; st == MOEQ_OK && e < f->experts; e++) {
            if ((st = read_one(f, d, e, dim, tmp, err))) break;
            for (int64_t i = 0; i < dim * dim; i++) H[i] += tmp[i];
        }
        free(tmp);
    }
    H5Dclose(d);
    if (st) return st;
    for (int64_t i = 0; i < dim * dim; i++)
        if (!(H[i] - H[i] == 0))
            return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: layer %lld expert %lld: %s has a non-finite value at [%lld, %lld]",
                             f->path, (long long)layer, (long long)expert, name, (long long)(i / dim),
                             (long long)(i % dim));
    return MOEQ_OK;
}

int64_t moeq_calib_file_val_windows(const moeq_calib_file *f) { return f->val_windows; }
int64_t moeq_calib_file_split_tokens(const moeq_calib_file *f, int split)
{
    int64_t v = f->val_windows * f->ctx;
    return split == MOEQ_SPLIT_VAL ? v : split == MOEQ_SPLIT_CAL ? f->tokens - v : f->tokens;
}

moeq_status moeq_calib_file_expert_split(moeq_calib_file *f, int64_t layer, int64_t expert, int split,
                                         int64_t *tokens, moeq_error *err)
{
    int fl;
    moeq_status st = moeq_calib_file_expert(f, layer, expert, tokens, &fl, err);
    if (st || split == MOEQ_SPLIT_ALL) return st;
    if (!f->val_windows)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "%s: no validation split (calibrate --val-every)", f->path);
    hsize_t dims[1] = { (hsize_t)f->experts };
    int64_t *nb = malloc((size_t)f->experts * 8);
    hid_t d = -1;
    if (!nb) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    st = open_ds(f, layer, "val_expert_tokens", 1, dims, &d, err);
    if (st == MOEQ_OK && H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, nb) < 0)
        st = rd_fail(err, f->path, "val_expert_tokens");
    if (d >= 0) H5Dclose(d);
    if (st == MOEQ_OK && (nb[expert] < 0 || nb[expert] > *tokens))
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: layer %lld expert %lld: val_expert_tokens %lld outside 0..%lld",
                       f->path, (long long)layer, (long long)expert, (long long)nb[expert], (long long)*tokens);
    if (st == MOEQ_OK) *tokens = split == MOEQ_SPLIT_VAL ? nb[expert] : *tokens - nb[expert];
    free(nb);
    return st;
}

moeq_status moeq_calib_file_hessian_split(moeq_calib_file *f, int64_t layer, int64_t expert, int down, int split,
                                          double *H, int64_t dim, int64_t *rows, moeq_error *err)
{
    int64_t want = down ? f->inter : f->hidden;
    if (layer < 0 || layer >= f->layers || expert < -1 || expert >= f->experts || dim != want ||
        split < MOEQ_SPLIT_ALL || split > MOEQ_SPLIT_VAL)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "calib: layer %lld expert %lld dim %lld out of range",
                         (long long)layer, (long long)expert, (long long)dim);
    if (split != MOEQ_SPLIT_ALL && !f->val_windows)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "%s: no validation split (calibrate --val-every)", f->path);
    const char *all = down ? "hessian_down" : "hessian_in", *val = down ? "val_hessian_down" : "val_hessian_in";
    moeq_status st = read_stack(f, layer, expert, split == MOEQ_SPLIT_VAL ? val : all, H, dim, err);
    if (st == MOEQ_OK && split == MOEQ_SPLIT_CAL) {   /* H_cal = H − H_val: the windows outside the split */
        double *tmp = malloc((size_t)(dim * dim) * sizeof *tmp);
        if (!tmp) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
        st = read_stack(f, layer, expert, val, tmp, dim, err);
        for (int64_t i = 0; st == MOEQ_OK && i < dim * dim; i++) H[i] -= tmp[i];
        free(tmp);
    }
    if (st) return st;
    if (rows) {
        *rows = 0;
        for (int64_t e = expert < 0 ? 0 : expert; e < (expert < 0 ? f->experts : expert + 1); e++) {
            int64_t n;
            if ((st = moeq_calib_file_expert_split(f, layer, e, split, &n, err))) return st;
            *rows += n;
        }
    }
    return MOEQ_OK;
}

moeq_status moeq_calib_file_hessian(moeq_calib_file *f, int64_t layer, int64_t expert, int down,
                                    double *H, int64_t dim, int64_t *rows, moeq_error *err)
{
    return moeq_calib_file_hessian_split(f, layer, expert, down, MOEQ_SPLIT_ALL, H, dim, rows, err);
}

moeq_status moeq_calib_file_group_hessian(moeq_calib_file *f, int64_t layer, const char *group, double *H,
                                          int64_t dim, int64_t *rows, moeq_error *err)
{
    if (layer < 0 || layer >= f->layers || dim < 1)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "calib: layer %lld dim %lld out of range", (long long)layer,
                         (long long)dim);
    char gp[96];
    snprintf(gp, sizeof gp, "/layers/L%03lld/%s", (long long)layer, group);
    if (H5Lexists(f->file, "/layers", H5P_DEFAULT) <= 0 || H5Oexists_by_name(f->file, gp, H5P_DEFAULT) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return moeq_fail(err, MOEQ_ERR_NOT_FOUND, "%s: group %s is missing", f->path, gp);
    }
    hid_t g = H5Gopen2(f->file, gp, H5P_DEFAULT);
    if (g < 0) return rd_fail(err, f->path, gp);
    int64_t n = -1, d = -1;
    moeq_status st = MOEQ_OK;
    if (moeq_h5_attr_i64(g, "rows", &n) || moeq_h5_attr_i64(g, "dim", &d) || n < 0 || d != dim)
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: %s: attributes rows/dim missing or dim %lld is not %lld", f->path, gp,
                       (long long)d, (long long)dim);
    H5Gclose(g);
    if (st) return st;
    char dn[128];
    snprintf(dn, sizeof dn, "%s/hessian", group);
    hsize_t dims[2] = { (hsize_t)dim, (hsize_t)dim };
    hid_t ds;
    if ((st = open_ds(f, layer, dn, 2, dims, &ds, err))) return st;
    herr_t r = H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, H);
    H5Dclose(ds);
    if (r < 0) return rd_fail(err, f->path, dn);
    for (int64_t i = 0; i < dim * dim; i++)
        if (!(H[i] - H[i] == 0))
            return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: %s/hessian has a non-finite value at [%lld, %lld]", f->path, gp,
                             (long long)(i / dim), (long long)(i % dim));
    if (rows) *rows = n;
    return MOEQ_OK;
}
