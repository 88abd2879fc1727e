/* iq_grids.h — the IQ formats' codebooks (defined in iq_grids.c, values
 * bit-exact with GGUF's formats): for each grid, entry k holds 8 weights
 * (4 for the IQ3 grids) as bytes, weight j in byte j. */
#ifndef ES_IQ_GRIDS_H
#define ES_IQ_GRIDS_H

#include <stdint.h>

extern const uint8_t es_iq2_signs[128];    /* 7-bit sign code -> 8 sign bits (even parity) */
extern const uint64_t es_iq2_signs64[128]; /* the same, byte j = -1 if bit j is set, else +1 */
extern const uint64_t es_iq2xxs_grid[256]; /* IQ2_XXS magnitudes 8, 25, 43 */
extern const uint64_t es_iq2xs_grid[512];  /* IQ2_XS */
extern const uint64_t es_iq2s_grid[1024];  /* IQ2_S */
extern const uint32_t es_iq3xxs_grid[256]; /* IQ3_XXS magnitudes 4 .. 62 */
extern const uint32_t es_iq3s_grid[512];   /* IQ3_S magnitudes 1 .. 15 */
extern const uint64_t es_iq1s_grid[2048];  /* IQ1_S, IQ1_M: signed -1, 0, 1 */

#endif
