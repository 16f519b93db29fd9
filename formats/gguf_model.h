/* A GGUF file seen as a moeq model (model/view.c): the architecture table, the config from the
 * GGUF metadata, and one tensor per Hugging Face weight name of the family (3-D expert tensors
 * split into per-expert views, llama's q/k row permutation undone), pointing into the mapping.
 * docs/FORMAT-gguf.md, "Architectures", lists the architectures. */
#ifndef MOEQ_GGUF_MODEL_H
#define MOEQ_GGUF_MODEL_H

#include "moeq_gguf.h"
#include "moeq_model.h"
#include "moeq_safetensors.h"

/* A GGUF architecture: one file of formats/gguf_arch/ each, its row defined in
 * formats/gguf_arch.h; the list is ARCHS in formats/gguf_model.c. */
typedef struct moeq_gguf_arch moeq_gguf_arch;

const moeq_gguf_arch *moeq_gguf_arch_find(const char *arch);
const moeq_gguf_arch *moeq_gguf_arch_of_model_type(const char *model_type);
void moeq_gguf_arch_list(char *buf, size_t cap);

/* A weight for the model view. t->dtype is F32/F16/BF16, or MOEQ_DT_OTHER with gtype the
 * ggml block type (computable, moeq_gguf_type_computable) and row_bytes its row stride. */
typedef struct moeq_gguf_src {
    moeq_tensor t;                /* first member: the view's tensor pointers are these */
    int gtype;
    uint64_t row_bytes;
    const char *gguf_name;        /* the GGUF tensor it comes from */
    void *owned;                  /* heap copy (un-permuted q/k rows), freed with the array */
    char name[96];
} moeq_gguf_src;

/* Builds cfg and the sources (sorted by name) of an opened GGUF. Free with moeq_gguf_srcs_free. */
moeq_status moeq_gguf_model_map(const moeq_gguf *g, moeq_config *cfg, moeq_gguf_src **out, size_t *n,
                                moeq_error *err);
void moeq_gguf_srcs_free(moeq_gguf_src *s, size_t n);
const moeq_gguf_src *moeq_gguf_src_find(const moeq_gguf_src *s, size_t n, const char *name);

#endif
