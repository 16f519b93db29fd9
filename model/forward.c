/* The float32 forward pass of a MoE decoder over one causal window.
 * Weights stay in the mapping (bf16/f16/f32) and are multiplied as stored by the float-weight
 * kernels (moeq_kernel_set.wgemm: widened in registers, never a whole matrix; docs/KERNELS.md).
 * Packed matrices (int codecs of a .moeq file) never widen either: the dequantizing kernels
 * multiply them directly, in fixed blocks of rows. Work is split over OpenMP threads.
 * Results do not depend on the thread count: every output element is computed by one
 * thread in a fixed order, and expert outputs are summed per token in top-k slot order. */
#include "model/fwd.h"
#include "moeq_ggml.h"
#include "moeq_tdict.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define ATT_QBLOCK 64       /* queries per attention task: scores are [ATT_QBLOCK, n], never [n, n] */

/* Tasks of a float-weight matmul: blocks of WTOK_BLOCK tokens x WROW_BLOCK rows. wgemm gives
 * a (row, token) the same bits wherever its row falls and for any token block of 16 or more,
 * so the fixed token blocks keep results independent of the thread count, and the rows only
 * balance the threads. A task packs its rows' panels once for all its tokens: large token
 * blocks (a window of 512 is one) pack each weight once. */
#define WROW_BLOCK 64
#define WTOK_BLOCK 512

enum { PART_NONE = -1, PART_EMBED = -2, PART_HEAD = -3 };   /* runner->resident, besides layers */

/* Workspace allocation: counts the bytes held and remembers a failure for one check. */
static void *ws_alloc(moeq_runner *r, size_t n, size_t size)
{
    if (n == 0) n = 1;
    void *p = calloc(n, size);
    if (!p) r->alloc_failed = 1;
    else r->bytes += (uint64_t)n * size;
    return p;
}

void *fwd_alloc(moeq_runner *r, size_t n, size_t size) { return ws_alloc(r, n, size); }

uint64_t moeq_runner_bytes(const moeq_runner *r) { return r ? r->bytes : 0; }

double moeq_forward_flops(const moeq_config *c, int64_t n)
{
    double N = (double)n, H = (double)c->hidden, qd = (double)(c->heads * c->head_dim);
    double kvd = (double)(c->kv_heads * c->head_dim), f = 0;
    for (int64_t l = 0; l < c->layers; l++) {
        f += 2 * N * H * (qd + 2 * kvd) + 2 * N * qd * H;            /* q, k, v, o */
        f += (double)c->heads * 2 * (2 * N * N * (double)c->head_dim); /* QKᵀ and PV */
        if (c->layer_is_moe[l]) {
            f += 2 * N * H * (double)c->n_experts;                       /* router */
            f += N * (double)c->top_k * 6 * H * (double)c->moe_inter;    /* routed experts */
            f += 6 * N * H * (double)c->shared_inter;                    /* shared expert */
        } else {
            f += 6 * N * H * (double)c->dense_inter;
        }
    }
    return f + 2 * N * H * (double)c->vocab;                             /* LM head */
}

