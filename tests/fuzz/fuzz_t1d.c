/* libFuzzer target: the t1d raw-bytes checker (moeq_tdict_check, FORMAT.md F-13 for t1d) on
 * arbitrary bytes, with the shape from the header when it is small (else [1, 32]: the header
 * is then refused). A tensor the checker accepts must then decode without a sanitizer report,
 * both kernels must agree with a float64 product of the decoded rows, and re-encoding its trits
 * must give back its codewords exactly (the parse of a trit stream is unique). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moeq_kernels.h"
#include "moeq_tdict.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t rows = 1, cols = 32;
    if (size >= MOEQ_TDICT_HDR && rd64(data + 8) >= 1 && rd64(data + 8) <= 256 && rd64(data + 16) >= 1 &&
        rd64(data + 16) <= 4096) {
        rows = (int64_t)rd64(data + 8);
        cols = (int64_t)rd64(data + 16);
    }
    moeq_error e;
    if (moeq_tdict_check(data, size, rows, cols, &e) != MOEQ_OK) return 0;
    /* accepted: the kernels read it in place, aligned as a blob is (64) */
    uint8_t *raw = aligned_alloc(64, (size + 63) / 64 * 64);
    if (!raw) abort();
    memcpy(raw, data, size);
    if (moeq_tdict_size_of(raw) != size) abort();
    const int64_t n = 2;
    float *w = malloc((size_t)(rows * cols) * sizeof *w), *x = malloc((size_t)(n * cols) * sizeof *x),
          *y1 = malloc((size_t)(n * rows) * sizeof *y1), *y2 = malloc((size_t)(n * rows) * sizeof *y2);
    uint8_t *t = malloc((size_t)cols + 64);
    uint16_t *cw = malloc((size_t)(cols + 1) * sizeof *cw);
    if (!w || !x || !y1 || !y2 || !t || !cw) abort();
    moeq_tdict_dequant(raw, 0, rows, w);
    for (int64_t i = 0; i < n * cols; i++) x[i] = (float)((i * 37) % 11) - 5.0f;
    moeq_tdict_gemm_ref(raw, x, n, cols, 0, rows, y1, rows);
    int avx2 = 0;
#if defined(__x86_64__)
    if (strcmp(moeq_kernels()->name, "ref")) {
        moeq_tdict_gemm_avx2(raw, x, n, cols, 0, rows, y2, rows);
        avx2 = 1;
    }
#endif
    for (int64_t i = 0; i < n; i++)
        for (int64_t r = 0; r < rows; r++) {
            double s = 0, a = 0;
            for (int64_t c = 0; c < cols; c++) {
                s += (double)w[r * cols + c] * x[i * cols + c];
                a += fabs((double)w[r * cols + c] * x[i * cols + c]);
            }
            if (fabs(y1[i * rows + r] - s) > 1e-5 * a + 1e-30) abort();
            if (avx2 && fabs(y2[i * rows + r] - s) > 1e-5 * a + 1e-30) abort();
        }
    moeq_tdict_view v;
    moeq_tdict_view_of(raw, &v);
    const moeq_tdict *dec = moeq_tdict_get(v.k), *enc = moeq_tdict_get_encoder(v.k);
    if (!dec || !enc) abort();
    for (int64_t r = 0; r < rows; r++) {
        int64_t m = v.off[r + 1] - v.off[r];
        if (moeq_tdict_decode_row(dec, v.cw + v.off[r], m, cols, t)) abort();
        int64_t m2 = moeq_tdict_encode_row(enc, t, cols, cw, cols + 1);
        if (m2 != m || memcmp(cw, v.cw + v.off[r], (size_t)m * 2)) abort();
    }
    free(w); free(x); free(y1); free(y2); free(t); free(cw); free(raw);
    return 0;
}
