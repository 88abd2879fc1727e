/* x86_legacy.h — the products of the 32-weight formats llama.cpp's mixes
 * fall back to (Q4_1, Q5_0, Q5_1, IQ4_NL) against activations quantised to
 * Q8_0, on 256-bit integer registers.  Written once and compiled twice, as
 * x86_kquants.h: in x86_avx2.c (VPMADDUBSW then VPMADDWD) and in
 * x86_avx512.c with AVX512_VNNI (VPDPBUSD, the two fused); the tables take
 * the slots at the end of this file.  Include only from those two.
 *
 * Per block of 32, the weights become 32 bytes q in weight order (nib32,
 * plus Q5's fifth bit), and the block's dot with the activation's quants a
 * is an exact int32 split over 8 lanes:
 *   Q4_1, Q5_1   Σ q·a                 (q unsigned, <= 31)
 *   Q5_0         Σ q·a - 16·Σ a        (the offset from the activation alone,
 *                                       once per activation block)
 *   IQ4_NL       Σ |v|·(a signed as v)  (v = the table's value, |v| <= 127)
 * then y += (d_w·d_a)·sum, and for Q4_1/Q5_1 also (m·d_a)·Σ a, with Σ a
 * kept in 8 lanes (Σ over the lanes is what counts).  No int16 pair can
 * saturate: 2·31·127, 2·16·127 and 2·127·127 are below 32767.  Σ a is the
 * same integer Q8_1's s would hold (ggml's Q4_1/Q5_1 dot uses Q8_1), so the
 * result is ggml's up to fp32 summation order.
 *
 * Tiles: R rows (r, r + step, ..) by T tokens, every weight block unpacked
 * once for the T tokens and every activation block prepared once for the R
 * rows.  matvec: 4 rows from the quarters of the range (the streams
 * matvec_prefetch_streams describes), the last rows one at a time; matmul
 * (Q5_0, IQ4_NL; see the slots at the end): 2-row tiles of up to 4 tokens
 * inside matmul_blocked's blocks. */
#ifndef ES_X86_LEGACY_H
#define ES_X86_LEGACY_H

#include <immintrin.h>
#include <string.h>

#include "kernels.h"
#include "x86_avx2_common.h"
#include "x86_kquants.h" /* KPF */

enum lfmt { LQ4_1, LQ5_0, LQ5_1, LIQ4NL };

#define LG_AI __attribute__((always_inline))

static inline size_t lg_block_bytes(enum lfmt f) {
    switch (f) {
    case LQ4_1: return sizeof(block_q4_1);
    case LQ5_0: return sizeof(block_q5_0);
    case LQ5_1: return sizeof(block_q5_1);
    default: return sizeof(block_iq4_nl);
    }
}
static inline int lg_affine(enum lfmt f) { return f == LQ4_1 || f == LQ5_1; }

/* Q5's fifth bits: byte j = 16 where bit j of the little-endian uint32 qh
 * is set.  Byte j takes qh byte j/8 (a shuffle), keeps bit j%8 (all other
 * bits set by the OR), and is compared with all ones. */
static inline LG_AI __m256i lg_bit5(const uint8_t *qh) {
    uint32_t b;
    memcpy(&b, qh, 4);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)b), _mm256_setr_epi64x(0, 0x0101010101010101ll,
                                                                                 0x0202020202020202ll,
                                                                                 0x0303030303030303ll));
    v = _mm256_or_si256(v, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfell));
    return _mm256_and_si256(_mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1)), _mm256_set1_epi8(0x10));
}

/* the block's 32 weights as bytes (IQ4_NL: the signed table values) */
static inline LG_AI __m256i lg_weights(enum lfmt f, const char *blk) {
    switch (f) {
    case LQ4_1: return nib32(((const block_q4_1 *)blk)->qs);
    case LQ5_0: return _mm256_or_si256(nib32(((const block_q5_0 *)blk)->qs), lg_bit5(((const block_q5_0 *)blk)->qh));
    case LQ5_1: return _mm256_or_si256(nib32(((const block_q5_1 *)blk)->qs), lg_bit5(((const block_q5_1 *)blk)->qh));
    default: return iq4_lookup(nib32(((const block_iq4_nl *)blk)->qs));
    }
}

/* Σ u·a (u unsigned, a signed bytes) in 8 int32 lanes, added to `start` */
static inline LG_AI __m256i lg_dpbusd(__m256i start, __m256i u, __m256i a) {
#ifdef __AVX512VNNI__
    return _mm256_dpbusd_epi32(start, u, a);
#else
    return _mm256_add_epi32(start, _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), _mm256_set1_epi16(1)));
#endif
}

