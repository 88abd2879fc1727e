/* edgeseek.h — the public interface of the edgeseek runtime.
 *
 * Opaque handles, prefix es_.  Every call that can fail returns an es_status
 * and, where a caller passes an error buffer, writes a one-line message that
 * names the problem.  Nothing here aborts on bad input.
 */
#ifndef EDGESEEK_H
#define EDGESEEK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum es_status {
    ES_OK = 0,
    ES_ERR_IO = 1,          /* file missing, unreadable */
    ES_ERR_FORMAT = 2,      /* malformed or inconsistent model file */
    ES_ERR_UNSUPPORTED = 3, /* valid but not supported (architecture, type) */
    ES_ERR_NOMEM = 4,
    ES_ERR_ARG = 5,         /* bad argument from the caller */
    ES_ERR_CONTEXT = 6      /* context window exceeded */
} es_status;

const char *es_status_str(es_status s);

typedef struct es_model es_model;
typedef struct es_session es_session;
typedef struct es_sampler es_sampler;

/* ---- kernels ------------------------------------------------------------ */

/* The default SIMD path ("generic", "avx2", "avx512", "neon"): the best
 * this CPU and OS can run, which a model loads with unless
 * es_load_params.simd or EDGESEEK_SIMD names another (es_model_simd says
 * which a loaded model runs); and the CPU features found. */
const char *es_simd_name(void);
const char *es_cpu_features(void);

/* ---- model ------------------------------------------------------------ */

/* NUMA placement of the weights (`--numa`): shard puts each routed expert
 * on one node (experts dealt across nodes, not copied) and interleaves the
 * rest; replicate also copies the non-expert weights to every node when
 * memory allows; off places nothing.  On one node all are no-ops. */
enum { ES_NUMA_DEFAULT = 0, ES_NUMA_OFF = 1, ES_NUMA_SHARD = 2, ES_NUMA_REPLICATE = 3 };

/* How routed experts reach memory (mmap/residency.h; README "Paging"). */
typedef enum es_expert_mode {
    ES_EXPERTS_DEFAULT = 0,    /* the measured best of the modes below */
    ES_EXPERTS_MMAP = 1,       /* mapped; loaded, prefetched and evicted per expert under the budget */
    ES_EXPERTS_MMAP_PLAIN = 2, /* mapped, no management: the kernel pages on demand (baseline) */
    ES_EXPERTS_PREAD = 3       /* read whole with pread into a cache of the budget's size */
} es_expert_mode;

typedef enum es_cache_policy {
    ES_POLICY_DEFAULT = 0,
    ES_POLICY_LRU = 1,         /* per-layer least recently used */
    ES_POLICY_LFU = 2          /* per-layer least frequently used, with aging */
} es_cache_policy;

/* The MLA attention form (README "Attention"): auto picks per batch by
 * cost; absorbed and expanded force one (benchmarks, tests). */
enum { ES_MLA_DEFAULT = 0, ES_MLA_AUTO = 1, ES_MLA_ABSORBED = 2, ES_MLA_EXPANDED = 3 };

/* Zero-initialised fields mean the defaults.  Where a field has an
 * EDGESEEK_* variable (README "Environment variables"), a set field wins
 * and a zero one takes the variable's value; es_model_load is the one
 * place the library reads them, and writes a line on stderr for a value
 * it does not understand (and ignores). */
