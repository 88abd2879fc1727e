/* quant.h — tensor element types (ggml ids) and the block layouts of the
 * quantised formats, exactly as GGUF stores them.  Every block struct has a
 * _Static_assert on its size; the comment gives the formula and bits/weight.
 * Shared by the CPU kernels, the loader, the model generator and (later) CUDA.
 */
#ifndef ES_QUANT_H
#define ES_QUANT_H

#include <stddef.h>
#include <stdint.h>

/* ggml type ids as they appear in GGUF tensor infos */
enum es_type {
    ES_TYPE_F32 = 0, ES_TYPE_F16 = 1, ES_TYPE_Q4_0 = 2, ES_TYPE_Q4_1 = 3,
    ES_TYPE_Q5_0 = 6, ES_TYPE_Q5_1 = 7, ES_TYPE_Q8_0 = 8, ES_TYPE_Q8_1 = 9,
    ES_TYPE_Q2_K = 10, ES_TYPE_Q3_K = 11, ES_TYPE_Q4_K = 12, ES_TYPE_Q5_K = 13,
    ES_TYPE_Q6_K = 14, ES_TYPE_Q8_K = 15, ES_TYPE_IQ2_XXS = 16, ES_TYPE_IQ2_XS = 17,
    ES_TYPE_IQ3_XXS = 18, ES_TYPE_IQ1_S = 19, ES_TYPE_IQ4_NL = 20, ES_TYPE_IQ3_S = 21,
    ES_TYPE_IQ2_S = 22, ES_TYPE_IQ4_XS = 23, ES_TYPE_I8 = 24, ES_TYPE_I16 = 25,
    ES_TYPE_I32 = 26, ES_TYPE_I64 = 27, ES_TYPE_F64 = 28, ES_TYPE_IQ1_M = 29,
    ES_TYPE_BF16 = 30, ES_TYPE_TQ1_0 = 34, ES_TYPE_TQ2_0 = 35, ES_TYPE_MXFP4 = 39,
    ES_TYPE_COUNT = 40
};

typedef uint16_t es_fp16; /* IEEE half, raw bits */
typedef uint16_t es_bf16; /* bfloat16, raw bits */

/* Q8_0: 32 weights = d * q[i]; d fp16, q int8.  (2 + 32) B / 32 = 8.5 bpw */
#define QK8_0 32
typedef struct {
    es_fp16 d;
    int8_t qs[QK8_0];
} block_q8_0;
_Static_assert(sizeof(block_q8_0) == 34, "block_q8_0 size");

/* Q4_0: 32 weights = d * (q - 8), q in 0..15; low nibbles hold weights 0..15,
 * high nibbles weights 16..31.  (2 + 16) B / 32 = 4.5 bpw */
#define QK4_0 32
typedef struct {
    es_fp16 d;
    uint8_t qs[QK4_0 / 2];
} block_q4_0;
_Static_assert(sizeof(block_q4_0) == 18, "block_q4_0 size");

/* Traits of every type ggml knows, so the reader can size any tensor. */
typedef struct es_type_traits {
    const char *name;
    uint32_t block_size; /* elements per block; 0 = unknown id */
    uint32_t type_size;  /* bytes per block */
    int supported;       /* edgeseek can compute with it */
} es_type_traits;

const es_type_traits *es_type_info(uint32_t type); /* NULL for unknown ids */

/* Bytes of a row of n elements; 0 if n is not a multiple of the block size
 * or the type is unknown. */
size_t es_row_bytes(uint32_t type, int64_t n);

float es_fp16_to_f32(es_fp16 h);
es_fp16 es_f32_to_fp16(float f);
float es_bf16_to_f32(es_bf16 h);
es_bf16 es_f32_to_bf16(float f); /* round to nearest even */

#endif
