/* moe.c — one mixture-of-experts FFN layer over a batch of T tokens, as
 * shared/spec/deepseek-semantics.md states it:
 *
 *   scores = gating(Router · x)             softmax or sigmoid, fp32
 *   chosen = top-k of scores (+ bias), within the best groups when G > 1
 *   y      = Σ_{j chosen, ascending id} w_j · W2_j (silu(W1_j x) ⊙ W3_j x)
 *            + shared(x)
 *
 * in six steps, one function each: route (scores, choice, weights),
 * group_by_expert (the batch's (token, choice) pairs in rows by expert),
 * request_experts (the residency manager's loads, and its prediction of the
 * next layer), gather_rows (each pair's input row into its expert's rows),
 * run_groups (the routed experts, one group of resident experts at a time,
 * with the shared expert folded into the first group's regions), combine
 * (the weighted sum).
 *
 * A model holding a share of the experts (es_model_load_share: one MPI rank
 * of several, dist/) routes the whole batch, runs only its own experts,
 * leaves +0.0 in the rows of the others, and hands the rows to the
 * session's reduce hook (reduce_slots), which sums them over the shares;
 * combine then adds them in its usual order, so the logits are those of
 * the whole model.
 *
 * The routed experts of a group run as (expert, row chunk) units in two
 * parallel regions (gate+up, then down), each expert's units started on the
 * threads of the NUMA node holding it.  Every output value is computed by
 * exactly one unit, whose rows depend only on the matrix's shape, so the
 * result depends neither on the thread count nor on how residency groups
 * the experts.  The MTP block's experts (layers[n_layers]) bypass the
 * residency manager, which knows only the main layers: they are read
 * through the mapping.
 *
 * Notation as in forward.c: T tokens, D = dim, E = experts, k = experts
 * used, G = expert groups, F = expert ffn dim, S = shared ffn dim.
 */
#include "moe.h"

#include <math.h>
#include <string.h>

#include "es_assert.h"
#include "session.h"
#include "residency.h"

/* ---- routing ------------------------------------------------------------------ */

/* Router scores s (unbiased) out[T][E] of the normed rows X[T][D], always
 * with fp32 activations: a kernel that would quantise the input is bypassed
 * for the generic one. */
