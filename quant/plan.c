/* moeq plan: per-matrix costs for each candidate codec, pins, budget, solve (docs/plan.md).
 *   uniform:  n · 4^-b                      (every weight equally sensitive)
 *   alphaq:   n · s · var(W) · 4^-b,  s = (median α / α)^γ   (AlphaQ; α from a spectral file)
 *   hessian:  tr((W − Q_b(W)) H (W − Q_b(W))ᵀ), H = Σ x xᵀ of the expert's inputs: the
 *             squared output error summed over the calibration tokens routed to the expert.
 *   measured: the KLD against the unquantized model, on validation tokens, of quantizing one
 *             layer × projection's experts alone with the candidate (exllamav2's measurement),
 *             shared among those experts in proportion to their hessian costs.
 *   random:   n · 4^-b · e^u, u uniform in [−2, 2] (seeded): random plans at a budget, to test
 *             how well a cost ranks plans (docs/plan.md).
 * The costs are totals over a matrix's weights (n ·), so matrices of different sizes compare. */
#include "moeq_plan.h"
#include "moeq_gptq.h"
#include "moeq_calib.h"
#include "moeq_core.h"
#include "moeq_dist.h"
#include "moeq_kernels.h"
#include "moeq_ggml.h"
#include "moeq_tdict.h"
#include "moeq_eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *moeq_plan_cost_name(moeq_plan_cost c)
{
    return c == MOEQ_COST_ALPHAQ ? "alphaq" : c == MOEQ_COST_HESSIAN ? "hessian" : c == MOEQ_COST_MEASURED ? "measured"
           : c == MOEQ_COST_RANDOM ? "random" : "uniform";
}

int moeq_plan_cost_parse(const char *name, moeq_plan_cost *out)
{
    static const moeq_plan_cost all[] = { MOEQ_COST_UNIFORM, MOEQ_COST_ALPHAQ, MOEQ_COST_HESSIAN, MOEQ_COST_MEASURED,
                                          MOEQ_COST_RANDOM };
    for (size_t i = 0; name && i < sizeof all / sizeof all[0]; i++)
        if (!strcmp(name, moeq_plan_cost_name(all[i]))) { *out = all[i]; return 0; }
    return -1;
}

void moeq_plan_free(moeq_plan *p)
{
    free(p->entries);
    free(p->group_kld);
    memset(p, 0, sizeof *p);
}

moeq_codec moeq_plan_candidate(const moeq_plan_opts *o, int j)
{
    if (o->n_codecs > 0) return o->codecs[j];
    return (moeq_codec){ .type = MOEQ_CODEC_INT, .bits = o->bits[j], .group = o->group, .sym = o->sym };
}

int moeq_plan_ncandidates(const moeq_plan_opts *o) { return o->n_codecs > 0 ? o->n_codecs : o->n_bits; }

/* Bits one matrix's codec stores: codes (codes_only) or codes + f16 scales (+ zeros); a ggml
 * block interleaves both, so its bits count either way (as the type counts them: Q4_K 4.5). */
static int64_t codec_bits(const moeq_codec *c, int64_t rows, int64_t cols, int total)
{
    if (c->type == MOEQ_CODEC_GGML) return (int64_t)moeq_codec_raw_bytes(c, rows, cols) * 8;
    if (c->type == MOEQ_CODEC_TDICT)   /* entropy-coded: the estimate before coding (moeq_codec_bpw) */
        return llround((double)(rows * cols) * moeq_tdict_rate(MOEQ_TDICT_K_DEFAULT)) + (total ? rows * 64 : 0);
    int64_t g = c->group ? c->group : cols;
    int64_t b = rows * cols * c->bits;
    if (total) b += rows * ((cols + g - 1) / g) * (c->sym ? 16 : 32);
    return b;
}

