/* moeq plan MODEL --budget B [--cost uniform|alphaq|hessian] ... -o plan.json */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common.h"
#include "moeq_core.h"
#include "moeq_dist.h"
#include "moeq_model.h"
#include "moeq_plan.h"

static const char *PLAN_HELP =
    "usage: moeq plan MODEL --budget B [--bits 2,3,4,8 | --codecs LIST]\n"
    "                 [--cost uniform|alphaq|hessian|measured|random] [--calib F.h5] [--spectral F.h5]\n"
    "                 [--tokens F | --text F] [--measure-tokens N] [--ctx N] [--seed S]\n"
    "                 [--group G] [--sym|--asym] [--gamma G|auto]\n"
    "                 [--weight params|count] [--budget-total] [--hessian-quant rtn|gptq]\n"
    "                 [--tensor-type REGEX=CODEC ...] [--scope experts] -o plan.json\n"
    "       moeq plan MODEL --target gguf --budget B ... (ggml types per GGUF tensor: --target gguf --help)\n"
    "                 [--json] [-q] [--threads N]\n\n"
    "Chooses one codec per routed-expert matrix so that the total cost is smallest within a bit\n"
    "budget, solved exactly (Lagrangian bisection, greedy fill, reduced-cost fixing, DP; docs/plan.md):\n"
    "  --budget B        bits per weight over the planned matrices (codes only unless --budget-total)\n"
    "  --bits LIST       candidate bit widths (default 2,3,4,8)\n"
    "  --codecs LIST     candidate codecs instead (up to 8, any spelling: q2_k,q3_k,q4_k,iq4_xs,q6_k,\n"
    "                    iq2_k, iq2_ks, tq2_0, q3g64a, ...); a ggml type counts its bits per weight\n"
    "                    (Q4_K 4.5, Q3_K 3.4375, IQ2_K 2.375, IQ2_KS 2.1875 plus its f16 row scale,\n"
    "                    TQ2_0 2.0625, TQ1_0 1.6875)\n"
    "  --group G         the candidates' group: 32, 64 (default), 128 or 0 (per channel)\n"
    "  --sym / --asym    symmetric codes or scale + zero (default)\n"
    "  --codecs ...,t1d  t1d (ternary, dictionary coded: cold experts below 1 bit) counts the\n"
    "                    estimate before coding, its dictionary's expected rate (~0.73 bit)\n"
    "  --cost C          uniform: n 4^-b; alphaq: n s var(W) 4^-b, s = (median alpha / alpha)^gamma\n"
    "                    (needs --spectral); hessian: measured tr((W-Q)H(W-Q)^T) (needs --calib);\n"
    "                    measured: the KLD of each layer x projection quantized alone, on validation\n"
    "                    tokens (needs --calib and --tokens or --text), shared by hessian cost;\n"
    "                    random: seeded random costs (random plans at the budget, --seed S)\n"
    "  --tokens F        measured: validation token ids (safetensors 1-D or raw uint32), or\n"
    "  --text F          UTF-8 text tokenized with MODEL's tokenizer; take text the calibration did not\n"
    "  --measure-tokens N  measured: at most N of them (default 4096), in windows of --ctx (default 512)\n"
    "  --gamma G         alphaq exponent (default 1); auto: the one of 0, 0.25, 0.5, 1, 2, 4, 10 whose\n"
    "                    sensitivities rank the layer x projection groups as their measured KLD does\n"
    "                    (needs --calib and --tokens/--text, as --cost measured)\n"
    "  --hessian-quant Q the quantizer the hessian cost measures: rtn (default) or gptq\n"
    "  --weight W        params: the budget is per weight (default); count: per matrix, as AlphaQ\n"
    "  --budget-total    the budget includes the f16 scales and zeros\n"
    "  --tensor-type R=C pin the matrices whose name matches R to codec C (keep: leave them out)\n"
    "  -o plan.json      the plan, written atomically; read by moeq quantize --plan\n"
    "Table on stderr: bits per layer and projection, histogram of bit widths.\n"
    "JSON: budget, bits_per_weight, bits_per_weight_total, matrices, predicted_cost, exact, ...\n"
    "Under mpirun -np N the hessian costs are dealt to the ranks; rank 0 writes the plan\n"
    "(docs/scale.md).\n";

static void on_progress(void *user, int64_t done, int64_t total)
{
    FILE *h = user;
    if (h) fprintf(h, "\rcosts: %lld / %lld matrices", (long long)done, (long long)total);
    if (h && done == total) fputc('\n', h);
}

