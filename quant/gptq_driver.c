/* The routed-expert matrix list by packed name, and the per-piece callback that turns
 * moeq_quantize_rtn's loop into GPTQ: find the piece's expert, read its Hessian (gate and up
 * share one factorization), handle dead/undersampled experts and failed factorizations, and
 * record every fallback. */
#include "moeq_gptq.h"
#include "moeq_calib.h"
#include "moeq_core.h"
#include "moeq_kernels.h"
#include "moeq_ggml.h"
#include "moeq_tdict.h"
#include "moeq_quant.h"

#include <math.h>
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
                /* an MXFP4 expert (gpt_oss) is packed under the bf16 tensor its _blocks encode */
                char tn[512];
                size_t tl = (size_t)snprintf(tn, sizeof tn, "%.511s", mm[p].tensor ? mm[p].tensor : "");
                if (mm[p].mx_scales && tl > 7 && !strcmp(tn + tl - 7, "_blocks")) tn[tl - 7] = '\0';
                if (mm[p].index < 0) snprintf(x->name, sizeof x->name, "%s", tn);
                else if (fused_gate_up)
                    snprintf(x->name, sizeof x->name, "%s[%lld].%s", tn, (long long)mm[p].index,
                             p == 0 ? "gate" : "up");
                else snprintf(x->name, sizeof x->name, "%s[%lld]", tn, (long long)mm[p].index);
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

/* Σ x xᵀ of one expert's input over the split (expert -1: summed over the layer's experts in
 * order, as the file reader sums them); *rows its token count. The sequential run has no split. */
static moeq_status expert_hessian(moeq_gptq_run *r, int64_t layer, int64_t expert, int down, int split, double *H,
                                  int64_t dim, int64_t *rows, moeq_error *err)
{
    if (!r->stats) return moeq_calib_file_hessian_split(r->calib, layer, expert, down, split, H, dim, rows, err);
    const moeq_calib_acc *a = down ? r->stats->expert_down : r->stats->expert_in;
    int64_t E = r->stats->n_experts;
    if (r->stats->layer != layer || expert < -1 || expert >= E || a[0].dim != dim || !a[0].hess || split)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "sequential GPTQ: no Hessian for layer %lld expert %lld",
                         (long long)layer, (long long)expert);
    size_t nn = (size_t)(dim * dim);
    if (expert >= 0) {
        memcpy(H, a[expert].hess, nn * sizeof *H);
        *rows = r->stats->expert_tokens[expert];
        return MOEQ_OK;
    }
    memset(H, 0, nn * sizeof *H);
    *rows = 0;
    for (int64_t e = 0; e < E; e++) {
        for (size_t i = 0; i < nn; i++) H[i] += a[e].hess[i];
        *rows += r->stats->expert_tokens[e];
    }
    return MOEQ_OK;
}

const double moeq_damp_candidates[MOEQ_DAMP_CANDIDATES] = {0.01, 0.03, 0.1, 0.3};

void moeq_hessian_shrink(const double *H_e, int64_t n_e, const double *H_pool, int64_t n_pool, double n0,
                         int64_t dim, double *out)
{
    size_t nn = (size_t)(dim * dim);
    if (n_pool <= 0 || !(n0 > 0)) {
        if (out != H_e) memcpy(out, H_e, nn * sizeof *out);
        return;
    }
    double a = 1.0 / ((double)n_e + n0), b = n0 / (double)n_pool * a;
    for (size_t i = 0; i < nn; i++) out[i] = a * H_e[i] + b * H_pool[i];
}

/* The expert's own Hessians of the fitted split (Hc) and, with a validation split, of the
 * validation windows (Hv), cached for the expert's pieces. */
