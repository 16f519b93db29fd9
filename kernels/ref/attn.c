/* Reference fused attention (moeq_kernel_set.attend): float64 throughout, two passes per query
 * (the max, then the exponentials and the weighted values), so nothing is rescaled; the truth the
 * fast kernels are tested against (tests/unit/test_kernels_attn.c). */
#include "moeq_kernels.h"

#include <math.h>

static int sees(const moeq_attn_task *t, int64_t i, int64_t j)
{
    return j <= i + t->diag && (!t->mask || t->mask[j * t->ldm + i]);
}

static double score(const moeq_attn_task *t, int64_t i, int64_t j)
{
    const float *q = t->q + i * t->ldq, *k = t->k + j * t->ldk;
    double s = 0;
    for (int64_t d = 0; d < t->dqk; d++) s += (double)q[d] * k[d];
    return (double)t->scale * s;
}

void moeq_ref_attend(const moeq_attn_task *t)
{
    double *o = (double *)(void *)t->scratch;   /* dv doubles: 2 dv floats of the scratch */
    for (int64_t i = 0; i < t->nq; i++) {
        const int64_t nk = i + t->diag + 1 < t->nk ? i + t->diag + 1 : t->nk;
        double m = t->sink;
        for (int64_t j = 0; j < nk; j++)
            if (sees(t, i, j)) m = fmax(m, score(t, i, j));
        double l = t->sink == -INFINITY ? 0.0 : exp((double)t->sink - m);
        for (int64_t d = 0; d < t->dv; d++) o[d] = 0;
        for (int64_t j = 0; j < nk; j++) {
            if (!sees(t, i, j)) continue;
            const double e = exp(score(t, i, j) - m);
            const float *v = t->v + j * t->ldv;
            l += e;
            for (int64_t d = 0; d < t->dv; d++) o[d] += e * v[d];
        }
        float *out = t->out + i * t->ldo;
        /* a NaN or +inf score makes l NaN: the output is NaN, not the 0 of a query that sees nothing */
        for (int64_t d = 0; d < t->dv; d++) out[d] = l > 0 || isnan(l) ? (float)(o[d] / l) : 0.0f;
    }
}
