/* The routed-expert matrix list by packed name, and the per-piece callback that turns
 * moeq_quantize_rtn's loop into GPTQ: find the piece's expert, read its Hessian (gate and up
 * share one factorization), handle dead/undersampled experts and failed factorizations, and
 * record every fallback. */
#include "moeq_gptq.h"
#include "moeq_calib.h"
#include "moeq_core.h"
#include "moeq_kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

moeq_status moeq_expert_mats(const moeq_model *m, moeq_expert_mat **out, size_t *n, moeq_error *err)
{
    const moeq_config *c = moeq_model_config(m);
    *out = NULL;
    *n = 0;
    size_t cap = 0, k = 0;
    for (int64_t l = 0; l < c->layers; l++)
        if (moeq_model_layer(m, l)->is_moe) cap += (size_t)c->n_experts * 3;
    moeq_expert_mat *v = calloc(cap ? cap : 1, sizeof *v);
    if (!v) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    for (int64_t l = 0; l < c->layers; l++) {
        if (!moeq_model_layer(m, l)->is_moe) continue;
        for (int64_t e = 0; e < c->n_experts; e++) {
            moeq_mat mm[3];
            for (int p = 0; p < 3; p++) {
                moeq_status st = moeq_model_expert(m, l, e, (moeq_proj)p, &mm[p], err);
                if (st) { free(v); return st; }
            }
            for (int p = 0; p < 3; p++) {
                moeq_expert_mat *x = &v[k++];
                x->layer = l;
                x->expert = e;
                x->proj = (moeq_proj)p;
                x->mat = mm[p];
                /* the names moeq_quantize_rtn gives pieces (FORMAT.md F-15) */
                int fused_gate_up = mm[p].index >= 0 && p < 2 && mm[0].tensor && mm[1].tensor &&
                                    !strcmp(mm[0].tensor, mm[1].tensor);
                if (mm[p].index < 0) snprintf(x->name, sizeof x->name, "%s", mm[p].tensor);
                else if (fused_gate_up)
                    snprintf(x->name, sizeof x->name, "%s[%lld].%s", mm[p].tensor, (long long)mm[p].index,
                             p == 0 ? "gate" : "up");
                else snprintf(x->name, sizeof x->name, "%s[%lld]", mm[p].tensor, (long long)mm[p].index);
            }
        }
    }
    *out = v;
    *n = k;
    return MOEQ_OK;
}

struct moeq_expert_index {
    const moeq_expert_mat *mats;
    size_t n;
    int64_t *order;   /* indexes sorted by name */
};

static const moeq_expert_mat *g_mats;
static int cmp_name(const void *a, const void *b)
{
    return strcmp(g_mats[*(const int64_t *)a].name, g_mats[*(const int64_t *)b].name);
}

moeq_status moeq_expert_index_build(const moeq_expert_mat *mats, size_t n, moeq_expert_index **out,
                                    moeq_error *err)
{
    moeq_expert_index *ix = calloc(1, sizeof *ix);
    if (!ix || !(ix->order = malloc((n ? n : 1) * sizeof *ix->order))) {
        free(ix);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    }
    ix->mats = mats;
    ix->n = n;
    for (size_t i = 0; i < n; i++) ix->order[i] = (int64_t)i;
    g_mats = mats;
    qsort(ix->order, n, sizeof *ix->order, cmp_name);
    *out = ix;
    return MOEQ_OK;
}

