/* moeq verify PATH: the deep check of any input moeq reads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common.h"
#include "moeq_model.h"
#include "moeq_safetensors.h"
#include "moeq_pack.h"
#include "moeq_gguf.h"
#include "moeq_tokenizer.h"

static const char *VERIFY_HELP =
    "usage: moeq verify PATH [--tokens [--vocab N]] [--json] [-q] [--threads N]\n\n"
    "Deep check of an input, every rule of docs/FORMAT-safetensors.md and more:\n"
    "  a directory       the index and every shard; with config.json, each tensor the family\n"
    "                    needs (presence, dtype, shape); then every tensor's values for NaN/Inf\n"
    "  FILE.moeq         a packed file: every rule of docs/FORMAT.md (F-1..F-17), every blob's\n"
    "                    checksum, zero padding, NaN/Inf in scales, zeros and raw floats, then\n"
    "                    the model view (config, every tensor the family needs)\n"
    "  FILE.gguf         a GGUF file: every rule of docs/FORMAT-gguf.md (G-1..G-12), the model its\n"
    "                    metadata describes (architecture, every tensor's type and ne), NaN/Inf,\n"
    "                    the tokenizer --text reads (a kind moeq does not rebuild is no error)\n"
    "  FILE.safetensors  one safetensors file (header rules, then NaN/Inf in float tensors)\n"
    "  FILE.json         a model.safetensors.index.json and the shards it names\n"
    "  --tokens          PATH is a token file (safetensors with one 1-D I32/I64/U32 tensor,\n"
    "                    or raw little-endian uint32); --vocab N also checks every id < N\n"
    "  --json            result as JSON on stdout: path, kind, tensors, bytes, nonfinite\n"
    "  -q                no human-readable text\n"
    "Exit 0 when every check passes, 2 for a broken or unsupported input, 3 for NaN/Inf values.\n";

/* Reads every tensor of a checkpoint for NaN/Inf; stops at the first bad tensor. */
static moeq_status scan_checkpoint(const moeq_checkpoint *ck, int progress, int64_t *count,
                                   uint64_t *bytes, moeq_error *err)
{
    size_t n = moeq_ckpt_count(ck);
    *count = (int64_t)n;
    *bytes = moeq_ckpt_bytes(ck);
    for (size_t i = 0; i < n; i++) {
        moeq_status st = moeq_tensor_check_finite(moeq_ckpt_tensor(ck, i), NULL, err);
        moeq_tensor_release(moeq_ckpt_tensor(ck, i));   /* read once: keep RSS to one tensor */
        if (st != MOEQ_OK) return st;
        if (progress && (i % 64 == 0 || i + 1 == n)) {
            fprintf(stderr, "\rverify: %zu/%zu tensors", i + 1, n);
            if (i + 1 == n) fputc('\n', stderr);
        }
    }
    return MOEQ_OK;
}

