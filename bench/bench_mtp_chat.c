/* bench_mtp_chat.c — greedy chat answers with and without MTP speculative
 * decoding, on a model with an MTP block (the default one:
 * models/edgeseek-default-mtp.gguf), as `run --chat --temp 0 [--mtp]`
 * answers them: the time of the generation alone (the prompt is evaluated
 * outside the clock), tokens per second of each way, interleaved problem by
 * problem (the order swapped every other round), and the median over the
 * rounds of each way and of the per-round ratio.  Not a timed test.
 *
 * Unlike `bench --mtp` (random tokens after a random prompt, where the
 * default model's block keeps about 40% of its drafts) these are the
 * arithmetic questions the model was trained on, where it keeps about 90%.
 * Every answer with MTP must equal the answer without, token for token: a
 * difference is counted and makes the exit status 1.
 *
 * Usage: bench_mtp_chat MODEL [ROUNDS (default 10)] [THREADS (default 1)]
 * One thread pinned is the figure to quote on a busy machine:
 *   taskset -c 1 chrt -f 50 build/bench/bench_mtp_chat models/edgeseek-default-mtp.gguf 10 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgeseek.h"

enum { MAX_GEN = 400 };

static const char *const questions[] = {
    "What is 613 - 278?",   "What is 487 + 356?", "What is 729 * 6?", "Which is larger, 582 or 528?",
    "What is 904 - 517?",   "What is 358 + 479?", "What is 246 * 7?", "What is 811 - 96?",
};
enum { NQ = sizeof questions / sizeof questions[0] };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One answer: the prompt evaluated, then greedy tokens (speculative when
 * mtp) until an end-of-generation token or MAX_GEN; out[*n_out], the
 * generation's seconds in *secs. */
static es_status answer(es_model *m, es_session *s, es_sampler *smp, int mtp, const char *q, float *lg,
                        int32_t *out, int *n_out, double *secs, es_spec_stats *st, char *err, size_t errlen) {
    es_chat_msg msg = {"user", q};
    int32_t *ids = NULL;
    size_t n = 0;
    es_status rc = es_chat_tokenize(m, &msg, 1, 1, &ids, &n, err, errlen);
    if (rc != ES_OK) return rc;
    es_session_reset(s);
    rc = es_session_eval(s, ids, (int)n, lg, 0, err, errlen);
    free(ids);
    if (rc != ES_OK) return rc;
    es_spec *g = NULL;
    rc = es_spec_new(s, smp, mtp, lg, &g, err, errlen);
    if (rc != ES_OK) return rc;
    int c = 0;
    const double t0 = now();
    while (c < MAX_GEN) {
        int32_t t;
        rc = es_spec_next(g, &t, err, errlen);
        if (rc != ES_OK) break;
        out[c++] = t;
        if (es_model_is_eog(m, t)) break;
    }
    *secs = now() - t0;
    *n_out = c;
    es_spec_stats add;
    es_spec_get_stats(g, &add);
    st->tokens += add.tokens;
    st->forwards += add.forwards;
    st->drafted += add.drafted;
    st->accepted += add.accepted;
    es_spec_free(g);
    return rc;
}

