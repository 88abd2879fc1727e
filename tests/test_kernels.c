/* test_kernels.c — the compute kernels against plain references on awkward
 * sizes: every matvec slot against dequantise-then-dot in double, the
 * quantise→dequantise round-trip error per format, fp16/bf16 conversions
 * (exhaustive for fp16), row ranges (r0, r1) and the vector operations.
 * Also the thread pool: every item of a loop done exactly once. */
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "testutil.h"
#include "threadpool.h"

static uint64_t rng = 0x1234567;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static const uint32_t types[] = {ES_TYPE_F32,  ES_TYPE_F16,  ES_TYPE_BF16, ES_TYPE_Q8_0,  ES_TYPE_Q4_0,
                                 ES_TYPE_Q4_1, ES_TYPE_Q5_0, ES_TYPE_Q5_1, ES_TYPE_IQ4_NL};

/* Round-trip bound relative to the block's max |x|: Q8_0 half a step
 * (amax/127/2); Q4_0 a whole step amax/8, since its scale is max/-8 and a
 * value of the opposite sign near -max clamps from +8 to +7 (ggml's layout);
 * both plus fp16 rounding of the scale.  Exact for F32; half an ulp relative
 * to the value for F16 (2^-11) and BF16 (2^-8).  Q4_1/Q5_1: half a step
 * (hi - lo)/(2·nmax) <= amax/nmax, plus fp16 rounding of d and m
 * (tests/test_legacy.c derives 5·2^-11); Q5_0 as Q4_0 with 16 for 8.
 * IQ4_NL has no bound relative to amax alone (its scale is searched):
 * test_legacy.c holds each value to the bound its stored scale implies. */
static double roundtrip_bound(uint32_t t) {
    switch (t) {
    case ES_TYPE_F32: return 0;
    case ES_TYPE_F16: return 1.0 / 2048;
    case ES_TYPE_BF16: return 1.0 / 256;
    case ES_TYPE_Q8_0: return 0.5 / 127 + 1.0 / 1024;
    case ES_TYPE_Q4_0: return 1.0 / 8 + 1.0 / 1024;
    case ES_TYPE_Q4_1: return 1.0 / 15 + 5.0 / 2048;
    case ES_TYPE_Q5_1: return 1.0 / 31 + 5.0 / 2048;
    case ES_TYPE_Q5_0: return 1.0 / 16 + 1.0 / 1024;
    case ES_TYPE_IQ4_NL: return INFINITY;
    }
    return 0;
}

static void test_roundtrip(const es_kernels *K) {
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        uint32_t t = types[ti];
        int64_t n = 32 * 37;
        float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
        void *q = malloc(es_row_bytes(t, n));
        double worst = 0;
        for (int64_t i = 0; i < n; i++) x[i] = frand() * (i % 97 == 0 ? 20.0f : 1.0f);
        CHECK(es_quant_row(K, t, x, q, n) == 0 && es_dequant_row(K, t, q, y, n) == 0, "%s quant/dequant",
              es_type_info(t)->name);
        for (int64_t b = 0; b < n / 32; b++) {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
            for (int j = 0; j < 32; j++) {
                double rel = fabs((double)x[b * 32 + j] - y[b * 32 + j]) / (t <= ES_TYPE_F16 || t == ES_TYPE_BF16 ? fmax(fabs(x[b * 32 + j]), 1e-30) : amax);
                if (rel > worst) worst = rel;
            }
        }
        printf("%-5s round-trip worst relative error %.3g (bound %.3g)\n", es_type_info(t)->name, worst, roundtrip_bound(t));
        CHECK(worst <= roundtrip_bound(t), "%s round-trip error %.3g > %.3g", es_type_info(t)->name, worst, roundtrip_bound(t));
        free(x); free(y); free(q);
    }
    /* an all-zero block must not divide by zero */
    float z[32] = {0}, back[32];
    block_q4_0 b4; block_q8_0 b8;
    es_quant_row(K, ES_TYPE_Q4_0, z, &b4, 32);
    es_dequant_row(K, ES_TYPE_Q4_0, &b4, back, 32);
    int ok = 1;
    for (int i = 0; i < 32; i++) ok &= back[i] == 0;
    es_quant_row(K, ES_TYPE_Q8_0, z, &b8, 32);
    es_dequant_row(K, ES_TYPE_Q8_0, &b8, back, 32);
    for (int i = 0; i < 32; i++) ok &= back[i] == 0;
    CHECK(ok, "zero blocks round-trip to zero");
}

