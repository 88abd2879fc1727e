/* gen_hf.c — build/gen_hf: writes a synthetic Hugging Face DeepSeek
 * checkpoint from a deepseek2 GGUF (one gen_model wrote), for the tests of
 * `edgeseek convert`.
 *
 *   gen_hf IN.gguf OUTDIR [--fp8] [--block R C] [--shards N] [--ref REF.gguf]
 *          [--arch NAME] [--mutate KIND[:TENSOR]]...
 *
 * OUTDIR gets config.json (the GGUF's hyperparameters under Hugging Face's
 * names), model-0000K-of-0000N.safetensors shards and
 * model.safetensors.index.json (or model.safetensors when --shards 1),
 * tokenizer.json and tokenizer_config.json (the GGUF's vocabulary).  Tensors
 * are stored as DeepSeek stores them: BF16, or with --fp8 every linear
 * weight of the layers as F8_E4M3 with a float32 weight_scale_inv per R x C
 * block (default 128 x 128; the scale grid ceil(rows/R) x ceil(cols/C),
 * edge blocks partial), the embeddings, lm_head and router BF16, the gate
 * bias F32.  kv_b_proj is rebuilt from attn_k_b / attn_v_b, experts are
 * split out of the stacked ffn_*_exps.
 *
 * Without --ref or --mutate the tensors are streamed: each is read from the
 * GGUF, encoded and written in turn, so memory holds one tensor whatever the
 * model's size (V2-Lite's shape: about 16 GB of FP8 from its Q4_0 GGUF).
 *
 * --ref writes the GGUF again with every tensor replaced by the weights the
 * checkpoint actually holds, dequantised to F32: what a correct converter
 * must reproduce.
 *
 * --mutate breaks the checkpoint for the error tests: drop:T (tensor T left
 * out), dup:T (T written in two shards), shape:T (T's shape transposed in
 * its header), noscale:T (T's weight_scale_inv left out), nofp8cfg (no
 * quantization_config although FP8 tensors are present).
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gguf.h"
#include "gguf_writer.h"
#include "kernels.h"
#include "quant.h"

#define MAX_MUT 16

enum dt { DT_BF16, DT_F32, DT_FP8 };

typedef struct hft {
    char name[160];
    int nd;
    int64_t rows, cols; /* nd 1: rows 1 */
    enum dt dt;
    float *w;       /* the values; replaced by what the stored form decodes to */
    uint8_t *bytes; /* the stored form */
    size_t nbytes;
    float *scale; /* FP8: grid of block scales */
    int64_t gr, gc;
    int shard;
    /* where w comes from when it is filled late (streaming: no --ref): the
     * GGUF tensor, the expert (-1: none); kv_b_proj: src2 = attn_v_b */
    const es_gguf_tensor *src, *src2;
    int64_t expert;
} hft;

typedef struct gen {
    es_gguf_ctx *g;
    hft *t;
    size_t n, cap;
    int fp8, shards;
    int64_t br, bc;
    const char *mut[MAX_MUT];
    int n_mut;
    int64_t H, R, dn, dv;
    int stream; /* no --ref: each tensor is built, written and freed in turn */
} gen;

static int die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "gen_hf: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static int64_t meta_int(const gen *G, const char *key, int64_t def) {
    int64_t v;
    char k[128];
    snprintf(k, sizeof k, "deepseek2.%s", key);
    return es_gguf_get_int(G->g, k, &v) == 1 ? v : def;
}

static double meta_f(const gen *G, const char *key, double def) {
    double v;
    char k[128];
    snprintf(k, sizeof k, "deepseek2.%s", key);
    return es_gguf_get_float(G->g, k, &v) == 1 ? v : def;
}

/* "KIND:name" mutation for this tensor? */
static int mutated(const gen *G, const char *kind, const char *name) {
    size_t kl = strlen(kind);
    for (int i = 0; i < G->n_mut; i++)
        if (!strncmp(G->mut[i], kind, kl) && (!name ? G->mut[i][kl] == 0 : G->mut[i][kl] == ':' && !strcmp(G->mut[i] + kl + 1, name)))
            return 1;
    return 0;
}

