/* safetensors files (single or sharded with model.safetensors.index.json), read through mmap.
 * Validation follows the reference reader (docs/FORMAT-safetensors.md lists the rules ST-n). */
#ifndef MOEQ_SAFETENSORS_H
#define MOEQ_SAFETENSORS_H

#include <stdint.h>
#include "moeq_status.h"

typedef enum moeq_dtype {
    MOEQ_DT_UNKNOWN = 0,
    MOEQ_DT_F32, MOEQ_DT_F16, MOEQ_DT_BF16, MOEQ_DT_F64,
    MOEQ_DT_I8, MOEQ_DT_U8, MOEQ_DT_I16, MOEQ_DT_U16,
    MOEQ_DT_I32, MOEQ_DT_U32, MOEQ_DT_I64, MOEQ_DT_U64,
    MOEQ_DT_BOOL,
    MOEQ_DT_OTHER, /* a dtype name the reference knows (F8_*, F4, C64 ...) that moeq does not compute with */
    /* FP8 e4m3 (fn: no infinities, 0x7f/0xff NaN) of block-scaled sources (docs/FAMILIES.md);
     * after OTHER so that earlier codes keep their values */
    MOEQ_DT_F8_E4M3
} moeq_dtype;

#define MOEQ_MAX_DIMS 8

typedef struct moeq_tensor {
    const char *name;          /* owned by the file handle */
    moeq_dtype dtype;
    char dtype_name[16];       /* as written in the header, e.g. "BF16" */
    int ndim;
    int64_t shape[MOEQ_MAX_DIMS];
    int64_t numel;
    const void *data;          /* points into the mapping; valid until the file is closed */
    uint64_t nbytes;
    const char *file;          /* path of the file that holds it */
    uint64_t file_offset;      /* byte offset of data in that file */
} moeq_tensor;

/* Drops this process's mapped pages of t's data (moeq_pages_release, docs/eval.md "Memory"):
 * for a stage that has finished with the tensor; a later read maps the same bytes again. A
 * no-op for a tensor of an in-memory image. */
void moeq_tensor_release(const moeq_tensor *t);
void moeq_tensor_prefetch(const moeq_tensor *t);   /* readahead (MADV_WILLNEED) */

/* Size in bytes of one element, 0 for unknown/other. */
size_t moeq_dtype_size(moeq_dtype dt);
const char *moeq_dtype_name(moeq_dtype dt);

typedef struct moeq_st_file moeq_st_file;

/* Parses a whole safetensors image held in memory (buf stays owned by the caller and must
 * outlive the handle). label names it in error messages. Used by the fuzzer and by open. */
moeq_status moeq_st_parse(const void *buf, size_t len, const char *label,
                          moeq_st_file **out, moeq_error *err);
/* mmaps path read-only and parses it. */
moeq_status moeq_st_open(const char *path, moeq_st_file **out, moeq_error *err);
void moeq_st_close(moeq_st_file *f);
size_t moeq_st_count(const moeq_st_file *f);
const moeq_tensor *moeq_st_tensor(const moeq_st_file *f, size_t i);   /* sorted by data offset */
const moeq_tensor *moeq_st_find(const moeq_st_file *f, const char *name);
/* __metadata__ value for key, or NULL. */
const char *moeq_st_metadata(const moeq_st_file *f, const char *key);

/* A checkpoint: a directory with model.safetensors or model.safetensors.index.json + shards,
 * or one .safetensors file. Tensor lookup by name across shards. */
typedef struct moeq_checkpoint moeq_checkpoint;

moeq_status moeq_ckpt_open(const char *path, moeq_checkpoint **out, moeq_error *err);
void moeq_ckpt_close(moeq_checkpoint *c);
const char *moeq_ckpt_dir(const moeq_checkpoint *c);   /* directory holding the files */
size_t moeq_ckpt_count(const moeq_checkpoint *c);
const moeq_tensor *moeq_ckpt_tensor(const moeq_checkpoint *c, size_t i);
const moeq_tensor *moeq_ckpt_find(const moeq_checkpoint *c, const char *name);
uint64_t moeq_ckpt_bytes(const moeq_checkpoint *c);    /* sum of tensor data bytes */
size_t moeq_ckpt_shards(const moeq_checkpoint *c);
/* Validates an index (model.safetensors.index.json) held in memory: rules CK-1..CK-4, without
 * opening shards. Reports the number of weight_map entries and distinct shards (either may be
 * NULL). Used by the fuzzer and by moeq_ckpt_open. */
moeq_status moeq_ckpt_parse_index(const char *json, size_t len, const char *label,
                                  size_t *n_tensors, size_t *n_shards, moeq_error *err);

/* Scans a float tensor (F16, BF16, F32, F64) for NaN and Inf. Other dtypes pass. On a hit:
 * MOEQ_ERR_NUMERIC naming the file, the tensor, the count and the first element's byte offset. */
moeq_status moeq_tensor_check_finite(const moeq_tensor *t, uint64_t *n_nonfinite, moeq_error *err);

/* Token files (--tokens): a safetensors file with one 1-D I32/I64/U32 tensor, or raw
 * little-endian uint32 (.bin, .u32). Returns a malloc'ed array the caller frees. Ids are
 * checked against vocab when vocab > 0 (MOEQ_ERR_RANGE naming the file and index). */
moeq_status moeq_tokens_load(const char *path, int64_t vocab, int32_t **ids, int64_t *n,
                             moeq_error *err);

/* One tensor to write: data holds numel * dtype size bytes, little-endian. */
typedef struct moeq_st_out {
    const char *name;
    moeq_dtype dtype;
    int ndim;
    int64_t shape[MOEQ_MAX_DIMS];
    const void *data;
} moeq_st_out;

/* Writes a safetensors file ({"format":"pt"} metadata, header padded with spaces to 8 bytes,
 * tensors in the given order) to a temporary name in path's directory and renames it. */
moeq_status moeq_st_write(const char *path, const moeq_st_out *tensors, size_t n, moeq_error *err);

#endif
