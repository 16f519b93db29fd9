/* Task files for moeq eval --task: jsonl, and llama.cpp's hellaswag and winogrande files.
 * Each parser builds the requests exactly as tests/fixtures/tasks/make_task_refs.py does (the
 * transformers reference) and rejects what that script or llama.cpp would silently skip,
 * misread or crash on, naming the file and line. */
#include "moeq_eval.h"
#include "moeq_core.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define TASK_FILE_MAX ((uint64_t)1 << 31)

int moeq_task_format_from_name(const char *name)
{
    if (!strcmp(name, "jsonl")) return MOEQ_TASK_JSONL;
    if (!strcmp(name, "hellaswag")) return MOEQ_TASK_HELLASWAG;
    if (!strcmp(name, "winogrande")) return MOEQ_TASK_WINOGRANDE;
    return -1;
}

const char *moeq_task_format_name(moeq_task_format f)
{
    return f == MOEQ_TASK_JSONL ? "jsonl" : f == MOEQ_TASK_HELLASWAG ? "hellaswag" : "winogrande";
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

int moeq_task_format_from_path(const char *path)
{
    if (ends_with(path, ".jsonl") || ends_with(path, ".json")) return MOEQ_TASK_JSONL;
    if (ends_with(path, ".csv")) return MOEQ_TASK_WINOGRANDE;
    if (ends_with(path, ".txt")) return MOEQ_TASK_HELLASWAG;
    return -1;
}

void moeq_tasks_free(moeq_task_set *ts)
{
    if (!ts) return;
    for (int64_t i = 0; i < ts->n; i++) {
        moeq_task *t = &ts->tasks[i];
        for (int32_t k = 0; k < t->n_req; k++) {
            free(t->req[k].context);
            free(t->req[k].continuation);
        }
        free(t->req);
        free(t->id);
    }
    free(ts->tasks);
    free(ts);
}

/* A line of the file: [p, p + len), 1-based number. */
typedef struct line_t {
    const char *p;
    size_t len;
    int64_t no;
} line_t;

typedef struct parser {
    const char *path;
    moeq_task_set *ts;
    int64_t cap;
    moeq_error *err;
} parser;

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static char *cat2(const char *a, size_t na, const char *b, size_t nb)
{
    char *d = malloc(na + nb + 1);
    if (d) {
        memcpy(d, a, na);
        memcpy(d + na, b, nb);
        d[na + nb] = '\0';
    }
    return d;
}

static moeq_status oom(parser *ps)
{
    return moeq_fail(ps->err, MOEQ_ERR_NOMEM, "%s: out of memory reading tasks", ps->path);
}

/* Appends an empty task with n_req requests; NULL when out of memory. */
static moeq_task *new_task(parser *ps, int64_t line, int32_t n_req)
{
    moeq_task_set *ts = ps->ts;
    if (ts->n == ps->cap) {
        int64_t cap = ps->cap ? 2 * ps->cap : 64;
        moeq_task *nt = realloc(ts->tasks, (size_t)cap * sizeof *nt);
        if (!nt) return NULL;
        ts->tasks = nt;
        ps->cap = cap;
    }
    moeq_task *t = &ts->tasks[ts->n];
    memset(t, 0, sizeof *t);
    t->req = calloc((size_t)n_req, sizeof *t->req);
    if (!t->req) return NULL;
    ts->n++;   /* counted now so that moeq_tasks_free releases it whatever fails next */
    t->n_req = n_req;
    t->line = line;
    return t;
}

/* Well-formed UTF-8 without NUL (the strings become C strings and go to the tokenizer, which
 * takes valid UTF-8 only): the offset of the first bad byte, or -1. */
static int64_t bad_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c == 0) return (int64_t)i;
        if (c < 0x80) { i++; continue; }
        size_t k;
        unsigned min;
        if (c >= 0xC2 && c <= 0xDF) { k = 1; min = 0x80; }
        else if (c >= 0xE0 && c <= 0xEF) { k = 2; min = 0x800; }
        else if (c >= 0xF0 && c <= 0xF4) { k = 3; min = 0x10000; }
        else return (int64_t)i;
        if (n - i <= k) return (int64_t)i;
        unsigned cp = c & (0x3F >> k);
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return (int64_t)i;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return (int64_t)i;
        i += k + 1;
    }
    return -1;
}

