/* mtp.h — the MTP (next-n) block's per-session state, as forward.c,
 * kvcache.c and api.c see it: its latent cache, and the hooks that keep
 * the main model's last hidden rows for it.  Internal to the runtime; the
 * public face is edgeseek.h's es_session_set_mtp / es_session_mtp_draft. */
#ifndef ES_MTP_H
#define ES_MTP_H

#include <stdint.h>

#include "model.h"

/* The MTP block's cache rows ([n_ctx][kv_row], the session's cache type). */
uint8_t *es_mtp_kv(const es_session *s);
/* Before s runs tokens from position pos (first: the first of them; -1:
 * none, a truncation): drops the MTP rows and hidden rows those tokens
 * change. */
void es_mtp_forget(es_session *s, int pos, int32_t first);
/* After a batch ran T rows of s at positions batch_pos..: keeps their
 * hidden states x[T][D] (before the final norm) in the window. */
void es_mtp_keep_hidden(es_session *s, const float *x, int batch_pos, int T);
/* Then (es_mtp_keep_hidden done for the batch; the call's tokens[] start at
 * call_pos): runs the MTP block over older rows when the window is full.
 * Returns as es_forward. */
int es_mtp_after_batch(es_session *s, const int32_t *tokens, int call_pos, int batch_pos, int T, char *where,
                       size_t wlen);
void es_mtp_free(es_session *s);

/* Saved sessions (session_file.c): the MTP rows a file keeps ([0, rows),
 * each ran with the token after it, which the session holds) and the
 * window of hidden rows [h0, h0 + hn); all 0 when MTP is off. */
void es_mtp_extent(const es_session *s, int *rows, int *h0, int *hn);
/* The hidden rows' buffer ([cap][dim] floats; NULL when MTP is off). */
float *es_mtp_hidden(const es_session *s, int *cap);
/* After a load put the rows in place (the MTP cache's and the hidden
 * buffer's first hn rows), with the session's tokens and position set. */
void es_mtp_set_extent(es_session *s, int rows, int h0, int hn);

/* spec.c's acceptance rule, for the tests: p, q the main model's and the
 * draft's distributions [V], d the draft (drawn from q); kept with
 * probability min(1, p(d)/q(d)) (u_keep uniform in [0, 1)), else the token
 * is drawn from norm(max(0, p - q)) with u_rest (q is overwritten). */
int32_t es_spec_decide(const float *p, float *q, int V, int32_t d, double u_keep, double u_rest, int *kept);
/* A draw from probs[V] (summing to about 1) with the uniform u. */
int32_t es_spec_draw(const float *probs, int V, double u);
/* Test only: when set, es_spec_next takes its drafts' logits from the hook
 * instead of the MTP block (arguments and result as es_session_mtp_draft's). */
typedef es_status (*es_draft_hook_fn)(void *user, es_session *s, int32_t next, float *logits, char *err,
                                      size_t errlen);
extern es_draft_hook_fn es_spec_draft_hook;
extern void *es_spec_draft_user;

#endif
