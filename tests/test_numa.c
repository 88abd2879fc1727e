/* test_numa.c — the NUMA layer and the node-aware thread pool, on this
 * machine's real topology and under EDGESEEK_FAKE_NUMA=2 and 4:
 *   - topology: every node has CPUs, fake splits are even, a bad
 *     EDGESEEK_FAKE_NUMA is ignored with a warning;
 *   - pool: threads spread over nodes, workers pinned to their node's CPUs
 *     where the OS allows (and then running there), plain loops and
 *     node-aware loops run every item exactly once, node-aware items only
 *     on threads of their node, whatever the thread count;
 *   - stealing node-aware loops: a thread takes another node's items only
 *     once its own queues are empty, and an idle node does take them;
 *   - placement on a generated MoE model: experts dealt round-robin and
 *     evenly, the sampled pages resident on their node, replicas equal to
 *     the originals and read by their node's threads, every policy a no-op
 *     on one node, and the same logits under every policy;
 *   - the MoE path under 2 and 3 fake nodes: expert units run on their
 *     expert's node (or stolen by a thread with nothing left of its own),
 *     logits of prefill and decode bit-identical to one node for 1..5
 *     threads. */
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "edgeseek.h"
#include "model.h"
#include "env.h"
#include "placement.h"
#include "testutil.h"
#include "threadpool.h"

static void set_fake(int n) {
    if (n > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", n);
        setenv("EDGESEEK_FAKE_NUMA", v, 1);
    } else {
        unsetenv("EDGESEEK_FAKE_NUMA");
    }
}

/* ---- topology ------------------------------------------------------------------ */

static void check_topo(const es_numa_topo *t, const char *what) {
    CHECK(t->n_nodes >= 1 && t->n_nodes <= ES_MAX_NODES, "%s: %d nodes", what, t->n_nodes);
    CHECK(t->cpu_start[0] == 0 && t->cpu_start[t->n_nodes] == t->n_cpus, "%s: CPU ranges cover the list", what);
    for (int k = 0; k < t->n_nodes; k++) {
        CHECK(t->cpu_start[k + 1] > t->cpu_start[k], "%s: node %d has CPUs", what, k);
        CHECK(t->real_id[k] >= 0, "%s: node %d stands for a kernel node", what, k);
    }
}

static void test_topology(void) {
    es_numa_topo t;
    es_numa_detect(&t, 0);
    check_topo(&t, "real");
    CHECK(!t.fake, "no fake without the variable");
    int real_cpus = t.n_cpus, real_nodes = t.n_nodes;
    printf("# topology: %d node(s), %d usable CPUs, source %s\n", t.n_nodes, t.n_cpus, t.source);
    for (int n = 2; n <= 4; n += 2) {
        es_numa_detect(&t, n);
        check_topo(&t, n == 2 ? "fake 2" : "fake 4");
        CHECK(t.fake && t.n_nodes == n, "fake %d: %d nodes", n, t.n_nodes);
        /* even split: node sizes differ by at most one (or one CPU each
         * when there are fewer CPUs than nodes) */
        int lo = 1 << 30, hi = 0;
        for (int k = 0; k < n; k++) {
            int c = t.cpu_start[k + 1] - t.cpu_start[k];
            lo = c < lo ? c : lo;
            hi = c > hi ? c : hi;
        }
        CHECK(hi - lo <= 1, "fake %d: even split (%d..%d CPUs per node)", n, lo, hi);
        if (real_cpus >= n) CHECK(t.n_cpus == real_cpus, "fake %d: every CPU used once", n);
    }
    es_numa_detect(&t, ES_MAX_NODES + 1);
    CHECK(!t.fake && t.n_nodes == real_nodes, "a node count out of range is ignored");
    /* the variable: read, or reported and ignored when it is not a count */
    es_env e;
    set_fake(3);
    es_env_read(&e);
    CHECK(e.fake_numa == 3 && !e.warnings[0], "EDGESEEK_FAKE_NUMA=3 read as 3 (%d)", e.fake_numa);
    static const char *bad[] = {"lots", "0", "65", "2x", "-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("EDGESEEK_FAKE_NUMA", bad[i], 1);
        es_env_read(&e);
        CHECK(e.fake_numa == 0 && strstr(e.warnings, "EDGESEEK_FAKE_NUMA") && strstr(e.warnings, bad[i]),
              "a bad EDGESEEK_FAKE_NUMA=%s is ignored with a warning (%s)", bad[i], e.warnings);
    }
    set_fake(0);
}

