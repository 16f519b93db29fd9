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
#include "moeq_dist.h"
#include "moeq_resume.h"

#include <omp.h>
#include <stdio.h>
#include <xxhash.h>
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
    moeq_resume *rs;         /* rank 0 with --resume */
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

/* Quantizes one matrix view under codec: GPTQ through moeq_gptq_piece for a routed expert's
 * piece, else RTN. *raw (malloc'ed, *size bytes) receives the codes. */
static moeq_status quantize_raw(seq *s, const char *name, const moeq_mat *v, const moeq_codec *cd, int64_t expert,
                                uint8_t **raw_out, uint64_t *size, moeq_error *err)
{
    int64_t rows = v->rows, cols = v->cols;
    int g = cd->group ? cd->group : (int)cols;
    moeq_error e2;
    if (moeq_qmat_check(cd->bits, g, rows, cols, &e2))
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "tensor '%s' [%lld, %lld]: %s", name, (long long)rows,
                         (long long)cols, e2.detail);
    uint64_t rsz = moeq_qmat_bytes(cd->bits, g, cd->sym, rows, cols, NULL, NULL);
    float *w = malloc((size_t)(rows * cols) * sizeof *w);
    uint8_t *raw = malloc((size_t)rsz);
    moeq_status st = MOEQ_OK;
    if (!w || !raw) st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for '%s'", name);
    if (st == MOEQ_OK) {
        moeq_mat_to_f32(v, 0, rows, w);
        moeq_mat_release(v);
        st = expert >= 0 ? moeq_gptq_piece(s->r, name, w, rows, cols, cd, raw, err)
                         : moeq_rtn_quantize(w, rows, cols, cd->bits, cd->group, cd->sym, raw, err);
    }
    free(w);
    if (st != MOEQ_OK) { free(raw); return st; }
    *raw_out = raw;
    *size = rsz;
    return MOEQ_OK;
}

/* Installs the dequantized codes (what the kernels will see) as the override of
 * (layer, expert, proj), for the layers above. */
static moeq_status install(seq *s, const char *name, const moeq_mat *v, const moeq_codec *cd, const uint8_t *raw,
                           int64_t layer, int64_t expert, moeq_proj proj, moeq_error *err)
{
    int64_t rows = v->rows, cols = v->cols;
    int g = cd->group ? cd->group : (int)cols;
    uint64_t so, zo;
    moeq_qmat_bytes(cd->bits, g, cd->sym, rows, cols, &so, &zo);
    float *dq = malloc((size_t)(rows * cols) * sizeof *dq);
    if (!dq) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for '%s'", name);
    moeq_qmat q = { .bits = cd->bits, .group = g, .sym = cd->sym, .rows = rows, .cols = cols, .codes = raw,
                    .scales = (const uint16_t *)(const void *)(raw + so),
                    .zeros = cd->sym ? NULL : (const uint16_t *)(const void *)(raw + zo) };
    moeq_mat qv = { .tensor = name, .index = -1, .dtype = MOEQ_DT_OTHER, .rows = rows, .cols = cols,
                    .data = raw, .q = &q };
    moeq_mat_to_f32(&qv, 0, rows, dq);
    moeq_status st = moeq_model_set_override(s->m, layer, expert, proj, dq, err);
    if (st == MOEQ_OK) return keep_buf(s, dq, err);
    free(dq);
    return st;
}

/* A quantized piece as bytes: its codes, then the fallback records and GPTQ count it added
 * (sent from the rank that quantized it, and kept in resume checkpoints). */
typedef struct piece_out {
    uint8_t *blob;
    size_t n;
} piece_out;

static moeq_status piece_pack(moeq_gptq_run *r, uint8_t *raw, uint64_t size, size_t fb0, int64_t gm0,
                              piece_out *o, moeq_error *err)
{
    uint64_t nfb = r->n_fallbacks - fb0;
    int64_t dg = r->gptq_matrices - gm0;
    size_t n = 8 + (size_t)size + 8 + 8 + (size_t)nfb * sizeof(moeq_gptq_fallback_rec);
    uint8_t *b = malloc(n);
    if (!b) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    memcpy(b, &size, 8);
    memcpy(b + 8, raw, (size_t)size);
    memcpy(b + 8 + size, &dg, 8);
    memcpy(b + 16 + size, &nfb, 8);
    if (nfb) memcpy(b + 24 + size, r->fallbacks + fb0, (size_t)nfb * sizeof(moeq_gptq_fallback_rec));
    r->n_fallbacks = fb0;   /* re-added in piece order when the piece is taken */
    r->gptq_matrices = gm0;
    o->blob = b;
    o->n = n;
    return MOEQ_OK;
}

