/* test_simd_slots.c — the kernel-table slots test_kernels.c does not cover,
 * on every table this CPU can run (and, on aarch64, every neon variant:
 * armv8.0, dotprod, i8mm):
 *   - matmul (prefill) against the table's matvec per token, on ragged
 *     row, token and column counts, bit for bit on every table, and the
 *     matvec over split row ranges against the whole range: a row's value
 *     must not depend on the kernel, the token count or the rows beside it,
 *     so that a prefill gives exactly the logits of token-by-token decoding
 *     and a session batched with others (es_batch_eval) exactly its logits
 *     alone (with 8-bit activations a rounding difference grows when the
 *     next layer re-quantises);
 *   - the neon variants agree with each other bit for bit (so the one the
 *     CPU picks, checked against a float64 reference by test_kernels, vouches
 *     for the others);
 *   - quant_row and dequant_row are bit-identical to generic;
 *   - silu_mul and softmax are within 1e-6 relative of generic (a vector
 *     exp is allowed that much), including overflow, underflow, NaN.
 *
 * Only real comparisons are counted.  es_kern() hands out the table merged
 * with generic (an empty slot holds generic's function), so comparing a slot
 * with generic where it holds generic's own function would compare generic
 * with itself: such slots are left out, neither passed nor skipped (nothing
 * this CPU could have run is missing).  On the generic path that leaves
 * test_quant and test_activations nothing to compare; its matmul check stays,
 * as it holds generic's matvec on split row ranges to the whole range. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "testutil.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* quant_row/dequant_row of the 32-weight formats (the rows are 32 * 41) */
static const uint32_t types[] = {ES_TYPE_F32,  ES_TYPE_F16,  ES_TYPE_BF16, ES_TYPE_Q8_0,  ES_TYPE_Q4_0,
                                 ES_TYPE_Q4_1, ES_TYPE_Q5_0, ES_TYPE_Q5_1, ES_TYPE_IQ4_NL};
static const uint32_t mm_types[] = {ES_TYPE_F32,  ES_TYPE_F16,  ES_TYPE_BF16, ES_TYPE_Q8_0,   ES_TYPE_Q4_0,
                                    ES_TYPE_Q4_1, ES_TYPE_Q5_0, ES_TYPE_Q5_1, ES_TYPE_IQ4_NL, ES_TYPE_IQ4_XS,
                                    ES_TYPE_Q2_K, ES_TYPE_Q3_K, ES_TYPE_Q4_K, ES_TYPE_Q5_K,   ES_TYPE_Q6_K,
                                    ES_TYPE_IQ2_XXS, ES_TYPE_IQ2_XS, ES_TYPE_IQ2_S, ES_TYPE_IQ3_XXS, ES_TYPE_IQ3_S,
                                    ES_TYPE_IQ1_S, ES_TYPE_IQ1_M, ES_TYPE_TQ1_0, ES_TYPE_TQ2_0};

/* a table's slot, or generic's where it is empty (as dispatch.c merges) */
static es_matvec_fn matvec_of(const es_kernels *K, uint32_t t, uint32_t *act_type) {
    const es_kernels *k = K->matvec[t] ? K : &es_kernels_generic;
    *act_type = k->act_type[t];
    return k->matvec[t];
}

/* 1 if K has its own kernel for type t (matvec or matmul), not generic's */
static int own_mm(const es_kernels *K, uint32_t t) {
    uint32_t at;
    return matvec_of(K, t, &at) != es_kernels_generic.matvec[t] || (K->matmul[t] && K->matvec[t]);
}

/* Y = W·X for n_tok tokens through K's matmul slot (per-token matvec when
 * empty); act holds the tokens in act_type, as_ bytes apart. */
