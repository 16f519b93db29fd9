/* Dequantizing matrix kernels over the int codecs of the packed format (docs/FORMAT.md,
 * docs/KERNELS.md). kernels/ref is the plain-C truth; kernels/x86 has AVX2 and AVX-512
 * variants chosen at run time by cpuid, or forced with MOEQ_KERNEL=ref|avx2|avx512. */
#ifndef MOEQ_KERNELS_H
#define MOEQ_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include "moeq_status.h"

/* A quantized matrix [rows, cols] (rows = output features). Pointers into the mapping. */
typedef struct moeq_qmat {
    int bits;                 /* 2, 3, 4 or 8 */
    int group;                /* 32, 64, 128, or cols (per channel) */
    int sym;                  /* 1: zero is 2^(bits-1), zeros == NULL */
    int64_t rows, cols;
    const uint8_t *codes;     /* rows x row_bytes, layout of FORMAT.md "Int codec layout" */
    const uint16_t *scales;   /* binary16 [rows, ceil(cols / group)] */
    const uint16_t *zeros;    /* binary16 [rows, ceil(cols / group)], NULL when sym */
} moeq_qmat;

static inline int64_t moeq_qmat_row_bytes(const moeq_qmat *q) { return q->cols * q->bits / 8; }
/* groups per row: the last one is shorter when group does not divide cols (still a multiple of 32) */
static inline int64_t moeq_qmat_groups(const moeq_qmat *q) { return (q->cols + q->group - 1) / q->group; }
static inline int64_t moeq_qmat_group_len(const moeq_qmat *q, int64_t g)
{
    int64_t rest = q->cols - g * q->group;
    return rest < q->group ? rest : q->group;
}

/* Checks that bits, group and shape are ones the kernels support (FORMAT.md F-12):
 * MOEQ_ERR_UNSUPPORTED naming what is wrong ("cols 100 is not a multiple of 32"). A group that
 * does not divide cols leaves a shorter last group. */
moeq_status moeq_qmat_check(int bits, int group, int64_t rows, int64_t cols, moeq_error *err);

/* Raw byte size of an int-codec tensor: codes, scales and zeros at 64-byte aligned offsets;
 * the offsets of the sections are returned when the pointers are not NULL. */
uint64_t moeq_qmat_bytes(int bits, int group, int sym, int64_t rows, int64_t cols,
                         uint64_t *scales_off, uint64_t *zeros_off);

/* binary16 <-> float32 (round to nearest even), exact for every half value. */
float moeq_f16_to_f32(uint16_t h);
uint16_t moeq_f32_to_f16(float f);

/* int8 activations (llama.cpp's trick; docs/KERNELS.md "int8 activations"). x is quantized per
 * 32-column block b: m = max|x_b|, dx[b] = m / 127, xq = round-half-even(x * (127 / m)) in
 * [-127, 127] (0 when m = 0), sxq[b] = the sum of xq over b. The fast kernels then take integer
 * dot products of the codes with xq:
 *   y[r] = sum_g s_g * sum_{b in g} dx_b * (sum_{c in b} q_c xq_c - z_g * sxq_b).
 * It approximates W x within sum_c |w_c| * dx_{b(c)} / 2 (the rounding of x).
 * Returns 0 when x holds a NaN or an infinity (callers then use the float kernels, which
 * propagate it), else 1. xq needs cols bytes, dx and sxq cols / 32 entries. */
int moeq_x8_quantize(const float *x, int64_t cols, int8_t *xq, float *dx, int32_t *sxq);
/* Plain-C truth of the int8-activation kernels: the formula above with exact integer dot
 * products, combined in float64 (cols a multiple of 32; a non-finite x gives the float
 * reference's result). Y as in moeq_kernel_set.gemm. */
void moeq_ref_gemm_x8(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                      float *Y, int64_t ldy);

/* A plain float matrix [rows, cols] as stored in a checkpoint (row-major, rows contiguous):
 * the weights of the forward pass that are not packed. The kernels multiply it as stored, with
 * no widened copy of the whole matrix (docs/KERNELS.md, "Float weights"). */
