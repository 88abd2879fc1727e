/* test_llama_files.c — owns: the check that a file made by llama.cpp's own
 * tools runs.  tests/data/llama/v2lite-mini-q4_k_m.gguf is llama-quantize's
 * Q4_K_M of a small random-weight model with V2-Lite's row lengths where
 * its mix falls back (attn_k_b rows of 128 -> Q5_0, expert down rows of 1408
 * -> Q8_0, beside Q4_K and Q6_K; tests/data/README.md says how it was made).
 * The reference is the logits of the same weights dequantised to F32 (the
 * generic path, float products): the generic path on the quantised file must
 * agree to float rounding, each SIMD path within its activation
 * quantisation (Q8_K/Q8_0 rows: a few percent of the largest logit) with the
 * same top-1 token at every position.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgeseek.h"
#include "testutil.h"

enum { N_TOK = 24 };

static const char *path_now;
static const float *ref_now;
static int n_vocab_now;

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* the largest value of x less the second largest */
static double top_margin(const float *x, int n) {
    const int b = argmax(x, n);
    double second = -INFINITY;
    for (int i = 0; i < n; i++)
        if (i != b && x[i] > second) second = x[i];
    return (double)x[b] - second;
}

static void run_path(const char *simd) {
    es_load_params lp = {0};
    lp.simd = simd;
    es_model *m = NULL;
    es_session *s = NULL;
    char err[512] = "";
    if (es_model_load(path_now, &lp, &m, err, sizeof err) != ES_OK) {
        /* a path this CPU lacks is a skip, not a failure */
        if (strstr(err, "cannot run here")) {
            SKIP("%s: %s", simd, err);
            return;
        }
        CHECK(0, "%s: load: %s", simd, err);
        return;
    }
    const int V = es_model_n_vocab(m);
    CHECK(V == n_vocab_now, "%s: vocabulary %d", simd, V);
    float *got = malloc(sizeof(float) * (size_t)N_TOK * (size_t)V);
    int32_t tok[N_TOK];
    for (int i = 0; i < N_TOK; i++) tok[i] = 3 + 7 * i;
    if (got && es_session_new(m, 64, &s, err, sizeof err) == ES_OK &&
        es_session_eval(s, tok, N_TOK, got, 1, err, sizeof err) == ES_OK) {
        double maxref = 0, maxd = 0;
        int agree = 0;
        for (size_t i = 0; i < (size_t)N_TOK * (size_t)V; i++) {
            if (fabs(ref_now[i]) > maxref) maxref = fabs(ref_now[i]);
            if (fabs(ref_now[i] - got[i]) > maxd) maxd = fabs(ref_now[i] - got[i]);
        }
        /* the top-1 token must agree wherever the reference's lead over its
         * second token exceeds twice the largest difference seen (a random
         * model has near ties, which any rounding may flip) */
        int clear = 0;
        for (int t = 0; t < N_TOK; t++) {
            if (top_margin(ref_now + (size_t)t * V, V) <= 2 * maxd) continue;
            clear++;
            agree += argmax(got + (size_t)t * V, V) == argmax(ref_now + (size_t)t * V, V);
        }
        printf("# %s: top-1 agrees at %d of %d clear positions\n", simd, agree, clear);
        const double bound = !strcmp(simd, "generic") ? 1e-5 : 5e-2;
        CHECK(maxd <= bound * maxref, "%s: max |dlogit| %.3g of max |logit| %.3g (bound %.0e relative)", simd, maxd,
              maxref, bound);
        CHECK(agree == clear && clear >= N_TOK / 2,
              "%s: top-1 agrees at %d of the %d positions (of %d) whose lead exceeds twice the largest difference",
              simd, agree, clear, N_TOK);
    } else {
        CHECK(0, "%s: eval: %s", simd, err);
    }
    free(got);
    es_session_free(s);
    es_model_free(m);
}

int main(void) {
    path_now = test_data_path("llama/v2lite-mini-q4_k_m.gguf");
    const char *refp = test_data_path("llama/v2lite-mini-q4_k_m.ref.f32");
    if (!test_need_file(path_now) || !test_need_file(refp)) return test_summary();
    size_t len = 0;
    float *ref = test_read_file(refp, &len);
    n_vocab_now = 512;
    CHECK(ref && len == sizeof(float) * N_TOK * 512, "reference logits: %zu bytes", len);
    if (ref && len == sizeof(float) * N_TOK * 512) {
        ref_now = ref;
        static const char *const paths[] = {"generic", "avx2", "avx512", "amx", "neon"};
        for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) run_path(paths[i]);
    }
    free(ref);
    return test_summary();
}
