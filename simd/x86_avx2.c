/* x86_avx2.c — kernels for x86-64 with AVX2, FMA and F16C (compiled with
 * -mavx2 -mfma -mf16c; only ever called after dispatch.c has checked the
 * CPU and OS).  Owns, for the AVX2 table: matvec and matmul for F32, F16 and
 * BF16 (fp32 FMA against fp32 activations) and for Q8_0 and Q4_0 (8-bit
 * multiply-adds against activations quantised to Q8_0 once per product, the
 * act_type), and the vector operations rmsnorm, dot, axpy, silu_mul and
 * softmax (with a vectorised expf); the K-quants Q2_K..Q6_K and IQ4_XS
 * against activations quantised to Q8_K, from x86_kquants.h; Q4_1, Q5_0,
 * Q5_1 and IQ4_NL against Q8_0, from x86_legacy.h; and the activation
 * quantisers (quant_row) of Q8_0 and Q8_K, bit for bit as generic's.  Slots
 * left empty fall back to generic.c.
 *
 * Every product is built from one tile: R rows x T tokens computed in one
 * pass over those rows' weights, R*T accumulators in registers, so each
 * weight is loaded once per T tokens and each activation once per R rows.
 * matvec is the T = 1 case with 4 rows a pass (four independent streams and
 * the activation loads shared); matmul uses 2 x 4 tiles, looping rows outside
 * tokens within a block of tokens whose activations stay in L2 — except
 * Q4_0 and Q8_0's, which put 8 rows in the lanes (x86_avx2_gemm.h) and keep
 * the 4 x 4 tiles for rows too long for its buffers. */
#include "kernels.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#include <math.h>

#include "x86_avx2_common.h"
#include "fp8.h"
#include "x86_avx2_gemm.h"
#include "x86_kquants.h"
#include "x86_legacy.h"
#include "x86_q8act.h"

/* ---- float weights ---------------------------------------------------------- */

enum float_fmt { FMT_F32, FMT_F16, FMT_BF16 };

/* 8 values of a row from position i, converted to fp32 */
static inline __attribute__((always_inline)) __m256 load8(enum float_fmt f, const void *p, int64_t i) {
    if (f == FMT_F32) return _mm256_loadu_ps((const float *)p + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + i));
    if (f == FMT_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static inline __attribute__((always_inline)) float load1(enum float_fmt f, const void *p, int64_t i) {
    if (f == FMT_F32) return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    return f == FMT_F16 ? _cvtsh_ss(h) : es_bf16_to_f32(h);
}

/* Rows r..r+R-1 times tokens 0..T-1: y[t*ys + r+k] = row(r+k) . x_t, with
 * x_t = act + t*as bytes.  A scalar tail handles ragged n. */
static inline __attribute__((always_inline)) void tile_float(enum float_fmt f, int R, int T, const void *w, size_t rb,
                                                             int64_t n, const void *act, size_t as, float *y,
                                                             int64_t ys, int64_t r) {
    const char *row[4];
    const float *x[4];
    __m256 acc[4][4];
    const size_t es = f == FMT_F32 ? 4 : 2;
#pragma GCC unroll 4
    for (int k = 0; k < R; k++) row[k] = (const char *)w + (size_t)(r + k) * rb;
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) x[t] = (const float *)((const char *)act + (size_t)t * as);
#pragma GCC unroll 4
    for (int k = 0; k < R; k++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) acc[k][t] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 wv[4];
        if (T == 1 && R == 4) matvec_prefetch(row[0], rb, (size_t)i * es, 8 * es);
#pragma GCC unroll 4
        for (int k = 0; k < R; k++) wv[k] = load8(f, row[k], i);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            __m256 a = _mm256_loadu_ps(x[t] + i);
#pragma GCC unroll 4
            for (int k = 0; k < R; k++) acc[k][t] = _mm256_fmadd_ps(wv[k], a, acc[k][t]);
        }
    }
#pragma GCC unroll 4
    for (int k = 0; k < R; k++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            float s = hsum8(acc[k][t]);
            for (int64_t j = i; j < n; j++) s += load1(f, row[k], j) * x[t][j];
            y[t * ys + r + k] = s;
        }
}

