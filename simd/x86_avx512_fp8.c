/* x86_avx512_fp8.c — FP8_B128 matvec and matmul with AVX-512F/BW (fp8.h),
 * fused: the weights are decoded in registers from their e4m3 bytes (one
 * byte a weight, so the matvec runs near the memory's speed, as Q8_0's), never
 * stored as floats; and the rows dequantised into a tile for the prefill
 * through the F32 GEMM (x86_avx512.c, es_fp8_tiled), which gives the
 * same bits.  32 (at a block's end 16, then fewer, masked) bytes at a
 * time are widened to 16 bits, moved into fp16's fields (b << 8, shifted
 * right arithmetically by one, the copy of the sign masked off: the value /
 * 256, exact for every byte, subnormals included) and converted with
 * vcvtph2ps.
 *
 * The arithmetic of one (row, token) is the F32 matvec's on the dequantised
 * weights: each weight (e4m3 / 256) * (scale * 256), rounded to fp32 once,
 * 16 at a time in column order multiplied into one vector sum (the last 16
 * masked), whose sum is the value.  The matvec takes 4 rows a pass, one
 * from each quarter of its range (x86_avx2_common.h says why), with a
 * prefetch ahead in each.  The matmul of rows longer than the tile decodes
 * 2 rows once for 4 tokens, over rows blocked to stay in L2, with the same
 * additions, so every product gives the same bits on any row range. */
#include "fp8.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>

/* 16 weights / 256 from 16 bytes; n < 16: the first n, the rest 0 */
static inline __m512 dec16(const uint8_t *q, int n) {
    __m128i b = n >= 16 ? _mm_loadu_si128((const __m128i *)q) : _mm_maskz_loadu_epi8((__mmask16)((1u << n) - 1), q);
    __m256i x = _mm256_slli_epi16(_mm256_cvtepu8_epi16(b), 8);
    __m256i h = _mm256_and_si256(_mm256_srai_epi16(x, 1), _mm256_set1_epi16((short)0xBF80));
    return _mm512_cvtph_ps(h);
}

/* 32 weights / 256 from 32 bytes, as two vectors of 16 */
static inline void dec32(const uint8_t *q, __m512 *w0, __m512 *w1) {
    __m512i x = _mm512_slli_epi16(_mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)q)), 8);
    __m512i h = _mm512_and_si512(_mm512_srai_epi16(x, 1), _mm512_set1_epi16((short)0xBF80));
    *w0 = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
    *w1 = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
}

static inline __m512 ld16(const float *x, int n) {
    return n >= 16 ? _mm512_loadu_ps(x) : _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), x);
}

#define PF_AHEAD_FP8 1024 /* bytes ahead in each row's stream */

/* R rows (bytes q[k], scale rows sc[k]) against T tokens x[t]: the value of
 * (row k, token t) into y[t * ys + yi[k]]. */
static inline __attribute__((always_inline)) void tile(int R, int T, int pf, const uint8_t *const *q,
                                                       const float *const *sc, int64_t n, const float *const *x,
                                                       float *y, int64_t ys, const int64_t *yi) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int k = 0; k < R; k++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) acc[k][t] = _mm512_setzero_ps();
    for (int64_t c0 = 0, b = 0; c0 < n; c0 += ES_FP8_BLOCK, b++) {
        const int len = (int)(n - c0 < ES_FP8_BLOCK ? n - c0 : ES_FP8_BLOCK);
        __m512 s[4];
#pragma GCC unroll 4
        for (int k = 0; k < R; k++) {
            s[k] = _mm512_set1_ps(sc[k][b] * 256.0f);
            if (pf) {
                _mm_prefetch((const char *)q[k] + c0 + PF_AHEAD_FP8, _MM_HINT_T0);
                _mm_prefetch((const char *)q[k] + c0 + PF_AHEAD_FP8 + 64, _MM_HINT_T0);
            }
        }
        int j = 0;
        for (; j + 32 <= len; j += 32) {
            __m512 w[4][2];
#pragma GCC unroll 4
            for (int k = 0; k < R; k++) {
                dec32(q[k] + c0 + j, &w[k][0], &w[k][1]);
                w[k][0] = _mm512_mul_ps(w[k][0], s[k]), w[k][1] = _mm512_mul_ps(w[k][1], s[k]);
            }
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                const __m512 x0 = _mm512_loadu_ps(x[t] + c0 + j), x1 = _mm512_loadu_ps(x[t] + c0 + j + 16);
#pragma GCC unroll 4
                for (int k = 0; k < R; k++) acc[k][t] = _mm512_fmadd_ps(w[k][1], x1, _mm512_fmadd_ps(w[k][0], x0, acc[k][t]));
            }
        }
        for (; j < len; j += 16) {
            const int m = len - j < 16 ? len - j : 16;
            __m512 w[4];
#pragma GCC unroll 4
            for (int k = 0; k < R; k++) w[k] = _mm512_mul_ps(dec16(q[k] + c0 + j, m), s[k]);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                const __m512 x0 = ld16(x[t] + c0 + j, m);
#pragma GCC unroll 4
                for (int k = 0; k < R; k++) acc[k][t] = _mm512_fmadd_ps(w[k], x0, acc[k][t]);
            }
        }
    }
