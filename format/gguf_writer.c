/* gguf_writer.c — streaming GGUF v3 writer (see gguf_writer.h).
 *
 * Owns: serialising metadata values into per-key byte blobs, the tensor
 * directory and its aligned data layout, buffered output with full error
 * checking, and streaming tensor data (raw or converted from f32 rows).
 *
 * File layout written:
 *   "GGUF" u32 3  u64 n_tensors  u64 n_kv
 *   n_kv      × { u64 len, key bytes, u32 type, value }
 *   n_tensors × { u64 len, name bytes, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset }
 *   zero padding to the alignment
 *   each tensor's data, each followed by zero padding to the alignment
 * Offsets are relative to the start of the data section, like ggml's writer.
 */
#include "gguf_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgeseek.h"
#include "kernels.h"
#include "quant.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "es_gguf_writer assumes a little-endian host (GGUF is little-endian)"
#endif

#define GGUF_W_VERSION 3
#define GGUF_W_MAX_DEPTH 8                /* nested arrays, as the reader accepts */
#define GGUF_W_OUTBUF (4u << 20)          /* output buffer; larger writes bypass it */
#define GGUF_W_SCRATCH (1u << 20)         /* converted rows per write_rows_f32 batch */

/* growable byte buffer; oom is sticky so callers check once */
typedef struct bytes {
    uint8_t *p;
    size_t len, cap;
    int oom;
} bytes;

typedef struct wkv {
    char *key;
    uint8_t *blob; /* u32 type followed by the encoded value */
    size_t len;
} wkv;

typedef struct wtensor {
    char *name;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    uint32_t type;
    uint64_t nbytes;
    uint64_t offset; /* set by assign_offsets() */
} wtensor;

struct es_gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    uint64_t alignment;

    /* output state */
    es_outfile *of;        /* the temporary renamed over the path by es_gguf_w_finish */
    int opened, finished;
    size_t cur;            /* index of the tensor receiving data */
    uint64_t cur_written;  /* bytes of it written so far */
    uint8_t *out;
    size_t out_len;
    uint8_t *scratch;
    size_t scratch_cap;

    int failed;
    char err[512];
};

/* ---- errors ----------------------------------------------------------------- */

static int fail(es_gguf_writer *w, const char *fmt, ...) {
    if (!w->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->err, sizeof w->err, fmt, ap);
        va_end(ap);
        w->failed = 1;
    }
    return -1;
}

const char *es_gguf_w_error(const es_gguf_writer *w) { return w->failed ? w->err : ""; }

/* ---- byte buffer -------------------------------------------------------------- */

