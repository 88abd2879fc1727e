/* x86_avx2_fp8.c — FP8_B128 matvec and matmul with AVX2, FMA and F16C
 * (fp8.h), fused as the AVX-512 ones (x86_avx512_fp8.c says the
 * arithmetic): 16 e4m3 bytes at a time widened to 16 bits, moved into
 * fp16's fields, converted with vcvtph2ps in registers and multiplied into
 * the fp32 activations; a block's products summed in one vector, added into
 * the row's sum times the block's scale * 256.  The matvec takes 4 rows a
 * pass from the quarters of its range, the matmul a row for 4 tokens over
 * rows blocked to stay in L2 (16 registers); both give the same bits. */
#include "fp8.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#include <string.h>

/* 16 weights / 256 from 16 bytes, as two vectors of 8 */
static inline void dec16(const uint8_t *q, __m256 *w0, __m256 *w1) {
    __m256i x = _mm256_slli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)q)), 8);
    __m256i h = _mm256_and_si256(_mm256_srai_epi16(x, 1), _mm256_set1_epi16((short)0xBF80));
    *w0 = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
    *w1 = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}

/* the last k < 16 columns of a block: bytes and activations copied out
 * (zeros past them), so the same two vectors of 8 */
static inline void dec_tail(const uint8_t *q, int k, __m256 *w0, __m256 *w1) {
    uint8_t b[16] = {0};
    memcpy(b, q, (size_t)k);
    dec16(b, w0, w1);
}
static inline void ld_tail(const float *x, int k, __m256 *x0, __m256 *x1) {
    float v[16] __attribute__((aligned(32))) = {0};
    memcpy(v, x, sizeof(float) * (size_t)k);
    *x0 = _mm256_load_ps(v), *x1 = _mm256_load_ps(v + 8);
}

static inline float hsum(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#define PF_AHEAD_FP8 1024

/* a block's last k < 16 columns, from c, into ba as the full steps add */
static __attribute__((noinline)) void tail(int R, int T, const uint8_t *const *q, const float *const *x, int64_t c,
                                           int k, __m256 ba[4][4]) {
    for (int t = 0; t < T; t++) {
        __m256 x0, x1;
        ld_tail(x[t] + c, k, &x0, &x1);
        for (int r = 0; r < R; r++) {
            __m256 w0, w1;
            dec_tail(q[r] + c, k, &w0, &w1);
            ba[r][t] = _mm256_fmadd_ps(w1, x1, _mm256_fmadd_ps(w0, x0, ba[r][t]));
        }
    }
}

/* R rows against T tokens (R * T <= 4: 16 registers): (row k, token t) into y[t * ys + yi[k]] */
static inline __attribute__((always_inline)) void tile(int R, int T, int pf, const uint8_t *const *q,
                                                       const float *const *sc, int64_t n, const float *const *x,
                                                       float *y, int64_t ys, const int64_t *yi) {
    __m256 acc[4][4], ba[4][4];
#pragma GCC unroll 4
    for (int k = 0; k < R; k++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) acc[k][t] = _mm256_setzero_ps();
    for (int64_t c0 = 0, b = 0; c0 < n; c0 += ES_FP8_BLOCK, b++) {
        const int len = (int)(n - c0 < ES_FP8_BLOCK ? n - c0 : ES_FP8_BLOCK);
        if (pf) {
#pragma GCC unroll 4
            for (int k = 0; k < R; k++) {
                _mm_prefetch((const char *)q[k] + c0 + PF_AHEAD_FP8, _MM_HINT_T0);
                _mm_prefetch((const char *)q[k] + c0 + PF_AHEAD_FP8 + 64, _MM_HINT_T0);
            }
        }
#pragma GCC unroll 4
        for (int k = 0; k < R; k++)
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) ba[k][t] = _mm256_setzero_ps();
        int j = 0;
        for (; j + 16 <= len; j += 16) {
            __m256 w[4][2];
#pragma GCC unroll 4
            for (int k = 0; k < R; k++) dec16(q[k] + c0 + j, &w[k][0], &w[k][1]);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                const __m256 x0 = _mm256_loadu_ps(x[t] + c0 + j), x1 = _mm256_loadu_ps(x[t] + c0 + j + 8);
#pragma GCC unroll 4
                for (int k = 0; k < R; k++) ba[k][t] = _mm256_fmadd_ps(w[k][1], x1, _mm256_fmadd_ps(w[k][0], x0, ba[k][t]));
            }
        }
        if (j < len) tail(R, T, q, x, c0 + j, len - j, ba);
#pragma GCC unroll 4
        for (int k = 0; k < R; k++) {
            const __m256 s = _mm256_set1_ps(sc[k][b] * 256.0f);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) acc[k][t] = _mm256_fmadd_ps(ba[k][t], s, acc[k][t]);
        }
    }
#pragma GCC unroll 4
    for (int k = 0; k < R; k++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) y[t * ys + yi[k]] = hsum(acc[k][t]);
}

ES_FP8_DRIVERS(avx2)

void es_fp8_matmul_avx2(const void *w, size_t row_bytes, int64_t n, const void *act, size_t act_stride,
                        int64_t n_tok, float *y, int64_t y_stride, int64_t r0, int64_t r1) {
    (void)row_bytes;
    const es_fp8_mat *m = w;
    const int64_t rb = es_fp8_row_block(n);
    for (int64_t b0 = r0; b0 < r1; b0 += rb) {
        const int64_t b1 = b0 + rb < r1 ? b0 + rb : r1;
        int64_t t0 = 0;
        for (; t0 + 4 <= n_tok; t0 += 4)
            for (int64_t r = b0; r < b1; r++) mm_tile(1, 4, m, n, act, act_stride, t0, y, y_stride, r);
        for (; t0 < n_tok; t0++)
            for (int64_t r = b0; r < b1; r++) mm_tile(1, 1, m, n, act, act_stride, t0, y, y_stride, r);
    }
}

#endif
