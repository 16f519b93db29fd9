/* Tokenizer throughput on one core: MB/s of text through moeq_tokenize for each reference
 * tokenizer, against the 5 MB/s target and against the rate of a PCRE2 scan of the
 * same text with the GPT-2 regex alone (the pre-tokenizer's floor), both measured in this run.
 * usage: bench_tokenizer TEXT [TOKENIZER.json ...]. Prints one line per tokenizer and JSON. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "moeq_core.h"
#include "moeq_tokenizer.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    if (fread(p, 1, (size_t)n, f) != (size_t)n) { perror(path); exit(2); }
    fclose(f);
    *len = (size_t)n;
    return p;
}

/* Repeats a measurement until 0.5 s passed; returns MB/s. */
#define RATE(bytes, stmt)                                                                 \
    ({                                                                                    \
        int reps_ = 0;                                                                    \
        double t0_ = moeq_now(), el_;                                                     \
        do { stmt; reps_++; el_ = moeq_now() - t0_; } while (el_ < 0.5);                  \
        (double)(bytes) * reps_ / el_ / 1e6;                                              \
    })

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: bench_tokenizer TEXT TOKENIZER.json...\n"); return 1; }
    size_t len;
    char *text = slurp(argv[1], &len);
    /* the regex floor: every GPT-2 pre-token found by PCRE2 JIT, nothing else */
    static const char gpt2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)gpt2, sizeof gpt2 - 1, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    volatile size_t sink = 0;
    double re_mbs = RATE(len, {
        size_t off = 0;
        while (off < len && pcre2_match(re, (PCRE2_SPTR)text, len, off, PCRE2_NO_UTF_CHECK, md, NULL) >= 0) {
            off = pcre2_get_ovector_pointer(md)[1];
            sink++;
        }
    });
    printf("text %s: %zu bytes; PCRE2 GPT-2 regex scan alone %.1f MB/s\n", argv[1], len, re_mbs);
    printf("{\"text_bytes\":%zu,\"regex_mb_per_s\":%.3f,\"tokenizers\":[", len, re_mbs);
    fflush(stdout);
    for (int i = 2; i < argc; i++) {
        moeq_tokenizer *t;
        moeq_error err = {0};
        double l0 = moeq_now();
        if (moeq_tokenizer_load(argv[i], &t, &err) != MOEQ_OK) { fprintf(stderr, "%s\n", err.detail); return 2; }
        double load_s = moeq_now() - l0;
        int32_t *ids = NULL;
        int64_t n = 0;
        double mbs = RATE(len, {
            free(ids);
            if (moeq_tokenize(t, text, len, 1, &ids, &n, &err) != MOEQ_OK) { fprintf(stderr, "%s\n", err.detail); return 2; }
        });
        free(ids);
        fprintf(stderr, "  %-45s %7.2f MB/s  %.2fx the 5 MB/s target  %.3f of the regex scan  %lld tokens  load %.3f s\n",
                argv[i], mbs, mbs / 5.0, mbs / re_mbs, (long long)n, load_s);
        printf("%s{\"tokenizer\":\"%s\",\"mb_per_s\":%.3f,\"ratio_to_target\":%.3f,\"ratio_to_regex\":%.4f,\"tokens\":%lld,\"load_s\":%.4f}",
               i > 2 ? "," : "", argv[i], mbs, mbs / 5.0, mbs / re_mbs, (long long)n, load_s);
        moeq_tokenizer_free(t);
    }
    printf("],\"peak_rss_bytes\":%llu}\n", (unsigned long long)moeq_peak_rss());
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    free(text);
    return 0;
}
