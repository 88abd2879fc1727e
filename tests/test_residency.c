/* test_residency.c — expert paging (mmap/): the replacement policy on
 * synthetic traces with hit counts worked out by hand; size strings and the
 * memory probe; the residency manager alone on a layout built by hand over
 * a plain file (loads, eviction under a budget, the bytes each pointer
 * shows); the residency manager's hit counts against a simulation of
 * the policy on the model's real routing trace; and end to end, that the
 * logits and greedy tokens are bit-identical whatever the mode, budget,
 * policy, prefetch, I/O threads and compute threads.  Models come from
 * build/gen_model in a temporary directory. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "budget.h"
#include "edgeseek.h"
#include "model.h"
#include "policy.h"
#include "residency.h"
#include "testutil.h"

/* ---- policy: hand-computed traces --------------------------------------------- */

/* Runs a single-layer trace of expert ids (one layer access each) and
 * returns the hits. */
static int run_trace(es_pol *p, const int *trace, int n) {
    int hits = 0;
    for (int i = 0; i < n; i++) {
        es_pol_layer_tick(p, 0);
        hits += es_pol_access(p, 0, trace[i], 1);
    }
    return hits;
}

/* The trace under LRU and LFU (no aging) with cap slots: the hits each
 * gives, worked out by hand in the comments below. */
static void both(const char *what, const int *trace, int n, int E, int cap, int want_lru, int want_lfu) {
    es_pol *lru = es_pol_new(ES_POL_LRU, 1, E, cap, 0), *lfu = es_pol_new(ES_POL_LFU, 1, E, cap, 0);
    CHECK(lru && lfu, "policies created");
    if (lru && lfu) {
        int hl = run_trace(lru, trace, n), hf = run_trace(lfu, trace, n);
        CHECK(hl == want_lru, "LRU: %d hits on %s (got %d)", want_lru, what, hl);
        CHECK(hf == want_lfu, "LFU: %d hits on %s (got %d)", want_lfu, what, hf);
        CHECK(lru->n_resident <= cap && lfu->n_resident <= cap, "%s: never more than the capacity", what);
    }
    es_pol_free(lru);
    es_pol_free(lfu);
}

static void test_policy_basic(void) {
    /* cap 2, trace 0 1 0 2 1 0.
     * LRU: 0 m, 1 m, 0 h, 2 m (evicts 1), 1 m (evicts 0), 0 m (evicts 2): 1 hit.
     * LFU (no aging): 0 m, 1 m, 0 h (0 scores 2), 2 m (evicts 1, score 1),
     *      1 m (its score becomes 2; evicts 2, score 1 < 2), 0 h: 2 hits. */
    const int trace[] = {0, 1, 0, 2, 1, 0};
    both("0 1 0 2 1 0, 2 slots", trace, 6, 4, 2, 1, 2);
    es_pol *p = es_pol_new(ES_POL_LRU, 1, 4, 2, 0);
    run_trace(p, trace, 6);
    CHECK(p->u[1].resident && p->u[0].resident && !p->u[2].resident, "LRU ends holding {1, 0}");
    es_pol_free(p);

    /* cyclic 0 1 2 0 1 2 with 2 slots: LRU always evicts what comes next (0
     * hits).  LFU without aging: 0 m, 1 m, 2 m (0 and 1 score 1: LRU tie, 0
     * goes), 0 m (scores: 1:1, 2:1, tie: 1 goes; 0 now 2), 1 m (2:1 goes;
     * 1 now 2), 2 m (0:2 and 1:2, tie: 0 goes): 0 hits as well. */
    const int cyc[] = {0, 1, 2, 0, 1, 2};
    both("the cycle 0 1 2 0 1 2, 2 slots", cyc, 6, 3, 2, 0, 0);

    /* a hot expert among cold ones: 0 x 0 y 0 z 0 w with 2 slots keeps 0 in
     * both policies: 0 m, x m, 0 h, y m (evicts x), 0 h, z m, 0 h, w m: 3 hits */
    const int hot[] = {0, 1, 0, 2, 0, 3, 0, 1};
    both("0 1 0 2 0 3 0 1, 2 slots", hot, 8, 4, 2, 3, 3);

    /* frequency beats recency: 0 0 0 1 2 0 with 2 slots.  LRU: 0 m h h, 1 m,
     * 2 m (evicts 0, the least recent), 0 m: 2 hits.  LFU: 2 evicts 1 (score
     * 1 < 3), 0 h: 3 hits. */
    const int freq[] = {0, 0, 0, 1, 2, 0};
    both("0 0 0 1 2 0, 2 slots", freq, 6, 4, 2, 2, 3);
}

static void test_policy_aging(void) {
    /* LFU with a half-life of 1 layer access: expert 0 used by 4 tokens at
     * clock 1 scores 4 * 0.5^3 = 0.5 at clock 4, below expert 1's fresh 1,
     * so a third expert evicts 0; without aging it evicts 1 (1 < 4). */
    for (int aging = 0; aging < 2; aging++) {
        es_pol *p = es_pol_new(ES_POL_LFU, 1, 4, 2, aging ? 1.0 : 0.0);
        es_pol_layer_tick(p, 0);
        es_pol_access(p, 0, 0, 4);
        es_pol_layer_tick(p, 0);
        es_pol_layer_tick(p, 0);
        es_pol_layer_tick(p, 0);
        es_pol_access(p, 0, 1, 1);
        CHECK(fabs(es_pol_score(p, 0) - (aging ? 0.5 : 4.0)) < 1e-12, "score of expert 0 = %g", es_pol_score(p, 0));
        es_pol_access(p, 0, 2, 1);
        CHECK(p->u[0].resident == !aging && p->u[1].resident == aging,
              "aging %d: the third expert evicts expert %d", aging, aging ? 0 : 1);
        es_pol_free(p);
    }
}

