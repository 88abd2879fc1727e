/* reference.c — owns: the float64 reference model (reference.h): every
 * tensor read by name straight from the GGUF (gguf.h), dequantised with
 * es_dequant_row into doubles; the NAIVE (non-absorbed) MLA, where every
 * head gets explicit keys k^h = [W_UK^h ĉ ; k_pe] and values v^h = W_UV^h ĉ;
 * plain MoE routing; YaRN RoPE; all in float64.  Written from
 * docs/deepseek-semantics.md and the DeepSeek-V3 report (§2.2, MTP), not
 * from the runtime, so that it is a real cross-check. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgeseek.h"
#include "gguf.h"
#include "kernels.h"
#include "quant.h"
#include "reference.h"

/* ---- reference model ------------------------------------------------------ */

static void rfail(rmodel *m, const char *fmt, ...) {
    if (m->failed) return;
    m->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->err, sizeof m->err, fmt, ap);
    va_end(ap);
}

/* deepseek2.<key> as an integer; def < 0 marks it required */
static int rkey_int(rmodel *m, const char *key, int64_t def) {
    char full[160];
    snprintf(full, sizeof full, "deepseek2.%s", key);
    int64_t v;
    int r = es_gguf_get_int(m->g, full, &v);
    if (r == 1) return (int)v;
    if (r < 0 || def < 0) rfail(m, "key %s %s", full, r < 0 ? "is not an integer" : "is missing");
    return (int)def;
}

static double rkey_float(rmodel *m, const char *key, double def) {
    char full[160];
    snprintf(full, sizeof full, "deepseek2.%s", key);
    double v;
    int r = es_gguf_get_float(m->g, full, &v);
    if (r == 1) return v;
    if (r < 0) rfail(m, "key %s is not a number", full);
    return def;
}

/* Tensor `name` of shape [n0, n1, n2] as doubles, row-major (ne[0] fastest). */
static double *rtensor(rmodel *m, const char *name, int64_t n0, int64_t n1, int64_t n2, int optional) {
    if (m->failed) return NULL;
    const es_gguf_tensor *t = es_gguf_find_tensor(m->g, name);
    if (!t) {
        if (!optional) rfail(m, "missing tensor %s", name);
        return NULL;
    }
    if (t->ne[0] != n0 || t->ne[1] != n1 || t->ne[2] != n2 || t->ne[3] != 1) {
        rfail(m, "tensor %s is [%lld %lld %lld %lld], want [%lld %lld %lld]", name, (long long)t->ne[0],
              (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3], (long long)n0, (long long)n1,
              (long long)n2);
        return NULL;
    }
    size_t rb = es_row_bytes(t->type, n0);
    int64_t rows = n1 * n2;
    double *out = malloc(sizeof(double) * (size_t)(n0 * rows));
    float *tmp = malloc(sizeof(float) * (size_t)n0);
    if (!out || !tmp || !rb) {
        rfail(m, "tensor %s: no memory or bad row size", name);
        free(out);
        free(tmp);
        return NULL;
    }
    for (int64_t r = 0; r < rows; r++) {
        if (es_dequant_row(es_kernels_for("generic", NULL, 0), t->type, t->data + (size_t)r * rb, tmp, n0) != 0) {
            rfail(m, "tensor %s: no dequantiser for type %u", name, t->type);
            break;
        }
        for (int64_t i = 0; i < n0; i++) out[r * n0 + i] = tmp[i];
    }
    free(tmp);
    if (m->failed) { free(out); return NULL; }
    return out;
}

