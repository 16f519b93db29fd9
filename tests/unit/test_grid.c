/* The weighted grid search (quant/grid.c) against brute force: the argmin over its own
 * candidate set recomputed independently, the distance to the best grid over every f16 scale
 * of a fine sweep and every zero, never worse than min/max, and the packed bytes of
 * moeq_rtn_quantize_weighted decoding to the grids it reports. */
#include "harness.h"
#include "moeq_core.h"
#include "moeq_kernels.h"
#include "moeq_quant.h"

#include <stdint.h>
#include <stdlib.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double urand(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

/* Σ d (x − s (clamp(round(x/s) + z) − z))² in float64 with the grid's f16 values. */
static double werr(const double *x, const double *d, int n, int bits, double s, double z)
{
    int maxq = (1 << bits) - 1;
    double e = 0;
    for (int j = 0; j < n; j++) {
        double c = rint(x[j] / s) + z;
        if (c < 0) c = 0;
        if (c > maxq) c = maxq;
        double r = x[j] - (double)(float)(s * (c - z));
        e += (d ? d[j] : 1) * r * r;
    }
    return e;
}

/* The documented candidates, written out again: ratio r, f16 scale of the clipped min/max grid. */
static void cand(const double *x, int n, int bits, int sym, double r, double *s, double *z, uint16_t *s16)
{
    int maxq = (1 << bits) - 1, half = 1 << (bits - 1);
    double mn = x[0], mx = x[0];
    for (int j = 1; j < n; j++) { if (x[j] < mn) mn = x[j]; if (x[j] > mx) mx = x[j]; }
    double amax = fmax(fabs(mn), fabs(mx));
    float sc = sym ? (float)(r * amax / (half - 1)) : (float)((r * mx - r * mn) / maxq);
    *s16 = moeq_f32_to_f16(sc);
    *s = moeq_f16_to_f32(*s16);
    *z = sym ? half : moeq_f16_to_f32(moeq_f32_to_f16(rintf((float)(-r * mn / *s))));
}

static void test_search_is_argmin_of_its_candidates(void)
{
    int bad = 0;
    for (int t = 0; t < 400; t++) {
        int n = 3 + t % 61, bits = 2 + t % 3, sym = (t / 3) % 2, steps = 1 + t % 24;
        if (t % 7 == 0) bits = 8;
        double x[64], d[64];
        for (int j = 0; j < n; j++) {
            x[j] = nrand() * (t % 5 == 0 ? 0.001 : 0.05) + (t % 11 == 0 ? 0.3 : 0);
            d[j] = t % 4 == 0 ? 1 : exp(2 * nrand());
        }
        if (t % 9 == 0) x[t % n] *= 8;   /* an outlier: clipping pays */
        uint16_t s16, z16;
        double got = moeq_grid_search(x, 1, d, n, bits, sym, steps, &s16, &z16);
        double best = INFINITY;
        uint16_t bs = 0;
        for (int k = 0; k < (steps > 1 ? steps : 1); k++) {
            double s, z;
            uint16_t c16;
            cand(x, n, bits, sym, 1.0 - k / (2.0 * steps), &s, &z, &c16);
            double e = werr(x, d, n, bits, s, z);
            if (e < best) { best = e; bs = c16; }
        }
        if (fabs(got - best) > 1e-12 * (best + 1e-30) || s16 != bs) bad++;
        /* min/max (k = 0) never beats it */
        double s0, z0;
        uint16_t c0;
        cand(x, n, bits, sym, 1.0, &s0, &z0, &c0);
        if (got > werr(x, d, n, bits, s0, z0) * (1 + 1e-12)) bad++;
    }
    CHECK_MSG(bad == 0, "%d of 400 groups off the argmin", bad);
}

/* Against the best grid over a dense sweep: f16 scales from 0.2x to 1.2x of the min/max one and
 * every zero in [-maxq, 2 maxq]. The clipping search reaches most of the gain. */