/* matvec of every type vs dequantise + double dot, sizes that cross block
 * and chunk boundaries, sub-ranges of rows; on the kernel table in use.
 *
 * Tolerance per row: fp32 accumulation, 1e-5 of Σ|w·x|; plus, where the
 * kernel multiplies with activations quantised to Q8_0, the exact bound of
 * that quantisation: each x is off by at most d/2 + 127·d·2^-11 (rounding
 * to the step d = amax/127 of its block, and the fp16 rounding of d), so
 * the dot is off by at most Σ_blocks (0.57·d_b) Σ_block |w|. */
static void test_matvec(const es_kernels *K) {
    static const int64_t rows_list[] = {1, 2, 3, 7, 31, 33, 255, 257};
    static const int64_t cols_list[] = {32, 64, 96, 224, 1024, 1056};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        uint32_t t = types[ti];
        es_matvec_plan plan = es_plan_matvec(K, t);
        double worst = 0; /* error / allowed */
        for (size_t ri = 0; ri < sizeof rows_list / sizeof rows_list[0]; ri++)
            for (size_t ci = 0; ci < sizeof cols_list / sizeof cols_list[0]; ci++) {
                int64_t rows = rows_list[ri], n = cols_list[ci];
                size_t rb = es_row_bytes(t, n);
                uint8_t *w = malloc(rb * (size_t)rows);
                float *src = malloc(sizeof(float) * (size_t)n), *deq = malloc(sizeof(float) * (size_t)n);
                float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)rows);
                for (int64_t i = 0; i < n; i++) x[i] = frand() * (i % 13 == 0 ? 4.0f : 1.0f);
                for (int64_t r = 0; r < rows; r++) {
                    for (int64_t i = 0; i < n; i++) src[i] = frand();
                    es_quant_row(K, t, src, w + (size_t)r * rb, n);
                }
                for (int64_t r = 0; r < rows; r++) y[r] = NAN;
                /* the middle third only, then the rest */
                int64_t a = rows / 3, b = 2 * rows / 3;
                es_matvec(K, t, w, rb, n, x, y, a, b);
                int untouched = 1;
                for (int64_t r = 0; r < a; r++) untouched &= isnan(y[r]);
                for (int64_t r = b; r < rows; r++) untouched &= isnan(y[r]);
                CHECK(untouched, "%s %s matvec wrote outside [r0, r1)", K->name, es_type_info(t)->name);
                es_matvec(K, t, w, rb, n, x, y, 0, a);
                es_matvec(K, t, w, rb, n, x, y, b, rows);
                for (int64_t r = 0; r < rows; r++) {
                    es_dequant_row(K, t, w + (size_t)r * rb, deq, n);
                    double ref = 0, mag = 0, qbound = 0;
                    for (int64_t blk = 0; blk < n / 32; blk++) {
                        double amax = 0, wsum = 0;
                        for (int j = 0; j < 32; j++) {
                            int64_t i = blk * 32 + j;
                            ref += (double)deq[i] * x[i];
                            mag += fabs((double)deq[i] * x[i]);
                            amax = fmax(amax, fabs(x[i]));
                            wsum += fabs(deq[i]);
                        }
                        qbound += 0.57 * amax / 127 * wsum;
                    }
                    double allowed = 1e-5 * mag + (plan.act_type == ES_TYPE_Q8_0 ? qbound : 0) + 1e-30;
                    double e = fabs(ref - y[r]) / allowed;
                    if (!(e <= worst)) worst = e;
                }
                free(w); free(src); free(deq); free(x); free(y);
            }
        printf("%-7s %-5s matvec (act %s) worst error %.3g of its bound\n", K->name, es_type_info(t)->name,
               es_type_info(plan.act_type)->name, worst);
        CHECK(worst <= 1.0, "%s %s matvec error %.3g x its bound", K->name, es_type_info(t)->name, worst);
    }
}

