/* iq_quant.h — quantising rows to the IQ codebook types (IQ2_XXS, IQ2_XS,
 * IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M) and the ternary TQ1_0 / TQ2_0,
 * weighted by an importance matrix (imatrix.h).  The blocks are GGUF's and
 * decode with the existing (ggml-bit-exact) decoders in simd/.
 */
#ifndef ES_IQ_QUANT_H
#define ES_IQ_QUANT_H

#include <stdint.h>

/* 1 if type is quantised by es_iq_quant_row (not by the kernel table). */
int es_iq_quant_handles(uint32_t type);

/* 1 if a target of this type needs an importance matrix (the codebook
 * types: at 1-3 bits per weight the unweighted fit loses too much). */
int es_iq_quant_needs_imatrix(uint32_t type);

/* Quantises one row of n values (n a multiple of 256) to type at dst.
 * imp: n importances (the imatrix's mean squared activation per column),
 * or NULL for all ones.  Deterministic; safe to call from many threads
 * (the codebook search tables are built once, on first use). */
void es_iq_quant_row(uint32_t type, const float *x, void *dst, int64_t n, const float *imp);

#endif