int cmd_plan(int argc, char **argv)
{
    tool_common tc = {0};
    const char *model = NULL, *out = NULL, *spectral = NULL, *calib = NULL;
    int64_t seed = 1;
    tool_measure mo = TOOL_MEASURE_INIT;
    moeq_plan_opts o = { .bits = { 2, 3, 4, 8 }, .n_bits = 4, .group = 64, .gamma = 1.0, .damp = 0.01, .budget = -1 };
    moeq_tensor_rule rules[64];
    char *rule_buf[64];
    int n_rules = 0, rc = 1;
    moeq_model *m = NULL;
    moeq_plan p = {0};
    char *text = NULL;
    for (int i = 1; i + 1 < argc; i++)   /* --target gguf: GGUF types (tools/cmd_plan_gguf.c) */
        if (!strcmp(argv[i], "--target")) {
            if (!strcmp(argv[i + 1], "gguf")) return cmd_plan_gguf(argc, argv);
            if (strcmp(argv[i + 1], "moeq")) return tool_usage_error("plan", "--target is moeq or gguf");
        }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--target") && i + 1 < argc) { i++; continue; }
        int r = tool_common_option("plan", argc, argv, &i, &tc);
        if (r < 0) goto out;
        if (r) continue;
        const char *a = argv[i], *v;
        if (!strcmp(a, "--budget")) {
            if (!(v = tool_value("plan", argc, argv, &i))) goto out;
            char *end;
            o.budget = strtod(v, &end);
            if (*end || !(o.budget > 0 && o.budget < 64)) { tool_usage_error("plan", "--budget wants bits per weight, got '%s'", v); goto out; }
        } else if (!strcmp(a, "--bits")) {
            if (!(v = tool_value("plan", argc, argv, &i))) goto out;
            o.n_bits = 0;
            char *dup = strdup(v), *save = NULL;
            for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                int b = atoi(t);
                if ((b != 2 && b != 3 && b != 4 && b != 8) || o.n_bits == 8) { o.n_bits = -1; break; }
                for (int k = 0; k < o.n_bits; k++) if (o.bits[k] == b) b = -1;
                if (b > 0) o.bits[o.n_bits++] = b;
            }
            free(dup);
            if (o.n_bits < 1) { tool_usage_error("plan", "--bits wants a list of 2, 3, 4, 8"); goto out; }
        } else if (!strcmp(a, "--codecs")) {
            if (!(v = tool_value("plan", argc, argv, &i))) goto out;
            o.n_codecs = 0;
            char *dup = strdup(v), *save = NULL;
            moeq_error e = {0};
            for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (o.n_codecs == 8 || moeq_codec_parse(t, &o.codecs[o.n_codecs], &e) ||
                    o.codecs[o.n_codecs].type == MOEQ_CODEC_RAW) { o.n_codecs = -1; break; }
                o.n_codecs++;
            }
            free(dup);
            if (o.n_codecs < 1) {
                tool_usage_error("plan", "--codecs wants 1 to 8 int, ggml or t1d codecs, comma-separated%s%s", e.detail[0] ? ": " : "", e.detail);
                goto out;
            }
        } else if (!strcmp(a, "--group")) {
            if (!(v = tool_value("plan", argc, argv, &i))) goto out;
            int64_t g;
            if (!strcmp(v, "channel")) g = 0;
            else if (tool_parse_int("plan", a, v, 0, &g)) goto out;
            if (g != 0 && g != 32 && g != 64 && g != 128) { tool_usage_error("plan", "--group wants 32, 64, 128 or 0"); goto out; }
            o.group = (int)g;
        } else if (!strcmp(a, "--sym")) o.sym = 1;
        else if (!strcmp(a, "--asym")) o.sym = 0;
        else if (!strcmp(a, "--cost")) {
            if (!(v = tool_value("plan", argc, argv, &i))) goto out;
            if (moeq_plan_cost_parse(v, &o.cost)) { tool_usage_error("plan", "--cost wants uniform, alphaq, hessian, measured or random"); goto out; }
        } else if ((r = tool_measure_option("plan", argc, argv, &i, &mo)) != 0) {
            if (r < 0) goto out;
        } else if (!strcmp(a, "--seed")) {
            if (!(v = tool_value("plan", argc, argv, &i)) || tool_parse_int("plan", a, v, 0, &seed)) goto out;
        } else if (!strcmp(a, "--gamma")) {
            if (!(v = tool_value("plan", argc, argv, &i))) goto out;
            char *end;
            if (!strcmp(v, "auto")) { o.gamma_auto = 1; continue; }
            o.gamma = strtod(v, &end);
            if (*end || !(o.gamma > 0 && o.gamma < 100)) { tool_usage_error("plan", "--gamma wants a positive number"); goto out; }
        } else if (!strcmp(a, "--weight")) {
            if (!(v = tool_value("plan", argc, argv, &i))) goto out;
            if (!strcmp(v, "params")) o.weight = MOEQ_WEIGHT_PARAMS;
            else if (!strcmp(v, "count")) o.weight = MOEQ_WEIGHT_COUNT;
            else { tool_usage_error("plan", "--weight wants params or count"); goto out; }
        } else if (!strcmp(a, "--hessian-quant")) {
            if (!(v = tool_value("plan", argc, argv, &i))) goto out;
            if (!strcmp(v, "gptq")) o.hessian_gptq = 1;
            else if (!strcmp(v, "rtn")) o.hessian_gptq = 0;
            else { tool_usage_error("plan", "--hessian-quant wants rtn or gptq"); goto out; }
        } else if (!strcmp(a, "--budget-total")) o.budget_total = 1;
        else if (!strcmp(a, "--spectral")) {
            if (!(spectral = tool_value("plan", argc, argv, &i))) goto out;
        } else if (!strcmp(a, "--calib")) {
            if (!(calib = tool_value("plan", argc, argv, &i))) goto out;
        } else if (!strcmp(a, "--scope")) {
            if (!(v = tool_value("plan", argc, argv, &i))) goto out;
            if (strcmp(v, "experts")) {
                if (moeq_dist_rank() == 0) fprintf(stderr, "moeq plan: --scope %s is not supported (routed experts only)\n", v);
                rc = 2;
                goto out;
            }
        } else if (!strcmp(a, "--tensor-type")) {
            if (!(v = tool_value("plan", argc, argv, &i))) goto out;
            const char *eq = strrchr(v, '=');
            if (!eq || eq == v || n_rules == 64) { tool_usage_error("plan", "--tensor-type wants REGEX=CODEC"); goto out; }
            moeq_error e = {0};
            if (moeq_codec_parse(eq + 1, &rules[n_rules].codec, &e)) { tool_usage_error("plan", "--tensor-type: %s", e.detail); goto out; }
            rule_buf[n_rules] = strndup(v, (size_t)(eq - v));
            rules[n_rules].regex = rule_buf[n_rules];
            n_rules++;
        } else if (!strcmp(a, "-o")) {
            if (!(out = tool_value("plan", argc, argv, &i))) goto out;
        } else if (a[0] == '-' && a[1]) { tool_usage_error("plan", "unknown option %s", a); goto out; }
        else if (model) { tool_usage_error("plan", "one MODEL only"); goto out; }
        else model = a;
    }
    if (tc.help) { if (moeq_dist_rank() == 0) fputs(PLAN_HELP, stdout); rc = 0; goto out; }
    if (!model) { tool_usage_error("plan", "missing MODEL"); goto out; }
    if (o.budget < 0) { tool_usage_error("plan", "missing --budget B"); goto out; }
    if (!out && !tc.json) { tool_usage_error("plan", "missing -o plan.json (or --json)"); goto out; }
    if ((rc = tool_check_output("plan", out))) goto out;
    rc = 1;
    if (o.cost == MOEQ_COST_ALPHAQ && !spectral) { tool_usage_error("plan", "--cost alphaq needs --spectral F.h5"); goto out; }
    if (o.gamma_auto && o.cost != MOEQ_COST_ALPHAQ) { tool_usage_error("plan", "--gamma auto is for --cost alphaq"); goto out; }
    const int measure = o.cost == MOEQ_COST_MEASURED || o.gamma_auto;
    if ((o.cost == MOEQ_COST_HESSIAN || measure) && !calib) {
        tool_usage_error("plan", "--cost %s needs --calib F.h5", moeq_plan_cost_name(o.cost));
        goto out;
    }
    if (measure && tool_measure_check("plan", &mo, o.gamma_auto ? "--gamma auto" : "--cost measured")) goto out;
    moeq_threads_init(tc.threads);
    o.spectral_path = spectral;
    o.calib_path = calib;
    o.rules = rules;
    o.n_rules = n_rules;
    o.threads = moeq_threads();
    o.progress = on_progress;
    const int rank0 = moeq_dist_rank() == 0;   /* under mpirun only rank 0 prints and writes */
    o.user = tc.quiet || (o.cost != MOEQ_COST_HESSIAN && o.cost != MOEQ_COST_MEASURED) || !isatty(2) || !rank0 ? NULL : stderr;
    o.seed = (uint64_t)seed;   /* progress on a terminal only */
    moeq_error err = {0};
    /* every rank opens the model and makes the same plan (the hessian costs dealt to the ranks
     * and gathered, docs/plan.md); errors are agreed so every rank returns the same exit code */
    moeq_status st = moeq_model_open(model, &m, &err);
    if (st == MOEQ_OK && measure) {   /* a second open gets the overrides */
        st = (moeq_status)tool_measure_load(&mo, model, m, &err);
        o.measure_model = mo.model;
        o.measure_tokens = mo.ids;
        o.measure_n = mo.n;
        o.measure_ctx = mo.ctx;
    }
    if ((st = moeq_dist_agree(st, &err)) != MOEQ_OK) { rc = tool_report("plan", &err); goto out; }
    st = moeq_plan_make(m, &o, &p, &err);
    if (st != MOEQ_OK && !moeq_dist_error_agreed(&err)) st = moeq_dist_agree(st, &err);
    if (st != MOEQ_OK) { rc = tool_report("plan", &err); goto out; }
    if (rank0) {
        text = moeq_plan_json(&p, &o, m);
        if (!text) st = moeq_fail(&err, MOEQ_ERR_NOMEM, "out of memory for plan.json");
        else if (out) st = moeq_write_atomic(out, text, strlen(text), &err);
    }
    if ((st = moeq_dist_agree(st, &err)) != MOEQ_OK) { rc = tool_report("plan", &err); goto out; }
    if (!rank0) { rc = 0; goto out; }
    if (!tc.quiet) {
        FILE *s = stderr;
        const moeq_config *c = moeq_model_config(m);
        fprintf(s, "plan: %zu matrices, cost %s, budget %g bits per %s%s\n", p.n, moeq_plan_cost_name(o.cost), o.budget,
                o.weight == MOEQ_WEIGHT_COUNT ? "matrix" : "weight", o.budget_total ? " (with scales and zeros)" : "");
        fprintf(s, "mean bits per layer and projection (codes):\n  layer     gate       up     down\n");
        for (int64_t l = 0; l < c->layers; l++) {
            double sb[3] = {0}, sw[3] = {0};
            for (size_t i = 0; i < p.n; i++)
                if (p.entries[i].layer == l) {
                    double nw = (double)(p.entries[i].rows * p.entries[i].cols);
                    sb[p.entries[i].proj] += nw * (p.entries[i].codec.type == MOEQ_CODEC_GGML ||
                                                   p.entries[i].codec.type == MOEQ_CODEC_TDICT
                                                       ? moeq_codec_bpw(&p.entries[i].codec, p.entries[i].cols)
                                                       : p.entries[i].codec.bits);
                    sw[p.entries[i].proj] += nw;
                }
            if (sw[0] + sw[1] + sw[2] == 0) continue;
            fprintf(s, "  %5lld %8.3f %8.3f %8.3f\n", (long long)l, sw[0] ? sb[0] / sw[0] : 0, sw[1] ? sb[1] / sw[1] : 0,
                    sw[2] ? sb[2] / sw[2] : 0);
        }
        fprintf(s, "histogram:");
        for (int b = 1; b <= 8; b++) {
            int64_t cnt = 0;
            for (size_t i = 0; i < p.n; i++) cnt += p.entries[i].codec.type == MOEQ_CODEC_INT && p.entries[i].codec.bits == b;
            if (cnt) fprintf(s, "  %d-bit %lld", b, (long long)cnt);
        }
        for (int g = 1; g < 64; g++) {   /* ggml types by id */
            int64_t cnt = 0;
            for (size_t i = 0; i < p.n; i++) cnt += p.entries[i].codec.type == MOEQ_CODEC_GGML && p.entries[i].codec.gtype == g;
            char cs[32];
            moeq_codec cg = { .type = MOEQ_CODEC_GGML, .gtype = g };
            moeq_codec_format(&cg, cs, sizeof cs);
            if (cnt) fprintf(s, "  %s %lld", cs, (long long)cnt);
        }
        fprintf(s, "\nbits per weight %.4f codes, %.4f with scales/zeros; predicted cost %.6g (%s; bound %.6g); "
                "costs %.2f s, solve %.4f s\n", p.bits_per_weight, p.bits_per_weight_total, p.cost,
                p.solve.exact ? "exact" : "greedy", p.solve.lower_bound, p.seconds_costs, p.seconds_solve);
    }
    rc = 0;
    if (tc.json) fputs(text, stdout), fputc('\n', stdout);
out:
    free(text);
    for (int i = 0; i < n_rules; i++) free(rule_buf[i]);
    moeq_plan_free(&p);
    moeq_model_close(m);
    tool_measure_free(&mo);
    return rc;
}
