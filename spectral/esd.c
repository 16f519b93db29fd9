/* Empirical spectral densities λ = σ(W)² of one float32 matrix in the three modes.
 * LAPACK sees the row-major [rows, cols] buffer as the column-major [cols, rows] matrix Wᵀ,
 * which has the same singular values, so nothing is transposed. */
#include "moeq_spectral.h"

#include <lapacke.h>
#include "moeq_core.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct moeq_spec_ws {
    float *f32;  size_t f32_cap;     /* widened matrix */
    float *f32b; size_t f32b_cap;    /* shuffled copy (--randomize) / FARMS tile */
    double *f64; size_t f64_cap;     /* float64 copy of W (full, gram) */
    double *g;   size_t g_cap;       /* gram matrix */
    double *e;   size_t e_cap;       /* spare eigenvalue buffer (randomize) */
    int64_t *idx; size_t idx_cap;    /* FARMS tile indices */
};

moeq_spec_ws *moeq_spec_ws_new(void) { return calloc(1, sizeof(moeq_spec_ws)); }

void moeq_spec_ws_free(moeq_spec_ws *ws)
{
    if (!ws) return;
    free(ws->f32); free(ws->f32b); free(ws->f64); free(ws->g); free(ws->e); free(ws->idx);
    free(ws);
}

/* Grows *p to hold n elements of size es. Returns 0 on success. */
static int grow(void **p, size_t *cap, size_t n, size_t es)
{
    if (n <= *cap) return 0;
    void *q = realloc(*p, n * es);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}
#define GROW(ws, field, n) grow((void **)&(ws)->field, &(ws)->field##_cap, (size_t)(n), sizeof *(ws)->field)

/* internal accessors for metrics.c */
float *moeq_spec_ws_f32(moeq_spec_ws *ws, size_t n);
float *moeq_spec_ws_f32b(moeq_spec_ws *ws, size_t n);
double *moeq_spec_ws_eigs(moeq_spec_ws *ws, size_t n);
float *moeq_spec_ws_f32(moeq_spec_ws *ws, size_t n) { return GROW(ws, f32, n) ? NULL : ws->f32; }
float *moeq_spec_ws_f32b(moeq_spec_ws *ws, size_t n) { return GROW(ws, f32b, n) ? NULL : ws->f32b; }
double *moeq_spec_ws_eigs(moeq_spec_ws *ws, size_t n) { return GROW(ws, e, n) ? NULL : ws->e; }

void moeq_spec_opts_default(moeq_spec_opts *o)
{
    memset(o, 0, sizeof *o);
    o->mode = MOEQ_SPEC_FARMS;
    o->estimator = MOEQ_SPEC_HILL;
    o->ks_fix = MOEQ_KS_FIX_NONE;
    o->tile = 128;
    o->max_blocks = 256;
    o->seed = 0;
    o->evals_thresh = 1e-5;   /* WeightWatcher's EVALS_THRESH */
    o->min_evals = 10;        /* WeightWatcher's min_evals */
}

const char *moeq_spec_mode_name(moeq_spec_mode m)
{
    return m == MOEQ_SPEC_FULL ? "full" : m == MOEQ_SPEC_GRAM ? "gram" : m == MOEQ_SPEC_FARMS ? "farms" : "unknown";
}
const char *moeq_spec_estimator_name(moeq_spec_estimator e) { return e == MOEQ_SPEC_KS ? "ks" : "hill"; }
const char *moeq_spec_ks_fix_name(moeq_spec_ks_fix f)
{
    return f == MOEQ_KS_FIX_XMIN_PEAK ? "xmin_peak" : f == MOEQ_KS_FIX_CLIP_XMAX ? "clip_xmax" : "none";
}

int64_t moeq_spec_max_eigs(int64_t rows, int64_t cols, const moeq_spec_opts *o)
{
    int64_t mn = rows < cols ? rows : cols;
    if (o->mode == MOEQ_SPEC_FARMS && o->tile > 0) {
        int64_t tiles = (rows / o->tile) * (cols / o->tile);
        if (tiles > o->max_blocks) tiles = o->max_blocks;
        if (tiles > 0) return tiles * o->tile;
    }
    return mn;
}

