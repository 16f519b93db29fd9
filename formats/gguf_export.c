/* `moeq export gguf`: a moeq model (Hugging Face directory, .moeq or GGUF) written as the GGUF
 * llama.cpp's converter would write for its architecture (docs/FORMAT-gguf.md): the same keys
 * with the same value types, the same tensor names and shapes, q/k rows permuted for llama,
 * 3-D expert tensors, tokenizer metadata from tokenizer.json. Weights go row by row through
 * moeq_gguf_row_from_f32 (weighted by the Hessian diagonal with --calib), or are copied exactly:
 * a GGUF source's blocks of the same type, a .moeq int codec that maps onto a ggml block. */
#include "moeq_gguf_export.h"
#include "formats/gguf_model.h"
#include "formats/gguf_arch.h"
#include "formats/family.h"
#include "moeq_core.h"
#include "moeq_kernels.h"
#include "moeq_pack.h"
#include "moeq_tdict.h"
#include "moeq_gptq.h"
#include "moeq_calib.h"
#include "moeq_ggml.h"

#include <jansson.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- tokenizer metadata ------------------------------------------------------------------- */

/* Pre-tokenizer regexes of tokenizer.json -> llama.cpp's tokenizer.ggml.pre names (loader:
 * src/llama-vocab.cpp). The table of docs/FORMAT-gguf.md, "Tokenizer". */
static const struct { const char *regex, *pre; } pre_table[] = {
    { "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)", "gpt-2" },
    { "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
      "llama-bpe" },
    { "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
      "qwen2" },
    /* o200k (gpt-oss; llama.cpp quotes it as "original regex from tokenizer.json" for GPT4O) */
    { "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
      "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
      "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
      "gpt-4o" },
};
#define GPT2_REGEX (pre_table[0].regex)

typedef struct src_files {
    const moeq_model *m;
    char dir[4096];
} src_files;

