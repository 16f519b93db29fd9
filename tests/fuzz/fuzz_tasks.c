/* libFuzzer target: the task parsers (moeq_tasks_parse) on arbitrary bytes. The first byte
 * picks the format (jsonl, hellaswag, winogrande), the rest is the file. Any status is fine;
 * crashes, sanitizer reports and an accepted task set breaking the invariants scoring relies
 * on are not. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moeq_eval.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    moeq_task_format fmt = (moeq_task_format)(data[0] % 3);
    moeq_task_set *ts = NULL;
    moeq_error err;
    moeq_status st = moeq_tasks_parse((const char *)data + 1, size - 1, "fuzz.tasks", fmt, &ts, &err);
    if (st == MOEQ_OK) {
        if (!ts || ts->n < 1) abort();
        for (int64_t i = 0; i < ts->n; i++) {
            const moeq_task *t = &ts->tasks[i];
            if (t->n_req < 2 || t->gold < 0 || t->gold >= t->n_req || !t->id || t->line < 1) abort();
            for (int32_t k = 0; k < t->n_req; k++)
                if (!t->req[k].context[0] || !t->req[k].continuation[0]) abort();
        }
        moeq_tasks_free(ts);
    } else if (ts || memchr(err.detail, '\0', sizeof err.detail) == NULL || err.code != st ||
               !strstr(err.detail, "fuzz.tasks")) {
        abort();
    }
    return 0;
}