/* splitmix64: a tiny, well-mixed generator whose sequence depends only on its seed. */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
uint64_t moeq_spec_rand(uint64_t *s);
uint64_t moeq_spec_rand(uint64_t *s) { return splitmix64(s); }

/* Unbiased integer in [0, n) (rejection on the top partial range). */
static uint64_t below(uint64_t *s, uint64_t n)
{
    uint64_t lim = UINT64_MAX - UINT64_MAX % n;
    uint64_t r;
    do r = splitmix64(s); while (r >= lim);
    return r % n;
}
uint64_t moeq_spec_below(uint64_t *s, uint64_t n);
uint64_t moeq_spec_below(uint64_t *s, uint64_t n) { return below(s, n); }

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}
static int cmp_f64(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static moeq_status esd_full(const float *W, int64_t rows, int64_t cols, moeq_spec_ws *ws,
                            double *eigs, int64_t *n, moeq_error *err)
{
    size_t rc = (size_t)rows * (size_t)cols;
    int64_t mn = rows < cols ? rows : cols;
    if (GROW(ws, f64, rc)) return moeq_fail(err, MOEQ_ERR_NOMEM, "spectral: %zu doubles for a %lldx%lld matrix", rc, (long long)rows, (long long)cols);
    for (size_t i = 0; i < rc; i++) ws->f64[i] = W[i];
    double dummy = 0;
    lapack_int info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'N', (lapack_int)cols, (lapack_int)rows, ws->f64,
                                     (lapack_int)cols, eigs, &dummy, 1, &dummy, 1);
    if (info != 0)
        return moeq_fail(err, info < 0 ? MOEQ_ERR_DEPENDENCY : MOEQ_ERR_NUMERIC,
                         "spectral: dgesdd on %lldx%lld returned %d", (long long)rows, (long long)cols, (int)info);
    /* descending σ → ascending σ² */
    for (int64_t i = 0, j = mn - 1; i < j; i++, j--) { double t = eigs[i]; eigs[i] = eigs[j]; eigs[j] = t; }
    for (int64_t i = 0; i < mn; i++) eigs[i] *= eigs[i];
    *n = mn;
    return MOEQ_OK;
}

static moeq_status esd_gram(const float *W, int64_t rows, int64_t cols, moeq_spec_ws *ws,
                            double *eigs, int64_t *n, moeq_error *err)
{
    size_t rc = (size_t)rows * (size_t)cols;
    int64_t mn = rows < cols ? rows : cols;
    if (GROW(ws, f64, rc) || GROW(ws, g, (size_t)mn * (size_t)mn))
        return moeq_fail(err, MOEQ_ERR_NOMEM, "spectral: gram buffers for a %lldx%lld matrix", (long long)rows, (long long)cols);
    for (size_t i = 0; i < rc; i++) ws->f64[i] = W[i];
    /* A = Wᵀ is column-major [cols, rows]: AAᵀ = WᵀW when cols <= rows, else AᵀA = WWᵀ */
    /* row-major lower triangle == column-major upper, which dsyevd reads with 'U' */
    if (cols <= rows)
        moeq_dsyrk_tn(cols, rows, ws->f64, 0.0, ws->g);
    else
        moeq_dsyrk_nt(rows, cols, ws->f64, 0.0, ws->g);
    lapack_int info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'N', 'U', (lapack_int)mn, ws->g, (lapack_int)mn, eigs);
    if (info != 0)
        return moeq_fail(err, info < 0 ? MOEQ_ERR_DEPENDENCY : MOEQ_ERR_NUMERIC,
                         "spectral: dsyevd on a %lldx%lld gram matrix returned %d", (long long)mn, (long long)mn, (int)info);
    *n = mn;   /* dsyevd returns ascending values */
    return MOEQ_OK;
}

