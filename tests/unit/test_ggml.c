/* ggml block types (kernels/ggml/, quant/ggml_gptq.c): dequantization and reference
 * quantization against vectors made by a real llama.cpp (tests/fixtures/ggml/vectors.bin,
 * docs/GGML-TYPES.md "Test vectors"), the weighted quantizers against llama.cpp with an
 * imatrix, round-trip error bounds, the weighted search beating the plain one under skewed
 * importances, every matmul variant against a float64 brute force at awkward sizes, and GPTQ on
 * the block grids against the weighted search alone. */
#include "harness.h"
#include "ggml_vectors.h"
#include "moeq_core.h"
#include "moeq_ggml.h"
#include "moeq_gptq.h"

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

static const moeq_ggml_type QTYPES[] = {MOEQ_GGML_Q4_0, MOEQ_GGML_Q4_1, MOEQ_GGML_Q5_0, MOEQ_GGML_Q5_1,
                                        MOEQ_GGML_Q8_0, MOEQ_GGML_Q2_K, MOEQ_GGML_Q3_K, MOEQ_GGML_Q4_K,
                                        MOEQ_GGML_Q5_K, MOEQ_GGML_Q6_K, MOEQ_GGML_IQ4_NL, MOEQ_GGML_IQ4_XS};
#define NQ (int)(sizeof QTYPES / sizeof QTYPES[0])

/* ---- vectors.bin --------------------------------------------------------------------------- */

typedef gv_rec rec;

static uint8_t *vec_buf;
static rec recs[256];
static int nrec;

static int load_vectors(void)
{
    nrec = gv_load(FIXTURES "/ggml/vectors.bin", &vec_buf, recs, 256);
    uint32_t n = 0;
    if (nrec > 0) memcpy(&n, vec_buf + 8, 4);
    return nrec > 0 && nrec == (int)n;
}

static const rec *find(uint32_t kind, uint32_t set)
{
    for (int i = 0; i < nrec; i++)
        if (recs[i].kind == kind && recs[i].set == set) return &recs[i];
    return NULL;
}

/* dequantization of llama.cpp's codes and of random blocks equals llama.cpp's floats bit for bit */
static void test_vectors_dequant(void)
{
    int checked = 0;
    for (int i = 0; i < nrec; i++) {
        const rec *r = &recs[i];
        if ((r->kind != 2 && r->kind != 4) || !r->has_deq) continue;
        size_t rb = moeq_ggml_row_bytes(r->type, r->cols), n = (size_t)r->rows * r->cols;
        float *y = malloc(n * 4);
        for (uint32_t k = 0; k < r->rows; k++) moeq_ggml_dequant_row(r->type, r->data + k * rb, y + (size_t)k * r->cols, r->cols);
        const uint8_t *ref = r->data + r->rows * rb;
        size_t bad = 0;
        for (size_t k = 0; k < n; k++) bad += memcmp(y + k, ref + 4 * k, 4) != 0;
        CHECK_MSG(bad == 0, "%s kind %u set %u: %zu of %zu values differ from llama.cpp", r->name, r->kind, r->set, bad, n);
        free(y);
        checked++;
    }
    CHECK_MSG(checked >= 2 * NQ + 2, "only %d dequantization vectors", checked);
}

/* MXFP4: llama.cpp's quantizer takes e0 = floor(log2 amax) - 2 + 127 for every block and ignores
 * the imatrix; moeq picks the exponent of least (weighted) squared error. Every block of moeq's is
 * llama.cpp's bytes, or strictly better by that error; with the imatrix llama.cpp's codes are its
 * reference ones. */
static double mx_block_err(const uint8_t *blk, const float *x, const float *w)
{
    float y[32];
    moeq_ggml_dequant_row(MOEQ_GGML_MXFP4, blk, y, 32);
    double e = 0;
    for (int j = 0; j < 32; j++) e += (w ? w[j] : 1.0) * ((double)x[j] - y[j]) * ((double)x[j] - y[j]);
    return e;
}

