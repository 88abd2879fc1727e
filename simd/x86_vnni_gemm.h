/* x86_vnni_gemm.h — the prefill product (matmul slot) of Q4_0 and Q8_0
 * weights against Q8_0 activations with AVX-512 VNNI.  Included only by
 * x86_avx512.c (compiled with AVX-512 F/BW/VL/DQ + VNNI).
 *
 * Layout of the work: the 16 int32 lanes of a register are 16 output ROWS.
 * For one 32-element block, the 16 rows' weights are transposed on the fly
 * into 8 registers W[g] (lane r = the 4 weights of row r that pair with
 * the activation's bytes 4g..4g+3), so one token's block is 8 VPDPBUSD
 * with the activation's 4-byte group broadcast from memory, then ONE
 * int->float conversion and ONE multiply-add for 16 rows:
 *
 *     acc(16 x int32) = corr[t][i]                  (-8·Σa or -128·Σa)
 *     acc += W[g] · bcast(a[t][i].qs[4g..4g+3])     g = 0..7
 *     y[t][r..r+15] += float(acc) * (dw[r..r+15] * da[t][i])
 *
 * against 4 instructions per 64 products in tile_vnni (one conversion and
 * scaling per VPDPBUSD).  The transpose (16 row loads, inserts and dword
 * unpacks, a gather for the 16 scales) is paid once per block and tile and
 * shared by up to GEMM_TOK tokens held in registers.  Per token and block,
 * the activation's correction and fp32 scale are computed once per call
 * (not once per tile).  The weights stay as they are in the file.
 *
 * Each output lane is computed by the same instructions in the same order
 * whichever tile, token group or row range it falls in, so results do not
 * depend on how rows are split between threads.  A ragged last tile repeats
 * its last row in the missing lanes and stores under a mask. */
#ifndef ES_X86_VNNI_GEMM_H
#define ES_X86_VNNI_GEMM_H

#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

#include "quant.h"

#define GEMM_ROWS 16
#ifndef GEMM_TOK
#define GEMM_TOK 8 /* tokens whose accumulators stay in registers */
#endif
#define GEMM_AUX 4096 /* (token, block) entries of precomputed activation data on the stack */

/* per token and activation block: the start value of the integer dot
 * product (the weight offset times the block's sum) and the fp32 scale */
typedef struct gemm_aux {
    int32_t corr;
    float d;
} gemm_aux;

typedef int32_t gemm_u32 __attribute__((aligned(1), may_alias));

/* 16 bytes at each of 16 row pointers (+off), transposed: T[g] lane r holds
 * bytes 4g..4g+3 of row r's 16. */
static inline __attribute__((always_inline)) void gemm_transpose16(const char *const row[GEMM_ROWS], size_t off,
                                                                   __m512i T[4]) {
    __m512i Q[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        /* 128-bit lane L of Q[j] = row 4L + j */
        __m512i q = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(row[j] + off)));
        q = _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)(row[j + 4] + off)), 1);
        q = _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)(row[j + 8] + off)), 2);
        Q[j] = _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)(row[j + 12] + off)), 3);
    }
    /* 4x4 dword transpose within each 128-bit lane */
    __m512i t0 = _mm512_unpacklo_epi32(Q[0], Q[1]), t1 = _mm512_unpackhi_epi32(Q[0], Q[1]);
    __m512i t2 = _mm512_unpacklo_epi32(Q[2], Q[3]), t3 = _mm512_unpackhi_epi32(Q[2], Q[3]);
    T[0] = _mm512_unpacklo_epi64(t0, t2);
    T[1] = _mm512_unpackhi_epi64(t0, t2);
    T[2] = _mm512_unpacklo_epi64(t1, t3);
    T[3] = _mm512_unpackhi_epi64(t1, t3);
}

/* Block i of 16 rows as 8 unsigned-byte registers (W[g] pairs with the
 * activation's dword g) and the rows' fp32 scales.  Q4_0: dword g < 4 is
 * the low nibbles of qs[4g..4g+3] (weights 4g..), g >= 4 their high
 * nibbles (weights 16 + 4(g-4)..), as in the activation.  Q8_0: w ^ 0x80
 * = w + 128.  `sidx` holds each row's byte offset from row[0]. */
