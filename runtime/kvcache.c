/* kvcache.c — the latent cache in its storage type: the cache types' names,
 * the row layout of each (kvcache.h), the view of one layer, the write of
 * one row, the bytes per token, and the record of the tokens a session
 * holds.  The reads are attention.c's, through the kernel table's dot_kv and
 * axpy_kv, on the stored rows. */
#include "kvcache.h"
#include "mtp.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kernels.h"

static const char *const kv_names[] = {[ES_KV_F32] = "f32", [ES_KV_F16] = "f16", [ES_KV_BF16] = "bf16",
                                       [ES_KV_Q8_0] = "q8_0"};
enum { N_KV_NAMES = sizeof kv_names / sizeof kv_names[0] };

static void kv_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

const char *es_kv_type_name(int kv_type) {
    if (kv_type == ES_KV_DEFAULT) kv_type = ES_KV_TYPE_DEFAULT;
    return kv_type > 0 && kv_type < N_KV_NAMES ? kv_names[kv_type] : NULL;
}

es_status es_kv_type_parse(const char *name, int *kv_type, char *err, size_t errlen) {
    for (int t = 1; name && t < N_KV_NAMES; t++)
        if (!strcmp(name, kv_names[t])) {
            *kv_type = t;
            return ES_OK;
        }
    kv_err(err, errlen, "unknown KV cache type '%s' (f32, f16, bf16, q8_0)", name ? name : "");
    return ES_ERR_ARG;
}

es_status es_kv_layout(const es_hparams *hp, int kv_type, es_kv_view *out, char *err, size_t errlen) {
    if (kv_type == ES_KV_DEFAULT) kv_type = ES_KV_TYPE_DEFAULT;
    static const uint32_t lat[] = {[ES_KV_F32] = ES_TYPE_F32, [ES_KV_F16] = ES_TYPE_F16,
                                   [ES_KV_BF16] = ES_TYPE_BF16, [ES_KV_Q8_0] = ES_TYPE_Q8_0};
    if (kv_type < 1 || kv_type >= N_KV_NAMES) {
        kv_err(err, errlen, "unknown KV cache type %d", kv_type);
        return ES_ERR_ARG;
    }
    if (kv_type == ES_KV_Q8_0 && hp->kv_lora % QK8_0) {
        kv_err(err, errlen, "a q8_0 KV cache needs kv_lora_rank a multiple of %d (this model's is %d)", QK8_0,
               hp->kv_lora);
        return ES_ERR_ARG;
    }
    memset(out, 0, sizeof *out);
    out->lat_type = lat[kv_type];
    out->rope_type = kv_type == ES_KV_Q8_0 ? ES_TYPE_F16 : lat[kv_type];
    out->rope_off = es_row_bytes(out->lat_type, hp->kv_lora);
    out->row_bytes = out->rope_off + es_row_bytes(out->rope_type, hp->rope);
    return ES_OK;
}

size_t es_model_kv_bytes_per_token_of(const es_model *m, int kv_type) {
    es_kv_view v;
    if (es_kv_layout(&m->hp, kv_type, &v, NULL, 0) != ES_OK) return 0;
    return v.row_bytes * (size_t)m->hp.n_layers;
}

es_kv_view es_kv_layer(const es_session *s, int il) {
    uint8_t *base = il < s->m->hp.n_layers ? s->kv + (size_t)il * (size_t)s->n_ctx * s->kv_row
                                           : es_mtp_kv(s); /* the MTP block's own cache */
    es_kv_view v = {base, s->kv_row, s->kv_rope_off, s->kv_lat_type,
                    s->kv_rope_type};
    return v;
}

void es_kv_write(const es_kernels *K, const es_kv_view *v, int pos, const float *row, int R, int dr) {
    uint8_t *dst = v->base + (size_t)pos * v->row_bytes;
    es_prepare_act(K, v->lat_type, row, dst, R);
    es_prepare_act(K, v->rope_type, row + R, dst + v->rope_off, dr);
}

void es_session_note_tokens(es_session *s, int pos0, const int32_t *tokens, int n) {
    memcpy(s->tokens + pos0, tokens, sizeof(int32_t) * (size_t)n);
}

void es_kv_print_types(const es_model *m, FILE *f) {
    fprintf(f, "  --kv-type:");
    for (int t = 1; t < N_KV_NAMES; t++) {
        size_t b = es_model_kv_bytes_per_token_of(m, t);
        if (b) fprintf(f, " %s %zu%s", kv_names[t], b, t == ES_KV_TYPE_DEFAULT ? " (default)" : "");
        else fprintf(f, " %s (kv_lora_rank %d is not a multiple of %d)", kv_names[t], m->hp.kv_lora, QK8_0);
        fprintf(f, t + 1 < N_KV_NAMES ? "," : " bytes per token\n");
    }
}
