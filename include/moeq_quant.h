/* Quantization: the RTN codec (formulas in docs/FORMAT.md and docs/quantize.md) and the model
 * driver that writes a packed .moeq file. */
#ifndef MOEQ_QUANT_H
#define MOEQ_QUANT_H

#include <stdint.h>
#include "moeq_model.h"
#include "moeq_pack.h"

/* Quantizes w [rows, cols] (float32, row-major) to the int codec's raw bytes (codes, scales,
 * zeros at the offsets of moeq_qmat_bytes; raw must hold that many bytes, zeroed padding is
 * written). group 0 = per channel. Rows are independent: parallel over rows, the bytes do not
 * depend on the thread count. */
moeq_status moeq_rtn_quantize(const float *w, int64_t rows, int64_t cols, int bits, int group, int sym,
                              uint8_t *raw, moeq_error *err);

/* RTN in any matrix codec (INT: moeq_rtn_quantize; GGML: llama.cpp's unweighted reference
 * quantizer, moeq_ggml_quantize_rows) into raw (moeq_codec_raw_bytes bytes). */
moeq_status moeq_codec_quantize_rtn(const moeq_codec *c, const float *w, int64_t rows, int64_t cols, uint8_t *raw,
                                    moeq_error *err);

/* Weighted grid search (quant/grid.c, docs/quantize.md "Weighted grids"): the f16 scale and zero
 * of one group x[0], x[stride], ... (len values) minimising Σ_j d_j (x_j − Q(x_j))² over the
 * clipping ratios r_k = 1 − k / (2·steps), k < steps, of the min/max grid (k = 0: min/max
 * itself, kept on ties). d NULL (or all zero): unweighted. steps <= 1: the min/max grid. Returns
 * the weighted error of the grid chosen. */
double moeq_grid_search(const double *x, int64_t stride, const double *d, int64_t len, int bits, int sym,
                        int steps, uint16_t *s16, uint16_t *z16);
/* RTN with each group's grid from moeq_grid_search (d [cols]: the weights of the columns, e.g.
 * diag H; NULL: unweighted); codes chosen with the f16 scale. Same layout as moeq_rtn_quantize. */
moeq_status moeq_rtn_quantize_weighted(const float *w, int64_t rows, int64_t cols, int bits, int group, int sym,
                                       const double *d, int steps, uint8_t *raw, moeq_error *err);

typedef enum moeq_quant_scope { MOEQ_SCOPE_EXPERTS = 0, MOEQ_SCOPE_ALL = 1 } moeq_quant_scope;

typedef struct moeq_tensor_rule {
    const char *regex;   /* PCRE2, matched against the packed tensor name (FORMAT.md F-15) */
    moeq_codec codec;    /* RAW with dtype UNKNOWN: keep as is */
} moeq_tensor_rule;

/* Rules compiled once; the first rule whose regex matches a name wins. Not thread-safe (one
 * match buffer). */
typedef struct moeq_rule_set moeq_rule_set;
moeq_status moeq_rule_set_compile(const moeq_tensor_rule *rules, int n, moeq_rule_set **out, moeq_error *err);
const moeq_tensor_rule *moeq_rule_set_match(moeq_rule_set *s, const char *name);
void moeq_rule_set_free(moeq_rule_set *s);

struct moeq_quant_piece;

typedef struct moeq_quant_opts {
    moeq_codec codec;              /* the default for matrices in scope */
    moeq_quant_scope scope;
    const moeq_tensor_rule *rules; /* first match wins, applies to any 2-D matrix */
    int n_rules;
    int zstd_level;                /* 0: none */
    const char *metadata_json;     /* stored in the index ("metadata"), may be NULL */
    /* one call per written tensor; may be NULL */
    void (*progress)(void *user, int64_t i, int64_t n, const char *name, int ndim, const int64_t *shape,
                     const moeq_codec *codec, uint64_t bytes_before, uint64_t bytes_after, double entropy_bits);
    void *user;
    /* A plan: called for every 2-D matrix piece after scope and rules; returning 1 with *codec
     * set overrides them. May be NULL. */
    int (*codec_for)(void *cb_user, const char *name, moeq_codec *codec);
    /* Quantizes one int-codec piece instead of RTN (GPTQ): same contract as moeq_rtn_quantize.
     * May be NULL. */
    moeq_status (*quantize)(void *cb_user, const char *name, const float *w, int64_t rows, int64_t cols,
                            const moeq_codec *codec, uint8_t *raw, moeq_error *err);
    /* Supplies the raw bytes (raw_size) of int-codec piece k without reading its weights (a piece
     * another MPI rank quantized, or one from a resume checkpoint): *given = 1 when it did, else
     * the writer quantizes the piece itself. May be NULL. */
    moeq_status (*provide)(void *cb_user, size_t k, const struct moeq_quant_piece *piece, uint8_t *raw,
                           size_t raw_size, int *given, moeq_error *err);
    /* Called once with the status of opening the output's temporary file; its return value is
     * the status the writer goes on with (an MPI driver agrees it with the other ranks). May be
     * NULL. */
    moeq_status (*opened)(void *cb_user, moeq_status st, moeq_error *err);
    void *cb_user;
} moeq_quant_opts;