static void router_scores(es_session *s, const es_layer *ly, const float *X, float *out, int T) {
    const es_weight *w = &ly->gate_inp;
    const int E = s->m->hp.n_experts;
    es_matvec_plan plan = es_plan_matvec(s->m->kern, w->type);
    matmul_job j = pool_job(s, w, 0, X, sizeof(float) * (size_t)s->m->hp.dim, T, out, E);
    if (plan.act_type != ES_TYPE_F32) {
        j.mv = es_matvec_generic(w->type);
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

/* Expert choice for one token from its scores score[E]: fills sel[k]
 * (ascending ids) and w[k].  choice (E floats) and taken (E ints) are
 * scratch.  NaN scores (a broken model) still yield k distinct valid ids.
 * The model loader bounds G by ES_MAX_EXPERT_GROUPS. */
static void select_experts(const es_hparams *hp, const float *bias, const float *score, float *choice, int32_t *taken,
                           int32_t *sel, float *w) {
    const int E = hp->n_experts, k = hp->n_used, G = hp->n_groups;
    for (int e = 0; e < E; e++) choice[e] = bias ? score[e] + bias[e] : score[e];
    if (G > 1) {
        /* contiguous groups: top-2 sum with a bias, max without */
        const int per = E / G;
        float gscore[ES_MAX_EXPERT_GROUPS];
        int keep[ES_MAX_EXPERT_GROUPS];
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

/* xn[T][D] -> router[T][E] -> sel[T][k] (ascending ids), selw[T][k]; tells
 * each row's session's route hook the row's choice. */
static void route(es_session *s, int il, int T) {
    const es_hparams *hp = &s->m->hp;
    const es_layer *ly = &s->m->layers[il];
    es_scratch *sc = s->scratch;
    const int E = hp->n_experts, k = hp->n_used;
    ES_ASSERT(k <= ES_MAX_EXPERTS_USED && hp->n_groups <= ES_MAX_EXPERT_GROUPS);
    router_scores(s, ly, sc->xn, sc->router, T);
    float *choice = sc->ex_g; /* E floats of scratch, free until the experts run */
    for (int t = 0; t < T; t++) {
        select_experts(hp, ly->exp_bias, sc->router + (size_t)t * E, choice, sc->ex_fill, sc->sel + (size_t)t * k,
                       sc->selw + (size_t)t * k);
        const es_session *owner = sc->seg[sc->row_seg[t]].s; /* the row's session, hook and position */
        if (owner->route_fn) owner->route_fn(owner->route_user, il, sc->row_pos[t], sc->sel + (size_t)t * k, k);
    }
}

/* sel[T][k] -> ex_start[E+1] (expert e's rows are [ex_start[e],
 * ex_start[e+1]) of the T·k gathered rows, its tokens in order) and
 * active[n] (the experts with at least one row, ascending); returns n.
 * Leaves ex_fill[E] zero. */
static int group_by_expert(es_session *s, int T) {
    es_scratch *sc = s->scratch;
    const int E = s->m->hp.n_experts, k = s->m->hp.n_used;
    memset(sc->ex_fill, 0, sizeof(int32_t) * (size_t)E);
    for (int i = 0; i < T * k; i++) sc->ex_fill[sc->sel[i]]++;
    int n_active = 0;
    sc->ex_start[0] = 0;
    for (int e = 0; e < E; e++) {
        sc->ex_start[e + 1] = sc->ex_start[e] + sc->ex_fill[e];
        if (sc->ex_fill[e]) sc->active[n_active++] = e;
        sc->ex_fill[e] = 0;
    }
    return n_active;
}

/* Predicts the experts model layer il will route the batch to by applying
 * its router to the current residual stream x[T][D] (before this layer's
 * FFN is added) normalised with its ffn_norm, and hands them to the
 * residency manager, most often chosen first.  pred_xn[T][D] ->
 * pred_router[T][E] -> pred_sel, pred_w [T][k] -> pred_ids[n]. */
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
        if (sc->pred_cnt[e] && es_model_owns(s->m, il, e)) sc->pred_ids[n++] = e;
    /* most tokens first (stable: lower id first on ties) */
    for (int a = 1; a < n; a++)
        for (int b = a; b > 0 && sc->pred_cnt[sc->pred_ids[b - 1]] < sc->pred_cnt[sc->pred_ids[b]]; b--) {
            int32_t t = sc->pred_ids[b]; sc->pred_ids[b] = sc->pred_ids[b - 1]; sc->pred_ids[b - 1] = t;
        }
    es_res_prefetch(s->m->res, il, sc->pred_ids, n);
}

/* The residency manager of layer il: the model's, but none for the MTP
 * block (layers[n_layers]), whose experts the pager does not know: they are
 * read through the mapping. */
static es_res *layer_res(const es_session *s, int il) { return il < s->m->hp.n_layers ? s->m->res : NULL; }

/* Asks the residency manager (if any) for layer il's active[n_active]
 * experts first, so their loads start now, then predicts the next layer's
 * while they come in. */
static void request_experts(es_session *s, int il, int n_active, int T) {
    es_scratch *sc = s->scratch;
    es_res *res = layer_res(s, il);
    if (res) es_res_begin(res, il, sc->active, n_active, sc->ex_start, T);
    if (es_res_wants_prediction(res) && il + 1 < s->m->hp.n_layers && s->m->layers[il + 1].is_moe)
        predict_layer(s, il + 1, T);
}

/* xn[T][D] -> act_gather[T·k rows][D] in act_type (in_stride bytes a row):
 * token t's row for its j-th choice goes to tok_row[t][j], the next free
 * row of that expert (ex_fill counts them); rows of experts another share
 * owns are left as they are. */
static void gather_rows(es_session *s, int il, int T, uint32_t act_type, size_t in_stride) {
    es_scratch *sc = s->scratch;
    const int D = s->m->hp.dim, k = s->m->hp.n_used;
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            int e = sc->sel[t * k + j];
            int row = sc->ex_start[e] + sc->ex_fill[e]++;
            sc->tok_row[t * k + j] = row;
            if (!es_model_owns(s->m, il, e)) continue; /* another share's: it gets no input */
            es_prepare_act(s->m->kern, act_type, sc->xn + (size_t)t * D,
                           (uint8_t *)sc->act_gather + (size_t)row * in_stride, D);
        }
}

/* ---- the routed experts of a resident group ------------------------------------- */

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
 * silu·mul into ff_g[T][S]) or of its down projection (sh_out[T][D]), for
 * every token of the batch. */
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

/* Units [i0, i1): phase 0 takes an expert's gathered rows [n][D] to
 * ex_g[n][F] = silu(gate) ⊙ up (ex_h holds up), phase 1 takes its hidden
 * rows [n][F] to ex_out[n][D]; units past the routed ones are the shared
 * expert's. */
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
                g.mv = es_matvec_generic(ly->gate_exps.type);
                up.mv = es_matvec_generic(ly->up_exps.type);
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
    ES_ASSERT(N >= 1 && N <= ES_MAX_NODES);
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

/* The next group of resident experts into grp[n] and grp_ptr[n]; returns n,
 * or -1 when the layer's experts have all run.  Without a residency manager
 * every active expert, where the mapping has it, in one group. */
static int next_group(es_session *s, int il, const es_layer *ly, int n_active, int first) {
    es_scratch *sc = s->scratch;
    if (layer_res(s, il)) {
        int n = es_res_next(s->m->res, sc->grp, sc->grp_ptr);
        ES_ASSERT(n <= s->m->hp.n_experts);
        return n > 0 ? n : -1;
    }
    if (!first) return -1;
    for (int i = 0; i < n_active; i++) {
        int e = sc->active[i];
        sc->grp[i] = e;
        sc->grp_ptr[i][0] = es_weight_mat(&ly->gate_exps, e);
        sc->grp_ptr[i][1] = es_weight_mat(&ly->up_exps, e);
        sc->grp_ptr[i][2] = es_weight_mat(&ly->down_exps, e);
    }
    return n_active;
}

/* act_gather[T·k rows][D] (in_stride bytes a row; F32 rows and generic
 * kernels when gate and up are `mixed`) -> ex_out[T·k rows][D], group by
 * group in the order the experts become resident.  With fuse_shared the
 * shared expert's rows (xn[T][D] -> sh_out[T][D]) run in the first group's
 * two regions (one barrier less each, and its units fill the routed
 * experts' tail).  Returns whether the shared expert ran. */
static int run_groups(es_session *s, int il, int n_active, int T, size_t in_stride, int mixed, int fuse_shared) {
    const es_layer *ly = &s->m->layers[il];
    es_scratch *sc = s->scratch;
    es_res *res = layer_res(s, il);
    const int D = s->m->hp.dim, F = s->m->hp.moe_ffn_dim;
    const int64_t S = ly->gate_sh.rows;
    const es_kernels *K = s->m->kern;
    es_matvec_plan pd = es_plan_matvec(K, ly->down_exps.type);
    size_t h_stride = pd.act_type == ES_TYPE_F32 ? sizeof(float) * (size_t)F : es_act_bytes(pd.act_type, F);
    int shared_pending = fuse_shared;
    for (int first = 1;; first = 0) {
        int n = next_group(s, il, ly, n_active, first);
        if (n < 0) break;
        /* ex_fill is free once the rows are gathered: the group's node order */
        int per_node[ES_MAX_NODES];
        group_by_node(s, il, n, sc->ex_fill, per_node);
        const void *sh_act = NULL;
        size_t sh_stride = 0;
        if (shared_pending)
            sh_act = es_fwd_prepare_rows(K, es_plan_matvec(K, ly->gate_sh.type).act_type, sc->xn, D, D, T, sc->act,
                                         &sh_stride);
        run_experts(s, il, n, sc->ex_fill, per_node, 0, F, sc->act_gather, in_stride, mixed, sh_act, sh_stride, T);
        /* the down projection's input: the group's hidden rows in its kernel's format */
        const void *hact = sc->ex_g;
        if (pd.act_type != ES_TYPE_F32) {
            hact = sc->act_down;
            for (int i = 0; i < n; i++)
                for (int32_t row = sc->ex_start[sc->grp[i]]; row < sc->ex_start[sc->grp[i] + 1]; row++)
                    es_prepare_act(K, pd.act_type, sc->ex_g + (size_t)row * F,
                                   (uint8_t *)sc->act_down + (size_t)row * h_stride, F);
        }
        if (shared_pending)
            sh_act = es_fwd_prepare_rows(K, es_plan_matvec(K, ly->down_sh.type).act_type, sc->ff_g, S, S, T, sc->act,
                                         &sh_stride);
        run_experts(s, il, n, sc->ex_fill, per_node, 1, D, hact, h_stride, 0, sh_act, sh_stride, T);
        shared_pending = 0;
        if (res) es_res_release(res, sc->grp, n);
    }
    if (res) es_res_end(res);
    return fuse_shared && !shared_pending;
}

/* ---- expert parallelism ----------------------------------------------------------- */

/* Keeps in active[n_active] the experts this model computes (all of them
 * unless it holds a share); returns their count. */
static int own_experts(es_session *s, int il, int n_active) {
    es_scratch *sc = s->scratch;
    if (s->m->n_shares <= 1) return n_active;
    int n = 0;
    for (int i = 0; i < n_active; i++)
        if (es_model_owns(s->m, il, sc->active[i])) sc->active[n++] = sc->active[i];
    return n;
}

/* With a share of the experts: the exchange hook, given the rows' layout,
 * fills the other shares' rows of ex_out; or, without one, those rows to
 * +0.0 and the reduce hook sums the T·k rows over the shares.  A failed
 * exchange marks the session (forward.c stops). */
static void reduce_slots(es_session *s, int il, int T) {
    es_scratch *sc = s->scratch;
    const int E = s->m->hp.n_experts, D = s->m->hp.dim, k = s->m->hp.n_used;
    if (s->m->n_shares <= 1) return;
    if (s->exchange_fn) {
        ES_ASSERT(sc->ex_start[E] == T * k);
        if (s->exchange_fn(s->exchange_user, il, sc->ex_out, D, E, sc->ex_start) != 0 && s->reduce_failed < 0)
            s->reduce_failed = il;
        return;
    }
    for (int e = 0; e < E; e++)
        if (sc->ex_start[e + 1] > sc->ex_start[e] && !es_model_owns(s->m, il, e))
            memset(sc->ex_out + (size_t)sc->ex_start[e] * D, 0,
                   sizeof(float) * (size_t)(sc->ex_start[e + 1] - sc->ex_start[e]) * D);
    if (!s->reduce_fn || s->reduce_fn(s->reduce_user, il, sc->ex_out, (size_t)T * k * D) != 0)
        if (s->reduce_failed < 0) s->reduce_failed = il;
}

/* ---- the layer ------------------------------------------------------------------ */

/* xb[T][D] = Σ_j selw[t][j] · ex_out[tok_row[t][j]] (experts in ascending
 * id order) + sh_out[T][D], computing the shared expert first unless
 * shared_done. */
static void combine(es_session *s, const es_layer *ly, int T, int shared_done) {
    es_scratch *sc = s->scratch;
    const int D = s->m->hp.dim, k = s->m->hp.n_used;
    memset(sc->xb, 0, sizeof(float) * (size_t)T * D);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++)
            s->m->kern->axpy_f32(sc->xb + (size_t)t * D, sc->selw[t * k + j],
                                sc->ex_out + (size_t)sc->tok_row[t * k + j] * D, D);
    if (ly->has_shared && !shared_done) es_fwd_mlp(s, &ly->gate_sh, &ly->up_sh, &ly->down_sh, sc->xn, T, sc->sh_out);
    if (ly->has_shared)
        for (size_t i = 0; i < (size_t)T * D; i++) sc->xb[i] += sc->sh_out[i];
}

