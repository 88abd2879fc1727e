/* forward.c — the deepseek2 forward pass over a batch of T rows, top to
 * bottom, as docs/deepseek-semantics.md states it.  The rows are one
 * session's consecutive tokens (es_session_eval; T = 1 for decode) or the
 * tokens of several sessions, each at its own position (es_batch_eval:
 * es_forward_multi, one segment of rows per session, session.h's es_seg):
 *
 *   h = Embed[tok]
 *   per layer: h += MLA(RMSNorm(h));  h += FFN(RMSNorm(h))   (dense or MoE)
 *   logits = Head · RMSNorm(h)
 *
 * The cache holds only the normalised latent ĉ (R values) and the rotated
 * shared rope key k_pe (dr values) per token per layer, in the session's
 * cache type (kvcache.c writes them); attention.c turns
 * the queries and that cache into the heads' outputs (absorbed form for
 * decode, expanded and blocked for prefill).  The router is fp32 throughout.
 *
 * An MoE layer's FFN is moe.c's (routing, the routed experts by resident
 * group, the shared expert); the products of a weight over the batch, on
 * the pool, and the dense FFN are products.c's; forward.c keeps the layer
 * loop and attention's projections.  What they share (the scratch buffers,
 * the row-split jobs) is in session.h.
 *
 * Work is split across the session's thread pool: matrix products by rows
 * (each chunk computing every row of the batch, so weights are read once
 * per batch, whichever sessions the rows come from), attention per
 * attention.c (each segment against its session's cache), the routed
 * experts per moe.c.  With several sessions everything runs on the first
 * one's pool and scratch, and a row's values are those it gets alone: no
 * kernel's result for a row depends on the other rows of the call.
 * Every output value is computed by exactly one unit in a fixed order, so
 * results do not depend on the thread count.
 *
 * With MTP on (mtp.c), es_forward hands each batch's last hidden rows (x
 * before output_norm) to the MTP block's window, and es_fwd_block runs one
 * block (the MTP block, layers[n_layers]) over rows the caller prepared.
 *
 * Values that stop being finite (NaN or infinity: corrupt weights) are
 * caught once per batch, on the residual stream after the last layer and on
 * the logits; the batch then runs again with a check after every block, to
 * name where they first appear.  A file mapping that faulted (fault.h) or a
 * pager that failed stops the layer loop at the next layer.
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
#include "fault.h"
#include "kvcache.h"
#include "residency.h"
#include "session.h"
#include "moe.h"
#include "mtp.h"

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

/* xn[T][D] -> q[T][H*(dn+dr)] (via qa[T][q_lora]) and kva[T][R+dr] -> each
 * row's session cache at the row's position [R+dr] -> o[T][H*dv]
 * (attention.c, segment by segment) -> xb[T][D].  The projections run once
 * over the rows of every segment. */
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
        es_fwd_matmul_pair(s, &ly->wq_a, sc->qa, &ly->wkv_a, sc->kva, sc->xn, D, T);
        for (int t = 0; t < T; t++)
            s->m->kern->rmsnorm(sc->qa + (size_t)t * hp->q_lora, sc->qa + (size_t)t * hp->q_lora, ly->q_a_norm,
                               hp->q_lora, hp->eps);
        es_fwd_matmul(s, &ly->wq_b, 0, sc->qa, hp->q_lora, T, sc->q, qw);
    } else {
        es_fwd_matmul_pair(s, &ly->wq, sc->q, &ly->wkv_a, sc->kva, sc->xn, D, T);
    }
    es_attn_part parts[ES_BATCH];
    es_kv_view views[ES_BATCH];
    for (int g = 0; g < sc->n_seg; g++) {
        const es_seg *sg = &sc->seg[g];
        views[g] = es_kv_layer(sg->s, il); /* a view belongs to one session: cache types may differ */
        for (int t = sg->row0; t < sg->row0 + sg->n; t++) {
            const float *cs = sc->rope_cs + (size_t)t * dr;
            float *a = sc->kva + (size_t)t * kvw; /* normalised and rotated in place, then stored */
            s->m->kern->rmsnorm(a, a, ly->kv_a_norm, R, hp->eps);
            rope(a + R, dr, cs);
            es_kv_write(s->m->kern, &views[g], sc->row_pos[t], a, R, dr);
            for (int h = 0; h < H; h++) rope(sc->q + (size_t)t * qw + (size_t)h * (dn + dr) + dn, dr, cs);
        }
        parts[g] = (es_attn_part){&views[g], sc->q + (size_t)sg->row0 * qw, sc->o + (size_t)sg->row0 * H * hp->vdim,
                                  sg->pos, sg->n};
    }
    es_attention_parts(s, sc->attn, ly, parts, sc->n_seg);
    es_fwd_matmul(s, &ly->wo, 0, sc->o, (int64_t)H * hp->vdim, T, sc->xb, D);
}

