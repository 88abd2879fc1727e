/* x86_avx2_fp8.c — FP8_B128 matvec and matmul with AVX2, FMA and F16C
 * (fp8.h says the shape): eight e4m3 bytes at a time widened to 16 bits,
 * moved into fp16's fields, converted with vcvtph2ps; fp32 activations. */
#include "fp8.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

static inline void decode_avx2(const uint8_t *q, float *dst, int len) {
    const __m128i sign = _mm_set1_epi16(0x80), mag = _mm_set1_epi16(0x7f);
    int j = 0;
    for (; j + 8 <= len; j += 8) {
        __m128i b = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(q + j)));
        __m128i h = _mm_or_si128(_mm_slli_epi16(_mm_and_si128(b, sign), 8), _mm_slli_epi16(_mm_and_si128(b, mag), 7));
        _mm256_store_ps(dst + j, _mm256_cvtph_ps(h));
    }
    for (; j < len; j++) dst[j] = _cvtsh_ss(es_fp8_to_fp16_scaled(q[j]));
}

static inline float blockdot_avx2(const float *d, const float *x, int len) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 16 <= len; j += 16) {
        a0 = _mm256_fmadd_ps(_mm256_load_ps(d + j), _mm256_loadu_ps(x + j), a0);
        a1 = _mm256_fmadd_ps(_mm256_load_ps(d + j + 8), _mm256_loadu_ps(x + j + 8), a1);
    }
    if (j + 8 <= len) {
        a0 = _mm256_fmadd_ps(_mm256_load_ps(d + j), _mm256_loadu_ps(x + j), a0);
        j += 8;
    }
    __m256 a = _mm256_add_ps(a0, a1);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    float r = _mm_cvtss_f32(s);
    for (; j < len; j++) r += d[j] * x[j];
    return r;
}

ES_FP8_ROWS_TEMPLATE(avx2, decode_avx2, blockdot_avx2)

void es_fp8_dequant_rows_avx2(const es_fp8_mat *m, int64_t n, int64_t r0, int64_t r1, float *dst) {
    float dec[ES_FP8_BLOCK] __attribute__((aligned(32)));
    for (int64_t r = r0; r < r1; r++, dst += n) {
        const uint8_t *q = es_fp8_row(m, n, r);
        const float *sc = es_fp8_row_scales(m, r);
        for (int64_t c0 = 0, b = 0; c0 < n; c0 += ES_FP8_BLOCK, b++) {
            const int len = (int)(n - c0 < ES_FP8_BLOCK ? n - c0 : ES_FP8_BLOCK);
            const float s1 = sc[b] * 256.0f;
            const __m256 s = _mm256_set1_ps(s1);
            decode_avx2(q + c0, dec, len);
            int j = 0;
            for (; j + 8 <= len; j += 8) _mm256_storeu_ps(dst + c0 + j, _mm256_mul_ps(_mm256_load_ps(dec + j), s));
            for (; j < len; j++) dst[c0 + j] = dec[j] * s1;
        }
    }
}

#endif
