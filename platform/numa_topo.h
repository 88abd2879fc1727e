/* numa_topo.h — NUMA topology, thread pinning, and the policy for placing weights.
 *
 * Owns: finding the machine's nodes and their CPUs (libnuma when the build
 * has it, /sys/devices/system/node otherwise, or N pretended nodes: the
 * fake_numa load parameter, EDGESEEK_FAKE_NUMA=N), pinning a thread to a
 * node, the round-robin owner of an expert, and the memory-policy system
 * calls.  Placing a model's weights under the
 * policies below is the engine's job (runtime/placement.c).
 *
 * Policies (--numa):
 *   off        nothing is placed; the pool is one node, unpinned.
 *   shard      each routed expert's slices of ffn_{gate,up,down}_exps live
 *              on one node, experts dealt round-robin (not duplicated);
 *              every other weight is interleaved across nodes.  Default.
 *   replicate  as shard for the experts, and every other ("hot") weight is
 *              copied to every node when memory allows (node 0 keeps the
 *              file mapping), else interleaved as under shard.
 * With one node every policy places nothing and owns nothing: a no-op.
 *
 * A fake node k stands for the real node of its first CPU, so with
 * fake nodes on a one-node machine every placement call really runs
 * (against node 0) and the bookkeeping is what a real machine would get.
 *
 * Placement is best effort and never fails a load: pages are read ahead and
 * touched from a thread pinned to the target node (first touch puts page
 * cache there), then mbind(MPOL_MF_MOVE) migrates pages that were already
 * resident elsewhere, with move_pages as the fallback where mbind is
 * refused.  Pages shared with other processes may stay where they are.
 */
#ifndef ES_NUMA_TOPO_H
#define ES_NUMA_TOPO_H

#include <stddef.h>
#include <stdint.h>

#define ES_MAX_NODES 64

typedef struct es_numa_topo {
    int n_nodes;                    /* >= 1: nodes with at least one usable CPU */
    int fake;                       /* pretended nodes (fake_nodes) are in effect */
    int real_nodes;                 /* nodes the kernel reports (>= 1) */
    const char *source;             /* "libnuma", "sysfs", "none" (one node assumed) */
    int real_id[ES_MAX_NODES];      /* kernel node id each node stands for */
    int cpu_start[ES_MAX_NODES + 1];/* node k's CPUs: cpus[cpu_start[k] .. cpu_start[k+1]) */
    int n_cpus;
    int cpus[1024];                 /* usable CPU ids (the process's affinity mask), node-major */
} es_numa_topo;

/* Reads the topology now.  fake_nodes in 1..ES_MAX_NODES: that many
 * pretended nodes instead, the usable CPUs split evenly (0: the real
 * topology).  Never fails: with nothing readable it describes one node
 * holding the usable CPUs. */
void es_numa_detect(es_numa_topo *t, int fake_nodes);
/* The process-wide real topology, detected once. */
const es_numa_topo *es_numa_topo_get(void);

/* Pins the calling thread to node's CPUs; -1 where the OS refuses
 * (containers), and the thread then runs unpinned. */
int es_numa_pin_self(const es_numa_topo *t, int node);

/* Round-robin owner of routed expert `expert` of layer `layer` among
 * n_nodes nodes, offset by the layer so that expert 0 is not always on
 * node 0.  0 when n_nodes <= 1. */
static inline int es_numa_owner(int n_nodes, int layer, int expert) {
    return n_nodes > 1 ? (int)(((unsigned)expert + (unsigned)layer) % (unsigned)n_nodes) : 0;
}

/* mbind(2) and move_pages(2) for this process (libnuma's wrappers or the
 * raw system calls; -1 with errno ENOSYS where neither exists). */
long es_numa_mbind(void *addr, size_t len, int mode, const unsigned long *mask, unsigned long maxnode,
                   unsigned flags);
long es_numa_move_pages(unsigned long count, void **pages, const int *nodes, int *status, int flags);

/* Kernel node id of the page holding addr (-1: not resident / unknown). */
int es_numa_page_node(const void *addr);

#endif
