/* forward.c — the deepseek2 forward pass for one token, top to bottom, as
 * shared/spec/deepseek-semantics.md states it:
 *
 *   h = Embed[tok]
 *   per layer: h += MLA(RMSNorm(h));  h += FFN(RMSNorm(h))   (dense or MoE)
 *   logits = Head · RMSNorm(h)
 *
 * MLA runs in the absorbed form: W_UK is folded into the query and W_UV is
 * applied after the attention-weighted sum of cached latents, so the cache
 * holds only the normalised latent ĉ (R floats) and the rotated shared rope
 * key k_pe (dr floats) per token per layer.  The router is fp32 throughout.
 *
 * Notation: D = dim, H = heads, dn/dr/dv = nope/rope/value head dims,
 * R = kv_lora_rank, E = experts, k = experts used, F = expert ffn dim.
 */
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "model.h"
#include "threadpool.h"

/* ---- matrix-vector products, split by rows across the thread pool -------- */

typedef struct matvec_job {
    es_matvec_fn fn;
    const uint8_t *base;
    size_t row_bytes;
    int64_t n;
    const void *act;
    float *y;
} matvec_job;

static void matvec_task(void *ctx, int64_t r0, int64_t r1) {
    const matvec_job *j = ctx;
    j->fn(j->base, j->row_bytes, j->n, j->act, j->y, r0, r1);
}

/* y[rows] = M x for `rows` rows starting at base.  The input is converted
 * once to the format the kernel multiplies with (e.g. Q8_0 for quantised
 * weights on SIMD paths), then rows are split across the pool in chunks
 * carrying at least ~32 KiB of weights, so dispatch stays cheap. */
static void matvec_rows(const es_session *s, uint32_t type, const uint8_t *base, size_t row_bytes, int64_t n,
                        int64_t rows, const float *x, float *y) {
    es_matvec_plan plan = es_plan_matvec(type);
    const void *act = x;
    if (plan.act_type != ES_TYPE_F32) {
        es_prepare_act(plan.act_type, x, s->act, n);
        act = s->act;
    }
    matvec_job j = {plan.fn, base, row_bytes, n, act, y};
    int64_t chunk = (int64_t)(32768 / (row_bytes ? row_bytes : 1)) + 1;
    int64_t even = rows / (4 * (int64_t)es_pool_threads(s->pool)) + 1;
    if (chunk < even) chunk = even;
    es_pool_run(s->pool, matvec_task, &j, rows, chunk);
}

/* y[rows] = W x, W one matrix of an es_weight (index mat for 3-D tensors) */
static void matvec(const es_session *s, const es_weight *w, int64_t mat, const float *x, float *y) {
    matvec_rows(s, w->type, w->data + (size_t)mat * w->mat_bytes, w->row_bytes, w->n, w->rows, x, y);
}

/* Interleaved (GPT-J) rotation of dr values at position pos. */
static void rope(float *v, int dr, int pos, const float *freqs) {
    for (int i = 0; i < dr / 2; i++) {
        float angle = (float)pos * freqs[i]; /* fp32 product, as the reference */
        float c = cosf(angle), s = sinf(angle);
        float a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = a * c - b * s;
        v[2 * i + 1] = a * s + b * c;
    }
}


/* ---- attention ----------------------------------------------------------- */

/* q̃[R] = (W_UK^h)^T q_nope[dn] */
static void absorb_query(const es_session *s, const es_layer *ly, int h, const float *q_nope, float *qt) {
    const es_hparams *hp = &s->m->hp;
    const int R = hp->kv_lora, dn = hp->nope, dv = hp->vdim;
    if (!ly->legacy_kv_b) {
        /* attn_k_b stores (W_UK^h)^T: R rows of dn */
        matvec(s, &ly->wk_b, h, q_nope, qt);
        return;
    }
    /* attn_kv_b rows h*(dn+dv) .. +dn are W_UK^h (dn rows of R): accumulate
     * the transpose product row by row. */
    const es_weight *w = &ly->wkv_b;
    float *row = s->ffh; /* scratch, >= R floats */
    memset(qt, 0, sizeof(float) * (size_t)R);
    for (int d = 0; d < dn; d++) {
        es_dequant_row(w->type, w->data + (size_t)(h * (dn + dv) + d) * w->row_bytes, row, R);
        es_kern()->axpy_f32(qt, q_nope[d], row, R);
    }
}

