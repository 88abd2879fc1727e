/* test_mtp.c — owns: the tests of multi-token prediction (runtime/mtp.c,
 * runtime/spec.c) on models build/gen_model writes with a random MTP
 * (next-n) block:
 *   - the MTP forward against the float64 reference (tests/reference.c,
 *     written from the formula of DeepSeek-V3 §2.2), row by row as drafts
 *     are asked for one token at a time, and after a long prefill (rows run
 *     when the hidden window fills), after es_batch_eval and a truncation
 *     (rows recomputed);
 *   - speculative decoding at temperature 0 gives token for token what
 *     plain greedy decoding gives: with the MTP block's own drafts (a random
 *     block: nearly all rejected, and the gate's pauses), after a truncation
 *     (hidden states recomputed, the main cache left bit for bit), and with
 *     an oracle draft hook that is right two times in three (the accept
 *     path);
 *   - the acceptance rule keeps the distribution (statistical, fixed seed);
 *   - the gate: few drafts when they fail, none while experts are paged;
 *   - a model without the block refuses es_session_set_mtp with a message.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgeseek.h"
#include "model.h"
#include "mtp.h"
#include "reference.h"
#include "kernels.h"
#include "testutil.h"

/* as test_reference.c: the runtime in float32 against float64 on the same
 * weights (relative to the logit scale), a prefill against one token at a
 * time (summation order only), and with quantised activations an RMS bound */
#define TOL_REL 1e-4
#define TOL_INCREMENTAL_REL 1e-5
#define TOL_QACT_RMS 5e-2
#define TIE_MARGIN 1e-5

static const char *const models[] = {
    "--preset tiny --type f32 --seed 51 --mtp",
    "--preset tiny --type q8_0 --seed 52 --mtp --experts 16 --experts-used 4 --q-lora 32",
    ("--preset tiny --type f32 --seed 53 --mtp --mtp-shared --experts 16 --experts-used 4 --groups 4 "
     "--groups-used 2 --gating sigmoid --gate-bias --expert-norm"),
};
#define N_MODELS (int)(sizeof models / sizeof models[0])

static char err[512];

/* ---- routes the runtime chose, for the reference's near-ties ---------------- */

typedef struct routes {
    int n_layers, k, T; /* layers n_layers-1 .. : main; n_layers: the MTP block */
    int32_t *main;      /* [n_layers][T][k] */
    int32_t *mtp;       /* [T][k] */
} routes;

static void route_hook(void *user, int layer, int pos, const int32_t *ex, int k) {
    routes *r = user;
    if (pos < 0 || pos >= r->T || k != r->k) return;
    int32_t *dst = layer == r->n_layers ? r->mtp + (size_t)pos * k
                   : layer < r->n_layers ? r->main + ((size_t)layer * r->T + pos) * k : NULL;
    if (dst) memcpy(dst, ex, sizeof(int32_t) * (size_t)k);
}

static double max_abs_d(const double *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

/* Whether the model's kernels quantise activations (Q8 dot products): the
 * runtime then only approximates the float64 reference, and is held to
 * an RMS bound instead (as test_reference.c does). */
static int quantised_activations(const es_model *m) {
    const es_weight *w[] = {&m->nextn.eh_proj, &m->layers[m->hp.n_layers].wkv_a, &m->out};
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
        if (es_plan_matvec(m->kern, w[i]->type).act_type != ES_TYPE_F32) return 1;
    return 0;
}

/* How far rt is from ref over n values: the worst |Δ| relative to the
 * scale (max(|ref|, 1)), or with quantised activations the RMS of Δ
 * relative to the RMS of ref. */
static double distance(const float *rt, const double *ref, size_t n, int qact) {
    double scale = max_abs_d(ref, n), worst = 0, d2 = 0, r2 = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)rt[i] - ref[i]);
        worst = d > worst ? d : worst;
        d2 += d * d;
        r2 += ref[i] * ref[i];
    }
    return qact ? sqrt(d2 / (r2 > 0 ? r2 : 1)) : worst / (scale > 1 ? scale : 1);
}

