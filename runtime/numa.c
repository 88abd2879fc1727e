/* numa.c — see numa.h.  Owns topology detection (libnuma / sysfs / fake),
 * thread pinning to a node, and placing a model's weights under a policy.
 *
 * Built with libnuma (ES_HAVE_LIBNUMA, the Makefile's default when
 * <numa.h> is present) the topology comes from libnuma and mbind/move_pages
 * from its wrappers; without it the same calls go through syscall(2) and
 * the topology through /sys/devices/system/node. */
#include "numa.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model.h"

#ifdef ES_HAVE_LIBNUMA
/* <numa.h> would find this directory's numa.h first (-Iruntime), so the
 * three libnuma calls used here are declared by hand (stable since 2.0). */
int numa_available(void);
int numa_node_of_cpu(int cpu);
int numa_num_configured_nodes(void);
#include <numaif.h>
#elif defined(__linux__)
#include <sys/syscall.h>
#endif

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

/* ---- system calls ----------------------------------------------------------- */

static long sys_mbind(void *addr, size_t len, int mode, const unsigned long *mask, unsigned long maxnode,
                      unsigned flags) {
#ifdef ES_HAVE_LIBNUMA
    return mbind(addr, len, mode, mask, maxnode, flags);
#elif defined(__linux__) && defined(SYS_mbind)
    return syscall(SYS_mbind, addr, len, mode, mask, maxnode, flags);
#else
    (void)addr; (void)len; (void)mode; (void)mask; (void)maxnode; (void)flags;
    errno = ENOSYS;
    return -1;
#endif
}

static long sys_move_pages(unsigned long count, void **pages, const int *nodes, int *status, int flags) {
#ifdef ES_HAVE_LIBNUMA
    return move_pages(0, count, pages, nodes, status, flags);
#elif defined(__linux__) && defined(SYS_move_pages)
    return syscall(SYS_move_pages, 0, count, pages, nodes, status, flags);
#else
    (void)count; (void)pages; (void)nodes; (void)status; (void)flags;
    errno = ENOSYS;
    return -1;
#endif
}

int es_numa_page_node(const void *addr) {
    void *page = (void *)((uintptr_t)addr & ~(uintptr_t)(sysconf(_SC_PAGESIZE) - 1));
    int status = -1;
    if (sys_move_pages(1, &page, NULL, &status, 0) != 0) return -1;
    return status >= 0 ? status : -1;
}

/* ---- topology ---------------------------------------------------------------- */

/* Parses a sysfs cpulist ("0-3,8,10-11") into flags[cpu] = val. */
static void parse_cpulist(const char *s, int *flags, int n, int val) {
    while (*s) {
        char *end;
        long a = strtol(s, &end, 10), b;
        if (end == s) return;
        b = a;
        s = end;
        if (*s == '-') {
            b = strtol(s + 1, &end, 10);
            if (end == s + 1) return;
            s = end;
        }
        for (long c = a; c <= b && c < n; c++)
            if (c >= 0) flags[c] = val;
        while (*s == ',' || *s == '\n' || *s == ' ') s++;
    }
}

/* cpu_node[c] = kernel node of CPU c (-1 unknown); returns how many kernel
 * nodes exist (0: none found) and names the source. */
static int kernel_nodes(int *cpu_node, int n_cpu_ids, const char **source) {
    for (int c = 0; c < n_cpu_ids; c++) cpu_node[c] = -1;
#ifdef ES_HAVE_LIBNUMA
    if (numa_available() >= 0) {
        for (int c = 0; c < n_cpu_ids; c++) cpu_node[c] = numa_node_of_cpu(c);
        *source = "libnuma";
        int n = numa_num_configured_nodes();
        return n > 0 ? n : 1;
    }
#endif
    int found = 0;
    for (int node = 0; node < 4096 && found < ES_MAX_NODES * 4; node++) {
        char path[96], buf[4096];
        snprintf(path, sizeof path, "/sys/devices/system/node/node%d/cpulist", node);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t r = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[r] = 0;
        parse_cpulist(buf, cpu_node, n_cpu_ids, node);
        found++;
    }
    *source = found ? "sysfs" : "none";
    return found;
}

