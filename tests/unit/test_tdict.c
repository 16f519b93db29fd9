/* The t1d codec (QMoE's sub-1-bit experts, moeq_tdict.h): the dictionary (65529 codewords, a
 * complete prefix-free 9-ary parse tree: Kraft sum exactly 1; rebuilt bit-identically, its LUT's
 * XXH64 pinned so every machine builds the same one; under a second), random trit streams coded
 * and decoded at p0 0.3, 0.6, 0.885, 0.97 and odd lengths, the coded size at 0.885 against the
 * dictionary's expected rate and the iid entropy, the quantizer (GPTQ's Hessian error below RTN's; the bytes independent of the thread
 * count), the kernels against a float64 brute force at awkward sizes, the spelling, a pack round
 * trip (with and without zstd) and the reader's refusals naming tensor and offset. */
#include "moeq_core.h"
#include "moeq_gptq.h"
#include "moeq_kernels.h"
#include "moeq_pack.h"
#include "moeq_tdict.h"
#include "harness.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

static uint64_t rng = 0x2545f4914f6cdd1dull;
static double urand(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static double nrand(void)
{
    double s = 0;
    for (int i = 0; i < 12; i++) s += urand();
    return s - 6;
}
static uint8_t trit(double p0)
{
    double u = urand();
    return u < p0 ? 0 : u < p0 + (1 - p0) / 2 ? 1 : 2;
}

static void test_dictionary(void)
{
    static const int K[] = { 77, 154, 226, 248 };   /* p0 0.30, 0.60, 0.883, 0.969 */
    for (size_t ki = 0; ki < sizeof K / sizeof K[0]; ki++) {
        moeq_tdict *d = NULL, *d2 = NULL;
        moeq_error e;
        double t0 = moeq_now();
        CHECK(moeq_tdict_build(K[ki], &d, &e) == MOEQ_OK);
        double dt = moeq_now() - t0;
        CHECK_MSG(dt < 1.0, "k %d: built in %.3f s", K[ki], dt);
        CHECK(moeq_tdict_build(K[ki], &d2, &e) == MOEQ_OK);
        if (!d || !d2) { moeq_tdict_free(d); moeq_tdict_free(d2); continue; }
        CHECK(d->n == MOEQ_TDICT_CODES);
        CHECK(!memcmp(d->lut, d2->lut, sizeof d->lut));
        /* complete and prefix-free: Σ 9^(14 - len) = 9^14 exactly, and no codeword is another's
         * prefix (each inserted into a trie ends at a fresh leaf) */
        uint64_t kraft = 0, full = 1;
        for (int i = 0; i < MOEQ_TDICT_MAXPAIRS; i++) full *= 9;
        int lens_ok = 1;
        for (uint32_t c = 0; c < d->n; c++) {
            int len = (int)(d->lut[c] & 15);
            lens_ok &= len >= 1 && len <= MOEQ_TDICT_MAXPAIRS;
            uint64_t w = 1;
            for (int i = len; i < MOEQ_TDICT_MAXPAIRS; i++) w *= 9;
            kraft += w;
        }
        CHECK(lens_ok);
        CHECK_MSG(kraft == full, "k %d: Kraft sum %llu / %llu", K[ki], (unsigned long long)kraft, (unsigned long long)full);
        int32_t *kid = malloc((size_t)9 * 80000 * sizeof *kid);   /* node -> 9 children (0: none) */
        uint8_t *leaf = calloc(80000, 1);
        int32_t nn = 1;
        int pf = 1;
        memset(kid, 0, (size_t)9 * 80000 * sizeof *kid);
        for (uint32_t c = 0; c < d->n && pf; c++) {
            uint64_t x = d->lut[c];
            int len = (int)(x & 15);
            int32_t v = 0;
            for (int i = 0; i < len && pf; i++) {
                int s = moeq_tdict_pair(x, i);
                pf &= ((x >> (4 + 4 * i)) & 3) < 3 && ((x >> (6 + 4 * i)) & 3) < 3 && !leaf[v];
                if (!pf) break;
                if (!kid[v * 9 + s]) kid[v * 9 + s] = nn++;
                v = kid[v * 9 + s];
                pf &= nn < 80000;
            }
            if (!pf) break;
            for (int s = 0; s < 9; s++) pf &= !kid[v * 9 + s];   /* not a prefix of an earlier one */
            pf &= !leaf[v];
            leaf[v] = 1;
        }
        CHECK_MSG(pf, "k %d: not prefix-free", K[ki]);
        free(kid);
        free(leaf);
        /* the cached decoder is the same dictionary */
        const moeq_tdict *c = moeq_tdict_get(K[ki]);
        CHECK(c && !memcmp(c->lut, d->lut, sizeof d->lut));
        /* the same on every machine: the LUT's hash, pinned */
        if (K[ki] == 226) {
            uint64_t h = XXH64(d->lut, sizeof d->lut, 0);
            CHECK_MSG(h == 0x142bc6b657ed4c54ull, "k 226: LUT xxh64 %016llx", (unsigned long long)h);
        }
        moeq_tdict_free(d);
        moeq_tdict_free(d2);
    }
    CHECK(moeq_tdict_get(0) == NULL && moeq_tdict_get(256) == NULL);
}

/* every 9-ary sequence parses: random streams at each p0 (and the extremes of the alphabet)
 * encode then decode to the same trits, at odd and even lengths */
static void test_roundtrip_streams(void)
{
    static const double P0[] = { 0.3, 0.6, 0.885, 0.97 };
    static const int64_t L[] = { 1, 2, 27, 28, 29, 56, 1001, 4096 };
    for (size_t pi = 0; pi < 4; pi++) {
        int k = (int)(P0[pi] * 256 + 0.5);
        moeq_tdict *d = NULL;
        moeq_error e;
        CHECK(moeq_tdict_build(k, &d, &e) == MOEQ_OK);
        if (!d) continue;
        for (size_t li = 0; li < sizeof L / sizeof L[0]; li++)
            for (int rep = 0; rep < 20; rep++) {
                int64_t n = L[li];
                uint8_t *t = malloc((size_t)n), *u = malloc((size_t)n + 32);
                uint16_t *cw = malloc((size_t)(n + 1) * sizeof *cw);
                /* rep 0, 1: all zeros, all minus (the longest and the least probable codewords) */
                for (int64_t i = 0; i < n; i++) t[i] = rep == 0 ? 0 : rep == 1 ? 2 : trit(P0[pi]);
                int64_t m = moeq_tdict_encode_row(d, t, n, cw, (n + 1) / 2);
                CHECK(m >= 1 && m <= (n + 1) / 2);
                CHECK(moeq_tdict_encode_row(d, t, n, NULL, 0) == m);
                CHECK_MSG(m >= 1 && moeq_tdict_decode_row(moeq_tdict_get(k), cw, m, n, u) == 0 && !memcmp(t, u, (size_t)n),
                          "p0 %.3f length %lld rep %d", P0[pi], (long long)n, rep);
                if (m > 1) CHECK(moeq_tdict_decode_row(d, cw, m - 1, n, u) != 0);   /* short */
                free(t); free(u); free(cw);
            }
        moeq_tdict_free(d);
    }
}

/* coded size at p0 = 0.885: within 1% of the tree's expected rate under that source (Σ P(c) ·
 * len(c) pairs per codeword), which is 15% above the iid entropy (0.63 bit, QMoE's ideal): a
 * Tunstall dictionary of 2^16 codewords over pairs loses ~8.6% to its finite size and ~7% more
 * to the 14-pair cap (the long zero runs are cut), docs/quantize.md "t1d" */
static void test_coded_size(void)
{
    const int64_t n = 1 << 20;
    const double p0 = 0.885, q = (1 - p0) / 2, tp[3] = { p0, q, q };
    uint8_t *t = malloc((size_t)n);
    for (int64_t i = 0; i < n; i++) t[i] = trit(p0);
    moeq_tdict *d = NULL;
    moeq_error e;
    CHECK(moeq_tdict_build(227, &d, &e) == MOEQ_OK);   /* 227/256 = 0.8867 */
    if (d) {
        double el = 0;   /* expected pairs per codeword under the source */
        for (uint32_t c = 0; c < d->n; c++) {
            uint64_t x = d->lut[c];
            int len = (int)(x & 15);
            double pr = 1;
            for (int i = 0; i < len; i++) {
                int sy = moeq_tdict_pair(x, i);
                pr *= tp[sy / 3] * tp[sy % 3];
            }
            el += pr * len;
        }
        int64_t m = moeq_tdict_encode_row(d, t, n, NULL, 0);
        double bits = 16.0 * (double)m / (double)n, ideal = 16.0 / (2 * el);
        double H = -p0 * log2(p0) - 2 * q * log2(q);
        printf("  p0 0.885: %.4f bits per weight coded, the dictionary's expected %.4f, iid entropy %.4f (+%.1f%%)\n",
               bits, ideal, H, 100 * (bits / H - 1));
        CHECK_MSG(fabs(bits / ideal - 1) < 0.01, "%.4f vs %.4f", bits, ideal);
        CHECK_MSG(ideal < 1.17 * H && bits > H, "%.4f vs %.4f", ideal, H);
    }
    moeq_tdict_free(d);
    free(t);
}

/* w [rows, cols] and H = XᵀX of correlated inputs */
static void make_problem(int64_t rows, int64_t cols, float *w, double *H)
{
    for (int64_t i = 0; i < rows * cols; i++) w[i] = (float)(0.02 * nrand() * (urand() < 0.02 ? 6 : 1));
    const int64_t n = 4 * cols;
    double *X = malloc((size_t)(n * cols) * sizeof *X);
    for (int64_t i = 0; i < n; i++) {
        double z = nrand();
        for (int64_t j = 0; j < cols; j++) X[i * cols + j] = 0.7 * z + nrand() * (1 + (double)(j % 7));
    }
    for (int64_t a = 0; a < cols; a++)
        for (int64_t b = 0; b < cols; b++) {
            double s = 0;
            for (int64_t i = 0; i < n; i++) s += X[i * cols + a] * X[i * cols + b];
            H[a * cols + b] = s;
        }
    free(X);
}

static void test_quantizer(void)
{
    const int64_t rows = 37, cols = 96;
    float *w = malloc((size_t)(rows * cols) * sizeof *w), *q1 = malloc((size_t)(rows * cols) * sizeof *q1),
          *q2 = malloc((size_t)(rows * cols) * sizeof *q2), *dq = malloc((size_t)(rows * cols) * sizeof *dq);
    double *H = malloc((size_t)(cols * cols) * sizeof *H);
    make_problem(rows, cols, w, H);
    uint64_t cap = moeq_tdict_raw_bound(rows, cols);
    uint8_t *r1 = malloc((size_t)cap), *r2 = malloc((size_t)cap), *r3 = malloc((size_t)cap);
    moeq_error e;
    moeq_tdict_stats s1, s2;
    CHECK(moeq_tdict_quantize(w, rows, cols, NULL, NULL, 0, r1, cap, q1, &s1, &e) == MOEQ_OK);
    moeq_gptq_opts o = { .damp = 0.1 };
    moeq_gptq_hinv *h = NULL;
    moeq_gptq_info info;
    CHECK(moeq_gptq_hinv_create(H, cols, &o, &h, &info, &e) == MOEQ_OK);
    int64_t n;
    const int64_t *perm;
    const double *U = h ? moeq_gptq_hinv_factor(h, &n, &perm) : NULL;
    int nt0 = omp_get_max_threads();
    omp_set_num_threads(1);
    CHECK(moeq_tdict_quantize(w, rows, cols, U, perm, 0, r2, cap, q2, &s2, &e) == MOEQ_OK);
    omp_set_num_threads(4);
    moeq_tdict_stats s3;
    CHECK(moeq_tdict_quantize(w, rows, cols, U, perm, 0, r3, cap, NULL, &s3, &e) == MOEQ_OK);
    omp_set_num_threads(nt0);
    CHECK(s2.bytes == s3.bytes && !memcmp(r2, r3, (size_t)s2.bytes));   /* independent of the thread count */
    double e_rtn = moeq_hessian_error(w, q1, rows, cols, H), e_gptq = moeq_hessian_error(w, q2, rows, cols, H);
    printf("  %lldx%lld: tr(dW H dWt) RTN %.4g, GPTQ %.4g; p0 %.3f (k %d), %.3f bits per weight\n", (long long)rows,
           (long long)cols, e_rtn, e_gptq, s2.p0, s2.k, s2.bpw);
    CHECK_MSG(e_gptq < e_rtn, "GPTQ %g vs RTN %g", e_gptq, e_rtn);
    /* the layout checks and decodes to the quantizer's weights */
    for (int i = 0; i < 2; i++) {
        const uint8_t *r = i ? r2 : r1;
        const moeq_tdict_stats *s = i ? &s2 : &s1;
        CHECK(moeq_tdict_size_of(r) == s->bytes);
        CHECK(moeq_tdict_check(r, s->bytes, rows, cols, &e) == MOEQ_OK);
        moeq_tdict_dequant(r, 0, rows, dq);
        CHECK(!memcmp(dq, i ? q2 : q1, (size_t)(rows * cols) * sizeof *dq));
    }
    /* the k search found no smaller size than its neighbours */
    for (int dk = -1; dk <= 1; dk += 2) {
        CHECK(moeq_tdict_quantize(w, rows, cols, U, perm, s2.k + dk, r3, cap, NULL, &s3, &e) == MOEQ_OK);
        CHECK(s3.count >= s2.count);
    }
    moeq_gptq_hinv_free(h);
    free(w); free(q1); free(q2); free(dq); free(H); free(r1); free(r2); free(r3);
}

/* both kernels against Σ w x in float64 over the decoded weights: |Δ| <= 1e-5 · Σ|w x| (float
 * sums over at most ~300 terms, in two orders) */
static void test_kernels(void)
{
    static const int64_t R[] = { 1, 3, 17, 70 }, C[] = { 32, 96, 288, 33, 7 }, N[] = { 1, 5, 33 };
    for (size_t ri = 0; ri < 4; ri++)
        for (size_t ci = 0; ci < 5; ci++) {
            int64_t rows = R[ri], cols = C[ci];
            float *w = malloc((size_t)(rows * cols) * sizeof *w), *wq = malloc((size_t)(rows * cols) * sizeof *wq);
            for (int64_t i = 0; i < rows * cols; i++) w[i] = (float)nrand();
            uint64_t cap = moeq_tdict_raw_bound(rows, cols);
            uint8_t *raw = malloc((size_t)cap);
            moeq_error e;
            CHECK(moeq_tdict_quantize(w, rows, cols, NULL, NULL, 0, raw, cap, wq, NULL, &e) == MOEQ_OK);
            for (size_t ni = 0; ni < 3; ni++) {
                int64_t n = N[ni], ldx = cols + 3, ldy = rows + 2;
                float *X = malloc((size_t)(n * ldx) * sizeof *X), *Y1 = malloc((size_t)(n * ldy) * sizeof *Y1),
                      *Y2 = malloc((size_t)(n * ldy) * sizeof *Y2), *Y3 = malloc((size_t)(n * ldy) * sizeof *Y3);
                for (int64_t i = 0; i < n * ldx; i++) X[i] = (float)nrand();
                moeq_tdict_gemm_ref(raw, X, n, ldx, 0, rows, Y1, ldy);
#if defined(__x86_64__)
                if (strcmp(moeq_kernels()->name, "ref")) moeq_tdict_gemm_avx2(raw, X, n, ldx, 0, rows, Y2, ldy);
                else memcpy(Y2, Y1, (size_t)(n * ldy) * sizeof *Y2);
#else
                memcpy(Y2, Y1, (size_t)(n * ldy) * sizeof *Y2);
#endif
                moeq_tdict_gemm_par(raw, X, n, ldx, Y3, ldy);
                int ok = 1, par_ok = 1;
                for (int64_t i = 0; i < n; i++)
                    for (int64_t r = 0; r < rows; r++) {
                        double s = 0, a = 0;
                        for (int64_t c = 0; c < cols; c++) {
                            s += (double)wq[r * cols + c] * X[i * ldx + c];
                            a += fabs((double)wq[r * cols + c] * X[i * ldx + c]);
                        }
                        double tol = 1e-5 * a + 1e-30;
                        ok &= fabs(Y1[i * ldy + r] - s) <= tol && fabs(Y2[i * ldy + r] - s) <= tol;
                        par_ok &= Y3[i * ldy + r] == Y2[i * ldy + r] || Y3[i * ldy + r] == Y1[i * ldy + r];
                    }
                CHECK_MSG(ok, "rows %lld cols %lld tokens %lld", (long long)rows, (long long)cols, (long long)n);
                CHECK(par_ok);
                /* a row range lands at Y + (r - r0), the same bits */
                if (rows > 2) {
                    moeq_tdict_gemm_ref(raw, X, n, ldx, 1, rows - 1, Y3, ldy);
                    int rr = 1;
                    for (int64_t i = 0; i < n; i++)
                        for (int64_t r = 1; r < rows - 1; r++) rr &= Y3[i * ldy + r - 1] == Y1[i * ldy + r];
                    CHECK(rr);
                }
                free(X); free(Y1); free(Y2); free(Y3);
            }
            free(w); free(wq); free(raw);
        }
}

static void test_spelling(void)
{
    moeq_codec c;
    moeq_error e;
    char buf[16];
    CHECK(moeq_codec_parse("t1d", &c, &e) == MOEQ_OK && c.type == MOEQ_CODEC_TDICT);
    moeq_codec_format(&c, buf, sizeof buf);
    CHECK(!strcmp(buf, "t1d"));
    CHECK(moeq_codec_parse("t1", &c, &e) == MOEQ_ERR_MISUSE && strstr(e.detail, "t1d"));
    CHECK(moeq_codec_parse("t1d", &c, &e) == MOEQ_OK && moeq_codec_check(&c, 3, 33, &e) == MOEQ_OK);
    CHECK(moeq_codec_check(&c, 0, 33, &e) != MOEQ_OK);
    double b = moeq_codec_bpw(&c, 4096);   /* the dictionary's rate at p0 226/256, + 64 bits a row */
    CHECK_MSG(fabs(b - moeq_tdict_rate(226) - 64.0 / 4096) < 1e-12 && b > 0.7 && b < 0.78, "%.4f", b);
}

static const char CONFIG[] = "{\"model_type\":\"qwen3_moe\",\"hidden_size\":256,\"num_hidden_layers\":1,"
                             "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":1024,"
                             "\"intermediate_size\":256,\"moe_intermediate_size\":256,\"num_experts\":2,"
                             "\"num_experts_per_tok\":1,\"rms_norm_eps\":1e-6,\"head_dim\":64}";

static int write_pack(const char *path, int zstd, const uint8_t *raw, size_t size, int64_t rows, int64_t cols,
                      moeq_error *e)
{
    moeq_pack_writer *w = NULL;
    moeq_codec c;
    moeq_codec_parse("t1d", &c, e);
    int64_t shape[2] = { rows, cols };
    if (moeq_pack_writer_open(path, zstd, &w, e)) return -1;
    if (moeq_pack_write_file(w, "config.json", CONFIG, sizeof CONFIG - 1, e) ||
        moeq_pack_write_source(w, "w", MOEQ_DT_BF16, 2, shape, e) ||
        moeq_pack_write_tensor(w, "w", 2, shape, &c, "w", 0, raw, size, NULL, e)) {
        moeq_pack_writer_abort(w);
        return -1;
    }
    return moeq_pack_writer_finish(w, NULL, e) ? -1 : 0;
}

static void test_pack(void)
{
    const int64_t rows = 5, cols = 96;
    float *w = malloc((size_t)(rows * cols) * sizeof *w), *a = malloc((size_t)(rows * cols) * sizeof *a),
          *b = malloc((size_t)(rows * cols) * sizeof *b);
    for (int64_t i = 0; i < rows * cols; i++) w[i] = (float)nrand();
    uint64_t cap = moeq_tdict_raw_bound(rows, cols);
    uint8_t *raw = malloc((size_t)cap + 64);
    moeq_error e;
    moeq_tdict_stats s;
    CHECK(moeq_tdict_quantize(w, rows, cols, NULL, NULL, 0, raw, cap, b, &s, &e) == MOEQ_OK);
    char dir[] = "/tmp/moeq_test_tdict_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[128];
    for (int zstd = 0; zstd <= 3; zstd += 3) {
        snprintf(path, sizeof path, "%s/t%d.moeq", dir, zstd);
        CHECK(write_pack(path, zstd, raw, (size_t)s.bytes, rows, cols, &e) == 0);
        moeq_pack *p = NULL;
        CHECK(moeq_pack_open(path, &p, &e) == MOEQ_OK);
        if (!p) continue;
        CHECK(moeq_pack_verify(p, &e) == MOEQ_OK);
        const moeq_pack_tensor *t = moeq_pack_find(p, "w");
        CHECK(t && t->codec.type == MOEQ_CODEC_TDICT && t->blob.raw_size == s.bytes && !memcmp(t->data, raw, s.bytes));
        if (t) {
            moeq_codec_dequant(&t->codec, t->data, rows, cols, 0, rows, a);
            CHECK(!memcmp(a, b, (size_t)(rows * cols) * sizeof *a));
        }
        moeq_pack_close(p);
        unlink(path);
    }
    /* the writer refuses a wrong size or a broken layout (the reader's rule) */
    snprintf(path, sizeof path, "%s/bad.moeq", dir);
    CHECK(write_pack(path, 0, raw, (size_t)s.bytes - 2, rows, cols, &e) != 0 && strstr(e.detail, "F-13"));
    /* the reader: a broken t1d tensor is a FORMAT error naming the tensor and the offset */
    const uint64_t cw0 = MOEQ_TDICT_HDR + 8 * (uint64_t)rows + 4;
    static const struct { int field; const char *want; } B[] = {
        { 0, "p0 byte 0 at offset 0" }, { 1, "codeword 65535 at offset" }, { 2, "not monotone at offset" },
        { 3, "levels lo" }, { 4, "header rows 6" },
    };
    for (size_t i = 0; i < sizeof B / sizeof B[0]; i++) {
        uint8_t *bad = malloc((size_t)s.bytes);
        memcpy(bad, raw, (size_t)s.bytes);
        if (B[i].field == 0) bad[0] = 0;
        if (B[i].field == 1) bad[cw0] = bad[cw0 + 1] = 0xff;
        if (B[i].field == 2) bad[MOEQ_TDICT_HDR + 4 * rows + 4] = 0xff;   /* row 1 starts past row 2 */
        if (B[i].field == 3) bad[MOEQ_TDICT_HDR + 1] = 0x3c;             /* lo = +1.0 */
        if (B[i].field == 4) bad[8] = 6;
        CHECK(moeq_tdict_check(bad, s.bytes, rows, cols, &e) == MOEQ_ERR_FORMAT);
        CHECK_MSG(strstr(e.detail, B[i].want) != NULL, "%s", e.detail);
        free(bad);
    }
    rmdir(dir);
    free(w); free(a); free(b); free(raw);
}

int main(void)
{
    moeq_threads_init(0);
    RUN_TEST(test_dictionary);
    RUN_TEST(test_roundtrip_streams);
    RUN_TEST(test_coded_size);
    RUN_TEST(test_quantizer);
    RUN_TEST(test_kernels);
    RUN_TEST(test_spelling);
    RUN_TEST(test_pack);
    HARNESS_EXIT();
}
