/* generic.c — the scalar reference kernels: every slot of the kernel table,
 * written plainly (the 32-weight formats F32..IQ4_NL here, the K-quants and
 * IQ4_XS in generic_kquants.c).  Per-ISA files must agree with these (tests compare them).
 * Accumulation is in fp32, block by block, as the quantised formats are
 * defined; the block layouts are in quant.h. */
#include "kernels.h"
#include "generic_kquants.h"
#include "fp8.h"

#include <math.h>
#include <string.h>

/* ---- dequantisation ----------------------------------------------------- */

static void dequant_f32(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void dequant_f16(const void *src, float *dst, int64_t n) {
    const es_fp16 *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = es_fp16_to_f32(s[i]);
}

static void dequant_bf16(const void *src, float *dst, int64_t n) {
    const es_bf16 *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = es_bf16_to_f32(s[i]);
}

static void dequant_q8_0(const void *src, float *dst, int64_t n) {
    const block_q8_0 *b = src;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        float d = es_fp16_to_f32(b[i].d);
        for (int j = 0; j < QK8_0; j++) dst[i * QK8_0 + j] = d * (float)b[i].qs[j];
    }
}

static void dequant_q4_0(const void *src, float *dst, int64_t n) {
    const block_q4_0 *b = src;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        float d = es_fp16_to_f32(b[i].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            dst[i * QK4_0 + j] = d * (float)((b[i].qs[j] & 0x0f) - 8);
            dst[i * QK4_0 + j + QK4_0 / 2] = d * (float)((b[i].qs[j] >> 4) - 8);
        }
    }
}

/* ---- Q4_1, Q5_0, Q5_1, IQ4_NL: one decoder per format into value j =
 * d * q[j] (+ m where the format has a min), shared by dequant and matvec */

typedef struct b32 {
    float d, m;
    int has_min;
    int16_t q[32];
} b32;

/* the 16 nibble bytes every 32-weight format shares: low nibbles weights
 * 0..15, high nibbles 16..31 */
static void nibbles32(const uint8_t *qs, int16_t *q) {
    for (int j = 0; j < 16; j++) {
        q[j] = qs[j] & 0x0f;
        q[j + 16] = qs[j] >> 4;
    }
}

/* Q5_0/Q5_1's fifth bit: weight j gets 16 if bit j of qh (little endian) */
static void fifth_bit(const uint8_t *qh, int16_t *q) {
    for (int j = 0; j < 32; j++) q[j] = (int16_t)(q[j] + (((qh[j / 8] >> (j % 8)) & 1) << 4));
}

static void decode_b32(uint32_t t, const void *blk, b32 *o) {
    o->m = 0;
    o->has_min = t == ES_TYPE_Q4_1 || t == ES_TYPE_Q5_1;
    if (t == ES_TYPE_Q4_1) {
        const block_q4_1 *b = blk;
        o->d = es_fp16_to_f32(b->d), o->m = es_fp16_to_f32(b->m);
        nibbles32(b->qs, o->q);
    } else if (t == ES_TYPE_Q5_0) {
        const block_q5_0 *b = blk;
        o->d = es_fp16_to_f32(b->d);
        nibbles32(b->qs, o->q);
        fifth_bit(b->qh, o->q);
        for (int j = 0; j < 32; j++) o->q[j] -= 16;
    } else if (t == ES_TYPE_Q5_1) {
        const block_q5_1 *b = blk;
        o->d = es_fp16_to_f32(b->d), o->m = es_fp16_to_f32(b->m);
        nibbles32(b->qs, o->q);
        fifth_bit(b->qh, o->q);
    } else { /* IQ4_NL */
        const block_iq4_nl *b = blk;
        o->d = es_fp16_to_f32(b->d);
        nibbles32(b->qs, o->q);
        for (int j = 0; j < 32; j++) o->q[j] = es_iq4nl_values[o->q[j]];
    }
}