int cmd_verify(int argc, char **argv)
{
    tool_common tc = {0};
    const char *path = NULL;
    int tokens = 0;
    int64_t vocab = 0;
    for (int i = 1; i < argc; i++) {
        int r = tool_common_option("verify", argc, argv, &i, &tc);
        if (r < 0) return 1;
        if (r) continue;
        const char *a = argv[i], *v;
        if (!strcmp(a, "--tokens")) tokens = 1;
        else if (!strcmp(a, "--vocab")) {
            if (!(v = tool_value("verify", argc, argv, &i)) || tool_parse_int("verify", a, v, 1, &vocab)) return 1;
        } else if (a[0] == '-' && a[1]) return tool_usage_error("verify", "unknown option %s", a);
        else if (path) return tool_usage_error("verify", "one PATH only (got '%s' and '%s')", path, a);
        else path = a;
    }
    if (tc.help) { fputs(VERIFY_HELP, stdout); return 0; }
    if (!path) return tool_usage_error("verify", "missing PATH");
    if (vocab && !tokens) return tool_usage_error("verify", "--vocab goes with --tokens");
    tc.progress = !tc.quiet && isatty(2);

    moeq_error err = {0};
    moeq_status st = MOEQ_OK;
    const char *kind;
    int64_t count = 0;
    uint64_t bytes = 0;
    struct stat sb;
    int is_dir = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (tokens) {
        kind = "tokens";
        int32_t *ids = NULL;
        st = moeq_tokens_load(path, vocab, &ids, &count, &err);
        bytes = (uint64_t)count * 4;
        free(ids);
    } else if (is_dir) {
        /* the checkpoint's own rules first, so a broken shard is reported as such even when
         * config.json is missing or wrong; then the model's tensors against its config */
        kind = "checkpoint";
        moeq_checkpoint *ck = NULL;
        st = moeq_ckpt_open(path, &ck, &err);
        moeq_ckpt_close(ck);
        char cfg[4096];
        snprintf(cfg, sizeof cfg, "%s/config.json", path);
        if (st == MOEQ_OK && access(cfg, F_OK) == 0) {
            kind = "model";
            moeq_model *m = NULL;
            st = moeq_model_open(path, &m, &err);
            if (st == MOEQ_OK) st = scan_checkpoint(moeq_model_checkpoint(m), tc.progress, &count, &bytes, &err);
            moeq_model_close(m);
        } else if (st == MOEQ_OK) {
            st = moeq_ckpt_open(path, &ck, &err);
            if (st == MOEQ_OK) st = scan_checkpoint(ck, tc.progress, &count, &bytes, &err);
            moeq_ckpt_close(ck);
        }
    } else if (moeq_gguf_is_path(path)) {
        /* every container rule (G-1..G-12), the model the metadata describes, then the values */
        kind = "gguf";
        moeq_gguf *g = NULL;
        st = moeq_gguf_open(path, &g, &err);
        if (st == MOEQ_OK) {
            moeq_model *m = NULL;
            st = moeq_model_open(path, &m, &err);
            moeq_model_close(m);
        }
        if (st == MOEQ_OK) st = moeq_gguf_check_finite(g, &err);
        if (st == MOEQ_OK && moeq_gguf_find_kv(g, "tokenizer.ggml.model")) {
            /* the tokenizer as --text reads it (tokenizer.huggingface.json, else rebuilt from
             * tokenizer.ggml.*): broken metadata fails; a kind moeq does not rebuild does not */
            moeq_tokenizer *tok = NULL;
            moeq_error terr = {0};
            moeq_status ts = moeq_gguf_tokenizer(g, &tok, &terr);
            moeq_tokenizer_free(tok);
            if (ts != MOEQ_OK && ts != MOEQ_ERR_UNSUPPORTED) {
                st = ts;
                err = terr;
            }
        }
        if (st == MOEQ_OK) {
            count = (int64_t)moeq_gguf_ntensors(g);
            bytes = moeq_gguf_size(g);
        }
        moeq_gguf_close(g);
    } else if (moeq_pack_is_packed(path) || (strlen(path) > 5 && !strcmp(path + strlen(path) - 5, ".moeq"))) {
        /* by magic, or by name so that a .moeq with a broken magic is reported as such (F-1) */
        kind = "moeq";
        moeq_pack *pk = NULL;
        st = moeq_pack_open(path, &pk, &err);
        if (st == MOEQ_OK) st = moeq_pack_verify(pk, &err);
        if (st == MOEQ_OK) {
            count = (int64_t)moeq_pack_ntensors(pk);
            bytes = moeq_pack_file_size(pk);
        }
        moeq_pack_close(pk);
        if (st == MOEQ_OK) {
            moeq_model *m = NULL;
            st = moeq_model_open(path, &m, &err);
            moeq_model_close(m);
        }
    } else {
        kind = "safetensors";
        moeq_checkpoint *ck = NULL;
        st = moeq_ckpt_open(path, &ck, &err);
        if (st == MOEQ_OK) st = scan_checkpoint(ck, tc.progress, &count, &bytes, &err);
        moeq_ckpt_close(ck);
    }
    if (st != MOEQ_OK) return tool_report("verify", &err);
    FILE *h = tool_human(&tc);
    if (h) fprintf(h, "%s: ok (%s, %lld %s, %llu bytes)\n", path, kind, (long long)count,
                   tokens ? "tokens" : "tensors", (unsigned long long)bytes);
    if (!tc.json) return 0;
    json_t *o = json_object();
    json_object_set_new(o, "path", json_string(path));
    json_object_set_new(o, "kind", json_string(kind));
    json_object_set_new(o, tokens ? "tokens" : "tensors", json_integer(count));
    json_object_set_new(o, "bytes", json_integer((json_int_t)bytes));
    json_object_set_new(o, "nonfinite", json_integer(0));
    json_object_set_new(o, "ok", json_true());
    return tool_print_json(o);
}
