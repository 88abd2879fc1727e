/* gen_model.c — build/gen_model: writes a random-weight deepseek2 GGUF for any
 * configuration, laid out exactly as llama.cpp's converter lays out DeepSeek
 * V2 / V2-Lite / V3 (key names, key types, tensor names, shapes, order).
 *
 * Owns: the hyperparameter options and presets, the small byte-level BPE
 * vocabulary, the tensor plan, and the deterministic, multi-threaded,
 * streaming weight generator.
 *
 * Weights: every tensor's values come from an RNG seeded by (seed, logical
 * tensor name, row), so they do not depend on the weight type, the thread
 * count or which other tensors exist: a q8_0 file holds the quantised weights
 * of the f32 file with the same seed, and the split attn_k_b/attn_v_b hold
 * exactly the rows of the legacy attn_kv_b.  Matrices are uniform with
 * std = weight_scale / sqrt(fan_in) (fan_in = ne[0], the row length), so a
 * normalised input gives outputs of unit scale through any number of layers;
 * norm weights are 1 ± norm_jitter; the embedding has std embed_scale; the
 * router has std router_scale / sqrt(dim); the gate bias is ± bias_scale.
 *
 * Streaming: rows are generated and converted (es_quant_row) by worker
 * threads into one of two slab buffers while the main thread writes the
 * other, so memory stays at a few slabs whatever the model size.
 */
#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "edgeseek.h"
#include "gguf_writer.h"
#include "kernels.h"
#include "quant.h"

#define MAX_THREADS 64
#define MAX_LIST 64           /* --set / --drop / --drop-tensor entries */

/* ---- configuration ------------------------------------------------------------ */

typedef struct cfg {
    const char *out, *name, *pre, *preset;
    uint32_t type;
    int64_t seed, threads, quiet, slab_kb;
    int64_t vocab, ctx, dim, layers, ffn, expert_ffn, dense, heads, head_count_kv;
    int64_t q_lora, kv_lora, nope, rope_dim, v_dim, key_length, value_length;
    int64_t yarn_orig_ctx, experts, used, shared, gating, groups, groups_used;
    int64_t expert_norm, gate_bias, legacy_kv, mtp, mtp_shared;
    double rope_base, yarn_factor, beta_fast, beta_slow, yarn_log_mul, eps, expert_scale;
    double weight_scale, router_scale, bias_scale, norm_jitter, embed_scale;
    const char *set[MAX_LIST], *drop[MAX_LIST], *drop_tensor[MAX_LIST];
    int n_set, n_drop, n_drop_tensor;
} cfg;

/* Scaled-down V2-Lite: softmax routing, no groups, no query compression.
 * Every row length is a multiple of 32 so every --type works. */
static void preset_tiny(cfg *c) {
    c->name = "gen-tiny";
    c->vocab = 512, c->ctx = 512, c->dim = 64, c->layers = 3, c->dense = 1, c->ffn = 128;
    c->expert_ffn = 32, c->heads = 4, c->q_lora = 0, c->kv_lora = 32, c->nope = 32;
    c->rope_dim = 16, c->v_dim = 32, c->rope_base = 10000, c->yarn_factor = 0;
    c->experts = 8, c->used = 2, c->shared = 2, c->expert_scale = 1, c->expert_norm = 0;
    c->gating = 1, c->groups = 1, c->groups_used = 1, c->gate_bias = 0;
}

/* DeepSeek-V2-Lite exactly (HF config of deepseek-ai/DeepSeek-V2-Lite). */
static void preset_v2lite(cfg *c) {
    c->name = "DeepSeek-V2-Lite (random weights)";
    c->vocab = 102400, c->ctx = 163840, c->dim = 2048, c->layers = 27, c->dense = 1;
    c->ffn = 10944, c->expert_ffn = 1408, c->heads = 16, c->q_lora = 0, c->kv_lora = 512;
    c->nope = 128, c->rope_dim = 64, c->v_dim = 128, c->rope_base = 10000;
    c->yarn_factor = 40, c->yarn_orig_ctx = 4096, c->beta_fast = 32, c->beta_slow = 1;
    c->yarn_log_mul = 0.0707, c->experts = 64, c->used = 6, c->shared = 2;
    c->expert_scale = 1, c->expert_norm = 0, c->gating = 1, c->groups = 1, c->groups_used = 1;
    c->gate_bias = 0;
}

/* V3-like routing (sigmoid, gate bias, groups by top-2 sum, renormalised,
 * scale 2.5, query compression, YaRN) with scaled-down sizes. */
static void preset_v3(cfg *c) {
    c->name = "gen-v3";
    c->vocab = 1024, c->ctx = 16384, c->dim = 256, c->layers = 4, c->dense = 1, c->ffn = 512;
    c->expert_ffn = 64, c->heads = 8, c->q_lora = 96, c->kv_lora = 64, c->nope = 32;
    c->rope_dim = 16, c->v_dim = 32, c->rope_base = 10000;
    c->yarn_factor = 40, c->yarn_orig_ctx = 4096, c->beta_fast = 32, c->beta_slow = 1;
    c->yarn_log_mul = 0.1, c->experts = 32, c->used = 4, c->shared = 1;
    c->expert_scale = 2.5, c->expert_norm = 1, c->gating = 2, c->groups = 4, c->groups_used = 2;
    c->gate_bias = 1;
}

static void cfg_defaults(cfg *c) {
    memset(c, 0, sizeof *c);
    c->pre = "deepseek-v3";
    c->type = ES_TYPE_F32;
    c->seed = 42;
    c->threads = 0; /* auto */
    c->slab_kb = 8192; /* output generated per pipeline step: 8 MB */
    c->eps = 1e-6;
    c->yarn_orig_ctx = 4096, c->beta_fast = 32, c->beta_slow = 1, c->yarn_log_mul = 0.1;
    c->weight_scale = 1, c->router_scale = 1, c->bias_scale = 0.1, c->norm_jitter = 0.05;
    c->embed_scale = 1;
    preset_tiny(c);
}

static const struct {
    const char *name;
    void (*apply)(cfg *);
} presets[] = {{"tiny", preset_tiny}, {"v2lite", preset_v2lite}, {"v3", preset_v3}};

static const struct {
    const char *name;
    uint32_t type;
    uint32_t ftype; /* llama_ftype for general.file_type */
} wtypes[] = {{"f32", ES_TYPE_F32, 0}, {"f16", ES_TYPE_F16, 1}, {"bf16", ES_TYPE_BF16, 32},
              {"q8_0", ES_TYPE_Q8_0, 7}, {"q4_0", ES_TYPE_Q4_0, 2}};

/* ---- options ---------------------------------------------------------------------- */

enum okind { O_INT, O_FLOAT, O_STR, O_FLAG, O_PRESET, O_TYPE, O_GATING, O_LIST };

typedef struct opt {
    const char *name, *alias; /* alias: the llama.cpp key under "deepseek2." */
    enum okind kind;
    size_t off;               /* field in cfg; for O_LIST the array, count follows */
    const char *help;
} opt;

