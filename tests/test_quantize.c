/* test_quantize.c — `edgeseek quantize` end to end on a generated model:
 *   - the type rules (es_quantize_tensor_type): F32 for vectors and the
 *     router, fallbacks for row lengths a type cannot hold, the Q4_K_M mix;
 *   - every target: the output parses, keeps every metadata key and the
 *     tensor order and shapes, has general.file_type set, each tensor in its
 *     planned type and within its format's error of the source, and runs
 *     (logits of a few tokens close to the F32 model's);
 *   - the Q4_K_M mix through the CLI: `edgeseek info` reads it, and the
 *     logits of a 256-token prompt are within a stated tolerance of the F32
 *     source with top-1 agreement on >= 99% of positions;
 *   - quantised input (requantised, or copied byte for byte), small chunks
 *     that split tensors, and the CLI's errors and exit codes.
 *
 * The model: gen_model with every row length a multiple of 256 except
 * attn_k_b (32, so the K targets fall back to Q8_0 there), output.weight
 * replaced by a copy of token_embd.weight.  Why the tie: a random model's
 * logits are nearly flat (top-2 gaps ~0.3 of the logit spread), so top-1
 * would flip wherever the gap is under the quantisation noise — ~6% of
 * positions for the Q4_K_M mix, whatever the weight scale, since both the
 * gaps and the errors scale with it.  With tied embeddings each position
 * has a confident prediction (its own token: margins of ~60 logits against
 * errors below ~10) that the rest of the network still perturbs; the
 * agreement check then catches gross damage, and the logit tolerance
 * measures the accuracy.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "edgeseek.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "kernels.h"
#include "quantize.h"
#include "testutil.h"

static char tmpdir[64];

/* A path in tmpdir; a ring of 8 buffers, so hold a result only briefly. */
static const char *tmp(const char *name) {
    static char buf[8][512];
    static int i;
    i = (i + 1) & 7;
    snprintf(buf[i], sizeof buf[i], "%s/%s", tmpdir, name);
    return buf[i];
}

