/* threadpool.h — persistent worker threads for data-parallel loops.
 *
 * Threads are created once; es_pool_run hands them a loop over [0, n) split
 * into chunks claimed through an atomic counter, the calling thread takes a
 * share too, and returns when every item is done.  Small loops run serially
 * on the caller.  Results never depend on the thread count as long as each
 * item writes its own outputs (rows of a matrix-vector product, heads).
 */
#ifndef ES_THREADPOOL_H
#define ES_THREADPOOL_H

#include <stdint.h>

typedef struct es_pool es_pool;

/* fn processes items [i0, i1) on thread tid (0 = the caller, < n_threads),
 * so a task can use per-thread scratch */
typedef void (*es_task_fn)(void *ctx, int64_t i0, int64_t i1, int tid);

/* n_threads counts the caller: 1 means no workers.  NULL on failure. */
es_pool *es_pool_new(int n_threads);
void es_pool_free(es_pool *p);
int es_pool_threads(const es_pool *p);

/* Runs fn over [0, n) in chunks of `chunk` items (>= 1).  A NULL pool or a
 * loop of a single chunk runs on the caller. */
void es_pool_run(es_pool *p, es_task_fn fn, void *ctx, int64_t n, int64_t chunk);

/* Physical cores of this machine (sysfs topology), else online CPUs. */
int es_default_threads(void);

#endif
