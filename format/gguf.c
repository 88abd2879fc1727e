/* gguf.c — GGUF v2/v3 reader.  See gguf.h.
 *
 * Layout (little-endian):
 *   magic "GGUF" u32 version  u64 n_tensors  u64 n_kv
 *   n_kv × { string key, u32 type, value }
 *   n_tensors × { string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset }
 *   padding to general.alignment, then tensor data.
 * (v1 used u32 counts; it is rejected.)
 *
 * Every read goes through a cursor that refuses to move past the end of the
 * buffer, and every size computation checks for overflow, so a hostile file
 * produces an error message, never an out-of-bounds read.
 */
#include "gguf.h"
#include "fault.h"
#include "quant.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Hard limits that no real file reaches; they keep hostile counts from
 * turning into huge allocations. */
#define GGUF_MAX_ARRAY_DEPTH 8
#define GGUF_MAX_KEY_LEN 65536

typedef struct cursor {
    const uint8_t *base;
    size_t size;
    size_t pos;
    char *err;
    size_t errlen;
    int failed;
} cursor;

static void fail(cursor *c, const char *fmt, ...) {
    if (c->failed) return; /* keep the first, most precise message */
    c->failed = 1;
    if (!c->err || !c->errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
}

static int take(cursor *c, void *dst, size_t n, const char *what) {
    if (c->failed) return -1;
    if (n > c->size - c->pos) {
        fail(c, "truncated at byte %zu: need %zu bytes for %s, file has %zu",
             c->pos, n, what, c->size);
        return -1;
    }
    if (dst) memcpy(dst, c->base + c->pos, n);
    c->pos += n;
    return 0;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what) {
    uint8_t b[4];
    if (take(c, b, 4, what)) return -1;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return 0;
}

static int rd_u64(cursor *c, uint64_t *v, const char *what) {
    uint32_t lo, hi;
    if (rd_u32(c, &lo, what) || rd_u32(c, &hi, what)) return -1;
    *v = (uint64_t)hi << 32 | lo;
    return 0;
}

static int rd_str(cursor *c, es_gguf_str *s, const char *what) {
    uint64_t n;
    if (rd_u64(c, &n, what)) return -1;
    if (n > c->size - c->pos) {
        fail(c, "truncated at byte %zu: %s claims %llu bytes, only %zu remain",
             c->pos, what, (unsigned long long)n, c->size - c->pos);
        return -1;
    }
    s->ptr = (const char *)(c->base + c->pos);
    s->len = n;
    c->pos += (size_t)n;
    return 0;
}

static size_t scalar_size(uint32_t t) {
    switch (t) {
    case GGUF_VT_UINT8: case GGUF_VT_INT8: case GGUF_VT_BOOL: return 1;
    case GGUF_VT_UINT16: case GGUF_VT_INT16: return 2;
    case GGUF_VT_UINT32: case GGUF_VT_INT32: case GGUF_VT_FLOAT32: return 4;
    case GGUF_VT_UINT64: case GGUF_VT_INT64: case GGUF_VT_FLOAT64: return 8;
    default: return 0;
    }
}

const char *es_gguf_value_type_name(uint32_t t) {
    static const char *names[GGUF_VT_COUNT] = {
        "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
        "bool", "string", "array", "uint64", "int64", "float64"};
    return t < GGUF_VT_COUNT ? names[t] : "unknown";
}

/* Decodes one fixed-size little-endian scalar at p into v. */
static void decode_scalar(uint32_t t, const uint8_t *p, es_gguf_value *v) {
    uint64_t u = 0;
    size_t n = scalar_size(t);
    for (size_t i = 0; i < n; i++) u |= (uint64_t)p[i] << (8 * i);
    v->type = t;
    switch (t) {
    case GGUF_VT_INT8: v->v.i = (int8_t)u; break;
    case GGUF_VT_INT16: v->v.i = (int16_t)u; break;
    case GGUF_VT_INT32: v->v.i = (int32_t)u; break;
    case GGUF_VT_INT64: v->v.i = (int64_t)u; break;
    case GGUF_VT_FLOAT32: { uint32_t b = (uint32_t)u; float f; memcpy(&f, &b, 4); v->v.f = f; break; }
    case GGUF_VT_FLOAT64: { double d; memcpy(&d, &u, 8); v->v.f = d; break; }
    case GGUF_VT_BOOL: v->v.u = u != 0; break;
    default: v->v.u = u; break;
    }
}

static void free_value(es_gguf_value *v) {
    if (v->type != GGUF_VT_ARRAY) return;
    free(v->v.arr.strs);
    if (v->v.arr.items) {
        for (uint64_t i = 0; i < v->v.arr.n; i++) free_value(&v->v.arr.items[i]);
        free(v->v.arr.items);
    }
}

static int read_value(cursor *c, uint32_t type, es_gguf_value *v, int depth, const char *key);

static int read_array(cursor *c, es_gguf_value *v, int depth, const char *key) {
    uint32_t et;
    uint64_t n;
    v->type = GGUF_VT_ARRAY;
    memset(&v->v.arr, 0, sizeof v->v.arr);
    if (rd_u32(c, &et, "array element type") || rd_u64(c, &n, "array length")) return -1;
    if (et >= GGUF_VT_COUNT) {
        fail(c, "key '%s': unknown array element type %u at byte %zu", key, et, c->pos - 12);
        return -1;
    }
    if (depth >= GGUF_MAX_ARRAY_DEPTH) {
        fail(c, "key '%s': arrays nested deeper than %d", key, GGUF_MAX_ARRAY_DEPTH);
        return -1;
    }
    v->v.arr.elem_type = et;
    size_t remain = c->size - c->pos;
    size_t es = scalar_size(et);
    if (es) {
        /* fixed-size elements: one bounds check covers them all */
        if (n > remain / es) {
            fail(c, "truncated at byte %zu: key '%s' array of %llu %s needs %llu bytes, %zu remain",
                 c->pos, key, (unsigned long long)n, es_gguf_value_type_name(et),
                 (unsigned long long)(n > UINT64_MAX / es ? UINT64_MAX : n * es), remain);
            return -1;
        }
        v->v.arr.n = n;
        v->v.arr.data = c->base + c->pos;
        c->pos += (size_t)(n * es);
        return 0;
    }
    /* Strings take at least 8 bytes each, arrays at least 12: a count larger
     * than that allows is a lie, caught before allocating. */
    size_t min_elem = et == GGUF_VT_STRING ? 8 : 12;
    if (n > remain / min_elem) {
        fail(c, "truncated at byte %zu: key '%s' claims %llu %s elements, only %zu bytes remain",
             c->pos, key, (unsigned long long)n, es_gguf_value_type_name(et), remain);
        return -1;
    }
    v->v.arr.n = n;
    if (et == GGUF_VT_STRING) {
        v->v.arr.strs = calloc(n ? n : 1, sizeof(es_gguf_str));
        if (!v->v.arr.strs) { fail(c, "out of memory reading key '%s'", key); return -1; }
        for (uint64_t i = 0; i < n; i++)
            if (rd_str(c, &v->v.arr.strs[i], "array string")) return -1;
        return 0;
    }
    v->v.arr.items = calloc(n ? n : 1, sizeof(es_gguf_value));
    if (!v->v.arr.items) { fail(c, "out of memory reading key '%s'", key); return -1; }
    for (uint64_t i = 0; i < n; i++)
        if (read_value(c, GGUF_VT_ARRAY, &v->v.arr.items[i], depth + 1, key)) return -1;
    return 0;
}

static int read_value(cursor *c, uint32_t type, es_gguf_value *v, int depth, const char *key) {
    if (type == GGUF_VT_STRING) {
        v->type = type;
        return rd_str(c, &v->v.s, "string value");
    }
    if (type == GGUF_VT_ARRAY) return read_array(c, v, depth, key);
    size_t n = scalar_size(type);
    if (!n) {
        fail(c, "key '%s': unknown value type %u at byte %zu", key, type, c->pos - 4);
        return -1;
    }
    uint8_t buf[8];
    if (take(c, buf, n, "scalar value")) return -1;
    decode_scalar(type, buf, v);
    return 0;
}

static char *dup_str(es_gguf_str s) {
    char *p = malloc((size_t)s.len + 1);
    if (!p) return NULL;
    memcpy(p, s.ptr, (size_t)s.len);
    p[s.len] = 0;
    return p;
}

void es_gguf_close(es_gguf_ctx *ctx) {
    if (!ctx) return;
    if (ctx->kv) {
        for (uint64_t i = 0; i < ctx->n_kv; i++) {
            free(ctx->kv[i].key);
            free_value(&ctx->kv[i].val);
        }
        free(ctx->kv);
    }
    if (ctx->tensors) {
        for (uint64_t i = 0; i < ctx->n_tensors; i++) free(ctx->tensors[i].name);
        free(ctx->tensors);
    }
    es_fault_unwatch(ctx->fault); /* before the mapping goes */
    if (ctx->map) munmap(ctx->map, ctx->map_size);
    if (ctx->release) ctx->release(ctx->owner);
    free(ctx);
}

static int cmp_cstr(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Fails if two of the n names are equal; name i is the char * at byte
 * name_off of record i (stride bytes apart).  Sorting keeps this O(n log n):
 * a pairwise scan let a 2 MB file of distinct keys take 17 s to parse. */
static int check_unique(cursor *c, const void *recs, size_t stride, size_t name_off, uint64_t n,
                        const char *what) {
    if (n < 2) return 0;
    char **sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) { fail(c, "out of memory"); return -1; }
    for (uint64_t i = 0; i < n; i++)
        memcpy(&sorted[i], (const char *)recs + (size_t)i * stride + name_off, sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_cstr);
    int rc = 0;
    for (uint64_t i = 1; i < n && !rc; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            fail(c, "duplicate %s '%s'", what, sorted[i]);
            rc = -1;
        }
    free(sorted);
    return rc;
}

static int read_kvs(cursor *c, es_gguf_ctx *ctx) {
    /* a kv takes at least 8 (key len) + 4 (type) + 1 bytes */
    if (ctx->n_kv > (c->size - c->pos) / 13) {
        fail(c, "header claims %llu metadata entries, impossible in a file of %zu bytes",
             (unsigned long long)ctx->n_kv, c->size);
        return -1;
    }
    ctx->kv = calloc(ctx->n_kv ? ctx->n_kv : 1, sizeof(es_gguf_kv));
    if (!ctx->kv) { fail(c, "out of memory for %llu metadata entries", (unsigned long long)ctx->n_kv); return -1; }
    for (uint64_t i = 0; i < ctx->n_kv; i++) {
        es_gguf_str k;
        uint32_t t;
        if (rd_str(c, &k, "metadata key")) return -1;
        if (k.len == 0 || k.len > GGUF_MAX_KEY_LEN) {
            fail(c, "metadata entry %llu at byte %zu has a key of length %llu",
                 (unsigned long long)i, c->pos, (unsigned long long)k.len);
            return -1;
        }
        ctx->kv[i].key = dup_str(k);
        if (!ctx->kv[i].key) { fail(c, "out of memory"); return -1; }
        if (memchr(k.ptr, 0, (size_t)k.len)) {
            fail(c, "metadata key %llu contains a NUL byte", (unsigned long long)i);
            return -1;
        }
        if (rd_u32(c, &t, "metadata value type")) return -1;
        if (t >= GGUF_VT_COUNT) {
            fail(c, "key '%s': unknown value type %u at byte %zu", ctx->kv[i].key, t, c->pos - 4);
            return -1;
        }
        if (read_value(c, t, &ctx->kv[i].val, 0, ctx->kv[i].key)) return -1;
    }
    return check_unique(c, ctx->kv, sizeof *ctx->kv, offsetof(es_gguf_kv, key), ctx->n_kv, "metadata key");
}

static int read_tensor_infos(cursor *c, es_gguf_ctx *ctx) {
    /* a tensor info takes at least 8 + 1 + 4 + 8 + 4 + 8 bytes */
    if (ctx->n_tensors > (c->size - c->pos) / 33) {
        fail(c, "header claims %llu tensors, impossible in a file of %zu bytes",
             (unsigned long long)ctx->n_tensors, c->size);
        return -1;
    }
    ctx->tensors = calloc(ctx->n_tensors ? ctx->n_tensors : 1, sizeof(es_gguf_tensor));
    if (!ctx->tensors) { fail(c, "out of memory for %llu tensors", (unsigned long long)ctx->n_tensors); return -1; }
    for (uint64_t i = 0; i < ctx->n_tensors; i++) {
        es_gguf_tensor *t = &ctx->tensors[i];
        es_gguf_str name;
        if (rd_str(c, &name, "tensor name")) return -1;
        if (name.len == 0 || name.len > GGUF_MAX_KEY_LEN || memchr(name.ptr, 0, (size_t)name.len)) {
            fail(c, "tensor %llu has an invalid name (length %llu)", (unsigned long long)i,
                 (unsigned long long)name.len);
            return -1;
        }
        t->name = dup_str(name);
        if (!t->name) { fail(c, "out of memory"); return -1; }
        if (rd_u32(c, &t->n_dims, "tensor dimension count")) return -1;
        if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS) {
            fail(c, "tensor '%s' has %u dimensions (1..%d allowed)", t->name, t->n_dims, GGUF_MAX_DIMS);
            return -1;
        }
        uint64_t nelem = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            uint64_t ne;
            if (rd_u64(c, &ne, "tensor dimension")) return -1;
            if (ne == 0 || ne > (uint64_t)INT64_MAX || nelem > (uint64_t)INT64_MAX / ne) {
                fail(c, "tensor '%s' dimension %u is %llu: zero or too large", t->name, d,
                     (unsigned long long)ne);
                return -1;
            }
            t->ne[d] = (int64_t)ne;
            nelem *= ne;
        }
        if (rd_u32(c, &t->type, "tensor type") || rd_u64(c, &t->offset, "tensor offset")) return -1;
        const es_type_traits *tr = es_type_info(t->type);
        if (!tr) {
            fail(c, "tensor '%s' has unknown type %u", t->name, t->type);
            return -1;
        }
        if (t->type == ES_TYPE_FP8_B128) { /* edgeseek's in-memory view of a checkpoint, never a file's */
            fail(c, "tensor '%s' has type %u, which GGUF does not define", t->name, t->type);
            return -1;
        }
        if (t->ne[0] % tr->block_size) {
            fail(c, "tensor '%s': row length %lld is not a multiple of %s's block size %u",
                 t->name, (long long)t->ne[0], tr->name, tr->block_size);
            return -1;
        }
        uint64_t nblocks = nelem / tr->block_size;
        if (nblocks > UINT64_MAX / tr->type_size) {
            fail(c, "tensor '%s' size overflows", t->name);
            return -1;
        }
        t->nbytes = nblocks * tr->type_size;
    }
    return check_unique(c, ctx->tensors, sizeof *ctx->tensors, offsetof(es_gguf_tensor, name), ctx->n_tensors,
                        "tensor name");
}

