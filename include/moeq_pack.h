/* The packed .moeq format (docs/FORMAT.md, rules F-n): reader, deep verify and writer. */
#ifndef MOEQ_PACK_H
#define MOEQ_PACK_H

#include <stddef.h>
#include <stdint.h>
#include "moeq_status.h"
#include "moeq_safetensors.h"
#include "moeq_kernels.h"

#define MOEQ_PACK_VERSION 1
#define MOEQ_PACK_ALIGN 64
#define MOEQ_PACK_INDEX_MAX ((uint64_t)256 << 20)

typedef enum moeq_codec_type { MOEQ_CODEC_RAW = 0, MOEQ_CODEC_INT = 1, MOEQ_CODEC_GGML = 2,
                               MOEQ_CODEC_TDICT = 3 /* t1d: ternary, dictionary coded (moeq_tdict.h) */ } moeq_codec_type;

typedef struct moeq_codec {
    moeq_codec_type type;
    moeq_dtype dtype;   /* RAW: F32, F16 or BF16 */
    int bits, group, sym;   /* INT: group 0 = per channel */
    int gtype;          /* GGML: a block type of moeq_ggml.h (Q4_K, IQ4_XS, ...), rows laid out as ggml's */
} moeq_codec;

/* "bf16", "q4g64a" (4 bits, group 64, asymmetric), "q3g128s", "q8ca" (per channel), and the
 * ggml block types in lower case: "q4_k", "q3_k", "q2_k", "q5_k", "q6_k", "iq4_xs", "iq4_nl",
 * "q4_0", "q4_1", "q5_0", "q5_1", "q8_0". */
int moeq_codec_format(const moeq_codec *c, char *buf, size_t cap);
/* Parses the same spellings (and "keep" -> RAW with dtype UNKNOWN = keep the source dtype). */
moeq_status moeq_codec_parse(const char *s, moeq_codec *out, moeq_error *err);

/* The matrix codecs (INT, GGML) on a [rows, cols] matrix, the one place that knows both layouts:
 * - check: MOEQ_OK when the codec describes that shape, else MISUSE with a detail that names
 *   the rule broken and, for a ggml type whose block does not divide cols, the nearest codec
 *   that fits (the caller prefixes the tensor's name);
 * - raw_bytes: the raw (decompressed) size the codec implies (FORMAT.md F-13), 0 when the shape
 *   does not fit; t1d: the most it can take (its exact size is in its header, moeq_tdict_size_of);
 * - bpw: stored bits per weight, codes + scales (+ zeros), as the type counts them; t1d (data-
 *   dependent): its dictionary's expected rate at p0 = 226/256 plus the per-row levels and
 *   offset, an estimate;
 * - dequant: rows [r0, r1) to float32 through the reference kernels (dst [(r1 - r0), cols]). */
moeq_status moeq_codec_check(const moeq_codec *c, int64_t rows, int64_t cols, moeq_error *err);
uint64_t moeq_codec_raw_bytes(const moeq_codec *c, int64_t rows, int64_t cols);
double moeq_codec_bpw(const moeq_codec *c, int64_t cols);
void moeq_codec_dequant(const moeq_codec *c, const void *raw, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                        float *dst);

typedef struct moeq_pack_blob {
    uint64_t offset, size, raw_size, xxh64;
    int zstd;
} moeq_pack_blob;

typedef struct moeq_pack_file_entry {
    const char *name;
    moeq_pack_blob blob;
    const void *data;    /* the bytes (in the mapping) */
} moeq_pack_file_entry;

typedef struct moeq_pack_source {
    const char *name;
    moeq_dtype dtype;
    int ndim;
    int64_t shape[MOEQ_MAX_DIMS];
    int64_t numel;
} moeq_pack_source;

typedef struct moeq_pack_tensor {
    const char *name;
    int ndim;
    int64_t shape[MOEQ_MAX_DIMS];
    int64_t numel;
    moeq_codec codec;
    const char *source;
    int64_t source_index;    /* index into the sources table */
    int64_t source_offset;   /* element offset in the source */
    moeq_pack_blob blob;
    const void *data;        /* raw bytes: in the mapping, or decompressed (zstd) */
    moeq_qmat q;             /* INT codec: the kernel view of data */
} moeq_pack_tensor;