static inline __attribute__((always_inline)) void matvec_float(enum float_fmt f, const void *w, size_t rb, int64_t n,
                                                               const void *x, float *y, int64_t r0, int64_t r1) {
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) tile_float(f, 4, 1, w, rb, n, x, 0, y, 0, r);
    for (; r < r1; r++) tile_float(f, 1, 1, w, rb, n, x, 0, y, 0, r);
}

/* a pass of T tokens (1..4) over rows [r0, r1) in 2-row tiles */
static inline __attribute__((always_inline)) void rows_float(enum float_fmt f, int T, const void *w, size_t rb,
                                                             int64_t n, const void *act, size_t as, float *y,
                                                             int64_t ys, int64_t r0, int64_t r1) {
    int64_t r = r0;
    for (; r + 2 <= r1; r += 2) tile_float(f, 2, T, w, rb, n, act, as, y, ys, r);
    if (r < r1) tile_float(f, 1, T, w, rb, n, act, as, y, ys, r);
}

static inline __attribute__((always_inline)) void pass_float(enum float_fmt f, int T, const void *w, size_t rb,
                                                             int64_t n, const void *act, size_t as, float *y,
                                                             int64_t ys, int64_t r0, int64_t r1) {
    switch (T) {
    case 1: rows_float(f, 1, w, rb, n, act, as, y, ys, r0, r1); break;
    case 2: rows_float(f, 2, w, rb, n, act, as, y, ys, r0, r1); break;
    case 3: rows_float(f, 3, w, rb, n, act, as, y, ys, r0, r1); break;
    default: rows_float(f, 4, w, rb, n, act, as, y, ys, r0, r1); break;
    }
}
static void pass_f32(int T, const void *w, size_t rb, int64_t n, const void *act, size_t as, float *y, int64_t ys,
                     int64_t r0, int64_t r1) {
    pass_float(FMT_F32, T, w, rb, n, act, as, y, ys, r0, r1);
}
static void pass_f16(int T, const void *w, size_t rb, int64_t n, const void *act, size_t as, float *y, int64_t ys,
                     int64_t r0, int64_t r1) {
    pass_float(FMT_F16, T, w, rb, n, act, as, y, ys, r0, r1);
}
static void pass_bf16(int T, const void *w, size_t rb, int64_t n, const void *act, size_t as, float *y, int64_t ys,
                      int64_t r0, int64_t r1) {
    pass_float(FMT_BF16, T, w, rb, n, act, as, y, ys, r0, r1);
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
    matmul_blocked(pass_f32, (size_t)n * sizeof(float), w, rb, n, act, as, nt, y, ys, r0, r1);
}

/* FP8_B128 (fp8.h): the prefill through the F32 GEMM on dequantised rows
 * (the fused matvec, x86_avx2_fp8.c, runs matvec_f32's arithmetic on the
 * same values, so a prefill row equals its decode) */
static void matmul_fp8(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                       int64_t ys, int64_t r0, int64_t r1) {
    es_fp8_tiled(es_fp8_dequant_rows_avx2, matvec_f32, matmul_f32, es_fp8_matvec_avx2, es_fp8_matmul_avx2, w, rb, n,
                 act, as, nt, y, ys, r0, r1);
}
static void matmul_f16(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                       int64_t ys, int64_t r0, int64_t r1) {
    matmul_blocked(pass_f16, (size_t)n * sizeof(float), w, rb, n, act, as, nt, y, ys, r0, r1);
}
static void matmul_bf16(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                        int64_t ys, int64_t r0, int64_t r1) {
    matmul_blocked(pass_bf16, (size_t)n * sizeof(float), w, rb, n, act, as, nt, y, ys, r0, r1);
}

/* ---- 8-bit block formats against Q8_0 activations ------------------------- */

/* Q8_0 and Q4_0: x86_q8act.h's matvec and tiles (VPMADDUBSW: Q8_0 as |w|
 * times sign(w)·a, Q4_0 as q·a - 8·a), the arithmetic the row-in-lanes gemm
 * of x86_avx2_gemm.h shares, so that every product of a row agrees bit for
 * bit. */
static void pass_q8_0(int T, const void *w, size_t rb, int64_t n, const void *act, size_t as, float *y, int64_t ys,
                      int64_t r0, int64_t r1) {
    q8a_pass(0, T, w, rb, n, act, as, y, ys, r0, r1);
}
static void pass_q4_0(int T, const void *w, size_t rb, int64_t n, const void *act, size_t as, float *y, int64_t ys,
                      int64_t r0, int64_t r1) {
    q8a_pass(1, T, w, rb, n, act, as, y, ys, r0, r1);
}

