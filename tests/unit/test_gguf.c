/* GGUF container: writer -> reader round trip of every value type, tensor layout (offsets padded
 * in info order), and the F16 / BF16 row conversions against independent references (GCC's
 * _Float16 cast, round to nearest even; a bf16 reference from the two truncation neighbours). */
#include "harness.h"
#include "moeq_gguf.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

static uint64_t rng = 88172645463325252ull;
static uint32_t next32(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

static void test_roundtrip(void)
{
    char path[] = "/tmp/moeq_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    moeq_error err = {0};
    moeq_gguf_writer *w = NULL;
    CHECK(moeq_gguf_writer_create(path, &w, &err) == MOEQ_OK);
    const char *strs[] = { "a", "", "Ġthe", "longer string" };
    const int32_t ints[] = { -1, 0, 7, 2147483647 };
    const float fl[] = { 0.5f, -2.0f, 1e-30f };
    CHECK(!moeq_gguf_w_str(w, "general.architecture", "qwen3moe", 8));
    CHECK(!moeq_gguf_w_u32(w, "k.u32", 4000000000u));
    CHECK(!moeq_gguf_w_i32(w, "k.i32", -5));
    CHECK(!moeq_gguf_w_f32(w, "k.f32", 0.25f));
    CHECK(!moeq_gguf_w_bool(w, "k.bool", 1));
    CHECK(!moeq_gguf_w_arr_str(w, "k.strs", strs, NULL, 4));
    CHECK(!moeq_gguf_w_arr_i32(w, "k.ints", ints, 4));
    CHECK(!moeq_gguf_w_arr_f32(w, "k.fl", fl, 3));
    const int64_t ne_a[] = { 32, 3 }, ne_b[] = { 5 }, ne_c[] = { 64, 2, 2 };
    CHECK(!moeq_gguf_w_tensor(w, "a", 2, ne_a, 8, &err));     /* Q8_0: 3 rows x 34 bytes = 102 */
    CHECK(!moeq_gguf_w_tensor(w, "b", 1, ne_b, 0, &err));     /* F32: 20 bytes */
    CHECK(!moeq_gguf_w_tensor(w, "c", 3, ne_c, 30, &err));    /* BF16: 512 bytes */
    CHECK(moeq_gguf_w_tensor(w, "bad", 1, ne_b, 8, &err) == MOEQ_ERR_MISUSE);   /* 5 is not a block */
    CHECK(!moeq_gguf_w_begin_data(w, &err));
    unsigned char buf[1024];
    for (int i = 0; i < 1024; i++) buf[i] = (unsigned char)i;
    CHECK(!moeq_gguf_w_data(w, buf, 100, &err));   /* pieces across tensor boundaries */
    CHECK(!moeq_gguf_w_data(w, buf + 100, 22, &err));
    CHECK(!moeq_gguf_w_data(w, buf, 512, &err));
    CHECK(moeq_gguf_w_data(w, buf, 1, &err) == MOEQ_ERR_MISUSE);
    uint64_t bytes = 0;
    CHECK(!moeq_gguf_writer_finish(w, &bytes, &err));
    moeq_gguf_writer_free(w);
    moeq_gguf *g = NULL;
    CHECK_MSG(moeq_gguf_open(path, &g, &err) == MOEQ_OK, "%s", err.detail);
    if (!g) return;
    CHECK(moeq_gguf_size(g) == bytes);
    uint32_t u = 0;
    float f = 0;
    int b = 0;
    CHECK(!moeq_gguf_get_u32(g, "k.u32", 1, &u, &err) && u == 4000000000u);
    CHECK(!moeq_gguf_get_f32(g, "k.f32", 1, &f, &err) && f == 0.25f);
    CHECK(!moeq_gguf_get_bool(g, "k.bool", 1, &b, &err) && b == 1);
    CHECK(moeq_gguf_get_u32(g, "k.i32", 1, &u, &err) == MOEQ_ERR_FORMAT);   /* strict types */
    CHECK(moeq_gguf_get_u32(g, "k.none", 1, &u, &err) == MOEQ_ERR_NOT_FOUND);
    CHECK(moeq_gguf_get_u32(g, "k.none", 0, &u, &err) == MOEQ_OK);
    const moeq_gguf_kv *kv = moeq_gguf_find_kv(g, "k.strs");
    CHECK(kv && kv->type == MOEQ_GGUF_ARRAY && kv->elem == MOEQ_GGUF_STRING && kv->count == 4);
    for (int i = 3; i >= 0; i--) {
        const char *s;
        uint64_t n;
        CHECK(moeq_gguf_arr_str(kv, (uint64_t)i, &s, &n) == 0 && n == strlen(strs[i]) && !memcmp(s, strs[i], n));
    }
    kv = moeq_gguf_find_kv(g, "k.ints");
    CHECK(kv && kv->elem == MOEQ_GGUF_I32 && kv->count == 4 && !memcmp(kv->value, ints, 16));
    CHECK(moeq_gguf_ntensors(g) == 3);
    const moeq_gguf_tensor *ta = moeq_gguf_find_tensor(g, "a"), *tb = moeq_gguf_find_tensor(g, "b"),
                           *tc = moeq_gguf_find_tensor(g, "c");
    CHECK(ta && tb && tc);
    if (ta && tb && tc) {
        CHECK(ta->nbytes == 102 && tb->nbytes == 20 && tc->nbytes == 512);
        CHECK(ta->offset == 0 && tb->offset == 128 && tc->offset == 160);   /* padded to 32, info order */
        CHECK(moeq_gguf_data_offset(g) % 32 == 0);
        CHECK(!memcmp(ta->data, buf, 102) && !memcmp(tb->data, buf + 102, 20) && !memcmp(tc->data, buf, 512));
        CHECK(tc->n_dims == 3 && tc->ne[0] == 64 && tc->ne[1] == 2 && tc->ne[2] == 2 && tc->numel == 256);
    }
    moeq_gguf_close(g);
    unlink(path);
}

static void test_f16_rows(void)
{
    /* every half pattern survives half -> float -> half (NaNs stay NaNs) */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t in = (uint16_t)h, out;
        float x;
        moeq_gguf_row_to_f32(1, &in, &x, 1);
        moeq_gguf_row_from_f32(1, &x, NULL, &out, 1);
        int nan = (in & 0x7c00) == 0x7c00 && (in & 0x3ff);
        if (nan ? !((out & 0x7c00) == 0x7c00 && (out & 0x3ff)) : out != in) bad++;
    }
    CHECK_MSG(bad == 0, "%d half patterns changed", bad);
    /* float -> half equals the compiler's _Float16 conversion (round to nearest even) on random
     * bit patterns: normals, subnormals, overflow to inf, exact ties */
    bad = 0;
    for (int i = 0; i < 1000000; i++) {
        uint32_t bits = next32();
        if (i % 4 == 1) bits = (bits & 0x80000000u) | (0x33000000u + (bits & 0x07ffffffu));   /* near half subnormals */
        if (i % 4 == 2) bits = (bits & 0xffffe000u) | 0x1000u;                                  /* exact ties */
        float x;
        memcpy(&x, &bits, 4);
        if (x != x) continue;
        _Float16 ref = (_Float16)x;
        uint16_t want, got;
        memcpy(&want, &ref, 2);
        moeq_gguf_row_from_f32(1, &x, NULL, &got, 1);
        if (got != want && bad++ < 5) fprintf(stderr, "  f16 of %a: 0x%04x, want 0x%04x\n", (double)x, got, want);
    }
    CHECK(bad == 0);
}

