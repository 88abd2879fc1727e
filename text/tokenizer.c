/* tokenizer.c — the byte-level BPE tokenizer declared in tokenizer.h.
 *
 * Owns: loading and validating the tokenizer.ggml.* metadata (tokens, token
 * types, merges, special ids, add_bos, pre-tokenizer name, chat template
 * flavour); matching control and user-defined tokens whole in the input;
 * the hand-written pre-tokenizers for "deepseek-v3" and "deepseek-llm" (the
 * regex splits of the Hugging Face tokenizer.json / llama.cpp, evaluated
 * without a regex library); BPE merging with a rank hash map and a heap;
 * exact-byte decoding of tokens; and the DeepSeek V3 (and V2) chat formats.
 *
 * Everything read from the file is copied, so the tokenizer does not keep
 * the es_gguf_ctx alive.  Nothing here aborts on bad input: a malformed
 * vocabulary is refused at load with a message that names the problem.
 */
#include "tokenizer.h"
#include "unicode.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* tokenizer.ggml.token_type values (llama.cpp's llama_token_type). */
enum {
    TT_UNDEFINED = 0, TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3,
    TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6
};

enum pre_kind { PRE_DEEPSEEK_V3, PRE_DEEPSEEK_LLM };
enum chat_kind { CHAT_V3, CHAT_V2 };

/* DeepSeek's marker tokens, spelled with ｜ and ▁ as the vocabulary has them. */
#define U_BAR "\xef\xbd\x9c" /* ｜ FULLWIDTH VERTICAL LINE */
#define U_SP "\xe2\x96\x81"  /* ▁ LOWER ONE EIGHTH BLOCK */
#define T_BOS "<" U_BAR "begin" U_SP "of" U_SP "sentence" U_BAR ">"
#define T_EOS "<" U_BAR "end" U_SP "of" U_SP "sentence" U_BAR ">"
#define T_USER "<" U_BAR "User" U_BAR ">"
#define T_ASSISTANT "<" U_BAR "Assistant" U_BAR ">"
#define T_OUTPUTS_BEGIN "<" U_BAR "tool" U_SP "outputs" U_SP "begin" U_BAR ">"
#define T_OUTPUTS_END "<" U_BAR "tool" U_SP "outputs" U_SP "end" U_BAR ">"
#define T_OUTPUT_BEGIN "<" U_BAR "tool" U_SP "output" U_SP "begin" U_BAR ">"
#define T_OUTPUT_END "<" U_BAR "tool" U_SP "output" U_SP "end" U_BAR ">"

/* Limits no real vocabulary comes near; they keep a hostile file from
 * asking for absurd allocations or overflowing the int return of
 * es_tokenizer_piece. */
#define MAX_VOCAB (1u << 24)
#define MAX_TOKEN_BYTES (1u << 16)

typedef struct merge_slot {
    uint64_t key;   /* (left id << 32) | right id */
    int32_t rank;   /* -1: empty slot */
    int32_t result; /* id of the merged token */
} merge_slot;

struct es_tokenizer {
    int32_t n_vocab;
    char *text;         /* every token's text, back to back */
    size_t *tok_off;    /* token i is text[tok_off[i] .. + tok_len[i]) */
    uint32_t *tok_len;
    uint8_t *tok_type;

    int32_t *vocab_slots; /* open addressing over token text: id or -1 */
    size_t vocab_mask;

    merge_slot *merges;
    size_t merge_mask;

    int32_t byte_tok[256]; /* token of each single byte, -1 if the vocab lacks it */

    /* Special (control, user-defined) tokens matched whole in the input:
     * a bitmap over their first two bytes (one-byte ones in first_byte)
     * rules out almost every position cheaply; the distinct lengths, longest
     * first, are then tried through the vocab hash. */
    uint8_t *special_pair;  /* 65536 bits */
    uint8_t special_first[32];
    uint32_t *special_lens;
    size_t n_special_lens;

    int32_t bos, eos, unk;
    int32_t eog[8];
    size_t n_eog;
    int add_bos;
    enum pre_kind pre;
    enum chat_kind chat;
};

static int fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        int n = snprintf(err, errlen, "tokenizer: ");
        if (n > 0 && (size_t)n < errlen) vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* ---- GPT-2 byte <-> unicode mapping ---------------------------------------
 * Byte-level BPE stores every byte as a printable code point: the printable
 * Latin-1 bytes (! .. ~, ¡ .. ¬, ® .. ÿ) stand for themselves and the other
 * 68 bytes take U+0100.. in byte order.  Both directions are arithmetic. */

static int byte_is_printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

static uint32_t byte_to_cp(unsigned b) {
    if (byte_is_printable(b)) return b;
    if (b <= 0x20) return 0x100 + b;               /* 33 bytes: U+0100..U+0120 */
    if (b >= 0x7F && b <= 0xA0) return 0x121 + (b - 0x7F); /* 34: U+0121..U+0142 */
    return 0x143;                                  /* 0xAD */
}

/* -1 if cp stands for no byte. */
static int cp_to_byte(uint32_t cp) {
    if (cp < 0x100) return byte_is_printable(cp) ? (int)cp : -1;
    if (cp <= 0x120) return (int)(cp - 0x100);
    if (cp <= 0x142) return (int)(cp - 0x121 + 0x7F);
    if (cp == 0x143) return 0xAD;
    return -1;
}

/* ---- hashing ----------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_pair(uint64_t key) {
    key *= 0x9E3779B97F4A7C15ull;
    return key ^ (key >> 31);
}

static size_t table_size_for(size_t n) {
    size_t sz = 16;
    while (sz < 2 * n) sz <<= 1;
    return sz;
}

static int32_t vocab_find(const es_tokenizer *t, const char *s, size_t n) {
    size_t i = (size_t)hash_bytes(s, n) & t->vocab_mask;
    for (;;) {
        int32_t id = t->vocab_slots[i];
        if (id < 0) return -1;
        if (t->tok_len[id] == n && memcmp(t->text + t->tok_off[id], s, n) == 0) return id;
        i = (i + 1) & t->vocab_mask;
    }
}

/* Adds id unless a token with the same text is already there: the first
 * of duplicate texts wins. */
static void vocab_insert(es_tokenizer *t, int32_t id) {
    const char *s = t->text + t->tok_off[id];
    size_t n = t->tok_len[id];
    size_t i = (size_t)hash_bytes(s, n) & t->vocab_mask;
    for (;;) {
        int32_t cur = t->vocab_slots[i];
        if (cur < 0) { t->vocab_slots[i] = id; return; }
        if (t->tok_len[cur] == n && memcmp(t->text + t->tok_off[cur], s, n) == 0) return;
        i = (i + 1) & t->vocab_mask;
    }
}

