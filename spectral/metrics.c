/* One matrix end to end (widen, check, ESD, fits, metrics) and the model driver that runs
 * every matrix of a scope over OpenMP threads, a batch at a time. */
#include "moeq_spectral.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* from esd.c */
float *moeq_spec_ws_f32(moeq_spec_ws *ws, size_t n);
float *moeq_spec_ws_f32b(moeq_spec_ws *ws, size_t n);
double *moeq_spec_ws_eigs(moeq_spec_ws *ws, size_t n);
uint64_t moeq_spec_below(uint64_t *s, uint64_t n);

uint64_t moeq_spec_key(const char *tensor, int64_t index)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)tensor; p && *p; p++) h = (h ^ *p) * 0x100000001b3ull;
    for (int b = 0; b < 8; b++) h = (h ^ ((uint64_t)index >> (8 * b) & 0xff)) * 0x100000001b3ull;
    return h;
}

void moeq_spec_flags_str(uint32_t flags, char *buf, size_t cap)
{
    static const char *const names[] = {"nonfinite", "zero", "too_few", "hill_bound", "ks_bound", "farms_full", "lapack"};
    size_t len = 0;
    if (cap) buf[0] = 0;
    for (unsigned b = 0; b < sizeof names / sizeof names[0]; b++)
        if (flags & (1u << b)) {
            int w = snprintf(buf + len, cap > len ? cap - len : 0, "%s%s", len ? "," : "", names[b]);
            if (w > 0) len += (size_t)w;
            if (len >= cap) return;
        }
}

static void set_nan(moeq_spec_result *r)
{
    r->alpha = r->alpha_hill = r->alpha_ks = r->ks_xmin = r->ks_d = r->ks_sigma = NAN;
    r->stable_rank = r->log_norm = r->log_spectral_norm = r->alpha_weighted = r->log_alpha_norm = NAN;
    r->lambda_max = r->rand_lambda_max = r->ww_softrank = r->rand_distance = r->var = NAN;
}

/* Jensen-Shannon distance (base 2, in [0, 1]) between 100-bin histograms of log10 of two
 * positive samples over their common range. */
static double js_distance(const double *a, int64_t na, const double *b, int64_t nb)
{
    enum { BINS = 100 };
    if (na < 1 || nb < 1) return NAN;
    double lo = fmin(a[0], b[0]), hi = fmax(a[na - 1], b[nb - 1]);
    lo = log10(lo); hi = log10(hi);
    double w = (hi - lo) / BINS, p[BINS] = {0}, q[BINS] = {0};
    if (!(w > 0)) return 0.0;
    for (int64_t i = 0; i < na; i++) { int k = (int)((log10(a[i]) - lo) / w); p[k < 0 ? 0 : k >= BINS ? BINS - 1 : k] += 1.0 / (double)na; }
    for (int64_t i = 0; i < nb; i++) { int k = (int)((log10(b[i]) - lo) / w); q[k < 0 ? 0 : k >= BINS ? BINS - 1 : k] += 1.0 / (double)nb; }
    double js = 0;
    for (int k = 0; k < BINS; k++) {
        double m = 0.5 * (p[k] + q[k]);
        if (p[k] > 0) js += 0.5 * p[k] * log2(p[k] / m);
        if (q[k] > 0) js += 0.5 * q[k] * log2(q[k] / m);
    }
    return sqrt(fmax(js, 0.0));
}

/* First index of ascending eigs above the threshold. */
static int64_t first_kept(const double *e, int64_t n, double thresh)
{
    int64_t i = 0;
    while (i < n && !(e[i] > thresh)) i++;
    return i;
}

