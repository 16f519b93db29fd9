/* Checkpoints of a long run (docs/quantize.md, "Resume"): a directory holding a manifest (what
 * inputs and options the run was started with) and one blob per finished unit of work (a layer),
 * each written atomically (temporary + rename), so a run killed at any point leaves complete
 * units only. A stage opens the directory with the fields that identify its inputs; a manifest
 * written with other fields is refused naming the first field that differs. The blob content is
 * the stage's own (moeq_buf / moeq_rd below help to serialize it).
 *
 *   DIR/manifest              text: "moeq-resume 1", "stage S", "units N", "field NAME VALUE"...
 *   DIR/unit-00000012.bin     "MOEQCKPT", u32 version, u32 0, u64 unit, u64 length, u64 xxh64
 *                             of the payload, then the payload (little-endian fields)
 *
 * Not thread-safe; under MPI one rank (rank 0) owns the directory. */
#ifndef MOEQ_RESUME_H
#define MOEQ_RESUME_H

#include <stddef.h>
#include <stdint.h>
#include "moeq_status.h"

#define MOEQ_RESUME_NAME_MAX 32
#define MOEQ_RESUME_VALUE_MAX 200

typedef struct moeq_resume_field {
    char name[MOEQ_RESUME_NAME_MAX];     /* [a-z0-9_]+ */
    char value[MOEQ_RESUME_VALUE_MAX];   /* one line of text */
} moeq_resume_field;

/* Sets f to name = text, or to name = "xxh64:HEX" of text when it is too long for a value or
 * holds a newline. */
void moeq_resume_field_text(moeq_resume_field *f, const char *name, const char *text);
/* f = name = an identity of the file at path: its size and xxh64 of its bytes (of its first
 * and last MiB when it is larger than 256 MiB). A missing file is MOEQ_ERR_NOT_FOUND. */
moeq_status moeq_resume_field_file(moeq_resume_field *f, const char *name, const char *path, moeq_error *err);
/* f = name = xxh64 of n bytes. */
void moeq_resume_field_hash(moeq_resume_field *f, const char *name, const void *data, size_t n);

typedef struct moeq_resume moeq_resume;

/* Opens dir for stage with n_units units: creates it (and its manifest) when absent or empty;
 * else its manifest must name the same stage, unit count and fields (MOEQ_ERR_FORMAT naming the
 * first that differs, with both values). A directory that holds other files but no manifest is
 * refused (MOEQ_ERR_FORMAT). Leftover temporaries of a killed run are removed; the unit files
 * present are the finished units (their headers are checked here, their checksums on read). */
moeq_status moeq_resume_open(const char *dir, const char *stage, const moeq_resume_field *fields, size_t n_fields,
                             int64_t n_units, moeq_resume **out, moeq_error *err);
void moeq_resume_close(moeq_resume *r);
/* Removes the manifest and the unit files, then dir when it is empty, and closes r (a stage
 * that does not keep its checkpoint after success). */
void moeq_resume_remove(moeq_resume *r);
const char *moeq_resume_dir(const moeq_resume *r);
int moeq_resume_done(const moeq_resume *r, int64_t unit);
int64_t moeq_resume_n_done(const moeq_resume *r);
/* Writes unit's blob atomically (temporary, fsync, rename); the unit is then done. */
moeq_status moeq_resume_write(moeq_resume *r, int64_t unit, const void *data, size_t n, moeq_error *err);
/* Reads a finished unit's blob into *data (malloc'ed; NULL when n is 0): a bad header or
 * checksum is MOEQ_ERR_FORMAT naming the file. */
moeq_status moeq_resume_read(moeq_resume *r, int64_t unit, void **data, size_t *n, moeq_error *err);

/* A growing byte buffer for blobs and messages (little-endian integers). An allocation failure
 * is remembered in oom (checked once at the end). */
typedef struct moeq_buf { uint8_t *p; size_t n, cap; int oom; } moeq_buf;
void moeq_buf_put(moeq_buf *b, const void *data, size_t n);
void moeq_buf_u32(moeq_buf *b, uint32_t v);
void moeq_buf_u64(moeq_buf *b, uint64_t v);
void moeq_buf_f64(moeq_buf *b, double v);
void moeq_buf_str(moeq_buf *b, const char *s);   /* u32 length, bytes */
void moeq_buf_free(moeq_buf *b);

/* A bounds-checked reader over a blob: reads past the end set bad and return zeros/NULL. */
typedef struct moeq_rd { const uint8_t *p; size_t n, off; int bad; } moeq_rd;
uint32_t moeq_rd_u32(moeq_rd *r);
uint64_t moeq_rd_u64(moeq_rd *r);
double moeq_rd_f64(moeq_rd *r);
const void *moeq_rd_bytes(moeq_rd *r, size_t n);
/* Copies a string into buf (cap bytes, truncated, NUL-terminated). */
void moeq_rd_str(moeq_rd *r, char *buf, size_t cap);

#endif