/* A file of the source model: from its directory, or embedded in a .moeq. NULL when absent. */
static char *get_file(const src_files *sf, const char *name, size_t *len)
{
    const moeq_pack *p = moeq_model_pack(sf->m);
    *len = 0;
    if (p) {
        const moeq_pack_file_entry *f = moeq_pack_find_file(p, name);
        if (!f) return NULL;
        char *b = malloc((size_t)f->blob.size + 1);
        if (!b) return NULL;
        memcpy(b, f->data, (size_t)f->blob.size);
        b[f->blob.size] = '\0';
        *len = (size_t)f->blob.size;
        return b;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", sf->dir, name);
    void *buf = NULL;
    moeq_error e;
    if (moeq_read_file(path, (uint64_t)1 << 30, name, &buf, len, &e)) return NULL;
    return buf;
}

/* The pre-tokenizer's regex: a Split with a Regex pattern, or a ByteLevel with use_regex. */
static const char *pre_regex(const json_t *pre)
{
    if (!json_is_object(pre)) return NULL;
    const char *type = json_string_value(json_object_get(pre, "type"));
    if (!type) return NULL;
    if (!strcmp(type, "ByteLevel")) {
        const json_t *u = json_object_get(pre, "use_regex");
        return !u || json_is_true(u) ? GPT2_REGEX : NULL;
    }
    if (!strcmp(type, "Split")) return json_string_value(json_object_get(json_object_get(pre, "pattern"), "Regex"));
    if (!strcmp(type, "Sequence")) {
        const json_t *a = json_object_get(pre, "pretokenizers");
        size_t i;
        const json_t *v;
        json_array_foreach(a, i, v) {
            const char *r = pre_regex(v);
            if (r) return r;
        }
    }
    return NULL;
}

static int has_type(const json_t *pre, const char *want)
{
    if (!json_is_object(pre)) return 0;
    const char *type = json_string_value(json_object_get(pre, "type"));
    if (type && !strcmp(type, want)) return 1;
    const json_t *a = json_object_get(pre, "pretokenizers");
    size_t i;
    const json_t *v;
    json_array_foreach(a, i, v) if (has_type(v, want)) return 1;
    return 0;
}

static int32_t token_id_of(const json_t *tok, const json_t *spec)
{
    const char *s = json_is_string(spec) ? json_string_value(spec) : json_string_value(json_object_get(spec, "content"));
    if (!s) return -1;
    const json_t *added = json_object_get(tok, "added_tokens");
    size_t i;
    const json_t *a;
    json_array_foreach(added, i, a) {
        const char *c = json_string_value(json_object_get(a, "content"));
        if (c && !strcmp(c, s)) return (int32_t)json_integer_value(json_object_get(a, "id"));
    }
    const json_t *id = json_object_get(json_object_get(json_object_get(tok, "model"), "vocab"), s);
    return json_is_integer(id) ? (int32_t)json_integer_value(id) : -1;
}

static moeq_status tokenizer_meta(moeq_gguf_writer *w, const src_files *sf, const moeq_gguf_arch *a,
                                  const moeq_gguf_export_opts *o, moeq_error *err)
{
    const moeq_config *cfg = moeq_model_config(sf->m);
    const char *path = moeq_model_path(sf->m);
    size_t len = 0, clen = 0, klen = 0;
    char *text = get_file(sf, "tokenizer.json", &len);
    if (!text)
        return moeq_fail(err, MOEQ_ERR_NOT_FOUND, "%s: no tokenizer.json: a GGUF needs the tokenizer metadata", path);
    char *ctext = get_file(sf, "tokenizer_config.json", &clen), *mtext = get_file(sf, "config.json", &klen);
    json_error_t je;
    json_t *tok = json_loadb(text, len, 0, &je);
    json_t *tcfg = ctext ? json_loadb(ctext, clen, 0, &je) : NULL, *mcfg = mtext ? json_loadb(mtext, klen, 0, &je) : NULL;
    moeq_status st = MOEQ_OK;
    const char **strs = NULL;
    size_t *lens = NULL;
    int32_t *types = NULL;
    float *scores = NULL;
    char **owned = NULL;
    const char **mstr = NULL;
    size_t *mlen = NULL;
    char **mown = NULL;
    size_t nm = 0;
    const int64_t V = cfg->vocab;
    const json_t *model = json_object_get(tok, "model"), *vocab = json_object_get(model, "vocab");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    if (!tok || !json_is_object(vocab) || !mtype || strcmp(mtype, "BPE")) {
        st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: tokenizer.json: %s (export handles BPE tokenizers: byte-level "
                       "'gpt2' or byte-fallback 'llama')", path, !tok ? "not valid JSON" : "model.type is not BPE");
        goto out;
    }
    const json_t *pre = json_object_get(tok, "pre_tokenizer");
    int spm = json_is_true(json_object_get(model, "byte_fallback")) && !has_type(pre, "ByteLevel");
    const char *pre_name = o->pre;
    if (!pre_name && spm) pre_name = "default";
    if (!pre_name) {
        const char *re = pre_regex(pre);
        for (size_t i = 0; re && i < sizeof pre_table / sizeof pre_table[0]; i++)
            if (!strcmp(re, pre_table[i].regex)) pre_name = pre_table[i].pre;
        /* the GPT-2 regex has another llama.cpp name for some architectures (the converter's hash table) */
        if (pre_name && !strcmp(pre_name, "gpt-2") && a->pre_gpt2) pre_name = a->pre_gpt2;
        if (!pre_name) {
            st = moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: tokenizer.json: pre-tokenizer regex '%.300s' is not in the "
                           "table of llama.cpp names (docs/FORMAT-gguf.md); give one with --gguf-pre NAME", path,
                           re ? re : "(none)");
            goto out;
        }
    }
    strs = calloc((size_t)V, sizeof *strs);
    lens = calloc((size_t)V, sizeof *lens);
    types = calloc((size_t)V, sizeof *types);
    scores = calloc((size_t)V, sizeof *scores);
    owned = calloc((size_t)V, sizeof *owned);
    if (!strs || !lens || !types || !scores || !owned) goto nomem;
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)vocab, k, v) {
        json_int_t id = json_integer_value(v);
        if (!json_is_integer(v) || id < 0 || id >= V) continue;   /* ids beyond the embedding cannot be used */
        strs[id] = k;
        lens[id] = strlen(k);
        types[id] = spm && strlen(k) == 6 && !strncmp(k, "<0x", 3) && k[5] == '>' ? 6 : 1;
    }
    size_t i;
    json_array_foreach(json_object_get(tok, "added_tokens"), i, v) {
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        const char *c = json_string_value(json_object_get(v, "content"));
        if (!c || id < 0 || id >= V) continue;
        strs[id] = c;
        lens[id] = strlen(c);
        types[id] = json_is_true(json_object_get(v, "special")) ? 3 : 4;
    }
    for (int64_t id = 0; id < V; id++)
        if (!strs[id]) {   /* the converter's padding entries */
            if (!(owned[id] = malloc(32))) goto nomem;
            snprintf(owned[id], 32, "[PAD%lld]", (long long)id);
            strs[id] = owned[id];
            lens[id] = strlen(owned[id]);
            types[id] = 5;
        }
    /* merges: "a b" strings, or [a, b] pairs joined with a space (a space inside a part is
     * written as U+0120, as gguf-py's vocab.py does) */
    const json_t *merges = json_object_get(model, "merges");
    nm = json_array_size(merges);
    mstr = calloc(nm ? nm : 1, sizeof *mstr);
    mlen = calloc(nm ? nm : 1, sizeof *mlen);
    mown = calloc(nm ? nm : 1, sizeof *mown);
    if (!mstr || !mlen || !mown) goto nomem;
    json_array_foreach(merges, i, v) {
        if (json_is_string(v)) {
            mstr[i] = json_string_value(v);
            mlen[i] = strlen(mstr[i]);
            continue;
        }
        const char *p0 = json_string_value(json_array_get(v, 0)), *p1 = json_string_value(json_array_get(v, 1));
        if (!p0 || !p1) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: tokenizer.json: merge %zu is neither a string nor a pair", path, i);
            goto out;
        }
        size_t cap = 2 * (strlen(p0) + strlen(p1)) + 2, n = 0;
        char *s = malloc(cap);
        if (!s) goto nomem;
        for (int part = 0; part < 2; part++) {
            for (const char *q = part ? p1 : p0; *q; q++) {
                if (*q == ' ') {
                    s[n++] = (char)0xc4;
                    s[n++] = (char)0xa0;
                } else {
                    s[n++] = *q;
                }
            }
            if (!part) s[n++] = ' ';
        }
        s[n] = '\0';
        mown[i] = s;
        mstr[i] = s;
        mlen[i] = n;
    }
    if (spm) {   /* SPM ranks bigrams by score: -(rank of the merge that makes the token) */
        for (size_t r = 0; r < nm; r++) {
            char joined[512];
            size_t n = 0;
            for (size_t c = 0; c < mlen[r] && n + 1 < sizeof joined; c++)
                if (mstr[r][c] != ' ') joined[n++] = mstr[r][c];
            joined[n] = '\0';
            const json_t *id = json_object_get(vocab, joined);
            if (json_is_integer(id) && json_integer_value(id) >= 0 && json_integer_value(id) < V &&
                scores[json_integer_value(id)] == 0)
                scores[json_integer_value(id)] = -(float)(r + 1);
        }
    }
    /* keys in sorted order, the order a GGUF source's keys are copied in (formats/gguf.c sorts
     * them), so that re-exporting a GGUF as its own types gives back the same bytes */
    static const char *const spec[][3] = { { "bos_token", "bos_token_id", "tokenizer.ggml.bos_token_id" },
                                           { "eos_token", "eos_token_id", "tokenizer.ggml.eos_token_id" },
                                           { "pad_token", "pad_token_id", "tokenizer.ggml.padding_token_id" },
                                           { "unk_token", NULL, "tokenizer.ggml.unknown_token_id" } };
    int32_t sid[4];
    for (int k2 = 0; k2 < 4; k2++) {   /* tokenizer_config.json's strings, else config.json's ids */
        int32_t id = tcfg ? token_id_of(tok, json_object_get(tcfg, spec[k2][0])) : -1;
        if (id < 0 && spec[k2][1] && json_is_integer(json_object_get(mcfg, spec[k2][1])))
            id = (int32_t)json_integer_value(json_object_get(mcfg, spec[k2][1]));
        sid[k2] = id >= 0 && id < V ? id : -1;
    }
    /* add_bos: tokenizer_config.json, else the SPM default (on) or byte-level default (off) */
    const json_t *ab = tcfg ? json_object_get(tcfg, "add_bos_token") : NULL;
    const json_t *tmpl = tcfg ? json_object_get(tcfg, "chat_template") : NULL;
    if ((json_is_string(tmpl) && (st = moeq_gguf_w_str(w, "tokenizer.chat_template", json_string_value(tmpl),
                                                       strlen(json_string_value(tmpl))))) ||
        (st = moeq_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", json_is_boolean(ab) ? json_is_true(ab) : spm)) ||
        (sid[0] >= 0 && (st = moeq_gguf_w_u32(w, spec[0][2], (uint32_t)sid[0]))) ||
        (sid[1] >= 0 && (st = moeq_gguf_w_u32(w, spec[1][2], (uint32_t)sid[1]))) ||
        (!spm && (st = moeq_gguf_w_arr_str(w, "tokenizer.ggml.merges", mstr, mlen, nm))) ||
        (st = moeq_gguf_w_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2", spm ? 5 : 4)) ||
        (sid[2] >= 0 && (st = moeq_gguf_w_u32(w, spec[2][2], (uint32_t)sid[2]))) ||
        (st = moeq_gguf_w_str(w, "tokenizer.ggml.pre", pre_name, strlen(pre_name))) ||
        (spm && (st = moeq_gguf_w_arr_f32(w, "tokenizer.ggml.scores", scores, (uint64_t)V))) ||
        (st = moeq_gguf_w_arr_i32(w, "tokenizer.ggml.token_type", types, (uint64_t)V)) ||
        (st = moeq_gguf_w_arr_str(w, "tokenizer.ggml.tokens", strs, lens, (uint64_t)V)) ||
        (sid[3] >= 0 && (st = moeq_gguf_w_u32(w, spec[3][2], (uint32_t)sid[3]))) ||
        /* the whole tokenizer.json as well (a key of the GGUF spec): moeq's --text reads it back */
        (st = moeq_gguf_w_str(w, "tokenizer.huggingface.json", text, len)))
        goto nomem;
    goto out;
nomem:
    st = moeq_fail(err, MOEQ_ERR_NOMEM, "%s: out of memory for the tokenizer metadata", path);
out:
    for (int64_t id = 0; owned && id < V; id++) free(owned[id]);
    for (size_t r = 0; mown && r < nm; r++) free(mown[r]);
    free(owned);
    free(mown);
    free(mstr);
    free(mlen);
    free(strs);
    free(lens);
    free(types);
    free(scores);
    json_decref(tok);
    json_decref(tcfg);
    json_decref(mcfg);
    free(text);
    free(ctext);
    free(mtext);
    return st;
}

/* ---- tensors ----------------------------------------------------------------------------- */

enum { K_VEC, K_MAT, K_EXPERTS, K_EXPERT_BIAS };   /* K_EXPERT_BIAS: gpt-oss {rows, n_expert} */

typedef struct out_tensor {
    char name[64];
    int kind;
    const moeq_vec *vec;
    moeq_mat mat;               /* K_MAT */
    int64_t layer;              /* K_EXPERTS, K_EXPERT_BIAS */
    moeq_proj proj;
    int64_t permute_heads;      /* llama q/k: heads to interleave, 0 for none */
    int64_t kv_repeat, kv_hd;   /* olmoe k/v (and k norm) with grouped KV heads: each KV head of kv_hd
                                   rows written kv_repeat times (MHA, the same attention: see list_tensors) */
    int64_t ne[3];
    int nd;
    int type;
    int is_expert, is_router;
    const char *fallback_from;  /* the requested type when the row size forced another */
    double plan_damp;           /* the plan's damping for it (> 0), else 0 */
    const char *group;          /* K_MAT of a layer: the calibration subgroup of its input (mat_tab) */
    int head;                   /* K_MAT: 1 token_embd, 2 output, 0 a layer's matrix */
} out_tensor;

typedef struct ex {
    const moeq_model *m;
    const moeq_config *c;
    const moeq_gguf_arch *a;
    const moeq_gguf_export_opts *o;
    moeq_error *err;
    out_tensor *t;
    size_t n, cap;
    regex_t *re;
    moeq_calib_file *calib;
    double *hbuf;
    float *imp;
    double *h2;                 /* a 2-D matrix's subgroup Hessian, h2_dim² */
    int64_t h2_dim;
    json_t *fallbacks;
    unsigned char *plan_used;   /* [o->n_plan]: the plan's entry named a tensor of the file */
    int64_t kv_repeat;          /* > 1: grouped KV heads written as heads (GA_KV_EXPAND: olmoe) */
    int64_t dense_lead;         /* leading dense layers (the arch's leading_dense: deepseek2) */
    double damp;                /* the GPTQ damping of the tensor being written */
    json_t *damps;              /* --damp auto: [{tensor, damp, val_err: [per candidate]}] */
    double *tdamp;              /* [n]: an expert tensor's damping once chosen (tensor_damp), else 0 */
} ex;

static out_tensor *push(ex *x, const char *fmt, int64_t l)
{
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 256;
        out_tensor *nt = realloc(x->t, cap * sizeof *nt);
        if (!nt) return NULL;
        x->t = nt;
        x->cap = cap;
    }
    out_tensor *t = &x->t[x->n++];
    memset(t, 0, sizeof *t);
    if (l >= 0) {
        char pat[64];
        snprintf(pat, sizeof pat, "blk.%%lld.%s", fmt);
        snprintf(t->name, sizeof t->name, pat, (long long)l);
    } else {
        snprintf(t->name, sizeof t->name, "%s", fmt);
    }
    return t;
}



/* The ggml type a view is stored as, or maps onto exactly (.moeq codecs); -1 for neither. */
static int source_type(const moeq_mat *v)
{
    if (v->gtype == MOEQ_TDICT_GTYPE) return -1;   /* .moeq t1d: no ggml type holds it */
    if (v->gtype) return v->gtype;
    /* gpt_oss's hub experts: strided bf16 keeps BF16; MXFP4 blocks stay MXFP4, their codes and
     * exponents copied (mx_row_copy), as llama.cpp's converter writes gpt-oss */
    if (v->mx_scales) return 39;
    if (v->q) return moeq_gguf_codec_maps(v->q->bits, v->q->group, v->q->sym, v->cols);
    return v->dtype == MOEQ_DT_F16 ? 1 : v->dtype == MOEQ_DT_BF16 ? 30 : 0;
}

/* llama-quantize's fallbacks (src/llama-quant.cpp tensor_type_fallback) for a row size the
 * 256-blocks do not divide. */
