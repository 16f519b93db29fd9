/* GGUF plans (docs/plan.md, "GGUF plans"): one ggml type per matrix of the GGUF an export writes
 * (a 3-D routed-expert tensor, one layer × projection, has one type for all its experts), chosen
 * by measured cost within a budget of GGUF bits (rows × block bytes × 8: scales included, as the
 * file holds them), solved exactly by moeq_plan_solve.
 *
 * Cost (hessian) of type t for a matrix: Σ over its experts of tr((W − Q_t(W)) H (W − Q_t(W))ᵀ),
 * Q_t the quantizer the export runs (the weighted search with diag(H), or GPTQ on t's grid), H
 * the expert's input Hessian — the same squared output error plan's hessian cost measures for
 * .moeq codecs, so a large busy tensor and a small quiet one compare. */
#include "moeq_plan_gguf.h"
#include "moeq_eval.h"
#include "moeq_gguf_export.h"
#include "moeq_ggml.h"
#include "moeq_gptq.h"
#include "moeq_calib.h"
#include "moeq_core.h"

#include <jansson.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The default candidates, all of them types mainline llama.cpp loads (ik_llama.cpp's IQ2_K only
 * when asked for: its files load nowhere else); below 3 bits per weight the ternary types too,
 * the only ones under Q2_K's 2.625 (above, the solver would never give them a whole tensor). */
static const int default_types[] = { MOEQ_GGML_Q2_K, MOEQ_GGML_Q3_K, MOEQ_GGML_Q4_K, MOEQ_GGML_Q5_K,
                                     MOEQ_GGML_Q6_K, MOEQ_GGML_Q8_0, MOEQ_GGML_IQ4_XS,
                                     MOEQ_GGML_TQ2_0, MOEQ_GGML_TQ1_0 };
#define N_DEFAULT_HIGH 7
#define LOW_BUDGET 3.0

static const int *candidates(const moeq_gguf_plan_opts *o, int *nt)
{
    if (o->n_types) { *nt = o->n_types; return o->types; }
    *nt = o->budget < LOW_BUDGET ? (int)(sizeof default_types / sizeof default_types[0]) : N_DEFAULT_HIGH;
    return default_types;
}

void moeq_gguf_plan_free(moeq_gguf_plan *p)
{
    free(p->items);
    memset(p, 0, sizeof *p);
}

typedef struct ws {
    float *wf, *wq;
    double *H, *Hq, *Hsum;
    unsigned char *blk;
    int64_t sum_layer, sum_down, sum_rows;   /* which layer sum Hsum holds (-1: none) */
    moeq_eval_ref_cache rc;                  /* measured: the reference's logits, computed once */
} ws;

/* Q_t(W) into wq: row by row with importances imp (NULL: none), or GPTQ with Hq. */
static moeq_status quantize(int t, const float *w, int64_t rows, int64_t cols, const float *imp, const double *Hq,
                            int gptq, double damp, ws *s, moeq_error *err)
{
    size_t rb = moeq_ggml_row_bytes((moeq_ggml_type)t, cols);
    if (gptq) {
        moeq_gptq_opts go = { .damp = damp };
        moeq_gptq_info info = { 0 };
        return moeq_ggml_gptq((moeq_ggml_type)t, w, rows, cols, Hq, &go, s->blk, s->wq, &info, err);
    }
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t r = 0; r < rows; r++) {
        unsigned char *b = s->blk + (size_t)r * rb;
        moeq_ggml_quant_row((moeq_ggml_type)t, w + r * cols, imp, b, cols);
        moeq_ggml_dequant_row((moeq_ggml_type)t, b, s->wq + r * cols, cols);
    }
    return MOEQ_OK;
}

/* Σ (W − Q)² for the isotropic proxy Hessians. */
static double sq_error(const float *w, const float *q, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += ((double)w[i] - q[i]) * ((double)w[i] - q[i]);
    return s;
}

/* The layer's expert-sum Hessian (and its rows) for input kind down, read once per (layer, down). */
static moeq_status layer_sum(moeq_calib_file *cf, int64_t l, int down, int64_t dim, ws *s, moeq_error *err)
{
    if (s->sum_layer == l && s->sum_down == down) return MOEQ_OK;
    moeq_status st = moeq_calib_file_hessian(cf, l, -1, down, s->Hsum, dim, &s->sum_rows, err);
    s->sum_layer = st ? -1 : l;
    s->sum_down = down;
    return st;
}

/* Expert e of g widened into s->wf, and its calibration record (tokens, coverage flag). */
static moeq_status load_expert(const moeq_model *m, const moeq_gguf_matrix *g, int64_t e, moeq_calib_file *cf, ws *s,
                               int64_t *n_e, int *flag, moeq_error *err)
{
    moeq_mat v;
    moeq_status st = moeq_model_expert(m, g->layer, e, g->proj, &v, err);
    if (st) return st;
    moeq_mat_to_f32(&v, 0, g->rows, s->wf);
    moeq_mat_release(&v);
    return moeq_calib_file_expert(cf, g->layer, e, n_e, flag, err);
}