static const merge_slot *merge_find(const es_tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = (size_t)hash_pair(key) & t->merge_mask;
    for (;;) {
        const merge_slot *m = &t->merges[i];
        if (m->rank < 0) return NULL;
        if (m->key == key) return m;
        i = (i + 1) & t->merge_mask;
    }
}

/* Keeps the first (best-ranked) entry for a pair listed twice. */
static void merge_insert(es_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t result) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = (size_t)hash_pair(key) & t->merge_mask;
    for (;;) {
        merge_slot *m = &t->merges[i];
        if (m->rank < 0) { m->key = key; m->rank = rank; m->result = result; return; }
        if (m->key == key) return;
        i = (i + 1) & t->merge_mask;
    }
}

/* ---- loading ----------------------------------------------------------- */

void es_tokenizer_free(es_tokenizer *t) {
    if (!t) return;
    free(t->text);
    free(t->tok_off);
    free(t->tok_len);
    free(t->tok_type);
    free(t->vocab_slots);
    free(t->merges);
    free(t->special_pair);
    free(t->special_lens);
    free(t);
}

/* Reads an optional token id key: absent gives -1; present but not an
 * integer, or not a valid id, is an error. */
static int load_id(const es_gguf_ctx *g, const char *key, int32_t n_vocab, int32_t *out,
                   char *err, size_t errlen) {
    int64_t v = -1;
    int r = es_gguf_get_int(g, key, &v);
    *out = -1;
    if (r == 0) return 0;
    if (r < 0) return fail(err, errlen, "%s is not an integer", key);
    if (v < 0 || v >= n_vocab)
        return fail(err, errlen, "%s = %lld is out of range (vocabulary has %d tokens)",
                    key, (long long)v, (int)n_vocab);
    *out = (int32_t)v;
    return 0;
}

/* The required string array key, or NULL with a message. */
static const es_gguf_value *str_array(const es_gguf_ctx *g, const char *key, char *err, size_t errlen) {
    const es_gguf_kv *kv = es_gguf_find_kv(g, key);
    if (!kv) {
        fail(err, errlen, "missing %s", key);
        return NULL;
    }
    if (kv->val.type != GGUF_VT_ARRAY || kv->val.v.arr.elem_type != GGUF_VT_STRING) {
        fail(err, errlen, "%s is not an array of strings", key);
        return NULL;
    }
    return &kv->val;
}

static int load_tokens(es_tokenizer *t, const es_gguf_ctx *g, char *err, size_t errlen) {
    const es_gguf_value *arr = str_array(g, "tokenizer.ggml.tokens", err, errlen);
    if (!arr) return -1;
    uint64_t n = arr->v.arr.n;
    if (n == 0) return fail(err, errlen, "tokenizer.ggml.tokens is empty");
    if (n > MAX_VOCAB)
        return fail(err, errlen, "tokenizer.ggml.tokens has %llu entries (limit %u)",
                    (unsigned long long)n, MAX_VOCAB);
    const es_gguf_str *strs = arr->v.arr.strs;
    size_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (strs[i].len > MAX_TOKEN_BYTES)
            return fail(err, errlen, "token %llu is %llu bytes long (limit %u)",
                        (unsigned long long)i, (unsigned long long)strs[i].len, MAX_TOKEN_BYTES);
        total += (size_t)strs[i].len;
    }
    t->n_vocab = (int32_t)n;
    t->text = malloc(total ? total : 1);
    t->tok_off = malloc(n * sizeof *t->tok_off);
    t->tok_len = malloc(n * sizeof *t->tok_len);
    t->tok_type = malloc(n);
    size_t slots = table_size_for(n);
    t->vocab_slots = malloc(slots * sizeof *t->vocab_slots);
    if (!t->text || !t->tok_off || !t->tok_len || !t->tok_type || !t->vocab_slots)
        return fail(err, errlen, "out of memory for %llu tokens", (unsigned long long)n);
    t->vocab_mask = slots - 1;
    memset(t->vocab_slots, 0xFF, slots * sizeof *t->vocab_slots); /* all -1 */
    size_t off = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (strs[i].len) memcpy(t->text + off, strs[i].ptr, (size_t)strs[i].len);
        t->tok_off[i] = off;
        t->tok_len[i] = (uint32_t)strs[i].len;
        off += (size_t)strs[i].len;
        vocab_insert(t, (int32_t)i);
    }
    return 0;
}

static int load_types(es_tokenizer *t, const es_gguf_ctx *g, char *err, size_t errlen) {
    const es_gguf_kv *kv = es_gguf_find_kv(g, "tokenizer.ggml.token_type");
    if (!kv) {
        /* Without types every token is ordinary text: nothing is special. */
        memset(t->tok_type, TT_NORMAL, (size_t)t->n_vocab);
        return 0;
    }
    uint32_t et = kv->val.type == GGUF_VT_ARRAY ? kv->val.v.arr.elem_type : GGUF_VT_COUNT;
    int int_elems = et == GGUF_VT_INT8 || et == GGUF_VT_UINT8 || et == GGUF_VT_INT16 ||
                    et == GGUF_VT_UINT16 || et == GGUF_VT_INT32 || et == GGUF_VT_UINT32 ||
                    et == GGUF_VT_INT64 || et == GGUF_VT_UINT64;
    if (!int_elems)
        return fail(err, errlen, "tokenizer.ggml.token_type is not an array of integers");
    if (kv->val.v.arr.n != (uint64_t)t->n_vocab)
        return fail(err, errlen, "tokenizer.ggml.token_type has %llu entries, tokens has %d",
                    (unsigned long long)kv->val.v.arr.n, (int)t->n_vocab);
    for (int32_t i = 0; i < t->n_vocab; i++) {
        int64_t v = es_gguf_arr_int(&kv->val, (uint64_t)i);
        if (v < TT_UNDEFINED || v > TT_BYTE)
            return fail(err, errlen, "token %d has unknown token_type %lld", (int)i, (long long)v);
        t->tok_type[i] = (uint8_t)(v == TT_UNDEFINED ? TT_NORMAL : v);
    }
    return 0;
}

