/* Layer checkpoints of long layer-wise runs (--resume DIR on calibrate and sequential GPTQ;
 * docs/scale.md, "Resume"). DIR holds a manifest (JSON: the stage, the inputs that decide
 * the result, the number of finished layers), one file per finished layer, and the residual
 * stream after the last finished layer (moeq_layerwise's resume_dir). Every file is written
 * to a temporary name, synced and renamed, and the manifest is renamed last, so a run killed
 * at any point leaves a directory whose manifest names only complete files.
 *
 * Only rank 0 of an MPI run touches the manifest and the layer files; the functions below
 * are collective where they say so. */
#ifndef MOEQ_LRESUME_H
#define MOEQ_LRESUME_H

#include <stddef.h>
#include <stdint.h>
#include "moeq_status.h"

typedef struct moeq_lresume_input {    /* one field that must match on resume */
    const char *key;
    const char *text;               /* a string field, or NULL */
    int64_t value;                  /* else this integer (hashes as their decimal value) */
} moeq_lresume_input;

/* Collective. Creates dir when missing; with a manifest of the same stage whose inputs are
 * all equal, *layers_done is its count (the run continues at that layer); with none, 0. A
 * manifest of another stage or with a different input is MOEQ_ERR_FORMAT naming the field
 * and both values. */
moeq_status moeq_lresume_open(const char *dir, const char *stage, const moeq_lresume_input *in, size_t n_in,
                           int64_t *layers_done, moeq_error *err);
/* Rank 0: records layers [0, layers_done) as finished. */
moeq_status moeq_lresume_commit(const char *dir, const char *stage, const moeq_lresume_input *in, size_t n_in,
                             int64_t layers_done, moeq_error *err);
/* Rank 0: layer `layer`'s blob, written atomically with an XXH64 trailer; read back and
 * checked (a missing, short or corrupt file is MOEQ_ERR_FORMAT naming it). *buf malloc'ed. */
moeq_status moeq_lresume_put(const char *dir, int64_t layer, const void *buf, size_t n, moeq_error *err);
moeq_status moeq_lresume_get(const char *dir, int64_t layer, void **buf, size_t *n, moeq_error *err);
/* Rank 0, after the final output is in place: removes the checkpoint's files and, when then
 * empty, dir itself. */
void moeq_lresume_remove(const char *dir, int64_t layers);

#endif