static void matvec_q8_0(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    q8a_matvec(0, w, rb, n, act, y, r0, r1);
}
static void matvec_q4_0(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    q8a_matvec(1, w, rb, n, act, y, r0, r1);
}
static void matmul_q8_0(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                        int64_t ys, int64_t r0, int64_t r1) {
    /* packing 8 rows' Q8_0 blocks costs more than it saves below ~6 tokens
     * (bench/bench_gemm: equal at 4, 1.2x at 6, 1.9x at 64) */
    if (nt < 6 || !gemm_avx2(0, w, rb, n, act, as, nt, y, ys, r0, r1))
        matmul_blocked(pass_q8_0, (size_t)n / 32 * sizeof(block_q8_0), w, rb, n, act, as, nt, y, ys, r0, r1);
}
static void matmul_q4_0(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                        int64_t ys, int64_t r0, int64_t r1) {
    if (!gemm_avx2(1, w, rb, n, act, as, nt, y, ys, r0, r1))
        matmul_blocked(pass_q4_0, (size_t)n / 32 * sizeof(block_q8_0), w, rb, n, act, as, nt, y, ys, r0, r1);
}

/* ---- activation quantisers (bit for bit as generic's) ------------------------ */

/* max |x| of 8k floats (NaN ignored, as fmaxf does) */
static inline float absmax(const float *x, int k) {
    const __m256 abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < k; i++) m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + 8 * i), abs), m);
    return hmax8(m);
}

/* 32 int32 lanes (4 registers, in order) as 32 int8, saturating */
static inline __m256i pack32(__m256i a, __m256i b, __m256i c, __m256i d) {
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* roundf: to nearest, ties away from zero (v - trunc(v) is exact) */
static inline __m256i round_away(__m256 v) {
    __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 sign = _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u)));
    __m256 half = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(v, t)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    t = _mm256_add_ps(t, _mm256_and_ps(half, _mm256_or_ps(sign, _mm256_set1_ps(1.0f))));
    return _mm256_cvttps_epi32(t);
}

static void quant_q8_0_avx2(const float *src, void *dst, int64_t n) {
    block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const float *x = src + i * QK8_0;
        float d = absmax(x, 4) / 127.0f, id = d ? 1.0f / d : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        b[i].d = es_f32_to_fp16(d);
        __m256i q[4];
        for (int k = 0; k < 4; k++) q[k] = round_away(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), vid));
        _mm256_storeu_si256((__m256i *)b[i].qs, pack32(q[0], q[1], q[2], q[3]));
    }
}

/* Q8_K: ties to even, clamped to -127..127 (NaN -> -127), and the bsums */
static void quant_q8_k_avx2(const float *src, void *dst, int64_t n) {
    block_q8_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float *x = src + i * QK_K;
        float amax = absmax(x, QK_K / 8);
        __m256 vid = _mm256_set1_ps(amax > 0 ? 127.0f / amax : 0.0f);
        b[i].d = amax / 127.0f;
        for (int c = 0; c < QK_K / 32; c++) {
            __m256i q[4];
            for (int k = 0; k < 4; k++) {
                __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + 32 * c + 8 * k), vid);
                __m256i r = _mm256_cvtps_epi32(v); /* NaN and overflow give INT_MIN */
                q[k] = _mm256_max_epi32(_mm256_min_epi32(r, _mm256_set1_epi32(127)), _mm256_set1_epi32(-127));
            }
            _mm256_storeu_si256((__m256i *)(b[i].qs + 32 * c), pack32(q[0], q[1], q[2], q[3]));
            /* sums of 16: pairs, then quads, then the two halves of each lane */
            __m256i s = _mm256_madd_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_set1_epi16(1));
            __m256i t = _mm256_madd_epi16(_mm256_packs_epi32(q[2], q[3]), _mm256_set1_epi16(1));
            __m256i h = _mm256_hadd_epi32(s, t); /* lane l: [a0..3|a4..7|b0..3|b4..7] sums of 4 */
            h = _mm256_hadd_epi32(h, h);         /* sums of 8: a lo, b lo (per lane) */
            int32_t v[8];
            _mm256_storeu_si256((__m256i *)v, h);
            b[i].bsums[2 * c] = (int16_t)(v[0] + v[4]);
            b[i].bsums[2 * c + 1] = (int16_t)(v[1] + v[5]);
        }
    }
}

