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
    /* edgeseek's own, never in a GGUF file (the reader and writer refuse
     * it): FP8 e4m3 weights with 128x128 block scales read in place from a
     * Hugging Face checkpoint (es_fp8_mat below) */
    ES_TYPE_FP8_B128 = 40,
    ES_TYPE_COUNT = 41
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

/* Q4_1: 32 weights = d * q + m, q in 0..15; nibbles as Q4_0 (low: weights
 * 0..15, high: 16..31).  (2 + 2 + 16) B / 32 = 5 bpw */
#define QK4_1 32
typedef struct {
    es_fp16 d;
    es_fp16 m;
    uint8_t qs[QK4_1 / 2];
} block_q4_1;
_Static_assert(sizeof(block_q4_1) == 20, "block_q4_1 size");

/* Q5_0: 32 weights = d * (q - 16), q in 0..31 = nibble (as Q4_0) + 16 *
 * bit i of qh read as a little-endian uint32 (bit i % 8 of qh[i / 8]).
 * (2 + 4 + 16) B / 32 = 5.5 bpw */
#define QK5_0 32
typedef struct {
    es_fp16 d;
    uint8_t qh[4];
    uint8_t qs[QK5_0 / 2];
} block_q5_0;
_Static_assert(sizeof(block_q5_0) == 22, "block_q5_0 size");

/* Q5_1: 32 weights = d * q + m, q in 0..31 as Q5_0's.
 * (2 + 2 + 4 + 16) B / 32 = 6 bpw */
#define QK5_1 32
typedef struct {
    es_fp16 d;
    es_fp16 m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
} block_q5_1;
_Static_assert(sizeof(block_q5_1) == 24, "block_q5_1 size");

/* IQ4_NL: 32 weights = d * es_iq4nl_values[q], q in 0..15, nibbles as
 * Q4_0's; the 16 values are a fixed non-linear grid, denser near 0.
 * (2 + 16) B / 32 = 4.5 bpw */
#define QK4_NL 32
typedef struct {
    es_fp16 d;
    uint8_t qs[QK4_NL / 2];
} block_iq4_nl;
_Static_assert(sizeof(block_iq4_nl) == 18, "block_iq4_nl size");

/* ggml's kvalues_iq4nl, in quant.c: -127 -104 -83 -65 -49 -35 -22 -10 1 13
 * 25 38 53 69 89 113 (sorted, so the nearest value is found by search) */
extern const int8_t es_iq4nl_values[16];

/* ---- K-quants: super-blocks of QK_K = 256 weights ------------------------
 * A super-block holds sub-blocks (16 of 16 or 8 of 32 weights), each with
 * its own scale (and min) quantised to a few bits against the super-block's
 * fp16 d (and dmin).  Layouts are GGUF's byte for byte. */
#define QK_K 256
#define K_SCALE_SIZE 12

/* Q2_K: 16 sub-blocks of 16; w = d*sc*q - dmin*m, q in 0..3, sc and m 4 bits
 * each (scales[j] = sc | m << 4).  qs: four 2-bit planes per 128 weights;
 * weight 128*h + 32*p + l is bits 2p..2p+1 of qs[32*h + l].
 * (16 + 64 + 2 + 2) B / 256 = 2.625 bpw */
typedef struct {
    uint8_t scales[QK_K / 16];
    uint8_t qs[QK_K / 4];
    es_fp16 d;
    es_fp16 dmin;
} block_q2_K;
_Static_assert(sizeof(block_q2_K) == 84, "block_q2_K size");

/* Q3_K: 16 sub-blocks of 16; w = d*(sc - 32)*(q - 4), q in 0..7 = low 2 bits
 * (qs, planes as Q2_K) + 4 * high bit (bit i/32 of hmask[i % 32]); sc 6 bits:
 * low 4 in scales[j] (j < 8) or scales[j-8] >> 4, high 2 in bits 2*(j/4) of
 * scales[8 + j%4].  (32 + 64 + 12 + 2) B / 256 = 3.4375 bpw */
typedef struct {
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[K_SCALE_SIZE];
    es_fp16 d;
} block_q3_K;
_Static_assert(sizeof(block_q3_K) == 110, "block_q3_K size");

