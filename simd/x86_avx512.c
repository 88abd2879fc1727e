/* x86_avx512.c — kernels for x86-64 with AVX-512 F/BW/VL/DQ (the file is
 * compiled with those flags plus VNNI, BF16, FMA and F16C; only called after
 * dispatch.c has checked the CPU and the OS's ZMM state).  es_avx512_for
 * (kernels.h) gives the table in two variants:
 *
 *   without VNNI  the avx2 table (x86_avx2.c, compiled without VNNI flags)
 *                 with this file's float products and vector operations
 *                 over it: no VNNI instruction is reachable from it;
 *   with VNNI     plus this file's 8-bit products: Q8_0/Q4_0 with VPDPBUSD,
 *                 the K-quants and IQ4_XS with VPDPWSSD (x86_kquants.h),
 *                 Q4_1/Q5_0/Q5_1/IQ4_NL with VPDPBUSD (x86_legacy.h).  dispatch.c
 *                 asks for it only where cpuid reports AVX512_VNNI.
 *
 * F32/F16/BF16 matvec and matmul use 512-bit FMA with masked tails; the
 * 8-bit products use 256-bit registers (one Q8_0 block each; the 32
 * registers hold 4x4 prefill tiles).  BF16 instructions are not used: a bf16
 * weight is an fp32 after a shift, and VDPBF16PS would round the
 * activations to bf16.  The vector operations are 512-bit, with an expf
 * built on VSCALEFPS.  Empty slots fall back to generic.c. */
#include "kernels.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512DQ__) && defined(__AVX512VNNI__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#include <math.h>
#include <pthread.h>

#include "x86_avx2_common.h"
#include "fp8.h"
#include "x86_kquants.h"
#include "x86_legacy.h"
#include "x86_vnni_gemm.h"
#include "x86_q8act.h"

/* ---- float weights (512-bit) ---------------------------------------------- */

enum float_fmt { FMT_F32, FMT_F16, FMT_BF16 };

