/* test_attention.c — the MLA attention core (runtime/attention.c).
 *
 * 1. The core alone, on generated models of several shapes (both MLA
 *    layouts; F32, Q8_0, Q4_0 weights; dv != dn; R < dn; an odd rope width):
 *    for batches of awkward sizes and start positions (1, 2, 63, 64, 65, 130
 *    tokens; after 0, 1, 63, 64, 130, 200, 255, 256, 300 cached positions,
 *    so batches cross the expanded form's 256-position chunks and 64-key
 *    tiles), the absorbed and the expanded forms each against a float64
 *    evaluation of the spec's formula, and against each other; each form
 *    bit for bit the same with 1 and 3 threads.  Cache rows past the
 *    batch's last position hold NaN, so a form that reads beyond the causal
 *    limit fails.  On every SIMD path this CPU runs.
 * 2. End to end through the public API: prompts of 1, 2, 63, 64, 65 and 130
 *    tokens, and a second eval after a prior context, with the form forced
 *    each way (es_load_params.mla): the logits of every position agree.
 * 3. The automatic choice: decode is always absorbed; the crossover on the
 *    V2-Lite shape lies where the README says.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attention.h"
#include "edgeseek.h"
#include "kernels.h"
#include "model.h"
#include "testutil.h"

/* Float32 accumulation over a few hundred terms, against float64. */
#define TOL_F32_REL 2e-5
/* Kernels that quantise activations to Q8_0 (~0.4% RMS each on the latent,
 * the absorbed query, the latent sum): the two forms approximate
 * differently; a broken tile or mask is off by tens of percent. */
#define TOL_QACT_RMS 2e-2

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void) { /* uniform in [-1, 1) */
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) / (double)(1ull << 53) * 2 - 1;
}

/* ---- float64 evaluation ---------------------------------------------------- */

/* W_UK^h and W_UV^h of a layer as float64: uk[h][dn][R], uv[h][dv][R]. */
static void dequant_heads(const es_model *m, const es_layer *ly, double *uk, double *uv) {
    const es_hparams *hp = &m->hp;
    const int H = hp->n_heads, R = hp->kv_lora, dn = hp->nope, dv = hp->vdim;
    float *row = malloc(sizeof(float) * (size_t)(R > dn ? R : dn));
    for (int h = 0; h < H; h++) {
        if (ly->legacy_kv_b) {
            const es_weight *w = &ly->wkv_b;
            for (int d = 0; d < dn + dv; d++) {
                es_dequant_row(m->kern, w->type, w->data + (size_t)(h * (dn + dv) + d) * w->row_bytes, row, R);
                double *dst = d < dn ? uk + ((size_t)h * dn + d) * R : uv + ((size_t)h * dv + d - dn) * R;
                for (int r = 0; r < R; r++) dst[r] = row[r];
            }
            continue;
        }
        for (int r = 0; r < R; r++) {
            es_dequant_row(m->kern, ly->wk_b.type, ly->wk_b.data + h * ly->wk_b.mat_bytes + (size_t)r * ly->wk_b.row_bytes,
                           row, dn);
            for (int d = 0; d < dn; d++) uk[((size_t)h * dn + d) * R + r] = row[d];
        }
        for (int d = 0; d < dv; d++) {
            es_dequant_row(m->kern, ly->wv_b.type, ly->wv_b.data + h * ly->wv_b.mat_bytes + (size_t)d * ly->wv_b.row_bytes,
                           row, R);
            for (int r = 0; r < R; r++) uv[((size_t)h * dv + d) * R + r] = row[r];
        }
    }
    free(row);
}

