/* GPTQ (Frantar et al. 2022; algorithms.md §6.1) on the .moeq int codecs: float64 throughout,
 * the inverse-Hessian Cholesky factor from LAPACKE dpotrf/dpotri/dpotrf, lazy block updates as
 * one dgemm per block, act-order with static groups. Rows are independent given the factor,
 * so they go in fixed blocks of 64 rows over the threads: the bytes do not depend on the
 * thread count. Also the driver callback behind `moeq quantize --method gptq`. */
#include "moeq_gptq.h"
#include "moeq_core.h"
#include "moeq_kernels.h"

#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROW_BLOCK 64

struct moeq_gptq_hinv {
    int64_t n;
    double *U;        /* [n, n] row-major, upper triangle: (H + λI)⁻¹ = UᵀU, in perm order */
    int64_t *perm;    /* [n] position -> original column; NULL without act_order */
    double *d;        /* [n] diag H in original column order (dead columns 0): grid weights */
    int grid_steps;   /* moeq_gptq_opts.grid_steps */
};

void moeq_gptq_hinv_free(moeq_gptq_hinv *h)
{
    if (!h) return;
    free(h->U);
    free(h->perm);
    free(h->d);
    free(h);
}

const double *moeq_gptq_hinv_factor(const moeq_gptq_hinv *h, int64_t *n, const int64_t **perm)
{
    *n = h->n;
    *perm = h->perm;
    return h->U;
}

static const double *g_diag;   /* qsort context (single-threaded use) */
static int cmp_diag_desc(const void *a, const void *b)
{
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    if (g_diag[i] != g_diag[j]) return g_diag[i] > g_diag[j] ? -1 : 1;
    return i < j ? -1 : i > j;   /* ties by index: deterministic */
}

moeq_status moeq_gptq_hinv_create(const double *H, int64_t n, const moeq_gptq_opts *o,
                                  moeq_gptq_hinv **out, moeq_gptq_info *info, moeq_error *err)
{
    *out = NULL;
    memset(info, 0, sizeof *info);
    double damp = o && o->damp > 0 ? o->damp : 0.01;
    moeq_gptq_hinv *h = calloc(1, sizeof *h);
    double *A = malloc((size_t)(n * n) * sizeof *A), *diag = malloc((size_t)n * sizeof *diag);
    if (!h || !A || !diag || !(h->U = malloc((size_t)(n * n) * sizeof *h->U)) ||
        !(h->d = malloc((size_t)n * sizeof *h->d))) {
        free(A); free(diag); moeq_gptq_hinv_free(h);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "GPTQ: out of memory for a %lld x %lld Hessian", (long long)n,
                         (long long)n);
    }
    h->n = n;
    h->grid_steps = o ? o->grid_steps : 0;
    double mean = 0;
    for (int64_t j = 0; j < n; j++) {
        diag[j] = H[j * n + j];
        h->d[j] = diag[j] > 0 ? diag[j] : 0;
        if (!(diag[j] > 0)) {   /* a dead input: no information, so no coupling either */
            diag[j] = 1;
            info->dead_cols++;
        }
        mean += diag[j];
    }
    mean /= (double)n;
    if (o && o->act_order) {
        h->perm = malloc((size_t)n * sizeof *h->perm);
        if (!h->perm) { free(A); free(diag); moeq_gptq_hinv_free(h); return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); }
        for (int64_t j = 0; j < n; j++) h->perm[j] = j;
        g_diag = diag;
        qsort(h->perm, (size_t)n, sizeof *h->perm, cmp_diag_desc);
    }
    moeq_status st = MOEQ_ERR_NUMERIC;
    /* U without forming the inverse: with P the reversal, P A P = L Lᵀ gives A⁻¹ = (P L⁻ᵀ P)(P L⁻¹ P),
     * so U = P L⁻¹ P is the upper factor (unique: positive diagonal). One Cholesky and one
     * triangular inverse (2n³/3 flops) instead of Cholesky, inverse and Cholesky again (4n³/3),
     * column-major so LAPACKE copies nothing (its row-major transposes were 6% of an export). */
    for (int attempt = 0; attempt <= 3; attempt++, damp *= 10) {
        /* A = P (permuted H with dead columns fixed and damping on the diagonal) P, its lower
         * triangle column-major: element (i, j), i >= j, at A[j n + i] */
        for (int64_t j = 0; j < n; j++) {
            const int64_t pj = h->perm ? h->perm[n - 1 - j] : n - 1 - j;
            for (int64_t i = j; i < n; i++) {
                const int64_t pi = h->perm ? h->perm[n - 1 - i] : n - 1 - i;
                double v = H[pj * n + pi];   /* H symmetric: read along its rows */
                if (i == j) v = diag[pi] + damp * mean;
                else if (!(H[pi * n + pi] > 0) || !(H[pj * n + pj] > 0)) v = 0;
                A[j * n + i] = v;
            }
        }
        /* the _work calls skip LAPACKE's NaN scan, and OpenBLAS's potrf lets a NaN through */
        lapack_int r = 0;
        for (int64_t k = 0; k < n * n && r == 0; k++) r = !isfinite(A[k]) && (k % n >= k / n) ? -1 : 0;
        if (r == 0) r = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', (lapack_int)n, A, (lapack_int)n);
        if (r == 0) r = LAPACKE_dtrtri_work(LAPACK_COL_MAJOR, 'L', 'N', (lapack_int)n, A, (lapack_int)n);
        if (r == 0) {
            /* U(i, j) = L⁻¹(n-1-i, n-1-j), j >= i */
            for (int64_t i = 0; i < n; i++) {
                double *u = h->U + i * n;
                for (int64_t j = 0; j < i; j++) u[j] = 0;
                for (int64_t j = i; j < n; j++) u[j] = A[(n - 1 - j) * n + (n - 1 - i)];
            }
            info->damp = damp;
            st = MOEQ_OK;
            break;
        }
        if (attempt < 3) info->retries++;
    }
    free(A);
    free(diag);
    if (st) {
        info->damp = damp / 10;
        moeq_gptq_hinv_free(h);
        return moeq_fail(err, MOEQ_ERR_NUMERIC, "GPTQ: Cholesky of the damped Hessian failed up to damping %g",
                         damp / 10);
    }
    *out = h;
    return MOEQ_OK;
}

