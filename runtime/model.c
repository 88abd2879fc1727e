/* model.c — the deepseek2 loader: every hyperparameter from GGUF metadata
 * (llama.cpp key names), every tensor by llama.cpp name with its shape
 * checked against those hyperparameters, both MLA up-projection layouts
 * (split attn_k_b/attn_v_b and the older combined attn_kv_b), the optional
 * gate bias, the first MTP (next-n) block when the file has one (blk.N
 * and blk.N.nextn.*), and the YaRN RoPE tables.  Weights stay in the read-only
 * mapping; only the small 1-D vectors (norms, gate bias) are copied to F32.
 */
#include "model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- hyperparameters --------------------------------------------------- */

typedef struct keyreader {
    const es_gguf_ctx *g;
    char *err;
    size_t errlen;
    int failed;
} keyreader;

/* Reads deepseek2.<key> as an integer in [lo, hi]; def < lo means required. */
static int key_int(keyreader *kr, const char *key, int64_t def, int64_t lo, int64_t hi) {
    char full[128];
    snprintf(full, sizeof full, "deepseek2.%s", key);
    int64_t v;
    int r = es_gguf_get_int(kr->g, full, &v);
    if (kr->failed) return 0;
    if (r < 0) {
        set_err(kr->err, kr->errlen, "metadata key %s must be an integer", full);
        kr->failed = 1;
        return 0;
    }
    if (r == 0) {
        if (def < lo) {
            set_err(kr->err, kr->errlen, "missing metadata key %s", full);
            kr->failed = 1;
            return 0;
        }
        return (int)def;
    }
    if (v < lo || v > hi) {
        set_err(kr->err, kr->errlen, "metadata key %s = %lld is out of range [%lld, %lld]",
                full, (long long)v, (long long)lo, (long long)hi);
        kr->failed = 1;
        return 0;
    }
    return (int)v;
}

static float key_float(keyreader *kr, const char *key, double def, int required) {
    char full[128];
    snprintf(full, sizeof full, "deepseek2.%s", key);
    double v;
    int r = es_gguf_get_float(kr->g, full, &v);
    if (kr->failed) return 0;
    if (r < 0 || (r == 1 && !isfinite(v))) {
        set_err(kr->err, kr->errlen, "metadata key %s must be a finite number", full);
        kr->failed = 1;
        return 0;
    }
    if (r == 0) {
        if (required) {
            set_err(kr->err, kr->errlen, "missing metadata key %s", full);
            kr->failed = 1;
        }
        return (float)def;
    }
    return (float)v;
}

#define BIG (1 << 24)