static moeq_status esd_farms(const float *W, int64_t rows, int64_t cols, const moeq_spec_opts *o,
                             uint64_t key, moeq_spec_ws *ws, double *eigs, int64_t *n,
                             int64_t *n_tiles, moeq_error *err)
{
    const int64_t T = o->tile, nr = rows / T, nc = cols / T, total = nr * nc;
    int64_t keep = total < o->max_blocks ? total : o->max_blocks;
    if (GROW(ws, idx, total) || GROW(ws, f32b, T * T))
        return moeq_fail(err, MOEQ_ERR_NOMEM, "spectral: FARMS buffers for %lld tiles", (long long)total);
    for (int64_t i = 0; i < total; i++) ws->idx[i] = i;
    if (keep < total) {
        /* partial Fisher-Yates: the first `keep` entries are a uniform sample without
         * replacement; the generator depends on the seed and the matrix only */
        uint64_t s = o->seed ^ key;
        for (int64_t i = 0; i < keep; i++) {
            int64_t j = i + (int64_t)below(&s, (uint64_t)(total - i));
            int64_t t = ws->idx[i]; ws->idx[i] = ws->idx[j]; ws->idx[j] = t;
        }
        qsort(ws->idx, (size_t)keep, sizeof *ws->idx, cmp_i64);
    }
    float *tile = ws->f32b, dummy = 0;
    float s[4096];
    if (T > 4096) return moeq_fail(err, MOEQ_ERR_MISUSE, "spectral: tile %lld > 4096", (long long)T);
    int64_t m = 0;
    for (int64_t b = 0; b < keep; b++) {
        int64_t bi = ws->idx[b] / nc, bj = ws->idx[b] % nc;
        for (int64_t r = 0; r < T; r++)
            memcpy(tile + r * T, W + (bi * T + r) * cols + bj * T, (size_t)T * sizeof(float));
        lapack_int info = LAPACKE_sgesdd(LAPACK_COL_MAJOR, 'N', (lapack_int)T, (lapack_int)T, tile, (lapack_int)T,
                                         s, &dummy, 1, &dummy, 1);
        if (info != 0)
            return moeq_fail(err, info < 0 ? MOEQ_ERR_DEPENDENCY : MOEQ_ERR_NUMERIC,
                             "spectral: sgesdd on tile (%lld,%lld) returned %d", (long long)bi, (long long)bj, (int)info);
        for (int64_t i = 0; i < T; i++) eigs[m++] = (double)s[i] * (double)s[i];
    }
    qsort(eigs, (size_t)m, sizeof *eigs, cmp_f64);
    *n = m;
    *n_tiles = keep;
    return MOEQ_OK;
}

moeq_status moeq_spec_esd(const float *W, int64_t rows, int64_t cols, const moeq_spec_opts *o,
                          uint64_t key, moeq_spec_ws *ws, double *eigs, int64_t *n,
                          int64_t *n_tiles, moeq_error *err)
{
    if (!W || !o || !ws || !eigs || !n || rows <= 0 || cols <= 0)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_spec_esd: bad argument");
    if (rows > INT32_MAX || cols > INT32_MAX)
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "spectral: %lldx%lld exceeds LAPACK's int", (long long)rows, (long long)cols);
    int64_t tiles_dummy;
    if (!n_tiles) n_tiles = &tiles_dummy;
    *n_tiles = 0;
    *n = 0;
    switch (o->mode) {
    case MOEQ_SPEC_FULL: return esd_full(W, rows, cols, ws, eigs, n, err);
    case MOEQ_SPEC_GRAM: return esd_gram(W, rows, cols, ws, eigs, n, err);
    case MOEQ_SPEC_FARMS:
        if (o->tile <= 0 || o->max_blocks <= 0)
            return moeq_fail(err, MOEQ_ERR_MISUSE, "spectral: FARMS tile %lld, max blocks %lld", (long long)o->tile, (long long)o->max_blocks);
        /* smaller than a tile: AlphaQ falls back to the full SVD */
        if (rows < o->tile || cols < o->tile) return esd_full(W, rows, cols, ws, eigs, n, err);
        return esd_farms(W, rows, cols, o, key, ws, eigs, n, n_tiles, err);
    }
    return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_spec_esd: mode %d", (int)o->mode);
}
