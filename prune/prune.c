/* moeq prune (docs/prune.md): channel or expert scores, the selection (per layer or global,
 * with a minimum width), and the output directory (zero-filled or ragged experts). Tensors are
 * produced one at a time by the safetensors writer's fill callback; the OBS update of an
 * expert's down projection is computed when its tensors are written (one expert in memory). */
#define _GNU_SOURCE
#include "moeq_core.h"
#include "moeq_prune.h"
#include "moeq_gptq.h"
#include "moeq_st_writer.h"
#include "formats/family.h"

#include <dirent.h>
#include <errno.h>
#include <hdf5.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- calibration vectors (phi2_sum, phi2_max, down_sum2: [E, I] per layer) ---------------- */

static moeq_status read_vec(const char *path, int64_t layer, const char *name, int64_t E, int64_t I, double *out,
                            moeq_error *err)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: cannot open as HDF5", path);
    char p[96];
    snprintf(p, sizeof p, "/layers/L%03lld/%s", (long long)layer, name);
    moeq_status st = MOEQ_OK;
    if (H5Lexists(f, "/layers", H5P_DEFAULT) <= 0 || H5Oexists_by_name(f, p, H5P_DEFAULT) <= 0) {
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: dataset %s is missing", path, p);
    } else {
        hid_t d = H5Dopen2(f, p, H5P_DEFAULT);
        hid_t sp = d >= 0 ? H5Dget_space(d) : -1;
        hsize_t dims[2] = { 0, 0 };
        int ok = sp >= 0 && H5Sget_simple_extent_ndims(sp) == 2 && H5Sget_simple_extent_dims(sp, dims, NULL) == 2 &&
                 dims[0] == (hsize_t)E && dims[1] == (hsize_t)I;
        if (!ok) st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: dataset %s: shape other than [%lld, %lld]", path, p,
                                (long long)E, (long long)I);
        else if (H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: dataset %s: read failed", path, p);
        for (int64_t i = 0; st == MOEQ_OK && i < E * I; i++)
            if (!(out[i] - out[i] == 0) || out[i] < 0)
                st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: dataset %s: value %g at [%lld, %lld] is not a finite "
                               "non-negative number", path, p, out[i], (long long)(i / I), (long long)(i % I));
        if (sp >= 0) H5Sclose(sp);
        if (d >= 0) H5Dclose(d);
    }
    H5Fclose(f);
    H5Eclear2(H5E_DEFAULT);
    return st;
}

/* ---- per-expert weights as float64 ------------------------------------------------------- */

static moeq_status expert_f64(const moeq_model *m, int64_t l, int64_t e, moeq_proj p, double **out, int64_t *rows,
                              int64_t *cols, moeq_error *err)
{
    moeq_mat v;
    moeq_status st = moeq_model_expert(m, l, e, p, &v, err);
    if (st) return st;
    float *f = malloc((size_t)(v.rows * v.cols + 1) * sizeof *f);
    double *d = malloc((size_t)(v.rows * v.cols + 1) * sizeof *d);
    if (!f || !d) {
        free(f);
        free(d);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "prune: out of memory");
    }
    if (v.rows) moeq_mat_to_f32(&v, 0, v.rows, f);
    moeq_mat_release(&v);   /* widened: the mapped pages are done with (docs/prune.md) */
    for (int64_t i = 0; i < v.rows * v.cols; i++) d[i] = f[i];
    free(f);
    *out = d;
    *rows = v.rows;
    *cols = v.cols;
    return MOEQ_OK;
}

static void col_norms2(const double *W, int64_t rows, int64_t cols, double *out)
{
    for (int64_t c = 0; c < cols; c++) out[c] = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) out[c] += W[r * cols + c] * W[r * cols + c];
}

static double rho_of(const moeq_prune_opts *o) { return o->rho < 0 ? 0.9 : o->rho; }

