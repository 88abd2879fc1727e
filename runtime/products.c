/* products.c — the products of a weight over a batch of T token rows, on the
 * session's thread pool: one matrix (es_fwd_matmul), two matrices of the
 * same input in one parallel region (es_fwd_matmul_pair), the conversion of
 * the input rows into the kernel's activation format, and the dense FFN /
 * shared expert built from them (es_fwd_mlp).  Rows are cut into units as
 * session.h's row_chunk says, each unit computing every token, so
 * a weight is read once per batch and results do not depend on the threads.
 */
#include "session.h"

const void *es_fwd_prepare_rows(const es_kernels *K, uint32_t act_type, const float *X, int64_t x_stride,
                                int64_t n, int T, void *buf, size_t *stride) {
    if (act_type == ES_TYPE_F32) {
        *stride = (size_t)x_stride * sizeof(float);
        return X;
    }
    *stride = es_act_bytes(act_type, n);
    for (int t = 0; t < T; t++) es_prepare_act(K, act_type, X + t * x_stride, (uint8_t *)buf + (size_t)t * *stride, n);
    return buf;
}

/* Y[t][0..rows) = W X[t] for t < T.  X rows x_stride floats apart, Y rows
 * y_stride floats apart. */
void es_fwd_matmul(es_session *s, const es_weight *w, int64_t mat, const float *X, int64_t x_stride, int T, float *Y,
                   int64_t y_stride) {
    es_matvec_plan plan = es_plan_matvec(s->m->kern, w->type);
    size_t stride;
    const void *act = es_fwd_prepare_rows(s->m->kern, plan.act_type, X, x_stride, w->n, T, s->scratch->act, &stride);
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

void es_fwd_matmul_pair(es_session *s, const es_weight *w1, float *Y1, const es_weight *w2, float *Y2,
                        const float *X, int64_t x_stride, int T) {
    es_matvec_plan p1 = es_plan_matvec(s->m->kern, w1->type), p2 = es_plan_matvec(s->m->kern, w2->type);
    if (p1.act_type != p2.act_type || w1->n != w2->n) {
        es_fwd_matmul(s, w1, 0, X, x_stride, T, Y1, w1->rows);
        es_fwd_matmul(s, w2, 0, X, x_stride, T, Y2, w2->rows);
        return;
    }
    size_t stride;
    const void *act = es_fwd_prepare_rows(s->m->kern, p1.act_type, X, x_stride, w1->n, T, s->scratch->act, &stride);
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

/* ---- the dense feed-forward ----------------------------------------------------- */

/* out[T][D] = W2 (silu(W1 x) ⊙ W3 x) for the T rows of x */
void es_fwd_mlp(es_session *s, const es_weight *gate, const es_weight *up, const es_weight *down, const float *x,
                int T, float *out) {
    es_scratch *sc = s->scratch;
    const int64_t F = gate->rows, D = s->m->hp.dim;
    es_fwd_matmul_pair(s, gate, sc->ff_g, up, sc->ff_u, x, D, T);
    /* row by row: a vector kernel's tail then falls on the same elements of
     * a row whatever the batch holds */
    for (int t = 0; t < T; t++) s->m->kern->silu_mul(sc->ff_g + t * F, sc->ff_u + t * F, F);
    es_fwd_matmul(s, down, 0, sc->ff_g, F, T, out, D);
}
