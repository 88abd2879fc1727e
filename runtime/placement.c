/* placement.c — see placement.h.  Owns placing a loaded model's weights on
 * NUMA nodes under a policy (shard, replicate, off), the replicas of hot
 * weights, and the expert -> node map the forward pass asks.  The machine's
 * topology and the memory-policy calls come from platform/numa_topo.h. */
#include "placement.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model.h"
#include "quant.h"

#ifndef MPOL_PREFERRED
#define MPOL_PREFERRED 1
#endif
#ifndef MPOL_BIND
#define MPOL_BIND 2
#endif
#ifndef MPOL_MF_MOVE
#define MPOL_MF_MOVE (1 << 1)
#endif

/* Granularity of interleaving by first touch: large enough for readahead
 * and huge pages, small enough to spread a 100 MB tensor evenly. */
#define STRIPE_BYTES (2u << 20)

/* ---- the plan ------------------------------------------------------------------- */

typedef struct replica {
    const uint8_t *orig;
    size_t len;
    uint8_t *copy[ES_MAX_NODES]; /* [0] unused: node 0 reads the mapping */
} replica;

typedef struct assign {
    const uint8_t *ptr;
    size_t len;
    int node;       /* plan node */
    int rep;        /* >= 0: fill replica rep for this node instead of placing */
} assign;

struct es_numa_plan {
    int policy;
    int share, n_shares;     /* the model's share of the experts (1: all) */
    es_numa_topo topo;
    replica *reps;
    size_t n_reps;
    assign *as;
    size_t n_as, cap_as;
    es_numa_stats st;
    char summary[512];
};

const es_numa_topo *es_numa_plan_topo(const es_numa_plan *p) {
    return p && p->policy != ES_NUMA_OFF ? &p->topo : NULL;
}
int es_numa_plan_nodes(const es_numa_plan *p) {
    return p && p->policy != ES_NUMA_OFF ? p->topo.n_nodes : 1;
}
int es_numa_plan_policy(const es_numa_plan *p) { return p ? p->policy : ES_NUMA_OFF; }
const es_numa_stats *es_numa_plan_stats(const es_numa_plan *p) { return p ? &p->st : NULL; }
const char *es_numa_plan_summary(const es_numa_plan *p) { return p ? p->summary : "numa: off"; }

/* An expert's index among those its share holds in the layer: the share's
 * experts are those with (expert + layer) % n_shares == share, so
 * (expert + layer) / n_shares counts them; the expert itself for a whole
 * model. */
static int share_index(int n_shares, int layer, int expert) {
    return n_shares > 1 ? (int)(((unsigned)expert + (unsigned)layer) / (unsigned)n_shares) : expert;
}

int es_numa_expert_node(const es_numa_plan *p, int layer, int expert) {
    return es_numa_owner(es_numa_plan_nodes(p), layer, share_index(p ? p->n_shares : 1, layer, expert));
}

int es_expert_owner(int n_shares, int layer, int expert) { return es_numa_owner(n_shares, layer, expert); }

int es_model_owns(const es_model *m, int il, int e) {
    return m->n_shares <= 1 || es_numa_owner(m->n_shares, il, e) == m->share;
}

const uint8_t *es_numa_local(const es_numa_plan *p, const uint8_t *data, int node) {
    if (!p || !p->n_reps || node <= 0 || node >= p->topo.n_nodes) return data;
    /* reps are sorted by orig and disjoint: binary search */
    size_t lo = 0, hi = p->n_reps;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (p->reps[mid].orig + p->reps[mid].len <= data) lo = mid + 1;
        else hi = mid;
    }
    if (lo < p->n_reps && data >= p->reps[lo].orig && p->reps[lo].copy[node])
        return p->reps[lo].copy[node] + (data - p->reps[lo].orig);
    return data;
}

void es_numa_plan_free(es_numa_plan *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_reps; i++)
        for (int k = 1; k < ES_MAX_NODES; k++)
            if (p->reps[i].copy[k]) munmap(p->reps[i].copy[k], p->reps[i].len);
    free(p->reps);
    free(p->as);
    free(p);
}

static int add_assign(es_numa_plan *p, const uint8_t *ptr, size_t len, int node, int rep) {
    if (p->n_as == p->cap_as) {
        size_t cap = p->cap_as ? p->cap_as * 2 : 1024;
        assign *a = realloc(p->as, cap * sizeof *a);
        if (!a) return -1;
        p->as = a;
        p->cap_as = cap;
    }
    p->as[p->n_as++] = (assign){ptr, len, node, rep};
    return 0;
}

/* ---- carrying out the assignments: one thread per node, pinned there ------------- */

