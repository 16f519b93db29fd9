/* The unquantized ggml types: F32, F16 (IEEE binary16), BF16 (the top half of a float32).
 * Conversions as ggml does them: round to nearest even; NaN stays a quiet NaN (F16 0x7e00,
 * BF16 the top half with the quiet bit forced). */
#include "kernels/ggml/ggml_impl.h"

static void dq_f32(const uint8_t *b, float *y, int64_t n) { memcpy(y, b, (size_t)n * 4); }
static void q_f32(const float *x, const float *w, uint8_t *b, int64_t n)
{
    (void)w;
    memcpy(b, x, (size_t)n * 4);
}

static void dq_f16(const uint8_t *b, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = gg_h2f(b + 2 * i);
}
static void q_f16(const float *x, const float *w, uint8_t *b, int64_t n)
{
    (void)w;
    for (int64_t i = 0; i < n; i++) gg_put_h(b + 2 * i, x[i]);
}

static void dq_bf16(const uint8_t *b, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)gg_rd16(b + 2 * i) << 16;
        memcpy(y + i, &u, 4);
    }
}
static void q_bf16(const float *x, const float *w, uint8_t *b, int64_t n)
{
    (void)w;
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, 4);
        uint16_t h;
        if ((u & 0x7fffffffu) > 0x7f800000u) h = (uint16_t)((u >> 16) | 64);   /* NaN: force quiet */
        else h = (uint16_t)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
        gg_wr16(b + 2 * i, h);
    }
}

const gg_codec gg_codec_f32 = {MOEQ_GGML_F32, "F32", 1, 4, dq_f32, q_f32, 0, 0, NULL, NULL, NULL};
const gg_codec gg_codec_f16 = {MOEQ_GGML_F16, "F16", 1, 2, dq_f16, q_f16, 0, 0, NULL, NULL, NULL};
const gg_codec gg_codec_bf16 = {MOEQ_GGML_BF16, "BF16", 1, 2, dq_bf16, q_bf16, 0, 0, NULL, NULL, NULL};