void es_moe(es_session *s, int il, int T) {
    const es_layer *ly = &s->m->layers[il];
    route(s, il, T);
    int n_active = own_experts(s, il, group_by_expert(s, T));
    request_experts(s, il, n_active, T);
    /* the gathered rows in the format of gate's and up's kernels, or fp32
     * for both (and generic kernels) in the rare case they differ */
    es_matvec_plan pg = es_plan_matvec(s->m->kern, ly->gate_exps.type),
                   pu = es_plan_matvec(s->m->kern, ly->up_exps.type);
    int mixed = pg.act_type != pu.act_type;
    if (mixed) pg.act_type = ES_TYPE_F32;
    size_t in_stride = es_act_bytes(pg.act_type, s->m->hp.dim);
    gather_rows(s, il, T, pg.act_type, in_stride);
    /* the shared expert joins the first group's regions unless its gate and
     * up want different input formats */
    int fuse_shared = ly->has_shared && es_plan_matvec(s->m->kern, ly->gate_sh.type).act_type ==
                                            es_plan_matvec(s->m->kern, ly->up_sh.type).act_type;
    int shared_done = run_groups(s, il, n_active, T, in_stride, mixed, fuse_shared);
    reduce_slots(s, il, T);
    combine(s, ly, T, shared_done);
}
