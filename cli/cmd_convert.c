/* cmd_convert.c — `edgeseek convert HF_DIR OUT.gguf [TYPE]`: the
 * command-line face of convert/ (a Hugging Face DeepSeek checkpoint to a
 * deepseek2 GGUF), and the switch that lets every command's -m name a
 * checkpoint directory (convert/hf_direct.c).  Built without libcjson,
 * the command says so, and -m takes GGUF files alone. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "edgeseek.h"
#ifdef ES_HAVE_CJSON
#include "convert.h"
#endif

static void usage_convert(FILE *f) {
    fprintf(f, "usage: edgeseek convert [-t THREADS] [--quiet] [--no-mtp] [--vocab-only] HF_DIR OUT.gguf [TYPE]\n"
               "  Converts a Hugging Face DeepSeek V2/V2-Lite/V3/R1 checkpoint (config.json,\n"
               "  safetensors shards in BF16 or FP8 e4m3 with block scales, tokenizer.json) to a\n"
               "  deepseek2 GGUF with llama.cpp's names, streaming (little memory whatever the size).\n"
               "  TYPE: %s\n"
               "    default: the source precision (BF16 stays BF16, FP8 becomes Q8_0).\n"
               "  The MTP (next-n) layers are kept (--no-mtp drops them); --vocab-only writes\n"
               "  the tokenizer alone.  Progress (bytes, rate, ETA) goes to stderr.\n",
            ES_QUANTIZE_TARGETS);
}

void cli_enable_checkpoints(void) {
#ifdef ES_HAVE_CJSON
    es_hf_direct_enable();
#endif
}

int cmd_convert(int argc, char **argv) {
    const char *pos[3];
    int n_pos = 0, quiet = 0, no_mtp = 0, vocab_only = 0;
    long threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage_convert(stdout); return 0; }
        if (!strcmp(argv[i], "--quiet")) { quiet = 1; continue; }
        if (!strcmp(argv[i], "--no-mtp")) { no_mtp = 1; continue; }
        if (!strcmp(argv[i], "--vocab-only")) { vocab_only = 1; continue; }
        if (!strcmp(argv[i], "-t")) {
            if (i + 1 >= argc) return cli_usage_error(NULL, "edgeseek convert: -t needs a value\n");
            if (cli_parse_int("-t", argv[++i], 1, ES_MAX_THREADS, &threads) != 0) return 2;
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1])
            return cli_usage_error(usage_convert, "edgeseek convert: unknown option %s\n", argv[i]);
        if (n_pos == 3) return cli_usage_error(usage_convert, "edgeseek convert: too many arguments\n");
        pos[n_pos++] = argv[i];
    }
    if (n_pos < 2) { usage_convert(stderr); return 2; }
    if (n_pos == 3 && !es_quantize_target_valid(pos[2]))
        return cli_usage_error(usage_convert, "edgeseek convert: unknown type '%s'\n", pos[2]);
#ifdef ES_HAVE_CJSON
    es_convert_params cp = {.n_threads = (int)threads, .log = quiet ? NULL : stderr, .no_mtp = no_mtp,
                            .vocab_only = vocab_only};
    char err[1024];
    if (es_convert_hf(pos[0], pos[1], n_pos == 3 ? pos[2] : NULL, &cp, err, sizeof err) != 0) {
        fprintf(stderr, "edgeseek: %s\n", err);
        return 1;
    }
    return 0;
#else
    (void)no_mtp, (void)vocab_only, (void)quiet;
    fprintf(stderr, "edgeseek: convert is not available: this edgeseek was built without libcjson "
                    "(Debian: libcjson-dev)\n");
    return 1;
#endif
}
