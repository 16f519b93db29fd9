/* Fused causal attention with AVX-512 (moeq_kernel_set.attend; docs/KERNELS.md "Attention"):
 * FlashAttention-2's online softmax over blocks of KB keys, for chunks of QL queries, with a lane
 * per query everywhere. Queries are transposed once per chunk (Qt [dqk][QL]), so the scores of a
 * key block come out transposed (St [KB][QL]) and the softmax state of 16 queries (running max m,
 * running sum l) is one vector: max, exp and sums need no horizontal step. O accumulates in
 * Ot [dv][QL], rescaled by exp(m_old - m_new) per block. Both products are one register tile:
 * C[x][lanes] += Σ_y A[y][lanes] · B(x, y), 6 x by up to 4 vectors (24 accumulators), B broadcast
 * from K's rows (scores) or V's rows (values). Everything is float32 FMAs on the stored values
 * (no rounding of q, k, v or p to narrower types); every output is a fixed chain given the task,
 * so the bits do not depend on threads or runs. Tested against kernels/ref/attn.c. */
#include "moeq_kernels.h"
#include "kernels/x86/x86.h"
#include "kernels/x86/avx512_inl.h"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define QL 64   /* queries per chunk: 4 vectors */
#define KB 64   /* keys per block: St is 16 KiB */
#define NX 6    /* x per register tile */
#define INLINE static inline __attribute__((always_inline))

/* exp16 with x < -87 (masked keys: -inf) giving 0 without computing it: exp16 would round those
 * to denormals or 0, and such results cost a microcode assist each on Intel cores (the causal
 * half of a diagonal block took longer than all the products). The lost terms are < 2^-125. */
INLINE __m512 exp_ge87(__m512 x)
{
    const __mmask16 ok = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_NLT_UQ);
    return _mm512_maskz_mov_ps(ok, exp16(_mm512_maskz_mov_ps(ok, x)));
}

/* C[x * QL + 16 v + lane] = (init ? C · alpha[v] : 0) + Σ_{y < ny} A[y * QL + 16 v + lane] ·
 * B[x * bx + y * by] for x < nx, v < nv; one FMA chain per output in y order. */
INLINE void tile(const int nv, const int nx, const int init, const float *A, int64_t ny, const float *B,
                 int64_t bx, int64_t by, float *C, const __m512 *alpha)
{
    __m512 acc[NX][4];
#pragma GCC unroll 6
    for (int x = 0; x < NX; x++)
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++)
            if (x < nx && v < nv)
                acc[x][v] = init ? _mm512_mul_ps(_mm512_loadu_ps(C + x * QL + 16 * v), alpha[v]) : _mm512_setzero_ps();
    const float *b[NX];
#pragma GCC unroll 6
    for (int x = 0; x < NX; x++) b[x] = B + (x < nx ? x : 0) * bx;
    for (int64_t y = 0; y < ny; y++) {
        __m512 a[4];
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++)
            if (v < nv) a[v] = _mm512_loadu_ps(A + y * QL + 16 * v);
#pragma GCC unroll 6
        for (int x = 0; x < NX; x++) {
            if (x >= nx) continue;
            const __m512 bb = _mm512_set1_ps(b[x][y * by]);
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++)
                if (v < nv) acc[x][v] = _mm512_fmadd_ps(a[v], bb, acc[x][v]);
        }
    }
#pragma GCC unroll 6
    for (int x = 0; x < NX; x++)
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++)
            if (x < nx && v < nv) _mm512_storeu_ps(C + x * QL + 16 * v, acc[x][v]);
}

#define CASES(INIT)                                                                                  \
    CASE(1, 1, INIT) CASE(1, 2, INIT) CASE(1, 3, INIT) CASE(1, 4, INIT) CASE(1, 5, INIT) CASE(1, 6, INIT) \
    CASE(2, 1, INIT) CASE(2, 2, INIT) CASE(2, 3, INIT) CASE(2, 4, INIT) CASE(2, 5, INIT) CASE(2, 6, INIT) \
    CASE(3, 1, INIT) CASE(3, 2, INIT) CASE(3, 3, INIT) CASE(3, 4, INIT) CASE(3, 5, INIT) CASE(3, 6, INIT) \
    CASE(4, 1, INIT) CASE(4, 2, INIT) CASE(4, 3, INIT) CASE(4, 4, INIT) CASE(4, 5, INIT) CASE(4, 6, INIT)
#define CASE(V, X, INIT) \
    case (V) * 8 + (X): tile(V, X, INIT, A, ny, B + x0 * bx, bx, by, C + x0 * QL, alpha); break;
/* the tiles over x < nxall, the sizes and strides as constants where they are (so the
 * accumulators stay in registers and the addressing is simple) */
