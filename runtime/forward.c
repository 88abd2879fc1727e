/* forward.c — the deepseek2 forward pass over a batch of T consecutive
 * tokens (T = 1 for decode), top to bottom, as shared/spec/deepseek-
 * semantics.md states it:
 *
 *   h = Embed[tok]
 *   per layer: h += MLA(RMSNorm(h));  h += FFN(RMSNorm(h))   (dense or MoE)
 *   logits = Head · RMSNorm(h)
 *
 * The cache holds only the normalised latent ĉ (R floats) and the rotated
 * shared rope key k_pe (dr floats) per token per layer; attention.c turns
 * the queries and that cache into the heads' outputs (absorbed form for
 * decode, expanded and blocked for prefill).  The router is fp32 throughout.
 *
 * Work is split across the session's thread pool: matrix products by rows
 * (each chunk computing every token of the batch, so weights are read once
 * per batch), attention per attention.c, and the routed experts of a layer
 * as (expert, row-chunk) units in two parallel regions (gate+up, then down),
 * with the batch's tokens grouped by the expert they routed to and each
 * expert's units started on the threads of the NUMA node holding it.  Every
 * output value is computed by exactly one unit in a fixed order, so results
 * do not depend on the thread count.
 *
 * Notation: T = tokens in the batch, D = dim, H = heads, dn/dr/dv = nope/
 * rope/value head dims, R = kv_lora_rank, E = experts, k = experts used,
 * F = expert ffn dim, S = shared ffn dim (n_shared · F), V = vocabulary.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "kernels.h"
#include "model.h"
#include "placement.h"
#include "residency.h"
#include "threadpool.h"

/* Tokens per batch: prefill runs in batches of this many. */
#define ES_BATCH 64

struct es_scratch {
    int B;                   /* batch capacity */
    float *x, *xn, *xb;      /* [B][D] residual stream, normed input, block output */
    float *q;                /* [B][H*(dn+dr)] */
    float *qa;               /* [B][q_lora] */
    float *kva;              /* [B][R+dr] */
    float *o;                /* [B][H*dv] attention heads, concatenated */
    float *ff_g, *ff_u;      /* [B][max(ffn, S)] dense / shared hidden */
    float *router;           /* [B][E] router scores */
    int32_t *sel;            /* [B][k] chosen experts, ascending */
    float *selw;             /* [B][k] their weights */
    int32_t *ex_start;       /* [E+1] first gathered row of each expert */
    int32_t *ex_fill;        /* [E] */
    int32_t *tok_row;        /* [B][k] gathered row of (token, choice) */
    int32_t *active;         /* [E] experts with at least one token */
    float *ex_g, *ex_h;      /* [B*k][F] gate and hidden of gathered rows */
    float *ex_out;           /* [B*k][D] expert outputs */
    float *sh_out;           /* [B][D] shared expert output */
    void *act_down;          /* gathered hidden rows in the down kernel's format */
    int32_t *grp;            /* [E] experts of the group being run (resident now) */
    const uint8_t *(*grp_ptr)[3]; /* [E] their gate, up, down matrices */
    float *pred_xn, *pred_router; /* [B][D], [B][E] next layer's router on the current state */
    int32_t *pred_sel, *pred_cnt, *pred_ids; /* [B][k], [E], [E] predicted experts */
    float *pred_w;           /* [B][k] */
    float *rope_cs;          /* [B][dr/2][2] cos, sin per position */
    void *act;               /* activation rows in a kernel's format */
    void *act_gather;        /* gathered expert input rows in a kernel's format */
    es_attn_scratch *attn;   /* attention.c's buffers */
};

/* ---- matrix products, split by rows across the pool ------------------------ */

typedef struct matmul_job {
    es_matvec_fn mv;
    es_matmul_fn mm;         /* NULL: one matvec per token */
    const uint8_t *base;
    size_t row_bytes;
    int64_t n;
    const void *act;
    size_t act_stride;
    int T;
    float *y;
    int64_t y_stride;
    /* NUMA replicate: read base through the running thread's node copy */
    const es_numa_plan *replicas;
    const es_pool *pool;
} matmul_job;

static void matmul_rows(const matmul_job *j, int64_t r0, int64_t r1) {
    if (j->mm && j->T > 1) { /* a single token goes through the matvec kernel */
        j->mm(j->base, j->row_bytes, j->n, j->act, j->act_stride, j->T, j->y, j->y_stride, r0, r1);
        return;
    }
    for (int t = 0; t < j->T; t++)
        j->mv(j->base, j->row_bytes, j->n, (const uint8_t *)j->act + (size_t)t * j->act_stride,
              j->y + t * j->y_stride, r0, r1);
}

static void matmul_task(void *ctx, int64_t r0, int64_t r1, int tid) {
    const matmul_job *j = ctx;
    if (j->replicas) { /* the same bytes, from this node's copy */
        matmul_job local = *j;
        local.base = es_numa_local(j->replicas, j->base, es_pool_thread_node(j->pool, tid));
        matmul_rows(&local, r0, r1);
        return;
    }
    matmul_rows(j, r0, r1);
}

/* The plan whose per-node copies matrix products should read: only under
 * --numa replicate on several nodes, when memory allowed the copies. */
static const es_numa_plan *replicas_of(const es_session *s) {
    const es_numa_plan *p = s->m->numa;
    return es_pool_nodes(s->pool) > 1 && es_numa_plan_stats(p) && es_numa_plan_stats(p)->n_replicas > 0 ? p : NULL;
}