#define F(field) offsetof(cfg, field)
static const opt opts[] = {
    {"preset", NULL, O_PRESET, 0, "tiny | v2lite | v3 (applied first; default tiny)"},
    {"out", NULL, O_STR, F(out), "output path (also -o); required"},
    {"type", NULL, O_TYPE, 0, "f32 | f16 | bf16 | q8_0 | q4_0: type of the 2-D+ weights"},
    {"seed", NULL, O_INT, F(seed), "RNG seed (default 42)"},
    {"threads", NULL, O_INT, F(threads), "worker threads (default: online CPUs)"},
    {"quiet", NULL, O_FLAG, F(quiet), "no progress output"},
    {"slab-kb", NULL, O_INT, F(slab_kb), "KB generated per pipeline step (default 8192)"},
    {"name", NULL, O_STR, F(name), "general.name"},
    {"tokenizer-pre", "tokenizer.ggml.pre", O_STR, F(pre), "pre-tokenizer name (default deepseek-v3)"},
    {"vocab", "vocab_size", O_INT, F(vocab), "tokens (>= the built-in vocabulary; padded with <pad_N>)"},
    {"ctx", "context_length", O_INT, F(ctx), "training context length"},
    {"dim", "embedding_length", O_INT, F(dim), "hidden size"},
    {"layers", "block_count", O_INT, F(layers), "transformer blocks, not counting MTP blocks"},
    {"ffn", "feed_forward_length", O_INT, F(ffn), "dense FFN size"},
    {"expert-ffn", "expert_feed_forward_length", O_INT, F(expert_ffn), "routed/shared expert FFN size"},
    {"dense-layers", "leading_dense_block_count", O_INT, F(dense), "leading dense blocks"},
    {"heads", "attention.head_count", O_INT, F(heads), "attention heads H"},
    {"head-count-kv", "attention.head_count_kv", O_INT, F(head_count_kv), "0: auto (1; H with --legacy-kv)"},
    {"q-lora", "attention.q_lora_rank", O_INT, F(q_lora), "query LoRA rank (0: plain attn_q)"},
    {"kv-lora", "attention.kv_lora_rank", O_INT, F(kv_lora), "latent rank R"},
    {"nope-dim", NULL, O_INT, F(nope), "qk_nope_head_dim dn (key_length_mla = dn + dr)"},
    {"rope-dim", "rope.dimension_count", O_INT, F(rope_dim), "qk_rope_head_dim dr"},
    {"v-dim", "attention.value_length_mla", O_INT, F(v_dim), "v_head_dim dv"},
    {"key-length", "attention.key_length", O_INT, F(key_length), "0: auto (R+dr; dn+dr with --legacy-kv)"},
    {"value-length", "attention.value_length", O_INT, F(value_length), "0: auto (R; dv with --legacy-kv)"},
    {"rope-base", "rope.freq_base", O_FLOAT, F(rope_base), "RoPE theta"},
    {"yarn-factor", "rope.scaling.factor", O_FLOAT, F(yarn_factor), "YaRN factor (0: no rope.scaling keys)"},
    {"yarn-orig-ctx", "rope.scaling.original_context_length", O_INT, F(yarn_orig_ctx), "YaRN original context"},
    {"yarn-beta-fast", "rope.scaling.yarn_beta_fast", O_FLOAT, F(beta_fast), "YaRN beta_fast"},
    {"yarn-beta-slow", "rope.scaling.yarn_beta_slow", O_FLOAT, F(beta_slow), "YaRN beta_slow"},
    {"yarn-log-mul", "rope.scaling.yarn_log_multiplier", O_FLOAT, F(yarn_log_mul), "0.1 * mscale_all_dim"},
    {"eps", "attention.layer_norm_rms_epsilon", O_FLOAT, F(eps), "RMSNorm epsilon (default 1e-6)"},
    {"experts", "expert_count", O_INT, F(experts), "routed experts E (0 only if every layer is dense)"},
    {"experts-used", "expert_used_count", O_INT, F(used), "experts per token k"},
    {"shared-experts", "expert_shared_count", O_INT, F(shared), "shared experts (FFN = n * expert-ffn)"},
    {"expert-scale", "expert_weights_scale", O_FLOAT, F(expert_scale), "routed weight scale"},
    {"expert-norm", "expert_weights_norm", O_FLAG, F(expert_norm), "renormalise the top-k weights"},
    {"gating", "expert_gating_func", O_GATING, F(gating), "softmax | sigmoid (or 1 | 2)"},
    {"groups", "expert_group_count", O_INT, F(groups), "expert groups G (keys written if > 1)"},
    {"groups-used", "expert_group_used_count", O_INT, F(groups_used), "groups kept Gk"},
    {"gate-bias", "exp_probs_b", O_FLAG, F(gate_bias), "write blk.N.exp_probs_b.bias"},
    {"legacy-kv", "attn_kv_b", O_FLAG, F(legacy_kv), "combined attn_kv_b instead of attn_k_b/attn_v_b"},
    {"mtp", "nextn_predict_layers", O_INT, F(mtp), "MTP/next-n blocks appended (--mtp alone: 1)"},
    {"mtp-shared", NULL, O_FLAG, F(mtp_shared), "MTP blocks use token_embd and output (no own embed/head)"},
    {"weight-scale", NULL, O_FLOAT, F(weight_scale), "matrix std = weight-scale / sqrt(fan_in)"},
    {"router-scale", NULL, O_FLOAT, F(router_scale), "router std = router-scale / sqrt(dim)"},
    {"bias-scale", NULL, O_FLOAT, F(bias_scale), "gate bias uniform in +-bias-scale"},
    {"norm-jitter", NULL, O_FLOAT, F(norm_jitter), "norm weights uniform in 1 +- norm-jitter"},
    {"embed-scale", NULL, O_FLOAT, F(embed_scale), "token embedding std"},
    {"set", NULL, O_LIST, F(set), "KEY=TYPE:VALUE: add/replace a key (u8..i64, f32, f64, bool, str)"},
    {"drop", NULL, O_LIST, F(drop), "KEY: leave a metadata key out"},
    {"drop-tensor", NULL, O_LIST, F(drop_tensor), "NAME: leave a tensor out"},
};
#undef F

static void usage(FILE *f) {
    fprintf(f, "usage: gen_model -o OUT.gguf [--preset tiny|v2lite|v3] [--type T] [options]\n"
               "Writes a random-weight deepseek2 GGUF.  Options take a value as --opt V or --opt=V\n"
               "(flags: --opt or --opt=0/1); '-' and '_' are interchangeable, and each option\n"
               "with a [key] may also be given by that llama.cpp key name (--expert_count=8).\n\n");
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s", opts[i].name, opts[i].kind == O_FLAG ? "" : " V");
        fprintf(f, "  %-20s %s", left, opts[i].help);
        if (opts[i].alias) fprintf(f, " [%s]", opts[i].alias);
        fputc('\n', f);
    }
    fprintf(f, "\nExit status: 0 ok, 1 invalid configuration or I/O error, 2 bad usage.\n");
}

static int usage_error(const char *fmt, const char *a) {
    fprintf(stderr, "gen_model: ");
    fprintf(stderr, fmt, a);
    fprintf(stderr, "\n(see gen_model --help)\n");
    return 2;
}

/* name equality with '-' and '_' interchangeable */
static int opt_eq(const char *a, size_t alen, const char *b) {
    if (!b || strlen(b) != alen) return 0;
    for (size_t i = 0; i < alen; i++) {
        char x = a[i] == '_' ? '-' : a[i], y = b[i] == '_' ? '-' : b[i];
        if (x != y) return 0;
    }
    return 1;
}

