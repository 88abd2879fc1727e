/* test_faults.c — what goes wrong under a running model, and what the
 * library does about it:
 *   - the SIGBUS handler alone (platform/fault.h) on a mapping whose file
 *     is cut short: zeros, and the offset reported;
 *   - the model file truncated in the middle of an evaluation (prefill and
 *     decode, every expert mode), and before one: ES_ERR_IO with "model
 *     file changed or truncated while in use", every later evaluation too,
 *     the session's position kept; the same for quantize's input;
 *   - NaN weights: the evaluation fails naming the layer and block where
 *     values stopped being finite, and `edgeseek run` exits 1 with that
 *     line and writes no NUL bytes;
 *   - the pager's reads failing (EIO, an early end of file), short and
 *     slow (es_res_pread_hook): an error naming the file and the bytes, or
 *     logits bit-identical to an undisturbed run;
 *   - budgets the pager cannot honour, and an EDGESEEK_ variable it cannot
 *     read: refused or warned about, with the numbers.
 * Models come from build/gen_model in a temporary directory. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgeseek.h"
#include "fault.h"
#include "gguf.h"
#include "quant.h"
#include "residency.h"
#include "testutil.h"

static const char *const mode_names[] = {"default", "mmap", "mmap-plain", "pread"};
static const int modes[] = {ES_EXPERTS_DEFAULT, ES_EXPERTS_MMAP, ES_EXPERTS_MMAP_PLAIN, ES_EXPERTS_PREAD};
#define N_MODES 4

static int copy_file(const char *from, const char *to) {
    size_t n;
    void *buf = test_read_file(from, &n);
    if (!buf) return -1;
    FILE *f = fopen(to, "wb");
    int ok = f && fwrite(buf, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = 0;
    free(buf);
    return ok ? 0 : -1;
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* The prompt: n token ids of the generated models' vocabulary. */
static void prompt(int32_t *ids, int n) {
    for (int i = 0; i < n; i++) ids[i] = (int32_t)(1 + (i * 37) % 500);
}

/* ---- truncation under a running evaluation ------------------------------------ */

/* The handler alone: a watched mapping of three pages, the file cut to one,
 * a read of the third page gives zeros and the watch reports its offset. */
static void watch_alone(void) {
    char path[] = "/tmp/es_fault_XXXXXX";
    int fd = mkstemp(path);
    long pg = sysconf(_SC_PAGESIZE);
    CHECK(fd >= 0 && ftruncate(fd, 3 * pg) == 0, "temporary file");
    if (fd < 0) return;
    unsigned char *map = mmap(NULL, (size_t)(3 * pg), PROT_READ, MAP_SHARED, fd, 0);
    CHECK(map != MAP_FAILED, "mmap");
    if (map == MAP_FAILED) goto out;
    es_fault_watch *w = es_fault_watch_new(map, (size_t)(3 * pg));
    CHECK(w != NULL, "watch");
    uint64_t off = 0;
    CHECK(!es_fault_hit(w, &off), "no fault before the truncation");
    CHECK(ftruncate(fd, pg) == 0, "truncate");
    volatile unsigned char v = map[2 * pg + 5];
    CHECK(v == 0, "a faulting read gives zero");
    CHECK(es_fault_hit(w, &off) && off == (uint64_t)(2 * pg + 5), "the fault is reported at byte %llu",
          (unsigned long long)off);
    es_fault_unwatch(w);
    munmap(map, (size_t)(3 * pg));
out:
    close(fd);
    unlink(path);
}


/* The route hook truncates the file to half when it first sees layer
 * `at`: the layers after it read pages past the new end. */
typedef struct trunc_hook {
    const char *path;
    int at, armed, fired;
} trunc_hook;

static void truncate_on_route(void *user, int layer, int pos, const int32_t *experts, int k) {
    (void)pos, (void)experts, (void)k;
    trunc_hook *h = user;
    if (!h->armed || h->fired || layer != h->at) return;
    h->fired = 1;
    if (truncate(h->path, file_size(h->path) / 2) != 0) printf("truncate failed: %s\n", strerror(errno));
}

static es_model *load(const char *path, int mode, int64_t budget, char *err, size_t errlen) {
    es_load_params lp = {0};
    lp.experts = mode;
    lp.mem_budget = budget;
    es_model *m = NULL;
    es_status st = es_model_load(path, &lp, &m, err, errlen);
    CHECK(st == ES_OK, "load %s: %s", path, err);
    return st == ES_OK ? m : NULL;
}

