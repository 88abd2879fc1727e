/* test_api.c — the public API around the forward pass: sampling (greedy,
 * temperature, top-k, top-p, min-p, seeded determinism, frequencies close
 * to the filtered distribution, samplers in two threads at once drawing what
 * each draws alone), streaming detokenisation of UTF-8 split
 * across tokens, the EDGESEEK_* variables (read once per load, a set
 * es_load_params field winning, bad values reported), vocabulary-only loading, and the `run` and `tokenize`
 * subcommands end to end (same seed, same text; exit codes); and the
 * size of a session's scratch (es_forward_session_bytes, internal) and the
 * sessions' room in the automatic memory budget (their count, cache type). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "edgeseek.h"
#include "env.h"
#include "model.h"
#include "residency_impl.h"
#include "testutil.h"
#include "threadpool.h"

static void test_sampler(void) {
    float logits[6] = {1.0f, 3.0f, 2.0f, 3.0f - 1e-3f, -5.0f, 0.5f};
    es_sampler_params p = es_sampler_defaults();
    p.temperature = 0;
    es_sampler *s = es_sampler_new(&p);
    CHECK(es_sampler_sample(s, logits, 6) == 1, "greedy picks the argmax");
    es_sampler_free(s);

    /* top-k 1 at any temperature is greedy */
    p = (es_sampler_params){.temperature = 5.0f, .top_k = 1, .top_p = 1.0f, .min_p = 0, .seed = 3};
    s = es_sampler_new(&p);
    int ok = 1;
    for (int i = 0; i < 200; i++) ok &= es_sampler_sample(s, logits, 6) == 1;
    CHECK(ok, "top-k 1 always gives the argmax");
    es_sampler_free(s);

    /* same seed, same sequence; another seed, another sequence */
    p = (es_sampler_params){.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0, .seed = 42};
    es_sampler *a = es_sampler_new(&p), *b = es_sampler_new(&p);
    p.seed = 43;
    es_sampler *c = es_sampler_new(&p);
    int same = 1, differ = 0;
    for (int i = 0; i < 200; i++) {
        int x = es_sampler_sample(a, logits, 6), y = es_sampler_sample(b, logits, 6), z = es_sampler_sample(c, logits, 6);
        same &= x == y;
        differ |= x != z;
    }
    CHECK(same, "same seed, same tokens");
    CHECK(differ, "a different seed changes the tokens");
    es_sampler_free(a); es_sampler_free(b); es_sampler_free(c);

    /* frequencies follow softmax(logits / T): 20000 draws, each within 4
     * standard deviations of its expected count */
    p = (es_sampler_params){.temperature = 0.7f, .top_k = 0, .top_p = 1.0f, .min_p = 0, .seed = 7};
    s = es_sampler_new(&p);
    int count[6] = {0};
    const int N = 20000;
    for (int i = 0; i < N; i++) count[es_sampler_sample(s, logits, 6)]++;
    double z = 0, prob[6];
    for (int i = 0; i < 6; i++) z += exp(logits[i] / 0.7);
    for (int i = 0; i < 6; i++) {
        prob[i] = exp(logits[i] / 0.7) / z;
        double sd = sqrt(N * prob[i] * (1 - prob[i])) + 1;
        CHECK(fabs(count[i] - N * prob[i]) <= 4 * sd, "token %d drawn %d times, expected %.0f", i, count[i], N * prob[i]);
    }
    es_sampler_free(s);

    /* top-k 2: only the two best tokens (1 and 3) ever appear */
    p = (es_sampler_params){.temperature = 1.0f, .top_k = 2, .top_p = 1.0f, .min_p = 0, .seed = 9};
    s = es_sampler_new(&p);
    int seen[6] = {0};
    for (int i = 0; i < 2000; i++) seen[es_sampler_sample(s, logits, 6)]++;
    CHECK(seen[1] > 0 && seen[3] > 0 && seen[0] + seen[2] + seen[4] + seen[5] == 0, "top-k 2 keeps tokens 1 and 3");
    es_sampler_free(s);

    /* top-p 0.5: tokens 1 and 3 hold ~0.32 each at T=1, so the nucleus is those two */
    p = (es_sampler_params){.temperature = 1.0f, .top_k = 0, .top_p = 0.5f, .min_p = 0, .seed = 11};
    s = es_sampler_new(&p);
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < 2000; i++) seen[es_sampler_sample(s, logits, 6)]++;
    CHECK(seen[1] > 0 && seen[3] > 0 && seen[0] + seen[2] + seen[4] + seen[5] == 0, "top-p 0.5 keeps tokens 1 and 3");
    es_sampler_free(s);

    /* min-p 0.3: token 2 has p/p_max = e^-1 = 0.37 (kept), token 0 e^-2 (dropped) */
    p = (es_sampler_params){.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.3f, .seed = 13};
    s = es_sampler_new(&p);
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < 4000; i++) seen[es_sampler_sample(s, logits, 6)]++;
    CHECK(seen[2] > 0 && seen[0] + seen[4] + seen[5] == 0, "min-p 0.3 keeps tokens 1, 3, 2 only");
    es_sampler_free(s);
}

