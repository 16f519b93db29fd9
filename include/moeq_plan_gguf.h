/* GGUF plans (`moeq plan --target gguf`, docs/plan.md "GGUF plans"): one ggml type per GGUF
 * matrix (a 3-D routed-expert tensor is one layer × projection) chosen by measured cost within a
 * budget of GGUF bits per weight (block bytes, scales included), solved exactly by
 * moeq_plan_solve; `moeq export gguf --plan` executes it. */
#ifndef MOEQ_PLAN_GGUF_H
#define MOEQ_PLAN_GGUF_H

#include <stdint.h>
#include "moeq_model.h"
#include "moeq_plan.h"

#define MOEQ_GGUF_PLAN_MAX_TYPES 12

typedef struct moeq_gguf_plan_opts {
    double budget;                 /* GGUF bits per weight over the planned matrices */
    int types[MOEQ_GGUF_PLAN_MAX_TYPES], n_types;   /* candidates (ggml ids); 0: the default list */
    int scope_all;                 /* also attention, shared experts, dense MLPs, embeddings, head */
    moeq_plan_cost cost;           /* MOEQ_COST_UNIFORM, MOEQ_COST_HESSIAN or MOEQ_COST_MEASURED */
    moeq_model *measure_model;     /* measured: a second open of the checkpoint (it gets overrides) */
    const int32_t *measure_tokens; /* measured: validation tokens, windows of measure_ctx */
    int64_t measure_n, measure_ctx;
    int threads;
    const char *calib_path;        /* hessian: full-Hessian calibration file */
    int hessian_gptq;              /* hessian costs after GPTQ on the type's grid (export --method gptq) */
    double damps[8];               /* measured with hessian_gptq (--damps): GPTQ's damping candidates; each */
    int n_damps;                   /* (matrix, type) costs its best, which the plan records and export uses */
    const char *reuse_path;        /* --reuse-costs P.json: the per-candidate costs of an earlier GGUF plan of
                                      the same model (every tensor and candidate must be there), not measured again */
    int n_pins;                    /* --tensor-type REGEX=TYPE on GGUF names: pinned, counted in the budget */
    const char *const *pin_regex;
    const int *pin_types;
    void *user;
    void (*progress)(void *user, int64_t done, int64_t total);
} moeq_gguf_plan_opts;

typedef struct moeq_gguf_plan_item {
    char name[64];                 /* GGUF tensor name */
    int64_t layer, rows, cols, experts;   /* experts 0: a 2-D matrix */
    int proj;                      /* moeq_proj for routed experts, else -1 */
    const char *hessian;           /* what its cost is weighted by (docs/plan.md) */
    int n_cand;
    int cand[MOEQ_GGUF_PLAN_MAX_TYPES];
    double cost[MOEQ_GGUF_PLAN_MAX_TYPES];    /* predicted cost per candidate */
    double damp[MOEQ_GGUF_PLAN_MAX_TYPES];    /* --damps: the damping that gave it, else 0 */
    int64_t bits[MOEQ_GGUF_PLAN_MAX_TYPES];   /* its GGUF bits per candidate (bytes × 8) */
    int choice;                    /* index into cand */
    int pinned;                    /* cand[0] is the pinned type, cost NaN */
} moeq_gguf_plan_item;

typedef struct moeq_gguf_plan {
    moeq_gguf_plan_item *items;
    size_t n;
    double budget, bits_per_weight, cost;
    int64_t weights, bits;         /* planned values and their GGUF bits */
    moeq_plan_solve_info solve;
    double seconds_costs, seconds_solve;
} moeq_gguf_plan;

/* The default candidates: Q2_K Q3_K Q4_K Q5_K Q6_K Q8_0 IQ4_XS, and below 3 bits per weight also
 * TQ2_0 TQ1_0 (every one a type mainline llama.cpp loads); on rows the 256-blocks do not
 * divide each becomes llama-quantize's fallback (Q4_0, Q5_0, Q5_1, Q8_0, IQ4_NL). */
moeq_status moeq_gguf_plan_make(const moeq_model *m, const moeq_gguf_plan_opts *o, moeq_gguf_plan *out,
                                moeq_error *err);
void moeq_gguf_plan_free(moeq_gguf_plan *p);
/* plan.json ("format": "moeq-plan", "target": "gguf"; docs/plan.md); malloc'ed. */
char *moeq_gguf_plan_json(const moeq_gguf_plan *p, const moeq_gguf_plan_opts *o, const moeq_model *m);
/* Reads a GGUF plan.json into names/types/damps (malloc'ed; free with moeq_gguf_plan_types_free;
 * damps[i] is the entry's "damp", 0 when null or absent): FORMAT (exit 2) naming the entry for
 * another format/target/model_type, a missing or unknown type, a name listed twice, a damp that
 * is not a positive number. Whether the names are matrices of the model is checked by the export. */
moeq_status moeq_gguf_plan_read(const char *path, const moeq_model *m, char ***names, int **types, double **damps,
                                int *n, moeq_error *err);
void moeq_gguf_plan_types_free(char **names, int *types, double *damps, int n);

#endif
