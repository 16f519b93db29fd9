/* moeq tokenize MODEL --text F [-o ids.safetensors] and moeq detokenize MODEL --tokens F:
 * the model's tokenizer.json, with the ids of Hugging Face tokenizers. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common.h"
#include "moeq_core.h"
#include "moeq_safetensors.h"
#include "moeq_tokenizer.h"

static const char *TOKENIZE_HELP =
    "usage: moeq tokenize MODEL --text FILE [-o IDS.safetensors] [--no-special] [--json] [-q]\n\n"
    "Tokenizes FILE (UTF-8) with MODEL's tokenizer.json (MODEL: a model directory or a\n"
    "tokenizer.json), giving the ids of Hugging Face tokenizers' encode(text). Without -o the\n"
    "ids are printed one per line on stdout.\n\n"
    "  --text FILE     the text (invalid UTF-8 is refused with its byte offset, exit 2)\n"
    "  -o FILE         write the ids as a safetensors file with one 1-D I32 tensor \"tokens\"\n"
    "                  (what --tokens reads)\n"
    "  --no-special    add_special_tokens=False: no BOS/EOS from the post-processor\n"
    "  --json          result as JSON on stdout: tokens, bytes, mb_per_s, vocab, output\n"
    "                  (and ids when there is no -o)\n"
    "  -q              no human-readable text\n"
    "  --threads N     accepted for uniformity; tokenizing is single-threaded\n";

static const char *DETOKENIZE_HELP =
    "usage: moeq detokenize MODEL --tokens FILE [--skip-special] [--json] [-q]\n\n"
    "Turns token ids back into text with MODEL's tokenizer.json decoder, as Hugging Face\n"
    "tokenizers' decode(ids); the text goes to stdout.\n\n"
    "  --tokens FILE   token ids: a safetensors file with one 1-D I32/I64/U32 tensor, or raw\n"
    "                  little-endian uint32 (.bin, .u32)\n"
    "  --skip-special  skip_special_tokens=True\n"
    "  --json          {\"text\", \"tokens\", \"bytes\"} on stdout instead of the bare text\n"
    "  -q              no human-readable text\n"
    "  --threads N     accepted for uniformity\n";

/* Same file, by device and inode; used to refuse -o pointing at an input. */
static int same_file(const char *a, const char *b)
{
    char ra[PATH_MAX], rb[PATH_MAX];
    return realpath(a, ra) && realpath(b, rb) && !strcmp(ra, rb);
}