/* Converts T rows of X (x_stride floats apart, n used) to act_type in buf;
 * F32 needs no copy.  Returns the rows and sets their stride in bytes. */
static const void *prepare_rows(const es_kernels *K, uint32_t act_type, const float *X, int64_t x_stride,
                                int64_t n, int T, void *buf, size_t *stride) {
    if (act_type == ES_TYPE_F32) {
        *stride = (size_t)x_stride * sizeof(float);
        return X;
    }
    *stride = es_act_bytes(act_type, n);
    for (int t = 0; t < T; t++) es_prepare_act(K, act_type, X + t * x_stride, (uint8_t *)buf + (size_t)t * *stride, n);
    return buf;
}

static matmul_job make_job(const es_kernels *K, const es_weight *w, int64_t mat, const void *act,
                           size_t act_stride, int T, float *Y, int64_t y_stride) {
    es_matvec_plan plan = es_plan_matvec(K, w->type);
    matmul_job j = {plan.fn, K->matmul[w->type], w->data + (size_t)mat * w->mat_bytes, w->row_bytes, w->n,
                    act, act_stride, T, Y, y_stride, NULL, NULL};
    return j;
}

/* Rows per work unit: about 64 KiB of weight reads (times the tokens), and
 * at least 16 units on large matrices for the pool to balance.  The split
 * depends only on the shape, never on the thread count, and chunks are
 * multiples of 16 rows: a kernel may treat rows in groups, and the same
 * grouping for any thread count keeps results bit-identical. */
static int64_t round16(int64_t v) { return (v + 15) / 16 * 16; }
static int64_t row_chunk(size_t row_bytes, int64_t rows, int T) {
    int64_t chunk = round16((int64_t)(65536 / ((row_bytes ? row_bytes : 1) * (size_t)T)) + 1);
    int64_t even = round16(rows / 16 + 1);
    return chunk > even ? chunk : even;
}

/* make_job for a product the pool runs: under --numa replicate each thread
 * reads its node's copy of the weights. */
static matmul_job pool_job(const es_session *s, const es_weight *w, int64_t mat, const void *act, size_t act_stride,
                           int T, float *Y, int64_t y_stride) {
    matmul_job j = make_job(s->m->kern, w, mat, act, act_stride, T, Y, y_stride);
    j.replicas = replicas_of(s);
    j.pool = s->pool;
    return j;
}

/* Y[t][0..rows) = W X[t] for t < T.  X rows x_stride floats apart, Y rows
 * y_stride floats apart. */
static void matmul(es_session *s, const es_weight *w, int64_t mat, const float *X, int64_t x_stride, int T, float *Y,
                   int64_t y_stride) {
    es_matvec_plan plan = es_plan_matvec(s->m->kern, w->type);
    size_t stride;
    const void *act = prepare_rows(s->m->kern, plan.act_type, X, x_stride, w->n, T, s->scratch->act, &stride);
    matmul_job j = pool_job(s, w, mat, act, stride, T, Y, y_stride);
    es_pool_run(s->pool, matmul_task, &j, w->rows, row_chunk(w->row_bytes, w->rows, T));
}

/* Two products of the same input rows in one parallel region: Y1 = W1 X and
 * Y2 = W2 X (one barrier instead of two; units as matmul() cuts them, so
 * the results are the same).  Two plain matmul() calls when the matrices
 * want their input in different formats. */
typedef struct pair_job {
    matmul_job m[2];
    int64_t chunk[2], units0, rows[2];
} pair_job;

static void pair_task(void *ctx, int64_t u0, int64_t u1, int tid) {
    const pair_job *p = ctx;
    for (int64_t u = u0; u < u1; u++) {
        int i = u >= p->units0;
        int64_t r0 = (u - (i ? p->units0 : 0)) * p->chunk[i];
        int64_t r1 = r0 + p->chunk[i] < p->rows[i] ? r0 + p->chunk[i] : p->rows[i];
        matmul_task((void *)&p->m[i], r0, r1, tid);
    }
}

static void matmul_pair(es_session *s, const es_weight *w1, float *Y1, const es_weight *w2, float *Y2, const float *X,
                        int64_t x_stride, int T) {
    es_matvec_plan p1 = es_plan_matvec(s->m->kern, w1->type), p2 = es_plan_matvec(s->m->kern, w2->type);
    if (p1.act_type != p2.act_type || w1->n != w2->n) {
        matmul(s, w1, 0, X, x_stride, T, Y1, w1->rows);
        matmul(s, w2, 0, X, x_stride, T, Y2, w2->rows);
        return;
    }
    size_t stride;
    const void *act = prepare_rows(s->m->kern, p1.act_type, X, x_stride, w1->n, T, s->scratch->act, &stride);
    pair_job p;
    const es_weight *w[2] = {w1, w2};
    float *Y[2] = {Y1, Y2};
    int64_t units[2];
    for (int i = 0; i < 2; i++) {
        p.m[i] = pool_job(s, w[i], 0, act, stride, T, Y[i], w[i]->rows);
        p.rows[i] = w[i]->rows;
        p.chunk[i] = row_chunk(w[i]->row_bytes, w[i]->rows, T);
        units[i] = (w[i]->rows + p.chunk[i] - 1) / p.chunk[i];
    }
    p.units0 = units[0];
    es_pool_run(s->pool, pair_task, &p, units[0] + units[1], 1);
}

/* ---- rotary embedding -------------------------------------------------------- */

/* cos/sin of every pair at position pos: angle = pos · f_i in fp32, as the
 * reference; not scaled by mscale. */
