/* arm_neon_fp8.c — FP8_B128 matvec and matmul with NEON (fp8.h), fused
 * (the weights decoded in registers, never stored as floats): eight e4m3 bytes at
 * a time widened to 16 bits, moved into fp16's fields, converted with fcvtl
 * in registers and multiplied into the fp32 activations; a block's products
 * summed in one vector, added into the row's sum times the block's scale *
 * 256.  The matvec takes 4 rows a pass from the quarters of its range, the
 * matmul 2 rows for 4 tokens over rows blocked to stay in L2; both give the
 * same bits.  Armv8.0: no extension. */
#include "fp8.h"

#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#include <string.h>

/* 8 weights / 256 from 8 bytes, as two vectors of 4 */
static inline void dec8(const uint8_t *q, float32x4_t *w0, float32x4_t *w1) {
    int16x8_t x = vreinterpretq_s16_u16(vshlq_n_u16(vmovl_u8(vld1_u8(q)), 8));
    uint16x8_t h = vandq_u16(vreinterpretq_u16_s16(vshrq_n_s16(x, 1)), vdupq_n_u16(0xBF80));
    float16x8_t f = vreinterpretq_f16_u16(h);
    *w0 = vcvt_f32_f16(vget_low_f16(f));
    *w1 = vcvt_high_f32_f16(f);
}

/* R rows against T tokens: (row k, token t) into y[t * ys + yi[k]] */
static inline __attribute__((always_inline)) void tile(int R, int T, int pf, const uint8_t *const *q, const float *const *sc,
                                                       int64_t n, const float *const *x, float *y, int64_t ys,
                                                       const int64_t *yi) {
    (void)pf; /* no prefetch: the cores' prefetchers follow the 4 streams */
    float32x4_t acc[4][4], ba[4][4];
    for (int k = 0; k < R; k++)
        for (int t = 0; t < T; t++) acc[k][t] = vdupq_n_f32(0);
    for (int64_t c0 = 0, b = 0; c0 < n; c0 += ES_FP8_BLOCK, b++) {
        const int len = (int)(n - c0 < ES_FP8_BLOCK ? n - c0 : ES_FP8_BLOCK);
        for (int k = 0; k < R; k++)
            for (int t = 0; t < T; t++) ba[k][t] = vdupq_n_f32(0);
        for (int j = 0; j < len; j += 8) {
            const int m = len - j;
            float32x4_t w[4][2];
            for (int k = 0; k < R; k++) {
                if (m >= 8) {
                    dec8(q[k] + c0 + j, &w[k][0], &w[k][1]);
                } else { /* the block's last m < 8 columns, zeros past them */
                    uint8_t bb[8] = {0};
                    memcpy(bb, q[k] + c0 + j, (size_t)m);
                    dec8(bb, &w[k][0], &w[k][1]);
                }
            }
            for (int t = 0; t < T; t++) {
                float32x4_t x0, x1;
                if (m >= 8) {
                    x0 = vld1q_f32(x[t] + c0 + j), x1 = vld1q_f32(x[t] + c0 + j + 4);
                } else {
                    float v[8] = {0};
                    memcpy(v, x[t] + c0 + j, sizeof(float) * (size_t)m);
                    x0 = vld1q_f32(v), x1 = vld1q_f32(v + 4);
                }
                for (int k = 0; k < R; k++) ba[k][t] = vfmaq_f32(vfmaq_f32(ba[k][t], w[k][0], x0), w[k][1], x1);
            }
        }
        for (int k = 0; k < R; k++) {
            const float32x4_t s = vdupq_n_f32(sc[k][b] * 256.0f);
            for (int t = 0; t < T; t++) acc[k][t] = vfmaq_f32(acc[k][t], ba[k][t], s);
        }
    }
    for (int k = 0; k < R; k++)
        for (int t = 0; t < T; t++) y[t * ys + yi[k]] = vaddvq_f32(acc[k][t]);
}

ES_FP8_DRIVERS(neon)

void es_fp8_matmul_neon(const void *w, size_t row_bytes, int64_t n, const void *act, size_t act_stride,
                        int64_t n_tok, float *y, int64_t y_stride, int64_t r0, int64_t r1) {
    (void)row_bytes;
    const es_fp8_mat *m = w;
    const int64_t rb = es_fp8_row_block(n);
    for (int64_t b0 = r0; b0 < r1; b0 += rb) {
        const int64_t b1 = b0 + rb < r1 ? b0 + rb : r1;
        for (int64_t t0 = 0; t0 < n_tok; t0 += 4) {
            const int64_t nt = n_tok - t0;
            for (int64_t r = b0; r < b1; r += 2) {
                const int R = r + 2 <= b1 ? 2 : 1;
                if (nt >= 4) {
                    if (R == 2) mm_tile(2, 4, m, n, act, act_stride, t0, y, y_stride, r);
                    else mm_tile(1, 4, m, n, act, act_stride, t0, y, y_stride, r);
                } else {
                    for (int64_t t = t0; t < n_tok; t++) mm_tile(R == 2 ? 2 : 1, 1, m, n, act, act_stride, t, y, y_stride, r);
                }
            }
        }
    }
}

#endif
