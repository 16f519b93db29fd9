/* MPI ranks for the distributed stages (include/moeq_dist.h, docs/scale.md). Built with
 * -DMOEQ_MPI when pkg-config finds Open MPI; without it, or when the process was not started
 * by mpirun, there is one rank. MPI is joined only under a launcher: Open MPI's singleton
 * start (MPI_Init in a plain process) needs a working local runtime and fails in some
 * containers, and a plain run must stay today's single-process program. */
#include "moeq_dist.h"
#include "moeq_core.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef MOEQ_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1, g_joined = 0;
static uint64_t g_sent = 0;
static char g_host[256] = "";


int moeq_dist_rank(void) { return g_rank; }
int moeq_dist_size(void) { return g_size; }
int moeq_dist_owner(int64_t item) { return (int)(item % g_size); }
uint64_t moeq_dist_bytes_sent(void) { return g_sent; }

int moeq_dist_built_with_mpi(void)
{
#ifdef MOEQ_MPI
    return 1;
#else
    return 0;
#endif
}

const char *moeq_dist_host(void)
{
    if (!g_host[0] && gethostname(g_host, sizeof g_host - 1) != 0) strcpy(g_host, "?");
    return g_host;
}

static int under_launcher(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

moeq_status moeq_dist_init(int *argc, char ***argv, moeq_error *err)
{
#ifdef MOEQ_MPI
    if (g_joined || !under_launcher()) return MOEQ_OK;
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return moeq_fail(err, MOEQ_ERR_DEPENDENCY, "MPI_Init failed");
    g_joined = 1;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
#else
    (void)argc;
    (void)argv;
    (void)err;
    if (under_launcher() && getenv("OMPI_COMM_WORLD_SIZE") && atoi(getenv("OMPI_COMM_WORLD_SIZE")) > 1)
        return moeq_fail(err, MOEQ_ERR_UNSUPPORTED, "started by mpirun with %s ranks, but this moeq was "
                         "built without MPI (install libopenmpi-dev and rebuild)", getenv("OMPI_COMM_WORLD_SIZE"));
#endif
    return MOEQ_OK;
}

void moeq_dist_finalize(void)
{
#ifdef MOEQ_MPI
    if (g_joined) MPI_Finalize();
    g_joined = 0;
#endif
}

#ifdef MOEQ_MPI
#define PIECE ((size_t)1 << 30)

static moeq_status mpi_fail(moeq_error *err, int rc, const char *what, int peer)
{
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, s, &len) != MPI_SUCCESS) snprintf(s, sizeof s, "code %d", rc);
    return moeq_fail(err, MOEQ_ERR_IO, "rank %d (%s): MPI %s with rank %d failed: %s", g_rank,
                     moeq_dist_host(), what, peer, s);
}
#endif

moeq_status moeq_dist_send(const void *buf, size_t n, int dst, int tag, moeq_error *err)
{
#ifdef MOEQ_MPI
    if (g_size > 1) {
        const char *p = buf;
        for (size_t off = 0; off < n || (n == 0 && off == 0); off += PIECE) {
            size_t k = n - off < PIECE ? n - off : PIECE;
            int rc = MPI_Send(p ? p + off : NULL, (int)k, MPI_BYTE, dst, tag, MPI_COMM_WORLD);
            if (rc != MPI_SUCCESS) return mpi_fail(err, rc, "send", dst);
            g_sent += k;
            if (n == 0) break;
        }
        return MOEQ_OK;
    }
#endif
    (void)buf; (void)n; (void)dst; (void)tag;
    return moeq_fail(err, MOEQ_ERR_MISUSE, "send to rank %d in a one-rank run", dst);
}

moeq_status moeq_dist_recv(void *buf, size_t n, int src, int tag, moeq_error *err)
{
#ifdef MOEQ_MPI
    if (g_size > 1) {
        char *p = buf;
        for (size_t off = 0; off < n || (n == 0 && off == 0); off += PIECE) {
            size_t k = n - off < PIECE ? n - off : PIECE;
            MPI_Status stt;
            int rc = MPI_Recv(p ? p + off : NULL, (int)k, MPI_BYTE, src, tag, MPI_COMM_WORLD, &stt);
            if (rc != MPI_SUCCESS) return mpi_fail(err, rc, "receive", src);
            int got = 0;
            MPI_Get_count(&stt, MPI_BYTE, &got);
            if ((size_t)got != k)
                return moeq_fail(err, MOEQ_ERR_IO, "rank %d: message of %d bytes from rank %d, expected %zu",
                                 g_rank, got, src, k);
            if (n == 0) break;
        }
        return MOEQ_OK;
    }
#endif
    (void)buf; (void)n; (void)src; (void)tag;
    return moeq_fail(err, MOEQ_ERR_MISUSE, "receive from rank %d in a one-rank run", src);
}

moeq_status moeq_dist_send_blob(const void *buf, size_t n, int dst, int tag, moeq_error *err)
{
    uint64_t len = n;
    moeq_status st = moeq_dist_send(&len, sizeof len, dst, tag, err);
    if (st == MOEQ_OK && n) st = moeq_dist_send(buf, n, dst, tag, err);
    return st;
}

