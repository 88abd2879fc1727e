/* cmd_eval.c — `edgeseek eval -m MODEL --task arith [--n 500] [--seed S]`: held-out
 * evaluation of a model trained on train/'s arithmetic tasks.
 *
 * It generates the problems itself, with the same generator and checker as train/tasks.py
 * (splitmix64, the same draws in the same order, so a seed gives the same problems in both;
 * the default seed 7777 is one the training never uses), asks the model each question in the
 * DeepSeek chat format, decodes greedily, verifies the final answer after </think> and prints
 * the accuracy per task type.  Only the public API (edgeseek.h) is used, and nothing from the
 * rest of the CLI, so tests/test_default_model.c can include this file and run the same
 * evaluation.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgeseek.h"

#include "cli.h"

/* ---- the problem generator: mirrors train/tasks.py (hard=True) ---------- */

typedef struct ev_rng {
    uint64_t s;
} ev_rng;

static uint64_t ev_next(ev_rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* rand(n) = next() % n, as tasks.Rng.rand (the modulo bias is part of the mirror) */
static long ev_rand(ev_rng *r, long n) { return (long)(ev_next(r) % (uint64_t)n); }
static long ev_range(ev_rng *r, long lo, long hi) { return lo + ev_rand(r, hi - lo + 1); }

enum { EV_ADD, EV_SUB, EV_MUL, EV_CMP, EV_WORD, EV_NKINDS };
static const char *const ev_kind_name[EV_NKINDS] = {"add", "sub", "mul", "cmp", "word"};

static const char *const ev_names[] = {"Tom", "Anna", "Ben", "Mia", "Sam", "Lily"};
static const char *const ev_items[] = {"apples", "pens", "books", "coins", "cards", "stamps"};

typedef struct ev_problem {
    int kind;
    char question[200];
    long answer;
} ev_problem;

/* One problem at the evaluation size: 3-digit operands, multiplier 2..9. */
static void ev_make_problem(ev_rng *r, int kind, ev_problem *p) {
    p->kind = kind;
    long a, b;
    if (kind == EV_ADD || kind == EV_SUB || kind == EV_MUL) {
        a = ev_range(r, 100, 999);
        b = kind == EV_MUL ? ev_range(r, 2, 9) : ev_range(r, 100, 999);
        const char *sp = ev_rand(r, 2) ? " " : "";
        char op = kind == EV_ADD ? '+' : kind == EV_SUB ? '-' : '*';
        snprintf(p->question, sizeof p->question, "What is %ld%s%c%s%ld?", a, sp, op, sp, b);
        p->answer = kind == EV_ADD ? a + b : kind == EV_SUB ? a - b : a * b;
    } else if (kind == EV_CMP) {
        a = ev_range(r, 100, 999);
        b = ev_range(r, 100, 999);
        snprintf(p->question, sizeof p->question, "Which is larger, %ld or %ld?", a, b);
        p->answer = a > b ? a : b;
    } else {
        const char *name = ev_names[ev_rand(r, 6)];
        const char *item = ev_items[ev_rand(r, 6)];
        long op = ev_rand(r, 3);
        if (op == 0) {
            a = ev_range(r, 100, 999);
            b = ev_range(r, 100, 999);
            snprintf(p->question, sizeof p->question,
                     "%s has %ld %s and gets %ld more. How many %s does %s have now?",
                     name, a, item, b, item, name);
            p->answer = a + b;
        } else if (op == 1) {
            a = ev_range(r, 100, 999);
            b = ev_range(r, 100, 999);
            if (a < b) { long t = a; a = b; b = t; }
            snprintf(p->question, sizeof p->question,
                     "%s has %ld %s and gives away %ld. How many %s are left?", name, a, item, b, item);
            p->answer = a - b;
        } else {
            a = ev_range(r, 100, 999);
            b = ev_range(r, 2, 9);
            snprintf(p->question, sizeof p->question,
                     "There are %ld boxes with %ld %s in each box. How many %s are there?", b, a, item, item);
            p->answer = a * b;
        }
    }
}

/* ---- the checker: mirrors tasks.parse_answer / tasks.check ------------- */

/* completion: the generated text without the end-of-sentence token; ended: whether generation
 * stopped at it.  Well-formed: "<think>\n" ... "</think>\n\n" then an optionally negative
 * integer of at most 12 digits, then the end.  Returns 1 if correct. */
static int ev_check(const char *completion, int ended, long answer, int *well_formed) {
    static const char open[] = "<think>\n", close[] = "</think>\n\n";
    *well_formed = 0;
    if (!ended || strncmp(completion, open, sizeof open - 1) != 0) return 0;
    const char *end = strstr(completion, close);
    if (!end) return 0;
    const char *s = end + sizeof close - 1;
    int neg = *s == '-';
    s += neg;
    size_t nd = strspn(s, "0123456789");
    if (nd == 0 || nd > 12 || s[nd] != '\0') return 0;
    *well_formed = 1;
    long long v = strtoll(s, NULL, 10);
    return (neg ? -v : v) == (long long)answer;
}

/* ---- greedy generation in the chat format ------------------------------ */

static int32_t ev_argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Asks one question; writes the completion text (without the end token) to out.  Returns
 * ES_OK and sets *ended (stopped at an end-of-generation token) and *n_gen. */
static es_status ev_generate(es_model *m, es_session *s, float *logits, const char *question,
                             int max_new, char *out, size_t cap, int *ended, int *n_gen,
                             char *err, size_t errlen) {
    es_chat_msg msg = {"user", question};
    char *text = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0, len = 0;
    *ended = 0;
    *n_gen = 0;
    out[0] = '\0';
    es_status st = es_chat_render(m, &msg, 1, 1, &text, err, errlen);
    if (st != ES_OK) return st;
    /* the rendered text already starts with the BOS token's text */
    st = es_tokenize(m, text, strlen(text), 0, 1, &ids, &n_ids, err, errlen);
    free(text);
    if (st != ES_OK) return st;
    int32_t bos = es_model_bos(m);
    if (bos >= 0 && (n_ids == 0 || ids[0] != bos)) {
        int32_t *t = realloc(ids, (n_ids + 1) * sizeof *ids);
        if (!t) { free(ids); return ES_ERR_NOMEM; }
        ids = t;
        memmove(ids + 1, ids, n_ids * sizeof *ids);
        ids[0] = bos;
        n_ids++;
    }
    es_session_reset(s);
    st = es_session_eval(s, ids, (int)n_ids, logits, 0, err, errlen);
    free(ids);
    int n_vocab = es_model_n_vocab(m);
    while (st == ES_OK && *n_gen < max_new) {
        int32_t tok = ev_argmax(logits, n_vocab);
        ++*n_gen;
        if (es_model_is_eog(m, tok)) {
            *ended = 1;
            break;
        }
        char piece[64];
        int pl = es_token_piece(m, tok, piece, sizeof piece);
        if (pl > 0 && (size_t)pl < sizeof piece && len + (size_t)pl < cap) {
            memcpy(out + len, piece, (size_t)pl);
            len += (size_t)pl;
            out[len] = '\0';
        }
        if (es_session_pos(s) >= es_session_n_ctx(s)) break;
        st = es_session_eval(s, &tok, 1, logits, 0, err, errlen);
    }
    return st;
}

/* ---- the evaluation ---------------------------------------------------- */

typedef struct ev_result {
    int correct[EV_NKINDS], formed[EV_NKINDS], total[EV_NKINDS];
    long tokens;
    double seconds;
} ev_result;

static double ev_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* n problems of each kind in kind_mask, kind after kind, from one generator seeded with seed
 * (the order of train/evaluate.py's eval_problems).  verbose: 1 prints wrong answers, 2 every
 * answer.  Returns ES_OK or the first runtime error (message in err). */
static es_status ev_run(es_model *m, uint64_t seed, int n, unsigned kind_mask, int verbose,
                        ev_result *res, char *err, size_t errlen) {
    memset(res, 0, sizeof *res);
    es_session *s = NULL;
    int n_ctx = es_model_n_ctx_train(m);
    if (n_ctx <= 0 || n_ctx > 1024) n_ctx = 1024;
    es_status st = es_session_new(m, n_ctx, &s, err, errlen);
    if (st != ES_OK) return st;
    float *logits = malloc(sizeof(float) * (size_t)es_model_n_vocab(m));
    if (!logits) { es_session_free(s); return ES_ERR_NOMEM; }
    ev_rng r = {seed};
    double t0 = ev_now();
    char out[2048];
    for (int k = 0; k < EV_NKINDS && st == ES_OK; k++) {
        for (int i = 0; i < n && st == ES_OK; i++) {
            ev_problem p;
            ev_make_problem(&r, k, &p);  /* drawn even when the kind is skipped: same problems */
            if (!(kind_mask & (1u << k))) continue;
            int ended, n_gen, formed;
            st = ev_generate(m, s, logits, p.question, 160, out, sizeof out, &ended, &n_gen, err, errlen);
            if (st != ES_OK) break;
            int ok = ev_check(out, ended, p.answer, &formed);
            res->correct[k] += ok;
            res->formed[k] += formed;
            res->total[k]++;
            res->tokens += n_gen;
            if (verbose >= 2 || (verbose && !ok))
                printf("%s [%s] %s -> %s%s (expected %ld)\n", ok ? "ok   " : "WRONG", ev_kind_name[k],
                       p.question, out, ended ? "" : " [no end]", p.answer);
        }
    }
    res->seconds = ev_now() - t0;
    free(logits);
    es_session_free(s);
    return st;
}

static void ev_usage(FILE *f) {
    fprintf(f,
            "usage: edgeseek eval -m MODEL [--task arith|add|sub|mul|cmp|word] [--n N] [--seed S]\n"
            "                     [--list] [-v|-vv]\n"
            "  Held-out evaluation on generated arithmetic problems (train/tasks.py's tasks):\n"
            "  N problems in all (default 500), split evenly over the task types; 3-digit\n"
            "  operands, multiplier 2..9.  Greedy decoding in the chat format; an answer is\n"
            "  right when the integer after </think> equals the true result.  Prints the\n"
            "  accuracy per task type.  --seed (default 7777) is never used in training.\n"
            "  --list prints the problems and answers without a model; -v prints wrong\n"
            "  answers, -vv every answer.\n");
}

static int ev_parse_long(const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "edgeseek eval: %s expects an integer in [%ld, %ld]\n", opt, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int cmd_eval(int argc, char **argv) {
    const char *model_path = NULL, *task = "arith";
    long n = 500, seed = 7777;
    int list = 0, verbose = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { ev_usage(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { if (!v) goto missing; model_path = v; i++; }
        else if (!strcmp(a, "--task")) { if (!v) goto missing; task = v; i++; }
        else if (!strcmp(a, "--n") || !strcmp(a, "-n")) { if (ev_parse_long(a, v, 1, 1000000, &n)) return 2; i++; }
        else if (!strcmp(a, "--seed")) { if (ev_parse_long(a, v, 0, 0x7fffffffL, &seed)) return 2; i++; }
        else if (!strcmp(a, "--list")) list = 1;
        else if (!strcmp(a, "-v")) verbose = 1;
        else if (!strcmp(a, "-vv")) verbose = 2;
        else { fprintf(stderr, "edgeseek eval: unknown option '%s'\n", a); ev_usage(stderr); return 2; }
        continue;
    missing:
        fprintf(stderr, "edgeseek eval: %s needs a value\n", a);
        return 2;
    }
    unsigned mask = 0;
    if (!strcmp(task, "arith")) mask = (1u << EV_NKINDS) - 1;
    for (int k = 0; k < EV_NKINDS; k++)
        if (!strcmp(task, ev_kind_name[k])) mask = 1u << k;
    if (!mask) {
        fprintf(stderr, "edgeseek eval: unknown task '%s' (arith, add, sub, mul, cmp, word)\n", task);
        return 2;
    }
    int n_kinds = 0;
    for (int k = 0; k < EV_NKINDS; k++) n_kinds += (mask >> k) & 1;
    int per_kind = (int)((n + n_kinds - 1) / n_kinds);
    if (list) {
        ev_rng r = {(uint64_t)seed};
        for (int k = 0; k < EV_NKINDS; k++)
            for (int i = 0; i < per_kind; i++) {
                ev_problem p;
                ev_make_problem(&r, k, &p);
                if (mask & (1u << k)) printf("%s\t%s\t%ld\n", ev_kind_name[k], p.question, p.answer);
            }
        return 0;
    }
    if (!model_path) { fprintf(stderr, "edgeseek eval: -m MODEL is required\n"); ev_usage(stderr); return 2; }
    char err[512];
    es_load_params lp;
    memset(&lp, 0, sizeof lp);
    es_model *m = NULL;
    if (es_model_load(model_path, &lp, &m, err, sizeof err) != ES_OK) {
        fprintf(stderr, "edgeseek: %s\n", err);
        return 1;
    }
    printf("edgeseek eval: %s, task %s, %d problems per type, seed %ld\n", model_path, task, per_kind, seed);
    fflush(stdout);
    ev_result res;
    es_status st = ev_run(m, (uint64_t)seed, per_kind, mask, verbose, &res, err, sizeof err);
    es_model_free(m);
    if (st != ES_OK) {
        fprintf(stderr, "edgeseek eval: %s\n", err);
        return 1;
    }
    int c = 0, f = 0, t = 0;
    for (int k = 0; k < EV_NKINDS; k++) {
        if (!res.total[k]) continue;
        printf("  %-5s %4d/%-4d  %6.1f%%   (well-formed %.1f%%)\n", ev_kind_name[k], res.correct[k], res.total[k],
               100.0 * res.correct[k] / res.total[k], 100.0 * res.formed[k] / res.total[k]);
        c += res.correct[k];
        f += res.formed[k];
        t += res.total[k];
    }
    printf("  %-5s %4d/%-4d  %6.1f%%   (well-formed %.1f%%)\n", "all", c, t, 100.0 * c / t, 100.0 * f / t);
    printf("  %ld tokens generated in %.1f s (%.1f tokens/s)\n", res.tokens, res.seconds,
           res.seconds > 0 ? res.tokens / res.seconds : 0.0);
    return 0;
}
