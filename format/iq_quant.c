/* iq_quant.c — the quantisers of the IQ codebook types (IQ2_XXS, IQ2_XS,
 * IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M), weighted by an importance matrix.
 *
 * The method is the one ggml publishes for these types, written anew:
 * every weight gets an importance (the imatrix column's mean squared
 * activation times sqrt(sigma^2 + x^2), sigma^2 the block's mean square);
 * signs are taken out (for the types whose 7-bit sign code forces an even
 * count of negatives, the least important weight of an odd group is given
 * the wrong sign and a target of -|x|); then, per sub-block, a range of
 * trial scales: the targets are rounded coordinate by coordinate to the
 * grid's levels, a point that is not in the codebook is replaced by the
 * best of its precomputed nearest codebook entries (weighted distance),
 * and the scale that explains most of the weighted signal wins.  The
 * super-block's fp16 d is set from the largest sub-block scale, the 3- or
 * 4-bit sub-block scales are rounded, each sub-block is assigned again at
 * its final scale, and d is refitted by weighted least squares.
 *
 * IQ1_S/IQ1_M fit x ~ s (g + delta), g in {-1, 0, 1}, delta = +-1/8 per
 * 32 weights (IQ1_S) or per 8 (IQ1_M).  The codebook search tables are
 * built once per process (pthread_once), about 0.1 s.
 */
#include "iq_quant.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "es_assert.h"
#include "iq_grids.h"
#include "quant.h"

enum { CB_IQ2XXS, CB_IQ2XS, CB_IQ2S, CB_IQ3XXS, CB_IQ3S, CB_IQ1, CB_COUNT };

#define NB_CAP 48 /* most neighbours kept for a point off the codebook */

typedef struct codebook {
    int G;        /* values per entry: 8, or 4 for the IQ3 grids */
    int n;        /* entries */
    int nlev;     /* distinct values of a coordinate */
    float lev[8]; /* ascending */
    float *val;   /* n * G decoded values */
    int32_t *map; /* lattice point (base-nlev digits, coordinate 0 lowest) ->
                     entry, or -(1 + offset of its neighbour list in nb) */
    uint16_t *nb; /* lists: count, then entries */
} codebook;

static codebook cbs[CB_COUNT];
static int init_failed;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* coordinate j of grid entry k (IQ1 grid bytes are signed) */
static float grid_value(int cb, int k, int j) {
    switch (cb) {
    case CB_IQ2XXS: return (float)(uint8_t)(es_iq2xxs_grid[k] >> (8 * j));
    case CB_IQ2XS: return (float)(uint8_t)(es_iq2xs_grid[k] >> (8 * j));
    case CB_IQ2S: return (float)(uint8_t)(es_iq2s_grid[k] >> (8 * j));
    case CB_IQ3XXS: return (float)(uint8_t)(es_iq3xxs_grid[k] >> (8 * j));
    case CB_IQ3S: return (float)(uint8_t)(es_iq3s_grid[k] >> (8 * j));
    default: return (float)(int8_t)(uint8_t)(es_iq1s_grid[k] >> (8 * j));
    }
}

static int level_of(const codebook *c, float v) {
    for (int l = 0; l < c->nlev; l++)
        if (c->lev[l] == v) return l;
    return -1;
}

