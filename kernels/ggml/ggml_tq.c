/* ggml's ternary blocks of 256 (docs/GGML-TYPES.md; BitNet b1.58 / TriLM): every value is
 * d·t with t in {−1, 0, 1}, stored as the code q = t + 1 in {0, 1, 2} beside one f16 d.
 *
 * TQ2_0 (66 bytes): qs[64], d. Element 128·h + 32·n + m is in bits 2n..2n+1 of qs[32·h + m].
 * TQ1_0 (54 bytes): qs[48], qh[4], d. Five codes per byte as a fixed-point base-3 fraction:
 * a byte holds ceil(256·v / 243) for v = Σ q_k 3^(4−k) (k = 0 the most significant trit), and
 * trit k comes back as ((uint8_t)(byte·3^k) · 3) >> 8. Element 32·k + m (m < 32) is trit k of
 * qs[m]; element 160 + 16·k + m (m < 16) trit k of qs[32 + m]; element 240 + 4·k + j trit k of
 * qh[j] (four trits, the fifth 0).
 *
 * llama.cpp's quantizers (quantize_row_tq*_ref, used with or without an imatrix) take d = max |x|
 * and t = lroundf(x / d) (halves away from zero). With importances moeq searches d by weighted
 * least squares instead (tq_search), never keeping a block worse than the reference's. */
#include "kernels/ggml/ggml_impl.h"

#include <stdlib.h>

enum { QK = GG_QK_K, TQ1_BYTES = 54, TQ2_BYTES = 66 };

static const uint8_t pow3[6] = {1, 3, 9, 27, 81, 243};

/* ---- encoding of the codes (q = t + 1) ----------------------------------------------------- */

/* llama.cpp's arithmetic on the codes, uint8 wrap-around included, so that the garbage codes of a
 * non-finite block (see tq_lround) give its bytes too */
static uint8_t tq1_byte(const int *q, int stride, int ntrits)
{
    uint8_t v = 0;
    for (int k = 0; k < ntrits; k++) v = (uint8_t)(v * 3 + q[k * stride]);
    if (ntrits == 4) v = (uint8_t)(v * 3);   /* qh: the first trit the most significant of five */
    return (uint8_t)(((uint16_t)v * 256 + (243 - 1)) / 243);   /* ceiling division */
}

static void tq1_encode(uint8_t *b, const int *q)
{
    for (int m = 0; m < 32; m++) b[m] = tq1_byte(q + m, 32, 5);
    for (int m = 0; m < 16; m++) b[32 + m] = tq1_byte(q + 160 + m, 16, 5);
    for (int j = 0; j < 4; j++) b[48 + j] = tq1_byte(q + 240 + j, 4, 4);
}

static void tq2_encode(uint8_t *b, const int *q)
{
    for (int h = 0; h < 2; h++)
        for (int m = 0; m < 32; m++) {
            uint8_t v = 0;
            for (int n = 0; n < 4; n++) v = (uint8_t)(v + ((q[128 * h + 32 * n + m] & 3) << (2 * n)));
            b[32 * h + m] = v;
        }
}

static inline int tq1_trit(uint8_t byte, int k)
{
    const uint8_t v = (uint8_t)(byte * pow3[k]);
    return ((uint16_t)v * 3) >> 8;
}

/* ---- dequantization -------------------------------------------------------------------------- */

static void dq_tq1_0(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += TQ1_BYTES) {
        const float d = gg_h2f(b + 52);
        for (int k = 0; k < 5; k++)
            for (int m = 0; m < 32; m++) *y++ = (float)(tq1_trit(b[m], k) - 1) * d;
        for (int k = 0; k < 5; k++)
            for (int m = 0; m < 16; m++) *y++ = (float)(tq1_trit(b[32 + m], k) - 1) * d;
        for (int k = 0; k < 4; k++)
            for (int j = 0; j < 4; j++) *y++ = (float)(tq1_trit(b[48 + j], k) - 1) * d;
    }
}

static void dq_tq2_0(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += TQ2_BYTES) {
        const float d = gg_h2f(b + 64);
        for (int h = 0; h < 2; h++)
            for (int n = 0; n < 4; n++)
                for (int m = 0; m < 32; m++) *y++ = (float)(((b[32 * h + m] >> (2 * n)) & 3) - 1) * d;
    }
}

