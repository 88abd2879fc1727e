/* quantize.c — `edgeseek quantize`: reads a GGUF model, chooses a type per
 * tensor (the target's rules, quantize.h), and writes a new GGUF with every
 * metadata key copied, streaming the tensors through dequantise→quantise
 * row-chunk by row-chunk on the thread pool.  The IQ1/IQ2/IQ3 targets and
 * the low-bit mix take llama.cpp's importance matrix (imatrix.h) and are
 * quantised by iq_quant.c.
 *
 * Memory: the input is mapped read-only and each consumed range is dropped
 * from the process again (madvise), the output goes through the streaming
 * writer, and the only buffers are one output chunk (CHUNK_BYTES of fp32
 * work by default) and one fp32 row per thread: a 16 GB model converts in tens of MB.
 * An input that shrinks (or fails to read) under the mapping ends the
 * conversion with an error after the tensor it happened in (fault.h).
 */
#include "quantize.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_writer.h"
#include "imatrix.h"
#include "iq_quant.h"
#include "kernels.h"
#include "fault.h"
#include "threadpool.h"

/* fp32 bytes converted per chunk (all threads together), by default */
#define CHUNK_BYTES (16u << 20)
/* what GGUF readers expect in general.quantization_version (ggml's
 * GGML_QNT_VERSION) */
#define QNT_VERSION 2

/* ---- targets and the type of each tensor ---------------------------------- */

typedef struct target {
    const char *name;
    uint32_t type; /* every matrix; for the mix, its base type */
    int ftype;     /* llama.cpp's LLAMA_FTYPE: ALL_F32 0, MOSTLY_F16 1, Q4_0 2, Q4_1 3, Q8_0 7,
                      Q5_0 8, Q5_1 9, Q2_K 10, Q3_K_S 11, Q4_K_S 14, Q4_K_M 15, Q5_K_S 16,
                      Q6_K 18, IQ2_XXS 19, IQ2_XS 20, IQ3_XXS 23, IQ1_S 24, IQ4_NL 25,
                      IQ3_S 26, IQ2_S 28, IQ2_M 29, IQ4_XS 30, IQ1_M 31, BF16 32, TQ1_0 36,
                      TQ2_0 37 */
    int mix;       /* 1: the Q4_K_M rules, 2: the low-bit DeepSeek mix (iq2_m) */
} target;

static const target targets[] = {
    {"f32", ES_TYPE_F32, 0, 0},   {"f16", ES_TYPE_F16, 1, 0},   {"bf16", ES_TYPE_BF16, 32, 0},
    {"q8_0", ES_TYPE_Q8_0, 7, 0}, {"q4_0", ES_TYPE_Q4_0, 2, 0}, {"q2_k", ES_TYPE_Q2_K, 10, 0},
    {"q3_k", ES_TYPE_Q3_K, 11, 0}, {"q4_k", ES_TYPE_Q4_K, 14, 0}, {"q5_k", ES_TYPE_Q5_K, 16, 0},
    {"q6_k", ES_TYPE_Q6_K, 18, 0}, {"q4_k_m", ES_TYPE_Q4_K, 15, 1}, {"q4_1", ES_TYPE_Q4_1, 3, 0},
    {"q5_0", ES_TYPE_Q5_0, 8, 0}, {"q5_1", ES_TYPE_Q5_1, 9, 0}, {"iq4_nl", ES_TYPE_IQ4_NL, 25, 0},
    {"iq4_xs", ES_TYPE_IQ4_XS, 30, 0}, {"iq2_xxs", ES_TYPE_IQ2_XXS, 19, 0},
    {"iq2_xs", ES_TYPE_IQ2_XS, 20, 0}, {"iq2_s", ES_TYPE_IQ2_S, 28, 0}, {"iq3_xxs", ES_TYPE_IQ3_XXS, 23, 0},
    {"iq3_s", ES_TYPE_IQ3_S, 26, 0}, {"iq1_s", ES_TYPE_IQ1_S, 24, 0}, {"iq1_m", ES_TYPE_IQ1_M, 31, 0},
    {"tq1_0", ES_TYPE_TQ1_0, 36, 0}, {"tq2_0", ES_TYPE_TQ2_0, 37, 0}, {"iq2_m", ES_TYPE_IQ2_XXS, 29, 2},
};

static const target *find_target(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        const char *a = targets[i].name, *b = name;
        while (*a && tolower((unsigned char)*b) == *a) a++, b++;
        if (!*a && !*b) return &targets[i];
    }
    return NULL;
}