/* ---- pool ------------------------------------------------------------------------ */

typedef struct run_ctx {
    es_pool *p;
    const es_numa_topo *topo;
    atomic_int *hits;
    const int64_t *node_start; /* NULL: plain loop */
    int nodes;
    int64_t n, chunk;          /* plain loop: the ranges must be its chunks */
    int steal;                 /* node-aware loop that lets idle nodes help */
    atomic_int wrong_node, wrong_cpu, span, misaligned, stolen, early_steal;
} run_ctx;

/* 1 when every queue that thread node `me` serves has nothing left to claim */
static int own_queues_empty(es_pool *p, int me) {
    for (int k = 0; k < es_pool_nodes(p); k++)
        if (es_pool_serving_node(p, k) == me && es_pool_node_left(p, k) > 0) return 0;
    return 1;
}

static int node_of_item(const run_ctx *c, int64_t i) {
    int k = 0;
    while (k + 1 < c->nodes && i >= c->node_start[k + 1]) k++;
    return k;
}

static int cpu_in_node(const es_numa_topo *t, int node, int cpu) {
    for (int i = t->cpu_start[node]; i < t->cpu_start[node + 1]; i++)
        if (t->cpus[i] == cpu) return 1;
    return 0;
}

static void run_task(void *ctx, int64_t i0, int64_t i1, int tid) {
    run_ctx *c = ctx;
    const int me = es_pool_thread_node(c->p, tid);
    if (!c->node_start && (i0 % c->chunk || (i1 - i0 != c->chunk && i1 != c->n)))
        atomic_fetch_add(&c->misaligned, 1);
    if (c->node_start) {
        int k0 = node_of_item(c, i0);
        if (node_of_item(c, i1 - 1) != k0) atomic_fetch_add(&c->span, 1);
        if (es_pool_serving_node(c->p, k0) != me) {
            /* a stolen chunk: only by a thread whose own queues ran dry */
            atomic_fetch_add(c->steal ? &c->stolen : &c->wrong_node, 1);
            if (!own_queues_empty(c->p, me)) atomic_fetch_add(&c->early_steal, 1);
        }
    }
    /* a pinned worker must be running on a CPU of its node */
    if (tid > 0 && es_pool_pinned(c->p) == es_pool_threads(c->p) - 1 && c->topo) {
        int cpu = sched_getcpu();
        if (cpu >= 0 && !cpu_in_node(c->topo, me, cpu)) atomic_fetch_add(&c->wrong_cpu, 1);
    }
    for (int64_t i = i0; i < i1; i++) atomic_fetch_add(&c->hits[i], 1);
}

