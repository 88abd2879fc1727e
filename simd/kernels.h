/* kernels.h — the one table of compute kernels.  simd/generic.c fills every
 * slot with a scalar reference; per-ISA files (later) fill the slots they
 * accelerate and leave the rest NULL, which falls back to generic.  Model
 * code calls only through the complete table its model was loaded with
 * (es_model.kern), never an ISA file directly; other code passes the table
 * it wants (es_kernels_best(), es_kernels_for()).
 *
 * Shapes: a weight matrix is `rows` rows of `n` elements of one type, each
 * row `row_bytes` apart (es_row_bytes(type, n) for dense tensors).
 * The tables: generic.c (scalar reference, every slot), x86_avx2.c,
 * x86_avx512.c, arm_neon.c; dispatch.c picks one at run time.
 */
#ifndef ES_KERNELS_H
#define ES_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include "quant.h"

/* y[r] = dot(row r of W, act) for r in [r0, r1).  `act` holds the n input
 * values in the format the kernel's act_type names: F32 (raw floats) for the
 * generic kernels; a SIMD kernel may ask for an 8-bit format (Q8_0) that it
 * multiplies with integer instructions, as ggml does. */
typedef void (*es_matvec_fn)(const void *w, size_t row_bytes, int64_t n,
                             const void *act, float *y, int64_t r0, int64_t r1);
/* Matrix-matrix product for prefill: Y[t][r] = dot(row r of W, act row t)
 * for t in [0, n_tok) and r in [r0, r1); act rows (in the same act_type as
 * the type's matvec) are act_stride bytes apart, Y rows y_stride floats
 * apart.  An empty slot falls back to one matvec per token. */
typedef void (*es_matmul_fn)(const void *w, size_t row_bytes, int64_t n,
                             const void *act, size_t act_stride, int64_t n_tok,
                             float *y, int64_t y_stride, int64_t r0, int64_t r1);
typedef void (*es_dequant_fn)(const void *src, float *dst, int64_t n);
typedef void (*es_quant_fn)(const float *src, void *dst, int64_t n);

typedef struct es_kernels {
    const char *name;
    es_matvec_fn matvec[ES_TYPE_COUNT];
    uint32_t act_type[ES_TYPE_COUNT]; /* format matvec[t] expects; 0 = F32 */
    es_matmul_fn matmul[ES_TYPE_COUNT]; /* same act_type as matvec[t] */
    /* one row of n elements (n a multiple of the block size) */
    es_dequant_fn dequant_row[ES_TYPE_COUNT];
    es_quant_fn quant_row[ES_TYPE_COUNT];
    /* y = x / sqrt(mean(x^2) + eps) * w  (y may alias x) */
    void (*rmsnorm)(float *y, const float *x, const float *w, int64_t n, float eps);
    /* dot product of two float vectors */
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    /* y += a * x */
    void (*axpy_f32)(float *y, float a, const float *x, int64_t n);
    /* g[i] = silu(g[i]) * u[i] */
    void (*silu_mul)(float *g, const float *u, int64_t n);
    /* x = softmax(x) in place, max-subtracted */
    void (*softmax)(float *x, int64_t n);
    /* Rows of the latent cache stored as type t (F16, BF16, Q8_0; an F32
     * row goes through dot_f32/axpy_f32): dot of fp32 a[n] with the n
     * stored values at x, and y[n] += a * x.  Q8_0: n a multiple of 32, the
     * sum of each block's products times its scale.  Read in place, never
     * converted first (runtime/attention.c, absorbed form). */
    float (*dot_kv[ES_TYPE_COUNT])(const float *a, const void *x, int64_t n);
    void (*axpy_kv[ES_TYPE_COUNT])(float *y, float a, const void *x, int64_t n);
    /* The same for G heads over nrows cache rows (row_bytes apart) of type
     * t (F32 rows here as in dot_f32/axpy_f32), reading each row once for
     * the heads: att[g * att_stride + r] = dot(q + g * q_stride, row r) and
     * u + g * u_stride += p[g * p_stride + r] * row r (r in order), each
     * value bit-identical to this table's one-head kernel (dot_f32/dot_kv,
     * axpy_f32/axpy_kv).  NULL where a table has none: callers then loop
     * over the one-head kernels (never filled from generic, whose
     * one-head kernels are not this table's). */
    void (*dot_kv_heads[ES_TYPE_COUNT])(const float *q, int64_t q_stride, int G, const void *rows, size_t row_bytes,
                                        int64_t nrows, int64_t n, float *att, int64_t att_stride);
    void (*axpy_kv_heads[ES_TYPE_COUNT])(float *u, int64_t u_stride, int G, const float *p, int64_t p_stride,
                                         const void *rows, size_t row_bytes, int64_t nrows, int64_t n);
} es_kernels;

