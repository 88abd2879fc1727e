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
 * An MoE layer's FFN is moe.c's (routing, the routed experts by resident
 * group, the shared expert); forward.c keeps the layer loop, attention's
 * projections and the dense FFN.  What both share (the scratch buffers, the
 * row-split products) is in forward_internal.h.
 *
 * Work is split across the session's thread pool: matrix products by rows
 * (each chunk computing every token of the batch, so weights are read once
 * per batch), attention per attention.c, the routed experts per moe.c.
 * Every output value is computed by exactly one unit in a fixed order, so
 * results do not depend on the thread count.
 *
 * Notation: T = tokens in the batch, D = dim, H = heads, dn/dr/dv = nope/
 * rope/value head dims, R = kv_lora_rank, E = experts, k = experts used,
 * F = expert ffn dim, S = shared ffn dim (n_shared · F), V = vocabulary.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "es_assert.h"
#include "forward_internal.h"
#include "moe.h"

/* ---- matrix products on the pool (forward_internal.h has the jobs) ---------- */

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
static void matmul(es_session *s, const es_weight *w, int64_t mat, const float *X, int64_t x_stride, int T, float *Y,
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

static void matmul_pair(es_session *s, const es_weight *w1, float *Y1, const es_weight *w2, float *Y2, const float *X,
                        int64_t x_stride, int T) {
    es_matvec_plan p1 = es_plan_matvec(s->m->kern, w1->type), p2 = es_plan_matvec(s->m->kern, w2->type);
    if (p1.act_type != p2.act_type || w1->n != w2->n) {
        matmul(s, w1, 0, X, x_stride, T, Y1, w1->rows);
        matmul(s, w2, 0, X, x_stride, T, Y2, w2->rows);
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

/* xn[T][D] -> q[T][H*(dn+dr)] (via qa[T][q_lora]) and kva[T][R+dr] -> the
 * cache's rows pos..pos+T-1 [R+dr] -> o[T][H*dv] (attention.c) -> xb[T][D]. */
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
void es_fwd_mlp(es_session *s, const es_weight *gate, const es_weight *up, const es_weight *down, const float *x,
                int T, float *out) {
    es_scratch *sc = s->scratch;
    const int64_t F = gate->rows, D = s->m->hp.dim;
    matmul_pair(s, gate, sc->ff_g, up, sc->ff_u, x, D, T);
    s->m->kern->silu_mul(sc->ff_g, sc->ff_u, F * T);
    matmul(s, down, 0, sc->ff_g, F, T, out, D);
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

    /* x[T][D] = Embed[tokens]; rope_cs[T][dr/2][2] for positions pos.. */
    for (int t = 0; t < T; t++) {
        es_dequant_row(K, m->tok_embd.type, m->tok_embd.data + (size_t)tokens[t] * m->tok_embd.row_bytes,
                       sc->x + (size_t)t * D, D);
        rope_table(sc->rope_cs + (size_t)t * hp->rope, hp->rope, s->pos + t, m->rope_freqs);
    }
    for (int il = 0; il < hp->n_layers; il++) {
        const es_layer *ly = &m->layers[il];
        /* x += MLA(RMSNorm(x)): xn[T][D] -> xb[T][D], the cache gets the batch's latents */
        for (int t = 0; t < T; t++) K->rmsnorm(sc->xn + (size_t)t * D, sc->x + (size_t)t * D, ly->attn_norm, D, hp->eps);
        attention(s, il, T);
        for (size_t i = 0; i < (size_t)T * D; i++) sc->x[i] += sc->xb[i];
        /* x += FFN(RMSNorm(x)): xn[T][D] -> xb[T][D], routed experts (moe.c) or dense */
        for (int t = 0; t < T; t++) K->rmsnorm(sc->xn + (size_t)t * D, sc->x + (size_t)t * D, ly->ffn_norm, D, hp->eps);
        if (ly->is_moe) es_moe(s, il, T);
        else es_fwd_mlp(s, &ly->ffn_gate, &ly->ffn_up, &ly->ffn_down, sc->xn, T, sc->xb);
        for (size_t i = 0; i < (size_t)T * D; i++) sc->x[i] += sc->xb[i];
    }
    /* logits[T or 1][V] = Head · RMSNorm(x) */
    if (logits) {
        int first = all ? 0 : T - 1;
        for (int t = first; t < T; t++) K->rmsnorm(sc->xn + (size_t)t * D, sc->x + (size_t)t * D, m->out_norm, D, hp->eps);
        matmul(s, &m->out, 0, sc->xn + (size_t)first * D, D, T - first, logits, hp->n_vocab);
    }
    s->pos += T;
}

void es_forward(es_session *s, const int32_t *tokens, int n, float *logits, int all_positions) {
    const int B = s->scratch->B;
    ES_ASSERT(n >= 0 && s->pos >= 0 && s->pos + n <= s->n_ctx); /* the callers check (api.c) */
    for (int i = 0; i < n; i += B) {
        int T = n - i < B ? n - i : B;
        float *lg = NULL;
        if (logits && all_positions) lg = logits + (size_t)i * (size_t)s->m->hp.n_vocab;
        else if (logits && i + T == n) lg = logits;
        forward_batch(s, tokens + i, T, lg, all_positions);
    }
}

/* ---- scratch ---------------------------------------------------------------------- */

static size_t maxz(size_t a, size_t b) { return a > b ? a : b; }

/* Largest byte size of n activations in any format a kernel may ask for
 * (fp32 is the widest per value; the slack covers block rounding). */
static size_t act_row_bytes(int64_t n) { return sizeof(float) * (size_t)n + 512; }

/* Names every buffer of the scratch once, with its size (B = ES_BATCH
 * rows): over an arena without a base it only counts the bytes, over the
 * allocation it sets the pointers. */
static void scratch_layout(es_scratch *sc, const es_hparams *hp, es_arena *a) {
    const size_t B = ES_BATCH, D = (size_t)hp->dim, H = (size_t)hp->n_heads, R = (size_t)hp->kv_lora;
    const size_t k = (size_t)(hp->n_used ? hp->n_used : 1), E = (size_t)(hp->n_experts ? hp->n_experts : 1);
    const size_t F = (size_t)hp->moe_ffn_dim, S = (size_t)hp->n_shared * F;
    const size_t ffw = maxz((size_t)hp->ffn_dim, S);
    const size_t widest = maxz(maxz(D, (size_t)hp->q_lora), maxz(ffw, H * (size_t)hp->vdim));
    sc->x = es_arena_take(a, sizeof(float) * B * D);
    sc->xn = es_arena_take(a, sizeof(float) * B * D);
    sc->xb = es_arena_take(a, sizeof(float) * B * D);
    sc->q = es_arena_take(a, sizeof(float) * B * H * (size_t)(hp->nope + hp->rope));
    sc->qa = es_arena_take(a, sizeof(float) * B * maxz((size_t)hp->q_lora, 1));
    sc->kva = es_arena_take(a, sizeof(float) * B * (R + (size_t)hp->rope));
    sc->o = es_arena_take(a, sizeof(float) * B * H * (size_t)hp->vdim);
    sc->ff_g = es_arena_take(a, sizeof(float) * B * ffw);
    sc->ff_u = es_arena_take(a, sizeof(float) * B * ffw);
    sc->router = es_arena_take(a, sizeof(float) * B * E);
    sc->sel = es_arena_take(a, sizeof(int32_t) * B * k);
    sc->selw = es_arena_take(a, sizeof(float) * B * k);
    sc->ex_start = es_arena_take(a, sizeof(int32_t) * (E + 1));
    sc->ex_fill = es_arena_take(a, sizeof(int32_t) * E);
    sc->tok_row = es_arena_take(a, sizeof(int32_t) * B * k);
    sc->active = es_arena_take(a, sizeof(int32_t) * E);
    sc->ex_g = es_arena_take(a, sizeof(float) * maxz(B * k * F, E)); /* also E floats while routing */
    sc->ex_h = es_arena_take(a, sizeof(float) * maxz(B * k * F, 1));
    sc->ex_out = es_arena_take(a, sizeof(float) * B * k * D);
    sc->sh_out = es_arena_take(a, sizeof(float) * B * D);
    sc->rope_cs = es_arena_take(a, sizeof(float) * B * (size_t)hp->rope);
    sc->act = es_arena_take(a, B * act_row_bytes((int64_t)widest));
    sc->act_gather = es_arena_take(a, B * k * act_row_bytes((int64_t)maxz(D, F)));
    sc->act_down = es_arena_take(a, B * k * act_row_bytes((int64_t)maxz(F, 1)));
    sc->grp = es_arena_take(a, sizeof(int32_t) * E);
    sc->grp_ptr = es_arena_take(a, sizeof *sc->grp_ptr * E);
    sc->pred_xn = es_arena_take(a, sizeof(float) * maxz(B * D, E)); /* also E floats while predicting */
    sc->pred_router = es_arena_take(a, sizeof(float) * B * E);
    sc->pred_sel = es_arena_take(a, sizeof(int32_t) * B * k);
    sc->pred_cnt = es_arena_take(a, sizeof(int32_t) * E);
    sc->pred_ids = es_arena_take(a, sizeof(int32_t) * E);
    sc->pred_w = es_arena_take(a, sizeof(float) * B * k);
}

/* Bytes of the arena scratch_layout describes. */
static size_t scratch_bytes(const es_hparams *hp) {
    es_scratch sizing = {0};
    es_arena a = {NULL, 0};
    scratch_layout(&sizing, hp, &a);
    return a.used;
}

void es_scratch_free(es_scratch *sc) {
    if (!sc) return;
    free(sc->arena);
    es_attn_scratch_free(sc->attn);
    free(sc);
}

es_scratch *es_scratch_new(const es_model *m, int n_ctx, int n_threads) {
    es_scratch *sc = calloc(1, sizeof *sc);
    if (!sc) return NULL;
    const size_t bytes = scratch_bytes(&m->hp);
    es_arena a = {es_arena_alloc(bytes), 0};
    sc->B = ES_BATCH;
    sc->arena = a.base;
    sc->attn = es_attn_scratch_new(m, n_ctx, ES_BATCH, n_threads);
    if (!sc->arena || !sc->attn) {
        es_scratch_free(sc);
        return NULL;
    }
    scratch_layout(sc, &m->hp, &a);
    ES_ASSERT(a.used == bytes);
    return sc;
}

int64_t es_forward_session_bytes(const es_model *m, int n_ctx, int n_threads) {
    if (n_threads <= 0) n_threads = es_default_threads();
    return (int64_t)(sizeof(es_scratch) + scratch_bytes(&m->hp)) +
           es_attn_scratch_bytes(m, n_ctx, ES_BATCH, n_threads);
}
