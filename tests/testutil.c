/* testutil.c — see testutil.h */
#include "testutil.h"

#include "kernels.h"
#include "edgeseek.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int test_n_pass, test_n_fail, test_n_skip;

int test_summary(void) {
    printf("%d passed, %d failed, %d skipped\n", test_n_pass, test_n_fail, test_n_skip);
    return test_n_fail ? 1 : 0;
}

static const char *join(char *buf, size_t cap, const char *env, const char *def, const char *rel) {
    const char *base = getenv(env);
    if (!base || !*base) base = def;
    snprintf(buf, cap, "%s/%s", base, rel);
    return buf;
}

const char *test_data_path(const char *rel) {
    static char buf[4][4096];
    static int i;
    i = (i + 1) & 3;
    return join(buf[i], sizeof buf[i], "ES_DATA", "tests/data", rel);
}

int test_need_file(const char *path) {
    int ok = access(path, R_OK) == 0;
    CHECK(ok, "test data %s is missing (tests/data/README.md; ES_DATA overrides the folder)", path);
    return ok;
}

const char *test_build_path(const char *rel) {
    static char buf[4][4096];
    static int i;
    i = (i + 1) & 3;
    return join(buf[i], sizeof buf[i], "ES_BUILD", "build", rel);
}

int test_run_cmd(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int rc = pclose(p);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

void *test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return NULL; }
    long sz = ftell(f);
    if (sz < 0) { fclose(f); return NULL; }
    rewind(f);
    char *buf = malloc((size_t)sz + 1);
    if (!buf) { fclose(f); return NULL; }
    size_t got = fread(buf, 1, (size_t)sz, f);
    fclose(f);
    if (got != (size_t)sz) { free(buf); return NULL; }
    buf[sz] = 0;
    if (len) *len = (size_t)sz;
    return buf;
}

int test_write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(p, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

int test_decode_each(es_session *s, const int32_t *tok, int n, float *logits, int n_vocab) {
    char err[256];
    for (int i = 0; i < n; i++)
        if (es_session_eval(s, tok + i, 1, logits + (size_t)i * (size_t)n_vocab, 0, err, sizeof err) != ES_OK) {
            CHECK(0, "eval: %s", err);
            return -1;
        }
    return 0;
}

void test_each_simd_path(void (*fn)(const es_kernels *K)) {
    static const char *paths[] = {"generic", "avx2", "avx512", "neon"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        char err[256];
        if (!es_simd_supported(paths[i])) {
            SKIP("SIMD path %s: not available on this CPU/build", paths[i]);
            continue;
        }
        const es_kernels *K = es_kernels_for(paths[i], err, sizeof err);
        CHECK(K && !strcmp(K->name, paths[i]), "table of %s: %s", paths[i], K ? K->name : err);
        if (K) fn(K);
    }
}

void test_each_gen_model(const char *const *args, int n, void (*fn)(int i, const char *path)) {
    char genp[4096];
    snprintf(genp, sizeof genp, "%s", test_build_path("gen_model"));
    if (access(genp, X_OK) != 0) {
        SKIP("%s not built: tests on generated models skipped", genp);
        return;
    }
    char dir[] = "/tmp/es_gen_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp failed");
        return;
    }
    for (int i = 0; i < n; i++) {
        char path[256], cmd[8192];
        snprintf(path, sizeof path, "%s/m%d.gguf", dir, i);
        snprintf(cmd, sizeof cmd, "'%s' %s --quiet --threads 1 -o '%s' > /dev/null 2>&1", genp, args[i], path);
        if (system(cmd) != 0) {
            CHECK(0, "gen_model failed for %s", args[i]);
            continue;
        }
        fn(i, path);
        remove(path);
    }
    rmdir(dir);
}

float *test_logits_of(const char *path, const int32_t *tok, int n, int *n_vocab) {
    return test_logits_on(path, NULL, tok, n, n_vocab);
}

float *test_logits_on(const char *path, const char *simd, const int32_t *tok, int n, int *n_vocab) {
    char err[512];
    es_model *m = NULL;
    es_session *s = NULL;
    es_load_params lp = {0};
    lp.simd = simd;
    float *lg = NULL;
    if (es_model_load(path, &lp, &m, err, sizeof err) != ES_OK) { printf("load %s: %s\n", path, err); return NULL; }
    *n_vocab = es_model_n_vocab(m);
    if (es_session_new(m, n, &s, err, sizeof err) == ES_OK) {
        lg = malloc(sizeof(float) * (size_t)*n_vocab * (size_t)n);
        if (lg && es_session_eval(s, tok, n, lg, 1, err, sizeof err) != ES_OK) {
            printf("eval %s: %s\n", path, err);
            free(lg);
            lg = NULL;
        }
    }
    es_session_free(s);
    es_model_free(m);
    return lg;
}

int test_fill_random_blocks(uint32_t type, void *row, int64_t n, float scale, uint64_t *rng) {
    const es_type_traits *tr = es_type_info(type);
    size_t d_at; /* where the fp16 d lies in the block */
    switch (type) {
    case ES_TYPE_IQ2_XXS: case ES_TYPE_IQ2_XS: case ES_TYPE_IQ2_S: case ES_TYPE_IQ3_XXS: case ES_TYPE_IQ3_S:
    case ES_TYPE_IQ1_S: d_at = 0; break;
    case ES_TYPE_TQ1_0: d_at = offsetof(block_tq1_0, d); break;
    case ES_TYPE_TQ2_0: d_at = offsetof(block_tq2_0, d); break;
    case ES_TYPE_IQ1_M: d_at = SIZE_MAX; break; /* spread over the scales */
    default: return 0;
    }
    uint8_t *p = row;
    for (int64_t b = 0; b < n / 256; b++, p += tr->type_size) {
        for (uint32_t i = 0; i < tr->type_size; i++) {
            *rng ^= *rng << 13; *rng ^= *rng >> 7; *rng ^= *rng << 17;
            p[i] = (uint8_t)(*rng >> 29);
        }
        es_fp16 d = es_f32_to_fp16(scale * (1.0f + (float)(p[1] & 0x7f) / 128.0f));
        if (d_at != SIZE_MAX) {
            memcpy(p + d_at, &d, 2);
        } else {
            block_iq1_m *m = (block_iq1_m *)p;
            for (int k = 0; k < 4; k++) m->scales[2 * k + 1] = (uint8_t)((m->scales[2 * k + 1] & 0x0f) | ((d >> (4 * k)) & 0xf) << 4);
        }
    }
    return 1;
}