static hft *add(gen *G, const char *name, int nd, int64_t rows, int64_t cols) {
    if (G->n == G->cap) {
        G->cap = G->cap ? 2 * G->cap : 256;
        if (!(G->t = realloc(G->t, G->cap * sizeof *G->t))) die("out of memory");
    }
    hft *t = &G->t[G->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->nd = nd, t->rows = rows, t->cols = cols;
    t->expert = -1;
    if (!G->stream && !(t->w = malloc(sizeof(float) * (size_t)(rows * cols)))) die("out of memory");
    return t;
}

/* Rows [r0, r0 + rows) of a GGUF tensor (rows counted over all its
 * dimensions past the first), dequantised to float32. */
static float *gguf_rows(const es_gguf_tensor *t, int64_t r0, int64_t rows) {
    int64_t n = t->ne[0];
    float *f = malloc(sizeof(float) * (size_t)(n * rows));
    if (!f) die("out of memory");
    size_t rb = es_row_bytes(t->type, n);
    for (int64_t r = 0; r < rows; r++)
        if (es_dequant_row(es_kernels_best(), t->type, t->data + (r0 + r) * rb, f + r * n, n)) die("%s: type not readable", t->name);
    return f;
}
static float *gguf_f32(const es_gguf_tensor *t) { return gguf_rows(t, 0, t->ne[1] * t->ne[2] * t->ne[3]); }

/* GGUF name (past "blk.N.") -> the Hugging Face name within model.layers.N. */
static const char *const names[][2] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_q_a.weight", "self_attn.q_a_proj.weight"},
    {"attn_q_a_norm.weight", "self_attn.q_a_layernorm.weight"},
    {"attn_q_b.weight", "self_attn.q_b_proj.weight"},
    {"attn_kv_a_mqa.weight", "self_attn.kv_a_proj_with_mqa.weight"},
    {"attn_kv_a_norm.weight", "self_attn.kv_a_layernorm.weight"},
    {"attn_kv_b.weight", "self_attn.kv_b_proj.weight"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
    {"ffn_gate_inp.weight", "mlp.gate.weight"},
    {"exp_probs_b.bias", "mlp.gate.e_score_correction_bias"},
    {"ffn_gate_shexp.weight", "mlp.shared_experts.gate_proj.weight"},
    {"ffn_up_shexp.weight", "mlp.shared_experts.up_proj.weight"},
    {"ffn_down_shexp.weight", "mlp.shared_experts.down_proj.weight"},
    {"ffn_gate_exps.weight", "mlp.experts.%d.gate_proj.weight"},
    {"ffn_up_exps.weight", "mlp.experts.%d.up_proj.weight"},
    {"ffn_down_exps.weight", "mlp.experts.%d.down_proj.weight"},
    {"nextn.eh_proj.weight", "eh_proj.weight"},
    {"nextn.embed_tokens.weight", "embed_tokens.weight"},
    {"nextn.enorm.weight", "enorm.weight"},
    {"nextn.hnorm.weight", "hnorm.weight"},
    {"nextn.shared_head_norm.weight", "shared_head.norm.weight"},
    {"nextn.shared_head_head.weight", "shared_head.head.weight"},
    {"attn_k_b.weight", "self_attn.kv_b_proj.weight"},
    {"attn_v_b.weight", "self_attn.kv_b_proj.weight"},
};

/* The Hugging Face name of a GGUF tensor (a format with %d for experts). */
static int hf_name(const char *gg, char *out, size_t n) {
    int il, off = 0;
    if (!strcmp(gg, "token_embd.weight")) return snprintf(out, n, "model.embed_tokens.weight"), 0;
    if (!strcmp(gg, "output_norm.weight")) return snprintf(out, n, "model.norm.weight"), 0;
    if (!strcmp(gg, "output.weight")) return snprintf(out, n, "lm_head.weight"), 0;
    if (sscanf(gg, "blk.%d.%n", &il, &off) != 1 || !off) return -1;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(gg + off, names[i][0])) return snprintf(out, n, "model.layers.%d.%s", il, names[i][1]), 0;
    return -1;
}

static hft *find(gen *G, const char *name) {
    for (size_t i = 0; i < G->n; i++)
        if (!strcmp(G->t[i].name, name)) return &G->t[i];
    return NULL;
}

/* kv_b_proj's rows from attn_k_b or attn_v_b (t, its values f) */
static void fill_kvb(const gen *G, hft *h, const es_gguf_tensor *t, const float *f) {
    const int64_t H = G->H, R = G->R, dn = G->dn, dv = G->dv;
    int kb = strstr(t->name, "attn_k_b") != NULL;
    for (int64_t hd = 0; hd < H; hd++)
        if (kb)
            for (int64_t r = 0; r < R; r++)
                for (int64_t d = 0; d < dn; d++) h->w[(hd * (dn + dv) + d) * R + r] = f[(hd * R + r) * dn + d];
        else
            for (int64_t j = 0; j < dv; j++)
                memcpy(h->w + (hd * (dn + dv) + dn + j) * R, f + (hd * dv + j) * R, sizeof(float) * (size_t)R);
}

