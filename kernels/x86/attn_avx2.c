/* Fused causal attention with AVX2 (moeq_kernel_set.attend of the avx2 set): attn_avx512.c's
 * method with 8 lanes (read that file's header first). Chunks of QL = 64 queries are 8 vectors;
 * 16 ymm registers hold a tile of 2 vectors by 6 x (12 accumulators, 2 loads, a broadcast), and
 * the tile sweeps the chunk's vectors in pairs. exp is avx2_inl.h's exp8 (lanes below -87 are
 * 0 without building a denormal). Every output is a fixed chain given the task. Tested against
 * kernels/ref/attn.c (tests/unit/test_kernels_attn.c). */
#include "moeq_kernels.h"
#include "kernels/x86/x86.h"
#include "kernels/x86/avx2_inl.h"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define QL 64   /* queries per chunk: 8 vectors */
#define KB 64   /* keys per block */
#define NX 6
#define INLINE static inline __attribute__((always_inline))

/* C[x * QL + 8 v + lane] = (init ? C · alpha[v] : 0) + Σ_{y < ny} A[y * QL + 8 v + lane] ·
 * B[x * bx + y * by] for x < nx, v < nv (1 or 2); one FMA chain per output in y order. */
INLINE void tile(const int nv, const int nx, const int init, const float *A, int64_t ny, const float *B,
                 int64_t bx, int64_t by, float *C, const __m256 *alpha)
{
    __m256 acc[NX][2];
#pragma GCC unroll 6
    for (int x = 0; x < NX; x++)
#pragma GCC unroll 2
        for (int v = 0; v < 2; v++)
            if (x < nx && v < nv)
                acc[x][v] = init ? _mm256_mul_ps(_mm256_loadu_ps(C + x * QL + 8 * v), alpha[v]) : _mm256_setzero_ps();
    const float *b[NX];
#pragma GCC unroll 6
    for (int x = 0; x < NX; x++) b[x] = B + (x < nx ? x : 0) * bx;
    for (int64_t y = 0; y < ny; y++) {
        __m256 a[2];
#pragma GCC unroll 2
        for (int v = 0; v < 2; v++)
            if (v < nv) a[v] = _mm256_loadu_ps(A + y * QL + 8 * v);
#pragma GCC unroll 6
        for (int x = 0; x < NX; x++) {
            if (x >= nx) continue;
            const __m256 bb = _mm256_broadcast_ss(b[x] + y * by);
#pragma GCC unroll 2
            for (int v = 0; v < 2; v++)
                if (v < nv) acc[x][v] = _mm256_fmadd_ps(a[v], bb, acc[x][v]);
        }
    }
#pragma GCC unroll 6
    for (int x = 0; x < NX; x++)
#pragma GCC unroll 2
        for (int v = 0; v < 2; v++)
            if (x < nx && v < nv) _mm256_storeu_ps(C + x * QL + 8 * v, acc[x][v]);
}

#define CASES(INIT)                                                                                  \
    CASE(1, 1, INIT) CASE(1, 2, INIT) CASE(1, 3, INIT) CASE(1, 4, INIT) CASE(1, 5, INIT) CASE(1, 6, INIT) \
    CASE(2, 1, INIT) CASE(2, 2, INIT) CASE(2, 3, INIT) CASE(2, 4, INIT) CASE(2, 5, INIT) CASE(2, 6, INIT)
#define CASE(V, X, INIT) \
    case (V) * 8 + (X): tile(V, X, INIT, A + 8 * w, ny, B + x0 * bx, bx, by, C + x0 * QL + 8 * w, aw); break;
/* the tiles over x < nxall and vectors [0, nvv) in pairs, sizes and strides constant where they
 * are (the accumulators stay in registers) */
#define TILES(INIT)                                                              \
    for (int w = 0; w < nvv; w += 2) {                                           \
        const int np = nvv - w < 2 ? 1 : 2;                                      \
        const __m256 *aw = alpha ? alpha + w : NULL;                             \
        for (int64_t x0 = 0; x0 < nxall; x0 += NX) {                             \
            const int nx = nxall - x0 < NX ? (int)(nxall - x0) : NX;             \
            switch (np * 8 + nx) { CASES(INIT) default: break; }                 \
        }                                                                        \
    }

