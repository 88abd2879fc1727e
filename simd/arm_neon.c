/* arm_neon.c — kernels for aarch64 NEON.  This file owns the "neon" table
 * in its three variants, chosen at run time by es_neon_for() from the HWCAP
 * bits dispatch.c reads:
 *   baseline  armv8.0-a Advanced SIMD only (Raspberry Pi 4, Cortex-A72);
 *   dotprod   8-bit block products with SDOT (armv8.2-a+dotprod);
 *   i8mm      as dotprod, and prefill products of two rows by two tokens
 *             with SMMLA (armv8.6 i8mm).
 * The file is compiled with no -march flag, so everything outside the
 * functions marked with a target attribute runs on any armv8.0-a core.
 *
 * Slots: matvec and matmul of F32, F16, BF16 (widened to fp32, FMA against
 * fp32 activations), Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL (against
 * activations quantised to Q8_0 once per product, the act_type) and
 * Q2_K..Q6_K, IQ4_XS, the IQ codebook formats IQ1_S..IQ3_S, TQ1_0 and TQ2_0
 * (against Q8_K), in 8-bit integer arithmetic as
 * x86_avx2.c does; the Q8_0 quantiser and the dequantisers of the 32-weight
 * formats, bit-identical to generic.c; rmsnorm,
 * dot, axpy, silu_mul and softmax (with a vector exp).  For each format the
 * three variants, and matvec and matmul, give the same floats bit for bit
 * (see the 8-bit sections), so a prefill gives exactly the logits of
 * token-by-token decoding on every Arm CPU.  Slots left empty fall back to
 * generic.c. */
#include "kernels.h"

#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "iq_grids.h"
#include "fp8.h"

#define AI __attribute__((always_inline))
#define TARGET_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#define TARGET_I8MM __attribute__((target("arch=armv8.2-a+dotprod+i8mm")))

/* fp16 -> fp32 with the FCVT every aarch64 core has (exact, as
 * es_fp16_to_f32) */
static inline AI float h2f(es_fp16 h) {
    __fp16 f;
    memcpy(&f, &h, sizeof f);
    return (float)f;
}

/* ---- float weights ---------------------------------------------------------- */

enum float_fmt { FMT_F32, FMT_F16, FMT_BF16 };

/* 4 values of a row from position i, converted to fp32 (exactly) */
static inline AI float32x4_t load4(enum float_fmt f, const void *p, int64_t i) {
    if (f == FMT_F32) return vld1q_f32((const float *)p + i);
    uint16x4_t h = vld1_u16((const uint16_t *)p + i);
    if (f == FMT_F16) return vcvt_f32_f16(vreinterpret_f16_u16(h));
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16)); /* bf16 is the top half of an fp32 */
}

static inline AI float load1(enum float_fmt f, const void *p, int64_t i) {
    if (f == FMT_F32) return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    return f == FMT_F16 ? h2f(h) : es_bf16_to_f32(h);
}

/* dot(row, x[k]) for nt (1 or 4, constant) tokens: each row is converted
 * once for all of them.  Per token, 4 independent accumulators (16 values a
 * step) hide the FMA latency, and a scalar tail handles ragged n.  Every
 * token sees the same sequence of operations whatever nt is, so a prefill
 * gives bit for bit the logits of token-by-token decoding. */
static inline AI void row_dots(enum float_fmt f, int nt, const void *row, const float *const *x, int64_t n,
                               float *out) {
    float32x4_t acc[4][4];
#pragma GCC unroll 4
    for (int k = 0; k < nt; k++)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) acc[k][j] = vdupq_n_f32(0);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            float32x4_t wv = load4(f, row, i + 4 * j);
#pragma GCC unroll 4
            for (int k = 0; k < nt; k++) acc[k][j] = vfmaq_f32(acc[k][j], wv, vld1q_f32(x[k] + i + 4 * j));
        }
    for (; i + 4 <= n; i += 4) {
        float32x4_t wv = load4(f, row, i);
#pragma GCC unroll 4
        for (int k = 0; k < nt; k++) acc[k][0] = vfmaq_f32(acc[k][0], wv, vld1q_f32(x[k] + i));
    }
#pragma GCC unroll 4
    for (int k = 0; k < nt; k++) {
        float s = vaddvq_f32(vaddq_f32(vaddq_f32(acc[k][0], acc[k][1]), vaddq_f32(acc[k][2], acc[k][3])));
        for (int64_t j = i; j < n; j++) s += load1(f, row, j) * x[k][j];
        out[k] = s;
    }
}

/* Y[t][r] for t < n_tok, r in [r0, r1): tokens four at a time, then one by
 * one; a matrix-vector product is the case n_tok = 1. */
static inline AI void matmul_float(enum float_fmt f, const void *w, size_t rb, int64_t n, const void *act,
                                   size_t as, int64_t n_tok, float *y, int64_t ys, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const void *row = (const char *)w + (size_t)r * rb;
        int64_t t = 0;
        for (; t + 4 <= n_tok; t += 4) {
            const float *x[4];
            float out[4];
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) x[k] = (const float *)((const char *)act + (size_t)(t + k) * as);
            row_dots(f, 4, row, x, n, out);
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) y[(t + k) * ys + r] = out[k];
        }
        for (; t < n_tok; t++) {
            const float *x = (const float *)((const char *)act + (size_t)t * as);
            row_dots(f, 1, row, &x, n, y + t * ys + r);
        }
    }
}

static inline AI void matvec_float(enum float_fmt f, const void *w, size_t rb, int64_t n, const float *x, float *y,
                                   int64_t r0, int64_t r1) {
    matmul_float(f, w, rb, n, x, 0, 1, y, 0, r0, r1);
}

static void matvec_f32(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matvec_float(FMT_F32, w, rb, n, act, y, r0, r1);
}
static void matvec_f16(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matvec_float(FMT_F16, w, rb, n, act, y, r0, r1);
}
static void matvec_bf16(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matvec_float(FMT_BF16, w, rb, n, act, y, r0, r1);
}
static void matmul_f32(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                       int64_t ys, int64_t r0, int64_t r1) {
    matmul_float(FMT_F32, w, rb, n, act, as, nt, y, ys, r0, r1);
}
static void matmul_f16(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                       int64_t ys, int64_t r0, int64_t r1) {
    matmul_float(FMT_F16, w, rb, n, act, as, nt, y, ys, r0, r1);
}
static void matmul_bf16(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                        int64_t ys, int64_t r0, int64_t r1) {
    matmul_float(FMT_BF16, w, rb, n, act, as, nt, y, ys, r0, r1);
}

/* ---- 8-bit block formats against Q8_0 activations ------------------------- */

/* Every variant and tile shape below computes the same thing the same way,
 * so that the baseline, dotprod and i8mm tables, matrix-vector and prefill
 * products all agree bit for bit (a prefill then gives exactly the logits
 * of token-by-token decoding; with 8-bit activations any rounding
 * difference would otherwise grow when the next layer re-quantises):
 *     y = Σ over blocks i, in order, of fma(sum_i, dw_i·da_i) in fp32,
 * from 0, where sum_i = Σ w·a over the block is an exact int32 (at most
 * 32·128·127 in magnitude, so its conversion to fp32 is exact too).  Tiles
 * keep one (row, token) per lane. */

/* The formats of 32-weight blocks against Q8_0 activations (0 and 1 are
 * what the Q8_0/Q4_0 code passes as its flag).  Q4_1/Q5_1 add m·d_a·Σa per
 * block after the product (block_mins). */
enum bfmt { BQ8_0 = 0, BQ4_0 = 1, BQ4_1, BQ5_0, BQ5_1, BIQ4NL };

static inline AI size_t block_bytes(enum bfmt f) {
    switch (f) {
    case BQ8_0: return sizeof(block_q8_0);
    case BQ4_1: return sizeof(block_q4_1);
    case BQ5_0: return sizeof(block_q5_0);
    case BQ5_1: return sizeof(block_q5_1);
    default: return sizeof(block_q4_0); /* and IQ4_NL's: 18 bytes */
    }
}
static inline AI int block_affine(enum bfmt f) { return f == BQ4_1 || f == BQ5_1; }

/* The 32 signed weights of a block, in order. */
typedef struct { int8x16_t lo, hi; } wblock;

/* Q5's fifth bit for 16 weights from 2 bytes of qh (weight j: bit j % 8 of
 * qh[j / 8]), as 16 where set */
static inline AI uint8x16_t bit5_16(const uint8_t *qh) {
    const uint8x16_t m = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    uint8x16_t v = vcombine_u8(vdup_n_u8(qh[0]), vdup_n_u8(qh[1]));
    return vandq_u8(vtstq_u8(v, m), vdupq_n_u8(0x10));
}

