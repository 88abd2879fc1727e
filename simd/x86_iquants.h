/* x86_iquants.h — one super-block of the IQ codebook formats (IQ2_XXS,
 * IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M) and of TQ2_0 against Q8_K
 * activations, on 256-bit integer registers: iq_block, which x86_kquants.h's
 * kq_block hands these formats to, so they share its row order, prefetch,
 * matvec and prefill passes.  Compiled twice with it (AVX2; AVX512_VNNI with
 * VL), include only from x86_kquants.h.
 *
 * Per 32 weights, the grid entries are gathered into one register (4 x 8
 * bytes, or 8 x 4 for the IQ3 grids) as unsigned magnitudes m, and the
 * signs into a register of +-1 bytes (the 7-bit codes through
 * es_iq2_signs64, or explicit sign bits spread by a shuffle and a compare);
 * VPMADDUBSW multiplies m by the activations with the signs applied
 * (VPSIGNB), giving int16 pairs (m <= 62, |a| <= 127: no saturation), then
 * the sub-block's odd integer scale 2s + 1 (int16, per 16 or 32 weights)
 * goes in with VPMADDWD (VPDPWSSD with VNNI).  IQ1's values 8·(g + shift)
 * (|v| <= 9) and TQ2_0's t - 1 are signed: |v| against a with v's sign.
 * What is left is one float per super-block: d times the format's power of
 * two (1/8 for IQ2 and IQ1, 1/4 for IQ3_XXS, 1 for IQ3_S and TQ2_0) times
 * the activation's d. */
#ifndef ES_X86_IQUANTS_H
#define ES_X86_IQUANTS_H

#include "iq_grids.h"

/* The sign bytes of a super-block's 32 groups of 8 at once: from 32 7-bit
 * codes (byte g = group g's code), bit 7 set to make the parity even, as
 * es_iq2_signs does */
static inline __attribute__((always_inline)) __m256i iq_code_signs(__m256i codes) {
    const __m256i par = _mm256_setr_epi8(0, -128, -128, 0, -128, 0, 0, -128, -128, 0, 0, -128, 0, -128, -128, 0, 0,
                                         -128, -128, 0, -128, 0, 0, -128, -128, 0, 0, -128, 0, -128, -128, 0);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256i p = _mm256_xor_si256(_mm256_shuffle_epi8(par, _mm256_and_si256(codes, m4)),
                                 _mm256_shuffle_epi8(par, _mm256_and_si256(_mm256_srli_epi16(codes, 4), m4)));
    return _mm256_or_si256(codes, p);
}
/* IQ2_XXS/IQ3_XXS: the 8 sub-blocks' uint32 of four 7-bit codes and a
 * 4-bit scale (lane j) to the 32 codes as bytes (byte 4j + l: code l of
 * sub-block j) */