/* The grid of one group of values x[0..len) (stride 1), the kernels' f16 scale and zero. */
static void grid(const double *x, int64_t len, int64_t stride, int bits, int sym, float *s, float *z,
                 uint16_t *s16, uint16_t *z16)
{
    const int maxq = (1 << bits) - 1, half = 1 << (bits - 1);
    double mn = x[0], mx = x[0];
    for (int64_t j = 1; j < len; j++) {
        double v = x[j * stride];
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    float scale;
    if (sym) {
        double amax = fabs(mn) > fabs(mx) ? fabs(mn) : fabs(mx);
        scale = amax > 0 ? (float)(amax / (half - 1)) : 1.0f;
    } else {
        scale = mx > mn ? (float)((mx - mn) / maxq) : (mn != 0 ? (float)fabs(mn) : 1.0f);
    }
    *s16 = moeq_f32_to_f16(scale);
    if (moeq_f16_to_f32(*s16) == 0) *s16 = 1;   /* the smallest subnormal, never a zero scale */
    *s = moeq_f16_to_f32(*s16);
    float zero = sym ? (float)half : rintf((float)(-mn / *s));
    *z16 = moeq_f32_to_f16(zero);
    *z = moeq_f16_to_f32(*z16);
}

static inline int quant1(double x, int maxq, float s, float z)
{
    double v = rint(x / s) + z;
    return v < 0 ? 0 : v > maxq ? maxq : (int)v;
}

/* The grid of the group of original columns [c0, c0 + len) with values x: min/max, or the
 * clipping search weighted by diag H (quant/grid.c). */
static void group_grid(const moeq_gptq_hinv *h, const double *x, int64_t c0, int64_t len, int bits, int sym,
                       float *s, float *z, uint16_t *s16, uint16_t *z16)
{
    if (h->grid_steps <= 1) {
        grid(x, len, 1, bits, sym, s, z, s16, z16);
        return;
    }
    moeq_grid_search(x, 1, h->d + c0, len, bits, sym, h->grid_steps, s16, z16);
    *s = moeq_f16_to_f32(*s16);
    *z = sym ? (float)(1 << (bits - 1)) : moeq_f16_to_f32(*z16);
}

/* GPTQ of rows [r0, r0 + R): W is [R, n] in permuted column order (modified). */
static void gptq_rows(const moeq_gptq_hinv *h, double *W, int64_t R, int64_t n, int bits, int g, int sym,
                      int B, int64_t ng, double *Err, uint8_t *q, float *gs, float *gz, uint16_t *s16,
                      uint16_t *z16, const float *w_orig)
{
    const int maxq = (1 << bits) - 1;
    const double *U = h->U;
    const int64_t *perm = h->perm;
    if (perm) {   /* static groups: every grid from the original W, so layout stays group-contiguous */
        for (int64_t r = 0; r < R; r++)
            for (int64_t gi = 0; gi < ng; gi++) {
                int64_t c0 = gi * g, len = n - c0 < g ? n - c0 : g;
                double tmp[256];
                double *t = len <= 256 ? tmp : NULL;
                if (!t) { t = malloc((size_t)len * sizeof *t); if (!t) continue; }
                for (int64_t j = 0; j < len; j++) t[j] = w_orig[r * n + c0 + j];
                group_grid(h, t, c0, len, bits, sym, &gs[r * ng + gi], &gz[r * ng + gi], &s16[r * ng + gi],
                           &z16[r * ng + gi]);
                if (t != tmp) free(t);
            }
    }
    for (int64_t i1 = 0; i1 < n; i1 += B) {
        int64_t i2 = i1 + B < n ? i1 + B : n, bw = i2 - i1;
        for (int64_t i = i1; i < i2; i++) {
            int64_t col = perm ? perm[i] : i, gi = col / g;
            if (!perm && col % g == 0) {   /* a group's grid from the current (updated) weights */
                int64_t len = n - col < g ? n - col : g;
                for (int64_t r = 0; r < R; r++)
                    group_grid(h, W + r * n + i, col, len, bits, sym, &gs[r * ng + gi], &gz[r * ng + gi],
                               &s16[r * ng + gi], &z16[r * ng + gi]);
            }
            double d = U[i * n + i];
            for (int64_t r = 0; r < R; r++) {
                double *wr = W + r * n;
                float s = gs[r * ng + gi], z = gz[r * ng + gi];
                int c = quant1(wr[i], maxq, s, z);
                q[r * n + col] = (uint8_t)c;
                double e = (wr[i] - (double)(s * ((float)c - z))) / d;
                Err[r * B + (i - i1)] = e;
                const double *u = U + i * n;
                for (int64_t j = i + 1; j < i2; j++) wr[j] -= e * u[j];
            }
        }
        if (i2 < n) moeq_dgemm_nn(R, n - i2, bw, -1.0, Err, B, U + i1 * n + i2, n, 1.0, W + i2, n);
    }
}

moeq_status moeq_gptq_apply(const moeq_gptq_hinv *h, const float *w, int64_t rows, int64_t cols,
                            int bits, int group, int sym, int block, int threads, uint8_t *raw,
                            float *wq, moeq_error *err)
{
    int g = group ? group : (int)cols;
    moeq_status st = moeq_qmat_check(bits, g, rows, cols, err);
    if (st) return st;
    if (h->n != cols)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "GPTQ: Hessian is %lld wide, the matrix has %lld columns",
                         (long long)h->n, (long long)cols);
    int B = block > 0 ? block : 128;
    uint64_t so, zo, total = moeq_qmat_bytes(bits, g, sym, rows, cols, &so, &zo);
    memset(raw, 0, (size_t)total);
    int64_t ng = (cols + g - 1) / g, rb = cols * bits / 8, nblk = (rows + ROW_BLOCK - 1) / ROW_BLOCK;
    int nt = threads > 0 ? threads : moeq_threads();
    int fail = 0;
#pragma omp parallel num_threads(nt)
    {
        double *W = malloc((size_t)(ROW_BLOCK * cols) * sizeof *W);
        double *Err = malloc((size_t)(ROW_BLOCK * B) * sizeof *Err);
        uint8_t *q = malloc((size_t)(ROW_BLOCK * cols));
        float *gs = malloc((size_t)(ROW_BLOCK * ng) * sizeof *gs), *gz = malloc((size_t)(ROW_BLOCK * ng) * sizeof *gz);
        uint16_t *s16 = malloc((size_t)(ROW_BLOCK * ng) * 2), *z16 = malloc((size_t)(ROW_BLOCK * ng) * 2);
        int ok = W && Err && q && gs && gz && s16 && z16;
        if (!ok) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < nblk; b++) {
            if (!ok) continue;
            int64_t r0 = b * ROW_BLOCK, R = rows - r0 < ROW_BLOCK ? rows - r0 : ROW_BLOCK;
            for (int64_t r = 0; r < R; r++)
                for (int64_t i = 0; i < cols; i++)
                    W[r * cols + i] = w[(r0 + r) * cols + (h->perm ? h->perm[i] : i)];
            gptq_rows(h, W, R, cols, bits, g, sym, B, ng, Err, q, gs, gz, s16, z16, w + r0 * cols);
            for (int64_t r = 0; r < R; r++) {
                moeq_pack_codes_row(q + r * cols, cols, bits, raw + (r0 + r) * rb);
                memcpy((uint16_t *)(void *)(raw + so) + (r0 + r) * ng, s16 + r * ng, (size_t)ng * 2);
                if (!sym) memcpy((uint16_t *)(void *)(raw + zo) + (r0 + r) * ng, z16 + r * ng, (size_t)ng * 2);
                if (wq)
                    for (int64_t c = 0; c < cols; c++) {
                        int64_t gi = c / g;
                        wq[(r0 + r) * cols + c] = gs[r * ng + gi] * ((float)q[r * cols + c] - gz[r * ng + gi]);
                    }
            }
        }
        free(W); free(Err); free(q); free(gs); free(gz); free(s16); free(z16);
    }
    if (fail) return moeq_fail(err, MOEQ_ERR_NOMEM, "GPTQ: out of memory");
    return MOEQ_OK;
}

