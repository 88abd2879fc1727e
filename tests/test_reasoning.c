/* test_reasoning.c — the streaming reasoning split (es_reasoning_*): whole
 * texts and the same texts cut at every byte pair and fed byte by byte give
 * the same reasoning and content; tags split across pieces, a think block
 * the prompt opened, a tag that never completes, white space trimmed, a
 * long white-space run within the hold bound. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgeseek.h"
#include "testutil.h"

typedef struct acc {
    char r[4096], c[4096];
    size_t nr, nc;
} acc;

static void feed(es_reasoning *st, acc *a, const char *p, size_t n) {
    char rb[1024 + ES_REASONING_HOLD], cb[1024 + ES_REASONING_HOLD];
    size_t nr, nc;
    es_reasoning_feed(st, p, n, rb, &nr, cb, &nc);
    if (a->nr + nr < sizeof a->r) { memcpy(a->r + a->nr, rb, nr); a->nr += nr; }
    if (a->nc + nc < sizeof a->c) { memcpy(a->c + a->nc, cb, nc); a->nc += nc; }
    a->r[a->nr] = a->c[a->nc] = 0;
}

static void finish(es_reasoning *st, acc *a) {
    char rb[ES_REASONING_HOLD], cb[ES_REASONING_HOLD];
    size_t nr, nc;
    es_reasoning_flush(st, rb, &nr, cb, &nc);
    memcpy(a->r + a->nr, rb, nr);
    a->nr += nr;
    memcpy(a->c + a->nc, cb, nc);
    a->nc += nc;
    a->r[a->nr] = a->c[a->nc] = 0;
}

/* cuts: 0 whole; 1 every split in two and three; 2 byte by byte */
static void check_case(const char *text, int open, const char *want_r, const char *want_c) {
    size_t n = strlen(text);
    int bad = 0;
    es_reasoning st;
    acc a;
    /* whole */
    es_reasoning_init(&st, open);
    memset(&a, 0, sizeof a);
    feed(&st, &a, text, n);
    finish(&st, &a);
    bad |= strcmp(a.r, want_r) || strcmp(a.c, want_c);
    if (bad) printf("  whole: reasoning [%s] content [%s]\n", a.r, a.c);
    /* byte by byte, with empty pieces between */
    es_reasoning_init(&st, open);
    memset(&a, 0, sizeof a);
    for (size_t i = 0; i < n; i++) {
        feed(&st, &a, text + i, 1);
        feed(&st, &a, "", 0);
    }
    finish(&st, &a);
    if (strcmp(a.r, want_r) || strcmp(a.c, want_c)) { bad = 1; printf("  bytewise: [%s] [%s]\n", a.r, a.c); }
    /* every cut into three pieces */
    for (size_t i = 0; i <= n && !bad; i++)
        for (size_t j = i; j <= n && !bad; j++) {
            es_reasoning_init(&st, open);
            memset(&a, 0, sizeof a);
            feed(&st, &a, text, i);
            feed(&st, &a, text + i, j - i);
            feed(&st, &a, text + j, n - j);
            finish(&st, &a);
            if (strcmp(a.r, want_r) || strcmp(a.c, want_c)) {
                bad = 1;
                printf("  cut %zu,%zu: [%s] [%s]\n", i, j, a.r, a.c);
            }
        }
    CHECK(!bad, "split of [%s] (open %d): want reasoning [%s] content [%s]", text, open, want_r, want_c);
}

int main(void) {
    /* the default model's shape */
    check_case("<think>\n487 + 356: 7+6=13, carry 1\n</think>\n\n843", 0, "487 + 356: 7+6=13, carry 1", "843");
    /* no think block: all content, leading white space trimmed */
    check_case("  Hello <think> there", 0, "", "Hello <think> there");
    check_case("843", 0, "", "843");
    check_case("", 0, "", "");
    /* a text that only starts like the tag */
    check_case("<thin", 0, "", "<thin");
    check_case("<thinking>", 0, "", "<thinking>");
    /* the prompt opened the block */
    check_case("step one\n</think>\n\nanswer", 1, "step one", "answer");
    check_case("\nstep</think>x", 1, "step", "x");
    /* a think block that never closes: all reasoning, held tail included */
    check_case("<think>a b </thi", 0, "a b </thi", "");
    check_case("<think>  ", 0, "", "");
    /* a close tag inside content stays content */
    check_case("<think>r</think>c </think> d", 0, "r", "c </think> d");
    /* less-than signs inside the reasoning */
    check_case("<think>a < b, a </ b, </thinx </think>ok", 0, "a < b, a </ b, </thinx", "ok");
    /* a white-space run longer than the hold is partly emitted, yet trimmed
     * before the tag when the run fits the hold */
    char longws[300];
    snprintf(longws, sizeof longws, "<think>x%100s</think>y", "");
    es_reasoning st;
    acc a;
    es_reasoning_init(&st, 0);
    memset(&a, 0, sizeof a);
    for (size_t i = 0; longws[i]; i++) feed(&st, &a, longws + i, 1);
    finish(&st, &a);
    CHECK(a.nc == 1 && a.c[0] == 'y' && a.r[0] == 'x' && a.nr <= 101 && a.nr >= 1, "long white space: r %zu c %zu",
          a.nr, a.nc);
    es_reasoning_init(&st, 0);
    CHECK(!es_reasoning_thinking(&st), "not thinking at the start");
    memset(&a, 0, sizeof a);
    feed(&st, &a, "<think>", 7);
    CHECK(es_reasoning_thinking(&st), "thinking after <think>");
    feed(&st, &a, "</think>", 8);
    CHECK(!es_reasoning_thinking(&st), "not thinking after </think>");
    es_reasoning_init(&st, 1);
    CHECK(es_reasoning_thinking(&st), "thinking when the prompt opened the block");
    return test_summary();
}
