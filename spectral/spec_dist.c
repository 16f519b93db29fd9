/* moeq spectral over MPI ranks (docs/spectral.md, "Under mpirun"): matrices dealt round-robin
 * by moeq_dist_owner, every rank runs moeq_spec_run over its own list, rank 0 receives each
 * result in matrix order and alone calls the sink (the HDF5 writer, progress). One rank: this
 * is moeq_spec_run.
 *
 * Message of one matrix, rank r -> rank 0, tag MOEQ_TAG_SPECTRAL: a spec_msg (status, the
 * moeq_spec_result, the eigenvalue count), then with send_eigs its n_eigs float64 eigenvalues.
 * A failed matrix sends a spec_msg with the status and then its MOEQ_ERROR_DETAIL_MAX-byte
 * message; rank 0 returns that error (the tool removes its temporary file and ends the job)
 * while the failing rank waits to be ended, so that no rank is killed before rank 0 has
 * cleaned up. */
#include "moeq_spectral.h"
#include "moeq_dist.h"
#include "moeq_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct spec_msg {
    int32_t status;
    int32_t has_eigs;
    int64_t n_eigs;
    moeq_spec_result res;
} spec_msg;

/* Test hook: MOEQ_TEST_FAIL_SPECTRAL=RANK:ITEM makes that rank fail at that matrix (an I/O
 * error), to test how a failure on one rank ends the run. */
static int64_t test_fail_item(void) { return moeq_dist_test_fail_item("MOEQ_TEST_FAIL_SPECTRAL"); }

typedef struct dist_ctx {
    const moeq_spec_item *items;
    size_t n;
    int rank, size, send_eigs, comm_failed;
    int64_t fail_at;
    moeq_spec_result *results;
    moeq_spec_sink sink;
    void *user;
    double *rbuf;
    size_t rcap;
    const moeq_spec_opts *o;
} dist_ctx;

/* A failed matrix on a rank other than 0: hand the error to rank 0, then wait for the job to
 * be ended (rank 0 never answers; its tool removes its temporary file and aborts). */
static moeq_status hand_over(moeq_status st, moeq_error *err)
{
    spec_msg m;
    memset(&m, 0, sizeof m);
    m.status = (int32_t)st;
    char detail[MOEQ_ERROR_DETAIL_MAX + 512];
    memset(detail, 0, sizeof detail);
    snprintf(detail, sizeof detail, "rank %d (%s): %s", moeq_dist_rank(), moeq_dist_host(), err ? err->detail : "");
    detail[MOEQ_ERROR_DETAIL_MAX - 1] = 0;
    moeq_error e2 = {0};
    if (moeq_dist_send(&m, sizeof m, 0, MOEQ_TAG_SPECTRAL, &e2) != MOEQ_OK ||
        moeq_dist_send(detail, MOEQ_ERROR_DETAIL_MAX, 0, MOEQ_TAG_SPECTRAL, &e2) != MOEQ_OK)
        return st;
    int32_t never = 0;
    (void)moeq_dist_recv(&never, sizeof never, 0, MOEQ_TAG_SPECTRAL, &e2);
    return st;
}

/* Rank 0: the message of matrix g from its owner. On success res is filled and eigs, ne
 * point at the received eigenvalues (or NULL, 0). */
