/* Pieces shared by the AVX2 and AVX-512 kernel files (internal). */
#ifndef MOEQ_QMAT_X86_H
#define MOEQ_QMAT_X86_H
#include "moeq_kernels.h"

/* rows dequantized per gemm tile: about this many bytes of float32 (stays in L2) */
#define MOEQ_X86_GEMM_TILE_BYTES (512 * 1024)

typedef void (*moeq_dequant_fn)(const moeq_qmat *, int64_t, int64_t, float *);
typedef void (*moeq_gemv_fn)(const moeq_qmat *, const float *, int64_t, int64_t, float *);
void moeq_x86_group_xsum(const moeq_qmat *w, const float *x, float *xs);
float moeq_avx2_row_dot(const moeq_qmat *w, int64_t r, const float *x, const float *xs);
void moeq_avx2_dequant(const moeq_qmat *w, int64_t r0, int64_t r1, float *dst);
void moeq_x86_gemm(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                   float *Y, int64_t ldy, moeq_dequant_fn dq, moeq_gemv_fn gv);
/* int8-activation GEMM with AVX-512 VNNI (qmat_gemm_vnni.c), the formula of moeq_x8_quantize:
 * returns 1 when done, 0 when the codec, shape or input is not one it handles (the caller then
 * dequantizes tiles and calls sgemm). Single-threaded. */
int moeq_vnni_gemm_x8(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                      float *Y, int64_t ldy);
/* Two matrices of the same shape and group (an expert's gate and up, full rows) over one
 * preparation of X: each result equals moeq_vnni_gemm_x8's bit for bit. 0: not handled. */
int moeq_vnni_gemm_x8_pair(const moeq_qmat *a, const moeq_qmat *b, const float *X, int64_t n, int64_t ldx, float *Ya,
                           float *Yb, int64_t ldy);
/* The float-activation packed kernels, shared with the bf16f set: AVX2's gemm (tiles dequantized,
 * then the float-weight kernel) and AVX-512's gemv. */
void moeq_avx2_gemm(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1, float *Y,
                    int64_t ldy);
void moeq_avx512_gemv(const moeq_qmat *w, const float *x, int64_t r0, int64_t r1, float *y);
typedef void (*moeq_wgemm_fn)(const moeq_wmat *, const float *, int64_t, int64_t, int64_t, int64_t, float *, int64_t);
/* The panel GEMM of wmat_avx2.c and wmat_f32_avx512.c: a panel is [kc][16] floats, 16 rows of W
 * from column k0 (kc <= 256), filled by a packer from float weights (moeq_avx2_pack_wpanel, src a
 * moeq_wmat) or straight from an int codec's blocks (moeq_avx2_pack_qpanel, src a moeq_qmat:
 * the dequantized values of moeq_avx2_dequant, with no float32 copy of the rows); a register
 * tile kernel sweeps each panel with up to pt tokens. moeq_x86_panel_loop is the loop both
 * files share; moeq_avx2_panel_gemm and moeq_avx512_panel_gemm run it with their own tiles
 * (6 tokens x 2 ymm; 12 tokens x 1 zmm: the same FMA chains, the same bits). */
#define MOEQ_X86_MAX_PT 16
#define MOEQ_X86_PANEL_ROWS 16   /* rows of W per panel */
/* Calls of fewer tokens take the dot-product tiles (no packing to amortize). The choice
 * depends on n alone, so callers that fix their token blocks get results that ignore the
 * thread count; the float and packed paths use the same threshold. */
#define MOEQ_X86_PANEL_MIN_TOKENS 16
typedef void (*moeq_x86_panel_fn)(const void *src, int64_t r, int64_t nr, int64_t k0, int64_t kc, float *P);
typedef void (*moeq_x86_otile_fn)(const float *P, const float *const *x, int64_t kc, int first, float *y, int64_t ldy,
                                  int nr);
typedef void (*moeq_x86_panel_gemm_fn)(moeq_x86_panel_fn pack, const void *src, int64_t K, const float *X, int64_t n,
                                       int64_t ldx, int64_t r0, int64_t r1, float *Y, int64_t ldy);