/* ---- the batch ------------------------------------------------------------------ */

/* Whether every one of v[n] is finite: the exponent bits of each, in
 * integers (no float compares, so it vectorises and NaN needs no care). */
static int all_finite(const float *v, size_t n) {
    uint32_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], sizeof u);
        u &= 0x7f800000u;
        worst = u > worst ? u : worst;
    }
    return worst != 0x7f800000u;
}

/* Whether the layer loop should stop: the file under the mapping faulted,
 * or the pager could not load an expert (api.c reports which). */
static int must_stop(const es_model *m) { return es_fault_hit(m->fault, NULL) || (m->res && es_res_failed(m->res)); }

/* What forward_batch found: */
enum { BATCH_OK = 0, BATCH_STOPPED = -1, BATCH_NONFINITE = 1 };

/* Names the first non-finite block when checking (where: NULL otherwise). */
static int nonfinite_at(char *where, size_t wlen, const char *fmt, int il) {
    if (where) snprintf(where, wlen, fmt, il, il);
    return BATCH_NONFINITE;
}

/* The batch's segments, and per row its segment, position and
 * rope_cs[dr/2][2]. */
static void setup_rows(es_session *s, const es_seg *segs, int n_seg, int T) {
    const es_model *m = s->m;
    es_scratch *sc = s->scratch;
    sc->seg = segs;
    sc->n_seg = n_seg;
    for (int g = 0; g < n_seg; g++)
        for (int i = 0; i < segs[g].n; i++) {
            const int t = segs[g].row0 + i;
            sc->row_seg[t] = g;
            sc->row_pos[t] = segs[g].pos + i;
        }
    for (int t = 0; t < T; t++) rope_table(sc->rope_cs + (size_t)t * m->hp.rope, m->hp.rope, sc->row_pos[t], m->rope_freqs);
}

/* Block il over the T rows of x[T][D] (setup_rows done): x += MLA(RMSNorm(x));
 * x += FFN(RMSNorm(x)).  where: as forward_batch's. */
static int run_layer(es_session *s, int il, int T, char *where, size_t wlen) {
    const es_model *m = s->m;
    const es_hparams *hp = &m->hp;
    const es_kernels *K = m->kern;
    const es_layer *ly = &m->layers[il];
    es_scratch *sc = s->scratch;
    const int D = hp->dim;
    const size_t TD = (size_t)T * D;
    if (must_stop(m)) return BATCH_STOPPED;
    /* x += MLA(RMSNorm(x)): xn[T][D] -> xb[T][D], the caches get the rows' latents */
    for (int t = 0; t < T; t++) K->rmsnorm(sc->xn + (size_t)t * D, sc->x + (size_t)t * D, ly->attn_norm, D, hp->eps);
    attention(s, il, T);
    if (where && !all_finite(sc->xb, TD)) return nonfinite_at(where, wlen, "layer %d's attention (blk.%d.attn_*)", il);
    for (size_t i = 0; i < TD; i++) sc->x[i] += sc->xb[i];
    /* x += FFN(RMSNorm(x)): xn[T][D] -> xb[T][D], routed experts (moe.c) or dense */
    for (int t = 0; t < T; t++) K->rmsnorm(sc->xn + (size_t)t * D, sc->x + (size_t)t * D, ly->ffn_norm, D, hp->eps);
    if (ly->is_moe) {
        es_moe(s, il, T);
        if (s->reduce_failed >= 0) return BATCH_STOPPED; /* the other shares' sum is missing */
    } else es_fwd_mlp(s, &ly->ffn_gate, &ly->ffn_up, &ly->ffn_down, sc->xn, T, sc->xb);
    if (where && !all_finite(sc->xb, TD)) return nonfinite_at(where, wlen, "layer %d's FFN (blk.%d.ffn_*)", il);
    for (size_t i = 0; i < TD; i++) sc->x[i] += sc->xb[i];
    return BATCH_OK;
}

