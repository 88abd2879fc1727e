/* cmd_bench.c — `edgeseek bench`: prompt-processing (ppN) and generation (tgN)
 * speed in tokens/s, mean ± standard deviation over repetitions, in the
 * shape of llama-bench's table, so the two can be read side by side; with
 * -d, each test runs after a prefilled context of that depth ("tg32 @
 * d512").  For generation it adds what decoding reads from memory per
 * token (every always-read weight, one embedding row, k experts per MoE
 * layer: es_model_decode_traffic) and the fraction of this machine's read
 * bandwidth that rate represents, the bandwidth measured here with a
 * STREAM-like read of a buffer several times the last-level cache, by the
 * same number of threads, in a child process so that the buffer does not
 * count in the peak RSS reported.
 *
 * With --streams N, "tgK xN" runs N sessions decoding together: each of the
 * K steps is one es_batch_eval of one token per session (one pass over the
 * weights for all of them), and the figure is the aggregate generated
 * tokens/s, N·K over the time.
 *
 * Like llama-bench: random token ids, one untimed warm-up per test, logits
 * of the last position only for pp, of every token for tg. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <emmintrin.h>
#endif

#include "cli.h"
#include "edgeseek.h"

#define MAX_LIST 32
#define MAX_STREAMS 64 /* sessions of a tgN xS test */

static void usage_bench(FILE *f) {
    fprintf(f,
            "usage: edgeseek bench -m MODEL [options]\n"
            "  -p LIST       prompt lengths for ppN tests (default 64; 0 = none)\n"
            "  -n LIST       generated tokens for tgN tests (default 32; 0 = none)\n"
            "  -d LIST       context depth each test starts from (default 0,512)\n"
            "  -t LIST       thread counts (default: physical cores; capped at the usable CPUs)\n"
            "  -r REPS       repetitions of each test (default 5)\n"
            "  --streams LIST  also tgN xS: S sessions decoding together, one es_batch_eval\n"
            "                a step; aggregate generated tokens/s (e.g. --streams 1,2,4,8)\n"
            "  --numa MODE   off | shard | replicate (default shard; a no-op on one node)\n"
            "  --kv-type T   f32 | f16 | bf16 | q8_0: storage of the latent KV cache (default f16)\n"
            "  --bw-mb MB    bandwidth test buffer (default: 4x the last-level cache, >= 1024)\n"
            "  --no-bw       do not measure memory bandwidth\n"
            "  --no-warmup   skip the untimed warm-up run of each test\n"
            "  --mtp         tgN runs as two interleaved tests of greedy decoding: \"tgN greedy\" (a\n"
            "                pass a token) and \"tgN mtp\" (speculative with the MTP block), with the\n"
            "                acceptance rate and tokens per pass\n"
            "  --json        print JSON instead of the table\n"
            "LIST is comma-separated, e.g. -p 64,512 -t 1,2.\n");
}

/* "64,512" → values in [lo, hi]; -1 with a message otherwise. */
static int parse_list(const char *opt, const char *s, long lo, long hi, long *out, int *n) {
    *n = 0;
    const char *p = s;
    while (*p) {
        char item[32];
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof item || *n == MAX_LIST) {
            fprintf(stderr, "edgeseek bench: %s expects a comma-separated list of up to %d integers, got '%s'\n", opt,
                    MAX_LIST, s);
            return -1;
        }
        memcpy(item, p, len);
        item[len] = 0;
        if (cli_parse_int(opt, item, lo, hi, &out[*n]) != 0) return -1;
        (*n)++;
        p += len;
        if (*p == ',') {
            p++;
            if (!*p) { fprintf(stderr, "edgeseek bench: %s: trailing comma in '%s'\n", opt, s); return -1; }
        }
    }
    if (!*n) { fprintf(stderr, "edgeseek bench: %s needs at least one value\n", opt); return -1; }
    return 0;
}

/* ---- memory bandwidth ---------------------------------------------------------- */

typedef struct bw_shared {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int go;                  /* 1: start; -1: give up */
    pthread_barrier_t bar;   /* initialised once the threads that started are known */
    int passes;
    double best;             /* seconds of the fastest pass */
} bw_shared;

typedef struct bw_thread {
    bw_shared *sh;
    const uint8_t *buf;
    size_t bytes;
    int first;               /* times the passes */
    uint64_t sink;
} bw_thread;

