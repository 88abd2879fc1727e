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

/* The same four sums where every lane is a sum of four products of a Q4_0
 * weight (q - 8, -8..7) and an activation byte (-128..127): at most 4096 in
 * size, so two levels can narrow to int16 (VPACKSSDW, exact) and add pairs
 * with VPMADDWD, which runs beside the shuffles: 3 shuffle uops and an
 * extract instead of the three VPHADDD's 6 and an extract. */
static inline __attribute__((always_inline)) __m128i hsum4_small_epi32(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i one = _mm256_set1_epi16(1);
    __m256i ab = _mm256_madd_epi16(_mm256_packs_epi32(a, b), one); /* [a01 a23 b01 b23 | a45 a67 b45 b67] */
    __m256i cd = _mm256_madd_epi16(_mm256_packs_epi32(c, d), one);
    __m256i abcd = _mm256_madd_epi16(_mm256_packs_epi32(ab, cd), one); /* [a b c d | a b c d] over each half */
    return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

/* the sums of four dot products' lanes, by the cheaper route where it is exact */
static inline __attribute__((always_inline)) __m128i q8a_hsum4(int is_q4, __m256i a, __m256i b, __m256i c, __m256i d) {
    return is_q4 ? hsum4_small_epi32(a, b, c, d) : hsum4_epi32(a, b, c, d);
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

/* one block of rows at b0, b0+rs, b0+2rs, b0+3rs against activation block
 * x (its scale converted, in every lane of da): acc + the four products */
static inline __attribute__((always_inline)) __m128 q8a_mv4_block(int is_q4, const char *b0, size_t rs,
                                                                  const block_q8_0 *x, __m128 da, __m128 acc) {
    /* the four rows' scales converted together, times the activation's */
    __m128i h = _mm_cvtsi32_si128(*(const uint16_t *)b0);
    h = _mm_insert_epi16(h, *(const uint16_t *)(b0 + rs), 1);
    h = _mm_insert_epi16(h, *(const uint16_t *)(b0 + 2 * rs), 2);
    h = _mm_insert_epi16(h, *(const uint16_t *)(b0 + 3 * rs), 3);
    const __m128 dd = _mm_mul_ps(_mm_cvtph_ps(h), da);
    const q8a_act a = q8a_prep(is_q4, x);
    __m128i s = q8a_hsum4(is_q4, q8a_dot(is_q4, b0, &a), q8a_dot(is_q4, b0 + rs, &a), q8a_dot(is_q4, b0 + 2 * rs, &a),
                          q8a_dot(is_q4, b0 + 3 * rs, &a));
    return _mm_fmadd_ps(_mm_cvtepi32_ps(s), dd, acc);
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
        acc = q8a_mv4_block(is_q4, row + (size_t)i * bs, rs, &x[i], _mm_set1_ps(_cvtsh_ss(x[i].d)), acc);
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
            __m128i s = q8a_hsum4(is_q4, v[4 * g], v[4 * g + 1], v[4 * g + 2], v[4 * g + 3]);
            acc[g] = _mm_fmadd_ps(_mm_cvtepi32_ps(s), _mm_loadu_ps(f), acc[g]);
        }
    }
    float out[MAXP];
#pragma GCC unroll 2
    for (int g = 0; g < G; g++) _mm_storeu_ps(out + 4 * g, acc[g]);
#pragma GCC unroll 8
    for (int p = 0; p < P; p++) y[(p % T) * ys + r + p / T] = out[p];
}

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
/* Q4_0's pass (rows r, r+q, r+2q, r+3q against x[nb]) four blocks a step,
 * for the AVX-512 table: the arithmetic above value for value, with less
 * work around the dot products.  Per step each row's four fp16 scales come
 * out of its 64-byte window (4 blocks of 18 bytes) by one masked VPERMT2W,
 * merged into
 * [block i: rows 0..3 | block i+1: ...] and converted eight at a time; the
 * activations' scales come converted from `da4` (each block's, four times,
 * made once per call); the prefetch is a line per 64 bytes of the step
 * instead of one per block.  The single-block code above is port-5 bound
 * on Intel (3 VPINSRW, 2 VCVTPH2PS, a broadcast and a VMOVD a block beside
 * the three VPHADDD).  Everything stays in 256-bit registers: a 512-bit
 * uop in flight takes port 1's vector unit away from the rest of the loop
 * on Intel (a first version with 512-bit scale vectors ran 25% slower). */