/* Exit status of a shell command. */
static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...) {
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* ---- the type rules ------------------------------------------------------- */

static void test_rules(void) {
    const char *note;
    int64_t mat[4] = {256, 512, 1, 1}, vec[4] = {256, 1, 1, 1}, r96[4] = {96, 64, 1, 1}, r48[4] = {48, 64, 1, 1};
    int64_t exps[4] = {256, 256, 8, 1};
    CHECK(es_quantize_tensor_type("q4_k", "blk.0.attn_norm.weight", 1, vec, 8, &note) == ES_TYPE_F32, "vector F32");
    CHECK(es_quantize_tensor_type("q4_0", "blk.1.ffn_gate_inp.weight", 2, mat, 8, &note) == ES_TYPE_F32, "router F32");
    CHECK(es_quantize_tensor_type("q2_k", "blk.1.exp_probs_b.bias", 1, vec, 8, &note) == ES_TYPE_F32, "gate bias F32");
    CHECK(es_quantize_tensor_type("Q5_K", "blk.0.attn_q_a.weight", 2, mat, 8, &note) == ES_TYPE_Q5_K && !note,
          "names are case-insensitive, no note without a fallback");
    CHECK(es_quantize_tensor_type("q4_k", "blk.0.attn_k_b.weight", 3, r96, 8, &note) == ES_TYPE_Q8_0 && note,
          "row 96 under Q4_K falls back to Q8_0 with a note");
    CHECK(es_quantize_tensor_type("q4_0", "blk.0.attn_k_b.weight", 3, r96, 8, &note) == ES_TYPE_Q4_0,
          "row 96 fits Q4_0");
    CHECK(es_quantize_tensor_type("q6_k", "x.weight", 2, r48, 8, &note) == ES_TYPE_F16 && note, "row 48 -> F16");
    CHECK(es_quantize_tensor_type("f16", "x.weight", 2, r48, 8, &note) == ES_TYPE_F16 && !note, "F16 fits any row");
    CHECK(es_quantize_tensor_type("q9_9", "x.weight", 2, mat, 8, &note) == ES_TYPE_COUNT, "unknown target");
    /* the mix, 8 layers: more bits on layers 0, 7 and (il - 1) % 3 == 2 */
    static const struct { const char *name; uint32_t type; } mix[] = {
        {"token_embd.weight", ES_TYPE_Q6_K},        {"output.weight", ES_TYPE_Q6_K},
        {"blk.0.attn_q_b.weight", ES_TYPE_Q6_K},    {"blk.3.attn_kv_b.weight", ES_TYPE_Q6_K},
        {"blk.3.attn_output.weight", ES_TYPE_Q6_K}, {"blk.0.ffn_down.weight", ES_TYPE_Q6_K},
        {"blk.4.ffn_up_shexp.weight", ES_TYPE_Q6_K}, {"blk.4.ffn_gate_exps.weight", ES_TYPE_Q4_K},
        {"blk.4.ffn_up_exps.weight", ES_TYPE_Q4_K}, {"blk.4.ffn_down_exps.weight", ES_TYPE_Q4_K},
        {"blk.3.ffn_down_exps.weight", ES_TYPE_Q6_K}, {"blk.7.ffn_down_exps.weight", ES_TYPE_Q6_K},
        {"blk.0.ffn_down_exps.weight", ES_TYPE_Q6_K}, {"blk.2.ffn_down_exps.weight", ES_TYPE_Q4_K},
    };
    for (size_t i = 0; i < sizeof mix / sizeof mix[0]; i++) {
        uint32_t t = es_quantize_tensor_type("q4_k_m", mix[i].name, strstr(mix[i].name, "exps") ? 3 : 2,
                                             strstr(mix[i].name, "exps") ? exps : mat, 8, &note);
        CHECK(t == mix[i].type, "q4_k_m %s: %s, want %s", mix[i].name, es_type_info(t)->name,
              es_type_info(mix[i].type)->name);
    }
    CHECK(es_quantize_ftype("q4_k_m") == 15 && es_quantize_ftype("q8_0") == 7 && es_quantize_ftype("bf16") == 32,
          "LLAMA_FTYPE values");
}

/* ---- the model --------------------------------------------------------------- */

/* Copies a GGUF with output.weight replaced by token_embd.weight (same
 * shape [dim, vocab] and type in a generated model). */
static int tie_output(const char *in, const char *out) {
    char err[512];
    es_gguf_ctx *g;
    if (es_gguf_open_file(in, &g, err, sizeof err)) { printf("%s\n", err); return -1; }
    const es_gguf_tensor *emb = es_gguf_find_tensor(g, "token_embd.weight"), *o = es_gguf_find_tensor(g, "output.weight");
    es_gguf_writer *w = es_gguf_writer_new();
    int rc = -1;
    if (!emb || !o || !w || emb->nbytes != o->nbytes) goto done;
    for (uint64_t i = 0; i < g->n_kv; i++) es_gguf_w_value(w, g->kv[i].key, &g->kv[i].val);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const es_gguf_tensor *t = &g->tensors[i];
        es_gguf_w_add_tensor(w, t->name, t->n_dims, t->ne, t->type);
    }
    es_gguf_w_open(w, out);
    for (uint64_t i = 0; i < g->n_tensors; i++)
        es_gguf_w_write(w, g->tensors[i].name == o->name ? emb->data : g->tensors[i].data, g->tensors[i].nbytes);
    rc = es_gguf_w_finish(w, err, sizeof err);
    if (rc) printf("%s\n", err);
done:
    es_gguf_writer_free(w);
    es_gguf_close(g);
    return rc;
}


typedef struct parity {
    double rel_rms; /* RMS(Δlogit) / RMS(logit) */
    double rel_max; /* max |Δlogit| / max |logit| */
    double agree;   /* fraction of positions with the same top-1 */
    double min_margin; /* smallest top-1 margin of the reference */
} parity;