/* Costs of every candidate of a routed-expert tensor. Experts flagged dead or undersampled are
 * costed with H_e + β·H̄ (β = (min_tokens − n_e)/N, H̄ the layer's sum over N rows, as plan's
 * hessian cost does: a dead expert is not free on other text) and quantized as the export does
 * (the layer sum as their Hessian). */
static moeq_status expert_costs(const moeq_model *m, const moeq_gguf_matrix *g, moeq_gguf_plan_item *it,
                                const moeq_gguf_plan_opts *o, moeq_calib_file *cf, ws *s, float *imp, moeq_error *err)
{
    const int down = g->proj == MOEQ_PROJ_DOWN;
    const int64_t rows = g->rows, cols = g->cols, min_tokens = moeq_calib_file_min_tokens(cf);
    moeq_status st = MOEQ_OK;
    for (int j = 0; j < it->n_cand; j++) it->cost[j] = 0;
    for (int64_t e = 0; e < g->experts && !st; e++) {
        int64_t n_e = 0;
        int flag = 0;
        if ((st = load_expert(m, g, e, cf, s, &n_e, &flag, err))) break;
        if ((st = moeq_calib_file_hessian(cf, g->layer, e, down, s->H, cols, NULL, err))) break;
        const double *Hq = s->H;
        if (flag != MOEQ_CALIB_OK) {
            if ((st = layer_sum(cf, g->layer, down, cols, s, err))) break;
            if (s->sum_rows > 0) {
                double beta = (double)(min_tokens > n_e ? min_tokens - n_e : 0) / (double)s->sum_rows;
                memcpy(s->Hq, s->Hsum, (size_t)(cols * cols) * sizeof *s->Hq);
                Hq = s->Hq;
                for (int64_t i = 0; i < cols * cols; i++) s->H[i] += beta * s->Hsum[i];
            }
        }
        int have = 0;
        for (int64_t c = 0; c < cols; c++) { imp[c] = (float)Hq[c * cols + c]; have |= imp[c] > 0; }
        for (int j = 0; j < it->n_cand && !st; j++) {
            if ((st = quantize(it->cand[j], s->wf, rows, cols, have ? imp : NULL, have ? Hq : NULL, o->hessian_gptq, 0, s, err)))
                break;
            double c = moeq_hessian_error(s->wf, s->wq, rows, cols, s->H);
            if (!isfinite(c)) st = moeq_fail(err, MOEQ_ERR_NUMERIC, "plan: '%s' expert %lld: non-finite Hessian error",
                                             g->name, (long long)e);
            it->cost[j] += c;
        }
    }
    return st;
}

/* Candidate j's measured cost with its d-th damping: the smallest over the dampings is kept
 * (ties: the earlier), with the damping that gave it. */
static void keep_best(moeq_gguf_plan_item *it, int j, int d, double kld, double damp)
{
    kld = kld > 0 ? kld : 0;
    if (d == 0 || kld < it->cost[j]) {
        it->cost[j] = kld;
        it->damp[j] = damp;
    }
}

/* Measured costs of a routed-expert tensor (docs/plan.md "Measured costs"): for each candidate,
 * every expert quantized as the export does (importances diag(H_e), the layer sum for flagged
 * experts; GPTQ with --hessian-quant gptq) and installed as an override in o->measure_model;
 * the mean KLD of that model against m on the validation tokens is the tensor's cost. A GGUF
 * expert tensor is one layer × projection, so the cost is the group's KLD itself. Memory: the
 * tensor's experts in float32. */
static moeq_status expert_measured(const moeq_model *m, const moeq_gguf_matrix *g, moeq_gguf_plan_item *it,
                                   const moeq_gguf_plan_opts *o, moeq_calib_file *cf, ws *s, float *imp, moeq_error *err)
{
    const int down = g->proj == MOEQ_PROJ_DOWN;
    const int64_t rows = g->rows, cols = g->cols;
    moeq_model *mm = o->measure_model;
    float **buf = calloc((size_t)g->experts, sizeof *buf);
    if (!buf) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    moeq_status st = MOEQ_OK;
    moeq_eval_opts eo = { .ctx = o->measure_ctx, .threads = o->threads, .ref_cache = &s->rc, .start_layer = g->layer };
    const int nd = o->n_damps > 0 ? o->n_damps : 1;
    for (int jd = 0; jd < it->n_cand * nd && !st; jd++) {
        const int j = jd / nd;
        const double damp = o->n_damps > 0 ? o->damps[jd % nd] : 0;
        for (int64_t e = 0; e < g->experts && !st; e++) {
            int64_t n_e = 0;
            int flag = 0;
            if ((st = load_expert(m, g, e, cf, s, &n_e, &flag, err))) break;
            const double *Hq = s->H;
            if (flag != MOEQ_CALIB_OK) {
                if ((st = layer_sum(cf, g->layer, down, cols, s, err))) break;
                Hq = s->Hsum;
            } else if ((st = moeq_calib_file_hessian(cf, g->layer, e, down, s->H, cols, NULL, err))) break;
            int have = 0;
            for (int64_t c = 0; c < cols; c++) { imp[c] = (float)Hq[c * cols + c]; have |= imp[c] > 0; }
            if ((st = quantize(it->cand[j], s->wf, rows, cols, have ? imp : NULL, have ? Hq : NULL, o->hessian_gptq, damp, s, err)))
                break;
            if (!(buf[e] = malloc((size_t)(rows * cols) * sizeof **buf))) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); break; }
            memcpy(buf[e], s->wq, (size_t)(rows * cols) * sizeof **buf);
            st = moeq_model_set_override(mm, g->layer, e, g->proj, buf[e], err);
        }
        moeq_eval_result r = { 0 };
        if (!st) st = moeq_eval(mm, m, o->measure_tokens, o->measure_n, &eo, &r, err);
        moeq_model_clear_overrides(mm);
        for (int64_t e = 0; e < g->experts; e++) { free(buf[e]); buf[e] = NULL; }
        if (!st && !isfinite(r.kld_mean)) st = moeq_fail(err, MOEQ_ERR_NUMERIC, "plan: '%s': non-finite KLD", g->name);
        if (!st) keep_best(it, j, jd % nd, r.kld_mean, damp);
    }
    free(buf);
    return st;
}

