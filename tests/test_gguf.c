/* test_gguf.c — owns: the robustness tests of the GGUF reader (format/gguf.c)
 * and of the model loader's error reporting.
 *
 *   - a real model (golden v3-tiny) parses with the right header values;
 *   - every prefix of its header region, and a sample of prefixes inside the
 *     tensor data, fails cleanly with a message (inside the data: "out of
 *     bounds"); every byte of the header region flipped in several patterns
 *     either parses to a self-consistent result or fails with a message;
 *   - hand-built files with absurd counts, lengths, dimensions, types,
 *     offsets, alignments and nesting each fail with a specific message;
 *   - every value type round-trips, and the typed getters refuse the wrong type;
 *   - es_model_load on rewritten copies of the real model (a key dropped or
 *     retyped, a tensor reshaped, retyped or dropped) fails with a status and a
 *     message that names the key or tensor.
 *
 * Every buffer handed to es_gguf_parse_buffer is a separate allocation of exactly
 * its size, so that AddressSanitizer (make asan-test) sees any read past it.
 * Test files are built with the small byte builder below, on purpose
 * independent of format/gguf_writer.c.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "edgeseek.h"
#include "gguf.h"
#include "quant.h"
#include "testutil.h"

/* ---- byte builder ------------------------------------------------------------ */

typedef struct bb {
    uint8_t *p;
    size_t n, cap;
} bb;

static void bb_put(bb *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) { fprintf(stderr, "out of memory\n"); exit(1); }
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void bb_u8(bb *b, uint8_t v) { bb_put(b, &v, 1); }
static void bb_u32(bb *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    bb_put(b, x, 4);
}
static void bb_u64(bb *b, uint64_t v) {
    bb_u32(b, (uint32_t)v);
    bb_u32(b, (uint32_t)(v >> 32));
}
static void bb_strn(bb *b, const char *s, size_t n) {
    bb_u64(b, n);
    bb_put(b, s, n);
}
static void bb_str(bb *b, const char *s) { bb_strn(b, s, strlen(s)); }
static void bb_pad(bb *b, size_t align) {
    while (b->n % align) bb_u8(b, 0);
}
static void bb_free(bb *b) { free(b->p); memset(b, 0, sizeof *b); }

static void hdr(bb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    bb_put(b, "GGUF", 4);
    bb_u32(b, version);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}
static void kv_u32(bb *b, const char *k, uint32_t v) { bb_str(b, k); bb_u32(b, GGUF_VT_UINT32); bb_u32(b, v); }
static void kv_str(bb *b, const char *k, const char *v) { bb_str(b, k); bb_u32(b, GGUF_VT_STRING); bb_str(b, v); }
static void tinfo(bb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off) {
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims && d < 5; d++) bb_u64(b, ne[d]); /* absurd n_dims: only 5 follow */
    bb_u32(b, type);
    bb_u64(b, off);
}

/* ---- parse helpers --------------------------------------------------------------- */

/* Parses a private copy of exactly n bytes; returns rc, err filled. */
static int parse_copy(const void *data, size_t n, es_gguf_ctx **out, char *err, size_t errlen) {
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy) { fprintf(stderr, "out of memory\n"); exit(1); }
    if (n) memcpy(copy, data, n);
    int rc = es_gguf_parse_buffer(copy, n, out, err, errlen);
    if (rc != 0) free(copy); /* on success the context points into it: done() frees both */
    return rc;
}

/* Frees a context from parse_copy and its buffer. */
static void done(es_gguf_ctx *ctx) {
    if (!ctx) return;
    void *buf = (void *)ctx->base;
    es_gguf_close(ctx);
    free(buf);
}

/* Every pointer of a successful parse lies inside the buffer. */
static int consistent(const es_gguf_ctx *c) {
    const uint8_t *lo = c->base, *hi = c->base + c->size;
    if (c->data_offset > c->size && c->n_tensors) return 0;
    for (uint64_t i = 0; i < c->n_tensors; i++) {
        const es_gguf_tensor *t = &c->tensors[i];
        if (t->data < lo || t->data > hi || t->nbytes > (uint64_t)(hi - t->data)) return 0;
        if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS || !es_type_info(t->type)) return 0;
    }
    for (uint64_t i = 0; i < c->n_kv; i++) {
        const es_gguf_value *v = &c->kv[i].val;
        if (v->type == GGUF_VT_STRING && (v->v.s.len > c->size || (const uint8_t *)v->v.s.ptr < lo ||
                                          (const uint8_t *)v->v.s.ptr + v->v.s.len > hi))
            return 0;
        if (v->type == GGUF_VT_ARRAY && v->v.arr.elem_type == GGUF_VT_STRING)
            for (uint64_t j = 0; j < v->v.arr.n; j++) {
                const es_gguf_str *s = &v->v.arr.strs[j];
                if ((const uint8_t *)s->ptr < lo || s->len > (uint64_t)(hi - (const uint8_t *)s->ptr)) return 0;
            }
    }
    return 1;
}

static int icontains(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (const char *p = hay; *p; p++)
        if (strncasecmp(p, needle, n) == 0) return 1;
    return 0;
}

/* The built buffer must fail to parse with a message containing keyword. */
static void expect_err(const char *label, const bb *b, const char *keyword) {
    char err[512] = "";
    es_gguf_ctx *ctx = (es_gguf_ctx *)1;
    int rc = parse_copy(b->p, b->n, &ctx, err, sizeof err);
    CHECK(rc != 0 && ctx == NULL, "%s: parsed although malformed", label);
    if (rc == 0) { done(ctx); return; }
    CHECK(icontains(err, keyword), "%s: message '%s' lacks '%s'", label, err, keyword);
}

/* ---- the real file ------------------------------------------------------------------ */

static uint8_t *g_file;
static size_t g_size;
static es_gguf_ctx *g_ctx; /* parse of g_file */