int moeq_gguf_fallback_type(int t, int64_t ne0)
{
    if (moeq_gguf_row_bytes(t, ne0) && moeq_gguf_type_computable(t)) return t;
    int f = t;
    switch (t) {
    case 10: case 11: f = 2; break;   /* Q2_K, Q3_K -> Q4_0 */
    case 34: case 35: f = 2; break;   /* TQ1_0, TQ2_0 -> Q4_0 */
    case 12: f = 6; break;            /* Q4_K -> Q5_0 */
    case 13: f = 7; break;            /* Q5_K -> Q5_1 */
    case 14: f = 8; break;            /* Q6_K -> Q8_0 */
    case 23: f = 20; break;           /* IQ4_XS -> IQ4_NL */
    case 137: f = 20; break;          /* IQ2_K -> IQ4_NL (ik_llama.cpp's llama-quantize.cpp) */
    case 145: f = 20; break;          /* IQ2_KS -> IQ4_NL (ik_llama.cpp's llama-quantize.cpp) */
    default: break;
    }
    if (!moeq_gguf_row_bytes(f, ne0) || !moeq_gguf_type_computable(f)) f = 1;   /* F16 */
    return f;
}

/* The type of a tensor: router and vectors F32; a float --type everything; --tensor-type
 * rules by GGUF name; --type for routed experts (--scope all: every matrix); else kept. */
static moeq_status choose_type(ex *x, out_tensor *t, int src_type)
{
    const moeq_gguf_export_opts *o = x->o;
    int want;
    if (t->kind == K_VEC || t->is_router) {
        t->type = 0;
        return MOEQ_OK;
    }
    int float_target = o->type == 0 || o->type == 1 || o->type == 30;
    if (o->type >= 0 && (float_target || t->is_expert || o->scope_all)) want = o->type;
    else want = src_type;
    if (want < 0 && o->type < 0) {   /* no --type: a codec with no exact ggml type */
        if (!o->requantize)
            return moeq_fail(x->err, MOEQ_ERR_UNSUPPORTED, "%s: tensor '%s': its codec has no exact ggml type (4-bit g32 "
                             "sym -> Q4_0, 4-bit asym -> Q4_1, 8-bit sym -> Q8_0 map exactly); give --type T with "
                             "--requantize", moeq_model_path(x->m), t->name);
        want = 8;
    }
    for (int i = 0; i < o->n_plan; i++)   /* --plan: the planned type of this tensor */
        if (!strcmp(o->plan_names[i], t->name)) {
            want = o->plan_types[i];
            x->plan_used[i] = 1;
            t->plan_damp = o->plan_damps ? o->plan_damps[i] : 0;
        }
    for (int r = 0; r < o->n_rules; r++)
        if (regexec(&x->re[r], t->name, 0, NULL, 0) == 0) want = o->rule_types[r];
    if (want < 0) want = 1;
    const moeq_gguf_type *wt = moeq_gguf_type_get(want);
    if (!moeq_gguf_row_bytes(want, t->ne[0])) {
        int f = moeq_gguf_fallback_type(want, t->ne[0]);
        t->fallback_from = wt->name;
        json_t *fb = json_object();
        json_object_set_new(fb, "tensor", json_string(t->name));
        json_object_set_new(fb, "type", json_string(wt->name));
        json_object_set_new(fb, "fallback", json_string(moeq_gguf_type_get(f)->name));
        char why[96];
        snprintf(why, sizeof why, "%lld values per row are not a multiple of %d", (long long)t->ne[0], wt->block);
        json_object_set_new(fb, "reason", json_string(why));
        json_array_append_new(x->fallbacks, fb);
        want = f;
    }
    if (!moeq_gguf_type_computable(want))
        return moeq_fail(x->err, MOEQ_ERR_UNSUPPORTED, "export: tensor '%s': type %s cannot be written by this build",
                         t->name, moeq_gguf_type_get(want)->name);
    t->type = want;
    return MOEQ_OK;
}

static moeq_status add_vec(ex *x, const char *name, int64_t l, const moeq_vec *v)
{
    if (!v->data) return MOEQ_OK;
    out_tensor *t = push(x, name, l);
    if (!t) return moeq_fail(x->err, MOEQ_ERR_NOMEM, "export: out of memory");
    t->kind = K_VEC;
    t->vec = v;
    t->nd = 1;
    t->ne[0] = v->n;
    return choose_type(x, t, 0);
}

/* A layer's 2-D matrices: the model's view (moeq_model_set_override's proj) and the calibration
 * subgroup whose Σ x xᵀ is the input Hessian of the matrix (docs/STATS.md). */
static const struct { const char *name; moeq_proj proj; const char *group; } mat_tab[] = {
    { "attn_q.weight", MOEQ_PROJ_Q, "attn_in" },          { "attn_k.weight", MOEQ_PROJ_K, "attn_in" },
    { "attn_v.weight", MOEQ_PROJ_V, "attn_in" },          { "attn_output.weight", MOEQ_PROJ_O, "attn_o" },
    { "attn_q_a.weight", MOEQ_PROJ_Q_A, "attn_in" },      { "attn_q_b.weight", MOEQ_PROJ_Q_B, "q_b_in" },
    { "attn_kv_a_mqa.weight", MOEQ_PROJ_KV_A, "attn_in" }, { "attn_kv_b.weight", MOEQ_PROJ_KV_B, "kv_b_in" },
    { "ffn_gate_shexp.weight", MOEQ_PROJ_SHARED_GATE, "shared_in" },
    { "ffn_up_shexp.weight", MOEQ_PROJ_SHARED_UP, "shared_in" },
    { "ffn_down_shexp.weight", MOEQ_PROJ_SHARED_DOWN, "shared_down" },
    { "ffn_gate.weight", MOEQ_PROJ_DENSE_GATE, "dense_in" }, { "ffn_up.weight", MOEQ_PROJ_DENSE_UP, "dense_in" },
    { "ffn_down.weight", MOEQ_PROJ_DENSE_DOWN, "dense_down" },
};

static moeq_status add_mat(ex *x, const char *name, int64_t l, const moeq_mat *v, int64_t perm, int router)
{
    if (!v->data) return MOEQ_OK;
    out_tensor *t = push(x, name, l);
    if (!t) return moeq_fail(x->err, MOEQ_ERR_NOMEM, "export: out of memory");
    t->kind = K_MAT;
    t->layer = l;
    t->head = l < 0 ? (!strcmp(name, "token_embd.weight") ? 1 : 2) : 0;
    t->proj = MOEQ_PROJ_COUNT;
    for (size_t i = 0; l >= 0 && i < sizeof mat_tab / sizeof mat_tab[0]; i++)
        if (!strcmp(name, mat_tab[i].name)) { t->proj = mat_tab[i].proj; t->group = mat_tab[i].group; }
    t->mat = *v;
    t->nd = v->rows == 1 ? 1 : 2;   /* qwen2moe's shared-expert gate is {n_embd} */
    t->ne[0] = v->cols;
    t->ne[1] = v->rows;
    t->permute_heads = perm;
    t->is_router = router;
    return choose_type(x, t, source_type(v));
}

static moeq_status add_experts(ex *x, const char *name, int64_t l, moeq_proj p)
{
    moeq_mat v;
    moeq_status st = moeq_model_expert(x->m, l, 0, p, &v, x->err);
    if (st) return st;
    out_tensor *t = push(x, name, l);
    if (!t) return moeq_fail(x->err, MOEQ_ERR_NOMEM, "export: out of memory");
    t->kind = K_EXPERTS;
    t->layer = l;
    t->proj = p;
    t->nd = 3;
    t->ne[0] = v.cols;
    t->ne[1] = v.rows;
    t->ne[2] = x->c->n_experts;
    t->is_expert = 1;
    return choose_type(x, t, source_type(&v));
}

/* gpt-oss's expert biases: {rows, n_expert} F32, expert e's row from moeq_model_expert_bias (gate
 * and up de-interleaved from gate_up_proj_bias, as the converter's [..., ::2] / [..., 1::2]). */
static moeq_status add_expert_bias(ex *x, const char *name, int64_t l, moeq_proj p)
{
    out_tensor *t = push(x, name, l);
    if (!t) return moeq_fail(x->err, MOEQ_ERR_NOMEM, "export: out of memory");
    t->kind = K_EXPERT_BIAS;
    t->layer = l;
    t->proj = p;
    t->nd = 2;
    t->ne[0] = p == MOEQ_PROJ_DOWN ? x->c->hidden : x->c->moe_inter;
    t->ne[1] = x->c->n_experts;
    t->type = 0;
    return MOEQ_OK;
}

/* OLMoE with grouped KV heads: llama.cpp's olmoe graph norms k over {n_embd} (attn_k_norm), so
 * the GGUF has as many KV heads as query heads. Writing each KV head's k/v rows (and k norm
 * weights) once per query head of its group is the same attention exactly: query head h used KV
 * head h / g, and the whole-width RMS of k is unchanged by repeating every head g times. Applies
 * to the tensor just listed (a no-op when nothing was listed or no expansion is needed). */
static moeq_status kv_expand(ex *x)
{
    if (x->kv_repeat <= 1 || x->n == 0) return MOEQ_OK;
    out_tensor *t = &x->t[x->n - 1];
    const char *n = strchr(t->name + 4, '.');
    if (!n || (strcmp(n, ".attn_k.weight") && strcmp(n, ".attn_v.weight") && strcmp(n, ".attn_k_norm.weight")) ||
        t->kv_repeat)
        return MOEQ_OK;
    t->kv_repeat = x->kv_repeat;
    t->kv_hd = x->c->head_dim;
    t->ne[t->nd == 1 ? 0 : 1] *= x->kv_repeat;
    return MOEQ_OK;
}

/* The tensors of the file in order: the embedding, each layer's tensors of the architecture's
 * table (formats/gguf_arch/ARCH.c) that its view has, the final norm and the head. */
/* Every matrix and vector of a layer's view, so that one the architecture's tensor table does
 * not write is refused instead of silently left out of the file. */
