/* cmd_serve.c — `edgeseek serve`: parses the options of the OpenAI-compatible
 * HTTP server and hands them to server/ (srv_main), which the build links
 * only when civetweb and cJSON are present (ES_HAVE_SERVER); without them
 * the command says which packages the build lacks. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "edgeseek.h"
#ifdef ES_HAVE_SERVER
#include "server.h"
#endif

static void usage_serve(FILE *f) {
    fprintf(f,
            "usage: edgeseek serve -m MODEL [options]\n"
            "An OpenAI-compatible HTTP server: POST /v1/chat/completions, /v1/completions, /tokenize,\n"
            "/detokenize; GET /v1/models, /health, /metrics, and a chat page at /.\n"
            "  --host ADDR   address to listen on (default 127.0.0.1: this machine only)\n"
            "  --port N      port (default 8080)\n"
            "  -np N         slots: requests generated at once, batched in one pass (default 4)\n"
            "  -c CTX        context of each slot in tokens (default: min(training context, 4096))\n"
            "  -t THREADS    worker threads (default: physical cores; capped at the usable CPUs)\n"
            "  --numa MODE   off | shard | replicate (default shard; a no-op on one node)\n"
            "  --api-key KEY require 'Authorization: Bearer KEY' on every endpoint but /health and /\n"
            "  --api-key-file F  the key from the first line of a file (keeps it out of ps)\n"
            "  --reasoning-format deepseek|none  deepseek (default): the text up to </think> is\n"
            "                message.reasoning_content; none: all of it is content\n"
            "  --alias NAME  the model's name in answers (default: the file's name)\n"
            "  --kv-type T   f32 | f16 | bf16 | q8_0: storage of every slot's latent KV cache (default f16)\n"
            "  --mtp         speculative decoding with the model's MTP block, every slot's drafts verified\n"
            "                in the slots' one pass: the same text at temperature 0\n"
            "  --slot-save-path DIR  allow POST /slots/ID?action=save|restore {\"filename\": NAME}: a slot's\n"
            "                cache to or from DIR/NAME (a session file, as run --session writes)\n"
            "limits:\n"
            "  --max-body BYTES    largest request body, K/M suffixes (default 8M; 413 beyond)\n"
            "  --max-header BYTES  largest request header block (default 16384)\n"
            "  --max-conn N        connections served at once (default 64; 503 with Retry-After beyond)\n"
            "  --idle-timeout S    drop a client silent this long (default 30)\n"
            "  --request-timeout S most time one request may generate (default 600)\n"
            "  --queue N           requests waiting for a slot (default 64; 503 with Retry-After beyond)\n"
            "  --prefill-chunk N   prompt tokens per scheduler step (default 256)\n"
            "  --keepalive S       SSE comment after this long without text (default 5)\n"
            CLI_PAGING_USAGE);
}

#ifdef ES_HAVE_SERVER
static int read_key_file(const char *path, char *key, size_t cap) {
    char *buf;
    size_t len;
    if (cli_read_file(path, &buf, &len) != 0) return -1;
    size_t n = strcspn(buf, "\r\n");
    while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\t')) n--;
    int rc = -1;
    if (n == 0) fprintf(stderr, "edgeseek: %s: the first line (the API key) is empty\n", path);
    else if (n >= cap) fprintf(stderr, "edgeseek: %s: the API key is over %zu bytes\n", path, cap - 1);
    else {
        memcpy(key, buf, n);
        key[n] = 0;
        rc = 0;
    }
    memset(buf, 0, len);
    free(buf);
    return rc;
}

#endif

int cmd_serve(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage_serve(stdout); return 0; }
#ifndef ES_HAVE_SERVER
    fprintf(stderr, "edgeseek: this build has no server support: install libcivetweb-dev and libcjson-dev"
                    " (Debian), then rebuild\n");
    return 1;
#else
    srv_opts o;
    srv_opts_default(&o);
    const char *key = NULL, *key_file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int po = cli_paging_opt("serve", argc, argv, &i, &o.lp);
        if (po < 0) return 2;
        if (po) continue;
        if (!strcmp(a, "--mtp")) { o.mtp = 1; continue; }
        if (i + 1 >= argc) return cli_usage_error(usage_serve, "edgeseek serve: %s needs a value\n", a);
        const char *v = argv[++i];
        long l = 0;
        int bad = 0;
        if (!strcmp(a, "-m")) o.model_path = v;
        else if (!strcmp(a, "--host")) o.host = v;
        else if (!strcmp(a, "--alias")) o.alias = v;
        else if (!strcmp(a, "--kv-type")) bad = cli_parse_kv_type(v, &o.kv_type);
        else if (!strcmp(a, "--slot-save-path")) o.slot_save_path = v;
        else if (!strcmp(a, "--api-key")) key = v;
        else if (!strcmp(a, "--api-key-file")) key_file = v;
        else if (!strcmp(a, "--port")) { bad = cli_parse_int(a, v, 0, 65535, &l); o.port = (int)l; }
        else if (!strcmp(a, "-np")) { bad = cli_parse_int(a, v, 1, 256, &l); o.n_slots = (int)l; }
        else if (!strcmp(a, "-c")) { bad = cli_parse_int(a, v, 2, 1L << 30, &l); o.n_ctx = (int)l; }
        else if (!strcmp(a, "-t")) { bad = cli_parse_int(a, v, 1, ES_MAX_THREADS, &l); o.n_threads = (int)cli_cap_threads(l); }
        else if (!strcmp(a, "--numa")) bad = cli_parse_numa(v, &o.lp.numa);
        else if (!strcmp(a, "--max-conn")) { bad = cli_parse_int(a, v, 1, 10000, &l); o.max_conn = (int)l; }
        else if (!strcmp(a, "--max-header")) { bad = cli_parse_int(a, v, 1024, 1 << 20, &l); o.max_header = (int)l; }
        else if (!strcmp(a, "--idle-timeout")) { bad = cli_parse_int(a, v, 1, 86400, &l); o.idle_timeout_ms = (int)l * 1000; }
        else if (!strcmp(a, "--request-timeout")) { bad = cli_parse_int(a, v, 1, 864000, &l); o.request_timeout_s = (int)l; }
        else if (!strcmp(a, "--queue")) { bad = cli_parse_int(a, v, 0, 100000, &l); o.queue = (int)l; }
        else if (!strcmp(a, "--prefill-chunk")) { bad = cli_parse_int(a, v, 1, 1 << 20, &l); o.chunk = (int)l; }
        else if (!strcmp(a, "--keepalive")) { bad = cli_parse_int(a, v, 1, 3600, &l); o.keepalive_ms = (int)l * 1000; }
        else if (!strcmp(a, "--max-body")) {
            int64_t b;
            if (es_parse_size(v, &b) != ES_OK || b < 1024 || b > (1LL << 31)) {
                fprintf(stderr, "edgeseek: --max-body expects a size from 1K to 2G, got '%s'\n", v);
                return 2;
            }
            o.max_body = (long)b;
        } else if (!strcmp(a, "--reasoning-format")) {
            if (!strcmp(v, "deepseek")) o.reasoning = 1;
            else if (!strcmp(v, "none")) o.reasoning = 0;
            else return cli_usage_error(NULL, "edgeseek serve: --reasoning-format expects deepseek or none, got '%s'\n", v);
        } else return cli_usage_error(usage_serve, "edgeseek serve: unknown option %s\n", a);
        if (bad) return 2;
    }
    if (!o.model_path) return cli_usage_error(usage_serve, "edgeseek serve: -m MODEL is required\n");
    struct stat sb;
    if (o.slot_save_path) {
        const char *why = stat(o.slot_save_path, &sb) != 0 ? strerror(errno) : !S_ISDIR(sb.st_mode) ? "not a directory" : NULL;
        if (why) {
            fprintf(stderr, "edgeseek: --slot-save-path %s: %s\n", o.slot_save_path, why);
            return 1;
        }
    }
    if (key && key_file) return cli_usage_error(NULL, "edgeseek serve: give --api-key or --api-key-file, not both\n");
    if (key) {
        if (!key[0] || strlen(key) >= sizeof o.api_key)
            return cli_usage_error(NULL, "edgeseek serve: --api-key must be 1 to %zu bytes\n", sizeof o.api_key - 1);
        snprintf(o.api_key, sizeof o.api_key, "%s", key);
    }
    if (key_file && read_key_file(key_file, o.api_key, sizeof o.api_key) != 0) return 1;
    /* the tests' slow machine: every scheduler step lasts at least this long,
     * the model's load starts this late */
    if (cli_env_ms("EDGESEEK_SERVE_STEP_MS", &o.step_ms) != 0 || cli_env_ms("EDGESEEK_SERVE_LOAD_MS", &o.load_ms) != 0) return 2;
    return srv_main(&o);
#endif
}
