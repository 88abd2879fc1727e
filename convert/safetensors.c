/* safetensors.c — the shards of a Hugging Face checkpoint: the index, each
 * shard's JSON header (parsed with cJSON), the checked table of tensors, and
 * reading a tensor's bytes.  See safetensors.h. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define MAX_INDEX (64u << 20)

int es_st_fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}
#define fail es_st_fail

static const struct {
    const char *name;
    enum es_st_dtype d;
    size_t size;
} dtypes[] = {{"F32", ES_ST_F32, 4}, {"F16", ES_ST_F16, 2}, {"BF16", ES_ST_BF16, 2}, {"F8_E4M3", ES_ST_F8_E4M3, 1}};

size_t es_st_dtype_size(enum es_st_dtype d) {
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].d == d) return dtypes[i].size;
    return 0;
}

/* Element sizes of the dtypes edgeseek does not convert, so that their byte
 * ranges are still checked. */
static size_t other_size(const char *name) {
    static const struct {
        const char *name;
        size_t size;
    } others[] = {{"F64", 8}, {"I64", 8}, {"U64", 8}, {"I32", 4}, {"U32", 4}, {"I16", 2}, {"U16", 2},
                  {"I8", 1},  {"U8", 1},  {"BOOL", 1}, {"F8_E5M2", 1}};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        if (!strcmp(others[i].name, name)) return others[i].size;
    return 0;
}

static char *join(const char *dir, const char *file) {
    size_t a = strlen(dir), b = strlen(file);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, file, b + 1);
    return p;
}

char *es_st_slurp(const char *path, size_t max, size_t *len, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(err, errlen, "%s: %s", path, strerror(errno)), NULL;
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        fail(err, errlen, "%s: not a regular file", path);
    } else if ((uint64_t)st.st_size > max) {
        fail(err, errlen, "%s: %lld bytes, more than the %zu a JSON file may have here", path, (long long)st.st_size,
             max);
    } else if (!(buf = malloc((size_t)st.st_size + 1))) {
        fail(err, errlen, "%s: out of memory", path);
    } else {
        size_t got = 0, n = (size_t)st.st_size;
        while (got < n) {
            ssize_t r = read(fd, buf + got, n - got);
            if (r <= 0) {
                fail(err, errlen, "%s: %s", path, r < 0 ? strerror(errno) : "file shrank while read");
                free(buf);
                buf = NULL;
                break;
            }
            got += (size_t)r;
        }
        if (buf) {
            buf[n] = 0;
            if (len) *len = n;
        }
    }
    close(fd);
    return buf;
}

static int read_full(int fd, void *buf, size_t len, uint64_t off) {
    uint8_t *p = buf;
    while (len) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r, len -= (size_t)r, off += (uint64_t)r;
    }
    return 0;
}

static int add_shard(es_st_set *s, const char *dir, const char *file, char *err, size_t errlen) {
    for (int i = 0; i < s->n_shards; i++)
        if (!strcmp(s->shards[i].file, file)) return i;
    if (!*file || strchr(file, '/'))
        return fail(err, errlen, "%s: shard name '%s' is not a file name in the checkpoint's directory", INDEX_NAME,
                    file);
    es_st_shard *sh = realloc(s->shards, sizeof *sh * (size_t)(s->n_shards + 1));
    if (!sh) return fail(err, errlen, "out of memory");
    s->shards = sh;
    sh = &s->shards[s->n_shards];
    memset(sh, 0, sizeof *sh);
    sh->fd = -1;
    s->n_shards++;
    if (!(sh->file = strdup(file)) || !(sh->path = join(dir, file))) return fail(err, errlen, "out of memory");
    return s->n_shards - 1;
}

