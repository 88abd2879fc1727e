/* comm.c — see comm.h.  Owns every MPI call of edgeseek-mpi but MPI_Init
 * and MPI_Finalize, the watchdog thread and the signal messages.
 *
 * Failures.  MPI_COMM_WORLD returns errors (MPI_ERRORS_RETURN) instead of
 * aborting inside the library, so a failed call ends the run with a message
 * naming this rank and the operation (dist_fail: MPI_Abort, which the
 * launcher turns into the end of every rank).  A collective whose peer
 * died, or whose network stopped delivering, may instead never return: MPI
 * offers no timeout, so a watchdog thread ends this rank (message, exit
 * status 1) when one collective inside an evaluation waits longer than the
 * timeout; the launcher then ends the others.  The launcher's own SIGTERM
 * (mpirun ending the job after a rank died) is reported with this rank's
 * name too.  Only the main thread calls MPI (MPI_THREAD_FUNNELED).
 *
 * The exchange of the experts' outputs: one MPI_Allreduce of every slot
 * (dist_moe_reduce) or one MPI_Allgatherv of each rank's own slots
 * (dist_moe_exchange, half the bytes on 2 ranks); main.c picks one.
 *
 * Waiting.  Collectives are started non-blocking and waited for by
 * wait_polite: as MPI waits when this rank is alone on its machine, without
 * spinning when other ranks share its CPUs. */
#include "comm.h"

#include "edgeseek.h"

#include <limits.h>
#include <mpi.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int g_rank, g_size = 1;
static int g_polite; /* more than one rank on this machine: wait without spinning */
static double g_timeout = 120.0;
/* the collective the main thread is in: its deadline (monotonic ns, 0:
 * none), what it is, the layer for reduces (-1 otherwise) */
static _Atomic int64_t g_deadline;
static _Atomic(const char *) g_what;
static _Atomic int g_layer = -1;
static dist_traffic g_traffic;
static int g_eval_tokens;
static char g_sigmsg[160];

int dist_rank(void) { return g_rank; }
int dist_size(void) { return g_size; }

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void dist_fail(const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "edgeseek-mpi: rank %d of %d: %s\n", g_rank, g_size, msg);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    _exit(1); /* MPI_Abort does not return; if it did */
}

/* A failed MPI call: its error string, and the end of the run. */
static void check(int rc, const char *call, const char *what) {
    if (rc == MPI_SUCCESS) return;
    char es[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, es, &len) != MPI_SUCCESS) snprintf(es, sizeof es, "error %d", rc);
    dist_fail("%s (%s) failed: %s", call, what, es);
}

/* Arms the watchdog for one collective (timed) or disarms it. */
static void arm(int timed, const char *what, int layer) {
    atomic_store(&g_what, what);
    atomic_store(&g_layer, layer);
    atomic_store(&g_deadline, timed ? now_ns() + (int64_t)(g_timeout * 1e9) : 0);
}
static void disarm(void) { atomic_store(&g_deadline, 0); }

static int wait_polite(MPI_Request *req);

static void *watchdog(void *arg) {
    (void)arg;
    for (;;) {
        struct timespec ts = {0, 200 * 1000000};
        nanosleep(&ts, NULL);
        int64_t d = atomic_load(&g_deadline);
        if (!d || now_ns() < d) continue;
        char msg[512];
        int layer = atomic_load(&g_layer);
        char where[48] = "";
        if (layer >= 0) snprintf(where, sizeof where, " of layer %d", layer);
        int n = snprintf(msg, sizeof msg,
                         "edgeseek-mpi: rank %d of %d: no answer from the other ranks for %g s in %s%s: a rank died "
                         "or the network dropped; ending the run (EDGESEEK_MPI_TIMEOUT sets the limit)\n",
                         g_rank, g_size, g_timeout, atomic_load(&g_what), where);
        if (n > 0) {
            ssize_t w = write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
            (void)w;
        }
        /* MPI may only be called from the main thread, which is stuck in
         * it: leave without; the launcher ends the other ranks */
        _exit(1);
    }
    return NULL;
}

