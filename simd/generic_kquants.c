/* generic_kquants.c — scalar reference kernels for the K-quant formats:
 * dequantisation, quantisation and matrix-vector products (against fp32
 * activations) of Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and IQ4_XS (and, decoding and
 * products only, of the IQ1/IQ2/IQ3 codebook formats and TQ1_0/TQ2_0), the scale fit of
 * the IQ4 table (IQ4_NL's too, used by generic.c), and the Q8_K activation
 * quantiser the SIMD kernels multiply with.  Block layouts are in quant.h.
 *
 * Decoding: every K format reads as "value i = scale[s] * q[i] - min[s]" with
 * s the sub-block of i (16 or 32 weights), so each format has one decoder
 * into that form (kdec) shared by dequant and matvec; the scale and min are
 * computed in fp32 exactly as ggml's dequantisers compute them, so values
 * agree bit for bit.
 *
 * Quantisation, in two levels per super-block of 256:
 *   1. each sub-block gets the (scale, min) or scale that minimises a
 *      weighted squared error, by trying a fan of grid stretches around the
 *      min/max grid, solving least squares for each rounding, then
 *      re-rounding with the best fit until it stops improving (fit_affine,
 *      fit_symmetric);
 *   2. the sub-block scales (and mins) are themselves quantised to 4, 6 or 8
 *      bits against an fp16 super-block scale, and the weights rounded again
 *      with the scales as stored, so the rounding matches what decodes.
 The error minimised is the plain squared error: without an importance
 * matrix, activations of equal variance make a dot product's expected
 * squared error Σ e_i², whatever the size of each weight.  (ggml's reference
 * quantisers weight by |x| or x² instead; on Gaussian data this plain fit
 * has 0.5% (Q4_K) to 10% (Q2_K) lower RMS error — tests/test_kquants.c.)
 */
#include "generic_kquants.h"

#include <math.h>
#include <string.h>

#include "iq_grids.h"
#include "quant.h"

/* v rounded to nearest (ties to even) and clamped to [lo, hi]; NaN -> lo.
 * Clamping first keeps |v| small, so adding 1.5 * 2^23 leaves the rounded
 * integer in the low mantissa bits (the FPU's own round-to-nearest-even),
 * without a call to lrintf per weight. */
static int round_clamp(float v, int lo, int hi) {
    if (!(v >= (float)lo)) return lo;
    if (v >= (float)hi) return hi;
    float f = v + 12582912.0f;
    int32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return (bits & 0x7fffff) - 0x400000;
}

/* ---- decoding ------------------------------------------------------------- */

/* One super-block: value i = scale[i / sub] * q[i] - min[i / sub]. */
typedef struct kdec {
    int8_t q[QK_K];
    float scale[16], min[16];
    int sub;     /* sub-block length, 16 or 32 */
    int has_min; /* 0: min[] is all zero (symmetric formats) */
} kdec;

/* The 2-bit planes of Q2_K and Q3_K: weight 128h + 32p + l is bits
 * 2p..2p+1 of qs[32h + l]. */
static void unpack_planes2(const uint8_t *qs, int8_t *q) {
    for (int h = 0; h < 2; h++)
        for (int p = 0; p < 4; p++)
            for (int l = 0; l < 32; l++) q[128 * h + 32 * p + l] = (int8_t)((qs[32 * h + l] >> (2 * p)) & 3);
}

/* The nibbles of Q4_K and Q5_K: weight 64h + l (l < 32) is the low nibble
 * of qs[32h + l], weight 64h + 32 + l its high nibble. */
static void unpack_nibbles(const uint8_t *qs, int8_t *q) {
    for (int h = 0; h < 4; h++)
        for (int l = 0; l < 32; l++) {
            q[64 * h + l] = (int8_t)(qs[32 * h + l] & 0xF);
            q[64 * h + 32 + l] = (int8_t)(qs[32 * h + l] >> 4);
        }
}

/* A bit per weight (Q3_K hmask, Q5_K qh): weight i is bit i/32 of
 * bits[i % 32]; adds `set` where it is 1, `clear` where it is 0. */
static void add_bitplane(const uint8_t *bits, int set, int clear, int8_t *q) {
    for (int p = 0; p < 8; p++)
        for (int l = 0; l < 32; l++) q[32 * p + l] = (int8_t)(q[32 * p + l] + ((bits[l] >> p) & 1 ? set : clear));
}

static void decode_q2_K(const void *blk, kdec *k) {
    const block_q2_K *b = blk;
    float d = es_fp16_to_f32(b->d), dmin = es_fp16_to_f32(b->dmin);
    k->sub = 16, k->has_min = 1;
    for (int j = 0; j < 16; j++) {
        k->scale[j] = d * (float)(b->scales[j] & 0xF);
        k->min[j] = dmin * (float)(b->scales[j] >> 4);
    }
    unpack_planes2(b->qs, k->q);
}

static void decode_q3_K(const void *blk, kdec *k) {
    const block_q3_K *b = blk;
    float d = es_fp16_to_f32(b->d);
    k->sub = 16, k->has_min = 0;
    for (int j = 0; j < 16; j++) {
        k->scale[j] = d * (float)(es_k3_scale(j, b->scales) - 32);
        k->min[j] = 0;
    }
    unpack_planes2(b->qs, k->q);
    add_bitplane(b->hmask, 0, -4, k->q); /* q - 4 unless the high bit is set */
}