/* Two samplers with the same seed in two threads at once, each over its own
 * logits, full sorts (top-k off) and partial selections (top-k 50): each
 * must draw exactly the tokens it draws alone.  A sort that kept its logits
 * in shared state would mix the two threads' arrays. */
enum { PAR_VOCAB = 3000, PAR_DRAWS = 200 };
typedef struct par_job {
    const float *logits;
    int top_k;
    int32_t out[PAR_DRAWS];
} par_job;

static void *par_sample(void *arg) {
    par_job *j = arg;
    es_sampler_params p = {.temperature = 1.5f, .top_k = j->top_k, .top_p = 0.98f, .min_p = 0.0f, .seed = 21};
    es_sampler *s = es_sampler_new(&p);
    for (int i = 0; i < PAR_DRAWS; i++) j->out[i] = s ? es_sampler_sample(s, j->logits, PAR_VOCAB) : -1;
    es_sampler_free(s);
    return NULL;
}

static void test_sampler_threads(void) {
    static float logits[2][PAR_VOCAB];
    uint32_t x = 12345;
    for (int i = 0; i < PAR_VOCAB; i++) {
        x = x * 1664525u + 1013904223u;
        logits[0][i] = (float)(x >> 20) / 512.0f; /* 0..8, with ties */
        logits[1][PAR_VOCAB - 1 - i] = logits[0][i] * 0.5f - 3.0f;
    }
    static const int top_ks[] = {0, 50};
    for (size_t k = 0; k < sizeof top_ks / sizeof top_ks[0]; k++) {
        static par_job alone[2], both[2];
        for (int t = 0; t < 2; t++) {
            alone[t] = (par_job){.logits = logits[t], .top_k = top_ks[k]};
            both[t] = alone[t];
            par_sample(&alone[t]);
        }
        pthread_t th[2];
        int started[2];
        for (int t = 0; t < 2; t++) started[t] = pthread_create(&th[t], NULL, par_sample, &both[t]) == 0;
        for (int t = 0; t < 2; t++)
            if (started[t]) pthread_join(th[t], NULL);
        CHECK(started[0] && started[1], "start two sampling threads");
        for (int t = 0; t < 2; t++)
            CHECK(memcmp(alone[t].out, both[t].out, sizeof alone[t].out) == 0,
                  "top-k %d: thread %d drew other tokens beside a second sampling thread", top_ks[k], t);
    }
}

/* EDGESEEK_* through es_env_read and es_model_load (vocabulary-only loads:
 * the kernel table is chosen for every load). */
