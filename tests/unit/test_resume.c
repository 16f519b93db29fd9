/* The checkpoint directory API (include/moeq_resume.h): a new directory gets a manifest; blobs
 * round-trip; a reopen with the same fields sees the finished units; another stage, unit count
 * or field value is a FORMAT error naming it; a corrupt blob is refused on read; leftover
 * temporaries are removed; buffers and readers are bounds-checked; and the piece enumeration
 * (moeq_quant_pieces) groups an expert's pieces into one work item. */
#include "moeq_resume.h"
#include "moeq_quant.h"
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_dir[256], g_base[256];

static void fields(moeq_resume_field *f, const char *bits)
{
    moeq_resume_field_text(&f[0], "method", "gptq");
    moeq_resume_field_text(&f[1], "bits", bits);
}

static void test_resume_roundtrip(void)
{
    char tmpl[] = "/tmp/moeq-resume-XXXXXX";
    CHECK(mkdtemp(tmpl) != NULL);
    snprintf(g_base, sizeof g_base, "%s", tmpl);
    snprintf(g_dir, sizeof g_dir, "%s/ck", tmpl);
    moeq_resume_field f[2];
    fields(f, "3");
    moeq_resume *r = NULL;
    moeq_error err = {0};
    CHECK(moeq_resume_open(g_dir, "quantize", f, 2, 5, &r, &err) == MOEQ_OK);
    if (!r) return;
    CHECK(moeq_resume_n_done(r) == 0 && !moeq_resume_done(r, 1));
    const char blob[] = "layer one's codes";
    CHECK(moeq_resume_write(r, 1, blob, sizeof blob, &err) == MOEQ_OK);
    CHECK(moeq_resume_write(r, 3, NULL, 0, &err) == MOEQ_OK);
    CHECK(moeq_resume_done(r, 1) && moeq_resume_n_done(r) == 2);
    moeq_resume_close(r);
    /* a leftover temporary goes; the finished units are seen */
    char p[512];
    snprintf(p, sizeof p, "%s/unit-00000002.bin.tmp", g_dir);
    FILE *fp = fopen(p, "wb");
    if (fp) { fputs("partial", fp); fclose(fp); }
    r = NULL;
    CHECK(moeq_resume_open(g_dir, "quantize", f, 2, 5, &r, &err) == MOEQ_OK);
    if (!r) return;
    CHECK(access(p, F_OK) != 0);
    CHECK(moeq_resume_n_done(r) == 2 && moeq_resume_done(r, 1) && moeq_resume_done(r, 3) && !moeq_resume_done(r, 2));
    void *b = NULL;
    size_t n = 0;
    CHECK(moeq_resume_read(r, 1, &b, &n, &err) == MOEQ_OK && n == sizeof blob && b && !memcmp(b, blob, n));
    free(b);
    CHECK(moeq_resume_read(r, 3, &b, &n, &err) == MOEQ_OK && n == 0 && b == NULL);
    /* a flipped byte: checksum */
    snprintf(p, sizeof p, "%s/unit-00000001.bin", g_dir);
    fp = fopen(p, "r+b");
    if (fp) { fseek(fp, 45, SEEK_SET); fputc('X', fp); fclose(fp); }
    CHECK(moeq_resume_read(r, 1, &b, &n, &err) == MOEQ_ERR_FORMAT && strstr(err.detail, "checksum"));
    moeq_resume_close(r);
}

