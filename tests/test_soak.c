/* test_soak.c — a bounded soak of the public API on the default model
 * (models/edgeseek-default.gguf): nothing may grow with use.
 *  1. tokens: one model and one session generate --tokens tokens (sampled,
 *     seeded, running on past end-of-generation tokens); whenever the
 *     context fills, room is made in one of three ways in turn:
 *     a shift (keep the last half of the context, rewound and prefilled
 *     again in one batch), a truncation back to the prompt, a reset and the
 *     prompt again;
 *  2. runs: --runs sequential lives of the whole API, each loading the
 *     model (the paging modes in turn), creating a session, evaluating the
 *     chat prompt, generating a few tokens and freeing everything.
 * In each, the resident set (VmRSS), the address space (VmSize) and the
 * open file descriptors are read after a warm-up and at the end: the fds
 * must match exactly, RSS and VmSize may move by at most --tol KiB.
 *
 * `make test` runs the short version (2,000 tokens, 100 runs, a few
 * seconds; fewer under AddressSanitizer, see ES_SOAK_ASAN); the long one is
 *   build/tests/test_soak --tokens 20000 --runs 1000
 * (README "Fuzzing and soak" has its figures).  Options: --tokens N,
 * --runs N, --tol KIB, -t THREADS (default: 1 for the tokens, where a
 * second thread only slows a loaded machine, 2 for the runs, so that every
 * run starts and stops a thread pool). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgeseek.h"
#include "testutil.h"

/* Under AddressSanitizer freed memory sits in quarantine and the address
 * space is mostly shadow, so RSS and VmSize say nothing: there the sizes
 * are skipped (LeakSanitizer checks at exit instead), the fds still
 * checked, and the default counts are smaller (the build is ~10x slower). */
#if defined(__SANITIZE_ADDRESS__)
#define ES_SOAK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ES_SOAK_ASAN 1
#endif
#endif
#ifndef ES_SOAK_ASAN
#define ES_SOAK_ASAN 0
#endif

#define MODEL_PATH "models/edgeseek-default.gguf"
#define CTX 128          /* small, so the context fills every 40 to 100 tokens */
#define WARM_TOKENS 1000 /* tokens before the first measurement */
#define RUN_TOKENS 4     /* tokens generated per run */

typedef struct usage {
    long rss_kib, vm_kib;
    int fds;
} usage;

static long status_kib(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') v = strtol(line + kl + 1, NULL, 10);
    fclose(f);
    return v;
}

static usage measure(void) {
    usage u = { status_kib("VmRSS"), status_kib("VmSize"), -1 };
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        u.fds = 0;
        for (struct dirent *e; (e = readdir(d));)
            if (e->d_name[0] != '.') u.fds++;
        closedir(d);
        u.fds--; /* the directory's own descriptor */
    }
    return u;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The chat prompt's tokens; malloc'd, NULL on failure (recorded). */
static int32_t *prompt_ids(es_model *m, size_t *n) {
    es_chat_msg msg = { "user", "What is 487 + 356?" };
    char *text = NULL, err[256] = "";
    int32_t *ids = NULL;
    *n = 0;
    es_status st = es_chat_render(m, &msg, 1, 1, &text, err, sizeof err);
    if (st == ES_OK) st = es_tokenize(m, text, strlen(text), 0, 1, &ids, n, err, sizeof err);
    CHECK(st == ES_OK, "prompt: %s", err);
    free(text);
    return st == ES_OK ? ids : NULL;
}

static void report(const char *what, usage a, usage b, long tol) {
    printf("%s: VmRSS %ld -> %ld KiB, VmSize %ld -> %ld KiB, fds %d -> %d\n", what, a.rss_kib, b.rss_kib,
           a.vm_kib, b.vm_kib, a.fds, b.fds);
    CHECK(a.rss_kib > 0 && a.fds > 0, "%s: /proc/self readable", what);
    CHECK(b.fds == a.fds, "%s: open fds %d -> %d", what, a.fds, b.fds);
    if (ES_SOAK_ASAN) {
        SKIP("%s: VmRSS and VmSize under AddressSanitizer (its quarantine holds freed memory)", what);
        return;
    }
    if (getenv("ES_EMULATED")) { /* tests/run_arm.sh: qemu-user's translation cache is in our RSS */
        SKIP("%s: VmRSS and VmSize under an emulator (its code cache grows in the process)", what);
        return;
    }
    CHECK(b.rss_kib - a.rss_kib <= tol, "%s: VmRSS grew %ld KiB (tolerance %ld)", what, b.rss_kib - a.rss_kib, tol);
    CHECK(b.vm_kib - a.vm_kib <= tol, "%s: VmSize grew %ld KiB (tolerance %ld)", what, b.vm_kib - a.vm_kib, tol);
}

