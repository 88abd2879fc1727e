/* arm_neon.c — kernels for aarch64 NEON (dotprod and i8mm where the build
 * enables them).  Empty slots fall back to generic.c. */
#include "kernels.h"

#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>

static float dot_neon(const float *a, const float *b, int64_t n) {
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static const es_kernels table = {
    .name = "neon",
    .dot_f32 = dot_neon,
};
const es_kernels *const es_kernels_neon = &table;
#else
const es_kernels *const es_kernels_neon = 0;
#endif
