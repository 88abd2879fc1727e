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
#include "hfutil.h"
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
    double d = la && lb && va == vb ? hf_max_diff(la, lb, (size_t)va * NT) : -1;
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


static void run_good(int i) {
    const hf_case *g = &hf_cases[i];
    char src[300], hf[300], ref[300], o[300], o2[300];
    snprintf(src, sizeof src, "%s/g%d.gguf", tmp, i);
    snprintf(hf, sizeof hf, "%s/hf%d", tmp, i);
    snprintf(ref, sizeof ref, "%s/ref%d.gguf", tmp, i);
    if (hf_make_case(g, src, hf, ref, out, sizeof out)) return;
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


static void run_bad(const char *src, int i) {
    const hf_bad_case *b = &hf_bad_cases[i];
    char hf[300], o[300], opts[512], fmt[1024];
    snprintf(hf, sizeof hf, "%s/bad%d", tmp, i);
    snprintf(o, sizeof o, "%s/bad%d.gguf", tmp, i);
    snprintf(opts, sizeof opts, "--fp8 --shards 3 %s", b->gen_hf);
    snprintf(fmt, sizeof fmt, "%s convert --quiet %%s %s", test_build_path("edgeseek"), o);
    hf_check_bad(b->what, src, hf, opts, b->edit, fmt, b->want1, b->want2, out, sizeof out);
    CHECK(!exists(o), "%s: an output file was left behind", b->what);
}

int main(void) {
    if (!hf_setup(tmp, sizeof tmp, "es_convert")) return test_summary();
    for (int i = 0; i < hf_n_cases; i++) run_good(i);
    char src[300];
    snprintf(src, sizeof src, "%s/bad.gguf", tmp);
    if (sh("%s --quiet --preset v3 -o %s%s", test_build_path("gen_model"), src, "") == 0)
        for (int i = 0; i < hf_n_bad_cases; i++) run_bad(src, i);
    else
        CHECK(0, "gen_model failed: %s", out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    test_run_cmd(cmd, out, sizeof out);
    return test_summary();
}
