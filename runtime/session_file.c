/* session_file.c — saved sessions (es_session_save / es_session_load): a
 * session's tokens and their latent cache in a file, so a long prefix is
 * prefilled once and reused.  The layout (all integers little-endian as the
 * host writes them; a file from a host of the other byte order fails the
 * magic):
 *
 *   header   64 bytes: magic "EDGESESS", version, cache type (es_kv_type),
 *            the model's identity, layers, row bytes, kv_lora_rank, rope
 *            dims, tokens n (the context a loader needs), MTP rows r, bytes
 *            that follow, the hidden window's first position h0 and rows hn
 *   tokens   n int32, padded with zeros to a multiple of 8 bytes
 *   rows     per layer, the n cache rows of that layer (row bytes each), in
 *            the cache type's layout (kvcache.h)
 *   mtp      (version 2, when r + hn > 0) the MTP block's r cache rows (row
 *            bytes each), then the main model's hn hidden rows of
 *            positions h0.. (dim floats each) that the block has not run
 *            yet: a loaded session drafts without running the main model
 *            over its tokens again (mtp.c)
 *   checksum 8 bytes: file_hash of everything before it
 *
 * Version 1 (no MTP part; r, h0, hn were zeros) still loads.  A session
 * without MTP skips a file's MTP part; a file without one leaves the MTP
 * block to recompute its rows at the first draft.
 *
 * The model's identity is file_hash of the GGUF's bytes before its tensor
 * data: the header, every metadata key and value and the tensor table
 * (names, types, shapes, offsets), not the weights themselves.  Files are
 * written through es_outfile (a temporary renamed over the target). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgeseek.h"
#include "kvcache.h"
#include "model.h"
#include "mtp.h"

#define SESS_MAGIC ES_SESSION_MAGIC
#define SESS_VERSION 2u /* reads 1 too */
#define HEADER_BYTES 64

typedef struct sess_header {
    char magic[8];
    uint32_t version, kv_type;
    uint64_t model_id;
    uint32_t n_layers, row_bytes, kv_lora, rope;
    uint32_t n_tokens, mtp_rows;
    uint64_t payload; /* bytes after the header, the checksum excluded */
    uint32_t mtp_h0, mtp_hn;
} sess_header;
_Static_assert(sizeof(sess_header) == HEADER_BYTES, "session header is 64 bytes");

static void serr(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- the hash: 64-bit words through a multiply-rotate mix, the tail
 * bytes and the length at the end, then a final avalanche ---------------- */

typedef struct file_hash {
    uint64_t h, len;
    uint8_t tail[8];
    int n_tail;
} file_hash;

static uint64_t mix(uint64_t h, uint64_t w) {
    h ^= w * 0x9e3779b97f4a7c15ull;
    h = (h << 31 | h >> 33) * 0xbf58476d1ce4e5b9ull;
    return h + 0x94d049bb133111ebull;
}

static void hash_init(file_hash *fh) { memset(fh, 0, sizeof *fh), fh->h = 0x6a09e667f3bcc908ull; }

static void hash_add(file_hash *fh, const void *data, size_t n) {
    const uint8_t *p = data;
    fh->len += n;
    while (n && fh->n_tail) { /* finish a partial word first */
        fh->tail[fh->n_tail++] = *p++, n--;
        if (fh->n_tail == 8) {
            uint64_t w;
            memcpy(&w, fh->tail, 8);
            fh->h = mix(fh->h, w);
            fh->n_tail = 0;
        }
    }
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        fh->h = mix(fh->h, w);
    }
    while (n--) fh->tail[fh->n_tail++] = *p++;
}

