/* test_session_file.c — saved sessions (runtime/session_file.c,
 * es_session_save / es_session_load).
 *
 * 1. Save, load into a fresh session, continue: the logits equal one
 *    uninterrupted run bit for bit, for every cache type, and the loaded
 *    session knows its tokens.
 * 2. Every refusal, with its status and message, and what it leaves in
 *    the session: another model, another cache type, a context too small,
 *    another version, not a session file, truncated, corrupted (checksum),
 *    a missing file, an unwritable target.
 * 3. A loop of random truncations and bit flips of a session file: never
 *    loaded, never a crash (run it under `make asan-test` for the memory
 *    checks).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgeseek.h"
#include "testutil.h"

static char dir[] = "/tmp/es_sess_XXXXXX";
static char path_a[64], path_b[64];

static uint64_t rng = 0x853c49e6748fea9bull;
static uint32_t rnd(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng >> 33);
}

static es_model *load(const char *path) {
    char err[512];
    es_model *m = NULL;
    es_load_params lp = {0};
    if (es_model_load(path, &lp, &m, err, sizeof err) != ES_OK) CHECK(0, "load %s: %s", path, err);
    return m;
}

static es_session *session(es_model *m, int n_ctx, int kv) {
    char err[512];
    es_session *s = NULL;
    const es_session_params p = {.n_ctx = n_ctx, .kv_type = kv};
    if (es_session_new_ext(m, &p, &s, err, sizeof err) != ES_OK) CHECK(0, "session: %s", err);
    return s;
}

enum { N_PROMPT = 40, N_CONT = 12, CTX = 64 };

/* ---- 1. save, load, continue ------------------------------------------------------- */

static void roundtrip(es_model *m, const int32_t *prompt, const int32_t *cont) {
    static const int kvs[] = {ES_KV_F32, ES_KV_F16, ES_KV_BF16, ES_KV_Q8_0};
    const int V = es_model_n_vocab(m);
    float *la = malloc(sizeof(float) * (size_t)V * N_CONT), *lb = malloc(sizeof(float) * (size_t)V * N_CONT);
    for (size_t k = 0; k < sizeof kvs / sizeof kvs[0]; k++) {
        char err[512];
        es_session *a = session(m, CTX, kvs[k]), *b = session(m, CTX, kvs[k]);
        if (!a || !b || !la || !lb) break;
        CHECK(es_session_eval(a, prompt, N_PROMPT, NULL, 0, err, sizeof err) == ES_OK, "prefill: %s", err);
        CHECK(es_session_save(a, path_a, err, sizeof err) == ES_OK, "save: %s", err);
        CHECK(test_decode_each(a, cont, N_CONT, la, V) == 0, "uninterrupted run");
        CHECK(es_session_load(b, path_a, err, sizeof err) == ES_OK, "load (%s): %s", es_kv_type_name(kvs[k]), err);
        CHECK(es_session_pos(b) == N_PROMPT && !memcmp(es_session_tokens(b), prompt, sizeof(int32_t) * N_PROMPT),
              "the loaded session holds the prompt's %d tokens", N_PROMPT);
        CHECK(test_decode_each(b, cont, N_CONT, lb, V) == 0 && !memcmp(la, lb, sizeof(float) * (size_t)V * N_CONT),
              "cache %s: save, load, continue equals the uninterrupted run bit for bit", es_kv_type_name(kvs[k]));
        /* a session that already held something is replaced */
        CHECK(es_session_load(a, path_a, err, sizeof err) == ES_OK && es_session_pos(a) == N_PROMPT,
              "loading into a used session replaces its contents");
        es_session_free(a);
        es_session_free(b);
    }
    free(la), free(lb);
}

/* ---- 2. refusals -------------------------------------------------------------------- */

/* load of path into s gives st with needle in the message, and leaves s at
 * position pos */
static void refused(es_session *s, const char *path, es_status st, const char *needle, int pos, const char *what) {
    char err[512] = "";
    es_status got = es_session_load(s, path, err, sizeof err);
    CHECK(got == st && strstr(err, needle) && es_session_pos(s) == pos,
          "%s: status %d (want %d), message '%s' (want '%s'), position %d (want %d)", what, got, st, err, needle,
          es_session_pos(s), pos);
}