static void dequant_b32(uint32_t t, const void *src, float *dst, int64_t n) {
    size_t bs = es_row_bytes(t, 32);
    b32 o;
    for (int64_t i = 0; i < n / 32; i++) {
        decode_b32(t, (const uint8_t *)src + (size_t)i * bs, &o);
        for (int j = 0; j < 32; j++) dst[32 * i + j] = o.has_min ? o.d * (float)o.q[j] + o.m : o.d * (float)o.q[j];
    }
}
static void dequant_q4_1(const void *src, float *dst, int64_t n) { dequant_b32(ES_TYPE_Q4_1, src, dst, n); }
static void dequant_q5_0(const void *src, float *dst, int64_t n) { dequant_b32(ES_TYPE_Q5_0, src, dst, n); }
static void dequant_q5_1(const void *src, float *dst, int64_t n) { dequant_b32(ES_TYPE_Q5_1, src, dst, n); }
static void dequant_iq4_nl(const void *src, float *dst, int64_t n) { dequant_b32(ES_TYPE_IQ4_NL, src, dst, n); }

/* ---- quantisation (the same rounding as ggml's reference quantisers) ---- */

static void quant_f32(const float *src, void *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void quant_f16(const float *src, void *dst, int64_t n) {
    es_fp16 *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = es_f32_to_fp16(src[i]);
}

static void quant_bf16(const float *src, void *dst, int64_t n) {
    es_bf16 *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = es_f32_to_bf16(src[i]);
}

static void quant_q8_0(const float *src, void *dst, int64_t n) {
    block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const float *x = src + i * QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f;
        float id = d ? 1.0f / d : 0.0f;
        b[i].d = es_f32_to_fp16(d);
        for (int j = 0; j < QK8_0; j++) b[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

static void quant_q4_0(const float *src, void *dst, int64_t n) {
    block_q4_0 *b = dst;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        const float *x = src + i * QK4_0;
        float amax = 0.0f, max = 0.0f; /* the value of largest magnitude, signed */
        for (int j = 0; j < QK4_0; j++)
            if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); max = x[j]; }
        float d = max / -8.0f;
        float id = d ? 1.0f / d : 0.0f;
        b[i].d = es_f32_to_fp16(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            int q0 = (int)(x[j] * id + 8.5f);
            int q1 = (int)(x[j + QK4_0 / 2] * id + 8.5f);
            q0 = q0 > 15 ? 15 : q0;
            q1 = q1 > 15 ? 15 : q1;
            b[i].qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

/* Q4_1/Q5_1 (nmax 15 or 31): the min/max grid of ggml's reference, d =
 * (max - min) / nmax and m = min, each weight rounded to nearest against
 * d and m as stored in fp16 (so the rounding fits what decodes). */
static void quant_affine32(const float *x, int nmax, es_fp16 *d16, es_fp16 *m16, uint8_t *L) {
    float lo = x[0], hi = x[0];
    for (int j = 1; j < 32; j++) lo = fminf(lo, x[j]), hi = fmaxf(hi, x[j]);
    *d16 = es_f32_to_fp16((hi - lo) / (float)nmax);
    *m16 = es_f32_to_fp16(lo);
    float d = es_fp16_to_f32(*d16), m = es_fp16_to_f32(*m16), id = d ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; j++) {
        float v = (x[j] - m) * id;
        L[j] = (uint8_t)(v <= 0 ? 0 : v >= (float)nmax ? nmax : (int)(v + 0.5f));
    }
}

/* Q5_0: as Q4_0 with 32 levels: the value of largest magnitude becomes
 * -16 (q = 0), the scale d = max / -16; q = round(x / d) + 16 clamped to 31 */
static void quant_sym32(const float *x, es_fp16 *d16, uint8_t *L) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++)
        if (fabsf(x[j]) > amax) amax = fabsf(x[j]), max = x[j];
    *d16 = es_f32_to_fp16(max / -16.0f);
    float d = es_fp16_to_f32(*d16), id = d ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; j++) {
        float v = x[j] * id + 16.0f;
        L[j] = (uint8_t)(v <= 0 ? 0 : v >= 31.0f ? 31 : (int)(v + 0.5f));
    }
}

/* nibbles (L & 15) as nibbles32 reads them, and Q5's fifth bits */
static void pack32(const uint8_t *L, uint8_t *qs, uint8_t *qh) {
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((L[j] & 0x0f) | (L[j + 16] & 0x0f) << 4);
    if (!qh) return;
    memset(qh, 0, 4);
    for (int j = 0; j < 32; j++) qh[j / 8] |= (uint8_t)(((L[j] >> 4) & 1) << (j % 8));
}