static void test_fp16(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = es_fp16_to_f32((es_fp16)h);
        if (isnan(f)) { bad += !isnan(es_fp16_to_f32(es_f32_to_fp16(f))); continue; }
        bad += es_f32_to_fp16(f) != h;
    }
    CHECK(bad == 0, "fp16 -> f32 -> fp16 not identity for %d values", bad);
    /* rounding: halfway cases to even, overflow to inf, underflow to zero */
    CHECK(es_f32_to_fp16(1.0f + 1.0f / 2048) == 0x3c00, "1 + 2^-11 rounds to even 1.0");
    CHECK(es_f32_to_fp16(1.0f + 3.0f / 2048) == 0x3c02, "1 + 3*2^-11 rounds up to even");
    CHECK(es_f32_to_fp16(70000.0f) == 0x7c00, "overflow to +inf");
    CHECK(es_f32_to_fp16(-1e-10f) == 0x8000, "underflow to -0");
    CHECK(es_f32_to_fp16(5.9604645e-8f) == 0x0001, "smallest subnormal");
    CHECK(es_bf16_to_f32(es_f32_to_bf16(1.00390625f)) == 1.0f, "bf16 ties to even");
    CHECK(es_f32_to_bf16(3.0f) == 0x4040, "bf16 of 3");
}

static void test_vector_ops(const es_kernels *K) {
    printf("%s vector ops\n", K->name);
    for (int64_t n = 1; n <= 77; n += 4) {
        float x[80], w[80], y[80], a[80];
        double ss = 0, dot = 0;
        for (int64_t i = 0; i < n; i++) { x[i] = frand(); w[i] = frand(); a[i] = frand(); ss += (double)x[i] * x[i]; dot += (double)x[i] * w[i]; }
        K->rmsnorm(y, x, w, n, 1e-6f);
        double inv = 1.0 / sqrt(ss / n + 1e-6), worst = 0;
        for (int64_t i = 0; i < n; i++) worst = fmax(worst, fabs(y[i] - x[i] * inv * w[i]));
        CHECK(worst < 1e-5, "%s rmsnorm n=%lld error %.3g", K->name, (long long)n, worst);
        CHECK(fabs(K->dot_f32(x, w, n) - dot) < 1e-5, "%s dot n=%lld", K->name, (long long)n);
        memcpy(y, a, sizeof(float) * (size_t)n);
        K->axpy_f32(y, 0.5f, x, n);
        worst = 0;
        for (int64_t i = 0; i < n; i++) worst = fmax(worst, fabs(y[i] - (a[i] + 0.5 * x[i])));
        CHECK(worst < 1e-6, "%s axpy n=%lld", K->name, (long long)n);
    }
}

typedef struct { atomic_int *hits; int threads; } pool_ctx;
static void pool_task(void *ctx, int64_t i0, int64_t i1, int tid) {
    pool_ctx *c = ctx;
    if (tid < 0 || tid >= c->threads) return; /* a wrong thread id shows as missed items */
    for (int64_t i = i0; i < i1; i++) atomic_fetch_add(&c->hits[i], 1);
}

