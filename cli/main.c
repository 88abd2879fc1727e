/* main.c — the edgeseek command line: the top-level usage and the dispatch
 * to a subcommand (cmd_*.c, one file each; the helpers they share are in
 * common.c).
 * Exit status: 0 success, 1 an error the user caused (message on stderr)
 * or a failed write on standard output, 2 bad usage. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "edgeseek.h"

static const struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *what;
} commands[] = {
    {"run", cmd_run, "generate text from a prompt"},
    {"chat", cmd_chat, "chat with a model in the terminal (thinking dimmed, history, /save)"},
    {"logits", cmd_logits, "write the logits of every position of a token list"},
    {"tokenize", cmd_tokenize, "print the token ids of a text"},
    {"bench", cmd_bench, "measure prompt and generation speed (like llama-bench)"},
    {"info", cmd_info, "describe a model file"},
    {"eval", cmd_eval, "measure a model's accuracy on generated arithmetic problems"},
    {"quantize", cmd_quantize, "convert a model's weights to another type (q4_k_m, q8_0, ...)"},
    {"convert", cmd_convert, "convert a Hugging Face DeepSeek checkpoint (safetensors, FP8/BF16) to GGUF"},
    {"serve", cmd_serve, "an OpenAI-compatible HTTP server (chat, completions, reasoning, many users batched)"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f) {
    fprintf(f, "edgeseek — CPU inference for DeepSeek-architecture (deepseek2) GGUF models\n\n"
               "usage: edgeseek COMMAND [options]   (edgeseek COMMAND --help for details)\n\n"
               "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-10s%s\n", commands[i].name, commands[i].what);
}

static int dispatch(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) { usage(stdout); return 0; }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(cmd, commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    return cli_usage_error(usage, "edgeseek: unknown command '%s'\n\n", cmd);
}

int main(int argc, char **argv) {
    /* before anything is opened: a closed descriptor 0-2 would be handed to
     * the next file opened (a model written into with the progress log) */
    if (es_std_fds_guard() != 0) {
        fprintf(stderr, "edgeseek: cannot open /dev/null\n");
        return 1;
    }
    cli_enable_checkpoints(); /* -m HF_DIR runs a checkpoint as it is */
    return cli_close_stdout(dispatch(argc, argv));
}
