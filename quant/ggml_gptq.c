/* GPTQ on ggml's block grids (issue 12): quant/gptq.c's column sweep on a block's grid (scales
 * and mins from the weighted search with diag(H) as importances; K-quant super-block scales are
 * quantized integers times one f16 per 256 columns, so a grid is chosen a whole block at a
 * time). In column order each block's grid is searched when the sweep reaches it, on the values
 * as the earlier columns' errors left them (GPTQ's dynamic groups: every column of the block is
 * up to date then, the lazy updates having reached it), weighted by 1 / U_ii² (what the sweep's
 * loss charges column i's rounding error); with act order the grids are searched once on the
 * original rows with diag(H) (static groups). Each value goes to the nearest point of its
 * block's grid, the error is fed forward through the Cholesky factor of (H + λI)⁻¹ with lazy
 * block updates (one dgemm per 128 columns). Rows go in fixed blocks of 64 over the threads. */
#include "moeq_ggml.h"
#include "moeq_gptq.h"
#include "moeq_core.h"
#include "kernels/ggml/ggml_impl.h"

#include <stdlib.h>
#include <string.h>

#define ROW_BLOCK 64
#define COL_BLOCK 128

/* value of level L on the grid (A, B) of one column, as dequantization computes it */
static inline float grid_value(const gg_codec *c, float A, float B, int L)
{
    const float t = c->table ? (float)c->table[L] : (float)(L - c->offset);
    return A * t - B;
}

/* nearest level to x (ties: the lower level) */
static int nearest_level(const gg_codec *c, float A, float B, double x)
{
    int best = 0;
    double bd = -1;
    if (c->table || A == 0) {
        for (int L = 0; L < c->levels; L++) {
            double d = fabs(x - (double)grid_value(c, A, B, L));
            if (bd < 0 || d < bd) { bd = d; best = L; }
        }
        return best;
    }
    double t = (x + (double)B) / (double)A + c->offset;
    int L0 = !(t > 0) ? 0 : t > c->levels - 1 ? c->levels - 1 : (int)floor(t + 0.5);
    for (int L = L0 - 1; L <= L0 + 1; L++) {
        if (L < 0 || L >= c->levels) continue;
        double d = fabs(x - (double)grid_value(c, A, B, L));
        if (bd < 0 || d < bd) { bd = d; best = L; }
    }
    return best;
}

/* importances from d[0], d[stride], ... (diag(H): stride n + 1), scaled to mean 1 (the searches
 * are scale-free; float range) */
static int importances(const double *d, int64_t stride, int64_t n, float *imp)
{
    double mean = 0;
    for (int64_t j = 0; j < n; j++) mean += d[j * stride] > 0 ? d[j * stride] : 0;
    mean /= (double)n;
    if (!(mean > 0) || !(mean < 1e300)) return 0;
    for (int64_t j = 0; j < n; j++) imp[j] = d[j * stride] > 0 ? (float)(d[j * stride] / mean) : 0;
    return 1;
}

/* block k of a row (after the row's meta, if its type has one) and its grid */
static inline uint8_t *block_at(const gg_codec *c, uint8_t *row, int64_t k)
{
    return row + c->row_meta + (size_t)k * (size_t)c->bytes;
}
static void block_grid(const gg_codec *c, uint8_t *row, int64_t k, float *A, float *B)
{
    if (c->row_meta) c->grid_meta(row, block_at(c, row, k), A, B);
    else c->grid(block_at(c, row, k), A, B);
}

/* One block's grid searched again on the sweep's current values w[0..block) (errors of the
 * columns before it fed in), as GPTQ's dynamic groups do: the block's bytes and its A, B. A type
 * with row meta keeps the row's (chosen from the whole row before the sweep) and searches the
 * block under it. */
