/* main.c — the edgeseek command line: subcommand dispatch and the
 * subcommands run, logits, tokenize and info.
 * Exit status: 0 success, 1 an error the user caused (message on stderr),
 * 2 bad usage. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "edgeseek.h"

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int cli_parse_int(const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "edgeseek: %s expects an integer in [%ld, %ld], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_float(const char *opt, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "edgeseek: %s expects a number in [%g, %g], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

es_model *cli_load_model(const char *path, int vocab_only) {
    char err[768];
    es_load_params lp = {.vocab_only = vocab_only};
    es_model *m = NULL;
    if (es_model_load(path, &lp, &m, err, sizeof err) != ES_OK) {
        fprintf(stderr, "edgeseek: %s\n", err);
        return NULL;
    }
    return m;
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

/* ---- logits -------------------------------------------------------------- */

static void usage_logits(FILE *f) {
    fprintf(f, "usage: edgeseek logits -m MODEL --tokens ID,ID,... -o FILE\n"
               "  Writes float32 little-endian logits of every position, [n_tokens][n_vocab],\n"
               "  from one prefill starting at position 0.\n");
}

static int cmd_logits(int argc, char **argv) {
    const char *model = NULL, *tokens = NULL, *outp = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage_logits(stdout); return 0; }
        if (i + 1 >= argc) { fprintf(stderr, "edgeseek logits: %s needs a value\n", argv[i]); usage_logits(stderr); return 2; }
        if (!strcmp(argv[i], "-m")) model = argv[++i];
        else if (!strcmp(argv[i], "--tokens")) tokens = argv[++i];
        else if (!strcmp(argv[i], "-o")) outp = argv[++i];
        else { fprintf(stderr, "edgeseek logits: unknown option %s\n", argv[i]); usage_logits(stderr); return 2; }
    }
    if (!model || !tokens || !outp) { usage_logits(stderr); return 2; }
    int32_t *ids;
    int n;
    if (parse_ids(tokens, &ids, &n) != 0) {
        fprintf(stderr, "edgeseek logits: --tokens must be comma-separated non-negative integers\n");
        return 2;
    }
    es_model *m = cli_load_model(model, 0);
    if (!m) { free(ids); return 1; }
    int rc = 1;
    char err[512];
    es_session *s = NULL;
    size_t nv = (size_t)es_model_n_vocab(m);
    float *logits = malloc(sizeof(float) * nv * (size_t)n);
    if (!logits) { fprintf(stderr, "edgeseek: out of memory for logits\n"); goto done; }
    if (es_session_new(m, n, &s, err, sizeof err) != ES_OK) { fprintf(stderr, "edgeseek: %s\n", err); goto done; }
    if (es_session_eval(s, ids, n, logits, 1, err, sizeof err) != ES_OK) { fprintf(stderr, "edgeseek: %s\n", err); goto done; }
    FILE *f = fopen(outp, "wb");
    if (!f) { fprintf(stderr, "edgeseek: cannot write %s: %s\n", outp, strerror(errno)); goto done; }
    size_t w = fwrite(logits, sizeof(float), nv * (size_t)n, f);
    if (fclose(f) != 0 || w != nv * (size_t)n) { fprintf(stderr, "edgeseek: writing %s failed\n", outp); goto done; }
    rc = 0;
done:
    es_session_free(s);
    free(logits);
    free(ids);
    es_model_free(m);
    return rc;
}

/* ---- tokenize -------------------------------------------------------------- */

static void usage_tokenize(FILE *f) {
    fprintf(f, "usage: edgeseek tokenize -m MODEL (-p TEXT | -f FILE) [--bos] [--no-special]\n"
               "  Prints token ids, comma-separated.  No BOS unless --bos.  Special tokens in\n"
               "  the text are matched whole unless --no-special.  Works on vocab-only GGUFs.\n");
}

