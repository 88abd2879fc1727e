/* reasoning.c — the streaming split of generated text into DeepSeek-R1's
 * reasoning (inside "<think>" ... "</think>") and the content after it
 * (es_reasoning_*, declared in edgeseek.h).  No allocation: the held-back
 * bytes live in the caller's es_reasoning, and the caller's content buffer
 * is the workspace. */
#include <string.h>

#include "edgeseek.h"

enum { R_START, R_THINK_LEAD, R_THINK, R_CONTENT_LEAD, R_CONTENT };

static const char TAG_OPEN[] = "<think>", TAG_CLOSE[] = "</think>";
#define OPEN_LEN (sizeof TAG_OPEN - 1)
#define CLOSE_LEN (sizeof TAG_CLOSE - 1)

static int is_ws(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

void es_reasoning_init(es_reasoning *r, int think_open) {
    memset(r, 0, sizeof *r);
    r->state = think_open ? R_THINK_LEAD : R_START;
}

int es_reasoning_thinking(const es_reasoning *r) { return r->state == R_THINK_LEAD || r->state == R_THINK; }

static void keep(es_reasoning *r, const char *s, size_t n) {
    memmove(r->hold, s, n);
    r->n_hold = (int)n;
}

/* Splits s[0..n), which is the caller's content buffer: reasoning bytes are
 * appended to reas, content bytes moved to the front of s (never ahead of
 * where they are read: content comes last, after everything else). */
static void split(es_reasoning *r, char *s, size_t n, char *reas, size_t *nr, size_t *nc) {
    size_t i = 0;
    *nr = 0;
    *nc = 0;
    while (i < n) {
        switch (r->state) {
        case R_START: {
            while (i < n && is_ws(s[i])) i++;
            size_t rest = n - i;
            if (rest == 0) return;
            if (rest >= OPEN_LEN && !memcmp(s + i, TAG_OPEN, OPEN_LEN)) {
                i += OPEN_LEN;
                r->state = R_THINK_LEAD;
            } else if (rest < OPEN_LEN && !memcmp(s + i, TAG_OPEN, rest)) {
                keep(r, s + i, rest); /* may yet be "<think>" */
                return;
            } else {
                r->state = R_CONTENT;
            }
            break;
        }
        case R_THINK_LEAD:
        case R_CONTENT_LEAD:
            while (i < n && is_ws(s[i])) i++;
            if (i < n) r->state = r->state == R_THINK_LEAD ? R_THINK : R_CONTENT;
            break;
        case R_THINK: {
            const char *end = memmem(s + i, n - i, TAG_CLOSE, CLOSE_LEN);
            if (end) {
                size_t e = (size_t)(end - s), t = e;
                while (t > i && is_ws(s[t - 1])) t--;
                memcpy(reas + *nr, s + i, t - i);
                *nr += t - i;
                i = e + CLOSE_LEN;
                r->state = R_CONTENT_LEAD;
                break;
            }
            /* hold back the longest tail that is white space followed by
             * a proper prefix of "</think>", within ES_REASONING_HOLD */
            size_t h = n;
            for (size_t k = n - i < CLOSE_LEN - 1 ? n - i : CLOSE_LEN - 1; k > 0; k--)
                if (!memcmp(s + n - k, TAG_CLOSE, k)) { h = n - k; break; }
            while (h > i && is_ws(s[h - 1]) && n - (h - 1) <= ES_REASONING_HOLD) h--;
            memcpy(reas + *nr, s + i, h - i);
            *nr += h - i;
            keep(r, s + h, n - h);
            return;
        }
        default: /* R_CONTENT: the rest is content */
            memmove(s + *nc, s + i, n - i);
            *nc += n - i;
            i = n;
            break;
        }
    }
}

void es_reasoning_feed(es_reasoning *r, const char *text, size_t len, char *reasoning, size_t *n_reasoning,
                       char *content, size_t *n_content) {
    size_t n = (size_t)r->n_hold;
    memcpy(content, r->hold, n);
    if (len) memcpy(content + n, text, len);
    r->n_hold = 0;
    split(r, content, n + len, reasoning, n_reasoning, n_content);
}

void es_reasoning_flush(es_reasoning *r, char *reasoning, size_t *n_reasoning, char *content, size_t *n_content) {
    size_t n = (size_t)r->n_hold;
    *n_reasoning = *n_content = 0;
    r->n_hold = 0;
    if (r->state == R_START) { /* the start of "<think>" that never came: text */
        memcpy(content, r->hold, n);
        *n_content = n;
        if (n) r->state = R_CONTENT;
    } else if (r->state == R_THINK) { /* the start of "</think>" that never came */
        while (n > 0 && is_ws(r->hold[n - 1])) n--;
        memcpy(reasoning, r->hold, n);
        *n_reasoning = n;
    }
}
