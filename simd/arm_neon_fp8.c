/* arm_neon_fp8.c — FP8_B128 matvec and matmul with NEON (fp8.h says the
 * shape): eight e4m3 bytes at a time widened to 16 bits, moved into fp16's
 * fields, converted with fcvtl; fp32 activations.  Armv8.0: no extension. */
#include "fp8.h"

#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>

static inline void decode_neon(const uint8_t *q, float *dst, int len) {
    const uint16x8_t sign = vdupq_n_u16(0x80), mag = vdupq_n_u16(0x7f);
    int j = 0;
    for (; j + 8 <= len; j += 8) {
        uint16x8_t b = vmovl_u8(vld1_u8(q + j));
        uint16x8_t h = vorrq_u16(vshlq_n_u16(vandq_u16(b, sign), 8), vshlq_n_u16(vandq_u16(b, mag), 7));
        float16x8_t f = vreinterpretq_f16_u16(h);
        vst1q_f32(dst + j, vcvt_f32_f16(vget_low_f16(f)));
        vst1q_f32(dst + j + 4, vcvt_high_f32_f16(f));
    }
    for (; j < len; j++) dst[j] = es_fp16_to_f32(es_fp8_to_fp16_scaled(q[j]));
}

static inline float blockdot_neon(const float *d, const float *x, int len) {
    float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0);
    int j = 0;
    for (; j + 8 <= len; j += 8) {
        a0 = vfmaq_f32(a0, vld1q_f32(d + j), vld1q_f32(x + j));
        a1 = vfmaq_f32(a1, vld1q_f32(d + j + 4), vld1q_f32(x + j + 4));
    }
    float r = vaddvq_f32(vaddq_f32(a0, a1));
    for (; j < len; j++) r += d[j] * x[j];
    return r;
}

ES_FP8_ROWS_TEMPLATE(neon, decode_neon, blockdot_neon)

#endif