/* out[T][H][dv]: K and V expanded in float64, softmax over 0..pos0+t. */
static void attention_f64(const es_model *m, const double *uk, const double *uv, const float *cache,
                          const float *q, int pos0, int T, double *out) {
    const es_hparams *hp = &m->hp;
    const int H = hp->n_heads, R = hp->kv_lora, dn = hp->nope, dr = hp->rope, dv = hp->vdim, kvw = R + dr;
    const int S = pos0 + T;
    double *k = malloc(sizeof(double) * (size_t)S * dn), *v = malloc(sizeof(double) * (size_t)S * dv);
    double *p = malloc(sizeof(double) * (size_t)S);
    for (int h = 0; h < H; h++) {
        for (int s = 0; s < S; s++) {
            const float *c = cache + (size_t)s * kvw;
            for (int d = 0; d < dn; d++) {
                double acc = 0;
                for (int r = 0; r < R; r++) acc += uk[((size_t)h * dn + d) * R + r] * c[r];
                k[(size_t)s * dn + d] = acc;
            }
            for (int d = 0; d < dv; d++) {
                double acc = 0;
                for (int r = 0; r < R; r++) acc += uv[((size_t)h * dv + d) * R + r] * c[r];
                v[(size_t)s * dv + d] = acc;
            }
        }
        for (int t = 0; t < T; t++) {
            const float *qh = q + ((size_t)t * H + h) * (dn + dr);
            const int n = pos0 + t + 1;
            double mx = -INFINITY, sum = 0;
            for (int s = 0; s < n; s++) {
                double acc = 0;
                for (int d = 0; d < dn; d++) acc += qh[d] * k[(size_t)s * dn + d];
                for (int i = 0; i < dr; i++) acc += qh[dn + i] * (double)cache[(size_t)s * kvw + R + i];
                p[s] = acc * hp->attn_scale;
                mx = p[s] > mx ? p[s] : mx;
            }
            for (int s = 0; s < n; s++) sum += p[s] = exp(p[s] - mx);
            double *o = out + ((size_t)t * H + h) * dv;
            for (int d = 0; d < dv; d++) {
                double acc = 0;
                for (int s = 0; s < n; s++) acc += p[s] * v[(size_t)s * dv + d];
                o[d] = acc / sum;
            }
        }
    }
    free(k);
    free(v);
    free(p);
}

/* ---- comparisons --------------------------------------------------------------- */

typedef struct diff {
    double max_abs, rms_rel, scale;
    int nonfinite;
} diff;

static diff compare(const float *got, const double *want, size_t n) {
    diff r = {0, 0, 0, 0};
    double ss_d = 0, ss_w = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) r.nonfinite++;
        double d = fabs(got[i] - want[i]);
        r.max_abs = d > r.max_abs ? d : r.max_abs;
        r.scale = fabs(want[i]) > r.scale ? fabs(want[i]) : r.scale;
        ss_d += d * d;
        ss_w += want[i] * want[i];
    }
    r.rms_rel = sqrt(ss_d / (ss_w > 0 ? ss_w : 1));
    return r;
}

static int within(diff d, int qact) {
    if (d.nonfinite) return 0;
    if (qact) return d.rms_rel <= TOL_QACT_RMS;
    return d.max_abs <= TOL_F32_REL * (d.scale > 1 ? d.scale : 1);
}

/* Whether the model's kernels quantise activations for its last layer's
 * up-projection weights. */
static int layer_qact(const es_model *m) {
    const es_layer *ly = &m->layers[m->hp.n_layers - 1];
    uint32_t t = ly->legacy_kv_b ? ly->wkv_b.type : ly->wv_b.type;
    uint32_t t2 = ly->legacy_kv_b ? ly->wkv_b.type : ly->wk_b.type;
    return es_plan_matvec(m->kern, t).act_type != ES_TYPE_F32 || es_plan_matvec(m->kern, t2).act_type != ES_TYPE_F32;
}

/* ---- 1. the core alone ------------------------------------------------------------- */

static const int core_cases[][2] = { /* {pos0, T} */
    {0, 1}, {0, 2}, {0, 63}, {0, 64}, {0, 65}, {0, 130}, {1, 64}, {63, 2}, {64, 64}, {64, 65},
    {130, 65}, {200, 57}, {200, 130}, {255, 1}, {255, 2}, {256, 64}, {300, 130},
};
#define CORE_CTX 430 /* the largest pos0 + T */
#define CORE_BATCH 130

typedef struct core_env {
    const char *label;
    es_model *m;
    es_session *s1, *s3;          /* 1 and 3 threads */
    es_attn_scratch *a1, *a3;
} core_env;

