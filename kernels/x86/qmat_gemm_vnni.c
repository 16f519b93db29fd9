/* int8-activation GEMM (AVX-512 VNNI): not written yet; 0 sends every call to the
 * dequantize + sgemm tiles. */
#include "kernels/x86/qmat_x86.h"

int moeq_vnni_gemm_x8(const moeq_qmat *w, const float *X, int64_t n, int64_t ldx, int64_t r0, int64_t r1,
                      float *Y, int64_t ldy)
{
    (void)w; (void)X; (void)n; (void)ldx; (void)r0; (void)r1; (void)Y; (void)ldy;
    return 0;
}