/* 1: one session, n_tokens sampled tokens, room made three ways in turn. */
static void soak_tokens(long n_tokens, int threads, long tol) {
    char err[256] = "";
    es_load_params lp = { 0 };
    es_model *m = NULL;
    es_session *s = NULL;
    es_sampler *smp = NULL;
    float *logits = NULL;
    int32_t *prompt = NULL, *hist = NULL;
    size_t n_prompt = 0;
    if (es_model_load(MODEL_PATH, &lp, &m, err, sizeof err) != ES_OK) {
        CHECK(0, "load %s: %s", MODEL_PATH, err);
        return;
    }
    int n_vocab = es_model_n_vocab(m);
    prompt = prompt_ids(m, &n_prompt);
    es_sampler_params sp = es_sampler_defaults();
    sp.seed = 1;
    smp = es_sampler_new(&sp);
    logits = malloc(sizeof *logits * (size_t)n_vocab);
    hist = malloc(sizeof *hist * CTX); /* the tokens the session holds */
    es_status st = es_session_new(m, CTX, &s, err, sizeof err);
    if (st == ES_OK) st = es_session_set_threads(s, threads, err, sizeof err);
    if (!prompt || !smp || !logits || !hist || st != ES_OK || n_prompt >= CTX / 2) {
        CHECK(0, "tokens soak setup: %s", err);
        goto done;
    }
    memcpy(hist, prompt, n_prompt * sizeof *hist);
    st = es_session_eval(s, prompt, (int)n_prompt, logits, 0, err, sizeof err);
    usage warm = { 0 }, end;
    long made = 0, shifts = 0, truncs = 0, resets = 0, eogs = 0;
    double t0 = now_s();
    while (st == ES_OK && made < n_tokens) {
        int32_t tok = es_sampler_sample(smp, logits, n_vocab);
        if (tok < 0 || tok >= n_vocab) {
            CHECK(0, "sampled token %d out of range", tok);
            break;
        }
        made++;
        if (made == WARM_TOKENS || (made == 1 && n_tokens <= WARM_TOKENS)) warm = measure();
        int pos = es_session_pos(s);
        eogs += es_model_is_eog(m, tok); /* run on past it: the context is meant to fill */
        if (pos < CTX) {
            hist[pos] = tok;
            st = es_session_eval(s, &tok, 1, logits, 0, err, sizeof err);
            continue;
        }
        /* the context is full: make room one way of three */
        switch ((shifts + truncs + resets) % 3) {
        case 0: { /* shift: keep the last half, prefilled again */
            int keep = pos / 2 > 0 ? pos / 2 : 1;
            memmove(hist, hist + pos - keep, (size_t)keep * sizeof *hist);
            st = es_session_truncate(s, 0, err, sizeof err);
            if (st == ES_OK) st = es_session_eval(s, hist, keep, logits, 0, err, sizeof err);
            shifts++;
            break;
        }
        case 1: /* back to the prompt, its cache kept */
            memcpy(hist, prompt, n_prompt * sizeof *hist);
            /* the prompt's last logits again: its last token rewritten */
            st = es_session_truncate(s, (int)n_prompt - 1, err, sizeof err);
            if (st == ES_OK) st = es_session_eval(s, prompt + n_prompt - 1, 1, logits, 0, err, sizeof err);
            truncs++;
            break;
        default: /* reset, the prompt again */
            es_session_reset(s);
            memcpy(hist, prompt, n_prompt * sizeof *hist);
            st = es_session_eval(s, prompt, (int)n_prompt, logits, 0, err, sizeof err);
            resets++;
        }
    }
    CHECK(st == ES_OK, "tokens soak: %s", err);
    CHECK(made == n_tokens, "tokens soak: %ld of %ld tokens", made, n_tokens);
    end = measure();
    printf("tokens: %ld tokens in %.1f s (%ld shifts, %ld truncations, %ld resets; %ld end-of-generation tokens)\n",
           made, now_s() - t0, shifts, truncs, resets, eogs);
    report(made >= WARM_TOKENS ? "tokens (from token 1000 to the end)" : "tokens (from token 1 to the end)", warm, end,
           tol);
done:
    es_session_free(s);
    es_sampler_free(smp);
    free(logits);
    free(hist);
    free(prompt);
    es_model_free(m);
}