#define LV(f) { #f, offsetof(moeq_layer_view, f), 0 }
#define LM(f) { #f, offsetof(moeq_layer_view, f), 1 }
static const struct { const char *name; size_t field; int mat; } view_fields[] = {
    LV(attn_norm), LV(mlp_norm), LM(q), LM(k), LM(v), LM(o), LV(q_bias), LV(k_bias), LV(v_bias), LV(q_norm),
    LV(k_norm), LM(router), LM(dense_gate), LM(dense_up), LM(dense_down), LM(shared_gate), LM(shared_up),
    LM(shared_down), LM(shared_expert_gate), LM(q_a), LM(q_b), LM(kv_a), LM(kv_b), LV(q_a_norm), LV(kv_a_norm),
    LV(router_bias), LV(o_bias), LV(attn_norm_bias), LV(mlp_norm_bias), LV(sinks), LV(router_lin_bias),
};
#undef LV
#undef LM

static moeq_status check_claimed(ex *x, int64_t l, const moeq_layer_view *L)
{
    for (size_t f = 0; f < sizeof view_fields / sizeof view_fields[0]; f++) {
        const void *p = (const unsigned char *)L + view_fields[f].field;
        const void *data = view_fields[f].mat ? ((const moeq_mat *)p)->data : ((const moeq_vec *)p)->data;
        int claimed = !data;
        for (size_t i = 0; !claimed && i < x->a->n_layer; i++) {
            const moeq_gguf_tdesc *d = &x->a->layer[i];
            claimed = (d->kind == GA_VEC || d->kind == GA_MAT || d->kind == GA_ROUTER) && d->field == view_fields[f].field &&
                      !(d->when == GA_MOE && !L->is_moe) && !(d->when == GA_DENSE && L->is_moe) &&
                      !(d->when == GA_MOE_EBIAS && !(L->is_moe && x->c->expert_bias));
        }
        if (!claimed)
            return moeq_fail(x->err, MOEQ_ERR_UNSUPPORTED, "%s: layer %lld has %s, which llama.cpp's %s graph does not "
                             "read: the GGUF would compute another model", moeq_model_path(x->m), (long long)l,
                             view_fields[f].name, x->a->arch);
    }
    return MOEQ_OK;
}

static moeq_status list_tensors(ex *x)
{
    const moeq_model *m = x->m;
    const moeq_config *c = x->c;
    const moeq_gguf_arch *a = x->a;
    moeq_status st;
    int perm = 0, expand = 0;
    for (size_t i = 0; i < a->n_layer; i++) {
        perm |= a->layer[i].xform == GA_PERMUTE_Q || a->layer[i].xform == GA_PERMUTE_K;
        expand |= a->layer[i].xform == GA_KV_EXPAND;
    }
    x->kv_repeat = expand && c->kv_heads < c->heads ? c->heads / c->kv_heads : 1;
    for (x->dense_lead = 0; a->leading_dense && x->dense_lead < c->layers && !c->layer_is_moe[x->dense_lead]; x->dense_lead++) {}
    if ((st = add_mat(x, "token_embd.weight", -1, moeq_model_embed(m), 0, 0))) return st;
    for (int64_t l = 0; l < c->layers; l++) {
        const moeq_layer_view *L = moeq_model_layer(m, l);
        if (!L->is_moe && !(a->leading_dense && l < x->dense_lead))
            return moeq_fail(x->err, MOEQ_ERR_UNSUPPORTED, "%s: layer %lld is a dense MLP layer: llama.cpp's %s graph "
                             "has %s", moeq_model_path(m), (long long)l, a->arch,
                             a->leading_dense ? "dense layers only before the first MoE layer" : "MoE layers only");
        for (size_t i = 0; i < a->n_layer; i++) {
            const moeq_gguf_tdesc *d = &a->layer[i];
            const void *f = (const unsigned char *)L + d->field;
            if ((d->when == GA_MOE && !L->is_moe) || (d->when == GA_DENSE && L->is_moe) ||
                (d->when == GA_MOE_EBIAS && !(L->is_moe && c->expert_bias)))
                continue;
            int64_t heads = d->xform == GA_PERMUTE_Q ? c->heads : d->xform == GA_PERMUTE_K ? c->kv_heads : 0;
            switch (d->kind) {
            case GA_VEC: st = add_vec(x, d->name, l, f); break;
            case GA_MAT: st = add_mat(x, d->name, l, f, heads, 0); break;
            case GA_ROUTER: st = add_mat(x, d->name, l, f, 0, 1); break;
            case GA_EXPERTS: st = add_experts(x, d->name, l, d->proj); break;
            default: st = add_expert_bias(x, d->name, l, d->proj); break;
            }
            if (!st && d->xform == GA_KV_EXPAND) st = kv_expand(x);
            if (st) return st;
        }
        if (perm && L->q_bias.data)
            return moeq_fail(x->err, MOEQ_ERR_UNSUPPORTED, "%s: q/k biases with the %s architecture are not "
                             "supported", moeq_model_path(m), a->arch);
        if ((st = check_claimed(x, l, L))) return st;
    }
    if ((st = add_vec(x, "output_norm.weight", -1, moeq_model_final_norm(m)))) return st;
    /* always an output tensor: qwen2moe and olmoe require it; a tied model duplicates the embedding */
    return add_mat(x, "output.weight", -1, moeq_model_lm_head(m), 0, 0);
}

void moeq_gguf_meta_u32(moeq_gguf_meta *mw, const char *key, int64_t v)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", mw->x->a->arch, key);
    if (!mw->st) mw->st = moeq_gguf_w_u32(mw->w, k, (uint32_t)v);
}

void moeq_gguf_meta_f32(moeq_gguf_meta *mw, const char *key, double v)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", mw->x->a->arch, key);
    if (!mw->st) mw->st = moeq_gguf_w_f32(mw->w, k, (float)v);
}

void moeq_gguf_meta_bool(moeq_gguf_meta *mw, const char *key, int v)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", mw->x->a->arch, key);
    if (!mw->st) mw->st = moeq_gguf_w_bool(mw->w, k, v);
}

void moeq_gguf_meta_str(moeq_gguf_meta *mw, const char *key, const char *v)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", mw->x->a->arch, key);
    if (!mw->st) mw->st = moeq_gguf_w_str(mw->w, k, v, strlen(v));
}

void moeq_gguf_meta_common(moeq_gguf_meta *mw, int64_t head_count_kv, int64_t value_length, int key_length)
{
    const moeq_config *c = mw->x->c;
    const moeq_gguf_arch *a = mw->x->a;
    /* feed_forward_length is the expert width where the arch has no other key for it */
    const int ff_is_expert = !strcmp(a->expert_ff_key, "feed_forward_length");
    moeq_gguf_meta_u32(mw, "block_count", c->layers);
    moeq_gguf_meta_u32(mw, "context_length", c->max_positions);
    moeq_gguf_meta_u32(mw, "embedding_length", c->hidden);
    moeq_gguf_meta_u32(mw, "feed_forward_length", ff_is_expert ? c->moe_inter : c->dense_inter > 0 ? c->dense_inter : c->moe_inter);
    moeq_gguf_meta_u32(mw, "attention.head_count", c->heads);
    moeq_gguf_meta_u32(mw, "attention.head_count_kv", head_count_kv);
    moeq_gguf_meta_f32(mw, "rope.freq_base", c->rope_theta);
    moeq_gguf_meta_f32(mw, "attention.layer_norm_rms_epsilon", c->rms_eps);
    moeq_gguf_meta_u32(mw, "expert_count", c->n_experts);
    moeq_gguf_meta_u32(mw, "expert_used_count", c->top_k);
    if (c->head_dim * c->heads != c->hidden || key_length) {
        moeq_gguf_meta_u32(mw, "attention.key_length", c->head_dim);
        moeq_gguf_meta_u32(mw, "attention.value_length", value_length);
    }
    if (!ff_is_expert) moeq_gguf_meta_u32(mw, a->expert_ff_key, c->moe_inter);
    if (a->shared_ff_key && c->shared_inter > 0) moeq_gguf_meta_u32(mw, a->shared_ff_key, c->shared_inter);
}

/* general.*, the architecture's keys (its meta hook), then the quantization version and file type. */
static moeq_status arch_meta(moeq_gguf_writer *w, const ex *x, const char *name, int ftype)
{
    const char *A = x->a->arch;
    moeq_gguf_ectx ec = { .m = x->m, .c = x->c, .a = x->a, .kv_repeat = x->kv_repeat, .dense_lead = x->dense_lead };
    moeq_gguf_meta mw = { .w = w, .x = &ec };
    mw.st = moeq_gguf_w_str(w, "general.architecture", A, strlen(A));
    if (!mw.st) mw.st = moeq_gguf_w_str(w, "general.type", "model", 5);
    if (!mw.st) mw.st = moeq_gguf_w_str(w, "general.name", name, strlen(name));
    x->a->meta(&mw);
    if (!mw.st) mw.st = moeq_gguf_w_u32(w, "general.quantization_version", 2);
    if (!mw.st) mw.st = moeq_gguf_w_u32(w, "general.file_type", (uint32_t)ftype);
    return mw.st;
}

/* llama_ftype of the file (general.file_type): the type of the routed experts. */
static int ftype_of(int t)
{
    switch (t) {
    case 0: return 0;   case 1: return 1;   case 2: return 2;   case 3: return 3;   case 8: return 7;
    case 6: return 8;   case 7: return 9;   case 10: return 10; case 11: return 12; case 12: return 15;
    case 13: return 17; case 14: return 18; case 20: return 25; case 23: return 30; case 30: return 32;
    case 34: return 36; case 35: return 37;   /* LLAMA_FTYPE_MOSTLY_TQ1_0, TQ2_0 */
    case 39: return 38;   /* LLAMA_FTYPE_MOSTLY_MXFP4_MOE */
    case 137: return 138; /* ik_llama.cpp's LLAMA_FTYPE_MOSTLY_IQ2_K */
    case 145: return 147; /* ik_llama.cpp's LLAMA_FTYPE_MOSTLY_IQ2_KS */
    default: return 0;
    }
}

