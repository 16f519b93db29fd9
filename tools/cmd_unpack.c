/* moeq unpack F.moeq -o DIR: a dequantized Hugging Face directory that transformers loads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common.h"
#include "moeq_core.h"
#include "moeq_pack.h"

static const char *UNPACK_HELP =
    "usage: moeq unpack F.moeq -o DIR [--max-shard-size SIZE] [--json] [-q] [--threads N]\n\n"
    "Writes DIR (absent, or an empty directory): config.json and the tokenizer files embedded in\n"
    "F.moeq, and every tensor of the original checkpoint under its original name and shape (per-\n"
    "expert tensors, or transformers v5 fused gate_up_proj / down_proj when the source was fused),\n"
    "quantized ones dequantized and rounded to bf16, the others copied unchanged. The directory is\n"
    "built under a temporary name next to DIR and renamed when complete (docs/unpack.md).\n"
    "  -o DIR               the output directory\n"
    "  --max-shard-size S   bytes per shard, with an optional KB, MB, GB suffix (powers of 1000,\n"
    "                       as the hub's writer); default 5GB; more than one shard adds\n"
    "                       model.safetensors.index.json\n"
    "JSON: output, tensors, dequantized, shards, files, bytes, seconds.\n";

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || v <= 0) return -1;
    double mul = 1;
    if (!strcmp(end, "KB")) mul = 1e3;
    else if (!strcmp(end, "MB")) mul = 1e6;
    else if (!strcmp(end, "GB")) mul = 1e9;
    else if (*end) return -1;
    if (v * mul > 1.8e19 || v * mul < 1) return -1;
    *out = (uint64_t)(v * mul);
    return 0;
}

int cmd_unpack(int argc, char **argv)
{
    tool_common tc = {0};
    const char *in = NULL, *out = NULL;
    uint64_t shard = 5000000000ull;
    for (int i = 1; i < argc; i++) {
        int r = tool_common_option("unpack", argc, argv, &i, &tc);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "-o")) {
            if (!(out = tool_value("unpack", argc, argv, &i))) return 1;
        } else if (!strcmp(argv[i], "--max-shard-size")) {
            const char *v = tool_value("unpack", argc, argv, &i);
            if (!v) return 1;
            if (parse_size(v, &shard)) return tool_usage_error("unpack", "--max-shard-size wants bytes, e.g. 5GB, 200MB (got '%s')", v);
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return tool_usage_error("unpack", "unknown option %s", argv[i]);
        } else {
            if (in) return tool_usage_error("unpack", "one F.moeq only (got '%s' and '%s')", in, argv[i]);
            in = argv[i];
        }
    }
    if (tc.help) { fputs(UNPACK_HELP, stdout); return 0; }
    if (!in) return tool_usage_error("unpack", "missing F.moeq");
    if (!out) return tool_usage_error("unpack", "missing -o DIR");
    int orc = tool_check_output("unpack", out);
    if (orc) return orc;
    moeq_threads_init(tc.threads);
    moeq_error err = {0};
    if (!moeq_pack_is_packed(in)) {
        moeq_fail(&err, MOEQ_ERR_FORMAT, "%s: not a .moeq file (F-1)", in);
        return tool_report("unpack", &err);
    }
    double t0 = moeq_now();
    moeq_pack *p = NULL;
    moeq_unpack_result res;
    if (moeq_pack_open(in, &p, &err) != MOEQ_OK) return tool_report("unpack", &err);
    if (moeq_pack_unpack(p, out, shard, &res, &err) != MOEQ_OK) {
        moeq_pack_close(p);
        return tool_report("unpack", &err);
    }
    moeq_pack_close(p);
    double secs = moeq_now() - t0;
    FILE *h = tool_human(&tc);
    if (h)
        fprintf(h, "%s -> %s: %zu tensors (%zu dequantized to bf16), %.1f MiB in %zu shard(s), %zu files, %.2f s\n",
                in, out, res.tensors, res.dequantized, (double)res.bytes / 1048576.0, res.shards, res.files, secs);
    int rc = 0;
    if (tc.json) {
        json_t *o = json_object();
        json_object_set_new(o, "output", json_string(out));
        json_object_set_new(o, "tensors", json_integer((json_int_t)res.tensors));
        json_object_set_new(o, "dequantized", json_integer((json_int_t)res.dequantized));
        json_object_set_new(o, "shards", json_integer((json_int_t)res.shards));
        json_object_set_new(o, "files", json_integer((json_int_t)res.files));
        json_object_set_new(o, "bytes", json_integer((json_int_t)res.bytes));
        json_object_set_new(o, "seconds", json_real(secs));
        rc = tool_print_json(o);
    }
    return rc;
}
