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
            CLI_SAMPLING_USAGE
            "  --kv-type T   f32 | f16 | bf16 | q8_0: storage of the latent KV cache (default f16)\n"
            "  --session FILE  reuse a saved prompt: when FILE holds a session of this model and cache\n"
            "                type, its tokens that begin the prompt are loaded instead of prefilled; the\n"
            "                prompt's state is then saved to FILE if it differs (generated text is not)\n"
            "  --chat        render the prompt as one user turn of the DeepSeek chat format (its text,\n"
            "                and --system's, never makes control tokens)\n"
            "  --system TEXT system text for --chat\n"
            "  --mtp         speculative decoding with the model's MTP block: same tokens at temperature 0,\n"
            "                same distribution when sampling (a different draw for a seed)\n"
            "  --no-stats    do not print statistics to stderr\n"
            CLI_PAGING_USAGE);
}

int cmd_run(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *file = NULL, *system_text = NULL;
    long n_gen = 128;
    int chat = 0, stats = 1, mtp = 0;
    int kv_type = ES_KV_DEFAULT;
    const char *session_file = NULL;
    es_load_params lp = {0};
    cli_gen_opts go;
    cli_gen_defaults(&go);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage_run(stdout); return 0; }
        int po = cli_paging_opt("run", argc, argv, &i, &lp);
        if (po < 0) return 2;
        if (po) continue;
        if (!strcmp(a, "--chat")) { chat = 1; continue; }
        if (!strcmp(a, "--no-stats")) { stats = 0; continue; }
        if (!strcmp(a, "--mtp")) { mtp = 1; continue; }
        if (i + 1 >= argc) return cli_usage_error(usage_run, "edgeseek run: %s needs a value\n", a);
        const char *v = argv[++i];
        int bad = 0, go_rc = cli_gen_opt(a, v, &go, &lp);
        if (go_rc < 0) return 2;
        if (go_rc) continue;
        if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "-p")) prompt = v;
        else if (!strcmp(a, "-f")) file = v;
        else if (!strcmp(a, "--system")) system_text = v;
        else if (!strcmp(a, "--session")) session_file = v;
        else if (!strcmp(a, "--kv-type")) bad = cli_parse_kv_type(v, &kv_type);
        else if (!strcmp(a, "-n")) bad = cli_parse_int(a, v, -1, 1L << 30, &n_gen);
        else return cli_usage_error(usage_run, "edgeseek run: unknown option %s\n", a);
        if (bad) return 2;
    }
    if (!model) return cli_usage_error(usage_run, "edgeseek run: -m MODEL is required\n");
    if (prompt && file) return cli_usage_error(NULL, "edgeseek run: give -p or -f, not both\n");

    char *filebuf;
    size_t flen;
    if (cli_text_arg(prompt, file, &filebuf, &prompt, &flen) != 0) return 1;

    double t0 = cli_now();
    lp.n_ctx = (int)go.n_ctx;
    lp.kv_type = kv_type; /* the automatic budget counts the cache at its type */
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
    es_spec *spec = NULL;
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
    long n_ctx = cli_ctx_size(m, go.n_ctx);
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
    const es_session_params spar = {.n_ctx = (int)n_ctx, .kv_type = kv_type, .n_threads = (int)cli_cap_threads(go.threads)};
    if (cli_failed(es_session_new_ext(m, &spar, &s, err, sizeof err), err)) goto done;
    if (mtp && cli_failed(es_session_set_mtp(s, 1, err, sizeof err), err)) goto done;
    es_sampler_params sp = cli_sampler_params(&go);
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
    if (mtp && cli_failed(es_spec_new(s, smp, 1, logits, &spec, err, sizeof err), err)) goto done;
    double t2 = cli_now();
    while (n_gen < 0 || produced < n_gen) {
        int32_t tok;
        if (spec) { /* the generator evaluates as it goes */
            es_status st = es_spec_next(spec, &tok, err, sizeof err);
            if (st == ES_ERR_CONTEXT) {
                fprintf(stderr, "\nedgeseek: context full (%d tokens)\n", es_session_n_ctx(s));
                break;
            }
            if (st != ES_OK) {
                fprintf(stderr, "\nedgeseek: %s\n", err);
                goto done;
            }
        } else tok = es_sampler_sample(smp, logits, nv);
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
        if (spec) continue;
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
        char from_file[48] = "";
        if (session_file) snprintf(from_file, sizeof from_file, " (%d from the session file)", reused);
        fprintf(stderr, "\n[edgeseek] load %.3f s | prompt %zu tokens%s, %.2f tokens/s"
                        " | first token %.3f s | generated %ld tokens, %.2f tokens/s"
                        " | KV cache %s, %zu bytes/token, %zu bytes used | %d threads, %s kernels\n",
                t_load, n_ids, from_file, t_prompt > 0 ? (n_ids - reused) / t_prompt : 0.0, t_first, produced,
                t_gen > 0 ? produced / t_gen : 0.0, es_kv_type_name(es_session_kv_type(s)), kvb,
                kvb * (size_t)es_session_pos(s), es_session_threads(s), es_model_simd(m));
        if (spec) cli_print_mtp_stats(spec);
    }
    if (lp.stats) es_model_print_paging_stats(m, stderr);
    rc = 0;
done:
    es_spec_free(spec);
    free(logits);
    es_sampler_free(smp);
    es_session_free(s);
    free(ids);
    free(filebuf);
    es_model_free(m);
    return rc;
}
