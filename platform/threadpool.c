/* threadpool.c — see threadpool.h.
 *
 * One atomic word, `job`, holds the current job's generation, a "closed"
 * bit and the number of workers inside the job.  The caller writes the
 * job's fields, then publishes it by storing a new generation (open, no one
 * inside) and waking sleepers.  A worker that sees a new generation enters
 * by a compare-and-swap that succeeds only while the job is still open and
 * of that generation, so once inside it may read the fields; it claims
 * items from per-node queues by atomic fetch-add (each counter alone on its
 * cache line), then leaves.  The caller takes items too; when none is left
 * to claim it closes the job and waits only for the workers inside, that
 * is for items already claimed.  A worker that wakes late (preempted, or
 * slow to be scheduled) finds the job closed and goes back to waiting: it
 * never holds up the join.
 *
 * Waiting spins a short while (pause hints, then sched_yield so a thread
 * the OS put on the same CPU can run), then sleeps on a condition variable;
 * while the caller finds itself waiting for a CPU (the CPUs are
 * oversubscribed) threads sleep at once instead: a spinning thread would
 * take CPU time from the one doing the work.
 *
 * Contention: on a machine whose CPUs other programs also use, a worker
 * can be preempted in the middle of an item, and the join then waits a
 * whole scheduler time slice for it, hundreds of times per token.  The
 * caller measures, over windows of regions, the time it spent running
 * chunks, the time it waited at the join after running out of them, and
 * how many chunks the workers ran; when the workers' chunks saved less time
 * than the join waited for them (see adapt), it parks its highest-numbered
 * workers (they sleep until needed), and from time to time lets one back
 * in to see whether the CPUs have freed up, backing off while they have
 * not.  Which thread runs an item never changes what the item computes, so
 * results do not depend on any of this. */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "numa_topo.h"

#define CACHE_LINE 64
/* How long an idle thread spins before sleeping: longer than the serial
 * gaps between the jobs of one token, far shorter than a user's pause.
 * The first SPIN_PAUSE_NS with pause hints only, then yielding the CPU. */
#define SPIN_NS 200000
#define SPIN_PAUSE_NS 20000

/* The adaptive worker count (see above): a window is at least WINDOW_JOBS
 * parallel regions and WINDOW_NS; workers are parked unless they make the
 * window's regions SPEEDUP_MIN times faster than the caller alone; the
 * first probe after parking comes after PROBE_MIN_NS, doubling after each
 * failed probe up to PROBE_MAX_NS.  Threads stop spinning while the caller
 * waits for a CPU over RUN_DELAY_HI of a window. */
#define WINDOW_JOBS 64
#define WINDOW_NS 2000000
#define SPEEDUP_MIN 1.1
#define RUN_DELAY_HI 0.1
#define PROBE_MIN_NS 50000000
#define PROBE_MAX_NS 1600000000

