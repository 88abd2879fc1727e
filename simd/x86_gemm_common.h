/* x86_gemm_common.h — the loops shared by the prefill products that put
 * output ROWS in the int32 lanes of a register (x86_vnni_gemm.h: 16 rows
 * with AVX-512 VNNI; x86_avx2_gemm.h: 8 rows with AVX2): per-token
 * activation data computed once per call, the token chunks, the row tiles
 * and the token groups.  Include only from files compiled with at least
 * -mavx2 -mfma -mf16c, after x86_avx2_common.h.
 *
 * A product is cut as: tokens in chunks whose activations (and gemm_aux)
 * stay in L2; within a chunk, tiles of R rows (16 or 8) whose weights stay
 * in L1; over a tile, groups of at most `tok` tokens whose accumulators
 * stay in registers, of equal size (9 tokens: 5 + 4, not 8 + 1).  Where a
 * tile is run for more than one group (or always, if the kernel asks), its
 * weights are first transposed into a buffer (`pack`) that every
 * group reads; otherwise the one group transposes them itself.
 *
 * A ragged last tile repeats its last row in the missing lanes and stores
 * only the live ones; each output is computed by the same instructions in
 * the same order wherever it falls, so results do not depend on how rows
 * are split between threads. */
#ifndef ES_X86_GEMM_COMMON_H
#define ES_X86_GEMM_COMMON_H

#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

#include "quant.h"

#define GEMM_MAX_ROWS 16
#define GEMM_AUX 4096              /* (token, block) entries of gemm_aux: 32 KiB */
#define GEMM_PACK_BYTES (224u << 10) /* the transposed weights of one tile (n = 10944 fits) */

/* per token and activation block: the start value of the integer dot
 * product (minus the weight offset times the block's sum: 8 for Q4_0,
 * 128 for Q8_0 stored as w + 128) and the fp32 scale */
typedef struct gemm_aux {
    int32_t corr;
    float d;
} gemm_aux;

/* a 4-byte group of an activation block, read where it lies */
typedef int32_t gemm_u32 __attribute__((aligned(1), may_alias));

typedef struct gemm_rows {
    const char *row[GEMM_MAX_ROWS]; /* the tile's rows; missing ones repeat the last */
    int32_t offs[GEMM_MAX_ROWS];    /* their byte offsets from row[0] */
    int live;                       /* rows really in the tile */
} gemm_rows;

/* transposes nb blocks of a tile (Q4_0 or Q8_0) into pk */
typedef void (*gemm_pack_fn)(int is_q4, const gemm_rows *rw, int64_t nb, void *pk);
/* T tokens (act rows `as` bytes apart, aux rows nb entries apart) over a
 * tile: weights from pk, or transposed on the way when pk is NULL */
typedef void (*gemm_run_fn)(int is_q4, int T, const gemm_rows *rw, const void *pk, int64_t nb, const char *act, size_t as,
                            const gemm_aux *aux, float *y, int64_t ys);

/* corr and d of tokens [0, nt), nb blocks each */
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

/* The matmul slot through a kernel's pack and run.  R rows a tile, groups
 * of at most tok tokens, pk_block bytes of packed weights per block.
 * Returns 0 (nothing done: the caller falls back) when a row is too long
 * for the buffers. */
static inline __attribute__((always_inline)) int gemm_drive(int is_q4, int R, int tok, int pack_always,
                                                            size_t pk_block, gemm_pack_fn pack, gemm_run_fn run,
                                                            const void *w, size_t rb, int64_t n, const void *act,
                                                            size_t as, int64_t nt, float *y, int64_t ys, int64_t r0,
                                                            int64_t r1) {
    const int64_t nb = n / 32;
    const int fits = nb * (int64_t)pk_block <= (int64_t)GEMM_PACK_BYTES;
    if (nb < 1 || nb > GEMM_AUX || (pack_always && !fits)) return 0;
    /* 256 KiB of scratch from the heap, not the stack (an embedder's thread
     * may have a small one); glibc serves it from the thread's arena after
     * the first call.  Without it, the caller's fallback runs. */
    unsigned char *scratch = aligned_alloc(64, GEMM_PACK_BYTES + GEMM_AUX * sizeof(gemm_aux));
    if (!scratch) return 0;
    unsigned char *pk = scratch;
    gemm_aux *aux = (gemm_aux *)(scratch + GEMM_PACK_BYTES);
    int64_t tc = token_block(nt, (size_t)nb * sizeof(block_q8_0));
    if (tc > GEMM_AUX / nb) tc = GEMM_AUX / nb;
    for (int64_t t0 = 0; t0 < nt; t0 += tc) {
        const int64_t ntc = t0 + tc < nt ? tc : nt - t0;
        const char *a0 = (const char *)act + (size_t)t0 * as;
        gemm_prepare_aux(is_q4, a0, as, ntc, nb, aux);
        const int64_t groups = (ntc + tok - 1) / tok, gsize = (ntc + groups - 1) / groups;
        const int packed = fits && (pack_always || groups > 1);
        for (int64_t r = r0; r < r1; r += R) {
            gemm_rows rw;
            rw.live = r1 - r < R ? (int)(r1 - r) : R;
            for (int k = 0; k < R; k++) {
                const int kk = k < rw.live ? k : rw.live - 1;
                rw.row[k] = (const char *)w + (size_t)(r + kk) * rb;
                rw.offs[k] = (int32_t)((size_t)kk * rb);
            }
            if (packed) pack(is_q4, &rw, nb, pk);
            for (int64_t t = 0; t < ntc; t += gsize)
                run(is_q4, ntc - t < gsize ? (int)(ntc - t) : (int)gsize, &rw, packed ? pk : NULL, nb, a0 + (size_t)t * as,
                    as, aux + t * nb, y + (size_t)(t0 + t) * (size_t)ys + r, ys);
        }
    }
    free(scratch);
    return 1;
}

#endif