typedef struct es_load_params {
    int vocab_only; /* load only the tokenizer (file may have no tensors) */
    int numa;       /* ES_NUMA_*; 0 = the default (shard) */
    int experts;         /* es_expert_mode */
    int64_t mem_budget;  /* bytes of routed experts kept resident; 0: the memory available
                            (cgroup limit or MemAvailable) less the always-hot weights, the
                            KV cache of n_ctx tokens, scratch and a margin */
    int policy;          /* es_cache_policy */
    int no_prefetch;     /* do not predict and prefetch the next layer's experts */
    int io_threads;      /* background loader threads (0: 4; -1: none, loads on the caller) */
    int mlock;           /* mlock the always-hot weights and resident experts when permitted */
    int no_direct;       /* pread mode: buffered reads instead of O_DIRECT */
    int n_ctx;           /* context the derived budget leaves KV room for (0: min(training, 4096)) */
    int kv_type;         /* es_kv_type the sessions' caches will use, for that room (0: ES_KV_DEFAULT) */
    int n_sessions;      /* sessions the derived budget leaves room for (0: 1; a server's slots) */
    int stats;           /* also measure residency in mmap-plain mode (mincore) */
    const char *simd;    /* the model's kernels: "generic", "avx2", "avx512" or "neon"; NULL:
                            EDGESEEK_SIMD, else es_simd_name().  Fixed for the model's life; a path
                            this CPU cannot run fails the load (ES_ERR_ARG, with why) */
    int mla;             /* ES_MLA_*, for every session of the model; 0: EDGESEEK_MLA, else auto */
    int fake_numa;       /* pretend this many NUMA nodes, CPUs split evenly (1..64; tests);
                            0: EDGESEEK_FAKE_NUMA, else the real topology; -1: the real topology */
    int lfu_half_life;   /* LFU aging, in accesses of a layer; 0: EDGESEEK_LFU_HALF_LIFE, else 32;
                            -1: no aging */
    int pool_fixed;      /* 1: sessions' thread pools keep every worker (no parking of workers
                            that do not pay under CPU contention); 0: EDGESEEK_POOL_ADAPT=0 means
                            1, else adaptive; -1: adaptive */
} es_load_params;

es_status es_model_load(const char *path, const es_load_params *params,
                        es_model **out, char *err, size_t errlen);
void es_model_free(es_model *m);

/* ---- expert parallelism (README "Several machines") ----------------------- */

/* Loads the model as es_model_load does, for one of n_shares processes
 * (MPI ranks, in dist/) that hold the routed experts between them: this one
 * makes resident, places, pages and computes only share `share` (0 ..
 * n_shares-1) of every MoE layer's routed experts, dealt as `--numa shard`
 * deals them to nodes (es_expert_owner), and all the always-hot weights.
 * Its sessions need a reduce hook (es_session_set_moe_reduce).  n_shares 1
 * is es_model_load. */
es_status es_model_load_share(const char *path, const es_load_params *params, int share, int n_shares,
                              es_model **out, char *err, size_t errlen);
/* The share (0 .. n_shares-1) that owns routed expert `expert` of model
 * layer `layer`: round-robin, offset by the layer. */
int es_expert_owner(int n_shares, int layer, int expert);
/* The model's share and share count (0 and 1 for es_model_load). */
int es_model_share(const es_model *m);
int es_model_n_shares(const es_model *m);

int es_model_n_vocab(const es_model *m);
int es_model_n_ctx_train(const es_model *m);
int32_t es_model_bos(const es_model *m);
int32_t es_model_eos(const es_model *m);
int es_model_is_eog(const es_model *m, int32_t tok);
/* Bytes of KV cache per token (all layers). */
size_t es_model_kv_bytes_per_token(const es_model *m);
/* Architecture, hyperparameters, tensor types and sizes. */
void es_model_print_info(const es_model *m, FILE *f);
/* The SIMD path the model's kernels use (es_load_params.simd). */
const char *es_model_simd(const es_model *m);
/* One line on where the weights were placed (NUMA policy, nodes). */
const char *es_model_numa_summary(const es_model *m);

/* What one decode step (one token at position pos) reads from memory:
 * every always-read weight in full, one row of the token embedding, the k
 * routed experts of each MoE layer, and the latent KV cache of pos + 1
 * positions.  Bytes of the tensors as stored in the file. */
typedef struct es_decode_traffic {
    uint64_t weights;      /* all the weight bytes below together */
    uint64_t attention;    /* attention projections and norms, all layers */
    uint64_t dense_ffn;    /* leading dense FFNs and the FFN norms */
    uint64_t router;       /* router matrices and biases */
    uint64_t shared;       /* shared experts */
    uint64_t routed;       /* k routed experts per MoE layer */
    uint64_t output;       /* output norm and head */
    uint64_t embedding;    /* one row of token_embd */
    uint64_t kv;           /* latent cache read at pos (not a weight) */
} es_decode_traffic;
void es_model_decode_traffic(const es_model *m, int pos, es_decode_traffic *out);
/* Paging report: mode, budget, per-layer expert hit rates, prefetch
 * accuracy, bytes read, major page faults, I/O stall per token. */
void es_model_print_paging_stats(es_model *m, FILE *f);
/* Parses a size such as "4096", "512M", "4G", "1.5G" (binary multiples). */
es_status es_parse_size(const char *s, int64_t *bytes);

