/* kvcache.h — the layout of a session's latent cache in its storage type
 * (`--kv-type`, es_session_params.kv_type): per layer and position one row
 * of the normalised latent ĉ (R values) then the rotated rope key k_pe (dr
 * values).  F32, F16 and BF16 store both parts in that type; Q8_0 stores the
 * latent in Q8_0 blocks (R a multiple of 32) and k_pe in F16 (dr need not be
 * a multiple of 32, and its few values set the positional part of every
 * score).  kvcache.c owns the layout, the writes and the sizes; attention.c
 * reads rows through es_kv_view with the kernel table's dot_kv/axpy_kv.
 * Internal to the runtime. */
#ifndef ES_KVCACHE_H
#define ES_KVCACHE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "model.h"
#include "quant.h"

/* The cache type a session gets when it asks for ES_KV_DEFAULT (see
 * README "KV cache" for the measurement behind it). */
#define ES_KV_TYPE_DEFAULT ES_KV_F16

/* One layer of one session's cache. */
typedef struct es_kv_view {
    uint8_t *base;       /* position 0 of the layer */
    size_t row_bytes;    /* bytes per position */
    size_t rope_off;     /* bytes of the latent part: k_pe starts here */
    uint32_t lat_type;   /* ggml type of the R latent values */
    uint32_t rope_type;  /* ggml type of the dr rope values */
} es_kv_view;

/* How a cache type lays a row out for these hyperparameters.  ES_OK, or
 * ES_ERR_ARG with a message (an unknown type; Q8_0 with R not a multiple of
 * 32).  kv_type ES_KV_DEFAULT means ES_KV_TYPE_DEFAULT. */
es_status es_kv_layout(const es_hparams *hp, int kv_type, es_kv_view *out, char *err, size_t errlen);

/* Layer il of s's cache. */
es_kv_view es_kv_layer(const es_session *s, int il);

/* Row pos of a layer. */
static inline const uint8_t *es_kv_row(const es_kv_view *v, int64_t pos) {
    return v->base + (size_t)pos * v->row_bytes;
}

/* A view of fp32 rows [n][R+dr] (tests, benchmarks). */
static inline es_kv_view es_kv_view_f32(float *rows, const es_hparams *hp) {
    es_kv_view v = {(uint8_t *)rows, sizeof(float) * (size_t)(hp->kv_lora + hp->rope),
                    sizeof(float) * (size_t)hp->kv_lora, ES_TYPE_F32, ES_TYPE_F32};
    return v;
}

/* Stores row[R+dr] (fp32 ĉ then k_pe) at position pos, converted with K's
 * quantisers. */
void es_kv_write(const struct es_kernels *K, const es_kv_view *v, int pos, const float *row, int R, int dr);

/* One line for `info`: the bytes per token of every cache type. */
void es_kv_print_types(const es_model *m, FILE *f);

/* Records tokens[0..n) as the session's positions pos0.. (after an eval
 * that completed): the session file and a prompt cache compare them. */
void es_session_note_tokens(es_session *s, int pos0, const int32_t *tokens, int n);

#endif