/* Q4_K/Q5_K share the scale block and the nibble layout */
static void decode_k4_scales(es_fp16 d16, es_fp16 dmin16, const uint8_t *scales, kdec *k) {
    float d = es_fp16_to_f32(d16), dmin = es_fp16_to_f32(dmin16);
    k->sub = 32, k->has_min = 1;
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        es_k4_scale_min(j, scales, &sc, &m);
        k->scale[j] = d * (float)sc;
        k->min[j] = dmin * (float)m;
    }
}

static void decode_q4_K(const void *blk, kdec *k) {
    const block_q4_K *b = blk;
    decode_k4_scales(b->d, b->dmin, b->scales, k);
    unpack_nibbles(b->qs, k->q);
}

static void decode_q5_K(const void *blk, kdec *k) {
    const block_q5_K *b = blk;
    decode_k4_scales(b->d, b->dmin, b->scales, k);
    unpack_nibbles(b->qs, k->q);
    add_bitplane(b->qh, 16, 0, k->q);
}

/* Q6_K: per 128 weights (h), weight 128h + 32p + l has its low nibble in
 * ql[64h + 32(p & 1) + l] (low half for p < 2) and its top 2 bits at bits
 * 2p of qh[32h + l]; stored offset by 32. */
static void decode_q6_K(const void *blk, kdec *k) {
    const block_q6_K *b = blk;
    float d = es_fp16_to_f32(b->d);
    k->sub = 16, k->has_min = 0;
    for (int j = 0; j < 16; j++) {
        k->scale[j] = d * (float)b->scales[j];
        k->min[j] = 0;
    }
    for (int h = 0; h < 2; h++)
        for (int p = 0; p < 4; p++)
            for (int l = 0; l < 32; l++) {
                uint8_t lo = b->ql[64 * h + 32 * (p & 1) + l];
                int low4 = p < 2 ? lo & 0xF : lo >> 4;
                int high2 = (b->qh[32 * h + l] >> (2 * p)) & 3;
                k->q[128 * h + 32 * p + l] = (int8_t)((low4 | high2 << 4) - 32);
            }
}

/* IQ4_XS: 8 sub-blocks of 32, scale d·(ls - 32), quants from the IQ4_NL
 * table (sub-block j: low nibbles of qs[16j ..] then the high ones) */
static void decode_iq4_xs(const void *blk, kdec *k) {
    const block_iq4_xs *b = blk;
    float d = es_fp16_to_f32(b->d);
    k->sub = 32, k->has_min = 0;
    for (int j = 0; j < 8; j++) {
        k->scale[j] = d * (float)(es_iq4xs_scale(j, b) - 32);
        k->min[j] = 0;
        for (int l = 0; l < 16; l++) {
            k->q[32 * j + l] = es_iq4nl_values[b->qs[16 * j + l] & 0xF];
            k->q[32 * j + 16 + l] = es_iq4nl_values[b->qs[16 * j + l] >> 4];
        }
    }
}

/* ---- the IQ codebook formats and the ternary ones ------------------------------
 * Each decodes into kdec's "scale * q" with q a small integer: the grid
 * value with its sign (IQ2/IQ3; the scale d·(0.5 + s)/4, d·(0.5 + s)/2 or
 * d·(1 + 2s) computed as ggml computes it), 8·(grid + shift) for IQ1 (scale
 * d·(2s + 1)/8: the product is the same real number as ggml's
 * d·(2s + 1)·(grid ± 1/8), both factors exact, so the one rounding agrees),
 * t - 1 for the ternary formats. */

/* 8 weights from a grid entry of magnitudes and 8 sign bits */
static void signed_group(uint64_t grid, uint8_t signs, int8_t *q) {
    for (int j = 0; j < 8; j++) {
        int v = (int)(grid >> (8 * j) & 0xFF);
        q[j] = (int8_t)((signs >> j) & 1 ? -v : v);
    }
}

/* the IQ2 scales d·(0.5 + s)/4 of the 16 halves of 32 from 8 bytes of two nibbles */
static void iq2_half_scales(float d, const uint8_t *scales, kdec *k) {
    k->sub = 16, k->has_min = 0;
    for (int j = 0; j < 16; j++) {
        k->scale[j] = d * (0.5f + (float)((scales[j / 2] >> (4 * (j % 2))) & 0xF)) * 0.25f;
        k->min[j] = 0;
    }
}