static void test_bf16_rows(void)
{
    int bad = 0;
    for (int i = 0; i < 1000000; i++) {
        uint32_t bits = next32();
        if (i % 3 == 1) bits = (bits & 0xffff0000u) | 0x8000u;   /* ties */
        float x;
        memcpy(&x, &bits, 4);
        if (x != x || (bits & 0x7f800000u) == 0x7f800000u) continue;
        uint32_t lo = bits & 0xffff0000u, hi = lo + 0x10000u;
        float flo, fhi;
        memcpy(&flo, &lo, 4);
        memcpy(&fhi, &hi, 4);
        /* past the largest bf16 the upper neighbour is inf, at 2^128 for rounding purposes */
        double dhi = (hi & 0x7fffffffu) == 0x7f800000u ? copysign(ldexp(1.0, 128), (double)x) : (double)fhi;
        double dl = fabs((double)x - flo), dh = fabs((double)x - dhi);
        uint16_t want = (uint16_t)((dl < dh || (dl == dh && !((lo >> 16) & 1))) ? lo >> 16 : hi >> 16), got;
        moeq_gguf_row_from_f32(30, &x, NULL, &got, 1);
        float back;
        moeq_gguf_row_to_f32(30, &got, &back, 1);
        if (got != want || ((uint32_t)got << 16) != (memcpy(&bits, &back, 4), bits)) bad++;
    }
    CHECK_MSG(bad == 0, "%d bf16 conversions differ", bad);
}

static void test_q8_0_rows(void)
{
    /* Q8_0: one scale per 32 values; the error of each value is at most half a step */
    float x[96], y[96];
    unsigned char q[3 * 34];
    for (int i = 0; i < 96; i++) x[i] = (float)((int32_t)next32() % 2000) / 1000.0f * (i < 32 ? 1e-3f : 1.0f);
    moeq_gguf_row_from_f32(8, x, NULL, q, 96);
    moeq_gguf_row_to_f32(8, q, y, 96);
    for (int b = 0; b < 3; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[32 * b + j]));
        for (int j = 0; j < 32; j++) CHECK_NEAR(y[32 * b + j], x[32 * b + j], amax / 127 * 0.5 * 1.002 + 1e-12);
    }
    CHECK(moeq_gguf_row_bytes(8, 96) == 102 && moeq_gguf_row_bytes(8, 100) == 0 && moeq_gguf_row_bytes(12, 256) == 144);
}

int main(void)
{
    RUN_TEST(test_roundtrip);
    RUN_TEST(test_f16_rows);
    RUN_TEST(test_bf16_rows);
    RUN_TEST(test_q8_0_rows);
    HARNESS_EXIT();
}
