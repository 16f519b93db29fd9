/* The t1d codec (QMoE's sub-1-bit experts, docs/FORMAT.md "T1d codec layout"): per output row
 * ternary levels {lo, 0, hi}, the trits coded pairwise with a Tunstall dictionary of 2^16
 * codewords that the file names only by its p0 byte (P(0) = k / 256); the dictionary is rebuilt
 * deterministically from k. Dictionary, encoder, checker and kernels: kernels/ref/tdict.c
 * (AVX2 kernel kernels/x86/tdict_avx2.c); the quantizer: quant/ternary.c. */
#ifndef MOEQ_TDICT_H
#define MOEQ_TDICT_H

#include <stddef.h>
#include <stdint.h>
#include "moeq_status.h"

/* A moeq_mat's gtype for a t1d view (model/view.c): no ggml type has this id. The view's data
 * is the tensor's raw bytes (header first). */
#define MOEQ_TDICT_GTYPE 0x7d1

#define MOEQ_TDICT_HDR 32         /* header bytes */
#define MOEQ_TDICT_MAXPAIRS 14    /* pairs of trits per codeword at most (28 weights) */
#define MOEQ_TDICT_CODES 65529    /* leaves of the complete 9-ary parse tree nearest 2^16 from below:
                                   * 9 + 8m leaves after m expansions; codewords 65529..65535 unused */
#define MOEQ_TDICT_K_DEFAULT 226  /* p0 = 226/256 = 0.883, QMoE's 0.885 (bit estimates before coding) */

/* Trits in the decoded stream: 0 = zero, 1 = hi (plus), 2 = lo (minus). A pair symbol is
 * 3·t[2i] + t[2i+1] (the even column first). */

typedef struct moeq_tdict {
    int k;
    uint32_t n;                /* codewords: MOEQ_TDICT_CODES */
    /* codeword -> bits 0..3 its pair count (1..14), bits 4+2t..5+2t trit t (t < 2·pairs, 0 past
     * them): the 28 trits in one word, so a kernel expands 8 at a time; 0 for unused */
    uint64_t lut[65536];
    /* the parse tree (encoder only, NULL in the cached decoders): node i's children are
     * child[i] + s, s < 9; a leaf has child -1 and its codeword in id */
    int32_t *child, *id;
    int32_t nnodes;
} moeq_tdict;

/* pair j of a LUT entry, as the pair symbol 3a + b */
static inline int moeq_tdict_pair(uint64_t e, int j)
{
    return 3 * (int)((e >> (4 + 4 * j)) & 3) + (int)((e >> (6 + 4 * j)) & 3);
}

/* The decoder of k (1..255): built on first use (well under a second), then cached for the
 * process (thread-safe). NULL for a k out of range or out of memory. */
const moeq_tdict *moeq_tdict_get(int k);
/* A fresh dictionary with its parse tree (the encoder's); free with moeq_tdict_free. */
moeq_status moeq_tdict_build(int k, moeq_tdict **out, moeq_error *err);
void moeq_tdict_free(moeq_tdict *d);
/* The encoder of k (with its tree), built once and cached like the decoders (a quantize run
 * tries ~9 k per tensor); NULL out of range or out of memory. */
const moeq_tdict *moeq_tdict_get_encoder(int k);

/* Greedy longest-match coding of one row of trits (t[cols], values 0..2): codewords to out
 * (capacity cap; NULL to count only), the tail padded with zero pairs to the end of its
 * codeword. Returns the codeword count, or -1 when cap is too small. */
int64_t moeq_tdict_encode_row(const moeq_tdict *d, const uint8_t *t, int64_t cols, uint16_t *out, int64_t cap);
/* Decodes one row's codewords back to cols trits (t[cols]); -1 when they do not decode to
 * exactly that row (checked as moeq_tdict_check does). */
int moeq_tdict_decode_row(const moeq_tdict *d, const uint16_t *cw, int64_t ncw, int64_t cols, uint8_t *t);

/* Byte sizes: the exact raw size of a t1d tensor of count codewords, and the most any
 * [rows, cols] tensor can take (every codeword one pair): the encoder's buffer. */
uint64_t moeq_tdict_raw_size(int64_t rows, int64_t count);
uint64_t moeq_tdict_raw_bound(int64_t rows, int64_t cols);