static void rope_table(float *cs, int dr, int pos, const float *freqs) {
    for (int i = 0; i < dr / 2; i++) {
        float angle = (float)pos * freqs[i];
        cs[2 * i] = cosf(angle);
        cs[2 * i + 1] = sinf(angle);
    }
}

/* Interleaved (GPT-J) rotation of the pairs (v[2i], v[2i+1]). */
static void rope(float *v, int dr, const float *cs) {
    for (int i = 0; i < dr / 2; i++) {
        float c = cs[2 * i], sn = cs[2 * i + 1];
        float a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = a * c - b * sn;
        v[2 * i + 1] = a * sn + b * c;
    }
}

/* ---- attention ------------------------------------------------------------- */

/* xn [T][D] holds the normed input; result [T][D] in xb. */
static void attention(es_session *s, int il, int T) {
    const es_model *m = s->m;
    const es_hparams *hp = &m->hp;
    const es_layer *ly = &m->layers[il];
    es_scratch *sc = s->scratch;
    const int D = hp->dim, H = hp->n_heads, R = hp->kv_lora, dn = hp->nope, dr = hp->rope, kvw = R + dr;
    const int qw = H * (dn + dr);

    /* the query's first product and a = [c (R) ; k_pe (dr)] per token, both
     * from xn, in one region; the cache gets ĉ = RMSNorm(c) and rotated k_pe */
    if (hp->q_lora) {
        matmul_pair(s, &ly->wq_a, sc->qa, &ly->wkv_a, sc->kva, sc->xn, D, T);
        for (int t = 0; t < T; t++)
            s->m->kern->rmsnorm(sc->qa + (size_t)t * hp->q_lora, sc->qa + (size_t)t * hp->q_lora, ly->q_a_norm,
                               hp->q_lora, hp->eps);
        matmul(s, &ly->wq_b, 0, sc->qa, hp->q_lora, T, sc->q, qw);
    } else {
        matmul_pair(s, &ly->wq, sc->q, &ly->wkv_a, sc->kva, sc->xn, D, T);
    }
    float *cache = s->kv + (size_t)il * s->n_ctx * kvw;
    for (int t = 0; t < T; t++) {
        const float *cs = sc->rope_cs + (size_t)t * dr;
        float *slot = cache + (size_t)(s->pos + t) * kvw;
        const float *a = sc->kva + (size_t)t * kvw;
        s->m->kern->rmsnorm(slot, a, ly->kv_a_norm, R, hp->eps);
        memcpy(slot + R, a + R, sizeof(float) * (size_t)dr);
        rope(slot + R, dr, cs);
        for (int h = 0; h < H; h++) rope(sc->q + (size_t)t * qw + (size_t)h * (dn + dr) + dn, dr, cs);
    }
    es_attention_core(s, sc->attn, ly, cache, sc->q, s->pos, T, sc->o);
    matmul(s, &ly->wo, 0, sc->o, (int64_t)H * hp->vdim, T, sc->xb, D);
}

/* ---- feed-forward ------------------------------------------------------------- */

/* out[T][D] = W2 (silu(W1 x) ⊙ W3 x) for the T rows of x */
static void mlp(es_session *s, const es_weight *gate, const es_weight *up, const es_weight *down, const float *x,
                int T, float *out) {
    es_scratch *sc = s->scratch;
    const int64_t F = gate->rows, D = s->m->hp.dim;
    matmul_pair(s, gate, sc->ff_g, up, sc->ff_u, x, D, T);
    s->m->kern->silu_mul(sc->ff_g, sc->ff_u, F * T);
    matmul(s, down, 0, sc->ff_g, F, T, out, D);
}

/* Router scores s (unbiased) [T][E] of the normed rows X [T][D], always
 * with fp32 activations: a kernel that would quantise the input is bypassed
 * for the generic one. */
static void router_scores(es_session *s, const es_layer *ly, const float *X, float *out, int T) {
    const es_weight *w = &ly->gate_inp;
    const int E = s->m->hp.n_experts;
    es_matvec_plan plan = es_plan_matvec(s->m->kern, w->type);
    matmul_job j = pool_job(s, w, 0, X, sizeof(float) * (size_t)s->m->hp.dim, T, out, E);
    if (plan.act_type != ES_TYPE_F32) {
        j.mv = es_kernels_generic.matvec[w->type];
        j.mm = NULL;
    }
    es_pool_run(s->pool, matmul_task, &j, E, row_chunk(w->row_bytes, E, T));
    for (int t = 0; t < T; t++) {
        float *sc_t = out + (size_t)t * E;
        if (s->m->hp.gating == ES_GATING_SIGMOID) {
            for (int e = 0; e < E; e++) sc_t[e] = 1.0f / (1.0f + expf(-sc_t[e]));
        } else {
            s->m->kern->softmax(sc_t, E);
        }
    }
}

/* Expert choice for one token from its scores: fills sel[k] (ascending ids)
 * and w[k].  choice (E floats) and taken (E ints) are scratch.  NaN scores
 * (a broken model) still yield k distinct valid ids. */