/* the job word: generation << JOB_GEN_SHIFT | closed | workers inside */
#define JOB_INSIDE ((uint64_t)0x7fffff)
#define JOB_CLOSED ((uint64_t)1 << 23)
#define JOB_GEN_SHIFT 24

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
    int yield = 0;
    for (unsigned i = 0;; i++) {
        if (!cond(arg)) return 1;
        if (yield) sched_yield();
        else cpu_relax();
        if ((i & 63) == 63 || yield) {
            int64_t t = now_ns();
            if (!t0) t0 = t;
            else if (t - t0 > SPIN_NS) return 0;
            else if (t - t0 > SPIN_PAUSE_NS) yield = 1;
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
    pthread_cond_t cv;       /* active workers: a new job or stop */
    pthread_cond_t park_cv;  /* parked workers: unparked, a job for all, or stop */
    pthread_cond_t done_cv;  /* caller: the last worker left the job */
    /* the current job, written by the caller before it is published */
    es_task_fn fn;
    void *ctx;
    int64_t chunk;
    int node_job;            /* 1: node-aware loop (items start on their node) */
    int steal;               /* node-aware loop: idle threads help other nodes */
    atomic_int limit;        /* threads tid < limit take part */
    queue *q;                /* [n_nodes], cache-line aligned */
    /* the adaptive worker count, kept by the caller */
    int adapt;               /* 0: never park (es_pool_set_adaptive) */
    int probing;             /* the window measures a worker just let back in */
    int64_t win_jobs, win_t0, win_wait, win_span, win_own;
    int64_t probe_at, probe_gap, serial_jobs;
    int64_t run_delay;       /* the caller's time waiting for a CPU so far (ns; -1: unknown) */
    _Alignas(CACHE_LINE) atomic_uint_fast64_t job;
    atomic_int stop;
    atomic_int active;       /* workers tid < active take part; the rest park */
    atomic_int n_sleeping;   /* workers asleep on cv */
    atomic_int spin;         /* 0: the CPUs are oversubscribed, wait without spinning */
    atomic_int_fast64_t helped; /* chunks the workers ran (this window) */
    _Alignas(CACHE_LINE) atomic_int caller_sleeping;
};

/* Runs the queue's chunks until none is left; returns how many it ran. */
static int64_t drain(es_pool *p, queue *q, int tid) {
    const int64_t chunk = p->chunk;
    int64_t ran = 0;
    for (;; ran++) {
        int64_t i0 = atomic_fetch_add_explicit(&q->next, chunk, memory_order_relaxed);
        if (i0 >= q->end) return ran;
        int64_t i1 = i0 + chunk < q->end ? i0 + chunk : q->end;
        p->fn(p->ctx, i0, i1, tid);
    }
}

/* Runs chunks of the current job until none is left for this thread;
 * returns how many it ran. */
static int64_t do_job(es_pool *p, int tid) {
    const int home = p->thread_node[tid], N = p->n_nodes;
    int64_t ran = 0;
    if (p->node_job) {
        for (int k = 0; k < N; k++)
            if (p->serve[k] == home) ran += drain(p, &p->q[k], tid);
        if (!p->steal) return ran;
        /* every queue this thread serves is empty now (counters only
         * grow): help the other nodes, nearest id first, so one busy node
         * does not leave the rest idle */
        for (int j = 1; j < N; j++) {
            int k = (home + j) % N;
            if (p->serve[k] != home) ran += drain(p, &p->q[k], tid);
        }
        return ran;
    }
    /* own share first, then help the other nodes in turn */
    for (int j = 0; j < N; j++) ran += drain(p, &p->q[(home + j) % N], tid);
    return ran;
}

typedef struct gen_wait {
    es_pool *p;
    uint64_t seen;
} gen_wait;

static uint64_t job_gen(uint64_t j) { return j >> JOB_GEN_SHIFT; }

static int no_new_job(void *arg) {
    gen_wait *w = arg;
    return job_gen(atomic_load(&w->p->job)) == w->seen && !atomic_load(&w->p->stop);
}

/* A parked worker stays asleep unless it is let back in, a job wants every
 * thread (its limit covers the worker), or the pool stops.  The limit is
 * read without entering the job, so it may be stale: a spurious wake-up
 * only costs a failed entry. */
static int parked(es_pool *p, int tid, uint64_t seen) {
    if (atomic_load(&p->stop) || tid < atomic_load(&p->active)) return 0;
    uint64_t j = atomic_load(&p->job);
    return job_gen(j) == seen || (j & JOB_CLOSED) || tid >= atomic_load_explicit(&p->limit, memory_order_relaxed);
}

/* Enters job generation `gen` if it is still open; 1 if entered. */
static int enter_job(es_pool *p, uint64_t gen) {
    uint64_t j = atomic_load(&p->job);
    while (job_gen(j) == gen && !(j & JOB_CLOSED))
        if (atomic_compare_exchange_weak(&p->job, &j, j + 1)) return 1;
    return 0;
}

static void leave_job(es_pool *p) {
    /* wakes the caller if it went to sleep: the last one out of a closed
     * job, or anyone while the caller waits for other nodes' items to be
     * claimed; seq_cst on both sides (Dekker) means one of us sees the
     * other */
    uint64_t prev = atomic_fetch_sub(&p->job, 1);
    if (((prev & JOB_INSIDE) == 1 || !(prev & JOB_CLOSED)) && atomic_load(&p->caller_sleeping)) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->done_cv);
        pthread_mutex_unlock(&p->mu);
    }
}

static void *worker(void *arg) {
    es_pool *p = ((worker_arg *)arg)->pool;
    const int tid = ((worker_arg *)arg)->tid;
    gen_wait w = {p, 0};
    for (;;) {
        if (tid >= atomic_load(&p->active)) {
            pthread_mutex_lock(&p->mu);
            while (parked(p, tid, w.seen)) pthread_cond_wait(&p->park_cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (!atomic_load_explicit(&p->spin, memory_order_relaxed) || !spin_while(no_new_job, &w)) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->n_sleeping, 1);
            while (no_new_job(&w) && tid < atomic_load(&p->active)) pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->n_sleeping, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) return NULL;
        if (no_new_job(&w)) continue; /* parked meanwhile */
        w.seen = job_gen(atomic_load(&p->job));
        if (!enter_job(p, w.seen)) continue; /* too late: the caller closed it */
        if (tid < atomic_load_explicit(&p->limit, memory_order_relaxed)) {
            int64_t ran = do_job(p, tid);
            if (ran) atomic_fetch_add_explicit(&p->helped, ran, memory_order_relaxed);
        }
        leave_job(p);
    }
}