/* 16 values of a row from position i (lanes outside m are zero) */
static inline __attribute__((always_inline)) __m512 load16(enum float_fmt f, const void *p, int64_t i, __mmask16 m) {
    if (f == FMT_F32) return _mm512_maskz_loadu_ps(m, (const float *)p + i);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i);
    if (f == FMT_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* The sums of m <= 16 vectors v[0..m) into out[0..m), each by the tree of
 * _mm512_reduce_add_ps (lane j plus lane j+8, then j+4, j+2, j+1), so a
 * sum has the bits that reducing its vector alone would give; but the m
 * reductions share their shuffles: pairs of vectors are folded into one at
 * each level (45 shuffles and adds for 16 sums instead of about 130).  An
 * odd vector at a level is folded with itself; m is padded with zeros to a
 * power of two.  After the four levels lane 4k+j holds the sum of vector
 * 4j+k (modulo the padded count). */
static inline __attribute__((always_inline)) void reduce_many(int m, __m512 *v, float *out) {
    if (m == 1) {
        out[0] = _mm512_reduce_add_ps(v[0]);
        return;
    }
    int M = 2;
    while (M < m) M *= 2;
#pragma GCC unroll 16
    for (int i = m; i < M && i < 16; i++) v[i] = _mm512_setzero_ps();
    __m512 a[8], b[4], c[2], d;
    /* halves: lane j + lane j+8; two vectors' 8 sums in one */
#pragma GCC unroll 8
    for (int i = 0; i < M / 2; i++)
        a[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
    /* quarters: j + j+4; four vectors' 4 sums, one per 128-bit lane */
    const int na = M / 2, nb = na > 1 ? na / 2 : 1;
#pragma GCC unroll 4
    for (int i = 0; i < nb; i++) {
        __m512 x = a[2 * i < na ? 2 * i : 0], y = a[2 * i + 1 < na ? 2 * i + 1 : 0];
        b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x88), _mm512_shuffle_f32x4(x, y, 0xDD));
    }
    /* j + j+2 within each 128-bit lane, two vectors of sums a lane */
    const int nc = nb > 1 ? nb / 2 : 1;
#pragma GCC unroll 2
    for (int i = 0; i < nc; i++) {
        __m512d x = _mm512_castps_pd(b[2 * i < nb ? 2 * i : 0]), y = _mm512_castps_pd(b[2 * i + 1 < nb ? 2 * i + 1 : 0]);
        c[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    /* j + j+1 */
    const __m512 x = c[0], y = c[nc > 1 ? 1 : 0];
    d = _mm512_add_ps(_mm512_shuffle_ps(x, y, 0x88), _mm512_shuffle_ps(x, y, 0xDD));
    float lanes[16];
    _mm512_storeu_ps(lanes, d);
#pragma GCC unroll 16
    for (int i = 0; i < m; i++) out[i] = lanes[4 * (i % 4) + i / 4];
}

/* Rows r..r+R-1 times tokens 0..T-1 (see x86_avx2.c's tile_float), R·T <=
 * 16 accumulators; the ragged end of a row is one masked step.  Each
 * output's accumulator sees the same steps in the same order whatever R
 * and T are, and reduce_many sums it as its own reduction would, so a row
 * has the same bits in any tile. */
static inline __attribute__((always_inline)) void tile_f512(enum float_fmt f, int R, int T, const void *w, size_t rb,
                                                            int64_t n, const void *act, size_t as, float *y,
                                                            int64_t ys, int64_t r) {
    const char *row[8];
    const float *x[4];
    __m512 acc[8][4];
    const size_t es = f == FMT_F32 ? 4 : 2;
#pragma GCC unroll 8
    for (int k = 0; k < R; k++) row[k] = (const char *)w + (size_t)(r + k) * rb;
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) x[t] = (const float *)((const char *)act + (size_t)t * as);
#pragma GCC unroll 8
    for (int k = 0; k < R; k++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) acc[k][t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = i + 16 <= n ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 wv[8];
        if (R >= 4) {
            matvec_prefetch(row[0], rb, (size_t)i * es, 16 * es);
            if (R == 8) matvec_prefetch(row[4], rb, (size_t)i * es, 16 * es);
        }
#pragma GCC unroll 8
        for (int k = 0; k < R; k++) wv[k] = load16(f, row[k], i, m);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            __m512 a = _mm512_maskz_loadu_ps(m, x[t] + i);
#pragma GCC unroll 8
            for (int k = 0; k < R; k++) acc[k][t] = _mm512_fmadd_ps(wv[k], a, acc[k][t]);
        }
    }
    __m512 v[16];
    float sum[16];
#pragma GCC unroll 8
    for (int k = 0; k < R; k++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) v[k * T + t] = acc[k][t];
    reduce_many(R * T, v, sum);
#pragma GCC unroll 8
    for (int k = 0; k < R; k++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) y[t * ys + r + k] = sum[k * T + t];
}

static inline __attribute__((always_inline)) void matvec_f512(enum float_fmt f, const void *w, size_t rb, int64_t n,
                                                              const void *x, float *y, int64_t r0, int64_t r1) {
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) tile_f512(f, 4, 1, w, rb, n, x, 0, y, 0, r);
    for (; r < r1; r++) tile_f512(f, 1, 1, w, rb, n, x, 0, y, 0, r);
}

/* a pass of T tokens (1..4) over rows [r0, r1): 8-row tiles for 2 tokens
 * (16 accumulators), else 4-row tiles (one token keeps 4: its 8-row tiles
 * measured slower on the default model), then 2 and 1 */
static inline __attribute__((always_inline)) void rows_f512(enum float_fmt f, int T, const void *w, size_t rb,
                                                            int64_t n, const void *act, size_t as, float *y,
                                                            int64_t ys, int64_t r0, int64_t r1) {
    int64_t r = r0;
    if (T <= 2)
        for (; r + 8 <= r1; r += 8) tile_f512(f, 8, T, w, rb, n, act, as, y, ys, r);
    for (; r + 4 <= r1; r += 4) tile_f512(f, 4, T, w, rb, n, act, as, y, ys, r);
    if (r + 2 <= r1) {
        tile_f512(f, 2, T, w, rb, n, act, as, y, ys, r);
        r += 2;
    }
    if (r < r1) tile_f512(f, 1, T, w, rb, n, act, as, y, ys, r);
}

