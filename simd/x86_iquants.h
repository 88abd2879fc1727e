/* x86_iquants.h — one super-block of the IQ codebook formats (IQ2_XXS,
 * IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M) and of the ternary TQ1_0 and
 * TQ2_0 against Q8_K activations, on 256-bit integer registers: iq_block,
 * which x86_kquants.h's kq_block hands these formats to, so they share its
 * row order, prefetch, matvec and prefill passes.  Compiled twice with it
 * (AVX2; AVX512_VNNI with BW and VL), include only from x86_kquants.h.
 *
 * Per 32 weights, the grid entries are gathered into one register (4 x 8
 * bytes, or 8 x 4 for the IQ3 grids) as unsigned magnitudes m: the four
 * each by a broadcast from memory (a load, no shuffle) blended into place,
 * so the shuffle port is left to the signs and scales; the eight by one
 * VPGATHERDD.  The signs apply to the activations: with AVX-512 a 32-bit
 * mask (4 sign bytes, from the block or from the register of signs decoded
 * for the super-block) and one masked subtraction; with AVX2 the 4 sign bytes broadcast, spread
 * by a shuffle and compared into +-1 bytes for VPSIGNB.  VPMADDUBSW
 * multiplies m by the signed activations into int16 pairs (m <= 62,
 * |a| <= 127: no saturation), then the sub-block's odd integer scale 2s + 1
 * (int16, per 16 or 32 weights: one in-lane shuffle of a register of the
 * super-block's scales) goes in with VPMADDWD (VPDPWSSD with VNNI).
 *
 * Formats with signed values need no sign step: IQ1_S's v = 8·g + shift
 * (g in -1..1) is 8·(g + 1) + (shift - 8), so its dot is 8·dot(g + 1, a)
 * plus (shift - 8) times the activations' sum, which Q8_K's bsums hold;
 * IQ1_M's shift changes every 8 weights, so it takes u = 8·(g + 1) +
 * shift + 1 (0..18) and subtracts 9 times the sums; TQ1_0 and TQ2_0 take
 * t = v + 1 (0..2) and subtract the sums once.  What is left is one float
 * per super-block: d times the format's power of two (1/8 for IQ2 and IQ1,
 * 1/4 for IQ3_XXS, 1 for IQ3_S and the ternary types) times the
 * activation's d. */
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

/* A sub-block's 32 sign bits (bit k of byte b: weight 8b + k is negative),
 * read from p, and their application to 32 activations */