/* o[dv] = W_UV^h u[R] */
static void value_up(const es_session *s, const es_layer *ly, int h, const float *u, float *o) {
    const es_hparams *hp = &s->m->hp;
    if (!ly->legacy_kv_b) {
        matvec(s, &ly->wv_b, h, u, o);
        return;
    }
    const es_weight *w = &ly->wkv_b;
    const uint8_t *base = w->data + (size_t)(h * (hp->nope + hp->vdim) + hp->nope) * w->row_bytes;
    matvec_rows(s, w->type, base, w->row_bytes, w->n, hp->vdim, u, o);
}

/* s->xn holds the normed input; result (D) in s->xb. */
static void attention(es_session *s, int il) {
    const es_model *m = s->m;
    const es_hparams *hp = &m->hp;
    const es_layer *ly = &m->layers[il];
    const es_kernels *K = es_kern();
    const int H = hp->n_heads, R = hp->kv_lora, dn = hp->nope, dr = hp->rope, dv = hp->vdim;
    const int pos = s->pos, kvw = R + dr;

    /* q [H][dn+dr] */
    if (hp->q_lora) {
        matvec(s, &ly->wq_a, 0, s->xn, s->qa);
        K->rmsnorm(s->qa, s->qa, ly->q_a_norm, hp->q_lora, hp->eps);
        matvec(s, &ly->wq_b, 0, s->qa, s->q);
    } else {
        matvec(s, &ly->wq, 0, s->xn, s->q);
    }
    /* a = [c (R) ; k_pe (dr)] */
    matvec(s, &ly->wkv_a, 0, s->xn, s->kva);
    float *cache = s->kv + (size_t)il * s->n_ctx * kvw;
    float *slot = cache + (size_t)pos * kvw;
    K->rmsnorm(slot, s->kva, ly->kv_a_norm, R, hp->eps);
    memcpy(slot + R, s->kva + R, sizeof(float) * (size_t)dr);
    rope(slot + R, dr, pos, m->rope_freqs);

    for (int h = 0; h < H; h++) {
        float *qh = s->q + (size_t)h * (dn + dr);
        rope(qh + dn, dr, pos, m->rope_freqs);
        absorb_query(s, ly, h, qh, s->qt);
        /* scores over positions 0..pos */
        for (int t = 0; t <= pos; t++) {
            const float *kv = cache + (size_t)t * kvw;
            float sc = K->dot_f32(s->qt, kv, R) + K->dot_f32(qh + dn, kv + R, dr);
            s->att[t] = sc * hp->attn_scale;
        }
        K->softmax(s->att, pos + 1);
        /* u = Σ p_t ĉ_t */
        memset(s->u, 0, sizeof(float) * (size_t)R);
        for (int t = 0; t <= pos; t++) K->axpy_f32(s->u, s->att[t], cache + (size_t)t * kvw, R);
        value_up(s, ly, h, s->u, s->o + (size_t)h * dv);
    }
    matvec(s, &ly->wo, 0, s->o, s->xb);
}

/* ---- feed-forward --------------------------------------------------------- */

/* out[D] = W2 (silu(W1 x) ⊙ W3 x), one matrix `mat` of (gate, up, down) */
static void mlp(es_session *s, const es_weight *gate, const es_weight *up, const es_weight *down,
                int64_t mat, const float *x, float *out) {
    matvec(s, gate, mat, x, s->ffh);
    matvec(s, up, mat, x, s->ffh2);
    es_kern()->silu_mul(s->ffh, s->ffh2, gate->rows);
    matvec(s, down, mat, s->ffh, out);
}