static void select_experts(const es_hparams *hp, const float *bias, const float *score, float *choice, int32_t *taken,
                           int32_t *sel, float *w) {
    const int E = hp->n_experts, k = hp->n_used, G = hp->n_groups;
    for (int e = 0; e < E; e++) choice[e] = bias ? score[e] + bias[e] : score[e];
    if (G > 1) {
        /* contiguous groups: top-2 sum with a bias, max without */
        const int per = E / G;
        float gscore[256];
        int keep[256];
        for (int g = 0; g < G; g++) {
            float b1 = -INFINITY, b2 = -INFINITY;
            for (int j = 0; j < per; j++) {
                float c = choice[g * per + j];
                if (c > b1) { b2 = b1; b1 = c; }
                else if (c > b2) b2 = c;
            }
            gscore[g] = bias ? b1 + (per > 1 ? b2 : 0.0f) : b1;
            keep[g] = 0;
        }
        for (int n = 0; n < hp->n_groups_used; n++) {
            int best = -1;
            for (int g = 0; g < G; g++)
                if (!keep[g] && (best < 0 || gscore[g] > gscore[best])) best = g;
            keep[best] = 1;
        }
        for (int g = 0; g < G; g++)
            if (!keep[g])
                for (int j = 0; j < per; j++) choice[g * per + j] = -INFINITY;
    }
    /* top-k by choice score (ties: lower id first) */
    memset(taken, 0, sizeof(int32_t) * (size_t)E);
    for (int n = 0; n < k; n++) {
        int best = -1;
        for (int e = 0; e < E; e++)
            if (!taken[e] && (best < 0 || choice[e] > choice[best])) best = e;
        sel[n] = best;
        taken[best] = 1;
    }
    /* ascending ids: the reference accumulates experts in id order */
    for (int a = 1; a < k; a++)
        for (int b = a; b > 0 && sel[b - 1] > sel[b]; b--) {
            int32_t t = sel[b]; sel[b] = sel[b - 1]; sel[b - 1] = t;
        }
    float sum = 0.0f;
    for (int n = 0; n < k; n++) { w[n] = score[sel[n]]; sum += w[n]; }
    for (int n = 0; n < k; n++) {
        if (hp->norm_topk) w[n] /= sum;
        w[n] *= hp->route_scale;
    }
}

/* Routed experts run as (expert, row chunk) units over the rows of the batch
 * gathered by expert, for a group of experts that are resident together
 * (mmap/residency.h hands them out; ptr holds each one's matrices).  The
 * group is ordered by the NUMA node that owns each expert, and each node's
 * units start on that node's threads (numa.h, threadpool.h). */
typedef struct expert_job {
    es_session *s;
    int layer;
    const es_layer *ly;
    const int32_t *ids;  /* [n] the group's experts */
    const uint8_t *(*ptr)[3]; /* [n] their gate, up, down matrices */
    const int32_t *order;/* [n] positions in ids, grouped by owning node */
    int64_t chunk;       /* rows per unit */
    int64_t units_per;   /* units per expert */
    int phase;           /* 0: gate+up+silu, 1: down */
    const void *act;     /* gathered input rows in the kernel's format */
    size_t act_stride;
    int generic_gate_up; /* gate and up want different formats: both use F32 rows */
    /* the shared expert's units follow the routed ones (0 units: not in
     * this region); its rows for all T tokens, in the chunks matmul() uses */
    int n_experts;       /* in the group */
    int64_t sh_units, sh_chunk;
    matmul_job sh[2];    /* phase 0: gate, up (same input rows); phase 1: down */
} expert_job;

/* A matmul job over matrix `base` laid out as w's matrices. */
static matmul_job expert_mat(const es_kernels *K, const es_weight *w, const uint8_t *base, const void *act,
                             size_t act_stride, int T, float *Y, int64_t y_stride) {
    matmul_job j = make_job(K, w, 0, act, act_stride, T, Y, y_stride);
    j.base = base;
    return j;
}

/* Shared-expert unit u: rows [u*chunk, +chunk) of its gate and up (then
 * silu·mul) or of its down projection, for every token of the batch. */
static void shared_unit(const expert_job *j, int64_t u, int tid) {
    const es_scratch *sc = j->s->scratch;
    const matmul_job *w = &j->sh[0];
    int64_t rows = j->phase == 0 ? j->ly->gate_sh.rows : j->s->m->hp.dim;
    int64_t r0 = u * j->sh_chunk, r1 = r0 + j->sh_chunk < rows ? r0 + j->sh_chunk : rows;
    matmul_task((void *)w, r0, r1, tid);
    if (j->phase == 1) return;
    matmul_task((void *)&j->sh[1], r0, r1, tid);
    for (int t = 0; t < w->T; t++) j->s->m->kern->silu_mul(sc->ff_g + t * rows + r0, sc->ff_u + t * rows + r0, r1 - r0);
}

