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
    void (*progress)(void *user, int64_t i, int64_t n, const char *name, int nd, const int64_t *ne,
                     const char *type);
    void *user;
} moeq_gguf_export_opts;

typedef struct moeq_gguf_export_result {
    uint64_t bytes;                /* file size */
    uint64_t weights;              /* values in all tensors */
    double bits_per_weight;        /* tensor data bits per value, scales included */
    int64_t tensors;
    int64_t types[40];             /* tensors per ggml type id */
    json_t *fallbacks;             /* array of {tensor, type?, fallback, reason}; caller decrefs */
} moeq_gguf_export_result;

moeq_status moeq_gguf_export(const moeq_model *m, const char *out_path, const moeq_gguf_export_opts *o,
                             moeq_gguf_export_result *res, moeq_error *err);
/* The ggml type a .moeq int codec maps onto exactly (Q4_0, Q4_1, Q8_0), -1 when none. */
int moeq_gguf_codec_maps(int bits, int group, int sym, int64_t cols);

#endif
