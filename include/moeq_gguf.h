/* GGUF v3 files (llama.cpp's container): the reader over mmap, the model mapping (a GGUF of the
 * architectures llama, qwen2moe, qwen3moe, olmoe seen as a moeq model) and the writer used by
 * `moeq export gguf`. Rules G-1..G-12 are listed in docs/FORMAT-gguf.md; every error names the
 * file, the key or tensor, the rule and the byte offset. Block-type codecs are in moeq_ggml.h. */
#ifndef MOEQ_GGUF_H
#define MOEQ_GGUF_H

#include <stddef.h>
#include <stdint.h>
#include "moeq_status.h"

/* GGUF metadata value types (gguf.h, pinned). */
typedef enum moeq_gguf_vtype {
    MOEQ_GGUF_U8 = 0, MOEQ_GGUF_I8 = 1, MOEQ_GGUF_U16 = 2, MOEQ_GGUF_I16 = 3,
    MOEQ_GGUF_U32 = 4, MOEQ_GGUF_I32 = 5, MOEQ_GGUF_F32 = 6, MOEQ_GGUF_BOOL = 7,
    MOEQ_GGUF_STRING = 8, MOEQ_GGUF_ARRAY = 9, MOEQ_GGUF_U64 = 10, MOEQ_GGUF_I64 = 11,
    MOEQ_GGUF_F64 = 12
} moeq_gguf_vtype;

#define MOEQ_GGUF_DEFAULT_ALIGNMENT 32
#define MOEQ_GGUF_MAX_NAME 64        /* GGML_MAX_NAME: tensor names are shorter */

/* Every ggml tensor type id the container knows (sizes, names), whether or not moeq computes
 * with it: the reader checks sizes of all of them; the model names an unsupported one. */
typedef struct moeq_gguf_type {
    int id;
    const char *name;
    int block, bytes;
    int row_meta;   /* bytes at the start of each row before its blocks (ik_llama.cpp's row_meta_size) */
} moeq_gguf_type;
const moeq_gguf_type *moeq_gguf_type_get(int id);          /* NULL for an unknown id */
const moeq_gguf_type *moeq_gguf_type_by_name(const char *name);   /* case-insensitive */

typedef struct moeq_gguf_kv {
    const char *key;                 /* NUL-terminated copy */
    moeq_gguf_vtype type;
    moeq_gguf_vtype elem;            /* arrays: element type */
    uint64_t count;                  /* arrays: element count; scalars: 1 */
    const unsigned char *value;      /* scalars, arrays: the first element, in the image */
    uint64_t offset;                 /* file offset of value */
    const unsigned char *raw;        /* the encoded value (arrays: from the element type on) */
    uint64_t raw_len;
} moeq_gguf_kv;

typedef struct moeq_gguf_tensor {
    const char *name;                /* NUL-terminated copy */
    int n_dims;
    int64_t ne[4];                   /* ne[0] innermost (the input dimension of a weight) */
    int type;                        /* ggml type id */
    uint64_t offset;                 /* relative to the data section */
    uint64_t file_offset;
    uint64_t nbytes;
    int64_t numel;
    const void *data;                /* in the image */
} moeq_gguf_tensor;

typedef struct moeq_gguf moeq_gguf;

/* Parses an image held in memory (buf outlives the handle; used by the fuzzer and by open). */
moeq_status moeq_gguf_parse(const void *buf, size_t len, const char *label, moeq_gguf **out,
                            moeq_error *err);
/* mmaps path read-only and parses it. */
moeq_status moeq_gguf_open(const char *path, moeq_gguf **out, moeq_error *err);
void moeq_gguf_close(moeq_gguf *g);
/* 1 when the file starts with the GGUF magic. */
int moeq_gguf_is_gguf(const char *path);
/* A path moeq treats as GGUF: by magic, or by the .gguf suffix (so a broken magic is reported). */
int moeq_gguf_is_path(const char *path);

const char *moeq_gguf_label(const moeq_gguf *g);
uint32_t moeq_gguf_version(const moeq_gguf *g);
uint32_t moeq_gguf_alignment(const moeq_gguf *g);
uint64_t moeq_gguf_data_offset(const moeq_gguf *g);
uint64_t moeq_gguf_size(const moeq_gguf *g);
size_t moeq_gguf_nkv(const moeq_gguf *g);
const moeq_gguf_kv *moeq_gguf_kv_at(const moeq_gguf *g, size_t i);
const moeq_gguf_kv *moeq_gguf_find_kv(const moeq_gguf *g, const char *key);
size_t moeq_gguf_ntensors(const moeq_gguf *g);
const moeq_gguf_tensor *moeq_gguf_tensor_at(const moeq_gguf *g, size_t i);   /* file order */
const moeq_gguf_tensor *moeq_gguf_find_tensor(const moeq_gguf *g, const char *name);

/* Typed reads of scalar keys, strict like llama.cpp's loader: a key of another type is a
 * MOEQ_ERR_FORMAT naming both types. A missing key: MOEQ_ERR_NOT_FOUND when required, else
 * MOEQ_OK with *out untouched. Per-layer arrays are refused: moeq has one value per model. */