static const opt *find_opt(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        if (opt_eq(name, len, opts[i].name) || opt_eq(name, len, opts[i].alias)) return &opts[i];
    return NULL;
}

static int parse_i64(const char *s, int64_t *v) {
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 0);
    if (errno || end == s || *end) return -1;
    *v = x;
    return 0;
}

static int parse_f64(const char *s, double *v) {
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(x)) return -1;
    *v = x;
    return 0;
}

static int apply_preset(cfg *c, const char *name) {
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(name, presets[i].name) == 0) {
            presets[i].apply(c);
            c->preset = presets[i].name;
            return 0;
        }
    return -1;
}

/* One option with its value (NULL for a bare flag); 0 or an exit status. */
static int set_opt(cfg *c, const opt *o, const char *val) {
    char *base = (char *)c + o->off;
    switch (o->kind) {
    case O_FLAG:
    case O_INT: {
        int64_t v = 1;
        if (val && parse_i64(val, &v)) {
            if (o->kind == O_FLAG && strcmp(val, "true") == 0) v = 1;
            else if (o->kind == O_FLAG && strcmp(val, "false") == 0) v = 0;
            else return usage_error("--%s needs an integer", o->name);
        }
        *(int64_t *)base = v;
        return 0;
    }
    case O_FLOAT:
        return parse_f64(val, (double *)base) ? usage_error("--%s needs a number", o->name) : 0;
    case O_STR:
        *(const char **)base = val;
        return 0;
    case O_PRESET:
        return 0; /* applied before the other options */
    case O_TYPE:
        for (size_t i = 0; i < sizeof wtypes / sizeof wtypes[0]; i++)
            if (strcmp(val, wtypes[i].name) == 0) {
                c->type = wtypes[i].type;
                return 0;
            }
        return usage_error("unknown --type '%s' (f32, f16, bf16, q8_0, q4_0)", val);
    case O_GATING:
        if (strcmp(val, "softmax") == 0 || strcmp(val, "1") == 0) c->gating = 1;
        else if (strcmp(val, "sigmoid") == 0 || strcmp(val, "2") == 0) c->gating = 2;
        else return usage_error("unknown --gating '%s' (softmax, sigmoid)", val);
        return 0;
    case O_LIST: {
        int *n = o->off == offsetof(cfg, set) ? &c->n_set : o->off == offsetof(cfg, drop) ? &c->n_drop
                                                                                          : &c->n_drop_tensor;
        if (*n >= MAX_LIST) return usage_error("too many --%s options", o->name);
        ((const char **)base)[(*n)++] = val;
        return 0;
    }
    }
    return 2;
}

/* 0: parsed; -1: --help shown; otherwise the exit status. */
static int parse_args(cfg *c, int argc, char **argv) {
    cfg_defaults(c);
    /* presets first, so that every other option overrides them */
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (strcmp(argv[i], "--preset") == 0) v = i + 1 < argc ? argv[i + 1] : "";
        else if (strncmp(argv[i], "--preset=", 9) == 0) v = argv[i] + 9;
        if (v && apply_preset(c, v)) return usage_error("unknown --preset '%s' (tiny, v2lite, v3)", v);
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return -1;
        }
        if (strcmp(a, "-o") == 0) {
            if (i + 1 >= argc) return usage_error("%s needs a value", a);
            c->out = argv[++i];
            continue;
        }
        if (strncmp(a, "--", 2) != 0) return usage_error("unexpected argument '%s'", a);
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const opt *o = find_opt(name, len);
        if (!o) return usage_error("unknown option '%s'", a);
        const char *val = eq ? eq + 1 : NULL;
        int bare_ok = o->kind == O_FLAG || (o->kind == O_INT && o->off == offsetof(cfg, mtp));
        if (!val && !bare_ok) {
            if (i + 1 >= argc) return usage_error("%s needs a value", a);
            val = argv[++i];
        }
        int rc = set_opt(c, o, val);
        if (rc) return rc;
    }
    if (!c->out) return usage_error("%s", "no output path (-o / --out)");
    return 0;
}

/* ---- vocabulary ---------------------------------------------------------------------------- */

/* Common English merges in byte-level form (Ġ = space, Ċ = newline), in
 * rank order; each merged token is appended after the 256 byte tokens. */
static const char *const merges[] = {
    "Ġ t", "h e", "Ġt he", "i n", "e r", "Ġ a", "o n", "r e", "Ġ s", "a n", "Ġ o", "Ġ w",
    "i s", "e n", "a t", "o r", "Ġ c", "e s", "i t", "Ġ b", "Ġ f", "in g", "Ġ p", "e d",
    "Ġ m", "a r", "Ġo f", "Ġa n", "Ġan d", "Ġ i", "Ġ h", "l l", "Ġ d", "o u", "Ġt o", "Ġi n",
    "Ġi s", "Ġ I", "Ġ T", "a s", "Ġw as", "Ġ l", "Ġ n", "Ġ e", "Ġ g", "Ġ Ġ", "Ċ Ċ", "l e",
    "t h", "Ġ th", "Ġth at", "Ġf or", "Ġo n", "Ġ re", "Ġc on", "Ġ y", "Ġy ou", "i on",
};
#define N_MERGES (sizeof merges / sizeof merges[0])

enum { TT_NORMAL = 1, TT_CONTROL = 3, TT_USER = 4 };
static const struct {
    const char *text;
    int32_t type;
} specials[] = {
    {"<｜begin▁of▁sentence｜>", TT_CONTROL}, /* bos */
    {"<｜end▁of▁sentence｜>", TT_CONTROL},   /* eos */
    {"<｜User｜>", TT_USER},
    {"<｜Assistant｜>", TT_USER},
    {"<think>", TT_USER},
    {"</think>", TT_USER},
};
#define N_SPECIALS (sizeof specials / sizeof specials[0])
#define N_BASE_TOKENS (256 + N_MERGES + N_SPECIALS)

typedef struct vocab {
    char **tok;
    int32_t *type;
    int64_t n;
    int32_t bos, eos;
} vocab;

static void vocab_free(vocab *v) {
    if (v->tok)
        for (int64_t i = 0; i < v->n; i++) free(v->tok[i]);
    free(v->tok);
    free(v->type);
}

/* GPT-2's byte-to-unicode: printable bytes map to themselves, the rest to
 * U+0100 upwards in byte order.  Writes the UTF-8 of byte b's symbol. */
static void byte_symbol(int b, char out[4]) {
    int cp = b;
    if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
        int k = 0;
        for (int x = 0; x < b; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) k++;
        cp = 256 + k;
    }
    if (cp < 0x80) {
        out[0] = (char)cp, out[1] = 0;
    } else {
        out[0] = (char)(0xc0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3f)), out[2] = 0;
    }
}

static int64_t vocab_find(const vocab *v, const char *s, size_t len) {
    for (int64_t i = 0; i < v->n; i++)
        if (strlen(v->tok[i]) == len && memcmp(v->tok[i], s, len) == 0) return i;
    return -1;
}

/* bytes, merged tokens, specials, then <pad_N> (normal tokens, like the
 * golden files' fillers) up to n_vocab.  -1 on OOM or
 * an inconsistent merge table (a bug, caught by the tests). */