static int push_tensor(es_st_set *s, size_t *cap, es_st_tensor *t, char *err, size_t errlen) {
    if (s->n_tensors == *cap) {
        size_t nc = *cap ? *cap * 2 : 256;
        es_st_tensor *nt = realloc(s->tensors, nc * sizeof *nt);
        if (!nt) return fail(err, errlen, "out of memory");
        s->tensors = nt, *cap = nc;
    }
    s->tensors[s->n_tensors++] = *t;
    return 0;
}

/* An integer held in a JSON number, exactly. */
static int json_u64(const cJSON *j, uint64_t *v) {
    if (!cJSON_IsNumber(j)) return -1;
    double d = j->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d)) return -1;
    *v = (uint64_t)d;
    return 0;
}

/* One header entry: its dtype, shape and byte range. */
static int parse_entry(const es_st_shard *sh, const cJSON *e, uint64_t data_start, es_st_tensor *t, char *err,
                       size_t errlen) {
    const char *nm = e->string;
    if (!cJSON_IsObject(e)) return fail(err, errlen, "%s: tensor %s: header entry is not an object", sh->file, nm);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return fail(err, errlen, "%s: tensor %s: header entry needs dtype, shape and data_offsets [begin, end]",
                    sh->file, nm);
    size_t esize = 0;
    t->dtype = ES_ST_OTHER;
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (!strcmp(dt->valuestring, dtypes[i].name)) t->dtype = dtypes[i].d, esize = dtypes[i].size;
    if (!esize) esize = other_size(dt->valuestring);
    if (!esize) return fail(err, errlen, "%s: tensor %s: unknown dtype '%.16s'", sh->file, nm, dt->valuestring);
    snprintf(t->dtype_name, sizeof t->dtype_name, "%s", dt->valuestring);
    int nd = cJSON_GetArraySize(shape);
    if (nd > ES_ST_MAX_DIMS) return fail(err, errlen, "%s: tensor %s: %d dimensions (at most %d)", sh->file, nm, nd,
                                         ES_ST_MAX_DIMS);
    t->n_dims = nd;
    uint64_t numel = 1;
    for (int d = 0; d < nd; d++) {
        uint64_t v;
        if (json_u64(cJSON_GetArrayItem(shape, d), &v) || v > (1ull << 40))
            return fail(err, errlen, "%s: tensor %s: shape entry %d is not a size", sh->file, nm, d);
        t->shape[d] = (int64_t)v;
        if (v && numel > UINT64_MAX / 8 / v) return fail(err, errlen, "%s: tensor %s: absurd shape", sh->file, nm);
        numel *= v;
    }
    uint64_t b, en;
    if (json_u64(cJSON_GetArrayItem(offs, 0), &b) || json_u64(cJSON_GetArrayItem(offs, 1), &en) || en < b)
        return fail(err, errlen, "%s: tensor %s: bad data_offsets", sh->file, nm);
    if (en - b != numel * esize)
        return fail(err, errlen, "%s: tensor %s: data_offsets span %llu bytes but %s of this shape needs %llu", sh->file,
                    nm, (unsigned long long)(en - b), t->dtype_name, (unsigned long long)(numel * esize));
    if (en > sh->size - data_start)
        return fail(err, errlen, "%s: tensor %s: truncated shard (data ends at byte %llu, file has %llu)", sh->file, nm,
                    (unsigned long long)(data_start + en), (unsigned long long)sh->size);
    t->offset = data_start + b;
    t->nbytes = en - b;
    return 0;
}

