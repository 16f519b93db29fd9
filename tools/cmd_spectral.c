/* moeq spectral MODEL [-o F.h5]: per-matrix weight spectra and heavy-tail alpha fits. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common.h"
#include "moeq_core.h"
#include "moeq_dist.h"
#include "moeq_spectral.h"

#ifndef MOEQ_VERSION
#define MOEQ_VERSION "0.1.0"
#endif

static const char *SPECTRAL_HELP =
    "usage: moeq spectral MODEL [-o FILE.h5] [--mode full|gram|farms] [--estimator hill|ks]\n"
    "                     [--scope experts|all] [--ks-fix none|xmin_peak|clip_xmax] [--seed N]\n"
    "                     [--tile N] [--max-blocks N] [--evals-thresh X] [--min-evals N]\n"
    "                     [--randomize] [--save-eigs] [--plot DIR [--plot-matrix TENSOR]...]\n"
    "                     [--threads N] [--json] [-q]\n\n"
    "Computes the empirical spectral density (eigenvalues of WᵀW, λ = σ²) of every matrix in\n"
    "scope and fits its heavy tail two ways: the Hill estimator on the top 10% (AlphaQ) and\n"
    "WeightWatcher's KS power-law fit. One matrix per thread in memory; LAPACK runs\n"
    "single-threaded inside. Matrices with NaN/Inf weights, zero matrices and matrices with\n"
    "too few eigenvalues are flagged with no alpha, never an error.\n\n"
    "  -o FILE.h5         write every metric (and with --save-eigs every ESD) to HDF5; the layout\n"
    "                     is in docs/STATS.md\n"
    "  --mode M           full: all singular values (dgesdd, float64); gram: eigenvalues of the\n"
    "                     smaller gram matrix (dsyrk + dsyevd, float64); farms (default): pooled\n"
    "                     σ² of seeded non-overlapping tiles (AlphaQ's default)\n"
    "  --estimator E      which fit is `alpha`: hill (default) or ks; both are always reported\n"
    "  --scope S          experts (default): routed experts' gate/up/down; all: also attention,\n"
    "                     router, shared experts and dense MLPs\n"
    "  --ks-fix F         WeightWatcher's finger fixes for the KS fit (default none)\n"
    "  --seed N           FARMS tile choice and --randomize shuffles (default 0)\n"
    "  --tile N           FARMS tile side (default 128); --max-blocks N tiles kept (default 256)\n"
    "  --evals-thresh X   eigenvalues <= X are dropped before fitting (default 1e-5)\n"
    "  --min-evals N      fewer eigenvalues: no fit, flagged too_few (default 10)\n"
    "  --randomize        also the ESD of each matrix with its entries shuffled (doubles the cost)\n"
    "  --save-eigs        store each matrix's ESD in the HDF5 file\n"
    "  --plot DIR         SVG figures: a layer x expert alpha heat map per projection, and the\n"
    "                     log-log ESD with fitted tails for the --plot-matrix tensors (checkpoint\n"
    "                     name, fused experts as name[e]) or else the lowest and highest alpha\n"
    "                     of each projection\n"
    "  --threads N        worker threads (default: all cores)\n"
    "  --json             result on stdout: mode, estimator, matrices[] with tensor, layer,\n"
    "                     expert, proj, rows, cols, n_eigs, alpha, alpha_hill, alpha_ks, ks_xmin,\n"
    "                     ks_d, stable_rank, log_norm, log_spectral_norm, var, flags, ...\n"
    "  -q                 no summary or progress\n\n"
    "The summary (stderr): per layer and projection the median, min and max alpha and the\n"
    "matrices flagged. Exit codes: 0 ok (flagged matrices included), 1 usage, 2 bad input,\n"
    "4 I/O failure. Under mpirun -np N the matrices are dealt to the ranks and rank 0 writes\n"
    "the same files (docs/scale.md).\n";

typedef struct sink_ctx {
    moeq_spec_h5 *h5;
    int progress;
    size_t total;
} sink_ctx;

static moeq_status sink(void *user, size_t i, const moeq_spec_item *item, const moeq_spec_result *res,
                        const double *eigs, int64_t n_eigs, moeq_error *err)
{
    sink_ctx *c = user;
    (void)res;
    if (c->h5) {
        moeq_status st = moeq_spec_h5_put_eigs(c->h5, item, eigs, n_eigs, err);
        if (st != MOEQ_OK) return st;
    }
    if (c->progress) {
        fprintf(stderr, "\r[%zu/%zu] %-70.70s", i + 1, c->total, item->tensor);
        if (i + 1 == c->total) fputc('\n', stderr);
        fflush(stderr);
    }
    return MOEQ_OK;
}

static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *record(const moeq_spec_item *it, const moeq_spec_result *r, int randomize)
{
    json_t *o = json_object();
    json_object_set_new(o, "tensor", json_string(it->tensor));
    json_object_set_new(o, "layer", json_integer(it->layer));
    json_object_set_new(o, "expert", json_integer(it->expert));
    json_object_set_new(o, "proj", json_string(moeq_proj_name(it->proj)));
    json_object_set_new(o, "rows", json_integer(r->rows));
    json_object_set_new(o, "cols", json_integer(r->cols));
    json_object_set_new(o, "n_eigs", json_integer(r->n_eigs));
    json_object_set_new(o, "alpha", num(r->alpha));
    json_object_set_new(o, "alpha_hill", num(r->alpha_hill));
    json_object_set_new(o, "alpha_ks", num(r->alpha_ks));
    json_object_set_new(o, "ks_xmin", num(r->ks_xmin));
    json_object_set_new(o, "ks_d", num(r->ks_d));
    json_object_set_new(o, "stable_rank", num(r->stable_rank));
    json_object_set_new(o, "log_norm", num(r->log_norm));
    json_object_set_new(o, "log_spectral_norm", num(r->log_spectral_norm));
    json_object_set_new(o, "var", num(r->var));
    json_object_set_new(o, "alpha_weighted", num(r->alpha_weighted));
    json_object_set_new(o, "log_alpha_norm", num(r->log_alpha_norm));
    json_object_set_new(o, "lambda_max", num(r->lambda_max));
    json_object_set_new(o, "n_eigs_total", json_integer(r->n_eigs_total));
    json_object_set_new(o, "n_tiles", json_integer(r->n_tiles));
    json_object_set_new(o, "hill_k", json_integer(r->hill_k));
    json_object_set_new(o, "ks_n_tail", json_integer(r->ks_n_tail));
    json_object_set_new(o, "ks_fingers", json_integer(r->ks_fingers));
    json_object_set_new(o, "nonfinite", json_integer(r->nonfinite));
    if (randomize) {
        json_object_set_new(o, "rand_lambda_max", num(r->rand_lambda_max));
        json_object_set_new(o, "ww_softrank", num(r->ww_softrank));
        json_object_set_new(o, "rand_distance", num(r->rand_distance));
    }
    json_t *fl = json_array();
    char buf[256];
    moeq_spec_flags_str(r->flags, buf, sizeof buf);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) json_array_append_new(fl, json_string(tok));
    json_object_set_new(o, "flags", fl);
    return o;
}

/* ESD figure of item i: its owner rank recomputes the spectrum (deterministic, so identical to
 * the run) and sends it to rank 0, which writes the figure. Collective. */