/* ---- llama.cpp's reference ------------------------------------------------------------------- */

/* lroundf as x86-64 glibc gives it, reduced mod 256 (only the low bits reach the bytes): NaN, ±inf
 * and |v| >= 2^63 convert to LONG_MIN, whose low bits are 0 */
static int tq_lround(float v)
{
    if (!(fabsf(v) < 0x1p63f)) return 0;
    return (int)((unsigned long long)llroundf(v) & 0xffu);
}

/* the reference's d (before the f16 rounding) and codes of one block; the max as ggml's MAX
 * macro takes it (a NaN is forgotten unless it comes last) */
static float tq_ref_block(const float *x, int *q)
{
    float amax = 0;
    for (int j = 0; j < QK; j++) {
        const float a = fabsf(x[j]);
        amax = amax > a ? amax : a;
    }
    const float id = amax ? 1.0f / amax : 0.0f;
    for (int j = 0; j < QK; j++) q[j] = tq_lround(x[j] * id) + 1;
    return amax;
}

/* ---- weighted search ------------------------------------------------------------------------- */

/* Σ w (x − t·dh)² with the decoded values as dequant computes them; q the codes */
static double tq_err(const float *x, const float *w, const int *q, float dh)
{
    double e = 0;
    for (int j = 0; j < QK; j++) {
        const double r = (double)x[j] - (double)((float)(q[j] - 1) * dh);
        e += (double)w[j] * r * r;
    }
    return e;
}

/* codes nearest to x on the grid {−dh, 0, dh} (a half goes out, as lroundf) */
static void tq_assign(const float *x, float dh, int *q)
{
    for (int j = 0; j < QK; j++) {
        const float a = fabsf(x[j]);
        q[j] = dh > 0 && a >= 0.5f * dh ? (x[j] < 0 ? 0 : 2) : 1;
    }
}

typedef struct { float a; int i; } tq_mag;

static int by_mag(const void *p, const void *r)
{
    const tq_mag *u = p, *v = r;
    if (u->a != v->a) return u->a < v->a ? 1 : -1;   /* descending */
    return u->i - v->i;
}

/* The block's scale by weighted least squares. For a fixed d the best codes put the values with
 * |x| >= d/2 on ±d, so the continuous optimum keeps the k largest |x| for some k, with
 * d_k = Σ_top w|x| / Σ_top w and error Σ w x² − (Σ_top w|x|)² / Σ_top w: every k is scored
 * exactly. The best few d_k, then each rounded to f16 and its neighbours, get their nearest codes
 * and a least-squares refit (Lloyd steps); the reference is a candidate too, so the weighted error
 * is never above it. q, *d: the reference's on entry, the best on return. */
static void tq_search(const float *x, const float *w, int *q, float *dh)
{
    tq_mag mag[QK];
    for (int j = 0; j < QK; j++) mag[j] = (tq_mag){fabsf(x[j]), j};
    qsort(mag, QK, sizeof mag[0], by_mag);
    double best = tq_err(x, w, q, *dh);
    if (!(best == best) || best > 1e300) best = HUGE_VAL;
    /* the best NTOP values of k by the exact continuous score */
    enum { NTOP = 4 };
    double top_s[NTOP], top_d[NTOP];
    int ntop = 0;
    double s1 = 0, s0 = 0;
    for (int k = 0; k < QK; k++) {
        s1 += (double)w[mag[k].i] * mag[k].a;
        s0 += (double)w[mag[k].i];
        if (!(s0 > 0) || !(s1 > 0)) continue;
        const double s = s1 * s1 / s0;
        int at = ntop;
        while (at > 0 && s > top_s[at - 1]) at--;
        if (at >= NTOP) continue;
        for (int z = (ntop < NTOP ? ntop : NTOP - 1); z > at; z--) { top_s[z] = top_s[z - 1]; top_d[z] = top_d[z - 1]; }
        top_s[at] = s;
        top_d[at] = s1 / s0;
        if (ntop < NTOP) ntop++;
    }
    int cand[QK];
    for (int c = 0; c < ntop; c++) {
        const uint16_t h0 = gg_f2h((float)top_d[c]);
        for (int u = -2; u <= 2; u++) {
            const int hv = (int)h0 + u;
            if (hv <= 0 || hv >= 0x7c00) continue;   /* positive finite f16 only */
            float d = moeq_f16_to_f32((uint16_t)hv);
            for (int it = 0; it < 3; it++) {
                tq_assign(x, d, cand);
                const double e = tq_err(x, w, cand, d);
                if (e < best) {
                    best = e;
                    *dh = d;
                    memcpy(q, cand, sizeof cand);
                }
                /* refit d on these codes */
                double sx = 0, s2 = 0;
                for (int j = 0; j < QK; j++)
                    if (cand[j] != 1) {
                        sx += (double)w[j] * fabs((double)x[j]);
                        s2 += (double)w[j];
                    }
                if (!(s2 > 0)) break;
                const uint16_t hn = gg_f2h((float)(sx / s2));
                if ((hn & 0x7fff) == 0 || hn >= 0x7c00 || moeq_f16_to_f32(hn) == d) break;
                d = moeq_f16_to_f32(hn);
            }
        }
    }
}