static void core_path(const core_env *e, const char *path_name) {
    const es_hparams *hp = &e->m->hp;
    const int H = hp->n_heads, R = hp->kv_lora, dn = hp->nope, dr = hp->rope, dv = hp->vdim, kvw = R + dr;
    const int layer = hp->n_layers - 1;
    const es_layer *ly = &e->m->layers[layer];
    const int qact = layer_qact(e->m);
    double *uk = malloc(sizeof(double) * (size_t)H * dn * R), *uv = malloc(sizeof(double) * (size_t)H * dv * R);
    float *cache = malloc(sizeof(float) * (size_t)CORE_CTX * kvw);
    float *q = malloc(sizeof(float) * (size_t)CORE_BATCH * H * (dn + dr));
    const size_t no = (size_t)CORE_BATCH * H * dv;
    float *o_abs = malloc(sizeof(float) * no), *o_exp = malloc(sizeof(float) * no), *o_one = malloc(sizeof(float) * no);
    double *want = malloc(sizeof(double) * no), *exp_d = malloc(sizeof(double) * no);
    dequant_heads(e->m, ly, uk, uv);
    int bad = 0;
    for (size_t c = 0; c < sizeof core_cases / sizeof core_cases[0]; c++) {
        const int pos0 = core_cases[c][0], T = core_cases[c][1], S = pos0 + T;
        /* unit-RMS latents (as after the norm), rope keys and queries of a
         * size that makes the softmax neither flat nor one-hot */
        for (int s = 0; s < CORE_CTX; s++)
            for (int i = 0; i < kvw; i++) cache[(size_t)s * kvw + i] = s < S ? (float)(urand() * 1.7) : NAN;
        for (size_t i = 0; i < (size_t)T * H * (dn + dr); i++) q[i] = (float)(urand() * 1.5);
        attention_f64(e->m, uk, uv, cache, q, pos0, T, want);
        const es_kv_view kv = es_kv_view_f32(cache, hp);
        const size_t n = (size_t)T * H * dv;

        es_attn_set_form(e->a3, ES_ATTN_ABSORBED);
        es_attention_core(e->s3, e->a3, ly, &kv, q, pos0, T, o_abs);
        es_attn_set_form(e->a1, ES_ATTN_ABSORBED);
        es_attention_core(e->s1, e->a1, ly, &kv, q, pos0, T, o_one);
        int same_abs = !memcmp(o_abs, o_one, sizeof(float) * n);
        es_attn_set_form(e->a3, ES_ATTN_EXPANDED);
        es_attention_core(e->s3, e->a3, ly, &kv, q, pos0, T, o_exp);
        es_attn_set_form(e->a1, ES_ATTN_EXPANDED);
        es_attention_core(e->s1, e->a1, ly, &kv, q, pos0, T, o_one);
        int same_exp = !memcmp(o_exp, o_one, sizeof(float) * n);

        diff da = compare(o_abs, want, n), de = compare(o_exp, want, n);
        for (size_t i = 0; i < n; i++) exp_d[i] = o_exp[i];
        diff dx = compare(o_abs, exp_d, n);
        int ok = within(da, qact) && within(de, qact) && within(dx, qact) && same_abs && same_exp;
        CHECK(ok,
              "%s [%s] pos0 %d T %d: absorbed vs f64 max %.3g rms %.3g, expanded vs f64 max %.3g rms %.3g, "
              "absorbed vs expanded max %.3g rms %.3g (scale %.3g, %d/%d non-finite), 1 vs 3 threads same: "
              "absorbed %d expanded %d",
              e->label, path_name, pos0, T, da.max_abs, da.rms_rel, de.max_abs, de.rms_rel, dx.max_abs, dx.rms_rel,
              da.scale, da.nonfinite, de.nonfinite, same_abs, same_exp);
        bad += !ok;
        if (c + 1 == sizeof core_cases / sizeof core_cases[0])
            printf("%-34s [%s]%s last case: absorbed rms %.2g, expanded rms %.2g, between %.2g\n", e->label,
                   path_name, qact ? " (Q8_0 activations)" : "", da.rms_rel, de.rms_rel, dx.rms_rel);
    }
    (void)bad;
    free(uk); free(uv); free(cache); free(q); free(o_abs); free(o_exp); free(o_one); free(want); free(exp_d);
}

/* The model loaded with the kernels of SIMD path simd (NULL: the default);
 * NULL with a failed check when it does not load. */
static es_model *load_on(const char *label, const char *path, const char *simd, int mla) {
    char err[512];
    es_load_params lp = {.simd = simd, .mla = mla};
    es_model *m = NULL;
    if (es_model_load(path, &lp, &m, err, sizeof err) != ES_OK) CHECK(0, "%s [%s]: %s", label, simd, err);
    return m;
}