/* ---- tokenizer --------------------------------------------------------- */

/* ids are malloc'd; caller frees.  parse_special: match special and
 * user-defined tokens whole in the text. */
es_status es_tokenize(const es_model *m, const char *text, size_t len,
                      int add_bos, int parse_special,
                      int32_t **ids, size_t *n_ids, char *err, size_t errlen);
/* Exact bytes of one token; returns the length (may exceed cap: then
 * nothing is written past cap), or -1 for an invalid id. */
int es_token_piece(const es_model *m, int32_t id, char *buf, size_t cap);

/* Streaming detokenizer: holds back incomplete UTF-8 sequences that are
 * split across tokens. */
typedef struct es_detok {
    unsigned char pend[8];
    int n_pend;
} es_detok;
/* Writes the bytes that are now complete to out and returns their count.
 * If that count exceeds cap, nothing is written or consumed: call again
 * with a buffer of at least the returned size. */
size_t es_detok_push(es_detok *d, const es_model *m, int32_t id, char *out, size_t cap);
size_t es_detok_flush(es_detok *d, char *out, size_t cap);

typedef struct es_chat_msg {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
} es_chat_msg;
/* Renders the DeepSeek chat format; *out is malloc'd.  For display: to run
 * a chat use es_chat_tokenize (tokenising this text with parse_special
 * would read special-token text inside a message as control tokens). */
es_status es_chat_render(const es_model *m, const es_chat_msg *msgs, size_t n,
                         int add_generation_prompt, char **out,
                         char *err, size_t errlen);
/* Renders and tokenises the chat in one go: the template's special tokens
 * (BOS, the role markers, end of sentence) become control tokens; the
 * messages' contents are always tokenised as ordinary text, so a message
 * cannot end its turn early or forge another.  A normal chat gets the same
 * ids as tokenising es_chat_render's text with parse_special.  No BOS is
 * added beyond the template's.  *ids malloc'd. */
es_status es_chat_tokenize(const es_model *m, const es_chat_msg *msgs, size_t n,
                           int add_generation_prompt, int32_t **ids, size_t *n_ids,
                           char *err, size_t errlen);

/* ---- reasoning: DeepSeek-R1's <think> block ---------------------------- */

/* Splits generated text, piece by piece as it streams, into the reasoning
 * (the text inside the model's opening "<think>" ... "</think>") and the
 * content (everything after it, or all of it when the model does not open a
 * think block).  The tags are dropped, and so is white space at the start
 * of each part and at the end of the reasoning.  A tag split across pieces
 * is recognised: the bytes that may begin one are held back (at most
 * ES_REASONING_HOLD) until the next piece or es_reasoning_flush decides. */
#define ES_REASONING_HOLD 64
typedef struct es_reasoning {
    int state;                    /* where the text is: before, in or after the think block */
    int n_hold;
    char hold[ES_REASONING_HOLD]; /* held back: white space and a possible tag's start */
} es_reasoning;
/* think_open: the prompt already opened the think block (a template that
 * ends its generation prompt with "<think>"), so the text starts inside it. */
void es_reasoning_init(es_reasoning *r, int think_open);
/* Feeds len bytes of generated text.  The reasoning bytes now decided are
 * written to reasoning and their count to *n_reasoning, the content bytes
 * likewise; each buffer must hold len + ES_REASONING_HOLD bytes (they may
 * not overlap text). */
void es_reasoning_feed(es_reasoning *r, const char *text, size_t len, char *reasoning, size_t *n_reasoning,
                       char *content, size_t *n_content);
/* At the end of generation: writes what is held back (each buffer must hold
 * ES_REASONING_HOLD bytes). */
void es_reasoning_flush(es_reasoning *r, char *reasoning, size_t *n_reasoning, char *content, size_t *n_content);
/* 1 while the text is inside the think block. */
int es_reasoning_thinking(const es_reasoning *r);

/* ---- session: KV cache and forward pass -------------------------------- */

/* Storage of a session's latent cache (`--kv-type`; README "KV cache").
 * F32 keeps every value as computed; F16 and BF16 halve the cache; Q8_0
 * stores the latent in 8-bit blocks of 32 with an fp16 scale and the rope
 * key in F16 (0.29 of F32 on V2/V3 shapes).  ES_KV_DEFAULT is F16, whose
 * logits stay within the bound README states. */