/* Reads hyperparameters the way llama.cpp's deepseek2 loader names them. */
static void rload_hparams(rmodel *m) {
    rhp *hp = &m->hp;
    hp->D = rkey_int(m, "embedding_length", -1);
    hp->n_layers = rkey_int(m, "block_count", -1) - rkey_int(m, "nextn_predict_layers", 0);
    hp->n_dense = rkey_int(m, "leading_dense_block_count", 0);
    hp->ffn = rkey_int(m, "feed_forward_length", -1);
    hp->effn = rkey_int(m, "expert_feed_forward_length", 0);
    hp->H = rkey_int(m, "attention.head_count", -1);
    hp->q_lora = rkey_int(m, "attention.q_lora_rank", 0);
    hp->R = rkey_int(m, "attention.kv_lora_rank", -1);
    hp->dr = rkey_int(m, "rope.dimension_count", -1);
    /* MLA files from current converters carry the per-head sizes under
     * *_mla (key_length there is R + dr); older ones directly. */
    int kl = rkey_int(m, "attention.key_length_mla", 0);
    int vl = rkey_int(m, "attention.value_length_mla", 0);
    if (!kl) kl = rkey_int(m, "attention.key_length", -1);
    if (!vl) vl = rkey_int(m, "attention.value_length", -1);
    hp->dn = kl - hp->dr;
    hp->dv = vl;
    hp->E = rkey_int(m, "expert_count", 0);
    hp->k = rkey_int(m, "expert_used_count", 0);
    hp->n_shared = rkey_int(m, "expert_shared_count", 0);
    /* llama.cpp: 1 softmax, 2 sigmoid; 0 (unset) means softmax for deepseek2 */
    hp->sigmoid = rkey_int(m, "expert_gating_func", 1) == 2;
    hp->G = rkey_int(m, "expert_group_count", 1);
    hp->Gk = rkey_int(m, "expert_group_used_count", 0);
    if (hp->G < 1) hp->G = 1;
    if (hp->Gk < 1) hp->Gk = hp->G;
    hp->route_scale = rkey_float(m, "expert_weights_scale", 1.0);
    hp->eps = rkey_float(m, "attention.layer_norm_rms_epsilon", 1e-6);
    hp->theta = rkey_float(m, "rope.freq_base", 10000.0);
    int norm;
    int r = es_gguf_get_bool(m->g, "deepseek2.expert_weights_norm", &norm);
    /* absent: the reference renormalises exactly when scoring by sigmoid */
    hp->norm_topk = r == 1 ? norm : hp->sigmoid;

    /* YaRN: a GGUF carries rope.scaling.* exactly when the HF config had
     * rope_scaling, and HF/llama.cpp then apply it at every position. */
    es_gguf_str st = {0};
    hp->yarn = 0;
    double mm = 1.0;
    if (es_gguf_get_str(m->g, "deepseek2.rope.scaling.type", &st) == 1 && es_gguf_str_eq(st, "yarn")) {
        hp->factor = rkey_float(m, "rope.scaling.factor", 1.0);
        hp->orig_ctx = rkey_int(m, "rope.scaling.original_context_length", -1);
        hp->beta_fast = rkey_float(m, "rope.scaling.yarn_beta_fast", 32.0);
        hp->beta_slow = rkey_float(m, "rope.scaling.yarn_beta_slow", 1.0);
        hp->log_mul = rkey_float(m, "rope.scaling.yarn_log_multiplier", 0.0);
        hp->yarn = hp->factor > 1.0;
        if (hp->yarn) mm = 1.0 + hp->log_mul * log(hp->factor); /* m = 1 + 0.1 mscale ln(factor) */
    }
    /* scale = (dn + dr)^-1/2 · m², never (R + dr) or dv */
    hp->attn_scale = mm * mm / sqrt((double)(hp->dn + hp->dr));
    if (!m->failed && (hp->D < 1 || hp->n_layers < 1 || hp->H < 1 || hp->R < 1 || hp->dn < 1 || hp->dr < 2 ||
                       hp->dv < 1 || hp->n_dense > hp->n_layers || (hp->E && hp->E % hp->G)))
        rfail(m, "implausible hyperparameters");
}

/* f_i = θ^(-2i/dr), blended by the YaRN ramp toward f_i / factor. */
static void rbuild_freq(rmodel *m) {
    const rhp *hp = &m->hp;
    int half = hp->dr / 2;
    double low = 0, high = 1;
    if (hp->yarn) {
        double dfast = hp->dr * log(hp->orig_ctx / (2 * M_PI * hp->beta_fast)) / (2 * log(hp->theta));
        double dslow = hp->dr * log(hp->orig_ctx / (2 * M_PI * hp->beta_slow)) / (2 * log(hp->theta));
        low = floor(dfast);
        high = ceil(dslow);
        if (low < 0) low = 0;
        if (high > hp->dr - 1) high = hp->dr - 1; /* the reference's clamp: dr-1, not dr/2-1 */
        if (low == high) high += 0.001;
    }
    for (int i = 0; i < half; i++) {
        double f = pow(hp->theta, -2.0 * i / hp->dr);
        if (hp->yarn) {
            double ramp = (i - low) / (high - low);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            f = f * (1 - ramp) + f / hp->factor * ramp;
        }
        m->freq[i] = f;
    }
}