static int plot_esd(const char *dir, const moeq_spec_item *items, size_t n, size_t i, const moeq_spec_opts *o,
                    moeq_error *err)
{
    const moeq_spec_item *it = &items[i];
    double *e = NULL;
    int64_t ne = 0;
    moeq_spec_result r;
    moeq_status st = moeq_spec_esd_dist(items, n, i, o, &r, &e, &ne, err);
    if (st == MOEQ_OK && moeq_dist_rank() == 0) {
        char name[MOEQ_SPEC_NAME_MAX], path[4096], title[512];
        size_t k = 0;
        for (const char *p = it->tensor; *p && k + 1 < sizeof name; p++)
            name[k++] = (*p == '/' || *p == '[' || *p == ']' || *p == ' ') ? '_' : *p;
        name[k] = 0;
        snprintf(path, sizeof path, "%s/esd_%s.svg", dir, name);
        snprintf(title, sizeof title, "%s (%s, %lldx%lld)", it->tensor, moeq_spec_mode_name(o->mode),
                 (long long)r.rows, (long long)r.cols);
        const double *kept = e + (ne - r.n_eigs);
        st = moeq_spec_svg_esd(path, title, kept, r.n_eigs, &r, err);
    }
    free(e);
    return st;
}

/* Collective. Rank 0 writes the heat maps (a failure there is agreed), chooses the ESD figures
 * (the --plot-matrix items, else the extremes) and tells the other ranks; each figure's
 * spectrum comes from its owner. */