/* The Hessian a 2-D matrix is quantized with, as the export's write_mat_h: its calibration
 * subgroup (calibrate --scope all: attention, shared and dense MLPs; docs/STATS.md) into s->H.
 * *have 0 when the file has none, or the source is stored in a codec the export copies. */
static moeq_status mat_hessian(const moeq_gguf_matrix *g, moeq_calib_file *cf, ws *s, int *have, moeq_error *err)
{
    *have = 0;
    if (!g->group || g->mat.q || g->mat.gtype) return MOEQ_OK;
    int64_t rows = 0;
    moeq_error e2 = { 0 };
    moeq_status st = moeq_calib_file_group_hessian(cf, g->layer, g->group, s->H, g->cols, &rows, &e2);
    if (st == MOEQ_ERR_NOT_FOUND) return MOEQ_OK;
    if (st) {
        if (err) *err = e2;
        return st;
    }
    double tr = 0;
    for (int64_t c = 0; c < g->cols; c++) tr += s->H[c * g->cols + c];
    *have = rows > 0 && tr > 0;
    return MOEQ_OK;
}

/* Q_t of a 2-D matrix (widened in s->wf) into s->wq, as the export writes it: with its Hessian
 * (have: GPTQ with --hessian-quant gptq, else the weighted search with diag(H)), else the plain
 * search. */
static moeq_status mat_quantize(int t, const moeq_gguf_matrix *g, int have, const moeq_gguf_plan_opts *o, double damp,
                                ws *s, float *imp, moeq_error *err)
{
    const int64_t cols = g->cols;
    for (int64_t c = 0; have && c < cols; c++) imp[c] = (float)s->H[c * cols + c];
    return quantize(t, s->wf, g->mat.rows, cols, have ? imp : NULL, have ? s->H : NULL, have && o->hessian_gptq, damp, s,
                    err);
}

/* Costs of a 2-D matrix: tr(ΔW H ΔWᵀ) with its calibration subgroup's Hessian when the file has
 * one (calibrate --scope all: attention; shared experts always), else an isotropic proxy
 * tr(H_ref)/dim · I with H_ref the nearest layer's attention input (or its expert sum / top_k):
 * embeddings and head have no input statistics. Quantized as the export quantizes them. */
static moeq_status mat_costs(const moeq_model *m, const moeq_gguf_matrix *g, moeq_gguf_plan_item *it,
                             const moeq_gguf_plan_opts *o, moeq_calib_file *cf, ws *s, float *imp, moeq_error *err)
{
    const moeq_config *c = moeq_model_config(m);
    /* rows of the source; the file may repeat them (olmoe's KV heads): each copy costs the same */
    const int64_t rows = g->mat.rows, cols = g->cols;
    const double rep = (double)g->rows / (double)rows;
    int have = 0;
    moeq_status st = mat_hessian(g, cf, s, &have, err);
    if (st) return st;
    double iso = 0;
    if (have) {
        it->hessian = g->group;
    } else {
        long long l = g->layer;
        if (l < 0) l = g->head == 1 ? 0 : c->layers - 1;
        /* the proxy scale: per input dimension, from a normed input of the hidden width */
        moeq_error e2 = { 0 };
        st = moeq_calib_file_group_hessian(cf, l, "attn_in", s->Hsum, c->hidden, NULL, &e2);
        double div = 1;
        if (st == MOEQ_ERR_NOT_FOUND) {
            int64_t ml = l;   /* the nearest MoE layer's expert sum */
            while (ml >= 0 && !moeq_model_layer(m, ml)->is_moe) ml--;
            for (ml = ml < 0 ? 0 : ml; ml < c->layers && !moeq_model_layer(m, ml)->is_moe; ml++) {}
            s->sum_layer = -1;
            st = moeq_calib_file_hessian(cf, ml, -1, 0, s->Hsum, c->hidden, NULL, err);
            div = c->top_k > 0 ? (double)c->top_k : 1;
        } else if (st) {
            if (err) *err = e2;
            return st;
        }
        if (st) return st;
        s->sum_layer = -1;
        for (int64_t i = 0; i < c->hidden; i++) iso += s->Hsum[i * c->hidden + i];
        iso /= (double)c->hidden * div;
        it->hessian = "isotropic proxy";
    }
    moeq_mat_to_f32(&g->mat, 0, rows, s->wf);
    moeq_mat_release(&g->mat);
    for (int j = 0; j < it->n_cand; j++) {
        if ((st = mat_quantize(it->cand[j], g, have, o, 0, s, imp, err))) return st;
        it->cost[j] = rep * (have ? moeq_hessian_error(s->wf, s->wq, rows, cols, s->H) : iso * sq_error(s->wf, s->wq, rows * cols));
        if (!isfinite(it->cost[j]))
            return moeq_fail(err, MOEQ_ERR_NUMERIC, "plan: '%s': non-finite Hessian error", g->name);
    }
    return MOEQ_OK;
}

