/* api.c — the public es_ functions: model load/free and queries, sessions
 * (latent KV cache and scratch), evaluation, tokenizer wrappers, streaming
 * detokenisation and the `info` report; loading a share of the experts and
 * the reduce hook of expert parallelism.  Evaluation refuses to go on once
 * the model's file changed under it or could not be read, and stops on
 * values that are not finite. */
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgeseek.h"
#include "attention.h"
#include "budget.h"
#include "env.h"
#include "fault.h"
#include "kernels.h"
#include "kvcache.h"
#include "model.h"
#include "pager_desc.h"
#include "mtp.h"
#include "placement.h"
#include "residency.h"
#include "threadpool.h"

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

const char *es_status_str(es_status s) {
    switch (s) {
    case ES_OK: return "ok";
    case ES_ERR_IO: return "i/o error";
    case ES_ERR_FORMAT: return "bad model file";
    case ES_ERR_UNSUPPORTED: return "unsupported";
    case ES_ERR_NOMEM: return "out of memory";
    case ES_ERR_ARG: return "bad argument";
    case ES_ERR_CONTEXT: return "context full";
    }
    return "unknown error";
}

/* ---- model ------------------------------------------------------------- */

/* The load's parameters: the caller's, with the zero fields that have an
 * EDGESEEK_* variable taken from it, checked; the kernel table resolved.
 * Writes a line on stderr per variable whose value is not understood. */
static es_status load_params(const es_load_params *params, es_load_params *lp, const es_kernels **kern,
                             char *err, size_t errlen) {
    es_env env;
    es_env_read(&env);
    for (const char *w = env.warnings; *w;) {
        const char *nl = strchr(w, '\n');
        int len = nl ? (int)(nl - w) : (int)strlen(w);
        fprintf(stderr, "edgeseek: %.*s\n", len, w);
        w += len + (nl != NULL);
    }
    static const es_load_params defaults = {0};
    *lp = params ? *params : defaults;
    int simd_from_env = !lp->simd && env.simd[0];
    if (simd_from_env) lp->simd = env.simd;
    if (!lp->mla) lp->mla = env.mla;
    if (!lp->fake_numa) lp->fake_numa = env.fake_numa;
    if (!lp->lfu_half_life) lp->lfu_half_life = env.lfu_half_life;
    if (!lp->pool_fixed) lp->pool_fixed = env.pool_fixed;
    if (lp->mla < ES_MLA_DEFAULT || lp->mla > ES_MLA_EXPANDED) {
        set_err(err, errlen, "unknown MLA form %d", lp->mla);
        return ES_ERR_ARG;
    }
    if (lp->fake_numa < -1 || lp->fake_numa > ES_MAX_NODES) {
        set_err(err, errlen, "fake NUMA node count %d: not 1..%d", lp->fake_numa, ES_MAX_NODES);
        return ES_ERR_ARG;
    }
    if (lp->lfu_half_life < -1) {
        set_err(err, errlen, "LFU half-life %d: not a count of accesses", lp->lfu_half_life);
        return ES_ERR_ARG;
    }
    char why[200];
    *kern = lp->simd ? es_kernels_for(lp->simd, why, sizeof why) : es_kernels_best();
    if (!*kern) {
        set_err(err, errlen, "%s%s", simd_from_env ? "EDGESEEK_SIMD: " : "", why);
        return ES_ERR_ARG;
    }
    lp->simd = NULL; /* env.simd dies here; the table names its path */
    return ES_OK;
}

/* Keeps what file_check needs to notice the model's file change: a
 * descriptor on it, its size and modification time, a watch on the
 * mapping.  -1 when the file is no longer the size that was mapped. */
static int watch_file(es_model *m, const es_gguf_ctx *g, const char *path) {
    m->path = strdup(path);
    m->fault = g->fault; /* the GGUF context's, watching since the file was mapped */
    if (!g->map) return 0; /* a checkpoint directory: its opener checked every shard's size */
    m->fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (m->fd < 0 || fstat(m->fd, &st) != 0) {
        if (m->fd >= 0) close(m->fd);
        m->fd = -1; /* size and time then go unchecked; faults are still caught */
        return 0;
    }
    m->file_size = (int64_t)st.st_size;
    m->file_mtime_s = (int64_t)st.st_mtim.tv_sec;
    m->file_mtime_ns = (int64_t)st.st_mtim.tv_nsec;
    return m->file_size == (int64_t)g->map_size ? 0 : -1;
}

