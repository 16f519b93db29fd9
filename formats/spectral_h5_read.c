/* Reader of spectral files (docs/STATS.md, "spectral files") for `moeq plan --cost alphaq`:
 * the per-layer [experts, 3] alpha and var tables, after checking the file's model identity. */
#include "moeq_plan.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "formats/h5_attr.h"

/* Reads /layers/LNNN/name, f64 [E, 3], into dst. */
static moeq_status read_table(hid_t f, const char *path, int64_t layer, const char *name, int64_t E, double *dst,
                              moeq_error *err)
{
    char p[96];
    snprintf(p, sizeof p, "/layers/L%03lld/%s", (long long)layer, name);
    if (H5Lexists(f, "/layers", H5P_DEFAULT) <= 0 || H5Oexists_by_name(f, p, H5P_DEFAULT) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: dataset %s is missing", path, p);
    }
    hid_t d = H5Dopen2(f, p, H5P_DEFAULT);
    hid_t sp = d >= 0 ? H5Dget_space(d) : -1;
    hsize_t dims[2] = {0};
    int ok = sp >= 0 && H5Sget_simple_extent_ndims(sp) == 2 && H5Sget_simple_extent_dims(sp, dims, NULL) == 2 &&
             dims[0] == (hsize_t)E && dims[1] == 3;
    if (ok) ok = H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) >= 0;
    if (sp >= 0) H5Sclose(sp);
    if (d >= 0) H5Dclose(d);
    H5Eclear2(H5E_DEFAULT);
    if (!ok) return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: dataset %s is not f64 [%lld, 3]", path, p, (long long)E);
    return MOEQ_OK;
}

moeq_status moeq_spectral_file_read(const char *path, const moeq_model *m, double *alpha, double *var,
                                    moeq_error *err)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (!path) return moeq_fail(err, MOEQ_ERR_MISUSE, "--cost alphaq needs --spectral F.h5 (from moeq spectral)");
    FILE *fp = fopen(path, "rb");
    if (!fp) return moeq_fail(err, MOEQ_ERR_NOT_FOUND, "%s: cannot open the spectral file", path);
    fclose(fp);
    if (H5Fis_hdf5(path) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: not an HDF5 file (a spectral file from moeq spectral)", path);
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) { H5Eclear2(H5E_DEFAULT); return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: cannot open as HDF5", path); }
    const moeq_config *c = moeq_model_config(m);
    moeq_status st = MOEQ_OK;
    char s[256];
    int64_t v;
    if (moeq_h5_attr_str(f, "format", s, sizeof s) || strcmp(s, "moeq-spectral")) {
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: root attribute 'format' is not moeq-spectral", path);
        goto done;
    }
    if (moeq_h5_attr_str(f, "model_type", s, sizeof s) || strcmp(s, c->model_type)) {
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: root attribute 'model_type' is '%s', the model is '%s': a spectral "
                       "file of another model", path, s, c->model_type);
        goto done;
    }
    if (moeq_h5_attr_i64(f, "layers", &v) || v != c->layers) {
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: root attribute 'layers' does not match the model (%lld)", path,
                       (long long)c->layers);
        goto done;
    }
    if (moeq_h5_attr_i64(f, "experts", &v) || v != c->n_experts) {
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: root attribute 'experts' does not match the model (%lld)", path,
                       (long long)c->n_experts);
        goto done;
    }
    int64_t E = c->n_experts;
    for (int64_t l = 0; l < c->layers; l++) {
        double *a = alpha + l * E * 3, *w = var + l * E * 3;
        if (!moeq_model_layer(m, l)->is_moe) {
            for (int64_t i = 0; i < E * 3; i++) a[i] = w[i] = NAN;
            continue;
        }
        if ((st = read_table(f, path, l, "alpha", E, a, err)) || (st = read_table(f, path, l, "var", E, w, err))) goto done;
    }
done:
    H5Fclose(f);
    H5Eclear2(H5E_DEFAULT);
    return st;
}
