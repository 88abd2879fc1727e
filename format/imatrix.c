/* imatrix.c — llama.cpp's importance matrix in GGUF form (imatrix.h): the
 * *.in_sum2 / *.counts pairs turned into per-column importances, owned in
 * memory so the file is closed once read.
 */
#include "imatrix.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "quant.h"

typedef struct entry {
    char *name;
    int64_t n_per_row, n_mat;
    float *v;
} entry;

struct es_imatrix {
    entry *e;
    int64_t n;
};

static int fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

void es_imatrix_free(es_imatrix *im) {
    if (!im) return;
    for (int64_t i = 0; i < im->n; i++) free(im->e[i].name), free(im->e[i].v);
    free(im->e);
    free(im);
}

int64_t es_imatrix_count(const es_imatrix *im) { return im ? im->n : 0; }

const float *es_imatrix_find(const es_imatrix *im, const char *name, int64_t *n_per_row, int64_t *n_mat) {
    for (int64_t i = 0; im && i < im->n; i++)
        if (!strcmp(im->e[i].name, name)) {
            if (n_per_row) *n_per_row = im->e[i].n_per_row;
            if (n_mat) *n_mat = im->e[i].n_mat;
            return im->e[i].v;
        }
    return NULL;
}

/* name without suffix, if t's name ends in it */
static int base_len(const char *name, const char *suffix) {
    size_t n = strlen(name), s = strlen(suffix);
    return n > s && !strcmp(name + n - s, suffix) ? (int)(n - s) : -1;
}

static const es_gguf_tensor *find_pair(const es_gguf_ctx *g, const char *base, int len, const char *suffix) {
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const char *nm = g->tensors[i].name;
        if (base_len(nm, suffix) == len && !strncmp(nm, base, (size_t)len)) return &g->tensors[i];
    }
    return NULL;
}

static int read_ctx(const es_gguf_ctx *g, es_imatrix *im, char *err, size_t errlen) {
    es_gguf_str ty;
    int have_type = es_gguf_get_str(g, "general.type", &ty) == 1;
    if (have_type && !es_gguf_str_eq(ty, "imatrix"))
        return fail(err, errlen, "not an importance matrix (general.type is '%.*s')", (int)(ty.len < 64 ? ty.len : 64),
                    ty.ptr);
    uint64_t n_sums = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (base_len(g->tensors[i].name, ".in_sum2") > 0) n_sums++;
    if (!n_sums)
        return fail(err, errlen, "no *.in_sum2 tensors: not an importance matrix in llama.cpp's GGUF form%s",
                    have_type ? "" : " (a model file?)");
    im->e = calloc(n_sums, sizeof *im->e);
    if (!im->e) return fail(err, errlen, "out of memory");
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const es_gguf_tensor *s = &g->tensors[i];
        int len = base_len(s->name, ".in_sum2");
        if (len <= 0) continue;
        const es_gguf_tensor *c = find_pair(g, s->name, len, ".counts");
        if (!c) return fail(err, errlen, "%s has no matching .counts tensor", s->name);
        if (s->type != ES_TYPE_F32 || c->type != ES_TYPE_F32)
            return fail(err, errlen, "%s: in_sum2 and counts must be F32", s->name);
        if (s->n_dims > 2 || c->n_dims > 2 || s->ne[2] != 1 || s->ne[3] != 1 || c->ne[2] != 1 || c->ne[3] != 1)
            return fail(err, errlen, "%s: more than two dimensions", s->name);
        int64_t npr = s->ne[0], nmat = s->ne[1];
        if (npr < 1 || nmat < 1 || c->ne[0] != 1 || c->ne[1] != nmat)
            return fail(err, errlen, "%s: counts [%lld, %lld] do not match in_sum2 [%lld, %lld]", s->name,
                        (long long)c->ne[0], (long long)c->ne[1], (long long)npr, (long long)nmat);
        if (s->nbytes != (uint64_t)npr * (uint64_t)nmat * 4 || c->nbytes != (uint64_t)nmat * 4)
            return fail(err, errlen, "%s: size does not match its shape", s->name);
        entry *e = &im->e[im->n];
        e->name = malloc((size_t)len + 1);
        e->v = malloc(s->nbytes);
        if (!e->name || !e->v) { free(e->name), free(e->v); return fail(err, errlen, "out of memory"); }
        memcpy(e->name, s->name, (size_t)len);
        e->name[len] = 0;
        e->n_per_row = npr;
        e->n_mat = nmat;
        im->n++;
        for (int64_t m = 0; m < nmat; m++) {
            float cnt;
            memcpy(&cnt, c->data + 4 * m, 4);
            if (!isfinite(cnt) || cnt < 0) return fail(err, errlen, "%s: count %lld is %g", e->name, (long long)m, cnt);
            for (int64_t k = 0; k < npr; k++) {
                float sum;
                memcpy(&sum, s->data + 4 * (m * npr + k), 4);
                if (!isfinite(sum) || sum < 0)
                    return fail(err, errlen, "%s: sum of squares %lld is %g", e->name, (long long)(m * npr + k), sum);
                e->v[m * npr + k] = cnt > 0 ? sum / cnt : 1.0f;
            }
        }
        for (int64_t k = 0; k < im->n - 1; k++)
            if (!strcmp(im->e[k].name, e->name)) return fail(err, errlen, "%s appears twice", s->name);
    }
    return 0;
}

/* A GGUF file starts with "GGUF"; llama.cpp's legacy imatrix starts with an
 * int32 entry count. */
static int not_gguf(const void *buf, size_t size, char *err, size_t errlen) {
    if (size >= 4 && !memcmp(buf, "GGUF", 4)) return 0;
    return fail(err, errlen, "not a GGUF file: the legacy .dat imatrix form is not read (llama.cpp's llama-imatrix "
                             "writes the GGUF form, and converts a .dat file with --in-file FILE -o OUT.gguf)");
}

int es_imatrix_parse(const void *buf, size_t size, es_imatrix **out, char *err, size_t errlen) {
    *out = NULL;
    if (not_gguf(buf, size, err, errlen)) return -1;
    es_gguf_ctx *g;
    char inner[384];
    if (es_gguf_parse_buffer(buf, size, &g, inner, sizeof inner)) return fail(err, errlen, "%s", inner);
    es_imatrix *im = calloc(1, sizeof *im);
    int rc = im ? read_ctx(g, im, err, errlen) : fail(err, errlen, "out of memory");
    es_gguf_close(g);
    if (rc) { es_imatrix_free(im); return -1; }
    *out = im;
    return 0;
}

int es_imatrix_load(const char *path, es_imatrix **out, char *err, size_t errlen) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return fail(err, errlen, "cannot open imatrix '%s': %s", path, strerror(errno));
    unsigned char magic[4];
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    char inner[448];
    if (not_gguf(magic, got, inner, sizeof inner)) return fail(err, errlen, "imatrix '%s': %s", path, inner);
    es_gguf_ctx *g;
    if (es_gguf_open_file(path, &g, inner, sizeof inner)) return fail(err, errlen, "imatrix '%s': %s", path, inner);
    es_imatrix *im = calloc(1, sizeof *im);
    int rc = im ? read_ctx(g, im, inner, sizeof inner) : fail(inner, sizeof inner, "out of memory");
    es_gguf_close(g);
    if (rc) {
        es_imatrix_free(im);
        return fail(err, errlen, "imatrix '%s': %s", path, inner);
    }
    *out = im;
    return 0;
}