static void test_valid_file(void) {
    char err[512] = "";
    int rc = es_gguf_parse_buffer(g_file, g_size, &g_ctx, err, sizeof err);
    CHECK(rc == 0, "v3-tiny does not parse: %s", err);
    if (rc) return;
    const es_gguf_ctx *c = g_ctx;
    CHECK(c->version == 3, "version %u", c->version);
    CHECK(c->n_tensors == 52, "n_tensors %llu", (unsigned long long)c->n_tensors);
    CHECK(c->n_kv == 39, "n_kv %llu", (unsigned long long)c->n_kv);
    CHECK(c->alignment == 32, "alignment %llu", (unsigned long long)c->alignment);
    CHECK(c->data_offset == 11648, "data offset %llu", (unsigned long long)c->data_offset);
    es_gguf_str s;
    CHECK(es_gguf_get_str(c, "general.architecture", &s) == 1 && es_gguf_str_eq(s, "deepseek2"), "architecture");
    int64_t i;
    CHECK(es_gguf_get_int(c, "deepseek2.block_count", &i) == 1 && i == 3, "block_count");
    CHECK(es_gguf_get_int(c, "deepseek2.attention.kv_lora_rank", &i) == 1 && i == 32, "kv_lora_rank");
    double f;
    CHECK(es_gguf_get_float(c, "deepseek2.expert_weights_scale", &f) == 1 && f == 2.5, "expert_weights_scale");
    CHECK(es_gguf_get_float(c, "deepseek2.attention.layer_norm_rms_epsilon", &f) == 1 && f == (double)1e-6f, "eps");
    int bo;
    CHECK(es_gguf_get_bool(c, "deepseek2.expert_weights_norm", &bo) == 1 && bo == 1, "expert_weights_norm");
    const es_gguf_value *tok = es_gguf_get_arr(c, "tokenizer.ggml.tokens", GGUF_VT_STRING);
    CHECK(tok && tok->v.arr.n == 384, "tokenizer.ggml.tokens");
    const es_gguf_tensor *t = es_gguf_find_tensor(c, "token_embd.weight");
    CHECK(t && t->n_dims == 2 && t->ne[0] == 64 && t->ne[1] == 384 && t->ne[2] == 1 && t->type == ES_TYPE_F32 &&
              t->offset == 0 && t->nbytes == 64 * 384 * 4 && t->data == g_file + 11648,
          "token_embd.weight");
    t = es_gguf_find_tensor(c, "blk.1.ffn_gate_exps.weight");
    CHECK(t && t->n_dims == 3 && t->ne[0] == 64 && t->ne[1] == 32 && t->ne[2] == 16, "blk.1.ffn_gate_exps.weight");
    CHECK(es_gguf_find_tensor(c, "no.such.tensor") == NULL && es_gguf_find_kv(c, "no.such.key") == NULL, "absent lookups");
    CHECK(consistent(c), "parse of the real file is inconsistent");
    /* the typed getters refuse the wrong type */
    CHECK(es_gguf_get_int(c, "general.architecture", &i) == -1, "string read as int");
    CHECK(es_gguf_get_bool(c, "deepseek2.block_count", &bo) == -1, "int read as bool");
    CHECK(es_gguf_get_str(c, "deepseek2.block_count", &s) == -1, "int read as string");
    CHECK(es_gguf_get_arr(c, "tokenizer.ggml.tokens", GGUF_VT_INT32) == NULL, "string array read as int32 array");
}

/* Where the tensor infos start: the first tensor name's length prefix. */
static size_t info_start(void) {
    static const char name[] = "token_embd.weight";
    for (size_t p = 0; p + 8 + sizeof name - 1 <= g_size; p++)
        if (g_file[p] == sizeof name - 1 && memcmp(g_file + p + 8, name, sizeof name - 1) == 0 &&
            !g_file[p + 1] && !g_file[p + 2])
            return p;
    return 0;
}

static void test_truncation(void) {
    if (!g_ctx) return;
    uint64_t end = 0; /* where the last tensor's bytes end */
    for (uint64_t i = 0; i < g_ctx->n_tensors; i++) {
        uint64_t e = g_ctx->data_offset + g_ctx->tensors[i].offset + g_ctx->tensors[i].nbytes;
        end = e > end ? e : end;
    }
    /* every prefix of the header region and the start of the data */
    size_t limit = (size_t)g_ctx->data_offset + 256, bad_msg = 0, bad_rc = 0, bad_oob = 0;
    size_t points[512], np = 0;
    for (size_t n = 0; n <= limit && n < g_size; n++) {
        char err[512] = "";
        es_gguf_ctx *c;
        int rc = parse_copy(g_file, n, &c, err, sizeof err);
        if (rc == 0) { bad_rc++; done(c); continue; }
        if (!err[0]) bad_msg++;
        if (n >= g_ctx->data_offset && !icontains(err, "out of bounds")) bad_oob++;
    }
    CHECK(bad_rc == 0 && bad_msg == 0 && bad_oob == 0,
          "header prefixes: %zu parsed, %zu without message, %zu in the data not 'out of bounds'", bad_rc, bad_msg,
          bad_oob);
    /* a sample inside the data: evenly spaced, and ±1 around every tensor's end */
    for (int k = 0; k < 200; k++) points[np++] = (size_t)(limit + (g_size - limit) * (uint64_t)k / 200);
    for (uint64_t i = 0; i < g_ctx->n_tensors && np + 2 < 512; i++) {
        size_t e = (size_t)(g_ctx->data_offset + g_ctx->tensors[i].offset + g_ctx->tensors[i].nbytes);
        points[np++] = e - 1;
        points[np++] = e;
    }
    size_t wrong = 0;
    for (size_t k = 0; k < np; k++) {
        size_t n = points[k];
        if (n > g_size) continue;
        char err[512] = "";
        es_gguf_ctx *c;
        int rc = parse_copy(g_file, n, &c, err, sizeof err);
        if (n >= end) {
            if (rc != 0) { wrong++; printf("prefix %zu: %s\n", n, err); }
        } else if (rc == 0 || !icontains(err, "out of bounds")) {
            wrong++;
            printf("prefix %zu: %s\n", n, rc == 0 ? "parsed" : err);
        }
        if (rc == 0) done(c);
    }
    CHECK(wrong == 0, "%zu of %zu data-region prefixes handled wrongly", wrong, np);
}

/* Parses the damaged buffer in place (it is exactly g_size long) and tallies
 * the outcome: a parse must be self-consistent, a failure must say why. */
static void parse_damaged(const uint8_t *buf, size_t *parsed, size_t *failed, size_t *bad) {
    char err[512] = "";
    es_gguf_ctx *c;
    if (es_gguf_parse_buffer(buf, g_size, &c, err, sizeof err) == 0) {
        (*parsed)++;
        if (!consistent(c)) (*bad)++;
        es_gguf_close(c);
    } else {
        (*failed)++;
        if (!err[0]) (*bad)++;
    }
}