/* ---- weights ------------------------------------------------------------------------------- */

/* Exact mapping of a .moeq int codec row onto ggml blocks (docs/FORMAT-gguf.md, "From .moeq"):
 * 4-bit sym -> Q4_0, 4-bit asym -> Q4_1 (m = -s*z), 8-bit sym -> Q8_0; groups of 32, 64 or 128
 * repeat their scale into each 32-block. The 4-bit nibble order is ggml's already. */
int moeq_gguf_codec_maps(int bits, int group, int sym, int64_t cols)
{
    if (group % 32 || cols % 32) return -1;   /* a shorter last group is whole 32-blocks too */
    if (bits == 4) return sym ? 2 : 3;
    if (bits == 8 && sym) return 8;
    return -1;
}

static void qrow_copy(const moeq_qmat *q, int64_t r, int type, unsigned char *o)
{
    const uint8_t *codes = q->codes + r * moeq_qmat_row_bytes(q);
    int64_t ng = moeq_qmat_groups(q), bb = 4 * q->bits;
    for (int64_t b = 0; b < q->cols / 32; b++) {
        int64_t g = b * 32 / q->group;
        uint16_t s = q->scales[r * ng + g];
        const uint8_t *cb = codes + b * bb;
        o[0] = (unsigned char)s;
        o[1] = (unsigned char)(s >> 8);
        if (type == 2) {
            memcpy(o + 2, cb, 16);
            o += 18;
        } else if (type == 3) {
            float m = -(moeq_f16_to_f32(s) * moeq_f16_to_f32(q->zeros[r * ng + g]));
            uint16_t mh = moeq_f32_to_f16(m);
            o[2] = (unsigned char)mh;
            o[3] = (unsigned char)(mh >> 8);
            memcpy(o + 4, cb, 16);
            o += 20;
        } else {
            for (int k = 0; k < 32; k++) o[2 + k] = (unsigned char)(int8_t)((int)cb[k] - 128);
            o += 34;
        }
    }
}

/* Row r of an MXFP4 view (gpt_oss's hub blocks: per 32 inputs an E8M0 byte in the scales tensor
 * and 16 bytes holding elements 2t, 2t + 1 in the low and high nibble of byte t) as ggml
 * block_mxfp4 (docs/FORMAT-gguf.md, "MXFP4 passthrough"): the same exponent byte, then qs[j] with
 * element j low and j + 16 high. Only nibbles move; e2m1 codes and exponents are the same
 * encoding on both sides. An exponent 255 (NaN in the OCP format, refused by llama.cpp's loader)
 * is an error. */
static moeq_status mx_row_copy(const ex *x, const moeq_mat *v, int64_t r, unsigned char *o)
{
    const int64_t nb = v->cols / 32;
    const uint8_t *b = (const uint8_t *)v->data + (size_t)(r * v->rstep) * (size_t)(v->cols / 2);
    const uint8_t *sc = v->mx_scales + (size_t)(r * v->rstep) * (size_t)nb;
    for (int64_t k = 0; k < nb; k++, o += 17) {
        if (sc[k] == 255)
            return moeq_fail(x->err, MOEQ_ERR_NUMERIC, "%s: tensor '%s'[%lld]: MXFP4 scale of row %lld, block %lld is "
                             "the E8M0 NaN (255)", moeq_model_path(x->m), v->mx_scale_tensor ? v->mx_scale_tensor : v->tensor,
                             (long long)v->index, (long long)r, (long long)k);
        const uint8_t *hb = b + 16 * k;
        o[0] = sc[k];
        for (int j = 0; j < 16; j++) {
            int lo = (hb[j / 2] >> (4 * (j & 1))) & 15, hi = (hb[(j + 16) / 2] >> (4 * (j & 1))) & 15;
            o[1 + j] = (unsigned char)(lo | (hi << 4));
        }
    }
    return MOEQ_OK;
}

/* One entry of the result's fallbacks: {tensor, fallback, reason}. */
static void note_fallback(ex *x, const char *tensor, const char *fallback, const char *reason)
{
    json_t *fb = json_object();
    json_object_set_new(fb, "tensor", json_string(tensor));
    json_object_set_new(fb, "fallback", json_string(fallback));
    json_object_set_new(fb, "reason", json_string(reason));
    json_array_append_new(x->fallbacks, fb);
}

/* Importance weights of a routed expert's matrix: its Hessian diagonal; an undersampled or
 * dead expert falls back to the layer's sum over experts, then to none (never an error). */
static const float *expert_imp(ex *x, int64_t l, int64_t e, moeq_proj p, int64_t dim, const char *tname)
{
    if (!x->calib) return NULL;
    int64_t tokens = 0;
    int flag = 0;
    moeq_error e2;
    const int down = p == MOEQ_PROJ_DOWN;
    int64_t which = e;
    if (moeq_calib_file_expert(x->calib, l, e, &tokens, &flag, &e2) || flag != MOEQ_CALIB_OK) which = -1;
    int64_t rows = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (moeq_calib_file_hessian(x->calib, l, which, down, x->hbuf, dim, &rows, &e2) == MOEQ_OK && rows > 0) {
            double s = 0;
            for (int64_t j = 0; j < dim; j++) s += x->hbuf[j * dim + j];
            if (s > 0) {
                for (int64_t j = 0; j < dim; j++) x->imp[j] = (float)x->hbuf[j * dim + j];
                if (which != e && p == MOEQ_PROJ_GATE) {   /* once per expert, not per projection */
                    char t[96];
                    snprintf(t, sizeof t, "%s[%lld]", tname, (long long)e);
                    note_fallback(x, t, "layer Hessian diagonal", flag == MOEQ_CALIB_DEAD ? "dead expert" : "undersampled expert");
                }
                return x->imp;
            }
        }
        if (which == -1) break;
        which = -1;
    }
    return NULL;
}

/* The source row of GGUF row r of a K_MAT of rows source rows: llama's q/k permutation (GGUF
 * row r of a head is HF row j*hd/2 + i for r = 2i + j), olmoe's kv_expand (query head h reads KV
 * head h / g). */
static int64_t source_row(const out_tensor *t, int64_t rows, int64_t r)
{
    const int64_t g = t->kv_repeat > 1 ? t->kv_repeat : 1;
    if (g > 1) return r / t->kv_hd / g * t->kv_hd + r % t->kv_hd;
    if (!t->permute_heads) return r;
    const int64_t hd = rows / t->permute_heads, h = r / hd, k = r % hd;
    return h * hd + (k % 2) * (hd / 2) + k / 2;
}

/* Writes rows [0, rows) of v as type t (q/k rows permuted when heads > 0). */
static moeq_status write_mat(ex *x, moeq_gguf_writer *w, const out_tensor *t, const moeq_mat *v, const float *imp,
                             float *row, unsigned char *obuf)
{
    const int64_t rows = v->rows, cols = v->cols;
    const uint64_t ob = moeq_gguf_row_bytes(t->type, cols);
    const int st_type = source_type(v);
    int qmap = v->q ? moeq_gguf_codec_maps(v->q->bits, v->q->group, v->q->sym, cols) : -1;
    if (v->q && qmap != t->type && !x->o->requantize && t->type != 0 && t->type != 1 && t->type != 30) {
        const char *near = v->q->bits <= 4 ? (v->q->sym ? "4-bit g32 sym (Q4_0)" : "4-bit g32 asym (Q4_1)")
                                           : "8-bit g32 sym (Q8_0)";
        char cs[48];
        snprintf(cs, sizeof cs, "%d-bit g%d %s", v->q->bits, v->q->group, v->q->sym ? "sym" : "asym");
        return moeq_fail(x->err, MOEQ_ERR_UNSUPPORTED, "%s: tensor '%s': codec %s does not map exactly onto %s; the "
                         "nearest codec that maps is %s (or pass --requantize)", moeq_model_path(x->m), v->tensor, cs,
                         moeq_gguf_type_get(t->type)->name, qmap >= 0 ? moeq_gguf_type_get(qmap)->name : near);
    }
    if (v->gtype == MOEQ_TDICT_GTYPE && !x->o->requantize && t->type != 0 && t->type != 1 && t->type != 30)
        return moeq_fail(x->err, MOEQ_ERR_UNSUPPORTED, "%s: tensor '%s': codec t1d (ternary, dictionary coded) has no "
                         "ggml type; pass --requantize", moeq_model_path(x->m), v->tensor);
    if (v->gtype && v->gtype != MOEQ_TDICT_GTYPE && v->gtype != t->type && x->m && moeq_model_pack(x->m) &&
        !x->o->requantize && t->type != 0 &&
        t->type != 1 && t->type != 30)   /* a .moeq ggml codec (a plan may mix them within a GGUF tensor) */
        return moeq_fail(x->err, MOEQ_ERR_UNSUPPORTED, "%s: tensor '%s': codec %s is not the %s of its GGUF tensor "
                         "'%s' (GGUF gives one type to all experts of a layer); pass --requantize",
                         moeq_model_path(x->m), v->tensor, moeq_gguf_type_get(v->gtype)->name,
                         moeq_gguf_type_get(t->type)->name, t->name);
    const int64_t g = t->kv_repeat > 1 ? t->kv_repeat : 1;
    for (int64_t r = 0; r < rows * g; r++) {
        const int64_t sr = source_row(t, rows, r);
        moeq_status st;
        if (v->q && qmap == t->type) {
            qrow_copy(v->q, sr, t->type, obuf);
        } else if (v->mx_scales && t->type == 39) {
            if ((st = mx_row_copy(x, v, sr, obuf))) return st;
        } else if (st_type == t->type && !v->q && !v->rstep && !v->cstep && !v->mx_scales && v->dtype != MOEQ_DT_F8_E4M3) {
            /* same type, row-major: the bytes themselves (FP8 blocks, counted as F32, are widened) */
            uint64_t rb = v->gtype ? v->grow : (uint64_t)cols * moeq_dtype_size(v->dtype);
            memcpy(obuf, (const unsigned char *)v->data + sr * rb, (size_t)rb);
        } else {
            moeq_mat_to_f32(v, sr, sr + 1, row);
            moeq_gguf_row_from_f32(t->type, row, imp, obuf, cols);
        }
        if ((st = moeq_gguf_w_data(w, obuf, (size_t)ob, x->err))) return st;
    }
    return MOEQ_OK;
}

