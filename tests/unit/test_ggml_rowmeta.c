/* ggml types with per-row metadata (ik_llama.cpp's row_meta_size) and IQ2_KS on them
 * (docs/GGML-TYPES.md "Row metadata", "IQ2_KS"): row sizes in the codec, GGUF and .moeq layers;
 * dequantization of random rows against a float64 decode written here from the format rule;
 * the quantizer's error (bound, against a plain search, weighted against unweighted); GPTQ on
 * the grid (wq = dequant of the bytes, lower Hessian-weighted error than the weighted search);
 * every matmul variant against a float64 product at awkward sizes; a .moeq pack and a GGUF file
 * round trip; the codec's shape errors and llama-quantize's fallback. With
 * tests/fixtures/ggml/vectors_ik_ks.bin present: ik_llama.cpp's own dequantized floats. */
#include "moeq_ggml.h"
#include "moeq_gguf.h"
#include "moeq_gguf_export.h"
#include "moeq_gptq.h"
#include "moeq_kernels.h"
#include "moeq_pack.h"
#include "harness.h"
#include "ggml_vectors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const int GRID[8] = {-31, -13, 1, 17, -26, -8, 6, 22};

static uint64_t rng = 0x2545f4914f6cdd1dull;
static double urand(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static double gauss(void)
{
    double s = 0;
    for (int i = 0; i < 12; i++) s += urand();
    return s - 6;
}

/* binary16 to double from the bit fields (no library conversion) */
static double half_to_double(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

/* the format rule, in float64: row = d (f16), then per 256 values extra u16 LE, scales[4], qs[64];
 * sub-block ib: ls = nibble ib%2 of scales[ib/2] | bit (8+ib) of extra << 4, half = bit ib of
 * extra, value j = d·(ls − 16)·GRID[4·half + ((qs[32·(ib/4) + j] >> 2·(ib%4)) & 3)] */
static void ref_decode(const uint8_t *row, int64_t n, double *y)
{
    const double d = half_to_double((uint16_t)(row[0] | row[1] << 8));
    for (int64_t i = 0; i < n / 256; i++) {
        const uint8_t *b = row + 2 + 70 * i;
        const unsigned extra = b[0] | b[1] << 8;
        for (int ib = 0; ib < 8; ib++) {
            const int ls = ((b[2 + ib / 2] >> (4 * (ib % 2))) & 15) | (((extra >> (8 + ib)) & 1) << 4);
            const int half = (extra >> ib) & 1;
            for (int j = 0; j < 32; j++) {
                const int q = (b[6 + 32 * (ib / 4) + j] >> (2 * (ib % 4))) & 3;
                y[256 * i + 32 * ib + j] = d * (ls - 16) * GRID[4 * half + q];
            }
        }
    }
}

static void test_layout(void)
{
    const moeq_ggml_type_info *t = moeq_ggml_type_get(145);
    CHECK(t && t->type == MOEQ_GGML_IQ2_KS && !strcmp(t->name, "IQ2_KS") && t->block == 256 && t->bytes == 70 &&
          t->row_meta == 2);
    CHECK(moeq_ggml_type_by_name("iq2_ks") == t);
    CHECK(moeq_ggml_type_get(MOEQ_GGML_Q4_K)->row_meta == 0);
    CHECK(moeq_ggml_row_bytes(MOEQ_GGML_IQ2_KS, 256) == 72 && moeq_ggml_row_bytes(MOEQ_GGML_IQ2_KS, 768) == 212);
    CHECK(moeq_ggml_row_bytes(MOEQ_GGML_IQ2_KS, 96) == 0 && moeq_ggml_row_bytes(MOEQ_GGML_IQ2_KS, 0) == 0);
    const moeq_gguf_type *g = moeq_gguf_type_get(145);
    CHECK(g && !strcmp(g->name, "IQ2_KS") && g->block == 256 && g->bytes == 70 && g->row_meta == 2);
    CHECK(moeq_gguf_type_get(12)->row_meta == 0);
    CHECK(moeq_gguf_row_bytes(145, 512) == 142 && moeq_gguf_row_bytes(145, 100) == 0);
    CHECK(moeq_gguf_type_computable(145));
}

/* random rows (a random finite row scale, random blocks) against the float64 rule: every
 * product is exact in float32, so the floats equal the doubles */
static void test_dequant(void)
{
    enum { N = 768 };
    uint8_t row[2 + 3 * 70];
    float y[N];
    double r[N];
    for (int it = 0; it < 200; it++) {
        for (size_t k = 0; k < sizeof row; k++) row[k] = (uint8_t)(urand() * 256);
        uint16_t h = (uint16_t)(urand() * 65536);
        if (((h >> 10) & 31) == 31) h &= 0xbfff;   /* finite */
        if (it == 0) h = 0;
        row[0] = (uint8_t)h;
        row[1] = (uint8_t)(h >> 8);
        moeq_ggml_dequant_row(MOEQ_GGML_IQ2_KS, row, y, N);
        ref_decode(row, N, r);
        int bad = 0;
        for (int j = 0; j < N; j++) bad += !((double)y[j] == r[j] || (y[j] == 0 && r[j] == 0));
        CHECK_MSG(!bad, "row %d: %d values differ", it, bad);
    }
}

static void fill(float *x, int64_t n, int outliers)
{
    for (int64_t j = 0; j < n; j++) x[j] = (float)(gauss() * (1 + (j % 97 == 0) * 4 * outliers));
}

/* the weights the search uses without importances, per 256 (sigma² / 4 + x²) */
static void plain_weights(const float *x, int64_t n, double *w)
{
    for (int64_t i = 0; i < n / 256; i++) {
        float s = 0;
        for (int j = 0; j < 256; j++) s += x[256 * i + j] * x[256 * i + j];
        const double sigma2 = 1.5 * s / 256;
        for (int j = 0; j < 256; j++) w[256 * i + j] = 0.25 * sigma2 + (double)x[256 * i + j] * x[256 * i + j];
    }
}

static double werr(const float *x, const double *q, const double *w, int64_t n)
{
    double e = 0;
    for (int64_t j = 0; j < n; j++) e += w[j] * (x[j] - q[j]) * (x[j] - q[j]);
    return e;
}

/* a plain search: each sub-block's scale max|x| / 31, the row scale max / 15, the sub-block
 * scales rounded to it, the unshifted half, nearest codes */
static void plain_quant(const float *x, int64_t n, uint8_t *row)
{
    const int64_t ns = n / 32;
    double *s = malloc((size_t)ns * sizeof *s), smax = 0;
    for (int64_t k = 0; k < ns; k++) {
        double m = 0;
        for (int j = 0; j < 32; j++) m = fabs(x[32 * k + j]) > m ? fabs(x[32 * k + j]) : m;
        s[k] = m / 31;
        smax = s[k] > smax ? s[k] : smax;
    }
    memset(row, 0, 2 + (size_t)(n / 256) * 70);
    uint16_t hb = moeq_f32_to_f16((float)(smax / 15));
    row[0] = (uint8_t)hb;
    row[1] = (uint8_t)(hb >> 8);
    const double d = half_to_double(hb);
    for (int64_t k = 0; k < ns; k++) {
        uint8_t *b = row + 2 + 70 * (k / 8);
        const int ib = (int)(k % 8);
        int l = d > 0 ? (int)lround(s[k] / d) : 0;
        l = l > 15 ? 15 : l;
        const int ls = l + 16;
        b[2 + ib / 2] |= (uint8_t)((ls & 15) << (4 * (ib % 2)));
        b[1] |= (uint8_t)((ls >> 4) << ib);   /* extra bit 8 + ib */
        for (int j = 0; j < 32; j++) {
            int bq = 0;
            for (int q = 1; q < 4; q++)
                if (fabs(x[32 * k + j] - d * l * GRID[q]) < fabs(x[32 * k + j] - d * l * GRID[bq])) bq = q;
            b[6 + 32 * (ib / 4) + j] |= (uint8_t)(bq << (2 * (ib % 4)));
        }
    }
    free(s);
}

static void test_quant(void)
{
    enum { N = 2048 };
    static float x[N], imp[N], y[N];
    static double q[N], w[N], wi[N];
    static uint8_t row[2 + 8 * 70], row2[2 + 8 * 70];
    double rel[2] = { 0, 0 }, wins = 0;
    for (int it = 0; it < 8; it++) {
        fill(x, N, it & 1);
        moeq_ggml_quant_row(MOEQ_GGML_IQ2_KS, x, NULL, row, N);
        moeq_ggml_quant_row(MOEQ_GGML_IQ2_KS, x, NULL, row2, N);
        CHECK(!memcmp(row, row2, sizeof row));   /* deterministic */
        moeq_ggml_dequant_row(MOEQ_GGML_IQ2_KS, row, y, N);
        ref_decode(row, N, q);
        double e = 0, s = 0;
        for (int j = 0; j < N; j++) {
            CHECK(y[j] == (float)q[j]);
            e += (x[j] - q[j]) * (x[j] - q[j]);
            s += (double)x[j] * x[j];
        }
        rel[it & 1] = sqrt(e / s) > rel[it & 1] ? sqrt(e / s) : rel[it & 1];
        /* against the plain search, in the search's own weights */
        plain_weights(x, N, w);
        double eq = werr(x, q, w, N);
        plain_quant(x, N, row2);
        ref_decode(row2, N, q);
        double ep = werr(x, q, w, N);
        CHECK_MSG(eq <= ep, "it %d: weighted error %.6g above the plain search's %.6g", it, eq, ep);
        /* skewed importances: the weighted search wins in the importance-weighted error */
        for (int j = 0; j < N; j++) {
            imp[j] = (float)(urand() < 0.1 ? 50 + 50 * urand() : 0.01 + 0.1 * urand());
            wi[j] = imp[j];
        }
        moeq_ggml_quant_row(MOEQ_GGML_IQ2_KS, x, imp, row2, N);
        ref_decode(row2, N, q);
        double ew = werr(x, q, wi, N);
        ref_decode(row, N, q);
        double eu = werr(x, q, wi, N);
        CHECK_MSG(ew < eu, "it %d: weighted %.6g not below unweighted %.6g", it, ew, eu);
        wins += eu / ew;
    }
    /* 2.19 bits: about 0.32 relative RMS error on Gaussian rows (Q2_K 0.29); rows with 5x outliers
     * lose more (0.47, Q2_K 0.32): one row scale, sub-block scales of 5 bits under it */
    CHECK_MSG(rel[0] < 0.35 && rel[1] < 0.5, "relative RMS error %.4f, %.4f with outliers", rel[0], rel[1]);
    printf("  IQ2_KS: worst relative RMS error %.4f (%.4f with outliers), unweighted/weighted importance error %.2f\n",
           rel[0], rel[1], wins / 8);
    /* an all-zero row decodes to zeros */
    memset(x, 0, sizeof x);
    moeq_ggml_quant_row(MOEQ_GGML_IQ2_KS, x, NULL, row, N);
    moeq_ggml_dequant_row(MOEQ_GGML_IQ2_KS, row, y, N);
    int nz = 0;
    for (int j = 0; j < N; j++) nz += y[j] != 0;
    CHECK(!nz);
}

/* tr((W − Q) H (W − Q)ᵀ) */
static double herr(const float *w, const float *q, const double *H, int64_t rows, int64_t cols)
{
    double s = 0;
    double *e = malloc((size_t)cols * sizeof *e);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = 0; i < cols; i++) e[i] = (double)w[r * cols + i] - q[r * cols + i];
        for (int64_t i = 0; i < cols; i++) {
            double t = 0;
            for (int64_t j = 0; j < cols; j++) t += H[i * cols + j] * e[j];
            s += e[i] * t;
        }
    }
    free(e);
    return s;
}

