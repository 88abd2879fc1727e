/* cmd_chat.c — `edgeseek chat`: an interactive chat in the terminal, over the
 * public API alone.
 *
 * The conversation is a list of turns rendered with the model's chat format
 * (es_chat_tokenize) before each answer.  The session's KV cache is kept
 * between turns: only the tokens after the longest prefix the cache shares
 * with the new rendering are evaluated (es_session_truncate cuts the rest).
 * DeepSeek-R1's template drops earlier thoughts, so a finished turn is
 * stored as its answer alone (the reasoning kept aside for /save); the cache
 * then holds the thoughts, the rendering does not, and the next turn
 * re-evaluates from the assistant marker on, not the whole conversation.
 * When the context cannot hold the conversation and room for an answer, the
 * oldest turns are dropped, with a note.  --session FILE starts the cache
 * from a saved session (cli/session.c) and saves it at exit; its tokens
 * serve only as a prefix the first rendering may share.
 *
 * Generated text is split into thinking and answer (es_reasoning_*): on a
 * terminal the thinking is shown dimmed, or folded to one line with
 * --hide-thinking; elsewhere it is written between <think> tags (or left
 * out), with no escape codes.  Ctrl-C stops the answer being generated (or
 * the prompt being evaluated) and drops that turn; at the prompt a first
 * Ctrl-C discards the line, a second in a row or Ctrl-D (end of input) leaves
 * with status 0.  Lines are read with libedit (line editing, history) when
 * the build found it (ES_HAVE_LIBEDIT) and both ends are terminals, else a
 * line at a time from standard input, which is how scripts drive it. */
#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef ES_HAVE_LIBEDIT
#include <histedit.h>
#include <langinfo.h>
#include <wchar.h>
#endif

#include "cli.h"
#include "edgeseek.h"

#define DIM "\033[2m"
#define UNDIM "\033[22m"
/* prompt tokens evaluated per call, so that Ctrl-C is seen during a long one */
#define PREFILL_CHUNK 128

static void usage_chat(FILE *f) {
    fprintf(f,
            "usage: edgeseek chat -m MODEL [options]\n"
            "  an interactive chat in the model's chat format; each line typed is a message.\n"
            "  On a terminal the thinking is shown dimmed; with standard input not a terminal\n"
            "  the lines are read one by one (for scripts) and nothing but text is written.\n"
            "  --system TEXT the system text (also /system)\n"
            "  --hide-thinking\n"
            "                fold the model's thinking into one line (on a terminal) or leave it out\n"
            "  -n N          the most tokens an answer may have (default -1: until the context is full)\n"
            "  --verbose     a line per turn on stderr: prompt tokens, those reused from the cache, speed\n"
            "  --mtp         speculative decoding with the model's MTP block (same text at --temp 0)\n"
            "  --kv-type T   f32 | f16 | bf16 | q8_0: storage of the latent KV cache (default f16)\n"
            "  --session FILE  start from the cache FILE holds (when it was saved with this model and\n"
            "                cache type: a long --system text is then evaluated once) and save the\n"
            "                conversation's cache to it at exit (the turns' text is not kept)\n"
            CLI_SAMPLING_USAGE CLI_PAGING_USAGE
            "commands at the prompt: /help, /reset, /system [TEXT], /save FILE (a line starting with //\n"
            "sends the text from its second slash). Ctrl-C stops an answer; Ctrl-C twice or Ctrl-D quits.\n");
}

/* Ctrl-C sets got_sigint, which the generation loops read, and writes a
 * byte into a pipe that the line reader polls beside standard input: the
 * wait for a line ends whichever thread the signal was delivered to, and a
 * Ctrl-C that comes just before the wait begins is not lost.  The handler
 * restarts other calls (SA_RESTART), so a write to a slow terminal is not
 * cut short by it. */
static volatile sig_atomic_t got_sigint;
static int sig_pipe[2] = {-1, -1};
static void on_sigint(int sig) {
    (void)sig;
    int e = errno;
    got_sigint = 1;
    if (sig_pipe[1] >= 0 && write(sig_pipe[1], "", 1) < 0) { /* full: a byte is there already */ }
    errno = e;
}

/* Forgets a Ctrl-C once it has been acted on. */
static void consume_sigint(void) {
    char junk[64];
    while (sig_pipe[0] >= 0 && read(sig_pipe[0], junk, sizeof junk) > 0) {}
    got_sigint = 0;
}

/* Waits until standard input has bytes (or its end): 1; or Ctrl-C: -1. */
static int wait_input(void) {
    for (;;) {
        if (got_sigint) return -1;
        struct pollfd p[2] = {{.fd = 0, .events = POLLIN}, {.fd = sig_pipe[0], .events = POLLIN}};
        int r = poll(p, sig_pipe[0] >= 0 ? 2 : 1, -1);
        if (r < 0 && errno != EINTR) return 1; /* let the read say what is wrong */
        if (got_sigint) return -1;
        if (r > 0 && p[0].revents) return 1;
    }
}