void moeq_runner_free(moeq_runner *r)
{
    if (!r) return;
    float *bufs[] = {r->x, r->h, r->q, r->k, r->v, r->att, r->mlp_out, r->ffn_g, r->ffn_u,
                     r->gate_scalar, r->router_logits, r->topk_w, r->slot_out, r->rope_cos,
                     r->rope_sin, r->kc, r->vt, r->w_sg, r->vbuf, r->rbias, r->lat_q, r->lat_kv, r->kvb,
                     r->lm_bias, r->f8buf, r->sinkbuf};
    free(r->wx);
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(r->topk_idx);
    free(r->e_count);
    free(r->e_order);
    free(r->e_rows);
    free(r->e_slot);
    if (r->ts) {
        for (int t = 0; t < r->nthreads; t++) {
            thread_scratch *s = &r->ts[t];
            free(s->xe); free(s->ge); free(s->ue);
            free(s->ye); free(s->we); free(s->scores); free(s->amask); free(s->lm); free(s->f8); free(s->eb); free(s->wx);
        }
        free(r->ts);
    }
    free(r);
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

moeq_status moeq_runner_create(const moeq_model *m, int64_t max_tokens, int threads,
                               moeq_runner **out, moeq_error *err)
{
    *out = NULL;
    const moeq_config *c = moeq_model_config(m);
    if (max_tokens <= 0 || max_tokens > (1 << 20))
        return moeq_fail(err, MOEQ_ERR_MISUSE, "window of %lld tokens is outside 1..1048576",
                         (long long)max_tokens);
    if (c->rope_dim % 2 || c->rope_dim <= 0 || c->rope_dim > c->head_dim)
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: RoPE over %lld channels of %lld; it needs an even "
                         "count", moeq_model_path(m), (long long)c->rope_dim, (long long)c->head_dim);
    moeq_runner *r = calloc(1, sizeof *r);
    if (!r) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory creating the forward workspace");

    r->m = m;
    r->c = c;
    r->max_n = max_tokens;
    r->release = moeq_model_releases(m);
    r->resident = PART_NONE;
    r->nthreads = threads > 0 ? threads : omp_get_max_threads();
    int64_t n = max_tokens, H = c->hidden, E = c->n_experts > 0 ? c->n_experts : 1;
    int64_t K = c->top_k > 0 ? c->top_k : 1;
    r->q_dim = c->heads * c->head_dim;
    r->kv_dim = c->kv_heads * c->head_dim;
    r->v_dim = c->kv_heads * c->v_head_dim;
    r->att_dim = c->heads * c->v_head_dim;
    r->expert_inter_max = c->moe_inter;
    r->mlp_inter_max = max64(c->dense_inter, c->shared_inter);
    int64_t I = r->expert_inter_max, F = r->mlp_inter_max;
    r->x = ws_alloc(r, (size_t)(n * H), sizeof(float));
    r->h = ws_alloc(r, (size_t)(n * H), sizeof(float));
    r->mlp_out = ws_alloc(r, (size_t)(n * H), sizeof(float));
    r->q = ws_alloc(r, (size_t)(n * r->q_dim), sizeof(float));
    r->att = ws_alloc(r, (size_t)(n * max64(r->q_dim, r->att_dim)), sizeof(float));
    r->k = ws_alloc(r, (size_t)(n * r->kv_dim), sizeof(float));
    r->v = ws_alloc(r, (size_t)(n * r->v_dim), sizeof(float));
    r->ffn_g = ws_alloc(r, (size_t)(n * F), sizeof(float));
    r->ffn_u = ws_alloc(r, (size_t)(n * F), sizeof(float));
    r->gate_scalar = ws_alloc(r, (size_t)n, sizeof(float));
    r->router_logits = ws_alloc(r, (size_t)(n * E), sizeof(float));
    r->topk_idx = ws_alloc(r, (size_t)(n * K), sizeof(int32_t));
    r->topk_w = ws_alloc(r, (size_t)(n * K), sizeof(float));
    r->slot_out = ws_alloc(r, (size_t)(n * K * H), sizeof(float));
    r->e_count = ws_alloc(r, (size_t)E, sizeof(int64_t));
    r->e_order = ws_alloc(r, (size_t)E, sizeof(int32_t));
    r->e_rows = ws_alloc(r, (size_t)(E * n), sizeof(int32_t));
    r->e_slot = ws_alloc(r, (size_t)(E * n), sizeof(int32_t));
    r->rope_cos = ws_alloc(r, (size_t)(n * c->rope_dim / 2), sizeof(float));
    r->rope_sin = ws_alloc(r, (size_t)(n * c->rope_dim / 2), sizeof(float));
    r->w_sg = ws_alloc(r, (size_t)H, sizeof(float));
    r->kc = ws_alloc(r, (size_t)(n * r->kv_dim), sizeof(float));
    r->vt = ws_alloc(r, (size_t)(n * r->v_dim), sizeof(float));
    /* norms and their biases (2H), q/k norm (q_dim + kv_dim), biases (q_dim + 2 kv_dim), final
     * norm H, MLA latent norms */
    r->vbuf = ws_alloc(r, (size_t)(3 * H + 2 * r->q_dim + 3 * r->kv_dim + c->q_lora_rank + c->kv_lora_rank),
                       sizeof(float));
    r->rbias = ws_alloc(r, (size_t)E, sizeof(float));
    if (c->lm_head_bias) r->lm_bias = ws_alloc(r, (size_t)c->vocab, sizeof(float));
    if (c->attn == MOEQ_ATTN_MLA) {
        int64_t QL = c->q_lora_rank, R = c->kv_lora_rank, dr = c->qk_rope_dim;
        r->lat_q = ws_alloc(r, (size_t)(n * max64(QL, R)), sizeof(float));
        r->lat_kv = ws_alloc(r, (size_t)(n * (R + dr)), sizeof(float));
        r->kvb = ws_alloc(r, (size_t)(n * c->heads * (c->qk_nope_dim + c->v_head_dim)), sizeof(float));
    }
    /* FP8 sources: the kernels take F32/F16/BF16 weights, so an F8 matrix is widened per use
     * into a buffer of the largest layer matrix (and per thread, of the largest expert matrix) */
    if (c->fp8) {
        int64_t f8_layer = 0;
        int64_t dims[] = { r->q_dim * H, max64(c->q_lora_rank, 1) * max64(H, r->q_dim),
                           (c->kv_lora_rank + c->qk_rope_dim) * H,
                           c->heads * (c->qk_nope_dim + c->v_head_dim) * max64(c->kv_lora_rank, 1),
                           H * max64(r->q_dim, r->att_dim), F * H, E * H };
        for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) f8_layer = max64(f8_layer, dims[i]);
        r->f8buf = ws_alloc(r, (size_t)f8_layer, sizeof(float));
    }
    if (c->attn_sinks) r->sinkbuf = ws_alloc(r, (size_t)c->heads, sizeof(float));
    /* experts the kernels cannot take as stored (FP8, MXFP4, gpt_oss's transposed layout) are
     * widened one at a time per thread */
    const int widen_experts = c->fp8 || c->mxfp4 || c->expert_layout == MOEQ_EXPERTS_GPTOSS;
    /* activations prepared once per matmul token block / LM head / expert gate+up (kernel sets
     * with wx_prep): blocks of WTOK_BLOCK tokens at wx_stride bytes */
    const moeq_kernel_set *ks = moeq_kernels();
    if (ks->wx_bytes) {
        int64_t kmax = max64(max64(H, max64(r->q_dim, r->att_dim)), max64(max64(F, I), max64(c->q_lora_rank, c->kv_lora_rank)));
        r->wx_stride = ks->wx_bytes(n < WTOK_BLOCK ? n : WTOK_BLOCK, kmax);
        if (r->wx_stride) r->wx = ws_alloc(r, (size_t)((n + WTOK_BLOCK - 1) / WTOK_BLOCK) * r->wx_stride, 1);
    }
    r->ts = ws_alloc(r, (size_t)r->nthreads, sizeof(thread_scratch));
    for (int t = 0; !r->alloc_failed && t < r->nthreads; t++) {
        thread_scratch *s = &r->ts[t];
        s->xe = ws_alloc(r, (size_t)(n * H), sizeof(float));
        s->ge = ws_alloc(r, (size_t)(n * I), sizeof(float));
        s->ue = ws_alloc(r, (size_t)(n * I), sizeof(float));
        s->ye = ws_alloc(r, (size_t)(n * H), sizeof(float));
        s->we = ws_alloc(r, (size_t)n, sizeof(float));
        /* the attention kernel's scratch and a query block's mask bytes */
        const int64_t hd = max64(c->head_dim, c->v_head_dim);
        s->scores = ws_alloc(r, MOEQ_ATTN_SCRATCH(hd, hd), sizeof(float));
        s->amask = ws_alloc(r, (size_t)(ATT_QBLOCK * n), 1);
        s->lm = ws_alloc(r, (size_t)(LM_HEAD_CHUNK * H), sizeof(float));
        if (widen_experts) s->f8 = ws_alloc(r, (size_t)(I * H), sizeof(float));
        if (c->expert_bias) s->eb = ws_alloc(r, (size_t)(2 * I + H), sizeof(float));
        if (ks->wx_bytes && ks->wx_bytes(n, H)) s->wx = ws_alloc(r, ks->wx_bytes(n, H), 1);
    }
    if (r->alloc_failed) {
        moeq_runner_free(r);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory creating the forward workspace for "
                         "%lld tokens", (long long)max_tokens);
    }
    moeq_status st = fwd_rope_tables(c, n, r->rope_cos, r->rope_sin, err);
    if (st != MOEQ_OK) {
        moeq_runner_free(r);
        return st;
    }
    *out = r;
    return MOEQ_OK;
}


/* Tasks of a packed matmul: blocks of QTOK_BLOCK tokens x QROW_BLOCK rows, fixed sizes, so
 * results ignore the thread count. A task prepares (quantizes) its tokens' activations once
 * and reads its rows' codes once: 256 rows amortize the activations (64 left the int8 GEMM
 * spending a fifth of its time re-quantizing the same tokens), 128 tokens the codes. */
#define QROW_BLOCK 256
#define QTOK_BLOCK 128

/* Y[n, N] = X[n, K] · Wᵀ for a packed W [N, K], split over threads. */
static void par_qmatmul(const float *X, int64_t n, int64_t K, const moeq_qmat *q, float *Y)
{
    const moeq_kernel_set *ks = moeq_kernels();
    if (n == 1) {   /* one token: a row range per thread, x prepared once per thread */
#pragma omp parallel
        moeq_qmat_gemv_par(ks, q, X, Y);
        return;
    }
    int64_t N = q->rows, nrb = (N + QROW_BLOCK - 1) / QROW_BLOCK, ntb = (n + QTOK_BLOCK - 1) / QTOK_BLOCK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t b = 0; b < nrb * ntb; b++) {
        int64_t r0 = b % nrb * QROW_BLOCK, r1 = r0 + QROW_BLOCK < N ? r0 + QROW_BLOCK : N;
        int64_t t0 = b / nrb * QTOK_BLOCK, t1 = t0 + QTOK_BLOCK < n ? t0 + QTOK_BLOCK : n;
        ks->gemm(q, X + t0 * K, t1 - t0, K, r0, r1, Y + t0 * N + r0, N);
    }
}