moeq_status moeq_prune_channel_scores(const moeq_model *m, moeq_calib_file *calib, const moeq_prune_opts *o,
                                      int64_t layer, int64_t e, double *out, moeq_error *err)
{
    const moeq_config *c = moeq_model_config(m);
    const int64_t I = c->moe_inter, E = c->n_experts;
    double *D = NULL, *G = NULL, *U = NULL, *H = NULL, *v1 = NULL, *v2 = NULL;
    int64_t dr, dc, gr, gc;
    moeq_status st = expert_f64(m, layer, e, MOEQ_PROJ_DOWN, &D, &dr, &dc, err);
    if (st) return st;
    if (dc != I) { st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "prune: the model is already pruned"); goto done; }
    if (o->score == MOEQ_PRUNE_MAGNITUDE) {
        double *g2 = malloc((size_t)I * sizeof *g2), *u2 = malloc((size_t)I * sizeof *u2);
        if (!g2 || !u2) st = moeq_fail(err, MOEQ_ERR_NOMEM, "prune: out of memory");
        if (!st) st = expert_f64(m, layer, e, MOEQ_PROJ_GATE, &G, &gr, &gc, err);
        if (!st) st = expert_f64(m, layer, e, MOEQ_PROJ_UP, &U, &gr, &gc, err);
        if (!st) {
            col_norms2(D, dr, dc, out);
            for (int64_t i = 0; i < I; i++) {
                double sg = 0, su = 0;
                for (int64_t j = 0; j < gc; j++) {
                    sg += G[i * gc + j] * G[i * gc + j];
                    su += U[i * gc + j] * U[i * gc + j];
                }
                /* ‖gate_c‖·‖up_c‖·‖down_c‖: the channel's output scale for a unit input */
                out[i] = sqrt(sg * su * out[i]);
            }
        }
        free(g2);
        free(u2);
    } else if (o->score == MOEQ_PRUNE_CAMERA) {
        v1 = malloc((size_t)(E * I) * sizeof *v1);
        v2 = malloc((size_t)(E * I) * sizeof *v2);
        if (!v1 || !v2) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "prune: out of memory"); goto done; }
        if ((st = read_vec(o->calib_path, layer, "phi2_sum", E, I, v1, err))) goto done;
        if ((st = read_vec(o->calib_path, layer, "phi2_max", E, I, v2, err))) goto done;
        col_norms2(D, dr, dc, out);
        double rho = rho_of(o);
        for (int64_t i = 0; i < I; i++) out[i] *= (1 - rho) * v1[e * I + i] + rho * v2[e * I + i];
    } else {
        int64_t ntok;
        int flag;
        if ((st = moeq_calib_file_expert(calib, layer, e, &ntok, &flag, err))) goto done;
        if (ntok == 0) {   /* never routed: nothing measured, nothing lost */
            for (int64_t i = 0; i < I; i++) out[i] = 0;
            goto done;
        }
        H = malloc((size_t)(I * I) * sizeof *H);
        if (!H) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "prune: out of memory"); goto done; }
        if ((st = moeq_calib_file_hessian(calib, layer, e, 1, H, I, NULL, err))) goto done;
        st = moeq_obs_saliency(D, dr, dc, H, o->compensate, o->damp, out, err);
    }
done:
    free(D);
    free(G);
    free(U);
    free(H);
    free(v1);
    free(v2);
    return st;
}

/* routing frequency × mean output norm: (n_e / T) · sqrt(tr(D H Dᵀ) / n_e), H = Σ h hᵀ */
static moeq_status expert_score(const moeq_model *m, moeq_calib_file *calib, int64_t l, int64_t e, int64_t T,
                                double *out, moeq_error *err)
{
    const int64_t I = moeq_model_config(m)->moe_inter;
    int64_t ntok, dr, dc;
    int flag;
    moeq_status st = moeq_calib_file_expert(calib, l, e, &ntok, &flag, err);
    if (st) return st;
    *out = 0;
    if (ntok == 0) return MOEQ_OK;
    double *D = NULL, *H = malloc((size_t)(I * I) * sizeof *H);
    if (!H) return moeq_fail(err, MOEQ_ERR_NOMEM, "prune: out of memory");
    if (!(st = moeq_calib_file_hessian(calib, l, e, 1, H, I, NULL, err)) &&
        !(st = expert_f64(m, l, e, MOEQ_PROJ_DOWN, &D, &dr, &dc, err))) {
        double tr = 0;
        for (int64_t r = 0; r < dr; r++) {
            const double *w = D + r * dc;
            for (int64_t i = 0; i < I; i++) {
                double a = 0;
                for (int64_t j = 0; j < I; j++) a += H[i * I + j] * w[j];
                tr += w[i] * a;
            }
        }
        *out = (double)ntok / (double)(T > 0 ? T : 1) * sqrt(fmax(tr, 0) / (double)ntok);
    }
    free(H);
    free(D);
    return st;
}

/* ---- selection --------------------------------------------------------------------------- */

typedef struct cand { double s; int64_t l, e, c; } cand;
static int cmp_cand(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->s != y->s) return x->s < y->s ? -1 : 1;
    if (x->l != y->l) return x->l < y->l ? -1 : 1;
    if (x->e != y->e) return x->e < y->e ? -1 : 1;
    return x->c < y->c ? -1 : x->c > y->c;
}

/* ---- output ------------------------------------------------------------------------------ */