#ifdef __AVX512BW__
typedef __mmask32 iq_sgn;
static inline __attribute__((always_inline)) iq_sgn iq_signs(const uint8_t *p) {
    /* KMOVD straight from memory: a load, where a GPR or a vector lane
     * moved into k costs two of the ALU ports' uops */
    iq_sgn k;
    __asm__("kmovd %1, %0" : "=k"(k) : "m"(*(const uint32_t *)p));
    return k;
}
static inline __attribute__((always_inline)) __m256i iq_apply(__m256i a, iq_sgn s) {
    return _mm256_mask_sub_epi8(a, s, _mm256_setzero_si256(), a);
}
#else
typedef __m256i iq_sgn;
static inline __attribute__((always_inline)) iq_sgn iq_signs(const uint8_t *p) {
    uint32_t u;
    memcpy(&u, p, 4);
    __m256i v = _mm256_set1_epi32((int)u);
    v = _mm256_shuffle_epi8(v, _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2,
                                                3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_or_si256(v, _mm256_set1_epi8(1));
}
static inline __attribute__((always_inline)) __m256i iq_apply(__m256i a, iq_sgn s) { return _mm256_sign_epi8(a, s); }
#endif

/* four 8-byte grid entries, weights 0..7 from g[i0] and so on */
static inline __attribute__((always_inline)) __m256i iq_grid4(const uint64_t *g, unsigned i0, unsigned i1, unsigned i2,
                                                              unsigned i3) {
    __m256i v = _mm256_set1_epi64x((long long)g[i0]);
    v = _mm256_blend_epi32(v, _mm256_set1_epi64x((long long)g[i1]), 0x0C);
    v = _mm256_blend_epi32(v, _mm256_set1_epi64x((long long)g[i2]), 0x30);
    return _mm256_blend_epi32(v, _mm256_set1_epi64x((long long)g[i3]), 0xC0);
}
/* eight 4-byte grid entries (the IQ3 grids) by one gather: for 8 entries
 * it measured faster than broadcasts and blends (for the 4 of IQ2 and IQ1,
 * slower); idx: the 8 indices as int32 */
static inline __attribute__((always_inline)) __m256i iq_grid8(const uint32_t *g, __m256i idx) {
    return _mm256_i32gather_epi32((const int *)g, idx, 4);
}

/* int16 word j of each 128-bit half of v in all of that half: the scales
 * of sub-block j (per 32 weights both halves hold s0..s7; per 16 the low
 * half holds the first 16 weights' scales, the high half the others) */
static inline __attribute__((always_inline)) __m256i iq_sel(__m256i v, int j) {
    return _mm256_shuffle_epi8(v, _mm256_set1_epi16((short)((2 * j + 1) << 8 | 2 * j)));
}
/* 2s + 1 of int16 lanes s */
static inline __attribute__((always_inline)) __m256i iq_odd(__m256i s) {
    return _mm256_add_epi16(_mm256_slli_epi16(s, 1), _mm256_set1_epi16(1));
}

/* IQ1_M: u's shift + 1 term by 4 shift bits (bit k: weights 8k..8k+7 of the
 * sub-block have shift -1, so 0, else 2) */
#define IQ1_SP8(e, k) (((e) >> (k)) & 1 ? 0 : 2)
#define IQ1_SP8X(e, k)                                                                                            \
    IQ1_SP8(e, k), IQ1_SP8(e, k), IQ1_SP8(e, k), IQ1_SP8(e, k), IQ1_SP8(e, k), IQ1_SP8(e, k), IQ1_SP8(e, k),      \
        IQ1_SP8(e, k)
#define IQ1_SPE(e) {IQ1_SP8X(e, 0), IQ1_SP8X(e, 1), IQ1_SP8X(e, 2), IQ1_SP8X(e, 3)}
static const uint8_t iq1m_shift_bytes[16][32] __attribute__((aligned(32))) = {
    IQ1_SPE(0), IQ1_SPE(1), IQ1_SPE(2),  IQ1_SPE(3),  IQ1_SPE(4),  IQ1_SPE(5),  IQ1_SPE(6),  IQ1_SPE(7),
    IQ1_SPE(8), IQ1_SPE(9), IQ1_SPE(10), IQ1_SPE(11), IQ1_SPE(12), IQ1_SPE(13), IQ1_SPE(14), IQ1_SPE(15)};
#undef IQ1_SPE
#undef IQ1_SP8X
#undef IQ1_SP8

/* the super-block's float scale: d times the format's power of two */
static inline __attribute__((always_inline)) float iq_d(enum kfmt f, const uint8_t *blk) {
    switch (f) {
    case KIQ1M: return _cvtsh_ss(es_iq1m_d((const block_iq1_m *)blk)) * 0.125f;
    case KTQ2: return _cvtsh_ss(((const block_tq2_0 *)blk)->d);
    case KTQ1: return _cvtsh_ss(((const block_tq1_0 *)blk)->d);
    case KIQ3S: return _cvtsh_ss(((const block_iq3_s *)blk)->d);
    case KIQ3XXS: return _cvtsh_ss(((const block_iq3_xxs *)blk)->d) * 0.25f;
    default: { /* IQ2_*, IQ1_S: d is the block's first field */
        es_fp16 d;
        memcpy(&d, blk, 2);
        return _cvtsh_ss(d) * 0.125f;
    }
    }
}

/* TQ1_0's digits t = ((q·3) >> 8) of bytes q: [q >= 86] + [q >= 171] */
static inline __attribute__((always_inline)) __m256i tq1_digits(__m256i q) {
    const __m256i qx = _mm256_xor_si256(q, _mm256_set1_epi8(-128));
    __m256i c = _mm256_add_epi8(_mm256_cmpgt_epi8(qx, _mm256_set1_epi8(85 - 128)),
                                _mm256_cmpgt_epi8(qx, _mm256_set1_epi8(170 - 128)));
    return _mm256_abs_epi8(c);
}
/* bytes times 3, modulo 256 */
static inline __attribute__((always_inline)) __m256i tq1_times3(__m256i q) {
    return _mm256_add_epi8(q, _mm256_add_epi8(q, q));
}

/* The ternary formats: the sums of t·a (t = v + 1 in 0..2) in int16 (a
 * lane gets at most 8 pairs of 2·127: 4064), less the activations' sum */
static inline __attribute__((always_inline)) void tq_block(enum kfmt f, int T, const uint8_t *blk,
                                                           const block_q8_K *const *x, __m256 *acc) {
    __m256i s16[4];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) s16[t] = _mm256_setzero_si256();
#define TQ_ADD(tv, off)                                                                                           \
    for (int t = 0; t < T; t++)                                                                                   \
    s16[t] = _mm256_add_epi16(s16[t],                                                                             \
                              _mm256_maddubs_epi16((tv), _mm256_loadu_si256((const __m256i *)(x[t]->qs + (off)))))
    if (f == KTQ2) { /* weight 128h + 32l + m is bits 2l.. of qs[32h + m] */
        const block_tq2_0 *b = (const block_tq2_0 *)blk;
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            __m256i tv = kq_plane2(_mm256_loadu_si256((const __m256i *)(b->qs + 32 * (j / 4))), j % 4);
#pragma GCC unroll 4
            TQ_ADD(tv, 32 * j);
        }
    } else { /* TQ1_0 (quant.h): qs[0..31] hold weights 32n + m */
        const block_tq1_0 *b = (const block_tq1_0 *)blk;
        __m256i q = _mm256_loadu_si256((const __m256i *)b->qs);
#pragma GCC unroll 5
        for (int n = 0; n < 5; n++) {
            __m256i tv = tq1_digits(q);
#pragma GCC unroll 4
            TQ_ADD(tv, 32 * n);
            q = tq1_times3(q);
        }
        /* qs[32..47]: weights 160 + 16n + m, two digits a register */
        const __m128i x16 = _mm_loadu_si128((const __m128i *)(b->qs + 32));
        q = _mm256_set_m128i(_mm_add_epi8(x16, _mm_add_epi8(x16, x16)), x16);
#pragma GCC unroll 2
        for (int p = 0; p < 2; p++) {
            __m256i tv = tq1_digits(q);
#pragma GCC unroll 4
            TQ_ADD(tv, 160 + 32 * p);
            q = tq1_times3(tq1_times3(q));
        }
        /* qh: weights 240 + 4n + j are digit n of qh[j]; byte 4n + j of the
         * high half is qh[j]·3^n (both bytes of a word share n) */
        uint32_t h32;
        memcpy(&h32, b->qh, 4);
        const __m128i h = _mm_set1_epi32((int)h32), pw = _mm_setr_epi16(1, 1, 3, 3, 9, 9, 27, 27);
        __m128i hq = _mm_or_si128(_mm_and_si128(_mm_mullo_epi16(h, pw), _mm_set1_epi16(0xFF)),
                                  _mm_mullo_epi16(_mm_and_si128(h, _mm_set1_epi16((short)0xFF00)), pw));
        __m256i tv = tq1_digits(_mm256_inserti128_si256(q, hq, 1));
#pragma GCC unroll 4
        TQ_ADD(tv, 224);
    }
