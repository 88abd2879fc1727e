/* test_reference.c — owns: an independent float64 reference forward pass for
 * deepseek2 GGUF models, and the tests that hold the runtime to it.
 *
 * The reference is written from docs/deepseek-semantics.md, not from
 * runtime/forward.c or model.c, so that it is a real cross-check: it reads
 * every tensor by name straight from the GGUF (gguf.h), dequantises it with
 * es_dequant_row into doubles, and runs the NAIVE (non-absorbed) MLA — every
 * head gets explicit keys k^h = [W_UK^h ĉ ; k_pe] and values v^h = W_UV^h ĉ —
 * with plain MoE routing and YaRN RoPE, all in float64.
 *
 * The runtime is driven only through the public API (es_model_load,
 * es_session_new, es_session_eval with all_positions, the route hook) on:
 *   - the golden models in tests/data/golden (whose float32 reference logits
 *     and routes also check the float64 reference itself),
 *   - models written by build/gen_model in many shapes and weight types.
 * Per model: logits of every position, the experts the route hook reports,
 * and incremental decode (prefill then one token or a chunk at a time)
 * against one full prefill.
 */
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgeseek.h"
#include "gguf.h"
#include "kernels.h"
#include "quant.h"
#include "testutil.h"

/* ---- tolerances ----------------------------------------------------------
 * The runtime accumulates in float32, the reference in float64, on the very
 * same (dequantised) weights, so every weight type is held to the same bound.
 * float32 rounding (6e-8 relative) compounded over a few layers of unit-scale
 * activations and dot products of length <= 512 stays far below 1e-5 of the
 * logit scale in practice; 1e-4 leaves an order of magnitude of headroom for
 * reordered (SIMD, threaded) sums while still catching any semantic slip,
 * which shows up at 1e-2 .. 1 of the logit scale. */
#define TOL_LOGITS_REL 1e-4
/* Incremental decode and one prefill run the same float32 arithmetic; only
 * summation order may differ between batch and single-token paths. */
#define TOL_INCREMENTAL_REL 1e-5
/* A routing decision whose margin (gap between the last chosen and first
 * rejected choice score, or group score) is below this may legitimately flip
 * between float32 and float64: router scores are O(1), their float32 error
 * is ~1e-6. */
#define TIE_MARGIN 1e-5

#include "reference.h"

/* ---- the runtime, through the public API --------------------------------- */

typedef struct rt_run {
    int n_layers, T, k;
    float *logits;   /* [T][V] */
    int32_t *route;  /* [n_layers][T][k] */
    int hook_calls, hook_bad;
} rt_run;

static void route_hook(void *user, int layer, int pos, const int32_t *ex, int k) {
    rt_run *r = user;
    r->hook_calls++;
    if (layer < 0 || layer >= r->n_layers || pos < 0 || pos >= r->T || k != r->k) {
        r->hook_bad++;
        return;
    }
    memcpy(r->route + ((size_t)layer * r->T + pos) * k, ex, sizeof(int32_t) * (size_t)k);
    for (int j = 1; j < k; j++)
        if (ex[j - 1] >= ex[j]) r->hook_bad++; /* documented as sorted ascending */
}

/* Evaluates tok[0..T) in chunks of the given sizes (sum T; NULL: one chunk),
 * keeping every position's logits.  0 on success. */
static int rt_eval(es_model *em, const int32_t *tok, int T, const int *chunks, rt_run *r, char *err, size_t errlen) {
    es_session *s;
    int V = es_model_n_vocab(em);
    if (es_session_new(em, T, &s, err, errlen) != ES_OK) return -1;
    es_session_set_route_hook(s, route_hook, r);
    int pos = 0, rc = 0;
    for (int c = 0; pos < T && rc == 0; c++) {
        int n = chunks ? chunks[c] : T;
        if (n <= 0 || n > T - pos) n = T - pos;
        if (es_session_eval(s, tok + pos, n, r->logits + (size_t)pos * V, 1, err, errlen) != ES_OK) rc = -1;
        else if (es_session_pos(s) != pos + n) { snprintf(err, errlen, "session position %d after %d tokens", es_session_pos(s), pos + n); rc = -1; }
        pos += n;
    }
    es_session_free(s);
    return rc;
}

