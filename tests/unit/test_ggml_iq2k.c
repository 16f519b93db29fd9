/* ik_llama.cpp's IQ2_K (kernels/ggml/ggml_iq2k.c): dequantization against a float64 decode
 * written from the format rule, the GPTQ grid against dequantization bit for bit, round-trip
 * error, the quantizer against ik's rule alone (never a higher weighted error), the weighted
 * search under skewed importances, the matmul variants against a float64 brute force, GPTQ on
 * the grid, bad shapes, and ik_llama.cpp's own codes and floats when
 * tests/fixtures/ggml/vectors_ik.bin is there (docs/GGML-TYPES.md "Test vectors"). */
#include "harness.h"
#include "ggml_vectors.h"
#include "moeq_core.h"
#include "moeq_pack.h"
#include "moeq_ggml.h"
#include "moeq_gguf.h"
#include "moeq_gguf_export.h"
#include "moeq_gptq.h"
#include "kernels/ggml/ggml_impl.h"

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define T MOEQ_GGML_IQ2_K
#define BB 76

static uint64_t rng = 0x2545f4914f6cdd1dull;
static double urand(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

/* the format rule, in float64: d·(ls − 8)·grid[q + 4·bit] for element e of sub-block e/16 */
static double ref_value(const uint8_t *b, int e)
{
    static const int grid[8] = {-31, -13, 1, 17, -26, -8, 6, 22};
    const double d = moeq_f16_to_f32((uint16_t)(b[0] | b[1] << 8));
    const int extra = b[2] | b[3] << 8, ib = e / 16;
    const int ls = (b[4 + ib / 2] >> (4 * (ib % 2))) & 15;
    const int q = (b[12 + 32 * (e / 128) + 16 * (ib % 2) + e % 16] >> (2 * ((e / 32) % 4))) & 3;
    return d * (ls - 8) * grid[q + 4 * ((extra >> ib) & 1)];
}

static void rand_block(uint8_t *b)
{
    for (int i = 0; i < BB; i++) b[i] = (uint8_t)(urand() * 256);
    /* a finite d: normal or subnormal, either sign */
    uint16_t h = urand() < 0.1 ? (uint16_t)(urand() * 1024) : (uint16_t)(((int)(urand() * 25) + 3) << 10 | (int)(urand() * 1024));
    if (urand() < 0.5) h |= 0x8000;
    b[0] = (uint8_t)h;
    b[1] = (uint8_t)(h >> 8);
}

static void test_table(void)
{
    const moeq_ggml_type_info *t = moeq_ggml_type_get(137);
    CHECK(t && !strcmp(t->name, "IQ2_K") && t->block == 256 && t->bytes == 76 && t->type == T);
    CHECK(moeq_ggml_type_by_name("iq2_k") == t && moeq_ggml_type_by_name("IQ2_K") == t);
    CHECK(moeq_ggml_row_bytes(T, 512) == 152 && moeq_ggml_row_bytes(T, 128) == 0 && moeq_ggml_row_bytes(T, 0) == 0);
    const moeq_gguf_type *g = moeq_gguf_type_get(137);
    CHECK(g && !strcmp(g->name, "IQ2_K") && g->block == 256 && g->bytes == 76);
    CHECK(moeq_gguf_fallback_type(137, 512) == 137);
    CHECK(moeq_gguf_fallback_type(137, 96) == 20);    /* IQ4_NL, as ik's llama-quantize */
    CHECK(moeq_gguf_fallback_type(137, 100) == 1);    /* F16 */
    CHECK(2.375 == 8.0 * t->bytes / t->block);
}

/* random blocks decode to the float64 rule exactly (every product is exact in float32) */
static void test_dequant_rule(void)
{
    uint8_t b[4 * BB];
    float y[1024];
    size_t bad = 0;
    for (int it = 0; it < 400; it++) {
        for (int k = 0; k < 4; k++) rand_block(b + k * BB);
        moeq_ggml_dequant_row(T, b, y, 1024);
        for (int e = 0; e < 1024; e++) {
            const double r = ref_value(b + (e / 256) * BB, e % 256);
            bad += (double)y[e] != r;
        }
    }
    CHECK_MSG(bad == 0, "%zu values differ from the float64 rule", bad);
}

/* the GPTQ grid: A·t(L) − B is what dequantization gives for the codes L, bit for bit */
static void test_grid(void)
{
    const gg_codec *c = gg_codec_get(T);
    CHECK(c && c->levels == 4 && c->offset == 0 && c->table && c->grid && c->pack);
    if (!c) return;
    for (int k = 0; k < 4; k++) CHECK(gg_iq2nl_values[k + 4] == gg_iq2nl_values[k] + 5);
    uint8_t b[BB], L[256];
    float A[256], B[256], y[256];
    size_t bad = 0;
    for (int it = 0; it < 300; it++) {
        if (it % 2) {
            rand_block(b);
        } else {
            float x[256];
            double s = exp(8 * urand() - 6);
            for (int j = 0; j < 256; j++) x[j] = (float)(nrand() * s);
            moeq_ggml_quant_row(T, x, NULL, b, 256);
        }
        c->grid(b, A, B);
        for (int e = 0; e < 256; e++) L[e] = (uint8_t)(urand() * 4);
        c->pack(b, L);
        moeq_ggml_dequant_row(T, b, y, 256);
        for (int e = 0; e < 256; e++) {
            const float g = A[e] * (float)c->table[L[e]] - B[e];
            bad += memcmp(&g, &y[e], 4) != 0 && !(g == 0 && y[e] == 0);
        }
    }
    CHECK_MSG(bad == 0, "%zu grid values differ from dequantization", bad);
}

static double rel_rmse(const float *x, int64_t n, const float *imp, float *y)
{
    uint8_t *q = malloc(moeq_ggml_row_bytes(T, n));
    moeq_ggml_quant_row(T, x, imp, q, n);
    moeq_ggml_dequant_row(T, q, y, n);
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) { e += (x[i] - y[i]) * (double)(x[i] - y[i]); s += (double)x[i] * x[i]; }
    free(q);
    return sqrt(e / (s > 0 ? s : 1));
}