/* What an activation block a contributes to every row: for Q5_0 the start
 * -16·Σa (in int32 lanes; AVX2: 16·a as int16 pairs, subtracted before the
 * widening), for Q4_1/Q5_1 Σa in 8 float lanes. */
typedef struct lact {
    __m256i a, off;
    __m256 da, sum;
} lact;

static inline LG_AI lact lg_act(enum lfmt f, const block_q8_0 *x) {
    lact p;
    p.a = _mm256_loadu_si256((const __m256i *)x->qs);
    p.da = _mm256_set1_ps(_cvtsh_ss(x->d));
    p.off = _mm256_setzero_si256();
    p.sum = _mm256_setzero_ps();
    if (f == LQ5_0) {
#ifdef __AVX512VNNI__
        p.off = _mm256_sub_epi32(p.off, _mm256_dpbusd_epi32(p.off, _mm256_set1_epi8(16), p.a));
#else
        p.off = _mm256_maddubs_epi16(_mm256_set1_epi8(16), p.a);
#endif
    }
    if (lg_affine(f))
        p.sum = _mm256_cvtepi32_ps(lg_dpbusd(_mm256_setzero_si256(), _mm256_set1_epi8(1), p.a));
    return p;
}

/* the block's integer dot, as the table at the top of the file */
static inline LG_AI __m256i lg_dot(enum lfmt f, __m256i q, const lact *p) {
    if (f == LIQ4NL) return lg_dpbusd(_mm256_setzero_si256(), _mm256_sign_epi8(q, q), _mm256_sign_epi8(p->a, q));
#ifndef __AVX512VNNI__
    if (f == LQ5_0)
        return _mm256_madd_epi16(_mm256_sub_epi16(_mm256_maddubs_epi16(q, p->a), p->off), _mm256_set1_epi16(1));
#endif
    return lg_dpbusd(f == LQ5_0 ? p->off : _mm256_setzero_si256(), q, p->a);
}

/* The scale factors of R = 4 rows' blocks (4 rows `rs` bytes apart) times
 * the activation's d_a, for a one-token matvec: d·d_a in f[2k], and m·d_a
 * in f[2k + 1] where the format has a min.  The fp16 fields are gathered
 * into one register and converted at once (d and m are adjacent). */
static inline LG_AI void lg_scales4(enum lfmt f, const char *blk, size_t rs, __m256 da, float *out) {
    if (lg_affine(f)) {
        uint32_t dm[4];
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) memcpy(&dm[k], blk + (size_t)k * rs, 4);
        __m128i h = _mm_setr_epi32((int)dm[0], (int)dm[1], (int)dm[2], (int)dm[3]);
        _mm256_store_ps(out, _mm256_mul_ps(_mm256_cvtph_ps(h), da));
    } else {
        __m128i h = _mm_cvtsi32_si128(*(const uint16_t *)blk);
        h = _mm_insert_epi16(h, *(const uint16_t *)(blk + rs), 2);
        h = _mm_insert_epi16(h, *(const uint16_t *)(blk + 2 * rs), 4);
        h = _mm_insert_epi16(h, *(const uint16_t *)(blk + 3 * rs), 6);
        _mm256_store_ps(out, _mm256_mul_ps(_mm256_cvtph_ps(h), da));
    }
}

/* R rows r, r + step, .. by T tokens (activation rows `as` bytes apart)
 * into y[t*ys + row].  pf: 4 = the four quarter streams of a matvec (R = 4,
 * T = 1, step = the quarter), 1 = one stream, KPF ahead, 0 = none
 * (prefill). */