/* A uniform number in [0, 1) from (seed, i, j): splitmix64, so random plans are reproducible. */
static double rand_unit(uint64_t seed, uint64_t i, uint64_t j)
{
    uint64_t z = seed * 0x9e3779b97f4a7c15ull + i * 0xbf58476d1ce4e5b9ull + j * 0x94d049bb133111ebull + 1;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Scratch of the hessian costs, one set per rank. */
typedef struct hess_ws {
    float *wf, *wq;
    double *H, *Hm;
    uint8_t *raw;
    size_t raw_cap;
} hess_ws;

/* One matrix widened into w->wf and its Hessian into w->H (undersampled experts shrunk). */
static moeq_status load_matrix(const moeq_expert_mat *x, moeq_calib_file *calib, int64_t min_tokens, hess_ws *w,
                               moeq_error *err)
{
    int64_t rows = x->mat.rows, cols = x->mat.cols, ntok;
    int flag, down = x->proj == MOEQ_PROJ_DOWN;
    moeq_status st;
    if (!calib) goto widen;   /* a quantizer that takes no Hessian (plain RTN) */
    if ((st = moeq_calib_file_expert(calib, x->layer, x->expert, &ntok, &flag, err))) return st;
    if ((st = moeq_calib_file_hessian(calib, x->layer, x->expert, down, w->H, cols, NULL, err))) return st;
    if (flag != MOEQ_CALIB_OK) {
        /* too few tokens to trust: shrink towards the layer's per-token mean Hessian as if
         * the expert had min_tokens tokens (dead experts are not free on other text) */
        int64_t rows_all;
        if ((st = moeq_calib_file_hessian(calib, x->layer, -1, down, w->Hm, cols, &rows_all, err))) return st;
        double beta = rows_all > 0 ? (double)(min_tokens - ntok) / (double)rows_all : 0;
        for (int64_t t = 0; t < cols * cols; t++) w->H[t] += beta * w->Hm[t];
    }
widen:
    moeq_mat_to_f32(&x->mat, 0, rows, w->wf);
    moeq_mat_release(&x->mat);   /* widened: the mapped pages are done with */
    return MOEQ_OK;
}

/* w->wq = Q(w->wf) under candidate j (the matrix and its Hessian loaded by load_matrix). */
static moeq_status quantize_candidate(const moeq_expert_mat *x, const moeq_plan_opts *o, int j, hess_ws *w,
                                      moeq_error *err)
{
    int64_t rows = x->mat.rows, cols = x->mat.cols;
    moeq_status st;
    {
        const moeq_codec c = moeq_plan_candidate(o, j);
        int g = c.group ? c.group : (int)cols;
        moeq_error e2;
        if (moeq_codec_check(&c, rows, cols, &e2))
            return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "plan: '%s' [%lld, %lld]: %s", x->name, (long long)rows,
                             (long long)cols, e2.detail);
        if (c.type == MOEQ_CODEC_TDICT) {   /* ternary: GPTQ through H (QMoE's damping 0.1) or RTN */
            size_t need = (size_t)moeq_tdict_raw_bound(rows, cols);
            if (need > w->raw_cap) {
                free(w->raw);
                w->raw_cap = 0;
                if (!(w->raw = malloc(need))) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
                w->raw_cap = need;
            }
            moeq_gptq_hinv *h = NULL;
            const double *U = NULL;
            const int64_t *perm = NULL;
            if (o->hessian_gptq) {
                moeq_gptq_opts go = { .damp = 0.1, .threads = o->threads };
                moeq_gptq_info inf;
                moeq_error eh;
                int64_t n;
                st = moeq_gptq_hinv_create(w->H, cols, &go, &h, &inf, &eh);
                if (st == MOEQ_ERR_NOMEM) { *err = eh; return st; }
                if (st == MOEQ_OK) U = moeq_gptq_hinv_factor(h, &n, &perm);   /* else: RTN */
            }
            st = moeq_tdict_quantize(w->wf, rows, cols, U, perm, 0, w->raw, need, w->wq, NULL, err);
            moeq_gptq_hinv_free(h);
            if (st) return st;
        } else if (c.type == MOEQ_CODEC_GGML) {   /* the type's own grid: weighted search (diag H) or GPTQ */
            size_t need = (size_t)moeq_codec_raw_bytes(&c, rows, cols);
            if (need > w->raw_cap) {
                free(w->raw);
                w->raw_cap = 0;
                if (!(w->raw = malloc(need))) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
                w->raw_cap = need;
            }
            if (o->hessian_gptq) {
                moeq_gptq_opts go = { .damp = o->damp, .threads = o->threads };
                st = moeq_ggml_gptq((moeq_ggml_type)c.gtype, w->wf, rows, cols, w->H, &go, w->raw, w->wq, NULL, err);
            } else {
                double *d = malloc((size_t)cols * sizeof *d);
                if (!d) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
                for (int64_t t = 0; t < cols; t++) d[t] = w->H[t * cols + t];
                st = moeq_ggml_quantize_rows((moeq_ggml_type)c.gtype, w->wf, rows, cols, d, w->raw, err);
                free(d);
                if (st == MOEQ_OK) moeq_codec_dequant(&c, w->raw, rows, cols, 0, rows, w->wq);
            }
            if (st) return st;
        } else if (o->hessian_gptq) {
            moeq_gptq_opts go = { .damp = o->damp, .threads = o->threads };
            size_t need = (size_t)moeq_qmat_bytes(c.bits, g, c.sym, rows, cols, NULL, NULL);
            if (need > w->raw_cap) {
                free(w->raw);
                w->raw_cap = 0;
                if (!(w->raw = malloc(need))) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
                w->raw_cap = need;
            }
            if ((st = moeq_gptq_quantize(w->wf, rows, cols, w->H, c.bits, c.group, c.sym, &go, w->raw, w->wq, NULL, err)))
                return st;
        } else {
            moeq_rtn_dequant_f32(w->wf, rows, cols, c.bits, c.group, c.sym, w->wq);
        }
    }
    return MOEQ_OK;
}

