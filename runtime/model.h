/* model.h — the deepseek2 model as loaded from GGUF: hyperparameters read
 * from metadata, weights as views into the read-only mapping, and the
 * per-session state (latent KV cache, scratch) the forward pass uses.
 * Internal to the runtime; the public face is edgeseek.h. */
#ifndef ES_MODEL_H
#define ES_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "edgeseek.h"
#include "gguf.h"
#include "tokenizer.h"

enum es_gating { ES_GATING_SOFTMAX = 1, ES_GATING_SIGMOID = 2 };

/* Limits the loader enforces (model.c refuses a file beyond them) and the
 * routing relies on (moe.c keeps per-group state on the stack). */
#define ES_MAX_EXPERTS_USED 256  /* k, experts per token */
#define ES_MAX_EXPERT_GROUPS 256 /* G */

/* Tokens per batch: prefill runs in batches of this many, and a session's
 * scratch holds one batch (forward.c). */
#define ES_BATCH 256

/* A session's context when none is asked for (capped at the training
 * context). */
#define ES_DEFAULT_CTX 4096

typedef struct es_hparams {
    int n_vocab;
    int n_ctx_train;     /* context_length */
    int dim;             /* embedding_length */
    int n_layers;        /* block_count, without an MTP/next-n layer */
    int n_nextn;         /* MTP layers the file declares (nextn_predict_layers); the first one
                            runs when its tensors are present (es_model.has_mtp), the rest are skipped */
    int n_dense;         /* leading_dense_block_count */
    int ffn_dim;         /* feed_forward_length (dense layers) */
    int moe_ffn_dim;     /* expert_feed_forward_length */
    int n_heads;
    int q_lora;          /* 0: no query compression */
    int kv_lora;         /* R */
    int nope;            /* dn */
    int rope;            /* dr */
    int vdim;            /* dv */
    int n_experts;       /* E */
    int n_used;          /* k */
    int n_shared;
    int gating;          /* enum es_gating */
    int norm_topk;       /* renormalise the selected weights */
    int n_groups;        /* G (1: no groups) */
    int n_groups_used;   /* Gk */
    float route_scale;
    float eps;
    float rope_base;
    int yarn;            /* YaRN frequency blend and m^2 scale active */
    float rope_factor;
    int yarn_orig_ctx;
    float yarn_beta_fast, yarn_beta_slow;
    float yarn_log_mul;  /* 0.1 * mscale_all_dim */
    float attn_scale;    /* (dn+dr)^-1/2 * m^2 */
} es_hparams;

/* Bytes of latent KV cache per token, all layers: the normalised latent
 * (kv_lora) and the rotated rope key (rope) in fp32. */
static inline size_t es_hp_kv_bytes_per_token(const es_hparams *hp) {
    return (size_t)hp->n_layers * (size_t)(hp->kv_lora + hp->rope) * sizeof(float);
}

/* A weight tensor viewed as n_mat matrices of `rows` rows of `n` elements. */
typedef struct es_weight {
    const uint8_t *data;
    uint32_t type;
    int64_t n;           /* row length (ne[0]) */
    int64_t rows;        /* ne[1] */
    int64_t n_mat;       /* ne[2] (experts, heads) */
    size_t row_bytes;
    size_t mat_bytes;
    const char *name;
    /* NULL: matrix i at data + i * mat_bytes.  Else matrix i at mats[i]
     * (a checkpoint's experts, each a tensor of its own; gguf.h).  An
     * FP8_B128 weight's data and mats point to es_fp8_mat descriptions
     * (quant.h), never to bytes: it is read by its matvec/matmul alone. */
    const uint8_t *const *mats;
} es_weight;

/* Where matrix i of w starts (what its kernels take). */
static inline const uint8_t *es_weight_mat(const es_weight *w, int64_t i) {
    return w->mats ? w->mats[i] : w->data + (size_t)i * w->mat_bytes;
}