moeq_status moeq_spec_matrix(const moeq_mat *m, const moeq_spec_opts *o, uint64_t key,
                             moeq_spec_ws *ws, moeq_spec_result *res, double *eigs,
                             int64_t *n_eigs, moeq_error *err)
{
    if (!m || !o || !ws || !res || !m->data || m->rows <= 0 || m->cols <= 0)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_spec_matrix: bad argument");
    memset(res, 0, sizeof *res);
    set_nan(res);
    res->rows = m->rows;
    res->cols = m->cols;
    if (n_eigs) *n_eigs = 0;
    const size_t rc = (size_t)m->rows * (size_t)m->cols;
    float *W = moeq_spec_ws_f32(ws, rc);
    int64_t cap = moeq_spec_max_eigs(m->rows, m->cols, o);
    double *own = NULL;
    if (!eigs) eigs = own = malloc((size_t)cap * sizeof *eigs);
    if (!W || !eigs) {
        free(own);
        return moeq_fail(err, MOEQ_ERR_NOMEM, "spectral: %s: %lldx%lld", m->tensor ? m->tensor : "matrix",
                         (long long)m->rows, (long long)m->cols);
    }
    moeq_mat_to_f32(m, 0, m->rows, W);
    moeq_mat_release(m);   /* widened: the mapped pages are done with (docs/spectral.md) */

    /* entries: non-finite count, then the two-pass float64 variance */
    int64_t bad = 0;
    double sum = 0;
    for (size_t i = 0; i < rc; i++) {
        if (!isfinite(W[i])) bad++;
        else sum += W[i];
    }
    res->nonfinite = bad;
    if (bad) {
        res->flags |= MOEQ_SPEC_F_NONFINITE;
        free(own);
        return MOEQ_OK;
    }
    double mean = sum / (double)rc, ss = 0, sq = 0;
    for (size_t i = 0; i < rc; i++) { double d = W[i] - mean; ss += d * d; sq += (double)W[i] * W[i]; }
    res->var = ss / (double)rc;
    if (sq == 0) {
        res->flags |= MOEQ_SPEC_F_ZERO | MOEQ_SPEC_F_TOO_FEW;
        free(own);
        return MOEQ_OK;
    }

    int64_t n = 0, tiles = 0;
    moeq_status st = moeq_spec_esd(W, m->rows, m->cols, o, key, ws, eigs, &n, &tiles, err);
    if (st == MOEQ_ERR_NUMERIC) {
        res->flags |= MOEQ_SPEC_F_LAPACK;   /* reported per matrix, the run goes on */
        moeq_error_clear(err);
        free(own);
        return MOEQ_OK;
    }
    if (st != MOEQ_OK) { free(own); return st; }
    if (o->mode == MOEQ_SPEC_FARMS && tiles == 0) res->flags |= MOEQ_SPEC_F_FARMS_FULL;
    res->n_tiles = tiles;
    res->n_eigs_total = n;
    if (n_eigs) *n_eigs = n;

    /* norm metrics over every computed eigenvalue (negative gram round-off counts as 0) */
    double tot = 0, lmax = n ? fmax(eigs[n - 1], 0.0) : 0;
    for (int64_t i = 0; i < n; i++) tot += fmax(eigs[i], 0.0);
    res->lambda_max = lmax;
    if (lmax > 0) {
        res->stable_rank = tot / lmax;
        res->log_norm = log10(tot);
        res->log_spectral_norm = log10(lmax);
    }

    const int64_t k0 = first_kept(eigs, n, o->evals_thresh);
    const double *lam = eigs + k0;
    const int64_t nk = n - k0;
    res->n_eigs = nk;
    if (nk < o->min_evals || nk < 3) {
        res->flags |= MOEQ_SPEC_F_TOO_FEW;
    } else {
        int clamped = 0;
        res->alpha_hill = moeq_spec_hill(lam, nk, &res->hill_k, &clamped);
        if (clamped || !isfinite(res->alpha_hill)) res->flags |= MOEQ_SPEC_F_HILL_BOUND;
        moeq_ks_fit f;
        if ((st = moeq_spec_ks(lam, nk, o->ks_fix, &f, err)) != MOEQ_OK) { free(own); return st; }
        res->alpha_ks = f.alpha;
        res->ks_xmin = f.xmin;
        res->ks_d = f.d;
        res->ks_sigma = f.sigma;
        res->ks_n_tail = f.n_tail;
        res->ks_fingers = f.fingers;
        if (f.at_bound) res->flags |= MOEQ_SPEC_F_KS_BOUND;
        res->alpha = o->estimator == MOEQ_SPEC_KS ? res->alpha_ks : res->alpha_hill;
        if (isfinite(res->alpha) && lmax > 0) {
            res->alpha_weighted = res->alpha * log10(lmax);
            double s = 0;
            for (int64_t i = 0; i < nk; i++) s += pow(lam[i], res->alpha);
            res->log_alpha_norm = log10(s);
        }
    }

    if (o->randomize) {
        /* WeightWatcher's randomness test: the ESD of the matrix with its entries shuffled */
        float *R = moeq_spec_ws_f32b(ws, rc);
        double *re = moeq_spec_ws_eigs(ws, (size_t)cap);
        if (!R || !re) { free(own); return moeq_fail(err, MOEQ_ERR_NOMEM, "spectral: randomize buffers"); }
        memcpy(R, W, rc * sizeof *R);
        uint64_t s = o->seed ^ key ^ 0x5eed5eed5eed5eedull;
        for (size_t i = rc - 1; i > 0; i--) {
            size_t j = (size_t)moeq_spec_below(&s, (uint64_t)i + 1);
            float t = R[i]; R[i] = R[j]; R[j] = t;
        }
        int64_t rn = 0, rt = 0;
        /* FARMS reuses f32b for tiles: run the shuffled ESD from a copy that esd does not touch */
        moeq_spec_opts ro = *o;
        float *Rc = NULL;
        if (o->mode == MOEQ_SPEC_FARMS && tiles > 0) {
            Rc = malloc(rc * sizeof *Rc);
            if (!Rc) { free(own); return moeq_fail(err, MOEQ_ERR_NOMEM, "spectral: randomize copy"); }
            memcpy(Rc, R, rc * sizeof *Rc);
        }
        st = moeq_spec_esd(Rc ? Rc : R, m->rows, m->cols, &ro, key, ws, re, &rn, &rt, err);
        free(Rc);
        if (st == MOEQ_OK && rn > 0) {
            res->rand_lambda_max = re[rn - 1];
            if (lmax > 0) res->ww_softrank = re[rn - 1] / lmax;
            int64_t r0 = first_kept(re, rn, o->evals_thresh);
            res->rand_distance = nk > 0 ? js_distance(lam, nk, re + r0, rn - r0) : NAN;
        } else if (st == MOEQ_ERR_NUMERIC) {
            moeq_error_clear(err);
        } else if (st != MOEQ_OK) {
            free(own);
            return st;
        }
    }
    if (res->flags & MOEQ_SPEC_F_BAD) res->alpha = NAN;
    free(own);
    return MOEQ_OK;
}