/* Measured costs of a 2-D matrix (--scope all): each candidate quantized as the export does
 * (mat_quantize) and installed in o->measure_model (a layer override, or the embedding's or
 * head's); the KLD against m on the validation tokens is its cost, as for the experts, so the
 * knapsack compares the two on one scale. */
static moeq_status mat_measured(const moeq_model *m, const moeq_gguf_matrix *g, moeq_gguf_plan_item *it,
                                const moeq_gguf_plan_opts *o, moeq_calib_file *cf, ws *s, float *imp, moeq_error *err)
{
    const int64_t rows = g->mat.rows, cols = g->cols;
    moeq_model *mm = o->measure_model;
    int have = 0;
    moeq_status st = mat_hessian(g, cf, s, &have, err);
    if (st) return st;
    moeq_mat_to_f32(&g->mat, 0, rows, s->wf);
    moeq_mat_release(&g->mat);
    float *buf = malloc((size_t)(rows * cols) * sizeof *buf);
    if (!buf) return moeq_fail(err, MOEQ_ERR_NOMEM, "plan: out of memory for '%s'", g->name);
    /* the layers before the matrix's are the reference's (the embedding: none; the head: all) */
    moeq_eval_opts eo = { .ctx = o->measure_ctx, .threads = o->threads, .ref_cache = &s->rc,
                          .start_layer = g->head == 1 ? 0 : g->head == 2 ? moeq_model_config(m)->layers : g->layer };
    const int use = o->n_damps > 0 && have && o->hessian_gptq;   /* dampings matter only where GPTQ runs */
    const int nd = use ? o->n_damps : 1;
    for (int jd = 0; jd < it->n_cand * nd && !st; jd++) {
        const int j = jd / nd;
        const double damp = use ? o->damps[jd % nd] : 0;
        if ((st = mat_quantize(it->cand[j], g, have, o, damp, s, imp, err))) break;
        memcpy(buf, s->wq, (size_t)(rows * cols) * sizeof *buf);
        st = g->head ? moeq_model_set_head_override(mm, g->head - 1, buf, err)
                     : moeq_model_set_override(mm, g->layer, -1, g->proj, buf, err);
        moeq_eval_result r = { 0 };
        if (!st) st = moeq_eval(mm, m, o->measure_tokens, o->measure_n, &eo, &r, err);
        moeq_model_clear_overrides(mm);
        if (!st && !isfinite(r.kld_mean)) st = moeq_fail(err, MOEQ_ERR_NUMERIC, "plan: '%s': non-finite KLD", g->name);
        if (!st) keep_best(it, j, jd % nd, r.kld_mean, damp);
    }
    free(buf);
    return st;
}

/* The costs of an earlier plan (its "costs" per tensor): every unpinned item and candidate must be
 * there, and the plan must be of this model_type with hessian costs. */
static moeq_status reuse_costs(const char *path, const moeq_model *m, moeq_gguf_plan *p, moeq_plan_cost cost,
                               moeq_error *err)
{
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: --reuse-costs: not JSON: line %d: %s", path, je.line, je.text);
    moeq_status st = MOEQ_OK;
    const char *tg = json_string_value(json_object_get(j, "target")), *mt = json_string_value(json_object_get(j, "model_type"));
    const char *cs = json_string_value(json_object_get(j, "cost"));
    if (!tg || strcmp(tg, "gguf") || !mt || strcmp(mt, moeq_model_config(m)->model_type) || !cs || strcmp(cs, moeq_plan_cost_name(cost))) {
        json_decref(j);
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: --reuse-costs: not a %s GGUF plan of a %s model", path,
                         moeq_plan_cost_name(cost), moeq_model_config(m)->model_type);
    }
    const json_t *arr = json_object_get(j, "matrices");
    for (size_t i = 0; i < p->n && !st; i++) {
        moeq_gguf_plan_item *it = &p->items[i];
        if (it->pinned) continue;
        const json_t *c = NULL, *dmap = NULL, *e;
        size_t k;
        json_array_foreach(arr, k, e) {
            const char *tn = json_string_value(json_object_get(e, "tensor"));
            if (tn && !strcmp(tn, it->name)) { c = json_object_get(e, "costs"); dmap = json_object_get(e, "damps"); }
        }
        for (int q = 0; q < it->n_cand && !st; q++) {
            const json_t *v = c ? json_object_get(c, moeq_ggml_type_get(it->cand[q])->name) : NULL;
            if (!json_is_number(v) || !isfinite(json_number_value(v)))
                st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: --reuse-costs: no cost of %s for '%s'", path,
                               moeq_ggml_type_get(it->cand[q])->name, it->name);
            else it->cost[q] = json_number_value(v);
            const json_t *dv = dmap ? json_object_get(dmap, moeq_ggml_type_get(it->cand[q])->name) : NULL;
            it->damp[q] = json_is_number(dv) && json_number_value(dv) > 0 ? json_number_value(dv) : 0;
        }
        it->hessian = it->experts ? "expert" : "reused";
    }
    json_decref(j);
    return st;
}