/* decode: the truncation comes in a one-token evaluation after a prefill
 * that went well; else in the prefill itself.  before: truncated between
 * two evaluations rather than during one. */
static void truncated_run(const char *model, const char *live, int mode_i, int decode, int before) {
    const char *what = before ? "before" : decode ? "decode" : "prefill";
    if (copy_file(model, live) != 0) { CHECK(0, "copy %s", model); return; }
    char err[512] = "";
    es_model *m = load(live, modes[mode_i], 0, err, sizeof err);
    es_session *s = NULL;
    if (!m || es_session_new(m, 128, &s, err, sizeof err) != ES_OK) {
        CHECK(0, "session: %s", err);
        es_model_free(m);
        return;
    }
    es_session_set_threads(s, 2, err, sizeof err);
    trunc_hook h = {live, 2, 0, 0};
    es_session_set_route_hook(s, truncate_on_route, &h);
    static float logits[512];
    int32_t ids[40];
    prompt(ids, 40);
    int n_first = decode || before ? 39 : 40;
    if (decode || before) {
        es_status st = es_session_eval(s, ids, n_first, logits, 0, err, sizeof err);
        CHECK(st == ES_OK, "%s %s: the prefill before the truncation: %s", mode_names[mode_i], what, err);
    }
    int pos = es_session_pos(s);
    if (before) {
        if (truncate(live, file_size(live) / 2) != 0) CHECK(0, "truncate %s", live);
    } else {
        h.armed = 1;
    }
    const int32_t *rest = decode || before ? ids + 39 : ids;
    int n_rest = decode || before ? 1 : 40;
    err[0] = 0;
    es_status st = es_session_eval(s, rest, n_rest, logits, 0, err, sizeof err);
    CHECK(before || h.fired, "%s %s: the hook truncated the file", mode_names[mode_i], what);
    CHECK(st == ES_ERR_IO, "%s %s: ES_ERR_IO after the truncation (got %d: %s)", mode_names[mode_i], what, st, err);
    if (getenv("ES_TEST_VERBOSE")) printf("%s %s: %s\n", mode_names[mode_i], what, err);
    CHECK(strstr(err, "model file changed or truncated while in use") && strstr(err, live),
          "%s %s: the message names the file and the change: '%s'", mode_names[mode_i], what, err);
    CHECK(!strchr(err, '\n'), "%s %s: one line", mode_names[mode_i], what);
    /* during an evaluation the read itself failed (SIGBUS or the pager), not only the size check */
    CHECK(before || strstr(err, "could not be read"), "%s %s: a read failed: '%s'", mode_names[mode_i], what, err);
    CHECK(es_session_pos(s) == pos, "%s %s: the position stays %d (got %d)", mode_names[mode_i], what, pos,
          es_session_pos(s));
    /* and it stays refused, even once the file is whole again */
    copy_file(model, live);
    err[0] = 0;
    st = es_session_eval(s, ids, 1, logits, 0, err, sizeof err);
    CHECK(st == ES_ERR_IO && strstr(err, "changed or truncated"), "%s %s: a later evaluation is refused too (%d: %s)",
          mode_names[mode_i], what, st, err);
    es_session_free(s);
    es_model_free(m);
    remove(live);
}

/* ---- quantize's input truncated half-way ---------------------------------------------- */

typedef struct log_trunc {
    const char *path;
    int lines, at;
} log_trunc;

/* The quantize log's writes: truncate the input when the at-th tensor starts. */
static ssize_t log_write(void *cookie, const char *buf, size_t n) {
    log_trunc *t = cookie;
    for (size_t i = 0; i < n; i++)
        if (buf[i] == '\n' && ++t->lines == t->at && truncate(t->path, file_size(t->path) / 3) != 0)
            printf("truncate failed: %s\n", strerror(errno));
    return (ssize_t)n;
}