static moeq_status load_own(moeq_gptq_run *r, int64_t layer, int64_t expert, int kind, int64_t dim, moeq_error *err)
{
    if (r->Hc && r->Hc_layer == layer && r->Hc_expert == expert && r->Hc_kind == kind) return MOEQ_OK;
    free(r->Hc);
    free(r->Hv);
    r->Hc = malloc((size_t)(dim * dim) * sizeof *r->Hc);
    /* the validation Hessian whenever the file has the split (held out only with split CAL) */
    int val = !r->stats && r->calib && moeq_calib_file_val_windows(r->calib) > 0;
    r->Hv = val ? malloc((size_t)(dim * dim) * sizeof *r->Hv) : NULL;
    r->Hc_layer = -1;
    if (!r->Hc || (val && !r->Hv))
        return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for the Hessians of layer %lld expert %lld",
                         (long long)layer, (long long)expert);
    /* H_cal = H − H_val from the two stored sums (two reads, not three) */
    int cal = r->split == MOEQ_SPLIT_CAL && r->Hv;
    moeq_status st = expert_hessian(r, layer, expert, kind, cal ? MOEQ_SPLIT_ALL : r->split, r->Hc, dim, &r->Hc_rows, err);
    int64_t rv;
    if (st == MOEQ_OK && r->Hv) st = expert_hessian(r, layer, expert, kind, MOEQ_SPLIT_VAL, r->Hv, dim, &rv, err);
    if (st) return st;
    if (cal) {
        for (int64_t i = 0; i < dim * dim; i++) r->Hc[i] -= r->Hv[i];
        r->Hc_rows -= rv;
    }
    r->Hc_layer = layer;
    r->Hc_expert = expert;
    r->Hc_kind = kind;
    return MOEQ_OK;
}

static moeq_status load_pool(moeq_gptq_run *r, int64_t layer, int kind, int64_t dim, moeq_error *err)
{
    if (r->Hpool[kind] && r->Hpool_layer[kind] == layer) return MOEQ_OK;
    free(r->Hpool[kind]);
    r->Hpool_layer[kind] = -1;
    if (!(r->Hpool[kind] = malloc((size_t)(dim * dim) * sizeof *r->Hpool[kind])))
        return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for the pooled Hessian of layer %lld", (long long)layer);
    moeq_status st = expert_hessian(r, layer, -1, kind, r->split, r->Hpool[kind], dim, &r->Hpool_rows[kind], err);
    if (st) return st;
    r->Hpool_layer[kind] = layer;
    return MOEQ_OK;
}

static const moeq_expert_mat *find_mat(const moeq_gptq_run *r, int64_t layer, int64_t expert, moeq_proj proj)
{
    for (size_t i = 0; i < r->n_mats; i++)
        if (r->mats[i].layer == layer && r->mats[i].expert == expert && r->mats[i].proj == proj) return &r->mats[i];
    return NULL;
}

#define PROBE_EXPERTS 2
#define PROBE_ROWS 64

/* --damp auto for (layer, kind, codec): GPTQ of the first PROBE_ROWS (64) rows of the busiest
 * well-sampled experts' matrices of that input (rows are independent given the factor, so these
 * are the rows the full run gives) with each candidate damping on the calibration split, scored
 * by Σ tr(ΔW H_val ΔWᵀ) on the validation split; the least wins, ties to the smaller damping.
 * Deterministic: every MPI rank that needs it computes the same choice. */