typedef struct ent {         /* one output tensor */
    const moeq_tensor *src;  /* copied or rewritten from; NULL for a ragged per-expert tensor */
    int64_t l, e;            /* routed expert, else l = -1 */
    int proj;                /* GATE/UP/DOWN; -1 fused gate_up, -2 fused down */
} ent;

typedef struct pctx {
    const moeq_model *m;
    moeq_calib_file *calib;
    const moeq_prune_opts *o;
    uint8_t *keep;           /* [L*E*I] channel kept (magnitude/camera/expert) */
    int32_t *width;          /* [L*E] */
    ent *ents;
    /* the one-expert cache: its kept mask and down [H, I] after the OBS update */
    int64_t cl, ce;
    uint8_t *ckeep;
    double *cdown;
} pctx;

static moeq_status expert_state(pctx *p, int64_t l, int64_t e, moeq_error *err)
{
    if (p->cl == l && p->ce == e) return MOEQ_OK;
    const moeq_config *c = moeq_model_config(p->m);
    const int64_t I = c->moe_inter, E = c->n_experts;
    free(p->cdown);
    p->cdown = NULL;
    p->cl = -1;
    int64_t dr, dc;
    moeq_status st = expert_f64(p->m, l, e, MOEQ_PROJ_DOWN, &p->cdown, &dr, &dc, err);
    if (st) return st;
    const int64_t nrem = I - p->width[l * E + e];
    if (p->o->score == MOEQ_PRUNE_HESSIAN && nrem > 0 && nrem < I) {
        int64_t ntok;
        int flag;
        if ((st = moeq_calib_file_expert(p->calib, l, e, &ntok, &flag, err))) return st;
        double *H = malloc((size_t)(I * I) * sizeof *H);
        int64_t *rem = malloc((size_t)nrem * sizeof *rem);
        if (!H || !rem) st = moeq_fail(err, MOEQ_ERR_NOMEM, "prune: out of memory");
        if (!st && ntok > 0) st = moeq_calib_file_hessian(p->calib, l, e, 1, H, I, NULL, err);
        if (!st && ntok == 0) {   /* unobserved: plain removal of the weakest columns */
            memset(H, 0, (size_t)(I * I) * sizeof *H);
            for (int64_t i = 0; i < I; i++) H[i * I + i] = 1;
        }
        if (!st) st = moeq_obs_remove(p->cdown, dr, dc, H, nrem, p->o->compensate && ntok > 0, p->o->damp, rem, err);
        if (!st) {
            memset(p->ckeep, 1, (size_t)I);
            for (int64_t k = 0; k < nrem; k++) p->ckeep[rem[k]] = 0;
        }
        free(H);
        free(rem);
        if (st) return st;
    } else {
        memcpy(p->ckeep, p->keep + (l * E + e) * I, (size_t)I);
        for (int64_t r = 0; r < dr; r++)
            for (int64_t i = 0; i < I; i++)
                if (!p->ckeep[i]) p->cdown[r * I + i] = 0;
    }
    p->cl = l;
    p->ce = e;
    return MOEQ_OK;
}