static void expert_task(void *ctx, int64_t i0, int64_t i1, int tid) {
    const expert_job *j = ctx;
    const es_scratch *sc = j->s->scratch;
    const es_layer *ly = j->ly;
    const int64_t F = j->s->m->hp.moe_ffn_dim, D = j->s->m->hp.dim;
    const int64_t routed_units = j->n_experts * j->units_per;
    for (int64_t u = i0; u < i1; u++) {
        if (u >= routed_units) {
            shared_unit(j, u - routed_units, tid);
            continue;
        }
        int64_t gi = j->order[u / j->units_per];
        int e = j->ids[gi];
        int64_t first = sc->ex_start[e], nrows = sc->ex_start[e + 1] - first;
        int64_t r0 = (u % j->units_per) * j->chunk;
        if (j->s->unit_fn) j->s->unit_fn(j->s->unit_user, j->layer, e, j->phase, es_pool_thread_node(j->s->pool, tid));
        const uint8_t *act = (const uint8_t *)j->act + (size_t)first * j->act_stride;
        if (j->phase == 0) {
            int64_t r1 = r0 + j->chunk < F ? r0 + j->chunk : F;
            matmul_job g = expert_mat(j->s->m->kern, &ly->gate_exps, j->ptr[gi][0], act, j->act_stride, (int)nrows,
                                      sc->ex_g + first * F, F);
            matmul_job up = expert_mat(j->s->m->kern, &ly->up_exps, j->ptr[gi][1], act, j->act_stride, (int)nrows,
                                       sc->ex_h + first * F, F);
            if (j->generic_gate_up) {
                g.mv = es_kernels_generic.matvec[ly->gate_exps.type];
                up.mv = es_kernels_generic.matvec[ly->up_exps.type];
                g.mm = up.mm = NULL;
            }
            matmul_rows(&g, r0, r1);
            matmul_rows(&up, r0, r1);
            for (int64_t t = 0; t < nrows; t++)
                j->s->m->kern->silu_mul(sc->ex_g + (first + t) * F + r0, sc->ex_h + (first + t) * F + r0, r1 - r0);
        } else {
            int64_t r1 = r0 + j->chunk < D ? r0 + j->chunk : D;
            matmul_job dn = expert_mat(j->s->m->kern, &ly->down_exps, j->ptr[gi][2], act, j->act_stride, (int)nrows,
                                       sc->ex_out + first * D, D);
            matmul_rows(&dn, r0, r1);
        }
    }
}

/* Orders the group's n experts by the node that owns them: order[i] is the
 * position in sc->grp of the i-th expert in node order (stable, a counting
 * sort), per_node[k] how many node k owns.  The order changes no result:
 * every expert's rows are its own units. */
static void group_by_node(es_session *s, int il, int n, int32_t *order, int *per_node) {
    const es_scratch *sc = s->scratch;
    const int N = es_pool_nodes(s->pool);
    int64_t next[ES_MAX_NODES];
    memset(per_node, 0, sizeof(int) * (size_t)N);
    for (int i = 0; i < n; i++) per_node[es_numa_expert_node(s->m->numa, il, sc->grp[i]) % N]++;
    next[0] = 0;
    for (int k = 1; k < N; k++) next[k] = next[k - 1] + per_node[k - 1];
    for (int i = 0; i < n; i++) order[next[es_numa_expert_node(s->m->numa, il, sc->grp[i]) % N]++] = i;
}

/* Adds the shared expert's units for `phase` to j (whose input rows are
 * already in the format of their kernels: sh_act, sh_stride): units of the
 * size matmul() would give these matrices, so the result is the same. */
static void add_shared(es_session *s, expert_job *j, const void *sh_act, size_t sh_stride, int T) {
    const es_layer *ly = j->ly;
    const es_scratch *sc = s->scratch;
    const int64_t D = s->m->hp.dim, S = ly->gate_sh.rows;
    if (j->phase == 0) {
        j->sh[0] = pool_job(s, &ly->gate_sh, 0, sh_act, sh_stride, T, sc->ff_g, S);
        j->sh[1] = pool_job(s, &ly->up_sh, 0, sh_act, sh_stride, T, sc->ff_u, S);
    } else {
        j->sh[0] = pool_job(s, &ly->down_sh, 0, sh_act, sh_stride, T, sc->sh_out, D);
    }
    const es_weight *w = j->phase == 0 ? &ly->gate_sh : &ly->down_sh;
    j->sh_chunk = row_chunk(w->row_bytes, w->rows, T);
    j->sh_units = (w->rows + j->sh_chunk - 1) / j->sh_chunk;
}

/* The group's experts (and, with sh_act, the shared expert's rows) for one
 * phase, in one parallel region. */
static void run_experts(es_session *s, int il, int n, const int32_t *order, const int *per_node, int phase,
                        int64_t out_rows, const void *act, size_t act_stride, int generic_gate_up,
                        const void *sh_act, size_t sh_stride, int T) {
    /* Each expert's matrix in four units of a multiple of 16 rows: a split
     * that depends on nothing but the matrix (not the thread count, the
     * nodes, the group of experts or their tokens), so a kernel's row
     * grouping, and so every result, is the same in any mode, budget,
     * thread or node count. */
    int64_t chunk = round16((out_rows + 3) / 4);
    int64_t per = (out_rows + chunk - 1) / chunk;
    const es_scratch *sc = s->scratch;
    expert_job j = {s, il, &s->m->layers[il], sc->grp, sc->grp_ptr, order, chunk, per, phase, act, act_stride,
                    generic_gate_up, n, 0, 0, {{0}}};
    if (sh_act) add_shared(s, &j, sh_act, sh_stride, T);
    /* node k's units follow node k-1's (the group is ordered by node); a
     * node's threads take its units first and then help the others, since
     * with k of E experts chosen per token the nodes rarely get equal
     * shares, and a remote read beats an idle core */
    const int N = es_pool_nodes(s->pool);
    int64_t node_start[ES_MAX_NODES + 1];
    node_start[0] = 0;
    for (int k = 0; k < N; k++) node_start[k + 1] = node_start[k] + (int64_t)per_node[k] * per;
    node_start[N] += j.sh_units; /* interleaved weights: any node, stolen as needed */
    es_pool_run_nodes(s->pool, expert_task, &j, node_start, 1, 1);
}

/* Predicts the experts model layer il will route the batch to by applying
 * its router to the current residual stream x (before this layer's FFN is
 * added) normalised with its ffn_norm, and hands them to the residency
 * manager, most often chosen first. */
