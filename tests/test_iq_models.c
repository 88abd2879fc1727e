/* test_iq_models.c — whole models whose weights are in the formats edgeseek
 * reads but does not write (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S,
 * IQ1_M, TQ1_0, TQ2_0) load and run end to end.
 *
 * From one generated F32 model (rows of 256 and 512), for each type: model Q
 * holds every 2-D weight whose rows the type can hold (token embedding,
 * attention projections, dense, shared and routed experts, output) as
 * random valid blocks of the type (test_fill_random_blocks); model F holds the
 * same weights decoded to F32 by the generic decoder (which
 * test_ggml_vectors holds bit-exact to ggml).  The two are the same
 * function, so:
 *   - Q on the generic path (fp32 activations, the type's scalar product)
 *     against F on the generic path: only the order of fp32 sums differs,
 *     bound 1e-4 of the largest |logit|;
 *   - Q on every SIMD path (activations rounded to Q8_K, 8-bit products)
 *     against F: each product's inputs carry the Q8_K rounding (at most
 *     1/254 of a block's largest |x|, about 1% of a typical value, random
 *     in sign), which a few layers carry to the logits; bound 5% of the
 *     largest |logit| (measured: 0.1-1.5%).
 * The logits must also be finite and not all equal. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgeseek.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "kernels.h"
#include "testutil.h"

static const uint32_t iq_types[] = {ES_TYPE_IQ2_XXS, ES_TYPE_IQ2_XS, ES_TYPE_IQ2_S, ES_TYPE_IQ3_XXS, ES_TYPE_IQ3_S,
                                    ES_TYPE_IQ1_S,   ES_TYPE_IQ1_M,  ES_TYPE_TQ1_0, ES_TYPE_TQ2_0};
static const char *const paths[] = {"avx2", "avx512", "neon"};

/* fp16 d of the random blocks: weights of roughly +-0.05, as the F32 model's */
static float block_scale(uint32_t t) {
    switch (t) {
    case ES_TYPE_IQ1_S: case ES_TYPE_IQ1_M: return 3e-3f;
    case ES_TYPE_TQ1_0: case ES_TYPE_TQ2_0: return 4e-2f;
    case ES_TYPE_IQ3_XXS: case ES_TYPE_IQ3_S: return 1.5e-4f;
    default: return 4e-4f;
    }
}

/* Writes Q (quantised = 1) or F (0) of type t from the F32 model g; the
 * random blocks are the same for both (same seed).  0 on success. */
static int write_variant(const es_gguf_ctx *g, uint32_t t, int quantised, const char *out, int *n_conv) {
    es_gguf_writer *w = es_gguf_writer_new();
    char err[256] = "";
    int ok = w != NULL;
    for (uint64_t i = 0; ok && i < g->n_kv; i++) ok = es_gguf_w_value(w, g->kv[i].key, &g->kv[i].val) == 0;
    *n_conv = 0;
    for (uint64_t i = 0; ok && i < g->n_tensors; i++) {
        const es_gguf_tensor *x = &g->tensors[i];
        int conv = x->type == ES_TYPE_F32 && x->n_dims >= 2 && x->ne[0] % 256 == 0;
        *n_conv += conv;
        ok = es_gguf_w_add_tensor(w, x->name, x->n_dims, x->ne, conv && quantised ? t : x->type) == 0;
    }
    ok = ok && es_gguf_w_open(w, out) == 0;
    uint64_t rng = 0x2545F4914F6CDD1Dull;
    for (uint64_t i = 0; ok && i < g->n_tensors; i++) {
        const es_gguf_tensor *x = &g->tensors[i];
        if (!(x->type == ES_TYPE_F32 && x->n_dims >= 2 && x->ne[0] % 256 == 0)) {
            ok = es_gguf_w_write(w, x->data, (size_t)x->nbytes) == 0;
            continue;
        }
        const int64_t n = x->ne[0], rows = (int64_t)(x->nbytes / sizeof(float)) / n;
        const size_t rb = es_row_bytes(t, n);
        uint8_t *q = malloc(rb);
        float *f = malloc(sizeof(float) * (size_t)n);
        for (int64_t r = 0; ok && q && f && r < rows; r++) {
            test_fill_random_blocks(t, q, n, block_scale(t), &rng);
            if (quantised) {
                ok = es_gguf_w_write(w, q, rb) == 0;
            } else {
                es_kernels_generic.dequant_row[t](q, f, n);
                ok = es_gguf_w_write(w, f, sizeof(float) * (size_t)n) == 0;
            }
        }
        ok = ok && q && f;
        free(q);
        free(f);
    }
    if (ok) ok = es_gguf_w_finish(w, err, sizeof err) == 0;
    CHECK(ok, "writing %s: %s", out, w ? (err[0] ? err : es_gguf_w_error(w)) : "out of memory");
    es_gguf_writer_free(w);
    return ok ? 0 : -1;
}

