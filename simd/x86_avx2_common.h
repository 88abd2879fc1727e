/* x86_avx2_common.h — small AVX2 helpers shared by the x86 kernel files
 * (x86_avx2*.c, and the 256-bit code of x86_avx512*.c, whose flags include
 * AVX2, FMA and F16C): horizontal reductions, the nibble unpacking of the
 * 32-weight blocks and the IQ4 table lookup, a vectorised expf, the
 * matvec prefetch and row order, and the blocking of the prefill products.  Include only from files compiled with
 * at least -mavx2 -mfma -mf16c. */
#ifndef ES_X86_AVX2_COMMON_H
#define ES_X86_AVX2_COMMON_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "quant.h"

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float hmax8(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The 16 nibble bytes of a 32-weight block (Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL,
 * an IQ4_XS sub-block) as 32 bytes in weight order: low nibbles are weights
 * 0..15, high nibbles 16..31.  The 16 bytes go to both lanes, the high lane
 * shifted by 4. */
static inline __attribute__((always_inline)) __m256i nib32(const uint8_t *qs) {
    __m256i bits = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    bits = _mm256_srlv_epi32(bits, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    return _mm256_and_si256(bits, _mm256_set1_epi8(0x0f));
}

/* IQ4_NL/IQ4_XS: 32 indices 0..15 to the table's signed values */
static inline __attribute__((always_inline)) __m256i iq4_lookup(__m256i idx) {
    const __m256i t = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)es_iq4nl_values));
    return _mm256_shuffle_epi8(t, idx);
}

/* e^x for 8 floats: e^x = 2^n e^r with n = round(x log2 e) and |r| <= ln2/2
 * (ln2 split in two for an exact reduction), e^r by Cephes' degree-6 expf
 * polynomial (relative error about 2e-7 over the range), and 2^n applied
 * in two halves so n in [-150, 128] needs no special cases: overflow gives
 * +inf, underflow denormals then 0.  x is clamped to [-104, 88.8] with NaN
 * passed through. */
static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_set1_ps(88.8f), _mm256_max_ps(_mm256_set1_ps(-104.0f), x));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

/* matvec prefetch, called once per step of a pass over 4 rows at once;
 * `done` bytes of each row are consumed, `step` more per step.
 *
 * Short rows (a pass of at most PF_WALK_MAX bytes): the four interleaved
 * streams, a few KiB each, are too short for the hardware prefetcher to
 * ramp up on.  So each step prefetches as many bytes of the next pass's 4
 * rows (rows r+4..r+7, contiguous) as it consumes of this pass's, walking
 * them in address order: the next pass is in L1 when it starts.  Longer
 * rows: the hardware prefetcher follows each stream; it is helped
 * PF_AHEAD bytes ahead in each row (and at its end, the next pass's rows),
 * a line per 64 bytes of step (a Q4_K step of 144 bytes prefetching one
 * line per row instead of three was 25% slower).
 * The walk fetches a whole pass ahead, so it pays only while a pass is a
 * small part of L1: walking 17 KiB passes (Q8_0 rows of 4096) or 32 KiB
 * ones (F16) was 15-35% slower than 1 KiB ahead per row, 9 KiB ones (Q4_0)
 * about 5% faster (measured on 1 GiB matrices with one thread). */
#ifndef PF_WALK_MAX
#define PF_WALK_MAX (12u << 10)
#endif
#ifndef PF_AHEAD
#define PF_AHEAD 1024
#endif
static inline __attribute__((always_inline)) void matvec_prefetch(const char *row0, size_t rb, size_t done,
                                                                  size_t step) {
    if (4 * rb <= PF_WALK_MAX) {
        const char *p = row0 + 4 * rb + 4 * done;
#pragma GCC unroll 4
        for (size_t j = 0; j < (4 * step + 63) / 64; j++) _mm_prefetch(p + 64 * j, _MM_HINT_T0);
    } else {
#pragma GCC unroll 4
        for (size_t j = 0; j < (step + 63) / 64; j++) {
            size_t off = done + PF_AHEAD + 64 * j;
            if (off >= rb) off += 3 * rb;
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) _mm_prefetch(row0 + (size_t)k * rb + off, _MM_HINT_T0);
        }
    }
}