typedef struct span {
    uint64_t off, end;
    const char *name;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    return (x->off > y->off) - (x->off < y->off);
}

/* Tensors may not share bytes: writers lay them out one after another (and
 * llama.cpp rejects anything else), so an overlap means a corrupt directory
 * whose tensors would alias each other's weights. */
static int check_overlaps(cursor *c, const es_gguf_ctx *ctx) {
    if (ctx->n_tensors < 2) return 0;
    span *sp = malloc((size_t)ctx->n_tensors * sizeof *sp);
    if (!sp) { fail(c, "out of memory"); return -1; }
    for (uint64_t i = 0; i < ctx->n_tensors; i++) {
        const es_gguf_tensor *t = &ctx->tensors[i];
        sp[i] = (span){t->offset, t->offset + t->nbytes, t->name};
    }
    qsort(sp, (size_t)ctx->n_tensors, sizeof *sp, span_cmp);
    int rc = 0;
    for (uint64_t i = 1; i < ctx->n_tensors && !rc; i++)
        if (sp[i].off < sp[i - 1].end) {
            fail(c, "tensor '%s' (data bytes %llu..%llu) overlaps tensor '%s' (bytes %llu..%llu)", sp[i].name,
                 (unsigned long long)sp[i].off, (unsigned long long)sp[i].end, sp[i - 1].name,
                 (unsigned long long)sp[i - 1].off, (unsigned long long)sp[i - 1].end);
            rc = -1;
        }
    free(sp);
    return rc;
}