static void regrid(const gg_codec *c, const double *w, const float *imp, float *A, float *B, uint8_t *row, int64_t k)
{
    float v[256];
    for (int j = 0; j < c->block; j++) v[j] = (float)w[j];
    if (c->row_meta) gg_quant_block_meta(c, row, k, v, imp);
    else moeq_ggml_quant_row(c->type, v, imp, block_at(c, row, k), c->block);
    block_grid(c, row, k, A, B);
}

static void search_rows(const gg_codec *c, const float *w, int64_t rows, int64_t cols, const float *imp, uint8_t *dst,
                        size_t rb)
{
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) moeq_ggml_quant_row(c->type, w + r * cols, imp, dst + (size_t)r * rb, cols);
}

moeq_status moeq_ggml_quantize_rows(moeq_ggml_type t, const float *w, int64_t rows, int64_t cols, const double *d,
                                    void *dst, moeq_error *err)
{
    const gg_codec *c = gg_codec_get(t);
    if (!c || rows <= 0 || cols <= 0 || cols % c->block)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "a %lld x %lld matrix does not fit ggml type %d", (long long)rows,
                         (long long)cols, (int)t);
    float *imp = d ? malloc((size_t)cols * sizeof *imp) : NULL;
    if (d && !imp) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    int live = d && importances(d, 1, cols, imp);
    search_rows(c, w, rows, cols, live ? imp : NULL, dst, moeq_ggml_row_bytes(t, cols));
    free(imp);
    return MOEQ_OK;
}

/* moeq_ggml_gptq's checks and importances: imp[cols] from diag(H), *live 0 when H is NULL or dead */
static moeq_status prepare(moeq_ggml_type t, int64_t rows, int64_t cols, const double *H, const gg_codec **c,
                           float **imp, int *live, moeq_error *err)
{
    *c = gg_codec_get(t);
    *imp = NULL;
    if (!*c) return moeq_fail(err, MOEQ_ERR_MISUSE, "GPTQ: ggml type %d is not supported", (int)t);
    if (rows <= 0 || cols <= 0 || cols % (*c)->block)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "GPTQ: a %lld x %lld matrix does not fit %s (rows of a multiple of %d)",
                         (long long)rows, (long long)cols, (*c)->name, (*c)->block);
    if (!(*imp = malloc((size_t)cols * sizeof **imp))) return moeq_fail(err, MOEQ_ERR_NOMEM, "GPTQ: out of memory");
    *live = H && importances(H, cols + 1, cols, *imp);
    return MOEQ_OK;
}

static moeq_status sweep(const gg_codec *c, const float *w, int64_t rows, int64_t cols, float *imp, int live,
                         const moeq_gptq_hinv *h, const moeq_gptq_opts *o, uint8_t *dst, float *wq,
                         moeq_gptq_info *info, moeq_error *err);

/* the factor of H for moeq_ggml_gptq (info: its retries, damping, dead columns) */
static moeq_status factor(const double *H, int64_t cols, const moeq_gptq_opts *o, moeq_gptq_hinv **h,
                          moeq_gptq_info *info, moeq_error *err)
{
    *h = NULL;
    float *imp = malloc((size_t)cols * sizeof *imp);
    if (!imp) return moeq_fail(err, MOEQ_ERR_NOMEM, "GPTQ: out of memory");
    int live = H && importances(H, cols + 1, cols, imp);
    free(imp);
    moeq_error e2;
    if (live && moeq_gptq_hinv_create(H, cols, o, h, info, &e2) == MOEQ_ERR_NOMEM) {
        *err = e2;
        return MOEQ_ERR_NOMEM;
    }
    return MOEQ_OK;
}

moeq_status moeq_ggml_gptq_factor(const double *H, int64_t cols, const struct moeq_gptq_opts *o,
                                  struct moeq_gptq_hinv **h, moeq_error *err)
{
    moeq_gptq_info info;
    return factor(H, cols, o, h, &info, err);
}