/* A streamed tensor's values, read from the GGUF when it is written. */
static void materialise(const gen *G, hft *h) {
    if (h->w) return;
    if (h->src2) {
        if (!(h->w = malloc(sizeof(float) * (size_t)(h->rows * h->cols)))) die("out of memory");
        const es_gguf_tensor *s[2] = {h->src, h->src2};
        for (int i = 0; i < 2; i++) {
            float *f = gguf_f32(s[i]);
            fill_kvb(G, h, s[i], f);
            free(f);
        }
    } else {
        h->w = gguf_rows(h->src, h->expert < 0 ? 0 : h->expert * h->rows, h->rows);
    }
}

/* The checkpoint's tensors from the GGUF's (streaming: where each comes from). */
static void collect(gen *G) {
    es_gguf_ctx *g = G->g;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const es_gguf_tensor *t = &g->tensors[i];
        char hn[160];
        if (hf_name(t->name, hn, sizeof hn)) die("%s: no Hugging Face name known", t->name);
        float *f = G->stream ? NULL : gguf_f32(t);
        int64_t n = t->ne[0], rows = t->ne[1];
        if (strstr(t->name, "_exps.")) {
            for (int64_t e = 0; e < t->ne[2]; e++) {
                char en[160];
                snprintf(en, sizeof en, hn, (int)e);
                hft *h = add(G, en, 2, rows, n);
                h->src = t, h->expert = e;
                if (f) memcpy(h->w, f + e * rows * n, sizeof(float) * (size_t)(rows * n));
            }
        } else if (strstr(t->name, "attn_k_b") || strstr(t->name, "attn_v_b")) {
            hft *h = find(G, hn);
            if (!h) h = add(G, hn, 2, G->H * (G->dn + G->dv), G->R), h->src = t;
            else h->src2 = t;
            if (f) fill_kvb(G, h, t, f);
        } else {
            hft *h = add(G, hn, t->n_dims == 1 ? 1 : 2, t->n_dims == 1 ? 1 : rows, n);
            h->src = t;
            if (f) memcpy(h->w, f, sizeof(float) * (size_t)(rows * n));
        }
        free(f);
    }
}

/* e4m3 values of the codes 0..126 (ascending) */
static float e4m3[127];

static void e4m3_init(void) {
    for (int b = 0; b < 127; b++) {
        int e = b >> 3, m = b & 7;
        e4m3[b] = e ? ldexpf(1.0f + (float)m / 8.0f, e - 7) : ldexpf((float)m / 8.0f, -6);
    }
}

/* Nearest code (ties to the even code), saturating at 448: in the
 * subnormal range the multiple of 2^-9, above it the mantissa of a's binade
 * rounded to 3 bits (rintf: ties to even, and a code's parity is its
 * mantissa's); a mantissa that rounds up to 16 is the next binade's 8. */
static uint8_t to_e4m3(float x) {
    uint8_t s = x < 0 ? 0x80 : 0;
    float a = fabsf(x);
    int c;
    if (!(a < 448.0f)) {
        c = 126;
    } else if (a < 0.015625f) {
        c = (int)rintf(a * 512.0f);
    } else {
        int E;
        frexpf(a, &E); /* a = f * 2^E, f in [0.5, 1): binade 2^(E-1) */
        c = ((E - 1 + 7) << 3) + (int)rintf(ldexpf(a, 4 - E)) - 8;
        if (c > 126) c = 126;
    }
    return (uint8_t)(s | c);
}

static int is_fp8(const gen *G, const hft *t) {
    if (!G->fp8 || t->nd != 2) return 0;
    return !strstr(t->name, "embed_tokens") && !strstr(t->name, "lm_head") && !strstr(t->name, "mlp.gate.weight") &&
           !strstr(t->name, "shared_head.head");
}

/* The stored form's dtype and size. */
static void plan(const gen *G, hft *t) {
    size_t n = (size_t)(t->rows * t->cols);
    if (strstr(t->name, "e_score_correction_bias")) {
        t->dt = DT_F32, t->nbytes = 4 * n;
    } else if (is_fp8(G, t)) {
        t->dt = DT_FP8, t->nbytes = n;
        t->gr = (t->rows + G->br - 1) / G->br, t->gc = (t->cols + G->bc - 1) / G->bc;
    } else {
        t->dt = DT_BF16, t->nbytes = 2 * n;
    }
}