static inline AI wblock block_weights(enum bfmt f, const void *row, int64_t i) {
    wblock b;
    const char *blk = (const char *)row + (size_t)i * block_bytes(f);
    if (f == BQ8_0) {
        const int8_t *q = ((const block_q8_0 *)blk)->qs;
        b.lo = vld1q_s8(q);
        b.hi = vld1q_s8(q + 16);
        return b;
    }
    const uint8_t *qs = f == BQ4_1 ? ((const block_q4_1 *)blk)->qs : f == BQ5_0 ? ((const block_q5_0 *)blk)->qs
                        : f == BQ5_1 ? ((const block_q5_1 *)blk)->qs : ((const block_q4_0 *)blk)->qs;
    uint8x16_t v = vld1q_u8(qs); /* low nibbles: weights 0..15, high: 16..31 */
    uint8x16_t lo = vandq_u8(v, vdupq_n_u8(0x0f)), hi = vshrq_n_u8(v, 4);
    if (f == BQ5_0 || f == BQ5_1) {
        const uint8_t *qh = f == BQ5_0 ? ((const block_q5_0 *)blk)->qh : ((const block_q5_1 *)blk)->qh;
        lo = vorrq_u8(lo, bit5_16(qh));
        hi = vorrq_u8(hi, bit5_16(qh + 2));
    }
    if (f == BIQ4NL) {
        const int8x16_t t = vld1q_s8(es_iq4nl_values);
        b.lo = vqtbl1q_s8(t, lo);
        b.hi = vqtbl1q_s8(t, hi);
        return b;
    }
    int off = f == BQ4_0 ? 8 : f == BQ5_0 ? 16 : 0;
    b.lo = vsubq_s8(vreinterpretq_s8_u8(lo), vdupq_n_s8((int8_t)off));
    b.hi = vsubq_s8(vreinterpretq_s8_u8(hi), vdupq_n_s8((int8_t)off));
    return b;
}

/* d is every format's first field; m follows it in Q4_1/Q5_1 */
static inline AI es_fp16 block_scale(enum bfmt f, const void *row, int64_t i) {
    es_fp16 d;
    memcpy(&d, (const char *)row + (size_t)i * block_bytes(f), 2);
    return d;
}
static inline AI es_fp16 block_min(enum bfmt f, const void *row, int64_t i) {
    es_fp16 m;
    memcpy(&m, (const char *)row + (size_t)i * block_bytes(f) + 2, 2);
    return m;
}

/* acc + Σ w·a over 16 signed bytes, in 4 int32 lanes (which products land
 * in which lane does not matter: only integer totals are used).  Every
 * 8-bit kernel body takes one of these as a constant argument, so that the
 * always_inline body is specialised per instruction set: a plain flag would
 * put SDOT inside a function compiled for armv8.0, which GCC refuses to
 * inline; a constant function pointer is resolved, and its target checked,
 * only where the body lands. */
typedef int32x4_t (*dot_acc_fn)(int32x4_t acc, int8x16_t w, int8x16_t a);

/* armv8.0: widening multiplies.  Two products share an int16 lane before
 * the pairwise add to int32: |w| <= 128 and |a| <= 127 (8-bit activations
 * are rounded from at most 127 steps), so a pair is at most 32512. */
static inline AI int32x4_t dot_acc_neon(int32x4_t acc, int8x16_t w, int8x16_t a) {
    return vpadalq_s16(acc, vmlal_high_s8(vmull_s8(vget_low_s8(w), vget_low_s8(a)), w, a));
}

static inline AI TARGET_DOTPROD int32x4_t dot_acc_sdot(int32x4_t acc, int8x16_t w, int8x16_t a) {
    return vdotq_s32(acc, w, a);
}

/* Σ w·a over a 32-value block */
static inline AI int32x4_t block_dot(dot_acc_fn dot, wblock w, int8x16_t a0, int8x16_t a1) {
    return dot(dot(vdupq_n_s32(0), w.lo, a0), w.hi, a1);
}

/* Four rows (the lanes of acc[k]) against nt (1 or 4, constant) tokens
 * a[k]: each weight block is unpacked once for all the tokens.  Q4_1/Q5_1
 * then add fma(Σa, m·d_a) per block, Σa an exact int32 from the same dot. */
static inline AI void rows4_dots(dot_acc_fn dot, enum bfmt is_q4, int nt, const void *const *row,
                                 const block_q8_0 *const *a, int64_t nb, float32x4_t *acc) {
#pragma GCC unroll 4
    for (int k = 0; k < nt; k++) acc[k] = vdupq_n_f32(0);
    for (int64_t i = 0; i < nb; i++) {
        wblock w[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) w[j] = block_weights(is_q4, row[j], i);
        uint16x4_t h = {block_scale(is_q4, row[0], i), block_scale(is_q4, row[1], i), block_scale(is_q4, row[2], i),
                        block_scale(is_q4, row[3], i)};
        float32x4_t dw = vcvt_f32_f16(vreinterpret_f16_u16(h));
#pragma GCC unroll 4
        for (int k = 0; k < nt; k++) {
            int8x16_t a0 = vld1q_s8(a[k][i].qs), a1 = vld1q_s8(a[k][i].qs + 16);
            int32x4_t s = vpaddq_s32(vpaddq_s32(block_dot(dot, w[0], a0, a1), block_dot(dot, w[1], a0, a1)),
                                     vpaddq_s32(block_dot(dot, w[2], a0, a1), block_dot(dot, w[3], a0, a1)));
            acc[k] = vfmaq_f32(acc[k], vcvtq_f32_s32(s), vmulq_n_f32(dw, h2f(a[k][i].d)));
            if (block_affine(is_q4)) {
                const wblock ones = {vdupq_n_s8(1), vdupq_n_s8(1)};
                uint16x4_t mh = {block_min(is_q4, row[0], i), block_min(is_q4, row[1], i),
                                 block_min(is_q4, row[2], i), block_min(is_q4, row[3], i)};
                float32x4_t mw = vcvt_f32_f16(vreinterpret_f16_u16(mh));
                float sa = (float)vaddvq_s32(block_dot(dot, ones, a0, a1));
                acc[k] = vfmaq_f32(acc[k], vdupq_n_f32(sa), vmulq_n_f32(mw, h2f(a[k][i].d)));
            }
        }
    }
}

/* Y[t][r] for t < n_tok, r in [r0, r1): rows four at a time (a short last
 * group repeats its last row and stores only the real ones), tokens four at
 * a time then one by one.  A matrix-vector product is n_tok = 1. */
static inline AI void matmul_q8act(dot_acc_fn dot, enum bfmt is_q4, const void *w, size_t rb, int64_t n, const void *act,
                                   size_t as, int64_t n_tok, float *y, int64_t ys, int64_t r0, int64_t r1) {
    const int64_t nb = n / 32;
    for (int64_t r = r0; r < r1; r += 4) {
        const void *row[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) row[j] = (const char *)w + (size_t)(r + j < r1 ? r + j : r1 - 1) * rb;
        int nr = r1 - r < 4 ? (int)(r1 - r) : 4;
        for (int64_t t = 0; t < n_tok;) {
            int nt = n_tok - t >= 4 ? 4 : 1;
            const block_q8_0 *a[4];
            float32x4_t acc[4];
#pragma GCC unroll 4
            for (int k = 0; k < nt; k++) a[k] = (const block_q8_0 *)((const char *)act + (size_t)(t + k) * as);
            if (nt == 4) rows4_dots(dot, is_q4, 4, row, a, nb, acc);
            else rows4_dots(dot, is_q4, 1, row, a, nb, acc);
#pragma GCC unroll 4
            for (int k = 0; k < nt; k++) {
                float *yk = y + (t + k) * ys + r;
                if (nr == 4) {
                    vst1q_f32(yk, acc[k]);
                } else {
                    float out[4];
                    vst1q_f32(out, acc[k]);
                    for (int j = 0; j < nr; j++) yk[j] = out[j];
                }
            }
            t += nt;
        }
    }
}

static void matvec_q8_0(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matmul_q8act(dot_acc_neon, 0, w, rb, n, act, 0, 1, y, 0, r0, r1);
}
static void matvec_q4_0(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matmul_q8act(dot_acc_neon, 1, w, rb, n, act, 0, 1, y, 0, r0, r1);
}
static void matmul_q8_0(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                        int64_t ys, int64_t r0, int64_t r1) {
    matmul_q8act(dot_acc_neon, 0, w, rb, n, act, as, nt, y, ys, r0, r1);
}
static void matmul_q4_0(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                        int64_t ys, int64_t r0, int64_t r1) {
    matmul_q8act(dot_acc_neon, 1, w, rb, n, act, as, nt, y, ys, r0, r1);
}

static TARGET_DOTPROD void matvec_q8_0_dp(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0,
                                          int64_t r1) {
    matmul_q8act(dot_acc_sdot, 0, w, rb, n, act, 0, 1, y, 0, r0, r1);
}
static TARGET_DOTPROD void matvec_q4_0_dp(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0,
                                          int64_t r1) {
    matmul_q8act(dot_acc_sdot, 1, w, rb, n, act, 0, 1, y, 0, r0, r1);
}
static TARGET_DOTPROD void matmul_q8_0_dp(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt,
                                          float *y, int64_t ys, int64_t r0, int64_t r1) {
    matmul_q8act(dot_acc_sdot, 0, w, rb, n, act, as, nt, y, ys, r0, r1);
}
static TARGET_DOTPROD void matmul_q4_0_dp(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt,
                                          float *y, int64_t ys, int64_t r0, int64_t r1) {
    matmul_q8act(dot_acc_sdot, 1, w, rb, n, act, as, nt, y, ys, r0, r1);
}

/* The four slots of an 8-bit format (matvec, matmul; armv8.0 and dotprod)
 * through CALL(dot, F, w, rb, n, act, as, nt, y, ys, r0, r1) */