/* Whether the model's file is still as it was loaded: ES_OK; else
 * ES_ERR_IO with a line saying why (a read of the mapping faulted, the
 * pager could not read an expert, the size or modification time
 * changed).  A same-size rewrite that keeps the modification time goes
 * unnoticed (README, "Reliability"). */
static es_status file_check(const es_model *m, char *err, size_t errlen) {
    const char *path = m->path ? m->path : "the model file";
    struct stat st;
    int changed = m->fd >= 0 && fstat(m->fd, &st) == 0 &&
                  ((int64_t)st.st_size != m->file_size || (int64_t)st.st_mtim.tv_sec != m->file_mtime_s ||
                   (int64_t)st.st_mtim.tv_nsec != m->file_mtime_ns);
    uint64_t off;
    if (es_fault_hit(m->fault, &off)) {
        if (changed || (m->fd >= 0 && (uint64_t)st.st_size <= off))
            set_err(err, errlen, "%s: model file changed or truncated while in use (byte %llu could not be read)",
                    path, (unsigned long long)off);
        else
            set_err(err, errlen, "%s: reading the model file failed at byte %llu (an I/O error under the mapping)",
                    path, (unsigned long long)off);
        return ES_ERR_IO;
    }
    if (m->res && es_res_failed(m->res)) {
        es_res_error(m->res, err, errlen);
        return ES_ERR_IO;
    }
    if (changed) {
        set_err(err, errlen, "%s: model file changed or truncated while in use (its size or modification time changed)",
                path);
        return ES_ERR_IO;
    }
    return ES_OK;
}

es_status es_model_load(const char *path, const es_load_params *params, es_model **out,
                        char *err, size_t errlen) {
    return es_model_load_share(path, params, 0, 1, out, err, errlen);
}

es_status es_model_load_share(const char *path, const es_load_params *params, int share, int n_shares,
                              es_model **out, char *err, size_t errlen) {
    char dummy[8];
    if (!err) { err = dummy; errlen = sizeof dummy; }
    *out = NULL;
    if (n_shares < 1 || share < 0 || share >= n_shares) {
        set_err(err, errlen, "share %d of %d: the share must be 0 .. n_shares-1 and n_shares at least 1", share,
                n_shares);
        return ES_ERR_ARG;
    }
    es_load_params lp;
    const es_kernels *kern;
    es_status pst = load_params(params, &lp, &kern, err, errlen);
    if (pst != ES_OK) return pst;
    es_gguf_ctx *g;
    if (es_gguf_open_file(path, &g, err, errlen) != 0) {
        /* access, not open: opening a FIFO to find out would wait forever */
        return access(path, R_OK) == 0 ? ES_ERR_FORMAT : ES_ERR_IO;
    }
    es_model *m = calloc(1, sizeof *m);
    if (!m) { es_gguf_close(g); set_err(err, errlen, "out of memory"); return ES_ERR_NOMEM; }
    m->kern = kern;
    m->share = share;
    m->n_shares = n_shares;
    m->pool_fixed = lp.pool_fixed == 1;
    m->fd = -1;
    if (watch_file(m, g, path) != 0) {
        set_err(err, errlen, "%s: model file changed or truncated while being opened", path);
        es_model_free(m);
        return ES_ERR_IO;
    }
    m->mla_form = lp.mla == ES_MLA_ABSORBED ? ES_ATTN_ABSORBED : lp.mla == ES_MLA_EXPANDED ? ES_ATTN_EXPANDED
                                                                                      : ES_ATTN_AUTO;
    char inner[512];
    es_status st = es_model_load_gguf(m, g, lp.vocab_only, inner, sizeof inner);
    if (st != ES_OK) {
        set_err(err, errlen, "%s: %s", path, inner);
        es_model_free(m);
        return st;
    }
    if (!m->vocab_only) {
        st = es_numa_place(m, lp.numa, lp.fake_numa > 0 ? lp.fake_numa : 0, &m->numa, inner, sizeof inner);
        if (st != ES_OK) {
            set_err(err, errlen, "%s: %s", path, inner);
            es_model_free(m);
            return st;
        }
        if (!g->map && (lp.mem_budget > 0 || (lp.experts != ES_EXPERTS_DEFAULT && lp.experts != ES_EXPERTS_MMAP_PLAIN))) {
            set_err(err, errlen, "%s: paging routed experts (--experts, --mem-budget) works on GGUF files; "
                                 "a checkpoint directory is mapped whole (convert it to page it)", path);
            es_model_free(m);
            return ES_ERR_UNSUPPORTED;
        }
        /* a checkpoint directory's experts stay mapped as they are (no pager) */
        st = g->map ? es_pager_new(m, path, &lp, &m->res, inner, sizeof inner) : ES_OK;
        if (st != ES_OK) {
            set_err(err, errlen, "%s: %s", path, inner);
            es_model_free(m);
            return st;
        }
    }
    st = file_check(m, err, errlen); /* the load read the mapping too */
    if (st != ES_OK) {
        es_model_free(m);
        return st;
    }
    *out = m;
    return ES_OK;
}

