/* moeq export gguf MODEL -o OUT.gguf: a GGUF that llama.cpp loads (docs/export.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common.h"
#include "moeq_core.h"
#include "moeq_gguf_export.h"
#include "moeq_plan_gguf.h"

static const char *EXPORT_HELP =
    "usage: moeq export gguf MODEL -o OUT.gguf [--type TYPE] [--scope experts|all]\n"
    "                        [--tensor-type REGEX=TYPE ...] [--method rtn] [--calib F.h5] [--damp D|auto]\n"
    "                        [--plan plan.json] [--requantize] [--gguf-pre NAME] [--yarn-truncate]\n"
    "                        [--json] [-q] [--threads N]\n\n"
    "Writes MODEL (a Hugging Face directory, a .moeq or a .gguf file) as the GGUF llama.cpp's\n"
    "converter writes for its architecture (llama for Mixtral, qwen2moe, qwen3moe, olmoe, deepseek2,\n"
    "gpt-oss): its "
    "metadata keys, tensor names, q/k permutation, 3-D expert tensors and tokenizer metadata\n"
    "(docs/export.md, docs/FORMAT-gguf.md). The file is written under a temporary name and renamed.\n"
    "  -o OUT.gguf          the output file\n"
    "  --type TYPE          ggml type of the routed experts, as llama.cpp spells it (F32, F16, BF16,\n"
    "                       Q8_0, Q4_0, Q4_1, ... Q4_K, IQ4_XS, MXFP4, TQ1_0, TQ2_0; IQ2_K, IQ2_KS:\n"
    "                       files only ik_llama.cpp loads). A float type applies to every\n"
    "                       matrix (a dequantized copy). Default: every matrix as stored (BF16 stays\n"
    "                       BF16, MXFP4 experts (gpt-oss) stay MXFP4, their codes copied, a GGUF keeps\n"
    "                       its blocks, .moeq codecs map exactly: 4-bit g32 sym -> Q4_0,\n"
    "                       4-bit asym -> Q4_1, 8-bit sym -> Q8_0). Norms, biases and routers are F32.\n"
    "  --scope all          also attention, shared experts, embeddings and head get TYPE (default:\n"
    "                       experts; the other matrices keep their stored type)\n"
    "  --plan plan.json     the types of moeq plan --target gguf, tensor by tensor (--tensor-type\n"
    "                       rules still apply after it)\n"
    "  --tensor-type RE=T   tensors whose GGUF name matches the extended regex RE get T (repeatable)\n"
    "  --method rtn|gptq    rtn (default): the type's own quantizer (weighted with --calib); gptq:\n"
    "                       GPTQ on the type's grid with each expert's Hessian (needs --calib)\n"
    "  --damp D|auto        GPTQ's damping, D x mean(diag H) added to the diagonal; auto (default):\n"
    "                       per expert tensor, of 0.01 0.03 0.1 0.3 1 the one with the smallest\n"
    "                       error on the calibration file's validation split (JSON: damps)\n"
    "  --calib F.h5         weight each expert's rows by its Hessian diagonal (moeq calibrate),\n"
    "                       as llama.cpp does with an imatrix; dead/undersampled experts use the layer's\n"
    "  --requantize         requantize .moeq codecs that do not map exactly onto a ggml block\n"
    "  --gguf-pre NAME      tokenizer.ggml.pre, when the pre-tokenizer regex is not in the table\n"
    "  --yarn-truncate      accept llama.cpp's YaRN, which rounds the correction range, for a config\n"
    "                       with rope truncate false (gpt-oss): the GGUF computes truncate true\n"
    "Rows not a multiple of a 256-block type fall back as llama-quantize does (Q4_K -> Q5_0,\n"
    "TQ1_0/TQ2_0 -> Q4_0, ...).\n"
    "JSON: output, bytes, bits_per_weight, types (type -> tensors), fallbacks, damps, tensors, seconds.\n";

typedef struct prog { FILE *h; } prog;

static void on_tensor(void *user, int64_t i, int64_t n, const char *name, int nd, const int64_t *ne, const char *type)
{
    prog *p = user;
    if (!p->h) return;
    char shp[96] = "{";
    for (int d = 0; d < nd; d++) {
        size_t l = strlen(shp);
        snprintf(shp + l, sizeof shp - l, "%s%lld", d ? ", " : "", (long long)ne[d]);
    }
    strncat(shp, "}", sizeof shp - strlen(shp) - 1);
    fprintf(p->h, "[%lld/%lld] %-28s %-18s %s\n", (long long)i + 1, (long long)n, name, shp, type);
}

int cmd_export(int argc, char **argv)
{
    tool_common tc = {0};
    const char *fmt = NULL, *in = NULL, *out = NULL, *type_s = NULL, *scope = "experts", *calib = NULL,
               *pre = NULL, *method = "rtn", *plan = NULL;
    int requantize = 0, n_rules = 0, yarn_truncate = 0;
    double damp = 0;
    const char **rre = calloc((size_t)argc, sizeof *rre);
    int *rty = calloc((size_t)argc, sizeof *rty);
    char **rown = calloc((size_t)argc, sizeof *rown);
    int rc = 1;
    if (!rre || !rty || !rown) { fprintf(stderr, "moeq export: out of memory\n"); rc = 4; goto done; }
    for (int i = 1; i < argc; i++) {
        int r = tool_common_option("export", argc, argv, &i, &tc);
        if (r < 0) goto done;
        if (r) continue;
        const char *a = argv[i], *v;
        if (!strcmp(a, "-o")) { if (!(out = tool_value("export", argc, argv, &i))) goto done; }
        else if (!strcmp(a, "--type")) { if (!(type_s = tool_value("export", argc, argv, &i))) goto done; }
        else if (!strcmp(a, "--scope")) { if (!(scope = tool_value("export", argc, argv, &i))) goto done; }
        else if (!strcmp(a, "--plan")) { if (!(plan = tool_value("export", argc, argv, &i))) goto done; }
        else if (!strcmp(a, "--calib")) { if (!(calib = tool_value("export", argc, argv, &i))) goto done; }
        else if (!strcmp(a, "--method")) { if (!(method = tool_value("export", argc, argv, &i))) goto done; }
        else if (!strcmp(a, "--damp")) {
            const char *dv = tool_value("export", argc, argv, &i);
            char *end = NULL;
            if (!dv) goto done;
            if (!strcmp(dv, "auto")) { damp = 0; continue; }
            damp = strtod(dv, &end);
            if (*end || !(damp > 0 && damp < 100)) { rc = tool_usage_error("export", "--damp wants a positive number, got '%s'", dv); goto done; }
        }
        else if (!strcmp(a, "--gguf-pre")) { if (!(pre = tool_value("export", argc, argv, &i))) goto done; }
        else if (!strcmp(a, "--requantize")) requantize = 1;
        else if (!strcmp(a, "--yarn-truncate")) yarn_truncate = 1;
        else if (!strcmp(a, "--tensor-type")) {
            if (!(v = tool_value("export", argc, argv, &i))) goto done;
            const char *eq = strrchr(v, '=');
            const moeq_gguf_type *t = eq ? moeq_gguf_type_by_name(eq + 1) : NULL;
            if (!eq || eq == v || !t) { rc = tool_usage_error("export", "--tensor-type wants REGEX=TYPE with a ggml type name (got '%s')", v); goto done; }
            rown[n_rules] = strndup(v, (size_t)(eq - v));
            rre[n_rules] = rown[n_rules];
            rty[n_rules++] = t->id;
        } else if (a[0] == '-' && a[1]) { rc = tool_usage_error("export", "unknown option %s", a); goto done; }
        else if (!fmt) fmt = a;
        else if (!in) in = a;
        else { rc = tool_usage_error("export", "one MODEL only (got '%s' and '%s')", in, a); goto done; }
    }
    if (tc.help) { fputs(EXPORT_HELP, stdout); rc = 0; goto done; }
    if (!fmt || strcmp(fmt, "gguf")) { rc = tool_usage_error("export", "the format comes first: moeq export gguf MODEL -o OUT.gguf"); goto done; }
    if (!in) { rc = tool_usage_error("export", "missing MODEL"); goto done; }
    if (!out) { rc = tool_usage_error("export", "missing -o OUT.gguf"); goto done; }
    if (strcmp(scope, "experts") && strcmp(scope, "all")) { rc = tool_usage_error("export", "--scope is experts or all (got '%s')", scope); goto done; }
    if (strcmp(method, "rtn") && strcmp(method, "gptq")) { rc = tool_usage_error("export", "--method is rtn or gptq (got '%s')", method); goto done; }
    if (!strcmp(method, "gptq") && !calib) { rc = tool_usage_error("export", "--method gptq needs --calib F.h5"); goto done; }
    const moeq_gguf_type *ty = type_s ? moeq_gguf_type_by_name(type_s) : NULL;
    if (type_s && !ty) { rc = tool_usage_error("export", "--type '%s' is not a ggml type name (F32, F16, BF16, Q8_0, Q4_0, Q4_K, ...)", type_s); goto done; }
    moeq_threads_init(tc.threads);
    moeq_error err = {0};
    moeq_model *m = NULL;
    if (moeq_model_open(in, &m, &err)) { rc = tool_report("export", &err); goto done; }
    char **pnames = NULL;
    int *ptypes = NULL, n_plan = 0;
    double *pdamps = NULL;
    if (plan && moeq_gguf_plan_read(plan, m, &pnames, &ptypes, &pdamps, &n_plan, &err)) {
        moeq_model_close(m);
        rc = tool_report("export", &err);
        goto done;
    }
    prog p = { tc.quiet ? NULL : stderr };
    moeq_gguf_export_opts o = { .type = ty ? ty->id : -1, .scope_all = !strcmp(scope, "all"), .n_rules = n_rules,
                                .rule_regex = rre, .rule_types = rty, .pre = pre, .requantize = requantize,
                                .yarn_truncate = yarn_truncate, .damp = damp,
                                .calib_path = calib, .gptq = !strcmp(method, "gptq"), .progress = on_tensor, .user = &p,
                                .n_plan = n_plan, .plan_names = (const char *const *)pnames, .plan_types = ptypes,
                                .plan_damps = pdamps };
    moeq_gguf_export_result res = { 0 };
    double t0 = moeq_now();
    moeq_status st = moeq_gguf_export(m, out, &o, &res, &err);
    moeq_model_close(m);
    moeq_gguf_plan_types_free(pnames, ptypes, pdamps, n_plan);
    if (st) { rc = tool_report("export", &err); goto done; }
    double secs = moeq_now() - t0;
    FILE *h = tool_human(&tc);
    if (h) fprintf(h, "%s: %llu bytes, %lld tensors, %.3f bits per weight, %zu fallbacks, %.1f s\n", out,
                   (unsigned long long)res.bytes, (long long)res.tensors, res.bits_per_weight,
                   json_array_size(res.fallbacks), secs);
    rc = 0;
    if (tc.json) {
        json_t *j = json_object(), *types = json_object();
        for (int t = 0; t < 256; t++)
            if (res.types[t]) json_object_set_new(types, moeq_gguf_type_get(t)->name, json_integer(res.types[t]));
        json_object_set_new(j, "output", json_string(out));
        json_object_set_new(j, "bytes", json_integer((json_int_t)res.bytes));
        json_object_set_new(j, "bits_per_weight", json_real(res.bits_per_weight));
        json_object_set_new(j, "types", types);
        json_object_set_new(j, "fallbacks", res.fallbacks);
        res.fallbacks = NULL;
        if (res.damps) json_object_set_new(j, "damps", res.damps);
        res.damps = NULL;
        json_object_set_new(j, "tensors", json_integer(res.tensors));
        json_object_set_new(j, "seconds", json_real(secs));
        rc = tool_print_json(j);
    }
    json_decref(res.fallbacks);
    json_decref(res.damps);
done:
    for (int r = 0; r < n_rules; r++) free(rown[r]);
    free(rown);
    free(rre);
    free(rty);
    return rc;
}