static int rt_run_init(rt_run *r, int n_layers, int T, int k, int V) {
    memset(r, 0, sizeof *r);
    r->n_layers = n_layers;
    r->T = T;
    r->k = k > 0 ? k : 1;
    r->logits = calloc((size_t)T * V, sizeof(float));
    r->route = malloc(sizeof(int32_t) * (size_t)n_layers * T * r->k);
    if (!r->logits || !r->route) return -1;
    for (size_t i = 0; i < (size_t)n_layers * T * r->k; i++) r->route[i] = -1;
    return 0;
}

static void rt_run_free(rt_run *r) {
    free(r->logits);
    free(r->route);
}

/* ---- one model: reference vs runtime ------------------------------------------ */

typedef struct golden {
    const float *logits; /* [T][V] or NULL */
    double tol;          /* the case's own max |Δ| */
    const char *route_path;
} golden;

static double max_abs(const double *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

static void check_golden_routes(const char *label, const rmodel *rm, const rrun *run, const char *path) {
    char *txt = test_read_file(path, NULL);
    CHECK(txt != NULL, "%s: cannot read %s", label, path);
    if (!txt) return;
    int k = rm->hp.k, lines = 0, bad = 0;
    for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#' || !line[0]) continue;
        char *p = line;
        long il = strtol(p, &p, 10), t = strtol(p, &p, 10);
        int32_t want[256];
        for (int j = 0; j < k && j < 256; j++) want[j] = (int32_t)strtol(p, &p, 10);
        lines++;
        if (il < 0 || il >= rm->hp.n_layers || t < 0 || t >= run->T ||
            memcmp(want, run->own + ((size_t)il * run->T + t) * k, sizeof(int32_t) * k) != 0)
            bad++;
    }
    CHECK(lines > 0 && bad == 0, "%s: reference routes differ from route.txt in %d of %d decisions", label, bad, lines);
    free(txt);
}

/* Whether kernel table K quantises the activations for any weight type
 * of this file (ggml-style Q8_0 x Q8_0 integer dot products).  Then the
 * runtime no longer computes the spec's arithmetic on the stored weights,
 * only an approximation of it, and the strict tolerance cannot hold. */
static int quantised_activations(const rmodel *rm, const es_kernels *K) {
    for (uint64_t i = 0; i < rm->g->n_tensors; i++)
        if (rm->g->tensors[i].n_dims >= 2 && es_plan_matvec(K, rm->g->tensors[i].type).act_type != ES_TYPE_F32)
            return 1;
    return 0;
}

/* Q8_0 activations carry a rounding error of up to d/2 = amax/254 per value:
 * about 0.7% RMS of every matrix product's output for unit-scale inputs,
 * compounded over ~10 products per layer and a few layers, and amplified
 * where it flips an expert choice.  5% RMS of the logits (measured: ~1-3%)
 * still catches a broken kernel (wrong nibble order, scale, block stride),
 * which is off by 30-100%. */
#define TOL_QACT_RMS 5e-2
/* The same noise moves router inputs by ~1%: a choice closer than this may
 * flip, and the reference then follows the runtime so that the logits stay
 * comparable; a flip with a wider margin is a routing error. */
#define TIE_MARGIN_QACT 2e-2
/* incremental decode against one prefill with Q8_0 activations (below) */
#define TOL_INCREMENTAL_QACT_RMS 2e-2

