/* generic_kquants.h — the scalar reference kernels of the K-quant formats
 * (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K), of IQ4_XS and of the Q8_K activation format, defined
 * in generic_kquants.c and placed in the generic kernel table (generic.c).
 * Signatures are those of the table's slots (kernels.h); n is a multiple of
 * QK_K = 256 everywhere. */
#ifndef ES_GENERIC_KQUANTS_H
#define ES_GENERIC_KQUANTS_H

#include <stddef.h>
#include <stdint.h>

void es_dequant_q2_K(const void *src, float *dst, int64_t n);
void es_dequant_q3_K(const void *src, float *dst, int64_t n);
void es_dequant_q4_K(const void *src, float *dst, int64_t n);
void es_dequant_q5_K(const void *src, float *dst, int64_t n);
void es_dequant_q6_K(const void *src, float *dst, int64_t n);
void es_dequant_q8_K(const void *src, float *dst, int64_t n);

void es_quant_q2_K(const float *src, void *dst, int64_t n);
void es_quant_q3_K(const float *src, void *dst, int64_t n);
void es_quant_q4_K(const float *src, void *dst, int64_t n);
void es_quant_q5_K(const float *src, void *dst, int64_t n);
void es_quant_q6_K(const float *src, void *dst, int64_t n);
/* d = max|x| / 127, q = round(x / d), bsums[j] = sum of q[16j .. 16j+15] */
void es_quant_q8_K(const float *src, void *dst, int64_t n);

/* y[r] = dot(row r, x) for r in [r0, r1), x plain floats (act_type F32) */
void es_matvec_q2_K(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1);
void es_matvec_q3_K(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1);
void es_matvec_q4_K(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1);
void es_matvec_q5_K(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1);
void es_matvec_q6_K(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1);

/* IQ4_XS (super-blocks of 256) */
void es_dequant_iq4_xs(const void *src, float *dst, int64_t n);
void es_quant_iq4_xs(const float *src, void *dst, int64_t n);
void es_matvec_iq4_xs(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1);

/* The codebook formats IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M
 * and the ternary TQ1_0, TQ2_0: decoding and products (no quantiser: the
 * IQ ones need an importance matrix) */
#define ES_IQ_DECL(name)                                                                                            void es_dequant_##name(const void *src, float *dst, int64_t n);                                                void es_matvec_##name(const void *w, size_t rb, int64_t n, const void *act, float *y, int64_t r0, int64_t r1);
ES_IQ_DECL(iq2_xxs)
ES_IQ_DECL(iq2_xs)
ES_IQ_DECL(iq2_s)
ES_IQ_DECL(iq3_xxs)
ES_IQ_DECL(iq3_s)
ES_IQ_DECL(iq1_s)
ES_IQ_DECL(iq1_m)
ES_IQ_DECL(tq1_0)
ES_IQ_DECL(tq2_0)
#undef ES_IQ_DECL

/* The IQ4 table's scale fit (IQ4_NL blocks, IQ4_XS sub-blocks): the d of
 * x[n] (n <= 32) ≈ d · es_iq4nl_values[L] with least squared error, L the
 * indices; and the indices of x for a given d (nearest table value). */
float es_iq4_fit(const float *x, int n, uint8_t *L);
void es_iq4_round(const float *x, int n, float d, uint8_t *L);

#endif
