/* threadpool.c — see threadpool.h.
 *
 * A job is published by bumping `generation` under the mutex and
 * broadcasting; workers spin briefly (with a pause hint) on the generation
 * before sleeping on a condition variable, so back-to-back jobs (hundreds
 * per token) avoid a sleep/wake round trip.  Items are claimed from
 * per-node queues by atomic fetch-add, each queue's counter alone on its
 * cache line so nodes do not bounce one line between sockets.  The join is
 * the same spin-then-sleep in reverse: the caller spins on `pending`, then
 * sleeps until the last worker out wakes it. */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "numa_topo.h"

#define CACHE_LINE 64
/* How long an idle thread spins before sleeping: longer than the serial
 * gaps between the jobs of one token, far shorter than a user's pause. */
#define SPIN_NS 200000

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spins while *cond(arg) holds, for about SPIN_NS; returns 1 if the
 * condition cleared, 0 if the time ran out. */
static int spin_while(int (*cond)(void *), void *arg) {
    int64_t t0 = 0;
    for (unsigned i = 0;; i++) {
        if (!cond(arg)) return 1;
        cpu_relax();
        if ((i & 63) == 63) {
            int64_t t = now_ns();
            if (!t0) t0 = t;
            else if (t - t0 > SPIN_NS) return 0;
        }
    }
}

typedef struct queue {
    _Alignas(CACHE_LINE) atomic_int_fast64_t next; /* next item to claim */
    int64_t end;
} queue;

typedef struct worker_arg {
    struct es_pool *pool;
    int tid;
} worker_arg;

struct es_pool {
    int n_threads;
    int n_nodes;             /* nodes of the topology (1 without) */
    int n_pinned;
    int *thread_node;        /* [n_threads] */
    int serve[ES_MAX_NODES]; /* node whose threads take node k's items */
    int homes[ES_MAX_NODES]; /* threads per node */
    pthread_t *threads;
    worker_arg *args;
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* workers: a new job or stop */
    pthread_cond_t done_cv;  /* caller: the last worker left the job */
    /* the current job, written by the caller before it is published */
    es_task_fn fn;
    void *ctx;
    int64_t chunk;
    int node_job;            /* 1: node-aware loop (items start on their node) */
    int steal;               /* node-aware loop: idle threads help other nodes */
    queue *q;                /* [n_nodes], cache-line aligned */
    _Alignas(CACHE_LINE) atomic_uint_fast64_t generation;
    atomic_int stop;
    _Alignas(CACHE_LINE) atomic_int pending;         /* workers still in the job */
    _Alignas(CACHE_LINE) atomic_int caller_sleeping;
};

static void drain(es_pool *p, queue *q, int tid) {
    const int64_t chunk = p->chunk;
    for (;;) {
        int64_t i0 = atomic_fetch_add_explicit(&q->next, chunk, memory_order_relaxed);
        if (i0 >= q->end) break;
        int64_t i1 = i0 + chunk < q->end ? i0 + chunk : q->end;
        p->fn(p->ctx, i0, i1, tid);
    }
}

static void do_job(es_pool *p, int tid) {
    const int home = p->thread_node[tid], N = p->n_nodes;
    if (p->node_job) {
        for (int k = 0; k < N; k++)
            if (p->serve[k] == home) drain(p, &p->q[k], tid);
        if (!p->steal) return;
        /* every queue this thread serves is empty now (counters only
         * grow): help the other nodes, nearest id first, so one busy node
         * does not leave the rest idle */
        for (int j = 1; j < N; j++) {
            int k = (home + j) % N;
            if (p->serve[k] != home) drain(p, &p->q[k], tid);
        }
        return;
    }
    /* own share first, then help the other nodes in turn */
    for (int j = 0; j < N; j++) drain(p, &p->q[(home + j) % N], tid);
}

typedef struct gen_wait {
    es_pool *p;
    uint_fast64_t seen;
} gen_wait;

static int no_new_job(void *arg) {
    gen_wait *w = arg;
    return atomic_load(&w->p->generation) == w->seen && !atomic_load(&w->p->stop);
}