static void test_gptq(void)
{
    enum { R = 24, C = 512, T = 1024 };
    float *w = malloc(sizeof(float) * R * C), *x = malloc(sizeof(float) * T * C);
    float *wq = malloc(sizeof(float) * R * C), *dq = malloc(sizeof(float) * R * C);
    double *H = calloc((size_t)C * C, sizeof *H), *d = malloc(sizeof(double) * C);
    const size_t rb = moeq_ggml_row_bytes(MOEQ_GGML_IQ2_KS, C);
    uint8_t *dst = malloc(rb * R), *rtn = malloc(rb * R);
    fill(w, R * C, 1);
    /* correlated inputs with uneven column scales */
    for (int t = 0; t < T; t++) {
        double z = gauss();
        for (int i = 0; i < C; i++) x[t * C + i] = (float)((0.6 * z + gauss()) * (0.2 + (i % 7) * 0.4));
    }
    for (int t = 0; t < T; t++)
        for (int i = 0; i < C; i++)
            for (int j = 0; j < C; j++) H[i * C + j] += (double)x[t * C + i] * x[t * C + j];
    for (int i = 0; i < C; i++) d[i] = H[i * C + i];
    moeq_error e;
    CHECK(moeq_ggml_quantize_rows(MOEQ_GGML_IQ2_KS, w, R, C, d, rtn, &e) == MOEQ_OK);
    for (int r = 0; r < R; r++) moeq_ggml_dequant_row(MOEQ_GGML_IQ2_KS, rtn + rb * r, dq + r * C, C);
    const double e_rtn = herr(w, dq, H, R, C);
    for (int ao = 0; ao <= 1; ao++) {
        moeq_gptq_opts o = { .damp = 0.01, .act_order = ao, .threads = 2 };
        moeq_gptq_info info;
        CHECK_MSG(moeq_ggml_gptq(MOEQ_GGML_IQ2_KS, w, R, C, H, &o, dst, wq, &info, &e) == MOEQ_OK, "%s", e.detail);
        CHECK(!info.rtn_fallback);
        for (int r = 0; r < R; r++) moeq_ggml_dequant_row(MOEQ_GGML_IQ2_KS, dst + rb * r, dq + r * C, C);
        CHECK(!memcmp(wq, dq, sizeof(float) * R * C));
        const double e_g = herr(w, wq, H, R, C);
        CHECK_MSG(e_g < e_rtn, "act_order %d: GPTQ %.6g not below the weighted search %.6g", ao, e_g, e_rtn);
        printf("  IQ2_KS GPTQ (act_order %d): Hessian error %.4g vs weighted search %.4g\n", ao, e_g, e_rtn);
        /* the thread count does not change the bytes */
        uint8_t *dst1 = malloc(rb * R);
        o.threads = 1;
        CHECK(moeq_ggml_gptq(MOEQ_GGML_IQ2_KS, w, R, C, H, &o, dst1, NULL, NULL, &e) == MOEQ_OK);
        CHECK(!memcmp(dst, dst1, rb * R));
        free(dst1);
    }
    /* no Hessian: the weighted search with weight 1, wq still its dequantization */
    moeq_gptq_info info;
    moeq_gptq_opts o = { .damp = 0.01 };
    CHECK(moeq_ggml_gptq(MOEQ_GGML_IQ2_KS, w, R, C, NULL, &o, dst, wq, &info, &e) == MOEQ_OK && info.rtn_fallback);
    for (int r = 0; r < R; r++) moeq_ggml_dequant_row(MOEQ_GGML_IQ2_KS, dst + rb * r, dq + r * C, C);
    CHECK(!memcmp(wq, dq, sizeof(float) * R * C));
    CHECK(moeq_ggml_gptq(MOEQ_GGML_IQ2_KS, w, 2, 96, NULL, &o, dst, wq, &info, &e) == MOEQ_ERR_MISUSE);
    free(w); free(x); free(wq); free(dq); free(H); free(d); free(dst); free(rtn);
}