static inline __attribute__((always_inline)) __m256i iq_aux_codes(__m256i aux) {
    const __m256i m7 = _mm256_set1_epi32(127);
    __m256i c = _mm256_and_si256(aux, m7);
    c = _mm256_or_si256(c, _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(aux, 7), m7), 8));
    c = _mm256_or_si256(c, _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(aux, 14), m7), 16));
    return _mm256_or_si256(c, _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(aux, 21), m7), 24));
}
/* sub-block j's 4 sign bytes (bytes 4j..4j+3 of s) as 32 +-1 bytes */
static inline __attribute__((always_inline)) __m256i iq_expand_signs(__m256i s, int j) {
    __m256i v = _mm256_permutevar8x32_epi32(s, _mm256_set1_epi32(j));
    v = _mm256_shuffle_epi8(v, _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2,
                                                3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_or_si256(v, _mm256_set1_epi8(1));
}
/* dword lane j of v in every lane (an int16 scale held in both halves) */
static inline __attribute__((always_inline)) __m256i iq_lane32(__m256i v, int j) {
    return _mm256_permutevar8x32_epi32(v, _mm256_set1_epi32(j));
}
/* per super-block: what is shared by its sub-blocks (sign bytes, scales) */
typedef struct iq_pre {
    __m256i sgn; /* sign bytes, 4 per sub-block (IQ2_XXS, IQ2_XS, IQ3_XXS, IQ2_S, IQ3_S) */
    __m256i sc;  /* IQ2_XXS/IQ3_XXS: 2s + 1 as int16 in both halves of dword j */
} iq_pre;

static inline __attribute__((always_inline)) iq_pre iq_prepare(enum kfmt f, const uint8_t *blk) {
    iq_pre p = {_mm256_setzero_si256(), _mm256_setzero_si256()};
    __m256i aux = _mm256_setzero_si256();
    if (f == KIQ2XXS) { /* the odd dwords of qs */
        const uint8_t *qs = (const uint8_t *)((const block_iq2_xxs *)blk)->qs;
        const __m256i odd = _mm256_setr_epi32(1, 3, 5, 7, 0, 2, 4, 6);
        __m256i a = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)qs), odd);
        __m256i b = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(qs + 32)), odd);
        aux = _mm256_permute2x128_si256(a, b, 0x20);
    } else if (f == KIQ3XXS) {
        aux = _mm256_loadu_si256((const __m256i *)(((const block_iq3_xxs *)blk)->qs + 64));
    }
    if (f == KIQ2XXS || f == KIQ3XXS) {
        p.sgn = iq_code_signs(iq_aux_codes(aux));
        __m256i sc = _mm256_add_epi32(_mm256_slli_epi32(_mm256_srli_epi32(aux, 28), 1), _mm256_set1_epi32(1));
        p.sc = _mm256_or_si256(sc, _mm256_slli_epi32(sc, 16));
    } else if (f == KIQ2XS) { /* codes: the top 7 bits of the 32 uint16 */
        const uint16_t *qs = ((const block_iq2_xs *)blk)->qs;
        __m256i a = _mm256_srli_epi16(_mm256_loadu_si256((const __m256i *)qs), 9);
        __m256i b = _mm256_srli_epi16(_mm256_loadu_si256((const __m256i *)(qs + 16)), 9);
        __m256i c = _mm256_permute4x64_epi64(_mm256_packus_epi16(a, b), 0xD8);
        p.sgn = iq_code_signs(c);
    } else if (f == KIQ2S) {
        p.sgn = _mm256_loadu_si256((const __m256i *)(((const block_iq2_s *)blk)->qs + 32));
    } else if (f == KIQ3S) {
        p.sgn = _mm256_loadu_si256((const __m256i *)((const block_iq3_s *)blk)->signs);
    }
    return p;
}

static inline __attribute__((always_inline)) __m256i iq_grid4(const uint64_t *g, int i0, int i1, int i2, int i3) {
    return _mm256_set_epi64x((long long)g[i3], (long long)g[i2], (long long)g[i1], (long long)g[i0]);
}

/* the scale per 16 weights: lo for lanes of weights 0..15, hi for 16..31 */
static inline __attribute__((always_inline)) __m256i iq_scale2(int lo, int hi) {
    return _mm256_set_m128i(_mm_set1_epi16((short)hi), _mm_set1_epi16((short)lo));
}

/* IQ1: grid bytes g (-1, 0, 1) to 8·g + shift (shift +-1 bytes) */
static inline __attribute__((always_inline)) __m256i iq1_values(__m256i g, __m256i shift) {
    /* a 16-bit shift by 3 moves bits across the byte boundary only into the
     * low 3 bits of the high byte, which the mask clears */
    __m256i g8 = _mm256_and_si256(_mm256_slli_epi16(g, 3), _mm256_set1_epi8((char)0xF8));
    return _mm256_add_epi8(g8, shift);
}

/* the 32 weights of sub-block j as magnitudes m and +-1 signs s (IQ1, TQ2:
 * m = |v| and s = v), and its int16 scale(s) */