/* The same between two runtime results. */
static double distance_f(const float *a, const float *b, size_t n, int qact) {
    double *d = malloc(sizeof(double) * n);
    if (!d) return INFINITY;
    for (size_t i = 0; i < n; i++) d[i] = b[i];
    double r = distance(a, d, n, qact);
    free(d);
    return r;
}

/* ---- the MTP forward against the reference ------------------------------------ */

/* Tokens 0..T-1, then the reference's MTP rows with next[t] = tok[t+1]
 * (the last row's next: tok[T]). */
static void check_forward(const char *label, const char *path, es_model *m, int T) {
    rmodel rm;
    if (rmodel_load(&rm, path) != 0) {
        CHECK(0, "%s: reference load: %s", label, rm.err);
        rmodel_free(&rm);
        return;
    }
    CHECK(rm.has_mtp, "%s: the reference finds no MTP block", label);
    const int V = es_model_n_vocab(m), k = m->hp.n_used, NL = m->hp.n_layers;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)(T + 1));
    for (int i = 0; i <= T; i++) tok[i] = (int32_t)((i * 37 + 11) % V);
    const int qact = quantised_activations(m);
    const double tie = qact ? INFINITY : TIE_MARGIN, tol = qact ? TOL_QACT_RMS : TOL_REL;
    const double itol = qact ? TOL_QACT_RMS : TOL_INCREMENTAL_REL; /* one row: the looser RMS bound */
    routes r = {NL, k, T, calloc((size_t)NL * (T + 1) * k, sizeof(int32_t)),
                calloc((size_t)(T + 1) * k, sizeof(int32_t))};
    float *draft = malloc(sizeof(float) * (size_t)T * V), *one = malloc(sizeof(float) * (size_t)V);
    double *ref = malloc(sizeof(double) * (size_t)T * V);
    es_session *a = NULL, *b = NULL, *c = NULL;
    if (!rm.has_mtp || !tok || !r.main || !r.mtp || !draft || !one || !ref) goto out;

    /* a: one token at a time, a draft before each next token */
    if (es_session_new(m, T + 8, &a, err, sizeof err) != ES_OK || es_session_set_mtp(a, 1, err, sizeof err) != ES_OK) {
        CHECK(0, "%s: session: %s", label, err);
        goto out;
    }
    es_session_set_route_hook(a, route_hook, &r);
    for (int p = 0; p < T; p++) {
        if (es_session_eval(a, &tok[p], 1, NULL, 0, err, sizeof err) != ES_OK ||
            es_session_mtp_draft(a, tok[p + 1], draft + (size_t)p * V, err, sizeof err) != ES_OK) {
            CHECK(0, "%s: position %d: %s", label, p, err);
            goto out;
        }
    }
    rrun run;
    if (rforward(&rm, tok, T, r.main, tie, &run) != 0) {
        CHECK(0, "%s: reference forward failed", label);
        goto out;
    }
    int mism = rmtp(&rm, run.hidden, tok + 1, T, r.mtp, tie, ref);
    CHECK(run.n_mismatch == 0 && mism == 0, "%s: routing differs from the reference without a near-tie (%d main, %d MTP)",
          label, run.n_mismatch, mism);
    rrun_free(&run);
    double e = distance(draft, ref, (size_t)T * V, qact);
    printf("%s, %d tokens: MTP drafts %.3g from the float64 reference (%s, bound %g)\n", label, T, e,
           qact ? "RMS, Q8 activations" : "max of the logit scale", tol);
    CHECK(e <= tol, "%s: MTP drafts, one token at a time, %.3g from the reference (bound %g)", label, e, tol);

    /* b: the whole prompt at once (rows run when the window fills), then one
     * draft: the last row's logits; c: es_batch_eval beside another
     * session, then a truncation: the rows are recomputed.  Both bit for
     * bit what a got. */
    if (es_session_new(m, T + 8, &b, err, sizeof err) != ES_OK || es_session_set_mtp(b, 1, err, sizeof err) != ES_OK ||
        es_session_eval(b, tok, T, NULL, 0, err, sizeof err) != ES_OK ||
        es_session_mtp_draft(b, tok[T], one, err, sizeof err) != ES_OK) {
        CHECK(0, "%s: prefill then draft: %s", label, err);
        goto out;
    }
    e = distance_f(one, draft + (size_t)(T - 1) * V, (size_t)V, qact);
    CHECK(e <= itol, "%s: the draft after a %d-token prefill is %.3g from the one-at-a-time draft (bound %g)", label,
          T, e, itol);
    if (es_session_new(m, T + 8, &c, err, sizeof err) != ES_OK || es_session_set_mtp(c, 1, err, sizeof err) != ES_OK) {
        CHECK(0, "%s: session: %s", label, err);
        goto out;
    }
    es_session *both[2] = {c, b};
    const int32_t *toks[2] = {tok, tok};
    int n[2] = {T, 1};
    if (es_session_truncate(b, T - 1, err, sizeof err) != ES_OK ||
        es_batch_eval(both, 2, toks, n, NULL, err, sizeof err) != ES_OK) {
        CHECK(0, "%s: batch: %s", label, err);
        goto out;
    }
    /* b now holds tok[0..T-2] then tok[0] at T-1: its draft there is not a's */
    if (es_session_truncate(c, T / 2, err, sizeof err) != ES_OK ||
        es_session_mtp_draft(c, tok[T / 2], one, err, sizeof err) != ES_OK) {
        CHECK(0, "%s: draft after batch and truncate: %s", label, err);
        goto out;
    }
    e = distance_f(one, draft + (size_t)(T / 2 - 1) * V, (size_t)V, qact);
    CHECK(e <= itol, "%s: the draft after es_batch_eval and a truncation is %.3g from the one-at-a-time draft", label,
          e);
