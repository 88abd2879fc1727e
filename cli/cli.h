/* cli.h — the edgeseek command line: its subcommands, one file each
 * (cmd_*.c), and the helpers they share (common.c).
 * Exit status of every subcommand: 0 success, 1 an error the user caused
 * (message on stderr), 2 bad usage. */
#ifndef ES_CLI_H
#define ES_CLI_H

#include <stddef.h>
#include <stdio.h>
#include "edgeseek.h"

#if defined(__GNUC__)
#define CLI_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CLI_PRINTF(f, a)
#endif

/* Seconds on a monotonic clock. */
double cli_now(void);
/* Parse a whole string as a number in [lo, hi]; print a message and return
 * -1 otherwise. */
int cli_parse_int(const char *opt, const char *s, long lo, long hi, long *out);
int cli_parse_float(const char *opt, const char *s, double lo, double hi, double *out);
/* The same test as cli_parse_int, printing nothing (the caller words the
 * message). */
int cli_to_long(const char *s, long lo, long hi, long *out);
/* A test knob in milliseconds (0..10000) from the environment variable
 * name: 0 (*out unchanged when unset), or -1 with a message when it is not
 * a number in range. */
int cli_env_ms(const char *name, int *out);
/* --numa off|shard|replicate → ES_NUMA_*; prints a message, -1 if bad. */
int cli_parse_numa(const char *v, int *out);
/* -t n capped at the CPUs this process may run on (sched_getaffinity), with
 * one warning line on stderr when it is more; 0 (the default) stays 0. */
long cli_cap_threads(long n);

/* The generation options that run and chat share: context, threads, NUMA
 * placement and sampling. */
typedef struct cli_gen_opts {
    long n_ctx;   /* -c (0: cli_ctx_size's default) */
    long threads; /* -t (0: physical cores) */
    long top_k;
    double temp, top_p, min_p;
    unsigned long long seed;
} cli_gen_opts;
#define CLI_SAMPLING_USAGE \
    "  --temp T      temperature (default 0.8; 0 = greedy)\n" \
    "  --top-k K     keep the K most likely tokens (default 40; 0 = off)\n" \
    "  --top-p P     nucleus sampling (default 0.95; 1 = off)\n" \
    "  --min-p P     drop tokens below P x the best probability (default 0.05; 0 = off)\n" \
    "  --seed S      random seed (default 0); the same seed gives the same output\n" \
    "  -t THREADS    worker threads (default: physical cores; capped at the usable CPUs)\n" \
    "  --numa MODE   off | shard | replicate: weight placement on NUMA nodes (default shard;\n" \
    "                a no-op on one node)\n" \
    "  -c CTX        context size in tokens (default: min(training context, 4096))\n"
void cli_gen_defaults(cli_gen_opts *o);
/* Option a with its value v: 1 if it was one of cli_gen_opts' (or --numa,
 * into lp->numa), 0 if not, -1 for a bad or missing (v NULL) value (message
 * printed). */
int cli_gen_opt(const char *a, const char *v, cli_gen_opts *o, es_load_params *lp);
es_sampler_params cli_sampler_params(const cli_gen_opts *o);
/* The context size: n_ctx, or when 0 min(training context, 4096). */
long cli_ctx_size(const es_model *m, long n_ctx);
/* The paging options (README "Paging") into lp: 1 if argv[*i] was one
 * (consuming its value from argv[*i + 1]), 0 if not, -1 on a bad or missing
 * value (message printed, naming the subcommand cmd). */
int cli_paging_opt(const char *cmd, int argc, char **argv, int *i, es_load_params *lp);
#define CLI_PAGING_USAGE \
    "paging of routed experts (README \"Paging\"):\n" \
    "  --mem-budget BYTES  memory for resident experts, with K/M/G suffixes (default: what the\n" \
    "                cgroup limit or MemAvailable leaves after the other weights, KV cache, scratch)\n" \
    "  --experts MODE mmap | pread | mmap-plain (default: mmap when every expert fits the\n" \
    "                budget, else pread)\n" \
    "  --policy P    lru | lfu: which experts stay (default lru)\n" \
    "  --no-prefetch do not predict and prefetch the next layer's experts\n" \
    "  --io-threads N background loader threads (default 4; 0: loads on the compute thread)\n" \
    "  --mlock       lock the always-hot weights and resident experts in memory when permitted\n" \
    "  --no-direct   pread mode: buffered reads instead of O_DIRECT\n" \
    "  --stats       print the paging report (hit rates, prefetch accuracy, I/O) at the end\n"