static uint64_t read_slice(const uint8_t *p, size_t n) {
#if defined(__x86_64__) || defined(__i386__)
    /* four independent 16-byte streams: enough loads in flight to saturate
     * memory with SSE2 alone (no CPU feature needed) */
    __m128i a = _mm_setzero_si128(), b = a, c = a, d = a;
    for (size_t i = 0; i + 64 <= n; i += 64) {
        a = _mm_add_epi64(a, _mm_load_si128((const __m128i *)(p + i)));
        b = _mm_add_epi64(b, _mm_load_si128((const __m128i *)(p + i + 16)));
        c = _mm_add_epi64(c, _mm_load_si128((const __m128i *)(p + i + 32)));
        d = _mm_add_epi64(d, _mm_load_si128((const __m128i *)(p + i + 48)));
    }
    a = _mm_add_epi64(_mm_add_epi64(a, b), _mm_add_epi64(c, d));
    uint64_t r[2];
    _mm_storeu_si128((__m128i *)r, a);
    return r[0] + r[1];
#else
    const uint64_t *q = (const uint64_t *)p;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = 0; i + 4 <= n / 8; i += 4) {
        a += q[i];
        b += q[i + 1];
        c += q[i + 2];
        d += q[i + 3];
    }
    return a + b + c + d;
#endif
}

/* The slice as four streams read a cache line from each in turn (its
 * quarters): the pattern of a 4-row matvec pass, which a core often reads
 * faster than one stream; the probe keeps the better of the two patterns. */
static uint64_t read_slice4(const uint8_t *p, size_t n) {
    size_t q = n / 4 / 64 * 64;
    uint64_t s = 0;
    for (size_t i = 0; i < q; i += 4096)
        for (int k = 0; k < 4; k++) s += read_slice(p + (size_t)k * q + i, q - i < 4096 ? q - i : 4096);
    return s;
}

static void *bw_main(void *arg) {
    bw_thread *t = arg;
    bw_shared *sh = t->sh;
    pthread_mutex_lock(&sh->mu);
    while (!sh->go) pthread_cond_wait(&sh->cv, &sh->mu);
    int go = sh->go;
    pthread_mutex_unlock(&sh->mu);
    if (go < 0) return NULL;
    /* first touch by the thread that reads it: its own node's memory */
    memset((void *)t->buf, 1, t->bytes);
    for (int pass = 0; pass < sh->passes; pass++) {
        pthread_barrier_wait(&sh->bar);
        double t0 = cli_now();
        t->sink += pass % 2 ? read_slice4(t->buf, t->bytes) : read_slice(t->buf, t->bytes);
        pthread_barrier_wait(&sh->bar);
        double dt = cli_now() - t0;
        if (t->first && (sh->best == 0 || dt < sh->best)) sh->best = dt;
    }
    return NULL;
}

/* Fastest-pass read rate of about `bytes` by n threads, in bytes/s; 0 on
 * failure.  Threads that fail to start shrink the test, not break it. */
static double measure_bw_here(size_t bytes, int n) {
    uint8_t *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) return 0;
#ifdef MADV_HUGEPAGE
    /* huge pages where the system allows them, as a model's mapping gets
     * from the page cache's large folios: the probe should not pay TLB
     * misses the weights do not */
    madvise(buf, bytes, MADV_HUGEPAGE);
#endif
    bw_shared sh = {.passes = 8};
    pthread_mutex_init(&sh.mu, NULL);
    pthread_cond_init(&sh.cv, NULL);
    bw_thread *t = calloc((size_t)n, sizeof *t);
    pthread_t *th = calloc((size_t)n, sizeof *th);
    double rate = 0;
    if (t && th) {
        size_t slice = bytes / (size_t)n / 64 * 64;
        for (int i = 0; i < n; i++) t[i] = (bw_thread){&sh, buf + (size_t)i * slice, slice, i == 0, 0};
        int started = 1;
        while (started < n && pthread_create(&th[started], NULL, bw_main, &t[started]) == 0) started++;
        int ok = pthread_barrier_init(&sh.bar, NULL, (unsigned)started) == 0;
        pthread_mutex_lock(&sh.mu);
        sh.go = ok ? 1 : -1;
        pthread_cond_broadcast(&sh.cv);
        pthread_mutex_unlock(&sh.mu);
        if (ok) bw_main(&t[0]);
        for (int i = 1; i < started; i++) pthread_join(th[i], NULL);
        if (ok) {
            pthread_barrier_destroy(&sh.bar);
            if (sh.best > 0) rate = (double)slice * started / sh.best;
        }
    }
    free(t);
    free(th);
    pthread_mutex_destroy(&sh.mu);
    pthread_cond_destroy(&sh.cv);
    munmap(buf, bytes);
    return rate;
}

/* The same, in a child process: its buffer must not show in this
 * process's peak RSS, which the benchmark reports for the model. */
static double measure_bw(size_t bytes, int n) {
    int fd[2];
    if (pipe(fd) != 0) return measure_bw_here(bytes, n);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return measure_bw_here(bytes, n);
    }
    if (pid == 0) {
        close(fd[0]);
        double r = measure_bw_here(bytes, n);
        ssize_t w = write(fd[1], &r, sizeof r);
        _exit(w == (ssize_t)sizeof r ? 0 : 1);
    }
    close(fd[1]);
    double r = 0;
    ssize_t got;
    do got = read(fd[0], &r, sizeof r);
    while (got < 0 && errno == EINTR);
    close(fd[0]);
    waitpid(pid, NULL, 0);
    return got == (ssize_t)sizeof r ? r : 0;
}