static int build(int cb, int G, int n) {
    codebook *c = &cbs[cb];
    c->G = G;
    c->n = n;
    c->val = malloc(sizeof(float) * (size_t)(n * G));
    if (!c->val) return -1;
    c->nlev = 0;
    for (int k = 0; k < n; k++)
        for (int j = 0; j < G; j++) {
            float v = grid_value(cb, k, j);
            c->val[k * G + j] = v;
            if (level_of(c, v) < 0) {
                ES_ASSERT(c->nlev < 8);
                int p = c->nlev++;
                while (p > 0 && c->lev[p - 1] > v) c->lev[p] = c->lev[p - 1], p--;
                c->lev[p] = v;
            }
        }
    int nkeys = 1;
    for (int j = 0; j < G; j++) nkeys *= c->nlev;
    c->map = malloc(sizeof(int32_t) * (size_t)nkeys);
    float *dist = malloc(sizeof(float) * (size_t)n);
    size_t cap = 4096, used = 0;
    c->nb = malloc(sizeof(uint16_t) * cap);
    if (!c->map || !dist || !c->nb) { free(dist); return -1; }
    for (int key = 0; key < nkeys; key++) c->map[key] = INT32_MIN;
    for (int k = 0; k < n; k++) {
        int key = 0;
        for (int j = G - 1; j >= 0; j--) key = key * c->nlev + level_of(c, c->val[k * G + j]);
        c->map[key] = k;
    }
    for (int key = 0; key < nkeys; key++) {
        if (c->map[key] != INT32_MIN) continue;
        float p[8];
        for (int j = 0, r = key; j < G; j++, r /= c->nlev) p[j] = c->lev[r % c->nlev];
        float d1 = INFINITY, d2 = INFINITY;
        for (int k = 0; k < n; k++) {
            float d = 0;
            for (int j = 0; j < G; j++) d += (c->val[k * G + j] - p[j]) * (c->val[k * G + j] - p[j]);
            dist[k] = d;
            if (d < d1) d2 = d1, d1 = d;
            else if (d > d1 && d < d2) d2 = d;
        }
        if (used + 1 + NB_CAP > cap) {
            uint16_t *m = realloc(c->nb, sizeof(uint16_t) * (cap *= 2));
            if (!m) { free(dist); return -1; }
            c->nb = m;
        }
        size_t head = used++;
        int cnt = 0;
        for (int pass = 0; pass < 2; pass++)
            for (int k = 0; k < n && cnt < NB_CAP; k++)
                if (dist[k] == (pass ? d2 : d1)) c->nb[used++] = (uint16_t)k, cnt++;
        c->nb[head] = (uint16_t)cnt;
        c->map[key] = -(int32_t)(head + 1);
    }
    free(dist);
    return 0;
}

static void init_tables(void) {
    if (build(CB_IQ2XXS, 8, 256) || build(CB_IQ2XS, 8, 512) || build(CB_IQ2S, 8, 1024) ||
        build(CB_IQ3XXS, 4, 256) || build(CB_IQ3S, 4, 512) || build(CB_IQ1, 8, 2048))
        init_failed = 1;
}

/* ---- the search ------------------------------------------------------------ */

/* The best entry for targets t (grid units) under weights w: the rounded
 * lattice point if it is an entry, else the best of its neighbours. */
static int pick(const codebook *c, const float *t, const float *w) {
    int key = 0;
    for (int j = c->G - 1; j >= 0; j--) {
        int l = 0;
        while (l < c->nlev - 1 && t[j] > 0.5f * (c->lev[l] + c->lev[l + 1])) l++;
        key = key * c->nlev + l;
    }
    int32_t m = c->map[key];
    if (m >= 0) return m;
    const uint16_t *list = c->nb + (-m - 1);
    int best = list[1];
    float best_err = INFINITY;
    for (int i = 1; i <= list[0]; i++) {
        const float *g = c->val + list[i] * c->G;
        float e = 0;
        for (int j = 0; j < c->G; j++) e += w[j] * (g[j] - t[j]) * (g[j] - t[j]);
        if (e < best_err) best_err = e, best = list[i];
    }
    return best;
}

#define SHIFT 0.125f /* IQ1's delta */

typedef struct sub {
    const codebook *c;
    int ng;         /* groups in the sub-block */
    int shift_mode; /* 0 none, 1 one delta for the sub-block (IQ1_S), 2 one per group (IQ1_M) */
} sub;

/* Assigns each group of targets a (weights w) at inverse scale id. */
static void assign(const sub *s, const float *a, const float *w, float id, uint16_t *idx, uint8_t *neg) {
    const codebook *c = s->c;
    int G = c->G;
    float t[8];
    if (!s->shift_mode) {
        for (int g = 0; g < s->ng; g++) {
            for (int j = 0; j < G; j++) t[j] = a[g * G + j] * id;
            idx[g] = (uint16_t)pick(c, t, w + g * G);
        }
        return;
    }
    float tot[2] = {0, 0};
    uint16_t cand[2][32];
    float err[2][32];
    for (int g = 0; g < s->ng; g++)
        for (int sg = 0; sg < 2; sg++) {
            float delta = sg ? -SHIFT : SHIFT;
            for (int j = 0; j < G; j++) t[j] = a[g * G + j] * id - delta;
            int k = pick(c, t, w + g * G);
            float e = 0;
            for (int j = 0; j < G; j++) e += w[g * G + j] * (c->val[k * G + j] - t[j]) * (c->val[k * G + j] - t[j]);
            cand[sg][g] = (uint16_t)k;
            err[sg][g] = e;
            tot[sg] += e;
        }
    for (int g = 0; g < s->ng; g++) {
        int sg = s->shift_mode == 1 ? tot[1] < tot[0] : err[1][g] < err[0][g];
        idx[g] = cand[sg][g];
        neg[g] = (uint8_t)sg;
    }
}