static void put(bytes *b, const void *data, size_t n) {
    if (b->oom || n == 0) return;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) { b->oom = 1; return; }
            cap *= 2;
        }
        uint8_t *p = realloc(b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void put_u32(bytes *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(bytes *b, uint64_t v) { put(b, &v, 8); }
static void put_str(bytes *b, const char *s, uint64_t len) {
    put_u64(b, len);
    put(b, s, (size_t)len);
}

/* ---- value encoding ------------------------------------------------------------ */

/* bytes of a fixed-size value; 0 for string, array and unknown types */
static size_t scalar_size(uint32_t t) {
    static const uint8_t size[GGUF_VT_COUNT] = {
        [GGUF_VT_UINT8] = 1, [GGUF_VT_INT8] = 1,   [GGUF_VT_BOOL] = 1,    [GGUF_VT_UINT16] = 2,
        [GGUF_VT_INT16] = 2, [GGUF_VT_UINT32] = 4, [GGUF_VT_INT32] = 4,   [GGUF_VT_FLOAT32] = 4,
        [GGUF_VT_UINT64] = 8, [GGUF_VT_INT64] = 8, [GGUF_VT_FLOAT64] = 8,
    };
    return t < GGUF_VT_COUNT ? size[t] : 0;
}

/* Encodes a scalar of the reader's representation into its GGUF bytes. */
static void put_scalar(bytes *b, const es_gguf_value *v) {
    uint64_t u = v->v.u;
    if (v->type == GGUF_VT_FLOAT32) {
        float f = (float)v->v.f;
        put(b, &f, 4);
        return;
    }
    if (v->type == GGUF_VT_FLOAT64) {
        double d = v->v.f;
        put(b, &d, 8);
        return;
    }
    if (v->type == GGUF_VT_BOOL) u = u != 0;
    if (v->type == GGUF_VT_INT8 || v->type == GGUF_VT_INT16 || v->type == GGUF_VT_INT32 ||
        v->type == GGUF_VT_INT64)
        u = (uint64_t)v->v.i;
    put(b, &u, scalar_size(v->type)); /* little-endian: the low bytes */
}

/* Encodes v (type tag included when with_type) after validating it. */
static int put_value(es_gguf_writer *w, bytes *b, const es_gguf_value *v, int with_type, int depth,
                     const char *key) {
    if (v->type >= GGUF_VT_COUNT) return fail(w, "key '%s': unknown value type %u", key, v->type);
    if (with_type) put_u32(b, v->type);
    if (v->type == GGUF_VT_STRING) {
        if (v->v.s.len && !v->v.s.ptr) return fail(w, "key '%s': string with NULL data", key);
        put_str(b, v->v.s.ptr, v->v.s.len);
        return 0;
    }
    if (v->type != GGUF_VT_ARRAY) {
        put_scalar(b, v);
        return 0;
    }
    if (depth >= GGUF_W_MAX_DEPTH)
        return fail(w, "key '%s': arrays nested deeper than %d", key, GGUF_W_MAX_DEPTH);
    uint32_t et = v->v.arr.elem_type;
    uint64_t n = v->v.arr.n;
    if (et >= GGUF_VT_COUNT) return fail(w, "key '%s': unknown array element type %u", key, et);
    put_u32(b, et);
    put_u64(b, n);
    if (et == GGUF_VT_STRING) {
        if (n && !v->v.arr.strs) return fail(w, "key '%s': string array with NULL strings", key);
        for (uint64_t i = 0; i < n; i++) {
            if (v->v.arr.strs[i].len && !v->v.arr.strs[i].ptr)
                return fail(w, "key '%s': string %llu has NULL data", key, (unsigned long long)i);
            put_str(b, v->v.arr.strs[i].ptr, v->v.arr.strs[i].len);
        }
    } else if (et == GGUF_VT_ARRAY) {
        if (n && !v->v.arr.items) return fail(w, "key '%s': nested array with NULL items", key);
        for (uint64_t i = 0; i < n; i++) {
            if (v->v.arr.items[i].type != GGUF_VT_ARRAY)
                return fail(w, "key '%s': item %llu of an array of arrays has type %s", key,
                            (unsigned long long)i, es_gguf_value_type_name(v->v.arr.items[i].type));
            if (put_value(w, b, &v->v.arr.items[i], 0, depth + 1, key)) return -1;
        }
    } else {
        size_t es = scalar_size(et);
        if (n > SIZE_MAX / es) return fail(w, "key '%s': array of %llu elements is too large", key,
                                           (unsigned long long)n);
        if (n && !v->v.arr.data) return fail(w, "key '%s': array with NULL data", key);
        put(b, v->v.arr.data, (size_t)n * es);
    }
    return 0;
}

/* ---- key/value table ------------------------------------------------------------- */

static long find_kv(const es_gguf_writer *w, const char *key) {
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) return (long)i;
    return -1;
}

/* general.alignment doubles as the data alignment: validate and apply it. */
static int apply_alignment(es_gguf_writer *w, const bytes *b) {
    uint32_t type, v = 0;
    memcpy(&type, b->p, 4);
    if (type == GGUF_VT_UINT32) memcpy(&v, b->p + 4, 4);
    if (type != GGUF_VT_UINT32 || v == 0 || (v & (v - 1)))
        return fail(w, "general.alignment must be a non-zero power of two uint32");
    w->alignment = v;
    return 0;
}

static int check_meta_phase(es_gguf_writer *w, const char *key) {
    if (w->failed) return -1;
    if (!key || !*key) return fail(w, "empty metadata key");
    if (w->opened) return fail(w, "key '%s' set after es_gguf_w_open", key);
    return 0;
}

/* Stores the encoded value b (ownership taken) under key. */
static int set_blob(es_gguf_writer *w, const char *key, bytes *b) {
    if (b->oom) { free(b->p); return fail(w, "out of memory encoding key '%s'", key); }
    if (strcmp(key, "general.alignment") == 0 && apply_alignment(w, b)) { free(b->p); return -1; }
    long i = find_kv(w, key);
    if (i >= 0) {
        free(w->kv[i].blob);
        w->kv[i].blob = b->p;
        w->kv[i].len = b->len;
        return 0;
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 32;
        wkv *kv = realloc(w->kv, cap * sizeof *kv);
        if (!kv) { free(b->p); return fail(w, "out of memory"); }
        w->kv = kv;
        w->cap_kv = cap;
    }
    char *k = strdup(key);
    if (!k) { free(b->p); return fail(w, "out of memory"); }
    w->kv[w->n_kv++] = (wkv){k, b->p, b->len};
    return 0;
}

int es_gguf_w_value(es_gguf_writer *w, const char *key, const es_gguf_value *v) {
    if (check_meta_phase(w, key)) return -1;
    if (!v) return fail(w, "key '%s': NULL value", key);
    bytes b = {0};
    if (put_value(w, &b, v, 1, 0, key)) { free(b.p); return -1; }
    return set_blob(w, key, &b);
}

int es_gguf_w_remove(es_gguf_writer *w, const char *key) {
    if (check_meta_phase(w, key)) return -1;
    long i = find_kv(w, key);
    if (i < 0) return 0;
    free(w->kv[i].key);
    free(w->kv[i].blob);
    memmove(&w->kv[i], &w->kv[i + 1], (w->n_kv - (size_t)i - 1) * sizeof *w->kv);
    w->n_kv--;
    if (strcmp(key, "general.alignment") == 0) w->alignment = 32;
    return 0;
}

static int set_u(es_gguf_writer *w, const char *key, uint32_t type, uint64_t u) {
    es_gguf_value v = {.type = type};
    v.v.u = u;
    return es_gguf_w_value(w, key, &v);
}
static int set_i(es_gguf_writer *w, const char *key, uint32_t type, int64_t i) {
    es_gguf_value v = {.type = type};
    v.v.i = i;
    return es_gguf_w_value(w, key, &v);
}
static int set_f(es_gguf_writer *w, const char *key, uint32_t type, double f) {
    es_gguf_value v = {.type = type};
    v.v.f = f;
    return es_gguf_w_value(w, key, &v);
}

int es_gguf_w_u8(es_gguf_writer *w, const char *k, uint8_t v) { return set_u(w, k, GGUF_VT_UINT8, v); }
int es_gguf_w_u16(es_gguf_writer *w, const char *k, uint16_t v) { return set_u(w, k, GGUF_VT_UINT16, v); }
int es_gguf_w_u32(es_gguf_writer *w, const char *k, uint32_t v) { return set_u(w, k, GGUF_VT_UINT32, v); }
int es_gguf_w_u64(es_gguf_writer *w, const char *k, uint64_t v) { return set_u(w, k, GGUF_VT_UINT64, v); }
int es_gguf_w_bool(es_gguf_writer *w, const char *k, int v) { return set_u(w, k, GGUF_VT_BOOL, v != 0); }
int es_gguf_w_i8(es_gguf_writer *w, const char *k, int8_t v) { return set_i(w, k, GGUF_VT_INT8, v); }
int es_gguf_w_i16(es_gguf_writer *w, const char *k, int16_t v) { return set_i(w, k, GGUF_VT_INT16, v); }
int es_gguf_w_i32(es_gguf_writer *w, const char *k, int32_t v) { return set_i(w, k, GGUF_VT_INT32, v); }
int es_gguf_w_i64(es_gguf_writer *w, const char *k, int64_t v) { return set_i(w, k, GGUF_VT_INT64, v); }
int es_gguf_w_f32(es_gguf_writer *w, const char *k, float v) { return set_f(w, k, GGUF_VT_FLOAT32, v); }
int es_gguf_w_f64(es_gguf_writer *w, const char *k, double v) { return set_f(w, k, GGUF_VT_FLOAT64, v); }

int es_gguf_w_strn(es_gguf_writer *w, const char *key, const char *s, size_t len) {
    es_gguf_value v = {.type = GGUF_VT_STRING};
    v.v.s.ptr = s;
    v.v.s.len = len;
    return es_gguf_w_value(w, key, &v);
}

int es_gguf_w_str(es_gguf_writer *w, const char *key, const char *s) {
    if (!s) return check_meta_phase(w, key) ? -1 : fail(w, "key '%s': NULL string", key);
    return es_gguf_w_strn(w, key, s, strlen(s));
}

int es_gguf_w_arr(es_gguf_writer *w, const char *key, uint32_t elem_type, const void *data, uint64_t n) {
    if (check_meta_phase(w, key)) return -1;
    if (elem_type >= GGUF_VT_COUNT || !scalar_size(elem_type))
        return fail(w, "key '%s': es_gguf_w_arr needs a fixed-size element type, not %s", key,
                    es_gguf_value_type_name(elem_type));
    es_gguf_value v = {.type = GGUF_VT_ARRAY};
    v.v.arr.elem_type = elem_type;
    v.v.arr.n = n;
    v.v.arr.data = data;
    return es_gguf_w_value(w, key, &v);
}

int es_gguf_w_arr_str(es_gguf_writer *w, const char *key, const char *const *strs, uint64_t n) {
    if (check_meta_phase(w, key)) return -1;
    if (n && !strs) return fail(w, "key '%s': NULL string list", key);
    /* encoded directly: converting to es_gguf_str first would need n allocations */
    bytes b = {0};
    put_u32(&b, GGUF_VT_ARRAY);
    put_u32(&b, GGUF_VT_STRING);
    put_u64(&b, n);
    for (uint64_t i = 0; i < n; i++) {
        if (!strs[i]) { free(b.p); return fail(w, "key '%s': string %llu is NULL", key, (unsigned long long)i); }
        put_str(&b, strs[i], strlen(strs[i]));
    }
    return set_blob(w, key, &b);
}

/* ---- tensor directory -------------------------------------------------------------- */

int es_gguf_w_add_tensor(es_gguf_writer *w, const char *name, uint32_t n_dims, const int64_t *ne, uint32_t type) {
    if (w->failed) return -1;
    if (w->opened) return fail(w, "tensor '%s' added after es_gguf_w_open", name ? name : "(null)");
    if (!name || !*name) return fail(w, "empty tensor name");
    if (strlen(name) >= GGUF_W_MAX_NAME)
        return fail(w, "tensor name '%s' is longer than %d bytes", name, GGUF_W_MAX_NAME - 1);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS || !ne)
        return fail(w, "tensor '%s': %u dimensions (1..%d allowed)", name, n_dims, GGUF_MAX_DIMS);
    const es_type_traits *tr = es_type_info(type);
    if (!tr) return fail(w, "tensor '%s': unknown type %u", name, type);
    if (type == ES_TYPE_FP8_B128) /* edgeseek's in-memory view of a checkpoint (quant.h) */
        return fail(w, "tensor '%s': type %s is not a GGUF type", name, tr->name);
    uint64_t nelem = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] < 1 || (uint64_t)ne[d] > (uint64_t)INT64_MAX / nelem)
            return fail(w, "tensor '%s': dimension %u is %lld (zero, negative or too large)", name, d,
                        (long long)ne[d]);
        nelem *= (uint64_t)ne[d];
    }
    if (ne[0] % tr->block_size)
        return fail(w, "tensor '%s': row length %lld is not a multiple of %s's block size %u", name,
                    (long long)ne[0], tr->name, tr->block_size);
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0) return fail(w, "duplicate tensor name '%s'", name);
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 64;
        wtensor *t = realloc(w->t, cap * sizeof *t);
        if (!t) return fail(w, "out of memory");
        w->t = t;
        w->cap_t = cap;
    }
    wtensor t = {.n_dims = n_dims, .type = type, .nbytes = nelem / tr->block_size * tr->type_size};
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t.ne[d] = d < (int)n_dims ? ne[d] : 1;
    t.name = strdup(name);
    if (!t.name) return fail(w, "out of memory");
    w->t[w->n_t++] = t;
    return 0;
}