static inline __attribute__((always_inline)) void iq_sub(enum kfmt f, const uint8_t *blk, const iq_pre *pre, int j,
                                                         __m256i *m, __m256i *s, __m256i *sc) {
    if (f == KIQ2XXS) {
        const uint8_t *q8 = (const uint8_t *)((const block_iq2_xxs *)blk)->qs + 8 * j;
        *m = iq_grid4(es_iq2xxs_grid, q8[0], q8[1], q8[2], q8[3]);
        *s = iq_expand_signs(pre->sgn, j);
        *sc = iq_lane32(pre->sc, j);
    } else if (f == KIQ2XS) {
        const block_iq2_xs *b = (const block_iq2_xs *)blk;
        const uint16_t *q = b->qs + 4 * j;
        *m = iq_grid4(es_iq2xs_grid, q[0] & 511, q[1] & 511, q[2] & 511, q[3] & 511);
        *s = iq_expand_signs(pre->sgn, j);
        *sc = iq_scale2(2 * (b->scales[j] & 15) + 1, 2 * (b->scales[j] >> 4) + 1);
    } else if (f == KIQ2S) {
        const block_iq2_s *b = (const block_iq2_s *)blk;
        const uint8_t *q = b->qs + 4 * j;
        const int h = b->qh[j];
        *m = iq_grid4(es_iq2s_grid, q[0] | (h & 3) << 8, q[1] | (h & 12) << 6, q[2] | (h & 48) << 4,
                      q[3] | (h & 192) << 2);
        *s = iq_expand_signs(pre->sgn, j);
        *sc = iq_scale2(2 * (b->scales[j] & 15) + 1, 2 * (b->scales[j] >> 4) + 1);
    } else if (f == KIQ3XXS) {
        const block_iq3_xxs *b = (const block_iq3_xxs *)blk;
        const uint8_t *q = b->qs + 8 * j;
        const uint32_t *g = es_iq3xxs_grid;
        *m = _mm256_setr_epi32((int)g[q[0]], (int)g[q[1]], (int)g[q[2]], (int)g[q[3]], (int)g[q[4]], (int)g[q[5]],
                               (int)g[q[6]], (int)g[q[7]]);
        *s = iq_expand_signs(pre->sgn, j);
        *sc = iq_lane32(pre->sc, j);
    } else if (f == KIQ3S) {
        const block_iq3_s *b = (const block_iq3_s *)blk;
        const uint8_t *q = b->qs + 8 * j;
        const int h = b->qh[j];
        const uint32_t *g = es_iq3s_grid;
        *m = _mm256_setr_epi32((int)g[q[0] | (h & 1) << 8], (int)g[q[1] | (h & 2) << 7], (int)g[q[2] | (h & 4) << 6],
                               (int)g[q[3] | (h & 8) << 5], (int)g[q[4] | (h & 16) << 4], (int)g[q[5] | (h & 32) << 3],
                               (int)g[q[6] | (h & 64) << 2], (int)g[q[7] | (h & 128) << 1]);
        *s = iq_expand_signs(pre->sgn, j);
        *sc = _mm256_set1_epi16((short)(2 * ((b->scales[j / 2] >> (4 * (j % 2))) & 15) + 1));
    } else if (f == KIQ1S) {
        const block_iq1_s *b = (const block_iq1_s *)blk;
        const uint8_t *q = b->qs + 4 * j;
        const unsigned h = b->qh[j];
        __m256i g = iq_grid4(es_iq1s_grid, q[0] | (h & 7) << 8, q[1] | (h & 56) << 5, q[2] | (h & 448) << 2,
                             q[3] | (h & 3584) >> 1);
        __m256i v = iq1_values(g, _mm256_set1_epi8(h & 0x8000 ? -1 : 1));
        *m = _mm256_sign_epi8(v, v);
        *s = v;
        *sc = _mm256_set1_epi16((short)(2 * ((h >> 12) & 7) + 1));
    } else if (f == KIQ1M) {
        const block_iq1_m *b = (const block_iq1_m *)blk;
        const uint8_t *q = b->qs + 4 * j;
        const unsigned h0 = b->qh[2 * j], h1 = b->qh[2 * j + 1];
        __m256i g = iq_grid4(es_iq1s_grid, q[0] | (h0 & 7) << 8, q[1] | (h0 & 0x70) << 4, q[2] | (h1 & 7) << 8,
                             q[3] | (h1 & 0x70) << 4);
        const long long neg = (long long)0xFFFFFFFFFFFFFFFFull, pos = 0x0101010101010101ll;
        __m256i shift = _mm256_set_epi64x(h1 & 0x80 ? neg : pos, h1 & 0x08 ? neg : pos, h0 & 0x80 ? neg : pos,
                                          h0 & 0x08 ? neg : pos);
        __m256i v = iq1_values(g, shift);
        *m = _mm256_sign_epi8(v, v);
        *s = v;
        const unsigned sw = (unsigned)(b->scales[2 * (j / 2)] | b->scales[2 * (j / 2) + 1] << 8) >> (6 * (j % 2));
        *sc = iq_scale2(2 * (sw & 7) + 1, 2 * ((sw >> 3) & 7) + 1);
    } else { /* KTQ2: weight 128h + 32l + m is bits 2l.. of qs[32h + m] */
        const block_tq2_0 *b = (const block_tq2_0 *)blk;
        __m256i bits = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * (j / 4)));
        __m256i v = _mm256_sub_epi8(kq_plane2(bits, j % 4), _mm256_set1_epi8(1));
        *m = _mm256_sign_epi8(v, v);
        *s = v;
        *sc = _mm256_set1_epi16(1);
    }
}