static void test_pool_nodes(int fake) {
    es_numa_topo t;
    es_numa_detect(&t, fake);
    const int N = t.n_nodes;
    const int threads[] = {1, 2, 3, 4, 5, 8};
    for (size_t ti = 0; ti < sizeof threads / sizeof threads[0]; ti++) {
        const int T = threads[ti];
        es_pool *p = es_pool_new_numa(T, &t);
        CHECK(p && es_pool_threads(p) == T && es_pool_nodes(p) == N, "fake %d: pool of %d threads over %d nodes",
              fake, T, N);
        if (!p) continue;
        /* every thread's node is valid, and every node is served by a node
         * with threads: itself whenever there are enough threads */
        int per_node[ES_MAX_NODES] = {0};
        for (int tid = 0; tid < T; tid++) per_node[es_pool_thread_node(p, tid)]++;
        CHECK(es_pool_thread_node(p, 0) == 0, "the caller is on node 0");
        for (int k = 0; k < N; k++) {
            int s = es_pool_serving_node(p, k);
            CHECK(s >= 0 && s < N && per_node[s] > 0, "fake %d, %d threads: node %d served by %d", fake, T, k, s);
            if (T >= N) CHECK(s == k && per_node[k] >= T / N, "fake %d, %d threads: node %d has its own threads",
                              fake, T, k);
        }
        if (N > 1 && T > 1) printf("# fake %d, %d threads: %d of %d workers pinned\n", fake, T, es_pool_pinned(p), T - 1);

        const int64_t sizes[] = {1, 2, 7, 64, 1000, 4099};
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            const int64_t n = sizes[si];
            atomic_int *hits = calloc((size_t)n, sizeof *hits);
            int64_t starts[ES_MAX_NODES + 1];
            /* uneven node shares, some empty: node k gets (k*k+1)/(sum) of n */
            int64_t wsum = 0;
            for (int k = 0; k < N; k++) wsum += (k % 3 == 1) ? 0 : k * k + 1;
            int64_t acc = 0;
            starts[0] = 0;
            for (int k = 0; k < N; k++) {
                acc += (k % 3 == 1) ? 0 : k * k + 1;
                starts[k + 1] = n * acc / wsum;
            }
            /* mode 0: plain loop, 1: node-aware, 2: node-aware with stealing */
            for (int mode = 0; mode < 3; mode++) {
                run_ctx c = {p, &t, hits, mode ? starts : NULL, N, n, 1 + n / 11, mode == 2, 0, 0, 0, 0, 0, 0};
                const int reps = 5;
                for (int r = 0; r < reps; r++) {
                    if (mode) es_pool_run_nodes(p, run_task, &c, starts, 1 + n / 13, mode == 2);
                    else es_pool_run(p, run_task, &c, n, c.chunk);
                }
                int ok = 1;
                for (int64_t i = 0; i < n; i++) {
                    ok &= atomic_load(&hits[i]) == reps;
                    atomic_store(&hits[i], 0);
                }
                static const char *const mode_name[] = {"plain", "node-aware", "stealing node-aware"};
                CHECK(ok, "fake %d, %d threads, n=%lld, %s loop: every item exactly once per run", fake, T,
                      (long long)n, mode_name[mode]);
                if (mode) {
                    CHECK(atomic_load(&c.early_steal) == 0,
                          "fake %d, %d threads, n=%lld: %d chunks taken off another node before the own queue ran dry",
                          fake, T, (long long)n, atomic_load(&c.early_steal));
                    CHECK(atomic_load(&c.wrong_node) == 0, "fake %d, %d threads, n=%lld: %d chunks off their node",
                          fake, T, (long long)n, atomic_load(&c.wrong_node));
                    CHECK(atomic_load(&c.span) == 0, "fake %d, %d threads: chunks never span two nodes", fake, T);
                }
                if (!mode)
                    CHECK(atomic_load(&c.misaligned) == 0,
                          "fake %d, %d threads, n=%lld: plain loop ranges are the loop's chunks (%d not)", fake, T,
                          (long long)n, atomic_load(&c.misaligned));
                CHECK(atomic_load(&c.wrong_cpu) == 0, "fake %d, %d threads: %d chunks ran off their node's CPUs",
                      fake, T, atomic_load(&c.wrong_cpu));
            }
            free(hits);
        }
        es_pool_free(p);
    }
}

/* Two threads on two nodes, every item on node 1, and node 1's thread
 * holding its first item until someone else has run one: with stealing the
 * caller (node 0, its own queue empty) must take node 1's items, without it
 * it must not. */
typedef struct steal_ctx {
    es_pool *p;
    int steal;
    atomic_int ran_by[2], held, early;
} steal_ctx;

static void steal_task(void *ctx, int64_t i0, int64_t i1, int tid) {
    steal_ctx *c = ctx;
    const int me = es_pool_thread_node(c->p, tid);
    if (me != 1 && !own_queues_empty(c->p, me)) atomic_fetch_add(&c->early, 1);
    atomic_fetch_add(&c->ran_by[me], (int)(i1 - i0));
    if (c->steal && me == 1 && !atomic_exchange(&c->held, 1)) {
        /* wait (at most 2 s) for the other node to run something */
        for (int w = 0; w < 2000 && atomic_load(&c->ran_by[0]) == 0; w++) usleep(1000);
    }
}