/* ---- vector operations ------------------------------------------------------ */

static float dot_avx2(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_avx2(float *y, float a, const float *x, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

static void rmsnorm_avx2(float *y, const float *x, const float *w, int64_t n, float eps) {
    float inv = 1.0f / sqrtf(dot_avx2(x, x, n) / (float)n + eps);
    __m256 vi = _mm256_set1_ps(inv);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vi), _mm256_loadu_ps(w + i)));
    for (; i < n; i++) y[i] = x[i] * inv * w[i];
}

/* Up to 8 floats from p (the rest zero) and back, for ragged tails. */
static inline __m256i tail_mask(int64_t m) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)m), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static void silu_mul_avx2(float *g, const float *u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i < n; i += 8) {
        __m256i m = tail_mask(n - i);
        __m256 x = i + 8 <= n ? _mm256_loadu_ps(g + i) : _mm256_maskload_ps(g + i, m);
        __m256 v = i + 8 <= n ? _mm256_loadu_ps(u + i) : _mm256_maskload_ps(u + i, m);
        /* x / (1 + e^-x) * u; e^-x overflowing to inf gives -0 as generic does */
        __m256 r = _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x)))), v);
        if (i + 8 <= n) _mm256_storeu_ps(g + i, r);
        else _mm256_maskstore_ps(g + i, m, r);
    }
}

static void softmax_avx2(float *x, int64_t n) {
    if (n <= 0) return;
    __m256 mx = _mm256_set1_ps(x[0]);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(x + i));
    float m = hmax8(mx);
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    __m256 vm = _mm256_set1_ps(m), sum = _mm256_setzero_ps();
    for (i = 0; i < n; i += 8) {
        __m256i k = tail_mask(n - i);
        __m256 v = i + 8 <= n ? _mm256_loadu_ps(x + i) : _mm256_maskload_ps(x + i, k);
        __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(v, vm)), _mm256_castsi256_ps(k));
        sum = _mm256_add_ps(sum, e);
        if (i + 8 <= n) _mm256_storeu_ps(x + i, e);
        else _mm256_maskstore_ps(x + i, k, e);
    }
    float s = hsum8(sum);
    __m256 vs = _mm256_set1_ps(s);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_div_ps(_mm256_loadu_ps(x + i), vs));
    for (; i < n; i++) x[i] /= s;
}

/* ---- latent cache rows: F16/BF16 (one conversion per 8 values), Q8_0 ---------- */

static inline __m256 kv8(int bf, const uint16_t *h) {
    __m128i v = _mm_loadu_si128((const __m128i *)h);
    if (!bf) return _mm256_cvtph_ps(v);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16)); /* bf16: the top half */
}

static inline float kv1(int bf, uint16_t h) { return bf ? es_bf16_to_f32(h) : es_fp16_to_f32(h); }

static inline float dot_kv16(int bf, const float *a, const void *x, int64_t n) {
    const uint16_t *h = x;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), kv8(bf, h + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), kv8(bf, h + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), kv8(bf, h + i), s0);
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * kv1(bf, h[i]);
    return s;
}

