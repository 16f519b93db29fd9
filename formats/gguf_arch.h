/* A GGUF architecture as one row: what llama.cpp's graph for it reads, in one file of
 * formats/gguf_arch/ each (docs/FORMAT-gguf.md, "Adding a GGUF architecture"). The export
 * (formats/gguf_export.c) and the reader (formats/gguf_model.c) hold the shared logic and call
 * a row's data and hooks only; the list of rows is ARCHS in formats/gguf_model.c. */
#ifndef MOEQ_GGUF_ARCH_H
#define MOEQ_GGUF_ARCH_H

#include "moeq_gguf.h"
#include "moeq_gguf_export.h"
#include "moeq_model.h"
#include "formats/gguf_model.h"

#include <stddef.h>

/* ---- export: a layer's tensors, in file order ------------------------------------------- */

enum { GA_VEC, GA_MAT, GA_ROUTER, GA_EXPERTS, GA_EXPERT_BIAS };    /* tdesc.kind */
enum { GA_ALL, GA_MOE, GA_DENSE, GA_MOE_EBIAS };                   /* tdesc.when: MoE layers; dense layers; MoE
                                                                      layers with expert biases (cfg->expert_bias) */
enum { GA_PLAIN, GA_PERMUTE_Q, GA_PERMUTE_K, GA_KV_EXPAND };       /* tdesc.xform */

/* One GGUF tensor of a layer: written when the layer's view has it (data non-NULL). field is
 * offsetof(moeq_layer_view, ...) of a moeq_vec (GA_VEC) or moeq_mat (GA_MAT, GA_ROUTER); proj
 * names the routed experts' matrix (GA_EXPERTS, GA_EXPERT_BIAS). xform: llama's q/k row
 * interleaving over the query (Q) or KV (K) heads; olmoe's grouped KV heads written as heads. */
typedef struct moeq_gguf_tdesc {
    const char *name;
    unsigned char kind, when, xform;
    size_t field;
    moeq_proj proj;
} moeq_gguf_tdesc;

#define GA_T(nm, kd, wh, xf, fld) { nm, kd, wh, xf, offsetof(moeq_layer_view, fld), MOEQ_PROJ_COUNT }
#define GA_X(nm, kd, wh, pj) { nm, kd, wh, GA_PLAIN, 0, pj }

/* What an architecture's export hooks see. */
typedef struct moeq_gguf_ectx {
    const moeq_model *m;
    const moeq_config *c;
    const struct moeq_gguf_arch *a;
    int64_t kv_repeat;          /* > 1: grouped KV heads written as heads (GA_KV_EXPAND) */
    int64_t dense_lead;         /* leading dense layers (leading_dense) */
} moeq_gguf_ectx;

/* Metadata writing: ARCH.key, the first failure kept in st (the writer's errors are NOMEM). */
typedef struct moeq_gguf_meta {
    moeq_gguf_writer *w;
    const moeq_gguf_ectx *x;
    moeq_status st;
} moeq_gguf_meta;

void moeq_gguf_meta_u32(moeq_gguf_meta *mw, const char *key, int64_t v);
void moeq_gguf_meta_f32(moeq_gguf_meta *mw, const char *key, double v);
void moeq_gguf_meta_bool(moeq_gguf_meta *mw, const char *key, int v);
void moeq_gguf_meta_str(moeq_gguf_meta *mw, const char *key, const char *v);
/* The keys every architecture writes, block_count .. the expert widths: head_count_kv and
 * value_length as given; key_length / value_length when head_dim x heads is not the width or
 * key_length is set. */
void moeq_gguf_meta_common(moeq_gguf_meta *mw, int64_t head_count_kv, int64_t value_length, int key_length);

/* ---- reading a GGUF back (formats/gguf_model.c) ----------------------------------------- */

typedef struct moeq_gguf_rctx {
    const moeq_gguf *g;
    const struct moeq_gguf_arch *a;
    moeq_config *cfg;
    moeq_error *err;
    moeq_gguf_src *s;
    size_t n, cap;
} moeq_gguf_rctx;