int es_quantize_target_valid(const char *name) { return find_target(name) != NULL; }

int es_quantize_ftype(const char *name) {
    const target *t = find_target(name);
    return t ? t->ftype : -1;
}

/* llama.cpp's choice of the layers that get more bits in its *_K_M mixes:
 * the first and last eighth, and every third layer in between. */
static int use_more_bits(int il, int n_layers) {
    return il < n_layers / 8 || il >= 7 * n_layers / 8 || (il - n_layers / 8) % 3 == 2;
}

/* The Q4_K_M-style mix.  Routed experts (*_exps) hold nearly all the
 * weights of a DeepSeek MoE, so they take Q4_K, with ffn_down_exps at Q6_K
 * on the use_more_bits layers as llama.cpp does for ffn_down.  Everything
 * else is read for every token and is a few percent of the bytes:
 * attention, shared experts, dense FFN, token_embd and output get Q6_K. */
static uint32_t mix_type(const char *name, int n_layers) {
    if (!strstr(name, "_exps.")) return ES_TYPE_Q6_K;
    int il = -1;
    if (strstr(name, "ffn_down_exps") && sscanf(name, "blk.%d.", &il) == 1 && use_more_bits(il, n_layers))
        return ES_TYPE_Q6_K;
    return ES_TYPE_Q4_K;
}

/* The low-bit DeepSeek mix (iq2_m), after the community's "dynamic" R1
 * files: the routed experts, nearly all the bytes, at 2-3 bits (gate and up
 * IQ2_XXS; down IQ2_S, IQ3_XXS on the use_more_bits layers); what every
 * token reads at 4-6 bits: attention and shared experts Q5_K, the dense
 * FFN layers and token_embd Q4_K, output Q6_K. */
static uint32_t lowbit_type(const char *name, int n_layers) {
    if (strstr(name, "_exps.")) {
        int il = -1;
        if (!strstr(name, "ffn_down_exps")) return ES_TYPE_IQ2_XXS;
        return sscanf(name, "blk.%d.", &il) == 1 && use_more_bits(il, n_layers) ? ES_TYPE_IQ3_XXS : ES_TYPE_IQ2_S;
    }
    if (strstr(name, "attn_") || strstr(name, "_shexp.")) return ES_TYPE_Q5_K;
    if (!strncmp(name, "output.", 7)) return ES_TYPE_Q6_K;
    return ES_TYPE_Q4_K;
}

uint32_t es_quantize_tensor_type(const char *target_name, const char *name, uint32_t n_dims,
                                 const int64_t *ne, int n_layers, const char **note) {
    const target *tg = find_target(target_name);
    if (note) *note = NULL;
    if (!tg) return ES_TYPE_COUNT;
    /* vectors, the router and its bias stay exact: they are tiny and the
     * expert choice is sensitive to them */
    if (n_dims < 2 || strstr(name, "ffn_gate_inp") || strstr(name, "exp_probs_b")) return ES_TYPE_F32;
    uint32_t type = tg->mix == 1 ? mix_type(name, n_layers) : tg->mix == 2 ? lowbit_type(name, n_layers) : tg->type;
    if (ne[0] % es_type_info(type)->block_size == 0) return type;
    if ((type == ES_TYPE_IQ4_XS || es_iq_quant_handles(type)) && ne[0] % QK4_NL == 0) { /* llama.cpp's fallback too */
        if (note) *note = "row length not a multiple of 256: IQ4_NL instead";
        return ES_TYPE_IQ4_NL;
    }
    if (ne[0] % QK8_0 == 0) {
        if (note) *note = "row length not a multiple of the block: Q8_0 instead";
        return ES_TYPE_Q8_0;
    }
    if (note) *note = "row length not a multiple of 32: F16 instead";
    return ES_TYPE_F16;
}

/* ---- conversion -------------------------------------------------------------- */

typedef struct job {
    const uint8_t *src; /* first row of the chunk */
    uint8_t *dst;
    uint32_t src_type, dst_type;
    size_t src_rb, dst_rb;
    int64_t n;
    float **scratch; /* one row of n floats per thread */
    const es_kernels *K; /* the converters (output the same on every path) */
    const float *imp;    /* importances: n per matrix, or NULL */
    int64_t row0, rows_per_mat; /* the chunk's first row in the tensor; rows of one matrix */
} job;