static void quant_q4_1(const float *src, void *dst, int64_t n) {
    block_q4_1 *b = dst;
    for (int64_t i = 0; i < n / 32; i++) {
        uint8_t L[32];
        quant_affine32(src + 32 * i, 15, &b[i].d, &b[i].m, L);
        pack32(L, b[i].qs, NULL);
    }
}

static void quant_q5_1(const float *src, void *dst, int64_t n) {
    block_q5_1 *b = dst;
    for (int64_t i = 0; i < n / 32; i++) {
        uint8_t L[32];
        quant_affine32(src + 32 * i, 31, &b[i].d, &b[i].m, L);
        pack32(L, b[i].qs, b[i].qh);
    }
}

static void quant_q5_0(const float *src, void *dst, int64_t n) {
    block_q5_0 *b = dst;
    for (int64_t i = 0; i < n / 32; i++) {
        uint8_t L[32];
        quant_sym32(src + 32 * i, &b[i].d, L);
        pack32(L, b[i].qs, b[i].qh);
    }
}

static void quant_iq4_nl(const float *src, void *dst, int64_t n) {
    block_iq4_nl *b = dst;
    for (int64_t i = 0; i < n / 32; i++) {
        uint8_t L[32];
        b[i].d = es_f32_to_fp16(es_iq4_fit(src + 32 * i, 32, L));
        es_iq4_round(src + 32 * i, 32, es_fp16_to_f32(b[i].d), L);
        pack32(L, b[i].qs, NULL);
    }
}

/* ---- matrix-vector products --------------------------------------------- */

static void matvec_f32(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    const float *x = act;
    for (int64_t r = r0; r < r1; r++) {
        const float *row = (const float *)((const char *)w + (size_t)r * rb);
        float s = 0.0f;
        for (int64_t i = 0; i < n; i++) s += row[i] * x[i];
        y[r] = s;
    }
}

static void matvec_f16(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    const float *x = act;
    for (int64_t r = r0; r < r1; r++) {
        const es_fp16 *row = (const es_fp16 *)((const char *)w + (size_t)r * rb);
        float s = 0.0f;
        for (int64_t i = 0; i < n; i++) s += es_fp16_to_f32(row[i]) * x[i];
        y[r] = s;
    }
}

static void matvec_bf16(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    const float *x = act;
    for (int64_t r = r0; r < r1; r++) {
        const es_bf16 *row = (const es_bf16 *)((const char *)w + (size_t)r * rb);
        float s = 0.0f;
        for (int64_t i = 0; i < n; i++) s += es_bf16_to_f32(row[i]) * x[i];
        y[r] = s;
    }
}

/* Block formats: sum of q·x within a block, then times the block scale. */
static void matvec_q8_0(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    const float *x = act;
    for (int64_t r = r0; r < r1; r++) {
        const block_q8_0 *b = (const block_q8_0 *)((const char *)w + (size_t)r * rb);
        float s = 0.0f;
        for (int64_t i = 0; i < n / QK8_0; i++) {
            const float *xb = x + i * QK8_0;
            float bs = 0.0f;
            for (int j = 0; j < QK8_0; j++) bs += (float)b[i].qs[j] * xb[j];
            s += bs * es_fp16_to_f32(b[i].d);
        }
        y[r] = s;
    }
}

static void matvec_q4_0(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    const float *x = act;
    for (int64_t r = r0; r < r1; r++) {
        const block_q4_0 *b = (const block_q4_0 *)((const char *)w + (size_t)r * rb);
        float s = 0.0f;
        for (int64_t i = 0; i < n / QK4_0; i++) {
            const float *xb = x + i * QK4_0;
            float bs = 0.0f;
            for (int j = 0; j < QK4_0 / 2; j++) {
                bs += (float)((b[i].qs[j] & 0x0f) - 8) * xb[j];
                bs += (float)((b[i].qs[j] >> 4) - 8) * xb[j + QK4_0 / 2];
            }
            s += bs * es_fp16_to_f32(b[i].d);
        }
        y[r] = s;
    }
}

