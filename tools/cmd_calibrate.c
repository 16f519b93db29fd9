/* moeq calibrate MODEL --tokens F -o F.h5: per-expert Hessians, routing and micro-expert
 * statistics, layer by layer. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common.h"
#include "moeq_kernels.h"
#include "moeq_calib.h"
#include "moeq_core.h"
#include "moeq_dist.h"
#include "moeq_safetensors.h"
#include "moeq_tokenizer.h"

static const char *CALIB_HELP =
    "usage: moeq calibrate MODEL (--tokens FILE | --text FILE) -o OUT.h5 [--ctx N]\n"
    "                      [--max-tokens N] [--diag] [--scope experts|all] [--min-tokens N]\n"
    "                      [--compress L] [--val-every K] [--resume DIR] [--threads N] [--json] [-q]\n"
    "       mpirun -np N moeq calibrate ...   (windows split over ranks; docs/scale.md)\n\n"
    "Runs MODEL layer by layer over non-overlapping windows of N tokens (a last partial window\n"
    "is dropped) and writes, per MoE layer and routed expert, in float64: tokens routed and\n"
    "their routing-weight sum, router selection frequency and logit mean/variance, the input\n"
    "Hessians H_in = sum x x^T (input of gate and up) and H_down = sum h h^T (input of down),\n"
    "their diagonals, and CAMERA's per-channel sum and max of (r*h_c)^2; the same for the shared\n"
    "expert. Layout: docs/STATS.md. Peak memory: docs/calibrate.md. The Hessians are float64\n"
    "sums of float32 sums over chunks of 256 rows: on CPUs with AMX by the tiles (each product\n"
    "to 3*2^-16; hessian_sums \"bf16x2-f32x256\" in the file and --json), elsewhere by\n"
    "float32 multiply-adds with AVX-512 or AVX2 (each chunk to 2^-16; \"f32x256\"); without\n"
    "AVX2, or with MOEQ_KERNEL=ref, exact float64 sums (\"f64\"). The forward pass runs the\n"
    "kernel set cpuid picks (kernels in --json): on AVX512-BF16 CPUs without AMX its matmuls\n"
    "take bf16 activations, as llama.cpp's do; MOEQ_KERNEL=float keeps them float32.\n\n"
    "  --tokens FILE     token ids: a safetensors file with one 1-D I32/I64/U32 tensor, or raw\n"
    "                    little-endian uint32 (.bin, .u32)\n"
    "  --text FILE       UTF-8 text tokenized with MODEL's tokenizer.json (the ids of Hugging\n"
    "                    Face tokenizers' encode(text), special tokens included)\n"
    "  -o, --output F    the HDF5 file to write (through a temporary name in its directory)\n"
    "  --ctx N           window length (default 512)\n"
    "  --max-tokens N    use at most the first N tokens\n"
    "  --diag            keep only diagonals (llama.cpp imatrix style), no full Hessians\n"
    "  --scope S         experts (default): routed and shared experts; all: also the inputs of\n"
    "                    q/k/v and o, and of dense MLP layers\n"
    "  --min-tokens N    experts with fewer tokens are reported undersampled (default 2*hidden)\n"
    "  --val-every K     validation split: every K-th window's expert rows are also summed into\n"
    "                    val_hessian_in/down (quantize chooses GPTQ damping on them and reports\n"
    "                    held-out Hessian error); default 8, 0: none (and none with --diag)\n"
    "  --compress L      deflate level 1..9 (with byte shuffle) for the Hessians; default 0:\n"
    "                    stored raw (they shrink only ~10%, at ~20-30% more run time)\n"
    "  --resume DIR      checkpoint after each layer into DIR (created if missing); started\n"
    "                    again with the same inputs, the run continues after the last finished\n"
    "                    layer and writes the same file; DIR's files are removed at the end\n"
    "  --threads N       worker threads (default: all cores; BLAS runs single-threaded inside)\n"
    "  --json            result as JSON on stdout: tokens, ctx, windows, min_tokens, val_every,\n"
    "                    val_windows, hessian_sums, kernels,\n"
    "                    tokens_per_s, bytes, layers [{layer, expert_tokens, dead_experts,\n"
    "                    undersampled}]\n"
    "  -q                no human-readable text or progress\n";

/* MOEQ_TEST_KILL_AFTER_LAYER=L (tests only, docs/scale.md): the process kills itself with
 * SIGKILL once layer L's statistics are written, as a stop without warning would. */
static void progress(void *user, int64_t done, int64_t layers, double tps)
{
    const char *kill_at = getenv("MOEQ_TEST_KILL_AFTER_LAYER");
    if (kill_at && done - 1 == atoll(kill_at)) raise(SIGKILL);
    if (!user) return;
    fprintf(stderr, "\r[layer %lld/%lld] %.0f tokens/s   ", (long long)done, (long long)layers, tps);
    if (done == layers) fputc('\n', stderr);
    fflush(stderr);
}

static json_t *index_list(const moeq_calib_coverage *cv, int flag)
{
    json_t *a = json_array();
    for (int64_t e = 0; e < cv->n_experts; e++)
        if (cv->flag[e] == flag) json_array_append_new(a, json_integer(e));
    return a;
}

