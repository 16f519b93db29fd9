/* A general safetensors writer: many tensors, streamed one at a time, sharded like the Hugging
 * Face hub writer (model.safetensors, or model-0000k-of-0000n.safetensors plus
 * model.safetensors.index.json). Used by `moeq unpack`; moeq_st_write (moeq_safetensors.h) stays
 * the small one-file writer of `moeq tokenize`. */
#ifndef MOEQ_ST_WRITER_H
#define MOEQ_ST_WRITER_H

#include <stddef.h>
#include <stdint.h>
#include "moeq_status.h"
#include "moeq_safetensors.h"

/* Produces the bytes of tensor i (numel * dtype size, little-endian) into dst. */
typedef moeq_status (*moeq_st_fill_fn)(void *user, size_t i, void *dst, moeq_error *err);

/* Writes tensors[0..n) into the existing directory dir (normally a temporary directory that the
 * caller renames when everything is written). Tensors go to shards in the given order, a new
 * shard starting when the next tensor would take the current one past max_shard_bytes (0: no
 * limit; a tensor larger than the limit gets a shard of its own), as huggingface_hub's
 * split_state_dict_into_shards does. One shard: model.safetensors, no index. Inside a file the
 * tensors are sorted as the reference writer (safetensors' prepare) sorts them: dtype
 * descending in its enum order, then name; header {"__metadata__":{"format":"pt"}, ...} padded
 * with spaces to a multiple of 8. tensors[i].data, when not NULL, is written as is; else
 * fill(user, i, buf) produces it (buf holds one tensor: the peak memory is the largest tensor).
 * *nshards receives the shard count (may be NULL). Names must be unique. */
moeq_status moeq_st_write_dir(const char *dir, const moeq_st_out *tensors, size_t n,
                              uint64_t max_shard_bytes, moeq_st_fill_fn fill, void *user,
                              size_t *nshards, moeq_error *err);

/* The safetensors enum rank of a dtype (BOOL < U8 < I8 < I16 < U16 < F16 < BF16 < I32 < U32 <
 * F32 < F64 < I64 < U64), the first sort key of the reference writer. */
int moeq_st_dtype_rank(moeq_dtype dt);

#endif
