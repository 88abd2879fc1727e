/* bench_gemm.c — the prefill product (matmul slot) on its own (not a timed
 * test).  Prints:
 *  1. GMAC/s of the active path's matmul against the token count T, one
 *     thread, on a 2048 x 2048 matrix (4.5 / 8.5 bits a weight: it stays in
 *     L2/L3, as a layer's matrices do while a batch passes);
 *  2. the dense and shared weight shapes of DeepSeek-V2-Lite (attention
 *     projections, shared experts, the dense layer's FFN) at T = 64 and 512,
 *     one thread and --threads threads: our matmul (activations quantised
 *     as the forward pass does, included in the time) and, in the build
 *     made with `make OPENBLAS=1` (bench_gemm_openblas), each thread
 *     dequantising tiles of its rows to fp32 and multiplying them with
 *     OpenBLAS's cblas_sgemm (one OpenBLAS thread per calling thread).
 * Rows are split between threads in multiples of 16, as the forward pass
 * does.  Each figure is the best of --reps runs, timed in CPU time with one
 * thread and in wall time with several.
 *
 * Usage: bench_gemm [--threads N] [--reps N] [--formats Q4_0,Q8_0]
 *                   [--tok 1,2,4,...] [--no-sweep] [--no-shapes] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgeseek.h"
#include "kernels.h"

#ifdef ES_OPENBLAS
#include <cblas.h>
void openblas_set_num_threads(int n);
char *openblas_get_corename(void);
#define BLAS_TILE_ROWS 256 /* rows dequantised at once: 2 MiB of fp32 at n = 2048 */
#endif

/* one-thread figures use this thread's CPU time (a shared machine's other
 * load then costs little accuracy), several threads wall time */