void es_model_free(es_model *m) {
    if (!m) return;
    es_res_free(m->res); /* its threads read the mapping: first */
    if (m->fd >= 0) close(m->fd);
    free(m->path);
    es_tokenizer_free(m->tok);
    free(m->layers);
    free(m->rope_freqs);
    free(m->f32_copies);
    es_numa_plan_free(m->numa);
    es_gguf_close(m->gguf);
    free(m);
}

int es_model_share(const es_model *m) { return m->share; }
int es_model_n_shares(const es_model *m) { return m->n_shares > 1 ? m->n_shares : 1; }

int es_model_n_vocab(const es_model *m) { return m->vocab_only ? es_tokenizer_n_vocab(m->tok) : m->hp.n_vocab; }
int es_model_n_ctx_train(const es_model *m) { return m->hp.n_ctx_train; }
int32_t es_model_bos(const es_model *m) { return es_tokenizer_bos(m->tok); }
int32_t es_model_eos(const es_model *m) { return es_tokenizer_eos(m->tok); }
int es_model_is_eog(const es_model *m, int32_t tok) { return es_tokenizer_is_eog(m->tok, tok); }

size_t es_model_kv_bytes_per_token(const es_model *m) { return es_hp_kv_bytes_per_token(&m->hp); }

const char *es_model_simd(const es_model *m) { return m->kern->name; }

const char *es_model_numa_summary(const es_model *m) { return es_numa_plan_summary(m->numa); }

/* Every matrix of a weight (0 if the tensor is absent). */
static uint64_t all_bytes(const es_weight *w) { return w->data ? (uint64_t)w->mat_bytes * (uint64_t)w->n_mat : 0; }
static uint64_t vec_bytes(const float *v, int n) { return v ? (uint64_t)n * sizeof(float) : 0; }

void es_model_decode_traffic(const es_model *m, int pos, es_decode_traffic *out) {
    memset(out, 0, sizeof *out);
    if (m->vocab_only) return;
    const es_hparams *hp = &m->hp;
    for (int il = 0; il < hp->n_layers; il++) {
        const es_layer *ly = &m->layers[il];
        /* norms are read from their fp32 copies */
        out->attention += vec_bytes(ly->attn_norm, hp->dim) + vec_bytes(ly->q_a_norm, hp->q_lora) +
                          vec_bytes(ly->kv_a_norm, hp->kv_lora) + all_bytes(&ly->wq) + all_bytes(&ly->wq_a) +
                          all_bytes(&ly->wq_b) + all_bytes(&ly->wkv_a) + all_bytes(&ly->wk_b) +
                          all_bytes(&ly->wv_b) + all_bytes(&ly->wkv_b) + all_bytes(&ly->wo);
        out->dense_ffn += vec_bytes(ly->ffn_norm, hp->dim);
        if (!ly->is_moe) {
            out->dense_ffn += all_bytes(&ly->ffn_gate) + all_bytes(&ly->ffn_up) + all_bytes(&ly->ffn_down);
            continue;
        }
        out->router += all_bytes(&ly->gate_inp) + vec_bytes(ly->exp_bias, hp->n_experts);
        /* the k selected experts are distinct: k slices of each tensor */
        out->routed += (uint64_t)hp->n_used *
                       ((uint64_t)ly->gate_exps.mat_bytes + ly->up_exps.mat_bytes + ly->down_exps.mat_bytes);
        if (ly->has_shared) out->shared += all_bytes(&ly->gate_sh) + all_bytes(&ly->up_sh) + all_bytes(&ly->down_sh);
    }
    out->output = vec_bytes(m->out_norm, hp->dim) + all_bytes(&m->out);
    out->embedding = m->tok_embd.row_bytes;
    out->weights = out->attention + out->dense_ffn + out->router + out->shared + out->routed + out->output +
                   out->embedding;
    out->kv = (uint64_t)(pos < 0 ? 0 : pos + 1) * es_model_kv_bytes_per_token(m);
}