static void test_policy_layers(void) {
    /* 2 layers of 4 experts, 2 slots: quota 1 each.  (0,0) m, (0,1) m (layer
     * 0 borrows the free slot), (1,0) m: layer 0 is 1 over its quota, layer 1
     * would be at it, so layer 0's LRU (0,0) goes; (0,1) h; (0,0) m: layer 0
     * would be 1 over, layer 1 at quota: (0,1) goes.  1 hit; holds (1,0), (0,0). */
    es_pol *p = es_pol_new(ES_POL_LRU, 2, 4, 2, 0);
    const int tr[][2] = {{0, 0}, {0, 1}, {1, 0}, {0, 1}, {0, 0}};
    int hits = 0;
    for (int i = 0; i < 5; i++) {
        es_pol_layer_tick(p, tr[i][0]);
        hits += es_pol_access(p, tr[i][0], tr[i][1], 1);
    }
    CHECK(hits == 1, "two layers sharing 2 slots: 1 hit (got %d)", hits);
    CHECK(p->u[4].resident && p->u[0].resident && !p->u[1].resident, "holds (1,0) and (0,0)");
    es_pol_free(p);

    /* equal excess: the layer whose next use is furthest goes first.  3
     * layers, 6 slots (quota 2): layers 0 and 2 hold 3 each; a unit for layer
     * 1 evicts from layer 0 (runs after 2 once layer 1 is done). */
    p = es_pol_new(ES_POL_LRU, 3, 4, 6, 0);
    for (int e = 0; e < 3; e++) {
        es_pol_access(p, 0, e, 1);
        es_pol_access(p, 2, e, 1);
    }
    int v = es_pol_victim(p, 1);
    CHECK(v >= 0 && v / 4 == 0, "victim for layer 1 comes from layer 0 (got unit %d)", v);
    CHECK(v == 0, "and it is layer 0's least recently used (got %d)", v);
    es_pol_free(p);
}

static void test_policy_pins(void) {
    es_pol *p = es_pol_new(ES_POL_LRU, 1, 4, 2, 0);
    es_pol_access(p, 0, 0, 1);
    es_pol_access(p, 0, 1, 1);
    es_pol_pin(p, 0);
    CHECK(es_pol_victim(p, 0) == 1, "a pinned unit is skipped although least recent");
    es_pol_pin(p, 1);
    CHECK(es_pol_victim(p, 0) == -1, "all pinned: no victim");
    CHECK(es_pol_access(p, 0, 2, 1) == 0 && !p->u[2].resident && p->n_resident == 2,
          "all pinned: a miss is not inserted");
    es_pol_unpin(p, 0);
    es_pol_unpin(p, 1);
    es_pol_unpin(p, 1); /* extra unpin is harmless */
    CHECK(p->u[1].pins == 0 && p->n_pinned[0] == 0, "pins back to 0");

    /* fresh: inserted, not yet used, passed over while something else can go */
    es_pol_free(p);
    p = es_pol_new(ES_POL_LRU, 1, 4, 3, 0);
    es_pol_access(p, 0, 0, 1);
    es_pol_insert(p, 1); /* prefetched */
    es_pol_use(p, 0, 1); /* 0 is now more recent than 1 */
    CHECK(es_pol_victim(p, 0) == 0, "a fresh unit is not the victim while another can go");
    es_pol_layer_tick(p, 0);
    CHECK(es_pol_victim(p, 0) == 1, "after its layer ran, it is an ordinary unit");
    es_pol_set_cap(p, 1);
    CHECK(!es_pol_has_room(p) && p->quota[0] == 1, "capacity lowered");
    es_pol_free(p);
    CHECK(es_pol_new(ES_POL_LRU, 0, 4, 1, 0) == NULL && es_pol_new(7, 1, 4, 1, 0) == NULL, "bad sizes refused");
}

/* ---- budget ------------------------------------------------------------------------ */

static void test_budget(void) {
    struct { const char *s; int64_t v; } ok[] = {
        {"0", 0}, {"4096", 4096}, {"4K", 4096}, {"4k", 4096}, {"512M", 512LL << 20}, {"4G", 4LL << 30},
        {"1.5G", 3LL << 29}, {"2GiB", 2LL << 30}, {"3MB", 3LL << 20}, {"1T", 1LL << 40}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t v = -1;
        CHECK(es_parse_bytes(ok[i].s, &v) == 0 && v == ok[i].v, "'%s' = %lld (got %lld)", ok[i].s, (long long)ok[i].v,
              (long long)v);
    }
    const char *bad[] = {"", "G", "-1", "4X", "1.5", "0x10", "1e9", "inf", "nan", "4 G", "99999999T", "4GG", " "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v;
        CHECK(es_parse_bytes(bad[i], &v) != 0, "'%s' is refused", bad[i]);
    }
    int64_t v;
    CHECK(es_parse_size("2M", &v) == ES_OK && v == 2 << 20, "public es_parse_size");
    es_mem_info mi;
    es_mem_probe(&mi);
    CHECK(mi.available > 0, "available memory found (%lld)", (long long)mi.available);
    CHECK(mi.cgroup_version == 0 || mi.cgroup_limit > 0, "a cgroup limit comes with a value");
}