/* scores: St[j][lanes] = Σ_d Qt[d][lanes] · k[j][d] */
__attribute__((noinline)) static void tiles_qk(int nvv, int64_t nxall, const float *A, int64_t ny, const float *B,
                                               int64_t ldk, float *C)
{
    const __m256 *alpha = NULL;
    const int64_t bx = ldk, by = 1;
    TILES(0)
}

/* values: Ot[d][lanes] = Ot[d][lanes] · alpha + Σ_j Pt[j][lanes] · v[j][d] */
__attribute__((noinline)) static void tiles_pv(int nvv, int64_t nxall, const float *A, int64_t ny, const float *B,
                                               int64_t ldv, float *C, const __m256 *alpha)
{
    const int64_t bx = 1, by = ldv;
    TILES(1)
}

void moeq_avx2_attend(const moeq_attn_task *t)
{
    const int64_t dqk = t->dqk, dv = t->dv;
    float *Qt = (float *)(((uintptr_t)t->scratch + 63) & ~(uintptr_t)63), *St = Qt + dqk * QL, *Ot = St + KB * QL;
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256 ones[8];
    for (int v = 0; v < 8; v++) ones[v] = _mm256_set1_ps(1.0f);
    const __m256 ninf = _mm256_set1_ps(-INFINITY), zero = _mm256_setzero_ps(), scale = _mm256_set1_ps(t->scale);
    for (int64_t qc = 0; qc < t->nq; qc += QL) {
        const int64_t nqc = t->nq - qc < QL ? t->nq - qc : QL;
        const int nv = (int)((nqc + 7) / 8);
        float *out = t->out + qc * t->ldo;
        const int64_t kend = qc + nqc + t->diag < t->nk ? qc + nqc + t->diag : t->nk;
        if (kend <= 0) {
            for (int64_t i = 0; i < nqc; i++)
                for (int64_t d = 0; d < dv; d++) out[i * t->ldo + d] = 0.0f;
            continue;
        }
        /* Qt by 8 x 8 transposes; queries past nqc are zero lanes */
        for (int v = 0; v < nv; v++)
            for (int64_t d0 = 0; d0 < dqk; d0 += 8) {
                const int nd = dqk - d0 < 8 ? (int)(dqk - d0) : 8;
                const __m256i dm = tail_mask(nd);
                __m256 r[8];
                for (int i = 0; i < 8; i++)
                    r[i] = 8 * v + i < nqc ? _mm256_maskload_ps(t->q + (qc + 8 * v + i) * t->ldq + d0, dm) : zero;
                transpose8(r);
                for (int c = 0; c < nd; c++) _mm256_storeu_ps(Qt + (d0 + c) * QL + 8 * v, r[c]);
            }
        memset(Ot, 0, (size_t)(dv * QL) * sizeof(float));
        __m256 m[8], l[8], bad[8];   /* bad: lanes that saw a NaN or +inf score (output NaN) */
        for (int v = 0; v < 8; v++) m[v] = _mm256_set1_ps(t->sink), l[v] = zero, bad[v] = zero;
        for (int64_t kb = 0; kb < kend; kb += KB) {
            const int64_t nb = kend - kb < KB ? kend - kb : KB;
            /* segments of the diagonal block, as in attn_avx512.c */
            int64_t lim[8];
            for (int v = 0; v < nv; v++) {
                const int64_t e = qc + 8 * v + 8 + t->diag - kb;
                lim[v] = e < 0 ? 0 : e > nb ? nb : e;
            }
            for (int v = 0, prev = 0; v < nv; v++)
                if (lim[v] > prev) {
                    tiles_qk(nv - v, lim[v] - prev, Qt + 8 * v, dqk, t->k + (kb + prev) * t->ldk, t->ldk,
                             St + prev * QL + 8 * v);
                    prev = (int)lim[v];
                }
            __m256 mn[8], mu[8], alpha[8], ls[8];
            for (int v = 0; v < nv; v++) mn[v] = m[v];
            for (int64_t jj = 0; jj < nb; jj++) {
                const int64_t j = kb + jj;
                for (int v = 0; v < nv; v++) {
                    float *s = St + jj * QL + 8 * v;
                    int64_t thr = j - t->diag - qc - 8 * v;
                    thr = thr < -1 ? -1 : thr > 8 ? 8 : thr;
                    /* lane >= thr */
                    __m256i vis = _mm256_cmpgt_epi32(iota, _mm256_set1_epi32((int)thr - 1));
                    if (t->mask) {
                        const int64_t left = nqc - 8 * v;
                        uint8_t by[8] = {0};
                        memcpy(by, t->mask + j * t->ldm + qc + 8 * v, (size_t)(left < 8 ? left : 8));
                        const __m256i bv = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)by));
                        vis = _mm256_andnot_si256(_mm256_cmpeq_epi32(bv, _mm256_setzero_si256()), vis);
                    }
                    const __m256 sv = _mm256_blendv_ps(ninf, _mm256_mul_ps(_mm256_loadu_ps(s), scale), _mm256_castsi256_ps(vis));
                    _mm256_storeu_ps(s, sv);
                    bad[v] = _mm256_or_ps(bad[v], _mm256_or_ps(_mm256_cmp_ps(sv, sv, _CMP_UNORD_Q),
                                                               _mm256_cmp_ps(sv, _mm256_set1_ps(INFINITY), _CMP_EQ_OQ)));
                    mn[v] = _mm256_max_ps(mn[v], sv);
                }
            }
            for (int v = 0; v < nv; v++) {
                mu[v] = _mm256_blendv_ps(mn[v], zero, _mm256_cmp_ps(mn[v], ninf, _CMP_EQ_OQ));
                alpha[v] = exp8(_mm256_sub_ps(m[v], mu[v]));
                ls[v] = zero;
            }
            for (int64_t jj = 0; jj < nb; jj++)
                for (int v = 0; v < nv; v++) {
                    float *s = St + jj * QL + 8 * v;
                    const __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(s), mu[v]));
                    _mm256_storeu_ps(s, p);
                    ls[v] = _mm256_add_ps(ls[v], p);
                }
            for (int v = 0; v < nv; v++) {
                l[v] = _mm256_fmadd_ps(l[v], alpha[v], ls[v]);
                m[v] = mn[v];
            }
            for (int v = 0, prev = 0, first = 1; v < nv; v++)
                if (lim[v] > prev) {
                    tiles_pv(nv - v, dv, St + prev * QL + 8 * v, lim[v] - prev, t->v + (kb + prev) * t->ldv, t->ldv,
                             Ot + 8 * v, first ? alpha + v : ones);
                    prev = (int)lim[v], first = 0;
                }
        }
        /* o / (l + exp(sink - m)); a query that saw nothing (l = 0, no sink) gets 0 */
        for (int v = 0; v < nv; v++) {
            __m256 den = l[v];
            if (t->sink != -INFINITY) den = _mm256_add_ps(den, exp8(_mm256_sub_ps(_mm256_set1_ps(t->sink), m[v])));
            const __m256 inv = _mm256_blendv_ps(
                _mm256_and_ps(_mm256_cmp_ps(den, zero, _CMP_GT_OQ), _mm256_div_ps(_mm256_set1_ps(1.0f), den)),
                _mm256_set1_ps(NAN), bad[v]);
            const int nr = nqc - 8 * v < 8 ? (int)(nqc - 8 * v) : 8;
            for (int64_t d0 = 0; d0 < dv; d0 += 8) {
                const int nd = dv - d0 < 8 ? (int)(dv - d0) : 8;
                const __m256i dm = tail_mask(nd);
                __m256 r[8];
                for (int c = 0; c < 8; c++) r[c] = c < nd ? _mm256_mul_ps(_mm256_loadu_ps(Ot + (d0 + c) * QL + 8 * v), inv) : zero;
                transpose8(r);
                for (int i = 0; i < nr; i++) _mm256_maskstore_ps(out + (8 * v + i) * t->ldo + d0, dm, r[i]);
            }
        }
    }
}