#undef TQ_ADD
    const float d = iq_d(f, blk);
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        __m256i bs = _mm256_loadu_si256((const __m256i *)x[t]->bsums);
        __m256i s = _mm256_madd_epi16(_mm256_sub_epi16(s16[t], bs), _mm256_set1_epi16(1));
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * x[t]->d), _mm256_cvtepi32_ps(s), acc[t]);
    }
}

/* What a super-block's dots need before its grid entries: the sign bits
 * (4 bytes a sub-block; sgv for the formats that compute them from codes,
 * IQ2_XXS, IQ2_XS, IQ3_XXS), the scales (iq_sel's layout) and, for IQ1,
 * the int16 weights of the bsums.  Apart from the dots so that the matvec
 * can prepare the next super-block's before this one's dots (iq_mv4) */
typedef struct {
    __m256i sgv, sc, coef;
} iq_prep_t;
static inline int iq_signs_computed(enum kfmt f) { return f == KIQ2XXS || f == KIQ2XS || f == KIQ3XXS; }
static inline __attribute__((always_inline)) iq_prep_t iq_prep(enum kfmt f, const uint8_t *blk) {
    __m256i sgv = _mm256_setzero_si256(), sc = _mm256_setzero_si256(), coef = _mm256_setzero_si256();
    if (f == KIQ2XXS || f == KIQ3XXS) {
        __m256i aux;
        if (f == KIQ2XXS) { /* the odd dwords of qs */
            const uint8_t *qs = (const uint8_t *)((const block_iq2_xxs *)blk)->qs;
            const __m256i odd = _mm256_setr_epi32(1, 3, 5, 7, 0, 2, 4, 6);
            __m256i a = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)qs), odd);
            __m256i b = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(qs + 32)), odd);
            aux = _mm256_permute2x128_si256(a, b, 0x20);
        } else {
            aux = _mm256_loadu_si256((const __m256i *)(((const block_iq3_xxs *)blk)->qs + 64));
        }
        sgv = iq_code_signs(iq_aux_codes(aux));
        __m256i s = _mm256_srli_epi32(aux, 28);
        sc = iq_odd(_mm256_permute4x64_epi64(_mm256_packs_epi32(s, s), 0x88));
    } else if (f == KIQ2XS || f == KIQ2S) {
        const uint8_t *scales;
        if (f == KIQ2XS) { /* sign codes: the top 7 bits of the 32 uint16 */
            const block_iq2_xs *b = (const block_iq2_xs *)blk;
            __m256i a = _mm256_srli_epi16(_mm256_loadu_si256((const __m256i *)b->qs), 9);
            __m256i c = _mm256_srli_epi16(_mm256_loadu_si256((const __m256i *)(b->qs + 16)), 9);
            sgv = iq_code_signs(_mm256_permute4x64_epi64(_mm256_packus_epi16(a, c), 0xD8));
            scales = b->scales;
        } else {
            scales = ((const block_iq2_s *)blk)->scales;
        }
        __m128i v = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)scales));
        sc = iq_odd(_mm256_set_m128i(_mm_srli_epi16(v, 4), _mm_and_si128(v, _mm_set1_epi16(15))));
    } else if (f == KIQ3S) {
        const block_iq3_s *b = (const block_iq3_s *)blk;
        uint32_t s4;
        memcpy(&s4, b->scales, 4);
        __m128i v = _mm_cvtepu8_epi16(_mm_cvtsi32_si128((int)s4));
        v = _mm_unpacklo_epi16(_mm_and_si128(v, _mm_set1_epi16(15)), _mm_srli_epi16(v, 4));
        sc = iq_odd(_mm256_broadcastsi128_si256(v));
    } else if (f == KIQ1S) {
        /* weights 8·(2s + 1) for the dots with g + 1, (2s + 1)(shift - 8)
         * for the sums */
        __m128i qh = _mm_loadu_si128((const __m128i *)((const block_iq1_s *)blk)->qh);
        __m128i s = _mm_add_epi16(_mm_and_si128(_mm_srli_epi16(qh, 11), _mm_set1_epi16(14)), _mm_set1_epi16(1));
        sc = _mm256_broadcastsi128_si256(_mm_slli_epi16(s, 3));
        __m128i c = _mm_mullo_epi16(s, _mm_sub_epi16(_mm_set1_epi16(-7), _mm_slli_epi16(_mm_srli_epi16(qh, 15), 1)));
        coef = _mm256_set_m128i(_mm_unpackhi_epi16(c, c), _mm_unpacklo_epi16(c, c));
    } else { /* KIQ1M: scale k of weights 16k.. is bits 3(k%4).. of uint16 k/4 */
        const block_iq1_m *b = (const block_iq1_m *)blk;
        uint64_t s8;
        memcpy(&s8, b->scales, 8);
        __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi64x((long long)s8),
                                        _mm256_setr_epi8(0, 1, 0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7, 0, 1, 0, 1, 2,
                                                         3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7));
        /* low half: k = 2j (shift 0 or 6), high half: k = 2j + 1 (3 or 9),
         * moved to bits 13..15 by a multiply */
        v = _mm256_mullo_epi16(v, _mm256_setr_epi16(8192, 128, 8192, 128, 8192, 128, 8192, 128, 1024, 16, 1024, 16,
                                                     1024, 16, 1024, 16));
        sc = iq_odd(_mm256_srli_epi16(v, 13));
        /* -9(2s + 1) in the bsums' order (k = 0..15) */
        __m128i lo = _mm256_castsi256_si128(sc), hi = _mm256_extracti128_si256(sc, 1);
        __m256i c = _mm256_set_m128i(_mm_unpackhi_epi16(lo, hi), _mm_unpacklo_epi16(lo, hi));
        coef = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_add_epi16(_mm256_slli_epi16(c, 3), c));
    }
    return (iq_prep_t){sgv, sc, coef};
}