static void test_pool(void) {
    for (int threads = 1; threads <= 4; threads++) {
        es_pool *p = es_pool_new(threads);
        CHECK(p && es_pool_threads(p) == threads, "pool of %d", threads);
        if (!p) continue;
        for (int64_t n = 1; n < 3000; n = n * 3 + 1) {
            atomic_int *hits = calloc((size_t)n, sizeof(atomic_int));
            pool_ctx c = {hits, threads};
            for (int rep = 0; rep < 20; rep++) es_pool_run(p, pool_task, &c, n, 1 + n / 7);
            int ok = 1;
            for (int64_t i = 0; i < n; i++) ok &= atomic_load(&hits[i]) == 20;
            CHECK(ok, "pool %d threads, n=%lld: every item exactly once per run", threads, (long long)n);
            free(hits);
        }
        es_pool_free(p);
    }
    CHECK(es_default_threads() >= 1, "default threads");
}

/* Every SIMD path this CPU can run (the others reported as skipped). */
static void test_all_paths(void) {
    static const char *paths[] = {"generic", "avx2", "avx512", "neon"};
    char err[256];
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        if (!es_simd_supported(paths[i])) {
            SKIP("SIMD path %s: not available on this CPU/build", paths[i]);
            continue;
        }
        const es_kernels *K = es_kernels_for(paths[i], err, sizeof err);
        CHECK(K && strcmp(K->name, paths[i]) == 0, "table of %s: %s", paths[i], K ? K->name : err);
        if (!K) continue;
        test_roundtrip(K);
        test_matvec(K);
        test_vector_ops(K);
    }
    CHECK(!es_kernels_for("bogus", err, sizeof err) && strstr(err, "unknown"), "unknown path refused");
    const es_kernels *best = es_kernels_best();
    CHECK(best == es_kernels_for(best->name, err, sizeof err) && !strcmp(es_simd_name(), best->name),
          "the best table is its path's table, and es_simd_name names it");
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (!es_simd_supported(paths[i]))
            CHECK(!es_kernels_for(paths[i], err, sizeof err) && strstr(err, "cannot run"),
                  "%s refused on this CPU: %s", paths[i], err);
    printf("CPU features: %s\n", es_cpu_features());
}

/* ---- every table's 8-bit/float products, matmul included (x86, and the neon variants) --
 *
 * The tables a CPU can run, tested slot by slot (not es_kernels_for's, so
 * the AVX-512 table without VNNI is tested on a CPU with VNNI too).  Each
 * matvec and matmul slot against a double dot of the dequantised row with
 * the activations exactly as the kernel sees them (x quantised to its
 * act_type by the generic quantiser and dequantised back): the only error
 * left is fp32 summation, held to 1e-5 of Σ|w·x_seen| per output.  Token
 * counts 1..9, 12, 13, 17, 63, 65 (tiles of 4 tokens, groups of 8 (AVX2)
 * and 12 (VNNI) with the packed path beyond one group, plus every
 * remainder), row counts across tiles of 1, 2, 4, 8 and 16 rows with ragged
 * tails (1, 2, 3, 7, 33, 50), row ranges split in three, a Y
 * stride wider than the rows (nothing written outside [r0, r1)), and shapes
 * whose activations span several token blocks. */

typedef struct test_table {
    const char *name;
    const es_kernels *k;
} test_table;

static int cpu_tables(test_table *out) {
    int n = 0;
    out[n++] = (test_table){"generic", &es_kernels_generic};
    if (es_simd_supported("avx2")) out[n++] = (test_table){"avx2", es_kernels_avx2};
    else SKIP("avx2 table: not available on this CPU/build");
    if (es_simd_supported("avx512")) {
        out[n++] = (test_table){"avx512 (no VNNI)", es_avx512_for(0)};
        if (strstr(es_cpu_features(), "avx512vnni")) out[n++] = (test_table){"avx512 (VNNI)", es_avx512_for(1)};
        else SKIP("avx512 table with VNNI: this CPU lacks AVX512_VNNI");
        if (es_simd_supported("amx")) out[n++] = (test_table){"amx", es_amx_table()};
        else SKIP("amx table: this CPU (or its OS, or this build) lacks AMX-INT8");
    } else {
        SKIP("avx512 tables: not available on this CPU/build");
    }
    if (es_simd_supported("neon")) { /* the variants this CPU can run */
        const char *f = es_cpu_features();
        int dp = strstr(f, "dotprod") != NULL, mm = strstr(f, "i8mm") != NULL;
        out[n++] = (test_table){"neon (armv8.0)", es_neon_for(0, 0)};
        if (dp) out[n++] = (test_table){"neon (dotprod)", es_neon_for(1, 0)};
        if (dp && mm) out[n++] = (test_table){"neon (i8mm)", es_neon_for(1, 1)};
    }
    return n;
}