static int vocab_build(vocab *v, int64_t n_vocab) {
    memset(v, 0, sizeof *v);
    v->tok = calloc((size_t)n_vocab, sizeof *v->tok);
    v->type = malloc((size_t)n_vocab * sizeof *v->type);
    if (!v->tok || !v->type) return -1;
    char sym[4];
    for (int b = 0; b < 256; b++) {
        byte_symbol(b, sym);
        if (!(v->tok[v->n] = strdup(sym))) return -1;
        v->type[v->n++] = TT_NORMAL;
    }
    for (size_t m = 0; m < N_MERGES; m++) {
        const char *sp = strchr(merges[m], ' ');
        size_t la = (size_t)(sp - merges[m]), lb = strlen(sp + 1);
        if (vocab_find(v, merges[m], la) < 0 || vocab_find(v, sp + 1, lb) < 0) return -1;
        char *t = malloc(la + lb + 1);
        if (!t) return -1;
        memcpy(t, merges[m], la);
        memcpy(t + la, sp + 1, lb + 1);
        if (vocab_find(v, t, la + lb) >= 0) { free(t); return -1; }
        v->tok[v->n] = t;
        v->type[v->n++] = TT_NORMAL;
    }
    v->bos = (int32_t)v->n, v->eos = (int32_t)v->n + 1;
    for (size_t s = 0; s < N_SPECIALS; s++) {
        if (!(v->tok[v->n] = strdup(specials[s].text))) return -1;
        v->type[v->n++] = specials[s].type;
    }
    while (v->n < n_vocab) {
        char buf[32];
        snprintf(buf, sizeof buf, "<pad_%lld>", (long long)v->n);
        if (!(v->tok[v->n] = strdup(buf))) return -1;
        v->type[v->n++] = TT_NORMAL; /* unreachable by merges; not special, so 100k of them stay cheap */
    }
    return 0;
}

/* ---- RNG ---------------------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

/* n values offset + amp * u, u uniform in [-1, 1), from the stream of
 * (tensor seed, logical row): xorshift64*, two 24-bit draws per step. */
static void gen_row(uint64_t seed, int64_t row, int64_t n, float offset, float amp, float *dst) {
    uint64_t x = splitmix64(seed ^ splitmix64((uint64_t)row)) | 1;
    const float k = amp * (1.0f / 8388608.0f); /* 2^-23 */
    int64_t i = 0;
    for (; i + 1 < n; i += 2) {
        x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
        uint64_t r = x * 0x2545f4914f6cdd1dull;
        dst[i] = offset + ((float)(int32_t)(r >> 40) - 8388608.0f) * k;
        dst[i + 1] = offset + ((float)(int32_t)((r >> 16) & 0xffffff) - 8388608.0f) * k;
    }
    if (i < n) {
        x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
        dst[i] = offset + ((float)(int32_t)((x * 0x2545f4914f6cdd1dull) >> 40) - 8388608.0f) * k;
    }
}

/* ---- tensor plan ---------------------------------------------------------------------------------- */

/* How a tensor's physical rows map to the logical matrix that is generated:
 * attn_k_b / attn_v_b are cut from the logical attn_kv_b [R, H*(dn+dv)]
 * (rows: per head, dn k-rows then dv v-rows) as llama.cpp's converter does:
 *   attn_v_b [R, dv, H]: row (j, h)  = kv_b row h*(dn+dv) + dn + j
 *   attn_k_b [dn, R, H]: row (r, h)  = column r of kv_b rows h*(dn+dv) .. +dn-1 */
enum rowmap { MAP_DIRECT, MAP_VB, MAP_KB };

typedef struct tplan {
    char name[GGUF_W_MAX_NAME];
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    uint32_t type;
    float offset, amp; /* values: offset + amp * uniform[-1, 1) */
    uint64_t seed;     /* from the logical tensor's name */
    enum rowmap map;
    int64_t dn, dv, R; /* for MAP_VB / MAP_KB */
    const char *why;   /* the option that sets ne[0], for the error message */
    int dropped;
} tplan;

typedef struct plan {
    tplan *t;
    size_t n, cap;
    const cfg *c;
    int err; /* 1: OOM */
} plan;

