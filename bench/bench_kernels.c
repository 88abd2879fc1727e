/* bench_kernels.c — kernel benchmark (not a timed test).  Prints:
 *  1. this machine's read bandwidth against buffer size (one thread), which
 *     shows where the caches stop helping, and a STREAM-like read of a large
 *     buffer with one thread and with all threads;
 *  2. per weight format and SIMD path, the matrix-vector throughput in GB/s
 *     of weight bytes read, on a matrix larger than the last-level cache,
 *     with one thread (and all threads), its share of the one-thread read
 *     bandwidth and its speedup over the generic path;
 *  3. the prefill product (matmul slot) of a batch of tokens on a smaller
 *     matrix, as GMAC/s and speedup over one matvec per token.
 *
 * Usage: bench_kernels [--mb N] [--n COLS] [--rounds N] [--reps N] [--threads N]
 *                      [--formats F32,Q4_0,...] [--paths generic,avx2,...]
 *                      [--mm-mb N] [--mm-tok N] [--no-sweep]
 * Weights are rows of COLS elements (default 4096) filling N MiB (default
 * 1024).  Rows are quantised once from random data and then replicated, so
 * filling a large matrix is fast and every format holds valid blocks.
 *
 * The matvec figures of a format come from --rounds rounds (default 5), each
 * timing the read bandwidth and every path once, one after another (the
 * order reversed every other round), so that all of a round's figures see
 * the same machine.  Each ratio (share of the bandwidth, speedup over
 * generic) is taken within a round; the table gives the medians over the
 * rounds and the range of the ratios, so a single disturbed sample neither
 * decides nor hides a figure.  Generic is compute-bound and times only the
 * first rows (at least 64 MiB, about half a second's worth).  The other
 * figures (sweep, matmul) are the best of --reps runs (default 3).  Figures
 * of one thread (bandwidth and matvec) are timed by the thread's CPU time
 * (cpu_now), the rest by the wall clock. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "edgeseek.h"
#include "kernels.h"
#include "quant.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The CPU time of the calling thread: one-thread figures are timed with it,
 * so time the thread spends descheduled (other work on a busy machine) does
 * not count against the kernel; on an idle machine it equals wall time. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* ---- memory read bandwidth ------------------------------------------------ */

/* Sum of 64-bit words with eight independent chains, so the loop is limited
 * by the loads, not by add latency.  With AVX2 where the CPU has it (wide
 * loads make the cache levels visible); the result is kept so the reads
 * cannot be dropped. */
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2"))) static uint64_t read_words_avx2(const uint64_t *p, size_t n) {
    uint64_t s[8] = {0};
    for (size_t i = 0; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) s[k] += p[i + k];
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}
#endif
static uint64_t read_words_plain(const uint64_t *p, size_t n) {
    uint64_t s[8] = {0};
    for (size_t i = 0; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) s[k] += p[i + k];
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}
static uint64_t read_words(const uint64_t *p, size_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (__builtin_cpu_supports("avx2")) return read_words_avx2(p, n);
#endif
    return read_words_plain(p, n);
}

/* The same reads as four interleaved streams (quarters of the buffer, a
 * cache line from each in turn), the pattern of a 4-row matvec pass: a core
 * often reads several streams faster than one. */
static uint64_t read_words4(const uint64_t *p, size_t n) {
    size_t q = n / 4 / 8 * 8;
    uint64_t s = 0;
    for (size_t i = 0; i < q; i += 64) {
        size_t m = q - i < 64 ? q - i : 64;
        for (int k = 0; k < 4; k++) s += read_words(p + (size_t)k * q + i, m);
    }
    return s;
}

static volatile uint64_t sink;

/* GB/s reading `bytes` of buf once per pass, best of `reps` timed rounds of
 * `passes` passes */