static void test_resume_mismatch(void)
{
    moeq_resume_field f[2];
    moeq_resume *r = NULL;
    moeq_error err = {0};
    fields(f, "4");
    CHECK(moeq_resume_open(g_dir, "quantize", f, 2, 5, &r, &err) == MOEQ_ERR_FORMAT && !r);
    CHECK_MSG(strstr(err.detail, "'bits' was '3', now '4'"), "%s", err.detail);
    fields(f, "3");
    CHECK(moeq_resume_open(g_dir, "calibrate", f, 2, 5, &r, &err) == MOEQ_ERR_FORMAT && strstr(err.detail, "'stage'"));
    CHECK(moeq_resume_open(g_dir, "quantize", f, 2, 6, &r, &err) == MOEQ_ERR_FORMAT && strstr(err.detail, "'units'"));
    moeq_resume_field g[3];
    memcpy(g, f, sizeof f);
    moeq_resume_field_text(&g[2], "damp", "0.01");
    CHECK(moeq_resume_open(g_dir, "quantize", g, 3, 5, &r, &err) == MOEQ_ERR_FORMAT && strstr(err.detail, "'damp'"));
    CHECK(moeq_resume_open(g_dir, "quantize", f, 1, 5, &r, &err) == MOEQ_ERR_FORMAT &&
          strstr(err.detail, "'bits' was '3', now not set"));
    /* long or multi-line values are hashed */
    char big[1000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    moeq_resume_field_text(&g[0], "rules", big);
    CHECK(!strncmp(g[0].value, "xxh64:", 6));
    moeq_resume_field_text(&g[0], "rules", "a\nb");
    CHECK(!strncmp(g[0].value, "xxh64:", 6));
    /* a file's identity follows its content */
    char p[512];
    snprintf(p, sizeof p, "%s/input", g_base);
    FILE *fp = fopen(p, "wb");
    if (fp) { fputs("one", fp); fclose(fp); }
    moeq_resume_field a, b;
    CHECK(moeq_resume_field_file(&a, "calib", p, &err) == MOEQ_OK);
    fp = fopen(p, "wb");
    if (fp) { fputs("two", fp); fclose(fp); }
    CHECK(moeq_resume_field_file(&b, "calib", p, &err) == MOEQ_OK && strcmp(a.value, b.value));
    CHECK(moeq_resume_field_file(&b, "calib", "/nonexistent/x", &err) == MOEQ_ERR_NOT_FOUND);
    /* a directory of other files is not taken */
    CHECK(moeq_resume_open(g_base, "quantize", f, 2, 5, &r, &err) == MOEQ_ERR_FORMAT && strstr(err.detail, "no checkpoint manifest"));
}

static void test_buf_reader(void)
{
    moeq_buf b = {0};
    moeq_buf_u32(&b, 7);
    moeq_buf_u64(&b, 0x0102030405060708ull);
    moeq_buf_f64(&b, 0.25);
    moeq_buf_str(&b, "kind");
    CHECK(!b.oom && b.n == 4 + 8 + 8 + 4 + 4 && b.p[4] == 8);
    moeq_rd r = { b.p, b.n, 0, 0 };
    char s[3];
    CHECK(moeq_rd_u32(&r) == 7 && moeq_rd_u64(&r) == 0x0102030405060708ull && moeq_rd_f64(&r) == 0.25);
    moeq_rd_str(&r, s, sizeof s);
    CHECK(!r.bad && !strcmp(s, "ki"));
    CHECK(moeq_rd_u32(&r) == 0 && r.bad);
    moeq_rd r2 = { b.p, 3, 0, 0 };
    CHECK(moeq_rd_u32(&r2) == 0 && r2.bad && moeq_rd_bytes(&r2, 0) == NULL);
    moeq_buf_free(&b);
}

/* the work items: a routed expert's gate, up and down share one (fused and per-expert layouts) */
static void test_pieces_items(void)
{
    const char *fx[] = { FIXTURES "/tiny-mixtral", FIXTURES "/tiny-qwen3moe" };
    for (int f = 0; f < 2; f++) {
        moeq_model *m = NULL;
        moeq_error err = {0};
        CHECK(moeq_model_open(fx[f], &m, &err) == MOEQ_OK);
        if (!m) continue;
        const moeq_config *c = moeq_model_config(m);
        moeq_quant_opts o = { .codec = { .type = MOEQ_CODEC_INT, .bits = 4, .group = 32 }, .scope = MOEQ_SCOPE_ALL };
        moeq_quant_piece *p = NULL;
        size_t n = 0;
        int64_t items = 0;
        CHECK(moeq_quant_pieces(m, &o, &p, &n, &items, &err) == MOEQ_OK);
        int64_t ints = 0, per_item[4096] = {0};
        for (size_t i = 0; i < n; i++) {
            if (p[i].codec.type != MOEQ_CODEC_INT) { CHECK(p[i].item == -1); continue; }
            ints++;
            CHECK(p[i].item >= 0 && p[i].item < items && p[i].item < 4096);
            CHECK(p[i].unit >= 0 && p[i].unit < c->layers);
            if (p[i].item >= 0 && p[i].item < 4096) per_item[p[i].item]++;
        }
        /* scope all: 3 pieces per routed expert item, 1 per attention/dense/shared matrix */
        int64_t expert_items = 0;
        for (int64_t i = 0; i < items && i < 4096; i++) {
            CHECK(per_item[i] == 1 || per_item[i] == 3);
            expert_items += per_item[i] == 3;
        }
        int64_t moe_layers = 0;
        for (int64_t l = 0; l < c->layers; l++) moe_layers += moeq_model_layer(m, l)->is_moe;
        CHECK_MSG(expert_items == moe_layers * c->n_experts, "%lld expert items", (long long)expert_items);
        CHECK(ints == items + 2 * expert_items);
        free(p);
        moeq_model_close(m);
    }
}

int main(void)
{
    RUN_TEST(test_resume_roundtrip);
    RUN_TEST(test_resume_mismatch);
    RUN_TEST(test_buf_reader);
    RUN_TEST(test_pieces_items);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_base);
    if (g_base[0] && system(cmd) != 0) return 1;
    HARNESS_EXIT();
}