static void mxfp4_vs_llama(const rec *r, const rec *in, const rec *im)
{
    const float *x = (const float *)(const void *)in->data, *imp = (const float *)(const void *)im->data;
    size_t rb = moeq_ggml_row_bytes(MOEQ_GGML_MXFP4, r->cols), nb = r->cols / 32;
    const uint8_t *ref = r->data;
    if (r->kind == 3) {
        const rec *plain = NULL;
        for (int j = 0; j < nrec; j++)
            if (recs[j].kind == 2 && recs[j].type == r->type && recs[j].set == r->set) plain = &recs[j];
        CHECK_MSG(plain && !memcmp(plain->data, r->data, rb * r->rows), "MXFP4 set %u: llama.cpp's imatrix codes are not "
                  "its reference codes", r->set);
    }
    uint8_t *q = malloc(rb);
    size_t same = 0, better = 0, worse = 0;
    for (uint32_t k = 0; k < r->rows; k++) {
        const float *xr = x + (size_t)k * r->cols;
        const float *w = r->kind == 3 ? imp + (size_t)(k / (r->rows / r->experts)) * r->cols : NULL;
        moeq_ggml_quant_row(MOEQ_GGML_MXFP4, xr, w, q, r->cols);
        for (size_t b = 0; b < nb; b++) {
            const uint8_t *mb = q + 17 * b, *lb = ref + k * rb + 17 * b;
            if (!memcmp(mb, lb, 17)) { same++; continue; }
            /* the weighted search sees the cleaned importances (all > 0): compare by the raw ones */
            double em = mx_block_err(mb, xr + 32 * b, w ? w + 32 * b : NULL);
            double el = mx_block_err(lb, xr + 32 * b, w ? w + 32 * b : NULL);
            if (em < el) better++;
            else worse++;
        }
    }
    CHECK_MSG(worse == 0, "MXFP4 %s set %u: %zu blocks differ from llama.cpp's without a lower error (%zu equal, %zu "
              "better)", r->kind == 3 ? "imatrix" : "reference", r->set, worse, same, better);
    CHECK_MSG(same > 0, "MXFP4 set %u: no block equals llama.cpp's", r->set);
    free(q);
}

/* quantization without weights = llama.cpp's reference quantizer; with its imatrix = its
 * weighted quantizer: the same bytes */
static void test_vectors_quant(void)
{
    int checked = 0;
    for (int i = 0; i < nrec; i++) {
        const rec *r = &recs[i];
        if (r->kind != 2 && r->kind != 3) continue;
        const rec *in = find(0, r->set), *im = find(1, r->set);
        if (r->kind == 3 && r->type == MOEQ_GGML_Q8_0) {
            /* llama.cpp ignores the imatrix for Q8_0 (its codes are the reference ones); moeq's
             * weighted Q8_0 search is its own, tested by test_weighted_beats_plain */
            const rec *ref = NULL;
            for (int j = 0; j < nrec; j++)
                if (recs[j].kind == 2 && recs[j].type == r->type && recs[j].set == r->set) ref = &recs[j];
            CHECK(ref && !memcmp(ref->data, r->data, moeq_ggml_row_bytes(r->type, r->cols) * r->rows));
            continue;
        }
        CHECK(in && im);
        if (!in || !im) continue;
        if (r->type == MOEQ_GGML_MXFP4) {
            mxfp4_vs_llama(r, in, im);
            checked++;
            continue;
        }
        size_t rb = moeq_ggml_row_bytes(r->type, r->cols);
        uint8_t *q = malloc(rb * r->rows);
        const float *x = (const float *)(const void *)in->data, *imp = (const float *)(const void *)im->data;
        for (uint32_t k = 0; k < r->rows; k++) {
            const float *w = r->kind == 3 ? imp + (size_t)(k / (r->rows / r->experts)) * r->cols : NULL;
            moeq_ggml_quant_row(r->type, x + (size_t)k * r->cols, w, q + k * rb, r->cols);
        }
        size_t badrows = 0;
        for (uint32_t k = 0; k < r->rows; k++) badrows += memcmp(q + k * rb, r->data + k * rb, rb) != 0;
        CHECK_MSG(badrows == 0, "%s %s set %u: %zu of %u rows differ from llama.cpp's codes", r->name,
                  r->kind == 3 ? "imatrix" : "reference", r->set, badrows, r->rows);
        free(q);
        checked++;
    }
    CHECK_MSG(checked >= 3 * NQ - 2, "only %d quantization vectors", checked);
}

/* ---- table ----------------------------------------------------------------------------------- */