void es_model_print_paging_stats(es_model *m, FILE *f) {
    if (m->res) es_res_print_stats(m->res, f);
    else fprintf(f, "[paging] no routed experts: nothing is paged\n");
}

int64_t es_mem_available(void) {
    es_mem_info mi;
    es_mem_probe(&mi);
    return mi.available;
}

es_status es_parse_size(const char *s, int64_t *bytes) {
    return es_parse_bytes(s, bytes) == 0 ? ES_OK : ES_ERR_ARG;
}

static void human_bytes(char *buf, size_t n, double b) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) { b /= 1024; i++; }
    snprintf(buf, n, "%.2f %s", b, u[i]);
}

void es_model_print_info(const es_model *m, FILE *f) {
    const es_gguf_ctx *g = m->gguf;
    es_gguf_str name = {0};
    es_gguf_get_str(g, "general.name", &name);
    fprintf(f, "file:        GGUF v%u, %llu tensors, %llu metadata keys, alignment %llu\n", g->version,
            (unsigned long long)g->n_tensors, (unsigned long long)g->n_kv, (unsigned long long)g->alignment);
    if (name.len) fprintf(f, "name:        %.*s\n", (int)(name.len > 200 ? 200 : name.len), name.ptr);
    fprintf(f, "vocabulary:  %d tokens, bos %d, eos %d\n", es_tokenizer_n_vocab(m->tok),
            es_tokenizer_bos(m->tok), es_tokenizer_eos(m->tok));
    if (m->vocab_only) return;
    const es_hparams *hp = &m->hp;
    fprintf(f, "architecture: deepseek2\n");
    fprintf(f, "  n_vocab %d  n_ctx_train %d  dim %d  n_layers %d  (MTP layers: %d)\n", hp->n_vocab, hp->n_ctx_train,
            hp->dim, hp->n_layers, hp->n_nextn);
    if (m->has_mtp)
        fprintf(f, "  MTP block: blk.%d (--mtp), %s embedding, %s head%s\n", hp->n_layers,
                m->nextn.own_embed ? "its own" : "the model's", m->nextn.own_head ? "its own" : "the model's",
                hp->n_nextn > 1 ? "; the further next-n blocks are not used" : "");
    else if (hp->n_nextn)
        fprintf(f, "  MTP block: declared, but blk.%d.nextn.eh_proj is absent (not used)\n", hp->n_layers);
    fprintf(f, "  leading dense layers %d  dense ffn %d  expert ffn %d\n", hp->n_dense, hp->ffn_dim, hp->moe_ffn_dim);
    fprintf(f, "  heads %d  q_lora_rank %d%s  kv_lora_rank %d  nope %d  rope %d  v %d\n", hp->n_heads,
            hp->q_lora, hp->q_lora ? "" : " (no query compression)", hp->kv_lora, hp->nope, hp->rope, hp->vdim);
    fprintf(f, "  experts %d  used %d  shared %d  gating %s  bias %s  renormalise %s  scale %g\n",
            hp->n_experts, hp->n_used, hp->n_shared, hp->gating == ES_GATING_SIGMOID ? "sigmoid" : "softmax",
            hp->n_layers > hp->n_dense && m->layers[hp->n_dense].exp_bias ? "yes" : "no",
            hp->norm_topk ? "yes" : "no", hp->route_scale);
    fprintf(f, "  expert groups %d  used groups %d (group score: %s)\n", hp->n_groups, hp->n_groups_used,
            hp->n_layers > hp->n_dense && m->layers[hp->n_dense].exp_bias ? "top-2 sum" : "max");
    fprintf(f, "  rms eps %g  rope base %g  rope scaling %s", hp->eps, hp->rope_base, hp->yarn ? "yarn" : "none");
    if (hp->yarn)
        fprintf(f, " (factor %g, original ctx %d, beta %g/%g, log mul %g)", hp->rope_factor,
                hp->yarn_orig_ctx, hp->yarn_beta_fast, hp->yarn_beta_slow, hp->yarn_log_mul);
    fprintf(f, "\n  attention scale %.6f  MLA layout %s\n", hp->attn_scale,
            hp->n_layers && m->layers[0].legacy_kv_b ? "combined attn_kv_b (legacy)" : "split attn_k_b/attn_v_b");
    char hb[32];
    human_bytes(hb, sizeof hb, (double)m->weight_bytes);
    fprintf(f, "weights:     %s\n", hb);
    fprintf(f, "KV cache:    %zu bytes per token (%d layers x (%d + %d) x %zu bytes)\n",
            es_model_kv_bytes_per_token(m), hp->n_layers, hp->kv_lora, hp->rope, sizeof(float));
    es_kv_print_types(m, f);
    /* tensor types */
    uint64_t count[ES_TYPE_COUNT] = {0}, bytes[ES_TYPE_COUNT] = {0};
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        count[g->tensors[i].type]++;
        bytes[g->tensors[i].type] += g->tensors[i].nbytes;
    }
    fprintf(f, "tensor types:\n");
    for (int t = 0; t < ES_TYPE_COUNT; t++)
        if (count[t]) {
            human_bytes(hb, sizeof hb, (double)bytes[t]);
            fprintf(f, "  %-6s %5llu tensors  %s\n", es_type_info((uint32_t)t)->name, (unsigned long long)count[t], hb);
        }
}

