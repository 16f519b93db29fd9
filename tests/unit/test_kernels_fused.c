/* gate_up_swiglu (an expert's gate, up and SwiGLU in one kernel, docs/KERNELS.md "AMX"): for
 * every set that has one, bit for bit the set's own steps (gemm or wgemm of gate, of up, then
 * its swiglu), packed codecs of every width, group and symmetry and bf16 weights, at awkward
 * rows, columns and token counts; and within float32 rounding of the plain-C reference. */
#include "harness.h"
#include "qmat_testutil.h"

#include <string.h>

static uint16_t to_bf16(float f)   /* round to nearest even */
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

/* Hs from the fused kernel against the steps; returns the worst difference from the
 * reference's steps relative to max |h|, or -1 when the kernel leaves this call to the steps */
static double check(const moeq_kernel_set *ks, const moeq_qmat *qg, const moeq_qmat *qu, const moeq_wmat *wg,
                    const moeq_wmat *wu, int64_t I, int64_t K, int64_t n, const char *what)
{
    const int64_t ldx = K + 3, ldh = I + 1;
    float *X = malloc((size_t)(n * ldx) * 4), *H = malloc((size_t)(n * ldh) * 4);
    float *G = malloc((size_t)(n * I) * 4), *U = malloc((size_t)(n * I) * 4);
    float *G0 = malloc((size_t)(n * I) * 4), *U0 = malloc((size_t)(n * I) * 4);
    for (int64_t i = 0; i < n * ldx; i++) X[i] = frand() * 2;
    for (int64_t i = 0; i < n * ldh; i++) H[i] = -7.0f;
    if (!ks->gate_up_swiglu(qg, qu, wg, wu, X, n, ldx, H, ldh)) {   /* left to the steps */
        free(X); free(H); free(G); free(U); free(G0); free(U0);
        return -1;
    }
    if (qg) {
        ks->gemm(qg, X, n, ldx, 0, I, G, I);
        ks->gemm(qu, X, n, ldx, 0, I, U, I);
        moeq_kernels_ref.gemm(qg, X, n, ldx, 0, I, G0, I);
        moeq_kernels_ref.gemm(qu, X, n, ldx, 0, I, U0, I);
    } else {
        ks->wgemm(wg, X, n, ldx, 0, I, G, I);
        ks->wgemm(wu, X, n, ldx, 0, I, U, I);
        moeq_ref_wgemm(wg, X, n, ldx, 0, I, G0, I);
        moeq_ref_wgemm(wu, X, n, ldx, 0, I, U0, I);
    }
    ks->swiglu(G, U, n * I);
    moeq_ref_swiglu(G0, U0, n * I);
    int same = 1;
    double mx = 0, worst = 0;
    for (int64_t i = 0; i < n; i++) {
        same &= !memcmp(H + i * ldh, G + i * I, (size_t)I * 4);
        same &= H[i * ldh + I] == -7.0f;   /* nothing past the rows written */
        for (int64_t r = 0; r < I; r++) mx = fabs(G0[i * I + r]) > mx ? fabs(G0[i * I + r]) : mx;
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t r = 0; r < I; r++) {
            double e = fabs((double)H[i * ldh + r] - G0[i * I + r]) / (mx + 1e-30);
            worst = e > worst ? e : worst;
        }
    CHECK_MSG(same, "%s %s %lldx%lld n%lld: fused differs from gemm, gemm, swiglu", ks->name, what, (long long)I,
              (long long)K, (long long)n);
    free(X); free(H); free(G); free(U); free(G0); free(U0);
    return worst;
}

static void test_fused_same_bits(void)
{
    const char *names[] = {"ref", "avx2", "avx512", "vnni", "bf16", "bf16x2", "bf16f", "amx"};
    const int64_t rows_l[] = {1, 17, 40}, cols_l[] = {32, 96, 160}, n_l[] = {1, 4, 17, 33};
    const int bits_l[] = {2, 3, 4, 8}, group_l[] = {32, 64, 0};
    int sets = 0;
    for (int v = 0; v < 8; v++) {
        const moeq_kernel_set *ks = moeq_kernels_get(names[v]);
        if (!ks || !ks->gate_up_swiglu) continue;
        sets++;
        double worst = 0;
        for (int ri = 0; ri < 3; ri++)
            for (int ci = 0; ci < 3; ci++)
                for (int ni = 0; ni < 4; ni++) {
                    const int64_t I = rows_l[ri], K = cols_l[ci], n = n_l[ni];
                    for (int bi = 0; bi < 4; bi++)
                        for (int gi = 0; gi < 3; gi++)
                            for (int sym = 0; sym < 2; sym++) {
                                qm g, u;
                                CHECK(make(&g, bits_l[bi], group_l[gi], sym, I, K) == 0);
                                CHECK(make(&u, bits_l[bi], group_l[gi], sym, I, K) == 0);
                                char what[48];
                                snprintf(what, sizeof what, "q%d g%d s%d", bits_l[bi], group_l[gi], sym);
                                /* a set may leave small batches to the steps, never 16 tokens */
                                double e = check(ks, &g.q, &u.q, NULL, NULL, I, K, n, what);
                                CHECK_MSG(e >= 0 || n < 16, "%s %s n%lld: not handled", ks->name, what, (long long)n);
                                worst = e > worst ? e : worst;
                                free(g.raw);
                                free(u.raw);
                            }
                    /* bf16 weights, also at a column count that is no multiple of 32 */
                    const int64_t Kb = K + (ni & 1 ? 7 : 0);
                    uint16_t *bg = malloc((size_t)(I * Kb) * 2), *bu = malloc((size_t)(I * Kb) * 2);
                    for (int64_t i = 0; i < I * Kb; i++) {
                        bg[i] = to_bf16(frand() * 0.3f);
                        bu[i] = to_bf16(frand() * 0.3f);
                    }
                    moeq_wmat wg = {MOEQ_W_BF16, I, Kb, bg, 0}, wu = {MOEQ_W_BF16, I, Kb, bu, 0};
                    double e = check(ks, NULL, NULL, &wg, &wu, I, Kb, n, "bf16");
                    CHECK_MSG(e >= 0 || n < 16, "%s bf16 n%lld: not handled", ks->name, (long long)n);
                    worst = e > worst ? e : worst;
                    free(bg);
                    free(bu);
                }
        /* a sanity bound (wrong rows or tokens would be O(1)): the products' accuracy is
         * test_kernels' and test_kernels_wgemm's, relative to sum |w x|, which is up to ~10x
         * max |h| on these random rows (K = 160: 1.5e-4 of max |h| seen for amx) */
        CHECK_MSG(worst < 1e-3, "%s: fused vs reference %.3g of max|h|", ks->name, worst);
        printf("  %s: worst %.3g of max|h| against the reference\n", ks->name, worst);
    }
    printf("  sets with gate_up_swiglu here: %d\n", sets);
}

int main(void)
{
    RUN_TEST(test_fused_same_bits);
    HARNESS_EXIT();
}
