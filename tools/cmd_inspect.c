/* moeq inspect MODEL: reads config.json and the safetensors headers (no tensor data). */
#include <stdio.h>
#include <string.h>
#include "common.h"
#include "moeq_core.h"
#include "moeq_model.h"
#include "moeq_pack.h"
#include "moeq_gguf.h"

static const char *INSPECT_HELP =
    "usage: moeq inspect MODEL [--json] [-q] [--threads N]\n\n"
    "Reads MODEL (a Hugging Face directory: config.json + safetensors, single or sharded, or a\n"
    "packed .moeq file) and prints its family, layer and expert counts, parameter counts by kind,\n"
    "dtype and size. For a .moeq file dtype is the codec of its quantized tensors (\"q4g64a\") or\n"
    "\"mixed\", codecs counts the tensors per codec, bytes is the file size.\n"
    "Only headers are read; tensor data is not touched.\n\n"
    "  --json       result as JSON on stdout (keys: model_type, layers, experts, top_k, hidden,\n"
    "               params{total,attention,router,shared_experts,routed_experts,embeddings},\n"
    "               dtype, bytes, shards, codecs (.moeq), and more)\n"
    "  -q           no human-readable text\n"
    "  --threads N  accepted for uniformity; inspect is single-threaded\n";

/* A GGUF's dtype: the ggml type of its 2-D and 3-D tensors when they share one, else "mixed"
 * (norms, biases and routers are F32 in every GGUF); counts per type go to *types. */
static const char *gguf_dtype(const moeq_gguf *g, json_t *types)
{
    const char *d = NULL;
    int mixed = 0;
    for (size_t i = 0; i < moeq_gguf_ntensors(g); i++) {
        const moeq_gguf_tensor *t = moeq_gguf_tensor_at(g, i);
        const char *n = moeq_gguf_type_get(t->type)->name;
        json_t *c = json_object_get(types, n);
        json_object_set_new(types, n, json_integer(c ? json_integer_value(c) + 1 : 1));
        if (t->n_dims < 2 || strstr(t->name, "ffn_gate_inp")) continue;
        if (!d) d = n;
        else if (strcmp(d, n)) mixed = 1;
    }
    return mixed ? "mixed" : d ? d : "none";
}

/* The dtype of the checkpoint: the one every tensor shares, else "mixed". */
static const char *checkpoint_dtype(const moeq_checkpoint *ck)
{
    const char *dt = NULL;
    for (size_t i = 0; i < moeq_ckpt_count(ck); i++) {
        const char *d = moeq_ckpt_tensor(ck, i)->dtype_name;
        if (!dt) dt = d;
        else if (strcmp(dt, d)) return "mixed";
    }
    return dt ? dt : "none";
}

/* A .moeq file: the codec every quantized tensor shares ("q4g64a"), "mixed" when they differ,
 * else the raw dtype as for a checkpoint; counts per codec go to *codecs. */
static const char *pack_dtype(const moeq_pack *p, json_t *codecs, char *buf, size_t cap)
{
    const char *res = NULL;
    char raw[32] = "", cs[32];
    int nint = 0, rawmixed = 0;
    for (size_t i = 0; i < moeq_pack_ntensors(p); i++) {
        const moeq_pack_tensor *t = moeq_pack_tensor_at(p, i);
        moeq_codec_format(&t->codec, cs, sizeof cs);
        json_t *c = json_object_get(codecs, cs);
        json_object_set_new(codecs, cs, json_integer(c ? json_integer_value(c) + 1 : 1));
        if (t->codec.type != MOEQ_CODEC_RAW) {   /* int or ggml */
            if (!nint++) snprintf(buf, cap, "%s", cs);
            else if (strcmp(buf, cs)) res = "mixed";
        } else if (!raw[0]) {
            snprintf(raw, sizeof raw, "%s", moeq_dtype_name(t->codec.dtype));
        } else if (strcmp(raw, moeq_dtype_name(t->codec.dtype))) {
            rawmixed = 1;
        }
    }
    if (res) return res;
    if (nint) return buf;
    if (rawmixed) return "mixed";
    snprintf(buf, cap, "%s", raw[0] ? raw : "none");
    return buf;
}

/* A block-scaled FP8 source (quantization_config fp8): how many weights are F8_E4M3 and the
 * dtype of their scale tensors ("F32", "BF16" or "mixed"); 0 weights when none. */