/* worst error / bound of one shape; -1 if the slot is empty */
static double products_case(const es_kernels *K, int use_matmul, uint32_t t, int64_t rows, int64_t n, int64_t nt) {
    es_matvec_fn mv = K->matvec[t];
    es_matmul_fn mm = K->matmul[t];
    if (!mv || (use_matmul && !mm)) return -1;
    uint32_t at = K->act_type[t];
    size_t rb = es_row_bytes(t, n), ab = es_act_bytes(at, n);
    int64_t ys = rows + 3;
    uint8_t *w = malloc(rb * (size_t)rows), *act = malloc(ab * (size_t)nt);
    float *x = malloc(sizeof(float) * (size_t)(n * nt)), *seen = malloc(sizeof(float) * (size_t)(n * nt));
    float *deq = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)(ys * nt));
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = 0; i < n; i++) deq[i] = frand();
        if (!es_kernels_generic.quant_row[t]) test_fill_random_blocks(t, w + (size_t)r * rb, n, 0.01f, &rng);
        else es_kernels_generic.quant_row[t](deq, w + (size_t)r * rb, n);
    }
    for (int64_t k = 0; k < nt; k++) {
        float *xk = x + k * n;
        for (int64_t i = 0; i < n; i++) xk[i] = frand() * (i % 13 == 0 ? 4.0f : 1.0f);
        es_kernels_generic.quant_row[at](xk, act + (size_t)k * ab, n);
        es_kernels_generic.dequant_row[at](act + (size_t)k * ab, seen + k * n, n);
    }
    for (int64_t i = 0; i < ys * nt; i++) y[i] = NAN;
    int64_t a = rows / 3, b = 2 * rows / 3;
    const int64_t ranges[3][2] = {{a, b}, {0, a}, {b, rows}};
    for (int g = 0; g < 3; g++) {
        if (use_matmul) mm(w, rb, n, act, ab, nt, y, ys, ranges[g][0], ranges[g][1]);
        else
            for (int64_t k = 0; k < nt; k++) mv(w, rb, n, act + (size_t)k * ab, y + k * ys, ranges[g][0], ranges[g][1]);
    }
    double worst = 0;
    for (int64_t r = 0; r < rows; r++) {
        es_kernels_generic.dequant_row[t](w + (size_t)r * rb, deq, n);
        for (int64_t k = 0; k < nt; k++) {
            double ref = 0, mag = 0;
            for (int64_t i = 0; i < n; i++) {
                ref += (double)deq[i] * seen[k * n + i];
                mag += fabs((double)deq[i] * seen[k * n + i]);
            }
            double e = fabs(ref - y[k * ys + r]) / (1e-5 * mag + 1e-30);
            if (!(e <= worst)) worst = e; /* NaN (a row not written) counts as the worst */
        }
    }
    for (int64_t k = 0; k < nt; k++)
        for (int64_t r = rows; r < ys; r++)
            if (!isnan(y[k * ys + r])) worst = INFINITY; /* wrote outside [r0, r1) */
    free(w); free(act); free(x); free(seen); free(deq); free(y);
    return worst;
}