/* W_UK^h [dn][R] and W_UV^h [dj][R] from either layout:
 *   split:  attn_k_b ne [dn, R, H] holds (W_UK^h)ᵀ; attn_v_b ne [R, dv, H] holds W_UV^h
 *   legacy: attn_kv_b ne [R, H(dn+dv)], per head dn W_UK rows then dv W_UV rows */
static void rload_kv_b(rmodel *m, rlayer *L, int il) {
    const rhp *hp = &m->hp;
    const int H = hp->H, R = hp->R, dn = hp->dn, dv = hp->dv;
    char nm[128];
    snprintf(nm, sizeof nm, "blk.%d.attn_k_b.weight", il);
    double *kb = rtensor(m, nm, dn, R, H, 1);
    snprintf(nm, sizeof nm, "blk.%d.attn_v_b.weight", il);
    double *vb = rtensor(m, nm, R, dv, H, 1);
    L->wuk = malloc(sizeof(double) * (size_t)H * dn * R);
    L->wuv = malloc(sizeof(double) * (size_t)H * dv * R);
    if (!L->wuk || !L->wuv) rfail(m, "out of memory");
    if (kb && vb && !m->failed) {
        for (int h = 0; h < H; h++)
            for (int r = 0; r < R; r++) {
                for (int d = 0; d < dn; d++) L->wuk[((size_t)h * dn + d) * R + r] = kb[((size_t)h * R + r) * dn + d];
                for (int j = 0; j < dv; j++) L->wuv[((size_t)h * dv + j) * R + r] = vb[((size_t)h * dv + j) * R + r];
            }
    } else if (!kb && !vb) {
        snprintf(nm, sizeof nm, "blk.%d.attn_kv_b.weight", il);
        double *kvb = rtensor(m, nm, R, (int64_t)H * (dn + dv), 1, 0);
        if (kvb && !m->failed)
            for (int h = 0; h < H; h++) {
                for (int d = 0; d < dn; d++)
                    memcpy(L->wuk + ((size_t)h * dn + d) * R, kvb + ((size_t)h * (dn + dv) + d) * R, sizeof(double) * R);
                for (int j = 0; j < dv; j++)
                    memcpy(L->wuv + ((size_t)h * dv + j) * R, kvb + ((size_t)h * (dn + dv) + dn + j) * R,
                           sizeof(double) * R);
            }
        free(kvb);
    } else {
        rfail(m, "layer %d has only one of attn_k_b / attn_v_b", il);
    }
    free(kb);
    free(vb);
}

static void rload_layer(rmodel *m, int il) {
    const rhp *hp = &m->hp;
    rlayer *L = &m->ly[il];
    const int D = hp->D, H = hp->H, qk = hp->dn + hp->dr;
    char nm[128];
#define T(s, ...) (snprintf(nm, sizeof nm, "blk.%d." s, il), rtensor(m, nm, __VA_ARGS__))
    L->attn_norm = T("attn_norm.weight", D, 1, 1, 0);
    L->ffn_norm = T("ffn_norm.weight", D, 1, 1, 0);
    if (hp->q_lora > 0) {
        L->wq_a = T("attn_q_a.weight", D, hp->q_lora, 1, 0);
        L->q_norm = T("attn_q_a_norm.weight", hp->q_lora, 1, 1, 0);
        L->wq_b = T("attn_q_b.weight", hp->q_lora, (int64_t)H * qk, 1, 0);
    } else {
        L->wq = T("attn_q.weight", D, (int64_t)H * qk, 1, 0);
    }
    L->wkv_a = T("attn_kv_a_mqa.weight", D, hp->R + hp->dr, 1, 0);
    L->kv_norm = T("attn_kv_a_norm.weight", hp->R, 1, 1, 0);
    rload_kv_b(m, L, il);
    L->wo = T("attn_output.weight", (int64_t)H * hp->dv, D, 1, 0);
    L->moe = il >= hp->n_dense;
    if (!L->moe) {
        L->w1 = T("ffn_gate.weight", D, hp->ffn, 1, 0);
        L->w2 = T("ffn_down.weight", hp->ffn, D, 1, 0);
        L->w3 = T("ffn_up.weight", D, hp->ffn, 1, 0);
    } else {
        const int E = hp->E, F = hp->effn;
        L->router = T("ffn_gate_inp.weight", D, E, 1, 0);
        L->bias = T("exp_probs_b.bias", E, 1, 1, 1);
        L->e1 = T("ffn_gate_exps.weight", D, F, E, 0);
        L->e2 = T("ffn_down_exps.weight", F, D, E, 0);
        L->e3 = T("ffn_up_exps.weight", D, F, E, 0);
        if (hp->n_shared > 0) {
            int S = hp->n_shared * F;
            L->s1 = T("ffn_gate_shexp.weight", D, S, 1, 0);
            L->s2 = T("ffn_down_shexp.weight", S, D, 1, 0);
            L->s3 = T("ffn_up_shexp.weight", D, S, 1, 0);
        }
    }
#undef T
}