int64_t moeq_expert_index_find(const moeq_expert_index *ix, const char *name)
{
    size_t lo = 0, hi = ix->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(ix->mats[ix->order[mid]].name, name);
        if (c == 0) return ix->order[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

void moeq_expert_index_free(moeq_expert_index *ix)
{
    if (!ix) return;
    free(ix->order);
    free(ix);
}

moeq_status moeq_gptq_add_fallback(moeq_gptq_run *r, const char *name, const char *kind, const char *reason,
                                   moeq_error *err)
{
    if (r->n_fallbacks == r->cap_fallbacks) {
        size_t nc = r->cap_fallbacks ? 2 * r->cap_fallbacks : 16;
        moeq_gptq_fallback_rec *p = realloc(r->fallbacks, nc * sizeof *p);
        if (!p) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
        r->fallbacks = p;
        r->cap_fallbacks = nc;
    }
    moeq_gptq_fallback_rec *f = &r->fallbacks[r->n_fallbacks++];
    snprintf(f->tensor, sizeof f->tensor, "%s", name);
    snprintf(f->kind, sizeof f->kind, "%s", kind);
    snprintf(f->reason, sizeof f->reason, "%s", reason);
    return MOEQ_OK;
}

/* Coverage of a routed expert: from the calibration file, or from the sequential run's layer. */
static moeq_status expert_info(moeq_gptq_run *r, int64_t layer, int64_t expert, int64_t *ntok, int *flag,
                               moeq_error *err)
{
    if (!r->stats) return moeq_calib_file_expert(r->calib, layer, expert, ntok, flag, err);
    if (r->stats->layer != layer || !r->stats->is_moe || expert < 0 || expert >= r->stats->n_experts)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "sequential GPTQ: statistics of layer %lld asked for layer %lld "
                         "expert %lld", (long long)r->stats->layer, (long long)layer, (long long)expert);
    *ntok = r->stats->expert_tokens[expert];
    *flag = *ntok == 0 ? MOEQ_CALIB_DEAD : *ntok < r->min_tokens ? MOEQ_CALIB_UNDERSAMPLED : MOEQ_CALIB_OK;
    return MOEQ_OK;
}

/* Σ x xᵀ of one expert's input (expert -1: summed over the layer's experts in order, as the
 * file reader sums them). */
static moeq_status expert_hessian(moeq_gptq_run *r, int64_t layer, int64_t expert, int down, double *H,
                                  int64_t dim, moeq_error *err)
{
    if (!r->stats) return moeq_calib_file_hessian(r->calib, layer, expert, down, H, dim, NULL, err);
    const moeq_calib_acc *a = down ? r->stats->expert_down : r->stats->expert_in;
    int64_t E = r->stats->n_experts;
    if (r->stats->layer != layer || expert < -1 || expert >= E || a[0].dim != dim || !a[0].hess)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "sequential GPTQ: no Hessian for layer %lld expert %lld",
                         (long long)layer, (long long)expert);
    size_t nn = (size_t)(dim * dim);
    if (expert >= 0) {
        memcpy(H, a[expert].hess, nn * sizeof *H);
        return MOEQ_OK;
    }
    memset(H, 0, nn * sizeof *H);
    for (int64_t e = 0; e < E; e++)
        for (size_t i = 0; i < nn; i++) H[i] += a[e].hess[i];
    return MOEQ_OK;
}