static void on_signal(int sig) {
    (void)sig;
    ssize_t w = write(2, g_sigmsg, strlen(g_sigmsg));
    (void)w;
    _exit(1);
}

int dist_comm_start(double timeout_s) {
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    if (MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN) != MPI_SUCCESS) {
        fprintf(stderr, "edgeseek-mpi: rank %d: cannot make MPI return its errors\n", g_rank);
        return -1;
    }
    if (timeout_s > 0) g_timeout = timeout_s;
    MPI_Comm local;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local) == MPI_SUCCESS) {
        int n = 1;
        MPI_Comm_size(local, &n);
        g_polite = n > 1;
        MPI_Comm_free(&local);
    }
    snprintf(g_sigmsg, sizeof g_sigmsg,
             "edgeseek-mpi: rank %d of %d: stopped by a signal (the launcher ends the run: another rank failed, "
             "or it was interrupted)\n", g_rank, g_size);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &at, watchdog, NULL);
    pthread_attr_destroy(&at);
    if (rc != 0) {
        fprintf(stderr, "edgeseek-mpi: rank %d: cannot start the watchdog thread\n", g_rank);
        return -1;
    }
    return 0;
}

void dist_bcast(void *buf, size_t n, int timed, const char *what) {
    arm(timed, what, -1);
    for (size_t off = 0; off < n;) {
        int c = n - off > (size_t)INT_MAX ? INT_MAX : (int)(n - off);
        MPI_Request req;
        int rc = MPI_Ibcast((char *)buf + off, c, MPI_BYTE, 0, MPI_COMM_WORLD, &req);
        check(rc == MPI_SUCCESS ? wait_polite(&req) : rc, "MPI_Bcast", what);
        off += (size_t)c;
    }
    disarm();
}