static moeq_status damp_choose(moeq_gptq_run *r, int64_t layer, int kind, const moeq_codec *cd, int64_t dim,
                               double *damp, moeq_error *err)
{
    for (size_t i = 0; i < r->n_choices; i++) {
        const moeq_gptq_damp_choice *c = &r->choices[i];
        if (c->layer == layer && c->kind == kind && c->bits == cd->bits && c->group == cd->group && c->sym == cd->sym &&
            c->gtype == cd->gtype) {
            *damp = c->damp;
            return MOEQ_OK;
        }
    }
    if (r->n_choices == r->cap_choices) {
        size_t nc = r->cap_choices ? 2 * r->cap_choices : 16;
        moeq_gptq_damp_choice *p = realloc(r->choices, nc * sizeof *p);
        if (!p) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
        r->choices = p;
        r->cap_choices = nc;
    }
    moeq_gptq_damp_choice ch = { .layer = layer, .kind = kind, .bits = cd->bits, .group = cd->group, .sym = cd->sym,
                                 .gtype = cd->type == MOEQ_CODEC_GGML ? cd->gtype : 0, .damp = r->opts.damp > 0 ? r->opts.damp : 0.01, .experts = {-1, -1} };
    const moeq_config *c = moeq_model_config(r->m);
    int64_t best_n[PROBE_EXPERTS];
    for (int k = 0; k < PROBE_EXPERTS; k++) best_n[k] = -1;
    moeq_status st = MOEQ_OK;
    for (int64_t e = 0; e < c->n_experts; e++) {   /* the busiest well-sampled experts, ties by index */
        int64_t n;
        int flag;
        if ((st = expert_info(r, layer, e, &n, &flag, err))) return st;
        if (flag != MOEQ_CALIB_OK) continue;
        for (int k = 0; k < PROBE_EXPERTS; k++)
            if (n > best_n[k]) {
                for (int j = PROBE_EXPERTS - 1; j > k; j--) { best_n[j] = best_n[j - 1]; ch.experts[j] = ch.experts[j - 1]; }
                best_n[k] = n;
                ch.experts[k] = e;
                break;
            }
    }
    double *Hc = malloc((size_t)(dim * dim) * sizeof *Hc), *Hv = malloc((size_t)(dim * dim) * sizeof *Hv);
    float *w = NULL, *wq = NULL;
    uint8_t *raw = NULL;
    if (!Hc || !Hv) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); goto done; }
    for (int k = 0; st == MOEQ_OK && k < PROBE_EXPERTS && ch.experts[k] >= 0; k++) {
        int64_t e = ch.experts[k], rows_c, rows_v;
        if ((st = expert_hessian(r, layer, e, kind, MOEQ_SPLIT_ALL, Hc, dim, &rows_c, err))) break;
        if ((st = expert_hessian(r, layer, e, kind, MOEQ_SPLIT_VAL, Hv, dim, &rows_v, err))) break;
        for (int64_t j = 0; j < dim * dim; j++) Hc[j] -= Hv[j];   /* H_cal, as the reader computes it */
        const moeq_expert_mat *mx[2] = { find_mat(r, layer, e, kind ? MOEQ_PROJ_DOWN : MOEQ_PROJ_GATE),
                                         kind ? NULL : find_mat(r, layer, e, MOEQ_PROJ_UP) };
        for (int ci = 0; st == MOEQ_OK && ci < MOEQ_DAMP_CANDIDATES; ci++) {
            moeq_gptq_opts o = r->opts;
            o.damp = moeq_damp_candidates[ci];
            moeq_gptq_hinv *h = NULL;
            moeq_gptq_info info;
            moeq_error e2;
            if (cd->type == MOEQ_CODEC_GGML) {   /* moeq_ggml_gptq factorizes itself */
                for (int p = 0; st == MOEQ_OK && p < 2 && mx[p]; p++) {
                    const moeq_mat *mm = &mx[p]->mat;
                    int64_t R = mm->rows < PROBE_ROWS ? mm->rows : PROBE_ROWS;
                    free(w); free(wq); free(raw);
                    w = malloc((size_t)(R * mm->cols) * sizeof *w);
                    wq = malloc((size_t)(R * mm->cols) * sizeof *wq);
                    raw = malloc((size_t)moeq_codec_raw_bytes(cd, R, mm->cols));
                    if (!w || !wq || !raw) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); break; }
                    moeq_mat_to_f32(mm, 0, R, w);
                    st = moeq_ggml_gptq((moeq_ggml_type)cd->gtype, w, R, mm->cols, Hc, &o, raw, wq, &info, err);
                    if (st == MOEQ_OK && (info.rtn_fallback || info.retries)) { ch.val_err[ci] = INFINITY; break; }
                    if (st == MOEQ_OK) ch.val_err[ci] += moeq_hessian_error(w, wq, R, mm->cols, Hv);
                }
                continue;
            }
            moeq_status hs = moeq_gptq_hinv_create(Hc, dim, &o, &h, &info, &e2);
            if (hs == MOEQ_ERR_NUMERIC || (hs == MOEQ_OK && info.retries)) {   /* not this damping */
                moeq_gptq_hinv_free(h);
                ch.val_err[ci] = INFINITY;
                continue;
            }
            if (hs) { *err = e2; st = hs; break; }
            for (int p = 0; st == MOEQ_OK && p < 2 && mx[p]; p++) {
                const moeq_mat *mm = &mx[p]->mat;
                int64_t R = mm->rows < PROBE_ROWS ? mm->rows : PROBE_ROWS;
                int g = cd->group ? cd->group : (int)mm->cols;
                uint64_t total = moeq_qmat_bytes(cd->bits, g, cd->sym, R, mm->cols, NULL, NULL);
                free(w); free(wq); free(raw);
                w = malloc((size_t)(R * mm->cols) * sizeof *w);
                wq = malloc((size_t)(R * mm->cols) * sizeof *wq);
                raw = malloc((size_t)total);
                if (!w || !wq || !raw) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); break; }
                moeq_mat_to_f32(mm, 0, R, w);
                st = moeq_gptq_apply(h, w, R, mm->cols, cd->bits, cd->group, cd->sym, o.block, o.threads, raw, wq, err);
                if (st == MOEQ_OK) ch.val_err[ci] += moeq_hessian_error(w, wq, R, mm->cols, Hv);
            }
            moeq_gptq_hinv_free(h);
        }
    }
    if (st == MOEQ_OK && ch.experts[0] >= 0) {
        int bi = -1;
        for (int ci = 0; ci < MOEQ_DAMP_CANDIDATES; ci++)
            if (ch.val_err[ci] == ch.val_err[ci] && (bi < 0 || ch.val_err[ci] < ch.val_err[bi])) bi = ci;
        if (bi >= 0) ch.damp = moeq_damp_candidates[bi];
    }