#pragma GCC unroll 4
    for (int k = 0; k < R; k++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) y[t * ys + yi[k]] = _mm512_reduce_add_ps(acc[k][t]);
}

void es_fp8_dequant_rows_avx512(const es_fp8_mat *m, int64_t n, int64_t r0, int64_t r1, float *dst) {
    for (int64_t r = r0; r < r1; r++, dst += n) {
        const uint8_t *q = es_fp8_row(m, n, r);
        const float *sc = es_fp8_row_scales(m, r);
        for (int64_t c0 = 0, b = 0; c0 < n; c0 += ES_FP8_BLOCK, b++) {
            const int len = (int)(n - c0 < ES_FP8_BLOCK ? n - c0 : ES_FP8_BLOCK);
            const __m512 s = _mm512_set1_ps(sc[b] * 256.0f);
            int j = 0;
            for (; j + 32 <= len; j += 32) {
                __m512 w0, w1;
                dec32(q + c0 + j, &w0, &w1);
                _mm512_storeu_ps(dst + c0 + j, _mm512_mul_ps(w0, s));
                _mm512_storeu_ps(dst + c0 + j + 16, _mm512_mul_ps(w1, s));
            }
            for (; j < len; j += 16) {
                const int k = len - j < 16 ? len - j : 16;
                _mm512_mask_storeu_ps(dst + c0 + j, (__mmask16)((1u << k) - 1), _mm512_mul_ps(dec16(q + c0 + j, k), s));
            }
        }
    }
}

ES_FP8_DRIVERS(avx512)

/* rows [r0, r1) against the T tokens from t0, 2 rows a tile */
static inline __attribute__((always_inline)) void mm_rows(int T, const es_fp8_mat *m, int64_t n, const void *act,
                                                          size_t as, int64_t t0, float *y, int64_t ys, int64_t r0,
                                                          int64_t r1) {
    int64_t r = r0;
    for (; r + 2 <= r1; r += 2) mm_tile(2, T, m, n, act, as, t0, y, ys, r);
    if (r < r1) mm_tile(1, T, m, n, act, as, t0, y, ys, r);
}

void es_fp8_matmul_avx512(const void *w, size_t row_bytes, int64_t n, const void *act, size_t act_stride,
                          int64_t n_tok, float *y, int64_t y_stride, int64_t r0, int64_t r1) {
    (void)row_bytes;
    const es_fp8_mat *m = w;
    /* rows a block: about 64 KiB of weights, which stay in L2 while every
     * 4 tokens pass over them */
    const int64_t rb = es_fp8_row_block(n);
    for (int64_t b0 = r0; b0 < r1; b0 += rb) {
        const int64_t b1 = b0 + rb < r1 ? b0 + rb : r1;
        int64_t t0 = 0;
        for (; t0 + 4 <= n_tok; t0 += 4) mm_rows(4, m, n, act, act_stride, t0, y, y_stride, b0, b1);
        switch (n_tok - t0) {
        case 3: mm_rows(3, m, n, act, act_stride, t0, y, y_stride, b0, b1); break;
        case 2: mm_rows(2, m, n, act, act_stride, t0, y, y_stride, b0, b1); break;
        case 1: mm_rows(1, m, n, act, act_stride, t0, y, y_stride, b0, b1); break;
        default: break;
        }
    }
}

#endif
