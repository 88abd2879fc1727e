/* attention.c — the MLA attention core: the batch's rotated queries
 * q[T][H][dn+dr] against one layer's latent cache [S][R+dr] (normalised
 * latent ĉ, rotated shared k_pe; S = pos0 + T positions, causal) to the
 * heads' outputs o[T][H][dv].  forward.c computes the projections around it
 * (queries, the latent written into the cache, W_O).  The cache rows are
 * read in their stored type (kvcache.h: F32, F16, BF16, or a Q8_0 latent
 * with an F16 k_pe), never converted as a whole: the absorbed form through
 * the kernels' dot_kv/axpy_kv, the expanded form a block of KB positions at
 * a time (and straight from the stored type into the up-projection's
 * activation format).
 *
 * Two forms of the same arithmetic (docs/deepseek-semantics.md):
 *
 *   absorbed   per (token, head): q̃ = (W_UK^h)^T q_nope (R), scores
 *              q̃·ĉ_s + q_pe·k_pe_s over every visible position, softmax,
 *              u = Σ p_s ĉ_s (R), o = W_UV^h u.  Cost per token and head
 *              about S·(2R+dr) + R·(dn+dv) multiply-adds, all of it
 *              vector-by-vector against the cache.  Used for decode, split
 *              across the pool by (token, head); the decode steps of
 *              several sessions in one batch (es_batch_eval) share that
 *              region, each against its own cache (es_attention_parts).
 *   expanded   per head: K_nope = ĉ W_UK^hT (S x dn) and V = ĉ W_UV^hT
 *              (S x dv) as matrix products over blocks of positions, then
 *              flash-style attention: tiles of QT queries x KT keys, a
 *              running max and sum per query row (online softmax), never a
 *              score matrix larger than one tile.  Cost S·H·(dn+dv)·R to
 *              expand (independent of T) plus T·S·H·(dn+dr+dv), all of it
 *              matrix-by-matrix through the kernel table's matmul slots.
 *
 * es_attn_pick chooses between them by a cost rule measured on the
 * V2-Lite shape (see there).  In the expanded form a work unit is one head:
 * it expands that head's keys and values CH positions at a time into its
 * thread's buffers (CH·(dn+dr+dv) floats whatever the context) and runs
 * the chunk's tiles, so a layer takes one parallel region (two when the
 * kernels quantise the latents first), not one per phase and chunk.
 *
 * Determinism: every output value is written by one work unit, and the
 * boundaries inside a unit (query tiles, key tiles, position blocks)
 * depend only on the shapes, so results do not depend on the thread count.
 *
 * Notation: T tokens in the batch, pos0 the first one's position, S = pos0
 * + T, H heads, dn/dr/dv nope/rope/value head dims, R = kv_lora_rank.
 */
#include "attention.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "es_assert.h"
#include "kernels.h"
#include "threadpool.h"

/* Expanded form tiles: CH positions expanded per round (in blocks of KB
 * per work unit), attention in tiles of QT queries x KT keys. */
#define CH 256
#define KB 64
#define QT 16
#define KT 64
/* stored W_UK rows transposed at a time (a cache line of floats) */
#define TR 16

struct es_attn_scratch {
    enum es_attn_form form;
    int batch, n_threads, n_ctx;
    void *arena;           /* the one allocation behind the fixed buffers (attn_layout) */
    /* per thread, absorbed form: a unit is one token and a group of hg heads */
    int hg;                /* heads per group (absorbed_group_size) */
    float *t_att;          /* [hg][n_ctx] scores */
    float *t_qt, *t_u;     /* [hg][R] absorbed queries, latent sums */
    float *t_row;          /* [R] dequantised row */
    float *t_lat;          /* [KB][R+dr] a position block's cache rows in fp32 (stored otherwise) */
    void *t_act;           /* one activation row in a kernel's format */
    size_t t_act_bytes;
    /* per thread, expanded form (a thread works on one head at a time) */
    float *t_wuk;          /* [dn][R] W_UK^h (split layout: stored transposed) */
    float *t_wrows;        /* [TR][dn] stored W_UK rows being transposed */
    float *t_kc;           /* [CH][dn+dr] expanded keys of a chunk: K_nope, then k_pe */
    float *t_vt;           /* [dv][CH] expanded values of a chunk, transposed */
    float *t_vblk;         /* [KB][dv] values of a position block, before transposing */
    float *t_score;        /* [QT][KT] scores, then probabilities */
    float *t_pv;           /* [QT][dv] one tile's P·V */
    /* expanded form, shared */
    void *lat_act;         /* [S] latent rows in the up-projection's activation format */
    size_t lat_act_cap;    /* bytes allocated (grown on demand) */
    float *run_max, *run_sum; /* [batch][H] online softmax state */
};