/* The value (grid units) that weight j of group g decodes to */
static float qval(const sub *s, const uint16_t *idx, const uint8_t *neg, int g, int j) {
    float v = s->c->val[idx[g] * s->c->G + j];
    if (s->shift_mode) v += neg[g] ? -SHIFT : SHIFT;
    return v;
}

/* Weighted fit of the assignment: returns sumqx^2/sumq2 (what the best
 * scale explains), the scale in *scale. */
static float score(const sub *s, const float *a, const float *w, const uint16_t *idx, const uint8_t *neg,
                   float *scale) {
    double sqx = 0, sq2 = 0;
    int G = s->c->G;
    for (int g = 0; g < s->ng; g++)
        for (int j = 0; j < G; j++) {
            float q = qval(s, idx, neg, g, j), wi = w[g * G + j];
            sqx += wi * q * a[g * G + j];
            sq2 += wi * q * q;
        }
    if (sq2 <= 0 || sqx <= 0) { *scale = 0; return 0; }
    *scale = (float)(sqx / sq2);
    return (float)(sqx * sqx / sq2);
}

/* Fits one sub-block: its scale (>= 0; 0 for an all-zero one), entries and
 * shift signs. */
static float fit(const sub *s, const float *a, const float *w, uint16_t *idx, uint8_t *neg) {
    const codebook *c = s->c;
    int len = s->ng * c->G;
    float amax = 0;
    for (int i = 0; i < len; i++) amax = fabsf(a[i]) > amax ? fabsf(a[i]) : amax;
    memset(neg, 0, (size_t)s->ng);
    if (!(amax > 1e-30f)) {
        assign(s, a, w, 0, idx, neg);
        return 0;
    }
    float top = c->lev[c->nlev - 1] + (s->shift_mode ? SHIFT : 0);
    float best = -1, best_scale = 0, sc;
    uint16_t ti[32];
    uint8_t tn[32];
    for (int is = -12; is <= 6; is++) {
        float id = top * (1 + 0.035f * (float)is) / amax;
        assign(s, a, w, id, ti, tn);
        float v = score(s, a, w, ti, tn, &sc);
        if (v > best || is == -12) { /* the first always: valid entries even for NaN input */
            best = v, best_scale = sc;
            memcpy(idx, ti, sizeof ti[0] * (size_t)s->ng);
            memcpy(neg, tn, (size_t)s->ng);
        }
    }
    if (best_scale > 0) { /* once more at the fitted scale */
        assign(s, a, w, 1 / best_scale, ti, tn);
        float v = score(s, a, w, ti, tn, &sc);
        if (v > best) {
            best_scale = sc;
            memcpy(idx, ti, sizeof ti[0] * (size_t)s->ng);
            memcpy(neg, tn, (size_t)s->ng);
        }
    }
    return best_scale;
}

/* ---- types ------------------------------------------------------------------ */

typedef struct tdesc {
    uint32_t type;
    int cb;
    int S;          /* weights per sub-block scale */
    int sign_mode;  /* 0 signed grid (IQ1), 1 7-bit code of even parity, 2 explicit bits */
    int shift_mode; /* see sub */
    float m;        /* sub-block scale = d * m * (2 ls + 1) */
    int lmax;       /* ls in 0..lmax */
} tdesc;

static const tdesc tdescs[] = {
    {ES_TYPE_IQ2_XXS, CB_IQ2XXS, 32, 1, 0, 0.125f, 15}, {ES_TYPE_IQ2_XS, CB_IQ2XS, 16, 1, 0, 0.125f, 15},
    {ES_TYPE_IQ2_S, CB_IQ2S, 16, 2, 0, 0.125f, 15},     {ES_TYPE_IQ3_XXS, CB_IQ3XXS, 32, 1, 0, 0.25f, 15},
    {ES_TYPE_IQ3_S, CB_IQ3S, 32, 2, 0, 1.0f, 15},       {ES_TYPE_IQ1_S, CB_IQ1, 32, 0, 1, 1.0f, 7},
    {ES_TYPE_IQ1_M, CB_IQ1, 16, 0, 2, 1.0f, 7},
};