static void test_search_near_brute_force_optimum(void)
{
    double sum_search = 0, sum_best = 0, sum_minmax = 0;
    for (int t = 0; t < 60; t++) {
        int n = 16 + t % 17, bits = 2 + t % 3, sym = 0;
        double x[64], d[64];
        for (int j = 0; j < n; j++) { x[j] = nrand(); d[j] = exp(nrand()); }
        x[t % n] *= 3;
        uint16_t s16, z16;
        double got = moeq_grid_search(x, 1, d, n, bits, sym, 20, &s16, &z16);
        double s0, z0;
        uint16_t c0;
        cand(x, n, bits, sym, 1.0, &s0, &z0, &c0);
        double best = INFINITY;
        int maxq = (1 << bits) - 1;
        for (int k = 0; k <= 400; k++) {
            double s = moeq_f16_to_f32(moeq_f32_to_f16((float)(s0 * (0.2 + k / 400.0))));
            for (int z = -maxq; z <= 2 * maxq; z++) {
                double e = werr(x, d, n, bits, s, z);
                if (e < best) best = e;
            }
        }
        CHECK(got >= best * (1 - 1e-12));
        sum_search += got;
        sum_best += best;
        sum_minmax += werr(x, d, n, bits, s0, z0);
    }
    /* the search closes most of the gap between min/max and the optimum */
    double closed = (sum_minmax - sum_search) / (sum_minmax - sum_best);
    CHECK_MSG(closed > 0.6 && sum_search < 1.35 * sum_best, "search %.4g, optimum %.4g, min/max %.4g (%.0f%% closed)",
              sum_search, sum_best, sum_minmax, 100 * closed);
}

/* The packed bytes decode (reference kernel) to weights whose weighted error per group is the
 * one the search reports; steps 1 is the f16 min/max grid. */
static void test_rtn_weighted_bytes(void)
{
    const int rows = 7, cols = 160;
    float *w = malloc(sizeof(float) * rows * cols), *wq = malloc(sizeof(float) * rows * cols);
    double d[160], x[160];
    for (int i = 0; i < rows * cols; i++) w[i] = (float)(0.02 * nrand());
    for (int j = 0; j < cols; j++) d[j] = exp(nrand());
    const int bitsv[] = {2, 3, 4, 8}, groups[] = {32, 64, 0};
    for (int bi = 0; bi < 4; bi++)
        for (int gi = 0; gi < 3; gi++)
            for (int sym = 0; sym < 2; sym++) {
                int bits = bitsv[bi], g = groups[gi] ? groups[gi] : cols;
                uint64_t so, zo, total = moeq_qmat_bytes(bits, g, sym, rows, cols, &so, &zo);
                uint8_t *raw = malloc(total);
                moeq_error e;
                CHECK(moeq_rtn_quantize_weighted(w, rows, cols, bits, groups[gi], sym, d, 16, raw, &e) == MOEQ_OK);
                moeq_qmat q = { .bits = bits, .group = g, .sym = sym, .rows = rows, .cols = cols, .codes = raw,
                                .scales = (const uint16_t *)(void *)(raw + so),
                                .zeros = sym ? NULL : (const uint16_t *)(void *)(raw + zo) };
                moeq_kernels_ref.dequant(&q, 0, rows, wq);
                double worst = 0;
                for (int r = 0; r < rows; r++)
                    for (int c0 = 0; c0 < cols; c0 += g) {
                        int len = cols - c0 < g ? cols - c0 : g;
                        for (int j = 0; j < len; j++) x[j] = w[r * cols + c0 + j];
                        uint16_t s16, z16;
                        double want = moeq_grid_search(x, 1, d + c0, len, bits, sym, 16, &s16, &z16), got = 0;
                        for (int j = 0; j < len; j++) {
                            double dv = (double)w[r * cols + c0 + j] - wq[r * cols + c0 + j];
                            got += d[c0 + j] * dv * dv;
                        }
                        worst = fmax(worst, fabs(got - want) / (want + 1e-30));
                    }
                CHECK_MSG(worst < 1e-9, "bits %d group %d sym %d: decoded error off by %.3g", bits, g, sym, worst);
                free(raw);
            }
    free(w);
    free(wq);
}

int main(void)
{
    RUN_TEST(test_search_is_argmin_of_its_candidates);
    RUN_TEST(test_search_near_brute_force_optimum);
    RUN_TEST(test_rtn_weighted_bytes);
    HARNESS_EXIT();
}
