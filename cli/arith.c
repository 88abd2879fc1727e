/* arith.c — the held-out arithmetic evaluation (arith.h).
 *
 * The generator and the checker mirror train/tasks.py (splitmix64, the same
 * draws in the same order, so a seed gives the same problems in both; keep
 * the two in step).  Only the public API (edgeseek.h) is used. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arith.h"
#include "edgeseek.h"

/* ---- the problem generator: mirrors train/tasks.py (hard=True) ---------- */

static uint64_t rng_next(arith_rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* rand(n) = next() % n, as tasks.Rng.rand (the modulo bias is part of the mirror) */
static long rng_rand(arith_rng *r, long n) { return (long)(rng_next(r) % (uint64_t)n); }
static long rng_range(arith_rng *r, long lo, long hi) { return lo + rng_rand(r, hi - lo + 1); }

const char *const arith_kind_name[ARITH_NKINDS] = {"add", "sub", "mul", "cmp", "word"};

static const char *const names[] = {"Tom", "Anna", "Ben", "Mia", "Sam", "Lily"};
static const char *const items[] = {"apples", "pens", "books", "coins", "cards", "stamps"};

void arith_make_problem(arith_rng *r, int kind, arith_problem *p) {
    p->kind = kind;
    long a, b;
    if (kind == ARITH_ADD || kind == ARITH_SUB || kind == ARITH_MUL) {
        a = rng_range(r, 100, 999);
        b = kind == ARITH_MUL ? rng_range(r, 2, 9) : rng_range(r, 100, 999);
        const char *sp = rng_rand(r, 2) ? " " : "";
        char op = kind == ARITH_ADD ? '+' : kind == ARITH_SUB ? '-' : '*';
        snprintf(p->question, sizeof p->question, "What is %ld%s%c%s%ld?", a, sp, op, sp, b);
        p->answer = kind == ARITH_ADD ? a + b : kind == ARITH_SUB ? a - b : a * b;
    } else if (kind == ARITH_CMP) {
        a = rng_range(r, 100, 999);
        b = rng_range(r, 100, 999);
        snprintf(p->question, sizeof p->question, "Which is larger, %ld or %ld?", a, b);
        p->answer = a > b ? a : b;
    } else {
        const char *name = names[rng_rand(r, 6)];
        const char *item = items[rng_rand(r, 6)];
        long op = rng_rand(r, 3);
        if (op == 0) {
            a = rng_range(r, 100, 999);
            b = rng_range(r, 100, 999);
            snprintf(p->question, sizeof p->question,
                     "%s has %ld %s and gets %ld more. How many %s does %s have now?",
                     name, a, item, b, item, name);
            p->answer = a + b;
        } else if (op == 1) {
            a = rng_range(r, 100, 999);
            b = rng_range(r, 100, 999);
            if (a < b) { long t = a; a = b; b = t; }
            snprintf(p->question, sizeof p->question,
                     "%s has %ld %s and gives away %ld. How many %s are left?", name, a, item, b, item);
            p->answer = a - b;
        } else {
            a = rng_range(r, 100, 999);
            b = rng_range(r, 2, 9);
            snprintf(p->question, sizeof p->question,
                     "There are %ld boxes with %ld %s in each box. How many %s are there?", b, a, item, item);
            p->answer = a * b;
        }
    }
}

/* ---- the checker: mirrors tasks.parse_answer / tasks.check ------------- */

int arith_check(const char *completion, int ended, long answer, int *well_formed) {
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

/* ---- the prompt and greedy generation ----------------------------------- */

es_status arith_prompt(es_model *m, const char *question, int32_t **ids, size_t *n_ids, char *err,
                       size_t errlen) {
    es_chat_msg msg = {"user", question};
    /* the chat format already starts with the BOS token */
    es_status st = es_chat_tokenize(m, &msg, 1, 1, ids, n_ids, err, errlen);
    if (st != ES_OK) return st;
    int32_t bos = es_model_bos(m);
    if (bos >= 0 && (*n_ids == 0 || (*ids)[0] != bos)) {
        int32_t *t = realloc(*ids, (*n_ids + 1) * sizeof *t);
        if (!t) {
            free(*ids);
            *ids = NULL;
            snprintf(err, errlen, "out of memory");
            return ES_ERR_NOMEM;
        }
        memmove(t + 1, t, *n_ids * sizeof *t);
        t[0] = bos;
        *ids = t;
        ++*n_ids;
    }
    return ES_OK;
}

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Asks one question; writes the completion text (without the end token) to out.  Returns
 * ES_OK and sets *ended (stopped at an end-of-generation token) and *n_gen. */
static es_status generate(es_model *m, es_session *s, float *logits, const char *question, int max_new,
                          char *out, size_t cap, int *ended, int *n_gen, char *err, size_t errlen) {
    int32_t *ids = NULL;
    size_t n_ids = 0, len = 0;
    *ended = 0;
    *n_gen = 0;
    out[0] = '\0';
    es_status st = arith_prompt(m, question, &ids, &n_ids, err, errlen);
    if (st != ES_OK) return st;
    es_session_reset(s);
    st = es_session_eval(s, ids, (int)n_ids, logits, 0, err, errlen);
    free(ids);
    int n_vocab = es_model_n_vocab(m);
    while (st == ES_OK && *n_gen < max_new) {
        int32_t tok = argmax(logits, n_vocab);
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

es_status arith_run(es_model *m, uint64_t seed, int n, unsigned kind_mask, int verbose, arith_result *res,
                    char *err, size_t errlen) {
    memset(res, 0, sizeof *res);
    es_session *s = NULL;
    int n_ctx = es_model_n_ctx_train(m);
    if (n_ctx <= 0 || n_ctx > 1024) n_ctx = 1024;
    es_status st = es_session_new(m, n_ctx, &s, err, errlen);
    if (st != ES_OK) return st;
    float *logits = malloc(sizeof(float) * (size_t)es_model_n_vocab(m));
    if (!logits) {
        es_session_free(s);
        snprintf(err, errlen, "out of memory");
        return ES_ERR_NOMEM;
    }
    arith_rng r = {seed};
    char out[2048];
    for (int k = 0; k < ARITH_NKINDS && st == ES_OK; k++) {
        for (int i = 0; i < n && st == ES_OK; i++) {
            arith_problem p;
            arith_make_problem(&r, k, &p); /* drawn even when the kind is skipped: same problems */
            if (!(kind_mask & (1u << k))) continue;
            int ended, n_gen, formed;
            st = generate(m, s, logits, p.question, 160, out, sizeof out, &ended, &n_gen, err, errlen);
            if (st != ES_OK) break;
            int ok = arith_check(out, ended, p.answer, &formed);
            res->correct[k] += ok;
            res->formed[k] += formed;
            res->total[k]++;
            res->tokens += n_gen;
            if (verbose >= 2 || (verbose && !ok))
                printf("%s [%s] %s -> %s%s (expected %ld)\n", ok ? "ok   " : "WRONG", arith_kind_name[k],
                       p.question, out, ended ? "" : " [no end]", p.answer);
        }
    }
    free(logits);
    es_session_free(s);
    return st;
}