static void test_roundtrip(void)
{
    const int64_t n = 256 * 3;
    float x[768], y[768], imp[768];
    double e0 = 0, e1 = 0;
    for (int r = 0; r < 8; r++) {
        for (int64_t i = 0; i < n; i++) { x[i] = (float)nrand(); imp[i] = (float)(0.1 + urand()); }
        e0 += rel_rmse(x, n, NULL, y) / 8;
        e1 += rel_rmse(x, n, imp, y) / 8;
    }
    printf("  IQ2_K relative RMSE on Gaussian rows: %.4f (no importances), %.4f (importances)\n", e0, e1);
    CHECK_MSG(e0 < 0.40 && e1 < 0.40, "relative RMSE %g / %g", e0, e1);
    for (int64_t i = 0; i < n; i++) x[i] = 0;
    rel_rmse(x, n, NULL, y);
    int zero = 1;
    for (int64_t i = 0; i < n; i++) zero &= y[i] == 0;
    CHECK(zero);
}

/* the search's weights (ik's): imatrix · sqrt(σ² + x²) (a near-dead sub-block of 16: 1e-9), or
 * σ²/4 + x²; σ² = 1.5 · mean x² of the super-block */
static void search_weights(const float *x, const float *qw, float *wt)
{
    float sumx2 = 0;
    for (int j = 0; j < 256; j++) sumx2 += x[j] * x[j];
    const float sigma2 = 1.5f * sumx2 / 256;
    for (int s = 0; s < 16; s++) {
        float sw2 = 0, sx2 = 0, swx = 0;
        for (int j = 16 * s; qw && j < 16 * s + 16; j++) {
            sw2 += qw[j] * qw[j];
            sx2 += x[j] * x[j];
            swx += qw[j] * fabsf(x[j]);
        }
        const int dead = qw && !(sw2 > 16 * 1e-18f && sx2 > 16 * 1e-18f && swx > 16 * 1e-18f);
        for (int j = 16 * s; j < 16 * s + 16; j++)
            wt[j] = qw ? (dead ? 1e-9f : qw[j]) * sqrtf(sigma2 + x[j] * x[j]) : 0.25f * sigma2 + x[j] * x[j];
    }
}