#define NEON_8BIT_SLOTS(name, CALL, F)                                                                            \
    static void matvec_##name(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0,      \
                              int64_t r1) {                                                                   \
        CALL(dot_acc_neon, F, w, rb, n, act, 0, 1, y, 0, r0, r1);                                             \
    }                                                                                                         \
    static void matmul_##name(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt,     \
                              float *y, int64_t ys, int64_t r0, int64_t r1) {                                 \
        CALL(dot_acc_neon, F, w, rb, n, act, as, nt, y, ys, r0, r1);                                          \
    }                                                                                                         \
    static TARGET_DOTPROD void matvec_##name##_dp(const void *w, size_t rb, int64_t n, const void *act, float *y, \
                                                  int64_t r0, int64_t r1) {                                   \
        CALL(dot_acc_sdot, F, w, rb, n, act, 0, 1, y, 0, r0, r1);                                             \
    }                                                                                                         \
    static TARGET_DOTPROD void matmul_##name##_dp(const void *w, size_t rb, int64_t n, const void *act,        \
                                                  size_t as, int64_t nt, float *y, int64_t ys, int64_t r0,     \
                                                  int64_t r1) {                                               \
        CALL(dot_acc_sdot, F, w, rb, n, act, as, nt, y, ys, r0, r1);                                          \
    }

/* Q4_1, Q5_0, Q5_1, IQ4_NL: matvec and matmul, armv8.0 and dotprod */
NEON_8BIT_SLOTS(q4_1, matmul_q8act, BQ4_1)
NEON_8BIT_SLOTS(q5_0, matmul_q8act, BQ5_0)
NEON_8BIT_SLOTS(q5_1, matmul_q8act, BQ5_1)
NEON_8BIT_SLOTS(iq4_nl, matmul_q8act, BIQ4NL)

/* i8mm: SMMLA multiplies a 2x8 by an 8x2 int8 matrix into 2x2 int32, so
 * one instruction does 8 values of two rows against two tokens.  A 32-value
 * block takes four: the operands pair the same 8 values of rows r, r+1 (and
 * of tokens t, t+1) in the two 64-bit halves of a register.  The lanes hold
 * (r,t) (r,t+1) (r+1,t) (r+1,t+1). */

/* the first (second) 8 bytes of a, then those of b */
static inline AI int8x16_t zip_lo64(int8x16_t a, int8x16_t b) {
    return vreinterpretq_s8_s64(vzip1q_s64(vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b)));
}
static inline AI int8x16_t zip_hi64(int8x16_t a, int8x16_t b) {
    return vreinterpretq_s8_s64(vzip2q_s64(vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b)));
}

/* rows w0, w1 against tokens (a00 a01), (a10 a11) */
static inline AI TARGET_I8MM int32x4_t pair_dot_smmla(wblock w0, wblock w1, int8x16_t a00, int8x16_t a01,
                                                      int8x16_t a10, int8x16_t a11) {
    int32x4_t s = vmmlaq_s32(vdupq_n_s32(0), zip_lo64(w0.lo, w1.lo), zip_lo64(a00, a10));
    s = vmmlaq_s32(s, zip_hi64(w0.lo, w1.lo), zip_hi64(a00, a10));
    s = vmmlaq_s32(s, zip_lo64(w0.hi, w1.hi), zip_lo64(a01, a11));
    return vmmlaq_s32(s, zip_hi64(w0.hi, w1.hi), zip_hi64(a01, a11));
}

/* Pairs of rows by pairs of tokens; a row or token left over goes through
 * the dotprod kernel, which computes the same values. */
static inline AI TARGET_I8MM void matmul_q8act_i8mm(int is_q4, const void *w, size_t rb, int64_t n, const void *act,
                                                    size_t as, int64_t n_tok, float *y, int64_t ys, int64_t r0,
                                                    int64_t r1) {
    const int64_t nb = n / 32;
    int64_t t = 0, r_end = r0 + (r1 - r0) / 2 * 2;
    for (; t + 2 <= n_tok; t += 2) {
        const block_q8_0 *a0 = (const block_q8_0 *)((const char *)act + (size_t)t * as);
        const block_q8_0 *a1 = (const block_q8_0 *)((const char *)act + (size_t)(t + 1) * as);
        for (int64_t r = r0; r < r_end; r += 2) {
            const void *row0 = (const char *)w + (size_t)r * rb, *row1 = (const char *)row0 + rb;
            float32x4_t acc = vdupq_n_f32(0);
            for (int64_t i = 0; i < nb; i++) {
                int32x4_t s = pair_dot_smmla(block_weights(is_q4, row0, i), block_weights(is_q4, row1, i),
                                             vld1q_s8(a0[i].qs), vld1q_s8(a0[i].qs + 16), vld1q_s8(a1[i].qs),
                                             vld1q_s8(a1[i].qs + 16));
                float dw0 = h2f(block_scale(is_q4, row0, i)), dw1 = h2f(block_scale(is_q4, row1, i));
                float da0 = h2f(a0[i].d), da1 = h2f(a1[i].d);
                float32x4_t d = {dw0 * da0, dw0 * da1, dw1 * da0, dw1 * da1};
                acc = vfmaq_f32(acc, vcvtq_f32_s32(s), d);
            }
            y[t * ys + r] = vgetq_lane_f32(acc, 0);
            y[(t + 1) * ys + r] = vgetq_lane_f32(acc, 1);
            y[t * ys + r + 1] = vgetq_lane_f32(acc, 2);
            y[(t + 1) * ys + r + 1] = vgetq_lane_f32(acc, 3);
        }
    }
    /* the odd row for the paired tokens, then the odd token for all rows */
    if (r_end < r1) matmul_q8act(dot_acc_sdot, is_q4, w, rb, n, act, as, t, y, ys, r_end, r1);
    if (t < n_tok)
        matmul_q8act(dot_acc_sdot, is_q4, w, rb, n, (const char *)act + (size_t)t * as, as, n_tok - t,
                     y + t * ys, ys, r0, r1);
}

static TARGET_I8MM void matmul_q8_0_mm(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt,
                                       float *y, int64_t ys, int64_t r0, int64_t r1) {
    matmul_q8act_i8mm(0, w, rb, n, act, as, nt, y, ys, r0, r1);
}
static TARGET_I8MM void matmul_q4_0_mm(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt,
                                       float *y, int64_t ys, int64_t r0, int64_t r1) {
    matmul_q8act_i8mm(1, w, rb, n, act, as, nt, y, ys, r0, r1);
}

/* ---- K-quants against Q8_K activations -------------------------------------- */

/* Per super-block of 256 weights every format reduces to integers, as in
 * x86_kquants.h: the weights as signed bytes (the format's offset -4 or
 * -32 already subtracted), 16 pieces of 16 with an integer scale each (a
 * 32-weight sub-block's scale on both its pieces), and for Q2_K/Q4_K/Q5_K an
 * integer min per piece taken against the activation's bsums.  Per (row,
 * token) and super-block, in order:
 *     acc = fma(isum, d·xd, acc);  acc = fma(imin, -(dmin·xd), acc)
 * in fp32 from 0, isum = Σ sc·(q·a), imin = Σ m·bsum; this is the same for
 * every variant and tile, so they agree bit for bit.  The functions below
 * take the weight type f (ES_TYPE_Q2_K .. Q6_K) as a constant argument. */

/* v >> k per byte, k not necessarily a constant */
static inline AI uint8x16_t shr8(uint8x16_t v, int k) { return vshlq_u8(v, vdupq_n_s8((int8_t)-k)); }
/* bits k..k+width-1 of every byte, moved to bit `to` */
static inline AI uint8x16_t bits8(uint8x16_t v, int k, int width, int to) {
    return vshlq_u8(vandq_u8(shr8(v, k), vdupq_n_u8((uint8_t)((1 << width) - 1))), vdupq_n_s8((int8_t)to));
}
static inline AI int8x16_t minus8(uint8x16_t v, int off) {
    return vsubq_s8(vreinterpretq_s8_u8(v), vdupq_n_s8((int8_t)off));
}

/* One super-block decoded: q[p] holds weights 16p..16p+15 */
typedef struct kblock {
    int8x16_t q[16];
    int32_t sc[16];  /* scale of piece p */
    int16_t m[16];   /* min of piece p (formats with mins) */
    float d, dmin;
} kblock;

static inline AI int kq_has_min(uint32_t f) { return f == ES_TYPE_Q2_K || f == ES_TYPE_Q4_K || f == ES_TYPE_Q5_K; }

/* The IQ codebook formats, TQ1_0 and TQ2_0 in kblock's form: signed weights (the
 * grid magnitude with its sign, 8·(grid + shift) for IQ1, t - 1 for the ternary types),
 * the odd integer scale 2s + 1 per piece, and d times the format's power of
 * two (x86_iquants.h does the same on x86). */
static inline AI int iq_format(uint32_t f) {
    return f == ES_TYPE_IQ2_XXS || f == ES_TYPE_IQ2_XS || f == ES_TYPE_IQ2_S || f == ES_TYPE_IQ3_XXS ||
           f == ES_TYPE_IQ3_S || f == ES_TYPE_IQ1_S || f == ES_TYPE_IQ1_M || f == ES_TYPE_TQ1_0 || f == ES_TYPE_TQ2_0;
}
/* 16 magnitudes from two grid entries, negated where the 16 sign bits are set */
static inline AI int8x16_t iq_signed(uint64_t g0, uint64_t g1, uint8_t s0, uint8_t s1) {
    int8x16_t m = vreinterpretq_s8_u8(vcombine_u8(vcreate_u8(g0), vcreate_u8(g1)));
    static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    int8x16_t neg = vreinterpretq_s8_u8(vtstq_u8(vcombine_u8(vdup_n_u8(s0), vdup_n_u8(s1)), vld1q_u8(bit)));
    return vsubq_s8(veorq_s8(m, neg), neg);
}
static inline AI uint64_t iq3_pair(const uint32_t *grid, int i0, int i1) { return grid[i0] | (uint64_t)grid[i1] << 32; }
/* IQ1: 16 weights 8·g + shift from two grid entries (-1, 0, 1) and their shifts (+-1) */
static inline AI int8x16_t iq1_signed(int i0, int i1, int sh0, int sh1) {
    int8x16_t g = vreinterpretq_s8_u8(vcombine_u8(vcreate_u8(es_iq1s_grid[i0]), vcreate_u8(es_iq1s_grid[i1])));
    return vaddq_s8(vshlq_n_s8(g, 3), vcombine_s8(vdup_n_s8((int8_t)sh0), vdup_n_s8((int8_t)sh1)));
}

