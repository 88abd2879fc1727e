/* env.h — the library's one reader of its EDGESEEK_* environment variables.
 *
 * es_model_load (api.c) calls es_env_read once per load and hands the values
 * on as parameters (the kernel table, the MLA form, the fake NUMA node count,
 * the LFU half-life, whether thread pools adapt); an explicit es_load_params field wins over its
 * variable.  Nothing else in the library calls getenv, so no constructor
 * deep inside a load depends on the environment.  The variables and their
 * values are listed in README.md ("Environment variables").
 */
#ifndef ES_ENV_H
#define ES_ENV_H

#include <stddef.h>

typedef struct es_env {
    char simd[32];     /* EDGESEEK_SIMD: a SIMD path name, "" when unset (the load checks that the CPU runs it) */
    int mla;           /* EDGESEEK_MLA: an ES_MLA_* value; ES_MLA_DEFAULT when unset or invalid */
    int fake_numa;     /* EDGESEEK_FAKE_NUMA: nodes to pretend (1..ES_MAX_NODES); 0 when unset or invalid */
    int lfu_half_life; /* EDGESEEK_LFU_HALF_LIFE: as es_load_params.lfu_half_life (-1: no aging); 0 when
                          unset or invalid */
    int pool_fixed;    /* EDGESEEK_POOL_ADAPT: 1 when "0" (pools keep every worker), 0 otherwise */
    char warnings[512]; /* one line per variable whose value was not understood (and is ignored), each
                           naming the variable, the value and the accepted values; "" when none */
} es_env;

/* Reads every EDGESEEK_* variable now.  An empty variable counts as unset. */
void es_env_read(es_env *e);

#endif