/* One life of the API; returns 0 if every call worked. */
static int one_run(int i, int threads) {
    static const int modes[] = { ES_EXPERTS_DEFAULT, ES_EXPERTS_MMAP, ES_EXPERTS_PREAD, ES_EXPERTS_MMAP_PLAIN };
    char err[256] = "";
    es_load_params lp = { 0 };
    lp.experts = modes[i % 4];
    es_model *m = NULL;
    es_session *s = NULL;
    es_sampler *smp = NULL;
    float *logits = NULL;
    int32_t *prompt = NULL;
    size_t n_prompt = 0;
    es_status st = es_model_load(MODEL_PATH, &lp, &m, err, sizeof err);
    if (st == ES_OK) st = es_session_new(m, 64, &s, err, sizeof err);
    if (st == ES_OK) st = es_session_set_threads(s, threads, err, sizeof err);
    if (st == ES_OK) {
        es_sampler_params sp = es_sampler_defaults();
        sp.seed = (uint64_t)i;
        smp = es_sampler_new(&sp);
        logits = malloc(sizeof *logits * (size_t)es_model_n_vocab(m));
        prompt = prompt_ids(m, &n_prompt);
        if (!smp || !logits || !prompt) st = ES_ERR_NOMEM;
    }
    if (st == ES_OK) st = es_session_eval(s, prompt, (int)n_prompt, logits, 0, err, sizeof err);
    for (int k = 0; k < RUN_TOKENS && st == ES_OK; k++) {
        int32_t tok = es_sampler_sample(smp, logits, es_model_n_vocab(m));
        st = es_session_eval(s, &tok, 1, logits, 0, err, sizeof err);
    }
    if (st != ES_OK) printf("run %d: %s\n", i, err);
    es_sampler_free(smp);
    free(logits);
    free(prompt);
    es_session_free(s);
    es_model_free(m);
    return st == ES_OK ? 0 : -1;
}

/* 2: n_runs sequential lives of the API. */
static void soak_runs(long n_runs, int threads, long tol) {
    long warm_runs = n_runs / 10 > 4 ? n_runs / 10 : 4, failed = 0;
    usage warm = measure();
    double t0 = now_s();
    for (long i = 0; i < n_runs; i++) {
        failed += one_run((int)i, threads) != 0;
        if (i + 1 == warm_runs) warm = measure();
    }
    usage end = measure();
    CHECK(failed == 0, "runs soak: %ld of %ld runs failed", failed, n_runs);
    printf("runs: %ld runs in %.1f s\n", n_runs, now_s() - t0);
    char what[64];
    snprintf(what, sizeof what, "runs (from run %ld to the end)", warm_runs);
    report(what, warm, end, tol);
}

static long arg_long(const char *opt, const char *v, long lo, long hi) {
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "test_soak: %s expects an integer in [%ld, %ld]\n", opt, lo, hi);
        exit(2);
    }
    return x;
}

int main(int argc, char **argv) {
    long n_tokens = ES_SOAK_ASAN ? 600 : 2000, n_runs = ES_SOAK_ASAN ? 30 : 100, tol = 1024;
    int threads = 0; /* 0: the defaults above */
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--tokens")) n_tokens = arg_long("--tokens", v, 0, 100000000), i++;
        else if (!strcmp(argv[i], "--runs")) n_runs = arg_long("--runs", v, 0, 10000000), i++;
        else if (!strcmp(argv[i], "--tol")) tol = arg_long("--tol", v, 0, 1 << 30), i++;
        else if (!strcmp(argv[i], "-t")) threads = (int)arg_long("-t", v, 1, ES_MAX_THREADS), i++;
        else {
            fprintf(stderr, "usage: test_soak [--tokens N] [--runs N] [--tol KIB] [-t THREADS]\n");
            return 2;
        }
    }
    if (!test_need_file(MODEL_PATH)) return test_summary();
    if (n_tokens) soak_tokens(n_tokens, threads ? threads : 1, tol);
    if (n_runs) soak_runs(n_runs, threads ? threads : 2, tol);
    return test_summary();
}
