/* test_iq_quantize.c — quantising to the IQ codebook and ternary types
 * (format/iq_quant.c) and reading llama.cpp's importance matrix
 * (format/imatrix.c):
 *   - rows: Gaussian rows and a heavy-tailed "real-ish" row (Student-t like,
 *     a few outlier columns) quantised to each type, with and without an
 *     importance vector, decode through the existing decoders (the generic
 *     ones, which test_ggml_vectors holds bit-exact to ggml) within a bound
 *     per type of relative RMSE; with a strongly varying importance, the
 *     importance-weighted error is below the unweighted fit's; zero,
 *     constant and tiny rows give finite, exact-where-possible blocks; the
 *     table of RMSE (README's figures) is printed;
 *   - the imatrix reader: a good file (per-expert entries, zero counts),
 *     the legacy .dat form, a model file, mismatched shapes and types, a
 *     missing .counts, negative and non-finite values, every truncation and
 *     a few hundred random byte changes: an error message each, never a
 *     crash (run it under `make asan-test` too).
 * Whole models in these types are test_iq_quantize_models.c's.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf_writer.h"
#include "imatrix.h"
#include "iq_quant.h"
#include "kernels.h"
#include "testutil.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double urand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}
static float gauss(void) { return (float)(sqrt(-2 * log(urand())) * cos(6.283185307179586 * urand())); }

typedef struct tcase {
    uint32_t type;
    double bound; /* relative RMSE of a Gaussian row, unweighted fit */
} tcase;

/* Bounds: ggml's own figures for these types on Gaussian data (README
 * table) plus about 25% headroom. */
static const tcase cases[] = {
    {ES_TYPE_IQ1_S, 0.62}, {ES_TYPE_IQ1_M, 0.55},  {ES_TYPE_IQ2_XXS, 0.40}, {ES_TYPE_IQ2_XS, 0.36},
    {ES_TYPE_IQ2_S, 0.33}, {ES_TYPE_IQ3_XXS, 0.23}, {ES_TYPE_IQ3_S, 0.20},  {ES_TYPE_TQ1_0, 0.55},
    {ES_TYPE_TQ2_0, 0.55},
};

enum { N = 4096, ROWS = 4 };

/* sqrt(sum w (x - y)^2 / sum w x^2) */
static double rel_err(const float *x, const float *y, const float *w, int n) {
    double e = 0, s = 0;
    for (int i = 0; i < n; i++) {
        double wi = w ? w[i] : 1;
        e += wi * (x[i] - y[i]) * (x[i] - y[i]);
        s += wi * (double)x[i] * x[i];
    }
    return s > 0 ? sqrt(e / s) : sqrt(e);
}

/* quantise x, decode into y; returns 0 if every value is finite */
static int round_trip(uint32_t t, const float *x, float *y, int n, const float *imp) {
    size_t rb = es_row_bytes(t, n);
    void *q = malloc(rb);
    if (!q) return -1;
    memset(q, 0xA5, rb);
    es_iq_quant_row(t, x, q, n, imp);
    es_kernels_generic.dequant_row[t](q, y, n);
    free(q);
    for (int i = 0; i < n; i++)
        if (!isfinite(y[i])) return -1;
    return 0;
}