static int load_merges(es_tokenizer *t, const es_gguf_ctx *g, char *err, size_t errlen) {
    const es_gguf_value *arr = str_array(g, "tokenizer.ggml.merges", err, errlen);
    if (!arr) return -1;
    uint64_t n = arr->v.arr.n;
    if (n > (uint64_t)INT32_MAX / 2)
        return fail(err, errlen, "tokenizer.ggml.merges has %llu entries", (unsigned long long)n);
    size_t slots = table_size_for((size_t)n);
    t->merges = malloc(slots * sizeof *t->merges);
    char *cat = malloc(2 * (size_t)MAX_TOKEN_BYTES + 1);
    if (!t->merges || !cat) {
        free(cat);
        return fail(err, errlen, "out of memory for %llu merges", (unsigned long long)n);
    }
    t->merge_mask = slots - 1;
    for (size_t i = 0; i < slots; i++) t->merges[i].rank = -1;
    const es_gguf_str *strs = arr->v.arr.strs;
    int rc = 0;
    for (uint64_t r = 0; r < n && rc == 0; r++) {
        const char *s = strs[r].ptr;
        size_t len = (size_t)strs[r].len;
        int show = len > 60 ? 60 : (int)len;
        /* Split at the first space after the first byte, as llama.cpp does,
         * so a left part can never be empty. */
        const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
        if (!sp) {
            rc = fail(err, errlen, "merge %llu ('%.*s') is not two tokens separated by a space",
                      (unsigned long long)r, show, s);
            break;
        }
        size_t la = (size_t)(sp - s), lb = len - la - 1;
        int32_t a = vocab_find(t, s, la);
        int32_t b = vocab_find(t, sp + 1, lb);
        if (a < 0 || b < 0) {
            rc = fail(err, errlen, "merge %llu ('%.*s') names a token that is not in the vocabulary",
                      (unsigned long long)r, show, s);
            break;
        }
        if (la + lb > 2 * (size_t)MAX_TOKEN_BYTES) {
            rc = fail(err, errlen, "merge %llu is too long", (unsigned long long)r);
            break;
        }
        memcpy(cat, s, la);
        memcpy(cat + la, sp + 1, lb);
        int32_t c = vocab_find(t, cat, la + lb);
        if (c < 0) {
            rc = fail(err, errlen, "merge %llu ('%.*s') makes a token that is not in the vocabulary",
                      (unsigned long long)r, show, s);
            break;
        }
        merge_insert(t, a, b, (int32_t)r, c);
    }
    free(cat);
    return rc;
}

static void set_bit(uint8_t *bits, size_t i) { bits[i >> 3] |= (uint8_t)(1u << (i & 7)); }
static int get_bit(const uint8_t *bits, size_t i) { return (bits[i >> 3] >> (i & 7)) & 1; }

static int is_special_type(uint8_t type) {
    return type == TT_CONTROL || type == TT_USER_DEFINED;
}

static int cmp_u32_desc(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static int build_specials(es_tokenizer *t, char *err, size_t errlen) {
    t->special_pair = calloc(65536 / 8, 1);
    size_t n_special = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (is_special_type(t->tok_type[i]) && t->tok_len[i]) n_special++;
    t->special_lens = malloc((n_special ? n_special : 1) * sizeof *t->special_lens);
    if (!t->special_pair || !t->special_lens) return fail(err, errlen, "out of memory");
    size_t k = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        if (!is_special_type(t->tok_type[i]) || !t->tok_len[i]) continue;
        /* A duplicate text resolves to another id through the hash; only
         * the token the hash returns can ever be matched. */
        const unsigned char *s = (const unsigned char *)t->text + t->tok_off[i];
        if (t->tok_len[i] == 1) set_bit(t->special_first, s[0]);
        else set_bit(t->special_pair, (size_t)s[0] << 8 | s[1]);
        t->special_lens[k++] = t->tok_len[i];
    }
    qsort(t->special_lens, k, sizeof *t->special_lens, cmp_u32_desc);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (u == 0 || t->special_lens[u - 1] != t->special_lens[i]) t->special_lens[u++] = t->special_lens[i];
    t->n_special_lens = u;
    return 0;
}

static void add_eog(es_tokenizer *t, int32_t id) {
    if (id < 0) return;
    for (size_t i = 0; i < t->n_eog; i++) if (t->eog[i] == id) return;
    if (t->n_eog < sizeof t->eog / sizeof t->eog[0]) t->eog[t->n_eog++] = id;
}

/* End-of-generation: the eos/eot/eom ids the file names, plus the control
 * tokens DeepSeek models use to end a turn, which older conversions do not
 * name as eot. */
static int load_eog(es_tokenizer *t, const es_gguf_ctx *g, char *err, size_t errlen) {
    static const char *const eot_keys[] = { "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id" };
    static const char *const eog_texts[] = { T_EOS, "<|EOT|>", "<|endoftext|>" };
    add_eog(t, t->eos);
    for (size_t i = 0; i < 2; i++) {
        int32_t id;
        if (load_id(g, eot_keys[i], t->n_vocab, &id, err, errlen)) return -1;
        add_eog(t, id);
    }
    for (size_t i = 0; i < 3; i++) {
        int32_t id = vocab_find(t, eog_texts[i], strlen(eog_texts[i]));
        if (id >= 0 && t->tok_type[id] == TT_CONTROL) add_eog(t, id);
    }
    return 0;
}