/* The hessian cost of one matrix under each candidate: tr((W − Q_b(W)) H (W − Q_b(W))ᵀ). */
static moeq_status hessian_costs(const moeq_expert_mat *x, const moeq_plan_opts *o, moeq_calib_file *calib,
                                 int64_t min_tokens, hess_ws *w, double *cs, moeq_error *err)
{
    int64_t rows = x->mat.rows, cols = x->mat.cols;
    moeq_status st;
    if ((st = load_matrix(x, calib, min_tokens, w, err))) return st;
    for (int j = 0; j < moeq_plan_ncandidates(o); j++) {
        const moeq_codec c = moeq_plan_candidate(o, j);
        if ((st = quantize_candidate(x, o, j, w, err))) return st;
        cs[j] = moeq_hessian_error(w->wf, w->wq, rows, cols, w->H);
        if (!isfinite(cs[j])) {
            char cn[32];
            moeq_codec_format(&c, cn, sizeof cn);
            return moeq_fail(err, MOEQ_ERR_NUMERIC, "plan: '%s': non-finite Hessian error with %s", x->name, cn);
        }
    }
    return MOEQ_OK;
}

/* Test hook: MOEQ_TEST_FAIL_PLAN=RANK:ITEM makes that rank fail (an I/O error) at that
 * matrix's hessian costs (ITEM counts the matrices that get costs, in plan order). */
static int64_t test_fail_item(void) { return moeq_dist_test_fail_item("MOEQ_TEST_FAIL_PLAN"); }

/* The hessian costs of the nf unpinned matrices (mats[fm[f]]) into cost[f * k ...], dealt to
 * the MPI ranks (matrix f to moeq_dist_owner(f)). Each rank computes its own until its first
 * failure; rank 0 gathers every rank's rows and its first failing matrix (message to rank 0,
 * tag MOEQ_TAG_PLAN: a blob of {int64 first failed item or nf, int32 status, detail} and the
 * rank's rows in item order), keeps the failure of the lowest matrix (the one a single process
 * meets first) and broadcasts the outcome and then the whole table, so every rank returns
 * the same: the same plan, or the same error, agreed. */
typedef struct plan_gather_hdr {
    int64_t fail;
    int32_t status, pad;
    char detail[MOEQ_ERROR_DETAIL_MAX];
} plan_gather_hdr;

static moeq_status hessian_costs_dist(const moeq_expert_mat *mats, const int64_t *fm, int64_t nf, const moeq_plan_opts *o,
                                      moeq_calib_file *calib, hess_ws *w, double *cost, moeq_error *err)
{
    const int k = moeq_plan_ncandidates(o), rank = moeq_dist_rank(), size = moeq_dist_size();
    const int64_t fail_at = test_fail_item(), min_tokens = moeq_calib_file_min_tokens(calib);
    plan_gather_hdr *hdr = calloc(1, sizeof *hdr);
    if (!hdr) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    hdr->fail = nf;
    hdr->status = MOEQ_OK;
    moeq_error mine = {0};
    for (int64_t f = rank; f < nf; f += size) {
        moeq_status st = f == fail_at ? moeq_fail(&mine, MOEQ_ERR_IO, "plan: '%s': injected failure (MOEQ_TEST_FAIL_PLAN)",
                                                  mats[fm[f]].name)
                                      : hessian_costs(&mats[fm[f]], o, calib, min_tokens, w, &cost[f * k], &mine);
        if (st != MOEQ_OK) {
            hdr->fail = f;
            hdr->status = (int32_t)st;
            char d[MOEQ_ERROR_DETAIL_MAX + 512];
            if (size > 1) snprintf(d, sizeof d, "rank %d (%s): %s", rank, moeq_dist_host(), mine.detail);
            else snprintf(d, sizeof d, "%s", mine.detail);
            memcpy(hdr->detail, d, sizeof hdr->detail);
            hdr->detail[sizeof hdr->detail - 1] = 0;
            break;
        }
        if (rank == 0 && o->progress) {
            int64_t shown = (f + 1) + (size - 1) < nf ? (f + 1) + (size - 1) : nf;   /* the round's matrices */
            o->progress(o->user, shown, nf);
        }
    }
    moeq_status st = MOEQ_OK;
    if (size > 1) {
        size_t own = 0;
        double *rows = NULL;
        if (rank != 0) {
            for (int64_t f = rank; f < nf; f += size) own++;
            size_t bytes = sizeof *hdr + own * (size_t)k * sizeof *rows;
            char *blob = malloc(bytes);
            if (!blob) st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
            else {
                memcpy(blob, hdr, sizeof *hdr);
                size_t j = 0;
                for (int64_t f = rank; f < nf; f += size, j++)
                    memcpy(blob + sizeof *hdr + j * (size_t)k * sizeof *rows, &cost[f * k], (size_t)k * sizeof *rows);
                st = moeq_dist_send_blob(blob, bytes, 0, MOEQ_TAG_PLAN, err);
                free(blob);
            }
        } else {
            for (int q = 1; q < size && st == MOEQ_OK; q++) {
                void *b = NULL;
                size_t bytes = 0;
                own = 0;
                for (int64_t f = q; f < nf; f += size) own++;
                if ((st = moeq_dist_recv_blob(&b, &bytes, q, MOEQ_TAG_PLAN, err)) != MOEQ_OK) break;
                if (bytes != sizeof *hdr + own * (size_t)k * sizeof *rows) {
                    free(b);
                    st = moeq_fail(err, MOEQ_ERR_IO, "plan: %zu bytes of costs from rank %d, expected %zu", bytes, q,
                                   sizeof *hdr + own * (size_t)k * sizeof *rows);
                    break;
                }
                plan_gather_hdr h;
                memcpy(&h, b, sizeof h);
                size_t j = 0;
                for (int64_t f = q; f < nf && f < h.fail; f += size, j++)
                    memcpy(&cost[f * k], (char *)b + sizeof *hdr + j * (size_t)k * sizeof *rows, (size_t)k * sizeof *rows);
                if (h.status != MOEQ_OK && h.fail < hdr->fail) memcpy(hdr, &h, sizeof h);
                free(b);
            }
        }
        /* rank 0's outcome (its own communication failure included) and then the table */
        if (rank == 0 && st != MOEQ_OK && hdr->status == MOEQ_OK) {
            hdr->fail = -1;
            hdr->status = (int32_t)st;
            snprintf(hdr->detail, sizeof hdr->detail, "%s", err ? err->detail : "");
        }
        if (st == MOEQ_OK || rank == 0) {
            moeq_error e2 = {0};
            moeq_status sb = moeq_dist_bcast(hdr, sizeof *hdr, 0, &e2);
            if (sb == MOEQ_OK && hdr->status == MOEQ_OK) sb = moeq_dist_bcast(cost, (size_t)nf * (size_t)k * sizeof *cost, 0, &e2);
            if (sb != MOEQ_OK) { free(hdr); if (err) *err = e2; return sb; }
            st = (moeq_status)hdr->status;
            if (st != MOEQ_OK) {
                moeq_fail(err, st, "%s", hdr->detail);
                if (err) err->agreed = 1;
            }
        }
    } else if (hdr->status != MOEQ_OK) {
        st = (moeq_status)hdr->status;
        if (err) *err = mine;
    }
    free(hdr);
    return st;
}

