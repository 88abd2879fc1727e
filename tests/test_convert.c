/* test_convert.c — `edgeseek convert` end to end on synthetic Hugging Face
 * checkpoints (build/gen_model writes a GGUF, build/gen_hf turns it into a
 * checkpoint and a reference GGUF of the weights the checkpoint holds,
 * dequantised to F32).
 *
 * Covers: FP8 e4m3 with 128x128 block scales (partial edge blocks) and with
 * small blocks, BF16, V3-style (query compression, sigmoid routing, gate
 * bias, groups, YaRN, an MTP layer) and V2-Lite-style configs, one shard
 * and several; converted to F32 the logits equal the reference's exactly,
 * in the source precision (Q8_0 for FP8: equal to the reference quantised
 * by `edgeseek quantize`; BF16) within 5e-5; q4_k_m loads and runs;
 * --no-mtp.  Every malformed checkpoint (missing shard, tensor missing or
 * twice, a dtype or shape config.json disagrees with, a truncated shard, a
 * malformed or oversized header, a missing block scale, an unknown
 * architecture) fails with exit status 1, one line naming the file and the
 * tensor, and no output file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgeseek.h"
#include "testutil.h"

static char tmp[256];
static char cmd[4096], out[8192];

static int sh(const char *fmt, const char *a, const char *b, const char *c) {
    snprintf(cmd, sizeof cmd, fmt, a, b, c);
    return test_run_cmd(cmd, out, sizeof out);
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}


static const int32_t toks[] = {1, 5, 77, 300, 12, 260, 3, 99, 401, 42, 7, 300};
#define NT ((int)(sizeof toks / sizeof toks[0]))

/* max |a - b| over the logits of two models; -1 if either fails */
static double max_diff(const char *a, const char *b) {
    int va = 0, vb = 0;
    float *la = test_logits_of(a, toks, NT, &va), *lb = test_logits_of(b, toks, NT, &vb);
    double d = -1;
    if (la && lb && va == vb) {
        d = 0;
        for (size_t i = 0; i < (size_t)va * NT; i++) {
            double x = (double)la[i] - (double)lb[i];
            if (x < 0) x = -x;
            if (!(x <= d)) d = x; /* NaN propagates */
        }
    }
    free(la);
    free(lb);
    return d;
}

/* The same token ids from both models' tokenizers on a few texts (special
 * tokens parsed), and the same BOS/EOS. */
static void same_tokens(const char *what, const char *a, const char *b) {
    static const char *const texts[] = {"the cat sat on the mat, and then? 123456",
                                        "<\xef\xbd\x9cUser\xef\xbd\x9c>Hi there!\n\n<think>x</think>",
                                        "  spaces   and\ttabs \xe4\xbd\xa0\xe5\xa5\xbd"};
    char err[256];
    es_model *ma = NULL, *mb = NULL;
    es_load_params lp = {0};
    if (es_model_load(a, &lp, &ma, err, sizeof err) || es_model_load(b, &lp, &mb, err, sizeof err)) {
        CHECK(0, "%s: load for the tokenizer: %s", what, err);
    } else {
        CHECK(es_model_bos(ma) == es_model_bos(mb) && es_model_eos(ma) == es_model_eos(mb), "%s: bos/eos differ", what);
        for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
            int32_t *ia = NULL, *ib = NULL;
            size_t na = 0, nb = 0;
            int ra = es_tokenize(ma, texts[t], strlen(texts[t]), 1, 1, &ia, &na, err, sizeof err);
            int rb = es_tokenize(mb, texts[t], strlen(texts[t]), 1, 1, &ib, &nb, err, sizeof err);
            CHECK(ra == 0 && rb == 0 && na == nb && na > 1 && !memcmp(ia, ib, na * sizeof *ia),
                  "%s: text %zu tokenises differently (%zu vs %zu ids)", what, t, na, nb);
            free(ia);
            free(ib);
        }
    }
    es_model_free(ma);
    es_model_free(mb);
}

typedef struct good_case {
    const char *what, *gen_model, *gen_hf;
    int fp8;
} good_case;