/* ---- growable strings ---------------------------------------------------- */

typedef struct strbuf {
    char *p;
    size_t n, cap;
    int oom;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_str(strbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* A malloc'd copy of s[0..n); NULL when out of memory. */
static char *dup_n(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (p) { memcpy(p, s, n); p[n] = 0; }
    return p;
}

/* ---- the chat's state --------------------------------------------------- */

typedef struct turn {
    char *user;      /* the message */
    char *answer;    /* the answer, as the next rendering shows it */
    char *reasoning; /* the thinking before it (kept for /save, never rendered) */
} turn;

typedef struct chat {
    es_model *m;
    es_session *s;
    es_sampler *smp;
    float *logits;
    int n_vocab, n_ctx;
    const char *model_path;
    char *system;        /* NULL: none */
    turn *turns;
    size_t n_turns, cap_turns;
    int32_t *cache;      /* the tokens at the session's positions 0..n_cache-1 */
    size_t n_cache;
    long max_answer;     /* -n; <= 0: no limit */
    int ansi;            /* stdout is a terminal that takes escape codes (dim) */
    int hide_thinking, verbose;
    int step_ms;         /* EDGESEEK_CHAT_STEP_MS: each token takes at least this long (a test's slow machine) */
    int mtp;             /* --mtp: answers through es_spec (the session's MTP block on) */
    es_spec_stats spec;  /* the last answer's counts with --mtp */
    int changed;         /* the session moved since it started or was loaded (--session) */
    char err[512];
} chat;

static void turn_free(turn *t) {
    free(t->user);
    free(t->answer);
    free(t->reasoning);
    memset(t, 0, sizeof *t);
}

/* Drops the first k turns. */
static void drop_turns(chat *c, size_t k) {
    for (size_t i = 0; i < k; i++) turn_free(&c->turns[i]);
    memmove(c->turns, c->turns + k, (c->n_turns - k) * sizeof *c->turns);
    c->n_turns -= k;
}

/* Writes bytes to stdout; -1 when standard output failed (said once). */
static int out(const char *s, size_t n) {
    if (n) fwrite(s, 1, n, stdout);
    return cli_stdout_check();
}
static int outs(const char *s) { return out(s, strlen(s)); }

/* A note for the user, not part of an answer: dimmed on stdout on a
 * terminal, else a line on stderr (a script's stdout holds the answers). */
static void note(const chat *c, const char *fmt, ...) CLI_PRINTF(2, 3);
static void note(const chat *c, const char *fmt, ...) {
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->ansi) {
        printf(DIM "[%s]" UNDIM "\n", msg);
        cli_stdout_check();
    } else {
        fprintf(stderr, "edgeseek chat: %s\n", msg);
    }
}

/* ---- rendering and the cache -------------------------------------------- */

/* The conversation with a pending user message (the last turn's, whose
 * answer is NULL) in the chat format, ready for the answer. */
static es_status render(chat *c, int32_t **ids, size_t *n_ids) {
    size_t cap = 1 + 2 * c->n_turns, n = 0;
    es_chat_msg *msgs = malloc(cap * sizeof *msgs);
    if (!msgs) { snprintf(c->err, sizeof c->err, "out of memory"); return ES_ERR_NOMEM; }
    if (c->system) msgs[n++] = (es_chat_msg){"system", c->system};
    for (size_t i = 0; i < c->n_turns; i++) {
        msgs[n++] = (es_chat_msg){"user", c->turns[i].user};
        if (c->turns[i].answer) msgs[n++] = (es_chat_msg){"assistant", c->turns[i].answer};
    }
    es_status st = es_chat_tokenize(c->m, msgs, n, 1, ids, n_ids, c->err, sizeof c->err);
    free(msgs);
    return st;
}

/* Renders the conversation so that it leaves room for an answer, dropping
 * the oldest turns (with a note) while it does not.  0, or -1 with the
 * pending turn removed (message printed). */
static int fit_context(chat *c, int32_t **ids, size_t *n_ids) {
    long reserve = c->max_answer > 0 ? c->max_answer : c->n_ctx / 4;
    if (reserve > c->n_ctx / 2) reserve = c->n_ctx / 2;
    size_t dropped = 0;
    for (;;) {
        if (render(c, ids, n_ids) != ES_OK) {
            note(c, "%s", c->err);
            turn_free(&c->turns[--c->n_turns]);
            return -1;
        }
        if ((long)*n_ids + reserve <= c->n_ctx || c->n_turns == 1) break;
        free(*ids);
        *ids = NULL;
        drop_turns(c, 1);
        dropped++;
    }
    if (dropped == 1) note(c, "context full: the oldest turn was dropped");
    if (dropped > 1) note(c, "context full: the %zu oldest turns were dropped", dropped);
    if ((long)*n_ids >= c->n_ctx) {
        note(c, "the message is too long: %zu tokens with the chat format, and the context holds %d (-c)",
             *n_ids, c->n_ctx);
        free(*ids);
        *ids = NULL;
        turn_free(&c->turns[--c->n_turns]);
        return -1;
    }
    return 0;
}

/* Keeps the longest prefix of the cache that ids start with (at least the
 * last id is evaluated again, for its logits), then evaluates the rest in
 * chunks, stopping early on Ctrl-C.  Returns 0, 1 if interrupted, -1 on an
 * error (message printed). */
static int prefill(chat *c, const int32_t *ids, size_t n, size_t *reused) {
    size_t keep = 0;
    c->changed = 1;
    while (keep < c->n_cache && keep < n && c->cache[keep] == ids[keep]) keep++;
    if (keep == n) keep = n - 1;
    if (es_session_truncate(c->s, (int)keep, c->err, sizeof c->err) != ES_OK) {
        note(c, "%s", c->err);
        return -1;
    }
    c->n_cache = keep;
    *reused = keep;
    while (c->n_cache < n) {
        if (got_sigint) return 1;
        size_t k = n - c->n_cache < PREFILL_CHUNK ? n - c->n_cache : PREFILL_CHUNK;
        if (es_session_eval(c->s, ids + c->n_cache, (int)k, c->logits, 0, c->err, sizeof c->err) != ES_OK) {
            note(c, "%s", c->err);
            /* what the session holds is no longer known: start afresh */
            es_session_reset(c->s);
            c->n_cache = 0;
            return -1;
        }
        memcpy(c->cache + c->n_cache, ids + c->n_cache, k * sizeof *ids);
        c->n_cache += k;
    }
    return 0;
}

/* ---- showing an answer -------------------------------------------------- */

/* Where the display is: nothing shown yet, in the thinking, in the answer. */
enum { SHOW_NONE, SHOW_THINK, SHOW_ANSWER };

typedef struct shown {
    int where;
    long think_tokens;
    strbuf reasoning, answer;
} shown;

static int show_think(chat *c, shown *sh, const char *s, size_t n) {
    if (!n) return 0;
    sb_add(&sh->reasoning, s, n);
    if (sh->where == SHOW_NONE) {
        sh->where = SHOW_THINK;
        if (c->hide_thinking && c->ansi && outs(DIM "[thinking...]" UNDIM) != 0) return -1;
        if (!c->hide_thinking && outs(c->ansi ? DIM : "<think>\n") != 0) return -1;
    }
    return c->hide_thinking ? 0 : out(s, n);
}

/* Closes the thinking shown: before the answer (a blank line follows), or
 * at the end when no answer came (the line ends). */
static int end_think(chat *c, shown *sh, int before_answer) {
    if (sh->where != SHOW_THINK) return 0;
    sh->where = SHOW_ANSWER;
    if (!c->hide_thinking) {
        if (c->ansi) return outs(before_answer ? UNDIM "\n\n" : UNDIM "\n");
        return outs(before_answer ? "\n</think>\n\n" : "\n</think>\n");
    }
    if (!c->ansi) return 0;
    char line[80];
    snprintf(line, sizeof line, "\r\033[K" DIM "[thought for %ld tokens]" UNDIM "\n", sh->think_tokens);
    return outs(line);
}

static int show_answer(chat *c, shown *sh, const char *s, size_t n) {
    if (!n) return 0;
    if (end_think(c, sh, 1) != 0) return -1;
    sh->where = SHOW_ANSWER;
    sb_add(&sh->answer, s, n);
    return out(s, n);
}

/* Feeds one token's text (or, text NULL, the end) through the split. */
static int show_text(chat *c, shown *sh, es_reasoning *rs, const char *text, size_t n) {
    char *rb = malloc(n + ES_REASONING_HOLD), *cb = malloc(n + ES_REASONING_HOLD);
    size_t nr = 0, nc = 0;
    int rc = -1;
    if (rb && cb) {
        if (text) es_reasoning_feed(rs, text, n, rb, &nr, cb, &nc);
        else es_reasoning_flush(rs, rb, &nr, cb, &nc);
        rc = show_think(c, sh, rb, nr) == 0 && show_answer(c, sh, cb, nc) == 0 ? 0 : -1;
    } else {
        fprintf(stderr, "edgeseek: out of memory\n");
    }
    free(rb);
    free(cb);
    return rc;
}

/* ---- one turn ------------------------------------------------------------ */

enum { END_EOS, END_LIMIT, END_FULL, END_STOPPED, END_ERROR };

/* Generates until an end-of-generation token, -n, the context's end or
 * Ctrl-C; *produced counts the tokens.  Returns an END_*. */
static int generate(chat *c, shown *sh, long *produced) {
    es_reasoning rs;
    es_reasoning_init(&rs, 0);
    es_detok dt = {0};
    char small[256];
    int end = END_EOS;
    *produced = 0;
    es_spec *g = NULL; /* --mtp: the generator evaluates as it goes */
    if (c->mtp && es_spec_new(c->s, c->smp, 1, c->logits, &g, c->err, sizeof c->err) != ES_OK) {
        note(c, "%s", c->err);
        return END_ERROR;
    }
    for (;;) {
        if (got_sigint) { end = END_STOPPED; break; }
        int32_t tok;
        if (g) {
            es_status st = es_spec_next(g, &tok, c->err, sizeof c->err);
            if (st == ES_ERR_CONTEXT) { end = END_FULL; break; }
            if (st != ES_OK) {
                note(c, "%s", c->err);
                es_session_reset(c->s);
                c->n_cache = 0;
                end = END_ERROR;
                break;
            }
        } else tok = es_sampler_sample(c->smp, c->logits, c->n_vocab);
        if (es_model_is_eog(c->m, tok)) break;
        ++*produced;
        if (es_reasoning_thinking(&rs)) sh->think_tokens++;
        size_t w = es_detok_push(&dt, c->m, tok, small, sizeof small);
        char *piece = small;
        if (w > sizeof small) { /* a long token: into a buffer of its size */
            piece = malloc(w);
            if (!piece) { fprintf(stderr, "edgeseek: out of memory\n"); end = END_ERROR; break; }
            w = es_detok_push(&dt, c->m, tok, piece, w);
        }
        int rc = show_text(c, sh, &rs, piece, w);
        if (piece != small) free(piece);
        if (rc != 0) { end = END_ERROR; break; }
        if (c->step_ms > 0) {
            struct timespec ts = {c->step_ms / 1000, (long)(c->step_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL); /* a Ctrl-C ends it early: got_sigint is read next */
        }
        if (c->max_answer > 0 && *produced >= c->max_answer) { end = END_LIMIT; break; }
        if (g) continue;
        if (c->n_cache >= (size_t)c->n_ctx) { end = END_FULL; break; }
        if (es_session_eval(c->s, &tok, 1, c->logits, 0, c->err, sizeof c->err) != ES_OK) {
            note(c, "%s", c->err);
            es_session_reset(c->s);
            c->n_cache = 0;
            end = END_ERROR;
            break;
        }
        c->cache[c->n_cache++] = tok;
    }
    if (g) { /* the session holds what the generator evaluated: the cache follows it */
        if (end != END_ERROR) {
            c->n_cache = (size_t)es_session_pos(c->s);
            memcpy(c->cache, es_session_tokens(c->s), c->n_cache * sizeof *c->cache);
        }
        es_spec_get_stats(g, &c->spec);
        es_spec_free(g);
    }
    size_t w = es_detok_flush(&dt, small, sizeof small);
    if (show_text(c, sh, &rs, small, w) != 0 || show_text(c, sh, &rs, NULL, 0) != 0) return END_ERROR;
    return end;
}

/* Strips white space at the end of s (in place). */
static void rtrim(char *s, size_t *n) {
    while (*n && (s[*n - 1] == ' ' || s[*n - 1] == '\n' || s[*n - 1] == '\t' || s[*n - 1] == '\r')) s[--*n] = 0;
}

/* Answers the message: adds the turn, renders, evaluates, generates.  0, or
 * -1 when writing stdout failed. */
static int answer(chat *c, const char *message) {
    if (c->n_turns == c->cap_turns) {
        size_t cap = c->cap_turns ? 2 * c->cap_turns : 16;
        turn *t = realloc(c->turns, cap * sizeof *t);
        if (!t) { fprintf(stderr, "edgeseek: out of memory\n"); return 0; }
        c->turns = t;
        c->cap_turns = cap;
    }
    turn *t = &c->turns[c->n_turns];
    memset(t, 0, sizeof *t);
    if (!(t->user = dup_n(message, strlen(message)))) { fprintf(stderr, "edgeseek: out of memory\n"); return 0; }
    c->n_turns++;

    int32_t *ids = NULL;
    size_t n_ids = 0, reused = 0;
    if (fit_context(c, &ids, &n_ids) != 0) return 0;
    double t0 = cli_now();
    int pf = prefill(c, ids, n_ids, &reused);
    free(ids);
    double t1 = cli_now();
    shown sh = {0};
    long produced = 0;
    int end = pf == 0 ? generate(c, &sh, &produced) : pf > 0 ? END_STOPPED : END_ERROR;
    double t2 = cli_now();
    int rc = 0;
    if (sh.where == SHOW_THINK) {
        if (end_think(c, &sh, 0) != 0) rc = -1;
    } else if (sh.where == SHOW_ANSWER && outs("\n") != 0) {
        rc = -1;
    }
    if (end == END_STOPPED) {
        consume_sigint();
        note(c, "stopped; this turn is not kept");
    }
    if (end == END_LIMIT) note(c, "the answer reached -n %ld tokens", c->max_answer);
    if (end == END_FULL) note(c, "the context is full (%d tokens); the answer is cut short", c->n_ctx);
    /* a turn is kept when it has an answer to show the model next time */
    t = &c->turns[c->n_turns - 1];
    if (end == END_STOPPED || end == END_ERROR || sh.answer.oom || sh.reasoning.oom ||
        (end != END_EOS && sh.answer.n == 0)) {
        turn_free(t);
        c->n_turns--;
        free(sh.answer.p);
    } else {
        if (sh.answer.p) rtrim(sh.answer.p, &sh.answer.n);
        t->answer = sh.answer.p ? sh.answer.p : dup_n("", 0);
        if (!t->answer) { turn_free(t); c->n_turns--; }
        t->reasoning = sh.reasoning.p;
        sh.reasoning.p = NULL;
    }
    free(sh.reasoning.p);
    if (c->verbose)
        fprintf(stderr, "[edgeseek chat] prompt %zu tokens: %zu reused from the cache, %zu evaluated in %.3f s |"
                        " generated %ld tokens, %.2f tokens/s | context %zu of %d | KV cache %s, %zu bytes\n",
                n_ids, reused, n_ids - reused, t1 - t0, produced, t2 > t1 ? produced / (t2 - t1) : 0.0,
                c->n_cache, c->n_ctx, es_kv_type_name(es_session_kv_type(c->s)),
                c->n_cache * es_session_kv_bytes_per_token(c->s));
    if (c->verbose && c->mtp)
        fprintf(stderr, "[edgeseek chat] MTP: %lld drafted, %lld accepted, %.3f tokens per forward pass\n",
                (long long)c->spec.drafted, (long long)c->spec.accepted,
                c->spec.forwards ? (double)c->spec.tokens / c->spec.forwards : 0.0);
    return rc;
}

/* ---- /save --------------------------------------------------------------- */

/* s as a JSON string: control characters escaped, bytes that are not UTF-8
 * replaced by U+FFFD. */
static void json_str(strbuf *b, const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    sb_str(b, "\"");
    while (*p) {
        unsigned c = *p;
        int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        int ok = len > 0 && !(len == 2 && c < 0xC2) && !(c > 0xF4);
        for (int k = 1; ok && k < len; k++) ok = (p[k] & 0xC0) == 0x80;
        if (ok && len == 3) ok = !(c == 0xE0 && p[1] < 0xA0) && !(c == 0xED && p[1] >= 0xA0);
        if (ok && len == 4) ok = !(c == 0xF0 && p[1] < 0x90) && !(c == 0xF4 && p[1] >= 0x90);
        if (!ok) { sb_str(b, "\\ufffd"); p++; continue; }
        if (len > 1) { sb_add(b, (const char *)p, (size_t)len); p += len; continue; }
        char esc[8];
        if (c == '"') sb_str(b, "\\\"");
        else if (c == '\\') sb_str(b, "\\\\");
        else if (c == '\n') sb_str(b, "\\n");
        else if (c == '\t') sb_str(b, "\\t");
        else if (c < 0x20 || c == 0x7f) { snprintf(esc, sizeof esc, "\\u%04x", c); sb_str(b, esc); }
        else sb_add(b, (const char *)p, 1);
        p++;
    }
    sb_str(b, "\"");
}

static void json_msg(strbuf *b, const char *role, const char *content, const char *reasoning, int first) {
    sb_str(b, first ? "\n    {\"role\": " : ",\n    {\"role\": ");
    json_str(b, role);
    sb_str(b, ", \"content\": ");
    json_str(b, content);
    if (reasoning && *reasoning) {
        sb_str(b, ", \"reasoning_content\": ");
        json_str(b, reasoning);
    }
    sb_str(b, "}");
}

/* Writes the conversation to path as JSON, in the shape of a chat
 * completion request's "messages" (assistant turns with their
 * reasoning_content), atomically. */
static void save(chat *c, const char *path) {
    strbuf b = {0};
    sb_str(&b, "{\n  \"model\": ");
    json_str(&b, c->model_path);
    sb_str(&b, ",\n  \"messages\": [");
    int first = 1;
    if (c->system) { json_msg(&b, "system", c->system, NULL, 1); first = 0; }
    for (size_t i = 0; i < c->n_turns; i++, first = 0) {
        json_msg(&b, "user", c->turns[i].user, NULL, first);
        json_msg(&b, "assistant", c->turns[i].answer, c->turns[i].reasoning, 0);
    }
    sb_str(&b, first ? "]\n}\n" : "\n  ]\n}\n");
    es_outfile *f = NULL;
    if (b.oom) {
        note(c, "out of memory");
    } else if (es_outfile_open(path, &f, c->err, sizeof c->err) != ES_OK ||
               es_outfile_write(f, b.p, b.n, c->err, sizeof c->err) != ES_OK) {
        es_outfile_discard(f);
        note(c, "%s", c->err);
    } else if (es_outfile_commit(f, c->err, sizeof c->err) != ES_OK) {
        note(c, "%s", c->err);
    } else {
        note(c, "saved %zu turn%s to %s", c->n_turns, c->n_turns == 1 ? "" : "s", path);
    }
    free(b.p);
}

/* ---- commands ------------------------------------------------------------ */

static const char help_text[] =
    "  /help          this list\n"
    "  /reset         forget the conversation (the system text stays)\n"
    "  /system TEXT   set the system text (from the next answer on); /system alone removes it\n"
    "  /save FILE     write the conversation to FILE as JSON (messages, with the reasoning)\n"
    "  //TEXT         send /TEXT as a message\n"
    "  Ctrl-C stops an answer (the turn is not kept); Ctrl-C twice at the prompt, or Ctrl-D, quits.\n";

/* A line starting with '/': runs the command.  Returns 0 (handled), 1 (a
 * message after all: "//..."), -1 (stdout failed). */
static int command(chat *c, const char *line) {
    if (line[1] == '/') return 1;
    const char *arg = line + 1;
    size_t nlen = strcspn(arg, " \t");
    const char *rest = arg + nlen;
    while (*rest == ' ' || *rest == '\t') rest++;
#define IS(name) (nlen == sizeof name - 1 && !strncmp(arg, name, nlen))
    if (IS("help") || IS("?")) return outs(help_text) ? -1 : 0;
    if (IS("reset")) {
        drop_turns(c, c->n_turns);
        note(c, "the conversation is reset");
        return 0;
    }
    if (IS("system")) {
        free(c->system);
        c->system = *rest ? dup_n(rest, strlen(rest)) : NULL;
        note(c, c->system ? "system text set" : "no system text");
        return 0;
    }
    if (IS("save")) {
        if (!*rest) note(c, "/save needs a file name");
        else save(c, rest);
        return 0;
    }
#undef IS
    note(c, "unknown command /%.*s; /help lists them", (int)(nlen > 40 ? 40 : nlen), arg);
    return 0;
}

/* ---- reading lines ------------------------------------------------------- */

typedef struct reader {
    int prompt;     /* print "> " before reading (a terminal) */
#ifdef ES_HAVE_LIBEDIT
    EditLine *el;
    History *hist;
#endif
    char *buf;      /* bytes read from standard input, from buf[pos] on not yet used */
    size_t n, pos, cap;
    int eof;
    char *line;     /* the line handed out (libedit's, copied) */
    size_t line_cap;
} reader;

#ifdef ES_HAVE_LIBEDIT
static char *el_prompt(EditLine *el) {
    (void)el;
    return "> ";
}

/* libedit's character reader: one character from standard input, decoded
 * in the locale; -1 (errno EINTR) on Ctrl-C, 0 at the end. */
static int chat_getc(EditLine *el, wchar_t *wc) {
    (void)el;
    char b[MB_LEN_MAX];
    size_t n = 0;
    for (;;) {
        if (wait_input() < 0) { errno = EINTR; return -1; }
        ssize_t k = read(0, b + n, 1);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return (int)k;
        n++;
        mbstate_t st;
        memset(&st, 0, sizeof st);
        size_t r = mbrtowc(wc, b, n, &st);
        if (r == (size_t)-2 && n < sizeof b) continue; /* more bytes to come */
        if (r == (size_t)-1 || r == (size_t)-2) { n = 0; continue; } /* not the locale's: dropped */
        return 1;
    }
}
#endif

static void reader_open(reader *r, int tty_in, int tty_out) {
    memset(r, 0, sizeof *r);
    r->prompt = tty_in;
#ifdef ES_HAVE_LIBEDIT
    if (!tty_in || !tty_out) return;
    /* libedit decodes the input in the locale's encoding: the model's text is UTF-8 */
    if (!setlocale(LC_CTYPE, "") || strcmp(nl_langinfo(CODESET), "UTF-8") != 0) setlocale(LC_CTYPE, "C.UTF-8");
    r->el = el_init("edgeseek", stdin, stdout, stderr);
    r->hist = history_init();
    if (!r->el || !r->hist) {
        if (r->el) el_end(r->el);
        if (r->hist) history_end(r->hist);
        r->el = NULL;
        r->hist = NULL;
        return;
    }
    HistEvent ev;
    history(r->hist, &ev, H_SETSIZE, 1000);
    history(r->hist, &ev, H_SETUNIQUE, 1);
    el_set(r->el, EL_EDITOR, "emacs");
    el_set(r->el, EL_PROMPT, el_prompt);
    el_set(r->el, EL_HIST, history, r->hist);
    el_set(r->el, EL_GETCFN, chat_getc);
#else
    (void)tty_out;
#endif
}

static void reader_close(reader *r) {
#ifdef ES_HAVE_LIBEDIT
    if (r->el) el_end(r->el);
    if (r->hist) history_end(r->hist);
#endif
    free(r->buf);
    free(r->line);
}

/* Copies s[0..n) into r->line; -1 when out of memory. */
static int hand_out(reader *r, const char *s, size_t n) {
    if (n + 1 > r->line_cap) {
        char *p = realloc(r->line, n + 1);
        if (!p) return -1;
        r->line = p;
        r->line_cap = n + 1;
    }
    memcpy(r->line, s, n);
    r->line[n] = 0;
    return 0;
}

/* One line from standard input, read by this reader (not stdio, so that
 * the wait can end on Ctrl-C): 1 a line in r->line (*n bytes, without its
 * end), 0 the end, -1 Ctrl-C, -2 a line too long (skipped, said). */
static int plain_line(reader *r, size_t *len) {
    int too_long = 0;
    size_t seen = r->pos; /* no line end in buf[pos..seen) */
    for (;;) {
        char *nl = r->n > seen ? memchr(r->buf + seen, '\n', r->n - seen) : NULL;
        seen = r->n;
        if (nl || (r->eof && r->n > r->pos)) {
            size_t end = nl ? (size_t)(nl - r->buf) : r->n, start = r->pos;
            r->pos = nl ? end + 1 : end;
            if (too_long || end - start > CLI_MAX_PROMPT_BYTES) {
                fprintf(stderr, "edgeseek chat: a line of more than 64 MiB is not a message; skipped\n");
                return -2;
            }
            if (end > start && r->buf[end - 1] == '\r') end--;
            if (hand_out(r, r->buf + start, end - start) != 0) return -2;
            *len = end - start;
            return 1;
        }
        if (r->eof) return too_long ? -2 : 0;
        /* keep the unused bytes at the front; a line over the cap is dropped as it comes */
        if (r->pos) {
            memmove(r->buf, r->buf + r->pos, r->n - r->pos);
            r->n -= r->pos;
            r->pos = 0;
        }
        if (r->n > CLI_MAX_PROMPT_BYTES) { too_long = 1; r->n = 0; }
        seen = r->n;
        if (r->cap - r->n < 65536) {
            size_t cap = r->cap ? r->cap * 2 : 65536 * 2;
            char *p = realloc(r->buf, cap);
            if (!p) { fprintf(stderr, "edgeseek: out of memory\n"); return 0; }
            r->buf = p;
            r->cap = cap;
        }
        if (wait_input() < 0) return -1;
        ssize_t k = read(0, r->buf + r->n, r->cap - r->n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) r->eof = 1;
        else r->n += (size_t)k;
    }
}

/* Reads a line without its end into *line (valid until the next call).
 * 1: a line; 0: end of input; -1: interrupted (Ctrl-C); -2: a line that
 * cannot be a message (said). */
static int read_line(reader *r, const char **line) {
    fflush(stdout);
    size_t n = 0;
#ifdef ES_HAVE_LIBEDIT
    if (r->el) {
        int count = 0;
        const char *s = el_gets(r->el, &count);
        if (!s) return got_sigint || (count < 0 && errno == EINTR) ? -1 : 0;
        n = strlen(s);
        if (n && s[n - 1] == '\n') n--;
        if (hand_out(r, s, n) != 0) return -2;
        if (n) {
            HistEvent ev;
            history(r->hist, &ev, H_ENTER, r->line);
        }
        *line = r->line;
        return 1;
    }
#endif
    if (r->prompt) {
        fputs("> ", stdout);
        fflush(stdout);
    }
    int rc = plain_line(r, &n);
    if (rc != 1) return rc;
    if (memchr(r->line, 0, n)) {
        fprintf(stderr, "edgeseek chat: a line with a NUL byte is not a message; skipped\n");
        return -2;
    }
    *line = r->line;
    return 1;
}

/* ---- the command --------------------------------------------------------- */

/* The conversation loop; 0 at the end of input or a second Ctrl-C, 1 when
 * writing stdout failed. */
static int chat_loop(chat *c, reader *r) {
    int interrupts = 0;
    for (;;) {
        const char *line = NULL;
        int got = read_line(r, &line);
        if (got == -1) consume_sigint();
        if (got == 0) {
            if (r->prompt) outs("\n");
            return 0;
        }
        if (got == -1) {
            if (++interrupts >= 2) {
                outs("\n");
                return 0;
            }
            if (r->prompt) outs("\n");
            note(c, "Ctrl-C again or Ctrl-D to quit");
            continue;
        }
        interrupts = 0;
        if (got < 0) continue;
        while (*line == ' ' || *line == '\t') line++;
        if (!*line) continue;
        if (*line == '/') {
            int rc = command(c, line);
            if (rc < 0) return 1;
            if (rc == 0) continue;
            line++; /* "//text" is the message "/text" */
        }
        if (answer(c, line) != 0) return 1;
    }
}

int cmd_chat(int argc, char **argv) {
    const char *model = NULL, *system_text = NULL;
    long max_answer = -1;
    int hide_thinking = 0, verbose = 0, mtp = 0, kv_type = ES_KV_DEFAULT;
    const char *session_file = NULL;
    es_load_params lp = {0};
    cli_gen_opts go;
    cli_gen_defaults(&go);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage_chat(stdout); return 0; }
        int po = cli_paging_opt("chat", argc, argv, &i, &lp);
        if (po < 0) return 2;
        if (po) continue;
        if (!strcmp(a, "--hide-thinking")) { hide_thinking = 1; continue; }
        if (!strcmp(a, "--verbose")) { verbose = 1; continue; }
        if (!strcmp(a, "--mtp")) { mtp = 1; continue; }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int go_rc = cli_gen_opt(a, v, &go, &lp);
        if (go_rc < 0) return 2;
        if (go_rc) { i++; continue; }
        if (strcmp(a, "-m") && strcmp(a, "--system") && strcmp(a, "-n") && strcmp(a, "--kv-type") &&
            strcmp(a, "--session"))
            return cli_usage_error(usage_chat, "edgeseek chat: unknown option %s\n", a);
        if (!v) return cli_usage_error(usage_chat, "edgeseek chat: %s needs a value\n", a);
        i++;
        if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "--system")) system_text = v;
        else if (!strcmp(a, "--session")) session_file = v;
        else if (!strcmp(a, "--kv-type")) { if (cli_parse_kv_type(v, &kv_type)) return 2; }
        else if (cli_parse_int(a, v, -1, 1L << 30, &max_answer)) return 2;
    }
    if (!model) return cli_usage_error(usage_chat, "edgeseek chat: -m MODEL is required\n");

    lp.n_ctx = (int)go.n_ctx;
    lp.kv_type = kv_type;
    chat c = {0};
    if (cli_env_ms("EDGESEEK_CHAT_STEP_MS", &c.step_ms) != 0) return 2;
    c.model_path = model;
    c.max_answer = max_answer;
    c.hide_thinking = hide_thinking;
    c.verbose = verbose;
    c.mtp = mtp;
    const char *term = getenv("TERM"), *no_color = getenv("NO_COLOR");
    c.ansi = isatty(1) && term && *term && strcmp(term, "dumb") != 0 && !(no_color && *no_color);
    if (!(c.m = cli_load_model(model, &lp))) return 1;
    int rc = 1;
    reader r;
    int have_reader = 0;
    long n_ctx = cli_ctx_size(c.m, go.n_ctx);
    const es_session_params spar = {.n_ctx = (int)n_ctx, .kv_type = kv_type, .n_threads = (int)cli_cap_threads(go.threads)};
    if (cli_failed(es_session_new_ext(c.m, &spar, &c.s, c.err, sizeof c.err), c.err)) goto done;
    if (mtp && cli_failed(es_session_set_mtp(c.s, 1, c.err, sizeof c.err), c.err)) goto done;
    es_sampler_params sp = cli_sampler_params(&go);
    c.n_ctx = (int)n_ctx;
    c.n_vocab = es_model_n_vocab(c.m);
    c.smp = es_sampler_new(&sp);
    c.logits = malloc(sizeof(float) * (size_t)c.n_vocab);
    c.cache = malloc(sizeof(int32_t) * (size_t)n_ctx);
    c.system = system_text && *system_text ? dup_n(system_text, strlen(system_text)) : NULL;
    if (!c.smp || !c.logits || !c.cache || (system_text && *system_text && !c.system)) {
        fprintf(stderr, "edgeseek: out of memory\n");
        goto done;
    }
    if (session_file) {
        int got = cli_session_open(c.s, session_file, "starting afresh");
        if (got < 0) goto done;
        c.n_cache = (size_t)es_session_pos(c.s);
        memcpy(c.cache, es_session_tokens(c.s), c.n_cache * sizeof *c.cache);
        if (got) note(&c, "%zu tokens of cache restored from %s", c.n_cache, session_file);
    }

    struct sigaction sa, old_sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0) sig_pipe[0] = sig_pipe[1] = -1;
    sigaction(SIGINT, &sa, &old_sa);
    reader_open(&r, isatty(0), isatty(1));
    have_reader = 1;
    if (r.prompt && isatty(1)) {
        printf("edgeseek chat: %s, a context of %d tokens.\n"
               "/help lists the commands; Ctrl-C stops an answer, Ctrl-D quits.\n", model, c.n_ctx);
    }
    rc = chat_loop(&c, &r);
    sigaction(SIGINT, &old_sa, NULL);
    for (int k = 0; k < 2; k++)
        if (sig_pipe[k] >= 0) close(sig_pipe[k]);
    sig_pipe[0] = sig_pipe[1] = -1;
    if (lp.stats) es_model_print_paging_stats(c.m, stderr);
    /* the cache as the conversation left it, unless it is the file's own */
    if (session_file && c.changed && es_session_pos(c.s) > 0 &&
        cli_failed(es_session_save(c.s, session_file, c.err, sizeof c.err), c.err))
        rc = 1;
done:
    if (have_reader) reader_close(&r);
    for (size_t i = 0; i < c.n_turns; i++) turn_free(&c.turns[i]);
    free(c.turns);
    free(c.system);
    free(c.cache);
    free(c.logits);
    es_sampler_free(c.smp);
    es_session_free(c.s);
    es_model_free(c.m);
    return rc;
}
