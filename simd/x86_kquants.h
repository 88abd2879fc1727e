/* x86_kquants.h — the K-quant products (Q2_K..Q6_K, and IQ4_XS, against
 * Q8_K activations) on 256-bit integer registers, written once and compiled twice
 * as static functions: in x86_avx2.c (AVX2: VPMADDWD then VPADDD) and in
 * x86_avx512.c (AVX512_VNNI with VL: VPDPWSSD, the two fused), whose tables
 * take the slots at the end of this file.  Include only from those two.
 * The IQ codebook formats, TQ1_0 and TQ2_0 come in through x86_iquants.h (one
 * super-block, iq_block) and share the rest.
 *
 * Per super-block of 256 weights, every format reduces to integers: the
 * quants q as unsigned bytes, VPMADDUBSW q·a into int16 pairs (no pair can
 * saturate: q <= 63, |a| <= 127), then the sub-block scale (int16) times the
 * pairs into int32 lanes.  What the format subtracts (Q2_K/Q4_K/Q5_K's mins,
 * Q3_K's 4 and Q6_K's 32 offsets) is taken from the activation's bsums (sums
 * of 16 quants), never from the weights.  Only the super-block's fp16 d (and
 * dmin) and the activation's d are floats, so each super-block ends in one
 * int32 -> fp32 conversion and one FMA per token.
 *
 * Layouts (quant.h): a "chunk" is the 32 bytes of quants one load brings:
 * Q4_K/Q5_K 64 weights (low nibbles: sub-block 2c, high: 2c+1), Q2_K/Q3_K/
 * Q6_K 128 weights in four 32-weight planes p, each two 16-weight
 * sub-blocks.  IQ4_XS has no offset: its quants are the IQ4_NL table's
 * signed values, multiplied as |v| by a with v's sign (|v| <= 127, so a
 * pair stays below 32767), one 32-weight sub-block a load. */
#ifndef ES_X86_KQUANTS_H
#define ES_X86_KQUANTS_H

#include <immintrin.h>
#include <string.h>

#include "kernels.h"
#include "x86_avx2_common.h"

/* The last (r1 - r0) % 4 rows of a matvec, and the rows of a prefill pass,
 * are read one after another, a single stream the hardware prefetcher
 * follows; software prefetch KPF bytes ahead still helps it (measured,
 * bench/bench_kernels).  (Four rows side by side, restarting 4 streams
 * every pass, measured 15% slower than that for Q6_K; 4 rows from the
 * quarters of the range, the matvecs' order, 31% faster.) */
#ifndef KPF
#define KPF 2048
#endif
enum kfmt { KQ2, KQ3, KQ4, KQ5, KQ6, KIQ4XS, KIQ2XXS, KIQ2XS, KIQ2S, KIQ3XXS, KIQ3S, KIQ1S, KIQ1M, KTQ2, KTQ1 };

static inline size_t kq_block_bytes(enum kfmt f) {
    switch (f) {
    case KQ2: return sizeof(block_q2_K);
    case KQ3: return sizeof(block_q3_K);
    case KQ4: return sizeof(block_q4_K);
    case KQ5: return sizeof(block_q5_K);
    case KIQ4XS: return sizeof(block_iq4_xs);
    case KIQ2XXS: return sizeof(block_iq2_xxs);
    case KIQ2XS: return sizeof(block_iq2_xs);
    case KIQ2S: return sizeof(block_iq2_s);
    case KIQ3XXS: return sizeof(block_iq3_xxs);
    case KIQ3S: return sizeof(block_iq3_s);
    case KIQ1S: return sizeof(block_iq1_s);
    case KIQ1M: return sizeof(block_iq1_m);
    case KTQ2: return sizeof(block_tq2_0);
    case KTQ1: return sizeof(block_tq1_0);
    default: return sizeof(block_q6_K);
    }
}

/* acc + Σ pairs of s16·p16 (int16 -> int32 lanes) */
static inline __attribute__((always_inline)) __m256i kq_madd(__m256i acc, __m256i s16, __m256i p16) {
#ifdef __AVX512VNNI__
    return _mm256_dpwssd_epi32(acc, s16, p16);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(s16, p16));