static void test_table(void)
{
    static const struct { int id; const char *name; int block, bytes; } want[] = {
        {0, "F32", 1, 4}, {1, "F16", 1, 2}, {2, "Q4_0", 32, 18}, {3, "Q4_1", 32, 20}, {6, "Q5_0", 32, 22},
        {7, "Q5_1", 32, 24}, {8, "Q8_0", 32, 34}, {10, "Q2_K", 256, 84}, {11, "Q3_K", 256, 110},
        {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176}, {14, "Q6_K", 256, 210}, {20, "IQ4_NL", 32, 18},
        {23, "IQ4_XS", 256, 136}, {30, "BF16", 1, 2}, {39, "MXFP4", 32, 17}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const moeq_ggml_type_info *t = moeq_ggml_type_get(want[i].id);
        CHECK(t && !strcmp(t->name, want[i].name) && t->block == want[i].block && t->bytes == want[i].bytes);
        CHECK(moeq_ggml_type_by_name(want[i].name) == t);
        CHECK(moeq_ggml_row_bytes(want[i].id, 512) == (size_t)(512 / want[i].block * want[i].bytes));
    }
    CHECK(moeq_ggml_type_by_name("q4_k") == moeq_ggml_type_get(12));
    CHECK(moeq_ggml_type_by_name("iq4_xS") == moeq_ggml_type_get(23));
    CHECK(!moeq_ggml_type_by_name("Q4_K_M") && !moeq_ggml_type_by_name("Q4") && !moeq_ggml_type_by_name(""));
    CHECK(!moeq_ggml_type_get(4) && !moeq_ggml_type_get(40) && !moeq_ggml_type_get(-1));
    CHECK(moeq_ggml_type_by_name("mxfp4") == moeq_ggml_type_get(39));
    CHECK(moeq_ggml_row_bytes(MOEQ_GGML_Q4_K, 128) == 0 && moeq_ggml_row_bytes(MOEQ_GGML_Q4_0, 48) == 0);
    CHECK(moeq_ggml_row_bytes(MOEQ_GGML_Q4_0, 0) == 0 && moeq_ggml_row_bytes((moeq_ggml_type)5, 256) == 0);
}

/* ---- round trips ------------------------------------------------------------------------------ */

static int block_of(moeq_ggml_type t) { return moeq_ggml_type_get(t)->block; }

static double rel_rmse(moeq_ggml_type t, const float *x, int64_t n, const float *imp, float *y)
{
    uint8_t *q = malloc(moeq_ggml_row_bytes(t, n));
    moeq_ggml_quant_row(t, x, imp, q, n);
    moeq_ggml_dequant_row(t, q, y, n);
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) { e += (x[i] - y[i]) * (double)(x[i] - y[i]); s += (double)x[i] * x[i]; }
    free(q);
    return sqrt(e / (s > 0 ? s : 1));
}

static void test_roundtrip(void)
{
    /* relative RMS error bounds on Gaussian rows: about 2.5x what each grid gives */
    static const double bound[NQ] = {0.25, 0.22, 0.12, 0.11, 0.012, 0.75, 0.45, 0.22, 0.11, 0.06, 0.22, 0.22};
    for (int k = 0; k < NQ; k++) {
        moeq_ggml_type t = QTYPES[k];
        int64_t n = block_of(t) == 32 ? 32 * 7 : 256 * 3;   /* blocks not a power of two */
        float *x = malloc(n * 4), *y = malloc(n * 4), *imp = malloc(n * 4);
        for (int64_t i = 0; i < n; i++) { x[i] = (float)nrand(); imp[i] = (float)(0.1 + urand()); }
        double e0 = rel_rmse(t, x, n, NULL, y), e1 = rel_rmse(t, x, n, imp, y);
        CHECK_MSG(e0 < bound[k] && e1 < bound[k], "%s: relative RMSE %g / %g (bound %g)", moeq_ggml_type_get(t)->name, e0,
                  e1, bound[k]);
        for (int64_t i = 0; i < n; i++) x[i] = 0;
        rel_rmse(t, x, n, NULL, y);
        int zero = 1;
        for (int64_t i = 0; i < n; i++) zero &= y[i] == 0;
        CHECK_MSG(zero, "%s: a zero row does not come back zero", moeq_ggml_type_get(t)->name);
        free(x); free(y); free(imp);
    }
    /* the float types: F32 exact, F16/BF16 round to nearest even */
    float x[4] = {1.0f, 1.0f + 0x1p-11f, -3.0e-8f, 65519.0f}, y[4];
    uint8_t b[16];
    moeq_ggml_quant_row(MOEQ_GGML_F32, x, NULL, b, 4);
    moeq_ggml_dequant_row(MOEQ_GGML_F32, b, y, 4);
    CHECK(!memcmp(x, y, 16));
    moeq_ggml_quant_row(MOEQ_GGML_F16, x, NULL, b, 4);
    moeq_ggml_dequant_row(MOEQ_GGML_F16, b, y, 4);
    CHECK(y[0] == 1.0f && y[1] == 1.0f && y[2] == -0x1p-24f && y[3] == 65504.0f);
    float z[2] = {1.0f + 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f};
    moeq_ggml_quant_row(MOEQ_GGML_BF16, z, NULL, b, 2);
    moeq_ggml_dequant_row(MOEQ_GGML_BF16, b, y, 2);
    CHECK(y[0] == 1.0f && y[1] == 1.0f + 0x1p-7f);
}