typedef enum es_kv_type {
    ES_KV_DEFAULT = 0,
    ES_KV_F32 = 1,
    ES_KV_F16 = 2,
    ES_KV_BF16 = 3,
    ES_KV_Q8_0 = 4
} es_kv_type;
/* "f32", "f16", "bf16" or "q8_0" (ES_KV_DEFAULT: the default's name);
 * NULL for anything else. */
const char *es_kv_type_name(int kv_type);
/* The type of such a name; ES_ERR_ARG with a message for another. */
es_status es_kv_type_parse(const char *name, int *kv_type, char *err, size_t errlen);
/* Bytes of cache per token (all layers) with that type; 0 when the type
 * cannot hold this model's rows (Q8_0 needs kv_lora_rank a multiple of
 * 32) or is unknown. */
size_t es_model_kv_bytes_per_token_of(const es_model *m, int kv_type);

/* Zero-initialised fields mean the defaults. */
typedef struct es_session_params {
    int n_ctx;     /* context in tokens; 0: min(training context, 4096) */
    int kv_type;   /* es_kv_type; 0: ES_KV_DEFAULT */
    int n_threads; /* as es_session_set_threads; 0: physical cores */
} es_session_params;

/* A session with a cache of the given type (p NULL: every default). */
es_status es_session_new_ext(es_model *m, const es_session_params *p, es_session **out,
                             char *err, size_t errlen);
/* A session whose cache is F32 (es_session_new_ext with kv_type ES_KV_F32;
 * the behaviour before cache types existed). */
es_status es_session_new(es_model *m, int n_ctx, es_session **out,
                         char *err, size_t errlen);
/* The session's cache type (never ES_KV_DEFAULT) and its bytes per token. */
int es_session_kv_type(const es_session *s);
size_t es_session_kv_bytes_per_token(const es_session *s);
/* The tokens at positions 0 .. es_session_pos(s)-1, as evaluated or
 * loaded (valid until the next call on the session). */
const int32_t *es_session_tokens(const es_session *s);

/* Saved sessions (`--session FILE`; README "Saved sessions").  save writes
 * the session's tokens and their latent cache atomically (es_outfile):
 * a magic and version, the model's identity (a hash of its metadata and
 * tensor table, not of the weights), the cache type, the tokens, the cache
 * rows, and a checksum of everything.  load replaces s's contents with a
 * file's (es_session_pos then counts its tokens).  It refuses, with a
 * message: a session file of another version, another model, another
 * cache type or more tokens than s's context (ES_ERR_UNSUPPORTED), a file
 * that is not a session file or has the wrong size (truncated)
 * (ES_ERR_FORMAT), all leaving s unchanged; a file whose checksum fails
 * (corrupted: ES_ERR_FORMAT) or that cannot be read (ES_ERR_IO) leaves s
 * empty (position 0), never holding the file's rows.  Session files begin
 * with ES_SESSION_MAGIC. */
#define ES_SESSION_MAGIC "EDGESESS"
es_status es_session_save(const es_session *s, const char *path, char *err, size_t errlen);
es_status es_session_load(es_session *s, const char *path, char *err, size_t errlen);
void es_session_free(es_session *s);
/* The most worker threads a session, quantize or bench accepts. */
#define ES_MAX_THREADS 1024

/* Worker threads, counting the caller (0: physical cores, the default).
 * Results do not depend on the count. */
es_status es_session_set_threads(es_session *s, int n_threads, char *err, size_t errlen);
int es_session_threads(const es_session *s);
void es_session_reset(es_session *s);
/* Forgets the tokens from position pos on (0 <= pos <= current position);
 * the cache below pos is kept, so a shared prefix is not run again. */
es_status es_session_truncate(es_session *s, int pos, char *err, size_t errlen);
int es_session_pos(const es_session *s);
int es_session_n_ctx(const es_session *s);

/* Runs n tokens from the current position.  logits: if all_positions,
 * [n][n_vocab] floats; else the last position's [n_vocab]; may be NULL. */
es_status es_session_eval(es_session *s, const int32_t *tokens, int n,
                          float *logits, int all_positions,
                          char *err, size_t errlen);