/* TQ1_0: t - 1 for the digits t = (q·3) >> 8 of bytes q: t = [q >= 86] +
 * [q >= 171], and t - 1 = ~(-t) */
static inline AI int8x16_t tq1_digits(uint8x16_t q) {
    uint8x16_t c = vaddq_u8(vcgeq_u8(q, vdupq_n_u8(86)), vcgeq_u8(q, vdupq_n_u8(171)));
    return vreinterpretq_s8_u8(vmvnq_u8(c));
}

static inline AI void iq_decode(uint32_t f, const uint8_t *blk, kblock *k) {
    k->dmin = 0;
    if (f == ES_TYPE_IQ2_XXS) {
        const block_iq2_xxs *b = (const block_iq2_xxs *)blk;
        k->d = h2f(b->d) * 0.125f;
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            const uint8_t *q = (const uint8_t *)b->qs + 8 * j;
            uint32_t aux;
            memcpy(&aux, q + 4, 4);
            k->sc[2 * j] = k->sc[2 * j + 1] = (int32_t)(2 * (aux >> 28) + 1);
            k->q[2 * j] = iq_signed(es_iq2xxs_grid[q[0]], es_iq2xxs_grid[q[1]], es_iq2_signs[aux & 127],
                                    es_iq2_signs[(aux >> 7) & 127]);
            k->q[2 * j + 1] = iq_signed(es_iq2xxs_grid[q[2]], es_iq2xxs_grid[q[3]], es_iq2_signs[(aux >> 14) & 127],
                                        es_iq2_signs[(aux >> 21) & 127]);
        }
    } else if (f == ES_TYPE_IQ2_XS) {
        const block_iq2_xs *b = (const block_iq2_xs *)blk;
        k->d = h2f(b->d) * 0.125f;
#pragma GCC unroll 8
        for (int p = 0; p < 16; p++) {
            const uint16_t *q = b->qs + 2 * p;
            k->sc[p] = 2 * ((b->scales[p / 2] >> (4 * (p % 2))) & 15) + 1;
            k->q[p] = iq_signed(es_iq2xs_grid[q[0] & 511], es_iq2xs_grid[q[1] & 511], es_iq2_signs[q[0] >> 9],
                                es_iq2_signs[q[1] >> 9]);
        }
    } else if (f == ES_TYPE_IQ2_S) {
        const block_iq2_s *b = (const block_iq2_s *)blk;
        k->d = h2f(b->d) * 0.125f;
#pragma GCC unroll 8
        for (int p = 0; p < 16; p++) {
            const int g = 2 * p, h = b->qh[g / 4] >> (2 * (g % 4));
            k->sc[p] = 2 * ((b->scales[p / 2] >> (4 * (p % 2))) & 15) + 1;
            k->q[p] = iq_signed(es_iq2s_grid[b->qs[g] | (h & 3) << 8], es_iq2s_grid[b->qs[g + 1] | (h & 12) << 6],
                                b->qs[32 + g], b->qs[33 + g]);
        }
    } else if (f == ES_TYPE_IQ3_XXS) {
        const block_iq3_xxs *b = (const block_iq3_xxs *)blk;
        k->d = h2f(b->d) * 0.25f;
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            const uint8_t *q = b->qs + 8 * j;
            uint32_t aux;
            memcpy(&aux, b->qs + 64 + 4 * j, 4);
            k->sc[2 * j] = k->sc[2 * j + 1] = (int32_t)(2 * (aux >> 28) + 1);
#pragma GCC unroll 2
            for (int e = 0; e < 2; e++)
                k->q[2 * j + e] = iq_signed(iq3_pair(es_iq3xxs_grid, q[4 * e], q[4 * e + 1]),
                                            iq3_pair(es_iq3xxs_grid, q[4 * e + 2], q[4 * e + 3]),
                                            es_iq2_signs[(aux >> (14 * e)) & 127], es_iq2_signs[(aux >> (14 * e + 7)) & 127]);
        }
    } else if (f == ES_TYPE_IQ3_S) {
        const block_iq3_s *b = (const block_iq3_s *)blk;
        k->d = h2f(b->d);
#pragma GCC unroll 8
        for (int p = 0; p < 16; p++) {
            const uint8_t *q = b->qs + 4 * p;
            const int h = b->qh[p / 2] >> (4 * (p % 2));
            k->sc[p] = 2 * ((b->scales[p / 4] >> (4 * ((p / 2) % 2))) & 15) + 1;
            k->q[p] = iq_signed(iq3_pair(es_iq3s_grid, q[0] | (h & 1) << 8, q[1] | (h & 2) << 7),
                                iq3_pair(es_iq3s_grid, q[2] | (h & 4) << 6, q[3] | (h & 8) << 5), b->signs[2 * p],
                                b->signs[2 * p + 1]);
        }
    } else if (f == ES_TYPE_IQ1_S) {
        const block_iq1_s *b = (const block_iq1_s *)blk;
        k->d = h2f(b->d) * 0.125f;
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            const uint8_t *q = b->qs + 4 * j;
            const unsigned h = b->qh[j];
            const int sh = h & 0x8000 ? -1 : 1;
            k->sc[2 * j] = k->sc[2 * j + 1] = (int32_t)(2 * ((h >> 12) & 7) + 1);
            k->q[2 * j] = iq1_signed(q[0] | (h & 7) << 8, q[1] | (h & 56) << 5, sh, sh);
            k->q[2 * j + 1] = iq1_signed(q[2] | (h & 448) << 2, q[3] | (h & 3584) >> 1, sh, sh);
        }
    } else if (f == ES_TYPE_IQ1_M) {
        const block_iq1_m *b = (const block_iq1_m *)blk;
        k->d = h2f(es_iq1m_d(b)) * 0.125f;
#pragma GCC unroll 8
        for (int p = 0; p < 16; p++) {
            const unsigned h = b->qh[p], sw = (unsigned)(b->scales[2 * (p / 4)] | b->scales[2 * (p / 4) + 1] << 8);
            k->sc[p] = (int32_t)(2 * ((sw >> (3 * (p % 4))) & 7) + 1);
            k->q[p] = iq1_signed(b->qs[2 * p] | (h & 7) << 8, b->qs[2 * p + 1] | (h & 0x70) << 4, h & 0x08 ? -1 : 1,
                                 h & 0x80 ? -1 : 1);
        }
    } else if (f == ES_TYPE_TQ1_0) { /* quant.h: five base-3 digits a byte */
        const block_tq1_0 *b = (const block_tq1_0 *)blk;
        k->d = h2f(b->d);
        uint8x16_t q0 = vld1q_u8(b->qs), q1 = vld1q_u8(b->qs + 16), q2 = vld1q_u8(b->qs + 32);
        const uint8x16_t three = vdupq_n_u8(3);
#pragma GCC unroll 5
        for (int n = 0; n < 5; n++) { /* weights 32n + m, then 160 + 16n + m */
            k->q[2 * n] = tq1_digits(q0);
            k->q[2 * n + 1] = tq1_digits(q1);
            k->q[10 + n] = tq1_digits(q2);
            q0 = vmulq_u8(q0, three), q1 = vmulq_u8(q1, three), q2 = vmulq_u8(q2, three);
        }
        /* weights 240 + 4n + j: digit n of qh[j] */
        static const uint8_t pw[16] = {1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27};
        uint32_t h;
        memcpy(&h, b->qh, 4);
        k->q[15] = tq1_digits(vmulq_u8(vreinterpretq_u8_u32(vdupq_n_u32(h)), vld1q_u8(pw)));
        for (int p = 0; p < 16; p++) k->sc[p] = 1;
    } else { /* TQ2_0: weight 128h + 32l + m is bits 2l.. of qs[32h + m] */
        const block_tq2_0 *b = (const block_tq2_0 *)blk;
        k->d = h2f(b->d);
#pragma GCC unroll 4
        for (int h = 0; h < 2; h++)
#pragma GCC unroll 2
            for (int e = 0; e < 2; e++) {
                uint8x16_t v = vld1q_u8(b->qs + 32 * h + 16 * e);
#pragma GCC unroll 4
                for (int l = 0; l < 4; l++) k->q[8 * h + 2 * l + e] = minus8(bits8(v, 2 * l, 2, 0), 1);
            }
        for (int p = 0; p < 16; p++) k->sc[p] = 1;
    }
}