typedef struct node_worker {
    es_numa_plan *p;
    int node;
    uint64_t mbind_fail, move_fail, ranges;
} node_worker;

/* Puts the pages of [ptr, ptr+len) on kernel node `real`. */
static void place_range(node_worker *w, const uint8_t *ptr, size_t len, int real) {
    const size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    if (!len) return;
    /* the pages wholly inside the range: the only ones advised and moved (a
     * checkpoint directory's tensors may live in the heap, where the rest
     * of a page is someone else's) */
    uint8_t *a = (uint8_t *)(((uintptr_t)ptr + pg - 1) & ~(uintptr_t)(pg - 1));
    const uintptr_t end = ((uintptr_t)ptr + len) & ~(uintptr_t)(pg - 1);
    const size_t n = (uintptr_t)a < end ? (size_t)(end - (uintptr_t)a) : 0;
    if (n) madvise(a, n, MADV_WILLNEED);
    /* first touch from this (pinned) thread, never a byte outside the range */
    volatile uint8_t sink = 0;
    for (size_t off = 0; off < len; off += pg) sink ^= ptr[off];
    sink ^= ptr[len - 1];
    (void)sink;
    if (!n) return;
    /* migrate whatever was resident elsewhere */
    unsigned long mask[(ES_MAX_NODES * 4 + 63) / 64 + 1];
    memset(mask, 0, sizeof mask);
    if (real < 0 || real >= (int)(sizeof mask * 8) - 1) return;
    mask[real / 64] |= 1ul << (real % 64);
    if (es_numa_mbind(a, n, MPOL_PREFERRED, mask, sizeof mask * 8, MPOL_MF_MOVE) == 0) return;
    w->mbind_fail++;
    enum { BATCH = 512 };
    void *pages[BATCH];
    int nodes[BATCH], status[BATCH];
    for (size_t off = 0; off < n; off += BATCH * pg) {
        unsigned long cnt = 0;
        for (; cnt < BATCH && off + cnt * pg < n; cnt++) {
            pages[cnt] = a + off + cnt * pg;
            nodes[cnt] = real;
        }
        if (es_numa_move_pages(cnt, pages, nodes, status, MPOL_MF_MOVE) != 0) { w->move_fail++; return; }
    }
}

static void *node_main(void *arg) {
    node_worker *w = arg;
    es_numa_plan *p = w->p;
    es_numa_pin_self(&p->topo, w->node);
    const int real = p->topo.real_id[w->node];
    for (size_t i = 0; i < p->n_as; i++) {
        const assign *a = &p->as[i];
        if (a->node != w->node) continue;
        w->ranges++;
        if (a->rep >= 0) {
            /* the copy's pages were bound to this node at mmap; writing them
             * from here touches them first here too */
            memcpy(p->reps[a->rep].copy[w->node], a->ptr, a->len);
            continue;
        }
        place_range(w, a->ptr, a->len, real);
    }
    return NULL;
}

static void run_assignments(es_numa_plan *p) {
    const int N = p->topo.n_nodes;
    node_worker w[ES_MAX_NODES];
    pthread_t th[ES_MAX_NODES];
    int started[ES_MAX_NODES] = {0};
    for (int k = 0; k < N; k++) {
        w[k] = (node_worker){p, k, 0, 0, 0};
        started[k] = pthread_create(&th[k], NULL, node_main, &w[k]) == 0;
        if (!started[k]) node_main(&w[k]); /* no thread: do it here, unpinned */
    }
    for (int k = 0; k < N; k++) {
        if (started[k]) pthread_join(th[k], NULL);
        p->st.mbind_fail += w[k].mbind_fail;
        p->st.move_fail += w[k].move_fail;
        p->st.ranges += w[k].ranges;
    }
}

/* ---- policy -------------------------------------------------------------------- */

static uint64_t mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return (uint64_t)kb * 1024;
}

static int is_expert_tensor(const es_model *m, const uint8_t *data) {
    for (int il = 0; il < m->hp.n_layers; il++) {
        const es_layer *ly = &m->layers[il];
        if (!ly->is_moe) continue;
        if (data == ly->gate_exps.data || data == ly->up_exps.data || data == ly->down_exps.data) return 1;
    }
    return 0;
}

/* The bytes a weight's matrix lies in: an FP8_B128 matrix (a checkpoint
 * directory's) is a description (quant.h) of e4m3 bytes lying elsewhere,
 * whose scale grid (a few KB) stays where it is. */
static const uint8_t *mat_bytes_at(uint32_t type, const uint8_t *data) {
    return type == ES_TYPE_FP8_B128 ? ((const es_fp8_mat *)(const void *)data)->q : data;
}