/* One forward pass over several sessions of one model: the batched decode
 * of a server's slots.  Session i runs the n_tokens[i] >= 0 tokens
 * tokens[i][0..n_tokens[i]) from its own position, against its own latent
 * cache, and advances by n_tokens[i]; a session with 0 tokens is left as it
 * is.  logits (may be NULL) and logits[i] (may be NULL): session i's
 * last-position logits [n_vocab], written when n_tokens[i] > 0.  Every
 * session's logits are bit-identical to es_session_eval of that session
 * alone with the same tokens, whatever else is in the batch.  The rows of
 * all sessions share one pass per step through every weight (each routed
 * expert is read once for every row that chose it), on sessions[0]'s
 * threads and buffers; long inputs run in steps of at most 64 rows.
 * The sessions must belong to one model and be distinct; each session's
 * tokens must fit its context (else ES_ERR_CONTEXT); a NULL pointer where
 * tokens are due, a negative count or a token outside the vocabulary gives
 * ES_ERR_ARG with a message.  On any error no session has advanced.  Each
 * session's route hook sees its own tokens. */
es_status es_batch_eval(es_session *const *sessions, int n_sessions, const int32_t *const *tokens,
                        const int *n_tokens, float *const *logits, char *err, size_t errlen);
/* es_batch_eval where session i with all_positions[i] set (all_positions
 * may be NULL) gets the logits of every one of its tokens in logits[i]
 * ([n_tokens[i]][n_vocab], as es_session_eval's all_positions), each row
 * bit-identical to that session alone: the verification of several
 * sessions' MTP drafts in one pass (es_spec_plan). */
es_status es_batch_eval_ext(es_session *const *sessions, int n_sessions, const int32_t *const *tokens,
                            const int *n_tokens, float *const *logits, const int *all_positions, char *err,
                            size_t errlen);

/* Called for every MoE layer and token with the selected experts (sorted
 * ascending). */
typedef void (*es_route_fn)(void *user, int layer, int pos,
                            const int32_t *experts, int k);
void es_session_set_route_hook(es_session *s, es_route_fn fn, void *user);

/* Called once per MoE layer of every batch, on the thread that called
 * es_session_eval, with the layer's expert slots: T·k rows of dim floats
 * (T tokens of the batch, k experts chosen per token; n_floats = T·k·dim),
 * one row per (token, choice).  The rows of the experts this process owns
 * hold their outputs, every other row holds +0.0.  The hook must leave in
 * slots the element-wise sum over all shares (MPI_Allreduce with MPI_SUM, in
 * place): each row is non-zero in one share only, and x + 0 = x exactly, so
 * any summation order gives the single-process values, which the session
 * then combines in its own order.  It returns 0, or -1 to stop the
 * evaluation (ES_ERR_IO, "the MoE reduce of layer L failed").  The slot
 * count is the same in every share for the same tokens. */
typedef int (*es_moe_reduce_fn)(void *user, int layer, float *slots, size_t n_floats);
void es_session_set_moe_reduce(es_session *s, es_moe_reduce_fn fn, void *user);
/* The owned-slots form of the same exchange: when set, called instead of the
 * reduce hook with the same slots (T·k rows of dim floats) and their layout:
 * rows expert_start[e] .. expert_start[e+1]-1 (e = 0 .. n_experts-1;
 * expert_start[n_experts] = T·k) hold expert e's outputs, computed by share
 * es_expert_owner(n_shares, layer, e).  Only the rows of this process's
 * experts hold values; the others hold whatever they held before.  The hook
 * must leave every row's value on every share (MPI_Allgatherv of each
 * share's own rows: a copy, so the session's combine, in its own order,
 * gives the single-process values).  Same return as the reduce hook. */
typedef int (*es_moe_exchange_fn)(void *user, int layer, float *slots, int dim, int n_experts,
                                  const int32_t *expert_start);
void es_session_set_moe_exchange(es_session *s, es_moe_exchange_fn fn, void *user);

/* ---- multi-token prediction (MTP; README "MTP") ------------------------ */

/* 1 when the model's file has a next-n (MTP) block this runtime runs:
 * nextn_predict_layers >= 1 and blk.N.nextn.* present (N = the last block;
 * llama.cpp's names).  Only the first such block is used. */