static inline __attribute__((always_inline)) void pass_f512(enum float_fmt f, int T, const void *w, size_t rb,
                                                            int64_t n, const void *act, size_t as, float *y,
                                                            int64_t ys, int64_t r0, int64_t r1) {
    switch (T) {
    case 1: rows_f512(f, 1, w, rb, n, act, as, y, ys, r0, r1); break;
    case 2: rows_f512(f, 2, w, rb, n, act, as, y, ys, r0, r1); break;
    case 3: rows_f512(f, 3, w, rb, n, act, as, y, ys, r0, r1); break;
    default: rows_f512(f, 4, w, rb, n, act, as, y, ys, r0, r1); break;
    }
}
static void pass_f32(int T, const void *w, size_t rb, int64_t n, const void *act, size_t as, float *y, int64_t ys,
                     int64_t r0, int64_t r1) {
    pass_f512(FMT_F32, T, w, rb, n, act, as, y, ys, r0, r1);
}
static void pass_f16(int T, const void *w, size_t rb, int64_t n, const void *act, size_t as, float *y, int64_t ys,
                     int64_t r0, int64_t r1) {
    pass_f512(FMT_F16, T, w, rb, n, act, as, y, ys, r0, r1);
}
static void pass_bf16(int T, const void *w, size_t rb, int64_t n, const void *act, size_t as, float *y, int64_t ys,
                      int64_t r0, int64_t r1) {
    pass_f512(FMT_BF16, T, w, rb, n, act, as, y, ys, r0, r1);
}

static void matvec_f32(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matvec_f512(FMT_F32, w, rb, n, act, y, r0, r1);
}
static void matvec_f16(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matvec_f512(FMT_F16, w, rb, n, act, y, r0, r1);
}
static void matvec_bf16(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matvec_f512(FMT_BF16, w, rb, n, act, y, r0, r1);
}
static void matmul_f32(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                       int64_t ys, int64_t r0, int64_t r1) {
    matmul_blocked(pass_f32, (size_t)n * sizeof(float), w, rb, n, act, as, nt, y, ys, r0, r1);
}
static void matmul_f16(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                       int64_t ys, int64_t r0, int64_t r1) {
    matmul_blocked(pass_f16, (size_t)n * sizeof(float), w, rb, n, act, as, nt, y, ys, r0, r1);
}
static void matmul_bf16(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                        int64_t ys, int64_t r0, int64_t r1) {
    matmul_blocked(pass_bf16, (size_t)n * sizeof(float), w, rb, n, act, as, nt, y, ys, r0, r1);
}

/* ---- FP8_B128 (fp8.h): the prefill through the F32 GEMM on dequantised rows ---
 * (the fused matvec, x86_avx512_fp8.c, runs matvec_f32's arithmetic on the
 * same values, so a prefill row equals its decode) */
static void matmul_fp8(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                       int64_t ys, int64_t r0, int64_t r1) {
    es_fp8_tiled(es_fp8_dequant_rows_avx512, matvec_f32, matmul_f32, es_fp8_matvec_avx512, es_fp8_matmul_avx512, w,
                 rb, n, act, as, nt, y, ys, r0, r1);
}

/* ---- Q8_0 / Q4_0 against Q8_0 activations with VNNI -------------------------
 *
 * VPDPBUSD multiplies unsigned by signed bytes, adding groups of four into
 * int32 lanes of an accumulator it starts from.  Q4_0 weights are q - 8 with
 * q in 0..15: Σ(q-8)·a = Σq·a - 8·Σa.  Q8_0 weights w are signed: w ^ 0x80
 * is w + 128 as an unsigned byte, and Σw·a = Σ(w+128)·a - 128·Σa.  So each
 * activation block yields a start value -8·Σa or -128·Σa (per int32 lane,
 * shared by every row), and each weight block needs one VPDPBUSD per
 * token.  No intermediate saturates (|Σ of 4| <= 4·255·127).
 *
 * The matvec and the prefill passes are x86_q8act.h's, compiled here with
 * VNNI; the row-in-lanes gemm (x86_vnni_gemm.h) shares their arithmetic, so
 * every product of a row agrees bit for bit. */