void moeq_x86_panel_loop(moeq_x86_panel_fn pack, const void *src, int64_t K, const float *X, int64_t n, int64_t ldx,
                         int64_t r0, int64_t r1, float *Y, int64_t ldy, const moeq_x86_otile_fn *ot, int pt);
void moeq_avx2_pack_wpanel(const void *src, int64_t r, int64_t nr, int64_t k0, int64_t kc, float *P);
void moeq_avx2_pack_qpanel(const void *src, int64_t r, int64_t nr, int64_t k0, int64_t kc, float *P);
void moeq_avx2_panel_gemm(moeq_x86_panel_fn pack, const void *src, int64_t K, const float *X, int64_t n, int64_t ldx,
                          int64_t r0, int64_t r1, float *Y, int64_t ldy);
void moeq_avx512_panel_gemm(moeq_x86_panel_fn pack, const void *src, int64_t K, const float *X, int64_t n, int64_t ldx,
                            int64_t r0, int64_t r1, float *Y, int64_t ldy);
/* moeq_avx2_gemm with other kernels: batches of 4..15 tokens dequantize tiles of rows for wgemm
 * (its dot-product tiles), batches of 16 or more pack the codec's panels for pgemm. */
void moeq_x86_gemm_tiled(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1, float *Y,
                         int64_t ldy, moeq_wgemm_fn wgemm, moeq_x86_panel_gemm_fn pgemm);
/* wmat_avx2.c's panel packing ([kc][16] floats of 16 rows from column k0), shared with
 * wmat_f32_avx512.c, and the AVX-512 float-weight GEMM there: the same bits as
 * moeq_avx2_wgemm (each output one FMA chain in k order), 16-lane tiles of 12 tokens. */
void moeq_avx2_pack_panel(moeq_wtype type, const unsigned char *base, int64_t ld, int64_t r, int64_t nr, int64_t k0,
                          int64_t kc, float *P);
void moeq_avx512_wgemm(const moeq_wmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                       float *Y, int64_t ldy);
/* moeq_avx2_gemm's tiles through moeq_avx512_wgemm (the same bits) */
void moeq_avx512_gemm_tiled(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                            float *Y, int64_t ldy);
/* Float-weight GEMM (wmat_avx2.c), moeq_kernel_set.wgemm of every x86 variant. */
void moeq_avx2_wgemm(const moeq_wmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                     float *Y, int64_t ldy);
/* The vnni set's gemv, gemm and gemm_pair (qmat_vnni.c), shared with the bf16 sets (wmat_avx512.c). */
int moeq_vnni_gemm_pair(const moeq_qmat *a, const moeq_qmat *b, const float *X, int64_t n, int64_t ldx, float *Ya,
                        float *Yb, int64_t ldy);
void moeq_vnni_gemv(const moeq_qmat *w, const float *x, int64_t r0, int64_t r1, float *y);
void moeq_vnni_gemm(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                    float *Y, int64_t ldy);
/* AVX512-BF16 GEMM of bf16 weights (wmat_avx512.c): bf16 activations, or x split hi + lo. */
void moeq_avx512bf16_wgemm(const moeq_wmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                           float *Y, int64_t ldy);
void moeq_avx512bf16x2_wgemm(const moeq_wmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                             float *Y, int64_t ldy);
/* wmat_avx512.c's activation packing and bf16 check, shared with wmat_amx.c (built with
 * AVX512-BF16): x of n tokens as bf16 pairs [ntv][K2s][16] (hi, then lo when split); a float32
 * matrix's rows as bf16 when every value is one (else NULL; the caller frees). */
void moeq_bf16_pack_x(const float *X, int64_t n, int64_t ldx, int64_t K, int64_t K2s, int split, int64_t v0, int64_t v1,
                      uint32_t *xp);
uint16_t *moeq_bf16_rows(const moeq_wmat *w, int64_t r0, int64_t r1);
#endif
