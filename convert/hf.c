/* hf.c — `edgeseek convert`: a Hugging Face DeepSeek V2/V3 checkpoint to a
 * deepseek2 GGUF (convert.h).
 *
 * Owns: reading config.json (every hyperparameter the forward pass uses,
 * YaRN rope_scaling, quantization_config), the plan of output tensors under
 * llama.cpp's names, each with the checkpoint tensors it comes from and
 * their expected shapes, the checks of the checkpoint against that plan
 * (every tensor present once, in its dtype and shape, nothing left over),
 * the metadata keys, FP8 e4m3 decoding with its block scales, and the
 * streaming of every tensor through format/quantize.c's row converters into
 * format/gguf_writer.c, with a progress line.
 *
 * Names (HF -> GGUF): model.embed_tokens -> token_embd, model.norm ->
 * output_norm, lm_head -> output; per layer input_layernorm -> attn_norm,
 * post_attention_layernorm -> ffn_norm, self_attn.{q_proj, q_a_proj,
 * q_a_layernorm, q_b_proj, kv_a_proj_with_mqa, kv_a_layernorm, o_proj} ->
 * attn_{q, q_a, q_a_norm, q_b, kv_a_mqa, kv_a_norm, output}, kv_b_proj ->
 * attn_k_b (per head, the nope rows transposed: [dn, R, H]) and attn_v_b
 * (per head, the v rows: [R, dv, H]) as llama.cpp's converter splits it,
 * mlp.{gate,up,down}_proj -> ffn_{gate,up,down}, mlp.gate -> ffn_gate_inp,
 * mlp.gate.e_score_correction_bias -> exp_probs_b.bias, mlp.experts.E.* ->
 * ffn_*_exps stacked over E, mlp.shared_experts.* -> ffn_*_shexp.  The MTP
 * layers (model.layers.N for N >= num_hidden_layers) are full blocks plus
 * enorm, hnorm, eh_proj, embed_tokens, shared_head.norm, shared_head.head
 * -> blk.N.nextn.{enorm, hnorm, eh_proj, embed_tokens, shared_head_norm,
 * shared_head_head}; block_count counts them and nextn_predict_layers says
 * how many (llama.cpp's convention for next-n layers).
 *
 * FP8: weight = fp8 * scale_inv[row / 128][col / 128] in float32, the scale
 * grid ceil(rows/128) x ceil(cols/128) (the block size from
 * quantization_config), as DeepSeek's weight_dequant; the result is not
 * rounded to BF16 but goes straight to the output type.
 *
 * Memory: the headers, one chunk of rows (CHUNK_BYTES of fp32) in its raw,
 * fp32 and output forms, and one fp32 row per thread; kv_b_proj, which the
 * split reads across, is the one tensor held whole (a few tens of MB for V3).
 */
#include "convert.h"
#include "hf_plan.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "edgeseek.h"
#include "gguf_writer.h"
#include "hf_tokenizer.h"
#include "kernels.h"
#include "quantize.h"
#include "safetensors.h"
#include "threadpool.h"

#define CHUNK_BYTES (16u << 20)
#define MAX_CONFIG (16u << 20)
#define BIG (1ll << 30)
#define QNT_VERSION 2

#define fail es_st_fail

/* ---- config.json ----------------------------------------------------------- */


typedef struct cfg_reader {
    const cJSON *j;
    char *err;
    size_t errlen;
    int failed;
} cfg_reader;

/* An integer key in [lo, hi]; absent or null gives def, or fails if def < lo. */
static int64_t cfg_int(cfg_reader *r, const char *key, int64_t def, int64_t lo, int64_t hi) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->j, key);
    if (r->failed) return 0;
    if (!v || cJSON_IsNull(v)) {
        if (def >= lo) return def;
        r->failed = 1;
        fail(r->err, r->errlen, "config.json: missing %s", key);
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < (double)lo ||
        v->valuedouble > (double)hi) {
        r->failed = 1;
        fail(r->err, r->errlen, "config.json: %s must be an integer in [%lld, %lld]", key, (long long)lo, (long long)hi);
        return 0;
    }
    return (int64_t)v->valuedouble;
}

static double cfg_num(cfg_reader *r, const cJSON *obj, const char *key, double def, int required) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (r->failed) return 0;
    if (!v || cJSON_IsNull(v)) {
        if (!required) return def;
        r->failed = 1;
        fail(r->err, r->errlen, "config.json: missing %s", key);
        return 0;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
        r->failed = 1;
        fail(r->err, r->errlen, "config.json: %s must be a number", key);
        return 0;
    }
    return v->valuedouble;
}

