/* `moeq export gguf` (formats/gguf_export.c): a moeq model written as llama.cpp's converter
 * writes its architecture, weights in ggml types (docs/export.md, docs/FORMAT-gguf.md). */
#ifndef MOEQ_GGUF_EXPORT_H
#define MOEQ_GGUF_EXPORT_H

#include <jansson.h>
#include <stdint.h>
#include "moeq_gguf.h"
#include "moeq_model.h"

typedef struct moeq_gguf_export_opts {
    int type;                      /* ggml type id of the routed experts (--type); a float type
                                      (F32, F16, BF16) applies to every matrix */
    int scope_all;                 /* --scope all: every matrix but the router gets type */
    int n_rules;                   /* --tensor-type REGEX=TYPE, by GGUF tensor name, last match wins */
    const char *const *rule_regex;
    const int *rule_types;
    const char *pre;               /* --gguf-pre NAME: tokenizer.ggml.pre, else from the regex table */
    int requantize;                /* .moeq codecs that do not map exactly are requantized */
    const char *calib_path;        /* --calib F.h5: Hessian diagonals as importance weights */
    int gptq;                      /* --method gptq: GPTQ on the type's grid (needs calib_path) */
    double damp;                   /* --damp: GPTQ's damping λ = damp × mean(diag H); <= 0: auto (chosen per
                                      expert tensor on the calibration file's validation split, else 0.01) */
    int yarn_truncate;             /* --yarn-truncate: accept llama.cpp's rounded YaRN correction range
                                      for a config with rope truncate false (gpt-oss; else refused) */
    int n_plan;                    /* --plan: tensor name -> type (moeq plan --target gguf); applied
                                      before the rules; a name that is not a matrix of the file is FORMAT */
    const char *const *plan_names;
    const int *plan_types;
    const double *plan_damps;      /* may be NULL; > 0: GPTQ's damping for that tensor (the plan's --damps
                                      choice), over --damp and its auto choice */
    void (*progress)(void *user, int64_t i, int64_t n, const char *name, int nd, const int64_t *ne,
                     const char *type);
    void *user;
} moeq_gguf_export_opts;

typedef struct moeq_gguf_export_result {
    uint64_t bytes;                /* file size */
    uint64_t weights;              /* values in all tensors */
    double bits_per_weight;        /* tensor data bits per value, scales included */
    int64_t tensors;
    int64_t types[256];            /* tensors per ggml type id (ik_llama.cpp's ids go past 137) */
    json_t *fallbacks;             /* array of {tensor, type?, fallback, reason}; caller decrefs */
    json_t *damps;                 /* --method gptq, --damp auto: [{tensor, damp, experts, val_err}]; caller decrefs */
} moeq_gguf_export_result;

moeq_status moeq_gguf_export(const moeq_model *m, const char *out_path, const moeq_gguf_export_opts *o,
                             moeq_gguf_export_result *res, moeq_error *err);
/* The ggml type a .moeq int codec maps onto exactly (Q4_0, Q4_1, Q8_0), -1 when none. */
int moeq_gguf_codec_maps(int bits, int group, int sym, int64_t cols);

/* llama-quantize's fallback type for a row of ne0 values that t's blocks do not divide (Q2_K and
 * Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, IQ4_XS -> IQ4_NL, else F16); t itself
 * when it fits. */
int moeq_gguf_fallback_type(int t, int64_t ne0);

/* The matrices an export writes, by GGUF name, in file order (routers excluded: they stay F32):
 * 3-D routed-expert tensors (layer, proj, experts > 0) and 2-D matrices (mat: the model's view;
 * group: the Hessian the export weighs it by). What the GGUF plan chooses types for. *out malloc'ed. */
typedef struct moeq_gguf_matrix {
    char name[64];
    int64_t rows, cols, experts;   /* experts: 0 for a 2-D matrix */
    int64_t layer;                 /* experts and a layer's 2-D matrices; -1 for embeddings and head */
    moeq_proj proj;                /* a layer's 2-D matrix: its moeq_model_set_override proj */
    moeq_mat mat;
    const char *group;             /* 2-D: the calibration subgroup of its input (docs/STATS.md), or NULL */
    int head;                      /* 2-D: 1 token_embd, 2 output (moeq_model_set_head_override's which + 1) */
} moeq_gguf_matrix;
moeq_status moeq_gguf_export_matrices(const moeq_model *m, moeq_gguf_matrix **out, size_t *n, moeq_error *err);

#endif