/* Bad usage: prints the message, then the subcommand's usage when usage is
 * not NULL, to stderr; returns 2, the exit status for it. */
int cli_usage_error(void (*usage)(FILE *), const char *fmt, ...) CLI_PRINTF(2, 3);
/* Prints "edgeseek: ERR" to stderr when st is not ES_OK (err: the message
 * the failed call wrote); returns 1 then, else 0. */
int cli_failed(es_status st, const char *err);

/* Standard output: every subcommand's writes are checked.  cli_stdout_check
 * flushes and, when a write failed, says so once on stderr ("edgeseek:
 * write error on standard output: REASON") and returns -1 (long outputs
 * call it to stop early); else 0.  cli_close_stdout, at exit, checks and
 * closes stdout and returns the exit status: rc, or 1 when rc was 0 and a
 * write failed. */
int cli_stdout_check(void);
int cli_close_stdout(int rc);

/* Loads a model (lp NULL: the defaults), printing the error; NULL on
 * failure. */
es_model *cli_load_model(const char *path, const es_load_params *lp);
/* The most bytes a prompt file may hold (README "Limits and guarantees"). */
#define CLI_MAX_PROMPT_BYTES ((size_t)64 << 20)
/* Reads a prompt file whole (a NUL-terminated copy); "-" is standard input.
 * Refused, with a message: anything but a regular file (a FIFO, a device, a
 * directory: at once, without waiting), more than CLI_MAX_PROMPT_BYTES, and
 * a NUL byte anywhere (a prompt is text).  -1 on failure. */
int cli_read_file(const char *path, char **out, size_t *len);
/* The text of -p TEXT or -f FILE: file's contents (read into *buf, which the
 * caller frees) when file is given, else text, else "".  Prints the error;
 * -1 on failure.  (-p text comes from argv and cannot hold a NUL byte.) */
int cli_text_arg(const char *text, const char *file, char **buf, const char **out, size_t *len);

/* --kv-type f32|f16|bf16|q8_0 → ES_KV_*; prints a message, -1 if bad. */
int cli_parse_kv_type(const char *v, int *out);
/* --session FILE before the prompt's prefill (session.c): loads FILE into s
 * when it holds a session of this model and cache type and keeps the
 * longest prefix of ids[n] it holds (never the last token, whose logits are
 * needed).  Returns the prompt tokens now in s (0 when the file does not
 * exist or does not fit: a session file of another model, cache type,
 * version, too long, or damaged, which is then replaced), or -1 after a
 * message when the file cannot be read or is not a session file (never
 * overwritten).  *file_tokens: the tokens the file held when it held
 * exactly the prompt, else something else. */
/* --session FILE at the start (session.c): loads FILE into s when it holds a
 * session of this model and cache type that fits s's context.  1 when
 * loaded; 0 when there is no file, or it is a session file that does not
 * fit (said, with `what` the caller does instead, and s left empty: the
 * caller may replace the file); -1 after a message when the file cannot be
 * read or is not a session file (never to be overwritten). */
int cli_session_open(es_session *s, const char *path, const char *what);
int cli_session_restore(es_session *s, const char *path, const int32_t *ids, int n, int *file_tokens);
/* After the prompt's prefill: saves s (the prompt's n tokens) to path
 * unless the file held exactly them.  0, or -1 after a message. */
int cli_session_keep(es_session *s, const char *path, int file_tokens, int n);

/* The stats line's MTP part (stderr): drafts, acceptance, tokens per pass. */
void cli_print_mtp_stats(const es_spec *g);

/* The subcommands: argv[0] is the subcommand's name. */
int cmd_run(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_convert(int argc, char **argv);
/* cmd_convert.c: lets -m name a Hugging Face checkpoint directory (a no-op
 * without libcjson); main() calls it first */
void cli_enable_checkpoints(void);
int cmd_chat(int argc, char **argv);
int cmd_serve(int argc, char **argv);

#endif
