/* session.c — the CLI's KV cache options: --kv-type's parsing and --session
 * FILE (a saved prompt, as llama.cpp's --prompt-cache): load a file when it
 * fits (run and chat), restore the longest prefix of the prompt the file
 * holds, and save the prompt's state when the file did not hold exactly
 * that prompt. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

int cli_parse_kv_type(const char *v, int *out) {
    char err[256];
    if (es_kv_type_parse(v, out, err, sizeof err) == ES_OK) return 0;
    fprintf(stderr, "edgeseek: --kv-type: %s\n", err);
    return -1;
}

/* Whether path begins with the session magic (a file we may replace). */
static int is_session_file(const char *path) {
    char magic[sizeof ES_SESSION_MAGIC - 1];
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(magic, 1, sizeof magic, f);
    fclose(f);
    return n == sizeof magic && !memcmp(magic, ES_SESSION_MAGIC, sizeof magic);
}

int cli_session_open(es_session *s, const char *path, const char *what) {
    char err[512];
    struct stat sb;
    if (stat(path, &sb) != 0 && errno == ENOENT) return 0; /* nothing saved yet */
    es_status st = es_session_load(s, path, err, sizeof err);
    if (st == ES_OK) return 1;
    if (st == ES_ERR_IO || !is_session_file(path)) {
        fprintf(stderr, "edgeseek: --session: %s (not replaced)\n", err);
        return -1;
    }
    fprintf(stderr, "edgeseek: --session: %s; %s and replacing it\n", err, what);
    es_session_reset(s);
    return 0;
}

int cli_session_restore(es_session *s, const char *path, const int32_t *ids, int n, int *file_tokens) {
    char err[512];
    *file_tokens = -1;
    int got = cli_session_open(s, path, "prefilling the prompt");
    if (got <= 0) return got;
    const int held = es_session_pos(s);
    const int32_t *t = es_session_tokens(s);
    int match = 0;
    while (match < held && match < n && t[match] == ids[match]) match++;
    /* the last prompt token always runs again: its logits pick the first
     * generated token */
    int keep = match < n - 1 ? match : n - 1;
    if (cli_failed(es_session_truncate(s, keep, err, sizeof err), err)) return -1;
    *file_tokens = held == match && held == n ? n : held;
    return keep;
}

int cli_session_keep(es_session *s, const char *path, int file_tokens, int n) {
    if (file_tokens == n) return 0; /* the file holds this prompt already */
    char err[512];
    return cli_failed(es_session_save(s, path, err, sizeof err), err) ? -1 : 0;
}