static void predict_layer(es_session *s, int il, int T) {
    const es_hparams *hp = &s->m->hp;
    const es_layer *ly = &s->m->layers[il];
    es_scratch *sc = s->scratch;
    const int D = hp->dim, E = hp->n_experts, k = hp->n_used;
    for (int t = 0; t < T; t++)
        s->m->kern->rmsnorm(sc->pred_xn + (size_t)t * D, sc->x + (size_t)t * D, ly->ffn_norm, D, hp->eps);
    router_scores(s, ly, sc->pred_xn, sc->pred_router, T);
    memset(sc->pred_cnt, 0, sizeof(int32_t) * (size_t)E);
    /* select_experts wants E floats and E ints of scratch: pred_xn's first
     * row is free again, and pred_ids is filled only afterwards */
    for (int t = 0; t < T; t++) {
        select_experts(hp, ly->exp_bias, sc->pred_router + (size_t)t * E, sc->pred_xn, sc->pred_ids,
                       sc->pred_sel + (size_t)t * k, sc->pred_w + (size_t)t * k);
        for (int j = 0; j < k; j++) sc->pred_cnt[sc->pred_sel[(size_t)t * k + j]]++;
    }
    int n = 0;
    for (int e = 0; e < E; e++)
        if (sc->pred_cnt[e]) sc->pred_ids[n++] = e;
    /* most tokens first (stable: lower id first on ties) */
    for (int a = 1; a < n; a++)
        for (int b = a; b > 0 && sc->pred_cnt[sc->pred_ids[b - 1]] < sc->pred_cnt[sc->pred_ids[b]]; b--) {
            int32_t t = sc->pred_ids[b]; sc->pred_ids[b] = sc->pred_ids[b - 1]; sc->pred_ids[b - 1] = t;
        }
    es_res_prefetch(s->m->res, il, sc->pred_ids, n);
}

/* xn [T][D] holds the normed input; result [T][D] in xb. */
static void moe(es_session *s, int il, int T) {
    const es_hparams *hp = &s->m->hp;
    const es_layer *ly = &s->m->layers[il];
    es_scratch *sc = s->scratch;
    es_res *res = s->m->res;
    const int D = hp->dim, E = hp->n_experts, k = hp->n_used, F = hp->moe_ffn_dim;

    router_scores(s, ly, sc->xn, sc->router, T);
    float *choice = sc->ex_g; /* E floats of scratch, free until the experts run */
    for (int t = 0; t < T; t++) {
        select_experts(hp, ly->exp_bias, sc->router + (size_t)t * E, choice, sc->ex_fill, sc->sel + (size_t)t * k,
                       sc->selw + (size_t)t * k);
        if (s->route_fn) s->route_fn(s->route_user, il, s->pos + t, sc->sel + (size_t)t * k, k);
    }
    /* group the batch's (token, choice) pairs by expert, tokens in order */
    memset(sc->ex_fill, 0, sizeof(int32_t) * (size_t)E);
    for (int i = 0; i < T * k; i++) sc->ex_fill[sc->sel[i]]++;
    int n_active = 0;
    sc->ex_start[0] = 0;
    for (int e = 0; e < E; e++) {
        sc->ex_start[e + 1] = sc->ex_start[e] + sc->ex_fill[e];
        if (sc->ex_fill[e]) sc->active[n_active++] = e;
        sc->ex_fill[e] = 0;
    }
    /* ask for this layer's experts first, so their loads start now, then
     * predict the next layer's while they come in */
    if (res) es_res_begin(res, il, sc->active, n_active, sc->ex_start, T);
    if (es_res_wants_prediction(res) && il + 1 < hp->n_layers && s->m->layers[il + 1].is_moe)
        predict_layer(s, il + 1, T);
    es_matvec_plan pg = es_plan_matvec(s->m->kern, ly->gate_exps.type),
                   pu = es_plan_matvec(s->m->kern, ly->up_exps.type);
    int mixed = pg.act_type != pu.act_type; /* rare: gate and up of different types */
    if (mixed) pg.act_type = ES_TYPE_F32;
    size_t in_stride = es_act_bytes(pg.act_type, D);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            int e = sc->sel[t * k + j];
            int row = sc->ex_start[e] + sc->ex_fill[e]++;
            sc->tok_row[t * k + j] = row;
            es_prepare_act(s->m->kern, pg.act_type, sc->xn + (size_t)t * D,
                           (uint8_t *)sc->act_gather + (size_t)row * in_stride, D);
        }

    /* Groups of resident experts, in the order they become resident; each
     * expert's rows are computed by the same units whatever the grouping, so
     * the result does not depend on the budget or the mode. */
    es_matvec_plan pd = es_plan_matvec(s->m->kern, ly->down_exps.type);
    size_t h_stride = pd.act_type == ES_TYPE_F32 ? sizeof(float) * (size_t)F : es_act_bytes(pd.act_type, F);
    /* The shared expert's rows run in the first group's two regions (one
     * barrier less each, and its units fill the routed experts' tail),
     * unless its gate and up want different input formats. */
    int shared_pending = ly->has_shared && es_plan_matvec(s->m->kern, ly->gate_sh.type).act_type ==
                                               es_plan_matvec(s->m->kern, ly->up_sh.type).act_type;
    const int fuse_shared = shared_pending;
    for (int done = 0; !done;) {
        int n;
        if (res) {
            n = es_res_next(res, sc->grp, sc->grp_ptr);
            if (n <= 0) break;
        } else { /* no manager: every expert where the mapping has it, at once */
            n = n_active;
            done = 1;
            for (int i = 0; i < n; i++) {
                int e = sc->active[i];
                sc->grp[i] = e;
                sc->grp_ptr[i][0] = ly->gate_exps.data + (size_t)e * ly->gate_exps.mat_bytes;
                sc->grp_ptr[i][1] = ly->up_exps.data + (size_t)e * ly->up_exps.mat_bytes;
                sc->grp_ptr[i][2] = ly->down_exps.data + (size_t)e * ly->down_exps.mat_bytes;
            }
        }
        /* ex_fill is free once the rows are gathered: the group's node order */
        int per_node[ES_MAX_NODES];
        group_by_node(s, il, n, sc->ex_fill, per_node);
        const void *sh_act = NULL;
        size_t sh_stride = 0;
        const int64_t S = ly->gate_sh.rows;
        if (shared_pending)
            sh_act = prepare_rows(s->m->kern, es_plan_matvec(s->m->kern, ly->gate_sh.type).act_type, sc->xn, D, D, T,
                                  sc->act, &sh_stride);
        run_experts(s, il, n, sc->ex_fill, per_node, 0, F, sc->act_gather, in_stride, mixed, sh_act, sh_stride, T);
        /* the down projection's input: the group's hidden rows in its kernel's format */
        const void *hact = sc->ex_g;
        if (pd.act_type != ES_TYPE_F32) {
            hact = sc->act_down;
            for (int i = 0; i < n; i++)
                for (int32_t row = sc->ex_start[sc->grp[i]]; row < sc->ex_start[sc->grp[i] + 1]; row++)
                    es_prepare_act(s->m->kern, pd.act_type, sc->ex_g + (size_t)row * F,
                                   (uint8_t *)sc->act_down + (size_t)row * h_stride, F);
        }
        if (shared_pending)
            sh_act = prepare_rows(s->m->kern, es_plan_matvec(s->m->kern, ly->down_sh.type).act_type, sc->ff_g, S, S, T,
                                  sc->act, &sh_stride);
        run_experts(s, il, n, sc->ex_fill, per_node, 1, D, hact, h_stride, 0, sh_act, sh_stride, T);
        shared_pending = 0;
        if (res) es_res_release(res, sc->grp, n);
    }
    if (res) es_res_end(res);

    /* y_t = Σ_j w_tj · expert_j(x_t), experts in ascending id order, + shared */
    memset(sc->xb, 0, sizeof(float) * (size_t)T * D);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++)
            s->m->kern->axpy_f32(sc->xb + (size_t)t * D, sc->selw[t * k + j],
                                sc->ex_out + (size_t)sc->tok_row[t * k + j] * D, D);
    if (ly->has_shared && (!fuse_shared || shared_pending))
        mlp(s, &ly->gate_sh, &ly->up_sh, &ly->down_sh, sc->xn, T, sc->sh_out);
    if (ly->has_shared)
        for (size_t i = 0; i < (size_t)T * D; i++) sc->xb[i] += sc->sh_out[i];
}