/* Measured costs (docs/plan.md): for each layer × projection and candidate j, every unpinned
 * expert matrix of that layer and projection is quantized with j and installed as an override
 * in o->measure_model (a second open of the same checkpoint), which is evaluated against the
 * unquantized m on the validation tokens; the mean KLD is that group's cost, shared among its
 * matrices in proportion to their hessian costs (already in cost[]), so the costs stay additive
 * and sum, per group, to the measured loss. Memory: one group's matrices in float32. Every MPI
 * rank measures the same (deterministic) table. */
static moeq_status measured_costs(const moeq_model *m, const moeq_expert_mat *mats, const int64_t *fm, int64_t nf,
                                  const moeq_plan_opts *o, moeq_calib_file *calib, hess_ws *w, double *cost,
                                  double *group_kld, moeq_error *err)
{
    const int k = moeq_plan_ncandidates(o);
    const moeq_config *cf = moeq_model_config(m);
    const int64_t min_tokens = moeq_calib_file_min_tokens(calib);
    moeq_model *mm = o->measure_model;
    moeq_status st = MOEQ_OK;
    int64_t *gi = malloc((size_t)(nf ? nf : 1) * sizeof *gi);
    float **buf = calloc((size_t)(nf ? nf : 1), sizeof *buf);
    if (!gi || !buf) { free(gi); free(buf); return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); }
    int64_t groups = 0, done = 0;
    for (int64_t l = 0; l < cf->layers; l++)
        for (int p = 0; p < 3; p++) {
            int any = 0;
            for (int64_t f = 0; f < nf && !any; f++) any = mats[fm[f]].layer == l && (int)mats[fm[f]].proj == p;
            groups += any;
        }
    moeq_eval_ref_cache rc;   /* the reference runs once, not once per candidate */
    st = moeq_eval_ref_cache_init(&rc, m, o->measure_tokens, o->measure_n, o->measure_ctx, 0, (uint64_t)1 << 30, err);
    moeq_eval_opts eo = { .ctx = o->measure_ctx, .threads = o->threads, .ref_cache = &rc };
    for (int64_t l = 0; l < cf->layers && st == MOEQ_OK; l++)
        for (int p = 0; p < 3 && st == MOEQ_OK; p++) {
            int64_t ng = 0;
            for (int64_t f = 0; f < nf; f++)
                if (mats[fm[f]].layer == l && (int)mats[fm[f]].proj == p) gi[ng++] = f;
            if (ng == 0) continue;
            for (int j = 0; j < k && st == MOEQ_OK; j++) {
                /* the Hessian is read only for the quantizers that use it (GPTQ, ggml's weighted search) */
                const moeq_codec cj = moeq_plan_candidate(o, j);
                moeq_calib_file *hc = o->hessian_gptq || cj.type == MOEQ_CODEC_GGML ? calib : NULL;
                for (int64_t g = 0; g < ng && st == MOEQ_OK; g++) {
                    const moeq_expert_mat *x = &mats[fm[gi[g]]];
                    size_t nw = (size_t)(x->mat.rows * x->mat.cols);
                    if (!(buf[g] = malloc(nw * sizeof **buf))) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); break; }
                    if ((st = load_matrix(x, hc, min_tokens, w, err)) || (st = quantize_candidate(x, o, j, w, err))) break;
                    memcpy(buf[g], w->wq, nw * sizeof **buf);
                    st = moeq_model_set_override(mm, x->layer, x->expert, x->proj, buf[g], err);
                }
                moeq_eval_result r = {0};
                eo.start_layer = l;   /* layers before l are the reference's */
                if (st == MOEQ_OK) st = moeq_eval(mm, m, o->measure_tokens, o->measure_n, &eo, &r, err);
                moeq_model_clear_overrides(mm);
                for (int64_t g = 0; g < ng; g++) { free(buf[g]); buf[g] = NULL; }
                if (st) break;
                double kld = r.kld_mean > 0 && isfinite(r.kld_mean) ? r.kld_mean : 0, hs = 0;
                if (!isfinite(r.kld_mean)) { st = moeq_fail(err, MOEQ_ERR_NUMERIC, "plan: layer %lld %s: non-finite KLD",
                                                            (long long)l, moeq_proj_name((moeq_proj)p)); break; }
                if (group_kld) group_kld[(l * 3 + p) * k + j] = kld;
                for (int64_t g = 0; g < ng; g++) hs += cost[gi[g] * k + j];
                for (int64_t g = 0; g < ng; g++)
                    cost[gi[g] * k + j] = hs > 0 ? kld * cost[gi[g] * k + j] / hs : kld / (double)ng;
            }
            if (st == MOEQ_OK && o->progress) o->progress(o->user, ++done, groups);
        }
    moeq_eval_ref_cache_free(&rc);
    free(gi);
    free(buf);
    return st;
}

