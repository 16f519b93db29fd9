/* Float-weight GEMM (moeq_kernel_set.wgemm, docs/KERNELS.md "Float weights"): the reference
 * against exact integer products for each storage type; every fast variant against the
 * reference at awkward sizes (rows, cols, tokens not multiples of the 3 x 4 x 16 tiles, n = 1,
 * 2, 3, 17, 100) within the float32 summation bound; strided X and Y; a (row, token) value
 * identical bit for bit however the rows and tokens are split (on either side of the batch size
 * where the kernel changes); a bf16 matrix and its float32 values alike; NaN and Inf carried.
 * The AVX512-BF16 variants: bf16 (x rounded to bf16) against the reference that rounds x
 * first, bf16x2 and amx (AMX tiles; both x as hi + lo) against the exact one. */
#include "harness.h"
#include "moeq_kernels.h"

#include <stdint.h>
#include <stdlib.h>

static uint32_t rng = 12345;
static float frand(void)   /* uniform in [-1, 1) */
{
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 8388608.0f - 1.0f;
}

static uint16_t to_bf16(float f)   /* round to nearest even */
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

static const char *tname[] = {"f32", "f16", "bf16"};

/* A rows x cols matrix of type with random values (some outliers); also its widened values. */
static void *make_w(moeq_wtype type, int64_t rows, int64_t cols, float *wide)
{
    size_t n = (size_t)(rows * cols);
    void *d = malloc(n * (type == MOEQ_W_F32 ? 4 : 2));
    for (size_t i = 0; i < n; i++) {
        float v = frand() * (i % 37 == 5 ? 30.0f : 1.0f);
        if (type == MOEQ_W_F32) ((float *)d)[i] = wide[i] = v;
        else if (type == MOEQ_W_F16) {
            uint16_t h = moeq_f32_to_f16(v);
            ((uint16_t *)d)[i] = h;
            wide[i] = moeq_f16_to_f32(h);
        } else {
            uint16_t b = to_bf16(v);
            ((uint16_t *)d)[i] = b;
            uint32_t u = (uint32_t)b << 16;
            memcpy(&wide[i], &u, 4);
        }
    }
    return d;
}

/* The reference decodes each type: small integers are exact in all three, so Y is exact. */
static void test_reference_exact(void)
{
    const int64_t R = 5, C = 37, n = 3;
    float X[3 * 37], Y[3 * 5];
    int64_t W[5 * 37];
    for (int64_t i = 0; i < R * C; i++) W[i] = (int64_t)(i * 7 % 23) - 11;
    for (int64_t i = 0; i < n * C; i++) X[i] = (float)((i * 5 % 17) - 8);
    for (int t = 0; t < 3; t++) {
        uint16_t h[5 * 37];
        float f[5 * 37];
        for (int64_t i = 0; i < R * C; i++) {
            f[i] = (float)W[i];
            h[i] = t == MOEQ_W_F16 ? moeq_f32_to_f16(f[i]) : to_bf16(f[i]);
        }
        moeq_wmat w = {(moeq_wtype)t, R, C, t == MOEQ_W_F32 ? (const void *)f : (const void *)h, 0};
        moeq_ref_wgemm(&w, X, n, C, 0, R, Y, R);
        for (int64_t i = 0; i < n; i++)
            for (int64_t r = 0; r < R; r++) {
                int64_t s = 0;
                for (int64_t c = 0; c < C; c++) s += W[r * C + c] * (int64_t)X[i * C + c];
                CHECK_MSG(Y[i * R + r] == (float)s, "%s token %lld row %lld: %g vs %lld", tname[t], (long long)i,
                          (long long)r, Y[i * R + r], (long long)s);
            }
    }
}