static int job_busy(void *arg) { return (atomic_load(&((es_pool *)arg)->job) & JOB_INSIDE) != 0; }

/* Some queue still has items to claim.  The job word is read first: after
 * a worker's leave_job it synchronises with the worker, so its claims are
 * seen. */
static int items_left(void *arg) {
    es_pool *p = arg;
    (void)atomic_load(&p->job);
    for (int k = 0; k < p->n_nodes; k++)
        if (atomic_load_explicit(&p->q[k].next, memory_order_relaxed) < p->q[k].end) return 1;
    return 0;
}

/* Waits, spinning and then sleeping, while cond(p) holds; workers leaving
 * the job wake the caller. */
static void caller_wait(es_pool *p, int (*cond)(void *)) {
    if (atomic_load_explicit(&p->spin, memory_order_relaxed) && spin_while(cond, p)) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->caller_sleeping, 1);
    while (cond(p)) pthread_cond_wait(&p->done_cv, &p->mu);
    atomic_store(&p->caller_sleeping, 0);
    pthread_mutex_unlock(&p->mu);
}

/* The calling thread's time spent runnable but waiting for a CPU (ns), from
 * the scheduler's statistics; -1 where the kernel does not keep them. */
static int64_t run_delay_ns(void) {
    char buf[128];
    int fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    unsigned long long run, wait;
    return sscanf(buf, "%llu %llu", &run, &wait) == 2 ? (int64_t)wait : -1;
}

/* Ends the caller's measuring window: parks workers when the join waited
 * too long, lets one back in when a probe is due. */
static void adapt(es_pool *p, int64_t now, int64_t window_ns) {
    const int active = atomic_load(&p->active);
    /* The caller waited for a CPU over RUN_DELAY_HI of the window: more
     * threads want the CPUs than there are.  A spinning thread then takes
     * CPU time from the one doing the work (between regions too, where
     * the region timings do not see it): wait without spinning. */
    const int64_t rd = run_delay_ns(), rd_prev = p->run_delay;
    if (rd >= 0 && rd_prev >= 0 && window_ns > 0)
        atomic_store_explicit(&p->spin, (double)(rd - rd_prev) < RUN_DELAY_HI * (double)window_ns,
                              memory_order_relaxed);
    p->run_delay = rd;
    const int64_t n_jobs = p->win_jobs;
    p->win_jobs = 0;
    if (n_jobs) {
        const int64_t helped = atomic_exchange(&p->helped, 0), own = p->win_own;
        /* At the caller's pace (its time working per chunk it ran), the
         * window's chunks would have taken work * (own + helped) / own on
         * the caller alone, against work + wait with the workers: they
         * pay only if what they ran saved more than the join waited
         * for them, by SPEEDUP_MIN. */
        const double work = (double)(p->win_span - p->win_wait);
        const int bad = own > 0 && work * (double)(own + helped) < SPEEDUP_MIN * (double)p->win_span * (double)own;
#ifdef ES_POOL_TRACE /* make CFLAGS="-O2 -DES_POOL_TRACE": one line per window */
        fprintf(stderr, "[pool] %d active, %lld jobs: join waited %.3f of %.3f ms; chunks: caller %lld, workers %lld%s\n",
                active, (long long)n_jobs, (double)p->win_wait / 1e6, (double)p->win_span / 1e6, (long long)own,
                (long long)helped, p->probing ? " (probe)" : "");
        fprintf(stderr, "[pool]   window %.3f ms, caller waited for a CPU %.3f ms: %s\n", (double)window_ns / 1e6,
                rd >= 0 && rd_prev >= 0 ? (double)(rd - rd_prev) / 1e6 : -1.0,
                atomic_load(&p->spin) ? "spin" : "no spin");
#endif
        p->win_own = 0;
        p->win_wait = p->win_span = 0;
        if (bad && active > 1) {
            /* a failed probe backs off; otherwise start over */
            p->probe_gap = p->probing ? p->probe_gap * 2 : PROBE_MIN_NS;
            if (p->probe_gap > PROBE_MAX_NS) p->probe_gap = PROBE_MAX_NS;
            p->probe_at = now + p->probe_gap;
            p->probing = 0;
            int shrink = active / 4 > 1 ? active / 4 : 1;
            atomic_store(&p->active, active - shrink);
            /* workers now parked notice on their next wake-up */
            return;
        }
        if (!bad) p->probing = 0; /* the probe paid off (or nothing changed) */
    }
    if (active < p->n_threads && now >= p->probe_at) {
        p->probing = 1;
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->active, active + 1);
        pthread_cond_broadcast(&p->park_cv);
        pthread_mutex_unlock(&p->mu);
    }
}