typedef struct moeq_pack moeq_pack;

/* Parses a whole image in memory (buf outlives the handle); rules F-1..F-15 except the tensor
 * checksums. Used by the fuzzer and by open. zstd frames are decompressed here (F-14). */
moeq_status moeq_pack_parse(const void *buf, size_t len, const char *label, moeq_pack **out,
                            moeq_error *err);
moeq_status moeq_pack_open(const char *path, moeq_pack **out, moeq_error *err);
void moeq_pack_close(moeq_pack *p);
/* Deep check: F-9 checksums of every blob, zero padding, F-16 finite scales and raw floats. */
moeq_status moeq_pack_verify(const moeq_pack *p, moeq_error *err);
/* 1 when the first bytes of path are the magic. */
int moeq_pack_is_packed(const char *path);

const char *moeq_pack_path(const moeq_pack *p);
uint64_t moeq_pack_file_size(const moeq_pack *p);
size_t moeq_pack_nfiles(const moeq_pack *p);
const moeq_pack_file_entry *moeq_pack_file(const moeq_pack *p, size_t i);
const moeq_pack_file_entry *moeq_pack_find_file(const moeq_pack *p, const char *name);
size_t moeq_pack_ntensors(const moeq_pack *p);
const moeq_pack_tensor *moeq_pack_tensor_at(const moeq_pack *p, size_t i);
const moeq_pack_tensor *moeq_pack_find(const moeq_pack *p, const char *name);
size_t moeq_pack_nsources(const moeq_pack *p);
const moeq_pack_source *moeq_pack_source_at(const moeq_pack *p, size_t i);
const moeq_pack_source *moeq_pack_find_source(const moeq_pack *p, const char *name);
/* The piece of source `name` starting at element offset off, or NULL. */
const moeq_pack_tensor *moeq_pack_find_piece(const moeq_pack *p, const char *source, int64_t off);
/* The index's "metadata" object as JSON text (owned by the handle), or NULL. */
const char *moeq_pack_metadata(const moeq_pack *p);

/* ---- unpack: back to a Hugging Face directory (docs/unpack.md) --------------------------- */
typedef struct moeq_unpack_result {
    size_t tensors, dequantized, shards, files;
    uint64_t bytes;   /* tensor data written */
} moeq_unpack_result;

/* Writes dir (absent or an empty directory): the embedded files and every source tensor in the
 * source layout, int-codec pieces dequantized (reference kernel) and rounded to bf16, sharded at
 * max_shard_bytes (0: one file). Built under a temporary name next to dir, then renamed. */
moeq_status moeq_pack_unpack(const moeq_pack *p, const char *dir, uint64_t max_shard_bytes,
                             moeq_unpack_result *res, moeq_error *err);

/* ---- writer ---------------------------------------------------------------------------- */
typedef struct moeq_pack_writer moeq_pack_writer;

/* Creates a temporary file next to path; nothing appears at path until finish. zstd_level 0:
 * no compression; else per-tensor zstd frames at that level (1..22). */
moeq_status moeq_pack_writer_open(const char *path, int zstd_level, moeq_pack_writer **out,
                                  moeq_error *err);
moeq_status moeq_pack_write_file(moeq_pack_writer *w, const char *name, const void *data,
                                 size_t len, moeq_error *err);
moeq_status moeq_pack_write_source(moeq_pack_writer *w, const char *name, moeq_dtype dtype,
                                   int ndim, const int64_t *shape, moeq_error *err);
/* raw holds the decompressed bytes of the codec (moeq_qmat_bytes for INT). stored_size
 * receives the bytes written (after zstd), may be NULL. */
moeq_status moeq_pack_write_tensor(moeq_pack_writer *w, const char *name, int ndim,
                                   const int64_t *shape, const moeq_codec *codec,
                                   const char *source, int64_t source_offset, const void *raw,
                                   size_t raw_size, uint64_t *stored_size, moeq_error *err);
/* metadata_json: a JSON object text stored as "metadata" (may be NULL). Writes the index and
 * the prefix, flushes, renames to path. The writer is freed whatever the result. */
moeq_status moeq_pack_writer_finish(moeq_pack_writer *w, const char *metadata_json,
                                    moeq_error *err);
void moeq_pack_writer_abort(moeq_pack_writer *w);

#endif