/* One case of variant ks: rows [r0, r1) of R x C, n tokens, leading dimensions ldx, ldy. */
static int one_case_ld(const moeq_kernel_set *ks, moeq_wtype type, int64_t R, int64_t C, int64_t ldw, int64_t n,
                       int64_t r0, int64_t r1, int64_t ldx, int64_t ldy)
{
    float *wide = malloc((size_t)(R * C) * 4), *X = malloc((size_t)(n * ldx) * 4);
    float *Yr = malloc((size_t)(n * ldy) * 4), *Yf = malloc((size_t)(n * ldy) * 4);
    /* rows ldw apart: the matrix is the first C columns of an R x ldw one */
    float *wide_ld = malloc((size_t)(R * ldw) * 4);
    void *d = make_w(type, R, ldw, wide_ld);
    for (int64_t r = 0; r < R; r++) memcpy(wide + r * C, wide_ld + r * ldw, (size_t)C * 4);
    free(wide_ld);
    for (int64_t i = 0; i < n * ldx; i++) X[i] = frand() * (i % 29 == 3 ? 40.0f : 1.0f);
    for (int64_t i = 0; i < n * ldy; i++) Yr[i] = Yf[i] = -7.0f;
    moeq_wmat w = {type, R, C, d, ldw};
    /* the vdpbf16ps kernels (bf16 weights, 16 tokens or more): bf16 x against the reference
     * that rounds x first; x as hi + lo against the exact one, x kept to 2^-18 */
    /* amx: its tiles for bf16 weights at any batch */
    const int amx = !strcmp(ks->name, "amx");
    const int dp = type == MOEQ_W_BF16 && ((n >= 16 && !strncmp(ks->name, "bf16", 4)) || amx || !strcmp(ks->name, "bf16"));
    const int bf16x = dp && !strcmp(ks->name, "bf16");
    if (bf16x) moeq_ref_wgemm_bf16x(&w, X, n, ldx, r0, r1, Yr, ldy);
    else moeq_ref_wgemm(&w, X, n, ldx, r0, r1, Yr, ldy);
    ks->wgemm(&w, X, n, ldx, r0, r1, Yf, ldy);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t r = r0; r < r1; r++) {
            double mag = 0;
            for (int64_t c = 0; c < C; c++) mag += fabs((double)wide[r * C + c] * X[i * ldx + c]);
            /* dot tiles (n < 16): C / 8 rounded FMAs per lane, 3 adds across lanes, then one FMA
             * per tail column; panels (n >= 16): one chain of C FMAs;
             * vdpbf16ps: up to two roundings per pair of columns (two dot products when split) */
            double tol = dp ? ((double)(2 * C) + 8) * 0x1p-24 * mag * (1 + 0x1p-8) + (bf16x ? 0 : 0x1p-17 * mag)
                            : n >= 16 ? ((double)C + 4) * 0x1p-24 * mag   /* panels: one chain over k */
                                      : ((double)(C / 16 * 2) + (double)(C % 16) + 4) * 0x1p-24 * mag;
            tol += 1e-30;
            double e = fabs((double)Yf[i * ldy + r - r0] - Yr[i * ldy + r - r0]);
            if (!(e <= tol)) {
                if (bad++ < 3)
                    fprintf(stderr, "  %s %s %lldx%lld n%lld: token %lld row %lld: %.9g vs %.9g (tol %.3g)\n",
                            ks->name, tname[type], (long long)R, (long long)C, (long long)n, (long long)i,
                            (long long)r, Yf[i * ldy + r - r0], Yr[i * ldy + r - r0], tol);
            }
        }
        for (int64_t j = r1 - r0; j < ldy; j++)   /* nothing outside the outputs is written */
            if (Yf[i * ldy + j] != -7.0f) bad++;
    }
    free(wide); free(X); free(Yr); free(Yf); free(d);
    return bad;
}

static int one_case(const moeq_kernel_set *ks, moeq_wtype type, int64_t R, int64_t C, int64_t n, int64_t r0,
                    int64_t r1, int64_t ldx, int64_t ldy)
{
    return one_case_ld(ks, type, R, C, C, n, r0, r1, ldx, ldy);
}

static const moeq_kernel_set *fast[7];
static int nfast;

static void test_fast_against_reference(void)
{
    const int64_t rows[] = {1, 2, 5, 17, 100}, cols[] = {1, 7, 16, 33, 100, 256, 527}, ns[] = {1, 2, 3, 16, 17, 33, 49, 100};
    for (int v = 0; v < nfast; v++)
        for (int t = 0; t < 3; t++)
            for (size_t a = 0; a < sizeof rows / sizeof *rows; a++)
                for (size_t b = 0; b < sizeof cols / sizeof *cols; b++)
                    for (size_t c = 0; c < sizeof ns / sizeof *ns; c++) {
                        int64_t R = rows[a], C = cols[b], n = ns[c];
                        if (R * C * n > 600000) continue;   /* the float64 reference is slow under ASan */
                        int bad = one_case(fast[v], (moeq_wtype)t, R, C, n, 0, R, C, R);
                        CHECK_MSG(bad == 0, "%s %s %lldx%lld n%lld: %d bad", fast[v]->name, tname[t], (long long)R,
                                  (long long)C, (long long)n, bad);
                    }
}

