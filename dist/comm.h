/* comm.h — what edgeseek-mpi asks of MPI (comm.c owns every MPI call but
 * MPI_Init and MPI_Finalize): the world's size and this rank, the
 * broadcast of rank 0's operations, the gathering of the ranks' results,
 * the per-layer exchange of the experts' slots (reduce or gather), the
 * watchdog that ends a run whose collective waits too long, and the
 * traffic counters.  Nothing here knows the CLI. */
#ifndef ES_DIST_COMM_H
#define ES_DIST_COMM_H

#include <stddef.h>
#include <stdint.h>

/* After MPI_Init: errors returned rather than fatal, the watchdog thread
 * started (timeout_s seconds for a collective inside an evaluation), and
 * SIGTERM/SIGINT reported with this rank's name.  0, or -1 with a message
 * on stderr. */
int dist_comm_start(double timeout_s);
int dist_rank(void);
int dist_size(void);

/* Ends the whole run from any rank: message on stderr naming this rank,
 * then MPI_Abort (exit status 1 everywhere). */
void dist_fail(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2), noreturn))
#endif
    ;

/* Broadcasts n bytes from rank 0 (what: for messages).  timed: under the
 * watchdog (a follower waiting for rank 0's first operation is not). */
void dist_bcast(void *buf, size_t n, int timed, const char *what);
/* Rank 0 receives every rank's `n` bytes of `mine` into all[size][n]
 * (others: all may be NULL). */
void dist_gather(const void *mine, void *all, size_t n, const char *what);

/* The es_moe_reduce_fn dist/ installs on every session: MPI_Allreduce of
 * the slots, in place, under the watchdog. */
int dist_moe_reduce(void *user, int layer, float *slots, size_t n_floats);
/* The es_moe_exchange_fn of the owned-slots form: MPI_Allgatherv of each
 * rank's own rows (those of es_expert_owner(size, layer, e) == rank), the
 * others copied to their places, under the watchdog. */
int dist_moe_exchange(void *user, int layer, float *slots, int dim, int n_experts, const int32_t *expert_start);

/* Traffic: the reduce payloads of evaluations of one token (decode) and of
 * more (prefill), and the tokens and MoE-layer reduces they count. */
typedef struct dist_traffic {
    uint64_t decode_tokens, decode_reduces, decode_bytes;
    uint64_t prefill_tokens, prefill_reduces, prefill_bytes;
} dist_traffic;
/* Which kind the evaluation now running counts as (its token count). */
void dist_traffic_eval(int n_tokens);
const dist_traffic *dist_traffic_get(void);

#endif
