/* threadpool.h — persistent worker threads for data-parallel loops.
 *
 * Threads are created once; es_pool_run hands them a loop over [0, n) split
 * into chunks claimed one at a time through atomic counters, the calling
 * thread takes chunks too, and returns when every item is done.  The join
 * waits only for chunks already claimed: a worker that has not started on
 * the loop when the caller runs out of chunks (preempted, or slow to wake)
 * is left out of it.  Small loops run serially on the caller.  Results never
 * depend on the thread count, or on which thread ran a chunk, as long as
 * each item writes its own outputs (rows of a matrix-vector product, heads).
 *
 * Contention: when other programs take the CPUs, so that workers run late
 * or are preempted inside a chunk, the pool parks workers (they sleep) and
 * runs with fewer, letting one back in now and then to see whether the
 * CPUs have freed up.  EDGESEEK_POOL_ADAPT=0 in the environment turns this
 * off (every thread always takes part).
 *
 * NUMA: a pool made with a topology spreads its threads over the nodes
 * (thread t of T on node t·N/T; the caller, tid 0, counts as node 0 and is
 * never pinned) and pins each worker to its node's CPUs where the OS
 * allows.  Plain loops start every node on its own contiguous share of
 * [0, n), each share with its own counter on its own cache line, and a
 * thread whose share runs dry helps the others; shares are cut at
 * multiples of the chunk, so fn sees the same ranges as with one node.  Node-aware loops
 * (es_pool_run_nodes) start every item on its own node and, when asked,
 * let threads that ran out of their node's items take other nodes'.
 */
#ifndef ES_THREADPOOL_H
#define ES_THREADPOOL_H

#include <stdint.h>

typedef struct es_pool es_pool;
struct es_numa_topo;

/* fn processes items [i0, i1) on thread tid (0 = the caller, < n_threads),
 * so a task can use per-thread scratch */
typedef void (*es_task_fn)(void *ctx, int64_t i0, int64_t i1, int tid);

/* n_threads counts the caller: 1 means no workers.  One node, no pinning.
 * NULL on failure. */
es_pool *es_pool_new(int n_threads);
/* As es_pool_new over the nodes of topo (NULL: one node, unpinned). */
es_pool *es_pool_new_numa(int n_threads, const struct es_numa_topo *topo);
void es_pool_free(es_pool *p);
int es_pool_threads(const es_pool *p);
/* Whether the pool parks workers that do not pay under CPU contention (on,
 * the default); set before the first es_pool_run. */
void es_pool_set_adaptive(es_pool *p, int on);

/* Runs fn over [0, n) in chunks of `chunk` items (>= 1).  A NULL pool or a
 * loop of a single chunk runs on the caller. */
void es_pool_run(es_pool *p, es_task_fn fn, void *ctx, int64_t n, int64_t chunk);

/* Threads that take part in loops now, counting the caller: n_threads
 * unless contention parked some (see above). */
int es_pool_active(const es_pool *p);

/* Nodes of the pool's topology (1 without one). */
int es_pool_nodes(const es_pool *p);
/* The node thread tid works for (0 for the caller). */
int es_pool_thread_node(const es_pool *p, int tid);
/* The node whose threads run node k's items: k itself when it has threads,
 * else k mod (nodes with threads) — only when there are fewer threads than
 * nodes. */
int es_pool_serving_node(const es_pool *p, int k);
/* Workers whose pinning the OS accepted. */
int es_pool_pinned(const es_pool *p);

/* Node-aware loop: items [node_start[k], node_start[k+1]) belong to node k,
 * for k < es_pool_nodes(p) (node_start has nodes + 1 entries, ascending),
 * in chunks of `chunk` items that never span two nodes; each item runs
 * exactly once.  Threads of es_pool_serving_node(k) claim node k's items.
 * steal = 0: no other thread ever runs them (so every thread takes part,
 * parked ones too, and the join waits for each node's threads to claim its
 * items).  steal = 1: a thread whose own
 * nodes' queues are empty helps the other nodes (never before), so an
 * uneven split does not idle whole nodes.  A single chunk runs on the
 * caller when it may take it (steal, or its own node's). */
void es_pool_run_nodes(es_pool *p, es_task_fn fn, void *ctx, const int64_t *node_start, int64_t chunk, int steal);
/* Items of node k not yet claimed by the current (or the last) node-aware
 * loop: a task may check that its own node's queue is empty (tests). */
int64_t es_pool_node_left(es_pool *p, int k);

/* Physical cores this process may run on (sysfs topology), else the CPUs it
 * may run on. */
int es_default_threads(void);

#endif