static int64_t fp8_weights(const moeq_checkpoint *ck, char *scale_dt, size_t cap)
{
    int64_t n = 0;
    snprintf(scale_dt, cap, "none");
    for (size_t i = 0; ck && i < moeq_ckpt_count(ck); i++) {
        const moeq_tensor *t = moeq_ckpt_tensor(ck, i);
        size_t len = strlen(t->name);
        if (t->dtype == MOEQ_DT_F8_E4M3) n++;
        if (len > 10 && !strcmp(t->name + len - 10, "_scale_inv")) {
            if (!strcmp(scale_dt, "none")) snprintf(scale_dt, cap, "%s", t->dtype_name);
            else if (strcmp(scale_dt, t->dtype_name)) snprintf(scale_dt, cap, "mixed");
        }
    }
    return n;
}

/* An MXFP4 source (quantization_config mxfp4, gpt_oss experts): its U8 *_blocks tensors. */
static int64_t mxfp4_tensors(const moeq_checkpoint *ck)
{
    int64_t n = 0;
    for (size_t i = 0; ck && i < moeq_ckpt_count(ck); i++) {
        const moeq_tensor *t = moeq_ckpt_tensor(ck, i);
        size_t len = strlen(t->name);
        n += t->dtype == MOEQ_DT_U8 && len > 7 && !strcmp(t->name + len - 7, "_blocks");
    }
    return n;
}