static const tdesc *find_desc(uint32_t type) {
    for (size_t i = 0; i < sizeof tdescs / sizeof tdescs[0]; i++)
        if (tdescs[i].type == type) return &tdescs[i];
    return NULL;
}

int es_iq_quant_needs_imatrix(uint32_t type) { return find_desc(type) != NULL; }

int es_iq_quant_handles(uint32_t type) {
    return find_desc(type) != NULL || type == ES_TYPE_TQ1_0 || type == ES_TYPE_TQ2_0;
}

/* One super-block of 256 quantised: everything the packers need. */
typedef struct qblock {
    float d;
    uint8_t ls[16];        /* per sub-block */
    uint16_t idx[64];      /* per grid entry (32 of 8, or 64 of 4) */
    uint8_t neg[64];       /* IQ1 shift signs per group */
    uint8_t signs[32];     /* per 8 weights: bit j = weight j negative */
} qblock;

static void quant_super(const tdesc *td, const float *x, const float *imp, qblock *b) {
    const codebook *c = &cbs[td->cb];
    float w[256], a[256], scale[16];
    double sumx2 = 0, msum = 0;
    for (int i = 0; i < 256; i++) sumx2 += (double)x[i] * x[i];
    if (imp)
        for (int i = 0; i < 256; i++) msum += isfinite(imp[i]) && imp[i] > 0 ? imp[i] : 0;
    float floor_imp = (float)(msum / 256 * 1e-4) + 1e-30f;
    float sigma2 = (float)(sumx2 / 256);
    for (int i = 0; i < 256; i++) {
        float q = imp ? (isfinite(imp[i]) && imp[i] > floor_imp ? imp[i] : floor_imp) : 1.0f;
        w[i] = q * sqrtf(sigma2 + x[i] * x[i]);
    }
    /* signs out */
    for (int k = 0; k < 32; k++) {
        uint8_t s = 0;
        for (int j = 0; j < 8; j++)
            if (x[8 * k + j] < 0) s |= (uint8_t)(1u << j);
        if (td->sign_mode == 1 && (__builtin_popcount(s) & 1)) {
            int jmin = 0;
            for (int j = 1; j < 8; j++)
                if (w[8 * k + j] * x[8 * k + j] * x[8 * k + j] < w[8 * k + jmin] * x[8 * k + jmin] * x[8 * k + jmin])
                    jmin = j;
            s ^= (uint8_t)(1u << jmin);
        }
        b->signs[k] = s;
        for (int j = 0; j < 8; j++)
            a[8 * k + j] = td->sign_mode ? ((s >> j) & 1 ? -x[8 * k + j] : x[8 * k + j]) : x[8 * k + j];
    }
    sub s = {c, td->S / c->G, td->shift_mode};
    int nsub = 256 / td->S;
    float max_scale = 0;
    for (int ib = 0; ib < nsub; ib++) {
        scale[ib] = fit(&s, a + ib * td->S, w + ib * td->S, b->idx + ib * s.ng, b->neg + ib * s.ng);
        if (scale[ib] > max_scale) max_scale = scale[ib];
    }
    memset(b->ls, 0, sizeof b->ls);
    b->d = 0;
    if (!(max_scale > 0)) return;
    float d = es_fp16_to_f32(es_f32_to_fp16(max_scale / (td->m * (float)(2 * td->lmax + 1))));
    if (!(d > 0)) return;
    for (int ib = 0; ib < nsub; ib++) {
        int l = (int)lrintf(0.5f * (scale[ib] / (d * td->m) - 1));
        b->ls[ib] = (uint8_t)(l < 0 ? 0 : l > td->lmax ? td->lmax : l);
        float sb = d * td->m * (float)(2 * b->ls[ib] + 1);
        assign(&s, a + ib * td->S, w + ib * td->S, 1 / sb, b->idx + ib * s.ng, b->neg + ib * s.ng);
    }
    /* d by weighted least squares over the block, as it will decode */
    double sxv = 0, sv2 = 0;
    for (int ib = 0; ib < nsub; ib++) {
        float f = td->m * (float)(2 * b->ls[ib] + 1);
        for (int g = 0; g < s.ng; g++)
            for (int j = 0; j < c->G; j++) {
                int i = ib * td->S + g * c->G + j;
                float v = f * qval(&s, b->idx + ib * s.ng, b->neg + ib * s.ng, g, j);
                sxv += w[i] * v * a[i];
                sv2 += w[i] * v * v;
            }
    }
    float dfit = sv2 > 0 && sxv > 0 ? (float)(sxv / sv2) : d;
    b->d = dfit;
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void pack(const tdesc *td, const qblock *q, void *dst) {
    es_fp16 d = es_f32_to_fp16(q->d);
    switch (td->type) {
    case ES_TYPE_IQ2_XXS: {
        block_iq2_xxs *y = dst;
        y->d = d;
        uint8_t *qs = (uint8_t *)y->qs;
        for (int ib = 0; ib < 8; ib++) {
            uint32_t hi = (uint32_t)q->ls[ib] << 28;
            for (int l = 0; l < 4; l++) {
                qs[8 * ib + l] = (uint8_t)q->idx[4 * ib + l];
                hi |= (uint32_t)(q->signs[4 * ib + l] & 127) << (7 * l);
            }
            put_u32(qs + 8 * ib + 4, hi);
        }
        break;
    }
    case ES_TYPE_IQ2_XS: {
        block_iq2_xs *y = dst;
        y->d = d;
        for (int g = 0; g < 32; g++) y->qs[g] = (uint16_t)(q->idx[g] | (q->signs[g] & 127) << 9);
        for (int ib = 0; ib < 8; ib++) y->scales[ib] = (uint8_t)(q->ls[2 * ib] | q->ls[2 * ib + 1] << 4);
        break;
    }
    case ES_TYPE_IQ2_S: {
        block_iq2_s *y = dst;
        y->d = d;
        memset(y->qh, 0, sizeof y->qh);
        for (int g = 0; g < 32; g++) {
            y->qs[g] = (uint8_t)q->idx[g];
            y->qh[g / 4] |= (uint8_t)((q->idx[g] >> 8) << (2 * (g % 4)));
            y->qs[32 + g] = q->signs[g];
        }
        for (int ib = 0; ib < 8; ib++) y->scales[ib] = (uint8_t)(q->ls[2 * ib] | q->ls[2 * ib + 1] << 4);
        break;
    }
    case ES_TYPE_IQ3_XXS: {
        block_iq3_xxs *y = dst;
        y->d = d;
        for (int k = 0; k < 64; k++) y->qs[k] = (uint8_t)q->idx[k];
        for (int ib = 0; ib < 8; ib++) {
            uint32_t v = (uint32_t)q->ls[ib] << 28;
            for (int l = 0; l < 4; l++) v |= (uint32_t)(q->signs[4 * ib + l] & 127) << (7 * l);
            put_u32(y->qs + 64 + 4 * ib, v);
        }
        break;
    }
    case ES_TYPE_IQ3_S: {
        block_iq3_s *y = dst;
        y->d = d;
        memset(y->qh, 0, sizeof y->qh);
        for (int k = 0; k < 64; k++) {
            y->qs[k] = (uint8_t)q->idx[k];
            y->qh[k / 8] |= (uint8_t)((q->idx[k] >> 8) << (k % 8));
        }
        memcpy(y->signs, q->signs, 32);
        for (int i = 0; i < 4; i++) y->scales[i] = (uint8_t)(q->ls[2 * i] | q->ls[2 * i + 1] << 4);
        break;
    }
    case ES_TYPE_IQ1_S: {
        block_iq1_s *y = dst;
        y->d = d;
        for (int ib = 0; ib < 8; ib++) {
            uint16_t h = (uint16_t)(q->ls[ib] << 12 | q->neg[4 * ib] << 15);
            for (int l = 0; l < 4; l++) {
                y->qs[4 * ib + l] = (uint8_t)q->idx[4 * ib + l];
                h |= (uint16_t)((q->idx[4 * ib + l] >> 8) << (3 * l));
            }
            y->qh[ib] = h;
        }
        break;
    }
    case ES_TYPE_IQ1_M: {
        block_iq1_m *y = dst;
        memset(y->qh, 0, sizeof y->qh);
        for (int g = 0; g < 32; g++) {
            y->qs[g] = (uint8_t)q->idx[g];
            y->qh[g / 2] |= (uint8_t)(((q->idx[g] >> 8) | q->neg[g] << 3) << (4 * (g % 2)));
        }
        uint16_t sc[4] = {0, 0, 0, 0};
        for (int j = 0; j < 16; j++) sc[j / 4] |= (uint16_t)(q->ls[j] << (3 * (j % 4)));
        for (int k = 0; k < 4; k++) sc[k] |= (uint16_t)(((d >> (4 * k)) & 0xF) << 12);
        for (int k = 0; k < 4; k++) y->scales[2 * k] = (uint8_t)sc[k], y->scales[2 * k + 1] = (uint8_t)(sc[k] >> 8);
        break;
    }
    default: ES_ASSERT(0);
    }
}

/* ---- ternary ------------------------------------------------------------------ */

/* t in 0..2 (weight d·(t - 1)) of each of 256 values; returns d.  ggml
 * takes d = the block's amax; a least-squares d over a few thresholds
 * fits Gaussian-like blocks better (ternary-trained weights fit both). */
static float ternary(const float *x, uint8_t *t) {
    float amax = 0;
    for (int i = 0; i < 256; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    memset(t, 1, 256);
    if (!(amax > 0)) return 0;
    float best = -1, best_d = amax;
    for (int k = 0; k <= 10; k++) {
        float thr = amax * (0.5f - 0.04f * (float)k); /* |x| > thr: +-1 */
        double sx = 0;
        int cnt = 0;
        for (int i = 0; i < 256; i++)
            if (fabsf(x[i]) > thr) sx += fabsf(x[i]), cnt++;
        if (!cnt) continue;
        float v = (float)(sx * sx / cnt); /* what d = sx / cnt explains */
        if (v > best) best = v, best_d = (float)(sx / cnt);
    }
    float d = es_fp16_to_f32(es_f32_to_fp16(best_d)), id = d > 0 ? 1 / d : 0;
    for (int i = 0; i < 256; i++) {
        long v = lrintf(x[i] * id);
        t[i] = (uint8_t)((v < -1 ? -1 : v > 1 ? 1 : v) + 1);
    }
    return d;
}

/* five (or four) trits, most significant first, as the fixed-point
 * fraction the decoder multiplies out */
static uint8_t pack_trits(const uint8_t *t, int count, int stride) {
    unsigned v = 0;
    for (int n = 0; n < 5; n++) v = v * 3 + (n < count ? t[n * stride] : 0);
    return (uint8_t)((v * 256 + 242) / 243);
}

static void quant_tq(uint32_t type, const float *x, void *dst) {
    uint8_t t[256];
    float amax = ternary(x, t);
    if (type == ES_TYPE_TQ2_0) {
        block_tq2_0 *y = dst;
        memset(y->qs, 0, sizeof y->qs);
        for (int i = 0; i < 256; i++) {
            int h = i / 128, l = (i % 128) / 32, m = i % 32;
            y->qs[32 * h + m] |= (uint8_t)(t[i] << (2 * l));
        }
        y->d = es_f32_to_fp16(amax);
        return;
    }
    block_tq1_0 *y = dst;
    for (int m = 0; m < 32; m++) y->qs[m] = pack_trits(t + m, 5, 32);
    for (int m = 0; m < 16; m++) y->qs[32 + m] = pack_trits(t + 160 + m, 5, 16);
    for (int j = 0; j < 4; j++) y->qh[j] = pack_trits(t + 240 + j, 4, 4);
    y->d = es_f32_to_fp16(amax);
}

void es_iq_quant_row(uint32_t type, const float *x, void *dst, int64_t n, const float *imp) {
    const es_type_traits *tt = es_type_info(type);
    ES_ASSERT(tt && es_iq_quant_handles(type) && n % 256 == 0);
    uint8_t *out = dst;
    if (type == ES_TYPE_TQ1_0 || type == ES_TYPE_TQ2_0) {
        for (int64_t i = 0; i < n / 256; i++) quant_tq(type, x + 256 * i, out + (size_t)i * tt->type_size);
        return;
    }
    pthread_once(&init_once, init_tables);
    ES_ASSERT(!init_failed); /* a few hundred kB at start-up */
    const tdesc *td = find_desc(type);
    qblock q;
    for (int64_t i = 0; i < n / 256; i++) {
        quant_super(td, x + 256 * i, imp ? imp + 256 * i : NULL, &q);
        pack(td, &q, out + (size_t)i * tt->type_size);
    }
}