static void store(void *dst, int64_t i, moeq_dtype dt, double v)
{
    float f = (float)v;
    if (dt == MOEQ_DT_F8_E4M3) {   /* only removed channels' zeros: compensation is refused for FP8 */
        ((unsigned char *)dst)[i] = 0;
    } else if (dt == MOEQ_DT_F32) {
        memcpy((char *)dst + 4 * i, &f, 4);
    } else if (dt == MOEQ_DT_F16) {
        uint16_t h = moeq_f32_to_f16(f);
        memcpy((char *)dst + 2 * i, &h, 2);
    } else {   /* bf16, round to nearest even (finite inputs) */
        uint32_t u;
        memcpy(&u, &f, 4);
        uint16_t h = (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
        memcpy((char *)dst + 2 * i, &h, 2);
    }
}

/* Expert (l, e)'s gate/up rows or down into dst: kept channels only (ragged, width f_e) or all
 * I with removed ones zero (zero-fill). Source values are copied bit for bit unless changed. */
static moeq_status write_expert(pctx *p, int64_t l, int64_t e, moeq_proj pj, int ragged, moeq_dtype dt, void *dst,
                                moeq_error *err)
{
    const moeq_config *c = moeq_model_config(p->m);
    const int64_t I = c->moe_inter, H = c->hidden;
    moeq_status st = expert_state(p, l, e, err);
    if (st) return st;
    const size_t es = moeq_dtype_size(dt);
    if (pj == MOEQ_PROJ_DOWN) {
        int compensated = p->o->score == MOEQ_PRUNE_HESSIAN && p->o->compensate;
        moeq_mat v;
        if ((st = moeq_model_expert(p->m, l, e, pj, &v, err))) return st;
        int64_t k = 0;
        for (int64_t r = 0; r < H; r++)
            for (int64_t i = 0; i < I; i++) {
                if (ragged && !p->ckeep[i]) continue;
                if (!p->ckeep[i]) store(dst, k, dt, 0);
                else if (compensated) store(dst, k, dt, p->cdown[r * I + i]);
                else memcpy((char *)dst + k * es, (const char *)v.data + (size_t)(r * I + i) * es, es);
                k++;
            }
        moeq_mat_release(&v);   /* copied: the mapped pages are done with */
        return MOEQ_OK;
    }
    moeq_mat v;
    if ((st = moeq_model_expert(p->m, l, e, pj, &v, err))) return st;
    int64_t k = 0;
    for (int64_t i = 0; i < I; i++) {
        if (ragged && !p->ckeep[i]) continue;
        if (p->ckeep[i]) memcpy((char *)dst + (size_t)(k * H) * es, (const char *)v.data + (size_t)(i * H) * es, (size_t)H * es);
        else memset((char *)dst + (size_t)(k * H) * es, 0, (size_t)H * es);
        k++;
    }
    moeq_mat_release(&v);
    return MOEQ_OK;
}

/* gpt_oss, zero-fill: layer l's gate_up_proj [E, H, 2I] (gate = even columns, up = odd) or
 * down_proj [E, I, H] in the hub's layout and dtype dt (bf16 for an MXFP4 source: exact), removed
 * channels zero, from the experts' [out, in] views. */
static moeq_status write_gptoss(pctx *p, int64_t l, int down, moeq_dtype dt, void *dst, moeq_error *err)
{
    const moeq_config *c = moeq_model_config(p->m);
    const int64_t I = c->moe_inter, H = c->hidden;
    const int compensated = down && p->o->score == MOEQ_PRUNE_HESSIAN && p->o->compensate;
    float *a = malloc((size_t)(I * H) * sizeof *a), *b = malloc((size_t)(I * H) * sizeof *b);
    moeq_status st = a && b ? MOEQ_OK : moeq_fail(err, MOEQ_ERR_NOMEM, "prune: out of memory");
    for (int64_t e = 0; e < c->n_experts && !st; e++) {
        if ((st = expert_state(p, l, e, err))) break;
        moeq_mat v;
        if ((st = moeq_model_expert(p->m, l, e, down ? MOEQ_PROJ_DOWN : MOEQ_PROJ_GATE, &v, err))) break;
        moeq_mat_to_f32(&v, 0, v.rows, a);
        moeq_mat_release(&v);
        if (!down) {
            if ((st = moeq_model_expert(p->m, l, e, MOEQ_PROJ_UP, &v, err))) break;
            moeq_mat_to_f32(&v, 0, v.rows, b);
            moeq_mat_release(&v);
        }
        const int64_t base = e * I * H * (down ? 1 : 2);
        for (int64_t i = 0; i < I; i++)
            for (int64_t h = 0; h < H; h++) {
                const int keep = p->ckeep[i];
                if (down)   /* a: [H, I]; out [I, H] */
                    store(dst, base + i * H + h, dt, !keep ? 0 : compensated ? p->cdown[h * I + i] : a[h * I + i]);
                else {      /* a, b: [I, H]; out [H, 2I] */
                    store(dst, base + h * 2 * I + 2 * i, dt, keep ? a[i * H + h] : 0);
                    store(dst, base + h * 2 * I + 2 * i + 1, dt, keep ? b[i * H + h] : 0);
                }
            }
    }
    free(a);
    free(b);
    return st;
}

static moeq_status fill(void *user, size_t i, void *dst, moeq_error *err)
{
    pctx *p = user;
    const ent *t = &p->ents[i];
    const moeq_config *c = moeq_model_config(p->m);
    const int64_t I = c->moe_inter, H = c->hidden;
    int ragged = p->o->layout == MOEQ_PRUNE_RAGGED;
    if (t->l < 0) {
        memcpy(dst, t->src->data, (size_t)t->src->nbytes);
        moeq_tensor_release(t->src);
        return MOEQ_OK;
    }
    if (t->proj >= 0) return write_expert(p, t->l, t->e, (moeq_proj)t->proj, ragged, t->src->dtype, dst, err);
    if (c->expert_layout == MOEQ_EXPERTS_GPTOSS)
        return write_gptoss(p, t->l, t->proj == -2, t->src->dtype == MOEQ_DT_U8 ? MOEQ_DT_BF16 : t->src->dtype, dst, err);
    const size_t es = moeq_dtype_size(t->src->dtype);
    moeq_status st = MOEQ_OK;
    for (int64_t e = 0; e < c->n_experts && !st; e++) {
        char *base = (char *)dst + (size_t)(e * 2 * I * H) * es / (t->proj == -2 ? 2 : 1);
        if (t->proj == -2) st = write_expert(p, t->l, e, MOEQ_PROJ_DOWN, 0, t->src->dtype, base, err);
        else if (!(st = write_expert(p, t->l, e, MOEQ_PROJ_GATE, 0, t->src->dtype, base, err)))
            st = write_expert(p, t->l, e, MOEQ_PROJ_UP, 0, t->src->dtype, base + (size_t)(I * H) * es, err);
    }
    return st;
}


static moeq_status copy_file(const char *from, const char *to, moeq_error *err)
{
    FILE *in = fopen(from, "rb");
    if (!in) return MOEQ_OK;   /* optional files */
    FILE *out = fopen(to, "wbx");
    moeq_status st = MOEQ_OK;
    char buf[65536];
    size_t n;
    if (!out) st = moeq_fail(err, MOEQ_ERR_IO, "%s: cannot create: %s", to, strerror(errno));
    while (!st && (n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) st = moeq_fail(err, MOEQ_ERR_IO, "%s: write failed: %s", to, strerror(errno));
    fclose(in);
    if (out && fclose(out) != 0 && !st) st = moeq_fail(err, MOEQ_ERR_IO, "%s: write failed: %s", to, strerror(errno));
    return st;
}

static moeq_status write_config(const moeq_model *m, const char *src_dir, const char *tmp, const int32_t *width,
                                moeq_error *err)
{
    const moeq_config *c = moeq_model_config(m);
    char from[4600], to[4600];
    snprintf(from, sizeof from, "%s/config.json", src_dir);
    snprintf(to, sizeof to, "%s/config.json", tmp);
    json_error_t je;
    json_t *root = json_load_file(from, 0, &je);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: cannot read: %s", from, je.text);
    }
    json_t *w = json_array();
    for (int64_t l = 0; l < c->layers; l++) {
        json_t *a = json_array();
        if (c->layer_is_moe[l])
            for (int64_t e = 0; e < c->n_experts; e++) json_array_append_new(a, json_integer(width[l * c->n_experts + e]));
        json_array_append_new(w, a);
    }
    json_object_set_new(root, "moeq_expert_widths", w);
    if (c->mxfp4) json_object_del(root, "quantization_config");   /* its experts are written as bf16 */
    int rc = json_dump_file(root, to, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_COMPACT * 0);
    json_decref(root);
    return rc ? moeq_fail(err, MOEQ_ERR_IO, "%s: write failed", to) : MOEQ_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

moeq_status moeq_prune(const moeq_model *m, moeq_calib_file *calib, const moeq_prune_opts *o, const char *out_dir,
                       moeq_prune_result *res, moeq_error *err)
{
    memset(res, 0, sizeof *res);
    double t0 = now_s();
    const moeq_config *c = moeq_model_config(m);
    const moeq_checkpoint *ck = moeq_model_checkpoint(m);
    const int64_t L = c->layers, E = c->n_experts, I = c->moe_inter, Hd = c->hidden;
    if (!(o->ratio > 0 && o->ratio < 1))
        return moeq_fail(err, MOEQ_ERR_RANGE, "prune: --ratio %g is outside (0, 1)", o->ratio);
    if (moeq_model_expert_widths(m))
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: already pruned (config.json has moeq_expert_widths); prune "
                         "the original model", moeq_model_path(m));
    if (!ck)
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: prune reads a Hugging Face directory, not a .moeq file",
                         moeq_model_path(m));
    if (E <= 0) return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: no routed experts", moeq_model_path(m));
    if (c->expert_layout == MOEQ_EXPERTS_GPTOSS && o->layout == MOEQ_PRUNE_RAGGED)
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: --layout ragged: %s stores its experts fused only; use "
                         "--layout zero-fill", moeq_model_path(m), c->model_type);
    if (c->fp8 && (o->layout == MOEQ_PRUNE_RAGGED || (o->score == MOEQ_PRUNE_HESSIAN && o->compensate)))
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: an FP8 source keeps its block scales, so prune only zeroes "
                         "channels of it: use --layout zero-fill%s", moeq_model_path(m),
                         o->score == MOEQ_PRUNE_HESSIAN ? " and --no-compensate" : "");
    if (o->score != MOEQ_PRUNE_MAGNITUDE && !calib)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "prune: this score needs --calib");
    if (o->score == MOEQ_PRUNE_HESSIAN && moeq_calib_file_diag(calib))
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "prune: --score hessian needs full down Hessians; the "
                         "calibration file was written with --diag");
    pctx p = { .m = m, .calib = calib, .o = o, .cl = -1, .ce = -1 };
    p.keep = malloc((size_t)(L * E * I));
    p.width = malloc((size_t)(L * E) * sizeof *p.width);
    p.ckeep = malloc((size_t)I);
    res->widths = malloc((size_t)(L * E) * sizeof *res->widths);
    int64_t nmoe = 0;
    for (int64_t l = 0; l < L; l++) nmoe += c->layer_is_moe[l];
    const int by_expert = o->score == MOEQ_PRUNE_EXPERT;
    const int64_t per_layer = by_expert ? E : E * I;
    cand *cd = malloc((size_t)(nmoe * per_layer + 1) * sizeof *cd);
    double *sc = malloc((size_t)I * sizeof *sc);
    moeq_status st = MOEQ_OK;
    if (!p.keep || !p.width || !p.ckeep || !res->widths || !cd || !sc) {
        st = moeq_fail(err, MOEQ_ERR_NOMEM, "prune: out of memory");
        goto done;
    }
    memset(p.keep, 1, (size_t)(L * E * I));
    for (int64_t i = 0; i < L * E; i++) p.width[i] = (int32_t)(c->layer_is_moe[i / E] ? I : 0);
    /* scores */
    int64_t nc = 0;
    for (int64_t l = 0; l < L && !st; l++) {
        if (!c->layer_is_moe[l]) continue;
        int64_t T = 0;
        if (by_expert)
            for (int64_t e = 0; e < E && !st; e++) {
                int64_t n;
                int fl;
                st = moeq_calib_file_expert(calib, l, e, &n, &fl, err);
                T += n;
            }
        if (by_expert && c->top_k > 0) T /= c->top_k;
        for (int64_t e = 0; e < E && !st; e++) {
            if (by_expert) {
                double s;
                if (!(st = expert_score(m, calib, l, e, T, &s, err))) cd[nc++] = (cand){ s, l, e, -1 };
                continue;
            }
            if ((st = moeq_prune_channel_scores(m, calib, o, l, e, sc, err))) break;
            for (int64_t i = 0; i < I; i++) cd[nc++] = (cand){ sc[i], l, e, i };
        }
    }
    if (st) goto done;
    /* selection: lowest scores first, per layer or over all MoE layers */
    int64_t *live = calloc((size_t)(L > 0 && L <= MOEQ_MAX_LAYERS ? L : 1), sizeof *live);
    if (!live) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "prune: out of memory"); goto done; }
    for (int64_t l = 0; l < L; l++) live[l] = c->layer_is_moe[l] ? E : 0;
    const int64_t groups = o->scope_global ? 1 : nmoe;
    const int64_t gsize = o->scope_global ? nc : per_layer;
    for (int64_t g = 0; g < groups; g++) {
        cand *a = cd + g * gsize;
        qsort(a, (size_t)gsize, sizeof *a, cmp_cand);
        int64_t want = (int64_t)floor(o->ratio * (double)gsize + 1e-9), got = 0;
        for (int64_t k = 0; k < gsize && got < want; k++) {
            int64_t l = a[k].l, e = a[k].e;
            int32_t *w = &p.width[l * E + e];
            if (by_expert) {
                if (live[l] <= c->top_k) continue;   /* top-k must stay fillable */
                memset(p.keep + (l * E + e) * I, 0, (size_t)I);
                *w = 0;
                live[l]--;
                got++;
                continue;
            }
            if (*w <= o->min_width) continue;
            if (*w == 1 && live[l] <= c->top_k) continue;   /* the last channel would remove the expert */
            p.keep[(l * E + e) * I + a[k].c] = 0;
            if (--*w == 0) live[l]--;
            got++;
        }
    }
    free(live);
    /* widths to a multiple of o->multiple (the quantizer's code block): give back the
     * best-scored removed channels of an expert until its width is one */
    if (!by_expert && o->multiple > 1)
        for (int64_t g = 0; g < groups; g++) {
            cand *a = cd + g * gsize;
            for (int64_t k = gsize - 1; k >= 0; k--) {
                int64_t l = a[k].l, e = a[k].e;
                int32_t *w = &p.width[l * E + e];
                uint8_t *kp = &p.keep[(l * E + e) * I + a[k].c];
                if (*kp || *w == 0 || *w % o->multiple == 0) continue;
                *kp = 1;
                ++*w;
            }
        }
    res->experts_total = nmoe * E;
    res->channels_total = nmoe * E * I;
    for (int64_t l = 0; l < L; l++) {
        if (!c->layer_is_moe[l]) continue;
        for (int64_t e = 0; e < E; e++) {
            res->removed_channels += I - p.width[l * E + e];
            res->removed_experts += p.width[l * E + e] == 0;
        }
    }
    memcpy(res->widths, p.width, (size_t)(L * E) * sizeof *p.width);
    moeq_param_counts pc;
    moeq_model_param_counts(m, &pc);
    res->params_before = pc.total;
    /* the router rows of removed experts go too (they are masked) */
    res->params_after = pc.total - 3 * Hd * res->removed_channels - Hd * res->removed_experts;
    res->bytes_before = moeq_ckpt_bytes(ck);
    {
        uint64_t es = 2;
        moeq_mat v;
        for (int64_t l = 0; l < L && !st; l++)
            if (c->layer_is_moe[l] && !(st = moeq_model_expert(m, l, 0, MOEQ_PROJ_DOWN, &v, err))) {
                es = moeq_dtype_size(v.dtype);
                break;
            }
        const moeq_layer_view *lv0 = NULL;
        for (int64_t l = 0; l < L && !lv0; l++)
            if (c->layer_is_moe[l]) lv0 = moeq_model_layer(m, l);
        uint64_t rs = lv0 ? moeq_dtype_size(lv0->router.dtype) : 2;
        res->bytes_after = res->bytes_before - es * (uint64_t)(3 * Hd * res->removed_channels) -
                           rs * (uint64_t)(Hd * res->removed_experts);
    }
    if (st || !out_dir) goto done;

    /* ---- the output directory ---- */
    struct stat sb;
    if (stat(out_dir, &sb) == 0 && (!S_ISDIR(sb.st_mode) || !moeq_dir_is_empty(out_dir))) {
        st = moeq_fail(err, MOEQ_ERR_MISUSE, "%s: exists and is not an empty directory (prune never overwrites)", out_dir);
        goto done;
    }
    size_t plen = strlen(out_dir);
    while (plen > 1 && out_dir[plen - 1] == '/') plen--;
    if (plen > 4000) { st = moeq_fail(err, MOEQ_ERR_MISUSE, "%s: path too long", out_dir); goto done; }
    char tmp[4200], clean[4100];
    memcpy(clean, out_dir, plen);
    clean[plen] = '\0';
    const char *slash = strrchr(clean, '/');
    if (slash) snprintf(tmp, sizeof tmp, "%.*s/.%s.tmp.XXXXXX", (int)(slash - clean), clean, slash + 1);
    else snprintf(tmp, sizeof tmp, ".%s.tmp.XXXXXX", clean);
    if (!mkdtemp(tmp)) {
        st = moeq_fail(err, MOEQ_ERR_IO, "%s: cannot create a temporary directory next to it: %s", out_dir, strerror(errno));
        goto done;
    }
    chmod(tmp, 0755);
    const char *src_dir = moeq_ckpt_dir(ck);
    if ((st = write_config(m, src_dir, tmp, p.width, err))) goto fail;
    static const char *const files[] = { "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                                         "special_tokens_map.json" };
    for (size_t i = 0; i < sizeof files / sizeof files[0] && !st; i++) {
        char from[4600], to[4600];
        snprintf(from, sizeof from, "%s/%s", src_dir, files[i]);
        snprintf(to, sizeof to, "%s/%s", tmp, files[i]);
        st = copy_file(from, to, err);
    }
    if (st) goto fail;
    {
        /* which checkpoint tensors are routed-expert weights */
        const int fused = moeq_model_fused_experts(m);
        size_t n = moeq_ckpt_count(ck);
        size_t cap = n + (size_t)(L * E * 3);
        moeq_st_out *outs = calloc(cap, sizeof *outs);
        p.ents = calloc(cap, sizeof *p.ents);
        char (*names)[512] = calloc((size_t)(L * E * 3) + 1, sizeof *names);
        const char **xn = calloc((size_t)(L * E * 3) + 1, sizeof *xn);
        size_t nx = 0, no = 0;
        if (!outs || !p.ents || !names || !xn) st = moeq_fail(err, MOEQ_ERR_NOMEM, "prune: out of memory");
        for (int64_t l = 0; l < L && !st; l++) {
            if (!c->layer_is_moe[l]) continue;
            for (int64_t e = 0; e < E && !st; e++)
                for (int pj = 0; pj < 3 && !st; pj++) {
                    moeq_mat v;
                    if ((st = moeq_model_expert(m, l, e, (moeq_proj)pj, &v, err))) break;
                    if (!fused || (e == 0 && pj != MOEQ_PROJ_UP)) xn[nx++] = v.tensor;
                }
        }
        qsort(xn, nx, sizeof *xn, cmp_str);
        for (size_t i = 0; i < n && !st; i++) {
            const moeq_tensor *t = moeq_ckpt_tensor(ck, i);
            if (bsearch(&t->name, xn, nx, sizeof *xn, cmp_str)) continue;   /* written below */
            if (moeq_model_is_mx_scale(m, t)) continue;   /* MXFP4 experts are written as bf16 */
            outs[no] = (moeq_st_out){ .name = t->name, .dtype = t->dtype, .ndim = t->ndim, .data = t->data };
            memcpy(outs[no].shape, t->shape, sizeof outs[no].shape);
            p.ents[no++] = (ent){ .src = t, .l = -1, .e = -1, .proj = 0 };
        }
        const moeq_family *f = c->family;
        size_t ni = 0;
        for (int64_t l = 0; l < L && !st; l++) {
            if (!c->layer_is_moe[l]) continue;
            if (fused && o->layout == MOEQ_PRUNE_ZERO_FILL) {
                for (int k = 0; k < 2; k++) {
                    moeq_mat v;
                    if ((st = moeq_model_expert(m, l, 0, k ? MOEQ_PROJ_DOWN : MOEQ_PROJ_GATE, &v, err))) break;
                    const moeq_tensor *t = moeq_ckpt_find(ck, v.tensor);
                    outs[no] = (moeq_st_out){ .name = t->name, .dtype = t->dtype, .ndim = t->ndim };
                    memcpy(outs[no].shape, t->shape, sizeof outs[no].shape);
                    int64_t bshape[3];
                    if (moeq_model_mx_blocks(m, t, names[ni], sizeof names[ni], bshape)) {
                        /* MXFP4 blocks: the bf16 tensor they encode (write_gptoss) */
                        outs[no] = (moeq_st_out){ .name = names[ni++], .dtype = MOEQ_DT_BF16, .ndim = 3 };
                        memcpy(outs[no].shape, bshape, sizeof bshape);
                    }
                    p.ents[no++] = (ent){ .src = t, .l = l, .e = -1, .proj = k ? -2 : -1 };
                }
                continue;
            }
            for (int64_t e = 0; e < E && !st; e++) {
                int64_t w = o->layout == MOEQ_PRUNE_RAGGED ? p.width[l * E + e] : I;
                if (w == 0) continue;   /* a removed expert has no tensors in the ragged layout */
                for (int pj = 0; pj < 3 && !st; pj++) {
                    moeq_mat v;
                    if ((st = moeq_model_expert(m, l, e, (moeq_proj)pj, &v, err))) break;
                    const moeq_tensor *t = moeq_ckpt_find(ck, v.tensor);
                    const char *name = t->name;
                    if (fused) {   /* ragged widths cannot be fused: per-expert names of the family */
                        moeq_family_name(names[ni], sizeof names[ni], f->expert[pj][0], l, e);
                        name = names[ni++];
                    }
                    outs[no] = (moeq_st_out){ .name = name, .dtype = v.dtype, .ndim = 2 };
                    outs[no].shape[0] = pj == MOEQ_PROJ_DOWN ? Hd : w;
                    outs[no].shape[1] = pj == MOEQ_PROJ_DOWN ? w : Hd;
                    p.ents[no++] = (ent){ .src = t, .l = l, .e = e, .proj = pj };
                }
            }
        }
        for (size_t i = 0; i < no; i++) {
            int64_t ne = 1;
            for (int d = 0; d < outs[i].ndim; d++) ne *= outs[i].shape[d];
            res->bytes_written += (uint64_t)ne * moeq_dtype_size(outs[i].dtype);
        }
        if (!st) st = moeq_st_write_dir(tmp, outs, no, 5000000000ull, fill, &p, NULL, err);
        free(outs);
        free(names);
        free(xn);
    }
    if (!st && rename(tmp, clean) != 0)
        st = moeq_fail(err, MOEQ_ERR_IO, "%s: cannot rename %s to it: %s", out_dir, tmp, strerror(errno));
fail:
    if (st) moeq_remove_flat_dir(tmp);
done:
    free(p.keep);
    free(p.width);
    free(p.ckeep);
    free(p.cdown);
    free(p.ents);
    free(cd);
    free(sc);
    res->seconds = now_s() - t0;
    if (st) {
        free(res->widths);
        res->widths = NULL;
    }
    return st;
}

void moeq_prune_result_free(moeq_prune_result *r)
{
    if (!r) return;
    free(r->widths);
    r->widths = NULL;
}