/* The comparison on one kernel path, with the reference loaded. */
static void check_path(const char *label, const rmodel *rm, es_model *em, es_model *em_abs, const int32_t *tok,
                       int T, const golden *gd) {
    const rhp *hp = &rm->hp;
    const int V = hp->V, NL = hp->n_layers, k = hp->k > 0 ? hp->k : 1;
    const int qact = quantised_activations(rm, es_kernels_for(es_model_simd(em), NULL, 0));
    char err[512] = "";
    rt_run full;
    rrun run = {0};
    if (rt_run_init(&full, NL, T, k, V) != 0) { CHECK(0, "%s: out of memory", label); goto out; }
    int rc = rt_eval(em, tok, T, NULL, &full, err, sizeof err);
    CHECK(rc == 0, "%s: eval failed: %s", label, err);
    if (rc != 0) goto out;

    /* route hook: once per MoE layer and token, never for dense layers */
    int n_moe = NL - hp->n_dense, missing = 0, dense_called = 0;
    for (int il = 0; il < NL; il++)
        for (int t = 0; t < T; t++) {
            int32_t e0 = full.route[((size_t)il * T + t) * k];
            if (il < hp->n_dense) dense_called += e0 != -1;
            else missing += e0 == -1;
        }
    CHECK(full.hook_calls == n_moe * T && !full.hook_bad && !missing && !dense_called,
          "%s: route hook called %d times (want %d), %d malformed, %d missing, %d on dense layers", label,
          full.hook_calls, n_moe * T, full.hook_bad, missing, dense_called);

    if (rforward(rm, tok, T, full.route, qact ? TIE_MARGIN_QACT : TIE_MARGIN, &run) != 0) { CHECK(0, "%s: reference forward failed", label); goto out; }
    CHECK(run.n_mismatch == 0, "%s: runtime experts differ from the reference in %d decisions (min margin %.3g)",
          label, run.n_mismatch, run.min_margin);
    if (run.n_adopted)
        printf("note %s: %d near-tie routing decisions (margins up to %.3g) followed the runtime\n", label,
               run.n_adopted, run.max_adopted);

    size_t n = (size_t)T * V;
    double scale = max_abs(run.logits, n), maxd = 0, ss_d = 0, ss_r = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)full.logits[i] - run.logits[i]);
        maxd = d > maxd || d != d ? d : maxd;
        ss_d += d * d;
        ss_r += run.logits[i] * run.logits[i];
    }
    if (!qact) {
        double tol = TOL_LOGITS_REL * (scale > 1 ? scale : 1);
        printf("%-40s max|Δ| %.3g (logit scale %.3g, tol %.3g, min route margin %.3g)\n", label, maxd, scale, tol,
               run.min_margin);
        CHECK(maxd <= tol, "%s: max |logit Δ| %.4g exceeds %.4g", label, maxd, tol);
    } else {
        double rel = sqrt(ss_d / (ss_r > 0 ? ss_r : 1));
        printf("%-40s Q8_0 activations: RMS Δ %.3g of the logits' RMS (tol %.3g), max|Δ| %.3g of scale %.3g, "
               "routing followed in %d near-ties\n", label, rel, TOL_QACT_RMS, maxd, scale, run.n_adopted);
        CHECK(rel <= TOL_QACT_RMS, "%s: RMS logit Δ %.4g of the RMS exceeds %.4g", label, rel, TOL_QACT_RMS);
    }

    if (gd && gd->logits) {
        double gref = 0, grt = 0;
        for (size_t i = 0; i < n; i++) {
            double a = fabs(run.logits[i] - gd->logits[i]), b = fabs((double)full.logits[i] - gd->logits[i]);
            gref = a > gref || a != a ? a : gref;
            grt = b > grt || b != b ? b : grt;
        }
        printf("%-40s vs golden: reference %.3g, runtime %.3g (tol %.3g)\n", label, gref, grt, gd->tol);
        CHECK(gref <= gd->tol, "%s: the float64 reference is %.4g from the golden logits", label, gref);
        CHECK(qact || grt <= gd->tol, "%s: the runtime is %.4g from the golden logits", label, grt);
    }
    if (gd && gd->route_path) check_golden_routes(label, rm, &run, gd->route_path);

    /* incremental decode: same logits as the one prefill, whatever the
     * chunking.  With Q8_0 activations the two forms of MLA attention
     * (runtime/attention.c) round differently, and a batch's size picks its
     * form, so there every batch is forced absorbed, in the one prefill too:
     * em_abs, the same file on the same path loaded with the absorbed form
     * (tests/test_attention compares the forms). */
    rt_run full_abs = {0};
    const rt_run *base = &full;
    if (qact) {
        if (rt_run_init(&full_abs, NL, T, k, V) != 0 || !em_abs ||
            rt_eval(em_abs, tok, T, NULL, &full_abs, err, sizeof err) != 0) {
            CHECK(0, "%s: absorbed prefill failed: %s", label, err);
            rt_run_free(&full_abs);
            goto out;
        }
        base = &full_abs;
    }
    int half = T / 2;
    int sched_a[64], sched_b[64], na = 0, nb = 0;
    sched_a[na++] = half;
    while (na < 64 && half + na - 1 < T) sched_a[na++] = 1;
    for (int pos = 0; nb < 64 && pos < T; pos += 5) sched_b[nb++] = 5;
    const int *scheds[2] = {sched_a, sched_b};
    const char *names[2] = {"prefill T/2 then 1-token steps", "chunks of 5"};
    for (int si = 0; si < 2; si++) {
        rt_run inc;
        if (rt_run_init(&inc, NL, T, k, V) != 0) { CHECK(0, "out of memory"); rt_run_free(&inc); continue; }
        rc = rt_eval(qact ? em_abs : em, tok, T, scheds[si], &inc, err, sizeof err);
        CHECK(rc == 0, "%s: incremental eval failed: %s", label, err);
        double dmax = 0, ssd = 0, ssf = 0;
        for (size_t i = 0; rc == 0 && i < n; i++) {
            double d = fabs((double)inc.logits[i] - base->logits[i]);
            dmax = d > dmax || d != d ? d : dmax;
            ssd += d * d;
            ssf += (double)base->logits[i] * base->logits[i];
        }
        double itol = TOL_INCREMENTAL_REL * (scale > 1 ? scale : 1);
        if (!qact) {
            CHECK(rc == 0 && dmax <= itol, "%s: %s differs from one prefill by %.4g (tol %.4g)", label, names[si],
                  dmax, itol);
        } else {
            /* batch and single-token products may sum in different orders;
             * with Q8_0 activations a last-bit difference can move a value
             * across a rounding step (d = amax/127) of the next product's
             * input, and the step propagates.  Measured: scaling one matvec
             * kernel's outputs by 1 - 5e-7 moves these models' logits by up
             * to 0.8% RMS (max 1% of the scale).  So 2% RMS here; the
             * generic path, without activation rounding, keeps the exact
             * check of the same schedules above. */
            double rel = sqrt(ssd / (ssf > 0 ? ssf : 1));
            CHECK(rc == 0 && (dmax <= itol || rel <= TOL_INCREMENTAL_QACT_RMS),
                  "%s: %s differs from one prefill by %.4g (tol %.4g), RMS %.3g of the logits' (tol %.3g)", label,
                  names[si], dmax, itol, rel, TOL_INCREMENTAL_QACT_RMS);
            if (dmax > itol)
                printf("note %s: %s: max|Δ| %.3g from one prefill (an activation rounding step), RMS %.3g of the "
                       "logits'\n", label, names[si], dmax, rel);
        }
        CHECK(rc != 0 || memcmp(inc.route, base->route, sizeof(int32_t) * (size_t)NL * T * k) == 0,
              "%s: %s routes differently from one prefill", label, names[si]);
        rt_run_free(&inc);
    }
    rt_run_free(&full_abs);
