/* libFuzzer target: the ggml block decoders and matmul on arbitrary bytes. Byte 0 picks the
 * type (255: MXFP4, 254: IQ2_K, 253: TQ1_0, 252: TQ2_0, 251: IQ2_KS); the rest is block data (every bit pattern is a valid block, NaN/inf f16 fields
 * included). Crashes and sanitizer reports are failures, and so is a matmul variant that
 * disagrees with the decoded rows where everything is finite. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moeq_ggml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int ids[] = {0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 20, 23, 30};
    if (size < 1) return 0;
    /* byte 0 = 255: MXFP4, 254: IQ2_K, 253/252: TQ1_0/TQ2_0, 251: IQ2_KS (added after the corpus
     * was seeded; the other bytes keep their types) */
    const moeq_ggml_type_info *t = moeq_ggml_type_get(data[0] == 255   ? MOEQ_GGML_MXFP4
                                                      : data[0] == 254 ? MOEQ_GGML_IQ2_K
                                                      : data[0] == 253 ? MOEQ_GGML_TQ1_0
                                                      : data[0] == 252 ? MOEQ_GGML_TQ2_0
                                                      : data[0] == 251 ? MOEQ_GGML_IQ2_KS
                                                                       : ids[data[0] % 15]);
    data++, size--;
    if (size < (size_t)t->row_meta) return 0;
    /* a row-meta type: the row's meta first, then its blocks */
    const int64_t nblk = (int64_t)((size - (size_t)t->row_meta) / (size_t)t->bytes);
    if (nblk < 1) return 0;
    /* one row of nblk blocks; with block 1 types, a row of a multiple of 32 values */
    int64_t cols = nblk * t->block;
    if (t->block == 1) cols = cols / 32 * 32;
    if (cols < 32 && t->block == 1) return 0;
    float *y = malloc((size_t)cols * sizeof *y), *x = malloc((size_t)cols * sizeof *x), out[3];
    if (!y || !x) abort();
    moeq_ggml_dequant_row(t->type, data, y, cols);
    int finite = 1;
    for (int64_t i = 0; i < cols; i++) {
        x[i] = (float)((i * 37) % 11) - 5.0f;
        finite &= isfinite(y[i]) && fabsf(y[i]) < 1e30f;
    }
    static const char *v[] = {"ref", "avx2", "avx512"};
    double s = 0, a = 0;
    for (int64_t i = 0; i < cols; i++) { s += (double)y[i] * x[i]; a += fabs((double)y[i] * x[i]); }
    for (int k = 0; k < 3; k++) {
        if (!moeq_ggml_gemm_with(v[k], t->type, data, 1, cols, x, 1, &out[k])) continue;
        if (finite && fabs(out[k] - s) > 1e-5 * a + 1e-30) abort();
    }
    /* requantizing the decoded row must not crash or trip the sanitizers either, NaN and inf
     * included (the codes of a non-finite row are meaningless, but still a valid row) */
    {
        uint8_t *q = malloc(moeq_ggml_row_bytes(t->type, cols));
        if (!q) abort();
        moeq_ggml_quant_row(t->type, y, NULL, q, cols);
        moeq_ggml_quant_row(t->type, y, x, q, cols);
        free(q);
    }
    free(y);
    free(x);
    return 0;
}
