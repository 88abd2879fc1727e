/* test_share.c — expert parallelism without MPI: R models each loaded with
 * one share of the routed experts (es_model_load_share), evaluated in R
 * threads whose reduce hook sums the MoE slots through shared memory (what
 * dist/'s MPI_Allreduce does between processes), must give logits
 * bit-identical to the whole model's for R = 1..4, on the golden cases, the
 * default model and a generated V3-shaped model (256 experts, 8 used,
 * groups), also under the pager (pread, a small budget) and fake NUMA
 * nodes, and with the owned-slots exchange (es_session_set_moe_exchange)
 * in place of the reduce; each share runs only its own experts; a share
 * without a reduce hook, or whose hook fails, is refused with a message;
 * bad shares are refused.  tests/mpi_test.sh does the same over real MPI ranks. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgeseek.h"
#include "model.h"
#include "testutil.h"

#define MAX_R 4

typedef struct group {
    int R;
    int gather; /* the owned-slots exchange (es_session_set_moe_exchange) instead of the reduce */
    pthread_barrier_t bar;
    float *buf[MAX_R];
    size_t cap;
} group;

typedef struct share_run {
    group *g;
    int r;
    const char *path;
    es_load_params lp;
    const int32_t *tok;
    int n;
    float *logits; /* [n][vocab] of this share */
    int n_vocab;
    es_status st;
    char err[512];
    int foreign_units; /* expert units run for an expert another share owns */
    int reduces;
} share_run;

static int reduce(void *user, int layer, float *slots, size_t n) {
    share_run *sr = user;
    group *g = sr->g;
    (void)layer;
    if (n > g->cap) return -1;
    memcpy(g->buf[sr->r], slots, n * sizeof(float));
    pthread_barrier_wait(&g->bar);
    for (size_t i = 0; i < n; i++) {
        float v = 0.0f;
        for (int r = 0; r < g->R; r++) v += g->buf[r][i];
        slots[i] = v;
    }
    pthread_barrier_wait(&g->bar); /* before anyone writes its buffer again */
    sr->reduces++;
    return 0;
}

/* The owned-slots exchange through shared memory (what dist/'s
 * MPI_Allgatherv does): each share publishes its own experts' rows, then
 * copies every other expert's rows from the share that owns it.  The rows
 * of other shares' experts hold stale values when the hook is called, so a
 * wrong layout shows in the logits. */
static int exchange(void *user, int layer, float *slots, int dim, int n_experts, const int32_t *start) {
    share_run *sr = user;
    group *g = sr->g;
    const size_t rows = (size_t)start[n_experts], D = (size_t)dim;
    if (rows * D > g->cap) return -1;
    for (int e = 0; e < n_experts; e++) {
        size_t at = (size_t)start[e] * D, bytes = sizeof(float) * D * (size_t)(start[e + 1] - start[e]);
        if (es_expert_owner(g->R, layer, e) == sr->r) memcpy(g->buf[sr->r] + at, slots + at, bytes);
    }
    pthread_barrier_wait(&g->bar);
    for (int e = 0; e < n_experts; e++) {
        size_t at = (size_t)start[e] * D, bytes = sizeof(float) * D * (size_t)(start[e + 1] - start[e]);
        int o = es_expert_owner(g->R, layer, e);
        if (o != sr->r) memcpy(slots + at, g->buf[o] + at, bytes);
    }
    pthread_barrier_wait(&g->bar);
    sr->reduces++;
    return 0;
}

static void on_unit(void *user, int layer, int expert, int phase, int node) {
    share_run *sr = user;
    (void)phase;
    (void)node;
    if (es_expert_owner(sr->g->R, layer, expert) != sr->r) __atomic_fetch_add(&sr->foreign_units, 1, __ATOMIC_RELAXED);
}

/* Evaluates the tokens of sr in two steps, a prefill batch and then token
 * by token, into sr->logits; with a group, through share sr->r of it, else
 * the whole model (es_model_load): the reference. */