static int do_plots(const char *dir, const moeq_model *m, const moeq_spec_item *items, const moeq_spec_result *res,
                    size_t n, const moeq_spec_opts *o, const size_t *named, int n_names, FILE *h, moeq_error *err)
{
    const moeq_config *c = moeq_model_config(m);
    const int rank0 = moeq_dist_rank() == 0;
    moeq_status st = MOEQ_OK;
    if (rank0 && mkdir(dir, 0777) != 0 && errno != EEXIST)
        st = moeq_fail(err, MOEQ_ERR_IO, "%s: cannot create: %s", dir, strerror(errno));
    int64_t L = c->layers, E = c->n_experts;
    double *v = NULL;
    if (rank0 && st == MOEQ_OK && !(v = malloc((size_t)(L * E) * sizeof *v))) st = moeq_fail(err, MOEQ_ERR_NOMEM, "plot");
    for (int p = MOEQ_PROJ_GATE; rank0 && st == MOEQ_OK && p <= MOEQ_PROJ_DOWN; p++) {
        for (int64_t i = 0; i < L * E; i++) v[i] = NAN;
        for (size_t i = 0; i < n; i++)
            if (items[i].expert >= 0 && items[i].proj == (moeq_proj)p) v[items[i].layer * E + items[i].expert] = res[i].alpha;
        char path[4096], title[256], label[64];
        snprintf(path, sizeof path, "%s/alpha_%s.svg", dir, moeq_proj_name((moeq_proj)p));
        snprintf(title, sizeof title, "%s: %s_proj, %s alpha (%s mode)", c->model_type, moeq_proj_name((moeq_proj)p),
                 moeq_spec_estimator_name(o->estimator), moeq_spec_mode_name(o->mode));
        snprintf(label, sizeof label, "\xce\xb1 (%s)", moeq_spec_estimator_name(o->estimator));
        st = moeq_spec_svg_heatmap(path, title, label, v, L, E, c->layer_is_moe, err);
        if (st == MOEQ_OK && h) fprintf(h, "plot       %s\n", path);
    }
    free(v);
    if ((st = moeq_dist_agree(st, err)) != MOEQ_OK) return st;
    /* the figures: the named matrices, else the lowest and highest alpha per projection */
    uint64_t *pick = NULL;
    int *kind = NULL;   /* rank 0: -1 named, 0 lowest, 1 highest */
    size_t np = 0;
    if (rank0) {
        pick = malloc((size_t)(n_names + 6) * sizeof *pick);
        kind = malloc((size_t)(n_names + 6) * sizeof *kind);
        if (!pick || !kind) st = moeq_fail(err, MOEQ_ERR_NOMEM, "plot");
        for (int k = 0; st == MOEQ_OK && k < n_names; k++) pick[np] = named[k], kind[np++] = -1;
        for (int p = MOEQ_PROJ_GATE; st == MOEQ_OK && !n_names && p <= MOEQ_PROJ_DOWN; p++) {
            size_t lo = n, hi = n;
            for (size_t i = 0; i < n; i++) {
                if (items[i].expert < 0 || items[i].proj != (moeq_proj)p || !isfinite(res[i].alpha)) continue;
                if (lo == n || res[i].alpha < res[lo].alpha) lo = i;
                if (hi == n || res[i].alpha > res[hi].alpha) hi = i;
            }
            if (lo != n) pick[np] = lo, kind[np++] = 0;
            if (hi != n && hi != lo) pick[np] = hi, kind[np++] = 1;
        }
    }
    if ((st = moeq_dist_agree(st, err)) == MOEQ_OK) {
        void *buf = pick;
        size_t bytes = np * sizeof *pick;
        st = moeq_dist_bcast_blob(&buf, &bytes, 0, err);
        if (!rank0) pick = buf, np = bytes / sizeof *pick;
    }
    for (size_t k = 0; st == MOEQ_OK && k < np; k++) {
        if (pick[k] >= n) { st = moeq_fail(err, MOEQ_ERR_MISUSE, "plot: item %llu of %zu", (unsigned long long)pick[k], n); break; }
        st = plot_esd(dir, items, n, (size_t)pick[k], o, err);
        if (st != MOEQ_OK || !h) continue;
        if (kind[k] < 0) fprintf(h, "plot       ESD of %s\n", items[pick[k]].tensor);
        else fprintf(h, "plot       ESD of %s (%s alpha %.3f)\n", items[pick[k]].tensor, kind[k] ? "highest" : "lowest",
                     res[pick[k]].alpha);
    }
    free(pick);
    free(kind);
    return st;
}