static double read_bw(const uint8_t *buf, size_t bytes, int passes, int reps, int streams) {
    uint64_t (*rd)(const uint64_t *, size_t) = streams == 4 ? read_words4 : read_words;
    double best = 0;
    sink += rd((const uint64_t *)buf, bytes / 8); /* warm */
    for (int r = 0; r < reps; r++) {
        double t0 = cpu_now();
        for (int p = 0; p < passes; p++) sink += rd((const uint64_t *)buf, bytes / 8);
        double gbs = (double)bytes * passes / (cpu_now() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    return best;
}

/* ---- parallel runs: plain pthreads, a fresh set per timed run -------------- */

typedef struct job {
    int kind; /* 0 = read, 1 = matvec */
    const uint8_t *buf;
    size_t bytes;
    es_matvec_fn fn;
    size_t rb;
    int64_t n;
    const void *act;
    float *y;
    int64_t r0, r1;
} job;

static void *job_run(void *arg) {
    job *j = arg;
    if (j->kind == 0) sink += read_words((const uint64_t *)j->buf, j->bytes / 8);
    else j->fn(j->buf, j->rb, j->n, j->act, j->y, j->r0, j->r1);
    return NULL;
}

/* Runs proto split over `threads` threads (the caller takes part 0); the
 * wall time of the whole (one thread: its CPU time, see cpu_now). */
static double run_split(const job *proto, int threads, int64_t items) {
    pthread_t th[256];
    job jobs[256];
    if (threads > 256) threads = 256;
    for (int i = 0; i < threads; i++) {
        jobs[i] = *proto;
        int64_t a = items * i / threads, b = items * (i + 1) / threads;
        if (proto->kind == 0) {
            jobs[i].buf = proto->buf + (size_t)a * 64;
            jobs[i].bytes = (size_t)(b - a) * 64;
        } else {
            jobs[i].r0 = a;
            jobs[i].r1 = b;
        }
    }
    double (*clock)(void) = threads == 1 ? cpu_now : now;
    double t0 = clock();
    for (int i = 1; i < threads; i++) pthread_create(&th[i], NULL, job_run, &jobs[i]);
    job_run(&jobs[0]);
    for (int i = 1; i < threads; i++) pthread_join(th[i], NULL);
    return clock() - t0;
}

/* ---- options -------------------------------------------------------------- */

typedef struct opts {
    size_t mb;
    int64_t n;
    int reps, rounds, threads, sweep;
    size_t mm_mb;
    int mm_tok;
    char formats[256], paths[128];
} opts;

static int in_list(const char *list, const char *name) {
    size_t l = strlen(name);
    for (const char *p = list; (p = strstr(p, name)); p += l)
        if ((p == list || p[-1] == ',') && (p[l] == 0 || p[l] == ',')) return 1;
    return 0;
}

static void usage(void) {
    fprintf(stderr, "usage: bench_kernels [--mb N] [--n COLS] [--rounds N] [--reps N] [--threads N]\n"
                    "                     [--formats F32,Q4_0,...] [--paths generic,avx2,avx512,amx,neon]\n"
                    "                     [--mm-mb N] [--mm-tok N] [--no-sweep]\n");
    exit(2);
}

/* ---- weight matrices -------------------------------------------------------- */

/* A block of a format edgeseek reads but does not write (no quant_row: the
 * IQ codebook formats, TQ1_0, TQ2_0): random bytes, drawn again until the
 * block decodes to finite values (any bit pattern is a valid block but for
 * an fp16 scale of inf or NaN). */
static void random_block(uint32_t t, uint8_t *blk) {
    const es_type_traits *tr = es_type_info(t);
    float v[256];
    for (int ok = 0; !ok;) {
        for (uint32_t i = 0; i < tr->type_size; i++) blk[i] = (uint8_t)(frand() * 128.0f + 128.0f);
        es_kernels_generic.dequant_row[t](blk, v, tr->block_size);
        ok = 1;
        for (uint32_t i = 0; i < tr->block_size; i++) ok &= v[i] - v[i] == 0.0f;
    }
}

/* Fills `bytes` of buf with rows of n elements of type t: a few rows
 * quantised from random data by the generic quantiser (random blocks for the
 * formats without one), then copied.  The number of whole rows written. */
static int64_t fill_rows(uint8_t *buf, size_t bytes, uint32_t t, int64_t n) {
    size_t rb = es_row_bytes(t, n);
    int64_t rows = (int64_t)(bytes / rb), tmpl = rows < 64 ? rows : 64;
    float *x = malloc(sizeof(float) * (size_t)n);
    for (int64_t r = 0; r < tmpl; r++) {
        for (int64_t i = 0; i < n; i++) x[i] = frand();
        if (es_kernels_generic.quant_row[t]) es_kernels_generic.quant_row[t](x, buf + (size_t)r * rb, n);
        else
            for (int64_t b = 0; b < n / es_type_info(t)->block_size; b++)
                random_block(t, buf + (size_t)r * rb + (size_t)b * es_type_info(t)->type_size);
    }
    for (int64_t r = tmpl; r < rows; r += tmpl) {
        int64_t c = rows - r < tmpl ? rows - r : tmpl;
        memcpy(buf + (size_t)r * rb, buf, (size_t)c * rb);
    }
    free(x);
    return rows;
}

/* FP8_B128 (quant.h): random e4m3 bytes (every code, as a checkpoint's
 * weights of mixed magnitude), a block scale per 128 x 128; the rows written,
 * a multiple of 128, or 0 when the scales cannot be allocated. */
static int64_t fill_fp8(es_fp8_mat *m, uint8_t *buf, size_t bytes, int64_t n) {
    int64_t rows = (int64_t)(bytes / (size_t)n) / ES_FP8_BLOCK * ES_FP8_BLOCK;
    int64_t cols = (n + ES_FP8_BLOCK - 1) / ES_FP8_BLOCK, nsc = rows / ES_FP8_BLOCK * cols;
    float *sc = malloc(sizeof(float) * (size_t)(nsc ? nsc : 1));
    if (!sc) return 0;
    for (int64_t i = 0; i < nsc; i++) sc[i] = (1.5f + frand()) / 448.0f;
    for (size_t i = 0; i + 8 <= (size_t)rows * (size_t)n; i += 8) {
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
        memcpy(buf + i, &rng, 8);
    }
    m->q = buf, m->scale = sc, m->scale_cols = cols;
    return rows;
}

typedef struct result {
    double mm, mm_mv;   /* matmul GMAC/s; one matvec per token, GMAC/s */
} result;

/* Matrix-matrix figures of type t on path K (generic has none). */
static result bench_type(const opts *o, const es_kernels *K, uint32_t t, uint8_t *w, int64_t mm_rows, int is_generic) {
    result res = {0, 0};
    es_matvec_plan plan = es_plan_matvec(K, t);
    if (!plan.fn) return res;
    int64_t n = o->n;
    size_t rb = es_row_bytes(t, n);
    float *x = malloc(sizeof(float) * (size_t)n * (size_t)o->mm_tok);
    for (int64_t i = 0; i < n * o->mm_tok; i++) x[i] = frand();
    size_t ab = es_act_bytes(plan.act_type, n);
    uint8_t *act = malloc(ab * (size_t)o->mm_tok);
    for (int k = 0; k < o->mm_tok; k++) es_prepare_act(K, plan.act_type, x + (size_t)k * (size_t)n, act + (size_t)k * ab, n);
    float *y = malloc(sizeof(float) * (size_t)(mm_rows * o->mm_tok > 1 ? mm_rows * o->mm_tok : 1));
    int reps = o->reps;

    /* prefill: mm_tok tokens at once, one thread (generic has no matmul) */
    if (mm_rows > 0 && !is_generic) {
        double best = 1e30;
        for (int r = 0; r < reps; r++) {
            double t0 = now();
            es_matmul(K, t, w, rb, n, act, ab, o->mm_tok, y, mm_rows, 0, mm_rows);
            double dt = now() - t0;
            if (dt < best) best = dt;
        }
        res.mm = (double)mm_rows * (double)n * o->mm_tok / best / 1e9;
        best = 1e30;
        for (int r = 0; r < reps; r++) {
            double t0 = now();
            for (int k = 0; k < o->mm_tok; k++) plan.fn(w, rb, n, act + (size_t)k * ab, y + k * mm_rows, 0, mm_rows);
            double dt = now() - t0;
            if (dt < best) best = dt;
        }
        res.mm_mv = (double)mm_rows * (double)n * o->mm_tok / best / 1e9;
    }
    free(x); free(act); free(y);
    return res;
}

/* ---- matvec rounds ------------------------------------------------------------ */

#define MAX_ROUNDS 64
#define MAX_PATHS 4

/* One path's matvec over a format: its kernel, activation and figures. */
typedef struct mv_path {
    const char *name;
    const es_kernels *K;
    int is_generic;
    es_matvec_plan plan;
    uint8_t *act;
    float *y;
    int64_t rows;                           /* rows timed (generic: a prefix) */
    double g1[MAX_ROUNDS], gn[MAX_ROUNDS];  /* GB/s per round, one and all threads */
} mv_path;

/* Takes path p's table and prepares its kernel and activation for type t
 * (rows of n); 0 where the path has no matvec for t. */
static int mv_path_init(mv_path *p, const char *name, uint32_t t, int64_t n, int64_t rows, const float *x) {
    char err[256];
    memset(p, 0, sizeof *p);
    p->K = es_kernels_for(name, err, sizeof err);
    if (!p->K) return 0;
    p->name = name;
    p->is_generic = !strcmp(name, "generic");
    p->plan = es_plan_matvec(p->K, t);
    if (!p->plan.fn) return 0;
    p->act = malloc(es_act_bytes(p->plan.act_type, n));
    p->y = malloc(sizeof(float) * (size_t)rows);
    es_prepare_act(p->K, p->plan.act_type, x, p->act, n);
    p->rows = rows;
    return 1;
}

static job mv_job(const mv_path *p, const uint8_t *w, size_t rb, int64_t n) {
    job j = {.kind = 1, .buf = w, .fn = p->plan.fn, .rb = rb, .n = n, .act = p->act, .y = p->y};
    return j;
}

/* generic is compute-bound (far below memory speed): it times about half a
 * second's worth of rows, at least 64 MiB where there are */
static int64_t generic_rows(const mv_path *p, const uint8_t *w, size_t rb, int64_t n, int64_t rows) {
    job proto = mv_job(p, w, rb, n);
    int64_t probe = (int64_t)((4u << 20) / rb) + 1;
    probe = probe < rows ? probe : rows;
    double dt = run_split(&proto, 1, probe);
    int64_t want = (int64_t)((double)probe * 0.5 / (dt > 1e-6 ? dt : 1e-6));
    int64_t floor64 = (int64_t)((64u << 20) / rb);
    if (want < floor64) want = floor64;
    return want < rows ? want : rows;
}

/* One round's matvec figures of path p, GB/s of weight bytes */
static void mv_round(mv_path *p, const uint8_t *w, size_t rb, int64_t n, int threads, int round) {
    job proto = mv_job(p, w, rb, n);
    double bytes = (double)p->rows * (double)rb;
    p->g1[round] = bytes / run_split(&proto, 1, p->rows) / 1e9;
    p->gn[round] = threads > 1 ? bytes / run_split(&proto, threads, p->rows) / 1e9 : 0;
}

/* One round's one-thread read bandwidth: the better of one stream and four
 * interleaved streams (the pattern of a 4-row matvec pass), one pass each */
static double bw_round(const uint8_t *buf, size_t bytes) {
    double b1 = read_bw(buf, bytes, 1, 1, 1), b4 = read_bw(buf, bytes, 1, 1, 4);
    return b1 > b4 ? b1 : b4;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* median, smallest and largest of v[0..k) */
typedef struct stat3 {
    double med, lo, hi;
} stat3;
static stat3 stats(const double *v, int k) {
    double s[MAX_ROUNDS];
    memcpy(s, v, sizeof(double) * (size_t)k);
    qsort(s, (size_t)k, sizeof(double), cmp_double);
    stat3 r = {k % 2 ? s[k / 2] : 0.5 * (s[k / 2 - 1] + s[k / 2]), s[0], s[k - 1]};
    return r;
}

/* element-wise a[i] / b[i] * scale into out */
static void ratios(const double *a, const double *b, double scale, int k, double *out) {
    for (int i = 0; i < k; i++) out[i] = b[i] > 0 ? scale * a[i] / b[i] : 0;
}

int main(int argc, char **argv) {
    if (es_std_fds_guard() != 0) return 1; /* before anything is opened */
    opts o = {.mb = 1024, .n = 4096, .reps = 3, .rounds = 5, .threads = 0, .sweep = 1, .mm_mb = 16, .mm_tok = 16};
    snprintf(o.formats, sizeof o.formats, "F32,F16,BF16,Q8_0,Q4_0,Q4_1,Q5_0,Q5_1,IQ4_NL,IQ4_XS,Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,"
             "IQ2_XXS,IQ2_XS,IQ2_S,IQ3_XXS,IQ3_S,IQ1_S,IQ1_M,TQ1_0,TQ2_0,FP8_B128");
    snprintf(o.paths, sizeof o.paths, "generic,avx2,avx512,amx,neon");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--no-sweep")) { o.sweep = 0; continue; }
        if (!v) usage();
        if (!strcmp(a, "--mb")) o.mb = strtoul(v, NULL, 10);
        else if (!strcmp(a, "--n")) o.n = strtoll(v, NULL, 10);
        else if (!strcmp(a, "--reps")) o.reps = atoi(v);
        else if (!strcmp(a, "--rounds")) o.rounds = atoi(v);
        else if (!strcmp(a, "--threads")) o.threads = atoi(v);
        else if (!strcmp(a, "--mm-mb")) o.mm_mb = strtoul(v, NULL, 10);
        else if (!strcmp(a, "--mm-tok")) o.mm_tok = atoi(v);
        else if (!strcmp(a, "--formats")) snprintf(o.formats, sizeof o.formats, "%s", v);
        else if (!strcmp(a, "--paths")) snprintf(o.paths, sizeof o.paths, "%s", v);
        else usage();
        i++;
    }
    if (o.mb < 1 || o.n < 256 || o.n % 256 || o.reps < 1 || o.rounds < 1 || o.rounds > MAX_ROUNDS || o.mm_tok < 1) {
        fprintf(stderr, "need --mb >= 1, --n a multiple of 256, --reps >= 1, --rounds 1..%d, --mm-tok >= 1\n",
                MAX_ROUNDS);
        return 2;
    }
    if (o.threads <= 0) o.threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (o.threads < 1) o.threads = 1;

    size_t bytes = o.mb << 20;
    uint8_t *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        fprintf(stderr, "cannot map %zu MiB: %s\n", o.mb, strerror(errno));
        return 1;
    }
    memset(buf, 1, bytes); /* fault every page in */
    double la[3] = {0};
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf %lf %lf", &la[0], &la[1], &la[2]) != 3) la[0] = -1;
        fclose(f);
    }
    printf("edgeseek kernel benchmark: %zu MiB of weights per format, rows of %lld; matvec: medians of %d rounds, "
           "other figures: best of %d runs\n", o.mb, (long long)o.n, o.rounds, o.reps);
    printf("CPU features: %s; %d threads; load average %.2f (other work running skews the figures)\n",
           es_cpu_features(), o.threads, la[0]);

    /* 1. read bandwidth against size, then the large buffer */
    if (o.sweep) {
        printf("\nread bandwidth, one thread, against buffer size:\n");
        for (size_t kb = 256; kb <= (o.mb << 10); kb *= 4) {
            size_t sz = kb << 10;
            int passes = (int)((512u << 20) / sz);
            if (passes < 1) passes = 1;
            printf("  %8zu KiB  %6.1f GB/s\n", kb, read_bw(buf, sz, passes, 3, 1));
            fflush(stdout);
        }
    }
    double bw1s = read_bw(buf, bytes, 1, o.reps, 1), bw4s = read_bw(buf, bytes, 1, o.reps, 4), bwn = 0;
    double bw1 = bw1s > bw4s ? bw1s : bw4s; /* the reference: the better of the two */
    job rp = {.kind = 0, .buf = buf};
    for (int r = 0; r < o.reps; r++) {
        double g = (double)bytes / run_split(&rp, o.threads, (int64_t)(bytes / 64)) / 1e9;
        if (g > bwn) bwn = g;
    }
    printf("\nSTREAM-like read of %zu MiB: one thread %.1f GB/s (one stream %.1f, four streams %.1f), "
           "%d threads %.1f GB/s\n", o.mb, bw1, bw1s, bw4s, o.threads, bwn);

    /* 2 and 3. per format and path */
    printf("\nmatvec, one thread (timed by its CPU time): GB/s of weight bytes read; its share of the one-thread read bandwidth and its\n"
           "speedup over generic, each taken within a round: medians over %d rounds [smallest-largest]\n"
           "all threads: GB/s, median.  matmul: %d tokens on a %zu MiB matrix, one thread, GMAC/s (speedup over\n"
           "one matvec per token), best of %d\n\n",
           o.rounds, o.mm_tok, o.mm_mb, o.reps);
    printf("%-6s %-8s %-5s %7s %17s %21s %7s %17s\n", "format", "path", "act", "GB/s", "% of read bw",
           "x generic", "all thr", "matmul");
    static const uint32_t types[] = {ES_TYPE_F32,  ES_TYPE_F16,  ES_TYPE_BF16,   ES_TYPE_Q8_0,   ES_TYPE_Q4_0,
                                     ES_TYPE_Q4_1, ES_TYPE_Q5_0, ES_TYPE_Q5_1,   ES_TYPE_IQ4_NL, ES_TYPE_IQ4_XS,
                                     ES_TYPE_Q2_K, ES_TYPE_Q3_K, ES_TYPE_Q4_K, ES_TYPE_Q5_K,   ES_TYPE_Q6_K,
                                     ES_TYPE_IQ2_XXS, ES_TYPE_IQ2_XS, ES_TYPE_IQ2_S, ES_TYPE_IQ3_XXS, ES_TYPE_IQ3_S,
                                     ES_TYPE_IQ1_S, ES_TYPE_IQ1_M, ES_TYPE_TQ1_0, ES_TYPE_TQ2_0, ES_TYPE_FP8_B128};
    static const char *paths[] = {"generic", "avx2", "avx512", "amx", "neon"};
    float *x = malloc(sizeof(float) * (size_t)o.n);
    for (int64_t i = 0; i < o.n; i++) x[i] = frand();
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        uint32_t t = types[ti];
        const es_type_traits *tr = es_type_info(t);
        if (!in_list(o.formats, tr->name)) continue;
        if (!es_kernels_generic.matvec[t] || o.n % tr->block_size) continue;
        es_fp8_mat fp8 = {0};
        int64_t rows = t == ES_TYPE_FP8_B128 ? fill_fp8(&fp8, buf, bytes, o.n) : fill_rows(buf, bytes, t, o.n);
        if (rows < 1) continue;
        size_t rb = es_row_bytes(t, o.n);
        /* FP8_B128's kernels take the description of the bytes (quant.h) */
        uint8_t *w = t == ES_TYPE_FP8_B128 ? (uint8_t *)&fp8 : buf;
        mv_path mp[MAX_PATHS];
        int np = 0, gi = -1;
        for (size_t pi = 0; pi < sizeof paths / sizeof paths[0]; pi++) {
            if (!in_list(o.paths, paths[pi]) || !es_simd_supported(paths[pi])) continue;
            if (!mv_path_init(&mp[np], paths[pi], t, o.n, rows, x)) continue;
            if (mp[np].is_generic) {
                mp[np].rows = generic_rows(&mp[np], w, rb, o.n, rows);
                gi = np;
            }
            np++;
        }
        /* the rounds: the read bandwidth and each path once, in turn */
        double bw[MAX_ROUNDS];
        for (int k = 0; k < o.rounds; k++) {
            if (k % 2 == 0) bw[k] = bw_round(buf, bytes);
            for (int j = 0; j < np; j++) mv_round(&mp[k % 2 ? np - 1 - j : j], w, rb, o.n, o.threads, k);
            if (k % 2 == 1) bw[k] = bw_round(buf, bytes);
        }
        stat3 sb = stats(bw, o.rounds);
        printf("%-6s read bandwidth, one thread: %.1f GB/s [%.1f-%.1f]\n", tr->name, sb.med, sb.lo, sb.hi);
        int64_t mm_rows = (int64_t)((o.mm_mb << 20) / rb);
        if (mm_rows > rows) mm_rows = rows;
        for (int j = 0; j < np; j++) {
            mv_path *p = &mp[j];
            double rt[MAX_ROUNDS];
            char share[40], speed[40], mm[40];
            stat3 g = stats(p->g1, o.rounds), gn = stats(p->gn, o.rounds);
            ratios(p->g1, bw, 100, o.rounds, rt);
            stat3 sh = stats(rt, o.rounds);
            snprintf(share, sizeof share, "%3.0f%% [%3.0f-%3.0f]", sh.med, sh.lo, sh.hi);
            if (gi >= 0 && j != gi) {
                ratios(p->g1, mp[gi].g1, 1, o.rounds, rt);
                stat3 sp = stats(rt, o.rounds);
                snprintf(speed, sizeof speed, "%5.1fx [%4.1f-%4.1f]", sp.med, sp.lo, sp.hi);
            } else {
                snprintf(speed, sizeof speed, "-");
            }
            result r = bench_type(&o, p->K, t, w, mm_rows, p->is_generic);
            if (p->is_generic || mm_rows < 1) snprintf(mm, sizeof mm, "-");
            else snprintf(mm, sizeof mm, "%7.2f (%4.1fx)", r.mm, r.mm / r.mm_mv);
            printf("%-6s %-8s %-5s %7.2f %17s %21s %7.2f %17s\n", tr->name, p->name,
                   es_type_info(p->plan.act_type)->name, g.med, share, speed, gn.med, mm);
            fflush(stdout);
            free(p->act);
            free(p->y);
        }
        free((void *)fp8.scale);
    }
    free(x);
    munmap(buf, bytes);
    return 0;
}