static char g_dir[64];

/* Writes root/rel (making its directories) with the given text. */
static void put(const char *root, const char *rel, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    for (char *p = path + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(path, 0755);
            *p = '/';
        }
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* The memory probe on fake /proc and /sys trees: cgroup v2 with a tighter
 * parent, v1 with an unlimited root, none. */
static void test_mem_probe(void) {
    char root[128];
    snprintf(root, sizeof root, "%s/v2", g_dir);
    put(root, "proc/meminfo", "MemTotal:       16777216 kB\nMemAvailable:    8388608 kB\n");
    put(root, "proc/self/cgroup", "0::/user.slice/job\n");
    put(root, "sys/fs/cgroup/cgroup.controllers", "cpu memory\n");
    put(root, "sys/fs/cgroup/user.slice/memory.max", "max\n");
    put(root, "sys/fs/cgroup/user.slice/job/memory.max", "4294967296\n");
    put(root, "sys/fs/cgroup/user.slice/job/memory.current", "1073741824\n");
    put(root, "sys/fs/cgroup/user.slice/job/memory.stat", "anon 1\nactive_file 268435456\ninactive_file 268435456\n");
    es_mem_info mi;
    es_mem_probe_at(&mi, root);
    /* 4 GiB limit, 1 GiB charged of which 512 MiB page cache: 3.5 GiB left, under MemAvailable's 8 */
    CHECK(mi.cgroup_version == 2 && mi.cgroup_limit == 4LL << 30 && mi.cgroup_usage == 1LL << 30 &&
              mi.cgroup_file == 512LL << 20 && mi.mem_available == 8LL << 30 && mi.available == 7LL << 29,
          "cgroup v2: version %d limit %lld usage %lld file %lld available %lld", mi.cgroup_version,
          (long long)mi.cgroup_limit, (long long)mi.cgroup_usage, (long long)mi.cgroup_file, (long long)mi.available);
    put(root, "sys/fs/cgroup/user.slice/memory.max", "2147483648\n");
    put(root, "sys/fs/cgroup/user.slice/memory.current", "0\n");
    es_mem_probe_at(&mi, root);
    CHECK(mi.cgroup_limit == 2LL << 30 && mi.available == 2LL << 30, "a tighter parent limit wins (%lld)",
          (long long)mi.available);

    snprintf(root, sizeof root, "%s/v1", g_dir);
    put(root, "proc/meminfo", "MemAvailable:     524288 kB\n");
    put(root, "proc/self/cgroup", "12:cpu,cpuacct:/x\n5:memory:/memlimit.1\n0::/\n");
    put(root, "sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
    put(root, "sys/fs/cgroup/memory/memlimit.1/memory.limit_in_bytes", "1073741824\n");
    put(root, "sys/fs/cgroup/memory/memlimit.1/memory.usage_in_bytes", "104857600\n");
    put(root, "sys/fs/cgroup/memory/memlimit.1/memory.stat", "cache 1\ntotal_active_file 0\ntotal_inactive_file 52428800\n");
    es_mem_probe_at(&mi, root);
    /* 1 GiB - (100 - 50) MiB = 974 MiB, but MemAvailable says 512 MiB */
    CHECK(mi.cgroup_version == 1 && mi.cgroup_limit == 1LL << 30 && mi.available == 512LL << 20,
          "cgroup v1: version %d limit %lld available %lld", mi.cgroup_version, (long long)mi.cgroup_limit,
          (long long)mi.available);
    put(root, "proc/meminfo", "MemAvailable:    4194304 kB\n");
    es_mem_probe_at(&mi, root);
    CHECK(mi.available == (1LL << 30) - (50LL << 20), "cgroup v1: limit less what is not page cache (%lld)",
          (long long)mi.available);

    snprintf(root, sizeof root, "%s/none", g_dir);
    put(root, "proc/meminfo", "MemAvailable:    1048576 kB\n");
    es_mem_probe_at(&mi, root);
    CHECK(mi.cgroup_version == 0 && mi.cgroup_limit == -1 && mi.available == 1LL << 30, "no cgroup: MemAvailable");
}

/* ---- the manager and the forward pass ------------------------------------------ */

static int gen(const char *args, const char *out) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s --quiet %s -o %s/%s", test_build_path("gen_model"), args, g_dir, out);
    return system(cmd);
}

/* Routing trace: one entry per (batch, MoE layer) with the experts' token
 * counts, reconstructed from the route hook (called for every token of a
 * layer in turn). */
typedef struct trace {
    int n, cap, E;
    int *layer;   /* [n] */
    int *count;   /* [n][E] */
    int last_layer;
} trace;

static void on_route(void *user, int layer, int pos, const int32_t *experts, int k) {
    (void)pos;
    trace *t = user;
    if (t->n == 0 || layer != t->last_layer) {
        if (t->n == t->cap) {
            t->cap = t->cap ? 2 * t->cap : 256;
            t->layer = realloc(t->layer, sizeof(int) * (size_t)t->cap);
            t->count = realloc(t->count, sizeof(int) * (size_t)t->cap * (size_t)t->E);
        }
        t->layer[t->n] = layer;
        memset(t->count + (size_t)t->n * t->E, 0, sizeof(int) * (size_t)t->E);
        t->n++;
        t->last_layer = layer;
    }
    for (int j = 0; j < k; j++) t->count[(size_t)(t->n - 1) * t->E + experts[j]]++;
}

typedef struct run_out {
    float *logits;    /* [n_prompt][V] then [n_gen][V] */
    int32_t toks[32];
    es_res_counts c;
    int mode;         /* the mode the manager ran in */
    int ok;
} run_out;

enum { N_PROMPT = 70, N_GEN = 12 };

/* Prefill of N_PROMPT tokens (a batch of 64 and one of 6) with every
 * position's logits, then N_GEN greedy tokens one at a time. */
static void run_model(const char *path, const es_load_params *lp, int threads, trace *tr, run_out *o) {
    memset(o, 0, sizeof *o);
    char err[512];
    es_model *m = NULL;
    es_session *s = NULL;
    if (es_model_load(path, lp, &m, err, sizeof err) != ES_OK) {
        CHECK(0, "load %s: %s", path, err);
        return;
    }
    int V = es_model_n_vocab(m);
    o->logits = malloc(sizeof(float) * (size_t)V * (N_PROMPT + N_GEN));
    if (es_session_new(m, 128, &s, err, sizeof err) != ES_OK || es_session_set_threads(s, threads, err, sizeof err)) {
        CHECK(0, "session: %s", err);
        goto done;
    }
    if (tr) es_session_set_route_hook(s, on_route, tr);
    int32_t prompt[N_PROMPT];
    uint32_t x = 12345;
    for (int i = 0; i < N_PROMPT; i++) {
        x = x * 1103515245u + 12345u;
        prompt[i] = (int32_t)((x >> 8) % (uint32_t)V);
    }
    if (es_session_eval(s, prompt, N_PROMPT, o->logits, 1, err, sizeof err) != ES_OK) {
        CHECK(0, "prefill: %s", err);
        goto done;
    }
    const float *last = o->logits + (size_t)(N_PROMPT - 1) * V;
    for (int g = 0; g < N_GEN; g++) {
        int32_t best = 0;
        for (int i = 1; i < V; i++)
            if (last[i] > last[best]) best = i;
        o->toks[g] = best;
        float *lg = o->logits + (size_t)(N_PROMPT + g) * V;
        if (es_session_eval(s, &best, 1, lg, 0, err, sizeof err) != ES_OK) {
            CHECK(0, "decode: %s", err);
            goto done;
        }
        last = lg;
    }
    if (m->res) {
        es_res_get_counts(m->res, &o->c);
        o->mode = es_res_mode(m->res);
    }
    o->ok = 1;
done:
    es_session_free(s);
    es_model_free(m);
}

/* Hits the policy gives on the trace when each layer access uses the
 * experts already resident first (ascending) and then loads the misses in
 * descending order: what the manager does with no I/O threads and no
 * prefetch (the caller loads the last pending expert first). */
static int64_t simulate(const trace *t, int kind, int L, int first_moe, int64_t cap) {
    es_pol *p = es_pol_new(kind, L, t->E, cap, 32);
    int64_t hits = 0;
    for (int i = 0; i < t->n; i++) {
        int l = t->layer[i] - first_moe;
        const int *c = t->count + (size_t)i * t->E;
        es_pol_layer_tick(p, l);
        int miss[1024], nm = 0;
        for (int e = 0; e < t->E; e++) {
            if (!c[e]) continue;
            if (p->u[l * t->E + e].resident) hits += es_pol_access(p, l, e, c[e]);
            else if (nm < 1024) miss[nm++] = e;
        }
        for (int j = nm - 1; j >= 0; j--) es_pol_access(p, l, miss[j], c[miss[j]]);
    }
    es_pol_free(p);
    return hits;
}

typedef struct model_case {
    const char *file, *args;
    int64_t unit;          /* bytes of one expert (gate + up + down) in mmap mode */
    int64_t slot;          /* bytes of its pread cache slot: each range's aligned cover */
    int first_moe, L, k;
} model_case;

static int64_t model_unit_bytes(const char *path, model_case *mc) {
    es_model *m = NULL;
    es_load_params lp = {.experts = ES_EXPERTS_MMAP_PLAIN};
    if (es_model_load(path, &lp, &m, NULL, 0) != ES_OK) return -1;
    const es_layer *ly = &m->layers[m->hp.n_dense];
    mc->unit = (int64_t)(ly->gate_exps.mat_bytes + ly->up_exps.mat_bytes + ly->down_exps.mat_bytes);
    /* as residency.c sizes a slot: per range, the length rounded up to the
     * O_DIRECT alignment (the page, at least 4 KiB) plus one more */
    int64_t a = sysconf(_SC_PAGESIZE) > 4096 ? sysconf(_SC_PAGESIZE) : 4096;
    size_t lens[3] = {ly->gate_exps.mat_bytes, ly->up_exps.mat_bytes, ly->down_exps.mat_bytes};
    mc->slot = 0;
    for (int q = 0; q < 3; q++) mc->slot += ((int64_t)lens[q] + a - 1) / a * a + a;
    mc->first_moe = m->hp.n_dense;
    mc->L = m->hp.n_layers - m->hp.n_dense;
    mc->k = m->hp.n_used;
    es_model_free(m);
    return mc->unit;
}

static void test_model(model_case *mc) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", g_dir, mc->file);
    if (gen(mc->args, mc->file) != 0) {
        CHECK(0, "gen_model %s", mc->args);
        return;
    }
    if (model_unit_bytes(path, mc) <= 0) {
        CHECK(0, "%s loads", mc->file);
        return;
    }
    es_model *tmp = NULL;
    es_model_load(path, NULL, &tmp, NULL, 0);
    const int V = tmp ? es_model_n_vocab(tmp) : 0, E = tmp ? tmp->hp.n_experts : 0;
    es_model_free(tmp);
    const size_t nlog = (size_t)V * (N_PROMPT + N_GEN);

    /* the reference: plain mmap, 2 threads */
    es_load_params plain = {.experts = ES_EXPERTS_MMAP_PLAIN, .stats = 1};
    trace tr = {.E = E};
    run_out ref;
    run_model(path, &plain, 2, &tr, &ref);
    if (!ref.ok) return;
    int U = mc->L * E;
    const int64_t slot = mc->slot; /* pread budgets count slots, mmap ones plain experts */
    struct {
        const char *label;
        es_load_params lp;
        int threads;
    } cfg[] = {
        {"mmap, derived budget", {.experts = ES_EXPERTS_MMAP}, 2},
        {"default mode (the experts fit)", {0}, 1},
        {"default mode, 2 experts' budget", {.mem_budget = 2 * slot}, 2},
        {"mmap, 1 expert, LRU", {.experts = ES_EXPERTS_MMAP, .mem_budget = mc->unit}, 2},
        {"mmap, k+1 experts, LFU", {.experts = ES_EXPERTS_MMAP, .mem_budget = mc->unit * (mc->k + 1), .policy = ES_POLICY_LFU}, 2},
        {"mmap, 3 experts, no prefetch, no I/O threads", {.experts = ES_EXPERTS_MMAP, .mem_budget = 3 * mc->unit, .no_prefetch = 1, .io_threads = -1}, 1},
        {"mmap, a third of the experts, mlock", {.experts = ES_EXPERTS_MMAP, .mem_budget = mc->unit * (U / 3), .mlock = 1}, 2},
        {"pread, 1 expert", {.experts = ES_EXPERTS_PREAD, .mem_budget = slot}, 2},
        {"pread, 1 expert, no I/O threads", {.experts = ES_EXPERTS_PREAD, .mem_budget = slot, .io_threads = -1}, 1},
        {"pread, k experts, buffered", {.experts = ES_EXPERTS_PREAD, .mem_budget = slot * mc->k, .no_direct = 1}, 2},
        {"pread, k+1 experts, mlock", {.experts = ES_EXPERTS_PREAD, .mem_budget = slot * (mc->k + 1), .mlock = 1}, 2},
        {"pread, half the experts, LFU, 4 I/O threads", {.experts = ES_EXPERTS_PREAD, .mem_budget = slot * (U / 2), .policy = ES_POLICY_LFU, .io_threads = 4}, 2},
        {"pread, everything", {.experts = ES_EXPERTS_PREAD, .mem_budget = slot * (U + 1)}, 2},
    };
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        run_out o;
        run_model(path, &cfg[i].lp, cfg[i].threads, NULL, &o);
        if (!o.ok) continue;
        CHECK(memcmp(o.logits, ref.logits, sizeof(float) * nlog) == 0, "%s, %s: logits bit-identical to plain mmap",
              mc->file, cfg[i].label);
        CHECK(memcmp(o.toks, ref.toks, sizeof ref.toks) == 0, "%s, %s: same greedy tokens", mc->file, cfg[i].label);
        CHECK(o.c.accesses == ref.c.accesses, "%s, %s: %lld expert accesses (plain: %lld)", mc->file, cfg[i].label,
              (long long)o.c.accesses, (long long)ref.c.accesses);
        CHECK(o.c.hits + o.c.prefetch_hits + o.c.misses == o.c.accesses, "%s, %s: hits + misses = accesses",
              mc->file, cfg[i].label);
        CHECK(o.c.max_resident_units <= o.c.cap_units, "%s, %s: at most %lld experts resident (peak %lld)", mc->file,
              cfg[i].label, (long long)o.c.cap_units, (long long)o.c.max_resident_units);
        CHECK(o.c.predicted_used <= o.c.predicted && o.c.predicted_used <= o.c.actual_predicted,
              "%s, %s: prefetch counts consistent", mc->file, cfg[i].label);
        CHECK(o.c.io_errors == 0, "%s, %s: no read errors", mc->file, cfg[i].label);
        if (cfg[i].lp.mem_budget == mc->unit || cfg[i].lp.mem_budget == slot)
            CHECK(o.c.cap_units == 1 && o.c.max_resident_units == 1, "%s, %s: one expert at a time", mc->file,
                  cfg[i].label);
        if (!cfg[i].lp.experts)
            CHECK(o.mode == (cfg[i].lp.mem_budget ? ES_EXPERTS_PREAD : ES_EXPERTS_MMAP),
                  "%s, %s: the default is mmap when every expert fits, else pread (ran %d)", mc->file, cfg[i].label,
                  o.mode);
        if (cfg[i].lp.mem_budget > slot * U)
            CHECK(o.c.loads <= U && o.c.evictions == 0, "%s, %s: each expert loaded once (%lld loads)", mc->file,
                  cfg[i].label, (long long)o.c.loads);
        free(o.logits);
    }

    /* hit counts against the simulated policy on the same routing */
    for (int mode = 0; mode < 2; mode++)
        for (int kind = ES_POL_LRU; kind <= ES_POL_LFU; kind++) {
            int64_t cap = U / 3 > mc->k ? U / 3 : mc->k;
            es_load_params lp = {.experts = mode ? ES_EXPERTS_PREAD : ES_EXPERTS_MMAP,
                                 .mem_budget = (mode ? slot : mc->unit) * cap,
                                 .policy = kind == ES_POL_LFU ? ES_POLICY_LFU : ES_POLICY_LRU,
                                 .no_prefetch = 1,
                                 .io_threads = -1};
            run_out o;
            run_model(path, &lp, 2, NULL, &o);
            if (!o.ok) continue;
            int64_t want = simulate(&tr, kind, mc->L, mc->first_moe, cap);
            CHECK(o.c.hits == want, "%s, %s %s, %lld slots: %lld hits, the simulation %lld", mc->file,
                  mode ? "pread" : "mmap", kind == ES_POL_LFU ? "LFU" : "LRU", (long long)cap, (long long)o.c.hits,
                  (long long)want);
            CHECK(o.c.misses == o.c.loads, "%s: every miss is one load", mc->file);
            free(o.logits);
        }
    free(ref.logits);
    free(tr.layer);
    free(tr.count);
}