/* Splits data at '\n' (the pieces of Python's str.split("\n")); *n lines in a malloc'ed array. */
static moeq_status split_lines(parser *ps, const char *data, size_t len, line_t **out, int64_t *n)
{
    int64_t count = 1;
    for (size_t i = 0; i < len; i++) count += data[i] == '\n';
    line_t *L = malloc((size_t)count * sizeof *L);
    if (!L) return oom(ps);
    int64_t k = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++)
        if (i == len || data[i] == '\n') {
            L[k].p = data + start;
            L[k].len = i - start;
            L[k].no = k + 1;
            k++;
            start = i + 1;
        }
    *out = L;
    *n = count;
    return MOEQ_OK;
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* A small non-negative decimal integer between optional whitespace (as Python's int() takes
 * it); -1 when the text is anything else. */
static int64_t parse_index(const char *p, size_t n)
{
    size_t a = 0, b = n;
    while (a < b && is_ws(p[a])) a++;
    while (b > a && is_ws(p[b - 1])) b--;
    if (a == b || b - a > 9) return -1;
    int64_t v = 0;
    for (size_t i = a; i < b; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

/* ---- jsonl -------------------------------------------------------------------------------- */

static moeq_status parse_jsonl(parser *ps, const line_t *L, int64_t nl)
{
    const char *path = ps->path;
    moeq_error *err = ps->err;
    for (int64_t i = 0; i < nl; i++) {
        const line_t *ln = &L[i];
        size_t a = 0;
        while (a < ln->len && is_ws(ln->p[a])) a++;
        if (a == ln->len) continue;   /* blank lines are skipped */
        json_error_t je;
        json_t *o = json_loadb(ln->p, ln->len, JSON_REJECT_DUPLICATES, &je);
        if (!o)
            return moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: not JSON: %s (column %d)", path,
                             (long long)ln->no, je.text, je.column);
        moeq_status st = MOEQ_OK;
        json_t *ctx = json_object_get(o, "context"), *ch = json_object_get(o, "choices");
        json_t *gold = json_object_get(o, "gold"), *id = json_object_get(o, "id");
        size_t nch = json_is_array(ch) ? json_array_size(ch) : 0;
        if (!json_is_object(o))
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: a task must be a JSON object", path, (long long)ln->no);
        else if (!ctx)
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: missing field 'context'", path, (long long)ln->no);
        else if (!json_is_string(ctx))
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: 'context' is not a string", path, (long long)ln->no);
        else if (json_string_length(ctx) == 0)
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: 'context' is empty", path, (long long)ln->no);
        else if (!ch)
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: missing field 'choices'", path, (long long)ln->no);
        else if (!json_is_array(ch))
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: 'choices' is not an array", path, (long long)ln->no);
        else if (nch < 2)
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: 'choices' has %zu entries; a task needs at least 2",
                           path, (long long)ln->no, nch);
        else if (nch > 1024)
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: 'choices' has %zu entries, more than 1024", path,
                           (long long)ln->no, nch);
        else if (!gold)
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: missing field 'gold'", path, (long long)ln->no);
        else if (!json_is_integer(gold))
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: 'gold' is not an integer", path, (long long)ln->no);
        else if (json_integer_value(gold) < 0 || json_integer_value(gold) >= (json_int_t)nch)
            st = moeq_fail(err, MOEQ_ERR_RANGE, "%s:%lld: 'gold' is %lld, outside 0..%zu", path, (long long)ln->no,
                           (long long)json_integer_value(gold), nch - 1);
        else if (id && !json_is_string(id) && !json_is_integer(id))
            st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: 'id' is neither a string nor an integer", path,
                           (long long)ln->no);
        for (size_t k = 0; st == MOEQ_OK && k < nch; k++) {
            json_t *c = json_array_get(ch, k);
            if (!json_is_string(c))
                st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: choice %zu is not a string", path, (long long)ln->no, k);
            else if (json_string_length(c) == 0)
                st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: choice %zu is empty", path, (long long)ln->no, k);
        }
        moeq_task *t = NULL;
        if (st == MOEQ_OK && !(t = new_task(ps, ln->no, (int32_t)nch))) st = oom(ps);
        if (st == MOEQ_OK) {
            t->gold = (int32_t)json_integer_value(gold);
            char num[32];
            snprintf(num, sizeof num, "%lld", (long long)(id && json_is_integer(id) ? json_integer_value(id)
                                                                                     : ps->ts->n - 1));
            t->id = id && json_is_string(id) ? dup_n(json_string_value(id), json_string_length(id))
                                             : dup_n(num, strlen(num));
            if (!t->id) st = oom(ps);
            for (size_t k = 0; st == MOEQ_OK && k < nch; k++) {
                json_t *c = json_array_get(ch, k);
                t->req[k].context = dup_n(json_string_value(ctx), json_string_length(ctx));
                t->req[k].continuation = dup_n(json_string_value(c), json_string_length(c));
                if (!t->req[k].context || !t->req[k].continuation) st = oom(ps);
            }
        }
        json_decref(o);
        if (st != MOEQ_OK) return st;
    }
    return MOEQ_OK;
}

