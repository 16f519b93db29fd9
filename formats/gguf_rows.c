/* Rows of a ggml tensor type to and from float32, for the GGUF container code. F32, F16 and
 * BF16 are container-level conversions done here, bit-exact with ggml (round to nearest even;
 * BF16 NaNs forced quiet as ggml_compute_fp32_to_bf16 does). Block types go through the codecs
 * of moeq_ggml.h (kernels/ggml/, MOEQ_HAVE_GGML_CODECS); a build without them still reads and
 * writes Q8_0, Q4_0 and Q4_1, whose reference formulas (ggml-quants.c *_ref, dequantize_row_*)
 * are short enough to keep here, so GGUF files of those types work in every build. */
#include "moeq_gguf.h"
#ifdef MOEQ_HAVE_GGML_CODECS
#include "moeq_ggml.h"
#endif

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "moeq_core.h"

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float half_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, em = h & 0x7fffu;
    if (em >= 0x7c00u) return bits_f32(sign | 0x7f800000u | (em & 0x3ffu) << 13);
    if (em >= 0x0400u) return bits_f32(sign | ((em << 13) + ((uint32_t)(127 - 15) << 23)));
    return bits_f32(sign | f32_bits((float)em * 0x1p-24f));   /* subnormal: exact */
}

/* IEEE binary32 -> binary16, round to nearest even (what F16C's vcvtps2ph with imm 0 and
 * numpy's astype(float16) give). */
static uint16_t f32_to_half(float f)
{
    uint32_t x = f32_bits(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));   /* NaN: quiet */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);   /* rounds to >= 65520: inf */
    if (ax < 0x38800000u) {   /* below 2^-14: a subnormal half (or zero), in units of 2^-24 */
        float v = bits_f32(ax) * 0x1p24f;   /* exact scaling, then RNE to an integer */
        float r = rintf(v);
        return (uint16_t)(sign | (uint16_t)r);
    }
    uint32_t mant = ax & 0x7fffffu, e = (ax >> 23) - 127 + 15;
    uint32_t h = e << 10 | mant >> 13, rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;   /* carries into the exponent */
    return (uint16_t)(sign | h);
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64);
    return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
}

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static void wr16(unsigned char *p, uint16_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }

uint64_t moeq_gguf_row_bytes(int type, int64_t n)
{
    const moeq_gguf_type *t = moeq_gguf_type_get(type);
    if (!t || n < 0 || n % t->block) return 0;
    return (uint64_t)(n / t->block) * (uint64_t)t->bytes;
}

int moeq_gguf_type_computable(int type)
{
    if (type == 0 || type == 1 || type == 30) return 1;
#ifdef MOEQ_HAVE_GGML_CODECS
    return moeq_ggml_type_get(type) != NULL;
#else
    return type == 2 || type == 3 || type == 8;
#endif
}

#ifndef MOEQ_HAVE_GGML_CODECS
static void q_to_f32(int type, const unsigned char *s, float *y, int64_t n)
{
    for (int64_t b = 0; b < n / 32; b++, y += 32) {
        const float d = half_to_f32(rd16(s));
        if (type == 8) {
            for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)s[2 + j] * d;
            s += 34;
        } else if (type == 2) {
            for (int j = 0; j < 16; j++) {
                y[j] = (float)((s[2 + j] & 0x0f) - 8) * d;
                y[j + 16] = (float)((s[2 + j] >> 4) - 8) * d;
            }
            s += 18;
        } else {
            const float m = half_to_f32(rd16(s + 2));
            for (int j = 0; j < 16; j++) {
                y[j] = (float)(s[4 + j] & 0x0f) * d + m;
                y[j + 16] = (float)(s[4 + j] >> 4) * d + m;
            }
            s += 20;
        }
    }
}