/* The stored form, and w replaced by what it decodes to. */
static void encode(const gen *G, hft *t) {
    size_t n = (size_t)(t->rows * t->cols);
    if (t->dt == DT_F32) {
        if (!(t->bytes = malloc(t->nbytes))) die("out of memory");
        memcpy(t->bytes, t->w, t->nbytes);
    } else if (t->dt == DT_FP8) {
        t->bytes = malloc(n);
        t->scale = malloc(sizeof(float) * (size_t)(t->gr * t->gc));
        if (!t->bytes || !t->scale) die("out of memory");
        for (int64_t bi = 0; bi < t->gr; bi++)
            for (int64_t bj = 0; bj < t->gc; bj++) {
                int64_t r1 = (bi + 1) * G->br < t->rows ? (bi + 1) * G->br : t->rows;
                int64_t c1 = (bj + 1) * G->bc < t->cols ? (bj + 1) * G->bc : t->cols;
                float amax = 0;
                for (int64_t r = bi * G->br; r < r1; r++)
                    for (int64_t c = bj * G->bc; c < c1; c++) amax = fmaxf(amax, fabsf(t->w[r * t->cols + c]));
                float sc = amax > 0 ? amax / 448.0f : 1.0f;
                t->scale[bi * t->gc + bj] = sc;
                for (int64_t r = bi * G->br; r < r1; r++)
                    for (int64_t c = bj * G->bc; c < c1; c++) {
                        uint8_t q = to_e4m3(t->w[r * t->cols + c] / sc);
                        t->bytes[r * t->cols + c] = q;
                        float v = e4m3[q & 0x7f];
                        t->w[r * t->cols + c] = (q & 0x80 ? -v : v) * sc;
                    }
            }
    } else {
        uint16_t *b = malloc(t->nbytes);
        if (!b) die("out of memory");
        for (size_t i = 0; i < n; i++) {
            b[i] = es_f32_to_bf16(t->w[i]);
            t->w[i] = es_bf16_to_f32(b[i]);
        }
        t->bytes = (uint8_t *)b;
    }
}

/* ---- JSON output ---------------------------------------------------------------------- */

static void jstr(FILE *f, const char *s, size_t len) {
    fputc('"', f);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}
static void jcstr(FILE *f, const char *s) { jstr(f, s, strlen(s)); }

static FILE *create(const char *dir, const char *file) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    FILE *f = fopen(p, "wb");
    if (!f) die("cannot create %s", p);
    return f;
}

