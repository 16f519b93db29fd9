/* Shared pieces of the moeq subcommands: common options, error reporting, JSON output. */
#ifndef MOEQ_TOOLS_COMMON_H
#define MOEQ_TOOLS_COMMON_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include "moeq_status.h"

typedef struct tool_common {
    int json;       /* --json: result as JSON on stdout */
    int quiet;      /* -q: no human text */
    int threads;    /* --threads N (0: all cores) */
    int help;       /* --help */
    int progress;   /* progress lines: stderr is a terminal and not quiet */
} tool_common;

/* Consumes a common option at argv[*i]; returns 1 if consumed, 0 if not, -1 on a bad value. */
int tool_common_option(const char *cmd, int argc, char **argv, int *i, tool_common *tc);
/* Value of an option taking one argument ("--ctx N"); prints a usage error and returns NULL
 * when missing. */
const char *tool_value(const char *cmd, int argc, char **argv, int *i);
/* Parses a positive integer option value; returns 0 on success. */
int tool_parse_int(const char *cmd, const char *opt, const char *s, int64_t min, int64_t *out);
/* Prints "moeq CMD: <status>: <detail>" on stderr; returns the exit code for the status. */
int tool_report(const char *cmd, const moeq_error *err);
/* 0 when OUT's directory exists, else reports it (exit 4, naming the directory) and returns
 * the exit code: every command with -o checks this before any work. Under mpirun the
 * writers' own agreed errors report it instead. */
int tool_check_output(const char *cmd, const char *out);
/* Usage error: prints the message and a pointer to --help; returns 1. */
int tool_usage_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Writes a JSON object to stdout (sorted keys kept in insertion order), newline-terminated,
 * and frees it. Returns 0, or 4 on an output error. */
int tool_print_json(json_t *obj);
/* Human text goes to stdout without --json and to stderr with it; nothing with -q. */
FILE *tool_human(const tool_common *tc);

/* plan's measured costs (docs/plan.md): --tokens F | --text F, --measure-tokens N, --ctx N. */
struct moeq_model;
typedef struct tool_measure {
    const char *tokens_path, *text_path;
    int64_t max_tokens, ctx;            /* defaults 4096, 512 */
    struct moeq_model *model;           /* the second open that gets the overrides */
    int32_t *ids;
    int64_t n;                          /* tokens used: min(loaded, max_tokens) */
} tool_measure;
#define TOOL_MEASURE_INIT { NULL, NULL, 4096, 512, NULL, NULL, 0 }
/* Consumes one of those options at argv[*i]: 1 if consumed, 0 if not, -1 on a bad value. */
int tool_measure_option(const char *cmd, int argc, char **argv, int *i, tool_measure *mo);
/* 0 when exactly one of --tokens/--text was given, else a usage error (1) naming what needs them. */
int tool_measure_check(const char *cmd, const tool_measure *mo, const char *what);
/* Opens path again (mo->model) and loads the tokens with m's vocabulary or tokenizer. */
int tool_measure_load(tool_measure *mo, const char *path, const struct moeq_model *m, moeq_error *err);
void tool_measure_free(tool_measure *mo);

int cmd_inspect(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_bench_eval(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_spectral(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_plan_gguf(int argc, char **argv);   /* moeq plan --target gguf */
int cmd_unpack(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_export(int argc, char **argv);

#endif