/* Router: fills sel[k] (ascending expert ids) and w[k] (their weights). */
static void route(es_session *s, const es_layer *ly, const float *x, int32_t *sel, float *w) {
    const es_hparams *hp = &s->m->hp;
    const int E = hp->n_experts, k = hp->n_used, G = hp->n_groups;
    float *score = s->router;      /* s: [E] unbiased scores */
    float *choice = s->router + E; /* c: [E] selection scores */
    matvec(s, &ly->gate_inp, 0, x, score);
    if (hp->gating == ES_GATING_SIGMOID) {
        for (int e = 0; e < E; e++) score[e] = 1.0f / (1.0f + expf(-score[e]));
    } else {
        es_kern()->softmax(score, E);
    }
    for (int e = 0; e < E; e++) choice[e] = ly->exp_bias ? score[e] + ly->exp_bias[e] : score[e];

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
            gscore[g] = ly->exp_bias ? b1 + (per > 1 ? b2 : 0.0f) : b1;
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
    for (int n = 0; n < k; n++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            int taken = 0;
            for (int j = 0; j < n; j++) taken |= sel[j] == e;
            if (!taken && (best < 0 || choice[e] > choice[best])) best = e;
        }
        sel[n] = best;
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

/* s->xn holds the normed input; result (D) in s->xb. */
static void moe(es_session *s, int il) {
    const es_hparams *hp = &s->m->hp;
    const es_layer *ly = &s->m->layers[il];
    const int D = hp->dim, k = hp->n_used;
    int32_t sel[256];
    float w[256];
    route(s, ly, s->xn, sel, w);
    if (s->route_fn) s->route_fn(s->route_user, il, s->pos, sel, k);

    memset(s->moe_out, 0, sizeof(float) * (size_t)D);
    for (int n = 0; n < k; n++) {
        mlp(s, &ly->gate_exps, &ly->up_exps, &ly->down_exps, sel[n], s->xn, s->sh_out);
        es_kern()->axpy_f32(s->moe_out, w[n], s->sh_out, D);
    }
    if (ly->has_shared) {
        mlp(s, &ly->gate_sh, &ly->up_sh, &ly->down_sh, 0, s->xn, s->sh_out);
        for (int i = 0; i < D; i++) s->moe_out[i] += s->sh_out[i];
    }
    memcpy(s->xb, s->moe_out, sizeof(float) * (size_t)D);
}

/* ---- the whole token ------------------------------------------------------- */

void es_forward_token(es_session *s, int32_t token, float *logits) {
    const es_model *m = s->m;
    const es_hparams *hp = &m->hp;
    const es_kernels *K = es_kern();
    const int D = hp->dim;

    es_dequant_row(m->tok_embd.type, m->tok_embd.data + (size_t)token * m->tok_embd.row_bytes, s->x, D);
    for (int il = 0; il < hp->n_layers; il++) {
        const es_layer *ly = &m->layers[il];
        K->rmsnorm(s->xn, s->x, ly->attn_norm, D, hp->eps);
        attention(s, il);
        for (int i = 0; i < D; i++) s->x[i] += s->xb[i];
        K->rmsnorm(s->xn, s->x, ly->ffn_norm, D, hp->eps);
        if (ly->is_moe) moe(s, il);
        else mlp(s, &ly->ffn_gate, &ly->ffn_up, &ly->ffn_down, 0, s->xn, s->xb);
        for (int i = 0; i < D; i++) s->x[i] += s->xb[i];
    }
    if (logits) {
        K->rmsnorm(s->xn, s->x, m->out_norm, D, hp->eps);
        matvec(s, &m->out, 0, s->xn, logits);
    }
    s->pos++;
}