static void test_strided_and_row_ranges(void)
{
    for (int v = 0; v < nfast; v++)
        for (int t = 0; t < 3; t++) {
            CHECK(one_case(fast[v], (moeq_wtype)t, 40, 129, 9, 5, 38, 140, 41) == 0);
            CHECK(one_case(fast[v], (moeq_wtype)t, 64, 512, 17, 13, 14, 515, 3) == 0);
            CHECK(one_case_ld(fast[v], (moeq_wtype)t, 70, 100, 131, 5, 0, 70, 100, 70) == 0);   /* W rows apart */
            CHECK(one_case_ld(fast[v], (moeq_wtype)t, 70, 100, 131, 33, 3, 69, 100, 70) == 0);
        }
}

/* A (row, token) value does not depend on the split: the whole call against calls per row
 * block of 7 and per block of tokens, bit for bit. Batches of 16 tokens or more take the
 * packed-panel kernel, smaller ones the dot-product tiles: each side is split within itself
 * (n = 40 as blocks of 20 tokens, n = 11 as single tokens). */
static void split_case(const moeq_kernel_set *ks, moeq_wtype type, int64_t n, int64_t tb)
{
    const int64_t R = 50, C = 300;
    float *wide = malloc((size_t)(R * C) * 4), *X = malloc((size_t)(n * C) * 4);
    float *A = malloc((size_t)(n * R) * 4), *B = malloc((size_t)(n * R) * 4);
    for (int64_t i = 0; i < n * C; i++) X[i] = frand();
    void *d = make_w(type, R, C, wide);
    moeq_wmat w = {type, R, C, d, 0};
    ks->wgemm(&w, X, n, C, 0, R, A, R);
    for (int64_t i = 0; i < n; i += tb)
        for (int64_t r0 = 0; r0 < R; r0 += 7)
            ks->wgemm(&w, X + i * C, tb, C, r0, r0 + 7 < R ? r0 + 7 : R, B + i * R + r0, R);
    CHECK_MSG(memcmp(A, B, (size_t)(n * R) * 4) == 0, "%s %s n %lld in blocks of %lld", ks->name, tname[type],
              (long long)n, (long long)tb);
    free(d); free(wide); free(X); free(A); free(B);
}

static void test_split_independent(void)
{
    for (int v = 0; v < nfast; v++)
        for (int t = 0; t < 3; t++) {
            split_case(fast[v], (moeq_wtype)t, 40, 20);
            split_case(fast[v], (moeq_wtype)t, 11, 1);
        }
}

/* A bf16 matrix and its widened float32 values give the same bits (the forward pass's
 * overrides rely on it), on either side of 16 tokens. */
static void test_bf16_as_f32_same_bits(void)
{
    const int64_t R = 37, C = 130;
    for (int v = 0; v < nfast; v++)
        for (int64_t n = 5; n <= 45; n += 40) {
            float *wide = malloc((size_t)(R * C) * 4), *X = malloc((size_t)(n * C) * 4);
            float *A = malloc((size_t)(n * R) * 4), *B = malloc((size_t)(n * R) * 4);
            for (int64_t i = 0; i < n * C; i++) X[i] = frand();
            void *d = make_w(MOEQ_W_BF16, R, C, wide);
            moeq_wmat wb = {MOEQ_W_BF16, R, C, d, 0}, wf = {MOEQ_W_F32, R, C, wide, 0};
            fast[v]->wgemm(&wb, X, n, C, 3, R, A, R);
            fast[v]->wgemm(&wf, X, n, C, 3, R, B, R);
            int same = 1;
            for (int64_t i = 0; i < n; i++) same &= !memcmp(A + i * R, B + i * R, (size_t)(R - 3) * 4);
            CHECK_MSG(same, "%s n %lld: bf16 and its float32 values differ", fast[v]->name, (long long)n);
            free(d); free(wide); free(X); free(A); free(B);
        }
}