void es_numa_detect(es_numa_topo *t) {
    memset(t, 0, sizeof *t);
    enum { MAXC = 1024 };
    static const int max_cpus = (int)(sizeof t->cpus / sizeof t->cpus[0]);
    int usable[MAXC], n_usable = 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        for (int c = 0; c < MAXC && c < CPU_SETSIZE && n_usable < max_cpus; c++)
            if (CPU_ISSET(c, &set)) usable[n_usable++] = c;
    }
    if (!n_usable) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        for (int c = 0; c < online && c < max_cpus; c++) usable[n_usable++] = c;
        if (!n_usable) usable[n_usable++] = 0;
    }
    int node_of[MAXC];
    int real = kernel_nodes(node_of, MAXC, &t->source);
    t->real_nodes = real > 0 ? real : 1;

    /* real nodes holding usable CPUs, in kernel id order; unknown → node 0 */
    int ids[ES_MAX_NODES], n_ids = 0;
    for (int i = 0; i < n_usable; i++) {
        int nd = node_of[usable[i]] < 0 ? 0 : node_of[usable[i]];
        int seen = 0;
        for (int j = 0; j < n_ids; j++) seen |= ids[j] == nd;
        if (!seen && n_ids < ES_MAX_NODES) ids[n_ids++] = nd;
    }
    for (int a = 1; a < n_ids; a++)
        for (int b = a; b > 0 && ids[b - 1] > ids[b]; b--) { int x = ids[b]; ids[b] = ids[b - 1]; ids[b - 1] = x; }
    /* node-major CPU list */
    int n = 0;
    for (int k = 0; k < n_ids; k++) {
        t->cpu_start[k] = n;
        for (int i = 0; i < n_usable; i++) {
            int nd = node_of[usable[i]] < 0 ? 0 : node_of[usable[i]];
            if (nd == ids[k]) t->cpus[n++] = usable[i];
        }
        t->real_id[k] = ids[k];
    }
    t->n_nodes = n_ids;
    t->cpu_start[n_ids] = n;
    t->n_cpus = n;

    const char *fake = getenv("EDGESEEK_FAKE_NUMA");
    if (fake && *fake) {
        char *end;
        long want = strtol(fake, &end, 10);
        if (*end || want < 1 || want > ES_MAX_NODES) return; /* ignored; see es_numa_plan_summary */
        /* split the usable CPUs evenly; with fewer CPUs than nodes they are
         * shared round-robin.  A fake node stands for its first CPU's node. */
        int cpus[1024], m = n;
        int real_of_cpu[1024];
        for (int i = 0; i < m; i++) {
            cpus[i] = t->cpus[i];
            int k = 0;
            while (k + 1 < n_ids && i >= t->cpu_start[k + 1]) k++;
            real_of_cpu[i] = t->real_id[k];
        }
        int N = (int)want, w = 0;
        for (int k = 0; k < N; k++) {
            t->cpu_start[k] = w;
            if (m >= N) {
                for (int i = k * m / N; i < (k + 1) * m / N; i++) t->cpus[w++] = cpus[i];
                t->real_id[k] = real_of_cpu[k * m / N];
            } else {
                t->cpus[w++] = cpus[k % m];
                t->real_id[k] = real_of_cpu[k % m];
            }
        }
        t->cpu_start[N] = w;
        t->n_cpus = w;
        t->n_nodes = N;
        t->fake = 1;
    }
}

static es_numa_topo g_topo;
static pthread_once_t g_topo_once = PTHREAD_ONCE_INIT;
static void topo_init(void) { es_numa_detect(&g_topo); }

const es_numa_topo *es_numa_topo_get(void) {
    pthread_once(&g_topo_once, topo_init);
    return &g_topo;
}

int es_numa_pin_self(const es_numa_topo *t, int node) {
    if (!t || node < 0 || node >= t->n_nodes) return -1;
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int i = t->cpu_start[node]; i < t->cpu_start[node + 1]; i++)
        if (t->cpus[i] >= 0 && t->cpus[i] < CPU_SETSIZE) CPU_SET(t->cpus[i], &set);
    if (CPU_COUNT(&set) == 0) return -1;
    /* containers may forbid it: the caller just runs unpinned */
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0 ? 0 : -1;
}

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
    es_numa_topo topo;
    int fake_ignored;       /* EDGESEEK_FAKE_NUMA was set but not a count 1..64 */
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