int es_tokenizer_load(const es_gguf_ctx *g, es_tokenizer **out, char *err, size_t errlen) {
    *out = NULL;
    if (!g) return fail(err, errlen, "no GGUF context");
    es_gguf_str s;
    int r = es_gguf_get_str(g, "tokenizer.ggml.model", &s);
    if (r == 0) return fail(err, errlen, "missing tokenizer.ggml.model");
    if (r < 0) return fail(err, errlen, "tokenizer.ggml.model is not a string");
    if (!es_gguf_str_eq(s, "gpt2"))
        return fail(err, errlen, "unsupported tokenizer model '%.*s' (only byte-level BPE, \"gpt2\")",
                    s.len > 40 ? 40 : (int)s.len, s.ptr);
    enum pre_kind pre;
    r = es_gguf_get_str(g, "tokenizer.ggml.pre", &s);
    if (r == 0) return fail(err, errlen, "missing tokenizer.ggml.pre (pre-tokenizer name)");
    if (r < 0) return fail(err, errlen, "tokenizer.ggml.pre is not a string");
    if (es_gguf_str_eq(s, "deepseek-v3")) pre = PRE_DEEPSEEK_V3;
    else if (es_gguf_str_eq(s, "deepseek-llm")) pre = PRE_DEEPSEEK_LLM;
    else
        return fail(err, errlen, "unsupported pre-tokenizer '%.*s' (supported: deepseek-v3, deepseek-llm)",
                    s.len > 40 ? 40 : (int)s.len, s.ptr);

    es_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return fail(err, errlen, "out of memory");
    t->pre = pre;
    if (load_tokens(t, g, err, errlen) || load_types(t, g, err, errlen) ||
        load_merges(t, g, err, errlen) || build_specials(t, err, errlen))
        goto bad;
    int32_t pad; /* read only to refuse a bad one: nothing here pads */
    if (load_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos, err, errlen) ||
        load_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos, err, errlen) ||
        load_id(g, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk, err, errlen) ||
        load_id(g, "tokenizer.ggml.padding_token_id", t->n_vocab, &pad, err, errlen) ||
        load_eog(t, g, err, errlen))
        goto bad;
    r = es_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos);
    if (r < 0) {
        fail(err, errlen, "tokenizer.ggml.add_bos_token is not a bool");
        goto bad;
    }
    /* Absent: DeepSeek models are all trained with a leading BOS. */
    if (r == 0) t->add_bos = t->bos >= 0;

    for (unsigned b = 0; b < 256; b++) {
        unsigned char u[4];
        size_t n = es_utf8_encode(byte_to_cp(b), u);
        t->byte_tok[b] = vocab_find(t, (const char *)u, n);
    }

    /* The V2 family's template writes "User: " where V3 writes <｜User｜>. */
    t->chat = CHAT_V3;
    if (es_gguf_get_str(g, "tokenizer.chat_template", &s) == 1) {
        static const char v3_user[] = T_USER;
        int has_v3 = 0, has_v2 = 0;
        for (uint64_t i = 0; i < s.len; i++) {
            uint64_t rest = s.len - i;
            if (rest >= sizeof v3_user - 1 && memcmp(s.ptr + i, v3_user, sizeof v3_user - 1) == 0) has_v3 = 1;
            if (rest >= 6 && memcmp(s.ptr + i, "User: ", 6) == 0) has_v2 = 1;
        }
        if (has_v2 && !has_v3) t->chat = CHAT_V2;
    }
    *out = t;
    return 0;
bad:
    es_tokenizer_free(t);
    return -1;
}

int32_t es_tokenizer_n_vocab(const es_tokenizer *t) { return t->n_vocab; }
int32_t es_tokenizer_bos(const es_tokenizer *t) { return t->bos; }
int32_t es_tokenizer_eos(const es_tokenizer *t) { return t->eos; }
int es_tokenizer_add_bos(const es_tokenizer *t) { return t->add_bos; }

int es_tokenizer_is_eog(const es_tokenizer *t, int32_t id) {
    for (size_t i = 0; i < t->n_eog; i++) if (t->eog[i] == id) return 1;
    return 0;
}

size_t es_utf8_complete_prefix(const unsigned char *s, size_t n) {
    return es_utf8_complete_len(s, n);
}

/* ---- pre-tokenizers -----------------------------------------------------
 * Each tokenizer.json "Split" step with behaviour "Isolated" cuts every
 * current piece at the matches of one regex: the matches and the text
 * between them all become pieces, and later steps never see across a cut.
 * So a step is a function that says whether the regex matches at position p
 * of the piece [.., e) and where the match ends; the driver does the
 * leftmost search.  "$" and "(?!\S)" look at the end of the piece, as they
 * do when the regex runs over each piece on its own.  None of the regexes
 * can match the empty string.  Text is in code points (cp) here. */

/* Returns the end of the match at p (> p), or 0 for none.  *resume may be
 * raised past p + 1 when the matcher knows the next positions fail too. */
typedef uint32_t (*match_fn)(const uint32_t *cp, uint32_t p, uint32_t e, uint32_t *resume);

static int is_nl(uint32_t c) { return c == '\r' || c == '\n'; }
static unsigned ucls(uint32_t c) { return es_uc_class(c); }

static uint32_t run_while(const uint32_t *cp, uint32_t p, uint32_t e, int (*in)(uint32_t)) {
    while (p < e && in(cp[p])) p++;
    return p;
}

/* "[class]+": the end of the run at p, or 0 if there is none. */
static uint32_t class_run(const uint32_t *cp, uint32_t p, uint32_t e, int (*in)(uint32_t)) {
    uint32_t q = run_while(cp, p, e, in);
    return q > p ? q : 0;
}

/* "\s?[class]+": one optional whitespace, then a run of the class.  The
 * optional space is tried first, and dropped if no run follows it. */
static uint32_t opt_space_then_run(const uint32_t *cp, uint32_t p, uint32_t e, int (*in)(uint32_t)) {
    if (es_uc_is_space(cp[p]) && p + 1 < e && in(cp[p + 1])) return run_while(cp, p + 1, e, in);
    if (in(cp[p])) return run_while(cp, p, e, in);
    return 0;
}

static int is_number(uint32_t c) { return (ucls(c) & ES_UC_N) != 0; }
static int is_letter_or_mark(uint32_t c) { return (ucls(c) & (ES_UC_L | ES_UC_M)) != 0; }
static int is_punct_or_symbol(uint32_t c) { return (ucls(c) & (ES_UC_P | ES_UC_S)) != 0; }
static int is_ascii_letter(uint32_t c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }

/* The ASCII punctuation and symbols: !"#$%&'()*+,-./ :;<=>?@ [\]^_` {|}~ */
static int is_ascii_punct(uint32_t c) {
    return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) ||
           (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E);
}

/* deepseek-v3, step 1: \p{N}{1,3} */
static uint32_t v3_digits(const uint32_t *cp, uint32_t p, uint32_t e, uint32_t *resume) {
    (void)resume;
    uint32_t q = p;
    while (q < e && q - p < 3 && is_number(cp[q])) q++;
    return q > p ? q : 0;
}

/* deepseek-v3, step 2: [一-龥぀-ゟ゠-ヿ]+ (CJK ideographs U+4E00..U+9FA5,
 * hiragana and katakana U+3040..U+30FF) */
static int in_v3_cjk(uint32_t c) {
    return (c >= 0x4E00 && c <= 0x9FA5) || (c >= 0x3040 && c <= 0x30FF);
}

static uint32_t v3_cjk(const uint32_t *cp, uint32_t p, uint32_t e, uint32_t *resume) {
    (void)resume;
    return class_run(cp, p, e, in_v3_cjk);
}