typedef enum { MOEQ_W_F32 = 0, MOEQ_W_F16 = 1, MOEQ_W_BF16 = 2 } moeq_wtype;
typedef struct moeq_wmat {
    moeq_wtype type;
    int64_t rows, cols;
    const void *data;         /* rows x cols elements of type */
    int64_t ld;               /* elements from one row to the next; 0: cols (contiguous) */
} moeq_wmat;
static inline int64_t moeq_wmat_ld(const moeq_wmat *w) { return w->ld > 0 ? w->ld : w->cols; }

/* The reference swiglu (kernels/ref/act.c: libm's expf). */
void moeq_ref_swiglu(float *g, const float *u, int64_t n);
/* The reference Hessian accumulation (kernels/ref/syrk.c; moeq_kernel_set.dsyrk). */
void moeq_ref_dsyrk(int64_t d, int64_t n, const float *X, double *C, double *scratch);
/* doubles of scratch that every set's dsyrk(d, n, ...) may use (its widened, packed copy of X) */
#define MOEQ_DSYRK_SCRATCH(d, n) ((size_t)(n) * (size_t)(2 * (d) + 64))
/* The chunked Hessian accumulation (moeq_kernel_set.hsyrk_pack / hsyrk_sum / hsyrk_sums): rows
 * are held in chunks of MOEQ_HSYRK_ROWS, packed as they arrive, and a chunk's C[i, j] (j <= i) is
 * one float32 sum over its rows, then C[i, j] += (double)sum. Two kinds, named as calibrate's
 * files name them (root attribute hessian_sums):
 *
 * "bf16x2-f32x256" (AMX): each x is split into two bf16 parts, h = bf16(x) and m = bf16(x - h)
 * (rounded to nearest even: |m| <= 2^-8 |x|, |x - h - m| <= 2^-16 |x|), and the sum is of h_i h_j,
 * m_i h_j, h_i m_j (each exact in float32): each x_i x_j to 3 · 2^-16 (the dropped m_i m_j and
 * the rests), the accuracy of the forward pass's own bf16x2 products, and the sum to float32's.
 * The reference sums in that order, row by row; fast variants in their own (float32 rounding
 * apart). Held chunk: nb = 2 ceil(d / 32) blocks of 16 features, S = MOEQ_HSYRK_ROWS / 32 steps
 * of 32 rows; dword ((p * nb + J) * S + s) * 256 + 16 k + j holds part p (0 = h, 1 = m) of
 * feature 16 J + j of rows 32 s + 2 k (low half) and 32 s + 2 k + 1 (high half) as bf16; features
 * past d are zero.
 *
 * "f32x256" (AVX-512 and AVX2, whose float32 multiply-adds are twice as many per instruction as
 * their float64 ones): x as it is, and the sum is fmaf(x_i, x_j, s) row by row (one rounding per
 * row: to 256 · 2^-24 = 2^-16 of Σ|x_i x_j|), the same bits in every variant. Held chunk: float
 * (P * MOEQ_HSYRK_ROWS + r) * 16 + f holds feature 16 P + f of row r; features past d are zero.
 *
 * Either kind's chunk fits in MOEQ_HSYRK_HELD(d) bytes (64-byte aligned). */
#define MOEQ_HSYRK_ROWS 256
#define MOEQ_HSYRK_HELD(d) ((size_t)(((d) + 31) / 32) * (size_t)(MOEQ_HSYRK_ROWS / 32) * 4096u)
/* bytes of scratch hsyrk_sum needs (bf16x2: a panel of transposed tiles, four 16 x 16 tiles) */
#define MOEQ_HSYRK_SCRATCH ((size_t)(MOEQ_HSYRK_ROWS / 32) * 4096u + 4160u)
void moeq_ref_hsyrk_pack(int64_t d, const float *X, int64_t n, int64_t row0, void *held);
void moeq_ref_hsyrk_sum(int64_t d, int64_t nrows, const void *held, double *C, void *scratch);
void moeq_ref_fsyrk_pack(int64_t d, const float *X, int64_t n, int64_t row0, void *held);
void moeq_ref_fsyrk_sum(int64_t d, int64_t nrows, const void *held, double *C, void *scratch);
/* C += Xᵀ X by a set's chunked kernels over any n: chunks from X's first row, the last one
 * padded as its kind needs (held: MOEQ_HSYRK_HELD(d) bytes, 64-byte aligned; scratch:
 * MOEQ_HSYRK_SCRATCH). */
