/* Work split over MPI ranks (docs/scale.md). moeq is one binary: started by mpirun (Open MPI),
 * it joins MPI_COMM_WORLD and the stages deal their work to the ranks; started plainly, or
 * built without MPI, there is one rank and every call below is a local no-op or a copy.
 *
 * Rules every distributed stage keeps:
 *  - Work items are dealt by moeq_dist_owner (round-robin), never by timing, so which rank
 *    computes an item is a function of the item and the rank count alone.
 *  - Rank 0 receives results in item order and is the only writer of an output file; the file
 *    is bit-identical to a one-process run whatever the rank count.
 *  - A failure every rank can see (bad input) is agreed with moeq_dist_agree, so every rank
 *    returns the same status; a failure on one rank mid-run is reported by that rank and the
 *    tool ends the job (MPI_Abort with the exit code), so no rank waits forever. */
#ifndef MOEQ_DIST_H
#define MOEQ_DIST_H

#include <stddef.h>
#include <stdint.h>
#include "moeq_status.h"

/* Joins MPI when the process was started by mpirun/srun (Open MPI's or PMIx's environment
 * variables are set) and the binary was built with MPI; otherwise stays one rank. Returns
 * MOEQ_OK, or MOEQ_ERR_DEPENDENCY when MPI_Init fails. Call once, before threads start. */
moeq_status moeq_dist_init(int *argc, char ***argv, moeq_error *err);
/* Leaves MPI (MPI_Finalize) when moeq_dist_init joined it. */
void moeq_dist_finalize(void);
int moeq_dist_rank(void);
int moeq_dist_size(void);
/* 1 when built with MPI support (whether or not this process runs under mpirun). */
int moeq_dist_built_with_mpi(void);
/* This rank's host name (for messages). */
const char *moeq_dist_host(void);
/* The rank that computes item i of a dealt list: i mod size. */
int moeq_dist_owner(int64_t item);

/* Collective: every rank passes its own status (and err when it failed). All ranks return
 * MOEQ_OK when every rank succeeded; otherwise every rank returns the failure of the lowest
 * failing rank, its detail prefixed by "rank R (HOST): " when size > 1. A failure that rank 0
 * did not see (a node that cannot read a file the others read) becomes MOEQ_ERR_IO (exit 4). */
moeq_status moeq_dist_agree(moeq_status st, moeq_error *err);
/* 1 when the last error in err came from moeq_dist_agree (every rank holds it; only rank 0
 * needs to print it). */
int moeq_dist_error_agreed(const moeq_error *err);

/* Point to point, any size (sent in pieces of at most 1 GiB). The receiver must know n. */
moeq_status moeq_dist_send(const void *buf, size_t n, int dst, int tag, moeq_error *err);
moeq_status moeq_dist_recv(void *buf, size_t n, int src, int tag, moeq_error *err);
/* A message of a size the receiver does not know: its length first, then the bytes. *buf is
 * malloc'ed (free it); a zero-length blob gives *buf = NULL, *n = 0. */
moeq_status moeq_dist_send_blob(const void *buf, size_t n, int dst, int tag, moeq_error *err);
moeq_status moeq_dist_recv_blob(void **buf, size_t *n, int src, int tag, moeq_error *err);
/* Broadcast of n bytes from root (every rank passes the same n). */
moeq_status moeq_dist_bcast(void *buf, size_t n, int root, moeq_error *err);
/* Broadcast of a blob whose size only root knows: on other ranks *buf is malloc'ed. */
moeq_status moeq_dist_bcast_blob(void **buf, size_t *n, int root, moeq_error *err);
/* Collective: *v becomes the sum of every rank's *v. */
moeq_status moeq_dist_sum_u64(uint64_t *v, moeq_error *err);
/* Barrier across ranks. */
moeq_status moeq_dist_barrier(moeq_error *err);
/* Bytes this rank has sent through the calls above (for the communication benchmarks). */
uint64_t moeq_dist_bytes_sent(void);

/* Tests only (docs/scale.md): the item at which this rank is to fail, from an environment
 * variable "RANK:ITEM" (MOEQ_TEST_FAIL_SPECTRAL, MOEQ_TEST_FAIL_PLAN); -1 when unset or for
 * another rank. */
int64_t moeq_dist_test_fail_item(const char *var);

/* Tags of the stages (one per kind of message, so a stray message is never taken for
 * another). */
enum {
    MOEQ_TAG_AGREE = 1, MOEQ_TAG_CALIB_WINDOW = 10, MOEQ_TAG_SPECTRAL = 20, MOEQ_TAG_PLAN = 30,
    MOEQ_TAG_GPTQ = 40, MOEQ_TAG_GPTQ_SEQ = 41, MOEQ_TAG_EXPORT = 50, MOEQ_TAG_RESUME = 60
};

#endif
