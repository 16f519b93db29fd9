/* Sequential GPTQ (moeq_gptq_sequential) on two fixtures (per-expert and fused v5 experts):
 * its file is bit-identical across thread counts; layer 0's codes equal non-sequential GPTQ's
 * with a calibration file measured on the same tokens (layer 0's inputs do not depend on any
 * quantization), and later layers differ (they see quantized inputs); fewer tokens than one
 * window is a FORMAT error. */
#include "moeq_calib.h"
#include "moeq_gptq.h"
#include "moeq_kernels.h"
#include "moeq_pack.h"
#include "moeq_quant.h"
#include "harness.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static moeq_status write_gptq(moeq_model *m, moeq_calib_file *cf, const int32_t *ids, int64_t n,
                              int64_t ctx, int threads, const char *out, moeq_error *err)
{
    moeq_expert_mat *mats = NULL;
    size_t nm = 0;
    moeq_expert_index *ix = NULL;
    moeq_status st = moeq_expert_mats(m, &mats, &nm, err);
    if (!st) st = moeq_expert_index_build(mats, nm, &ix, err);
    moeq_gptq_run run = { .m = m, .calib = cf, .opts = { .threads = threads }, .mats = mats, .n_mats = nm,
                          .index = ix };
    moeq_quant_opts o = { .codec = { .type = MOEQ_CODEC_INT, .bits = 3, .group = 64, .sym = 0 },
                          .quantize = moeq_gptq_piece, .cb_user = &run };
    if (!st && !cf) {
        moeq_gptq_seq_opts so = { .ctx = ctx, .threads = threads };
        moeq_gptq_seq_result sr;
        st = moeq_gptq_sequential(&run, m, &o, ids, n, &so, &sr, err);
        if (!st && (sr.tokens != n / ctx * ctx || sr.gptq_pieces <= 0)) st = MOEQ_ERR_MISUSE;
    }
    moeq_quant_result res;
    if (!st) st = moeq_quantize_rtn(m, &o, out, &res, err);
    moeq_gptq_run_free(&run);
    moeq_expert_index_free(ix);
    free(mats);
    return st;
}

static int files_equal(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) same = 0;
        if (ca == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

static void test_sequential(void)
{
    const char *fx[2] = { "tiny-mixtral", "tiny-qwen3moe" };
    int quick = getenv("MOEQ_TEST_QUICK") != NULL;
    for (int f = 0; f < 2; f++) {
        char dir[] = "/tmp/moeq_test_gptq_seq_XXXXXX", path[256], h5[128], a[128], b[128], c[128];
        CHECK(mkdtemp(dir) != NULL);
        snprintf(h5, sizeof h5, "%s/c.h5", dir);
        snprintf(a, sizeof a, "%s/a.moeq", dir);
        snprintf(b, sizeof b, "%s/b.moeq", dir);
        snprintf(c, sizeof c, "%s/c.moeq", dir);
        snprintf(path, sizeof path, FIXTURES "/%s", fx[f]);
        moeq_error err = { 0 };
        moeq_model *m = NULL;
        CHECK(moeq_model_open(path, &m, &err) == MOEQ_OK);
        if (!m) continue;
        int32_t *ids = NULL;
        int64_t n = 0, ctx = quick ? 128 : 256;
        CHECK(moeq_tokens_load(FIXTURES "/heldout.safetensors", moeq_model_config(m)->vocab, &ids, &n, &err) == MOEQ_OK);
        n = quick ? 512 : 1024;
        moeq_calib_opts co = { .ctx = ctx, .threads = 2 };
        moeq_calib_result cr;
        CHECK(moeq_calibrate(m, ids, n, h5, &co, &cr, &err) == MOEQ_OK);
        moeq_calib_result_free(&cr);
        moeq_calib_file *cf = NULL;
        CHECK(moeq_calib_file_open(h5, m, &cf, &err) == MOEQ_OK);
        CHECK_MSG(write_gptq(m, cf, NULL, 0, 0, 2, a, &err) == MOEQ_OK, "%s", err.detail);
        CHECK_MSG(write_gptq(m, NULL, ids, n, ctx, 1, b, &err) == MOEQ_OK, "%s", err.detail);
        CHECK_MSG(write_gptq(m, NULL, ids, n, ctx, 2, c, &err) == MOEQ_OK, "%s", err.detail);
        CHECK_MSG(files_equal(b, c), "%s: sequential output differs between 1 and 2 threads", fx[f]);
        /* the overrides are gone: the model's views are the checkpoint's again */
        moeq_mat v;
        CHECK(moeq_model_expert(m, 1, 0, MOEQ_PROJ_DOWN, &v, &err) == MOEQ_OK && v.dtype != MOEQ_DT_F32);

        moeq_pack *pa = NULL, *pb = NULL;
        CHECK(moeq_pack_open(a, &pa, &err) == MOEQ_OK);
        CHECK(moeq_pack_open(b, &pb, &err) == MOEQ_OK);
        moeq_expert_mat *mats = NULL;
        size_t nm = 0;
        CHECK(moeq_expert_mats(m, &mats, &nm, &err) == MOEQ_OK);
        int64_t same0 = 0, n0 = 0, diff_later = 0, later = 0;
        for (size_t i = 0; pa && pb && i < nm; i++) {
            const moeq_pack_tensor *ta = moeq_pack_find(pa, mats[i].name), *tb = moeq_pack_find(pb, mats[i].name);
            CHECK(ta && tb && ta->codec.type == MOEQ_CODEC_INT && tb->codec.type == MOEQ_CODEC_INT);
            if (!ta || !tb) continue;
            int64_t R = mats[i].mat.rows, C = mats[i].mat.cols;
            size_t sz = (size_t)moeq_qmat_bytes(3, 64, 0, R, C, NULL, NULL);
            int eq = memcmp(ta->data, tb->data, sz) == 0;
            if (mats[i].layer == 0) { n0++; same0 += eq; }
            else { later++; diff_later += !eq; }
        }
        CHECK_MSG(n0 > 0 && same0 == n0, "%s: layer 0: %lld of %lld pieces equal", fx[f], (long long)same0, (long long)n0);
        /* undersampled experts are RTN in both; the others see quantized inputs */
        CHECK_MSG(diff_later > 0, "%s: %lld of %lld later pieces changed", fx[f], (long long)diff_later,
                  (long long)later);
        /* too few tokens for one window */
        CHECK(write_gptq(m, NULL, ids, ctx - 1, ctx, 1, c, &err) == MOEQ_ERR_FORMAT);
        free(mats);
        moeq_pack_close(pa);
        moeq_pack_close(pb);
        moeq_calib_file_close(cf);
        free(ids);
        moeq_model_close(m);
        unlink(h5); unlink(a); unlink(b); unlink(c);
        rmdir(dir);
    }
}

int main(void)
{
    RUN_TEST(test_sequential);
    HARNESS_EXIT();
}
