/* testutil.h — the tiny test harness every tests/test_*.c uses.
 * CHECK records a pass or a failure (with file:line and a message);
 * SKIP records a skip (a check this CPU, build or user cannot run).
 * test_summary() prints "N passed, N failed, N skipped" as the binary's last
 * line and returns the exit status.  Test data comes from tests/data (or
 * $ES_DATA); data that should be there and is not is a failure, not a skip. */
#ifndef ES_TESTUTIL_H
#define ES_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>

extern int test_n_pass, test_n_fail, test_n_skip;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (cond) {                                                        \
            test_n_pass++;                                                 \
        } else {                                                           \
            test_n_fail++;                                                 \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                    \
            printf(__VA_ARGS__);                                           \
            printf("\n");                                                  \
        }                                                                  \
    } while (0)

/* Marks a test skipped: printed and counted in the summary's "N skipped". */
#define SKIP(...)                                                          \
    do {                                                                   \
        test_n_skip++;                                                     \
        printf("SKIP ");                                                   \
        printf(__VA_ARGS__);                                               \
        printf("\n");                                                      \
    } while (0)

int test_summary(void);
/* "$ES_DATA/rel" in a static buffer (one of four, reused in turn); ES_DATA
 * defaults to tests/data, relative to the repository root, where `make test`
 * runs the binaries.  tests/data/README.md lists what is there. */
const char *test_data_path(const char *rel);
/* 1 if path is readable; otherwise records a failure naming the missing
 * test data and returns 0. */
int test_need_file(const char *path);
/* "$ES_BUILD/rel" (default build) */
const char *test_build_path(const char *rel);
/* Reads a whole file; malloc'd, *len set; NULL if unreadable. */
void *test_read_file(const char *path, size_t *len);
/* Writes n bytes to path; 0, or -1 when it cannot. */
int test_write_file(const char *path, const void *p, size_t n);
struct es_session;
/* Evaluates tok[0..n) one at a time in s, each one's logits into
 * logits[i][n_vocab]; 0, or -1 with a failure recorded. */
int test_decode_each(struct es_session *s, const int32_t *tok, int n, float *logits, int n_vocab);
/* Runs a shell command, its stdout into out (NUL-terminated, truncated to
 * cap); returns the exit status, -1 if it did not exit normally. */
int test_run_cmd(const char *cmd, char *out, size_t cap);
struct es_kernels;
/* Runs fn once on every SIMD path this CPU can run (generic, avx2, avx512,
 * neon) with that path's table; the others are reported as skipped. */
void test_each_simd_path(void (*fn)(const struct es_kernels *K));
/* For each of n gen_model argument strings, writes that model into a
 * temporary directory and calls fn(i, path); the files are removed after.
 * A failing gen_model counts as a failure; without a built gen_model every
 * case is skipped with a message. */
void test_each_gen_model(const char *const *args, int n, void (*fn)(int i, const char *path));
/* Logits of n tokens from position 0 of the model at path (default load
 * parameters): [n][vocab], malloc'd, *n_vocab set; NULL (with a line
 * printed) on error. */
float *test_logits_of(const char *path, const int32_t *tok, int n, int *n_vocab);
/* The same with the model's kernels on SIMD path simd (NULL: the default) */
float *test_logits_on(const char *path, const char *simd, const int32_t *tok, int n, int *n_vocab);

/* For the formats edgeseek reads but cannot write (the IQ codebook formats,
 * TQ1_0, TQ2_0: es_kernels_generic.quant_row is empty): a row of n weights
 * (n a multiple of 256) of random blocks, every index and sign code drawn
 * from *rng and each super-block's fp16 d in [scale, 2 scale); any bit
 * pattern is a valid block of these formats.  Returns 0 for other types. */
int test_fill_random_blocks(uint32_t type, void *row, int64_t n, float scale, uint64_t *rng);

#endif