/* Flips, clears and sets every byte of the header region, then damages
 * random bytes. */
static void test_byte_flips(void) {
    if (!g_ctx) return;
    uint8_t *buf = malloc(g_size);
    if (!buf) return;
    memcpy(buf, g_file, g_size);
    size_t is = info_start(), hdr_end = (size_t)g_ctx->data_offset;
    size_t parsed = 0, failed = 0, bad = 0;
    /* all of the first 4 KiB (header, counts, first keys) with 6 patterns; the
     * tensor-info region with 3 */
    static const struct { uint8_t x, set; } pat[] = {{0x01, 0}, {0x80, 0}, {0xff, 0}, {0x10, 0}, {0x00, 1}, {0xff, 1}};
    for (size_t pos = 0; pos < hdr_end; pos++) {
        int in_first = pos < 4096, in_info = pos >= is;
        if (!in_first && !in_info) continue;
        int npat = in_first ? 6 : 3;
        uint8_t orig = buf[pos];
        for (int k = 0; k < npat; k++) {
            buf[pos] = pat[k].set ? pat[k].x : (uint8_t)(orig ^ pat[k].x);
            if (buf[pos] != orig) parse_damaged(buf, &parsed, &failed, &bad);
        }
        buf[pos] = orig;
    }
    /* random multi-byte damage, fixed seed */
    uint64_t st = 12345;
    for (int it = 0; it < 3000; it++) {
        uint8_t save[8];
        size_t at[8];
        int nb = 1 + it % 8;
        for (int j = 0; j < nb; j++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            at[j] = (size_t)((st >> 33) % hdr_end);
            save[j] = buf[at[j]];
            buf[at[j]] = (uint8_t)(st >> 17);
        }
        parse_damaged(buf, &parsed, &failed, &bad);
        for (int j = nb - 1; j >= 0; j--) buf[at[j]] = save[j];
    }
    printf("byte damage: %zu parsed, %zu rejected\n", parsed, failed);
    CHECK(bad == 0 && failed > 0, "byte damage: %zu results inconsistent or without a message", bad);
    free(buf);
}

/* ---- hand-built files ------------------------------------------------------------------- */

static void test_header_errors(void) {
    bb b = {0};
    expect_err("empty buffer", &b, "truncated");
    bb_put(&b, "GGU", 3);
    expect_err("3 bytes", &b, "truncated");
    bb_free(&b);
    hdr(&b, 3, 0, 0);
    b.p[3] = 'X';
    expect_err("bad magic", &b, "not a GGUF");
    bb_free(&b);
    uint32_t versions[] = {0, 1, 4, 0xffffffffu};
    for (int i = 0; i < 4; i++) {
        hdr(&b, versions[i], 0, 0);
        expect_err("version", &b, "unsupported GGUF version");
        bb_free(&b);
    }
    hdr(&b, 3, 0, 0);
    b.n -= 3;
    expect_err("truncated kv count", &b, "truncated");
    bb_free(&b);

    /* absurd counts */
    uint64_t counts[] = {1ull << 63, UINT64_MAX, 1ull << 32, 1000};
    for (int i = 0; i < 4; i++) {
        hdr(&b, 3, 0, counts[i]);
        kv_u32(&b, "a", 1);
        expect_err("n_kv absurd", &b, "metadata entries");
        bb_free(&b);
        hdr(&b, 3, counts[i], 0);
        expect_err("n_tensors absurd", &b, "tensors");
        bb_free(&b);
    }
    /* a valid file with no tensors and no padding (vocab-only) */
    hdr(&b, 2, 0, 1);
    kv_str(&b, "general.architecture", "deepseek2");
    char err[512];
    es_gguf_ctx *c;
    CHECK(parse_copy(b.p, b.n, &c, err, sizeof err) == 0, "vocab-only v2 file: %s", err);
    if (c) { CHECK(c->version == 2 && c->n_tensors == 0 && c->n_kv == 1, "vocab-only values"); done(c); }
    bb_free(&b);
}

static void test_kv_errors(void) {
    bb b = {0};
    /* key length near 2^64, and longer than the file */
    uint64_t lens[] = {UINT64_MAX, UINT64_MAX - 7, 1ull << 63, 1000};
    for (int i = 0; i < 4; i++) {
        hdr(&b, 3, 0, 1);
        bb_u64(&b, lens[i]);
        bb_put(&b, "abcdefghijklmnop", 16); /* enough bytes to pass the entry-count check */
        expect_err("key length", &b, "truncated");
        bb_free(&b);
        hdr(&b, 3, 0, 1);
        bb_str(&b, "k");
        bb_u32(&b, GGUF_VT_STRING);
        bb_u64(&b, lens[i]);
        bb_put(&b, "abcd", 4);
        expect_err("string value length", &b, "truncated");
        bb_free(&b);
    }
    hdr(&b, 3, 0, 1);
    bb_str(&b, "");
    bb_u32(&b, GGUF_VT_UINT8);
    bb_u8(&b, 0);
    expect_err("empty key", &b, "length 0");
    bb_free(&b);
    hdr(&b, 3, 0, 1);
    bb_strn(&b, "a\0b", 3);
    bb_u32(&b, GGUF_VT_UINT8);
    bb_u8(&b, 0);
    expect_err("key with NUL", &b, "NUL");
    bb_free(&b);
    hdr(&b, 3, 0, 2);
    kv_u32(&b, "dup", 1);
    kv_u32(&b, "dup", 2);
    expect_err("duplicate key", &b, "duplicate metadata key");
    bb_free(&b);
    uint32_t types[] = {GGUF_VT_COUNT, 100, 0xffffffffu};
    for (int i = 0; i < 3; i++) {
        hdr(&b, 3, 0, 1);
        bb_str(&b, "k");
        bb_u32(&b, types[i]);
        bb_u64(&b, 0);
        expect_err("unknown value type", &b, "unknown value type");
        bb_free(&b);
        hdr(&b, 3, 0, 1);
        bb_str(&b, "k");
        bb_u32(&b, GGUF_VT_ARRAY);
        bb_u32(&b, types[i]);
        bb_u64(&b, 1);
        bb_u64(&b, 0);
        expect_err("unknown array element type", &b, "unknown array element type");
        bb_free(&b);
    }
    /* array lengths of 2^62 and more, for every element kind */
    uint32_t ets[] = {GGUF_VT_UINT8, GGUF_VT_UINT64, GGUF_VT_FLOAT64, GGUF_VT_STRING, GGUF_VT_ARRAY};
    uint64_t alens[] = {1ull << 62, UINT64_MAX, (UINT64_MAX / 8) + 1};
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 3; j++) {
            hdr(&b, 3, 0, 1);
            bb_str(&b, "k");
            bb_u32(&b, GGUF_VT_ARRAY);
            bb_u32(&b, ets[i]);
            bb_u64(&b, alens[j]);
            for (int z = 0; z < 8; z++) bb_u64(&b, 0);
            expect_err("array length", &b, "truncated");
            bb_free(&b);
        }
    /* arrays nested 100 deep */
    hdr(&b, 3, 0, 1);
    bb_str(&b, "deep");
    bb_u32(&b, GGUF_VT_ARRAY);
    for (int d = 0; d < 100; d++) { bb_u32(&b, GGUF_VT_ARRAY); bb_u64(&b, 1); }
    bb_u32(&b, GGUF_VT_UINT8);
    bb_u64(&b, 0);
    expect_err("nested 100 deep", &b, "nested deeper");
    bb_free(&b);
    /* truncated inside a scalar value */
    hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, GGUF_VT_UINT64);
    bb_u32(&b, 7);
    expect_err("truncated scalar", &b, "truncated");
    bb_free(&b);
}