static int read_hparams(es_model *m, char *err, size_t errlen) {
    es_hparams *hp = &m->hp;
    keyreader kr = {.g = m->gguf, .err = err, .errlen = errlen};
    hp->dim = key_int(&kr, "embedding_length", -1, 1, BIG);
    int block_count = key_int(&kr, "block_count", -1, 1, 4096);
    hp->n_nextn = key_int(&kr, "nextn_predict_layers", 0, 0, 16);
    hp->n_ctx_train = key_int(&kr, "context_length", -1, 1, 1 << 30);
    hp->ffn_dim = key_int(&kr, "feed_forward_length", -1, 1, BIG);
    hp->n_heads = key_int(&kr, "attention.head_count", -1, 1, 4096);
    hp->q_lora = key_int(&kr, "attention.q_lora_rank", 0, 0, BIG);
    hp->kv_lora = key_int(&kr, "attention.kv_lora_rank", -1, 1, BIG);
    hp->rope = key_int(&kr, "rope.dimension_count", -1, 2, 4096);
    hp->n_experts = key_int(&kr, "expert_count", 0, 0, 65536);
    hp->n_used = key_int(&kr, "expert_used_count", 0, 0, 65536);
    hp->n_shared = key_int(&kr, "expert_shared_count", 0, 0, 64);
    hp->moe_ffn_dim = key_int(&kr, "expert_feed_forward_length", 0, 0, BIG);
    hp->n_dense = key_int(&kr, "leading_dense_block_count", 0, 0, 4096);
    hp->gating = key_int(&kr, "expert_gating_func", ES_GATING_SOFTMAX, 0, 2);
    hp->n_groups = key_int(&kr, "expert_group_count", 1, 0, 65536);
    hp->n_groups_used = key_int(&kr, "expert_group_used_count", 1, 0, 65536);
    hp->route_scale = key_float(&kr, "expert_weights_scale", 1.0, 0);
    hp->eps = key_float(&kr, "attention.layer_norm_rms_epsilon", 1e-6, 0);
    hp->rope_base = key_float(&kr, "rope.freq_base", 10000.0, 0);
    if (kr.failed) return -1;

    if (hp->gating == 0) hp->gating = ES_GATING_SOFTMAX; /* llama.cpp: 0 = none, softmax for deepseek2 */
    if (hp->n_groups == 0) hp->n_groups = 1;
    if (hp->n_groups_used == 0) hp->n_groups_used = hp->n_groups;
    int norm;
    int r = es_gguf_get_bool(m->gguf, "deepseek2.expert_weights_norm", &norm);
    if (r < 0) { set_err(err, errlen, "metadata key deepseek2.expert_weights_norm must be a bool"); return -1; }
    /* Absent: the reference ties renormalisation to sigmoid scoring. */
    hp->norm_topk = r == 1 ? norm : hp->gating == ES_GATING_SIGMOID;

    /* Head sizes.  Current converters write key_length = R + dr and
     * value_length = R for MLA, with the per-head sizes under *_mla; older
     * ones write the per-head sizes directly. */
    int kl_mla = key_int(&kr, "attention.key_length_mla", 0, 0, BIG);
    int vl_mla = key_int(&kr, "attention.value_length_mla", 0, 0, BIG);
    int kl = key_int(&kr, "attention.key_length", -1, 1, BIG);
    int vl = key_int(&kr, "attention.value_length", -1, 1, BIG);
    if (kr.failed) return -1;
    int qk_head = kl_mla ? kl_mla : kl;
    hp->vdim = vl_mla ? vl_mla : vl;
    if (qk_head <= hp->rope) {
        set_err(err, errlen, "key length %d must exceed rope.dimension_count %d", qk_head, hp->rope);
        return -1;
    }
    hp->nope = qk_head - hp->rope;
    if (hp->rope % 2) { set_err(err, errlen, "rope.dimension_count %d must be even", hp->rope); return -1; }

    if (hp->n_nextn >= block_count) {
        set_err(err, errlen, "nextn_predict_layers %d leaves no layers of %d", hp->n_nextn, block_count);
        return -1;
    }
    hp->n_layers = block_count - hp->n_nextn;
    if (hp->n_dense > hp->n_layers) {
        set_err(err, errlen, "leading_dense_block_count %d exceeds block_count %d", hp->n_dense, hp->n_layers);
        return -1;
    }
    if (hp->n_dense < hp->n_layers) {
        if (hp->n_experts < 1 || hp->n_used < 1 || hp->n_used > hp->n_experts || hp->moe_ffn_dim < 1) {
            set_err(err, errlen, "MoE layers need expert_count >= expert_used_count >= 1 and "
                                 "expert_feed_forward_length > 0 (have %d, %d, %d)",
                    hp->n_experts, hp->n_used, hp->moe_ffn_dim);
            return -1;
        }
        if (hp->n_experts % hp->n_groups || hp->n_groups_used > hp->n_groups ||
            hp->n_used > hp->n_groups_used * (hp->n_experts / hp->n_groups)) {
            set_err(err, errlen, "expert groups inconsistent: %d experts, %d groups, %d used groups, top-%d",
                    hp->n_experts, hp->n_groups, hp->n_groups_used, hp->n_used);
            return -1;
        }
    }
    if (hp->n_used > ES_MAX_EXPERTS_USED || hp->n_groups > ES_MAX_EXPERT_GROUPS) {
        set_err(err, errlen, "at most %d experts per token and %d expert groups are supported", ES_MAX_EXPERTS_USED,
                ES_MAX_EXPERT_GROUPS);
        return -1;
    }
    if (!(hp->eps > 0)) { set_err(err, errlen, "layer_norm_rms_epsilon must be positive"); return -1; }
    if (!(hp->rope_base > 1)) { set_err(err, errlen, "rope.freq_base must be > 1"); return -1; }

    /* YaRN */
    es_gguf_str st;
    r = es_gguf_get_str(m->gguf, "deepseek2.rope.scaling.type", &st);
    if (r < 0) { set_err(err, errlen, "rope.scaling.type must be a string"); return -1; }
    hp->rope_factor = 1.0f;
    hp->attn_scale = 1.0f / sqrtf((float)(hp->nope + hp->rope));
    if (r == 1 && !es_gguf_str_eq(st, "none")) {
        if (!es_gguf_str_eq(st, "yarn")) {
            set_err(err, errlen, "rope.scaling.type '%.*s' is not supported (yarn, none)",
                    (int)(st.len > 64 ? 64 : st.len), st.ptr);
            return -1;
        }
        hp->rope_factor = key_float(&kr, "rope.scaling.factor", 1.0, 1);
        hp->yarn_orig_ctx = key_int(&kr, "rope.scaling.original_context_length", -1, 1, 1 << 30);
        hp->yarn_beta_fast = key_float(&kr, "rope.scaling.yarn_beta_fast", 32.0, 0);
        hp->yarn_beta_slow = key_float(&kr, "rope.scaling.yarn_beta_slow", 1.0, 0);
        hp->yarn_log_mul = key_float(&kr, "rope.scaling.yarn_log_multiplier", 0.0, 0);
        if (kr.failed) return -1;
        if (!(hp->rope_factor >= 1.0f)) { set_err(err, errlen, "rope.scaling.factor must be >= 1"); return -1; }
        if (!(hp->yarn_beta_fast > 0 && hp->yarn_beta_slow > 0)) {
            set_err(err, errlen, "yarn beta values must be positive");
            return -1;
        }
        hp->yarn = hp->rope_factor > 1.0f;
        if (hp->yarn) {
            float mm = 1.0f + hp->yarn_log_mul * logf(hp->rope_factor);
            hp->attn_scale *= mm * mm;
        }
    }
    return 0;
}

