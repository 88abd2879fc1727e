/* common.c — what the subcommands of the edgeseek command share: numbers
 * from arguments, the messages of bad usage and failed calls, loading a
 * model, reading a file. */
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "edgeseek.h"

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int cli_to_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int cli_parse_int(const char *opt, const char *s, long lo, long hi, long *out) {
    if (cli_to_long(s, lo, hi, out) != 0) {
        fprintf(stderr, "edgeseek: %s expects an integer in [%ld, %ld], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    return 0;
}

int cli_parse_float(const char *opt, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "edgeseek: %s expects a number in [%g, %g], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_numa(const char *v, int *out) {
    if (!strcmp(v, "off")) *out = ES_NUMA_OFF;
    else if (!strcmp(v, "shard")) *out = ES_NUMA_SHARD;
    else if (!strcmp(v, "replicate")) *out = ES_NUMA_REPLICATE;
    else {
        fprintf(stderr, "edgeseek: --numa expects off, shard or replicate, got '%s'\n", v);
        return -1;
    }
    return 0;
}

long cli_cap_threads(long n) {
    /* more threads than CPUs only take turns on them: every parallel
     * region then waits on threads the OS is not running */
    cpu_set_t set;
    if (n <= 1 || sched_getaffinity(0, sizeof set, &set) != 0) return n;
    const long cpus = CPU_COUNT(&set);
    if (cpus < 1 || n <= cpus) return n;
    fprintf(stderr, "edgeseek: warning: -t %ld is more than the %ld CPUs this process may use; using %ld\n", n, cpus,
            cpus);
    return cpus;
}

int cli_usage_error(void (*usage)(FILE *), const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (usage) usage(stderr);
    return 2;
}

int cli_failed(es_status st, const char *err) {
    if (st == ES_OK) return 0;
    fprintf(stderr, "edgeseek: %s\n", err);
    return 1;
}

es_model *cli_load_model(const char *path, const es_load_params *lp) {
    char err[768];
    es_load_params defaults = {0};
    es_model *m = NULL;
    if (cli_failed(es_model_load(path, lp ? lp : &defaults, &m, err, sizeof err), err)) return NULL;
    return m;
}

int cli_read_file(const char *path, char **out, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "edgeseek: cannot open %s: %s\n", path, strerror(errno)); return -1; }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap) break;
        char *t = realloc(buf, (cap *= 2) + 1);
        if (!t) { free(buf); buf = NULL; break; }
        buf = t;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) { free(buf); fprintf(stderr, "edgeseek: cannot read %s\n", path); return -1; }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

int cli_text_arg(const char *text, const char *file, char **buf, const char **out, size_t *len) {
    *buf = NULL;
    if (file) {
        if (cli_read_file(file, buf, len) != 0) return -1;
        *out = *buf;
    } else {
        *out = text ? text : "";
        *len = strlen(*out);
    }
    return 0;
}