static const double plan_gammas[] = { 0, 0.25, 0.5, 1, 2, 4, 10 };

const double *moeq_plan_gammas(int *n)
{
    *n = (int)(sizeof plan_gammas / sizeof plan_gammas[0]);
    return plan_gammas;
}

/* Ranks of v[0..n) (ties: their mean rank) into r. */
static void ranks(const double *v, int64_t n, double *r, int64_t *ix)
{
    for (int64_t i = 0; i < n; i++) ix[i] = i;
    for (int64_t i = 1; i < n; i++)   /* insertion sort: n is layers × 3 */
        for (int64_t j = i; j > 0 && v[ix[j]] < v[ix[j - 1]]; j--) { int64_t t = ix[j]; ix[j] = ix[j - 1]; ix[j - 1] = t; }
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        while (j + 1 < n && v[ix[j + 1]] == v[ix[i]]) j++;
        for (int64_t t = i; t <= j; t++) r[ix[t]] = 0.5 * (double)(i + j);
        i = j + 1;
    }
}

static double spearman(const double *a, const double *b, int64_t n, double *ra, double *rb, int64_t *ix)
{
    ranks(a, n, ra, ix);
    ranks(b, n, rb, ix);
    double ma = 0, mb = 0, num = 0, da = 0, db = 0;
    for (int64_t i = 0; i < n; i++) ma += ra[i], mb += rb[i];
    ma /= (double)n, mb /= (double)n;
    for (int64_t i = 0; i < n; i++) {
        num += (ra[i] - ma) * (rb[i] - mb);
        da += (ra[i] - ma) * (ra[i] - ma);
        db += (rb[i] - mb) * (rb[i] - mb);
    }
    return da > 0 && db > 0 ? num / sqrt(da * db) : 0;
}

/* --gamma auto (docs/plan.md): measures every layer × projection group's KLD per candidate (as
 * --cost measured), then takes the γ of moeq_plan_gammas whose AlphaQ group sensitivities
 * Σ n·s(γ)·var(W) rank the groups as their measured KLD does (Spearman, averaged over the
 * candidates; the smallest γ among ties). Fills out->group_kld, gamma_rho and n_gamma. */