static double blk_err(const uint8_t *b, const float *x, const float *w)
{
    float y[256];
    moeq_ggml_dequant_row(T, b, y, 256);
    double e = 0;
    for (int j = 0; j < 256; j++) e += (double)w[j] * ((double)x[j] - y[j]) * ((double)x[j] - y[j]);
    return e;
}

/* rows of several shapes; with and without importances the codec's quantizer is never worse
 * than ik's rule by the search's weighted error, and better on the whole */
static void fill_row(float *x, int kind)
{
    for (int j = 0; j < 256; j++) {
        switch (kind % 6) {
        case 0: x[j] = (float)nrand(); break;
        case 1: x[j] = (float)(nrand() * 0.05 * (urand() < 0.02 ? 20 : 1)); break;
        case 2: x[j] = (float)((urand() < 0.5 ? -1 : 1) * -log(urand() + 1e-300)); break;
        case 3: x[j] = (float)urand(); break;
        case 4: x[j] = (j / 16) % 3 == 1 ? 0.f : (float)(nrand() * 0.02); break;
        default: x[j] = (float)(nrand() * 1e-5); break;
        }
    }
}

static void test_vs_ik_rule(void)
{
    const gg_codec *c = gg_codec_get(T);
    float x[256], w[256], wt[256];
    uint8_t a[BB], b[BB];
    for (int weighted = 0; weighted < 2; weighted++) {
        size_t same = 0, better = 0, worse = 0;
        double ea = 0, eb = 0, pa = 0, pb = 0;
        for (int r = 0; r < 600; r++) {
            fill_row(x, r);
            for (int j = 0; j < 256; j++) w[j] = (float)exp(2 * nrand());
            const float *qw = weighted ? w : NULL;
            c->quant(x, qw, a, 256);
            gg_iq2k_quant_ik(x, qw, b, 256);
            search_weights(x, qw, wt);
            const double e1 = blk_err(a, x, wt), e2 = blk_err(b, x, wt);
            ea += e1;
            eb += e2;
            if (!memcmp(a, b, BB)) same++;
            else if (e1 < e2) better++;
            else worse++;
            if (weighted) {   /* the plain importance-weighted error, for the record */
                pa += blk_err(a, x, w);
                pb += blk_err(b, x, w);
            }
        }
        printf("  IQ2_K vs ik's rule (%s): %zu blocks equal, %zu better, %zu worse; weighted error %.4g vs %.4g "
               "(%.1f%% lower)", weighted ? "imatrix" : "no imatrix", same, better, worse, ea, eb, 100 * (1 - ea / eb));
        if (weighted) printf("; Σ w(x-q)² %.4g vs %.4g", pa, pb);
        printf("\n");
        CHECK_MSG(worse == 0, "%zu blocks with a higher weighted error than ik's rule", worse);
        CHECK(ea < eb);
    }
}

