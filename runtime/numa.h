/* numa.h — NUMA topology, weight placement and the expert → node map.
 *
 * Owns: finding the machine's nodes and their CPUs (libnuma when the build
 * has it, /sys/devices/system/node otherwise, EDGESEEK_FAKE_NUMA=N to
 * pretend), placing a loaded model's weights on nodes under a policy, and
 * answering which node owns (places and computes) a routed expert.
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
 * EDGESEEK_FAKE_NUMA on a one-node machine every placement call really runs
 * (against node 0) and the bookkeeping is what a real machine would get.
 *
 * Placement is best effort and never fails a load: pages are read ahead and
 * touched from a thread pinned to the target node (first touch puts page
 * cache there), then mbind(MPOL_MF_MOVE) migrates pages that were already
 * resident elsewhere, with move_pages as the fallback where mbind is
 * refused.  Pages shared with other processes may stay where they are.
 */
#ifndef ES_NUMA_H
#define ES_NUMA_H

#include <stddef.h>
#include <stdint.h>

#include "edgeseek.h"

#define ES_MAX_NODES 64

typedef struct es_numa_topo {
    int n_nodes;                    /* >= 1: nodes with at least one usable CPU */
    int fake;                       /* EDGESEEK_FAKE_NUMA is in effect */
    int real_nodes;                 /* nodes the kernel reports (>= 1) */
    const char *source;             /* "libnuma", "sysfs", "none" (one node assumed) */
    int real_id[ES_MAX_NODES];      /* kernel node id each node stands for */
    int cpu_start[ES_MAX_NODES + 1];/* node k's CPUs: cpus[cpu_start[k] .. cpu_start[k+1]) */
    int n_cpus;
    int cpus[1024];                 /* usable CPU ids (the process's affinity mask), node-major */
} es_numa_topo;

/* Reads the topology now (environment included).  Never fails: with
 * nothing readable it describes one node holding the usable CPUs. */
void es_numa_detect(es_numa_topo *t);
/* The process-wide topology, detected once. */
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

typedef struct es_numa_plan es_numa_plan;
struct es_model;

/* Places m's weights under policy (ES_NUMA_DEFAULT means shard) and returns
 * the plan (*out, also for one node: a no-op plan).  Only running out of
 * memory for the plan itself is an error. */
es_status es_numa_place(const struct es_model *m, int policy, es_numa_plan **out, char *err, size_t errlen);
void es_numa_plan_free(es_numa_plan *p);

/* The topology the session pools should follow: NULL under policy off or
 * for a NULL plan (one unpinned node). */
const es_numa_topo *es_numa_plan_topo(const es_numa_plan *p);
int es_numa_plan_nodes(const es_numa_plan *p);  /* 1 for NULL / off */
int es_numa_plan_policy(const es_numa_plan *p); /* ES_NUMA_OFF/SHARD/REPLICATE */

/* The node that owns (holds and computes) a routed expert: what forward.c
 * asks to split MoE work by node.  0 with one node or no plan. */
int es_numa_expert_node(const es_numa_plan *p, int layer, int expert);

/* The copy of weight bytes at `data` that node `node` should read: a
 * replica under policy replicate, else data itself. */
const uint8_t *es_numa_local(const es_numa_plan *p, const uint8_t *data, int node);

/* One line: policy, nodes, source, what was placed and how. */
const char *es_numa_plan_summary(const es_numa_plan *p);

/* Placement statistics, for tests and the report. */
typedef struct es_numa_stats {
    uint64_t expert_bytes[ES_MAX_NODES]; /* routed-expert bytes owned per node */
    uint64_t interleaved_bytes;          /* non-expert bytes striped across nodes */
    uint64_t replicated_bytes;           /* bytes of hot weights per replica */
    int n_replicas;                      /* replica sets made (nodes 1..N-1) */
    uint64_t ranges;                     /* (range, node) assignments carried out */
    uint64_t mbind_fail, move_fail;      /* refused by the kernel (best effort) */
    uint64_t sampled_pages, pages_on_target; /* a check after placement */
} es_numa_stats;
const es_numa_stats *es_numa_plan_stats(const es_numa_plan *p);

/* Kernel node id of the page holding addr (-1: not resident / unknown). */
int es_numa_page_node(const void *addr);

#endif