static void pass_q8_0_vnni(int T, const void *w, size_t rb, int64_t n, const void *act, size_t as, float *y,
                           int64_t ys, int64_t r0, int64_t r1) {
    q8a_pass(0, T, w, rb, n, act, as, y, ys, r0, r1);
}
static void pass_q4_0_vnni(int T, const void *w, size_t rb, int64_t n, const void *act, size_t as, float *y,
                           int64_t ys, int64_t r0, int64_t r1) {
    q8a_pass(1, T, w, rb, n, act, as, y, ys, r0, r1);
}

static void matvec_q8_0_vnni(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    q8a_matvec(0, w, rb, n, act, y, r0, r1);
}
static void matvec_q4_0_vnni(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    q8a_matvec(1, w, rb, n, act, y, r0, r1);
}
/* matmul: 16-row tiles (x86_vnni_gemm.h); 4x4 tiles only for rows too long
 * for its buffer */
static void matmul_q8_0_vnni(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                             int64_t ys, int64_t r0, int64_t r1) {
    if (!gemm_vnni(0, w, rb, n, act, as, nt, y, ys, r0, r1))
        matmul_blocked(pass_q8_0_vnni, (size_t)n / 32 * sizeof(block_q8_0), w, rb, n, act, as, nt, y, ys, r0, r1);
}
static void matmul_q4_0_vnni(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                             int64_t ys, int64_t r0, int64_t r1) {
    if (!gemm_vnni(1, w, rb, n, act, as, nt, y, ys, r0, r1))
        matmul_blocked(pass_q4_0_vnni, (size_t)n / 32 * sizeof(block_q8_0), w, rb, n, act, as, nt, y, ys, r0, r1);
}

/* ---- vector operations (512-bit, masked tails) ------------------------------ */

static inline __mmask16 mask_at(int64_t i, int64_t n) {
    return i + 16 <= n ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
}

/* e^x for 16 floats: as x86_avx2_common.h's exp8 (same reduction and
 * polynomial), with 2^n applied by VSCALEFPS, which itself gives +inf on
 * overflow and denormals/0 on underflow. */
static inline __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(88.8f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

static float dot_avx512(const float *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = mask_at(i, n);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

static void axpy_avx512(float *y, float a, const float *x, int64_t n) {
    __m512 va = _mm512_set1_ps(a);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = mask_at(i, n);
        _mm512_mask_storeu_ps(y + i, m,
                              _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

static void rmsnorm_avx512(float *y, const float *x, const float *w, int64_t n, float eps) {
    __m512 vi = _mm512_set1_ps(1.0f / sqrtf(dot_avx512(x, x, n) / (float)n + eps));
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = mask_at(i, n);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vi);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + i)));
    }
}

static void silu_mul_avx512(float *g, const float *u, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = mask_at(i, n);
        __m512 x = _mm512_maskz_loadu_ps(m, g + i);
        __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
        __m512 r = _mm512_mul_ps(_mm512_div_ps(x, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(m, u + i));
        _mm512_mask_storeu_ps(g + i, m, r);
    }
}

static void softmax_avx512(float *x, int64_t n) {
    if (n <= 0) return;
    __m512 mx = _mm512_set1_ps(x[0]);
    for (int64_t i = 0; i < n; i += 16)
        mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mx, mask_at(i, n), x + i));
    /* NaN anywhere makes every output NaN, as generic's sum does */
    __m512 vm = _mm512_set1_ps(_mm512_reduce_max_ps(mx)), sum = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = mask_at(i, n);
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vm));
        sum = _mm512_mask_add_ps(sum, m, sum, e);
        _mm512_mask_storeu_ps(x + i, m, e);
    }
    __m512 vs = _mm512_set1_ps(_mm512_reduce_add_ps(sum));
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = mask_at(i, n);
        _mm512_mask_storeu_ps(x + i, m, _mm512_div_ps(_mm512_maskz_loadu_ps(m, x + i), vs));
    }
}

/* ---- latent cache rows: F16/BF16 16 values a step (masked tail), Q8_0 --------- */

