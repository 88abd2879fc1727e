/* common.c — what the subcommands of the edgeseek command share: numbers
 * from arguments, the generation and paging options of run and chat, the
 * messages of bad usage and failed calls, loading a model, reading a file. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

int cli_env_ms(const char *name, int *out) {
    const char *v = getenv(name);
    long ms;
    if (!v || !*v) return 0;
    if (cli_to_long(v, 0, 10000, &ms) != 0) {
        fprintf(stderr, "edgeseek: %s expects milliseconds from 0 to 10000, got '%s'\n", name, v);
        return -1;
    }
    *out = (int)ms;
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

/* ---- generation options ------------------------------------------------ */

void cli_gen_defaults(cli_gen_opts *o) {
    *o = (cli_gen_opts){.top_k = 40, .temp = 0.8, .top_p = 0.95, .min_p = 0.05};
}

int cli_gen_opt(const char *a, const char *v, cli_gen_opts *o, es_load_params *lp) {
    static const char *const names[] = {"-c", "-t", "--numa", "--top-k", "--temp", "--top-p", "--min-p", "--seed"};
    long l;
    int bad, known = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) known |= !strcmp(a, names[i]);
    if (!known) return 0;
    if (!v) {
        fprintf(stderr, "edgeseek: %s needs a value\n", a);
        return -1;
    }
    if (!strcmp(a, "-c")) bad = cli_parse_int(a, v, 1, 1L << 30, &o->n_ctx);
    else if (!strcmp(a, "-t")) bad = cli_parse_int(a, v, 1, ES_MAX_THREADS, &o->threads);
    else if (!strcmp(a, "--numa")) bad = cli_parse_numa(v, &lp->numa);
    else if (!strcmp(a, "--top-k")) bad = cli_parse_int(a, v, 0, 1L << 30, &o->top_k);
    else if (!strcmp(a, "--temp")) bad = cli_parse_float(a, v, 0, 100, &o->temp);
    else if (!strcmp(a, "--top-p")) bad = cli_parse_float(a, v, 0, 1, &o->top_p);
    else if (!strcmp(a, "--seed")) {
        bad = cli_parse_int(a, v, 0, 0x7fffffffffffffffL, &l);
        o->seed = (unsigned long long)l;
    } else {
        bad = cli_parse_float(a, v, 0, 1, &o->min_p);
    }
    return bad ? -1 : 1;
}

es_sampler_params cli_sampler_params(const cli_gen_opts *o) {
    return (es_sampler_params){.temperature = (float)o->temp, .top_k = (int)o->top_k, .top_p = (float)o->top_p,
                               .min_p = (float)o->min_p, .seed = o->seed};
}

long cli_ctx_size(const es_model *m, long n_ctx) {
    if (n_ctx > 0) return n_ctx;
    return es_model_n_ctx_train(m) < 4096 ? es_model_n_ctx_train(m) : 4096;
}

int cli_paging_opt(const char *cmd, int argc, char **argv, int *i, es_load_params *lp) {
    const char *a = argv[*i];
    if (!strcmp(a, "--no-prefetch")) { lp->no_prefetch = 1; return 1; }
    if (!strcmp(a, "--mlock")) { lp->mlock = 1; return 1; }
    if (!strcmp(a, "--no-direct")) { lp->no_direct = 1; return 1; }
    if (!strcmp(a, "--stats")) { lp->stats = 1; return 1; }
    if (strcmp(a, "--mem-budget") && strcmp(a, "--experts") && strcmp(a, "--policy") && strcmp(a, "--io-threads"))
        return 0;
    if (*i + 1 >= argc) { fprintf(stderr, "edgeseek %s: %s needs a value\n", cmd, a); return -1; }
    const char *v = argv[++*i];
    if (!strcmp(a, "--mem-budget")) {
        int64_t b;
        if (es_parse_size(v, &b) != ES_OK || b <= 0) {
            fprintf(stderr, "edgeseek: --mem-budget expects a positive size such as 3G, 512M or 1048576, got '%s'\n", v);
            return -1;
        }
        lp->mem_budget = b;
    } else if (!strcmp(a, "--experts")) {
        if (!strcmp(v, "mmap")) lp->experts = ES_EXPERTS_MMAP;
        else if (!strcmp(v, "pread")) lp->experts = ES_EXPERTS_PREAD;
        else if (!strcmp(v, "mmap-plain")) lp->experts = ES_EXPERTS_MMAP_PLAIN;
        else { fprintf(stderr, "edgeseek: --experts expects mmap, pread or mmap-plain, got '%s'\n", v); return -1; }
    } else if (!strcmp(a, "--policy")) {
        if (!strcmp(v, "lru")) lp->policy = ES_POLICY_LRU;
        else if (!strcmp(v, "lfu")) lp->policy = ES_POLICY_LFU;
        else { fprintf(stderr, "edgeseek: --policy expects lru or lfu, got '%s'\n", v); return -1; }
    } else {
        long n;
        if (cli_parse_int(a, v, 0, 64, &n) != 0) return -1;
        lp->io_threads = n ? (int)n : -1;
    }
    return 1;
}