int cmd_tokenize(int argc, char **argv)
{
    tool_common tc = {0};
    const char *model = NULL, *text = NULL, *out = NULL;
    int special = 1;
    for (int i = 1; i < argc; i++) {
        int r = tool_common_option("tokenize", argc, argv, &i, &tc);
        if (r < 0) return 1;
        if (r) continue;
        const char *a = argv[i];
        if (!strcmp(a, "--text")) {
            if (!(text = tool_value("tokenize", argc, argv, &i))) return 1;
        } else if (!strcmp(a, "-o")) {
            if (!(out = tool_value("tokenize", argc, argv, &i))) return 1;
        } else if (!strcmp(a, "--no-special")) {
            special = 0;
        } else if (a[0] == '-' && a[1]) {
            return tool_usage_error("tokenize", "unknown option %s", a);
        } else if (model) {
            return tool_usage_error("tokenize", "one MODEL only (got '%s' and '%s')", model, a);
        } else {
            model = a;
        }
    }
    if (tc.help) { fputs(TOKENIZE_HELP, stdout); return 0; }
    if (!model) return tool_usage_error("tokenize", "missing MODEL");
    if (!text) return tool_usage_error("tokenize", "give --text FILE");
    int orc = tool_check_output("tokenize", out);
    if (orc) return orc;
    if (out && (same_file(out, text) || same_file(out, model)))
        return tool_usage_error("tokenize", "-o %s would overwrite an input", out);

    moeq_error err = {0};
    moeq_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    int64_t n = 0;
    int rc = 0;
    double t0 = moeq_now();
    if (moeq_tokenizer_load(model, &tok, &err) != MOEQ_OK) return tool_report("tokenize", &err);
    double t1 = moeq_now();
    if (moeq_tokenize_file(tok, text, special, &ids, &n, &err) != MOEQ_OK) {
        rc = tool_report("tokenize", &err);
        goto done;
    }
    double secs = moeq_now() - t1;
    FILE *tf = fopen(text, "rb");
    long bytes = 0;
    if (tf) { fseek(tf, 0, SEEK_END); bytes = ftell(tf); fclose(tf); }
    double mbs = secs > 0 ? bytes / secs / 1e6 : 0;
    if (out) {
        moeq_st_out t = {.name = "tokens", .dtype = MOEQ_DT_I32, .ndim = 1, .shape = {n}, .data = ids};
        if (moeq_st_write(out, &t, 1, &err) != MOEQ_OK) { rc = tool_report("tokenize", &err); goto done; }
    } else if (!tc.json) {
        for (int64_t i = 0; i < n; i++) printf("%d\n", ids[i]);
        if (fflush(stdout)) { fprintf(stderr, "moeq tokenize: write error on stdout\n"); rc = 4; goto done; }
    }
    if (!tc.quiet)
        fprintf(stderr, "%s: %lld tokens from %ld bytes (%.2f bytes/token), %.1f MB/s, tokenizer loaded in %.3f s%s%s\n",
                text, (long long)n, bytes, n ? (double)bytes / (double)n : 0.0, mbs, t1 - t0, out ? " -> " : "", out ? out : "");
    if (tc.json) {
        json_t *o = json_object();
        json_object_set_new(o, "tokens", json_integer(n));
        json_object_set_new(o, "bytes", json_integer(bytes));
        json_object_set_new(o, "mb_per_s", json_real(mbs));
        json_object_set_new(o, "vocab", json_integer(moeq_tokenizer_vocab_size(tok)));
        json_object_set_new(o, "output", out ? json_string(out) : json_null());
        if (!out) {
            json_t *a = json_array();
            for (int64_t i = 0; i < n; i++) json_array_append_new(a, json_integer(ids[i]));
            json_object_set_new(o, "ids", a);
        }
        rc = tool_print_json(o);
    }
done:
    free(ids);
    moeq_tokenizer_free(tok);
    return rc;
}

int cmd_detokenize(int argc, char **argv)
{
    tool_common tc = {0};
    const char *model = NULL, *tokens = NULL;
    int skip = 0;
    for (int i = 1; i < argc; i++) {
        int r = tool_common_option("detokenize", argc, argv, &i, &tc);
        if (r < 0) return 1;
        if (r) continue;
        const char *a = argv[i];
        if (!strcmp(a, "--tokens")) {
            if (!(tokens = tool_value("detokenize", argc, argv, &i))) return 1;
        } else if (!strcmp(a, "--skip-special")) {
            skip = 1;
        } else if (a[0] == '-' && a[1]) {
            return tool_usage_error("detokenize", "unknown option %s", a);
        } else if (model) {
            return tool_usage_error("detokenize", "one MODEL only (got '%s' and '%s')", model, a);
        } else {
            model = a;
        }
    }
    if (tc.help) { fputs(DETOKENIZE_HELP, stdout); return 0; }
    if (!model) return tool_usage_error("detokenize", "missing MODEL");
    if (!tokens) return tool_usage_error("detokenize", "give --tokens FILE");
    moeq_error err = {0};
    moeq_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    int64_t n = 0;
    char *s = NULL;
    size_t len = 0;
    int rc = 0;
    if (moeq_tokenizer_load(model, &tok, &err) != MOEQ_OK ||
        moeq_tokens_load(tokens, moeq_tokenizer_vocab_size(tok), &ids, &n, &err) != MOEQ_OK ||
        moeq_detokenize(tok, ids, n, skip, &s, &len, &err) != MOEQ_OK) {
        rc = tool_report("detokenize", &err);
        goto done;
    }
    if (tc.json) {
        json_t *o = json_object();
        json_object_set_new(o, "text", json_stringn(s, len));
        json_object_set_new(o, "tokens", json_integer(n));
        json_object_set_new(o, "bytes", json_integer((json_int_t)len));
        rc = tool_print_json(o);
    } else if (fwrite(s, 1, len, stdout) != len || fflush(stdout)) {
        fprintf(stderr, "moeq detokenize: write error on stdout\n");
        rc = 4;
    }
    if (!tc.quiet && !rc) fprintf(stderr, "%s: %lld tokens -> %zu bytes\n", tokens, (long long)n, len);
done:
    free(ids);
    free(s);
    moeq_tokenizer_free(tok);
    return rc;
}