static void write_config(gen *G, const char *dir, const char *arch) {
    FILE *f = create(dir, "config.json");
    int64_t nextn = meta_int(G, "nextn_predict_layers", 0), gating = meta_int(G, "expert_gating_func", 1);
    int bias = 0;
    for (size_t i = 0; i < G->n; i++) bias |= strstr(G->t[i].name, "e_score_correction_bias") != NULL;
    int v3 = gating == 2 || bias;
    if (!arch) arch = v3 ? "DeepseekV3ForCausalLM" : "DeepseekV2ForCausalLM";
    fprintf(f, "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n", arch, v3 ? "deepseek_v3" : "deepseek_v2");
    const es_gguf_tensor *te = es_gguf_find_tensor(G->g, "token_embd.weight");
    int64_t rope = meta_int(G, "rope.dimension_count", 0), q_lora = meta_int(G, "attention.q_lora_rank", 0);
    const struct {
        const char *hf;
        int64_t v;
    } ints[] = {
        {"vocab_size", te ? te->ne[1] : 0},
        {"hidden_size", meta_int(G, "embedding_length", 0)},
        {"num_hidden_layers", meta_int(G, "block_count", 0) - nextn},
        {"num_nextn_predict_layers", nextn},
        {"intermediate_size", meta_int(G, "feed_forward_length", 0)},
        {"moe_intermediate_size", meta_int(G, "expert_feed_forward_length", 0)},
        {"num_attention_heads", G->H},
        {"num_key_value_heads", G->H},
        {"kv_lora_rank", G->R},
        {"qk_nope_head_dim", G->dn},
        {"qk_rope_head_dim", rope},
        {"v_head_dim", G->dv},
        {"n_routed_experts", meta_int(G, "expert_count", 0)},
        {"num_experts_per_tok", meta_int(G, "expert_used_count", 0)},
        {"n_shared_experts", meta_int(G, "expert_shared_count", 0)},
        {"first_k_dense_replace", meta_int(G, "leading_dense_block_count", 0)},
        {"moe_layer_freq", 1},
        {"n_group", meta_int(G, "expert_group_count", 1)},
        {"topk_group", meta_int(G, "expert_group_used_count", 1)},
        {"max_position_embeddings", meta_int(G, "context_length", 0)},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) fprintf(f, "  \"%s\": %lld,\n", ints[i].hf, (long long)ints[i].v);
    if (q_lora) fprintf(f, "  \"q_lora_rank\": %lld,\n", (long long)q_lora);
    else fprintf(f, "  \"q_lora_rank\": null,\n");
    int norm = 0;
    es_gguf_get_bool(G->g, "deepseek2.expert_weights_norm", &norm);
    fprintf(f, "  \"rms_norm_eps\": %.9g,\n  \"rope_theta\": %.9g,\n  \"routed_scaling_factor\": %.9g,\n",
            meta_f(G, "attention.layer_norm_rms_epsilon", 1e-6), meta_f(G, "rope.freq_base", 10000),
            meta_f(G, "expert_weights_scale", 1));
    fprintf(f, "  \"norm_topk_prob\": %s,\n  \"scoring_func\": \"%s\",\n  \"topk_method\": \"%s\",\n",
            norm ? "true" : "false", gating == 2 ? "sigmoid" : "softmax", bias ? "noaux_tc" : "greedy");
    es_gguf_str st;
    if (es_gguf_get_str(G->g, "deepseek2.rope.scaling.type", &st) == 1 && es_gguf_str_eq(st, "yarn")) {
        double ms = meta_f(G, "rope.scaling.yarn_log_multiplier", 0) / 0.1;
        fprintf(f, "  \"rope_scaling\": {\"type\": \"yarn\", \"factor\": %.9g, \"original_max_position_embeddings\": %lld, "
                   "\"beta_fast\": %.9g, \"beta_slow\": %.9g, \"mscale\": %.17g, \"mscale_all_dim\": %.17g},\n",
                meta_f(G, "rope.scaling.factor", 1), (long long)meta_int(G, "rope.scaling.original_context_length", 4096),
                meta_f(G, "rope.scaling.yarn_beta_fast", 32), meta_f(G, "rope.scaling.yarn_beta_slow", 1), ms, ms);
    } else {
        fprintf(f, "  \"rope_scaling\": null,\n");
    }
    if (G->fp8 && !mutated(G, "nofp8cfg", NULL))
        fprintf(f, "  \"quantization_config\": {\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\", "
                   "\"quant_method\": \"fp8\", \"weight_block_size\": [%lld, %lld]},\n",
                (long long)G->br, (long long)G->bc);
    fprintf(f, "  \"hidden_act\": \"silu\",\n  \"tie_word_embeddings\": false,\n  \"torch_dtype\": \"bfloat16\"\n}\n");
    fclose(f);
}

static const char *const v3_split[] = {
    "\\p{N}{1,3}",
    "[\xe4\xb8\x80-\xe9\xbe\xa5\xe3\x81\x80-\xe3\x82\x9f\xe3\x82\xa0-\xe3\x83\xbf]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
    "?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
};
static const char *const llm_split[] = {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "\\p{N}+"};