/* ---- the manager on a hand-built layout (no model file) ----------------------------- */

/* A file of HL_HOT bytes of "always-hot" data, then per MoE layer the three
 * expert tensors of HL_E matrices each (lengths not page multiples, so
 * experts share pages), 100 bytes apart; every byte a function of its
 * offset, so a pointer's contents show which range it came from. */
enum { HL_FIRST = 1, HL_L = 2, HL_E = 8, HL_K = 3, HL_HOT = 12345, HL_GAP = 100, HL_REQ = 60 };
static const uint64_t hl_len[3] = {5000, 5000, 7000};

static uint8_t hl_byte(uint64_t off) { return (uint8_t)((off * 2654435761u) >> 13); }

typedef struct hand_layout {
    char path[256];
    es_res_range ranges[HL_L * 3];
    es_res_region regions[1 + HL_L * 3];
    const uint8_t *base;
    uint64_t size;
    es_res_layout lay;
} hand_layout;

static int hand_layout_make(hand_layout *h) {
    memset(h, 0, sizeof *h);
    snprintf(h->path, sizeof h->path, "%s/hand.bin", g_dir);
    uint64_t off = HL_HOT;
    h->regions[0] = (es_res_region){0, HL_HOT, ES_RES_HOT};
    for (int l = 0; l < HL_L; l++)
        for (int q = 0; q < 3; q++) {
            h->ranges[l * 3 + q] = (es_res_range){off, hl_len[q], hl_len[q]};
            h->regions[1 + l * 3 + q] = (es_res_region){off, hl_len[q] * HL_E, ES_RES_EXPERTS};
            off += hl_len[q] * HL_E + HL_GAP;
        }
    h->size = off;
    FILE *f = fopen(h->path, "wb");
    if (!f) return -1;
    for (uint64_t i = 0; i < h->size; i++) fputc(hl_byte(i), f);
    if (fclose(f) != 0) return -1;
    int fd = open(h->path, O_RDONLY);
    void *map = fd >= 0 ? mmap(NULL, h->size, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
    if (fd >= 0) close(fd);
    if (map == MAP_FAILED) return -1;
    h->base = map;
    h->lay = (es_res_layout){.path = h->path, .base = h->base, .map_size = h->size, .first_moe = HL_FIRST,
                             .n_moe = HL_L, .n_experts = HL_E, .n_used = HL_K, .ranges = h->ranges,
                             .hot_bytes = HL_HOT, .session_bytes = 1 << 20, .regions = h->regions,
                             .n_regions = 1 + HL_L * 3};
    return 0;
}

/* Drives HL_REQ requests (layers alternating, 1-5 experts with 1-3 tokens
 * each, from a fixed generator) and checks every pointer handed out shows
 * the expert's bytes, in mmap modes where the mapping has them; tr gets the
 * routing trace.  Returns the number of pointer mismatches. */
static int hand_drive(es_res *r, const hand_layout *h, int predict, trace *tr) {
    uint32_t x = 12345;
    int bad = 0;
    for (int i = 0; i < HL_REQ; i++) {
        const int l = i % HL_L;
        int32_t active[HL_E], row_start[HL_E + 1] = {0}, n = 0, want = 1 + (int)((x >> 8) % 5);
        int cnt[HL_E] = {0};
        while (n < want) {
            x = x * 1103515245u + 12345u;
            int e = (int)((x >> 16) % HL_E);
            if (!cnt[e]) { cnt[e] = 1 + (int)((x >> 4) % 3); n++; }
        }
        n = 0;
        for (int e = 0; e < HL_E; e++) {
            row_start[e + 1] = row_start[e] + cnt[e];
            if (cnt[e]) active[n++] = e;
        }
        tr->layer[tr->n] = HL_FIRST + l;
        memcpy(tr->count + (size_t)tr->n * HL_E, cnt, sizeof cnt);
        tr->n++;
        es_res_begin(r, HL_FIRST + l, active, n, row_start, 1 + i % 3);
        int32_t ids[HL_E];
        const uint8_t *ptr[HL_E][3];
        int handed = 0, got, seen[HL_E] = {0};
        while ((got = es_res_next(r, ids, ptr)) > 0) {
            for (int j = 0; j < got; j++) {
                bad += ids[j] < 0 || ids[j] >= HL_E || !cnt[ids[j]] || seen[ids[j]]++;
                for (int q = 0; q < 3 && ids[j] >= 0 && ids[j] < HL_E; q++) {
                    const es_res_range *rg = &h->ranges[l * 3 + q];
                    const uint8_t *at = h->base + rg->offset + (uint64_t)ids[j] * rg->stride;
                    bad += memcmp(ptr[j][q], at, rg->bytes) != 0;
                    bad += es_res_mode(r) != ES_EXPERTS_PREAD && ptr[j][q] != at;
                }
            }
            handed += got;
            es_res_release(r, ids, got);
        }
        bad += handed != n;
        es_res_end(r);
        if (predict && es_res_wants_prediction(r)) {
            int32_t pred[2] = {(int32_t)(x % HL_E), (int32_t)((x / HL_E + 1) % HL_E)};
            if (pred[1] == pred[0]) pred[1] = (pred[0] + 1) % HL_E;
            es_res_prefetch(r, HL_FIRST + (l + 1) % HL_L, pred, 2);
        }
    }
    return bad;
}

/* The manager without a model: loads, evictions and the hit counts of the
 * policy's simulation under a budget of 4 experts, in each mode. */
static void test_hand_layout(void) {
    hand_layout h;
    if (hand_layout_make(&h) != 0) {
        CHECK(0, "hand-built layout file");
        return;
    }
    const int64_t a = sysconf(_SC_PAGESIZE) > 4096 ? sysconf(_SC_PAGESIZE) : 4096;
    int64_t unit = 0, slot = 0;
    for (int q = 0; q < 3; q++) {
        unit += (int64_t)hl_len[q];
        slot += ((int64_t)hl_len[q] + a - 1) / a * a + a;
    }
    struct {
        const char *label;
        es_load_params lp;
        int exact; /* no threads, no prefetch: hits as simulated */
    } cfg[] = {
        {"pread, no I/O threads", {.experts = ES_EXPERTS_PREAD, .mem_budget = 4 * slot, .io_threads = -1}, 1},
        {"pread LFU, 2 I/O threads", {.experts = ES_EXPERTS_PREAD, .mem_budget = 4 * slot, .policy = ES_POLICY_LFU, .io_threads = 2}, 0},
        {"mmap, no I/O threads", {.experts = ES_EXPERTS_MMAP, .mem_budget = 4 * unit, .io_threads = -1}, 1},
        {"mmap, 2 I/O threads", {.experts = ES_EXPERTS_MMAP, .mem_budget = 4 * unit, .io_threads = 2}, 0},
        {"mmap-plain", {.experts = ES_EXPERTS_MMAP_PLAIN, .stats = 1}, 0},
    };
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        es_res *r = NULL;
        char err[256] = "";
        es_status st = es_res_new(&h.lay, &cfg[i].lp, &r, err, sizeof err);
        CHECK(st == ES_OK && r, "hand layout, %s: set up (%s)", cfg[i].label, err);
        if (!r) continue;
        int cnt[HL_REQ * HL_E], lay[HL_REQ];
        trace tr = {.E = HL_E, .cap = HL_REQ, .layer = lay, .count = cnt};
        int bad = hand_drive(r, &h, !cfg[i].exact, &tr);
        CHECK(bad == 0, "hand layout, %s: every expert handed once, with its bytes (%d wrong)", cfg[i].label, bad);
        es_res_counts c;
        es_res_get_counts(r, &c);
        int64_t accesses = 0;
        for (int j = 0; j < tr.n * HL_E; j++) accesses += cnt[j] != 0;
        CHECK(c.accesses == accesses && c.hits + c.prefetch_hits + c.misses == c.accesses,
              "hand layout, %s: %lld accesses, hits + misses add up", cfg[i].label, (long long)accesses);
        if (cfg[i].lp.experts == ES_EXPERTS_MMAP_PLAIN) {
            CHECK(c.loads == 0 && c.evictions == 0, "hand layout, mmap-plain: no loads");
        } else {
            CHECK(c.cap_units == 4 && c.max_resident_units <= 4 && c.evictions > 0 && c.io_errors == 0,
                  "hand layout, %s: 4 experts at most (peak %lld), %lld evictions", cfg[i].label,
                  (long long)c.max_resident_units, (long long)c.evictions);
            /* a prefetch may still be in flight: resident already, not yet counted as a load */
            int64_t in = c.evictions + c.resident_units;
            CHECK(cfg[i].exact ? c.loads == in : c.loads <= in && c.loads >= in - 2,
                  "hand layout, %s: loads (%lld) = evictions + resident (%lld), less loads in flight", cfg[i].label,
                  (long long)c.loads, (long long)in);
        }
        if (cfg[i].exact) {
            int64_t want = simulate(&tr, ES_POL_LRU, HL_L, HL_FIRST, 4);
            CHECK(c.hits == want, "hand layout, %s: %lld hits, the simulation %lld", cfg[i].label,
                  (long long)c.hits, (long long)want);
            CHECK(cfg[i].lp.experts != ES_EXPERTS_PREAD || c.bytes_loaded >= c.loads * unit,
                  "hand layout, %s: each load read its expert", cfg[i].label);
        }
        es_res_free(r);
    }

    /* refusals: a budget below one expert; a file that changed since it was mapped */
    es_res *r = NULL;
    char err[256] = "";
    es_load_params lp = {.experts = ES_EXPERTS_MMAP, .mem_budget = unit - 1};
    CHECK(es_res_new(&h.lay, &lp, &r, err, sizeof err) == ES_ERR_ARG && !r && strstr(err, "smaller than one expert"),
          "hand layout: a budget below one expert is refused: %s", err);
    es_res_layout moved = h.lay;
    moved.map_size++;
    lp.mem_budget = 4 * unit;
    CHECK(es_res_new(&moved, &lp, &r, err, sizeof err) == ES_ERR_IO && !r && strstr(err, "it changed"),
          "hand layout: a file of another size is refused: %s", err);
    moved = h.lay;
    moved.n_moe = 0;
    CHECK(es_res_new(&moved, &lp, &r, err, sizeof err) == ES_OK && !r, "hand layout without MoE layers: no manager");
    munmap((void *)h.base, h.size);
}