int es_model_has_mtp(const es_model *m);
/* Turns the session's MTP block on (a latent cache of its own, n_ctx rows,
 * and a window of the main model's hidden states) or off.  Turn it on
 * before evaluating for the drafts to cost nothing extra; turned on later,
 * the first draft runs the main model over the session's tokens again.
 * ES_ERR_UNSUPPORTED with a message when the model has no MTP block or
 * holds a share of the experts. */
es_status es_session_set_mtp(es_session *s, int on, char *err, size_t errlen);
int es_session_mtp(const es_session *s);
/* The MTP block's logits [n_vocab] for the token after `next`, where next
 * is the token the session is about to evaluate at its position (which
 * must be at least 1).  The session's position is unchanged.  To verify,
 * evaluate {next, draft} with all_positions: row 0 decides the draft, and
 * es_session_truncate drops the draft when it is rejected. */
es_status es_session_mtp_draft(es_session *s, int32_t next, float *logits, char *err, size_t errlen);

/* ---- sampling ---------------------------------------------------------- */

typedef struct es_sampler_params {
    float temperature; /* <= 0: greedy */
    int top_k;         /* <= 0: off */
    float top_p;       /* >= 1: off */
    float min_p;       /* <= 0: off */
    uint64_t seed;
} es_sampler_params;

es_sampler_params es_sampler_defaults(void);
es_sampler *es_sampler_new(const es_sampler_params *p);
void es_sampler_free(es_sampler *s);
int32_t es_sampler_sample(es_sampler *s, const float *logits, int n_vocab);
/* The distribution es_sampler_sample draws from for these logits:
 * probs[n_vocab] (not the logits' buffer), summing to 1 (one-hot on the
 * argmax when greedy). */
void es_sampler_dist(es_sampler *s, const float *logits, int n_vocab, float *probs);
/* A draw in [0, 1) from the sampler's generator (advances it). */
double es_sampler_uniform(es_sampler *s);

/* ---- speculative decoding with the MTP block ------------------------- */

/* A generator that yields one token per call, decided as sampling one
 * token per forward pass with smp would decide it: when drafting it lets
 * the MTP block guess the token after the next, evaluates both in one pass,
 * and keeps the guess when the main model agrees — greedy (temperature
 * <= 0): when it is the argmax, so the tokens are identical; sampling: with
 * probability min(1, p/q), else the token is drawn from norm(max(0, p-q)),
 * so the distribution is unchanged.  A gate stops drafting while it does
 * not pay: once more than 4 of a window of 8 drafts were rejected it pauses
 * for 128 tokens, doubling up to 4096 while windows keep failing; and for
 * good while routed experts are being evicted and reloaded (paging under a
 * budget).  With sampling, a seed gives other tokens than without MTP (the
 * drafts use the sampler's generator too). 
 * logits: the session's last-position logits after the prompt (copied).
 * The session (MTP on, es_session_set_mtp, when mtp is set) and sampler
 * stay the caller's and must outlive the generator. */
typedef struct es_spec es_spec;
typedef struct es_spec_stats {
    int64_t tokens;    /* tokens returned */
    int64_t forwards;  /* main-model passes run (a verification counts once) */
    int64_t drafted;   /* drafts verified */
    int64_t accepted;  /* of which kept */
    int64_t gated;     /* passes run without a draft while the gate was closed */
} es_spec_stats;
es_status es_spec_new(es_session *s, es_sampler *smp, int mtp, const float *logits, es_spec **out, char *err,
                      size_t errlen);
/* The next token.  ES_ERR_CONTEXT when the context is full (nothing is
 * returned); other errors as es_session_eval's. */
es_status es_spec_next(es_spec *g, int32_t *tok, char *err, size_t errlen);
/* es_spec_next in two halves, for a caller that runs the evaluation itself
 * (a server putting several generators' verifications in one
 * es_batch_eval_ext).  es_spec_plan: *n_eval 0 gives the next token in
 * *tok (decided without a pass); else tokens[0..*n_eval) (the pending
 * token, and the draft when there is one: 1 or 2) must be evaluated in
 * the generator's session from its position, with the logits of every one
 * of them ([*n_eval][n_vocab]), and handed to es_spec_commit, which gives
 * the token.  After a failed evaluation, plan again.  es_spec_ready: 1 when
 * the next plan gives a token without a pass (a kept draft's successor). */