static const char *cfg_str(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int es_hf_read_config(hf_cfg *c, const cJSON *j, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(j, "architectures");
    const char *a = cJSON_IsArray(arch) && cJSON_IsString(arch->child) ? arch->child->valuestring : NULL;
    const char *mt = cfg_str(j, "model_type");
    int ok_arch = a && (!strcmp(a, "DeepseekV2ForCausalLM") || !strcmp(a, "DeepseekV3ForCausalLM"));
    int ok_mt = mt && (!strcmp(mt, "deepseek_v2") || !strcmp(mt, "deepseek_v3"));
    if (!(a ? ok_arch : ok_mt) || (mt && !ok_mt))
        return fail(err, errlen, "config.json: architecture '%.60s' (model_type '%.60s') is not supported "
                                 "(DeepseekV2ForCausalLM, DeepseekV3ForCausalLM)",
                    a ? a : "?", mt ? mt : "?");
    cfg_reader r = {.j = j, .err = err, .errlen = errlen};
    c->vocab = cfg_int(&r, "vocab_size", -1, 1, 1 << 24);
    c->dim = cfg_int(&r, "hidden_size", -1, 1, BIG);
    c->layers = cfg_int(&r, "num_hidden_layers", -1, 1, 4096);
    c->ffn = cfg_int(&r, "intermediate_size", -1, 1, BIG);
    c->heads = cfg_int(&r, "num_attention_heads", -1, 1, 4096);
    c->q_lora = cfg_int(&r, "q_lora_rank", 0, 0, BIG);
    c->kv_lora = cfg_int(&r, "kv_lora_rank", -1, 1, BIG);
    c->nope = cfg_int(&r, "qk_nope_head_dim", -1, 1, BIG);
    c->rope = cfg_int(&r, "qk_rope_head_dim", -1, 2, 4096);
    c->vdim = cfg_int(&r, "v_head_dim", -1, 1, BIG);
    c->experts = cfg_int(&r, "n_routed_experts", 0, 0, 65536);
    c->used = cfg_int(&r, "num_experts_per_tok", 0, 0, 65536);
    c->shared = cfg_int(&r, "n_shared_experts", 0, 0, 64);
    c->moe_ffn = cfg_int(&r, "moe_intermediate_size", 0, 0, BIG);
    c->dense = cfg_int(&r, "first_k_dense_replace", 0, 0, 4096);
    c->moe_freq = cfg_int(&r, "moe_layer_freq", 1, 1, 4096);
    c->groups = cfg_int(&r, "n_group", 1, 1, 65536);
    c->topk_groups = cfg_int(&r, "topk_group", 1, 1, 65536);
    c->ctx = cfg_int(&r, "max_position_embeddings", -1, 1, BIG);
    c->nextn = cfg_int(&r, "num_nextn_predict_layers", 0, 0, 16);
    c->eps = cfg_num(&r, j, "rms_norm_eps", 1e-6, 0);
    c->rope_theta = cfg_num(&r, j, "rope_theta", 10000, 0);
    c->route_scale = cfg_num(&r, j, "routed_scaling_factor", 1, 0);
    if (r.failed) return -1;
    const cJSON *nt = cJSON_GetObjectItemCaseSensitive(j, "norm_topk_prob");
    c->norm_topk = cJSON_IsTrue(nt);
    const char *sf = cfg_str(j, "scoring_func");
    if (!sf || !strcmp(sf, "softmax")) c->gating = 1;
    else if (!strcmp(sf, "sigmoid")) c->gating = 2;
    else return fail(err, errlen, "config.json: scoring_func '%.40s' is not supported (softmax, sigmoid)", sf);
    const char *tm = cfg_str(j, "topk_method");
    c->gate_bias = tm && !strcmp(tm, "noaux_tc");
    const char *act = cfg_str(j, "hidden_act");
    if (act && strcmp(act, "silu")) return fail(err, errlen, "config.json: hidden_act '%.40s' is not supported (silu)", act);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "attention_bias")))
        return fail(err, errlen, "config.json: attention_bias is not supported");
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "tie_word_embeddings")))
        return fail(err, errlen, "config.json: tie_word_embeddings is not supported (DeepSeek keeps lm_head)");
    if (c->moe_freq != 1) return fail(err, errlen, "config.json: moe_layer_freq %lld is not supported (1)", (long long)c->moe_freq);
    if (c->dense > c->layers) return fail(err, errlen, "config.json: first_k_dense_replace exceeds num_hidden_layers");
    if (c->dense < c->layers && (c->experts < 1 || c->used < 1 || c->moe_ffn < 1))
        return fail(err, errlen, "config.json: MoE layers need n_routed_experts, num_experts_per_tok and moe_intermediate_size");
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(j, "rope_scaling");
    if (cJSON_IsObject(rs)) {
        const char *t = cfg_str(rs, "type");
        if (!t) t = cfg_str(rs, "rope_type");
        if (t && !strcmp(t, "yarn")) {
            c->yarn = 1;
            c->yarn_factor = cfg_num(&r, rs, "factor", 1, 1);
            c->yarn_orig = (int64_t)cfg_num(&r, rs, "original_max_position_embeddings", 0, 1);
            c->beta_fast = cfg_num(&r, rs, "beta_fast", 32, 0);
            c->beta_slow = cfg_num(&r, rs, "beta_slow", 1, 0);
            double ms = cfg_num(&r, rs, "mscale", 1, 0);
            c->mscale_all_dim = cfg_num(&r, rs, "mscale_all_dim", 0, 0);
            if (r.failed) return -1;
            /* the reference scales cos/sin by mscale / mscale_all_dim's
             * factors, which cancel only when they are equal */
            if (c->mscale_all_dim != 0 && ms != c->mscale_all_dim)
                return fail(err, errlen, "config.json: rope_scaling mscale %g differs from mscale_all_dim %g "
                                         "(not supported)", ms, c->mscale_all_dim);
            if (c->yarn_orig < 1) return fail(err, errlen, "config.json: rope_scaling needs original_max_position_embeddings");
        } else if (t && strcmp(t, "none") && strcmp(t, "default")) {
            return fail(err, errlen, "config.json: rope_scaling type '%.40s' is not supported (yarn)", t);
        }
    }
    const cJSON *qc = cJSON_GetObjectItemCaseSensitive(j, "quantization_config");
    c->blk_r = c->blk_c = 128;
    if (cJSON_IsObject(qc)) {
        const char *qm = cfg_str(qc, "quant_method"), *fmt = cfg_str(qc, "fmt");
        if (!qm || strcmp(qm, "fp8") || (fmt && strcmp(fmt, "e4m3")))
            return fail(err, errlen, "config.json: quantization_config %.20s/%.20s is not supported (fp8, e4m3)",
                        qm ? qm : "?", fmt ? fmt : "?");
        c->fp8 = 1;
        const cJSON *bs = cJSON_GetObjectItemCaseSensitive(qc, "weight_block_size");
        if (bs) {
            if (!cJSON_IsArray(bs) || cJSON_GetArraySize(bs) != 2 || !cJSON_IsNumber(bs->child) ||
                !cJSON_IsNumber(bs->child->next) || bs->child->valuedouble < 1 || bs->child->next->valuedouble < 1 ||
                bs->child->valuedouble > 65536 || bs->child->next->valuedouble > 65536)
                return fail(err, errlen, "config.json: quantization_config.weight_block_size must be [rows, cols]");
            c->blk_r = (int64_t)bs->child->valuedouble;
            c->blk_c = (int64_t)bs->child->next->valuedouble;
        }
    }
    return 0;
}