/* A layer's 2-D matrix in a quantized type, weighed by its input Hessian (the subgroup of
 * mat_tab, which calibrate --scope all collects): GPTQ on the type's grid with --method gptq
 * (damping --damp, else 0.01: subgroups have no validation split), else the weighted search with
 * diag(H) as importances (what llama.cpp does with an imatrix). Quantized in the source's row
 * order, written through source_row (rows are independent). A file without the subgroup: the
 * plain search, noted in fallbacks. plan --target gguf costs the matrix the same way. */
static moeq_status write_mat_h(ex *x, moeq_gguf_writer *w, const out_tensor *t, float *row, unsigned char *obuf)
{
    const moeq_mat *v = &t->mat;
    const int64_t rows = v->rows, cols = v->cols;
    if (x->h2_dim < cols) {
        free(x->h2);
        x->h2 = malloc((size_t)(cols * cols) * sizeof *x->h2);
        x->h2_dim = x->h2 ? cols : 0;
        if (!x->h2) return moeq_fail(x->err, MOEQ_ERR_NOMEM, "export: out of memory for the Hessian of '%s'", t->name);
    }
    int64_t hrows = 0;
    moeq_error e2 = { 0 };
    moeq_status st = moeq_calib_file_group_hessian(x->calib, t->layer, t->group, x->h2, cols, &hrows, &e2);
    if (st && st != MOEQ_ERR_NOT_FOUND) {
        if (x->err) *x->err = e2;
        return st;
    }
    double tr = 0;
    for (int64_t c = 0; !st && c < cols; c++) tr += x->h2[c * cols + c];
    if (st || hrows <= 0 || !(tr > 0)) {
        char why[128];
        snprintf(why, sizeof why, "the calibration file has no %s Hessian (calibrate --scope all collects it)", t->group);
        note_fallback(x, t->name, "no importances", why);
        return write_mat(x, w, t, v, NULL, row, obuf);
    }
    const uint64_t rb = moeq_gguf_row_bytes(t->type, cols);
    float *wf = malloc((size_t)(rows * cols) * sizeof *wf), *imp = malloc((size_t)cols * sizeof *imp);
    unsigned char *dst = malloc((size_t)(rb * (uint64_t)rows));
    if (!wf || !imp || !dst) {
        st = moeq_fail(x->err, MOEQ_ERR_NOMEM, "export: out of memory for '%s'", t->name);
        goto out;
    }
    moeq_mat_to_f32(v, 0, rows, wf);
    if (x->o->gptq) {
        moeq_gptq_opts go = { .damp = t->plan_damp > 0 ? t->plan_damp : x->o->damp > 0 ? x->o->damp : 0.01 };
        moeq_gptq_info info = { 0 };
        st = moeq_ggml_gptq((moeq_ggml_type)t->type, wf, rows, cols, x->h2, &go, dst, NULL, &info, x->err);
        if (!st && info.rtn_fallback) note_fallback(x, t->name, "weighted search", "the Hessian could not be factorized");
    } else {
        for (int64_t c = 0; c < cols; c++) imp[c] = (float)x->h2[c * cols + c];
#pragma omp parallel for schedule(dynamic, 16)
        for (int64_t r = 0; r < rows; r++)
            moeq_gguf_row_from_f32(t->type, wf + r * cols, imp, dst + (uint64_t)r * rb, cols);
    }
    const int64_t g = t->kv_repeat > 1 ? t->kv_repeat : 1;
    for (int64_t r = 0; !st && r < rows * g; r++)
        st = moeq_gguf_w_data(w, dst + (uint64_t)source_row(t, rows, r) * rb, (size_t)rb, x->err);
out:
    free(wf);
    free(imp);
    free(dst);
    return st;
}

/* Whether a K_MAT is quantized with its input Hessian (write_mat_h): a layer matrix with a
 * calibration subgroup, a quantized type, a float source (a .moeq codec or GGUF block is copied
 * or requantized as write_mat does). */
static int mat_weighed(const ex *x, const out_tensor *t)
{
    return x->calib && t->group && t->type != 0 && t->type != 1 && t->type != 30 && !t->mat.q && !t->mat.gtype;
}

/* GPTQ on the type's grid (moeq_ggml_gptq: block scales fixed first by the weighted search, then
 * error feedback through the columns) with the Hessian expert_imp left in x->hbuf; without one
 * (have_h 0) the weighted search with the fallback weight. fz: the factorization of x->hbuf is
 * *fz->h, already made (gate and up share it), else made here. keep: the bytes go there, not to
 * the file (up's, written when its tensor comes). */
typedef struct { const moeq_gptq_hinv *h; } shared_factor;

static moeq_status write_gptq(ex *x, moeq_gguf_writer *w, const out_tensor *t, const moeq_mat *v, int have_h,
                              const shared_factor *fz, unsigned char *keep)
{
    const int64_t rows = v->rows, cols = v->cols;
    const uint64_t rb = moeq_gguf_row_bytes(t->type, cols);
    float *wf = malloc((size_t)(rows * cols) * sizeof *wf);
    void *dst = keep ? keep : malloc((size_t)(rb * (uint64_t)rows));
    moeq_status st;
    if (!wf || !dst) {
        st = moeq_fail(x->err, MOEQ_ERR_NOMEM, "export: out of memory for GPTQ of '%s'", t->name);
    } else {
        moeq_mat_to_f32(v, 0, rows, wf);
        moeq_gptq_opts go = { .damp = x->damp };
        moeq_gptq_info info = { 0 };
        const double *H = have_h ? x->hbuf : NULL;
        st = fz ? moeq_ggml_gptq_with((moeq_ggml_type)t->type, wf, rows, cols, H, fz->h, &go, dst, NULL, &info, x->err)
                : moeq_ggml_gptq((moeq_ggml_type)t->type, wf, rows, cols, H, &go, dst, NULL, &info, x->err);
        if (!st && info.rtn_fallback && have_h) {
            char nm[96];
            snprintf(nm, sizeof nm, "%s[%lld]", t->name, (long long)v->index);
            note_fallback(x, nm, "weighted search", "the Hessian could not be factorized");
        }
        if (!st && !keep) st = moeq_gguf_w_data(w, dst, (size_t)(rb * (uint64_t)rows), x->err);
    }
    free(wf);
    if (!keep) free(dst);
    return st;
}

/* --damp auto (docs/export.md): GPTQ's damping for one routed-expert tensor, chosen for held-out
 * error as quantize does for its codecs: each candidate quantizes the (at most DAMP_EXPERTS)
 * best-sampled experts with their calibration-split Hessians, and the one with the smallest
 * summed error under the validation-split Hessians, tr(ΔW H_val ΔWᵀ), wins (ties: the smaller).
 * Without a split, or with no well-sampled expert, 0.01. The choice goes to x->damps. */
static const double damp_candidates[] = { 0.01, 0.03, 0.1, 0.3, 1.0 };
#define DAMP_EXPERTS 16

