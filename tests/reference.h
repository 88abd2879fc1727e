/* reference.h — owns: the float64 reference deepseek2 model the tests hold
 * the runtime to (reference.c): loading a GGUF's tensors as doubles and the
 * forward pass written from docs/deepseek-semantics.md, with the MTP
 * (next-n) block of DeepSeek-V3 §2.2.  Shared by test_reference.c and
 * test_mtp.c. */
#ifndef ES_TEST_REFERENCE_H
#define ES_TEST_REFERENCE_H

#include <stdint.h>

#include "gguf.h"

typedef struct rhp {
    int V, D, n_layers, n_dense, ffn, effn, H, q_lora, R, dn, dr, dv;
    int E, k, n_shared, sigmoid, norm_topk, G, Gk;
    double route_scale, eps, theta, attn_scale;
    int yarn;
    double factor, orig_ctx, beta_fast, beta_slow, log_mul;
} rhp;

typedef struct rlayer {
    double *attn_norm, *ffn_norm;
    double *wq, *wq_a, *q_norm, *wq_b; /* wq: [H(dn+dr)][D]; wq_a [q_lora][D]; wq_b [H(dn+dr)][q_lora] */
    double *wkv_a, *kv_norm;          /* [R+dr][D], [R] */
    double *wuk, *wuv;                /* [H][dn][R], [H][dv][R] (either file layout) */
    double *wo;                       /* [D][H dv] */
    int moe;
    double *w1, *w2, *w3;             /* dense MLP: gate [ffn][D], down [D][ffn], up [ffn][D] */
    double *router, *bias;            /* [E][D], [E] or NULL */
    double *e1, *e2, *e3;             /* experts: [E][effn][D], [E][D][effn], [E][effn][D] */
    double *s1, *s2, *s3;             /* shared MLP, n_shared*effn wide, or NULL */
} rlayer;

typedef struct rmodel {
    es_gguf_ctx *g;
    rhp hp;
    double *embd, *out_norm, *head; /* [V][D], [D], [V][D] */
    double *freq;                   /* [dr/2], YaRN blended */
    rlayer *ly;          /* [n_layers + has_mtp]: the MTP block last */
    int has_mtp;         /* blk.<n_layers>.nextn.* loaded (the first next-n block) */
    double *eh, *enorm, *hnorm, *mtp_norm; /* eh_proj [D][2D], enorm, hnorm, shared_head_norm [D] */
    double *mtp_embd, *mtp_head;          /* embed_tokens, shared_head_head [V][D], or NULL: the model's */
    int failed;
    char err[512];
} rmodel;


/* One run's record: logits, the experts the reference chose on its own
 * (own) and the ones it used after adopting near-ties (used), margins. */
typedef struct rrun {
    int T;
    double *logits;  /* [T][V] */
    double *hidden;  /* [T][D] the last block's output, before output_norm */
    int32_t *own;    /* [n_layers][T][k], -1 for dense layers */
    int32_t *used;
    double *margin;  /* [n_layers][T] */
    int n_adopted;   /* decisions where the runtime's near-tie choice was taken */
    int n_mismatch;  /* decisions where the runtime chose differently without a tie */
    double min_margin;
    double max_adopted; /* largest margin among the adopted decisions */
} rrun;


void rrun_free(rrun *r);
/* 0, or -1 with m->err set; rmodel_free in either case. */
int rmodel_load(rmodel *m, const char *path);
void rmodel_free(rmodel *m);
/* One prefill of T tokens from position 0.  forced (may be NULL): the
 * runtime's experts [n_layers][T][k]; where they differ from the
 * reference's own choice and the decision margin is below `tie`, the
 * reference follows them so that the logits stay comparable. */
int rforward(const rmodel *m, const int32_t *tok, int T, const int32_t *forced, double tie, rrun *run);
/* The MTP block over positions 0..T-1 (m->has_mtp): row t combines the
 * main model's hidden[t] with the token next[t] after position t, and
 * logits[t][V] predict the token after that.  forced (may be NULL): the
 * runtime's experts [T][k] for the block, adopted under `tie` as in
 * rforward.  Returns the number of routing decisions the runtime made
 * differently without a near-tie (0 expected), or -1 out of memory. */
int rmtp(const rmodel *m, const double *hidden, const int32_t *next, int T, const int32_t *forced, double tie,
         double *logits);

#endif
