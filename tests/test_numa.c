/* test_numa.c — the NUMA layer and the node-aware thread pool, on this
 * machine's real topology and under EDGESEEK_FAKE_NUMA=2 and 4:
 *   - topology: every node has CPUs, fake splits are even, a bad value is
 *     ignored;
 *   - pool: threads spread over nodes, workers pinned to their node's CPUs
 *     where the OS allows (and then running there), plain loops and
 *     node-aware loops run every item exactly once, node-aware items only
 *     on threads of their node, whatever the thread count;
 *   - placement on a generated MoE model: experts dealt round-robin and
 *     evenly, the sampled pages resident on their node, replicas equal to
 *     the originals, every policy a no-op on one node, and the same logits
 *     under every policy. */
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgeseek.h"
#include "model.h"
#include "numa.h"
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
    set_fake(0);
    es_numa_detect(&t);
    check_topo(&t, "real");
    CHECK(!t.fake, "no fake without the variable");
    int real_cpus = t.n_cpus, real_nodes = t.n_nodes;
    printf("# topology: %d node(s), %d usable CPUs, source %s\n", t.n_nodes, t.n_cpus, t.source);
    for (int n = 2; n <= 4; n += 2) {
        set_fake(n);
        es_numa_detect(&t);
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
    set_fake(0);
    setenv("EDGESEEK_FAKE_NUMA", "lots", 1);
    es_numa_detect(&t);
    CHECK(!t.fake && t.n_nodes == real_nodes, "a bad EDGESEEK_FAKE_NUMA is ignored");
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
    atomic_int wrong_node, wrong_cpu, span, misaligned;
} run_ctx;

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
        if (es_pool_serving_node(c->p, k0) != me) atomic_fetch_add(&c->wrong_node, 1);
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
    set_fake(fake);
    es_numa_detect(&t);
    set_fake(0);
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
            for (int mode = 0; mode < 2; mode++) {
                run_ctx c = {p, &t, hits, mode ? starts : NULL, N, n, 1 + n / 11, 0, 0, 0, 0};
                const int reps = 5;
                for (int r = 0; r < reps; r++) {
                    if (mode) es_pool_run_nodes(p, run_task, &c, starts, 1 + n / 13);
                    else es_pool_run(p, run_task, &c, n, c.chunk);
                }
                int ok = 1;
                for (int64_t i = 0; i < n; i++) {
                    ok &= atomic_load(&hits[i]) == reps;
                    atomic_store(&hits[i], 0);
                }
                CHECK(ok, "fake %d, %d threads, n=%lld, %s loop: every item exactly once per run", fake, T,
                      (long long)n, mode ? "node-aware" : "plain");
                if (mode) {
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

static void logits_of(es_model *m, int threads, float *out) {
    es_session *s = NULL;
    char err[256];
    int32_t tok[12];
    for (int i = 0; i < 12; i++) tok[i] = (int32_t)((i * 37 + 5) % es_model_n_vocab(m));
    if (es_session_new(m, 64, &s, err, sizeof err) != ES_OK || es_session_set_threads(s, threads, err, sizeof err) ||
        es_session_eval(s, tok, 12, out, 0, err, sizeof err) != ES_OK) {
        CHECK(0, "eval: %s", err);
    }
    es_session_free(s);
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
    test_placement();
    return test_summary();
}