/* ARCH.k as an integer in [lo, hi] (absent and not required: *out untouched); a float. */
moeq_status moeq_gguf_read_u(moeq_gguf_rctx *c, const char *k, int required, uint32_t lo, uint32_t hi, int64_t *out);
moeq_status moeq_gguf_read_f(moeq_gguf_rctx *c, const char *k, int required, float *out);
/* Finds GGUF tensor gname (per-layer when l >= 0), checks its ne exactly (nd values). */
moeq_status moeq_gguf_need(moeq_gguf_rctx *c, const char *gname, int64_t l, int required, int vec, int nd,
                           const int64_t *ne, const moeq_gguf_tensor **out);
/* A source named by family pattern pat (layer l, expert e) viewing rows [r0, r0+rows) of t. */
moeq_status moeq_gguf_source(moeq_gguf_rctx *c, const char *pat, int64_t l, int64_t e, const moeq_gguf_tensor *t,
                             int64_t r0, int64_t rows, int vec);
moeq_status moeq_gguf_fail_nomem(moeq_gguf_rctx *c);

#define GA_NE(...) ((const int64_t[]){ __VA_ARGS__ })
#define GA_NDN(...) ((int)(sizeof(GA_NE(__VA_ARGS__)) / sizeof(int64_t)))
#define GA_NEED(c, gname, l, req, vec, outp, ...) \
    moeq_gguf_need((c), (gname), (l), (req), (vec), GA_NDN(__VA_ARGS__), GA_NE(__VA_ARGS__), (outp))

/* The config of the grouped-query architectures from their metadata (llama, qwen*, olmoe). */
moeq_status moeq_gguf_read_config_std(moeq_gguf_rctx *c);
/* A layer's pieces, in the order the standard layer reads them: the two norms (the MLP norm
 * under mlp_norm), q/k/v/o (permute: llama's q/k rows undone) with their biases, q/k norms,
 * o bias and sinks; the router; the routed experts; the shared expert. */
moeq_status moeq_gguf_read_norms(moeq_gguf_rctx *c, int64_t l, const char *mlp_norm);
moeq_status moeq_gguf_read_attn(moeq_gguf_rctx *c, int64_t l, int permute);
moeq_status moeq_gguf_read_router(moeq_gguf_rctx *c, int64_t l);
moeq_status moeq_gguf_read_experts(moeq_gguf_rctx *c, int64_t l);
moeq_status moeq_gguf_read_shared(moeq_gguf_rctx *c, int64_t l);
moeq_status moeq_gguf_read_layer_std(moeq_gguf_rctx *c, int64_t l);

/* ---- the row --------------------------------------------------------------------------- */

struct moeq_gguf_arch {
    const char *arch;                  /* general.architecture */
    const char *const *model_types;    /* moeq families written as it, NULL-terminated; [0] read back */
    const char *expert_ff_key;         /* ARCH.<key>: a routed expert's intermediate size */
    const char *shared_ff_key;         /* ARCH.<key>: the shared expert's width, NULL when not written */
    int renorm;                        /* llama.cpp's graph renormalizes the top-k weights; -1: a key */
    moeq_qk_norm qk_norm;              /* attn_q_norm / attn_k_norm: per head or whole width */
    int leading_dense;                 /* the graph takes dense layers before the first MoE layer */
    int rope_yarn;                     /* rope.scaling.type yarn read (by read_config), not refused */
    const char *pre_gpt2;              /* tokenizer.ggml.pre of the GPT-2 regex, NULL: "gpt-2" */
    const moeq_gguf_tdesc *layer;      /* a layer's tensors in file order */
    size_t n_layer;
    /* export: the reasons its graph would compute another model (NULL: none); the metadata
     * between general.name and general.quantization_version */
    moeq_status (*check)(const moeq_model *m, const moeq_gguf_export_opts *o, moeq_error *err);
    void (*meta)(moeq_gguf_meta *mw);
    /* reading: the config from the metadata, a layer's sources */
    moeq_status (*read_config)(moeq_gguf_rctx *c);
    moeq_status (*read_layer)(moeq_gguf_rctx *c, int64_t l);
};

#define GA_COUNT(tab) (sizeof(tab) / sizeof((tab)[0]))

#endif
