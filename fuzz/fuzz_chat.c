/* fuzz_chat.c — owns: the libFuzzer harness of the chat renderer
 * (es_tokenizer_chat, which es_chat_render calls).
 *
 * Input: the first byte picks a vocabulary (byte % n; the table has both
 * the V3 chat format and the V2 "User: " one) and add_generation_prompt
 * (bit 7); the rest is split at NUL bytes into role, content, role,
 * content, ...  A role of one byte names a role from a list (the four the
 * renderer knows, and near misses); a longer one is used as it is, so
 * roles are arbitrary bytes too.  Contents are arbitrary bytes but NUL.
 * Checked beyond not crashing:
 *   - a role the flavour does not support fails with a message, and only
 *     then: every list of supported roles renders;
 *   - the output starts with the BOS text and holds every content, in the
 *     order the format puts them (V3: the system messages first, then the
 *     turns; V2: message order), and ends with the generation prompt when
 *     asked for (V3: unless a tool result is the last turn);
 *   - the rendered text encodes (special tokens on) to ids in range.
 * Built and run by fuzz/run.sh chat; not part of `make test`.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_vocab.h"
#include "tokenizer.h"

#define MAX_MSGS 64

static const char *const named_roles[] = { "system", "user", "assistant", "tool", "", "User", "assistant ",
                                           "tools" };
#define N_NAMED (sizeof named_roles / sizeof named_roles[0])

static int role_ok(const char *role, int v2) {
    return !strcmp(role, "system") || !strcmp(role, "user") || !strcmp(role, "assistant") ||
           (!v2 && !strcmp(role, "tool"));
}

/* Finds each content in turn from *at on; the ones `pick` selects. */
static void find_in_order(const fuzz_vocab *v, const char *out, size_t out_len, size_t *at,
                          const es_chat_msg *m, size_t n, int system) {
    for (size_t i = 0; i < n; i++) {
        if (system >= 0 && (strcmp(m[i].role, "system") == 0) != system) continue;
        size_t cl = strlen(m[i].content);
        const char *p = memmem(out + *at, out_len - *at, m[i].content, cl);
        if (!p) fuzz_fail(v, "a message's content is missing from the output, or out of order");
        *at = (size_t)(p - out) + cl;
    }
}

static int ends_with(const char *s, size_t n, const char *suf) {
    size_t k = strlen(suf);
    return n >= k && memcmp(s + n - k, suf, k) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t nv;
    const fuzz_vocab *vs = fuzz_vocabs(&nv);
    if (size < 1) return 0;
    const fuzz_vocab *v = &vs[data[0] % nv];
    int add_gen = data[0] >> 7;
    /* NUL-terminated fields: a copy with one NUL more at the end */
    char *buf = malloc(size);
    if (!buf) return 0;
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = 0;
    es_chat_msg msgs[MAX_MSGS];
    size_t n = 0;
    int all_ok = 1;
    for (char *p = buf; p < buf + size - 1 && n < MAX_MSGS;) {
        char *role = p;
        p += strlen(p) + 1;
        if (p >= buf + size) break; /* a role without content */
        char *content = p;
        p += strlen(p) + 1;
        if (strlen(role) == 1) role = (char *)named_roles[(unsigned char)role[0] % N_NAMED];
        msgs[n].role = role;
        msgs[n].content = content;
        all_ok &= role_ok(role, v->chat_v2);
        n++;
    }
    char *out = NULL, err[256] = "";
    int rc = es_tokenizer_chat(v->tok, msgs, n, add_gen, &out, err, sizeof err);
    if (rc != 0) {
        if (all_ok) fuzz_fail(v, "supported roles refused");
        if (!err[0]) fuzz_fail(v, "refused without a message");
        if (out) fuzz_fail(v, "output left on failure");
        free(buf);
        return 0;
    }
    if (!all_ok) fuzz_fail(v, "an unsupported role was rendered");
    size_t out_len = strlen(out), at = 0;
    /* the BOS text: the piece of the BOS id, or DeepSeek's marker */
    int32_t bos = es_tokenizer_bos(v->tok);
    char bos_text[256];
    int bl = bos >= 0 ? es_tokenizer_piece(v->tok, bos, bos_text, sizeof bos_text) : -1;
    if (bl > 0 && (size_t)bl <= sizeof bos_text && (out_len < (size_t)bl || memcmp(out, bos_text, (size_t)bl)))
        fuzz_fail(v, "the output does not start with the BOS");
    if (v->chat_v2) {
        find_in_order(v, out, out_len, &at, msgs, n, -1);
        if (add_gen && !ends_with(out, out_len, "Assistant:")) fuzz_fail(v, "no generation prompt (V2)");
    } else {
        find_in_order(v, out, out_len, &at, msgs, n, 1);
        find_in_order(v, out, out_len, &at, msgs, n, 0);
        int last_tool = 0; /* a tool result after the last user or assistant turn */
        for (size_t i = 0; i < n; i++)
            if (strcmp(msgs[i].role, "system") != 0) last_tool = strcmp(msgs[i].role, "tool") == 0;
        if (add_gen && !last_tool && !ends_with(out, out_len, "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>"))
            fuzz_fail(v, "no generation prompt (V3)");
    }
    int32_t *ids;
    size_t n_ids;
    if (es_tokenizer_encode(v->tok, out, out_len, 0, 1, &ids, &n_ids, err, sizeof err) == 0) {
        int32_t nvocab = es_tokenizer_n_vocab(v->tok);
        for (size_t i = 0; i < n_ids; i++)
            if (ids[i] < 0 || ids[i] >= nvocab) fuzz_fail(v, "id of the rendered text out of range");
        free(ids);
    } else if (v->lossless) {
        fuzz_fail(v, "the rendered text does not encode");
    }
    free(out);
    free(buf);
    return 0;
}