/* Under skewed importances the weighted search lowers the weighted error Σ w (x − q)². */
static void test_weighted_beats_plain(void)
{
    for (int k = 0; k < NQ; k++) {
        moeq_ggml_type t = QTYPES[k];
        const int64_t n = 512, R = 24;
        float *x = malloc(n * 4), *y0 = malloc(n * 4), *y1 = malloc(n * 4), *w = malloc(n * 4);
        double e0 = 0, e1 = 0;
        for (int r = 0; r < R; r++) {
            for (int64_t i = 0; i < n; i++) {
                x[i] = (float)(nrand() * (1 + 2 * urand()));
                w[i] = (float)exp(3 * nrand());   /* importances over ~4 decades */
            }
            rel_rmse(t, x, n, NULL, y0);
            rel_rmse(t, x, n, w, y1);
            for (int64_t i = 0; i < n; i++) {
                e0 += w[i] * (double)(x[i] - y0[i]) * (x[i] - y0[i]);
                e1 += w[i] * (double)(x[i] - y1[i]) * (x[i] - y1[i]);
            }
        }
        CHECK_MSG(e1 < 0.97 * e0, "%s: weighted error %g with importances, %g without", moeq_ggml_type_get(t)->name, e1, e0);
        free(x); free(y0); free(y1); free(w);
    }
}

/* dead experts (all-zero or non-finite importance) get the fallback weight 1, never garbage */
static void test_fallback_weights(void)
{
    for (int k = 0; k < NQ; k++) {
        moeq_ggml_type t = QTYPES[k];
        const int64_t n = 256;
        float x[256], zero[256], ones[256], bad[256];
        for (int i = 0; i < n; i++) {
            x[i] = (float)nrand();
            zero[i] = 0;
            ones[i] = 1;
            bad[i] = i % 3 ? NAN : -1.0f;
        }
        size_t rb = moeq_ggml_row_bytes(t, n);
        uint8_t a[512], b[512], c[512];
        moeq_ggml_quant_row(t, x, zero, a, n);
        moeq_ggml_quant_row(t, x, ones, b, n);
        moeq_ggml_quant_row(t, x, bad, c, n);
        CHECK_MSG(!memcmp(a, b, rb) && !memcmp(a, c, rb), "%s: dead importances differ from the fallback weight 1",
                  moeq_ggml_type_get(t)->name);
    }
}

/* MXFP4 by its definition (docs/GGML-TYPES.md): element j of a block in the low nibble of qs[j],
 * j + 16 in the high one, y = e2m1(q) * 2^(e - 127) with ggml's subnormal half scales for e < 2;
 * the quantizer's exponent search: never worse than llama.cpp's exponent (computed here
 * independently), weighted never worse than plain under the weights, the extremes of float */