static void run_matmul(const es_kernels *K, uint32_t t, const void *w, size_t rb, int64_t n, const void *act,
                       size_t as, int64_t nt, float *y, int64_t ys, int64_t r0, int64_t r1) {
    uint32_t at;
    es_matvec_fn mv = matvec_of(K, t, &at);
    if (K->matvec[t] && K->matmul[t]) {
        K->matmul[t](w, rb, n, act, as, nt, y, ys, r0, r1);
        return;
    }
    for (int64_t k = 0; k < nt; k++) mv(w, rb, n, (const char *)act + (size_t)k * as, y + k * ys, r0, r1);
}

/* activations of nt tokens (n floats each, rows n apart) in act_type; *as
 * set to the bytes between tokens */
static void *make_act(uint32_t at, const float *x, int64_t n, int64_t nt, size_t *as) {
    if (at == ES_TYPE_F32) {
        *as = sizeof(float) * (size_t)n;
        return NULL;
    }
    *as = es_act_bytes(at, n);
    uint8_t *q = malloc(*as * (size_t)nt);
    for (int64_t k = 0; k < nt; k++) es_kernels_generic.quant_row[at](x + k * n, q + (size_t)k * *as, n);
    return q;
}

/* matmul vs per-token matvec of each table, and all tables vs the first;
 * every token count up to 9 on the same weights and activations */
static void test_matmul(const es_kernels *const *tabs, int ntabs) {
    static const int64_t rows_list[] = {1, 2, 3, 5, 7, 9, 33};
    enum { MAX_TOK = 9 };
    for (size_t ti = 0; ti < sizeof mm_types / sizeof mm_types[0]; ti++) {
        uint32_t t = mm_types[ti];
        /* a type every table leaves to generic's matvec was checked on the generic path */
        int own = !strcmp(tabs[0]->name, "generic");
        for (int v = 0; v < ntabs; v++) own |= own_mm(tabs[v], t);
        if (!own) continue;
        int block = (int)es_type_info(t)->block_size;
        static const int64_t cols_float[] = {1, 3, 5, 17, 33, 64, 255, 1056};
        static const int64_t cols_32[] = {32, 64, 96, 224, 1056};
        static const int64_t cols_256[] = {256, 768};
        const int64_t *cols = block == 1 ? cols_float : block == 32 ? cols_32 : cols_256;
        size_t ncols = block == 1 ? sizeof cols_float / sizeof cols_float[0]
                       : block == 32 ? sizeof cols_32 / sizeof cols_32[0] : sizeof cols_256 / sizeof cols_256[0];
        int bad_mm = 0, bad_mv = 0, bad_var = 0, cases = 0;
        for (size_t ri = 0; ri < sizeof rows_list / sizeof rows_list[0]; ri++)
            for (size_t ci = 0; ci < ncols; ci++) {
                int64_t rows = rows_list[ri], n = cols[ci];
                size_t rb = es_row_bytes(t, n);
                uint8_t *w = malloc(rb * (size_t)rows);
                float *src = malloc(sizeof(float) * (size_t)n);
                float *x = malloc(sizeof(float) * (size_t)(n * MAX_TOK));
                for (int64_t r = 0; r < rows; r++) {
                    for (int64_t i = 0; i < n; i++) src[i] = frand();
                    if (!es_kernels_generic.quant_row[t]) test_fill_random_blocks(t, w + (size_t)r * rb, n, 0.01f, &rng);
                    else es_kernels_generic.quant_row[t](src, w + (size_t)r * rb, n);
                }
                for (int64_t i = 0; i < n * MAX_TOK; i++) x[i] = frand() * (i % 13 == 0 ? 4.0f : 1.0f);
                int64_t ys = rows + 3; /* a Y stride wider than the rows */
                size_t ybytes = sizeof(float) * (size_t)(ys * MAX_TOK);
                float *first = malloc(ybytes), *y = malloc(ybytes), *yv = malloc(ybytes);
                for (int64_t nt = 1; nt <= MAX_TOK; nt++, cases++)
                    for (int v = 0; v < ntabs; v++) {
                        uint32_t at;
                        es_matvec_fn mv = matvec_of(tabs[v], t, &at);
                        size_t as;
                        void *q = make_act(at, x, n, nt, &as);
                        const void *act = q ? q : (const void *)x;
                        /* the middle third of the rows, then the rest: row ranges must not matter */
                        int64_t a = rows / 3, b = 2 * rows / 3;
                        for (int64_t i = 0; i < ys * nt; i++) y[i] = yv[i] = NAN;
                        run_matmul(tabs[v], t, w, rb, n, act, as, nt, y, ys, a, b);
                        run_matmul(tabs[v], t, w, rb, n, act, as, nt, y, ys, 0, a);
                        run_matmul(tabs[v], t, w, rb, n, act, as, nt, y, ys, b, rows);
                        for (int64_t k = 0; k < nt; k++) mv(w, rb, n, (const char *)act + (size_t)k * as, yv + k * ys, 0, rows);
                        for (int64_t k = 0; k < nt; k++) {
                            bad_mm += memcmp(y + k * ys, yv + k * ys, sizeof(float) * (size_t)rows) != 0;
                            for (int64_t r = rows; r < ys; r++) bad_mm += !isnan(y[k * ys + r]); /* wrote past r1 */
                        }
                        /* the matvec over the rows in three ranges: the same values */
                        float *ym = malloc(sizeof(float) * (size_t)rows);
                        const char *a0 = (const char *)act + (size_t)(nt - 1) * as;
                        mv(w, rb, n, a0, ym, b, rows);
                        mv(w, rb, n, a0, ym, 0, a);
                        mv(w, rb, n, a0, ym, a, b);
                        bad_mv += memcmp(ym, yv + (nt - 1) * ys, sizeof(float) * (size_t)rows) != 0;
                        free(ym);
                        if (v == 0) memcpy(first, y, sizeof(float) * (size_t)(ys * nt));
                        else bad_var += memcmp(first, y, sizeof(float) * (size_t)(ys * nt)) != 0;
                        free(q);
                    }
                free(w); free(src); free(x); free(first); free(y); free(yv);
            }
        CHECK(bad_mm == 0, "%s %s: matmul differs from per-token matvec (bit for bit) in %d of %d cases",
              tabs[0]->name, es_type_info(t)->name, bad_mm, cases);
        CHECK(bad_mv == 0, "%s %s: matvec over split row ranges differs from the whole range in %d of %d cases",
              tabs[0]->name, es_type_info(t)->name, bad_mv, cases * ntabs);
        if (ntabs > 1) /* one table has no variants to compare */
            CHECK(bad_var == 0, "%s %s: the %d variants differ in %d of %d cases", tabs[0]->name,
                  es_type_info(t)->name, ntabs, bad_var, cases);
    }
}