typedef struct es_layer {
    const float *attn_norm, *ffn_norm, *q_a_norm, *kv_a_norm; /* F32 copies */
    es_weight wq;        /* q_lora == 0: [dim -> H*(dn+dr)] */
    es_weight wq_a, wq_b;
    es_weight wkv_a;     /* [dim -> R+dr] */
    es_weight wk_b;      /* [H][R rows][dn]  (split layout) */
    es_weight wv_b;      /* [H][dv rows][R] */
    es_weight wkv_b;     /* legacy: [H*(dn+dv) rows][R] */
    int legacy_kv_b;
    es_weight wo;        /* [H*dv -> dim] */
    int is_moe;
    es_weight ffn_gate, ffn_up, ffn_down;    /* dense */
    es_weight gate_inp;                      /* router [dim -> E] */
    const float *exp_bias;                   /* NULL if absent */
    es_weight gate_exps, up_exps, down_exps; /* [E][ffe rows][dim], [E][dim rows][ffe] */
    es_weight gate_sh, up_sh, down_sh;       /* shared experts, n_shared*ffe wide */
    int has_shared;
} es_layer;

/* The MTP (next-n) module's own tensors, llama.cpp's blk.N.nextn.* (N =
 * n_layers); its attention and MoE are layers[n_layers] (mtp.c). */
typedef struct es_nextn {
    es_weight eh_proj;          /* [2D -> D] over [enorm(embed); hnorm(h)] */
    const float *enorm, *hnorm, *head_norm; /* F32 copies */
    es_weight embed;            /* nextn.embed_tokens, or the model's token_embd */
    es_weight head;             /* nextn.shared_head_head, or the model's output */
    int own_embed, own_head;    /* whether the file has them */
} es_nextn;

struct es_model {
    es_gguf_ctx *gguf;
    es_tokenizer *tok;
    int vocab_only;
    es_hparams hp;
    es_weight tok_embd;  /* [vocab rows][dim] */
    es_weight out;       /* [vocab rows][dim] */
    const float *out_norm;
    es_layer *layers;    /* [n_layers + has_mtp]: the MTP block last */
    int has_mtp;         /* the first next-n block is loaded (nextn below, layers[n_layers]) */
    es_nextn nextn;
    float *rope_freqs;   /* [dr/2], YaRN applied */
    float *f32_copies;   /* one allocation behind every norm vector / bias */
    size_t weight_bytes;
    struct es_numa_plan *numa; /* NUMA placement (numa.h); never NULL after a full load */
    struct es_res *res;  /* routed-expert residency manager (mmap/residency.h); NULL: none */
    const struct es_kernels *kern; /* the kernel table (simd/kernels.h), chosen at load, never changed */
    int mla_form;        /* enum es_attn_form (attention.h) every session of the model uses */
    int pool_fixed;      /* es_load_params.pool_fixed resolved: 1 = sessions' pools never park */
    /* the file under the mapping, to notice it change: its path, a
     * descriptor held open (-1: none), its size and modification time at
     * load, and the SIGBUS watch on the mapping (platform/fault.h; NULL:
     * none, a fault then ends the process) */
    char *path;
    int fd;
    int64_t file_size, file_mtime_s, file_mtime_ns;
    struct es_fault_watch *fault;
    /* expert parallelism (es_model_load_share): this process owns the
     * routed experts e of layer il with es_expert_owner(n_shares, il, e) ==
     * share; 0 and 1 for a whole model */
    int share, n_shares;
};

/* Loads hyperparameters and weights (or only the tokenizer). */
es_status es_model_load_gguf(es_model *m, es_gguf_ctx *g, int vocab_only, char *err, size_t errlen);

typedef struct es_scratch es_scratch;

