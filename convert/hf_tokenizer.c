/* hf_tokenizer.c — a Hugging Face tokenizer.json (byte-level BPE) and its
 * tokenizer_config.json as GGUF tokenizer metadata, the way llama.cpp's
 * converter writes DeepSeek's:
 *   tokenizer.ggml.model "gpt2"; tokenizer.ggml.pre "deepseek-v3" or
 *   "deepseek-llm", recognised from the pre-tokenizer's split patterns;
 *   tokens for every id below the model's vocabulary size: the BPE
 *   vocabulary and the added tokens by id, "[PAD<id>]" for ids neither uses;
 *   token types NORMAL (1), CONTROL (3: added and special), USER_DEFINED (4:
 *   added, not special), UNUSED (5: the fillers); merges as "a b";
 *   bos/eos/padding ids from tokenizer_config.json's bos_token, eos_token
 *   and pad_token; add_bos_token / add_eos_token; chat_template.
 */
#include "hf_tokenizer.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

#define MAX_TOKENIZER_JSON (512u << 20)
#define MAX_CONFIG_JSON (16u << 20)
#define MAX_VOCAB (1 << 24)

enum { TT_NORMAL = 1, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5 };

#define fail es_st_fail

/* The split patterns of DeepSeek-V3's pre-tokenizer, in order (digits in
 * threes, CJK runs, then the word pattern). */
static const char *const v3_patterns[] = {
    "\\p{N}{1,3}",
    "[\xe4\xb8\x80-\xe9\xbe\xa5\xe3\x81\x80-\xe3\x82\x9f\xe3\x82\xa0-\xe3\x83\xbf]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
    "?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
};

/* "deepseek-v3", "deepseek-llm" (DeepSeek LLM / V2: a newline split first,
 * digit runs last), or NULL. */
static const char *pre_name(const cJSON *pre) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
    if (!cJSON_IsArray(list)) return NULL;
    const char *pats[16];
    int n = 0;
    for (const cJSON *e = list->child; e; e = e->next) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(e, "type");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "Split")) continue;
        const cJSON *rx = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(e, "pattern"), "Regex");
        if (!cJSON_IsString(rx) || n == 16) return NULL;
        pats[n++] = rx->valuestring;
    }
    int v3 = n == 3;
    for (int i = 0; v3 && i < 3; i++) v3 = !strcmp(pats[i], v3_patterns[i]);
    if (v3) return "deepseek-v3";
    if (n >= 2 && !strcmp(pats[0], "[\r\n]") && !strcmp(pats[n - 1], "\\p{N}+")) return "deepseek-llm";
    return NULL;
}

/* The text of a special token entry of tokenizer_config.json: a string or
 * {"content": ...}; NULL if absent. */
static const char *token_text(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsString(v)) return v->valuestring;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(c) ? c->valuestring : NULL;
}

typedef struct vocab {
    char **tok;
    int32_t *type;
    int64_t n;
} vocab;

static int find_id(const vocab *v, const char *s) {
    for (int64_t i = 0; i < v->n; i++)
        if (v->tok[i] && v->type[i] != TT_UNUSED && !strcmp(v->tok[i], s)) return (int)i;
    return -1;
}

static int set_token(vocab *v, int64_t id, const char *s, int32_t type, const char *file, char *err, size_t errlen) {
    if (id < 0 || id >= v->n) return fail(err, errlen, "%s: token '%.40s' has id %lld outside the vocabulary of %lld", file, s,
                                          (long long)id, (long long)v->n);
    if (v->tok[id] && strcmp(v->tok[id], s))
        return fail(err, errlen, "%s: id %lld is both '%.40s' and '%.40s'", file, (long long)id, v->tok[id], s);
    free(v->tok[id]);
    if (!(v->tok[id] = strdup(s))) return fail(err, errlen, "out of memory");
    v->type[id] = type;
    return 0;
}

