/* Activation kernels (moeq_kernel_set.swiglu; kernels/ref/act.c, x86/act_avx2.c, act_avx512.c):
 * every variant against float64 math at awkward lengths (1..70 around the 8- and 16-lane tails),
 * with large and tiny gates, -1e30 (0) and NaN (carried). Attention's softmax is tested inside
 * the attend kernels (test_kernels_attn.c). */
#include "harness.h"
#include "moeq_kernels.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static uint32_t rng = 777;
static float frand(void)   /* uniform in [-1, 1) */
{
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 8388608.0f - 1.0f;
}

static const moeq_kernel_set *sets[8];
static int nsets;

static void test_swiglu(void)
{
    float g[80], u[80], out[80];
    for (int trial = 0; trial < 3; trial++)
        for (int64_t n = 1; n <= 70; n++) {
            const float amp = trial == 0 ? 4.0f : trial == 1 ? 30.0f : 120.0f;
            for (int64_t i = 0; i < n; i++) {
                g[i] = frand() * amp;
                u[i] = frand();
            }
            for (int k = 0; k < nsets; k++) {
                for (int64_t i = 0; i < n; i++) out[i] = g[i];
                sets[k]->swiglu(out, u, n);
                for (int64_t i = 0; i < n; i++) {
                    const double want = (double)g[i] / (1.0 + exp(-(double)g[i])) * (double)u[i];
                    CHECK_MSG(fabs((double)out[i] - want) <= 5e-7 * fabs(want) + 1e-30, "%s swiglu(%g, %g) = %.9g, want %.9g",
                              sets[k]->name, (double)g[i], (double)u[i], (double)out[i], want);
                }
            }
        }
    /* very negative gates give 0 (of either sign), not NaN; a NaN is carried */
    float gg[3] = { -200.0f, -1e30f, NAN }, uu[3] = { 1, 1, 1 };
    for (int k = 0; k < nsets; k++) {
        float o[3] = { gg[0], gg[1], gg[2] };
        sets[k]->swiglu(o, uu, 3);
        CHECK_MSG(o[0] == 0.0f && o[1] == 0.0f && isnan(o[2]), "%s swiglu extremes: %g %g %g", sets[k]->name, (double)o[0],
                  (double)o[1], (double)o[2]);
    }
}

int main(void)
{
    const char *names[] = {"ref", "avx2", "avx512", "vnni", "bf16", "bf16x2", "bf16f", "amx"};
    for (int i = 0; i < 8; i++) {
        const moeq_kernel_set *k = moeq_kernels_get(names[i]);
        if (k) sets[nsets++] = k;
    }
    printf("  activation kernel sets here: %d\n", nsets);
    RUN_TEST(test_swiglu);
    HARNESS_EXIT();
}