uint64_t es_gguf_w_n_tensors(const es_gguf_writer *w) { return w->n_t; }

static uint64_t pad_to(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* Bytes of the header before its padding. */
static uint64_t header_size(const es_gguf_writer *w) {
    uint64_t h = 4 + 4 + 8 + 8;
    for (size_t i = 0; i < w->n_kv; i++) h += 8 + strlen(w->kv[i].key) + w->kv[i].len;
    for (size_t i = 0; i < w->n_t; i++) h += 8 + strlen(w->t[i].name) + 4 + 8ull * w->t[i].n_dims + 4 + 8;
    return h;
}

/* Offset of every tensor, each padded to the alignment; returns the data
 * section's size.  Done at open time because the alignment may change. */
static uint64_t assign_offsets(es_gguf_writer *w) {
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        w->t[i].offset = off;
        off += pad_to(w->t[i].nbytes, w->alignment);
    }
    return off;
}

uint64_t es_gguf_w_file_size(const es_gguf_writer *w) {
    uint64_t data = 0;
    for (size_t i = 0; i < w->n_t; i++) data += pad_to(w->t[i].nbytes, w->alignment);
    return pad_to(header_size(w), w->alignment) + data;
}

/* ---- output --------------------------------------------------------------------------- */

static int write_all(es_gguf_writer *w, const uint8_t *p, size_t n) {
    char err[sizeof w->err];
    if (es_outfile_write(w->of, p, n, err, sizeof err) != ES_OK) return fail(w, "%s", err);
    return 0;
}

