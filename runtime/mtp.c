/* mtp.c — multi-token prediction: the MTP (next-n) block of DeepSeek-V3
 * (report §2.2) run as a draft model beside the main one.  For the token
 * t_{i+1} after position i and the main model's last hidden state h_i
 * (the residual stream after the last layer, before output_norm, as
 * llama.cpp's MTP graph takes it):
 *
 *   x_i    = eh_proj · [RMSNorm_enorm(Embed'(t_{i+1})) ; RMSNorm_hnorm(h_i)]
 *   x_i   += MLA(RMSNorm(x_i)); x_i += MoE(RMSNorm(x_i))   (block N = n_layers,
 *                                                         its own latent cache)
 *   draft  = Head' · RMSNorm_shared_head_norm(x_i)        (predicts t_{i+2})
 *
 * Embed' and Head' are the block's embed_tokens / shared_head_head when the
 * file has them, else the model's token_embd / output.
 *
 * The session keeps the MTP cache for positions [0, st->pos) and the main
 * model's hidden rows for a window of recent positions (forward.c hands
 * them over after every batch).  Rows run lazily: when a draft is asked
 * for, or when the window fills.  A row whose hidden state was lost (a
 * batched evaluation, a truncation, a loaded session) is recomputed by
 * running the main model over those tokens again, with the main cache's
 * rows put back after each batch: the main model's results never depend on
 * drafting. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "es_assert.h"
#include "kvcache.h"
#include "mtp.h"
#include "session.h"

typedef struct es_mtp_state {
    uint8_t *kv;        /* [n_ctx][kv_row] */
    int pos;            /* MTP rows valid for positions [0, pos) */
    int32_t last_next;  /* the token after row pos-1 that row ran with */
    float *hid;         /* [cap][D]: hidden rows of positions [h0, h0 + hn) */
    int h0, hn, cap;
    float *cat;         /* [B/2][2D] eh_proj's input */
    float *hrow;        /* [D] */
    int32_t *next;      /* [cap] tokens after the rows being run */
    uint8_t *saved;     /* [n_layers][B][kv_row] main cache rows kept while recomputing */
} es_mtp_state;

static void set_err(char *err, size_t errlen, const char *msg) {
    if (err && errlen) snprintf(err, errlen, "%s", msg);
}

int es_model_has_mtp(const es_model *m) { return m->has_mtp; }

uint8_t *es_mtp_kv(const es_session *s) {
    ES_ASSERT(s->mtp);
    return s->mtp->kv;
}

void es_mtp_free(es_session *s) {
    es_mtp_state *st = s->mtp;
    if (!st) return;
    free(st->kv);
    free(st->hid);
    free(st->cat);
    free(st->hrow);
    free(st->next);
    free(st->saved);
    free(st);
    s->mtp = NULL;
}

int es_session_mtp(const es_session *s) { return s->mtp != NULL; }

es_status es_session_set_mtp(es_session *s, int on, char *err, size_t errlen) {
    const es_model *m = s->m;
    if (!on) {
        es_mtp_free(s);
        return ES_OK;
    }
    if (s->mtp) return ES_OK;
    if (!m->has_mtp) {
        set_err(err, errlen, "the model has no MTP (next-n) block: nextn_predict_layers is 0 or its tensors are absent");
        return ES_ERR_UNSUPPORTED;
    }
    if (m->n_shares > 1) {
        set_err(err, errlen, "MTP is not available when the experts are shared between processes");
        return ES_ERR_UNSUPPORTED;
    }
    const size_t D = (size_t)m->hp.dim, B = (size_t)s->scratch->B;
    es_mtp_state *st = calloc(1, sizeof *st);
    if (st) {
        st->cap = 2 * (int)B + 4;
        st->kv = malloc(s->kv_row * (size_t)s->n_ctx);
        st->hid = malloc(sizeof(float) * (size_t)st->cap * D);
        st->cat = malloc(sizeof(float) * (B / 2) * 2 * D);
        st->hrow = malloc(sizeof(float) * D);
        st->next = malloc(sizeof(int32_t) * (size_t)st->cap);
        st->saved = malloc(s->kv_row * B * (size_t)m->hp.n_layers);
        st->last_next = -1;
    }
    s->mtp = st;
    if (!st || !st->kv || !st->hid || !st->cat || !st->hrow || !st->next || !st->saved) {
        es_mtp_free(s);
        set_err(err, errlen, "out of memory for the MTP block's cache");
        return ES_ERR_NOMEM;
    }
    return ES_OK;
}

/* Keeps the hidden rows of positions >= keep (and below the window's end). */
static void keep_from(es_mtp_state *st, int keep, int D) {
    if (keep <= st->h0) return;
    int drop = keep - st->h0;
    if (drop > st->hn) drop = st->hn;
    memmove(st->hid, st->hid + (size_t)drop * D, sizeof(float) * (size_t)(st->hn - drop) * D);
    st->hn -= drop;
    st->h0 += drop;
}