static void test_steal(void) {
    es_numa_topo t;
    es_numa_detect(&t, 2);
    es_pool *p = es_pool_new_numa(2, &t);
    if (!p) { CHECK(0, "pool of 2 threads on 2 fake nodes"); return; }
    CHECK(es_pool_thread_node(p, 0) == 0 && es_pool_thread_node(p, 1) == 1, "one thread per node");
    const int64_t starts[3] = {0, 0, 16};
    for (int steal = 0; steal < 2; steal++) {
        steal_ctx c = {.p = p, .steal = steal};
        es_pool_run_nodes(p, steal_task, &c, starts, 1, steal);
        int by0 = atomic_load(&c.ran_by[0]), by1 = atomic_load(&c.ran_by[1]);
        CHECK(by0 + by1 == 16, "steal %d: every item ran once (%d + %d)", steal, by0, by1);
        if (steal) CHECK(by0 > 0, "an idle node takes a busy node's items (node 0 ran %d of 16)", by0);
        else CHECK(by0 == 0, "without stealing no item leaves its node (node 0 ran %d)", by0);
        CHECK(atomic_load(&c.early) == 0, "steal %d: node 0 stole only with its own queue empty", steal);
    }
    es_pool_free(p);
}

/* ---- placement ----------------------------------------------------------------------- */

static char g_model[256];

static int make_model(void) {
    const char *gen = test_build_path("gen_model");
    if (access(gen, X_OK) != 0) return -1;
    char dir[] = "/tmp/es_numa_XXXXXX";
    if (!mkdtemp(dir)) return -1;
    snprintf(g_model, sizeof g_model, "%s/moe.gguf", dir);
    char cmd[4096];
    /* 16 experts and 3 MoE layers: divisible by 2 and 4 */
    snprintf(cmd, sizeof cmd,
             "'%s' --preset tiny --type q8_0 --seed 21 --layers 4 --dense-layers 1 --experts 16 --experts-used 4 "
             "--quiet --threads 1 -o '%s' > /dev/null 2>&1",
             gen, g_model);
    return system(cmd) == 0 ? 0 : -1;
}

static es_model *load(int policy) {
    es_load_params lp = {0};
    lp.numa = policy;
    es_model *m = NULL;
    char err[512];
    if (es_model_load(g_model, &lp, &m, err, sizeof err) != ES_OK) {
        CHECK(0, "load with policy %d: %s", policy, err);
        return NULL;
    }
    return m;
}

/* Records, for every routed-expert unit the forward pass runs, whether the
 * thread running it works for the node that owns the expert, and if not,
 * whether that thread's own queues were empty by then. */
typedef struct unit_rec {
    es_session *s;
    atomic_int local, stolen, early, bad_node;
} unit_rec;

static void on_unit(void *user, int layer, int expert, int phase, int node) {
    unit_rec *r = user;
    (void)phase;
    es_pool *p = r->s->pool;
    int owner = es_numa_expert_node(r->s->m->numa, layer, expert);
    if (owner < 0 || owner >= es_pool_nodes(p)) { atomic_fetch_add(&r->bad_node, 1); return; }
    if (es_pool_serving_node(p, owner) == node) {
        atomic_fetch_add(&r->local, 1);
        return;
    }
    atomic_fetch_add(&r->stolen, 1);
    if (!own_queues_empty(p, node)) atomic_fetch_add(&r->early, 1);
}

/* Set by check_replicas_read: sessions' pools keep every worker (no
 * adaptive parking), so that the other nodes' threads get work even on a
 * busy machine. */
static int g_fixed_pool;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Logits of the last of 12 tokens, then of 3 decoded ones ([4][V] in out
 * when decode, else [V]); rec (may be NULL) watches the expert units. */