#endif
}

/* v holds 8 int16 in both halves: lane 2p in the low half, 2p+1 in the high
 * half (the two 16-weight sub-blocks of a 32-weight plane) */
static inline __attribute__((always_inline)) __m256i kq_pair16(__m256i v, int p) {
    __m128i lo = _mm_set1_epi16((short)((4 * p + 1) << 8 | 4 * p));
    __m128i hi = _mm_set1_epi16((short)((4 * p + 3) << 8 | (4 * p + 2)));
    return _mm256_shuffle_epi8(v, _mm256_set_m128i(hi, lo));
}
static inline __m256i kq_half(__m256i v, int h) {
    return _mm256_broadcastsi128_si256(h ? _mm256_extracti128_si256(v, 1) : _mm256_castsi256_si128(v));
}

/* The bits of a chunk's quants: weights of plane p are bits 2p..2p+1 */
static inline __attribute__((always_inline)) __m256i kq_plane2(__m256i bits, int p) {
    return _mm256_and_si256(_mm256_srli_epi16(bits, 2 * p), _mm256_set1_epi8(3));
}
/* bit k of every byte of v, moved to bit `to` */
static inline __attribute__((always_inline)) __m256i kq_bit(__m256i v, int k, int to) {
    return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(v, k), _mm256_set1_epi8(1)), to);
}

/* Q4_K/Q5_K: the 8 six-bit scales (bytes 0..7) and mins (8..15) from the
 * 12 packed bytes at s12 (es_k4_scale_min), with two shuffles.  Reads 16
 * bytes: the 4 after the scales are the block's own (qh or qs), unused. */
static inline __attribute__((always_inline)) __m128i kq_k4_scale_bytes(const uint8_t *s12) {
    __m128i v = _mm_loadu_si128((const __m128i *)s12);
    /* the low bits: scales 0..3 and mins 0..3 are bytes 0..3 and 4..7 & 63;
     * scales 4..7 the low nibbles of bytes 8..11, mins 4..7 their high ones */
    __m128i lo = _mm_shuffle_epi8(v, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
    lo = _mm_blend_epi32(lo, _mm_srli_epi16(lo, 4), 8);
    lo = _mm_and_si128(lo, _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 15, 15, 15, 15));
    /* the high 2 bits of scales 4..7 and mins 4..7: the top bits of bytes
     * 0..3 and 4..7, moved to bits 4..5 */
    __m128i hi = _mm_shuffle_epi8(v, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
    hi = _mm_and_si128(_mm_srli_epi16(hi, 2), _mm_set1_epi8(0x30));
    return _mm_or_si128(lo, hi);
}

/* Q3_K: the 16 six-bit scales minus 32, int16 lanes 0..15 */
static inline __m256i kq_k3_scales(const uint8_t *s12) {
    uint32_t a[3], u[4];
    memcpy(a, s12, 12);
    const uint32_t m4 = 0x0f0f0f0f, m2 = 0x03030303;
    u[0] = (a[0] & m4) | ((a[2] & m2) << 4);
    u[1] = (a[1] & m4) | (((a[2] >> 2) & m2) << 4);
    u[2] = ((a[0] >> 4) & m4) | (((a[2] >> 4) & m2) << 4);
    u[3] = ((a[1] >> 4) & m4) | (((a[2] >> 6) & m2) << 4);
    __m256i s = _mm256_cvtepu8_epi16(_mm_set_epi32((int)u[3], (int)u[2], (int)u[1], (int)u[0]));
    return _mm256_sub_epi16(s, _mm256_set1_epi16(32));
}

/* Q4_K/Q5_K chunk c (weights 64c..64c+63) of quants qs (and Q5_K's fifth
 * bits hb, the 32 bytes of qh): sub-block 2c in lo, 2c+1 in hi, as bytes */
static inline __attribute__((always_inline)) void kq_k4_chunk(enum kfmt f, const uint8_t *qs, __m256i hb, int c,
                                                              __m256i *lo, __m256i *hi) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256i bits = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
    *lo = _mm256_and_si256(bits, m4);
    *hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
    if (f == KQ5) {
        *lo = _mm256_or_si256(*lo, kq_bit(hb, 2 * c, 4));
        *hi = _mm256_or_si256(*hi, kq_bit(hb, 2 * c + 1, 4));
    }
}

