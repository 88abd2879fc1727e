/* x86_amx.c — the "amx" path: the AVX-512 VNNI table with the prefill
 * products (matmul slots) of Q4_0 and Q8_0 weights run on Intel's AMX tile
 * unit (AMX-TILE + AMX-INT8, Sapphire Rapids and later).  Compiled with the
 * AVX-512 VNNI flags plus -mamx-tile -mamx-int8; dispatch.c takes the path
 * only where cpuid reports AMX, XCR0 has the tile state enabled and Linux
 * granted the process the tile data (arch_prctl ARCH_REQ_XCOMP_PERM, asked
 * by es_amx_enable).
 *
 * The product is x86_vnni_gemm.h's, value for value: the same 16-row tiles
 * with their weights transposed into the same packed layout (gemm_pack_vnni:
 * register g, lane r = row r's 4 bytes that pair with the activation's bytes
 * 4g..4g+3), which is what a tile multiply wants as its B operand, here
 * as signed bytes (Q4_0's q - 8, Q8_0's w).  Per block of 32 weights, one
 * TDPBSSD multiplies the T tokens' activation bytes (A: T rows of 32 bytes,
 * read where they lie, `as` apart) by the 16 rows' weight bytes (B: 8 rows
 * of 64 bytes) into T x 16 exact int32 sums s, the integers the VNNI
 * kernel reaches from its unsigned bytes and correction; from there its
 * arithmetic:
 *
 *     y[t][r..r+15] += float(s) * (dw[r..r+15] * da[t][i])    (one FMA)
 *
 * so every output has the same bits as through the VNNI gemm, the tiles
 * and the matvec (x86_q8act.h), and a session's token gives the same
 * logits alone or in a batch.  The tile unit does the 8192 multiply-adds of
 * a 16 x 16 x 32 block in a few cycles; what is left is the conversion and
 * scaling of its 256 sums, a quarter of the VNNI kernel's instructions.
 *
 * The tile configuration (A and C rows = the token group's size) is loaded
 * once per thread and group size and left in place. */
#include "kernels.h"

#if defined(__x86_64__) && defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__AVX512VNNI__) && \
    defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "x86_avx2_common.h"
#include "x86_vnni_gemm.h"

#define AMX_TOK 16 /* tokens of a group: the rows of the A and C tiles */

/* Linux's ask for the tile data state (arch/x86/include/uapi/asm/prctl.h) */
#define ES_ARCH_REQ_XCOMP_PERM 0x1023
#define ES_XFEATURE_XTILEDATA 18

int es_amx_enable(void) {
#ifdef SYS_arch_prctl
    return syscall(SYS_arch_prctl, ES_ARCH_REQ_XCOMP_PERM, ES_XFEATURE_XTILEDATA) == 0;
#else
    return 0;
#endif
}

/* palette 1: tiles 0-1 C (T x 16 int32), 2-3 A (T x 32 bytes), 4-5 B (8 x 64 bytes) */
typedef struct amx_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;
_Static_assert(sizeof(amx_config) == 64, "the tile configuration is 64 bytes");

static __thread int amx_rows; /* T of this thread's loaded configuration, 0 = none */

static void amx_configure(int T) {
    if (amx_rows == T) return;
    amx_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int k = 0; k < 2; k++) {
        c.rows[k] = (uint8_t)T, c.colsb[k] = 64;
        c.rows[2 + k] = (uint8_t)T, c.colsb[2 + k] = 32;
        c.rows[4 + k] = 8, c.colsb[4 + k] = 64;
    }
    _tile_loadconfig(&c);
    amx_rows = T;
}

/* acc[t] += the block's T x 16 sums (rows of cs) scaled as in gemm_tile */
static inline __attribute__((always_inline)) void amx_scale(int T, const int32_t (*cs)[16], __m512 dw,
                                                            const gemm_aux *aux, int64_t nb, int64_t i, __m512 *acc) {
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) {
        const gemm_aux *x = aux + (size_t)t * (size_t)nb + i;
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cs[t])), _mm512_mul_ps(dw, _mm512_set1_ps(x->d)),
                                 acc[t]);
    }
}

/* 16 rows x T tokens over all nb blocks, weights from the packed buffer;
 * blocks two at a time on two sets of tiles, so that the tile unit works on
 * the next block while the vector units scale this one */