static moeq_status choose_gamma(const moeq_model *m, const moeq_expert_mat *mats, size_t n, const moeq_plan_opts *o,
                                moeq_calib_file *calib, hess_ws *hw, const double *alpha, const double *var, double med,
                                moeq_plan *out, double *gam, moeq_error *err)
{
    const moeq_config *cf = moeq_model_config(m);
    const int k = moeq_plan_ncandidates(o);
    const int64_t ng = cf->layers * 3;
    int64_t *fm = malloc(n * sizeof *fm), *ix = malloc((size_t)ng * sizeof *ix);
    double *ones = malloc(n * (size_t)k * sizeof *ones), *A = calloc((size_t)ng, sizeof *A);
    double *G = malloc((size_t)ng * sizeof *G), *ra = malloc((size_t)ng * sizeof *ra), *rb = malloc((size_t)ng * sizeof *rb);
    double *gk = calloc((size_t)(ng * k), sizeof *gk);
    char *has = calloc((size_t)ng, 1);
    moeq_status st = MOEQ_OK;
    if (!fm || !ix || !ones || !A || !G || !ra || !rb || !gk || !has) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); goto done; }
    int64_t nf = 0;
    for (size_t i = 0; i < n; i++)
        if (mats[i].mat.rows * mats[i].mat.cols > 0) { fm[nf++] = (int64_t)i; has[mats[i].layer * 3 + mats[i].proj] = 1; }
    for (size_t i = 0; i < n * (size_t)k; i++) ones[i] = 1;
    if ((st = measured_costs(m, mats, fm, nf, o, calib, hw, ones, gk, err))) goto done;
    int ngam;
    const double *gs = moeq_plan_gammas(&ngam);
    double best = -2;
    for (int t = 0; t < ngam; t++) {
        double rho = 0;
        /* the groups' sensitivities (the same for every candidate), packed to the groups present */
        int64_t q = 0;
        for (int64_t g = 0; g < ng; g++) A[g] = 0;
        for (int64_t f = 0; f < nf; f++) {
            const moeq_expert_mat *x = &mats[fm[f]];
            size_t ai = (size_t)((x->layer * cf->n_experts + x->expert) * 3 + x->proj);
            double a = alpha[ai], v = isfinite(var[ai]) ? var[ai] : 0;
            double sv = isfinite(a) && a > 0 ? pow(med / a, gs[t]) : 1.0;
            A[x->layer * 3 + x->proj] += (double)(x->mat.rows * x->mat.cols) * sv * v;
        }
        for (int64_t g = 0; g < ng; g++)
            if (has[g]) A[q++] = A[g];
        for (int j = 0; j < k; j++) {
            int64_t p = 0;
            for (int64_t g = 0; g < ng; g++)
                if (has[g]) G[p++] = gk[g * k + j];
            rho += spearman(A, G, q, ra, rb, ix) / k;
        }
        out->gamma_rho[t] = rho;
        if (rho > best + 1e-12) { best = rho; *gam = gs[t]; }
    }
    out->n_gamma = ngam;
    out->group_kld = gk;
    out->n_group_kld = ng * k;
    gk = NULL;
done:
    free(fm); free(ix); free(ones); free(A); free(G); free(ra); free(rb); free(gk); free(has);
    return st;
}