#include "x86_iquants.h"

/* One super-block of one row against T tokens' super-blocks x[t]:
 * acc[t] += (its dot) in 8 lanes (Q2_K, Q3_K, Q6_K, IQ4_XS).  The body per format is specialised by
 * always_inline on (f, T). */
static inline __attribute__((always_inline)) void kq_block(enum kfmt f, int T, const uint8_t *blk,
                                                           const block_q8_K *const *x, __m256 *acc) {
    if (f >= KIQ2XXS) {
        iq_block(f, T, blk, x, acc);
        return;
    }
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    /* VPDPWSSD's accumulator is a dependency chain (latency ~5): with few
     * tokens, spread the sums over C chains (added up at the end) */
#ifdef __AVX512VNNI__
    const int C = T == 1 ? 4 : T == 2 ? 2 : 1;
#else
    const int C = 1;
#endif
    __m256i sumi[4][4];
    float d, dmin = 0;
    /* Q4_K and Q5_K: kq4_rows */
    if (f == KIQ4XS) {
        /* 8 sub-blocks of 32: the table's values v (nib32, iq4_lookup) as
         * |v| against a signed as v, then the sub-block's scale ls - 32 */
        const block_iq4_xs *b = (const block_iq4_xs *)blk;
        d = _cvtsh_ss(b->d);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
#pragma GCC unroll 4
            for (int j = 0; j < C; j++) sumi[t][j] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            __m256i v = iq4_lookup(nib32(b->qs + 16 * j)), u = _mm256_sign_epi8(v, v);
            __m256i sc = _mm256_set1_epi16((short)(es_iq4xs_scale(j, b) - 32));
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                __m256i a = _mm256_loadu_si256((const __m256i *)(x[t]->qs + 32 * j));
                sumi[t][j % C] = kq_madd(sumi[t][j % C], sc, _mm256_maddubs_epi16(u, _mm256_sign_epi8(a, v)));
            }
        }
    } else {
        /* 16 sub-blocks of 16: scales as int16 lanes 0..15 */
        const uint8_t *qs, *hm = 0;
        __m256i sc;
        if (f == KQ2) {
            const block_q2_K *b = (const block_q2_K *)blk;
            qs = b->qs;
            d = _cvtsh_ss(b->d);
            dmin = _cvtsh_ss(b->dmin);
            __m128i s8 = _mm_loadu_si128((const __m128i *)b->scales);
            sc = _mm256_cvtepu8_epi16(_mm_and_si128(s8, _mm_set1_epi8(0x0f)));
            __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s8, 4), _mm_set1_epi8(0x0f)));
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                __m256i bs = _mm256_loadu_si256((const __m256i *)x[t]->bsums);
                __m256 m = _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bs));
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(-dmin * x[t]->d), m, acc[t]);
            }
        } else if (f == KQ3) {
            const block_q3_K *b = (const block_q3_K *)blk;
            qs = b->qs;
            hm = b->hmask;
            d = _cvtsh_ss(b->d);
            sc = kq_k3_scales(b->scales);
        } else {
            const block_q6_K *b = (const block_q6_K *)blk;
            qs = b->ql;
            hm = b->qh;
            d = _cvtsh_ss(b->d);
            sc = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
#pragma GCC unroll 4
            for (int j = 0; j < C; j++) sumi[t][j] = _mm256_setzero_si256();
            if (f != KQ2) { /* Q3_K's q - 4, Q6_K's q - 32: the offset times Σ scale·bsum */
                __m256i o = _mm256_madd_epi16(sc, _mm256_loadu_si256((const __m256i *)x[t]->bsums));
                sumi[t][0] = _mm256_sub_epi32(sumi[t][0], _mm256_slli_epi32(o, f == KQ3 ? 2 : 5));
            }
        }
        __m256i h3 = f == KQ3 ? _mm256_loadu_si256((const __m256i *)hm) : _mm256_setzero_si256();
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m256i q[4];
            if (f == KQ6) { /* low nibbles from ql (two chunks), high 2 bits from qh */
                __m256i l1 = _mm256_loadu_si256((const __m256i *)(qs + 64 * h));
                __m256i l2 = _mm256_loadu_si256((const __m256i *)(qs + 64 * h + 32));
                __m256i hh = _mm256_loadu_si256((const __m256i *)(hm + 32 * h));
                q[0] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(kq_plane2(hh, 0), 4));
                q[1] = _mm256_or_si256(_mm256_and_si256(l2, m4), _mm256_slli_epi16(kq_plane2(hh, 1), 4));
                q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                       _mm256_slli_epi16(kq_plane2(hh, 2), 4));
                q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l2, 4), m4),
                                       _mm256_slli_epi16(kq_plane2(hh, 3), 4));
            } else {
                __m256i bits = _mm256_loadu_si256((const __m256i *)(qs + 32 * h));
#pragma GCC unroll 4
                for (int p = 0; p < 4; p++) {
                    q[p] = kq_plane2(bits, p);
                    if (f == KQ3) q[p] = _mm256_or_si256(q[p], kq_bit(h3, 4 * h + p, 2));
                }
            }
            __m256i sch = kq_half(sc, h);