static void refusals(es_model *m, es_model *other, const int32_t *prompt) {
    char err[512];
    es_session *s = session(m, CTX, ES_KV_F16);
    if (!s) return;
    CHECK(es_session_eval(s, prompt, N_PROMPT, NULL, 0, err, sizeof err) == ES_OK, "prefill: %s", err);
    CHECK(es_session_save(s, path_a, err, sizeof err) == ES_OK, "save: %s", err);
    size_t len;
    uint8_t *file = test_read_file(path_a, &len);
    if (!file) {
        CHECK(0, "read back %s", path_a);
        es_session_free(s);
        return;
    }
    /* a session holding 3 tokens, to see what each refusal leaves */
    es_session *t = session(m, CTX, ES_KV_F16);
    CHECK(t && es_session_eval(t, prompt, 3, NULL, 0, err, sizeof err) == ES_OK, "eval 3 tokens");
    es_session *o = other ? session(other, CTX, ES_KV_F16) : NULL;
    if (o) {
        CHECK(es_session_eval(o, prompt, 3, NULL, 0, err, sizeof err) == ES_OK, "eval 3 tokens");
        refused(o, path_a, ES_ERR_UNSUPPORTED, "another model", 3, "another model");
    }
    es_session *q = session(m, CTX, ES_KV_Q8_0);
    if (q) refused(q, path_a, ES_ERR_UNSUPPORTED, "f16 KV cache", 0, "another cache type");
    es_session *small = session(m, N_PROMPT - 1, ES_KV_F16);
    if (small) refused(small, path_a, ES_ERR_UNSUPPORTED, "context", 0, "a context smaller than the file's tokens");
    refused(t, test_data_path("golden/v3-tiny/model.gguf"), ES_ERR_FORMAT, "not an edgeseek session file", 3,
            "not a session file");
    refused(t, "tests/data/no-such-session", ES_ERR_IO, "no-such-session", 3, "a missing file");
    /* another version: the header's version field */
    uint8_t *copy = malloc(len);
    memcpy(copy, file, len);
    copy[8] ^= 0x7f;
    CHECK(test_write_file(path_b, copy, len) == 0, "write");
    refused(t, path_b, ES_ERR_UNSUPPORTED, "version", 3, "another version");
    /* truncated: at several lengths, the header's and the payload's */
    const size_t cuts[] = {0, 7, 63, 64, 71, len / 2, len - 8, len - 1};
    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
        CHECK(test_write_file(path_b, file, cuts[c]) == 0, "write");
        refused(t, path_b, ES_ERR_FORMAT, cuts[c] < 72 ? "too short" : "truncated", 3, "truncated");
    }
    /* a byte too many */
    memcpy(copy, file, len);
    FILE *f = fopen(path_b, "wb");
    CHECK(f && fwrite(copy, 1, len, f) == len && fputc(0, f) == 0 && fclose(f) == 0, "write");
    refused(t, path_b, ES_ERR_FORMAT, "damaged", 3, "a trailing byte");
    /* corrupted: one bit of a token, of a row, of the checksum */
    const size_t spots[] = {64 + 4, 64 + 4 * N_PROMPT + 1, len / 2, len - 4};
    for (size_t k = 0; k < sizeof spots / sizeof spots[0]; k++) {
        memcpy(copy, file, len);
        copy[spots[k]] ^= 0x10;
        CHECK(test_write_file(path_b, copy, len) == 0, "write");
        refused(t, path_b, ES_ERR_FORMAT, "checksum", 0, "corrupted");
        CHECK(es_session_eval(t, prompt, 3, NULL, 0, err, sizeof err) == ES_OK, "a refused session runs again");
    }
    /* an unwritable target: an error, and nothing left behind */
    CHECK(es_session_save(s, "tests/data/no-such-dir/x.session", err, sizeof err) != ES_OK && strstr(err, "no-such-dir"),
          "save into a missing directory fails with a message: %s", err);
    free(copy), free(file);
    es_session_free(s), es_session_free(t), es_session_free(o), es_session_free(q), es_session_free(small);
}

/* ---- 3. fuzz-ish ---------------------------------------------------------------------- */

static void mutations(es_model *m, const int32_t *prompt) {
    char err[512];
    es_session *s = session(m, CTX, ES_KV_Q8_0);
    if (!s) return;
    CHECK(es_session_eval(s, prompt, N_PROMPT, NULL, 0, err, sizeof err) == ES_OK, "prefill: %s", err);
    CHECK(es_session_save(s, path_a, err, sizeof err) == ES_OK, "save: %s", err);
    size_t len;
    uint8_t *file = test_read_file(path_a, &len), *copy = file ? malloc(len) : NULL;
    int loaded = 0, n = 0;
    for (int it = 0; copy && it < 300; it++) {
        memcpy(copy, file, len);
        size_t n_out = len;
        const uint32_t kind = rnd() % 4;
        if (kind != 1) n_out = rnd() % len; /* truncate */
        if (kind != 0) {                    /* flip 1..4 bits */
            for (uint32_t b = 0, nb = 1 + rnd() % 4; b < nb && n_out; b++) copy[rnd() % n_out] ^= (uint8_t)(1u << (rnd() % 8));
        }
        if (n_out == len && !memcmp(copy, file, len)) continue;
        if (test_write_file(path_b, copy, n_out) != 0) break;
        loaded += es_session_load(s, path_b, err, sizeof err) == ES_OK;
        n++;
    }
    CHECK(n >= 250 && loaded == 0, "%d of %d truncated or flipped session files loaded", loaded, n);
    CHECK(es_session_load(s, path_a, err, sizeof err) == ES_OK && es_session_pos(s) == N_PROMPT,
          "the intact file still loads: %s", err);
    free(copy), free(file);
    es_session_free(s);
}

int main(void) {
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp");
        return test_summary();
    }
    snprintf(path_a, sizeof path_a, "%s/a.session", dir);
    snprintf(path_b, sizeof path_b, "%s/b.session", dir);
    const char *mp = "models/edgeseek-default.gguf", *op = test_data_path("golden/v3-stress/model.gguf");
    if (test_need_file(mp) && test_need_file(op)) {
        es_model *m = load(mp), *other = load(op);
        int32_t prompt[N_PROMPT], cont[N_CONT];
        for (int i = 0; i < N_PROMPT; i++) prompt[i] = (int32_t)(5 + (i * 37) % 300);
        for (int i = 0; i < N_CONT; i++) cont[i] = (int32_t)(7 + (i * 53) % 300);
        if (m) {
            roundtrip(m, prompt, cont);
            refusals(m, other, prompt);
            mutations(m, prompt);
        }
        es_model_free(m);
        es_model_free(other);
    }
    unlink(path_a), unlink(path_b), rmdir(dir);
    return test_summary();
}
