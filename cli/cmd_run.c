/* cmd_run.c — `edgeseek run`: tokenize a prompt (optionally in the chat format),
 * prefill it, then sample and stream tokens to stdout until -n tokens, an
 * end-of-generation token or the context end.  Statistics go to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "edgeseek.h"

static void usage_run(FILE *f) {
    fprintf(f,
            "usage: edgeseek run -m MODEL [-p PROMPT | -f FILE] [options]\n"
            "  -f FILE       the prompt from a regular file, at most 64 MiB, no NUL byte (-: standard input)\n"
            "  -n N          tokens to generate (default 128; -1: until the context is full)\n"
            "  --temp T      temperature (default 0.8; 0 = greedy)\n"
            "  --top-k K     keep the K most likely tokens (default 40; 0 = off)\n"
            "  --top-p P     nucleus sampling (default 0.95; 1 = off)\n"
            "  --min-p P     drop tokens below P x the best probability (default 0.05; 0 = off)\n"
            "  --seed S      random seed (default 0); the same seed gives the same output\n"
            "  -t THREADS    worker threads (default: physical cores; capped at the usable CPUs)\n"
            "  --numa MODE   off | shard | replicate: weight placement on NUMA nodes (default shard;\n"
            "                a no-op on one node)\n"
            "  -c CTX        context size in tokens (default: min(training context, 4096))\n"
            "  --kv-type T   f32 | f16 | bf16 | q8_0: storage of the latent KV cache (default f16)\n"
            "  --session FILE  reuse a saved prompt: when FILE holds a session of this model and cache\n"
            "                type, its tokens that begin the prompt are loaded instead of prefilled; the\n"
            "                prompt's state is then saved to FILE if it differs (generated text is not)\n"
            "  --chat        render the prompt as one user turn of the DeepSeek chat format (its text,\n"
            "                and --system's, never makes control tokens)\n"
            "  --system TEXT system text for --chat\n"
            "  --no-stats    do not print statistics to stderr\n"
            "paging of routed experts (README \"Paging\"):\n"
            "  --mem-budget BYTES  memory for resident experts, with K/M/G suffixes (default: what the\n"
            "                cgroup limit or MemAvailable leaves after the other weights, KV cache, scratch)\n"
            "  --experts MODE mmap | pread | mmap-plain (default: mmap when every expert fits the\n"
            "                budget, else pread)\n"
            "  --policy P    lru | lfu: which experts stay (default lru)\n"
            "  --no-prefetch do not predict and prefetch the next layer's experts\n"
            "  --io-threads N background loader threads (default 4; 0: loads on the compute thread)\n"
            "  --mlock       lock the always-hot weights and resident experts in memory when permitted\n"
            "  --no-direct   pread mode: buffered reads instead of O_DIRECT\n"
            "  --stats       print the paging report (hit rates, prefetch accuracy, I/O) at the end\n");
}

/* Parses the paging options into lp; returns 1 if a was one (consuming its
 * value from argv[*i + 1]), 0 if not, -1 on a bad value. */
static int paging_opt(int argc, char **argv, int *i, es_load_params *lp) {
    const char *a = argv[*i];
    if (!strcmp(a, "--no-prefetch")) { lp->no_prefetch = 1; return 1; }
    if (!strcmp(a, "--mlock")) { lp->mlock = 1; return 1; }
    if (!strcmp(a, "--no-direct")) { lp->no_direct = 1; return 1; }
    if (!strcmp(a, "--stats")) { lp->stats = 1; return 1; }
    if (strcmp(a, "--mem-budget") && strcmp(a, "--experts") && strcmp(a, "--policy") && strcmp(a, "--io-threads"))
        return 0;
    if (*i + 1 >= argc) { fprintf(stderr, "edgeseek run: %s needs a value\n", a); return -1; }
    const char *v = argv[++*i];
    if (!strcmp(a, "--mem-budget")) {
        int64_t b;
        if (es_parse_size(v, &b) != ES_OK || b <= 0) {
            fprintf(stderr, "edgeseek: --mem-budget expects a positive size such as 3G, 512M or 1048576, got '%s'\n", v);
            return -1;
        }
        lp->mem_budget = b;
    } else if (!strcmp(a, "--experts")) {
        if (!strcmp(v, "mmap")) lp->experts = ES_EXPERTS_MMAP;
        else if (!strcmp(v, "pread")) lp->experts = ES_EXPERTS_PREAD;
        else if (!strcmp(v, "mmap-plain")) lp->experts = ES_EXPERTS_MMAP_PLAIN;
        else { fprintf(stderr, "edgeseek: --experts expects mmap, pread or mmap-plain, got '%s'\n", v); return -1; }
    } else if (!strcmp(a, "--policy")) {
        if (!strcmp(v, "lru")) lp->policy = ES_POLICY_LRU;
        else if (!strcmp(v, "lfu")) lp->policy = ES_POLICY_LFU;
        else { fprintf(stderr, "edgeseek: --policy expects lru or lfu, got '%s'\n", v); return -1; }
    } else {
        long n;
        if (cli_parse_int(a, v, 0, 64, &n) != 0) return -1;
        lp->io_threads = n ? (int)n : -1;
    }
    return 1;
}