/* ---- tokenizer wrappers --------------------------------------------------- */

es_status es_tokenize(const es_model *m, const char *text, size_t len, int add_bos, int parse_special,
                      int32_t **ids, size_t *n_ids, char *err, size_t errlen) {
    char dummy[8];
    if (!err) { err = dummy; errlen = sizeof dummy; }
    if (es_tokenizer_encode(m->tok, text, len, add_bos, parse_special, ids, n_ids, err, errlen) != 0)
        return strstr(err, "out of memory") ? ES_ERR_NOMEM : ES_ERR_ARG;
    return ES_OK;
}

int es_token_piece(const es_model *m, int32_t id, char *buf, size_t cap) {
    return es_tokenizer_piece(m->tok, id, buf, cap);
}

es_status es_chat_render(const es_model *m, const es_chat_msg *msgs, size_t n, int add_generation_prompt,
                         char **out, char *err, size_t errlen) {
    char dummy[8];
    if (!err) { err = dummy; errlen = sizeof dummy; }
    if (es_tokenizer_chat(m->tok, msgs, n, add_generation_prompt, out, err, errlen) != 0)
        return strstr(err, "out of memory") ? ES_ERR_NOMEM : ES_ERR_ARG;
    return ES_OK;
}

es_status es_chat_tokenize(const es_model *m, const es_chat_msg *msgs, size_t n, int add_generation_prompt,
                           int32_t **ids, size_t *n_ids, char *err, size_t errlen) {
    char dummy[8];
    if (!err) { err = dummy; errlen = sizeof dummy; }
    if (es_tokenizer_chat_encode(m->tok, msgs, n, add_generation_prompt, ids, n_ids, err, errlen) != 0)
        return strstr(err, "out of memory") ? ES_ERR_NOMEM : ES_ERR_ARG;
    return ES_OK;
}

size_t es_detok_push(es_detok *d, const es_model *m, int32_t id, char *out, size_t cap) {
    char small[256];
    int n = es_tokenizer_piece(m->tok, id, small, sizeof small);
    if (n < 0) return 0;
    /* held bytes + this piece, then emit the longest prefix that does not
     * end inside a UTF-8 sequence the next token could still complete */
    size_t total = (size_t)d->n_pend + (size_t)n;
    unsigned char *buf = total <= sizeof small ? (unsigned char *)small : malloc(total);
    if (!buf) return 0;
    if ((size_t)n > sizeof small) es_tokenizer_piece(m->tok, id, (char *)buf + d->n_pend, (size_t)n);
    else memmove(buf + d->n_pend, small, (size_t)n);
    memcpy(buf, d->pend, (size_t)d->n_pend);
    size_t ready = es_utf8_complete_prefix(buf, total);
    if (ready > cap) { /* caller retries with a larger buffer; nothing consumed */
        if (buf != (unsigned char *)small) free(buf);
        return ready;
    }
    memcpy(out, buf, ready);
    d->n_pend = (int)(total - ready); /* at most 3 bytes of an unfinished sequence */
    memcpy(d->pend, buf + ready, (size_t)d->n_pend);
    if (buf != (unsigned char *)small) free(buf);
    return ready;
}