/* Bytes of n activations in any format a kernel may ask for (fp32 is the
 * widest per value; the slack covers block rounding). */
static size_t act_bound(int64_t n) { return sizeof(float) * (size_t)n + 512; }

/* Heads per absorbed-form unit: the unit streams the latent cache once for
 * all its heads (a row, R+dr floats, is read from memory once and used hg
 * times from L1) instead of twice per head — at depth the cache, not the
 * weights, was what a decode step read most (V2-Lite shape, 16 heads,
 * S = 2048: 2 x 16 x 4.7 MB per layer).  At most 16 heads, and scores
 * [hg][n_ctx] of at most 1 MiB per thread for long contexts. */
static int absorbed_group_size(const es_hparams *hp, int n_ctx) {
    int hg = hp->n_heads < 16 ? hp->n_heads : 16;
    while (hg > 1 && (size_t)hg * (size_t)n_ctx * sizeof(float) > ((size_t)1 << 20)) hg--;
    return hg;
}

/* Names every buffer once, with its size, for nt threads (see arena.h):
 * over an arena without a base it only counts the bytes. */
static void attn_layout(es_attn_scratch *a, const es_hparams *hp, int n_ctx, int batch, int n_threads, es_arena *ar) {
    const size_t nt = (size_t)n_threads, R = (size_t)hp->kv_lora, H = (size_t)hp->n_heads;
    const size_t dn = (size_t)hp->nope, dr = (size_t)hp->rope, dv = (size_t)hp->vdim;
    a->t_act_bytes = act_bound((int64_t)(R > dn ? R : dn));
    a->hg = absorbed_group_size(hp, n_ctx);
    const size_t hg = (size_t)a->hg;
    a->t_att = es_arena_take(ar, sizeof(float) * nt * hg * (size_t)n_ctx);
    a->t_qt = es_arena_take(ar, sizeof(float) * nt * hg * R);
    a->t_u = es_arena_take(ar, sizeof(float) * nt * hg * R);
    a->t_row = es_arena_take(ar, sizeof(float) * nt * R);
    a->t_lat = es_arena_take(ar, sizeof(float) * nt * KB * (R + dr));
    a->t_act = es_arena_take(ar, nt * a->t_act_bytes);
    a->t_wuk = es_arena_take(ar, sizeof(float) * nt * dn * R);
    a->t_wrows = es_arena_take(ar, sizeof(float) * nt * TR * dn);
    a->t_kc = es_arena_take(ar, sizeof(float) * nt * CH * (dn + dr));
    a->t_vt = es_arena_take(ar, sizeof(float) * nt * dv * CH);
    a->t_vblk = es_arena_take(ar, sizeof(float) * nt * KB * dv);
    a->t_score = es_arena_take(ar, sizeof(float) * nt * QT * KT);
    a->t_pv = es_arena_take(ar, sizeof(float) * nt * QT * dv);
    a->run_max = es_arena_take(ar, sizeof(float) * (size_t)batch * H);
    a->run_sum = es_arena_take(ar, sizeof(float) * (size_t)batch * H);
}

static size_t attn_arena_bytes(const es_hparams *hp, int n_ctx, int batch, int n_threads) {
    es_attn_scratch sizing = {0};
    es_arena ar = {NULL, 0};
    attn_layout(&sizing, hp, n_ctx, batch, n_threads, &ar);
    return ar.used;
}

int64_t es_attn_scratch_bytes(const es_model *m, int n_ctx, int batch, int n_threads) {
    const es_hparams *hp = &m->hp;
    /* lat_act at its largest: every position of the context */
    const size_t lat = act_bound(hp->kv_lora) * (size_t)n_ctx;
    return (int64_t)(sizeof(es_attn_scratch) + attn_arena_bytes(hp, n_ctx, batch, n_threads) + lat);
}

es_attn_scratch *es_attn_scratch_new(const es_model *m, int n_ctx, int batch, int n_threads) {
    es_attn_scratch *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->batch = batch;
    a->n_threads = n_threads;
    a->n_ctx = n_ctx;
    a->form = m->mla_form;
    const size_t bytes = attn_arena_bytes(&m->hp, n_ctx, batch, n_threads);
    es_arena ar = {es_arena_alloc(bytes), 0};
    if (!ar.base) {
        free(a);
        return NULL;
    }
    a->arena = ar.base;
    attn_layout(a, &m->hp, n_ctx, batch, n_threads, &ar);
    ES_ASSERT(ar.used == bytes);
    return a;
}