void moeq_rtn_dequant_f32(const float *w, int64_t rows, int64_t cols, int bits, int group, int sym,
                          float *wq)
{
    int g = group ? group : (int)cols;
    uint64_t so, zo, total = moeq_qmat_bytes(bits, g, sym, rows, cols, &so, &zo);
    uint8_t *raw = malloc((size_t)total);
    moeq_error e;
    if (!raw || moeq_rtn_quantize(w, rows, cols, bits, group, sym, raw, &e)) {
        for (int64_t i = 0; i < rows * cols; i++) wq[i] = NAN;
        free(raw);
        return;
    }
    moeq_qmat q = { .bits = bits, .group = g, .sym = sym, .rows = rows, .cols = cols, .codes = raw,
                    .scales = (const uint16_t *)(void *)(raw + so),
                    .zeros = sym ? NULL : (const uint16_t *)(void *)(raw + zo) };
    moeq_kernels_ref.dequant(&q, 0, rows, wq);
    free(raw);
}

moeq_status moeq_gptq_quantize(const float *w, int64_t rows, int64_t cols, const double *H,
                               int bits, int group, int sym, const moeq_gptq_opts *o,
                               uint8_t *raw, float *wq, moeq_gptq_info *info, moeq_error *err)
{
    moeq_gptq_info tmp;
    if (!info) info = &tmp;
    moeq_gptq_hinv *h = NULL;
    moeq_error e2;
    moeq_status st = moeq_gptq_hinv_create(H, cols, o, &h, info, &e2);
    if (st == MOEQ_ERR_NUMERIC) {   /* never abort the run: plain RTN, and the caller lists it */
        info->rtn_fallback = 1;
        if ((st = moeq_rtn_quantize(w, rows, cols, bits, group, sym, raw, err))) return st;
        if (wq) moeq_rtn_dequant_f32(w, rows, cols, bits, group, sym, wq);
        return MOEQ_OK;
    }
    if (st) { *err = e2; return st; }
    st = moeq_gptq_apply(h, w, rows, cols, bits, group, sym, o ? o->block : 0, o ? o->threads : 0, raw, wq, err);
    moeq_gptq_hinv_free(h);
    return st;
}