static inline __m512 kv16(int bf, const uint16_t *h, __mmask16 m) {
    __m256i v = _mm256_maskz_loadu_epi16(m, h);
    if (!bf) return _mm512_cvtph_ps(v);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16)); /* bf16: the top half */
}

static inline float dot_kv16_512(int bf, const float *a, const void *x, int64_t n) {
    const uint16_t *h = x;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), kv16(bf, h + i, 0xffff), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), kv16(bf, h + i + 16, 0xffff), s1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = mask_at(i, n);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), kv16(bf, h + i, m), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

static inline void axpy_kv16_512(int bf, float *y, float a, const void *x, int64_t n) {
    const uint16_t *h = x;
    __m512 va = _mm512_set1_ps(a);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = mask_at(i, n);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, kv16(bf, h + i, m), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

static float dot_kv_f16_512(const float *a, const void *x, int64_t n) { return dot_kv16_512(0, a, x, n); }
static float dot_kv_bf16_512(const float *a, const void *x, int64_t n) { return dot_kv16_512(1, a, x, n); }
static void axpy_kv_f16_512(float *y, float a, const void *x, int64_t n) { axpy_kv16_512(0, y, a, x, n); }
static void axpy_kv_bf16_512(float *y, float a, const void *x, int64_t n) { axpy_kv16_512(1, y, a, x, n); }

/* 16 weights of a Q8_0 block from qs on, as floats */
static inline __m512 q8x16(const int8_t *qs) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)qs)));
}

static float dot_kv_q8_0_512(const float *a, const void *x, int64_t n) {
    const block_q8_0 *b = x;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const float *ab = a + i * QK8_0;
        __m512 bs = _mm512_fmadd_ps(_mm512_loadu_ps(ab + 16), q8x16(b[i].qs + 16),
                                    _mm512_mul_ps(_mm512_loadu_ps(ab), q8x16(b[i].qs)));
        acc = _mm512_fmadd_ps(bs, _mm512_set1_ps(es_fp16_to_f32(b[i].d)), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

static void axpy_kv_q8_0_512(float *y, float a, const void *x, int64_t n) {
    const block_q8_0 *b = x;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const __m512 ad = _mm512_set1_ps(a * es_fp16_to_f32(b[i].d));
        float *yb = y + i * QK8_0;
        _mm512_storeu_ps(yb, _mm512_fmadd_ps(ad, q8x16(b[i].qs), _mm512_loadu_ps(yb)));
        _mm512_storeu_ps(yb + 16, _mm512_fmadd_ps(ad, q8x16(b[i].qs + 16), _mm512_loadu_ps(yb + 16)));
    }
}

/* ---- latent cache rows for several heads at once ------------------------------
 *
 * The absorbed attention scores G heads against each cache row and adds
 * each row into G latent sums; these steps read a row once for up to 8
 * heads (x86_kv_heads.h runs them), each value computed exactly as
 * dot_avx512 / dot_kv16_512 (two accumulators over 32-value steps, a masked
 * tail, the same reduction) and axpy_avx512 / axpy_kv16_512 (one fused
 * multiply-add per row, a masked tail) compute it for one head. */
#define KVH_HB 8
#define KVH_W 16

static inline __attribute__((always_inline)) void kvh_dot_row(enum float_fmt f, int GN, const float *q, int64_t qs,
                                                              const void *x, int64_t n, float *att, int64_t as) {
    __m512 s0[KVH_HB], s1[KVH_HB];
#pragma GCC unroll 8
    for (int k = 0; k < GN; k++) s0[k] = s1[k] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m512 x0 = load16(f, x, i, 0xffff), x1 = load16(f, x, i + 16, 0xffff);
#pragma GCC unroll 8
        for (int k = 0; k < GN; k++) {
            s0[k] = _mm512_fmadd_ps(_mm512_loadu_ps(q + k * qs + i), x0, s0[k]);
            s1[k] = _mm512_fmadd_ps(_mm512_loadu_ps(q + k * qs + i + 16), x1, s1[k]);
        }
    }
    for (; i < n; i += 16) {
        const __mmask16 m = mask_at(i, n);
        const __m512 x0 = load16(f, x, i, m);
#pragma GCC unroll 8
        for (int k = 0; k < GN; k++) s0[k] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + k * qs + i), x0, s0[k]);
    }