static void *share_main(void *arg) {
    share_run *sr = arg;
    es_model *m = NULL;
    es_session *s = NULL;
    if (sr->g)
        sr->st = es_model_load_share(sr->path, &sr->lp, sr->r, sr->g->R, &m, sr->err, sizeof sr->err);
    else
        sr->st = es_model_load(sr->path, &sr->lp, &m, sr->err, sizeof sr->err);
    if (sr->st == ES_OK) sr->st = es_session_new(m, sr->n, &s, sr->err, sizeof sr->err);
    if (sr->st == ES_OK) sr->st = es_session_set_threads(s, 1, sr->err, sizeof sr->err);
    if (sr->st == ES_OK) {
        sr->n_vocab = es_model_n_vocab(m);
        sr->logits = malloc(sizeof(float) * (size_t)sr->n * (size_t)sr->n_vocab);
        if (sr->g) {
            if (sr->g->gather) es_session_set_moe_exchange(s, exchange, sr);
            else es_session_set_moe_reduce(s, reduce, sr);
            s->unit_fn = on_unit;
            s->unit_user = sr;
        }
        int a = sr->n > 2 ? sr->n - 2 : sr->n;
        sr->st = es_session_eval(s, sr->tok, a, sr->logits, 1, sr->err, sizeof sr->err);
        for (int i = a; i < sr->n && sr->st == ES_OK; i++)
            sr->st = es_session_eval(s, sr->tok + i, 1, sr->logits + (size_t)i * sr->n_vocab, 0, sr->err,
                                     sizeof sr->err);
    }
    /* a share that failed must still meet the others in the barrier: the
     * test cases are chosen so that none fails */
    es_session_free(s);
    es_model_free(m);
    return NULL;
}

/* Logits of tok[n] over R shares equal ref[n][vocab] bit for bit. */
static void check_shares(const char *label, const char *path, const es_load_params *lp, const int32_t *tok, int n,
                         const float *ref, int n_vocab, int R, int gather) {
    group g = {.R = R, .gather = gather, .cap = (size_t)ES_BATCH * 16 * 8192};
    pthread_barrier_init(&g.bar, NULL, (unsigned)R);
    share_run sr[MAX_R];
    pthread_t th[MAX_R];
    memset(sr, 0, sizeof sr);
    for (int r = 0; r < R; r++) {
        g.buf[r] = malloc(g.cap * sizeof(float));
        sr[r] = (share_run){.g = &g, .r = r, .path = path, .lp = lp ? *lp : (es_load_params){0}, .tok = tok, .n = n};
        pthread_create(&th[r], NULL, share_main, &sr[r]);
    }
    for (int r = 0; r < R; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < R; r++) {
        CHECK(sr[r].st == ES_OK, "%s, share %d of %d%s: %s", label, r, R, gather ? " (gather)" : "", sr[r].err);
        CHECK(sr[r].foreign_units == 0, "%s, share %d of %d ran %d units of other shares' experts", label, r, R,
              sr[r].foreign_units);
        if (sr[r].st == ES_OK && sr[r].n_vocab == n_vocab)
            CHECK(memcmp(sr[r].logits, ref, sizeof(float) * (size_t)n * (size_t)n_vocab) == 0,
                  "%s, share %d of %d%s: logits differ from the whole model's", label, r, R,
                  gather ? " (owned slots gathered)" : "");
        if (R > 1) CHECK(sr[r].reduces > 0, "%s, share %d of %d: no reduce", label, r, R);
        free(sr[r].logits);
        free(g.buf[r]);
    }
    pthread_barrier_destroy(&g.bar);
}

static const int32_t toks[] = {1, 17, 300, 42, 5, 999, 64, 3, 250, 11, 77, 512};
#define N_TOK ((int)(sizeof toks / sizeof toks[0]))