#pragma GCC unroll 4
            for (int p = 0; p < 4; p++) {
                __m256i s = kq_pair16(sch, p);
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) {
                    __m256i a = _mm256_loadu_si256((const __m256i *)(x[t]->qs + 128 * h + 32 * p));
                    sumi[t][p % C] = kq_madd(sumi[t][p % C], s, _mm256_maddubs_epi16(q[p], a));
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
#pragma GCC unroll 4
        for (int j = 1; j < C; j++) sumi[t][0] = _mm256_add_epi32(sumi[t][0], sumi[t][j]);
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * x[t]->d), _mm256_cvtepi32_ps(sumi[t][0]), acc[t]);
    }
}

/* Row r times tokens 0..T-1 (act rows `as` bytes apart) into y[t*ys + r] */
static inline __attribute__((always_inline)) void kq_row(enum kfmt f, int T, const void *w, size_t rb, int64_t nb,
                                                         const void *act, size_t as, float *y, int64_t ys,
                                                         int64_t r) {
    const uint8_t *row = (const uint8_t *)w + (size_t)r * rb;
    const size_t bs = kq_block_bytes(f);
    __m256 acc[4];
    const block_q8_K *x[4];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        if (KPF && T == 1) {
            const char *p = (const char *)row + (size_t)i * bs + KPF;
#pragma GCC unroll 4
            for (size_t j = 0; j < (bs + 63) / 64; j++) _mm_prefetch(p + 64 * j, _MM_HINT_T0);
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) x[t] = (const block_q8_K *)((const char *)act + (size_t)t * as) + i;
        kq_block(f, T, row + (size_t)i * bs, x, acc);
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) y[t * ys + r] = hsum8(acc[t]);
}

/* Q2_K/Q3_K/Q6_K/IQ4_XS matvec: rows r, r+q, r+2q, r+3q (the quarters that
 * matvec_prefetch_streams describes) against one token, kq_block per row */
static inline __attribute__((always_inline)) void kq_mv4(enum kfmt f, const void *w, size_t rb, int64_t nb,
                                                         const block_q8_K *x, float *y, int64_t r, int64_t q) {
    const char *row = (const char *)w + (size_t)r * rb;
    const size_t bs = kq_block_bytes(f), rs = (size_t)q * rb;
    __m256 acc[4];
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) acc[k] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        matvec_prefetch_streams(row, rs, (size_t)i * bs, bs);
        const block_q8_K *xi = x + i;
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) kq_block(f, 1, (const uint8_t *)row + (size_t)k * rs + (size_t)i * bs, &xi, &acc[k]);
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) y[r + k * q] = hsum8(acc[k]);
}

