/* test_batch.c — es_batch_eval: several sessions in one forward pass give
 * every session exactly the logits it gets alone.
 *
 * A scenario gives 8 sessions each a script of calls: a prompt cut into
 * chunks of varied size (some longer than one batch of 64 rows), then
 * single-token decode steps.  The scenario runs through es_batch_eval in
 * steps whose composition changes (1..8 sessions, in shuffled order, some
 * prefilling while others decode), with sessions of different context sizes
 * and thread counts; each session's script then runs alone through
 * es_session_eval, and every call's last-position logits must agree bit for
 * bit, as must the final positions.  On the golden models (F32), the default
 * model (F16) and generated quantised models (Q8_0, Q4_0; Q4_K, Q5_K and the
 * Q4_K_M mix: 8-bit activations), on every SIMD path this CPU runs.
 *
 * Also the argument checks: bad counts, NULL pointers, a token outside the
 * vocabulary, sessions of two models or one session twice (ES_ERR_ARG), a
 * session past its context (ES_ERR_CONTEXT), and that nothing ran then. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgeseek.h"
#include "kernels.h"
#include "testutil.h"

#define N_SESS 8
#define MAX_CALLS 24

static uint64_t rng_state;
static uint32_t rnd(uint32_t n) { /* uniform in [0, n) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)((rng_state >> 11) % n);
}

/* One session's script: calls of len[c] tokens, tokens back to back. */
typedef struct script {
    int n_ctx, threads;
    int n_calls;
    int len[MAX_CALLS];
    int32_t *tok; /* all calls' tokens */
    int n_tok;
    float *got; /* [n_calls][V] logits through es_batch_eval */
} script;

/* Prompts and decodes that fit the model's training context ctx. */
static void make_scripts(script *sc, int n_vocab, int ctx, uint64_t seed) {
    rng_state = seed;
    for (int i = 0; i < N_SESS; i++) {
        script *s = &sc[i];
        memset(s, 0, sizeof *s);
        /* prompts: 1 token, short, around one batch, longer than one */
        static const int prompt_len[N_SESS] = {1, 5, 17, 64, 70, 3, 33, 9};
        int decode = 3 + (int)rnd(8);
        int p = prompt_len[i] < ctx - decode - 1 ? prompt_len[i] : ctx - decode - 1;
        int chunk = i % 3 == 0 ? p : 1 + (int)rnd(24);
        for (int done = 0; done < p && s->n_calls < MAX_CALLS / 2; s->n_calls++) {
            int c = p - done < chunk ? p - done : chunk;
            if (s->n_calls == MAX_CALLS / 2 - 1) c = p - done;
            s->len[s->n_calls] = c;
            done += c;
        }
        for (int d = 0; d < decode; d++) s->len[s->n_calls++] = 1;
        for (int c = 0; c < s->n_calls; c++) s->n_tok += s->len[c];
        s->tok = malloc(sizeof(int32_t) * (size_t)s->n_tok);
        for (int t = 0; t < s->n_tok; t++) s->tok[t] = (int32_t)rnd((uint32_t)n_vocab);
        s->n_ctx = s->n_tok + 1 + (int)rnd(40);
        if (s->n_ctx > ctx) s->n_ctx = ctx;
        s->threads = 1 + i % 2;
        s->got = calloc((size_t)s->n_calls * (size_t)n_vocab, sizeof(float));
    }
}

static void free_scripts(script *sc) {
    for (int i = 0; i < N_SESS; i++) {
        free(sc[i].tok);
        free(sc[i].got);
    }
}

/* Runs the scripts through es_batch_eval in steps of random composition;
 * 0 on success. */
