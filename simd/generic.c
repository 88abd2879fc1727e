/* generic.c — the scalar reference kernels: every slot of the kernel table,
 * written plainly.  Per-ISA files must agree with these (tests compare them).
 * Accumulation is in fp32, block by block, as the quantised formats are
 * defined; the block layouts are in quant.h. */
#include "kernels.h"
#include "generic_kquants.h"

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

const es_kernels es_kernels_generic = {
    .name = "generic",
    .matvec = {[ES_TYPE_F32] = matvec_f32, [ES_TYPE_F16] = matvec_f16, [ES_TYPE_BF16] = matvec_bf16,
               [ES_TYPE_Q8_0] = matvec_q8_0, [ES_TYPE_Q4_0] = matvec_q4_0,
               [ES_TYPE_Q2_K] = es_matvec_q2_K, [ES_TYPE_Q3_K] = es_matvec_q3_K, [ES_TYPE_Q4_K] = es_matvec_q4_K,
               [ES_TYPE_Q5_K] = es_matvec_q5_K, [ES_TYPE_Q6_K] = es_matvec_q6_K},
    .dequant_row = {[ES_TYPE_F32] = dequant_f32, [ES_TYPE_F16] = dequant_f16, [ES_TYPE_BF16] = dequant_bf16,
                    [ES_TYPE_Q8_0] = dequant_q8_0, [ES_TYPE_Q4_0] = dequant_q4_0,
                    [ES_TYPE_Q2_K] = es_dequant_q2_K, [ES_TYPE_Q3_K] = es_dequant_q3_K, [ES_TYPE_Q4_K] = es_dequant_q4_K,
                    [ES_TYPE_Q5_K] = es_dequant_q5_K, [ES_TYPE_Q6_K] = es_dequant_q6_K, [ES_TYPE_Q8_K] = es_dequant_q8_K},
    .quant_row = {[ES_TYPE_F32] = quant_f32, [ES_TYPE_F16] = quant_f16, [ES_TYPE_BF16] = quant_bf16,
                  [ES_TYPE_Q8_0] = quant_q8_0, [ES_TYPE_Q4_0] = quant_q4_0,
                  [ES_TYPE_Q2_K] = es_quant_q2_K, [ES_TYPE_Q3_K] = es_quant_q3_K, [ES_TYPE_Q4_K] = es_quant_q4_K,
                  [ES_TYPE_Q5_K] = es_quant_q5_K, [ES_TYPE_Q6_K] = es_quant_q6_K, [ES_TYPE_Q8_K] = es_quant_q8_K},
    .rmsnorm = rmsnorm_generic,
    .dot_f32 = dot_generic,
    .axpy_f32 = axpy_generic,
    .silu_mul = silu_mul_generic,
    .softmax = softmax_generic,
};