size_t es_detok_flush(es_detok *d, char *out, size_t cap) {
    size_t w = 0;
    for (int j = 0; j < d->n_pend && w < cap; j++) out[w++] = (char)d->pend[j];
    d->n_pend = 0;
    return w;
}

/* ---- sessions ---------------------------------------------------------------- */

void es_session_free(es_session *s) {
    if (!s) return;
    es_mtp_free(s);
    free(s->kv);
    free(s->tokens);
    es_scratch_free(s->scratch);
    es_pool_free(s->pool);
    free(s);
}

es_status es_session_new_ext(es_model *m, const es_session_params *p, es_session **out, char *err,
                             size_t errlen) {
    *out = NULL;
    const es_session_params defaults = {0};
    if (!p) p = &defaults;
    if (m->vocab_only) { set_err(err, errlen, "model was loaded vocabulary-only"); return ES_ERR_ARG; }
    const es_hparams *hp = &m->hp;
    int n_ctx = p->n_ctx;
    if (n_ctx <= 0) n_ctx = hp->n_ctx_train < ES_DEFAULT_CTX ? hp->n_ctx_train : ES_DEFAULT_CTX;
    if (n_ctx > hp->n_ctx_train) {
        set_err(err, errlen, "context %d exceeds the model's training context %d", n_ctx, hp->n_ctx_train);
        return ES_ERR_ARG;
    }
    es_kv_view lay;
    es_status st = es_kv_layout(hp, p->kv_type, &lay, err, errlen);
    if (st != ES_OK) return st;
    es_session *s = calloc(1, sizeof *s);
    if (!s) { set_err(err, errlen, "out of memory"); return ES_ERR_NOMEM; }
    s->m = m;
    s->n_ctx = n_ctx;
    s->reduce_failed = -1;
    s->kv_type = p->kv_type ? p->kv_type : ES_KV_TYPE_DEFAULT;
    s->kv_row = lay.row_bytes;
    s->kv_rope_off = lay.rope_off;
    s->kv_lat_type = lay.lat_type;
    s->kv_rope_type = lay.rope_type;
    size_t kv_bytes = s->kv_row * (size_t)hp->n_layers * (size_t)n_ctx;
    s->kv = malloc(kv_bytes);
    s->tokens = malloc(sizeof(int32_t) * (size_t)n_ctx);
    if (!s->kv || !s->tokens) {
        set_err(err, errlen, "out of memory for a %d-token KV cache (%zu bytes)", n_ctx, kv_bytes);
        es_session_free(s);
        return ES_ERR_NOMEM;
    }
    st = es_session_set_threads(s, p->n_threads, err, errlen);
    if (st != ES_OK) {
        es_session_free(s);
        return st;
    }
    *out = s;
    return ES_OK;
}

es_status es_session_new(es_model *m, int n_ctx, es_session **out, char *err, size_t errlen) {
    const es_session_params p = {.n_ctx = n_ctx, .kv_type = ES_KV_F32};
    return es_session_new_ext(m, &p, out, err, errlen);
}

int es_session_kv_type(const es_session *s) { return s->kv_type; }
size_t es_session_kv_bytes_per_token(const es_session *s) { return s->kv_row * (size_t)s->m->hp.n_layers; }
const int32_t *es_session_tokens(const es_session *s) { return s->tokens; }

es_status es_session_set_threads(es_session *s, int n_threads, char *err, size_t errlen) {
    if (n_threads < 0 || n_threads > ES_MAX_THREADS) {
        set_err(err, errlen, "thread count %d is out of range (1..%d, 0 = default)", n_threads, ES_MAX_THREADS);
        return ES_ERR_ARG;
    }
    if (n_threads == 0) n_threads = es_default_threads();
    if (s->pool && es_pool_threads(s->pool) == n_threads) return ES_OK;
    es_pool *p = es_pool_new_numa(n_threads, es_numa_plan_topo(s->m->numa));
    if (p) es_pool_set_adaptive(p, s->m->pool_fixed != 1);
    es_scratch *sc = p ? es_scratch_new(s->m, s->n_ctx, es_pool_threads(p)) : NULL;
    if (!p || !sc) {
        es_pool_free(p);
        set_err(err, errlen, "cannot start %d threads with their buffers (out of memory)", n_threads);
        return ES_ERR_NOMEM;
    }
    es_pool_free(s->pool);
    es_scratch_free(s->scratch);
    s->pool = p;
    s->scratch = sc;
    return ES_OK;
}