static inline AI void kq_decode(uint32_t f, const uint8_t *blk, kblock *k) {
    if (iq_format(f)) {
        iq_decode(f, blk, k);
        return;
    }
    if (f == ES_TYPE_Q4_K || f == ES_TYPE_Q5_K) {
        const block_q4_K *b4 = (const block_q4_K *)blk; /* Q5_K begins as Q4_K does */
        const block_q5_K *b5 = (const block_q5_K *)blk;
        const uint8_t *qs = f == ES_TYPE_Q4_K ? b4->qs : b5->qs;
        k->d = h2f(b4->d), k->dmin = h2f(b4->dmin);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            es_k4_scale_min(j, b4->scales, &sc, &m);
            k->sc[2 * j] = k->sc[2 * j + 1] = sc;
            k->m[2 * j] = k->m[2 * j + 1] = m;
        }
        /* weights 64h + l: low nibbles of qs[32h + l], 64h + 32 + l: high;
         * Q5_K's fifth bit is bit 2h (2h + 1 for the high nibbles) of qh[l] */
        uint8x16_t h0 = f == ES_TYPE_Q5_K ? vld1q_u8(b5->qh) : vdupq_n_u8(0), h1 = f == ES_TYPE_Q5_K ? vld1q_u8(b5->qh + 16) : h0;
#pragma GCC unroll 4
        for (int h = 0; h < 4; h++) {
            uint8x16_t q0 = vld1q_u8(qs + 32 * h), q1 = vld1q_u8(qs + 32 * h + 16);
            uint8x16_t v[4] = {vandq_u8(q0, vdupq_n_u8(0x0f)), vandq_u8(q1, vdupq_n_u8(0x0f)), vshrq_n_u8(q0, 4),
                               vshrq_n_u8(q1, 4)};
            if (f == ES_TYPE_Q5_K) {
                v[0] = vorrq_u8(v[0], bits8(h0, 2 * h, 1, 4));
                v[1] = vorrq_u8(v[1], bits8(h1, 2 * h, 1, 4));
                v[2] = vorrq_u8(v[2], bits8(h0, 2 * h + 1, 1, 4));
                v[3] = vorrq_u8(v[3], bits8(h1, 2 * h + 1, 1, 4));
            }
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) k->q[4 * h + j] = vreinterpretq_s8_u8(v[j]);
        }
    } else if (f == ES_TYPE_IQ4_XS) {
        /* sub-block j: the table's values at the low nibbles of qs[16j ..]
         * (weights 32j ..), then at the high ones; scale ls - 32 */
        const block_iq4_xs *b = (const block_iq4_xs *)blk;
        const int8x16_t t = vld1q_s8(es_iq4nl_values);
        k->d = h2f(b->d), k->dmin = 0;
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            uint8x16_t v = vld1q_u8(b->qs + 16 * j);
            k->sc[2 * j] = k->sc[2 * j + 1] = es_iq4xs_scale(j, b) - 32;
            k->q[2 * j] = vqtbl1q_s8(t, vandq_u8(v, vdupq_n_u8(0x0f)));
            k->q[2 * j + 1] = vqtbl1q_s8(t, vshrq_n_u8(v, 4));
        }
    } else if (f == ES_TYPE_Q2_K || f == ES_TYPE_Q3_K) {
        /* weight 128h + 32p + l: bits 2p..2p+1 of qs[32h + l]; Q3_K adds 4
         * times bit 4h + p of hmask[l] and subtracts 4 */
        const block_q2_K *b2 = (const block_q2_K *)blk;
        const block_q3_K *b3 = (const block_q3_K *)blk;
        const uint8_t *qs = f == ES_TYPE_Q2_K ? b2->qs : b3->qs;
        if (f == ES_TYPE_Q2_K) {
            k->d = h2f(b2->d), k->dmin = h2f(b2->dmin);
            for (int j = 0; j < 16; j++) k->sc[j] = b2->scales[j] & 0xF, k->m[j] = b2->scales[j] >> 4;
        } else {
            k->d = h2f(b3->d), k->dmin = 0;
            for (int j = 0; j < 16; j++) k->sc[j] = es_k3_scale(j, b3->scales) - 32;
        }
        uint8x16_t m0 = f == ES_TYPE_Q3_K ? vld1q_u8(b3->hmask) : vdupq_n_u8(0), m1 = f == ES_TYPE_Q3_K ? vld1q_u8(b3->hmask + 16) : m0;
#pragma GCC unroll 4
        for (int h = 0; h < 2; h++) {
            uint8x16_t q0 = vld1q_u8(qs + 32 * h), q1 = vld1q_u8(qs + 32 * h + 16);
#pragma GCC unroll 4
            for (int p = 0; p < 4; p++) {
                uint8x16_t v0 = bits8(q0, 2 * p, 2, 0), v1 = bits8(q1, 2 * p, 2, 0);
                if (f == ES_TYPE_Q3_K) {
                    v0 = vorrq_u8(v0, bits8(m0, 4 * h + p, 1, 2));
                    v1 = vorrq_u8(v1, bits8(m1, 4 * h + p, 1, 2));
                }
                k->q[8 * h + 2 * p] = minus8(v0, f == ES_TYPE_Q3_K ? 4 : 0);
                k->q[8 * h + 2 * p + 1] = minus8(v1, f == ES_TYPE_Q3_K ? 4 : 0);
            }
        }
    } else {
        /* Q6_K: weight 128h + 32p + l has its low nibble in ql[64h + 32(p & 1)
         * + l] (low half for p < 2) and its top 2 bits at bits 2p of
         * qh[32h + l]; stored + 32 */
        const block_q6_K *b = (const block_q6_K *)blk;
        k->d = h2f(b->d), k->dmin = 0;
        for (int j = 0; j < 16; j++) k->sc[j] = b->scales[j];
#pragma GCC unroll 4
        for (int h = 0; h < 2; h++) {
            uint8x16_t hh[2] = {vld1q_u8(b->qh + 32 * h), vld1q_u8(b->qh + 32 * h + 16)};
#pragma GCC unroll 4
            for (int p = 0; p < 4; p++)
#pragma GCC unroll 4
                for (int e = 0; e < 2; e++) {
                    uint8x16_t lo = vld1q_u8(b->ql + 64 * h + 32 * (p & 1) + 16 * e);
                    lo = p < 2 ? vandq_u8(lo, vdupq_n_u8(0x0f)) : vshrq_n_u8(lo, 4);
                    k->q[8 * h + 2 * p + e] = minus8(vorrq_u8(lo, bits8(hh[e], 2 * p, 2, 4)), 32);
                }
        }
    }
}

/* One row's super-block against nt (1 or 4, constant) tokens' super-blocks
 * a[k]: decoded once for all of them; acc[k] updated as defined above. */
static inline AI void kq_block(uint32_t f, dot_acc_fn dot, int nt, const uint8_t *blk, const block_q8_K *const *a,
                               float *acc) {
    kblock kb;
    kq_decode(f, blk, &kb);
    /* pieces outside, tokens inside: each piece is read once */
    int32x4_t s[4];
#pragma GCC unroll 4
    for (int k = 0; k < nt; k++) s[k] = vdupq_n_s32(0);
#pragma GCC unroll 8
    for (int p = 0; p < 16; p += 2)
#pragma GCC unroll 4
        for (int k = 0; k < nt; k++) {
            const int8_t *x = a[k]->qs + 16 * p;
            if (f == ES_TYPE_Q4_K || f == ES_TYPE_Q5_K || f == ES_TYPE_IQ4_XS || f == ES_TYPE_IQ2_XXS ||
                f == ES_TYPE_IQ3_XXS || f == ES_TYPE_IQ1_S || f == ES_TYPE_TQ1_0 || f == ES_TYPE_TQ2_0) { /* one scale for both pieces of a 32-weight sub-block */
                s[k] = vmlaq_n_s32(s[k], dot(dot(vdupq_n_s32(0), kb.q[p], vld1q_s8(x)), kb.q[p + 1], vld1q_s8(x + 16)),
                                   kb.sc[p]);
            } else {
                s[k] = vmlaq_n_s32(s[k], dot(vdupq_n_s32(0), kb.q[p], vld1q_s8(x)), kb.sc[p]);
                s[k] = vmlaq_n_s32(s[k], dot(vdupq_n_s32(0), kb.q[p + 1], vld1q_s8(x + 16)), kb.sc[p + 1]);
            }
        }
#pragma GCC unroll 4
    for (int k = 0; k < nt; k++) {
        acc[k] = fmaf((float)vaddvq_s32(s[k]), kb.d * a[k]->d, acc[k]);
        if (kq_has_min(f)) {
            int16x8_t m0 = vld1q_s16(kb.m), m1 = vld1q_s16(kb.m + 8);
            int16x8_t b0 = vld1q_s16(a[k]->bsums), b1 = vld1q_s16(a[k]->bsums + 8);
            int32x4_t mi = vmlal_high_s16(vmull_s16(vget_low_s16(m0), vget_low_s16(b0)), m0, b0);
            mi = vmlal_high_s16(vmlal_s16(mi, vget_low_s16(m1), vget_low_s16(b1)), m1, b1);
            acc[k] = fmaf((float)vaddvq_s32(mi), -(kb.dmin * a[k]->d), acc[k]);
        }
    }
}

/* Y[t][r] for t < n_tok, r in [r0, r1): a row at a time, tokens four at a
 * time then one by one.  A matrix-vector product is n_tok = 1. */
static inline AI void matmul_kq(uint32_t f, dot_acc_fn dot, const void *w, size_t rb, int64_t n, const void *act,
                                size_t as, int64_t n_tok, float *y, int64_t ys, int64_t r0, int64_t r1) {
    const int64_t nb = n / QK_K;
    const size_t bb = es_row_bytes(f, QK_K);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w + (size_t)r * rb;
        for (int64_t t = 0; t < n_tok;) {
            int nt = n_tok - t >= 4 ? 4 : 1;
            const block_q8_K *a[4];
            float acc[4] = {0, 0, 0, 0};
            for (int64_t i = 0; i < nb; i++) {
#pragma GCC unroll 4
                for (int k = 0; k < nt; k++) a[k] = (const block_q8_K *)((const char *)act + (size_t)(t + k) * as) + i;
                if (nt == 4) kq_block(f, dot, 4, row + (size_t)i * bb, a, acc);
                else kq_block(f, dot, 1, row + (size_t)i * bb, a, acc);
            }
#pragma GCC unroll 4
            for (int k = 0; k < nt; k++) y[(t + k) * ys + r] = acc[k];
            t += nt;
        }
    }
}