static int bits_rank(int t, int64_t cols)
{
    /* bytes per 256 rows of cols (row meta included): orders types */
    return (int)(256 * moeq_ggml_row_bytes((moeq_ggml_type)t, cols));
}

moeq_status moeq_gguf_plan_make(const moeq_model *m, const moeq_gguf_plan_opts *o, moeq_gguf_plan *out,
                                moeq_error *err)
{
    memset(out, 0, sizeof *out);
    const int measured = o->cost == MOEQ_COST_MEASURED;
    if (o->cost != MOEQ_COST_UNIFORM && o->cost != MOEQ_COST_HESSIAN && !measured)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "plan --target gguf: --cost is hessian, measured or uniform");
    if (o->cost != MOEQ_COST_UNIFORM && !o->calib_path && !o->reuse_path)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "plan --target gguf: --cost %s needs --calib F.h5", moeq_plan_cost_name(o->cost));
    if (o->n_damps && (!measured || !o->hessian_gptq))
        return moeq_fail(err, MOEQ_ERR_MISUSE, "plan --target gguf: --damps needs --cost measured --hessian-quant gptq "
                         "(only measured costs can tell dampings apart on other text)");
    for (int d = 0; d < o->n_damps; d++)
        if (!(o->damps[d] > 0 && o->damps[d] < 1e6))
            return moeq_fail(err, MOEQ_ERR_MISUSE, "plan --target gguf: --damps: %g is not a positive damping", o->damps[d]);
    if (measured && !o->reuse_path) {
        if (!o->measure_model || !o->measure_tokens || o->measure_ctx < 2)
            return moeq_fail(err, MOEQ_ERR_MISUSE, "plan: measured costs need a second model and tokens");
        int64_t nwin = 0;
        moeq_status s0 = moeq_token_windows(m, o->measure_tokens, o->measure_n, o->measure_ctx, 0, &nwin, err);
        if (s0) return s0;
    }
    int nt;
    const int *types = candidates(o, &nt);
    /* a file must load somewhere: no mix of mainline-only (TQ) and ik_llama.cpp-only types */
    int rt = MOEQ_GGML_RT_LLAMA | MOEQ_GGML_RT_IK, t_llama = -1, t_ik = -1;
    for (int j = 0; j < nt + o->n_pins; j++) {
        const moeq_ggml_type_info *ti = moeq_ggml_type_get(j < nt ? types[j] : o->pin_types[j - nt]);
        if (!ti) continue;
        rt &= ti->runtimes;
        if (!(ti->runtimes & MOEQ_GGML_RT_IK)) t_llama = (int)ti->type;
        if (!(ti->runtimes & MOEQ_GGML_RT_LLAMA)) t_ik = (int)ti->type;
    }
    if (!rt)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "plan --target gguf: types %s and %s: no runtime loads both (%s: "
                         "mainline llama.cpp only; %s: ik_llama.cpp only); list the types of one runtime",
                         moeq_ggml_type_get(t_llama)->name, moeq_ggml_type_get(t_ik)->name,
                         moeq_ggml_type_get(t_llama)->name, moeq_ggml_type_get(t_ik)->name);
    moeq_gguf_matrix *mats = NULL;
    size_t nm = 0;
    moeq_status st = moeq_gguf_export_matrices(m, &mats, &nm, err);
    if (st) return st;
    regex_t *re = calloc((size_t)(o->n_pins ? o->n_pins : 1), sizeof *re);
    int n_re = 0;
    moeq_calib_file *cf = NULL;
    ws s = { .sum_layer = -1 };
    float *imp = NULL;
    double *cost = NULL;
    int64_t *size = NULL, *fidx = NULL;
    int *choice = NULL;
    out->items = calloc(nm ? nm : 1, sizeof *out->items);
    if (!re || !out->items) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); goto done; }
    for (; n_re < o->n_pins; n_re++)
        if (regcomp(&re[n_re], o->pin_regex[n_re], REG_EXTENDED | REG_NOSUB)) {
            st = moeq_fail(err, MOEQ_ERR_MISUSE, "plan: --tensor-type: '%s' is not a valid regular expression",
                           o->pin_regex[n_re]);
            goto done;
        }
    /* the items: routed experts, and with scope all every other matrix */
    int64_t maxn = 1, maxc = 1, weights = 0, pinned_bits = 0;
    for (size_t i = 0; i < nm; i++) {
        const moeq_gguf_matrix *g = &mats[i];
        if (!g->experts && !o->scope_all) continue;
        moeq_gguf_plan_item *it = &out->items[out->n];
        memset(it, 0, sizeof *it);
        snprintf(it->name, sizeof it->name, "%s", g->name);
        it->layer = g->layer;
        it->rows = g->rows;
        it->cols = g->cols;
        it->experts = g->experts;
        it->proj = g->experts ? (int)g->proj : -1;
        it->hessian = g->experts ? "expert" : NULL;
        const int64_t count = g->experts ? g->experts : 1;
        int pin = -1;
        for (int r = 0; r < n_re; r++)
            if (regexec(&re[r], g->name, 0, NULL, 0) == 0) pin = o->pin_types[r];
        if (pin >= 0) {
            int f = moeq_gguf_fallback_type(pin, g->cols);
            it->pinned = 1;
            it->n_cand = 1;
            it->cand[0] = f;
        } else {
            for (int j = 0; j < nt; j++) {
                int f = moeq_gguf_fallback_type(types[j], g->cols), dup = 0;
                for (int q = 0; q < it->n_cand; q++) dup |= it->cand[q] == f;
                if (!dup) it->cand[it->n_cand++] = f;
            }
            /* in size order, so the table and the plan read from small to large */
            for (int a = 1; a < it->n_cand; a++)
                for (int b = a; b > 0 && bits_rank(it->cand[b], g->cols) < bits_rank(it->cand[b - 1], g->cols); b--) {
                    int t = it->cand[b]; it->cand[b] = it->cand[b - 1]; it->cand[b - 1] = t;
                }
        }
        for (int j = 0; j < it->n_cand; j++) {
            size_t rb = moeq_ggml_row_bytes((moeq_ggml_type)it->cand[j], g->cols);
            if (!rb)
                { st = moeq_fail(err, MOEQ_ERR_MISUSE, "plan: '%s': type %s cannot hold rows of %lld values", g->name,
                                 moeq_ggml_type_get(it->cand[j])->name, (long long)g->cols); goto done; }
            it->bits[j] = (int64_t)rb * 8 * g->rows * count;
            /* uniform: every weight's squared error scales as 4^-bits */
            it->cost[j] = pow(4.0, -(double)it->bits[j] / (double)(g->rows * g->cols * count)) * (double)(g->rows * g->cols * count);
        }
        if (it->pinned) { it->cost[0] = NAN; pinned_bits += it->bits[0]; }
        weights += g->rows * g->cols * count;
        maxn = g->rows * g->cols > maxn ? g->rows * g->cols : maxn;
        maxc = g->cols > maxc ? g->cols : maxc;
        out->n++;
    }
    if (out->n == 0) { st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "plan: the model has no matrix to plan"); goto done; }
    double t0 = moeq_now();
    if (o->cost != MOEQ_COST_UNIFORM && o->reuse_path) {
        if ((st = reuse_costs(o->reuse_path, m, out, o->cost, err))) goto done;
    } else if (o->cost != MOEQ_COST_UNIFORM) {
        if ((st = moeq_calib_file_open(o->calib_path, m, &cf, err))) goto done;
        if (moeq_calib_file_diag(cf)) {
            st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: written with --diag: hessian costs need full Hessians", o->calib_path);
            goto done;
        }
        const moeq_config *c = moeq_model_config(m);
        int64_t hd = maxc > c->hidden ? maxc : c->hidden;
        s.wf = malloc((size_t)maxn * sizeof *s.wf);
        s.wq = malloc((size_t)maxn * sizeof *s.wq);
        s.blk = malloc((size_t)maxn * 4 + 64);
        s.H = malloc((size_t)(hd * hd) * sizeof *s.H);
        s.Hq = malloc((size_t)(hd * hd) * sizeof *s.Hq);
        s.Hsum = malloc((size_t)(hd * hd) * sizeof *s.Hsum);
        imp = malloc((size_t)hd * sizeof *imp);
        if (!s.wf || !s.wq || !s.blk || !s.H || !s.Hq || !s.Hsum || !imp) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); goto done; }
        if (measured && (st = moeq_eval_ref_cache_init(&s.rc, m, o->measure_tokens, o->measure_n, o->measure_ctx, 0,
                                                       (uint64_t)1 << 30, err)))
            goto done;
        size_t k = 0;
        for (size_t i = 0; i < nm && !st; i++) {
            const moeq_gguf_matrix *g = &mats[i];
            if (!g->experts && !o->scope_all) continue;
            moeq_gguf_plan_item *it = &out->items[k++];
            if (measured) it->hessian = "measured";
            if (!it->pinned)
                st = g->experts ? (measured ? expert_measured : expert_costs)(m, g, it, o, cf, &s, imp, err)
                                : (measured ? mat_measured : mat_costs)(m, g, it, o, cf, &s, imp, err);
            if (o->progress) o->progress(o->user, (int64_t)k, (int64_t)out->n);
        }
        if (st) goto done;
    }
    out->seconds_costs = moeq_now() - t0;
    /* the knapsack over the unpinned items; k options each (shorter lists padded by repeating
     * their last option, which changes nothing) */
    int K = 1;
    int64_t nf = 0;
    for (size_t i = 0; i < out->n; i++) if (!out->items[i].pinned) { nf++; K = out->items[i].n_cand > K ? out->items[i].n_cand : K; }
    cost = malloc((size_t)(nf ? nf : 1) * (size_t)K * sizeof *cost);
    size = malloc((size_t)(nf ? nf : 1) * (size_t)K * sizeof *size);
    fidx = malloc((size_t)(nf ? nf : 1) * sizeof *fidx);
    choice = calloc((size_t)(nf ? nf : 1), sizeof *choice);
    if (!cost || !size || !fidx || !choice) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); goto done; }
    int64_t f = 0, minsum = pinned_bits, maxsum = pinned_bits;
    for (size_t i = 0; i < out->n; i++) {
        const moeq_gguf_plan_item *it = &out->items[i];
        if (it->pinned) continue;
        int64_t mn = it->bits[0], mx = it->bits[0];
        for (int j = 0; j < K; j++) {
            int jj = j < it->n_cand ? j : it->n_cand - 1;
            cost[f * K + j] = it->cost[jj];
            size[f * K + j] = it->bits[jj];
            mn = it->bits[jj] < mn ? it->bits[jj] : mn;
            mx = it->bits[jj] > mx ? it->bits[jj] : mx;
        }
        minsum += mn;
        maxsum += mx;
        fidx[f++] = (int64_t)i;
    }
    int64_t capacity = (int64_t)floor(o->budget * (double)weights + 1e-6);
    if (capacity < minsum || capacity > maxsum + weights / 1000) {
        st = moeq_fail(err, MOEQ_ERR_RANGE, "plan: --budget %g is outside what the candidates reach: %.4f to %.4f GGUF "
                       "bits per weight", o->budget, (double)minsum / (double)weights, (double)maxsum / (double)weights);
        goto done;
    }
    t0 = moeq_now();
    if ((st = moeq_plan_solve(nf, K, cost, size, capacity - pinned_bits, 0, choice, &out->solve, err))) goto done;
    out->seconds_solve = moeq_now() - t0;
    for (int64_t q = 0; q < nf; q++) {
        moeq_gguf_plan_item *it = &out->items[fidx[q]];
        it->choice = choice[q] < it->n_cand ? choice[q] : it->n_cand - 1;
    }
    out->bits = 0;
    out->cost = 0;
    for (size_t i = 0; i < out->n; i++) {
        const moeq_gguf_plan_item *it = &out->items[i];
        out->bits += it->bits[it->choice];
        if (!it->pinned) out->cost += it->cost[it->choice];
    }
    out->weights = weights;
    out->budget = o->budget;
    out->bits_per_weight = (double)out->bits / (double)weights;
