/* cmd_eval.c — `edgeseek eval -m MODEL --task arith [--n 500] [--seed S]`: held-out
 * evaluation of a model trained on train/'s arithmetic tasks.
 *
 * The problems come from arith.c's generator, the same as train/tasks.py's (the default seed
 * 7777 is one the training never uses); each question is asked in the DeepSeek chat format,
 * decoded greedily, and the final answer after </think> verified; this prints the accuracy
 * per task type. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "arith.h"
#include "cli.h"
#include "edgeseek.h"

static void usage_eval(FILE *f) {
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

/* The option's value (s, NULL when missing) as an integer in [lo, hi]; a message and -1
 * otherwise. */
static int parse_long(const char *opt, const char *s, long lo, long hi, long *out) {
    if (!s || cli_to_long(s, lo, hi, out) != 0) {
        fprintf(stderr, "edgeseek eval: %s expects an integer in [%ld, %ld]\n", opt, lo, hi);
        return -1;
    }
    return 0;
}

static void print_row(const char *name, int correct, int formed, int total) {
    printf("  %-5s %4d/%-4d  %6.1f%%   (well-formed %.1f%%)\n", name, correct, total, 100.0 * correct / total,
           100.0 * formed / total);
}

int cmd_eval(int argc, char **argv) {
    const char *model_path = NULL, *task = "arith";
    long n = 500, seed = 7777;
    int list = 0, verbose = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage_eval(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { if (!v) goto missing; model_path = v; i++; }
        else if (!strcmp(a, "--task")) { if (!v) goto missing; task = v; i++; }
        else if (!strcmp(a, "--n") || !strcmp(a, "-n")) { if (parse_long(a, v, 1, 1000000, &n)) return 2; i++; }
        else if (!strcmp(a, "--seed")) { if (parse_long(a, v, 0, 0x7fffffffL, &seed)) return 2; i++; }
        else if (!strcmp(a, "--list")) list = 1;
        else if (!strcmp(a, "-v")) verbose = 1;
        else if (!strcmp(a, "-vv")) verbose = 2;
        else return cli_usage_error(usage_eval, "edgeseek eval: unknown option '%s'\n", a);
        continue;
    missing:
        return cli_usage_error(NULL, "edgeseek eval: %s needs a value\n", a);
    }
    unsigned mask = 0;
    if (!strcmp(task, "arith")) mask = ARITH_ALL_KINDS;
    for (int k = 0; k < ARITH_NKINDS; k++)
        if (!strcmp(task, arith_kind_name[k])) mask = 1u << k;
    if (!mask)
        return cli_usage_error(NULL, "edgeseek eval: unknown task '%s' (arith, add, sub, mul, cmp, word)\n", task);
    int n_kinds = 0;
    for (int k = 0; k < ARITH_NKINDS; k++) n_kinds += (mask >> k) & 1;
    int per_kind = (int)((n + n_kinds - 1) / n_kinds);
    if (list) {
        arith_rng r = {(uint64_t)seed};
        for (int k = 0; k < ARITH_NKINDS; k++)
            for (int i = 0; i < per_kind; i++) {
                arith_problem p;
                arith_make_problem(&r, k, &p);
                if (mask & (1u << k)) printf("%s\t%s\t%ld\n", arith_kind_name[k], p.question, p.answer);
            }
        return 0;
    }
    if (!model_path) return cli_usage_error(usage_eval, "edgeseek eval: -m MODEL is required\n");
    es_model *m = cli_load_model(model_path, NULL);
    if (!m) return 1;
    printf("edgeseek eval: %s, task %s, %d problems per type, seed %ld\n", model_path, task, per_kind, seed);
    if (cli_stdout_check() != 0) {
        es_model_free(m);
        return 1;
    }
    char err[512];
    arith_result res;
    double t0 = cli_now();
    es_status st = arith_run(m, (uint64_t)seed, per_kind, mask, verbose, &res, err, sizeof err);
    double seconds = cli_now() - t0;
    es_model_free(m);
    if (st != ES_OK) {
        fprintf(stderr, "edgeseek eval: %s\n", err);
        return 1;
    }
    int c = 0, f = 0, t = 0;
    for (int k = 0; k < ARITH_NKINDS; k++) {
        if (!res.total[k]) continue;
        print_row(arith_kind_name[k], res.correct[k], res.formed[k], res.total[k]);
        c += res.correct[k];
        f += res.formed[k];
        t += res.total[k];
    }
    print_row("all", c, f, t);
    printf("  %ld tokens generated in %.1f s (%.1f tokens/s)\n", res.tokens, seconds,
           seconds > 0 ? res.tokens / seconds : 0.0);
    return 0;
}