static void test_env(void) {
    const char *vocab = test_data_path("golden/tokenizer/dsv3-vocab.gguf");
    char err[512] = "";
    es_env e;
    setenv("EDGESEEK_MLA", "sideways", 1);
    setenv("EDGESEEK_LFU_HALF_LIFE", "0", 1);
    setenv("EDGESEEK_SIMD", "generic", 1);
    es_env_read(&e);
    CHECK(e.mla == ES_MLA_DEFAULT && strstr(e.warnings, "EDGESEEK_MLA=sideways"), "a bad EDGESEEK_MLA is reported");
    CHECK(e.lfu_half_life == -1 && !strcmp(e.simd, "generic"), "EDGESEEK_LFU_HALF_LIFE=0: no aging; SIMD read");
    setenv("EDGESEEK_MLA", "expanded", 1);
    setenv("EDGESEEK_LFU_HALF_LIFE", "soon", 1);
    es_env_read(&e);
    CHECK(e.mla == ES_MLA_EXPANDED && e.lfu_half_life == 0 && strstr(e.warnings, "EDGESEEK_LFU_HALF_LIFE=soon") &&
          !strstr(e.warnings, "EDGESEEK_MLA"), "EDGESEEK_MLA=expanded read; a bad half-life reported");
    unsetenv("EDGESEEK_MLA");
    unsetenv("EDGESEEK_LFU_HALF_LIFE");

    es_model *m = NULL;
    es_load_params lp = {.vocab_only = 1};
    CHECK(es_model_load(vocab, &lp, &m, err, sizeof err) == ES_OK && !strcmp(es_model_simd(m), "generic"),
          "EDGESEEK_SIMD=generic picks the model's kernels (%s)", m ? es_model_simd(m) : err);
    es_model_free(m);
    m = NULL;
    setenv("EDGESEEK_SIMD", "bogus", 1);
    es_status st = es_model_load(vocab, &lp, &m, err, sizeof err);
    CHECK(st == ES_ERR_ARG && !m && strstr(err, "EDGESEEK_SIMD") && strstr(err, "bogus"),
          "EDGESEEK_SIMD=bogus refuses the load with a message (%s)", err);
    es_model_free(m);
    m = NULL;
    lp.simd = "generic"; /* the field wins over the variable */
    CHECK(es_model_load(vocab, &lp, &m, err, sizeof err) == ES_OK && !strcmp(es_model_simd(m), "generic"),
          "es_load_params.simd wins over EDGESEEK_SIMD (%s)", m ? es_model_simd(m) : err);
    es_model_free(m);
    m = NULL;
    unsetenv("EDGESEEK_SIMD");
    lp.simd = NULL;
    CHECK(es_model_load(vocab, &lp, &m, err, sizeof err) == ES_OK && !strcmp(es_model_simd(m), es_simd_name()),
          "without either, the default path %s (%s)", es_simd_name(), m ? es_model_simd(m) : err);
    es_model_free(m);
    m = NULL;
    lp.simd = "bogus";
    CHECK(es_model_load(vocab, &lp, &m, err, sizeof err) == ES_ERR_ARG && !m && strstr(err, "unknown SIMD path"),
          "an unknown es_load_params.simd is a bad argument (%s)", err);
}

/* Streams a text's tokens through es_detok_push: every chunk must end on a
 * UTF-8 boundary and the chunks must rebuild the text exactly. */