static void logits_run(es_model *m, int threads, float *out, int decode, unit_rec *rec) {
    es_session *s = NULL;
    char err[256];
    int32_t tok[15];
    const size_t V = (size_t)es_model_n_vocab(m);
    for (int i = 0; i < 15; i++) tok[i] = (int32_t)((i * 37 + 5) % es_model_n_vocab(m));
    if (es_session_new(m, 64, &s, err, sizeof err) != ES_OK || es_session_set_threads(s, threads, err, sizeof err)) {
        CHECK(0, "session: %s", err);
        es_session_free(s);
        return;
    }
    if (g_fixed_pool) es_pool_set_adaptive(s->pool, 0);
    if (rec) {
        rec->s = s;
        s->unit_fn = on_unit;
        s->unit_user = rec;
    }
    int ok = es_session_eval(s, tok, 12, out, 0, err, sizeof err) == ES_OK;
    for (int i = 0; decode && ok && i < 3; i++)
        ok = es_session_eval(s, &tok[12 + i], 1, out + (size_t)(i + 1) * V, 0, err, sizeof err) == ES_OK;
    CHECK(ok, "eval: %s", err);
    es_session_free(s);
}

static void logits_of(es_model *m, int threads, float *out) { logits_run(m, threads, out, 0, NULL); }

/* Under EDGESEEK_FAKE_NUMA=2 and 3 (shard): the expert units start on the
 * threads of their expert's node, leave it only once that node's queue is
 * empty, and the logits (prefill and decode) equal the one-node run's. */
static void test_moe_nodes(const float *ref4, size_t nv) {
    float *got = malloc(4 * nv * sizeof(float));
    if (!got) return;
    for (int fake = 2; fake <= 3; fake++) {
        set_fake(fake);
        es_model *m = load(ES_NUMA_SHARD);
        set_fake(0);
        if (!m) continue;
        CHECK(es_numa_plan_nodes(m->numa) == fake, "fake %d: shard plans %d nodes", fake, es_numa_plan_nodes(m->numa));
        for (int threads = 1; threads <= 5; threads++) {
            unit_rec r = {0};
            logits_run(m, threads, got, 1, &r);
            int local = atomic_load(&r.local), stolen = atomic_load(&r.stolen);
            printf("# fake %d, %d threads: %d expert units on their node, %d taken by another\n", fake, threads, local,
                   stolen);
            CHECK(local + stolen > 0 && atomic_load(&r.bad_node) == 0, "fake %d, %d threads: units seen", fake, threads);
            CHECK(atomic_load(&r.early) == 0, "fake %d, %d threads: %d units left their node before its queue ran dry",
                  fake, threads, atomic_load(&r.early));
            if (threads == 1) CHECK(stolen == 0, "fake %d, 1 thread: the one thread serves every node", fake);
            CHECK(!memcmp(ref4, got, 4 * nv * sizeof(float)),
                  "fake %d, %d threads: logits equal the one-node run bit for bit", fake, threads);
        }
        es_model_free(m);
    }
    free(got);
}

/* The threads of nodes 1.. really read their node's copies: with those
 * copies zeroed the logits change, and with them restored they come back. */