static int flush_out(es_gguf_writer *w) {
    if (!w->out_len) return 0;
    int rc = write_all(w, w->out, w->out_len);
    w->out_len = 0;
    return rc;
}

static int out(es_gguf_writer *w, const void *data, size_t n) {
    if (n > GGUF_W_OUTBUF - w->out_len) {
        if (flush_out(w)) return -1;
        if (n >= GGUF_W_OUTBUF) return write_all(w, data, n);
    }
    memcpy(w->out + w->out_len, data, n);
    w->out_len += n;
    return 0;
}

static int out_zeros(es_gguf_writer *w, uint64_t n) {
    static const uint8_t zeros[256];
    while (n) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        if (out(w, zeros, k)) return -1;
        n -= k;
    }
    return 0;
}

int es_gguf_w_meta_buffer(es_gguf_writer *w, uint8_t **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    if (w->failed) return -1;
    bytes b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, GGUF_W_VERSION);
    put_u64(&b, 0);
    put_u64(&b, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        put_str(&b, w->kv[i].key, strlen(w->kv[i].key));
        put(&b, w->kv[i].blob, w->kv[i].len);
    }
    if (b.oom) { free(b.p); return fail(w, "out of memory"); }
    *buf = b.p;
    *len = b.len;
    return 0;
}