#pragma GCC unroll 8
    for (int k = 0; k < GN; k++) att[k * as] = _mm512_reduce_add_ps(_mm512_add_ps(s0[k], s1[k]));
}

static inline __attribute__((always_inline)) void kvh_axpy_strip(enum float_fmt f, int GN, float *u, int64_t us,
                                                                 const float *p, int64_t ps, const uint8_t *rows,
                                                                 size_t rb, int64_t r0, int64_t r1, int64_t i, int w) {
    const __mmask16 m = (__mmask16)(w == 16 ? 0xffff : (1u << w) - 1);
    __m512 acc[KVH_HB];
#pragma GCC unroll 8
    for (int k = 0; k < GN; k++) acc[k] = _mm512_maskz_loadu_ps(m, u + k * us + i);
    for (int64_t r = r0; r < r1; r++) {
        const __m512 x = load16(f, rows + (size_t)r * rb, i, m);
#pragma GCC unroll 8
        for (int k = 0; k < GN; k++) acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(p[k * ps + r]), x, acc[k]);
    }
#pragma GCC unroll 8
    for (int k = 0; k < GN; k++) _mm512_mask_storeu_ps(u + k * us + i, m, acc[k]);
}

#include "x86_kv_heads.h"

/* ---- the tables ------------------------------------------------------------- */

/* What this file adds to any AVX-512 CPU: float products and vector ops. */
static const es_kernels table = {
    .name = "avx512",
    .matvec = {[ES_TYPE_F32] = matvec_f32, [ES_TYPE_F16] = matvec_f16, [ES_TYPE_BF16] = matvec_bf16,
               [ES_TYPE_FP8_B128] = es_fp8_matvec_avx512},
    .matmul = {[ES_TYPE_F32] = matmul_f32, [ES_TYPE_F16] = matmul_f16, [ES_TYPE_BF16] = matmul_bf16,
               [ES_TYPE_FP8_B128] = matmul_fp8},
    .rmsnorm = rmsnorm_avx512,
    .dot_f32 = dot_avx512,
    .axpy_f32 = axpy_avx512,
    .silu_mul = silu_mul_avx512,
    .softmax = softmax_avx512,
    .dot_kv = {[ES_TYPE_F16] = dot_kv_f16_512, [ES_TYPE_BF16] = dot_kv_bf16_512, [ES_TYPE_Q8_0] = dot_kv_q8_0_512},
    .axpy_kv = {[ES_TYPE_F16] = axpy_kv_f16_512, [ES_TYPE_BF16] = axpy_kv_bf16_512, [ES_TYPE_Q8_0] = axpy_kv_q8_0_512},
    .dot_kv_heads = {[ES_TYPE_F32] = dot_heads_f32, [ES_TYPE_F16] = dot_heads_f16, [ES_TYPE_BF16] = dot_heads_bf16},
    .axpy_kv_heads = {[ES_TYPE_F32] = axpy_heads_f32, [ES_TYPE_F16] = axpy_heads_f16, [ES_TYPE_BF16] = axpy_heads_bf16},
};