/* ---- the batch ------------------------------------------------------------------ */

/* T tokens (T <= the scratch batch) from position s->pos.  logits: NULL, or
 * [T][V] if all, else the last token's [V]. */
static void forward_batch(es_session *s, const int32_t *tokens, int T, float *logits, int all) {
    const es_model *m = s->m;
    const es_hparams *hp = &m->hp;
    const es_kernels *K = m->kern;
    es_scratch *sc = s->scratch;
    const int D = hp->dim;

    for (int t = 0; t < T; t++) {
        es_dequant_row(K, m->tok_embd.type, m->tok_embd.data + (size_t)tokens[t] * m->tok_embd.row_bytes,
                       sc->x + (size_t)t * D, D);
        rope_table(sc->rope_cs + (size_t)t * hp->rope, hp->rope, s->pos + t, m->rope_freqs);
    }
    for (int il = 0; il < hp->n_layers; il++) {
        const es_layer *ly = &m->layers[il];
        for (int t = 0; t < T; t++) K->rmsnorm(sc->xn + (size_t)t * D, sc->x + (size_t)t * D, ly->attn_norm, D, hp->eps);
        attention(s, il, T);
        for (size_t i = 0; i < (size_t)T * D; i++) sc->x[i] += sc->xb[i];
        for (int t = 0; t < T; t++) K->rmsnorm(sc->xn + (size_t)t * D, sc->x + (size_t)t * D, ly->ffn_norm, D, hp->eps);
        if (ly->is_moe) moe(s, il, T);
        else mlp(s, &ly->ffn_gate, &ly->ffn_up, &ly->ffn_down, sc->xn, T, sc->xb);
        for (size_t i = 0; i < (size_t)T * D; i++) sc->x[i] += sc->xb[i];
    }
    if (logits) {
        int first = all ? 0 : T - 1;
        for (int t = first; t < T; t++) K->rmsnorm(sc->xn + (size_t)t * D, sc->x + (size_t)t * D, m->out_norm, D, hp->eps);
        matmul(s, &m->out, 0, sc->xn + (size_t)first * D, D, T - first, logits, hp->n_vocab);
    }
    s->pos += T;
}

void es_forward(es_session *s, const int32_t *tokens, int n, float *logits, int all_positions) {
    const int B = s->scratch->B;
    for (int i = 0; i < n; i += B) {
        int T = n - i < B ? n - i : B;
        float *lg = NULL;
        if (logits && all_positions) lg = logits + (size_t)i * (size_t)s->m->hp.n_vocab;
        else if (logits && i + T == n) lg = logits;
        forward_batch(s, tokens + i, T, lg, all_positions);
    }
}

