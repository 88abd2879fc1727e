/* x86_avx2_fp8.c — FP8_B128 matvec and matmul with AVX2, FMA and F16C
 * (fp8.h), fused as the AVX-512 ones (x86_avx512_fp8.c): 16 e4m3 bytes at
 * a time widened to 16 bits, moved into fp16's fields, converted with
 * vcvtph2ps in registers, times the block's scale, and multiplied into the
 * fp32 activations with the F32 matvec's arithmetic (tile below); the
 * prefill multiplies dequantised rows with the F32 GEMM (x86_avx2.c,
 * es_fp8_tiled), which gives the same bits.  The matvec takes 4 rows a
 * pass from the quarters of its range; the matmul of rows longer than the
 * tile a row for 4 tokens over rows blocked to stay in L2. */
#include "fp8.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#include "x86_avx2_common.h"

/* 16 weights / 256 from 16 bytes, as two vectors of 8 */
static inline void dec16(const uint8_t *q, __m256 *w0, __m256 *w1) {
    __m256i x = _mm256_slli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)q)), 8);
    __m256i h = _mm256_and_si256(_mm256_srai_epi16(x, 1), _mm256_set1_epi16((short)0xBF80));
    *w0 = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
    *w1 = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}

/* 8 weights / 256 from 8 bytes */
static inline __m256 dec8(const uint8_t *q) {
    __m128i x = _mm_slli_epi16(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)q)), 8);
    return _mm256_cvtph_ps(_mm_and_si128(_mm_srai_epi16(x, 1), _mm_set1_epi16((short)0xBF80)));
}

/* one weight, dequantised as es_fp8_dequant_rows_avx2 does (s1 = scale * 256) */
static inline float dec1(uint8_t b, float s1) { return _cvtsh_ss(es_fp8_to_fp16_scaled(b)) * s1; }

#define PF_AHEAD_FP8 1024

/* R rows against T tokens (R * T <= 4: 16 registers): (row k, token t)
 * into y[t * ys + yi[k]], with the arithmetic of x86_avx2.c's tile_float
 * on the dequantised weights: 8 at a time into one vector sum, its sum,
 * then the last n % 8 one by one. */
static inline __attribute__((always_inline)) void tile(int R, int T, int pf, const uint8_t *const *q,
                                                       const float *const *sc, int64_t n, const float *const *x,
                                                       float *y, int64_t ys, const int64_t *yi) {
    __m256 acc[4][4];
#pragma GCC unroll 4
    for (int k = 0; k < R; k++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) acc[k][t] = _mm256_setzero_ps();
    for (int64_t c0 = 0, b = 0; c0 < n; c0 += ES_FP8_BLOCK, b++) {
        const int len = (int)(n - c0 < ES_FP8_BLOCK ? n - c0 : ES_FP8_BLOCK);
        __m256 s[4];
#pragma GCC unroll 4
        for (int k = 0; k < R; k++) {
            s[k] = _mm256_set1_ps(sc[k][b] * 256.0f);
            if (pf) {
                _mm_prefetch((const char *)q[k] + c0 + PF_AHEAD_FP8, _MM_HINT_T0);
                _mm_prefetch((const char *)q[k] + c0 + PF_AHEAD_FP8 + 64, _MM_HINT_T0);
            }
        }
        int j = 0;
        for (; j + 16 <= len; j += 16) {
            __m256 w[4][2];
#pragma GCC unroll 4
            for (int k = 0; k < R; k++) {
                dec16(q[k] + c0 + j, &w[k][0], &w[k][1]);
                w[k][0] = _mm256_mul_ps(w[k][0], s[k]), w[k][1] = _mm256_mul_ps(w[k][1], s[k]);
            }
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                const __m256 x0 = _mm256_loadu_ps(x[t] + c0 + j), x1 = _mm256_loadu_ps(x[t] + c0 + j + 8);
#pragma GCC unroll 4
                for (int k = 0; k < R; k++) acc[k][t] = _mm256_fmadd_ps(w[k][1], x1, _mm256_fmadd_ps(w[k][0], x0, acc[k][t]));
            }
        }
        if (j + 8 <= len) {
            __m256 w[4];
#pragma GCC unroll 4
            for (int k = 0; k < R; k++) w[k] = _mm256_mul_ps(dec8(q[k] + c0 + j), s[k]);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                const __m256 x0 = _mm256_loadu_ps(x[t] + c0 + j);
#pragma GCC unroll 4
                for (int k = 0; k < R; k++) acc[k][t] = _mm256_fmadd_ps(w[k], x0, acc[k][t]);
            }
        }
    }
    const int64_t tail = n - n % 8, bt = tail / ES_FP8_BLOCK;
#pragma GCC unroll 4
    for (int k = 0; k < R; k++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            float v = hsum8(acc[k][t]);
            for (int64_t c = tail; c < n; c++) {
                const float wv = dec1(q[k][c], sc[k][bt] * 256.0f);
                v += wv * x[t][c];
            }
            y[t * ys + yi[k]] = v;
        }
}

void es_fp8_dequant_rows_avx2(const es_fp8_mat *m, int64_t n, int64_t r0, int64_t r1, float *dst) {
    for (int64_t r = r0; r < r1; r++, dst += n) {
        const uint8_t *q = es_fp8_row(m, n, r);
        const float *sc = es_fp8_row_scales(m, r);
        for (int64_t c0 = 0, b = 0; c0 < n; c0 += ES_FP8_BLOCK, b++) {
            const int len = (int)(n - c0 < ES_FP8_BLOCK ? n - c0 : ES_FP8_BLOCK);
            const float s1 = sc[b] * 256.0f;
            const __m256 s = _mm256_set1_ps(s1);
            int j = 0;
            for (; j + 8 <= len; j += 8) _mm256_storeu_ps(dst + c0 + j, _mm256_mul_ps(dec8(q + c0 + j), s));
            for (; j < len; j++) dst[c0 + j] = dec1(q[c0 + j], s1);
        }
    }
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
