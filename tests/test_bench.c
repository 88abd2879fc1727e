/* test_bench.c — `edgeseek bench` and what it reports:
 *   - es_model_decode_traffic against the file's own tensor directory: every
 *     tensor in full, except the routed experts (k of E per MoE layer) and
 *     the token embedding (one row); the KV term grows by one token's bytes
 *     per position;
 *   - the CLI: bad flags exit 2 with a message, a missing model exits 1, a
 *     small run prints the table or well-formed JSON with every test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgeseek.h"
#include "gguf.h"
#include "model.h"
#include "testutil.h"

static void test_traffic(const char *path) {
    es_model *m = NULL;
    char err[512];
    if (es_model_load(path, NULL, &m, err, sizeof err) != ES_OK) { CHECK(0, "load: %s", err); return; }
    const es_hparams *hp = &m->hp;
    /* from the tensor directory alone */
    uint64_t want = 0;
    for (uint64_t i = 0; i < m->gguf->n_tensors; i++) {
        const es_gguf_tensor *t = &m->gguf->tensors[i];
        if (strstr(t->name, "_exps.weight")) want += t->nbytes / (uint64_t)hp->n_experts * (uint64_t)hp->n_used;
        else if (!strcmp(t->name, "token_embd.weight")) want += t->nbytes / (uint64_t)hp->n_vocab;
        else want += t->nbytes;
    }
    es_decode_traffic tr;
    es_model_decode_traffic(m, 0, &tr);
    CHECK(tr.weights == want, "decode reads %llu weight bytes; the tensor directory says %llu",
          (unsigned long long)tr.weights, (unsigned long long)want);
    CHECK(tr.weights == tr.attention + tr.dense_ffn + tr.router + tr.shared + tr.routed + tr.output + tr.embedding,
          "the parts add up");
    CHECK(tr.routed > 0 && tr.attention > 0 && tr.output > 0 && tr.embedding > 0, "every part present");
    CHECK(tr.kv == es_model_kv_bytes_per_token(m), "KV at position 0: one token");
    es_decode_traffic t9;
    es_model_decode_traffic(m, 9, &t9);
    CHECK(t9.kv == 10 * es_model_kv_bytes_per_token(m) && t9.weights == tr.weights, "KV at position 9: ten tokens");
    es_model_free(m);
}

static void test_cli(const char *path) {
    const char *bin = test_build_path("edgeseek");
    char cmd[4096], out[65536];
    static const char *bad[] = {"-p x", "-p 1,,2", "-p 1,", "-t 0", "-r 0", "--numa sideways", "--bogus", "-n",
                                "-p 0 -n 0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(cmd, sizeof cmd, "%s bench -m '%s' %s 2>&1", bin, path, bad[i]);
        int rc = test_run_cmd(cmd, out, sizeof out);
        CHECK(rc == 2 && strstr(out, "edgeseek"), "bench %s: exit 2 with a message (got %d: %.200s)", bad[i], rc, out);
    }
    snprintf(cmd, sizeof cmd, "%s bench 2>&1", bin);
    CHECK(test_run_cmd(cmd, out, sizeof out) == 2, "bench without -m: exit 2");
    snprintf(cmd, sizeof cmd, "%s bench -m /nonexistent/model.gguf -p 4 -n 2 -d 0 --no-bw 2>&1", bin);
    CHECK(test_run_cmd(cmd, out, sizeof out) == 1 && strstr(out, "nonexistent"), "missing model: exit 1 naming it");
    snprintf(cmd, sizeof cmd, "%s bench -m '%s' -d 100000 --no-bw 2>&1", bin, path);
    CHECK(test_run_cmd(cmd, out, sizeof out) == 1 && strstr(out, "context"), "depth beyond the training context: exit 1");

    snprintf(cmd, sizeof cmd, "%s bench -m '%s' -p 8,16 -n 4 -d 0,8 -t 1,2 -r 2 --bw-mb 64 2>/dev/null", bin, path);
    int rc = test_run_cmd(cmd, out, sizeof out);
    CHECK(rc == 0, "bench table run: exit %d", rc);
    const char *rows[] = {"| 1 | pp8 |", "| 1 | pp16 |", "| 1 | tg4 |", "| 1 | pp8 @ d8 |", "| 1 | tg4 @ d8 |",
                          "| 2 | pp16 @ d8 |", "| 2 | tg4 @ d8 |", "read bandwidth:", "decode reads per token"};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        CHECK(strstr(out, rows[i]) != NULL, "table has '%s'", rows[i]);

    snprintf(cmd, sizeof cmd, "%s bench -m '%s' -p 8 -n 4 -d 0,8 -t 2 -r 3 --json --no-bw 2>/dev/null", bin, path);
    rc = test_run_cmd(cmd, out, sizeof out);
    CHECK(rc == 0 && out[0] == '{', "bench --json run: exit %d", rc);
    int tests = 0;
    for (const char *p = out; (p = strstr(p, "\"avg_ts\"")); p++) tests++;
    CHECK(tests == 4, "JSON has 4 results (pp8, tg4, at depths 0 and 8): %d", tests);
    CHECK(strstr(out, "\"test\": \"tg4 @ d8\"") && strstr(out, "\"weight_bytes_per_token\"") &&
              strstr(out, "\"peak_rss_bytes\"") && strstr(out, "\"decode_traffic\""),
          "JSON fields present");
    /* balanced braces and brackets: a cheap well-formedness check */
    int depth = 0, ok = 1;
    for (const char *p = out; *p; p++) {
        if (*p == '{' || *p == '[') depth++;
        if (*p == '}' || *p == ']') ok &= --depth >= 0;
    }
    CHECK(ok && depth == 0, "JSON brackets balance");
}

int main(void) {
    const char *gen = test_build_path("gen_model");
    char genp[4096];
    snprintf(genp, sizeof genp, "%s", gen);
    if (access(genp, X_OK) != 0) {
        SKIP("%s not built: bench tests skipped", genp);
        return test_summary();
    }
    char dir[] = "/tmp/es_bench_XXXXXX";
    if (!mkdtemp(dir)) { CHECK(0, "mkdtemp"); return test_summary(); }
    char path[256], cmd[8192];
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    snprintf(cmd, sizeof cmd,
             "'%s' --preset tiny --type q8_0 --seed 41 --q-lora 32 --gating sigmoid --gate-bias --expert-norm "
             "--quiet --threads 1 -o '%s' > /dev/null 2>&1",
             genp, path);
    if (system(cmd) != 0) {
        CHECK(0, "gen_model failed");
    } else {
        test_traffic(path);
        test_cli(path);
    }
    remove(path);
    rmdir(dir);
    return test_summary();
}
