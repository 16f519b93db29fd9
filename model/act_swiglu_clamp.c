/* GPT-OSS's expert activation (GptOssExperts): gate clamped above at limit, up to [-limit, limit],
 * out = (up + 1) * gate * sigmoid(alpha * gate), in float32 as transformers computes it. The
 * expert's gate/up biases are added before (forward.c), NaN passes through as torch.clamp's. */
#include "model/fwd.h"

#include <math.h>

void fwd_act_swiglu_clamp(const moeq_config *c, float *g, const float *u, int64_t count)
{
    const float alpha = (float)c->act_alpha, limit = (float)c->act_limit;
    for (int64_t i = 0; i < count; i++) {
        float gi = g[i] > limit ? limit : g[i];
        float ui = u[i] > limit ? limit : u[i] < -limit ? -limit : u[i];
        float glu = gi * (1.0f / (1.0f + expf(-(gi * alpha))));
        g[i] = (ui + 1.0f) * glu;
    }
}
