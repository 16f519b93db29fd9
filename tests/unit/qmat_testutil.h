/* Shared by the kernel tests: a pseudo-random source, RTN-quantized random matrices, and the
 * float32 rounding scale of the int8-activation kernels. */
#ifndef MOEQ_QMAT_TESTUTIL_H
#define MOEQ_QMAT_TESTUTIL_H
#include "moeq_kernels.h"
#include "moeq_quant.h"

#include <math.h>
#include <stdlib.h>

static uint64_t rng = 88172645463325252ull;
static inline float frand(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

typedef struct qm { moeq_qmat q; uint8_t *raw; } qm;

/* an RTN-quantized random matrix (group 0 = per channel); 0 or the status of the quantizer */
static inline int make(qm *m, int bits, int group, int sym, int64_t rows, int64_t cols)
{
    float *w = malloc((size_t)(rows * cols) * sizeof *w);
    for (int64_t i = 0; i < rows * cols; i++) w[i] = frand() * (1 + (float)(i % 7));
    int g = group ? group : (int)cols;
    uint64_t so, zo, n = moeq_qmat_bytes(bits, g, sym, rows, cols, &so, &zo);
    m->raw = malloc((size_t)n);
    moeq_error err;
    int rc = moeq_rtn_quantize(w, rows, cols, bits, group, sym, m->raw, &err);
    free(w);
    m->q = (moeq_qmat){ bits, g, sym, rows, cols, m->raw, (const uint16_t *)(void *)(m->raw + so),
                        sym ? NULL : (const uint16_t *)(void *)(m->raw + zo) };
    return rc;
}

/* sum_c |s| (|q| + |z|) |x_c| for row r (d = the dequantized matrix): the size of the terms an
 * int8-activation kernel adds in float32 (chunk sums and the zero term separately), so two
 * results of the formula may differ by a few float32 roundings of it. */
static inline double x8_terms(const qm *m, const float *d, int64_t r, const float *x)
{
    int64_t C = m->q.cols, ng = moeq_qmat_groups(&m->q);
    double t = 0;
    for (int64_t c = 0; c < C; c++) {
        int64_t g = c / m->q.group;
        double s = moeq_f16_to_f32(m->q.scales[r * ng + g]);
        double z = m->q.zeros ? moeq_f16_to_f32(m->q.zeros[r * ng + g]) : (double)(1 << (m->q.bits - 1));
        t += fabs(s) * (fabs(d[r * C + c] / (s != 0 ? s : 1) + z) + fabs(z)) * fabs(x[c]);
    }
    return t;
}
#endif