/* Rows [i0, i1) of the chunk: to fp32 (unless already), then to dst_type. */
static void convert_rows(void *ctx, int64_t i0, int64_t i1, int tid) {
    const job *j = ctx;
    for (int64_t r = i0; r < i1; r++) {
        const uint8_t *s = j->src + (size_t)r * j->src_rb;
        uint8_t *d = j->dst + (size_t)r * j->dst_rb;
        if (es_iq_quant_handles(j->dst_type)) { /* the weighted quantisers (iq_quant.h) */
            const float *x = (const float *)s;
            if (j->src_type != ES_TYPE_F32 || ((uintptr_t)s & 3)) {
                es_dequant_row(j->K, j->src_type, s, j->scratch[tid], j->n);
                x = j->scratch[tid];
            }
            const float *imp = j->imp ? j->imp + (size_t)((j->row0 + r) / j->rows_per_mat) * (size_t)j->n : NULL;
            es_iq_quant_row(j->dst_type, x, d, j->n, imp);
        } else if (j->dst_type == ES_TYPE_F32) {
            es_dequant_row(j->K, j->src_type, s, (float *)d, j->n);
        } else if (j->src_type == ES_TYPE_F32 && ((uintptr_t)s & 3) == 0) {
            es_quant_row(j->K, j->dst_type, (const float *)s, d, j->n);
        } else {
            es_dequant_row(j->K, j->src_type, s, j->scratch[tid], j->n);
            es_quant_row(j->K, j->dst_type, j->scratch[tid], d, j->n);
        }
    }
}

void es_quantize_rows(es_pool *pool, const void *src, uint32_t src_type, void *dst, uint32_t dst_type, int64_t n,
                      int64_t n_rows, float **scratch) {
    es_quantize_rows_imp(pool, src, src_type, dst, dst_type, n, n_rows, scratch, NULL, 0, 1);
}

void es_quantize_rows_imp(es_pool *pool, const void *src, uint32_t src_type, void *dst, uint32_t dst_type, int64_t n,
                          int64_t n_rows, float **scratch, const float *imp, int64_t row0, int64_t rows_per_mat) {
    job j = {.src = src, .dst = dst, .src_type = src_type, .dst_type = dst_type,
             .src_rb = es_row_bytes(src_type, n), .dst_rb = es_row_bytes(dst_type, n), .n = n,
             .scratch = scratch, .K = es_kernels_best(), .imp = imp, .row0 = row0,
             .rows_per_mat = rows_per_mat > 0 ? rows_per_mat : 1};
    /* about four claims per thread keep the threads evenly busy */
    int64_t grain = n_rows / (4 * (int64_t)es_pool_threads(pool));
    es_pool_run(pool, convert_rows, &j, n_rows, grain > 0 ? grain : 1);
}

/* Gives the pages of a consumed input range back (they are file-backed and
 * clean, so they are simply dropped and would be read again if touched). */