static inline __attribute__((always_inline)) __m256i q4a_scale_words(const char *p, size_t rs) {
    /* row k's word 9j (block j's scale, of a 64-byte window) to lane 4j + k */
    const short hw = sizeof(block_q4_0) / 2;
    const __m256i idx = _mm256_setr_epi16(0, 0, 0, 0, hw, hw, hw, hw, 2 * hw, 2 * hw, 2 * hw, 2 * hw, 3 * hw, 3 * hw,
                                          3 * hw, 3 * hw);
    __m256i sw = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        const char *pk = p + (size_t)k * rs;
        sw = _mm256_or_si256(sw, _mm256_maskz_permutex2var_epi16((__mmask16)(0x1111u << k),
                                                                  _mm256_loadu_si256((const __m256i *)pk), idx,
                                                                  _mm256_loadu_si256((const __m256i *)(pk + 32))));
    }
    return sw;
}

static inline __attribute__((always_inline)) void q4a_mv4_x4(const void *w, size_t rb, int64_t nb,
                                                             const block_q8_0 *x, const float *da4, float *y,
                                                             int64_t r, int64_t q) {
    enum { is_q4 = 1 }; /* the shared helpers' Q4_0 forms */
    const size_t bs = sizeof(block_q4_0);
    const size_t rs = (size_t)q * rb;
    const char *row = (const char *)w + (size_t)r * rb;
    __m128 acc = _mm_setzero_ps();
    int64_t i = 0;
    for (; i + 4 <= nb; i += 4) {
        const char *b0 = row + (size_t)i * bs;
        matvec_prefetch_streams(row, rs, (size_t)i * bs, 4 * bs);
        /* dw·da for blocks i, i+1 (dd01) and i+2, i+3 (dd23), rows 0..3 each */
        const __m256i sw = q4a_scale_words(b0, rs);
        const __m128i w23 = _mm256_extracti128_si256(sw, 1);
        const __m256 dd01 = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(sw)), _mm256_loadu_ps(da4 + 4 * i));
        const __m256 dd23 = _mm256_mul_ps(_mm256_cvtph_ps(w23), _mm256_loadu_ps(da4 + 4 * i + 8));
        __m128i s[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const char *bj = b0 + (size_t)j * bs;
            const q8a_act a = q8a_prep(is_q4, &x[i + j]);
            s[j] = q8a_hsum4(is_q4, q8a_dot(is_q4, bj, &a), q8a_dot(is_q4, bj + rs, &a), q8a_dot(is_q4, bj + 2 * rs, &a),
                               q8a_dot(is_q4, bj + 3 * rs, &a));
        }
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(s[0]), _mm256_castps256_ps128(dd01), acc);
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(s[1]), _mm256_extractf128_ps(dd01, 1), acc);
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(s[2]), _mm256_castps256_ps128(dd23), acc);
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(s[3]), _mm256_extractf128_ps(dd23, 1), acc);
    }
    for (; i < nb; i++) acc = q8a_mv4_block(is_q4, row + (size_t)i * bs, rs, &x[i], _mm_loadu_ps(da4 + 4 * i), acc);
    float out[4];
    _mm_storeu_ps(out, acc);
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) y[r + k * q] = out[k];
}
#endif

static inline __attribute__((always_inline)) void q8a_matvec(int is_q4, const void *w, size_t rb, int64_t n,
                                                             const void *x, float *y, int64_t r0, int64_t r1) {
    int64_t q = (r1 - r0) / 4;
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
    enum { DA_MAX = 1024 }; /* rows of up to 32768 */
    if (is_q4 && q > 0 && n / 32 <= DA_MAX) {
        float da4[4 * DA_MAX];
        const block_q8_0 *xb = (const block_q8_0 *)x;
        for (int64_t i = 0; i < n / 32; i++) _mm_storeu_ps(da4 + 4 * i, _mm_set1_ps(_cvtsh_ss(xb[i].d)));
        for (int64_t j = 0; j < q; j++) q4a_mv4_x4(w, rb, n / 32, xb, da4, y, r0 + j, q);
        q = 0, r0 = r1 - (r1 - r0) % 4;
    }
#endif
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