int es_gguf_w_open(es_gguf_writer *w, const char *path) {
    if (w->failed) return -1;
    if (w->opened) return fail(w, "es_gguf_w_open called twice");
    if (!path || !*path) return fail(w, "empty output path");
    w->out = malloc(GGUF_W_OUTBUF);
    if (!w->out) return fail(w, "out of memory");
    char err[sizeof w->err];
    if (es_outfile_open(path, &w->of, err, sizeof err) != ES_OK) return fail(w, "%s", err);
    w->opened = 1;

    assign_offsets(w);
    uint64_t h = header_size(w);
    bytes b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, GGUF_W_VERSION);
    put_u64(&b, w->n_t);
    put_u64(&b, w->n_kv);
    if (b.oom || out(w, b.p, b.len)) { free(b.p); return b.oom ? fail(w, "out of memory") : -1; }
    free(b.p);
    for (size_t i = 0; i < w->n_kv; i++) {
        uint64_t len = strlen(w->kv[i].key);
        if (out(w, &len, 8) || out(w, w->kv[i].key, len) || out(w, w->kv[i].blob, w->kv[i].len)) return -1;
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        uint64_t len = strlen(t->name);
        if (out(w, &len, 8) || out(w, t->name, len) || out(w, &t->n_dims, 4)) return -1;
        for (uint32_t d = 0; d < t->n_dims; d++)
            if (out(w, &t->ne[d], 8)) return -1;
        if (out(w, &t->type, 4) || out(w, &t->offset, 8)) return -1;
    }
    if (out_zeros(w, pad_to(h, w->alignment) - h)) return -1;
    w->cur = 0;
    w->cur_written = 0;
    return 0;
}

const char *es_gguf_w_current_tensor(const es_gguf_writer *w, uint64_t *bytes_left) {
    if (!w->opened || w->finished || w->cur >= w->n_t) {
        if (bytes_left) *bytes_left = 0;
        return NULL;
    }
    if (bytes_left) *bytes_left = w->t[w->cur].nbytes - w->cur_written;
    return w->t[w->cur].name;
}

/* Checks that n more bytes fit in the current tensor. */
static int check_chunk(es_gguf_writer *w, uint64_t n) {
    if (w->failed) return -1;
    if (!w->opened || w->finished) return fail(w, "tensor data written before es_gguf_w_open or after finish");
    if (w->cur >= w->n_t) return fail(w, "%llu bytes written after the last tensor", (unsigned long long)n);
    const wtensor *t = &w->t[w->cur];
    if (n > t->nbytes - w->cur_written)
        return fail(w, "tensor '%s': chunk of %llu bytes overruns it (%llu of %llu bytes written)", t->name,
                    (unsigned long long)n, (unsigned long long)w->cur_written, (unsigned long long)t->nbytes);
    return 0;
}