out:
    es_session_free(a);
    es_session_free(b);
    es_session_free(c);
    free(tok); free(r.main); free(r.mtp); free(draft); free(one); free(ref);
    rmodel_free(&rm);
}

/* ---- identity at temperature 0 ---------------------------------------------------- */

typedef struct oracle {
    const int32_t *seq; /* the plain run's tokens, from position base */
    int base, n, calls;
} oracle;

/* Drafts the plain run's token after `next` two times in three, a wrong
 * one the third. */
static es_status oracle_draft(void *user, es_session *s, int32_t next, float *logits, char *e, size_t elen) {
    (void)next, (void)e, (void)elen;
    oracle *o = user;
    const int V = es_model_n_vocab(s->m), i = es_session_pos(s) + 1 - o->base;
    int32_t want = i >= 0 && i < o->n ? o->seq[i] : 0;
    if (++o->calls % 3 == 0) want = (want + 1) % V;
    for (int j = 0; j < V; j++) logits[j] = (float)((j * 7) % 13) * 0.1f;
    logits[want] = 100.0f;
    return ES_OK;
}

/* n tokens after the prompt: plain (one eval a token) or through es_spec. */
static int generate(es_model *m, const int32_t *prompt, int np, int n, int mtp, int32_t *out, es_spec_stats *st) {
    es_session *s = NULL;
    es_sampler_params sp = es_sampler_defaults();
    sp.temperature = 0;
    es_sampler *smp = es_sampler_new(&sp);
    float *lg = malloc(sizeof(float) * (size_t)es_model_n_vocab(m));
    es_spec *g = NULL;
    int got = -1;
    if (!smp || !lg || es_session_new(m, np + n + 4, &s, err, sizeof err) != ES_OK) goto done;
    if (mtp && es_session_set_mtp(s, 1, err, sizeof err) != ES_OK) goto done;
    if (es_session_eval(s, prompt, np, lg, 0, err, sizeof err) != ES_OK) goto done;
    if (mtp) {
        if (es_spec_new(s, smp, 1, lg, &g, err, sizeof err) != ES_OK) goto done;
        for (got = 0; got < n; got++)
            if (es_spec_next(g, &out[got], err, sizeof err) != ES_OK) break;
        es_spec_get_stats(g, st);
    } else {
        for (got = 0; got < n; got++) {
            out[got] = es_sampler_sample(smp, lg, es_model_n_vocab(m));
            if (got + 1 < n && es_session_eval(s, &out[got], 1, lg, 0, err, sizeof err) != ES_OK) break;
        }
    }
done:
    es_spec_free(g);
    es_session_free(s);
    es_sampler_free(smp);
    free(lg);
    return got;
}