static void check_replicas_read(es_model *m, int fake, const float *ref, float *got, size_t nv) {
    const es_gguf_ctx *g = m->gguf;
    size_t zeroed = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (uint64_t i = 0; i < g->n_tensors; i++) {
            const es_gguf_tensor *t = &g->tensors[i];
            for (int k = 1; k < fake && t->nbytes; k++) {
                uint8_t *c = (uint8_t *)es_numa_local(m->numa, t->data, k);
                if (c == t->data) continue;
                if (pass == 0) { memset(c, 0, t->nbytes); zeroed += t->nbytes; }
                else memcpy(c, t->data, t->nbytes);
            }
        }
        g_fixed_pool = 1;
        logits_of(m, 2 * fake, got);
        /* The calling thread (node 0) can take every chunk before the other
         * nodes' workers are scheduled: on a busy machine that happened 64
         * times in a row (CI, and once here under a load average of 12 on 2
         * CPUs).  So the pools keep every worker, and the evaluation is
         * repeated for up to 60 s of wall time before the copies are called
         * unread. */
        double t0 = now_s();
        int tries = 1;
        while (pass == 0 && !memcmp(ref, got, nv * sizeof(float)) && now_s() - t0 < 60.0) {
            usleep(1000);
            logits_of(m, 2 * fake, got);
            tries++;
        }
        g_fixed_pool = 0;
        if (pass == 0) printf("# fake %d: the zeroed copies were read after %d evaluation(s)\n", fake, tries);
        if (pass == 0)
            CHECK(zeroed > 0 && memcmp(ref, got, nv * sizeof(float)),
                  "fake %d: zeroing the copies of nodes 1.. (%zu bytes) changes the logits: they are read", fake, zeroed);
        else
            CHECK(!memcmp(ref, got, nv * sizeof(float)), "fake %d: restored copies give the logits back", fake);
    }
}

