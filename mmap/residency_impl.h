/* residency_impl.h — the residency manager's state, shared by residency.c
 * (loading, eviction, the request protocol) and stats.c (the report).
 * Internal to mmap/. */
#ifndef ES_RESIDENCY_IMPL_H
#define ES_RESIDENCY_IMPL_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "budget.h"
#include "policy.h"
#include "residency.h"

enum { ST_ABSENT = 0, ST_QUEUED, ST_LOADING, ST_RESIDENT };
enum { Q_DEMAND = 1, Q_PREFETCH = 2 };

typedef struct es_uq {
    int32_t *buf;
    int cap, head, n;
} es_uq;

/* a page range of the mapping to drop after an eviction */
typedef struct es_drop {
    uint64_t lo, hi;
    int locked;
} es_drop;

typedef struct es_res_layer_stats {
    int64_t accesses, hits, pf_hits, misses;
    int64_t predicted, pred_used, pred_actual;
    double stall_s;
} es_res_layer_stats;

struct es_res {
    int mode, policy_kind;
    int mode_auto;           /* the mode was chosen from the budget (ES_EXPERTS_DEFAULT) */
    const uint8_t *base;     /* the read-only mapping of the whole file */
    int first_moe, L, E, k, U; /* MoE layers first_moe .. first_moe+L-1; U = L*E units */
    int U_owned;         /* the units this process computes (a share of them: es_res_layout.owned) */
    uint64_t page, align;    /* page size; O_DIRECT alignment (>= 4096) */
    uint64_t *off;           /* [U][3] file offsets of gate, up, down */
    uint64_t *len;           /* [L][3] their lengths */
    int64_t unit_bytes;      /* widest unit */
    int64_t expert_bytes_total, hot_bytes;

    /* budget */
    es_mem_info mem;
    int budget_auto;
    int64_t budget, session_bytes, margin;
    char budget_note[160];

    /* files: fd for fadvise and buffered reads, fd_direct with O_DIRECT;
     * the path, size and modification time, for messages and to notice
     * the file change */
    int fd, fd_direct;
    char *path;
    uint64_t file_size;
    struct timespec file_mtime;
    int mlock, populate, stats_plain;
    char mlock_note[160];

    /* pread cache: n_slots slots of slot_bytes; range q at offset sofs[q] */
    uint8_t *slab;
    size_t slab_bytes, slot_bytes, n_slots, n_free, sofs[3];
    int32_t *free_slot;

    /* per unit */
    uint8_t *state, *qkind, *needed, *taken, *prefetched, *pred, *locked, *in_dq, *in_pq;
    int32_t *weight;         /* tokens routed in the running request */
    int32_t *slot;
    es_pol *pol;

    pthread_mutex_t mu;      /* everything here */
    pthread_mutex_t req_mu;  /* one request (begin .. end) at a time */
    pthread_cond_t cv_io;    /* work for the I/O threads */
    pthread_cond_t cv_done;  /* a load finished or pins dropped */
    pthread_t *threads;
    int n_threads, stop, prefetch;
    int failed;              /* a load failed (read under mu, or atomically): sticky */
    char fail_msg[320];      /* its message */
    es_uq dq, pq;            /* demand and prefetch queues */

    /* the running request */
    int cur_layer, cur_T, n_pend, n_handed;
    int32_t *pend;           /* [E] units requested */
    int burst, burst_misses;
    uint8_t *pred_valid;     /* [L] a prediction for the layer is pending */

    /* mmap-plain --stats */
    unsigned char *mincore_vec;
    size_t mincore_cap;

    /* statistics */
    es_res_layer_stats *lstats;
    int64_t n_loads, n_pf_loads, n_evictions, n_pf_wasted, n_pf_dropped, n_bursts, n_io_errors;
    int64_t bytes_loaded, max_resident, tokens, tokens_decode;
    double stall_s, stall_decode_s;
    double load_cpu_s;       /* CPU time (user + system) the loads and evictions took */
    long majflt0, load_majflt;
    int64_t read_bytes0;
};

double es_res_now(void);
/* read_bytes of /proc/self/io (bytes this process caused to be read from
 * storage), -1 if unavailable */
int64_t es_res_proc_read_bytes(void);

#endif