/* ---- standard output ---------------------------------------------------------- */

static int stdout_failed;

/* Says once that writing standard output failed; e: errno then (0: unknown). */
static void stdout_error(int e) {
    if (!stdout_failed)
        fprintf(stderr, e ? "edgeseek: write error on standard output: %s\n" : "edgeseek: write error on standard output%s\n",
                e ? strerror(e) : "");
    stdout_failed = 1;
}

int cli_stdout_check(void) {
    errno = 0;
    if (fflush(stdout) != 0 || ferror(stdout)) stdout_error(errno);
    return stdout_failed ? -1 : 0;
}

int cli_close_stdout(int rc) {
    cli_stdout_check();
    errno = 0;
    if (fclose(stdout) != 0) stdout_error(errno);
    return stdout_failed && rc == 0 ? 1 : rc;
}

/* What a file that is not a regular one is, for messages. */
static const char *file_kind(mode_t m) {
    if (S_ISDIR(m)) return "a directory";
    if (S_ISFIFO(m)) return "a FIFO or pipe";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    return "not a regular file";
}

int cli_read_file(const char *path, char **out, size_t *len) {
    const size_t cap = CLI_MAX_PROMPT_BYTES;
    int from_stdin = !strcmp(path, "-");
    const char *name = from_stdin ? "standard input" : path;
    /* O_NONBLOCK: a FIFO is refused at once instead of waiting for a writer */
    int fd = from_stdin ? 0 : open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) { fprintf(stderr, "edgeseek: cannot open %s: %s\n", path, strerror(errno)); return -1; }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        fprintf(stderr, "edgeseek: cannot read %s: %s\n", name, strerror(errno));
        if (!from_stdin) close(fd);
        return -1;
    }
    if (!from_stdin && !S_ISREG(st.st_mode)) {
        fprintf(stderr, "edgeseek: %s is %s; a prompt file must be a regular file (-f - reads standard input)\n",
                path, file_kind(st.st_mode));
        close(fd);
        return -1;
    }
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > cap) {
        fprintf(stderr, "edgeseek: %s is %lld bytes; a prompt may have at most %zu (64 MiB)\n", name,
                (long long)st.st_size, cap);
        if (!from_stdin) close(fd);
        return -1;
    }
    /* read at most cap + 1 bytes, whatever the file claims: one more than
     * the cap means too long */
    size_t size = 4096, n = 0;
    char *buf = malloc(size + 1);
    int e = 0;
    while (buf && n <= cap) {
        if (n == size) {
            size_t want = size * 2 > cap + 1 ? cap + 1 : size * 2;
            char *t = realloc(buf, want + 1);
            if (!t) { free(buf); buf = NULL; break; }
            buf = t;
            size = want;
        }
        ssize_t r = read(fd, buf + n, size - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { e = errno; break; }
        if (r == 0) break;
        n += (size_t)r;
    }
    if (!from_stdin) close(fd);
    if (!buf) { fprintf(stderr, "edgeseek: out of memory reading %s\n", name); return -1; }
    if (e) {
        fprintf(stderr, "edgeseek: cannot read %s: %s\n", name, strerror(e));
        free(buf);
        return -1;
    }
    if (n > cap) {
        fprintf(stderr, "edgeseek: %s holds more than %zu bytes (64 MiB), the most a prompt may have\n", name, cap);
        free(buf);
        return -1;
    }
    const char *nul = memchr(buf, 0, n);
    if (nul) {
        fprintf(stderr, "edgeseek: %s contains a NUL byte (at byte %zu); a prompt must be text\n", name,
                (size_t)(nul - buf));
        free(buf);
        return -1;
    }
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

void cli_print_mtp_stats(const es_spec *g) {
    es_spec_stats st;
    es_spec_get_stats(g, &st);
    fprintf(stderr, "[edgeseek] MTP: %lld drafted, %lld accepted (%.1f%%), %lld passes without a draft (gate), "
                    "%.3f tokens per forward pass\n",
            (long long)st.drafted, (long long)st.accepted, st.drafted ? 100.0 * st.accepted / st.drafted : 0.0,
            (long long)st.gated, st.forwards ? (double)st.tokens / st.forwards : 0.0);
}
