/* NaN/Inf scan of stored tensors, by their exponent bits (no conversion): `moeq verify`
 * uses it for the deep check of a checkpoint. */
#include "moeq_safetensors.h"

#include <string.h>

moeq_status moeq_tensor_check_finite(const moeq_tensor *t, uint64_t *n_nonfinite, moeq_error *err)
{
    uint64_t bad = 0, first = 0;
    const unsigned char *p = t->data;
    size_t es = moeq_dtype_size(t->dtype);
    int64_t n = t->numel;
    for (int64_t i = 0; i < n; i++) {
        int nonfinite;
        switch (t->dtype) {
        case MOEQ_DT_BF16: { uint16_t v; memcpy(&v, p + 2 * i, 2); nonfinite = (v & 0x7F80u) == 0x7F80u; break; }
        case MOEQ_DT_F16:  { uint16_t v; memcpy(&v, p + 2 * i, 2); nonfinite = (v & 0x7C00u) == 0x7C00u; break; }
        case MOEQ_DT_F32:  { uint32_t v; memcpy(&v, p + 4 * i, 4); nonfinite = (v & 0x7F800000u) == 0x7F800000u; break; }
        case MOEQ_DT_F64: {
            uint64_t v;
            memcpy(&v, p + 8 * i, 8);
            nonfinite = (v & 0x7FF0000000000000ull) == 0x7FF0000000000000ull;
            break;
        }
        default: i = n; nonfinite = 0; break;   /* integer dtypes have no NaN */
        }
        if (nonfinite && bad++ == 0) first = (uint64_t)i;
    }
    if (n_nonfinite) *n_nonfinite = bad;
    if (bad)
        return moeq_fail(err, MOEQ_ERR_NUMERIC, "%s: tensor '%s': %llu NaN/Inf values, the first at element %llu "
                         "(file offset %llu)", t->file, t->name, (unsigned long long)bad,
                         (unsigned long long)first, (unsigned long long)(t->file_offset + first * es));
    return MOEQ_OK;
}