static void test_mxfp4(void)
{
    static const double e2m1[16] = {0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6};
    static const int es[] = {0, 1, 2, 100, 127, 128, 200, 254, 255};
    uint8_t b[17];
    float y[32];
    for (size_t k = 0; k < sizeof es / sizeof es[0]; k++) {
        b[0] = (uint8_t)es[k];
        for (int j = 0; j < 16; j++) b[1 + j] = (uint8_t)(j | ((15 - j) << 4));
        moeq_ggml_dequant_row(MOEQ_GGML_MXFP4, b, y, 32);
        int bad = 0;
        for (int j = 0; j < 32; j++) {
            double want = ldexp(e2m1[j < 16 ? j : 31 - j], es[k] - 127);   /* inf past FLT_MAX, as ggml */
            bad += (float)want != y[j] && !(want == 0 && y[j] == 0);
        }
        CHECK_MSG(bad == 0, "MXFP4 e = %d: %d values differ from e2m1 x 2^(e - 127)", es[k], bad);
    }
    float x[32 * 64], w[32 * 64], yq[32 * 64];
    uint8_t q[17 * 64], qw[17 * 64];
    double worse_llama = 0, worse_plain = 0;
    for (int rep = 0; rep < 8; rep++) {
        for (int i = 0; i < 32 * 64; i++) {
            x[i] = (float)(nrand() * (i % 32 == 3 && rep % 2 ? 8 : 1) * exp(2 * nrand() * (rep > 3)));
            w[i] = (float)exp(2 * nrand());
        }
        moeq_ggml_quant_row(MOEQ_GGML_MXFP4, x, NULL, q, 32 * 64);
        moeq_ggml_quant_row(MOEQ_GGML_MXFP4, x, w, qw, 32 * 64);
        for (int blk = 0; blk < 64; blk++) {
            const float *xb = x + 32 * blk, *wb = w + 32 * blk;
            /* llama.cpp's exponent and nearest codes, from the definition */
            double amax = 0;
            for (int j = 0; j < 32; j++) amax = fabs(xb[j]) > amax ? fabs(xb[j]) : amax;
            int e0 = (int)floorf(log2f((float)amax)) - 2 + 127;
            double sl = 0, sp = 0, spw = 0, sww = 0;
            moeq_ggml_dequant_row(MOEQ_GGML_MXFP4, q + 17 * blk, yq, 32);
            float yw[32];
            moeq_ggml_dequant_row(MOEQ_GGML_MXFP4, qw + 17 * blk, yw, 32);
            for (int j = 0; j < 32; j++) {
                double best = 1e300;
                for (int c = 0; c < 16; c++) {
                    double v = e2m1[c] * ldexp(1, e0 - 127), d = fabs(v - xb[j]);
                    if (d < best) best = d;
                }
                sl += best * best;
                sp += ((double)xb[j] - yq[j]) * ((double)xb[j] - yq[j]);
                spw += wb[j] * ((double)xb[j] - yq[j]) * ((double)xb[j] - yq[j]);
                sww += wb[j] * ((double)xb[j] - yw[j]) * ((double)xb[j] - yw[j]);
            }
            worse_llama += sp > sl * (1 + 1e-12);
            worse_plain += sww > spw * (1 + 1e-12);
        }
    }
    CHECK_MSG(worse_llama == 0, "MXFP4: %g blocks with a larger error than llama.cpp's exponent", worse_llama);
    CHECK_MSG(worse_plain == 0, "MXFP4: %g blocks with a larger weighted error weighted than plain", worse_plain);
    /* the ends of float: zero, subnormal and the largest values quantize without overflow or UB */
    for (int i = 0; i < 32; i++) x[i] = i % 2 ? 3.0e38f : -1.0e-40f;
    moeq_ggml_quant_row(MOEQ_GGML_MXFP4, x, NULL, q, 32);
    moeq_ggml_dequant_row(MOEQ_GGML_MXFP4, q, y, 32);
    int fin = 1;
    for (int i = 0; i < 32; i++) fin &= isfinite(y[i]) && (i % 2 ? fabsf(y[i] - x[i]) <= 0.35f * x[i] : y[i] == 0);
    CHECK_MSG(q[0] <= 254 && fin, "MXFP4: huge/tiny block gives e %d", q[0]);
    for (int i = 0; i < 32; i++) x[i] = (i % 3 - 1) * 0x1p-128f;
    moeq_ggml_quant_row(MOEQ_GGML_MXFP4, x, NULL, q, 32);
    CHECK(q[0] == 0);   /* the smallest exponent: half scale 2^-128 (subnormal), codes ±1 */
    moeq_ggml_dequant_row(MOEQ_GGML_MXFP4, q, y, 32);
    for (int i = 0; i < 32; i++) CHECK(y[i] == (i % 3 - 1) * 0x1p-128f);
}

