/* Option handling and output helpers shared by the subcommands. */
#include "common.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "moeq_core.h"
#include "moeq_dist.h"
#include "moeq_model.h"
#include "moeq_safetensors.h"
#include "moeq_tokenizer.h"

#ifdef MOEQ_MPI
#include <mpi.h>
#endif

int tool_common_option(const char *cmd, int argc, char **argv, int *i, tool_common *tc)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--json")) { tc->json = 1; return 1; }
    if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) { tc->quiet = 1; return 1; }
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) { tc->help = 1; return 1; }
    if (!strcmp(a, "--threads")) {
        const char *v = tool_value(cmd, argc, argv, i);
        int64_t n;
        if (!v || tool_parse_int(cmd, "--threads", v, 0, &n)) return -1;
        if (n > 1024) { tool_usage_error(cmd, "--threads %lld is more than 1024", (long long)n); return -1; }
        tc->threads = (int)n;
        return 1;
    }
    return 0;
}

const char *tool_value(const char *cmd, int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        tool_usage_error(cmd, "option %s needs a value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

int tool_parse_int(const char *cmd, const char *opt, const char *s, int64_t min, int64_t *out)
{
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || v < min) {
        tool_usage_error(cmd, "%s wants an integer >= %lld, got '%s'", opt, (long long)min, s);
        return 1;
    }
    *out = v;
    return 0;
}

int tool_check_output(const char *cmd, const char *out)
{
    moeq_error err = {0};
    if (!out || moeq_dist_size() > 1) return 0;
    return moeq_output_dir_check(out, &err) != MOEQ_OK ? tool_report(cmd, &err) : 0;
}

int tool_report(const char *cmd, const moeq_error *err)
{
    int rc = moeq_status_exit_code(err->code);
    if (moeq_dist_size() == 1) {
        fprintf(stderr, "moeq %s: %s: %s\n", cmd, moeq_status_str(err->code), err->detail);
        return rc;
    }
    /* An agreed error is held by every rank, which all return: rank 0 tells it. Any other
     * failure is this rank's alone and the others may be waiting for it: end the job. */
    if (err->agreed) {
        if (moeq_dist_rank() == 0)
            fprintf(stderr, "moeq %s: %s: %s\n", cmd, moeq_status_str(err->code), err->detail);
        return rc;
    }
    fprintf(stderr, "moeq %s: rank %d (%s): %s: %s\n", cmd, moeq_dist_rank(), moeq_dist_host(),
            moeq_status_str(err->code), err->detail);
    fflush(stderr);
#ifdef MOEQ_MPI
    MPI_Abort(MPI_COMM_WORLD, rc);
#endif
    return rc;
}

int tool_usage_error(const char *cmd, const char *fmt, ...)
{
    if (moeq_dist_rank() != 0) return 1;   /* every rank parsed the same arguments */
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "moeq %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see 'moeq %s --help')\n", cmd);
    va_end(ap);
    return 1;
}

int tool_print_json(json_t *obj)
{
    int rc = json_dumpf(obj, stdout, JSON_INDENT(1) | JSON_REAL_PRECISION(10));
    json_decref(obj);
    if (rc != 0 || fputc('\n', stdout) == EOF || fflush(stdout) != 0) {
        fprintf(stderr, "moeq: cannot write JSON to stdout\n");
        return 4;
    }
    return 0;
}

FILE *tool_human(const tool_common *tc)
{
    if (tc->quiet) return NULL;
    return tc->json ? stderr : stdout;
}

int tool_measure_option(const char *cmd, int argc, char **argv, int *i, tool_measure *mo)
{
    const char *a = argv[*i], *v;
    if (!strcmp(a, "--tokens")) return (mo->tokens_path = tool_value(cmd, argc, argv, i)) ? 1 : -1;
    if (!strcmp(a, "--text")) return (mo->text_path = tool_value(cmd, argc, argv, i)) ? 1 : -1;
    if (!strcmp(a, "--measure-tokens"))
        return (v = tool_value(cmd, argc, argv, i)) && !tool_parse_int(cmd, a, v, 2, &mo->max_tokens) ? 1 : -1;
    if (!strcmp(a, "--ctx")) return (v = tool_value(cmd, argc, argv, i)) && !tool_parse_int(cmd, a, v, 2, &mo->ctx) ? 1 : -1;
    return 0;
}

int tool_measure_check(const char *cmd, const tool_measure *mo, const char *what)
{
    if (!mo->tokens_path != !mo->text_path) return 0;
    return tool_usage_error(cmd, "%s needs validation tokens: --tokens F or --text F (one of them)", what);
}

int tool_measure_load(tool_measure *mo, const char *path, const moeq_model *m, moeq_error *err)
{
    int64_t n = 0;
    moeq_status st = moeq_model_open(path, &mo->model, err);
    if (!st && mo->tokens_path) st = moeq_tokens_load(mo->tokens_path, moeq_model_config(m)->vocab, &mo->ids, &n, err);
    if (!st && mo->text_path) st = moeq_model_tokenize_file(m, mo->text_path, &mo->ids, &n, err);
    mo->n = n < mo->max_tokens ? n : mo->max_tokens;
    return (int)st;
}

void tool_measure_free(tool_measure *mo)
{
    moeq_model_close(mo->model);
    free(mo->ids);
    mo->model = NULL;
    mo->ids = NULL;
}