/* The whitespace alternatives that end deepseek-v3's step 3:
 *   \s*[\r\n]+ | \s+(?!\S) | \s+
 * With W the whitespace run at p: the first takes W up to its last line
 * break; the second takes W if it ends the piece, else W less its last
 * character (so that character can lead the next word); the third takes W. */
static uint32_t space_alternatives(const uint32_t *cp, uint32_t p, uint32_t e) {
    uint32_t q = run_while(cp, p, e, es_uc_is_space);
    if (q == p) return 0;
    for (uint32_t k = q; k > p; k--)
        if (is_nl(cp[k - 1])) return k;
    if (q == e || q - p < 2) return q;
    return q - 1;
}

/* deepseek-v3, step 3, the alternatives in order:
 *   [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+
 *   [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
 *    ?[\p{P}\p{S}]+[\r\n]*
 *   \s*[\r\n]+ | \s+(?!\S) | \s+                                          */
static uint32_t v3_words(const uint32_t *cp, uint32_t p, uint32_t e, uint32_t *resume) {
    (void)resume;
    uint32_t c = cp[p];
    unsigned k = ucls(c);
    uint32_t q;
    if (is_ascii_punct(c) && p + 1 < e && is_ascii_letter(cp[p + 1]))
        return run_while(cp, p + 1, e, is_ascii_letter);
    if (!is_nl(c) && !(k & (ES_UC_L | ES_UC_P | ES_UC_S)) && p + 1 < e && is_letter_or_mark(cp[p + 1]))
        return run_while(cp, p + 1, e, is_letter_or_mark);
    if (k & (ES_UC_L | ES_UC_M)) return run_while(cp, p, e, is_letter_or_mark);
    q = (c == ' ' && p + 1 < e && is_punct_or_symbol(cp[p + 1])) ? p + 1 : p;
    if (is_punct_or_symbol(cp[q])) {
        q = run_while(cp, q, e, is_punct_or_symbol);
        return run_while(cp, q, e, is_nl);
    }
    return space_alternatives(cp, p, e);
}

/* deepseek-llm, step 1: [\r\n] */
static uint32_t llm_newline(const uint32_t *cp, uint32_t p, uint32_t e, uint32_t *resume) {
    (void)e; (void)resume;
    return is_nl(cp[p]) ? p + 1 : 0;
}

/* deepseek-llm, step 2: \s?[A-Za-zµÀ-ÖØ-öø-ƺ...]+ — the letters of the
 * bicameral scripts (Latin, Greek, Cyrillic, Armenian, Georgian, Cherokee,
 * Glagolitic, Coptic, Deseret, Osage, ...), as ranges. */
static const uint32_t llm_letter_ranges[][2] = {
    {0x0041, 0x005A}, {0x0061, 0x007A}, {0x00B5, 0x00B5}, {0x00C0, 0x00D6},
    {0x00D8, 0x00F6}, {0x00F8, 0x01BA}, {0x01BC, 0x01BF}, {0x01C4, 0x0293},
    {0x0295, 0x02AF}, {0x0370, 0x0373}, {0x0376, 0x0377}, {0x037B, 0x037D},
    {0x037F, 0x037F}, {0x0386, 0x0386}, {0x0388, 0x038A}, {0x038C, 0x038C},
    {0x038E, 0x03A1}, {0x03A3, 0x03F5}, {0x03F7, 0x0481}, {0x048A, 0x052F},
    {0x0531, 0x0556}, {0x10A0, 0x10C5}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD},
    {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF}, {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77},
    {0x1D79, 0x1D9A}, {0x1E00, 0x1F15}, {0x1F18, 0x1F1D}, {0x1F20, 0x1F45},
    {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B},
    {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC},
    {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3},
    {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC},
    {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115},
    {0x2119, 0x211D}, {0x2124, 0x2124}, {0x2126, 0x2126}, {0x2128, 0x2128},
    {0x212A, 0x212D}, {0x212F, 0x2134}, {0x2139, 0x2139}, {0x213C, 0x213F},
    {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2C7B},
    {0x2C7E, 0x2CE4}, {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3}, {0xA640, 0xA66D},
    {0xA680, 0xA69B}, {0xA722, 0xA76F}, {0xA771, 0xA787}, {0xA78B, 0xA78E},
    {0xAB70, 0xABBF}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFF21, 0xFF3A},
    {0xFF41, 0xFF5A}, {0x10400, 0x1044F}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB},
    {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
};

