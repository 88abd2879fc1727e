/* test_fp8.c — the FP8_B128 weight type (simd/quant.h, simd/fp8.h): e4m3
 * bytes with 128x128 float32 block scales read in place.
 *   - every byte's value against a decoder written here from the format
 *     (1 sign, 4 exponent bits with bias 7, 3 mantissa bits, subnormals),
 *     and the row dequantiser against it with the block scales;
 *   - on every SIMD path this CPU runs: the matvec against a float64 dot
 *     of the dequantised weights (bound: 1e-5 of the sum of |w x|), on row
 *     and column counts that are and are not multiples of 128, 16 and 8;
 *   - the path's matmul bit for bit against its matvec per token, and the
 *     matvec on split row ranges bit for bit against the whole range;
 *   - a GGUF tensor of this type is refused (it exists only in memory). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fp8.h"
#include "gguf.h"
#include "kernels.h"
#include "testutil.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}
static float frand(void) { return (float)(rnd() >> 8) / 8388608.0f - 1.0f; }

/* e4m3fn from its definition; the NaN pattern reads as 480 (quant.h) */
static double ref_value(uint8_t b) {
    int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    double v = e ? ldexp(1.0 + m / 8.0, e - 7) : ldexp(m / 8.0, -6);
    return s ? -v : v;
}

static void test_values(void) {
    int bad = 0;
    for (int b = 0; b < 256; b++)
        if ((double)es_fp8_value((uint8_t)b) != ref_value((uint8_t)b)) bad++;
    CHECK(bad == 0, "%d of 256 e4m3 bytes decode wrong", bad);
    CHECK(es_fp8_value(0x7e) == 448.0f && es_fp8_value(0x01) == ldexpf(1, -9) && es_fp8_value(0xb8) == -1.0f,
          "e4m3 landmarks: 448, 2^-9, -1");
}

typedef struct mat {
    es_fp8_mat m;
    uint8_t *q;
    float *s;
    int64_t rows, n;
} mat;

static void make(mat *a, int64_t rows, int64_t n) {
    a->rows = rows, a->n = n;
    int64_t gr = (rows + 127) / 128, gc = (n + 127) / 128;
    a->q = malloc((size_t)(rows * n));
    a->s = malloc(sizeof(float) * (size_t)(gr * gc));
    for (int64_t i = 0; i < rows * n; i++) a->q[i] = (uint8_t)rnd();
    for (int64_t i = 0; i < gr * gc; i++) a->s[i] = ldexpf(1.0f + frand() * 0.5f, -(int)(rnd() % 12));
    a->m = (es_fp8_mat){a->q, a->s, gc};
}

static void test_dequant(void) {
    mat a;
    make(&a, 300, 333);
    float *row = malloc(sizeof(float) * 333);
    int bad = 0;
    for (int64_t r = 0; r < a.rows; r += 37) {
        es_fp8_dequant(&a.m, a.n, r, row);
        for (int64_t c = 0; c < a.n; c++)
            if ((double)row[c] != (double)(float)(ref_value(a.q[r * a.n + c]) * a.s[(r / 128) * 3 + c / 128])) bad++;
    }
    CHECK(bad == 0, "es_fp8_dequant: %d values differ from e4m3 * scale", bad);
    free(row), free(a.q), free(a.s);
}

