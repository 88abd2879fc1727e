/* hf_direct.c — a Hugging Face DeepSeek checkpoint directory run as it is:
 * `edgeseek run|bench|info|serve|... -m HF_DIR` with no conversion.
 *
 * Owns: the directory opener that format/gguf.h's es_gguf_open_dir_hook
 * calls for a directory.  It builds what the runtime loads a GGUF from, an
 * es_gguf_ctx: the metadata a conversion would write (hf.c's config.json
 * reading and hyperparameters, hf_tokenizer.c's tokenizer, through the GGUF
 * writer into a buffer the reader parses) and a tensor table under
 * llama.cpp's names whose data points into the shards, each mapped whole
 * and read-only.  The checks are the converter's plan (hf_plan.h): every
 * tensor present once, in its dtype and shape, FP8 with its scales, nothing
 * left over; a message names the file and the tensor.
 *
 * Why here and not in the library: reading config.json, the index and the
 * shard headers takes a JSON parser (cJSON), which only the CLI links.  The
 * runtime stays as it is: it asks format/ to open a path, and the CLI has
 * set the hook (es_hf_direct_enable, convert.h) before any model is loaded.
 *
 * The table: BF16, F16 and F32 tensors are their bytes in the mapping; FP8
 * e4m3 ones become FP8_B128 (simd/quant.h): a small es_fp8_mat description
 * of the weight bytes and their weight_scale_inv grid, both in the mapping
 * (a grid at an address not aligned for float is copied).  The routed
 * experts, one tensor each in the checkpoint, keep their places: the
 * stacked ffn_*_exps tensors give one pointer per expert (es_gguf_tensor's
 * mats).  kv_b_proj becomes the combined attn_kv_b the runtime reads head
 * by head (llama.cpp's older layout; the converter splits it instead); the
 * runtime reads it by rows, so an FP8 kv_b_proj is dequantised once, into
 * F32 (16 MB a layer on V3, the one copy made).  The next-n (MTP) layers
 * are left out: the forward pass does not use them.  Routed-expert paging
 * works over single GGUF files only (runtime/api.c refuses it here).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "convert.h"
#include "fp8.h"
#include "gguf.h"
#include "hf_plan.h"
#include "hf_tokenizer.h"
#include "quant.h"

#define fail es_st_fail

/* What the ctx's release frees: the shard mappings and every allocation
 * the tensor table points into. */
typedef struct direct_owner {
    void **maps;
    size_t *map_sizes;
    int n_maps;
    uint8_t *meta;        /* the metadata image the ctx's strings point into */
    void **allocs;        /* descriptions, pointer arrays, copied grids, F32 kv_b */
    size_t n_allocs, cap_allocs;
} direct_owner;

static void owner_free(void *p) {
    direct_owner *o = p;
    if (!o) return;
    for (int i = 0; i < o->n_maps; i++)
        if (o->maps[i]) munmap(o->maps[i], o->map_sizes[i]);
    for (size_t i = 0; i < o->n_allocs; i++) free(o->allocs[i]);
    free(o->allocs);
    free(o->maps);
    free(o->map_sizes);
    free(o->meta);
    free(o);
}

/* malloc that the owner frees; NULL when out of memory */
static void *own(direct_owner *o, size_t n) {
    if (o->n_allocs == o->cap_allocs) {
        size_t cap = o->cap_allocs ? 2 * o->cap_allocs : 256;
        void **a = realloc(o->allocs, cap * sizeof *a);
        if (!a) return NULL;
        o->allocs = a, o->cap_allocs = cap;
    }
    void *p = calloc(1, n ? n : 1);
    if (p) o->allocs[o->n_allocs++] = p;
    return p;
}

static int map_shards(direct_owner *o, const es_st_set *st, char *err, size_t errlen) {
    o->n_maps = st->n_shards;
    o->maps = calloc((size_t)st->n_shards, sizeof *o->maps);
    o->map_sizes = calloc((size_t)st->n_shards, sizeof *o->map_sizes);
    if (!o->maps || !o->map_sizes) return fail(err, errlen, "out of memory");
    for (int i = 0; i < st->n_shards; i++) {
        const es_st_shard *sh = &st->shards[i];
        void *m = mmap(NULL, (size_t)sh->size, PROT_READ, MAP_SHARED, sh->fd, 0);
        if (m == MAP_FAILED) return fail(err, errlen, "%s: cannot map: %s", sh->file, strerror(errno));
        o->maps[i] = m;
        o->map_sizes[i] = (size_t)sh->size;
    }
    return 0;
}