/* The kernels' view of an unpacked weight as stored (the view admits F32, F16, BF16). */
static moeq_wmat wmat_of(const moeq_mat *m)
{
    moeq_wmat w = {m->dtype == MOEQ_DT_BF16 ? MOEQ_W_BF16 : m->dtype == MOEQ_DT_F16 ? MOEQ_W_F16 : MOEQ_W_F32,
                   m->rows, m->cols, m->data, 0};
    return w;
}

/* Whether the activations of a bf16 matmul of n tokens x K get prepared once (wx_prep) for its
 * row blocks: the set prepares some and the runner's buffer holds them. */
static int wx_on(const moeq_runner *r, const moeq_kernel_set *ks, const moeq_wmat *w, int64_t n, int64_t K)
{
    return r->wx && w->type == MOEQ_W_BF16 && ks->wx_bytes(n < WTOK_BLOCK ? n : WTOK_BLOCK, K) &&
           ks->wx_bytes(n < WTOK_BLOCK ? n : WTOK_BLOCK, K) <= r->wx_stride;
}

/* Y[n, N] = X[n, K] · Wᵀ for a float W [N, K] as stored (no widened copy), split over threads.
 * With prepared activations, one region: the token vectors are prepared in parallel, then the
 * (row block, token block) tasks read them (bit for bit what wgemm does alone). nm matrices of
 * one K over the same X (attention's q, k and v; nm <= 3) share the preparation and the region. */
/* Task b of par_wmatmul_n: its matrix (returned), rows [r0, r1) and tokens [t0, t1); the
 * matrices' (row block, token block) tasks one after the other */
static int wtask(int64_t b, const int64_t *nrb, int64_t ntb, const moeq_wmat *w, int64_t n, int64_t *r0, int64_t *r1,
                 int64_t *t0, int64_t *t1)
{
    int m = 0;
    while (b >= nrb[m] * ntb) b -= nrb[m++] * ntb;
    const int64_t N = w[m].rows;
    *r0 = b % nrb[m] * WROW_BLOCK;
    *r1 = *r0 + WROW_BLOCK < N ? *r0 + WROW_BLOCK : N;
    *t0 = b / nrb[m] * WTOK_BLOCK;
    *t1 = *t0 + WTOK_BLOCK < n ? *t0 + WTOK_BLOCK : n;
    return m;
}

static void par_wmatmul_n(moeq_runner *r, const moeq_mat *const *W, int nm, const float *X, int64_t n,
                          float *const *Y)
{
    const moeq_kernel_set *ks = moeq_kernels();
    moeq_wmat w[3];
    int64_t nrb[3], tasks = 0, ntb = (n + WTOK_BLOCK - 1) / WTOK_BLOCK;
    for (int m = 0; m < nm; m++) {
        w[m] = wmat_of(W[m]);
        nrb[m] = (w[m].rows + WROW_BLOCK - 1) / WROW_BLOCK;
        tasks += nrb[m] * ntb;
    }
    const int64_t K = w[0].cols;
    if (!wx_on(r, ks, &w[0], n, K)) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(r->nthreads) if (tasks > 1)
        for (int64_t b = 0; b < tasks; b++) {
            int64_t r0, r1, t0, t1;
            const int m = wtask(b, nrb, ntb, w, n, &r0, &r1, &t0, &t1);
            ks->wgemm(&w[m], X + t0 * K, t1 - t0, K, r0, r1, Y[m] + t0 * w[m].rows + r0, w[m].rows);
        }
        return;
    }
    const int64_t vpb = WTOK_BLOCK / 16, nv = ntb * vpb;   /* token vectors: vpb per block */
    unsigned char *buf = r->wx;
    const size_t stride = r->wx_stride;
#pragma omp parallel num_threads(r->nthreads) if (tasks > 1)
    {
#pragma omp for schedule(static)
        for (int64_t v = 0; v < nv; v++) {
            int64_t tb = v / vpb, t0 = tb * WTOK_BLOCK, nb = t0 + WTOK_BLOCK < n ? WTOK_BLOCK : n - t0;
            int64_t vi = v % vpb;
            if (vi * 16 < nb) ks->wx_prep(X + t0 * K, nb, K, K, vi, vi + 1, buf + (size_t)tb * stride);
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < tasks; b++) {
            int64_t r0, r1, t0, t1;
            const int m = wtask(b, nrb, ntb, w, n, &r0, &r1, &t0, &t1);
            ks->wgemm_wx(&w[m], buf + (size_t)(t0 / WTOK_BLOCK) * stride, X + t0 * K, t1 - t0, K, r0, r1,
                         Y[m] + t0 * w[m].rows + r0, w[m].rows);
        }
    }
}

static void par_wmatmul(moeq_runner *r, const moeq_mat *W, const float *X, int64_t n, float *Y)
{
    par_wmatmul_n(r, &W, 1, X, n, &Y);
}

/* A matrix the kernels cannot take as stored (moeq_mat_widens: FP8 blocks, MXFP4, strided)
 * widened to float32 into buf (rows in parallel when par): the kernels' float view of it. */
static moeq_mat widen_f8(const moeq_mat *W, float *buf, int par)
{
    const int64_t rows = W->rows, nb = (rows + 63) / 64;
#pragma omp parallel for schedule(static) if (par && rows * W->cols >= PAR_MIN_ELEMS)
    for (int64_t b = 0; b < nb; b++) {
        int64_t r0 = b * 64, r1 = r0 + 64 < rows ? r0 + 64 : rows;
        moeq_mat_to_f32(W, r0, r1, buf + r0 * W->cols);
    }
    moeq_mat v = *W;
    v.dtype = MOEQ_DT_F32;
    v.data = buf;
    v.scale = NULL;
    v.mx_scales = NULL;
    v.rstep = v.cstep = 0;
    return v;
}

/* One expert product Y[n, N] = X[n, K] · Wᵀ in the calling thread: a GGUF block type (each of an
 * expert's matrices may have its own) through its kernels, else the float weights as stored. */
static void expert_mm(const moeq_kernel_set *ks, const moeq_mat *m, const moeq_wmat *w, const float *X, int64_t n,
                      int64_t K, int64_t N, float *Y)
{
    /* an int-packed matrix beside another codec in one expert (a plan mixes them) */
    if (m->q) ks->gemm(m->q, X, n, K, 0, N, Y, N);
    else if (m->gtype == MOEQ_TDICT_GTYPE) moeq_tdict_gemm(m->data, X, n, K, 0, N, Y, N);
    else if (m->gtype) moeq_ggml_gemm((moeq_ggml_type)m->gtype, m->data, N, K, X, n, Y);
    else ks->wgemm(w, X, n, K, 0, N, Y, N);
}

