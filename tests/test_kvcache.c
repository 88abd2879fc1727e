/* test_kvcache.c — the latent cache stored as F16, BF16 or Q8_0
 * (runtime/kvcache.c, es_session_params.kv_type).
 *
 * 1. The kernels that read a stored row in place (dot_kv, axpy_kv): on every
 *    SIMD path this CPU runs, on awkward lengths and unaligned rows, against
 *    a float64 evaluation of the dequantised row and against the scalar
 *    twin (generic.c).
 *    The several-heads kernels (dot_kv_heads, axpy_kv_heads) where a table
 *    has them: bit-identical to the same table's one-head kernels looped
 *    over heads and rows, on awkward head counts, lengths, strides and row
 *    counts.
 * 2. Logits of every golden model (tests/data/golden, both MLA layouts
 *    where the case has two) and of the default model with each cache type
 *    against the F32 cache, in each attention form (absorbed, expanded) and
 *    token by token, within the bound per type README "KV cache" states.
 * 3. Decode at depth 0, 4K and 16K on a generated model (the cache filled
 *    directly with unit-RMS rows, the same values for every type), and a
 *    prefill batch at depth 4K in the expanded form, against F32.
 * 4. Q8_0's top-1 agreement with F32 on the default model over 1,000
 *    positions of its own greedy answers (goal: at least 99%).
 * Under qemu-user (ES_EMULATED, tests/run_arm.sh) parts 2's default model,
 * 3's 16K depth and 4 are skipped (counted): they take minutes there.
 * 5. The API: names, parsing, bytes per token, refusals.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgeseek.h"
#include "kernels.h"
#include "kvcache.h"
#include "model.h"
#include "testutil.h"

/* Bounds on max |Δlogit| against the F32 cache, relative to the largest
 * |logit| of the F32 run (measured maxima in README "KV cache"; about 3x
 * headroom). */
#define BOUND_F16 1e-3
#define BOUND_BF16 3e-2
#define BOUND_Q8_0 3e-2

static const int types[] = {ES_KV_F16, ES_KV_BF16, ES_KV_Q8_0};
static const uint32_t ggml_of[] = {[ES_KV_F16] = ES_TYPE_F16, [ES_KV_BF16] = ES_TYPE_BF16, [ES_KV_Q8_0] = ES_TYPE_Q8_0};
static double bound_of(int t) { return t == ES_KV_F16 ? BOUND_F16 : t == ES_KV_BF16 ? BOUND_BF16 : BOUND_Q8_0; }
static double worst[3][5]; /* per part (golden, default model, depth) and type: the largest difference seen */
static int part;

static uint64_t rng = 0x2545f4914f6cdd1dull;
static double urand(void) { /* uniform in [-1, 1) */
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) / (double)(1ull << 53) * 2 - 1;
}

/* ---- 1. kernels ------------------------------------------------------------------ */

static void kernels_on(const es_kernels *K) {
    static const int sizes[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 96, 100, 129, 512, 576};
    enum { MAXN = 576 };
    float a[MAXN], xd[MAXN], y[MAXN], y0[MAXN], yt[MAXN];
    uint8_t store[MAXN * 4 + 16];
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const uint32_t t = ggml_of[types[ti]];
        int bad = 0;
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            const int n = sizes[si];
            if (t == ES_TYPE_Q8_0 && n % 32) continue;
            for (int off = 0; off <= 2; off += 2) { /* rows start 2-aligned only (k_pe after a Q8_0 latent) */
                uint8_t *x = store + off;
                for (int i = 0; i < n; i++) a[i] = (float)(urand() * 2), xd[i] = (float)(urand() * 3);
                es_kernels_generic.quant_row[t](xd, x, n);
                es_kernels_generic.dequant_row[t](x, xd, n);
                double ref = 0, mag = 0;
                for (int i = 0; i < n; i++) ref += (double)a[i] * xd[i], mag += fabs((double)a[i] * xd[i]);
                const double tol = (n + 8) * 1.2e-7 * mag + 1e-30;
                const float got = K->dot_kv[t](a, x, n), twin = es_kernels_generic.dot_kv[t](a, x, n);
                if (fabs(got - ref) > tol || fabs(twin - ref) > tol || fabs((double)got - twin) > 2 * tol) {
                    if (bad++ < 3)
                        CHECK(0, "%s dot_kv[%u] n %d off %d: %.9g, twin %.9g, float64 %.9g", K->name, t, n, off, got,
                              twin, ref);
                }
                const float p = (float)urand();
                for (int i = 0; i < n; i++) y0[i] = y[i] = yt[i] = (float)urand();
                K->axpy_kv[t](y, p, x, n);
                es_kernels_generic.axpy_kv[t](yt, p, x, n);
                for (int i = 0; i < n; i++) {
                    const double r = (double)y0[i] + (double)p * xd[i];
                    const double e = 2.4e-7 * (fabs(y0[i]) + fabs((double)p * xd[i])) + 1e-30;
                    if ((fabs(y[i] - r) > e || fabs(yt[i] - r) > e) && bad++ < 3)
                        CHECK(0, "%s axpy_kv[%u] n %d off %d [%d]: %.9g, twin %.9g, float64 %.9g", K->name, t, n, off,
                              i, y[i], yt[i], r);
                }
            }
        }
        CHECK(!bad, "%s: dot_kv/axpy_kv of type %u: %d values outside the bound", K->name, t, bad);
    }
}

