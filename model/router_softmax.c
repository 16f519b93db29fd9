/* Softmax top-k routing (mixtral, qwen2/3_moe, olmoe): indices by descending logit (ties:
 * lower index first), softmax probabilities over all experts, optionally renormalized over
 * the k chosen. A pruned model's removed experts (live[e] == 0; live NULL: all live) are left
 * out of the softmax and the top-k, as if their router rows were deleted. */
#include "model/fwd.h"

#include <math.h>

void fwd_route_softmax(const moeq_config *c, const float *logits, const float *bias, const int32_t *live,
                       int32_t *idx, float *w)
{
    (void)bias;
    const int64_t E = c->n_experts, K = c->top_k;
    double mx = -INFINITY, sum = 0;
    for (int64_t e = 0; e < E; e++)
        if ((!live || live[e]) && logits[e] > mx) mx = logits[e];
    for (int64_t e = 0; e < E; e++)
        if (!live || live[e]) sum += exp((double)logits[e] - mx);
    for (int64_t s = 0; s < K; s++) {
        int64_t best = -1;
        for (int64_t e = 0; e < E; e++) {
            int taken = live && !live[e];
            for (int64_t t = 0; t < s; t++) taken |= idx[t] == e;
            if (taken) continue;
            if (best < 0 || logits[e] > logits[best]) best = e;
        }
        idx[s] = (int32_t)best;
    }
    double wsum = 0, p[64];
    double *pk = K <= 64 ? p : NULL;
    for (int64_t s = 0; s < K; s++) {
        double ps = exp((double)logits[idx[s]] - mx) / sum;
        if (pk) pk[s] = ps;
        w[s] = (float)ps;
        wsum += ps;
    }
    if (c->norm_topk_prob)
        for (int64_t s = 0; s < K; s++) w[s] = (float)((pk ? pk[s] : (double)w[s]) / wsum);
}