done:
    free(Hc); free(Hv); free(w); free(wq); free(raw);
    if (st) return st;
    r->choices[r->n_choices++] = ch;
    *damp = ch.damp;
    return MOEQ_OK;
}

moeq_status moeq_gptq_note_piece(moeq_gptq_run *r, int64_t layer, int kind, double damp, double err_cal,
                                 double err_val, moeq_error *err)
{
    const moeq_config *c = moeq_model_config(r->m);
    if (layer < 0 || layer >= c->layers || kind < 0 || kind > 1)
        return moeq_fail(err, MOEQ_ERR_FORMAT, "a piece's note names layer %lld kind %d", (long long)layer, kind);
    if (!r->layers && !(r->layers = calloc((size_t)c->layers, sizeof *r->layers)))
        return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    moeq_gptq_layer_rep *L = &r->layers[layer];
    L->err_cal += err_cal;
    L->err_val += err_val;
    L->pieces++;
    if (damp > 0) {
        L->damp_sum[kind] += damp;
        L->damp_n[kind]++;
    }
    return MOEQ_OK;
}

/* The report of one finished piece: its error with the expert's own Hessians of both splits. */
static moeq_status piece_report(moeq_gptq_run *r, const moeq_expert_mat *x, int kind, const float *w, int64_t rows,
                                int64_t cols, const moeq_codec *cd, const uint8_t *raw, double damp, moeq_error *err)
{
    if (!r->report) return MOEQ_OK;
    moeq_status st = load_own(r, x->layer, x->expert, kind, cols, err);
    if (st) return st;
    float *wq = malloc((size_t)(rows * cols) * sizeof *wq);
    if (!wq) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    moeq_codec_dequant(cd, raw, rows, cols, 0, rows, wq);
    double ec = moeq_hessian_error(w, wq, rows, cols, r->Hc);
    double ev = r->Hv ? moeq_hessian_error(w, wq, rows, cols, r->Hv) : 0;
    free(wq);
    r->note.valid = 1;
    r->note.layer = x->layer;
    r->note.kind = kind;
    r->note.damp = damp;
    r->note.err_cal = ec;
    r->note.err_val = ev;
    return moeq_gptq_note_piece(r, x->layer, kind, damp, ec, ev, err);
}

typedef enum { OWN, POOL, SHRUNK, NONE } hsrc;   /* which Hessian a piece's GPTQ uses */

/* The Hessian of src for expert x's input kind: *H points into the run's caches, or at *Hs
 * (malloc'ed, the caller frees it) for the shrunk one. */
static moeq_status piece_hessian(moeq_gptq_run *r, const moeq_expert_mat *x, int kind, hsrc src, int64_t cols,
                                 const char *name, const double **H, double **Hs, moeq_error *err)
{
    moeq_status st;
    *Hs = NULL;
    if (src == POOL) {
        if ((st = load_pool(r, x->layer, kind, cols, err))) return st;
        *H = r->Hpool[kind];
        return MOEQ_OK;
    }
    if ((st = load_own(r, x->layer, x->expert, kind, cols, err))) return st;
    *H = r->Hc;
    if (src != SHRUNK) return MOEQ_OK;
    if ((st = load_pool(r, x->layer, kind, cols, err))) return st;
    if (!(*Hs = malloc((size_t)(cols * cols) * sizeof **Hs)))
        return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for the Hessian of '%s'", name);
    moeq_hessian_shrink(r->Hc, r->Hc_rows, r->Hpool[kind], r->Hpool_rows[kind],
                        r->shrink_n0 > 0 ? r->shrink_n0 : (double)cols, cols, *Hs);
    *H = *Hs;
    return MOEQ_OK;
}