/* one head's dot / axpy through table K's one-head kernels (F32 rows: the float ones) */
static float one_dot(const es_kernels *K, uint32_t t, const float *a, const void *x, int64_t n) {
    return t == ES_TYPE_F32 ? K->dot_f32(a, x, n) : K->dot_kv[t](a, x, n);
}
static void one_axpy(const es_kernels *K, uint32_t t, float *y, float p, const void *x, int64_t n) {
    if (t == ES_TYPE_F32) K->axpy_f32(y, p, x, n);
    else K->axpy_kv[t](y, p, x, n);
}

static void heads_on(const es_kernels *K) {
    static const uint32_t ht[] = {ES_TYPE_F32, ES_TYPE_F16, ES_TYPE_BF16};
    static const int Gs[] = {1, 3, 8, 9, 16}, ns[] = {1, 15, 16, 17, 33, 64, 100, 512, 576}, rs[] = {1, 5, 64, 65, 130};
    enum { MAXG = 16, MAXN = 576, MAXR = 130 };
    const size_t rb_max = MAXN * 4 + 8;
    float *q = malloc(sizeof(float) * MAXG * (MAXN + 3)), *xf = malloc(sizeof(float) * MAXN);
    float *att = malloc(sizeof(float) * MAXG * (MAXR + 1)), *want = malloc(sizeof(float) * MAXG * (MAXR + 1));
    float *u = malloc(sizeof(float) * MAXG * (MAXN + 5)), *uw = malloc(sizeof(float) * MAXG * (MAXN + 5));
    float *pr = malloc(sizeof(float) * MAXG * (MAXR + 2));
    uint8_t *rows = malloc(rb_max * MAXR);
    if (!q || !xf || !att || !want || !u || !uw || !pr || !rows) { CHECK(0, "out of memory"); goto out; }
    for (size_t ti = 0; ti < sizeof ht / sizeof ht[0]; ti++) {
        const uint32_t t = ht[ti];
        if (!K->dot_kv_heads[t] && !K->axpy_kv_heads[t]) continue;
        const size_t es = t == ES_TYPE_F32 ? 4 : 2;
        int bad = 0, cases = 0;
        for (size_t gi = 0; gi < sizeof Gs / sizeof Gs[0]; gi++)
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
                for (size_t ri = 0; ri < sizeof rs / sizeof rs[0]; ri++) {
                    const int G = Gs[gi], n = ns[ni], nr = rs[ri];
                    const int64_t qs = n + 3, as = nr + 1, us = n + 5, ps = nr + 2;
                    const size_t rb = (size_t)n * es + 8; /* rows not a multiple of 64 bytes apart */
                    for (int r = 0; r < nr; r++) {
                        for (int i = 0; i < n; i++) xf[i] = (float)(urand() * 3);
                        es_kernels_generic.quant_row[t](xf, rows + (size_t)r * rb, n);
                    }
                    for (int i = 0; i < G * qs; i++) q[i] = (float)(urand() * 2);
                    for (int i = 0; i < G * ps; i++) pr[i] = (float)urand();
                    for (int i = 0; i < G * us; i++) u[i] = uw[i] = (float)urand();
                    cases++;
                    if (K->dot_kv_heads[t]) {
                        for (int i = 0; i < G * as; i++) att[i] = want[i] = -7.0f;
                        K->dot_kv_heads[t](q, qs, G, rows, rb, nr, n, att, as);
                        for (int g = 0; g < G; g++)
                            for (int r = 0; r < nr; r++)
                                want[g * as + r] = one_dot(K, t, q + g * qs, rows + (size_t)r * rb, n);
                        if (memcmp(att, want, sizeof(float) * (size_t)(G * as)) && bad++ < 3)
                            CHECK(0, "%s dot_kv_heads[%u] G %d n %d rows %d: not the one-head values", K->name, t, G, n,
                                  nr);
                    }
                    if (K->axpy_kv_heads[t]) {
                        K->axpy_kv_heads[t](u, us, G, pr, ps, rows, rb, nr, n);
                        for (int r = 0; r < nr; r++)
                            for (int g = 0; g < G; g++)
                                one_axpy(K, t, uw + g * us, pr[g * ps + r], rows + (size_t)r * rb, n);
                        if (memcmp(u, uw, sizeof(float) * (size_t)(G * us)) && bad++ < 3)
                            CHECK(0, "%s axpy_kv_heads[%u] G %d n %d rows %d: not the one-head values", K->name, t, G,
                                  n, nr);
                    }
                }
        CHECK(!bad, "%s: dot_kv_heads/axpy_kv_heads of type %u bit-identical to the one-head kernels (%d cases)",
              K->name, t, cases);
    }
out:
    free(q), free(xf), free(att), free(want), free(u), free(uw), free(pr), free(rows);
}