static void test_rows(void) {
    float *x = malloc(sizeof(float) * N * ROWS), *real = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N);
    float *imp = malloc(sizeof(float) * N), *flat = malloc(sizeof(float) * N);
    for (int i = 0; i < N * ROWS; i++) x[i] = gauss();
    /* heavy tails (a scaled ratio of Gaussians, clipped) and a few columns
     * with large values, as trained weights have; the importance of a
     * column log-normal, with a few columns 100x the rest */
    for (int i = 0; i < N; i++) {
        float g = gauss(), h = 0.7f + 0.3f * fabsf(gauss());
        real[i] = 0.02f * g / h * (i % 509 == 7 ? 6.0f : 1.0f);
        imp[i] = expf(1.5f * gauss()) * (i % 97 == 3 ? 100.0f : 1.0f);
        flat[i] = 1;
    }
    printf("type      gauss  gauss+imp  real  real+imp  (relative RMSE; +imp: importance-weighted)\n");
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint32_t t = cases[c].type;
        const char *name = es_type_info(t)->name;
        double e_plain = 0, e_imp = 0, e_imp_plain = 0;
        int ok = 1;
        for (int r = 0; r < ROWS; r++) {
            ok &= round_trip(t, x + r * N, y, N, NULL) == 0;
            e_plain += rel_err(x + r * N, y, NULL, N) / ROWS;
            ok &= round_trip(t, x + r * N, y, N, imp) == 0;
            e_imp += rel_err(x + r * N, y, imp, N) / ROWS;
            ok &= round_trip(t, x + r * N, y, N, flat) == 0;
            e_imp_plain += rel_err(x + r * N, y, imp, N) / ROWS;
        }
        (void)e_imp_plain;
        double er, er_imp;
        ok &= round_trip(t, real, y, N, NULL) == 0;
        er = rel_err(real, y, NULL, N);
        double er_w_plain = rel_err(real, y, imp, N);
        ok &= round_trip(t, real, y, N, imp) == 0;
        er_imp = rel_err(real, y, imp, N);
        printf("%-8s  %.4f  %.4f     %.4f  %.4f\n", name, e_plain, e_imp, er, er_imp);
        CHECK(ok, "%s: decoded values finite", name);
        CHECK(e_plain < cases[c].bound, "%s: Gaussian RMSE %.4f >= %.2f", name, e_plain, cases[c].bound);
        CHECK(er < cases[c].bound * 1.3, "%s: real-ish RMSE %.4f", name, er);
        int weighted = es_iq_quant_needs_imatrix(t);
        if (weighted) /* the importance must move the error to where it is cheap */
            CHECK(er_imp < er_w_plain, "%s: weighted error with importances %.4f, without %.4f", name, er_imp,
                  er_w_plain);
        /* NULL and all-ones importances are the same fit */
        size_t rb = es_row_bytes(t, N);
        uint8_t *qa = malloc(rb), *qb = malloc(rb);
        es_iq_quant_row(t, x, qa, N, NULL);
        es_iq_quant_row(t, x, qb, N, flat);
        CHECK(!memcmp(qa, qb, rb), "%s: NULL importances = all ones", name);
        /* special rows: zero, constant, tiny, one spike */
        float z[256], s[256];
        memset(z, 0, sizeof z);
        es_iq_quant_row(t, z, qa, 256, NULL);
        es_kernels_generic.dequant_row[t](qa, s, 256);
        int zero = 1;
        for (int i = 0; i < 256; i++) zero &= s[i] == 0;
        CHECK(zero, "%s: a zero row decodes to zeros", name);
        for (int i = 0; i < 256; i++) z[i] = 0.25f;
        CHECK(round_trip(t, z, s, 256, NULL) == 0 && rel_err(z, s, NULL, 256) < 0.5, "%s: constant row (%.3f)", name,
              rel_err(z, s, NULL, 256));
        for (int i = 0; i < 256; i++) z[i] = 1e-30f * gauss();
        CHECK(round_trip(t, z, s, 256, NULL) == 0, "%s: tiny row finite", name);
        for (int i = 0; i < 256; i++) z[i] = i == 77 ? 3.0f : 0;
        CHECK(round_trip(t, z, s, 256, NULL) == 0 && fabsf(s[77] - 3.0f) < 1.2f, "%s: spike row (%.3f)", name, s[77]);
        free(qa);
        free(qb);
    }
    free(x), free(real), free(y), free(imp), free(flat);
}

/* ---- imatrix files ------------------------------------------------------------ */

/* Writes an imatrix with entries {name, n_per_row, n_mat}; bad selects a
 * defect.  Returns the bytes (caller frees) through *size. */
enum { OK_FILE, BAD_NO_COUNTS, BAD_TYPE, BAD_SHAPE, BAD_NEG, BAD_NAN, BAD_GENERAL_TYPE, BAD_3D };