/* Takes a packed piece: its codes (*raw points into the blob), its fallbacks and count. */
static moeq_status piece_take(moeq_gptq_run *r, const piece_out *o, uint64_t want, const uint8_t **raw,
                              moeq_error *err)
{
    uint64_t size = 0, nfb = 0;
    int64_t dg = 0;
    if (o->n >= 8) memcpy(&size, o->blob, 8);
    if (o->n < 24 || size != want || o->n - 24 < size) goto bad;
    memcpy(&dg, o->blob + 8 + size, 8);
    memcpy(&nfb, o->blob + 16 + size, 8);
    if ((o->n - 24 - size) != nfb * sizeof(moeq_gptq_fallback_rec)) goto bad;
    if (r->n_fallbacks + nfb > r->cap_fallbacks) {
        size_t nc = r->cap_fallbacks ? r->cap_fallbacks : 16;
        while (nc < r->n_fallbacks + nfb) nc *= 2;
        moeq_gptq_fallback_rec *p = realloc(r->fallbacks, nc * sizeof *p);
        if (!p) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
        r->fallbacks = p;
        r->cap_fallbacks = nc;
    }
    if (nfb) memcpy(r->fallbacks + r->n_fallbacks, o->blob + 24 + size, (size_t)nfb * sizeof(moeq_gptq_fallback_rec));
    r->n_fallbacks += nfb;
    r->gptq_matrices += dg;
    *raw = o->blob + 8;
    return MOEQ_OK;
bad:
    return moeq_fail(err, MOEQ_ERR_FORMAT, "a quantized piece of %zu bytes does not hold the %llu bytes of codes "
                     "expected (a damaged resume checkpoint or a rank of another build)", o->n, (unsigned long long)want);
}

/* The routed-expert pieces of layer quantized from the layer's statistics. Each expert's
 * pieces are quantized by rank moeq_dist_owner(expert) (gate and up share one factorization),
 * all of them first; then, piece by piece in the fixed order, the owner broadcasts its codes and
 * every rank installs them for the layers above, rank 0 keeping them for the writer. */
static moeq_status expert_pieces(seq *s, int64_t layer, piece_out *outs, int *installed, moeq_error *err)
{
    moeq_gptq_run *r = s->r;
    int R = moeq_dist_rank();
    moeq_status st = MOEQ_OK;
    for (size_t i = 0; st == MOEQ_OK && i < s->n_mats; i++) {
        const moeq_expert_mat *x = &r->mats[i];
        if (x->layer != layer || moeq_dist_owner(x->expert) != R) continue;
        moeq_codec cd;
        if ((st = moeq_quant_piece_codec(s->m, s->qo, x->mat.tensor, x->name, &cd, err))) break;
        if (cd.type != MOEQ_CODEC_INT) continue;
        size_t fb0 = r->n_fallbacks;
        int64_t gm0 = r->gptq_matrices;
        uint8_t *raw = NULL;
        uint64_t size = 0;
        st = quantize_raw(s, x->name, &x->mat, &cd, x->expert, &raw, &size, err);
        if (st == MOEQ_OK) st = piece_pack(r, raw, size, fb0, gm0, &outs[i], err);
        free(raw);
    }
    /* a failure on one rank ends the job (the tool aborts); the others wait in the broadcast */
    for (size_t i = 0; st == MOEQ_OK && i < s->n_mats; i++) {
        const moeq_expert_mat *x = &r->mats[i];
        if (x->layer != layer) continue;
        moeq_codec cd;
        if ((st = moeq_quant_piece_codec(s->m, s->qo, x->mat.tensor, x->name, &cd, err))) break;
        if (cd.type != MOEQ_CODEC_INT) continue;
        int o = moeq_dist_owner(x->expert);
        void *b = outs[i].blob;
        size_t n = outs[i].n;
        st = moeq_dist_bcast_blob(&b, &n, o, err);
        outs[i].blob = b;
        outs[i].n = n;
        uint64_t want = moeq_qmat_bytes(cd.bits, cd.group ? cd.group : (int)x->mat.cols, cd.sym, x->mat.rows,
                                        x->mat.cols, NULL, NULL);
        const uint8_t *raw = NULL;
        if (st == MOEQ_OK) st = piece_take(r, &outs[i], want, &raw, err);
        if (st == MOEQ_OK) st = install(s, x->name, &x->mat, &cd, raw, layer, x->expert, x->proj, err);
        if (st == MOEQ_OK && R == 0) {
            moeq_gptq_stored *k = &r->stored[i];
            k->codec = cd;
            k->size = want;
            k->raw = malloc((size_t)want);
            if (!k->raw) st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
            else memcpy(k->raw, raw, (size_t)want);
        }
        *installed += st == MOEQ_OK;
        s->res->gptq_pieces += st == MOEQ_OK;
    }
    return st;
}