static void test_quant(const es_kernels *K) {
    const int64_t n = 32 * 41;
    float *x = malloc(sizeof(float) * n), *d0 = malloc(sizeof(float) * n), *d1 = malloc(sizeof(float) * n);
    uint8_t *q0 = malloc(4 * n), *q1 = malloc(4 * n);
    for (int64_t i = 0; i < n; i++) x[i] = frand() * (i % 97 == 0 ? 300.0f : 1.0f);
    for (int j = 0; j < 32; j++) x[32 + j] = 0; /* an all-zero block */
    x[70] = 0.5f / 127 * x[71];                  /* values on rounding ties */
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        uint32_t t = types[ti];
        size_t rb = es_row_bytes(t, n);
        es_quant_fn qf = K->quant_row[t] ? K->quant_row[t] : es_kernels_generic.quant_row[t];
        es_dequant_fn df = K->dequant_row[t] ? K->dequant_row[t] : es_kernels_generic.dequant_row[t];
        es_kernels_generic.quant_row[t](x, q0, n);
        if (qf != es_kernels_generic.quant_row[t]) { /* generic's own: nothing to compare */
            qf(x, q1, n);
            CHECK(memcmp(q0, q1, rb) == 0, "%s %s quant_row differs from generic", K->name, es_type_info(t)->name);
        }
        if (df != es_kernels_generic.dequant_row[t]) {
            es_kernels_generic.dequant_row[t](q0, d0, n);
            df(q0, d1, n);
            CHECK(memcmp(d0, d1, sizeof(float) * n) == 0, "%s %s dequant_row differs from generic", K->name,
                  es_type_info(t)->name);
        }
    }
    free(x); free(d0); free(d1); free(q0); free(q1);
}

