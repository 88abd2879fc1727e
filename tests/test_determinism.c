/* test_determinism.c — the same logits, bit for bit, for any thread count.
 *
 * Through the public API only: generated MoE models (several weight types,
 * both MLA layouts) are run with 1, 2, 3 and 4 threads — a prefill longer
 * than one batch with the logits of every position, then token-by-token
 * decode — and every logit must equal the single-thread run exactly.  Also
 * under EDGESEEK_FAKE_NUMA=2 and 3 with 2..4 threads (threads spread over
 * the nodes, plain loops in per-node queues, expert units started on their
 * expert's node) and after es_session_truncate (a rewound session
 * recomputes the same values). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgeseek.h"
#include "testutil.h"

#define N_PROMPT 70 /* more than one prefill batch */
#define N_DECODE 6

typedef struct run_out {
    float *prefill; /* [N_PROMPT][V] */
    float *decode;  /* [N_DECODE][V] */
} run_out;

/* Runs the fixed prompt and decode; 0 on success. */
static int run(es_model *m, int threads, const int32_t *tok, run_out *o) {
    const size_t V = (size_t)es_model_n_vocab(m);
    char err[512];
    es_session *s = NULL;
    int rc = -1;
    o->prefill = malloc(sizeof(float) * V * N_PROMPT);
    o->decode = malloc(sizeof(float) * V * N_DECODE);
    if (!o->prefill || !o->decode) goto done;
    if (es_session_new(m, N_PROMPT + N_DECODE + 8, &s, err, sizeof err) != ES_OK) goto fail;
    if (es_session_set_threads(s, threads, err, sizeof err) != ES_OK) goto fail;
    if (es_session_threads(s) != threads) { snprintf(err, sizeof err, "got %d threads", es_session_threads(s)); goto fail; }
    if (es_session_eval(s, tok, N_PROMPT, o->prefill, 1, err, sizeof err) != ES_OK) goto fail;
    for (int i = 0; i < N_DECODE; i++)
        if (es_session_eval(s, &tok[N_PROMPT + i], 1, o->decode + (size_t)i * V, 0, err, sizeof err) != ES_OK)
            goto fail;
    rc = 0;
    goto done;
fail:
    CHECK(0, "%d threads: %s", threads, err);
done:
    es_session_free(s);
    return rc;
}

static void free_out(run_out *o) {
    free(o->prefill);
    free(o->decode);
}

/* Index of the first differing float, or -1. */
static long first_diff(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float))) return (long)i;
    return -1;
}

static void check_same(const char *label, const run_out *ref, const run_out *got, size_t V, const char *what) {
    long d1 = first_diff(ref->prefill, got->prefill, V * N_PROMPT);
    long d2 = first_diff(ref->decode, got->decode, V * N_DECODE);
    CHECK(d1 < 0, "%s, %s: prefill logits differ from 1 thread first at position %ld, token %ld (%.9g vs %.9g)",
          label, what, d1 < 0 ? 0 : d1 / (long)V, d1 < 0 ? 0 : d1 % (long)V, d1 < 0 ? 0.0 : ref->prefill[d1],
          d1 < 0 ? 0.0 : got->prefill[d1]);
    CHECK(d2 < 0, "%s, %s: decode logits differ from 1 thread first at step %ld, token %ld (%.9g vs %.9g)", label,
          what, d2 < 0 ? 0 : d2 / (long)V, d2 < 0 ? 0 : d2 % (long)V, d2 < 0 ? 0.0 : ref->decode[d2],
          d2 < 0 ? 0.0 : got->decode[d2]);
}