static void summary(FILE *h, const moeq_model *m, const moeq_spec_item *items, const moeq_spec_result *res, size_t n,
                    const moeq_spec_opts *o, double secs)
{
    const moeq_config *c = moeq_model_config(m);
    fprintf(h, "moeq spectral: %zu matrices, mode %s, alpha = %s, %.2f s (%.2f matrices/s, %d threads)\n", n,
            moeq_spec_mode_name(o->mode), moeq_spec_estimator_name(o->estimator), secs, secs > 0 ? (double)n / secs : 0.0,
            moeq_threads());
    fprintf(h, "%-6s %-5s %7s %9s %9s %9s %8s\n", "layer", "proj", "fitted", "median", "min", "max", "flagged");
    for (int64_t l = -1; l < c->layers; l++) {
        if (l >= 0 && !c->layer_is_moe[l]) continue;
        for (int p = MOEQ_PROJ_GATE; p <= MOEQ_PROJ_DOWN; p++) {
            moeq_spec_summary s;
            moeq_spec_summarize(items, res, n, l, (moeq_proj)p, &s);
            if (!s.count) continue;
            char lname[16];
            snprintf(lname, sizeof lname, l < 0 ? "all" : "%lld", (long long)l);
            fprintf(h, "%-6s %-5s %3lld/%-3lld %9.4f %9.4f %9.4f %8lld\n", lname, moeq_proj_name((moeq_proj)p),
                    (long long)s.fitted, (long long)s.count, s.median, s.min, s.max, (long long)s.flagged);
        }
        if (l < 0) fputs("\n", h);
    }
    size_t shown = 0, flagged = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(res[i].flags & MOEQ_SPEC_F_REPORT)) continue;
        flagged++;
        if (shown++ >= 40) continue;
        char fl[256];
        moeq_spec_flags_str(res[i].flags & MOEQ_SPEC_F_REPORT, fl, sizeof fl);
        fprintf(h, "flagged %s [%lldx%lld]: %s", items[i].tensor, (long long)res[i].rows, (long long)res[i].cols, fl);
        if (res[i].flags & MOEQ_SPEC_F_NONFINITE) fprintf(h, " (%lld NaN/Inf weights)", (long long)res[i].nonfinite);
        if (res[i].flags & MOEQ_SPEC_F_TOO_FEW) fprintf(h, " (%lld eigenvalues > %g)", (long long)res[i].n_eigs, o->evals_thresh);
        fputc('\n', h);
    }
    if (shown > 40) fprintf(h, "... and %zu more flagged\n", shown - 40);
    fprintf(h, "flagged: %zu of %zu matrices\n", flagged, n);
}