/* The CPU's name and the load average, for the figures' context. */
static void print_machine(void) {
    char line[256], cpu[256] = "unknown CPU", load[64] = "?";
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            snprintf(cpu, sizeof cpu, "%s", strchr(line, ':') + 2);
            cpu[strcspn(cpu, "\n")] = 0;
            break;
        }
    if (f) fclose(f);
    f = fopen("/proc/loadavg", "r");
    if (f && fgets(line, sizeof line, f)) snprintf(load, sizeof load, "%.14s", line);
    if (f) fclose(f);
    printf("%s, load average %s\n", cpu, load);
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: %s MODEL [ROUNDS] [THREADS]\n", argv[0]);
        return 2;
    }
    const int rounds = argc > 2 ? atoi(argv[2]) : 10, threads = argc > 3 ? atoi(argv[3]) : 1;
    if (rounds < 1 || rounds > 10000 || threads < 1 || threads > ES_MAX_THREADS) {
        fprintf(stderr, "bench_mtp_chat: ROUNDS must be 1..10000 and THREADS 1..%d\n", ES_MAX_THREADS);
        return 2;
    }
    char err[512];
    es_model *m = NULL;
    es_session *s[2] = {NULL, NULL};
    es_sampler_params gp = es_sampler_defaults();
    gp.temperature = 0;
    es_sampler *smp = es_sampler_new(&gp);
    const es_session_params sp = {.n_ctx = 512, .n_threads = threads};
    if (es_model_load(argv[1], NULL, &m, err, sizeof err) != ES_OK ||
        es_session_new_ext(m, &sp, &s[0], err, sizeof err) != ES_OK ||
        es_session_new_ext(m, &sp, &s[1], err, sizeof err) != ES_OK ||
        es_session_set_mtp(s[1], 1, err, sizeof err) != ES_OK) {
        fprintf(stderr, "bench_mtp_chat: %s\n", err);
        return 1;
    }
    float *lg = malloc(sizeof(float) * (size_t)es_model_n_vocab(m));
    double *tps[2] = {malloc(sizeof(double) * (size_t)rounds), malloc(sizeof(double) * (size_t)rounds)};
    double *ratio = malloc(sizeof(double) * (size_t)rounds);
    static int32_t out[2][MAX_GEN];
    if (!smp || !lg || !tps[0] || !tps[1] || !ratio) {
        fprintf(stderr, "bench_mtp_chat: out of memory\n");
        return 1;
    }
    es_spec_stats st = {0}, ignored = {0};
    int differ = 0;
    for (int r = 0; r < rounds; r++) {
        double secs[2] = {0, 0};
        long toks[2] = {0, 0};
        for (int q = 0; q < NQ; q++) {
            int n[2];
            for (int i = 0; i < 2; i++) {
                const int k = r % 2 ? 1 - i : i; /* which way runs first alternates */
                double dt;
                if (answer(m, s[k], smp, k, questions[q], lg, out[k], &n[k], &dt, k ? &st : &ignored, err,
                           sizeof err) != ES_OK) {
                    fprintf(stderr, "bench_mtp_chat: %s\n", err);
                    return 1;
                }
                secs[k] += dt;
                toks[k] += n[k];
            }
            differ += n[0] != n[1] || memcmp(out[0], out[1], sizeof(int32_t) * (size_t)n[0]) != 0;
        }
        for (int k = 0; k < 2; k++) tps[k][r] = (double)toks[k] / secs[k];
        ratio[r] = tps[1][r] / tps[0][r];
    }
    print_machine();
    printf("%d rounds of %d chat answers, %d thread%s\n", rounds, NQ, threads, threads > 1 ? "s" : "");
    printf("greedy        %9.1f tokens/s (median)\n", median(tps[0], rounds));
    printf("greedy --mtp  %9.1f tokens/s (median), %.1f%% of %lld drafts kept, %.3f tokens per pass\n",
           median(tps[1], rounds), st.drafted ? 100.0 * (double)st.accepted / (double)st.drafted : 0.0,
           (long long)st.drafted, st.forwards ? (double)st.tokens / (double)st.forwards : 0.0);
    const double med = median(ratio, rounds); /* sorts: the range is at the ends */
    printf("--mtp / greedy: %.3fx (median of the rounds' ratios; %.3f-%.3f)\n", med, ratio[0], ratio[rounds - 1]);
    printf("answers that differ: %d of %d\n", differ, rounds * NQ);
    es_sampler_free(smp);
    es_session_free(s[0]);
    es_session_free(s[1]);
    es_model_free(m);
    free(lg);
    free(tps[0]);
    free(tps[1]);
    free(ratio);
    return differ ? 1 : 0;
}