static int cmp_rep(const void *a, const void *b) {
    const replica *x = a, *y = b;
    return x->orig < y->orig ? -1 : x->orig > y->orig;
}

/* Hot (non-expert, non-embedding) tensors copied to nodes 1..N-1; 0 if
 * memory does not allow (then the caller interleaves them). */
static int make_replicas(es_numa_plan *p, const es_model *m) {
    const es_gguf_ctx *g = m->gguf;
    const int N = p->topo.n_nodes;
    uint64_t hot = 0;
    size_t n = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const es_gguf_tensor *t = &g->tensors[i];
        if (!t->nbytes || is_expert_tensor(m, t->data) || t->data == m->tok_embd.data) continue;
        hot += t->nbytes;
        n++;
    }
    uint64_t avail = mem_available();
    if (!n || (avail && hot * (uint64_t)(N - 1) > avail / 2)) return 0;
    p->reps = calloc(n, sizeof *p->reps);
    if (!p->reps) return 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const es_gguf_tensor *t = &g->tensors[i];
        if (!t->nbytes || is_expert_tensor(m, t->data) || t->data == m->tok_embd.data) continue;
        p->reps[p->n_reps++] = (replica){.orig = t->data, .len = t->nbytes};
    }
    qsort(p->reps, p->n_reps, sizeof *p->reps, cmp_rep);
    unsigned long mask[(ES_MAX_NODES * 4 + 63) / 64 + 1];
    for (size_t r = 0; r < p->n_reps; r++) {
        replica *rp = &p->reps[r];
        if (add_assign(p, rp->orig, rp->len, 0, -1) != 0) return -1;
        for (int k = 1; k < N; k++) {
            void *c = mmap(NULL, rp->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (c == MAP_FAILED) return -1;
            rp->copy[k] = c;
            int real = p->topo.real_id[k];
            memset(mask, 0, sizeof mask);
            if (real >= 0 && real < (int)(sizeof mask * 8) - 1) {
                mask[real / 64] |= 1ul << (real % 64);
                if (es_numa_mbind(c, rp->len, MPOL_BIND, mask, sizeof mask * 8, 0) != 0) p->st.mbind_fail++;
            }
            if (add_assign(p, rp->orig, rp->len, k, (int)r) != 0) return -1;
        }
    }
    p->st.replicated_bytes = hot;
    p->st.n_replicas = N - 1;
    return 1;
}

static void free_replicas(es_numa_plan *p) {
    for (size_t i = 0; i < p->n_reps; i++)
        for (int k = 1; k < ES_MAX_NODES; k++)
            if (p->reps[i].copy[k]) munmap(p->reps[i].copy[k], p->reps[i].len);
    free(p->reps);
    p->reps = NULL;
    p->n_reps = 0;
    p->n_as = 0;
    p->st.replicated_bytes = 0;
    p->st.n_replicas = 0;
}

/* Reads back the node of up to ~256 expert pages spread over the plan. */
static void sample_placement(es_numa_plan *p) {
    size_t n_exp = 0;
    for (size_t i = 0; i < p->n_as; i++) n_exp += p->as[i].rep < 0;
    if (!n_exp) return;
    size_t step = n_exp / 256 + 1, seen = 0;
    for (size_t i = 0; i < p->n_as; i++) {
        const assign *a = &p->as[i];
        if (a->rep >= 0) continue;
        if (seen++ % step) continue;
        int nd = es_numa_page_node(a->ptr + a->len / 2);
        if (nd < 0) continue; /* the kernel (or an emulator) cannot say: not a sample */
        p->st.sampled_pages++;
        p->st.pages_on_target += nd == p->topo.real_id[a->node];
    }
}

static void human(char *buf, size_t n, double b) {
    if (b >= 1e9) snprintf(buf, n, "%.2f GB", b / 1e9);
    else snprintf(buf, n, "%.1f MB", b / 1e6);
}

static const char *policy_name(int policy) {
    return policy == ES_NUMA_OFF ? "off" : policy == ES_NUMA_REPLICATE ? "replicate" : "shard";
}