/* Prepared activations (wx_prep, one vector at a time, in reverse order) then wgemm_wx give
 * wgemm's bits, for bf16 and float32 weights and on either side of 16 tokens. */
static void test_prepared_activations_same_bits(void)
{
    const int64_t R = 29, C = 77;
    int sets = 0;
    for (int v = 0; v < nfast; v++) {
        const moeq_kernel_set *ks = fast[v];
        if (!ks->wx_bytes) continue;
        sets++;
        for (int t = 0; t < 3; t++)
            for (int64_t n = 7; n <= 60; n += 53) {
                float *wide = malloc((size_t)(R * C) * 4), *X = malloc((size_t)(n * (C + 3)) * 4);
                float *A = malloc((size_t)(n * R) * 4), *B = malloc((size_t)(n * R) * 4);
                for (int64_t i = 0; i < n * (C + 3); i++) X[i] = frand();
                void *d = make_w((moeq_wtype)t, R, C, wide);
                moeq_wmat w = {(moeq_wtype)t, R, C, d, 0};
                size_t bytes = ks->wx_bytes(n, C);
                /* amx and bf16 prepare every batch; the other sets only 16 tokens or more */
                CHECK(n >= 16 || !strcmp(ks->name, "amx") || !strcmp(ks->name, "bf16") ? bytes > 0 : bytes == 0);
                void *buf = bytes ? malloc(bytes) : NULL;
                for (int64_t k = (n + 15) / 16 - 1; buf && k >= 0; k--) ks->wx_prep(X, n, C + 3, C, k, k + 1, buf);
                ks->wgemm(&w, X, n, C + 3, 2, R, A, R);
                ks->wgemm_wx(&w, buf, X, n, C + 3, 2, R, B, R);
                int same = 1;
                for (int64_t i = 0; i < n; i++) same &= !memcmp(A + i * R, B + i * R, (size_t)(R - 2) * 4);
                CHECK_MSG(same, "%s %s n %lld: prepared activations change the result", ks->name, tname[t], (long long)n);
                free(buf); free(d); free(wide); free(X); free(A); free(B);
            }
    }
    printf("  sets with prepared activations: %d\n", sets);
}

static void test_nan_inf_carried(void)
{
    const int64_t R = 7, C = 48, n = 5;
    float *wide = malloc((size_t)(R * C) * 4), X[5 * 48], Y[5 * 7];
    for (int64_t i = 0; i < n * C; i++) X[i] = frand();
    X[1 * C + 20] = NAN;
    X[3 * C + 47] = INFINITY;
    for (int v = 0; v < nfast; v++)
        for (int t = 0; t < 3; t++) {
            void *d = make_w((moeq_wtype)t, R, C, wide);
            moeq_wmat w = {(moeq_wtype)t, R, C, d, 0};
            fast[v]->wgemm(&w, X, n, C, 0, R, Y, R);
            for (int64_t r = 0; r < R; r++) {
                CHECK(isnan(Y[1 * R + r]));
                CHECK(!isfinite(Y[3 * R + r]));
                CHECK(isfinite(Y[0 * R + r]) && isfinite(Y[2 * R + r]) && isfinite(Y[4 * R + r]));
            }
            free(d);
        }
    free(wide);
}

int main(void)
{
    const char *names[] = {"avx2", "avx512", "vnni", "bf16", "bf16x2", "bf16f", "amx"};
    for (int i = 0; i < 7; i++) {
        const moeq_kernel_set *k = moeq_kernels_get(names[i]);
        if (k && k->wgemm != moeq_ref_wgemm) {
            int dup = 0;
            for (int j = 0; j < nfast; j++) dup |= fast[j]->wgemm == k->wgemm;
            if (!dup) fast[nfast++] = k;
        }
    }
    printf("  fast float-weight variants here: %d\n", nfast);
    RUN_TEST(test_reference_exact);
    RUN_TEST(test_fast_against_reference);
    RUN_TEST(test_strided_and_row_ranges);
    RUN_TEST(test_split_independent);
    RUN_TEST(test_bf16_as_f32_same_bits);
    RUN_TEST(test_prepared_activations_same_bits);
    RUN_TEST(test_nan_inf_carried);
    HARNESS_EXIT();
}
