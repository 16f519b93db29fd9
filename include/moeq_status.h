/* Status codes and error details shared by every libmoeq call.
 * Codes are pinned: scripts and tests compare them. Library code never prints or exits;
 * it fills a moeq_error whose detail names the file, the tensor or field, and the byte offset. */
#ifndef MOEQ_STATUS_H
#define MOEQ_STATUS_H

#include <stddef.h>

typedef enum moeq_status {
    MOEQ_OK = 0,
    MOEQ_ERR_MISUSE = 1,      /* invalid argument from the caller (exit 1) */
    MOEQ_ERR_FORMAT = 2,      /* corrupt or inconsistent input (exit 2) */
    MOEQ_ERR_UNSUPPORTED = 3, /* valid input moeq does not handle: dtype, model_type (exit 2) */
    MOEQ_ERR_RANGE = 4,       /* a value out of its allowed range: token id >= vocab (exit 2) */
    MOEQ_ERR_IO = 5,          /* open/read/write/mmap failure (exit 4) */
    MOEQ_ERR_NOMEM = 6,       /* allocation failure (exit 4) */
    MOEQ_ERR_NUMERIC = 7,     /* NaN/Inf or a failed factorization (exit 3) */
    MOEQ_ERR_DEPENDENCY = 8,  /* a library we call reported an error (exit 4) */
    MOEQ_ERR_NOT_FOUND = 9    /* an input file or directory does not exist (exit 2) */
} moeq_status;

#define MOEQ_ERROR_DETAIL_MAX 1024

typedef struct moeq_error {
    moeq_status code;
    char detail[MOEQ_ERROR_DETAIL_MAX];
    int agreed;           /* set by moeq_dist_agree: every MPI rank holds this same error */
} moeq_error;

/* Short fixed name of a code, e.g. "format error". */
const char *moeq_status_str(moeq_status code);
/* Process exit code of the CLI contract (0 ok, 1 usage, 2 bad input, 3 numeric, 4 I/O). */
int moeq_status_exit_code(moeq_status code);
/* Records code and a printf-style detail in err (err may be NULL); returns code. */
moeq_status moeq_fail(moeq_error *err, moeq_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Prefixes the existing detail with more context ("while loading X: ..."). Returns err->code. */
moeq_status moeq_error_prefix(moeq_error *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void moeq_error_clear(moeq_error *err);

/* Warnings: input that transformers reads without complaint but that is off (an index's
 * metadata.total_size disagreeing with its shards). The library never prints; it hands the
 * text to the handler the program installed (tools/moeq.c prints "moeq: warning: ..."), or
 * drops it when none is. Not thread-safe to change while a command runs. */
typedef void (*moeq_warn_fn)(const char *msg);
void moeq_set_warn_handler(moeq_warn_fn fn);
void moeq_warn(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

#endif