/* Q4_K: 8 sub-blocks of 32; w = d*sc*q - dmin*m, q in 0..15, sc and m 6 bits
 * packed in 12 bytes (es_k4_scale_min).  qs: weights 64*h + l (l < 32) are
 * the low nibbles of qs[32*h + l], weights 64*h + 32 + l the high nibbles.
 * (2 + 2 + 12 + 128) B / 256 = 4.5 bpw */
typedef struct {
    es_fp16 d;
    es_fp16 dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
} block_q4_K;
_Static_assert(sizeof(block_q4_K) == 144, "block_q4_K size");

/* Q5_K: Q4_K plus a fifth bit: q in 0..31 = nibble (as Q4_K) + 16 * bit
 * i/32 of qh[i % 32].  (2 + 2 + 12 + 32 + 128) B / 256 = 5.5 bpw */
typedef struct {
    es_fp16 d;
    es_fp16 dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;
_Static_assert(sizeof(block_q5_K) == 176, "block_q5_K size");

/* Q6_K: 16 sub-blocks of 16; w = d*sc*(q - 32), sc int8, q in 0..63.  Per
 * 128 weights (h): weight 128*h + 32*p + l (l < 32) has its low nibble in
 * ql[64*h + 32*(p&1) + l] (low half for p < 2, high half for p >= 2) and
 * its high 2 bits at bits 2p of qh[32*h + l].
 * (128 + 64 + 16 + 2) B / 256 = 6.5625 bpw */
typedef struct {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    es_fp16 d;
} block_q6_K;
_Static_assert(sizeof(block_q6_K) == 210, "block_q6_K size");

/* Q8_K: the 8-bit activation format K-quant dot products use; x = d*q,
 * d fp32, q int8 in -127..127; bsums[j] = sum of qs[16j .. 16j+15] (lets a
 * kernel apply the per-sub-block mins without touching the quants).
 * (4 + 256 + 32) B / 256 = 9.125 bpw */
typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} block_q8_K;
_Static_assert(sizeof(block_q8_K) == 292, "block_q8_K size");

/* IQ4_XS: 8 sub-blocks of 32; w = d * (ls - 32) * es_iq4nl_values[q],
 * ls 6 bits: low 4 in scales_l[j / 2] (low nibble for even j), high 2 at
 * bits 2j of scales_h.  Sub-block j's quants are qs[16j .. 16j+15], low
 * nibbles weights 32j .. 32j+15, high nibbles 32j+16 .. 32j+31.
 * (2 + 2 + 4 + 128) B / 256 = 4.25 bpw */
typedef struct {
    es_fp16 d;
    uint16_t scales_h;
    uint8_t scales_l[QK_K / 64];
    uint8_t qs[QK_K / 2];
} block_iq4_xs;
_Static_assert(sizeof(block_iq4_xs) == 136, "block_iq4_xs size");

/* ---- the IQ codebook formats (super-blocks of 256; grids in iq_grids.h) ----
 * Weights come in groups of 8 (IQ3: two grid entries of 4) whose values are
 * a grid entry: unsigned magnitudes with 8 signs from a 7-bit code through
 * es_iq2_signs (IQ2_XXS, IQ2_XS, IQ3_XXS) or 8 explicit sign bits (IQ2_S,
 * IQ3_S), or signed -1/0/1 plus a shift of +-1/8 (IQ1_S, IQ1_M).  Every
 * scale is an odd integer times d, so each weight is d times a small
 * integer divided by a power of two, which is what the kernels multiply. */

/* IQ2_XXS: per 32 weights (ib) the 8 bytes at qs[4ib]: bytes 0..3 grid
 * indices of its 4 groups, then a uint32 (little-endian) of four 7-bit sign
 * codes (bits 7l..7l+6) and a 4-bit scale s (bits 28..31);
 * w = d·(0.5 + s)/4 · grid · sign.  (2 + 64) B / 256 = 2.0625 bpw */
typedef struct {
    es_fp16 d;
    uint16_t qs[QK_K / 8];
} block_iq2_xxs;
_Static_assert(sizeof(block_iq2_xxs) == 66, "block_iq2_xxs size");

