/* fuzz_gguf.c — owns: the libFuzzer harness of the GGUF reader.
 *
 * Each input is parsed by es_gguf_parse_buffer from an exactly-sized copy (so
 * AddressSanitizer sees any read past the end).  When it parses, every
 * accessor a loader would use is driven over the result: the typed getters
 * on every key, every element of every array (nested ones too), and the
 * first and last byte of every tensor's data, so that a directory the parser
 * accepted but got wrong shows up as an out-of-bounds read.
 * Built and run by fuzz/run.sh; not part of `make test`.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

static volatile uint64_t sink; /* keeps the reads from being optimised away */

static void touch_value(const es_gguf_value *v, int depth) {
    if (v->type == GGUF_VT_STRING) {
        if (v->v.s.len) sink += (uint8_t)v->v.s.ptr[0] + (uint8_t)v->v.s.ptr[v->v.s.len - 1];
        return;
    }
    if (v->type != GGUF_VT_ARRAY || depth > 16) return;
    uint32_t et = v->v.arr.elem_type;
    for (uint64_t i = 0; i < v->v.arr.n; i++) {
        if (et == GGUF_VT_STRING) {
            const es_gguf_str *s = &v->v.arr.strs[i];
            if (s->len) sink += (uint8_t)s->ptr[0] + (uint8_t)s->ptr[s->len - 1];
        } else if (et == GGUF_VT_ARRAY) {
            touch_value(&v->v.arr.items[i], depth + 1);
        } else if (et == GGUF_VT_FLOAT32 || et == GGUF_VT_FLOAT64) {
            double d = es_gguf_arr_float(v, i);
            sink += d == d;
        } else {
            sink += (uint64_t)es_gguf_arr_int(v, i);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    es_gguf_ctx *ctx;
    char err[256];
    if (es_gguf_parse_buffer(copy, size, &ctx, err, sizeof err) == 0) {
        for (uint64_t i = 0; i < ctx->n_kv; i++) {
            const es_gguf_kv *kv = &ctx->kv[i];
            int64_t iv;
            double dv;
            int bv;
            es_gguf_str sv;
            sink += (uint64_t)es_gguf_get_int(ctx, kv->key, &iv) + (uint64_t)es_gguf_get_float(ctx, kv->key, &dv) +
                    (uint64_t)es_gguf_get_bool(ctx, kv->key, &bv) + (uint64_t)es_gguf_get_str(ctx, kv->key, &sv);
            sink += es_gguf_find_kv(ctx, kv->key) == kv;
            touch_value(&kv->val, 0);
        }
        for (uint64_t i = 0; i < ctx->n_tensors; i++) {
            const es_gguf_tensor *t = &ctx->tensors[i];
            sink += es_gguf_find_tensor(ctx, t->name) == t;
            if (t->nbytes) sink += t->data[0] + t->data[t->nbytes - 1];
        }
        es_gguf_close(ctx);
    } else if (!err[0]) {
        __builtin_trap(); /* every failure must say why */
    }
    free(copy);
    return 0;
}