/* Q4_K/Q5_K, every product: R rows q apart, r, r+q, .. (the matvec: R = 4
 * from the quarters that matvec_prefetch_streams, x86_avx2_common.h,
 * describes, then R = 1 for the last rows), against T tokens `as` bytes
 * apart (a prefill pass: R = 1, T = 1..4); y[t*ys + r + k*q].  Per
 * super-block, what comes from an activation (its scale, the sums of 32
 * from the bsums) is read once for the R rows; per row, the scales and
 * mins are unpacked with shuffles (kq_k4_scale_bytes) and each sub-block's
 * scale is picked out of the bytes by one more shuffle per 32 weights, once
 * for the T tokens.  The mins term (dmin·Σ m_j·bsum_j) goes into its own
 * 4-lane accumulator, subtracted at the end.  Each (row, token) is computed
 * by the same instructions whatever R and T, so the matvec and the prefill
 * agree bit for bit.  R = 4: four streams, prefetched by
 * matvec_prefetch_streams; R = 1 with one token: one stream, KPF ahead. */
static inline __attribute__((always_inline)) void kq4_rows(enum kfmt f, int R, int T, const void *w, size_t rb,
                                                           int64_t nb, const void *act, size_t as, float *y,
                                                           int64_t ys, int64_t r, int64_t q) {
    const char *row = (const char *)w + (size_t)r * rb;
    const size_t bs = kq_block_bytes(f), rs = (size_t)q * rb;
#ifdef __AVX512VNNI__
    const int C = 2; /* VPDPWSSD chains per row (see kq_block) */
#else
    const int C = 1;
#endif
    __m256 acc[4][4];
    __m128 accm[4][4];
    const block_q8_K *x[4];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) x[t] = (const block_q8_K *)((const char *)act + (size_t)t * as);
#pragma GCC unroll 4
    for (int k = 0; k < R; k++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            acc[k][t] = _mm256_setzero_ps();
            accm[k][t] = _mm_setzero_ps();
        }
    for (int64_t i = 0; i < nb; i++) {
        if (R == 4) {
            matvec_prefetch_streams(row, rs, (size_t)i * bs, bs);
        } else if (KPF && T == 1) {
#pragma GCC unroll 4
            for (size_t j = 0; j < (bs + 63) / 64; j++) _mm_prefetch(row + (size_t)i * bs + KPF + 64 * j, _MM_HINT_T0);
        }
        __m128i s32[4];
        __m128 xd[4];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            __m256i bsum = _mm256_loadu_si256((const __m256i *)x[t][i].bsums);
            s32[t] = _mm_hadd_epi16(_mm256_castsi256_si128(bsum), _mm256_extracti128_si256(bsum, 1));
            xd[t] = _mm_set1_ps(x[t][i].d);
        }