void es_attn_scratch_free(es_attn_scratch *a) {
    if (!a) return;
    free(a->arena);
    free(a->lat_act);
    free(a);
}

void es_attn_set_form(es_attn_scratch *a, enum es_attn_form form) { a->form = form; }

int es_attn_scratch_grow(es_attn_scratch **a, const es_model *m, int n_ctx, int n_threads) {
    if ((*a)->n_ctx >= n_ctx && (*a)->n_threads >= n_threads) return 0;
    es_attn_scratch *g = es_attn_scratch_new(m, n_ctx > (*a)->n_ctx ? n_ctx : (*a)->n_ctx, (*a)->batch,
                                             n_threads > (*a)->n_threads ? n_threads : (*a)->n_threads);
    if (!g) return -1;
    g->form = (*a)->form;
    es_attn_scratch_free(*a);
    *a = g;
    return 0;
}

/* ---- kernels on the calling thread ------------------------------------------ */

/* Y[t][0..rows) = M X[t] for t < n_tok on the calling thread, X already in
 * the kernel's activation format (act_stride bytes apart); one token goes
 * through the matvec kernel, as forward.c's products do. */
static void matmul_here(const es_kernels *K, uint32_t type, const uint8_t *base, size_t row_bytes, int64_t n,
                        int64_t rows, const void *act, size_t act_stride, int n_tok, float *y, int64_t y_stride) {
    es_matmul_fn mm = K->matmul[type];
    if (mm && n_tok > 1) {
        mm(base, row_bytes, n, act, act_stride, n_tok, y, y_stride, 0, rows);
        return;
    }
    es_matvec_plan plan = es_plan_matvec(K, type);
    for (int t = 0; t < n_tok; t++)
        plan.fn(base, row_bytes, n, (const uint8_t *)act + (size_t)t * act_stride, y + t * y_stride, 0, rows);
}

/* y = M x for one vector, converting x into actbuf when the kernel wants
 * another format. */
static void matvec_here(const es_kernels *K, uint32_t type, const uint8_t *base, size_t row_bytes, int64_t n,
                        int64_t rows, const float *x, float *y, void *actbuf) {
    es_matvec_plan plan = es_plan_matvec(K, type);
    const void *act = x;
    if (plan.act_type != ES_TYPE_F32) {
        es_prepare_act(K, plan.act_type, x, actbuf, n);
        act = actbuf;
    }
    plan.fn(base, row_bytes, n, act, y, 0, rows);
}

/* The value up-projection W_UV^h: dv rows of R, in either layout. */
static const uint8_t *value_rows(const es_hparams *hp, const es_layer *ly, int h, const es_weight **w) {
    if (!ly->legacy_kv_b) {
        *w = &ly->wv_b;
        return ly->wv_b.data + (size_t)h * ly->wv_b.mat_bytes;
    }
    *w = &ly->wkv_b;
    return ly->wkv_b.data + (size_t)(h * (hp->nope + hp->vdim) + hp->nope) * ly->wkv_b.row_bytes;
}

/* ---- absorbed form ------------------------------------------------------------ */

typedef struct attn_job {
    es_session *s;
    es_attn_scratch *a;
    const es_layer *ly;
    const es_kv_view *kv;  /* the layer's cache rows, in their stored types */
    const float *q;
    float *o;
    int pos0, T;
} attn_job;

/* a · x and y += p x for a cache row part x[n] stored as type t: fp32 rows
 * through the float kernels, the others through dot_kv/axpy_kv, in place. */
static inline float kv_dot(const es_kernels *K, uint32_t t, const float *a, const uint8_t *x, int n) {
    return t == ES_TYPE_F32 ? K->dot_f32(a, (const float *)(const void *)x, n) : K->dot_kv[t](a, x, n);
}
static inline void kv_axpy(const es_kernels *K, uint32_t t, float *y, float p, const uint8_t *x, int n) {
    if (t == ES_TYPE_F32) K->axpy_f32(y, p, (const float *)(const void *)x, n);
    else K->axpy_kv[t](y, p, x, n);
}

