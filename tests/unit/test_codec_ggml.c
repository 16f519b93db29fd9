/* The ggml codec of .moeq (FORMAT.md F-12, "Ggml codec layout"): spellings, the shape rule with
 * its nearest-codec hint, bits per weight as the issue lists them, a pack round trip at awkward
 * sizes (bytes in = bytes out, dequantization = llama.cpp's dequantize_row_*), F-16 on an
 * infinite block scale, the forward pass of a packed model (K types mixed per expert) against
 * the original model with every routed expert overridden by its dequantized float32 weights,
 * the GGUF export copying the blocks byte for byte, and the GPTQ driver on a ggml codec: --damp
 * auto's choice against the validation error recomputed here, the piece against moeq_ggml_gptq
 * with the chosen damping, an undersampled expert against the shrunk Hessian, and RTN with a
 * calibration file against the diag(H)-weighted search. */
#include "moeq_calib.h"
#include "moeq_ggml.h"
#include "moeq_gptq.h"
#include "moeq_gguf.h"
#include "moeq_gguf_export.h"
#include "moeq_kernels.h"
#include "moeq_model.h"
#include "moeq_pack.h"
#include "moeq_quant.h"
#include "float_kernels.h"
#include "harness.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const SPELL[] = { "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_xs", "iq4_nl",
                                     "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "tq1_0", "tq2_0" };
#define NSPELL (sizeof SPELL / sizeof SPELL[0])

static void test_spellings(void)
{
    char buf[32];
    for (size_t i = 0; i < NSPELL; i++) {
        moeq_codec c;
        moeq_error e;
        CHECK(moeq_codec_parse(SPELL[i], &c, &e) == MOEQ_OK);
        CHECK(c.type == MOEQ_CODEC_GGML);
        const moeq_ggml_type_info *ti = moeq_ggml_type_get(c.gtype);
        CHECK(ti && ti->block > 1);
        moeq_codec_format(&c, buf, sizeof buf);
        CHECK_MSG(!strcmp(buf, SPELL[i]), "%s formats as %s", SPELL[i], buf);
    }
    moeq_codec c;
    moeq_error e;
    CHECK(moeq_codec_parse("Q4_K", &c, &e) == MOEQ_OK && c.type == MOEQ_CODEC_GGML && c.gtype == MOEQ_GGML_Q4_K);
    CHECK(moeq_codec_parse("f16", &c, &e) == MOEQ_OK && c.type == MOEQ_CODEC_RAW);   /* a float type stays raw */
    CHECK(moeq_codec_parse("q4_k_m", &c, &e) == MOEQ_ERR_MISUSE);
    CHECK(moeq_codec_parse("iq4", &c, &e) == MOEQ_ERR_MISUSE);
    CHECK(moeq_codec_parse("q4g64a", &c, &e) == MOEQ_OK && c.type == MOEQ_CODEC_INT && c.bits == 4 && c.group == 64);
}

