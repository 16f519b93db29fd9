/* A minimal test harness: CHECK records a failure and goes on; each test binary prints
 * "PASS name" / "FAIL name" lines that tests/run_tests.sh counts. */
#ifndef MOEQ_HARNESS_H
#define MOEQ_HARNESS_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int harness_failures_in_test;
static int harness_tests_failed;
static int harness_tests_passed;

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);         \
            harness_failures_in_test++;                                                        \
        }                                                                                      \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                   \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "  %s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);         \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
            harness_failures_in_test++;                                                        \
        }                                                                                      \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                  \
    CHECK_MSG(fabs((double)(a) - (double)(b)) <= (tol), "%.9g vs %.9g (tol %.3g)", (double)(a), \
              (double)(b), (double)(tol))

#define RUN_TEST(fn)                                                                           \
    do {                                                                                       \
        harness_failures_in_test = 0;                                                          \
        fn();                                                                                  \
        if (harness_failures_in_test) {                                                        \
            printf("FAIL %s\n", #fn);                                                          \
            harness_tests_failed++;                                                            \
        } else {                                                                               \
            printf("PASS %s\n", #fn);                                                          \
            harness_tests_passed++;                                                            \
        }                                                                                      \
        fflush(stdout);                                                                        \
    } while (0)

#define HARNESS_EXIT() return harness_tests_failed ? 1 : 0

/* Fixture directory: tests run from the repository root. */
#define FIXTURES "tests/fixtures"

#endif