/* A finished layer's pieces for the resume checkpoint: [n][(index, blob size, blob)...]. */
static moeq_status save_layer(seq *s, int64_t layer, const piece_out *outs, moeq_error *err)
{
    size_t total = 8, count = 0;
    for (size_t i = 0; i < s->n_mats; i++)
        if (s->r->mats[i].layer == layer && outs[i].blob) { total += 16 + outs[i].n; count++; }
    uint8_t *b = malloc(total), *p = b;
    if (!b) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    uint64_t c = count;
    memcpy(p, &c, 8); p += 8;
    for (size_t i = 0; i < s->n_mats; i++) {
        if (s->r->mats[i].layer != layer || !outs[i].blob) continue;
        uint64_t ix = i, n = outs[i].n;
        memcpy(p, &ix, 8); memcpy(p + 8, &n, 8); memcpy(p + 16, outs[i].blob, outs[i].n);
        p += 16 + outs[i].n;
    }
    moeq_status st = moeq_resume_write(s->rs, layer, b, total, err);
    free(b);
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
    piece_out *outs = calloc(s->n_mats ? s->n_mats : 1, sizeof *outs);
    if (!outs) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    if (s->active == layer) {
        if (moeq_dist_rank() == 0) moeq_calib_collector_finish(s->col);
        st = moeq_calib_collector_bcast(s->col, 0, err);
        r->stats = moeq_calib_collector_layer(s->col);
        if (st == MOEQ_OK) st = expert_pieces(s, layer, outs, &installed, err);
        r->stats = NULL;
        s->res->layers_quantized++;
    }
    if (st == MOEQ_OK && s->qo->scope == MOEQ_SCOPE_ALL) {
        /* attention, shared and dense matrices: RTN (as without --sequential), the same on every
         * rank, installed so the next layer sees them quantized; the writer quantizes them
         * again, to the same bytes */
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
            uint8_t *raw = NULL;
            uint64_t size = 0;
            st = quantize_raw(s, v.tensor, &v, &cd, -1, &raw, &size, err);
            if (st == MOEQ_OK) st = install(s, v.tensor, &v, &cd, raw, layer, -1, projs[i], err);
            free(raw);
            installed += st == MOEQ_OK;
        }
    }
    if (st == MOEQ_OK && s->so->resume_dir && moeq_dist_rank() == 0) st = save_layer(s, layer, outs, err);
    for (size_t i = 0; i < s->n_mats; i++) free(outs[i].blob);
    free(outs);
    *rerun = st == MOEQ_OK && installed > 0;
    if (st == MOEQ_OK && s->so->progress && moeq_dist_rank() == 0) {
        const moeq_config *c = moeq_model_config(s->m);
        s->so->progress(s->so->user, layer + 1, c->layers, moeq_now() - s->t0);
    }
    return st;
}

static moeq_status bad_ckpt(const seq *s, int64_t l, moeq_error *err)
{
    return moeq_fail(err, MOEQ_ERR_FORMAT, "--resume %s: layer %lld's checkpoint does not match this model's pieces",
                     s->so->resume_dir, (long long)l);
}