/* ---- matmul ----------------------------------------------------------------------------------- */

static void gemm_case(moeq_ggml_type t, int64_t rows, int64_t cols, int64_t n, const char *variant, int *ran)
{
    size_t rb = moeq_ggml_row_bytes(t, cols);
    uint8_t *W = malloc(rb * rows);
    float *wf = malloc(rows * cols * 4), *X = malloc(n * cols * 4), *Y = malloc(n * rows * 4);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) wf[r * cols + c] = (float)nrand();
        moeq_ggml_quant_row(t, wf + r * cols, NULL, W + r * rb, cols);
        moeq_ggml_dequant_row(t, W + r * rb, wf + r * cols, cols);
    }
    for (int64_t i = 0; i < n * cols; i++) X[i] = (float)nrand();
    if (!moeq_ggml_gemm_with(variant, t, W, rows, cols, X, n, Y)) goto out;
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
    /* float32 FMA sums: a few ulps of Σ|w x| per 1000 terms; the ref rounds a float64 sum once */
    double tol = strcmp(variant, "ref") ? 2e-6 * (1 + cols / 256.0) : 1.2e-7;
    CHECK_MSG(worst <= tol, "%s %s %lldx%lld n=%lld: relative error %g", variant, moeq_ggml_type_get(t)->name,
              (long long)rows, (long long)cols, (long long)n, worst);
out:
    free(W); free(wf); free(X); free(Y);
}

static void test_gemm_variants(void)
{
    static const moeq_ggml_type all[] = {MOEQ_GGML_F32, MOEQ_GGML_F16, MOEQ_GGML_BF16, MOEQ_GGML_Q4_0, MOEQ_GGML_Q4_1,
                                         MOEQ_GGML_Q5_0, MOEQ_GGML_Q5_1, MOEQ_GGML_Q8_0, MOEQ_GGML_Q2_K, MOEQ_GGML_Q3_K,
                                         MOEQ_GGML_Q4_K, MOEQ_GGML_Q5_K, MOEQ_GGML_Q6_K, MOEQ_GGML_IQ4_NL, MOEQ_GGML_IQ4_XS,
                                         MOEQ_GGML_MXFP4};
    static const char *variants[] = {"ref", "avx2", "avx512"};
    static const int64_t ns[] = {1, 2, 3, 17};
    int ran = 0;
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
        for (int v = 0; v < 3; v++)
            for (int j = 0; j < 4; j++) {
                int64_t cols = block_of(all[k]) == 256 ? 768 : block_of(all[k]) == 32 ? 32 * 9 : 40;
                gemm_case(all[k], j % 2 ? 19 : 5, cols, ns[j], variants[v], &ran);
            }
    CHECK(ran >= 16 * 4);
    CHECK(moeq_ggml_gemm_with("nope", MOEQ_GGML_Q4_K, NULL, 1, 256, NULL, 1, NULL) == 0);
}

/* X = identity picks the matrix's columns: the SIMD decoders give the scalar floats exactly;
 * and the outputs do not depend on the thread count */