static void test_table_products(void) {
    static const uint32_t all[] = {ES_TYPE_F32,  ES_TYPE_F16,  ES_TYPE_BF16, ES_TYPE_Q8_0,   ES_TYPE_Q4_0,
                                   ES_TYPE_Q4_1, ES_TYPE_Q5_0, ES_TYPE_Q5_1, ES_TYPE_IQ4_NL, ES_TYPE_IQ4_XS,
                                   ES_TYPE_Q2_K, ES_TYPE_Q3_K, ES_TYPE_Q4_K, ES_TYPE_Q5_K,   ES_TYPE_Q6_K,
                                   ES_TYPE_IQ2_XXS, ES_TYPE_IQ2_XS, ES_TYPE_IQ2_S, ES_TYPE_IQ3_XXS, ES_TYPE_IQ3_S,
                                   ES_TYPE_IQ1_S, ES_TYPE_IQ1_M, ES_TYPE_TQ1_0, ES_TYPE_TQ2_0};
    static const int64_t rows_list[] = {1, 2, 3, 7, 33, 50};
    /* every count up to two token groups of x86_vnni_gemm.h, and counts
     * either side of the activation chunks */
    static const int64_t ntok_list[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 17, 63, 65};
    static const int64_t cols_32[] = {32, 96, 1056}, cols_256[] = {256, 768};
    test_table tabs[8];
    int ntabs = cpu_tables(tabs);
    for (int v = 0; v < ntabs; v++) {
        const es_kernels *K = tabs[v].k;
        for (size_t ti = 0; ti < sizeof all / sizeof all[0]; ti++) {
            uint32_t t = all[ti];
            int kq = es_type_info(t)->block_size == 256;
            const int64_t *cols = kq ? cols_256 : cols_32;
            size_t ncols = kq ? 2 : 3;
            for (int use_mm = 0; use_mm < 2; use_mm++) {
                double worst = 0;
                int empty = 0;
                /* the neon tables (one row at a time, tokens 4 by 4 then 1 by
                 * 1) on fewer shapes: they run under qemu in `make test-arm` */
                const int lite = !strncmp(tabs[v].name, "neon", 4);
                for (size_t ri = 0; ri < sizeof rows_list / sizeof rows_list[0]; ri++)
                    for (size_t ci = 0; ci < ncols; ci++)
                        for (size_t ki = 0; ki < sizeof ntok_list / sizeof ntok_list[0]; ki++) {
                            if (lite && (ri % 2 || (ntok_list[ki] != 1 && ntok_list[ki] != 5))) continue;
                            double e = products_case(K, use_mm, t, rows_list[ri], cols[ci], ntok_list[ki]);
                            if (e < 0) empty = 1;
                            else if (!(e <= worst)) worst = e;
                        }
                /* activations spanning several token blocks (about 256 KiB each) */
                if (!empty && !lite) {
                    double e = products_case(K, use_mm, t, 5, 16384, 17);
                    if (!(e <= worst)) worst = e;
                }
                if (empty) continue; /* generic has no matmul slots; a table may leave a slot to generic */
                printf("%-16s %-5s %s (act %s) worst error %.3g of its bound\n", tabs[v].name, es_type_info(t)->name,
                       use_mm ? "matmul" : "matvec", es_type_info(K->act_type[t])->name, worst);
                CHECK(worst <= 1.0, "%s %s %s error %.3g x its bound", tabs[v].name, es_type_info(t)->name,
                      use_mm ? "matmul" : "matvec", worst);
            }
        }
    }
}

/* Q8_0 and Q4_0 promise one arithmetic for every product (x86_q8act.h): a
 * row gives the same bits through the matvec (decode) as through any
 * matmul (prefill, a batch of sessions), whatever the token count and the
 * row range; es_batch_eval relies on it.  Checked slot against slot on
 * awkward shapes, the neon tables included (same promise there). */
