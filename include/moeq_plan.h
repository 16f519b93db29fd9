/* Bit allocation (`moeq plan`, docs/plan.md): per-matrix costs for candidate codecs (uniform,
 * AlphaQ's spectral sensitivity, measured Hessian output error), an exact solver of the
 * budgeted choice, and plan.json (read back by `moeq quantize --plan`). */
#ifndef MOEQ_PLAN_H
#define MOEQ_PLAN_H

#include <stdint.h>
#include "moeq_model.h"
#include "moeq_pack.h"
#include "moeq_quant.h"

/* ---- the exact solver (quant/plan_solve.c) ----------------------------------------------- */

typedef struct moeq_plan_solve_info {
    double cost;          /* Σ cost of the choice */
    double lower_bound;   /* Lagrangian dual bound: cost - lower_bound is the proven gap */
    int64_t used;         /* Σ size of the choice (<= capacity) */
    int exact;            /* 1: the choice is proven optimal (exact DP over the reduced items) */
    int64_t free_items;   /* items left to the DP after reduced-cost fixing */
    double mu;            /* the Lagrange multiplier found by bisection */
} moeq_plan_solve_info;

/* Minimises Σ_i cost[i*k + choice_i] subject to Σ_i size[i*k + choice_i] <= capacity, one
 * option per item (k options each; size >= 0). Lagrangian bisection and greedy fill give a
 * feasible choice and a bound; options whose reduced cost exceeds the gap are fixed out; the
 * items left are solved exactly by dynamic programming over their sizes (divided by their
 * gcd). If that table would exceed max_cells (<= 0: 2e8) the greedy choice is returned with
 * exact = 0. MOEQ_ERR_RANGE when even the smallest options exceed capacity. Deterministic. */
moeq_status moeq_plan_solve(int64_t n, int k, const double *cost, const int64_t *size, int64_t capacity,
                            int64_t max_cells, int *choice, moeq_plan_solve_info *info, moeq_error *err);

/* ---- spectral files (formats/spectral_h5_read.c) ----------------------------------------- */

/* alpha and var [layers * experts * 3] (gate, up, down; NaN for dense layers and unfitted
 * matrices) from a `moeq spectral` file; checks model_type, layers and experts against m. */
moeq_status moeq_spectral_file_read(const char *path, const moeq_model *m, double *alpha, double *var,
                                    moeq_error *err);

/* ---- plans (quant/plan.c, formats/plan_json.c) ------------------------------------------- */

/* Candidate j of a plan's options: codecs[j], or the int codec of bits[j] with group and sym. */
struct moeq_plan_opts;
moeq_codec moeq_plan_candidate(const struct moeq_plan_opts *o, int j);
int moeq_plan_ncandidates(const struct moeq_plan_opts *o);

typedef enum moeq_plan_cost {
    MOEQ_COST_UNIFORM = 0, MOEQ_COST_ALPHAQ = 1, MOEQ_COST_HESSIAN = 2,
    MOEQ_COST_MEASURED = 3,   /* KLD of each layer × projection quantized alone (needs calib, measure_*) */
    MOEQ_COST_RANDOM = 4      /* seeded random costs: random plans at a budget (cost-ranking tests) */
} moeq_plan_cost;
typedef enum moeq_plan_weight { MOEQ_WEIGHT_PARAMS = 0, MOEQ_WEIGHT_COUNT = 1 } moeq_plan_weight;