/* One piece of the output in file order: a checkpoint tensor, or one expert's matrix of a fused
 * v5 tensor (FORMAT.md F-15), with the codec scope, rules and plan give it. */
typedef struct moeq_quant_piece {
    char name[600];          /* the packed name */
    size_t tensor;           /* index in the checkpoint */
    int64_t rows, cols, off; /* the matrix [rows, cols] at element offset off of the tensor */
    int fused, matrix;       /* a piece of a fused tensor; a 2-D matrix (may take an int codec) */
    moeq_codec codec;        /* INT, or RAW with the tensor's dtype */
    int64_t unit;            /* the layer whose view names the tensor, or layers for the others */
    int64_t item;            /* INT pieces: work item (one per routed expert of a layer, one per
                              * other matrix), numbered in file order; -1 for RAW */
    /* gpt_oss experts (stored transposed / interleaved, or MXFP4): the values are those of
     * moeq_model_expert(unit, expert, proj), written [rows, cols] at off of the bf16 [E, 2I, H]
     * / [E, H, I] order (F-15); 0 for every other piece */
    int strided;
    int64_t expert;
    int proj;
} moeq_quant_piece;

/* Every piece moeq_quantize_rtn writes, in its order (*out malloc'ed), and the number of work
 * items. A codec that cannot apply (a float conversion, a shape the codec refuses) is
 * MOEQ_ERR_UNSUPPORTED naming the piece. */
moeq_status moeq_quant_pieces(const moeq_model *m, const moeq_quant_opts *o, moeq_quant_piece **out, size_t *n,
                              int64_t *n_items, moeq_error *err);

typedef struct moeq_quant_result {
    int64_t tensors, quantized;
    uint64_t bytes_in, bytes_out;      /* tensor data before, stored tensor bytes after */
    uint64_t raw_bytes_out;            /* stored bytes without zstd */
    uint64_t file_bytes;
    int64_t quant_weights;             /* weights under an int codec */
    double code_bits, total_bits;      /* over quant_weights: codes only; with scales/zeros */
    double entropy_bits;               /* mean Shannon entropy of the codes, bits per weight */
} moeq_quant_result;

/* The codec moeq_quantize_rtn gives the matrix piece `piece` of checkpoint tensor `tensor`
 * (scope, then the first matching rule, then codec_for); RAW (dtype UNKNOWN or the tensor's)
 * when it is kept as it is. */
moeq_status moeq_quant_piece_codec(const moeq_model *m, const moeq_quant_opts *o, const char *tensor,
                                   const char *piece, moeq_codec *out, moeq_error *err);

/* RTN over the model's matrices in scope; writes out_path atomically (temporary + rename). */
moeq_status moeq_quantize_rtn(const moeq_model *m, const moeq_quant_opts *o, const char *out_path,
                              moeq_quant_result *res, moeq_error *err);
/* The writer of moeq_quantize_rtn over an enumeration from moeq_quant_pieces (same m and o). */
moeq_status moeq_quantize_pieces_write(const moeq_model *m, const moeq_quant_opts *o, const moeq_quant_piece *pcs,
                                       size_t n, const char *out_path, moeq_quant_result *res,
                                       moeq_error *err);

/* Packs one row of integer codes q[0..cols) (cols a multiple of 32) into the block layout of
 * docs/FORMAT.md ("Int codec layout"): 4·bits bytes per 32 codes. */
void moeq_pack_codes_row(const uint8_t *q, int64_t cols, int bits, uint8_t *codes);

#endif
