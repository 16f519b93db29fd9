/* Runtime choice of the kernel variant (BLIS-style): the reference first, then the best the
 * CPU supports by cpuid; MOEQ_KERNEL=ref|avx2|avx512|vnni|bf16|bf16x2|bf16f|amx forces one so every variant can be
 * tested on one machine, and MOEQ_KERNEL=float the best whose activations stay float32. The choice is made
 * once and cached. */
#include "moeq_kernels.h"
#include "kernels/x86/x86.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Of the AVX512-BF16 sets, the one cpuid picks without AMX: bf16, bf16 activations for the bf16
 * weights and int8 for the packed codecs, as llama.cpp's CPU backend does. Twice bf16f's
 * products per instruction: 1.6x its eval on q3-512 for 1.6% more KLD (the 5% target allows
 * it; docs/KERNELS.md "Which set cpuid picks"). MOEQ_KERNEL=float (bf16f here) keeps float32. */
#define MOEQ_KERNEL_BF16_DEFAULT "bf16"

static const moeq_kernel_set *chosen;
static char note[128];

#if defined(__x86_64__) && defined(MOEQ_HAVE_X86)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The CPU's features straight from cpuid, and the OS's from XCR0: __builtin_cpu_supports
 * names differ between gcc and clang (clang 14 has no "f16c"), and this one list serves both. */
enum { F_AVX2 = 1, F_FMA = 2, F_F16C = 4, F_AVX512 = 8, F_VNNI = 16, F_VBMI = 32, F_BITALG = 64, F_GFNI = 128,
       F_BF16 = 256, F_AMX = 512 };

static unsigned x86_features(void)
{
    unsigned a, b, c, d, f = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27)) || !(c & (1u << 28))) return 0;   /* OSXSAVE, AVX */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 6) != 6) return 0;   /* the OS saves XMM and YMM state */
    const int os_avx512 = (lo & 0xe6) == 0xe6;   /* ... and opmask, ZMM */
    if (c & (1u << 12)) f |= F_FMA;
    if (c & (1u << 29)) f |= F_F16C;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
    if (b & (1u << 5)) f |= F_AVX2;
    /* AVX-512 F, DQ, BW, VL together */
    if (os_avx512 && (b & 0xc0030000u) == 0xc0030000u) f |= F_AVX512;
    if (c & (1u << 1)) f |= F_VBMI;
    if (c & (1u << 8)) f |= F_GFNI;
    if (c & (1u << 11)) f |= F_VNNI;
    if (c & (1u << 12)) f |= F_BITALG;
    unsigned a1, b1, c1, d1;   /* leaf 7 subleaf 1: AVX512_BF16 in eax bit 5 */
    if (os_avx512 && __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1) && (a1 & (1u << 5))) f |= F_BF16;
    /* AMX-TILE and AMX-BF16 (edx bits 24, 22) with the tile state enabled in XCR0 (bits 17, 18) */
    if ((d & (1u << 24)) && (d & (1u << 22)) && (lo & 0x60000) == 0x60000) f |= F_AMX;
    return f;
}

static int has(unsigned want) { return (x86_features() & want) == want; }
static int have_avx2(void) { return has(F_AVX2 | F_FMA | F_F16C); }
static int have_avx512(void) { return has(F_AVX2 | F_FMA | F_F16C | F_AVX512); }
/* the int8-activation variant: VNNI dot products, VBMI/BITALG byte shuffles for 3-bit codes,
 * GFNI bit-field extraction */
static int have_vnni(void) { return has(F_AVX2 | F_FMA | F_F16C | F_AVX512 | F_VNNI | F_VBMI | F_BITALG | F_GFNI); }
/* vnni plus vdpbf16ps for the bf16 weights */
static int have_bf16(void) { return have_vnni() && has(F_BF16); }
/* AMX: Linux hands out the tile data state only to a process that asks for it (5.16 and
 * later: arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA); a tile instruction without it
 * faults. Asked once; the permission covers every thread of the process. */
static int have_amx(void)
{
    static int ok = -1;
    int v = __atomic_load_n(&ok, __ATOMIC_ACQUIRE);
    if (v >= 0) return v;
    v = have_bf16() && has(F_AMX);
#if defined(__linux__) && defined(SYS_arch_prctl)
    if (v) v = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    v = 0;
#endif
    __atomic_store_n(&ok, v, __ATOMIC_RELEASE);
    return v;
}
#endif

const moeq_kernel_set *moeq_kernels_get(const char *name)
{
    if (!strcmp(name, "float")) {
        static const char *const order[] = {"amx", "bf16f", "avx512", "avx2"};
        for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
            const moeq_kernel_set *k = moeq_kernels_get(order[i]);
            if (k && k->float_acts) return k;
        }
        return &moeq_kernels_ref;
    }
    if (!strcmp(name, "ref")) return &moeq_kernels_ref;
#if defined(MOEQ_HAVE_X86)
    if (!strcmp(name, "avx2") && have_avx2()) return &moeq_kernels_avx2;
    if (!strcmp(name, "avx512") && have_avx512()) return &moeq_kernels_avx512;
    if (!strcmp(name, "vnni") && have_vnni()) return &moeq_kernels_vnni;
    if (!strcmp(name, "bf16") && have_bf16()) return &moeq_kernels_bf16;
    if (!strcmp(name, "bf16x2") && have_bf16()) return &moeq_kernels_bf16x2;
    if (!strcmp(name, "bf16f") && have_bf16()) return &moeq_kernels_bf16f;
    if (!strcmp(name, "amx") && have_amx()) return &moeq_kernels_amx;
#endif
    return NULL;
}

const moeq_kernel_set *moeq_kernels(void)
{
    const moeq_kernel_set *k = __atomic_load_n(&chosen, __ATOMIC_ACQUIRE);
    if (k) return k;
    const char *env = getenv("MOEQ_KERNEL");
    const moeq_kernel_set *best = moeq_kernels_get("amx");
    if (!best) best = moeq_kernels_get(MOEQ_KERNEL_BF16_DEFAULT);
    if (!best) best = moeq_kernels_get("vnni");
    if (!best) best = moeq_kernels_get("avx512");
    if (!best) best = moeq_kernels_get("avx2");
    if (!best) best = &moeq_kernels_ref;
    if (env && *env) {
        k = moeq_kernels_get(env);
        if (k && strcmp(env, k->name)) snprintf(note, sizeof note, "MOEQ_KERNEL=%.32s: %s", env, k->name);
        else if (k) snprintf(note, sizeof note, "MOEQ_KERNEL=%s", env);
        else snprintf(note, sizeof note, "MOEQ_KERNEL=%.32s not available here; using %s", env, best->name);
    } else {
        snprintf(note, sizeof note, "cpuid: best of amx, " MOEQ_KERNEL_BF16_DEFAULT ", vnni, avx512, avx2, ref");
    }
    if (!k) k = best;
    __atomic_store_n(&chosen, k, __ATOMIC_RELEASE);
    return k;
}

void moeq_kernels_use(const moeq_kernel_set *k)
{
    if (k) snprintf(note, sizeof note, "chosen by the caller: %s", k->name);
    __atomic_store_n(&chosen, k, __ATOMIC_RELEASE);
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
