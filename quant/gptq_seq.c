/* Sequential GPTQ (docs/quantize.md, "--sequential"): calibrate's layer-wise driver runs the
 * model over the calibration windows one layer at a time. For each layer L the collector
 * accumulates the routed experts' Hessians from the inputs the already-quantized layers below
 * produced; every matrix of L in scope is quantized (GPTQ through moeq_gptq_piece for routed
 * experts, RTN for the others), its codes kept for the writer, its dequantized weights
 * installed as model-view overrides, and L re-run so that L + 1 sees the quantized output.
 * Statistics and overrides live for one layer at a time. */
#include "moeq_eval.h"
#include "moeq_gptq.h"
#include "moeq_calib.h"
#include "moeq_core.h"
#include "moeq_kernels.h"
#include "moeq_quant.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

typedef struct seq {
    moeq_gptq_run *r;
    moeq_model *m;
    const moeq_quant_opts *qo;
    const moeq_gptq_seq_opts *so;
    moeq_gptq_seq_result *res;
    moeq_calib_collector *col;
    size_t n_mats;
    int64_t active;          /* layer the collector was reset for, -1 for none */
    float **bufs;            /* override buffers of the current layer */
    size_t n_bufs, cap_bufs;
    double t0;
} seq;

static void drop_overrides(seq *s)
{
    moeq_model_clear_overrides(s->m);
    for (size_t i = 0; i < s->n_bufs; i++) free(s->bufs[i]);
    s->n_bufs = 0;
}

/* Whether layer l has anything to quantize (a dense layer only with scope all). */
static int layer_wanted(const seq *s, int64_t l)
{
    return moeq_model_layer(s->m, l)->is_moe || s->qo->scope == MOEQ_SCOPE_ALL;
}

static const moeq_hooks *seq_hooks(void *user, int64_t layer)
{
    seq *s = user;
    drop_overrides(s);   /* the previous layer's re-run is over */
    s->active = -1;
    if (!layer_wanted(s, layer) || !moeq_model_layer(s->m, layer)->is_moe) return NULL;
    moeq_error e;
    if (moeq_calib_collector_reset(s->col, layer, &e) != MOEQ_OK) return NULL;
    s->active = layer;
    return moeq_calib_collector_hooks(s->col);
}

static moeq_status seq_window(void *user, int64_t layer, int64_t window, moeq_error *err)
{
    (void)window;
    seq *s = user;
    return s->active == layer ? moeq_calib_collector_flush(s->col, err) : MOEQ_OK;
}

static moeq_status keep_buf(seq *s, float *b, moeq_error *err)
{
    if (s->n_bufs == s->cap_bufs) {
        size_t nc = s->cap_bufs ? 2 * s->cap_bufs : 64;
        float **p = realloc(s->bufs, nc * sizeof *p);
        if (!p) { free(b); return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); }
        s->bufs = p;
        s->cap_bufs = nc;
    }
    s->bufs[s->n_bufs++] = b;
    return MOEQ_OK;
}

/* Quantizes one matrix view under codec (GPTQ when name is a routed expert's piece, else RTN),
 * and installs its dequantized weights as the override of (layer, expert, proj). *keep (may be
 * NULL) receives the codes (malloc'ed). */
static moeq_status quantize_one(seq *s, const char *name, const moeq_mat *v, const moeq_codec *cd,
                                int64_t layer, int64_t expert, moeq_proj proj, uint8_t **keep,
                                uint64_t *keep_size, moeq_error *err)
{
    int64_t rows = v->rows, cols = v->cols;
    int g = cd->group ? cd->group : (int)cols;
    moeq_error e2;
    if (moeq_qmat_check(cd->bits, g, rows, cols, &e2))
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "tensor '%s' [%lld, %lld]: %s", name, (long long)rows,
                         (long long)cols, e2.detail);
    uint64_t so, zo, rsz = moeq_qmat_bytes(cd->bits, g, cd->sym, rows, cols, &so, &zo);
    size_t nel = (size_t)(rows * cols);
    float *w = malloc(nel * sizeof *w), *dq = malloc(nel * sizeof *dq);
    uint8_t *raw = malloc((size_t)rsz);
    moeq_status st = MOEQ_OK;
    if (!w || !dq || !raw) st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for '%s'", name);
    if (st == MOEQ_OK) {
        moeq_mat_to_f32(v, 0, rows, w);
        st = expert >= 0 ? moeq_gptq_piece(s->r, name, w, rows, cols, cd, raw, err)
                         : moeq_rtn_quantize(w, rows, cols, cd->bits, cd->group, cd->sym, raw, err);
    }
    if (st == MOEQ_OK) {
        /* the weights the kernels will see: the stored codes dequantized */
        moeq_qmat q = { .bits = cd->bits, .group = g, .sym = cd->sym, .rows = rows, .cols = cols, .codes = raw,
                        .scales = (const uint16_t *)(void *)(raw + so),
                        .zeros = cd->sym ? NULL : (const uint16_t *)(void *)(raw + zo) };
        moeq_mat qv = { .tensor = name, .index = -1, .dtype = MOEQ_DT_OTHER, .rows = rows, .cols = cols,
                        .data = raw, .q = &q };
        moeq_mat_to_f32(&qv, 0, rows, dq);
        st = moeq_model_set_override(s->m, layer, expert, proj, dq, err);
        if (st == MOEQ_OK) { st = keep_buf(s, dq, err); dq = NULL; }
    }
    free(w);
    free(dq);
    if (st == MOEQ_OK && keep) { *keep = raw; *keep_size = rsz; raw = NULL; }
    free(raw);
    return st;
}