static tplan *plan_add(plan *P, const char *name, uint32_t n_dims, int64_t ne0, int64_t ne1, int64_t ne2) {
    if (P->err) return NULL;
    if (P->n == P->cap) {
        size_t cap = P->cap ? P->cap * 2 : 256;
        tplan *t = realloc(P->t, cap * sizeof *t);
        if (!t) { P->err = 1; return NULL; }
        P->t = t, P->cap = cap;
    }
    tplan *t = &P->t[P->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    t->ne[0] = ne0, t->ne[1] = ne1, t->ne[2] = ne2, t->ne[3] = 1;
    t->type = ES_TYPE_F32;
    t->seed = splitmix64((uint64_t)P->c->seed) ^ fnv1a(name);
    t->map = MAP_DIRECT;
    return t;
}

/* 1-D norm weight [n], F32, near 1 */
static void add_norm(plan *P, const char *name, int64_t n) {
    tplan *t = plan_add(P, name, 1, n, 1, 1);
    if (t) t->offset = 1, t->amp = (float)P->c->norm_jitter;
}

/* weight matrix [ne0, ne1(, ne2)] in the chosen type, std weight_scale/sqrt(ne0) */
static tplan *add_mat(plan *P, const char *name, uint32_t n_dims, int64_t ne0, int64_t ne1, int64_t ne2,
                      const char *why) {
    tplan *t = plan_add(P, name, n_dims, ne0, ne1, ne2);
    if (!t) return NULL;
    t->type = P->c->type;
    t->amp = (float)(P->c->weight_scale * sqrt(3.0 / (double)ne0));
    t->why = why;
    return t;
}

/* "blk.<il>.<sfx>" in buf */
static const char *bname(char *buf, int il, const char *sfx) {
    snprintf(buf, GGUF_W_MAX_NAME, "blk.%d.%s", il, sfx);
    return buf;
}

/* gate [dim, ff], down [ff, dim], up [dim, ff]: the golden files' order */
static void add_ffn(plan *P, int il, const char *sfx, int64_t dim, int64_t ff, const char *why) {
    char s[32], nb[GGUF_W_MAX_NAME];
    snprintf(s, sizeof s, "ffn_gate%s.weight", sfx);
    add_mat(P, bname(nb, il, s), 2, dim, ff, 1, "--dim");
    snprintf(s, sizeof s, "ffn_down%s.weight", sfx);
    add_mat(P, bname(nb, il, s), 2, ff, dim, 1, why);
    snprintf(s, sizeof s, "ffn_up%s.weight", sfx);
    add_mat(P, bname(nb, il, s), 2, dim, ff, 1, "--dim");
}

/* One transformer block (also the MTP block, which is a full block). */
static void add_block(plan *P, int il) {
    const cfg *c = P->c;
    int64_t D = c->dim, H = c->heads, R = c->kv_lora, dn = c->nope, dr = c->rope_dim, dv = c->v_dim;
    char nb[GGUF_W_MAX_NAME];
    add_norm(P, bname(nb, il, "attn_norm.weight"), D);
    if (c->q_lora > 0) {
        add_mat(P, bname(nb, il, "attn_q_a.weight"), 2, D, c->q_lora, 1, "--dim");
        add_norm(P, bname(nb, il, "attn_q_a_norm.weight"), c->q_lora);
        add_mat(P, bname(nb, il, "attn_q_b.weight"), 2, c->q_lora, H * (dn + dr), 1, "--q-lora");
    } else {
        add_mat(P, bname(nb, il, "attn_q.weight"), 2, D, H * (dn + dr), 1, "--dim");
    }
    add_mat(P, bname(nb, il, "attn_kv_a_mqa.weight"), 2, D, R + dr, 1, "--dim");
    add_norm(P, bname(nb, il, "attn_kv_a_norm.weight"), R);
    /* k_b / v_b are cut from the logical kv_b: same seed, kv_b's fan-in R */
    uint64_t kvb_seed = splitmix64((uint64_t)c->seed) ^ fnv1a(bname(nb, il, "attn_kv_b.weight"));
    float kvb_amp = (float)(c->weight_scale * sqrt(3.0 / (double)R));
    if (c->legacy_kv) {
        add_mat(P, nb, 2, R, H * (dn + dv), 1, "--kv-lora");
    } else {
        tplan *k = add_mat(P, bname(nb, il, "attn_k_b.weight"), 3, dn, R, H, "--nope-dim");
        if (k) k->map = MAP_KB, k->seed = kvb_seed, k->amp = kvb_amp, k->dn = dn, k->dv = dv, k->R = R;
        tplan *v = add_mat(P, bname(nb, il, "attn_v_b.weight"), 3, R, dv, H, "--kv-lora");
        if (v) v->map = MAP_VB, v->seed = kvb_seed, v->amp = kvb_amp, v->dn = dn, v->dv = dv, v->R = R;
    }
    add_mat(P, bname(nb, il, "attn_output.weight"), 2, H * dv, D, 1, "--heads * --v-dim");
    add_norm(P, bname(nb, il, "ffn_norm.weight"), D);
    if (il < c->dense) {
        add_ffn(P, il, "", D, c->ffn, "--ffn");
        return;
    }
    int64_t E = c->experts, F = c->expert_ffn;
    tplan *r = plan_add(P, bname(nb, il, "ffn_gate_inp.weight"), 2, D, E, 1); /* router: F32 */
    if (r) r->amp = (float)(c->router_scale * sqrt(3.0 / (double)D));
    if (c->gate_bias) {
        tplan *b = plan_add(P, bname(nb, il, "exp_probs_b.bias"), 1, E, 1, 1);
        if (b) b->amp = (float)c->bias_scale;
    }
    add_mat(P, bname(nb, il, "ffn_gate_exps.weight"), 3, D, F, E, "--dim");
    add_mat(P, bname(nb, il, "ffn_down_exps.weight"), 3, F, D, E, "--expert-ffn");
    add_mat(P, bname(nb, il, "ffn_up_exps.weight"), 3, D, F, E, "--dim");
    if (c->shared > 0) add_ffn(P, il, "_shexp", D, c->shared * F, "--shared-experts * --expert-ffn");
}

/* The extra tensors of a next-n (MTP) block: llama.cpp's names and shapes. */
static void add_nextn(plan *P, int il) {
    const cfg *c = P->c;
    char nb[GGUF_W_MAX_NAME];
    add_mat(P, bname(nb, il, "nextn.eh_proj.weight"), 2, 2 * c->dim, c->dim, 1, "--dim");
    if (!c->mtp_shared) {
        tplan *e = add_mat(P, bname(nb, il, "nextn.embed_tokens.weight"), 2, c->dim, c->vocab, 1, "--dim");
        if (e) e->amp = (float)(c->embed_scale * sqrt(3.0));
    }
    add_norm(P, bname(nb, il, "nextn.enorm.weight"), c->dim);
    add_norm(P, bname(nb, il, "nextn.hnorm.weight"), c->dim);
    if (!c->mtp_shared) add_mat(P, bname(nb, il, "nextn.shared_head_head.weight"), 2, c->dim, c->vocab, 1, "--dim");
    add_norm(P, bname(nb, il, "nextn.shared_head_norm.weight"), c->dim);
}

/* token_embd, the blocks (MTP blocks last), output_norm, output. */
static int build_plan(plan *P, const cfg *c) {
    memset(P, 0, sizeof *P);
    P->c = c;
    tplan *e = add_mat(P, "token_embd.weight", 2, c->dim, c->vocab, 1, "--dim");
    if (e) e->amp = (float)(c->embed_scale * sqrt(3.0));
    for (int il = 0; il < c->layers + c->mtp; il++) {
        add_block(P, il);
        if (il >= c->layers) add_nextn(P, il);
    }
    add_norm(P, "output_norm.weight", c->dim);
    add_mat(P, "output.weight", 2, c->dim, c->vocab, 1, "--dim");
    return P->err ? -1 : 0;
}

/* ---- validation ---------------------------------------------------------------------------------- */

static int bad(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(char *err, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

/* The configuration must describe a model a loader can accept. */
static int validate(const cfg *c, char *err, size_t n) {
    const struct {
        const char *opt;
        int64_t v, lo;
    } ranges[] = {
        {"--vocab", c->vocab, (int64_t)N_BASE_TOKENS}, {"--ctx", c->ctx, 1}, {"--dim", c->dim, 1},
        {"--layers", c->layers, 1}, {"--heads", c->heads, 1}, {"--kv-lora", c->kv_lora, 1},
        {"--nope-dim", c->nope, 1}, {"--rope-dim", c->rope_dim, 2}, {"--v-dim", c->v_dim, 1},
        {"--q-lora", c->q_lora, 0}, {"--dense-layers", c->dense, 0}, {"--mtp", c->mtp, 0},
        {"--experts", c->experts, 0}, {"--shared-experts", c->shared, 0}, {"--groups", c->groups, 1},
        {"--groups-used", c->groups_used, 1}, {"--head-count-kv", c->head_count_kv, 0},
        {"--key-length", c->key_length, 0}, {"--value-length", c->value_length, 0},
        {"--threads", c->threads, 0}, {"--yarn-orig-ctx", c->yarn_orig_ctx, 1}, {"--slab-kb", c->slab_kb, 1},
    };
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
        if (ranges[i].v < ranges[i].lo)
            return bad(err, n, "%s is %lld; it must be at least %lld%s", ranges[i].opt, (long long)ranges[i].v,
                       (long long)ranges[i].lo,
                       strcmp(ranges[i].opt, "--vocab") ? "" : " (the built-in tokens)");
        if (ranges[i].v > (1ll << 30))
            return bad(err, n, "%s is %lld: too large", ranges[i].opt, (long long)ranges[i].v);
    }
    if (c->rope_dim % 2) return bad(err, n, "--rope-dim must be even (RoPE rotates pairs)");
    if (c->dense > c->layers) return bad(err, n, "--dense-layers %lld exceeds --layers %lld", (long long)c->dense,
                                         (long long)c->layers);
    if (c->mtp > 8) return bad(err, n, "--mtp %lld: at most 8 next-n blocks", (long long)c->mtp);
    if (c->threads > MAX_THREADS) return bad(err, n, "--threads: at most %d", MAX_THREADS);
    if (c->dense > 0 && c->ffn < 1) return bad(err, n, "--ffn must be >= 1 when there are dense layers");
    if (c->dense < c->layers || c->mtp > 0) { /* MoE blocks exist (MTP blocks are MoE) */
        if (c->experts < 1) return bad(err, n, "--experts must be >= 1 when there are MoE layers");
        if (c->expert_ffn < 1) return bad(err, n, "--expert-ffn must be >= 1 when there are MoE layers");
        if (c->used < 1 || c->used > c->experts)
            return bad(err, n, "--experts-used %lld must be in 1..%lld", (long long)c->used, (long long)c->experts);
        if (c->experts % c->groups)
            return bad(err, n, "--groups %lld does not divide --experts %lld", (long long)c->groups,
                       (long long)c->experts);
        if (c->groups_used > c->groups)
            return bad(err, n, "--groups-used %lld exceeds --groups %lld", (long long)c->groups_used,
                       (long long)c->groups);
        if (c->used > c->groups_used * (c->experts / c->groups))
            return bad(err, n, "--experts-used %lld exceeds the %lld experts in the %lld groups kept", (long long)c->used,
                       (long long)(c->groups_used * (c->experts / c->groups)), (long long)c->groups_used);
    }
    if (c->yarn_factor < 0) return bad(err, n, "--yarn-factor must be >= 0 (0: no YaRN)");
    if (!(c->rope_base > 0)) return bad(err, n, "--rope-base must be > 0");
    if (!(c->eps > 0)) return bad(err, n, "--eps must be > 0");
    if (c->weight_scale < 0 || c->router_scale < 0 || c->bias_scale < 0 || c->norm_jitter < 0 || c->embed_scale < 0)
        return bad(err, n, "the --*-scale and --norm-jitter options must be >= 0");
    return 0;
}

/* Quantised types need every quantised row to be whole blocks. */
static int check_rows(const plan *P, char *err, size_t n) {
    for (size_t i = 0; i < P->n; i++) {
        const tplan *t = &P->t[i];
        const es_type_traits *tr = es_type_info(t->type);
        if (t->ne[0] % tr->block_size)
            return bad(err, n,
                       "--type %s needs rows that are multiples of %u, but %s has rows of %lld (set by %s); "
                       "choose sizes that are multiples of %u or --type f32/f16/bf16",
                       tr->name, tr->block_size, t->name, (long long)t->ne[0], t->why ? t->why : "?",
                       tr->block_size);
    }
    return 0;
}

/* ---- metadata ------------------------------------------------------------------------------------------ */

enum { MK_U32, MK_F32, MK_BOOL, MK_STR };

/* Keys, types and order as llama.cpp's converter writes them (see the golden
 * files): MLA split by default, the pre-split layout with --legacy-kv. */
static void write_meta(es_gguf_writer *w, const cfg *c, const vocab *v, uint32_t ftype) {
    int yarn = c->yarn_factor > 0, moe = c->experts > 0, groups = moe && c->groups > 1, mla = !c->legacy_kv;
    int64_t hkv = c->head_count_kv ? c->head_count_kv : c->legacy_kv ? c->heads : 1;
    int64_t kl = c->key_length ? c->key_length : mla ? c->kv_lora + c->rope_dim : c->nope + c->rope_dim;
    int64_t vl = c->value_length ? c->value_length : mla ? c->kv_lora : c->v_dim;
    const struct {
        const char *key; /* under "deepseek2." */
        int kind, when;
        double v;
        const char *s;
    } keys[] = {
        {"vocab_size", MK_U32, 1, (double)c->vocab, 0},
        {"context_length", MK_U32, 1, (double)c->ctx, 0},
        {"embedding_length", MK_U32, 1, (double)c->dim, 0},
        {"block_count", MK_U32, 1, (double)(c->layers + c->mtp), 0},
        {"feed_forward_length", MK_U32, 1, (double)c->ffn, 0},
        {"leading_dense_block_count", MK_U32, 1, (double)c->dense, 0},
        {"attention.head_count", MK_U32, 1, (double)c->heads, 0},
        {"attention.layer_norm_rms_epsilon", MK_F32, 1, c->eps, 0},
        {"attention.q_lora_rank", MK_U32, 1, (double)c->q_lora, 0},
        {"attention.kv_lora_rank", MK_U32, 1, (double)c->kv_lora, 0},
        {"attention.head_count_kv", MK_U32, 1, (double)hkv, 0},
        {"attention.key_length", MK_U32, 1, (double)kl, 0},
        {"attention.value_length", MK_U32, 1, (double)vl, 0},
        {"attention.key_length_mla", MK_U32, mla, (double)(c->nope + c->rope_dim), 0},
        {"attention.value_length_mla", MK_U32, mla, (double)c->v_dim, 0},
        {"rope.dimension_count", MK_U32, 1, (double)c->rope_dim, 0},
        {"rope.freq_base", MK_F32, 1, c->rope_base, 0},
        {"rope.scaling.type", MK_STR, yarn, 0, "yarn"},
        {"rope.scaling.factor", MK_F32, yarn, c->yarn_factor, 0},
        {"rope.scaling.original_context_length", MK_U32, yarn, (double)c->yarn_orig_ctx, 0},
        {"rope.scaling.yarn_beta_fast", MK_F32, yarn, c->beta_fast, 0},
        {"rope.scaling.yarn_beta_slow", MK_F32, yarn, c->beta_slow, 0},
        {"rope.scaling.yarn_log_multiplier", MK_F32, yarn, c->yarn_log_mul, 0},
        {"expert_count", MK_U32, moe, (double)c->experts, 0},
        {"expert_used_count", MK_U32, moe, (double)c->used, 0},
        {"expert_shared_count", MK_U32, moe, (double)c->shared, 0},
        {"expert_feed_forward_length", MK_U32, moe, (double)c->expert_ffn, 0},
        {"expert_weights_scale", MK_F32, moe, c->expert_scale, 0},
        {"expert_weights_norm", MK_BOOL, moe, (double)c->expert_norm, 0},
        {"expert_gating_func", MK_U32, moe, (double)c->gating, 0},
        {"expert_group_count", MK_U32, groups, (double)c->groups, 0},
        {"expert_group_used_count", MK_U32, groups, (double)c->groups_used, 0},
        {"nextn_predict_layers", MK_U32, c->mtp > 0, (double)c->mtp, 0},
    };
    es_gguf_w_str(w, "general.architecture", "deepseek2");
    es_gguf_w_u32(w, "general.alignment", 32);
    es_gguf_w_str(w, "general.name", c->name ? c->name : "gen_model");
    es_gguf_w_u32(w, "general.file_type", ftype);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (!keys[i].when) continue;
        char k[96];
        snprintf(k, sizeof k, "deepseek2.%s", keys[i].key);
        switch (keys[i].kind) { /* every integer was range-checked by validate() */
        case MK_U32: es_gguf_w_u32(w, k, (uint32_t)keys[i].v); break;
        case MK_F32: es_gguf_w_f32(w, k, (float)keys[i].v); break;
        case MK_BOOL: es_gguf_w_bool(w, k, keys[i].v != 0); break;
        default: es_gguf_w_str(w, k, keys[i].s); break;
        }
    }
    es_gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    es_gguf_w_str(w, "tokenizer.ggml.pre", c->pre);
    es_gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tok, (uint64_t)v->n);
    es_gguf_w_arr(w, "tokenizer.ggml.token_type", GGUF_VT_INT32, v->type, (uint64_t)v->n);
    es_gguf_w_arr_str(w, "tokenizer.ggml.merges", merges, N_MERGES);
    es_gguf_w_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos);
    es_gguf_w_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v->eos);
    es_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", 1);
    es_gguf_w_bool(w, "tokenizer.ggml.add_eos_token", 0);
}