static parity compare(const float *a, const float *b, int n, int nv) {
    parity p = {0, 0, 0, INFINITY};
    double e2 = 0, s2 = 0, emax = 0, smax = 0;
    int agree = 0;
    for (int t = 0; t < n; t++) {
        const float *x = a + (size_t)t * nv, *y = b + (size_t)t * nv;
        int ia = 0, ib = 0;
        for (int i = 1; i < nv; i++) {
            if (x[i] > x[ia]) ia = i;
            if (y[i] > y[ib]) ib = i;
        }
        agree += ia == ib;
        float second = -INFINITY;
        for (int i = 0; i < nv; i++) {
            if (i != ia && x[i] > second) second = x[i];
            double d = (double)x[i] - y[i];
            e2 += d * d;
            s2 += (double)x[i] * x[i];
            emax = fmax(emax, fabs(d));
            smax = fmax(smax, fabs(x[i]));
        }
        p.min_margin = fmin(p.min_margin, x[ia] - second);
    }
    p.rel_rms = sqrt(e2 / s2);
    p.rel_max = emax / smax;
    p.agree = (double)agree / n;
    return p;
}

/* ---- every target --------------------------------------------------------------- */

/* Relative RMS error of one tensor against the source, per type: the
 * round-trip bounds of test_kernels/test_kquants (Gaussian data; the
 * generated weights are uniform, which quantise better). */
static double tensor_bound(uint32_t t) {
    switch (t) {
    case ES_TYPE_F32: return 0;
    case ES_TYPE_F16: return 1e-3;
    case ES_TYPE_BF16: return 4e-3;
    case ES_TYPE_Q8_0: return 0.01;
    case ES_TYPE_Q4_0: return 0.15;
    case ES_TYPE_Q2_K: return 0.285;
    case ES_TYPE_Q3_K: return 0.152;
    case ES_TYPE_Q4_K: return 0.075;
    case ES_TYPE_Q5_K: return 0.038;
    case ES_TYPE_Q6_K: return 0.0182;
    case ES_TYPE_Q4_1: return 0.08;    /* measured 0.061 */
    case ES_TYPE_Q5_0: return 0.041;   /* 0.031 */
    case ES_TYPE_Q5_1: return 0.039;   /* 0.030 */
    case ES_TYPE_IQ4_NL: return 0.081; /* 0.062 */
    case ES_TYPE_IQ4_XS: return 0.082; /* 0.063 */
    }
    return 0;
}

/* Checks out.gguf against its source: keys, order, types, values. */
static void check_file(const char *src_path, const char *out_path, const char *target) {
    char err[512];
    es_gguf_ctx *a = NULL, *b = NULL;
    CHECK(es_gguf_open_file(src_path, &a, err, sizeof err) == 0, "open %s: %s", src_path, err);
    CHECK(es_gguf_open_file(out_path, &b, err, sizeof err) == 0, "%s output parses: %s", target, err);
    if (!a || !b) { es_gguf_close(a); es_gguf_close(b); return; }
    int keys_ok = 1;
    for (uint64_t i = 0; i < a->n_kv; i++) {
        const es_gguf_kv *kv = es_gguf_find_kv(b, a->kv[i].key);
        keys_ok &= kv && kv->val.type == a->kv[i].val.type;
        if (kv && kv->val.type == GGUF_VT_ARRAY) keys_ok &= kv->val.v.arr.n == a->kv[i].val.v.arr.n;
    }
    CHECK(keys_ok, "%s: every metadata key copied with its type", target);
    int64_t ft = -1, qv = -1;
    es_gguf_get_int(b, "general.file_type", &ft);
    es_gguf_get_int(b, "general.quantization_version", &qv);
    CHECK(ft == es_quantize_ftype(target) && qv == 2, "%s: file_type %lld quantization_version %lld", target,
          (long long)ft, (long long)qv);
    CHECK(a->n_tensors == b->n_tensors, "%s: tensor count", target);
    int64_t layers = 0;
    es_gguf_get_int(a, "deepseek2.block_count", &layers);
    for (uint64_t i = 0; i < a->n_tensors && i < b->n_tensors; i++) {
        const es_gguf_tensor *s = &a->tensors[i], *o = &b->tensors[i];
        uint32_t want = es_quantize_tensor_type(target, s->name, s->n_dims, s->ne, (int)layers, NULL);
        int same = !strcmp(s->name, o->name) && s->n_dims == o->n_dims && !memcmp(s->ne, o->ne, sizeof s->ne);
        CHECK(same && o->type == want, "%s: tensor %llu %s in order, shape and type %s (want %s)", target,
              (unsigned long long)i, s->name, es_type_info(o->type)->name, es_type_info(want)->name);
        if (!same) continue;
        int64_t n = s->ne[0], rows = s->ne[1] * s->ne[2] * s->ne[3];
        float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
        double e2 = 0, s2 = 0;
        for (int64_t r = 0; r < rows; r++) {
            es_dequant_row(es_kernels_best(), s->type, s->data + (size_t)r * es_row_bytes(s->type, n), x, n);
            es_dequant_row(es_kernels_best(), o->type, o->data + (size_t)r * es_row_bytes(o->type, n), y, n);
            for (int64_t k = 0; k < n; k++) {
                e2 += ((double)x[k] - y[k]) * ((double)x[k] - y[k]);
                s2 += (double)x[k] * x[k];
            }
        }
        double rel = s2 > 0 ? sqrt(e2 / s2) : sqrt(e2);
        CHECK(rel <= tensor_bound(o->type), "%s: %s (%s) error %.4f > %.4f", target, s->name,
              es_type_info(o->type)->name, rel, tensor_bound(o->type));
        free(x);
        free(y);
    }
    es_gguf_close(a);
    es_gguf_close(b);
}

