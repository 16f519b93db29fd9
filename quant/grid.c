/* Grids (scale, zero) of the int codecs found by a search weighted by the Hessian's diagonal
 * (docs/quantize.md, "Weighted grids"): per group, the clipping ratio r of the min/max grid
 * that minimises Σ_j d_j (w_j − Q(w_j))², d = diag(H) (the part of the layer's output error a
 * weight alone causes). Candidates r_k = 1 − k / (2·steps), k = 0..steps−1 (1 down to just
 * above 0.5); k = 0 is exactly the min/max grid, so the search never does worse than it in
 * the weighted error, and ties keep the larger ratio. Scale and zero are rounded to f16 before
 * the codes are chosen, as the kernels will see them. Plain C, no state: the same input gives
 * the same grid on any thread. */
#include "moeq_quant.h"
#include "moeq_core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* f16 scale and zero of the min/max grid over [lo, hi] (asym) or of amax (sym), the rules of
 * GPTQ's grid (quant/gptq.c): never a zero scale. */
static void grid_of(double lo, double hi, double amax, int bits, int sym, uint16_t *s16, uint16_t *z16,
                    float *s, float *z)
{
    const int maxq = (1 << bits) - 1, half = 1 << (bits - 1);
    float scale;
    if (sym) scale = amax > 0 ? (float)(amax / (half - 1)) : 1.0f;
    else scale = hi > lo ? (float)((hi - lo) / maxq) : (lo != 0 ? (float)fabs(lo) : 1.0f);
    *s16 = moeq_f32_to_f16(scale);
    if (moeq_f16_to_f32(*s16) == 0) *s16 = 1;   /* the smallest subnormal */
    *s = moeq_f16_to_f32(*s16);
    float zero = sym ? (float)half : rintf((float)(-lo / *s));
    *z16 = moeq_f32_to_f16(zero);
    *z = moeq_f16_to_f32(*z16);
}

static double grid_err(const double *x, const double *d, int64_t len, int64_t stride, int maxq, float s, float z)
{
    double e = 0;
    for (int64_t j = 0; j < len; j++) {
        double v = x[j * stride], c = rint(v / s) + z;
        c = c < 0 ? 0 : c > maxq ? maxq : c;
        double r = v - (double)(s * ((float)c - z));
        e += (d ? d[j] : 1.0) * r * r;
    }
    return e;
}

double moeq_grid_search(const double *x, int64_t stride, const double *d, int64_t len, int bits, int sym,
                        int steps, uint16_t *s16, uint16_t *z16)
{
    const int maxq = (1 << bits) - 1;
    double mn = x[0], mx = x[0];
    for (int64_t j = 1; j < len; j++) {
        double v = x[j * stride];
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    double amax = fabs(mn) > fabs(mx) ? fabs(mn) : fabs(mx);
    /* a group whose weights all have d = 0 carries no information: unweighted */
    double dsum = 0;
    for (int64_t j = 0; d && j < len; j++) dsum += d[j];
    if (!(dsum > 0)) d = NULL;
    float s, z;
    grid_of(mn, mx, amax, bits, sym, s16, z16, &s, &z);
    double best = grid_err(x, d, len, stride, maxq, s, z);
    if (steps <= 1 || mx == mn) return best;
    for (int k = 1; k < steps; k++) {
        double r = 1.0 - (double)k / (2.0 * steps);
        uint16_t cs, cz;
        grid_of(r * mn, r * mx, r * amax, bits, sym, &cs, &cz, &s, &z);
        double e = grid_err(x, d, len, stride, maxq, s, z);
        if (e < best) {
            best = e;
            *s16 = cs;
            *z16 = cz;
        }
    }
    return best;
}

moeq_status moeq_rtn_quantize_weighted(const float *w, int64_t rows, int64_t cols, int bits, int group, int sym,
                                       const double *d, int steps, uint8_t *raw, moeq_error *err)
{
    int g = group ? group : (int)cols;
    moeq_status st = moeq_qmat_check(bits, g, rows, cols, err);
    if (st) return st;
    uint64_t so, zo, total = moeq_qmat_bytes(bits, g, sym, rows, cols, &so, &zo);
    memset(raw, 0, (size_t)total);
    const int maxq = (1 << bits) - 1;
    int64_t rb = cols * bits / 8, ng = (cols + g - 1) / g;
    int fail = 0;
#pragma omp parallel
    {
        uint8_t *q = malloc((size_t)cols);
        double *x = malloc((size_t)cols * sizeof *x);
        if (!q || !x) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            if (!q || !x) continue;
            uint16_t *sc = (uint16_t *)(void *)(raw + so) + r * ng, *zc = (uint16_t *)(void *)(raw + zo) + r * ng;
            for (int64_t c = 0; c < cols; c++) x[c] = w[r * cols + c];
            for (int64_t gi = 0; gi < ng; gi++) {
                int64_t c0 = gi * g, len = cols - c0 < g ? cols - c0 : g;
                uint16_t s16, z16;
                moeq_grid_search(x + c0, 1, d ? d + c0 : NULL, len, bits, sym, steps, &s16, &z16);
                float s = moeq_f16_to_f32(s16), z = moeq_f16_to_f32(z16);
                for (int64_t j = 0; j < len; j++) {
                    double c = rint(x[c0 + j] / s) + z;
                    q[c0 + j] = (uint8_t)(c < 0 ? 0 : c > maxq ? maxq : c);
                }
                sc[gi] = s16;
                if (!sym) zc[gi] = z16;
            }
            moeq_pack_codes_row(q, cols, bits, raw + r * rb);
        }
        free(q);
        free(x);
    }
    if (fail) return moeq_fail(err, MOEQ_ERR_NOMEM, "RTN: out of memory");
    return MOEQ_OK;
}