static int run_batched(es_model *m, script *sc, const char *label) {
    const size_t V = (size_t)es_model_n_vocab(m);
    char err[512];
    es_session *ss[N_SESS] = {0};
    int call[N_SESS] = {0}, off[N_SESS] = {0}, rc = -1, steps = 0;
    for (int i = 0; i < N_SESS; i++) {
        if (es_session_new(m, sc[i].n_ctx, &ss[i], err, sizeof err) != ES_OK ||
            es_session_set_threads(ss[i], sc[i].threads, err, sizeof err) != ES_OK) {
            CHECK(0, "%s: session %d: %s", label, i, err);
            goto done;
        }
    }
    for (;;) {
        /* the sessions with calls left, in random order; a random number of them */
        int live[N_SESS], n_live = 0;
        for (int i = 0; i < N_SESS; i++)
            if (call[i] < sc[i].n_calls) live[n_live++] = i;
        if (!n_live) break;
        for (int i = n_live - 1; i > 0; i--) {
            int j = (int)rnd((uint32_t)i + 1), t = live[i];
            live[i] = live[j];
            live[j] = t;
        }
        int n = 1 + (int)rnd((uint32_t)n_live);
        es_session *bs[N_SESS];
        const int32_t *bt[N_SESS];
        int bn[N_SESS];
        float *bl[N_SESS];
        for (int b = 0; b < n; b++) {
            int i = live[b];
            bs[b] = ss[i];
            bt[b] = sc[i].tok + off[i];
            bn[b] = sc[i].len[call[i]];
            bl[b] = sc[i].got + (size_t)call[i] * V;
        }
        /* now and then a session that runs nothing this step */
        if (n < N_SESS && n_live > n && rnd(4) == 0) {
            int i = live[n];
            bs[n] = ss[i];
            bt[n] = NULL;
            bn[n] = 0;
            bl[n] = NULL;
            n++;
        }
        es_status st = es_batch_eval(bs, n, bt, bn, bl, err, sizeof err);
        if (st != ES_OK) {
            CHECK(0, "%s: step %d (%d sessions): %s", label, steps, n, err);
            goto done;
        }
        for (int b = 0; b < n; b++) {
            int i = live[b];
            if (!bn[b]) continue;
            off[i] += bn[b];
            call[i]++;
        }
        steps++;
    }
    for (int i = 0; i < N_SESS; i++)
        CHECK(es_session_pos(ss[i]) == sc[i].n_tok, "%s: session %d ends at %d, not %d", label, i,
              es_session_pos(ss[i]), sc[i].n_tok);
    rc = 0;
done:
    for (int i = 0; i < N_SESS; i++) es_session_free(ss[i]);
    return rc;
}

/* Each script alone, call by call, against what the batches gave. */
static void check_alone(es_model *m, const script *sc, const char *label) {
    const size_t V = (size_t)es_model_n_vocab(m);
    char err[512];
    float *lg = malloc(sizeof(float) * V);
    for (int i = 0; i < N_SESS; i++) {
        es_session *s = NULL;
        if (es_session_new(m, sc[i].n_ctx, &s, err, sizeof err) != ES_OK) {
            CHECK(0, "%s: alone %d: %s", label, i, err);
            continue;
        }
        int off = 0, bad = -1, at = 0;
        for (int c = 0; c < sc[i].n_calls; c++) {
            if (es_session_eval(s, sc[i].tok + off, sc[i].len[c], lg, 0, err, sizeof err) != ES_OK) {
                CHECK(0, "%s: alone %d call %d: %s", label, i, c, err);
                break;
            }
            off += sc[i].len[c];
            const float *g = sc[i].got + (size_t)c * V;
            for (size_t v = 0; v < V && bad < 0; v++)
                if (memcmp(&lg[v], &g[v], sizeof(float))) {
                    bad = c;
                    at = (int)v;
                }
            if (bad >= 0) break;
        }
        CHECK(bad < 0, "%s: session %d (prompt %d tokens in calls of %d..., n_ctx %d): call %d (%d tokens) "
              "differs from the session alone first at logit %d",
              label, i, sc[i].n_tok, sc[i].len[0], sc[i].n_ctx, bad, bad >= 0 ? sc[i].len[bad] : 0, at);
        es_session_free(s);
    }
    free(lg);
}

static void identity_on(const char *label, const char *path, const char *simd, uint64_t seed) {
    es_model *m = NULL;
    char err[512], lab[256];
    es_load_params lp = {0};
    lp.simd = simd;
    snprintf(lab, sizeof lab, "%s [%s]", label, simd);
    if (es_model_load(path, &lp, &m, err, sizeof err) != ES_OK) {
        CHECK(0, "%s: %s", lab, err);
        return;
    }
    script sc[N_SESS];
    make_scripts(sc, es_model_n_vocab(m), es_model_n_ctx_train(m), seed);
    if (run_batched(m, sc, lab) == 0) check_alone(m, sc, lab);
    free_scripts(sc);
    es_model_free(m);
}