static int add_tokens(es_gguf_writer *w, cJSON *tj, cJSON *cfg, int64_t vocab_size, char *err, size_t errlen) {
    const char *F = "tokenizer.json";
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(tj, "model");
    const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *bpe = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(tj, "added_tokens");
    if (!cJSON_IsString(mtype) || strcmp(mtype->valuestring, "BPE") || !cJSON_IsObject(bpe) || !cJSON_IsArray(merges))
        return fail(err, errlen, "%s: not a BPE tokenizer (model.type \"BPE\" with vocab and merges)", F);
    const char *pre = pre_name(cJSON_GetObjectItemCaseSensitive(tj, "pre_tokenizer"));
    if (!pre)
        return fail(err, errlen, "%s: pre-tokenizer not recognised (edgeseek knows DeepSeek-V3's and DeepSeek LLM/V2's)",
                    F);
    /* the size: the model's, or one past the largest id */
    int64_t n = vocab_size;
    if (n <= 0) {
        for (const cJSON *e = bpe->child; e; e = e->next)
            if (cJSON_IsNumber(e) && e->valuedouble + 1 > (double)n) n = (int64_t)e->valuedouble + 1;
        for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
            if (cJSON_IsNumber(id) && id->valuedouble + 1 > (double)n) n = (int64_t)id->valuedouble + 1;
        }
    }
    if (n < 1 || n > MAX_VOCAB) return fail(err, errlen, "%s: vocabulary of %lld tokens", F, (long long)n);
    vocab v = {calloc((size_t)n, sizeof(char *)), calloc((size_t)n, sizeof(int32_t)), n};
    int n_merges = cJSON_GetArraySize(merges);
    const char **mg = calloc((size_t)n_merges + 1, sizeof *mg);
    char **mg_own = calloc((size_t)n_merges + 1, sizeof *mg_own);
    int rc = -1;
    if (!v.tok || !v.type || !mg || !mg_own) { fail(err, errlen, "out of memory"); goto done; }
    for (const cJSON *e = bpe->child; e; e = e->next) {
        if (!cJSON_IsNumber(e) || e->valuedouble != (double)(int64_t)e->valuedouble) {
            fail(err, errlen, "%s: token '%.40s' has no integer id", F, e->string);
            goto done;
        }
        if (set_token(&v, (int64_t)e->valuedouble, e->string, TT_NORMAL, F, err, errlen)) goto done;
    }
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(a, "content");
        if (!cJSON_IsNumber(id) || !cJSON_IsString(content)) {
            fail(err, errlen, "%s: an added token lacks id or content", F);
            goto done;
        }
        int special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "special"));
        if (set_token(&v, (int64_t)id->valuedouble, content->valuestring, special ? TT_CONTROL : TT_USER, F, err,
                      errlen))
            goto done;
    }
    for (int64_t i = 0; i < n; i++)
        if (!v.tok[i]) {
            char buf[32];
            snprintf(buf, sizeof buf, "[PAD%lld]", (long long)i);
            if (!(v.tok[i] = strdup(buf))) { fail(err, errlen, "out of memory"); goto done; }
            v.type[i] = TT_UNUSED;
        }
    /* merges: "a b" strings, or [a, b] pairs in newer files */
    size_t nm = 0;
    for (const cJSON *m = merges->child; m; m = m->next, nm++) {
        if (cJSON_IsString(m)) {
            mg[nm] = m->valuestring;
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            size_t la = strlen(m->child->valuestring), lb = strlen(m->child->next->valuestring);
            if (!(mg_own[nm] = malloc(la + lb + 2))) { fail(err, errlen, "out of memory"); goto done; }
            memcpy(mg_own[nm], m->child->valuestring, la);
            mg_own[nm][la] = ' ';
            memcpy(mg_own[nm] + la + 1, m->child->next->valuestring, lb + 1);
            mg[nm] = mg_own[nm];
        } else {
            fail(err, errlen, "%s: merge %zu is neither \"a b\" nor [a, b]", F, nm);
            goto done;
        }
    }
    es_gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    es_gguf_w_str(w, "tokenizer.ggml.pre", pre);
    es_gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v.tok, (uint64_t)n);
    es_gguf_w_arr(w, "tokenizer.ggml.token_type", GGUF_VT_INT32, v.type, (uint64_t)n);
    es_gguf_w_arr_str(w, "tokenizer.ggml.merges", mg, nm);
    static const struct {
        const char *cfg_key, *gguf_key;
    } ids[] = {{"bos_token", "tokenizer.ggml.bos_token_id"},
               {"eos_token", "tokenizer.ggml.eos_token_id"},
               {"unk_token", "tokenizer.ggml.unknown_token_id"},
               {"pad_token", "tokenizer.ggml.padding_token_id"}};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        const char *s = cfg ? token_text(cfg, ids[i].cfg_key) : NULL;
        if (!s) continue;
        int id = find_id(&v, s);
        if (id < 0) {
            fail(err, errlen, "tokenizer_config.json: %s '%.60s' is not a token of tokenizer.json", ids[i].cfg_key, s);
            goto done;
        }
        es_gguf_w_u32(w, ids[i].gguf_key, (uint32_t)id);
    }
    const cJSON *ab = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token") : NULL;
    const cJSON *ae = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "add_eos_token") : NULL;
    if (cJSON_IsBool(ab)) es_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", cJSON_IsTrue(ab));
    if (cJSON_IsBool(ae)) es_gguf_w_bool(w, "tokenizer.ggml.add_eos_token", cJSON_IsTrue(ae));
    const cJSON *tmpl = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "chat_template") : NULL;
    if (cJSON_IsString(tmpl)) es_gguf_w_str(w, "tokenizer.chat_template", tmpl->valuestring);
    if (es_gguf_w_error(w)[0]) { fail(err, errlen, "tokenizer metadata: %s", es_gguf_w_error(w)); goto done; }
    rc = 0;
done:
    if (v.tok)
        for (int64_t i = 0; i < n; i++) free(v.tok[i]);
    if (mg_own)
        for (int i = 0; i < n_merges; i++) free(mg_own[i]);
    free(v.tok);
    free(v.type);
    free(mg);
    free(mg_own);
    return rc;
}

int es_hf_tokenizer(es_gguf_writer *w, const char *dir, int64_t vocab_size, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    char *txt = es_st_slurp(path, MAX_TOKENIZER_JSON, NULL, err, errlen);
    if (!txt) return -1;
    cJSON *tj = cJSON_Parse(txt);
    free(txt);
    if (!tj) return fail(err, errlen, "%s: malformed JSON", path);
    cJSON *cfg = NULL;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    char *ctxt = es_st_slurp(path, MAX_CONFIG_JSON, NULL, err, errlen);
    if (ctxt) {
        cfg = cJSON_Parse(ctxt);
        free(ctxt);
        if (!cJSON_IsObject(cfg)) {
            cJSON_Delete(tj);
            cJSON_Delete(cfg);
            return fail(err, errlen, "%s: malformed JSON", path);
        }
    }
    int rc = add_tokens(w, tj, cfg, vocab_size, err, errlen);
    cJSON_Delete(tj);
    cJSON_Delete(cfg);
    return rc;
}