static moeq_status choose_damp(ex *x, const out_tensor *const *ts, int nt, double *out)
{
    /* nt 2: gate and up, one Hessian: each (expert, candidate) factorization serves both */
    const int nd = (int)(sizeof damp_candidates / sizeof damp_candidates[0]);
    const out_tensor *t = ts[0];
    const int down = t->proj == MOEQ_PROJ_DOWN;
    double verr[2][8] = { { 0 } };
    for (int k = 0; k < nt; k++) out[k] = 0.01;
    if (!x->calib || moeq_calib_file_val_windows(x->calib) <= 0) return MOEQ_OK;
    moeq_mat v;
    moeq_status st = moeq_model_expert(x->m, t->layer, 0, t->proj, &v, x->err);
    if (st) return st;
    const int64_t rows = v.rows, cols = v.cols;
    moeq_mat_release(&v);
    uint64_t rb = 0;
    for (int k = 0; k < nt; k++) {
        const uint64_t b = moeq_gguf_row_bytes(ts[k]->type, cols);
        rb = b > rb ? b : rb;
    }
    float *wf = malloc((size_t)(nt * rows * cols) * sizeof *wf), *wq = malloc((size_t)(rows * cols) * sizeof *wq);
    double *Hc = malloc((size_t)(cols * cols) * sizeof *Hc), *Hv = malloc((size_t)(cols * cols) * sizeof *Hv);
    void *raw = malloc((size_t)(rb * (uint64_t)rows));
    int used = 0;
    if (!wf || !wq || !Hc || !Hv || !raw) st = moeq_fail(x->err, MOEQ_ERR_NOMEM, "export: out of memory for --damp auto");
    /* the DAMP_EXPERTS best-sampled experts decide (ties: the lower index): a sample of the
     * tensor's experts is enough for one choice, and 60 experts x 5 candidates would be 5 GPTQ
     * passes more per expert */
    int64_t *tok = calloc((size_t)x->c->n_experts, sizeof *tok);
    if (!tok) st = moeq_fail(x->err, MOEQ_ERR_NOMEM, "export: out of memory for --damp auto");
    for (int64_t e = 0; !st && e < x->c->n_experts; e++) {
        int flag = 0;
        moeq_error e2;
        if (moeq_calib_file_expert(x->calib, t->layer, e, &tok[e], &flag, &e2) || flag != MOEQ_CALIB_OK) tok[e] = -1;
    }
    for (int64_t e = 0; !st && e < x->c->n_experts; e++) {
        int64_t rc = 0, rv = 0, better = 0;
        moeq_error e2;
        if (tok[e] < 0) continue;
        for (int64_t f = 0; f < x->c->n_experts; f++) better += tok[f] > tok[e] || (tok[f] == tok[e] && f < e);
        if (better >= DAMP_EXPERTS) continue;
        if (moeq_calib_file_hessian_split(x->calib, t->layer, e, down, MOEQ_SPLIT_CAL, Hc, cols, &rc, &e2) ||
            moeq_calib_file_hessian_split(x->calib, t->layer, e, down, MOEQ_SPLIT_VAL, Hv, cols, &rv, &e2) || rc <= 0 || rv <= 0)
            continue;
        for (int k = 0; !st && k < nt; k++) {
            if ((st = moeq_model_expert(x->m, t->layer, e, ts[k]->proj, &v, x->err))) break;
            moeq_mat_to_f32(&v, 0, rows, wf + k * rows * cols);
            moeq_mat_release(&v);
        }
        for (int d = 0; !st && d < nd; d++) {
            moeq_gptq_opts go = { .damp = damp_candidates[d] };
            moeq_gptq_hinv *h = NULL;
            st = moeq_ggml_gptq_factor(Hc, cols, &go, &h, x->err);
            for (int k = 0; !st && k < nt; k++) {
                const float *wk = wf + k * rows * cols;
                moeq_gptq_info info = { 0 };
                st = moeq_ggml_gptq_with((moeq_ggml_type)ts[k]->type, wk, rows, cols, Hc, h, &go, raw, wq, &info, x->err);
                if (!st) verr[k][d] += moeq_hessian_error(wk, wq, rows, cols, Hv);
            }
            moeq_gptq_hinv_free(h);
        }
        used++;
    }
    for (int k = 0; !st && used && k < nt; k++) {
        int best = 0;
        for (int d = 1; d < nd; d++) if (verr[k][d] < verr[k][best]) best = d;
        out[k] = damp_candidates[best];
        json_t *r = json_object(), *ve = json_array();
        for (int d = 0; d < nd; d++) json_array_append_new(ve, json_real(verr[k][d]));
        json_object_set_new(r, "tensor", json_string(ts[k]->name));
        json_object_set_new(r, "damp", json_real(out[k]));
        json_object_set_new(r, "experts", json_integer(used));
        json_object_set_new(r, "val_err", ve);
        json_array_append_new(x->damps, r);
    }
    free(wf); free(wq); free(Hc); free(Hv); free(raw); free(tok);
    return st;
}

/* The up tensor whose experts are quantized beside gate tensor i's (the same Hessian: one read
 * and one factorization per expert), else x->n: GPTQ, both grids of ggml codes (not float, not
 * MXFP4, which may be copied), and up's bytes held until its turn at most PAIR_BYTES. */
#define PAIR_BYTES ((uint64_t)1 << 30)

static size_t pair_of(const ex *x, size_t i)
{
    const out_tensor *t = &x->t[i];
    if (!x->o->gptq || t->kind != K_EXPERTS || t->proj != MOEQ_PROJ_GATE) return x->n;
    for (size_t j = i + 1; j < x->n; j++) {
        const out_tensor *u = &x->t[j];
        if (u->kind != K_EXPERTS || u->layer != t->layer || u->proj != MOEQ_PROJ_UP) continue;
        const int grid = !(t->type <= 1 || t->type == 30 || t->type == 39 || u->type <= 1 || u->type == 30 || u->type == 39);
        const uint64_t bytes = moeq_gguf_row_bytes(u->type, u->ne[0]) * (uint64_t)(u->ne[1] * u->ne[2]);
        return grid && u->ne[0] == t->ne[0] && bytes <= PAIR_BYTES ? j : x->n;
    }
    return x->n;
}

/* x->tdamp[i] (and [u] when u < x->n, chosen together) for an expert tensor: the plan's, else
 * --damp, else (GPTQ) --damp auto, else 0.01 */
static moeq_status tensor_damp(ex *x, size_t i, size_t u)
{
    if (x->tdamp[i] > 0) return MOEQ_OK;
    const out_tensor *ts[2];
    size_t idx[2];
    int na = 0;
    for (int k = 0; k < (u < x->n ? 2 : 1); k++) {
        const size_t j = k ? u : i;
        const out_tensor *t = &x->t[j];
        x->tdamp[j] = t->plan_damp > 0 ? t->plan_damp : x->o->damp > 0 ? x->o->damp : 0.01;
        if (x->o->gptq && x->o->damp <= 0 && t->plan_damp <= 0) { ts[na] = t; idx[na++] = j; }
    }
    double d[2];
    moeq_status st = na ? choose_damp(x, ts, na, d) : MOEQ_OK;
    for (int k = 0; !st && k < na; k++) x->tdamp[idx[k]] = d[k];
    return st;
}

/* The GGUF architecture of m, or the reason llama.cpp's graph for it would compute another model:
 * the architecture's own check (formats/gguf_arch/ARCH.c), then the rules of its row. */
static moeq_status check_arch(const moeq_model *m, const moeq_gguf_export_opts *o, const moeq_gguf_arch **out,
                              moeq_error *err)
{
    const moeq_config *c = moeq_model_config(m);
    const moeq_gguf_arch *a = *out = moeq_gguf_arch_of_model_type(c->model_type);
    if (!a) {
        char list[128];
        moeq_gguf_arch_list(list, sizeof list);
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: model_type %s has no GGUF architecture (supported: %s)",
                         moeq_model_path(m), c->model_type, list);
    }
    moeq_status st;
    if (a->check && (st = a->check(m, o, err))) return st;
    /* llama.cpp's graphs fix the top-k renormalization per architecture (its row's renorm) */
    if (a->renorm >= 0 && c->norm_topk_prob != a->renorm)
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: norm_topk_prob is %s, but llama.cpp's %s graph %s the top-k "
                         "weights: the GGUF would compute another model", moeq_model_path(m),
                         c->norm_topk_prob ? "true" : "false", a->arch, a->renorm ? "always renormalizes" : "never renormalizes");
    /* grouped KV heads written as heads (GA_KV_EXPAND, olmoe: attn_k_norm is {n_embd} in
     * llama.cpp's graph) need whole groups */
    int expand = 0;
    for (size_t i = 0; i < a->n_layer; i++) expand |= a->layer[i].xform == GA_KV_EXPAND;
    if (expand && (c->kv_heads < 1 || c->heads % c->kv_heads))
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "%s: %lld KV heads do not divide %lld heads", moeq_model_path(m),
                         (long long)c->kv_heads, (long long)c->heads);
    return MOEQ_OK;
}