/* The core on every SIMD path this CPU can run, a model loaded per path. */
static void core_model(const char *label, const char *path) {
    static const char *paths[] = {"generic", "avx2", "avx512", "neon"};
    char err[512];
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        if (!es_simd_supported(paths[p])) continue;
        core_env e = {label, load_on(label, path, paths[p], 0), NULL, NULL, NULL, NULL};
        if (!e.m) continue;
        CHECK(!strcmp(es_model_simd(e.m), paths[p]), "%s: model runs %s, asked %s", label, es_model_simd(e.m),
              paths[p]);
        int ok = es_session_new(e.m, CORE_CTX, &e.s1, err, sizeof err) == ES_OK &&
                 es_session_set_threads(e.s1, 1, err, sizeof err) == ES_OK &&
                 es_session_new(e.m, CORE_CTX, &e.s3, err, sizeof err) == ES_OK &&
                 es_session_set_threads(e.s3, 3, err, sizeof err) == ES_OK;
        CHECK(ok, "%s: sessions: %s", label, err);
        if (ok) {
            e.a1 = es_attn_scratch_new(e.m, CORE_CTX, CORE_BATCH, 1);
            e.a3 = es_attn_scratch_new(e.m, CORE_CTX, CORE_BATCH, 3);
            CHECK(e.a1 && e.a3, "%s: attention scratch", label);
            if (e.a1 && e.a3) core_path(&e, paths[p]);
        }
        es_attn_scratch_free(e.a1);
        es_attn_scratch_free(e.a3);
        es_session_free(e.s1);
        es_session_free(e.s3);
        es_model_free(e.m);
    }
}

/* ---- 2. end to end ------------------------------------------------------------------- */

/* Logits of every position: first n0 tokens, then (if n1) n1 more in a
 * second eval, on a model loaded with one MLA form.  0 on success. */
static int eval_forced(es_model *m, const int32_t *tok, int n0, int n1, float *logits) {
    char err[512];
    es_session *s = NULL;
    int ok = es_session_new(m, n0 + n1, &s, err, sizeof err) == ES_OK &&
             es_session_set_threads(s, 2, err, sizeof err) == ES_OK &&
             es_session_eval(s, tok, n0, logits, 1, err, sizeof err) == ES_OK &&
             (!n1 || es_session_eval(s, tok + n0, n1, logits + (size_t)n0 * es_model_n_vocab(m), 1, err,
                                     sizeof err) == ES_OK);
    if (!ok) CHECK(0, "eval: %s", err);
    es_session_free(s);
    return ok ? 0 : -1;
}

static void e2e_model(const char *label, const char *path) {
    static const int lens[][2] = {{1, 0}, {2, 0}, {63, 0}, {64, 0}, {65, 0}, {130, 0}, {70, 65}, {64, 1}, {5, 130}};
    static const char *paths[] = {"generic", NULL}; /* NULL: the path the runtime picks by itself */
    for (size_t p = 0; p < 2; p++) {
        /* the same file three times: absorbed, expanded, auto */
        es_model *ma = load_on(label, path, paths[p], ES_MLA_ABSORBED);
        es_model *me = load_on(label, path, paths[p], ES_MLA_EXPANDED);
        es_model *mu = load_on(label, path, paths[p], ES_MLA_AUTO);
        if (ma && me && mu) {
            const int V = es_model_n_vocab(ma);
            const char *name = es_model_simd(ma);
            int32_t tok[200];
            for (int i = 0; i < 200; i++) tok[i] = (int32_t)((urand() + 1) / 2 * (V - 1));
            const int qact = layer_qact(ma);
            for (size_t c = 0; c < sizeof lens / sizeof lens[0]; c++) {
                const int n = lens[c][0] + lens[c][1];
                float *la = malloc(sizeof(float) * (size_t)n * V), *le = malloc(sizeof(float) * (size_t)n * V);
                float *lu = malloc(sizeof(float) * (size_t)n * V);
                double *ref = malloc(sizeof(double) * (size_t)n * V);
                if (eval_forced(ma, tok, lens[c][0], lens[c][1], la) == 0 &&
                    eval_forced(me, tok, lens[c][0], lens[c][1], le) == 0 &&
                    eval_forced(mu, tok, lens[c][0], lens[c][1], lu) == 0) {
                    for (size_t i = 0; i < (size_t)n * V; i++) ref[i] = la[i];
                    diff de = compare(le, ref, (size_t)n * V), du = compare(lu, ref, (size_t)n * V);
                    /* logits: the activations' rounding compounds over the layers */
                    int ok = !de.nonfinite && !du.nonfinite &&
                             (qact ? de.rms_rel <= 5e-2 && du.rms_rel <= 5e-2
                                   : de.max_abs <= 1e-4 * (de.scale > 1 ? de.scale : 1) &&
                                         du.max_abs <= 1e-4 * (du.scale > 1 ? du.scale : 1));
                    CHECK(ok, "%s [%s] %d+%d tokens: expanded vs absorbed logits max %.3g rms %.3g, auto max %.3g "
                          "rms %.3g (scale %.3g)", label, name, lens[c][0], lens[c][1], de.max_abs, de.rms_rel,
                          du.max_abs, du.rms_rel, de.scale);
                }
                free(la); free(le); free(lu); free(ref);
            }
        }
        es_model_free(ma);
        es_model_free(me);
        es_model_free(mu);
    }
}