int cmd_run(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *file = NULL, *system_text = NULL;
    long n_gen = 128, n_ctx = 0, threads = 0, top_k = 40;
    double temp = 0.8, top_p = 0.95, min_p = 0.05;
    unsigned long long seed = 0;
    int chat = 0, stats = 1, kv_type = ES_KV_DEFAULT;
    const char *session_file = NULL;
    es_load_params lp = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage_run(stdout); return 0; }
        int po = paging_opt(argc, argv, &i, &lp);
        if (po < 0) return 2;
        if (po) continue;
        if (!strcmp(a, "--chat")) { chat = 1; continue; }
        if (!strcmp(a, "--no-stats")) { stats = 0; continue; }
        if (i + 1 >= argc) return cli_usage_error(usage_run, "edgeseek run: %s needs a value\n", a);
        const char *v = argv[++i];
        long l;
        int bad = 0;
        if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "-p")) prompt = v;
        else if (!strcmp(a, "-f")) file = v;
        else if (!strcmp(a, "--system")) system_text = v;
        else if (!strcmp(a, "--session")) session_file = v;
        else if (!strcmp(a, "--kv-type")) bad = cli_parse_kv_type(v, &kv_type);
        else if (!strcmp(a, "-n")) bad = cli_parse_int(a, v, -1, 1L << 30, &n_gen);
        else if (!strcmp(a, "-c")) bad = cli_parse_int(a, v, 1, 1L << 30, &n_ctx);
        else if (!strcmp(a, "-t")) bad = cli_parse_int(a, v, 1, ES_MAX_THREADS, &threads);
        else if (!strcmp(a, "--numa")) bad = cli_parse_numa(v, &lp.numa);
        else if (!strcmp(a, "--top-k")) bad = cli_parse_int(a, v, 0, 1L << 30, &top_k);
        else if (!strcmp(a, "--temp")) bad = cli_parse_float(a, v, 0, 100, &temp);
        else if (!strcmp(a, "--top-p")) bad = cli_parse_float(a, v, 0, 1, &top_p);
        else if (!strcmp(a, "--min-p")) bad = cli_parse_float(a, v, 0, 1, &min_p);
        else if (!strcmp(a, "--seed")) { bad = cli_parse_int(a, v, 0, 0x7fffffffffffffffL, &l); seed = (unsigned long long)l; }
        else return cli_usage_error(usage_run, "edgeseek run: unknown option %s\n", a);
        if (bad) return 2;
    }
    if (!model) return cli_usage_error(usage_run, "edgeseek run: -m MODEL is required\n");
    if (prompt && file) return cli_usage_error(NULL, "edgeseek run: give -p or -f, not both\n");

    char *filebuf;
    size_t flen;
    if (cli_text_arg(prompt, file, &filebuf, &prompt, &flen) != 0) return 1;

    double t0 = cli_now();
    lp.n_ctx = (int)n_ctx;
    es_model *m = cli_load_model(model, &lp);
    if (!m) { free(filebuf); return 1; }
    double t_load = cli_now() - t0;

    int rc = 1;
    char err[512];
    int32_t *ids = NULL;
    size_t n_ids = 0;
    es_session *s = NULL;
    es_sampler *smp = NULL;
    float *logits = NULL;
    if (chat) {
        /* the chat format carries its own BOS; the messages are text only:
         * special-token text in them is not read as control tokens */
        es_chat_msg msgs[2];
        size_t nm = 0;
        if (system_text) msgs[nm++] = (es_chat_msg){"system", system_text};
        msgs[nm++] = (es_chat_msg){"user", prompt};
        if (cli_failed(es_chat_tokenize(m, msgs, nm, 1, &ids, &n_ids, err, sizeof err), err)) goto done;
    } else {
        /* a plain prompt gets a BOS prepended */
        if (cli_failed(es_tokenize(m, prompt, flen, 1, 0, &ids, &n_ids, err, sizeof err), err)) goto done;
    }
    if (n_ids == 0) {
        fprintf(stderr, "edgeseek: the prompt is empty and the model has no BOS token\n");
        goto done;
    }
    if (n_ctx == 0) n_ctx = es_model_n_ctx_train(m) < 4096 ? es_model_n_ctx_train(m) : 4096;
    if ((long)n_ids >= n_ctx) {
        long n_max = es_model_n_ctx_train(m);
        if (n_ctx < n_max)
            fprintf(stderr, "edgeseek: the prompt is %zu tokens; the context holds %ld (use -c to enlarge it, up to"
                            " the model's maximum of %ld)\n", n_ids, n_ctx, n_max);
        else
            fprintf(stderr, "edgeseek: the prompt is %zu tokens, too long for the model's maximum context of %ld"
                            " tokens (which must hold the prompt and a generated token)\n", n_ids, n_max);
        goto done;
    }
    const es_session_params spar = {.n_ctx = (int)n_ctx, .kv_type = kv_type, .n_threads = (int)cli_cap_threads(threads)};
    if (cli_failed(es_session_new_ext(m, &spar, &s, err, sizeof err), err)) goto done;
    es_sampler_params sp = {.temperature = (float)temp, .top_k = (int)top_k, .top_p = (float)top_p,
                            .min_p = (float)min_p, .seed = seed};
    smp = es_sampler_new(&sp);
    int nv = es_model_n_vocab(m);
    logits = malloc(sizeof(float) * (size_t)nv);
    if (!smp || !logits) { fprintf(stderr, "edgeseek: out of memory\n"); goto done; }

    double t1 = cli_now();
    int reused = 0, file_tokens = -1; /* prompt tokens taken from the session file; what it held */
    if (session_file) {
        reused = cli_session_restore(s, session_file, ids, (int)n_ids, &file_tokens);
        if (reused < 0) goto done;
    }
    if (cli_failed(es_session_eval(s, ids + reused, (int)n_ids - reused, logits, 0, err, sizeof err), err)) goto done;
    if (session_file && cli_session_keep(s, session_file, file_tokens, (int)n_ids) != 0) goto done;
    double t_prompt = cli_now() - t1;
    double t_first = cli_now() - t0; /* load, prefill and the first token's logits */

    es_detok dt = {0};
    char out[1024];
    long produced = 0;
    double t2 = cli_now();
    while (n_gen < 0 || produced < n_gen) {
        int32_t tok = es_sampler_sample(smp, logits, nv);
        produced++;
        if (es_model_is_eog(m, tok)) break;
        size_t w = es_detok_push(&dt, m, tok, out, sizeof out);
        if (w > sizeof out) { /* a very long token: decode it into its own buffer */
            char *big = malloc(w);
            if (big) {
                w = es_detok_push(&dt, m, tok, big, w);
                fwrite(big, 1, w, stdout);
                free(big);
            }
            w = 0;
        }
        fwrite(out, 1, w, stdout);
        if (cli_stdout_check() != 0) goto done;
        if (es_session_pos(s) >= es_session_n_ctx(s)) {
            fprintf(stderr, "\nedgeseek: context full (%d tokens)\n", es_session_n_ctx(s));
            break;
        }
        if (es_session_eval(s, &tok, 1, logits, 0, err, sizeof err) != ES_OK) {
            fprintf(stderr, "\nedgeseek: %s\n", err);
            goto done;
        }
    }
    size_t w = es_detok_flush(&dt, out, sizeof out);
    fwrite(out, 1, w, stdout);
    printf("\n");
    double t_gen = cli_now() - t2;
    if (stats) {
        const size_t kvb = es_session_kv_bytes_per_token(s);
        fprintf(stderr, "\n[edgeseek] load %.3f s | prompt %zu tokens (%d from the session file), %.2f tokens/s"
                        " | first token %.3f s | generated %ld tokens, %.2f tokens/s"
                        " | KV cache %s, %zu bytes/token, %zu bytes used | %d threads, %s kernels\n",
                t_load, n_ids, reused, t_prompt > 0 ? (n_ids - reused) / t_prompt : 0.0, t_first, produced,
                t_gen > 0 ? produced / t_gen : 0.0, es_kv_type_name(es_session_kv_type(s)), kvb,
                kvb * (size_t)es_session_pos(s), es_session_threads(s), es_model_simd(m));
    }
    if (lp.stats) es_model_print_paging_stats(m, stderr);
    rc = 0;
done:
    free(logits);
    es_sampler_free(smp);
    es_session_free(s);
    free(ids);
    free(filebuf);
    es_model_free(m);
    return rc;
}