#pragma GCC unroll 4
        for (int k = 0; k < R; k++) {
            const uint8_t *blk = (const uint8_t *)row + (size_t)k * rs + (size_t)i * bs;
            const block_q4_K *b4 = (const block_q4_K *)blk; /* Q5_K begins as Q4_K does */
            const uint8_t *qs = f == KQ4 ? b4->qs : ((const block_q5_K *)blk)->qs;
            __m256i hb = f == KQ5 ? _mm256_loadu_si256((const __m256i *)((const block_q5_K *)blk)->qh)
                                  : _mm256_setzero_si256();
            __m128i sm = kq_k4_scale_bytes(b4->scales);
            /* d and dmin (adjacent) in lanes 0 and 1, times each token's d */
            uint32_t dpair;
            memcpy(&dpair, blk, 4);
            const __m128 dpf = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dpair));
            const __m128i mins16 = _mm_cvtepu8_epi16(_mm_unpackhi_epi64(sm, sm));
            __m128 dd[4];
            __m256i sumi[4][2];
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                dd[t] = _mm_mul_ps(dpf, xd[t]);
                __m128i mp = _mm_madd_epi16(mins16, s32[t]);
                accm[k][t] = _mm_fmadd_ps(_mm_permute_ps(dd[t], 0x55), _mm_cvtepi32_ps(mp), accm[k][t]);
                sumi[t][0] = sumi[t][1] = _mm256_setzero_si256();
            }
            __m256i sc = _mm256_broadcastsi128_si256(sm);
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) {
                __m256i ql, qh;
                kq_k4_chunk(f, qs, hb, c, &ql, &qh);
                /* scale byte j as the int16 of every lane (the high byte zeroed) */
                __m256i sl = _mm256_shuffle_epi8(sc, _mm256_set1_epi16((short)(0x8000 | (2 * c))));
                __m256i sh = _mm256_shuffle_epi8(sc, _mm256_set1_epi16((short)(0x8000 | (2 * c + 1))));
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) {
                    const __m256i *a = (const __m256i *)(x[t][i].qs + 64 * c);
                    sumi[t][0] = kq_madd(sumi[t][0], sl, _mm256_maddubs_epi16(ql, _mm256_loadu_si256(a)));
                    sumi[t][C - 1] = kq_madd(sumi[t][C - 1], sh, _mm256_maddubs_epi16(qh, _mm256_loadu_si256(a + 1)));
                }
            }
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                if (C == 2) sumi[t][0] = _mm256_add_epi32(sumi[t][0], sumi[t][1]);
                acc[k][t] = _mm256_fmadd_ps(_mm256_broadcastss_ps(dd[t]), _mm256_cvtepi32_ps(sumi[t][0]), acc[k][t]);
            }
        }
    }
#pragma GCC unroll 4
    for (int k = 0; k < R; k++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            __m128 m = _mm_add_ps(accm[k][t], _mm_movehl_ps(accm[k][t], accm[k][t]));
            m = _mm_add_ss(m, _mm_movehdup_ps(m));
            y[t * ys + r + k * q] = hsum8(acc[k][t]) - _mm_cvtss_f32(m);
        }
}

static inline __attribute__((always_inline)) void kq_matvec(enum kfmt f, const void *w, size_t rb, int64_t n,
                                                            const void *act, float *y, int64_t r0, int64_t r1) {
    int64_t r = r0;
    if (f == KQ4 || f == KQ5) {
        int64_t q = (r1 - r0) / 4;
        for (int64_t j = 0; j < q; j++) kq4_rows(f, 4, 1, w, rb, n / QK_K, act, 0, y, 0, r0 + j, q);
        for (r = r0 + 4 * q; r < r1; r++) kq4_rows(f, 1, 1, w, rb, n / QK_K, act, 0, y, 0, r, 1);
        return;
    }
    int64_t q = (r1 - r0) / 4;
    if (f == KIQ2XXS) /* measured: 1.1x for IQ2_XXS, none for the other IQ formats */
        for (int64_t j = 0; j < q; j++) iq_mv4(f, w, rb, n / QK_K, act, y, r0 + j, q);
    else
        for (int64_t j = 0; j < q; j++) kq_mv4(f, w, rb, n / QK_K, act, y, r0 + j, q);
    for (r = r0 + 4 * q; r < r1; r++) kq_row(f, 1, w, rb, n / QK_K, act, 0, y, 0, r);
}

