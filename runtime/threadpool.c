/* threadpool.c — see threadpool.h.
 *
 * A job is published by bumping `generation` under the mutex and
 * broadcasting; workers spin briefly on the generation before sleeping on
 * the condition variable, so back-to-back jobs (hundreds per token) avoid a
 * sleep/wake round trip.  Each job's chunks are claimed with an atomic
 * fetch-add; the caller waits (spinning, then yielding) until every worker
 * has checked out of the job. */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SPIN_ITERS 20000

typedef struct es_pool es_pool;
typedef struct worker_arg {
    es_pool *pool;
    int tid;
} worker_arg;

typedef struct job {
    es_task_fn fn;
    void *ctx;
    int64_t n, chunk;
} job;

struct es_pool {
    int n_threads;
    pthread_t *threads;
    worker_arg *args;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job cur;
    _Alignas(64) atomic_uint_fast64_t generation;
    _Alignas(64) atomic_int_fast64_t next;   /* next item to claim */
    _Alignas(64) atomic_int pending;         /* workers still in the job */
    atomic_int stop;
};

static void work(es_pool *p, const job *j, int tid) {
    for (;;) {
        int64_t i0 = atomic_fetch_add(&p->next, j->chunk);
        if (i0 >= j->n) break;
        int64_t i1 = i0 + j->chunk < j->n ? i0 + j->chunk : j->n;
        j->fn(j->ctx, i0, i1, tid);
    }
}

static void *worker(void *arg) {
    es_pool *p = ((worker_arg *)arg)->pool;
    const int tid = ((worker_arg *)arg)->tid;
    uint_fast64_t seen = 0;
    for (;;) {
        uint_fast64_t g;
        int spins = 0;
        while ((g = atomic_load(&p->generation)) == seen && !atomic_load(&p->stop)) {
            if (++spins < SPIN_ITERS) continue;
            pthread_mutex_lock(&p->mu);
            while (atomic_load(&p->generation) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = g;
        job j = p->cur;
        work(p, &j, tid);
        atomic_fetch_sub(&p->pending, 1);
    }
}

es_pool *es_pool_new(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    es_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof(pthread_t));
        p->args = calloc((size_t)n_threads - 1, sizeof(worker_arg));
        if (!p->threads || !p->args) { p->n_threads = 1; es_pool_free(p); return NULL; }
        for (int i = 0; i < n_threads - 1; i++) {
            p->args[i] = (worker_arg){p, i + 1};
            if (pthread_create(&p->threads[i], NULL, worker, &p->args[i]) != 0) {
                p->n_threads = i + 1; /* keep the ones that started */
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
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

int es_pool_threads(const es_pool *p) { return p ? p->n_threads : 1; }

void es_pool_run(es_pool *p, es_task_fn fn, void *ctx, int64_t n, int64_t chunk) {
    if (n <= 0) return;
    if (chunk < 1) chunk = 1;
    if (!p || p->n_threads == 1 || n <= chunk) {
        fn(ctx, 0, n, 0);
        return;
    }
    p->cur = (job){fn, ctx, n, chunk};
    atomic_store(&p->next, 0);
    atomic_store(&p->pending, p->n_threads - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    job j = p->cur;
    work(p, &j, 0);
    int spins = 0;
    while (atomic_load(&p->pending) > 0)
        if (++spins > SPIN_ITERS) sched_yield();
}

int es_default_threads(void) {
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online < 1) online = 1;
    /* count distinct (package, core) pairs */
    int cores = 0;
    static int seen[4096];
    memset(seen, 0, sizeof seen);
    for (long cpu = 0; cpu < online && cpu < 4096; cpu++) {
        char path[128];
        int core = -1, pkg = 0;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%ld/topology/core_id", cpu);
        FILE *f = fopen(path, "r");
        if (!f) return (int)online;
        if (fscanf(f, "%d", &core) != 1) core = -1;
        fclose(f);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%ld/topology/physical_package_id", cpu);
        f = fopen(path, "r");
        if (f) { if (fscanf(f, "%d", &pkg) != 1) pkg = 0; fclose(f); }
        if (core < 0) return (int)online;
        int key = (pkg * 1024 + core) % 4096;
        if (!seen[key]) { seen[key] = 1; cores++; }
    }
    return cores > 0 ? cores : (int)online;
}