/* 4x the last-level cache and at least 1 GiB, at most a quarter of the
 * memory this process may use. */
static size_t bw_bytes(long mb) {
    if (mb > 0) return (size_t)mb << 20;
    long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (llc <= 0) llc = sysconf(_SC_LEVEL2_CACHE_SIZE);
    size_t want = llc > 0 ? (size_t)llc * 4 : 0;
    if (want < ((size_t)1 << 30)) want = (size_t)1 << 30;
    /* what this process may use (mmap/budget.c: MemAvailable, which counts
     * the page cache the model usually fills, and any cgroup limit); free
     * memory alone would shrink the buffer to a cache's size */
    int64_t may_use = es_mem_available();
    size_t avail = may_use > 0 ? (size_t)may_use : 0;
    long pages = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (!avail && pages > 0 && psz > 0) avail = (size_t)pages * (size_t)psz;
    if (avail && want > avail / 4) want = avail / 4;
    return want < ((size_t)64 << 20) ? (size_t)64 << 20 : want;
}

/* ---- the benchmark ----------------------------------------------------------------- */

typedef struct result {
    int threads, n_prompt, n_gen, n_depth, reps;
    int n_streams;           /* tgN xS: S sessions through es_batch_eval; 0: one session, es_session_eval */
    double *ts;              /* [reps] tokens/s */
    double mean, sd;
    double median;           /* of the samples */
    double vs_one;           /* tgN xS: median over rounds of its t/s over tgN x1's (0: no x1 ran) */
    int mtp;                 /* --mtp: 1 "tgN greedy", 2 "tgN mtp"; 0 otherwise */
    es_spec_stats spec;      /* tgN mtp: the generator's counts over the timed runs */
    es_decode_traffic tr;    /* generation: per token, KV at the middle position */
    double bw;               /* bytes/s for this thread count (0: not measured) */
    char name[64];           /* "pp64", "tg32 @ d512" */
} result;

static uint64_t g_rng = 0x853c49e6748fea9bull;
static int32_t rand_token(int nv) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (int32_t)((g_rng >> 33) % (uint64_t)nv);
}

static void fill_tokens(int32_t *t, int n, int nv) {
    for (int i = 0; i < n; i++) t[i] = rand_token(nv);
}

/* One timed run of a test from depth d; returns seconds, < 0 on error. */
static double run_once(es_session *s, int d, int n_prompt, int n_gen, int32_t *tok, float *logits, int nv) {
    char err[512];
    if (cli_failed(es_session_truncate(s, d, err, sizeof err), err)) return -1;
    if (n_prompt) {
        fill_tokens(tok, n_prompt, nv);
        double t0 = cli_now();
        if (cli_failed(es_session_eval(s, tok, n_prompt, logits, 0, err, sizeof err), err)) return -1;
        return cli_now() - t0;
    }
    double t0 = cli_now();
    for (int i = 0; i < n_gen; i++) {
        int32_t t = rand_token(nv);
        if (cli_failed(es_session_eval(s, &t, 1, logits, 0, err, sizeof err), err)) return -1;
    }
    return cli_now() - t0;
}

/* One timed run of greedy decoding of n_gen tokens from depth d after an
 * untimed random token there: plain, one pass a token (g NULL), or
 * through the generator g (the first draft, which may rerun a token after
 * the truncation, primed untimed into prime[nv]); seconds, < 0 on error. */
static double run_greedy(es_session *s, es_spec *g, es_sampler *smp, int d, int n_gen, float *logits, float *prime,
                         int nv) {
    char err[512];
    int32_t t = rand_token(nv);
    if (cli_failed(es_session_truncate(s, d, err, sizeof err), err) ||
        cli_failed(es_session_eval(s, &t, 1, logits, 0, err, sizeof err), err))
        return -1;
    if (g) {
        es_spec_restart(g, logits);
        if (es_session_mtp(s) && /* the gate may have turned it off (paging) */
            cli_failed(es_session_mtp_draft(s, es_sampler_sample(smp, logits, nv), prime, err, sizeof err), err))
            return -1;
    }
    double t0 = cli_now();
    for (int i = 0; i < n_gen + (g != NULL); i++) { /* the generator's first token needs no pass */
        if (g) {
            es_status st = es_spec_next(g, &t, err, sizeof err);
            if (st == ES_ERR_CONTEXT) break;
            if (cli_failed(st, err)) return -1;
            continue;
        }
        t = es_sampler_sample(smp, logits, nv);
        if (cli_failed(es_session_eval(s, &t, 1, logits, 0, err, sizeof err), err)) return -1;
    }
    return cli_now() - t0;
}