done:
    if (st) moeq_gguf_plan_free(out);
    for (int r = 0; r < n_re; r++) regfree(&re[r]);
    free(re);
    moeq_calib_file_close(cf);
    free(mats);
    free(s.wf); free(s.wq); free(s.blk); free(s.H); free(s.Hq); free(s.Hsum); free(imp);
    moeq_eval_ref_cache_free(&s.rc);
    free(cost); free(size); free(fidx); free(choice);
    return st;
}

/* ---- plan.json ----------------------------------------------------------------------------- */

char *moeq_gguf_plan_json(const moeq_gguf_plan *p, const moeq_gguf_plan_opts *o, const moeq_model *m)
{
    json_t *j = json_object(), *arr = json_array(), *hist = json_object(), *cands = json_array();
    if (!j || !arr || !hist || !cands) { json_decref(j); json_decref(arr); json_decref(hist); json_decref(cands); return NULL; }
    int nt;
    const int *types = candidates(o, &nt);
    for (int t = 0; t < nt; t++) json_array_append_new(cands, json_string(moeq_ggml_type_get(types[t])->name));
    json_object_set_new(j, "format", json_string("moeq-plan"));
    json_object_set_new(j, "format_version", json_integer(1));
    json_object_set_new(j, "target", json_string("gguf"));
    json_object_set_new(j, "model_type", json_string(moeq_model_config(m)->model_type));
    json_object_set_new(j, "budget", json_real(p->budget));
    json_object_set_new(j, "bits_per_weight", json_real(p->bits_per_weight));
    json_object_set_new(j, "weights", json_integer(p->weights));
    json_object_set_new(j, "bytes", json_integer(p->bits / 8));
    json_object_set_new(j, "cost", json_string(moeq_plan_cost_name(o->cost)));
    json_object_set_new(j, "hessian_quantizer", json_string(o->cost == MOEQ_COST_UNIFORM ? "none" : o->hessian_gptq ? "gptq" : "rtn"));
    json_object_set_new(j, "scope", json_string(o->scope_all ? "all" : "experts"));
    json_object_set_new(j, "types", cands);
    if (o->n_damps) {
        json_t *da = json_array();
        for (int d = 0; d < o->n_damps; d++) json_array_append_new(da, json_real(o->damps[d]));
        json_object_set_new(j, "damp_candidates", da);
    }
    json_object_set_new(j, "predicted_cost", json_real(p->cost));
    json_object_set_new(j, "lower_bound", json_real(p->solve.lower_bound));
    json_object_set_new(j, "exact", json_boolean(p->solve.exact));
    json_object_set_new(j, "seconds_costs", json_real(p->seconds_costs));
    json_object_set_new(j, "seconds_solve", json_real(p->seconds_solve));
    for (size_t i = 0; i < p->n; i++) {
        const moeq_gguf_plan_item *it = &p->items[i];
        const char *tn = moeq_ggml_type_get(it->cand[it->choice])->name;
        json_t *e = json_object(), *cc = json_object();
        json_object_set_new(e, "tensor", json_string(it->name));
        json_object_set_new(e, "type", json_string(tn));
        json_object_set_new(e, "layer", json_integer(it->layer));
        json_object_set_new(e, "proj", it->proj < 0 ? json_null() : json_string(it->proj == MOEQ_PROJ_GATE ? "gate" : it->proj == MOEQ_PROJ_UP ? "up" : "down"));
        json_object_set_new(e, "experts", json_integer(it->experts));
        json_object_set_new(e, "rows", json_integer(it->rows));
        json_object_set_new(e, "cols", json_integer(it->cols));
        json_object_set_new(e, "bytes", json_integer(it->bits[it->choice] / 8));
        json_object_set_new(e, "cost", it->pinned ? json_null() : json_real(it->cost[it->choice]));
        json_object_set_new(e, "damp", it->damp[it->choice] > 0 ? json_real(it->damp[it->choice]) : json_null());
        json_object_set_new(e, "hessian", it->hessian ? json_string(it->hessian) : json_null());
        json_object_set_new(e, "pinned", json_boolean(it->pinned));
        json_t *dd = json_object();
        for (int q = 0; q < it->n_cand && !it->pinned; q++) {
            json_object_set_new(cc, moeq_ggml_type_get(it->cand[q])->name, json_real(it->cost[q]));
            if (it->damp[q] > 0) json_object_set_new(dd, moeq_ggml_type_get(it->cand[q])->name, json_real(it->damp[q]));
        }
        json_object_set_new(e, "costs", cc);
        if (json_object_size(dd)) json_object_set_new(e, "damps", dd);
        else json_decref(dd);
        json_array_append_new(arr, e);
        json_t *h = json_object_get(hist, tn);
        json_object_set_new(hist, tn, json_integer(h ? json_integer_value(h) + 1 : 1));
    }
    json_object_set_new(j, "histogram", hist);
    json_object_set_new(j, "matrices", arr);
    char *s = json_dumps(j, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(j);
    return s;
}

void moeq_gguf_plan_types_free(char **names, int *types, double *damps, int n)
{
    for (int i = 0; names && i < n; i++) free(names[i]);
    free(names);
    free(types);
    free(damps);
}

moeq_status moeq_gguf_plan_read(const char *path, const moeq_model *m, char ***names, int **types, double **damps,
                                int *n, moeq_error *err)
{
    *names = NULL;
    *types = NULL;
    *damps = NULL;
    *n = 0;
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) return moeq_fail(err, MOEQ_ERR_FORMAT, "%s: not a plan: line %d: %s", path, je.line, je.text);
    moeq_status st = MOEQ_OK;
    const char *fmt = json_string_value(json_object_get(j, "format"));
    const char *tgt = json_string_value(json_object_get(j, "target"));
    const char *mt = json_string_value(json_object_get(j, "model_type"));
    const json_t *arr = json_object_get(j, "matrices");
    if (!fmt || strcmp(fmt, "moeq-plan")) { st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: 'format' is not moeq-plan", path); goto out; }
    if (!tgt || strcmp(tgt, "gguf")) {
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: not a GGUF plan ('target' is not gguf: make it with moeq plan --target gguf)", path);
        goto out;
    }
    if (!mt || strcmp(mt, moeq_model_config(m)->model_type)) {
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: a plan for model_type %s, the model is %s", path, mt ? mt : "(none)",
                       moeq_model_config(m)->model_type);
        goto out;
    }
    if (!json_is_array(arr)) { st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: 'matrices' is not an array", path); goto out; }
    size_t na = json_array_size(arr);
    *names = calloc(na ? na : 1, sizeof **names);
    *types = calloc(na ? na : 1, sizeof **types);
    *damps = calloc(na ? na : 1, sizeof **damps);
    if (!*names || !*types || !*damps) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); goto out; }
    for (size_t i = 0; i < na; i++) {
        const json_t *e = json_array_get(arr, i);
        const char *tn = json_string_value(json_object_get(e, "tensor"));
        const char *ty = json_string_value(json_object_get(e, "type"));
        const moeq_ggml_type_info *ti = ty ? moeq_ggml_type_by_name(ty) : NULL;
        if (!tn || !ti) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: matrices[%zu]: %s", path, i,
                           !tn ? "no 'tensor' string" : "'type' is missing or not a ggml type name");
            goto out;
        }
        for (int q = 0; q < *n; q++)
            if (!strcmp((*names)[q], tn)) { st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: matrices[%zu]: '%s' is listed twice", path, i, tn); goto out; }
        const json_t *dj = json_object_get(e, "damp");
        if (dj && !json_is_null(dj) && !(json_is_number(dj) && json_number_value(dj) > 0 && json_number_value(dj) < 1e6)) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: matrices[%zu]: 'damp' is not a positive number", path, i);
            goto out;
        }
        if (!((*names)[*n] = strdup(tn))) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); goto out; }
        (*damps)[*n] = dj && json_is_number(dj) ? json_number_value(dj) : 0;
        (*types)[(*n)++] = (int)ti->type;
    }
out:
    json_decref(j);
    if (st) { moeq_gguf_plan_types_free(*names, *types, *damps, *n); *names = NULL; *types = NULL; *damps = NULL; *n = 0; }
    return st;
}