/* Every value type, arrays of each, and a shallow nesting, read back. */
static void test_value_roundtrip(void) {
    bb b = {0};
    hdr(&b, 3, 0, 17);
    bb_str(&b, "u8"); bb_u32(&b, GGUF_VT_UINT8); bb_u8(&b, 0xfe);
    bb_str(&b, "i8"); bb_u32(&b, GGUF_VT_INT8); bb_u8(&b, 0xff);
    bb_str(&b, "u16"); bb_u32(&b, GGUF_VT_UINT16); bb_u8(&b, 0x34); bb_u8(&b, 0x12);
    bb_str(&b, "i16"); bb_u32(&b, GGUF_VT_INT16); bb_u8(&b, 0xfe); bb_u8(&b, 0xff);
    bb_str(&b, "u32"); bb_u32(&b, GGUF_VT_UINT32); bb_u32(&b, 0xdeadbeef);
    bb_str(&b, "i32"); bb_u32(&b, GGUF_VT_INT32); bb_u32(&b, (uint32_t)-3);
    float f32 = 1.5f;
    uint32_t fb;
    memcpy(&fb, &f32, 4);
    bb_str(&b, "f32"); bb_u32(&b, GGUF_VT_FLOAT32); bb_u32(&b, fb);
    bb_str(&b, "bool"); bb_u32(&b, GGUF_VT_BOOL); bb_u8(&b, 1);
    kv_str(&b, "str", "héllo");
    bb_str(&b, "u64"); bb_u32(&b, GGUF_VT_UINT64); bb_u64(&b, (1ull << 63) + 1);
    bb_str(&b, "i64"); bb_u32(&b, GGUF_VT_INT64); bb_u64(&b, (uint64_t)-(INT64_C(1) << 62));
    double f64 = 3.141592653589793;
    uint64_t db;
    memcpy(&db, &f64, 8);
    bb_str(&b, "f64"); bb_u32(&b, GGUF_VT_FLOAT64); bb_u64(&b, db);
    bb_str(&b, "ai16"); bb_u32(&b, GGUF_VT_ARRAY); bb_u32(&b, GGUF_VT_INT16); bb_u64(&b, 3);
    bb_u8(&b, 1); bb_u8(&b, 0); bb_u8(&b, 0xff); bb_u8(&b, 0xff); bb_u8(&b, 0); bb_u8(&b, 0x80);
    bb_str(&b, "af32"); bb_u32(&b, GGUF_VT_ARRAY); bb_u32(&b, GGUF_VT_FLOAT32); bb_u64(&b, 2);
    bb_u32(&b, fb); bb_u32(&b, fb);
    bb_str(&b, "astr"); bb_u32(&b, GGUF_VT_ARRAY); bb_u32(&b, GGUF_VT_STRING); bb_u64(&b, 2);
    bb_str(&b, "x"); bb_str(&b, "");
    bb_str(&b, "aempty"); bb_u32(&b, GGUF_VT_ARRAY); bb_u32(&b, GGUF_VT_UINT32); bb_u64(&b, 0);
    /* [[1,2],[3]] as u8 */
    bb_str(&b, "nested"); bb_u32(&b, GGUF_VT_ARRAY); bb_u32(&b, GGUF_VT_ARRAY); bb_u64(&b, 2);
    bb_u32(&b, GGUF_VT_UINT8); bb_u64(&b, 2); bb_u8(&b, 1); bb_u8(&b, 2);
    bb_u32(&b, GGUF_VT_UINT8); bb_u64(&b, 1); bb_u8(&b, 3);
    char err[512];
    es_gguf_ctx *c;
    int rc = parse_copy(b.p, b.n, &c, err, sizeof err);
    CHECK(rc == 0, "all value types: %s", err);
    if (rc == 0) {
        int64_t i;
        double f;
        int bo;
        es_gguf_str s;
        CHECK(es_gguf_get_int(c, "u8", &i) == 1 && i == 0xfe, "u8");
        CHECK(es_gguf_get_int(c, "i8", &i) == 1 && i == -1, "i8");
        CHECK(es_gguf_get_int(c, "u16", &i) == 1 && i == 0x1234, "u16");
        CHECK(es_gguf_get_int(c, "i16", &i) == 1 && i == -2, "i16");
        CHECK(es_gguf_get_int(c, "u32", &i) == 1 && i == 0xdeadbeef, "u32");
        CHECK(es_gguf_get_int(c, "i32", &i) == 1 && i == -3, "i32");
        CHECK(es_gguf_get_float(c, "f32", &f) == 1 && f == 1.5, "f32");
        CHECK(es_gguf_get_bool(c, "bool", &bo) == 1 && bo == 1, "bool");
        CHECK(es_gguf_get_str(c, "str", &s) == 1 && es_gguf_str_eq(s, "héllo"), "str");
        CHECK(es_gguf_get_int(c, "u64", &i) == -1, "u64 above INT64_MAX must not read as int64");
        CHECK(es_gguf_find_kv(c, "u64")->val.v.u == (1ull << 63) + 1, "u64 raw");
        CHECK(es_gguf_get_int(c, "i64", &i) == 1 && i == -(INT64_C(1) << 62), "i64");
        CHECK(es_gguf_get_float(c, "f64", &f) == 1 && f == f64, "f64");
        CHECK(es_gguf_get_float(c, "i32", &f) == 1 && f == -3.0, "int read as float");
        CHECK(es_gguf_get_int(c, "f32", &i) == -1 && es_gguf_get_bool(c, "u8", &bo) == -1 &&
                  es_gguf_get_str(c, "u8", &s) == -1 && es_gguf_get_int(c, "absent", &i) == 0,
              "getters on wrong types");
        const es_gguf_value *a = es_gguf_get_arr(c, "ai16", GGUF_VT_INT16);
        CHECK(a && a->v.arr.n == 3 && es_gguf_arr_int(a, 0) == 1 && es_gguf_arr_int(a, 1) == -1 &&
                  es_gguf_arr_int(a, 2) == -32768,
              "int16 array");
        a = es_gguf_get_arr(c, "af32", GGUF_VT_FLOAT32);
        CHECK(a && a->v.arr.n == 2 && es_gguf_arr_float(a, 1) == 1.5, "float array");
        a = es_gguf_get_arr(c, "astr", GGUF_VT_STRING);
        CHECK(a && a->v.arr.n == 2 && es_gguf_str_eq(a->v.arr.strs[0], "x") && a->v.arr.strs[1].len == 0, "string array");
        a = es_gguf_get_arr(c, "aempty", GGUF_VT_UINT32);
        CHECK(a && a->v.arr.n == 0, "empty array");
        a = es_gguf_get_arr(c, "nested", GGUF_VT_ARRAY);
        CHECK(a && a->v.arr.n == 2 && a->v.arr.items[0].v.arr.n == 2 && a->v.arr.items[1].v.arr.n == 1 &&
                  es_gguf_arr_int(&a->v.arr.items[0], 1) == 2 && es_gguf_arr_int(&a->v.arr.items[1], 0) == 3,
              "nested array");
        done(c);
    }
    bb_free(&b);
}