es_status es_numa_place(const es_model *m, int policy, int fake_nodes, es_numa_plan **out, char *err,
                        size_t errlen) {
    *out = NULL;
    if (policy == ES_NUMA_DEFAULT) policy = ES_NUMA_SHARD;
    if (policy != ES_NUMA_OFF && policy != ES_NUMA_SHARD && policy != ES_NUMA_REPLICATE) {
        if (err && errlen) snprintf(err, errlen, "unknown NUMA policy %d", policy);
        return ES_ERR_ARG;
    }
    es_numa_plan *p = calloc(1, sizeof *p);
    if (!p) {
        if (err && errlen) snprintf(err, errlen, "out of memory");
        return ES_ERR_NOMEM;
    }
    p->policy = policy;
    p->share = m->share;
    p->n_shares = m->n_shares > 1 ? m->n_shares : 1;
    es_numa_detect(&p->topo, fake_nodes);
    const int N = p->topo.n_nodes;
    char topo_desc[96];
    snprintf(topo_desc, sizeof topo_desc, "%d node%s (%s%s)", N, N == 1 ? "" : "s",
             p->topo.fake ? "fake, over " : "", p->topo.source);
    if (policy == ES_NUMA_OFF || N == 1 || !m->layers) {
        snprintf(p->summary, sizeof p->summary, "numa: %s, %s: nothing placed", policy_name(policy), topo_desc);
        *out = p;
        return ES_OK;
    }

    int replicated = 0;
    /* a checkpoint directory (no one mapping) is not replicated: its FP8
     * weights are descriptions the copies would have to follow */
    const int is_dir = !m->gguf->map;
    if (policy == ES_NUMA_REPLICATE && !is_dir) {
        replicated = make_replicas(p, m);
        if (replicated < 0) { free_replicas(p); replicated = 0; }
    }
    /* routed experts: each expert's three slices on its owner */
    int oom = 0;
    for (int il = 0; il < m->hp.n_layers && !oom; il++) {
        const es_layer *ly = &m->layers[il];
        if (!ly->is_moe) continue;
        const es_weight *ws[3] = {&ly->gate_exps, &ly->up_exps, &ly->down_exps};
        for (int e = 0; e < m->hp.n_experts && !oom; e++) {
            if (!es_model_owns(m, il, e)) continue; /* another process's: never touched here */
            int node = es_numa_expert_node(p, il, e);
            for (int w = 0; w < 3; w++) {
                oom |= add_assign(p, mat_bytes_at(ws[w]->type, es_weight_mat(ws[w], e)), ws[w]->mat_bytes, node, -1);
                p->st.expert_bytes[node] += ws[w]->mat_bytes;
            }
        }
    }
    /* everything else: interleaved in stripes, unless replicated above */
    const es_gguf_ctx *g = m->gguf;
    uint64_t stripe = 0;
    for (uint64_t i = 0; i < g->n_tensors && !oom; i++) {
        const es_gguf_tensor *t = &g->tensors[i];
        if (!t->nbytes || is_expert_tensor(m, t->data)) continue;
        if (replicated && t->data != m->tok_embd.data) continue;
        const uint8_t *at = mat_bytes_at(t->type, t->data);
        /* FP8: the e4m3 bytes alone (nbytes counts the scale grid too) */
        const uint64_t nb = t->type == ES_TYPE_FP8_B128 ? (uint64_t)(t->ne[0] * t->ne[1]) : t->nbytes;
        for (uint64_t off = 0; off < nb && !oom; off += STRIPE_BYTES) {
            uint64_t len = nb - off < STRIPE_BYTES ? nb - off : STRIPE_BYTES;
            oom |= add_assign(p, at + off, (size_t)len, (int)(stripe++ % (uint64_t)N), -1);
            p->st.interleaved_bytes += len;
        }
    }
    if (oom) {
        es_numa_plan_free(p);
        if (err && errlen) snprintf(err, errlen, "out of memory for the NUMA placement plan");
        return ES_ERR_NOMEM;
    }
    run_assignments(p);
    sample_placement(p);

    uint64_t exp_total = 0;
    for (int k = 0; k < N; k++) exp_total += p->st.expert_bytes[k];
    char a[32], b[32];
    human(a, sizeof a, (double)exp_total);
    human(b, sizeof b, (double)(replicated ? p->st.replicated_bytes : p->st.interleaved_bytes));
    snprintf(p->summary, sizeof p->summary,
             "numa: %s, %s: experts %s dealt round-robin; other weights %s %s%s; %llu/%llu sampled expert pages "
             "on their node%s",
             policy_name(policy), topo_desc, a, b,
             replicated ? "copied to every node" : "interleaved",
             policy == ES_NUMA_REPLICATE && !replicated
                 ? (is_dir ? " (a checkpoint directory is not replicated)" : " (not enough memory to replicate)")
                 : "",
             (unsigned long long)p->st.pages_on_target, (unsigned long long)p->st.sampled_pages,
             p->st.mbind_fail || p->st.move_fail ? "; the kernel refused some migrations" : "");
    *out = p;
    return ES_OK;
}