/* ---- 2. logits against the F32 cache ------------------------------------------------------ */

/* Logits of tok[n] with a cache of type kv: one prefill (all positions), or
 * token by token (decode).  NULL with a failure recorded. */
static float *logits_with(es_model *m, int kv, const int32_t *tok, int n, int decode) {
    char err[512];
    es_session *s = NULL;
    const es_session_params p = {.n_ctx = n, .kv_type = kv};
    const int V = es_model_n_vocab(m);
    float *lg = malloc(sizeof(float) * (size_t)V * (size_t)n);
    int ok = lg && es_session_new_ext(m, &p, &s, err, sizeof err) == ES_OK;
    for (int i = 0; ok && i < (decode ? n : 1); i++)
        ok = es_session_eval(s, tok + i, decode ? 1 : n, lg + (size_t)i * V, !decode, err, sizeof err) == ES_OK;
    CHECK(ok, "eval with cache type %s: %s", es_kv_type_name(kv), err);
    es_session_free(s);
    if (!ok) free(lg), lg = NULL;
    return lg;
}

/* max |a - b| over max |a| */
static double rel_diff(const float *a, const float *b, size_t n) {
    double d = 0, mag = 1e-30;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        mag = fmax(mag, fabs(a[i]));
    }
    return d / mag;
}

static void logits_case(const char *label, const char *path, const int32_t *tok, int n) {
    static const int forms[] = {ES_MLA_ABSORBED, ES_MLA_EXPANDED};
    static const char *const form_names[] = {"absorbed", "expanded"};
    char err[512];
    for (int f = 0; f < 3; f++) { /* absorbed prefill, expanded prefill, decode */
        es_model *m = NULL;
        es_load_params lp = {.mla = forms[f == 2 ? 0 : f]};
        if (es_model_load(path, &lp, &m, err, sizeof err) != ES_OK) {
            CHECK(0, "load %s: %s", path, err);
            return;
        }
        const size_t nv = (size_t)es_model_n_vocab(m) * (size_t)n;
        float *ref = logits_with(m, ES_KV_F32, tok, n, f == 2);
        for (size_t ti = 0; ref && ti < sizeof types / sizeof types[0]; ti++) {
            const int t = types[ti];
            if (!es_model_kv_bytes_per_token_of(m, t)) {
                char e2[256];
                const es_session_params p = {.kv_type = t};
                es_session *s = NULL;
                CHECK(es_session_new_ext(m, &p, &s, e2, sizeof e2) == ES_ERR_ARG && strstr(e2, "multiple of 32"),
                      "%s: a q8_0 cache is refused with a message when kv_lora_rank is not a multiple of 32", label);
                es_session_free(s);
                continue;
            }
            float *lg = logits_with(m, t, tok, n, f == 2);
            if (lg) {
                const double d = rel_diff(ref, lg, nv);
                worst[part][t] = fmax(worst[part][t], d);
                CHECK(d <= bound_of(t), "%s, %s, cache %s: max |Δlogit| / max |logit| = %.3g over the bound %.3g",
                      label, f == 2 ? "decode" : form_names[f], es_kv_type_name(t), d, bound_of(t));
            }
            free(lg);
        }
        free(ref);
        es_model_free(m);
    }
}