int es_session_threads(const es_session *s) { return es_pool_threads(s->pool); }

void es_session_reset(es_session *s) {
    es_mtp_forget(s, 0, -1);
    s->pos = 0;
}

es_status es_session_truncate(es_session *s, int pos, char *err, size_t errlen) {
    if (pos < 0 || pos > s->pos) {
        set_err(err, errlen, "cannot truncate to position %d: the session holds %d tokens", pos, s->pos);
        return ES_ERR_ARG;
    }
    es_mtp_forget(s, pos, -1);
    s->pos = pos; /* positions >= pos are rewritten before they are read */
    return ES_OK;
}
int es_session_pos(const es_session *s) { return s->pos; }
int es_session_n_ctx(const es_session *s) { return s->n_ctx; }

void es_session_set_moe_reduce(es_session *s, es_moe_reduce_fn fn, void *user) {
    s->reduce_fn = fn;
    s->reduce_user = user;
}

void es_session_set_moe_exchange(es_session *s, es_moe_exchange_fn fn, void *user) {
    s->exchange_fn = fn;
    s->exchange_user = user;
}

void es_session_set_route_hook(es_session *s, es_route_fn fn, void *user) {
    s->route_fn = fn;
    s->route_user = user;
}

/* The status of an evaluation from es_forward's result r (where: the
 * block it names), with the message. */
static es_status eval_outcome(const es_session *s, int r, const char *where, char *err, size_t errlen) {
    const es_model *m = s->m;
    if (r == 0) return ES_OK;
    if (r < 0 && s->reduce_failed >= 0) {
        set_err(err, errlen, "the MoE reduce of layer %d failed (the other shares' experts are missing)",
                s->reduce_failed);
        return ES_ERR_IO;
    }
    if (r < 0) {
        es_status st = file_check(m, err, errlen);
        if (st == ES_OK) set_err(err, errlen, "evaluation stopped"); /* cannot happen: it stops only on those */
        return st == ES_OK ? ES_ERR_IO : st;
    }
    set_err(err, errlen, "values stopped being finite (NaN or infinity) in %s: the model's weights are corrupt", where);
    return ES_ERR_FORMAT;
}

es_status es_session_eval(es_session *s, const int32_t *tokens, int n, float *logits, int all_positions,
                          char *err, size_t errlen) {
    const es_hparams *hp = &s->m->hp;
    if (n <= 0) { set_err(err, errlen, "no tokens to evaluate"); return ES_ERR_ARG; }
    if (n > s->n_ctx - s->pos) {
        set_err(err, errlen, "%d tokens at position %d exceed the context of %d tokens", n, s->pos, s->n_ctx);
        return ES_ERR_CONTEXT;
    }
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= hp->n_vocab) {
            set_err(err, errlen, "token id %d at index %d is outside the vocabulary (0..%d)", tokens[i], i,
                    hp->n_vocab - 1);
            return ES_ERR_ARG;
        }
    if (s->m->n_shares > 1 && !s->reduce_fn && !s->exchange_fn) {
        set_err(err, errlen, "the model holds share %d of %d of the experts: its sessions need a reduce hook "
                             "(es_session_set_moe_reduce or _exchange)", s->m->share, s->m->n_shares);
        return ES_ERR_ARG;
    }
    es_status st = file_check(s->m, err, errlen);
    if (st != ES_OK) return st;
    const int pos0 = s->pos;
    s->reduce_failed = -1;
    char where[128];
    int r = es_forward(s, tokens, n, logits, all_positions, where, sizeof where);
    if (r == 0) es_session_note_tokens(s, pos0, tokens, n);
    else s->pos = pos0; /* the batches that completed hold nothing to keep */
    return eval_outcome(s, r, where, err, errlen);
}

/* ---- several sessions in one pass -------------------------------------------- */

/* The checks es_batch_eval makes before it runs anything: ES_OK, or the
 * error with its message. */
