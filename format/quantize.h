/* quantize.h — converting a GGUF model to other weight types (the library
 * behind `edgeseek quantize IN OUT TYPE`).
 *
 * Targets (case-insensitive):
 *   f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 iq4_nl iq4_xs q2_k q3_k q4_k q5_k
 *   q6_k iq2_xxs iq2_xs iq2_s iq3_xxs iq3_s iq1_s iq1_m tq1_0 tq2_0
 *            every matrix in that type (the iq1/iq2/iq3 ones need an
 *            importance matrix: es_quantize_file_imatrix)
 *   q4_k_m   a Q4_K_M-style mix: routed experts Q4_K (ffn_down_exps of some
 *            layers Q6_K), attention, shared experts, dense FFN, token_embd
 *            and output Q6_K (README.md, "edgeseek quantize", has the table)
 *   iq2_m    the low-bit DeepSeek mix: routed experts IQ2_XXS (gate, up)
 *            and IQ2_S / IQ3_XXS (down), attention and shared experts
 *            Q5_K, dense FFN and token_embd Q4_K, output Q6_K; needs an
 *            importance matrix
 * Whatever the target: 1-D tensors (norms, biases), the router
 * (ffn_gate_inp) and the gate bias (exp_probs_b) are F32; a matrix whose row
 * length is not a multiple of the type's block falls back to IQ4_NL (for
 * iq4_xs and the IQ1/IQ2/IQ3/TQ types, as llama.cpp does) or Q8_0 (rows a multiple of 32) or F16, and the
 * log says so.
 *
 * Every metadata key is copied in order; general.file_type becomes
 * llama.cpp's LLAMA_FTYPE for the target and general.quantization_version
 * is set to 2.  Tensors keep their order.  Any input type edgeseek can
 * dequantise is accepted; a tensor already in its target type is copied
 * byte for byte.  The input is streamed tensor by tensor and row-chunk by
 * row-chunk (a few MB per thread), so memory stays small whatever the size
 * of the model; rows are quantised in parallel.
 */
#ifndef ES_QUANTIZE_H
#define ES_QUANTIZE_H

#include <stdint.h>
#include <stdio.h>

#include "edgeseek.h"
#include "threadpool.h"

/* es_quantize_params, es_quantize_target_valid and es_quantize_file are
 * public: include/edgeseek.h. */

/* The type `target` gives one tensor: its name, dimensions (ne[0] = row
 * length) and the model's block count (for the per-layer rules of the
 * mix).  *note (may be NULL) is set to why a fallback was taken, else NULL.
 * Returns ES_TYPE_COUNT for an unknown target. */
uint32_t es_quantize_tensor_type(const char *target, const char *name, uint32_t n_dims,
                                 const int64_t *ne, int n_layers, const char **note);

/* Converts n_rows rows of n values, packed in src_type, to dst_type at dst
 * (packed rows), on the pool's threads.  scratch holds one buffer of n
 * floats per pool thread.  The output does not depend on the thread count
 * or the SIMD path.  Used by es_quantize_file and by `edgeseek convert`. */
void es_quantize_rows(es_pool *pool, const void *src, uint32_t src_type, void *dst, uint32_t dst_type, int64_t n,
                      int64_t n_rows, float **scratch);

/* es_quantize_rows with importances for the IQ types (iq_quant.h): imp
 * holds n values per matrix, the chunk's rows start at row0 of the tensor,
 * and a matrix has rows_per_mat rows (imp NULL: unweighted). */
void es_quantize_rows_imp(es_pool *pool, const void *src, uint32_t src_type, void *dst, uint32_t dst_type, int64_t n,
                          int64_t n_rows, float **scratch, const float *imp, int64_t row0, int64_t rows_per_mat);

/* llama.cpp's LLAMA_FTYPE value written as general.file_type (-1 unknown). */
int es_quantize_ftype(const char *target);

#endif
