/* moeq prune MODEL --ratio R [--score ...] [--calib F] -o OUT: removes routed-expert channels or
 * whole experts (docs/prune.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common.h"
#include "moeq_core.h"
#include "moeq_gptq.h"
#include "moeq_prune.h"

static const char *PRUNE_HELP =
    "usage: moeq prune MODEL --ratio R [--score camera|hessian|magnitude|expert] [--calib F.h5]\n"
    "                  [--scope layer|global] [--min-width N] [--multiple M] [--rho X] [--no-compensate]\n"
    "                  [--layout zero-fill|ragged] -o OUT [--json] [-q] [--threads N]\n\n"
    "Removes the fraction R of routed-expert channels (micro-experts: a gate row, an up row and a\n"
    "down column) or, with --score expert, of whole experts, lowest scores first.\n"
    "  --ratio R          in (0, 1)\n"
    "  --score S          camera (default): ||down_c||^2 ((1-rho) sum phi^2 + rho max phi^2);\n"
    "                     hessian: OBS saliency ||down_c||^2 / [H^-1]_cc on the down Hessian, channels\n"
    "                     removed one at a time with the OBS update of the columns left;\n"
    "                     magnitude: ||gate_c|| ||up_c|| ||down_c|| (no calibration);\n"
    "                     expert: routing frequency x mean output norm, whole experts\n"
    "  --calib F.h5       from moeq calibrate on this model (all scores but magnitude)\n"
    "  --scope S          rank per layer (default) or over all MoE layers\n"
    "  --min-width N      channel scores: every expert keeps at least N channels (default 0: an\n"
    "                     expert may go entirely; at least top_k experts per layer always stay)\n"
    "  --multiple M       widths rounded up to a multiple of M (32 for moeq quantize's code\n"
    "                     blocks with the ragged layout): slightly fewer channels go\n"
    "  --rho X            camera's weight of the max term (default 0.9)\n"
    "  --no-compensate    hessian: no OBS update (diagonal saliency ||down_c||^2 H_cc)\n"
    "  --layout L         zero-fill (default): uniform widths, removed channels zero, loadable by\n"
    "                     transformers; ragged: per-expert tensors of their pruned width (moeq only:\n"
    "                     eval, quantize, plan; smaller and faster)\n"
    "  -o OUT             output directory (absent or empty); config.json gets moeq_expert_widths\n"
    "JSON: ratio, score, removed_channels, removed_experts, params_before, params_after,\n"
    "bytes_before, bytes_after, channels_total, experts_total, widths, seconds.\n";

int cmd_prune(int argc, char **argv)
{
    tool_common tc = {0};
    const char *model = NULL, *out = NULL, *calib_path = NULL, *score = "camera", *scope = "layer",
               *layout = "zero-fill";
    moeq_prune_opts o = { .rho = -1, .compensate = 1, .ratio = -1 };
    int have_ratio = 0;
    for (int i = 1; i < argc; i++) {
        int r = tool_common_option("prune", argc, argv, &i, &tc);
        if (r < 0) return 1;
        if (r) continue;
        const char *v;
        if (!strcmp(argv[i], "-o")) {
            if (!(out = tool_value("prune", argc, argv, &i))) return 1;
        } else if (!strcmp(argv[i], "--ratio")) {
            if (!(v = tool_value("prune", argc, argv, &i))) return 1;
            char *end;
            o.ratio = strtod(v, &end);
            if (end == v || *end) return tool_usage_error("prune", "--ratio wants a number (got '%s')", v);
            have_ratio = 1;
        } else if (!strcmp(argv[i], "--score")) {
            if (!(score = tool_value("prune", argc, argv, &i))) return 1;
        } else if (!strcmp(argv[i], "--calib")) {
            if (!(calib_path = tool_value("prune", argc, argv, &i))) return 1;
        } else if (!strcmp(argv[i], "--scope")) {
            if (!(scope = tool_value("prune", argc, argv, &i))) return 1;
        } else if (!strcmp(argv[i], "--layout")) {
            if (!(layout = tool_value("prune", argc, argv, &i))) return 1;
        } else if (!strcmp(argv[i], "--min-width")) {
            if (!(v = tool_value("prune", argc, argv, &i))) return 1;
            if (tool_parse_int("prune", "--min-width", v, 0, &o.min_width)) return 1;
        } else if (!strcmp(argv[i], "--multiple")) {
            if (!(v = tool_value("prune", argc, argv, &i))) return 1;
            if (tool_parse_int("prune", "--multiple", v, 1, &o.multiple)) return 1;
        } else if (!strcmp(argv[i], "--rho")) {
            if (!(v = tool_value("prune", argc, argv, &i))) return 1;
            char *end;
            o.rho = strtod(v, &end);
            if (end == v || *end || !(o.rho >= 0 && o.rho <= 1))
                return tool_usage_error("prune", "--rho wants a number in [0, 1] (got '%s')", v);
        } else if (!strcmp(argv[i], "--no-compensate")) {
            o.compensate = 0;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return tool_usage_error("prune", "unknown option %s", argv[i]);
        } else {
            if (model) return tool_usage_error("prune", "one MODEL only (got '%s' and '%s')", model, argv[i]);
            model = argv[i];
        }
    }
    if (tc.help) { fputs(PRUNE_HELP, stdout); return 0; }
    if (!model) return tool_usage_error("prune", "missing MODEL");
    if (!have_ratio) return tool_usage_error("prune", "missing --ratio R");
    if (!out) return tool_usage_error("prune", "missing -o OUT");
    int orc = tool_check_output("prune", out);
    if (orc) return orc;
    if (!strcmp(score, "magnitude")) o.score = MOEQ_PRUNE_MAGNITUDE;
    else if (!strcmp(score, "camera")) o.score = MOEQ_PRUNE_CAMERA;
    else if (!strcmp(score, "hessian")) o.score = MOEQ_PRUNE_HESSIAN;
    else if (!strcmp(score, "expert")) o.score = MOEQ_PRUNE_EXPERT;
    else return tool_usage_error("prune", "--score wants camera, hessian, magnitude or expert (got '%s')", score);
    if (!strcmp(scope, "layer")) o.scope_global = 0;
    else if (!strcmp(scope, "global")) o.scope_global = 1;
    else return tool_usage_error("prune", "--scope wants layer or global (got '%s')", scope);
    if (!strcmp(layout, "zero-fill")) o.layout = MOEQ_PRUNE_ZERO_FILL;
    else if (!strcmp(layout, "ragged")) o.layout = MOEQ_PRUNE_RAGGED;
    else return tool_usage_error("prune", "--layout wants zero-fill or ragged (got '%s')", layout);
    if (o.score != MOEQ_PRUNE_MAGNITUDE && !calib_path)
        return tool_usage_error("prune", "--score %s needs --calib F.h5 (from moeq calibrate)", score);
    moeq_threads_init(tc.threads);
    o.threads = tc.threads;
    o.calib_path = calib_path;
    moeq_error err = {0};
    if (!(o.ratio > 0 && o.ratio < 1)) {
        moeq_fail(&err, MOEQ_ERR_RANGE, "--ratio %s is outside (0, 1)", argv[0] ? "R" : "");
        snprintf(err.detail, sizeof err.detail, "--ratio %g is outside (0, 1): the fraction of channels (or experts) to remove", o.ratio);
        return tool_report("prune", &err);
    }
    moeq_model *m = NULL;
    if (moeq_model_open(model, &m, &err) != MOEQ_OK) return tool_report("prune", &err);
    moeq_calib_file *cf = NULL;
    if (calib_path && moeq_calib_file_open(calib_path, m, &cf, &err) != MOEQ_OK) {
        moeq_model_close(m);
        return tool_report("prune", &err);
    }
    moeq_prune_result res;
    moeq_status st = moeq_prune(m, cf, &o, out, &res, &err);
    moeq_calib_file_close(cf);
    if (st) {
        moeq_model_close(m);
        return tool_report("prune", &err);
    }
    FILE *h = tool_human(&tc);
    if (h) {
        fprintf(h, "%s -> %s: --score %s --ratio %g (%s): removed %lld of %lld channels, %lld of %lld experts\n",
                model, out, score, o.ratio, o.scope_global ? "global" : "per layer", (long long)res.removed_channels,
                (long long)res.channels_total, (long long)res.removed_experts, (long long)res.experts_total);
        fprintf(h, "  parameters %.3f M -> %.3f M (%.1f%%), bytes %.2f MiB -> %.2f MiB (%s layout writes %.2f MiB), %.2f s\n",
                res.params_before / 1e6, res.params_after / 1e6,
                100.0 * (double)res.params_after / (double)(res.params_before ? res.params_before : 1),
                res.bytes_before / 1048576.0, res.bytes_after / 1048576.0, layout, res.bytes_written / 1048576.0,
                res.seconds);
    }
    int rc = 0;
    if (tc.json) {
        const moeq_config *c = moeq_model_config(m);
        json_t *j = json_object();
        json_object_set_new(j, "output", json_string(out));
        json_object_set_new(j, "score", json_string(score));
        json_object_set_new(j, "ratio", json_real(o.ratio));
        json_object_set_new(j, "scope", json_string(scope));
        json_object_set_new(j, "layout", json_string(layout));
        json_object_set_new(j, "removed_channels", json_integer(res.removed_channels));
        json_object_set_new(j, "removed_experts", json_integer(res.removed_experts));
        json_object_set_new(j, "channels_total", json_integer(res.channels_total));
        json_object_set_new(j, "experts_total", json_integer(res.experts_total));
        json_object_set_new(j, "params_before", json_integer(res.params_before));
        json_object_set_new(j, "params_after", json_integer(res.params_after));
        json_object_set_new(j, "bytes_before", json_integer((json_int_t)res.bytes_before));
        json_object_set_new(j, "bytes_after", json_integer((json_int_t)res.bytes_after));
        json_object_set_new(j, "bytes_written", json_integer((json_int_t)res.bytes_written));
        json_t *w = json_array();
        for (int64_t l = 0; l < c->layers; l++) {
            json_t *a = json_array();
            if (c->layer_is_moe[l])
                for (int64_t e = 0; e < c->n_experts; e++) json_array_append_new(a, json_integer(res.widths[l * c->n_experts + e]));
            json_array_append_new(w, a);
        }
        json_object_set_new(j, "widths", w);
        json_object_set_new(j, "seconds", json_real(res.seconds));
        rc = tool_print_json(j);
    }
    moeq_prune_result_free(&res);
    moeq_model_close(m);
    return rc;
}