static int read_tokens(const char *path, int32_t *tok, int cap) {
    size_t len;
    char *txt = test_read_file(path, &len);
    int n = 0;
    for (char *p = txt; txt && *p && n < cap;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) { p++; continue; }
        tok[n++] = (int32_t)v;
        p = end;
    }
    free(txt);
    return n;
}

static int access_ok(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

static void golden_logits(void) {
    static const char *const cases[] = {"v2lite-tiny", "v2lite-yarn", "v2-tiny", "v3-tiny", "v3-yarn", "v3-stress"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char rel[128];
        int32_t tok[64];
        snprintf(rel, sizeof rel, "golden/%s/tokens.txt", cases[c]);
        if (!test_need_file(test_data_path(rel))) continue;
        const int n = read_tokens(test_data_path(rel), tok, 64);
        CHECK(n > 0, "%s: tokens", cases[c]);
        for (int legacy = 0; legacy < 2; legacy++) {
            snprintf(rel, sizeof rel, "golden/%s/model%s.gguf", cases[c], legacy ? "-legacy" : "");
            if (legacy && access_ok(test_data_path(rel)) == 0) continue;
            if (!test_need_file(test_data_path(rel))) continue;
            char label[96];
            snprintf(label, sizeof label, "%s%s", cases[c], legacy ? " (legacy)" : "");
            logits_case(label, test_data_path(rel), tok, n);
        }
    }
}

/* ---- 2b, 4. the default model: logits, and Q8_0's top-1 agreement --------------------------- */

static int argmax(const float *v, int n) {
    int b = 0;
    for (int i = 1; i < n; i++) b = v[i] > v[b] ? i : b;
    return b;
}

/* Appends to seq the chat prompt of a problem and the F32 cache's greedy
 * answer (up to its end of sentence or 120 tokens); returns the new length. */
static int answer(es_model *m, int i, int32_t *seq, int len, int cap) {
    char q[64], err[256];
    static const char *const ops[] = {"+", "-", ">"};
    snprintf(q, sizeof q, "What is %d %s %d?", 100 + (i * 397) % 900, ops[i % 3], 100 + (i * 211) % 900);
    es_chat_msg msg = {"user", q};
    int32_t *ids = NULL;
    size_t n_ids = 0;
    es_session *s = NULL;
    const es_session_params p = {.n_ctx = 512, .kv_type = ES_KV_F32};
    float *lg = malloc(sizeof(float) * (size_t)es_model_n_vocab(m));
    if (!lg || es_chat_tokenize(m, &msg, 1, 1, &ids, &n_ids, err, sizeof err) != ES_OK ||
        es_session_new_ext(m, &p, &s, err, sizeof err) != ES_OK || len + (int)n_ids > cap) {
        CHECK(0, "default model: %s", err);
        free(ids), free(lg), es_session_free(s);
        return len;
    }
    memcpy(seq + len, ids, sizeof(int32_t) * n_ids);
    int n = (int)n_ids;
    int ok = es_session_eval(s, ids, n, lg, 0, err, sizeof err) == ES_OK;
    while (ok && n < 120 + (int)n_ids && len + n < cap) {
        int32_t t = argmax(lg, es_model_n_vocab(m));
        seq[len + n++] = t;
        if (es_model_is_eog(m, t)) break;
        ok = es_session_eval(s, &t, 1, lg, 0, err, sizeof err) == ES_OK;
    }
    CHECK(ok, "default model: %s", err);
    free(ids), free(lg), es_session_free(s);
    return len + n;
}

static void default_model(void) {
    const char *path = "models/edgeseek-default.gguf";
    if (!test_need_file(path)) return;
    if (getenv("ES_EMULATED")) { /* minutes under qemu-user; the kernels are checked above */
        SKIP("default model: logits and top-1 agreement (emulated CPU)");
        return;
    }
    char err[512];
    es_model *m = NULL;
    es_load_params lp = {0};
    if (es_model_load(path, &lp, &m, err, sizeof err) != ES_OK) {
        CHECK(0, "load %s: %s", path, err);
        return;
    }
    enum { CAP = 1400 };
    int32_t *seq = malloc(sizeof(int32_t) * CAP);
    int *start = calloc(64, sizeof(int)), n_ep = 0, len = 0;
    while (seq && start && len < 1000 && n_ep < 63) {
        start[n_ep++] = len;
        len = answer(m, n_ep, seq, len, CAP);
    }
    start[n_ep] = len;
    es_model_free(m);
    logits_case("default model", path, seq, start[1]);
    /* top-1 over every position of every episode, each its own prefill */
    if (es_model_load(path, &lp, &m, err, sizeof err) != ES_OK) return;
    const int V = es_model_n_vocab(m);
    int agree = 0, agree16 = 0, total = 0;
    for (int e = 0; e < n_ep; e++) {
        const int n = start[e + 1] - start[e];
        float *a = logits_with(m, ES_KV_F32, seq + start[e], n, 0), *b = logits_with(m, ES_KV_Q8_0, seq + start[e], n, 0);
        float *c = logits_with(m, ES_KV_F16, seq + start[e], n, 0);
        for (int i = 0; a && b && c && i < n; i++, total++) {
            const int best = argmax(a + (size_t)i * V, V);
            agree += best == argmax(b + (size_t)i * V, V);
            agree16 += best == argmax(c + (size_t)i * V, V);
        }
        free(a), free(b), free(c);
    }
    printf("# default model: top-1 agrees with the f32 cache at %d of %d positions with q8_0 (%.2f%%), %d with f16\n",
           agree, total, total ? 100.0 * agree / total : 0.0, agree16);
    CHECK(total >= 1000 && agree >= 0.99 * total, "q8_0 top-1 agreement %d / %d under 99%%", agree, total);
    CHECK(agree16 >= 0.999 * total, "f16 top-1 agreement %d / %d under 99.9%%", agree16, total);
    es_model_free(m);
    free(seq), free(start);
}

/* ---- 3. decode at depth ------------------------------------------------------------------- */

enum { DEPTH_MAX = 16384, DEPTH_BATCH = 64 };

/* Logits of the tokens tok[n] at position depth after cache rows 0..depth
 * of every layer filled with unit-RMS latents and k_pe from a fixed seed
 * (the same fp32 values whatever the type). */
static float *at_depth(es_model *m, int kv, int depth, const int32_t *tok, int n) {
    char err[512];
    es_session *s = NULL;
    const es_session_params p = {.n_ctx = DEPTH_MAX + DEPTH_BATCH, .kv_type = kv, .n_threads = 2};
    if (es_session_new_ext(m, &p, &s, err, sizeof err) != ES_OK) {
        CHECK(0, "session at depth: %s", err);
        return NULL;
    }
    const es_hparams *hp = &m->hp;
    const int R = hp->kv_lora, dr = hp->rope;
    float *row = malloc(sizeof(float) * (size_t)(R + dr));
    rng = 0x1234567ull + (uint64_t)depth;
    for (int il = 0; il < hp->n_layers; il++) {
        const es_kv_view v = es_kv_layer(s, il);
        for (int pos = 0; pos < depth; pos++) {
            for (int i = 0; i < R + dr; i++) row[i] = (float)(urand() * 1.7);
            es_kv_write(m->kern, &v, pos, row, R, dr);
        }
    }
    for (int pos = 0; pos < depth; pos++) s->tokens[pos] = 1;
    s->pos = depth;
    const int V = es_model_n_vocab(m);
    float *lg = malloc(sizeof(float) * (size_t)V * (size_t)n);
    if (es_session_eval(s, tok, n, lg, 1, err, sizeof err) != ES_OK) {
        CHECK(0, "eval at depth %d: %s", depth, err);
        free(lg), lg = NULL;
    }
    free(row);
    es_session_free(s);
    return lg;
}

static void depth_case(int ci, const char *path) {
    (void)ci;
    static const int depths[] = {0, 4096, 16384};
    static const int forms[] = {ES_MLA_ABSORBED, ES_MLA_EXPANDED};
    int32_t tok[DEPTH_BATCH];
    for (int i = 0; i < DEPTH_BATCH; i++) tok[i] = (int32_t)(3 + i * 7 % 200);
    for (int f = 0; f < 2; f++) {
        char err[512];
        es_model *m = NULL;
        es_load_params lp = {.mla = forms[f]};
        if (es_model_load(path, &lp, &m, err, sizeof err) != ES_OK) {
            CHECK(0, "load %s: %s", path, err);
            return;
        }
        const int V = es_model_n_vocab(m);
        for (size_t d = 0; d < sizeof depths / sizeof depths[0]; d++) {
            if (depths[d] > 4096 && getenv("ES_EMULATED")) {
                SKIP("depth %d (emulated CPU)", depths[d]);
                continue;
            }
            /* one token at every depth; a prefill batch at 4K */
            const int n = depths[d] == 4096 ? DEPTH_BATCH : 1;
            float *ref = at_depth(m, ES_KV_F32, depths[d], tok, n);
            for (size_t ti = 0; ref && ti < sizeof types / sizeof types[0]; ti++) {
                float *lg = at_depth(m, types[ti], depths[d], tok, n);
                if (!lg) continue;
                const double rd = rel_diff(ref, lg, (size_t)V * n);
                worst[part][types[ti]] = fmax(worst[part][types[ti]], rd);
                CHECK(rd <= bound_of(types[ti]), "%s form, depth %d, %d token(s), cache %s: %.3g over the bound %.3g",
                      f ? "expanded" : "absorbed", depths[d], n, es_kv_type_name(types[ti]), rd, bound_of(types[ti]));
                free(lg);
            }
            free(ref);
        }
        es_model_free(m);
    }
}

/* ---- 5. the API ----------------------------------------------------------------------------- */

static void api(void) {
    char err[256];
    int t = -1;
    CHECK(!strcmp(es_kv_type_name(ES_KV_DEFAULT), "f16") && !strcmp(es_kv_type_name(ES_KV_Q8_0), "q8_0") &&
              es_kv_type_name(99) == NULL,
          "cache type names");
    CHECK(es_kv_type_parse("bf16", &t, err, sizeof err) == ES_OK && t == ES_KV_BF16, "parse bf16");
    CHECK(es_kv_type_parse("q4_0", &t, err, sizeof err) == ES_ERR_ARG && strstr(err, "q4_0") && strstr(err, "q8_0"),
          "an unknown type is refused, naming it and the choices: %s", err);
    const char *path = test_data_path("golden/v3-stress/model.gguf");
    if (!test_need_file(path)) return;
    es_model *m = NULL;
    es_load_params lp = {0};
    if (es_model_load(path, &lp, &m, err, sizeof err) != ES_OK) {
        CHECK(0, "%s", err);
        return;
    }
    const size_t f32 = es_model_kv_bytes_per_token(m);
    CHECK(es_model_kv_bytes_per_token_of(m, ES_KV_F32) == f32 && es_model_kv_bytes_per_token_of(m, ES_KV_F16) == f32 / 2 &&
              es_model_kv_bytes_per_token_of(m, ES_KV_BF16) == f32 / 2,
          "bytes per token of f32, f16, bf16");
    /* R 64, dr 16, 3 layers: 2 Q8_0 blocks of 34 bytes and 16 fp16 */
    CHECK(es_model_kv_bytes_per_token_of(m, ES_KV_Q8_0) == 3 * (2 * 34 + 16 * 2), "bytes per token of q8_0: %zu",
          es_model_kv_bytes_per_token_of(m, ES_KV_Q8_0));
    es_session *s = NULL;
    CHECK(es_session_new(m, 8, &s, err, sizeof err) == ES_OK && es_session_kv_type(s) == ES_KV_F32 &&
              es_session_kv_bytes_per_token(s) == f32,
          "es_session_new keeps an f32 cache");
    es_session_free(s), s = NULL;
    CHECK(es_session_new_ext(m, NULL, &s, err, sizeof err) == ES_OK && es_session_kv_type(s) == ES_KV_F16 &&
              es_session_kv_bytes_per_token(s) == f32 / 2,
          "es_session_new_ext's default is f16");
    es_session_free(s), s = NULL;
    const es_session_params bad = {.kv_type = 9};
    CHECK(es_session_new_ext(m, &bad, &s, err, sizeof err) == ES_ERR_ARG && !s, "an unknown cache type is refused");
    es_model_free(m);
}

int main(void) {
    api();
    test_each_simd_path(kernels_on);
    test_each_simd_path(heads_on);
    golden_logits();
    part = 1;
    default_model();
    part = 2;
    static const char *const args[] = {"--preset tiny --type f32 --seed 5 --ctx 16448"};
    test_each_gen_model(args, 1, depth_case);
    static const char *const parts[] = {"golden models", "default model", "depth 0/4K/16K"};
    for (int p = 0; p < 3; p++)
        printf("# %s: worst max |Δlogit| / max |logit| against f32: f16 %.3g, bf16 %.3g, q8_0 %.3g\n", parts[p],
               worst[p][ES_KV_F16], worst[p][ES_KV_BF16], worst[p][ES_KV_Q8_0]);
    return test_summary();
}
