/* fuzz_vocab.c — owns: loading the harnesses' vocabularies (fuzz_vocab.h).
 *
 * The repository has two real vocabularies (DeepSeek-V3's, vocab-only, and
 * the default model's) and the tiny golden models' ones, which use both
 * pre-tokenizers.  To run every pre-tokenizer and both chat flavours over
 * the big vocabulary too, a variant is loaded from the same parsed file
 * with tokenizer.ggml.pre or tokenizer.chat_template replaced in the parsed
 * metadata before es_tokenizer_load reads it (the tokenizer copies what it
 * needs, so the file is closed after). */
#include "fuzz_vocab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

typedef struct variant {
    const char *file;
    const char *pre;  /* NULL: the file's own */
    const char *chat; /* NULL: the file's own template */
    int chat_v2;
} variant;

static const variant variants[] = {
    { "tests/data/golden/tokenizer/dsv3-vocab.gguf", NULL, NULL, 0 },
    { "tests/data/golden/tokenizer/dsv3-vocab.gguf", "deepseek-llm", "{{ 'User: ' + content }}", 1 },
    { "models/edgeseek-default.gguf", NULL, NULL, 0 },
    { "tests/data/golden/v2-tiny/model.gguf", NULL, "{{ 'User: ' + content }}", 1 },
    { "tests/data/golden/v2-tiny/model.gguf", "deepseek-v3", NULL, 0 },
};
#define N_VARIANTS (sizeof variants / sizeof variants[0])

static fuzz_vocab table[N_VARIANTS];
static size_t n_loaded;

void fuzz_fail(const fuzz_vocab *v, const char *what) {
    fprintf(stderr, "fuzz: %s (%s)\n", what, v ? v->name : "-");
    abort();
}

/* Sets the string value of key, adding the key if the file lacks it. */
static void set_str(es_gguf_ctx *g, const char *key, const char *val) {
    es_gguf_kv *kv = NULL;
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, key) == 0) kv = &g->kv[i];
    if (!kv) {
        es_gguf_kv *grown = realloc(g->kv, (size_t)(g->n_kv + 1) * sizeof *grown);
        char *k = strdup(key);
        if (!grown || !k) fuzz_fail(NULL, "out of memory");
        g->kv = grown;
        kv = &g->kv[g->n_kv++];
        kv->key = k;
    } else if (kv->val.type == GGUF_VT_ARRAY) {
        fuzz_fail(NULL, "metadata to replace is an array");
    }
    kv->val.type = GGUF_VT_STRING;
    kv->val.v.s.ptr = val;
    kv->val.v.s.len = strlen(val);
}

static void load(size_t i) {
    const variant *va = &variants[i];
    const char *root = getenv("ES_FUZZ_ROOT");
    char path[4096], err[256] = "", name[256];
    snprintf(path, sizeof path, "%s/%s", root && *root ? root : ".", va->file);
    snprintf(name, sizeof name, "%s%s%s%s", va->file, va->pre ? " pre=" : "", va->pre ? va->pre : "",
             va->chat_v2 ? " chat=v2" : "");
    fuzz_vocab *v = &table[i];
    v->name = strdup(name);
    es_gguf_ctx *g;
    if (es_gguf_open_file(path, &g, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz: cannot open %s: %s\n", path, err);
        abort();
    }
    if (va->pre) set_str(g, "tokenizer.ggml.pre", va->pre);
    if (va->chat) set_str(g, "tokenizer.chat_template", va->chat);
    if (es_tokenizer_load(g, &v->tok, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz: cannot load the tokenizer of %s: %s\n", name, err);
        abort();
    }
    es_gguf_close(g);
    v->chat_v2 = va->chat_v2;
    /* byte-level lossless: each byte alone encodes and decodes to itself */
    v->lossless = 1;
    for (unsigned b = 0; b < 256 && v->lossless; b++) {
        char c = (char)b, out[64];
        int32_t *ids;
        size_t n, len = 0;
        if (es_tokenizer_encode(v->tok, &c, 1, 0, 0, &ids, &n, err, sizeof err) != 0) {
            v->lossless = 0;
            continue;
        }
        for (size_t k = 0; k < n; k++) {
            int r = es_tokenizer_piece(v->tok, ids[k], out + len, sizeof out - len);
            if (r < 0 || (size_t)r > sizeof out - len) { len = sizeof out + 1; break; }
            len += (size_t)r;
        }
        if (len != 1 || out[0] != c) v->lossless = 0;
        free(ids);
    }
}

const fuzz_vocab *fuzz_vocabs(size_t *n) {
    if (!n_loaded) {
        for (size_t i = 0; i < N_VARIANTS; i++) load(i);
        n_loaded = N_VARIANTS;
    }
    *n = n_loaded;
    return table;
}