static void *make_imatrix(const char *path, int bad, size_t *size) {
    es_gguf_writer *w = es_gguf_writer_new();
    es_gguf_w_str(w, "general.type", bad == BAD_GENERAL_TYPE ? "model" : "imatrix");
    const char *ds[] = {"calibration.txt"};
    es_gguf_w_arr_str(w, "imatrix.datasets", ds, 1);
    es_gguf_w_u32(w, "imatrix.chunk_count", 10);
    es_gguf_w_u32(w, "imatrix.chunk_size", 512);
    int64_t ne_s[2] = {256, 1}, ne_c[2] = {1, 1}, ne_es[3] = {512, 4, 1}, ne_ec[2] = {1, 4};
    es_gguf_w_add_tensor(w, "blk.0.attn_q_a.weight.in_sum2", bad == BAD_3D ? 3 : 2, ne_s,
                         bad == BAD_TYPE ? ES_TYPE_F16 : ES_TYPE_F32);
    if (bad != BAD_NO_COUNTS) es_gguf_w_add_tensor(w, "blk.0.attn_q_a.weight.counts", 2, ne_c, ES_TYPE_F32);
    es_gguf_w_add_tensor(w, "blk.1.ffn_up_exps.weight.in_sum2", 2, ne_es, ES_TYPE_F32);
    if (bad == BAD_SHAPE) ne_ec[1] = 3;
    es_gguf_w_add_tensor(w, "blk.1.ffn_up_exps.weight.counts", 2, ne_ec, ES_TYPE_F32);
    es_gguf_w_open(w, path);
    float v[2048];
    for (int i = 0; i < 256; i++) v[i] = 10.0f * (float)(i + 1);
    if (bad == BAD_NEG) v[3] = -1;
    if (bad == BAD_NAN) v[5] = NAN;
    es_gguf_w_write(w, v, bad == BAD_TYPE ? 512 : 1024);
    if (bad != BAD_NO_COUNTS) {
        v[0] = 10;
        es_gguf_w_write(w, v, 4);
    }
    for (int i = 0; i < 2048; i++) v[i] = (float)(i % 512) + 1;
    es_gguf_w_write(w, v, 2048 * 4);
    float cnt[4] = {2, 4, 0, 8};
    es_gguf_w_write(w, cnt, (bad == BAD_SHAPE ? 3 : 4) * 4);
    char err[256];
    int rc = es_gguf_w_finish(w, err, sizeof err);
    es_gguf_writer_free(w);
    if (rc) return NULL;
    return test_read_file(path, size);
}

