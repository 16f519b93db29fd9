/* QMoE's ternary quantizer for the t1d codec (moeq_tdict.h, docs/quantize.md "t1d"): levels
 * {lo, 0, hi} per output row from the row (min and max with 0 included, rounded to f16 first so
 * the error fed back is the one the kernels see), q = hi if x > hi/2, lo if x < lo/2, else 0;
 * with the Cholesky factor of (H + λI)⁻¹ GPTQ's column sweep feeds each rounding error forward
 * (static grid, as QMoE's full-row groups). Rows are independent and each is swept in one
 * sequence of float64 operations, so the trits do not depend on the thread count. Then the p0
 * byte of least coded size and the dictionary coding (kernels/ref/tdict.c). */
#include "moeq_tdict.h"
#include "moeq_kernels.h"
#include "moeq_core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ROW_BLOCK 16

static inline uint8_t tern(double x, float lo, float hi)
{
    if (hi > 0 && x > 0.5 * (double)hi) return 1;
    if (lo < 0 && x < 0.5 * (double)lo) return 2;
    return 0;
}

static float f16_round(float x)
{
    if (x > 65504.0f) x = 65504.0f;
    if (x < -65504.0f) x = -65504.0f;
    return moeq_f16_to_f32(moeq_f32_to_f16(x));
}

/* codewords of every row at p0 byte k (integer sum: any order) */
static int64_t coded_count(const moeq_tdict *d, const uint8_t *t, int64_t rows, int64_t cols)
{
    int64_t total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
    for (int64_t r = 0; r < rows; r++) total += moeq_tdict_encode_row(d, t + (size_t)r * (size_t)cols, cols, NULL, 0);
    return total;
}

static moeq_status count_at(int k, const uint8_t *t, int64_t rows, int64_t cols, int64_t *n, moeq_error *err)
{
    const moeq_tdict *d = moeq_tdict_get_encoder(k);
    if (!d) return moeq_fail(err, MOEQ_ERR_NOMEM, "t1d: out of memory for the dictionary of p0 byte %d", k);
    *n = coded_count(d, t, rows, cols);
    return MOEQ_OK;
}

static void wr64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i)); }

moeq_status moeq_tdict_quantize(const float *w, int64_t rows, int64_t cols, const double *U, const int64_t *perm,
                                int k, uint8_t *raw, uint64_t cap, float *wq, moeq_tdict_stats *stats,
                                moeq_error *err)
{
    uint64_t bound = moeq_tdict_raw_bound(rows, cols);
    if (!bound) return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "t1d: a %lld x %lld matrix is too large for the layout "
                                 "(u32 codeword offsets)", (long long)rows, (long long)cols);
    if (cap < bound) return moeq_fail(err, MOEQ_ERR_MISUSE, "t1d: buffer of %llu bytes, need %llu",
                                      (unsigned long long)cap, (unsigned long long)bound);
    if (k < 0 || k > 255) return moeq_fail(err, MOEQ_ERR_MISUSE, "t1d: p0 byte %d", k);
    float *lv = malloc((size_t)rows * 2 * sizeof *lv);
    uint8_t *t = malloc((size_t)rows * (size_t)cols);
    if (!lv || !t) {
        free(lv);
        free(t);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "t1d: out of memory");
    }
    for (int64_t r = 0; r < rows; r++) {
        const float *x = w + (size_t)r * (size_t)cols;
        float lo = 0, hi = 0;
        for (int64_t c = 0; c < cols; c++) {
            if (x[c] < lo) lo = x[c];
            if (x[c] > hi) hi = x[c];
        }
        lv[2 * r] = f16_round(lo);
        lv[2 * r + 1] = f16_round(hi);
    }
    int oom = 0;
    const int64_t nb = (rows + ROW_BLOCK - 1) / ROW_BLOCK;
