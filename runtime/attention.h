/* attention.h — the MLA attention core (attention.c): from the batch's
 * rotated queries and one layer's latent cache to the heads' outputs, in
 * the absorbed or the expanded (non-absorbed, blocked) form.  Internal to
 * the runtime; forward.c owns the projections around it. */
#ifndef ES_ATTENTION_H
#define ES_ATTENTION_H

#include "kvcache.h"
#include "model.h"

typedef struct es_attn_scratch es_attn_scratch;

/* How a batch's attention is computed.  AUTO picks by es_attn_pick. */
enum es_attn_form { ES_ATTN_AUTO = 0, ES_ATTN_ABSORBED = 1, ES_ATTN_EXPANDED = 2 };

/* Buffers for batches of up to `batch` tokens, a context of n_ctx and
 * n_threads workers, in the model's form (m->mla_form: es_load_params.mla
 * or EDGESEEK_MLA).  NULL when out of memory. */
es_attn_scratch *es_attn_scratch_new(const es_model *m, int n_ctx, int batch, int n_threads);
void es_attn_scratch_free(es_attn_scratch *a);
/* Bytes es_attn_scratch_new takes for these arguments, with the latent
 * buffer the expanded form grows on demand counted at its largest. */
int64_t es_attn_scratch_bytes(const es_model *m, int n_ctx, int batch, int n_threads);
/* Replaces *a by buffers for a context of n_ctx (same batch, threads and
 * form) when it holds less; 0, or -1 out of memory (*a unchanged). */
int es_attn_scratch_grow(es_attn_scratch **a, const es_model *m, int n_ctx, int n_threads);
/* Overrides the form (tests, benchmarks). */
void es_attn_set_form(es_attn_scratch *a, enum es_attn_form form);

/* The form AUTO uses for T queries whose first is at position pos0. */
enum es_attn_form es_attn_pick(const es_hparams *hp, int T, int pos0);

/* o[T][H*dv] = MLA of the queries q[T][H*(dn+dr)] (k_pe part rotated)
 * against one layer's cache rows 0 .. pos0+T (normalised latent ĉ, rotated
 * k_pe, in the view's storage types, read in place), with token t at
 * position pos0+t seeing positions 0..pos0+t.  The batch's own positions
 * must already be in the cache.  Runs on s->pool. */
void es_attention_core(es_session *s, es_attn_scratch *a, const es_layer *ly, const es_kv_view *cache,
                       const float *q, int pos0, int T, float *o);

/* One session's part of a batch of several sessions: its T queries q
 * (positions pos0..) against its cache, into o (layouts as above). */
typedef struct es_attn_part {
    const es_kv_view *cache; /* the session's layer of its latent cache */
    const float *q;
    float *o;
    int pos0, T;
} es_attn_part;
/* es_attention_core for each part, with the same values: the parts whose
 * form is the absorbed one (decode steps, short chunks) share one parallel
 * region of (part, token, head) units; the others run one by one. */
void es_attention_parts(es_session *s, es_attn_scratch *a, const es_layer *ly, const es_attn_part *parts, int n);

#endif
