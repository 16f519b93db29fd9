/* Fused attention kernels (moeq_kernel_set.attend; kernels/ref/attn.c, x86/attn_avx512.c): every
 * set that has one against a float64 brute-force softmax attention at awkward sizes (nq 1..70
 * around the 16-query vectors and 64-query chunks, nk 1..200 around the 64-key blocks, head dims
 * 1, 7, 64, 100, 128, dqk != dv), with sinks, masked keys, queries that see nothing, strided rows
 * and scores up to ±100. The bound: with scores exact in float32 (q, k on a coarse grid, scale a
 * power of 2) 1e-5 · Σ_j p_j |v_j|; with arbitrary q, k also the float32 dot products' error
 * moving the softmax. The same task twice (scratch refilled with garbage) gives the same bits. */
#include "harness.h"
#include "moeq_kernels.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint32_t rng = 4242;
static uint32_t urand(void)
{
    rng = rng * 1664525u + 1013904223u;
    return rng >> 8;
}
static float frand(void) { return (float)urand() / 8388608.0f - 1.0f; }   /* [-1, 1) */

static const moeq_kernel_set *sets[8];
static int nsets;

typedef struct {
    int64_t nq, nk, dqk, dv, ldq, ldk, ldv, ldo, ldm, diag;
    int masked, exact;
    float scale, sink;
    float *q, *k, *v;
    uint8_t *mask;
    double *o64, *abs64, *dlt;   /* exact output, Σ p |v| per element, the score error's bound per query */
} prob;

static int sees(const prob *P, int64_t i, int64_t j)
{
    return j <= i + P->diag && (!P->mask || P->mask[j * P->ldm + i]);
}

/* the definition in float64: p_ij = exp(s_ij - m) / (Σ exp(s - m) + exp(sink - m)) */
static void brute(prob *P)
{
    for (int64_t i = 0; i < P->nq; i++) {
        double m = P->sink, smax = 0;
        double *s = malloc((size_t)P->nk * sizeof(double));
        for (int64_t j = 0; j < P->nk; j++) {
            double a = 0, b = 0;
            for (int64_t d = 0; d < P->dqk; d++) {
                a += (double)P->q[i * P->ldq + d] * P->k[j * P->ldk + d];
                b += fabs((double)P->q[i * P->ldq + d] * P->k[j * P->ldk + d]);
            }
            s[j] = (double)P->scale * a;
            if (sees(P, i, j)) {
                m = fmax(m, s[j]);
                smax = fmax(smax, (double)P->scale * b);
            }
        }
        double l = P->sink == -INFINITY ? 0 : exp((double)P->sink - m);
        for (int64_t j = 0; j < P->nk; j++) l += sees(P, i, j) ? exp(s[j] - m) : 0;
        for (int64_t d = 0; d < P->dv; d++) {
            double o = 0, a = 0;
            for (int64_t j = 0; j < P->nk; j++) {
                if (!sees(P, i, j)) continue;
                const double p = exp(s[j] - m) / l;
                o += p * P->v[j * P->ldv + d];
                a += p * fabs((double)P->v[j * P->ldv + d]);
            }
            P->o64[i * P->dv + d] = l > 0 ? o : 0;
            P->abs64[i * P->dv + d] = l > 0 ? a : 0;
        }
        /* float32 scores: dqk FMAs and the scale, each within 2^-24 of Σ|q k| */
        P->dlt[i] = P->exact ? 0 : (double)(P->dqk + 2) * 0x1p-24 * smax;
        free(s);
    }
}

static void make(prob *P)
{
    P->q = malloc((size_t)(P->nq * P->ldq) * sizeof(float));
    P->k = malloc((size_t)(P->nk * P->ldk) * sizeof(float));
    P->v = malloc((size_t)(P->nk * P->ldv) * sizeof(float));
    /* exact: q integers in [-8, 8], k multiples of 1/8 in [-1, 1]: every partial sum of q·k is a
     * float32 (|Σ| <= 8 · 128, steps of 1/8), so the kernels' scores are exact */
    for (int64_t i = 0; i < P->nq * P->ldq; i++) P->q[i] = P->exact ? (float)((int)(urand() % 17) - 8) : frand();
    for (int64_t i = 0; i < P->nk * P->ldk; i++) P->k[i] = P->exact ? (float)((int)(urand() % 17) - 8) / 8 : frand();
    for (int64_t i = 0; i < P->nk * P->ldv; i++) P->v[i] = frand() * 3;
    P->mask = NULL;
    if (P->masked) {
        P->mask = malloc((size_t)(P->nk * P->ldm));
        for (int64_t i = 0; i < P->nk * P->ldm; i++) P->mask[i] = urand() % 4 != 0;
        /* the first query sees nothing when it has no sink; others keep their diagonal key */
        for (int64_t j = 0; j < P->nk; j++) P->mask[j * P->ldm] = 0;
        for (int64_t i = 1; i < P->nq; i++)
            if (i + P->diag >= 0 && i + P->diag < P->nk) P->mask[(i + P->diag) * P->ldm + i] = 1;
    }
    P->o64 = malloc((size_t)(P->nq * P->dv) * sizeof(double));
    P->abs64 = malloc((size_t)(P->nq * P->dv) * sizeof(double));
    P->dlt = malloc((size_t)P->nq * sizeof(double));
}