#pragma omp parallel for schedule(dynamic, 1) reduction(| : oom)
    for (int64_t b = 0; b < nb; b++) {
        int64_t r0 = b * ROW_BLOCK, r1 = r0 + ROW_BLOCK < rows ? r0 + ROW_BLOCK : rows, nr = r1 - r0;
        if (!U) {
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = 0; c < cols; c++)
                    t[(size_t)r * (size_t)cols + (size_t)c] = tern(w[(size_t)r * (size_t)cols + (size_t)c], lv[2 * r],
                                                                   lv[2 * r + 1]);
            continue;
        }
        /* GPTQ sweep in the factor's column order: W[r][j] rounded, its error (x − q) / U_jj
         * subtracted along U's row j from the columns after it */
        double *W = malloc((size_t)nr * (size_t)cols * sizeof *W), *e = malloc((size_t)nr * sizeof *e);
        if (!W || !e) {
            free(W);
            free(e);
            oom = 1;
            continue;
        }
        for (int64_t i = 0; i < nr; i++)
            for (int64_t j = 0; j < cols; j++)
                W[i * cols + j] = w[(size_t)(r0 + i) * (size_t)cols + (size_t)(perm ? perm[j] : j)];
        for (int64_t j = 0; j < cols; j++) {
            const double *u = U + (size_t)j * (size_t)cols;
            for (int64_t i = 0; i < nr; i++) {
                const int64_t r = r0 + i;
                double x = W[i * cols + j];
                uint8_t q = tern(x, lv[2 * r], lv[2 * r + 1]);
                double qv = q == 1 ? (double)lv[2 * r + 1] : q == 2 ? (double)lv[2 * r] : 0.0;
                t[(size_t)r * (size_t)cols + (size_t)(perm ? perm[j] : j)] = q;
                e[i] = (x - qv) / u[j];
            }
            for (int64_t i = 0; i < nr; i++) {
                double *wi = W + i * cols, ei = e[i];
                for (int64_t c = j + 1; c < cols; c++) wi[c] -= ei * u[c];
            }
        }
        free(W);
        free(e);
    }
    if (oom) {
        free(lv);
        free(t);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "t1d: out of memory for the GPTQ sweep");
    }
    int64_t zeros = 0;
    for (size_t i = 0; i < (size_t)rows * (size_t)cols; i++) zeros += t[i] == 0;
    const double p0 = (double)zeros / ((double)rows * (double)cols);
    moeq_status st = MOEQ_OK;
    if (k == 0) {
        /* the coded size is near-convex in k around the measured p0: steps of 4, then ±2, ±1 */
        int k0 = (int)lrint(256 * p0);
        k0 = k0 < 1 ? 1 : k0 > 255 ? 255 : k0;
        int best = k0;
        int64_t bn = -1;
        for (int step = 4; step >= 1 && !st; step /= 2) {
            int c0 = best;
            for (int dk = -2 * step; dk <= 2 * step && !st; dk += step) {
                int kk = c0 + dk;
                if (kk < 1 || kk > 255 || (step < 4 && (dk == 0 || (dk % (2 * step)) == 0))) continue;
                int64_t cn = 0;
                st = count_at(kk, t, rows, cols, &cn, err);
                if (!st && (bn < 0 || cn < bn || (cn == bn && kk < best))) { bn = cn; best = kk; }
            }
        }
        k = best;
    }
    const moeq_tdict *d = st ? NULL : moeq_tdict_get_encoder(k);
    if (!st && !d) st = moeq_fail(err, MOEQ_ERR_NOMEM, "t1d: out of memory for the dictionary of p0 byte %d", k);
    if (!st) {
        unsigned char *h = raw;
        memset(h, 0, MOEQ_TDICT_HDR);
        h[0] = (unsigned char)k;
        wr64(h + 8, (uint64_t)rows);
        wr64(h + 16, (uint64_t)cols);
        uint16_t *levels = (uint16_t *)(void *)(h + MOEQ_TDICT_HDR);
        uint32_t *off = (uint32_t *)(void *)(h + MOEQ_TDICT_HDR + 4 * rows);
        uint16_t *cw = (uint16_t *)(void *)(h + MOEQ_TDICT_HDR + 8 * rows + 4);
        uint64_t cwcap = (bound - (uint64_t)(MOEQ_TDICT_HDR + 8 * rows + 4)) / 2;
        int64_t n = 0;
        for (int64_t r = 0; r < rows; r++) {
            levels[2 * r] = moeq_f32_to_f16(lv[2 * r]);
            levels[2 * r + 1] = moeq_f32_to_f16(lv[2 * r + 1]);
            off[r] = (uint32_t)n;
            int64_t m = moeq_tdict_encode_row(d, t + (size_t)r * (size_t)cols, cols, cw + n, (int64_t)cwcap - n);
            if (m < 0) { st = moeq_fail(err, MOEQ_ERR_MISUSE, "t1d: codeword buffer overrun"); break; }
            n += m;
        }
        off[rows] = (uint32_t)n;
        wr64(h + 24, (uint64_t)n);
        if (!st && stats) {
            stats->k = k;
            stats->p0 = p0;
            stats->count = n;
            stats->bytes = moeq_tdict_raw_size(rows, n);
            stats->bpw = 8.0 * (double)stats->bytes / ((double)rows * (double)cols);
        }
        if (!st && wq)
            for (int64_t r = 0; r < rows; r++)
                for (int64_t c = 0; c < cols; c++) {
                    uint8_t q = t[(size_t)r * (size_t)cols + (size_t)c];
                    wq[(size_t)r * (size_t)cols + (size_t)c] = q == 1 ? lv[2 * r + 1] : q == 2 ? lv[2 * r] : 0.0f;
                }
    }
    free(lv);
    free(t);
    return st;
}
