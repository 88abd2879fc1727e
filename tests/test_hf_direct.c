/* test_hf_direct.c — `edgeseek ... -m HF_DIR`: a Hugging Face checkpoint
 * directory run as it is (convert/hf_direct.c, the FP8_B128 kernels), on
 * synthetic checkpoints (build/gen_model writes a GGUF, build/gen_hf the
 * checkpoint and --ref, the GGUF of the weights the checkpoint holds,
 * dequantised to F32).
 *
 * Covers, on every SIMD path this CPU runs (EDGESEEK_SIMD):
 *   - FP8 e4m3 with 128x128 block scales (partial edge blocks), V3-style
 *     (query compression, sigmoid routing, gate bias, groups, YaRN, an MTP
 *     layer, left out), 3 shards: the logits of a prefill within 5e-5 of
 *     the F32 reference on the same path (the float64-checked F32 kernels),
 *     and of the F32 GGUF `edgeseek convert` makes of the checkpoint;
 *   - BF16, V2-Lite- and V2-style (groups, MTP), 2 and 4 shards: within 5e-5
 *     of the BF16 GGUF `edgeseek convert` makes, and of the reference;
 *   - the tokenizer from tokenizer.json: the reference's token ids;
 *   - `info` lists the FP8_B128 tensors; `run` generates;
 *   - FP8 blocks other than 128x128, and --mem-budget (paging works over
 *     GGUF files only), are refused with a message;
 *   - every malformed checkpoint test_convert has (missing shard, tensor
 *     missing or twice, dtype, shape, truncated shard, malformed or
 *     oversized header, missing block scale, unknown architecture) fails to
 *     load with exit status 1 and one line naming the file and the tensor.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgeseek.h"
#include "kernels.h"
#include "hfutil.h"
#include "testutil.h"

static char tmp[256];
static char cmd[4096], out[8192];

static const int32_t toks[] = {1, 5, 77, 300, 12, 260, 3, 99, 401, 42, 7, 300};
#define NT ((int)(sizeof toks / sizeof toks[0]))
static const char *const paths[] = {"generic", "avx2", "avx512", "neon"};
#define NPATHS ((int)(sizeof paths / sizeof paths[0]))

/* one line of output, trailing newlines cut */
static void chomp(void) {
    size_t len = strlen(out);
    while (len && out[len - 1] == '\n') out[--len] = 0;
}

/* Logits of toks through `edgeseek logits -m model` on a SIMD path; NULL
 * (with the output in out) when it fails. */
static float *cli_logits(const char *model, const char *simd, size_t n_floats) {
    char file[300];
    snprintf(file, sizeof file, "%s/logits.f32", tmp);
    int len = snprintf(cmd, sizeof cmd, "EDGESEEK_SIMD=%s %s logits -m %s -o %s --tokens ", simd,
                       test_build_path("edgeseek"), model, file);
    for (int i = 0; i < NT; i++) len += snprintf(cmd + len, sizeof cmd - (size_t)len, "%s%d", i ? "," : "", toks[i]);
    snprintf(cmd + len, sizeof cmd - (size_t)len, " 2>&1");
    if (test_run_cmd(cmd, out, sizeof out) != 0) return NULL;
    size_t bytes = 0;
    float *l = test_read_file(file, &bytes);
    unlink(file);
    if (l && bytes != n_floats * sizeof(float)) {
        snprintf(out, sizeof out, "%zu bytes of logits, want %zu", bytes, n_floats * sizeof(float));
        free(l);
        return NULL;
    }
    return l;
}


static void same_tokens(const char *what, const char *hf, const char *ref) {
    static const char *const texts[] = {"the cat sat on the mat, and then? 123456",
                                        "<\xef\xbd\x9cUser\xef\xbd\x9c>Hi there!<think>x</think>"};
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
        char a[4096];
        snprintf(cmd, sizeof cmd, "%s tokenize -m %s --bos -p '%s' 2>&1", test_build_path("edgeseek"), hf, texts[t]);
        int ra = test_run_cmd(cmd, a, sizeof a);
        snprintf(cmd, sizeof cmd, "%s tokenize -m %s --bos -p '%s' 2>&1", test_build_path("edgeseek"), ref, texts[t]);
        int rb = test_run_cmd(cmd, out, sizeof out);
        CHECK(ra == 0 && rb == 0 && strchr(a, ',') && !strcmp(a, out), "%s: text %zu tokenises as %s, the reference as %s",
              what, t, a, out);
    }
}