/* Records a GPTQ pass's Cholesky outcome: every retry failed (fell back to `fallback`, "rtn" kind)
 * or it needed more damping; counts the matrix as GPTQ'd unless it fell back. */
static moeq_status note_cholesky(moeq_gptq_run *r, const char *name, const moeq_gptq_info *info, const char *fallback,
                                 moeq_error *err)
{
    char why[200];
    moeq_status st = MOEQ_OK;
    if (info->rtn_fallback) {
        snprintf(why, sizeof why, "Cholesky failed up to damping %g: %s", info->damp, fallback);
        st = moeq_gptq_add_fallback(r, name, "rtn", why, err);
    } else if (info->retries) {
        snprintf(why, sizeof why, "Cholesky needed damping %g (%d retries)", info->damp, info->retries);
        st = moeq_gptq_add_fallback(r, name, "damping", why, err);
    }
    r->gptq_matrices += !info->rtn_fallback;
    return st;
}

/* The calibration subgroup (docs/STATS.md) whose Hessian is the input of the layer matrix named
 * name with cols columns, and its layer: attention's q/k/v (MLA: q_a, kv_a, or q_proj) read
 * attn_in, o reads attn_o, MLA's q_b and kv_b their normed latents (q_b_in, kv_b_in), shared and
 * dense MLPs their own inputs. NULL when name is none of these. */
static const char *layer_group(const moeq_model *m, const char *name, int64_t cols, int64_t *layer)
{
    const moeq_config *c = moeq_model_config(m);
    for (int64_t l = 0; l < c->layers; l++) {
        const moeq_layer_view *L = moeq_model_layer(m, l);
        const struct { const moeq_mat *v; const char *g; } t[] = {
            { &L->q, "attn_in" },  { &L->k, "attn_in" },  { &L->v, "attn_in" }, { &L->q_a, "attn_in" },
            { &L->kv_a, "attn_in" }, { &L->o, "attn_o" }, { &L->q_b, "q_b_in" }, { &L->kv_b, "kv_b_in" },
            { &L->shared_gate, "shared_in" }, { &L->shared_up, "shared_in" }, { &L->shared_down, "shared_down" },
            { &L->dense_gate, "dense_in" }, { &L->dense_up, "dense_in" }, { &L->dense_down, "dense_down" },
        };
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
            if (t[i].v->tensor && t[i].v->cols == cols && !strcmp(t[i].v->tensor, name)) {
                *layer = l;
                return t[i].g;
            }
    }
    return NULL;
}

/* A layer matrix (attention, shared or dense MLP) with its subgroup's Hessian H (all the
 * calibration tokens pass through it, so none is undersampled): GPTQ on the codec's grid, or
 * with --method rtn the grid search weighted by diag(H). */
static moeq_status tdict_with_h(moeq_gptq_run *r, const char *name, const float *w, int64_t rows, int64_t cols,
                                const double *H, uint8_t *raw, double *damp_used, moeq_error *err);

static moeq_status layer_piece(moeq_gptq_run *r, const char *name, const float *w, int64_t rows, int64_t cols,
                               const moeq_codec *codec, const double *H, uint8_t *raw, moeq_error *err)
{
    const int gg = codec->type == MOEQ_CODEC_GGML;
    moeq_status st;
    double t0 = moeq_now();
    if (codec->type == MOEQ_CODEC_TDICT) {
        double du;
        return tdict_with_h(r, name, w, rows, cols, H, raw, &du, err);
    }
    if (r->rtn) {
        double *d = malloc((size_t)cols * sizeof *d);
        if (!d) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
        for (int64_t j = 0; j < cols; j++) d[j] = H[j * cols + j];
        if (gg) st = moeq_ggml_quantize_rows((moeq_ggml_type)codec->gtype, w, rows, cols, d, raw, err);
        else st = moeq_rtn_quantize_weighted(w, rows, cols, codec->bits, codec->group, codec->sym, d, r->opts.grid_steps,
                                             raw, err);
        free(d);
        r->seconds_gptq += moeq_now() - t0;
        return st;
    }
    moeq_gptq_opts o = r->opts;
    o.damp = r->opts.damp > 0 ? r->opts.damp : 0.01;   /* --damp auto chooses for experts only */
    moeq_gptq_info info = { 0 };
    if (gg) {
        if ((st = moeq_ggml_gptq((moeq_ggml_type)codec->gtype, w, rows, cols, H, &o, raw, NULL, &info, err))) return st;
    } else {
        moeq_gptq_hinv *h = NULL;
        moeq_error e2;
        st = moeq_gptq_hinv_create(H, cols, &o, &h, &info, &e2);
        if (st && st != MOEQ_ERR_NUMERIC) { *err = e2; return st; }
        if (st == MOEQ_OK) st = moeq_gptq_apply(h, w, rows, cols, codec->bits, codec->group, codec->sym, o.block, o.threads,
                                                raw, NULL, err);
        else {
            info.rtn_fallback = 1;
            st = moeq_codec_quantize_rtn(codec, w, rows, cols, raw, err);
        }
        moeq_gptq_hinv_free(h);
        if (st) return st;
    }
    if ((st = note_cholesky(r, name, &info, gg ? "the weighted search" : "RTN", err))) return st;
    r->seconds_gptq += moeq_now() - t0;
    return MOEQ_OK;
}