static int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *text = NULL, *file = NULL;
    int bos = 0, special = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage_tokenize(stdout); return 0; }
        if (!strcmp(argv[i], "--bos")) { bos = 1; continue; }
        if (!strcmp(argv[i], "--no-special")) { special = 0; continue; }
        if (i + 1 >= argc) { fprintf(stderr, "edgeseek tokenize: %s needs a value\n", argv[i]); return 2; }
        if (!strcmp(argv[i], "-m")) model = argv[++i];
        else if (!strcmp(argv[i], "-p")) text = argv[++i];
        else if (!strcmp(argv[i], "-f")) file = argv[++i];
        else { fprintf(stderr, "edgeseek tokenize: unknown option %s\n", argv[i]); usage_tokenize(stderr); return 2; }
    }
    if (!model || (!text == !file)) { usage_tokenize(stderr); return 2; }
    char *buf = NULL;
    size_t len = 0;
    if (file) {
        if (cli_read_file(file, &buf, &len) != 0) return 1;
        text = buf;
    } else {
        len = strlen(text);
    }
    es_model *m = cli_load_model(model, 1);
    if (!m) { free(buf); return 1; }
    int32_t *ids = NULL;
    size_t n = 0;
    char err[512];
    int rc = 0;
    if (es_tokenize(m, text, len, bos, special, &ids, &n, err, sizeof err) != ES_OK) {
        fprintf(stderr, "edgeseek: %s\n", err);
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

int cli_read_file(const char *path, char **out, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "edgeseek: cannot open %s: %s\n", path, strerror(errno)); return -1; }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap) break;
        char *t = realloc(buf, (cap *= 2) + 1);
        if (!t) { free(buf); buf = NULL; break; }
        buf = t;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) { free(buf); fprintf(stderr, "edgeseek: cannot read %s\n", path); return -1; }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

/* ---- info ------------------------------------------------------------------- */

static int cmd_info(int argc, char **argv) {
    const char *model = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: edgeseek info -m MODEL\n  Architecture, hyperparameters, tensor types and bytes, KV bytes per token.\n");
            return 0;
        }
        if (!strcmp(argv[i], "-m") && i + 1 < argc) model = argv[++i];
        else { fprintf(stderr, "edgeseek info: unknown option %s\nusage: edgeseek info -m MODEL\n", argv[i]); return 2; }
    }
    if (!model) { fprintf(stderr, "usage: edgeseek info -m MODEL\n"); return 2; }
    char err[768];
    es_load_params lp = {0};
    es_model *m = NULL;
    es_status st = es_model_load(model, &lp, &m, err, sizeof err);
    if (st != ES_OK) {
        /* a vocabulary-only file still has something to say */
        lp.vocab_only = 1;
        if (es_model_load(model, &lp, &m, NULL, 0) != ES_OK) {
            fprintf(stderr, "edgeseek: %s\n", err);
            return 1;
        }
        fprintf(stderr, "edgeseek: not a runnable model (%s); showing the vocabulary only\n", err);
    }
    es_model_print_info(m, stdout);
    printf("kernels:     %s (CPU features: %s)\n", es_model_simd(m), es_cpu_features());
    es_model_free(m);
    return 0;
}

/* ---- dispatch ---------------------------------------------------------------- */

static void usage(FILE *f) {
    fprintf(f, "edgeseek — CPU inference for DeepSeek-architecture (deepseek2) GGUF models\n\n"
               "usage: edgeseek COMMAND [options]   (edgeseek COMMAND --help for details)\n\n"
               "commands:\n"
               "  run       generate text from a prompt\n"
               "  logits    write the logits of every position of a token list\n"
               "  tokenize  print the token ids of a text\n"
               "  bench     measure prompt and generation speed (like llama-bench)\n"
               "  info      describe a model file\n"
               "  eval      measure a model's accuracy on generated arithmetic problems\n"
               "  quantize  convert a model's weights to another type (q4_k_m, q8_0, ...)\n");
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) { usage(stdout); return 0; }
    if (!strcmp(cmd, "run")) return cmd_run(argc - 1, argv + 1);
    if (!strcmp(cmd, "logits")) return cmd_logits(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc - 1, argv + 1);
    if (!strcmp(cmd, "quantize")) return cmd_quantize(argc - 1, argv + 1);
    fprintf(stderr, "edgeseek: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