/* Frequencies as the reference computes them, in fp32: f_i = base^(-2i/dr),
 * blended toward f_i/factor by the YaRN ramp. */
static void build_rope_freqs(es_model *m) {
    const es_hparams *hp = &m->hp;
    int half = hp->rope / 2;
    float low = 0, high = 0;
    if (hp->yarn) {
        double d_fast = hp->rope * log(hp->yarn_orig_ctx / (hp->yarn_beta_fast * 2 * M_PI)) / (2 * log(hp->rope_base));
        double d_slow = hp->rope * log(hp->yarn_orig_ctx / (hp->yarn_beta_slow * 2 * M_PI)) / (2 * log(hp->rope_base));
        double lo = floor(d_fast), hi = ceil(d_slow);
        if (lo < 0) lo = 0;
        if (hi > hp->rope - 1) hi = hp->rope - 1;
        if (lo == hi) hi += 0.001;
        low = (float)lo;
        high = (float)hi;
    }
    for (int i = 0; i < half; i++) {
        float f = 1.0f / powf(hp->rope_base, (float)(2 * i) / (float)hp->rope);
        if (hp->yarn) {
            float ramp = ((float)i - low) / (high - low);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            float smooth = 1.0f - ramp;
            f = f / hp->rope_factor * (1.0f - smooth) + f * smooth;
        }
        m->rope_freqs[i] = f;
    }
}

/* ---- tensors ------------------------------------------------------------ */

typedef struct loader {
    es_model *m;
    char *err;
    size_t errlen;
    int failed;
    int unsupported; /* the failure is a valid but unsupported tensor type */
    float *vec_next; /* bump allocator into m->f32_copies */
} loader;

static const char *dims_str(char *buf, size_t n, int64_t a, int64_t b, int64_t c) {
    if (c > 1) snprintf(buf, n, "[%lld, %lld, %lld]", (long long)a, (long long)b, (long long)c);
    else if (b > 1) snprintf(buf, n, "[%lld, %lld]", (long long)a, (long long)b);
    else snprintf(buf, n, "[%lld]", (long long)a);
    return buf;
}

/* Finds tensor `name` with shape [n, rows, n_mat]; returns 1 if found, 0 if
 * absent and optional; fails otherwise. */