/* One tensor file: header, optional alignment key, infos, padding, data. */
typedef struct tspec {
    const char *name;
    uint32_t n_dims;
    uint64_t ne[5];
    uint32_t type;
    uint64_t off;
} tspec;

static void build_tensors(bb *b, const tspec *t, int n, int64_t align_key, uint32_t align_type, size_t data_bytes) {
    hdr(b, 3, (uint64_t)n, align_key >= 0 ? 1 : 0);
    if (align_key >= 0) {
        bb_str(b, "general.alignment");
        bb_u32(b, align_type);
        if (align_type == GGUF_VT_UINT64) bb_u64(b, (uint64_t)align_key);
        else bb_u32(b, (uint32_t)align_key);
    }
    for (int i = 0; i < n; i++) tinfo(b, t[i].name, t[i].n_dims, t[i].ne, t[i].type, t[i].off);
    bb_pad(b, align_key > 0 && (align_key & (align_key - 1)) == 0 && align_key <= 4096 ? (size_t)align_key : 32);
    for (size_t i = 0; i < data_bytes; i++) bb_u8(b, (uint8_t)i);
}

static void tensor_case(const char *label, const tspec *t, int n, size_t data_bytes, const char *keyword) {
    bb b = {0};
    build_tensors(&b, t, n, -1, 0, data_bytes);
    if (keyword) {
        expect_err(label, &b, keyword);
    } else {
        char err[512];
        es_gguf_ctx *c;
        int rc = parse_copy(b.p, b.n, &c, err, sizeof err);
        CHECK(rc == 0, "%s: %s", label, err);
        if (rc == 0) { CHECK(consistent(c), "%s: inconsistent", label); done(c); }
    }
    bb_free(&b);
}