/* IQ2_XS: group g's uint16 qs[g] = 9-bit grid index | 7-bit sign code << 9;
 * scales[ib] two 4-bit scales (low: weights 0..15 of the 32, high: 16..31);
 * w = d·(0.5 + s)/4 · grid · sign.  (2 + 64 + 8) B / 256 = 2.3125 bpw */
typedef struct {
    es_fp16 d;
    uint16_t qs[QK_K / 8];
    uint8_t scales[QK_K / 32];
} block_iq2_xs;
_Static_assert(sizeof(block_iq2_xs) == 74, "block_iq2_xs size");

/* IQ2_S: group g's 10-bit index = qs[g] | bits 2(g%4)..+1 of qh[g/4] << 8;
 * its 8 sign bits are qs[32 + g]; scales as IQ2_XS.
 * (2 + 64 + 8 + 8) B / 256 = 2.5625 bpw */
typedef struct {
    es_fp16 d;
    uint8_t qs[QK_K / 4]; /* 32 index bytes, then 32 sign bytes */
    uint8_t qh[QK_K / 32];
    uint8_t scales[QK_K / 32];
} block_iq2_s;
_Static_assert(sizeof(block_iq2_s) == 82, "block_iq2_s size");

/* IQ3_XXS: qs[0..63] one es_iq3xxs_grid index per 4 weights; per 32 weights
 * ib the uint32 at qs[64 + 4ib]: four 7-bit sign codes (8 weights each) and
 * a 4-bit scale s in bits 28..31; w = d·(0.5 + s)/2 · grid · sign.
 * (2 + 96) B / 256 = 3.0625 bpw */
typedef struct {
    es_fp16 d;
    uint8_t qs[3 * QK_K / 8];
} block_iq3_xxs;
_Static_assert(sizeof(block_iq3_xxs) == 98, "block_iq3_xxs size");

/* IQ3_S: per 4 weights (k = 0..63) the 9-bit index qs[k] | bit k%8 of
 * qh[k/8] << 8; signs[0..31] one bit per weight; scales[i] two 4-bit
 * scales (low: weights 64i..64i+31, high: the next 32); w = d·(1 + 2s) ·
 * grid · sign.  (2 + 64 + 8 + 32 + 4) B / 256 = 3.4375 bpw */
typedef struct {
    es_fp16 d;
    uint8_t qs[QK_K / 4];
    uint8_t qh[QK_K / 32];
    uint8_t signs[QK_K / 8];
    uint8_t scales[QK_K / 64];
} block_iq3_s;
_Static_assert(sizeof(block_iq3_s) == 110, "block_iq3_s size");

/* IQ1_S: per 32 weights ib, qh[ib] holds three index bits per group (bits
 * 3l..3l+2: the high bits of group l's 11-bit index, qs[4ib + l] the low 8),
 * a 3-bit scale s (bits 12..14) and the shift's sign (bit 15);
 * w = d·(2s + 1) · (grid + shift), shift = -1/8 if bit 15 else +1/8.
 * (2 + 32 + 16) B / 256 = 1.5625 bpw */
typedef struct {
    es_fp16 d;
    uint8_t qs[QK_K / 8];
    uint16_t qh[QK_K / 32];
} block_iq1_s;
_Static_assert(sizeof(block_iq1_s) == 50, "block_iq1_s size");

/* IQ1_M: group g's 11-bit index = qs[g] | (qh[g/2] >> 4(g%2) & 7) << 8, its
 * shift -1/8 if bit 3 + 4(g%2) of qh[g/2] else +1/8; scales as four uint16
 * (little-endian): 3-bit scales s of each 16 weights (uint16 i holds those
 * of weights 64i.., 4 of them in bits 0..11) and in bits 12..15 of the four
 * the fp16 d (its nibble k from uint16 k); w = d·(2s + 1) · (grid + shift).
 * (32 + 16 + 8) B / 256 = 1.75 bpw */
typedef struct {
    uint8_t qs[QK_K / 8];
    uint8_t qh[QK_K / 16];
    uint8_t scales[QK_K / 32];
} block_iq1_m;
_Static_assert(sizeof(block_iq1_m) == 56, "block_iq1_m size");

