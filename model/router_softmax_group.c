/* DeepSeek-V2 routing (DeepseekV2TopkRouter): softmax over the experts; "greedy" takes the
 * top-k probabilities, "group_limited_greedy" first keeps the topk_group groups with the
 * highest single probability and zeroes the others; weights are the probabilities times
 * routed_scaling_factor, never renormalized. Pruned experts leave the softmax and the choice. */
#include "model/fwd.h"

#include <math.h>

void fwd_route_softmax_group(const moeq_config *c, const float *logits, const float *bias,
                             const int32_t *live, int32_t *idx, float *w)
{
    (void)bias;
    const int64_t E = c->n_experts, K = c->top_k, G = c->n_group > 0 ? c->n_group : 1, per = E / G;
    float p[FWD_GROUP_MAX_E];
    uint8_t ok[FWD_GROUP_MAX_E];
    double mx = -INFINITY, sum = 0;
    for (int64_t e = 0; e < E; e++) {
        ok[e] = !live || live[e];
        if (ok[e] && logits[e] > mx) mx = logits[e];
    }
    for (int64_t e = 0; e < E; e++)
        if (ok[e]) sum += exp((double)logits[e] - mx);
    for (int64_t e = 0; e < E; e++) p[e] = ok[e] ? (float)(exp((double)logits[e] - mx) / sum) : 0.0f;
    if (c->group_limited && G > 1 && c->topk_group < G) {
        float gs[FWD_GROUP_MAX_E];
        uint8_t gok[FWD_GROUP_MAX_E];
        for (int64_t g = 0; g < G; g++) {
            float m = -INFINITY;
            for (int64_t e = g * per; e < (g + 1) * per; e++)
                if (ok[e] && p[e] > m) m = p[e];
            gs[g] = m;
            gok[g] = 1;
        }
        int32_t gidx[FWD_GROUP_MAX_E];
        fwd_topk(gs, gok, G, c->topk_group, gidx);
        uint8_t keep[FWD_GROUP_MAX_E] = { 0 };
        for (int64_t t = 0; t < c->topk_group; t++) keep[gidx[t]] = 1;
        for (int64_t e = 0; e < E; e++)
            if (!keep[e / per]) p[e] = 0.0f;   /* masked_fill(0.0): still choosable, weight 0 */
    }
    fwd_topk(p, ok, E, K, idx);
    const float rsf = (float)c->routed_scaling;
    for (int64_t k = 0; k < K; k++) w[k] = p[idx[k]] * rsf;
}