static inline __attribute__((always_inline)) void gemm_weights(int is_q4, const char *const row[GEMM_ROWS],
                                                               __m512i sidx, int64_t i, __m512i W[8], __m512 *dw) {
    const size_t bs = is_q4 ? sizeof(block_q4_0) : sizeof(block_q8_0);
    const size_t off = (size_t)i * bs;
    __m512i T[4];
    gemm_transpose16(row, off + 2, T);
    if (is_q4) {
        const __m512i lo4 = _mm512_set1_epi8(0x0f);
#pragma GCC unroll 4
        for (int g = 0; g < 4; g++) {
            W[g] = _mm512_and_si512(T[g], lo4);
            W[g + 4] = _mm512_and_si512(_mm512_srli_epi16(T[g], 4), lo4);
        }
    } else {
        const __m512i bias = _mm512_set1_epi8((char)0x80);
#pragma GCC unroll 4
        for (int g = 0; g < 4; g++) W[g] = _mm512_xor_si512(T[g], bias);
        gemm_transpose16(row, off + 18, T);
#pragma GCC unroll 4
        for (int g = 0; g < 4; g++) W[g + 4] = _mm512_xor_si512(T[g], bias);
    }
    /* the 16 fp16 scales (4 bytes read at each: the scale and 2 bytes of qs) */
    __m512i s = _mm512_i32gather_epi32(sidx, row[0] + off, 1);
    *dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(s));
}

/* The weights of a tile once transposed, for tokens beyond the first
 * group: per block the 8 registers of gemm_weights and the scales (576
 * bytes a block, so GEMM_PACK blocks are 54 KiB of stack, in L1/L2). */
#define GEMM_PACK 96
typedef struct gemm_packed {
    __m512i w[8];
    __m512 d;
} gemm_packed;

static inline void gemm_pack(int is_q4, const char *const row[GEMM_ROWS], __m512i sidx, int64_t nb,
                             gemm_packed *pk) {
    for (int64_t i = 0; i < nb; i++) gemm_weights(is_q4, row, sidx, i, pk[i].w, &pk[i].d);
}

/* 16 rows x T tokens (T <= GEMM_TOK) over all nb blocks; the weights
 * transposed here or (pk not NULL) read from gemm_pack's buffer */
static inline __attribute__((always_inline)) void gemm_tile(int is_q4, int T, const char *const row[GEMM_ROWS],
                                                            __m512i sidx, const gemm_packed *pk, int64_t nb,
                                                            const char *act, size_t as, const gemm_aux *aux,
                                                            float *y, int64_t ys, __mmask16 keep) {
    __m512 acc[GEMM_TOK];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        __m512i W[8];
        __m512 dw;
        if (pk) {
#pragma GCC unroll 8
            for (int g = 0; g < 8; g++) W[g] = _mm512_load_si512(&pk[i].w[g]);
            dw = _mm512_load_ps(&pk[i].d);
        } else {
            gemm_weights(is_q4, row, sidx, i, W, &dw);
        }
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            const block_q8_0 *a = (const block_q8_0 *)(act + (size_t)t * as) + i;
            const gemm_aux *x = aux + (size_t)t * (size_t)nb + i;
            __m512i s = _mm512_set1_epi32(x->corr);
#pragma GCC unroll 8
            for (int g = 0; g < 8; g++)
                s = _mm512_dpbusd_epi32(s, W[g], _mm512_set1_epi32(((const gemm_u32 *)a->qs)[g]));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_set1_ps(x->d)), acc[t]);
        }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) _mm512_mask_storeu_ps(y + (size_t)t * (size_t)ys, keep, acc[t]);
}

/* corr and d of tokens [0, nt) (rows `as` bytes apart), nb blocks each */
static inline void gemm_prepare_aux(int is_q4, const char *act, size_t as, int64_t nt, int64_t nb, gemm_aux *aux) {
    const __m256i bias = _mm256_set1_epi8((char)0x80);
    const int32_t off = is_q4 ? 8 : 128;
    for (int64_t t = 0; t < nt; t++) {
        const block_q8_0 *a = (const block_q8_0 *)(act + (size_t)t * as);
        for (int64_t i = 0; i < nb; i++) {
            /* Σ of 32 signed bytes: Σ(a + 128) by SAD against zero, less 32·128 */
            __m256i sad = _mm256_sad_epu8(_mm256_xor_si256(_mm256_loadu_si256((const __m256i *)a[i].qs), bias),
                                          _mm256_setzero_si256());
            __m128i h = _mm_add_epi64(_mm256_castsi256_si128(sad), _mm256_extracti128_si256(sad, 1));
            int32_t sum = (int32_t)(_mm_cvtsi128_si64(h) + _mm_extract_epi64(h, 1)) - 32 * 128;
            aux[t * nb + i] = (gemm_aux){-off * sum, _cvtsh_ss(a[i].d)};
        }
    }
}

