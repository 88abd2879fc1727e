/* hfutil.h — what the tests of Hugging Face checkpoints share
 * (test_convert.c, test_hf_direct.c): the start (a shell, the tools built,
 * a CLI with libcjson, a temporary directory), the malformed-checkpoint
 * check, and the largest difference of two logit arrays. */
#ifndef ES_HFUTIL_H
#define ES_HFUTIL_H

#include <stddef.h>

/* 1 when the tests can run: a shell, build/edgeseek, gen_hf and gen_model,
 * edgeseek built with libcjson; then tmp (cap bytes) names a new temporary
 * directory "/tmp/<prefix>_XXXXXX".  0 after recording why as a skip or a
 * failure. */
int hf_setup(char *tmp, size_t cap, const char *prefix);
/* gen_hf writes the checkpoint dir from src with gen_hf_opts, the shell
 * command edit (or NULL) runs inside it, then the shell command cmd_fmt
 * (%s: dir) must exit with status 1 and one line containing want1 and
 * want2; dir is removed after.  what names the case.  The output is left in
 * out (cap bytes). */
void hf_check_bad(const char *what, const char *src, const char *dir, const char *gen_hf_opts, const char *edit,
                  const char *cmd_fmt, const char *want1, const char *want2, char *out, size_t cap);
/* The synthetic checkpoints: gen_model's options, then gen_hf's. */
typedef struct hf_case {
    const char *what, *gen_model, *gen_hf;
    int fp8;       /* FP8 e4m3 with block scales (else BF16) */
    int blocks128; /* FP8 blocks of 128x128, DeepSeek's (or none) */
} hf_case;
extern const hf_case hf_cases[];
extern const int hf_n_cases;
/* Writes case c: gen_model's GGUF src, gen_hf's checkpoint dir and its
 * reference ref (the checkpoint's weights in F32).  0, or -1 after
 * recording a failure (the tools' output in out). */
int hf_make_case(const hf_case *c, const char *src, const char *dir, const char *ref, char *out, size_t cap);

/* The malformed checkpoints: each from gen_model's v3 preset by gen_hf
 * --fp8 --shards 3 and the options, then the edit. */
typedef struct hf_bad_case {
    const char *what;
    const char *gen_hf; /* gen_hf options after --fp8 --shards 3 */
    const char *edit;   /* shell command run in the checkpoint's directory, or NULL */
    const char *want1, *want2; /* the message must contain both */
} hf_bad_case;

extern const hf_bad_case hf_bad_cases[];
extern const int hf_n_bad_cases;

/* max |a[i] - b[i]| (NaN if either holds one) */
double hf_max_diff(const float *a, const float *b, size_t n);

#endif
