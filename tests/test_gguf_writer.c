/* test_gguf_writer.c — tests for the streaming GGUF writer (gguf_writer.h)
 * and the model generator (tools/gen_model.c → build/gen_model).
 *
 * Covers: every metadata value type, arrays of each, string arrays, nested
 * arrays, key replacement/removal, custom alignment; tensors of several types
 * and 1..4 dims written in odd chunks or as f32 rows, read back with the GGUF
 * reader (gguf.h) byte for byte; copying a parsed file's metadata verbatim;
 * every error path (bad arguments, misuse, overrun, incomplete data, a
 * missing directory, a full disk via /dev/full) returning -1 with a message
 * and removing the half-written file.  Then gen_model: a tiny model in each
 * weight type parses and has the expected keys and tensors; weights agree
 * across types, thread counts and the split/legacy attn_kv_b layouts; MTP,
 * V3 routing options, --set/--drop; the exact golden layout; exit codes.
 * Files go to a mkdtemp directory under /tmp, removed at the end.
 */
#include "gguf.h"
#include "gguf_writer.h"
#include "kernels.h"
#include "quant.h"
#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[64];

static const char *tmp_path(const char *name) {
    static char buf[4][256];
    static int i;
    i = (i + 1) & 3;
    snprintf(buf[i], sizeof buf[i], "%s/%s", tmpdir, name);
    return buf[i];
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

/* Temporaries (".NAME.tmp.PID") in the test directory. */
static int count_temps(void) {
    DIR *d = opendir(tmpdir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static long file_size(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

static es_gguf_ctx *open_gguf(const char *path) {
    char err[256];
    es_gguf_ctx *ctx = NULL;
    if (es_gguf_open_file(path, &ctx, err, sizeof err)) {
        printf("  (cannot parse %s: %s)\n", path, err);
        return NULL;
    }
    return ctx;
}

/* ---- metadata round trip ------------------------------------------------------ */

static const uint8_t a_u8[] = {0, 7, 255};
static const int8_t a_i8[] = {-128, 0, 127};
static const uint16_t a_u16[] = {0, 300, 65535};
static const int16_t a_i16[] = {-32768, 1, 32767};
static const uint32_t a_u32[] = {0, 70000, 4294967295u};
static const int32_t a_i32[] = {INT32_MIN, -1, INT32_MAX};
static const uint64_t a_u64[] = {0, 1ull << 40, UINT64_MAX};
static const int64_t a_i64[] = {INT64_MIN, -5, INT64_MAX};
static const float a_f32[] = {-1.5f, 0.0f, 3.25e-20f};
static const double a_f64[] = {-1e300, 0.1, 2.5};
static const uint8_t a_bool[] = {1, 0, 1};

static const struct {
    const char *key;
    uint32_t type;
    const void *data;
} fixed_arrays[] = {
    {"arr.u8", GGUF_VT_UINT8, a_u8},    {"arr.i8", GGUF_VT_INT8, a_i8},     {"arr.u16", GGUF_VT_UINT16, a_u16},
    {"arr.i16", GGUF_VT_INT16, a_i16},  {"arr.u32", GGUF_VT_UINT32, a_u32}, {"arr.i32", GGUF_VT_INT32, a_i32},
    {"arr.u64", GGUF_VT_UINT64, a_u64}, {"arr.i64", GGUF_VT_INT64, a_i64},  {"arr.f32", GGUF_VT_FLOAT32, a_f32},
    {"arr.f64", GGUF_VT_FLOAT64, a_f64}, {"arr.bool", GGUF_VT_BOOL, a_bool},
};
#define N_FIXED (sizeof fixed_arrays / sizeof fixed_arrays[0])

static const char *const strs[] = {"", "hello", "Ġthe", "<｜User｜>", "tab\there"};

/* Writes every kind of metadata value into w. */
static void put_all_metadata(es_gguf_writer *w) {
    es_gguf_w_u32(w, "replaced", 1); /* replaced below, must keep its position */
    es_gguf_w_u8(w, "s.u8", 200);
    es_gguf_w_i8(w, "s.i8", -100);
    es_gguf_w_u16(w, "s.u16", 60000);
    es_gguf_w_i16(w, "s.i16", -30000);
    es_gguf_w_u32(w, "s.u32", 4000000000u);
    es_gguf_w_i32(w, "s.i32", -2000000000);
    es_gguf_w_u64(w, "s.u64", (1ull << 60) + 5);
    es_gguf_w_i64(w, "s.i64", -(1ll << 60) - 7);
    es_gguf_w_f32(w, "s.f32", 3.5f);
    es_gguf_w_f64(w, "s.f64", 0.1);
    es_gguf_w_bool(w, "s.true", 5);
    es_gguf_w_bool(w, "s.false", 0);
    es_gguf_w_str(w, "s.str", "héllo ▁ world");
    es_gguf_w_str(w, "s.empty", "");
    es_gguf_w_strn(w, "s.nul", "a\0b", 3);
    es_gguf_w_str(w, "gone", "removed before writing");
    es_gguf_w_remove(w, "gone");
    for (size_t i = 0; i < N_FIXED; i++) es_gguf_w_arr(w, fixed_arrays[i].key, fixed_arrays[i].type, fixed_arrays[i].data, 3);
    es_gguf_w_arr(w, "arr.empty", GGUF_VT_UINT32, NULL, 0);
    es_gguf_w_arr_str(w, "arr.str", strs, 5);
    es_gguf_w_str(w, "replaced", "now a string");

    /* [[1, 2], [3]] of i32, [["x"], []] of strings, and [[[7]]] (depth 3) */
    static const int32_t n12[] = {1, 2}, n3[] = {3}, n7[] = {7};
    es_gguf_value in[2] = {{.type = GGUF_VT_ARRAY}, {.type = GGUF_VT_ARRAY}};
    in[0].v.arr.elem_type = GGUF_VT_INT32, in[0].v.arr.n = 2, in[0].v.arr.data = (const uint8_t *)n12;
    in[1].v.arr.elem_type = GGUF_VT_INT32, in[1].v.arr.n = 1, in[1].v.arr.data = (const uint8_t *)n3;
    es_gguf_value outer = {.type = GGUF_VT_ARRAY};
    outer.v.arr.elem_type = GGUF_VT_ARRAY, outer.v.arr.n = 2, outer.v.arr.items = in;
    es_gguf_w_value(w, "nest.i32", &outer);

    es_gguf_str xs[1] = {{"x", 1}};
    es_gguf_value sin[2] = {{.type = GGUF_VT_ARRAY}, {.type = GGUF_VT_ARRAY}};
    sin[0].v.arr.elem_type = GGUF_VT_STRING, sin[0].v.arr.n = 1, sin[0].v.arr.strs = xs;
    sin[1].v.arr.elem_type = GGUF_VT_STRING, sin[1].v.arr.n = 0;
    es_gguf_value souter = {.type = GGUF_VT_ARRAY};
    souter.v.arr.elem_type = GGUF_VT_ARRAY, souter.v.arr.n = 2, souter.v.arr.items = sin;
    es_gguf_w_value(w, "nest.str", &souter);

    es_gguf_value d3 = {.type = GGUF_VT_ARRAY}, d2 = {.type = GGUF_VT_ARRAY}, d1 = {.type = GGUF_VT_ARRAY};
    d3.v.arr.elem_type = GGUF_VT_INT32, d3.v.arr.n = 1, d3.v.arr.data = (const uint8_t *)n7;
    d2.v.arr.elem_type = GGUF_VT_ARRAY, d2.v.arr.n = 1, d2.v.arr.items = &d3;
    d1.v.arr.elem_type = GGUF_VT_ARRAY, d1.v.arr.n = 1, d1.v.arr.items = &d2;
    es_gguf_w_value(w, "nest.deep", &d1);
}

static void check_scalar_int(const es_gguf_ctx *ctx, const char *key, uint32_t type, int64_t want) {
    const es_gguf_kv *kv = es_gguf_find_kv(ctx, key);
    int64_t got = 0;
    CHECK(kv && kv->val.type == type, "%s: missing or type %u", key, kv ? kv->val.type : 99);
    CHECK(es_gguf_get_int(ctx, key, &got) == 1 && got == want, "%s = %lld, want %lld", key, (long long)got,
          (long long)want);
}

static void check_str(const es_gguf_ctx *ctx, const char *key, const char *want, size_t len) {
    es_gguf_str s = {0};
    CHECK(es_gguf_get_str(ctx, key, &s) == 1 && s.len == len && memcmp(s.ptr, want, len) == 0, "%s: string differs",
          key);
}

static void check_all_metadata(const es_gguf_ctx *ctx) {
    uint64_t at = 0;
    while (at + 1 < ctx->n_kv && strcmp(ctx->kv[at].key, "replaced")) at++;
    CHECK(at + 1 < ctx->n_kv && strcmp(ctx->kv[at + 1].key, "s.u8") == 0, "a replaced key keeps its position");
    check_str(ctx, "replaced", "now a string", 12);
    CHECK(!es_gguf_find_kv(ctx, "gone"), "removed key is absent");
    check_scalar_int(ctx, "s.u8", GGUF_VT_UINT8, 200);
    check_scalar_int(ctx, "s.i8", GGUF_VT_INT8, -100);
    check_scalar_int(ctx, "s.u16", GGUF_VT_UINT16, 60000);
    check_scalar_int(ctx, "s.i16", GGUF_VT_INT16, -30000);
    check_scalar_int(ctx, "s.u32", GGUF_VT_UINT32, 4000000000ll);
    check_scalar_int(ctx, "s.i32", GGUF_VT_INT32, -2000000000);
    check_scalar_int(ctx, "s.u64", GGUF_VT_UINT64, (1ll << 60) + 5);
    check_scalar_int(ctx, "s.i64", GGUF_VT_INT64, -(1ll << 60) - 7);
    double f = 0;
    CHECK(es_gguf_get_float(ctx, "s.f32", &f) == 1 && f == 3.5, "s.f32 = %g", f);
    CHECK(es_gguf_find_kv(ctx, "s.f32")->val.type == GGUF_VT_FLOAT32, "s.f32 type");
    CHECK(es_gguf_get_float(ctx, "s.f64", &f) == 1 && f == 0.1, "s.f64 = %.17g (exact)", f);
    CHECK(es_gguf_find_kv(ctx, "s.f64")->val.type == GGUF_VT_FLOAT64, "s.f64 type");
    int b = -1;
    CHECK(es_gguf_get_bool(ctx, "s.true", &b) == 1 && b == 1, "s.true");
    CHECK(es_gguf_get_bool(ctx, "s.false", &b) == 1 && b == 0, "s.false");
    check_str(ctx, "s.str", "héllo ▁ world", strlen("héllo ▁ world"));
    check_str(ctx, "s.empty", "", 0);
    check_str(ctx, "s.nul", "a\0b", 3);

    static const size_t esz[] = {1, 1, 2, 2, 4, 4, 8, 8, 4, 8, 1};
    for (size_t i = 0; i < N_FIXED; i++) {
        const es_gguf_value *a = es_gguf_get_arr(ctx, fixed_arrays[i].key, fixed_arrays[i].type);
        CHECK(a && a->v.arr.n == 3 && memcmp(a->v.arr.data, fixed_arrays[i].data, 3 * esz[i]) == 0,
              "%s round trip", fixed_arrays[i].key);
    }
    const es_gguf_value *e = es_gguf_get_arr(ctx, "arr.empty", GGUF_VT_UINT32);
    CHECK(e && e->v.arr.n == 0, "empty array");
    const es_gguf_value *s = es_gguf_get_arr(ctx, "arr.str", GGUF_VT_STRING);
    CHECK(s && s->v.arr.n == 5, "string array");
    for (int i = 0; s && i < 5; i++)
        CHECK(es_gguf_str_eq(s->v.arr.strs[i], strs[i]), "string array item %d", i);

    const es_gguf_value *n = es_gguf_get_arr(ctx, "nest.i32", GGUF_VT_ARRAY);
    CHECK(n && n->v.arr.n == 2 && n->v.arr.items[0].v.arr.n == 2 && n->v.arr.items[1].v.arr.n == 1 &&
              es_gguf_arr_int(&n->v.arr.items[0], 1) == 2 && es_gguf_arr_int(&n->v.arr.items[1], 0) == 3,
          "nested i32 arrays");
    n = es_gguf_get_arr(ctx, "nest.str", GGUF_VT_ARRAY);
    CHECK(n && n->v.arr.n == 2 && n->v.arr.items[0].v.arr.elem_type == GGUF_VT_STRING &&
              es_gguf_str_eq(n->v.arr.items[0].v.arr.strs[0], "x") && n->v.arr.items[1].v.arr.n == 0,
          "nested string arrays");
    n = es_gguf_get_arr(ctx, "nest.deep", GGUF_VT_ARRAY);
    CHECK(n && n->v.arr.items[0].v.arr.elem_type == GGUF_VT_ARRAY &&
              es_gguf_arr_int(&n->v.arr.items[0].v.arr.items[0], 0) == 7,
          "arrays nested three deep");
}

/* ---- tensors ---------------------------------------------------------------------- */

typedef struct tspec {
    const char *name;
    uint32_t n_dims;
    int64_t ne[4];
    uint32_t type;
    int as_rows; /* written with es_gguf_w_write_rows_f32, else raw bytes in odd chunks */
} tspec;

static const tspec tspecs[] = {
    {"t.f32.1d", 1, {5, 1, 1, 1}, ES_TYPE_F32, 0},      {"t.f16", 2, {7, 3, 1, 1}, ES_TYPE_F16, 1},
    {"t.bf16.3d", 3, {4, 2, 2, 1}, ES_TYPE_BF16, 1},    {"t.q8_0", 2, {64, 3, 1, 1}, ES_TYPE_Q8_0, 1},
    {"t.q4_0.4d", 4, {32, 2, 2, 2}, ES_TYPE_Q4_0, 1},   {"t.i8", 1, {3, 1, 1, 1}, ES_TYPE_I8, 0},
    {"t.q2_k", 2, {256, 2, 1, 1}, ES_TYPE_Q2_K, 0},     {"t.f32.rows", 2, {3, 5, 1, 1}, ES_TYPE_F32, 1},
};
#define N_TSPECS (sizeof tspecs / sizeof tspecs[0])

static int64_t nrows(const tspec *t) { return t->ne[1] * t->ne[2] * t->ne[3]; }

static float src_value(size_t ti, int64_t i) { return sinf((float)(ti * 1000 + (size_t)i) * 0.37f) * 2.0f; }

/* The bytes tensor ti should hold: raw tensors a byte pattern, row tensors
 * their f32 source converted by es_quant_row. */
static uint8_t *expected_bytes(size_t ti, size_t *len) {
    const tspec *t = &tspecs[ti];
    size_t rb = es_row_bytes(t->type, t->ne[0]);
    *len = rb * (size_t)nrows(t);
    uint8_t *b = malloc(*len);
    float *row = malloc((size_t)t->ne[0] * sizeof(float));
    for (int64_t r = 0; r < nrows(t); r++) {
        if (!t->as_rows) {
            for (size_t k = 0; k < rb; k++) b[(size_t)r * rb + k] = (uint8_t)(ti * 31 + (size_t)r * rb + k * 7);
            continue;
        }
        for (int64_t i = 0; i < t->ne[0]; i++) row[i] = src_value(ti, r * t->ne[0] + i);
        es_quant_row(es_kernels_best(), t->type, row, b + (size_t)r * rb, t->ne[0]);
    }
    free(row);
    return b;
}

static void add_tensors(es_gguf_writer *w) {
    for (size_t i = 0; i < N_TSPECS; i++) es_gguf_w_add_tensor(w, tspecs[i].name, tspecs[i].n_dims, tspecs[i].ne, tspecs[i].type);
}

/* Streams every tensor's data: raw ones in chunks of 1, 2, 3, ... bytes,
 * row ones as one row and then the rest. */
static void stream_tensors(es_gguf_writer *w) {
    for (size_t ti = 0; ti < N_TSPECS; ti++) {
        const tspec *t = &tspecs[ti];
        uint64_t left = 0;
        const char *cur = es_gguf_w_current_tensor(w, &left);
        CHECK(cur && strcmp(cur, t->name) == 0, "current tensor is %s", t->name);
        if (!t->as_rows) {
            size_t len, off = 0, chunk = 1;
            uint8_t *b = expected_bytes(ti, &len);
            CHECK(left == len, "%s: %llu bytes expected", t->name, (unsigned long long)left);
            while (off < len) {
                size_t k = chunk < len - off ? chunk : len - off;
                es_gguf_w_write(w, b + off, k);
                off += k, chunk++;
            }
            free(b);
            continue;
        }
        float *src = malloc((size_t)(t->ne[0] * nrows(t)) * sizeof(float));
        for (int64_t i = 0; i < t->ne[0] * nrows(t); i++) src[i] = src_value(ti, i);
        es_gguf_w_write_rows_f32(w, src, 1);
        es_gguf_w_write_rows_f32(w, src + t->ne[0], nrows(t) - 1);
        free(src);
    }
    CHECK(es_gguf_w_current_tensor(w, NULL) == NULL, "no tensor left after the last");
}

static void check_tensor_file(const es_gguf_ctx *ctx, uint64_t alignment) {
    CHECK(ctx->n_tensors == N_TSPECS, "%llu tensors", (unsigned long long)ctx->n_tensors);
    CHECK(ctx->alignment == alignment && ctx->data_offset % alignment == 0, "alignment %llu, data at %llu",
          (unsigned long long)ctx->alignment, (unsigned long long)ctx->data_offset);
    uint64_t prev_end = 0;
    for (size_t ti = 0; ti < N_TSPECS && ti < ctx->n_tensors; ti++) {
        const tspec *t = &tspecs[ti];
        const es_gguf_tensor *g = &ctx->tensors[ti];
        CHECK(strcmp(g->name, t->name) == 0 && g->type == t->type && g->n_dims == t->n_dims, "%s header", t->name);
        for (int d = 0; d < 4; d++) CHECK(g->ne[d] == t->ne[d], "%s ne[%d] = %lld", t->name, d, (long long)g->ne[d]);
        CHECK(g->offset % alignment == 0 && g->offset >= prev_end, "%s offset %llu aligned, in order", t->name,
              (unsigned long long)g->offset);
        prev_end = g->offset + g->nbytes;
        size_t len;
        uint8_t *b = expected_bytes(ti, &len);
        CHECK(g->nbytes == len && memcmp(g->data, b, len) == 0, "%s data bytes", t->name);
        free(b);
    }
    /* the rows really are the quantised source: dequantise one and compare */
    const es_gguf_tensor *q = es_gguf_find_tensor(ctx, "t.q8_0");
    float row[64];
    float maxerr = 0;
    if (q && es_dequant_row(es_kernels_best(), ES_TYPE_Q8_0, q->data + es_row_bytes(ES_TYPE_Q8_0, 64), row, 64) == 0)
        for (int i = 0; i < 64; i++) maxerr = fmaxf(maxerr, fabsf(row[i] - src_value(3, 64 + i)));
    CHECK(q && maxerr < 2.0f / 127, "q8_0 row dequantises to its source (max err %g)", maxerr);
}

/* Copies a parsed file (every key, every tensor) through a new writer. */
static int copy_file(const es_gguf_ctx *ctx, const char *path) {
    es_gguf_writer *c = es_gguf_writer_new();
    for (uint64_t i = 0; i < ctx->n_kv; i++) es_gguf_w_value(c, ctx->kv[i].key, &ctx->kv[i].val);
    for (uint64_t i = 0; i < ctx->n_tensors; i++) {
        const es_gguf_tensor *t = &ctx->tensors[i];
        es_gguf_w_add_tensor(c, t->name, t->n_dims, t->ne, t->type);
    }
    es_gguf_w_open(c, path);
    for (uint64_t i = 0; i < ctx->n_tensors; i++) es_gguf_w_write(c, ctx->tensors[i].data, ctx->tensors[i].nbytes);
    char err[256] = "";
    int rc = es_gguf_w_finish(c, err, sizeof err);
    if (rc) printf("  (copy failed: %s)\n", err);
    es_gguf_writer_free(c);
    return rc;
}

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    uint8_t *x = test_read_file(a, &na), *y = test_read_file(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

static void test_roundtrip(uint32_t alignment) {
    char path[64];
    snprintf(path, sizeof path, "rt_%u.gguf", alignment);
    const char *p = tmp_path(path);
    es_gguf_writer *w = es_gguf_writer_new();
    es_gguf_w_str(w, "general.architecture", "test");
    if (alignment != 32) es_gguf_w_u32(w, "general.alignment", alignment);
    put_all_metadata(w);
    add_tensors(w);
    uint64_t predicted = es_gguf_w_file_size(w);
    CHECK(es_gguf_w_n_tensors(w) == N_TSPECS, "tensor count");
    CHECK(es_gguf_w_open(w, p) == 0, "open: %s", es_gguf_w_error(w));
    stream_tensors(w);
    char err[256] = "";
    CHECK(es_gguf_w_finish(w, err, sizeof err) == 0, "finish: %s", err);
    es_gguf_writer_free(w);
    CHECK(file_size(p) >= 0 && (uint64_t)file_size(p) == predicted, "file size %ld, predicted %llu", file_size(p),
          (unsigned long long)predicted);
    es_gguf_ctx *ctx = open_gguf(p);
    CHECK(ctx != NULL, "round-trip file parses (alignment %u)", alignment);
    if (!ctx) return;
    CHECK(ctx->version == 3, "version 3");
    check_all_metadata(ctx);
    check_tensor_file(ctx, alignment);
    /* reader values fed back to the writer reproduce the file exactly */
    const char *p2 = tmp_path("copy.gguf");
    CHECK(copy_file(ctx, p2) == 0 && same_file(p, p2), "copy through es_gguf_w_value is byte-identical");
    es_gguf_close(ctx);
}

/* ---- errors ----------------------------------------------------------------------------- */

/* A fresh writer with one F32 [4] tensor declared. */
static es_gguf_writer *small_writer(void) {
    es_gguf_writer *w = es_gguf_writer_new();
    int64_t ne[1] = {4};
    es_gguf_w_add_tensor(w, "x", 1, ne, ES_TYPE_F32);
    return w;
}

static void expect_fail(es_gguf_writer *w, int rc, const char *what, const char *needle) {
    CHECK(rc == -1, "%s: returns -1", what);
    CHECK(strstr(es_gguf_w_error(w), needle) != NULL, "%s: message '%s' mentions '%s'", what, es_gguf_w_error(w), needle);
    char err[256] = "";
    CHECK(es_gguf_w_finish(w, err, sizeof err) == -1 && strcmp(err, es_gguf_w_error(w)) == 0, "%s: sticky", what);
    es_gguf_writer_free(w);
}

static void test_errors(void) {
    int64_t ne[4] = {33, 2, 1, 1}, zero[2] = {4, 0}, ok[1] = {4};
    es_gguf_writer *w;
    char name[80];
    memset(name, 'n', sizeof name - 1), name[sizeof name - 1] = 0;

    w = small_writer();
    expect_fail(w, es_gguf_w_add_tensor(w, "x", 1, ok, ES_TYPE_F32), "duplicate tensor", "duplicate");
    w = es_gguf_writer_new();
    expect_fail(w, es_gguf_w_add_tensor(w, "q", 2, ne, ES_TYPE_Q8_0), "bad row length", "multiple");
    w = es_gguf_writer_new();
    expect_fail(w, es_gguf_w_add_tensor(w, "z", 2, zero, ES_TYPE_F32), "zero dimension", "dimension");
    w = es_gguf_writer_new();
    expect_fail(w, es_gguf_w_add_tensor(w, "d", 5, ne, ES_TYPE_F32), "5 dims", "dimensions");
    w = es_gguf_writer_new();
    expect_fail(w, es_gguf_w_add_tensor(w, "d", 0, ne, ES_TYPE_F32), "0 dims", "dimensions");
    w = es_gguf_writer_new();
    expect_fail(w, es_gguf_w_add_tensor(w, name, 1, ok, ES_TYPE_F32), "long name", "longer");
    w = es_gguf_writer_new();
    expect_fail(w, es_gguf_w_add_tensor(w, "t", 1, ok, 99), "unknown type", "unknown type");
    w = es_gguf_writer_new();
    expect_fail(w, es_gguf_w_u32(w, "general.alignment", 48), "alignment 48", "power of two");
    w = es_gguf_writer_new();
    expect_fail(w, es_gguf_w_str(w, "general.alignment", "32"), "string alignment", "power of two");
    w = es_gguf_writer_new();
    expect_fail(w, es_gguf_w_arr(w, "a", GGUF_VT_STRING, strs, 1), "es_gguf_w_arr of strings", "fixed-size");
    w = es_gguf_writer_new();
    expect_fail(w, es_gguf_w_str(w, "", "v"), "empty key", "empty");
    es_gguf_value bad_item = {.type = GGUF_VT_UINT32}, outer = {.type = GGUF_VT_ARRAY};
    outer.v.arr.elem_type = GGUF_VT_ARRAY, outer.v.arr.n = 1, outer.v.arr.items = &bad_item;
    w = es_gguf_writer_new();
    expect_fail(w, es_gguf_w_value(w, "n", &outer), "non-array item in array of arrays", "item 0");
    es_gguf_value bad_type = {.type = 77};
    w = es_gguf_writer_new();
    expect_fail(w, es_gguf_w_value(w, "t", &bad_type), "unknown value type", "unknown value type");

    float four[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    w = small_writer();
    expect_fail(w, es_gguf_w_write(w, four, 16), "write before open", "before es_gguf_w_open");
    const char *p = tmp_path("err.gguf");
    w = small_writer();
    es_gguf_w_open(w, p);
    expect_fail(w, es_gguf_w_u32(w, "late", 1), "key after open", "after es_gguf_w_open");
    w = small_writer();
    es_gguf_w_open(w, p);
    expect_fail(w, es_gguf_w_add_tensor(w, "y", 1, ok, ES_TYPE_F32), "tensor after open", "after es_gguf_w_open");
    w = small_writer();
    es_gguf_w_open(w, p);
    expect_fail(w, es_gguf_w_write(w, four, 20), "overrun", "overruns");
    w = small_writer();
    es_gguf_w_open(w, p);
    expect_fail(w, es_gguf_w_write_rows_f32(w, four, 2), "too many rows", "overrun");
    w = small_writer();
    es_gguf_w_open(w, p);
    es_gguf_w_write(w, four, 16);
    expect_fail(w, es_gguf_w_write(w, four, 4), "write after the last tensor", "after the last tensor");

    /* incomplete data: finish fails and free removes the temporary; the
     * path never sees the half-written file */
    unlink(p);
    w = small_writer();
    CHECK(es_gguf_w_open(w, p) == 0 && !file_exists(p) && count_temps() == 1,
          "open writes a temporary, not the file");
    es_gguf_w_write(w, four, 8);
    char err[256] = "";
    CHECK(es_gguf_w_finish(w, err, sizeof err) == -1 && strstr(err, "incomplete"), "incomplete: %s", err);
    es_gguf_writer_free(w);
    CHECK(!file_exists(p) && count_temps() == 0, "an unfinished file is removed");
    /* the same over an existing file: its content survives */
    FILE *old = fopen(p, "w");
    if (old) fputs("old content", old), fclose(old);
    w = small_writer();
    es_gguf_w_open(w, p);
    es_gguf_w_write(w, four, 8);
    es_gguf_writer_free(w);
    char back[32] = "";
    old = fopen(p, "r");
    if (old) {
        if (!fgets(back, sizeof back, old)) back[0] = 0;
        fclose(old);
    }
    CHECK(strcmp(back, "old content") == 0 && count_temps() == 0, "an unfinished write keeps the old file");
    /* finished, it replaces the old file */
    w = small_writer();
    CHECK(es_gguf_w_open(w, p) == 0 && es_gguf_w_write(w, four, 16) == 0 && es_gguf_w_finish(w, err, sizeof err) == 0,
          "a finished write: %s", err);
    es_gguf_writer_free(w);
    es_gguf_ctx *done = open_gguf(p);
    CHECK(done && done->n_tensors == 1 && count_temps() == 0, "a finished write replaces the old file");
    es_gguf_close(done);
    unlink(p);

    w = small_writer();
    expect_fail(w, es_gguf_w_open(w, tmp_path("no/such/dir.gguf")), "missing directory", "cannot create");

    /* a full disk: ENOSPC from /dev/full (never removed: not a regular file) */
    if (access("/dev/full", W_OK) == 0) {
        es_gguf_writer *f = es_gguf_writer_new();
        int64_t big[1] = {3 << 20}; /* 12 MB: beyond the output buffer */
        es_gguf_w_add_tensor(f, "big", 1, big, ES_TYPE_F32);
        float *zeros = calloc((size_t)big[0], sizeof(float));
        int rc = es_gguf_w_open(f, "/dev/full");
        if (rc == 0) rc = es_gguf_w_write(f, zeros, (size_t)big[0] * sizeof(float));
        if (rc == 0) rc = es_gguf_w_finish(f, err, sizeof err);
        free(zeros);
        CHECK(rc == -1 && strstr(es_gguf_w_error(f), "No space"), "disk full reported: %s", es_gguf_w_error(f));
        es_gguf_writer_free(f);
        CHECK(access("/dev/full", F_OK) == 0, "/dev/full left alone");
    } else {
        SKIP("no /dev/full: disk-full test");
    }

    /* a metadata-only file (no tensors) parses */
    w = es_gguf_writer_new();
    es_gguf_w_str(w, "general.architecture", "deepseek2");
    const char *pm = tmp_path("meta.gguf");
    CHECK(es_gguf_w_open(w, pm) == 0 && es_gguf_w_finish(w, err, sizeof err) == 0, "metadata-only file: %s", err);
    es_gguf_writer_free(w);
    es_gguf_ctx *ctx = open_gguf(pm);
    CHECK(ctx && ctx->n_tensors == 0 && ctx->n_kv == 1, "metadata-only file parses");
    es_gguf_close(ctx);
}

/* ---- gen_model ----------------------------------------------------------------------------------- */

/* Runs build/gen_model with args (NULL-terminated); returns its exit status. */
static int run_gen(const char *const *args) {
    const char *exe = test_build_path("gen_model");
    char *argv[64];
    int n = 0;
    argv[n++] = (char *)exe;
    for (; args[n - 1] && n < 63; n++) argv[n] = (char *)args[n - 1];
    argv[n] = NULL;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
        execv(exe, argv);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

/* The tiny configuration, spelled out so the test does not depend on the
 * preset: dim 64, 3 layers (1 dense, ffn 128), 8 experts of 32 (2 used,
 * 2 shared), 4 heads, R 32, dn 32, dr 16, dv 32, vocab 400. */
#define TINY "--vocab", "400", "--dim", "64", "--layers", "3", "--dense-layers", "1", "--ffn", "128", \
             "--expert-ffn", "32", "--experts", "8", "--experts-used", "2", "--shared-experts", "2",  \
             "--heads", "4", "--kv-lora", "32", "--nope-dim", "32", "--rope-dim", "16", "--v-dim", "32", \
             "--q-lora", "0", "--quiet"

static const es_gguf_tensor *expect_tensor(const es_gguf_ctx *ctx, const char *name, int64_t ne0, int64_t ne1,
                                        int64_t ne2, uint32_t type) {
    const es_gguf_tensor *t = es_gguf_find_tensor(ctx, name);
    CHECK(t && t->ne[0] == ne0 && t->ne[1] == ne1 && t->ne[2] == ne2 && t->type == type,
          "%s: want [%lld %lld %lld] type %u, got [%lld %lld %lld] type %u", name, (long long)ne0, (long long)ne1,
          (long long)ne2, type, t ? (long long)t->ne[0] : -1, t ? (long long)t->ne[1] : -1,
          t ? (long long)t->ne[2] : -1, t ? t->type : 99);
    return t;
}

static void expect_int(const es_gguf_ctx *ctx, const char *key, int64_t want) {
    int64_t v = -1;
    CHECK(es_gguf_get_int(ctx, key, &v) == 1 && v == want, "%s = %lld, want %lld", key, (long long)v, (long long)want);
}

static void expect_bool(const es_gguf_ctx *ctx, const char *key, int want) {
    int v = -1;
    CHECK(es_gguf_get_bool(ctx, key, &v) == 1 && v == want, "%s = %d, want %d", key, v, want);
}

/* The block tensors of the TINY model: suffix, shape, whether in the weight
 * type (else F32), and which blocks have it. */
enum { B_ALL, B_DENSE, B_MOE, B_NEXTN };
static const struct {
    const char *sfx;
    int64_t ne0, ne1, ne2;
    int quant, where;
} tiny_block[] = {
    {"attn_norm.weight", 64, 1, 1, 0, B_ALL},          {"attn_q.weight", 64, 4 * 48, 1, 1, B_ALL},
    {"attn_kv_a_mqa.weight", 64, 48, 1, 1, B_ALL},     {"attn_kv_a_norm.weight", 32, 1, 1, 0, B_ALL},
    {"attn_k_b.weight", 32, 32, 4, 1, B_ALL},          {"attn_v_b.weight", 32, 32, 4, 1, B_ALL},
    {"attn_output.weight", 128, 64, 1, 1, B_ALL},      {"ffn_norm.weight", 64, 1, 1, 0, B_ALL},
    {"ffn_gate.weight", 64, 128, 1, 1, B_DENSE},       {"ffn_down.weight", 128, 64, 1, 1, B_DENSE},
    {"ffn_up.weight", 64, 128, 1, 1, B_DENSE},         {"ffn_gate_inp.weight", 64, 8, 1, 0, B_MOE},
    {"ffn_gate_exps.weight", 64, 32, 8, 1, B_MOE},     {"ffn_down_exps.weight", 32, 64, 8, 1, B_MOE},
    {"ffn_up_exps.weight", 64, 32, 8, 1, B_MOE},       {"ffn_gate_shexp.weight", 64, 64, 1, 1, B_MOE},
    {"ffn_down_shexp.weight", 64, 64, 1, 1, B_MOE},    {"ffn_up_shexp.weight", 64, 64, 1, 1, B_MOE},
    {"nextn.eh_proj.weight", 128, 64, 1, 1, B_NEXTN},  {"nextn.embed_tokens.weight", 64, 400, 1, 1, B_NEXTN},
    {"nextn.enorm.weight", 64, 1, 1, 0, B_NEXTN},      {"nextn.hnorm.weight", 64, 1, 1, 0, B_NEXTN},
    {"nextn.shared_head_head.weight", 64, 400, 1, 1, B_NEXTN},
    {"nextn.shared_head_norm.weight", 64, 1, 1, 0, B_NEXTN},
};

/* Every tensor and key of the TINY model (optionally with an MTP block). */
static void check_tiny(const es_gguf_ctx *ctx, uint32_t wt, int mtp) {
    expect_tensor(ctx, "token_embd.weight", 64, 400, 1, wt);
    expect_tensor(ctx, "output_norm.weight", 64, 1, 1, ES_TYPE_F32);
    expect_tensor(ctx, "output.weight", 64, 400, 1, wt);
    for (int il = 0; il < 3 + mtp; il++)
        for (size_t i = 0; i < sizeof tiny_block / sizeof tiny_block[0]; i++) {
            int w = tiny_block[i].where;
            if (!(w == B_ALL || (w == B_DENSE && il == 0) || (w == B_MOE && il > 0) || (w == B_NEXTN && il == 3)))
                continue;
            char n[64];
            snprintf(n, sizeof n, "blk.%d.%s", il, tiny_block[i].sfx);
            expect_tensor(ctx, n, tiny_block[i].ne0, tiny_block[i].ne1, tiny_block[i].ne2,
                          tiny_block[i].quant ? wt : ES_TYPE_F32);
        }
    CHECK(ctx->n_tensors == (uint64_t)(3 + 11 + 2 * 15 + (mtp ? 15 + 6 : 0)), "tiny has %llu tensors",
          (unsigned long long)ctx->n_tensors);
    expect_int(ctx, "deepseek2.block_count", 3 + mtp);
    expect_int(ctx, "deepseek2.attention.head_count_kv", 1);
    expect_int(ctx, "deepseek2.attention.key_length", 32 + 16);
    expect_int(ctx, "deepseek2.attention.value_length", 32);
    expect_int(ctx, "deepseek2.attention.key_length_mla", 32 + 16);
    expect_int(ctx, "deepseek2.attention.value_length_mla", 32);
    expect_int(ctx, "deepseek2.vocab_size", 400);
    expect_bool(ctx, "tokenizer.ggml.add_bos_token", 1);
    if (mtp) expect_int(ctx, "deepseek2.nextn_predict_layers", 1);
    else CHECK(!es_gguf_find_kv(ctx, "deepseek2.nextn_predict_layers"), "no nextn key without --mtp");
    const es_gguf_value *tok = es_gguf_get_arr(ctx, "tokenizer.ggml.tokens", GGUF_VT_STRING);
    const es_gguf_value *tt = es_gguf_get_arr(ctx, "tokenizer.ggml.token_type", GGUF_VT_INT32);
    const es_gguf_value *mg = es_gguf_get_arr(ctx, "tokenizer.ggml.merges", GGUF_VT_STRING);
    int64_t bos = -1, eos = -1;
    es_gguf_get_int(ctx, "tokenizer.ggml.bos_token_id", &bos);
    es_gguf_get_int(ctx, "tokenizer.ggml.eos_token_id", &eos);
    CHECK(tok && tt && mg && tok->v.arr.n == 400 && tt->v.arr.n == 400 && mg->v.arr.n > 10, "vocabulary arrays");
    if (!tok || !tt || bos < 0 || eos < 0 || bos >= 400 || eos >= 400) return;
    CHECK(es_gguf_str_eq(tok->v.arr.strs[0], "Ā") && es_gguf_str_eq(tok->v.arr.strs[32], "Ġ") &&
              es_gguf_str_eq(tok->v.arr.strs[65], "A"),
          "byte tokens in GPT-2 byte-to-unicode order");
    CHECK(es_gguf_str_eq(tok->v.arr.strs[256], "Ġt") && es_gguf_str_eq(tok->v.arr.strs[258], "Ġthe"),
          "merged tokens follow the byte tokens");
    CHECK(es_gguf_str_eq(tok->v.arr.strs[bos], "<｜begin▁of▁sentence｜>") && es_gguf_arr_int(tt, (uint64_t)bos) == 3,
          "bos is the control token");
    CHECK(es_gguf_str_eq(tok->v.arr.strs[eos], "<｜end▁of▁sentence｜>") && es_gguf_arr_int(tt, (uint64_t)eos) == 3,
          "eos is the control token");
    CHECK(es_gguf_str_eq(tok->v.arr.strs[eos + 1], "<｜User｜>") && es_gguf_arr_int(tt, (uint64_t)eos + 1) == 4 &&
              es_gguf_str_eq(tok->v.arr.strs[eos + 4], "</think>"),
          "user-defined chat tokens");
    CHECK(es_gguf_str_eq(tok->v.arr.strs[399], "<pad_399>") && es_gguf_arr_int(tt, 399) == 1,
          "normal padding tokens fill the vocabulary");
}

/* max |a - b| over the whole tensor, dequantising both. */
static float tensor_maxdiff(const es_gguf_tensor *a, const es_gguf_tensor *b, float *amax) {
    int64_t n = a->ne[0], rows = a->ne[1] * a->ne[2] * a->ne[3];
    float *ra = malloc((size_t)n * sizeof(float)), *rb = malloc((size_t)n * sizeof(float)), d = 0;
    *amax = 0;
    for (int64_t r = 0; r < rows; r++) {
        es_dequant_row(es_kernels_best(), a->type, a->data + (size_t)r * es_row_bytes(a->type, n), ra, n);
        es_dequant_row(es_kernels_best(), b->type, b->data + (size_t)r * es_row_bytes(b->type, n), rb, n);
        for (int64_t i = 0; i < n; i++) d = fmaxf(d, fabsf(ra[i] - rb[i])), *amax = fmaxf(*amax, fabsf(ra[i]));
    }
    free(ra);
    free(rb);
    return d;
}

static void test_gen_types(void) {
    static const struct {
        const char *name;
        uint32_t type;
        float tol; /* max |w - w_f32| relative to max |w| */
    } types[] = {{"f32", ES_TYPE_F32, 0}, {"f16", ES_TYPE_F16, 1e-3f}, {"bf16", ES_TYPE_BF16, 8e-3f},
                 {"q8_0", ES_TYPE_Q8_0, 1.0f / 127}, {"q4_0", ES_TYPE_Q4_0, 1.0f / 7}};
    es_gguf_ctx *f32 = NULL;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char fn[32];
        snprintf(fn, sizeof fn, "tiny_%s.gguf", types[i].name);
        const char *p = tmp_path(fn);
        const char *args[] = {"-o", p, "--type", types[i].name, "--seed", "5", TINY, NULL};
        CHECK(run_gen(args) == 0, "gen_model --type %s exits 0", types[i].name);
        es_gguf_ctx *ctx = open_gguf(p);
        CHECK(ctx != NULL, "tiny %s parses", types[i].name);
        if (!ctx) continue;
        check_tiny(ctx, types[i].type, 0);
        if (!f32) {
            f32 = ctx;
            continue;
        }
        /* the same seed gives the same weights, quantised */
        const char *cmp[] = {"blk.1.ffn_up_exps.weight", "blk.0.attn_k_b.weight", "token_embd.weight"};
        for (int k = 0; k < 3; k++) {
            float amax, d = tensor_maxdiff(es_gguf_find_tensor(f32, cmp[k]), es_gguf_find_tensor(ctx, cmp[k]), &amax);
            CHECK(amax > 0 && d <= types[i].tol * amax, "%s %s: max diff %g vs max %g", types[i].name, cmp[k], d, amax);
        }
        es_gguf_close(ctx);
    }
    /* sane scales: matrices ~ 1/sqrt(fan_in), norms near 1 */
    const es_gguf_tensor *on = f32 ? es_gguf_find_tensor(f32, "output_norm.weight") : NULL;
    const es_gguf_tensor *up = f32 ? es_gguf_find_tensor(f32, "blk.1.ffn_up_exps.weight") : NULL;
    if (on && up) {
        const float *a = (const float *)on->data, *b = (const float *)up->data;
        double ss = 0;
        int norm_ok = 1;
        for (int i = 0; i < 64; i++) norm_ok &= a[i] > 0.9f && a[i] < 1.1f;
        for (int64_t i = 0; i < 64 * 32 * 8; i++) ss += (double)b[i] * b[i];
        double std = sqrt(ss / (64 * 32 * 8));
        CHECK(norm_ok, "norm weights near 1");
        CHECK(fabs(std - 1 / 8.0) < 0.01, "expert weights std %g ~ 1/sqrt(64)", std);
    }
    es_gguf_close(f32);

    /* deterministic, whatever the thread count */
    const char *a1[] = {"-o", tmp_path("t1.gguf"), "--type", "q8_0", "--threads", "1", TINY, NULL};
    const char *a3[] = {"-o", tmp_path("t3.gguf"), "--type", "q8_0", "--threads", "3", TINY, NULL};
    CHECK(run_gen(a1) == 0 && run_gen(a3) == 0, "thread-count runs");
    CHECK(same_file(tmp_path("t1.gguf"), tmp_path("t3.gguf")), "output independent of --threads");
    /* 1 KB slabs: many pipeline steps, cut inside tensors: the same bytes */
    const char *a4[] = {"-o", tmp_path("t4.gguf"), "--type", "q8_0", "--slab-kb", "1", "--threads", "2", TINY, NULL};
    CHECK(run_gen(a4) == 0 && same_file(tmp_path("t1.gguf"), tmp_path("t4.gguf")), "output independent of --slab-kb");
    const char *s2[] = {"-o", tmp_path("t2.gguf"), "--type", "q8_0", "--seed", "6", TINY, NULL};
    CHECK(run_gen(s2) == 0 && !same_file(tmp_path("t1.gguf"), tmp_path("t2.gguf")), "another seed, other weights");
}

/* attn_k_b / attn_v_b hold exactly the rows of the legacy attn_kv_b */
static void test_gen_legacy_and_mtp(void) {
    const char *ls[] = {"-o", tmp_path("legacy.gguf"), "--legacy-kv", "--seed", "5", TINY, NULL};
    const char *ms[] = {"-o", tmp_path("mtp.gguf"), "--mtp", "--seed", "5", "--type", "q8_0", TINY, NULL};
    CHECK(run_gen(ls) == 0 && run_gen(ms) == 0, "legacy and mtp runs");
    es_gguf_ctx *l = open_gguf(tmp_path("legacy.gguf")), *s = open_gguf(tmp_path("tiny_f32.gguf"));
    es_gguf_ctx *m = open_gguf(tmp_path("mtp.gguf"));
    if (m) check_tiny(m, ES_TYPE_Q8_0, 1);
    CHECK(l && s && m, "legacy/split/mtp files parse");
    if (l && s) {
        const es_gguf_tensor *kvb = expect_tensor(l, "blk.2.attn_kv_b.weight", 32, 4 * 64, 1, ES_TYPE_F32);
        const es_gguf_tensor *kb = es_gguf_find_tensor(s, "blk.2.attn_k_b.weight");
        const es_gguf_tensor *vb = es_gguf_find_tensor(s, "blk.2.attn_v_b.weight");
        CHECK(!es_gguf_find_tensor(l, "blk.2.attn_k_b.weight"), "legacy has no attn_k_b");
        expect_int(l, "deepseek2.attention.head_count_kv", 4);
        expect_int(l, "deepseek2.attention.key_length", 48);
        expect_int(l, "deepseek2.attention.value_length", 32);
        CHECK(!es_gguf_find_kv(l, "deepseek2.attention.key_length_mla"), "legacy has no _mla keys");
        int bad = 0;
        const int dn = 32, dv = 32, R = 32;
        for (int h = 0; kvb && kb && vb && h < 4; h++)
            for (int r = 0; r < R; r++) {
                const float *kv = (const float *)kvb->data, *k = (const float *)kb->data, *v = (const float *)vb->data;
                for (int d = 0; d < dn; d++) bad += kv[(h * (dn + dv) + d) * R + r] != k[(h * R + r) * dn + d];
                for (int j = 0; j < dv; j++) bad += kv[(h * (dn + dv) + dn + j) * R + r] != v[(h * dv + j) * R + r];
            }
        CHECK(kvb && kb && vb && bad == 0, "k_b/v_b are the split of kv_b (%d mismatches)", bad);
        const es_gguf_tensor *e1 = es_gguf_find_tensor(l, "blk.1.ffn_up_exps.weight");
        const es_gguf_tensor *e2 = es_gguf_find_tensor(s, "blk.1.ffn_up_exps.weight");
        CHECK(e1 && e2 && memcmp(e1->data, e2->data, e1->nbytes) == 0, "other tensors unchanged by --legacy-kv");
    }
    es_gguf_close(l);
    es_gguf_close(s);
    es_gguf_close(m);
}

static void test_gen_v3_and_overrides(void) {
    const char *p = tmp_path("v3.gguf");
    const char *a[] = {"-o", p, "--preset", "v3", "--layers", "2", "--vocab", "512", "--type", "q4_0", "--quiet",
                       "--set", "general.custom=i16:-7", "--set", "deepseek2.expert_weights_scale=f32:3",
                       "--drop", "tokenizer.ggml.add_eos_token", "--drop-tensor", "blk.1.exp_probs_b.bias", NULL};
    CHECK(run_gen(a) == 0, "v3 preset with overrides");
    es_gguf_ctx *ctx = open_gguf(p);
    CHECK(ctx != NULL, "v3 parses");
    if (!ctx) return;
    expect_tensor(ctx, "blk.0.attn_q_a.weight", 256, 96, 1, ES_TYPE_Q4_0);
    expect_tensor(ctx, "blk.0.attn_q_a_norm.weight", 96, 1, 1, ES_TYPE_F32);
    expect_tensor(ctx, "blk.0.attn_q_b.weight", 96, 8 * 48, 1, ES_TYPE_Q4_0);
    CHECK(!es_gguf_find_tensor(ctx, "blk.0.attn_q.weight"), "no attn_q with q_lora");
    CHECK(!es_gguf_find_tensor(ctx, "blk.1.exp_probs_b.bias"), "--drop-tensor");
    expect_tensor(ctx, "blk.1.ffn_gate_inp.weight", 256, 32, 1, ES_TYPE_F32);
    expect_int(ctx, "deepseek2.expert_gating_func", 2);
    expect_int(ctx, "deepseek2.expert_group_count", 4);
    expect_int(ctx, "deepseek2.expert_group_used_count", 2);
    expect_bool(ctx, "deepseek2.expert_weights_norm", 1);
    expect_int(ctx, "general.custom", -7);
    double f = 0;
    CHECK(es_gguf_get_float(ctx, "deepseek2.expert_weights_scale", &f) == 1 && f == 3.0, "--set replaces (%g)", f);
    CHECK(es_gguf_get_float(ctx, "deepseek2.rope.scaling.factor", &f) == 1 && f == 40.0, "yarn factor");
    CHECK(!es_gguf_find_kv(ctx, "tokenizer.ggml.add_eos_token"), "--drop");
    es_gguf_close(ctx);

    /* with a gate bias, the default v3 file has it for every MoE layer */
    const char *b[] = {"-o", p, "--preset", "v3", "--layers", "2", "--quiet", "--expert_count=16", NULL};
    CHECK(run_gen(b) == 0, "llama.cpp key names work as options");
    ctx = open_gguf(p);
    if (ctx) expect_tensor(ctx, "blk.1.exp_probs_b.bias", 16, 1, 1, ES_TYPE_F32);
    es_gguf_close(ctx);
}

/* Generated with a golden case's configuration, the file has the golden
 * file's keys (same types) and tensors (same shapes, types and offsets). */
static void test_gen_matches_golden(void) {
    const char *gp = test_data_path("golden/v3-tiny/model.gguf");
    if (!test_need_file(gp)) return;
    const char *p = tmp_path("golden.gguf");
    const char *a[] = {"-o", p, "--vocab", "384", "--ctx", "64", "--dim", "64", "--layers", "3", "--dense-layers", "1",
                       "--ffn", "128", "--expert-ffn", "32", "--heads", "4", "--kv-lora", "32", "--nope-dim", "16",
                       "--rope-dim", "8", "--v-dim", "16", "--q-lora", "48", "--experts", "16", "--experts-used", "4",
                       "--shared-experts", "1", "--gating", "sigmoid", "--expert-scale", "2.5", "--expert-norm",
                       "--groups", "4", "--groups-used", "2", "--gate-bias", "--yarn-factor", "0", "--quiet", NULL};
    CHECK(run_gen(a) == 0, "golden-shaped run");
    es_gguf_ctx *g = open_gguf(gp), *m = open_gguf(p);
    if (g && m) {
        int kv_bad = 0, t_bad = 0;
        for (uint64_t i = 0; i < g->n_kv; i++) {
            const es_gguf_kv *k = es_gguf_find_kv(m, g->kv[i].key);
            kv_bad += !k || k->val.type != g->kv[i].val.type;
            if (k && k->val.type != GGUF_VT_ARRAY && k->val.type != GGUF_VT_STRING && strncmp(k->key, "tokenizer.", 10))
                kv_bad += k->val.v.u != g->kv[i].val.v.u; /* the 8 bytes of any scalar */
        }
        for (uint64_t i = 0; i < g->n_tensors; i++) {
            const es_gguf_tensor *gt = &g->tensors[i], *mt = i < m->n_tensors ? &m->tensors[i] : NULL;
            t_bad += !mt || strcmp(mt->name, gt->name) || mt->type != gt->type || mt->offset != gt->offset ||
                     memcmp(mt->ne, gt->ne, sizeof gt->ne);
        }
        CHECK(m->n_kv == g->n_kv && kv_bad == 0, "golden keys and values: %d differ", kv_bad);
        CHECK(m->n_tensors == g->n_tensors && t_bad == 0, "golden tensor directory: %d differ", t_bad);
    }
    CHECK(g && m, "golden and generated files parse");
    es_gguf_close(g);
    es_gguf_close(m);
}

static void test_gen_errors(void) {
    const char *p = tmp_path("bad.gguf");
    const char *unknown[] = {"-o", p, "--no-such-option", "1", NULL};
    const char *noout[] = {"--preset", "tiny", NULL};
    const char *badtype[] = {"-o", p, "--type", "q3_k", NULL};
    const char *badnum[] = {"-o", p, "--dim", "64x", NULL};
    const char *badpreset[] = {"-o", p, "--preset", "huge", NULL};
    const char *badset[] = {"-o", p, "--set", "novalue", "--quiet", NULL};
    const char *rows[] = {"-o", p, "--type", "q8_0", "--nope-dim", "16", "--quiet", NULL};
    const char *used[] = {"-o", p, "--experts-used", "99", "--quiet", NULL};
    const char *groups[] = {"-o", p, "--groups", "3", "--quiet", NULL};
    const char *vocab[] = {"-o", p, "--vocab", "100", "--quiet", NULL};
    const char *dropt[] = {"-o", p, "--drop-tensor", "nope.weight", "--quiet", NULL};
    const char *help[] = {"--help", NULL};
    CHECK(run_gen(unknown) == 2, "unknown option: exit 2");
    CHECK(run_gen(noout) == 2, "no output: exit 2");
    CHECK(run_gen(badtype) == 2, "bad --type: exit 2");
    CHECK(run_gen(badnum) == 2, "bad number: exit 2");
    CHECK(run_gen(badpreset) == 2, "bad preset: exit 2");
    CHECK(run_gen(badset) == 2, "bad --set: exit 2");
    CHECK(run_gen(rows) == 1, "q8_0 with 16-wide rows: exit 1");
    CHECK(run_gen(used) == 1, "experts-used > experts: exit 1");
    CHECK(run_gen(groups) == 1, "groups not dividing experts: exit 1");
    CHECK(run_gen(vocab) == 1, "vocab below the built-in tokens: exit 1");
    CHECK(run_gen(dropt) == 1, "unknown --drop-tensor: exit 1");
    CHECK(!file_exists(p), "no output left behind by failed runs");
    CHECK(run_gen(help) == 0, "--help: exit 0");
    const char *nodir[] = {"-o", tmp_path("missing/x.gguf"), "--quiet", NULL};
    CHECK(run_gen(nodir) == 1, "unwritable output: exit 1");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/es_gguf_writer_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        printf("FAIL cannot create a temporary directory\n");
        return test_summary() | 1;
    }
    test_roundtrip(32);
    test_roundtrip(64);
    test_errors();
    if (access(test_build_path("gen_model"), X_OK) == 0) {
        test_gen_types();
        test_gen_legacy_and_mtp();
        test_gen_v3_and_overrides();
        test_gen_matches_golden();
        test_gen_errors();
    } else {
        CHECK(0, "%s not built", test_build_path("gen_model"));
    }
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return test_summary();
}
