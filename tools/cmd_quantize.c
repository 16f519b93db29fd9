/* moeq quantize MODEL --bits B --method rtn ... -o OUT.moeq: writes a packed .moeq file. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common.h"
#include "moeq_core.h"
#include "moeq_model.h"
#include "moeq_quant.h"
#include "moeq_gptq.h"
#include "moeq_dist.h"
#include "moeq_plan.h"
#include "moeq_dist.h"
#include "moeq_resume.h"
#include "moeq_tokenizer.h"

static const char *QUANTIZE_HELP =
    "usage: moeq quantize MODEL (--bits B | --codec C | --plan plan.json) [--method rtn|gptq] [--calib F.h5]\n"
    "                     [--group G] [--sym|--asym] [--scope experts|all] [--damp D|auto] [--act-order]\n"
    "                     [--fallback shrink|rtn|layer-mean] [--shrink-prior N] [--grid-steps N]\n"
    "                     [--fit cal|all] [--block N] [--tensor-type REGEX=CODEC ...]\n"
    "                     [--zstd LEVEL] [--resume DIR] -o OUT.moeq [--json] [-q] [--threads N]\n\n"
    "Quantization of a Hugging Face MoE directory into a packed .moeq file (docs/FORMAT.md,\n"
    "docs/quantize.md):\n"
    "  --bits B          2, 3, 4 or 8 bits per code\n"
    "  --codec C         instead of --bits/--group/--sym: any codec spelling (q4g64a, q3g32s, ...)\n"
    "                    or a ggml block type: q4_k q3_k q2_k q5_k q6_k iq4_xs iq4_nl q4_0 q4_1 q5_0\n"
    "                    q5_1 q8_0 mxfp4 tq1_0 tq2_0, or ik_llama.cpp's iq2_k iq2_ks (rows as llama.cpp\n"
    "                    / ik lay them out; K, IQ4_XS, TQ types, iq2_k and iq2_ks need cols % 256 == 0)\n"
    "  --plan F          a plan from moeq plan: one codec per matrix (replaces --bits, --group,\n"
    "                    --sym and --scope; --tensor-type rules still apply first)\n"
    "  --codec t1d       QMoE's ternary rows, dictionary coded (~0.7 bit per weight; GPTQ with\n"
    "                    --calib at damping 0.1 unless --damp D): for cold experts\n"
    "  --method M        rtn (round to nearest, default) or gptq (needs --calib): second-order\n"
    "                    error feedback with each routed expert's Hessian\n"
    "  --calib F.h5      calibration file from moeq calibrate on this model\n"
    "  --calib F.h5      with --method rtn: grids weighted by diag H, and the Hessian error report\n"
    "  --damp D|auto     GPTQ damping, relative to mean(diag H); auto (default when the calib file\n"
    "                    has a validation split, else 0.01): per layer and input, the candidate of\n"
    "                    0.01 0.03 0.1 0.3 with the least validation-split Hessian error; a failed\n"
    "                    Cholesky retries with D x 10 up to 3 times, then falls back to RTN\n"
    "  --grid-steps N    group grids by a clipping search over N ratios weighted by diag H\n"
    "                    (default 8; 1: min/max), for RTN with --calib and as GPTQ's starting grid\n"
    "  --fit cal|all     GPTQ fits the calibration windows and holds the validation split out (cal,\n"
    "                    default), or fits every window (all)\n"
    "  --shrink-prior N  --fallback shrink: prior strength in tokens (default: the matrix's columns)\n"
    "  --act-order       GPTQ columns by decreasing Hessian diagonal, static groups\n"
    "  --fallback F      dead or undersampled experts: shrink (default: GPTQ with the expert's\n"
    "                    Hessian shrunk toward the layer's pooled one by its token count), rtn, or\n"
    "                    layer-mean (GPTQ with the layer's summed Hessian)\n"
    "  --block N         GPTQ lazy-update block (default 128)\n"
    "  --sequential      GPTQ layer by layer on calibration tokens (instead of --calib): layer\n"
    "                    L's Hessians come from the output of the already-quantized layers below\n"
    "  --tokens F / --text F  calibration tokens for --sequential (as moeq calibrate reads them)\n"
    "  --ctx N           --sequential window length (default 512); --max-tokens N: first N only\n"
    "  --min-tokens N    --sequential: experts with fewer tokens are undersampled (default 2*hidden)\n"

    "  --group G         32, 64 (default), 128, or 0 = one group per row\n"
    "  --sym / --asym    symmetric codes, or scale + zero per group (default)\n"
    "  --scope S         experts: the routed experts only (default); all: every linear matrix\n"
    "                    (attention, shared and dense MLPs too; never embeddings, LM head, router)\n"
    "  --tensor-type R=C a codec for the matrices whose packed name matches the PCRE2 regex R,\n"
    "                    first match wins; C is keep, q4g64a, q3g128s, q8ca (per channel), ...\n"
    "  --zstd LEVEL      per-tensor zstd frames (1..22), decompressed when the file is opened\n"
    "  --resume DIR      checkpoint each finished layer into DIR; started again with the same\n"
    "                    inputs and options, skip the finished layers (same output bytes)\n"
    "  -o OUT.moeq       output, written to a temporary name and renamed\n"
    "Under mpirun -np N the matrices are dealt to the ranks; rank 0 writes the same file.\n"
    "One line per tensor: name, shape, codec, MiB before -> after (stderr with --json).\n"
    "Fallbacks (GPTQ matrices quantized otherwise, with the reason) are listed on stderr.\n"
    "JSON: bytes, bits_per_weight, bits_per_weight_total, fallbacks, bytes_without_zstd,\n"
    "entropy_bits, tensors, quantized, quant_weights, seconds; with --calib: hessian_error\n"
    "{cal, val, layers [{layer, cal, val, damp_in, damp_down}]}, damp_auto [{layer, input, codec,\n"
    "bits, group, sym, damp, experts, val_err}], damp_candidates.\n";

typedef struct prog { FILE *h; } prog;

static void on_tensor(void *user, int64_t i, int64_t n, const char *name, int ndim, const int64_t *shape,
                      const moeq_codec *codec, uint64_t before, uint64_t after, double entropy)
{
    (void)n;
    prog *p = user;
    if (!p->h) return;
    char shp[96] = "[", cs[32];
    for (int d = 0; d < ndim; d++) {
        size_t l = strlen(shp);
        snprintf(shp + l, sizeof shp - l, "%s%lld", d ? ", " : "", (long long)shape[d]);
    }
    strncat(shp, "]", sizeof shp - strlen(shp) - 1);
    moeq_codec_format(codec, cs, sizeof cs);
    fprintf(p->h, "[%5lld] %-56s %-16s %-8s %8.3f MiB -> %8.3f MiB", (long long)i, name, shp, cs,
            (double)before / 1048576.0, (double)after / 1048576.0);
    if (entropy >= 0) fprintf(p->h, "  H=%.3f bits", entropy);
    fputc('\n', p->h);
}

/* MOEQ_TEST_KILL_AFTER_LAYER=L (tests only, docs/scale.md): SIGKILL once layer L is quantized,
 * as a stop without warning would. */