typedef struct moeq_plan_opts {
    double budget;                /* bits per weight (or per matrix with WEIGHT_COUNT) */
    int bits[8], n_bits;          /* candidates */
    int group, sym;               /* the candidates' grid */
    moeq_codec codecs[8];         /* n_codecs > 0: these candidates (int or ggml codecs, e.g. q4_k,
                                     iq4_xs, q3g64a) instead of bits × group × sym */
    int n_codecs;
    moeq_plan_cost cost;
    moeq_plan_weight weight;
    int budget_total;             /* the budget includes scales and zeros */
    double gamma;                 /* alphaq exponent (default 1) */
    int gamma_auto;               /* alphaq: choose gamma on the measured group KLDs (needs calib, measure_*) */
    const char *spectral_path;    /* alphaq */
    const char *calib_path;       /* hessian */
    int hessian_gptq;             /* hessian costs after a GPTQ pass instead of RTN */
    double damp;                  /* that GPTQ pass's damping */
    moeq_model *measure_model;    /* measured: a second open of the planned checkpoint (it gets overrides) */
    const int32_t *measure_tokens;   /* measured: validation tokens, windows of measure_ctx */
    int64_t measure_n, measure_ctx;
    uint64_t seed;                /* random */
    const moeq_tensor_rule *rules;   /* pins: --tensor-type REGEX=CODEC (keep = left out) */
    int n_rules;
    int threads;
    void *user;
    void (*progress)(void *user, int64_t done, int64_t total);
} moeq_plan_opts;

typedef struct moeq_plan_entry {
    char name[600];               /* packed name, as moeq quantize names pieces */
    int64_t layer, expert;
    moeq_proj proj;
    int64_t rows, cols;
    moeq_codec codec;
    double cost;                  /* the predicted cost of the chosen codec */
    double costs[8];              /* every candidate's cost (n_costs; 0 when pinned) */
    int n_costs;
    double sens;                  /* alphaq: s = (median α / α)^γ; else 1 */
    int pinned;
} moeq_plan_entry;

typedef struct moeq_plan {
    moeq_plan_entry *entries;
    size_t n;
    double budget, bits_per_weight, bits_per_weight_total, cost;
    int64_t weights;
    moeq_plan_solve_info solve;
    double seconds_costs, seconds_solve;
    double *group_kld;            /* measured (and --gamma auto): [layer][proj][candidate] KLD of that group alone */
    double gamma;                 /* alphaq: the exponent used (chosen with gamma_auto) */
    double gamma_rho[8];          /* gamma_auto: mean Spearman of each tried gamma (moeq_plan_gammas) */
    int n_gamma;
    int64_t n_group_kld;
} moeq_plan;

/* Costs and the solved plan over the routed experts of m. Bad input (a calib or spectral file
 * of another model, a budget the candidates cannot reach) gives FORMAT/RANGE (exit 2). */
moeq_status moeq_plan_make(const moeq_model *m, const moeq_plan_opts *o, moeq_plan *out, moeq_error *err);
void moeq_plan_free(moeq_plan *p);
/* The exponents --gamma auto tries, in order (n of them into *n). */
const double *moeq_plan_gammas(int *n);
const char *moeq_plan_cost_name(moeq_plan_cost c);
/* The cost named name (moeq_plan_cost_name's names) into *out: 0, or -1 for an unknown name. */
int moeq_plan_cost_parse(const char *name, moeq_plan_cost *out);

/* plan.json text (keys in docs/plan.md); malloc'ed. */
char *moeq_plan_json(const moeq_plan *p, const moeq_plan_opts *o, const moeq_model *m);
/* Writes text to path through a temporary name in its directory, renamed at the end. */
moeq_status moeq_write_atomic(const char *path, const char *text, size_t len, moeq_error *err);
/* Reads plan.json: every matrix must name a routed-expert matrix of m (else FORMAT, exit 2). */
moeq_status moeq_plan_read(const char *path, const moeq_model *m, moeq_plan *out, moeq_error *err);

/* name -> codec lookup over a plan, for moeq_quant_opts.codec_for. */
typedef struct moeq_plan_index moeq_plan_index;
moeq_status moeq_plan_index_build(const moeq_plan *p, moeq_plan_index **out, moeq_error *err);
int moeq_plan_codec_for(void *ix, const char *name, moeq_codec *codec);
void moeq_plan_index_free(moeq_plan_index *ix);

#endif
