/* Multi-head latent attention (deepseek_v2, deepseek_v3, kimi_k2; DeepseekV3Attention):
 *   q      = q_b(RMSNorm(q_a(h)))  or q_proj(h) without q LoRA      [n, heads, nope + rope]
 *   c      = kv_a(h) = [c_kv | k_pe]                                [n, kv_lora + rope]
 *   kv     = kv_b(RMSNorm(c_kv)) = per head [k_nope | v]            [n, heads, nope + v]
 *   RoPE on q's rope part and on the one shared k_pe (not normed), keys [k_nope | k_pe],
 *   causal softmax with the YaRN-corrected scale, o_proj.
 * The latent norms use eps 1e-6 whatever rms_norm_eps says (DeepseekV3RMSNorm's default). The
 * expanded form is computed (as transformers does on CPU), not the absorbed one. */
#include "model/fwd.h"

#include <string.h>

#define LATENT_EPS 1e-6

void fwd_attn_mla(moeq_runner *r, int64_t layer, int64_t n, const moeq_hooks *hooks)
{
    const moeq_config *c = r->c;
    const moeq_layer_view *L = moeq_model_layer(r->m, layer);
    const int64_t nh = c->heads, dn = c->qk_nope_dim, dr = c->qk_rope_dim, dv = c->v_head_dim;
    const int64_t dqk = dn + dr, R = c->kv_lora_rank, QL = c->q_lora_rank, qd = nh * dqk;
    float *vb = r->vbuf;

    if (QL > 0) {
        fwd_linear(r, &L->q_a, r->h, n, r->lat_q);
        moeq_vec_to_f32(&L->q_a_norm, vb);
        fwd_rmsnorm_rows(r->lat_q, r->lat_q, n, QL, QL, vb, LATENT_EPS);
        if (hooks && hooks->linear_input)
            hooks->linear_input(hooks->user, layer, -1, MOEQ_PROJ_Q_B, r->lat_q, n, QL, NULL, NULL);
        fwd_linear(r, &L->q_b, r->lat_q, n, r->q);
    } else {
        fwd_linear(r, &L->q, r->h, n, r->q);
    }

    fwd_linear(r, &L->kv_a, r->h, n, r->lat_kv);
    /* the normed c_kv, contiguous for kv_b (lat_q is free once q is computed) */
    float *ckv = r->lat_q;
    for (int64_t p = 0; p < n; p++) memcpy(ckv + p * R, r->lat_kv + p * (R + dr), (size_t)R * sizeof(float));
    moeq_vec_to_f32(&L->kv_a_norm, vb);
    fwd_rmsnorm_rows(ckv, ckv, n, R, R, vb, LATENT_EPS);
    if (hooks && hooks->linear_input)
        hooks->linear_input(hooks->user, layer, -1, MOEQ_PROJ_KV_B, ckv, n, R, NULL, NULL);
    fwd_linear(r, &L->kv_b, ckv, n, r->kvb);

    fwd_rope_apply(r, r->q + dn, n, nh, qd, dqk);
    fwd_rope_apply(r, r->lat_kv + R, n, 1, R + dr, 0);
    /* keys [k_nope_h | k_pe] per head */
    for (int64_t p = 0; p < n; p++)
        for (int64_t h = 0; h < nh; h++) {
            float *k = r->k + p * qd + h * dqk;
            memcpy(k, r->kvb + p * nh * (dn + dv) + h * (dn + dv), (size_t)dn * sizeof(float));
            memcpy(k + dn, r->lat_kv + p * (R + dr) + R, (size_t)dr * sizeof(float));
        }
    const int64_t ad = nh * dv;
    fwd_attend(r, n, nh, nh, dqk, dv, r->q, qd, dqk, r->k, qd, dqk, r->kvb + dn, nh * (dn + dv), dn + dv,
               (float)c->attn_scale, r->att, ad);
    if (hooks && hooks->linear_input)
        hooks->linear_input(hooks->user, layer, -1, MOEQ_PROJ_O, r->att, n, ad, NULL, NULL);
    fwd_linear(r, &L->o, r->att, n, r->mlp_out);
}
