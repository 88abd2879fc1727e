/* spec.c — speculative decoding with the MTP block (es_spec_*): one token
 * per call, each decided exactly as plain sampling would decide it.
 *
 * After the main model evaluated up to position P-1 and the token t at P
 * has been returned, a step drafts d = the MTP block's guess for P+1 (from
 * t and the hidden state of P-1), runs {t, d} in one forward pass, and
 * tests d against the main model's distribution p at P: kept with
 * probability min(1, p(d)/q(d)) (q: the draft's distribution under the same
 * sampler; greedy: both one-hot, so kept iff d is the argmax), else the
 * token comes from norm(max(0, p - q)) (greedy: the argmax) and d's cache
 * row is dropped.  A step without a draft evaluates t alone.
 *
 * The gate: drafts are judged in windows of 8; a window fails as soon as
 * more than 4 of its drafts were rejected (fewer than half can be kept),
 * and drafting then pauses for 128 tokens, doubling up to 4096 while windows
 * keep failing, back to 128 after a window that passes.  A step with a draft
 * costs more than one without (on a memory-bound model the MTP block, the
 * shared head read a second time and the second token's experts: measured
 * about 1.75 passes on a V2-Lite shape), so low acceptance must not go on
 * for long; a random block costs 5 drafts per pause.  Drafting stops for
 * good when routed experts are being evicted and reloaded (the MTP block's
 * experts are not paged, and a draft would add a second token's cold
 * experts). */
#include <stdlib.h>
#include <string.h>

#include "edgeseek.h"
#include "model.h"
#include "mtp.h"
#include "residency.h"

enum { WINDOW = 8, WINDOW_MIN_KEPT = 4, PAUSE_MIN = 128, PAUSE_MAX = 4096 };

struct es_spec {
    es_session *s;
    es_sampler *smp;
    int mtp, V;
    int have_logits;    /* lg holds the logits for the session's position; else `pending` is decided */
    int32_t pending;
    float *lg;          /* [V] */
    float *lg2;         /* [2][V] a verification's logits */
    float *p, *q;       /* [V] distributions */
    es_spec_stats st;
    int win_n, win_kept, pause, pause_next;
    int at, drafting;   /* es_spec_plan's: the position of pending; whether `draft` follows it */
    int32_t draft;
};

static void set_err(char *err, size_t errlen, const char *msg) {
    if (err && errlen) snprintf(err, errlen, "%s", msg);
}

void es_spec_free(es_spec *g) {
    if (!g) return;
    free(g->lg);
    free(g->lg2);
    free(g->p);
    free(g->q);
    free(g);
}

es_status es_spec_new(es_session *s, es_sampler *smp, int mtp, const float *logits, es_spec **out, char *err,
                      size_t errlen) {
    *out = NULL;
    if (!s || !smp || !logits) { set_err(err, errlen, "es_spec_new needs a session, a sampler and logits"); return ES_ERR_ARG; }
    if (mtp && !s->mtp) { set_err(err, errlen, "MTP is off for this session (es_session_set_mtp)"); return ES_ERR_ARG; }
    es_spec *g = calloc(1, sizeof *g);
    const size_t V = (size_t)s->m->hp.n_vocab;
    if (g) {
        g->lg = malloc(sizeof(float) * V);
        g->lg2 = malloc(sizeof(float) * 2 * V);
        g->p = malloc(sizeof(float) * V);
        g->q = malloc(sizeof(float) * V);
    }
    if (!g || !g->lg || !g->lg2 || !g->p || !g->q) {
        es_spec_free(g);
        set_err(err, errlen, "out of memory");
        return ES_ERR_NOMEM;
    }
    g->s = s;
    g->smp = smp;
    g->mtp = mtp;
    g->V = (int)V;
    g->have_logits = 1;
    g->pause_next = PAUSE_MIN;
    memcpy(g->lg, logits, sizeof(float) * V);
    *out = g;
    return ES_OK;
}

void es_spec_get_stats(const es_spec *g, es_spec_stats *st) { *st = g->st; }

void es_spec_restart(es_spec *g, const float *logits) {
    memcpy(g->lg, logits, sizeof(float) * (size_t)g->V);
    g->have_logits = 1;
}

/* Whether routed experts are being paged: evicted, or under a budget that
 * cannot hold them all. */
static int experts_paged(const es_model *m) {
    if (!m->res) return 0;
    es_res_counts c;
    es_res_get_counts(m->res, &c);
    const int64_t all = (int64_t)(m->hp.n_layers - m->hp.n_dense) * m->hp.n_experts;
    return c.evictions > 0 || (c.cap_units > 0 && c.cap_units < all);
}

es_draft_hook_fn es_spec_draft_hook;
void *es_spec_draft_user;

int32_t es_spec_draw(const float *probs, int V, double u) {
    double total = 0;
    for (int i = 0; i < V; i++) total += probs[i];
    double r = u * total, acc = 0;
    int32_t last = 0;
    for (int i = 0; i < V; i++)
        if (probs[i] > 0) {
            acc += probs[i];
            last = i;
            if (r < acc) return i;
        }
    return last;
}