/* Checks raw [size bytes] as the t1d layout of a [rows, cols] matrix (FORMAT.md F-13 for t1d):
 * header (k in 1..255, reserved zero, rows, cols as given, size exactly implied), per row lo <= 0
 * <= hi finite, offsets from 0 up to count monotone, every codeword in the dictionary, every
 * row decoding to exactly cols trits (the padding zero). Bounds are checked before each read.
 * MOEQ_ERR_FORMAT with a detail naming the byte offset (the caller prefixes file and tensor). */
moeq_status moeq_tdict_check(const void *raw, uint64_t size, int64_t rows, int64_t cols, moeq_error *err);

/* A checked t1d tensor's fields (after moeq_tdict_check). */
typedef struct moeq_tdict_view {
    int k;
    int64_t rows, cols, count;
    const uint16_t *levels;    /* [rows][2]: lo, hi (binary16) */
    const uint32_t *off;       /* [rows + 1] */
    const uint16_t *cw;        /* [count] */
} moeq_tdict_view;
void moeq_tdict_view_of(const void *raw, moeq_tdict_view *v);
/* The raw size a checked tensor's header says. */
uint64_t moeq_tdict_size_of(const void *raw);

/* Rows [r0, r1) dequantized (dst [(r1 - r0), cols]). */
void moeq_tdict_dequant(const void *raw, int64_t r0, int64_t r1, float *dst);

/* Y[i * ldy + (r - r0)] = Σ_c w[r][c] X[i * ldx + c], i < n, r in [r0, r1), single-threaded.
 * ref: per row its codewords through the LUT, lo·Σx over the minus trits plus hi·Σx over the
 * plus trits (float, column order). avx2: each row decoded to a dense float row, then 8-lane
 * FMA dots over the tokens (another summation order: equal within float rounding, see
 * docs/KERNELS.md). moeq_tdict_gemm picks by the kernel set (MOEQ_KERNEL=ref: the reference). */
void moeq_tdict_gemm_ref(const void *raw, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1, float *Y,
                         int64_t ldy);
void moeq_tdict_gemm_avx2(const void *raw, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1, float *Y,
                          int64_t ldy);
void moeq_tdict_gemm(const void *raw, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1, float *Y,
                     int64_t ldy);
/* All rows, split over the OpenMP threads in fixed blocks (call outside a parallel region). */
void moeq_tdict_gemm_par(const void *raw, const float *X, int64_t n, int64_t ldx, float *Y, int64_t ldy);

/* iid entropy of a trit at p0 = k / 256, bits. */
double moeq_tdict_entropy(int k);
/* The dictionary of k's expected rate on its own source, bits per weight: 16 / (2 Σ P(c)·len(c))
 * (a Tunstall code sits above the entropy: 0.728 against 0.630 near p0 0.885). The codec's
 * estimate before coding (plans); 0 for a k out of range or out of memory. */
double moeq_tdict_rate(int k);

/* ---- quantizer (quant/ternary.c) ---- */
typedef struct moeq_tdict_stats {
    int k;                 /* p0 byte chosen */
    double p0;             /* measured fraction of zero trits */
    int64_t count;         /* codewords */
    uint64_t bytes;        /* raw size */
    double bpw;            /* 8 · bytes / (rows · cols) */
} moeq_tdict_stats;

/* Ternary-quantizes w [rows, cols] and codes it: levels per row from the row (lo = min(row, 0),
 * hi = max(row, 0), rounded to f16), q = hi if x > hi/2, lo if x < lo/2, else 0; with U (the
 * upper Cholesky factor of (H + λI)⁻¹, [cols, cols] in the order perm gives, NULL: RTN) GPTQ's
 * error feedback over the columns. k: the p0 byte (0: the k of least size among a search
 * around the measured p0). raw (capacity cap >= moeq_tdict_raw_bound) receives the layout.
 * wq (may be NULL): the dequantized weights. Deterministic, independent of the thread count. */
moeq_status moeq_tdict_quantize(const float *w, int64_t rows, int64_t cols, const double *U, const int64_t *perm,
                                int k, uint8_t *raw, uint64_t cap, float *wq, moeq_tdict_stats *st,
                                moeq_error *err);

#endif