static void test_gemm_exact_and_threads(void)
{
    static const moeq_ggml_type hot[] = {MOEQ_GGML_Q8_0, MOEQ_GGML_Q4_K, MOEQ_GGML_Q5_K, MOEQ_GGML_Q6_K, MOEQ_GGML_IQ4_XS,
                                         MOEQ_GGML_MXFP4};
    static const char *variants[] = {"ref", "avx2", "avx512"};
    const int64_t rows = 21, cols = 256;
    for (size_t k = 0; k < sizeof hot / sizeof hot[0]; k++) {
        size_t rb = moeq_ggml_row_bytes(hot[k], cols);
        uint8_t *W = malloc(rb * rows);
        float *wf = malloc(rows * cols * 4), *I = calloc(cols * cols, 4), *Y = malloc(cols * rows * 4);
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t c = 0; c < cols; c++) wf[r * cols + c] = (float)(nrand() * (1 + r));
            moeq_ggml_quant_row(hot[k], wf + r * cols, NULL, W + r * rb, cols);
            moeq_ggml_dequant_row(hot[k], W + r * rb, wf + r * cols, cols);
        }
        for (int64_t c = 0; c < cols; c++) I[c * cols + c] = 1;
        for (int v = 0; v < 3; v++) {
            if (!moeq_ggml_gemm_with(variants[v], hot[k], W, rows, cols, I, cols, Y)) continue;
            size_t bad = 0;
            for (int64_t c = 0; c < cols; c++)
                for (int64_t r = 0; r < rows; r++) bad += Y[c * rows + r] != wf[r * cols + c];   /* ±0 aside, bit equality */
            CHECK_MSG(bad == 0, "%s %s: %zu decoded values differ from moeq_ggml_dequant_row", variants[v],
                      moeq_ggml_type_get(hot[k])->name, bad);
        }
        free(W); free(wf); free(I); free(Y);
    }
    /* threads: a matrix large enough to go parallel */
    const int64_t R2 = 300, C2 = 1024, n = 7;
    size_t rb = moeq_ggml_row_bytes(MOEQ_GGML_Q4_K, C2);
    uint8_t *W = malloc(rb * R2);
    float *w = malloc(C2 * 4), *X = malloc(n * C2 * 4), *Y1 = malloc(n * R2 * 4), *Y2 = malloc(n * R2 * 4);
    for (int64_t r = 0; r < R2; r++) {
        for (int64_t c = 0; c < C2; c++) w[c] = (float)nrand();
        moeq_ggml_quant_row(MOEQ_GGML_Q4_K, w, NULL, W + r * rb, C2);
    }
    for (int64_t i = 0; i < n * C2; i++) X[i] = (float)nrand();
    omp_set_num_threads(1);
    moeq_ggml_gemm(MOEQ_GGML_Q4_K, W, R2, C2, X, n, Y1);
    omp_set_num_threads(2);
    moeq_ggml_gemm(MOEQ_GGML_Q4_K, W, R2, C2, X, n, Y2);
    CHECK(!memcmp(Y1, Y2, n * R2 * 4));
    free(W); free(w); free(X); free(Y1); free(Y2);
}

/* ---- GPTQ on the grids ------------------------------------------------------------------------ */