/* --set KEY=TYPE:VALUE; 0, or 2 for a malformed spec (the writer records
 * other errors). */
static int apply_set(es_gguf_writer *w, const char *spec) {
    const char *eq = strchr(spec, '='), *colon = eq ? strchr(eq, ':') : NULL;
    if (!eq || !colon || eq == spec) return usage_error("--set '%s': want KEY=TYPE:VALUE", spec);
    char key[256], type[16];
    size_t kl = (size_t)(eq - spec), tl = (size_t)(colon - eq - 1);
    if (kl >= sizeof key || tl >= sizeof type) return usage_error("--set '%s': key or type too long", spec);
    memcpy(key, spec, kl), key[kl] = 0;
    memcpy(type, eq + 1, tl), type[tl] = 0;
    const char *val = colon + 1;
    if (strcmp(type, "str") == 0) return es_gguf_w_str(w, key, val), 0;
    if (strcmp(type, "bool") == 0) {
        if (strcmp(val, "true") && strcmp(val, "false") && strcmp(val, "1") && strcmp(val, "0"))
            return usage_error("--set '%s': bool wants true/false/1/0", spec);
        return es_gguf_w_bool(w, key, strcmp(val, "true") == 0 || strcmp(val, "1") == 0), 0;
    }
    if (strcmp(type, "f32") == 0 || strcmp(type, "f64") == 0) {
        double d;
        if (parse_f64(val, &d)) return usage_error("--set '%s': bad number", spec);
        return (type[1] == '3' ? es_gguf_w_f32(w, key, (float)d) : es_gguf_w_f64(w, key, d)), 0;
    }
    static const struct {
        const char *name;
        uint32_t vt;
        int64_t lo;
        uint64_t hi;
    } ints[] = {{"u8", GGUF_VT_UINT8, 0, UINT8_MAX},           {"i8", GGUF_VT_INT8, INT8_MIN, INT8_MAX},
                {"u16", GGUF_VT_UINT16, 0, UINT16_MAX},        {"i16", GGUF_VT_INT16, INT16_MIN, INT16_MAX},
                {"u32", GGUF_VT_UINT32, 0, UINT32_MAX},        {"i32", GGUF_VT_INT32, INT32_MIN, INT32_MAX},
                {"u64", GGUF_VT_UINT64, 0, (uint64_t)INT64_MAX}, {"i64", GGUF_VT_INT64, INT64_MIN, INT64_MAX}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if (strcmp(type, ints[i].name)) continue;
        int64_t x;
        if (parse_i64(val, &x) || x < ints[i].lo || (x > 0 && (uint64_t)x > ints[i].hi))
            return usage_error("--set '%s': integer missing or out of range", spec);
        es_gguf_value gv = {.type = ints[i].vt};
        if (ints[i].lo < 0) gv.v.i = x;
        else gv.v.u = (uint64_t)x;
        return es_gguf_w_value(w, key, &gv), 0;
    }
    return usage_error("--set '%s': unknown type (u8 i8 u16 i16 u32 i32 u64 i64 f32 f64 bool str)", spec);
}