out:
    rrun_free(&run);
    rt_run_free(&full);
}

/* The full comparison for one model file and token sequence, on every
 * kernel path this CPU can run (generic first: the plain float32 reading of
 * the spec), the model loaded with each path's kernels. */
static void check_model(const char *label, const char *path, const int32_t *tok, int T, const golden *gd) {
    static const char *paths[] = {"generic", "avx2", "avx512", "amx", "neon"};
    char err[512] = "";
    rmodel rm;
    if (rmodel_load(&rm, path) != 0) { /* the reference dequantises with the scalar code */
        CHECK(0, "%s: reference cannot load %s: %s", label, path, rm.err);
        rmodel_free(&rm);
        return;
    }
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        if (!es_simd_supported(paths[p])) continue;
        es_load_params lp = {.simd = paths[p]}, lp_abs = {.simd = paths[p], .mla = ES_MLA_ABSORBED};
        es_model *em = NULL, *em_abs = NULL;
        es_status st = es_model_load(path, &lp, &em, err, sizeof err);
        CHECK(st == ES_OK, "%s [%s]: es_model_load: %s", label, paths[p], err);
        if (st != ES_OK) continue;
        CHECK(es_model_n_vocab(em) == rm.hp.V, "%s: n_vocab %d, reference %d", label, es_model_n_vocab(em), rm.hp.V);
        if (quantised_activations(&rm, es_kernels_for(es_model_simd(em), NULL, 0)) &&
            es_model_load(path, &lp_abs, &em_abs, err, sizeof err) != ES_OK)
            CHECK(0, "%s [%s]: es_model_load (absorbed): %s", label, paths[p], err);
        char pl[256];
        snprintf(pl, sizeof pl, "%s [%s]", label, paths[p]);
        check_path(pl, &rm, em, em_abs, tok, T, gd);
        es_model_free(em_abs);
        es_model_free(em);
    }
    rmodel_free(&rm);
}