/* ---- hellaswag (llama.cpp): 6 lines per task ------------------------------------------------- */

static moeq_status parse_hellaswag(parser *ps, const line_t *L, int64_t nl)
{
    const char *path = ps->path;
    if (nl > 0 && L[nl - 1].len == 0) nl--;   /* the file's final newline */
    if (nl % 6)
        return moeq_fail(ps->err, MOEQ_ERR_FORMAT, "%s:%lld: the last task has %lld of its 6 lines (context, "
                         "gold 0..3, 4 endings)", path, (long long)(nl - nl % 6 + 1), (long long)(nl % 6));
    for (int64_t i = 0; i < nl; i += 6) {
        if (L[i].len == 0)
            return moeq_fail(ps->err, MOEQ_ERR_FORMAT, "%s:%lld: the context is empty", path, (long long)L[i].no);
        int64_t gold = parse_index(L[i + 1].p, L[i + 1].len);
        if (gold < 0 || gold > 3)
            return moeq_fail(ps->err, MOEQ_ERR_RANGE, "%s:%lld: the gold ending is '%.*s', not 0..3", path,
                             (long long)L[i + 1].no, (int)(L[i + 1].len > 40 ? 40 : L[i + 1].len), L[i + 1].p);
        for (int k = 0; k < 4; k++)
            if (L[i + 2 + k].len == 0)
                return moeq_fail(ps->err, MOEQ_ERR_FORMAT, "%s:%lld: ending %d is empty", path,
                                 (long long)L[i + 2 + k].no, k);
        moeq_task *t = new_task(ps, L[i].no, 4);
        if (!t) return oom(ps);
        t->gold = (int32_t)gold;
        char num[32];
        snprintf(num, sizeof num, "%lld", (long long)(i / 6));
        if (!(t->id = dup_n(num, strlen(num)))) return oom(ps);
        for (int k = 0; k < 4; k++) {
            t->req[k].context = dup_n(L[i].p, L[i].len);
            t->req[k].continuation = cat2(" ", 1, L[i + 2 + k].p, L[i + 2 + k].len);
            if (!t->req[k].context || !t->req[k].continuation) return oom(ps);
        }
    }
    return MOEQ_OK;
}

/* ---- winogrande (llama.cpp CSV) ------------------------------------------------------------
 * index,sentence,option1,option2,answer; the first four commas outside double quotes separate
 * the fields, a quoted sentence loses its quotes (no other unquoting, as llama.cpp). The
 * sentence is cut at its first '_': requests (first + option_i, " " + second.strip()), the
 * harness's partial scoring; answer 1 or 2. A header line (answer field "answer") is skipped. */