/* The tables; a table an ISA cannot provide on this build is NULL. */
extern const es_kernels es_kernels_generic;
extern const es_kernels *const es_kernels_avx2;
extern const es_kernels *const es_kernels_avx512;
/* x86_avx512.c: the complete avx512 table for a CPU with or without
 * AVX512_VNNI (es_kernels_avx512 holds only the slots that need AVX-512
 * itself).  NULL off x86-64. */
const es_kernels *es_avx512_for(int vnni);
/* x86_amx.c: the avx512 VNNI table with the Q4_0/Q8_0 prefill products on
 * the AMX tile unit ("amx"), and the process's request for the tile state
 * (1 when Linux granted it).  NULL / 0 off x86-64 or without AMX in the
 * compiler. */
const es_kernels *es_amx_table(void);
int es_amx_enable(void);
extern const es_kernels *const es_kernels_neon;
/* arm_neon.c: the neon table for a CPU with or without SDOT (dotprod) and
 * SMMLA (i8mm); es_kernels_neon is the armv8.0 one.  NULL off aarch64. */
const es_kernels *es_neon_for(int dotprod, int i8mm);

/* The complete table of a SIMD path (generic|avx2|avx512|amx|neon): every slot
 * the generic table has is filled (an ISA's empty slots are generic's).
 * Tables are built once and never change, so any thread may hold one.
 * NULL with a message when the name is unknown or this CPU (or its OS, or
 * this build) cannot run the path. */
const es_kernels *es_kernels_for(const char *name, char *err, size_t errlen);
/* The best table this CPU and OS can run, detected once (thread-safe). */
const es_kernels *es_kernels_best(void);
/* es_kernels_best()'s name (public: edgeseek.h). */
const char *es_simd_name(void);
/* Whether this CPU and OS can run the named path. */
int es_simd_supported(const char *name);
/* One line describing the CPU features found. */
const char *es_cpu_features(void);

/* A resolved matrix-vector kernel: table K's slot for a weight type. */
typedef struct es_matvec_plan {
    es_matvec_fn fn;
    uint32_t act_type;
} es_matvec_plan;
es_matvec_plan es_plan_matvec(const es_kernels *K, uint32_t weight_type);
/* The generic table's matrix-vector kernel for weight_type (fp32
 * activations, scalar reference arithmetic), whatever table is active: for
 * the products that must not quantise their input.  NULL for an unknown
 * type. */
es_matvec_fn es_matvec_generic(uint32_t weight_type);
/* Bytes needed to hold n activations in act_type. */
size_t es_act_bytes(uint32_t act_type, int64_t n);
/* Converts n floats into act_type with K's quantiser (a plain copy for F32). */
void es_prepare_act(const es_kernels *K, uint32_t act_type, const float *x, void *dst, int64_t n);

/* Convenience wrappers through table K; return -1 if the type has no
 * kernel.  es_matvec converts x itself (tests, cold paths). */
int es_matvec(const es_kernels *K, uint32_t type, const void *w, size_t row_bytes, int64_t n,
              const float *x, float *y, int64_t r0, int64_t r1);
int es_matmul(const es_kernels *K, uint32_t type, const void *w, size_t row_bytes, int64_t n,
              const void *act, size_t act_stride, int64_t n_tok,
              float *y, int64_t y_stride, int64_t r0, int64_t r1);
int es_dequant_row(const es_kernels *K, uint32_t type, const void *src, float *dst, int64_t n);
int es_quant_row(const es_kernels *K, uint32_t type, const float *src, void *dst, int64_t n);

#endif