/* Opens shard k and adds its tensors to the table. */
static int read_shard(es_st_set *s, int k, size_t *cap, char *err, size_t errlen) {
    es_st_shard *sh = &s->shards[k];
    sh->fd = open(sh->path, O_RDONLY | O_CLOEXEC);
    if (sh->fd < 0) return fail(err, errlen, "%s: cannot open shard: %s", sh->file, strerror(errno));
    struct stat st;
    if (fstat(sh->fd, &st) != 0 || !S_ISREG(st.st_mode)) return fail(err, errlen, "%s: not a regular file", sh->file);
    sh->size = (uint64_t)st.st_size;
    posix_fadvise(sh->fd, 0, 0, POSIX_FADV_SEQUENTIAL); /* a larger readahead window */
    uint8_t lenb[8];
    if (sh->size < 8 || read_full(sh->fd, lenb, 8, 0))
        return fail(err, errlen, "%s: truncated shard (no 8-byte header length)", sh->file);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | lenb[i];
    if (hl > ES_ST_MAX_HEADER)
        return fail(err, errlen, "%s: JSON header of %llu bytes exceeds the %u-byte limit", sh->file,
                    (unsigned long long)hl, ES_ST_MAX_HEADER);
    if (hl + 8 > sh->size)
        return fail(err, errlen, "%s: truncated shard (header of %llu bytes, file of %llu)", sh->file,
                    (unsigned long long)hl, (unsigned long long)sh->size);
    char *hdr = malloc(hl + 1);
    if (!hdr) return fail(err, errlen, "%s: out of memory for the header", sh->file);
    if (read_full(sh->fd, hdr, hl, 8)) {
        free(hdr);
        return fail(err, errlen, "%s: cannot read the header: %s", sh->file, strerror(errno));
    }
    hdr[hl] = 0;
    cJSON *root = cJSON_ParseWithLength(hdr, hl);
    int rc = 0;
    if (!root || !cJSON_IsObject(root)) {
        rc = fail(err, errlen, "%s: malformed JSON header", sh->file);
    } else {
        for (const cJSON *e = root->child; e && !rc; e = e->next) {
            if (!e->string) { rc = fail(err, errlen, "%s: malformed JSON header", sh->file); break; }
            if (!strcmp(e->string, "__metadata__")) continue;
            es_st_tensor t = {.shard = k};
            if ((rc = parse_entry(sh, e, 8 + hl, &t, err, errlen))) break;
            if (!(t.name = strdup(e->string))) { rc = fail(err, errlen, "out of memory"); break; }
            if ((rc = push_tensor(s, cap, &t, err, errlen))) free(t.name);
            else s->data_bytes += t.nbytes;
        }
    }
    cJSON_Delete(root);
    free(hdr);
    return rc;
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const es_st_tensor *)a)->name, ((const es_st_tensor *)b)->name);
}