/* Accounts n written bytes; pads and moves on when the tensor is complete. */
static int advance(es_gguf_writer *w, uint64_t n) {
    const wtensor *t = &w->t[w->cur];
    w->cur_written += n;
    if (w->cur_written < t->nbytes) return 0;
    if (out_zeros(w, pad_to(t->nbytes, w->alignment) - t->nbytes)) return -1;
    w->cur++;
    w->cur_written = 0;
    return 0;
}

int es_gguf_w_write(es_gguf_writer *w, const void *data, size_t n) {
    if (check_chunk(w, n)) return -1;
    if (n && !data) return fail(w, "NULL data");
    if (out(w, data, n)) return -1;
    return advance(w, n);
}

int es_gguf_w_write_rows_f32(es_gguf_writer *w, const float *src, int64_t n_rows) {
    if (check_chunk(w, 0)) return -1;
    const wtensor *t = &w->t[w->cur];
    int64_t n = t->ne[0];
    size_t rb = es_row_bytes(t->type, n);
    uint64_t left = t->nbytes - w->cur_written;
    if (n_rows < 0 || (n_rows && !src)) return fail(w, "tensor '%s': bad rows argument", t->name);
    if ((uint64_t)n_rows > left / rb)
        return fail(w, "tensor '%s': %lld rows overrun it (%llu bytes = %llu rows left)", t->name,
                    (long long)n_rows, (unsigned long long)left, (unsigned long long)(left / rb));
    if (t->type == ES_TYPE_F32) return es_gguf_w_write(w, src, (size_t)n_rows * rb);
    /* convert in batches of about GGUF_W_SCRATCH bytes (at least one row) */
    size_t need = rb > GGUF_W_SCRATCH ? rb : GGUF_W_SCRATCH;
    if (need > w->scratch_cap) {
        uint8_t *s = realloc(w->scratch, need);
        if (!s) return fail(w, "out of memory");
        w->scratch = s;
        w->scratch_cap = need;
    }
    int64_t batch = (int64_t)(w->scratch_cap / rb);
    for (int64_t r = 0; r < n_rows; r += batch) {
        int64_t k = n_rows - r < batch ? n_rows - r : batch;
        for (int64_t i = 0; i < k; i++)
            if (es_quant_row(es_kernels_best(), t->type, src + (r + i) * n, w->scratch + (size_t)i * rb, n))
                return fail(w, "tensor '%s': no quantiser for type %s", t->name, es_type_info(t->type)->name);
        if (es_gguf_w_write(w, w->scratch, (size_t)k * rb)) return -1;
    }
    return 0;
}

int es_gguf_w_finish(es_gguf_writer *w, char *err, size_t errlen) {
    if (!w->failed) {
        if (!w->opened) fail(w, "es_gguf_w_finish before es_gguf_w_open");
        else if (w->finished) fail(w, "es_gguf_w_finish called twice");
        else if (w->cur < w->n_t)
            fail(w, "tensor '%s' is incomplete (%llu of %llu bytes written; %zu of %zu tensors done)",
                 w->t[w->cur].name, (unsigned long long)w->cur_written,
                 (unsigned long long)w->t[w->cur].nbytes, w->cur, w->n_t);
        else if (flush_out(w) == 0) {
            char e[sizeof w->err];
            es_outfile *of = w->of;
            w->of = NULL;
            if (es_outfile_commit(of, e, sizeof e) != ES_OK) fail(w, "%s", e);
            else w->finished = 1;
        }
    }
    if (w->failed) {
        if (err && errlen) snprintf(err, errlen, "%s", w->err);
        return -1;
    }
    return 0;
}

/* ---- lifetime ------------------------------------------------------------------------------ */

es_gguf_writer *es_gguf_writer_new(void) {
    es_gguf_writer *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->alignment = 32;
    return w;
}

void es_gguf_writer_free(es_gguf_writer *w) {
    if (!w) return;
    /* an unfinished file is garbage: its temporary goes, the target keeps
     * what it had */
    es_outfile_discard(w->of);
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].blob);
    }
    for (size_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w->out);
    free(w->scratch);
    free(w);
}