static void test_tensor_errors(void) {
    const uint64_t big = 1ull << 32;
    tspec ok[] = {{"a", 2, {8, 2}, ES_TYPE_F32, 0}, {"b", 1, {32}, ES_TYPE_Q8_0, 64}};
    tensor_case("two valid tensors", ok, 2, 64 + 34, NULL);
    tensor_case("two valid tensors, data short by one", ok, 2, 64 + 33, "out of bounds");
    tspec t;
    t = (tspec){"t", 0, {0}, ES_TYPE_F32, 0};
    tensor_case("n_dims 0", &t, 1, 64, "dimensions");
    t = (tspec){"t", 5, {1, 1, 1, 1, 1}, ES_TYPE_F32, 0};
    tensor_case("n_dims 5", &t, 1, 64, "dimensions");
    t = (tspec){"t", 0xffffffffu, {1}, ES_TYPE_F32, 0};
    tensor_case("n_dims 2^32-1", &t, 1, 64, "dimensions");
    t = (tspec){"t", 3, {big, big, big}, ES_TYPE_F32, 0};
    tensor_case("dims product overflows", &t, 1, 64, "too large");
    t = (tspec){"t", 2, {1ull << 63, 2}, ES_TYPE_F32, 0};
    tensor_case("dim 2^63", &t, 1, 64, "too large");
    t = (tspec){"t", 2, {4, 0}, ES_TYPE_F32, 0};
    tensor_case("dim 0", &t, 1, 64, "zero");
    t = (tspec){"t", 2, {1ull << 31, 1ull << 31}, ES_TYPE_F32, 0};
    tensor_case("byte size overflows", &t, 1, 64, "overflows");
    t = (tspec){"t", 2, {1ull << 31, 1ull << 20}, ES_TYPE_F32, 0};
    tensor_case("2^51 elements in a small file", &t, 1, 64, "out of bounds");
    uint32_t unknown[] = {4, 5, 31, ES_TYPE_COUNT, 1000, 0xffffffffu};
    for (int i = 0; i < 6; i++) {
        t = (tspec){"t", 1, {32}, unknown[i], 0};
        tensor_case("unknown tensor type", &t, 1, 64, "unknown type");
    }
    t = (tspec){"t", 1, {33}, ES_TYPE_Q8_0, 0};
    tensor_case("row not a multiple of the block", &t, 1, 64, "block size");
    t = (tspec){"t", 1, {4}, ES_TYPE_F32, 4};
    tensor_case("misaligned offset", &t, 1, 64, "not aligned");
    t = (tspec){"t", 1, {4}, ES_TYPE_F32, 64};
    tensor_case("offset at the end of the data", &t, 1, 64, "out of bounds");
    t = (tspec){"t", 1, {4}, ES_TYPE_F32, 1ull << 63};
    tensor_case("offset 2^63", &t, 1, 64, "out of bounds");
    t = (tspec){"t", 1, {4}, ES_TYPE_F32, UINT64_MAX - 31};
    tensor_case("offset + size wraps around", &t, 1, 64, "out of bounds");
    tspec ov[] = {{"a", 1, {16}, ES_TYPE_F32, 0}, {"b", 1, {16}, ES_TYPE_F32, 32}};
    tensor_case("overlapping tensors", ov, 2, 128, "overlap");
    tspec same[] = {{"a", 1, {8}, ES_TYPE_F32, 0}, {"b", 1, {8}, ES_TYPE_F32, 0}};
    tensor_case("two tensors at one offset", same, 2, 64, "overlap");
    tspec dup[] = {{"a", 1, {8}, ES_TYPE_F32, 0}, {"a", 1, {8}, ES_TYPE_F32, 32}};
    tensor_case("duplicate tensor names", dup, 2, 64, "duplicate tensor");
    t = (tspec){"", 1, {8}, ES_TYPE_F32, 0};
    tensor_case("empty tensor name", &t, 1, 64, "invalid name");

    /* alignment values */
    t = (tspec){"t", 1, {8}, ES_TYPE_F32, 0};
    struct { int64_t v; uint32_t type; const char *kw; } al[] = {
        {0, GGUF_VT_UINT32, "alignment"}, {3, GGUF_VT_UINT32, "alignment"}, {48, GGUF_VT_UINT32, "alignment"},
        {32, GGUF_VT_UINT64, "alignment"}, {32, GGUF_VT_INT32, "alignment"}, {1u << 31, GGUF_VT_UINT32, "truncated"},
    };
    for (size_t i = 0; i < sizeof al / sizeof al[0]; i++) {
        bb b = {0};
        build_tensors(&b, &t, 1, al[i].v, al[i].type, 64);
        char label[64];
        snprintf(label, sizeof label, "alignment %lld (type %u)", (long long)al[i].v, al[i].type);
        expect_err(label, &b, al[i].kw);
        bb_free(&b);
    }
    bb b = {0};
    build_tensors(&b, &t, 1, 64, GGUF_VT_UINT32, 64);
    char err[512];
    es_gguf_ctx *c;
    int rc = parse_copy(b.p, b.n, &c, err, sizeof err);
    CHECK(rc == 0, "alignment 64: %s", err);
    if (rc == 0) {
        CHECK(c->alignment == 64 && c->data_offset % 64 == 0 && c->tensors[0].data == c->base + c->data_offset,
              "alignment 64 values");
        done(c);
    }
    bb_free(&b);
    /* truncated inside a tensor info */
    tspec one = {"tensor", 2, {8, 2}, ES_TYPE_F32, 0};
    build_tensors(&b, &one, 1, -1, 0, 0);
    /* below 24 + 33 bytes the count check ("impossible") fires first */
    size_t info_end = 24 + 8 + 6 + 4 + 16 + 4 + 8;
    for (size_t n = 24 + 33; n < info_end; n++) {
        bb cut = {b.p, n, n};
        expect_err("truncated tensor info", &cut, "truncated");
    }
    bb_free(&b);
}

/* Many distinct keys and tensors parse in near-linear time (the duplicate
 * checks once compared every pair: 17 s for a 2 MB file of 100k keys), and a
 * duplicate among them is still found.  dup: 0 none, 1 key, 2 tensor name. */
static void many_entries(int dup) {
    enum { NK = 100000, NT = 30000 };
    bb b = {0};
    hdr(&b, 3, NT, NK);
    char name[32];
    for (int i = 0; i < NK; i++) {
        snprintf(name, sizeof name, "k%07x", dup == 1 && i == NK - 1 ? 0 : i);
        bb_str(&b, name);
        bb_u32(&b, GGUF_VT_UINT8);
        bb_u8(&b, (uint8_t)i);
    }
    for (int i = 0; i < NT; i++) {
        snprintf(name, sizeof name, "t%07x", dup == 2 && i == NT - 1 ? 0 : i);
        uint64_t ne = 8;
        tinfo(&b, name, 1, &ne, ES_TYPE_F32, (uint64_t)i * 32);
    }
    bb_pad(&b, 32);
    for (int i = 0; i < NT * 32; i++) bb_u8(&b, 0);
    if (dup) {
        expect_err("duplicate among many", &b, dup == 1 ? "duplicate metadata key 'k0000000'" : "duplicate tensor name 't0000000'");
        bb_free(&b);
        return;
    }
    char err[512];
    es_gguf_ctx *c;
    clock_t t0 = clock();
    int rc = parse_copy(b.p, b.n, &c, err, sizeof err);
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    CHECK(rc == 0, "%d keys, %d tensors: %s", NK, NT, err);
    if (rc == 0) done(c);
    /* generous: ~0.05 s optimised, a few times that under the sanitizers */
    CHECK(secs < 5.0, "%d keys and %d tensors took %.2f s to parse", NK, NT, secs);
    bb_free(&b);
}

static void test_many_entries(void) {
    for (int dup = 0; dup < 3; dup++) many_entries(dup);
}

/* ---- the model loader on rewritten copies of the real model ----------------------------------- */

