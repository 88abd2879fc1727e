/* fp8.h — the FP8_B128 kernels (the layout is in quant.h: es_fp8_mat) of
 * every path: the generic reference (generic_fp8.c) and the AVX2, AVX-512
 * and NEON ones (x86_avx2_fp8.c, x86_avx512_fp8.c, arm_neon_fp8.c), which
 * the tables of kernels.h name in their FP8_B128 slots.  All take fp32
 * activations (act_type 0).  w points to an es_fp8_mat; row r is row r of
 * the description.  Each path's matmul gives every (row, token) exactly its
 * matvec's value for that token (the determinism rule). */
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

/* The AVX2 and AVX-512 tables multiply through es_fp8_tiled (x86_avx2.c,
 * x86_avx512.c); the direct kernels take rows longer than the tile.
 * The AVX2 and NEON files share one shape (x86_avx512_fp8.c keeps a
 * vector sum per row instead, and decodes in registers in its matvec): a row is done block by block (128
 * columns, the last one possibly shorter); each block is first decoded to
 * fp32 (exactly; the 1/256 of the fp16 trick still in), then dotted with
 * the activations by the path's block dot, whose result times the block's
 * scale * 256 is added to the row's sum.  The matmul decodes a block once
 * for every token, so both give the same bits. */
#define ES_FP8_ROWS_TEMPLATE(SUFFIX, DECODE, BLOCKDOT)                                                             \
    void es_fp8_matvec_##SUFFIX(const void *w, size_t row_bytes, int64_t n, const void *act, float *y, int64_t r0, \
                                int64_t r1) {                                                                     \
        es_fp8_matmul_##SUFFIX(w, row_bytes, n, act, 0, 1, y, 0, r0, r1);                                         \
    }                                                                                                             \
    void es_fp8_matmul_##SUFFIX(const void *w, size_t row_bytes, int64_t n, const void *act, size_t act_stride,   \
                                int64_t n_tok, float *y, int64_t y_stride, int64_t r0, int64_t r1) {              \
        (void)row_bytes;                                                                                          \
        const es_fp8_mat *m = w;                                                                                  \
        float dec[ES_FP8_BLOCK] __attribute__((aligned(64)));                                                     \
        enum { TB = 16 };                                                                                         \
        float sum[TB];                                                                                            \
        for (int64_t t0 = 0; t0 < n_tok; t0 += TB) {                                                              \
            int64_t nt = n_tok - t0 < TB ? n_tok - t0 : TB;                                                       \
            for (int64_t r = r0; r < r1; r++) {                                                                   \
                const uint8_t *q = es_fp8_row(m, n, r);                                                           \
                const float *sc = es_fp8_row_scales(m, r);                                                        \
                for (int64_t t = 0; t < nt; t++) sum[t] = 0;                                                      \
                for (int64_t c0 = 0, b = 0; c0 < n; c0 += ES_FP8_BLOCK, b++) {                                    \
                    int len = (int)(n - c0 < ES_FP8_BLOCK ? n - c0 : ES_FP8_BLOCK);                               \
                    DECODE(q + c0, dec, len);                                                                     \
                    const float s = sc[b] * 256.0f;                                                               \
                    for (int64_t t = 0; t < nt; t++) {                                                            \
                        const float *x = (const float *)((const uint8_t *)act + (size_t)(t0 + t) * act_stride) + c0; \
                        sum[t] += BLOCKDOT(dec, x, len) * s;                                                      \
                    }                                                                                             \
                }                                                                                                 \
                for (int64_t t = 0; t < nt; t++) y[(t0 + t) * y_stride + r] = sum[t];                             \
            }                                                                                                     \
        }                                                                                                         \
    }

#endif