static int get_weight(loader *L, es_weight *w, const char *name, int64_t n, int64_t rows,
                      int64_t n_mat, int optional) {
    if (L->failed) return 0;
    const es_gguf_tensor *t = es_gguf_find_tensor(L->m->gguf, name);
    memset(w, 0, sizeof *w);
    if (!t) {
        if (optional) return 0;
        set_err(L->err, L->errlen, "missing tensor %s", name);
        L->failed = 1;
        return 0;
    }
    if (t->ne[0] != n || t->ne[1] != rows || t->ne[2] != n_mat || t->ne[3] != 1) {
        char want[96], have[96];
        set_err(L->err, L->errlen, "tensor %s has shape %s, expected %s from the metadata", name,
                t->ne[3] > 1 ? "4-D" : dims_str(have, sizeof have, t->ne[0], t->ne[1], t->ne[2]),
                dims_str(want, sizeof want, n, rows, n_mat));
        L->failed = 1;
        return 0;
    }
    const es_type_traits *tr = es_type_info(t->type);
    /* FP8_B128 (a checkpoint's, in place) has only products */
    int computable = t->type == ES_TYPE_FP8_B128 ? L->m->kern->matvec[t->type] != NULL
                                                 : L->m->kern->dequant_row[t->type] != NULL;
    if (!tr || !tr->supported || !computable) {
        set_err(L->err, L->errlen, "tensor %s has type %s, which edgeseek cannot compute with yet "
                                   "(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS, "
                                   "Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, "
                                   "IQ3_XXS, IQ3_S, TQ1_0, TQ2_0)",
                name, tr ? tr->name : "unknown");
        L->failed = 1;
        L->unsupported = tr != NULL;
        return 0;
    }
    w->data = t->data;
    w->type = t->type;
    w->n = n;
    w->rows = rows;
    w->n_mat = n_mat;
    w->row_bytes = es_row_bytes(t->type, n);
    w->mat_bytes = w->row_bytes * (size_t)rows;
    w->name = t->name;
    w->mats = t->mats;
    L->m->weight_bytes += t->nbytes;
    return 1;
}

/* Fails unless w is read by rows as well as by products (not FP8_B128). */
static int need_rows(loader *L, const es_weight *w) {
    if (L->failed || !w->data || w->type != ES_TYPE_FP8_B128) return 0;
    set_err(L->err, L->errlen, "tensor %s: FP8 with block scales is supported for matrix products only, "
                               "not here (edgeseek reads this tensor by rows)", w->name);
    L->failed = 1;
    return -1;
}

/* A 1-D vector of length n, converted to F32 (norm weights, gate bias). */
static const float *get_vec(loader *L, const char *name, int64_t n, int optional) {
    es_weight w;
    if (!get_weight(L, &w, name, n, 1, 1, optional) || need_rows(L, &w)) return NULL;
    float *dst = L->vec_next;
    L->vec_next += n;
    es_dequant_row(L->m->kern, w.type, w.data, dst, n);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(dst[i])) {
            set_err(L->err, L->errlen, "tensor %s holds a non-finite value at %lld", name, (long long)i);
            L->failed = 1;
            return NULL;
        }
    return dst;
}