static void test_detok(void) {
    char err[512];
    es_load_params lp = {.vocab_only = 1};
    es_model *m = NULL;
    es_status st = es_model_load(test_data_path("golden/tokenizer/dsv3-vocab.gguf"), &lp, &m, err, sizeof err);
    CHECK(st == ES_OK, "vocab-only load: %s", err);
    if (st != ES_OK) return;
    const char *texts[] = {"héllo wörld", "日本語のテキスト 🙂🚀 mixed", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∮ E⋅da = Q", "plain ascii"};
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(es_tokenize(m, texts[t], strlen(texts[t]), 0, 0, &ids, &n, err, sizeof err) == ES_OK, "tokenize");
        char out[512];
        size_t len = 0;
        int boundaries_ok = 1;
        es_detok d = {0};
        for (size_t i = 0; i < n; i++) {
            char chunk[64];
            size_t w = es_detok_push(&d, m, ids[i], chunk, sizeof chunk);
            if (w > sizeof chunk) { boundaries_ok = 0; break; }
            /* a chunk never ends inside a sequence: its last lead byte is complete */
            for (size_t j = 0; j < w;) {
                unsigned char c = (unsigned char)chunk[j];
                size_t l = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : 4;
                if (j + l > w) boundaries_ok = 0;
                j += l;
            }
            memcpy(out + len, chunk, w);
            len += w;
        }
        len += es_detok_flush(&d, out + len, sizeof out - len);
        CHECK(boundaries_ok, "'%s': a chunk ended inside a UTF-8 sequence", texts[t]);
        CHECK(len == strlen(texts[t]) && memcmp(out, texts[t], len) == 0, "'%s' streams back exactly", texts[t]);
        free(ids);
    }
    /* a cap too small consumes nothing and reports the size needed */
    int32_t *ids = NULL;
    size_t n = 0;
    es_tokenize(m, "internationalization", 20, 0, 0, &ids, &n, err, sizeof err);
    es_detok d = {0};
    char tiny[1], big[64];
    size_t need = es_detok_push(&d, m, ids[0], tiny, 0);
    CHECK(need > 0 && d.n_pend == 0, "cap 0 reports %zu bytes needed and consumes nothing", need);
    CHECK(es_detok_push(&d, m, ids[0], big, sizeof big) == need, "retry with room gives the bytes");
    (void)tiny;
    free(ids);
    es_session *s = NULL;
    CHECK(es_session_new(m, 16, &s, err, sizeof err) == ES_ERR_ARG, "a vocab-only model cannot run");
    es_model_free(m);
}

/* es_forward_session_bytes: positive, growing with the context (the
 * attention scores and latents) and the threads, n_threads <= 0 read as the
 * default count. */
static void test_session_bytes(void) {
    char err[512];
    es_model *m = NULL;
    es_status st = es_model_load(test_data_path("golden/v3-tiny/model.gguf"), NULL, &m, err, sizeof err);
    CHECK(st == ES_OK, "load v3-tiny: %s", err);
    if (st != ES_OK) return;
    int64_t small = es_forward_session_bytes(m, 16, 1), big = es_forward_session_bytes(m, 4096, 1);
    CHECK(small > 0, "session bytes %lld at 16 positions", (long long)small);
    CHECK(big > small, "session bytes grow with n_ctx: %lld at 4096, %lld at 16", (long long)big, (long long)small);
    CHECK(es_forward_session_bytes(m, 16, 4) > small, "session bytes grow with the threads");
    CHECK(es_forward_session_bytes(m, 16, 0) == es_forward_session_bytes(m, 16, es_default_threads()),
          "n_threads 0 is the default thread count");
    es_model_free(m);

    /* the automatic budget leaves room for the sessions' caches at their
     * type, times the sessions (a server's slots) */
    const struct { int kv_type, n_sessions; } cases[] = {{ES_KV_F32, 1}, {ES_KV_F16, 1}, {ES_KV_Q8_0, 1},
                                                          {ES_KV_DEFAULT, 0}, {ES_KV_BF16, 3}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        es_load_params lp = {.experts = ES_EXPERTS_MMAP, .n_ctx = 4096, .kv_type = cases[i].kv_type,
                             .n_sessions = cases[i].n_sessions};
        m = NULL;
        st = es_model_load(test_data_path("golden/v3-tiny/model.gguf"), &lp, &m, err, sizeof err);
        CHECK(st == ES_OK && m->res, "load v3-tiny paged: %s", err);
        if (st != ES_OK || !m->res) { es_model_free(m); continue; }
        int n = cases[i].n_sessions > 0 ? cases[i].n_sessions : 1;
        int64_t want = n * (es_forward_session_bytes(m, 4096, 0) +
                            (int64_t)es_model_kv_bytes_per_token_of(m, cases[i].kv_type) * 4096 + ((int64_t)8 << 20));
        CHECK(m->res->session_bytes == want, "budget: %d sessions of a %s cache: %lld bytes, want %lld", n,
              es_kv_type_name(cases[i].kv_type), (long long)m->res->session_bytes, (long long)want);
        es_model_free(m);
    }
}