/* the super-block's float scale: d times the format's power of two */
static inline __attribute__((always_inline)) float iq_d(enum kfmt f, const uint8_t *blk) {
    switch (f) {
    case KIQ1M: return _cvtsh_ss(es_iq1m_d((const block_iq1_m *)blk)) * 0.125f;
    case KTQ2: return _cvtsh_ss(((const block_tq2_0 *)blk)->d);
    case KIQ3S: return _cvtsh_ss(((const block_iq3_s *)blk)->d);
    case KIQ3XXS: return _cvtsh_ss(((const block_iq3_xxs *)blk)->d) * 0.25f;
    default: { /* IQ2_*, IQ1_S: d is the block's first field */
        es_fp16 d;
        memcpy(&d, blk, 2);
        return _cvtsh_ss(d) * 0.125f;
    }
    }
}

/* kq_block for these formats: acc[t] += the super-block's dot with x[t] */
static inline __attribute__((always_inline)) void iq_block(enum kfmt f, int T, const uint8_t *blk,
                                                           const block_q8_K *const *x, __m256 *acc) {
#ifdef __AVX512VNNI__
    const int C = T == 1 ? 2 : 1; /* VPDPWSSD chains (see kq_block) */
#else
    const int C = 1;
#endif
    __m256i sumi[4][2];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++)
#pragma GCC unroll 2
        for (int c = 0; c < C; c++) sumi[t][c] = _mm256_setzero_si256();
    const iq_pre pre = iq_prepare(f, blk);
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
        __m256i m, s, sc;
        iq_sub(f, blk, &pre, j, &m, &s, &sc);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            __m256i a = _mm256_loadu_si256((const __m256i *)(x[t]->qs + 32 * j));
            sumi[t][j % C] = kq_madd(sumi[t][j % C], sc, _mm256_maddubs_epi16(m, _mm256_sign_epi8(a, s)));
        }
    }
    const float d = iq_d(f, blk);
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        if (C == 2) sumi[t][0] = _mm256_add_epi32(sumi[t][0], sumi[t][1]);
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * x[t]->d), _mm256_cvtepi32_ps(sumi[t][0]), acc[t]);
    }
}

#endif