/* Writes value v's payload (without its type tag, as arrays nest). */
static void put_value(bb *b, const es_gguf_value *v) {
    switch (v->type) {
    case GGUF_VT_UINT8: case GGUF_VT_INT8: case GGUF_VT_BOOL: bb_u8(b, (uint8_t)v->v.u); break;
    case GGUF_VT_UINT16: case GGUF_VT_INT16: bb_u8(b, (uint8_t)v->v.u); bb_u8(b, (uint8_t)(v->v.u >> 8)); break;
    case GGUF_VT_UINT32: case GGUF_VT_INT32: bb_u32(b, (uint32_t)v->v.u); break;
    case GGUF_VT_UINT64: case GGUF_VT_INT64: bb_u64(b, v->v.u); break;
    case GGUF_VT_FLOAT32: { float f = (float)v->v.f; uint32_t x; memcpy(&x, &f, 4); bb_u32(b, x); break; }
    case GGUF_VT_FLOAT64: { uint64_t x; memcpy(&x, &v->v.f, 8); bb_u64(b, x); break; }
    case GGUF_VT_STRING: bb_strn(b, v->v.s.ptr, (size_t)v->v.s.len); break;
    case GGUF_VT_ARRAY: {
        uint32_t et = v->v.arr.elem_type;
        bb_u32(b, et);
        bb_u64(b, v->v.arr.n);
        if (et == GGUF_VT_STRING) {
            for (uint64_t i = 0; i < v->v.arr.n; i++) bb_strn(b, v->v.arr.strs[i].ptr, (size_t)v->v.arr.strs[i].len);
        } else if (et == GGUF_VT_ARRAY) {
            for (uint64_t i = 0; i < v->v.arr.n; i++) put_value(b, &v->v.arr.items[i]);
        } else {
            static const uint8_t sz[GGUF_VT_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
            bb_put(b, v->v.arr.data, (size_t)(v->v.arr.n * sz[et]));
        }
        break;
    }
    }
}

typedef struct mods {
    const char *drop_key;
    const char *string_key;  /* replaced by the string "oops" */
    const char *key_str;     /* set this string key to key_val */
    const char *key_val;
    const char *drop_tensor;
    const char *tensor;      /* reshaped and/or retyped */
    int64_t ne0, ne1;        /* 0: unchanged */
    int64_t type;            /* -1: unchanged */
} mods;

/* Re-serialises the parsed real model with the changes in md.  Tensor data
 * is copied (as far as it reaches) into freshly laid-out, aligned slots. */
static void rewrite(const es_gguf_ctx *g, const mods *md, bb *b) {
    uint64_t n_kv = 0, n_t = 0;
    for (uint64_t i = 0; i < g->n_kv; i++) n_kv += !(md->drop_key && !strcmp(g->kv[i].key, md->drop_key));
    for (uint64_t i = 0; i < g->n_tensors; i++) n_t += !(md->drop_tensor && !strcmp(g->tensors[i].name, md->drop_tensor));
    hdr(b, 3, n_t, n_kv);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const es_gguf_kv *kv = &g->kv[i];
        if (md->drop_key && !strcmp(kv->key, md->drop_key)) continue;
        bb_str(b, kv->key);
        if ((md->string_key && !strcmp(kv->key, md->string_key)) || (md->key_str && !strcmp(kv->key, md->key_str))) {
            bb_u32(b, GGUF_VT_STRING);
            bb_str(b, md->key_str && !strcmp(kv->key, md->key_str) ? md->key_val : "oops");
            continue;
        }
        bb_u32(b, kv->val.type);
        put_value(b, &kv->val);
    }
    uint64_t off = 0, *offs = calloc(g->n_tensors + 1, sizeof *offs), *sizes = calloc(g->n_tensors + 1, sizeof *sizes);
    uint32_t *types = calloc(g->n_tensors + 1, sizeof *types);
    int64_t(*nes)[4] = calloc(g->n_tensors + 1, sizeof *nes);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const es_gguf_tensor *t = &g->tensors[i];
        if (md->drop_tensor && !strcmp(t->name, md->drop_tensor)) continue;
        memcpy(nes[i], t->ne, sizeof nes[i]);
        types[i] = t->type;
        if (md->tensor && !strcmp(t->name, md->tensor)) {
            if (md->ne0) nes[i][0] = md->ne0;
            if (md->ne1) nes[i][1] = md->ne1;
            if (md->type >= 0) types[i] = (uint32_t)md->type;
        }
        const es_type_traits *tr = es_type_info(types[i]);
        sizes[i] = (uint64_t)(nes[i][0] * nes[i][1] * nes[i][2] * nes[i][3]) / tr->block_size * tr->type_size;
        offs[i] = off;
        off = (off + sizes[i] + 31) / 32 * 32;
        bb_str(b, t->name);
        bb_u32(b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) bb_u64(b, (uint64_t)nes[i][d]);
        bb_u32(b, types[i]);
        bb_u64(b, offs[i]);
    }
    bb_pad(b, (size_t)g->alignment);
    size_t base = b->n;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const es_gguf_tensor *t = &g->tensors[i];
        if (md->drop_tensor && !strcmp(t->name, md->drop_tensor)) continue;
        while (b->n < base + offs[i]) bb_u8(b, 0);
        size_t keep = (size_t)(sizes[i] < t->nbytes ? sizes[i] : t->nbytes);
        bb_put(b, t->data, keep);
        for (size_t z = keep; z < sizes[i]; z++) bb_u8(b, 0);
    }
    free(offs);
    free(sizes);
    free(types);
    free(nes);
}

static char g_dir[64];

static es_status load_rewritten(const char *label, const mods *md, char *err, size_t errlen) {
    bb b = {0};
    rewrite(g_ctx, md, &b);
    char path[128];
    snprintf(path, sizeof path, "%s/m.gguf", g_dir);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b.p, 1, b.n, f) != b.n) {
        CHECK(0, "%s: cannot write %s", label, path);
        if (f) fclose(f);
        bb_free(&b);
        return ES_ERR_IO;
    }
    fclose(f);
    bb_free(&b);
    es_model *m = NULL;
    err[0] = 0;
    es_status st = es_model_load(path, NULL, &m, err, errlen);
    es_model_free(m);
    remove(path);
    return st;
}

/* Loading must fail with a status in {want, alt} and a message naming `name`. */
static void expect_load_err(const char *label, const mods *md, es_status want, es_status alt, const char *name) {
    char err[512];
    es_status st = load_rewritten(label, md, err, sizeof err);
    CHECK(st == want || st == alt, "%s: status %d (%s), want %d; message '%s'", label, (int)st, es_status_str(st),
          (int)want, err);
    CHECK(strstr(err, name) != NULL, "%s: message '%s' does not name %s", label, err, name);
}