/* ---- generation ----------------------------------------------------------------------------------------- */

static int64_t group_rows(const tplan *t) { return t->map == MAP_KB ? t->ne[1] : 1; }
static int64_t n_groups(const tplan *t) { return t->map == MAP_KB ? t->ne[2] : t->ne[1] * t->ne[2] * t->ne[3]; }
static size_t row_bytes(const tplan *t) { return es_row_bytes(t->type, t->ne[0]); }
static size_t group_bytes(const tplan *t) { return row_bytes(t) * (size_t)group_rows(t); }
/* floats of scratch fill() needs */
static size_t tmp_floats(const tplan *t) { return t->map == MAP_KB ? 2 * (size_t)(t->dn * t->R) : (size_t)t->ne[0]; }

/* Generates and converts groups [g0, g1) of t into dst. */
static int fill(const tplan *t, int64_t g0, int64_t g1, uint8_t *dst, float *tmp) {
    size_t rb = row_bytes(t);
    int64_t n = t->ne[0];
    if (t->map == MAP_KB) { /* one head per group: generate its dn kv_b rows, transpose */
        int64_t dn = t->dn, R = t->R;
        float *lg = tmp, *tr = tmp + dn * R;
        for (int64_t h = g0; h < g1; h++) {
            for (int64_t d = 0; d < dn; d++) gen_row(t->seed, h * (dn + t->dv) + d, R, 0, t->amp, lg + d * R);
            for (int64_t r = 0; r < R; r++)
                for (int64_t d = 0; d < dn; d++) tr[r * dn + d] = lg[d * R + r];
            for (int64_t r = 0; r < R; r++, dst += rb)
                if (es_quant_row(es_kernels_best(), t->type, tr + r * dn, dst, dn)) return -1;
        }
        return 0;
    }
    for (int64_t row = g0; row < g1; row++, dst += rb) {
        int64_t logical = t->map == MAP_VB ? row / t->dv * (t->dn + t->dv) + t->dn + row % t->dv : row;
        gen_row(t->seed, logical, n, t->offset, t->amp, tmp);
        if (es_quant_row(es_kernels_best(), t->type, tmp, dst, n)) return -1;
    }
    return 0;
}

typedef struct job {
    const tplan *t;
    int64_t g0, g1;
    uint8_t *dst;
    float *tmp;
    int rc;
} job;

static void *job_run(void *arg) {
    job *j = arg;
    j->rc = fill(j->t, j->g0, j->g1, j->dst, j->tmp);
    return NULL;
}

/* A contiguous run of groups of one tensor: one pipeline step. */
typedef struct slab {
    size_t ti;
    int64_t g0, g1;
    size_t bytes;
} slab;

typedef struct pool {
    int n_threads, n_jobs;
    job jobs[MAX_THREADS];
    pthread_t th[MAX_THREADS];
    int running[MAX_THREADS];
    float *tmp[MAX_THREADS];
} pool;

/* Starts generating slab s into buf on the worker threads. */
static void pool_start(pool *p, const plan *P, const slab *s, uint8_t *buf) {
    const tplan *t = &P->t[s->ti];
    int64_t ng = s->g1 - s->g0;
    p->n_jobs = ng < p->n_threads ? (int)ng : p->n_threads;
    for (int i = 0; i < p->n_jobs; i++) {
        int64_t a = s->g0 + ng * i / p->n_jobs, b = s->g0 + ng * (i + 1) / p->n_jobs;
        p->jobs[i] = (job){t, a, b, buf + (size_t)(a - s->g0) * group_bytes(t), p->tmp[i], 0};
        p->running[i] = pthread_create(&p->th[i], NULL, job_run, &p->jobs[i]) == 0;
        if (!p->running[i]) job_run(&p->jobs[i]); /* no thread: do it here */
    }
}

/* Waits for the slab started last; 0 or -1. */
static int pool_join(pool *p) {
    int rc = 0;
    for (int i = 0; i < p->n_jobs; i++) {
        if (p->running[i]) pthread_join(p->th[i], NULL);
        p->running[i] = 0;
        rc |= p->jobs[i].rc;
    }
    p->n_jobs = 0;
    return rc ? -1 : 0;
}