/* ---- golden cases ----------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Runs one golden case; 0 if the folder is not a model case (it has no
 * model.gguf, like tokenizer/).  A model case missing its tokens or logits
 * is a failure. */
static int golden_case(const char *name) {
    char dir[1024], p[1200];
    snprintf(dir, sizeof dir, "%s", test_data_path("golden"));
    snprintf(p, sizeof p, "%s/%s/model.gguf", dir, name);
    if (access(p, F_OK) != 0) return 0;
    snprintf(p, sizeof p, "%s/%s/tokens.txt", dir, name);
    char *txt = test_read_file(p, NULL);
    snprintf(p, sizeof p, "%s/%s/logits.f32", dir, name);
    size_t lbytes = 0;
    float *gl = test_read_file(p, &lbytes);
    CHECK(txt && gl, "golden %s: cannot read tokens.txt or logits.f32 in %s", name, dir);
    if (!txt || !gl) { free(txt); free(gl); return 1; }
    int32_t tok[4096];
    int T = 0;
    for (char *q = txt; *q && T < 4096;) {
        char *end;
        long v = strtol(q, &end, 10);
        if (end == q) { q++; continue; }
        tok[T++] = (int32_t)v;
        q = end;
    }
    double tol = 5e-5; /* the README's tolerance, unless case.json says otherwise */
    snprintf(p, sizeof p, "%s/%s/case.json", dir, name);
    char *cj = test_read_file(p, NULL);
    char *tk = cj ? strstr(cj, "\"tolerance_max_abs\"") : NULL;
    if (tk && (tk = strchr(tk, ':'))) tol = strtod(tk + 1, NULL);
    free(cj);
    snprintf(p, sizeof p, "%s/%s/route.txt", dir, name);
    char route[1200];
    snprintf(route, sizeof route, "%s", p);
    const char *files[] = {"model.gguf", "model-legacy.gguf"};
    for (int f = 0; f < 2; f++) {
        snprintf(p, sizeof p, "%s/%s/%s", dir, name, files[f]);
        if (access(p, R_OK) != 0) continue;
        char label[128];
        snprintf(label, sizeof label, "golden %s%s", name, f ? " (legacy)" : "");
        /* the golden logits must have been produced for this token count */
        golden gd = {.logits = gl, .tol = tol, .route_path = route};
        rmodel probe;
        int ok = rmodel_load(&probe, p) == 0 && lbytes == sizeof(float) * (size_t)T * probe.hp.V;
        rmodel_free(&probe);
        CHECK(ok, "%s: logits.f32 has %zu bytes for %d tokens", label, lbytes, T);
        if (ok) check_model(label, p, tok, T, &gd);
    }
    free(txt);
    free(gl);
    return 1;
}

static void golden_cases(void) {
    DIR *d = opendir(test_data_path("golden"));
    CHECK(d != NULL, "no golden directory at %s (tests/data/README.md)", test_data_path("golden"));
    if (!d) return;
    char *names[64];
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < 64;)
        if (e->d_name[0] != '.') names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    int n_cases = 0;
    for (int i = 0; i < n; i++) {
        n_cases += golden_case(names[i]);
        free(names[i]);
    }
    /* the six cases tests/data/README.md lists (test_golden names them too) */
    CHECK(n_cases >= 6, "%d golden model cases found in %s, expected 6", n_cases, test_data_path("golden"));
}

/* ---- generated models ------------------------------------------------------- */

typedef struct gen_case {
    const char *label;
    const char *args; /* gen_model options besides -o */
} gen_case;

/* Shapes that together cover every routing rule, both MLA layouts, both
 * query paths, YaRN, MTP layers and every weight type.  The tiny preset has
 * context 512; YaRN cases set the original context below it so that every
 * reading of "YaRN active" agrees. */
