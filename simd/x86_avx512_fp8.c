/* x86_avx512_fp8.c — FP8_B128 matvec and matmul with AVX-512F (fp8.h says
 * the shape): sixteen e4m3 bytes at a time widened to 16 bits, moved into
 * fp16's fields, converted with vcvtph2ps; fp32 activations. */
#include "fp8.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__F16C__)
#include <immintrin.h>

static inline void decode_avx512(const uint8_t *q, float *dst, int len) {
    const __m256i sign = _mm256_set1_epi16(0x80), mag = _mm256_set1_epi16(0x7f);
    int j = 0;
    for (; j + 16 <= len; j += 16) {
        __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(q + j)));
        __m256i h = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(b, sign), 8),
                                    _mm256_slli_epi16(_mm256_and_si256(b, mag), 7));
        _mm512_store_ps(dst + j, _mm512_cvtph_ps(h));
    }
    for (; j < len; j++) dst[j] = _cvtsh_ss(es_fp8_to_fp16_scaled(q[j]));
}

static inline float blockdot_avx512(const float *d, const float *x, int len) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int j = 0;
    for (; j + 32 <= len; j += 32) {
        a0 = _mm512_fmadd_ps(_mm512_load_ps(d + j), _mm512_loadu_ps(x + j), a0);
        a1 = _mm512_fmadd_ps(_mm512_load_ps(d + j + 16), _mm512_loadu_ps(x + j + 16), a1);
    }
    if (j + 16 <= len) {
        a0 = _mm512_fmadd_ps(_mm512_load_ps(d + j), _mm512_loadu_ps(x + j), a0);
        j += 16;
    }
    float r = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    for (; j < len; j++) r += d[j] * x[j];
    return r;
}

ES_FP8_ROWS_TEMPLATE(avx512, decode_avx512, blockdot_avx512)

#endif