static uint64_t hash_end(file_hash *fh) {
    uint64_t w = 0;
    memcpy(&w, fh->tail, (size_t)fh->n_tail);
    uint64_t h = mix(mix(fh->h, w), fh->len);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static uint64_t model_identity(const es_model *m) {
    const es_gguf_ctx *g = m->gguf;
    file_hash fh;
    hash_init(&fh);
    size_t n = g->data_offset <= g->size ? (size_t)g->data_offset : g->size;
    hash_add(&fh, g->base, n);
    return hash_end(&fh);
}

static size_t tokens_bytes(uint32_t n) { return ((size_t)n * sizeof(int32_t) + 7) / 8 * 8; }

/* The bytes after header h (its counts), the checksum excluded. */
static uint64_t payload_bytes(const sess_header *h, uint32_t dim) {
    return tokens_bytes(h->n_tokens) + ((uint64_t)h->n_layers * h->n_tokens + h->mtp_rows) * h->row_bytes +
           (uint64_t)h->mtp_hn * dim * sizeof(float);
}

static void make_header(const es_session *s, sess_header *h) {
    const es_hparams *hp = &s->m->hp;
    memset(h, 0, sizeof *h);
    memcpy(h->magic, SESS_MAGIC, 8);
    h->version = SESS_VERSION;
    h->kv_type = (uint32_t)s->kv_type;
    h->model_id = model_identity(s->m);
    h->n_layers = (uint32_t)hp->n_layers;
    h->row_bytes = (uint32_t)s->kv_row;
    h->kv_lora = (uint32_t)hp->kv_lora;
    h->rope = (uint32_t)hp->rope;
    h->n_tokens = (uint32_t)s->pos;
    int rows, h0, hn;
    es_mtp_extent(s, &rows, &h0, &hn);
    h->mtp_rows = (uint32_t)rows, h->mtp_h0 = (uint32_t)h0, h->mtp_hn = (uint32_t)hn;
    h->payload = payload_bytes(h, (uint32_t)hp->dim);
}

/* ---- save ------------------------------------------------------------------- */

static es_status put(es_outfile *f, file_hash *fh, const void *p, size_t n, char *err, size_t errlen) {
    hash_add(fh, p, n);
    return es_outfile_write(f, p, n, err, errlen);
}

es_status es_session_save(const es_session *s, const char *path, char *err, size_t errlen) {
    if (!path || !*path) {
        serr(err, errlen, "no session file named");
        return ES_ERR_ARG;
    }
    sess_header h;
    make_header(s, &h);
    es_outfile *f;
    es_status st = es_outfile_open(path, &f, err, errlen);
    if (st != ES_OK) return st;
    file_hash fh;
    hash_init(&fh);
    const uint8_t zeros[8] = {0};
    st = put(f, &fh, &h, sizeof h, err, errlen);
    if (st == ES_OK) st = put(f, &fh, s->tokens, sizeof(int32_t) * h.n_tokens, err, errlen);
    if (st == ES_OK) st = put(f, &fh, zeros, tokens_bytes(h.n_tokens) - sizeof(int32_t) * h.n_tokens, err, errlen);
    for (uint32_t il = 0; st == ES_OK && il < h.n_layers; il++) {
        const es_kv_view v = es_kv_layer(s, (int)il);
        st = put(f, &fh, v.base, (size_t)h.n_tokens * h.row_bytes, err, errlen);
    }
    if (st == ES_OK && h.mtp_rows) st = put(f, &fh, es_kv_layer(s, s->m->hp.n_layers).base, (size_t)h.mtp_rows * h.row_bytes, err, errlen);
    int cap;
    const float *hid = es_mtp_hidden(s, &cap);
    if (st == ES_OK && h.mtp_hn) st = put(f, &fh, hid, sizeof(float) * h.mtp_hn * (size_t)s->m->hp.dim, err, errlen);
    uint64_t sum = hash_end(&fh);
    if (st == ES_OK) st = es_outfile_write(f, &sum, sizeof sum, err, errlen);
    if (st != ES_OK) {
        es_outfile_discard(f);
        return st;
    }
    return es_outfile_commit(f, err, errlen);
}

/* ---- load ------------------------------------------------------------------- */

/* n bytes at the file's current offset into p (EINTR retried); 0, or -1
 * with errno (0 at end of file). */
static int read_all(int fd, void *p, size_t n) {
    uint8_t *b = p;
    while (n) {
        ssize_t r = read(fd, b, n > (1u << 30) ? (1u << 30) : n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = 0;
            return -1;
        }
        b += r, n -= (size_t)r;
    }
    return 0;
}

/* Why header h cannot be loaded into s (a message in err), or ES_OK. */
static es_status check_header(const es_session *s, const sess_header *h, int64_t file_size, const char *path,
                              char *err, size_t errlen) {
    sess_header want;
    make_header(s, &want);
    if (memcmp(h->magic, SESS_MAGIC, 8)) {
        serr(err, errlen, "%s is not an edgeseek session file", path);
        return ES_ERR_FORMAT;
    }
    if (h->version != SESS_VERSION && h->version != 1) {
        serr(err, errlen, "%s: session file version %u, this edgeseek reads versions 1 and %u", path, h->version,
             SESS_VERSION);
        return ES_ERR_UNSUPPORTED;
    }
    if (h->model_id != want.model_id || h->n_layers != want.n_layers || h->kv_lora != want.kv_lora ||
        h->rope != want.rope) {
        serr(err, errlen, "%s was saved with another model (its metadata and tensor table differ from this one's)",
             path);
        return ES_ERR_UNSUPPORTED;
    }
    if (h->kv_type != want.kv_type || h->row_bytes != want.row_bytes) {
        const char *name = es_kv_type_name((int)h->kv_type);
        serr(err, errlen, "%s holds a %s KV cache; this session's is %s (use --kv-type %s)", path,
             name && h->kv_type ? name : "unknown", es_kv_type_name(s->kv_type), name && h->kv_type ? name : "?");
        return ES_ERR_UNSUPPORTED;
    }
    if (h->n_tokens > (uint32_t)s->n_ctx) {
        serr(err, errlen, "%s holds %u tokens; this session's context is %d (enlarge it with -c)", path, h->n_tokens,
             s->n_ctx);
        return ES_ERR_UNSUPPORTED;
    }
    int cap = 0;
    es_mtp_hidden(s, &cap);
    if ((h->version == 1 && (h->mtp_rows || h->mtp_h0 || h->mtp_hn)) ||
        (h->mtp_rows && h->mtp_rows >= h->n_tokens) || (uint64_t)h->mtp_h0 + h->mtp_hn > h->n_tokens ||
        h->mtp_hn > 2u * ES_BATCH + 4 || (s->mtp && h->mtp_hn > (uint32_t)cap)) {
        serr(err, errlen, "%s is damaged (its MTP part does not fit its %u tokens)", path, h->n_tokens);
        return ES_ERR_FORMAT;
    }
    const uint64_t payload = payload_bytes(h, (uint32_t)s->m->hp.dim);
    const uint64_t size = HEADER_BYTES + payload + 8;
    if (h->payload != payload || (uint64_t)file_size != size) {
        serr(err, errlen, "%s is %s: %lld bytes where %u tokens need %llu", path,
             (uint64_t)file_size < size ? "truncated" : "damaged (its size does not match its header)",
             (long long)file_size, h->n_tokens, (unsigned long long)size);
        return ES_ERR_FORMAT;
    }
    return ES_OK;
}

es_status es_session_load(es_session *s, const char *path, char *err, size_t errlen) {
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (fd < 0) {
        serr(err, errlen, "cannot open session file %s: %s", path ? path : "(null)", strerror(errno));
        return ES_ERR_IO;
    }
    struct stat sb;
    es_status st = ES_OK;
    sess_header h;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        serr(err, errlen, "%s is not a regular file", path);
        st = ES_ERR_IO;
    } else if (sb.st_size < HEADER_BYTES + 8 || read_all(fd, &h, sizeof h) != 0) {
        serr(err, errlen, "%s is %s", path,
             sb.st_size < HEADER_BYTES + 8 ? "not an edgeseek session file (too short)" : "unreadable");
        st = sb.st_size < HEADER_BYTES + 8 ? ES_ERR_FORMAT : ES_ERR_IO;
    } else {
        st = check_header(s, &h, (int64_t)sb.st_size, path, err, errlen);
    }
    if (st != ES_OK) {
        close(fd);
        return st;
    }
    /* The header fits: the rows go straight into the cache, checked as they
     * come; a file that fails the checksum leaves the session empty. */
    file_hash fh;
    hash_init(&fh);
    hash_add(&fh, &h, sizeof h);
    const size_t tb = tokens_bytes(h.n_tokens);
    uint8_t pad[8];
    int rd = read_all(fd, s->tokens, sizeof(int32_t) * h.n_tokens) ||
             read_all(fd, pad, tb - sizeof(int32_t) * h.n_tokens);
    hash_add(&fh, s->tokens, sizeof(int32_t) * h.n_tokens);
    hash_add(&fh, pad, tb - sizeof(int32_t) * h.n_tokens);
    for (uint32_t il = 0; !rd && il < h.n_layers; il++) {
        const es_kv_view v = es_kv_layer(s, (int)il);
        const size_t n = (size_t)h.n_tokens * h.row_bytes;
        rd = read_all(fd, v.base, n);
        hash_add(&fh, v.base, n);
    }
    /* the MTP part: into the block's cache and window, or skipped (hashed)
     * when the session's MTP is off */
    int cap;
    float *hid = es_mtp_hidden(s, &cap);
    uint8_t *mtp_kv = s->mtp ? es_kv_layer(s, s->m->hp.n_layers).base : NULL;
    const size_t part[2] = {(size_t)h.mtp_rows * h.row_bytes, sizeof(float) * h.mtp_hn * (size_t)s->m->hp.dim};
    uint8_t *dst[2] = {mtp_kv, (uint8_t *)hid};
    for (int k = 0; k < 2 && !rd; k++) {
        if (dst[k]) {
            rd = read_all(fd, dst[k], part[k]);
            hash_add(&fh, dst[k], part[k]);
            continue;
        }
        uint8_t buf[4096];
        for (size_t left = part[k]; left && !rd; left -= left < sizeof buf ? left : sizeof buf) {
            const size_t n = left < sizeof buf ? left : sizeof buf;
            rd = read_all(fd, buf, n);
            hash_add(&fh, buf, n);
        }
    }
    uint64_t sum = 0;
    if (!rd) rd = read_all(fd, &sum, sizeof sum);
    const int read_errno = errno;
    close(fd);
    s->pos = 0;
    es_mtp_forget(s, 0, -1); /* until the file is known good */
    if (rd) {
        serr(err, errlen, "cannot read session file %s: %s", path, read_errno ? strerror(read_errno) : "it shrank");
        return ES_ERR_IO;
    }
    if (sum != hash_end(&fh)) {
        serr(err, errlen, "%s is corrupted (checksum mismatch); not loaded", path);
        return ES_ERR_FORMAT;
    }
    for (uint32_t i = 0; i < h.n_tokens; i++)
        if (s->tokens[i] < 0 || s->tokens[i] >= s->m->hp.n_vocab) {
            serr(err, errlen, "%s holds token id %d, outside the vocabulary", path, s->tokens[i]);
            return ES_ERR_FORMAT;
        }
    s->pos = (int)h.n_tokens;
    es_mtp_set_extent(s, (int)h.mtp_rows, (int)h.mtp_h0, (int)h.mtp_hn);
    return ES_OK;
}