static const good_case good[] = {
    {"v3 fp8 128x128, 3 shards, MTP", "--preset v3 --mtp=1", "--fp8 --shards 3", 1},
    {"v3 fp8 32x64 blocks, one file", "--preset v3", "--fp8 --block 32 64 --shards 1", 1},
    {"v2-lite bf16, 2 shards", "--preset tiny --yarn-factor 40 --yarn-log-mul 0.0707", "--shards 2", 0},
    {"v2 groups bf16, 4 shards, MTP", "--preset tiny --groups 2 --groups-used 1 --mtp=1", "--shards 4", 0},
};

static void run_good(int i) {
    const good_case *g = &good[i];
    char src[300], hf[300], ref[300], o[300], o2[300];
    snprintf(src, sizeof src, "%s/g%d.gguf", tmp, i);
    snprintf(hf, sizeof hf, "%s/hf%d", tmp, i);
    snprintf(ref, sizeof ref, "%s/ref%d.gguf", tmp, i);
    if (sh("%s --quiet %s -o %s", test_build_path("gen_model"), g->gen_model, src)) {
        CHECK(0, "%s: gen_model failed: %s", g->what, out);
        return;
    }
    snprintf(cmd, sizeof cmd, "%s %s %s %s --ref %s 2>&1", test_build_path("gen_hf"), src, hf, g->gen_hf, ref);
    if (test_run_cmd(cmd, out, sizeof out)) {
        CHECK(0, "%s: gen_hf failed: %s", g->what, out);
        return;
    }
    /* F32: the reference's weights exactly, so the same logits bit for bit */
    snprintf(o, sizeof o, "%s/out%d-f32.gguf", tmp, i);
    int rc = sh("%s convert --quiet %s %s f32 2>&1", test_build_path("edgeseek"), hf, o);
    CHECK(rc == 0, "%s: convert f32 failed: %s", g->what, out);
    double d = rc ? -1 : max_diff(o, ref);
    CHECK(d == 0, "%s: f32 logits differ from the reference by %g", g->what, d);
    if (!rc) same_tokens(g->what, o, ref);
    /* the source precision: FP8 -> Q8_0 (embeddings and lm_head BF16) */
    snprintf(o2, sizeof o2, "%s/out%d-src.gguf", tmp, i);
    rc = sh("%s convert --quiet %s %s 2>&1", test_build_path("edgeseek"), hf, o2);
    CHECK(rc == 0, "%s: convert failed: %s", g->what, out);
    if (g->fp8) {
        d = rc ? -1 : max_diff(o2, ref);
        CHECK(d >= 0, "%s: the default (Q8_0) output does not run", g->what);
        /* every matrix Q8_0: the reference quantised by `edgeseek quantize`, bit for bit */
        char rq[300];
        snprintf(rq, sizeof rq, "%s/ref%d-q8.gguf", tmp, i);
        CHECK(sh("%s quantize --quiet %s %s q8_0 2>&1", test_build_path("edgeseek"), ref, rq) == 0, "quantize: %s", out);
        rc = sh("%s convert --quiet %s %s q8_0 2>&1", test_build_path("edgeseek"), hf, o2);
        CHECK(rc == 0, "%s: convert q8_0 failed: %s", g->what, out);
        d = rc ? -1 : max_diff(o2, rq);
        CHECK(d == 0, "%s: q8_0 logits differ from the quantised reference by %g", g->what, d);
        unlink(rq);
    } else {
        d = rc ? -1 : max_diff(o2, ref);
        CHECK(d >= 0 && d <= 5e-5, "%s: bf16 logits differ from the reference by %g", g->what, d);
    }
    if (i == 0) { /* another type, and dropping the MTP layer */
        rc = sh("%s convert --quiet %s %s q4_k_m 2>&1", test_build_path("edgeseek"), hf, o2);
        CHECK(rc == 0, "%s: convert q4_k_m failed: %s", g->what, out);
        d = rc ? -1 : max_diff(o2, ref);
        CHECK(d >= 0, "%s: the q4_k_m output does not run", g->what);
        rc = sh("%s convert --quiet --no-mtp %s %s f32 2>&1", test_build_path("edgeseek"), hf, o2);
        CHECK(rc == 0, "%s: convert --no-mtp failed: %s", g->what, out);
        d = rc ? -1 : max_diff(o2, ref);
        CHECK(d == 0, "%s: --no-mtp logits differ from the reference by %g", g->what, d);
        sh("grep -c nextn %s%s%s", o2, "", "");
        CHECK(atoi(out) == 0, "--no-mtp left next-n tensors");
        /* the progress line and the summary */
        rc = sh("%s convert %s %s f32 2>&1 >/dev/null", test_build_path("edgeseek"), hf, o2);
        CHECK(rc == 0 && strstr(out, "MB/s") && strstr(out, "ETA") && strstr(out, "1 next-n"),
              "progress/summary missing: %s", out);
    }
    unlink(o);
    unlink(o2);
    unlink(ref);
    unlink(src);
}

