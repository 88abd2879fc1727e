/* x86_avx2.c — kernels for x86-64 with AVX2, FMA and F16C (compiled with
 * -mavx2 -mfma -mf16c; only ever called after dispatch.c has checked the
 * CPU and OS).  Q8_0 and Q4_0 rows are multiplied with activations that
 * were quantised to Q8_0 once per product (act_type), using 8-bit integer
 * multiply-adds; float formats use FMA on fp32.  Slots left empty fall back
 * to generic.c. */
#include "kernels.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#include <math.h>

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

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

/* One body for the three float formats (specialised by always_inline):
 * 4 independent accumulators (32 values a step) hide the FMA latency; a
 * scalar tail handles ragged n. */
static inline __attribute__((always_inline)) void matvec_float(enum float_fmt f, const void *w, size_t rb, int64_t n,
                                                               const float *x, float *y, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const void *row = (const char *)w + (size_t)r * rb;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int64_t i = 0;
        for (; i + 32 <= n; i += 32) {
            a0 = _mm256_fmadd_ps(load8(f, row, i), _mm256_loadu_ps(x + i), a0);
            a1 = _mm256_fmadd_ps(load8(f, row, i + 8), _mm256_loadu_ps(x + i + 8), a1);
            a2 = _mm256_fmadd_ps(load8(f, row, i + 16), _mm256_loadu_ps(x + i + 16), a2);
            a3 = _mm256_fmadd_ps(load8(f, row, i + 24), _mm256_loadu_ps(x + i + 24), a3);
        }
        for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load8(f, row, i), _mm256_loadu_ps(x + i), a0);
        float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        for (; i < n; i++) s += load1(f, row, i) * x[i];
        y[r] = s;
    }
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

/* ---- 8-bit block formats against Q8_0 activations ------------------------- */

/* Σ w·a over one 32-value block of signed bytes, as 8 int32 lanes in float.
 * maddubs needs one unsigned operand: |w| and sign(w)·a give the same
 * products. */
static inline __m256 block_dot(__m256i w, __m256i a) {
    __m256i aw = _mm256_sign_epi8(w, w);
    __m256i sa = _mm256_sign_epi8(a, w);
    __m256i p16 = _mm256_maddubs_epi16(aw, sa);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

static inline __m256i unpack_q4_0(const uint8_t *qs) {
    __m128i t = _mm_loadu_si128((const __m128i *)qs);
    __m256i b = _mm256_set_m128i(_mm_srli_epi16(t, 4), t); /* low nibbles: 0..15, high: 16..31 */
    b = _mm256_and_si256(b, _mm256_set1_epi8(0x0f));
    return _mm256_sub_epi8(b, _mm256_set1_epi8(8));
}

/* The 32 weights of block i of a Q8_0 or Q4_0 row as signed bytes, and
 * the block's scale. */
static inline __attribute__((always_inline)) __m256i block_weights(int is_q4, const void *row, int64_t i,
                                                                   float *d) {
    if (is_q4) {
        const block_q4_0 *b = (const block_q4_0 *)row + i;
        *d = _cvtsh_ss(b->d);
        return unpack_q4_0(b->qs);
    }
    const block_q8_0 *b = (const block_q8_0 *)row + i;
    *d = _cvtsh_ss(b->d);
    return _mm256_loadu_si256((const __m256i *)b->qs);
}

/* Two accumulators over alternate blocks keep two FMA chains in flight. */
static inline __attribute__((always_inline)) void matvec_q8act(int is_q4, const void *w, size_t rb, int64_t n,
                                                               const block_q8_0 *a, float *y, int64_t r0,
                                                               int64_t r1) {
    const int64_t nb = n / 32;
    for (int64_t r = r0; r < r1; r++) {
        const void *row = (const char *)w + (size_t)r * rb;
        __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int64_t i = 0; i < nb; i++) {
            float dw;
            __m256i q = block_weights(is_q4, row, i, &dw);
            __m256 d = _mm256_set1_ps(dw * _cvtsh_ss(a[i].d));
            acc[i & 1] = _mm256_fmadd_ps(d, block_dot(q, _mm256_loadu_si256((const __m256i *)a[i].qs)), acc[i & 1]);
        }
        y[r] = hsum(_mm256_add_ps(acc[0], acc[1]));
    }
}

static void matvec_q8_0(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matvec_q8act(0, w, rb, n, act, y, r0, r1);
}
static void matvec_q4_0(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    matvec_q8act(1, w, rb, n, act, y, r0, r1);
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
    float s = hsum(_mm256_add_ps(s0, s1));
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

static const es_kernels table = {
    .name = "avx2",
    .matvec = {[ES_TYPE_F32] = matvec_f32, [ES_TYPE_F16] = matvec_f16, [ES_TYPE_BF16] = matvec_bf16,
               [ES_TYPE_Q8_0] = matvec_q8_0, [ES_TYPE_Q4_0] = matvec_q4_0},
    .act_type = {[ES_TYPE_Q8_0] = ES_TYPE_Q8_0, [ES_TYPE_Q4_0] = ES_TYPE_Q8_0},
    .rmsnorm = rmsnorm_avx2,
    .dot_f32 = dot_avx2,
    .axpy_f32 = axpy_avx2,
};
const es_kernels *const es_kernels_avx2 = &table;
#else
const es_kernels *const es_kernels_avx2 = 0;
#endif