static uint32_t rd32(const void *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void decode_iq2_xxs(const void *blk, kdec *k) {
    const block_iq2_xxs *b = blk;
    const uint8_t *qs = (const uint8_t *)b->qs;
    float d = es_fp16_to_f32(b->d);
    k->sub = 32, k->has_min = 0;
    for (int ib = 0; ib < 8; ib++) {
        uint32_t aux = rd32(qs + 8 * ib + 4);
        k->scale[ib] = d * (0.5f + (float)(aux >> 28)) * 0.25f;
        k->min[ib] = 0;
        for (int l = 0; l < 4; l++)
            signed_group(es_iq2xxs_grid[qs[8 * ib + l]], es_iq2_signs[(aux >> (7 * l)) & 127], k->q + 32 * ib + 8 * l);
    }
}

static void decode_iq2_xs(const void *blk, kdec *k) {
    const block_iq2_xs *b = blk;
    iq2_half_scales(es_fp16_to_f32(b->d), b->scales, k);
    for (int g = 0; g < 32; g++) signed_group(es_iq2xs_grid[b->qs[g] & 511], es_iq2_signs[b->qs[g] >> 9], k->q + 8 * g);
}

static void decode_iq2_s(const void *blk, kdec *k) {
    const block_iq2_s *b = blk;
    iq2_half_scales(es_fp16_to_f32(b->d), b->scales, k);
    for (int g = 0; g < 32; g++) {
        int idx = b->qs[g] | ((b->qh[g / 4] >> (2 * (g % 4))) & 3) << 8;
        signed_group(es_iq2s_grid[idx], b->qs[32 + g], k->q + 8 * g);
    }
}

static void decode_iq3_xxs(const void *blk, kdec *k) {
    const block_iq3_xxs *b = blk;
    float d = es_fp16_to_f32(b->d);
    k->sub = 32, k->has_min = 0;
    for (int ib = 0; ib < 8; ib++) {
        uint32_t aux = rd32(b->qs + 64 + 4 * ib);
        k->scale[ib] = d * (0.5f + (float)(aux >> 28)) * 0.5f;
        k->min[ib] = 0;
        for (int l = 0; l < 4; l++) {
            const uint8_t *idx = b->qs + 8 * ib + 2 * l;
            uint64_t grid = es_iq3xxs_grid[idx[0]] | (uint64_t)es_iq3xxs_grid[idx[1]] << 32;
            signed_group(grid, es_iq2_signs[(aux >> (7 * l)) & 127], k->q + 32 * ib + 8 * l);
        }
    }
}

static void decode_iq3_s(const void *blk, kdec *k) {
    const block_iq3_s *b = blk;
    float d = es_fp16_to_f32(b->d);
    k->sub = 32, k->has_min = 0;
    for (int ib = 0; ib < 8; ib++) {
        k->scale[ib] = d * (float)(1 + 2 * ((b->scales[ib / 2] >> (4 * (ib % 2))) & 0xF));
        k->min[ib] = 0;
    }
    for (int g = 0; g < 32; g++) {
        int k0 = 2 * g, k1 = 2 * g + 1;
        uint32_t lo = es_iq3s_grid[b->qs[k0] | ((b->qh[k0 / 8] >> (k0 % 8)) & 1) << 8];
        uint32_t hi = es_iq3s_grid[b->qs[k1] | ((b->qh[k1 / 8] >> (k1 % 8)) & 1) << 8];
        signed_group(lo | (uint64_t)hi << 32, b->signs[g], k->q + 8 * g);
    }
}

/* IQ1: 8 weights 8·(grid ± 1/8) */
static void iq1_group(int idx, int neg_shift, int8_t *q) {
    uint64_t grid = es_iq1s_grid[idx];
    for (int j = 0; j < 8; j++) q[j] = (int8_t)(8 * (int8_t)(grid >> (8 * j) & 0xFF) + (neg_shift ? -1 : 1));
}

static void decode_iq1_s(const void *blk, kdec *k) {
    const block_iq1_s *b = blk;
    float d = es_fp16_to_f32(b->d);
    k->sub = 32, k->has_min = 0;
    for (int ib = 0; ib < 8; ib++) {
        unsigned qh = b->qh[ib];
        k->scale[ib] = d * (float)(2 * ((qh >> 12) & 7) + 1) * 0.125f;
        k->min[ib] = 0;
        for (int l = 0; l < 4; l++)
            iq1_group(b->qs[4 * ib + l] | ((qh >> (3 * l)) & 7) << 8, (qh >> 15) & 1, k->q + 32 * ib + 8 * l);
    }
}

static void decode_iq1_m(const void *blk, kdec *k) {
    const block_iq1_m *b = blk;
    float d = es_fp16_to_f32(es_iq1m_d(b));
    k->sub = 16, k->has_min = 0;
    for (int j = 0; j < 16; j++) { /* uint16 j/4 holds four 3-bit scales */
        unsigned sc = (unsigned)(b->scales[2 * (j / 4)] | b->scales[2 * (j / 4) + 1] << 8);
        k->scale[j] = d * (float)(2 * ((sc >> (3 * (j % 4))) & 7) + 1) * 0.125f;
        k->min[j] = 0;
    }
    for (int g = 0; g < 32; g++) {
        unsigned h = b->qh[g / 2] >> (4 * (g % 2));
        iq1_group(b->qs[g] | (h & 7) << 8, (h >> 3) & 1, k->q + 8 * g);
    }
}

/* TQ1_0: t = ((uint8_t)(byte·3^n)·3) >> 8 */
static int8_t ternary_digit(uint8_t byte, int n) {
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    uint8_t q = (uint8_t)(byte * pow3[n]);
    return (int8_t)(((unsigned)q * 3 >> 8) - 1);
}

static void ternary_scale(es_fp16 d16, kdec *k) {
    float d = es_fp16_to_f32(d16);
    k->sub = 32, k->has_min = 0;
    for (int j = 0; j < 8; j++) k->scale[j] = d, k->min[j] = 0;
}

static void decode_tq1_0(const void *blk, kdec *k) {
    const block_tq1_0 *b = blk;
    ternary_scale(b->d, k);
    for (int n = 0; n < 5; n++) {
        for (int m = 0; m < 32; m++) k->q[32 * n + m] = ternary_digit(b->qs[m], n);
        for (int m = 0; m < 16; m++) k->q[160 + 16 * n + m] = ternary_digit(b->qs[32 + m], n);
    }
    for (int n = 0; n < 4; n++)
        for (int j = 0; j < 4; j++) k->q[240 + 4 * n + j] = ternary_digit(b->qh[j], n);
}

static void decode_tq2_0(const void *blk, kdec *k) {
    const block_tq2_0 *b = blk;
    ternary_scale(b->d, k);
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 4; l++)
            for (int m = 0; m < 32; m++) k->q[128 * h + 32 * l + m] = (int8_t)(((b->qs[32 * h + m] >> (2 * l)) & 3) - 1);
}

