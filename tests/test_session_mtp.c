/* test_session_mtp.c — saved sessions with the MTP block on
 * (runtime/session_file.c's MTP part, runtime/mtp.c's rows and hidden
 * window), on the default model with its trained MTP block
 * (models/edgeseek-default-mtp.gguf):
 *
 * 1. Save, load into a fresh session, continue with speculative decoding
 *    (sampling, so the drafts' distributions decide tokens too): the tokens,
 *    the draft and verification counts and the first draft's logits equal
 *    the uninterrupted session's bit for bit, for every cache type; after
 *    the load the first draft runs the main model over no token of the
 *    file (routes counted with the route hook), where a file saved without
 *    MTP makes it run over all of them.
 * 2. A file with an MTP part loads into a session without MTP (the part is
 *    skipped; decoding equals the plain session's), and a damaged MTP part
 *    (counts that do not fit the tokens) is refused.
 * 3. A version-1 file (tests/data/session/, written before the MTP part
 *    existed) still loads, with and without MTP, and continues as a fresh
 *    prefill of its tokens does.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgeseek.h"
#include "model.h"
#include "testutil.h"

static char dir[] = "/tmp/es_smtp_XXXXXX";
static char path_a[64], path_b[64];

enum { N_GEN = 40, CTX = 256 };
static int N_PROMPT; /* a chat prompt with a long system text: more rows than the hidden window holds */

/* main-model routes seen (one per MoE layer below the MTP block, per token) */
typedef struct counter {
    int n_layers;
    long main;
} counter;

static void count_routes(void *user, int layer, int pos, const int32_t *ex, int k) {
    counter *c = user;
    (void)pos, (void)ex, (void)k;
    if (layer < c->n_layers) c->main++;
}

static es_session *session(es_model *m, int kv, int mtp) {
    char err[512];
    es_session *s = NULL;
    const es_session_params p = {.n_ctx = CTX, .kv_type = kv};
    if (es_session_new_ext(m, &p, &s, err, sizeof err) != ES_OK) {
        CHECK(0, "session: %s", err);
        return NULL;
    }
    if (mtp && es_session_set_mtp(s, 1, err, sizeof err) != ES_OK) {
        CHECK(0, "set_mtp: %s", err);
        es_session_free(s);
        return NULL;
    }
    return s;
}

/* What a continuation gives: the tokens, the generator's counts, the first
 * draft's logits. */
typedef struct run {
    int32_t tok[N_GEN];
    es_spec_stats st;
    float *draft; /* [V] */
    long main_routes_to_first_draft;
} run;

/* As `run --session` continues: the prompt's last token runs again for its
 * logits, then a draft (its logits kept), then N_GEN tokens of speculative
 * sampling. */
static int continue_spec(es_session *s, const int32_t *prompt, counter *c, run *out, int V) {
    char err[512];
    float *lg = malloc(sizeof(float) * (size_t)V);
    es_sampler_params sp = es_sampler_defaults();
    sp.temperature = 0.5f;
    sp.seed = 11;
    es_sampler *smp = es_sampler_new(&sp);
    es_spec *g = NULL;
    int ok = lg && smp && es_session_truncate(s, N_PROMPT - 1, err, sizeof err) == ES_OK;
    c->main = 0;
    ok = ok && es_session_eval(s, prompt + N_PROMPT - 1, 1, lg, 0, err, sizeof err) == ES_OK;
    ok = ok && es_session_mtp_draft(s, 7, out->draft, err, sizeof err) == ES_OK;
    out->main_routes_to_first_draft = c->main;
    ok = ok && es_spec_new(s, smp, 1, lg, &g, err, sizeof err) == ES_OK;
    for (int i = 0; ok && i < N_GEN; i++) ok = es_spec_next(g, &out->tok[i], err, sizeof err) == ES_OK;
    if (ok) es_spec_get_stats(g, &out->st);
    CHECK(ok, "continuing: %s", err);
    es_spec_free(g);
    es_sampler_free(smp);
    free(lg);
    return ok ? 0 : -1;
}

static int same_run(const run *a, const run *b, int V) {
    return !memcmp(a->tok, b->tok, sizeof a->tok) && a->st.drafted == b->st.drafted &&
           a->st.accepted == b->st.accepted && a->st.forwards == b->st.forwards &&
           !memcmp(a->draft, b->draft, sizeof(float) * (size_t)V);
}

/* ---- 1. save, load, continue with MTP ----------------------------------------- */