/* ---- matrices of a model ------------------------------------------------------------------- */

static void item_from(moeq_spec_item *it, const moeq_mat *m, int64_t layer, int64_t expert, moeq_proj p)
{
    memset(it, 0, sizeof *it);
    if (m->index >= 0) snprintf(it->tensor, sizeof it->tensor, "%s[%lld]", m->tensor, (long long)m->index);
    else snprintf(it->tensor, sizeof it->tensor, "%s", m->tensor);
    it->layer = layer;
    it->expert = expert;
    it->proj = p;
    it->mat = *m;
}

moeq_status moeq_spec_list(const moeq_model *m, moeq_spec_scope scope, moeq_spec_item **items,
                           size_t *n, moeq_error *err)
{
    if (!m || !items || !n) return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_spec_list: NULL argument");
    const moeq_config *c = moeq_model_config(m);
    size_t cap = (size_t)c->layers * ((size_t)c->n_experts * 3 + 20), k = 0;
    moeq_spec_item *v = calloc(cap ? cap : 1, sizeof *v);
    if (!v) return moeq_fail(err, MOEQ_ERR_NOMEM, "moeq_spec_list: %zu items", cap);
    for (int64_t l = 0; l < c->layers; l++) {
        const moeq_layer_view *lv = moeq_model_layer(m, l);
        if (c->layer_is_moe[l])
            for (int64_t e = 0; e < c->n_experts; e++)
                for (int p = MOEQ_PROJ_GATE; p <= MOEQ_PROJ_DOWN; p++) {
                    moeq_mat mm;
                    moeq_status st = moeq_model_expert(m, l, e, (moeq_proj)p, &mm, err);
                    if (st != MOEQ_OK) { free(v); return st; }
                    item_from(&v[k++], &mm, l, e, (moeq_proj)p);
                }
        if (scope != MOEQ_SPEC_SCOPE_ALL) continue;
        const struct { const moeq_mat *m; moeq_proj p; } extra[] = {
            {&lv->q, MOEQ_PROJ_Q}, {&lv->k, MOEQ_PROJ_K}, {&lv->v, MOEQ_PROJ_V}, {&lv->o, MOEQ_PROJ_O},
            {&lv->router, MOEQ_PROJ_ROUTER},
            {&lv->shared_gate, MOEQ_PROJ_SHARED_GATE}, {&lv->shared_up, MOEQ_PROJ_SHARED_UP},
            {&lv->shared_down, MOEQ_PROJ_SHARED_DOWN}, {&lv->shared_expert_gate, MOEQ_PROJ_SHARED_EXPERT_GATE},
            {&lv->dense_gate, MOEQ_PROJ_DENSE_GATE}, {&lv->dense_up, MOEQ_PROJ_DENSE_UP},
            {&lv->dense_down, MOEQ_PROJ_DENSE_DOWN},
            {&lv->q_a, MOEQ_PROJ_Q_A}, {&lv->q_b, MOEQ_PROJ_Q_B}, {&lv->kv_a, MOEQ_PROJ_KV_A},
            {&lv->kv_b, MOEQ_PROJ_KV_B},   /* MLA */
        };
        for (size_t x = 0; x < sizeof extra / sizeof extra[0]; x++) {
            if (!extra[x].m->data || extra[x].m->rows <= 0 || extra[x].m->cols <= 0) continue;
            if (extra[x].p == MOEQ_PROJ_ROUTER && !c->layer_is_moe[l]) continue;
            item_from(&v[k++], extra[x].m, l, -1, extra[x].p);
        }
    }
    *items = v;
    *n = k;
    return MOEQ_OK;
}

