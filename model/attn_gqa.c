/* Grouped-query attention (mixtral, qwen2/3_moe, olmoe, glm4_moe, dots1, phimoe, gpt_oss): q/k/v
 * projections of the normed input, optional q/k/v biases and q/k RMSNorm (per head or over the
 * whole projection), RoPE (rope.c), causal softmax attention (fwd_attend) with gpt_oss's
 * per-head sinks and sliding-window layers when the config has them, o projection (+ bias). */
#include "model/fwd.h"

#include <math.h>

void fwd_attn_gqa(moeq_runner *r, int64_t layer, int64_t n, const moeq_hooks *hooks)
{
    const moeq_config *c = r->c;
    const moeq_layer_view *L = moeq_model_layer(r->m, layer);
    int64_t hd = c->head_dim, qd = r->q_dim, kvd = r->kv_dim;
    float *vb = r->vbuf;

    fwd_linear3(r, &L->q, &L->k, &L->v, r->h, n, r->q, r->k, r->v);
    if (L->q_bias.data) {
        float *bq = vb, *bk = vb + qd, *bv = vb + qd + kvd;
        moeq_vec_to_f32(&L->q_bias, bq);
        moeq_vec_to_f32(&L->k_bias, bk);
        moeq_vec_to_f32(&L->v_bias, bv);
        fwd_add_bias(r->q, n, qd, bq);
        fwd_add_bias(r->k, n, kvd, bk);
        fwd_add_bias(r->v, n, kvd, bv);
    }
    if (c->qk_norm != MOEQ_QK_NORM_NONE) {
        float *qn = vb, *kn = vb + qd;
        moeq_vec_to_f32(&L->q_norm, qn);
        moeq_vec_to_f32(&L->k_norm, kn);
        if (c->qk_norm == MOEQ_QK_NORM_HEAD) {
            /* each head is a row of head_dim values sharing one weight vector */
            fwd_rmsnorm_rows(r->q, r->q, n * c->heads, hd, hd, qn, c->rms_eps);
            fwd_rmsnorm_rows(r->k, r->k, n * c->kv_heads, hd, hd, kn, c->rms_eps);
        } else {
            fwd_rmsnorm_rows(r->q, r->q, n, qd, qd, qn, c->rms_eps);
            fwd_rmsnorm_rows(r->k, r->k, n, kvd, kvd, kn, c->rms_eps);
        }
    }
    fwd_rope_apply(r, r->q, n, c->heads, qd, hd);
    fwd_rope_apply(r, r->k, n, c->kv_heads, kvd, hd);

    if (L->sinks.data) {
        moeq_vec_to_f32(&L->sinks, r->sinkbuf);
        r->att_sinks = r->sinkbuf;
    }
    r->att_window = c->layer_sliding[layer] ? c->sliding_window : 0;
    fwd_attend(r, n, c->heads, c->kv_heads, hd, hd, r->q, qd, hd, r->k, kvd, hd, r->v, kvd, hd,
               (float)c->attn_scale, r->att, qd);
    r->att_sinks = NULL;
    r->att_window = 0;
    if (hooks && hooks->linear_input)
        hooks->linear_input(hooks->user, layer, -1, MOEQ_PROJ_O, r->att, n, qd, NULL, NULL);
    fwd_linear(r, &L->o, r->att, n, r->mlp_out);
    if (L->o_bias.data) {
        moeq_vec_to_f32(&L->o_bias, vb);
        fwd_add_bias(r->mlp_out, n, c->hidden, vb);
    }
}
