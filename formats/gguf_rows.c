/* Rows of a ggml tensor type to and from float32 for the GGUF container code, through the codecs
 * of moeq_ggml.h (kernels/ggml/: llama.cpp's formulas in its float order), and the NaN/Inf scan
 * of `moeq verify`. Row sizes come from the container's table, which also knows the types moeq
 * does not compute with. */
#include "moeq_gguf.h"
#include "moeq_ggml.h"

#include <math.h>
#include <stdlib.h>
#include "moeq_core.h"

uint64_t moeq_gguf_row_bytes(int type, int64_t n)
{
    const moeq_gguf_type *t = moeq_gguf_type_get(type);
    if (!t || n < 0 || n % t->block) return 0;
    return (uint64_t)t->row_meta + (uint64_t)(n / t->block) * (uint64_t)t->bytes;
}

int moeq_gguf_type_computable(int type) { return moeq_ggml_type_get(type) != NULL; }

void moeq_gguf_row_to_f32(int type, const void *src, float *dst, int64_t n)
{
    moeq_ggml_dequant_row((moeq_ggml_type)type, src, dst, n);
}

void moeq_gguf_row_from_f32(int type, const float *src, const float *imp, void *dst, int64_t n)
{
    moeq_ggml_quant_row((moeq_ggml_type)type, src, imp, dst, n);
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
            const unsigned char *rp = (const unsigned char *)t->data + (uint64_t)r * rb;
            for (int64_t k = 0; t->type == MOEQ_GGML_MXFP4 && k < t->ne[0] / 32; k++)
                if (rp[17 * k] == 255) {   /* E8M0 NaN: ggml_validate_row_data refuses it */
                    st = moeq_fail(err, MOEQ_ERR_NUMERIC, "%s: GGUF tensor '%s': MXFP4 block %lld of row %lld has the "
                                   "E8M0 exponent 255 (NaN; llama.cpp refuses the file) (block at byte offset %llu)",
                                   moeq_gguf_label(g), t->name, (long long)k, (long long)r,
                                   (unsigned long long)(t->file_offset + (uint64_t)r * rb + 17 * (uint64_t)k));
                    break;
                }
            if (st) break;
            moeq_gguf_row_to_f32(t->type, rp, row, t->ne[0]);
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