/* T = 1..GEMM_TOK, as a constant inside */
static inline __attribute__((always_inline)) void gemm_tokens(int is_q4, int T, const char *const row[GEMM_ROWS],
                                                              __m512i sidx, const gemm_packed *pk, int64_t nb,
                                                              const char *act, size_t as, const gemm_aux *aux,
                                                              float *y, int64_t ys, __mmask16 keep) {
    switch (T) {
#define GEMM_CASE(k) \
    case k: gemm_tile(is_q4, k < GEMM_TOK ? k : GEMM_TOK, row, sidx, pk, nb, act, as, aux, y, ys, keep); break;
        GEMM_CASE(1) GEMM_CASE(2) GEMM_CASE(3) GEMM_CASE(4) GEMM_CASE(5) GEMM_CASE(6) GEMM_CASE(7)
        GEMM_CASE(8) GEMM_CASE(9) GEMM_CASE(10) GEMM_CASE(11) GEMM_CASE(12) GEMM_CASE(13) GEMM_CASE(14)
        GEMM_CASE(15)
        default: gemm_tile(is_q4, GEMM_TOK, row, sidx, pk, nb, act, as, aux, y, ys, keep); break;
#undef GEMM_CASE
    }
}

/* all tokens over one tile, in groups; with more than one group the
 * weights are transposed once into pk (when the row fits it) and every
 * group reads them from there */
static inline __attribute__((always_inline)) void gemm_groups(int is_q4, const char *const row[GEMM_ROWS],
                                                              __m512i sidx, int64_t nb, const char *act, size_t as,
                                                              int64_t nt, const gemm_aux *aux, float *y, int64_t ys,
                                                              __mmask16 keep, gemm_packed *pk) {
    /* groups of equal size (9 tokens: 5 + 4, not 8 + 1) */
    const int64_t groups = (nt + GEMM_TOK - 1) / GEMM_TOK;
    const int64_t gsize = (nt + groups - 1) / groups;
    const int pack = groups > 1 && nb <= GEMM_PACK;
    if (pack) gemm_pack(is_q4, row, sidx, nb, pk);
    for (int64_t t = 0; t < nt; t += gsize) {
        const int T = nt - t < gsize ? (int)(nt - t) : (int)gsize;
        if (pack)
            gemm_tokens(is_q4, T, row, sidx, pk, nb, act + (size_t)t * as, as, aux + t * nb, y + (size_t)t * (size_t)ys,
                        ys, keep);
        else
            gemm_tokens(is_q4, T, row, sidx, NULL, nb, act + (size_t)t * as, as, aux + t * nb,
                        y + (size_t)t * (size_t)ys, ys, keep);
    }
}

/* The matmul slot: tokens in chunks whose activations (and their gemm_aux)
 * stay in L2; within a chunk, tiles of 16 rows whose weights stay in L1
 * while every group of GEMM_TOK tokens passes over them.  Returns 0 when
 * a row is too long for the aux buffer (n > 131072: the caller falls back). */
static inline __attribute__((always_inline)) int gemm_q8act(int is_q4, const void *w, size_t rb, int64_t n,
                                                            const void *act, size_t as, int64_t nt, float *y,
                                                            int64_t ys, int64_t r0, int64_t r1) {
    const int64_t nb = n / 32;
    if (nb > GEMM_AUX || nb < 1) return nb < 1;
    gemm_aux aux[GEMM_AUX];
    gemm_packed pk[GEMM_PACK];
    int64_t tc = token_block(nt, (size_t)nb * sizeof(block_q8_0));
    if (tc > GEMM_AUX / nb) tc = GEMM_AUX / nb;
    for (int64_t t0 = 0; t0 < nt; t0 += tc) {
        const int64_t t1 = t0 + tc < nt ? t0 + tc : nt;
        const char *a0 = (const char *)act + (size_t)t0 * as;
        gemm_prepare_aux(is_q4, a0, as, t1 - t0, nb, aux);
        for (int64_t r = r0; r < r1; r += GEMM_ROWS) {
            const int live = r1 - r < GEMM_ROWS ? (int)(r1 - r) : GEMM_ROWS;
            const char *row[GEMM_ROWS];
            int32_t offs[GEMM_ROWS];
            for (int k = 0; k < GEMM_ROWS; k++) {
                const int kk = k < live ? k : live - 1;
                row[k] = (const char *)w + (size_t)(r + kk) * rb;
                offs[k] = (int32_t)((size_t)kk * rb);
            }
            const __m512i sidx = _mm512_loadu_si512(offs);
            const __mmask16 keep = (__mmask16)((1u << live) - 1);
            gemm_groups(is_q4, row, sidx, nb, a0, as, t1 - t0, aux, y + (size_t)t0 * (size_t)ys + r, ys, keep, pk);
        }
    }
    return 1;
}

#endif
