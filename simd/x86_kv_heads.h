/* x86_kv_heads.h — the loops of the several-heads cache kernels
 * (es_kernels.dot_kv_heads / axpy_kv_heads) shared by x86_avx2.c and
 * x86_avx512.c: rows in order, heads KVH_HB at a time, each pass a
 * specialisation for its head count (so the accumulators stay in
 * registers), and the row blocks of the sums.  The including file defines
 * first: enum float_fmt (FMT_F32, FMT_F16, FMT_BF16), KVH_HB (heads per
 * pass, at most 8), KVH_W (floats per vector) and the two steps, always
 * inline:
 *   kvh_dot_row(f, GN, q, qs, x, n, att, as): att[k * as] = q_k . x over n
 *     values for k < GN, as the ISA's one-head dot computes it;
 *   kvh_axpy_strip(f, GN, u, us, p, ps, rows, rb, r0, r1, i, w): for rows
 *     r0..r1 in order, u_k[i..i+w) += p[k * ps + r] * row r, as the ISA's
 *     one-head axpy computes it (w <= KVH_W values; fewer only at the end).
 * So each value is bit-identical to the one-head kernels, whatever G is. */
#ifndef ES_X86_KV_HEADS_H
#define ES_X86_KV_HEADS_H

/* rows in blocks that stay in L2 while every strip of them is added */
#define KVH_ROWS 64

static inline __attribute__((always_inline)) void kvh_dot(enum float_fmt f, const float *q, int64_t qs, int G,
                                                          const void *rows, size_t rb, int64_t nrows, int64_t n,
                                                          float *att, int64_t as) {
    for (int64_t r = 0; r < nrows; r++) {
        const void *x = (const uint8_t *)rows + (size_t)r * rb;
        for (int g0 = 0; g0 < G; g0 += KVH_HB) {
            const float *qg = q + g0 * qs;
            float *ag = att + g0 * as + r;
            switch (G - g0 < KVH_HB ? G - g0 : KVH_HB) {
            case 1: kvh_dot_row(f, 1, qg, qs, x, n, ag, as); break;
            case 2: kvh_dot_row(f, 2, qg, qs, x, n, ag, as); break;
            case 3: kvh_dot_row(f, 3, qg, qs, x, n, ag, as); break;
#if KVH_HB > 4
            case 4: kvh_dot_row(f, 4, qg, qs, x, n, ag, as); break;
            case 5: kvh_dot_row(f, 5, qg, qs, x, n, ag, as); break;
            case 6: kvh_dot_row(f, 6, qg, qs, x, n, ag, as); break;
            case 7: kvh_dot_row(f, 7, qg, qs, x, n, ag, as); break;
#endif
            default: kvh_dot_row(f, KVH_HB, qg, qs, x, n, ag, as); break;
            }
        }
    }
}

static inline __attribute__((always_inline)) void kvh_axpy(enum float_fmt f, float *u, int64_t us, int G,
                                                           const float *p, int64_t ps, const void *rows, size_t rb,
                                                           int64_t nrows, int64_t n) {
    const uint8_t *rw = rows;
    for (int64_t r0 = 0; r0 < nrows; r0 += KVH_ROWS) {
        const int64_t r1 = nrows - r0 < KVH_ROWS ? nrows : r0 + KVH_ROWS;
        for (int64_t i = 0; i < n; i += KVH_W) {
            const int w = n - i < KVH_W ? (int)(n - i) : KVH_W;
            for (int g0 = 0; g0 < G; g0 += KVH_HB) {
                float *ug = u + g0 * us;
                const float *pg = p + g0 * ps;
                switch (G - g0 < KVH_HB ? G - g0 : KVH_HB) {
                case 1: kvh_axpy_strip(f, 1, ug, us, pg, ps, rw, rb, r0, r1, i, w); break;
                case 2: kvh_axpy_strip(f, 2, ug, us, pg, ps, rw, rb, r0, r1, i, w); break;
                case 3: kvh_axpy_strip(f, 3, ug, us, pg, ps, rw, rb, r0, r1, i, w); break;
#if KVH_HB > 4
                case 4: kvh_axpy_strip(f, 4, ug, us, pg, ps, rw, rb, r0, r1, i, w); break;
                case 5: kvh_axpy_strip(f, 5, ug, us, pg, ps, rw, rb, r0, r1, i, w); break;
                case 6: kvh_axpy_strip(f, 6, ug, us, pg, ps, rw, rb, r0, r1, i, w); break;
                case 7: kvh_axpy_strip(f, 7, ug, us, pg, ps, rw, rb, r0, r1, i, w); break;
#endif
                default: kvh_axpy_strip(f, KVH_HB, ug, us, pg, ps, rw, rb, r0, r1, i, w); break;
                }
            }
        }
    }
}

/* the table entries, one pair per row format */
#define KVH_FNS(name, fmt)                                                                                        \
    static void dot_heads_##name(const float *q, int64_t qs, int G, const void *rows, size_t rb, int64_t nrows,  \
                                 int64_t n, float *att, int64_t as) {                                            \
        kvh_dot(fmt, q, qs, G, rows, rb, nrows, n, att, as);                                                     \
    }                                                                                                            \
    static void axpy_heads_##name(float *u, int64_t us, int G, const float *p, int64_t ps, const void *rows,     \
                                  size_t rb, int64_t nrows, int64_t n) {                                         \
        kvh_axpy(fmt, u, us, G, p, ps, rows, rb, nrows, n);                                                      \
    }
KVH_FNS(f32, FMT_F32)
KVH_FNS(f16, FMT_F16)
KVH_FNS(bf16, FMT_BF16)
#undef KVH_FNS

#endif