static void test_weighted_beats_plain(void)
{
    const int64_t n = 512;
    float x[512], y0[512], y1[512], w[512];
    double e0 = 0, e1 = 0;
    for (int r = 0; r < 24; r++) {
        for (int64_t i = 0; i < n; i++) {
            x[i] = (float)(nrand() * (1 + 2 * urand()));
            w[i] = (float)exp(3 * nrand());
        }
        rel_rmse(x, n, NULL, y0);
        rel_rmse(x, n, w, y1);
        for (int64_t i = 0; i < n; i++) {
            e0 += w[i] * (double)(x[i] - y0[i]) * (x[i] - y0[i]);
            e1 += w[i] * (double)(x[i] - y1[i]) * (x[i] - y1[i]);
        }
    }
    printf("  IQ2_K Σ w(x-q)² under skewed importances: %.4g weighted search, %.4g without\n", e1, e0);
    CHECK_MSG(e1 < 0.9 * e0, "weighted error %g with importances, %g without", e1, e0);
    /* dead importances (all zero, NaN, negative): the fallback weight 1 */
    float zero[256] = {0}, ones[256], bad[256];
    uint8_t q1[BB], q2[BB], q3[BB];
    for (int i = 0; i < 256; i++) { ones[i] = 1; bad[i] = i % 3 ? NAN : -1.0f; }
    moeq_ggml_quant_row(T, x, zero, q1, 256);
    moeq_ggml_quant_row(T, x, ones, q2, 256);
    moeq_ggml_quant_row(T, x, bad, q3, 256);
    CHECK(!memcmp(q1, q2, BB) && !memcmp(q2, q3, BB));
}

static void gemm_case(int64_t rows, int64_t cols, int64_t n, const char *variant, int *ran)
{
    size_t rb = moeq_ggml_row_bytes(T, cols);
    uint8_t *W = malloc(rb * rows);
    float *wf = malloc(rows * cols * 4), *X = malloc(n * cols * 4), *Y = malloc(n * rows * 4);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) wf[r * cols + c] = (float)nrand();
        moeq_ggml_quant_row(T, wf + r * cols, NULL, W + r * rb, cols);
        moeq_ggml_dequant_row(T, W + r * rb, wf + r * cols, cols);
    }
    for (int64_t i = 0; i < n * cols; i++) X[i] = (float)nrand();
    if (moeq_ggml_gemm_with(variant, T, W, rows, cols, X, n, Y)) {
        (*ran)++;
        double worst = 0;
        for (int64_t i = 0; i < n; i++)
            for (int64_t r = 0; r < rows; r++) {
                double s = 0, a = 0;
                for (int64_t c = 0; c < cols; c++) {
                    s += (double)wf[r * cols + c] * X[i * cols + c];
                    a += fabs((double)wf[r * cols + c] * X[i * cols + c]);
                }
                double e = fabs(Y[i * rows + r] - s) / (a + 1e-30);
                worst = e > worst ? e : worst;
            }
        double tol = strcmp(variant, "ref") ? 2e-6 * (1 + cols / 256.0) : 1.2e-7;
        CHECK_MSG(worst <= tol, "%s IQ2_K %lldx%lld n=%lld: relative error %g", variant, (long long)rows,
                  (long long)cols, (long long)n, worst);
    }
    free(W); free(wf); free(X); free(Y);
}