static es_status batch_check(es_session *const *sessions, int n_sessions, const int32_t *const *tokens,
                             const int *n_tokens, char *err, size_t errlen) {
    if (n_sessions < 0) { set_err(err, errlen, "session count %d is negative", n_sessions); return ES_ERR_ARG; }
    if (n_sessions == 0) return ES_OK;
    if (!sessions || !n_tokens) {
        set_err(err, errlen, "%s is NULL", !sessions ? "the session list" : "the token counts");
        return ES_ERR_ARG;
    }
    for (int i = 0; i < n_sessions; i++) {
        const es_session *s = sessions[i];
        if (!s) { set_err(err, errlen, "session %d is NULL", i); return ES_ERR_ARG; }
        if (s->m != sessions[0]->m) {
            set_err(err, errlen, "session %d belongs to another model than session 0", i);
            return ES_ERR_ARG;
        }
        for (int j = 0; j < i; j++)
            if (sessions[j] == s) {
                set_err(err, errlen, "session %d is session %d again: the sessions must be distinct", i, j);
                return ES_ERR_ARG;
            }
        const int n = n_tokens[i];
        if (n < 0) { set_err(err, errlen, "session %d: token count %d is negative", i, n); return ES_ERR_ARG; }
        if (n == 0) continue;
        if (!tokens || !tokens[i]) { set_err(err, errlen, "session %d: %d tokens, but no token array", i, n); return ES_ERR_ARG; }
        const int n_vocab = s->m->hp.n_vocab;
        for (int t = 0; t < n; t++)
            if (tokens[i][t] < 0 || tokens[i][t] >= n_vocab) {
                set_err(err, errlen, "session %d: token id %d at index %d is outside the vocabulary (0..%d)", i,
                        tokens[i][t], t, n_vocab - 1);
                return ES_ERR_ARG;
            }
    }
    for (int i = 0; i < n_sessions; i++) {
        const es_session *s = sessions[i];
        if (n_tokens[i] > s->n_ctx - s->pos) {
            set_err(err, errlen, "session %d: %d tokens at position %d exceed the context of %d tokens", i,
                    n_tokens[i], s->pos, s->n_ctx);
            return ES_ERR_CONTEXT;
        }
    }
    return ES_OK;
}

es_status es_batch_eval(es_session *const *sessions, int n_sessions, const int32_t *const *tokens,
                        const int *n_tokens, float *const *logits, char *err, size_t errlen) {
    return es_batch_eval_ext(sessions, n_sessions, tokens, n_tokens, logits, NULL, err, errlen);
}

es_status es_batch_eval_ext(es_session *const *sessions, int n_sessions, const int32_t *const *tokens,
                            const int *n_tokens, float *const *logits, const int *all_positions, char *err,
                            size_t errlen) {
    es_status st = batch_check(sessions, n_sessions, tokens, n_tokens, err, errlen);
    if (st != ES_OK) return st;
    int n_ctx = 0, n_run = 0, n_rows = 0; /* rows of logits a step may want */
    for (int i = 0; i < n_sessions; i++) {
        if (sessions[i]->n_ctx > n_ctx) n_ctx = sessions[i]->n_ctx;
        n_run += n_tokens[i] > 0;
        n_rows += all_positions && all_positions[i] ? n_tokens[i] : n_tokens[i] > 0;
    }
    if (!n_run) return ES_OK;
    es_session *runner = sessions[0]; /* its threads, buffers and reduce hook run every session's rows */
    if (runner->m->n_shares > 1 && !runner->reduce_fn && !runner->exchange_fn) {
        set_err(err, errlen, "the model holds share %d of %d of the experts: session 0 needs a reduce hook "
                             "(es_session_set_moe_reduce or _exchange)", runner->m->share, runner->m->n_shares);
        return ES_ERR_ARG;
    }
    runner->reduce_failed = -1;
    int *pos0 = malloc(sizeof(int) * (size_t)n_sessions);
    if (!pos0 || es_scratch_reserve(runner, n_ctx, n_rows) != 0) {
        free(pos0);
        set_err(err, errlen, "out of memory for the buffers of %d sessions", n_sessions);
        return ES_ERR_NOMEM;
    }
    st = file_check(runner->m, err, errlen);
    if (st != ES_OK) {
        free(pos0);
        return st;
    }
    for (int i = 0; i < n_sessions; i++) pos0[i] = sessions[i]->pos;
    char where[128];
    int r = es_forward_multi(sessions, n_sessions, tokens, n_tokens, logits, all_positions, pos0, where, sizeof where);
    for (int i = 0; i < n_sessions; i++) {
        if (r != 0) sessions[i]->pos = pos0[i]; /* nothing to keep */
        else if (n_tokens[i] > 0) es_session_note_tokens(sessions[i], pos0[i], tokens[i], n_tokens[i]);
    }
    free(pos0);
    return eval_outcome(runner, r, where, err, errlen);
}