static void roundtrip(es_model *m, const int32_t *prompt) {
    static const int kvs[] = {ES_KV_F32, ES_KV_F16, ES_KV_Q8_0};
    const int V = es_model_n_vocab(m);
    const int moe_layers = m->hp.n_layers - m->hp.n_dense;
    counter c = {m->hp.n_layers, 0};
    run ra = {0}, rb = {0}, rc = {0};
    ra.draft = malloc(sizeof(float) * (size_t)V);
    rb.draft = malloc(sizeof(float) * (size_t)V);
    rc.draft = malloc(sizeof(float) * (size_t)V);
    for (size_t k = 0; k < sizeof kvs / sizeof kvs[0] && ra.draft && rb.draft && rc.draft; k++) {
        char err[512];
        const char *kv = es_kv_type_name(kvs[k]);
        es_session *a = session(m, kvs[k], 1), *b = session(m, kvs[k], 1), *p = session(m, kvs[k], 0);
        if (!a || !b || !p) break;
        es_session_set_route_hook(a, count_routes, &c);
        es_session_set_route_hook(b, count_routes, &c);
        CHECK(es_session_eval(a, prompt, N_PROMPT, NULL, 0, err, sizeof err) == ES_OK, "prefill: %s", err);
        CHECK(es_session_save(a, path_a, err, sizeof err) == ES_OK, "save: %s", err);
        CHECK(continue_spec(a, prompt, &c, &ra, V) == 0, "the uninterrupted run");
        CHECK(es_session_load(b, path_a, err, sizeof err) == ES_OK && es_session_pos(b) == N_PROMPT,
              "load (%s): %s", kv, err);
        CHECK(continue_spec(b, prompt, &c, &rb, V) == 0 && same_run(&ra, &rb, V),
              "cache %s, --mtp: save, load, continue equals the uninterrupted run bit for bit "
              "(drafted %lld/%lld, kept %lld/%lld)", kv, (long long)ra.st.drafted, (long long)rb.st.drafted,
              (long long)ra.st.accepted, (long long)rb.st.accepted);
        CHECK(rb.main_routes_to_first_draft == moe_layers,
              "cache %s: after the load the first draft ran the main model over %ld routes (want %d: the "
              "last prompt token's, run again for its logits, and nothing of the file)",
              kv, rb.main_routes_to_first_draft, moe_layers);
        CHECK(ra.st.drafted > 0 && ra.st.accepted > 0, "cache %s: drafts were made (%lld) and kept (%lld)", kv,
              (long long)ra.st.drafted, (long long)ra.st.accepted);
        /* a file saved without MTP: the same tokens, but the first draft
         * runs the main model over the file's tokens again */
        CHECK(es_session_eval(p, prompt, N_PROMPT, NULL, 0, err, sizeof err) == ES_OK, "prefill: %s", err);
        CHECK(es_session_save(p, path_b, err, sizeof err) == ES_OK, "save: %s", err);
        CHECK(es_session_load(b, path_b, err, sizeof err) == ES_OK, "load a file without MTP rows: %s", err);
        CHECK(continue_spec(b, prompt, &c, &rc, V) == 0 && !memcmp(rc.tok, ra.tok, sizeof ra.tok) &&
                  rc.main_routes_to_first_draft >= (long)N_PROMPT * moe_layers,
              "cache %s: a file without MTP rows loads; the first draft reruns the main model (%ld routes), "
              "the tokens are the same", kv, rc.main_routes_to_first_draft);
        printf("cache %s: %d prompt tokens, %lld drafts, %lld kept; main-model routes to the first draft: %ld "
               "after a load, %ld from a file without MTP rows\n", kv, N_PROMPT, (long long)ra.st.drafted,
               (long long)ra.st.accepted, rb.main_routes_to_first_draft, rc.main_routes_to_first_draft);
        es_session_free(a), es_session_free(b), es_session_free(p);
    }
    free(ra.draft), free(rb.draft), free(rc.draft);
}

/* ---- 2. the MTP part into a session without MTP; a damaged part ---------------- */

static void without_mtp(es_model *m, const int32_t *prompt) {
    char err[512];
    const int V = es_model_n_vocab(m);
    enum { N = 8 };
    int32_t cont[N];
    for (int i = 0; i < N; i++) cont[i] = (int32_t)(3 + i * 5);
    float *la = malloc(sizeof(float) * (size_t)V * N), *lb = malloc(sizeof(float) * (size_t)V * N);
    es_session *a = session(m, ES_KV_F16, 1), *plain = session(m, ES_KV_F16, 0), *p2 = session(m, ES_KV_F16, 0);
    if (!a || !plain || !p2 || !la || !lb) goto out;
    CHECK(es_session_eval(a, prompt, N_PROMPT, NULL, 0, err, sizeof err) == ES_OK, "prefill: %s", err);
    CHECK(es_session_save(a, path_a, err, sizeof err) == ES_OK, "save: %s", err);
    CHECK(es_session_load(plain, path_a, err, sizeof err) == ES_OK, "an MTP file into a plain session: %s", err);
    CHECK(es_session_eval(p2, prompt, N_PROMPT, NULL, 0, err, sizeof err) == ES_OK, "prefill: %s", err);
    CHECK(test_decode_each(plain, cont, N, la, V) == 0 && test_decode_each(p2, cont, N, lb, V) == 0 &&
              !memcmp(la, lb, sizeof(float) * (size_t)V * N),
          "a file with MTP rows, loaded without MTP, continues as the plain session");
    /* the MTP part's counts (header bytes 44: rows, 56: h0, 60: hn) */
    size_t len;
    uint8_t *file = test_read_file(path_a, &len);
    uint32_t rows, hn;
    if (file) {
        memcpy(&rows, file + 44, 4);
        memcpy(&hn, file + 60, 4);
        CHECK(file[8] == 2 && rows + hn > 0, "the file is version 2 with an MTP part (%u rows, %u hidden)", rows, hn);
        const uint32_t bad[] = {N_PROMPT, 1000000};
        for (size_t k = 0; k < 2; k++) {
            uint8_t *copy = malloc(len);
            memcpy(copy, file, len);
            memcpy(copy + (k ? 60 : 44), &bad[k], 4);
            CHECK(test_write_file(path_b, copy, len) == 0, "write");
            es_status st = es_session_load(a, path_b, err, sizeof err);
            CHECK(st == ES_ERR_FORMAT && strstr(err, "MTP") && es_session_pos(a) == N_PROMPT,
                  "a damaged MTP part is refused, the session kept: %d '%s'", st, err);
            free(copy);
        }
        free(file);
    }
out:
    free(la), free(lb);
    es_session_free(a), es_session_free(plain), es_session_free(p2);
}