/* ---- the plan ------------------------------------------------------------------------ */


static const char *piece_name(const otensor *t, int e, char *buf, size_t n) {
    if (t->n_src > 1) snprintf(buf, n, t->hf, e);
    else snprintf(buf, n, "%s", t->hf);
    return buf;
}


/* Adds output tensor name, its pieces named by src_fmt (with %d for the
 * expert when n_src > 1), each of shape [rows, cols] in the checkpoint. */
static otensor *plan_add(conv *v, const char *name, uint32_t n_dims, int64_t ne0, int64_t ne1, int64_t ne2, enum op op,
                         const char *src, int n_src, int64_t rows, int64_t cols) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 512;
        otensor *t = realloc(v->t, cap * sizeof *t);
        if (!t) return NULL;
        v->t = t, v->cap = cap;
    }
    otensor *t = &v->t[v->n];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    t->ne[0] = ne0, t->ne[1] = ne1, t->ne[2] = ne2, t->ne[3] = 1;
    t->op = op;
    t->n_src = n_src;
    t->src_rows = rows, t->src_cols = cols;
    t->src = calloc((size_t)n_src, sizeof *t->src);
    t->scale = calloc((size_t)n_src, sizeof *t->scale);
    if (!t->src || !t->scale) { free(t->src); free(t->scale); return NULL; }
    snprintf(t->hf, sizeof t->hf, "%s", src);
    for (int e = 0; e < n_src; e++) {
        char nm[256];
        t->src[e] = es_st_find(&v->st, piece_name(t, e, nm, sizeof nm));
    }
    v->n++;
    return t;
}

typedef struct planner {
    conv *v;
    int oom;
    char src_missing[256];
    int64_t layer;
} planner;

static void vec(planner *P, const char *gg, const char *hf, int64_t n) {
    if (!P->oom && !plan_add(P->v, gg, 1, n, 1, 1, OP_WHOLE, hf, 1, 1, n)) P->oom = 1;
}
static otensor *mat(planner *P, const char *gg, const char *hf, int64_t in, int64_t out) {
    otensor *t = P->oom ? NULL : plan_add(P->v, gg, 2, in, out, 1, OP_WHOLE, hf, 1, out, in);
    if (!t) P->oom = 1;
    return t;
}