int cmd_inspect(int argc, char **argv)
{
    tool_common tc = {0};
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        int r = tool_common_option("inspect", argc, argv, &i, &tc);
        if (r < 0) return 1;
        if (r) continue;
        if (argv[i][0] == '-' && argv[i][1]) return tool_usage_error("inspect", "unknown option %s", argv[i]);
        if (path) return tool_usage_error("inspect", "one MODEL only (got '%s' and '%s')", path, argv[i]);
        path = argv[i];
    }
    if (tc.help) { fputs(INSPECT_HELP, stdout); return 0; }
    if (!path) return tool_usage_error("inspect", "missing MODEL");

    moeq_error err = {0};
    moeq_model *m = NULL;
    if (moeq_model_open(path, &m, &err) != MOEQ_OK) return tool_report("inspect", &err);
    const moeq_config *c = moeq_model_config(m);
    const moeq_checkpoint *ck = moeq_model_checkpoint(m);
    moeq_param_counts pc;
    moeq_model_param_counts(m, &pc);
    int64_t moe_layers = 0;
    for (int64_t l = 0; l < c->layers; l++) moe_layers += c->layer_is_moe[l] != 0;
    const moeq_pack *pk = moeq_model_pack(m);
    json_t *codecs = json_object();
    char dtbuf[32];
    const moeq_gguf *gg = moeq_model_gguf(m);
    json_t *gtypes = gg ? json_object() : NULL;
    const char *dtype = gg ? gguf_dtype(gg, gtypes) : pk ? pack_dtype(pk, codecs, dtbuf, sizeof dtbuf) : checkpoint_dtype(ck);
    uint64_t bytes = gg ? moeq_gguf_size(gg) : pk ? moeq_pack_file_size(pk) : moeq_ckpt_bytes(ck);
    size_t shards = gg || pk ? 1 : moeq_ckpt_shards(ck);
    const char *layout = moeq_model_fused_experts(m) ? "fused" : "per-expert";
    char scale_dt[16];
    int64_t n_fp8 = fp8_weights(ck, scale_dt, sizeof scale_dt);

    FILE *h = tool_human(&tc);
    if (h) {
        fprintf(h, "model        %s\n", path);
        fprintf(h, "model_type   %s (%s experts)\n", c->model_type, layout);
        fprintf(h, "layers       %lld (%lld MoE)\n", (long long)c->layers, (long long)moe_layers);
        fprintf(h, "experts      %lld routed, top-%lld%s%s\n", (long long)c->n_experts, (long long)c->top_k,
                c->norm_topk_prob ? ", renormalized" : "", c->shared_inter ? ", plus a shared expert" : "");
        fprintf(h, "hidden       %lld, heads %lld (kv %lld) x %lld, expert width %lld\n", (long long)c->hidden,
                (long long)c->heads, (long long)c->kv_heads, (long long)c->head_dim, (long long)c->moe_inter);
        fprintf(h, "vocab        %lld%s\n", (long long)c->vocab, c->tie_embeddings ? " (tied embeddings)" : "");
        fprintf(h, "params       %lld total\n", (long long)pc.total);
        fprintf(h, "  routed     %lld (%.1f%%)\n", (long long)pc.routed_experts, 100.0 * (double)pc.routed_experts / (double)pc.total);
        fprintf(h, "  shared     %lld\n", (long long)pc.shared_experts);
        fprintf(h, "  attention  %lld\n", (long long)pc.attention);
        fprintf(h, "  router     %lld\n", (long long)pc.router);
        fprintf(h, "  embeddings %lld\n", (long long)pc.embeddings);
        fprintf(h, "  other      %lld\n", (long long)pc.other);
        fprintf(h, "dtype        %s\n", dtype);
        if (c->fp8)
            fprintf(h, "source       fp8: %lld F8_E4M3 weights, %lldx%lld block scales (%s weight_scale_inv)\n",
                    (long long)n_fp8, (long long)c->fp8_block_rows, (long long)c->fp8_block_cols, scale_dt);
        if (c->mxfp4)
            fprintf(h, "source       mxfp4: %lld expert weights as U8 *_blocks (two e2m1 a byte, low nibble "
                    "first), one e8m0 *_scales byte per 32 inputs\n", (long long)mxfp4_tensors(ck));
        if (gg) {
            fprintf(h, "gguf         %s, version %u, %zu tensors:", moeq_gguf_label(gg), moeq_gguf_version(gg),
                    moeq_gguf_ntensors(gg));
            const char *k;
            json_t *v;
            json_object_foreach(gtypes, k, v) fprintf(h, " %s x%lld", k, (long long)json_integer_value(v));
            fprintf(h, "\nbytes        %llu in one GGUF file\n", (unsigned long long)bytes);
        } else if (pk) {
            fprintf(h, "codecs      ");
            const char *k;
            json_t *v;
            json_object_foreach(codecs, k, v) fprintf(h, " %s x%lld", k, (long long)json_integer_value(v));
            fprintf(h, "\nbytes        %llu in one .moeq file\n", (unsigned long long)bytes);
        } else {
            fprintf(h, "bytes        %llu in %zu shard(s)\n", (unsigned long long)bytes, shards);
        }
    }
    int rc = 0;
    if (tc.json) {
        json_t *o = json_object();
        json_object_set_new(o, "model_type", json_string(c->model_type));
        json_object_set_new(o, "layers", json_integer(c->layers));
        json_object_set_new(o, "moe_layers", json_integer(moe_layers));
        json_object_set_new(o, "experts", json_integer(c->n_experts));
        json_object_set_new(o, "top_k", json_integer(c->top_k));
        json_object_set_new(o, "norm_topk_prob", json_boolean(c->norm_topk_prob));
        json_object_set_new(o, "hidden", json_integer(c->hidden));
        json_object_set_new(o, "moe_intermediate", json_integer(c->moe_inter));
        json_object_set_new(o, "shared_intermediate", json_integer(c->shared_inter));
        json_object_set_new(o, "heads", json_integer(c->heads));
        json_object_set_new(o, "kv_heads", json_integer(c->kv_heads));
        json_object_set_new(o, "head_dim", json_integer(c->head_dim));
        json_object_set_new(o, "vocab", json_integer(c->vocab));
        json_object_set_new(o, "expert_layout", json_string(layout));
        json_t *p = json_object();
        json_object_set_new(p, "total", json_integer(pc.total));
        json_object_set_new(p, "attention", json_integer(pc.attention));
        json_object_set_new(p, "router", json_integer(pc.router));
        json_object_set_new(p, "shared_experts", json_integer(pc.shared_experts));
        json_object_set_new(p, "routed_experts", json_integer(pc.routed_experts));
        json_object_set_new(p, "embeddings", json_integer(pc.embeddings));
        json_object_set_new(p, "other", json_integer(pc.other));
        json_object_set_new(o, "params", p);
        json_object_set_new(o, "dtype", json_string(dtype));
        json_object_set_new(o, "bytes", json_integer((json_int_t)bytes));
        json_object_set_new(o, "shards", json_integer((json_int_t)shards));
        if (pk) json_object_set(o, "codecs", codecs);
        if (c->fp8) {
            json_t *q = json_object();
            json_object_set_new(q, "method", json_string("fp8"));
            json_object_set_new(q, "fmt", json_string("e4m3"));
            json_object_set_new(q, "weights", json_integer(n_fp8));
            json_object_set_new(q, "block", json_pack("[II]", (json_int_t)c->fp8_block_rows,
                                                      (json_int_t)c->fp8_block_cols));
            json_object_set_new(q, "scale_dtype", json_string(scale_dt));
            json_object_set_new(o, "source_quant", q);
        }
        if (c->mxfp4) {
            json_t *q = json_object();
            json_object_set_new(q, "method", json_string("mxfp4"));
            json_object_set_new(q, "fmt", json_string("e2m1"));
            json_object_set_new(q, "weights", json_integer(mxfp4_tensors(ck)));
            json_object_set_new(q, "block", json_pack("[II]", (json_int_t)1, (json_int_t)32));
            json_object_set_new(q, "scale_dtype", json_string("e8m0"));
            json_object_set_new(o, "source_quant", q);
        }
        if (gg) json_object_set(o, "gguf_types", gtypes);
        rc = tool_print_json(o);
    }
    json_decref(codecs);
    json_decref(gtypes);
    moeq_model_close(m);
    return rc;
}
