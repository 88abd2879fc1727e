/* hfutil.c — see hfutil.h */
#include "hfutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

int hf_setup(char *tmp, size_t cap, const char *prefix) {
    char cmd[1024], out[4096];
    if (test_run_cmd("true", out, sizeof out) != 0) {
        SKIP("no shell to run the tools");
        return 0;
    }
    if (!exists(test_build_path("edgeseek")) || !exists(test_build_path("gen_hf")) ||
        !exists(test_build_path("gen_model"))) {
        SKIP("edgeseek, gen_hf or gen_model not built");
        return 0;
    }
    snprintf(cmd, sizeof cmd, "%s convert x y 2>&1", test_build_path("edgeseek"));
    test_run_cmd(cmd, out, sizeof out);
    if (strstr(out, "without libcjson")) {
        SKIP("edgeseek was built without libcjson: Hugging Face checkpoints untested");
        return 0;
    }
    snprintf(tmp, cap, "/tmp/%s_XXXXXX", prefix);
    if (!mkdtemp(tmp)) {
        CHECK(0, "mkdtemp failed");
        return 0;
    }
    return 1;
}

void hf_check_bad(const char *what, const char *src, const char *dir, const char *gen_hf_opts, const char *edit,
                  const char *cmd_fmt, const char *want1, const char *want2, char *out, size_t cap) {
    char cmd[4096], fmt[1024];
    snprintf(cmd, sizeof cmd, "%s %s %s %s 2>&1", test_build_path("gen_hf"), src, dir, gen_hf_opts);
    if (test_run_cmd(cmd, out, cap)) {
        CHECK(0, "%s: gen_hf failed: %s", what, out);
        return;
    }
    if (edit) {
        snprintf(cmd, sizeof cmd, "cd %s && %s", dir, edit);
        CHECK(test_run_cmd(cmd, out, cap) == 0, "%s: edit failed: %s", what, out);
    }
    snprintf(fmt, sizeof fmt, "%s 2>&1", cmd_fmt);
    snprintf(cmd, sizeof cmd, fmt, dir);
    int rc = test_run_cmd(cmd, out, cap);
    size_t len = strlen(out);
    while (len && out[len - 1] == '\n') out[--len] = 0;
    CHECK(rc == 1, "%s: exit status %d, want 1 (%s)", what, rc, out);
    CHECK(strstr(out, want1) && strstr(out, want2), "%s: message '%s' lacks '%s' / '%s'", what, out, want1, want2);
    CHECK(!strchr(out, '\n'), "%s: message is more than one line: %s", what, out);
    char keep[1024];
    snprintf(keep, sizeof keep, "%s", out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    test_run_cmd(cmd, out, cap);
    snprintf(out, cap, "%s", keep);
}

double hf_max_diff(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double x = (double)a[i] - (double)b[i];
        if (x < 0) x = -x;
        if (!(x <= d)) d = x; /* NaN propagates */
    }
    return d;
}

const hf_case hf_cases[] = {
    {"v3 fp8 128x128, 3 shards, MTP", "--preset v3 --mtp=1", "--fp8 --shards 3", 1, 1},
    {"v3 fp8 32x64 blocks, one file", "--preset v3", "--fp8 --block 32 64 --shards 1", 1, 0},
    {"v2-lite bf16, 2 shards", "--preset tiny --yarn-factor 40 --yarn-log-mul 0.0707", "--shards 2", 0, 1},
    {"v2 groups bf16, 4 shards, MTP", "--preset tiny --groups 2 --groups-used 1 --mtp=1", "--shards 4", 0, 1},
};
const int hf_n_cases = (int)(sizeof hf_cases / sizeof hf_cases[0]);

int hf_make_case(const hf_case *c, const char *src, const char *dir, const char *ref, char *out, size_t cap) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s --quiet %s -o %s 2>&1", test_build_path("gen_model"), c->gen_model, src);
    if (test_run_cmd(cmd, out, cap)) {
        CHECK(0, "%s: gen_model failed: %s", c->what, out);
        return -1;
    }
    snprintf(cmd, sizeof cmd, "%s %s %s %s --ref %s 2>&1", test_build_path("gen_hf"), src, dir, c->gen_hf, ref);
    if (test_run_cmd(cmd, out, cap)) {
        CHECK(0, "%s: gen_hf failed: %s", c->what, out);
        return -1;
    }
    return 0;
}

#define O_PROJ "model.layers.1.self_attn.o_proj.weight"
#define Q_A "model.layers.1.self_attn.q_a_proj.weight"
const hf_bad_case hf_bad_cases[] = {
    {"missing shard", "", "rm model-00002-of-00003.safetensors", "model-00002-of-00003.safetensors", "cannot open"},
    {"tensor missing", "--mutate drop:" O_PROJ, NULL, "model.safetensors.index.json", O_PROJ " is missing"},
    {"tensor twice", "--mutate dup:" O_PROJ, NULL, O_PROJ, "appears twice"},
    {"listed twice", "",
     "sed -i 's|^  \"model.norm.weight\": \\(.*\\)$|  \"model.norm.weight\": \\1\\n  \"model.norm.weight\": \\1|' "
     "model.safetensors.index.json",
     "model.safetensors.index.json", "model.norm.weight is listed twice"},
    {"fp8 without quantization_config", "--mutate nofp8cfg", NULL, "model-00001-of-00003.safetensors: tensor model.",
     "F8_E4M3, but config.json has no fp8 quantization_config"},
    {"shape", "--mutate shape:" Q_A, NULL, Q_A, "config.json implies"},
    {"missing scale", "--mutate noscale:" O_PROJ, NULL, O_PROJ, "without its"},
    {"truncated shard", "", "truncate -s -100 model-00003-of-00003.safetensors", "model-00003-of-00003.safetensors",
     "truncated"},
    {"malformed header", "", "printf 'x' | dd of=model-00001-of-00003.safetensors bs=1 seek=8 conv=notrunc 2>/dev/null",
     "model-00001-of-00003.safetensors", "malformed JSON header"},
    {"oversized header", "",
     "printf '\\000\\000\\000\\000\\001' | dd of=model-00002-of-00003.safetensors bs=1 seek=0 conv=notrunc 2>/dev/null",
     "model-00002-of-00003.safetensors", "exceeds"},
    {"unknown architecture", "--arch LlamaForCausalLM", NULL, "config.json", "LlamaForCausalLM' (model_type"},
    {"config disagrees", "", "sed -i 's/\"hidden_size\": 256/\"hidden_size\": 128/' config.json", "config.json implies",
     "model.embed_tokens.weight"},
};
const int hf_n_bad_cases = (int)(sizeof hf_bad_cases / sizeof hf_bad_cases[0]);
