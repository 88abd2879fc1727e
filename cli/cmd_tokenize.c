/* cmd_tokenize.c — `edgeseek tokenize -m MODEL (-p TEXT | -f FILE)`: the
 * token ids of a text, comma-separated; a vocabulary-only GGUF will do. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "edgeseek.h"

static void usage_tokenize(FILE *f) {
    fprintf(f, "usage: edgeseek tokenize -m MODEL (-p TEXT | -f FILE) [--bos] [--no-special]\n"
               "  Prints token ids, comma-separated.  No BOS unless --bos.  Special tokens in\n"
               "  the text are matched whole unless --no-special.  Works on vocab-only GGUFs.\n"
               "  -f FILE: a regular file of at most 64 MiB without NUL bytes (-: standard input).\n");
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *text = NULL, *file = NULL;
    int bos = 0, special = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage_tokenize(stdout); return 0; }
        if (!strcmp(argv[i], "--bos")) { bos = 1; continue; }
        if (!strcmp(argv[i], "--no-special")) { special = 0; continue; }
        if (i + 1 >= argc) return cli_usage_error(NULL, "edgeseek tokenize: %s needs a value\n", argv[i]);
        if (!strcmp(argv[i], "-m")) model = argv[++i];
        else if (!strcmp(argv[i], "-p")) text = argv[++i];
        else if (!strcmp(argv[i], "-f")) file = argv[++i];
        else return cli_usage_error(usage_tokenize, "edgeseek tokenize: unknown option %s\n", argv[i]);
    }
    if (!model || (!text == !file)) { usage_tokenize(stderr); return 2; }
    char *buf;
    size_t len;
    if (cli_text_arg(text, file, &buf, &text, &len) != 0) return 1;
    es_model *m = cli_load_model(model, &(es_load_params){.vocab_only = 1});
    if (!m) { free(buf); return 1; }
    int32_t *ids = NULL;
    size_t n = 0;
    char err[512];
    int rc = 0;
    if (cli_failed(es_tokenize(m, text, len, bos, special, &ids, &n, err, sizeof err), err)) {
        rc = 1;
    } else {
        for (size_t i = 0; i < n; i++) printf("%s%d", i ? "," : "", ids[i]);
        printf("\n");
    }
    free(ids);
    free(buf);
    es_model_free(m);
    return rc;
}
