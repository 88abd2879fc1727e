/* cmd_logits.c — `edgeseek logits -m MODEL --tokens ID,ID,... -o FILE`: the
 * logits of every position of one prefill, as raw float32, for comparing
 * with other implementations. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "edgeseek.h"

static void usage_logits(FILE *f) {
    fprintf(f, "usage: edgeseek logits -m MODEL --tokens ID,ID,... -o FILE\n"
               "  Writes float32 little-endian logits of every position, [n_tokens][n_vocab],\n"
               "  from one prefill starting at position 0.  FILE is replaced only when complete\n"
               "  (written to a temporary beside it, then renamed); on failure it is untouched.\n");
}

/* Parses "1,2,3" into a malloc'd array. */
static int parse_ids(const char *s, int32_t **out, int *n) {
    int cap = 16, len = 0;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    if (!ids) return -1;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX) { free(ids); return -1; }
        if (len == cap) {
            int32_t *t = realloc(ids, sizeof(int32_t) * (size_t)(cap *= 2));
            if (!t) { free(ids); return -1; }
            ids = t;
        }
        ids[len++] = (int32_t)v;
        p = end;
        while (*p == ' ' || *p == '\n' || *p == '\t') p++;
        if (*p == ',') p++;
        else if (*p) { free(ids); return -1; }
    }
    if (!len) { free(ids); return -1; }
    *out = ids;
    *n = len;
    return 0;
}

int cmd_logits(int argc, char **argv) {
    const char *model = NULL, *tokens = NULL, *outp = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage_logits(stdout); return 0; }
        if (i + 1 >= argc) return cli_usage_error(usage_logits, "edgeseek logits: %s needs a value\n", argv[i]);
        if (!strcmp(argv[i], "-m")) model = argv[++i];
        else if (!strcmp(argv[i], "--tokens")) tokens = argv[++i];
        else if (!strcmp(argv[i], "-o")) outp = argv[++i];
        else return cli_usage_error(usage_logits, "edgeseek logits: unknown option %s\n", argv[i]);
    }
    if (!model || !tokens || !outp) { usage_logits(stderr); return 2; }
    int32_t *ids;
    int n;
    if (parse_ids(tokens, &ids, &n) != 0)
        return cli_usage_error(NULL, "edgeseek logits: --tokens must be comma-separated non-negative integers\n");
    /* the output first: a path that cannot be written fails before the
     * computation; it is a temporary renamed over the path at the end, so a
     * failure leaves the path as it was */
    char err[512];
    es_outfile *of = NULL;
    if (cli_failed(es_outfile_open(outp, &of, err, sizeof err), err)) { free(ids); return 1; }
    es_model *m = cli_load_model(model, NULL);
    if (!m) { es_outfile_discard(of); free(ids); return 1; }
    int rc = 1;
    es_session *s = NULL;
    size_t nv = (size_t)es_model_n_vocab(m);
    float *logits = malloc(sizeof(float) * nv * (size_t)n);
    if (!logits) { fprintf(stderr, "edgeseek: out of memory for logits\n"); goto done; }
    if (cli_failed(es_session_new(m, n, &s, err, sizeof err), err)) goto done;
    if (cli_failed(es_session_eval(s, ids, n, logits, 1, err, sizeof err), err)) goto done;
    if (cli_failed(es_outfile_write(of, logits, sizeof(float) * nv * (size_t)n, err, sizeof err), err)) goto done;
    es_outfile *done_of = of;
    of = NULL;
    if (cli_failed(es_outfile_commit(done_of, err, sizeof err), err)) goto done;
    rc = 0;
done:
    es_outfile_discard(of); /* a failure: the temporary goes, the path keeps its content */
    es_session_free(s);
    free(logits);
    free(ids);
    es_model_free(m);
    return rc;
}