/* Drops MTP rows from `to` on; row to-1 ran with the token at `to`. */
static void rows_to(es_session *s, int to) {
    es_mtp_state *st = s->mtp;
    st->pos = to > 0 ? to : 0;
    st->last_next = st->pos > 0 ? s->tokens[st->pos] : -1;
}

void es_mtp_forget(es_session *s, int pos, int32_t first) {
    es_mtp_state *st = s->mtp;
    if (!st) return;
    if (st->h0 + st->hn > pos) st->hn = pos > st->h0 ? pos - st->h0 : 0;
    /* rows at pos and above ran with the hidden states of tokens that go;
     * row pos-1 ran with the token at pos, kept until another one comes */
    if (st->pos > pos) rows_to(s, pos);
    if (st->pos == pos && first >= 0 && first != st->last_next) rows_to(s, pos - 1);
}

/* MTP rows r0 .. r1-1 (r0 == st->pos, their hidden rows in the window),
 * next[i] the token after row r0+i; logits (may be NULL): the last row's
 * draft.  In pieces of B/2 rows (eh_proj's input is 2D wide). */
static int mtp_rows(es_session *s, int r0, int r1, const int32_t *next, float *logits, char *where, size_t wlen) {
    es_mtp_state *st = s->mtp;
    const es_model *m = s->m;
    const es_nextn *nx = &m->nextn;
    const es_kernels *K = m->kern;
    es_scratch *sc = s->scratch;
    const int D = m->hp.dim, C = sc->B / 2;
    ES_ASSERT(r0 == st->pos && st->h0 <= r0 && r1 <= st->h0 + st->hn && r1 > r0);
    for (int a = r0; a < r1; a += C) {
        const int T = r1 - a < C ? r1 - a : C;
        for (int t = 0; t < T; t++) {
            float *e = st->cat + (size_t)t * 2 * D;
            const int32_t tok = next[a - r0 + t];
            es_dequant_row(K, nx->embed.type, nx->embed.data + (size_t)tok * nx->embed.row_bytes, e, D);
            K->rmsnorm(e, e, nx->enorm, D, m->hp.eps);
            K->rmsnorm(e + D, st->hid + (size_t)(a + t - st->h0) * D, nx->hnorm, D, m->hp.eps);
        }
        es_fwd_matmul(s, &nx->eh_proj, 0, st->cat, 2 * (int64_t)D, T, sc->x, D);
        int r = es_fwd_block(s, m->hp.n_layers, a, T);
        if (r != 0) {
            if (r > 0 && where) snprintf(where, wlen, "the MTP block (blk.%d.*)", m->hp.n_layers);
            return r;
        }
        st->pos = a + T;
        st->last_next = next[a + T - 1 - r0];
        if (logits && a + T == r1) {
            K->rmsnorm(st->hrow, sc->x + (size_t)(T - 1) * D, nx->head_norm, D, m->hp.eps);
            es_fwd_matmul(s, &nx->head, 0, st->hrow, D, 1, logits, m->hp.n_vocab);
            for (int i = 0; i < m->hp.n_vocab; i++)
                if (!isfinite(logits[i])) {
                    if (where) snprintf(where, wlen, "the MTP head (blk.%d.nextn.shared_head_*)", m->hp.n_layers);
                    return 1;
                }
        }
    }
    keep_from(st, r1 - 1, D); /* row r1-1 stays for a draft that changes the token after it */
    return 0;
}

void es_mtp_keep_hidden(es_session *s, const float *x, int batch_pos, int T) {
    es_mtp_state *st = s->mtp;
    const int D = s->m->hp.dim;
    if (st->h0 + st->hn != batch_pos) st->h0 = batch_pos, st->hn = 0; /* a gap: the older rows are no use */
    ES_ASSERT(st->hn + T <= st->cap);
    memcpy(st->hid + (size_t)st->hn * D, x, sizeof(float) * (size_t)T * D);
    st->hn += T;
}

int es_mtp_after_batch(es_session *s, const int32_t *tokens, int call_pos, int batch_pos, int T, char *where,
                       size_t wlen) {
    es_mtp_state *st = s->mtp;
    const int D = s->m->hp.dim, limit = s->scratch->B + 2;
    if (st->hn <= limit) return 0;
    const int end = batch_pos + T - 1; /* rows below it know their next token */
    if (st->pos >= st->h0 && st->pos < end) {
        for (int q = st->pos + 1; q <= end; q++)
            st->next[q - st->pos - 1] = q < call_pos ? s->tokens[q] : tokens[q - call_pos];
        int r = mtp_rows(s, st->pos, end, st->next, NULL, where, wlen);
        if (r != 0) return r;
    }
    if (st->hn > limit) keep_from(st, st->h0 + st->hn - limit, D); /* rows lost: a draft recomputes them */
    return 0;
}

