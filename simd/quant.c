/* quant.c — type traits for every ggml type id, the IQ4_NL value table and
 * the scalar float conversions (fp16, bf16) that every kernel file shares. */
#include "quant.h"

#include <string.h>

#define T(id, nm, bs, ts, sup) [id] = {nm, bs, ts, sup}
static const es_type_traits traits[ES_TYPE_COUNT] = {
    T(ES_TYPE_F32, "F32", 1, 4, 1),        T(ES_TYPE_F16, "F16", 1, 2, 1),
    T(ES_TYPE_Q4_0, "Q4_0", 32, 18, 1),    T(ES_TYPE_Q4_1, "Q4_1", 32, 20, 1),
    T(ES_TYPE_Q5_0, "Q5_0", 32, 22, 1),    T(ES_TYPE_Q5_1, "Q5_1", 32, 24, 1),
    T(ES_TYPE_Q8_0, "Q8_0", 32, 34, 1),    T(ES_TYPE_Q8_1, "Q8_1", 32, 36, 0),
    T(ES_TYPE_Q2_K, "Q2_K", 256, 84, 1),   T(ES_TYPE_Q3_K, "Q3_K", 256, 110, 1),
    T(ES_TYPE_Q4_K, "Q4_K", 256, 144, 1),  T(ES_TYPE_Q5_K, "Q5_K", 256, 176, 1),
    T(ES_TYPE_Q6_K, "Q6_K", 256, 210, 1),  T(ES_TYPE_Q8_K, "Q8_K", 256, 292, 0), /* activations only */
    T(ES_TYPE_IQ2_XXS, "IQ2_XXS", 256, 66, 1), T(ES_TYPE_IQ2_XS, "IQ2_XS", 256, 74, 1),
    T(ES_TYPE_IQ3_XXS, "IQ3_XXS", 256, 98, 1), T(ES_TYPE_IQ1_S, "IQ1_S", 256, 50, 1),
    T(ES_TYPE_IQ4_NL, "IQ4_NL", 32, 18, 1), T(ES_TYPE_IQ3_S, "IQ3_S", 256, 110, 1),
    T(ES_TYPE_IQ2_S, "IQ2_S", 256, 82, 1), T(ES_TYPE_IQ4_XS, "IQ4_XS", 256, 136, 1),
    T(ES_TYPE_I8, "I8", 1, 1, 0),          T(ES_TYPE_I16, "I16", 1, 2, 0),
    T(ES_TYPE_I32, "I32", 1, 4, 0),        T(ES_TYPE_I64, "I64", 1, 8, 0),
    T(ES_TYPE_F64, "F64", 1, 8, 0),        T(ES_TYPE_IQ1_M, "IQ1_M", 256, 56, 1),
    T(ES_TYPE_BF16, "BF16", 1, 2, 1),      T(ES_TYPE_TQ1_0, "TQ1_0", 256, 54, 1),
    T(ES_TYPE_TQ2_0, "TQ2_0", 256, 66, 1), T(ES_TYPE_MXFP4, "MXFP4", 32, 17, 0),
    T(ES_TYPE_FP8_B128, "FP8_B128", 1, 1, 1), /* in memory only: quant.h */
};
#undef T

const int8_t es_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

const es_type_traits *es_type_info(uint32_t type) {
    if (type >= ES_TYPE_COUNT || traits[type].block_size == 0) return 0;
    return &traits[type];
}

size_t es_row_bytes(uint32_t type, int64_t n) {
    const es_type_traits *t = es_type_info(type);
    if (!t || n < 0 || n % t->block_size) return 0;
    return (size_t)(n / t->block_size) * t->type_size;
}

float es_fp16_to_f32(es_fp16 h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400));
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | man << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | man << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

es_fp16 es_f32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (es_fp16)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (es_fp16)(sign | 0x7c00);
    if (absx < 0x38800000u) { /* below the smallest normal half: subnormal */
        if (absx < 0x33000000u) return (es_fp16)sign; /* < half the smallest subnormal */
        uint32_t man = (absx & 0x7fffff) | 0x800000;
        int shift = 126 - (int)(absx >> 23); /* 14..24 */
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (es_fp16)(sign | half);
    }
    uint32_t h = ((absx >> 13) - (112u << 10));
    uint32_t rem = absx & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (es_fp16)(sign | h);
}

float es_bf16_to_f32(es_bf16 h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

es_bf16 es_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (es_bf16)((x >> 16) | 0x40); /* quiet nan */
    x += 0x7fff + ((x >> 16) & 1);
    return (es_bf16)(x >> 16);
}
