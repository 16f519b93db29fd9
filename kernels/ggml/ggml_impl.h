/* Internals of the ggml block-type codecs (kernels/ggml/): the per-type table row, the float
 * helpers every family shares, and the scale searches llama.cpp's quantizers use
 * (ggml_search.c). Everything here computes in float32 in llama.cpp's order of operations, so
 * codes and dequantized values are bit-identical to ggml-quants.c (docs/GGML-TYPES.md). */
#ifndef MOEQ_GGML_IMPL_H
#define MOEQ_GGML_IMPL_H

#include "moeq_ggml.h"
#include "moeq_kernels.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define GG_QK_K 256
#define GG_EPS 1e-15f   /* GROUP_MAX_EPS: a group below this is all zero */

/* The table rows are positional initializers that end before the optional fields at the end
 * of gg_codec (row_meta and its callbacks), which are zero for them. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

/* One row of the type table: layout, dequant, quant, and what GPTQ needs to move codes on the
 * fixed grid of a block (quant/ggml_gptq.c). */
typedef struct gg_codec {
    moeq_ggml_type type;
    const char *name;
    int block, bytes;
    /* nb blocks of src into nb * block floats */
    void (*dequant)(const uint8_t *src, float *dst, int64_t nb);
    /* one row of n values; w (n weights, >= 0) NULL: llama.cpp's reference quantizer */
    void (*quant)(const float *x, const float *w, uint8_t *dst, int64_t n);
    /* GPTQ grid: element e of a block decodes as A[e] * t(L) - B[e] in float32, exactly as
     * dequant computes it; t(L) = L - offset (linear) or table[L] (non-linear), L < levels.
     * levels == 0: no grid (float types). */
    int levels, offset;
    const int8_t *table;
    void (*grid)(const uint8_t *blk, float *A, float *B);
    /* writes the codes L[block] into a block whose scale fields are already set */
    void (*pack)(uint8_t *blk, const uint8_t *L);
    /* Row metadata (ik_llama.cpp's row_meta_size): bytes at the start of each row, before its
     * first block (IQ2_KS: an f16 row scale). 0 for ggml's types, whose rows are blocks only.
     * For a type with row_meta, dequant and quant above take and write whole rows (src / dst
     * at the row's start, meta included), grid is NULL, and the callbacks below, which get the
     * row's meta separately, serve everything that works on blocks of a row. */
    int row_meta;
    /* nb blocks at src (inside a row whose meta is at meta) into nb * block floats */
    void (*dequant_meta)(const uint8_t *meta, const uint8_t *src, float *dst, int64_t nb);
    /* GPTQ grid of one block, as grid above, under the row's meta */
    void (*grid_meta)(const uint8_t *meta, const uint8_t *blk, float *A, float *B);
    /* one block of x re-searched under a fixed row meta (GPTQ's regrid): scale fields and codes;
     * w as quant's (NULL: unweighted) */
    void (*quant_block_meta)(const uint8_t *meta, const float *x, const float *w, uint8_t *blk);
    /* which runtimes load the type (MOEQ_GGML_RT_*); 0: both */
    int runtimes;
} gg_codec;

const gg_codec *gg_codec_get(moeq_ggml_type t);

extern const gg_codec gg_codec_f32, gg_codec_f16, gg_codec_bf16;
extern const gg_codec gg_codec_q4_0, gg_codec_q4_1, gg_codec_q5_0, gg_codec_q5_1, gg_codec_q8_0;
extern const gg_codec gg_codec_q2_k, gg_codec_q3_k, gg_codec_q4_k, gg_codec_q5_k, gg_codec_q6_k;
extern const gg_codec gg_codec_iq4_nl, gg_codec_iq4_xs, gg_codec_mxfp4;
extern const gg_codec gg_codec_iq2_k;   /* ik_llama.cpp only */
extern const gg_codec gg_codec_tq1_0, gg_codec_tq2_0;
extern const gg_codec gg_codec_iq2_ks;   /* ik_llama.cpp's, with an f16 row scale */

