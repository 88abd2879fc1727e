/* env.c — see env.h */
#include "env.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgeseek.h"
#include "numa_topo.h"

static void warn(es_env *e, const char *fmt, ...) {
    size_t used = strlen(e->warnings);
    if (used + 1 >= sizeof e->warnings) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->warnings + used, sizeof e->warnings - used, fmt, ap);
    va_end(ap);
}

/* The variable's value, NULL when unset or empty. */
static const char *value(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* A whole decimal integer in [lo, hi]: 0 and *out set, else -1. */
static int parse_int(const char *v, long lo, long hi, long *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (end == v || *end || x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

void es_env_read(es_env *e) {
    memset(e, 0, sizeof *e);
    const char *v;
    long x;
    if ((v = value("EDGESEEK_SIMD"))) snprintf(e->simd, sizeof e->simd, "%s", v);
    if ((v = value("EDGESEEK_MLA"))) {
        if (!strcmp(v, "auto")) e->mla = ES_MLA_AUTO;
        else if (!strcmp(v, "absorbed")) e->mla = ES_MLA_ABSORBED;
        else if (!strcmp(v, "expanded")) e->mla = ES_MLA_EXPANDED;
        else warn(e, "EDGESEEK_MLA=%s not understood (auto, absorbed, expanded): using auto\n", v);
    }
    if ((v = value("EDGESEEK_FAKE_NUMA"))) {
        if (parse_int(v, 1, ES_MAX_NODES, &x) == 0) e->fake_numa = (int)x;
        else warn(e, "EDGESEEK_FAKE_NUMA=%s ignored: not a node count 1..%d\n", v, ES_MAX_NODES);
    }
    if ((v = value("EDGESEEK_LFU_HALF_LIFE"))) {
        if (parse_int(v, 0, 1000000000L, &x) == 0) e->lfu_half_life = x ? (int)x : -1;
        else warn(e, "EDGESEEK_LFU_HALF_LIFE=%s ignored: not a count of accesses 0..1000000000 (0: no aging)\n", v);
    }
    if ((v = value("EDGESEEK_POOL_ADAPT"))) {
        if (!strcmp(v, "0")) e->pool_fixed = 1;
        else if (strcmp(v, "1")) warn(e, "EDGESEEK_POOL_ADAPT=%s ignored: 0 (off) or 1 (on, the default)\n", v);
    }
}