typedef void (*kdec_fn)(const void *blk, kdec *k);

static void dequant_k(const void *src, size_t block_bytes, kdec_fn dec, float *dst, int64_t n) {
    kdec k;
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        dec((const uint8_t *)src + (size_t)ib * block_bytes, &k);
        float *y = dst + ib * QK_K;
        for (int s = 0; s < QK_K / k.sub; s++)
            for (int i = s * k.sub; i < (s + 1) * k.sub; i++) y[i] = k.scale[s] * (float)k.q[i] - k.min[s];
    }
}

/* Per sub-block: scale * Σ q·x - min * Σ x, summed in fp32. */
static void matvec_k(const void *w, size_t rb, int64_t n, const float *x, float *y, int64_t r0, int64_t r1,
                     size_t block_bytes, kdec_fn dec) {
    kdec k;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w + (size_t)r * rb;
        float acc = 0.0f;
        for (int64_t ib = 0; ib < n / QK_K; ib++) {
            dec(row + (size_t)ib * block_bytes, &k);
            const float *xb = x + ib * QK_K;
            for (int s = 0; s < QK_K / k.sub; s++) {
                float sq = 0.0f, sx = 0.0f;
                for (int i = s * k.sub; i < (s + 1) * k.sub; i++) {
                    sq += (float)k.q[i] * xb[i];
                    sx += xb[i];
                }
                acc += k.scale[s] * sq;
                if (k.has_min) acc -= k.min[s] * sx;
            }
        }
        y[r] = acc;
    }
}

void es_dequant_q2_K(const void *src, float *dst, int64_t n) { dequant_k(src, sizeof(block_q2_K), decode_q2_K, dst, n); }
void es_dequant_q3_K(const void *src, float *dst, int64_t n) { dequant_k(src, sizeof(block_q3_K), decode_q3_K, dst, n); }
void es_dequant_q4_K(const void *src, float *dst, int64_t n) { dequant_k(src, sizeof(block_q4_K), decode_q4_K, dst, n); }
void es_dequant_q5_K(const void *src, float *dst, int64_t n) { dequant_k(src, sizeof(block_q5_K), decode_q5_K, dst, n); }
void es_dequant_q6_K(const void *src, float *dst, int64_t n) { dequant_k(src, sizeof(block_q6_K), decode_q6_K, dst, n); }

void es_dequant_iq4_xs(const void *src, float *dst, int64_t n) {
    dequant_k(src, sizeof(block_iq4_xs), decode_iq4_xs, dst, n);
}
void es_matvec_iq4_xs(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matvec_k(w, rb, n, act, y, r0, r1, sizeof(block_iq4_xs), decode_iq4_xs);
}

#define IQ_ENTRY(name, blk)                                                                                    \
    void es_dequant_##name(const void *src, float *dst, int64_t n) {                                           \
        dequant_k(src, sizeof(blk), decode_##name, dst, n);                                                    \
    }                                                                                                          \
    void es_matvec_##name(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) { \
        matvec_k(w, rb, n, act, y, r0, r1, sizeof(blk), decode_##name);                                        \
    }
IQ_ENTRY(iq2_xxs, block_iq2_xxs)
IQ_ENTRY(iq2_xs, block_iq2_xs)
IQ_ENTRY(iq2_s, block_iq2_s)
IQ_ENTRY(iq3_xxs, block_iq3_xxs)
IQ_ENTRY(iq3_s, block_iq3_s)
IQ_ENTRY(iq1_s, block_iq1_s)
IQ_ENTRY(iq1_m, block_iq1_m)
IQ_ENTRY(tq1_0, block_tq1_0)
IQ_ENTRY(tq2_0, block_tq2_0)
#undef IQ_ENTRY

void es_matvec_q2_K(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matvec_k(w, rb, n, act, y, r0, r1, sizeof(block_q2_K), decode_q2_K);
}
void es_matvec_q3_K(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matvec_k(w, rb, n, act, y, r0, r1, sizeof(block_q3_K), decode_q3_K);
}
void es_matvec_q4_K(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matvec_k(w, rb, n, act, y, r0, r1, sizeof(block_q4_K), decode_q4_K);
}
void es_matvec_q5_K(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matvec_k(w, rb, n, act, y, r0, r1, sizeof(block_q5_K), decode_q5_K);
}
void es_matvec_q6_K(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matvec_k(w, rb, n, act, y, r0, r1, sizeof(block_q6_K), decode_q6_K);
}

/* ---- sub-block fits --------------------------------------------------------- */

/* Least squares of x ≈ s*L + b over a fixed rounding L; b is kept <= 0
 * (the formats store -b as an unsigned min).  Returns the squared error, or
 * INFINITY when the system is degenerate. */