static int in_llm_letters(uint32_t c) {
    size_t lo = 0, hi = sizeof llm_letter_ranges / sizeof llm_letter_ranges[0];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c < llm_letter_ranges[mid][0]) hi = mid;
        else if (c > llm_letter_ranges[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

static uint32_t llm_letters(const uint32_t *cp, uint32_t p, uint32_t e, uint32_t *resume) {
    (void)resume;
    return opt_space_then_run(cp, p, e, in_llm_letters);
}

/* deepseek-llm, step 3: \s?[!-/:-~！-／：-～‘-‟　-。]+ */
static int in_llm_punct(uint32_t c) {
    return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x7E) ||
           (c >= 0xFF01 && c <= 0xFF0F) || (c >= 0xFF1A && c <= 0xFF5E) ||
           (c >= 0x2018 && c <= 0x201F) || (c >= 0x3000 && c <= 0x3002);
}

static uint32_t llm_punct(const uint32_t *cp, uint32_t p, uint32_t e, uint32_t *resume) {
    (void)resume;
    return opt_space_then_run(cp, p, e, in_llm_punct);
}

/* deepseek-llm, step 4: \s+$ — the whitespace that ends the piece.  A run
 * that stops short of the end fails at every position inside it too. */
static uint32_t llm_trailing_space(const uint32_t *cp, uint32_t p, uint32_t e, uint32_t *resume) {
    uint32_t q = run_while(cp, p, e, es_uc_is_space);
    if (q == p) return 0;
    if (q == e) return q;
    *resume = q + 1; /* cp[q] is not whitespace, so it fails as well */
    return 0;
}

/* deepseek-llm, step 5: [一-龥ࠀ-一가-퟿]+ */
static int in_llm_cjk(uint32_t c) {
    return (c >= 0x0800 && c <= 0x9FA5) || (c >= 0xAC00 && c <= 0xD7FF);
}

static uint32_t llm_cjk(const uint32_t *cp, uint32_t p, uint32_t e, uint32_t *resume) {
    (void)resume;
    return class_run(cp, p, e, in_llm_cjk);
}

/* deepseek-llm, step 6: \p{N}+ */
static uint32_t llm_digits(const uint32_t *cp, uint32_t p, uint32_t e, uint32_t *resume) {
    (void)resume;
    return class_run(cp, p, e, is_number);
}

static const match_fn pre_v3[] = { v3_digits, v3_cjk, v3_words };
static const match_fn pre_llm[] = { llm_newline, llm_letters, llm_punct, llm_trailing_space,
                                    llm_cjk, llm_digits };

/* One Split step.  Pieces are given by boundaries in[0] = 0 < ... <
 * in[n_in - 1] = length; out receives the refined boundaries (it has room
 * for length + 1, which no refinement can exceed).  Returns their count. */
static size_t split_step(const uint32_t *cp, const uint32_t *in, size_t n_in, uint32_t *out,
                         match_fn fn) {
    size_t n = 0;
    out[n++] = in[0];
    for (size_t s = 0; s + 1 < n_in; s++) {
        uint32_t p = in[s], e = in[s + 1];
        while (p < e) {
            uint32_t resume = p + 1;
            uint32_t m = fn(cp, p, e, &resume);
            if (m > p) {
                if (out[n - 1] != p) out[n++] = p; /* the unmatched gap before */
                out[n++] = m;
                p = m;
            } else {
                p = resume < e ? resume : e;
            }
        }
        if (out[n - 1] != e) out[n++] = e;
    }
    return n;
}

/* ---- BPE ----------------------------------------------------------------
 * A piece starts as one symbol per byte; the adjacent pair with the lowest
 * merge rank is merged until none is left, ties going to the leftmost pair
 * (the order Hugging Face's BPE uses).  A heap holds candidate pairs; an
 * entry is checked when popped, since its symbols may have merged since. */

typedef struct heap_ent {
    int32_t rank;
    uint32_t pos; /* left symbol */
} heap_ent;

typedef struct enc_state {
    const es_tokenizer *t;
    int32_t *ids;       /* output */
    size_t n_ids, cap_ids;
    /* scratch, grown to the longest piece */
    int32_t *sym, *prev, *next;
    heap_ent *heap;
    size_t n_heap, cap_sym;
    char *err;
    size_t errlen;
} enc_state;

static int heap_less(heap_ent a, heap_ent b) {
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void heap_push(enc_state *st, heap_ent v) {
    size_t i = st->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_less(v, st->heap[parent])) break;
        st->heap[i] = st->heap[parent];
        i = parent;
    }
    st->heap[i] = v;
}

static heap_ent heap_pop(enc_state *st) {
    heap_ent top = st->heap[0];
    heap_ent last = st->heap[--st->n_heap];
    size_t i = 0, n = st->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_less(st->heap[c + 1], st->heap[c])) c++;
        if (!heap_less(st->heap[c], last)) break;
        st->heap[i] = st->heap[c];
        i = c;
    }
    if (n) st->heap[i] = last;
    return top;
}

static int push_id(enc_state *st, int32_t id) {
    if (st->n_ids == st->cap_ids) {
        size_t cap = st->cap_ids ? st->cap_ids * 2 : 64;
        int32_t *p = realloc(st->ids, cap * sizeof *p);
        if (!p) return fail(st->err, st->errlen, "out of memory");
        st->ids = p;
        st->cap_ids = cap;
    }
    st->ids[st->n_ids++] = id;
    return 0;
}

static int grow_scratch(enc_state *st, size_t n) {
    if (n <= st->cap_sym) return 0;
    free(st->sym); free(st->prev); free(st->next); free(st->heap);
    st->sym = malloc(n * sizeof *st->sym);
    st->prev = malloc(n * sizeof *st->prev);
    st->next = malloc(n * sizeof *st->next);
    /* at most n - 1 initial pairs plus two per merge (n - 1 merges) */
    st->heap = malloc(3 * n * sizeof *st->heap);
    if (!st->sym || !st->prev || !st->next || !st->heap) {
        st->cap_sym = 0;
        return fail(st->err, st->errlen, "out of memory");
    }
    st->cap_sym = n;
    return 0;
}

static void push_pair(enc_state *st, int32_t left) {
    if (left < 0) return;
    int32_t right = st->next[left];
    if (right < 0) return;
    const merge_slot *m = merge_find(st->t, st->sym[left], st->sym[right]);
    if (m) heap_push(st, (heap_ent){ m->rank, (uint32_t)left });
}

#define DEAD (-2) /* next[] of a symbol merged into its left neighbour */

static int bpe_piece(enc_state *st, const unsigned char *s, size_t n) {
    const es_tokenizer *t = st->t;
    if (n == 0) return 0;
    if (grow_scratch(st, n)) return -1;
    for (size_t i = 0; i < n; i++) {
        st->sym[i] = t->byte_tok[s[i]];
        st->prev[i] = (int32_t)i - 1;
        st->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    st->n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++) push_pair(st, (int32_t)i);
    while (st->n_heap) {
        heap_ent h = heap_pop(st);
        int32_t a = (int32_t)h.pos, b = st->next[a];
        if (b < 0) continue; /* a was merged away, or is now last */
        const merge_slot *m = merge_find(t, st->sym[a], st->sym[b]);
        if (!m || m->rank != h.rank) continue; /* stale */
        st->sym[a] = m->result;
        st->next[a] = st->next[b];
        if (st->next[b] >= 0) st->prev[st->next[b]] = a;
        st->next[b] = DEAD;
        push_pair(st, st->prev[a]);
        push_pair(st, a);
    }
    for (int32_t i = 0; i >= 0; i = st->next[i]) {
        int32_t id = st->sym[i];
        if (id < 0) {
            /* Only a vocabulary without all 256 byte tokens gets here. */
            if (t->unk < 0)
                return fail(st->err, st->errlen, "byte 0x%02X has no token and there is no unknown token",
                            s[i]);
            id = t->unk;
        }
        if (push_id(st, id)) return -1;
    }
    return 0;
}

