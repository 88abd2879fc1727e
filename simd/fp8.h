/* fp8.h — the FP8_B128 kernels (the layout is in quant.h: es_fp8_mat) of
 * every path: the generic reference (generic_fp8.c) and the AVX2, AVX-512
 * and NEON ones (x86_avx2_fp8.c, x86_avx512_fp8.c, arm_neon_fp8.c), which
 * the tables of kernels.h name in their FP8_B128 slots.  All take fp32
 * activations (act_type 0).  w points to an es_fp8_mat; row r is row r of
 * the description.  Each path's matmul gives every (row, token) exactly its
 * matvec's value for that token (the determinism rule).  The SIMD matvecs
 * are fused: they decode the e4m3 bytes in registers and never store the
 * weights as floats; on x86 the prefill goes through es_fp8_tiled below,
 * whose arithmetic the fused matvec repeats (x86_avx512_fp8.c). */
#ifndef ES_FP8_H
#define ES_FP8_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"
#include "quant.h"

/* Row r's bytes (rows of n) and its row of block scales. */
static inline const uint8_t *es_fp8_row(const es_fp8_mat *m, int64_t n, int64_t r) {
    return m->q + (size_t)r * (size_t)n;
}
static inline const float *es_fp8_row_scales(const es_fp8_mat *m, int64_t r) {
    return m->scale + (size_t)(r / ES_FP8_BLOCK) * (size_t)m->scale_cols;
}

/* The fp32 value of an e4m3 byte (NaN's pattern reads as +-480, as on
 * every path). */
float es_fp8_value(uint8_t b);
/* Row r of the described matrix (n weights), scales applied, into dst. */
void es_fp8_dequant(const es_fp8_mat *w, int64_t n, int64_t r, float *dst);

void es_fp8_matvec_generic(const void *w, size_t row_bytes, int64_t n, const void *act, float *y, int64_t r0,
                           int64_t r1);
void es_fp8_matvec_avx2(const void *w, size_t row_bytes, int64_t n, const void *act, float *y, int64_t r0,
                        int64_t r1);
void es_fp8_matmul_avx2(const void *w, size_t row_bytes, int64_t n, const void *act, size_t act_stride,
                        int64_t n_tok, float *y, int64_t y_stride, int64_t r0, int64_t r1);
void es_fp8_matvec_avx512(const void *w, size_t row_bytes, int64_t n, const void *act, float *y, int64_t r0,
                          int64_t r1);
void es_fp8_matmul_avx512(const void *w, size_t row_bytes, int64_t n, const void *act, size_t act_stride,
                          int64_t n_tok, float *y, int64_t y_stride, int64_t r0, int64_t r1);
/* Rows [r0, r1) dequantised (e4m3 * scale, each product rounded to fp32
 * once, as es_fp8_dequant) into dst, n floats a row. */
void es_fp8_dequant_rows_avx512(const es_fp8_mat *m, int64_t n, int64_t r0, int64_t r1, float *dst);
void es_fp8_dequant_rows_avx2(const es_fp8_mat *m, int64_t n, int64_t r0, int64_t r1, float *dst);
void es_fp8_matvec_neon(const void *w, size_t row_bytes, int64_t n, const void *act, float *y, int64_t r0,
                        int64_t r1);
void es_fp8_matmul_neon(const void *w, size_t row_bytes, int64_t n, const void *act, size_t act_stride,
                        int64_t n_tok, float *y, int64_t y_stride, int64_t r0, int64_t r1);

/* A path's FP8_B128 product through its F32 kernels (mv, mm): rows
 * dequantised by deq into a tile on the stack (each weight e4m3 * scale
 * rounded to fp32 once, the weights a float reference of the checkpoint
 * holds), then multiplied; nt == 0: the matvec (act one vector), else the
 * matmul of nt tokens.  The F32 matmul gives each (row, token) its matvec's
 * value whatever the row range, so this does too.  Rows longer than the
 * tile (none in DeepSeek's shapes) take the path's direct kernels dmv/dmm,
 * in both. */