typedef struct bad_case {
    const char *what;
    const char *gen_hf; /* extra gen_hf options */
    const char *edit;   /* shell command run in the checkpoint's directory, or NULL */
    const char *want1, *want2; /* the message must contain both */
} bad_case;

#define O_PROJ "model.layers.1.self_attn.o_proj.weight"
#define Q_A "model.layers.1.self_attn.q_a_proj.weight"
static const bad_case bad[] = {
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

static void run_bad(const char *src, int i) {
    const bad_case *b = &bad[i];
    char hf[300], o[300];
    snprintf(hf, sizeof hf, "%s/bad%d", tmp, i);
    snprintf(o, sizeof o, "%s/bad%d.gguf", tmp, i);
    snprintf(cmd, sizeof cmd, "%s %s %s --fp8 --shards 3 %s 2>&1", test_build_path("gen_hf"), src, hf, b->gen_hf);
    if (test_run_cmd(cmd, out, sizeof out)) {
        CHECK(0, "%s: gen_hf failed: %s", b->what, out);
        return;
    }
    if (b->edit) {
        snprintf(cmd, sizeof cmd, "cd %s && %s", hf, b->edit);
        CHECK(test_run_cmd(cmd, out, sizeof out) == 0, "%s: edit failed: %s", b->what, out);
    }
    int rc = sh("%s convert --quiet %s %s 2>&1", test_build_path("edgeseek"), hf, o);
    size_t len = strlen(out);
    while (len && out[len - 1] == '\n') out[--len] = 0;
    CHECK(rc == 1, "%s: exit status %d, want 1 (%s)", b->what, rc, out);
    CHECK(strstr(out, b->want1) && strstr(out, b->want2), "%s: message '%s' lacks '%s' / '%s'", b->what, out,
          b->want1, b->want2);
    CHECK(!strchr(out, '\n'), "%s: message is more than one line: %s", b->what, out);
    CHECK(!exists(o), "%s: an output file was left behind", b->what);
    snprintf(cmd, sizeof cmd, "rm -rf %s", hf);
    test_run_cmd(cmd, out, sizeof out);
}

int main(void) {
    if (test_run_cmd("true", out, sizeof out) != 0) {
        SKIP("no shell to run the tools");
        return test_summary();
    }
    snprintf(cmd, sizeof cmd, "%s convert --help 2>&1", test_build_path("edgeseek"));
    int rc = test_run_cmd(cmd, out, sizeof out);
    if (rc != 0 || !exists(test_build_path("gen_hf")) || !exists(test_build_path("gen_model"))) {
        SKIP("edgeseek convert, gen_hf or gen_model not built (rc %d)", rc);
        return test_summary();
    }
    snprintf(cmd, sizeof cmd, "%s convert x y 2>&1", test_build_path("edgeseek"));
    test_run_cmd(cmd, out, sizeof out);
    if (strstr(out, "without libcjson")) {
        SKIP("edgeseek was built without libcjson: convert untested");
        return test_summary();
    }
    snprintf(tmp, sizeof tmp, "/tmp/es_convert_XXXXXX");
    if (!mkdtemp(tmp)) {
        CHECK(0, "mkdtemp failed");
        return test_summary();
    }
    for (int i = 0; i < (int)(sizeof good / sizeof good[0]); i++) run_good(i);
    char src[300];
    snprintf(src, sizeof src, "%s/bad.gguf", tmp);
    if (sh("%s --quiet --preset v3 -o %s%s", test_build_path("gen_model"), src, "") == 0)
        for (int i = 0; i < (int)(sizeof bad / sizeof bad[0]); i++) run_bad(src, i);
    else
        CHECK(0, "gen_model failed: %s", out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    test_run_cmd(cmd, out, sizeof out);
    return test_summary();
}