moeq_status moeq_plan_make(const moeq_model *m, const moeq_plan_opts *o, moeq_plan *out, moeq_error *err)
{
    memset(out, 0, sizeof *out);
    const moeq_config *cf = moeq_model_config(m);
    const int k = moeq_plan_ncandidates(o);
    if (k < 1 || k > 8) return moeq_fail(err, MOEQ_ERR_MISUSE, "plan: 1 to 8 candidate codecs");
    moeq_expert_mat *mats = NULL;
    size_t n = 0;
    moeq_status st = moeq_expert_mats(m, &mats, &n, err);
    if (st) return st;
    if (n == 0) { free(mats); return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "plan: the model has no routed experts"); }
    double *cost = NULL, *alpha = NULL, *var = NULL;
    int64_t *size = NULL;
    int *choice = NULL;
    int64_t *freeix = NULL, *fmat = NULL;
    hess_ws hw = {0};
    moeq_calib_file *calib = NULL;
    moeq_rule_set *rs = NULL;
    out->entries = calloc(n, sizeof *out->entries);
    cost = malloc(n * (size_t)k * sizeof *cost);
    size = malloc(n * (size_t)k * sizeof *size);
    choice = calloc(n, sizeof *choice);
    freeix = malloc(n * sizeof *freeix);
    fmat = calloc(n, sizeof *fmat);
    if (!out->entries || !cost || !size || !choice || !freeix || !fmat) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); goto done; }
    if ((st = moeq_rule_set_compile(o->rules, o->n_rules, &rs, err))) goto done;
    double t0 = moeq_now();
    /* alphaq: sensitivities */
    double med = NAN;
    if (o->cost == MOEQ_COST_ALPHAQ) {
        size_t na = (size_t)(cf->layers * cf->n_experts * 3);
        alpha = malloc(na * sizeof *alpha);
        var = malloc(na * sizeof *var);
        double *fin = malloc(na * sizeof *fin);
        if (!alpha || !var || !fin) { free(fin); st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); goto done; }
        if ((st = moeq_spectral_file_read(o->spectral_path, m, alpha, var, err))) { free(fin); goto done; }
        size_t nf = 0;
        for (size_t i = 0; i < n; i++) {
            double a = alpha[(mats[i].layer * cf->n_experts + mats[i].expert) * 3 + mats[i].proj];
            if (isfinite(a) && a > 0) fin[nf++] = a;
        }
        if (nf == 0) { free(fin); st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: no finite alpha for any routed expert", o->spectral_path); goto done; }
        qsort(fin, nf, sizeof *fin, cmp_double);
        med = nf % 2 ? fin[nf / 2] : 0.5 * (fin[nf / 2 - 1] + fin[nf / 2]);
        free(fin);
    }
    const int measured = o->cost == MOEQ_COST_MEASURED, gauto = o->cost == MOEQ_COST_ALPHAQ && o->gamma_auto;
    const int hess = o->cost == MOEQ_COST_HESSIAN || measured || gauto;
    double gam = o->gamma > 0 ? o->gamma : 1.0;
    if (measured || gauto) {
        const moeq_config *c2 = o->measure_model ? moeq_model_config(o->measure_model) : NULL;
        if (!c2 || !o->measure_tokens || o->measure_ctx < 2)
            { st = moeq_fail(err, MOEQ_ERR_MISUSE, "plan: measured costs need a second model and tokens"); goto done; }
        if (c2->layers != cf->layers || c2->n_experts != cf->n_experts || c2->hidden != cf->hidden || c2->vocab != cf->vocab)
            { st = moeq_fail(err, MOEQ_ERR_MISUSE, "plan: the measured model is not the planned one"); goto done; }
        int64_t nwin = 0;
        if ((st = moeq_token_windows(m, o->measure_tokens, o->measure_n, o->measure_ctx, 0, &nwin, err))) goto done;
    }
    if (hess) {
        if ((st = moeq_calib_file_open(o->calib_path, m, &calib, err))) goto done;
        if (moeq_calib_file_diag(calib)) {
            st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: written with --diag: hessian costs need full Hessians",
                           o->calib_path);
            goto done;
        }
    }
    int64_t maxn = 0, maxc = 0;
    for (size_t i = 0; i < n; i++) {
        maxn = mats[i].mat.rows * mats[i].mat.cols > maxn ? mats[i].mat.rows * mats[i].mat.cols : maxn;
        maxc = mats[i].mat.cols > maxc ? mats[i].mat.cols : maxc;
    }
    if (hess) {
        hw.wf = malloc((size_t)maxn * sizeof *hw.wf);
        hw.wq = malloc((size_t)maxn * sizeof *hw.wq);
        hw.H = malloc((size_t)(maxc * maxc) * sizeof *hw.H);
        hw.Hm = malloc((size_t)(maxc * maxc) * sizeof *hw.Hm);
        if (!hw.wf || !hw.wq || !hw.H || !hw.Hm) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); goto done; }
    }
    if (gauto && (st = choose_gamma(m, mats, n, o, calib, &hw, alpha, var, med, out, &gam, err))) goto done;
    out->gamma = gam;
    int64_t nfree = 0, cap_weights = 0, pinned_size = 0;
    for (size_t i = 0; i < n; i++) {
        const moeq_expert_mat *x = &mats[i];
        moeq_plan_entry *e = &out->entries[out->n];
        int64_t rows = x->mat.rows, cols = x->mat.cols, nw = rows * cols;
        if (nw == 0) continue;   /* a pruned-away expert (width 0): nothing to code */
        snprintf(e->name, sizeof e->name, "%s", x->name);
        e->layer = x->layer;
        e->expert = x->expert;
        e->proj = x->proj;
        e->rows = rows;
        e->cols = cols;
        e->sens = 1;
        /* pins */
        int pinned = 0;
        const moeq_tensor_rule *rule = moeq_rule_set_match(rs, x->name);
        if (rule) {
            if (rule->codec.type == MOEQ_CODEC_RAW) pinned = -1;   /* keep: not in the plan */
            else { pinned = 1; e->codec = rule->codec; }
        }
        if (pinned < 0) continue;
        int64_t wunit = o->weight == MOEQ_WEIGHT_COUNT ? 1 : nw;
        cap_weights += wunit;
        /* the quantity the budget counts: bits (params) or bits per matrix (count), integer */
        int64_t *sz = &size[nfree * k];
        double *cs = &cost[nfree * k];
        if (pinned) {
            e->pinned = 1;
            int64_t b = codec_bits(&e->codec, rows, cols, o->budget_total);
            pinned_size += o->weight == MOEQ_WEIGHT_COUNT ? (int64_t)llround((double)b / (double)nw * 1024) : b;
            e->cost = NAN;
            out->n++;
            continue;
        }
        double s = 1, v = 1;
        if (o->cost == MOEQ_COST_ALPHAQ) {
            size_t ai = (size_t)((x->layer * cf->n_experts + x->expert) * 3 + x->proj);
            double a = alpha[ai];
            v = var[ai];
            s = isfinite(a) && a > 0 ? pow(med / a, gam) : 1.0;   /* unfitted: median */
            if (!isfinite(v)) v = 0;
            e->sens = s;
        }
        for (int j = 0; j < k; j++) {
            const moeq_codec c = moeq_plan_candidate(o, j);
            moeq_error e2;
            if (moeq_codec_check(&c, rows, cols, &e2)) {
                st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "plan: '%s' [%lld, %lld]: %s", x->name, (long long)rows,
                               (long long)cols, e2.detail);
                goto done;
            }
            int64_t b = codec_bits(&c, rows, cols, o->budget_total);
            /* count mode: bits per weight of this matrix in 1/1024 units, so sizes stay integers */
            sz[j] = o->weight == MOEQ_WEIGHT_COUNT ? (int64_t)llround((double)b / (double)nw * 1024) : b;
            /* a ggml type's proxy bits: its bits per weight as it counts them */
            /* t1d: a 3-level grid's log2(3) bits (its stored bits are fewer: the coding) */
            double q = pow(4.0, -(c.type == MOEQ_CODEC_GGML ? moeq_codec_bpw(&c, cols)
                                  : c.type == MOEQ_CODEC_TDICT ? log2(3.0) : (double)c.bits));
            if (o->cost == MOEQ_COST_UNIFORM) cs[j] = (double)nw * q;
            else if (o->cost == MOEQ_COST_ALPHAQ) cs[j] = (double)nw * s * v * q;
            else if (o->cost == MOEQ_COST_RANDOM) cs[j] = (double)nw * q * exp(4.0 * rand_unit(o->seed, i, j) - 2.0);
            else cs[j] = NAN;   /* hessian, measured: below */
        }
        fmat[nfree] = (int64_t)i;
        freeix[nfree++] = (int64_t)out->n;
        out->n++;
    }
    /* hessian: the measured costs, the expensive part, dealt to the MPI ranks */
    if (hess && (st = hessian_costs_dist(mats, fmat, nfree, o, calib, &hw, cost, err))) goto done;
    if (measured) {
        free(out->group_kld);   /* (a gamma_auto table is not kept: measured replaces it) */
        if (!(out->group_kld = calloc((size_t)(cf->layers * 3 * k), sizeof *out->group_kld)))
            { st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory"); goto done; }
        out->n_group_kld = cf->layers * 3 * k;
        if ((st = measured_costs(m, mats, fmat, nfree, o, calib, &hw, cost, out->group_kld, err))) goto done;
    }
    out->seconds_costs = moeq_now() - t0;
    if (cap_weights == 0) { st = moeq_fail(err, MOEQ_ERR_RANGE, "plan: every matrix is pinned to keep"); goto done; }
    /* capacity: budget × weights, in the sizes' units */
    double capd = o->weight == MOEQ_WEIGHT_COUNT ? o->budget * 1024.0 * (double)cap_weights : o->budget * (double)cap_weights;
    int64_t capacity = (int64_t)floor(capd + 1e-6) - pinned_size;
    int64_t minsum = 0, maxsum = 0;
    for (int64_t f = 0; f < nfree; f++) {
        int64_t mn = size[f * k], mx = size[f * k];
        for (int j = 1; j < k; j++) { mn = size[f * k + j] < mn ? size[f * k + j] : mn; mx = size[f * k + j] > mx ? size[f * k + j] : mx; }
        minsum += mn;
        maxsum += mx;
    }
    double unit = o->weight == MOEQ_WEIGHT_COUNT ? 1024.0 * (double)cap_weights : (double)cap_weights;
    if (capacity < minsum || (double)(capacity - maxsum) > 1e-3 * unit) {
        st = moeq_fail(err, MOEQ_ERR_RANGE, "plan: --budget %g is outside what the candidates reach: %.4f to %.4f "
                       "bits per %s%s", o->budget, (double)(minsum + pinned_size) / unit,
                       (double)(maxsum + pinned_size) / unit, o->weight == MOEQ_WEIGHT_COUNT ? "weight of a matrix" : "weight",
                       o->budget_total ? " (with scales and zeros)" : "");
        goto done;
    }
    t0 = moeq_now();
    if ((st = moeq_plan_solve(nfree, k, cost, size, capacity, 0, choice, &out->solve, err))) goto done;
    out->seconds_solve = moeq_now() - t0;
    double code_bits = 0, total_bits = 0, tc = 0;
    int64_t nw_all = 0;
    for (int64_t f = 0; f < nfree; f++) {
        moeq_plan_entry *e = &out->entries[freeix[f]];
        e->codec = moeq_plan_candidate(o, choice[f]);
        e->cost = cost[f * k + choice[f]];
        for (int j = 0; j < k; j++) e->costs[j] = cost[f * k + j];
        e->n_costs = k;
        tc += e->cost;
    }
    for (size_t i = 0; i < out->n; i++) {
        moeq_plan_entry *e = &out->entries[i];
        code_bits += (double)codec_bits(&e->codec, e->rows, e->cols, 0);
        total_bits += (double)codec_bits(&e->codec, e->rows, e->cols, 1);
        nw_all += e->rows * e->cols;
    }
    out->budget = o->budget;
    out->weights = nw_all;
    out->bits_per_weight = code_bits / (double)nw_all;
    out->bits_per_weight_total = total_bits / (double)nw_all;
    out->cost = tc;
done:
    if (st) moeq_plan_free(out);
    moeq_rule_set_free(rs);
    moeq_calib_file_close(calib);
    free(mats); free(cost); free(size); free(choice); free(freeix); free(fmat); free(alpha); free(var);
    free(hw.wf); free(hw.wq); free(hw.H); free(hw.Hm); free(hw.raw);
    return st;
}