static float solve_affine(const float *x, const uint8_t *L, int n, float *s_out, float *b_out) {
    float sx = 0, sl = 0, sl2 = 0, sxl = 0;
    for (int i = 0; i < n; i++) {
        float l = (float)L[i];
        sx += x[i];
        sl += l;
        sl2 += l * l;
        sxl += x[i] * l;
    }
    float sw = (float)n, det = sw * sl2 - sl * sl;
    if (!(det > 0)) return INFINITY;
    float s = (sw * sxl - sx * sl) / det;
    float b = (sl2 * sx - sl * sxl) / det;
    if (b > 0) { /* the best offset is positive: pin it at 0 and refit s */
        b = 0;
        s = sxl / sl2;
    }
    if (!(s > 0)) return INFINITY;
    float err = 0;
    for (int i = 0; i < n; i++) {
        float e = s * (float)L[i] + b - x[i];
        err += e * e;
    }
    *s_out = s;
    *b_out = b;
    return err;
}

static void round_affine(const float *x, int n, int nmax, float s, float b, uint8_t *L) {
    float is = 1.0f / s;
    for (int i = 0; i < n; i++) L[i] = (uint8_t)round_clamp((x[i] - b) * is, 0, nmax);
}

/* Fits x[n] ≈ scale * L - min with L in 0..nmax, scale >= 0, min >= 0,
 * minimising Σ (scale L - min - x)².  The grid through [min(x, 0), max x]
 * is stretched to nmax + lo + step*k levels for k = 0..steps; each rounding
 * gets its least-squares (scale, min); the best is then re-rounded with its
 * own (scale, min) and refitted while that helps.  L is the final rounding. */
static float fit_affine(const float *x, int n, int nmax, float lo, float step, int steps,
                        uint8_t *L, float *min_out) {
    float xmin = x[0], xmax = x[0];
    for (int i = 1; i < n; i++) {
        xmin = fminf(xmin, x[i]);
        xmax = fmaxf(xmax, x[i]);
    }
    if (xmin > 0) xmin = 0;
    if (xmax == xmin) { /* constant (and <= 0): all in the min */
        memset(L, 0, (size_t)n);
        *min_out = -xmin;
        return 0;
    }
    /* the plain min/max grid is the fallback */
    float best_s = (xmax - xmin) / (float)nmax, best_b = xmin, best = 0;
    round_affine(x, n, nmax, best_s, best_b, L);
    for (int i = 0; i < n; i++) {
        float e = best_s * (float)L[i] + best_b - x[i];
        best += e * e;
    }
    uint8_t cand[32];
    for (int k = 0; k <= steps; k++) {
        float levels = (float)nmax + lo + step * (float)k;
        if (!(levels > 0)) continue;
        round_affine(x, n, nmax, (xmax - xmin) / levels, xmin, cand);
        float s, b, err = solve_affine(x, cand, n, &s, &b);
        if (err < best) {
            best = err, best_s = s, best_b = b;
            memcpy(L, cand, (size_t)n);
        }
    }
    for (int it = 0; it < 4; it++) { /* re-round with the fit itself */
        round_affine(x, n, nmax, best_s, best_b, cand);
        float s, b, err = solve_affine(x, cand, n, &s, &b);
        if (!(err < best)) break;
        best = err, best_s = s, best_b = b;
        memcpy(L, cand, (size_t)n);
    }
    *min_out = -best_b;
    return best_s;
}

/* Fits x[n] ≈ scale * L with L in -nmax..nmax-1 (the extra level on the
 * negative side), minimising Σ (scale L - x)².  The value of largest
 * magnitude is mapped to -nmax ± a tenth of a level in 19 steps; each
 * rounding's best scale is Σxl/Σl², which lowers the error by the gain
 * (Σxl)²/Σl²; the best is re-rounded with its own scale while that helps.
 * L[i] is stored offset by nmax (0..2nmax-1).  Returns the (signed) scale. */