/* Logits of the first 8 tokens against the F32 model's, per target: the
 * RMS error relative to the logits' RMS.  Measured (avx512 path): f16
 * 0.0005, bf16 0.004, q8_0 0.010, q6_k 0.056, q5_k 0.077, q4_k_m 0.061,
 * q4_k 0.157, q4_0 0.19, q3_k 0.31, q2_k 0.57, q4_1 0.166, q5_0 0.085,
 * q5_1 0.092, iq4_nl 0.175, iq4_xs 0.175 (iq4_xs's rows of 32..224 in
 * IQ4_NL) — about 3x the weights'
 * error, as errors grow through the layers and flip some expert choices.
 * Bounds are ~1.5x, room for SIMD paths that round activations to 8 bits. */
static double logit_bound(const char *target) {
    static const struct { const char *name; double bound; } b[] = {
        {"f32", 1e-6}, {"f16", 0.002}, {"bf16", 0.01}, {"q8_0", 0.03}, {"q6_k", 0.09}, {"q5_k", 0.12},
        {"q4_k_m", 0.1}, {"q4_k", 0.25}, {"q4_0", 0.3}, {"q3_k", 0.45}, {"q2_k", 0.85},
        {"q4_1", 0.25}, {"q5_0", 0.13}, {"q5_1", 0.14}, {"iq4_nl", 0.27}, {"iq4_xs", 0.27},
    };
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
        if (!strcmp(b[i].name, target)) return b[i].bound;
    return 0;
}

static void test_targets(const char *model, const int32_t *tok, const float *ref, int nv) {
    static const char *all[] = {"f32",  "f16",  "bf16", "q8_0",   "q4_0",   "q4_1", "q5_0", "q5_1",
                                "iq4_nl", "iq4_xs", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q4_k_m"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        char name[64], err[512];
        snprintf(name, sizeof name, "m-%s.gguf", all[i]);
        /* small chunks: every tensor is split across many steps and threads */
        es_quantize_params qp = {.n_threads = 2, .chunk_bytes = 40000};
        es_status st = es_quantize_file(model, tmp(name), all[i], &qp, err, sizeof err);
        CHECK(st == ES_OK, "quantize %s: %s", all[i], err);
        if (st != ES_OK) continue;
        check_file(model, tmp(name), all[i]);
        int nv2 = 0;
        float *lg = test_logits_of(tmp(name), tok, 8, &nv2);
        CHECK(lg && nv2 == nv, "%s model runs", all[i]);
        if (!lg) continue;
        parity p = compare(ref, lg, 8, nv);
        printf("%-7s 8-token logits: RMS error %.4f of RMS (bound %.3g), top-1 %.0f%%\n", all[i], p.rel_rms,
               logit_bound(all[i]), 100 * p.agree);
        CHECK(p.rel_rms <= logit_bound(all[i]), "%s logits error %.4f > %.4f", all[i], p.rel_rms, logit_bound(all[i]));
        free(lg);
        if (strcmp(all[i], "q4_k") && strcmp(all[i], "q8_0")) remove(tmp(name));
    }
}

/* Quantised input: q8_0 -> q4_k goes through fp32 (close to f32 -> q4_k);
 * q4_k -> q4_k copies every tensor byte for byte. */