static void test_gemm(void)
{
    static const int rows_[] = {1, 3, 17}, toks[] = {1, 5, 33}, colsv[] = {256, 768};
    static const char *const var[] = {"ref", "avx2", "avx512"};
    int ran = 0;
    for (size_t ci = 0; ci < 2; ci++)
        for (size_t ri = 0; ri < 3; ri++)
            for (size_t ti = 0; ti < 3; ti++) {
                const int64_t R = rows_[ri], C = colsv[ci], n = toks[ti];
                const size_t rb = moeq_ggml_row_bytes(MOEQ_GGML_IQ2_KS, C);
                float *w = malloc(sizeof(float) * R * C), *X = malloc(sizeof(float) * n * C);
                float *Y = malloc(sizeof(float) * n * R);
                double *wd = malloc(sizeof(double) * C);
                uint8_t *W = malloc(rb * R);
                fill(w, R * C, 1);
                for (int64_t j = 0; j < n * C; j++) X[j] = (float)gauss();
                moeq_error e;
                moeq_ggml_quantize_rows(MOEQ_GGML_IQ2_KS, w, R, C, NULL, W, &e);
                /* the float64 product of the decoded weights */
                double *ref = malloc(sizeof(double) * n * R), *mag = malloc(sizeof(double) * n * R);
                for (int64_t r = 0; r < R; r++) {
                    ref_decode(W + rb * r, C, wd);
                    for (int64_t i = 0; i < n; i++) {
                        double s = 0, m = 0;
                        for (int64_t k = 0; k < C; k++) {
                            s += wd[k] * X[i * C + k];
                            m += fabs(wd[k] * X[i * C + k]);
                        }
                        ref[i * R + r] = s;
                        mag[i * R + r] = m;
                    }
                }
                for (size_t v = 0; v < 3; v++) {
                    for (int64_t j = 0; j < n * R; j++) Y[j] = NAN;
                    if (!moeq_ggml_gemm_with(var[v], MOEQ_GGML_IQ2_KS, W, R, C, X, n, Y)) continue;
                    ran |= 1 << v;
                    int bad = 0;
                    for (int64_t j = 0; j < n * R; j++) bad += !(fabs(Y[j] - ref[j]) <= 1e-5 * mag[j] + 1e-30);
                    CHECK_MSG(!bad, "%s rows %lld cols %lld tokens %lld: %d outputs off", var[v], (long long)R,
                              (long long)C, (long long)n, bad);
                }
                free(w); free(X); free(Y); free(wd); free(W); free(ref); free(mag);
            }
    CHECK(ran & 1);
    printf("  IQ2_KS matmul variants tested:%s%s%s\n", ran & 1 ? " ref" : "", ran & 2 ? " avx2" : "", ran & 4 ? " avx512" : "");
}