static double now(int threads) {
    struct timespec ts;
    clock_gettime(threads == 1 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

typedef struct problem {
    uint32_t type;
    int64_t rows, n, nt;
    size_t rb, ab;
    uint32_t act_type;
    uint8_t *w;     /* rows x rb */
    float *x;       /* nt x n */
    uint8_t *act;   /* nt x ab, x as the kernel wants it */
    float *y;       /* nt x rows */
} problem;

static problem make_problem(uint32_t type, int64_t rows, int64_t n, int64_t nt) {
    problem p = {.type = type, .rows = rows, .n = n, .nt = nt};
    p.rb = es_row_bytes(type, n);
    p.act_type = es_plan_matvec(es_kernels_best(), type).act_type;
    p.ab = es_act_bytes(p.act_type, n);
    p.w = malloc(p.rb * (size_t)rows);
    p.x = malloc(sizeof(float) * (size_t)(n * nt));
    p.act = malloc(p.ab * (size_t)nt);
    p.y = malloc(sizeof(float) * (size_t)(rows * nt));
    if (!p.w || !p.x || !p.act || !p.y) {
        fprintf(stderr, "bench_gemm: out of memory\n");
        exit(1);
    }
    float *tmp = malloc(sizeof(float) * (size_t)n);
    for (int64_t r = 0; r < rows && r < 64; r++) {
        for (int64_t i = 0; i < n; i++) tmp[i] = frand();
        es_kernels_generic.quant_row[type](tmp, p.w + (size_t)r * p.rb, n);
    }
    for (int64_t r = 64; r < rows; r++) memcpy(p.w + (size_t)r * p.rb, p.w + (size_t)(r % 64) * p.rb, p.rb);
    for (int64_t i = 0; i < n * nt; i++) p.x[i] = frand();
    free(tmp);
    return p;
}

static void free_problem(problem *p) {
    free(p->w); free(p->x); free(p->act); free(p->y);
}

/* ---- threads: rows [r0, r1) in multiples of 16 each ---------------------- */

typedef struct worker {
    const problem *p;
    int method; /* 0: our matmul; 1: dequantised tiles + sgemm */
    int64_t r0, r1;
} worker;

static void *work(void *arg) {
    const worker *wk = arg;
    const problem *p = wk->p;
    if (wk->method == 0) {
        es_matmul(es_kernels_best(), p->type, p->w, p->rb, p->n, p->act, p->ab, p->nt, p->y, p->rows, wk->r0, wk->r1);
        return NULL;
    }
#ifdef ES_OPENBLAS
    float *tile = malloc(sizeof(float) * BLAS_TILE_ROWS * (size_t)p->n);
    for (int64_t r = wk->r0; r < wk->r1; r += BLAS_TILE_ROWS) {
        int64_t m = wk->r1 - r < BLAS_TILE_ROWS ? wk->r1 - r : BLAS_TILE_ROWS;
        for (int64_t k = 0; k < m; k++) es_dequant_row(es_kernels_best(), p->type, p->w + (size_t)(r + k) * p->rb, tile + k * p->n, p->n);
        /* Y[t][r..r+m) = X[t] . tile[k] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)p->nt, (int)m, (int)p->n, 1.0f, p->x, (int)p->n,
                    tile, (int)p->n, 0.0f, p->y + r, (int)p->rows);
    }
    free(tile);
#endif
    return NULL;
}

/* seconds for one product with `threads` threads */
static double run_once(problem *p, int method, int threads) {
    double t0 = now(threads);
    if (method == 0) /* the activations, quantised once per product as the forward pass does */
        for (int64_t t = 0; t < p->nt; t++) es_prepare_act(es_kernels_best(), p->act_type, p->x + t * p->n, p->act + (size_t)t * p->ab, p->n);
    pthread_t th[64];
    worker wk[64];
    int64_t per = (p->rows + threads - 1) / threads;
    per = (per + 15) / 16 * 16;
    int started = 0;
    for (int i = 0; i < threads; i++) {
        int64_t r0 = (int64_t)i * per, r1 = r0 + per < p->rows ? r0 + per : p->rows;
        if (r0 >= r1) break;
        wk[i] = (worker){p, method, r0, r1};
        if (threads == 1) work(&wk[i]);
        else if (pthread_create(&th[i], NULL, work, &wk[i]) == 0) started++;
        else work(&wk[i]);
    }
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    return now(threads) - t0;
}

static double gmacs(problem *p, int method, int threads, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double dt = run_once(p, method, threads);
        if (dt < best) best = dt;
    }
    return (double)p->rows * (double)p->n * (double)p->nt / best / 1e9;
}

/* ---- options ---------------------------------------------------------------- */

typedef struct opts {
    int threads, reps, sweep, shapes;
    char formats[128], toks[128];
} opts;

static void usage(void) {
    fprintf(stderr, "usage: bench_gemm [--threads N] [--reps N] [--formats Q4_0,Q8_0] [--tok 1,2,4,...]\n"
                    "                  [--no-sweep] [--no-shapes]\n");
    exit(2);
}

static uint32_t type_by_name(const char *name) {
    for (uint32_t t = 0; t < ES_TYPE_COUNT; t++)
        if (es_type_info(t) && es_type_info(t)->name && strcmp(es_type_info(t)->name, name) == 0) return t;
    fprintf(stderr, "bench_gemm: unknown format '%s'\n", name);
    exit(2);
}

int main(int argc, char **argv) {
    if (es_std_fds_guard() != 0) return 1; /* before anything is opened */
    opts o = {.threads = 2, .reps = 3, .sweep = 1, .shapes = 1};
    snprintf(o.formats, sizeof o.formats, "Q4_0,Q8_0");
    snprintf(o.toks, sizeof o.toks, "1,2,3,4,5,6,7,8,9,12,16,24,32,64");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--threads") && i + 1 < argc) o.threads = atoi(argv[++i]);
        else if (!strcmp(a, "--reps") && i + 1 < argc) o.reps = atoi(argv[++i]);
        else if (!strcmp(a, "--formats") && i + 1 < argc) snprintf(o.formats, sizeof o.formats, "%s", argv[++i]);
        else if (!strcmp(a, "--tok") && i + 1 < argc) snprintf(o.toks, sizeof o.toks, "%s", argv[++i]);
        else if (!strcmp(a, "--no-sweep")) o.sweep = 0;
        else if (!strcmp(a, "--no-shapes")) o.shapes = 0;
        else usage();
    }
    if (o.threads < 1 || o.threads > 64 || o.reps < 1) usage();
    printf("SIMD path: %s (%s)\n", es_simd_name(), es_cpu_features());
#ifdef ES_OPENBLAS
    /* OpenBLAS falls back to a generic core (Prescott) on a CPU it does not
     * know: OPENBLAS_CORETYPE=SkylakeX (or Haswell) names one */
    printf("OpenBLAS core: %s\n", openblas_get_corename());
#endif

    char fl[128];
    snprintf(fl, sizeof fl, "%s", o.formats);
    for (char *save = NULL, *f = strtok_r(fl, ",", &save); f; f = strtok_r(NULL, ",", &save)) {
        uint32_t type = type_by_name(f);
        if (!es_kernels_best()->matmul[type]) printf("\n%s: the best path has no matmul slot (one matvec per token)\n", f);
        if (o.sweep) {
            printf("\n%s matmul, 2048 x 2048, one thread: GMAC/s against T\n  T ", f);
            char tl[128];
            snprintf(tl, sizeof tl, "%s", o.toks);
            int64_t ts[32];
            int nts = 0;
            for (char *s2 = NULL, *t = strtok_r(tl, ",", &s2); t && nts < 32; t = strtok_r(NULL, ",", &s2))
                if (atoi(t) > 0) ts[nts++] = atoi(t);
            for (int k = 0; k < nts; k++) printf("%7lld", (long long)ts[k]);
            printf("\n    ");
            for (int k = 0; k < nts; k++) {
                problem p = make_problem(type, 2048, 2048, ts[k]);
                /* at least ~0.1 s of work per figure on small T */
                int reps = o.reps * (ts[k] < 8 ? 4 : 1);
                printf("%7.1f", gmacs(&p, 0, 1, reps));
                fflush(stdout);
                free_problem(&p);
            }
            printf("\n");
        }
        if (!o.shapes) continue;
        static const struct {
            const char *what;
            int64_t rows, n;
        } shapes[] = {
            {"attn q (wq)", 3072, 2048},       {"attn kv_a (wkv_a)", 576, 2048},
            {"attn kv_b (wkv_b)", 4096, 512},  {"attn out (wo)", 2048, 2048},
            {"shared gate/up", 2816, 2048},    {"shared down", 2048, 2816},
            {"dense gate/up", 10944, 2048},    {"dense down", 2048, 10944},
            {"expert gate/up", 1408, 2048},
        };
        static const int64_t tok[] = {64, 512};
        printf("\n%s, V2-Lite shapes (rows x n), GMAC/s: ours", f);
#ifdef ES_OPENBLAS
        printf(" | dequantised %d-row tiles + OpenBLAS sgemm", BLAS_TILE_ROWS);
#endif
        printf("\n%-20s %5s %11s %5s %10s %10s", "shape", "T", "rows x n", "", "ours 1T", "ours NT");
#ifdef ES_OPENBLAS
        printf(" %10s %10s", "blas 1T", "blas NT");
        openblas_set_num_threads(1);
#endif
        printf("   (N = %d)\n", o.threads);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (size_t k = 0; k < sizeof tok / sizeof tok[0]; k++) {
                problem p = make_problem(type, shapes[s].rows, shapes[s].n, tok[k]);
                printf("%-20s %5lld %5lld x %-5lld %5s", shapes[s].what, (long long)tok[k], (long long)p.rows,
                       (long long)p.n, "");
                printf(" %10.1f %10.1f", gmacs(&p, 0, 1, o.reps), gmacs(&p, 0, o.threads, o.reps));
#ifdef ES_OPENBLAS
                printf(" %10.1f %10.1f", gmacs(&p, 1, 1, o.reps), gmacs(&p, 1, o.threads, o.reps));
#endif
                printf("\n");
                fflush(stdout);
                free_problem(&p);
            }
    }
    return 0;
}