int es_gguf_parse_buffer(const void *buf, size_t size, es_gguf_ctx **out, char *err, size_t errlen) {
    cursor c = {.base = buf, .size = size, .err = err, .errlen = errlen};
    if (err && errlen) err[0] = 0;
    *out = NULL;
    es_gguf_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) { fail(&c, "out of memory"); return -1; }
    ctx->base = buf;
    ctx->size = size;

    uint8_t magic[4];
    if (take(&c, magic, 4, "magic")) goto bad;
    if (memcmp(magic, "GGUF", 4) != 0) {
        fail(&c, "not a GGUF file (magic is %02x %02x %02x %02x, want 'GGUF')",
             magic[0], magic[1], magic[2], magic[3]);
        goto bad;
    }
    if (rd_u32(&c, &ctx->version, "version")) goto bad;
    if (ctx->version != 2 && ctx->version != 3) {
        fail(&c, "unsupported GGUF version %u (2 and 3 are supported)", ctx->version);
        goto bad;
    }
    if (rd_u64(&c, &ctx->n_tensors, "tensor count") || rd_u64(&c, &ctx->n_kv, "metadata count")) goto bad;
    if (read_kvs(&c, ctx)) goto bad;
    if (read_tensor_infos(&c, ctx)) goto bad;

    ctx->alignment = 32;
    const es_gguf_kv *al = es_gguf_find_kv(ctx, "general.alignment");
    if (al) {
        if (al->val.type != GGUF_VT_UINT32 || al->val.v.u == 0 || (al->val.v.u & (al->val.v.u - 1))) {
            fail(&c, "general.alignment must be a non-zero power of two uint32");
            goto bad;
        }
        ctx->alignment = al->val.v.u;
    }
    uint64_t pad = (ctx->alignment - c.pos % ctx->alignment) % ctx->alignment;
    ctx->data_offset = c.pos + pad;
    /* A vocab-only file may end right after its header, without padding. */
    if (ctx->n_tensors && ctx->data_offset > size) {
        fail(&c, "truncated at byte %zu: tensor data would start at byte %llu",
             size, (unsigned long long)ctx->data_offset);
        goto bad;
    }
    for (uint64_t i = 0; i < ctx->n_tensors; i++) {
        es_gguf_tensor *t = &ctx->tensors[i];
        if (t->offset % ctx->alignment) {
            fail(&c, "tensor '%s' offset %llu is not aligned to %llu", t->name,
                 (unsigned long long)t->offset, (unsigned long long)ctx->alignment);
            goto bad;
        }
        uint64_t avail = size - ctx->data_offset;
        if (t->offset > avail || t->nbytes > avail - t->offset) {
            fail(&c, "tensor '%s' out of bounds: bytes %llu..%llu of data, file has %llu data bytes",
                 t->name, (unsigned long long)t->offset,
                 (unsigned long long)(t->offset + t->nbytes), (unsigned long long)avail);
            goto bad;
        }
        t->data = ctx->base + ctx->data_offset + t->offset;
    }
    if (check_overlaps(&c, ctx)) goto bad;
    *out = ctx;
    return 0;