static float fit_symmetric(const float *x, int n, int nmax, uint8_t *L) {
    float amax = 0, vmax = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), vmax = x[i];
    if (amax < 1e-15f) {
        for (int i = 0; i < n; i++) L[i] = (uint8_t)nmax;
        return 0;
    }
    float best_gain = -1, best_s = 0;
    int cand[32];
    for (int k = -9; k <= 9; k++) {
        float is = -((float)nmax + 0.1f * (float)k) / vmax;
        float slx = 0, sl2 = 0;
        for (int i = 0; i < n; i++) {
            cand[i] = round_clamp(is * x[i], -nmax, nmax - 1);
            slx += x[i] * (float)cand[i];
            sl2 += (float)(cand[i] * cand[i]);
        }
        if (sl2 > 0 && slx * slx / sl2 > best_gain) {
            best_gain = slx * slx / sl2;
            best_s = slx / sl2;
            for (int i = 0; i < n; i++) L[i] = (uint8_t)(cand[i] + nmax);
        }
    }
    for (int it = 0; it < 4 && best_s != 0; it++) {
        float slx = 0, sl2 = 0;
        for (int i = 0; i < n; i++) {
            cand[i] = round_clamp(x[i] / best_s, -nmax, nmax - 1);
            slx += x[i] * (float)cand[i];
            sl2 += (float)(cand[i] * cand[i]);
        }
        if (!(sl2 > 0 && slx * slx / sl2 > best_gain)) break;
        best_gain = slx * slx / sl2;
        best_s = slx / sl2;
        for (int i = 0; i < n; i++) L[i] = (uint8_t)(cand[i] + nmax);
    }
    if (best_s == 0) return 0;
    /* coordinate descent: move single levels by one step while the gain
     * grows (the scale follows each move); matters most at 3 bits, where
     * one level is a large share of the range */
    float slx = 0, sl2 = 0;
    for (int i = 0; i < n; i++) {
        float l = (float)(L[i] - nmax);
        slx += x[i] * l;
        sl2 += l * l;
    }
    for (int pass = 0; pass < 3; pass++) {
        int moved = 0;
        for (int i = 0; i < n; i++) {
            int l = L[i] - nmax;
            for (int dir = -1; dir <= 1; dir += 2) {
                int nl = l + dir;
                if (nl < -nmax || nl > nmax - 1) continue;
                float nslx = slx + x[i] * (float)(nl - l);
                float nsl2 = sl2 + (float)(nl * nl - l * l);
                if (nsl2 > 0 && nslx * nslx / nsl2 > best_gain * 1.0000001f) {
                    slx = nslx, sl2 = nsl2, best_gain = nslx * nslx / nsl2;
                    L[i] = (uint8_t)(nl + nmax);
                    l = nl;
                    moved = 1;
                }
            }
        }
        if (!moved) break;
    }
    return slx / sl2;
}

/* ---- super-block scales ---------------------------------------------------- */

/* Non-negative sub-block values v[n] as codes 0..qmax of a step d = max/qmax;
 * returns d (0 if every v is 0). */
static float code_unsigned(const float *v, int n, int qmax, uint8_t *codes) {
    float vmax = 0;
    for (int j = 0; j < n; j++) vmax = fmaxf(vmax, v[j]);
    if (!(vmax > 0)) {
        memset(codes, 0, (size_t)n);
        return 0;
    }
    float id = (float)qmax / vmax;
    for (int j = 0; j < n; j++) codes[j] = (uint8_t)round_clamp(id * v[j], 0, qmax);
    return vmax / (float)qmax;
}

/* Signed sub-block scales v[n] as codes -qneg..qneg-1 of a step d chosen so
 * the scale of largest magnitude becomes -qneg (the extra negative level);
 * returns d (0 if every v is 0). */
static float code_signed(const float *v, int n, int qneg, int *codes) {
    float amax = 0, vmax = 0;
    for (int j = 0; j < n; j++)
        if (fabsf(v[j]) > amax) amax = fabsf(v[j]), vmax = v[j];
    if (!(amax > 0)) {
        for (int j = 0; j < n; j++) codes[j] = 0;
        return 0;
    }
    float id = -(float)qneg / vmax;
    for (int j = 0; j < n; j++) codes[j] = round_clamp(id * v[j], -qneg, qneg - 1);
    return 1.0f / id;
}

/* 2-bit planes (Q2_K, Q3_K): qs[32h + l] = L[128h + l + 32p] << 2p, p = 0..3 */
static void pack_planes2(const uint8_t *L, uint8_t *qs) {
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *q = L + 128 * h + l;
            qs[32 * h + l] = (uint8_t)((q[0] & 3) | (q[32] & 3) << 2 | (q[64] & 3) << 4 | (q[96] & 3) << 6);
        }
}

/* ---- quantisers ------------------------------------------------------------- */

/* The affine formats (Q2_K, Q4_K, Q5_K): n_sub sub-blocks of `sub` weights
 * fitted as scale*L - min (L in 0..nmax); scales and mins coded 0..qmax
 * against the fp16 d and dmin; then every weight rounded again against the
 * scale and min as stored (d*sc, dmin*mc), so the quants fit what decodes. */
static void quant_affine(const float *x, int sub, int n_sub, int nmax, int qmax, float lo, int steps,
                         es_fp16 *d16, es_fp16 *dmin16, uint8_t *sc, uint8_t *mc, uint8_t *L) {
    float scale[16], min[16];
    for (int j = 0; j < n_sub; j++) scale[j] = fit_affine(x + sub * j, sub, nmax, lo, 0.1f, steps, L + sub * j, &min[j]);
    *d16 = es_f32_to_fp16(code_unsigned(scale, n_sub, qmax, sc));
    *dmin16 = es_f32_to_fp16(code_unsigned(min, n_sub, qmax, mc));
    float d = es_fp16_to_f32(*d16), dmin = es_fp16_to_f32(*dmin16);
    for (int j = 0; j < n_sub; j++) {
        float ds = d * (float)sc[j], dm = dmin * (float)mc[j];
        for (int i = sub * j; i < sub * (j + 1); i++)
            L[i] = ds > 0 ? (uint8_t)round_clamp((x[i] + dm) / ds, 0, nmax) : 0;
    }
}

/* The symmetric formats (Q3_K, Q6_K): 16 sub-blocks of 16 fitted as
 * scale*L (L in -nmax..nmax-1), scales coded -qneg..qneg-1 against the fp16
 * d, every weight rounded again against d*code.  L[i] is stored offset by
 * nmax (0..2nmax-1); returns d. */