static void check_model(const char *label, const char *path, int paging) {
    int n_vocab;
    int32_t tok[N_TOK];
    es_model *probe = NULL;
    char err[512];
    if (es_model_load(path, NULL, &probe, err, sizeof err) != ES_OK) {
        CHECK(0, "%s: %s", label, err);
        return;
    }
    int V = es_model_n_vocab(probe);
    es_model_free(probe);
    for (int i = 0; i < N_TOK; i++) tok[i] = toks[i] % V;
    share_run whole = {.path = path, .tok = tok, .n = N_TOK};
    share_main(&whole);
    CHECK(whole.st == ES_OK, "%s: whole-model logits: %s", label, whole.err);
    float *ref = whole.logits;
    n_vocab = whole.n_vocab;
    if (whole.st != ES_OK) {
        free(ref);
        return;
    }
    char lab[256];
    for (int R = 1; R <= MAX_R; R++) {
        snprintf(lab, sizeof lab, "%s", label);
        check_shares(lab, path, NULL, tok, N_TOK, ref, n_vocab, R, 0);
        check_shares(lab, path, NULL, tok, N_TOK, ref, n_vocab, R, 1);
        if (!paging) continue;
        /* each share pages its own experts under a budget too small for them */
        es_load_params lp = {.experts = ES_EXPERTS_PREAD, .mem_budget = 1 << 20, .io_threads = 1};
        snprintf(lab, sizeof lab, "%s, pread under 1 MiB", label);
        check_shares(lab, path, &lp, tok, N_TOK, ref, n_vocab, R, 0);
        check_shares(lab, path, &lp, tok, N_TOK, ref, n_vocab, R, 1);
        es_load_params ln = {.fake_numa = 2};
        snprintf(lab, sizeof lab, "%s, 2 fake NUMA nodes", label);
        check_shares(lab, path, &ln, tok, N_TOK, ref, n_vocab, R, 0);
    }
    free(ref);
}

static void gen_case(int i, const char *path) {
    (void)i;
    check_model("generated V3-shaped model", path, 1);
}

static int fail_reduce(void *user, int layer, float *slots, size_t n) {
    (void)user, (void)slots, (void)n;
    return layer >= 0 ? -1 : 0;
}

static void check_refusals(const char *path) {
    char err[512] = "";
    es_model *m = NULL;
    CHECK(es_model_load_share(path, NULL, 2, 2, &m, err, sizeof err) == ES_ERR_ARG && !m && strstr(err, "share"),
          "share 2 of 2 refused: %s", err);
    CHECK(es_model_load_share(path, NULL, 0, 0, &m, err, sizeof err) == ES_ERR_ARG && !m, "0 shares refused");
    es_status st = es_model_load_share(path, NULL, 1, 2, &m, err, sizeof err);
    CHECK(st == ES_OK && es_model_share(m) == 1 && es_model_n_shares(m) == 2, "share 1 of 2 loads: %s", err);
    if (st != ES_OK) return;
    es_session *s = NULL;
    st = es_session_new(m, 8, &s, err, sizeof err);
    CHECK(st == ES_OK, "session: %s", err);
    if (st == ES_OK) {
        int32_t t[2] = {1, 2};
        err[0] = 0;
        CHECK(es_session_eval(s, t, 2, NULL, 0, err, sizeof err) == ES_ERR_ARG && strstr(err, "reduce hook"),
              "a share without a reduce hook is refused: %s", err);
        es_session_set_moe_reduce(s, fail_reduce, NULL);
        err[0] = 0;
        CHECK(es_session_eval(s, t, 2, NULL, 0, err, sizeof err) == ES_ERR_IO && strstr(err, "reduce of layer"),
              "a failed reduce stops the evaluation: %s", err);
        CHECK(es_session_pos(s) == 0, "a failed evaluation keeps the position");
        es_session_free(s);
    }
    es_model_free(m);
    CHECK(es_expert_owner(1, 5, 7) == 0 && es_expert_owner(3, 1, 4) == 2 && es_expert_owner(4, 2, 3) == 1,
          "experts dealt round-robin, offset by the layer");
}

int main(void) {
    const char *def = test_data_path("../../models/edgeseek-default.gguf");
    if (test_need_file(def)) {
        check_model("default model", def, 1);
        check_refusals(def);
    }
    static const char *golden[] = {"v2lite-tiny", "v2-tiny", "v3-tiny", "v3-stress"};
    for (size_t i = 0; i < sizeof golden / sizeof golden[0]; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "golden/%s/model.gguf", golden[i]);
        const char *p = test_data_path(rel);
        if (test_need_file(p)) check_model(golden[i], p, 0);
    }
    static const char *gen[] = {"--preset v3 --layers 4 --dense-layers 1 --dim 128 --ffn 256 --expert-ffn 32 "
                                "--experts 256 --experts-used 8 --groups 8 --groups-used 4 --heads 2 --q-lora 64 "
                                "--kv-lora 32 --nope-dim 32 --rope-dim 16 --v-dim 32 --ctx 256 --type q8_0 --seed 5"};
    test_each_gen_model(gen, 1, gen_case);
    return test_summary();
}