static int load_layer(loader *L, int il) {
    es_model *m = L->m;
    const es_hparams *hp = &m->hp;
    es_layer *ly = &m->layers[il];
    char nm[128];
    const int H = hp->n_heads, R = hp->kv_lora, dr = hp->rope, dn = hp->nope, dv = hp->vdim;
#define NAME(s) (snprintf(nm, sizeof nm, "blk.%d." s, il), nm)
    ly->attn_norm = get_vec(L, NAME("attn_norm.weight"), hp->dim, 0);
    ly->ffn_norm = get_vec(L, NAME("ffn_norm.weight"), hp->dim, 0);
    if (hp->q_lora) {
        get_weight(L, &ly->wq_a, NAME("attn_q_a.weight"), hp->dim, hp->q_lora, 1, 0);
        ly->q_a_norm = get_vec(L, NAME("attn_q_a_norm.weight"), hp->q_lora, 0);
        get_weight(L, &ly->wq_b, NAME("attn_q_b.weight"), hp->q_lora, (int64_t)H * (dn + dr), 1, 0);
    } else {
        get_weight(L, &ly->wq, NAME("attn_q.weight"), hp->dim, (int64_t)H * (dn + dr), 1, 0);
    }
    get_weight(L, &ly->wkv_a, NAME("attn_kv_a_mqa.weight"), hp->dim, R + dr, 1, 0);
    ly->kv_a_norm = get_vec(L, NAME("attn_kv_a_norm.weight"), R, 0);
    int have_k = get_weight(L, &ly->wk_b, NAME("attn_k_b.weight"), dn, R, H, 1);
    int have_v = get_weight(L, &ly->wv_b, NAME("attn_v_b.weight"), R, dv, H, 1);
    if (L->failed) return -1;
    if (have_k != have_v) {
        set_err(L->err, L->errlen, "layer %d has only one of attn_k_b / attn_v_b", il);
        return -1;
    }
    if (!have_k) {
        ly->legacy_kv_b = 1;
        get_weight(L, &ly->wkv_b, NAME("attn_kv_b.weight"), R, (int64_t)H * (dn + dv), 1, 0);
    }
    need_rows(L, &ly->wk_b), need_rows(L, &ly->wv_b), need_rows(L, &ly->wkv_b); /* read head by head */
    get_weight(L, &ly->wo, NAME("attn_output.weight"), (int64_t)H * dv, hp->dim, 1, 0);
    ly->is_moe = il >= hp->n_dense;
    if (!ly->is_moe) {
        get_weight(L, &ly->ffn_gate, NAME("ffn_gate.weight"), hp->dim, hp->ffn_dim, 1, 0);
        get_weight(L, &ly->ffn_up, NAME("ffn_up.weight"), hp->dim, hp->ffn_dim, 1, 0);
        get_weight(L, &ly->ffn_down, NAME("ffn_down.weight"), hp->ffn_dim, hp->dim, 1, 0);
    } else {
        const int E = hp->n_experts, F = hp->moe_ffn_dim;
        get_weight(L, &ly->gate_inp, NAME("ffn_gate_inp.weight"), hp->dim, E, 1, 0);
        ly->exp_bias = get_vec(L, NAME("exp_probs_b.bias"), E, 1);
        get_weight(L, &ly->gate_exps, NAME("ffn_gate_exps.weight"), hp->dim, F, E, 0);
        get_weight(L, &ly->up_exps, NAME("ffn_up_exps.weight"), hp->dim, F, E, 0);
        get_weight(L, &ly->down_exps, NAME("ffn_down_exps.weight"), F, hp->dim, E, 0);
        if (hp->n_shared) {
            ly->has_shared = 1;
            int64_t S = (int64_t)hp->n_shared * F;
            get_weight(L, &ly->gate_sh, NAME("ffn_gate_shexp.weight"), hp->dim, S, 1, 0);
            get_weight(L, &ly->up_sh, NAME("ffn_up_shexp.weight"), hp->dim, S, 1, 0);
            get_weight(L, &ly->down_sh, NAME("ffn_down_shexp.weight"), S, hp->dim, 1, 0);
        }
    }
#undef NAME
    return L->failed ? -1 : 0;
}

/* The first next-n block: its attention and MoE as layers[n_layers] (an
 * MoE block whatever leading_dense_block_count says, as in DeepSeek-V3),
 * and its own tensors; embed_tokens and shared_head_head are optional (the
 * model's token_embd and output serve then, as in llama.cpp). */
static int load_nextn(loader *L) {
    es_model *m = L->m;
    const es_hparams *hp = &m->hp;
    const int il = hp->n_layers;
    es_nextn *nx = &m->nextn;
    char nm[128];
    if (hp->n_experts <= 0) {
        set_err(L->err, L->errlen, "blk.%d.nextn.* is an MoE block but the model has no experts", il);
        return -1;
    }
    if (load_layer(L, il) != 0) return -1;
#define NAME(s) (snprintf(nm, sizeof nm, "blk.%d.nextn." s, il), nm)
    get_weight(L, &nx->eh_proj, NAME("eh_proj.weight"), 2 * (int64_t)hp->dim, hp->dim, 1, 0);
    nx->enorm = get_vec(L, NAME("enorm.weight"), hp->dim, 0);
    nx->hnorm = get_vec(L, NAME("hnorm.weight"), hp->dim, 0);
    nx->head_norm = get_vec(L, NAME("shared_head_norm.weight"), hp->dim, 0);
    nx->own_embed = get_weight(L, &nx->embed, NAME("embed_tokens.weight"), hp->dim, hp->n_vocab, 1, 1);
    nx->own_head = get_weight(L, &nx->head, NAME("shared_head_head.weight"), hp->dim, hp->n_vocab, 1, 1);
#undef NAME
    if (L->failed) return -1;
    if (!nx->own_embed) nx->embed = m->tok_embd;
    if (!nx->own_head) nx->head = m->out;
    m->has_mtp = 1;
    return 0;
}