static void test_requantize(void) {
    char err[512];
    es_quantize_params qp = {.n_threads = 2};
    CHECK(es_quantize_file(tmp("m-q8_0.gguf"), tmp("m-q8-q4k.gguf"), "q4_k", &qp, err, sizeof err) == ES_OK,
          "requantize q8_0 -> q4_k: %s", err);
    CHECK(es_quantize_file(tmp("m-q4_k.gguf"), tmp("m-q4k-q4k.gguf"), "q4_k", &qp, err, sizeof err) == ES_OK,
          "requantize q4_k -> q4_k: %s", err);
    es_gguf_ctx *a = NULL, *b = NULL, *c = NULL;
    es_gguf_open_file(tmp("m-q4_k.gguf"), &a, err, sizeof err);
    es_gguf_open_file(tmp("m-q4k-q4k.gguf"), &b, err, sizeof err);
    es_gguf_open_file(tmp("m-q8-q4k.gguf"), &c, err, sizeof err);
    CHECK(a && b && c, "requantized files parse");
    if (a && b && c && a->n_tensors == b->n_tensors && a->n_tensors == c->n_tensors) {
        int identical = 1, types = 1;
        for (uint64_t i = 0; i < a->n_tensors; i++) {
            identical &= a->tensors[i].nbytes == b->tensors[i].nbytes &&
                         !memcmp(a->tensors[i].data, b->tensors[i].data, a->tensors[i].nbytes);
            types &= a->tensors[i].type == c->tensors[i].type;
        }
        CHECK(identical, "q4_k -> q4_k copies the tensors byte for byte");
        CHECK(types, "q8_0 -> q4_k gives the same types as f32 -> q4_k");
        /* through Q8_0 the values move by at most Q8_0's error first */
        const es_gguf_tensor *ta = es_gguf_find_tensor(a, "blk.1.ffn_up_exps.weight");
        const es_gguf_tensor *tc = es_gguf_find_tensor(c, "blk.1.ffn_up_exps.weight");
        if (ta && tc) {
            int64_t n = ta->ne[0], rows = ta->ne[1] * ta->ne[2];
            float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
            double e2 = 0, s2 = 0;
            for (int64_t r = 0; r < rows; r++) {
                es_dequant_row(es_kernels_best(), ES_TYPE_Q4_K, ta->data + (size_t)r * es_row_bytes(ES_TYPE_Q4_K, n), x, n);
                es_dequant_row(es_kernels_best(), ES_TYPE_Q4_K, tc->data + (size_t)r * es_row_bytes(ES_TYPE_Q4_K, n), y, n);
                for (int64_t k = 0; k < n; k++) {
                    e2 += ((double)x[k] - y[k]) * ((double)x[k] - y[k]);
                    s2 += (double)x[k] * x[k];
                }
            }
            CHECK(sqrt(e2 / s2) < 0.05, "q8_0 -> q4_k within %.3f of f32 -> q4_k", sqrt(e2 / s2));
            free(x);
            free(y);
        }
    }
    es_gguf_close(a);
    es_gguf_close(b);
    es_gguf_close(c);
}

/* ---- the Q4_K_M mix through the CLI ------------------------------------------------- */

static void test_cli_mix(const char *model, const int32_t *tok, int n, const float *ref, int nv) {
    const char *es = test_build_path("edgeseek");
    const char *out = tmp("cli-q4km.gguf"), *log = tmp("cli.log");
    CHECK(run("%s quantize -t 2 %s %s q4_k_m 2>%s", es, model, out, log) == 0, "edgeseek quantize q4_k_m");
    char *text = test_read_file(log, NULL);
    CHECK(text && strstr(text, "Q8_0 instead") && strstr(text, "bits/weight"),
          "progress names the fallback and ends with a summary");
    free(text);
    CHECK(run("%s info -m %s >%s 2>&1", es, out, log) == 0, "edgeseek info on the q4_k_m file");
    text = test_read_file(log, NULL);
    CHECK(text && strstr(text, "Q4_K") && strstr(text, "Q6_K"), "info lists Q4_K and Q6_K tensors");
    free(text);
    int nv2 = 0;
    float *lg = test_logits_of(out, tok, n, &nv2);
    CHECK(lg && nv2 == nv, "q4_k_m model runs");
    if (!lg) return;
    parity p = compare(ref, lg, n, nv);
    printf("q4_k_m %d-token logits: RMS error %.4f of RMS, max error %.4f of max |logit|, top-1 agreement "
           "%.1f%% (reference margins >= %.1f)\n", n, p.rel_rms, p.rel_max, 100 * p.agree, p.min_margin);
    /* measured (avx512 path): 0.048, 0.047, 100% with margins >= 53 */
    CHECK(p.rel_rms <= 0.07, "q4_k_m logits RMS error %.4f > 0.07", p.rel_rms);
    CHECK(p.rel_max <= 0.08, "q4_k_m logits max error %.4f > 0.08", p.rel_max);
    CHECK(p.agree >= 0.99, "q4_k_m top-1 agreement %.3f < 0.99", p.agree);
    free(lg);
}

