/* generate.c — the smallest complete use of libedgeseek: load a model, put a
 * question in the chat format, generate greedily and print each piece of
 * text as soon as it is decoded.
 *
 *   cc generate.c $(pkg-config --cflags --libs edgeseek) -o generate
 *   ./generate models/edgeseek-default.gguf "What is 487 + 356?"
 *
 * Only edgeseek.h is needed.  Exit status: 0 done, 1 an error (a message on
 * stderr), 2 bad usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgeseek.h"

/* Called with each piece of text as it becomes complete UTF-8. */
typedef void (*piece_fn)(const char *text, size_t len, void *user);

static void print_piece(const char *text, size_t len, void *user) {
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
}

/* Evaluates the prompt, then picks the most likely token until an
 * end-of-generation token, max_tokens or the end of the context, handing
 * the decoded text to on_piece. */
static es_status generate(es_model *m, es_session *s, const int32_t *prompt, size_t n_prompt,
                          int max_tokens, piece_fn on_piece, void *user, char *err, size_t errlen) {
    int n_vocab = es_model_n_vocab(m);
    float *logits = malloc(sizeof(float) * (size_t)n_vocab);
    es_sampler_params sp = es_sampler_defaults();
    sp.temperature = 0; /* greedy */
    es_sampler *smp = es_sampler_new(&sp);
    es_status st = ES_ERR_NOMEM;
    if (!logits || !smp) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    st = es_session_eval(s, prompt, (int)n_prompt, logits, 0, err, errlen);
    es_detok dt = {0};
    char piece[256];
    for (int i = 0; st == ES_OK; i++) {
        int32_t tok = es_sampler_sample(smp, logits, n_vocab);
        if (es_model_is_eog(m, tok)) break;
        size_t n = es_detok_push(&dt, m, tok, piece, sizeof piece);
        if (n <= sizeof piece) {
            on_piece(piece, n, user);
        } else { /* a token longer than piece: nothing was consumed; again with room */
            char *big = malloc(n);
            if (!big) { snprintf(err, errlen, "out of memory"); st = ES_ERR_NOMEM; break; }
            on_piece(big, es_detok_push(&dt, m, tok, big, n), user);
            free(big);
        }
        /* enough tokens, or the context is full */
        if (i + 1 == max_tokens || es_session_pos(s) >= es_session_n_ctx(s)) break;
        st = es_session_eval(s, &tok, 1, logits, 0, err, errlen); /* the next token's logits */
    }
    if (st == ES_OK) on_piece(piece, es_detok_flush(&dt, piece, sizeof piece), user);
done:
    es_sampler_free(smp);
    free(logits);
    return st;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s MODEL.gguf QUESTION [MAX_TOKENS]\n", argv[0]);
        return 2;
    }
    char *end = NULL;
    long max_tokens = argc == 4 ? strtol(argv[3], &end, 10) : 256;
    if (max_tokens < 1 || max_tokens > 1 << 20 || (end && *end)) {
        fprintf(stderr, "generate: MAX_TOKENS must be a positive integer, got '%s'\n", argv[3]);
        return 2;
    }

    char err[512];
    es_model *m = NULL;
    es_session *s = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int rc = 1;

    es_load_params lp = {0}; /* zeros: the defaults */
    if (es_model_load(argv[1], &lp, &m, err, sizeof err) != ES_OK) {
        fprintf(stderr, "generate: %s\n", err);
        return 1;
    }
    /* One user turn; the rendered text carries its own BOS and special
     * tokens, so no BOS is added and special tokens are matched whole. */
    es_chat_msg msg = {"user", argv[2]};
    if (es_chat_render(m, &msg, 1, 1, &text, err, sizeof err) != ES_OK ||
        es_tokenize(m, text, strlen(text), 0, 1, &ids, &n_ids, err, sizeof err) != ES_OK) {
        fprintf(stderr, "generate: cannot prepare the prompt: %s\n", err);
        goto done;
    }
    int n_ctx = (int)n_ids + (int)max_tokens;
    if (n_ctx > es_model_n_ctx_train(m)) n_ctx = es_model_n_ctx_train(m);
    if ((int)n_ids >= n_ctx) {
        fprintf(stderr, "generate: the prompt (%zu tokens) does not fit the model's context (%d)\n",
                n_ids, es_model_n_ctx_train(m));
        goto done;
    }
    if (es_session_new(m, n_ctx, &s, err, sizeof err) != ES_OK) {
        fprintf(stderr, "generate: cannot create a session: %s\n", err);
        goto done;
    }
    if (generate(m, s, ids, n_ids, (int)max_tokens, print_piece, NULL, err, sizeof err) != ES_OK) {
        fprintf(stderr, "\ngenerate: %s\n", err);
        goto done;
    }
    printf("\n");
    rc = 0;
done:
    es_session_free(s);
    free(ids);
    free(text);
    es_model_free(m);
    return rc;
}
