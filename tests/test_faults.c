/* test_faults.c — a model file that shrinks under a running process, and
 * weights that are not finite: the evaluation stops with an error naming
 * the file (or the layer) instead of dying of SIGBUS or printing garbage.
 *
 * The file is truncated between two evaluations, so the test is
 * deterministic: the pages past the new end are gone from the page cache
 * and every mapping, and the next read of them faults.  es_forward is also
 * called directly, past es_session_eval's size check, so the SIGBUS handler
 * (platform/fault.c) itself is what stops it, on the pool's threads too. */
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgeseek.h"
#include "fault.h"
#include "gguf.h"
#include "model.h"
#include "session.h"
#include "testutil.h"

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

static off_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

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

static const char *mode_name[] = {"default", "mmap", "mmap-plain", "pread"};

/* The model at path, copied, loaded in mode, one token evaluated, the copy
 * cut to half its size: the next evaluation fails with ES_ERR_IO and a
 * message naming the file; so does es_forward called directly. */
static void truncated_model(const char *path, int mode) {
    char live[512];
    snprintf(live, sizeof live, "%s.live", path);
    if (copy_file(path, live) != 0) {
        CHECK(0, "copy %s", path);
        return;
    }
    es_load_params lp = {.experts = mode};
    es_model *m = NULL;
    es_session *s = NULL;
    char err[512] = "";
    es_status st = es_model_load(live, &lp, &m, err, sizeof err);
    CHECK(st == ES_OK, "%s: load: %s", mode_name[mode], err);
    if (st == ES_OK) st = es_session_new(m, 64, &s, err, sizeof err);
    if (st == ES_OK) st = es_session_set_threads(s, 4, err, sizeof err);
    CHECK(st == ES_OK, "%s: session: %s", mode_name[mode], err);
    if (st != ES_OK) goto out;
    const int V = es_model_n_vocab(m);
    float *logits = malloc(sizeof(float) * (size_t)V * 8);
    int32_t toks[8] = {1, 5, 9, 2, 7, 3, 4, 6};
    st = es_session_eval(s, toks, 2, logits, 0, err, sizeof err);
    CHECK(st == ES_OK, "%s: eval before the truncation: %s", mode_name[mode], err);
    CHECK(truncate(live, file_size(live) / 2) == 0, "truncate");
    /* straight into the layer loop: the fault handler must stop it */
    char where[128];
    int r = es_forward(s, toks + 2, 4, logits, 0, where, sizeof where);
    CHECK(r == -1, "%s: es_forward on a truncated file returns -1 (got %d)", mode_name[mode], r);
    int pos = es_session_pos(s);
    err[0] = 0;
    st = es_session_eval(s, toks + 2, 4, logits, 0, err, sizeof err);
    CHECK(st == ES_ERR_IO && strstr(err, "changed or truncated while in use") && strstr(err, live),
          "%s: eval after the truncation: status %d, \"%s\"", mode_name[mode], st, err);
    CHECK(es_session_pos(s) == pos, "%s: a failed eval keeps the position", mode_name[mode]);
    free(logits);
out:
    es_session_free(s);
    es_model_free(m);
    unlink(live);
}

/* A NaN written into the first weight of blk.L.ffn_down (or the attention's
 * output for a dense layer without one): the evaluation fails naming layer
 * L; the CLI exits 1 and prints no NUL byte. */
static void nan_model(const char *path) {
    char bad[512];
    snprintf(bad, sizeof bad, "%s.nan", path);
    if (copy_file(path, bad) != 0) {
        CHECK(0, "copy %s", path);
        return;
    }
    es_gguf_ctx *g = NULL;
    char err[512] = "";
    CHECK(es_gguf_open_file(bad, &g, err, sizeof err) == 0, "open: %s", err);
    if (!g) goto out;
    const int L = 1;
    char name[64];
    snprintf(name, sizeof name, "blk.%d.attn_output.weight", L);
    uint64_t at = 0;
    int found = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i].name, name)) {
            at = (uint64_t)((const uint8_t *)g->tensors[i].data - g->base);
            found = g->tensors[i].type == ES_TYPE_F32;
        }
    es_gguf_close(g);
    CHECK(found, "%s, an F32 tensor, in the model", name);
    if (!found) goto out;
    int fd = open(bad, O_WRONLY);
    float nan = NAN;
    CHECK(fd >= 0 && pwrite(fd, &nan, sizeof nan, (off_t)at) == (ssize_t)sizeof nan, "patch");
    if (fd >= 0) close(fd);

    es_model *m = NULL;
    es_session *s = NULL;
    es_status st = es_model_load(bad, NULL, &m, err, sizeof err);
    if (st == ES_OK) st = es_session_new(m, 64, &s, err, sizeof err);
    CHECK(st == ES_OK, "load: %s", err);
    if (st == ES_OK) {
        float *logits = malloc(sizeof(float) * (size_t)es_model_n_vocab(m));
        int32_t toks[3] = {1, 5, 9};
        err[0] = 0;
        st = es_session_eval(s, toks, 3, logits, 0, err, sizeof err);
        char want[32];
        snprintf(want, sizeof want, "layer %d's attention", L);
        CHECK(st == ES_ERR_FORMAT && strstr(err, want), "eval with a NaN weight: status %d, \"%s\"", st, err);
        CHECK(es_session_pos(s) == 0, "a failed eval keeps the position");
        free(logits);
    }
    es_session_free(s);
    es_model_free(m);

    char cmd[2048], out[4096];
    snprintf(cmd, sizeof cmd,
             "timeout 60 '%s' run -m '%s' -p 'hello' -n 4 --temp 0 2>/dev/null | od -An -tx1 | grep -c ' 00' ; "
             "timeout 60 '%s' run -m '%s' -p 'hello' -n 4 --temp 0 > /dev/null 2>&1; echo rc=$?",
             test_build_path("edgeseek"), bad, test_build_path("edgeseek"), bad);
    test_run_cmd(cmd, out, sizeof out);
    CHECK(!strncmp(out, "0\n", 2) && strstr(out, "rc=1"), "CLI on a NaN model: no NUL bytes, exit 1: %s", out);
out:
    unlink(bad);
}

static const char *const models[] = {"--preset tiny --type f32 --seed 11"};

static void one_model(int i, const char *path) {
    (void)i;
    for (int mode = 0; mode < 4; mode++) truncated_model(path, mode);
    nan_model(path);
}

int main(void) {
    watch_alone();
    test_each_gen_model(models, 1, one_model);
    return test_summary();
}
