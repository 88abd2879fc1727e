/* hf_plan.h — what convert/'s two users of a checkpoint share (hf.c, which
 * converts it, and hf_direct.c, which maps it for the runtime): config.json
 * read into hf_cfg, the plan of llama.cpp-named tensors with the checkpoint
 * tensors each comes from (checked: every tensor present once, in its dtype
 * and shape, with its FP8 scales, nothing left over), and the hyperparameter
 * metadata.  Internal to the room. */
#ifndef ES_HF_PLAN_H
#define ES_HF_PLAN_H

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>

#include "gguf_writer.h"
#include "safetensors.h"
#include "threadpool.h"

typedef struct hf_cfg {
    int64_t vocab, dim, layers, ffn, moe_ffn, heads, q_lora, kv_lora, nope, rope, vdim;
    int64_t experts, used, shared, dense, moe_freq, groups, topk_groups, ctx, nextn;
    double eps, rope_theta, route_scale;
    int norm_topk, gating, gate_bias;
    int yarn;
    double yarn_factor, beta_fast, beta_slow, mscale_all_dim;
    int64_t yarn_orig;
    int fp8;
    int64_t blk_r, blk_c;
} hf_cfg;

enum op { OP_WHOLE, OP_KB, OP_VB };

typedef struct otensor {
    char name[GGUF_W_MAX_NAME];
    uint32_t n_dims;
    int64_t ne[4];
    uint32_t type;
    enum op op;
    int n_src;               /* pieces: 1, or the expert count when stacked */
    es_st_tensor **src;      /* each piece's checkpoint tensor */
    es_st_tensor **scale;    /* its FP8 scale_inv, or NULL */
    int64_t src_rows, src_cols; /* a piece's shape (rows 1 for vectors) */
    int optional;
    char hf[200]; /* the checkpoint name; a format with %d for stacked experts */
} otensor;

typedef struct conv {
    hf_cfg c;
    es_st_set st;
    otensor *t;
    size_t n, cap;
    int n_blocks; /* block_count: layers and the next-n layers kept */
    es_gguf_writer *w;
    es_pool *pool;
    int n_threads;
    float **scratch;
    uint8_t *raw, *out;
    float *f32;
    size_t raw_cap, out_cap, f32_cap;
    uint64_t done_bytes, total_bytes;
    double t0, last;
    FILE *log;
    char *err;
    size_t errlen;
} conv;

/* config.json of dir: *cj (the caller deletes it) and c. 0 or -1 with a message. */
int es_hf_read_json(const char *dir, const char *file, cJSON **out, char *err, size_t errlen);
int es_hf_read_config(hf_cfg *c, const cJSON *j, char *err, size_t errlen);
/* v->c and v->st set: builds v->t (v->n entries), checks the checkpoint
 * against it, and picks each tensor's output type (type NULL: the source
 * precision).  no_mtp: the next-n layers are left out (and not complained
 * about).  0 or -1 with a message naming the file and the tensor. */
int es_hf_make_plan(conv *v, const char *type, int no_mtp);
/* The deepseek2.* hyperparameters of v->c into v->w, block_count
 * v->n_blocks of which n_mtp next-n layers. */
void es_hf_write_hparams(conv *v, int n_mtp);
/* A file name's last component (dir without its trailing slashes). */
const char *es_hf_dir_base(const char *dir, char *buf, size_t n);

#endif
