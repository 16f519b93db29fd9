/* The ggml type table (one row per type, its code in the family's file) and the row-level
 * entry points of include/moeq_ggml.h. */
#include "kernels/ggml/ggml_impl.h"

#include <ctype.h>
#include <stdlib.h>

static const gg_codec *const codecs[] = {
    &gg_codec_f32,  &gg_codec_f16,  &gg_codec_bf16, &gg_codec_q4_0, &gg_codec_q4_1,   &gg_codec_q5_0,   &gg_codec_q5_1,
    &gg_codec_q8_0, &gg_codec_q2_k, &gg_codec_q3_k, &gg_codec_q4_k, &gg_codec_q5_k,   &gg_codec_q6_k,   &gg_codec_iq4_nl,
    &gg_codec_iq4_xs, &gg_codec_mxfp4, &gg_codec_tq1_0, &gg_codec_tq2_0, &gg_codec_iq2_k,
    &gg_codec_iq2_ks,
};
#define N_CODECS (sizeof codecs / sizeof codecs[0])

static moeq_ggml_type_info infos[N_CODECS];
static int infos_ready;

const gg_codec *gg_codec_get(moeq_ggml_type t)
{
    for (size_t i = 0; i < N_CODECS; i++)
        if (codecs[i]->type == t) return codecs[i];
    return NULL;
}

static void infos_init(void)
{
    if (__atomic_load_n(&infos_ready, __ATOMIC_ACQUIRE)) return;
    /* idempotent: racing threads write the same values */
    for (size_t i = 0; i < N_CODECS; i++)
        infos[i] = (moeq_ggml_type_info){codecs[i]->type, codecs[i]->name, codecs[i]->block, codecs[i]->bytes,
                                         codecs[i]->row_meta,
                                         codecs[i]->runtimes ? codecs[i]->runtimes : MOEQ_GGML_RT_LLAMA | MOEQ_GGML_RT_IK};
    __atomic_store_n(&infos_ready, 1, __ATOMIC_RELEASE);
}

const moeq_ggml_type_info *moeq_ggml_type_get(int type)
{
    infos_init();
    for (size_t i = 0; i < N_CODECS; i++)
        if ((int)infos[i].type == type) return &infos[i];
    return NULL;
}

const moeq_ggml_type_info *moeq_ggml_type_by_name(const char *name)
{
    if (!name) return NULL;
    infos_init();
    for (size_t i = 0; i < N_CODECS; i++) {
        const char *a = infos[i].name, *b = name;
        while (*a && *b && toupper((unsigned char)*a) == toupper((unsigned char)*b)) a++, b++;
        if (!*a && !*b) return &infos[i];
    }
    return NULL;
}

size_t moeq_ggml_row_bytes(moeq_ggml_type t, int64_t n)
{
    const gg_codec *c = gg_codec_get(t);
    if (!c || n <= 0 || n % c->block) return 0;
    return gg_row_bytes(c, n);
}

void moeq_ggml_dequant_row(moeq_ggml_type t, const void *src, float *dst, int64_t n)
{
    const gg_codec *c = gg_codec_get(t);
    if (!c || n <= 0 || n % c->block) return;
    c->dequant(src, dst, n / c->block);
}

/* Importances as the weighted searches may take them: NaN, ±inf and negatives count as 0; a
 * row with no importance at all (a dead expert: zero Hessian) gets the fallback weight 1
 * everywhere, as llama.cpp's imatrix loader gives experts it saw no token for; a weight
 * below 1e-6 of the row mean is raised to it, so a dead input column inside a live row still
 * has its codes chosen (llama.cpp would leave them arbitrary). Returns 0 on no memory. */
static float *clean_importance(const float *imp, int64_t n)
{
    float *w = malloc((size_t)n * sizeof *w);
    if (!w) return NULL;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = imp[i];
        w[i] = (v > 0 && v <= 3.0e38f) ? v : 0;
        sum += w[i];
    }
    if (!(sum > 0)) {
        for (int64_t i = 0; i < n; i++) w[i] = 1;
        return w;
    }
    const float floor = (float)(sum / (double)n * 1e-6);
    for (int64_t i = 0; i < n; i++)
        if (w[i] < floor) w[i] = floor;
    return w;
}

void moeq_ggml_quant_row(moeq_ggml_type t, const float *src, const float *imp, void *dst, int64_t n)
{
    const gg_codec *c = gg_codec_get(t);
    if (!c || n <= 0 || n % c->block) return;
    float *w = imp && c->levels ? clean_importance(imp, n) : NULL;
    /* no memory for the cleaned copy: the unweighted reference, still a valid row */
    c->quant(src, w, dst, n);
    free(w);
}

void gg_quant_block_meta(const gg_codec *c, uint8_t *row, int64_t k, const float *x, const float *imp)
{
    if (!c->row_meta || !c->quant_block_meta) return;
    float *w = imp ? clean_importance(imp, c->block) : NULL;
    uint8_t *blk = row + c->row_meta + (size_t)k * (size_t)c->bytes;
    c->quant_block_meta(row, x, w, blk);
    free(w);
}