/* The quantised matvecs (Q8_0, Q4_0, the K-quants) take 4 rows a pass from
 * the four quarters of their range [r0, r1): with q = (r1 - r0) / 4, pass j
 * computes rows r0+j, r0+q+j, r0+2q+j, r0+3q+j, and the last (r1 - r0) % 4
 * rows follow one at a time.  Rows are contiguous, so each of the 4 weight
 * streams runs on through its quarter without a break, which the hardware
 * prefetcher follows far better than 4 rows side by side that restart
 * every pass (1 GiB matrix, one thread, rows of 4096: Q8_0 9% faster,
 * Q4_0 27%, Q4_K/Q5_K 33-37%, Q6_K 31%, Q2_K/Q3_K 14-25%; Q8_0 rows of
 * 1408 29%).  Which rows go one at a time is the same as with side-by-side
 * passes.
 *
 * Its prefetch: PF_AHEAD bytes ahead in each stream (running on into the
 * next row of the quarter), a line per 64 bytes of step; `rs` = q rows. */
static inline __attribute__((always_inline)) void matvec_prefetch_streams(const char *row0, size_t rs, size_t done,
                                                                          size_t step) {
#pragma GCC unroll 4
    for (size_t j = 0; j < (step + 63) / 64; j++)
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) _mm_prefetch(row0 + (size_t)k * rs + done + PF_AHEAD + 64 * j, _MM_HINT_T0);
}

/* Prefill blocking: tokens per block so that a block's activations stay in
 * L2 (about 256 KiB), a multiple of 4; rows per block so that a block's
 * weights (about 64 KiB) stay in L1/L2 while every token group of the
 * token block passes over them. */
static inline int64_t token_block(int64_t n_tok, size_t act_row_bytes) {
    int64_t tb = (int64_t)((256u << 10) / (act_row_bytes ? act_row_bytes : 1)) / 4 * 4;
    if (tb < 4) tb = 4;
    return tb < n_tok ? tb : n_tok;
}

static inline int64_t row_block(size_t row_bytes) {
    int64_t rb = (int64_t)((64u << 10) / (row_bytes ? row_bytes : 1)) / 4 * 4;
    return rb < 4 ? 4 : rb;
}

/* A prefill product is cut into passes of T = 1..4 tokens over a block of
 * rows: pass(T, ...) computes tokens [0, T) of act (rows `as` bytes apart)
 * times rows [r0, r1) of w into y (rows `ys` floats apart).  Each format
 * has one, specialised on T inside. */
typedef void (*pass_fn)(int T, const void *w, size_t rb, int64_t n, const void *act, size_t as, float *y,
                        int64_t ys, int64_t r0, int64_t r1);

/* The loops of every prefill product: blocks of tokens whose activations
 * (act_row_bytes each) stay in L2; within one, blocks of rows that stay in
 * L1/L2 while every group of 4 tokens passes over them. */
static inline void matmul_blocked(pass_fn pass, size_t act_row_bytes, const void *w, size_t rb, int64_t n,
                                  const void *act, size_t as, int64_t n_tok, float *y, int64_t ys, int64_t r0,
                                  int64_t r1) {
    int64_t tb = token_block(n_tok, act_row_bytes), rblk = row_block(rb);
    const char *a = act;
    for (int64_t t0 = 0; t0 < n_tok; t0 += tb) {
        int64_t t1 = t0 + tb < n_tok ? t0 + tb : n_tok;
        for (int64_t rr = r0; rr < r1; rr += rblk) {
            int64_t re = rr + rblk < r1 ? rr + rblk : r1;
            for (int64_t t = t0; t < t1; t += 4)
                pass(t1 - t < 4 ? (int)(t1 - t) : 4, w, rb, n, a + t * as, as, y + t * ys, ys, rr, re);
        }
    }
}

#endif