/* A session that generated with MTP, cut back to `cut` tokens after the
 * prompt and continued from there (the MTP rows and hidden states of the
 * cut are recomputed, the main cache left as it was): plain's tokens. */
static void check_truncated(const char *label, es_model *m, const int32_t *prompt, int np, const int32_t *plain, int n,
                            int cut) {
    es_session *s = NULL;
    es_sampler_params sp = es_sampler_defaults();
    sp.temperature = 0;
    es_sampler *smp = es_sampler_new(&sp);
    float *lg = malloc(sizeof(float) * (size_t)es_model_n_vocab(m));
    int32_t *out = malloc(sizeof(int32_t) * (size_t)n);
    es_spec *g = NULL;
    es_spec_stats st = {0};
    int ok = smp && lg && out && es_session_new(m, np + n + 4, &s, err, sizeof err) == ES_OK &&
             es_session_set_mtp(s, 1, err, sizeof err) == ES_OK &&
             es_session_eval(s, prompt, np, lg, 0, err, sizeof err) == ES_OK &&
             es_spec_new(s, smp, 1, lg, &g, err, sizeof err) == ES_OK;
    for (int i = 0; ok && i < n; i++) ok = es_spec_next(g, &out[i], err, sizeof err) == ES_OK;
    es_spec_free(g);
    g = NULL;
    /* back to the prompt and cut-1 tokens, then the token at cut-1 again */
    ok = ok && es_session_truncate(s, np + cut - 1, err, sizeof err) == ES_OK &&
         es_session_eval(s, &plain[cut - 1], 1, lg, 0, err, sizeof err) == ES_OK &&
         es_spec_new(s, smp, 1, lg, &g, err, sizeof err) == ES_OK;
    int got = cut;
    for (; ok && got < n; got++) ok = es_spec_next(g, &out[got], err, sizeof err) == ES_OK;
    if (g) es_spec_get_stats(g, &st);
    CHECK(ok && !memcmp(out + cut, plain + cut, sizeof(int32_t) * (size_t)(n - cut)) && st.drafted > 0,
          "%s: after a truncation to %d tokens, MTP decode differs from plain decode (%s; %lld drafts)", label,
          np + cut, ok ? "different tokens" : err, (long long)st.drafted);
    es_spec_free(g);
    es_session_free(s);
    es_sampler_free(smp);
    free(lg);
    free(out);
}

/* A draft whose hidden states must be recomputed (after a truncation far
 * back) leaves the main cache as it was: the logits that follow are bit for
 * bit those of a session without MTP fed the same calls. */
static void check_recompute_cache(const char *label, es_model *m) {
    enum { NP = 150, K = 20 };
    const int V = es_model_n_vocab(m);
    int32_t tok[NP];
    for (int i = 0; i < NP; i++) tok[i] = (int32_t)((i * 29 + 3) % V);
    float *lx = malloc(sizeof(float) * (size_t)V * 2), *ly = lx ? lx + V : NULL;
    es_session *x = NULL, *y = NULL;
    int ok = lx && es_session_new(m, NP + 4, &x, err, sizeof err) == ES_OK &&
             es_session_new(m, NP + 4, &y, err, sizeof err) == ES_OK &&
             es_session_set_mtp(x, 1, err, sizeof err) == ES_OK;
    es_session *both[2] = {x, y};
    for (int i = 0; ok && i < 2; i++) {
        es_session *s = both[i];
        float *lg = i ? ly : lx;
        ok = es_session_eval(s, tok, NP, NULL, 0, err, sizeof err) == ES_OK &&
             es_session_truncate(s, K, err, sizeof err) == ES_OK &&
             es_session_eval(s, &tok[K], 1, lg, 0, err, sizeof err) == ES_OK &&
             (i || es_session_mtp_draft(s, tok[K + 1], lg, err, sizeof err) == ES_OK) &&
             es_session_eval(s, tok + K + 1, NP - K - 1, lg, 0, err, sizeof err) == ES_OK;
    }
    CHECK(ok && !memcmp(lx, ly, sizeof(float) * (size_t)V),
          "%s: the logits after a recomputing draft differ from a session without MTP (%s)", label,
          ok ? "not bit for bit" : err);
    es_session_free(x);
    es_session_free(y);
    free(lx);
}