/* Pre-tokenizes and BPE-encodes text that holds no special tokens. */
static int encode_plain(enc_state *st, const char *text, size_t len) {
    if (len == 0) return 0;
    /* cp[i] starts at byte off[i]; off[n] = len.  bounds ping-pongs with
     * bounds2 through the split steps. */
    uint32_t *cp = malloc(len * sizeof *cp);
    uint32_t *off = malloc((len + 1) * sizeof *off);
    uint32_t *bounds = malloc((len + 1) * sizeof *bounds);
    uint32_t *bounds2 = malloc((len + 1) * sizeof *bounds2);
    int rc = 0;
    if (!cp || !off || !bounds || !bounds2) {
        rc = fail(st->err, st->errlen, "out of memory");
        goto done;
    }
    uint32_t n = 0;
    for (size_t i = 0; i < len;) {
        off[n] = (uint32_t)i;
        i += es_utf8_decode((const unsigned char *)text + i, len - i, &cp[n]);
        n++;
    }
    off[n] = (uint32_t)len;
    const match_fn *steps = st->t->pre == PRE_DEEPSEEK_V3 ? pre_v3 : pre_llm;
    size_t n_steps = st->t->pre == PRE_DEEPSEEK_V3 ? sizeof pre_v3 / sizeof pre_v3[0]
                                                   : sizeof pre_llm / sizeof pre_llm[0];
    bounds[0] = 0;
    bounds[1] = n;
    size_t nb = 2;
    for (size_t k = 0; k < n_steps; k++) {
        nb = split_step(cp, bounds, nb, bounds2, steps[k]);
        uint32_t *tmp = bounds; bounds = bounds2; bounds2 = tmp;
    }
    for (size_t i = 0; i + 1 < nb && rc == 0; i++) {
        uint32_t b = off[bounds[i]], e = off[bounds[i + 1]];
        rc = bpe_piece(st, (const unsigned char *)text + b, e - b);
    }
done:
    free(cp); free(off); free(bounds); free(bounds2);
    return rc;
}

/* The longest special token that starts at text[i], or -1. */
static int32_t match_special(const es_tokenizer *t, const char *text, size_t len, size_t i,
                             size_t *mlen) {
    const unsigned char *u = (const unsigned char *)text + i;
    size_t rest = len - i;
    int pair = rest >= 2 && get_bit(t->special_pair, (size_t)u[0] << 8 | u[1]);
    int single = get_bit(t->special_first, u[0]);
    if (!pair && !single) return -1;
    for (size_t k = 0; k < t->n_special_lens; k++) {
        size_t L = t->special_lens[k];
        if (L > rest || (L == 1 && !single) || (L > 1 && !pair)) continue;
        int32_t id = vocab_find(t, text + i, L);
        if (id >= 0 && is_special_type(t->tok_type[id])) {
            *mlen = L;
            return id;
        }
    }
    return -1;
}

/* es_tokenizer_encode, with n_plain sorted, disjoint byte ranges
 * [plain[2k], plain[2k+1]) of text in which no special token may be matched
 * (not even one that only starts or ends there): text there is always
 * ordinary text.  Outside them, parse_special as usual. */
static int encode_ranges(const es_tokenizer *t, const char *text, size_t len, int add_bos, int parse_special,
                         const size_t *plain, size_t n_plain, int32_t **ids, size_t *n_ids, char *err,
                         size_t errlen) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && len) return fail(err, errlen, "NULL text");
    if (len >= UINT32_MAX) return fail(err, errlen, "text of %zu bytes is too long", len);
    enc_state st = { .t = t, .err = err, .errlen = errlen };
    int rc = 0;
    if (add_bos && t->bos >= 0) rc = push_id(&st, t->bos);
    size_t start = 0;
    if (parse_special && t->n_special_lens) {
        /* Leftmost-longest: the earliest special token wins, and of those
         * starting there the longest. */
        size_t r = 0; /* the first plain range not wholly before i */
        for (size_t i = 0; i < len && rc == 0;) {
            while (r < n_plain && plain[2 * r + 1] <= i) r++;
            if (r < n_plain && plain[2 * r] <= i) { i = plain[2 * r + 1]; continue; }
            size_t mlen = 0;
            int32_t id = match_special(t, text, len, i, &mlen);
            if (id >= 0 && r < n_plain && i + mlen > plain[2 * r]) id = -1; /* would reach into plain text */
            if (id < 0) { i++; continue; }
            rc = encode_plain(&st, text + start, i - start);
            if (rc == 0) rc = push_id(&st, id);
            i += mlen;
            start = i;
        }
    }
    if (rc == 0) rc = encode_plain(&st, text + start, len - start);
    free(st.sym); free(st.prev); free(st.next); free(st.heap);
    if (rc) {
        free(st.ids);
        return -1;
    }
    if (!st.ids) st.ids = malloc(sizeof *st.ids); /* a valid pointer for empty output */
    if (!st.ids) return fail(err, errlen, "out of memory");
    *ids = st.ids;
    *n_ids = st.n_ids;
    return 0;
}

int es_tokenizer_encode(const es_tokenizer *t, const char *text, size_t len,
                        int add_bos, int parse_special,
                        int32_t **ids, size_t *n_ids, char *err, size_t errlen) {
    return encode_ranges(t, text, len, add_bos, parse_special, NULL, 0, ids, n_ids, err, errlen);
}

/* ---- decoding ---------------------------------------------------------- */

static void put_byte(char *buf, size_t cap, size_t *n, unsigned char b) {
    if (*n < cap) buf[*n] = (char)b;
    (*n)++;
}

static int hex_val(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int es_tokenizer_piece(const es_tokenizer *t, int32_t id, char *buf, size_t cap) {
    if (!t || id < 0 || id >= t->n_vocab) return -1;
    const char *s = t->text + t->tok_off[id];
    size_t len = t->tok_len[id], n = 0;
    uint8_t type = t->tok_type[id];
    if (!buf) cap = 0;
    if (type == TT_BYTE && len == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' &&
        hex_val(s[3]) >= 0 && hex_val(s[4]) >= 0) {
        put_byte(buf, cap, &n, (unsigned char)(hex_val(s[3]) * 16 + hex_val(s[4])));
        return (int)n;
    }
    if (type == TT_CONTROL || type == TT_USER_DEFINED || type == TT_UNKNOWN || type == TT_UNUSED) {
        /* Stored as plain text, not byte-level encoded. */
        for (size_t i = 0; i < len; i++) put_byte(buf, cap, &n, (unsigned char)s[i]);
        return (int)n;
    }
    for (size_t i = 0; i < len;) {
        uint32_t c;
        size_t k = es_utf8_decode((const unsigned char *)s + i, len - i, &c);
        int b = c == ES_UCP_INVALID ? -1 : cp_to_byte(c);
        if (b >= 0) {
            put_byte(buf, cap, &n, (unsigned char)b);
        } else {
            /* Not a byte-level character (a hand-made or damaged vocab):
             * give its own UTF-8 rather than lose it. */
            for (size_t j = 0; j < k; j++) put_byte(buf, cap, &n, (unsigned char)s[i + j]);
        }
        i += k;
    }
    return (int)n;
}

/* ---- chat format ------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
    /* where message contents went: [plain[2k], plain[2k+1]) */
    size_t *plain;
    size_t n_plain, cap_plain;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) { b->oom = 1; return; }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* A message's content: text the user wrote, never read as special tokens
 * by es_tokenizer_chat_encode. */