static void block(planner *P, int il) {
    const hf_cfg *c = &P->v->c;
    const int64_t D = c->dim, H = c->heads, R = c->kv_lora, dn = c->nope, dr = c->rope, dv = c->vdim;
    char g[GGUF_W_MAX_NAME], h[256], h2[256];
#define G(s) (snprintf(g, sizeof g, "blk.%d." s, il), g)
#define HF(s) (snprintf(h, sizeof h, "model.layers.%d." s, il), h)
    vec(P, G("attn_norm.weight"), HF("input_layernorm.weight"), D);
    if (c->q_lora) {
        mat(P, G("attn_q_a.weight"), HF("self_attn.q_a_proj.weight"), D, c->q_lora);
        vec(P, G("attn_q_a_norm.weight"), HF("self_attn.q_a_layernorm.weight"), c->q_lora);
        mat(P, G("attn_q_b.weight"), HF("self_attn.q_b_proj.weight"), c->q_lora, H * (dn + dr));
    } else {
        mat(P, G("attn_q.weight"), HF("self_attn.q_proj.weight"), D, H * (dn + dr));
    }
    mat(P, G("attn_kv_a_mqa.weight"), HF("self_attn.kv_a_proj_with_mqa.weight"), D, R + dr);
    vec(P, G("attn_kv_a_norm.weight"), HF("self_attn.kv_a_layernorm.weight"), R);
    if (!P->oom && !plan_add(P->v, G("attn_k_b.weight"), 3, dn, R, H, OP_KB, HF("self_attn.kv_b_proj.weight"), 1,
                             H * (dn + dv), R))
        P->oom = 1;
    if (!P->oom && !plan_add(P->v, G("attn_v_b.weight"), 3, R, dv, H, OP_VB, HF("self_attn.kv_b_proj.weight"), 1,
                             H * (dn + dv), R))
        P->oom = 1;
    mat(P, G("attn_output.weight"), HF("self_attn.o_proj.weight"), H * dv, D);
    vec(P, G("ffn_norm.weight"), HF("post_attention_layernorm.weight"), D);
    if (il < c->dense) {
        mat(P, G("ffn_gate.weight"), HF("mlp.gate_proj.weight"), D, c->ffn);
        mat(P, G("ffn_down.weight"), HF("mlp.down_proj.weight"), c->ffn, D);
        mat(P, G("ffn_up.weight"), HF("mlp.up_proj.weight"), D, c->ffn);
    } else {
        const int64_t E = c->experts, F = c->moe_ffn, S = c->shared * F;
        mat(P, G("ffn_gate_inp.weight"), HF("mlp.gate.weight"), D, E);
        if (c->gate_bias) vec(P, G("exp_probs_b.bias"), HF("mlp.gate.e_score_correction_bias"), E);
        static const struct {
            const char *g, *h;
            int down;
        } ex[] = {{"ffn_gate_exps.weight", "gate_proj", 0}, {"ffn_down_exps.weight", "down_proj", 1},
                  {"ffn_up_exps.weight", "up_proj", 0}};
        for (int k = 0; k < 3 && !P->oom; k++) {
            snprintf(g, sizeof g, "blk.%d.%s", il, ex[k].g);
            snprintf(h2, sizeof h2, "model.layers.%d.mlp.experts.%%d.%s.weight", il, ex[k].h);
            if (!plan_add(P->v, g, 3, ex[k].down ? F : D, ex[k].down ? D : F, E, OP_WHOLE, h2, (int)E,
                          ex[k].down ? D : F, ex[k].down ? F : D))
                P->oom = 1;
        }
        if (c->shared) {
            mat(P, G("ffn_gate_shexp.weight"), HF("mlp.shared_experts.gate_proj.weight"), D, S);
            mat(P, G("ffn_down_shexp.weight"), HF("mlp.shared_experts.down_proj.weight"), S, D);
            mat(P, G("ffn_up_shexp.weight"), HF("mlp.shared_experts.up_proj.weight"), D, S);
        }
    }
    if (il >= c->layers) { /* next-n (MTP) */
        mat(P, G("nextn.eh_proj.weight"), HF("eh_proj.weight"), 2 * D, D);
        otensor *e = mat(P, G("nextn.embed_tokens.weight"), HF("embed_tokens.weight"), D, c->vocab);
        if (e) e->optional = 1;
        vec(P, G("nextn.enorm.weight"), HF("enorm.weight"), D);
        vec(P, G("nextn.hnorm.weight"), HF("hnorm.weight"), D);
        otensor *hd = mat(P, G("nextn.shared_head_head.weight"), HF("shared_head.head.weight"), D, c->vocab);
        if (hd) hd->optional = 1;
        vec(P, G("nextn.shared_head_norm.weight"), HF("shared_head.norm.weight"), D);
    }
#undef G
#undef HF
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

static void shape_str(char *buf, size_t n, const es_st_tensor *t) {
    int len = snprintf(buf, n, "[");
    for (int d = 0; d < t->n_dims && len < (int)n; d++)
        len += snprintf(buf + len, n - (size_t)len, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (len < (int)n) snprintf(buf + len, n - (size_t)len, "]");
}

/* Checks one piece against the plan: present, its dtype, its shape, and an
 * FP8 tensor's scales. */
static int check_piece(conv *v, otensor *t, int e) {
    es_st_tensor *s = t->src[e];
    const char *sf = s ? v->st.shards[s->shard].file : NULL;
    if (!s) {
        if (t->optional) return 1; /* dropped below */
        char nm[256];
        return fail(v->err, v->errlen, "%s: tensor %s is missing (needed for %s)", v->st.index_file,
                    piece_name(t, e, nm, sizeof nm), t->name);
    }
    char have[96];
    shape_str(have, sizeof have, s);
    int vecshape = t->src_rows == 1 && t->op == OP_WHOLE && t->n_dims == 1;
    int ok = vecshape ? s->n_dims == 1 && s->shape[0] == t->src_cols
                      : s->n_dims == 2 && s->shape[0] == t->src_rows && s->shape[1] == t->src_cols;
    if (!ok) {
        if (vecshape)
            return fail(v->err, v->errlen, "%s: tensor %s: shape %s, but config.json implies [%lld]", sf, s->name, have,
                        (long long)t->src_cols);
        return fail(v->err, v->errlen, "%s: tensor %s: shape %s, but config.json implies [%lld, %lld]", sf, s->name,
                    have, (long long)t->src_rows, (long long)t->src_cols);
    }
    s->used = 1;
    if (s->dtype == ES_ST_OTHER)
        return fail(v->err, v->errlen, "%s: tensor %s: dtype %s is not a weight type (F32, F16, BF16, F8_E4M3)", sf,
                    s->name, s->dtype_name);
    if (s->dtype != ES_ST_F8_E4M3) return 0;
    if (!v->c.fp8)
        return fail(v->err, v->errlen, "%s: tensor %s: dtype F8_E4M3, but config.json has no fp8 quantization_config",
                    sf, s->name);
    if (vecshape) return fail(v->err, v->errlen, "%s: tensor %s: an FP8 vector is not supported", sf, s->name);
    char sn[300];
    snprintf(sn, sizeof sn, "%s_scale_inv", s->name);
    es_st_tensor *sc = es_st_find(&v->st, sn);
    if (!sc) return fail(v->err, v->errlen, "%s: tensor %s: F8_E4M3 without its %s", sf, s->name, sn);
    sc->used = 1;
    int64_t gr = ceil_div(t->src_rows, v->c.blk_r), gc = ceil_div(t->src_cols, v->c.blk_c);
    if (sc->dtype != ES_ST_F32 || sc->n_dims != 2 || sc->shape[0] != gr || sc->shape[1] != gc) {
        shape_str(have, sizeof have, sc);
        return fail(v->err, v->errlen, "%s: tensor %s: %s %s, expected F32 [%lld, %lld] (blocks of %lldx%lld)",
                    v->st.shards[sc->shard].file, sn, sc->dtype_name, have, (long long)gr, (long long)gc,
                    (long long)v->c.blk_r, (long long)v->c.blk_c);
    }
    t->scale[e] = sc;
    return 0;
}

static int is_ignored(const char *name) { return strstr(name, "rotary_emb.inv_freq") != NULL; }

/* Builds the plan, checks the checkpoint against it, and chooses types. */
int es_hf_make_plan(conv *v, const char *type, int no_mtp) {
    hf_cfg *c = &v->c;
    int n_mtp = no_mtp ? 0 : (int)c->nextn;
    v->n_blocks = (int)c->layers + n_mtp;
    planner P = {.v = v};
    mat(&P, "token_embd.weight", "model.embed_tokens.weight", c->dim, c->vocab);
    for (int il = 0; il < v->n_blocks && !P.oom; il++) block(&P, il);
    vec(&P, "output_norm.weight", "model.norm.weight", c->dim);
    mat(&P, "output.weight", "lm_head.weight", c->dim, c->vocab);
    if (P.oom) return fail(v->err, v->errlen, "out of memory planning the tensors");
    size_t k = 0;
    for (size_t i = 0; i < v->n; i++) {
        otensor *t = &v->t[i];
        int dropped = 0;
        for (int e = 0; e < t->n_src; e++) {
            int r = check_piece(v, t, e);
            if (r < 0) return -1;
            if (r > 0) dropped = 1;
        }
        if (dropped) {
            free(t->src);
            free(t->scale);
            continue;
        }
        v->t[k++] = *t;
    }
    v->n = k;
    /* whatever the plan did not take */
    for (size_t i = 0; i < v->st.n_tensors; i++) {
        es_st_tensor *s = &v->st.tensors[i];
        if (s->used || is_ignored(s->name)) continue;
        int il;
        if (no_mtp && sscanf(s->name, "model.layers.%d.", &il) == 1 && il >= c->layers) continue;
        return fail(v->err, v->errlen, "%s: tensor %s: not part of the model config.json describes%s",
                    v->st.shards[s->shard].file, s->name,
                    sscanf(s->name, "model.layers.%d.", &il) == 1 && il >= c->layers
                        ? " (a next-n layer beyond num_nextn_predict_layers)" : "");
    }
    /* types: the target's rules; without a target, the source precision */
    for (size_t i = 0; i < v->n; i++) {
        otensor *t = &v->t[i];
        const char *tg = type;
        if (!tg) {
            switch (t->src[0]->dtype) {
            case ES_ST_F8_E4M3: tg = "q8_0"; break;
            case ES_ST_BF16: tg = "bf16"; break;
            case ES_ST_F16: tg = "f16"; break;
            default: tg = "f32"; break;
            }
        }
        const char *note = NULL;
        t->type = es_quantize_tensor_type(tg, t->name, t->n_dims, t->ne, v->n_blocks, &note);
        if (t->type == ES_TYPE_COUNT)
            return fail(v->err, v->errlen, "unknown type '%s' (%s)", tg, ES_QUANTIZE_TARGETS);
        if (note && v->log) fprintf(v->log, "convert: %s: %s\n", t->name, note);
    }
    return 0;
}

/* ---- metadata ------------------------------------------------------------------------ */

const char *es_hf_dir_base(const char *dir, char *buf, size_t n) {
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    size_t b = len;
    while (b > 0 && dir[b - 1] != '/') b--;
    snprintf(buf, n, "%.*s", (int)(len - b), dir + b);
    return buf;
}

void es_hf_write_hparams(conv *v, int n_mtp) {
    const hf_cfg *c = &v->c;
    es_gguf_writer *w = v->w;
    int moe = c->experts > 0;
#define U(k, x) es_gguf_w_u32(w, "deepseek2." k, (uint32_t)(x))
#define F(k, x) es_gguf_w_f32(w, "deepseek2." k, (float)(x))
    U("vocab_size", c->vocab);
    U("context_length", c->ctx);
    U("embedding_length", c->dim);
    U("block_count", v->n_blocks);
    U("feed_forward_length", c->ffn);
    U("leading_dense_block_count", c->dense);
    U("attention.head_count", c->heads);
    F("attention.layer_norm_rms_epsilon", c->eps);
    U("attention.q_lora_rank", c->q_lora);
    U("attention.kv_lora_rank", c->kv_lora);
    U("attention.head_count_kv", 1);
    U("attention.key_length", c->kv_lora + c->rope);
    U("attention.value_length", c->kv_lora);
    U("attention.key_length_mla", c->nope + c->rope);
    U("attention.value_length_mla", c->vdim);
    U("rope.dimension_count", c->rope);
    F("rope.freq_base", c->rope_theta);
    if (c->yarn) {
        es_gguf_w_str(w, "deepseek2.rope.scaling.type", "yarn");
        F("rope.scaling.factor", c->yarn_factor);
        U("rope.scaling.original_context_length", c->yarn_orig);
        F("rope.scaling.yarn_beta_fast", c->beta_fast);
        F("rope.scaling.yarn_beta_slow", c->beta_slow);
        F("rope.scaling.yarn_log_multiplier", 0.1 * c->mscale_all_dim);
    }
    if (moe) {
        U("expert_count", c->experts);
        U("expert_used_count", c->used);
        U("expert_shared_count", c->shared);
        U("expert_feed_forward_length", c->moe_ffn);
        F("expert_weights_scale", c->route_scale);
        es_gguf_w_bool(w, "deepseek2.expert_weights_norm", c->norm_topk);
        U("expert_gating_func", c->gating);
        if (c->groups > 1) {
            U("expert_group_count", c->groups);
            U("expert_group_used_count", c->topk_groups);
        }
    }
    if (n_mtp) U("nextn_predict_layers", n_mtp);
#undef U
#undef F
}

/* ---- FP8 and the data ---------------------------------------------------------------- */

static float fp8_lut[256];

/* e4m3 ("fn"): 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities,
 * S.1111.111 is NaN; exponent 0 is subnormal (m/8 * 2^-6). */
static void fp8_init(void) {
    for (int b = 0; b < 256; b++) {
        int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
        float x = e ? ldexpf(1.0f + (float)m / 8.0f, e - 7) : ldexpf((float)m / 8.0f, -6);
        if (e == 15 && m == 7) x = NAN;
        fp8_lut[b] = s ? -x : x;
    }
}

typedef struct fp8_job {
    const uint8_t *raw;
    float *dst;
    const float *scale; /* the scale grid of the tensor */
    int64_t cols, row0, blk_r, blk_c, grid_c;
} fp8_job;

static void fp8_rows(void *ctx, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    const fp8_job *j = ctx;
    for (int64_t r = i0; r < i1; r++) {
        const uint8_t *s = j->raw + r * j->cols;
        float *d = j->dst + r * j->cols;
        const float *sc = j->scale + ((j->row0 + r) / j->blk_r) * j->grid_c;
        for (int64_t c0 = 0, b = 0; c0 < j->cols; c0 += j->blk_c, b++) {
            int64_t c1 = c0 + j->blk_c < j->cols ? c0 + j->blk_c : j->cols;
            float k = sc[b];
            for (int64_t c = c0; c < c1; c++) d[c] = fp8_lut[s[c]] * k;
        }
    }
}

static void *grow(void *p, size_t *cap, size_t need) {
    if (need <= *cap) return p;
    void *q = realloc(p, need);
    if (q) *cap = need;
    return q;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void progress(conv *v, const char *name, int final) {
    if (!v->log) return;
    double t = now();
    int tty = isatty(fileno(v->log));
    if (!final && t - v->last < (tty ? 0.5 : 10.0)) return;
    v->last = t;
    double el = t - v->t0, rate = el > 0 ? (double)v->done_bytes / el : 0;
    double eta = rate > 0 ? (double)(v->total_bytes - v->done_bytes) / rate : 0;
    fprintf(v->log, "%sconvert: %8.2f / %.2f GB (%3.0f%%)  %7.1f MB/s  ETA %d:%02d:%02d  %-34s%s",
            tty ? "\r" : "", (double)v->done_bytes / 1e9, (double)v->total_bytes / 1e9,
            v->total_bytes ? 100.0 * (double)v->done_bytes / (double)v->total_bytes : 100.0, rate / 1e6,
            (int)(eta / 3600), (int)(eta / 60) % 60, (int)eta % 60, final ? "done" : name, tty && !final ? "" : "\n");
    fflush(v->log);
}

static uint32_t st_es_type(enum es_st_dtype d) {
    return d == ES_ST_BF16 ? ES_TYPE_BF16 : d == ES_ST_F16 ? ES_TYPE_F16 : ES_TYPE_F32;
}

/* Rows [r0, r0 + k) of piece e as fp32 into v->f32 (FP8), or raw into
 * v->raw; *src_type says which. */
static int load_rows(conv *v, otensor *t, int e, int64_t r0, int64_t k, const float *scales, uint32_t *src_type,
                     const void **data) {
    es_st_tensor *s = t->src[e];
    size_t es = es_st_dtype_size(s->dtype), rb = es * (size_t)t->src_cols;
    if (!(v->raw = grow(v->raw, &v->raw_cap, rb * (size_t)k))) return fail(v->err, v->errlen, "out of memory");
    if (es_st_read(&v->st, s, (uint64_t)r0 * rb, v->raw, rb * (size_t)k, v->err, v->errlen)) return -1;
    v->done_bytes += rb * (uint64_t)k;
    if (s->dtype != ES_ST_F8_E4M3) {
        *src_type = st_es_type(s->dtype);
        *data = v->raw;
        return 0;
    }
    size_t need = sizeof(float) * (size_t)t->src_cols * (size_t)k;
    if (!(v->f32 = grow(v->f32, &v->f32_cap, need))) return fail(v->err, v->errlen, "out of memory");
    fp8_job j = {v->raw, v->f32, scales, t->src_cols, r0, v->c.blk_r, v->c.blk_c, ceil_div(t->src_cols, v->c.blk_c)};
    int64_t grain = k / (4 * (int64_t)v->n_threads);
    es_pool_run(v->pool, fp8_rows, &j, k, grain > 0 ? grain : 1);
    *src_type = ES_TYPE_F32;
    *data = v->f32;
    return 0;
}

static float *load_scales(conv *v, const es_st_tensor *sc) {
    if (!sc) return NULL;
    float *s = malloc(sc->nbytes);
    if (!s) { fail(v->err, v->errlen, "out of memory"); return NULL; }
    if (es_st_read(&v->st, sc, 0, s, sc->nbytes, v->err, v->errlen)) { free(s); return NULL; }
    return s;
}

/* Converts k rows of n values at src (src_type) to the tensor's type and
 * writes them. */
static int emit(conv *v, otensor *t, const void *src, uint32_t src_type, int64_t n, int64_t k) {
    size_t orb = es_row_bytes(t->type, n);
    const void *out = src;
    if (src_type != t->type) {
        if (!(v->out = grow(v->out, &v->out_cap, orb * (size_t)k))) return fail(v->err, v->errlen, "out of memory");
        es_quantize_rows(v->pool, src, src_type, v->out, t->type, n, k, v->scratch);
        out = v->out;
    }
    if (es_gguf_w_write(v->w, out, orb * (size_t)k)) return fail(v->err, v->errlen, "%s", es_gguf_w_error(v->w));
    return 0;
}

/* One stacked/plain tensor: each piece streamed in row chunks. */
static int write_whole(conv *v, otensor *t) {
    int64_t per = (int64_t)(CHUNK_BYTES / (sizeof(float) * (size_t)t->src_cols));
    if (per < 1) per = 1;
    for (int e = 0; e < t->n_src; e++) {
        float *scales = NULL;
        if (t->scale[e] && !(scales = load_scales(v, t->scale[e]))) return -1;
        for (int64_t r0 = 0; r0 < t->src_rows; r0 += per) {
            int64_t k = t->src_rows - r0 < per ? t->src_rows - r0 : per;
            uint32_t st;
            const void *data;
            if (load_rows(v, t, e, r0, k, scales, &st, &data) || emit(v, t, data, st, t->src_cols, k)) {
                free(scales);
                return -1;
            }
            progress(v, t->name, 0);
        }
        free(scales);
    }
    return 0;
}

/* attn_k_b / attn_v_b from kv_b_proj [H*(dn+dv), R], held whole in fp32. */
static int write_split(conv *v, otensor *t) {
    const int64_t H = v->c.heads, dn = v->c.nope, dv = v->c.vdim, R = v->c.kv_lora;
    float *scales = NULL;
    if (t->scale[0] && !(scales = load_scales(v, t->scale[0]))) return -1;
    uint32_t st;
    const void *data;
    int rc = load_rows(v, t, 0, 0, t->src_rows, scales, &st, &data);
    free(scales);
    if (rc) return -1;
    if (t->op == OP_VB) v->done_bytes -= t->src[0]->nbytes; /* counted once, by attn_k_b */
    float *kv = malloc(sizeof(float) * (size_t)(t->src_rows * R));
    float *tmp = malloc(sizeof(float) * (size_t)(dn > dv ? dn : dv) * (size_t)R);
    if (!kv || !tmp) { free(kv); free(tmp); return fail(v->err, v->errlen, "out of memory"); }
    es_quantize_rows(v->pool, data, st, kv, ES_TYPE_F32, R, t->src_rows, v->scratch);
    for (int64_t h = 0; h < H && !rc; h++) {
        const float *head = kv + (size_t)(h * (dn + dv)) * (size_t)R;
        if (t->op == OP_KB) { /* rows r of dn: column r of the head's dn k-rows */
            for (int64_t r = 0; r < R; r++)
                for (int64_t d = 0; d < dn; d++) tmp[r * dn + d] = head[d * R + r];
            rc = emit(v, t, tmp, ES_TYPE_F32, dn, R);
        } else {
            rc = emit(v, t, head + dn * R, ES_TYPE_F32, R, dv);
        }
    }
    free(kv);
    free(tmp);
    progress(v, t->name, 0);
    return rc;
}

/* ---- the whole conversion ------------------------------------------------------------ */

int es_hf_read_json(const char *dir, const char *file, cJSON **out, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    char *txt = es_st_slurp(path, MAX_CONFIG, NULL, err, errlen);
    if (!txt) return -1;
    *out = cJSON_Parse(txt);
    free(txt);
    if (!cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return fail(err, errlen, "%s: malformed JSON", file);
    }
    return 0;
}

int es_convert_hf(const char *dir, const char *out, const char *type, const es_convert_params *p, char *err,
                  size_t errlen) {
    static const es_convert_params defaults = {0};
    if (!p) p = &defaults;
    conv v = {.log = p->log, .err = err, .errlen = errlen};
    char name[256];
    cJSON *cj = NULL;
    int rc = -1;
    if (type && !es_quantize_target_valid(type))
        return fail(err, errlen, "unknown type '%s' (%s)", type, ES_QUANTIZE_TARGETS);
    if (type && es_quantize_target_needs_imatrix(type))
        return fail(err, errlen, "%s needs an importance matrix: convert to f16 or bf16, then `edgeseek quantize "
                    "--imatrix FILE`", type);
    fp8_init();
    v.t0 = v.last = now();
    if (!(v.w = es_gguf_writer_new())) return fail(err, errlen, "out of memory");
    if (!p->vocab_only && (es_hf_read_json(dir, "config.json", &cj, err, errlen) || es_hf_read_config(&v.c, cj, err, errlen)))
        goto done;
    if (p->vocab_only) { /* the model's vocabulary size when config.json gives it */
        char ignored[256];
        cfg_reader r = {.j = cj, .err = ignored, .errlen = sizeof ignored};
        if (es_hf_read_json(dir, "config.json", &cj, ignored, sizeof ignored) == 0) r.j = cj, v.c.vocab = cfg_int(&r, "vocab_size", 0, 0, 1 << 24);
    }
    es_gguf_w_str(v.w, "general.architecture", "deepseek2");
    es_gguf_w_str(v.w, "general.name", es_hf_dir_base(dir, name, sizeof name));
    if (p->vocab_only) {
        if (es_hf_tokenizer(v.w, dir, cj ? v.c.vocab : 0, err, errlen)) goto done;
    } else {
        if (es_st_open(&v.st, dir, err, errlen) || es_hf_make_plan(&v, type, p->no_mtp)) goto done;
        const char *tg = type ? type : v.c.fp8 ? "q8_0" : "bf16";
        es_gguf_w_u32(v.w, "general.file_type", (uint32_t)es_quantize_ftype(tg));
        es_gguf_w_u32(v.w, "general.quantization_version", QNT_VERSION);
        es_hf_write_hparams(&v, v.n_blocks - (int)v.c.layers);
        if (es_hf_tokenizer(v.w, dir, v.c.vocab, err, errlen)) goto done;
        for (size_t i = 0; i < v.n; i++) {
            otensor *t = &v.t[i];
            if (es_gguf_w_add_tensor(v.w, t->name, t->n_dims, t->ne, t->type)) {
                fail(err, errlen, "%s: %s", t->name, es_gguf_w_error(v.w));
                goto done;
            }
            for (int e = 0; e < t->n_src; e++) v.total_bytes += t->op == OP_VB ? 0 : t->src[e]->nbytes;
        }
    }
    if (es_gguf_w_error(v.w)[0]) { fail(err, errlen, "%s", es_gguf_w_error(v.w)); goto done; }
    v.n_threads = p->n_threads > 0 ? p->n_threads : es_default_threads();
    v.pool = es_pool_new(v.n_threads);
    v.scratch = calloc((size_t)v.n_threads, sizeof *v.scratch);
    if (!v.pool || !v.scratch) { fail(err, errlen, "out of memory"); goto done; }
    int64_t max_row = 1;
    for (size_t i = 0; i < v.n; i++) {
        if (v.t[i].src_cols > max_row) max_row = v.t[i].src_cols;
        if (v.t[i].ne[0] > max_row) max_row = v.t[i].ne[0];
    }
    for (int k = 0; k < v.n_threads; k++)
        if (!(v.scratch[k] = malloc(sizeof(float) * (size_t)max_row))) { fail(err, errlen, "out of memory"); goto done; }
    if (es_gguf_w_open(v.w, out)) { fail(err, errlen, "%s", es_gguf_w_error(v.w)); goto done; }
    v.t0 = v.last = now();
    for (size_t i = 0; i < v.n; i++)
        if ((v.t[i].op == OP_WHOLE ? write_whole(&v, &v.t[i]) : write_split(&v, &v.t[i])) != 0) goto done;
    char inner[512];
    if (es_gguf_w_finish(v.w, inner, sizeof inner)) { fail(err, errlen, "%s", inner); goto done; }
    if (v.log) {
        if (!p->vocab_only) progress(&v, "", 1);
        double dt = now() - v.t0;
        fprintf(v.log, "convert: %s -> %s: %zu tensors, %d blocks (%d next-n), %.2f GB in %.1f s (%.1f MB/s of input)\n",
                dir, out, v.n, v.n_blocks, v.n_blocks - (int)v.c.layers, (double)es_gguf_w_file_size(v.w) / 1e9, dt,
                dt > 0 ? (double)v.done_bytes / dt / 1e6 : 0.0);
    }
    rc = 0;
done:
    if (v.scratch)
        for (int k = 0; k < v.n_threads; k++) free(v.scratch[k]);
    free(v.scratch);
    es_pool_free(v.pool);
    es_gguf_writer_free(v.w); /* removes the output unless finished */
    for (size_t i = 0; i < v.n; i++) {
        free(v.t[i].src);
        free(v.t[i].scale);
    }
    free(v.t);
    free(v.raw);
    free(v.out);
    free(v.f32);
    es_st_close(&v.st);
    cJSON_Delete(cj);
    return rc;
}