/* acc[t] += the super-block's dot with x[t], from its iq_prep; sgb: where
 * its sgv was stored, for the formats that compute their signs */
static inline __attribute__((always_inline)) void iq_dots(enum kfmt f, int T, const uint8_t *blk, iq_prep_t pr,
                                                          const uint8_t *sgb, const block_q8_K *const *x,
                                                          __m256 *acc) {
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
    const __m256i sc = pr.sc, coef = pr.coef;
    const uint8_t *sg = f == KIQ2S   ? ((const block_iq2_s *)blk)->qs + 32
                        : f == KIQ3S ? ((const block_iq3_s *)blk)->signs
                                     : sgb;
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
        __m256i m;
        if (f == KIQ2XXS) {
            const uint8_t *q = (const uint8_t *)((const block_iq2_xxs *)blk)->qs + 8 * j;
            m = iq_grid4(es_iq2xxs_grid, q[0], q[1], q[2], q[3]);
        } else if (f == KIQ2XS) {
            uint64_t u;
            memcpy(&u, ((const block_iq2_xs *)blk)->qs + 4 * j, 8);
            m = iq_grid4(es_iq2xs_grid, u & 511, u >> 16 & 511, u >> 32 & 511, u >> 48 & 511);
        } else if (f == KIQ2S) {
            const block_iq2_s *b = (const block_iq2_s *)blk;
            const uint8_t *q = b->qs + 4 * j;
            const unsigned h = b->qh[j];
            m = iq_grid4(es_iq2s_grid, q[0] | (h & 3) << 8, q[1] | (h & 12) << 6, q[2] | (h & 48) << 4,
                         q[3] | (h & 192) << 2);
        } else if (f == KIQ3XXS) {
            const uint8_t *q = ((const block_iq3_xxs *)blk)->qs + 8 * j;
            m = iq_grid8(es_iq3xxs_grid, _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)q)));
        } else if (f == KIQ3S) {
            /* index k: qs[8j + k] and bit k of qh[j] as bit 8 (a 4-byte
             * read from qh + j stays in the block: signs follow qh) */
            const block_iq3_s *b = (const block_iq3_s *)blk;
            uint32_t h4;
            memcpy(&h4, b->qh + j, 4);
            __m256i hb = _mm256_sllv_epi32(_mm256_set1_epi32((int)h4), _mm256_setr_epi32(8, 7, 6, 5, 4, 3, 2, 1));
            m = iq_grid8(es_iq3s_grid, _mm256_or_si256(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b->qs + 8 * j))),
                                                       _mm256_and_si256(hb, _mm256_set1_epi32(256))));
        } else if (f == KIQ1S) { /* g + 1 */
            const block_iq1_s *b = (const block_iq1_s *)blk;
            const uint8_t *q = b->qs + 4 * j;
            const unsigned h = b->qh[j];
            m = _mm256_add_epi8(iq_grid4(es_iq1s_grid, q[0] | (h & 7) << 8, q[1] | (h & 56) << 5,
                                         q[2] | (h & 448) << 2, q[3] | (h & 3584) >> 1),
                                _mm256_set1_epi8(1));
        } else { /* KIQ1M: u = 8·(g + 1) + shift + 1 */
            const block_iq1_m *b = (const block_iq1_m *)blk;
            const uint8_t *q = b->qs + 4 * j;
            const unsigned h0 = b->qh[2 * j], h1 = b->qh[2 * j + 1];
            __m256i g = iq_grid4(es_iq1s_grid, q[0] | (h0 & 7) << 8, q[1] | (h0 & 0x70) << 4, q[2] | (h1 & 7) << 8,
                                 q[3] | (h1 & 0x70) << 4);
            const unsigned e = (h0 >> 3 & 1) | (h0 >> 6 & 2) | (h1 >> 1 & 4) | (h1 >> 4 & 8);
            m = _mm256_add_epi8(_mm256_slli_epi16(_mm256_add_epi8(g, _mm256_set1_epi8(1)), 3),
                                _mm256_load_si256((const __m256i *)iq1m_shift_bytes[e]));
        }
        const __m256i scj = iq_sel(sc, j);
        if (f == KIQ1S || f == KIQ1M) {
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                __m256i a = _mm256_loadu_si256((const __m256i *)(x[t]->qs + 32 * j));
                sumi[t][j % C] = kq_madd(sumi[t][j % C], scj, _mm256_maddubs_epi16(m, a));
            }
        } else {
            const iq_sgn s = iq_signs(sg + 4 * j);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                __m256i a = _mm256_loadu_si256((const __m256i *)(x[t]->qs + 32 * j));
                sumi[t][j % C] = kq_madd(sumi[t][j % C], scj, _mm256_maddubs_epi16(m, iq_apply(a, s)));
            }
        }
    }
    const float d = iq_d(f, blk);
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        if (f == KIQ1S || f == KIQ1M)
            sumi[t][0] = kq_madd(sumi[t][0], coef, _mm256_loadu_si256((const __m256i *)x[t]->bsums));
        if (C == 2) sumi[t][0] = _mm256_add_epi32(sumi[t][0], sumi[t][1]);
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * x[t]->d), _mm256_cvtepi32_ps(sumi[t][0]), acc[t]);
    }
}