/* t1d (QMoE): ternary GPTQ through H's factor (NULL H, or --method rtn: RTN ternary); damping
 * r->tdict_damp; a failed factorization falls back to RTN. *damp_used: 0 when no feedback. */
static moeq_status tdict_with_h(moeq_gptq_run *r, const char *name, const float *w, int64_t rows, int64_t cols,
                                const double *H, uint8_t *raw, double *damp_used, moeq_error *err)
{
    const uint64_t cap = moeq_tdict_raw_bound(rows, cols);
    double t0 = moeq_now();
    *damp_used = 0;
    if (!H || r->rtn) return moeq_tdict_quantize(w, rows, cols, NULL, NULL, 0, raw, cap, NULL, NULL, err);
    moeq_gptq_opts o = r->opts;
    o.damp = r->tdict_damp > 0 ? r->tdict_damp : 0.1;
    moeq_gptq_hinv *h = NULL;
    moeq_gptq_info info = { 0 };
    moeq_error e2;
    moeq_status st = moeq_gptq_hinv_create(H, cols, &o, &h, &info, &e2);
    if (st && st != MOEQ_ERR_NUMERIC) { *err = e2; return st; }
    if (st) { info.rtn_fallback = 1; h = NULL; }
    int64_t n = 0;
    const int64_t *perm = NULL;
    const double *U = h ? moeq_gptq_hinv_factor(h, &n, &perm) : NULL;
    st = moeq_tdict_quantize(w, rows, cols, U, perm, 0, raw, cap, NULL, NULL, err);
    moeq_gptq_hinv_free(h);
    if (!st) st = note_cholesky(r, name, &info, "RTN", err);
    r->seconds_gptq += moeq_now() - t0;
    if (!info.rtn_fallback) *damp_used = info.damp;
    return st;
}