/* bytes of one row of cols values (cols a multiple of the block) */
static inline size_t gg_row_bytes(const gg_codec *c, int64_t cols)
{
    return (size_t)c->row_meta + (size_t)(cols / c->block) * (size_t)c->bytes;
}
/* nb blocks of row, from block k0 on, into dst: the one way to decode part of a row */
static inline void gg_dequant_blocks(const gg_codec *c, const uint8_t *row, int64_t k0, float *dst, int64_t nb)
{
    if (c->row_meta) c->dequant_meta(row, row + c->row_meta + (size_t)k0 * (size_t)c->bytes, dst, nb);
    else c->dequant(row + (size_t)k0 * (size_t)c->bytes, dst, nb);
}
/* one block of a row (at row + row_meta + k * bytes) re-searched as moeq_ggml_quant_row would
 * weigh it (imp cleaned the same way), the row's meta kept; only for row_meta types */
void gg_quant_block_meta(const gg_codec *c, uint8_t *row, int64_t k, const float *x, const float *imp);

/* the non-linear 4-bit grid of IQ4_NL / IQ4_XS (ggml-common.h kvalues_iq4nl) */
extern const int8_t gg_iq4nl_values[16];
/* IQ2_K's grid (ik_llama.cpp iq2nl_values): 4 values, then the same + 5 (the shifted half) */
extern const int8_t gg_iq2nl_values[8];
/* IQ2_K's quantizer without moeq's descent: ik_llama.cpp's rule alone (what the tests compare
 * the codec's quantizer with); qw: importances as the codec's quant takes them */
void gg_iq2k_quant_ik(const float *x, const float *qw, uint8_t *dst, int64_t n);
/* MXFP4's e2m1 grid, doubled (ggml-common.h kvalues_mxfp4), and its half scale 2^(e - 128) */
extern const int8_t gg_mxfp4_values[16];
float gg_e8m0_half(uint8_t e);

static inline uint16_t gg_rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline void gg_wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline float gg_h2f(const uint8_t *p) { return moeq_f16_to_f32(gg_rd16(p)); }
/* float -> binary16 as ggml rounds it: nearest even, NaN -> quiet 0x7e00 with the sign */
static inline uint16_t gg_f2h(float f)
{
    if (f != f) {
        uint32_t u;
        memcpy(&u, &f, 4);
        return (uint16_t)(((u >> 16) & 0x8000u) | 0x7e00u);
    }
    return moeq_f32_to_f16(f);
}
static inline void gg_put_h(uint8_t *p, float f) { gg_wr16(p, gg_f2h(f)); }

/* ggml's nearest_int: round half to even through the 1.5·2^23 magic add; like ggml it is
 * meant for |f| <= 2^22 (larger values give the same garbage ggml gives, never UB) */
static inline int gg_nearest_int(float f)
{
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

/* (int8_t)v as x86 computes it: truncation, and 0 where C leaves the conversion undefined
 * (NaN, out of int32 range: cvttss2si gives 0x80000000, whose low byte is 0) */
static inline int gg_trunc_i8(float v)
{
    if (!(v > -2147483648.f && v < 2147483648.f)) return 0;
    return (int8_t)(uint8_t)((uint32_t)(int32_t)v & 0xffu);
}
/* float -> int as roundf then the conversion to int8_t (Q8_0) */
static inline int gg_round_i8(float v) { return gg_trunc_i8(roundf(v)); }

/* ---- scale searches (ggml_search.c), llama.cpp's make_*_quants -------------------------- */

/* symmetric: L[i] = l + nmax with l in [-nmax, nmax-1]; returns the scale. rmse_type 1 with
 * qw == NULL weighs by x². */
float gg_make_qx_quants(int n, int nmax, const float *x, int8_t *L, int rmse_type, const float *qw);
float gg_make_q3_quants(int n, int nmax, const float *x, int8_t *L, int do_rmse);
/* asymmetric, L in [0, nmax]: x ≈ scale·L − the_min; weights given (qkx2) or x² (qkx3, NULL) */
float gg_make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                          uint8_t *Laux, float rmin, float rdelta, int nstep, int use_mad);
float gg_make_qkx3_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                          uint8_t *Laux, float rmin, float rdelta, int nstep, int use_mad);
/* positive values (sub-block scales) onto [0, nmax] with weights */
float gg_make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *quant_weights);
int gg_best_index_int8(int n, const int8_t *val, float x);

#endif
