/* ggml's MXFP4 (docs/GGML-TYPES.md; the OCP microscaling format with 32-value blocks): per block
 * one E8M0 exponent byte e, then qs[16], element j in the low nibble of qs[j] and element j + 16
 * in its high nibble. Each nibble is an e2m1 code (sign, two exponent bits, one mantissa bit),
 * decoded through ggml's doubled table kvalues = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, ..., -12} and the
 * half scale 2^(e − 128), so y = kvalues[q] · 2^(e − 128) = e2m1(q) · 2^(e − 127) — the same code
 * and exponent bytes as the Hugging Face (gpt-oss) blocks, whose nibbles are paired 2t, 2t + 1.
 *
 * Quantization is moeq's own: every element goes to its nearest e2m1 point (ties as ggml's
 * best_index_mxfp4: the lower table index), and the block's exponent is the one of
 * e0 − 2 .. e0 + 1 (e0 = floor(log2 amax) − 2 + 127, llama.cpp's choice) with the smallest
 * (importance-weighted) squared error, e0 on ties. llama.cpp's quantize_row_mxfp4_ref always takes
 * e0 and ignores an imatrix; moeq's block error is never larger than its (equal bytes when e0 is
 * best). */
#include "kernels/ggml/ggml_impl.h"

const int8_t gg_mxfp4_values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

float gg_e8m0_half(uint8_t e)
{
    /* 2^(e − 128) as bits: subnormal for e < 2, else exponent field e − 1; 255 gives 2^127 (ggml
     * does not special-case it either; its loader rejects the byte, moeq verify reports it) */
    uint32_t bits = e < 2 ? (uint32_t)0x00200000u << e : (uint32_t)(e - 1) << 23;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* ggml's best_index_mxfp4 (the first of the 16 entries with the least |kvalues[i]·d − x|),
 * searched over the 8 magnitudes: for x ≥ 0 no negative entry is strictly nearer than its
 * positive twin, for x < 0 the entry 0 comes before the negative ones, and the float errors of
 * ±m are equal by symmetry of rounding. */
static inline int nearest(float x, float d)
{
    const float a = fabsf(x);
    int best = 0;
    float be = fabsf(0.f * d - a);
    for (int m = 1; m < 8; m++) {
        float err = fabsf(gg_mxfp4_values[m] * d - a);
        if (err < be) { be = err; best = m; }
        else if (err > be) break;   /* |m·d − a| is unimodal in m; rounding keeps it so */
    }
    return best && x < 0 ? best + 8 : best;
}

/* codes of one block for exponent e into L; returns Σ w (x − y)² */
static double block_codes(const float *x, const float *w, int e, uint8_t *L)
{
    const float d = gg_e8m0_half((uint8_t)e);
    double err = 0;
    for (int j = 0; j < 32; j++) {
        L[j] = (uint8_t)nearest(x[j], d);
        double r = (double)x[j] - (double)(gg_mxfp4_values[L[j]] * d);
        err += (w ? (double)w[j] : 1.0) * r * r;
    }
    return err;
}

static void pack_block(uint8_t *qs, const uint8_t *L)
{
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((L[j] & 0xf) | ((L[j + 16] & 0xf) << 4));
}

static void q_mxfp4(const float *x, const float *w, uint8_t *b, int64_t n)
{
    for (int64_t i = 0; i < n / 32; i++, x += 32, b += 17, w = w ? w + 32 : NULL) {
        float amax = 0;
        for (int j = 0; j < 32; j++)
            if (amax < fabsf(x[j])) amax = fabsf(x[j]);   /* NaN never counts, as in ggml */
        int e0 = 0;
        if (amax > 0) {
            /* 252 at most: 12 x 2^(252 - 128) is the largest finite value (inf inputs included) */
            float f = floorf(log2f(amax)) - 2 + 127;
            e0 = f < 0 ? 0 : f > 252 ? 252 : (int)f;
        }
        uint8_t L[32], T[32];
        double best = block_codes(x, w, e0, L);
        int be = e0;
        for (int e = e0 - 2; amax > 0 && e <= e0 + 1; e++) {
            if (e == e0 || e < 0 || e > 254) continue;
            double err = block_codes(x, w, e, T);
            if (err < best) { best = err; be = e; memcpy(L, T, 32); }
        }
        b[0] = (uint8_t)be;
        pack_block(b + 1, L);
    }
}

static void dq_mxfp4(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += 17, y += 32) {
        const float d = gg_e8m0_half(b[0]);
        for (int j = 0; j < 16; j++) {
            y[j] = gg_mxfp4_values[b[1 + j] & 0xf] * d;
            y[j + 16] = gg_mxfp4_values[b[1 + j] >> 4] * d;
        }
    }
}

static void grid_mxfp4(const uint8_t *b, float *A, float *B)
{
    const float d = gg_e8m0_half(b[0]);
    for (int e = 0; e < 32; e++) { A[e] = d; B[e] = 0; }
}
static void pk_mxfp4(uint8_t *b, const uint8_t *L) { pack_block(b + 1, L); }

const gg_codec gg_codec_mxfp4 = {MOEQ_GGML_MXFP4, "MXFP4", 32, 17, dq_mxfp4, q_mxfp4, 16, 0, gg_mxfp4_values,
                                 grid_mxfp4, pk_mxfp4};
