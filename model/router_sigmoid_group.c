/* DeepSeek-V3 routing (deepseek_v3, kimi_k2, glm4_moe, dots1; DeepseekV3TopkRouter): sigmoid
 * scores; the correction bias is added for the choice only; experts are chosen inside the
 * topk_group groups whose two best biased scores sum highest; the weights are the unbiased
 * scores, renormalized when norm_topk_prob (+1e-20), times routed_scaling_factor. A pruned
 * model's removed experts are never chosen and do not count in group scores. */
#include "model/fwd.h"

#include <math.h>

void fwd_route_sigmoid_group(const moeq_config *c, const float *logits, const float *bias,
                             const int32_t *live, int32_t *idx, float *w)
{
    const int64_t E = c->n_experts, K = c->top_k, G = c->n_group > 0 ? c->n_group : 1, per = E / G;
    float sv[FWD_GROUP_MAX_E], cv[FWD_GROUP_MAX_E];
    uint8_t okv[FWD_GROUP_MAX_E];
    for (int64_t e = 0; e < E; e++) {
        sv[e] = (float)(1.0 / (1.0 + exp(-(double)logits[e])));
        cv[e] = sv[e] + (bias ? bias[e] : 0.0f);
        okv[e] = !live || live[e];
    }
    if (G > 1 && c->topk_group < G) {
        float gs[FWD_GROUP_MAX_E];
        uint8_t gok[FWD_GROUP_MAX_E];
        for (int64_t g = 0; g < G; g++) {
            /* sum of the two largest choice scores of the group (torch topk(2).sum) */
            float a = -INFINITY, b = -INFINITY;
            for (int64_t e = g * per; e < (g + 1) * per; e++) {
                if (!okv[e]) continue;
                if (cv[e] > a) { b = a; a = cv[e]; }
                else if (cv[e] > b) b = cv[e];
            }
            gs[g] = a + b;
            gok[g] = 1;
        }
        int32_t gidx[FWD_GROUP_MAX_E];
        fwd_topk(gs, gok, G, c->topk_group, gidx);
        uint8_t keep[FWD_GROUP_MAX_E] = { 0 };
        for (int64_t t = 0; t < c->topk_group; t++) keep[gidx[t]] = 1;
        for (int64_t e = 0; e < E; e++)
            if (!keep[e / per]) okv[e] = 0;
    }
    fwd_topk(cv, okv, E, K, idx);
    float sum = 0.0f;
    for (int64_t k = 0; k < K; k++) {
        w[k] = sv[idx[k]];
        sum += w[k];
    }
    if (c->norm_topk_prob) {
        float den = sum + 1e-20f;
        for (int64_t k = 0; k < K; k++) w[k] /= den;
    }
    const float rsf = (float)c->routed_scaling;
    for (int64_t k = 0; k < K; k++) w[k] *= rsf;
}