int es_fwd_block(es_session *s, int il, int pos, int T) {
    ES_ASSERT(T >= 1 && T <= s->scratch->B && pos + T <= s->n_ctx);
    const es_seg seg = {s, 0, T, pos, 0};
    setup_rows(s, &seg, 1, T);
    int r = run_layer(s, il, T, NULL, 0);
    s->scratch->seg = NULL; /* seg lives on this stack */
    if (r != BATCH_OK) return r;
    if (must_stop(s->m)) return BATCH_STOPPED;
    return all_finite(s->scratch->x, (size_t)T * s->m->hp.dim) ? BATCH_OK : BATCH_NONFINITE;
}

/* logits = Head · RMSNorm(x) for the rows that want them: every row of the
 * one segment (all), or of each segment whose lg[g] is set the last row
 * (every row when the segment says all).
 * One pass over the head for all of them; with several segments through
 * seg_logits, then copied out. */
static int output_head(es_session *s, float *const *lg, int all, char *where, size_t wlen) {
    const es_model *m = s->m;
    const es_hparams *hp = &m->hp;
    es_scratch *sc = s->scratch;
    const int D = hp->dim;
    const size_t V = (size_t)hp->n_vocab;
    if (all || sc->n_seg == 1) { /* one session: rows first..n-1 straight into its buffer */
        const es_seg *sg = &sc->seg[0];
        if (!lg[0]) return BATCH_OK;
        const int first = all || sg->all ? 0 : sg->n - 1, n = sg->n - first;
        for (int t = first; t < sg->n; t++)
            m->kern->rmsnorm(sc->xn + (size_t)t * D, sc->x + (size_t)t * D, m->out_norm, D, hp->eps);
        es_fwd_matmul(s, &m->out, 0, sc->xn + (size_t)first * D, D, n, lg[0], hp->n_vocab);
        if (must_stop(m)) return BATCH_STOPPED;
        if (!all_finite(lg[0], (size_t)n * V)) return nonfinite_at(where, wlen, "the output head (output_norm, output)", 0);
        return BATCH_OK;
    }
    int n = 0; /* xn[n][D]: the wanted rows, in segment order */
    for (int g = 0; g < sc->n_seg; g++)
        for (int t = sc->seg[g].all ? 0 : sc->seg[g].n - 1; lg[g] && t < sc->seg[g].n; t++)
            m->kern->rmsnorm(sc->xn + (size_t)n++ * D, sc->x + (size_t)(sc->seg[g].row0 + t) * D, m->out_norm, D,
                             hp->eps);
    if (!n) return BATCH_OK;
    es_fwd_matmul(s, &m->out, 0, sc->xn, D, n, sc->seg_logits, hp->n_vocab);
    if (must_stop(m)) return BATCH_STOPPED;
    if (!all_finite(sc->seg_logits, (size_t)n * V)) return nonfinite_at(where, wlen, "the output head (output_norm, output)", 0);
    for (int g = 0, i = 0; g < sc->n_seg; g++) {
        if (!lg[g]) continue;
        const int rows = sc->seg[g].all ? sc->seg[g].n : 1;
        memcpy(lg[g], sc->seg_logits + (size_t)i * V, sizeof(float) * V * (size_t)rows);
        i += rows;
    }
    return BATCH_OK;
}

