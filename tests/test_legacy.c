/* test_legacy.c — the formats that llama.cpp's mixes fall back to where a
 * K-quant cannot hold a row: Q4_1, Q5_0, Q5_1, IQ4_NL and IQ4_XS.
 *   - layout: hand-made blocks whose values are worked out below from the
 *     format's definition, and random blocks against a decoder written here
 *     (bit for bit against es_dequant_row);
 *   - quantise→dequantise: per-value bounds argued per format, all-zero and
 *     constant blocks, and the RMS error on Gaussian data;
 *   - IQ4_XS matvec (Q8_K activations on the SIMD paths) against a double
 *     dot on every path this CPU runs (the 32-weight formats are in
 *     test_kernels.c's lists, with their Q8_0 bound).
 * Layout facts relied on (ggml's ggml-common.h block definitions):
 *   - Q4_1 {d, m, qs[16]}: w = d·q + m; Q5_1 {d, m, qh[4], qs[16]} and
 *     Q5_0 {d, qh[4], qs[16]}: w = d·q + m and d·(q - 16);
 *   - nibbles: qs[j] low nibble is weight j, high nibble weight j + 16;
 *   - Q5's fifth bit of weight j is bit j of qh read as a little-endian
 *     uint32 (bit j % 8 of qh[j / 8]);
 *   - IQ4_NL {d, qs[16]}: w = d·T[q], T the 16 values below;
 *   - IQ4_XS {d, scales_h, scales_l[4], qs[128]}: sub-block j of 32 has the
 *     6-bit scale (scales_l[j/2] >> 4(j%2) & 15) | (scales_h >> 2j & 3) << 4,
 *     w = d·(scale - 32)·T[q], its quants qs[16j..16j+15] as IQ4_NL's.
 * Vectors made by ggml itself (a gguf written by llama-quantize) are still
 * to be added to tests/data. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "testutil.h"

static const int T[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static uint64_t rng = 0x2545f4914f6cdd1dull;
static double urand(void) { /* (0, 1) */
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return ((double)(rng >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static float gauss(void) { return (float)(sqrt(-2 * log(urand())) * cos(2 * M_PI * urand())); }

static const uint32_t ltypes[] = {ES_TYPE_Q4_1, ES_TYPE_Q5_0, ES_TYPE_Q5_1, ES_TYPE_IQ4_NL, ES_TYPE_IQ4_XS};
#define N_LTYPES (sizeof ltypes / sizeof ltypes[0])

static float h(uint16_t bits) { return es_fp16_to_f32(bits); }

/* ---- hand-made blocks --------------------------------------------------------- */

static int same(const float *got, const float *want, int n) {
    for (int i = 0; i < n; i++)
        if (got[i] != want[i]) {
            printf("  value %d: %g, want %g\n", i, got[i], want[i]);
            return 0;
        }
    return 1;
}

static void test_hand_blocks(void) {
    float got[256], want[256];
    /* Q4_1: d = 0.5, m = -1; qs[j] = j | (15 - j) << 4 */
    uint8_t q41[20] = {0x00, 0x38, 0x00, 0xbc};
    for (int j = 0; j < 16; j++) q41[4 + j] = (uint8_t)(j | (15 - j) << 4);
    for (int j = 0; j < 16; j++) want[j] = 0.5f * (float)j - 1, want[16 + j] = 0.5f * (float)(15 - j) - 1;
    es_kernels_generic.dequant_row[ES_TYPE_Q4_1](q41, got, 32);
    CHECK(same(got, want, 32), "Q4_1 hand block");

    /* Q5_0: d = 2; qh bits 0, 15 and 31; every qs byte 0x53 (low 3, high
     * 5): weights 0 and 15 are 3 + 16 -> 2·3, the other low ones 3 -> 2·-13;
     * weight 31 is 5 + 16 -> 2·5, the other high ones 5 -> 2·-11 */
    uint8_t q50[22] = {0x00, 0x40, 0x01, 0x80, 0x00, 0x80};
    memset(q50 + 6, 0x53, 16);
    for (int j = 0; j < 16; j++) want[j] = -26, want[16 + j] = -22;
    want[0] = want[15] = 6;
    want[31] = 10;
    es_kernels_generic.dequant_row[ES_TYPE_Q5_0](q50, got, 32);
    CHECK(same(got, want, 32), "Q5_0 hand block (qh bit order)");

    /* Q5_1: d = 0.25, m = 1; qh bit 16 (byte 2, bit 0); qs[0] = 0xF0 and
     * the rest 0: weight 0 -> 1, weight 16 = 15 + 16 -> 0.25·31 + 1 */
    uint8_t q51[24] = {0x00, 0x34, 0x00, 0x3c, 0x00, 0x00, 0x01, 0x00, 0xF0};
    for (int j = 0; j < 32; j++) want[j] = 1;
    want[16] = 8.75f;
    es_kernels_generic.dequant_row[ES_TYPE_Q5_1](q51, got, 32);
    CHECK(same(got, want, 32), "Q5_1 hand block (min term, fifth bit of weight 16)");

    /* IQ4_NL: d = 1, qs[j] = j | (15 - j) << 4: the table forwards, then backwards */
    uint8_t nl[18] = {0x00, 0x3c};
    for (int j = 0; j < 16; j++) nl[2 + j] = (uint8_t)(j | (15 - j) << 4);
    for (int j = 0; j < 16; j++) want[j] = (float)T[j], want[16 + j] = (float)T[15 - j];
    es_kernels_generic.dequant_row[ES_TYPE_IQ4_NL](nl, got, 32);
    CHECK(same(got, want, 32), "IQ4_NL hand block (the table)");
    for (int j = 0; j < 16; j++) CHECK(es_iq4nl_values[j] == T[j], "IQ4_NL table value %d", j);

    /* IQ4_XS: d = 0.5; sub-block 3's scale 42 (scale - 32 = 10): low nibble
     * 0xA in the high half of scales_l[1], high bits 2 at bits 6..7 of
     * scales_h; every other sub-block 32 (-> 0): high bits 2 at bits 2j.
     * qs[48] = 0x0F: weight 96 = 0.5·10·T[15], weight 112 = 0.5·10·T[0]. */
    block_iq4_xs xs;
    memset(&xs, 0, sizeof xs);
    xs.d = 0x3800;
    xs.scales_h = 0xAAAA;
    xs.scales_l[1] = 0xA0;
    xs.qs[48] = 0x0F;
    for (int i = 0; i < 256; i++) want[i] = 0;
    for (int i = 96; i < 128; i++) want[i] = 5.0f * (float)T[0]; /* index 0 everywhere else */
    want[96] = 5.0f * 113, want[112] = 5.0f * -127;
    es_kernels_generic.dequant_row[ES_TYPE_IQ4_XS](&xs, got, 256);
    CHECK(same(got, want, 256), "IQ4_XS hand block (scale bits, sub-block order)");
    CHECK(es_iq4xs_scale(3, &xs) == 42 && es_iq4xs_scale(0, &xs) == 32, "IQ4_XS scale helper");
}

/* ---- random blocks against a decoder written from the layout ---------------- */

static int nib(const uint8_t *qs, int j) { return j < 16 ? qs[j] & 15 : qs[j - 16] >> 4; }
static int bit5(const uint8_t *qh, int j) {
    uint32_t v = (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
    return (int)((v >> j) & 1);
}

static void ref_decode(uint32_t t, const uint8_t *b, float *y) {
    es_fp16 d16, m16;
    memcpy(&d16, b, 2);
    memcpy(&m16, b + 2, 2);
    float d = h(d16), m = h(m16);
    switch (t) {
    case ES_TYPE_Q4_1:
        for (int j = 0; j < 32; j++) y[j] = (float)nib(b + 4, j) * d + m;
        break;
    case ES_TYPE_Q5_0:
        for (int j = 0; j < 32; j++) y[j] = (float)(nib(b + 6, j) + 16 * bit5(b + 2, j) - 16) * d;
        break;
    case ES_TYPE_Q5_1:
        for (int j = 0; j < 32; j++) y[j] = (float)(nib(b + 8, j) + 16 * bit5(b + 4, j)) * d + m;
        break;
    case ES_TYPE_IQ4_NL:
        for (int j = 0; j < 32; j++) y[j] = d * (float)T[nib(b + 2, j)];
        break;
    case ES_TYPE_IQ4_XS: {
        uint16_t sh = (uint16_t)(b[2] | b[3] << 8);
        for (int s = 0; s < 8; s++) {
            int ls = ((b[4 + s / 2] >> (4 * (s % 2))) & 15) | ((sh >> (2 * s)) & 3) << 4;
            float dl = d * (float)(ls - 32);
            for (int j = 0; j < 32; j++) y[32 * s + j] = dl * (float)T[nib(b + 8 + 16 * s, j)];
        }
        break;
    }
    }
}

static void test_random_blocks(void) {
    for (size_t ti = 0; ti < N_LTYPES; ti++) {
        uint32_t t = ltypes[ti];
        const es_type_traits *tr = es_type_info(t);
        CHECK(tr->supported && es_row_bytes(t, tr->block_size) == tr->type_size, "%s traits", tr->name);
        int bs = (int)tr->type_size, nb = 8, n = (int)tr->block_size;
        uint8_t *blk = malloc((size_t)(bs * nb));
        float *got = malloc(sizeof(float) * (size_t)(n * nb)), *want = malloc(sizeof(float) * (size_t)(n * nb));
        int bad = 0;
        for (int rep = 0; rep < 40; rep++) {
            for (int i = 0; i < bs * nb; i++) blk[i] = (uint8_t)(urand() * 256);
            for (int b = 0; b < nb; b++) { /* finite fp16 scales (and mins) */
                es_fp16 d = es_f32_to_fp16((float)(urand() - 0.5)), m = es_f32_to_fp16((float)(urand() - 0.5));
                memcpy(blk + b * bs, &d, 2);
                if (t == ES_TYPE_Q4_1 || t == ES_TYPE_Q5_1) memcpy(blk + b * bs + 2, &m, 2);
            }
            es_kernels_generic.dequant_row[t](blk, got, (int64_t)n * nb);
            for (int b = 0; b < nb; b++) ref_decode(t, blk + b * bs, want + b * n);
            for (int i = 0; i < n * nb; i++) bad += memcmp(&got[i], &want[i], sizeof(float)) != 0;
        }
        CHECK(bad == 0, "%s: %d decoded values differ from the layout's decoder", tr->name, bad);
        free(blk); free(got); free(want);
    }
}

/* ---- round trip ------------------------------------------------------------------ */

/* The bound of each value x of a block (lo..hi its range, amax its largest
 * magnitude), with u = 2^-11 the fp16 rounding of the stored scales:
 *   Q4_1/Q5_1 (nmax 15/31): d = (hi - lo)/nmax and m = lo, rounded to
 *     nearest against the stored d, m: half a step, d/2·(1 + u), plus the
 *     shift of the stored m (|lo|·u) and, at the top, the clamp after d
 *     rounded down (nmax·d·u): (hi - lo)·(1/(2 nmax) + 2u) + |lo|·u;
 *   Q5_0: as Q4_0, a whole step amax/16 at the end opposite the largest
 *     value (+16 clamps to +15), half a step elsewhere: amax·(1/16 + 2u);
 *   IQ4_NL and IQ4_XS: against the stored scale s (d, or d·(ls - 32)) each
 *     value is the table's nearest: within half the widest gap (24/2 = 12
 *     steps, between 89 and 113) inside the table's span, else off its end
 *     (|x| - 113|s| at worst); that is max(12|s|, |x| - 113|s|).  That a
 *     good s is chosen is the RMS check below. */
static double value_bound(uint32_t t, const float *x, const float *s, int j) {
    const double u = 1.0 / 2048;
    float lo = x[0], hi = x[0], amax = 0;
    for (int i = 0; i < 32; i++) lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]), amax = fmaxf(amax, fabsf(x[i]));
    switch (t) {
    case ES_TYPE_Q4_1: return (hi - lo) * (1.0 / 30 + 2 * u) + fabs(lo) * u;
    case ES_TYPE_Q5_1: return (hi - lo) * (1.0 / 62 + 2 * u) + fabs(lo) * u;
    case ES_TYPE_Q5_0: return amax * (1.0 / 16 + 2 * u);
    default: return fmax(12 * fabs(*s), fabs(x[j]) - 113 * fabs(*s)) * (1 + 1e-6);
    }
}

/* the stored scale of the 32 values at block offset `at` (IQ formats) */
static float iq_scale(uint32_t t, const uint8_t *q, int64_t at) {
    if (t == ES_TYPE_IQ4_NL) return h(((const block_iq4_nl *)q)[at / 32].d);
    const block_iq4_xs *b = (const block_iq4_xs *)q + at / 256;
    return h(b->d) * (float)(es_iq4xs_scale((int)(at % 256) / 32, b) - 32);
}

/* RMS(x - deq(q(x))) / RMS(x) on unit Gaussian data with the edge blocks
 * below, measured here (2^16 values): Q4_1 0.0789, Q5_0 0.0443, Q5_1
 * 0.0378, IQ4_NL 0.0756, IQ4_XS 0.0759; bounds ~5% above.  IQ4's scale
 * search is also held to the plain scale amax/127 it starts from: per
 * IQ4_NL block its squared error is at most that scale's with nearest
 * rounding (the least-squares d is a stationary point, so its fp16
 * rounding adds only second-order terms: slack 2^-9 relative plus 1e-6 of
 * the block's Σx²). */
static double rms_bound(uint32_t t) {
    switch (t) {
    case ES_TYPE_Q4_1: return 0.083;
    case ES_TYPE_Q5_0: return 0.0466;
    case ES_TYPE_Q5_1: return 0.040;
    case ES_TYPE_IQ4_NL: return 0.080;
    default: return 0.080;
    }
}

static double plain_iq4_err2(const float *x) {
    float amax = 0, vmax = 0;
    for (int i = 0; i < 32; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), vmax = x[i];
    double s = vmax / -127.0, e2 = 0;
    for (int i = 0; i < 32; i++) {
        double best = INFINITY;
        for (int k = 0; k < 16; k++) { /* (an fmin reduction here crashes aarch64 GCC 12's vectoriser) */
            double e = fabs(x[i] - s * T[k]);
            if (e < best) best = e;
        }
        e2 += best * best;
    }
    return e2;
}

static void test_roundtrip(void) {
    const int64_t n = 1 << 16;
    float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
    uint8_t *q = malloc((size_t)n);
    for (size_t ti = 0; ti < N_LTYPES; ti++) {
        uint32_t t = ltypes[ti];
        const char *nm = es_type_info(t)->name;
        for (int64_t i = 0; i < n; i++) x[i] = gauss();
        /* edge blocks: zeros, a constant, one-sided, an outlier, small values
         * (scales still normal fp16 numbers, as the bounds assume) */
        for (int i = 0; i < 256; i++) x[i] = 0;
        for (int i = 256; i < 288; i++) x[i] = -0.75f;
        for (int i = 288; i < 320; i++) x[i] = fabsf(x[i]) + 3;
        x[333] = 40;
        for (int i = 512; i < 768; i++) x[i] *= 1e-3f;
        es_kernels_generic.quant_row[t](x, q, n);
        es_kernels_generic.dequant_row[t](q, y, n);
        double e2 = 0, s2 = 0, worst = 0;
        int zero_ok = 1, plain_ok = 1;
        for (int64_t b = 0; b < n / 32; b++) {
            const float *xb = x + 32 * b, *yb = y + 32 * b;
            float s = t == ES_TYPE_IQ4_NL || t == ES_TYPE_IQ4_XS ? iq_scale(t, q, 32 * b) : 0;
            double be2 = 0;
            for (int j = 0; j < 32; j++) {
                double e = fabs((double)xb[j] - yb[j]);
                double bound = value_bound(t, xb, &s, j) + 1e-30;
                worst = fmax(worst, e / bound);
                be2 += e * e;
                s2 += (double)xb[j] * xb[j];
            }
            e2 += be2;
            if (b < 8) for (int j = 0; j < 32; j++) zero_ok &= yb[j] == 0;
            double bs2 = 0;
            for (int j = 0; j < 32; j++) bs2 += (double)xb[j] * xb[j];
            if (t == ES_TYPE_IQ4_NL && !(be2 <= plain_iq4_err2(xb) * (1 + 1.0 / 512) + 1e-6 * bs2 + 1e-30))
                plain_ok = 0;
        }
        double rms = sqrt(e2 / s2);
        printf("%-6s round trip: worst value %.3g of its bound, RMS error %.4f of RMS (bound %.4f)\n", nm, worst, rms,
               rms_bound(t));
        CHECK(worst <= 1.0, "%s round-trip value error %.3g x its bound", nm, worst);
        CHECK(rms <= rms_bound(t), "%s round-trip RMS %.4f > %.4f", nm, rms, rms_bound(t));
        CHECK(zero_ok, "%s: all-zero blocks decode to zero", nm);
        CHECK(plain_ok, "%s: a block's fit is worse than the plain scale amax/127", nm);
    }
    free(x); free(y); free(q);
}

/* ---- IQ4_XS matvec on every path ------------------------------------------------- */

/* Bound per row: 1e-5 of Σ|w·x| (fp32 summation) plus, for Q8_K
 * activations, their rounding: each x off by at most d/2, d = amax/127 of
 * its 256 (d is fp32): Σ_blocks d_b/2 · Σ_block |w|. */
static void test_matvec_iq4_xs(void) {
    static const char *paths[] = {"generic", "avx2", "avx512", "neon"};
    static const int64_t rows_list[] = {1, 3, 5, 8, 33};
    static const int64_t cols_list[] = {256, 512, 1280};
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        if (!es_simd_supported(paths[p])) {
            SKIP("IQ4_XS matvec on %s: not available on this CPU/build", paths[p]);
            continue;
        }
        const es_kernels *K = es_kernels_for(paths[p], NULL, 0);
        uint32_t at = es_plan_matvec(K, ES_TYPE_IQ4_XS).act_type;
        double worst = 0;
        for (size_t ri = 0; ri < sizeof rows_list / sizeof rows_list[0]; ri++)
            for (size_t ci = 0; ci < sizeof cols_list / sizeof cols_list[0]; ci++) {
                int64_t rows = rows_list[ri], n = cols_list[ci];
                size_t rb = es_row_bytes(ES_TYPE_IQ4_XS, n);
                uint8_t *w = malloc(rb * (size_t)rows);
                float *x = malloc(sizeof(float) * (size_t)n), *deq = malloc(sizeof(float) * (size_t)n);
                float *y = malloc(sizeof(float) * (size_t)rows);
                for (int64_t r = 0; r < rows; r++) {
                    for (int64_t i = 0; i < n; i++) deq[i] = gauss();
                    es_quant_row(K, ES_TYPE_IQ4_XS, deq, w + (size_t)r * rb, n);
                }
                for (int64_t i = 0; i < n; i++) x[i] = gauss() * (i % 13 == 0 ? 4.0f : 1.0f);
                int64_t a = rows / 2;
                es_matvec(K, ES_TYPE_IQ4_XS, w, rb, n, x, y, a, rows);
                es_matvec(K, ES_TYPE_IQ4_XS, w, rb, n, x, y, 0, a);
                for (int64_t r = 0; r < rows; r++) {
                    es_dequant_row(K, ES_TYPE_IQ4_XS, w + (size_t)r * rb, deq, n);
                    double ref = 0, mag = 0, qb = 0;
                    for (int64_t b = 0; b < n / 256; b++) {
                        double amax = 0, ws = 0;
                        for (int64_t i = 256 * b; i < 256 * (b + 1); i++) {
                            ref += (double)deq[i] * x[i];
                            mag += fabs((double)deq[i] * x[i]);
                            amax = fmax(amax, fabs(x[i]));
                            ws += fabs(deq[i]);
                        }
                        qb += amax / 127 / 2 * ws;
                    }
                    double e = fabs(ref - y[r]) / (1e-5 * mag + (at == ES_TYPE_Q8_K ? qb : 0) + 1e-30);
                    if (!(e <= worst)) worst = e;
                }
                free(w); free(x); free(deq); free(y);
            }
        printf("%-7s IQ4_XS matvec (act %s) worst error %.3g of its bound\n", paths[p], es_type_info(at)->name, worst);
        CHECK(worst <= 1.0, "%s IQ4_XS matvec error %.3g x its bound", paths[p], worst);
    }
}

int main(void) {
    test_hand_blocks();
    test_random_blocks();
    test_roundtrip();
    test_matvec_iq4_xs();
    return test_summary();
}
