/* policy.c — the expert replacement policy (see policy.h): per-layer quotas,
 * LRU and aged LFU inside a layer, pins and fresh (prefetched) units. */
#include "policy.h"

#include <math.h>
#include <stdlib.h>

es_pol *es_pol_new(int kind, int L, int E, int64_t cap, double half_life) {
    if (L <= 0 || E <= 0 || cap < 0 || (kind != ES_POL_LRU && kind != ES_POL_LFU)) return NULL;
    es_pol *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->kind = kind;
    p->L = L;
    p->E = E;
    p->n_res = calloc((size_t)L, sizeof(int64_t));
    p->n_pinned = calloc((size_t)L, sizeof(int64_t));
    p->quota = calloc((size_t)L, sizeof(int64_t));
    p->clock = calloc((size_t)L, sizeof(int64_t));
    p->u = calloc((size_t)L * (size_t)E, sizeof(es_pol_unit));
    if (!p->n_res || !p->n_pinned || !p->quota || !p->clock || !p->u) {
        es_pol_free(p);
        return NULL;
    }
    p->decay = half_life > 0 ? pow(2.0, -1.0 / half_life) : 1.0;
    es_pol_set_cap(p, cap);
    return p;
}

void es_pol_free(es_pol *p) {
    if (!p) return;
    free(p->n_res);
    free(p->n_pinned);
    free(p->quota);
    free(p->clock);
    free(p->u);
    free(p);
}

void es_pol_set_cap(es_pol *p, int64_t cap) {
    p->cap = cap < 0 ? 0 : cap;
    for (int l = 0; l < p->L; l++) p->quota[l] = p->cap / p->L + (l < p->cap % p->L);
}

void es_pol_layer_tick(es_pol *p, int layer) {
    p->clock[layer]++;
    es_pol_unit *u = p->u + (size_t)layer * (size_t)p->E;
    for (int e = 0; e < p->E; e++) u[e].fresh = 0;
}

double es_pol_score(const es_pol *p, int unit) {
    const es_pol_unit *u = &p->u[unit];
    int64_t age = p->clock[unit / p->E] - u->t_score;
    if (p->decay == 1.0 || age <= 0 || u->score == 0) return u->score;
    return u->score * pow(p->decay, (double)age);
}

void es_pol_use(es_pol *p, int unit, int weight) {
    es_pol_unit *u = &p->u[unit];
    u->score = es_pol_score(p, unit) + (weight > 0 ? weight : 1);
    u->t_score = p->clock[unit / p->E];
    u->last = ++p->uses;
    u->fresh = 0;
}

int es_pol_has_room(const es_pol *p) { return p->n_resident < p->cap; }

/* 1 if a should be evicted before b (both resident and unpinned). */
static int worse(const es_pol *p, int a, int b) {
    const es_pol_unit *ua = &p->u[a], *ub = &p->u[b];
    if (ua->fresh != ub->fresh) return ua->fresh < ub->fresh; /* not fresh goes first */
    if (p->kind == ES_POL_LFU) {
        double sa = es_pol_score(p, a), sb = es_pol_score(p, b);
        if (sa != sb) return sa < sb;
    }
    if (ua->last != ub->last) return ua->last < ub->last;
    return a < b;
}

int es_pol_victim(const es_pol *p, int for_layer) {
    int best = -1;
    int64_t best_excess = 0;
    int best_dist = -1;
    for (int l = 0; l < p->L; l++) {
        if (p->n_res[l] - p->n_pinned[l] <= 0) continue; /* nothing evictable */
        int64_t excess = p->n_res[l] + (l == for_layer) - p->quota[l];
        /* how many layer accesses until l runs again after for_layer:
         * for_layer+1 is next (0), for_layer itself is last (L-1) */
        int dist = ((l - for_layer - 1) % p->L + p->L) % p->L;
        if (best < 0 || excess > best_excess || (excess == best_excess && dist > best_dist)) {
            best = l;
            best_excess = excess;
            best_dist = dist;
        }
    }
    if (best < 0) return -1;
    int victim = -1;
    for (int e = 0; e < p->E; e++) {
        int unit = best * p->E + e;
        const es_pol_unit *u = &p->u[unit];
        if (!u->resident || u->pins) continue;
        if (victim < 0 || worse(p, unit, victim)) victim = unit;
    }
    return victim;
}

void es_pol_insert(es_pol *p, int unit) {
    es_pol_unit *u = &p->u[unit];
    if (u->resident) return;
    u->resident = 1;
    u->fresh = 1;
    u->last = ++p->uses;
    p->n_resident++;
    p->n_res[unit / p->E]++;
    if (u->pins) p->n_pinned[unit / p->E]++;
}

void es_pol_evict(es_pol *p, int unit) {
    es_pol_unit *u = &p->u[unit];
    if (!u->resident) return;
    u->resident = 0;
    u->fresh = 0;
    p->n_resident--;
    p->n_res[unit / p->E]--;
    if (u->pins) p->n_pinned[unit / p->E]--;
}

void es_pol_pin(es_pol *p, int unit) {
    es_pol_unit *u = &p->u[unit];
    if (u->pins++ == 0 && u->resident) p->n_pinned[unit / p->E]++;
}

void es_pol_unpin(es_pol *p, int unit) {
    es_pol_unit *u = &p->u[unit];
    if (u->pins <= 0) return;
    if (--u->pins == 0 && u->resident) p->n_pinned[unit / p->E]--;
}

int es_pol_access(es_pol *p, int layer, int e, int weight) {
    int unit = layer * p->E + e;
    int hit = p->u[unit].resident;
    if (!hit) {
        int ok = 1;
        while (!es_pol_has_room(p)) {
            int v = es_pol_victim(p, layer);
            if (v < 0) { ok = 0; break; }
            es_pol_evict(p, v);
        }
        if (ok) es_pol_insert(p, unit);
    }
    es_pol_use(p, unit, weight);
    return hit;
}