/* The window's verdict after a draft: failed as soon as it can no longer
 * keep WINDOW_MIN_KEPT, passed when it is full. */
static void gate_note(es_spec *g, int kept) {
    g->win_n++;
    g->win_kept += kept;
    if (g->win_n - g->win_kept > WINDOW - WINDOW_MIN_KEPT) {
        g->pause = g->pause_next;
        g->pause_next = g->pause_next * 2 > PAUSE_MAX ? PAUSE_MAX : g->pause_next * 2;
    } else if (g->win_n == WINDOW) g->pause_next = PAUSE_MIN;
    else return;
    g->win_n = g->win_kept = 0;
}

int es_spec_ready(const es_spec *g) { return g->have_logits; }

es_status es_spec_plan(es_spec *g, int32_t tokens[2], int *n_eval, int32_t *tok, char *err, size_t errlen) {
    es_session *s = g->s;
    const int V = g->V;
    es_status st;
    *n_eval = 0;
    if (g->have_logits) { /* the token after the last evaluated position */
        *tok = g->pending = es_sampler_sample(g->smp, g->lg, V);
        g->have_logits = 0;
        g->st.tokens++;
        return ES_OK;
    }
    const int P = s->pos;
    const int32_t t = g->pending;
    if (P >= s->n_ctx) {
        if (err && errlen) snprintf(err, errlen, "context full (%d tokens)", s->n_ctx);
        return ES_ERR_CONTEXT;
    }
    if (g->mtp && g->pause == 0 && experts_paged(s->m)) {
        g->mtp = 0; /* for good: see the top */
        es_session_set_mtp(s, 0, NULL, 0);
    }
    const int draft = g->mtp && g->pause == 0 && P + 2 <= s->n_ctx;
    tokens[0] = t;
    g->at = P;
    g->drafting = 0;
    if (!draft) {
        if (g->mtp && g->pause > 0) g->pause--, g->st.gated++;
        *n_eval = 1;
        return ES_OK;
    }
    /* d ~ q, then {t, d} in one pass */
    st = es_spec_draft_hook ? es_spec_draft_hook(es_spec_draft_user, s, t, g->p, err, errlen)
                            : es_session_mtp_draft(s, t, g->p, err, errlen);
    if (st != ES_OK) return st;
    es_sampler_dist(g->smp, g->p, V, g->q); /* the draft's logits in p for a moment */
    tokens[1] = g->draft = es_spec_draw(g->q, V, es_sampler_uniform(g->smp));
    g->drafting = 1;
    *n_eval = 2;
    return ES_OK;
}

es_status es_spec_commit(es_spec *g, const float *logits, int32_t *tok, char *err, size_t errlen) {
    es_session *s = g->s;
    const int V = g->V;
    g->st.forwards++;
    g->st.tokens++;
    if (!g->drafting) {
        *tok = g->pending = es_sampler_sample(g->smp, logits, V);
        return ES_OK;
    }
    g->drafting = 0;
    g->st.drafted++;
    es_sampler_dist(g->smp, logits, V, g->p);
    const double u_keep = es_sampler_uniform(g->smp), u_rest = es_sampler_uniform(g->smp);
    int kept;
    const int32_t d = g->draft, next = es_spec_decide(g->p, g->q, V, d, u_keep, u_rest, &kept);
    gate_note(g, kept);
    if (kept) {
        g->st.accepted++;
        memcpy(g->lg, logits + V, sizeof(float) * (size_t)V);
        g->have_logits = 1;
        *tok = d;
        return ES_OK;
    }
    es_status st = es_session_truncate(s, g->at + 1, err, errlen);
    if (st != ES_OK) return st;
    *tok = g->pending = next;
    return ES_OK;
}

es_status es_spec_next(es_spec *g, int32_t *tok, char *err, size_t errlen) {
    int32_t toks[2];
    int n;
    es_status st = es_spec_plan(g, toks, &n, tok, err, errlen);
    if (st != ES_OK || n == 0) return st;
    st = es_session_eval(g->s, toks, n, g->lg2, n == 2, err, errlen);
    if (st != ES_OK) return st;
    return es_spec_commit(g, g->lg2, tok, err, errlen);
}

int32_t es_spec_decide(const float *p, float *q, int V, int32_t d, double u_keep, double u_rest, int *kept) {
    *kept = u_keep * q[d] < p[d]; /* probability min(1, p(d)/q(d)) */
    if (*kept) return d;
    double rest = 0; /* q <- max(0, p - q); p itself if rounding left nothing */
    for (int i = 0; i < V; i++) {
        q[i] = p[i] > q[i] ? p[i] - q[i] : 0.0f;
        rest += q[i];
    }
    return es_spec_draw(rest > 0 ? q : p, V, u_rest);
}
