/* Core services: the BLAS wrapper (the only place that includes cblas.h), thread counts,
 * timing, and atomic file output. */
#ifndef MOEQ_CORE_H
#define MOEQ_CORE_H

#include <stdint.h>
#include <stdio.h>
#include "moeq_status.h"

/* C[M,N] = A[M,K] · B[N,K]ᵀ + beta·C, row-major with leading dimensions. Single-threaded:
 * moeq parallelizes around BLAS calls itself, so OpenBLAS is pinned to one thread and the
 * two never oversubscribe the cores. */
void moeq_sgemm_nt(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                   const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* C[M,N] = A[M,K] · B[K,N] + beta·C, row-major (single-threaded, like moeq_sgemm_nt). */
void moeq_sgemm_nn(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                   const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* Symmetric rank-n updates in float64, row-major, lower triangle of C[d, d] written
 * (= the upper triangle in column-major terms): C = beta·C + XᵀX for X[n, d] (tn), or
 * C = beta·C + X·Xᵀ for X[d, n] (nt). Single-threaded, like every BLAS call here. */
void moeq_dsyrk_tn(int64_t d, int64_t n, const double *X, double beta, double *C);
void moeq_dsyrk_nt(int64_t d, int64_t n, const double *X, double beta, double *C);
/* C[M,N] = alpha·A[M,K] · B[K,N] + beta·C in float64, row-major (single-threaded): GPTQ's lazy
 * block updates and the Hessian error traces. */
void moeq_dgemm_nn(int64_t M, int64_t N, int64_t K, double alpha, const double *A, int64_t lda,
                   const double *B, int64_t ldb, double beta, double *C, int64_t ldc);
/* Plain-C reference of the same product, accumulating in double (tests compare against it). */
void moeq_sgemm_nt_ref(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                       const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* Resolves a --threads value (<= 0: all online cores) and configures OpenMP and OpenBLAS. */
int moeq_threads_init(int requested);
int moeq_threads(void);

double moeq_now(void);   /* monotonic seconds */

/* Reads a whole regular file of at most max_bytes into a malloc'ed, NUL-terminated buffer
 * (*len excludes the NUL). what names the kind of file in the too-large message. */
moeq_status moeq_read_file(const char *path, uint64_t max_bytes, const char *what, void **out,
                           size_t *len, moeq_error *err);

/* Maps a whole regular file read-only (the mapping outlives the descriptor, closed here). An
 * empty file gives *map NULL and *len 0: mmap cannot map 0 bytes, and each parser reports an
 * empty file by its own rule. A missing file is MOEQ_ERR_NOT_FOUND (exit 2). */
moeq_status moeq_map_file(const char *path, void **map, size_t *len, moeq_error *err);

/* Output directories are written as a temporary sibling and renamed: these remove a failed
 * temporary (files only, one level) and tell whether a target directory is empty (1) or
 * holds anything or cannot be read (0). */
void moeq_remove_flat_dir(const char *dir);
/* An output path's parent directory must exist (outputs never create directories above
 * themselves): MOEQ_ERR_IO (exit 4, as a failed write) "PATH: output directory DIR does not
 * exist" otherwise. */
moeq_status moeq_output_dir_check(const char *path, moeq_error *err);
int moeq_dir_is_empty(const char *dir);

/* Peak resident set size of this process in bytes (VmHWM), 0 when unknown. */
uint64_t moeq_peak_rss(void);

/* Mapped weight pages (docs/eval.md, "Memory"). The readers register their read-only file
 * mappings; release drops this process's pages of [p, p + n) that lie in a registered mapping
 * (madvise MADV_DONTNEED, whole pages, those shared with a neighbouring tensor included: they
 * are clean copies of the file, so the next touch maps the same bytes again from the page cache
 * or the disk) and ignores any other memory; prefetch asks the kernel for readahead
 * (MADV_WILLNEED, no RSS until touched). Thread-safe. */
void moeq_map_register(const void *base, size_t len);
void moeq_map_unregister(const void *base);
void moeq_pages_release(const void *p, size_t n);
void moeq_pages_prefetch(const void *p, size_t n);
uint64_t moeq_pages_released(void);   /* bytes released so far by this process */
uint64_t moeq_phys_mem(void);         /* physical memory in bytes, 0 when unknown */

#endif