static void q_from_f32(int type, const float *x, unsigned char *o, int64_t n)
{
    for (int64_t b = 0; b < n / 32; b++, x += 32) {
        if (type == 8) {
            float amax = 0.0f;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
            const float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
            wr16(o, f32_to_half(d));
            for (int j = 0; j < 32; j++) o[2 + j] = (unsigned char)(int8_t)roundf(x[j] * id);
            o += 34;
        } else if (type == 2) {
            float amax = 0.0f, max = 0.0f;
            for (int j = 0; j < 32; j++)
                if (amax < fabsf(x[j])) {
                    amax = fabsf(x[j]);
                    max = x[j];
                }
            const float d = max / -8, id = d ? 1.0f / d : 0.0f;
            wr16(o, f32_to_half(d));
            for (int j = 0; j < 16; j++) {
                int8_t a = (int8_t)(x[j] * id + 8.5f), c = (int8_t)(x[j + 16] * id + 8.5f);
                a = a < 15 ? a : 15;
                c = c < 15 ? c : 15;
                o[2 + j] = (unsigned char)(a | c << 4);
            }
            o += 18;
        } else {
            float min = FLT_MAX, max = -FLT_MAX;
            for (int j = 0; j < 32; j++) {
                if (x[j] < min) min = x[j];
                if (x[j] > max) max = x[j];
            }
            const float d = (max - min) / 15, id = d ? 1.0f / d : 0.0f;
            wr16(o, f32_to_half(d));
            wr16(o + 2, f32_to_half(min));
            for (int j = 0; j < 16; j++) {
                int8_t a = (int8_t)((x[j] - min) * id + 0.5f), c = (int8_t)((x[j + 16] - min) * id + 0.5f);
                a = a < 15 ? a : 15;
                c = c < 15 ? c : 15;
                o[4 + j] = (unsigned char)(a | c << 4);
            }
            o += 20;
        }
    }
}
#endif

void moeq_gguf_row_to_f32(int type, const void *src, float *dst, int64_t n)
{
    const unsigned char *s = src;
    switch (type) {
    case 0: memcpy(dst, src, (size_t)n * 4); return;
    case 1: for (int64_t i = 0; i < n; i++) dst[i] = half_to_f32(rd16(s + 2 * i)); return;
    case 30: for (int64_t i = 0; i < n; i++) dst[i] = bits_f32((uint32_t)rd16(s + 2 * i) << 16); return;
    default:
#ifdef MOEQ_HAVE_GGML_CODECS
        moeq_ggml_dequant_row((moeq_ggml_type)type, src, dst, n);
#else
        q_to_f32(type, s, dst, n);
#endif
    }
}

void moeq_gguf_row_from_f32(int type, const float *src, const float *imp, void *dst, int64_t n)
{
    unsigned char *o = dst;
    switch (type) {
    case 0: memcpy(dst, src, (size_t)n * 4); return;
    case 1: for (int64_t i = 0; i < n; i++) wr16(o + 2 * i, f32_to_half(src[i])); return;
    case 30: for (int64_t i = 0; i < n; i++) wr16(o + 2 * i, f32_to_bf16(src[i])); return;
    default:
#ifdef MOEQ_HAVE_GGML_CODECS
        moeq_ggml_quant_row((moeq_ggml_type)type, src, imp, dst, n);
#else
        (void)imp;   /* the fallback codecs are the unweighted references */
        q_from_f32(type, src, o, n);
#endif
    }
}

moeq_status moeq_gguf_check_finite(const moeq_gguf *g, moeq_error *err)
{
    int64_t maxc = 1;
    for (size_t i = 0; i < moeq_gguf_ntensors(g); i++) {
        const moeq_gguf_tensor *t = moeq_gguf_tensor_at(g, i);
        if (t->ne[0] > maxc) maxc = t->ne[0];
    }
    float *row = malloc((size_t)maxc * sizeof *row);
    if (!row) return moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory", moeq_gguf_label(g));
    moeq_status st = MOEQ_OK;
    for (size_t i = 0; i < moeq_gguf_ntensors(g) && !st; i++) {
        const moeq_gguf_tensor *t = moeq_gguf_tensor_at(g, i);
        if (!moeq_gguf_type_computable(t->type)) continue;   /* integer and unsupported types: bytes only */
        uint64_t rb = moeq_gguf_row_bytes(t->type, t->ne[0]);
        int64_t rows = t->numel / t->ne[0];
        for (int64_t r = 0; r < rows && !st; r++) {
            moeq_gguf_row_to_f32(t->type, (const unsigned char *)t->data + (uint64_t)r * rb, row, t->ne[0]);
            for (int64_t j = 0; j < t->ne[0]; j++)
                if (!isfinite(row[j])) {
                    st = moeq_fail(err, MOEQ_ERR_NUMERIC, "%s: GGUF tensor '%s': value %lld of row %lld is %s (row "
                                   "at byte offset %llu)", moeq_gguf_label(g), t->name, (long long)j, (long long)r,
                                   isnan(row[j]) ? "NaN" : "Inf", (unsigned long long)(t->file_offset + (uint64_t)r * rb));
                    break;
                }
        }
        moeq_pages_release(t->data, (size_t)t->nbytes);
    }
    free(row);
    return st;
}