int cmd_spectral(int argc, char **argv)
{
    tool_common tc = {0};
    const char *path = NULL, *out = NULL, *plot_dir = NULL, *scope_s = "experts";
    const char **names = calloc((size_t)argc + 1, sizeof *names);
    int n_names = 0, save_eigs = 0, rc = 0;
    moeq_spec_opts o;
    moeq_spec_opts_default(&o);
    moeq_spec_scope scope = MOEQ_SPEC_SCOPE_EXPERTS;
    if (!names) return 4;
    for (int i = 1; i < argc; i++) {
        int r = tool_common_option("spectral", argc, argv, &i, &tc);
        if (r < 0) { free(names); return 1; }
        if (r) continue;
        const char *a = argv[i], *v = NULL;
        int64_t x;
        int bad = 0;
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) bad = !(out = tool_value("spectral", argc, argv, &i));
        else if (!strcmp(a, "--plot")) bad = !(plot_dir = tool_value("spectral", argc, argv, &i));
        else if (!strcmp(a, "--plot-matrix")) { bad = !(v = tool_value("spectral", argc, argv, &i)); if (!bad) names[n_names++] = v; }
        else if (!strcmp(a, "--save-eigs")) save_eigs = 1;
        else if (!strcmp(a, "--randomize")) o.randomize = 1;
        else if (!strcmp(a, "--mode")) {
            if (!(v = tool_value("spectral", argc, argv, &i))) bad = 1;
            else if (!strcmp(v, "full")) o.mode = MOEQ_SPEC_FULL;
            else if (!strcmp(v, "gram")) o.mode = MOEQ_SPEC_GRAM;
            else if (!strcmp(v, "farms")) o.mode = MOEQ_SPEC_FARMS;
            else { free(names); return tool_usage_error("spectral", "--mode wants full, gram or farms, got '%s'", v); }
        } else if (!strcmp(a, "--estimator")) {
            if (!(v = tool_value("spectral", argc, argv, &i))) bad = 1;
            else if (!strcmp(v, "hill")) o.estimator = MOEQ_SPEC_HILL;
            else if (!strcmp(v, "ks")) o.estimator = MOEQ_SPEC_KS;
            else { free(names); return tool_usage_error("spectral", "--estimator wants hill or ks, got '%s'", v); }
        } else if (!strcmp(a, "--scope")) {
            if (!(v = tool_value("spectral", argc, argv, &i))) bad = 1;
            else if (!strcmp(v, "experts")) scope = MOEQ_SPEC_SCOPE_EXPERTS, scope_s = "experts";
            else if (!strcmp(v, "all")) scope = MOEQ_SPEC_SCOPE_ALL, scope_s = "all";
            else { free(names); return tool_usage_error("spectral", "--scope wants experts or all, got '%s'", v); }
        } else if (!strcmp(a, "--ks-fix")) {
            if (!(v = tool_value("spectral", argc, argv, &i))) bad = 1;
            else if (!strcmp(v, "none")) o.ks_fix = MOEQ_KS_FIX_NONE;
            else if (!strcmp(v, "xmin_peak")) o.ks_fix = MOEQ_KS_FIX_XMIN_PEAK;
            else if (!strcmp(v, "clip_xmax")) o.ks_fix = MOEQ_KS_FIX_CLIP_XMAX;
            else { free(names); return tool_usage_error("spectral", "--ks-fix wants none, xmin_peak or clip_xmax, got '%s'", v); }
        } else if (!strcmp(a, "--seed")) {
            bad = !(v = tool_value("spectral", argc, argv, &i)) || tool_parse_int("spectral", a, v, 0, &x);
            if (!bad) o.seed = (uint64_t)x;
        } else if (!strcmp(a, "--tile")) {
            bad = !(v = tool_value("spectral", argc, argv, &i)) || tool_parse_int("spectral", a, v, 2, &x);
            if (!bad && x > 4096) { free(names); return tool_usage_error("spectral", "--tile %lld is more than 4096", (long long)x); }
            if (!bad) o.tile = x;
        } else if (!strcmp(a, "--max-blocks")) {
            bad = !(v = tool_value("spectral", argc, argv, &i)) || tool_parse_int("spectral", a, v, 1, &x);
            if (!bad) o.max_blocks = x;
        } else if (!strcmp(a, "--min-evals")) {
            bad = !(v = tool_value("spectral", argc, argv, &i)) || tool_parse_int("spectral", a, v, 3, &x);
            if (!bad) o.min_evals = x;
        } else if (!strcmp(a, "--evals-thresh")) {
            char *end = NULL;
            if (!(v = tool_value("spectral", argc, argv, &i))) bad = 1;
            else {
                o.evals_thresh = strtod(v, &end);
                if (!*v || *end || !(o.evals_thresh >= 0) || !isfinite(o.evals_thresh)) {
                    free(names);
                    return tool_usage_error("spectral", "--evals-thresh wants a number >= 0, got '%s'", v);
                }
            }
        } else if (a[0] == '-' && a[1]) {
            free(names);
            return tool_usage_error("spectral", "unknown option %s", a);
        } else if (path) {
            free(names);
            return tool_usage_error("spectral", "one MODEL only (got '%s' and '%s')", path, a);
        } else {
            path = a;
        }
        if (bad) { free(names); return 1; }
    }
    if (tc.help) { if (moeq_dist_rank() == 0) fputs(SPECTRAL_HELP, stdout); free(names); return 0; }
    if (!path) { free(names); return tool_usage_error("spectral", "missing MODEL"); }
    int orc = tool_check_output("spectral", out);
    if (orc) { free(names); return orc; }
    if (save_eigs && !out) { free(names); return tool_usage_error("spectral", "--save-eigs needs -o FILE.h5"); }
    if (n_names && !plot_dir) { free(names); return tool_usage_error("spectral", "--plot-matrix needs --plot DIR"); }
    const int rank0 = moeq_dist_rank() == 0;   /* under mpirun only rank 0 prints and writes */
    tc.progress = !tc.quiet && isatty(2) && rank0;
    moeq_threads_init(tc.threads);

    moeq_error err = {0};
    moeq_model *m = NULL;
    moeq_spec_item *items = NULL;
    moeq_spec_result *res = NULL;
    moeq_spec_h5 *h5 = NULL;
    size_t n = 0, *named = calloc((size_t)n_names + 1, sizeof *named);
    /* errors that depend only on the input are agreed: every rank returns the same exit code */
    moeq_status st = named ? moeq_model_open(path, &m, &err) : moeq_fail(&err, MOEQ_ERR_NOMEM, "out of memory");
    if (st == MOEQ_OK) st = moeq_spec_list(m, scope, &items, &n, &err);
    for (int k = 0; st == MOEQ_OK && k < n_names; k++) {
        size_t i = 0;
        while (i < n && strcmp(items[i].tensor, names[k])) i++;
        if (i == n) st = moeq_fail(&err, MOEQ_ERR_NOT_FOUND, "--plot-matrix %s: no such matrix in scope", names[k]);
        named[k] = i;
    }
    if (st == MOEQ_OK && !(res = calloc(n ? n : 1, sizeof *res))) st = moeq_fail(&err, MOEQ_ERR_NOMEM, "out of memory");
    if ((st = moeq_dist_agree(st, &err)) != MOEQ_OK) { rc = tool_report("spectral", &err); goto done; }
    const moeq_config *c = moeq_model_config(m);
    if (out && rank0) {
        moeq_spec_h5_meta meta = {.model_path = path, .model_type = c->model_type, .scope = scope_s,
                                  .tool_version = MOEQ_VERSION, .layers = c->layers, .experts = c->n_experts,
                                  .layer_is_moe = c->layer_is_moe, .save_eigs = save_eigs};
        st = moeq_spec_h5_create(out, &o, &meta, &h5, &err);
    }
    if ((st = moeq_dist_agree(st, &err)) != MOEQ_OK) { rc = tool_report("spectral", &err); goto done; }
    sink_ctx sc = {.h5 = save_eigs ? h5 : NULL, .progress = tc.progress, .total = n};
    double t0 = moeq_now();
    /* matrices dealt to the ranks; rank 0 gets every result in order (and the eigenvalues
     * with --save-eigs). A failure here is one rank's: its temporary file goes first, then
     * tool_report ends the job. */
    if (moeq_spec_run_dist(items, n, &o, moeq_threads(), save_eigs, res, sink, &sc, &err) != MOEQ_OK) {
        if (h5) moeq_spec_h5_abort(h5);
        h5 = NULL;
        rc = tool_report("spectral", &err);
        goto done;
    }
    double secs = moeq_now() - t0;
    st = MOEQ_OK;
    if (h5) {
        moeq_spec_h5 *hh = h5;
        h5 = NULL;
        st = moeq_spec_h5_finish(hh, items, res, n, &err);
    }
    if ((st = moeq_dist_agree(st, &err)) != MOEQ_OK) { rc = tool_report("spectral", &err); goto done; }
    FILE *h = tc.quiet || !rank0 ? NULL : stderr;
    if (h) summary(h, m, items, res, n, &o, secs);
    if (h && out) fprintf(h, "wrote      %s\n", out);
    if (plot_dir && do_plots(plot_dir, m, items, res, n, &o, named, n_names, h, &err) != MOEQ_OK) {
        rc = tool_report("spectral", &err);
        goto done;
    }
    if (tc.json && rank0) {
        json_t *jo = json_object();
        json_object_set_new(jo, "mode", json_string(moeq_spec_mode_name(o.mode)));
        json_object_set_new(jo, "estimator", json_string(moeq_spec_estimator_name(o.estimator)));
        json_object_set_new(jo, "ks_fix", json_string(moeq_spec_ks_fix_name(o.ks_fix)));
        json_object_set_new(jo, "scope", json_string(scope_s));
        json_object_set_new(jo, "seed", json_integer((json_int_t)o.seed));
        json_object_set_new(jo, "threads", json_integer(moeq_threads()));
        json_object_set_new(jo, "seconds", json_real(secs));
        size_t flagged = 0;
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            flagged += (res[i].flags & MOEQ_SPEC_F_REPORT) != 0;
            json_array_append_new(arr, record(&items[i], &res[i], o.randomize));
        }
        json_object_set_new(jo, "flagged", json_integer((json_int_t)flagged));
        json_object_set_new(jo, "matrices", arr);
        rc = tool_print_json(jo);
    }
done:
    if (h5) moeq_spec_h5_abort(h5);
    free(res);
    free(items);
    free(names);
    free(named);
    moeq_model_close(m);
    return rc;
}