static es_fp16 quant_symmetric(const float *x, int nmax, int qneg, int *code, uint8_t *L) {
    float scale[16];
    for (int j = 0; j < 16; j++) scale[j] = fit_symmetric(x + 16 * j, 16, nmax, L + 16 * j);
    es_fp16 d16 = es_f32_to_fp16(code_signed(scale, 16, qneg, code));
    float d = es_fp16_to_f32(d16);
    for (int j = 0; j < 16; j++) {
        float ds = d * (float)code[j];
        for (int i = 16 * j; i < 16 * j + 16; i++)
            L[i] = (uint8_t)(ds != 0 ? round_clamp(x[i] / ds, -nmax, nmax - 1) + nmax : nmax);
    }
    return d16;
}

void es_quant_q2_K(const float *src, void *dst, int64_t n) {
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        block_q2_K *b = (block_q2_K *)dst + ib;
        uint8_t L[QK_K], sc[16], mc[16];
        quant_affine(src + ib * QK_K, 16, 16, 3, 15, -0.5f, 15, &b->d, &b->dmin, sc, mc, L);
        for (int j = 0; j < 16; j++) b->scales[j] = (uint8_t)(sc[j] | mc[j] << 4);
        pack_planes2(L, b->qs);
    }
}

void es_quant_q3_K(const float *src, void *dst, int64_t n) {
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        block_q3_K *b = (block_q3_K *)dst + ib;
        uint8_t L[QK_K];
        int code[16];
        b->d = quant_symmetric(src + ib * QK_K, 4, 32, code, L);
        memset(b->scales, 0, sizeof b->scales);
        for (int j = 0; j < 16; j++) { /* 6-bit codes biased by 32, the split es_k3_scale reads */
            int c = code[j] + 32;
            if (j < 8) b->scales[j] = (uint8_t)(c & 0xF);
            else b->scales[j - 8] |= (uint8_t)((c & 0xF) << 4);
            b->scales[8 + j % 4] |= (uint8_t)((c >> 4) << (2 * (j / 4)));
        }
        memset(b->hmask, 0, sizeof b->hmask);
        for (int i = 0; i < QK_K; i++)
            if (L[i] > 3) b->hmask[i % 32] |= (uint8_t)(1 << (i / 32));
        pack_planes2(L, b->qs);
    }
}

/* Q4_K/Q5_K: 6-bit codes, the packing es_k4_scale_min reads */
static void pack_k4_scales(const uint8_t *sc, const uint8_t *mc, uint8_t *scales) {
    memset(scales, 0, K_SCALE_SIZE);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            scales[j] = sc[j];
            scales[j + 4] = mc[j];
        } else {
            scales[j + 4] = (uint8_t)((sc[j] & 0xF) | (mc[j] & 0xF) << 4);
            scales[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            scales[j] |= (uint8_t)((mc[j] >> 4) << 6);
        }
    }
}

/* nibbles as unpack_nibbles reads them: weights 64h + l low, 64h + 32 + l high */
static void pack_nibbles(const uint8_t *L, uint8_t *qs) {
    for (int h = 0; h < 4; h++)
        for (int l = 0; l < 32; l++)
            qs[32 * h + l] = (uint8_t)((L[64 * h + l] & 0xF) | (L[64 * h + 32 + l] & 0xF) << 4);
}

void es_quant_q4_K(const float *src, void *dst, int64_t n) {
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        block_q4_K *b = (block_q4_K *)dst + ib;
        uint8_t L[QK_K], sc[8], mc[8];
        quant_affine(src + ib * QK_K, 32, 8, 15, 63, -1.0f, 20, &b->d, &b->dmin, sc, mc, L);
        pack_k4_scales(sc, mc, b->scales);
        pack_nibbles(L, b->qs);
    }
}

void es_quant_q5_K(const float *src, void *dst, int64_t n) {
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        block_q5_K *b = (block_q5_K *)dst + ib;
        uint8_t L[QK_K], sc[8], mc[8];
        quant_affine(src + ib * QK_K, 32, 8, 31, 63, -0.5f, 15, &b->d, &b->dmin, sc, mc, L);
        pack_k4_scales(sc, mc, b->scales);
        memset(b->qh, 0, sizeof b->qh);
        for (int i = 0; i < QK_K; i++)
            if (L[i] > 15) b->qh[i % 32] |= (uint8_t)(1 << (i / 32));
        pack_nibbles(L, b->qs);
    }
}

void es_quant_q6_K(const float *src, void *dst, int64_t n) {
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        block_q6_K *b = (block_q6_K *)dst + ib;
        uint8_t L[QK_K];
        int code[16];
        b->d = quant_symmetric(src + ib * QK_K, 32, 128, code, L);
        for (int j = 0; j < 16; j++) b->scales[j] = (int8_t)code[j];
        memset(b->qh, 0, sizeof b->qh);
        for (int i = 0; i < QK_K; i++) { /* the layout decode_q6_K reads */
            int h = i / 128, p = (i % 128) / 32, l = i % 32;
            uint8_t *lo = &b->ql[64 * h + 32 * (p & 1) + l];
            if (p < 2) *lo = (uint8_t)(L[i] & 0xF);
            else *lo |= (uint8_t)((L[i] & 0xF) << 4);
            b->qh[32 * h + l] |= (uint8_t)((L[i] >> 4) << (2 * p));
        }
    }
}

/* ---- IQ4_NL / IQ4_XS: scales against the non-linear table ---------------------- */