/* A linear layer: packed or float weights, both through the kernels as stored. */
static void linear(moeq_runner *r, const moeq_mat *W, const float *X, int64_t n, float *Y)
{
    if (W->q) {
        par_qmatmul(X, n, W->cols, W->q, Y);
        return;
    }
    if (moeq_mat_widens(W) && r->f8buf) {
        moeq_mat v = widen_f8(W, r->f8buf, 1);
        par_wmatmul(r, &v, X, n, Y);
        return;
    }
    if (W->gtype == MOEQ_TDICT_GTYPE) {   /* t1d: fixed row blocks over the threads */
        moeq_tdict_gemm_par(W->data, X, n, W->cols, Y, W->rows);
        return;
    }
    if (W->gtype) {   /* a GGUF block type: its kernels (moeq_ggml.h) split the rows over threads */
        moeq_ggml_gemm((moeq_ggml_type)W->gtype, W->data, W->rows, W->cols, X, n, Y);
        return;
    }
    par_wmatmul(r, W, X, n, Y);
}

static inline void rms_row(const float *xi, float *yi, int64_t dim, const float *w, double eps)
{
    /* four partial sums: one chain of float64 adds was latency-bound (5% of an eval) */
    double s4[4] = { 0, 0, 0, 0 };
    int64_t j = 0;
    /* omp simd: vector lanes for the chains and the scaling (the same operations per
     * element, so the same bits; the scalar loops were 5% of an AMX eval) */
    for (; j + 4 <= dim; j += 4) {
#pragma omp simd
        for (int k = 0; k < 4; k++) s4[k] += (double)xi[j + k] * xi[j + k];
    }
    for (; j < dim; j++) s4[0] += (double)xi[j] * xi[j];
    const double ss = (s4[0] + s4[1]) + (s4[2] + s4[3]);
    float inv = (float)(1.0 / sqrt(ss / (double)dim + eps));
#pragma omp simd
    for (j = 0; j < dim; j++) yi[j] = w[j] * (xi[j] * inv);
}

static void rmsnorm_rows(const float *x, float *y, int64_t n, int64_t dim, int64_t stride,
                         const float *w, double eps)
{
#pragma omp parallel for schedule(static) if (n * dim >= PAR_MIN_ELEMS)
    for (int64_t i = 0; i < n; i++) rms_row(x + i * stride, y + i * stride, dim, w, eps);
}

/* x += add (the residual), row by row, then y = rmsnorm(x): one pass and no serial add */
static void add_rmsnorm_rows(float *x, const float *add, float *y, int64_t n, int64_t dim, const float *w,
                             double eps)
{
#pragma omp parallel for schedule(static) if (n * dim >= PAR_MIN_ELEMS)
    for (int64_t i = 0; i < n; i++) {
        float *xi = x + i * dim;
        const float *ai = add + i * dim;
#pragma omp simd
        for (int64_t j = 0; j < dim; j++) xi[j] += ai[j];
        rms_row(xi, y + i * dim, dim, w, eps);
    }
}

static void swiglu_inplace(float *g, const float *u, int64_t count) { moeq_kernels()->swiglu(g, u, count); }

static void add_bias(float *x, int64_t n, int64_t dim, const float *b)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < dim; j++) x[i * dim + j] += b[j];
}

/* Causal softmax attention of every head per task (head, block of ATT_QBLOCK queries) over the
 * keys the block can see, by the set's fused kernel (attend: online softmax over key blocks,
 * docs/KERNELS.md "Attention"; no score matrix is held). Tasks have fixed bounds, so results
 * ignore the thread count. The mask is one predicate (visible) so that a variant's rule
 * (segments, sliding windows) replaces it in one place; the kernel gets it as bytes. */
static inline int visible(const moeq_packing *pk, int64_t window, int64_t i, int64_t j)
{
    /* a sliding window (gpt_oss's sliding layers) counts positions: within a packed sequence
     * those of the tokens, which are consecutive along each segment and its context */
    if (window > 0 && (pk ? (int64_t)pk->pos[i] - pk->pos[j] : i - j) >= window) return 0;
    /* a packed sequence (moeq_forward_packed): j <= i of i's own segment or of the one it sees */
    return j <= i && (!pk || pk->seg[j] == pk->seg[i] || pk->seg[j] == pk->see[i]);
}

/* First token of the independent block (a task of a packed pass) holding token i: keys before it
 * are never visible, so a query block's scores start there (a pass costs the sum of its blocks'
 * squares, not the square of the pass). */
static int64_t block_start(const moeq_packing *pk, int64_t i)
{
    if (!pk || !pk->units || pk->nunits <= 1) return 0;
    int64_t lo = 0, hi = pk->nunits - 1;   /* largest u with units[u] <= i; units[0] == 0 */
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if (pk->units[mid] <= i) lo = mid; else hi = mid - 1;
    }
    return pk->units[lo];
}

void fwd_attend(moeq_runner *r, int64_t n, int64_t heads, int64_t kv_heads, int64_t dqk, int64_t dv,
                const float *q, int64_t qs, int64_t qh, const float *k, int64_t ks_, int64_t kh,
                const float *v, int64_t vs, int64_t vh, float scale, float *out, int64_t os)
{
    const moeq_kernel_set *ks = moeq_kernels();
    const int64_t G = kv_heads, group = heads / kv_heads, nqb = (n + ATT_QBLOCK - 1) / ATT_QBLOCK;
    const int64_t W = r->att_window;
    /* keys and values of each kv head contiguous, [n, dqk] and [n, dv]: contiguous rows keep a
     * key block in distinct cache sets (the projections' rows are 1 KiB or more apart) */
#pragma omp parallel for schedule(static) num_threads(r->nthreads) if (n * G * dqk >= PAR_MIN_ELEMS)
    for (int64_t g = 0; g < G; g++) {
        float *kc = r->kc + g * n * dqk, *vt = r->vt + g * dv * n;
        for (int64_t j = 0; j < n; j++) {
            memcpy(kc + j * dqk, k + j * ks_ + g * kh, (size_t)dqk * sizeof(float));
            memcpy(vt + j * dv, v + j * vs + g * vh, (size_t)dv * sizeof(float));
        }
    }
    /* a head's query blocks last first: causally the later blocks see more keys, and the
     * costliest tasks first leave the threads no long task at the end (tasks are independent) */
#pragma omp parallel for schedule(dynamic, 1) num_threads(r->nthreads)
    for (int64_t b = 0; b < heads * nqb; b++) {
        const int64_t h = b / nqb, g = h / group, i0 = (nqb - 1 - b % nqb) * ATT_QBLOCK;
        const int64_t i1 = i0 + ATT_QBLOCK < n ? i0 + ATT_QBLOCK : n;
        int64_t k0 = block_start(r->pk, i0);
        if (W > 0 && !r->pk && i0 - W + 1 > k0) k0 = i0 - W + 1;   /* keys before the window */
        const int64_t nk = i1 - k0;   /* keys k0..i1-1 */
        const float sink = r->att_sinks ? r->att_sinks[h] : -INFINITY;
        thread_scratch *ts = &r->ts[omp_get_thread_num()];
        /* causal is the kernel's (key j <= query i); a packed pass or a window adds bytes,
         * key-major, from the one predicate */
        uint8_t *mask = NULL;
        if (r->pk || W > 0) {
            mask = ts->amask;
            for (int64_t j = 0; j < nk; j++)
                for (int64_t i = i0; i < i1; i++) mask[j * (i1 - i0) + i - i0] = (uint8_t)visible(r->pk, W, i, k0 + j);
        }
        const moeq_attn_task t = {i1 - i0, nk, dqk, dv, q + i0 * qs + h * qh, qs,
                                  r->kc + g * n * dqk + k0 * dqk, dqk, r->vt + g * dv * n + k0 * dv, dv,
                                  i0 - k0, mask, i1 - i0, scale, sink, out + i0 * os + h * dv, os,
                                  ts->scores};
        ks->attend(&t);
    }
}