static const char *const simd_paths[] = {"generic", "avx2", "avx512", "amx", "neon"};
static uint64_t seed_base = 1; /* each (model, path) its own compositions */

static void identity_all_paths(const char *label, const char *path) {
    for (size_t p = 0; p < sizeof simd_paths / sizeof simd_paths[0]; p++) {
        if (!es_simd_supported(simd_paths[p])) {
            SKIP("%s: SIMD path %s not available here", label, simd_paths[p]);
            continue;
        }
        identity_on(label, path, simd_paths[p], 0x51ed2700 + seed_base++);
    }
}

/* the third: rows of 256 for the K-quants, quantised here to each target */
static const char *const gen_args[] = {
    "--preset tiny --type q8_0 --seed 5", "--preset tiny --type q4_0 --seed 6",
    "--type f32 --dim 256 --layers 3 --dense-layers 1 --ffn 512 --expert-ffn 256 --heads 4 --q-lora 256 "
    "--kv-lora 256 --nope-dim 32 --rope-dim 32 --v-dim 64 --experts 8 --experts-used 2 --shared-experts 1 --seed 8"};

static void gen_case(int i, const char *path) {
    if (i < 2) {
        identity_all_paths(gen_args[i], path);
        return;
    }
    static const char *const targets[] = {"q4_k", "q5_k", "q4_k_m"};
    for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
        char out[600], err[512], label[64];
        snprintf(out, sizeof out, "%s.%s.gguf", path, targets[t]);
        es_quantize_params qp = {0};
        qp.n_threads = 1;
        if (es_quantize_file(path, out, targets[t], &qp, err, sizeof err) != ES_OK) {
            CHECK(0, "quantize to %s: %s", targets[t], err);
            continue;
        }
        snprintf(label, sizeof label, "generated %s", targets[t]);
        identity_all_paths(label, out);
        remove(out);
    }
}

/* ---- argument checks ------------------------------------------------------ */