es_status es_model_load_gguf(es_model *m, es_gguf_ctx *g, int vocab_only, char *err, size_t errlen) {
    m->gguf = g;
    m->vocab_only = vocab_only;
    es_gguf_str arch;
    int r = es_gguf_get_str(g, "general.architecture", &arch);
    if (r != 1) {
        set_err(err, errlen, "general.architecture is %s", r == 0 ? "missing" : "not a string");
        return ES_ERR_FORMAT;
    }
    if (es_tokenizer_load(g, &m->tok, err, errlen) != 0) return ES_ERR_FORMAT;
    if (vocab_only) return ES_OK;
    if (!es_gguf_str_eq(arch, "deepseek2")) {
        set_err(err, errlen, "architecture '%.*s' is not supported (only deepseek2)",
                (int)(arch.len > 64 ? 64 : arch.len), arch.ptr);
        return ES_ERR_UNSUPPORTED;
    }
    if (read_hparams(m, err, errlen) != 0) return ES_ERR_FORMAT;
    es_hparams *hp = &m->hp;

    /* vocabulary size from the embedding, checked against the tokenizer */
    const es_gguf_tensor *te = es_gguf_find_tensor(g, "token_embd.weight");
    if (!te) { set_err(err, errlen, "missing tensor token_embd.weight"); return ES_ERR_FORMAT; }
    if (te->ne[1] > (1 << 30)) { set_err(err, errlen, "token_embd.weight has an absurd vocabulary"); return ES_ERR_FORMAT; }
    hp->n_vocab = (int)te->ne[1];
    if (es_tokenizer_n_vocab(m->tok) > hp->n_vocab) {
        set_err(err, errlen, "tokenizer has %d tokens but token_embd.weight only %d rows",
                es_tokenizer_n_vocab(m->tok), hp->n_vocab);
        return ES_ERR_FORMAT;
    }

    /* the first next-n block runs when the file has its eh_proj (else it is skipped, as before) */
    char mtp_name[64];
    snprintf(mtp_name, sizeof mtp_name, "blk.%d.nextn.eh_proj.weight", hp->n_layers);
    const int mtp = hp->n_nextn > 0 && es_gguf_find_tensor(g, mtp_name) != NULL;
    m->layers = calloc((size_t)hp->n_layers + 1, sizeof(es_layer));
    m->rope_freqs = malloc(sizeof(float) * (size_t)(hp->rope / 2));
    size_t nvec = (size_t)hp->dim * 4 + ((size_t)hp->n_layers + 1) *
                  (2 * (size_t)hp->dim + (size_t)hp->q_lora + (size_t)hp->kv_lora + (size_t)hp->n_experts);
    m->f32_copies = malloc(sizeof(float) * nvec);
    if (!m->layers || !m->rope_freqs || !m->f32_copies) {
        set_err(err, errlen, "out of memory loading the model");
        return ES_ERR_NOMEM;
    }
    loader L = {.m = m, .err = err, .errlen = errlen, .vec_next = m->f32_copies};
    get_weight(&L, &m->tok_embd, "token_embd.weight", hp->dim, hp->n_vocab, 1, 0);
    need_rows(&L, &m->tok_embd);
    m->out_norm = get_vec(&L, "output_norm.weight", hp->dim, 0);
    get_weight(&L, &m->out, "output.weight", hp->dim, hp->n_vocab, 1, 0);
    if (L.failed) return L.unsupported ? ES_ERR_UNSUPPORTED : ES_ERR_FORMAT;
    for (int il = 0; il < hp->n_layers; il++)
        if (load_layer(&L, il) != 0) return L.unsupported ? ES_ERR_UNSUPPORTED : ES_ERR_FORMAT;
    if (mtp && load_nextn(&L) != 0) return L.unsupported ? ES_ERR_UNSUPPORTED : ES_ERR_FORMAT;
    /* further next-n blocks (blk.<n_layers+1>...) are present but unused */
    build_rope_freqs(m);
    return ES_OK;
}
