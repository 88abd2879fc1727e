/* x86_avx512_fp8.c — FP8_B128 matvec and matmul with AVX-512F/BW (fp8.h):
 * 32 (at a block's end 16, then fewer, masked) e4m3 bytes at a time
 * widened to 16 bits, moved into fp16's
 * fields (b << 8, shifted right arithmetically by one, the copy of the
 * sign masked off), converted with vcvtph2ps and multiplied into the fp32
 * activations.  A row keeps one vector sum: each 128-column block's
 * products, summed in two accumulators, are added in times the block's
 * scale (* 256); the row's value is that vector's sum.  The matvec decodes
 * in registers; the matmul decodes a block once into a buffer for every
 * token, and runs the same additions on the same values, so both give the
 * same bits. */
#include "fp8.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#include <string.h>

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

/* The products of one block (len columns) into acc, scaled: W(j) gives the
 * weights of columns j..j+15 (j + 16 > len: the first len - j) */
#define BLOCK(acc, len, x, s, W)                                                       \
    do {                                                                               \
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();                     \
        int j = 0;                                                                     \
        for (; j + 32 <= (len); j += 32) {                                             \
            __m512 w0, w1;                                                             \
            W2(j, w0, w1);                                                             \
            a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps((x) + j), a0);                    \
            a1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps((x) + j + 16), a1);               \
        }                                                                              \
        for (; j < (len); j += 16) a0 = _mm512_fmadd_ps(W(j, (len) - j), ld16((x) + j, (len) - j), a0); \
        acc = _mm512_fmadd_ps(_mm512_add_ps(a0, a1), _mm512_set1_ps(s), acc);          \
    } while (0)

void es_fp8_matvec_avx512(const void *w, size_t row_bytes, int64_t n, const void *act, float *y, int64_t r0,
                          int64_t r1) {
    (void)row_bytes;
    const es_fp8_mat *m = w;
    const float *x = act;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *q = es_fp8_row(m, n, r);
        const float *sc = es_fp8_row_scales(m, r);
        __m512 acc = _mm512_setzero_ps();
        for (int64_t c0 = 0, b = 0; c0 < n; c0 += ES_FP8_BLOCK, b++) {
            const int len = (int)(n - c0 < ES_FP8_BLOCK ? n - c0 : ES_FP8_BLOCK);
            const uint8_t *qb = q + c0;
#define W(j, k) dec16(qb + (j), (k))
#define W2(j, w0, w1) dec32(qb + (j), &(w0), &(w1))
            BLOCK(acc, len, x + c0, sc[b] * 256.0f, W);
#undef W
#undef W2
        }
        y[r] = _mm512_reduce_add_ps(acc);
    }
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

void es_fp8_matmul_avx512(const void *w, size_t row_bytes, int64_t n, const void *act, size_t act_stride,
                          int64_t n_tok, float *y, int64_t y_stride, int64_t r0, int64_t r1) {
    (void)row_bytes;
    const es_fp8_mat *m = w;
    enum { TB = 8 };
    float dec[ES_FP8_BLOCK] __attribute__((aligned(64)));
    for (int64_t t0 = 0; t0 < n_tok; t0 += TB) {
        const int nt = (int)(n_tok - t0 < TB ? n_tok - t0 : TB);
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *q = es_fp8_row(m, n, r);
            const float *sc = es_fp8_row_scales(m, r);
            __m512 acc[TB];
            for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
            for (int64_t c0 = 0, b = 0; c0 < n; c0 += ES_FP8_BLOCK, b++) {
                const int len = (int)(n - c0 < ES_FP8_BLOCK ? n - c0 : ES_FP8_BLOCK);
                int j = 0;
                for (; j + 32 <= len; j += 32) {
                    __m512 w0, w1;
                    dec32(q + c0 + j, &w0, &w1);
                    _mm512_store_ps(dec + j, w0);
                    _mm512_store_ps(dec + j + 16, w1);
                }
                for (; j < len; j += 16) _mm512_store_ps(dec + j, dec16(q + c0 + j, len - j));
                const float s = sc[b] * 256.0f;
                for (int t = 0; t < nt; t++) {
                    const float *x = (const float *)((const uint8_t *)act + (size_t)(t0 + t) * act_stride) + c0;
#define W(j, k) _mm512_load_ps(dec + (j))
#define W2(j, w0, w1) ((w0) = _mm512_load_ps(dec + (j)), (w1) = _mm512_load_ps(dec + (j) + 16))
                    BLOCK(acc[t], len, x, s, W);
#undef W
#undef W2
                }
            }
            for (int t = 0; t < nt; t++) y[(t0 + t) * y_stride + r] = _mm512_reduce_add_ps(acc[t]);
        }
    }
}

#endif