bad:
    es_gguf_close(ctx);
    return -1;
}

void (*es_gguf_after_map_hook)(const char *path);
int (*es_gguf_open_dir_hook)(const char *path, es_gguf_ctx **out, char *err, size_t errlen);

int es_gguf_open_file(const char *path, es_gguf_ctx **out, char *err, size_t errlen) {
    *out = NULL;
    /* O_NONBLOCK: opening a FIFO would otherwise wait for a writer forever;
     * anything but a regular file is refused before a byte is read */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        if (es_gguf_open_dir_hook) return es_gguf_open_dir_hook(path, out, err, errlen);
        snprintf(err, errlen, "'%s' is a directory (a Hugging Face checkpoint runs through the edgeseek command; "
                              "this program reads GGUF files)", path);
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "'%s' is not a regular file (a model must be a GGUF file on disk)", path);
        close(fd);
        return -1;
    }
    if (st.st_size == 0) {
        snprintf(err, errlen, "'%s' is empty", path);
        close(fd);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "cannot map '%s': %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    /* watched before the first byte of the header is read: a file that
     * shrinks now reads as zeros, and the fault is reported below */
    es_fault_watch *fault = es_fault_watch_new(map, size);
    if (es_gguf_after_map_hook) es_gguf_after_map_hook(path);
    char inner[512];
    int rc = es_gguf_parse_buffer(map, size, out, inner, sizeof inner);
    /* a file cut short within the mapped pages reads as zeros without a
     * fault: its size says so */
    uint64_t off = size;
    int shrunk = fstat(fd, &st) == 0 && (size_t)st.st_size != size;
    close(fd);
    if (es_fault_hit(fault, &off) || shrunk) {
        snprintf(err, errlen, "%s: model file changed or truncated while its header was read (byte %llu could not be read)",
                 path, (unsigned long long)(shrunk && (uint64_t)st.st_size < off ? (uint64_t)st.st_size : off));
        if (rc == 0) es_gguf_close(*out);
        *out = NULL;
        rc = -1;
    } else if (rc != 0) {
        snprintf(err, errlen, "%s: %s", path, inner);
    }
    if (rc != 0) {
        es_fault_unwatch(fault);
        munmap(map, size);
        return -1;
    }
    (*out)->map = map;
    (*out)->map_size = size;
    (*out)->fault = fault;
    return 0;
}

