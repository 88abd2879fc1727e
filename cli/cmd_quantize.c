/* cmd_quantize.c — `edgeseek quantize IN.gguf OUT.gguf TYPE`: the command-line
 * face of format/quantize.c (argument parsing, exit status, progress on
 * stderr). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "edgeseek.h"

static void usage_quantize(FILE *f) {
    fprintf(f, "usage: edgeseek quantize [-t THREADS] [--quiet] IN.gguf OUT.gguf TYPE\n"
               "  Converts a model's weights to TYPE, streaming (little memory whatever the size).\n"
               "  TYPE: %s\n"
               "    q4_k_m: routed experts Q4_K (ffn_down_exps of some layers Q6_K); attention,\n"
               "    shared experts, dense FFN, token_embd and output Q6_K.\n"
               "  Norms, biases and the router stay F32; a row length the type cannot hold falls\n"
               "  back to Q8_0 or F16.  Metadata is copied; general.file_type is updated.\n"
               "  OUT is replaced only when complete (a temporary beside it, then renamed); on\n"
               "  failure or interruption it keeps its old content.\n",
            ES_QUANTIZE_TARGETS);
}

int cmd_quantize(int argc, char **argv) {
    const char *pos[3];
    int n_pos = 0, quiet = 0;
    long threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage_quantize(stdout); return 0; }
        if (!strcmp(argv[i], "--quiet")) { quiet = 1; continue; }
        if (!strcmp(argv[i], "-t")) {
            if (i + 1 >= argc) return cli_usage_error(NULL, "edgeseek quantize: -t needs a value\n");
            if (cli_parse_int("-t", argv[++i], 1, ES_MAX_THREADS, &threads) != 0) return 2;
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1])
            return cli_usage_error(usage_quantize, "edgeseek quantize: unknown option %s\n", argv[i]);
        if (n_pos == 3) return cli_usage_error(usage_quantize, "edgeseek quantize: too many arguments\n");
        pos[n_pos++] = argv[i];
    }
    if (n_pos != 3) { usage_quantize(stderr); return 2; }
    if (!es_quantize_target_valid(pos[2]))
        return cli_usage_error(usage_quantize, "edgeseek quantize: unknown type '%s'\n", pos[2]);
    es_quantize_params qp = {.n_threads = (int)threads, .log = quiet ? NULL : stderr};
    char err[768];
    return cli_failed(es_quantize_file(pos[0], pos[1], pos[2], &qp, err, sizeof err), err);
}
