/* placement.h — NUMA placement of a loaded model's weights (see
 * platform/numa_topo.h for the policies and the topology). */
#ifndef ES_PLACEMENT_H
#define ES_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

#include "edgeseek.h"
#include "numa_topo.h"

typedef struct es_numa_plan es_numa_plan;
struct es_model;

/* Places m's weights under policy (ES_NUMA_DEFAULT means shard) over the
 * machine's topology, or fake_nodes pretended nodes when 1..ES_MAX_NODES
 * (es_load_params.fake_numa), and returns the plan (*out, also for one
 * node: a no-op plan).  Only running out of memory for the plan itself is
 * an error. */
es_status es_numa_place(const struct es_model *m, int policy, int fake_nodes, es_numa_plan **out, char *err,
                        size_t errlen);
void es_numa_plan_free(es_numa_plan *p);

/* The topology the session pools should follow: NULL under policy off or
 * for a NULL plan (one unpinned node). */
const es_numa_topo *es_numa_plan_topo(const es_numa_plan *p);
int es_numa_plan_nodes(const es_numa_plan *p);  /* 1 for NULL / off */
int es_numa_plan_policy(const es_numa_plan *p); /* ES_NUMA_OFF/SHARD/REPLICATE */

/* The node that owns (holds and computes) a routed expert: what forward.c
 * asks to split MoE work by node.  0 with one node or no plan.  For a
 * model holding a share of the experts (es_model_load_share) the share's
 * experts are dealt to the nodes in the same way, by their index among the
 * share's experts of the layer. */
int es_numa_expert_node(const es_numa_plan *p, int layer, int expert);

/* Whether model m holds and computes routed expert e of layer il: the
 * experts are dealt to the shares (processes, es_expert_owner) as to NUMA
 * nodes, by es_numa_owner; always for a whole model. */
int es_model_owns(const struct es_model *m, int il, int e);

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

#endif
