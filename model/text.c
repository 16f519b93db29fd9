/* Text input of a model: its own tokenizer, from the directory or embedded in a .moeq file. */
#include "moeq_tokenizer.h"
#include "moeq_model.h"
#include "moeq_pack.h"
#include "moeq_gguf.h"

#include <stdlib.h>

moeq_status moeq_model_tokenizer(const moeq_model *m, moeq_tokenizer **out, moeq_error *err)
{
    const moeq_gguf *g = moeq_model_gguf(m);
    if (g) return moeq_gguf_tokenizer(g, out, err);
    const moeq_pack *p = moeq_model_pack(m);
    if (!p) return moeq_tokenizer_load(moeq_model_path(m), out, err);
    const moeq_pack_file_entry *f = moeq_pack_find_file(p, "tokenizer.json");
    if (!f)
        return moeq_fail(err, MOEQ_ERR_NOT_FOUND, "%s: no tokenizer.json is embedded in this file",
                         moeq_model_path(m));
    return moeq_tokenizer_parse(f->data, (size_t)f->blob.size, moeq_model_path(m), out, err);
}

moeq_status moeq_model_tokenize_file(const moeq_model *m, const char *text_path, int32_t **ids,
                                     int64_t *n, moeq_error *err)
{
    *ids = NULL;
    *n = 0;
    moeq_tokenizer *tok = NULL;
    moeq_status st = moeq_model_tokenizer(m, &tok, err);
    if (st == MOEQ_OK) st = moeq_tokenize_file(tok, text_path, 1, ids, n, err);
    moeq_tokenizer_free(tok);
    int64_t vocab = moeq_model_config(m)->vocab;
    for (int64_t i = 0; st == MOEQ_OK && i < *n; i++)
        if ((*ids)[i] < 0 || (*ids)[i] >= vocab)
            st = moeq_fail(err, MOEQ_ERR_RANGE, "%s: token %lld is id %d, outside the model's vocabulary of %lld",
                           text_path, (long long)i, (*ids)[i], (long long)vocab);
    if (st != MOEQ_OK) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return st;
}