/* q̃[R] = (W_UK^h)^T q_nope[dn] */
static void absorb_query(const attn_job *j, int h, const float *q_nope, float *qt, int tid) {
    const es_hparams *hp = &j->s->m->hp;
    const es_layer *ly = j->ly;
    const int R = hp->kv_lora, dn = hp->nope, dv = hp->vdim;
    void *actbuf = (uint8_t *)j->a->t_act + (size_t)tid * j->a->t_act_bytes;
    if (!ly->legacy_kv_b) {
        /* attn_k_b stores (W_UK^h)^T: R rows of dn */
        const es_weight *w = &ly->wk_b;
        matvec_here(j->s->m->kern, w->type, w->data + (size_t)h * w->mat_bytes, w->row_bytes, dn, R, q_nope, qt,
                    actbuf);
        return;
    }
    /* attn_kv_b rows h*(dn+dv) .. +dn are W_UK^h (dn rows of R): accumulate
     * the transposed product row by row */
    const es_weight *w = &ly->wkv_b;
    float *row = j->a->t_row + (size_t)tid * R;
    memset(qt, 0, sizeof(float) * (size_t)R);
    for (int d = 0; d < dn; d++) {
        es_dequant_row(j->s->m->kern, w->type, w->data + (size_t)(h * (dn + dv) + d) * w->row_bytes, row, R);
        j->s->m->kern->axpy_f32(qt, q_nope[d], row, R);
    }
}

/* One unit: token t and heads h0..h0+n-1 — scores over positions 0..p,
 * softmax, the weighted sum of latents, and W_UV, for each head.  Positions
 * run in the outer loop so each cache row is read once for the group; each
 * head's arithmetic (its dot products, its sums in position order) is the
 * same as with one head per unit, so the grouping never changes a value. */
static void attend_absorbed(const attn_job *j, int t, int h0, int n, int tid) {
    const es_hparams *hp = &j->s->m->hp;
    es_attn_scratch *a = j->a;
    const es_kernels *K = j->s->m->kern;
    const int R = hp->kv_lora, dn = hp->nope, dr = hp->rope, dv = hp->vdim;
    const int p = j->pos0 + t, S = a->n_ctx;
    const es_kv_view *kv = j->kv;
    const float *qt0 = j->q + (size_t)t * hp->n_heads * (dn + dr) + (size_t)h0 * (dn + dr); /* [n][dn+dr] */
    float *att = a->t_att + (size_t)tid * a->hg * S; /* [n][S] */
    float *qt = a->t_qt + (size_t)tid * a->hg * R;   /* [n][R] */
    float *u = a->t_u + (size_t)tid * a->hg * R;     /* [n][R] */
    for (int g = 0; g < n; g++) absorb_query(j, h0 + g, qt0 + (size_t)g * (dn + dr), qt + (size_t)g * R, tid);
    if (K->dot_kv_heads[kv->lat_type] && K->dot_kv_heads[kv->rope_type]) {
        /* the same values, each row read once for the n heads: the latent
         * parts of every position, then the rope parts a block at a time */
        enum { RB = 64 };
        float rope[16 * RB]; /* [n][RB]: n <= 16 (absorbed_group_size) */
        ES_ASSERT(n <= 16);
        K->dot_kv_heads[kv->lat_type](qt, R, n, es_kv_row(kv, 0), kv->row_bytes, p + 1, R, att, S);
        for (int i0 = 0; i0 <= p; i0 += RB) {
            const int nb = p + 1 - i0 < RB ? p + 1 - i0 : RB;
            K->dot_kv_heads[kv->rope_type](qt0 + dn, dn + dr, n, es_kv_row(kv, i0) + kv->rope_off, kv->row_bytes, nb,
                                           dr, rope, RB);
            for (int g = 0; g < n; g++)
                for (int i = 0; i < nb; i++)
                    att[(size_t)g * S + i0 + i] = (att[(size_t)g * S + i0 + i] + rope[g * RB + i]) * hp->attn_scale;
        }
    } else {
        for (int i = 0; i <= p; i++) {
            const uint8_t *row = es_kv_row(kv, i);
            for (int g = 0; g < n; g++)
                att[(size_t)g * S + i] =
                    (kv_dot(K, kv->lat_type, qt + (size_t)g * R, row, R) +
                     kv_dot(K, kv->rope_type, qt0 + (size_t)g * (dn + dr) + dn, row + kv->rope_off, dr)) *
                    hp->attn_scale;
        }
    }
    for (int g = 0; g < n; g++) K->softmax(att + (size_t)g * S, p + 1);
    memset(u, 0, sizeof(float) * (size_t)n * R);
    if (K->axpy_kv_heads[kv->lat_type]) {
        K->axpy_kv_heads[kv->lat_type](u, R, n, att, S, es_kv_row(kv, 0), kv->row_bytes, p + 1, R);
    } else {
        for (int i = 0; i <= p; i++) {
            const uint8_t *row = es_kv_row(kv, i);
            for (int g = 0; g < n; g++) kv_axpy(K, kv->lat_type, u + (size_t)g * R, att[(size_t)g * S + i], row, R);
        }
    }
    for (int g = 0; g < n; g++) {
        const es_weight *w;
        const uint8_t *wv = value_rows(hp, j->ly, h0 + g, &w);
        matvec_here(K, w->type, wv, w->row_bytes, R, dv, u + (size_t)g * R,
                    j->o + (size_t)t * hp->n_heads * dv + (size_t)(h0 + g) * dv,
                    (uint8_t *)a->t_act + (size_t)tid * a->t_act_bytes);
    }
}