static moeq_status parse_winogrande(parser *ps, const line_t *L, int64_t nl)
{
    const char *path = ps->path;
    moeq_error *err = ps->err;
    int seen = 0;
    for (int64_t i = 0; i < nl; i++) {
        const char *p = L[i].p;
        size_t n = L[i].len, c[4];
        int64_t no = L[i].no;
        if (n == 0) continue;
        int nc = 0, quoted = 0;
        for (size_t j = 0; j < n && nc < 4; j++) {
            if (!quoted && p[j] == ',') c[nc++] = j;
            else if (p[j] == '"') quoted = !quoted;
        }
        if (nc < 4)
            return moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: %d of the 4 commas of index,sentence,option1,option2,"
                             "answer", path, (long long)no, nc);
        const char *ans = p + c[3] + 1;
        size_t nans = n - c[3] - 1;
        if (!seen++ && nans == 6 && !memcmp(ans, "answer", 6)) continue;
        const char *sent = p + c[0] + 1;
        size_t nsent = c[1] - c[0] - 1;
        if (nsent > 0 && sent[0] == '"') {
            if (nsent < 2 || sent[nsent - 1] != '"')
                return moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: the quoted sentence does not end in a quote "
                                 "before its comma", path, (long long)no);
            sent++;
            nsent -= 2;
        }
        const char *us = memchr(sent, '_', nsent);
        if (!us)
            return moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: the sentence has no '_' to fill", path, (long long)no);
        const char *o[2] = {p + c[1] + 1, p + c[2] + 1};
        size_t no_len[2] = {c[2] - c[1] - 1, c[3] - c[2] - 1};
        for (int k = 0; k < 2; k++)
            if (no_len[k] == 0)
                return moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: option%d is empty", path, (long long)no, k + 1);
        int64_t a = parse_index(ans, nans);
        if (a != 1 && a != 2)
            return moeq_fail(err, MOEQ_ERR_RANGE, "%s:%lld: the answer is '%.*s', not 1 or 2", path, (long long)no,
                             (int)(nans > 40 ? 40 : nans), ans);
        size_t nfirst = (size_t)(us - sent);
        const char *second = us + 1;
        size_t nsecond = nsent - nfirst - 1;
        while (nsecond && is_ws(second[0])) second++, nsecond--;
        while (nsecond && is_ws(second[nsecond - 1])) nsecond--;
        moeq_task *t = new_task(ps, no, 2);
        if (!t) return oom(ps);
        t->gold = (int32_t)(a - 1);
        if (!(t->id = dup_n(p, c[0]))) return oom(ps);
        for (int k = 0; k < 2; k++) {
            t->req[k].context = cat2(sent, nfirst, o[k], no_len[k]);
            t->req[k].continuation = cat2(" ", 1, second, nsecond);
            if (!t->req[k].context || !t->req[k].continuation) return oom(ps);
        }
    }
    return MOEQ_OK;
}

moeq_status moeq_tasks_parse(const char *data, size_t len, const char *path, moeq_task_format fmt,
                             moeq_task_set **out, moeq_error *err)
{
    *out = NULL;
    parser ps = {.path = path, .err = err};
    int64_t bad = bad_utf8((const unsigned char *)data, len);
    if (bad >= 0) {
        int64_t line = 1;
        for (int64_t i = 0; i < bad; i++) line += data[i] == '\n';
        return moeq_fail(err, MOEQ_ERR_FORMAT, "%s:%lld: %s at byte offset %lld", path, (long long)line,
                         data[bad] ? "invalid UTF-8" : "a NUL byte", (long long)bad);
    }
    if (!(ps.ts = calloc(1, sizeof *ps.ts))) return oom(&ps);
    ps.ts->format = fmt;
    line_t *L = NULL;
    int64_t nl = 0;
    moeq_status st = split_lines(&ps, data, len, &L, &nl);
    if (st == MOEQ_OK) {
        if (fmt == MOEQ_TASK_JSONL) st = parse_jsonl(&ps, L, nl);
        else if (fmt == MOEQ_TASK_HELLASWAG) st = parse_hellaswag(&ps, L, nl);
        else if (fmt == MOEQ_TASK_WINOGRANDE) st = parse_winogrande(&ps, L, nl);
        else st = moeq_fail(err, MOEQ_ERR_MISUSE, "unknown task format %d", (int)fmt);
    }
    if (st == MOEQ_OK && ps.ts->n == 0)
        st = moeq_fail(err, MOEQ_ERR_FORMAT, "%s: no tasks in this %s file", path, moeq_task_format_name(fmt));
    free(L);
    if (st != MOEQ_OK) {
        moeq_tasks_free(ps.ts);
        return st;
    }
    *out = ps.ts;
    return MOEQ_OK;
}

moeq_status moeq_tasks_load(const char *path, moeq_task_format fmt, moeq_task_set **out,
                            moeq_error *err)
{
    *out = NULL;
    void *buf = NULL;
    size_t len = 0;
    moeq_status st = moeq_read_file(path, TASK_FILE_MAX, "a task file", &buf, &len, err);
    if (st == MOEQ_OK) st = moeq_tasks_parse(buf, len, path, fmt, out, err);
    free(buf);
    return st;
}