moeq_status moeq_gptq_piece(void *user, const char *name, const float *w, int64_t rows, int64_t cols,
                            const moeq_codec *codec, uint8_t *raw, moeq_error *err)
{
    moeq_gptq_run *r = user;
    const int bits = codec->bits, group = codec->group, sym = codec->sym;
    const int gg = codec->type == MOEQ_CODEC_GGML;
    r->note.valid = 0;
    if (gg && !r->calib)
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "'%s': codec %s: sequential GPTQ takes int codecs only; calibrate "
                         "first (moeq calibrate) and give --calib", name, moeq_ggml_type_get(codec->gtype)->name);
    if (codec->type == MOEQ_CODEC_TDICT && !r->calib)
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "'%s': codec t1d: sequential GPTQ takes int codecs only; calibrate "
                         "first (moeq calibrate) and give --calib", name);
    int64_t i = moeq_expert_index_find(r->index, name);
    if (i < 0) {   /* attention, shared or dense matrices: their subgroup's Hessian when the file has it */
        int64_t gl = -1;
        const char *grp = r->calib ? layer_group(r->m, name, cols, &gl) : NULL;
        if (grp) {
            moeq_status sg = MOEQ_OK;
            if (r->Hg_group != grp || r->Hg_layer != gl || r->Hg_dim != cols) {   /* read once per subgroup */
                free(r->Hg);
                r->Hg_group = NULL;
                if (!(r->Hg = malloc((size_t)(cols * cols) * sizeof *r->Hg)))
                    return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory for the Hessian of '%s'", name);
                moeq_error e2;
                r->Hg_rows = 0;
                sg = moeq_calib_file_group_hessian(r->calib, gl, grp, r->Hg, cols, &r->Hg_rows, &e2);
                if (sg && sg != MOEQ_ERR_NOT_FOUND) { *err = e2; return sg; }
                if (sg == MOEQ_ERR_NOT_FOUND) r->Hg_rows = 0;   /* remembered as missing */
                r->Hg_group = grp;
                r->Hg_layer = gl;
                r->Hg_dim = cols;
            }
            if (r->Hg_rows > 0) return layer_piece(r, name, w, rows, cols, codec, r->Hg, raw, err);
        }
        char why[160];
        snprintf(why, sizeof why, grp ? "no %s Hessian in the calibration file (calibrate --scope all)"
                                      : "not a routed expert: no Hessian", grp);
        moeq_status st = r->rtn ? MOEQ_OK : moeq_gptq_add_fallback(r, name, "rtn", why, err);
        return st ? st : moeq_codec_quantize_rtn(codec, w, rows, cols, raw, err);
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
    /* which Hessian: the expert's own, the layer's pool (layer-mean), the shrunk one, or none (RTN) */
    hsrc src = OWN;
    if (flag != MOEQ_CALIB_OK) {
        const char *fk = r->fallback == MOEQ_FALLBACK_RTN ? "rtn" : r->fallback == MOEQ_FALLBACK_LAYER_MEAN ? "layer-mean"
                                                                                                             : "shrunk";
        src = r->fallback == MOEQ_FALLBACK_RTN ? NONE : r->fallback == MOEQ_FALLBACK_LAYER_MEAN ? POOL : SHRUNK;
        double n0 = r->shrink_n0 > 0 ? r->shrink_n0 : (double)cols;
        snprintf(why, sizeof why, "%s expert (%lld tokens, min_tokens %lld)%s", flag == MOEQ_CALIB_DEAD ? "dead" : "undersampled",
                 (long long)ntok, (long long)(r->stats ? r->min_tokens : moeq_calib_file_min_tokens(r->calib)),
                 src == POOL ? ": the layer's mean Hessian" : src == SHRUNK ? ": shrunk toward the layer's pooled Hessian" : "");
        if (src == SHRUNK) {
            size_t l = strlen(why);
            snprintf(why + l, sizeof why - l, " (prior %g tokens)", n0);
        }
        if (!r->rtn && (st = moeq_gptq_add_fallback(r, name, fk, why, err))) return st;
    }
    if (codec->type == MOEQ_CODEC_TDICT) {   /* ternary GPTQ on the Hessian src names, RTN without one */
        const double *H = NULL;
        double *Hs = NULL, dused = 0;
        if (src != NONE && !r->rtn && (st = piece_hessian(r, x, kind, src, cols, name, &H, &Hs, err))) return st;
        st = tdict_with_h(r, name, w, rows, cols, src == NONE ? NULL : H, raw, &dused, err);
        free(Hs);
        return st ? st : piece_report(r, x, kind, w, rows, cols, codec, raw, dused, err);
    }
    double t0 = moeq_now();
    if (r->rtn) {   /* RTN with the calibration file: grids weighted by the diagonal of the Hessian GPTQ would use */
        double *d = NULL;
        if ((r->opts.grid_steps > 1 || gg) && src != NONE) {   /* ggml's searches take it at any --grid-steps */
            if ((st = load_own(r, x->layer, x->expert, kind, cols, err))) return st;
            if (src != OWN && (st = load_pool(r, x->layer, kind, cols, err))) return st;
            if (!(d = malloc((size_t)cols * sizeof *d))) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
            double n0 = r->shrink_n0 > 0 ? r->shrink_n0 : (double)cols;
            for (int64_t j = 0; j < cols; j++) {
                double he = r->Hc[j * cols + j], hp = src == OWN ? 0 : r->Hpool[kind][j * cols + j];
                d[j] = src == OWN ? he : src == POOL ? hp
                     : r->Hpool_rows[kind] > 0 ? (he + n0 / (double)r->Hpool_rows[kind] * hp) / ((double)r->Hc_rows + n0) : he;
            }
        }
        if (gg) st = moeq_ggml_quantize_rows((moeq_ggml_type)codec->gtype, w, rows, cols, d, raw, err);
        else st = d ? moeq_rtn_quantize_weighted(w, rows, cols, bits, group, sym, d, r->opts.grid_steps, raw, err)
                    : moeq_rtn_quantize(w, rows, cols, bits, group, sym, raw, err);
        free(d);
        r->seconds_gptq += moeq_now() - t0;
        return st ? st : piece_report(r, x, kind, w, rows, cols, codec, raw, 0, err);
    }
    if (src == NONE) {
        st = moeq_codec_quantize_rtn(codec, w, rows, cols, raw, err);
        return st ? st : piece_report(r, x, kind, w, rows, cols, codec, raw, 0, err);
    }
    double damp = r->opts.damp > 0 ? r->opts.damp : 0.01;
    if (r->damp_auto && (st = damp_choose(r, x->layer, kind, codec, cols, &damp, err))) return st;
    if (gg) {   /* GPTQ on the type's grid: moeq_ggml_gptq factorizes H itself (gate and up: twice) */
        const double *H = NULL;
        double *Hs = NULL;
        if ((st = piece_hessian(r, x, kind, src, cols, name, &H, &Hs, err))) return st;
        moeq_gptq_opts o = r->opts;
        o.damp = damp;
        moeq_gptq_info info;
        st = moeq_ggml_gptq((moeq_ggml_type)codec->gtype, w, rows, cols, H, &o, raw, NULL, &info, err);
        free(Hs);
        if (st) return st;
        if ((st = note_cholesky(r, name, &info, "the weighted search", err))) return st;
        r->seconds_gptq += moeq_now() - t0;
        return piece_report(r, x, kind, w, rows, cols, codec, raw, info.rtn_fallback ? 0 : info.damp, err);
    }
    int64_t hexp = src == POOL ? -1 : x->expert;
    if (!r->hinv || r->H_layer != x->layer || r->H_expert != hexp || r->H_kind != kind || r->H_damp != damp ||
        !r->hinv_ok) {
        moeq_gptq_hinv_free(r->hinv);
        r->hinv = NULL;
        r->hinv_ok = 0;
        const double *H = NULL;
        double *Hs = NULL;
        if ((st = piece_hessian(r, x, kind, src, cols, name, &H, &Hs, err))) return st;
        moeq_gptq_opts o = r->opts;
        o.damp = damp;
        moeq_error e2;
        st = moeq_gptq_hinv_create(H, cols, &o, &r->hinv, &r->hinv_info, &e2);
        free(Hs);
        r->H_layer = x->layer;
        r->H_expert = hexp;
        r->H_kind = kind;
        r->H_damp = damp;
        if (st && st != MOEQ_ERR_NUMERIC) { *err = e2; return st; }
        r->hinv_ok = st == MOEQ_OK;
        if (!r->hinv_ok) r->hinv = NULL;
    }
    if (!r->hinv_ok) {
        snprintf(why, sizeof why, "Cholesky failed up to damping %g: RTN", r->hinv_info.damp);
        if ((st = moeq_gptq_add_fallback(r, name, "rtn", why, err))) return st;
        st = moeq_rtn_quantize(w, rows, cols, bits, group, sym, raw, err);
        return st ? st : piece_report(r, x, kind, w, rows, cols, codec, raw, 0, err);
    }
    if (r->hinv_info.retries) {
        snprintf(why, sizeof why, "Cholesky needed damping %g (%d retries)", r->hinv_info.damp, r->hinv_info.retries);
        if ((st = moeq_gptq_add_fallback(r, name, "damping", why, err))) return st;
    }
    st = moeq_gptq_apply(r->hinv, w, rows, cols, bits, group, sym, r->opts.block, r->opts.threads, raw, NULL, err);
    r->gptq_matrices += st == MOEQ_OK;
    r->seconds_gptq += moeq_now() - t0;
    return st ? st : piece_report(r, x, kind, w, rows, cols, codec, raw, r->hinv_info.damp, err);
}

void moeq_gptq_run_free(moeq_gptq_run *r)
{
    moeq_gptq_hinv_free(r->hinv);
    r->hinv = NULL;
    free(r->Hc); free(r->Hv); free(r->Hpool[0]); free(r->Hpool[1]); free(r->Hg);
    r->Hc = r->Hv = r->Hpool[0] = r->Hpool[1] = r->Hg = NULL;
    r->Hg_group = NULL;
    free(r->layers);
    r->layers = NULL;
    free(r->choices);
    r->choices = NULL;
    r->n_choices = r->cap_choices = 0;
    if (r->stored)
        for (size_t i = 0; i < r->n_mats; i++) free(r->stored[i].raw);
    free(r->stored);
    r->stored = NULL;
    free(r->fallbacks);
    r->fallbacks = NULL;
    r->n_fallbacks = r->cap_fallbacks = 0;
}