static void *worker(void *arg) {
    es_pool *p = ((worker_arg *)arg)->pool;
    const int tid = ((worker_arg *)arg)->tid;
    gen_wait w = {p, 0};
    for (;;) {
        if (!spin_while(no_new_job, &w)) {
            pthread_mutex_lock(&p->mu);
            while (no_new_job(&w)) pthread_cond_wait(&p->cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) return NULL;
        w.seen = atomic_load(&p->generation);
        do_job(p, tid);
        /* the last one out wakes the caller if it went to sleep; seq_cst on
         * both sides (Dekker) means one of us sees the other */
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->caller_sleeping)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_broadcast(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static int job_pending(void *arg) { return atomic_load(&((es_pool *)arg)->pending) > 0; }

/* Publishes the job set up in p, takes the caller's share, and joins. */
static void publish_and_join(es_pool *p) {
    atomic_store(&p->pending, p->n_threads - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    do_job(p, 0);
    if (!spin_while(job_pending, p)) {
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->caller_sleeping, 1);
        while (atomic_load(&p->pending) > 0) pthread_cond_wait(&p->done_cv, &p->mu);
        atomic_store(&p->caller_sleeping, 0);
        pthread_mutex_unlock(&p->mu);
    }
}

es_pool *es_pool_new(int n_threads) { return es_pool_new_numa(n_threads, NULL); }

es_pool *es_pool_new_numa(int n_threads, const es_numa_topo *topo) {
    if (n_threads < 1) n_threads = 1;
    es_pool *p = aligned_alloc(CACHE_LINE, (sizeof *p + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE);
    if (!p) return NULL;
    memset(p, 0, sizeof *p);
    const int N = topo && topo->n_nodes > 1 ? topo->n_nodes : 1;
    p->n_threads = n_threads;
    p->n_nodes = N;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    p->thread_node = malloc(sizeof(int) * (size_t)n_threads);
    p->q = aligned_alloc(CACHE_LINE, sizeof(queue) * (size_t)N);
    if (!p->thread_node || !p->q) { p->n_threads = 1; es_pool_free(p); return NULL; }
    memset(p->q, 0, sizeof(queue) * (size_t)N);
    /* contiguous blocks of threads per node; fewer threads than nodes: one
     * thread on each of the first nodes, which also serve the rest */
    for (int t = 0; t < n_threads; t++) {
        p->thread_node[t] = n_threads >= N ? (int)((int64_t)t * N / n_threads) : t;
        p->homes[p->thread_node[t]]++;
    }
    for (int k = 0; k < N; k++) p->serve[k] = p->homes[k] ? k : k % n_threads;
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof(pthread_t));
        p->args = calloc((size_t)n_threads - 1, sizeof(worker_arg));
        if (!p->threads || !p->args) { p->n_threads = 1; es_pool_free(p); return NULL; }
        for (int i = 0; i < n_threads - 1; i++) {
            p->args[i] = (worker_arg){p, i + 1};
            int started = 0;
            if (N > 1) {
                /* start the thread on its node (its stack is touched there
                 * first); a container may refuse the CPU set */
                cpu_set_t set;
                CPU_ZERO(&set);
                int node = p->thread_node[i + 1];
                for (int c = topo->cpu_start[node]; c < topo->cpu_start[node + 1]; c++)
                    if (topo->cpus[c] >= 0 && topo->cpus[c] < CPU_SETSIZE) CPU_SET(topo->cpus[c], &set);
                pthread_attr_t attr;
                if (CPU_COUNT(&set) && pthread_attr_init(&attr) == 0) {
                    if (pthread_attr_setaffinity_np(&attr, sizeof set, &set) == 0 &&
                        pthread_create(&p->threads[i], &attr, worker, &p->args[i]) == 0) {
                        started = 1;
                        p->n_pinned++;
                    }
                    pthread_attr_destroy(&attr);
                }
            }
            if (!started && pthread_create(&p->threads[i], NULL, worker, &p->args[i]) != 0) {
                /* keep the ones that started; recompute who serves whom */
                p->n_threads = i + 1;
                memset(p->homes, 0, sizeof p->homes);
                for (int t = 0; t < p->n_threads; t++) p->homes[p->thread_node[t]]++;
                for (int k = 0; k < N; k++) {
                    int s = k;
                    while (!p->homes[s]) s = (s + N - 1) % N; /* node 0 always has the caller */
                    p->serve[k] = s;
                }
                break;
            }
        }
    }
    return p;
}

void es_pool_free(es_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; p->threads && i < p->n_threads - 1; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    free(p->args);
    free(p->thread_node);
    free(p->q);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    pthread_cond_destroy(&p->done_cv);
    free(p);
}

int es_pool_threads(const es_pool *p) { return p ? p->n_threads : 1; }
int es_pool_nodes(const es_pool *p) { return p ? p->n_nodes : 1; }
int es_pool_pinned(const es_pool *p) { return p ? p->n_pinned : 0; }

int es_pool_thread_node(const es_pool *p, int tid) {
    return p && tid >= 0 && tid < p->n_threads ? p->thread_node[tid] : 0;
}

int es_pool_serving_node(const es_pool *p, int k) {
    return p && k >= 0 && k < p->n_nodes ? p->serve[k] : 0;
}

void es_pool_run(es_pool *p, es_task_fn fn, void *ctx, int64_t n, int64_t chunk) {
    if (n <= 0) return;
    if (chunk < 1) chunk = 1;
    if (!p || p->n_threads == 1 || n <= chunk) {
        fn(ctx, 0, n, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->chunk = chunk;
    p->node_job = 0;
    /* node k starts on a share of [0, n) in proportion to its threads,
     * cut at multiples of the chunk: the ranges fn sees are the same as
     * with one queue, whatever the nodes (kernels may tile by them) */
    const int64_t n_chunks = (n + chunk - 1) / chunk;
    int64_t start = 0, acc = 0;
    for (int k = 0; k < p->n_nodes; k++) {
        acc += p->homes[k];
        int64_t end = n_chunks * acc / p->n_threads * chunk;
        if (end > n || k == p->n_nodes - 1) end = n;
        atomic_store_explicit(&p->q[k].next, start, memory_order_relaxed);
        p->q[k].end = end;
        start = end;
    }
    publish_and_join(p);
}

void es_pool_run_nodes(es_pool *p, es_task_fn fn, void *ctx, const int64_t *node_start, int64_t chunk, int steal) {
    const int N = es_pool_nodes(p);
    const int64_t n = node_start[N];
    if (n <= node_start[0]) return;
    if (chunk < 1) chunk = 1;
    /* serial on the caller: one thread, or a single chunk that the caller
     * may take (its node's, or any when stealing) — waking the workers
     * would cost more than the chunk */
    int serial = !p || p->n_threads == 1;
    if (!serial && n - node_start[0] <= chunk) {
        int k = 0;
        while (node_start[k + 1] <= node_start[0]) k++;
        serial = steal || p->serve[k] == 0;
    }
    if (serial) {
        for (int k = 0; p && k < N; k++) { /* nothing left for es_pool_node_left */
            atomic_store_explicit(&p->q[k].next, node_start[k + 1], memory_order_relaxed);
            p->q[k].end = node_start[k + 1];
        }
        /* chunks still stay within a node */
        for (int k = 0; k < N; k++)
            for (int64_t i = node_start[k]; i < node_start[k + 1]; i += chunk)
                fn(ctx, i, i + chunk < node_start[k + 1] ? i + chunk : node_start[k + 1], 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->chunk = chunk;
    p->node_job = 1;
    p->steal = steal;
    for (int k = 0; k < N; k++) {
        atomic_store_explicit(&p->q[k].next, node_start[k], memory_order_relaxed);
        p->q[k].end = node_start[k + 1];
    }
    publish_and_join(p);
}

int64_t es_pool_node_left(es_pool *p, int k) {
    if (!p || k < 0 || k >= p->n_nodes) return 0;
    int64_t left = p->q[k].end - atomic_load_explicit(&p->q[k].next, memory_order_relaxed);
    return left > 0 ? left : 0;
}

int es_default_threads(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    int allowed = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0) allowed = CPU_COUNT(&set);
    if (allowed < 1) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        allowed = online > 0 ? (int)online : 1;
        CPU_ZERO(&set);
        for (int c = 0; c < allowed && c < CPU_SETSIZE; c++) CPU_SET(c, &set);
    }
    /* distinct (package, core) pairs among the CPUs this process may use:
     * SMT siblings share a core's load ports, so one thread per core */
    enum { MAXK = 4096 };
    int keys[MAXK], n_keys = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &set)) continue;
        char path[128];
        int core = -1, pkg = 0;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
        FILE *f = fopen(path, "r");
        if (!f) return allowed;
        if (fscanf(f, "%d", &core) != 1) core = -1;
        fclose(f);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", cpu);
        f = fopen(path, "r");
        if (f) { if (fscanf(f, "%d", &pkg) != 1) pkg = 0; fclose(f); }
        if (core < 0) return allowed;
        int key = pkg * 65536 + core, seen = 0;
        for (int i = 0; i < n_keys && !seen; i++) seen = keys[i] == key;
        if (!seen && n_keys < MAXK) keys[n_keys++] = key;
    }
    return n_keys > 0 ? n_keys : allowed;
}