void fwd_linear(moeq_runner *r, const moeq_mat *W, const float *X, int64_t n, float *Y) { linear(r, W, X, n, Y); }

/* Whether linear() would run W through par_wmatmul as stored (plain float weights) */
static int plain_float(const moeq_mat *W) { return !W->q && !moeq_mat_widens(W) && !W->gtype; }

void fwd_linear3(moeq_runner *r, const moeq_mat *A, const moeq_mat *B, const moeq_mat *C, const float *X, int64_t n,
                 float *YA, float *YB, float *YC)
{
    const moeq_mat *W[3] = {A, B, C};
    float *Y[3] = {YA, YB, YC};
    const moeq_wtype t = wmat_of(A).type;
    int shared = 1;
    for (int m = 0; m < 3; m++)
        shared &= plain_float(W[m]) && W[m]->cols == A->cols && wmat_of(W[m]).type == t;
    if (shared) {
        par_wmatmul_n(r, W, 3, X, n, Y);
        return;
    }
    for (int m = 0; m < 3; m++) linear(r, W[m], X, n, Y[m]);
}
void fwd_rmsnorm_rows(const float *x, float *y, int64_t n, int64_t dim, int64_t stride, const float *w,
                      double eps)
{
    rmsnorm_rows(x, y, n, dim, stride, w, eps);
}
void fwd_add_bias(float *x, int64_t n, int64_t dim, const float *b) { add_bias(x, n, dim, b); }

/* out[n, H] = down(silu(gate·x) ⊙ up·x) for all tokens, with the matrices of a dense MLP or
 * the shared expert; inter is their intermediate size. */
static void mlp_all_tokens(moeq_runner *r, int64_t layer, const moeq_mat *g, const moeq_mat *u,
                           const moeq_mat *d, int64_t n, float *out, const moeq_hooks *hooks,
                           moeq_proj in_proj, moeq_proj down_proj)
{
    int64_t H = r->c->hidden, F = g->rows;
    if (hooks && hooks->linear_input)
        hooks->linear_input(hooks->user, layer, -1, in_proj, r->h, n, H, NULL, NULL);
    linear(r, g, r->h, n, r->ffn_g);
    linear(r, u, r->h, n, r->ffn_u);
    swiglu_inplace(r->ffn_g, r->ffn_u, n * F);
    if (hooks && hooks->linear_input)
        hooks->linear_input(hooks->user, layer, -1, down_proj, r->ffn_g, n, F, NULL, NULL);
    linear(r, d, r->ffn_g, n, out);
}

/* The router variant of the family (model/router_*.c), by config. */
static fwd_router_fn router_of(const moeq_config *c)
{
    switch (c->router) {
    case MOEQ_ROUTER_SIGMOID_GROUP: return fwd_route_sigmoid_group;
    case MOEQ_ROUTER_SOFTMAX_GROUP: return fwd_route_softmax_group;
    case MOEQ_ROUTER_SOFTMAX_BIAS: return fwd_route_softmax_bias;
    case MOEQ_ROUTER_SPARSEMIXER: return fwd_route_sparsemixer;
    case MOEQ_ROUTER_TOPK_SOFTMAX: return fwd_route_topk_softmax;
    default: return fwd_route_softmax;
    }
}