moeq_status moeq_spec_run(const moeq_spec_item *items, size_t n, const moeq_spec_opts *o,
                          int threads, moeq_spec_result *results, moeq_spec_sink sink,
                          void *user, moeq_error *err)
{
    if ((!items && n) || !o || !results) return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_spec_run: NULL argument");
    if (threads < 1) threads = 1;
    const size_t B = (size_t)threads * 2;
    moeq_spec_ws **ws = calloc((size_t)threads, sizeof *ws);
    double **eig = calloc(B, sizeof *eig);
    size_t *eig_cap = calloc(B, sizeof *eig_cap);
    int64_t *neig = calloc(B, sizeof *neig);
    moeq_status *sts = calloc(B, sizeof *sts);
    moeq_error *errs = calloc(B, sizeof *errs);
    moeq_status st = MOEQ_OK;
    if (!ws || !eig || !eig_cap || !neig || !sts || !errs) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "moeq_spec_run"); goto done; }
    for (int t = 0; t < threads; t++)
        if (!(ws[t] = moeq_spec_ws_new())) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "moeq_spec_run"); goto done; }

    for (size_t b0 = 0; b0 < n && st == MOEQ_OK; b0 += B) {
        size_t nb = n - b0 < B ? n - b0 : B;
        for (size_t s = 0; s < nb; s++) {
            const moeq_mat *mm = &items[b0 + s].mat;
            size_t need = (size_t)moeq_spec_max_eigs(mm->rows, mm->cols, o);
            if (need > eig_cap[s]) {
                double *q = realloc(eig[s], need * sizeof *q);
                if (!q) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "moeq_spec_run: %zu eigenvalues", need); goto done; }
                eig[s] = q;
                eig_cap[s] = need;
            }
        }
        /* each matrix is computed by one thread with single-threaded LAPACK, so its bits do
         * not depend on the thread count */
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
        for (size_t s = 0; s < nb; s++) {
            const moeq_spec_item *it = &items[b0 + s];
            moeq_error_clear(&errs[s]);
            sts[s] = moeq_spec_matrix(&it->mat, o, moeq_spec_key(it->mat.tensor, it->mat.index),
                                      ws[omp_get_thread_num()], &results[b0 + s], eig[s], &neig[s], &errs[s]);
        }
        for (size_t s = 0; s < nb && st == MOEQ_OK; s++) {
            if (sts[s] != MOEQ_OK) {
                st = sts[s];
                if (err) {
                    *err = errs[s];
                    moeq_error_prefix(err, "%s", items[b0 + s].tensor);
                }
                break;
            }
            if (sink) st = sink(user, b0 + s, &items[b0 + s], &results[b0 + s], eig[s], neig[s], err);
        }
    }
done:
    if (ws) for (int t = 0; t < threads; t++) moeq_spec_ws_free(ws[t]);
    if (eig) for (size_t s = 0; s < B; s++) free(eig[s]);
    free(ws); free(eig); free(eig_cap); free(neig); free(sts); free(errs);
    return st;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void moeq_spec_summarize(const moeq_spec_item *items, const moeq_spec_result *res, size_t n,
                         int64_t layer, moeq_proj proj, moeq_spec_summary *out)
{
    memset(out, 0, sizeof *out);
    out->median = out->min = out->max = NAN;
    double *a = malloc((n ? n : 1) * sizeof *a);
    if (!a) return;
    for (size_t i = 0; i < n; i++) {
        if (items[i].expert < 0 || items[i].proj != proj || (layer >= 0 && items[i].layer != layer)) continue;
        out->count++;
        if (res[i].flags & MOEQ_SPEC_F_REPORT) out->flagged++;
        if (isfinite(res[i].alpha)) a[out->fitted++] = res[i].alpha;
    }
    if (out->fitted) {
        qsort(a, (size_t)out->fitted, sizeof *a, cmp_dbl);
        int64_t m = out->fitted;
        out->min = a[0];
        out->max = a[m - 1];
        out->median = m % 2 ? a[m / 2] : 0.5 * (a[m / 2 - 1] + a[m / 2]);
    }
    free(a);
}