struct moeq_kernel_set;
void moeq_hsyrk(const struct moeq_kernel_set *ks, int64_t d, int64_t n, const float *X, double *C, void *held,
                void *scratch);
/* Prepares a part-filled held chunk of n rows for ks->hsyrk_sum (bf16x2: rows [n, the next
 * multiple of 32) zeroed; f32x256: nothing). */
void moeq_hsyrk_pad(const struct moeq_kernel_set *ks, int64_t d, int64_t n, void *held);
/* The relative error bound of a chunk of nr rows of kind `sums` (a hessian_sums name): each
 * element within bound · Σ|x_i x_j| of the exact sum; 0 for "f64" or NULL (exact products). */
double moeq_hsyrk_bound(const char *sums, int64_t nr);
/* Plain-C truth of the float-weight GEMM: Y[i * ldy + (r - r0)] = sum_c w[r][c] X[i * ldx + c],
 * each product exact (a float32 times a widened weight), summed in float64 and rounded once. */
void moeq_ref_wgemm(const moeq_wmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                    float *Y, int64_t ldy);

/* The same with each x first rounded to bf16 (nearest even): the truth of the kernels that take
 * bf16 activations (variant bf16, docs/KERNELS.md "Float weights"). */
void moeq_ref_wgemm_bf16x(const moeq_wmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                          float *Y, int64_t ldy);

/* One task of causal softmax attention (moeq_kernel_set.attend): nq queries against nk keys of
 * one head. Query i sees key j iff j <= i + diag and (mask == NULL || mask[j * ldm + i] != 0);
 * keys the rule hides cost nothing. o_i = Σ_j p_ij v_j with p_ij = exp(s_ij - m_i) / (Σ_j'
 * exp(s_ij' - m_i) + exp(sink - m_i)), s_ij = scale · q_i·k_j, m_i = max(sink, max_j s_ij)
 * (sink -INFINITY: none; the sink adds to the denominator only), without the [nq, nk] score
 * matrix. A query that sees no key gets zeros. */
typedef struct moeq_attn_task {
    int64_t nq, nk, dqk, dv;
    const float *q; int64_t ldq;   /* query i: q[i * ldq + d], d < dqk */
    const float *k; int64_t ldk;   /* key j: k[j * ldk + d], d < dqk */
    const float *v; int64_t ldv;   /* value j: v[j * ldv + d], d < dv */
    int64_t diag;                  /* query i's position among the keys: it sees keys j <= i + diag */
    const uint8_t *mask; int64_t ldm;  /* key-major visibility bytes [nk][ldm >= nq], or NULL */
    float scale, sink;
    float *out; int64_t ldo;       /* o_i: out[i * ldo + d], d < dv */
    float *scratch;                /* MOEQ_ATTN_SCRATCH(dqk, dv) floats, any alignment */
} moeq_attn_task;
/* floats of scratch every set's attend needs: transposed queries, one key block's scores and the
 * output accumulators of 64 queries (AVX-512; aligned to 64 bytes inside), or float64
 * accumulators (the reference) */
#define MOEQ_ATTN_SCRATCH(dqk, dv) ((size_t)64 * (size_t)((dqk) + (dv) + 64 + 4) + 64)
/* The reference (kernels/ref/attn.c): float64 throughout, the truth the fast kernels are tested
 * against. */
