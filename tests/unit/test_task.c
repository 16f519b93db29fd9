/* moeq eval --task in the library: the three parsers build the requests of the reference script
 * (tests/fixtures/tasks/make_task_refs.py), the standard errors against their definitions, and
 * the packed forward pass (shared prefixes, several tasks per pass) against plain causal passes
 * of each sequence alone. (Per-request log-likelihoods against transformers: tests/cli/test_task.sh.) */
#include <stdlib.h>
#include "float_kernels.h"
#include "harness.h"
#include "moeq_core.h"
#include "moeq_eval.h"
#include "moeq_model.h"

static moeq_task_set *parse(const char *text, moeq_task_format f, moeq_error *err)
{
    moeq_task_set *ts = NULL;
    moeq_tasks_parse(text, strlen(text), "t.txt", f, &ts, err);
    return ts;
}

static void test_parse_jsonl(void)
{
    moeq_error err = {0};
    moeq_task_set *ts = parse("{\"id\": \"a\", \"context\": \"The cat \", \"choices\": [\"sat\", \"ran\"], \"gold\": 1}\n"
                              "\n   \n"
                              "{\"context\": \"x\\u00e9\", \"choices\": [\"1\", \"2\", \"3\"], \"gold\": 0, \"id\": 7, \"z\": []}",
                              MOEQ_TASK_JSONL, &err);
    CHECK_MSG(ts && ts->n == 2, "%s", err.detail);
    if (!ts || ts->n != 2) goto out;
    CHECK(!strcmp(ts->tasks[0].id, "a") && ts->tasks[0].gold == 1 && ts->tasks[0].n_req == 2 && ts->tasks[0].line == 1);
    CHECK(!strcmp(ts->tasks[0].req[1].context, "The cat ") && !strcmp(ts->tasks[0].req[1].continuation, "ran"));
    CHECK(!strcmp(ts->tasks[1].id, "7") && ts->tasks[1].line == 4 && ts->tasks[1].n_req == 3);
    CHECK(!strcmp(ts->tasks[1].req[2].context, "x\xc3\xa9") && !strcmp(ts->tasks[1].req[2].continuation, "3"));
out:
    moeq_tasks_free(ts);
    /* each bad line names itself */
    struct { const char *text, *frag; moeq_status code; } bad[] = {
        {"{\"context\": \"a\", \"choices\": [\"b\", \"c\"]}", "t.txt:1: missing field 'gold'", MOEQ_ERR_FORMAT},
        {"\n{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"gold\": 2}", "t.txt:2: 'gold' is 2, outside 0..1", MOEQ_ERR_RANGE},
        {"{\"context\": \"a\", \"choices\": [], \"gold\": 0}", "t.txt:1: 'choices' has 0 entries", MOEQ_ERR_FORMAT},
        {"{\"context\": \"a\", \"choices\": [\"b\", \"\"], \"gold\": 0}", "t.txt:1: choice 1 is empty", MOEQ_ERR_FORMAT},
        {"{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"gold\": 0, \"gold\": 1}", "t.txt:1: not JSON", MOEQ_ERR_FORMAT},
        {"\n\n", "no tasks", MOEQ_ERR_FORMAT},
        {"{\"context\": \"a\xff\"}", "t.txt:1: invalid UTF-8 at byte offset 14", MOEQ_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        moeq_error e = {0};
        moeq_task_set *b = parse(bad[i].text, MOEQ_TASK_JSONL, &e);
        CHECK_MSG(!b && e.code == bad[i].code && strstr(e.detail, bad[i].frag), "case %zu: %s", i, e.detail);
        moeq_tasks_free(b);
    }
}

static void test_parse_hellaswag_winogrande(void)
{
    moeq_error err = {0};
    moeq_task_set *ts = parse("Ctx one\n2\ne0\ne1\ne2\ne3\nCtx two\n0\na\nb\nc\nd\n", MOEQ_TASK_HELLASWAG, &err);
    CHECK_MSG(ts && ts->n == 2, "%s", err.detail);
    if (ts && ts->n == 2) {
        CHECK(ts->tasks[0].gold == 2 && ts->tasks[1].line == 7 && !strcmp(ts->tasks[1].id, "1"));
        CHECK(!strcmp(ts->tasks[0].req[3].context, "Ctx one") && !strcmp(ts->tasks[0].req[3].continuation, " e3"));
    }
    moeq_tasks_free(ts);
    ts = parse("Ctx\n4\na\nb\nc\nd\n", MOEQ_TASK_HELLASWAG, &err);
    CHECK_MSG(!ts && strstr(err.detail, "t.txt:2: the gold ending is '4'"), "%s", err.detail);
    ts = parse("Ctx\n1\na\nb\nc\n", MOEQ_TASK_HELLASWAG, &err);
    CHECK_MSG(!ts && strstr(err.detail, "t.txt:1: the last task has 5 of its 6 lines"), "%s", err.detail);

    /* the sentence cut at '_'; a quoted sentence keeps its commas; the header is skipped */
    ts = parse("index,sentence,option1,option2,answer\n"
               "w1,The trophy did not fit in the _ because it was big.,case,trophy,2\n\n"
               "w2,\"Yes, the _ said  .  \",dog,cat,1\n", MOEQ_TASK_WINOGRANDE, &err);
    CHECK_MSG(ts && ts->n == 2, "%s", err.detail);
    if (ts && ts->n == 2) {
        moeq_task *a = &ts->tasks[0], *b = &ts->tasks[1];
        CHECK(!strcmp(a->id, "w1") && a->gold == 1 && a->line == 2);
        CHECK(!strcmp(a->req[0].context, "The trophy did not fit in the case"));
        CHECK(!strcmp(a->req[1].context, "The trophy did not fit in the trophy"));
        CHECK(!strcmp(a->req[0].continuation, " because it was big."));
        CHECK(b->gold == 0 && b->line == 4 && !strcmp(b->req[1].context, "Yes, the cat"));
        CHECK(!strcmp(b->req[1].continuation, " said  ."));
    }
    moeq_tasks_free(ts);
    ts = parse("1,no blank here,a,b,1\n", MOEQ_TASK_WINOGRANDE, &err);
    CHECK_MSG(!ts && strstr(err.detail, "t.txt:1: the sentence has no '_'"), "%s", err.detail);
    ts = parse("1,a _ b,a,b,3\n", MOEQ_TASK_WINOGRANDE, &err);
    CHECK_MSG(!ts && err.code == MOEQ_ERR_RANGE && strstr(err.detail, "t.txt:1: the answer is '3'"), "%s", err.detail);
    ts = parse("1,a _ b,a\n", MOEQ_TASK_WINOGRANDE, &err);
    CHECK_MSG(!ts && strstr(err.detail, "t.txt:1: 2 of the 4 commas"), "%s", err.detail);
}

static void test_stderr(void)
{
    /* the harness's mean_stderr of 0/1 outcomes is sqrt(p(1-p)/(n-1)) */
    double x[120], y[120];
    for (int i = 0; i < 120; i++) x[i] = i % 20 < 7;   /* p = 0.35 */
    CHECK_NEAR(moeq_mean_stderr(x, 120), sqrt(0.35 * 0.65 / 119), 1e-15);
    /* paired: d = x - y; sd(d) / sqrt(n), sd with n - 1 */
    for (int i = 0; i < 120; i++) y[i] = i % 20 < 5 || i % 20 == 10;
    double d[120], m = 0, v = 0;
    for (int i = 0; i < 120; i++) m += (d[i] = x[i] - y[i]) / 120;
    for (int i = 0; i < 120; i++) v += (d[i] - m) * (d[i] - m);
    CHECK_NEAR(moeq_paired_stderr(x, y, 120), sqrt(v / 119) / sqrt(120), 1e-15);
    CHECK(moeq_paired_stderr(x, x, 120) == 0);
    CHECK(isnan(moeq_mean_stderr(x, 1)));
}

/* Three sequences sharing a 5-token prefix, packed as prefix + three segments, against each one
 * alone through moeq_forward: every row's logits agree to 1e-5 x max|logit|. */
static void test_packed_forward(void)
{
    moeq_error err = {0};
    moeq_model *m = NULL;
    CHECK_MSG(moeq_model_open(FIXTURES "/tiny-qwen3moe", &m, &err) == MOEQ_OK, "%s", err.detail);
    if (!m) return;
    int64_t V = moeq_model_config(m)->vocab;
    enum { P = 5, A = 4, B = 1, C = 9, N = P + A + B + C };
    int32_t seq[3][P + C], len[3] = {P + A, P + B, P + C};
    for (int s = 0; s < 3; s++)
        for (int j = 0; j < P + C; j++) seq[s][j] = j < P ? 100 + 37 * j : (s * 211 + j * 53) % 1000;
    int32_t tok[2 * N], pos[2 * N], seg[2 * N], see[2 * N], rows[2 * N];
    int64_t i = 0;
    for (int j = 0; j < P; j++, i++) { tok[i] = seq[0][j]; pos[i] = j; seg[i] = 0; see[i] = -1; }
    int64_t at[3];
    for (int s = 0; s < 3; s++) {
        at[s] = i;
        for (int j = P; j < len[s]; j++, i++) { tok[i] = seq[s][j]; pos[i] = j; seg[i] = 1 + s; see[i] = 0; }
    }
    for (int k = 0; k < N; k++) rows[k] = N - 1 - k;   /* any order */
    moeq_packing pk = {.pos = pos, .seg = seg, .see = see, .rows = rows, .nrows = N};
    float *lp = malloc((size_t)(2 * N * V) * sizeof(float)), *ls = malloc((size_t)((P + C) * V) * sizeof(float));
    moeq_runner *r = NULL;
    CHECK_MSG(moeq_runner_create(m, 64, 2, &r, &err) == MOEQ_OK, "%s", err.detail);
    CHECK_MSG(r && moeq_forward_packed(r, tok, N, &pk, lp, &err) == MOEQ_OK, "%s", err.detail);
    double worst = 0;
    for (int s = 0; r && s < 3; s++) {
        CHECK(moeq_forward(r, seq[s], len[s], ls, NULL, &err) == MOEQ_OK);
        for (int j = 0; j < len[s]; j++) {
            int64_t packed = j < P ? j : at[s] + j - P, row = N - 1 - packed;
            double mx = 0, d = 0;
            for (int64_t v = 0; v < V; v++) {
                double a = ls[j * V + v], b = lp[row * V + v];
                if (fabs(a) > mx) mx = fabs(a);
                if (!(fabs(a - b) <= d)) d = fabs(a - b);
            }
            if (d / mx > worst || isnan(d)) worst = isnan(d) ? INFINITY : d / mx;
        }
    }
    CHECK_MSG(worst < 1e-5, "packed vs alone: %.3g of max|logit|", worst);
    /* two independent blocks (sequences 0 and 2, positions from 0), attention per block */
    int64_t na = len[0], nb = len[2];
    for (int64_t j = 0; j < na + nb; j++) {
        int s = j < na ? 0 : 2;
        int64_t q = j < na ? j : j - na;
        tok[j] = seq[s][q]; pos[j] = (int32_t)q; seg[j] = j < na ? 0 : 1; see[j] = -1; rows[j] = (int32_t)j;
    }
    int32_t units[2] = {0, (int32_t)na};
    moeq_packing pb = {.pos = pos, .seg = seg, .see = see, .rows = rows, .nrows = na + nb, .units = units, .nunits = 2};
    CHECK_MSG(r && moeq_forward_packed(r, tok, na + nb, &pb, lp, &err) == MOEQ_OK, "%s", err.detail);
    worst = 0;
    for (int s = 0; r && s < 2; s++) {
        int64_t L = s ? nb : na, off = s ? na : 0;
        CHECK(moeq_forward(r, seq[s ? 2 : 0], L, ls, NULL, &err) == MOEQ_OK);
        double mx = 0, d = 0;
        for (int64_t v = 0; v < L * V; v++) {
            if (fabs(ls[v]) > mx) mx = fabs(ls[v]);
            double e = fabs((double)ls[v] - lp[off * V + v]);
            if (!(e <= d)) d = e;
        }
        if (!(d / mx <= worst)) worst = d / mx;
    }
    CHECK_MSG(worst < 1e-5, "blocks vs alone: %.3g of max|logit|", worst);
    /* a block whose token sees a segment of an earlier block is refused */
    see[na] = 0;
    CHECK(r && moeq_forward_packed(r, tok, na + nb, &pb, lp, &err) == MOEQ_ERR_MISUSE);
    see[na] = -1;
    /* positions beyond a token's index are refused */
    pos[3] = 7;
    CHECK(r && moeq_forward_packed(r, tok, N, &pk, lp, &err) == MOEQ_ERR_MISUSE);
    moeq_runner_free(r);
    free(lp);
    free(ls);
    moeq_model_close(m);
}

/* Whole-task scoring: packed passes (several tasks each, shared prefixes) against each request
 * alone; and bit-identical results across thread counts. */
static void test_task_eval_shared_vs_unshared(void)
{
    const moeq_kernel_set *prev_ks = use_float_kernels();
    const char *files[] = {FIXTURES "/tasks/cloze.jsonl", FIXTURES "/tasks/cloze.winogrande.csv"};
    moeq_task_format fmts[] = {MOEQ_TASK_JSONL, MOEQ_TASK_WINOGRANDE};
    moeq_error err = {0};
    moeq_model *m = NULL;
    CHECK_MSG(moeq_model_open(FIXTURES "/tiny-mixtral", &m, &err) == MOEQ_OK, "%s", err.detail);
    for (int f = 0; m && f < 2; f++) {
        moeq_task_set *ts = NULL;
        CHECK_MSG(moeq_tasks_load(files[f], fmts[f], &ts, &err) == MOEQ_OK, "%s", err.detail);
        if (!ts) continue;
        moeq_task_result a, b, c;
        /* pack 200: two or three tasks per pass (units of ~86 and ~53 tokens) */
        int64_t lim = getenv("MOEQ_TEST_QUICK") ? 8 : 12;
        moeq_task_opts o = {.limit = lim, .pack = 200, .threads = 2};
        CHECK_MSG(moeq_task_eval(m, NULL, ts, files[f], &o, &a, &err) == MOEQ_OK, "%s", err.detail);
        o.threads = 1;
        CHECK_MSG(moeq_task_eval(m, NULL, ts, files[f], &o, &c, &err) == MOEQ_OK, "%s", err.detail);
        o.unshared = 1;
        CHECK_MSG(moeq_task_eval(m, NULL, ts, files[f], &o, &b, &err) == MOEQ_OK, "%s", err.detail);
        CHECK(a.tasks == lim && b.tasks == lim && a.passes > 1 && a.passes < a.tasks && a.packed_tokens < b.packed_tokens);
        double worst = 0;
        for (int64_t i = 0; i < a.tasks && i < b.tasks; i++) {
            CHECK(a.per_task[i].pick == b.per_task[i].pick && a.per_task[i].pick_norm == b.per_task[i].pick_norm);
            for (int32_t k = 0; k < ts->tasks[i].n_req; k++) {
                moeq_task_req_score *x = &a.per_task[i].req[k], *y = &b.per_task[i].req[k];
                double rel = fabs(x->ll - y->ll) / fabs(y->ll);
                if (!(rel <= worst)) worst = rel;
                CHECK(x->n_cont == y->n_cont && x->greedy == y->greedy && x->ll < 0);
                CHECK(x->ll == c.per_task[i].req[k].ll);   /* threads do not change a bit */
            }
        }
        CHECK_MSG(worst < 1e-5, "%s: shared vs unshared ll: %.3g relative", files[f], worst);
        CHECK(a.acc == b.acc && a.acc_norm == b.acc_norm);
        moeq_task_result_free(&a);
        moeq_task_result_free(&b);
        moeq_task_result_free(&c);
        moeq_tasks_free(ts);
    }
    moeq_model_close(m);
    moeq_kernels_use(prev_ks);
}

int main(void)
{
    moeq_threads_init(2);
    RUN_TEST(test_parse_jsonl);
    RUN_TEST(test_parse_hellaswag_winogrande);
    RUN_TEST(test_stderr);
    RUN_TEST(test_packed_forward);
    RUN_TEST(test_task_eval_shared_vs_unshared);
    HARNESS_EXIT();
}