static void test_matvec_matmul_bits(void) {
    static const uint32_t types[] = {ES_TYPE_Q8_0, ES_TYPE_Q4_0};
    static const int64_t shapes[][3] = {{50, 1056, 9}, {7, 96, 5}, {33, 16384, 17}, {66, 4160, 65}, {5, 32, 2}};
    test_table tabs[8];
    int ntabs = cpu_tables(tabs);
    for (int v = 0; v < ntabs; v++) {
        const es_kernels *K = tabs[v].k;
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            const uint32_t t = types[ti];
            if (!K->matvec[t] || !K->matmul[t]) continue;
            int differ = 0;
            for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
                const int64_t rows = shapes[si][0], n = shapes[si][1], nt = shapes[si][2];
                const uint32_t at = K->act_type[t];
                const size_t rb = es_row_bytes(t, n), ab = es_act_bytes(at, n);
                uint8_t *w = malloc(rb * (size_t)rows), *act = malloc(ab * (size_t)nt);
                float *x = malloc(sizeof(float) * (size_t)n), *ymv = malloc(sizeof(float) * (size_t)(rows * nt)),
                      *ymm = malloc(sizeof(float) * (size_t)(rows * nt));
                for (int64_t r = 0; r < rows; r++) {
                    for (int64_t i = 0; i < n; i++) x[i] = frand() * (i % 7 == 0 ? 3.0f : 1.0f);
                    es_kernels_generic.quant_row[t](x, w + (size_t)r * rb, n);
                }
                for (int64_t k = 0; k < nt; k++) {
                    for (int64_t i = 0; i < n; i++) x[i] = frand() * (i % 11 == 0 ? 5.0f : 1.0f);
                    es_kernels_generic.quant_row[at](x, act + (size_t)k * ab, n);
                }
                /* matvec over uneven row ranges, matmul over others */
                const int64_t a = rows / 3, b = rows - rows / 5;
                for (int64_t k = 0; k < nt; k++) {
                    K->matvec[t](w, rb, n, act + (size_t)k * ab, ymv + k * rows, 0, a);
                    K->matvec[t](w, rb, n, act + (size_t)k * ab, ymv + k * rows, a, rows);
                }
                K->matmul[t](w, rb, n, act, ab, nt, ymm, rows, 0, b);
                K->matmul[t](w, rb, n, act, ab, nt, ymm, rows, b, rows);
                if (memcmp(ymv, ymm, sizeof(float) * (size_t)(rows * nt)) != 0) {
                    differ++;
                    printf("%s %s: matvec and matmul differ at %lld rows x %lld cols x %lld tokens\n", tabs[v].name,
                           es_type_info(t)->name, (long long)rows, (long long)n, (long long)nt);
                }
                free(w); free(act); free(x); free(ymv); free(ymm);
            }
            CHECK(differ == 0, "%s %s: matvec and matmul give different bits (%d shapes)", tabs[v].name,
                  es_type_info(t)->name, differ);
        }
    }
}

/* silu_mul and softmax of every table against double, with values that
 * overflow and underflow e^x, and NaN.  Bound: 1e-6 relative (of the
 * smallest normal for denormal results): the vector expf (Cephes'
 * polynomial after an exact reduction) is within about 2e-7, and the
 * quotient, product and fp32 sum add a few ulps. */
static double act_worst; /* the largest error seen, as a fraction of the bound */
static int close_to(float got, double want) {
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == want;
    double e = fabs(got - want) / (1e-6 * fmax(fabs(want), 1.17549435e-38));
    act_worst = fmax(act_worst, e);
    return e <= 1.0;
}