#define ES_FP8_TILE_FLOATS 32768 /* 128 KB */
typedef void (*es_fp8_deq_fn)(const es_fp8_mat *m, int64_t n, int64_t r0, int64_t r1, float *dst);
static inline void es_fp8_tiled(es_fp8_deq_fn deq, es_matvec_fn mv, es_matmul_fn mm, es_matvec_fn dmv,
                                es_matmul_fn dmm, const void *w, size_t rb, int64_t n, const void *act, size_t as,
                                int64_t nt, float *y, int64_t ys, int64_t r0, int64_t r1) {
    if (n > ES_FP8_TILE_FLOATS) {
        if (nt) dmm(w, rb, n, act, as, nt, y, ys, r0, r1);
        else dmv(w, rb, n, act, y, r0, r1);
        return;
    }
    float tile[ES_FP8_TILE_FLOATS] __attribute__((aligned(64)));
    const int64_t k = ES_FP8_TILE_FLOATS / n;
    for (int64_t r = r0; r < r1; r += k) {
        const int64_t e = r + k < r1 ? r + k : r1;
        deq(w, n, r, e, tile);
        if (nt) mm(tile, (size_t)n * sizeof(float), n, act, as, nt, y + r, ys, 0, e - r);
        else mv(tile, (size_t)n * sizeof(float), n, act, y + r, 0, e - r);
    }
}

/* What the SIMD files share around their register tile, a static inline
 *   tile(R, T, pf, q[R], sc[R], n, x[T], y, ys, yi[R])
 * that writes row q[k]'s value against token x[t] to y[t * ys + yi[k]]
 * (pf: prefetch ahead in each row): the matvec, 4 rows a pass from the
 * four quarters of [r0, r1) (x86_avx2_common.h says why), the last
 * (r1 - r0) % 4 rows one at a time; and mm_tile, rows r.. r+R-1 against
 * the T tokens from t0. */
#define ES_FP8_DRIVERS(SUFFIX)                                                                                     \
    void es_fp8_matvec_##SUFFIX(const void *w, size_t row_bytes, int64_t n, const void *act, float *y, int64_t r0, \
                                int64_t r1) {                                                                     \
        (void)row_bytes;                                                                                          \
        const es_fp8_mat *m = w;                                                                                  \
        const float *x[1] = {act};                                                                                \
        const int64_t qr = (r1 - r0) / 4;                                                                         \
        for (int64_t j = 0; j < qr; j++) {                                                                        \
            const uint8_t *q[4];                                                                                  \
            const float *sc[4];                                                                                   \
            int64_t yi[4];                                                                                        \
            for (int k = 0; k < 4; k++) {                                                                         \
                yi[k] = r0 + k * qr + j;                                                                          \
                q[k] = es_fp8_row(m, n, yi[k]);                                                                   \
                sc[k] = es_fp8_row_scales(m, yi[k]);                                                              \
            }                                                                                                     \
            tile(4, 1, 1, q, sc, n, x, y, 0, yi);                                                                 \
        }                                                                                                         \
        for (int64_t r = r0 + 4 * qr; r < r1; r++) {                                                              \
            const uint8_t *q[1] = {es_fp8_row(m, n, r)};                                                          \
            const float *sc[1] = {es_fp8_row_scales(m, r)};                                                       \
            tile(1, 1, 0, q, sc, n, x, y, 0, &r);                                                                 \
        }                                                                                                         \
    }                                                                                                             \
    static inline __attribute__((always_inline)) void mm_tile(int R, int T, const es_fp8_mat *m, int64_t n,      \
                                                              const void *act, size_t as, int64_t t0, float *y,   \
                                                              int64_t ys, int64_t r) {                            \
        const uint8_t *q[4];                                                                                      \
        const float *sc[4], *x[4];                                                                                \
        int64_t yi[4];                                                                                            \
        for (int k = 0; k < R; k++)                                                                               \
            yi[k] = r + k, q[k] = es_fp8_row(m, n, r + k), sc[k] = es_fp8_row_scales(m, r + k);                   \
        for (int t = 0; t < T; t++) x[t] = (const float *)((const uint8_t *)act + (size_t)(t0 + t) * as);        \
        tile(R, T, 0, q, sc, n, x, y + t0 * ys, ys, yi);                                                          \
    }

/* Rows a block of the matmuls: about 64 KiB of weights, which stay in L2
 * while every token group passes over them (even, at least 2). */
static inline int64_t es_fp8_row_block(int64_t n) {
    int64_t rb = (64 << 10) / (n > 0 ? n : 1);
    return rb < 2 ? 2 : rb / 2 * 2;
}

#endif