static void test_placement(void) {
    if (make_model() != 0) {
        SKIP("gen_model not built or failed: placement tests skipped");
        return;
    }
    float *ref = NULL, *got = NULL;
    size_t nv = 0;

    /* one node (the real topology here, or whatever this machine is) */
    set_fake(0);
    const int real_nodes = es_numa_topo_get()->n_nodes;
    for (int pol = ES_NUMA_DEFAULT; pol <= ES_NUMA_REPLICATE; pol++) {
        es_model *m = load(pol);
        if (!m) continue;
        if (!ref) {
            nv = (size_t)es_model_n_vocab(m);
            ref = malloc(nv * sizeof(float));
            got = malloc(nv * sizeof(float));
            logits_of(m, 1, ref);
        }
        if (real_nodes == 1) {
            CHECK(es_numa_plan_nodes(m->numa) == 1, "one node: policy %d plans one node", pol);
            CHECK(strstr(es_model_numa_summary(m), "nothing placed") != NULL, "one node: policy %d is a no-op (%s)",
                  pol, es_model_numa_summary(m));
            const es_layer *ly = &m->layers[1];
            CHECK(es_numa_expert_node(m->numa, 1, 5) == 0, "one node: every expert on node 0");
            CHECK(es_numa_local(m->numa, ly->wkv_a.data, 1) == ly->wkv_a.data, "one node: no replicas");
        }
        logits_of(m, 2, got);
        CHECK(!memcmp(ref, got, nv * sizeof(float)), "one node: policy %d gives the same logits", pol);
        es_model_free(m);
    }

    for (int fake = 2; fake <= 4; fake += 2) {
        set_fake(fake);
        for (int pol = ES_NUMA_OFF; pol <= ES_NUMA_REPLICATE; pol++) {
            es_model *m = load(pol);
            if (!m) continue;
            const es_numa_plan *plan = m->numa;
            const es_hparams *hp = &m->hp;
            printf("# fake %d: %s\n", fake, es_model_numa_summary(m));
            if (pol == ES_NUMA_OFF) {
                CHECK(es_numa_plan_nodes(plan) == 1 && !es_numa_plan_topo(plan), "fake %d: off is one node", fake);
                CHECK(es_numa_expert_node(plan, 2, 3) == 0, "fake %d: off owns nothing", fake);
            } else {
                CHECK(es_numa_plan_nodes(plan) == fake, "fake %d: plan over %d nodes", fake,
                      es_numa_plan_nodes(plan));
                /* round-robin owners, each node the same number per layer */
                int bad = 0;
                for (int il = 0; il < hp->n_layers; il++) {
                    int count[ES_MAX_NODES] = {0};
                    for (int e = 0; e < hp->n_experts; e++) {
                        int nd = es_numa_expert_node(plan, il, e);
                        bad |= nd != (e + il) % fake;
                        if (nd >= 0 && nd < fake) count[nd]++;
                    }
                    for (int k = 0; k < fake; k++) bad |= count[k] != hp->n_experts / fake;
                }
                CHECK(!bad, "fake %d: experts dealt round-robin, evenly", fake);
                const es_numa_stats *st = es_numa_plan_stats(plan);
                uint64_t per = st->expert_bytes[0], total = 0;
                int even = 1;
                for (int k = 0; k < fake; k++) {
                    even &= st->expert_bytes[k] == per;
                    total += st->expert_bytes[k];
                }
                uint64_t want = 0;
                for (int il = 0; il < hp->n_layers; il++) {
                    const es_layer *ly = &m->layers[il];
                    if (ly->is_moe)
                        want += (uint64_t)hp->n_experts *
                                (ly->gate_exps.mat_bytes + ly->up_exps.mat_bytes + ly->down_exps.mat_bytes);
                }
                CHECK(even && total == want, "fake %d: expert bytes split evenly, each placed once (%llu of %llu)",
                      fake, (unsigned long long)total, (unsigned long long)want);
                if (st->sampled_pages == 0)
                    SKIP("fake %d: the page-node query (move_pages) answers nothing here (emulator?)", fake);
                else
                    CHECK(st->pages_on_target == st->sampled_pages, "fake %d: %llu/%llu sampled expert pages on their node",
                          fake, (unsigned long long)st->pages_on_target, (unsigned long long)st->sampled_pages);
                const es_layer *ly = &m->layers[1];
                if (pol == ES_NUMA_REPLICATE && st->n_replicas) {
                    CHECK(st->n_replicas == fake - 1, "fake %d: %d replicas", fake, st->n_replicas);
                    int ok = 1;
                    for (int k = 1; k < fake; k++) {
                        const uint8_t *c = es_numa_local(plan, ly->wkv_a.data, k);
                        ok &= c != ly->wkv_a.data && !memcmp(c, ly->wkv_a.data, ly->wkv_a.mat_bytes);
                        /* a pointer inside a tensor maps inside the copy */
                        const uint8_t *mid = ly->wo.data + ly->wo.row_bytes * 3;
                        ok &= !memcmp(es_numa_local(plan, mid, k), mid, ly->wo.row_bytes);
                        ok &= es_numa_local(plan, mid, k) != mid;
                    }
                    CHECK(ok, "fake %d: replicas equal the originals", fake);
                    CHECK(es_numa_local(plan, ly->wkv_a.data, 0) == ly->wkv_a.data, "node 0 reads the mapping");
                    CHECK(es_numa_local(plan, ly->gate_exps.data, 1) == ly->gate_exps.data, "experts not replicated");
                    if (ref) check_replicas_read(m, fake, ref, got, nv);
                } else {
                    CHECK(es_numa_local(plan, ly->wkv_a.data, 1) == ly->wkv_a.data, "shard: no replicas");
                    CHECK(st->interleaved_bytes > 0, "shard: the other weights interleaved");
                }
            }
            if (ref) {
                logits_of(m, 3, got);
                CHECK(!memcmp(ref, got, nv * sizeof(float)), "fake %d: policy %d gives the same logits", fake, pol);
            }
            es_model_free(m);
        }
    }
    if (ref) {
        float *ref4 = malloc(4 * nv * sizeof(float));
        es_model *m = ref4 ? load(ES_NUMA_OFF) : NULL;
        if (m) {
            logits_run(m, 1, ref4, 1, NULL);
            es_model_free(m);
            test_moe_nodes(ref4, nv);
        }
        free(ref4);
    }
    set_fake(0);
    es_load_params lp = {0};
    lp.numa = 99;
    es_model *m = NULL;
    char err[256] = "";
    CHECK(es_model_load(g_model, &lp, &m, err, sizeof err) == ES_ERR_ARG && !m && strstr(err, "NUMA"),
          "an unknown policy is a bad argument (%s)", err);
    free(ref);
    free(got);
    remove(g_model);
    char *slash = strrchr(g_model, '/');
    if (slash) { *slash = 0; rmdir(g_model); }
}

int main(void) {
    test_topology();
    test_pool_nodes(0);
    test_pool_nodes(2);
    test_pool_nodes(4);
    test_steal();
    test_placement();
    return test_summary();
}