static void print_list(FILE *h, const moeq_calib_coverage *cv, int flag)
{
    int first = 1;
    for (int64_t e = 0; e < cv->n_experts; e++)
        if (cv->flag[e] == flag) {
            fprintf(h, "%s%lld", first ? "" : ",", (long long)e);
            first = 0;
        }
}

int cmd_calibrate(int argc, char **argv)
{
    tool_common tc = {0};
    const char *path = NULL, *tokens_path = NULL, *text_path = NULL, *out = NULL, *resume = NULL;
    int64_t ctx = 512, max_tokens = 0, min_tokens = 0, val_every = 8;
    int diag = 0, scope_all = 0;
    int64_t compress = 0;
    for (int i = 1; i < argc; i++) {
        int r = tool_common_option("calibrate", argc, argv, &i, &tc);
        if (r < 0) return 1;
        if (r) continue;
        const char *a = argv[i], *v;
        if (!strcmp(a, "--tokens")) {
            if (!(tokens_path = tool_value("calibrate", argc, argv, &i))) return 1;
        } else if (!strcmp(a, "--text")) {
            if (!(text_path = tool_value("calibrate", argc, argv, &i))) return 1;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!(out = tool_value("calibrate", argc, argv, &i))) return 1;
        } else if (!strcmp(a, "--ctx")) {
            if (!(v = tool_value("calibrate", argc, argv, &i)) || tool_parse_int("calibrate", a, v, 1, &ctx)) return 1;
        } else if (!strcmp(a, "--max-tokens")) {
            if (!(v = tool_value("calibrate", argc, argv, &i)) || tool_parse_int("calibrate", a, v, 1, &max_tokens))
                return 1;
        } else if (!strcmp(a, "--min-tokens")) {
            if (!(v = tool_value("calibrate", argc, argv, &i)) || tool_parse_int("calibrate", a, v, 1, &min_tokens))
                return 1;
        } else if (!strcmp(a, "--compress")) {
            if (!(v = tool_value("calibrate", argc, argv, &i)) || tool_parse_int("calibrate", a, v, 0, &compress))
                return 1;
            if (compress > 9) return tool_usage_error("calibrate", "--compress wants a deflate level 0..9");
        } else if (!strcmp(a, "--val-every")) {
            if (!(v = tool_value("calibrate", argc, argv, &i)) || tool_parse_int("calibrate", a, v, 0, &val_every))
                return 1;
            if (val_every == 1) return tool_usage_error("calibrate", "--val-every 1 leaves no calibration windows");
        } else if (!strcmp(a, "--resume")) {
            if (!(resume = tool_value("calibrate", argc, argv, &i))) return 1;
        } else if (!strcmp(a, "--diag")) {
            diag = 1;
        } else if (!strcmp(a, "--scope")) {
            if (!(v = tool_value("calibrate", argc, argv, &i))) return 1;
            if (!strcmp(v, "all")) scope_all = 1;
            else if (!strcmp(v, "experts")) scope_all = 0;
            else return tool_usage_error("calibrate", "--scope wants experts or all, not '%s'", v);
        } else if (a[0] == '-' && a[1]) {
            return tool_usage_error("calibrate", "unknown option %s", a);
        } else if (path) {
            return tool_usage_error("calibrate", "one MODEL only (got '%s' and '%s')", path, a);
        } else {
            path = a;
        }
    }
    if (tc.help) { fputs(CALIB_HELP, stdout); return 0; }
    if (!path) return tool_usage_error("calibrate", "missing MODEL");
    if (!tokens_path && !text_path) return tool_usage_error("calibrate", "give --tokens FILE or --text FILE");
    if (tokens_path && text_path) return tool_usage_error("calibrate", "give --tokens or --text, not both");
    if (!out) return tool_usage_error("calibrate", "give -o OUT.h5");
    if (ctx > (1 << 20)) return tool_usage_error("calibrate", "--ctx %lld is above 1048576", (long long)ctx);
    int root = moeq_dist_rank() == 0;
    tc.progress = !tc.quiet && isatty(2) && root;
    if (!root) tc.quiet = 1, tc.json = 0;
    moeq_threads_init(tc.threads);

    moeq_error err = {0};
    moeq_model *m = NULL;
    int32_t *ids = NULL;
    int64_t n = 0;
    int rc = 0;
    moeq_calib_result res = {0};
    /* check the destination before the (long) run (rank 0 writes it) */
    moeq_status st = root ? moeq_calib_h5_check_path(out, &err) : MOEQ_OK;
    if (st == MOEQ_OK) st = moeq_model_open(path, &m, &err);
    if (st == MOEQ_OK && tokens_path) st = moeq_tokens_load(tokens_path, moeq_model_config(m)->vocab, &ids, &n, &err);
    if (st == MOEQ_OK && text_path) st = moeq_model_tokenize_file(m, text_path, &ids, &n, &err);
    if (moeq_dist_agree(st, &err) != MOEQ_OK) {
        rc = tool_report("calibrate", &err);
        goto done;
    }
    moeq_calib_opts opts = {.ctx = ctx, .max_tokens = max_tokens, .min_tokens = min_tokens, .diag = diag,
                            .scope_all = scope_all, .compress = (int)compress, .val_every = val_every, .threads = moeq_threads(), .tokens_source = tokens_path ? tokens_path : text_path,
                            .resume_dir = resume, .user = tc.progress ? &tc : NULL,
                            .progress = tc.progress || getenv("MOEQ_TEST_KILL_AFTER_LAYER") ? progress : NULL};
    if (moeq_calibrate(m, ids, n, out, &opts, &res, &err) != MOEQ_OK) {
        rc = tool_report("calibrate", &err);
        goto done;
    }
    /* the coverage report goes to stderr even with --json (downstream tools read the flags) */
    if (!tc.quiet) {
        FILE *h = stderr;
        fprintf(h, "calibrated %s: %lld tokens in %lld windows of %lld, %.1f tokens/s (%d threads)\n", path,
                (long long)res.tokens, (long long)res.windows, (long long)res.ctx, res.tokens_per_s,
                moeq_threads());
        for (int64_t i = 0; i < res.n_moe_layers; i++) {
            const moeq_calib_coverage *cv = &res.moe_layers[i];
            int64_t mn = -1, mx = 0;
            for (int64_t e = 0; e < cv->n_experts; e++) {
                if (mn < 0 || cv->expert_tokens[e] < mn) mn = cv->expert_tokens[e];
                if (cv->expert_tokens[e] > mx) mx = cv->expert_tokens[e];
            }
            fprintf(h, "layer %3lld: tokens per expert %lld..%lld", (long long)cv->layer, (long long)mn,
                    (long long)mx);
            if (cv->dead) {
                fprintf(h, "; WARNING dead experts (0 tokens): ");
                print_list(h, cv, MOEQ_CALIB_DEAD);
            }
            if (cv->undersampled) {
                fprintf(h, "; WARNING undersampled (< %lld tokens): ", (long long)res.min_tokens);
                print_list(h, cv, MOEQ_CALIB_UNDERSAMPLED);
            }
            fputc('\n', h);
        }
        if (res.val_windows)
            fprintf(h, "validation split: %lld of %lld windows (every %lld-th), summed apart as well\n",
                    (long long)res.val_windows, (long long)res.windows, (long long)res.val_every);
        if (res.resumed_layers)
            fprintf(h, "resumed: %lld layers read back from %s\n", (long long)res.resumed_layers, resume);
        if (!diag)
            fprintf(h, "Hessians summed as %s (docs/calibrate.md, \"How the Hessians are summed\")\n",
                    moeq_calib_hessian_sums(diag));
        fprintf(h, "wrote %s (%.1f MiB)\n", out, (double)res.file_bytes / 1048576.0);
    }
    if (tc.json) {
        json_t *o = json_object();
        json_object_set_new(o, "tokens", json_integer(res.tokens));
        json_object_set_new(o, "ctx", json_integer(res.ctx));
        json_object_set_new(o, "windows", json_integer(res.windows));
        json_object_set_new(o, "min_tokens", json_integer(res.min_tokens));
        json_object_set_new(o, "val_every", json_integer(res.val_every));
        json_object_set_new(o, "val_windows", json_integer(res.val_windows));
        json_object_set_new(o, "tokens_per_s", json_real(res.tokens_per_s));
        json_object_set_new(o, "threads", json_integer(moeq_threads()));
        json_object_set_new(o, "kernels", json_string(moeq_kernels()->name));
        json_object_set_new(o, "diag", json_boolean(diag));
        json_object_set_new(o, "scope", json_string(scope_all ? "all" : "experts"));
        const char *hs = moeq_calib_hessian_sums(diag);
        json_object_set_new(o, "hessian_sums", hs ? json_string(hs) : json_null());
        json_object_set_new(o, "output", json_string(out));
        json_object_set_new(o, "bytes", json_integer((json_int_t)res.file_bytes));
        json_object_set_new(o, "ranks", json_integer(moeq_dist_size()));
        json_object_set_new(o, "resumed_layers", json_integer(res.resumed_layers));
        json_object_set_new(o, "comm_bytes", json_integer((json_int_t)res.comm_bytes));
        json_t *layers = json_array();
        for (int64_t i = 0; i < res.n_moe_layers; i++) {
            const moeq_calib_coverage *cv = &res.moe_layers[i];
            json_t *l = json_object(), *et = json_array();
            for (int64_t e = 0; e < cv->n_experts; e++) json_array_append_new(et, json_integer(cv->expert_tokens[e]));
            json_object_set_new(l, "layer", json_integer(cv->layer));
            json_object_set_new(l, "expert_tokens", et);
            json_object_set_new(l, "dead_experts", index_list(cv, MOEQ_CALIB_DEAD));
            json_object_set_new(l, "undersampled", index_list(cv, MOEQ_CALIB_UNDERSAMPLED));
            json_array_append_new(layers, l);
        }
        json_object_set_new(o, "layers", layers);
        rc = tool_print_json(o);
    }
done:
    moeq_calib_result_free(&res);
    free(ids);
    moeq_model_close(m);
    return rc;
}