/* The T rows of segs[n_seg] (T <= the scratch batch), tokens[T] in row
 * order, through every layer on s's pool and scratch.  lg[g]: NULL, or
 * where segment g's logits go ([n][V] if all, one segment only; else its
 * last row's [V]).  Advances every segment's session unless it stopped.
 * where: NULL for the plain run (values are checked at the end), else a
 * buffer for the first block whose output is not finite (checked after
 * every block). */
static int forward_batch(es_session *s, const es_seg *segs, int n_seg, const int32_t *tokens, int T,
                         float *const *lg, int all, char *where, size_t wlen) {
    const es_model *m = s->m;
    const es_hparams *hp = &m->hp;
    const es_kernels *K = m->kern;
    es_scratch *sc = s->scratch;
    const int D = hp->dim;
    setup_rows(s, segs, n_seg, T);
    /* x[T][D] = Embed[tokens] */
    for (int t = 0; t < T; t++)
        es_dequant_row(K, m->tok_embd.type, m->tok_embd.data + (size_t)tokens[t] * m->tok_embd.row_bytes,
                       sc->x + (size_t)t * D, D);
    const size_t TD = (size_t)T * D;
    if (where && !all_finite(sc->x, TD)) return nonfinite_at(where, wlen, "the token embedding (token_embd)", 0);
    for (int il = 0; il < hp->n_layers; il++) {
        int r = run_layer(s, il, T, where, wlen);
        if (r != BATCH_OK) return r;
    }
    if (must_stop(m)) return BATCH_STOPPED;
    if (!all_finite(sc->x, TD)) return nonfinite_at(where, wlen, "the residual stream (the layers' sum overflowed)", 0);
    /* logits[T or 1][V] = Head · RMSNorm(x) */
    int r = output_head(s, lg, all, where, wlen);
    if (r != BATCH_OK) return r;
    for (int g = 0; g < n_seg; g++) segs[g].s->pos += segs[g].n;
    return BATCH_OK;
}

/* forward_batch, and when values stopped being finite the same batch again
 * (it only rewrites its own cache rows), checking every block to name
 * where; the same values come out. */
static int run_batch(es_session *s, const es_seg *segs, int n_seg, const int32_t *tokens, int T, float *const *lg,
                     int all, char *where, size_t wlen) {
    int r = forward_batch(s, segs, n_seg, tokens, T, lg, all, NULL, 0);
    if (r != BATCH_NONFINITE) return r;
    snprintf(where, wlen, "an unknown place (they did not appear again)");
    r = forward_batch(s, segs, n_seg, tokens, T, lg, all, where, wlen);
    return r == BATCH_OK ? BATCH_NONFINITE : r;
}

int es_forward(es_session *s, const int32_t *tokens, int n, float *logits, int all_positions, char *where,
               size_t wlen) {
    const int B = s->scratch->B;
    ES_ASSERT(n >= 0 && s->pos >= 0 && s->pos + n <= s->n_ctx); /* the callers check (api.c) */
    const int pos0 = s->pos;
    if (s->mtp && n > 0) es_mtp_forget(s, pos0, tokens[0]);
    for (int i = 0; i < n; i += B) {
        int T = n - i < B ? n - i : B;
        float *lg = NULL;
        if (logits && all_positions) lg = logits + (size_t)i * (size_t)s->m->hp.n_vocab;
        else if (logits && i + T == n) lg = logits;
        const es_seg seg = {s, 0, T, s->pos, all_positions};
        int r = run_batch(s, &seg, 1, tokens + i, T, &lg, all_positions, where, wlen);
        if (r == BATCH_OK && s->mtp) {
            es_mtp_keep_hidden(s, s->scratch->x, seg.pos, T);
            r = es_mtp_after_batch(s, tokens, pos0, seg.pos, T, where, wlen);
        }
        if (r != BATCH_OK) return r;
    }
    return 0;
}