moeq_status moeq_ggml_gptq_with(moeq_ggml_type t, const float *w, int64_t rows, int64_t cols, const double *H,
                                const struct moeq_gptq_hinv *h, const struct moeq_gptq_opts *o, void *dst, float *wq,
                                struct moeq_gptq_info *info_, moeq_error *err)
{
    moeq_gptq_info tmp_info;
    moeq_gptq_info *info = info_ ? info_ : &tmp_info;
    memset(info, 0, sizeof *info);
    const gg_codec *c;
    float *imp;
    int live;
    moeq_status st = prepare(t, rows, cols, H, &c, &imp, &live, err);
    if (!st) st = sweep(c, w, rows, cols, imp, live, live && c->levels ? h : NULL, o, dst, wq, info, err);
    free(imp);
    return st;
}

moeq_status moeq_ggml_gptq(moeq_ggml_type t, const float *w, int64_t rows, int64_t cols, const double *H,
                           const struct moeq_gptq_opts *o, void *dst, float *wq, struct moeq_gptq_info *info_,
                           moeq_error *err)
{
    moeq_gptq_info fi = { 0 };
    moeq_gptq_hinv *h = NULL;
    const gg_codec *c = gg_codec_get(t);
    /* float types get no feedback; a bad shape is left for _with's own error */
    int fits = c && c->levels && rows > 0 && cols > 0 && cols % c->block == 0;
    moeq_status st = fits ? factor(H, cols, o, &h, &fi, err) : MOEQ_OK;
    if (!st) st = moeq_ggml_gptq_with(t, w, rows, cols, H, h, o, dst, wq, info_, err);
    if (!st && info_) {
        info_->retries = fi.retries;
        info_->damp = fi.damp;
        info_->dead_cols = fi.dead_cols;
    }
    moeq_gptq_hinv_free(h);
    return st;
}