static const char CONFIG[] = "{\"model_type\":\"qwen3_moe\",\"hidden_size\":256,\"num_hidden_layers\":1,"
                             "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":1024,"
                             "\"intermediate_size\":256,\"moe_intermediate_size\":256,\"num_experts\":2,"
                             "\"num_experts_per_tok\":1,\"rms_norm_eps\":1e-6,\"head_dim\":64}";

static void test_codec(void)
{
    moeq_codec c;
    moeq_error e;
    char buf[32];
    CHECK(moeq_codec_parse("iq2_ks", &c, &e) == MOEQ_OK && c.type == MOEQ_CODEC_GGML && c.gtype == MOEQ_GGML_IQ2_KS);
    moeq_codec_format(&c, buf, sizeof buf);
    CHECK(!strcmp(buf, "iq2_ks"));
    CHECK(moeq_codec_parse("IQ2_KS", &c, &e) == MOEQ_OK && c.gtype == MOEQ_GGML_IQ2_KS);
    /* 2.1875 bits plus the f16 row scale over the row */
    CHECK_NEAR(moeq_codec_bpw(&c, 512), 2.1875 + 16.0 / 512, 1e-12);
    CHECK(moeq_codec_raw_bytes(&c, 3, 512) == 3 * 142);
    CHECK(moeq_codec_check(&c, 3, 768, &e) == MOEQ_OK);
    CHECK(moeq_codec_check(&c, 3, 96, &e) == MOEQ_ERR_UNSUPPORTED && strstr(e.detail, "IQ2_KS") &&
          strstr(e.detail, "q2g32s"));
    CHECK(moeq_codec_check(&c, 3, 100, &e) == MOEQ_ERR_UNSUPPORTED && strstr(e.detail, "no matrix codec"));
    CHECK(moeq_codec_check(&c, 3, 1000, &e) == MOEQ_ERR_UNSUPPORTED);
    CHECK(moeq_codec_raw_bytes(&c, 3, 96) == 0);
    CHECK(moeq_gguf_fallback_type(145, 96) == 20 && moeq_gguf_fallback_type(145, 512) == 145);
    CHECK(moeq_gguf_fallback_type(145, 100) == 1);

    /* .moeq pack round trip of a [5, 768] matrix */
    char dir[] = "/tmp/moeq_test_rowmeta_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[128];
    snprintf(path, sizeof path, "%s/a.moeq", dir);
    enum { R = 5, C = 768 };
    float *x = malloc(sizeof(float) * R * C), *a = malloc(sizeof(float) * R * C), *b = malloc(sizeof(float) * R * C);
    fill(x, R * C, 1);
    const uint64_t rb = moeq_codec_raw_bytes(&c, R, C);
    uint8_t *raw = malloc((size_t)rb);
    CHECK(moeq_ggml_quantize_rows(MOEQ_GGML_IQ2_KS, x, R, C, NULL, raw, &e) == MOEQ_OK);
    int64_t shape[2] = { R, C };
    moeq_pack_writer *w = NULL;
    CHECK(moeq_pack_writer_open(path, 3, &w, &e) == MOEQ_OK);
    CHECK(moeq_pack_write_file(w, "config.json", CONFIG, sizeof CONFIG - 1, &e) == MOEQ_OK);
    CHECK(moeq_pack_write_source(w, "w", MOEQ_DT_BF16, 2, shape, &e) == MOEQ_OK);
    CHECK(moeq_pack_write_tensor(w, "w", 2, shape, &c, "w", 0, raw, (size_t)rb - 1, NULL, &e) == MOEQ_ERR_MISUSE);
    CHECK(moeq_pack_write_tensor(w, "w", 2, shape, &c, "w", 0, raw, (size_t)rb, NULL, &e) == MOEQ_OK);
    CHECK(moeq_pack_writer_finish(w, NULL, &e) == MOEQ_OK);
    moeq_pack *p = NULL;
    CHECK_MSG(moeq_pack_open(path, &p, &e) == MOEQ_OK, "%s", e.detail);
    if (p) {
        CHECK(moeq_pack_verify(p, &e) == MOEQ_OK);
        const moeq_pack_tensor *t = moeq_pack_find(p, "w");
        CHECK(t && t->codec.type == MOEQ_CODEC_GGML && t->codec.gtype == MOEQ_GGML_IQ2_KS);
        if (t) {
            CHECK(t->blob.raw_size == rb && !memcmp(t->data, raw, (size_t)rb));
            /* rows 1..3 alone: each row's meta found at its own start */
            moeq_codec_dequant(&t->codec, t->data, R, C, 1, 4, a);
            for (int r = 1; r < 4; r++) moeq_ggml_dequant_row(MOEQ_GGML_IQ2_KS, raw + (rb / R) * r, b + (r - 1) * C, C);
            CHECK(!memcmp(a, b, sizeof(float) * 3 * C));
        }
        moeq_pack_close(p);
    }

    /* GGUF round trip: [3, 512] IQ2_KS then an F32 vector (the offsets after a row-meta tensor) */
    snprintf(path, sizeof path, "%s/a.gguf", dir);
    moeq_gguf_writer *gw = NULL;
    CHECK(moeq_gguf_writer_create(path, &gw, &e) == MOEQ_OK);
    const int64_t ne[2] = { 512, 3 }, ne_v[1] = { 5 };
    const size_t grb = moeq_ggml_row_bytes(MOEQ_GGML_IQ2_KS, 512);
    uint8_t *g3 = malloc(3 * grb);
    CHECK(moeq_ggml_quantize_rows(MOEQ_GGML_IQ2_KS, x, 3, 512, NULL, g3, &e) == MOEQ_OK);
    const float vec[5] = { 1, 2, 3, 4, 5 };
    CHECK(!moeq_gguf_w_str(gw, "general.architecture", "qwen3moe", 8));
    CHECK(!moeq_gguf_w_tensor(gw, "m", 2, ne, 145, &e));
    CHECK(!moeq_gguf_w_tensor(gw, "v", 1, ne_v, 0, &e));
    CHECK(moeq_gguf_w_tensor(gw, "bad", 1, ne_v, 145, &e) == MOEQ_ERR_MISUSE);
    CHECK(!moeq_gguf_w_begin_data(gw, &e));
    CHECK(!moeq_gguf_w_data(gw, g3, 3 * grb, &e));
    CHECK(!moeq_gguf_w_data(gw, vec, sizeof vec, &e));
    CHECK(!moeq_gguf_writer_finish(gw, NULL, &e));
    moeq_gguf_writer_free(gw);
    moeq_gguf *g = NULL;
    CHECK_MSG(moeq_gguf_open(path, &g, &e) == MOEQ_OK, "%s", e.detail);
    if (g) {
        const moeq_gguf_tensor *m = moeq_gguf_find_tensor(g, "m"), *v = moeq_gguf_find_tensor(g, "v");
        CHECK(m && m->type == 145 && m->nbytes == 3 * 142 && !memcmp(m->data, g3, 3 * grb));
        CHECK(v && v->nbytes == 20 && !memcmp(v->data, vec, sizeof vec));
        CHECK(moeq_gguf_check_finite(g, &e) == MOEQ_OK);
        if (m) {
            moeq_gguf_row_to_f32(145, (const uint8_t *)m->data + grb, a, 512);
            moeq_ggml_dequant_row(MOEQ_GGML_IQ2_KS, g3 + grb, b, 512);
            CHECK(!memcmp(a, b, sizeof(float) * 512));
        }
        moeq_gguf_close(g);
    }
    free(g3); free(x); free(a); free(b); free(raw);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

/* tests/fixtures/ggml/vectors_ik_ks.bin (make_vectors.py gen-ik / run-ik / pack-ik): ik_llama.cpp's
 * IQ2_KS codes of float rows (kind 3) and random rows (kind 4), each with ik's F32 of them, which
 * moeq's dequantization must give bit for bit */
static void test_ik_vectors(void)
{
    uint8_t *buf;
    gv_rec recs[64];
    const int nrec = gv_load(FIXTURES "/ggml/vectors_ik_ks.bin", &buf, recs, 64);
    if (nrec == -1) {
        printf("  vectors_ik_ks.bin absent: ik_llama.cpp's floats not checked (docs/GGML-TYPES.md)\n");
        return;
    }
    CHECK(nrec > 0);
    int checked = 0;
    const float *in[3] = { NULL, NULL, NULL }, *im[3] = { NULL, NULL, NULL };   /* rows, imatrix per set */
    for (int i = 0; i < nrec; i++) {
        const uint32_t h[7] = { recs[i].kind, recs[i].type, recs[i].set, recs[i].rows, recs[i].cols, recs[i].has_deq,
                                recs[i].experts };
        const uint32_t kind = h[0], type = h[1], rows = h[3], cols = h[4], has_deq = h[5];
        const uint8_t *d = recs[i].data;
        if (kind < 2 && h[2] < 3) (kind ? im : in)[h[2]] = (const float *)(const void *)d;
        if (kind >= 2) {
            const size_t rb = moeq_ggml_row_bytes((moeq_ggml_type)type, cols);
            CHECK(type == MOEQ_GGML_IQ2_KS && rb);
            if (has_deq) {
                float *y = malloc((size_t)cols * sizeof *y);
                int bad = 0;
                for (uint32_t r = 0; r < rows; r++) {
                    moeq_ggml_dequant_row(MOEQ_GGML_IQ2_KS, d + r * rb, y, cols);
                    bad += memcmp(y, d + rows * rb + (size_t)r * cols * 4, (size_t)cols * 4) != 0;
                }
                CHECK_MSG(!bad, "record %d (kind %u): %d rows differ from ik_llama.cpp's floats", i, kind, bad);
                checked += (int)rows;
                /* ik's codes of the float rows with the imatrix against moeq's weighted search, in
                 * the importance-weighted squared error */
                const uint32_t s = h[2], ex = h[6] ? h[6] : 1;
                if (kind == 3 && s < 3 && in[s] && im[s]) {
                    uint8_t *q = malloc(rb);
                    double e_ik = 0, e_mq = 0;
                    for (uint32_t r = 0; r < rows; r++) {
                        const float *x = in[s] + (size_t)r * cols, *imp = im[s] + (size_t)(r / (rows / ex)) * cols;
                        const float *yi = (const float *)(const void *)(d + rows * rb) + (size_t)r * cols;
                        moeq_ggml_quant_row(MOEQ_GGML_IQ2_KS, x, imp, q, cols);
                        moeq_ggml_dequant_row(MOEQ_GGML_IQ2_KS, q, y, cols);
                        for (uint32_t c = 0; c < cols; c++) {
                            e_ik += (double)imp[c] * ((double)x[c] - yi[c]) * ((double)x[c] - yi[c]);
                            e_mq += (double)imp[c] * ((double)x[c] - y[c]) * ((double)x[c] - y[c]);
                        }
                    }
                    printf("  set %u: imatrix-weighted error moeq / ik_llama.cpp %.4f\n", s, e_ik > 0 ? e_mq / e_ik : 0.0);
                    CHECK_MSG(e_mq <= 1.1 * e_ik, "set %u: moeq %.6g vs ik %.6g", s, e_mq, e_ik);
                    free(q);
                }
                free(y);
            }
        }
    }
    CHECK(checked > 0);
    printf("  ik_llama.cpp's IQ2_KS floats: %d rows reproduced bit for bit\n", checked);
    free(buf);
}

int main(void)
{
    RUN_TEST(test_layout);
    RUN_TEST(test_dequant);
    RUN_TEST(test_quant);
    RUN_TEST(test_gptq);
    RUN_TEST(test_gemm);
    RUN_TEST(test_codec);
    RUN_TEST(test_ik_vectors);
    HARNESS_EXIT();
}