static const gen_case gen_cases[] = {
    {"softmax, no groups", "--preset tiny --type f32 --seed 1"},
    {"softmax, groups by max", "--preset tiny --type f32 --seed 2 --experts 16 --experts-used 4 --groups 4 --groups-used 2 --expert-scale 16"},
    {"sigmoid+bias, top-2 groups", "--preset tiny --type f32 --seed 3 --experts 16 --experts-used 4 --groups 4 --groups-used 2 --gating sigmoid --gate-bias --expert-norm --expert-scale 2.5"},
    {"sigmoid, no bias, no norm", "--preset tiny --type f32 --seed 4 --experts 16 --experts-used 3 --groups 4 --groups-used 3 --gating sigmoid --expert-norm=0"},
    {"q_lora, yarn", "--preset tiny --type f32 --seed 5 --q-lora 64 --yarn-factor 40 --yarn-orig-ctx 64 --yarn-log-mul 0.0707"},
    {"q_lora, no yarn", "--preset tiny --type f32 --seed 6 --q-lora 32"},
    {"yarn, no q_lora", "--preset tiny --type f32 --seed 7 --yarn-factor 4 --yarn-orig-ctx 128"},
    {"legacy kv_b", "--preset tiny --type f32 --seed 8 --legacy-kv --gating sigmoid --gate-bias --expert-norm --experts 16 --experts-used 4 --groups 4 --groups-used 2"},
    {"mtp layer skipped", "--preset tiny --type f32 --seed 9 --mtp=1 --dense-layers 2 --layers 4"},
    {"no shared experts", "--preset tiny --type f32 --seed 10 --shared-experts 0 --dense-layers 0"},
    {"f16 weights", "--preset tiny --type f16 --seed 11 --q-lora 32 --gating sigmoid --gate-bias --expert-norm --experts 16 --experts-used 4 --groups 4 --groups-used 2"},
    {"bf16 weights", "--preset tiny --type bf16 --seed 12 --yarn-factor 40 --yarn-orig-ctx 64"},
    {"q8_0 weights", "--preset tiny --type q8_0 --seed 13 --q-lora 32 --experts 16 --experts-used 4 --groups 4 --groups-used 2"},
    {"q4_0 weights", "--preset tiny --type q4_0 --seed 14 --gating sigmoid --gate-bias --expert-norm --experts 16 --experts-used 4 --groups 4 --groups-used 2"},
    {"q4_0 legacy kv_b", "--preset tiny --type q4_0 --seed 15 --legacy-kv --q-lora 32"},
};

static void gen_cases_run(void) {
    const char *gen = test_build_path("gen_model");
    char genp[4096];
    snprintf(genp, sizeof genp, "%s", gen);
    if (access(genp, X_OK) != 0) {
        SKIP("%s not built yet: generated-model cross-checks skipped", genp);
        return;
    }
    char dir[] = "/tmp/es_ref_XXXXXX";
    if (!mkdtemp(dir)) { CHECK(0, "mkdtemp failed"); return; }
    for (size_t c = 0; c < sizeof gen_cases / sizeof gen_cases[0]; c++) {
        char path[256], cmd[8192];
        snprintf(path, sizeof path, "%s/m%zu.gguf", dir, c);
        snprintf(cmd, sizeof cmd, "'%s' %s --quiet --threads 1 -o '%s' > '%s/log' 2>&1", genp, gen_cases[c].args,
                 path, dir);
        int rc = system(cmd);
        if (rc != 0) {
            char lp[300];
            snprintf(lp, sizeof lp, "%s/log", dir);
            char *log = test_read_file(lp, NULL);
            CHECK(0, "gen_model failed for '%s' (%s): %s", gen_cases[c].label, gen_cases[c].args, log ? log : "");
            free(log);
            continue;
        }
        /* 40 tokens: long enough for attention over several positions */
        int32_t tok[40];
        uint64_t st = 0x9e3779b97f4a7c15ull * (c + 1);
        rmodel probe;
        int V = rmodel_load(&probe, path) == 0 ? probe.hp.V : 256;
        rmodel_free(&probe);
        for (int i = 0; i < 40; i++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            tok[i] = (int32_t)((st >> 33) % (uint64_t)V);
        }
        char label[128];
        snprintf(label, sizeof label, "gen %s", gen_cases[c].label);
        check_model(label, path, tok, 40, NULL);
        remove(path);
    }
    char lp[300];
    snprintf(lp, sizeof lp, "%s/log", dir);
    remove(lp);
    rmdir(dir);
}

int main(void) {
    golden_cases();
    gen_cases_run();
    return test_summary();
}