/* The sweep of moeq_ggml_gptq with the factor h of H (NULL: the weighted search, no feedback) */
static moeq_status sweep(const gg_codec *c, const float *w, int64_t rows, int64_t cols, float *imp, int live,
                         const moeq_gptq_hinv *h, const moeq_gptq_opts *o, uint8_t *dst, float *wq,
                         moeq_gptq_info *info, moeq_error *err)
{
    const moeq_ggml_type t = c->type;
    const size_t rb = moeq_ggml_row_bytes(t, cols);
    if (!h) {
        /* no feedback: float types, a dead expert (fallback weight 1), a failed factorization */
        if (c->levels) info->rtn_fallback = 1;
        if (!live) for (int64_t j = 0; j < cols; j++) imp[j] = 1;
        search_rows(c, w, rows, cols, imp, dst, rb);
        if (wq)
            for (int64_t r = 0; r < rows; r++) moeq_ggml_dequant_row(t, dst + (size_t)r * rb, wq + r * cols, cols);
        return MOEQ_OK;
    }
    int64_t n;
    const int64_t *perm;
    const double *U = moeq_gptq_hinv_factor(h, &n, &perm);
    /* 1. act order: the grids by the weighted search on the original rows (static groups); in
     * column order each block's grid is searched when the sweep reaches it (regrid), no first
     * search (it was the export's largest cost, thrown away), except for a type with row meta,
     * whose row scale the search of the whole original row sets before the sweep */
    if (perm || c->row_meta) search_rows(c, w, rows, cols, imp, dst, rb);
    const int64_t nblk = (rows + ROW_BLOCK - 1) / ROW_BLOCK, nb = cols / c->block;
    /* the regrid's importances: the sweep's loss weighs column i's rounding error by 1 / U_ii²
     * (its error is fed forward as (w - q) / U_ii), not by H_ii; scaled to mean 1 */
    float *uimp = malloc((size_t)cols * sizeof *uimp);
    if (!uimp) {
        return moeq_fail(err, MOEQ_ERR_NOMEM, "GPTQ: out of memory");
    }
    double umean = 0;
    for (int64_t i = 0; i < cols; i++) umean += 1.0 / (U[i * cols + i] * U[i * cols + i]);
    umean /= (double)cols;
    for (int64_t i = 0; i < cols; i++) uimp[i] = (float)(1.0 / (U[i * cols + i] * U[i * cols + i]) / umean);
    int nt = o && o->threads > 0 ? o->threads : moeq_threads(), fail = 0;
#pragma omp parallel num_threads(nt)
    {
        double *W = malloc((size_t)(ROW_BLOCK * cols) * sizeof *W), *Err = malloc((size_t)ROW_BLOCK * COL_BLOCK * sizeof *Err);
        float *A = malloc((size_t)(ROW_BLOCK * cols) * sizeof *A), *B = malloc((size_t)(ROW_BLOCK * cols) * sizeof *B);
        uint8_t *L = malloc((size_t)(ROW_BLOCK * cols));
        int ok = W && Err && A && B && L;
        if (!ok) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < nblk; b++) {
            if (!ok) continue;
            const int64_t r0 = b * ROW_BLOCK, R = rows - r0 < ROW_BLOCK ? rows - r0 : ROW_BLOCK;
            for (int64_t r = 0; r < R; r++) {
                uint8_t *row = dst + (size_t)(r0 + r) * rb;
                for (int64_t k = 0; perm && k < nb; k++)
                    block_grid(c, row, k, A + r * cols + k * c->block, B + r * cols + k * c->block);
                for (int64_t i = 0; i < cols; i++) W[r * cols + i] = w[(r0 + r) * cols + (perm ? perm[i] : i)];
            }
            /* 2. the sweep (quant/gptq.c gptq_rows with fixed grids) */
            for (int64_t i1 = 0; i1 < cols; i1 += COL_BLOCK) {
                const int64_t i2 = i1 + COL_BLOCK < cols ? i1 + COL_BLOCK : cols;
                for (int64_t i = i1; i < i2; i++) {
                    const int64_t col = perm ? perm[i] : i;
                    if (!perm && i % c->block == 0)
                        for (int64_t r = 0; r < R; r++) regrid(c, W + r * cols + i, uimp + i, A + r * cols + i, B + r * cols + i,
                                                              dst + (size_t)(r0 + r) * rb, i / c->block);
                    const double d = U[i * cols + i];
                    for (int64_t r = 0; r < R; r++) {
                        double *wr = W + r * cols;
                        const float a = A[r * cols + col], bb = B[r * cols + col];
                        const int lv = nearest_level(c, a, bb, wr[i]);
                        L[r * cols + col] = (uint8_t)lv;
                        const double e = (wr[i] - (double)grid_value(c, a, bb, lv)) / d;
                        Err[r * COL_BLOCK + (i - i1)] = e;
                        const double *u = U + i * cols;
                        for (int64_t j = i + 1; j < i2; j++) wr[j] -= e * u[j];
                    }
                }
                if (i2 < cols)
                    moeq_dgemm_nn(R, cols - i2, i2 - i1, -1.0, Err, COL_BLOCK, U + i1 * cols + i2, cols, 1.0, W + i2, cols);
            }
            /* 3. the codes into the blocks, whose scale fields stay as the search set them */
            for (int64_t r = 0; r < R; r++) {
                uint8_t *row = dst + (size_t)(r0 + r) * rb;
                for (int64_t k = 0; k < nb; k++) c->pack(block_at(c, row, k), L + r * cols + k * c->block);
                if (wq) moeq_ggml_dequant_row(t, row, wq + (r0 + r) * cols, cols);
            }
        }
        free(W); free(Err); free(A); free(B); free(L);
    }
    free(uimp);
    if (fail) return moeq_fail(err, MOEQ_ERR_NOMEM, "GPTQ: out of memory for %lld x %lld", (long long)rows, (long long)cols);
    return MOEQ_OK;
}