#define TILES(INIT)                                                            \
    for (int64_t x0 = 0; x0 < nxall; x0 += NX) {                               \
        const int nx = nxall - x0 < NX ? (int)(nxall - x0) : NX;               \
        switch (nv * 8 + nx) { CASES(INIT) default: break; }                   \
    }

/* scores: St[j][lanes] = Σ_d Qt[d][lanes] · k[j][d] */
__attribute__((noinline)) static void tiles_qk(int nv, int64_t nxall, const float *A, int64_t ny, const float *B, int64_t ldk, float *C)
{
    const __m512 *alpha = NULL;
    const int64_t bx = ldk, by = 1;
    TILES(0)
}

/* values: Ot[d][lanes] = Ot[d][lanes] · alpha + Σ_j Pt[j][lanes] · v[j][d] */
__attribute__((noinline)) static void tiles_pv(int nv, int64_t nxall, const float *A, int64_t ny, const float *B, int64_t ldv, float *C,
                     const __m512 *alpha)
{
    const int64_t bx = 1, by = ldv;
    TILES(1)
}

void moeq_avx512_attend(const moeq_attn_task *t)
{
    const int64_t dqk = t->dqk, dv = t->dv;
    float *Qt = (float *)(((uintptr_t)t->scratch + 63) & ~(uintptr_t)63), *St = Qt + dqk * QL, *Ot = St + KB * QL;
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512 ones[4] = {_mm512_set1_ps(1.0f), _mm512_set1_ps(1.0f), _mm512_set1_ps(1.0f), _mm512_set1_ps(1.0f)};
    const __m512 ninf = _mm512_set1_ps(-INFINITY), zero = _mm512_setzero_ps(), scale = _mm512_set1_ps(t->scale);
    for (int64_t qc = 0; qc < t->nq; qc += QL) {
        const int64_t nqc = t->nq - qc < QL ? t->nq - qc : QL;
        const int nv = (int)((nqc + 15) / 16);
        float *out = t->out + qc * t->ldo;
        /* keys any query of the chunk can see */
        const int64_t kend = qc + nqc + t->diag < t->nk ? qc + nqc + t->diag : t->nk;
        if (kend <= 0) {
            for (int64_t i = 0; i < nqc; i++)
                for (int64_t d = 0; d < dv; d++) out[i * t->ldo + d] = 0.0f;
            continue;
        }
        /* Qt by 16 x 16 transposes; queries past nqc are zero lanes (their results dropped) */
        for (int v = 0; v < nv; v++)
            for (int64_t d0 = 0; d0 < dqk; d0 += 16) {
                const int nd = dqk - d0 < 16 ? (int)(dqk - d0) : 16;
                const __mmask16 dm = (__mmask16)((1u << nd) - 1);
                __m512i r[16], o[16];
                for (int i = 0; i < 16; i++)
                    r[i] = 16 * v + i < nqc ? _mm512_castps_si512(_mm512_maskz_loadu_ps(dm, t->q + (qc + 16 * v + i) * t->ldq + d0))
                                            : _mm512_setzero_si512();
                transpose16(r, o);
                for (int c = 0; c < nd; c++) _mm512_storeu_ps(Qt + (d0 + c) * QL + 16 * v, _mm512_castsi512_ps(o[c]));
            }
        memset(Ot, 0, (size_t)(dv * QL) * sizeof(float));
        __m512 m[4], l[4];
        /* lanes that saw a NaN or +inf score: their output is NaN, as the reference's (the max
         * and exp_ge87 would otherwise drop a NaN score, silently) */
        __mmask16 bad[4] = {0, 0, 0, 0};
        for (int v = 0; v < 4; v++) m[v] = _mm512_set1_ps(t->sink), l[v] = zero;
        for (int64_t kb = 0; kb < kend; kb += KB) {
            const int64_t nb = kend - kb < KB ? kend - kb : KB;
            /* causally, vector v sees keys jj < lim[v] of the block (non-decreasing in v): the
             * products run by segments [lim[v-1], lim[v]) over vectors v.. only, so a diagonal
             * block skips its hidden upper triangle (exact: those p are 0). Scores not computed
             * are masked below whatever they hold. */
            int64_t lim[4];
            for (int v = 0; v < nv; v++) {
                const int64_t e = qc + 16 * v + 16 + t->diag - kb;
                lim[v] = e < 0 ? 0 : e > nb ? nb : e;
            }
            for (int v = 0, prev = 0; v < nv; v++)
                if (lim[v] > prev) {
                    tiles_qk(nv - v, lim[v] - prev, Qt + 16 * v, dqk, t->k + (kb + prev) * t->ldk, t->ldk,
                             St + prev * QL + 16 * v);
                    prev = (int)lim[v];
                }
            /* scale, mask (causal: lane i sees key j iff j <= qc + 16 v + i + diag; the caller's
             * bytes), the block's max */
            __m512 mn[4], mu[4], alpha[4], ls[4];
            for (int v = 0; v < nv; v++) mn[v] = m[v];
            for (int64_t jj = 0; jj < nb; jj++) {
                const int64_t j = kb + jj;
                for (int v = 0; v < nv; v++) {
                    float *s = St + jj * QL + 16 * v;
                    int64_t thr = j - t->diag - qc - 16 * v;
                    thr = thr < -1 ? -1 : thr > 16 ? 16 : thr;
                    __mmask16 vis = _mm512_cmpge_epi32_mask(iota, _mm512_set1_epi32((int)thr));
                    if (t->mask) {
                        const int64_t left = nqc - 16 * v;
                        const __mmask16 lanes = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
                        const __m128i by = _mm_maskz_loadu_epi8(lanes, t->mask + j * t->ldm + qc + 16 * v);
                        vis &= _mm_test_epi8_mask(by, by);
                    }
                    const __m512 sv = _mm512_mask_blend_ps(vis, ninf, _mm512_mul_ps(_mm512_loadu_ps(s), scale));
                    _mm512_storeu_ps(s, sv);
                    bad[v] |= _mm512_fpclass_ps_mask(sv, 0x89);   /* QNaN, SNaN, +inf */
                    mn[v] = _mm512_max_ps(mn[v], sv);
                }
            }
            /* a lane that has seen nothing yet keeps m = -inf: subtract 0 instead (no inf - inf) */
            for (int v = 0; v < nv; v++) {
                mu[v] = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(mn[v], ninf, _CMP_EQ_OQ), mn[v], zero);
                alpha[v] = exp_ge87(_mm512_sub_ps(m[v], mu[v]));
                ls[v] = zero;
            }
            for (int64_t jj = 0; jj < nb; jj++)
                for (int v = 0; v < nv; v++) {
                    float *s = St + jj * QL + 16 * v;
                    const __m512 p = exp_ge87(_mm512_sub_ps(_mm512_loadu_ps(s), mu[v]));
                    _mm512_storeu_ps(s, p);
                    ls[v] = _mm512_add_ps(ls[v], p);
                }
            for (int v = 0; v < nv; v++) {
                l[v] = _mm512_fmadd_ps(l[v], alpha[v], ls[v]);
                m[v] = mn[v];
            }
            /* the first segment rescales the vectors it covers, the later ones add to them; a
             * vector no segment covers saw nothing new: alpha is 1, or 0 on a zero Ot */
            for (int v = 0, prev = 0, first = 1; v < nv; v++)
                if (lim[v] > prev) {
                    tiles_pv(nv - v, dv, St + prev * QL + 16 * v, lim[v] - prev, t->v + (kb + prev) * t->ldv, t->ldv,
                             Ot + 16 * v, first ? alpha + v : ones);
                    prev = (int)lim[v], first = 0;
                }
        }
        /* o / (l + exp(sink - m)); a query that saw nothing (l = 0, no sink) gets 0 */
        for (int v = 0; v < nv; v++) {
            __m512 den = l[v];
            if (t->sink != -INFINITY) den = _mm512_add_ps(den, exp_ge87(_mm512_sub_ps(_mm512_set1_ps(t->sink), m[v])));
            const __mmask16 pos = _mm512_cmp_ps_mask(den, zero, _CMP_GT_OQ);
            const __m512 inv = _mm512_mask_mov_ps(_mm512_maskz_div_ps(pos, _mm512_set1_ps(1.0f), den), bad[v],
                                                  _mm512_set1_ps(NAN));
            const int nr = nqc - 16 * v < 16 ? (int)(nqc - 16 * v) : 16;
            for (int64_t d0 = 0; d0 < dv; d0 += 16) {
                const int nd = dv - d0 < 16 ? (int)(dv - d0) : 16;
                const __mmask16 dm = (__mmask16)((1u << nd) - 1);
                __m512i r[16], o[16];
                for (int c = 0; c < 16; c++)
                    r[c] = c < nd ? _mm512_castps_si512(_mm512_mul_ps(_mm512_loadu_ps(Ot + (d0 + c) * QL + 16 * v), inv))
                                  : _mm512_setzero_si512();
                transpose16(r, o);
                for (int i = 0; i < nr; i++)
                    _mm512_mask_storeu_ps(out + (16 * v + i) * t->ldo + d0, dm, _mm512_castsi512_ps(o[i]));
            }
        }
    }
}