static void run_good(int i) {
    const hf_case *g = &hf_cases[i];
    char src[300], hf[300], ref[300], conv[300];
    snprintf(src, sizeof src, "%s/g%d.gguf", tmp, i);
    snprintf(hf, sizeof hf, "%s/hf%d", tmp, i);
    snprintf(ref, sizeof ref, "%s/ref%d.gguf", tmp, i);
    snprintf(conv, sizeof conv, "%s/conv%d.gguf", tmp, i);
    if (hf_make_case(g, src, hf, ref, out, sizeof out)) return;
    /* FP8: the F32 GGUF of the checkpoint; BF16: its own precision */
    snprintf(cmd, sizeof cmd, "%s convert --quiet %s %s %s 2>&1", test_build_path("edgeseek"), hf, conv,
             g->fp8 ? "f32" : "");
    int crc = test_run_cmd(cmd, out, sizeof out);
    CHECK(crc == 0, "%s: convert failed: %s", g->what, out);
    int n_vocab = 0;
    for (int p = 0; p < NPATHS; p++) {
        if (!es_simd_supported(paths[p])) {
            SKIP("%s on %s: not available on this CPU/build", g->what, paths[p]);
            continue;
        }
        float *lr = test_logits_on(ref, paths[p], toks, NT, &n_vocab);
        CHECK(lr != NULL, "%s: the reference does not run on %s", g->what, paths[p]);
        if (!lr) continue;
        size_t n = (size_t)n_vocab * NT;
        float *ld = cli_logits(hf, paths[p], n);
        CHECK(ld != NULL, "%s on %s: the directory does not run: %s", g->what, paths[p], out);
        float *lc = crc ? NULL : cli_logits(conv, paths[p], n);
        if (ld) {
            double d = hf_max_diff(ld, lr, n);
            CHECK(d <= 5e-5, "%s on %s: logits differ from the F32 reference by %g", g->what, paths[p], d);
            if (lc) {
                d = hf_max_diff(ld, lc, n);
                CHECK(d <= 5e-5, "%s on %s: logits differ from the converted GGUF's by %g", g->what, paths[p], d);
            }
        }
        /* NUMA placement of the directory's tensors (2 fake nodes): the
         * same logits bit for bit (the determinism rule) */
        if (ld) {
            char sim[64];
            snprintf(sim, sizeof sim, "%s EDGESEEK_FAKE_NUMA=2", paths[p]);
            float *ln = cli_logits(hf, sim, n);
            CHECK(ln && !memcmp(ln, ld, n * sizeof *ln), "%s on %s: logits with 2 fake NUMA nodes differ", g->what,
                  paths[p]);
            free(ln);
        }
        free(lr), free(ld), free(lc);
    }
    same_tokens(g->what, hf, ref);
    if (i == 0) {
        snprintf(cmd, sizeof cmd, "%s info -m %s 2>&1", test_build_path("edgeseek"), hf);
        int rc = test_run_cmd(cmd, out, sizeof out);
        /* the checkpoint's MTP layer is left out in direct mode: no MTP block */
        CHECK(rc == 0 && strstr(out, "FP8_B128") && !strstr(out, "MTP block"), "info on the directory: %s", out);
        /* its tensors placed on (fake) NUMA nodes as a GGUF's are */
        snprintf(cmd, sizeof cmd, "EDGESEEK_FAKE_NUMA=2 %s bench -m %s -p 4 -n 2 -r 1 -t 2 2>&1", test_build_path("edgeseek"), hf);
        rc = test_run_cmd(cmd, out, sizeof out);
        CHECK(rc == 0 && strstr(out, "dealt round-robin") && !strstr(out, "nothing placed"),
              "NUMA placement of the directory: %s", out);
        snprintf(cmd, sizeof cmd, "%s run -m %s -p 'hello there' -n 6 --temp 0 2>&1", test_build_path("edgeseek"), hf);
        rc = test_run_cmd(cmd, out, sizeof out);
        CHECK(rc == 0 && strstr(out, "generated 6 tokens"), "run on the directory: %s", out);
        snprintf(cmd, sizeof cmd, "%s run -m %s -p hi -n 2 --mem-budget 1M 2>&1", test_build_path("edgeseek"), hf);
        rc = test_run_cmd(cmd, out, sizeof out);
        chomp();
        CHECK(rc == 1 && strstr(out, hf) && strstr(out, "--mem-budget") && !strchr(out, '\n'),
              "paging a directory: status %d, %s", rc, out);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s %s %s %s", hf, ref, conv, src);
    test_run_cmd(cmd, out, sizeof out);
}


/* the malformed checkpoints test_convert has, and FP8 blocks other than
 * DeepSeek's, which only a conversion takes */
static const hf_bad_case blocks = {"fp8 blocks not 128x128", "--block 32 64 --shards 1", NULL, "config.json", "128x128"};

static void run_bad(const char *src, const hf_bad_case *b, int i) {
    char hf[300], opts[512], fmt[1024];
    snprintf(hf, sizeof hf, "%s/bad%d", tmp, i);
    snprintf(opts, sizeof opts, "--fp8 --shards 3 %s", b->gen_hf);
    snprintf(fmt, sizeof fmt, "%s logits -m %%s --tokens 1,2 -o %s/never.f32", test_build_path("edgeseek"), tmp);
    hf_check_bad(b->what, src, hf, opts, b->edit, fmt, b->want1, b->want2, out, sizeof out);
}

int main(void) {
    if (!hf_setup(tmp, sizeof tmp, "es_hfdirect")) return test_summary();
    for (int i = 0; i < hf_n_cases; i++)
        if (hf_cases[i].blocks128) run_good(i); /* other FP8 blocks: a bad case below */
    char src[300];
    snprintf(src, sizeof src, "%s/bad.gguf", tmp);
    snprintf(cmd, sizeof cmd, "%s --quiet --preset v3 -o %s 2>&1", test_build_path("gen_model"), src);
    if (test_run_cmd(cmd, out, sizeof out) == 0)
        for (int i = 0; i <= hf_n_bad_cases; i++) run_bad(src, i < hf_n_bad_cases ? &hf_bad_cases[i] : &blocks, i);
    else
        CHECK(0, "gen_model failed: %s", out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    test_run_cmd(cmd, out, sizeof out);
    return test_summary();
}