static void check_identity(const char *label, es_model *m, int paged) {
    enum { NP = 9, N = 300 };
    int32_t prompt[NP], plain[N], spec[N];
    for (int i = 0; i < NP; i++) prompt[i] = (int32_t)((i * 53 + 5) % es_model_n_vocab(m));
    es_spec_stats st = {0};
    if (generate(m, prompt, NP, N, 0, plain, NULL) != N) {
        CHECK(0, "%s: plain decode: %s", label, err);
        return;
    }
    int got = generate(m, prompt, NP, N, 1, spec, &st);
    CHECK(got == N && !memcmp(plain, spec, sizeof plain), "%s: MTP decode differs from plain decode (%d tokens: %s)",
          label, got, got == N ? "different tokens" : err);
    CHECK(st.tokens == N && st.accepted <= st.drafted, "%s: stats: %lld tokens, %lld drafted, %lld accepted", label,
          (long long)st.tokens, (long long)st.drafted, (long long)st.accepted);
    if (paged) {
        CHECK(st.drafted == 0, "%s: %lld drafts while experts are paged (the gate keeps them off)", label,
              (long long)st.drafted);
    } else {
        /* a random block: nearly every draft fails, so the gate pauses (5
         * drafts, 128 tokens, 5, 256, ...) */
        CHECK(st.drafted >= 5 && st.drafted <= 16 && st.gated > 0,
              "%s: %lld drafts, %lld gated steps in %d tokens of failing drafts", label, (long long)st.drafted,
              (long long)st.gated, N);
        check_truncated(label, m, prompt, NP, plain, 200, 150);
        check_recompute_cache(label, m);
        /* the oracle: right 2 of 3 times, so the accept path runs too */
        oracle o = {plain, NP, N, 0};
        es_spec_draft_hook = oracle_draft;
        es_spec_draft_user = &o;
        got = generate(m, prompt, NP, N, 1, spec, &st);
        es_spec_draft_hook = NULL;
        CHECK(got == N && !memcmp(plain, spec, sizeof plain),
              "%s: decode with oracle drafts differs from plain decode (%d tokens)", label, got);
        CHECK(st.accepted > st.drafted / 2 && st.forwards < N * 3 / 4,
              "%s: oracle drafts: %lld of %lld accepted, %lld passes for %d tokens", label, (long long)st.accepted,
              (long long)st.drafted, (long long)st.forwards, N);
    }
}

static void one_model(int i, const char *path) {
    es_model *m = NULL;
    char label[64];
    snprintf(label, sizeof label, "model %d", i);
    if (es_model_load(path, NULL, &m, err, sizeof err) != ES_OK) {
        CHECK(0, "%s: load: %s", label, err);
        return;
    }
    CHECK(es_model_has_mtp(m), "%s: no MTP block found", label);
    check_forward(label, path, m, 12);
    check_forward(label, path, m, 150); /* longer than the hidden window: rows run on the way */
    check_identity(label, m, 0);
    es_model_free(m);
    if (i != 1) return;
    /* under a budget too small for the experts: no drafts, same tokens */
    es_load_params lp = {0};
    lp.mem_budget = 64 << 10;
    lp.experts = ES_EXPERTS_PREAD;
    if (es_model_load(path, &lp, &m, err, sizeof err) != ES_OK) {
        CHECK(0, "%s: paged load: %s", label, err);
        return;
    }
    snprintf(label, sizeof label, "model %d, paged", i);
    check_identity(label, m, 1);
    es_model_free(m);
}