static void test_path(const es_kernels *K) {
    /* awkward sizes: row counts that leave 1-3 rows past the 4-row passes, a
     * block's partial 16/32-column steps, row blocks of the matmul (64 KiB
     * of weights) cut mid-range, V2-Lite's widest row, rows over 32768 */
    static const int64_t shapes[][2] = {{1, 128}, {130, 7},  {129, 200},  {300, 333},  {64, 1408}, {257, 2048},
                                        {3, 33000}, {7, 160}, {9, 48}, {33, 10944}, {6, 5}, {131, 4095}};
    es_matvec_plan plan = es_plan_matvec(K, ES_TYPE_FP8_B128);
    CHECK(plan.fn && plan.act_type == 0, "%s: FP8_B128 matvec with fp32 activations", K->name);
    if (!plan.fn) return;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int64_t rows = shapes[si][0], n = shapes[si][1], T = 5;
        mat a;
        make(&a, rows, n);
        float *x = malloc(sizeof(float) * (size_t)(n * T));
        for (int64_t i = 0; i < n * T; i++) x[i] = frand();
        float *y = malloc(sizeof(float) * (size_t)rows), *y2 = malloc(sizeof(float) * (size_t)rows);
        float *ym = malloc(sizeof(float) * (size_t)(rows * T));
        float *w = malloc(sizeof(float) * (size_t)n);
        double worst = 0;
        for (int64_t t = 0; t < T; t++) {
            plan.fn(&a.m, (size_t)n, n, x + t * n, y, 0, rows);
            for (int64_t r = 0; r < rows; r++) {
                es_fp8_dequant(&a.m, n, r, w);
                double dot = 0, mag = 0;
                for (int64_t c = 0; c < n; c++) dot += (double)w[c] * x[t * n + c], mag += fabs((double)w[c] * x[t * n + c]);
                double e = fabs(y[r] - dot) / (1e-5 * mag + 1e-30);
                if (e > worst) worst = e;
            }
        }
        CHECK(worst <= 1.0, "%s FP8 %lldx%lld matvec error %.3g x its bound", K->name, (long long)rows, (long long)n,
              worst);
        /* split row ranges */
        plan.fn(&a.m, (size_t)n, n, x, y, 0, rows);
        int64_t cut = rows / 3;
        plan.fn(&a.m, (size_t)n, n, x, y2, 0, cut);
        plan.fn(&a.m, (size_t)n, n, x, y2, cut, rows);
        CHECK(memcmp(y, y2, sizeof(float) * (size_t)rows) == 0, "%s FP8 %lldx%lld matvec depends on the row range",
              K->name, (long long)rows, (long long)n);
        /* matmul against matvec */
        if (K->matmul[ES_TYPE_FP8_B128]) {
            K->matmul[ES_TYPE_FP8_B128](&a.m, (size_t)n, n, x, sizeof(float) * (size_t)n, T, ym, rows, 1, rows);
            int same = 1;
            for (int64_t t = 0; t < T; t++) {
                plan.fn(&a.m, (size_t)n, n, x + t * n, y, 1, rows);
                same &= memcmp(y + 1, ym + t * rows + 1, sizeof(float) * (size_t)(rows - 1)) == 0;
            }
            CHECK(same, "%s FP8 %lldx%lld matmul differs from matvec", K->name, (long long)rows, (long long)n);
        }
        free(x), free(y), free(y2), free(ym), free(w), free(a.q), free(a.s);
    }
}

/* a GGUF whose one tensor claims FP8_B128 */
static void test_gguf_refuses(void) {
    uint8_t buf[256] = {0};
    size_t o = 0;
#define PUT(v, k) (memcpy(buf + o, &(v), k), o += k)
    uint32_t u32;
    uint64_t u64;
    memcpy(buf, "GGUF", 4), o = 4;
    u32 = 3, PUT(u32, 4);
    u64 = 1, PUT(u64, 8); /* tensors */
    u64 = 0, PUT(u64, 8); /* kv */
    u64 = 1, PUT(u64, 8);
    buf[o++] = 'w';
    u32 = 1, PUT(u32, 4);
    u64 = 32, PUT(u64, 8);
    u32 = ES_TYPE_FP8_B128, PUT(u32, 4);
    u64 = 0, PUT(u64, 8);
#undef PUT
    es_gguf_ctx *g = NULL;
    char err[256] = "";
    int rc = es_gguf_parse_buffer(buf, 128, &g, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "'w'"), "a GGUF tensor of type FP8_B128 is refused (%s)", rc ? err : "accepted");
    if (rc == 0) es_gguf_close(g);
}

int main(void) {
    test_values();
    test_dequant();
    test_each_simd_path(test_path);
    test_gguf_refuses();
    return test_summary();
}