static void drop(prob *P)
{
    free(P->q), free(P->k), free(P->v), free(P->mask), free(P->o64), free(P->abs64), free(P->dlt);
}

static double worst_exact, worst_any;   /* largest error / Σ p|v| seen (fast sets), for the docs */

static void run_case(prob *P, const char *what)
{
    make(P);
    brute(P);
    const size_t nout = (size_t)(P->nq * P->ldo), nscr = MOEQ_ATTN_SCRATCH(P->dqk, P->dv);
    float *out = malloc(nout * sizeof(float)), *out2 = malloc(nout * sizeof(float));
    float *scr = aligned_alloc(64, (nscr * sizeof(float) + 63) / 64 * 64);
    for (int s = 0; s < nsets; s++) {
        if (!sets[s]->attend) continue;
        const int isref = !strcmp(sets[s]->name, "ref");
        moeq_attn_task t = {P->nq, P->nk, P->dqk, P->dv, P->q, P->ldq, P->k, P->ldk, P->v, P->ldv, P->diag,
                            P->mask, P->ldm, P->scale, P->sink, out, P->ldo, scr};
        for (size_t i = 0; i < nout; i++) out[i] = 12345.0f;
        for (size_t i = 0; i < nscr; i++) scr[i] = NAN;
        sets[s]->attend(&t);
        double worst = 0;
        int untouched = 1;
        for (int64_t i = 0; i < P->nq; i++) {
            for (int64_t d = 0; d < P->dv; d++) {
                const double e = fabs((double)out[i * P->ldo + d] - P->o64[i * P->dv + d]);
                const double a = P->abs64[i * P->dv + d];
                /* plus 1e-30: terms that underflow float32 */
                const double tol = (isref ? 1e-12 * a + 0x1p-24 * fabs(P->o64[i * P->dv + d])
                                          : a * (1e-5 + 2 * P->dlt[i])) + 1e-30;
                if (e - tol > worst) worst = e - tol;
                if (!isref && a > 1e-20) {
                    double *w = P->exact ? &worst_exact : &worst_any;
                    if (e / a > *w) *w = e / a;
                }
                if (!isfinite(out[i * P->ldo + d])) worst = INFINITY;
            }
            for (int64_t d = P->dv; d < P->ldo; d++) untouched &= out[i * P->ldo + d] == 12345.0f;
        }
        CHECK_MSG(worst <= 0, "%s %s nq %lld nk %lld dqk %lld dv %lld diag %lld: beyond the bound by %g\n",
                  sets[s]->name, what, (long long)P->nq, (long long)P->nk, (long long)P->dqk, (long long)P->dv,
                  (long long)P->diag, worst);
        CHECK_MSG(untouched, "%s %s: wrote past dv\n", sets[s]->name, what);
        /* the same bits again, whatever the scratch held */
        memcpy(out2, out, nout * sizeof(float));
        for (size_t i = 0; i < nscr; i++) scr[i] = (float)i * 1e30f;
        sets[s]->attend(&t);
        CHECK_MSG(!memcmp(out, out2, nout * sizeof(float)), "%s %s: bits differ between runs\n", sets[s]->name, what);
    }
    free(out), free(out2), free(scr);
    drop(P);
}

/* scale: 1/sqrt(dqk) as in the models, or for exact scores the power of 2 that brings the largest
 * |q·k| of the problem near amp (amp 100: scores up to ±100) */
static float pick_scale(prob *P, double amp)
{
    if (!P->exact) return (float)(1.0 / sqrt((double)P->dqk)) * (float)(amp / 8);
    double mx = 1e-30;
    for (int64_t i = 0; i < P->nq; i++)
        for (int64_t j = 0; j < P->nk; j++) {
            double a = 0;
            for (int64_t d = 0; d < P->dqk; d++) a += (double)P->q[i * P->ldq + d] * P->k[j * P->ldk + d];
            mx = fmax(mx, fabs(a));
        }
    return (float)exp2(round(log2(amp / mx)));
}