/* Q4_1, Q5_0, Q5_1, IQ4_NL: per block d * Σ q·x (+ m * Σ x) */
static void matvec_b32(uint32_t t, const void *w, size_t rb, int64_t n, const float *x, float *y, int64_t r0,
                       int64_t r1) {
    size_t bs = es_row_bytes(t, 32);
    b32 o;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w + (size_t)r * rb;
        float s = 0.0f;
        for (int64_t i = 0; i < n / 32; i++) {
            decode_b32(t, row + (size_t)i * bs, &o);
            const float *xb = x + i * 32;
            float sq = 0.0f, sx = 0.0f;
            for (int j = 0; j < 32; j++) {
                sq += (float)o.q[j] * xb[j];
                sx += xb[j];
            }
            s += sq * o.d;
            if (o.has_min) s += sx * o.m;
        }
        y[r] = s;
    }
}
static void matvec_q4_1(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matvec_b32(ES_TYPE_Q4_1, w, rb, n, act, y, r0, r1);
}
static void matvec_q5_0(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matvec_b32(ES_TYPE_Q5_0, w, rb, n, act, y, r0, r1);
}
static void matvec_q5_1(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matvec_b32(ES_TYPE_Q5_1, w, rb, n, act, y, r0, r1);
}
static void matvec_iq4_nl(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matvec_b32(ES_TYPE_IQ4_NL, w, rb, n, act, y, r0, r1);
}

/* ---- vector operations --------------------------------------------------- */

static void rmsnorm_generic(float *y, const float *x, const float *w, int64_t n, float eps) {
    float ss = 0.0f;
    for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];
    float inv = 1.0f / sqrtf(ss / (float)n + eps);
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * inv * w[i];
}