static const uint8_t *at(const direct_owner *o, const es_st_tensor *s) {
    return (const uint8_t *)o->maps[s->shard] + s->offset;
}

static uint32_t dtype_type(enum es_st_dtype d) {
    switch (d) {
    case ES_ST_BF16: return ES_TYPE_BF16;
    case ES_ST_F16: return ES_TYPE_F16;
    case ES_ST_F32: return ES_TYPE_F32;
    default: return ES_TYPE_FP8_B128;
    }
}

/* The description of piece e of t (FP8), its grid copied when misaligned. */
static int fp8_desc(direct_owner *o, const otensor *t, int e, es_fp8_mat *d, char *err, size_t errlen) {
    const es_st_tensor *sc = t->scale[e];
    const uint8_t *grid = at(o, sc);
    if ((uintptr_t)grid % _Alignof(float)) {
        uint8_t *copy = own(o, sc->nbytes);
        if (!copy) return fail(err, errlen, "out of memory");
        memcpy(copy, grid, sc->nbytes);
        grid = copy;
    }
    d->q = at(o, t->src[e]);
    d->scale = (const float *)(const void *)grid;
    d->scale_cols = (t->src_cols + ES_FP8_BLOCK - 1) / ES_FP8_BLOCK;
    return 0;
}

/* One table entry from plan entry t.  kv: t is kv_b_proj, entered whole as
 * attn_kv_b. */
static int add_tensor(direct_owner *o, const conv *v, const otensor *t, int kv, es_gguf_tensor *out, char *err,
                      size_t errlen) {
    const es_st_tensor *s0 = t->src[0];
    const char *file = v->st.shards[s0->shard].file;
    for (int e = 1; e < t->n_src; e++)
        if (t->src[e]->dtype != s0->dtype)
            return fail(err, errlen, "%s: tensor %s: dtype %s, but %s is %s (the experts of a layer share one)",
                        v->st.shards[t->src[e]->shard].file, t->src[e]->name, t->src[e]->dtype_name, s0->name,
                        s0->dtype_name);
    memset(out, 0, sizeof *out);
    char name[GGUF_W_MAX_NAME];
    snprintf(name, sizeof name, "%s", t->name);
    if (kv) {
        char *k = strstr(name, "attn_k_b");
        memcpy(k, "attn_kv_b", 10);
        snprintf(k + 9, sizeof name - (size_t)(k + 9 - name), ".weight");
    }
    out->name = strdup(name);
    if (!out->name) return fail(err, errlen, "out of memory");
    out->type = dtype_type(s0->dtype);
    if (kv) {
        out->n_dims = 2;
        out->ne[0] = t->src_cols, out->ne[1] = t->src_rows, out->ne[2] = out->ne[3] = 1;
    } else {
        out->n_dims = t->n_dims;
        for (int d = 0; d < 4; d++) out->ne[d] = t->ne[d];
    }
    if (kv && out->type == ES_TYPE_FP8_B128) { /* read by rows: F32, dequantised once */
        es_fp8_mat d;
        if (fp8_desc(o, t, 0, &d, err, errlen)) return -1;
        float *f = own(o, sizeof(float) * (size_t)(t->src_rows * t->src_cols));
        if (!f) return fail(err, errlen, "%s: tensor %s: out of memory for its F32 copy", file, s0->name);
        for (int64_t r = 0; r < t->src_rows; r++) es_fp8_dequant(&d, t->src_cols, r, f + r * t->src_cols);
        out->type = ES_TYPE_F32;
        out->data = (const uint8_t *)f;
        out->nbytes = sizeof(float) * (uint64_t)(t->src_rows * t->src_cols);
        return 0;
    }
    for (int e = 0; e < t->n_src; e++) out->nbytes += t->src[e]->nbytes + (t->scale[e] ? t->scale[e]->nbytes : 0);
    if (out->type == ES_TYPE_FP8_B128) {
        es_fp8_mat *d = own(o, sizeof *d * (size_t)t->n_src);
        if (!d) return fail(err, errlen, "out of memory");
        for (int e = 0; e < t->n_src; e++)
            if (fp8_desc(o, t, e, &d[e], err, errlen)) return -1;
        out->data = (const uint8_t *)d;
        if (t->n_src > 1) {
            const uint8_t **mats = own(o, sizeof *mats * (size_t)t->n_src);
            if (!mats) return fail(err, errlen, "out of memory");
            for (int e = 0; e < t->n_src; e++) mats[e] = (const uint8_t *)&d[e];
            out->mats = mats;
        }
        return 0;
    }
    out->data = at(o, s0);
    if (t->n_src > 1) {
        const uint8_t **mats = own(o, sizeof *mats * (size_t)t->n_src);
        if (!mats) return fail(err, errlen, "out of memory");
        for (int e = 0; e < t->n_src; e++) mats[e] = at(o, t->src[e]);
        out->mats = mats;
    }
    return 0;
}