static void test_errors(void) {
    char path[256];
    snprintf(path, sizeof path, "%s/tiny.gguf", g_dir);
    if (gen("--preset tiny --type f32 --seed 5", "tiny.gguf") != 0) {
        CHECK(0, "gen_model tiny");
        return;
    }
    es_model *m = NULL;
    char err[512] = "";
    es_load_params lp = {.experts = ES_EXPERTS_PREAD, .mem_budget = 100};
    CHECK(es_model_load(path, &lp, &m, err, sizeof err) == ES_ERR_ARG && !m && strstr(err, "smaller than one expert"),
          "a budget below one expert is refused: %s", err);
    lp = (es_load_params){.experts = 9};
    CHECK(es_model_load(path, &lp, &m, err, sizeof err) == ES_ERR_ARG && !m, "an unknown mode is refused");
    lp = (es_load_params){.policy = -1};
    CHECK(es_model_load(path, &lp, &m, err, sizeof err) == ES_ERR_ARG && !m, "an unknown policy is refused");
    lp = (es_load_params){.vocab_only = 1, .experts = ES_EXPERTS_PREAD};
    CHECK(es_model_load(path, &lp, &m, err, sizeof err) == ES_OK && m && !m->res, "vocab-only: no manager");
    es_model_free(m);
    m = NULL;
    /* a model without MoE layers has nothing to page */
    snprintf(path, sizeof path, "%s/dense.gguf", g_dir);
    if (gen("--preset tiny --type f32 --dense-layers 3", "dense.gguf") == 0) {
        CHECK(es_model_load(path, NULL, &m, err, sizeof err) == ES_OK && m && !m->res, "dense model: no manager");
        es_model_free(m);
    }

    /* the CLI: bad values exit 2 with a message */
    const char *bad[] = {"--mem-budget abc", "--mem-budget 0", "--mem-budget -5G", "--experts foo", "--policy mru",
                         "--io-threads 99", "--mem-budget"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "%s run -m %s/tiny.gguf -p hi -n 2 %s >/dev/null 2>&1", test_build_path("edgeseek"),
                 g_dir, bad[i]);
        int rc = system(cmd);
        CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "edgeseek run %s exits 2 (got %d)", bad[i],
              WIFEXITED(rc) ? WEXITSTATUS(rc) : -1);
    }
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s run -m %s/tiny.gguf -p hi -n 4 --temp 0 --experts pread --mem-budget 1M --stats "
                              "--policy lfu 2>&1 | grep -c '^\\[paging\\] expert accesses'",
             test_build_path("edgeseek"), g_dir);
    FILE *f = popen(cmd, "r");
    char line[64] = "";
    if (f) {
        if (!fgets(line, sizeof line, f)) line[0] = 0;
        pclose(f);
    }
    CHECK(atoi(line) == 1, "--stats prints the paging report");
}