#define KQ_CALL(dot, F, ...) matmul_kq(F, dot, __VA_ARGS__)
NEON_8BIT_SLOTS(iq2_xxs, KQ_CALL, ES_TYPE_IQ2_XXS)
NEON_8BIT_SLOTS(iq2_xs, KQ_CALL, ES_TYPE_IQ2_XS)
NEON_8BIT_SLOTS(iq2_s, KQ_CALL, ES_TYPE_IQ2_S)
NEON_8BIT_SLOTS(iq3_xxs, KQ_CALL, ES_TYPE_IQ3_XXS)
NEON_8BIT_SLOTS(iq3_s, KQ_CALL, ES_TYPE_IQ3_S)
NEON_8BIT_SLOTS(iq1_s, KQ_CALL, ES_TYPE_IQ1_S)
NEON_8BIT_SLOTS(iq1_m, KQ_CALL, ES_TYPE_IQ1_M)
NEON_8BIT_SLOTS(tq2_0, KQ_CALL, ES_TYPE_TQ2_0)
NEON_8BIT_SLOTS(tq1_0, KQ_CALL, ES_TYPE_TQ1_0)
#undef KQ_CALL
#undef NEON_8BIT_SLOTS

/* the slots: matvec and matmul per format, armv8.0 and dotprod */
static void matvec_iq4_xs(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matmul_kq(ES_TYPE_IQ4_XS, dot_acc_neon, w, rb, n, act, 0, 1, y, 0, r0, r1);
}
static void matmul_iq4_xs(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                          int64_t ys, int64_t r0, int64_t r1) {
    matmul_kq(ES_TYPE_IQ4_XS, dot_acc_neon, w, rb, n, act, as, nt, y, ys, r0, r1);
}
static TARGET_DOTPROD void matvec_iq4_xs_dp(const void *w, size_t rb, int64_t n, const void *act, float *y,
                                            int64_t r0, int64_t r1) {
    matmul_kq(ES_TYPE_IQ4_XS, dot_acc_sdot, w, rb, n, act, 0, 1, y, 0, r0, r1);
}
static TARGET_DOTPROD void matmul_iq4_xs_dp(const void *w, size_t rb, int64_t n, const void *act, size_t as,
                                            int64_t nt, float *y, int64_t ys, int64_t r0, int64_t r1) {
    matmul_kq(ES_TYPE_IQ4_XS, dot_acc_sdot, w, rb, n, act, as, nt, y, ys, r0, r1);
}
static void matvec_q2_K(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matmul_kq(ES_TYPE_Q2_K, dot_acc_neon, w, rb, n, act, 0, 1, y, 0, r0, r1);
}
static void matmul_q2_K(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                        int64_t ys, int64_t r0, int64_t r1) {
    matmul_kq(ES_TYPE_Q2_K, dot_acc_neon, w, rb, n, act, as, nt, y, ys, r0, r1);
}
static void matvec_q3_K(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matmul_kq(ES_TYPE_Q3_K, dot_acc_neon, w, rb, n, act, 0, 1, y, 0, r0, r1);
}
static void matmul_q3_K(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                        int64_t ys, int64_t r0, int64_t r1) {
    matmul_kq(ES_TYPE_Q3_K, dot_acc_neon, w, rb, n, act, as, nt, y, ys, r0, r1);
}
static void matvec_q4_K(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matmul_kq(ES_TYPE_Q4_K, dot_acc_neon, w, rb, n, act, 0, 1, y, 0, r0, r1);
}
static void matmul_q4_K(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                        int64_t ys, int64_t r0, int64_t r1) {
    matmul_kq(ES_TYPE_Q4_K, dot_acc_neon, w, rb, n, act, as, nt, y, ys, r0, r1);
}
static void matvec_q5_K(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matmul_kq(ES_TYPE_Q5_K, dot_acc_neon, w, rb, n, act, 0, 1, y, 0, r0, r1);
}
static void matmul_q5_K(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                        int64_t ys, int64_t r0, int64_t r1) {
    matmul_kq(ES_TYPE_Q5_K, dot_acc_neon, w, rb, n, act, as, nt, y, ys, r0, r1);
}
static void matvec_q6_K(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matmul_kq(ES_TYPE_Q6_K, dot_acc_neon, w, rb, n, act, 0, 1, y, 0, r0, r1);
}
static void matmul_q6_K(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                        int64_t ys, int64_t r0, int64_t r1) {
    matmul_kq(ES_TYPE_Q6_K, dot_acc_neon, w, rb, n, act, as, nt, y, ys, r0, r1);
}
static TARGET_DOTPROD void matvec_q2_K_dp(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0,
                                          int64_t r1) {
    matmul_kq(ES_TYPE_Q2_K, dot_acc_sdot, w, rb, n, act, 0, 1, y, 0, r0, r1);
}
static TARGET_DOTPROD void matmul_q2_K_dp(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt,
                                          float *y, int64_t ys, int64_t r0, int64_t r1) {
    matmul_kq(ES_TYPE_Q2_K, dot_acc_sdot, w, rb, n, act, as, nt, y, ys, r0, r1);
}
static TARGET_DOTPROD void matvec_q3_K_dp(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0,
                                          int64_t r1) {
    matmul_kq(ES_TYPE_Q3_K, dot_acc_sdot, w, rb, n, act, 0, 1, y, 0, r0, r1);
}
static TARGET_DOTPROD void matmul_q3_K_dp(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt,
                                          float *y, int64_t ys, int64_t r0, int64_t r1) {
    matmul_kq(ES_TYPE_Q3_K, dot_acc_sdot, w, rb, n, act, as, nt, y, ys, r0, r1);
}
static TARGET_DOTPROD void matvec_q4_K_dp(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0,
                                          int64_t r1) {
    matmul_kq(ES_TYPE_Q4_K, dot_acc_sdot, w, rb, n, act, 0, 1, y, 0, r0, r1);
}
static TARGET_DOTPROD void matmul_q4_K_dp(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt,
                                          float *y, int64_t ys, int64_t r0, int64_t r1) {
    matmul_kq(ES_TYPE_Q4_K, dot_acc_sdot, w, rb, n, act, as, nt, y, ys, r0, r1);
}
static TARGET_DOTPROD void matvec_q5_K_dp(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0,
                                          int64_t r1) {
    matmul_kq(ES_TYPE_Q5_K, dot_acc_sdot, w, rb, n, act, 0, 1, y, 0, r0, r1);
}
static TARGET_DOTPROD void matmul_q5_K_dp(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt,
                                          float *y, int64_t ys, int64_t r0, int64_t r1) {
    matmul_kq(ES_TYPE_Q5_K, dot_acc_sdot, w, rb, n, act, as, nt, y, ys, r0, r1);
}
static TARGET_DOTPROD void matvec_q6_K_dp(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0,
                                          int64_t r1) {
    matmul_kq(ES_TYPE_Q6_K, dot_acc_sdot, w, rb, n, act, 0, 1, y, 0, r0, r1);
}
static TARGET_DOTPROD void matmul_q6_K_dp(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt,
                                          float *y, int64_t ys, int64_t r0, int64_t r1) {
    matmul_kq(ES_TYPE_Q6_K, dot_acc_sdot, w, rb, n, act, as, nt, y, ys, r0, r1);
}

/* ---- quantisation and dequantisation (bit-identical to generic.c) ---------- */

/* Q8_0 as generic.c: amax with fmaxf's NaN handling (FMAXNM), d = amax/127,
 * q = roundf(x/d) (FCVTAS rounds half away from zero, as roundf does); the
 * values fit int8, so the narrowing never saturates. */
static void quant_q8_0(const float *src, void *dst, int64_t n) {
    block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const float *x = src + i * QK8_0;
        float32x4_t v[8], m = vdupq_n_f32(0);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            v[j] = vld1q_f32(x + 4 * j);
            m = vmaxnmq_f32(m, vabsq_f32(v[j]));
        }
        float d = vmaxnmvq_f32(m) / 127.0f;
        float id = d ? 1.0f / d : 0.0f;
        b[i].d = es_f32_to_fp16(d);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j += 2) {
            int16x8_t q16 = vcombine_s16(vmovn_s32(vcvtaq_s32_f32(vmulq_n_f32(v[j], id))),
                                         vmovn_s32(vcvtaq_s32_f32(vmulq_n_f32(v[j + 1], id))));
            vst1_s8(b[i].qs + 4 * j, vmovn_s16(q16));
        }
    }
}

static void dequant_f16(const void *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, load4(FMT_F16, src, i));
    for (; i < n; i++) dst[i] = load1(FMT_F16, src, i);
}

static void dequant_bf16(const void *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, load4(FMT_BF16, src, i));
    for (; i < n; i++) dst[i] = load1(FMT_BF16, src, i);
}

/* d * (float)q per weight, as generic.c (int8 -> fp32 is exact) */
static inline AI void store_scaled(float *dst, int8x16_t q, float d) {
    int16x8_t lo = vmovl_s8(vget_low_s8(q)), hi = vmovl_high_s8(q);
    vst1q_f32(dst, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), d));
    vst1q_f32(dst + 4, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(lo)), d));
    vst1q_f32(dst + 8, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), d));
    vst1q_f32(dst + 12, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(hi)), d));
}

/* then + m (Q4_1/Q5_1), as generic.c: a product, then a sum */
static inline AI void add_min(float *dst, float m) {
    for (int j = 0; j < 16; j += 4) vst1q_f32(dst + j, vaddq_f32(vld1q_f32(dst + j), vdupq_n_f32(m)));
}

