/* generic_fp8.c — the scalar reference for FP8_B128 (quant.h, fp8.h): the
 * e4m3 value of a byte, a dequantised row, and the matvec every SIMD path is
 * measured against. */
#include "fp8.h"

#include "quant.h"

float es_fp8_value(uint8_t b) { return es_fp16_to_f32(es_fp8_to_fp16_scaled(b)) * 256.0f; }

void es_fp8_dequant(const es_fp8_mat *w, int64_t n, int64_t r, float *dst) {
    const uint8_t *q = es_fp8_row(w, n, r);
    const float *sc = es_fp8_row_scales(w, r);
    for (int64_t c = 0; c < n; c++) dst[c] = es_fp8_value(q[c]) * sc[c / ES_FP8_BLOCK];
}

/* y[r] = sum over blocks of (sum of e4m3 * x in the block) * scale */
void es_fp8_matvec_generic(const void *w, size_t row_bytes, int64_t n, const void *act, float *y, int64_t r0,
                           int64_t r1) {
    (void)row_bytes;
    const es_fp8_mat *m = w;
    const float *x = act;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *q = es_fp8_row(m, n, r);
        const float *sc = es_fp8_row_scales(m, r);
        float sum = 0;
        for (int64_t c0 = 0, b = 0; c0 < n; c0 += ES_FP8_BLOCK, b++) {
            int64_t c1 = c0 + ES_FP8_BLOCK < n ? c0 + ES_FP8_BLOCK : n;
            float part = 0;
            for (int64_t c = c0; c < c1; c++) part += es_fp8_value(q[c]) * x[c];
            sum += part * sc[b];
        }
        y[r] = sum;
    }
}