int es_numa_expert_node(const es_numa_plan *p, int layer, int expert) {
    return es_numa_owner(es_numa_plan_nodes(p), layer, expert);
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
    uint8_t *a = (uint8_t *)((uintptr_t)ptr & ~(uintptr_t)(pg - 1));
    size_t n = (size_t)(ptr + len - a + pg - 1) & ~(pg - 1);
    /* first touch from this (pinned) thread: read-ahead and fault in */
    madvise(a, n, MADV_WILLNEED);
    volatile uint8_t sink = 0;
    for (size_t off = 0; off < n; off += pg) sink ^= a[off];
    (void)sink;
    /* migrate whatever was resident elsewhere */
    unsigned long mask[(ES_MAX_NODES * 4 + 63) / 64 + 1];
    memset(mask, 0, sizeof mask);
    if (real < 0 || real >= (int)(sizeof mask * 8) - 1) return;
    mask[real / 64] |= 1ul << (real % 64);
    if (sys_mbind(a, n, MPOL_PREFERRED, mask, sizeof mask * 8, MPOL_MF_MOVE) == 0) return;
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
        if (sys_move_pages(cnt, pages, nodes, status, MPOL_MF_MOVE) != 0) { w->move_fail++; return; }
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

static int cmp_rep(const void *a, const void *b) {
    const replica *x = a, *y = b;
    return x->orig < y->orig ? -1 : x->orig > y->orig;
}

/* Hot (non-expert, non-embedding) tensors copied to nodes 1..N-1; 0 if
 * memory does not allow (then the caller interleaves them). */
static int make_replicas(es_numa_plan *p, const es_model *m) {
    const gguf_ctx *g = m->gguf;
    const int N = p->topo.n_nodes;
    uint64_t hot = 0;
    size_t n = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        if (!t->nbytes || is_expert_tensor(m, t->data) || t->data == m->tok_embd.data) continue;
        hot += t->nbytes;
        n++;
    }
    uint64_t avail = mem_available();
    if (!n || (avail && hot * (uint64_t)(N - 1) > avail / 2)) return 0;
    p->reps = calloc(n, sizeof *p->reps);
    if (!p->reps) return 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
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
                if (sys_mbind(c, rp->len, MPOL_BIND, mask, sizeof mask * 8, 0) != 0) p->st.mbind_fail++;
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

es_status es_numa_place(const es_model *m, int policy, es_numa_plan **out, char *err, size_t errlen) {
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
    es_numa_detect(&p->topo);
    const char *fake = getenv("EDGESEEK_FAKE_NUMA");
    p->fake_ignored = fake && *fake && !p->topo.fake;
    const int N = p->topo.n_nodes;
    char topo_desc[96];
    snprintf(topo_desc, sizeof topo_desc, "%d node%s (%s%s)%s", N, N == 1 ? "" : "s",
             p->topo.fake ? "EDGESEEK_FAKE_NUMA over " : "", p->topo.source,
             p->fake_ignored ? ", EDGESEEK_FAKE_NUMA ignored: not a count 1..64" : "");
    if (policy == ES_NUMA_OFF || N == 1 || !m->layers) {
        snprintf(p->summary, sizeof p->summary, "numa: %s, %s: nothing placed", policy_name(policy), topo_desc);
        *out = p;
        return ES_OK;
    }

    int replicated = 0;
    if (policy == ES_NUMA_REPLICATE) {
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
            int node = es_numa_owner(N, il, e);
            for (int w = 0; w < 3; w++) {
                oom |= add_assign(p, ws[w]->data + (size_t)e * ws[w]->mat_bytes, ws[w]->mat_bytes, node, -1);
                p->st.expert_bytes[node] += ws[w]->mat_bytes;
            }
        }
    }
    /* everything else: interleaved in stripes, unless replicated above */
    const gguf_ctx *g = m->gguf;
    uint64_t stripe = 0;
    for (uint64_t i = 0; i < g->n_tensors && !oom; i++) {
        const gguf_tensor *t = &g->tensors[i];
        if (!t->nbytes || is_expert_tensor(m, t->data)) continue;
        if (replicated && t->data != m->tok_embd.data) continue;
        for (uint64_t off = 0; off < t->nbytes && !oom; off += STRIPE_BYTES) {
            uint64_t len = t->nbytes - off < STRIPE_BYTES ? t->nbytes - off : STRIPE_BYTES;
            oom |= add_assign(p, t->data + off, (size_t)len, (int)(stripe++ % (uint64_t)N), -1);
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
             policy == ES_NUMA_REPLICATE && !replicated ? " (not enough memory to replicate)" : "",
             (unsigned long long)p->st.pages_on_target, (unsigned long long)p->st.sampled_pages,
             p->st.mbind_fail || p->st.move_fail ? "; the kernel refused some migrations" : "");
    *out = p;
    return ES_OK;
}