/* Head groups per token: enough units for the pool on a decode step (T =
 * 1), none larger than the scratch's hg. */
static int absorbed_groups(const attn_job *j) {
    const int H = j->s->m->hp.n_heads, nt = es_pool_threads(j->s->pool);
    int G = (H + j->a->hg - 1) / j->a->hg;
    if (j->T == 1 && G < nt) G = nt < H ? nt : H;
    return G;
}

/* ---- expanded form -------------------------------------------------------------- */

/* One work unit is one head over the whole batch and context: it expands
 * that head's keys and values a chunk of CH positions at a time into its
 * thread's buffers and runs the chunk's tiles at once, so the whole form
 * is a single parallel region (two with quantised activations) per layer:
 * a barrier per phase would cost a time slice each on a busy machine. */
typedef struct expand_job {
    attn_job base;
    uint32_t act_type;   /* format of lat_act (F32: the cache itself) */
    size_t act_bytes;    /* bytes per latent row in lat_act */
} expand_job;

/* W_UK^h as dn rows of R floats into wuk.  The split layout stores its
 * transpose (R rows of dn): dequantise TR stored rows at a time and write
 * them out a column strip at a time, so that every write fills whole cache
 * lines (one row at a time would scatter single floats R apart). */
static void transpose_uk(const attn_job *j, int h, float *wuk, int tid) {
    const es_hparams *hp = &j->s->m->hp;
    const int R = hp->kv_lora, dn = hp->nope;
    const es_weight *w = &j->ly->wk_b;
    float *rows = j->a->t_wrows + (size_t)tid * TR * dn;
    for (int r0 = 0; r0 < R; r0 += TR) {
        const int nr = R - r0 < TR ? R - r0 : TR;
        for (int i = 0; i < nr; i++)
            es_dequant_row(j->s->m->kern, w->type, w->data + (size_t)h * w->mat_bytes + (size_t)(r0 + i) * w->row_bytes,
                           rows + (size_t)i * dn, dn);
        for (int d = 0; d < dn; d++)
            for (int i = 0; i < nr; i++) wuk[(size_t)d * R + r0 + i] = rows[(size_t)i * dn + d];
    }
}

/* Latent rows [i0, i1) in the up-projection's activation format, from the
 * stored type: a copy when it is that format, else through fp32 (the
 * thread's row buffer). */
static void latent_act_task(void *ctx, int64_t i0, int64_t i1, int tid) {
    const expand_job *e = ctx;
    const es_kernels *K = e->base.s->m->kern;
    const es_kv_view *kv = e->base.kv;
    const int R = e->base.s->m->hp.kv_lora;
    float *tmp = e->base.a->t_row + (size_t)tid * R;
    for (int64_t i = i0; i < i1; i++) {
        const uint8_t *row = es_kv_row(kv, i);
        uint8_t *dst = (uint8_t *)e->base.a->lat_act + (size_t)i * e->act_bytes;
        if (kv->lat_type == e->act_type) {
            memcpy(dst, row, e->act_bytes);
            continue;
        }
        const float *x = (const float *)(const void *)row;
        if (kv->lat_type != ES_TYPE_F32) {
            es_dequant_row(K, kv->lat_type, row, tmp, R);
            x = tmp;
        }
        es_prepare_act(K, e->act_type, x, dst, R);
    }
}

/* Cache rows p0 .. p0+nb as fp32 [nb][R+dr]: the cache itself when it
 * stores fp32, else the block converted into the thread's t_lat. */
static const float *latent_block(const attn_job *j, int p0, int nb, int tid) {
    const es_kv_view *kv = j->kv;
    if (kv->lat_type == ES_TYPE_F32) return (const float *)(const void *)es_kv_row(kv, p0);
    const es_hparams *hp = &j->s->m->hp;
    const int R = hp->kv_lora, kvw = R + hp->rope;
    float *out = j->a->t_lat + (size_t)tid * KB * kvw;
    for (int s = 0; s < nb; s++) {
        const uint8_t *row = es_kv_row(kv, p0 + s);
        es_dequant_row(j->s->m->kern, kv->lat_type, row, out + (size_t)s * kvw, R);
        es_dequant_row(j->s->m->kern, kv->rope_type, row + kv->rope_off, out + (size_t)s * kvw + R, hp->rope);
    }
    return out;
}

