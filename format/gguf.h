/* gguf.h — GGUF (v2, v3) reader over a read-only byte range.
 *
 * Owns: parsing and validating the header, metadata key/values (every value
 * type, nested arrays), the tensor directory, alignment and data offset.
 * Every count, size, offset and dimension is checked against the buffer size
 * with overflow-safe arithmetic; a malformed file yields an error message that
 * names the problem and never a crash.  Parsing works on any memory buffer
 * (es_gguf_parse_buffer, for fuzzing and tests) or on a file mapped read-only
 * (es_gguf_open_file).  Strings point into the buffer and are NOT NUL-terminated.
 */
#ifndef ES_GGUF_H
#define ES_GGUF_H

#include <stddef.h>
#include <stdint.h>

enum es_gguf_value_type {
    GGUF_VT_UINT8 = 0, GGUF_VT_INT8 = 1, GGUF_VT_UINT16 = 2, GGUF_VT_INT16 = 3,
    GGUF_VT_UINT32 = 4, GGUF_VT_INT32 = 5, GGUF_VT_FLOAT32 = 6, GGUF_VT_BOOL = 7,
    GGUF_VT_STRING = 8, GGUF_VT_ARRAY = 9, GGUF_VT_UINT64 = 10, GGUF_VT_INT64 = 11,
    GGUF_VT_FLOAT64 = 12, GGUF_VT_COUNT
};

typedef struct es_gguf_str {
    const char *ptr; /* into the buffer, not NUL-terminated */
    uint64_t len;
} es_gguf_str;

typedef struct es_gguf_value es_gguf_value;
struct es_gguf_value {
    uint32_t type; /* enum es_gguf_value_type */
    union {
        uint64_t u;   /* unsigned integer types and bool */
        int64_t i;    /* signed integer types */
        double f;     /* float32 / float64 */
        es_gguf_str s;
        struct {
            uint32_t elem_type;   /* enum es_gguf_value_type */
            uint64_t n;           /* element count */
            const uint8_t *data;  /* fixed-size elements: raw little-endian */
            es_gguf_str *strs;       /* elem_type STRING: n entries */
            es_gguf_value *items;    /* elem_type ARRAY: n nested arrays */
        } arr;
    } v;
};

typedef struct es_gguf_kv {
    char *key; /* NUL-terminated copy */
    es_gguf_value val;
} es_gguf_kv;

#define GGUF_MAX_DIMS 4

typedef struct es_gguf_tensor {
    char *name;             /* NUL-terminated copy */
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] innermost (row length); unused dims = 1 */
    uint32_t type;          /* ggml type id (see simd/quant.h) */
    uint64_t offset;        /* relative to data_offset */
    uint64_t nbytes;
    const uint8_t *data;    /* base + data_offset + offset */
    /* NULL in a GGUF file.  A table made by a directory opener (below) may
     * give one pointer per matrix (ne[2] of them) for a tensor whose
     * matrices lie apart, as a checkpoint's experts do; data is then
     * mats[0] and nbytes their sum */
    const uint8_t *const *mats;
} es_gguf_tensor;

typedef struct es_gguf_ctx {
    const uint8_t *base;
    size_t size;
    uint32_t version;
    uint64_t n_kv;
    es_gguf_kv *kv;
    uint64_t n_tensors;
    es_gguf_tensor *tensors;
    uint64_t alignment;
    uint64_t data_offset;
    /* set when the ctx owns a file mapping */
    void *map;
    size_t map_size;
    /* SIGBUS watch over the mapping (platform/fault.h), made before the
     * header is parsed so a file that shrinks while it is read ends with a
     * message; users of the mapping ask es_fault_hit(ctx->fault, ...) */
    struct es_fault_watch *fault;
    /* set by a directory opener: called with owner by es_gguf_close, after
     * the tables are freed (it unmaps what the tensors point into) */
    void (*release)(void *owner);
    void *owner;
} es_gguf_ctx;

/* 0 on success; otherwise -1 and a message in err. */
int es_gguf_parse_buffer(const void *buf, size_t size, es_gguf_ctx **out, char *err, size_t errlen);
int es_gguf_open_file(const char *path, es_gguf_ctx **out, char *err, size_t errlen);
/* Test hook: called between mapping a file and parsing its header (tests
 * shrink the file there). */
extern void (*es_gguf_after_map_hook)(const char *path);
void es_gguf_close(es_gguf_ctx *ctx);
/* A model given as a directory (a Hugging Face checkpoint) is opened by
 * this hook when one is set; es_gguf_open_file calls it for a directory.
 * The library sets none (it stays free of JSON): the CLI sets the convert
 * room's (convert/hf_direct.c) at start-up.  The ctx it makes holds the
 * metadata a converter would write and a tensor table pointing into the
 * directory's files, mapped read-only; base and map are NULL (there is no
 * one file).  0, or -1 with a message naming the file and the tensor. */
extern int (*es_gguf_open_dir_hook)(const char *path, es_gguf_ctx **out, char *err, size_t errlen);

const es_gguf_kv *es_gguf_find_kv(const es_gguf_ctx *ctx, const char *key);
const es_gguf_tensor *es_gguf_find_tensor(const es_gguf_ctx *ctx, const char *name);

/* Typed getters: return 1 if the key exists with a compatible type, 0 if it
 * is absent, -1 if present with an incompatible type. */
int es_gguf_get_int(const es_gguf_ctx *ctx, const char *key, int64_t *out);   /* any integer type */
int es_gguf_get_float(const es_gguf_ctx *ctx, const char *key, double *out);  /* f32/f64 or integer */
int es_gguf_get_bool(const es_gguf_ctx *ctx, const char *key, int *out);
int es_gguf_get_str(const es_gguf_ctx *ctx, const char *key, es_gguf_str *out);
/* Array of the given element type: returns the value or NULL. */
const es_gguf_value *es_gguf_get_arr(const es_gguf_ctx *ctx, const char *key, uint32_t elem_type);

/* Element i of a fixed-size integer array (any integer element type) */
int64_t es_gguf_arr_int(const es_gguf_value *arr, uint64_t i);
double es_gguf_arr_float(const es_gguf_value *arr, uint64_t i);

const char *es_gguf_value_type_name(uint32_t t);
int es_gguf_str_eq(es_gguf_str s, const char *cstr);

#endif