static void test_loader(void) {
    if (!g_ctx) return;
    snprintf(g_dir, sizeof g_dir, "/tmp/es_gguf_XXXXXX");
    if (!mkdtemp(g_dir)) { CHECK(0, "mkdtemp failed"); return; }
    char err[512];
    mods none = {.type = -1};
    /* the unmodified rewrite parses to the same directory and loads */
    bb b = {0};
    rewrite(g_ctx, &none, &b);
    es_gguf_ctx *c;
    int rc = parse_copy(b.p, b.n, &c, err, sizeof err);
    CHECK(rc == 0, "rewritten model does not parse: %s", err);
    if (rc == 0) {
        int same = c->n_kv == g_ctx->n_kv && c->n_tensors == g_ctx->n_tensors;
        for (uint64_t i = 0; same && i < c->n_tensors; i++) {
            const es_gguf_tensor *t = es_gguf_find_tensor(g_ctx, c->tensors[i].name);
            same = t && t->nbytes == c->tensors[i].nbytes && !memcmp(t->data, c->tensors[i].data, (size_t)t->nbytes);
        }
        CHECK(same, "rewritten model differs from the original");
        done(c);
    }
    bb_free(&b);
    es_status st = load_rewritten("unmodified", &none, err, sizeof err);
    CHECK(st == ES_OK, "unmodified rewrite does not load: %s", err);

    mods m;
    const char *required[] = {"deepseek2.attention.kv_lora_rank", "deepseek2.embedding_length",
                              "deepseek2.block_count", "deepseek2.attention.head_count"};
    for (int i = 0; i < 4; i++) {
        m = (mods){.drop_key = required[i], .type = -1};
        expect_load_err("missing required key", &m, ES_ERR_FORMAT, ES_ERR_FORMAT, required[i]);
        m = (mods){.string_key = required[i], .type = -1};
        expect_load_err("key of the wrong type", &m, ES_ERR_FORMAT, ES_ERR_FORMAT, required[i]);
    }
    m = (mods){.string_key = "deepseek2.expert_weights_norm", .type = -1};
    expect_load_err("bool key as string", &m, ES_ERR_FORMAT, ES_ERR_FORMAT, "expert_weights_norm");
    m = (mods){.string_key = "deepseek2.expert_weights_scale", .type = -1};
    expect_load_err("float key as string", &m, ES_ERR_FORMAT, ES_ERR_FORMAT, "expert_weights_scale");
    m = (mods){.key_str = "general.architecture", .key_val = "llama", .type = -1};
    expect_load_err("other architecture", &m, ES_ERR_UNSUPPORTED, ES_ERR_UNSUPPORTED, "llama");
    m = (mods){.drop_key = "general.architecture", .type = -1};
    expect_load_err("no architecture", &m, ES_ERR_FORMAT, ES_ERR_FORMAT, "general.architecture");

    m = (mods){.tensor = "blk.1.attn_kv_a_mqa.weight", .ne1 = 41, .type = -1};
    expect_load_err("tensor of the wrong shape", &m, ES_ERR_FORMAT, ES_ERR_FORMAT, "blk.1.attn_kv_a_mqa.weight");
    m = (mods){.tensor = "blk.0.attn_kv_a_norm.weight", .ne0 = 16, .type = -1};
    expect_load_err("norm of the wrong length", &m, ES_ERR_FORMAT, ES_ERR_FORMAT, "blk.0.attn_kv_a_norm.weight");
    m = (mods){.drop_tensor = "blk.2.attn_output.weight", .type = -1};
    expect_load_err("missing tensor", &m, ES_ERR_FORMAT, ES_ERR_FORMAT, "blk.2.attn_output.weight");
    m = (mods){.drop_tensor = "blk.1.attn_v_b.weight", .type = -1};
    expect_load_err("attn_k_b without attn_v_b", &m, ES_ERR_FORMAT, ES_ERR_FORMAT, "attn_v_b");
    /* Valid GGUF types edgeseek cannot compute with: ES_ERR_UNSUPPORTED, as
     * edgeseek.h documents. */
    uint32_t unsup[] = {ES_TYPE_MXFP4, ES_TYPE_Q8_1};
    const char *unsup_name[] = {"MXFP4", "Q8_1"};
    for (int i = 0; i < 2; i++) {
        m = (mods){.tensor = "blk.1.ffn_down_exps.weight", .type = unsup[i]};
        expect_load_err("unsupported tensor type", &m, ES_ERR_UNSUPPORTED, ES_ERR_UNSUPPORTED, "blk.1.ffn_down_exps.weight");
        st = load_rewritten("unsupported tensor type", &m, err, sizeof err);
        CHECK(strstr(err, unsup_name[i]) != NULL, "unsupported type: message '%s' does not name %s", err, unsup_name[i]);
    }

    /* file-level failures */
    char path[128];
    snprintf(path, sizeof path, "%s/missing.gguf", g_dir);
    es_model *em = NULL;
    st = es_model_load(path, NULL, &em, err, sizeof err);
    CHECK(st == ES_ERR_IO && em == NULL && strstr(err, "missing.gguf"), "nonexistent file: status %d '%s'", (int)st, err);
    snprintf(path, sizeof path, "%s/trunc.gguf", g_dir);
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(g_file, 1, g_size - 100, f);
        fclose(f);
        st = es_model_load(path, NULL, &em, err, sizeof err);
        CHECK(st == ES_ERR_FORMAT && em == NULL && icontains(err, "out of bounds"), "truncated file: status %d '%s'",
              (int)st, err);
        remove(path);
    }
    snprintf(path, sizeof path, "%s/empty.gguf", g_dir);
    f = fopen(path, "wb");
    if (f) {
        fclose(f);
        st = es_model_load(path, NULL, &em, err, sizeof err);
        CHECK(st != ES_OK && em == NULL && err[0], "empty file: status %d '%s'", (int)st, err);
        remove(path);
    }
    st = es_model_load(g_dir, NULL, &em, err, sizeof err);
    CHECK(st != ES_OK && em == NULL && err[0], "directory: status %d '%s'", (int)st, err);
    rmdir(g_dir);
}

int main(void) {
    const char *path = test_data_path("golden/v3-tiny/model.gguf");
    if (test_need_file(path)) {
        g_file = test_read_file(path, &g_size);
        CHECK(g_file != NULL, "cannot read %s", path);
    }
    test_header_errors();
    test_kv_errors();
    test_value_roundtrip();
    test_tensor_errors();
    test_many_entries();
    if (g_file) {
        /* an exact-size copy, so that reads past the end are caught */
        uint8_t *exact = malloc(g_size);
        memcpy(exact, g_file, g_size);
        free(g_file);
        g_file = exact;
        test_valid_file();
        test_truncation();
        test_byte_flips();
        test_loader();
    }
    es_gguf_close(g_ctx);
    free(g_file);
    return test_summary();
}