static void test_activation_ops(void) {
    test_table tabs[8];
    int ntabs = cpu_tables(tabs);
    for (int v = 0; v < ntabs; v++) {
        const es_kernels *K = tabs[v].k;
        if (!K->silu_mul || !K->softmax) continue;
        int bad_silu = 0, bad_soft = 0;
        act_worst = 0;
        for (int n = 1; n <= 300; n += n < 20 ? 1 : 37) {
            float g[300], u[300], sm[300];
            double ref_g[300], ref_sm[300], mx = -INFINITY, sum = 0;
            for (int i = 0; i < n; i++) {
                g[i] = frand() * 12.0f;
                u[i] = frand();
                sm[i] = frand() * 30.0f;
            }
            if (n > 10) {
                g[0] = -100.0f; g[1] = 95.0f; g[2] = -88.5f; g[3] = 87.9f; g[4] = 0.0f; g[5] = -87.0f;
                sm[1] = sm[0] - 90.0f; sm[2] = sm[0] - 104.5f; sm[3] = -INFINITY; sm[4] = sm[0] - 87.5f;
            }
            if (n == 7) g[6] = NAN;
            /* the reference keeps what is fp32 by definition: e^-g overflowing
             * (silu is then -0), and x - max rounded to fp32 */
            for (int i = 0; i < n; i++) {
                double e = exp(-(double)g[i]);
                ref_g[i] = (double)g[i] / (1.0 + (e > FLT_MAX ? INFINITY : e)) * u[i];
                mx = fmax(mx, sm[i]);
            }
            for (int i = 0; i < n; i++) sum += exp((double)(sm[i] - (float)mx));
            for (int i = 0; i < n; i++) ref_sm[i] = exp((double)(sm[i] - (float)mx)) / sum;
            K->silu_mul(g, u, n);
            K->softmax(sm, n);
            for (int i = 0; i < n; i++) {
                if (!close_to(g[i], ref_g[i]) && bad_silu++ < 3)
                    printf("%s silu_mul n=%d [%d]: %.9g, want %.9g\n", tabs[v].name, n, i, g[i], ref_g[i]);
                if (!close_to(sm[i], ref_sm[i]) && bad_soft++ < 3)
                    printf("%s softmax n=%d [%d]: %.9g, want %.9g\n", tabs[v].name, n, i, sm[i], ref_sm[i]);
            }
        }
        printf("%-16s silu_mul, softmax worst error %.3g of the bound\n", tabs[v].name, act_worst);
        CHECK(bad_silu == 0, "%s silu_mul: %d values off by more than 1e-6 relative", tabs[v].name, bad_silu);
        CHECK(bad_soft == 0, "%s softmax: %d values off by more than 1e-6 relative", tabs[v].name, bad_soft);
    }
}

/* The activation quantisers a table provides (Q8_0, Q8_K) bit for bit as
 * generic's: random blocks, blocks with exact ties (amax 127 makes the
 * scale 1), zero blocks, one huge value. */
static void test_act_quant(void) {
    static const uint32_t acts[] = {ES_TYPE_Q8_0, ES_TYPE_Q8_K};
    test_table tabs[8];
    int ntabs = cpu_tables(tabs);
    const int64_t n = 256 * 6;
    float *x = malloc(sizeof(float) * (size_t)n);
    uint8_t *q0 = malloc((size_t)n * 2), *q1 = malloc((size_t)n * 2);
    for (int64_t i = 0; i < n; i++) x[i] = frand() * (i % 97 == 0 ? 50.0f : 1.0f);
    for (int64_t i = 256; i < 512; i++) x[i] = (float)((i % 255) - 127) + (i % 3 == 0 ? 0.5f : 0.0f);
    x[256] = 127.0f;
    x[300] = 0.49999997f;
    x[301] = -0.5f;
    for (int64_t i = 512; i < 768; i++) x[i] = 0.0f;
    x[800] = 3e30f;
    for (int v = 1; v < ntabs; v++)
        for (size_t a = 0; a < sizeof acts / sizeof acts[0]; a++) {
            uint32_t t = acts[a];
            if (!tabs[v].k->quant_row[t]) continue;
            size_t bytes = es_row_bytes(t, n);
            memset(q0, 0, bytes);
            memset(q1, 0, bytes);
            es_kernels_generic.quant_row[t](x, q0, n);
            tabs[v].k->quant_row[t](x, q1, n);
            CHECK(memcmp(q0, q1, bytes) == 0, "%s %s quant_row differs from generic", tabs[v].name,
                  es_type_info(t)->name);
        }
    free(x); free(q0); free(q1);
}

int main(void) {
    test_fp16();
    test_all_paths();
    test_pool();
    test_table_products();
    test_matvec_matmul_bits();
    test_activation_ops();
    test_act_quant();
    return test_summary();
}
