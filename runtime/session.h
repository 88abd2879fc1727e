/* session.h — what forward.c (the layer loop, attention's projections),
 * products.c (a weight's products over the batch, the dense FFN) and moe.c
 * (the routed experts) share: the session's scratch buffers and the
 * row-split matrix jobs on the session's pool.  Internal to the runtime.
 *
 * Notation as in forward.c: B = the batch capacity (ES_BATCH), T <= B tokens
 * in a batch, D = dim, H = heads, dn/dr/dv = nope/rope/value head dims, R =
 * kv_lora_rank, E = experts, k = experts used, F = expert ffn dim, S =
 * shared ffn dim (n_shared · F). */
#ifndef ES_SESSION_H
#define ES_SESSION_H

#include "attention.h"
#include "kernels.h"
#include "model.h"
#include "placement.h"
#include "threadpool.h"

/* The rows of a batch come from one or more sessions: rows [row0, row0+n)
 * are session s's tokens at positions pos, pos+1, .. (es_batch_eval puts
 * several sessions' rows in one pass; es_session_eval one).  Everything
 * per row runs once over all rows; attention runs per segment, against its
 * session's cache. */
typedef struct es_seg {
    es_session *s;
    int row0, n, pos;
    int all; /* the logits of every row, not only the last (es_batch_eval_ext) */
} es_seg;

/* Every buffer lives in one arena (forward.c: scratch_layout names each
 * once); attention.c keeps its own. */
struct es_scratch {
    int B;                   /* batch capacity */
    void *arena;             /* the one allocation behind the buffers below */
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
    /* the batch being run (forward.c sets them): its segments, and per row
     * its segment's index and its position */
    const es_seg *seg;
    int n_seg;
    int32_t *row_seg, *row_pos; /* [B] */
    float *seg_logits;       /* [cap][V] last-row logits of several sessions, grown on demand */
    int seg_logits_cap;
};

/* ---- matrix products, split by rows across the pool ------------------------ */

/* Y[t][r0..r1) = W X[t] for the T rows of a batch: one unit of work. */
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

static inline void matmul_rows(const matmul_job *j, int64_t r0, int64_t r1) {
    if (j->mm && j->T > 1) { /* a single token goes through the matvec kernel */
        j->mm(j->base, j->row_bytes, j->n, j->act, j->act_stride, j->T, j->y, j->y_stride, r0, r1);
        return;
    }
    for (int t = 0; t < j->T; t++)
        j->mv(j->base, j->row_bytes, j->n, (const uint8_t *)j->act + (size_t)t * j->act_stride,
              j->y + t * j->y_stride, r0, r1);
}

/* es_task_fn over a matmul_job's rows [r0, r1). */
static inline void matmul_task(void *ctx, int64_t r0, int64_t r1, int tid) {
    const matmul_job *j = ctx;
    if (j->replicas) { /* the same bytes, from this node's copy */
        matmul_job local = *j;
        local.base = es_numa_local(j->replicas, j->base, es_pool_thread_node(j->pool, tid));
        matmul_rows(&local, r0, r1);
        return;
    }
    matmul_rows(j, r0, r1);
}

/* The job for matrix `mat` of w with table K's kernels (act rows
 * act_stride bytes apart, Y rows y_stride floats apart). */
static inline matmul_job make_job(const es_kernels *K, const es_weight *w, int64_t mat, const void *act,
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
static inline int64_t round16(int64_t v) { return (v + 15) / 16 * 16; }
static inline int64_t row_chunk(size_t row_bytes, int64_t rows, int T) {
    int64_t chunk = round16((int64_t)(65536 / ((row_bytes ? row_bytes : 1) * (size_t)T)) + 1);
    int64_t even = round16(rows / 16 + 1);
    return chunk > even ? chunk : even;
}

/* make_job for a product the pool runs: under --numa replicate on several
 * nodes (when memory allowed the copies) each thread reads its node's copy
 * of the weights. */
static inline matmul_job pool_job(const es_session *s, const es_weight *w, int64_t mat, const void *act,
                                  size_t act_stride, int T, float *Y, int64_t y_stride) {
    matmul_job j = make_job(s->m->kern, w, mat, act, act_stride, T, Y, y_stride);
    const es_numa_plan *p = s->m->numa;
    if (es_pool_nodes(s->pool) > 1 && es_numa_plan_stats(p) && es_numa_plan_stats(p)->n_replicas > 0)
        j.replicas = p;
    j.pool = s->pool;
    return j;
}

/* Converts T rows of X (x_stride floats apart, n used) to act_type in buf;
 * F32 needs no copy.  Returns the rows and sets their stride in bytes. */
const void *es_fwd_prepare_rows(const es_kernels *K, uint32_t act_type, const float *X, int64_t x_stride,
                                int64_t n, int T, void *buf, size_t *stride);

/* Y[t][0..rows) = W X[t] for t < T (matrix mat of w); X rows x_stride
 * floats apart, Y rows y_stride floats apart. */
void es_fwd_matmul(es_session *s, const es_weight *w, int64_t mat, const float *X, int64_t x_stride, int T, float *Y,
                   int64_t y_stride);
/* Y1 = W1 X and Y2 = W2 X in one parallel region (Y rows as long as the
 * matrices' rows); two es_fwd_matmul calls when their inputs differ. */
void es_fwd_matmul_pair(es_session *s, const es_weight *w1, float *Y1, const es_weight *w2, float *Y2,
                        const float *X, int64_t x_stride, int T);

/* out[T][D] = W2 (silu(W1 x) ⊙ W3 x) for the T rows x[T][D], through
 * ff_g and ff_u: the dense FFN and the shared expert. */
void es_fwd_mlp(es_session *s, const es_weight *gate, const es_weight *up, const es_weight *down, const float *x,
                int T, float *out);

#endif