/* The metadata: what es_convert_hf writes, without the next-n layers. */
static int metadata(conv *v, const char *dir, uint8_t **buf, size_t *len, char *err, size_t errlen) {
    char name[256];
    es_gguf_w_str(v->w, "general.architecture", "deepseek2");
    es_gguf_w_str(v->w, "general.name", es_hf_dir_base(dir, name, sizeof name));
    es_hf_write_hparams(v, 0);
    if (es_hf_tokenizer(v->w, dir, v->c.vocab, err, errlen)) return -1;
    if (es_gguf_w_meta_buffer(v->w, buf, len)) return fail(err, errlen, "%s", es_gguf_w_error(v->w));
    return 0;
}

static int open_dir(const char *dir, es_gguf_ctx **out, char *err, size_t errlen) {
    conv v = {.err = err, .errlen = errlen};
    cJSON *cj = NULL;
    es_gguf_ctx *g = NULL;
    direct_owner *o = calloc(1, sizeof *o);
    int rc = -1;
    *out = NULL;
    if (!o) return fail(err, errlen, "out of memory");
    if (!(v.w = es_gguf_writer_new())) { fail(err, errlen, "out of memory"); goto done; }
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    if (access(cfg, F_OK) != 0) {
        fail(err, errlen, "'%s' is a directory without config.json (a model is a GGUF file or a Hugging Face "
                          "checkpoint directory)", dir);
        goto done;
    }
    if (es_hf_read_json(dir, "config.json", &cj, err, errlen) || es_hf_read_config(&v.c, cj, err, errlen)) goto done;
    if (v.c.fp8 && (v.c.blk_r != ES_FP8_BLOCK || v.c.blk_c != ES_FP8_BLOCK)) {
        fail(err, errlen, "config.json: FP8 blocks of %lldx%lld; run as it is, a checkpoint needs 128x128 "
                          "(convert it instead)", (long long)v.c.blk_r, (long long)v.c.blk_c);
        goto done;
    }
    if (es_st_open(&v.st, dir, err, errlen) || es_hf_make_plan(&v, NULL, 1)) goto done;
    v.n_blocks = (int)v.c.layers;
    size_t len;
    if (metadata(&v, dir, &o->meta, &len, err, errlen)) goto done;
    char inner[512];
    if (es_gguf_parse_buffer(o->meta, len, &g, inner, sizeof inner)) {
        fail(err, errlen, "the metadata made from config.json: %s", inner);
        goto done;
    }
    if (map_shards(o, &v.st, err, errlen)) goto done;
    /* the metadata buffer holds no tensors: its (empty) table gives way to the shards' */
    for (uint64_t i = 0; i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->tensors);
    g->n_tensors = 0;
    g->tensors = calloc(v.n ? v.n : 1, sizeof *g->tensors);
    if (!g->tensors) { fail(err, errlen, "out of memory"); goto done; }
    for (size_t i = 0; i < v.n; i++) {
        const otensor *t = &v.t[i];
        if (t->op == OP_VB) continue; /* kv_b_proj: entered once, by its OP_KB entry */
        if (add_tensor(o, &v, t, t->op == OP_KB, &g->tensors[g->n_tensors], err, errlen)) {
            free(g->tensors[g->n_tensors].name); /* the entry that failed */
            goto done;
        }
        g->n_tensors++;
    }
    g->release = owner_free;
    g->owner = o;
    o = NULL;
    *out = g;
    g = NULL;
    rc = 0;
done:
    if (g) {
        g->release = owner_free;
        g->owner = o;
        o = NULL;
        es_gguf_close(g);
    }
    owner_free(o);
    es_gguf_writer_free(v.w);
    for (size_t i = 0; i < v.n; i++) {
        free(v.t[i].src);
        free(v.t[i].scale);
    }
    free(v.t);
    es_st_close(&v.st);
    cJSON_Delete(cj);
    if (rc) {
        /* the message names the file; say which directory too when it does not */
        if (!strstr(err, dir)) {
            char m[1024];
            snprintf(m, sizeof m, "%s", err);
            snprintf(err, errlen, "%s: %s", dir, m);
        }
    }
    return rc;
}

void es_hf_direct_enable(void) { es_gguf_open_dir_hook = open_dir; }