double moeq_hessian_error(const float *w, const float *q, int64_t rows, int64_t cols, const double *H)
{
    int64_t nblk = (rows + ROW_BLOCK - 1) / ROW_BLOCK;
    double *part = calloc((size_t)nblk, sizeof *part);
    if (!part) return NAN;
#pragma omp parallel
    {
        double *D = malloc((size_t)(ROW_BLOCK * cols) * sizeof *D), *DH = malloc((size_t)(ROW_BLOCK * cols) * sizeof *DH);
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < nblk; b++) {
            if (!D || !DH) { part[b] = NAN; continue; }
            int64_t r0 = b * ROW_BLOCK, R = rows - r0 < ROW_BLOCK ? rows - r0 : ROW_BLOCK;
            for (int64_t i = 0; i < R * cols; i++) D[i] = (double)w[r0 * cols + i] - (double)q[r0 * cols + i];
            moeq_dgemm_nn(R, cols, cols, 1.0, D, cols, H, cols, 0.0, DH, cols);
            double s = 0;
            for (int64_t i = 0; i < R * cols; i++) s += D[i] * DH[i];
            part[b] = s;
        }
        free(D);
        free(DH);
    }
    double s = 0;
    for (int64_t b = 0; b < nblk; b++) s += part[b];   /* block order: thread-count independent */
    free(part);
    return s;
}
