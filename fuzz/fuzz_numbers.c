/* fuzz_numbers.c — owns: the libFuzzer harness of the number and size
 * parsers: the CLI's cli_to_long, cli_parse_int and cli_parse_float
 * (cli/common.c) and the library's size strings, es_parse_bytes
 * (mmap/budget.c; es_parse_size is its public name).
 *
 * Input: the first byte picks the ranges from a table (bit 7: read lo and
 * hi from the next 16 bytes instead); the rest, up to a NUL, is the string.
 * Checked beyond not crashing, against references written here:
 *   - integers: accepted exactly when strtol's decimal grammar (space,
 *     sign, digits, nothing after) holds, the value does not overflow a
 *     long and lies in [lo, hi]; the value then is the exact one, and
 *     cli_parse_int agrees with cli_to_long; nothing is written on refusal;
 *   - floats: an accepted value is in [lo, hi] (never NaN), prints with %.17g
 *     and parses back to the same double; an integer the integer parser
 *     takes (|v| <= 2^53, in range) the float parser takes with that value;
 *   - sizes: accepted exactly when the size grammar holds (space, digits,
 *     a fraction only with a unit, K/M/G/T with an optional i, an optional B)
 *     and the value stays below 9e18 (or the number underflows); the value
 *     is the decimal times the unit, to double precision; printing it in
 *     bytes, and in its largest exact unit, parses back to the same value.
 * Built and run by fuzz/run.sh numbers; not part of `make test`.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget.h"
#include "cli.h"

/* cli/common.c's model calls are not reached from the parsers; these keep
 * the harness from linking the whole library. */
es_status es_model_load(const char *path, const es_load_params *params, es_model **out, char *err,
                        size_t errlen) {
    (void)path; (void)params; (void)err; (void)errlen;
    *out = NULL;
    return ES_ERR_ARG;
}
int es_model_n_ctx_train(const es_model *m) {
    (void)m;
    return 0;
}
/* the library's public name for es_parse_bytes, as runtime/api.c defines it */
es_status es_parse_size(const char *s, int64_t *bytes) { return es_parse_bytes(s, bytes) == 0 ? ES_OK : ES_ERR_ARG; }

static void fail(const char *what, const char *s) {
    fprintf(stderr, "fuzz: %s: '%s'\n", what, s);
    abort();
}

static const long long_ranges[][2] = {
    { LONG_MIN, LONG_MAX }, { 0, LONG_MAX }, { 1, ES_MAX_THREADS }, { -1, 1 << 20 }, { 1, 1 << 30 }, { 0, 0 },
    { LONG_MIN, -1 },
};
static const double float_ranges[][2] = {
    { 0, 2 }, { 0, 1 }, { 0, 1e9 }, { -1e300, 1e300 }, { -INFINITY, INFINITY }, { 1, 1 },
};

/* strtol(s, 10)'s grammar, whole string: 1 and *v if it holds without
 * overflowing a long. */
static int ref_long(const char *s, long *v) {
    while (isspace((unsigned char)*s)) s++;
    int neg = *s == '-';
    if (*s == '-' || *s == '+') s++;
    if (!isdigit((unsigned char)*s)) return 0;
    unsigned long long mag = 0, limit = neg ? (unsigned long long)LONG_MAX + 1 : (unsigned long long)LONG_MAX;
    int over = 0;
    for (; isdigit((unsigned char)*s); s++) {
        unsigned d = (unsigned)(*s - '0');
        if (mag > (limit - d) / 10) over = 1;
        else mag = mag * 10 + d;
    }
    if (*s || over) return 0;
    *v = neg ? (mag == (unsigned long long)LONG_MAX + 1 ? LONG_MIN : -(long)mag) : (long)mag;
    return 1;
}

static FILE *devnull;

/* cli_parse_* print their message on stderr; the runs would drown in it */
static int quiet_int(const char *s, long lo, long hi, long *out) {
    FILE *save = stderr;
    stderr = devnull;
    int r = cli_parse_int("-x", s, lo, hi, out);
    stderr = save;
    return r;
}

static int quiet_float(const char *s, double lo, double hi, double *out) {
    FILE *save = stderr;
    stderr = devnull;
    int r = cli_parse_float("-x", s, lo, hi, out);
    stderr = save;
    return r;
}

static void check_long(const char *s, long lo, long hi) {
    long a = 12345, b = 12345, ref;
    int ra = cli_to_long(s, lo, hi, &a), rb = quiet_int(s, lo, hi, &b);
    int want = ref_long(s, &ref) && ref >= lo && ref <= hi;
    if ((ra == 0) != want) fail(want ? "cli_to_long refused a valid integer" : "cli_to_long took a bad one", s);
    if (ra != rb || a != b) fail("cli_parse_int and cli_to_long disagree", s);
    if (ra == 0 && a != ref) fail("cli_to_long got the value wrong", s);
    if (ra != 0 && a != 12345) fail("cli_to_long wrote on refusal", s);
}

