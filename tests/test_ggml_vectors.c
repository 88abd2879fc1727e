/* test_ggml_vectors.c — the block layouts against ggml itself.
 *
 * tests/data/ggml/ggml-vectors.gguf holds, for each quantised type ggml
 * knows that DeepSeek GGUFs use, three tensors of ne0 x ne1 values
 * (tests/data/README.md says how they were made, and from which ggml
 * commit):
 *   <type>.src  F32   the input (four rows: unit scale, tiny, large with
 *                     outliers, zero runs)
 *   <type>.q    type  ggml's quantize_chunk of it
 *   <type>.deq  F32   ggml's dequantisation of <type>.q
 * Every type edgeseek computes with must decode <type>.q to exactly
 * <type>.deq, bit for bit, with every kernel table this CPU can run; a type
 * it cannot compute with yet is counted as skipped (by name), so the count
 * shrinks as types land.  The matvec kernels are then held against the
 * float64 dot product of the decoded rows.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "kernels.h"
#include "testutil.h"

static const char *const paths[] = {"generic", "avx2", "avx512", "neon"};
#define N_PATHS (sizeof paths / sizeof paths[0])

/* ggml's names as its type table spells them ("q2_K", "iq4_nl"): the
 * vectors' tensor names. */
static const struct {
    uint32_t type;
    const char *name;
} vec_types[] = {
    {ES_TYPE_Q4_0, "q4_0"},       {ES_TYPE_Q4_1, "q4_1"},     {ES_TYPE_Q5_0, "q5_0"},
    {ES_TYPE_Q5_1, "q5_1"},       {ES_TYPE_Q8_0, "q8_0"},     {ES_TYPE_Q2_K, "q2_K"},
    {ES_TYPE_Q3_K, "q3_K"},       {ES_TYPE_Q4_K, "q4_K"},     {ES_TYPE_Q5_K, "q5_K"},
    {ES_TYPE_Q6_K, "q6_K"},       {ES_TYPE_IQ4_NL, "iq4_nl"}, {ES_TYPE_IQ4_XS, "iq4_xs"},
    {ES_TYPE_IQ2_XXS, "iq2_xxs"}, {ES_TYPE_IQ2_XS, "iq2_xs"}, {ES_TYPE_IQ2_S, "iq2_s"},
    {ES_TYPE_IQ3_XXS, "iq3_xxs"}, {ES_TYPE_IQ3_S, "iq3_s"},   {ES_TYPE_IQ1_S, "iq1_s"},
    {ES_TYPE_IQ1_M, "iq1_m"},     {ES_TYPE_TQ1_0, "tq1_0"},   {ES_TYPE_TQ2_0, "tq2_0"},
};
#define N_VEC_TYPES (sizeof vec_types / sizeof vec_types[0])

static const es_gguf_tensor *find(const es_gguf_ctx *g, const char *type, const char *what) {
    char name[64];
    snprintf(name, sizeof name, "%s.%s", type, what);
    const es_gguf_tensor *t = es_gguf_find_tensor(g, name);
    CHECK(t != NULL, "tensor %s missing from the vectors", name);
    return t;
}

/* Decodes every row of q with table K and compares with deq bit for bit;
 * returns 0 when the table has no decoder for the type. */
static int check_decode(const es_kernels *K, const char *path, const char *tname, uint32_t type,
                        const es_gguf_tensor *q, const es_gguf_tensor *deq) {
    const int64_t n = q->ne[0], rows = q->ne[1];
    const size_t rb = es_row_bytes(type, n);
    float *y = malloc(sizeof(float) * (size_t)n);
    if (!y) { CHECK(0, "out of memory"); return 1; }
    int ok = 1;
    for (int64_t r = 0; r < rows; r++) {
        if (es_dequant_row(K, type, q->data + (size_t)r * rb, y, n) != 0) { free(y); return 0; }
        const float *want = (const float *)deq->data + r * n;
        for (int64_t i = 0; i < n && ok; i++)
            if (memcmp(&y[i], &want[i], sizeof(float)) != 0) {
                CHECK(0, "%s/%s row %lld element %lld: %.9g, ggml %.9g", tname, path, (long long)r, (long long)i,
                      y[i], want[i]);
                ok = 0;
            }
    }
    if (ok) CHECK(1, "decode");
    free(y);
    return 1;
}

/* y = W x through the table's matvec against the float64 dot of the
 * decoded rows with x: the kernel may round x to its activation format, so
 * the bound is relative to sum |w||x| (the activation quantisation step
 * of 8-bit formats is 1/127 of the block's largest |x|). */
static void check_matvec(const es_kernels *K, const char *path, const char *tname, uint32_t type,
                         const es_gguf_tensor *q, const es_gguf_tensor *deq) {
    const int64_t n = q->ne[0], rows = q->ne[1];
    const size_t rb = es_row_bytes(type, n);
    float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)rows);
    if (!x || !y) { free(x); free(y); CHECK(0, "out of memory"); return; }
    for (int64_t i = 0; i < n; i++) x[i] = (float)sin(0.37 * (double)i + 0.1) * (i % 7 == 0 ? 3.0f : 1.0f);
    if (es_matvec(K, type, q->data, rb, n, x, y, 0, rows) != 0) {
        free(x); free(y);
        return; /* no matvec for this type in this table: the decode check said so */
    }
    for (int64_t r = 0; r < rows; r++) {
        const float *w = (const float *)deq->data + r * n;
        double dot = 0, mag = 0;
        for (int64_t i = 0; i < n; i++) {
            dot += (double)w[i] * x[i];
            mag += fabs((double)w[i] * x[i]);
        }
        double err = fabs((double)y[r] - dot), bound = 1e-5 * mag + 1.5 / 127.0 * mag;
        CHECK(err <= bound, "%s/%s matvec row %lld: %.7g vs %.7g (|err| %.3g > %.3g)", tname, path, (long long)r,
              y[r], dot, err, bound);
    }
    free(x);
    free(y);
}

int main(void) {
    const char *path = test_data_path("ggml/ggml-vectors.gguf");
    if (!test_need_file(path)) return test_summary();
    es_gguf_ctx *g = NULL;
    char err[512] = "";
    CHECK(es_gguf_open_file(path, &g, err, sizeof err) == 0, "open %s: %s", path, err);
    if (!g) return test_summary();
    for (size_t ti = 0; ti < N_VEC_TYPES; ti++) {
        const char *tname = vec_types[ti].name;
        const uint32_t type = vec_types[ti].type;
        const es_gguf_tensor *src = find(g, tname, "src"), *q = find(g, tname, "q"), *deq = find(g, tname, "deq");
        if (!src || !q || !deq) continue;
        CHECK(q->type == type && deq->type == ES_TYPE_F32 && q->ne[0] == deq->ne[0] && q->ne[1] == deq->ne[1],
              "%s: tensor types or shapes", tname);
        int any = 0;
        for (size_t p = 0; p < N_PATHS; p++) {
            const es_kernels *K = es_kernels_for(paths[p], NULL, 0);
            if (!K) continue;
            if (!check_decode(K, paths[p], tname, type, q, deq)) continue;
            any = 1;
            check_matvec(K, paths[p], tname, type, q, deq);
        }
        if (!any) SKIP("%s: no decoder yet", tname);
    }
    es_gguf_close(g);
    return test_summary();
}