int main(void) {
    test_policy_basic();
    test_policy_aging();
    test_policy_layers();
    test_policy_pins();
    test_budget();

    snprintf(g_dir, sizeof g_dir, "/tmp/es_res_XXXXXX");
    if (!mkdtemp(g_dir)) {
        CHECK(0, "mkdtemp");
        return test_summary();
    }
    test_mem_probe();
    test_hand_layout();
    if (access(test_build_path("gen_model"), X_OK) != 0) {
        CHECK(0, "%s not built", test_build_path("gen_model"));
    } else {
        /* V3 routing (sigmoid, bias, groups) in Q8_0, experts of 52 KiB that
         * do not start on page boundaries; tiny F32 experts of 8 KiB-24 KiB,
         * several to a page; Q4_0 experts of about 220 KiB */
        model_case cases[] = {
            {"v3.gguf", "--preset v3 --type q8_0 --layers 4 --seed 11", 0, 0, 0, 0, 0},
            {"tiny.gguf", "--preset tiny --type f32 --layers 4 --seed 12", 0, 0, 0, 0, 0},
            {"q4.gguf", "--preset tiny --type q4_0 --dim 256 --expert-ffn 512 --experts 16 --experts-used 4 --layers 3 --seed 13",
             0, 0, 0, 0, 0},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_model(&cases[i]);
        test_errors();
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) printf("could not remove %s\n", g_dir);
    return test_summary();
}