static void test_gemm(void)
{
    static const char *variants[] = {"ref", "avx2", "avx512"};
    static const int64_t R[] = {1, 3, 17}, N[] = {1, 5, 33};
    int ran = 0;
    for (int v = 0; v < 3; v++)
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) gemm_case(R[i], (i + j) % 2 ? 768 : 256, N[j], variants[v], &ran);
    CHECK(ran >= 9);
    /* X = identity: every variant decodes the scalar floats exactly; threads change nothing */
    const int64_t rows = 21, cols = 256;
    size_t rb = moeq_ggml_row_bytes(T, cols);
    uint8_t *W = malloc(rb * rows);
    float *wf = malloc(rows * cols * 4), *I = calloc(cols * cols, 4), *Y = malloc(cols * rows * 4);
    for (int64_t r = 0; r < rows; r++) {
        if (r % 3 == 2) {
            rand_block(W + r * rb);
        } else {
            for (int64_t c = 0; c < cols; c++) wf[r * cols + c] = (float)(nrand() * (1 + r));
            moeq_ggml_quant_row(T, wf + r * cols, NULL, W + r * rb, cols);
        }
        moeq_ggml_dequant_row(T, W + r * rb, wf + r * cols, cols);
    }
    for (int64_t c = 0; c < cols; c++) I[c * cols + c] = 1;
    for (int v = 0; v < 3; v++) {
        if (!moeq_ggml_gemm_with(variants[v], T, W, rows, cols, I, cols, Y)) continue;
        size_t bad = 0;
        for (int64_t c = 0; c < cols; c++)
            for (int64_t r = 0; r < rows; r++) bad += Y[c * rows + r] != wf[r * cols + c];
        CHECK_MSG(bad == 0, "%s: %zu decoded values differ from moeq_ggml_dequant_row", variants[v], bad);
    }
    free(W); free(wf); free(I); free(Y);
    const int64_t R2 = 300, C2 = 1024, n = 7;
    rb = moeq_ggml_row_bytes(T, C2);
    W = malloc(rb * R2);
    float *w = malloc(C2 * 4), *X = malloc(n * C2 * 4), *Y1 = malloc(n * R2 * 4), *Y2 = malloc(n * R2 * 4);
    for (int64_t r = 0; r < R2; r++) {
        for (int64_t c = 0; c < C2; c++) w[c] = (float)nrand();
        moeq_ggml_quant_row(T, w, NULL, W + r * rb, C2);
    }
    for (int64_t i = 0; i < n * C2; i++) X[i] = (float)nrand();
    omp_set_num_threads(1);
    moeq_ggml_gemm(T, W, R2, C2, X, n, Y1);
    omp_set_num_threads(2);
    moeq_ggml_gemm(T, W, R2, C2, X, n, Y2);
    CHECK(!memcmp(Y1, Y2, n * R2 * 4));
    free(W); free(w); free(X); free(Y1); free(Y2);
}

static void test_gptq(void)
{
    const int64_t rows = 48, cols = 512, ns = 1024;
    double *Xs = malloc(ns * cols * sizeof *Xs), *H = calloc(cols * cols, sizeof *H), *mix = malloc(cols * 8 * sizeof *mix);
    for (int64_t c = 0; c < cols * 8; c++) mix[c] = nrand();
    for (int64_t s = 0; s < ns; s++) {
        double z[8];
        for (int k = 0; k < 8; k++) z[k] = nrand();
        for (int64_t c = 0; c < cols; c++) {
            double v = 0.3 * nrand();
            for (int k = 0; k < 8; k++) v += mix[c * 8 + k] * z[k];
            Xs[s * cols + c] = v * (1 + (c % 7));
        }
    }
    for (int64_t s = 0; s < ns; s++)
        for (int64_t i = 0; i < cols; i++)
            for (int64_t j = 0; j < cols; j++) H[i * cols + j] += Xs[s * cols + i] * Xs[s * cols + j];
    float *w = malloc(rows * cols * 4), *wq = malloc(rows * cols * 4), *ws = malloc(rows * cols * 4), *imp = malloc(cols * 4);
    for (int64_t i = 0; i < rows * cols; i++) w[i] = (float)nrand();
    for (int64_t c = 0; c < cols; c++) imp[c] = (float)H[c * cols + c];
    size_t rb = moeq_ggml_row_bytes(T, cols);
    uint8_t *q = malloc(rb * rows), *q2 = malloc(rb * rows), *qs = malloc(rb * rows);
    moeq_gptq_opts o = {.damp = 0.01, .threads = 1};
    moeq_gptq_info info;
    moeq_error err;
    CHECK(moeq_ggml_gptq(T, w, rows, cols, H, &o, q, wq, &info, &err) == MOEQ_OK);
    CHECK(!info.rtn_fallback);
    for (int64_t r = 0; r < rows; r++) {
        moeq_ggml_quant_row(T, w + r * cols, imp, qs + r * rb, cols);
        moeq_ggml_dequant_row(T, qs + r * rb, ws + r * cols, cols);
    }
    double eg = moeq_hessian_error(w, wq, rows, cols, H), es = moeq_hessian_error(w, ws, rows, cols, H);
    printf("  IQ2_K Hessian-weighted error: GPTQ %.4g, weighted search alone %.4g (ratio %.3f)\n", eg, es, eg / es);
    CHECK_MSG(eg < 0.9 * es, "GPTQ output error %g, weighted search alone %g", eg, es);
    /* wq is the dequantization of the codes, bit for bit */
    float *y = malloc(rows * cols * 4);
    for (int64_t r = 0; r < rows; r++) moeq_ggml_dequant_row(T, q + r * rb, y + r * cols, cols);
    CHECK(!memcmp(y, wq, rows * cols * 4));
    free(y);
    /* threads do not change the bytes; act order works */
    o.threads = 2;
    CHECK(moeq_ggml_gptq(T, w, rows, cols, H, &o, q2, NULL, &info, &err) == MOEQ_OK);
    CHECK(!memcmp(q, q2, rb * rows));
    o.act_order = 1;
    CHECK(moeq_ggml_gptq(T, w, rows, cols, H, &o, q2, wq, &info, &err) == MOEQ_OK);
    double ea = moeq_hessian_error(w, wq, rows, cols, H);
    CHECK_MSG(ea < es, "act order GPTQ error %g, weighted search alone %g", ea, es);
    /* a dead expert: the weighted search with the fallback weight */
    double *Z = calloc(cols * cols, sizeof *Z);
    CHECK(moeq_ggml_gptq(T, w, rows, cols, Z, NULL, q, NULL, &info, &err) == MOEQ_OK && info.rtn_fallback);
    float ones[512];
    for (int c = 0; c < 512; c++) ones[c] = 1;
    moeq_ggml_quant_row(T, w, ones, q2, cols);
    CHECK(!memcmp(q, q2, rb));
    free(Z);
    free(q); free(q2); free(qs);
    free(Xs); free(H); free(mix); free(w); free(wq); free(ws); free(imp);
}