static void test_imatrix(void) {
    char dir[] = "/tmp/es_imx_XXXXXX";
    if (!mkdtemp(dir)) { CHECK(0, "mkdtemp"); return; }
    char path[64], bad[64];
    snprintf(path, sizeof path, "%s/im.gguf", dir);
    snprintf(bad, sizeof bad, "%s/bad.gguf", dir);
    size_t size = 0;
    uint8_t *good = make_imatrix(path, OK_FILE, &size);
    CHECK(good != NULL, "write an imatrix");
    if (!good) return;
    es_imatrix *im = NULL;
    char err[512];
    CHECK(es_imatrix_load(path, &im, err, sizeof err) == 0, "load: %s", err);
    if (im) {
        int64_t npr = 0, nmat = 0;
        const float *v = es_imatrix_find(im, "blk.0.attn_q_a.weight", &npr, &nmat);
        CHECK(v && npr == 256 && nmat == 1 && v[0] == 1.0f && v[255] == 256.0f, "2-D entry: sums / count");
        v = es_imatrix_find(im, "blk.1.ffn_up_exps.weight", &npr, &nmat);
        CHECK(v && npr == 512 && nmat == 4, "3-D entry shape");
        if (v) CHECK(v[0] == 0.5f && v[512 + 1] == 0.5f && v[1024 + 9] == 1.0f && v[1536 + 7] == 1.0f,
                     "per-expert counts; a count of 0 gives importances of 1 (%g %g %g %g)", v[0], v[513], v[1033],
                     v[1543]);
        CHECK(!es_imatrix_find(im, "blk.0.attn_q_a", NULL, NULL), "unknown name: NULL");
        CHECK(es_imatrix_count(im) == 2, "two entries");
        es_imatrix_free(im);
    }
    static const struct { int bad; const char *what; } bads[] = {
        {BAD_NO_COUNTS, "counts"}, {BAD_TYPE, "F32"},  {BAD_SHAPE, "match"}, {BAD_NEG, "-1"},
        {BAD_NAN, "nan"},          {BAD_GENERAL_TYPE, "general.type"},        {BAD_3D, "dimensions"},
    };
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        size_t sz;
        uint8_t *b = make_imatrix(bad, bads[i].bad, &sz);
        im = NULL;
        err[0] = 0;
        int rc = b ? es_imatrix_load(bad, &im, err, sizeof err) : -1;
        CHECK(b && rc == -1 && !im && strstr(err, bads[i].what), "bad file %d refused naming '%s': %s", bads[i].bad,
              bads[i].what, err);
        free(b);
    }
    /* the legacy form: an int32 count, then entries */
    FILE *f = fopen(bad, "wb");
    int32_t legacy[4] = {1, 5, 0x6b6c62, 0};
    fwrite(legacy, sizeof legacy, 1, f);
    fclose(f);
    CHECK(es_imatrix_load(bad, &im, err, sizeof err) == -1 && strstr(err, "legacy"), "legacy .dat refused: %s", err);
    CHECK(es_imatrix_load(dir, &im, err, sizeof err) == -1, "a directory refused: %s", err);
    snprintf(bad, sizeof bad, "%s/none.gguf", dir);
    CHECK(es_imatrix_load(bad, &im, err, sizeof err) == -1 && strstr(err, "cannot open"), "missing file: %s", err);
    /* a model file: GGUF without imatrix tensors */
    {
        es_gguf_writer *w = es_gguf_writer_new();
        int64_t ne[2] = {32, 2};
        es_gguf_w_str(w, "general.architecture", "deepseek2");
        es_gguf_w_add_tensor(w, "blk.0.attn_q_a.weight", 2, ne, ES_TYPE_F32);
        es_gguf_w_open(w, bad);
        float zz[64] = {0};
        es_gguf_w_write(w, zz, sizeof zz);
        es_gguf_w_finish(w, err, sizeof err);
        es_gguf_writer_free(w);
        CHECK(es_imatrix_load(bad, &im, err, sizeof err) == -1 && strstr(err, "in_sum2"), "a model refused: %s", err);
    }
    /* every truncation, then random byte changes: a result or a message */
    int n_err = 0, n_ok = 0;
    for (size_t len = 0; len < size; len += len < 600 ? 1 : 97) {
        err[0] = 0;
        im = NULL;
        int rc = es_imatrix_parse(good, len, &im, err, sizeof err);
        if (rc == 0) n_ok++, es_imatrix_free(im);
        else n_err += err[0] != 0;
    }
    CHECK(n_ok == 0 && n_err > 600, "every truncation refused with a message (%d, %d accepted)", n_err, n_ok);
    uint8_t *m = malloc(size);
    int accepted = 0, refused = 0;
    for (int it = 0; it < 400; it++) {
        memcpy(m, good, size);
        int nb = 1 + (int)(urand() * 4);
        for (int k = 0; k < nb; k++) {
            size_t at = (size_t)(urand() * (double)(it % 2 ? 600 : size)) % size;
            m[at] = (uint8_t)(urand() * 256);
        }
        err[0] = 0;
        im = NULL;
        if (es_imatrix_parse(m, size, &im, err, sizeof err) == 0) accepted++, es_imatrix_free(im);
        else refused += err[0] != 0;
    }
    CHECK(accepted + refused == 400, "mutated files: %d accepted, %d refused with a message", accepted, refused);
    free(m);
    free(good);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "clean up");
}

int main(void) {
    test_rows();
    test_imatrix();
    return test_summary();
}