static void test_shapes(void)
{
    moeq_codec c;
    moeq_error e;
    /* bits per weight as llama.cpp counts them (the table) */
    static const struct { const char *s; double bpw; } B[] = {
        {"q4_k", 4.5}, {"q3_k", 3.4375}, {"q2_k", 2.625}, {"iq4_xs", 4.25}, {"q5_k", 5.5}, {"q6_k", 6.5625},
        {"iq4_nl", 4.5}, {"q8_0", 8.5}, {"tq1_0", 1.6875}, {"tq2_0", 2.0625},
    };
    for (size_t i = 0; i < sizeof B / sizeof B[0]; i++) {
        moeq_codec_parse(B[i].s, &c, &e);
        CHECK_NEAR(moeq_codec_bpw(&c, 512), B[i].bpw, 0);
        CHECK(moeq_codec_raw_bytes(&c, 3, 512) == (uint64_t)(3 * 512 * B[i].bpw / 8));
    }
    moeq_codec_parse("q4_k", &c, &e);
    CHECK(moeq_codec_check(&c, 7, 768, &e) == MOEQ_OK);
    CHECK(moeq_codec_check(&c, 7, 96, &e) == MOEQ_ERR_UNSUPPORTED && strstr(e.detail, "iq4_nl"));
    CHECK(moeq_codec_raw_bytes(&c, 7, 96) == 0);
    CHECK(moeq_codec_check(&c, 7, 100, &e) == MOEQ_ERR_UNSUPPORTED && strstr(e.detail, "no matrix codec"));
    moeq_codec_parse("q3_k", &c, &e);
    CHECK(moeq_codec_check(&c, 7, 160, &e) == MOEQ_ERR_UNSUPPORTED && strstr(e.detail, "q3g32s"));
    moeq_codec_parse("iq4_nl", &c, &e);
    CHECK(moeq_codec_check(&c, 7, 96, &e) == MOEQ_OK);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static const char CONFIG[] = "{\"model_type\":\"qwen3_moe\",\"hidden_size\":256,\"num_hidden_layers\":1,"
                             "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":1024,"
                             "\"intermediate_size\":256,\"moe_intermediate_size\":256,\"num_experts\":2,"
                             "\"num_experts_per_tok\":1,\"rms_norm_eps\":1e-6,\"head_dim\":64}";

/* One pack with each type's tensor [rows, cols] (cols a multiple of the block: awkward sizes). */
static void test_roundtrip(void)
{
    static const struct { const char *s; int64_t rows, cols; } T[] = {
        {"q2_k", 3, 768}, {"q3_k", 5, 256}, {"q4_k", 1, 512}, {"q5_k", 7, 256}, {"q6_k", 2, 1280},
        {"iq4_xs", 3, 256}, {"iq4_nl", 5, 96}, {"q8_0", 1, 32}, {"tq1_0", 3, 768}, {"tq2_0", 1, 512},
    };
    enum { NT = sizeof T / sizeof T[0] };
    char dir[] = "/tmp/moeq_test_codec_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    for (int zstd = 0; zstd <= 3; zstd += 3) {
        char path[128];
        snprintf(path, sizeof path, "%s/a%d.moeq", dir, zstd);
        uint8_t *raw[NT];
        moeq_codec cd[NT];
        moeq_error e;
        moeq_pack_writer *w = NULL;
        CHECK(moeq_pack_writer_open(path, zstd, &w, &e) == MOEQ_OK);
        CHECK(moeq_pack_write_file(w, "config.json", CONFIG, sizeof CONFIG - 1, &e) == MOEQ_OK);
        for (int i = 0; i < NT; i++) {
            char nm[32];
            snprintf(nm, sizeof nm, "w.%s", T[i].s);
            int64_t shape[2] = { T[i].rows, T[i].cols };
            CHECK(moeq_pack_write_source(w, nm, MOEQ_DT_BF16, 2, shape, &e) == MOEQ_OK);
        }
        for (int i = 0; i < NT; i++) {
            char nm[32];
            snprintf(nm, sizeof nm, "w.%s", T[i].s);
            int64_t n = T[i].rows * T[i].cols, shape[2] = { T[i].rows, T[i].cols };
            float *x = malloc((size_t)n * sizeof *x);
            double *d = malloc((size_t)T[i].cols * sizeof *d);
            for (int64_t j = 0; j < n; j++) x[j] = (float)((urand() - 0.5) * (1 + 3 * urand()));
            for (int64_t j = 0; j < T[i].cols; j++) d[j] = urand() * urand();
            moeq_codec_parse(T[i].s, &cd[i], &e);
            uint64_t rb = moeq_codec_raw_bytes(&cd[i], T[i].rows, T[i].cols);
            raw[i] = malloc((size_t)rb);
            CHECK(moeq_ggml_quantize_rows((moeq_ggml_type)cd[i].gtype, x, T[i].rows, T[i].cols, d, raw[i], &e) == MOEQ_OK);
            CHECK(moeq_pack_write_tensor(w, nm, 2, shape, &cd[i], nm, 0, raw[i], (size_t)rb, NULL, &e) == MOEQ_OK);
            free(x);
            free(d);
        }
        /* the writer refuses a shape the codec cannot describe, and a wrong size */
        int64_t bad[2] = { 2, 96 };
        moeq_codec q4k;
        moeq_codec_parse("q4_k", &q4k, &e);
        CHECK(moeq_pack_write_tensor(w, "bad", 2, bad, &q4k, "w.q4_k", 0, raw[2], 144, NULL, &e) == MOEQ_ERR_UNSUPPORTED);
        int64_t ok[2] = { 1, 512 };
        CHECK(moeq_pack_write_tensor(w, "bad", 2, ok, &q4k, "w.q4_k", 0, raw[2], 143, NULL, &e) == MOEQ_ERR_MISUSE);
        CHECK(moeq_pack_writer_finish(w, NULL, &e) == MOEQ_OK);

        moeq_pack *p = NULL;
        CHECK(moeq_pack_open(path, &p, &e) == MOEQ_OK);
        if (!p) continue;
        CHECK(moeq_pack_verify(p, &e) == MOEQ_OK);
        for (int i = 0; i < NT; i++) {
            char nm[32];
            snprintf(nm, sizeof nm, "w.%s", T[i].s);
            const moeq_pack_tensor *t = moeq_pack_find(p, nm);
            CHECK(t && t->codec.type == MOEQ_CODEC_GGML && t->codec.gtype == cd[i].gtype);
            if (!t) continue;
            uint64_t rb = moeq_codec_raw_bytes(&cd[i], T[i].rows, T[i].cols);
            CHECK(t->blob.raw_size == rb && !memcmp(t->data, raw[i], (size_t)rb));
            int64_t n = T[i].rows * T[i].cols;
            float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
            moeq_codec_dequant(&t->codec, t->data, T[i].rows, T[i].cols, 0, T[i].rows, a);
            size_t rowb = moeq_ggml_row_bytes((moeq_ggml_type)cd[i].gtype, T[i].cols);
            for (int64_t r = 0; r < T[i].rows; r++)
                moeq_ggml_dequant_row((moeq_ggml_type)cd[i].gtype, raw[i] + r * rowb, b + r * T[i].cols, T[i].cols);
            CHECK(!memcmp(a, b, (size_t)n * sizeof *a));
            free(a);
            free(b);
        }
        moeq_pack_close(p);
        for (int i = 0; i < NT; i++) free(raw[i]);
    }
    /* F-16: an infinite super-block scale (Q4_K's d, the block's first two bytes) in row 1 */
    {
        char path[128];
        snprintf(path, sizeof path, "%s/inf.moeq", dir);
        moeq_error e;
        moeq_codec c;
        moeq_codec_parse("q4_k", &c, &e);
        int64_t shape[2] = { 2, 512 };
        size_t rb = (size_t)moeq_codec_raw_bytes(&c, 2, 512);
        uint8_t *raw = calloc(1, rb);
        float x[1024];
        for (int j = 0; j < 1024; j++) x[j] = (float)(urand() - 0.5);
        moeq_ggml_quantize_rows(MOEQ_GGML_Q4_K, x, 2, 512, NULL, raw, &e);
        raw[rb / 2 + 144] = 0x00;   /* row 1, block 1 */
        raw[rb / 2 + 145] = 0x7c;
        moeq_pack_writer *w = NULL;
        CHECK(moeq_pack_writer_open(path, 0, &w, &e) == MOEQ_OK);
        moeq_pack_write_file(w, "config.json", CONFIG, sizeof CONFIG - 1, &e);
        moeq_pack_write_source(w, "w", MOEQ_DT_BF16, 2, shape, &e);
        CHECK(moeq_pack_write_tensor(w, "w", 2, shape, &c, "w", 0, raw, rb, NULL, &e) == MOEQ_OK);
        CHECK(moeq_pack_writer_finish(w, NULL, &e) == MOEQ_OK);
        moeq_pack *p = NULL;
        CHECK(moeq_pack_open(path, &p, &e) == MOEQ_OK);
        if (p) {
            CHECK(moeq_pack_verify(p, &e) == MOEQ_ERR_NUMERIC);
            CHECK_MSG(strstr(e.detail, "block 1 of row 1") && strstr(e.detail, "F-16"), "%s", e.detail);
            moeq_pack_close(p);
        }
        free(raw);
    }
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

/* Packs tiny-qwen3moe-256's routed experts in q4_k, q3_k for experts 0-2 and iq4_xs for every
 * down projection (rules win over the default, first match), then compares the packed model's
 * logits with the original's whose experts are overridden by the dequantized weights: the same
 * weights and float32 activations, only the order of the dot products' sums differs (none with
 * MOEQ_KERNEL=ref: both paths then sum in float64). */
static void test_forward_and_export(void)
{
    const moeq_kernel_set *prev_ks = use_float_kernels();
    const char *fx = "tests/fixtures/tiny-qwen3moe-256";
    char dir[] = "/tmp/moeq_test_codec_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[128], gpath[128];
    snprintf(path, sizeof path, "%s/m.moeq", dir);
    snprintf(gpath, sizeof gpath, "%s/m.gguf", dir);
    moeq_error e;
    moeq_model *A = NULL, *P = NULL;
    CHECK(moeq_model_open(fx, &A, &e) == MOEQ_OK);
    if (!A) { moeq_kernels_use(prev_ks); return; }
    moeq_tensor_rule rules[2];
    rules[0].regex = "experts\\.[0-2]\\.(gate|up)_proj";
    moeq_codec_parse("q3_k", &rules[0].codec, &e);
    rules[1].regex = "down_proj";
    moeq_codec_parse("iq4_xs", &rules[1].codec, &e);
    moeq_quant_opts o = { .scope = MOEQ_SCOPE_EXPERTS, .rules = rules, .n_rules = 2 };
    moeq_codec_parse("q4_k", &o.codec, &e);
    moeq_quant_result res;
    CHECK(moeq_quantize_rtn(A, &o, path, &res, &e) == MOEQ_OK);
    CHECK(res.quantized > 0);
    CHECK(moeq_model_open(path, &P, &e) == MOEQ_OK);
    const moeq_config *c = moeq_model_config(A);
    float **deq = calloc((size_t)(c->layers * c->n_experts * 3), sizeof *deq);
    int ntypes[3] = {0, 0, 0};
    for (int64_t l = 0; P && l < c->layers; l++)
        for (int64_t x = 0; x < c->n_experts; x++)
            for (int p = 0; p < 3; p++) {
                moeq_mat v;
                CHECK(moeq_model_expert(P, l, x, (moeq_proj)p, &v, &e) == MOEQ_OK);
                int want = p == MOEQ_PROJ_DOWN ? MOEQ_GGML_IQ4_XS : x <= 2 ? MOEQ_GGML_Q3_K : MOEQ_GGML_Q4_K;
                CHECK(v.gtype == want);
                ntypes[want == MOEQ_GGML_Q4_K ? 0 : want == MOEQ_GGML_Q3_K ? 1 : 2]++;
                float *f = malloc((size_t)(v.rows * v.cols) * sizeof *f);
                moeq_mat_to_f32(&v, 0, v.rows, f);
                deq[(l * c->n_experts + x) * 3 + p] = f;
                CHECK(moeq_model_set_override(A, l, x, (moeq_proj)p, f, &e) == MOEQ_OK);
            }
    CHECK(ntypes[0] > 0 && ntypes[1] > 0 && ntypes[2] > 0);
    enum { N = 48 };
    int32_t tok[N];
    for (int i = 0; i < N; i++) tok[i] = (int32_t)((i * 37 + 11) % c->vocab);
    float *la = malloc((size_t)(N * c->vocab) * sizeof *la), *lp = malloc((size_t)(N * c->vocab) * sizeof *lp);
    moeq_runner *ra = NULL, *rp = NULL;
    if (P) {
        CHECK(moeq_runner_create(A, N, 1, &ra, &e) == MOEQ_OK);
        CHECK(moeq_runner_create(P, N, 1, &rp, &e) == MOEQ_OK);
    }
    if (ra && rp) {
        CHECK(moeq_forward(ra, tok, N, la, NULL, &e) == MOEQ_OK);
        CHECK(moeq_forward(rp, tok, N, lp, NULL, &e) == MOEQ_OK);
        double mx = 0, md = 0;
        for (int64_t i = 0; i < (int64_t)N * c->vocab; i++) {
            mx = fmax(mx, fabs(la[i]));
            md = fmax(md, fabs((double)la[i] - lp[i]));
        }
        printf("  forward: max |logit| %.4g, max |packed - dequantized| %.4g\n", mx, md);
        CHECK_MSG(md <= 1e-5 * mx, "max diff %g of max %g", md, mx);
    }
    moeq_runner_free(ra);
    moeq_runner_free(rp);
    /* GGUF from a uniform q4_k pack: blocks copied, not requantized */
    moeq_model_close(P);
    P = NULL;
    moeq_model_clear_overrides(A);
    moeq_quant_opts o2 = { .scope = MOEQ_SCOPE_EXPERTS };
    moeq_codec_parse("q4_k", &o2.codec, &e);
    CHECK(moeq_quantize_rtn(A, &o2, path, &res, &e) == MOEQ_OK);
    CHECK(moeq_model_open(path, &P, &e) == MOEQ_OK);
    moeq_gguf_export_opts go = { .type = -1 };
    moeq_gguf_export_result gr = {0};
    CHECK(P && moeq_gguf_export(P, gpath, &go, &gr, &e) == MOEQ_OK);
    json_decref(gr.fallbacks);
    json_decref(gr.damps);
    moeq_gguf *g = NULL;
    CHECK(moeq_gguf_open(gpath, &g, &e) == MOEQ_OK);
    const moeq_pack *pk = P ? moeq_model_pack(P) : NULL;
    int compared = 0;
    static const char *const gn[3] = { "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps" };
    for (int64_t l = 0; g && pk && l < c->layers; l++)
        for (int p = 0; p < 3; p++) {
            char nm[64];
            snprintf(nm, sizeof nm, "blk.%lld.%s.weight", (long long)l, gn[p]);
            const moeq_gguf_tensor *gt = moeq_gguf_find_tensor(g, nm);
            CHECK_MSG(gt && gt->type == MOEQ_GGML_Q4_K, "%s", nm);
            if (!gt) continue;
            uint64_t per = gt->nbytes / (uint64_t)c->n_experts;
            for (int64_t x = 0; x < c->n_experts; x++) {
                moeq_mat v;
                moeq_model_expert(P, l, x, (moeq_proj)p, &v, &e);
                CHECK(v.gtype == MOEQ_GGML_Q4_K && per == (uint64_t)v.rows * v.grow);
                CHECK(!memcmp((const unsigned char *)gt->data + x * per, v.data, (size_t)per));
                compared++;
            }
        }
    CHECK(compared == c->layers * c->n_experts * 3);
    moeq_gguf_close(g);
    for (int64_t i = 0; i < c->layers * c->n_experts * 3; i++) free(deq[i]);
    free(deq);
    free(la);
    free(lp);
    moeq_model_close(P);
    moeq_model_close(A);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    moeq_kernels_use(prev_ks);
}

/* tr(D H Dᵀ) by plain loops in long double. */
static double herr(const float *w, const float *q, int64_t R, int64_t n, const double *H)
{
    long double s = 0;
    for (int64_t r = 0; r < R; r++)
        for (int64_t i = 0; i < n; i++) {
            double di = (double)w[r * n + i] - q[r * n + i];
            for (int64_t j = 0; j < n; j++) s += (long double)di * H[i * n + j] * ((double)w[r * n + j] - q[r * n + j]);
        }
    return (double)s;
}

static const moeq_expert_mat *find(const moeq_expert_mat *mats, size_t nm, int64_t l, int64_t e, moeq_proj p)
{
    for (size_t i = 0; i < nm; i++)
        if (mats[i].layer == l && mats[i].expert == e && mats[i].proj == p) return &mats[i];
    return NULL;
}

static void test_gptq_driver(void)
{
    moeq_error err = {0};
    moeq_model *m = NULL;
    CHECK(moeq_model_open("tests/fixtures/tiny-qwen3moe-256", &m, &err) == MOEQ_OK);
    if (!m) return;
    char dir[] = "/tmp/moeq_test_codec_XXXXXX", path[128];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/c.h5", dir);
    int32_t *ids = NULL;
    int64_t nid = 0;
    CHECK(moeq_tokens_load("tests/fixtures/heldout.safetensors", moeq_model_config(m)->vocab, &ids, &nid, &err) == MOEQ_OK);
    moeq_calib_opts co = {.ctx = 64, .max_tokens = 16 * 64, .threads = 2, .val_every = 4, .min_tokens = 48};
    moeq_calib_result cres;
    CHECK_MSG(moeq_calibrate(m, ids, nid, path, &co, &cres, &err) == MOEQ_OK, "%s", err.detail);
    moeq_calib_result_free(&cres);
    free(ids);
    moeq_calib_file *cf = NULL;
    CHECK(moeq_calib_file_open(path, m, &cf, &err) == MOEQ_OK);
    if (!cf) { moeq_model_close(m); return; }
    const moeq_config *c = moeq_model_config(m);
    moeq_expert_mat *mats = NULL;
    size_t nm = 0;
    moeq_expert_index *ix = NULL;
    CHECK(moeq_expert_mats(m, &mats, &nm, &err) == MOEQ_OK);
    CHECK(moeq_expert_index_build(mats, nm, &ix, &err) == MOEQ_OK);
    moeq_gptq_run run = { .m = m, .calib = cf, .opts = { .threads = 2, .grid_steps = 8 }, .mats = mats, .n_mats = nm,
                          .index = ix, .fallback = MOEQ_FALLBACK_SHRINK, .damp_auto = 1, .split = MOEQ_SPLIT_CAL,
                          .report = 1 };
    const int64_t layer = 1, H = c->hidden;
    int64_t e1 = -1, e2 = -1, n1 = -1, n2 = -1, eu = -1;
    for (int64_t e = 0; e < c->n_experts; e++) {
        int64_t n;
        int fl;
        CHECK(moeq_calib_file_expert(cf, layer, e, &n, &fl, &err) == MOEQ_OK);
        if (fl == MOEQ_CALIB_UNDERSAMPLED && eu < 0) eu = e;
        if (fl != MOEQ_CALIB_OK) continue;
        if (n > n1) { e2 = e1; n2 = n1; e1 = e; n1 = n; }
        else if (n > n2) { e2 = e; n2 = n; }
    }
    CHECK(e2 >= 0);
    moeq_codec cd;
    moeq_codec_parse("q3_k", &cd, &err);
    double want[MOEQ_DAMP_CANDIDATES] = {0};
    double *Hc = malloc(sizeof(double) * H * H), *Hv = malloc(sizeof(double) * H * H), *Hp = malloc(sizeof(double) * H * H);
    int64_t ex[2] = {e1, e2};
    for (int k = 0; k < 2 && ex[k] >= 0; k++) {   /* the probe: 64 rows of gate and up of the two busiest */
        CHECK(moeq_calib_file_hessian_split(cf, layer, ex[k], 0, MOEQ_SPLIT_CAL, Hc, H, NULL, &err) == MOEQ_OK);
        CHECK(moeq_calib_file_hessian_split(cf, layer, ex[k], 0, MOEQ_SPLIT_VAL, Hv, H, NULL, &err) == MOEQ_OK);
        for (int p = 0; p < 2; p++) {
            const moeq_expert_mat *x = find(mats, nm, layer, ex[k], (moeq_proj)p);
            int64_t R = x->mat.rows < 64 ? x->mat.rows : 64, n = x->mat.cols;
            float *w = malloc(sizeof(float) * R * n), *wq = malloc(sizeof(float) * R * n);
            uint8_t *raw = malloc(moeq_codec_raw_bytes(&cd, R, n));
            moeq_mat_to_f32(&x->mat, 0, R, w);
            for (int ci = 0; ci < MOEQ_DAMP_CANDIDATES; ci++) {
                moeq_gptq_opts o = { .damp = moeq_damp_candidates[ci], .threads = 1 };
                CHECK(moeq_ggml_gptq(MOEQ_GGML_Q3_K, w, R, n, Hc, &o, raw, wq, NULL, &err) == MOEQ_OK);
                want[ci] += herr(w, wq, R, n, Hv);
            }
            free(w); free(wq); free(raw);
        }
    }
    int best = 0;
    for (int ci = 1; ci < MOEQ_DAMP_CANDIDATES; ci++) if (want[ci] < want[best]) best = ci;
    const moeq_expert_mat *x = find(mats, nm, layer, e1, MOEQ_PROJ_GATE);
    int64_t R = x->mat.rows, n = x->mat.cols;
    size_t total = (size_t)moeq_codec_raw_bytes(&cd, R, n);
    float *w = malloc(sizeof(float) * R * n);
    uint8_t *raw = malloc(total), *raw2 = malloc(total);
    moeq_mat_to_f32(&x->mat, 0, R, w);
    CHECK_MSG(moeq_gptq_piece(&run, x->name, w, R, n, &cd, raw, &err) == MOEQ_OK, "%s", err.detail);
    CHECK(run.n_choices == 1 && run.gptq_matrices == 1);
    if (run.n_choices == 1) {
        const moeq_gptq_damp_choice *ch = &run.choices[0];
        CHECK(ch->gtype == MOEQ_GGML_Q3_K && ch->experts[0] == e1 && ch->experts[1] == e2);
        for (int ci = 0; ci < MOEQ_DAMP_CANDIDATES; ci++)
            CHECK_MSG(fabs(ch->val_err[ci] - want[ci]) <= 1e-9 * want[ci], "candidate %d: %.12g vs %.12g", ci,
                      ch->val_err[ci], want[ci]);
        CHECK_MSG(ch->damp == moeq_damp_candidates[best], "chose %g, argmin %g", ch->damp, moeq_damp_candidates[best]);
        moeq_gptq_opts o = { .damp = ch->damp, .threads = 1 };
        CHECK(moeq_calib_file_hessian_split(cf, layer, e1, 0, MOEQ_SPLIT_CAL, Hc, H, NULL, &err) == MOEQ_OK);
        CHECK(moeq_ggml_gptq(MOEQ_GGML_Q3_K, w, R, n, Hc, &o, raw2, NULL, NULL, &err) == MOEQ_OK);
        CHECK(memcmp(raw, raw2, total) == 0);
        /* the report: the expert's own Hessian error of both splits */
        CHECK(run.layers && run.layers[layer].pieces == 1 && run.layers[layer].err_cal > 0 && run.layers[layer].err_val > 0);
    }
    if (eu >= 0 && run.n_choices == 1) {   /* undersampled: GPTQ with the shrunk Hessian */
        x = find(mats, nm, layer, eu, MOEQ_PROJ_GATE);
        moeq_mat_to_f32(&x->mat, 0, R, w);
        size_t nfb = run.n_fallbacks;
        CHECK(moeq_gptq_piece(&run, x->name, w, R, n, &cd, raw, &err) == MOEQ_OK);
        CHECK(run.n_fallbacks == nfb + 1 && !strcmp(run.fallbacks[nfb].kind, "shrunk"));
        int64_t ne, np;
        CHECK(moeq_calib_file_hessian_split(cf, layer, eu, 0, MOEQ_SPLIT_CAL, Hc, H, &ne, &err) == MOEQ_OK);
        CHECK(moeq_calib_file_hessian_split(cf, layer, -1, 0, MOEQ_SPLIT_CAL, Hp, H, &np, &err) == MOEQ_OK);
        moeq_hessian_shrink(Hc, ne, Hp, np, (double)n, H, Hc);
        moeq_gptq_opts o = { .damp = run.choices[0].damp, .threads = 1 };
        CHECK(moeq_ggml_gptq(MOEQ_GGML_Q3_K, w, R, n, Hc, &o, raw2, NULL, NULL, &err) == MOEQ_OK);
        CHECK(memcmp(raw, raw2, total) == 0);
    } else if (eu < 0) {
        printf("  no undersampled expert in layer %lld\n", (long long)layer);
    }
    /* RTN with the calibration file: the weighted search with the expert's own diag(H) */
    moeq_gptq_run rr = { .m = m, .calib = cf, .opts = { .threads = 2, .grid_steps = 8 }, .mats = mats, .n_mats = nm,
                         .index = ix, .fallback = MOEQ_FALLBACK_SHRINK, .rtn = 1, .split = MOEQ_SPLIT_CAL };
    x = find(mats, nm, layer, e1, MOEQ_PROJ_UP);
    moeq_mat_to_f32(&x->mat, 0, R, w);
    CHECK(moeq_gptq_piece(&rr, x->name, w, R, n, &cd, raw, &err) == MOEQ_OK);
    CHECK(moeq_calib_file_hessian_split(cf, layer, e1, 0, MOEQ_SPLIT_CAL, Hc, H, NULL, &err) == MOEQ_OK);
    double *d = malloc(sizeof(double) * n);
    for (int64_t j = 0; j < n; j++) d[j] = Hc[j * n + j];
    CHECK(moeq_ggml_quantize_rows(MOEQ_GGML_Q3_K, w, R, n, d, raw2, &err) == MOEQ_OK);
    CHECK(memcmp(raw, raw2, total) == 0);
    /* and it differs from the unweighted reference (the importances matter) */
    CHECK(moeq_ggml_quantize_rows(MOEQ_GGML_Q3_K, w, R, n, NULL, raw2, &err) == MOEQ_OK);
    CHECK(memcmp(raw, raw2, total) != 0);
    free(d);
    moeq_gptq_run_free(&rr);
    free(w); free(raw); free(raw2); free(Hc); free(Hv); free(Hp);
    moeq_gptq_run_free(&run);
    moeq_expert_index_free(ix);
    free(mats);
    moeq_calib_file_close(cf);
    unlink(path);
    rmdir(dir);
    moeq_model_close(m);
}

int main(void)
{
    RUN_TEST(test_spellings);
    RUN_TEST(test_shapes);
    RUN_TEST(test_roundtrip);
    RUN_TEST(test_forward_and_export);
    RUN_TEST(test_gptq_driver);
    HARNESS_EXIT();
}
