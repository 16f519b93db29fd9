/* For tests whose checks are float32 identities (two ways of computing one thing agreeing to
 * ~1e-5, a Hessian against float64): the kernel set in use where its activations are float32,
 * else MOEQ_KERNEL=float's. bf16 or int8 activations move results by ~2^-9 relative; the sets
 * that have them are tested against transformers by KL and top-1 (logits_close.h) and
 * against the reference kernels (test_kernels_*). Returns the set to restore. */
#ifndef MOEQ_FLOAT_KERNELS_H
#define MOEQ_FLOAT_KERNELS_H

#include "moeq_kernels.h"

static const moeq_kernel_set *use_float_kernels(void)
{
    const moeq_kernel_set *prev = moeq_kernels();
    if (!prev->float_acts) moeq_kernels_use(moeq_kernels_get("float"));
    return prev;
}

#endif