static inline void axpy_kv16(int bf, float *y, float a, const void *x, int64_t n) {
    const uint16_t *h = x;
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, kv8(bf, h + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * kv1(bf, h[i]);
}

static float dot_kv_f16_avx2(const float *a, const void *x, int64_t n) { return dot_kv16(0, a, x, n); }
static float dot_kv_bf16_avx2(const float *a, const void *x, int64_t n) { return dot_kv16(1, a, x, n); }
static void axpy_kv_f16_avx2(float *y, float a, const void *x, int64_t n) { axpy_kv16(0, y, a, x, n); }
static void axpy_kv_bf16_avx2(float *y, float a, const void *x, int64_t n) { axpy_kv16(1, y, a, x, n); }

/* ---- latent cache rows for several heads at once ------------------------------
 *
 * As in x86_avx512.c, with 4 heads a pass (16 registers): each value
 * computed exactly as dot_avx2 / dot_kv16 (two accumulators over 16-value
 * steps, an 8-value step, hsum8, a scalar tail) and axpy_avx2 / axpy_kv16
 * (one fused multiply-add per row, a scalar tail) compute it for one head. */
#define KVH_HB 4
#define KVH_W 8

static inline __attribute__((always_inline)) void kvh_dot_row(enum float_fmt f, int GN, const float *q, int64_t qs,
                                                              const void *x, int64_t n, float *att, int64_t as) {
    __m256 s0[KVH_HB], s1[KVH_HB];
#pragma GCC unroll 4
    for (int k = 0; k < GN; k++) s0[k] = s1[k] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256 x0 = load8(f, x, i), x1 = load8(f, x, i + 8);
#pragma GCC unroll 4
        for (int k = 0; k < GN; k++) {
            s0[k] = _mm256_fmadd_ps(_mm256_loadu_ps(q + k * qs + i), x0, s0[k]);
            s1[k] = _mm256_fmadd_ps(_mm256_loadu_ps(q + k * qs + i + 8), x1, s1[k]);
        }
    }
    for (; i + 8 <= n; i += 8) {
        const __m256 x0 = load8(f, x, i);
#pragma GCC unroll 4
        for (int k = 0; k < GN; k++) s0[k] = _mm256_fmadd_ps(_mm256_loadu_ps(q + k * qs + i), x0, s0[k]);
    }
#pragma GCC unroll 4
    for (int k = 0; k < GN; k++) {
        float s = hsum8(_mm256_add_ps(s0[k], s1[k]));
        for (int64_t j = i; j < n; j++) s += q[k * qs + j] * load1(f, x, j);
        att[k * as] = s;
    }
}

static inline __attribute__((always_inline)) void kvh_axpy_strip(enum float_fmt f, int GN, float *u, int64_t us,
                                                                 const float *p, int64_t ps, const uint8_t *rows,
                                                                 size_t rb, int64_t r0, int64_t r1, int64_t i, int w) {
    if (w < 8) { /* the ragged end: scalar, as the one-head kernels' tail */
        for (int64_t r = r0; r < r1; r++)
            for (int k = 0; k < GN; k++)
                for (int j = 0; j < w; j++) u[k * us + i + j] += p[k * ps + r] * load1(f, rows + (size_t)r * rb, i + j);
        return;
    }
    __m256 acc[KVH_HB];
#pragma GCC unroll 4
    for (int k = 0; k < GN; k++) acc[k] = _mm256_loadu_ps(u + k * us + i);
    for (int64_t r = r0; r < r1; r++) {
        const __m256 x = load8(f, rows + (size_t)r * rb, i);
#pragma GCC unroll 4
        for (int k = 0; k < GN; k++) acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(p[k * ps + r]), x, acc[k]);
    }
#pragma GCC unroll 4
    for (int k = 0; k < GN; k++) _mm256_storeu_ps(u + k * us + i, acc[k]);
}

#include "x86_kv_heads.h"

/* 8 weights of a Q8_0 block from qs[k] on, as floats */
static inline __m256 q8x8(const int8_t *qs) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)qs)));
}

static float dot_kv_q8_0_avx2(const float *a, const void *x, int64_t n) {
    const block_q8_0 *b = x;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const float *ab = a + i * QK8_0;
        __m256 bs = _mm256_mul_ps(_mm256_loadu_ps(ab), q8x8(b[i].qs));
        for (int k = 8; k < QK8_0; k += 8) bs = _mm256_fmadd_ps(_mm256_loadu_ps(ab + k), q8x8(b[i].qs + k), bs);
        acc = _mm256_fmadd_ps(bs, _mm256_set1_ps(es_fp16_to_f32(b[i].d)), acc);
    }
    return hsum8(acc);
}

static void axpy_kv_q8_0_avx2(float *y, float a, const void *x, int64_t n) {
    const block_q8_0 *b = x;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const __m256 ad = _mm256_set1_ps(a * es_fp16_to_f32(b[i].d));
        float *yb = y + i * QK8_0;
        for (int k = 0; k < QK8_0; k += 8)
            _mm256_storeu_ps(yb + k, _mm256_fmadd_ps(ad, q8x8(b[i].qs + k), _mm256_loadu_ps(yb + k)));
    }
}

