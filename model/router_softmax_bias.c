/* ERNIE-4.5-MoE routing (Ernie4_5_MoeTopKRouter): softmax over the experts in float32; the
 * moe_statics correction bias is added for the choice only; the chosen probabilities are
 * divided by max(their sum, moe_norm_min). Pruned experts leave the softmax and the choice. */
#include "model/fwd.h"

#include <math.h>

void fwd_route_softmax_bias(const moeq_config *c, const float *logits, const float *bias,
                            const int32_t *live, int32_t *idx, float *w)
{
    const int64_t E = c->n_experts, K = c->top_k;
    float p[FWD_GROUP_MAX_E], choice[FWD_GROUP_MAX_E];
    uint8_t ok[FWD_GROUP_MAX_E];
    double mx = -INFINITY, sum = 0;
    for (int64_t e = 0; e < E; e++) {
        ok[e] = !live || live[e];
        if (ok[e] && logits[e] > mx) mx = logits[e];
    }
    for (int64_t e = 0; e < E; e++)
        if (ok[e]) sum += exp((double)logits[e] - mx);
    for (int64_t e = 0; e < E; e++) {
        p[e] = ok[e] ? (float)(exp((double)logits[e] - mx) / sum) : 0.0f;
        choice[e] = p[e] + (bias ? bias[e] : 0.0f);
    }
    fwd_topk(choice, ok, E, K, idx);
    float s = 0.0f;
    for (int64_t k = 0; k < K; k++) {
        w[k] = p[idx[k]];
        s += w[k];
    }
    const float den = s > (float)c->renorm_min ? s : (float)c->renorm_min;
    for (int64_t k = 0; k < K; k++) w[k] /= den;
}