/* index of the table value nearest v (the table is sorted: count the
 * midpoints below v) */
static int iq4_nearest(float v) {
    int lo = 0, hi = 15;
    if (!(v == v)) return 8;
    while (lo < hi) { /* the first index whose upper midpoint is >= v */
        int mid = (lo + hi) / 2;
        if (v > 0.5f * (float)(es_iq4nl_values[mid] + es_iq4nl_values[mid + 1])) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

void es_iq4_round(const float *x, int n, float d, uint8_t *L) {
    float id = d != 0 ? 1.0f / d : 0.0f;
    for (int i = 0; i < n; i++) L[i] = (uint8_t)iq4_nearest(x[i] * id);
}

/* Σ x·v and Σ v² over the rounding L */
static void iq4_sums(const float *x, int n, const uint8_t *L, float *sqx, float *sq2) {
    float a = 0, b = 0;
    for (int i = 0; i < n; i++) {
        float v = (float)es_iq4nl_values[L[i]];
        a += x[i] * v;
        b += v * v;
    }
    *sqx = a, *sq2 = b;
}

/* The scale d of x[n] ≈ d · table[L] minimising Σ (d·table[L] - x)²: the
 * value of largest magnitude is mapped near either end of the table (-127
 * or 113, ± 10 levels), each rounding gets its least-squares d = Σxv/Σv²
 * (lowering the error by (Σxv)²/Σv²), and the best is re-rounded with its
 * own d while that helps.  L is the final rounding; returns d. */
float es_iq4_fit(const float *x, int n, uint8_t *L) {
    float amax = 0, vmax = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), vmax = x[i];
    if (amax < 1e-15f) {
        es_iq4_round(x, n, 0, L);
        return 0;
    }
    uint8_t cand[32];
    float best_gain = -1, best_d = 0;
    for (int end = 0; end < 2; end++)
        for (int k = -10; k <= 10; k++) {
            float target = end ? 113.0f + (float)k : -127.0f + (float)k;
            es_iq4_round(x, n, vmax / target, cand);
            float sqx, sq2;
            iq4_sums(x, n, cand, &sqx, &sq2);
            if (sq2 > 0 && sqx * sqx / sq2 > best_gain) {
                best_gain = sqx * sqx / sq2, best_d = sqx / sq2;
                memcpy(L, cand, (size_t)n);
            }
        }
    for (int it = 0; it < 4 && best_d != 0; it++) {
        es_iq4_round(x, n, best_d, cand);
        float sqx, sq2;
        iq4_sums(x, n, cand, &sqx, &sq2);
        if (!(sq2 > 0 && sqx * sqx / sq2 > best_gain)) break;
        best_gain = sqx * sqx / sq2, best_d = sqx / sq2;
        memcpy(L, cand, (size_t)n);
    }
    return best_d;
}

/* IQ4_XS: each sub-block's d fitted alone, the 8 d's coded -32..31 against
 * the fp16 super-block d (code_signed), every weight rounded again against
 * d·code as stored. */
void es_quant_iq4_xs(const float *src, void *dst, int64_t n) {
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        const float *x = src + ib * QK_K;
        block_iq4_xs *b = (block_iq4_xs *)dst + ib;
        uint8_t L[QK_K];
        float scale[8];
        int code[8];
        for (int j = 0; j < 8; j++) scale[j] = es_iq4_fit(x + 32 * j, 32, L + 32 * j);
        b->d = es_f32_to_fp16(code_signed(scale, 8, 32, code));
        float d = es_fp16_to_f32(b->d);
        b->scales_h = 0;
        memset(b->scales_l, 0, sizeof b->scales_l);
        for (int j = 0; j < 8; j++) {
            int c = code[j] + 32;
            b->scales_l[j / 2] |= (uint8_t)((c & 0xF) << (4 * (j % 2)));
            b->scales_h |= (uint16_t)((c >> 4) << (2 * j));
            es_iq4_round(x + 32 * j, 32, d * (float)code[j], L + 32 * j);
            for (int l = 0; l < 16; l++) b->qs[16 * j + l] = (uint8_t)(L[32 * j + l] | L[32 * j + 16 + l] << 4);
        }
    }
}

/* ---- Q8_K (activations) --------------------------------------------------------- */

void es_quant_q8_K(const float *src, void *dst, int64_t n) {
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        const float *x = src + ib * QK_K;
        block_q8_K *b = (block_q8_K *)dst + ib;
        float amax = 0;
        for (int i = 0; i < QK_K; i++) amax = fmaxf(amax, fabsf(x[i]));
        float id = amax > 0 ? 127.0f / amax : 0.0f;
        b->d = amax / 127.0f;
        for (int i = 0; i < QK_K; i++) b->qs[i] = (int8_t)round_clamp(x[i] * id, -127, 127);
        for (int j = 0; j < QK_K / 16; j++) {
            int s = 0;
            for (int i = 0; i < 16; i++) s += b->qs[16 * j + i];
            b->bsums[j] = (int16_t)s;
        }
    }
}

void es_dequant_q8_K(const void *src, float *dst, int64_t n) {
    const block_q8_K *b = src;
    for (int64_t ib = 0; ib < n / QK_K; ib++)
        for (int i = 0; i < QK_K; i++) dst[ib * QK_K + i] = b[ib].d * (float)b[ib].qs[i];
}