void rmodel_free(rmodel *m) {
    if (m->ly)
        for (int il = 0; il < m->hp.n_layers + m->has_mtp; il++) {
            rlayer *L = &m->ly[il];
            double *p[] = {L->attn_norm, L->ffn_norm, L->wq, L->wq_a, L->q_norm, L->wq_b, L->wkv_a,
                           L->kv_norm, L->wuk, L->wuv, L->wo, L->w1, L->w2, L->w3, L->router, L->bias,
                           L->e1, L->e2, L->e3, L->s1, L->s2, L->s3};
            for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
        }
    free(m->ly);
    double *mtp[] = {m->eh, m->enorm, m->hnorm, m->mtp_norm, m->mtp_embd, m->mtp_head};
    for (size_t i = 0; i < sizeof mtp / sizeof mtp[0]; i++) free(mtp[i]);
    free(m->embd);
    free(m->out_norm);
    free(m->head);
    free(m->freq);
    es_gguf_close(m->g);
    memset(m, 0, sizeof *m);
}

int rmodel_load(rmodel *m, const char *path) {
    memset(m, 0, sizeof *m);
    if (es_gguf_open_file(path, &m->g, m->err, sizeof m->err) != 0) {
        m->failed = 1;
        return -1;
    }
    es_gguf_str arch;
    if (es_gguf_get_str(m->g, "general.architecture", &arch) != 1 || !es_gguf_str_eq(arch, "deepseek2"))
        rfail(m, "not a deepseek2 file");
    rload_hparams(m);
    const es_gguf_tensor *te = m->failed ? NULL : es_gguf_find_tensor(m->g, "token_embd.weight");
    if (!te && !m->failed) rfail(m, "missing token_embd.weight");
    if (!m->failed) {
        m->hp.V = (int)te->ne[1];
        m->embd = rtensor(m, "token_embd.weight", m->hp.D, m->hp.V, 1, 0);
        m->out_norm = rtensor(m, "output_norm.weight", m->hp.D, 1, 1, 0);
        m->head = rtensor(m, "output.weight", m->hp.D, m->hp.V, 1, 0);
        m->ly = calloc((size_t)m->hp.n_layers + 1, sizeof(rlayer));
        m->freq = malloc(sizeof(double) * (size_t)(m->hp.dr / 2));
        if (!m->ly || !m->freq) rfail(m, "out of memory");
    }
    for (int il = 0; !m->failed && il < m->hp.n_layers; il++) rload_layer(m, il);
    char nm[128];
    const int N = m->hp.n_layers, D = m->hp.D;
    snprintf(nm, sizeof nm, "blk.%d.nextn.eh_proj.weight", N);
    if (!m->failed && rkey_int(m, "nextn_predict_layers", 0) > 0 && es_gguf_find_tensor(m->g, nm)) {
        m->has_mtp = 1;
        rload_layer(m, N);
        m->ly[N].moe = 1; /* the MTP block is an MoE block */
#define T(s, ...) (snprintf(nm, sizeof nm, "blk.%d.nextn." s, N), rtensor(m, nm, __VA_ARGS__))
        m->eh = T("eh_proj.weight", 2 * D, D, 1, 0);
        m->enorm = T("enorm.weight", D, 1, 1, 0);
        m->hnorm = T("hnorm.weight", D, 1, 1, 0);
        m->mtp_norm = T("shared_head_norm.weight", D, 1, 1, 0);
        m->mtp_embd = T("embed_tokens.weight", D, m->hp.V, 1, 1);
        m->mtp_head = T("shared_head_head.weight", D, m->hp.V, 1, 1);
#undef T
    }
    if (!m->failed) rbuild_freq(m);
    return m->failed ? -1 : 0;
}