moeq_status moeq_dist_recv_blob(void **buf, size_t *n, int src, int tag, moeq_error *err)
{
    *buf = NULL;
    *n = 0;
    uint64_t len = 0;
    moeq_status st = moeq_dist_recv(&len, sizeof len, src, tag, err);
    if (st != MOEQ_OK || len == 0) return st;
    if (len > (uint64_t)SIZE_MAX / 2) return moeq_fail(err, MOEQ_ERR_IO, "rank %d: blob of %llu bytes from rank %d",
                                                     g_rank, (unsigned long long)len, src);
    void *p = malloc((size_t)len);
    if (!p) return moeq_fail(err, MOEQ_ERR_NOMEM, "rank %d: out of memory for %llu bytes from rank %d", g_rank,
                             (unsigned long long)len, src);
    st = moeq_dist_recv(p, (size_t)len, src, tag, err);
    if (st != MOEQ_OK) { free(p); return st; }
    *buf = p;
    *n = (size_t)len;
    return MOEQ_OK;
}

moeq_status moeq_dist_bcast(void *buf, size_t n, int root, moeq_error *err)
{
#ifdef MOEQ_MPI
    if (g_size > 1) {
        char *p = buf;
        for (size_t off = 0; off < n; off += PIECE) {
            size_t k = n - off < PIECE ? n - off : PIECE;
            int rc = MPI_Bcast(p + off, (int)k, MPI_BYTE, root, MPI_COMM_WORLD);
            if (rc != MPI_SUCCESS) return mpi_fail(err, rc, "broadcast", root);
            if (g_rank == root) g_sent += k * (uint64_t)(g_size - 1);
        }
    }
#endif
    (void)buf; (void)n; (void)root; (void)err;
    return MOEQ_OK;
}

moeq_status moeq_dist_bcast_blob(void **buf, size_t *n, int root, moeq_error *err)
{
    if (g_size == 1) return MOEQ_OK;
    uint64_t len = g_rank == root ? *n : 0;
    moeq_status st = moeq_dist_bcast(&len, sizeof len, root, err);
    if (st != MOEQ_OK) return st;
    if (g_rank != root) {
        *n = (size_t)len;
        *buf = NULL;
        if (len) {
            *buf = malloc((size_t)len);
            if (!*buf) return moeq_fail(err, MOEQ_ERR_NOMEM, "rank %d: out of memory for a %llu-byte broadcast",
                                        g_rank, (unsigned long long)len);
        }
    }
    return len ? moeq_dist_bcast(*buf, (size_t)len, root, err) : MOEQ_OK;
}

moeq_status moeq_dist_sum_u64(uint64_t *v, moeq_error *err)
{
#ifdef MOEQ_MPI
    if (g_size > 1) {
        unsigned long long in = *v, out = 0;
        int rc = MPI_Allreduce(&in, &out, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(err, rc, "allreduce", -1);
        *v = out;
    }
#endif
    (void)v;
    (void)err;
    return MOEQ_OK;
}

moeq_status moeq_dist_barrier(moeq_error *err)
{
#ifdef MOEQ_MPI
    if (g_size > 1) {
        int rc = MPI_Barrier(MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(err, rc, "barrier", -1);
    }
#endif
    (void)err;
    return MOEQ_OK;
}

moeq_status moeq_dist_agree(moeq_status st, moeq_error *err)
{
    if (g_size == 1) return st;
#ifdef MOEQ_MPI
    /* lowest failing rank: MPI_MIN over (failed ? rank : size) */
    int mine = st != MOEQ_OK ? g_rank : g_size, first = g_size;
    int rc = MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return mpi_fail(err, rc, "allreduce", -1);
    if (first == g_size) return MOEQ_OK;
    /* the failing rank broadcasts its code and message */
    struct { int32_t code; char detail[MOEQ_ERROR_DETAIL_MAX]; } msg;
    memset(&msg, 0, sizeof msg);
    if (g_rank == first) {
        msg.code = (int32_t)st;
        if (err) memcpy(msg.detail, err->detail, sizeof msg.detail - 1);
        if (first != 0 && err) {
            moeq_error tmp;
            memcpy(&tmp, err, sizeof tmp);
            moeq_error_prefix(&tmp, "rank %d (%s)", first, moeq_dist_host());
            memcpy(msg.detail, tmp.detail, sizeof msg.detail - 1);
        }
    }
    rc = MPI_Bcast(&msg, (int)sizeof msg, MPI_BYTE, first, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return mpi_fail(err, rc, "broadcast", first);
    moeq_status code = (moeq_status)msg.code;
    /* rank 0 read the same input and had no trouble: the fault is that node's, an I/O one */
    if (first != 0) code = MOEQ_ERR_IO;
    msg.detail[sizeof msg.detail - 1] = 0;
    moeq_fail(err, code, "%s", msg.detail);
    if (err) err->agreed = 1;
    return code;
#else
    return st;
#endif
}

int moeq_dist_error_agreed(const moeq_error *err)
{
    return err && err->agreed;
}

int64_t moeq_dist_test_fail_item(const char *var)
{
    const char *s = getenv(var);
    int r = -1;
    long long i = -1;
    if (!s || sscanf(s, "%d:%lld", &r, &i) != 2 || r != g_rank) return -1;
    return i;
}
