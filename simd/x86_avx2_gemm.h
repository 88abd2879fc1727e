/* x86_avx2_gemm.h — the prefill product (matmul slot) of Q4_0 and Q8_0
 * weights against Q8_0 activations with AVX2 (no VNNI).  Included only by
 * x86_avx2.c.
 *
 * As x86_vnni_gemm.h, the int32 lanes are output ROWS, here 8: a tile's
 * block of 8 rows is transposed once into 8 registers' worth (lane r = the
 * 4 weights of row r that pair with the activation's bytes 4g..4g+3), and
 * each token's block is then 8 multiplies against the activation's 4-byte
 * group broadcast, followed by ONE conversion and ONE multiply-add for 8
 * rows (the 4x4 tiles of x86_avx2.c convert and scale once per 32
 * products).  Without VPDPBUSD the products are VPMADDUBSW (unsigned x
 * signed bytes, pairs summed into int16) and VPMADDWD by ones:
 *
 *   Q4_0  q in 0..15 against a: a pair is at most 2·15·128 = 3840, so the
 *         8 groups add up in int16 (<= 30720) and one VPMADDWD ends the
 *         block; the start value -8·Σa (gemm_aux) removes the offset.
 *   Q8_0  |w| against a·sign(w) (pairs up to 2·128·127 = 32512): one
 *         VPMADDWD per group, summed in int32; no correction.
 *
 * The tile's weights are always packed first (16 registers would not hold
 * both the weights and the accumulators); the loops around the tiles are
 * x86_gemm_common.h's. */
#ifndef ES_X86_AVX2_GEMM_H
#define ES_X86_AVX2_GEMM_H

#include <immintrin.h>
#include <stdint.h>

#include "quant.h"
#include "x86_gemm_common.h"

#define GEMM2_ROWS 8
#define GEMM2_TOK 8

/* a tile's block transposed: Q4_0 uses w (q, unsigned); Q8_0 w (signed,
 * for the sign of a) and u = |w| */
typedef struct gemm2_q4 {
    __m256i w[8];
    __m256 d;
} gemm2_q4;
typedef struct gemm2_q8 {
    __m256i w[8], u[8];
    __m256 d;
} gemm2_q8;

/* 16 bytes at each of 8 rows (+off), transposed: T[g] lane r holds bytes
 * 4g..4g+3 of row r's 16 */
static inline __attribute__((always_inline)) void gemm2_transpose8(const gemm_rows *rw, size_t off, __m256i T[4]) {
    __m256i Q[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) /* 128-bit lane L of Q[j] = row 4L + j */
        Q[j] = _mm256_loadu2_m128i((const __m128i *)(rw->row[j + 4] + off), (const __m128i *)(rw->row[j] + off));
    __m256i t0 = _mm256_unpacklo_epi32(Q[0], Q[1]), t1 = _mm256_unpackhi_epi32(Q[0], Q[1]);
    __m256i t2 = _mm256_unpacklo_epi32(Q[2], Q[3]), t3 = _mm256_unpackhi_epi32(Q[2], Q[3]);
    T[0] = _mm256_unpacklo_epi64(t0, t2);
    T[1] = _mm256_unpackhi_epi64(t0, t2);
    T[2] = _mm256_unpacklo_epi64(t1, t3);
    T[3] = _mm256_unpackhi_epi64(t1, t3);
}

/* the 8 rows' fp16 scales of the block at off */
static inline __attribute__((always_inline)) __m256 gemm2_scales(const gemm_rows *rw, size_t off) {
    __m128i h = _mm_setr_epi16(*(const short *)(rw->row[0] + off), *(const short *)(rw->row[1] + off),
                               *(const short *)(rw->row[2] + off), *(const short *)(rw->row[3] + off),
                               *(const short *)(rw->row[4] + off), *(const short *)(rw->row[5] + off),
                               *(const short *)(rw->row[6] + off), *(const short *)(rw->row[7] + off));
    return _mm256_cvtph_ps(h);
}

static inline void gemm2_pack_q4(const gemm_rows *rw, int64_t nb, void *pk) {
    gemm2_q4 *p = pk;
    const __m256i lo4 = _mm256_set1_epi8(0x0f);
    for (int64_t i = 0; i < nb; i++) {
        const size_t off = (size_t)i * sizeof(block_q4_0);
        __m256i T[4];
        gemm2_transpose8(rw, off + 2, T);
        /* dword g < 4: low nibbles (weights 4g..); g >= 4: high (16 + 4(g-4)..) */
        for (int g = 0; g < 4; g++) {
            _mm256_store_si256(&p[i].w[g], _mm256_and_si256(T[g], lo4));
            _mm256_store_si256(&p[i].w[g + 4], _mm256_and_si256(_mm256_srli_epi16(T[g], 4), lo4));
        }
        _mm256_store_ps((float *)&p[i].d, gemm2_scales(rw, off));
    }
}