const es_gguf_kv *es_gguf_find_kv(const es_gguf_ctx *ctx, const char *key) {
    for (uint64_t i = 0; i < ctx->n_kv; i++)
        if (strcmp(ctx->kv[i].key, key) == 0) return &ctx->kv[i];
    return NULL;
}

const es_gguf_tensor *es_gguf_find_tensor(const es_gguf_ctx *ctx, const char *name) {
    for (uint64_t i = 0; i < ctx->n_tensors; i++)
        if (strcmp(ctx->tensors[i].name, name) == 0) return &ctx->tensors[i];
    return NULL;
}

static int is_int_type(uint32_t t) {
    return t == GGUF_VT_UINT8 || t == GGUF_VT_INT8 || t == GGUF_VT_UINT16 || t == GGUF_VT_INT16 ||
           t == GGUF_VT_UINT32 || t == GGUF_VT_INT32 || t == GGUF_VT_UINT64 || t == GGUF_VT_INT64;
}

static int is_signed_type(uint32_t t) {
    return t == GGUF_VT_INT8 || t == GGUF_VT_INT16 || t == GGUF_VT_INT32 || t == GGUF_VT_INT64;
}

int es_gguf_get_int(const es_gguf_ctx *ctx, const char *key, int64_t *out) {
    const es_gguf_kv *kv = es_gguf_find_kv(ctx, key);
    if (!kv) return 0;
    if (!is_int_type(kv->val.type)) return -1;
    if (is_signed_type(kv->val.type)) {
        *out = kv->val.v.i;
    } else {
        if (kv->val.v.u > (uint64_t)INT64_MAX) return -1;
        *out = (int64_t)kv->val.v.u;
    }
    return 1;
}