es_status es_session_mtp_draft(es_session *s, int32_t next, float *logits, char *err, size_t errlen) {
    es_mtp_state *st = s->mtp;
    const es_model *m = s->m;
    if (!st) { set_err(err, errlen, "MTP is off for this session (es_session_set_mtp)"); return ES_ERR_ARG; }
    if (next < 0 || next >= m->hp.n_vocab) {
        if (err && errlen) snprintf(err, errlen, "token id %d is outside the vocabulary (0..%d)", next, m->hp.n_vocab - 1);
        return ES_ERR_ARG;
    }
    const int P = s->pos;
    if (P == 0) { set_err(err, errlen, "nothing evaluated yet: a draft needs the main model's last hidden state"); return ES_ERR_ARG; }
    es_mtp_forget(s, P, -1);
    if (st->pos == P) rows_to(s, P - 1); /* the draft is row P-1's output: run it again */
    char where[128] = "";
    int r = 0;
    if (st->pos < st->h0 || st->h0 + st->hn < P) {
        /* hidden rows lost: run the main model over positions st->pos .. P-1
         * again, B at a time, each time putting the main cache's rows back
         * as they were (a batch of another size may change their low bits,
         * and the main model's logits must not depend on drafting) */
        const int q = st->pos, n = P - q, B = s->scratch->B, L = m->hp.n_layers;
        int32_t *toks = malloc(sizeof(int32_t) * (size_t)n);
        if (!toks) { set_err(err, errlen, "out of memory"); return ES_ERR_NOMEM; }
        memcpy(toks, s->tokens + q, sizeof(int32_t) * (size_t)n);
        for (int a = q; a < P && r == 0; a += B) {
            const int T = P - a < B ? P - a : B;
            for (int il = 0; il < L; il++)
                memcpy(st->saved + (size_t)il * B * s->kv_row, es_kv_layer(s, il).base + (size_t)a * s->kv_row,
                       (size_t)T * s->kv_row);
            s->pos = a;
            r = es_forward(s, toks + (a - q), T, NULL, 0, where, sizeof where);
            for (int il = 0; il < L; il++)
                memcpy(es_kv_layer(s, il).base + (size_t)a * s->kv_row, st->saved + (size_t)il * B * s->kv_row,
                       (size_t)T * s->kv_row);
        }
        s->pos = P; /* the rows and tokens are those it held */
        free(toks);
        if (r != 0) {
            es_mtp_forget(s, P, -1);
            if (err && errlen) snprintf(err, errlen, "rerunning %d tokens for the MTP block failed%s%s", n,
                                        r > 0 ? ": values stopped being finite in " : "", r > 0 ? where : "");
            return r > 0 ? ES_ERR_FORMAT : ES_ERR_IO;
        }
    }
    ES_ASSERT(st->pos >= st->h0 && st->h0 + st->hn >= P && P - st->pos <= st->cap);
    for (int q = st->pos + 1; q < P; q++) st->next[q - st->pos - 1] = s->tokens[q];
    st->next[P - 1 - st->pos] = next;
    r = mtp_rows(s, st->pos, P, st->next, logits, where, sizeof where);
    if (r != 0) {
        es_mtp_forget(s, P, -1);
        if (err && errlen)
            snprintf(err, errlen, r > 0 ? "values stopped being finite (NaN or infinity) in %s" : "the MTP block stopped%s",
                     r > 0 ? where : "");
        return r > 0 ? ES_ERR_FORMAT : ES_ERR_IO;
    }
    return ES_OK;
}

/* ---- what a session file keeps (session_file.c) ---------------------------- */

void es_mtp_extent(const es_session *s, int *rows, int *h0, int *hn) {
    const es_mtp_state *st = s->mtp;
    *rows = *h0 = *hn = 0;
    if (!st) return;
    /* row pos-1 ran ahead (a draft's) with a token the session does not
     * hold: it is not kept */
    *rows = st->pos < s->pos ? st->pos : s->pos - 1;
    if (*rows < 0) *rows = 0;
    if (st->hn > 0 && st->h0 + st->hn <= s->pos) *h0 = st->h0, *hn = st->hn;
}

float *es_mtp_hidden(const es_session *s, int *cap) {
    *cap = s->mtp ? s->mtp->cap : 0;
    return s->mtp ? s->mtp->hid : NULL;
}

void es_mtp_set_extent(es_session *s, int rows, int h0, int hn) {
    es_mtp_state *st = s->mtp;
    if (!st) return;
    ES_ASSERT(rows >= 0 && rows <= s->pos && h0 >= 0 && hn >= 0 && hn <= st->cap && h0 + hn <= s->pos);
    rows_to(s, rows < s->pos ? rows : s->pos - 1);
    st->h0 = h0;
    st->hn = hn;
}