static float dot_generic(const float *a, const float *b, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_generic(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static void silu_mul_generic(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void softmax_generic(float *x, int64_t n) {
    float mx = x[0];
    for (int64_t i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    for (int64_t i = 0; i < n; i++) x[i] /= sum;
}

/* ---- latent cache rows (F16, BF16, Q8_0) against fp32 ------------------------ */

static float dot_kv_f16(const float *a, const void *x, int64_t n) {
    const es_fp16 *h = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += a[i] * es_fp16_to_f32(h[i]);
    return s;
}

static float dot_kv_bf16(const float *a, const void *x, int64_t n) {
    const es_bf16 *h = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += a[i] * es_bf16_to_f32(h[i]);
    return s;
}

static float dot_kv_q8_0(const float *a, const void *x, int64_t n) {
    const block_q8_0 *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        float bs = 0.0f;
        for (int j = 0; j < QK8_0; j++) bs += a[i * QK8_0 + j] * (float)b[i].qs[j];
        s += bs * es_fp16_to_f32(b[i].d);
    }
    return s;
}

static void axpy_kv_f16(float *y, float a, const void *x, int64_t n) {
    const es_fp16 *h = x;
    for (int64_t i = 0; i < n; i++) y[i] += a * es_fp16_to_f32(h[i]);
}

static void axpy_kv_bf16(float *y, float a, const void *x, int64_t n) {
    const es_bf16 *h = x;
    for (int64_t i = 0; i < n; i++) y[i] += a * es_bf16_to_f32(h[i]);
}

static void axpy_kv_q8_0(float *y, float a, const void *x, int64_t n) {
    const block_q8_0 *b = x;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const float ad = a * es_fp16_to_f32(b[i].d);
        for (int j = 0; j < QK8_0; j++) y[i * QK8_0 + j] += ad * (float)b[i].qs[j];
    }
}

const es_kernels es_kernels_generic = {
    .name = "generic",
    .matvec = {[ES_TYPE_F32] = matvec_f32, [ES_TYPE_F16] = matvec_f16, [ES_TYPE_BF16] = matvec_bf16,
               [ES_TYPE_Q8_0] = matvec_q8_0, [ES_TYPE_Q4_0] = matvec_q4_0, [ES_TYPE_Q4_1] = matvec_q4_1,
               [ES_TYPE_Q5_0] = matvec_q5_0, [ES_TYPE_Q5_1] = matvec_q5_1, [ES_TYPE_IQ4_NL] = matvec_iq4_nl,
               [ES_TYPE_IQ4_XS] = es_matvec_iq4_xs, [ES_TYPE_IQ2_XXS] = es_matvec_iq2_xxs,
               [ES_TYPE_IQ2_XS] = es_matvec_iq2_xs, [ES_TYPE_IQ2_S] = es_matvec_iq2_s,
               [ES_TYPE_IQ3_XXS] = es_matvec_iq3_xxs, [ES_TYPE_IQ3_S] = es_matvec_iq3_s,
               [ES_TYPE_IQ1_S] = es_matvec_iq1_s, [ES_TYPE_IQ1_M] = es_matvec_iq1_m,
               [ES_TYPE_TQ1_0] = es_matvec_tq1_0, [ES_TYPE_TQ2_0] = es_matvec_tq2_0,
               [ES_TYPE_Q2_K] = es_matvec_q2_K, [ES_TYPE_Q3_K] = es_matvec_q3_K, [ES_TYPE_Q4_K] = es_matvec_q4_K,
               [ES_TYPE_Q5_K] = es_matvec_q5_K, [ES_TYPE_Q6_K] = es_matvec_q6_K,
               [ES_TYPE_FP8_B128] = es_fp8_matvec_generic},
    .dequant_row = {[ES_TYPE_F32] = dequant_f32, [ES_TYPE_F16] = dequant_f16, [ES_TYPE_BF16] = dequant_bf16,
                    [ES_TYPE_Q8_0] = dequant_q8_0, [ES_TYPE_Q4_0] = dequant_q4_0,
                    [ES_TYPE_Q4_1] = dequant_q4_1, [ES_TYPE_Q5_0] = dequant_q5_0, [ES_TYPE_Q5_1] = dequant_q5_1,
                    [ES_TYPE_IQ4_NL] = dequant_iq4_nl, [ES_TYPE_IQ4_XS] = es_dequant_iq4_xs,
                    [ES_TYPE_IQ2_XXS] = es_dequant_iq2_xxs, [ES_TYPE_IQ2_XS] = es_dequant_iq2_xs,
                    [ES_TYPE_IQ2_S] = es_dequant_iq2_s, [ES_TYPE_IQ3_XXS] = es_dequant_iq3_xxs,
                    [ES_TYPE_IQ3_S] = es_dequant_iq3_s, [ES_TYPE_IQ1_S] = es_dequant_iq1_s,
                    [ES_TYPE_IQ1_M] = es_dequant_iq1_m, [ES_TYPE_TQ1_0] = es_dequant_tq1_0,
                    [ES_TYPE_TQ2_0] = es_dequant_tq2_0,
                    [ES_TYPE_Q2_K] = es_dequant_q2_K, [ES_TYPE_Q3_K] = es_dequant_q3_K, [ES_TYPE_Q4_K] = es_dequant_q4_K,
                    [ES_TYPE_Q5_K] = es_dequant_q5_K, [ES_TYPE_Q6_K] = es_dequant_q6_K, [ES_TYPE_Q8_K] = es_dequant_q8_K},
    .quant_row = {[ES_TYPE_F32] = quant_f32, [ES_TYPE_F16] = quant_f16, [ES_TYPE_BF16] = quant_bf16,
                  [ES_TYPE_Q8_0] = quant_q8_0, [ES_TYPE_Q4_0] = quant_q4_0,
                  [ES_TYPE_Q4_1] = quant_q4_1, [ES_TYPE_Q5_0] = quant_q5_0, [ES_TYPE_Q5_1] = quant_q5_1,
                  [ES_TYPE_IQ4_NL] = quant_iq4_nl, [ES_TYPE_IQ4_XS] = es_quant_iq4_xs,
                  [ES_TYPE_Q2_K] = es_quant_q2_K, [ES_TYPE_Q3_K] = es_quant_q3_K, [ES_TYPE_Q4_K] = es_quant_q4_K,
                  [ES_TYPE_Q5_K] = es_quant_q5_K, [ES_TYPE_Q6_K] = es_quant_q6_K, [ES_TYPE_Q8_K] = es_quant_q8_K},
    .rmsnorm = rmsnorm_generic,
    .dot_f32 = dot_generic,
    .axpy_f32 = axpy_generic,
    .silu_mul = silu_mul_generic,
    .softmax = softmax_generic,
    .dot_kv = {[ES_TYPE_F16] = dot_kv_f16, [ES_TYPE_BF16] = dot_kv_bf16, [ES_TYPE_Q8_0] = dot_kv_q8_0},
    .axpy_kv = {[ES_TYPE_F16] = axpy_kv_f16, [ES_TYPE_BF16] = axpy_kv_bf16, [ES_TYPE_Q8_0] = axpy_kv_q8_0},
};