/* ... and with VNNI, the 8-bit products too. */
static const es_kernels table_vnni = {
    .matvec = {[ES_TYPE_Q8_0] = matvec_q8_0_vnni, [ES_TYPE_Q4_0] = matvec_q4_0_vnni, [ES_TYPE_Q2_K] = kq_matvec_q2_K,
               [ES_TYPE_Q3_K] = kq_matvec_q3_K, [ES_TYPE_Q4_K] = kq_matvec_q4_K, [ES_TYPE_Q5_K] = kq_matvec_q5_K,
               [ES_TYPE_Q6_K] = kq_matvec_q6_K, [ES_TYPE_Q4_1] = lg_matvec_q4_1, [ES_TYPE_Q5_0] = lg_matvec_q5_0,
               [ES_TYPE_Q5_1] = lg_matvec_q5_1, [ES_TYPE_IQ4_NL] = lg_matvec_iq4_nl, [ES_TYPE_IQ4_XS] = kq_matvec_iq4_xs,
               IQ_X86_MATVEC},
    .act_type = {[ES_TYPE_Q8_0] = ES_TYPE_Q8_0, [ES_TYPE_Q4_0] = ES_TYPE_Q8_0, [ES_TYPE_Q2_K] = ES_TYPE_Q8_K,
                 [ES_TYPE_Q3_K] = ES_TYPE_Q8_K, [ES_TYPE_Q4_K] = ES_TYPE_Q8_K, [ES_TYPE_Q5_K] = ES_TYPE_Q8_K,
                 [ES_TYPE_Q6_K] = ES_TYPE_Q8_K, [ES_TYPE_Q4_1] = ES_TYPE_Q8_0, [ES_TYPE_Q5_0] = ES_TYPE_Q8_0,
                 [ES_TYPE_Q5_1] = ES_TYPE_Q8_0, [ES_TYPE_IQ4_NL] = ES_TYPE_Q8_0, [ES_TYPE_IQ4_XS] = ES_TYPE_Q8_K,
                 IQ_X86_ACT_TYPES},
    .matmul = {[ES_TYPE_Q8_0] = matmul_q8_0_vnni, [ES_TYPE_Q4_0] = matmul_q4_0_vnni, [ES_TYPE_Q2_K] = kq_matmul_q2_K,
               [ES_TYPE_Q3_K] = kq_matmul_q3_K, [ES_TYPE_Q4_K] = kq_matmul_q4_K, [ES_TYPE_Q5_K] = kq_matmul_q5_K,
               [ES_TYPE_Q6_K] = kq_matmul_q6_K, [ES_TYPE_Q5_0] = lg_matmul_q5_0,
               [ES_TYPE_IQ4_NL] = lg_matmul_iq4_nl,
               [ES_TYPE_IQ4_XS] = kq_matmul_iq4_xs, IQ_X86_MATMUL},
};

/* dst's slots overwritten by src's non-empty ones */
static void overlay(es_kernels *dst, const es_kernels *src) {
    for (int t = 0; t < ES_TYPE_COUNT; t++) {
        if (src->matvec[t]) {
            dst->matvec[t] = src->matvec[t];
            dst->act_type[t] = src->act_type[t];
        }
        if (src->matmul[t]) dst->matmul[t] = src->matmul[t];
        if (src->dequant_row[t]) dst->dequant_row[t] = src->dequant_row[t];
        if (src->quant_row[t]) dst->quant_row[t] = src->quant_row[t];
        if (src->dot_kv[t]) dst->dot_kv[t] = src->dot_kv[t];
        if (src->axpy_kv[t]) dst->axpy_kv[t] = src->axpy_kv[t];
        if (src->dot_kv_heads[t]) dst->dot_kv_heads[t] = src->dot_kv_heads[t];
        if (src->axpy_kv_heads[t]) dst->axpy_kv_heads[t] = src->axpy_kv_heads[t];
    }
    if (src->rmsnorm) dst->rmsnorm = src->rmsnorm;
    if (src->dot_f32) dst->dot_f32 = src->dot_f32;
    if (src->axpy_f32) dst->axpy_f32 = src->axpy_f32;
    if (src->silu_mul) dst->silu_mul = src->silu_mul;
    if (src->softmax) dst->softmax = src->softmax;
}

static es_kernels full[2];
static pthread_once_t full_once = PTHREAD_ONCE_INIT;
static void build_full(void) {
    for (int v = 0; v < 2; v++) {
        full[v] = *es_kernels_avx2; /* every AVX-512 CPU has AVX2, FMA and F16C */
        overlay(&full[v], &table);
        if (v) overlay(&full[v], &table_vnni);
        full[v].name = "avx512";
    }
}

const es_kernels *es_avx512_for(int vnni) {
    pthread_once(&full_once, build_full);
    return &full[vnni ? 1 : 0];
}
const es_kernels *const es_kernels_avx512 = &table;
#else
const es_kernels *es_avx512_for(int vnni) {
    (void)vnni;
    return 0;
}
const es_kernels *const es_kernels_avx512 = 0;
#endif