static void test_cli_errors(const char *model) {
    const char *es = test_build_path("edgeseek");
    CHECK(run("%s quantize %s %s q4_x >/dev/null 2>&1", es, model, tmp("x.gguf")) == 2, "bad type: exit 2");
    CHECK(run("%s quantize %s %s >/dev/null 2>&1", es, model, tmp("x.gguf")) == 2, "missing type: exit 2");
    CHECK(run("%s quantize --bogus %s %s q8_0 >/dev/null 2>&1", es, model, tmp("x.gguf")) == 2, "bad option: exit 2");
    CHECK(run("%s quantize %s %s q8_0 >/dev/null 2>&1", es, tmp("missing.gguf"), tmp("x.gguf")) == 1,
          "missing input: exit 1");
    CHECK(run("%s quantize %s %s q8_0 >/dev/null 2>&1", es, model, model) == 1, "output = input: exit 1");
    /* a truncated model: parse error, and no output left behind */
    CHECK(run("head -c 100000 %s > %s", model, tmp("cut.gguf")) == 0, "truncate");
    CHECK(run("%s quantize %s %s q8_0 >/dev/null 2>&1", es, tmp("cut.gguf"), tmp("x.gguf")) == 1,
          "truncated input: exit 1");
    CHECK(!exists(tmp("x.gguf")), "no output file after a failure");
    CHECK(run("%s quantize --help >/dev/null", es) == 0, "--help: exit 0");
    CHECK(run("%s quantize --quiet %s %s q8_0 >/dev/null 2>%s", es, model, tmp("q.gguf"), tmp("q.log")) == 0,
          "--quiet");
    size_t len = 1;
    free(test_read_file(tmp("q.log"), &len));
    CHECK(len == 0, "--quiet prints nothing");
}

int main(void) {
    test_rules();
    snprintf(tmpdir, sizeof tmpdir, "/tmp/es-quantize-XXXXXX");
    if (!mkdtemp(tmpdir)) { CHECK(0, "mkdtemp"); return test_summary(); }
    int rc = run("%s -o %s --dim 256 --layers 3 --dense-layers 1 --ffn 512 --expert-ffn 256 --heads 4 "
                 "--q-lora 256 --kv-lora 256 --nope-dim 32 --rope-dim 32 --v-dim 64 --experts 4 --experts-used 2 "
                 "--shared-experts 1 --seed 7 --quiet",
                 test_build_path("gen_model"), tmp("gen.gguf"));
    CHECK(rc == 0, "gen_model");
    char model[512];
    snprintf(model, sizeof model, "%s", tmp("m.gguf"));
    CHECK(rc == 0 && tie_output(tmp("gen.gguf"), model) == 0, "tie output to token_embd");
    if (test_n_fail) return test_summary();
    enum { N_TOK = 256 };
    int32_t tok[N_TOK];
    uint64_t r = 12345;
    for (int i = 0; i < N_TOK; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((r >> 33) % 500);
    }
    int nv = 0;
    float *ref = test_logits_of(model, tok, N_TOK, &nv);
    CHECK(ref != NULL, "F32 model runs");
    if (ref) {
        test_targets(model, tok, ref, nv);
        test_requantize();
        test_cli_mix(model, tok, N_TOK, ref, nv);
        test_cli_errors(model);
    }
    free(ref);
    run("rm -rf %s", tmpdir);
    return test_summary();
}