moeq_status moeq_gguf_get_u32(const moeq_gguf *g, const char *key, int required, uint32_t *out,
                              moeq_error *err);
moeq_status moeq_gguf_get_f32(const moeq_gguf *g, const char *key, int required, float *out,
                              moeq_error *err);
moeq_status moeq_gguf_get_bool(const moeq_gguf *g, const char *key, int required, int *out,
                               moeq_error *err);
/* A string value (not NUL-terminated in the image): *s and *n. */
moeq_status moeq_gguf_get_str(const moeq_gguf *g, const char *key, int required, const char **s,
                              uint64_t *n, moeq_error *err);
/* Element i of an array of strings: walks the array (the parser checked every length). */
int moeq_gguf_arr_str(const moeq_gguf_kv *kv, uint64_t i, const char **s, uint64_t *n);
const char *moeq_gguf_vtype_name(int t);

/* A tokenizer.json (malloc'ed text) rebuilt from tokenizer.ggml.* (formats/gguf_tokenizer.c):
 * byte-level BPE (`gpt2`) with a pre-tokenizer of moeq's table, SentencePiece (`llama`) as
 * llama.cpp's SPM merges by score; else MOEQ_ERR_UNSUPPORTED. */
moeq_status moeq_gguf_tokenizer_json(const moeq_gguf *g, char **out, size_t *len, moeq_error *err);
/* The tokenizer of a GGUF: tokenizer.huggingface.json when present, else the rebuilt one. */
struct moeq_tokenizer;
moeq_status moeq_gguf_tokenizer(const moeq_gguf *g, struct moeq_tokenizer **out, moeq_error *err);

/* ---- writer (formats/gguf_write.c) -------------------------------------------------------- */

typedef struct moeq_gguf_writer moeq_gguf_writer;

/* Starts a file: metadata and tensor infos are collected in memory, tensor data is streamed to
 * a temporary sibling of path in info order (G-9), and moeq_gguf_writer_finish renames it. */
moeq_status moeq_gguf_writer_create(const char *path, moeq_gguf_writer **out, moeq_error *err);
void moeq_gguf_writer_free(moeq_gguf_writer *w);   /* removes the temporary when not finished */
moeq_status moeq_gguf_w_u32(moeq_gguf_writer *w, const char *key, uint32_t v);
moeq_status moeq_gguf_w_i32(moeq_gguf_writer *w, const char *key, int32_t v);
moeq_status moeq_gguf_w_f32(moeq_gguf_writer *w, const char *key, float v);
moeq_status moeq_gguf_w_bool(moeq_gguf_writer *w, const char *key, int v);
moeq_status moeq_gguf_w_str(moeq_gguf_writer *w, const char *key, const char *v, size_t n);
/* A value copied from another file: type and its encoded bytes (moeq_gguf_kv raw). */
moeq_status moeq_gguf_w_raw(moeq_gguf_writer *w, const char *key, moeq_gguf_vtype type,
                            const void *raw, uint64_t n);
/* Arrays: strings (n pointers with lengths), int32, float32. */
moeq_status moeq_gguf_w_arr_str(moeq_gguf_writer *w, const char *key, const char *const *v,
                                const size_t *lens, uint64_t n);
moeq_status moeq_gguf_w_arr_i32(moeq_gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
moeq_status moeq_gguf_w_arr_f32(moeq_gguf_writer *w, const char *key, const float *v, uint64_t n);
/* Declares a tensor (ne[0] innermost) of a ggml type; data follows in the same order. */
moeq_status moeq_gguf_w_tensor(moeq_gguf_writer *w, const char *name, int n_dims, const int64_t *ne,
                               int type, moeq_error *err);
/* Writes the header; then the data of each declared tensor, in order, in any number of pieces. */
moeq_status moeq_gguf_w_begin_data(moeq_gguf_writer *w, moeq_error *err);
moeq_status moeq_gguf_w_data(moeq_gguf_writer *w, const void *p, size_t n, moeq_error *err);
moeq_status moeq_gguf_writer_finish(moeq_gguf_writer *w, uint64_t *bytes, moeq_error *err);

/* ---- rows of a ggml type (formats/gguf_rows.c) ------------------------------------------ */

/* 1 when moeq converts rows of this type (dequant and quant). */
int moeq_gguf_type_computable(int type);
/* Bytes of a row of n values of type; 0 when n is not a multiple of the block or type unknown. */
uint64_t moeq_gguf_row_bytes(int type, int64_t n);
/* One row to float32 / from float32 (imp: importance per column, NULL for none) through the
 * codecs of moeq_ggml.h (llama.cpp's formulas). Only for computable types. */
void moeq_gguf_row_to_f32(int type, const void *src, float *dst, int64_t n);
void moeq_gguf_row_from_f32(int type, const float *src, const float *imp, void *dst, int64_t n);
/* Every value of every float or computable block-type tensor is finite: else MOEQ_ERR_NUMERIC
 * naming the tensor, the row and its byte offset. */
moeq_status moeq_gguf_check_finite(const moeq_gguf *g, moeq_error *err);

#endif