/* a prefill pass (see matmul_blocked): T tokens, one row at a time */
static inline __attribute__((always_inline)) void kq_pass(enum kfmt f, int T, const void *w, size_t rb, int64_t n,
                                                          const void *act, size_t as, float *y, int64_t ys,
                                                          int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        if (f == KQ4 || f == KQ5) { /* as the matvec computes each row */
            switch (T) {
            case 1: kq4_rows(f, 1, 1, w, rb, n / QK_K, act, as, y, ys, r, 1); break;
            case 2: kq4_rows(f, 1, 2, w, rb, n / QK_K, act, as, y, ys, r, 1); break;
            case 3: kq4_rows(f, 1, 3, w, rb, n / QK_K, act, as, y, ys, r, 1); break;
            default: kq4_rows(f, 1, 4, w, rb, n / QK_K, act, as, y, ys, r, 1); break;
            }
            continue;
        }
        switch (T) {
        case 1: kq_row(f, 1, w, rb, n / QK_K, act, as, y, ys, r); break;
        case 2: kq_row(f, 2, w, rb, n / QK_K, act, as, y, ys, r); break;
        case 3: kq_row(f, 3, w, rb, n / QK_K, act, as, y, ys, r); break;
        default: kq_row(f, 4, w, rb, n / QK_K, act, as, y, ys, r); break;
        }
    }
}

static void kq_pass_q2_K(int T, const void *w, size_t rb, int64_t n, const void *act, size_t as, float *y,
                         int64_t ys, int64_t r0, int64_t r1) {
    kq_pass(KQ2, T, w, rb, n, act, as, y, ys, r0, r1);
}
static void kq_pass_q3_K(int T, const void *w, size_t rb, int64_t n, const void *act, size_t as, float *y,
                         int64_t ys, int64_t r0, int64_t r1) {
    kq_pass(KQ3, T, w, rb, n, act, as, y, ys, r0, r1);
}
static void kq_pass_q4_K(int T, const void *w, size_t rb, int64_t n, const void *act, size_t as, float *y,
                         int64_t ys, int64_t r0, int64_t r1) {
    kq_pass(KQ4, T, w, rb, n, act, as, y, ys, r0, r1);
}
static void kq_pass_q5_K(int T, const void *w, size_t rb, int64_t n, const void *act, size_t as, float *y,
                         int64_t ys, int64_t r0, int64_t r1) {
    kq_pass(KQ5, T, w, rb, n, act, as, y, ys, r0, r1);
}
static void kq_pass_iq4_xs(int T, const void *w, size_t rb, int64_t n, const void *act, size_t as, float *y,
                           int64_t ys, int64_t r0, int64_t r1) {
    kq_pass(KIQ4XS, T, w, rb, n, act, as, y, ys, r0, r1);
}
static void kq_pass_q6_K(int T, const void *w, size_t rb, int64_t n, const void *act, size_t as, float *y,
                         int64_t ys, int64_t r0, int64_t r1) {
    kq_pass(KQ6, T, w, rb, n, act, as, y, ys, r0, r1);
}

/* the table slots (activation rows are n/256 Q8_K blocks) */
static void kq_matvec_q2_K(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    kq_matvec(KQ2, w, rb, n, act, y, r0, r1);
}
static void kq_matvec_q3_K(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    kq_matvec(KQ3, w, rb, n, act, y, r0, r1);
}
static void kq_matvec_q4_K(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    kq_matvec(KQ4, w, rb, n, act, y, r0, r1);
}
static void kq_matvec_q5_K(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    kq_matvec(KQ5, w, rb, n, act, y, r0, r1);
}
static void kq_matvec_q6_K(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1) {
    kq_matvec(KQ6, w, rb, n, act, y, r0, r1);
}
static void kq_matvec_iq4_xs(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0,
                             int64_t r1) {
    kq_matvec(KIQ4XS, w, rb, n, act, y, r0, r1);
}
static void kq_matmul_iq4_xs(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                             int64_t ys, int64_t r0, int64_t r1) {
    matmul_blocked(kq_pass_iq4_xs, es_row_bytes(ES_TYPE_Q8_K, n), w, rb, n, act, as, nt, y, ys, r0, r1);
}
static void kq_matmul_q2_K(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                           int64_t ys, int64_t r0, int64_t r1) {
    matmul_blocked(kq_pass_q2_K, es_row_bytes(ES_TYPE_Q8_K, n), w, rb, n, act, as, nt, y, ys, r0, r1);
}
static void kq_matmul_q3_K(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                           int64_t ys, int64_t r0, int64_t r1) {
    matmul_blocked(kq_pass_q3_K, es_row_bytes(ES_TYPE_Q8_K, n), w, rb, n, act, as, nt, y, ys, r0, r1);
}
static void kq_matmul_q4_K(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                           int64_t ys, int64_t r0, int64_t r1) {
    matmul_blocked(kq_pass_q4_K, es_row_bytes(ES_TYPE_Q8_K, n), w, rb, n, act, as, nt, y, ys, r0, r1);
}
static void kq_matmul_q5_K(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                           int64_t ys, int64_t r0, int64_t r1) {
    matmul_blocked(kq_pass_q5_K, es_row_bytes(ES_TYPE_Q8_K, n), w, rb, n, act, as, nt, y, ys, r0, r1);
}
static void kq_matmul_q6_K(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                           int64_t ys, int64_t r0, int64_t r1) {
    matmul_blocked(kq_pass_q6_K, es_row_bytes(ES_TYPE_Q8_K, n), w, rb, n, act, as, nt, y, ys, r0, r1);
}