static void release(const void *p, size_t len) {
    long ps = sysconf(_SC_PAGESIZE);
    if (ps <= 0) return;
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(ps - 1), b = ((uintptr_t)p + len) & ~(uintptr_t)(ps - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

typedef struct qctx {
    es_gguf_ctx *g;
    es_fault_watch *fault; /* SIGBUS on the input's mapping (platform/fault.h) */
    const char *in;
    es_gguf_writer *w;
    es_pool *pool;
    uint32_t *types;
    const float **imps; /* per tensor: its importances (imatrix), or NULL */
    es_imatrix *im;
    float **scratch;
    uint8_t *chunk;
    size_t chunk_cap;
    int n_threads;
    size_t chunk_bytes;
    char *err;
    size_t errlen;
} qctx;

static es_status fail(qctx *q, es_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q->err, q->errlen, fmt, ap);
    va_end(ap);
    return st;
}

/* After a tensor: st, unless a read of the input's mapping faulted (the
 * file shrank or its storage failed; the tensor then got zeros), which
 * wins over any error it caused (the writer may see EFAULT). */
static es_status input_check(qctx *q, es_status st) {
    uint64_t off;
    if (!es_fault_hit(q->fault, &off)) return st;
    return fail(q, ES_ERR_IO, "%s: input file changed or truncated while in use (byte %llu could not be read)", q->in,
                (unsigned long long)off);
}

/* Streams tensor i into the writer. */
static es_status write_tensor(qctx *q, uint64_t i) {
    const es_gguf_tensor *t = &q->g->tensors[i];
    uint32_t dst_type = q->types[i];
    if (dst_type == t->type) { /* byte for byte, in slices */
        for (uint64_t off = 0; off < t->nbytes; off += q->chunk_bytes) {
            size_t len = t->nbytes - off < q->chunk_bytes ? (size_t)(t->nbytes - off) : q->chunk_bytes;
            if (es_gguf_w_write(q->w, t->data + off, len)) return fail(q, ES_ERR_IO, "%s", es_gguf_w_error(q->w));
            release(t->data + off, len);
        }
        return ES_OK;
    }
    int64_t n = t->ne[0], rows = t->ne[1] * t->ne[2] * t->ne[3];
    size_t src_rb = es_row_bytes(t->type, n), dst_rb = es_row_bytes(dst_type, n);
    int64_t per_chunk = (int64_t)(q->chunk_bytes / (sizeof(float) * (size_t)n));
    if (per_chunk < 1) per_chunk = 1;
    if ((size_t)per_chunk * dst_rb > q->chunk_cap) {
        uint8_t *c = realloc(q->chunk, (size_t)per_chunk * dst_rb);
        if (!c) return fail(q, ES_ERR_NOMEM, "out of memory for a chunk of %s", t->name);
        q->chunk = c;
        q->chunk_cap = (size_t)per_chunk * dst_rb;
    }
    for (int64_t r0 = 0; r0 < rows; r0 += per_chunk) {
        int64_t k = rows - r0 < per_chunk ? rows - r0 : per_chunk;
        const uint8_t *src = t->data + (size_t)r0 * src_rb;
        es_quantize_rows_imp(q->pool, src, t->type, q->chunk, dst_type, n, k, q->scratch,
                             q->imps ? q->imps[i] : NULL, r0, t->ne[1]);
        if (es_gguf_w_write(q->w, q->chunk, (size_t)k * dst_rb)) return fail(q, ES_ERR_IO, "%s", es_gguf_w_error(q->w));
        release(src, (size_t)k * src_rb);
    }
    return ES_OK;
}

/* Blocks of the model: <arch>.block_count, else one more than the largest
 * blk.N in the tensor names. */
static int model_layers(const es_gguf_ctx *g) {
    es_gguf_str arch;
    int64_t v;
    if (es_gguf_get_str(g, "general.architecture", &arch) == 1 && arch.len < 64) {
        char key[96];
        snprintf(key, sizeof key, "%.*s.block_count", (int)arch.len, arch.ptr);
        if (es_gguf_get_int(g, key, &v) == 1 && v > 0 && v < (1 << 20)) return (int)v;
    }
    int n = 0, il;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (sscanf(g->tensors[i].name, "blk.%d.", &il) == 1 && il >= n && il < (1 << 20)) n = il + 1;
    return n;
}

/* Finds tensor i's importances when its type uses them.  The codebook
 * types need them, except in token_embd (the imatrix never has it: it is
 * looked up, not multiplied) and output, which are then fitted unweighted
 * as llama.cpp does. */
static es_status importances(qctx *q, const target *tg, uint64_t i) {
    const es_gguf_tensor *t = &q->g->tensors[i];
    uint32_t type = q->types[i];
    if (!es_iq_quant_handles(type) || !q->im || !es_iq_quant_needs_imatrix(type)) return ES_OK;
    int64_t npr, nmat;
    const float *v = es_imatrix_find(q->im, t->name, &npr, &nmat);
    int optional = !strncmp(t->name, "token_embd.", 11) || !strncmp(t->name, "output.", 7);
    if (!v) {
        if (optional) return ES_OK;
        return fail(q, ES_ERR_ARG, "the importance matrix has no entry for %s, which %s makes %s (was it computed "
                    "on this model?)", t->name, tg->name, es_type_info(type)->name);
    }
    /* llama.cpp's rule: ne[0] values per matrix, matrix after matrix, however
     * the file splits them (attn_k_b/attn_v_b, used per head, come as one
     * vector of ne[0] * heads) */
    if (npr * nmat != t->ne[0] * t->ne[2]) {
        if (optional) return ES_OK; /* llama.cpp ignores token_embd's mismatch; output's is ours to forgive */
        return fail(q, ES_ERR_ARG, "the importance matrix's %s has %lld values; the tensor needs %lld (rows of %lld "
                    "in %lld matrices; computed on another model?)", t->name, (long long)(npr * nmat),
                    (long long)(t->ne[0] * t->ne[2]), (long long)t->ne[0], (long long)t->ne[2]);
    }
    q->imps[i] = v;
    return ES_OK;
}

/* Chooses every tensor's type and declares the output's metadata and
 * tensor directory. */
static es_status plan(qctx *q, const target *tg) {
    es_gguf_ctx *g = q->g;
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (es_gguf_w_value(q->w, g->kv[i].key, &g->kv[i].val))
            return fail(q, ES_ERR_FORMAT, "metadata key %s: %s", g->kv[i].key, es_gguf_w_error(q->w));
    es_gguf_w_u32(q->w, "general.quantization_version", QNT_VERSION);
    es_gguf_w_u32(q->w, "general.file_type", (uint32_t)tg->ftype);
    int n_layers = model_layers(g);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const es_gguf_tensor *t = &g->tensors[i];
        const es_type_traits *src = es_type_info(t->type);
        uint32_t type = es_quantize_tensor_type(tg->name, t->name, t->n_dims, t->ne, n_layers, NULL);
        q->types[i] = type;
        es_status st = importances(q, tg, i);
        if (st != ES_OK) return st;
        if (type != t->type && (!src || !src->supported || !es_kernels_best()->dequant_row[t->type]))
            return fail(q, ES_ERR_UNSUPPORTED, "tensor %s has type %s, which edgeseek cannot convert",
                        t->name, src ? src->name : "unknown");
        if (es_gguf_w_add_tensor(q->w, t->name, t->n_dims, t->ne, type))
            return fail(q, ES_ERR_FORMAT, "%s", es_gguf_w_error(q->w));
    }
    return ES_OK;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void log_tensor(FILE *f, uint64_t i, uint64_t n, const es_gguf_tensor *t, uint32_t type, int n_layers,
                       const char *target_name) {
    const char *note;
    es_quantize_tensor_type(target_name, t->name, t->n_dims, t->ne, n_layers, &note);
    char shape[96];
    int len = snprintf(shape, sizeof shape, "[%lld", (long long)t->ne[0]);
    for (uint32_t d = 1; d < t->n_dims && len < (int)sizeof shape; d++)
        len += snprintf(shape + len, sizeof shape - (size_t)len, ", %lld", (long long)t->ne[d]);
    if (len < (int)sizeof shape) snprintf(shape + len, sizeof shape - (size_t)len, "]");
    uint64_t out_bytes = es_row_bytes(type, t->ne[0]) * (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
    fprintf(f, "[%4llu/%llu] %-32s %-18s %5s -> %-5s %9.2f -> %9.2f MiB%s%s\n", (unsigned long long)i + 1,
            (unsigned long long)n, t->name, shape, es_type_info(t->type)->name, es_type_info(type)->name,
            (double)t->nbytes / (1 << 20), (double)out_bytes / (1 << 20), note ? "  " : "", note ? note : "");
}

es_status es_quantize_file(const char *in, const char *out, const char *target_name,
                           const es_quantize_params *params, char *err, size_t errlen) {
    return es_quantize_file_imatrix(in, out, target_name, NULL, params, err, errlen);
}

int es_quantize_target_needs_imatrix(const char *name) {
    const target *tg = find_target(name);
    return tg && (tg->mix == 2 || es_iq_quant_needs_imatrix(tg->type));
}

es_status es_quantize_file_imatrix(const char *in, const char *out, const char *target_name, const char *imatrix,
                                   const es_quantize_params *params, char *err, size_t errlen) {
    static const es_quantize_params defaults = {0, NULL, 0};
    const es_quantize_params *p = params ? params : &defaults;
    qctx q = {.err = err, .errlen = errlen};
    const target *tg = find_target(target_name);
    if (!tg) return fail(&q, ES_ERR_ARG, "unknown type '%s' (%s)", target_name ? target_name : "", ES_QUANTIZE_TARGETS);
    if (!imatrix && es_quantize_target_needs_imatrix(tg->name))
        return fail(&q, ES_ERR_ARG, "%s needs an importance matrix (--imatrix FILE, made by llama.cpp's "
                    "llama-imatrix): at 1-3 bits per weight a fit that does not know which columns the "
                    "activations use loses too much (llama.cpp refuses it too)", tg->name);
    struct stat si, so;
    if (stat(in, &si) != 0) return fail(&q, ES_ERR_IO, "cannot open '%s': %s", in, strerror(errno));
    if (stat(out, &so) == 0 && si.st_dev == so.st_dev && si.st_ino == so.st_ino)
        return fail(&q, ES_ERR_ARG, "output '%s' is the input file", out);
    double t0 = now();
    char inner[512];
    if (es_gguf_open_file(in, &q.g, inner, sizeof inner) != 0)
        return fail(&q, access(in, R_OK) ? ES_ERR_IO : ES_ERR_FORMAT, "%s", inner);

    q.in = in;
    q.fault = q.g->fault; /* watching since the file was mapped */
    es_status st = ES_ERR_NOMEM;
    if (q.g->n_tensors == 0) { /* a vocabulary-only file: nothing to convert, no model to write */
        st = fail(&q, ES_ERR_FORMAT, "'%s' has no tensors (a vocabulary-only file?): nothing to quantize", in);
        es_gguf_close(q.g);
        return st;
    }
    q.n_threads = p->n_threads > 0 ? p->n_threads : es_default_threads();
    q.chunk_bytes = p->chunk_bytes ? p->chunk_bytes : CHUNK_BYTES;
    q.w = es_gguf_writer_new();
    q.pool = es_pool_new(q.n_threads);
    q.types = calloc(q.g->n_tensors + 1, sizeof *q.types);
    q.scratch = calloc((size_t)q.n_threads, sizeof *q.scratch);
    if (!q.w || !q.pool || !q.types || !q.scratch) { fail(&q, st, "out of memory"); goto done; }
    int64_t max_row = 1;
    for (uint64_t i = 0; i < q.g->n_tensors; i++)
        if (q.g->tensors[i].ne[0] > max_row) max_row = q.g->tensors[i].ne[0];
    for (int k = 0; k < q.n_threads; k++)
        if (!(q.scratch[k] = malloc(sizeof(float) * (size_t)max_row))) { fail(&q, st, "out of memory"); goto done; }

    if (imatrix) {
        if (es_imatrix_load(imatrix, &q.im, err, errlen)) { st = ES_ERR_ARG; goto done; }
        if (!(q.imps = calloc(q.g->n_tensors + 1, sizeof *q.imps))) {
            st = fail(&q, ES_ERR_NOMEM, "out of memory");
            goto done;
        }
        if (p->log)
            fprintf(p->log, "quantize: importance matrix %s: %lld entries%s\n", imatrix,
                    (long long)es_imatrix_count(q.im), es_quantize_target_needs_imatrix(tg->name) ? "" :
                    " (unused: only the IQ1/IQ2/IQ3 types are weighted)");
    }
    if ((st = plan(&q, tg)) != ES_OK) goto done;
    if (es_gguf_w_open(q.w, out)) { st = fail(&q, ES_ERR_IO, "%s", es_gguf_w_error(q.w)); goto done; }
    int n_layers = model_layers(q.g);
    uint64_t in_bytes = 0, n_weights = 0;
    for (uint64_t i = 0; i < q.g->n_tensors; i++) {
        const es_gguf_tensor *t = &q.g->tensors[i];
        if (p->log) log_tensor(p->log, i, q.g->n_tensors, t, q.types[i], n_layers, tg->name);
        st = write_tensor(&q, i);
        if ((st = input_check(&q, st)) != ES_OK) goto done;
        in_bytes += t->nbytes;
        n_weights += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    }
    if (es_gguf_w_finish(q.w, inner, sizeof inner)) { st = fail(&q, ES_ERR_IO, "%s", inner); goto done; }
    if (p->log) {
        double dt = now() - t0;
        uint64_t out_bytes = es_gguf_w_file_size(q.w);
        fprintf(p->log, "quantize: %s -> %s (%s): %llu tensors, %.2f -> %.2f MiB (%.2f bits/weight), "
                        "%.2f s, %.1f MB/s of input, %d threads\n",
                in, out, tg->name, (unsigned long long)q.g->n_tensors, (double)in_bytes / (1 << 20),
                (double)out_bytes / (1 << 20), n_weights ? 8.0 * (double)out_bytes / (double)n_weights : 0.0, dt,
                dt > 0 ? (double)in_bytes / dt / 1e6 : 0.0, q.n_threads);
    }
    st = ES_OK;
done:
    if (q.scratch)
        for (int k = 0; k < q.n_threads; k++) free(q.scratch[k]);
    free(q.scratch);
    free(q.types);
    free(q.imps);
    es_imatrix_free(q.im);
    free(q.chunk);
    es_pool_free(q.pool);
    es_gguf_writer_free(q.w); /* removes the output unless it was finished */
    es_gguf_close(q.g);
    return st;
}