static void no_mtp(int i, const char *path) {
    (void)i;
    es_model *m = NULL;
    es_session *s = NULL;
    if (es_model_load(path, NULL, &m, err, sizeof err) != ES_OK || es_session_new(m, 64, &s, err, sizeof err) != ES_OK) {
        CHECK(0, "load: %s", err);
        es_model_free(m);
        return;
    }
    CHECK(!es_model_has_mtp(m), "a model without next-n tensors reports an MTP block");
    err[0] = 0;
    CHECK(es_session_set_mtp(s, 1, err, sizeof err) == ES_ERR_UNSUPPORTED && strstr(err, "MTP"),
          "es_session_set_mtp on a model without the block: '%s'", err);
    float lg[1];
    CHECK(es_session_mtp_draft(s, 0, lg, err, sizeof err) == ES_ERR_ARG, "a draft with MTP off is refused");
    es_session_free(s);
    es_model_free(m);
}

/* ---- the acceptance rule ------------------------------------------------------------ */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double unit(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* Drafting from q and deciding against p must give tokens distributed as
 * p: over N draws each token's frequency within 5 standard deviations of
 * p (a false alarm about 1 in 10^6 per token, and the seed is fixed), and
 * the acceptance rate near sum_i min(p_i, q_i). */
static void check_rule(const char *label, const float *p, const float *q0, int V) {
    enum { N = 400000 };
    int count[16] = {0}, kept_n = 0;
    float q[16];
    double want_keep = 0;
    for (int i = 0; i < V; i++) want_keep += p[i] < q0[i] ? p[i] : q0[i];
    for (int it = 0; it < N; it++) {
        memcpy(q, q0, sizeof(float) * (size_t)V);
        int32_t d = es_spec_draw(q, V, unit());
        int kept;
        int32_t t = es_spec_decide(p, q, V, d, unit(), unit(), &kept);
        if (t < 0 || t >= V) { CHECK(0, "%s: token %d out of range", label, t); return; }
        count[t]++;
        kept_n += kept;
    }
    for (int i = 0; i < V; i++) {
        double f = (double)count[i] / N, sd = sqrt(p[i] * (1 - p[i]) / N);
        CHECK(fabs(f - p[i]) <= 5 * sd + 1e-9, "%s: token %d drawn %.5f of the time, p = %.5f (5 sd = %.5f)", label,
              i, f, p[i], 5 * sd);
    }
    double keep = (double)kept_n / N, sd = sqrt(want_keep * (1 - want_keep) / N);
    CHECK(fabs(keep - want_keep) <= 5 * sd + 1e-9, "%s: accepted %.5f, expected %.5f", label, keep, want_keep);
}

static void acceptance_rule(void) {
    const float p1[6] = {0.4f, 0.25f, 0.15f, 0.1f, 0.07f, 0.03f}, q1[6] = {0.1f, 0.1f, 0.3f, 0.3f, 0.0f, 0.2f};
    check_rule("skewed draft", p1, q1, 6);
    const float p2[4] = {0.25f, 0.25f, 0.25f, 0.25f};
    check_rule("same distribution", p2, p2, 4);
    const float p3[5] = {0, 0, 1, 0, 0}, q3[5] = {0, 1, 0, 0, 0};
    check_rule("greedy, wrong draft", p3, q3, 5);
    const float q4[5] = {0, 0, 1, 0, 0};
    check_rule("greedy, right draft", p3, q4, 5);
}

int main(void) {
    acceptance_rule();
    test_each_gen_model(models, N_MODELS, one_model);
    const char *plain[] = {"--preset tiny --type f32 --seed 54"};
    test_each_gen_model(plain, 1, no_mtp);
    return test_summary();
}
