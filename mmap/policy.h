/* policy.h — which routed experts stay resident: the replacement policy of
 * the residency manager, as a pure data structure (no I/O, no locking), so
 * that it can be tested on synthetic traces.
 *
 * Units are (MoE layer, expert) pairs, index layer*E + e.  The cache holds
 * `cap` units.  Every layer has a quota of cap/L units (the remainder goes
 * to the first layers); a layer may borrow beyond it (a prefill batch needs
 * most of a layer at once), and a new unit evicts from the layer furthest
 * over its quota, counting the incoming unit, with ties broken towards the
 * layer whose next use is furthest away (layers run in order, so the layer
 * just before the requesting one).  Inside that layer the policy picks:
 *
 *   LRU  least recently used (a global use counter);
 *   LFU  lowest use frequency with aging: score = Σ tokens routed, decayed by
 *        2^(-1/half_life) per access of that layer; kept when the unit is
 *        evicted, so the history of an expert survives eviction.
 *
 * Pinned units (being loaded, or reserved for the layer being computed) are
 * never victims.  "Fresh" units (prefetched or predicted, not yet used) are
 * victims only when nothing else in the layer is evictable; the flag clears
 * at the layer's next access.
 */
#ifndef ES_POLICY_H
#define ES_POLICY_H

#include <stdint.h>

enum es_pol_kind { ES_POL_LRU = 1, ES_POL_LFU = 2 };

typedef struct es_pol_unit {
    double score;        /* LFU: decayed token count as of layer clock t_score */
    uint64_t last;       /* global use counter at the last use or insertion */
    int64_t t_score;
    int32_t pins;
    uint8_t resident;
    uint8_t fresh;
} es_pol_unit;

typedef struct es_pol {
    int kind;            /* enum es_pol_kind */
    int L, E;            /* MoE layers, experts per layer */
    int64_t cap;         /* units the cache holds */
    int64_t n_resident;
    int64_t *n_res;      /* [L] resident units per layer */
    int64_t *n_pinned;   /* [L] resident and pinned units per layer */
    int64_t *quota;      /* [L] */
    int64_t *clock;      /* [L] accesses of each layer (the aging clock) */
    uint64_t uses;       /* global use counter (LRU order) */
    double decay;        /* per access of the layer; 1 = no aging */
    es_pol_unit *u;      /* [L*E] */
} es_pol;

/* half_life: LFU aging in accesses of a layer (0: no aging).  NULL when out
 * of memory or the sizes are not positive. */
es_pol *es_pol_new(int kind, int L, int E, int64_t cap, double half_life);
void es_pol_free(es_pol *p);
/* Changes the capacity (and the quotas); resident units above it are evicted
 * by the next insertions. */
void es_pol_set_cap(es_pol *p, int64_t cap);

/* One access of a layer (a batch of tokens through it): advances its aging
 * clock and clears its fresh flags. */
void es_pol_layer_tick(es_pol *p, int layer);
/* Records a use of a unit by `weight` tokens. */
void es_pol_use(es_pol *p, int unit, int weight);
/* LFU score of a unit as of its layer's clock. */
double es_pol_score(const es_pol *p, int unit);

int es_pol_has_room(const es_pol *p);
/* The unit to evict to make room for one of `for_layer`, or -1 if every
 * resident unit is pinned. */
int es_pol_victim(const es_pol *p, int for_layer);
void es_pol_insert(es_pol *p, int unit);   /* resident, fresh */
void es_pol_evict(es_pol *p, int unit);
void es_pol_pin(es_pol *p, int unit);
void es_pol_unpin(es_pol *p, int unit);

/* Simulation for tests and planning: one access of a unit; returns 1 on a
 * hit, 0 on a miss (the unit is then inserted, evicting as needed; if every
 * unit is pinned it is not inserted).  Records the use either way. */
int es_pol_access(es_pol *p, int layer, int e, int weight);

#endif
