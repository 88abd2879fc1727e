/* x86_q8act.h — Q8_0 and Q4_0 weights against Q8_0 activations: the matvec
 * (4 rows a pass, the quarters of matvec_prefetch_streams) and the R x T
 * tiles of the prefill passes, for x86_avx2.c (VPMADDUBSW, VPMADDWD) and
 * x86_avx512.c (VPDPBUSD, compiled with AVX512_VNNI).  Include after
 * x86_avx2_common.h.
 *
 * One arithmetic for every product of these formats, the row-in-lanes
 * gemms of x86_avx2_gemm.h and x86_vnni_gemm.h included: per output (row,
 * token), the exact integer dot product S_i of each 32-weight block i, then
 *
 *     acc = fma(float(S_i), dw_i · da_i, acc)      block after block, acc = 0
 *
 * in fp32, and y = acc.  Integer sums are exact in any order, so a value
 * does not depend on which kernel computed it: a row gives the same bits
 * through the matvec (decode), a tile or a gemm (prefill), alone or in a
 * batch with other tokens, whatever its row range.  es_batch_eval relies on
 * it (a session's token among others is computed as it is alone).
 *
 * Where the lanes hold one row's partial sums (matvec, tiles), four (row,
 * token) pairs' 8 int32 lanes are summed together by three VPHADDD and
 * one add (hsum4_epi32) and scaled in one 4-lane FMA. */
#ifndef ES_X86_Q8ACT_H
#define ES_X86_Q8ACT_H

#include <immintrin.h>
#include <stdint.h>

#include "quant.h"

/* [Σa, Σb, Σc, Σd] of four vectors of 8 int32 */
static inline __attribute__((always_inline)) __m128i hsum4_epi32(__m256i a, __m256i b, __m256i c, __m256i d) {
    __m256i ab = _mm256_hadd_epi32(a, b), cd = _mm256_hadd_epi32(c, d);
    __m256i abcd = _mm256_hadd_epi32(ab, cd); /* each 128-bit half: a, b, c, d over its 4 lanes */
    return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

/* An activation block, ready for any number of weight blocks */
typedef struct q8a_act {
    __m256i a;   /* the 32 signed bytes */
    __m256i c;   /* Q4_0 (VPMADDUBSW): 8·a in int16 pairs; VNNI: the start value -(8 or 128)·Σa per lane */
} q8a_act;

static inline __attribute__((always_inline)) q8a_act q8a_prep(int is_q4, const block_q8_0 *x) {
    q8a_act p;
    p.a = _mm256_loadu_si256((const __m256i *)x->qs);
#ifdef __AVX512VNNI__
    /* Q4_0 weights as q (0..15), Q8_0 weights as w + 128 (unsigned): Σ(q-8)a
     * = Σq·a - 8Σa, Σw·a = Σ(w+128)·a - 128Σa */
    p.c = _mm256_sub_epi32(_mm256_setzero_si256(),
                           _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(is_q4 ? 8 : (char)0x80), p.a));
#else
    p.c = is_q4 ? _mm256_maddubs_epi16(_mm256_set1_epi8(8), p.a) : _mm256_setzero_si256();
#endif
    return p;
}

/* 8 int32 lanes whose sum is the block's dot product Σ w·a */
static inline __attribute__((always_inline)) __m256i q8a_dot(int is_q4, const char *blk, const q8a_act *x) {
#ifdef __AVX512VNNI__
    __m256i w = is_q4 ? nib32(((const block_q4_0 *)blk)->qs)
                      : _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)((const block_q8_0 *)blk)->qs),
                                         _mm256_set1_epi8((char)0x80));
    return _mm256_dpbusd_epi32(x->c, w, x->a);
#else
    __m256i p;
    if (is_q4) {
        p = _mm256_sub_epi16(_mm256_maddubs_epi16(nib32(((const block_q4_0 *)blk)->qs), x->a), x->c);
    } else { /* |w| times sign(w)·a: the same products, one operand unsigned */
        __m256i w = _mm256_loadu_si256((const __m256i *)((const block_q8_0 *)blk)->qs);
        p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x->a, w));
    }
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
#endif
}

/* the weight block's scale (both formats begin with it) */
static inline __attribute__((always_inline)) float q8a_scale(const char *blk) {
    return _cvtsh_ss(*(const uint16_t *)blk);
}

/* matvec pass: rows r, r+q, r+2q, r+3q against one token x[nb] */
static inline __attribute__((always_inline)) void q8a_mv4(int is_q4, const void *w, size_t rb, int64_t nb,
                                                          const block_q8_0 *x, float *y, int64_t r, int64_t q) {
    const size_t bs = is_q4 ? sizeof(block_q4_0) : sizeof(block_q8_0);
    const size_t rs = (size_t)q * rb;
    const char *row = (const char *)w + (size_t)r * rb;
    __m128 acc = _mm_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        matvec_prefetch_streams(row, rs, (size_t)i * bs, bs);
        const char *b0 = row + (size_t)i * bs;
        /* the four rows' scales converted together, times the activation's */
        __m128i h = _mm_cvtsi32_si128(*(const uint16_t *)b0);
        h = _mm_insert_epi16(h, *(const uint16_t *)(b0 + rs), 1);
        h = _mm_insert_epi16(h, *(const uint16_t *)(b0 + 2 * rs), 2);
        h = _mm_insert_epi16(h, *(const uint16_t *)(b0 + 3 * rs), 3);
        const __m128 dd = _mm_mul_ps(_mm_cvtph_ps(h), _mm_set1_ps(_cvtsh_ss(x[i].d)));
        const q8a_act a = q8a_prep(is_q4, &x[i]);
        __m128i s = hsum4_epi32(q8a_dot(is_q4, b0, &a), q8a_dot(is_q4, b0 + rs, &a), q8a_dot(is_q4, b0 + 2 * rs, &a),
                                q8a_dot(is_q4, b0 + 3 * rs, &a));
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(s), dd, acc);
    }
    float out[4];
    _mm_storeu_ps(out, acc);
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) y[r + k * q] = out[k];
}