int es_gguf_get_float(const es_gguf_ctx *ctx, const char *key, double *out) {
    const es_gguf_kv *kv = es_gguf_find_kv(ctx, key);
    if (!kv) return 0;
    if (kv->val.type == GGUF_VT_FLOAT32 || kv->val.type == GGUF_VT_FLOAT64) {
        *out = kv->val.v.f;
        return 1;
    }
    int64_t i;
    if (es_gguf_get_int(ctx, key, &i) == 1) {
        *out = (double)i;
        return 1;
    }
    return -1;
}

int es_gguf_get_bool(const es_gguf_ctx *ctx, const char *key, int *out) {
    const es_gguf_kv *kv = es_gguf_find_kv(ctx, key);
    if (!kv) return 0;
    if (kv->val.type == GGUF_VT_BOOL) { *out = kv->val.v.u != 0; return 1; }
    return -1;
}

int es_gguf_get_str(const es_gguf_ctx *ctx, const char *key, es_gguf_str *out) {
    const es_gguf_kv *kv = es_gguf_find_kv(ctx, key);
    if (!kv) return 0;
    if (kv->val.type != GGUF_VT_STRING) return -1;
    *out = kv->val.v.s;
    return 1;
}

const es_gguf_value *es_gguf_get_arr(const es_gguf_ctx *ctx, const char *key, uint32_t elem_type) {
    const es_gguf_kv *kv = es_gguf_find_kv(ctx, key);
    if (!kv || kv->val.type != GGUF_VT_ARRAY || kv->val.v.arr.elem_type != elem_type) return NULL;
    return &kv->val;
}

int64_t es_gguf_arr_int(const es_gguf_value *arr, uint64_t i) {
    es_gguf_value v;
    decode_scalar(arr->v.arr.elem_type, arr->v.arr.data + i * scalar_size(arr->v.arr.elem_type), &v);
    return is_signed_type(v.type) ? v.v.i : (int64_t)v.v.u;
}

double es_gguf_arr_float(const es_gguf_value *arr, uint64_t i) {
    es_gguf_value v;
    decode_scalar(arr->v.arr.elem_type, arr->v.arr.data + i * scalar_size(arr->v.arr.elem_type), &v);
    if (v.type == GGUF_VT_FLOAT32 || v.type == GGUF_VT_FLOAT64) return v.v.f;
    return is_signed_type(v.type) ? (double)v.v.i : (double)v.v.u;
}

int es_gguf_str_eq(es_gguf_str s, const char *cstr) {
    size_t n = strlen(cstr);
    return s.len == n && memcmp(s.ptr, cstr, n) == 0;
}
