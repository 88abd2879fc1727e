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
 * depend on how rows are split between threads (the loops around the
 * tiles: x86_gemm_common.h). */
#ifndef ES_X86_VNNI_GEMM_H
#define ES_X86_VNNI_GEMM_H

#include <immintrin.h>
#include <stdint.h>

#include "quant.h"
#include "x86_gemm_common.h"

#define GEMM_ROWS 16
/* tokens whose accumulators stay in registers: 12 accumulators + 8 weight
 * registers + scales and sums fit in 32 (bench_gemm: 12 beats 8 by ~10% at
 * T = 10..12, equal elsewhere; 16 is no better) */
#define GEMM_TOK 12

/* 16 bytes at each of 16 row pointers (+off), transposed: T[g] lane r holds
 * bytes 4g..4g+3 of row r's 16. */
static inline __attribute__((always_inline)) void gemm_transpose16(const char *const row[GEMM_ROWS], size_t off,
                                                                   __m512i T[4]) {
    __m512i Q[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        /* 128-bit lane L of Q[j] = row 4L + j (merging broadcasts: a load
         * and a blend each, where an insert would be a port-5 shuffle) */
        __m512i q = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(row[j] + off)));
        q = _mm512_mask_broadcast_i32x4(q, 0x00f0, _mm_loadu_si128((const __m128i *)(row[j + 4] + off)));
        q = _mm512_mask_broadcast_i32x4(q, 0x0f00, _mm_loadu_si128((const __m128i *)(row[j + 8] + off)));
        Q[j] = _mm512_mask_broadcast_i32x4(q, 0xf000, _mm_loadu_si128((const __m128i *)(row[j + 12] + off)));
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

/* A tile's block once transposed: the 8 registers of gemm_weights and the
 * scales (576 bytes) */
typedef struct gemm_packed {
    __m512i w[8];
    __m512 d;
} gemm_packed;

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

/* the tile's T tokens, T a constant inside (pk NULL or not) */
static inline __attribute__((always_inline)) void gemm_run_vnni(int is_q4, int T, const gemm_rows *rw,
                                                                const void *pk, int64_t nb, const char *act,
                                                                size_t as, const gemm_aux *aux, float *y,
                                                                int64_t ys) {
    const __m512i sidx = _mm512_loadu_si512(rw->offs);
    const __mmask16 keep = (__mmask16)((1u << rw->live) - 1);
    switch (T) {
#define GEMM_CASE(k)                                                                                      \
    case k:                                                                                              \
        if (pk) gemm_tile(is_q4, k, rw->row, sidx, pk, nb, act, as, aux, y, ys, keep);                  \
        else gemm_tile(is_q4, k, rw->row, sidx, NULL, nb, act, as, aux, y, ys, keep);                   \
        break;
        GEMM_CASE(1) GEMM_CASE(2) GEMM_CASE(3) GEMM_CASE(4) GEMM_CASE(5) GEMM_CASE(6) GEMM_CASE(7)
        GEMM_CASE(8) GEMM_CASE(9) GEMM_CASE(10) GEMM_CASE(11)
        default: GEMM_CASE(GEMM_TOK)
#undef GEMM_CASE
    }
}

static void gemm_pack_vnni(int is_q4, const gemm_rows *rw, int64_t nb, void *pk) {
    gemm_packed *p = pk;
    const __m512i sidx = _mm512_loadu_si512(rw->offs);
    for (int64_t i = 0; i < nb; i++) {
        if (is_q4) gemm_weights(1, rw->row, sidx, i, p[i].w, &p[i].d);
        else gemm_weights(0, rw->row, sidx, i, p[i].w, &p[i].d);
    }
}
static void gemm_tokens_vnni(int is_q4, int T, const gemm_rows *rw, const void *pk, int64_t nb, const char *act,
                             size_t as, const gemm_aux *aux, float *y, int64_t ys) {
    if (is_q4) gemm_run_vnni(1, T, rw, pk, nb, act, as, aux, y, ys);
    else gemm_run_vnni(0, T, rw, pk, nb, act, as, aux, y, ys);
}

/* the matmul slot of Q4_0 (is_q4) or Q8_0; 0 when the caller must fall
 * back (x86_gemm_common.h) */
static inline int gemm_vnni(int is_q4, const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt,
                            float *y, int64_t ys, int64_t r0, int64_t r1) {
    return gemm_drive(is_q4, GEMM_ROWS, GEMM_TOK, 0, sizeof(gemm_packed), gemm_pack_vnni, gemm_tokens_vnni, w, rb, n,
                      act, as, nt, y, ys, r0, r1);
}

#endif