static moeq_status recv_one(dist_ctx *c, size_t g, int src, moeq_spec_result *res, const double **eigs,
                            int64_t *ne, moeq_error *err)
{
    spec_msg m;
    moeq_status st = moeq_dist_recv(&m, sizeof m, src, MOEQ_TAG_SPECTRAL, err);
    if (st != MOEQ_OK) return st;
    if (m.status != MOEQ_OK) {
        char detail[MOEQ_ERROR_DETAIL_MAX];
        st = moeq_dist_recv(detail, sizeof detail, src, MOEQ_TAG_SPECTRAL, err);
        if (st != MOEQ_OK) return st;
        detail[sizeof detail - 1] = 0;
        return moeq_fail(err, (moeq_status)m.status, "%s", detail);
    }
    *res = m.res;
    *eigs = NULL;
    *ne = 0;
    if (m.has_eigs && m.n_eigs > 0) {
        int64_t cap = moeq_spec_max_eigs(c->items[g].mat.rows, c->items[g].mat.cols, c->o);
        if (m.n_eigs > cap)
            return moeq_fail(err, MOEQ_ERR_IO, "rank %d sent %lld eigenvalues for %s, at most %lld expected", src,
                             (long long)m.n_eigs, c->items[g].tensor, (long long)cap);
        if ((size_t)m.n_eigs > c->rcap) {
            double *q = realloc(c->rbuf, (size_t)m.n_eigs * sizeof *q);
            if (!q) return moeq_fail(err, MOEQ_ERR_NOMEM, "%lld eigenvalues from rank %d", (long long)m.n_eigs, src);
            c->rbuf = q;
            c->rcap = (size_t)m.n_eigs;
        }
        st = moeq_dist_recv(c->rbuf, (size_t)m.n_eigs * sizeof *c->rbuf, src, MOEQ_TAG_SPECTRAL, err);
        if (st != MOEQ_OK) return st;
        *eigs = c->rbuf;
        *ne = m.n_eigs;
    }
    return MOEQ_OK;
}

/* Sink of this rank's own list: local item j is global item j * size + rank. */
static moeq_status local_sink(void *user, size_t j, const moeq_spec_item *item, const moeq_spec_result *res,
                              const double *eigs, int64_t n_eigs, moeq_error *err)
{
    dist_ctx *c = user;
    size_t g = j * (size_t)c->size + (size_t)c->rank;
    (void)item;
    if (c->fail_at >= 0 && (size_t)c->fail_at == g)
        return moeq_fail(err, MOEQ_ERR_IO, "%s: injected failure (MOEQ_TEST_FAIL_SPECTRAL)", c->items[g].tensor);
    c->results[g] = *res;
    if (c->rank != 0) {
        spec_msg m;
        memset(&m, 0, sizeof m);
        m.status = MOEQ_OK;
        m.has_eigs = c->send_eigs && eigs && n_eigs > 0;
        m.n_eigs = m.has_eigs ? n_eigs : 0;
        m.res = *res;
        moeq_status st = moeq_dist_send(&m, sizeof m, 0, MOEQ_TAG_SPECTRAL, err);
        if (st == MOEQ_OK && m.has_eigs) st = moeq_dist_send(eigs, (size_t)n_eigs * sizeof *eigs, 0, MOEQ_TAG_SPECTRAL, err);
        if (st != MOEQ_OK) c->comm_failed = 1;
        return st;
    }
    /* rank 0: this matrix, then the same round's matrices of ranks 1..size-1, in order */
    moeq_status st = c->sink ? c->sink(c->user, g, &c->items[g], &c->results[g], eigs, n_eigs, err) : MOEQ_OK;
    for (int q = 1; q < c->size && st == MOEQ_OK; q++) {
        size_t g2 = g + (size_t)q;
        if (g2 >= c->n) break;
        const double *e = NULL;
        int64_t ne = 0;
        if ((st = recv_one(c, g2, q, &c->results[g2], &e, &ne, err)) != MOEQ_OK) break;
        if (c->sink) st = c->sink(c->user, g2, &c->items[g2], &c->results[g2], e, ne, err);
    }
    return st;
}