static inline __attribute__((always_inline)) void amx_tile(int T, const gemm_packed *pk, int64_t nb, const char *act,
                                                           size_t as, const gemm_aux *aux, float *y, int64_t ys,
                                                           __mmask16 keep) {
    int32_t cs[2][AMX_TOK][16] __attribute__((aligned(64)));
    __m512 acc[AMX_TOK];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    const char *a = act + offsetof(block_q8_0, qs);
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_loadd(2, a + (size_t)i * sizeof(block_q8_0), (long)as);
        _tile_loadd(4, &pk[i].w[0], 64);
        _tile_loadd(3, a + (size_t)(i + 1) * sizeof(block_q8_0), (long)as);
        _tile_loadd(5, &pk[i + 1].w[0], 64);
        _tile_dpbssd(0, 2, 4);
        _tile_dpbssd(1, 3, 5);
        _tile_stored(0, cs[0], 64);
        amx_scale(T, (const int32_t(*)[16])cs[0], _mm512_load_ps(&pk[i].d), aux, nb, i, acc);
        _tile_stored(1, cs[1], 64);
        amx_scale(T, (const int32_t(*)[16])cs[1], _mm512_load_ps(&pk[i + 1].d), aux, nb, i + 1, acc);
    }
    if (i < nb) {
        _tile_zero(0);
        _tile_loadd(2, a + (size_t)i * sizeof(block_q8_0), (long)as);
        _tile_loadd(4, &pk[i].w[0], 64);
        _tile_dpbssd(0, 2, 4);
        _tile_stored(0, cs[0], 64);
        amx_scale(T, (const int32_t(*)[16])cs[0], _mm512_load_ps(&pk[i].d), aux, nb, i, acc);
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) _mm512_mask_storeu_ps(y + (size_t)t * (size_t)ys, keep, acc[t]);
}

/* gemm_pack_vnni's layout with the weights as signed bytes: Q4_0's q - 8,
 * Q8_0's w as stored (the VNNI kernel's unsigned q and w + 128 need the
 * activation's correction; signed products do not, and give the same sums) */
static void gemm_pack_amx(int is_q4, const gemm_rows *rw, int64_t nb, void *pk) {
    gemm_pack_vnni(is_q4, rw, nb, pk);
    gemm_packed *p = pk;
    const __m512i off = _mm512_set1_epi8(is_q4 ? 8 : (char)0x80);
    for (int64_t i = 0; i < nb; i++)
#pragma GCC unroll 8
        for (int g = 0; g < 8; g++) p[i].w[g] = _mm512_sub_epi8(p[i].w[g], off);
}

static void gemm_tokens_amx(int is_q4, int T, const gemm_rows *rw, const void *pk, int64_t nb, const char *act,
                            size_t as, const gemm_aux *aux, float *y, int64_t ys) {
    (void)is_q4; /* signed weight bytes either way (gemm_pack_amx) */
    const __mmask16 keep = (__mmask16)((1u << rw->live) - 1);
    amx_configure(T);
    switch (T) {
#define AMX_CASE(k)                                                  \
    case k: amx_tile(k, pk, nb, act, as, aux, y, ys, keep); break;
        AMX_CASE(1) AMX_CASE(2) AMX_CASE(3) AMX_CASE(4) AMX_CASE(5) AMX_CASE(6) AMX_CASE(7) AMX_CASE(8)
        AMX_CASE(9) AMX_CASE(10) AMX_CASE(11) AMX_CASE(12) AMX_CASE(13) AMX_CASE(14) AMX_CASE(15)
        default: AMX_CASE(AMX_TOK)
#undef AMX_CASE
    }
}

/* Below AMX_MIN_TOK tokens the VNNI gemm (its registers hold the
 * accumulators of up to 12 tokens without a store and reload of the sums)
 * is as fast; from there the tile unit wins (bench_kernels). */
#define AMX_MIN_TOK 8

static void amx_matmul(int is_q4, es_matmul_fn vnni, const void *w, size_t rb, int64_t n, const void *act, size_t as,
                       int64_t nt, float *y, int64_t ys, int64_t r0, int64_t r1) {
    if (nt >= AMX_MIN_TOK && gemm_drive(is_q4, GEMM_ROWS, AMX_TOK, 1, sizeof(gemm_packed), gemm_pack_amx,
                                        gemm_tokens_amx, w, rb, n, act, as, nt, y, ys, r0, r1))
        return;
    vnni(w, rb, n, act, as, nt, y, ys, r0, r1);
}

static es_kernels amx_table;
static es_matmul_fn vnni_q4_0, vnni_q8_0;

static void matmul_q4_0_amx(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                            int64_t ys, int64_t r0, int64_t r1) {
    amx_matmul(1, vnni_q4_0, w, rb, n, act, as, nt, y, ys, r0, r1);
}
static void matmul_q8_0_amx(const void *w, size_t rb, int64_t n, const void *act, size_t as, int64_t nt, float *y,
                            int64_t ys, int64_t r0, int64_t r1) {
    amx_matmul(0, vnni_q8_0, w, rb, n, act, as, nt, y, ys, r0, r1);
}

static pthread_once_t amx_once = PTHREAD_ONCE_INIT;
static void build_amx(void) {
    amx_table = *es_avx512_for(1);
    vnni_q4_0 = amx_table.matmul[ES_TYPE_Q4_0];
    vnni_q8_0 = amx_table.matmul[ES_TYPE_Q8_0];
    amx_table.matmul[ES_TYPE_Q4_0] = matmul_q4_0_amx;
    amx_table.matmul[ES_TYPE_Q8_0] = matmul_q8_0_amx;
    amx_table.name = "amx";
}

const es_kernels *es_amx_table(void) {
    pthread_once(&amx_once, build_amx);
    return &amx_table;
}
#else
int es_amx_enable(void) { return 0; }
const es_kernels *es_amx_table(void) { return 0; }
#endif