es_st_tensor *es_st_find(const es_st_set *s, const char *name) {
    es_st_tensor key = {.name = (char *)name};
    if (!s->n_tensors) return NULL;
    return bsearch(&key, s->tensors, s->n_tensors, sizeof key, by_name);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int es_st_open(es_st_set *s, const char *dir, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    char *ipath = join(dir, INDEX_NAME);
    if (!ipath) return fail(err, errlen, "out of memory");
    cJSON *idx = NULL, *map = NULL;
    size_t cap = 0;
    int rc = -1;
    const char **names = NULL;
    s->index_file = INDEX_NAME;
    if (access(ipath, F_OK) == 0) {
        char *txt = es_st_slurp(ipath, MAX_INDEX, NULL, err, errlen);
        if (!txt) goto done;
        idx = cJSON_Parse(txt);
        free(txt);
        map = idx ? cJSON_GetObjectItemCaseSensitive(idx, "weight_map") : NULL;
        if (!cJSON_IsObject(map)) {
            fail(err, errlen, "%s: %s", INDEX_NAME, idx ? "no weight_map object" : "malformed JSON");
            goto done;
        }
        int n = cJSON_GetArraySize(map);
        if (n < 1) { fail(err, errlen, "%s: weight_map is empty", INDEX_NAME); goto done; }
        if (!(names = malloc(sizeof *names * (size_t)n))) { fail(err, errlen, "out of memory"); goto done; }
        int i = 0;
        for (const cJSON *e = map->child; e; e = e->next, i++) {
            if (!cJSON_IsString(e)) {
                fail(err, errlen, "%s: tensor %s: shard name is not a string", INDEX_NAME, e->string);
                goto done;
            }
            names[i] = e->string;
            if (add_shard(s, dir, e->valuestring, err, errlen) < 0) goto done;
        }
        qsort(names, (size_t)n, sizeof *names, cmp_str);
        for (i = 1; i < n; i++)
            if (!strcmp(names[i - 1], names[i])) {
                fail(err, errlen, "%s: tensor %s is listed twice", INDEX_NAME, names[i]);
                goto done;
            }
    } else {
        s->index_file = SINGLE_NAME;
        if (add_shard(s, dir, SINGLE_NAME, err, errlen) < 0) goto done;
    }
    for (int k = 0; k < s->n_shards; k++)
        if (read_shard(s, k, &cap, err, errlen)) goto done;
    if (s->n_tensors) qsort(s->tensors, s->n_tensors, sizeof *s->tensors, by_name);
    for (size_t i = 1; i < s->n_tensors; i++)
        if (!strcmp(s->tensors[i - 1].name, s->tensors[i].name)) {
            const es_st_tensor *a = &s->tensors[i - 1], *b = &s->tensors[i];
            fail(err, errlen, "%s: tensor %s appears twice (also in %s)", s->shards[b->shard].file, b->name,
                 s->shards[a->shard].file);
            goto done;
        }
    if (map)
        for (const cJSON *e = map->child; e; e = e->next) {
            const es_st_tensor *t = es_st_find(s, e->string);
            if (!t) {
                fail(err, errlen, "%s: tensor %s: listed in %s but not in the shard", e->valuestring, e->string,
                     INDEX_NAME);
                goto done;
            }
            if (strcmp(s->shards[t->shard].file, e->valuestring)) {
                fail(err, errlen, "%s: tensor %s: the index puts it in %s", s->shards[t->shard].file, e->string,
                     e->valuestring);
                goto done;
            }
        }
    rc = 0;
done:
    free(names);
    cJSON_Delete(idx);
    free(ipath);
    if (rc) es_st_close(s);
    return rc;
}

void es_st_close(es_st_set *s) {
    for (int k = 0; k < s->n_shards; k++) {
        if (s->shards[k].fd >= 0) close(s->shards[k].fd);
        free(s->shards[k].path);
        free(s->shards[k].file);
    }
    for (size_t i = 0; i < s->n_tensors; i++) free(s->tensors[i].name);
    free(s->shards);
    free(s->tensors);
    memset(s, 0, sizeof *s);
}

/* Readahead of es_st_read: the next ST_AHEAD bytes of the shard are asked
 * for (POSIX_FADV_WILLNEED) whenever less than half of that is left ahead of
 * the read, so the disk reads on while the caller converts what it has (a
 * checkpoint is read mostly in the order it is stored). */
#define ST_AHEAD ((uint64_t)64 << 20)
static void read_ahead(es_st_shard *sh, uint64_t end) {
    if (sh->ahead >= end + ST_AHEAD / 2 || end >= sh->size) return;
    uint64_t from = sh->ahead > end ? sh->ahead : end, to = end + ST_AHEAD < sh->size ? end + ST_AHEAD : sh->size;
    posix_fadvise(sh->fd, (off_t)from, (off_t)(to - from), POSIX_FADV_WILLNEED);
    sh->ahead = to;
}

int es_st_read(const es_st_set *s, const es_st_tensor *t, uint64_t off, void *buf, size_t len, char *err,
               size_t errlen) {
    es_st_shard *sh = &s->shards[t->shard];
    if (off > t->nbytes || len > t->nbytes - off)
        return fail(err, errlen, "%s: tensor %s: read past its end", sh->file, t->name);
    if (read_full(sh->fd, buf, len, t->offset + off))
        return fail(err, errlen, "%s: tensor %s: read failed (%s)", sh->file, t->name,
                    errno ? strerror(errno) : "file shrank");
    read_ahead(sh, t->offset + off + len);
    return 0;
}