static void sb_content(sbuf *b, const char *s) {
    size_t start = b->n, len = strlen(s);
    sb_put(b, s, len);
    if (b->oom || !len) return;
    if (b->n_plain && b->plain[2 * b->n_plain - 1] == start) { /* adjacent: one range */
        b->plain[2 * b->n_plain - 1] = b->n;
        return;
    }
    if (b->n_plain == b->cap_plain) {
        size_t cap = b->cap_plain ? 2 * b->cap_plain : 8;
        size_t *q = realloc(b->plain, 2 * cap * sizeof *q);
        if (!q) { b->oom = 1; return; }
        b->plain = q;
        b->cap_plain = cap;
    }
    b->plain[2 * b->n_plain] = start;
    b->plain[2 * b->n_plain + 1] = b->n;
    b->n_plain++;
}


/* The text of token id if it is a control token, else fallback. */
static void sb_special(sbuf *b, const es_tokenizer *t, int32_t id, const char *fallback) {
    if (id >= 0 && t->tok_type[id] == TT_CONTROL) sb_put(b, t->text + t->tok_off[id], t->tok_len[id]);
    else sb_str(b, fallback);
}

/* DeepSeek V3's template (the tokenizer.chat_template of the release):
 * bos, then every system message (the first as is, later ones after a
 * blank line), then the turns; tool results are wrapped in the tool-output
 * markers and close with tool-outputs-end before the next assistant text. */
static void render_v3(sbuf *b, const es_tokenizer *t, const es_chat_msg *m, size_t n, int add_gen) {
    sb_special(b, t, t->bos, T_BOS);
    int first_sys = 1;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(m[i].role, "system") != 0) continue;
        if (!first_sys) sb_str(b, "\n\n");
        sb_content(b, m[i].content);
        first_sys = 0;
    }
    int in_tool = 0, first_output = 1;
    for (size_t i = 0; i < n; i++) {
        const char *role = m[i].role;
        if (strcmp(role, "user") == 0) {
            in_tool = 0;
            sb_str(b, T_USER);
            sb_content(b, m[i].content);
        } else if (strcmp(role, "assistant") == 0) {
            sb_str(b, in_tool ? T_OUTPUTS_END : T_ASSISTANT);
            in_tool = 0;
            sb_content(b, m[i].content);
            sb_str(b, T_EOS);
        } else if (strcmp(role, "tool") == 0) {
            in_tool = 1;
            sb_str(b, first_output ? T_OUTPUTS_BEGIN T_OUTPUT_BEGIN : "\n" T_OUTPUT_BEGIN);
            first_output = 0;
            sb_content(b, m[i].content);
            sb_str(b, T_OUTPUT_END);
        }
    }
    if (in_tool) sb_str(b, T_OUTPUTS_END);
    else if (add_gen) sb_str(b, T_ASSISTANT);
}

/* DeepSeek V2 / LLM: "User: ...\n\n", "Assistant: ...<eos>", system text
 * followed by a blank line, in message order. */
static void render_v2(sbuf *b, const es_tokenizer *t, const es_chat_msg *m, size_t n, int add_gen) {
    sb_special(b, t, t->bos, T_BOS);
    for (size_t i = 0; i < n; i++) {
        const char *role = m[i].role;
        if (strcmp(role, "user") == 0) {
            sb_str(b, "User: ");
            sb_content(b, m[i].content);
            sb_str(b, "\n\n");
        } else if (strcmp(role, "assistant") == 0) {
            sb_str(b, "Assistant: ");
            sb_content(b, m[i].content);
            sb_special(b, t, t->eos, T_EOS);
        } else {
            sb_content(b, m[i].content);
            sb_str(b, "\n\n");
        }
    }
    if (add_gen) sb_str(b, "Assistant:");
}

/* Checks the messages and renders them into b. */
static int chat_render(const es_tokenizer *t, const es_chat_msg *msgs, size_t n, int add_generation_prompt,
                       sbuf *b, char *err, size_t errlen) {
    if (n && !msgs) return fail(err, errlen, "NULL message list");
    for (size_t i = 0; i < n; i++) {
        const char *role = msgs[i].role;
        if (!role || !msgs[i].content) return fail(err, errlen, "message %zu has no role or content", i);
        int ok = strcmp(role, "system") == 0 || strcmp(role, "user") == 0 ||
                 strcmp(role, "assistant") == 0 || (t->chat == CHAT_V3 && strcmp(role, "tool") == 0);
        if (!ok) return fail(err, errlen, "message %zu has unsupported role '%.40s'", i, role);
    }
    if (t->chat == CHAT_V2) render_v2(b, t, msgs, n, add_generation_prompt);
    else render_v3(b, t, msgs, n, add_generation_prompt);
    sb_put(b, "", 0); /* a NUL-terminated string even when empty */
    if (b->oom) {
        free(b->p);
        free(b->plain);
        return fail(err, errlen, "out of memory");
    }
    return 0;
}

int es_tokenizer_chat(const es_tokenizer *t, const es_chat_msg *msgs, size_t n,
                      int add_generation_prompt, char **out, char *err, size_t errlen) {
    *out = NULL;
    sbuf b = { 0 };
    if (chat_render(t, msgs, n, add_generation_prompt, &b, err, errlen) != 0) return -1;
    free(b.plain);
    *out = b.p;
    return 0;
}

int es_tokenizer_chat_encode(const es_tokenizer *t, const es_chat_msg *msgs, size_t n,
                             int add_generation_prompt, int32_t **ids, size_t *n_ids, char *err,
                             size_t errlen) {
    *ids = NULL;
    *n_ids = 0;
    sbuf b = { 0 };
    if (chat_render(t, msgs, n, add_generation_prompt, &b, err, errlen) != 0) return -1;
    /* the template's special tokens are matched; the messages' text never */
    int rc = encode_ranges(t, b.p, b.n, 0, 1, b.plain, b.n_plain, ids, n_ids, err, errlen);
    free(b.p);
    free(b.plain);
    return rc;
}