static void on_layer(void *user, int64_t done, int64_t layers, double secs)
{
    const char *kill_at = getenv("MOEQ_TEST_KILL_AFTER_LAYER");
    if (kill_at && done - 1 == atoll(kill_at)) raise(SIGKILL);
    if (!user || !isatty(2)) return;
    fprintf(stderr, "\r[sequential GPTQ: layer %lld/%lld, %.1f s]   ", (long long)done, (long long)layers, secs);
}

typedef struct qctx { moeq_plan_index *plan; moeq_gptq_run *run; } qctx;

static int q_codec_for(void *u, const char *name, moeq_codec *codec)
{
    qctx *q = u;
    return q->plan ? moeq_plan_codec_for(q->plan, name, codec) : 0;
}

static moeq_status q_quantize(void *u, const char *name, const float *w, int64_t rows, int64_t cols,
                              const moeq_codec *codec, uint8_t *raw, moeq_error *err)
{
    qctx *q = u;
    if (q->run) return moeq_gptq_piece(q->run, name, w, rows, cols, codec, raw, err);
    return moeq_codec_quantize_rtn(codec, w, rows, cols, raw, err);
}

int cmd_quantize(int argc, char **argv)
{
    tool_common tc = {0};
    const char *model = NULL, *out = NULL, *method = "rtn", *calib = NULL, *plan_path = NULL, *fallback = "shrink";
    const char *fit = "cal", *codec_s = NULL;
    moeq_codec codec_opt = {0};
    int64_t bits = 0, group = 64, zstd = 0, block = 128, grid_steps = 8, shrink_prior = 0;
    double damp = 0.01;
    int damp_auto = 1;
    int sym = 0, scope = MOEQ_SCOPE_EXPERTS, act_order = 0, sequential = 0;
    const char *tokens_path = NULL, *text_path = NULL, *resume = NULL;
    int64_t ctx = 512, max_tokens = 0, min_tokens = 0, n_ids = 0;
    int32_t *ids = NULL;
    moeq_gptq_seq_result sres = {0};
    moeq_tensor_rule rules[64];
    char *rule_buf[64];
    int n_rules = 0, rc = 1;
    moeq_model *m = NULL;
    moeq_calib_file *cf = NULL;
    moeq_expert_mat *mats = NULL;
    moeq_expert_index *eix = NULL;
    moeq_plan plan = {0};
    moeq_plan_index *pix = NULL;
    moeq_gptq_run run = {0};
    for (int i = 1; i < argc; i++) {
        int r = tool_common_option("quantize", argc, argv, &i, &tc);
        if (r < 0) goto out;
        if (r) continue;
        const char *a = argv[i], *v;
        if (!strcmp(a, "--bits")) {
            if (!(v = tool_value("quantize", argc, argv, &i)) || tool_parse_int("quantize", a, v, 1, &bits)) goto out;
        } else if (!strcmp(a, "--group")) {
            if (!(v = tool_value("quantize", argc, argv, &i))) goto out;
            if (!strcmp(v, "0") || !strcmp(v, "channel")) group = 0;
            else if (tool_parse_int("quantize", a, v, 1, &group)) goto out;
        } else if (!strcmp(a, "--codec")) {
            if (!(codec_s = tool_value("quantize", argc, argv, &i))) goto out;
            moeq_error e = {0};
            if (moeq_codec_parse(codec_s, &codec_opt, &e) || codec_opt.type == MOEQ_CODEC_RAW) {
                tool_usage_error("quantize", "--codec: %s", codec_opt.type == MOEQ_CODEC_RAW && !e.detail[0]
                                                               ? "wants a matrix codec (int or ggml), not a float dtype" : e.detail);
                goto out;
            }
        } else if (!strcmp(a, "--zstd")) {
            if (!(v = tool_value("quantize", argc, argv, &i)) || tool_parse_int("quantize", a, v, 1, &zstd)) goto out;
            if (zstd > 22) { tool_usage_error("quantize", "--zstd wants a level 1..22"); goto out; }
        } else if (!strcmp(a, "--block")) {
            if (!(v = tool_value("quantize", argc, argv, &i)) || tool_parse_int("quantize", a, v, 1, &block)) goto out;
            if (block > 4096) { tool_usage_error("quantize", "--block wants 1..4096"); goto out; }
        } else if (!strcmp(a, "--grid-steps")) {
            if (!(v = tool_value("quantize", argc, argv, &i)) || tool_parse_int("quantize", a, v, 1, &grid_steps)) goto out;
            if (grid_steps > 256) { tool_usage_error("quantize", "--grid-steps wants 1..256"); goto out; }
        } else if (!strcmp(a, "--shrink-prior")) {
            if (!(v = tool_value("quantize", argc, argv, &i)) || tool_parse_int("quantize", a, v, 1, &shrink_prior)) goto out;
        } else if (!strcmp(a, "--fit")) {
            if (!(fit = tool_value("quantize", argc, argv, &i))) goto out;
            if (strcmp(fit, "cal") && strcmp(fit, "all")) { tool_usage_error("quantize", "--fit wants cal or all"); goto out; }
        } else if (!strcmp(a, "--damp")) {
            if (!(v = tool_value("quantize", argc, argv, &i))) goto out;
            char *end;
            damp_auto = !strcmp(v, "auto");
            if (damp_auto) continue;
            damp = strtod(v, &end);
            if (*end || !(damp > 0 && damp < 1e6)) { tool_usage_error("quantize", "--damp wants a positive number"); goto out; }
        } else if (!strcmp(a, "--method")) {
            if (!(method = tool_value("quantize", argc, argv, &i))) goto out;
        } else if (!strcmp(a, "--calib")) {
            if (!(calib = tool_value("quantize", argc, argv, &i))) goto out;
        } else if (!strcmp(a, "--plan")) {
            if (!(plan_path = tool_value("quantize", argc, argv, &i))) goto out;
        } else if (!strcmp(a, "--fallback")) {
            if (!(fallback = tool_value("quantize", argc, argv, &i))) goto out;
            if (strcmp(fallback, "rtn") && strcmp(fallback, "layer-mean") && strcmp(fallback, "shrink")) {
                tool_usage_error("quantize", "--fallback wants shrink, rtn or layer-mean");
                goto out;
            }
        } else if (!strcmp(a, "--resume")) {
            if (!(resume = tool_value("quantize", argc, argv, &i))) goto out;
        } else if (!strcmp(a, "--act-order")) act_order = 1;
        else if (!strcmp(a, "--sequential")) sequential = 1;
        else if (!strcmp(a, "--tokens")) {
            if (!(tokens_path = tool_value("quantize", argc, argv, &i))) goto out;
        } else if (!strcmp(a, "--text")) {
            if (!(text_path = tool_value("quantize", argc, argv, &i))) goto out;
        } else if (!strcmp(a, "--ctx")) {
            if (!(v = tool_value("quantize", argc, argv, &i)) || tool_parse_int("quantize", a, v, 1, &ctx)) goto out;
            if (ctx > (1 << 20)) { tool_usage_error("quantize", "--ctx %lld is above 1048576", (long long)ctx); goto out; }
        } else if (!strcmp(a, "--max-tokens")) {
            if (!(v = tool_value("quantize", argc, argv, &i)) || tool_parse_int("quantize", a, v, 1, &max_tokens)) goto out;
        } else if (!strcmp(a, "--min-tokens")) {
            if (!(v = tool_value("quantize", argc, argv, &i)) || tool_parse_int("quantize", a, v, 1, &min_tokens)) goto out;
        } else if (!strcmp(a, "--sym")) sym = 1;
        else if (!strcmp(a, "--asym")) sym = 0;
        else if (!strcmp(a, "--scope")) {
            if (!(v = tool_value("quantize", argc, argv, &i))) goto out;
            if (!strcmp(v, "experts")) scope = MOEQ_SCOPE_EXPERTS;
            else if (!strcmp(v, "all")) scope = MOEQ_SCOPE_ALL;
            else { tool_usage_error("quantize", "--scope wants experts or all, not '%s'", v); goto out; }
        } else if (!strcmp(a, "--tensor-type")) {
            if (!(v = tool_value("quantize", argc, argv, &i))) goto out;
            const char *eq = strrchr(v, '=');
            if (!eq || eq == v || n_rules == 64) {
                tool_usage_error("quantize", "--tensor-type wants REGEX=CODEC (at most 64), got '%s'", v);
                goto out;
            }
            moeq_error e = {0};
            if (moeq_codec_parse(eq + 1, &rules[n_rules].codec, &e)) {
                tool_usage_error("quantize", "--tensor-type: %s", e.detail);
                goto out;
            }
            rule_buf[n_rules] = strndup(v, (size_t)(eq - v));
            rules[n_rules].regex = rule_buf[n_rules];
            n_rules++;
        } else if (!strcmp(a, "-o")) {
            if (!(out = tool_value("quantize", argc, argv, &i))) goto out;
        } else if (a[0] == '-' && a[1]) { tool_usage_error("quantize", "unknown option %s", a); goto out; }
        else if (model) { tool_usage_error("quantize", "one MODEL only"); goto out; }
        else model = a;
    }
    if (tc.help) { fputs(QUANTIZE_HELP, stdout); rc = 0; goto out; }
    if (!model) { tool_usage_error("quantize", "missing MODEL"); goto out; }
    if (!out) { tool_usage_error("quantize", "missing -o OUT.moeq"); goto out; }
    if ((rc = tool_check_output("quantize", out))) goto out;
    rc = 1;
    if (codec_s && (bits || plan_path)) { tool_usage_error("quantize", "--codec excludes --bits and --plan"); goto out; }
    if (!plan_path && !codec_s && bits != 2 && bits != 3 && bits != 4 && bits != 8) {
        tool_usage_error("quantize", "--bits wants 2, 3, 4 or 8 (or --codec, --plan)");
        goto out;
    }
    if (plan_path && bits) { tool_usage_error("quantize", "--plan and --bits exclude each other"); goto out; }
    if (group != 0 && group != 32 && group != 64 && group != 128) {
        tool_usage_error("quantize", "--group wants 32, 64, 128 or 0 (per channel)");
        goto out;
    }
    int gptq = !strcmp(method, "gptq");
    if (!gptq && strcmp(method, "rtn")) { tool_usage_error("quantize", "--method wants rtn or gptq"); goto out; }
    if (sequential && !gptq) { tool_usage_error("quantize", "--sequential needs --method gptq"); goto out; }
    if (sequential && calib) {
        tool_usage_error("quantize", "--sequential collects its own statistics: give --tokens or --text, not --calib");
        goto out;
    }
    if (sequential && !tokens_path && !text_path) {
        tool_usage_error("quantize", "--sequential needs calibration tokens: --tokens FILE or --text FILE");
        goto out;
    }
    int seq_ggml = sequential && codec_s && (codec_opt.type == MOEQ_CODEC_GGML || codec_opt.type == MOEQ_CODEC_TDICT);
    for (int r = 0; r < n_rules; r++)
        seq_ggml |= sequential && (rules[r].codec.type == MOEQ_CODEC_GGML || rules[r].codec.type == MOEQ_CODEC_TDICT);
    if (seq_ggml) {   /* plans are checked per piece (moeq_gptq_piece) */
        tool_usage_error("quantize", "--sequential takes int codecs only; for ggml and t1d codecs calibrate first and give --calib");
        goto out;
    }
    if (tokens_path && text_path) { tool_usage_error("quantize", "give --tokens or --text, not both"); goto out; }
    if (!sequential && (tokens_path || text_path)) {
        tool_usage_error("quantize", "--tokens/--text are for --sequential (else calibrate first: --calib)");
        goto out;
    }
    if (gptq && !sequential && !calib) { tool_usage_error("quantize", "--method gptq needs --calib F.h5 (or --sequential)"); goto out; }
    moeq_threads_init(tc.threads);
    moeq_error err = {0};
    /* every rank opens the same inputs: a failure is agreed, so all exit with its code */
    if (moeq_dist_agree(moeq_model_open(model, &m, &err), &err)) { rc = tool_report("quantize", &err); goto out; }
    if (calib && moeq_dist_agree(moeq_calib_file_open(calib, m, &cf, &err), &err)) {
        rc = tool_report("quantize", &err);
        goto out;
    }
    if ((tokens_path && moeq_tokens_load(tokens_path, moeq_model_config(m)->vocab, &ids, &n_ids, &err)) ||
        (text_path && moeq_model_tokenize_file(m, text_path, &ids, &n_ids, &err))) {
        rc = tool_report("quantize", &err);
        goto out;
    }
    if (gptq && cf && moeq_calib_file_diag(cf)) {
        if (moeq_dist_rank() == 0)
            fprintf(stderr, "moeq quantize: %s: written with --diag (no Hessians): GPTQ needs full Hessians\n", calib);
        rc = 2;
        goto out;
    }
    if (plan_path) {
        moeq_status pst = moeq_plan_read(plan_path, m, &plan, &err);
        if (pst == MOEQ_OK) pst = moeq_plan_index_build(&plan, &pix, &err);
        if (moeq_dist_agree(pst, &err)) { rc = tool_report("quantize", &err); goto out; }
    }
    /* RTN with a full-Hessian calibration file: weighted grids and the Hessian error report */
    int rtn_calib = !gptq && cf && !moeq_calib_file_diag(cf);
    int has_val = cf && moeq_calib_file_val_windows(cf) > 0;
    int damp_asked_auto = damp_auto;   /* the option as given (a --resume identity; the file is hashed apart) */
    if (gptq && damp_auto && !has_val) {
        damp_auto = 0;
        damp = 0.01;
        if (!tc.quiet && moeq_dist_rank() == 0)
            fprintf(stderr, "moeq quantize: note: %s has no validation split (calibrate --val-every): --damp 0.01\n",
                    cf ? calib : "--sequential");
    }
    if (gptq || rtn_calib) {
        size_t nm;
        moeq_status mst = moeq_expert_mats(m, &mats, &nm, &err);
        if (mst == MOEQ_OK) mst = moeq_expert_index_build(mats, nm, &eix, &err);
        if (moeq_dist_agree(mst, &err)) { rc = tool_report("quantize", &err); goto out; }
        run.m = m;
        run.calib = cf;
        run.opts = (moeq_gptq_opts){ .damp = damp, .act_order = act_order, .block = (int)block, .threads = 0,
                                     .grid_steps = (int)grid_steps };
        run.fallback = !strcmp(fallback, "rtn") ? MOEQ_FALLBACK_RTN
                     : !strcmp(fallback, "layer-mean") ? MOEQ_FALLBACK_LAYER_MEAN : MOEQ_FALLBACK_SHRINK;
        run.rtn = rtn_calib;
        run.damp_auto = gptq && damp_auto;
        run.tdict_damp = damp_asked_auto ? 0.1 : damp;
        run.split = has_val && !strcmp(fit, "cal") ? MOEQ_SPLIT_CAL : MOEQ_SPLIT_ALL;
        run.shrink_n0 = (double)shrink_prior;
        run.report = cf != NULL;
        run.mats = mats;
        run.n_mats = nm;
        run.index = eix;
    }
    prog p = { tc.quiet ? NULL : stderr };
    char meta[768];
    if (plan_path)
        snprintf(meta, sizeof meta, "{\"method\":\"%s\",\"plan\":\"%s\",\"scope\":\"%s\",\"zstd\":%lld%s%s}", method,
                 plan_path, scope ? "all" : "experts", (long long)zstd, act_order ? ",\"act_order\":true" : "",
                 sequential ? ",\"sequential\":true" : "");
    else if (codec_s) {
        char cs[32];
        moeq_codec_format(&codec_opt, cs, sizeof cs);
        snprintf(meta, sizeof meta, "{\"method\":\"%s\",\"codec\":\"%s\",\"scope\":\"%s\",\"zstd\":%lld%s%s}", method,
                 cs, scope ? "all" : "experts", (long long)zstd, act_order ? ",\"act_order\":true" : "",
                 sequential ? ",\"sequential\":true" : "");
    } else
        snprintf(meta, sizeof meta, "{\"method\":\"%s\",\"bits\":%lld,\"group\":%lld,\"sym\":%s,\"scope\":\"%s\","
                 "\"zstd\":%lld%s%s}", method, (long long)bits, (long long)group, sym ? "true" : "false",
                 scope ? "all" : "experts", (long long)zstd, act_order ? ",\"act_order\":true" : "",
                 sequential ? ",\"sequential\":true" : "");
    qctx q = { pix, gptq || rtn_calib ? &run : NULL };
    moeq_quant_opts o = { .codec = { .type = MOEQ_CODEC_INT, .bits = (int)bits, .group = (int)group, .sym = sym },
                          .scope = scope, .rules = rules, .n_rules = n_rules, .zstd_level = (int)zstd,
                          .metadata_json = meta, .progress = on_tensor, .user = &p,
                          .codec_for = plan_path ? q_codec_for : NULL, .quantize = gptq || rtn_calib ? q_quantize : NULL,
                          .cb_user = &q };
    if (plan_path) o.codec = (moeq_codec){ .type = MOEQ_CODEC_RAW, .dtype = MOEQ_DT_UNKNOWN };
    if (codec_s) o.codec = codec_opt;
    moeq_quant_result res;
    double t0 = moeq_now();
    moeq_status st = MOEQ_OK;
    if (sequential) {
        /* MPI: windows and experts of each layer split over ranks; rank 0 writes the file */
        moeq_gptq_seq_opts so = { .ctx = ctx, .max_tokens = max_tokens, .min_tokens = min_tokens,
                                  .threads = moeq_threads(), .user = tc.quiet ? NULL : &p, .resume_dir = resume,
                                  .progress = moeq_dist_rank() == 0 ? on_layer : NULL };
        st = moeq_gptq_sequential(&run, m, &o, ids, n_ids, &so, &sres, &err);
        if (so.user && isatty(2) && moeq_dist_rank() == 0) fputc('\n', stderr);
        if (st == MOEQ_OK && moeq_dist_rank() != 0) { rc = 0; goto out; }
    }
    /* the identity of a --resume checkpoint: every option that changes the codes (not -o, --zstd,
     * --threads, the rank count), and the input files by content */
    moeq_resume_field rf[12];
    size_t nrf = 0;
    char fv[64], rules_txt[8192] = "";
    for (int r = 0; r < n_rules; r++) {
        char cs[32];
        moeq_codec_format(&rules[r].codec, cs, sizeof cs);
        size_t l = strlen(rules_txt);
        snprintf(rules_txt + l, sizeof rules_txt - l, "%s%s=%s", r ? " " : "", rules[r].regex, cs);
    }
    moeq_resume_field_text(&rf[nrf++], "method", method);
    if (codec_s) moeq_codec_format(&codec_opt, fv, sizeof fv);   /* a codec's spelling names bits, group, sym */
    else snprintf(fv, sizeof fv, "%lld", (long long)bits);
    moeq_resume_field_text(&rf[nrf++], "bits", plan_path ? "plan" : fv);
    snprintf(fv, sizeof fv, "%lld", (long long)group);
    moeq_resume_field_text(&rf[nrf++], "group", plan_path ? "plan" : fv);
    moeq_resume_field_text(&rf[nrf++], "sym", plan_path ? "plan" : sym ? "sym" : "asym");
    moeq_resume_field_text(&rf[nrf++], "scope", scope ? "all" : "experts");
    moeq_resume_field_text(&rf[nrf++], "tensor_type", n_rules ? rules_txt : "none");
    if (gptq || rtn_calib) {
        snprintf(fv, sizeof fv, "%.17g", damp);
        moeq_resume_field_text(&rf[nrf++], "damp", damp_asked_auto ? "auto" : fv);
        snprintf(fv, sizeof fv, "%lld/%s/%lld", (long long)grid_steps, fit, (long long)shrink_prior);
        moeq_resume_field_text(&rf[nrf++], "grid_fit_prior", fv);
        snprintf(fv, sizeof fv, "%lld", (long long)block);
        moeq_resume_field_text(&rf[nrf++], "block", fv);
        moeq_resume_field_text(&rf[nrf++], "act_order", act_order ? "yes" : "no");
        moeq_resume_field_text(&rf[nrf++], "fallback", fallback);
    }
    moeq_quant_run qr = { .gptq = gptq || rtn_calib ? &run : NULL, .resume_dir = resume, .fields = rf, .n_fields = nrf };
    if (calib) { qr.files[qr.n_files].name = "calib"; qr.files[qr.n_files++].path = calib; }
    if (plan_path) { qr.files[qr.n_files].name = "plan"; qr.files[qr.n_files++].path = plan_path; }
    if (st == MOEQ_OK) st = sequential ? moeq_quantize_rtn(m, &o, out, &res, &err)
                                       : moeq_quantize_run(m, &o, &qr, out, &res, &err);
    if (sequential) moeq_gptq_seq_done(&sres, resume, moeq_model_config(m)->layers, st == MOEQ_OK);
    double secs = moeq_now() - t0;
    if (st) { rc = tool_report("quantize", &err); goto out; }
    if (moeq_dist_rank() != 0) { rc = 0; goto out; }   /* rank 0 wrote the file and reports */
    FILE *h = tool_human(&tc);
    int64_t tok_cal = cf ? moeq_calib_file_split_tokens(cf, run.split) : 1, tok_val = has_val ? moeq_calib_file_split_tokens(cf, MOEQ_SPLIT_VAL) : 1;
    if (tok_cal <= 0) tok_cal = 1;
    if (tok_val <= 0) tok_val = 1;
    double tot_cal = 0, tot_val = 0;
    for (int64_t l = 0; run.layers && l < moeq_model_config(m)->layers; l++) {
        tot_cal += run.layers[l].err_cal;
        tot_val += run.layers[l].err_val;
    }
    json_t *j0 = tc.json ? json_object() : NULL;
    if (!tc.quiet) {
        FILE *s = h ? h : stderr;
        fprintf(s, "%s: %lld tensors, %lld quantized (%lld weights)%s\n", out, (long long)res.tensors,
                (long long)res.quantized, (long long)res.quant_weights, gptq ? ", GPTQ" : "");
        fprintf(s, "bits per weight over quantized matrices: %.4f codes, %.4f with scales/zeros; code entropy "
                "%.4f bits\n", res.code_bits, res.total_bits, res.entropy_bits);
        fprintf(s, "size: %.3f MiB before -> %.3f MiB tensors (%.3f MiB without zstd), file %llu bytes, %.2f s\n",
                (double)res.bytes_in / 1048576.0, (double)res.bytes_out / 1048576.0,
                (double)res.raw_bytes_out / 1048576.0, (unsigned long long)res.file_bytes, secs);
        if (sequential)
            fprintf(s, "sequential: %lld tokens in %lld windows of %lld, %lld layers in %.2f s\n",
                    (long long)sres.tokens, (long long)sres.windows, (long long)sres.ctx,
                    (long long)sres.layers_quantized, sres.seconds);
        if (resume)
            fprintf(s, "resume: %s: %lld layers from the checkpoint, %lld written now\n", resume,
                    (long long)qr.units_resumed, (long long)qr.units_written);
        if (moeq_dist_size() > 1)
            fprintf(s, "MPI: %d ranks, rank 0 wrote the file\n", moeq_dist_size());
        if (gptq) {
            fprintf(s, "GPTQ: %lld matrices in %.2f s; %zu fallbacks\n", (long long)run.gptq_matrices,
                    run.seconds_gptq, run.n_fallbacks);
            for (size_t i = 0; i < run.n_fallbacks; i++)
                fprintf(s, "  fallback %-10s %s: %s\n", run.fallbacks[i].kind, run.fallbacks[i].tensor,
                        run.fallbacks[i].reason);
        }
        if (run.layers) {
            fprintf(s, "Hessian error per token, sum over the routed experts (calibration split%s):\n",
                    run.split == MOEQ_SPLIT_CAL ? " fitted, validation split held out" : "; no held-out split");
            for (int64_t l = 0; l < moeq_model_config(m)->layers; l++) {
                const moeq_gptq_layer_rep *L = &run.layers[l];
                if (!L->pieces) continue;
                fprintf(s, "  layer %3lld: cal %.6g", (long long)l, L->err_cal / tok_cal);
                if (has_val) fprintf(s, "  val %.6g", L->err_val / tok_val);
                if (L->damp_n[0] || L->damp_n[1])
                    fprintf(s, "  damping gate/up %g down %g", L->damp_n[0] ? L->damp_sum[0] / L->damp_n[0] : 0,
                            L->damp_n[1] ? L->damp_sum[1] / L->damp_n[1] : 0);
                fputc('\n', s);
            }
            fprintf(s, "  total:     cal %.6g", tot_cal / tok_cal);
            if (has_val) fprintf(s, "  val %.6g", tot_val / tok_val);
            fputc('\n', s);
        }
    }
    rc = 0;
    if (tc.json) {
        if (run.layers) {   /* the Hessian error report (docs/quantize.md, "Generalization") */
            json_t *he = json_object(), *hl = json_array();
            for (int64_t l = 0; l < moeq_model_config(m)->layers; l++) {
                const moeq_gptq_layer_rep *L = &run.layers[l];
                if (!L->pieces) continue;
                json_t *o1 = json_object();
                json_object_set_new(o1, "layer", json_integer(l));
                json_object_set_new(o1, "cal", json_real(L->err_cal / tok_cal));
                json_object_set_new(o1, "val", has_val ? json_real(L->err_val / tok_val) : json_null());
                json_object_set_new(o1, "damp_in", L->damp_n[0] ? json_real(L->damp_sum[0] / L->damp_n[0]) : json_null());
                json_object_set_new(o1, "damp_down", L->damp_n[1] ? json_real(L->damp_sum[1] / L->damp_n[1]) : json_null());
                json_array_append_new(hl, o1);
            }
            json_object_set_new(he, "cal", json_real(tot_cal / tok_cal));
            json_object_set_new(he, "val", has_val ? json_real(tot_val / tok_val) : json_null());
            json_object_set_new(he, "cal_tokens", json_integer(tok_cal));
            json_object_set_new(he, "val_tokens", json_integer(has_val ? tok_val : 0));
            json_object_set_new(he, "fit", json_string(run.split == MOEQ_SPLIT_CAL ? "cal" : "all"));
            json_object_set_new(he, "layers", hl);
            json_object_set_new(j0, "hessian_error", he);
        }
        json_t *da = json_array(), *dc = json_array();
        for (size_t i = 0; i < run.n_choices; i++) {
            const moeq_gptq_damp_choice *c = &run.choices[i];
            json_t *o1 = json_object(), *ve = json_array(), *ex = json_array();
            for (int k = 0; k < MOEQ_DAMP_CANDIDATES; k++)
                json_array_append_new(ve, isfinite(c->val_err[k]) ? json_real(c->val_err[k] / tok_val) : json_null());
            for (int k = 0; k < 2; k++)
                if (c->experts[k] >= 0) json_array_append_new(ex, json_integer(c->experts[k]));
            json_object_set_new(o1, "layer", json_integer(c->layer));
            json_object_set_new(o1, "input", json_string(c->kind ? "down" : "gate_up"));
            moeq_codec cc = { .type = c->gtype ? MOEQ_CODEC_GGML : MOEQ_CODEC_INT, .bits = c->bits, .group = c->group,
                              .sym = c->sym, .gtype = c->gtype };
            char ccs[32];
            moeq_codec_format(&cc, ccs, sizeof ccs);
            json_object_set_new(o1, "codec", json_string(ccs));
            json_object_set_new(o1, "bits", json_integer(c->bits));
            json_object_set_new(o1, "group", json_integer(c->group));
            json_object_set_new(o1, "sym", json_boolean(c->sym));
            json_object_set_new(o1, "damp", json_real(c->damp));
            json_object_set_new(o1, "experts", ex);
            json_object_set_new(o1, "val_err", ve);
            json_array_append_new(da, o1);
        }
        for (int k = 0; k < MOEQ_DAMP_CANDIDATES; k++) json_array_append_new(dc, json_real(moeq_damp_candidates[k]));
        json_object_set_new(j0, "damp_auto", da);
        json_object_set_new(j0, "damp_candidates", dc);
        json_t *j = j0;
        json_object_set_new(j, "output", json_string(out));
        json_object_set_new(j, "method", json_string(method));
        json_object_set_new(j, "bytes", json_integer((json_int_t)res.file_bytes));
        json_object_set_new(j, "bytes_tensors", json_integer((json_int_t)res.bytes_out));
        json_object_set_new(j, "bytes_without_zstd", json_integer((json_int_t)res.raw_bytes_out));
        json_object_set_new(j, "bytes_in", json_integer((json_int_t)res.bytes_in));
        json_object_set_new(j, "bits_per_weight", json_real(res.code_bits));
        json_object_set_new(j, "bits_per_weight_total", json_real(res.total_bits));
        json_object_set_new(j, "entropy_bits", json_real(res.entropy_bits));
        json_t *fb = json_array();
        for (size_t i = 0; i < run.n_fallbacks; i++) {
            json_t *r = json_object();
            json_object_set_new(r, "tensor", json_string(run.fallbacks[i].tensor));
            json_object_set_new(r, "kind", json_string(run.fallbacks[i].kind));
            json_object_set_new(r, "reason", json_string(run.fallbacks[i].reason));
            json_array_append_new(fb, r);
        }
        json_object_set_new(j, "fallbacks", fb);
        json_object_set_new(j, "gptq_matrices", json_integer(run.gptq_matrices));
        json_object_set_new(j, "sequential", json_boolean(sequential));
        if (sequential) {
            json_object_set_new(j, "resumed_layers", json_integer(sres.resumed_layers));
            json_object_set_new(j, "ranks", json_integer(moeq_dist_size()));
            json_object_set_new(j, "calib_tokens", json_integer(sres.tokens));
            json_object_set_new(j, "calib_windows", json_integer(sres.windows));
        }
        json_object_set_new(j, "tensors", json_integer(res.tensors));
        json_object_set_new(j, "quantized", json_integer(res.quantized));
        json_object_set_new(j, "quant_weights", json_integer(res.quant_weights));
        json_object_set_new(j, "seconds", json_real(secs));
        json_object_set_new(j, "ranks", json_integer(moeq_dist_size()));
        if (resume) {
            json_object_set_new(j, "resume_layers_done", json_integer(qr.units_resumed));
            json_object_set_new(j, "resume_layers_written", json_integer(qr.units_written));
        }
        rc = tool_print_json(j);
    }
out:
    free(ids);
    for (int i = 0; i < n_rules; i++) free(rule_buf[i]);
    moeq_gptq_run_free(&run);
    moeq_expert_index_free(eix);
    free(mats);
    moeq_plan_index_free(pix);
    moeq_plan_free(&plan);
    moeq_calib_file_close(cf);
    moeq_model_close(m);
    return rc;
}
