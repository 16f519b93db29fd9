/* Rotary position embeddings: the cos/sin tables of each RoPE type and their application.
 * Tables follow transformers (modeling_rope_utils.py) in float32: inverse frequencies over
 * rope_dim channels, angle = position * inv_freq rounded to float, cos/sin of that angle times
 * the type's attention_factor (YaRN; 1 otherwise). */
#include "model/fwd.h"

#include <math.h>

/* YaRN (_compute_yarn_parameters): frequencies blended between interpolated (/factor) and
 * extrapolated by a linear ramp over the correction range of beta_fast..beta_slow rotations. */
static void yarn_inv_freq(const moeq_config *c, float *inv, int64_t half)
{
    const double d = (double)c->rope_dim, base = c->rope_theta, L = c->rope_orig_max;
    double low = d * log(L / (c->rope_beta_fast * 2 * M_PI)) / (2 * log(base));
    double high = d * log(L / (c->rope_beta_slow * 2 * M_PI)) / (2 * log(base));
    if (c->rope_truncate) {
        low = floor(low);
        high = ceil(high);
    }
    if (low < 0) low = 0;
    if (high > d - 1) high = d - 1;
    if (low == high) high += 0.001;   /* transformers: prevents a division by zero */
    for (int64_t i = 0; i < half; i++) {
        float pos = powf((float)base, (float)(2 * i) / (float)c->rope_dim);
        float extrap = 1.0f / pos, interp = 1.0f / ((float)c->rope_factor * pos);
        float ramp = ((float)i - (float)low) / (float)(high - low);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        float ext = 1.0f - ramp;   /* inv_freq_extrapolation_factor */
        inv[i] = interp * (1.0f - ext) + extrap * ext;
    }
}

moeq_status fwd_rope_tables(const moeq_config *c, int64_t n, float *cos_t, float *sin_t, moeq_error *err)
{
    int64_t half = c->rope_dim / 2;
    float inv[4096];
    if (half > (int64_t)(sizeof inv / sizeof inv[0]))
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "RoPE over %lld channels (at most 8192)",
                         (long long)c->rope_dim);
    if (c->rope_type == MOEQ_ROPE_YARN) {
        yarn_inv_freq(c, inv, half);
    } else if (c->rope_type == MOEQ_ROPE_LONGROPE) {
        /* PhimoeRotaryEmbedding calls the longrope init without seq_len: the short factors at
         * every length (transformers 5.17); only the mscale follows the window (rope_mscale) */
        for (int64_t i = 0; i < half; i++)
            inv[i] = 1.0f / (c->rope_short[i] * powf((float)c->rope_theta, (float)(2 * i) / (float)c->rope_dim));
    } else {
        for (int64_t i = 0; i < half; i++) {
            float expo = (float)(2 * i) / (float)c->rope_dim;
            inv[i] = (float)(1.0 / pow(c->rope_theta, (double)expo));
        }
    }
    const float af = c->rope_type == MOEQ_ROPE_LONGROPE ? 1.0f : (float)c->rope_attn_factor;
    for (int64_t i = 0; i < half; i++)
        for (int64_t p = 0; p < n; p++) {
            float ang = (float)p * inv[i];
            float cs = (float)cos((double)ang), sn = (float)sin((double)ang);
            if (af != 1.0f) {
                cs *= af;
                sn *= af;
            }
            cos_t[p * half + i] = cs;
            sin_t[p * half + i] = sn;
        }
    return MOEQ_OK;
}

/* longrope's cos/sin multiplier: long_mscale when the window (its largest position + 1) is
 * longer than original_max_position_embeddings, else short_mscale; 1 for other types, whose
 * factor is in the tables. */
static float rope_mscale(const moeq_runner *r, int64_t n)
{
    const moeq_config *c = r->c;
    if (c->rope_type != MOEQ_ROPE_LONGROPE) return 1.0f;
    int64_t seq = n;
    if (r->pk) {
        seq = 0;
        for (int64_t p = 0; p < n; p++)
            if (r->pk->pos[p] + 1 > seq) seq = r->pk->pos[p] + 1;
    }
    return (float)((double)seq > c->rope_orig_max ? c->rope_long_mscale : c->rope_short_mscale);
}

void fwd_rope_apply(const moeq_runner *r, float *x, int64_t n, int64_t heads, int64_t row_stride,
                    int64_t head_stride)
{
    const int64_t half = r->c->rope_dim / 2;
    const int inter = r->c->rope_interleave;
    const float ms = rope_mscale(r, n);

#pragma omp parallel for schedule(static) if (n * heads * half >= PAR_MIN_ELEMS)
    for (int64_t p = 0; p < n; p++) {
        int64_t pp = r->pk ? r->pk->pos[p] : p;   /* packed sequences restart positions */
        const float *cs = r->rope_cos + pp * half, *sn = r->rope_sin + pp * half;
        float cm[MOEQ_ROPE_MAX_FACTORS], sm[MOEQ_ROPE_MAX_FACTORS];
        if (ms != 1.0f) {   /* cos * mscale rounded to float first, as transformers does */
            for (int64_t i = 0; i < half; i++) {
                cm[i] = cs[i] * ms;
                sm[i] = sn[i] * ms;
            }
            cs = cm;
            sn = sm;
        }
        for (int64_t h = 0; h < heads; h++) {
            float *v = x + p * row_stride + h * head_stride;
            if (inter) {
                /* DeepSeek: pairs (2i, 2i+1); transformers returns them de-interleaved, the
                 * same permutation for q and k, so dot products are unchanged */
                for (int64_t i = 0; i < half; i++) {
                    float a = v[2 * i], b = v[2 * i + 1];
                    v[2 * i] = a * cs[i] - b * sn[i];
                    v[2 * i + 1] = b * cs[i] + a * sn[i];
                }
            } else {
                for (int64_t i = 0; i < half; i++) {   /* rotate_half */
                    float a = v[i], b = v[i + half];
                    v[i] = a * cs[i] - b * sn[i];
                    v[i + half] = b * cs[i] + a * sn[i];
                }
            }
        }
    }
}