static moeq_status moe_block(moeq_runner *r, int64_t layer, int64_t n, const moeq_hooks *hooks,
                             moeq_error *err)
{
    const moeq_config *c = r->c;
    const moeq_layer_view *L = moeq_model_layer(r->m, layer);
    int64_t H = c->hidden, E = c->n_experts, K = c->top_k;

    linear(r, &L->router, r->h, n, r->router_logits);
    if (L->router_lin_bias.data) {   /* gpt_oss: the router linear's own bias */
        moeq_vec_to_f32(&L->router_lin_bias, r->rbias);
        add_bias(r->router_logits, n, E, r->rbias);
    }
    if (hooks && hooks->router_logits) hooks->router_logits(hooks->user, layer, r->router_logits, n, E);
    const int32_t *widths = moeq_model_expert_widths(r->m);
    const int32_t *live = widths ? widths + layer * E : NULL;
    const float *bias = NULL;
    if (L->router_bias.data) {
        moeq_vec_to_f32(&L->router_bias, r->rbias);
        bias = r->rbias;
    }
    const fwd_router_fn route = router_of(c);
#pragma omp parallel for schedule(static) if (n * E * K >= PAR_MIN_ELEMS)
    for (int64_t t = 0; t < n; t++)
        route(c, r->router_logits + t * E, bias, live, r->topk_idx + t * K, r->topk_w + t * K);
    memset(r->e_count, 0, (size_t)E * sizeof(int64_t));
    for (int64_t t = 0; t < n; t++)
        for (int64_t s = 0; s < K; s++) {
            int64_t e = r->topk_idx[t * K + s];
            int64_t j = r->e_count[e]++;
            r->e_rows[e * r->max_n + j] = (int32_t)t;
            r->e_slot[e * r->max_n + j] = (int32_t)s;
        }

    /* the experts with the most tokens first: in index order the last big expert could start
     * when the other threads are done (each expert writes only its own slots: same bits) */
    for (int64_t e = 0; e < E; e++) {
        int64_t j = e;
        for (; j > 0 && r->e_count[r->e_order[j - 1]] < r->e_count[e]; j--) r->e_order[j] = r->e_order[j - 1];
        r->e_order[j] = (int32_t)e;
    }
    moeq_status st = MOEQ_OK;
#pragma omp parallel for schedule(dynamic, 1) num_threads(r->nthreads)
    for (int64_t oe = 0; oe < E; oe++) {
        const int64_t e = r->e_order[oe];
        int64_t ne = r->e_count[e];
        if (ne == 0) continue;
        thread_scratch *s = &r->ts[omp_get_thread_num()];
        moeq_mat mg, mu, md;
        moeq_error lerr;
        if (moeq_model_expert(r->m, layer, e, MOEQ_PROJ_GATE, &mg, &lerr) != MOEQ_OK ||
            moeq_model_expert(r->m, layer, e, MOEQ_PROJ_UP, &mu, &lerr) != MOEQ_OK ||
            moeq_model_expert(r->m, layer, e, MOEQ_PROJ_DOWN, &md, &lerr) != MOEQ_OK) {
#pragma omp critical(moeq_forward_err)
            {
                if (st == MOEQ_OK) {
                    st = lerr.code;
                    if (err) *err = lerr;
                }
            }
            continue;
        }
        if (moeq_mat_widens(&mg)) mg = widen_f8(&mg, s->f8, 0);   /* one at a time: s->f8 */
        const int packed = mg.q && mu.q && md.q;
        const int64_t I = mg.rows;   /* a pruned model's experts have ragged widths */
        moeq_wmat wg = wmat_of(&mg), wu = wmat_of(&mu), wd = wmat_of(&md);
        const int32_t *rows = r->e_rows + e * r->max_n;
        const int32_t *slots = r->e_slot + e * r->max_n;
        for (int64_t j = 0; j < ne; j++) {
            memcpy(s->xe + j * H, r->h + (int64_t)rows[j] * H, (size_t)H * sizeof(float));
            s->we[j] = r->topk_w[(int64_t)rows[j] * K + slots[j]];
        }
        const moeq_kernel_set *ks = moeq_kernels();
        /* gate, up and SwiGLU in one kernel where the set has one (not with expert biases or
         * gpt-oss's clamped activation, which come between): the bits of the steps below */
        int fused = 0;
        if (ks->gate_up_swiglu && !s->eb && c->act == MOEQ_ACT_SWIGLU && (packed || (!mg.gtype && !mu.gtype)))
            fused = ks->gate_up_swiglu(packed ? mg.q : NULL, packed ? mu.q : NULL, packed ? NULL : &wg,
                                       packed ? NULL : &wu, s->xe, ne, H, s->ge, I);
        if (fused) {
            /* silu(gate) · up is in s->ge */
        } else if (packed) {   /* gate and up over one preparation of the tokens where the set has one */
            if (!ks->gemm_pair || !ks->gemm_pair(mg.q, mu.q, s->xe, ne, H, s->ge, s->ue, I)) {
                ks->gemm(mg.q, s->xe, ne, H, 0, I, s->ge, I);
                ks->gemm(mu.q, s->xe, ne, H, 0, I, s->ue, I);
            }
        } else if (s->wx && !mg.gtype && !mu.gtype && wg.type == MOEQ_W_BF16 && wu.type == MOEQ_W_BF16 &&
                   ks->wx_bytes(ne, H)) {
            /* gate and up in one preparation of the tokens' activations */
            for (int64_t v = 0; v < (ne + 15) / 16; v++) ks->wx_prep(s->xe, ne, H, H, v, v + 1, s->wx);
            ks->wgemm_wx(&wg, s->wx, s->xe, ne, H, 0, I, s->ge, I);
            ks->wgemm_wx(&wu, s->wx, s->xe, ne, H, 0, I, s->ue, I);
        } else {
            expert_mm(ks, &mg, &wg, s->xe, ne, H, I, s->ge);
            if (moeq_mat_widens(&mu)) {
                mu = widen_f8(&mu, s->f8, 0);
                wu = wmat_of(&mu);
            }
            expert_mm(ks, &mu, &wu, s->xe, ne, H, I, s->ue);
        }
        const float *bd = NULL;
        if (!fused && s->eb && moeq_model_expert_bias(r->m, layer, e, MOEQ_PROJ_GATE, s->eb) == 1 &&
            moeq_model_expert_bias(r->m, layer, e, MOEQ_PROJ_UP, s->eb + I) == 1 &&
            moeq_model_expert_bias(r->m, layer, e, MOEQ_PROJ_DOWN, s->eb + 2 * I) == 1) {
            add_bias(s->ge, ne, I, s->eb);
            add_bias(s->ue, ne, I, s->eb + I);
            bd = s->eb + 2 * I;
        }
        if (fused) {
            /* applied in the kernel */
        } else if (c->act == MOEQ_ACT_SWIGLU_CLAMP) fwd_act_swiglu_clamp(c, s->ge, s->ue, ne * I);
        else swiglu_inplace(s->ge, s->ue, ne * I);
        if (hooks && hooks->linear_input) {
#pragma omp critical(moeq_forward_hook)
            {
                hooks->linear_input(hooks->user, layer, e, MOEQ_PROJ_GATE, s->xe, ne, H, rows, s->we);
                hooks->linear_input(hooks->user, layer, e, MOEQ_PROJ_DOWN, s->ge, ne, I, rows, s->we);
            }
        }
        if (packed) ks->gemm(md.q, s->ge, ne, I, 0, H, s->ye, H);
        else {
            if (moeq_mat_widens(&md)) {
                md = widen_f8(&md, s->f8, 0);
                wd = wmat_of(&md);
            }
            expert_mm(ks, &md, &wd, s->ge, ne, I, H, s->ye);
        }
        if (bd) add_bias(s->ye, ne, H, bd);
        for (int64_t j = 0; j < ne; j++) {
            float *dst = r->slot_out + ((int64_t)rows[j] * K + slots[j]) * H;
            const float *src = s->ye + j * H;
            for (int64_t i = 0; i < H; i++) dst[i] = s->we[j] * src[i];
        }
    }
    if (st != MOEQ_OK) return st;

    /* Sum the k expert outputs of each token in slot order (independent of threads). */
#pragma omp parallel for schedule(static) if (n * K * H >= PAR_MIN_ELEMS)
    for (int64_t t = 0; t < n; t++) {
        float *o = r->mlp_out + t * H;
        const float *src = r->slot_out + t * K * H;
        for (int64_t i = 0; i < H; i++) o[i] = src[i];
        for (int64_t s = 1; s < K; s++)
            for (int64_t i = 0; i < H; i++) o[i] += src[s * H + i];
    }

    if (L->shared_gate.data) {
        float *shared = r->slot_out;   /* reuse: expert outputs are already summed */
        mlp_all_tokens(r, layer, &L->shared_gate, &L->shared_up, &L->shared_down, n, shared, hooks,
                       MOEQ_PROJ_SHARED_GATE, MOEQ_PROJ_SHARED_DOWN);
        if (L->shared_expert_gate.data) {
            moeq_mat_to_f32(&L->shared_expert_gate, 0, 1, r->w_sg);
            for (int64_t t = 0; t < n; t++) {
                double z = 0;
                for (int64_t i = 0; i < H; i++) z += (double)r->h[t * H + i] * r->w_sg[i];
                r->gate_scalar[t] = (float)(1.0 / (1.0 + exp(-(double)(float)z)));
            }
        } else {
            for (int64_t t = 0; t < n; t++) r->gate_scalar[t] = 1.0f;
        }
        for (int64_t t = 0; t < n; t++)
            for (int64_t i = 0; i < H; i++)
                r->mlp_out[t * H + i] += r->gate_scalar[t] * shared[t * H + i];
    }
    return MOEQ_OK;
}