/* Resume (rank 0): the pieces of the layers a stopped run finished, read back in order. */
static moeq_status replay(seq *s, int64_t done, moeq_error *err)
{
    moeq_status st = MOEQ_OK;
    for (int64_t l = 0; st == MOEQ_OK && l < done; l++) {
        if (!layer_wanted(s, l)) continue;
        void *b = NULL;
        size_t n = 0;
        st = moeq_resume_read(s->rs, l, &b, &n, err);
        const uint8_t *p = b;
        uint64_t count = 0;
        if (st == MOEQ_OK && n >= 8) memcpy(&count, p, 8);
        size_t off = 8;
        for (uint64_t k = 0; st == MOEQ_OK && k < count; k++) {
            uint64_t ix, len;
            if (n - off < 16) { st = bad_ckpt(s, l, err); break; }
            memcpy(&ix, p + off, 8);
            memcpy(&len, p + off + 8, 8);
            off += 16;
            if (ix >= s->n_mats || s->r->mats[ix].layer != l || n - off < len) { st = bad_ckpt(s, l, err); break; }
            const moeq_expert_mat *x = &s->r->mats[ix];
            moeq_codec cd;
            if ((st = moeq_quant_piece_codec(s->m, s->qo, x->mat.tensor, x->name, &cd, err))) break;
            uint64_t want = moeq_qmat_bytes(cd.bits, cd.group ? cd.group : (int)x->mat.cols, cd.sym, x->mat.rows,
                                            x->mat.cols, NULL, NULL);
            piece_out po = { (uint8_t *)(uintptr_t)(p + off), (size_t)len };
            const uint8_t *raw;
            st = piece_take(s->r, &po, want, &raw, err);
            moeq_gptq_stored *kp = &s->r->stored[ix];
            if (st == MOEQ_OK && !(kp->raw = malloc((size_t)want))) st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
            if (st == MOEQ_OK) { memcpy(kp->raw, raw, (size_t)want); kp->size = want; kp->codec = cd; }
            s->res->gptq_pieces += st == MOEQ_OK;
            off += len;
        }
        if (st == MOEQ_OK && moeq_model_layer(s->m, l)->is_moe) s->res->layers_quantized++;
        free(b);
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
    /* what decides the codes: the model's shape, the tokens, and every option of the run */
    uint64_t th = XXH64(tokens, (size_t)(W * ctx) * sizeof(int32_t), 0);
    char hx[17], cdc[64];
    snprintf(hx, sizeof hx, "%016llx", (unsigned long long)th);
    /* every piece's codec (scope, rules and plan applied) and the GPTQ options */
    int64_t *codes = malloc((s.n_mats + 1) * 4 * sizeof *codes);
    if (!codes) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < s.n_mats; i++) {
        moeq_codec cd = {0};
        moeq_error e2;
        if (moeq_quant_piece_codec(m, qo, r->mats[i].mat.tensor, r->mats[i].name, &cd, &e2) != MOEQ_OK) cd.type = -1;
        int64_t row[4] = {cd.type, cd.bits, cd.group, cd.sym};
        memcpy(codes + 4 * i, row, sizeof row);
    }
    snprintf(cdc, sizeof cdc, "%016llx/%g/%d/%d/%d", (unsigned long long)XXH64(codes, s.n_mats * 4 * sizeof *codes, 0),
             r->opts.damp, r->opts.act_order, r->opts.block, (int)qo->scope);
    free(codes);
    moeq_resume_field in[12];
    size_t nin = 0;
    char v[64];
#define FIELD_I(name, val) (snprintf(v, sizeof v, "%lld", (long long)(val)), moeq_resume_field_text(&in[nin++], name, v))
    moeq_resume_field_text(&in[nin++], "model_type", c->model_type);
    FIELD_I("layers", c->layers);
    FIELD_I("hidden", c->hidden);
    FIELD_I("experts", c->n_experts);
    moeq_resume_field_text(&in[nin++], "tokens_xxh64", hx);
    FIELD_I("tokens", W * ctx);
    FIELD_I("ctx", ctx);
    FIELD_I("min_tokens", r->min_tokens);
    FIELD_I("fallback", (int64_t)r->fallback);
    moeq_resume_field_text(&in[nin++], "codecs_gptq_scope", cdc);
    FIELD_I("pieces", (int64_t)s.n_mats);
#undef FIELD_I
    int64_t done = 0;
    moeq_status st = MOEQ_OK;
    if (so->resume_dir && moeq_dist_rank() == 0) {
        st = moeq_resume_open(so->resume_dir, "quantize-sequential", in, nin, c->layers, &s.rs, err);
        if (st == MOEQ_OK) done = moeq_layerwise_resume_start(s.rs, so->resume_dir, c->layers);
    }
    st = moeq_dist_agree(st, err);
    if (st == MOEQ_OK) st = moeq_dist_bcast(&done, sizeof done, 0, err);
    res->resumed_layers = done;
    if (st == MOEQ_OK && done > 0 && moeq_dist_rank() == 0) st = replay(&s, done, err);
    st = moeq_dist_agree(st, err);
    if (st == MOEQ_OK) st = moeq_calib_collector_create_full(m, ctx, 0, 0, threads, &s.col, err);
    if (st == MOEQ_OK && done < c->layers) {
        moeq_layerwise lw = { .ctx = ctx, .windows = W, .threads = threads, .keep_inputs = 1, .user = &s,
                              .layer_hooks = seq_hooks, .window_done = seq_window, .layer_done = seq_layer_done,
                              .collector = s.col, .resume_dir = so->resume_dir,
                              .first_layer = done };
        s.t0 = moeq_now();
        st = moeq_layerwise_run(m, tokens, &lw, err);
        res->seconds = moeq_now() - s.t0;
    }
    res->resume = s.rs;   /* removed by the caller once the file is written (moeq_gptq_seq_done) */
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

void moeq_gptq_seq_done(moeq_gptq_seq_result *res, const char *resume_dir, int64_t layers, int written)
{
    if (!res->resume) return;
    if (written) {
        moeq_layerwise_resume_clean(resume_dir, layers);
        moeq_resume_remove(res->resume);
    } else {
        moeq_resume_close(res->resume);
    }
    res->resume = NULL;
}