moeq_status moeq_gptq_piece(void *user, const char *name, const float *w, int64_t rows, int64_t cols,
                            const moeq_codec *codec, uint8_t *raw, moeq_error *err)
{
    moeq_gptq_run *r = user;
    const int bits = codec->bits, group = codec->group, sym = codec->sym;
    int64_t i = moeq_expert_index_find(r->index, name);
    if (i < 0) {   /* attention, shared or dense matrices: no per-expert Hessian in the file */
        moeq_status st = moeq_gptq_add_fallback(r, name, "rtn", "not a routed expert: no Hessian", err);
        return st ? st : moeq_rtn_quantize(w, rows, cols, bits, group, sym, raw, err);
    }
    if (r->stored && r->stored[i].raw) {   /* quantized by the sequential pass */
        const moeq_gptq_stored *s = &r->stored[i];
        uint64_t want = moeq_qmat_bytes(bits, group ? group : (int)cols, sym, rows, cols, NULL, NULL);
        if (s->codec.bits != bits || s->codec.group != group || s->codec.sym != sym || s->size != want)
            return moeq_fail(err, MOEQ_ERR_MISUSE, "'%s': the sequential pass used another codec", name);
        memcpy(raw, s->raw, (size_t)s->size);
        return MOEQ_OK;
    }
    const moeq_expert_mat *x = &r->mats[i];
    int kind = x->proj == MOEQ_PROJ_DOWN;
    int64_t ntok;
    int flag;
    char why[200];
    moeq_status st = expert_info(r, x->layer, x->expert, &ntok, &flag, err);
    if (st) return st;
    int64_t hexp = x->expert;
    if (flag != MOEQ_CALIB_OK) {
        snprintf(why, sizeof why, "%s expert (%lld tokens, min_tokens %lld)%s",
                 flag == MOEQ_CALIB_DEAD ? "dead" : "undersampled", (long long)ntok,
                 (long long)(r->stats ? r->min_tokens : moeq_calib_file_min_tokens(r->calib)),
                 r->fallback == MOEQ_FALLBACK_RTN ? "" : ": the layer's mean Hessian");
        if ((st = moeq_gptq_add_fallback(r, name, r->fallback == MOEQ_FALLBACK_RTN ? "rtn" : "layer-mean", why, err))) return st;
        if (r->fallback == MOEQ_FALLBACK_RTN) return moeq_rtn_quantize(w, rows, cols, bits, group, sym, raw, err);
        hexp = -1;
    }
    double t0 = moeq_now();
    if (!r->hinv || r->H_layer != x->layer || r->H_expert != hexp || r->H_kind != kind || !r->hinv_ok) {
        moeq_gptq_hinv_free(r->hinv);
        r->hinv = NULL;
        r->hinv_ok = 0;
        double *H = malloc((size_t)(cols * cols) * sizeof *H);
        if (!H) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for the Hessian of '%s'", name);
        st = expert_hessian(r, x->layer, hexp, kind, H, cols, err);
        if (st) { free(H); return st; }
        moeq_error e2;
        st = moeq_gptq_hinv_create(H, cols, &r->opts, &r->hinv, &r->hinv_info, &e2);
        free(H);
        r->H_layer = x->layer;
        r->H_expert = hexp;
        r->H_kind = kind;
        if (st && st != MOEQ_ERR_NUMERIC) { *err = e2; return st; }
        r->hinv_ok = st == MOEQ_OK;
        if (!r->hinv_ok) r->hinv = NULL;
    }
    if (!r->hinv_ok) {
        snprintf(why, sizeof why, "Cholesky failed up to damping %g: RTN", r->hinv_info.damp);
        if ((st = moeq_gptq_add_fallback(r, name, "rtn", why, err))) return st;
        return moeq_rtn_quantize(w, rows, cols, bits, group, sym, raw, err);
    }
    if (r->hinv_info.retries) {
        snprintf(why, sizeof why, "Cholesky needed damping %g (%d retries)", r->hinv_info.damp, r->hinv_info.retries);
        if ((st = moeq_gptq_add_fallback(r, name, "damping", why, err))) return st;
    }
    st = moeq_gptq_apply(r->hinv, w, rows, cols, bits, group, sym, r->opts.block, r->opts.threads, raw, NULL, err);
    r->gptq_matrices += st == MOEQ_OK;
    r->seconds_gptq += moeq_now() - t0;
    return st;
}

void moeq_gptq_run_free(moeq_gptq_run *r)
{
    moeq_gptq_hinv_free(r->hinv);
    r->hinv = NULL;
    if (r->stored)
        for (size_t i = 0; i < r->n_mats; i++) free(r->stored[i].raw);
    free(r->stored);
    r->stored = NULL;
    free(r->fallbacks);
    r->fallbacks = NULL;
    r->n_fallbacks = r->cap_fallbacks = 0;
}