/* Mapped pages (docs/eval.md, "Memory"): with release on, the part of the model that a step
 * touched (the embedding rows, a layer, the head) is released when a step for another part
 * starts, and a layer prefetches the next one. moeq_forward moves on every layer; layer-wise
 * drivers (calibration, sequential GPTQ) run one layer over all windows before the next, so
 * there a layer is released once, after its last window. */
static void pages_enter(moeq_runner *r, int64_t part)
{
    if (!r->release || r->resident == part) return;
    if (r->resident == PART_EMBED || r->resident == PART_HEAD) moeq_model_release_head(r->m);
    else if (r->resident >= 0) moeq_model_release_layer(r->m, r->resident);
    if (part >= 0 && part + 1 < r->c->layers) moeq_model_prefetch_layer(r->m, part + 1);
    else if (part >= 0) moeq_mat_prefetch(moeq_model_lm_head(r->m));
    r->resident = part;
}

static moeq_status check_window(const moeq_runner *r, int64_t n, moeq_error *err)
{
    if (n <= 0 || n > r->max_n)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "window of %lld tokens; the workspace holds 1..%lld",
                         (long long)n, (long long)r->max_n);
    return MOEQ_OK;
}

static moeq_status embed_tokens(moeq_runner *r, const int32_t *tokens, int64_t n, float *x,
                                moeq_error *err)
{
    int64_t H = r->c->hidden, V = r->c->vocab;
    pages_enter(r, PART_EMBED);
    const moeq_mat *embed = moeq_model_embed(r->m);
    for (int64_t t = 0; t < n; t++) {
        if (tokens[t] < 0 || tokens[t] >= V)
            return moeq_fail(err, MOEQ_ERR_RANGE, "token id %d at window position %lld is outside "
                             "the vocabulary (0..%lld)", tokens[t], (long long)t, (long long)V - 1);
        moeq_mat_to_f32(embed, tokens[t], tokens[t] + 1, x + t * H);
    }
    return MOEQ_OK;
}

/* The family's block norm of rows x [n, H] into y: RMSNorm, or LayerNorm with bias (phimoe:
 * biased variance over H, eps inside the root, as torch.nn.LayerNorm). */
static void block_norm(moeq_runner *r, const moeq_vec *w, const moeq_vec *b, const float *x, float *y, int64_t n)
{
    const int64_t H = r->c->hidden;
    float *wv = r->vbuf, *bv = r->vbuf + H;
    moeq_vec_to_f32(w, wv);
    if (r->c->norm != MOEQ_NORM_LAYER) {
        rmsnorm_rows(x, y, n, H, H, wv, r->c->rms_eps);
        return;
    }
    moeq_vec_to_f32(b, bv);
    const double eps = r->c->rms_eps;
#pragma omp parallel for schedule(static) if (n * H >= PAR_MIN_ELEMS)
    for (int64_t i = 0; i < n; i++) {
        const float *xi = x + i * H;
        float *yi = y + i * H;
        double mean = 0, var = 0;
        for (int64_t j = 0; j < H; j++) mean += xi[j];
        mean /= (double)H;
        for (int64_t j = 0; j < H; j++) var += ((double)xi[j] - mean) * ((double)xi[j] - mean);
        float inv = (float)(1.0 / sqrt(var / (double)H + eps)), mf = (float)mean;
        for (int64_t j = 0; j < H; j++) yi[j] = (xi[j] - mf) * inv * wv[j] + bv[j];
    }
}

/* x += add (the residual, in parallel), then block_norm: for RMSNorm in one pass */
static void add_block_norm(moeq_runner *r, const moeq_vec *w, const moeq_vec *b, float *x, const float *add, float *y,
                           int64_t n)
{
    const int64_t H = r->c->hidden;
    if (r->c->norm != MOEQ_NORM_LAYER) {
        moeq_vec_to_f32(w, r->vbuf);
        add_rmsnorm_rows(x, add, y, n, H, r->vbuf, r->c->rms_eps);
        return;
    }
#pragma omp parallel for simd schedule(static) if (n * H >= PAR_MIN_ELEMS)
    for (int64_t i = 0; i < n * H; i++) x[i] += add[i];
    block_norm(r, w, b, x, y, n);
}

/* One decoder layer on the residual stream r->x. */
static moeq_status run_layer(moeq_runner *r, int64_t l, int64_t n, const moeq_hooks *hooks,
                             moeq_error *err)
{
    int64_t H = r->c->hidden;
    pages_enter(r, l);
    const moeq_layer_view *L = moeq_model_layer(r->m, l);
    block_norm(r, &L->attn_norm, &L->attn_norm_bias, r->x, r->h, n);
    if (hooks && hooks->linear_input)
        hooks->linear_input(hooks->user, l, -1, MOEQ_PROJ_Q, r->h, n, H, NULL, NULL);
    /* the family's attention variant: normed input r->h -> o projection in r->mlp_out */
    if (r->c->attn == MOEQ_ATTN_MLA) fwd_attn_mla(r, l, n, hooks);
    else fwd_attn_gqa(r, l, n, hooks);
    add_block_norm(r, &L->mlp_norm, &L->mlp_norm_bias, r->x, r->mlp_out, r->h, n);   /* x += attention */
    if (L->is_moe) {
        moeq_status st = moe_block(r, l, n, hooks, err);
        if (st != MOEQ_OK) return st;
    } else {
        mlp_all_tokens(r, l, &L->dense_gate, &L->dense_up, &L->dense_down, n, r->mlp_out, hooks,
                       MOEQ_PROJ_DENSE_GATE, MOEQ_PROJ_DENSE_DOWN);
    }
    float *x = r->x;
    const float *mo = r->mlp_out;
#pragma omp parallel for simd schedule(static) if (n * H >= PAR_MIN_ELEMS)
    for (int64_t i = 0; i < n * H; i++) x[i] += mo[i];
    return MOEQ_OK;
}

