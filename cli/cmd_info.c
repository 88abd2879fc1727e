/* cmd_info.c — `edgeseek info -m MODEL`: what a model file holds
 * (architecture, hyperparameters, tensor types and bytes, KV bytes per
 * token) and the kernels this machine runs it with. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "edgeseek.h"

#define USAGE_INFO "usage: edgeseek info -m MODEL\n"

int cmd_info(int argc, char **argv) {
    const char *model = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf(USAGE_INFO "  Architecture, hyperparameters, tensor types and bytes, KV bytes per token.\n");
            return 0;
        }
        if (!strcmp(argv[i], "-m") && i + 1 < argc) model = argv[++i];
        else return cli_usage_error(NULL, "edgeseek info: unknown option %s\n" USAGE_INFO, argv[i]);
    }
    if (!model) return cli_usage_error(NULL, USAGE_INFO);
    char err[768];
    es_load_params lp = {0};
    es_model *m = NULL;
    es_status st = es_model_load(model, &lp, &m, err, sizeof err);
    if (st != ES_OK) {
        /* a vocabulary-only file still has something to say */
        lp.vocab_only = 1;
        if (es_model_load(model, &lp, &m, NULL, 0) != ES_OK) return cli_failed(st, err);
        fprintf(stderr, "edgeseek: not a runnable model (%s); showing the vocabulary only\n", err);
    }
    es_model_print_info(m, stdout);
    printf("kernels:     %s (CPU features: %s)\n", es_model_simd(m), es_cpu_features());
    es_model_free(m);
    return 0;
}