/* Rows r..r+R-1 x tokens 0..T-1 (R·T <= 8), for the prefill passes and a
 * matvec's last rows: the pairs (k, t) in groups of four lanes. */
static inline __attribute__((always_inline)) void q8a_tile(int is_q4, int R, int T, const void *w, size_t rb,
                                                           int64_t nb, const void *act, size_t as, float *y,
                                                           int64_t ys, int64_t r) {
    enum { MAXP = 8 };
    const size_t bs = is_q4 ? sizeof(block_q4_0) : sizeof(block_q8_0);
    const int P = R * T, G = (P + 3) / 4;
    const char *row[4];
    const block_q8_0 *x[4];
    __m128 acc[MAXP / 4];
#pragma GCC unroll 4
    for (int k = 0; k < R; k++) row[k] = (const char *)w + (size_t)(r + k) * rb;
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) x[t] = (const block_q8_0 *)((const char *)act + (size_t)t * as);
#pragma GCC unroll 2
    for (int g = 0; g < G; g++) acc[g] = _mm_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        __m256i v[MAXP];
        float dw[4], da[4];
#pragma GCC unroll 4
        for (int k = 0; k < R; k++) dw[k] = q8a_scale(row[k] + (size_t)i * bs);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const q8a_act a = q8a_prep(is_q4, &x[t][i]);
            da[t] = _cvtsh_ss(x[t][i].d);
#pragma GCC unroll 4
            for (int k = 0; k < R; k++) v[k * T + t] = q8a_dot(is_q4, row[k] + (size_t)i * bs, &a);
        }
#pragma GCC unroll 8
        for (int p = P; p < 4 * G; p++) v[p] = _mm256_setzero_si256();
#pragma GCC unroll 2
        for (int g = 0; g < G; g++) {
            float f[4];
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                const int p = 4 * g + j;
                f[j] = p < P ? dw[p / T] * da[p % T] : 0.0f;
            }
            __m128i s = hsum4_epi32(v[4 * g], v[4 * g + 1], v[4 * g + 2], v[4 * g + 3]);
            acc[g] = _mm_fmadd_ps(_mm_cvtepi32_ps(s), _mm_loadu_ps(f), acc[g]);
        }
    }
    float out[MAXP];
#pragma GCC unroll 2
    for (int g = 0; g < G; g++) _mm_storeu_ps(out + 4 * g, acc[g]);
#pragma GCC unroll 8
    for (int p = 0; p < P; p++) y[(p % T) * ys + r + p / T] = out[p];
}

static inline __attribute__((always_inline)) void q8a_matvec(int is_q4, const void *w, size_t rb, int64_t n,
                                                             const void *x, float *y, int64_t r0, int64_t r1) {
    int64_t q = (r1 - r0) / 4;
    for (int64_t j = 0; j < q; j++) q8a_mv4(is_q4, w, rb, n / 32, x, y, r0 + j, q);
    for (int64_t r = r0 + 4 * q; r < r1; r++) q8a_tile(is_q4, 1, 1, w, rb, n / 32, x, 0, y, 0, r);
}

/* a pass of T tokens (1..4) over rows [r0, r1) in 2-row tiles */
static inline __attribute__((always_inline)) void q8a_rows(int is_q4, int T, const void *w, size_t rb, int64_t n,
                                                           const void *act, size_t as, float *y, int64_t ys,
                                                           int64_t r0, int64_t r1) {
    int64_t r = r0;
    for (; r + 2 <= r1; r += 2) q8a_tile(is_q4, 2, T, w, rb, n / 32, act, as, y, ys, r);
    if (r < r1) q8a_tile(is_q4, 1, T, w, rb, n / 32, act, as, y, ys, r);
}

static inline __attribute__((always_inline)) void q8a_pass(int is_q4, int T, const void *w, size_t rb, int64_t n,
                                                           const void *act, size_t as, float *y, int64_t ys,
                                                           int64_t r0, int64_t r1) {
    switch (T) {
    case 1: q8a_rows(is_q4, 1, w, rb, n, act, as, y, ys, r0, r1); break;
    case 2: q8a_rows(is_q4, 2, w, rb, n, act, as, y, ys, r0, r1); break;
    case 3: q8a_rows(is_q4, 3, w, rb, n, act, as, y, ys, r0, r1); break;
    default: q8a_rows(is_q4, 4, w, rb, n, act, as, y, ys, r0, r1); break;
    }
}

#endif
