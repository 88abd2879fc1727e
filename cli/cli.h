/* cli.h — helpers shared by the subcommand files of the edgeseek CLI. */
#ifndef ES_CLI_H
#define ES_CLI_H

#include <stddef.h>
#include "edgeseek.h"

double cli_now(void);
/* Parse a whole string as a number in [lo, hi]; print a message and return
 * -1 otherwise. */
int cli_parse_int(const char *opt, const char *s, long lo, long hi, long *out);
int cli_parse_float(const char *opt, const char *s, double lo, double hi, double *out);
/* Loads a model, printing the error; NULL on failure. */
es_model *cli_load_model(const char *path, int vocab_only);
/* Reads a whole file (NUL-terminated copy); prints the error. */
int cli_read_file(const char *path, char **out, size_t *len);
/* --numa off|shard|replicate → ES_NUMA_*; prints a message, -1 if bad. */
int cli_parse_numa(const char *v, int *out);

int cmd_run(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_quantize(int argc, char **argv);

#endif