/* ---- 3. the choice ---------------------------------------------------------------------- */

static void pick_rule(void) {
    es_hparams hp = {0};
    hp.n_heads = 16, hp.kv_lora = 512, hp.nope = 128, hp.rope = 64, hp.vdim = 128; /* V2-Lite */
    int decode_abs = 1;
    for (int p = 0; p < 100000; p += 997) decode_abs &= es_attn_pick(&hp, 1, p) == ES_ATTN_ABSORBED;
    CHECK(decode_abs, "decode (T = 1) always runs absorbed");
    CHECK(es_attn_pick(&hp, 64, 0) == ES_ATTN_EXPANDED && es_attn_pick(&hp, 128, 0) == ES_ATTN_EXPANDED,
          "a prompt's first batch of 64 or 128 runs expanded");
    CHECK(es_attn_pick(&hp, 64, 448) == ES_ATTN_ABSORBED && es_attn_pick(&hp, 64, 1984) == ES_ATTN_ABSORBED &&
              es_attn_pick(&hp, 64, 4000) == ES_ATTN_ABSORBED,
          "a batch of 64 deeper in the context runs absorbed (half the expanded time at 448 and 1984)");
    CHECK(es_attn_pick(&hp, 16, 0) == ES_ATTN_ABSORBED && es_attn_pick(&hp, 16, 448) == ES_ATTN_ABSORBED &&
              es_attn_pick(&hp, 24, 4000) == ES_ATTN_ABSORBED,
          "small batches (16, 24) stay absorbed");
    CHECK(es_attn_pick(&hp, 512, 4000) == ES_ATTN_EXPANDED && es_attn_pick(&hp, 512, 0) == ES_ATTN_EXPANDED,
          "batches of hundreds of tokens run expanded at any depth");
}

/* ---- driver ------------------------------------------------------------------------------- */

static const struct {
    const char *label;
    int e2e; /* also end to end */
} cases[] = {
    {"f32 split", 1}, {"f32 legacy", 0}, {"f32 dv 40, dn 24, dr 6, R 48, H 3", 0}, {"f32 R 16 < dn 48, legacy", 0},
    {"q8_0 split", 0}, {"q4_0 split", 1}, {"q4_0 legacy", 0},
};
static const char *const case_args[] = {
    "--preset tiny --type f32 --seed 41",
    "--preset tiny --type f32 --seed 42 --legacy-kv",
    "--preset tiny --type f32 --seed 43 --kv-lora 48 --nope-dim 24 --v-dim 40 --rope-dim 6 --heads 3",
    "--preset tiny --type f32 --seed 44 --kv-lora 16 --nope-dim 48 --legacy-kv",
    "--preset tiny --type q8_0 --seed 45",
    "--preset tiny --type q4_0 --seed 46",
    "--preset tiny --type q4_0 --seed 47 --legacy-kv",
};

static void one_case(int i, const char *path) {
    core_model(cases[i].label, path);
    if (cases[i].e2e) e2e_model(cases[i].label, path);
}

int main(void) {
    pick_rule();
    test_each_gen_model(case_args, (int)(sizeof case_args / sizeof case_args[0]), one_case);
    return test_summary();
}
