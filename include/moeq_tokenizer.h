/* tokenizer.json (Hugging Face tokenizers) in C: the same ids as tokenizers 0.23 for BPE models
 * with added tokens, NFC/NFKC/NFD/NFKD, Prepend, Replace, Strip normalizers, ByteLevel, Split,
 * Metaspace, Digits pre-tokenizers, TemplateProcessing, and the decoders ByteLevel, Metaspace,
 * ByteFallback, Fuse, Strip, Replace. docs/tokenize.md lists what is supported and how each
 * difference from the reference is handled; anything else fails with MOEQ_ERR_UNSUPPORTED naming
 * the component. A loaded tokenizer is read-only: one may be shared by threads. */
#ifndef MOEQ_TOKENIZER_H
#define MOEQ_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>
#include "moeq_status.h"

typedef struct moeq_tokenizer moeq_tokenizer;

/* path: a tokenizer.json file, or a model directory holding one. A missing file is
 * MOEQ_ERR_NOT_FOUND; malformed JSON or fields MOEQ_ERR_FORMAT; an unknown component
 * MOEQ_ERR_UNSUPPORTED. */
moeq_status moeq_tokenizer_load(const char *path, moeq_tokenizer **out, moeq_error *err);
/* Parses a tokenizer.json image held in memory; label names it in error messages. */
moeq_status moeq_tokenizer_parse(const char *json, size_t len, const char *label, moeq_tokenizer **out,
                                 moeq_error *err);
void moeq_tokenizer_free(moeq_tokenizer *t);
/* 1 + the largest id of the vocabulary and the added tokens. */
int64_t moeq_tokenizer_vocab_size(const moeq_tokenizer *t);
/* Id of a token string (vocabulary or added token), -1 when absent. */
int32_t moeq_tokenizer_token_id(const moeq_tokenizer *t, const char *token);

/* Text (UTF-8, len bytes) to ids, as tokenizers' Tokenizer.encode(text, add_special_tokens).
 * Invalid UTF-8 is MOEQ_ERR_FORMAT naming the byte offset (tokenizers only accepts valid str).
 * *ids is malloc'ed (never NULL on success, even for 0 ids); the caller frees it. */
moeq_status moeq_tokenize(const moeq_tokenizer *t, const char *text, size_t len, int add_special,
                          int32_t **ids, int64_t *n, moeq_error *err);
/* Reads a whole text file and tokenizes it (error details name the file). */
moeq_status moeq_tokenize_file(const moeq_tokenizer *t, const char *path, int add_special, int32_t **ids,
                               int64_t *n, moeq_error *err);
/* Ids to text, as Tokenizer.decode(ids, skip_special_tokens). An id with no token is
 * MOEQ_ERR_RANGE naming its index. *text is malloc'ed and NUL-terminated. */
moeq_status moeq_detokenize(const moeq_tokenizer *t, const int32_t *ids, int64_t n, int skip_special,
                            char **text, size_t *len, moeq_error *err);

/* The tokenizer of a model: tokenizer.json in its directory, or the copy embedded in a .moeq
 * file. */
struct moeq_model;
moeq_status moeq_model_tokenizer(const struct moeq_model *m, moeq_tokenizer **out, moeq_error *err);
/* --text for eval and calibrate: the file tokenized with the model's tokenizer, special tokens
 * included (as Hugging Face's encode does by default); every id is checked against the model's
 * vocabulary (MOEQ_ERR_RANGE naming the file and the position). *ids is malloc'ed. */
moeq_status moeq_model_tokenize_file(const struct moeq_model *m, const char *text_path, int32_t **ids,
                                     int64_t *n, moeq_error *err);

#endif
