/* kernels.h — the one table of compute kernels.  simd/generic.c fills every
 * slot with a scalar reference; per-ISA files (later) fill the slots they
 * accelerate and leave the rest NULL, which falls back to generic.  Model
 * code calls only through es_kern(), never an ISA file directly.
 *
 * Shapes: a weight matrix is `rows` rows of `n` elements of one type, each
 * row `row_bytes` apart (es_row_bytes(type, n) for dense tensors).
 */
#ifndef ES_KERNELS_H
#define ES_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include "quant.h"

typedef void (*es_matvec_fn)(const void *w, size_t row_bytes, int64_t n,
                             const float *x, float *y, int64_t r0, int64_t r1);
typedef void (*es_dequant_fn)(const void *src, float *dst, int64_t n);
typedef void (*es_quant_fn)(const float *src, void *dst, int64_t n);

typedef struct es_kernels {
    const char *name;
    /* y[r] = dot(row r of W, x) for r in [r0, r1); x has n floats */
    es_matvec_fn matvec[ES_TYPE_COUNT];
    /* one row of n elements (n a multiple of the block size) */
    es_dequant_fn dequant_row[ES_TYPE_COUNT];
    es_quant_fn quant_row[ES_TYPE_COUNT];
    /* y = x / sqrt(mean(x^2) + eps) * w */
    void (*rmsnorm)(float *y, const float *x, const float *w, int64_t n, float eps);
    /* dot product of two float vectors */
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    /* y += a * x */
    void (*axpy_f32)(float *y, float a, const float *x, int64_t n);
} es_kernels;

extern const es_kernels es_kernels_generic;

/* The table in use (generic until an ISA table is selected). */
const es_kernels *es_kern(void);

/* Convenience wrappers that route through es_kern(); return -1 if the type
 * has no kernel. */
int es_matvec(uint32_t type, const void *w, size_t row_bytes, int64_t n,
              const float *x, float *y, int64_t r0, int64_t r1);
int es_dequant_row(uint32_t type, const void *src, float *dst, int64_t n);
int es_quant_row(uint32_t type, const float *src, void *dst, int64_t n);

#endif
