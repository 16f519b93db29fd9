/* The x86 kernel variants (kernels/x86/qmat_avx2.c, qmat_avx512.c, each built with its own ISA
 * flags; only called after dispatch.c has checked cpuid). */
#ifndef MOEQ_KERNELS_X86_H
#define MOEQ_KERNELS_X86_H
#include "moeq_kernels.h"
#if defined(__x86_64__)
#define MOEQ_HAVE_X86 1
extern const moeq_kernel_set moeq_kernels_avx2;
extern const moeq_kernel_set moeq_kernels_avx512;
extern const moeq_kernel_set moeq_kernels_vnni;
extern const moeq_kernel_set moeq_kernels_bf16;     /* vnni + AVX512-BF16 wgemm, bf16 activations */
extern const moeq_kernel_set moeq_kernels_bf16x2;   /* vnni + AVX512-BF16 wgemm, x as hi + lo */
extern const moeq_kernel_set moeq_kernels_bf16f;    /* bf16x2's wgemm, packed codecs with float activations */
extern const moeq_kernel_set moeq_kernels_amx;      /* bf16f with AMX-BF16 tiles for wgemm and the packed gemm */
/* kernels/x86/syrk_avx2.c, syrk_avx512.c: the sets' dsyrk and f32x256 chunked kernels */
void moeq_avx2_dsyrk(int64_t d, int64_t n, const float *X, double *C, double *scratch);
void moeq_avx512_dsyrk(int64_t d, int64_t n, const float *X, double *C, double *scratch);
void moeq_avx2_fsyrk_pack(int64_t d, const float *X, int64_t n, int64_t row0, void *held);
void moeq_avx2_fsyrk_sum(int64_t d, int64_t nrows, const void *held, double *C, void *scratch);
void moeq_avx512_fsyrk_pack(int64_t d, const float *X, int64_t n, int64_t row0, void *held);
void moeq_avx512_fsyrk_sum(int64_t d, int64_t nrows, const void *held, double *C, void *scratch);
void moeq_amx_hsyrk_pack(int64_t d, const float *X, int64_t n, int64_t row0, void *held);
void moeq_amx_hsyrk_sum(int64_t d, int64_t nrows, const void *held, double *C, void *scratch);
/* kernels/x86/act_avx2.c: the avx2 set's swiglu */
void moeq_avx2_swiglu(float *g, const float *u, int64_t n);
/* kernels/x86/act_avx512.c: the sets' swiglu with AVX-512 */
void moeq_avx512_swiglu(float *g, const float *u, int64_t n);
/* kernels/x86/attn_avx2.c, attn_avx512.c: fused attention of the avx2 and the AVX-512 sets */
void moeq_avx2_attend(const moeq_attn_task *t);
void moeq_avx512_attend(const moeq_attn_task *t);
#endif
#endif