static void check_float(const char *s, double lo, double hi) {
    double v = 12345;
    if (quiet_float(s, lo, hi, &v) != 0) {
        if (v != 12345) fail("cli_parse_float wrote on refusal", s);
        long ref;
        if (ref_long(s, &ref) && labs(ref) <= (1L << 53) && (double)ref >= lo && (double)ref <= hi)
            fail("cli_parse_float refused an integer in range", s);
        return;
    }
    if (!(v >= lo && v <= hi)) fail("cli_parse_float out of range", s);
    long ref;
    if (ref_long(s, &ref) && labs(ref) <= (1L << 53) && v != (double)ref) fail("cli_parse_float: integer value", s);
    char p[64];
    double w = 0;
    snprintf(p, sizeof p, "%.17g", v);
    /* a subnormal does not come back: strtod calls its own result out of range */
    if (fpclassify(v) != FP_SUBNORMAL && (quiet_float(p, lo, hi, &w) != 0 || w != v))
        fail("cli_parse_float: printed value does not parse back", s);
}

/* The size grammar; *num_end: where the number ends, *mult: the unit. */
static int ref_size_grammar(const char *s, const char **num, const char **num_end, double *mult) {
    while (isspace((unsigned char)*s)) s++;
    *num = s;
    if (!isdigit((unsigned char)*s)) return 0;
    while (isdigit((unsigned char)*s)) s++;
    int frac = *s == '.';
    if (frac) {
        s++;
        while (isdigit((unsigned char)*s)) s++;
    }
    *num_end = s;
    const char *units = "KMGT", *u = *s ? strchr(units, toupper((unsigned char)*s)) : NULL;
    *mult = 1;
    if (u) {
        *mult = ldexp(1.0, 10 * (int)(u - units + 1));
        s++;
        if (*s == 'i' || *s == 'I') s++;
    }
    if (*s == 'B' || *s == 'b') s++;
    return !*s && (!frac || *mult > 1);
}

static void check_size(const char *s) {
    int64_t v = -7;
    int r = es_parse_bytes(s, &v);
    const char *num, *num_end;
    double mult;
    int grammar = ref_size_grammar(s, &num, &num_end, &mult);
    if (r == 0 && !grammar) fail("es_parse_bytes took a string outside the size grammar", s);
    if (r != 0 && v != -7) fail("es_parse_bytes wrote on refusal", s);
    if (!grammar) return;
    char numbuf[512];
    size_t nl = (size_t)(num_end - num);
    if (nl >= sizeof numbuf) return; /* the libFuzzer length limit keeps this rare */
    memcpy(numbuf, num, nl);
    numbuf[nl] = 0;
    errno = 0;
    double d = strtod(numbuf, NULL); /* what es_parse_bytes reads: its underflow is strtod's */
    int underflow = errno == ERANGE && d < 1;
    long double x = strtold(numbuf, NULL) * (long double)mult;
    if (r != 0) {
        if (!(x >= 8.99e18L) && !underflow) fail("es_parse_bytes refused a size in the grammar", s);
        return;
    }
    if (v < 0 || !((double)v < 9.0e18)) fail("es_parse_bytes out of range", s);
    long double diff = fabsl((long double)v - floorl(x));
    if (diff > 1 && diff > x * 1e-15L) fail("es_parse_bytes got the value wrong", s);
    char p[64];
    int64_t w = -1;
    snprintf(p, sizeof p, "%lld", (long long)v);
    if (es_parse_bytes(p, &w) != 0 || w != v) fail("es_parse_bytes: bytes printed do not parse back", s);
    static const char units[] = "KMGT";
    int k = 0;
    while (k < 4 && v && v % ((int64_t)1 << (10 * (k + 1))) == 0) k++;
    if (k) {
        snprintf(p, sizeof p, "%lld%ciB", (long long)(v >> (10 * k)), units[k - 1]);
        if (es_parse_bytes(p, &w) != 0 || w != v) fail("es_parse_bytes: the largest unit does not parse back", s);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!devnull && !(devnull = fopen("/dev/null", "w"))) abort();
    if (size < 1) return 0;
    unsigned sel = data[0];
    data++, size--;
    long lo, hi;
    if (sel & 0x80 && size >= 16) {
        memcpy(&lo, data, sizeof lo);
        memcpy(&hi, data + 8, sizeof hi);
        data += 16, size -= 16;
    } else {
        lo = long_ranges[sel % 7][0];
        hi = long_ranges[sel % 7][1];
    }
    const double *fr = float_ranges[sel % 6];
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = 0; /* a NUL inside ends the string, as in argv */
    check_long(s, lo, hi);
    check_float(s, fr[0], fr[1]);
    check_size(s);
    free(s);
    return 0;
}