/* kq_block for these formats: acc[t] += the super-block's dot with x[t] */
static inline __attribute__((always_inline)) void iq_block(enum kfmt f, int T, const uint8_t *blk,
                                                           const block_q8_K *const *x, __m256 *acc) {
    if (f == KTQ1 || f == KTQ2) {
        tq_block(f, T, blk, x, acc);
        return;
    }
    uint8_t sgb[32] __attribute__((aligned(32)));
    const iq_prep_t pr = iq_prep(f, blk);
    if (iq_signs_computed(f)) _mm256_store_si256((__m256i *)sgb, pr.sgv);
    iq_dots(f, T, blk, pr, sgb, x, acc);
}

/* The matvec of the codebook formats: rows r, r+q, r+2q, r+3q (as kq_mv4)
 * against one token, each super-block's signs and scales prepared one
 * super-block ahead, so that their chain of shifts and shuffles overlaps
 * the previous super-block's dots instead of holding up its own.  Each
 * row's integers and their order into acc are kq_mv4's: the same results. */
static inline __attribute__((always_inline)) void iq_mv4(enum kfmt f, const void *w, size_t rb, int64_t nb,
                                                         const block_q8_K *x, float *y, int64_t r, int64_t q) {
    const char *row = (const char *)w + (size_t)r * rb;
    const size_t bs = kq_block_bytes(f), rs = (size_t)q * rb;
    __m256 acc[4];
    iq_prep_t pr[4];
    uint8_t sgb[4][32] __attribute__((aligned(32)));
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        acc[k] = _mm256_setzero_ps();
        pr[k] = iq_prep(f, (const uint8_t *)row + (size_t)k * rs);
    }
    for (int64_t i = 0; i < nb; i++) {
        matvec_prefetch_streams(row, rs, (size_t)i * bs, bs);
        const block_q8_K *xi = x + i;
        const int64_t in = i + 1 < nb ? i + 1 : i; /* the last block prepares itself again, unused */
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            const uint8_t *blk = (const uint8_t *)row + (size_t)k * rs + (size_t)i * bs;
            if (iq_signs_computed(f)) _mm256_store_si256((__m256i *)sgb[k], pr[k].sgv);
            const iq_prep_t cur = pr[k];
            pr[k] = iq_prep(f, (const uint8_t *)row + (size_t)k * rs + (size_t)in * bs);
            iq_dots(f, 1, blk, cur, sgb[k], &xi, &acc[k]);
        }
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) y[r + k * q] = hsum8(acc[k]);
}

#endif