/* Positions p0 .. p0+nb of head h: K_nope = W_UK^h ĉ with k_pe beside it
 * into kc, V = W_UV^h ĉ transposed into vt (column p0 - c0 on). */
static void expand_block(const expand_job *e, int h, int c0, int p0, int nb, const float *wuk, float *kc, float *vt,
                         int tid) {
    const attn_job *j = &e->base;
    const es_hparams *hp = &j->s->m->hp;
    const int R = hp->kv_lora, dn = hp->nope, dr = hp->rope, dv = hp->vdim, kvw = R + dr, kw = dn + dr;
    const float *lat = latent_block(j, p0, nb, tid);
    const void *act = lat; /* the up-projection's input rows */
    size_t as = sizeof(float) * (size_t)kvw;
    if (e->act_type != ES_TYPE_F32) {
        act = (const uint8_t *)j->a->lat_act + (size_t)p0 * e->act_bytes;
        as = e->act_bytes;
    }
    float *kh = kc + (size_t)(p0 - c0) * kw;
    if (!j->ly->legacy_kv_b) {
        matmul_here(j->s->m->kern, ES_TYPE_F32, (const uint8_t *)wuk, sizeof(float) * (size_t)R, R, dn, lat,
                    sizeof(float) * kvw, nb, kh, kw);
    } else {
        const es_weight *w = &j->ly->wkv_b;
        matmul_here(j->s->m->kern, w->type, w->data + (size_t)h * (dn + dv) * w->row_bytes, w->row_bytes, R, dn, act,
                    as, nb, kh, kw);
    }
    for (int s = 0; s < nb; s++)
        memcpy(kh + (size_t)s * kw + dn, lat + (size_t)s * kvw + R, sizeof(float) * (size_t)dr);
    const es_weight *w;
    const uint8_t *wv = value_rows(hp, j->ly, h, &w);
    float *vb = j->a->t_vblk + (size_t)tid * KB * dv;
    matmul_here(j->s->m->kern, w->type, wv, w->row_bytes, R, dv, act, as, nb, vb, dv);
    float *vh = vt + (p0 - c0);
    for (int s = 0; s < nb; s++)
        for (int d = 0; d < dv; d++) vh[(size_t)d * CH + s] = vb[(size_t)s * dv + d];
}

/* Queries t0 .. t0+nq of head h against the chunk's keys c0 .. c0+cn (as
 * far as some query of the tile sees), KT keys a tile, the online softmax
 * carried in run_max, run_sum and the unnormalised output in o. */
static void flash_tile(const expand_job *e, int h, int c0, int cn, int t0, int nq, const float *kc, const float *vt,
                       int tid) {
    const attn_job *j = &e->base;
    const es_hparams *hp = &j->s->m->hp;
    es_attn_scratch *a = j->a;
    const int H = hp->n_heads, dn = hp->nope, dr = hp->rope, dv = hp->vdim, kw = dn + dr, qw = H * kw;
    float *sc = a->t_score + (size_t)tid * QT * KT;
    float *pv = a->t_pv + (size_t)tid * QT * dv;
    const int last = j->pos0 + t0 + nq - 1; /* the furthest position a query of the tile sees */
    for (int k0 = 0; k0 < cn && c0 + k0 <= last; k0 += KT) {
        int nk = cn - k0 < KT ? cn - k0 : KT;
        if (c0 + k0 + nk - 1 > last) nk = last - (c0 + k0) + 1;
        /* scores[t][s] = q_t · [K_nope_s ; k_pe_s] */
        matmul_here(j->s->m->kern, ES_TYPE_F32, (const uint8_t *)(kc + (size_t)k0 * kw), sizeof(float) * kw, kw, nk,
                    j->q + (size_t)t0 * qw + (size_t)h * kw, sizeof(float) * (size_t)qw, nq, sc, KT);
        for (int t = 0; t < nq; t++) {
            float *row = sc + (size_t)t * KT;
            const int see = j->pos0 + t0 + t - (c0 + k0) + 1; /* visible keys of this tile */
            const int nv = see < nk ? see : nk;
            float *m = a->run_max + (size_t)(t0 + t) * H + h, *l = a->run_sum + (size_t)(t0 + t) * H + h;
            float *acc = j->o + (size_t)(t0 + t) * H * dv + (size_t)h * dv;
            if (nv <= 0) { /* nothing visible: contributes nothing */
                memset(row, 0, sizeof(float) * (size_t)nk);
                continue;
            }
            float mx = -INFINITY;
            for (int s = 0; s < nv; s++) {
                row[s] *= hp->attn_scale;
                mx = row[s] > mx ? row[s] : mx;
            }
            const float m_new = mx > *m ? mx : *m;
            const float alpha = expf(*m - m_new); /* 0 on the first tile (m = -inf) */
            float sum = 0;
            for (int s = 0; s < nv; s++) {
                row[s] = expf(row[s] - m_new);
                sum += row[s];
            }
            for (int s = nv; s < nk; s++) row[s] = 0;
            *l = *l * alpha + sum;
            *m = m_new;
            for (int d = 0; d < dv; d++) acc[d] *= alpha;
        }
        /* pv[t][d] = Σ_s p[t][s] V[s][d]; V transposed makes it a product */
        matmul_here(j->s->m->kern, ES_TYPE_F32, (const uint8_t *)(vt + k0), sizeof(float) * CH, nk, dv, sc,
                    sizeof(float) * KT, nq, pv, dv);
        for (int t = 0; t < nq; t++) {
            float *acc = j->o + (size_t)(t0 + t) * H * dv + (size_t)h * dv;
            const float *src = pv + (size_t)t * dv;
            for (int d = 0; d < dv; d++) acc[d] += src[d];
        }
    }
}