static void test_gptq(void)
{
    static const moeq_ggml_type ts[] = {MOEQ_GGML_Q4_K, MOEQ_GGML_Q3_K, MOEQ_GGML_Q2_K, MOEQ_GGML_Q6_K, MOEQ_GGML_Q5_K,
                                        MOEQ_GGML_IQ4_XS, MOEQ_GGML_Q4_0, MOEQ_GGML_Q4_1, MOEQ_GGML_Q5_0,
                                        MOEQ_GGML_IQ4_NL, MOEQ_GGML_Q8_0, MOEQ_GGML_Q5_1, MOEQ_GGML_MXFP4};
    const int64_t rows = 48, cols = 256, ns = 768;
    /* correlated inputs: x = A z with a random mixing matrix, columns of unequal size */
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
    for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) {
        moeq_ggml_type t = ts[k];
        size_t rb = moeq_ggml_row_bytes(t, cols);
        uint8_t *q = malloc(rb * rows), *q2 = malloc(rb * rows), *qs = malloc(rb * rows);
        moeq_gptq_opts o = {.damp = 0.01, .threads = 1};
        moeq_gptq_info info;
        moeq_error err;
        CHECK(moeq_ggml_gptq(t, w, rows, cols, H, &o, q, wq, &info, &err) == MOEQ_OK);
        CHECK(!info.rtn_fallback);
        for (int64_t r = 0; r < rows; r++) {
            moeq_ggml_quant_row(t, w + r * cols, imp, qs + r * rb, cols);
            moeq_ggml_dequant_row(t, qs + r * rb, ws + r * cols, cols);
        }
        double eg = moeq_hessian_error(w, wq, rows, cols, H), es = moeq_hessian_error(w, ws, rows, cols, H);
        CHECK_MSG(eg < 0.9 * es, "%s: GPTQ output error %g, weighted search alone %g", moeq_ggml_type_get(t)->name, eg, es);
        /* wq is the dequantization of the codes; threads do not change the bytes */
        float *y = malloc(cols * 4);
        moeq_ggml_dequant_row(t, q + (rows - 1) * rb, y, cols);
        CHECK(!memcmp(y, wq + (rows - 1) * cols, cols * 4));
        free(y);
        o.threads = 2;
        o.act_order = k == 0;
        CHECK(moeq_ggml_gptq(t, w, rows, cols, H, &o, q2, NULL, &info, &err) == MOEQ_OK);
        if (k) CHECK(!memcmp(q, q2, rb * rows));
        /* one factorization shared by matrices of one Hessian (gate and up): the same bytes */
        {
            moeq_gptq_opts o1 = {.damp = 0.01, .threads = 1};
            moeq_gptq_hinv *h = NULL;
            CHECK(moeq_ggml_gptq_factor(H, cols, &o1, &h, &err) == MOEQ_OK && h);
            memset(q2, 0, rb * rows);
            CHECK(moeq_ggml_gptq_with(t, w, rows, cols, H, h, &o1, q2, NULL, &info, &err) == MOEQ_OK && !info.rtn_fallback);
            CHECK_MSG(!memcmp(q, q2, rb * rows), "%s: shared factorization changed the bytes", moeq_ggml_type_get(t)->name);
            CHECK(moeq_ggml_gptq(t, ws, rows, cols, H, &o1, qs, NULL, &info, &err) == MOEQ_OK);
            CHECK(moeq_ggml_gptq_with(t, ws, rows, cols, H, h, &o1, q2, NULL, &info, &err) == MOEQ_OK);
            CHECK(!memcmp(qs, q2, rb * rows));
            moeq_gptq_hinv_free(h);
        }
        free(q); free(q2); free(qs);
    }
    /* a dead expert (H = 0, or none) is the weighted search with the fallback weight */
    {
        size_t rb = moeq_ggml_row_bytes(MOEQ_GGML_Q4_K, cols);
        uint8_t *q = malloc(rb * rows), *q2 = malloc(rb * rows);
        double *Z = calloc(cols * cols, sizeof *Z);
        moeq_gptq_info info;
        moeq_error err;
        CHECK(moeq_ggml_gptq(MOEQ_GGML_Q4_K, w, rows, cols, Z, NULL, q, NULL, &info, &err) == MOEQ_OK && info.rtn_fallback);
        CHECK(moeq_ggml_gptq(MOEQ_GGML_Q4_K, w, rows, cols, NULL, NULL, q2, NULL, &info, &err) == MOEQ_OK);
        CHECK(!memcmp(q, q2, rb * rows));
        moeq_gptq_hinv *h = (moeq_gptq_hinv *)1;
        CHECK(moeq_ggml_gptq_factor(Z, cols, NULL, &h, &err) == MOEQ_OK && !h);   /* dead: no factor, the same fallback */
        CHECK(moeq_ggml_gptq_with(MOEQ_GGML_Q4_K, w, rows, cols, Z, NULL, NULL, q2, NULL, &info, &err) == MOEQ_OK &&
              info.rtn_fallback && !memcmp(q, q2, rb * rows));
        float ones[256];
        for (int c = 0; c < 256; c++) ones[c] = 1;
        moeq_ggml_quant_row(MOEQ_GGML_Q4_K, w, ones, q2, cols);
        CHECK(!memcmp(q, q2, rb));
        CHECK(moeq_ggml_gptq(MOEQ_GGML_Q4_K, w, rows, 100, NULL, NULL, q, NULL, &info, &err) == MOEQ_ERR_MISUSE);
        free(q); free(q2); free(Z);
    }
    free(Xs); free(H); free(mix); free(w); free(wq); free(ws); free(imp);
}

int main(void)
{
    int have = load_vectors();
    if (!have) fprintf(stderr, "  " FIXTURES "/ggml/vectors.bin is missing or damaged\n");
    CHECK(have);
    RUN_TEST(test_vectors_dequant);
    RUN_TEST(test_vectors_quant);
    RUN_TEST(test_table);
    RUN_TEST(test_roundtrip);
    RUN_TEST(test_weighted_beats_plain);
    RUN_TEST(test_fallback_weights);
    RUN_TEST(test_mxfp4);
    RUN_TEST(test_gemm_variants);
    RUN_TEST(test_gemm_exact_and_threads);
    RUN_TEST(test_gptq);
    free(vec_buf);
    HARNESS_EXIT();
}