void moeq_ref_attend(const moeq_attn_task *t);

typedef struct moeq_kernel_set {
    const char *name;   /* "ref", "avx2", "avx512", "vnni", "bf16", "bf16x2", "bf16f", "amx" */
    /* dst[(r - r0) * cols + c] = w[r][c] for r in [r0, r1) */
    void (*dequant)(const moeq_qmat *w, int64_t r0, int64_t r1, float *dst);
    /* y[r - r0] = sum_c w[r][c] x[c] for r in [r0, r1) */
    void (*gemv)(const moeq_qmat *w, const float *x, int64_t r0, int64_t r1, float *y);
    /* Y[i * ldy + (r - r0)] = sum_c w[r][c] X[i * ldx + c], i < n, r in [r0, r1).
     * Single-threaded; scratch is caller-free (the kernel allocates what it needs). */
    void (*gemm)(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0,
                 int64_t r1, float *Y, int64_t ldy);
    /* The same product for float weights (F32/F16/BF16 as stored). Single-threaded. A (row,
     * token) gets the same bits wherever it falls in the call and whatever r0, r1 are; n
     * matters only as n < 16 or not (two kernels), so callers that fix their token blocks may
     * split rows and blocks over threads any way (tested). */
    void (*wgemm)(const moeq_wmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0,
                  int64_t r1, float *Y, int64_t ldy);
    /* Activations prepared once for several wgemm calls over the same n tokens (the row blocks
     * of one matmul, an expert's gate and up); NULL in sets that prepare none. wx_bytes(n, K):
     * the buffer's size, 0 when this n needs none. wx_prep fills the part of token vectors
     * [v0, v1) (16 tokens each, ceil(n / 16) in all; disjoint ranges may run in parallel).
     * wgemm_wx(w, buf, ...) = wgemm(w, ...) bit for bit, buf from wx_prep over every vector of
     * the same X (or NULL: wgemm). */
    size_t (*wx_bytes)(int64_t n, int64_t K);
    void (*wx_prep)(const float *X, int64_t n, int64_t ldx, int64_t K, int64_t v0, int64_t v1, void *buf);
    void (*wgemm_wx)(const moeq_wmat *w, const void *buf, const float *X, int64_t n, int64_t ldx, int64_t r0,
                     int64_t r1, float *Y, int64_t ldy);
    /* Optional (NULL: none): gemm of two packed matrices of one shape and group over the same
     * tokens, all rows (an expert's gate and up), the activations prepared (int8-quantized)
     * once for both. Returns 1 when done, each result gemm's bit for bit; 0: not handled here
     * (the caller runs gemm twice). */
    int (*gemm_pair)(const moeq_qmat *a, const moeq_qmat *b, const float *X, int64_t n, int64_t ldx, float *Ya,
                     float *Yb, int64_t ldy);
    /* SwiGLU in place: g[i] = silu(g[i]) · u[i] = g[i] / (1 + exp(-g[i])) · u[i] */
    void (*swiglu)(float *g, const float *u, int64_t n);
    /* Calibrate's Hessian accumulation in float64: C[i * d + j] += sum_t X[t * d + i] X[t * d + j]
     * for j <= i (the upper triangle untouched), X [n, d] float rows; each element summed over t
     * in order by one fused multiply-add per row (the products are exact), so every variant
     * gives the reference's bits and the result does not depend on how callers split rows.
     * scratch: MOEQ_DSYRK_SCRATCH(d, n) doubles. Single-threaded. */
    void (*dsyrk)(int64_t d, int64_t n, const float *X, double *C, double *scratch);
    /* Required: one task of fused causal attention (moeq_attn_task), online softmax over blocks
     * of keys. Single-threaded; its bits depend only on the task (fixed bounds: independent of
     * the thread count). */
    void (*attend)(const moeq_attn_task *t);
    /* Optional (NULL: none): an expert's gate and up over the same n tokens, all rows, with
     * SwiGLU applied before the results leave the kernel: Hs[i * ldh + r] = silu(g) · u, where
     * g = X·gate_r and u = X·up_r. The weights are packed (qg, qu; wg, wu NULL) or bf16 as
     * stored (wg, wu; qg, qu NULL), of one shape. Returns 1 when done, with the bits of gemm /
     * wgemm of each and swiglu; 0: not handled here (the caller runs the steps). */
    int (*gate_up_swiglu)(const moeq_qmat *qg, const moeq_qmat *qu, const moeq_wmat *wg, const moeq_wmat *wu,
                          const float *X, int64_t n, int64_t ldx, float *Hs, int64_t ldh);
    /* Optional (all three NULL: dsyrk): calibrate's Hessian accumulation by chunks
     * (MOEQ_HSYRK_ROWS), for sets whose float64 multiply-adds are far slower than their float32
     * or bf16 products. hsyrk_pack writes rows X[0, n) as rows row0.. of a held chunk (row0 + n <=
     * MOEQ_HSYRK_ROWS; held 64-byte aligned; every set of a kind writes the same bytes); hsyrk_sum
     * adds the chunk's first nrows rows into C's lower triangle (a part-filled chunk padded by
     * moeq_hsyrk_pad). Callers
     * that chunk an accumulator's rows in order get the same bits however the rows arrive.
     * scratch: MOEQ_HSYRK_SCRATCH bytes. Single-threaded. */
    void (*hsyrk_pack)(int64_t d, const float *X, int64_t n, int64_t row0, void *held);
    void (*hsyrk_sum)(int64_t d, int64_t nrows, const void *held, double *C, void *scratch);
    /* with hsyrk_pack/hsyrk_sum: their kind ("bf16x2-f32x256" or "f32x256"; see MOEQ_HSYRK_ROWS),
     * which fixes the held chunk's bytes and the bound of the sums */
    const char *hsyrk_sums;
    /* 1: every product takes the activations as float32 (no bf16 or int8 rounding of them), so
     * the forward pass has float32's accuracy (transformers' logits to 1e-3, test_forward);
     * 0: bf16 or int8 activations somewhere (bf16, bf16x2, vnni), within 5% of the
     * reference's KLD (docs/KERNELS.md). MOEQ_KERNEL=float picks the best set with 1. */
    int float_acts;
} moeq_kernel_set;

