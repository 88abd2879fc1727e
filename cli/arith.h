/* arith.h — the held-out arithmetic evaluation of models trained on train/'s
 * tasks: the problem generator, the prompt, the answer checker and the
 * greedy evaluation loop.  `edgeseek eval` (cmd_eval.c) and
 * tests/test_default_model.c both link it.  It uses the public API
 * (edgeseek.h) alone. */
#ifndef ES_ARITH_H
#define ES_ARITH_H

#include <stddef.h>
#include <stdint.h>
#include "edgeseek.h"

enum { ARITH_ADD, ARITH_SUB, ARITH_MUL, ARITH_CMP, ARITH_WORD, ARITH_NKINDS };
#define ARITH_ALL_KINDS ((1u << ARITH_NKINDS) - 1)
/* "add", "sub", "mul", "cmp", "word": the names of the task types */
extern const char *const arith_kind_name[ARITH_NKINDS];

/* The generator: splitmix64, seeded with s, as train/tasks.py's Rng. */
typedef struct arith_rng {
    uint64_t s;
} arith_rng;

typedef struct arith_problem {
    int kind;
    char question[200];
    long answer;
} arith_problem;

/* Draws one problem of a kind at the evaluation size (3-digit operands,
 * multiplier 2..9), the same draws in the same order as train/tasks.py's
 * make_problem(hard=True). */
void arith_make_problem(arith_rng *r, int kind, arith_problem *p);

/* The prompt: question as one user turn of the model's chat format, with
 * the BOS token first; *ids is malloc'd. */
es_status arith_prompt(es_model *m, const char *question, int32_t **ids, size_t *n_ids, char *err,
                       size_t errlen);

/* The checker, as tasks.parse_answer / tasks.check.  completion: the
 * generated text without the end-of-sentence token; ended: whether
 * generation stopped at it.  Well-formed: "<think>\n" ... "</think>\n\n"
 * then an optionally negative integer of at most 12 digits, then the end.
 * Returns 1 if correct. */
int arith_check(const char *completion, int ended, long answer, int *well_formed);

typedef struct arith_result {
    int correct[ARITH_NKINDS], formed[ARITH_NKINDS], total[ARITH_NKINDS];
    long tokens; /* generated, end tokens included */
} arith_result;

/* n problems of each kind in kind_mask, kind after kind, from one generator
 * seeded with seed (the order of train/evaluate.py's eval_problems), each
 * answered with greedy decoding.  verbose: 1 prints wrong answers to stdout,
 * 2 every answer.  Returns ES_OK or the first runtime error (message in
 * err). */
es_status arith_run(es_model *m, uint64_t seed, int n, unsigned kind_mask, int verbose, arith_result *res,
                    char *err, size_t errlen);

#endif