static int next_slab(const plan *P, size_t *ti, int64_t *g, size_t cap, slab *s) {
    for (; *ti < P->n; (*ti)++, *g = 0) {
        const tplan *t = &P->t[*ti];
        if (t->dropped || *g >= n_groups(t)) continue;
        int64_t per = (int64_t)(cap / group_bytes(t));
        if (per < 1) per = 1;
        s->ti = *ti, s->g0 = *g;
        s->g1 = *g + per < n_groups(t) ? *g + per : n_groups(t);
        s->bytes = (size_t)(s->g1 - s->g0) * group_bytes(t);
        *g = s->g1;
        return 1;
    }
    return 0;
}

/* SIGINT/SIGTERM stop the generation cleanly, so that the half-written file
 * is removed rather than left looking like a model. */
static volatile sig_atomic_t interrupted;
static void on_signal(int sig) { interrupted = sig; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Streams every tensor's data: workers fill one buffer while this thread
 * writes the other.  0, or -1 with the writer's error set / err filled. */
static int generate(es_gguf_writer *w, const plan *P, const cfg *c, uint64_t total, char *err, size_t errlen) {
    pool p = {.n_threads = (int)c->threads};
    size_t cap = (size_t)c->slab_kb << 10, tmpn = 1;
    for (size_t i = 0; i < P->n; i++) {
        if (P->t[i].dropped) continue;
        if (group_bytes(&P->t[i]) > cap) cap = group_bytes(&P->t[i]);
        if (tmp_floats(&P->t[i]) > tmpn) tmpn = tmp_floats(&P->t[i]);
    }
    uint8_t *buf[2] = {malloc(cap), malloc(cap)};
    int rc = buf[0] && buf[1] ? 0 : -1;
    for (int i = 0; i < p.n_threads; i++)
        if (!(p.tmp[i] = malloc(tmpn * sizeof(float)))) rc = -1;
    if (rc) {
        snprintf(err, errlen, "out of memory for the generation buffers");
        goto done;
    }
    size_t ti = 0;
    int64_t g = 0;
    slab cur, nxt;
    int have = next_slab(P, &ti, &g, cap, &cur);
    if (have) pool_start(&p, P, &cur, buf[0]);
    uint64_t written = 0;
    double t0 = now_s(), last = t0;
    for (int k = 0; have; k ^= 1) { /* buf[k] holds slab cur once joined */
        if (pool_join(&p)) {
            snprintf(err, errlen, "%s: conversion failed", P->t[cur.ti].name);
            rc = -1;
            break;
        }
        if (interrupted) {
            snprintf(err, errlen, "interrupted by signal %d; output removed", (int)interrupted);
            rc = -1;
            break;
        }
        int more = next_slab(P, &ti, &g, cap, &nxt);
        if (more) pool_start(&p, P, &nxt, buf[k ^ 1]);
        if (es_gguf_w_write(w, buf[k], cur.bytes)) {
            pool_join(&p);
            snprintf(err, errlen, "%s", es_gguf_w_error(w));
            rc = -1;
            break;
        }
        written += cur.bytes;
        double t = now_s();
        if (!c->quiet && t - last >= 2.0) {
            fprintf(stderr, "  %6.2f / %.2f GB (%3.0f%%)  %6.0f MB/s  %s\n", written / 1e9, total / 1e9,
                    total ? 100.0 * written / total : 100.0, written / 1e6 / (t - t0), P->t[cur.ti].name);
            last = t;
        }
        if (!more) break;
        cur = nxt;
    }
done:
    for (int i = 0; i < p.n_threads; i++) free(p.tmp[i]);
    free(buf[0]);
    free(buf[1]);
    return rc;
}

/* ---- main ------------------------------------------------------------------------------------------------ */

static int run(cfg *c) {
    char err[1024];
    if (validate(c, err, sizeof err)) {
        fprintf(stderr, "gen_model: %s\n", err);
        return 1;
    }
    if (c->threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->threads = n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : n;
    }
    uint32_t ftype = 0;
    for (size_t i = 0; i < sizeof wtypes / sizeof wtypes[0]; i++)
        if (wtypes[i].type == c->type) ftype = wtypes[i].ftype;

    int rc = 1;
    vocab v;
    plan P;
    es_gguf_writer *w = NULL;
    if (vocab_build(&v, c->vocab) || build_plan(&P, c)) {
        fprintf(stderr, "gen_model: out of memory (or a broken built-in merge table)\n");
        vocab_free(&v);
        free(P.t);
        return 1;
    }
    if (check_rows(&P, err, sizeof err)) {
        fprintf(stderr, "gen_model: %s\n", err);
        goto out;
    }
    for (int i = 0; i < c->n_drop_tensor; i++) {
        size_t k = 0;
        while (k < P.n && strcmp(P.t[k].name, c->drop_tensor[i])) k++;
        if (k == P.n) {
            fprintf(stderr, "gen_model: --drop-tensor: this model has no tensor '%s'\n", c->drop_tensor[i]);
            goto out;
        }
        P.t[k].dropped = 1;
    }
    if (!(w = es_gguf_writer_new())) {
        fprintf(stderr, "gen_model: out of memory\n");
        goto out;
    }
    write_meta(w, c, &v, ftype);
    for (int i = 0; i < c->n_set; i++)
        if ((rc = apply_set(w, c->set[i])) != 0) goto out;
    rc = 1;
    for (int i = 0; i < c->n_drop; i++) {
        if (!es_gguf_w_error(w)[0] && !strstr(c->drop[i], "=") && es_gguf_w_remove(w, c->drop[i]) == 0) continue;
        fprintf(stderr, "gen_model: --drop '%s' failed\n", c->drop[i]);
        goto out;
    }
    for (size_t i = 0; i < P.n; i++)
        if (!P.t[i].dropped) es_gguf_w_add_tensor(w, P.t[i].name, P.t[i].n_dims, P.t[i].ne, P.t[i].type);
    uint64_t size = es_gguf_w_file_size(w);
    if (!c->quiet)
        fprintf(stderr, "gen_model: %s: preset %s, %lld+%lld blocks, vocab %lld, %llu tensors, %.3f GB, %lld threads\n",
                c->out, c->preset ? c->preset : "tiny", (long long)c->layers, (long long)c->mtp,
                (long long)c->vocab, (unsigned long long)es_gguf_w_n_tensors(w), size / 1e9, (long long)c->threads);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    double t0 = now_s();
    if (es_gguf_w_open(w, c->out) || generate(w, &P, c, size, err, sizeof err) || es_gguf_w_finish(w, err, sizeof err)) {
        fprintf(stderr, "gen_model: %s\n", es_gguf_w_error(w)[0] ? es_gguf_w_error(w) : err);
        goto out;
    }
    double dt = now_s() - t0;
    if (!c->quiet)
        fprintf(stderr, "gen_model: wrote %s: %.3f GB in %.2f s (%.0f MB/s)\n", c->out, size / 1e9, dt,
                dt > 0 ? size / 1e6 / dt : 0.0);
    rc = 0;
out:
    es_gguf_writer_free(w); /* removes a half-written file */
    vocab_free(&v);
    free(P.t);
    return rc;
}

int main(int argc, char **argv) {
    if (es_std_fds_guard() != 0) return 1; /* before anything is opened */
    cfg c;
    int rc = parse_args(&c, argc, argv);
    if (rc == -1) return 0;
    if (rc) return rc;
    return run(&c);
}