static void one_model(const char *label, const char *path) {
    es_model *m = NULL;
    char err[512];
    if (es_model_load(path, NULL, &m, err, sizeof err) != ES_OK) {
        CHECK(0, "%s: %s", label, err);
        return;
    }
    const size_t V = (size_t)es_model_n_vocab(m);
    int32_t tok[N_PROMPT + N_DECODE];
    uint64_t st = 0x2545f4914f6cdd1dull;
    for (int i = 0; i < N_PROMPT + N_DECODE; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((st >> 33) % V);
    }
    run_out ref;
    if (run(m, 1, tok, &ref) != 0) { free_out(&ref); es_model_free(m); return; }
    for (int t = 2; t <= 4; t++) {
        run_out got;
        char what[32];
        snprintf(what, sizeof what, "%d threads", t);
        if (run(m, t, tok, &got) == 0) check_same(label, &ref, &got, V, what);
        free_out(&got);
    }

    /* a rewound session recomputes the same values: prefill one batch,
     * decode six tokens, cut back to the third and decode the rest again
     * (decode against decode: prefill may use other kernels than decode) */
    es_session *s = NULL;
    float *lg = malloc(sizeof(float) * V * 7);
    if (lg && es_session_new(m, N_PROMPT + 8, &s, err, sizeof err) == ES_OK &&
        es_session_set_threads(s, 3, err, sizeof err) == ES_OK &&
        es_session_eval(s, tok, 64, NULL, 0, err, sizeof err) == ES_OK) {
        int ok = 1;
        for (int i = 0; i < 6 && ok; i++)
            ok = es_session_eval(s, &tok[64 + i], 1, lg + (size_t)i * V, 0, err, sizeof err) == ES_OK;
        CHECK(es_session_truncate(s, 71, err, sizeof err) == ES_ERR_ARG, "truncate past the end refused");
        CHECK(es_session_truncate(s, -1, err, sizeof err) == ES_ERR_ARG, "truncate to -1 refused");
        CHECK(es_session_truncate(s, 66, err, sizeof err) == ES_OK && es_session_pos(s) == 66, "truncate to 66");
        for (int i = 2; i < 6 && ok; i++) {
            ok = es_session_eval(s, &tok[64 + i], 1, lg + (size_t)6 * V, 0, err, sizeof err) == ES_OK;
            ok &= !memcmp(lg + (size_t)6 * V, lg + (size_t)i * V, sizeof(float) * V);
        }
        CHECK(ok, "%s: decode after truncate repeats the first decode bit for bit", label);
    } else {
        CHECK(0, "%s: truncate session: %s", label, err);
    }
    free(lg);
    es_session_free(s);
    es_model_free(m);

    /* two and three fake nodes: threads pinned per node, plain loops in
     * per-node queues, expert units on their expert's node (stealing when
     * a node runs dry) */
    for (int fake = 2; fake <= 3; fake++) {
        char v[8];
        snprintf(v, sizeof v, "%d", fake);
        setenv("EDGESEEK_FAKE_NUMA", v, 1);
        if (es_model_load(path, NULL, &m, err, sizeof err) == ES_OK) {
            for (int t = 2; t <= 4; t++) {
                run_out got;
                char what[48];
                snprintf(what, sizeof what, "%d threads on %d fake nodes", t, fake);
                if (run(m, t, tok, &got) == 0) check_same(label, &ref, &got, V, what);
                free_out(&got);
            }
            es_model_free(m);
        } else {
            CHECK(0, "%s (%d fake nodes): %s", label, fake, err);
        }
    }
    unsetenv("EDGESEEK_FAKE_NUMA");
    free_out(&ref);
}

typedef struct gen_case {
    const char *label;
    const char *args;
} gen_case;

static const gen_case cases[] = {
    {"q8_0 MoE", "--preset tiny --type q8_0 --seed 31 --experts 16 --experts-used 4"},
    {"q4_0 MoE, groups, sigmoid", "--preset tiny --type q4_0 --seed 32 --experts 16 --experts-used 4 --groups 4 "
                                  "--groups-used 2 --gating sigmoid --gate-bias --expert-norm"},
    {"f16 MoE, q_lora", "--preset tiny --type f16 --seed 33 --q-lora 32"},
    {"f32 MoE, legacy kv_b", "--preset tiny --type f32 --seed 34 --legacy-kv"},
};

int main(void) {
    const char *gen = test_build_path("gen_model");
    char genp[4096];
    snprintf(genp, sizeof genp, "%s", gen);
    if (access(genp, X_OK) != 0) {
        SKIP("%s not built: determinism tests skipped", genp);
        return test_summary();
    }
    char dir[] = "/tmp/es_det_XXXXXX";
    if (!mkdtemp(dir)) { CHECK(0, "mkdtemp failed"); return test_summary(); }
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char path[256], cmd[8192];
        snprintf(path, sizeof path, "%s/m%zu.gguf", dir, c);
        snprintf(cmd, sizeof cmd, "'%s' %s --quiet --threads 1 -o '%s' > /dev/null 2>&1", genp, cases[c].args, path);
        if (system(cmd) != 0) {
            CHECK(0, "gen_model failed for %s (%s)", cases[c].label, cases[c].args);
            continue;
        }
        one_model(cases[c].label, path);
        remove(path);
    }
    rmdir(dir);
    return test_summary();
}
