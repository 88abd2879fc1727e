/* dispatch.c — chooses the kernel table and routes calls through it.  Until
 * per-ISA tables exist the generic table is the only one; an ISA table
 * leaves slots it does not accelerate NULL and they fall back here. */
#include "kernels.h"

const es_kernels *es_kern(void) { return &es_kernels_generic; }

int es_matvec(uint32_t type, const void *w, size_t row_bytes, int64_t n,
              const float *x, float *y, int64_t r0, int64_t r1) {
    if (type >= ES_TYPE_COUNT) return -1;
    es_matvec_fn f = es_kern()->matvec[type];
    if (!f) f = es_kernels_generic.matvec[type];
    if (!f) return -1;
    f(w, row_bytes, n, x, y, r0, r1);
    return 0;
}

int es_dequant_row(uint32_t type, const void *src, float *dst, int64_t n) {
    if (type >= ES_TYPE_COUNT) return -1;
    es_dequant_fn f = es_kern()->dequant_row[type];
    if (!f) f = es_kernels_generic.dequant_row[type];
    if (!f) return -1;
    f(src, dst, n);
    return 0;
}

int es_quant_row(uint32_t type, const float *src, void *dst, int64_t n) {
    if (type >= ES_TYPE_COUNT) return -1;
    es_quant_fn f = es_kern()->quant_row[type];
    if (!f) f = es_kernels_generic.quant_row[type];
    if (!f) return -1;
    f(src, dst, n);
    return 0;
}