static void truncated_quantize(const char *model, const char *live, const char *target) {
    if (copy_file(model, live) != 0) { CHECK(0, "copy %s", model); return; }
    char out[600];
    snprintf(out, sizeof out, "%s.%s", live, target);
    es_gguf_ctx *g = NULL;
    char err[512] = "";
    int n_tensors = 0;
    if (es_gguf_open_file(model, &g, err, sizeof err) == 0) n_tensors = (int)g->n_tensors, es_gguf_close(g);
    log_trunc t = {live, 0, n_tensors / 2};
    cookie_io_functions_t io = {NULL, log_write, NULL, NULL};
    FILE *log = fopencookie(&t, "w", io);
    if (!log) { CHECK(0, "fopencookie"); return; }
    setvbuf(log, NULL, _IOLBF, 0);
    es_quantize_params qp = {2, log, 4096};
    es_status st = es_quantize_file(live, out, target, &qp, err, sizeof err);
    fclose(log);
    CHECK(t.lines >= t.at, "quantize %s: the input was truncated half-way", target);
    CHECK(st == ES_ERR_IO, "quantize %s: ES_ERR_IO (got %d: %s)", target, st, err);
    CHECK(strstr(err, "changed or truncated while in use") != NULL, "quantize %s: the message says so: '%s'", target, err);
    CHECK(access(out, F_OK) != 0, "quantize %s: no output left behind", target);
    remove(out);
    remove(live);
}

/* The file shrinks between its mapping and the reading of its header (the
 * hook runs there): the load and quantize fail with a message, no crash. */
static off_t shrink_to;
static void shrink_in_hook(const char *path) {
    if (truncate(path, shrink_to) != 0) CHECK(0, "truncate %s in the hook", path);
}

/* to: 0 (the header's page faults) or 64 (its page reads as zeros past the end) */
static void truncated_header(const char *model, const char *live, off_t to) {
    if (copy_file(model, live) != 0) { CHECK(0, "copy %s", model); return; }
    shrink_to = to;
    es_gguf_after_map_hook = shrink_in_hook;
    es_model *m = NULL;
    char err[512] = "";
    es_status st = es_model_load(live, NULL, &m, err, sizeof err);
    CHECK(st != ES_OK && m == NULL, "header read from a shrinking file: the load fails (got %d)", st);
    CHECK(strstr(err, "changed or truncated while its header was read") && strstr(err, live),
          "header read from a shrinking file: the message says so: '%s'", err);
    if (m) es_model_free(m);
    if (copy_file(model, live) != 0) { CHECK(0, "copy %s", model); es_gguf_after_map_hook = NULL; return; }
    char out[320];
    snprintf(out, sizeof out, "%s.q8", live);
    err[0] = 0;
    st = es_quantize_file(live, out, "q8_0", NULL, err, sizeof err);
    CHECK(st != ES_OK && strstr(err, "while its header was read"), "quantize of a shrinking file: refused (%d: %s)", st, err);
    CHECK(access(out, F_OK) != 0, "quantize of a shrinking file: no output");
    es_gguf_after_map_hook = NULL;
    remove(live);
}

static void test_truncation(int i, const char *path) {
    (void)i;
    char live[300];
    snprintf(live, sizeof live, "%s.live", path);
    for (int mi = 0; mi < N_MODES; mi++) {
        truncated_run(path, live, mi, 0, 0);
        truncated_run(path, live, mi, 1, 0);
        truncated_run(path, live, mi, 1, 1);
    }
    truncated_quantize(path, live, "q8_0");
    truncated_quantize(path, live, "f32");
    truncated_header(path, live, 0);
    truncated_header(path, live, 64);
}

/* ---- NaN weights ------------------------------------------------------------------- */

/* Writes NaN over the first `count` floats (all of it: 0) of f32 tensor `name`. */
static int poison(const char *path, const char *name, size_t count) {
    es_gguf_ctx *g = NULL;
    char err[256];
    if (es_gguf_open_file(path, &g, err, sizeof err) != 0) return -1;
    long off = -1;
    size_t n = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i].name, name) && g->tensors[i].type == ES_TYPE_F32) {
            off = (long)(g->tensors[i].data - g->base);
            n = (size_t)g->tensors[i].nbytes / sizeof(float);
        }
    es_gguf_close(g);
    if (off < 0) return -1;
    if (count && count < n) n = count;
    FILE *f = fopen(path, "r+b");
    if (!f || fseek(f, off, SEEK_SET) != 0) { if (f) fclose(f); return -1; }
    const uint32_t nan_bits = 0x7fc00000u;
    for (size_t k = 0; k < n; k++) fwrite(&nan_bits, sizeof nan_bits, 1, f);
    return fclose(f) == 0 ? 0 : -1;
}