/* ---- 3. version 1 ----------------------------------------------------------------- */

static void version1(es_model *m) {
    char err[512];
    const char *v1 = test_data_path("session/v1-default-mtp-f16.session");
    if (!test_need_file(v1)) return;
    const int V = es_model_n_vocab(m);
    enum { N = 6 };
    int32_t cont[N];
    for (int i = 0; i < N; i++) cont[i] = (int32_t)(9 + i * 7);
    float *la = malloc(sizeof(float) * (size_t)V * N), *lb = malloc(sizeof(float) * (size_t)V * N);
    float *dr = malloc(sizeof(float) * (size_t)V);
    for (int mtp = 0; mtp < 2 && la && lb && dr; mtp++) {
        es_session *s = session(m, ES_KV_F16, mtp), *f = session(m, ES_KV_F16, 0);
        if (!s || !f) break;
        const es_status st = es_session_load(s, v1, err, sizeof err);
        const int n = es_session_pos(s);
        CHECK(st == ES_OK && n == 37, "a version-1 file loads (MTP %s): %s, %d tokens", mtp ? "on" : "off", err, n);
        if (st == ES_OK && n > 0) {
            CHECK(es_session_eval(f, es_session_tokens(s), n, NULL, 0, err, sizeof err) == ES_OK, "prefill: %s", err);
            if (mtp) CHECK(es_session_mtp_draft(s, cont[0], dr, err, sizeof err) == ES_OK, "draft after a v1 file: %s", err);
            double worst = 0, scale = 0;
            if (test_decode_each(s, cont, N, la, V) == 0 && test_decode_each(f, cont, N, lb, V) == 0)
                for (size_t i = 0; i < (size_t)V * N; i++) {
                    worst = fmax(worst, fabs((double)la[i] - lb[i]));
                    scale = fmax(scale, fabs((double)lb[i]));
                }
            CHECK(scale > 0 && worst <= 1e-3 * scale,
                  "a version-1 file continues as a fresh prefill of its tokens (max |dlogit| %.3g of %.3g)", worst,
                  scale);
        }
        es_session_free(s), es_session_free(f);
    }
    free(la), free(lb), free(dr);
}

int main(void) {
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp");
        return test_summary();
    }
    snprintf(path_a, sizeof path_a, "%s/a.session", dir);
    snprintf(path_b, sizeof path_b, "%s/b.session", dir);
    const char *mp = "models/edgeseek-default-mtp.gguf";
    if (test_need_file(mp)) {
        char err[512];
        es_model *m = NULL;
        es_load_params lp = {0};
        if (es_model_load(mp, &lp, &m, err, sizeof err) != ES_OK) CHECK(0, "load %s: %s", mp, err);
        int32_t *prompt = NULL;
        size_t n = 0;
        char sys[1024] = "";
        for (int i = 0; i < 2; i++) strcat(sys, "You answer arithmetic questions, step by step. ");
        const es_chat_msg msgs[] = {{"system", sys}, {"user", "What is 487 + 356?"}};
        if (m && es_chat_tokenize(m, msgs, 2, 1, &prompt, &n, err, sizeof err) != ES_OK) CHECK(0, "chat: %s", err);
        N_PROMPT = (int)n;
        CHECK(N_PROMPT > 80 && N_PROMPT + N_GEN + 2 < CTX, "the prompt has %d tokens", N_PROMPT);
        if (m && prompt) {
            roundtrip(m, prompt);
            without_mtp(m, prompt);
            version1(m);
        }
        free(prompt);
        es_model_free(m);
    }
    unlink(path_a), unlink(path_b), rmdir(dir);
    return test_summary();
}