static const es_kernels table = {
    .name = "avx2",
    .matvec = {[ES_TYPE_F32] = matvec_f32, [ES_TYPE_F16] = matvec_f16, [ES_TYPE_BF16] = matvec_bf16,
               [ES_TYPE_Q8_0] = matvec_q8_0, [ES_TYPE_Q4_0] = matvec_q4_0, [ES_TYPE_Q2_K] = kq_matvec_q2_K,
               [ES_TYPE_Q3_K] = kq_matvec_q3_K, [ES_TYPE_Q4_K] = kq_matvec_q4_K, [ES_TYPE_Q5_K] = kq_matvec_q5_K,
               [ES_TYPE_Q6_K] = kq_matvec_q6_K, [ES_TYPE_Q4_1] = lg_matvec_q4_1, [ES_TYPE_Q5_0] = lg_matvec_q5_0,
               [ES_TYPE_Q5_1] = lg_matvec_q5_1, [ES_TYPE_IQ4_NL] = lg_matvec_iq4_nl, [ES_TYPE_IQ4_XS] = kq_matvec_iq4_xs,
               IQ_X86_MATVEC, [ES_TYPE_FP8_B128] = es_fp8_matvec_avx2},
    .act_type = {[ES_TYPE_Q8_0] = ES_TYPE_Q8_0, [ES_TYPE_Q4_0] = ES_TYPE_Q8_0, [ES_TYPE_Q2_K] = ES_TYPE_Q8_K,
                 [ES_TYPE_Q3_K] = ES_TYPE_Q8_K, [ES_TYPE_Q4_K] = ES_TYPE_Q8_K, [ES_TYPE_Q5_K] = ES_TYPE_Q8_K,
                 [ES_TYPE_Q6_K] = ES_TYPE_Q8_K, [ES_TYPE_Q4_1] = ES_TYPE_Q8_0, [ES_TYPE_Q5_0] = ES_TYPE_Q8_0,
                 [ES_TYPE_Q5_1] = ES_TYPE_Q8_0, [ES_TYPE_IQ4_NL] = ES_TYPE_Q8_0, [ES_TYPE_IQ4_XS] = ES_TYPE_Q8_K,
                 IQ_X86_ACT_TYPES},
    .matmul = {[ES_TYPE_F32] = matmul_f32, [ES_TYPE_F16] = matmul_f16, [ES_TYPE_BF16] = matmul_bf16,
               [ES_TYPE_Q8_0] = matmul_q8_0, [ES_TYPE_Q4_0] = matmul_q4_0, [ES_TYPE_Q2_K] = kq_matmul_q2_K,
               [ES_TYPE_Q3_K] = kq_matmul_q3_K, [ES_TYPE_Q4_K] = kq_matmul_q4_K, [ES_TYPE_Q5_K] = kq_matmul_q5_K,
               [ES_TYPE_Q6_K] = kq_matmul_q6_K, [ES_TYPE_Q5_0] = lg_matmul_q5_0,
               [ES_TYPE_IQ4_NL] = lg_matmul_iq4_nl,
               [ES_TYPE_IQ4_XS] = kq_matmul_iq4_xs, IQ_X86_MATMUL, [ES_TYPE_FP8_B128] = matmul_fp8},
    .quant_row = {[ES_TYPE_Q8_0] = quant_q8_0_avx2, [ES_TYPE_Q8_K] = quant_q8_k_avx2},
    .rmsnorm = rmsnorm_avx2,
    .dot_f32 = dot_avx2,
    .axpy_f32 = axpy_avx2,
    .silu_mul = silu_mul_avx2,
    .softmax = softmax_avx2,
    .dot_kv = {[ES_TYPE_F16] = dot_kv_f16_avx2, [ES_TYPE_BF16] = dot_kv_bf16_avx2, [ES_TYPE_Q8_0] = dot_kv_q8_0_avx2},
    .axpy_kv = {[ES_TYPE_F16] = axpy_kv_f16_avx2, [ES_TYPE_BF16] = axpy_kv_bf16_avx2, [ES_TYPE_Q8_0] = axpy_kv_q8_0_avx2},
    .dot_kv_heads = {[ES_TYPE_F32] = dot_heads_f32, [ES_TYPE_F16] = dot_heads_f16, [ES_TYPE_BF16] = dot_heads_bf16},
    .axpy_kv_heads = {[ES_TYPE_F32] = axpy_heads_f32, [ES_TYPE_F16] = axpy_heads_f16, [ES_TYPE_BF16] = axpy_heads_bf16},
};
const es_kernels *const es_kernels_avx2 = &table;
#else
const es_kernels *const es_kernels_avx2 = 0;
#endif