/* |a - b| within 1e-6 of |b| (denormal results: 1e-6 of the smallest normal) */
static int close_rel(float a, float b) {
    if (isnan(b)) return isnan(a);
    if (isinf(b)) return a == b;
    return fabsf(a - b) <= 1e-6f * fmaxf(fabsf(b), 1.17549435e-38f);
}

static void test_activations(const es_kernels *K) {
    int own_silu = K->silu_mul != es_kernels_generic.silu_mul, own_soft = K->softmax != es_kernels_generic.softmax;
    if (!own_silu && !own_soft) return; /* generic's own: nothing to compare */
    enum { N = 203 };
    float g[N], u[N], gg[N], sm[N], smg[N];
    int bad_silu = 0, bad_soft = 0;
    for (int n = 1; n <= N; n += (n < 12 ? 1 : 19)) {
        for (int i = 0; i < n; i++) {
            g[i] = frand() * 12.0f;
            u[i] = frand();
            sm[i] = frand() * 30.0f;
        }
        if (n > 8) { /* e^-g overflowing and underflowing, NaN */
            g[0] = -100.0f; g[1] = 95.0f; g[2] = -88.5f; g[3] = 87.9f; g[4] = 0.0f; g[5] = NAN; g[6] = -INFINITY;
            sm[1] = sm[0] - 90.0f; sm[2] = sm[0] - 104.5f; sm[3] = -INFINITY;
        }
        memcpy(gg, g, sizeof g);
        memcpy(smg, sm, sizeof sm);
        K->silu_mul(g, u, n);
        es_kernels_generic.silu_mul(gg, u, n);
        K->softmax(sm, n);
        es_kernels_generic.softmax(smg, n);
        for (int i = 0; i < n; i++) {
            if (!close_rel(g[i], gg[i])) {
                if (bad_silu++ < 3) printf("%s silu_mul n=%d [%d]: %.9g vs generic %.9g\n", K->name, n, i, g[i], gg[i]);
            }
            if (!close_rel(sm[i], smg[i])) {
                if (bad_soft++ < 3) printf("%s softmax n=%d [%d]: %.9g vs generic %.9g\n", K->name, n, i, sm[i], smg[i]);
            }
        }
    }
    if (own_silu) CHECK(bad_silu == 0, "%s silu_mul: %d values off generic by more than 1e-6", K->name, bad_silu);
    if (own_soft) CHECK(bad_soft == 0, "%s softmax: %d values off generic by more than 1e-6", K->name, bad_soft);
}

int main(void) {
    static const char *paths[] = {"generic", "avx2", "avx512", "neon"};
    char err[256];
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        if (!es_simd_supported(paths[p])) {
            SKIP("SIMD path %s: not available on this CPU/build", paths[p]);
            continue;
        }
        const es_kernels *tabs[3] = {es_kernels_for(paths[p], err, sizeof err)};
        CHECK(tabs[0] != NULL, "table of %s: %s", paths[p], err);
        if (!tabs[0]) continue;
        int ntabs = 1;
        if (!strcmp(paths[p], "neon")) {
            /* the variants below the one chosen: the chosen one first */
            const char *f = es_cpu_features();
            int dp = strstr(f, "dotprod") != NULL, mm = strstr(f, "i8mm") != NULL;
            if (dp && mm) tabs[ntabs++] = es_neon_for(1, 0);
            if (dp) tabs[ntabs++] = es_neon_for(0, 0);
            printf("neon variants run here: %d (dotprod %d, i8mm %d)\n", ntabs, dp, mm);
        }
        test_matmul(tabs, ntabs);
        for (int v = 0; v < ntabs; v++) {
            test_quant(tabs[v]);
            test_activations(tabs[v]);
        }
    }
    return test_summary();
}