/* The caller's clock for the window, on serial regions too (a parked pool
 * must still notice when a probe is due). */
static void count_serial(es_pool *p) {
    if (!p->adapt || ++p->serial_jobs % WINDOW_JOBS) return;
    int64_t now = now_ns();
    if (now - p->win_t0 >= WINDOW_NS) {
        adapt(p, now, now - p->win_t0);
        p->win_t0 = now;
    }
}

/* Publishes the job set up in p (threads tid < limit take part), takes the
 * caller's share, and joins. */
static void publish_and_join(es_pool *p, int limit) {
    const int64_t t0 = now_ns();
    atomic_store_explicit(&p->limit, limit, memory_order_relaxed);
    uint64_t gen = job_gen(atomic_load(&p->job)) + 1;
    atomic_store(&p->job, gen << JOB_GEN_SHIFT);
    if (atomic_load(&p->n_sleeping) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    if (limit > atomic_load(&p->active)) { /* a job for every thread, parked ones too */
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->park_cv);
        pthread_mutex_unlock(&p->mu);
    }
    p->win_own += do_job(p, 0);
    /* a node-aware loop without stealing may leave other nodes' items
     * that only their threads may claim */
    if (p->node_job && !p->steal && p->n_nodes > 1) caller_wait(p, items_left);
    const int64_t t1 = now_ns();
    /* nothing left to claim: no one else gets in, wait for those inside */
    if (atomic_fetch_or(&p->job, JOB_CLOSED) & JOB_INSIDE) caller_wait(p, job_busy);
    if (!p->adapt) return;
    const int64_t t2 = now_ns();
    p->win_wait += t2 - t1;
    p->win_span += t2 - t0;
    if (++p->win_jobs >= WINDOW_JOBS && t2 - p->win_t0 >= WINDOW_NS) {
        adapt(p, t2, t2 - p->win_t0);
        p->win_t0 = t2;
    }
}

void es_pool_set_adaptive(es_pool *p, int on) {
    if (p) p->adapt = on != 0;
}

es_pool *es_pool_new(int n_threads) { return es_pool_new_numa(n_threads, NULL); }

es_pool *es_pool_new_numa(int n_threads, const es_numa_topo *topo) {
    if (n_threads < 1) n_threads = 1;
    es_pool *p = aligned_alloc(CACHE_LINE, (sizeof *p + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE);
    if (!p) return NULL;
    memset(p, 0, sizeof *p);
    const int N = topo && topo->n_nodes > 1 ? topo->n_nodes : 1;
    p->n_threads = n_threads;
    atomic_store(&p->active, n_threads);
    p->adapt = 1;
    atomic_store(&p->spin, 1);
    p->run_delay = -1;
    p->n_nodes = N;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_cond_init(&p->park_cv, NULL);
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
                atomic_store(&p->active, p->n_threads);
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
    pthread_cond_broadcast(&p->park_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; p->threads && i < p->n_threads - 1; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    free(p->args);
    free(p->thread_node);
    free(p->q);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    pthread_cond_destroy(&p->park_cv);
    pthread_cond_destroy(&p->done_cv);
    free(p);
}

int es_pool_threads(const es_pool *p) { return p ? p->n_threads : 1; }
int es_pool_nodes(const es_pool *p) { return p ? p->n_nodes : 1; }
int es_pool_pinned(const es_pool *p) { return p ? p->n_pinned : 0; }
int es_pool_active(const es_pool *p) { return p ? atomic_load(&((es_pool *)p)->active) : 1; }

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
    const int active = atomic_load(&p->active);
    if (active == 1) { /* every worker parked: as with one thread */
        count_serial(p);
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
    publish_and_join(p, active);
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
    /* parked workers sit out only where others may take their items:
     * without stealing every node's own threads are needed */
    const int limit = serial ? 1 : steal || N == 1 ? atomic_load(&p->active) : p->n_threads;
    if (!serial && limit == 1) {
        count_serial(p);
        serial = 1;
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
    publish_and_join(p, limit);
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