static void nan_case(const char *model, const char *bad, const char *tensor, size_t count, const char *want) {
    if (copy_file(model, bad) != 0 || poison(bad, tensor, count) != 0) {
        CHECK(0, "NaN into %s of a copy of %s", tensor, model);
        return;
    }
    char err[512] = "";
    es_model *m = load(bad, ES_EXPERTS_DEFAULT, 0, err, sizeof err);
    es_session *s = NULL;
    if (m && es_session_new(m, 128, &s, err, sizeof err) == ES_OK) {
        static float logits[512];
        int32_t ids[8];
        prompt(ids, 8);
        es_status st = es_session_eval(s, ids, 8, logits, 0, err, sizeof err);
        CHECK(st == ES_ERR_FORMAT, "NaN in %s: the evaluation fails (got %d: %s)", tensor, st, err);
        CHECK(strstr(err, want) && strstr(err, "NaN"), "NaN in %s: the message names %s: '%s'", tensor, want, err);
        CHECK(es_session_pos(s) == 0, "NaN in %s: nothing kept", tensor);
        /* a batch without logits is checked too (the output head then does not run) */
        err[0] = 0;
        st = es_session_eval(s, ids, 8, NULL, 0, err, sizeof err);
        if (strncmp(tensor, "output", 6) != 0)
            CHECK(st == ES_ERR_FORMAT && strstr(err, want), "NaN in %s, no logits asked: fails naming %s (%d: %s)",
                  tensor, want, st, err);
        else
            CHECK(st == ES_OK, "NaN in %s, no logits asked: the layers are sound (%d: %s)", tensor, st, err);
    }
    es_session_free(s);
    es_model_free(m);
}

static void test_nan(int i, const char *path) {
    (void)i;
    char bad[300];
    snprintf(bad, sizeof bad, "%s.nan", path);
    nan_case(path, bad, "blk.1.attn_output.weight", 1, "layer 1's attention");
    nan_case(path, bad, "blk.0.ffn_down.weight", 1, "layer 0's FFN");
    nan_case(path, bad, "blk.2.ffn_gate_exps.weight", 0, "layer 2's FFN");
    nan_case(path, bad, "output.weight", 1, "the output head");

    /* the CLI: exit 1, the line on stderr, no NUL bytes on stdout */
    char outp[320], cmd[2048], res[1024];
    snprintf(outp, sizeof outp, "%s.out", path);
    snprintf(cmd, sizeof cmd, "timeout 60 '%s' run -m '%s' -p 'hello there' -n 8 --temp 0 2>&1 >'%s'; echo rc=$?",
             test_build_path("edgeseek"), bad, outp);
    test_run_cmd(cmd, res, sizeof res);
    CHECK(strstr(res, "rc=1") && strstr(res, "the output head"), "edgeseek run on NaN weights: exit 1 naming the place: %s",
          res);
    size_t n = 0;
    char *o = test_read_file(outp, &n);
    CHECK(o && !memchr(o, 0, n), "edgeseek run on NaN weights: no NUL byte on stdout (%zu bytes)", n);
    free(o);
    remove(outp);
    remove(bad);
}

/* ---- the pager's reads disturbed ------------------------------------------------------ */

enum { INJECT_NONE, INJECT_EIO, INJECT_EOF, INJECT_SHORT, INJECT_SLOW };
static atomic_int inject_kind, inject_calls;
static const int inject_after = 3; /* the first reads go through */

static ssize_t hooked_pread(int fd, void *buf, size_t count, off_t offset) {
    int call = atomic_fetch_add(&inject_calls, 1);
    int kind = atomic_load(&inject_kind);
    if (kind == INJECT_SHORT && count > 1) return pread(fd, buf, count / 2 + 1, offset);
    if (kind == INJECT_SLOW) usleep(300);
    if (call < inject_after) return pread(fd, buf, count, offset);
    if (kind == INJECT_EIO) { errno = EIO; return -1; }
    if (kind == INJECT_EOF) return 0;
    return pread(fd, buf, count, offset);
}

/* 24 tokens' last logits from a fresh model in pread mode (budget: a
 * quarter of the experts, so loads go on throughout) with reads disturbed
 * as kind says; the status, its message in err. */