static void test_args(const char *path, const char *path2) {
    es_model *m = NULL, *m2 = NULL;
    char err[512];
    if (es_model_load(path, NULL, &m, err, sizeof err) != ES_OK || es_model_load(path2, NULL, &m2, err, sizeof err) != ES_OK) {
        CHECK(0, "load: %s", err);
        es_model_free(m);
        return;
    }
    es_session *a = NULL, *b = NULL, *o = NULL;
    if (es_session_new(m, 16, &a, err, sizeof err) != ES_OK || es_session_new(m, 8, &b, err, sizeof err) != ES_OK ||
        es_session_new(m2, 16, &o, err, sizeof err) != ES_OK) {
        CHECK(0, "session: %s", err);
        goto done;
    }
    const int V = es_model_n_vocab(m);
    int32_t ta[4] = {1, 2, 3, 4}, tb[9] = {5, 6, 7, 8, 9, 10, 11, 12, 13}, bad[2] = {1, V};
    float *la = malloc(sizeof(float) * (size_t)V), *lb = malloc(sizeof(float) * (size_t)V);
    es_session *two[2] = {a, b};
    const int32_t *toks[2] = {ta, tb};
    float *lgs[2] = {la, lb};
    int n[2] = {4, 4};
    es_status st;

    CHECK(es_batch_eval(two, 0, toks, n, lgs, err, sizeof err) == ES_OK, "0 sessions: nothing to do");
    st = es_batch_eval(two, -1, toks, n, lgs, err, sizeof err);
    CHECK(st == ES_ERR_ARG && strstr(err, "negative"), "-1 sessions: %d %s", st, err);
    st = es_batch_eval(NULL, 2, toks, n, lgs, err, sizeof err);
    CHECK(st == ES_ERR_ARG && *err, "NULL sessions: %d", st);
    st = es_batch_eval(two, 2, toks, NULL, lgs, err, sizeof err);
    CHECK(st == ES_ERR_ARG && *err, "NULL counts: %d", st);
    st = es_batch_eval(two, 2, NULL, n, lgs, err, sizeof err);
    CHECK(st == ES_ERR_ARG && strstr(err, "session 0"), "NULL tokens: %d %s", st, err);
    es_session *withnull[2] = {a, NULL};
    st = es_batch_eval(withnull, 2, toks, n, lgs, err, sizeof err);
    CHECK(st == ES_ERR_ARG && strstr(err, "session 1"), "NULL session: %d %s", st, err);
    es_session *twice[2] = {a, a};
    st = es_batch_eval(twice, 2, toks, n, lgs, err, sizeof err);
    CHECK(st == ES_ERR_ARG && strstr(err, "distinct"), "a session twice: %d %s", st, err);
    es_session *mixed[2] = {a, o};
    st = es_batch_eval(mixed, 2, toks, n, lgs, err, sizeof err);
    CHECK(st == ES_ERR_ARG && strstr(err, "model"), "two models: %d %s", st, err);
    int neg[2] = {4, -1};
    st = es_batch_eval(two, 2, toks, neg, lgs, err, sizeof err);
    CHECK(st == ES_ERR_ARG && strstr(err, "negative"), "negative count: %d %s", st, err);
    const int32_t *badtok[2] = {ta, bad};
    int n2[2] = {4, 2};
    st = es_batch_eval(two, 2, badtok, n2, lgs, err, sizeof err);
    CHECK(st == ES_ERR_ARG && strstr(err, "vocabulary"), "token outside the vocabulary: %d %s", st, err);
    int over[2] = {4, 9}; /* b holds 8 */
    st = es_batch_eval(two, 2, toks, over, lgs, err, sizeof err);
    CHECK(st == ES_ERR_CONTEXT && strstr(err, "session 1"), "past the context: %d %s", st, err);
    CHECK(es_session_pos(a) == 0 && es_session_pos(b) == 0, "an error ran nothing: positions %d %d",
          es_session_pos(a), es_session_pos(b));

    /* a session with no tokens is left alone, its logits untouched */
    int some[2] = {4, 0};
    lb[0] = 12345.0f;
    st = es_batch_eval(two, 2, toks, some, lgs, err, sizeof err);
    CHECK(st == ES_OK && es_session_pos(a) == 4 && es_session_pos(b) == 0 && lb[0] == 12345.0f,
          "0 tokens for one session: %d, positions %d %d", st, es_session_pos(a), es_session_pos(b));
    /* NULL logits, for all or one */
    int one[2] = {1, 1};
    CHECK(es_batch_eval(two, 2, toks, one, NULL, err, sizeof err) == ES_OK, "NULL logits: %s", err);
    float *half[2] = {NULL, lb};
    CHECK(es_batch_eval(two, 2, toks, one, half, err, sizeof err) == ES_OK, "NULL logits[0]: %s", err);
    CHECK(es_session_pos(a) == 6 && es_session_pos(b) == 2, "positions %d %d", es_session_pos(a), es_session_pos(b));
    free(la);
    free(lb);
done:
    es_session_free(a);
    es_session_free(b);
    es_session_free(o);
    es_model_free(m);
    es_model_free(m2);
}

int main(void) {
    static const char *golden[] = {"v2lite-tiny", "v2lite-yarn", "v2-tiny", "v3-tiny", "v3-yarn", "v3-stress"};
    char rel[128];
    snprintf(rel, sizeof rel, "golden/%s/model.gguf", golden[0]);
    char p0[512], p1[512];
    snprintf(p0, sizeof p0, "%s", test_data_path(rel));
    snprintf(rel, sizeof rel, "golden/%s/model.gguf", golden[3]);
    snprintf(p1, sizeof p1, "%s", test_data_path(rel));
    if (test_need_file(p0) && test_need_file(p1)) test_args(p0, p1);

    for (size_t i = 0; i < sizeof golden / sizeof golden[0]; i++) {
        snprintf(rel, sizeof rel, "golden/%s/model.gguf", golden[i]);
        const char *path = test_data_path(rel);
        if (test_need_file(path)) identity_all_paths(golden[i], path);
    }
    const char *def = "models/edgeseek-default.gguf";
    if (test_need_file(def)) identity_all_paths("default model", def);
    test_each_gen_model(gen_args, (int)(sizeof gen_args / sizeof gen_args[0]), gen_case);
    return test_summary();
}