void dist_gather(const void *mine, void *all, size_t n, const char *what) {
    if (n > (size_t)INT_MAX) dist_fail("gather of %zu bytes (%s) is too large", n, what);
    arm(0, what, -1);
    check(MPI_Gather(mine, (int)n, MPI_BYTE, all, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Gather", what);
    disarm();
}

/* Waits for req.  With one rank on this machine, as MPI waits (spinning:
 * the fastest answer, and the rank's threads have nothing else to run);
 * with several, without holding a CPU another rank here needs: MPI_Test,
 * yielding, for the first 50 us, then sleeping between tests, 20 us at
 * first, growing to 250 us (2 ranks on this 2-vCPU machine decoded a
 * 4-layer V2-Lite-shaped model at 8-10 tokens/s this way, 4 with MPI's
 * spinning wait). */
static int wait_polite(MPI_Request *req) {
    if (!g_polite) return MPI_Wait(req, MPI_STATUS_IGNORE);
    int64_t t0 = now_ns();
    long nap = 20000;
    for (;;) {
        int done = 0;
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS || done) return rc;
        if (now_ns() - t0 < 50000) {
            sched_yield();
            continue;
        }
        struct timespec ts = {0, nap};
        nanosleep(&ts, NULL);
        if (nap < 250000) nap += nap / 2;
    }
}

void dist_traffic_eval(int n_tokens) {
    g_eval_tokens = n_tokens;
    if (n_tokens == 1) g_traffic.decode_tokens++;
    else g_traffic.prefill_tokens += (uint64_t)n_tokens;
}

const dist_traffic *dist_traffic_get(void) { return &g_traffic; }

/* Counts one exchange of `bytes` payload in the evaluation now running. */
static void count_exchange(uint64_t bytes) {
    if (g_eval_tokens == 1) {
        g_traffic.decode_reduces++;
        g_traffic.decode_bytes += bytes;
    } else {
        g_traffic.prefill_reduces++;
        g_traffic.prefill_bytes += bytes;
    }
}

/* The owned-slots exchange: every rank packs the rows of its own experts,
 * in expert order, into its block of one buffer (the blocks in rank
 * order), MPI_Allgatherv fills the other blocks, and each rank copies
 * every other rank's rows back to their places, walking the experts in
 * the same order.  Every rank computes the same counts from the same
 * routing, so nothing but the rows travels. */
static float *g_xbuf;
static size_t g_xcap;
static MPI_Datatype g_row = MPI_DATATYPE_NULL;
static int g_row_dim;
static int *g_counts, *g_displs, *g_cursor;

int dist_moe_exchange(void *user, int layer, float *slots, int dim, int n_experts, const int32_t *start) {
    (void)user;
    const int N = g_size;
    const size_t rows = (size_t)start[n_experts], row_bytes = sizeof(float) * (size_t)dim;
    if (!g_counts) {
        g_counts = calloc((size_t)N * 3, sizeof(int));
        if (!g_counts) dist_fail("out of memory for the exchange of layer %d", layer);
        g_displs = g_counts + N;
        g_cursor = g_displs + N;
    }
    if (g_row_dim != dim) {
        if (g_row != MPI_DATATYPE_NULL) MPI_Type_free(&g_row);
        check(MPI_Type_contiguous(dim, MPI_FLOAT, &g_row), "MPI_Type_contiguous", "the exchange's row type");
        check(MPI_Type_commit(&g_row), "MPI_Type_commit", "the exchange's row type");
        g_row_dim = dim;
    }
    if (rows * (size_t)dim > g_xcap) {
        free(g_xbuf);
        g_xcap = rows * (size_t)dim;
        g_xbuf = malloc(g_xcap * sizeof(float));
        if (!g_xbuf) dist_fail("out of memory for the exchange of layer %d (%zu rows)", layer, rows);
    }
    memset(g_counts, 0, sizeof(int) * (size_t)N);
    for (int e = 0; e < n_experts; e++) g_counts[es_expert_owner(N, layer, e)] += start[e + 1] - start[e];
    for (int r = 0, d = 0; r < N; r++) {
        g_displs[r] = g_cursor[r] = d;
        d += g_counts[r];
    }
    for (int e = 0; e < n_experts; e++) {
        int r = es_expert_owner(N, layer, e), n = start[e + 1] - start[e];
        if (r == g_rank && n > 0)
            memcpy(g_xbuf + (size_t)g_cursor[r] * dim, slots + (size_t)start[e] * dim, row_bytes * (size_t)n);
        g_cursor[r] += n;
    }
    arm(1, "the exchange of the experts' outputs (MPI_Allgatherv)", layer);
    MPI_Request req;
    int rc = MPI_Iallgatherv(MPI_IN_PLACE, 0, g_row, g_xbuf, g_counts, g_displs, g_row, MPI_COMM_WORLD,
                             &req);
    if (rc == MPI_SUCCESS) rc = wait_polite(&req);
    disarm();
    if (rc != MPI_SUCCESS) {
        char what[64];
        snprintf(what, sizeof what, "the exchange of layer %d", layer);
        check(rc, "MPI_Allgatherv", what);
    }
    for (int r = 0; r < N; r++) g_cursor[r] = g_displs[r];
    for (int e = 0; e < n_experts; e++) {
        int r = es_expert_owner(N, layer, e), n = start[e + 1] - start[e];
        if (r != g_rank && n > 0)
            memcpy(slots + (size_t)start[e] * dim, g_xbuf + (size_t)g_cursor[r] * dim, row_bytes * (size_t)n);
        g_cursor[r] += n;
    }
    count_exchange((uint64_t)g_counts[g_rank] * row_bytes);
    return 0;
}

int dist_moe_reduce(void *user, int layer, float *slots, size_t n_floats) {
    (void)user;
    arm(1, "the reduce of the experts' outputs (MPI_Allreduce)", layer);
    for (size_t off = 0; off < n_floats;) {
        int c = n_floats - off > (size_t)INT_MAX ? INT_MAX : (int)(n_floats - off);
        MPI_Request req;
        int rc = MPI_Iallreduce(MPI_IN_PLACE, slots + off, c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req);
        if (rc == MPI_SUCCESS) rc = wait_polite(&req);
        if (rc != MPI_SUCCESS) {
            char what[64];
            snprintf(what, sizeof what, "the reduce of layer %d", layer);
            check(rc, "MPI_Allreduce", what);
        }
        off += (size_t)c;
    }
    disarm();
    count_exchange(n_floats * sizeof(float));
    return 0;
}