/* IQ1_M: the super-block's fp16 d from the top nibbles of the scales */
static inline es_fp16 es_iq1m_d(const block_iq1_m *b) {
    uint16_t sc[4];
    for (int i = 0; i < 4; i++) sc[i] = (uint16_t)(b->scales[2 * i] | b->scales[2 * i + 1] << 8);
    return (es_fp16)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000));
}

/* TQ1_0: ternary, w = d·(t - 1), t in 0..2, five per byte in base 3 as a
 * fixed-point fraction: t_n = ((uint8_t)(byte·3^n) · 3) >> 8.  qs[0..31]
 * give weights 32n + m (n < 5), qs[32..47] weights 160 + 16n + m, qh[0..3]
 * (four per byte) weights 240 + 4n + j.  (48 + 4 + 2) B / 256 = 1.6875 bpw */
typedef struct {
    uint8_t qs[48];
    uint8_t qh[4];
    es_fp16 d;
} block_tq1_0;
_Static_assert(sizeof(block_tq1_0) == 54, "block_tq1_0 size");

/* TQ2_0: ternary, w = d·(q - 1), q 2 bits; weight 128h + 32l + m is bits
 * 2l..2l+1 of qs[32h + m].  (64 + 2) B / 256 = 2.0625 bpw */
typedef struct {
    uint8_t qs[QK_K / 4];
    es_fp16 d;
} block_tq2_0;
_Static_assert(sizeof(block_tq2_0) == 66, "block_tq2_0 size");

/* IQ4_XS: the 6-bit scale code (0..63, bias 32) of sub-block j (0..7). */
static inline int es_iq4xs_scale(int j, const block_iq4_xs *b) {
    return ((b->scales_l[j / 2] >> (4 * (j % 2))) & 0xF) | ((b->scales_h >> (2 * j)) & 3) << 4;
}

/* Q4_K/Q5_K: the 6-bit scale and min of sub-block j (0..7) from the 12
 * packed bytes: j < 4 in the low 6 bits of bytes j and j+4; j >= 4 split
 * into a nibble of byte j+4 and the top 2 bits of bytes j-4 and j. */
static inline void es_k4_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Q3_K: the 6-bit scale code (0..63, bias 32) of sub-block j (0..15). */
static inline int es_k3_scale(int j, const uint8_t *s) {
    int lo = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
    int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return lo | hi << 4;
}

/* FP8_B128: DeepSeek's FP8 checkpoint layout, read where the checkpoint's
 * shards are mapped.  A matrix of `rows` rows of n weights is two tensors of
 * the checkpoint: q, rows x n e4m3 bytes row-major (1 sign, 4 exponent bits
 * with bias 7, 3 mantissa bits; exponent 0 is subnormal, m/8 * 2^-6), and
 * scale, the float32 `weight_scale_inv` grid of ceil(rows/128) x
 * ceil(n/128) blocks:  w[r][c] = e4m3(q[r*n + c]) * scale[(r/128) *
 * scale_cols + c/128].  8 bpw plus 32 bits per 16384 weights.  The two lie
 * apart, so a weight of this type is not its bytes but this description of
 * them: the kernels take a pointer to an es_fp8_mat where other types take
 * the first row (es_weight.data / a matrix pointer), rows are counted from
 * row 0 of the description, and row_bytes is n.  The bit pattern S.1111.111
 * (NaN in e4m3fn; DeepSeek's checkpoints hold none) reads as +-480 on every
 * path. */
#define ES_FP8_BLOCK 128
typedef struct es_fp8_mat {
    const uint8_t *q;     /* rows x n bytes */
    const float *scale;   /* [ceil(rows/128)][scale_cols] */
    int64_t scale_cols;   /* ceil(n/128) */
} es_fp8_mat;

/* e4m3 -> fp16 bit pattern whose value is the e4m3 value / 256 (exact for
 * every byte: the 4-bit exponent and 3-bit mantissa slide into fp16's
 * fields, subnormals included).  The kernels convert with their fp16
 * instructions and fold the 256 into the block scale. */
static inline uint16_t es_fp8_to_fp16_scaled(uint8_t b) {
    return (uint16_t)(((b & 0x80u) << 8) | ((b & 0x7fu) << 7));
}

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
