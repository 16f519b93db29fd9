/* Phi-3.5-MoE routing (sparsemixer in eval mode, modeling_phimoe.py): the first expert is the
 * arg-max logit; its weight is its softmax probability among the logits within a relative
 * 2·jitter of the maximum ((max - s) / max(|s|, max) <= 2·eps); the second is the arg-max of
 * the rest, weighted the same way among the rest. No renormalization. Pruned experts are left
 * out as if their router rows were deleted. */
#include "model/fwd.h"

#include <math.h>

/* The masked-softmax weight of `best` among experts e != skip (ok) with logit within the
 * jitter band of `thr` = logits[best]. */
static float band_weight(const float *s, const int32_t *live, int64_t E, int64_t best, int64_t skip, float eps2)
{
    const float thr = s[best];
    double sum = 0;
    for (int64_t e = 0; e < E; e++) {
        if (e == skip || (live && !live[e])) continue;
        float factor = fabsf(s[e]) > thr ? fabsf(s[e]) : thr;   /* scores.abs().clamp(min=thr) */
        if ((thr - s[e]) / factor > eps2) continue;              /* masked to -inf */
        sum += exp((double)s[e] - (double)thr);
    }
    return (float)(1.0 / sum);   /* exp(thr - thr) / sum */
}

void fwd_route_sparsemixer(const moeq_config *c, const float *logits, const float *bias, const int32_t *live,
                           int32_t *idx, float *w)
{
    (void)bias;
    const int64_t E = c->n_experts;
    const float eps2 = (float)(2 * c->jitter_eps);
    int64_t a = -1, b = -1;
    for (int64_t e = 0; e < E; e++)
        if ((!live || live[e]) && (a < 0 || logits[e] > logits[a])) a = e;
    for (int64_t e = 0; e < E; e++)
        if (e != a && (!live || live[e]) && (b < 0 || logits[e] > logits[b])) b = e;
    idx[0] = (int32_t)a;
    w[0] = band_weight(logits, live, E, a, -1, eps2);
    idx[1] = (int32_t)(b >= 0 ? b : a);
    w[1] = b >= 0 ? band_weight(logits, live, E, b, a, eps2) : 0.0f;
}