static int block_finite(const float *x)
{
    for (int j = 0; j < QK; j++)
        if (!(fabsf(x[j]) <= 3.4028235e38f)) return 0;
    return 1;
}

/* one block: codes and the f16 d; w NULL: the reference */
static void tq_block(const float *x, const float *w, int *q, uint8_t *dptr)
{
    const float d = tq_ref_block(x, q);
    float dh = moeq_f16_to_f32(gg_f2h(d));
    if (w && block_finite(x) && dh > 0 && dh <= 65504.f) {
        tq_search(x, w, q, &dh);
        gg_put_h(dptr, dh);
    } else {
        gg_put_h(dptr, d);
    }
}

static void q_tq1_0(const float *x, const float *w, uint8_t *b, int64_t n)
{
    int q[QK];
    for (int64_t i = 0; i < n / QK; i++, x += QK, b += TQ1_BYTES) {
        tq_block(x, w ? w + i * QK : NULL, q, b + 52);
        tq1_encode(b, q);
    }
}

static void q_tq2_0(const float *x, const float *w, uint8_t *b, int64_t n)
{
    int q[QK];
    for (int64_t i = 0; i < n / QK; i++, x += QK, b += TQ2_BYTES) {
        tq_block(x, w ? w + i * QK : NULL, q, b + 64);
        tq2_encode(b, q);
    }
}

/* ---- GPTQ grid: A = d, B = 0, t = L − 1 --------------------------------------------------------- */

static void grid_tq(float d, float *A, float *B)
{
    for (int e = 0; e < QK; e++) { A[e] = d; B[e] = 0; }
}
static void grid_tq1_0(const uint8_t *b, float *A, float *B) { grid_tq(gg_h2f(b + 52), A, B); }
static void grid_tq2_0(const uint8_t *b, float *A, float *B) { grid_tq(gg_h2f(b + 64), A, B); }

static void pk_tq1_0(uint8_t *b, const uint8_t *L)
{
    int q[QK];
    for (int j = 0; j < QK; j++) q[j] = L[j];
    tq1_encode(b, q);
}
static void pk_tq2_0(uint8_t *b, const uint8_t *L)
{
    int q[QK];
    for (int j = 0; j < QK; j++) q[j] = L[j];
    tq2_encode(b, q);
}

const gg_codec gg_codec_tq1_0 = {MOEQ_GGML_TQ1_0, "TQ1_0", QK, TQ1_BYTES, dq_tq1_0, q_tq1_0, 3, 1, NULL, grid_tq1_0, pk_tq1_0,
                                0, NULL, NULL, NULL, MOEQ_GGML_RT_LLAMA};
const gg_codec gg_codec_tq2_0 = {MOEQ_GGML_TQ2_0, "TQ2_0", QK, TQ2_BYTES, dq_tq2_0, q_tq2_0, 3, 1, NULL, grid_tq2_0, pk_tq2_0,
                                0, NULL, NULL, NULL, MOEQ_GGML_RT_LLAMA};