/* ---- scratch ---------------------------------------------------------------------- */

void es_scratch_free(es_scratch *sc) {
    if (!sc) return;
    void *bufs[] = {sc->x, sc->xn, sc->xb, sc->q, sc->qa, sc->kva, sc->o, sc->ff_g, sc->ff_u, sc->router,
                    sc->sel, sc->selw, sc->ex_start, sc->ex_fill, sc->tok_row, sc->active, sc->ex_g, sc->ex_h,
                    sc->ex_out, sc->sh_out, sc->rope_cs, sc->act, sc->act_gather, sc->act_down, sc->grp, (void *)sc->grp_ptr,
                    sc->pred_xn, sc->pred_router, sc->pred_sel, sc->pred_cnt, sc->pred_ids, sc->pred_w};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    es_attn_scratch_free(sc->attn);
    free(sc);
}

static size_t maxz(size_t a, size_t b) { return a > b ? a : b; }

/* Largest byte size of n activations in any format a kernel may ask for
 * (fp32 is the widest per value; the slack covers block rounding). */
static size_t act_row_bytes(int64_t n) { return sizeof(float) * (size_t)n + 512; }

es_scratch *es_scratch_new(const es_model *m, int n_ctx, int n_threads) {
    const es_hparams *hp = &m->hp;
    es_scratch *sc = calloc(1, sizeof *sc);
    if (!sc) return NULL;
    const size_t B = ES_BATCH, D = (size_t)hp->dim, H = (size_t)hp->n_heads, R = (size_t)hp->kv_lora;
    const size_t k = (size_t)(hp->n_used ? hp->n_used : 1), E = (size_t)(hp->n_experts ? hp->n_experts : 1);
    const size_t F = (size_t)hp->moe_ffn_dim, S = (size_t)hp->n_shared * F;
    const size_t ffw = maxz((size_t)hp->ffn_dim, S);
    size_t widest = maxz(maxz(D, (size_t)hp->q_lora), maxz(ffw, H * (size_t)hp->vdim));
    sc->B = (int)B;
    sc->x = malloc(sizeof(float) * B * D);
    sc->xn = malloc(sizeof(float) * B * D);
    sc->xb = malloc(sizeof(float) * B * D);
    sc->q = malloc(sizeof(float) * B * H * (size_t)(hp->nope + hp->rope));
    sc->qa = malloc(sizeof(float) * B * maxz((size_t)hp->q_lora, 1));
    sc->kva = malloc(sizeof(float) * B * (R + (size_t)hp->rope));
    sc->o = malloc(sizeof(float) * B * H * (size_t)hp->vdim);
    sc->ff_g = malloc(sizeof(float) * B * ffw);
    sc->ff_u = malloc(sizeof(float) * B * ffw);
    sc->router = malloc(sizeof(float) * B * E);
    sc->sel = malloc(sizeof(int32_t) * B * k);
    sc->selw = malloc(sizeof(float) * B * k);
    sc->ex_start = malloc(sizeof(int32_t) * (E + 1));
    sc->ex_fill = malloc(sizeof(int32_t) * E);
    sc->tok_row = malloc(sizeof(int32_t) * B * k);
    sc->active = malloc(sizeof(int32_t) * E);
    sc->ex_g = malloc(sizeof(float) * maxz(B * k * F, E));
    sc->ex_h = malloc(sizeof(float) * maxz(B * k * F, 1));
    sc->ex_out = malloc(sizeof(float) * B * k * D);
    sc->sh_out = malloc(sizeof(float) * B * D);
    sc->rope_cs = malloc(sizeof(float) * B * (size_t)hp->rope);
    sc->act = malloc(B * act_row_bytes((int64_t)widest));
    sc->act_gather = malloc(B * k * act_row_bytes((int64_t)maxz(D, F)));
    sc->act_down = malloc(B * k * act_row_bytes((int64_t)maxz(F, 1)));
    sc->grp = malloc(sizeof(int32_t) * E);
    sc->grp_ptr = malloc(sizeof *sc->grp_ptr * E);
    sc->pred_xn = malloc(sizeof(float) * maxz(B * D, E));
    sc->pred_router = malloc(sizeof(float) * B * E);
    sc->pred_sel = malloc(sizeof(int32_t) * B * k);
    sc->pred_cnt = malloc(sizeof(int32_t) * E);
    sc->pred_ids = malloc(sizeof(int32_t) * E);
    sc->pred_w = malloc(sizeof(float) * B * k);
    sc->attn = es_attn_scratch_new(m, n_ctx, (int)B, n_threads);
    void *bufs[] = {sc->x, sc->xn, sc->xb, sc->q, sc->qa, sc->kva, sc->o, sc->ff_g, sc->ff_u, sc->router,
                    sc->sel, sc->selw, sc->ex_start, sc->ex_fill, sc->tok_row, sc->active, sc->ex_g, sc->ex_h,
                    sc->ex_out, sc->sh_out, sc->rope_cs, sc->act, sc->act_gather, sc->act_down, sc->grp, (void *)sc->grp_ptr,
                    sc->pred_xn, sc->pred_router, sc->pred_sel, sc->pred_cnt, sc->pred_ids, sc->pred_w};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (!bufs[i] || !sc->attn) {
            es_scratch_free(sc);
            return NULL;
        }
    return sc;
}