/* One timed run of tgN xS: S sessions from depth d, n_gen steps of one
 * token each through es_batch_eval; seconds, < 0 on error. */
static double run_streams(es_session **ss, int n_s, int d, int n_gen, float *const *logits, int nv) {
    char err[512];
    int32_t tok[MAX_STREAMS];
    const int32_t *tp[MAX_STREAMS];
    int one[MAX_STREAMS];
    for (int i = 0; i < n_s; i++) {
        if (cli_failed(es_session_truncate(ss[i], d, err, sizeof err), err)) return -1;
        tp[i] = &tok[i];
        one[i] = 1;
    }
    double t0 = cli_now();
    for (int k = 0; k < n_gen; k++) {
        for (int i = 0; i < n_s; i++) tok[i] = rand_token(nv);
        if (cli_failed(es_batch_eval(ss, n_s, tp, one, logits, err, sizeof err), err)) return -1;
    }
    return cli_now() - t0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[n] (sorted in place). */
static double median_of(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void stats(result *r) {
    double sum = 0, sq = 0;
    for (int i = 0; i < r->reps; i++) sum += r->ts[i];
    r->mean = sum / r->reps;
    for (int i = 0; i < r->reps; i++) sq += (r->ts[i] - r->mean) * (r->ts[i] - r->mean);
    r->sd = r->reps > 1 ? sqrt(sq / (r->reps - 1)) : 0;
    double *v = malloc(sizeof(double) * (size_t)r->reps);
    if (v) {
        memcpy(v, r->ts, sizeof(double) * (size_t)r->reps);
        r->median = median_of(v, r->reps);
        free(v);
    }
}

static void test_name(result *r) {
    const size_t n = sizeof r->name;
    if (r->n_prompt) snprintf(r->name, n, "pp%d", r->n_prompt);
    else snprintf(r->name, n, "tg%d", r->n_gen);
    if (r->n_streams) snprintf(r->name + strlen(r->name), n - strlen(r->name), " x%d", r->n_streams);
    if (r->mtp) snprintf(r->name + strlen(r->name), n - strlen(r->name), r->mtp == 2 ? " mtp" : " greedy");
    if (r->n_depth) snprintf(r->name + strlen(r->name), n - strlen(r->name), " @ d%d", r->n_depth);
}

static long peak_rss_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024;
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void print_traffic_json(FILE *f, const es_decode_traffic *t) {
    fprintf(f,
            "{\"weights\": %llu, \"attention\": %llu, \"dense_ffn\": %llu, \"router\": %llu, \"shared\": %llu, "
            "\"routed\": %llu, \"output\": %llu, \"embedding\": %llu, \"kv\": %llu}",
            (unsigned long long)t->weights, (unsigned long long)t->attention, (unsigned long long)t->dense_ffn,
            (unsigned long long)t->router, (unsigned long long)t->shared, (unsigned long long)t->routed,
            (unsigned long long)t->output, (unsigned long long)t->embedding, (unsigned long long)t->kv);
}

int cmd_bench(int argc, char **argv) {
    const char *model = NULL;
    long pp[MAX_LIST] = {64}, tg[MAX_LIST] = {32}, depth[MAX_LIST] = {0, 512}, thr[MAX_LIST] = {0};
    long streams[MAX_LIST] = {0};
    int n_pp = 1, n_tg = 1, n_depth = 2, n_thr = 1, n_streams = 0;
    long reps = 5, bw_mb = 0;
    int json = 0, no_bw = 0, warmup = 1, numa = ES_NUMA_DEFAULT, kv_type = ES_KV_DEFAULT, mtp = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage_bench(stdout); return 0; }
        if (!strcmp(a, "--json")) { json = 1; continue; }
        if (!strcmp(a, "--no-bw")) { no_bw = 1; continue; }
        if (!strcmp(a, "--no-warmup")) { warmup = 0; continue; }
        if (!strcmp(a, "--mtp")) { mtp = 1; continue; }
        static const char *const valued[] = {"-m", "-p", "-n", "-d", "-t", "-r", "--bw-mb", "--numa", "--streams", "--kv-type"};
        int known = 0;
        for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++) known |= !strcmp(a, valued[k]);
        if (!known) return cli_usage_error(usage_bench, "edgeseek bench: unknown option %s\n", a);
        if (i + 1 >= argc) return cli_usage_error(usage_bench, "edgeseek bench: %s needs a value\n", a);
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "-p")) bad = parse_list(a, v, 0, 1 << 20, pp, &n_pp);
        else if (!strcmp(a, "-n")) bad = parse_list(a, v, 0, 1 << 20, tg, &n_tg);
        else if (!strcmp(a, "-d")) bad = parse_list(a, v, 0, 1 << 20, depth, &n_depth);
        else if (!strcmp(a, "-t")) bad = parse_list(a, v, 1, ES_MAX_THREADS, thr, &n_thr);
        else if (!strcmp(a, "-r")) bad = cli_parse_int(a, v, 1, 1000, &reps);
        else if (!strcmp(a, "--bw-mb")) bad = cli_parse_int(a, v, 1, 1L << 20, &bw_mb);
        else if (!strcmp(a, "--numa")) bad = cli_parse_numa(v, &numa);
        else if (!strcmp(a, "--streams")) bad = parse_list(a, v, 1, MAX_STREAMS, streams, &n_streams);
        else if (!strcmp(a, "--kv-type")) bad = cli_parse_kv_type(v, &kv_type);
        if (bad) return 2;
    }
    if (!model) return cli_usage_error(usage_bench, "edgeseek bench: -m MODEL is required\n");
    /* thread counts above the CPUs are capped (a warning each); a count
     * the cap makes a repeat is dropped */
    int n_kept = 0;
    for (int i = 0; i < n_thr; i++) {
        long t = cli_cap_threads(thr[i]);
        int dup = 0;
        for (int k = 0; k < n_kept; k++) dup |= thr[k] == t;
        if (!dup) thr[n_kept++] = t;
    }
    n_thr = n_kept;

    /* the tests: every (pp or tg) at every depth, for every thread count */
    int n_tests = 0;
    long max_ctx = 0;
    for (int d = 0; d < n_depth; d++) {
        for (int i = 0; i < n_pp; i++)
            if (pp[i]) { n_tests++; max_ctx = depth[d] + pp[i] > max_ctx ? depth[d] + pp[i] : max_ctx; }
        for (int i = 0; i < n_tg; i++)
            if (tg[i]) { n_tests += 1 + mtp + n_streams; max_ctx = depth[d] + tg[i] > max_ctx ? depth[d] + tg[i] : max_ctx; }
    }
    int max_streams = 1;
    for (int i = 0; i < n_streams; i++) max_streams = streams[i] > max_streams ? (int)streams[i] : max_streams;
    if (!n_tests) return cli_usage_error(NULL, "edgeseek bench: nothing to run (every -p and -n is 0)\n");

    struct stat sb;
    long long file_bytes = stat(model, &sb) == 0 ? (long long)sb.st_size : 0;
    double t0 = cli_now();
    es_model *m = cli_load_model(model, &(es_load_params){.numa = numa, .kv_type = kv_type, .n_sessions = max_streams});
    if (!m) return 1;
    char err[768];
    int rc = 1;
    es_session *s = NULL, *ss[MAX_STREAMS] = {0}; /* ss[0] is s */
    es_session *sm = NULL; /* --mtp: the session with the MTP block on */
    es_sampler *greedy = NULL;
    es_spec *spec = NULL;
    float *lg_prime = NULL;
    float *lgs[MAX_STREAMS] = {0};
    result *res = NULL;
    int n_res = 0;
    int32_t *tok = NULL;
    float *logits = NULL;
    double bw_of[MAX_LIST] = {0};
    int t_of[MAX_LIST] = {0};
    const int nv = es_model_n_vocab(m);
    if (max_ctx + 1 > es_model_n_ctx_train(m)) {
        fprintf(stderr, "edgeseek: the tests need a context of %ld tokens; the model was trained for %d\n",
                max_ctx + 1, es_model_n_ctx_train(m));
        goto done;
    }
    const es_session_params spar = {.n_ctx = (int)max_ctx + 1, .kv_type = kv_type};
    if (cli_failed(es_session_new_ext(m, &spar, &s, err, sizeof err), err)) goto done;
    if (mtp) {
        es_sampler_params gp = es_sampler_defaults();
        gp.temperature = 0;
        greedy = es_sampler_new(&gp);
        lg_prime = malloc(sizeof(float) * (size_t)es_model_n_vocab(m));
        if (!greedy || !lg_prime) { fprintf(stderr, "edgeseek: out of memory\n"); goto done; }
        if (cli_failed(es_session_new_ext(m, &spar, &sm, err, sizeof err), err) ||
            cli_failed(es_session_set_mtp(sm, 1, err, sizeof err), err))
            goto done;
    }
    const size_t kvb = es_session_kv_bytes_per_token(s); /* the traffic's KV part at this cache type */
    double t_load = cli_now() - t0;
    long max_tok = 0;
    for (int d = 0; d < n_depth; d++) max_tok = depth[d] > max_tok ? depth[d] : max_tok;
    for (int i = 0; i < n_pp; i++) max_tok = pp[i] > max_tok ? pp[i] : max_tok;
    tok = malloc(sizeof(int32_t) * (size_t)(max_tok + 1));
    logits = malloc(sizeof(float) * (size_t)nv);
    res = calloc((size_t)n_tests * (size_t)n_thr, sizeof *res);
    if (!tok || !logits || !res) { fprintf(stderr, "edgeseek: out of memory\n"); goto done; }
    /* the other sessions of the streams tests: one thread each (only the
     * first one's threads run a batch) */
    ss[0] = s;
    for (int i = 0; i < max_streams; i++) {
        if (i && (cli_failed(es_session_new(m, (int)max_ctx + 1, &ss[i], err, sizeof err), err) ||
                  cli_failed(es_session_set_threads(ss[i], 1, err, sizeof err), err)))
            goto done;
        if (n_streams && !(lgs[i] = malloc(sizeof(float) * (size_t)nv))) {
            fprintf(stderr, "edgeseek: out of memory\n");
            goto done;
        }
    }
    const size_t bwb = bw_bytes(bw_mb);

    for (int ti = 0; ti < n_thr; ti++) {
        if (cli_failed(es_session_set_threads(s, (int)thr[ti], err, sizeof err), err)) goto done;
        if (sm && cli_failed(es_session_set_threads(sm, (int)thr[ti], err, sizeof err), err)) goto done;
        const int T = t_of[ti] = es_session_threads(s);
        if (!no_bw) bw_of[ti] = measure_bw(bwb, T);
        for (int d = 0; d < n_depth; d++) {
            /* the context is prefilled once per depth; each run is cut back
             * to it (es_session_truncate), so only the test is timed */
            if (sm) es_session_reset(sm);
            for (int i = 0; i < (n_streams ? max_streams : 1); i++) {
                es_session_reset(ss[i]);
                if (depth[d]) {
                    fill_tokens(tok, (int)depth[d], nv);
                    if (cli_failed(es_session_eval(ss[i], tok, (int)depth[d], NULL, 0, err, sizeof err), err)) goto done;
                    if (!i && sm && cli_failed(es_session_eval(sm, tok, (int)depth[d], NULL, 0, err, sizeof err), err))
                        goto done; /* the same context */
                }
            }
            /* --mtp: tgN greedy and tgN mtp, interleaved round by round */
            for (int i = 0; i < n_tg && sm; i++) {
                if (!tg[i]) continue;
                result *pair = &res[n_res];
                for (int j = 0; j < 2; j++) {
                    result *r = &res[n_res++];
                    *r = (result){.threads = T, .n_gen = (int)tg[i], .n_depth = (int)depth[d], .reps = (int)reps,
                                  .mtp = j + 1, .ts = calloc((size_t)reps, sizeof(double)), .bw = bw_of[ti]};
                    test_name(r);
                    if (!r->ts) { fprintf(stderr, "edgeseek: out of memory\n"); goto done; }
                }
                es_spec_free(spec); /* one generator for the test's runs: its gate carries over */
                spec = NULL;
                if (cli_failed(es_spec_new(sm, greedy, 1, logits, &spec, err, sizeof err), err)) goto done;
                if (warmup && (run_greedy(s, NULL, greedy, (int)depth[d], 1, logits, NULL, nv) < 0 ||
                               run_greedy(sm, spec, greedy, (int)depth[d], 1, logits, lg_prime, nv) < 0))
                    goto done;
                es_spec_stats before;
                es_spec_get_stats(spec, &before);
                for (int k = 0; k < reps; k++)
                    for (int j = 0; j < 2; j++) {
                        double dt = j ? run_greedy(sm, spec, greedy, (int)depth[d], (int)tg[i], logits, lg_prime, nv)
                                      : run_greedy(s, NULL, greedy, (int)depth[d], (int)tg[i], logits, NULL, nv);
                        if (dt < 0) goto done;
                        pair[j].ts[k] = tg[i] / (dt > 0 ? dt : 1e-9);
                    }
                es_spec_stats after;
                es_spec_get_stats(spec, &after);
                pair[1].spec = (es_spec_stats){after.tokens - before.tokens, after.forwards - before.forwards,
                                               after.drafted - before.drafted, after.accepted - before.accepted,
                                               after.gated - before.gated};
                double ratio[1000]; /* reps <= 1000 */
                for (int k = 0; k < reps; k++) ratio[k] = pair[1].ts[k] / pair[0].ts[k];
                pair[1].vs_one = median_of(ratio, (int)reps);
                for (int j = 0; j < 2; j++) {
                    stats(&pair[j]);
                    es_model_decode_traffic(m, (int)depth[d] + (int)tg[i] / 2, &pair[j].tr);
                    pair[j].tr.kv = (uint64_t)(depth[d] + tg[i] / 2 + 1) * kvb;
                    if (!json)
                        fprintf(stderr, "[bench] %d threads, %s: %.2f ± %.2f t/s\n", T, pair[j].name, pair[j].mean,
                                pair[j].sd);
                }
            }
            for (int kind = 0; kind < 2; kind++) {
                const int cnt = kind ? (sm ? 0 : n_tg) : n_pp; /* --mtp: the tg tests ran above */
                for (int i = 0; i < cnt; i++) {
                    const int np = kind ? 0 : (int)pp[i], ng = kind ? (int)tg[i] : 0;
                    if (!np && !ng) continue;
                    result *r = &res[n_res++];
                    *r = (result){.threads = T, .n_prompt = np, .n_gen = ng, .n_depth = (int)depth[d],
                                  .reps = (int)reps, .ts = calloc((size_t)reps, sizeof(double)), .bw = bw_of[ti]};
                    test_name(r);
                    if (!r->ts) { fprintf(stderr, "edgeseek: out of memory\n"); goto done; }
                    if (warmup && run_once(s, (int)depth[d], np, np ? 0 : 1, tok, logits, nv) < 0) goto done;
                    for (int k = 0; k < reps; k++) {
                        double dt = run_once(s, (int)depth[d], np, ng, tok, logits, nv);
                        if (dt < 0) goto done;
                        r->ts[k] = (np ? np : ng) / (dt > 0 ? dt : 1e-9);
                    }
                    stats(r);
                    if (ng) {
                        es_model_decode_traffic(m, (int)depth[d] + ng / 2, &r->tr);
                        r->tr.kv = (uint64_t)(depth[d] + ng / 2 + 1) * kvb;
                    }
                    if (!json)
                        fprintf(stderr, "[bench] %d threads, %s: %.2f ± %.2f t/s\n", T, r->name, r->mean, r->sd);
                }
            }
            /* tgN xS: S sessions a step through es_batch_eval, the stream
             * counts interleaved round by round (a busy machine then slows
             * them alike) */
            for (int i = 0; i < n_tg && n_streams; i++) {
                if (!tg[i]) continue;
                result *first = &res[n_res];
                for (int j = 0; j < n_streams; j++) {
                    result *r = &res[n_res++];
                    *r = (result){.threads = T, .n_gen = (int)tg[i], .n_depth = (int)depth[d], .reps = (int)reps,
                                  .n_streams = (int)streams[j], .ts = calloc((size_t)reps, sizeof(double)),
                                  .bw = bw_of[ti]};
                    test_name(r);
                    if (!r->ts) { fprintf(stderr, "edgeseek: out of memory\n"); goto done; }
                    if (warmup && run_streams(ss, r->n_streams, r->n_depth, 1, lgs, nv) < 0) goto done;
                }
                for (int k = 0; k < reps; k++)
                    for (int j = 0; j < n_streams; j++) {
                        result *r = &first[j];
                        double dt = run_streams(ss, r->n_streams, r->n_depth, r->n_gen, lgs, nv);
                        if (dt < 0) goto done;
                        r->ts[k] = (double)r->n_streams * r->n_gen / (dt > 0 ? dt : 1e-9);
                    }
                const result *one = NULL;
                for (int j = 0; j < n_streams; j++)
                    if (first[j].n_streams == 1) one = &first[j];
                for (int j = 0; j < n_streams; j++) {
                    stats(&first[j]);
                    double ratio[1000]; /* reps <= 1000 */
                    for (int k = 0; one && k < reps; k++) ratio[k] = first[j].ts[k] / one->ts[k];
                    if (one) first[j].vs_one = median_of(ratio, (int)reps);
                    if (!json)
                        fprintf(stderr, "[bench] %d threads, %s: %.2f ± %.2f t/s (all streams)\n", T,
                                first[j].name, first[j].mean, first[j].sd);
                }
            }
        }
    }

    es_decode_traffic tr0;
    es_model_decode_traffic(m, 0, &tr0);
    tr0.kv = kvb;
    long rss = peak_rss_bytes();
    if (json) {
        printf("{\n  \"model\": ");
        json_str(stdout, model);
        printf(",\n  \"file_bytes\": %lld,\n  \"simd\": \"%s\",\n  \"numa\": ", file_bytes, es_model_simd(m));
        json_str(stdout, es_model_numa_summary(m));
        printf(",\n  \"kv_type\": \"%s\", \"kv_bytes_per_token\": %zu", es_kv_type_name(es_session_kv_type(s)), kvb);
        printf(",\n  \"load_s\": %.3f,\n  \"peak_rss_bytes\": %ld,\n  \"bandwidth_buffer_bytes\": %zu,\n", t_load,
               rss, no_bw ? (size_t)0 : bwb);
        printf("  \"decode_traffic\": ");
        print_traffic_json(stdout, &tr0);
        printf(",\n  \"results\": [\n");
        for (int i = 0; i < n_res; i++) {
            const result *r = &res[i];
            printf("    {\"threads\": %d, \"test\": \"%s\", \"n_prompt\": %d, \"n_gen\": %d, \"n_depth\": %d, "
                   "\"n_streams\": %d, \"avg_ts\": %.4f, \"stddev_ts\": %.4f, \"samples_ts\": [",
                   r->threads, r->name, r->n_prompt, r->n_gen, r->n_depth, r->n_streams, r->mean, r->sd);
            for (int k = 0; k < r->reps; k++) printf("%s%.4f", k ? ", " : "", r->ts[k]);
            printf("], \"median_ts\": %.4f, \"bandwidth_bytes_per_s\": %.0f", r->median, r->bw);
            if (r->n_streams && r->vs_one > 0) printf(", \"vs_one_stream\": %.4f", r->vs_one);
            if (r->mtp == 2) {
                const es_spec_stats *g = &r->spec;
                printf(", \"mtp\": true, \"vs_greedy\": %.4f, \"mtp_drafted\": %lld, \"mtp_accepted\": %lld, "
                       "\"mtp_acceptance\": %.4f, \"mtp_tokens_per_pass\": %.4f, \"mtp_gated_passes\": %lld",
                       r->vs_one, (long long)g->drafted, (long long)g->accepted,
                       g->drafted ? (double)g->accepted / g->drafted : 0.0,
                       g->forwards ? (double)g->tokens / g->forwards : 0.0, (long long)g->gated);
            }
            if (r->n_gen && !r->n_streams) {
                printf(", \"weight_bytes_per_token\": %llu, \"kv_bytes_per_token\": %llu, "
                       "\"bandwidth_fraction\": %.4f",
                       (unsigned long long)r->tr.weights, (unsigned long long)r->tr.kv,
                       r->bw > 0 ? (double)r->tr.weights * r->mean / r->bw : 0.0);
            }
            printf("}%s\n", i + 1 < n_res ? "," : "");
        }
        printf("  ]\n}\n");
    } else {
        printf("model: %s (%.2f GiB file)\nkernels: %s | %s\nload: %.3f s | peak RSS %.2f GiB\n", model,
               file_bytes / 1073741824.0, es_model_simd(m), es_model_numa_summary(m), t_load, rss / 1073741824.0);
        printf("decode reads per token: %.3f GB of weights (attention %.3f, dense FFN %.3f, router %.3f, shared "
               "%.3f, routed experts %.3f, output %.3f, embedding row %.6f) + KV %zu bytes per context token (%s cache)\n",
               tr0.weights / 1e9, tr0.attention / 1e9, tr0.dense_ffn / 1e9, tr0.router / 1e9, tr0.shared / 1e9,
               tr0.routed / 1e9, tr0.output / 1e9, tr0.embedding / 1e9, kvb, es_kv_type_name(es_session_kv_type(s)));
        for (int ti = 0; ti < n_thr && !no_bw; ti++)
            if (bw_of[ti] > 0)
                printf("read bandwidth: %.1f GB/s with %d thread%s (%.0f MiB buffer, best of 8 passes, one and four streams)\n",
                       bw_of[ti] / 1e9, t_of[ti], t_of[ti] == 1 ? "" : "s", bwb / 1048576.0);
        printf("\n| threads | test | t/s | weights MB/token | GB/s | %% of read BW |\n"
               "| ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for (int i = 0; i < n_res; i++) {
            const result *r = &res[i];
            printf("| %d | %s | %.2f ± %.2f |", r->threads, r->name, r->mean, r->sd);
            if (r->mtp == 2) {
                const es_spec_stats *g = &r->spec;
                printf(" - | - | %.2fx greedy, %.1f%% of %lld drafts accepted, %.3f tokens/pass |\n", r->vs_one,
                       g->drafted ? 100.0 * g->accepted / g->drafted : 0.0, (long long)g->drafted,
                       g->forwards ? (double)g->tokens / g->forwards : 0.0);
            } else if (r->n_gen && !r->n_streams) {
                double gbs = r->tr.weights * r->mean / 1e9;
                printf(" %.1f | %.1f |", r->tr.weights / 1e6, gbs);
                if (r->bw > 0) printf(" %.0f%% |\n", 100.0 * gbs * 1e9 / r->bw);
                else printf(" - |\n");
            } else {
                printf(" - | - | - |\n");
            }
        }
        if (n_streams) {
            printf("\nstreams (S sessions decoding together, aggregate t/s; rounds interleave the stream counts):\n"
                   "\n| threads | test | median t/s | vs 1 stream |\n| ---: | ---: | ---: | ---: |\n");
            for (int i = 0; i < n_res; i++) {
                const result *r = &res[i];
                if (!r->n_streams) continue;
                printf("| %d | %s | %.2f |", r->threads, r->name, r->median);
                if (r->vs_one > 0) printf(" %.2fx |\n", r->vs_one);
                else printf(" - |\n");
            }
        }
    }
    rc = 0;
done:
    for (int i = 0; i < n_res; i++) free(res[i].ts);
    free(res);
    free(tok);
    free(logits);
    for (int i = 0; i < MAX_STREAMS; i++) {
        if (i) es_session_free(ss[i]);
        free(lgs[i]);
    }
    es_spec_free(spec);
    es_sampler_free(greedy);
    free(lg_prime);
    es_session_free(sm);
    es_session_free(s);
    es_model_free(m);
    return rc;
}