/* the codebook formats, TQ1_0 and TQ2_0 (x86_iquants.h): matvec and prefill slots */
#define IQ_X86_SLOTS(name, F)                                                                                     \
    static void kq_pass_##name(int T, const void *w, size_t rb, int64_t n, const void *act, size_t as, float *y,  \
                               int64_t ys, int64_t r0, int64_t r1) {                                              \
        kq_pass(F, T, w, rb, n, act, as, y, ys, r0, r1);                                                          \
    }                                                                                                             \
    static void kq_matvec_##name(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0,      \
                                 int64_t r1) {                                                                    \
        kq_matvec(F, w, rb, n, act, y, r0, r1);                                                                   \
    }                                                                                                             \
    static void kq_matmul_##name(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt,     \
                                 float *y, int64_t ys, int64_t r0, int64_t r1) {                                  \
        matmul_blocked(kq_pass_##name, es_row_bytes(ES_TYPE_Q8_K, n), w, rb, n, act, as, nt, y, ys, r0, r1);     \
    }
IQ_X86_SLOTS(iq2_xxs, KIQ2XXS)
IQ_X86_SLOTS(iq2_xs, KIQ2XS)
IQ_X86_SLOTS(iq2_s, KIQ2S)
IQ_X86_SLOTS(iq3_xxs, KIQ3XXS)
IQ_X86_SLOTS(iq3_s, KIQ3S)
IQ_X86_SLOTS(iq1_s, KIQ1S)
IQ_X86_SLOTS(iq1_m, KIQ1M)
IQ_X86_SLOTS(tq2_0, KTQ2)
IQ_X86_SLOTS(tq1_0, KTQ1)
#undef IQ_X86_SLOTS

/* table entries for them, the same in the avx2 and the avx512 (VNNI) table */
#define IQ_X86_ENTRIES(slot, F)                                                                                   \
    [ES_TYPE_IQ2_XXS] = F(slot, iq2_xxs), [ES_TYPE_IQ2_XS] = F(slot, iq2_xs), [ES_TYPE_IQ2_S] = F(slot, iq2_s),     \
    [ES_TYPE_IQ3_XXS] = F(slot, iq3_xxs), [ES_TYPE_IQ3_S] = F(slot, iq3_s), [ES_TYPE_IQ1_S] = F(slot, iq1_s),       \
    [ES_TYPE_IQ1_M] = F(slot, iq1_m), [ES_TYPE_TQ2_0] = F(slot, tq2_0),                                    \
    [ES_TYPE_TQ1_0] = F(slot, tq1_0)
#define IQ_X86_FN(slot, name) kq_##slot##_##name
#define IQ_X86_ACT(slot, name) ES_TYPE_Q8_K
#define IQ_X86_MATVEC IQ_X86_ENTRIES(matvec, IQ_X86_FN)
#define IQ_X86_MATMUL IQ_X86_ENTRIES(matmul, IQ_X86_FN)
#define IQ_X86_ACT_TYPES IQ_X86_ENTRIES(act, IQ_X86_ACT)

#endif