moeq_status moeq_spec_run_dist(const moeq_spec_item *items, size_t n, const moeq_spec_opts *o, int threads,
                               int send_eigs, moeq_spec_result *results, moeq_spec_sink sink, void *user,
                               moeq_error *err)
{
    if ((!items && n) || !o || !results) return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_spec_run_dist: NULL argument");
    dist_ctx c = {.items = items, .n = n, .rank = moeq_dist_rank(), .size = moeq_dist_size(), .send_eigs = send_eigs,
                  .fail_at = test_fail_item(), .results = results, .sink = sink, .user = user, .o = o};
    size_t nm = 0;
    for (size_t i = (size_t)c.rank; i < n; i += (size_t)c.size) nm++;
    moeq_spec_item *mine = malloc((nm ? nm : 1) * sizeof *mine);
    moeq_spec_result *lres = calloc(nm ? nm : 1, sizeof *lres);
    moeq_status st = MOEQ_OK;
    if (!mine || !lres) st = moeq_fail(err, MOEQ_ERR_NOMEM, "moeq_spec_run_dist: %zu items", nm);
    else {
        for (size_t j = 0; j < nm; j++) mine[j] = items[j * (size_t)c.size + (size_t)c.rank];
        st = moeq_spec_run(mine, nm, o, threads, lres, local_sink, &c, err);
    }
    free(mine);
    free(lres);
    free(c.rbuf);
    if (st != MOEQ_OK && c.rank != 0 && !c.comm_failed) return hand_over(st, err);
    return st;
}

moeq_status moeq_spec_esd_dist(const moeq_spec_item *items, size_t n, size_t idx, const moeq_spec_opts *o,
                               moeq_spec_result *res, double **eigs, int64_t *n_eigs, moeq_error *err)
{
    *eigs = NULL;
    *n_eigs = 0;
    if (!items || idx >= n || !o || !res) return moeq_fail(err, MOEQ_ERR_MISUSE, "moeq_spec_esd_dist: bad argument");
    const moeq_spec_item *it = &items[idx];
    int owner = moeq_dist_owner((int64_t)idx), rank = moeq_dist_rank();
    int64_t cap = moeq_spec_max_eigs(it->mat.rows, it->mat.cols, o);
    moeq_status st = MOEQ_OK;
    if (owner == rank) {
        moeq_spec_ws *ws = moeq_spec_ws_new();
        double *e = malloc((size_t)(cap > 0 ? cap : 1) * sizeof *e);
        int64_t ne = 0;
        st = !ws || !e ? moeq_fail(err, MOEQ_ERR_NOMEM, "ESD of %s", it->tensor)
                       : moeq_spec_matrix(&it->mat, o, moeq_spec_key(it->mat.tensor, it->mat.index), ws, res, e, &ne, err);
        moeq_spec_ws_free(ws);
        if (rank == 0) {
            if (st != MOEQ_OK) { free(e); return st; }
            *eigs = e;
            *n_eigs = ne;
            return MOEQ_OK;
        }
        if (st != MOEQ_OK) { free(e); return hand_over(st, err); }
        spec_msg m;
        memset(&m, 0, sizeof m);
        m.status = MOEQ_OK;
        m.has_eigs = ne > 0;
        m.n_eigs = ne;
        m.res = *res;
        st = moeq_dist_send(&m, sizeof m, 0, MOEQ_TAG_SPECTRAL, err);
        if (st == MOEQ_OK && ne > 0) st = moeq_dist_send(e, (size_t)ne * sizeof *e, 0, MOEQ_TAG_SPECTRAL, err);
        free(e);
        return st;
    }
    if (rank != 0) return MOEQ_OK;
    dist_ctx c = {.items = items, .n = n, .o = o};
    const double *e = NULL;
    int64_t ne = 0;
    st = recv_one(&c, idx, owner, res, &e, &ne, err);
    if (st == MOEQ_OK) {
        *eigs = c.rbuf;   /* recv_one received into c.rbuf: hand it over */
        *n_eigs = ne;
        c.rbuf = NULL;
        if (!*eigs && !(*eigs = malloc(sizeof **eigs))) st = moeq_fail(err, MOEQ_ERR_NOMEM, "ESD of %s", it->tensor);
    }
    free(c.rbuf);
    return st;
}