/* ---- reference arithmetic --------------------------------------------------- */

/* y[rows] = W x, W row-major [rows][n] */
static void rmatvec(const double *W, int64_t rows, int64_t n, const double *x, double *y) {
    for (int64_t r = 0; r < rows; r++) {
        double s = 0;
        for (int64_t i = 0; i < n; i++) s += W[r * n + i] * x[i];
        y[r] = s;
    }
}

/* y = x / sqrt(mean(x²) + eps) ⊙ w */
static void rrmsnorm(double *y, const double *x, const double *w, int n, double eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) y[i] = x[i] * inv * w[i];
}

static void rsoftmax(double *x, int n) {
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (int i = 0; i < n; i++) sum += x[i] = exp(x[i] - mx);
    for (int i = 0; i < n; i++) x[i] /= sum;
}

/* Interleaved (GPT-J) pairs (2i, 2i+1) rotated by θ = t·f_i. */
static void rrope(double *v, int dr, int t, const double *freq) {
    for (int i = 0; i < dr / 2; i++) {
        double th = t * freq[i], c = cos(th), s = sin(th);
        double a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = a * c - b * s;
        v[2 * i + 1] = a * s + b * c;
    }
}

/* out[D] = W2 (silu(W1 x) ⊙ W3 x), hidden width F; tmp holds 2F */
static void rmlp(const double *w1, const double *w2, const double *w3, int D, int F, const double *x,
                 double *out, double *tmp) {
    double *g = tmp, *u = tmp + F;
    rmatvec(w1, F, D, x, g);
    rmatvec(w3, F, D, x, u);
    for (int i = 0; i < F; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
    rmatvec(w2, D, F, g, out);
}

void rrun_free(rrun *r) {
    free(r->logits);
    free(r->hidden);
    free(r->own);
    free(r->used);
    free(r->margin);
    memset(r, 0, sizeof *r);
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Router for one token: writes own[k] (ascending) and returns the decision
 * margin.  scores[E] get the unbiased s. */
static double rroute(const rmodel *m, const rlayer *L, const double *x, double *scores, int32_t *own) {
    const rhp *hp = &m->hp;
    const int E = hp->E, k = hp->k, G = hp->G;
    double c[1024];
    int idx[1024];
    rmatvec(L->router, E, hp->D, x, scores);
    if (hp->sigmoid) {
        for (int e = 0; e < E; e++) scores[e] = 1 / (1 + exp(-scores[e]));
    } else {
        rsoftmax(scores, E); /* over all E experts */
    }
    for (int e = 0; e < E; e++) c[e] = scores[e] + (L->bias ? L->bias[e] : 0); /* bias: selection only */
    double margin = INFINITY;
    if (G > 1) {
        /* contiguous groups; top-2 sum with a bias, max without */
        const int per = E / G;
        double gs[256];
        int gi[256];
        for (int g = 0; g < G; g++) {
            double b1 = -INFINITY, b2 = -INFINITY;
            for (int j = 0; j < per; j++) {
                double v = c[g * per + j];
                if (v > b1) { b2 = b1; b1 = v; }
                else if (v > b2) b2 = v;
            }
            gs[g] = L->bias ? b1 + (per > 1 ? b2 : 0) : b1;
            gi[g] = g;
        }
        for (int a = 1; a < G; a++) /* sort groups by score, descending */
            for (int b = a; b > 0 && gs[gi[b]] > gs[gi[b - 1]]; b--) { int t = gi[b]; gi[b] = gi[b - 1]; gi[b - 1] = t; }
        if (hp->Gk < G) margin = gs[gi[hp->Gk - 1]] - gs[gi[hp->Gk]];
        for (int n = hp->Gk; n < G; n++)
            for (int j = 0; j < per; j++) c[gi[n] * per + j] = -INFINITY;
    }
    for (int e = 0; e < E; e++) idx[e] = e;
    for (int a = 1; a < E; a++) /* stable: ties keep the lower id first */
        for (int b = a; b > 0 && c[idx[b]] > c[idx[b - 1]]; b--) { int t = idx[b]; idx[b] = idx[b - 1]; idx[b - 1] = t; }
    if (k < E && isfinite(c[idx[k]])) {
        double km = c[idx[k - 1]] - c[idx[k]];
        margin = km < margin ? km : margin;
    }
    for (int j = 0; j < k; j++) own[j] = idx[j];
    qsort(own, (size_t)k, sizeof *own, cmp_i32);
    return margin;
}

/* y[D] = Σ_j w_j Expert_{sel_j}(x) + Shared(x) */
static void rmoe(const rmodel *m, const rlayer *L, const double *x, const double *scores, const int32_t *sel,
                 double *y, double *tmp) {
    const rhp *hp = &m->hp;
    const int D = hp->D, F = hp->effn, k = hp->k;
    double w[256], sum = 0, *o = tmp + 2 * (size_t)(F * (hp->n_shared > 1 ? hp->n_shared : 1));
    for (int j = 0; j < k; j++) sum += w[j] = scores[sel[j]]; /* unbiased scores */
    for (int j = 0; j < k; j++) w[j] = (hp->norm_topk ? w[j] / sum : w[j]) * hp->route_scale;
    memset(y, 0, sizeof(double) * D);
    for (int j = 0; j < k; j++) {
        size_t e = (size_t)sel[j];
        rmlp(L->e1 + e * F * D, L->e2 + e * D * F, L->e3 + e * F * D, D, F, x, o, tmp);
        for (int i = 0; i < D; i++) y[i] += w[j] * o[i];
    }
    if (L->s1) {
        rmlp(L->s1, L->s2, L->s3, D, hp->n_shared * F, x, o, tmp);
        for (int i = 0; i < D; i++) y[i] += o[i]; /* not gated, not scaled */
    }
}

/* Naive MLA for all T positions of one layer: xn [T][D] in, out [T][D]. */
static void rattention(const rmodel *m, const rlayer *L, const double *xn, int T, double *out) {
    const rhp *hp = &m->hp;
    const int D = hp->D, H = hp->H, R = hp->R, dn = hp->dn, dr = hp->dr, dv = hp->dv, qk = dn + dr;
    double *q = malloc(sizeof(double) * (size_t)T * H * qk);
    double *chat = malloc(sizeof(double) * (size_t)T * R);
    double *kpe = malloc(sizeof(double) * (size_t)T * dr);
    double *K = malloc(sizeof(double) * (size_t)H * T * qk);
    double *Vv = malloc(sizeof(double) * (size_t)H * T * dv);
    double *a = malloc(sizeof(double) * (size_t)(R + dr + hp->q_lora + 1));
    double *p = malloc(sizeof(double) * (size_t)T);
    double *o = malloc(sizeof(double) * (size_t)H * dv);
    for (int t = 0; t < T; t++) {
        const double *x = xn + (size_t)t * D;
        double *qt = q + (size_t)t * H * qk;
        if (hp->q_lora > 0) {
            double *qa = a + R + dr;
            rmatvec(L->wq_a, hp->q_lora, D, x, qa);
            rrmsnorm(qa, qa, L->q_norm, hp->q_lora, hp->eps);
            rmatvec(L->wq_b, (int64_t)H * qk, hp->q_lora, qa, qt);
        } else {
            rmatvec(L->wq, (int64_t)H * qk, D, x, qt);
        }
        for (int h = 0; h < H; h++) rrope(qt + (size_t)h * qk + dn, dr, t, m->freq); /* nope first, rope last */
        rmatvec(L->wkv_a, R + dr, D, x, a);                                        /* latent first, k_pe last */
        rrmsnorm(chat + (size_t)t * R, a, L->kv_norm, R, hp->eps);
        memcpy(kpe + (size_t)t * dr, a + R, sizeof(double) * dr);
        rrope(kpe + (size_t)t * dr, dr, t, m->freq);
    }
    /* explicit per-head keys and values */
    for (int h = 0; h < H; h++)
        for (int s = 0; s < T; s++) {
            double *ks = K + ((size_t)h * T + s) * qk;
            rmatvec(L->wuk + (size_t)h * dn * R, dn, R, chat + (size_t)s * R, ks);
            memcpy(ks + dn, kpe + (size_t)s * dr, sizeof(double) * dr);
            rmatvec(L->wuv + (size_t)h * dv * R, dv, R, chat + (size_t)s * R, Vv + ((size_t)h * T + s) * dv);
        }
    for (int t = 0; t < T; t++) {
        for (int h = 0; h < H; h++) {
            const double *qh = q + ((size_t)t * H + h) * qk;
            for (int s = 0; s <= t; s++) { /* causal: s > t masked */
                const double *ks = K + ((size_t)h * T + s) * qk;
                double d = 0;
                for (int i = 0; i < qk; i++) d += qh[i] * ks[i];
                p[s] = hp->attn_scale * d;
            }
            rsoftmax(p, t + 1);
            for (int j = 0; j < dv; j++) {
                double acc = 0;
                for (int s = 0; s <= t; s++) acc += p[s] * Vv[((size_t)h * T + s) * dv + j];
                o[(size_t)h * dv + j] = acc; /* head-major concatenation */
            }
        }
        rmatvec(L->wo, D, (int64_t)H * dv, o, out + (size_t)t * D);
    }
    free(q); free(chat); free(kpe); free(K); free(Vv); free(a); free(p); free(o);
}

/* One prefill of T tokens from position 0.  forced (may be NULL): the
 * runtime's experts [n_layers][T][k]; where they differ from the
 * reference's own choice and the decision margin is below `tie`, the
 * reference follows them so that the logits stay comparable. */
int rforward(const rmodel *m, const int32_t *tok, int T, const int32_t *forced, double tie, rrun *run) {
    const rhp *hp = &m->hp;
    const int D = hp->D, V = hp->V, NL = hp->n_layers, k = hp->k > 0 ? hp->k : 1;
    memset(run, 0, sizeof *run);
    run->T = T;
    run->min_margin = INFINITY;
    run->logits = malloc(sizeof(double) * (size_t)T * V);
    run->own = malloc(sizeof(int32_t) * (size_t)NL * T * k);
    run->used = malloc(sizeof(int32_t) * (size_t)NL * T * k);
    run->margin = malloc(sizeof(double) * (size_t)NL * T);
    int F = hp->ffn > hp->n_shared * hp->effn ? hp->ffn : hp->n_shared * hp->effn;
    F = F > hp->effn ? F : hp->effn;
    double *x = malloc(sizeof(double) * (size_t)T * D), *xn = malloc(sizeof(double) * (size_t)T * D);
    double *y = malloc(sizeof(double) * (size_t)T * D), *tmp = malloc(sizeof(double) * (2 * (size_t)F + D));
    double *scores = malloc(sizeof(double) * (size_t)(hp->E > 0 ? hp->E : 1));
    if (!run->logits || !run->own || !run->used || !run->margin || !x || !xn || !y || !tmp || !scores ||
        hp->E > 1024 || hp->k > 256 || hp->G > 256) {
        free(x); free(xn); free(y); free(tmp); free(scores);
        rrun_free(run);
        return -1;
    }
    for (size_t i = 0; i < (size_t)NL * T * k; i++) run->own[i] = run->used[i] = -1;
    for (int t = 0; t < T; t++) memcpy(x + (size_t)t * D, m->embd + (size_t)tok[t] * D, sizeof(double) * D);
    for (int il = 0; il < NL; il++) {
        const rlayer *L = &m->ly[il];
        for (int t = 0; t < T; t++) rrmsnorm(xn + (size_t)t * D, x + (size_t)t * D, L->attn_norm, D, hp->eps);
        rattention(m, L, xn, T, y);
        for (size_t i = 0; i < (size_t)T * D; i++) x[i] += y[i];
        for (int t = 0; t < T; t++) {
            double *xt = x + (size_t)t * D, *nt = xn + (size_t)t * D, *yt = y + (size_t)t * D;
            rrmsnorm(nt, xt, L->ffn_norm, D, hp->eps);
            if (!L->moe) {
                rmlp(L->w1, L->w2, L->w3, D, hp->ffn, nt, yt, tmp);
            } else {
                size_t at = ((size_t)il * T + t) * k;
                int32_t *own = run->own + at, *used = run->used + at;
                double mg = rroute(m, L, nt, scores, own);
                run->margin[(size_t)il * T + t] = mg;
                run->min_margin = mg < run->min_margin ? mg : run->min_margin;
                memcpy(used, own, sizeof(int32_t) * k);
                if (forced && memcmp(forced + at, own, sizeof(int32_t) * k) != 0) {
                    int valid = 1;
                    for (int j = 0; j < k; j++) valid &= forced[at + j] >= 0 && forced[at + j] < hp->E;
                    if (mg < tie && valid) {
                        memcpy(used, forced + at, sizeof(int32_t) * k);
                        run->n_adopted++;
                        run->max_adopted = mg > run->max_adopted ? mg : run->max_adopted;
                    } else {
                        run->n_mismatch++;
                    }
                }
                rmoe(m, L, nt, scores, used, yt, tmp);
            }
            for (int i = 0; i < D; i++) xt[i] += yt[i];
        }
    }
    for (int t = 0; t < T; t++) {
        rrmsnorm(xn, x + (size_t)t * D, m->out_norm, D, hp->eps);
        rmatvec(m->head, V, D, xn, run->logits + (size_t)t * V);
    }
    run->hidden = x;
    free(xn); free(y); free(tmp); free(scores);
    return 0;
}

int rmtp(const rmodel *m, const double *hidden, const int32_t *next, int T, const int32_t *forced, double tie,
         double *logits) {
    const rhp *hp = &m->hp;
    const int D = hp->D, V = hp->V, k = hp->k;
    const rlayer *L = &m->ly[hp->n_layers];
    const double *embd = m->mtp_embd ? m->mtp_embd : m->embd, *head = m->mtp_head ? m->mtp_head : m->head;
    int F = hp->n_shared * hp->effn > hp->effn ? hp->n_shared * hp->effn : hp->effn;
    double *x = malloc(sizeof(double) * (size_t)T * D), *xn = malloc(sizeof(double) * (size_t)T * D);
    double *y = malloc(sizeof(double) * (size_t)T * D), *cat = malloc(sizeof(double) * 2 * (size_t)D);
    double *tmp = malloc(sizeof(double) * (2 * (size_t)F + D)), *scores = malloc(sizeof(double) * (size_t)hp->E);
    int32_t own[256];
    int mismatch = 0;
    if (T < 1 || !x || !xn || !y || !cat || !tmp || !scores || hp->E > 1024 || k > 256) {
        free(x); free(xn); free(y); free(cat); free(tmp); free(scores);
        return -1;
    }
    /* x_t = eh_proj [RMSNorm(Embed(next_t)) ; RMSNorm(h_t)] */
    for (int t = 0; t < T; t++) {
        rrmsnorm(cat, embd + (size_t)next[t] * D, m->enorm, D, hp->eps);
        rrmsnorm(cat + D, hidden + (size_t)t * D, m->hnorm, D, hp->eps);
        rmatvec(m->eh, D, 2 * D, cat, x + (size_t)t * D);
    }
    /* one block: attention over its own positions 0..T-1, then the MoE */
    for (int t = 0; t < T; t++) rrmsnorm(xn + (size_t)t * D, x + (size_t)t * D, L->attn_norm, D, hp->eps);
    rattention(m, L, xn, T, y);
    for (size_t i = 0; i < (size_t)T * D; i++) x[i] += y[i];
    for (int t = 0; t < T; t++) {
        double *xt = x + (size_t)t * D;
        rrmsnorm(xn, xt, L->ffn_norm, D, hp->eps);
        double mg = rroute(m, L, xn, scores, own);
        const int32_t *use = own;
        if (forced && memcmp(forced + (size_t)t * k, own, sizeof(int32_t) * k) != 0) {
            if (mg < tie) use = forced + (size_t)t * k;
            else mismatch++;
        }
        rmoe(m, L, xn, scores, use, y, tmp);
        for (int i = 0; i < D; i++) xt[i] += y[i];
        /* logits_t = Head RMSNorm_shared_head_norm(x_t) */
        rrmsnorm(xn, xt, m->mtp_norm, D, hp->eps);
        rmatvec(head, V, D, xn, logits + (size_t)t * V);
    }
    free(x); free(xn); free(y); free(cat); free(tmp); free(scores);
    return mismatch;
}