static void test_attend(void)
{
    static const int64_t dims[] = {1, 7, 64, 100, 128};
    static const int64_t nqs[] = {1, 2, 15, 16, 17, 33, 48, 63, 64, 65, 70};
    static const int64_t nks[] = {1, 3, 31, 63, 64, 65, 100, 128, 129, 200};
    int cases = 0;
    for (int rep = 0; rep < 3; rep++) {
        for (int a = 0; a < 5; a++)
            for (int b = 0; b < 5; b++)
                for (int trial = 0; trial < 6; trial++) {
                    prob P = {0};
                    P.dqk = dims[a], P.dv = dims[b];
                    P.nq = nqs[urand() % 11];
                    P.nk = nks[urand() % 10];
                    if (trial == 0 && P.nk < P.nq) P.nk = P.nq;   /* queries the last nq keys: a forward task */
                    P.diag = trial == 0 ? P.nk - P.nq : trial == 1 ? 0 : trial == 2 ? P.nk : (int64_t)(urand() % 80) - 20;
                    P.ldq = P.dqk + (trial & 1) * 3;
                    P.ldk = P.dqk + (trial % 3);
                    P.ldv = P.dv + (trial & 2);
                    P.ldo = P.dv + (trial % 2) * 5;
                    P.ldm = P.nq + trial;
                    P.masked = trial >= 3;
                    P.exact = trial % 2 == 0 || trial == 5;
                    P.sink = trial == 1 || trial == 4 ? frand() * 4 : -INFINITY;
                    /* the scale needs q and k: make them once with the seed saved, pick, remake */
                    const uint32_t seed = rng;
                    make(&P);
                    P.scale = pick_scale(&P, trial == 5 ? 4.0 : 100.0);
                    drop(&P);
                    rng = seed;
                    run_case(&P, P.masked ? "masked" : "causal");
                    cases++;
                }
    }
    printf("  %d cases; largest error / sum p|v| (fast sets): exact scores %.3g, float32 scores %.3g\n", cases,
           worst_exact, worst_any);
}

/* A NaN or +inf in a query or a key makes the outputs of the queries that see it NaN (never
 * the 0 of a query that sees nothing, nor a finite value without it); NaN in a value too. Other
 * queries stay finite. */
static void test_nan_inf_carried(void)
{
    const int64_t nq = 40, nk = 40, d = 64;
    float *q = malloc((size_t)(nq * d) * 4), *k = malloc((size_t)(nk * d) * 4), *v = malloc((size_t)(nk * d) * 4);
    float *out = malloc((size_t)(nq * d) * 4);
    float *scr = aligned_alloc(64, (MOEQ_ATTN_SCRATCH(d, d) * sizeof(float) + 63) / 64 * 64);
    for (int c = 0; c < 4; c++)
        for (int s = 0; s < nsets; s++) {
            for (int64_t i = 0; i < nq * d; i++) q[i] = frand(), k[i] = frand(), v[i] = frand();
            /* case 0: NaN in q of query 5; 1: NaN in k of key 20 (queries 20.. see it); 2: +inf
             * in q of query 9 (a +inf score, or NaN from inf * 0); 3: NaN in v of key 30 */
            const int64_t first = c == 0 ? 5 : c == 1 ? 20 : c == 2 ? 9 : 30, only = c == 0 || c == 2;
            if (c == 0) q[5 * d + 3] = NAN;
            if (c == 1) k[20 * d + 7] = NAN;
            if (c == 2) for (int64_t j = 0; j < d; j++) q[9 * d + j] = INFINITY;
            if (c == 3) v[30 * d + 11] = NAN;
            moeq_attn_task t = {nq, nk, d, d, q, d, k, d, v, d, 0, NULL, 0, 0.125f, -INFINITY, out, d, scr};
            sets[s]->attend(&t);
            for (int64_t i = 0; i < nq; i++) {
                const int hit = only ? i == first : i >= first;
                int nan_any = 0, all_finite = 1;
                for (int64_t j = 0; j < d; j++) {
                    nan_any |= isnan(out[i * d + j]);
                    all_finite &= isfinite(out[i * d + j]);
                }
                /* a NaN value meets p = 0 (0 · NaN) in the queries of its own key block's vectors
                 * before it: they may be NaN too (not silent, only wider); earlier ones not */
                const int spill = c == 3 && i < first && i >= first / 16 * 16;
                if (hit) CHECK_MSG(nan_any, "%s case %d: query %lld lost the NaN", sets[s]->name, c, (long long)i);
                else if (!spill) CHECK_MSG(all_finite, "%s case %d: query %lld not finite", sets[s]->name, c, (long long)i);
            }
        }
    free(q); free(k); free(v); free(out); free(scr);
}

int main(void)
{
    const char *names[] = {"ref", "avx2", "avx512", "vnni", "bf16", "bf16x2", "bf16f", "amx"};
    for (int i = 0; i < 8; i++) {
        const moeq_kernel_set *k = moeq_kernels_get(names[i]);
        if (k && k->attend) sets[nsets++] = k;
    }
    printf("  kernel sets with attend here: %d\n", nsets);
    RUN_TEST(test_attend);
    RUN_TEST(test_nan_inf_carried);
    HARNESS_EXIT();
}