struct es_session {
    es_model *m;
    int n_ctx;
    int pos;
    uint8_t *kv;         /* [n_layers][n_ctx][kv_row bytes]: normalised latent, rotated k_pe,
                            in the layout of kv_type (kvcache.h) */
    int kv_type;         /* es_kv_type, resolved (never ES_KV_DEFAULT) */
    size_t kv_row, kv_rope_off; /* bytes per position; where k_pe starts in a row */
    uint32_t kv_lat_type, kv_rope_type; /* ggml types of the latent and of k_pe */
    int32_t *tokens;     /* [n_ctx]: the token at each position below pos */
    es_scratch *scratch; /* batch buffers and per-thread buffers (forward.c) */
    struct es_pool *pool;
    es_route_fn route_fn;
    void *route_user;
    /* test hook: called in every routed-expert unit with its layer, expert,
     * phase (0 gate+up, 1 down) and the node of the thread running it */
    void (*unit_fn)(void *user, int layer, int expert, int phase, int node);
    void *unit_user;
    /* expert parallelism: sums each MoE layer's slots over the shares
     * (es_session_set_moe_reduce); reduce_failed is the layer whose reduce
     * failed (-1: none), which stops the evaluation */
    es_moe_reduce_fn reduce_fn;
    void *reduce_user;
    es_moe_exchange_fn exchange_fn; /* the owned-slots form: used instead of reduce_fn when set */
    void *exchange_user;
    int reduce_failed;
    struct es_mtp_state *mtp; /* mtp.c: the MTP block's cache and hidden rows; NULL: MTP off */
};

/* forward.c: scratch for batches of tokens and n_threads workers */
es_scratch *es_scratch_new(const es_model *m, int n_ctx, int n_threads);
void es_scratch_free(es_scratch *sc);
/* Bytes es_scratch_new takes for this model, context and thread count
 * (n_threads <= 0: es_default_threads()), attention.c's buffers included,
 * the one the expanded form grows on demand at its largest.  Not included:
 * the KV cache (es_model_kv_bytes_per_token · n_ctx) and the thread pool. */
int64_t es_forward_session_bytes(const es_model *m, int n_ctx, int n_threads);

/* n tokens from position s->pos, in batches; advances s->pos past the
 * batches that completed.  logits: NULL, [n][n_vocab] if all_positions,
 * else the last token's [n_vocab].  Returns 0; -1 when it stopped because
 * the model's file faulted or its pager failed (the model says why); 1
 * when values stopped being finite, where (wlen bytes) naming the first
 * block whose output was not. */
int es_forward(es_session *s, const int32_t *tokens, int n, float *logits, int all_positions, char *where,
               size_t wlen);
/* Block il (the MTP block: n_layers) over the T rows of the scratch's
 * x[T][D], at positions pos.. of s's cache for that block; the result
 * stays in x.  Returns as es_forward (1: values not finite). */
int es_fwd_block(es_session *s, int il, int pos, int T);
/* es_batch_eval's pass: the n_sess distinct sessions ss[] (one model; each
 * fits its tokens, n_tokens[i] >= 0) on ss[0]'s pool and scratch, which
 * es_scratch_reserve must have readied.  Session i runs tokens[i][0..
 * n_tokens[i]) from pos0[i] (its position when the call began) and
 * logits[i] (logits or logits[i] may be NULL) gets its last row's
 * logits, or every row's ([n_tokens[i]][V]) when all (may be NULL) has
 * all[i] set.  Rows of several sessions share each step (forward.c says
 * how); sessions with MTP on keep their hidden rows, as with es_forward.
 * Returns as es_forward; the sessions that ran steps have advanced. */
int es_forward_multi(es_session *const *ss, int n_sess, const int32_t *const *tokens, const int *n_tokens,
                     float *const *logits, const int *all, const int *pos0, char *where, size_t wlen);
/* Readies s's scratch to run rows of sessions with contexts up to n_ctx and
 * n_rows rows of logits at once; 0, or -1 out of memory. */
int es_scratch_reserve(es_session *s, int n_ctx, int n_rows);

#endif