static es_status pread_run(const char *path, int kind, float *logits, char *err, size_t errlen) {
    atomic_store(&inject_kind, kind);
    atomic_store(&inject_calls, 0);
    es_res_pread_hook = kind == INJECT_NONE ? NULL : hooked_pread;
    es_model *m = load(path, ES_EXPERTS_PREAD, 6 << 20, err, errlen);
    es_session *s = NULL;
    es_status st = ES_ERR_ARG;
    if (m && es_session_new(m, 128, &s, err, errlen) == ES_OK) {
        int32_t ids[24];
        prompt(ids, 24);
        st = es_session_eval(s, ids, 16, logits, 0, err, errlen);
        for (int t = 16; st == ES_OK && t < 24; t++) st = es_session_eval(s, ids + t, 1, logits, 0, err, errlen);
        if (st != ES_OK) { /* stays refused */
            char again[512];
            CHECK(es_session_eval(s, ids, 1, logits, 0, again, sizeof again) == st && !strcmp(again, err),
                  "a failed pager refuses the next evaluation the same way: '%s'", again);
        }
    }
    es_session_free(s);
    es_model_free(m); /* joins the I/O threads: must not hang */
    es_res_pread_hook = NULL;
    return st;
}

static void test_pager_io(int i, const char *path) {
    (void)i;
    static float want[512], got[512];
    char err[512] = "";
    es_status st = pread_run(path, INJECT_NONE, want, err, sizeof err);
    CHECK(st == ES_OK, "pread, undisturbed: %s", err);
    const char *names[] = {"", "EIO", "early EOF", "short reads", "slow reads"};
    for (int kind = INJECT_EIO; kind <= INJECT_SLOW; kind++) {
        err[0] = 0;
        memset(got, 0, sizeof got);
        st = pread_run(path, kind, got, err, sizeof err);
        if (kind == INJECT_SHORT || kind == INJECT_SLOW) {
            CHECK(st == ES_OK && !memcmp(want, got, sizeof want), "pread, %s: the same logits (%d: %s)", names[kind], st,
                  err);
            continue;
        }
        CHECK(st == ES_ERR_IO, "pread, %s: ES_ERR_IO (got %d: %s)", names[kind], st, err);
        CHECK(strstr(err, path) && strstr(err, "bytes "), "pread, %s: the message names the file and bytes: '%s'",
              names[kind], err);
        CHECK(kind != INJECT_EIO || strstr(err, strerror(EIO)), "pread, EIO: the message says why: '%s'", err);
        CHECK(kind != INJECT_EOF || strstr(err, "changed or truncated"), "pread, early EOF: said so: '%s'", err);
    }
}

/* ---- budgets and variables --------------------------------------------------------------- */

static void test_budgets(int i, const char *path) {
    (void)i;
    es_load_params lp = {0};
    es_model *m = NULL;
    char err[512] = "";
    lp.experts = ES_EXPERTS_MMAP_PLAIN;
    lp.mem_budget = 1 << 20;
    CHECK(es_model_load(path, &lp, &m, err, sizeof err) == ES_ERR_ARG && strstr(err, "mmap-plain"),
          "a budget with mmap-plain is refused: '%s'", err);
    es_model_free(m);
    m = NULL;
    lp.experts = ES_EXPERTS_PREAD;
    lp.mem_budget = 1024;
    CHECK(es_model_load(path, &lp, &m, err, sizeof err) == ES_ERR_ARG && strstr(err, "1024 bytes") &&
              strstr(err, "cache slot"),
          "a budget below one pread slot is refused with the numbers: '%s'", err);
    es_model_free(m);

    char cmd[1024], res[2048];
    snprintf(cmd, sizeof cmd, "EDGESEEK_FAKE_NUMA=lots timeout 60 '%s' run -m '%s' -p hi -n 1 2>&1 >/dev/null",
             test_build_path("edgeseek"), path);
    test_run_cmd(cmd, res, sizeof res);
    CHECK(strstr(res, "EDGESEEK_FAKE_NUMA=lots ignored") != NULL, "an invalid EDGESEEK_FAKE_NUMA is warned about: '%s'",
          res);
}

int main(void) {
    watch_alone();
    const char *args[] = {"--type f32 --layers 4 --seed 7"};
    test_each_gen_model(args, 1, test_truncation);
    test_each_gen_model(args, 1, test_nan);
    test_each_gen_model(args, 1, test_pager_io);
    test_each_gen_model(args, 1, test_budgets);
    return test_summary();
}