/* Final RMSNorm of x and the LM head, in chunks of vocabulary rows so the widened copy stays small. */
static void lm_head(moeq_runner *r, const float *x, int64_t n, float *logits)
{
    int64_t H = r->c->hidden, V = r->c->vocab;
    pages_enter(r, PART_HEAD);
    block_norm(r, moeq_model_final_norm(r->m), moeq_model_final_norm_bias(r->m), x, r->h, n);
    const moeq_mat *head = moeq_model_lm_head(r->m);
    const float *hb = NULL;
    if (r->lm_bias) {
        moeq_vec_to_f32(moeq_model_lm_head_bias(r->m), r->lm_bias);
        hb = r->lm_bias;
    }
    const moeq_kernel_set *ks = moeq_kernels();
    int64_t nchunks = (V + LM_HEAD_CHUNK - 1) / LM_HEAD_CHUNK;
    const moeq_wmat hw = wmat_of(head);
    /* the tokens' activations prepared once for every chunk (the buffer holds n x H: see
     * moeq_runner_create) */
    const int prep = !head->q && head->dtype != MOEQ_DT_F8_E4M3 && !head->gtype && r->wx && hw.type == MOEQ_W_BF16 &&
                     ks->wx_bytes(n, H) > 0;
    const int64_t nv = prep ? (n + 15) / 16 : 0;
#pragma omp parallel num_threads(r->nthreads)
    {
#pragma omp for schedule(static)
    for (int64_t v = 0; v < nv; v++) ks->wx_prep(r->h, n, H, H, v, v + 1, r->wx);
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < nchunks; b++) {
        int64_t v0 = b * LM_HEAD_CHUNK, v1 = v0 + LM_HEAD_CHUNK < V ? v0 + LM_HEAD_CHUNK : V;
        if (head->q || head->dtype == MOEQ_DT_F8_E4M3 || head->gtype) {   /* widened chunk by chunk */
            thread_scratch *s = &r->ts[omp_get_thread_num()];
            moeq_mat_to_f32(head, v0, v1, s->lm);
            moeq_sgemm_nt(n, v1 - v0, H, r->h, H, s->lm, H, 0.0f, logits + v0, V);
        } else if (prep) {
            ks->wgemm_wx(&hw, r->wx, r->h, n, H, v0, v1, logits + v0, V);
        } else {
            ks->wgemm(&hw, r->h, n, H, v0, v1, logits + v0, V);
        }
        if (hb)
            for (int64_t t = 0; t < n; t++)
                for (int64_t v = v0; v < v1; v++) logits[t * V + v] += hb[v];
        if (r->release) moeq_mat_release_rows(head, v0, v1);   /* a head is one part: ~vocab·H */
    }
    }
}

moeq_status moeq_forward(moeq_runner *r, const int32_t *tokens, int64_t n, float *logits,
                         const moeq_hooks *hooks, moeq_error *err)
{
    moeq_status st = check_window(r, n, err);
    if (st == MOEQ_OK) st = embed_tokens(r, tokens, n, r->x, err);
    for (int64_t l = 0; st == MOEQ_OK && l < r->c->layers; l++) st = run_layer(r, l, n, hooks, err);
    if (st == MOEQ_OK) lm_head(r, r->x, n, logits);
    return st;
}

moeq_status moeq_forward_embed(moeq_runner *r, const int32_t *tokens, int64_t n, float *x,
                               moeq_error *err)
{
    moeq_status st = check_window(r, n, err);
    return st == MOEQ_OK ? embed_tokens(r, tokens, n, x, err) : st;
}

moeq_status moeq_forward_layer(moeq_runner *r, int64_t layer, float *x, int64_t n,
                               const moeq_hooks *hooks, moeq_error *err)
{
    moeq_status st = check_window(r, n, err);
    if (st != MOEQ_OK) return st;
    if (layer < 0 || layer >= r->c->layers)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "layer %lld outside 0..%lld", (long long)layer,
                         (long long)r->c->layers - 1);
    size_t bytes = (size_t)(n * r->c->hidden) * sizeof(float);
    memcpy(r->x, x, bytes);
    st = run_layer(r, layer, n, hooks, err);
    if (st == MOEQ_OK) memcpy(x, r->x, bytes);
    return st;
}

moeq_status moeq_forward_head(moeq_runner *r, const float *x, int64_t n, float *logits,
                              moeq_error *err)
{
    moeq_status st = check_window(r, n, err);
    if (st == MOEQ_OK) lm_head(r, x, n, logits);
    return st;
}

/* Packed sequences (docs/eval.md, "Tasks"): only RoPE (positions) and the attention mask
 * (segments) differ from moeq_forward; the linears, norms and MoE are per token anyway. */
moeq_status moeq_forward_packed(moeq_runner *r, const int32_t *tokens, int64_t n,
                                const moeq_packing *pk, float *logits, moeq_error *err)
{
    moeq_status st = check_window(r, n, err);
    if (st != MOEQ_OK) return st;
    for (int64_t i = 0; i < n; i++)
        if (pk->pos[i] < 0 || pk->pos[i] > i)
            return moeq_fail(err, MOEQ_ERR_MISUSE, "packed token %lld has position %d outside 0..%lld",
                             (long long)i, pk->pos[i], (long long)i);
    /* blocks: ascending starts from 0; segment ids grow from block to block, so no token can
     * see one of an earlier block and attention per block equals attention over the pass */
    if (pk->units && pk->nunits > 0) {
        if (pk->units[0] != 0)
            return moeq_fail(err, MOEQ_ERR_MISUSE, "the first block of a packed sequence starts at %d, not 0",
                             pk->units[0]);
        int64_t prev_max = -1, cur_max = -1;
        for (int64_t b = 0, i = 0; b < pk->nunits; b++) {
            int64_t b1 = b + 1 < pk->nunits ? pk->units[b + 1] : n;
            if (b1 <= pk->units[b] || b1 > n)
                return moeq_fail(err, MOEQ_ERR_MISUSE, "block %lld of a packed sequence of %lld tokens ends at %lld",
                                 (long long)b, (long long)n, (long long)b1);
            prev_max = cur_max > prev_max ? cur_max : prev_max;
            for (; i < b1; i++) {
                if (pk->seg[i] <= prev_max || (pk->see[i] >= 0 && pk->see[i] <= prev_max))
                    return moeq_fail(err, MOEQ_ERR_MISUSE, "packed token %lld (block %lld) has segment %d seeing %d, "
                                     "of an earlier block", (long long)i, (long long)b, pk->seg[i], pk->see[i]);
                if (pk->seg[i] > cur_max) cur_max = pk->seg[i];
            }
        }
    }
    if (pk->nrows < 0 || pk->nrows > n)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "%lld logit rows of a packed sequence of %lld tokens",
                         (long long)pk->nrows, (long long)n);
    for (int64_t k = 0; k < pk->nrows; k++)
        if (pk->rows[k] < 0 || pk->rows[k] >= n)
            return moeq_fail(err, MOEQ_ERR_MISUSE, "logit row %d of a packed sequence of %lld tokens",
                             pk->rows[k], (long long)n);
    r->pk = pk;
    st = embed_tokens(r, tokens, n, r->x, err);
    for (int64_t l = 0; st == MOEQ_OK && l < r->c->layers; l++) st = run_layer(r, l, n, NULL, err);
    r->pk = NULL;
    if (st != MOEQ_OK) return st;
    /* the head runs only on the rows asked for (mlp_out is free scratch after the last layer) */
    int64_t H = r->c->hidden;
    for (int64_t k = 0; k < pk->nrows; k++)
        memcpy(r->mlp_out + k * H, r->x + (int64_t)pk->rows[k] * H, (size_t)H * sizeof(float));
    if (pk->nrows > 0) lm_head(r, r->mlp_out, pk->nrows, logits);
    return MOEQ_OK;
}