static void test_bad_input(void)
{
    moeq_codec c;
    moeq_error e;
    CHECK(moeq_codec_parse("iq2_k", &c, &e) == MOEQ_OK && c.type == MOEQ_CODEC_GGML && c.gtype == 137);
    CHECK(moeq_codec_parse("IQ2_K", &c, &e) == MOEQ_OK && c.gtype == 137);
    CHECK(moeq_codec_check(&c, 4, 512, &e) == MOEQ_OK);
    CHECK(moeq_codec_check(&c, 4, 96, &e) == MOEQ_ERR_UNSUPPORTED && strstr(e.detail, "IQ2_K") && strstr(e.detail, "q2g32s"));
    CHECK(moeq_codec_check(&c, 4, 100, &e) == MOEQ_ERR_UNSUPPORTED && strstr(e.detail, "256"));
    CHECK(moeq_codec_parse("iq2_kz", &c, &e) == MOEQ_ERR_MISUSE && strstr(e.detail, "iq2_k"));
    float x[512] = {0};
    uint8_t q[2 * BB];
    moeq_gptq_info info;
    CHECK(moeq_ggml_gptq(T, x, 1, 100, NULL, NULL, q, NULL, &info, &e) == MOEQ_ERR_MISUSE);
    CHECK(moeq_ggml_quantize_rows(T, x, 1, 384, NULL, q, &e) == MOEQ_ERR_MISUSE);
}

/* ---- vectors_ik.bin: ik_llama.cpp's own codes and floats (vectors.bin's layout) ------------ */

typedef gv_rec rec;