static void write_tokenizer(gen *G, const char *dir) {
    const es_gguf_kv *tk = es_gguf_find_kv(G->g, "tokenizer.ggml.tokens");
    const es_gguf_kv *ty = es_gguf_find_kv(G->g, "tokenizer.ggml.token_type");
    const es_gguf_kv *mg = es_gguf_find_kv(G->g, "tokenizer.ggml.merges");
    if (!tk || !ty || !mg) die("the GGUF has no tokenizer");
    uint64_t n = tk->val.v.arr.n;
    int32_t *types = malloc(sizeof(int32_t) * (size_t)(n ? n : 1)); /* the file's array may be unaligned */
    if (!types || ty->val.v.arr.n != n) die("bad tokenizer.ggml.token_type");
    memcpy(types, ty->val.v.arr.data, sizeof(int32_t) * (size_t)n);
    es_gguf_str pre;
    int v3 = es_gguf_get_str(G->g, "tokenizer.ggml.pre", &pre) != 1 || es_gguf_str_eq(pre, "deepseek-v3");
    FILE *f = create(dir, "tokenizer.json");
    fprintf(f, "{\"version\": \"1.0\", \"added_tokens\": [");
    int first = 1;
    for (uint64_t i = 0; i < n; i++) {
        if (types[i] != 3 && types[i] != 4) continue;
        fprintf(f, "%s\n  {\"id\": %llu, \"content\": ", first ? "" : ",", (unsigned long long)i);
        jstr(f, tk->val.v.arr.strs[i].ptr, tk->val.v.arr.strs[i].len);
        fprintf(f, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": %s, \"special\": %s}",
                types[i] == 3 ? "false" : "true", types[i] == 3 ? "true" : "false");
        first = 0;
    }
    fprintf(f, "],\n \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": []},\n"
               " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [");
    const char *const *sp = v3 ? v3_split : llm_split;
    int nsp = v3 ? 3 : 4;
    for (int i = 0; i < nsp; i++) {
        fprintf(f, "%s{\"type\": \"Split\", \"pattern\": {\"Regex\": ", i ? ", " : "");
        jcstr(f, sp[i]);
        fprintf(f, "}, \"behavior\": \"Isolated\", \"invert\": false}");
    }
    fprintf(f, ", {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": false}]},\n"
               " \"decoder\": {\"type\": \"ByteLevel\"},\n"
               " \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"vocab\": {");
    first = 1;
    for (uint64_t i = 0; i < n; i++) {
        if (types[i] != 1) continue;
        fprintf(f, "%s\n  ", first ? "" : ",");
        jstr(f, tk->val.v.arr.strs[i].ptr, tk->val.v.arr.strs[i].len);
        fprintf(f, ": %llu", (unsigned long long)i);
        first = 0;
    }
    fprintf(f, "},\n  \"merges\": [");
    for (uint64_t i = 0; i < mg->val.v.arr.n; i++) {
        fprintf(f, "%s\n  ", i ? "," : "");
        /* every other merge as a pair, as newer tokenizer.json files write them */
        const es_gguf_str *m = &mg->val.v.arr.strs[i];
        const char *sp2 = memchr(m->ptr, ' ', m->len);
        if (i % 2 && sp2) {
            fputc('[', f);
            jstr(f, m->ptr, (size_t)(sp2 - m->ptr));
            fputs(", ", f);
            jstr(f, sp2 + 1, m->len - (size_t)(sp2 - m->ptr) - 1);
            fputc(']', f);
        } else {
            jstr(f, m->ptr, m->len);
        }
    }
    fprintf(f, "]}}\n");
    fclose(f);
    f = create(dir, "tokenizer_config.json");
    int64_t bos = -1, eos = -1;
    es_gguf_get_int(G->g, "tokenizer.ggml.bos_token_id", &bos);
    es_gguf_get_int(G->g, "tokenizer.ggml.eos_token_id", &eos);
    int add_bos = 0, add_eos = 0;
    es_gguf_get_bool(G->g, "tokenizer.ggml.add_bos_token", &add_bos);
    es_gguf_get_bool(G->g, "tokenizer.ggml.add_eos_token", &add_eos);
    fprintf(f, "{\"add_bos_token\": %s, \"add_eos_token\": %s", add_bos ? "true" : "false", add_eos ? "true" : "false");
    if (bos >= 0 && (uint64_t)bos < n) {
        fprintf(f, ", \"bos_token\": {\"__type\": \"AddedToken\", \"content\": ");
        jstr(f, tk->val.v.arr.strs[bos].ptr, tk->val.v.arr.strs[bos].len);
        fprintf(f, "}");
    }
    if (eos >= 0 && (uint64_t)eos < n) {
        fprintf(f, ", \"eos_token\": ");
        jstr(f, tk->val.v.arr.strs[eos].ptr, tk->val.v.arr.strs[eos].len);
    }
    es_gguf_str tmpl;
    if (es_gguf_get_str(G->g, "tokenizer.chat_template", &tmpl) == 1) {
        fprintf(f, ", \"chat_template\": ");
        jstr(f, tmpl.ptr, tmpl.len);
    }
    fprintf(f, "}\n");
    fclose(f);
    free(types);
}

/* ---- shards -------------------------------------------------------------------------- */