/* Reference kernels: plain C; dequant is w = scale * (q - zero) in float32, gemv/gemm dot the
 * dequantized row with x in float64 (the truth the fast variants are tested against). */
extern const moeq_kernel_set moeq_kernels_ref;
/* The variant in use: MOEQ_KERNEL if set (an unknown or unsupported name falls back to the
 * best available and moeq_kernels_note() says so), else the best the CPU supports. */
const moeq_kernel_set *moeq_kernels(void);
/* A named variant if this CPU and build support it, else NULL. "float": the best with
 * float_acts (amx, bf16f, avx512, avx2, ref: the first this CPU has). */
const moeq_kernel_set *moeq_kernels_get(const char *name);
/* Makes k the variant in use from now on (NULL: MOEQ_KERNEL or cpuid again, at the next
 * moeq_kernels()). Only between forward passes, never while one runs: a pass reads the set
 * at every matmul. For tests and tools that compare variants in one process. */
void moeq_kernels_use(const moeq_kernel_set *k);
/* y = W x shared by the threads of the enclosing OpenMP parallel region (an orphaned `omp for`;
 * outside a region, one call): one contiguous range of rows per thread, a multiple of 64, so
 * that x is prepared (quantized, permuted) once per thread and matrix, not once per block.
 * Every variant's gemv gives a row the same value whatever the range (tested), so the
 * result does not depend on the thread count. */
void moeq_qmat_gemv_par(const moeq_kernel_set *ks, const moeq_qmat *q, const float *x, float *y);
/* Why the chosen variant was chosen ("MOEQ_KERNEL=avx512 forced", "cpuid: avx512f+bw"). */
const char *moeq_kernels_note(void);

#endif
