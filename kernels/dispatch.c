/* Runtime choice of the kernel variant (BLIS-style): the reference first, then the best the
 * CPU supports by cpuid; MOEQ_KERNEL=ref|avx2|avx512|vnni forces one so every variant can be
 * tested on one machine. The choice is made once and cached. */
#include "moeq_kernels.h"
#include "kernels/x86/x86.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const moeq_kernel_set *chosen;
static char note[128];

static int have_avx2(void)
{
#if defined(__x86_64__) && defined(MOEQ_HAVE_X86)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
    return 0;
#endif
}

static int have_avx512(void)
{
#if defined(__x86_64__) && defined(MOEQ_HAVE_X86)
    __builtin_cpu_init();
    return have_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

/* the int8-activation variant: VNNI dot products, VBMI/BITALG byte shuffles for 3-bit codes,
 * GFNI bit-field extraction */
static int have_vnni(void)
{
#if defined(__x86_64__) && defined(MOEQ_HAVE_X86)
    return have_avx512() && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi") &&
           __builtin_cpu_supports("avx512bitalg") && __builtin_cpu_supports("gfni");
#else
    return 0;
#endif
}

const moeq_kernel_set *moeq_kernels_get(const char *name)
{
    if (!strcmp(name, "ref")) return &moeq_kernels_ref;
#if defined(MOEQ_HAVE_X86)
    if (!strcmp(name, "avx2") && have_avx2()) return &moeq_kernels_avx2;
    if (!strcmp(name, "avx512") && have_avx512()) return &moeq_kernels_avx512;
    if (!strcmp(name, "vnni") && have_vnni()) return &moeq_kernels_vnni;
#endif
    return NULL;
}

const moeq_kernel_set *moeq_kernels(void)
{
    const moeq_kernel_set *k = __atomic_load_n(&chosen, __ATOMIC_ACQUIRE);
    if (k) return k;
    const char *env = getenv("MOEQ_KERNEL");
    const moeq_kernel_set *best = moeq_kernels_get("vnni");
    if (!best) best = moeq_kernels_get("avx512");
    if (!best) best = moeq_kernels_get("avx2");
    if (!best) best = &moeq_kernels_ref;
    if (env && *env) {
        k = moeq_kernels_get(env);
        if (k) snprintf(note, sizeof note, "MOEQ_KERNEL=%s", env);
        else snprintf(note, sizeof note, "MOEQ_KERNEL=%.32s not available here; using %s", env, best->name);
    } else {
        snprintf(note, sizeof note, "cpuid: best of vnni, avx512, avx2, ref");
    }
    if (!k) k = best;
    __atomic_store_n(&chosen, k, __ATOMIC_RELEASE);
    return k;
}

const char *moeq_kernels_note(void)
{
    moeq_kernels();
    return note;
}

void moeq_qmat_gemv_par(const moeq_kernel_set *ks, const moeq_qmat *q, const float *x, float *y)
{
    int64_t nt = omp_get_num_threads(), per = (q->rows + nt - 1) / nt;
    per = (per + 63) / 64 * 64;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < nt; t++) {
        int64_t r0 = t * per, r1 = r0 + per < q->rows ? r0 + per : q->rows;
        if (r0 < r1) ks->gemv(q, x, r0, r1, y + r0);
    }
}