es_status es_spec_plan(es_spec *g, int32_t tokens[2], int *n_eval, int32_t *tok, char *err, size_t errlen);
es_status es_spec_commit(es_spec *g, const float *logits, int32_t *tok, char *err, size_t errlen);
int es_spec_ready(const es_spec *g);
void es_spec_get_stats(const es_spec *g, es_spec_stats *st);
/* Starts over from new logits (the session truncated or fed since),
 * keeping the gate's state and the statistics. */
void es_spec_restart(es_spec *g, const float *logits);
void es_spec_free(es_spec *g);

/* ---- conversion -------------------------------------------------------- */

/* The target names, for usage messages. */
#define ES_QUANTIZE_TARGETS \
    "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, iq4_xs, q2_k, q3_k, q4_k, q5_k, q6_k, q4_k_m, " \
    "tq1_0, tq2_0; with an importance matrix: iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s, iq1_s, iq1_m, iq2_m"

typedef struct es_quantize_params {
    int n_threads;      /* 0: one per physical core */
    FILE *log;          /* a line per tensor and a summary; NULL: silent */
    size_t chunk_bytes; /* fp32 bytes converted per step (0: 16 MiB); tests
                           make it small to cross chunk boundaries */
} es_quantize_params;

/* 1 if name is one of the targets. */
int es_quantize_target_valid(const char *name);

/* Writes out from in.  ES_OK, or an error with a message:
 * ES_ERR_ARG (unknown target, out is in), ES_ERR_IO (unreadable input,
 * unwritable output), ES_ERR_FORMAT (malformed input),
 * ES_ERR_UNSUPPORTED (a tensor type edgeseek cannot convert),
 * ES_ERR_NOMEM; ES_ERR_FORMAT too for an input without tensors.  out is
 * written atomically (es_outfile): on failure or interruption it keeps its
 * old content and no temporary is left behind. */
es_status es_quantize_file(const char *in, const char *out, const char *target,
                           const es_quantize_params *params, char *err, size_t errlen);

/* 1 if target needs an importance matrix (the IQ1/IQ2/IQ3 types, iq2_m). */
int es_quantize_target_needs_imatrix(const char *target);

/* es_quantize_file with llama.cpp's importance matrix (its GGUF form, as
 * llama-imatrix writes it; NULL for none), which weights the fit of the
 * IQ1/IQ2/IQ3 types; those targets are refused (ES_ERR_ARG) without one.
 * ES_ERR_ARG too for an unreadable or malformed imatrix, or one without an
 * entry of the right size for a tensor that needs it. */
es_status es_quantize_file_imatrix(const char *in, const char *out, const char *target, const char *imatrix,
                                   const es_quantize_params *params, char *err, size_t errlen);

/* ---- files --------------------------------------------------------------- */

/* Makes file descriptors 0, 1 and 2 valid before anything else is opened:
 * one that is closed gets /dev/null, opened so that using it still fails
 * as a closed one would (EBADF).  Call first thing in main.  0, or -1 when
 * /dev/null cannot be opened. */
int es_std_fds_guard(void);

/* Atomic output: the bytes go to a temporary file beside path (same
 * directory, ".NAME.tmp.PID"), which es_outfile_commit syncs and renames
 * over path.  Until then path keeps its old content whatever happens: on
 * failure, es_outfile_discard, or SIGINT/SIGTERM/SIGHUP the temporary is
 * removed (the signal then takes the action it had before).  An existing
 * target that is not a regular file (a device, a FIFO) and /dev/stdout,
 * /dev/fd/N, /proc/... are written directly.  Every message names path and
 * the system's reason. */
typedef struct es_outfile es_outfile;
es_status es_outfile_open(const char *path, es_outfile **out, char *err, size_t errlen);
es_status es_outfile_write(es_outfile *f, const void *data, size_t n, char *err, size_t errlen);
/* Syncs, closes and renames; frees f whatever the outcome (on failure the
 * temporary is removed and path untouched). */
es_status es_outfile_commit(es_outfile *f, char *err, size_t errlen);
/* Closes f, removes the temporary, frees f (NULL: no-op). */
void es_outfile_discard(es_outfile *f);

/* ---- memory ------------------------------------------------------------ */

/* Bytes this process may still use: the memory cgroup's limit less what the
 * group holds that cannot be reclaimed, and MemAvailable, whichever is
 * tighter; -1 when neither can be read. */
int64_t es_mem_available(void);

#ifdef __cplusplus
}
#endif
#endif