static inline AI void dequant_blocks(enum bfmt f, const void *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n / 32; i++) {
        wblock b = block_weights(f, src, i);
        float d = h2f(block_scale(f, src, i));
        store_scaled(dst + 32 * i, b.lo, d);
        store_scaled(dst + 32 * i + 16, b.hi, d);
        if (block_affine(f)) {
            add_min(dst + 32 * i, h2f(block_min(f, src, i)));
            add_min(dst + 32 * i + 16, h2f(block_min(f, src, i)));
        }
    }
}
static void dequant_q8_0(const void *src, float *dst, int64_t n) { dequant_blocks(BQ8_0, src, dst, n); }
static void dequant_q4_0(const void *src, float *dst, int64_t n) { dequant_blocks(BQ4_0, src, dst, n); }
static void dequant_q4_1(const void *src, float *dst, int64_t n) { dequant_blocks(BQ4_1, src, dst, n); }
static void dequant_q5_0(const void *src, float *dst, int64_t n) { dequant_blocks(BQ5_0, src, dst, n); }
static void dequant_q5_1(const void *src, float *dst, int64_t n) { dequant_blocks(BQ5_1, src, dst, n); }
static void dequant_iq4_nl(const void *src, float *dst, int64_t n) { dequant_blocks(BIQ4NL, src, dst, n); }

/* ---- vector operations ------------------------------------------------------ */

static float dot_neon(const float *a, const float *b, int64_t n) {
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
        s2 = vfmaq_f32(s2, vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
        s3 = vfmaq_f32(s3, vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
    }
    for (; i + 4 <= n; i += 4) s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
    float s = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_neon(float *y, float a, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vld1q_f32(x + i), a));
    for (; i < n; i++) y[i] += a * x[i];
}

static void rmsnorm_neon(float *y, const float *x, const float *w, int64_t n, float eps) {
    float inv = 1.0f / sqrtf(dot_neon(x, x, n) / (float)n + eps);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vmulq_f32(vmulq_n_f32(vld1q_f32(x + i), inv), vld1q_f32(w + i)));
    for (; i < n; i++) y[i] = x[i] * inv * w[i];
}

/* e^x on 4 lanes, within 1.3 ulp of the exact value over the whole float
 * range (measured on every 61st float; overflow to inf above ~88.72, gradual underflow to 0 below ~-87.3; NaN
 * stays NaN).  x = n·ln2 + r with |r| <= ln2/2 (ln2 split in two so that
 * n·ln2 is exact to fp32 precision); e^r from Cephes' degree-6 expf
 * polynomial; 2^n applied as two factors 2^(n/2) so that neither leaves
 * the normal range for n in [-150, 128]. */
static inline AI float32x4_t exp4(float32x4_t x) {
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-104.0f)), vdupq_n_f32(89.0f)); /* FMAX/FMIN keep NaN */
    float32x4_t n = vrndnq_f32(vmulq_n_f32(x, 1.44269504088896341f));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693147182464599609375f));
    r = vfmsq_f32(r, n, vdupq_n_f32(-1.904654323148236e-09f));
    float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
    p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
    int32x4_t ni = vcvtq_s32_f32(n), n1 = vshrq_n_s32(ni, 1), n2 = vsubq_s32(ni, n1);
    float32x4_t s1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, vdupq_n_s32(127)), 23));
    float32x4_t s2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, vdupq_n_s32(127)), 23));
    return vmulq_f32(vmulq_f32(p, s1), s2);
}

/* A ragged tail of k < 4 values goes through the same 4-lane code via a
 * padded copy, so every element sees the same exp. */
static inline AI float32x4_t load_part(const float *p, int64_t k, float pad) {
    float t[4] = {pad, pad, pad, pad};
    memcpy(t, p, sizeof(float) * (size_t)k);
    return vld1q_f32(t);
}
static inline AI void store_part(float *p, float32x4_t v, int64_t k) {
    float t[4];
    vst1q_f32(t, v);
    memcpy(p, t, sizeof(float) * (size_t)k);
}

/* silu(g)·u = g / (1 + e^-g) · u, as generic.c computes it */
static inline AI float32x4_t silu_mul4(float32x4_t g, float32x4_t u) {
    return vmulq_f32(vdivq_f32(g, vaddq_f32(vdupq_n_f32(1.0f), exp4(vnegq_f32(g)))), u);
}

static void silu_mul_neon(float *g, const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(g + i, silu_mul4(vld1q_f32(g + i), vld1q_f32(u + i)));
    if (i < n) store_part(g + i, silu_mul4(load_part(g + i, n - i, 0), load_part(u + i, n - i, 0)), n - i);
}

static void softmax_neon(float *x, int64_t n) {
    float32x4_t m = vdupq_n_f32(x[0]);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) m = vmaxq_f32(m, vld1q_f32(x + i));
    float mx = vmaxvq_f32(m);
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    float32x4_t vmx = vdupq_n_f32(mx), sum = vdupq_n_f32(0);
    for (i = 0; i + 4 <= n; i += 4) {
        float32x4_t e = exp4(vsubq_f32(vld1q_f32(x + i), vmx));
        vst1q_f32(x + i, e);
        sum = vaddq_f32(sum, e);
    }
    float s = vaddvq_f32(sum);
    if (i < n) {
        float32x4_t e = exp4(vsubq_f32(load_part(x + i, n - i, -INFINITY), vmx)); /* padding: e^-inf = 0 */
        store_part(x + i, e, n - i);
        s += vaddvq_f32(e);
    }
    float32x4_t vs = vdupq_n_f32(s);
    for (i = 0; i + 4 <= n; i += 4) vst1q_f32(x + i, vdivq_f32(vld1q_f32(x + i), vs));
    for (; i < n; i++) x[i] /= s;
}

/* ---- latent cache rows: F16/BF16 through load4 (exact widening), Q8_0 --------- */

static inline AI float dot_kv16_neon(enum float_fmt f, const float *a, const void *x, int64_t n) {
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), load4(f, x, i));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), load4(f, x, i + 4));
        s2 = vfmaq_f32(s2, vld1q_f32(a + i + 8), load4(f, x, i + 8));
        s3 = vfmaq_f32(s3, vld1q_f32(a + i + 12), load4(f, x, i + 12));
    }
    for (; i + 4 <= n; i += 4) s0 = vfmaq_f32(s0, vld1q_f32(a + i), load4(f, x, i));
    float s = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
    for (; i < n; i++) s += a[i] * load1(f, x, i);
    return s;
}

static inline AI void axpy_kv16_neon(enum float_fmt f, float *y, float a, const void *x, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), load4(f, x, i), a));
    for (; i < n; i++) y[i] += a * load1(f, x, i);
}

static float dot_kv_f16_neon(const float *a, const void *x, int64_t n) { return dot_kv16_neon(FMT_F16, a, x, n); }
static float dot_kv_bf16_neon(const float *a, const void *x, int64_t n) { return dot_kv16_neon(FMT_BF16, a, x, n); }
static void axpy_kv_f16_neon(float *y, float a, const void *x, int64_t n) { axpy_kv16_neon(FMT_F16, y, a, x, n); }
static void axpy_kv_bf16_neon(float *y, float a, const void *x, int64_t n) { axpy_kv16_neon(FMT_BF16, y, a, x, n); }

/* the 32 weights of a Q8_0 block as 8 vectors of 4 floats */
static inline AI void q8_block_f32(const int8_t *qs, float32x4_t v[8]) {
    for (int h = 0; h < 2; h++) {
        int8x16_t q = vld1q_s8(qs + 16 * h);
        int16x8_t lo = vmovl_s8(vget_low_s8(q)), hi = vmovl_s8(vget_high_s8(q));
        v[4 * h + 0] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
        v[4 * h + 1] = vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo)));
        v[4 * h + 2] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
        v[4 * h + 3] = vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi)));
    }
}

static float dot_kv_q8_0_neon(const float *a, const void *x, int64_t n) {
    const block_q8_0 *b = x;
    float32x4_t acc = vdupq_n_f32(0);
    for (int64_t i = 0; i < n / QK8_0; i++) {
        float32x4_t v[8];
        q8_block_f32(b[i].qs, v);
        const float *ab = a + i * QK8_0;
        float32x4_t bs = vmulq_f32(vld1q_f32(ab), v[0]);
        for (int k = 1; k < 8; k++) bs = vfmaq_f32(bs, vld1q_f32(ab + 4 * k), v[k]);
        acc = vfmaq_n_f32(acc, bs, h2f(b[i].d));
    }
    return vaddvq_f32(acc);
}

static void axpy_kv_q8_0_neon(float *y, float a, const void *x, int64_t n) {
    const block_q8_0 *b = x;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        float32x4_t v[8];
        q8_block_f32(b[i].qs, v);
        const float ad = a * h2f(b[i].d);
        float *yb = y + i * QK8_0;
        for (int k = 0; k < 8; k++) vst1q_f32(yb + 4 * k, vfmaq_n_f32(vld1q_f32(yb + 4 * k), v[k], ad));
    }
}

/* ---- the tables --------------------------------------------------------------- */