static moeq_status seq_layer_done(void *user, int64_t layer, int *rerun, moeq_error *err)
{
    seq *s = user;
    moeq_gptq_run *r = s->r;
    *rerun = 0;
    if (!layer_wanted(s, layer)) return MOEQ_OK;
    moeq_status st = MOEQ_OK;
    int installed = 0;
    if (s->active == layer) {
        moeq_calib_collector_finish(s->col);
        r->stats = moeq_calib_collector_layer(s->col);
        for (size_t i = 0; st == MOEQ_OK && i < s->n_mats; i++) {
            const moeq_expert_mat *x = &r->mats[i];
            if (x->layer != layer) continue;
            moeq_codec cd;
            if ((st = moeq_quant_piece_codec(s->m, s->qo, x->mat.tensor, x->name, &cd, err))) break;
            if (cd.type != MOEQ_CODEC_INT) continue;   /* kept: the next layer sees it as it is */
            moeq_gptq_stored *k = &r->stored[i];
            k->codec = cd;
            st = quantize_one(s, x->name, &x->mat, &cd, layer, x->expert, x->proj, &k->raw, &k->size, err);
            installed += st == MOEQ_OK;
            s->res->gptq_pieces += st == MOEQ_OK;
        }
        r->stats = NULL;
        s->res->layers_quantized++;
    }
    if (st == MOEQ_OK && s->qo->scope == MOEQ_SCOPE_ALL) {
        /* attention, shared and dense matrices: RTN (as without --sequential), installed so the
         * next layer sees them quantized; the writer quantizes them again, to the same bytes */
        static const moeq_proj projs[] = { MOEQ_PROJ_Q, MOEQ_PROJ_K, MOEQ_PROJ_V, MOEQ_PROJ_O,
                                           MOEQ_PROJ_SHARED_GATE, MOEQ_PROJ_SHARED_UP, MOEQ_PROJ_SHARED_DOWN,
                                           MOEQ_PROJ_DENSE_GATE, MOEQ_PROJ_DENSE_UP, MOEQ_PROJ_DENSE_DOWN };
        const moeq_layer_view *L = moeq_model_layer(s->m, layer);
        const moeq_mat *mats[] = { &L->q, &L->k, &L->v, &L->o, &L->shared_gate, &L->shared_up, &L->shared_down,
                                   &L->dense_gate, &L->dense_up, &L->dense_down };
        for (size_t i = 0; st == MOEQ_OK && i < sizeof projs / sizeof projs[0]; i++) {
            if (!mats[i]->tensor || !mats[i]->data) continue;
            moeq_mat v = *mats[i];
            moeq_codec cd;
            if ((st = moeq_quant_piece_codec(s->m, s->qo, v.tensor, v.tensor, &cd, err))) break;
            if (cd.type != MOEQ_CODEC_INT) continue;
            st = quantize_one(s, v.tensor, &v, &cd, layer, -1, projs[i], NULL, NULL, err);
            installed += st == MOEQ_OK;
        }
    }
    *rerun = st == MOEQ_OK && installed > 0;
    if (st == MOEQ_OK && s->so->progress) {
        const moeq_config *c = moeq_model_config(s->m);
        s->so->progress(s->so->user, layer + 1, c->layers, moeq_now() - s->t0);
    }
    return st;
}

moeq_status moeq_gptq_sequential(moeq_gptq_run *r, moeq_model *m, const moeq_quant_opts *qo,
                                 const int32_t *tokens, int64_t n, const moeq_gptq_seq_opts *so,
                                 moeq_gptq_seq_result *res, moeq_error *err)
{
    memset(res, 0, sizeof *res);
    const moeq_config *c = moeq_model_config(m);
    int64_t ctx = so->ctx > 0 ? so->ctx : 512;
    int64_t W;
    moeq_status wst = moeq_token_windows(m, tokens, n, ctx, so->max_tokens, &W, err);
    if (wst != MOEQ_OK) return wst;
    if (!r->mats || !r->index)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "sequential GPTQ: the run has no matrix list");
    int threads = so->threads > 0 ? so->threads : omp_get_max_threads();
    seq s = { .r = r, .m = m, .qo = qo, .so = so, .res = res, .active = -1 };
    s.n_mats = r->n_mats;
    res->tokens = W * ctx;
    res->windows = W;
    res->ctx = ctx;
    r->min_tokens = so->min_tokens > 0 ? so->min_tokens : 2 * c->hidden;
    if (r->stored)
        for (size_t i = 0; i < s.n_mats; i++) free(r->stored[i].raw);
    free(r->stored);
    r->stored = calloc(s.n_mats ? s.n_mats : 1, sizeof *r->stored);
    if (!r->stored) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    moeq_status st = moeq_calib_collector_create(m, ctx, 0, 0, threads, &s.col, err);
    if (st == MOEQ_OK) {
        moeq_layerwise lw = { .ctx = ctx, .windows = W, .threads = threads, .keep_inputs = 1, .user = &s,
                              .layer_hooks = seq_hooks, .window_done = seq_window, .layer_done = seq_layer_done };
        s.t0 = moeq_now();
        st = moeq_layerwise_run(m, tokens, &lw, err);
        res->seconds = moeq_now() - s.t0;
    }
    drop_overrides(&s);
    free(s.bufs);
    moeq_calib_collector_free(s.col);
    r->stats = NULL;
    /* the factorization cache belongs to the last layer's statistics */
    moeq_gptq_hinv_free(r->hinv);
    r->hinv = NULL;
    r->hinv_ok = 0;
    return st;
}