static inline LG_AI void lg_tile(enum lfmt f, int R, int T, int pf, const void *w, size_t rb, int64_t nb,
                                 const void *act, size_t as, float *y, int64_t ys, int64_t r, int64_t step) {
    const size_t bs = lg_block_bytes(f), rs = (size_t)step * rb;
    const char *row = (const char *)w + (size_t)r * rb;
    __m256 acc[4][4];
    float sc[8] __attribute__((aligned(32)));
#pragma GCC unroll 4
    for (int k = 0; k < R; k++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) acc[k][t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        if (pf == 4) {
            matvec_prefetch_streams(row, rs, (size_t)i * bs, bs);
        } else if (pf == 1 && KPF) {
            _mm_prefetch(row + (size_t)i * bs + KPF, _MM_HINT_T0);
        }
        lact p[4];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) p[t] = lg_act(f, (const block_q8_0 *)((const char *)act + (size_t)t * as) + i);
        if (pf == 4) lg_scales4(f, row + (size_t)i * bs, rs, p[0].da, sc);
#pragma GCC unroll 4
        for (int k = 0; k < R; k++) {
            const char *blk = row + (size_t)k * rs + (size_t)i * bs;
            __m256i q = lg_weights(f, blk);
            const es_fp16 *dm = (const es_fp16 *)blk; /* d, then m where the format has one */
            __m256 dw = pf == 4 ? _mm256_setzero_ps() : _mm256_set1_ps(_cvtsh_ss(dm[0]));
            __m256 mw = pf == 4 || !lg_affine(f) ? dw : _mm256_set1_ps(_cvtsh_ss(dm[1]));
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                __m256 s = _mm256_cvtepi32_ps(lg_dot(f, q, &p[t]));
                __m256 dd = pf == 4 ? _mm256_broadcast_ss(&sc[2 * k]) : _mm256_mul_ps(dw, p[t].da);
                acc[k][t] = _mm256_fmadd_ps(s, dd, acc[k][t]);
                if (lg_affine(f)) {
                    __m256 md = pf == 4 ? _mm256_broadcast_ss(&sc[2 * k + 1]) : _mm256_mul_ps(mw, p[t].da);
                    acc[k][t] = _mm256_fmadd_ps(p[t].sum, md, acc[k][t]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int k = 0; k < R; k++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) y[t * ys + r + k * step] = hsum8(acc[k][t]);
}

static inline LG_AI void lg_matvec(enum lfmt f, const void *w, size_t rb, int64_t n, const void *x, float *y,
                                   int64_t r0, int64_t r1) {
    int64_t q = (r1 - r0) / 4;
    for (int64_t j = 0; j < q; j++) lg_tile(f, 4, 1, 4, w, rb, n / 32, x, 0, y, 0, r0 + j, q);
    for (int64_t r = r0 + 4 * q; r < r1; r++) lg_tile(f, 1, 1, 1, w, rb, n / 32, x, 0, y, 0, r, 1);
}

/* a prefill pass (see matmul_blocked): T tokens over rows [r0, r1) in
 * 2-row tiles */
static inline LG_AI void lg_rows(enum lfmt f, int T, const void *w, size_t rb, int64_t n, const void *act, size_t as,
                                 float *y, int64_t ys, int64_t r0, int64_t r1) {
    int64_t r = r0;
    for (; r + 2 <= r1; r += 2) lg_tile(f, 2, T, 0, w, rb, n / 32, act, as, y, ys, r, 1);
    if (r < r1) lg_tile(f, 1, T, 0, w, rb, n / 32, act, as, y, ys, r, 1);
}

static inline LG_AI void lg_pass(enum lfmt f, int T, const void *w, size_t rb, int64_t n, const void *act, size_t as,
                                 float *y, int64_t ys, int64_t r0, int64_t r1) {
    switch (T) {
    case 1: lg_rows(f, 1, w, rb, n, act, as, y, ys, r0, r1); break;
    case 2: lg_rows(f, 2, w, rb, n, act, as, y, ys, r0, r1); break;
    case 3: lg_rows(f, 3, w, rb, n, act, as, y, ys, r0, r1); break;
    default: lg_rows(f, 4, w, rb, n, act, as, y, ys, r0, r1); break;
    }
}

/* the table slots (activation rows are n/32 Q8_0 blocks).  Q4_1 and Q5_1
 * have no matmul: with their per-row scale and min products, the 2-row
 * tiles measured 0.8-1.0x of one matvec per token (bench_kernels, 16
 * tokens), so their prefill goes through the matvec per token (dispatch.c's
 * fallback) until a rows-in-lanes product exists for them.  Q5_0, IQ4_NL:
 * 1.1-1.4x. */
#define LG_MATVEC(name, F)                                                                                      \
    static void lg_matvec_##name(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0,  \
                                 int64_t r1) {                                                                \
        lg_matvec(F, w, rb, n, act, y, r0, r1);                                                               \
    }
#define LG_MATMUL(name, F)                                                                                      \
    static void lg_pass_##name(int T, const void *w, size_t rb, int64_t n, const void *act, size_t as, float *y, \
                               int64_t ys, int64_t r0, int64_t r1) {                                          \
        lg_pass(F, T, w, rb, n, act, as, y, ys, r0, r1);                                                      \
    }                                                                                                         \
    static void lg_matmul_##name(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, \
                                 float *y, int64_t ys, int64_t r0, int64_t r1) {                              \
        matmul_blocked(lg_pass_##name, (size_t)n / 32 * sizeof(block_q8_0), w, rb, n, act, as, nt, y, ys, r0, \
                       r1);                                                                                   \
    }
LG_MATVEC(q4_1, LQ4_1)
LG_MATVEC(q5_0, LQ5_0)
LG_MATVEC(q5_1, LQ5_1)
LG_MATVEC(iq4_nl, LIQ4NL)
LG_MATMUL(q5_0, LQ5_0)
LG_MATMUL(iq4_nl, LIQ4NL)
#undef LG_MATVEC
#undef LG_MATMUL

#endif