static void head_task(void *ctx, int64_t h0, int64_t h1, int tid) {
    const expand_job *e = ctx;
    const attn_job *j = &e->base;
    const es_hparams *hp = &j->s->m->hp;
    es_attn_scratch *a = j->a;
    const int dn = hp->nope, dr = hp->rope, dv = hp->vdim, R = hp->kv_lora, S = j->pos0 + j->T;
    float *wuk = a->t_wuk + (size_t)tid * dn * R;
    float *kc = a->t_kc + (size_t)tid * CH * (dn + dr), *vt = a->t_vt + (size_t)tid * dv * CH;
    for (int64_t h = h0; h < h1; h++) {
        if (!j->ly->legacy_kv_b) transpose_uk(j, (int)h, wuk, tid);
        for (int c0 = 0; c0 < S; c0 += CH) {
            const int cn = S - c0 < CH ? S - c0 : CH;
            for (int b0 = 0; b0 < cn; b0 += KB)
                expand_block(e, (int)h, c0, c0 + b0, cn - b0 < KB ? cn - b0 : KB, wuk, kc, vt, tid);
            /* query tiles that see some position of the chunk */
            for (int t0 = 0; t0 < j->T; t0 += QT) {
                const int nq = j->T - t0 < QT ? j->T - t0 : QT;
                if (j->pos0 + t0 + nq - 1 >= c0) flash_tile(e, (int)h, c0, cn, t0, nq, kc, vt, tid);
            }
        }
    }
}

/* 0, or -1 when the latent rows' buffer cannot grow (the caller then runs
 * the absorbed form). */
static int expanded(const attn_job *j) {
    es_session *s = j->s;
    const es_hparams *hp = &s->m->hp;
    es_attn_scratch *a = j->a;
    const int H = hp->n_heads, dv = hp->vdim, S = j->pos0 + j->T;
    const es_weight *vw;
    value_rows(hp, j->ly, 0, &vw);
    expand_job e = {*j, es_plan_matvec(s->m->kern, vw->type).act_type, 0};
    if (e.act_type != ES_TYPE_F32) {
        e.act_bytes = es_act_bytes(e.act_type, hp->kv_lora);
        const size_t need = e.act_bytes * (size_t)S;
        if (need > a->lat_act_cap) {
            void *grown = realloc(a->lat_act, need);
            if (!grown) return -1;
            a->lat_act = grown;
            a->lat_act_cap = need;
        }
        es_pool_run(s->pool, latent_act_task, &e, S, 16);
    }
    for (int i = 0; i < j->T * H; i++) {
        a->run_max[i] = -INFINITY;
        a->run_sum[i] = 0;
    }
    memset(j->o, 0, sizeof(float) * (size_t)j->T * H * dv);
    es_pool_run(s->pool, head_task, &e, H, 1);
    for (int i = 0; i < j->T * H; i++) {
        const float inv = 1.0f / a->run_sum[i];
        float *acc = j->o + (size_t)i * dv;
        for (int d = 0; d < dv; d++) acc[d] *= inv;
    }
    return 0;
}

/* ---- the choice ------------------------------------------------------------------- */

