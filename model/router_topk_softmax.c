/* GPT-OSS routing (GptOssTopKRouter): the k largest logits (the router linear's bias already
 * added by the MoE block), weights = softmax over those k only. A pruned model's removed
 * experts (live[e] == 0) are never chosen. */
#include "model/fwd.h"

#include <math.h>

void fwd_route_topk_softmax(const moeq_config *c, const float *logits, const float *bias, const int32_t *live,
                            int32_t *idx, float *w)
{
    (void)bias;
    const int64_t E = c->n_experts, K = c->top_k;
    for (int64_t s = 0; s < K; s++) {
        int64_t best = -1;
        for (int64_t e = 0; e < E; e++) {
            int taken = live && !live[e];
            for (int64_t t = 0; t < s; t++) taken |= idx[t] == e;
            if (taken) continue;
            if (best < 0 || logits[e] > logits[best]) best = e;   /* ties: lower index first */
        }
        idx[s] = (int32_t)(best < 0 ? 0 : best);
    }
    double mx = -INFINITY, sum = 0;
    for (int64_t s = 0; s < K; s++)
        if (logits[idx[s]] > mx) mx = logits[idx[s]];
    for (int64_t s = 0; s < K; s++) sum += exp((double)logits[idx[s]] - mx);
    for (int64_t s = 0; s < K; s++) w[s] = (float)(exp((double)logits[idx[s]] - mx) / sum);
}
