/* ggml's ternary types TQ1_0 and TQ2_0 (kernels/ggml/ggml_tq.c, docs/GGML-TYPES.md): the table
 * rows; dequantization of random blocks against a float64 decode written here from the format
 * rule (TQ1_0: trit k of byte B is digit k of the base-3 fraction B/256); llama.cpp's reference
 * quantizer against a brute-force one (each byte the smallest whose digits are the codes); the
 * weighted search against the reference (never worse per block, better under skewed importances)
 * and against a dense scan of f16 scales; GPTQ on the ternary grid against the weighted search;
 * every matmul variant against a float64 brute force at awkward sizes; the codec's spellings and
 * shape errors and the GGUF fallback; and llama.cpp's own bytes and floats from
 * tests/fixtures/ggml/vectors_tq.bin (docs/GGML-TYPES.md "Test vectors"). */
#include "harness.h"
#include "ggml_vectors.h"
#include "moeq_core.h"
#include "moeq_ggml.h"
#include "moeq_gguf_export.h"
#include "moeq_gptq.h"
#include "moeq_kernels.h"
#include "moeq_pack.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x2545f4914f6cdd1dull;
static double urand(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

static const moeq_ggml_type TQ[2] = {MOEQ_GGML_TQ1_0, MOEQ_GGML_TQ2_0};
static const char *tname(moeq_ggml_type t) { return moeq_ggml_type_get(t)->name; }

/* binary16 -> double from the IEEE rule */
static double h2d(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

/* The format rule, element e of a block: TQ1_0 e -> (byte, digit) and the digit
 * floor(3^(k+1) B / 256) mod 3 of the fraction B/256; TQ2_0 e -> (byte, bit pair). */
static int tq1_code(const uint8_t *b, int e)
{
    int byte, k;
    if (e < 160) { byte = e % 32; k = e / 32; }
    else if (e < 240) { byte = 32 + (e - 160) % 16; k = (e - 160) / 16; }
    else { byte = 48 + (e - 240) % 4; k = (e - 240) / 4; }
    long p = 1;
    for (int i = 0; i <= k; i++) p *= 3;
    return (int)((p * b[byte] / 256) % 3);
}
static int tq2_code(const uint8_t *b, int e) { return (b[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3; }

static void decode_rule(moeq_ggml_type t, const uint8_t *b, double *y)
{
    const double d = h2d((uint16_t)(b[t == MOEQ_GGML_TQ1_0 ? 52 : 64] | b[t == MOEQ_GGML_TQ1_0 ? 53 : 65] << 8));
    for (int e = 0; e < 256; e++) y[e] = ((t == MOEQ_GGML_TQ1_0 ? tq1_code(b, e) : tq2_code(b, e)) - 1) * d;
}

static void test_table(void)
{
    const moeq_ggml_type_info *a = moeq_ggml_type_get(34), *b = moeq_ggml_type_get(35);
    CHECK(a && !strcmp(a->name, "TQ1_0") && a->block == 256 && a->bytes == 54 && a->type == MOEQ_GGML_TQ1_0);
    CHECK(b && !strcmp(b->name, "TQ2_0") && b->block == 256 && b->bytes == 66 && b->type == MOEQ_GGML_TQ2_0);
    CHECK(moeq_ggml_type_by_name("tq1_0") == a && moeq_ggml_type_by_name("Tq2_0") == b);
    CHECK(moeq_ggml_row_bytes(MOEQ_GGML_TQ1_0, 768) == 3 * 54 && moeq_ggml_row_bytes(MOEQ_GGML_TQ2_0, 512) == 2 * 66);
    CHECK(moeq_ggml_row_bytes(MOEQ_GGML_TQ1_0, 288) == 0 && moeq_ggml_row_bytes(MOEQ_GGML_TQ2_0, 32) == 0);
}

/* random blocks (every byte random, d a random finite f16 incl. zero, subnormal, negative) */
static void rand_block(moeq_ggml_type t, uint8_t *b)
{
    int nb = moeq_ggml_type_get(t)->bytes;
    for (int i = 0; i < nb; i++) b[i] = (uint8_t)(urand() * 256);
    uint16_t h;
    double u = urand();
    if (u < 0.05) h = 0;
    else if (u < 0.1) h = (uint16_t)(1 + urand() * 1022);                       /* subnormal */
    else h = (uint16_t)(((int)(urand() * 30) + 1) << 10 | (int)(urand() * 1024)); /* normal, finite */
    if (urand() < 0.3) h |= 0x8000;
    b[nb - 2] = (uint8_t)h;
    b[nb - 1] = (uint8_t)(h >> 8);
}

static void test_dequant_rule(void)
{
    for (int k = 0; k < 2; k++) {
        const moeq_ggml_type t = TQ[k];
        enum { NB = 400 };
        const int bs = moeq_ggml_type_get(t)->bytes;
        uint8_t *b = malloc((size_t)NB * bs);
        float *y = malloc(NB * 256 * sizeof *y);
        for (int i = 0; i < NB; i++) rand_block(t, b + i * bs);
        /* TQ1_0: the 243-byte codes a quantizer writes and the 13 above it */
        if (t == MOEQ_GGML_TQ1_0)
            for (int i = 0; i < 256; i++) b[(i % NB) * bs + i % 52] = (uint8_t)i;
        moeq_ggml_dequant_row(t, b, y, NB * 256);
        size_t bad = 0;
        for (int i = 0; i < NB; i++) {
            double ref[256];
            decode_rule(t, b + i * bs, ref);
            for (int e = 0; e < 256; e++) bad += (double)y[i * 256 + e] != ref[e];   /* t·d is exact in float */
        }
        CHECK_MSG(bad == 0, "%s: %zu of %d values differ from the format rule", tname(t), bad, NB * 256);
        free(b); free(y);
    }
}

/* ---- the reference quantizer, brute force -------------------------------------------------- */

/* llama.cpp's rule: d = max |x|, q = lroundf(x · (1/d)) + 1; then the bytes: TQ2_0's bit pairs,
 * TQ1_0's each the smallest byte whose base-3 digits (tq1_code's rule) are the codes */
static void brute_ref(moeq_ggml_type t, const float *x, uint8_t *b)
{
    float amax = 0;
    for (int j = 0; j < 256; j++) amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
    const float id = amax ? 1.0f / amax : 0.0f;
    int q[256];
    for (int j = 0; j < 256; j++) q[j] = (int)lroundf(x[j] * id) + 1;
    const int bs = moeq_ggml_type_get(t)->bytes;
    memset(b, 0, (size_t)bs);
    uint16_t h = moeq_f32_to_f16(amax);
    b[bs - 2] = (uint8_t)h;
    b[bs - 1] = (uint8_t)(h >> 8);
    if (t == MOEQ_GGML_TQ2_0) {
        for (int e = 0; e < 256; e++) b[32 * (e / 128) + e % 32] |= (uint8_t)(q[e] << (2 * ((e % 128) / 32)));
        return;
    }
    /* each byte: the smallest value whose digits are its elements' codes (qh: four and a 0) */
    for (int byte = 0; byte < 52; byte++) {
        int el[5], ne = 0;
        for (int e = 0; e < 256; e++) {
            int eb = e < 160 ? e % 32 : e < 240 ? 32 + (e - 160) % 16 : 48 + (e - 240) % 4;
            if (eb == byte) el[ne++] = e;
        }
        int found = -1;
        for (int v = 0; v < 256 && found < 0; v++) {
            uint8_t tmp[54] = {0};
            tmp[byte] = (uint8_t)v;
            int ok = 1;
            for (int i = 0; i < ne && ok; i++) ok = tq1_code(tmp, el[i]) == q[el[i]];
            if (ok && byte >= 48) ok = (v * 243L / 256) % 3 == 0;   /* digit 4 of qh */
            if (ok) found = v;
        }
        b[byte] = (uint8_t)(found < 0 ? 0 : found);
    }
}

static void fill_pattern(int p, float *x)
{
    double s = 0.01 + 3 * urand();
    for (int j = 0; j < 256; j++) {
        double v;
        switch (p % 8) {
        case 0: v = nrand(); break;
        case 1: v = (urand() < 0.03 ? 20 : 1) * nrand() * 0.05; break;   /* outliers */
        case 2: v = 0; break;
        case 3: v = 0.37; break;
        case 4: v = (int)(urand() * 5) * 0.25 - 0.5; break;               /* halves of the max: ties */
        case 5: v = nrand() * 1e-6; break;                                  /* subnormal f16 d */
        case 6: v = -urand() * 3; break;
        default: v = nrand() * 900; break;
        }
        x[j] = (float)(v * s);
    }
}

static void test_reference_bytes(void)
{
    for (int k = 0; k < 2; k++) {
        const moeq_ggml_type t = TQ[k];
        const int bs = moeq_ggml_type_get(t)->bytes;
        enum { NB = 48 };
        float *x = malloc(NB * 256 * sizeof *x);
        uint8_t *q = malloc((size_t)NB * bs), want[66];
        for (int i = 0; i < NB; i++) fill_pattern(i, x + i * 256);
        moeq_ggml_quant_row(t, x, NULL, q, NB * 256);
        int bad = 0;
        for (int i = 0; i < NB; i++) {
            brute_ref(t, x + i * 256, want);
            bad += memcmp(want, q + i * bs, (size_t)bs) != 0;
        }
        CHECK_MSG(bad == 0, "%s: %d of %d blocks differ from the brute-force reference", tname(t), bad, NB);
        free(x); free(q);
    }
}

/* ---- weighted search ---------------------------------------------------------------------------- */

static double werr(const float *x, const float *w, const float *y, int n)
{
    double e = 0;
    for (int j = 0; j < n; j++) e += (double)w[j] * ((double)x[j] - y[j]) * ((double)x[j] - y[j]);
    return e;
}

/* the best f16 scale by a dense scan: every finite f16 d in [amax/16, 2 amax], nearest codes */
static double dense_best(const float *x, const float *w)
{
    float amax = 0;
    for (int j = 0; j < 256; j++) amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
    double best = HUGE_VAL;
    for (int h = 1; h < 0x7c00; h++) {
        const float d = moeq_f16_to_f32((uint16_t)h);
        if (d < amax / 16 || d > 2 * amax) continue;
        double e = 0;
        for (int j = 0; j < 256; j++) {
            const float a = fabsf(x[j]);
            const double r = a >= 0.5f * d ? (double)a - d : (double)a;
            e += (double)w[j] * r * r;
        }
        best = e < best ? e : best;
    }
    return best;
}

static void test_weighted(void)
{
    for (int k = 0; k < 2; k++) {
        const moeq_ggml_type t = TQ[k];
        const int64_t n = 512, R = 24;
        const size_t rb = moeq_ggml_row_bytes(t, n);
        float *x = malloc(n * 4), *w = malloc(n * 4), *y0 = malloc(n * 4), *y1 = malloc(n * 4);
        uint8_t *q0 = malloc(rb), *q1 = malloc(rb);
        double e0 = 0, e1 = 0, worst_dense = 0;
        int worse = 0;
        for (int r = 0; r < R; r++) {
            for (int64_t i = 0; i < n; i++) {
                x[i] = (float)(nrand() * (1 + 2 * urand()));
                w[i] = (float)exp(3 * nrand());   /* importances over ~4 decades */
            }
            if (r == R - 1)
                for (int64_t i = 0; i < n; i++) w[i] = 1;   /* flat weights: least squares, still never worse */
            moeq_ggml_quant_row(t, x, NULL, q0, n);
            moeq_ggml_quant_row(t, x, w, q1, n);
            moeq_ggml_dequant_row(t, q0, y0, n);
            moeq_ggml_dequant_row(t, q1, y1, n);
            for (int64_t b = 0; b < n / 256; b++) {
                double a = werr(x + 256 * b, w + 256 * b, y0 + 256 * b, 256), c = werr(x + 256 * b, w + 256 * b, y1 + 256 * b, 256);
                worse += c > a;
                e0 += a;
                e1 += c;
                if (r % 4 == 0) {
                    double dbest = dense_best(x + 256 * b, w + 256 * b), g = c / dbest - 1;
                    worst_dense = g > worst_dense ? g : worst_dense;
                }
            }
        }
        CHECK_MSG(worse == 0, "%s: %d blocks with a weighted error above the reference's", tname(t), worse);
        CHECK_MSG(e1 < 0.9 * e0, "%s: weighted error %g with importances, %g without", tname(t), e1, e0);
        CHECK_MSG(worst_dense < 1e-9, "%s: the search is %g above the dense scan's best f16 scale", tname(t), worst_dense);
        printf("  %s: weighted error %.4g (reference %.4g, ratio %.3f); worst gap to the dense f16 scan %.2g\n", tname(t),
               e1, e0, e1 / e0, worst_dense);
        /* dead importances: the fallback weight 1 */
        for (int64_t i = 0; i < n; i++) w[i] = 0;
        moeq_ggml_quant_row(t, x, w, q0, n);
        for (int64_t i = 0; i < n; i++) w[i] = 1;
        moeq_ggml_quant_row(t, x, w, q1, n);
        CHECK(!memcmp(q0, q1, rb));
        /* zero and non-finite blocks: the reference's bytes */
        for (int64_t i = 0; i < n; i++) x[i] = i < 256 ? 0 : (float)nrand();
        x[300] = NAN;
        moeq_ggml_quant_row(t, x, w, q0, n);
        moeq_ggml_quant_row(t, x, NULL, q1, n);
        CHECK(!memcmp(q0, q1, rb));
        free(x); free(w); free(y0); free(y1); free(q0); free(q1);
    }
}

/* ---- GPTQ ------------------------------------------------------------------------------------------ */

static void test_gptq(void)
{
    const int64_t rows = 40, cols = 512, ns = 1024;
    double *H = calloc(cols * cols, sizeof *H), *mix = malloc(cols * 8 * sizeof *mix), *xs = malloc(cols * sizeof *xs);
    for (int64_t c = 0; c < cols * 8; c++) mix[c] = nrand();
    for (int64_t s = 0; s < ns; s++) {
        double z[8];
        for (int k = 0; k < 8; k++) z[k] = nrand();
        for (int64_t c = 0; c < cols; c++) {
            double v = 0.3 * nrand();
            for (int k = 0; k < 8; k++) v += mix[c * 8 + k] * z[k];
            xs[c] = v * (1 + (c % 7));
        }
        for (int64_t i = 0; i < cols; i++)
            for (int64_t j = 0; j < cols; j++) H[i * cols + j] += xs[i] * xs[j];
    }
    float *w = malloc(rows * cols * 4), *wq = malloc(rows * cols * 4), *ws = malloc(rows * cols * 4), *imp = malloc(cols * 4);
    for (int64_t i = 0; i < rows * cols; i++) w[i] = (float)nrand();
    for (int64_t c = 0; c < cols; c++) imp[c] = (float)H[c * cols + c];
    for (int k = 0; k < 2; k++) {
        const moeq_ggml_type t = TQ[k];
        const size_t rb = moeq_ggml_row_bytes(t, cols);
        uint8_t *q = malloc(rb * rows), *q2 = malloc(rb * rows), *qs = malloc(rb * rows);
        moeq_gptq_opts o = {.damp = 0.01, .threads = 1};
        moeq_gptq_info info;
        moeq_error err;
        CHECK(moeq_ggml_gptq(t, w, rows, cols, H, &o, q, wq, &info, &err) == MOEQ_OK && !info.rtn_fallback);
        for (int64_t r = 0; r < rows; r++) {
            moeq_ggml_quant_row(t, w + r * cols, imp, qs + r * rb, cols);
            moeq_ggml_dequant_row(t, qs + r * rb, ws + r * cols, cols);
        }
        const double eg = moeq_hessian_error(w, wq, rows, cols, H), es = moeq_hessian_error(w, ws, rows, cols, H);
        CHECK_MSG(eg < 0.8 * es, "%s: GPTQ output error %g, weighted search alone %g", tname(t), eg, es);
        printf("  %s GPTQ: Hessian error %.4g, weighted search alone %.4g (ratio %.3f)\n", tname(t), eg, es, eg / es);
        /* wq is the dequantization of the codes, bit for bit, every row */
        float *y = malloc(rows * cols * 4);
        for (int64_t r = 0; r < rows; r++) moeq_ggml_dequant_row(t, q + r * rb, y + r * cols, cols);
        CHECK(!memcmp(y, wq, rows * cols * 4));
        free(y);
        /* threads and act order */
        o.threads = 2;
        CHECK(moeq_ggml_gptq(t, w, rows, cols, H, &o, q2, NULL, &info, &err) == MOEQ_OK && !memcmp(q, q2, rb * rows));
        o.act_order = 1;
        CHECK(moeq_ggml_gptq(t, w, rows, cols, H, &o, q2, wq, &info, &err) == MOEQ_OK);
        const double ea = moeq_hessian_error(w, wq, rows, cols, H);
        CHECK_MSG(ea < es, "%s: GPTQ act order error %g, weighted search %g", tname(t), ea, es);
        CHECK(moeq_ggml_gptq(t, w, rows, 384, NULL, NULL, q2, NULL, &info, &err) == MOEQ_ERR_MISUSE);
        /* H = I: no feedback, every value to its nearest level on the weight-1 search's grid, the
         * codes written by pack: the weighted search's bytes */
        {
            double *Id = calloc(cols * cols, sizeof *Id);
            float *ones = malloc(cols * 4);
            for (int64_t c = 0; c < cols; c++) { Id[c * cols + c] = 1; ones[c] = 1; }
            moeq_gptq_opts o1 = {.damp = 0.01, .threads = 1};
            CHECK(moeq_ggml_gptq(t, w, rows, cols, Id, &o1, q2, NULL, &info, &err) == MOEQ_OK);
            for (int64_t r = 0; r < rows; r++) moeq_ggml_quant_row(t, w + r * cols, ones, qs + r * rb, cols);
            size_t bad = 0;
            for (int64_t r = 0; r < rows; r++) bad += memcmp(q2 + r * rb, qs + r * rb, rb) != 0;
            CHECK_MSG(bad == 0, "%s: GPTQ with H = I differs from the weighted search in %zu rows", tname(t), bad);
            free(Id); free(ones);
        }
        CHECK(moeq_ggml_quantize_rows(t, w, rows, 128, NULL, q2, &err) == MOEQ_ERR_MISUSE);
        free(q); free(q2); free(qs);
    }
    free(H); free(mix); free(xs); free(w); free(wq); free(ws); free(imp);
}

/* ---- matmul ---------------------------------------------------------------------------------------- */

static void test_gemm(void)
{
    static const char *variants[] = {"ref", "avx2", "avx512"};
    static const int64_t R[] = {1, 3, 17}, N[] = {1, 5, 33};
    int ran = 0;
    for (int k = 0; k < 2; k++) {
        const moeq_ggml_type t = TQ[k];
        const int64_t cols = 768;
        const size_t rb = moeq_ggml_row_bytes(t, cols);
        for (int ri = 0; ri < 3; ri++)
            for (int ni = 0; ni < 3; ni++) {
                const int64_t rows = R[ri], n = N[ni];
                uint8_t *W = malloc(rb * rows);
                float *wf = malloc(rows * cols * 4), *X = malloc(n * cols * 4), *Y = malloc(n * rows * 4);
                for (int64_t r = 0; r < rows; r++) {
                    for (int64_t c = 0; c < cols; c++) wf[r * cols + c] = (float)nrand();
                    moeq_ggml_quant_row(t, wf + r * cols, NULL, W + r * rb, cols);
                    moeq_ggml_dequant_row(t, W + r * rb, wf + r * cols, cols);
                }
                for (int64_t i = 0; i < n * cols; i++) X[i] = (float)nrand();
                for (int v = 0; v < 3; v++) {
                    if (!moeq_ggml_gemm_with(variants[v], t, W, rows, cols, X, n, Y)) continue;
                    ran++;
                    double worst = 0;
                    for (int64_t i = 0; i < n; i++)
                        for (int64_t r = 0; r < rows; r++) {
                            double s = 0, a = 0;
                            for (int64_t c = 0; c < cols; c++) {
                                s += (double)wf[r * cols + c] * X[i * cols + c];
                                a += fabs((double)wf[r * cols + c] * X[i * cols + c]);
                            }
                            const double e = fabs(Y[i * rows + r] - s) / (a + 1e-30);
                            worst = e > worst ? e : worst;
                        }
                    const double tol = strcmp(variants[v], "ref") ? 2e-6 * (1 + cols / 256.0) : 1.2e-7;
                    CHECK_MSG(worst <= tol, "%s %s %lldx%lld n=%lld: relative error %g", variants[v], tname(t),
                              (long long)rows, (long long)cols, (long long)n, worst);
                }
                free(W); free(wf); free(X); free(Y);
            }
        /* X = identity: each variant's decoded values are dequant's, bit for bit (random bytes) */
        const int64_t rows = 9, c2 = 512;
        const size_t rb2 = moeq_ggml_row_bytes(t, c2);
        uint8_t *W = malloc(rb2 * rows);
        float *wf = malloc(rows * c2 * 4), *I = calloc(c2 * c2, 4), *Y = malloc(c2 * rows * 4);
        for (int64_t b = 0; b < rows * c2 / 256; b++) rand_block(t, W + b * moeq_ggml_type_get(t)->bytes);
        for (int64_t r = 0; r < rows; r++) moeq_ggml_dequant_row(t, W + r * rb2, wf + r * c2, c2);
        for (int64_t c = 0; c < c2; c++) I[c * c2 + c] = 1;
        for (int v = 0; v < 3; v++) {
            if (!moeq_ggml_gemm_with(variants[v], t, W, rows, c2, I, c2, Y)) continue;
            size_t bad = 0;
            for (int64_t c = 0; c < c2; c++)
                for (int64_t r = 0; r < rows; r++) bad += Y[c * rows + r] != wf[r * c2 + c];
            CHECK_MSG(bad == 0, "%s %s: %zu decoded values differ from moeq_ggml_dequant_row", variants[v], tname(t), bad);
        }
        free(W); free(wf); free(I); free(Y);
    }
    CHECK(ran >= 2 * 9 * 2);   /* ref and avx2 at least */
    printf("  gemm variant here: %s\n", moeq_ggml_gemm_name());
}

/* ---- codec and GGUF fallback ------------------------------------------------------------------------ */

static void test_codec(void)
{
    moeq_codec c;
    moeq_error e;
    char buf[32];
    static const struct { const char *s; moeq_ggml_type t; double bpw; } S[] = {
        {"tq1_0", MOEQ_GGML_TQ1_0, 1.6875}, {"TQ2_0", MOEQ_GGML_TQ2_0, 2.0625}};
    for (int i = 0; i < 2; i++) {
        CHECK(moeq_codec_parse(S[i].s, &c, &e) == MOEQ_OK && c.type == MOEQ_CODEC_GGML && c.gtype == (int)S[i].t);
        moeq_codec_format(&c, buf, sizeof buf);
        CHECK(!strcmp(buf, i ? "tq2_0" : "tq1_0"));
        CHECK_NEAR(moeq_codec_bpw(&c, 512), S[i].bpw, 0);
        CHECK(moeq_codec_check(&c, 3, 768, &e) == MOEQ_OK);
        CHECK(moeq_codec_raw_bytes(&c, 3, 768) == (uint64_t)(3 * 768 * S[i].bpw / 8));
        CHECK(moeq_codec_check(&c, 3, 320, &e) == MOEQ_ERR_UNSUPPORTED && strstr(e.detail, "q2g32s") &&
              strstr(e.detail, "256"));
        CHECK(moeq_codec_raw_bytes(&c, 3, 320) == 0);
        CHECK(moeq_codec_check(&c, 3, 100, &e) == MOEQ_ERR_UNSUPPORTED && strstr(e.detail, "no matrix codec"));
    }
    CHECK(moeq_codec_parse("tq3_0", &c, &e) == MOEQ_ERR_MISUSE && strstr(e.detail, "tq2_0"));
    /* llama-quantize's tensor_type_fallback: TQ1_0, TQ2_0 -> Q4_0, then F16 */
    CHECK(moeq_gguf_fallback_type(34, 512) == 34 && moeq_gguf_fallback_type(35, 768) == 35);
    CHECK(moeq_gguf_fallback_type(34, 96) == 2 && moeq_gguf_fallback_type(35, 320) == 2);
    CHECK(moeq_gguf_fallback_type(35, 100) == 1);
}

/* ---- llama.cpp's vectors (optional file) ------------------------------------------------------------- */

static void test_llama_vectors(void)
{
    uint8_t *buf;
    gv_rec recs[64];
    const int nrec = gv_load(FIXTURES "/ggml/vectors_tq.bin", &buf, recs, 64);
    CHECK_MSG(nrec > 0, FIXTURES "/ggml/vectors_tq.bin is missing or malformed (%d)", nrec);
    const float *input[4] = {0};
    uint32_t in_rows[4] = {0};
    int checked_q = 0, checked_d = 0;
    for (int i = 0; i < nrec; i++) {
        const uint32_t kind = recs[i].kind, type = recs[i].type, set = recs[i].set, rows = recs[i].rows,
                       cols = recs[i].cols, has_deq = recs[i].has_deq;
        const uint8_t *data = recs[i].data;
        size_t rb = kind > 1 ? moeq_ggml_row_bytes((moeq_ggml_type)type, cols) : 0;
        if (kind == 0 && set < 4) { input[set] = (const float *)data; in_rows[set] = rows; }
        if (kind >= 2 && (type == 34 || type == 35)) {
            /* the codes: kind 2 and 3 (llama.cpp ignores the imatrix) are the reference's */
            if (kind != 4 && set < 4 && input[set] && in_rows[set] == rows) {
                uint8_t *q = malloc((size_t)rows * rb);
                for (uint32_t r = 0; r < rows; r++) moeq_ggml_quant_row((moeq_ggml_type)type, input[set] + (size_t)r * cols, NULL, q + r * rb, cols);
                size_t bad = 0;
                for (uint32_t r = 0; r < rows; r++) bad += memcmp(q + r * rb, data + r * rb, rb) != 0;
                CHECK_MSG(bad == 0, "type %u kind %u set %u: %zu of %u rows differ from llama-quantize's bytes", type, kind, set, bad, rows);
                free(q);
                checked_q++;
            }
            if (has_deq) {
                float *y = malloc((size_t)rows * cols * 4);
                for (uint32_t r = 0; r < rows; r++) moeq_ggml_dequant_row((moeq_ggml_type)type, data + r * rb, y + (size_t)r * cols, cols);
                size_t bad = 0;
                for (size_t j = 0; j < (size_t)rows * cols; j++) bad += memcmp(y + j, data + (size_t)rows * rb + 4 * j, 4) != 0;
                CHECK_MSG(bad == 0, "type %u kind %u set %u: %zu values differ from llama.cpp's F32", type, kind, set, bad);
                free(y);
                checked_d++;
            }
        }
    }
    CHECK_MSG(checked_q >= 4 && checked_d >= 4, "vectors_tq.bin: %d code and %d float records checked", checked_q, checked_d);
    printf("  vectors_tq.bin: %d code records, %d float records checked\n", checked_q, checked_d);
    free(buf);
}

int main(void)
{
    RUN_TEST(test_table);
    RUN_TEST(test_dequant_rule);
    RUN_TEST(test_reference_bytes);
    RUN_TEST(test_weighted);
    RUN_TEST(test_gptq);
    RUN_TEST(test_gemm);
    RUN_TEST(test_codec);
    RUN_TEST(test_llama_vectors);
    HARNESS_EXIT();
}