static void test_cli(void) {
    const char *bin = test_build_path("edgeseek");
    const char *model = test_data_path("golden/v3-tiny/model.gguf");
    char cmd[2048], a[8192], b[8192], c[8192];
    snprintf(cmd, sizeof cmd, "%s run -m %s -p 'hello there' -n 24 --seed 5 --temp 0.9 --no-stats 2>/dev/null", bin, model);
    int r1 = test_run_cmd(cmd, a, sizeof a), r2 = test_run_cmd(cmd, b, sizeof b);
    CHECK(r1 == 0 && r2 == 0 && strlen(a) > 0 && strcmp(a, b) == 0, "run: same seed, same text (rc %d %d)", r1, r2);
    snprintf(cmd, sizeof cmd, "%s run -m %s -p 'hello there' -n 24 --seed 6 --temp 0.9 --no-stats -t 1 2>/dev/null", bin, model);
    test_run_cmd(cmd, c, sizeof c);
    CHECK(strcmp(a, c) != 0, "run: another seed, other text");
    snprintf(cmd, sizeof cmd, "%s run -m %s -p 'hello there' -n 24 --seed 5 --temp 0.9 --no-stats -t 2 2>/dev/null", bin, model);
    test_run_cmd(cmd, c, sizeof c);
    CHECK(strcmp(a, c) == 0, "run: the thread count does not change the text");
    snprintf(cmd, sizeof cmd, "%s run -m %s -p hi -n 4 2>&1 >/dev/null", bin, model);
    CHECK(test_run_cmd(cmd, a, sizeof a) == 0 && strstr(a, "tokens/s") && strstr(a, "KV cache"), "run prints stats to stderr");
    snprintf(cmd, sizeof cmd, "%s run -m %s -p hi --temp abc 2>&1", bin, model);
    CHECK(test_run_cmd(cmd, a, sizeof a) == 2, "bad flag value is exit 2");
    snprintf(cmd, sizeof cmd, "%s run -m %s --bogus 2>&1", bin, model);
    CHECK(test_run_cmd(cmd, a, sizeof a) == 2, "unknown flag is exit 2");
    snprintf(cmd, sizeof cmd, "%s run -m %s -c 4 -p 'a long prompt that does not fit in four tokens' 2>&1", bin, model);
    CHECK(test_run_cmd(cmd, a, sizeof a) == 1 && strstr(a, "context"), "prompt longer than the context: exit 1 with a message");
    snprintf(cmd, sizeof cmd, "%s tokenize -m %s -p 'Hello world'", bin, test_data_path("golden/tokenizer/dsv3-vocab.gguf"));
    CHECK(test_run_cmd(cmd, a, sizeof a) == 0 && strcmp(a, "19923,2058\n") == 0, "tokenize prints ids: '%s'", a);
    snprintf(cmd, sizeof cmd, "%s info -m %s", bin, model);
    CHECK(test_run_cmd(cmd, a, sizeof a) == 0 && strstr(a, "KV cache:    480 bytes per token"), "info reports KV bytes per token");
    const char *subs[] = {"run", "logits", "tokenize", "info"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(cmd, sizeof cmd, "%s %s --help", bin, subs[i]);
        CHECK(test_run_cmd(cmd, a, sizeof a) == 0 && strstr(a, "usage"), "%s --help", subs[i]);
    }
    snprintf(cmd, sizeof cmd, "%s frobnicate 2>&1", bin);
    CHECK(test_run_cmd(cmd, a, sizeof a) == 2, "unknown command is exit 2");
}

int main(void) {
    test_sampler();
    test_sampler_threads();
    test_env();
    test_detok();
    test_session_bytes();
    test_cli();
    return test_summary();
}
