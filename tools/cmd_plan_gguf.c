/* moeq plan MODEL --target gguf --budget B ...: one ggml type per GGUF matrix (docs/plan.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common.h"
#include "moeq_core.h"
#include "moeq_ggml.h"
#include "moeq_plan_gguf.h"

static const char *PLAN_GGUF_HELP =
    "usage: moeq plan MODEL --target gguf --budget B [--cost hessian|measured|uniform] [--calib F.h5]\n"
    "                 [--tokens F | --text F] [--measure-tokens N] [--ctx N]\n"
    "                 [--scope experts|all] [--types Q2_K,Q3_K,...] [--hessian-quant rtn|gptq] [--damps LIST]\n"
    "                 [--tensor-type REGEX=TYPE ...] -o plan.json [--json] [-q] [--threads N]\n\n"
    "Chooses one ggml type per matrix of the GGUF `moeq export gguf` writes (a 3-D routed-expert\n"
    "tensor, one layer x projection, is one type) so that the summed cost is smallest within B\n"
    "GGUF bits per weight (block bytes with their scales, as the file counts them), solved exactly:\n"
    "  --budget B        GGUF bits per weight over the planned matrices\n"
    "  --cost C          hessian (default): sum over experts of tr((W-Q)H(W-Q)^T), Q the export's\n"
    "                    quantizer (needs --calib); measured: the KLD against the unquantized model\n"
    "                    on validation tokens of each expert tensor quantized alone (needs --calib\n"
    "                    and --tokens or --text); uniform: n 4^-bpw\n"
    "  --tokens F, --text F  measured: validation tokens (ids, or text for MODEL's tokenizer)\n"
    "  --measure-tokens N    measured: at most N of them (default 4096), windows of --ctx (512)\n"
    "  --scope all       also attention, shared experts, dense MLPs, embeddings and head\n"
    "  --types LIST      candidates (default Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0,IQ4_XS, and under a\n"
    "                    budget of 3 also TQ2_0,TQ1_0; rows that 256 does not divide use\n"
    "                    llama-quantize's fallbacks: Q4_0, Q5_0, Q5_1, IQ4_NL); ik_llama.cpp's\n"
    "                    IQ2_K and IQ2_KS only when listed: a file with them loads in\n"
    "                    ik_llama.cpp alone\n"
    "  --hessian-quant Q rtn (default): the weighted search; gptq: as export --method gptq\n"
    "  --damps LIST      measured with gptq: GPTQ's damping candidates (e.g. 0.01,0.1,1); each\n"
    "                    (matrix, type) costs its best one, recorded in the plan for export --plan\n"
    "  --tensor-type R=T pin the GGUF tensors matching R to type T (counted in the budget)\n"
    "  --reuse-costs P   take the costs from an earlier hessian plan P of this model (other budgets)\n"
    "  -o plan.json      read by moeq export gguf --plan\n";

static void on_progress(void *user, int64_t done, int64_t total)
{
    FILE *h = user;
    if (h) fprintf(h, "\rcosts: %lld / %lld tensors", (long long)done, (long long)total);
    if (h && done == total) fputc('\n', h);
}

int cmd_plan_gguf(int argc, char **argv)
{
    tool_common tc = {0};
    const char *model = NULL, *out = NULL;
    tool_measure mo = TOOL_MEASURE_INIT;
    moeq_gguf_plan_opts o = { .budget = -1, .cost = MOEQ_COST_HESSIAN };
    const char **pre = calloc((size_t)argc, sizeof *pre);
    int *pty = calloc((size_t)argc, sizeof *pty);
    char **pown = calloc((size_t)argc, sizeof *pown);
    int rc = 1;
    moeq_model *m = NULL;
    moeq_gguf_plan p = {0};
    char *text = NULL;
    if (!pre || !pty || !pown) { fprintf(stderr, "moeq plan: out of memory\n"); rc = 4; goto out; }
    for (int i = 1; i < argc; i++) {
        int r = tool_common_option("plan", argc, argv, &i, &tc);
        if (r < 0) goto out;
        if (r) continue;
        const char *a = argv[i], *v;
        if (!strcmp(a, "--target")) {
            if (!(v = tool_value("plan", argc, argv, &i))) goto out;
        } else if (!strcmp(a, "--budget")) {
            if (!(v = tool_value("plan", argc, argv, &i))) goto out;
            char *end;
            o.budget = strtod(v, &end);
            if (*end || !(o.budget > 0 && o.budget < 64)) { tool_usage_error("plan", "--budget wants bits per weight, got '%s'", v); goto out; }
        } else if (!strcmp(a, "--cost")) {
            if (!(v = tool_value("plan", argc, argv, &i))) goto out;
            if (moeq_plan_cost_parse(v, &o.cost) || o.cost == MOEQ_COST_ALPHAQ || o.cost == MOEQ_COST_RANDOM) {
                tool_usage_error("plan", "--target gguf: --cost wants hessian, measured or uniform");
                goto out;
            }
        } else if ((r = tool_measure_option("plan", argc, argv, &i, &mo)) != 0) {
            if (r < 0) goto out;
        } else if (!strcmp(a, "--calib")) {
            if (!(o.calib_path = tool_value("plan", argc, argv, &i))) goto out;
        } else if (!strcmp(a, "--reuse-costs")) {
            if (!(o.reuse_path = tool_value("plan", argc, argv, &i))) goto out;
        } else if (!strcmp(a, "--scope")) {
            if (!(v = tool_value("plan", argc, argv, &i))) goto out;
            if (strcmp(v, "experts") && strcmp(v, "all")) { tool_usage_error("plan", "--scope is experts or all"); goto out; }
            o.scope_all = !strcmp(v, "all");
        } else if (!strcmp(a, "--hessian-quant")) {
            if (!(v = tool_value("plan", argc, argv, &i))) goto out;
            if (strcmp(v, "rtn") && strcmp(v, "gptq")) { tool_usage_error("plan", "--hessian-quant wants rtn or gptq"); goto out; }
            o.hessian_gptq = !strcmp(v, "gptq");
        } else if (!strcmp(a, "--damps")) {
            if (!(v = tool_value("plan", argc, argv, &i))) goto out;
            char *dup = strdup(v), *save = NULL;
            o.n_damps = 0;
            for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                char *end;
                double d = strtod(t, &end);
                if (*end || !(d > 0 && d < 1e6) || o.n_damps == 8) { o.n_damps = -1; break; }
                o.damps[o.n_damps++] = d;
            }
            free(dup);
            if (o.n_damps < 1) { tool_usage_error("plan", "--damps wants up to 8 positive dampings, e.g. 0.01,0.1,1"); goto out; }
        } else if (!strcmp(a, "--types")) {
            if (!(v = tool_value("plan", argc, argv, &i))) goto out;
            char *dup = strdup(v), *save = NULL;
            o.n_types = 0;
            for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                const moeq_ggml_type_info *ti = moeq_ggml_type_by_name(t);
                if (!ti || ti->block == 1 || o.n_types == MOEQ_GGUF_PLAN_MAX_TYPES) { o.n_types = -1; break; }
                o.types[o.n_types++] = (int)ti->type;
            }
            free(dup);
            if (o.n_types < 1) { tool_usage_error("plan", "--types wants a list of block types (Q2_K, Q4_K, IQ4_XS, ...)"); goto out; }
        } else if (!strcmp(a, "--tensor-type")) {
            if (!(v = tool_value("plan", argc, argv, &i))) goto out;
            const char *eq = strrchr(v, '=');
            const moeq_ggml_type_info *ti = eq ? moeq_ggml_type_by_name(eq + 1) : NULL;
            if (!eq || eq == v || !ti) { tool_usage_error("plan", "--tensor-type wants REGEX=TYPE with a ggml type name"); goto out; }
            pown[o.n_pins] = strndup(v, (size_t)(eq - v));
            pre[o.n_pins] = pown[o.n_pins];
            pty[o.n_pins++] = (int)ti->type;
        } else if (!strcmp(a, "-o")) {
            if (!(out = tool_value("plan", argc, argv, &i))) goto out;
        } else if (a[0] == '-' && a[1]) { tool_usage_error("plan", "unknown option %s (with --target gguf)", a); goto out; }
        else if (model) { tool_usage_error("plan", "one MODEL only"); goto out; }
        else model = a;
    }
    if (tc.help) { fputs(PLAN_GGUF_HELP, stdout); rc = 0; goto out; }
    if (!model) { tool_usage_error("plan", "missing MODEL"); goto out; }
    if (o.budget < 0) { tool_usage_error("plan", "missing --budget B"); goto out; }
    if (!out && !tc.json) { tool_usage_error("plan", "missing -o plan.json (or --json)"); goto out; }
    if (o.cost != MOEQ_COST_UNIFORM && !o.calib_path && !o.reuse_path) {
        tool_usage_error("plan", "--cost %s needs --calib F.h5", moeq_plan_cost_name(o.cost));
        goto out;
    }
    if (o.cost == MOEQ_COST_MEASURED && !o.reuse_path && tool_measure_check("plan", &mo, "--cost measured")) goto out;
    if ((rc = tool_check_output("plan", out))) goto out;
    rc = 1;
    o.pin_regex = pre;
    o.pin_types = pty;
    moeq_threads_init(tc.threads);
    o.progress = on_progress;
    o.user = tc.quiet || !isatty(2) ? NULL : stderr;
    moeq_error err = {0};
    moeq_status st = moeq_model_open(model, &m, &err);
    o.threads = moeq_threads();
    if (!st && o.cost == MOEQ_COST_MEASURED && !o.reuse_path) {   /* a second open gets the overrides */
        st = (moeq_status)tool_measure_load(&mo, model, m, &err);
        o.measure_model = mo.model;
        o.measure_tokens = mo.ids;
        o.measure_n = mo.n;
        o.measure_ctx = mo.ctx;
    }
    if (!st) st = moeq_gguf_plan_make(m, &o, &p, &err);
    if (!st && !(text = moeq_gguf_plan_json(&p, &o, m))) st = moeq_fail(&err, MOEQ_ERR_NOMEM, "out of memory for plan.json");
    if (!st && out) st = moeq_write_atomic(out, text, strlen(text), &err);
    if (st) { rc = tool_report("plan", &err); goto out; }
    if (!tc.quiet) {
        fprintf(stderr, "plan (gguf): %zu tensors, cost %s, budget %g GGUF bits per weight\n", p.n,
                moeq_plan_cost_name(o.cost), o.budget);
        for (size_t i = 0; i < p.n; i++)
            fprintf(stderr, "  %-32s %-7s %s\n", p.items[i].name, moeq_ggml_type_get(p.items[i].cand[p.items[i].choice])->name,
                    p.items[i].pinned ? "(pinned)" : "");
        fprintf(stderr, "bits per weight %.4f (%lld bytes); predicted cost %.6g (%s; bound %.6g); costs %.2f s, solve %.4f s\n",
                p.bits_per_weight, (long long)(p.bits / 8), p.cost, p.solve.exact ? "exact" : "greedy",
                p.solve.lower_bound, p.seconds_costs, p.seconds_solve);
    }
    rc = 0;
    if (tc.json) fputs(text, stdout), fputc('\n', stdout);
out:
    free(text);
    for (int i = 0; pown && i < o.n_pins; i++) free(pown[i]);
    free(pown);
    free(pre);
    free(pty);
    moeq_gguf_plan_free(&p);
    moeq_model_close(m);
    tool_measure_free(&mo);
    return rc;
}
