/* Status names, exit-code mapping and the detail message every error carries. */
#include "moeq_status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *moeq_status_str(moeq_status code)
{
    switch (code) {
    case MOEQ_OK: return "ok";
    case MOEQ_ERR_MISUSE: return "invalid argument";
    case MOEQ_ERR_FORMAT: return "format error";
    case MOEQ_ERR_UNSUPPORTED: return "unsupported";
    case MOEQ_ERR_RANGE: return "out of range";
    case MOEQ_ERR_IO: return "I/O error";
    case MOEQ_ERR_NOMEM: return "out of memory";
    case MOEQ_ERR_NUMERIC: return "numerical failure";
    case MOEQ_ERR_DEPENDENCY: return "library error";
    case MOEQ_ERR_NOT_FOUND: return "not found";
    }
    return "unknown status";
}

int moeq_status_exit_code(moeq_status code)
{
    switch (code) {
    case MOEQ_OK: return 0;
    case MOEQ_ERR_MISUSE: return 1;
    case MOEQ_ERR_FORMAT:
    case MOEQ_ERR_UNSUPPORTED:
    case MOEQ_ERR_RANGE:
    case MOEQ_ERR_NOT_FOUND: return 2;
    case MOEQ_ERR_NUMERIC: return 3;
    case MOEQ_ERR_IO:
    case MOEQ_ERR_NOMEM:
    case MOEQ_ERR_DEPENDENCY: return 4;
    }
    return 4;
}

moeq_status moeq_fail(moeq_error *err, moeq_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        err->agreed = 0;
        vsnprintf(err->detail, sizeof err->detail, fmt, ap);
        va_end(ap);
    }
    return code;
}

moeq_status moeq_error_prefix(moeq_error *err, const char *fmt, ...)
{
    if (!err) return MOEQ_ERR_MISUSE;
    char prefix[MOEQ_ERROR_DETAIL_MAX], old[MOEQ_ERROR_DETAIL_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->detail, sizeof old);
    old[sizeof old - 1] = '\0';
    /* assembled by hand: long details are cut at the buffer's end, never overflow it */
    size_t cap = sizeof err->detail, pl = strnlen(prefix, cap - 1);
    memcpy(err->detail, prefix, pl);
    size_t pos = pl;
    if (pos + 2 < cap) {
        memcpy(err->detail + pos, ": ", 2);
        pos += 2;
    }
    size_t ol = strnlen(old, cap - 1 - pos);
    memcpy(err->detail + pos, old, ol);
    err->detail[pos + ol] = '\0';
    return err->code;
}

void moeq_error_clear(moeq_error *err)
{
    if (err) {
        err->code = MOEQ_OK;
        err->detail[0] = '\0';
    }
}

static moeq_warn_fn warn_handler;

void moeq_set_warn_handler(moeq_warn_fn fn) { warn_handler = fn; }

void moeq_warn(const char *fmt, ...)
{
    if (!warn_handler) return;
    char msg[MOEQ_ERROR_DETAIL_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    warn_handler(msg);
}