moeq_status moeq_gguf_export(const moeq_model *m, const char *out_path, const moeq_gguf_export_opts *o,
                             moeq_gguf_export_result *res, moeq_error *err)
{
    memset(res, 0, sizeof *res);
    const moeq_config *c = moeq_model_config(m);
    const moeq_gguf_arch *a = NULL;
    moeq_status st = check_arch(m, o, &a, err);
    if (st) return st;
    ex x = { .m = m, .c = c, .a = a, .o = o, .err = err };
    moeq_gguf_writer *w = NULL;
    float *row = NULL;
    unsigned char *obuf = NULL, *pend = NULL;   /* pend: up's bytes (pair_of), pend_bytes of them, for tensor pend_for */
    size_t pend_bytes = 0, pend_for = 0;
    x.fallbacks = json_array();
    x.damps = json_array();
    x.re = calloc((size_t)(o->n_rules ? o->n_rules : 1), sizeof *x.re);
    int n_re = 0;
    if (!x.re || !x.fallbacks || !x.damps) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "export: out of memory"); goto out; }
    for (; n_re < o->n_rules; n_re++)
        if (regcomp(&x.re[n_re], o->rule_regex[n_re], REG_EXTENDED | REG_NOSUB)) {
            st = moeq_fail(err, MOEQ_ERR_MISUSE, "export: --tensor-type: '%s' is not a valid regular expression",
                           o->rule_regex[n_re]);
            goto out;
        }
    if (o->gptq && !o->calib_path)
        return moeq_fail(err, MOEQ_ERR_MISUSE, "export: --method gptq needs --calib F.h5 (the experts' Hessians)");
    if (o->calib_path) {
        if ((st = moeq_calib_file_open(o->calib_path, m, &x.calib, err))) goto out;
        int64_t dmax = c->hidden > c->moe_inter ? c->hidden : c->moe_inter;
        x.hbuf = malloc((size_t)(dmax * dmax) * sizeof *x.hbuf);
        x.imp = malloc((size_t)dmax * sizeof *x.imp);
        if (!x.hbuf || !x.imp) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "export: out of memory"); goto out; }
    }
    if (o->n_plan && !(x.plan_used = calloc((size_t)o->n_plan, 1))) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "export: out of memory"); goto out; }
    if ((st = list_tensors(&x))) goto out;
    for (int i = 0; i < o->n_plan; i++)
        if (!x.plan_used[i]) {
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "export: --plan: entry %d names '%s', which is not a quantizable "
                           "matrix of this model's GGUF (a plan of another model or scope?)", i, o->plan_names[i]);
            goto out;
        }
    if ((st = moeq_gguf_writer_create(out_path, &w, err))) goto out;
    src_files sf = { .m = m };
    const char *mp = moeq_model_path(m);
    snprintf(sf.dir, sizeof sf.dir, "%s", mp);
    const char *base = strrchr(mp, '/');
    base = base && base[1] ? base + 1 : mp;
    char gname[256];
    const char *gn;
    uint64_t gnl;
    if (moeq_model_gguf(m) && moeq_gguf_get_str(moeq_model_gguf(m), "general.name", 0, &gn, &gnl, err) == MOEQ_OK &&
        moeq_gguf_find_kv(moeq_model_gguf(m), "general.name")) {   /* a GGUF source keeps its name */
        snprintf(gname, sizeof gname, "%.*s", (int)(gnl < 255 ? gnl : 255), gn);
        base = gname;
    }
    int ftype = o->type;
    for (size_t i = 0; ftype < 0 && i < x.n; i++)
        if (x.t[i].is_expert) ftype = x.t[i].type;
    if ((st = arch_meta(w, &x, base, ftype_of(ftype)))) {
        st = moeq_fail(err, MOEQ_ERR_NOMEM, "export: out of memory");
        goto out;
    }
    const moeq_gguf *gsrc = moeq_model_gguf(m);
    if (gsrc) {   /* a GGUF source: its tokenizer metadata as it is */
        for (size_t i = 0; i < moeq_gguf_nkv(gsrc); i++) {
            const moeq_gguf_kv *kv = moeq_gguf_kv_at(gsrc, i);
            if (strncmp(kv->key, "tokenizer.", 10)) continue;
            if ((st = moeq_gguf_w_raw(w, kv->key, kv->type, kv->raw, kv->raw_len))) {
                st = moeq_fail(err, MOEQ_ERR_NOMEM, "export: out of memory");
                goto out;
            }
        }
    } else if ((st = tokenizer_meta(w, &sf, a, o, err))) {
        goto out;
    }
    for (size_t i = 0; i < x.n; i++)
        if ((st = moeq_gguf_w_tensor(w, x.t[i].name, x.t[i].nd, x.t[i].ne, x.t[i].type, err))) goto out;
    if ((st = moeq_gguf_w_begin_data(w, err))) goto out;
    int64_t maxc = 1;
    for (size_t i = 0; i < x.n; i++) maxc = x.t[i].ne[0] > maxc ? x.t[i].ne[0] : maxc;
    row = malloc((size_t)maxc * sizeof *row);
    obuf = malloc((size_t)maxc * 4 + 64);
    x.tdamp = calloc(x.n ? x.n : 1, sizeof *x.tdamp);
    if (!row || !obuf || !x.tdamp) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "export: out of memory"); goto out; }
    uint64_t weights = 0, wbytes = 0;
    for (size_t i = 0; i < x.n; i++) {
        const out_tensor *t = &x.t[i];
        if (t->kind == K_VEC) {
            moeq_vec_to_f32(t->vec, row);
            for (int64_t j = t->ne[0] - 1; t->kv_repeat > 1 && j >= 0; j--)   /* kv_expand, backwards in place */
                row[j] = row[j / t->kv_hd / t->kv_repeat * t->kv_hd + j % t->kv_hd];
            st = moeq_gguf_w_data(w, row, (size_t)t->ne[0] * 4, err);
        } else if (t->kind == K_EXPERT_BIAS) {
            for (int64_t e = 0; !st && e < c->n_experts; e++) {
                if (moeq_model_expert_bias(m, t->layer, e, t->proj, row) != 1) {
                    st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: no bias of expert %lld for '%s'", moeq_model_path(m),
                                   (long long)e, t->name);
                    break;
                }
                st = moeq_gguf_w_data(w, row, (size_t)t->ne[0] * 4, err);
            }
        } else if (t->kind == K_MAT) {
            st = mat_weighed(&x, t) ? write_mat_h(&x, w, t, row, obuf) : write_mat(&x, w, t, &t->mat, NULL, row, obuf);
            moeq_mat_release(&t->mat);
        } else if (pend && pend_for == i) {   /* an up tensor quantized beside its gate */
            st = moeq_gguf_w_data(w, pend, pend_bytes, err);
            free(pend);
            pend = NULL;
        } else {
            const size_t u = pair_of(&x, i);
            if ((st = tensor_damp(&x, i, u))) goto out;
            x.damp = x.tdamp[i];
            const int paired = u < x.n && x.tdamp[u] == x.damp;
            const out_tensor *tu = paired ? &x.t[u] : NULL;
            const size_t per_e = paired ? (size_t)(moeq_gguf_row_bytes(tu->type, tu->ne[0]) * (uint64_t)tu->ne[1]) : 0;
            if (paired) {
                pend_for = u;
                pend_bytes = per_e * (size_t)c->n_experts;
                if (!(pend = malloc(pend_bytes))) { st = moeq_fail(err, MOEQ_ERR_NOMEM, "export: out of memory"); goto out; }
            }
            for (int64_t e = 0; !st && e < c->n_experts; e++) {
                moeq_mat v;
                if ((st = moeq_model_expert(m, t->layer, e, t->proj, &v, err))) break;
                const float *imp = expert_imp(&x, t->layer, e, t->proj, v.cols, t->name);
                if (paired) {   /* gate and up: one Hessian read, one factorization */
                    moeq_mat vu;
                    moeq_gptq_opts go = { .damp = x.damp };
                    shared_factor fz = { NULL };
                    moeq_gptq_hinv *h = NULL;
                    if ((st = moeq_model_expert(m, t->layer, e, tu->proj, &vu, err))) { moeq_mat_release(&v); break; }
                    if (imp) st = moeq_ggml_gptq_factor(x.hbuf, v.cols, &go, &h, err);
                    fz.h = h;
                    if (!st) st = write_gptq(&x, w, t, &v, imp != NULL, &fz, NULL);
                    if (!st) st = write_gptq(&x, w, tu, &vu, imp != NULL, &fz, pend + (size_t)e * per_e);
                    moeq_gptq_hinv_free(h);
                    moeq_mat_release(&vu);
                } else {
                    /* MXFP4 codes written as MXFP4 are copied, GPTQ or not */
                    st = o->gptq && !(v.mx_scales && t->type == 39) ? write_gptq(&x, w, t, &v, imp != NULL, NULL, NULL)
                                                                     : write_mat(&x, w, t, &v, imp, row, obuf);
                }
                moeq_mat_release(&v);
            }
        }
        if (st) goto out;
        int64_t numel = t->ne[0] * (t->nd > 1 ? t->ne[1] : 1) * (t->nd > 2 ? t->ne[2] : 1);
        uint64_t nb = moeq_gguf_row_bytes(t->type, t->ne[0]) * (uint64_t)(numel / t->ne[0]);
        weights += (uint64_t)numel;
        wbytes += nb;
        if (t->type >= 0 && t->type < 256) res->types[t->type]++;
        if (o->progress) o->progress(o->user, (int64_t)i, (int64_t)x.n, t->name, t->nd, t->ne, moeq_gguf_type_get(t->type)->name);
    }
    if ((st = moeq_gguf_writer_finish(w, &res->bytes, err))) goto out;
    res->weights = weights;
    res->bits_per_weight = weights ? 8.0 * (double)wbytes / (double)weights : 0;
    res->tensors = (int64_t)x.n;
    res->fallbacks = x.fallbacks;
    x.fallbacks = NULL;
    res->damps = x.damps;
    x.damps = NULL;
out:
    moeq_gguf_writer_free(w);
    for (int r = 0; r < n_re; r++) regfree(&x.re[r]);
    free(x.re);
    free(x.t);
    free(x.plan_used);
    free(row);
    free(obuf);
    free(pend);
    free(x.tdamp);
    free(x.hbuf);
    free(x.imp);
    free(x.h2);
    moeq_calib_file_close(x.calib);
    json_decref(x.fallbacks);
    json_decref(x.damps);
    return st;
}

moeq_status moeq_gguf_export_matrices(const moeq_model *m, moeq_gguf_matrix **out, size_t *n, moeq_error *err)
{
    *out = NULL;
    *n = 0;
    const moeq_gguf_arch *a = NULL;
    /* as an F32 export would list them: every matrix, none refused for its stored codec (the
     * YaRN rounding does not change which matrices there are) */
    moeq_gguf_export_opts o = { .type = 0, .yarn_truncate = 1 };
    moeq_status st = check_arch(m, &o, &a, err);
    if (st) return st;
    ex x = { .m = m, .c = moeq_model_config(m), .a = a, .o = &o, .err = err };
    x.fallbacks = json_array();
    if (!x.fallbacks) return moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
    if ((st = list_tensors(&x)) == MOEQ_OK) {
        moeq_gguf_matrix *r = calloc(x.n ? x.n : 1, sizeof *r);
        if (!r) st = moeq_fail(err, MOEQ_ERR_NOMEM, "out of memory");
        for (size_t i = 0; r && i < x.n; i++) {
            const out_tensor *t = &x.t[i];
            if (t->kind == K_VEC || t->kind == K_EXPERT_BIAS || t->is_router) continue;
            moeq_gguf_matrix *g = &r[(*n)++];
            snprintf(g->name, sizeof g->name, "%s", t->name);
            g->cols = t->ne[0];
            g->rows = t->nd > 1 ? t->ne[1] : 1;
            g->layer = t->layer;
            g->experts = t->kind == K_EXPERTS ? t->ne[2] : 0;
            g->proj = t->proj;
            if (t->kind == K_MAT) {
                g->mat = t->mat;
                g->group = t->group;
                g->head = t->head;
            }
        }
        *out = r;
    }
    free(x.t);
    json_decref(x.fallbacks);
    return st;
}