static const es_kernels table_base = {
    .name = "neon",
    .matvec = {[ES_TYPE_F32] = matvec_f32, [ES_TYPE_F16] = matvec_f16, [ES_TYPE_BF16] = matvec_bf16,
               [ES_TYPE_Q8_0] = matvec_q8_0, [ES_TYPE_Q4_0] = matvec_q4_0,
               [ES_TYPE_Q2_K] = matvec_q2_K, [ES_TYPE_Q3_K] = matvec_q3_K, [ES_TYPE_Q4_K] = matvec_q4_K,
               [ES_TYPE_Q5_K] = matvec_q5_K, [ES_TYPE_Q6_K] = matvec_q6_K, [ES_TYPE_Q4_1] = matvec_q4_1,
               [ES_TYPE_Q5_0] = matvec_q5_0, [ES_TYPE_Q5_1] = matvec_q5_1, [ES_TYPE_IQ4_NL] = matvec_iq4_nl,
               [ES_TYPE_IQ4_XS] = matvec_iq4_xs, [ES_TYPE_IQ2_XXS] = matvec_iq2_xxs, [ES_TYPE_IQ2_XS] = matvec_iq2_xs,
               [ES_TYPE_IQ2_S] = matvec_iq2_s, [ES_TYPE_IQ3_XXS] = matvec_iq3_xxs, [ES_TYPE_IQ3_S] = matvec_iq3_s,
               [ES_TYPE_IQ1_S] = matvec_iq1_s, [ES_TYPE_IQ1_M] = matvec_iq1_m, [ES_TYPE_TQ2_0] = matvec_tq2_0,
               [ES_TYPE_FP8_B128] = es_fp8_matvec_neon, [ES_TYPE_TQ1_0] = matvec_tq1_0},
    .act_type = {[ES_TYPE_Q8_0] = ES_TYPE_Q8_0, [ES_TYPE_Q4_0] = ES_TYPE_Q8_0, [ES_TYPE_Q2_K] = ES_TYPE_Q8_K,
                 [ES_TYPE_Q3_K] = ES_TYPE_Q8_K, [ES_TYPE_Q4_K] = ES_TYPE_Q8_K, [ES_TYPE_Q5_K] = ES_TYPE_Q8_K,
                 [ES_TYPE_Q6_K] = ES_TYPE_Q8_K, [ES_TYPE_Q4_1] = ES_TYPE_Q8_0, [ES_TYPE_Q5_0] = ES_TYPE_Q8_0,
                 [ES_TYPE_Q5_1] = ES_TYPE_Q8_0, [ES_TYPE_IQ4_NL] = ES_TYPE_Q8_0, [ES_TYPE_IQ4_XS] = ES_TYPE_Q8_K,
                 [ES_TYPE_IQ2_XXS] = ES_TYPE_Q8_K, [ES_TYPE_IQ2_XS] = ES_TYPE_Q8_K, [ES_TYPE_IQ2_S] = ES_TYPE_Q8_K,
                 [ES_TYPE_IQ3_XXS] = ES_TYPE_Q8_K, [ES_TYPE_IQ3_S] = ES_TYPE_Q8_K, [ES_TYPE_IQ1_S] = ES_TYPE_Q8_K,
                 [ES_TYPE_IQ1_M] = ES_TYPE_Q8_K, [ES_TYPE_TQ2_0] = ES_TYPE_Q8_K,
                 [ES_TYPE_TQ1_0] = ES_TYPE_Q8_K},
    .matmul = {[ES_TYPE_F32] = matmul_f32, [ES_TYPE_F16] = matmul_f16, [ES_TYPE_BF16] = matmul_bf16,
               [ES_TYPE_Q8_0] = matmul_q8_0, [ES_TYPE_Q4_0] = matmul_q4_0, [ES_TYPE_Q2_K] = matmul_q2_K,
               [ES_TYPE_Q3_K] = matmul_q3_K, [ES_TYPE_Q4_K] = matmul_q4_K, [ES_TYPE_Q5_K] = matmul_q5_K,
               [ES_TYPE_Q6_K] = matmul_q6_K, [ES_TYPE_Q4_1] = matmul_q4_1, [ES_TYPE_Q5_0] = matmul_q5_0,
               [ES_TYPE_Q5_1] = matmul_q5_1, [ES_TYPE_IQ4_NL] = matmul_iq4_nl, [ES_TYPE_IQ4_XS] = matmul_iq4_xs,
               [ES_TYPE_IQ2_XXS] = matmul_iq2_xxs, [ES_TYPE_IQ2_XS] = matmul_iq2_xs, [ES_TYPE_IQ2_S] = matmul_iq2_s,
               [ES_TYPE_IQ3_XXS] = matmul_iq3_xxs, [ES_TYPE_IQ3_S] = matmul_iq3_s, [ES_TYPE_IQ1_S] = matmul_iq1_s,
               [ES_TYPE_IQ1_M] = matmul_iq1_m, [ES_TYPE_TQ2_0] = matmul_tq2_0,
               [ES_TYPE_FP8_B128] = es_fp8_matmul_neon, [ES_TYPE_TQ1_0] = matmul_tq1_0},
    .dequant_row = {[ES_TYPE_F16] = dequant_f16, [ES_TYPE_BF16] = dequant_bf16, [ES_TYPE_Q8_0] = dequant_q8_0,
                    [ES_TYPE_Q4_0] = dequant_q4_0, [ES_TYPE_Q4_1] = dequant_q4_1, [ES_TYPE_Q5_0] = dequant_q5_0,
                    [ES_TYPE_Q5_1] = dequant_q5_1, [ES_TYPE_IQ4_NL] = dequant_iq4_nl},
    .quant_row = {[ES_TYPE_Q8_0] = quant_q8_0},
    .rmsnorm = rmsnorm_neon,
    .dot_f32 = dot_neon,
    .axpy_f32 = axpy_neon,
    .silu_mul = silu_mul_neon,
    .softmax = softmax_neon,
    .dot_kv = {[ES_TYPE_F16] = dot_kv_f16_neon, [ES_TYPE_BF16] = dot_kv_bf16_neon, [ES_TYPE_Q8_0] = dot_kv_q8_0_neon},
    .axpy_kv = {[ES_TYPE_F16] = axpy_kv_f16_neon, [ES_TYPE_BF16] = axpy_kv_bf16_neon, [ES_TYPE_Q8_0] = axpy_kv_q8_0_neon},
};

/* The dotprod and i8mm tables are the baseline with the 8-bit slots
 * replaced; built once, on first request. */
static es_kernels table_dp, table_mm;
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void build_tables(void) {
    table_dp = table_base;
    table_dp.matvec[ES_TYPE_Q8_0] = matvec_q8_0_dp;
    table_dp.matvec[ES_TYPE_Q4_0] = matvec_q4_0_dp;
    table_dp.matmul[ES_TYPE_Q8_0] = matmul_q8_0_dp;
    table_dp.matmul[ES_TYPE_Q4_0] = matmul_q4_0_dp;
    static const struct { uint32_t type; es_matvec_fn mv; es_matmul_fn mm; } kq[] = {
        {ES_TYPE_Q2_K, matvec_q2_K_dp, matmul_q2_K_dp}, {ES_TYPE_Q3_K, matvec_q3_K_dp, matmul_q3_K_dp},
        {ES_TYPE_Q4_K, matvec_q4_K_dp, matmul_q4_K_dp}, {ES_TYPE_Q5_K, matvec_q5_K_dp, matmul_q5_K_dp},
        {ES_TYPE_Q6_K, matvec_q6_K_dp, matmul_q6_K_dp}, {ES_TYPE_Q4_1, matvec_q4_1_dp, matmul_q4_1_dp},
        {ES_TYPE_Q5_0, matvec_q5_0_dp, matmul_q5_0_dp}, {ES_TYPE_Q5_1, matvec_q5_1_dp, matmul_q5_1_dp},
        {ES_TYPE_IQ4_NL, matvec_iq4_nl_dp, matmul_iq4_nl_dp}, {ES_TYPE_IQ4_XS, matvec_iq4_xs_dp, matmul_iq4_xs_dp},
        {ES_TYPE_IQ2_XXS, matvec_iq2_xxs_dp, matmul_iq2_xxs_dp}, {ES_TYPE_IQ2_XS, matvec_iq2_xs_dp, matmul_iq2_xs_dp},
        {ES_TYPE_IQ2_S, matvec_iq2_s_dp, matmul_iq2_s_dp}, {ES_TYPE_IQ3_XXS, matvec_iq3_xxs_dp, matmul_iq3_xxs_dp},
        {ES_TYPE_IQ3_S, matvec_iq3_s_dp, matmul_iq3_s_dp}, {ES_TYPE_IQ1_S, matvec_iq1_s_dp, matmul_iq1_s_dp},
        {ES_TYPE_IQ1_M, matvec_iq1_m_dp, matmul_iq1_m_dp}, {ES_TYPE_TQ2_0, matvec_tq2_0_dp, matmul_tq2_0_dp},
        {ES_TYPE_TQ1_0, matvec_tq1_0_dp, matmul_tq1_0_dp}};
    for (size_t i = 0; i < sizeof kq / sizeof kq[0]; i++) {
        table_dp.matvec[kq[i].type] = kq[i].mv;
        table_dp.matmul[kq[i].type] = kq[i].mm;
    }
    table_mm = table_dp;
    table_mm.matmul[ES_TYPE_Q8_0] = matmul_q8_0_mm;
    table_mm.matmul[ES_TYPE_Q4_0] = matmul_q4_0_mm;
}

const es_kernels *es_neon_for(int dotprod, int i8mm) {
    pthread_once(&tables_once, build_tables);
    if (dotprod && i8mm) return &table_mm;
    return dotprod ? &table_dp : &table_base;
}

const es_kernels *const es_kernels_neon = &table_base;
#else
const es_kernels *const es_kernels_neon = 0;
const es_kernels *es_neon_for(int dotprod, int i8mm) {
    (void)dotprod;
    (void)i8mm;
    return 0;
}
#endif