static inline void gemm2_pack_q8(const gemm_rows *rw, int64_t nb, void *pk) {
    gemm2_q8 *p = pk;
    for (int64_t i = 0; i < nb; i++) {
        const size_t off = (size_t)i * sizeof(block_q8_0);
        __m256i T[4];
        for (int h = 0; h < 2; h++) {
            gemm2_transpose8(rw, off + 2 + 16 * (size_t)h, T);
            for (int g = 0; g < 4; g++) {
                _mm256_store_si256(&p[i].w[4 * h + g], T[g]);
                _mm256_store_si256(&p[i].u[4 * h + g], _mm256_abs_epi8(T[g]));
            }
        }
        _mm256_store_ps((float *)&p[i].d, gemm2_scales(rw, off));
    }
}

/* 8 rows x T tokens over nb packed blocks */
static inline __attribute__((always_inline)) void gemm2_tile(int is_q4, int T, const void *pk, int64_t nb,
                                                             const char *act, size_t as, const gemm_aux *aux,
                                                             float *y, int64_t ys, int live) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[GEMM2_TOK];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const gemm2_q4 *p4 = (const gemm2_q4 *)pk + i;
        const gemm2_q8 *p8 = (const gemm2_q8 *)pk + i;
        const __m256 dw = is_q4 ? p4->d : p8->d;
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const gemm_u32 *a = (const gemm_u32 *)((const block_q8_0 *)(act + (size_t)t * as) + i)->qs;
            const gemm_aux *x = aux + (size_t)t * (size_t)nb + i;
            __m256i s;
            if (is_q4) {
                __m256i s16 = _mm256_maddubs_epi16(p4->w[0], _mm256_set1_epi32(a[0]));
#pragma GCC unroll 8
                for (int g = 1; g < 8; g++)
                    s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(p4->w[g], _mm256_set1_epi32(a[g])));
                s = _mm256_add_epi32(_mm256_madd_epi16(s16, ones), _mm256_set1_epi32(x->corr));
            } else {
                s = _mm256_setzero_si256();
#pragma GCC unroll 8
                for (int g = 0; g < 8; g++) {
                    __m256i sa = _mm256_sign_epi8(_mm256_set1_epi32(a[g]), p8->w[g]);
                    s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(p8->u[g], sa), ones));
                }
            }
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, _mm256_set1_ps(x->d)), acc[t]);
        }
    }
    if (live == GEMM2_ROWS) {
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) _mm256_storeu_ps(y + (size_t)t * (size_t)ys, acc[t]);
    } else {
        const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(live), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) _mm256_maskstore_ps(y + (size_t)t * (size_t)ys, keep, acc[t]);
    }
}

static inline __attribute__((always_inline)) void gemm2_run(int is_q4, int T, const gemm_rows *rw, const void *pk,
                                                            int64_t nb, const char *act, size_t as,
                                                            const gemm_aux *aux, float *y, int64_t ys) {
    switch (T) {
#define GEMM2_CASE(k) \
    case k: gemm2_tile(is_q4, k, pk, nb, act, as, aux, y, ys, rw->live); break;
        GEMM2_CASE(1) GEMM2_CASE(2) GEMM2_CASE(3) GEMM2_CASE(4) GEMM2_CASE(5) GEMM2_CASE(6) GEMM2_CASE(7)
        default: GEMM2_CASE(GEMM2_TOK)
#undef GEMM2_CASE
    }
}
static void gemm2_pack(int is_q4, const gemm_rows *rw, int64_t nb, void *pk) {
    if (is_q4) gemm2_pack_q4(rw, nb, pk);
    else gemm2_pack_q8(rw, nb, pk);
}
static void gemm2_tokens(int is_q4, int T, const gemm_rows *rw, const void *pk, int64_t nb, const char *act,
                         size_t as, const gemm_aux *aux, float *y, int64_t ys) {
    if (is_q4) gemm2_run(1, T, rw, pk, nb, act, as, aux, y, ys);
    else gemm2_run(0, T, rw, pk, nb, act, as, aux, y, ys);
}

/* the matmul slot of Q4_0 (is_q4) or Q8_0; 0 when the caller must fall
 * back (x86_gemm_common.h) */
static inline int gemm_avx2(int is_q4, const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt,
                            float *y, int64_t ys, int64_t r0, int64_t r1) {
    return gemm_drive(is_q4, GEMM2_ROWS, GEMM2_TOK, 1, is_q4 ? sizeof(gemm2_q4) : sizeof(gemm2_q8), gemm2_pack,
                      gemm2_tokens, w, rb, n, act, as, nt, y, ys, r0, r1);
}

#endif