static void test_ik_vectors(void)
{
    uint8_t *buf;
    rec recs[64];
    const int nrec = gv_load(FIXTURES "/ggml/vectors_ik.bin", &buf, recs, 64);
    if (nrec == -1) {
        printf("  " FIXTURES "/ggml/vectors_ik.bin is not there: ik_llama.cpp's vectors not checked\n");
        return;
    }
    CHECK(nrec > 0);
    int dq = 0, qn = 0;
    for (int i = 0; i < nrec; i++) {
        const rec *r = &recs[i];
        if (r->kind < 2 || r->type != 137) continue;
        size_t rb = moeq_ggml_row_bytes(T, r->cols);
        if (r->has_deq) {
            size_t bad = 0;
            float *y = malloc((size_t)r->cols * 4);
            const uint8_t *deq = r->data + rb * r->rows;
            for (uint32_t k = 0; k < r->rows; k++) {
                moeq_ggml_dequant_row(T, r->data + k * rb, y, r->cols);
                bad += memcmp(y, deq + (size_t)k * r->cols * 4, (size_t)r->cols * 4) != 0;
            }
            CHECK_MSG(bad == 0, "kind %u set %u: %zu rows dequantize differently from ik_llama.cpp", r->kind, r->set, bad);
            free(y);
            dq++;
        }
        if (r->kind != 2 && r->kind != 3) continue;
        /* moeq's quantizer against ik's codes on the same rows: equal bytes or a lower error */
        const rec *in = NULL, *im = NULL;
        for (int j = 0; j < nrec; j++) {
            if (recs[j].kind == 0 && recs[j].set == r->set) in = &recs[j];
            if (recs[j].kind == 1 && recs[j].set == r->set) im = &recs[j];
        }
        CHECK(in && im);
        if (!in || !im) continue;
        const float *x = (const float *)(const void *)in->data, *imp = (const float *)(const void *)im->data;
        size_t same = 0, better = 0, worse = 0, rule_same = 0;
        double em = 0, ei = 0;
        uint8_t a[BB], b[BB];
        float wt[256];
        for (uint32_t k = 0; k < r->rows; k++) {
            const float *xr = x + (size_t)k * r->cols;
            const float *w = r->kind == 3 ? imp + (size_t)(k / (r->rows / r->experts)) * r->cols : NULL;
            for (uint32_t bl = 0; bl < r->cols / 256; bl++) {
                const float *xb = xr + 256 * bl, *wb = w ? w + 256 * bl : NULL;
                const uint8_t *ik = r->data + k * rb + BB * bl;
                gg_codec_get(T)->quant(xb, wb, a, 256);
                gg_iq2k_quant_ik(xb, wb, b, 256);
                rule_same += !memcmp(b, ik, BB);
                search_weights(xb, wb, wt);
                const double e1 = blk_err(a, xb, wt), e2 = blk_err(ik, xb, wt);
                em += e1;
                ei += e2;
                if (!memcmp(a, ik, BB)) same++;
                else if (e1 < e2) better++;
                else worse++;
            }
        }
        printf("  ik_llama.cpp IQ2_K %s set %u: moeq %zu blocks equal, %zu better, %zu worse (error %.4g vs %.4g); "
               "ik's rule in moeq gives ik's bytes in %zu of %zu blocks\n", r->kind == 3 ? "imatrix" : "plain", r->set,
               same, better, worse, em, ei, rule_same, same + better + worse);
        CHECK_MSG(worse == 0, "set %u: %zu blocks with a higher error than ik_llama.cpp's", r->set, worse);
        /* without an imatrix moeq's copy of ik's rule is ik's bytes exactly; with one, rows of
         * one constant value tie every split and the last bit of ik's (contracted) sums decides */
        if (r->kind == 2)
            CHECK_MSG(rule_same == same + better + worse, "set %u: ik's rule gives ik's bytes in %zu of %zu blocks", r->set,
                      rule_same, same + better + worse);
        qn++;
    }
    CHECK(dq >= 1);
    printf("  vectors_ik.bin: %d dequantization records, %d quantization records\n", dq, qn);
    free(buf);
}

int main(void)
{
    RUN_TEST(test_table);
    RUN_TEST(test_dequant_rule);
    RUN_TEST(test_grid);
    RUN_TEST(test_roundtrip);
    RUN_TEST(test_vs_ik_rule);
    RUN_TEST(test_weighted_beats_plain);
    RUN_TEST(test_gemm);
    RUN_TEST(test_gptq);
    RUN_TEST(test_bad_input);
    RUN_TEST(test_ik_vectors);
    HARNESS_EXIT();
}