static double max_abs(const float *v, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)v[i]));
    return m;
}

static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d; /* NaN counts as the largest */
    }
    return m;
}

static void run_model(int idx, const char *path) {
    (void)idx;
    es_gguf_ctx *g = NULL;
    char err[256];
    if (es_gguf_open_file(path, &g, err, sizeof err) != 0) {
        CHECK(0, "open %s: %s", path, err);
        return;
    }
    char dir[] = "/tmp/es_iqm_XXXXXX";
    if (!mkdtemp(dir)) { CHECK(0, "mkdtemp"); es_gguf_close(g); return; }
    char qpath[64], fpath[64];
    snprintf(qpath, sizeof qpath, "%s/q.gguf", dir);
    snprintf(fpath, sizeof fpath, "%s/f.gguf", dir);
    const int32_t tok[] = {1, 17, 42, 5, 99, 3};
    const int nt = (int)(sizeof tok / sizeof tok[0]);
    for (size_t ti = 0; ti < sizeof iq_types / sizeof iq_types[0]; ti++) {
        const uint32_t t = iq_types[ti];
        const char *name = es_type_info(t)->name;
        int nq = 0, nf = 0;
        if (write_variant(g, t, 1, qpath, &nq) || write_variant(g, t, 0, fpath, &nf)) continue;
        CHECK(nq >= 10 && nq == nf, "%s: %d tensors converted", name, nq);
        int nv = 0, nv2 = 0;
        float *ref = test_logits_on(fpath, "generic", tok, nt, &nv);
        float *gen = test_logits_on(qpath, "generic", tok, nt, &nv2);
        CHECK(ref && gen && nv == nv2, "%s: both models load and run on the generic path", name);
        if (ref && gen && nv == nv2) {
            const size_t len = (size_t)nv * (size_t)nt;
            const double scale = max_abs(ref, len);
            int varied = 0;
            for (size_t i = 1; i < len; i++) varied |= ref[i] != ref[0];
            CHECK(isfinite(scale) && varied, "%s: the F32 twin's logits are finite and not constant", name);
            double e = max_diff(gen, ref, len);
            CHECK(e <= 1e-4 * scale, "%s generic: max |dlogit| %.3g > %.3g", name, e, 1e-4 * scale);
            for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
                if (!es_simd_supported(paths[p])) {
                    SKIP("%s model on %s: not available on this CPU/build", name, paths[p]);
                    continue;
                }
                float *lg = test_logits_on(qpath, paths[p], tok, nt, &nv2);
                double ep = lg ? max_diff(lg, ref, len) : INFINITY;
                printf("%-8s %-7s max |dlogit| %.3g of max |logit| %.3g (%.2f%%)\n", name, paths[p], ep, scale,
                       100.0 * ep / scale);
                CHECK(ep <= 0.05 * scale, "%s %s: max |dlogit| %.3g > %.3g", name, paths[p], ep, 0.05 * scale);
                free(lg);
            }
        }
        free(ref);
        free(gen);
        remove(qpath);
        remove(fpath);
    }
    rmdir(dir);
    es_gguf_close(g);
}

int main(void) {
    static const char *const args[] = {"--preset tiny --type f32 --dim 256 --ffn 512 --expert-ffn 256 --layers 3 "
                                       "--dense-layers 1 --seed 7"};
    test_each_gen_model(args, 1, run_model);
    return test_summary();
}
