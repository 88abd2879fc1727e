/* test_kquants.c — the K-quant formats (Q2_K .. Q6_K) and the Q8_K
 * activation format:
 *   - layout: random blocks decoded by es_dequant_row against a decoder
 *     written here from GGUF's layout (the loops of ggml's dequantisers),
 *     value for value;
 *   - quantise→dequantise round trip: RMS error relative to the RMS of
 *     Gaussian data below a bound per format, on awkward shapes, plus edge
 *     blocks (zeros, constants, one-sided, outliers, tiny values);
 *   - Q8_K: step, rounding bound and bsums;
 *   - matvec against dequantise-then-dot in double, on every SIMD path this
 *     CPU runs (a path may multiply with Q8_K activations: its rounding is
 *     part of the bound), one row per call writing only its own y[r].
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "testutil.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void) { /* (0, 1) */
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return ((double)(rng >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static float gauss(void) { return (float)(sqrt(-2 * log(urand())) * cos(2 * M_PI * urand())); }

static const uint32_t ktypes[] = {ES_TYPE_Q2_K, ES_TYPE_Q3_K, ES_TYPE_Q4_K, ES_TYPE_Q5_K, ES_TYPE_Q6_K};
#define N_KTYPES (sizeof ktypes / sizeof ktypes[0])

/* ---- an independent decoder, straight from the layouts ------------------- */

static void ref_q2_K(const block_q2_K *b, float *y) {
    float d = es_fp16_to_f32(b->d), dmin = es_fp16_to_f32(b->dmin);
    int is = 0;
    for (int half = 0; half < 2; half++) {
        const uint8_t *q = b->qs + 32 * half;
        for (int shift = 0; shift < 8; shift += 2)
            for (int part = 0; part < 2; part++) { /* 16 weights per scale byte */
                uint8_t sc = b->scales[is++];
                float dl = d * (float)(sc & 0xF), ml = dmin * (float)(sc >> 4);
                for (int l = 0; l < 16; l++) *y++ = dl * (float)((q[16 * part + l] >> shift) & 3) - ml;
            }
    }
}

static void ref_q3_K(const block_q3_K *b, float *y) {
    float d = es_fp16_to_f32(b->d);
    int8_t sc[16];
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? b->scales[j] & 0xF : b->scales[j - 8] >> 4;
        int hi = (b->scales[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
        sc[j] = (int8_t)((lo | hi << 4) - 32);
    }
    int is = 0;
    uint8_t m = 1;
    for (int half = 0; half < 2; half++) {
        const uint8_t *q = b->qs + 32 * half;
        for (int shift = 0; shift < 8; shift += 2, m <<= 1)
            for (int part = 0; part < 2; part++) {
                float dl = d * (float)sc[is++];
                for (int l = 16 * part; l < 16 * part + 16; l++)
                    *y++ = dl * (float)(((q[l] >> shift) & 3) - ((b->hmask[l] & m) ? 0 : 4));
            }
    }
}

static void ref_k4_scale(const uint8_t *s, int j, float d, float dmin, float *sc, float *mn) {
    int a, c;
    if (j < 4) { a = s[j] & 63; c = s[j + 4] & 63; }
    else { a = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4); c = (s[j + 4] >> 4) | ((s[j] >> 6) << 4); }
    *sc = d * (float)a;
    *mn = dmin * (float)c;
}

/* Q4_K (qh NULL) and Q5_K: per 64 weights two sub-blocks, low nibbles then
 * high nibbles of 32 bytes, the fifth bit from qh */
static void ref_k4(es_fp16 d16, es_fp16 dmin16, const uint8_t *scales, const uint8_t *qs, const uint8_t *qh, float *y) {
    float d = es_fp16_to_f32(d16), dmin = es_fp16_to_f32(dmin16);
    for (int j = 0; j < 4; j++) {
        float d1, m1, d2, m2;
        ref_k4_scale(scales, 2 * j, d, dmin, &d1, &m1);
        ref_k4_scale(scales, 2 * j + 1, d, dmin, &d2, &m2);
        const uint8_t *q = qs + 32 * j;
        for (int l = 0; l < 32; l++) {
            int hi1 = qh && (qh[l] >> (2 * j)) & 1, hi2 = qh && (qh[l] >> (2 * j + 1)) & 1;
            y[64 * j + l] = d1 * (float)((q[l] & 0xF) + 16 * hi1) - m1;
            y[64 * j + 32 + l] = d2 * (float)((q[l] >> 4) + 16 * hi2) - m2;
        }
    }
}

static void ref_q6_K(const block_q6_K *b, float *y) {
    float d = es_fp16_to_f32(b->d);
    for (int half = 0; half < 2; half++) {
        const uint8_t *ql = b->ql + 64 * half, *qh = b->qh + 32 * half;
        const int8_t *sc = b->scales + 8 * half;
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[128 * half + l] = d * (float)sc[is] * (float)q1;
            y[128 * half + l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[128 * half + l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[128 * half + l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
    }
}

static void ref_decode(uint32_t t, const void *blk, float *y) {
    switch (t) {
    case ES_TYPE_Q2_K: ref_q2_K(blk, y); break;
    case ES_TYPE_Q3_K: ref_q3_K(blk, y); break;
    case ES_TYPE_Q4_K: { const block_q4_K *b = blk; ref_k4(b->d, b->dmin, b->scales, b->qs, NULL, y); break; }
    case ES_TYPE_Q5_K: { const block_q5_K *b = blk; ref_k4(b->d, b->dmin, b->scales, b->qs, b->qh, y); break; }
    case ES_TYPE_Q6_K: ref_q6_K(blk, y); break;
    }
}

/* Offsets of the fp16 super-block scales, set to sane values so random
 * bytes decode to finite numbers. */
static void sanitize_scales(uint32_t t, uint8_t *blk) {
    es_fp16 d = es_f32_to_fp16((float)(urand() * 0.01)), dmin = es_f32_to_fp16((float)(urand() * 0.01));
    switch (t) {
    case ES_TYPE_Q2_K: memcpy(blk + 80, &d, 2); memcpy(blk + 82, &dmin, 2); break;
    case ES_TYPE_Q3_K: memcpy(blk + 108, &d, 2); break;
    case ES_TYPE_Q4_K: case ES_TYPE_Q5_K: memcpy(blk, &d, 2); memcpy(blk + 2, &dmin, 2); break;
    case ES_TYPE_Q6_K: memcpy(blk + 208, &d, 2); break;
    }
}

static void test_layout(void) {
    for (size_t ti = 0; ti < N_KTYPES; ti++) {
        uint32_t t = ktypes[ti];
        size_t bs = es_type_info(t)->type_size;
        CHECK(es_type_info(t)->block_size == QK_K && es_type_info(t)->supported, "%s traits", es_type_info(t)->name);
        _Alignas(16) uint8_t blk[4][256];
        float got[4 * QK_K], want[4 * QK_K];
        int bad = 0;
        for (int rep = 0; rep < 50; rep++) {
            for (int b = 0; b < 4; b++) {
                for (size_t i = 0; i < bs; i++) blk[b][i] = (uint8_t)(urand() * 256);
                sanitize_scales(t, blk[b]);
            }
            _Alignas(16) uint8_t packed[4 * 256];
            for (int b = 0; b < 4; b++) memcpy(packed + b * bs, blk[b], bs);
            es_kernels_generic.dequant_row[t](packed, got, 4 * QK_K);
            for (int b = 0; b < 4; b++) ref_decode(t, blk[b], want + b * QK_K);
            for (int i = 0; i < 4 * QK_K; i++) bad += memcmp(&got[i], &want[i], sizeof(float)) != 0;
        }
        CHECK(bad == 0, "%s: %d decoded values differ from the layout's decoder", es_type_info(t)->name, bad);
    }
    /* the packed-scale helpers against hand-made bytes */
    uint8_t s[12] = {0};
    s[1] = 0x80 | 5;       /* scale 1 = 5; top bits of scale 5 = 2 */
    s[5] = 0x40 | 7;       /* min 1 = 7; top bits of min 5 = 1 */
    s[9] = 0x3 | 0x9 << 4; /* scale 5 low nibble 3, min 5 low nibble 9 */
    uint8_t sc, m;
    es_k4_scale_min(1, s, &sc, &m);
    CHECK(sc == 5 && m == 7, "k4 scale/min of sub-block 1: %d %d", sc, m);
    es_k4_scale_min(5, s, &sc, &m);
    CHECK(sc == (3 | 2 << 4) && m == (9 | 1 << 4), "k4 scale/min of sub-block 5: %d %d", sc, m);
    uint8_t s3[12] = {0};
    s3[2] = 0xA0;           /* sub-block 10: low nibble 0xA */
    s3[8 + 2] = 0x3 << 4;   /* sub-block 10 = 8 + 2: high bits at 2*(10/4) = 4 */
    CHECK(es_k3_scale(10, s3) == (0xA | 3 << 4), "k3 scale of sub-block 10: %d", es_k3_scale(10, s3));
}

/* ---- round trip ------------------------------------------------------------ */

/* RMS(x - deq(q(x))) / RMS(x) on unit Gaussian data.  Measured here (generic,
 * 1M values) and with ggml's reference quantisers on the same data:
 *           edgeseek   ggml
 *   Q2_K     0.268     0.297
 *   Q3_K     0.144     0.151
 *   Q4_K     0.0711    0.0714
 *   Q5_K     0.0360    0.0362
 *   Q6_K     0.0173    0.0177
 *   Q8_K     0.0070    0.0070
 * The bounds leave ~5% for the smaller samples here. */
static double rt_bound(uint32_t t) {
    switch (t) {
    case ES_TYPE_Q2_K: return 0.285;
    case ES_TYPE_Q3_K: return 0.152;
    case ES_TYPE_Q4_K: return 0.075;
    case ES_TYPE_Q5_K: return 0.038;
    case ES_TYPE_Q6_K: return 0.0182;
    case ES_TYPE_Q8_K: return 0.0074;
    }
    return 0;
}

static void test_roundtrip(const es_kernels *K) {
    static const int64_t rows_list[] = {1, 3, 7, 33};
    static const int64_t cols_list[] = {256, 512, 768};
    static const uint32_t all[] = {ES_TYPE_Q2_K, ES_TYPE_Q3_K, ES_TYPE_Q4_K, ES_TYPE_Q5_K, ES_TYPE_Q6_K, ES_TYPE_Q8_K};
    for (size_t ti = 0; ti < sizeof all / sizeof all[0]; ti++) {
        uint32_t t = all[ti];
        double err2 = 0, sig2 = 0, worst_row = 0;
        int finite = 1;
        for (size_t ri = 0; ri < sizeof rows_list / sizeof rows_list[0]; ri++)
            for (size_t ci = 0; ci < sizeof cols_list / sizeof cols_list[0]; ci++) {
                int64_t rows = rows_list[ri], n = cols_list[ci];
                size_t rb = es_row_bytes(t, n);
                float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
                uint8_t *q = malloc(rb * (size_t)rows);
                for (int64_t r = 0; r < rows; r++) {
                    for (int64_t i = 0; i < n; i++) x[i] = gauss() * 0.02f; /* weight-like scale */
                    K->quant_row[t](x, q + (size_t)r * rb, n);
                    K->dequant_row[t](q + (size_t)r * rb, y, n);
                    double e = 0, s = 0;
                    for (int64_t i = 0; i < n; i++) {
                        finite &= isfinite(y[i]);
                        e += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
                        s += (double)x[i] * x[i];
                    }
                    err2 += e, sig2 += s;
                    worst_row = fmax(worst_row, sqrt(e / s));
                }
                free(x); free(y); free(q);
            }
        double rel = sqrt(err2 / sig2);
        printf("%-7s %s round-trip RMS error %.4f of RMS (bound %.4f), worst row %.4f\n", K->name,
               es_type_info(t)->name, rel, rt_bound(t), worst_row);
        CHECK(finite, "%s round trip gave non-finite values", es_type_info(t)->name);
        CHECK(rel <= rt_bound(t), "%s round-trip error %.4f > %.4f", es_type_info(t)->name, rel, rt_bound(t));
        /* a single 256-row is a small sample: allow it 1.5x */
        CHECK(worst_row <= 1.5 * rt_bound(t), "%s worst row %.4f", es_type_info(t)->name, worst_row);
    }
}

/* Blocks that stress the scale search: zeros, a constant, one sign only, an
 * outlier among tiny values, values below fp16's range, and huge ones. */
static void test_edge_blocks(const es_kernels *K) {
    static const uint32_t all[] = {ES_TYPE_Q2_K, ES_TYPE_Q3_K, ES_TYPE_Q4_K, ES_TYPE_Q5_K, ES_TYPE_Q6_K, ES_TYPE_Q8_K};
    float x[QK_K], y[QK_K];
    _Alignas(16) uint8_t q[512];
    for (size_t ti = 0; ti < sizeof all / sizeof all[0]; ti++) {
        uint32_t t = all[ti];
        const char *nm = es_type_info(t)->name;
        for (int kind = 0; kind < 7; kind++) {
            for (int i = 0; i < QK_K; i++) {
                switch (kind) {
                case 0: x[i] = 0; break;
                case 1: x[i] = 0.5f; break;
                case 2: x[i] = -(float)urand(); break;
                case 3: x[i] = (float)urand() + 1.0f; break;
                case 4: x[i] = i == 77 ? 100.0f : gauss() * 1e-3f; break;
                case 5: x[i] = gauss() * 1e-9f; break;
                case 6: x[i] = gauss() * 1e4f; break;
                }
            }
            K->quant_row[t](x, q, QK_K);
            K->dequant_row[t](q, y, QK_K);
            double e = 0, s = 0, amax = 0;
            int finite = 1;
            for (int i = 0; i < QK_K; i++) {
                finite &= isfinite(y[i]);
                e += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
                s += (double)x[i] * x[i];
                amax = fmax(amax, fabs(x[i]));
            }
            CHECK(finite, "%s edge block %d: non-finite output", nm, kind);
            if (kind == 0) {
                CHECK(e == 0, "%s zero block does not round-trip to zeros", nm);
            } else if (kind == 5) {
                /* below fp16's smallest scale: at worst flushed to zero */
                CHECK(sqrt(e / s) <= 1.0 + 1e-6, "%s tiny block error %.3g", nm, sqrt(e / s));
            } else {
                /* a constant or one-sided block is easy; the outlier block may
                 * lose the tiny values but must keep the outlier */
                double lim = kind == 4 ? 0.05 * amax : 2.5 * rt_bound(t) * sqrt(s / QK_K);
                CHECK(sqrt(e / QK_K) <= lim, "%s edge block %d: RMS error %.3g > %.3g", nm, kind, sqrt(e / QK_K), lim);
            }
        }
    }
}

static void test_q8_K(const es_kernels *K) {
    float x[2 * QK_K];
    block_q8_K b[2];
    for (int i = 0; i < 2 * QK_K; i++) x[i] = gauss() * (i < QK_K ? 1.0f : 30.0f);
    x[5] = -4.5f; /* the largest magnitude, negative */
    K->quant_row[ES_TYPE_Q8_K](x, b, 2 * QK_K);
    int ok_sum = 1, ok_round = 1, ok_range = 1;
    for (int k = 0; k < 2; k++) {
        float amax = 0;
        for (int i = 0; i < QK_K; i++) amax = fmaxf(amax, fabsf(x[k * QK_K + i]));
        CHECK(fabsf(b[k].d - amax / 127) <= 1e-6f * amax, "Q8_K d = amax/127 (%g vs %g)", b[k].d, amax / 127);
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int i = 0; i < 16; i++) s += b[k].qs[16 * j + i];
            ok_sum &= b[k].bsums[j] == s;
        }
        for (int i = 0; i < QK_K; i++) {
            ok_range &= b[k].qs[i] >= -127;
            ok_round &= fabsf(x[k * QK_K + i] - b[k].d * b[k].qs[i]) <= 0.5f * b[k].d * (1 + 1e-5f);
        }
    }
    CHECK(ok_sum, "Q8_K bsums are the sums of 16 quants");
    CHECK(ok_round, "Q8_K rounds to the nearest step");
    CHECK(ok_range, "Q8_K quants in -127..127");
    CHECK(b[0].qs[5] == -127, "Q8_K largest magnitude maps to -127 (got %d)", b[0].qs[5]);
}

/* ---- matvec ------------------------------------------------------------------ */

/* Tolerance per row: fp32 accumulation, 1e-5 of Σ|w·x|, against the dot in
 * double of the dequantised row with the activations as the path sees them:
 * the plain floats, or (a path that multiplies with Q8_K) x quantised to
 * Q8_K and back.  The generic slot is always held to the plain floats.
 * One shape: rows x n weights of type t; returns the worst error as a
 * fraction of its tolerance. */
static double matvec_case(const es_kernels *K, uint32_t t, int64_t rows, int64_t n, int q8k) {
    size_t rb = es_row_bytes(t, n), fl = sizeof(float) * (size_t)n;
    uint8_t *w = malloc(rb * (size_t)rows);
    void *xq8 = malloc(es_row_bytes(ES_TYPE_Q8_K, n)); /* Q8_K holds a float: its own (aligned) buffer */
    float *buf = malloc(4 * fl + 2 * sizeof(float) * (size_t)rows);
    float *x = buf, *xseen = buf + n, *deq = buf + 2 * n, *src = buf + 3 * n;
    float *y = buf + 4 * n, *yg = y + rows;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = 0; i < n; i++) src[i] = gauss();
        es_quant_row(K, t, src, w + (size_t)r * rb, n);
    }
    for (int64_t i = 0; i < n; i++) x[i] = gauss() * (i % 13 == 0 ? 4.0f : 1.0f);
    /* the activations as the path sees them */
    memcpy(xseen, x, fl);
    if (q8k) {
        es_quant_row(K, ES_TYPE_Q8_K, x, xq8, n);
        es_dequant_row(K, ES_TYPE_Q8_K, xq8, xseen, n);
    }
    /* one row per call, last row first: each call writes y[r] only */
    for (int64_t r = 0; r < rows; r++) y[r] = NAN;
    int only_own = 1;
    for (int64_t r = rows - 1; r >= 0; r--) {
        es_matvec(K, t, w, rb, n, x, y, r, r + 1);
        only_own &= !isnan(y[r]) && (r == 0 || isnan(y[r - 1]));
    }
    CHECK(only_own, "%s %s matvec of row r wrote another row", K->name, es_type_info(t)->name);
    es_kernels_generic.matvec[t](w, rb, n, x, yg, 0, rows); /* the reference slot itself */
    double worst = 0;
    for (int64_t r = 0; r < rows; r++) {
        es_dequant_row(K, t, w + (size_t)r * rb, deq, n);
        double exact = 0, seen = 0, mag = 0, mag_seen = 0;
        for (int64_t i = 0; i < n; i++) {
            exact += (double)deq[i] * x[i];
            mag += fabs((double)deq[i] * x[i]);
            seen += (double)deq[i] * xseen[i];
            mag_seen += fabs((double)deq[i] * xseen[i]);
        }
        worst = fmax(worst, fabs(seen - y[r]) / (1e-5 * mag_seen + 1e-30));
        worst = fmax(worst, fabs(exact - yg[r]) / (1e-5 * mag + 1e-30));
    }
    free(w);
    free(xq8);
    free(buf);
    return worst;
}

static void test_matvec(const es_kernels *K) {
    static const int64_t shapes[][2] = {{1, 256}, {2, 512}, {3, 768}, {7, 1280}, {31, 256},
                                        {33, 768}, {1, 1280}, {33, 512}, {7, 256}};
    for (size_t ti = 0; ti < N_KTYPES; ti++) {
        uint32_t t = ktypes[ti];
        es_matvec_plan plan = es_plan_matvec(K, t);
        double worst = 0;
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
            worst = fmax(worst, matvec_case(K, t, shapes[k][0], shapes[k][1], plan.act_type == ES_TYPE_Q8_K));
        printf("%-7s %s matvec (act %s) worst error %.3g of its bound\n", K->name, es_type_info(t)->name,
               es_type_info(plan.act_type)->name, worst);
        CHECK(worst <= 1.0, "%s %s matvec error %.3g x its bound", K->name, es_type_info(t)->name, worst);
    }
}

static void test_path(const es_kernels *K) {
    test_roundtrip(K);
    test_edge_blocks(K);
    test_q8_K(K);
    test_matvec(K);
}

int main(void) {
    test_layout();
    test_each_simd_path(test_path);
    return test_summary();
}