/* The rule: estimated time of each form from its multiply-adds, each kind
 * weighted by its measured cost relative to one multiply-add of a matrix
 * product (bench/bench_attention on V2-Lite's shape, Q4_0, one thread,
 * AVX-512 and AVX2 forced, f16 and f32 caches; README "Attention"):
 *   absorbed  scores and latent sums over the cache, a head group's rows
 *             read once (dot_kv_heads/axpy_kv_heads): 1.25 per
 *             multiply-add; the two matrix-vector products per (token,
 *             head) with W_UK and W_UV: 1.9;
 *   expanded  up-projection: 1; the tiles (online softmax, transposes):
 *             2; the split layout's W_UK dequantised and transposed once
 *             per call: 49 per element.
 * For V2-Lite (H 16, R 512, dn = dv = 128, dr 64) this runs a batch of 64
 * expanded at the start of a prompt and absorbed from about 64 positions
 * on (at 448 and 1984 the absorbed form took half the expanded one's time);
 * batches of a few hundred tokens go expanded again at any depth.  Only
 * shapes enter, never the thread count, so the choice (and so the result)
 * is the same for every thread count. */
enum es_attn_form es_attn_pick(const es_hparams *hp, int T, int pos0) {
    if (T <= 1) return ES_ATTN_ABSORBED;
    const double R = hp->kv_lora, dn = hp->nope, dr = hp->rope, dv = hp->vdim, S = (double)pos0 + T;
    const double seen = (double)T * pos0 + (double)T * (T + 1) / 2; /* Σ over the batch of visible positions */
    const double absorbed = 1.25 * seen * (2 * R + dr) + 1.9 * T * R * (dn + dv);
    const double expanded = S * (dn + dv) * R + 2 * seen * (dn + dr + dv) + 49 * dn * R;
    return expanded < absorbed ? ES_ATTN_EXPANDED : ES_ATTN_ABSORBED;
}

/* The absorbed form over the parts in one region: unit u is (part, token,
 * head group), parts one after another, token-major within a part (a
 * decode step, T = 1, spreads its head groups over the pool); group g of
 * a part's G holds heads [g*H/G, (g+1)*H/G). */
typedef struct parts_job {
    attn_job base;              /* s, a, ly; the rest set per unit */
    const es_attn_part *parts;
    const int *idx;             /* [n] the parts of the region */
    const int64_t *first;       /* [n + 1] first unit of each */
    const int *groups;          /* [n] head groups per token of each */
    int n;
} parts_job;

static void parts_task(void *ctx, int64_t i0, int64_t i1, int tid) {
    const parts_job *pj = ctx;
    const int H = pj->base.s->m->hp.n_heads;
    int p = 0;
    for (int64_t i = i0; i < i1; i++) {
        while (i >= pj->first[p + 1]) p++;
        const es_attn_part *pt = &pj->parts[pj->idx[p]];
        attn_job j = pj->base;
        j.kv = pt->cache;
        j.q = pt->q;
        j.o = pt->o;
        j.pos0 = pt->pos0;
        j.T = pt->T;
        const int64_t u = i - pj->first[p];
        const int G = pj->groups[p], g = (int)(u % G);
        const int h0 = (int)((int64_t)g * H / G), h1 = (int)((int64_t)(g + 1) * H / G);
        attend_absorbed(&j, (int)(u / G), h0, h1 - h0, tid);
    }
}

void es_attention_parts(es_session *s, es_attn_scratch *a, const es_layer *ly, const es_attn_part *parts, int n) {
    enum { MAXP = 64 }; /* parts of a batch: at most its rows */
    int idx[MAXP], groups[MAXP];
    int64_t first[MAXP + 1];
    int na = 0;
    first[0] = 0;
    ES_ASSERT(n <= MAXP);
    for (int i = 0; i < n; i++) {
        const es_attn_part *pt = &parts[i];
        ES_ASSERT(pt->T >= 1 && pt->T <= a->batch && pt->pos0 >= 0 && pt->pos0 + pt->T <= a->n_ctx);
        enum es_attn_form form = a->form == ES_ATTN_AUTO ? es_attn_pick(&s->m->hp, pt->T, pt->pos0) : a->form;
        attn_job j = {s, a, ly, pt->cache, pt->q, pt->o, pt->pos0, pt->T};
        if (form == ES_ATTN_EXPANDED && expanded(&j) == 0) continue;
        idx[na] = i;
        groups[na] = absorbed_groups(&j);
        first[na + 1] = first[na] + (int64_t)pt->T * groups[na];
        na++;
    }
    if (!na) return;
    parts_job pj = {{s, a, ly, NULL, NULL, NULL, 0, 0}, parts, idx, first, groups, na};
    es_pool_run(s->pool, parts_task, &pj, first[na], 1);
}

void es_attention_core(es_session *s, es_attn_scratch *a, const es_layer *ly, const es_kv_view *cache,
                       const float *q, int pos0, int T, float *o) {
    const es_attn_part part = {cache, q, o, pos0, T};
    es_attention_parts(s, a, ly, &part, 1);
}