/* Several sessions: each one's tokens are cut into pieces of at most B
 * (es_forward's cut, so that every piece meets attention exactly as it
 * would alone), and each step runs, in the sessions' order, the next piece
 * of every session that still fits in the B rows of the step (the first
 * always does); a piece that does not waits for the next step. */
int es_forward_multi(es_session *const *ss, int n_sess, const int32_t *const *tokens, const int *n_tokens,
                     float *const *logits, const int *all, const int *pos0, char *where, size_t wlen) {
    es_session *s = ss[0];
    const int B = s->scratch->B;
    for (int i = 0; i < n_sess; i++)
        if (ss[i]->mtp && n_tokens[i] > 0) es_mtp_forget(ss[i], pos0[i], tokens[i][0]);
    for (;;) {
        es_seg segs[ES_BATCH];
        float *lg[ES_BATCH];
        int32_t rows[ES_BATCH];
        int seg_sess[ES_BATCH];
        int n_seg = 0, T = 0;
        for (int i = 0; i < n_sess && T < B; i++) {
            const int done = ss[i]->pos - pos0[i], left = n_tokens[i] - done;
            const int piece = left < B ? left : B;
            if (left <= 0 || T + piece > B) continue;
            const int every = all && all[i];
            seg_sess[n_seg] = i;
            segs[n_seg] = (es_seg){ss[i], T, piece, ss[i]->pos, every};
            lg[n_seg] = !logits || !logits[i] ? NULL
                        : every ? logits[i] + (size_t)done * (size_t)s->m->hp.n_vocab
                        : piece == left ? logits[i] : NULL;
            memcpy(rows + T, tokens[i] + done, sizeof(int32_t) * (size_t)piece);
            T += piece;
            n_seg++;
        }
        if (!n_seg) return 0;
        int want = 0; /* rows of logits */
        for (int g = 0; g < n_seg; g++) want += !lg[g] ? 0 : segs[g].all ? segs[g].n : 1;
        ES_ASSERT(n_seg == 1 || s->scratch->seg_logits_cap >= want); /* es_scratch_reserve */
        int r = run_batch(s, segs, n_seg, rows, T, lg, 0, where, wlen);
        /* the MTP windows take their hidden rows from this scratch before
         * any block runs over one of them (on its session's scratch) */
        for (int g = 0; g < n_seg && r == BATCH_OK; g++)
            if (segs[g].s->mtp)
                es_mtp_keep_hidden(segs[g].s, s->scratch->x + (size_t)segs[g].row0 * s->m->hp.dim, segs[g].pos,
                                   segs[g].n);
        for (int g = 0; g < n_seg && r == BATCH_OK; g++) {
            const int i = seg_sess[g];
            if (ss[i]->mtp) r = es_mtp_after_batch(ss[i], tokens[i], pos0[i], segs[g].pos, segs[g].n, where, wlen);
        }
        if (r != BATCH_OK) return r;
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
    sc->row_seg = es_arena_take(a, sizeof(int32_t) * B);
    sc->row_pos = es_arena_take(a, sizeof(int32_t) * B);
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
    free(sc->seg_logits);
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

int es_scratch_reserve(es_session *s, int n_ctx, int n_rows) {
    es_scratch *sc = s->scratch;
    if (es_attn_scratch_grow(&sc->attn, s->m, n_ctx, es_pool_threads(s->pool)) != 0) return -1;
    if (n_rows > sc->B) n_rows = sc->B;
    if (n_rows > sc->seg_logits_cap) {
        float *lg = malloc(sizeof(float) * (size_t)n_rows * (size_t)s->m->hp.n_vocab);
        if (!lg) return -1;
        free(sc->seg_logits);
        sc->seg_logits = lg;
        sc->seg_logits_cap = n_rows;
    }
    return 0;
}

int64_t es_forward_session_bytes(const es_model *m, int n_ctx, int n_threads) {
    if (n_threads <= 0) n_threads = es_default_threads();
    return (int64_t)(sizeof(es_scratch) + scratch_bytes(&m->hp)) +
           es_attn_scratch_bytes(m, n_ctx, ES_BATCH, n_threads);
}