static void header_entry(FILE *f, const char *name, const char *dtype, int nd, int64_t a, int64_t b, uint64_t off,
                         uint64_t len, int first) {
    fprintf(f, "%s", first ? "" : ",");
    jcstr(f, name);
    if (nd == 1) fprintf(f, ":{\"dtype\":\"%s\",\"shape\":[%lld],", dtype, (long long)b);
    else fprintf(f, ":{\"dtype\":\"%s\",\"shape\":[%lld,%lld],", dtype, (long long)a, (long long)b);
    fprintf(f, "\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)(off + len));
}

static void shard_file(const gen *G, int k, char *buf, size_t n) {
    if (G->shards == 1) snprintf(buf, n, "model.safetensors");
    else snprintf(buf, n, "model-%05d-of-%05d.safetensors", k + 1, G->shards);
}

static void write_shards(gen *G, const char *dir) {
    static const char *dtn[] = {"BF16", "F32", "F8_E4M3"};
    for (int k = 0; k < G->shards; k++) {
        char *hdr = NULL;
        size_t hlen = 0;
        FILE *h = open_memstream(&hdr, &hlen);
        if (!h) die("out of memory");
        fprintf(h, "{\"__metadata__\":{\"format\":\"pt\"}");
        uint64_t off = 0;
        for (size_t i = 0; i < G->n; i++) {
            hft *t = &G->t[i];
            int here = t->shard == k || (mutated(G, "dup", t->name) && (t->shard + 1) % G->shards == k);
            if (!here || mutated(G, "drop", t->name)) continue;
            int sw = mutated(G, "shape", t->name);
            header_entry(h, t->name, dtn[t->dt], t->nd, sw ? t->cols : t->rows, sw ? t->rows : t->cols, off, t->nbytes, 0);
            off += t->nbytes;
            if (t->dt == DT_FP8 && !mutated(G, "noscale", t->name)) {
                char sn[200];
                snprintf(sn, sizeof sn, "%s_scale_inv", t->name);
                header_entry(h, sn, "F32", 2, t->gr, t->gc, off, 4 * (uint64_t)(t->gr * t->gc), 0);
                off += 4 * (uint64_t)(t->gr * t->gc);
            }
        }
        fprintf(h, "}");
        fclose(h);
        while (hlen % 8) hdr[hlen++] = ' ', hdr = realloc(hdr, hlen + 1); /* padded with spaces, as writers do */
        char fn[64];
        shard_file(G, k, fn, sizeof fn);
        FILE *f = create(dir, fn);
        uint8_t lb[8];
        for (int b = 0; b < 8; b++) lb[b] = (uint8_t)((uint64_t)hlen >> (8 * b));
        fwrite(lb, 1, 8, f);
        fwrite(hdr, 1, hlen, f);
        for (size_t i = 0; i < G->n; i++) {
            hft *t = &G->t[i];
            int here = t->shard == k || (mutated(G, "dup", t->name) && (t->shard + 1) % G->shards == k);
            if (!here || mutated(G, "drop", t->name)) continue;
            if (!t->bytes) materialise(G, t), encode(G, t);
            fwrite(t->bytes, 1, t->nbytes, f);
            if (t->dt == DT_FP8 && !mutated(G, "noscale", t->name)) fwrite(t->scale, 4, (size_t)(t->gr * t->gc), f);
            if (G->stream) {
                free(t->w), free(t->bytes), free(t->scale);
                t->w = NULL, t->bytes = NULL, t->scale = NULL;
            }
        }
        if (fclose(f)) die("write error in %s", fn);
        free(hdr);
    }
    if (G->shards == 1) return;
    FILE *f = create(dir, "model.safetensors.index.json");
    fprintf(f, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
    int first = 1;
    for (size_t i = 0; i < G->n; i++) {
        hft *t = &G->t[i];
        if (mutated(G, "drop", t->name)) continue;
        char fn[64];
        shard_file(G, t->shard, fn, sizeof fn);
        fprintf(f, "%s\n  \"%s\": \"%s\"", first ? "" : ",", t->name, fn);
        if (t->dt == DT_FP8 && !mutated(G, "noscale", t->name)) fprintf(f, ",\n  \"%s_scale_inv\": \"%s\"", t->name, fn);
        first = 0;
    }
    fprintf(f, "\n}}\n");
    fclose(f);
}

/* ---- the reference GGUF ---------------------------------------------------------------- */

static void write_ref(gen *G, const char *path) {
    es_gguf_writer *w = es_gguf_writer_new();
    es_gguf_ctx *g = G->g;
    for (uint64_t i = 0; i < g->n_kv; i++) es_gguf_w_value(w, g->kv[i].key, &g->kv[i].val);
    es_gguf_w_u32(w, "general.file_type", 0);
    for (uint64_t i = 0; i < g->n_tensors; i++)
        es_gguf_w_add_tensor(w, g->tensors[i].name, g->tensors[i].n_dims, g->tensors[i].ne, ES_TYPE_F32);
    if (es_gguf_w_open(w, path)) die("%s", es_gguf_w_error(w));
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const es_gguf_tensor *t = &g->tensors[i];
        char hn[160];
        hf_name(t->name, hn, sizeof hn);
        int64_t n = t->ne[0], rows = t->ne[1];
        if (strstr(t->name, "_exps.")) {
            for (int64_t e = 0; e < t->ne[2]; e++) {
                char en[160];
                snprintf(en, sizeof en, hn, (int)e);
                es_gguf_w_write(w, find(G, en)->w, sizeof(float) * (size_t)(rows * n));
            }
        } else if (strstr(t->name, "attn_k_b") || strstr(t->name, "attn_v_b")) {
            const hft *h = find(G, hn);
            const int64_t H = G->H, R = G->R, dn = G->dn, dv = G->dv;
            float *row = malloc(sizeof(float) * (size_t)(R > dn ? R : dn));
            for (int64_t hd = 0; hd < H; hd++) {
                if (strstr(t->name, "attn_k_b"))
                    for (int64_t r = 0; r < R; r++) {
                        for (int64_t d = 0; d < dn; d++) row[d] = h->w[(hd * (dn + dv) + d) * R + r];
                        es_gguf_w_write(w, row, sizeof(float) * (size_t)dn);
                    }
                else
                    for (int64_t j = 0; j < dv; j++) es_gguf_w_write(w, h->w + (hd * (dn + dv) + dn + j) * R, sizeof(float) * (size_t)R);
            }
            free(row);
        } else {
            es_gguf_w_write(w, find(G, hn)->w, sizeof(float) * (size_t)(rows * n));
        }
    }
    char err[512];
    if (es_gguf_w_finish(w, err, sizeof err)) die("%s", err);
    es_gguf_writer_free(w);
}

int main(int argc, char **argv) {
    gen G = {.shards = 3, .br = 128, .bc = 128};
    const char *in = NULL, *dir = NULL, *ref = NULL, *arch = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--fp8")) G.fp8 = 1;
        else if (!strcmp(argv[i], "--shards") && i + 1 < argc) G.shards = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--block") && i + 2 < argc) G.br = atoll(argv[++i]), G.bc = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--ref") && i + 1 < argc) ref = argv[++i];
        else if (!strcmp(argv[i], "--arch") && i + 1 < argc) arch = argv[++i];
        else if (!strcmp(argv[i], "--mutate") && i + 1 < argc && G.n_mut < MAX_MUT) G.mut[G.n_mut++] = argv[++i];
        else if (argv[i][0] == '-') die("unknown option %s (see the opening comment of tools/gen_hf.c)", argv[i]);
        else if (!in) in = argv[i];
        else if (!dir) dir = argv[i];
        else die("too many arguments");
    }
    if (!in || !dir || G.shards < 1 || G.br < 1 || G.bc < 1)
        die("usage: gen_hf IN.gguf OUTDIR [--fp8] [--block R C] [--shards N] [--ref REF.gguf] [--arch NAME] [--mutate KIND[:T]]");
    char err[512];
    if (es_gguf_open_file(in, &G.g, err, sizeof err)) die("%s", err);
    int64_t kl = meta_int(&G, "attention.key_length_mla", meta_int(&G, "attention.key_length", 0));
    G.H = meta_int(&G, "attention.head_count", 0), G.R = meta_int(&G, "attention.kv_lora_rank", 0);
    G.dn = kl - meta_int(&G, "attention.rope.dimension_count", meta_int(&G, "rope.dimension_count", 0));
    G.dv = meta_int(&G, "attention.value_length_mla", meta_int(&G, "attention.value_length", 0));
    e4m3_init();
    G.stream = !ref && !G.n_mut; /* a large model: one tensor in memory at a time */
    collect(&G);
    if ((size_t)G.shards > G.n) G.shards = (int)G.n;
    for (size_t i = 0; i < G.n; i++) {
        plan(&G, &G.t[i]);
        if (!G.stream) materialise(&G, &G.t[i]), encode(&G, &G.t[i]);
        G.t[i].shard = (int)(i * (size_t)G.shards / G.n);
    }
    mkdir(dir, 0755);
    write_config(&G, dir, arch);
    write_tokenizer(&G, dir);
    write_shards(&G, dir);
    if (ref) write_ref(&G, ref);
    for (size_t i = 0; i < G.n; i++) free(G.t[i].w), free(G.t[i].bytes), free(G.t[i].scale);
    free(G.t);
    es_gguf_close(G.g);
    return 0;
}
