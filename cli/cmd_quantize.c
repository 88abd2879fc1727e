/* cmd_quantize.c — `edgeseek quantize [--imatrix FILE] IN.gguf OUT.gguf TYPE`: the command-line
 * face of format/quantize.c (argument parsing, exit status, progress on
 * stderr). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "edgeseek.h"

static void usage_quantize(FILE *f) {
    fprintf(f, "usage: edgeseek quantize [-t THREADS] [--quiet] [--imatrix FILE] IN.gguf OUT.gguf TYPE\n"
               "  Converts a model's weights to TYPE, streaming (little memory whatever the size).\n"
               "  TYPE: %s\n"
               "    q4_k_m: routed experts Q4_K (ffn_down_exps of some layers Q6_K); attention,\n"
               "    shared experts, dense FFN, token_embd and output Q6_K.\n"
               "    iq2_m: routed experts IQ2_XXS (down IQ2_S, some layers IQ3_XXS); attention and\n"
               "    shared experts Q5_K, dense FFN and token_embd Q4_K, output Q6_K.\n"
               "  --imatrix FILE: llama.cpp's importance matrix (GGUF form, from llama-imatrix),\n"
               "    needed by iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s, iq1_s, iq1_m and iq2_m.\n"
               "  Norms, biases and the router stay F32; a row length the type cannot hold falls\n"
               "  back to Q8_0 or F16.  Metadata is copied; general.file_type is updated.\n"
               "  OUT is replaced only when complete (a temporary beside it, then renamed); on\n"
               "  failure or interruption it keeps its old content.\n",
            ES_QUANTIZE_TARGETS);
}

int cmd_quantize(int argc, char **argv) {
    const char *pos[3];
    int n_pos = 0, quiet = 0;
    const char *imatrix = NULL;
    long threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage_quantize(stdout); return 0; }
        if (!strcmp(argv[i], "--quiet")) { quiet = 1; continue; }
        if (!strcmp(argv[i], "--imatrix")) {
            if (i + 1 >= argc) return cli_usage_error(NULL, "edgeseek quantize: --imatrix needs a file\n");
            imatrix = argv[++i];
            continue;
        }
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
    if (!imatrix && es_quantize_target_needs_imatrix(pos[2]))
        return cli_usage_error(NULL, "edgeseek quantize: %s needs an importance matrix: --imatrix FILE (llama.cpp's "
                               "llama-imatrix writes one); at 1-3 bits per weight an unweighted fit loses too much\n",
                               pos[2]);
    es_quantize_params qp = {.n_threads = (int)threads, .log = quiet ? NULL : stderr};
    char err[768];
    return cli_failed(es_quantize_file_imatrix(pos[0], pos[1], pos[2], imatrix, &qp, err, sizeof err), err);
}
