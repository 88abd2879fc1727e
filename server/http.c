/* http.c — owns the HTTP side of `edgeseek serve`: civetweb's options and
 * the request handlers (the OpenAI endpoints /v1/chat/completions,
 * /v1/completions and /v1/models, and /health, /metrics, /tokenize,
 * /detokenize, llama-server's /slots and POST /slots/{id}?action=, the page
 * at /), the API key, the body and connection limits, the answers
 * (JSON, or server-sent events when streamed, with keep-alive comments
 * while a prompt is prefilled), and srv_main: listen, load the model, serve
 * until SIGINT/SIGTERM, then cancel what runs and exit 0. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <civetweb.h>
#include <cjson/cJSON.h>

#include "request.h"
#include "server.h"

/* Workers beyond --max-conn: they answer 503 to the connections over it. */
#define SPARE_WORKERS 4

typedef struct srv {
    const srv_opts *o;
    es_model *m;
    srv_sched *sched;
    atomic_int ready, stopping;
    atomic_int in_flight; /* handlers inside a generation request */
    atomic_int conns;     /* connections open on a worker thread (--max-conn) */
    atomic_ullong next_id;
    char model_name[256];
    long created;
} srv;

void srv_opts_default(srv_opts *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->n_slots = 4;
    o->reasoning = 1;
    o->max_body = 8L << 20;
    o->max_header = 16384;
    o->max_conn = 64;
    o->idle_timeout_ms = 30000;
    o->request_timeout_s = 600;
    o->queue = 64;
    o->chunk = 256;
    o->keepalive_ms = 5000;
}

/* ---- answers ----------------------------------------------------------------- */

static const char *status_text(int st) {
    switch (st) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 501: return "Not Implemented";
    case 413: return "Payload Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

static int send_body(struct mg_connection *c, int st, const char *ctype, const char *body, size_t n,
                     const char *extra) {
    mg_printf(c,
              "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
              "X-Content-Type-Options: nosniff\r\nConnection: close\r\n%s\r\n",
              st, status_text(st), ctype, n, extra ? extra : "");
    mg_write(c, body, n);
    return st;
}

static int send_json(struct mg_connection *c, int st, cJSON *j, const char *extra) {
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!s) return send_body(c, 500, "text/plain", "out of memory\n", 14, NULL);
    int r = send_body(c, st, "application/json", s, strlen(s), extra);
    free(s);
    return r;
}

static const char *error_type(int st) {
    switch (st) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 501: return "not_supported_error";
    case 500: return "server_error";
    case 503: return "unavailable_error";
    default: return "invalid_request_error";
    }
}

/* OpenAI's error shape: {"error":{"message","type","param","code"}}. */
static cJSON *error_obj(int st, const char *param, const char *msg) {
    cJSON *e = cJSON_CreateObject(), *r = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", error_type(st));
    if (param) cJSON_AddStringToObject(e, "param", param);
    else cJSON_AddNullToObject(e, "param");
    cJSON_AddNumberToObject(e, "code", st);
    cJSON_AddItemToObject(r, "error", e);
    return r;
}

static int send_error(struct mg_connection *c, int st, const char *param, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return send_json(c, st, error_obj(st, param, msg), st == 503 ? "Retry-After: 1\r\n" : NULL);
}

/* ---- request plumbing ----------------------------------------------------------- */

/* Constant time in the key's content: every byte of the expected key is
 * compared whatever the given one holds. */
static int key_ok(const char *want, const char *given) {
    size_t lw = strlen(want), lg = strlen(given);
    unsigned diff = (unsigned)(lw ^ lg);
    for (size_t i = 0; i < lw; i++) diff |= (unsigned char)want[i] ^ (unsigned char)(i < lg ? given[i] : 0);
    return diff == 0;
}

static int authorised(const srv *S, struct mg_connection *c) {
    if (!S->o->api_key[0]) return 1;
    const char *h = mg_get_header(c, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    h += 7;
    while (*h == ' ') h++;
    return key_ok(S->o->api_key, h);
}

/* Reads the body whole; -1 after an answer was sent (413, or a client that
 * stopped sending). */
static int read_body(const srv *S, struct mg_connection *c, char **out, size_t *len) {
    const struct mg_request_info *ri = mg_get_request_info(c);
    long long cl = ri->content_length;
    if (cl > S->o->max_body) {
        send_error(c, 413, NULL, "the request body is %lld bytes; the most this server accepts is %ld", cl,
                   S->o->max_body);
        return -1;
    }
    size_t cap = cl >= 0 ? (size_t)cl : 65536, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) { send_error(c, 500, NULL, "out of memory"); return -1; }
    for (;;) {
        if (n == cap) {
            if (cl >= 0) break;
            if (cap >= (size_t)S->o->max_body) {
                free(buf);
                send_error(c, 413, NULL, "the request body is over %ld bytes, the most this server accepts",
                           S->o->max_body);
                return -1;
            }
            size_t nc = cap * 2 > (size_t)S->o->max_body + 1 ? (size_t)S->o->max_body + 1 : cap * 2;
            char *t = realloc(buf, nc + 1);
            if (!t) { free(buf); send_error(c, 500, NULL, "out of memory"); return -1; }
            buf = t;
            cap = nc;
        }
        int r = mg_read(c, buf + n, cap - n);
        if (r <= 0) break;
        n += (size_t)r;
    }
    if (cl >= 0 && n < (size_t)cl) {
        free(buf);
        send_error(c, 400, NULL, "the request body ended after %zu of its %lld bytes (or the client was too slow)",
                   n, cl);
        return -1;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

static cJSON *parse_obj(struct mg_connection *c, const char *body, size_t n) {
    cJSON *j = cJSON_ParseWithLength(body, n);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        send_error(c, 400, NULL, "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* ---- simple endpoints ------------------------------------------------------------- */

static int h_models(srv *S, struct mg_connection *c) {
    cJSON *r = cJSON_CreateObject(), *d = cJSON_AddArrayToObject(r, "data"), *m = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "object", "list");
    cJSON_AddStringToObject(m, "id", S->model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)S->created);
    cJSON_AddStringToObject(m, "owned_by", "edgeseek");
    cJSON_AddNumberToObject(m, "n_ctx", srv_sched_n_ctx(S->sched));
    cJSON_AddItemToArray(d, m);
    return send_json(c, 200, r, NULL);
}

static int h_metrics(srv *S, struct mg_connection *c) {
    srv_stats st;
    srv_sched_stats(S->sched, &st);
    char b[4096];
    int n = snprintf(b, sizeof b,
        "# HELP edgeseek_prompt_tokens_total Prompt tokens evaluated (prefill; reused cached tokens not counted).\n"
        "# TYPE edgeseek_prompt_tokens_total counter\nedgeseek_prompt_tokens_total %llu\n"
        "# HELP edgeseek_cached_prompt_tokens_total Prompt tokens reused from a slot's cache.\n"
        "# TYPE edgeseek_cached_prompt_tokens_total counter\nedgeseek_cached_prompt_tokens_total %llu\n"
        "# HELP edgeseek_tokens_generated_total Tokens generated.\n"
        "# TYPE edgeseek_tokens_generated_total counter\nedgeseek_tokens_generated_total %llu\n"
        "# HELP edgeseek_requests_total Generation requests accepted.\n"
        "# TYPE edgeseek_requests_total counter\nedgeseek_requests_total %llu\n"
        "# HELP edgeseek_prompt_tokens_per_second Prompt tokens per second of prefill steps.\n"
        "# TYPE edgeseek_prompt_tokens_per_second gauge\nedgeseek_prompt_tokens_per_second %.3f\n"
        "# HELP edgeseek_generated_tokens_per_second Generated tokens per second of decode-only steps.\n"
        "# TYPE edgeseek_generated_tokens_per_second gauge\nedgeseek_generated_tokens_per_second %.3f\n"
        "# HELP edgeseek_slots_busy Slots generating now.\n"
        "# TYPE edgeseek_slots_busy gauge\nedgeseek_slots_busy %d\n"
        "# HELP edgeseek_slots Slots.\n# TYPE edgeseek_slots gauge\nedgeseek_slots %d\n"
        "# HELP edgeseek_queue_length Requests waiting for a slot.\n"
        "# TYPE edgeseek_queue_length gauge\nedgeseek_queue_length %d\n",
        (unsigned long long)st.prompt_tokens, (unsigned long long)st.cached_tokens,
        (unsigned long long)st.gen_tokens, (unsigned long long)st.requests,
        st.prompt_seconds > 0 ? st.prompt_tokens / st.prompt_seconds : 0.0,
        st.gen_seconds > 0 ? st.gen_tokens / st.gen_seconds : 0.0, st.busy, st.n_slots, st.queued);
    if (st.expert_hit >= 0 && n > 0 && (size_t)n < sizeof b)
        n += snprintf(b + n, sizeof b - (size_t)n,
                      "# HELP edgeseek_expert_cache_hit_ratio Routed-expert accesses served from memory.\n"
                      "# TYPE edgeseek_expert_cache_hit_ratio gauge\nedgeseek_expert_cache_hit_ratio %.4f\n",
                      st.expert_hit);
    size_t kvb = es_model_kv_bytes_per_token_of(S->m, S->o->kv_type);
    if (n > 0 && (size_t)n < sizeof b)
        n += snprintf(b + n, sizeof b - (size_t)n,
                      "# HELP edgeseek_kv_cache_bytes Bytes the slots' KV caches hold, at their type (%s).\n"
                      "# TYPE edgeseek_kv_cache_bytes gauge\nedgeseek_kv_cache_bytes %llu\n"
                      "# HELP edgeseek_kv_cache_bytes_per_token Bytes of KV cache per token, all layers.\n"
                      "# TYPE edgeseek_kv_cache_bytes_per_token gauge\nedgeseek_kv_cache_bytes_per_token %zu\n",
                      es_kv_type_name(S->o->kv_type), (unsigned long long)(st.kv_tokens * kvb), kvb);
    if (st.mtp && n > 0 && (size_t)n < sizeof b)
        n += snprintf(b + n, sizeof b - (size_t)n,
                      "# HELP edgeseek_mtp_drafts_total MTP drafts verified (--mtp), over finished requests.\n"
                      "# TYPE edgeseek_mtp_drafts_total counter\nedgeseek_mtp_drafts_total %llu\n"
                      "# HELP edgeseek_mtp_drafts_accepted_total MTP drafts the main model kept.\n"
                      "# TYPE edgeseek_mtp_drafts_accepted_total counter\nedgeseek_mtp_drafts_accepted_total %llu\n"
                      "# HELP edgeseek_mtp_acceptance_ratio Drafts kept over drafts verified.\n"
                      "# TYPE edgeseek_mtp_acceptance_ratio gauge\nedgeseek_mtp_acceptance_ratio %.4f\n",
                      (unsigned long long)st.mtp_drafted, (unsigned long long)st.mtp_accepted,
                      st.mtp_drafted ? (double)st.mtp_accepted / (double)st.mtp_drafted : 0.0);
    if (n < 0 || (size_t)n >= sizeof b) n = 0;
    return send_body(c, 200, "text/plain; version=0.0.4", b, (size_t)n, NULL);
}

static int h_tokenize(srv *S, struct mg_connection *c, const char *body, size_t len) {
    cJSON *j = parse_obj(c, body, len);
    if (!j) return 400;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "content");
    const cJSON *as = cJSON_GetObjectItemCaseSensitive(j, "add_special");
    const cJSON *ps = cJSON_GetObjectItemCaseSensitive(j, "parse_special");
    if (!cJSON_IsString(t) || (as && !cJSON_IsBool(as)) || (ps && !cJSON_IsBool(ps))) {
        cJSON_Delete(j);
        return send_error(c, 400, "content", "'content' must be a string (add_special, parse_special: booleans)");
    }
    int32_t *ids = NULL;
    size_t n = 0;
    char err[256];
    es_status st = es_tokenize(S->m, t->valuestring, strlen(t->valuestring), cJSON_IsTrue(as),
                               ps ? cJSON_IsTrue(ps) : 1, &ids, &n, err, sizeof err);
    cJSON_Delete(j);
    if (st != ES_OK) return send_error(c, 400, "content", "%s", err);
    cJSON *r = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(r, "tokens");
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    free(ids);
    return send_json(c, 200, r, NULL);
}

static int h_detokenize(srv *S, struct mg_connection *c, const char *body, size_t len) {
    cJSON *j = parse_obj(c, body, len);
    if (!j) return 400;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "tokens"), *e;
    if (!cJSON_IsArray(t)) { cJSON_Delete(j); return send_error(c, 400, "tokens", "'tokens' must be a list of token ids"); }
    srv_buf out = {0};
    es_detok dt = {0};
    char piece[512];
    int nv = es_model_n_vocab(S->m);
    cJSON_ArrayForEach(e, t) {
        double v = cJSON_IsNumber(e) ? e->valuedouble : -1;
        if (!(v >= 0 && v < nv) || v != (double)(int32_t)v) {
            cJSON_Delete(j);
            srv_buf_free(&out);
            return send_error(c, 400, "tokens", "'tokens' must hold token ids from 0 to %d", nv - 1);
        }
        size_t w = es_detok_push(&dt, S->m, (int32_t)v, piece, sizeof piece);
        if (w <= sizeof piece) srv_buf_put(&out, piece, w);
    }
    size_t w = es_detok_flush(&dt, piece, sizeof piece);
    srv_buf_put(&out, piece, w);
    cJSON_Delete(j);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "content", out.p ? out.p : "");
    srv_buf_free(&out);
    return send_json(c, 200, r, NULL);
}

/* ---- generation ---------------------------------------------------------------- */

static const char *finish_name(int f) {
    switch (f) {
    case SRV_FIN_STOP: return "stop";
    case SRV_FIN_LENGTH: return "length";
    default: return "cancelled";
    }
}

static cJSON *usage_obj(const srv *S, const srv_job *j) {
    cJSON *u = cJSON_CreateObject(), *d = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", j->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", j->n_gen);
    cJSON_AddNumberToObject(u, "total_tokens", j->n_prompt + j->n_gen);
    cJSON_AddNumberToObject(d, "cached_tokens", j->n_cached);
    cJSON_AddItemToObject(u, "prompt_tokens_details", d);
    if (S->o->mtp) { /* --mtp: the drafts kept and dropped, in OpenAI's fields for predicted tokens */
        cJSON *c = cJSON_CreateObject();
        cJSON_AddNumberToObject(c, "accepted_prediction_tokens", j->n_accepted);
        cJSON_AddNumberToObject(c, "rejected_prediction_tokens", j->n_drafted - j->n_accepted);
        cJSON_AddItemToObject(u, "completion_tokens_details", c);
    }
    return u;
}

/* The envelope of an answer or a chunk. */
static cJSON *envelope(srv *S, int chat, int chunk, unsigned long long id) {
    cJSON *r = cJSON_CreateObject();
    char ids[64];
    snprintf(ids, sizeof ids, "%s-%llu", chat ? "chatcmpl" : "cmpl", id);
    cJSON_AddStringToObject(r, "id", ids);
    cJSON_AddStringToObject(r, "object", chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion");
    cJSON_AddNumberToObject(r, "created", (double)time(NULL));
    cJSON_AddStringToObject(r, "model", S->model_name);
    cJSON_AddStringToObject(r, "system_fingerprint", "edgeseek");
    return r;
}

/* One choice: delta / message (chat) or text (completion). */
static cJSON *choice(int chat, int stream, const char *reasoning, const char *content, const char *finish,
                     int role) {
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    if (chat) {
        cJSON *m = cJSON_CreateObject();
        if (role || !stream) cJSON_AddStringToObject(m, "role", "assistant");
        if (content) cJSON_AddStringToObject(m, "content", content);
        if (reasoning) cJSON_AddStringToObject(m, "reasoning_content", reasoning);
        cJSON_AddItemToObject(ch, stream ? "delta" : "message", m);
    } else {
        cJSON_AddStringToObject(ch, "text", content ? content : "");
    }
    cJSON_AddNullToObject(ch, "logprobs");
    if (finish) cJSON_AddStringToObject(ch, "finish_reason", finish);
    else cJSON_AddNullToObject(ch, "finish_reason");
    return ch;
}

/* One server-sent event; -1 when the client is gone. */
static int sse(struct mg_connection *c, cJSON *j) {
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!s) return -1;
    size_t n = strlen(s);
    int ok = mg_write(c, "data: ", 6) == 6 && mg_write(c, s, n) == (int)n && mg_write(c, "\n\n", 2) == 2;
    free(s);
    return ok ? 0 : -1;
}

static int sse_delta(srv *S, struct mg_connection *c, int chat, unsigned long long id, const char *r,
                     const char *t, const char *finish, int role) {
    cJSON *e = envelope(S, chat, 1, id), *a = cJSON_AddArrayToObject(e, "choices");
    cJSON_AddItemToArray(a, choice(chat, 1, r, t, finish, role));
    return sse(c, e);
}

static char *dup_range(const srv_buf *b, size_t from) {
    size_t n = b->n - from;
    char *s = malloc(n + 1);
    if (s) {
        if (n) memcpy(s, b->p + from, n);
        s[n] = 0;
    }
    return s;
}

/* After a chat turn, before its answer ends: the conversation's next
 * request starts with this turn as the template renders it (earlier
 * thoughts dropped), and the slot is asked to hold that.  msgs has room for
 * one more message. */
static void after_turn(srv *S, const srv_job *j, es_chat_msg *msgs, size_t n) {
    if (!msgs || (j->finish != SRV_FIN_STOP && j->finish != SRV_FIN_LENGTH)) return;
    msgs[n] = (es_chat_msg){"assistant", j->content.p ? j->content.p : ""};
    int32_t *next = NULL;
    size_t n_next = 0;
    char err[256];
    if (es_chat_tokenize(S->m, msgs, n + 1, 0, &next, &n_next, err, sizeof err) == ES_OK)
        srv_sched_rewrite(S->sched, j, next, (int)n_next);
}

/* Streams the job's text as it comes; the job is done (or the client gone)
 * on return.  Returns 0, or -1 when the client went away. */
static int stream_job(srv *S, struct mg_connection *c, srv_job *j, int chat, unsigned long long id,
                      int include_usage, es_chat_msg *msgs, size_t n_msgs) {
    mg_printf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                 "X-Accel-Buffering: no\r\nConnection: close\r\n\r\n");
    if (chat && sse_delta(S, c, 1, id, NULL, "", NULL, 1) != 0) return -1;
    pthread_mutex_t *mu = srv_sched_lock(S->sched);
    size_t sent_r = 0, sent_c = 0;
    double last = srv_now(), ka = S->o->keepalive_ms / 1000.0;
    for (;;) {
        pthread_mutex_lock(mu);
        while (j->state != SRV_JOB_DONE && j->reasoning.n == sent_r && j->content.n == sent_c &&
               srv_now() < last + ka)
            srv_sched_wait(S->sched, j, last + ka);
        int done = j->state == SRV_JOB_DONE;
        char *r = j->reasoning.n > sent_r ? dup_range(&j->reasoning, sent_r) : NULL;
        char *t = j->content.n > sent_c ? dup_range(&j->content, sent_c) : NULL;
        sent_r = j->reasoning.n;
        sent_c = j->content.n;
        pthread_mutex_unlock(mu);
        int bad = 0;
        if (r) bad |= sse_delta(S, c, chat, id, r, NULL, NULL, 0);
        if (t && !bad) bad |= sse_delta(S, c, chat, id, NULL, t, NULL, 0);
        if (!r && !t && !done) bad |= mg_write(c, ": keep-alive\n\n", 14) != 14;
        free(r);
        free(t);
        if (bad) return -1;
        last = srv_now();
        if (done) break;
    }
    after_turn(S, j, msgs, n_msgs);
    if (j->finish == SRV_FIN_ERROR) {
        if (sse(c, error_obj(500, NULL, j->err[0] ? j->err : "generation failed")) != 0) return -1;
    } else {
        if (sse_delta(S, c, chat, id, NULL, chat ? NULL : "", finish_name(j->finish), 0) != 0) return -1;
        if (include_usage) {
            cJSON *e = envelope(S, chat, 1, id);
            cJSON_AddArrayToObject(e, "choices");
            cJSON_AddItemToObject(e, "usage", usage_obj(S, j));
            if (sse(c, e) != 0) return -1;
        }
    }
    return mg_write(c, "data: [DONE]\n\n", 14) == 14 ? 0 : -1;
}

/* Whether the rendered prompt ends inside an opened think block. */
static int prompt_opens_think(es_model *m, const es_chat_msg *msgs, size_t n) {
    char *txt = NULL, err[64];
    if (es_chat_render(m, msgs, n, 1, &txt, err, sizeof err) != ES_OK) return 0;
    size_t l = strlen(txt);
    while (l > 0 && (txt[l - 1] == '\n' || txt[l - 1] == ' ')) l--;
    int open = l >= 7 && !memcmp(txt + l - 7, "<think>", 7);
    free(txt);
    return open;
}

static int h_generate(srv *S, struct mg_connection *c, const char *body, size_t len, int chat) {
    srv_request rq;
    char err[512];
    const char *param = NULL;
    if (srv_request_parse(body, len, chat ? SRV_REQ_CHAT : SRV_REQ_COMPLETION, &rq, err, sizeof err, &param) != 0)
        return send_error(c, 400, param, "%s", err);
    int rc = 500;
    srv_job job;
    memset(&job, 0, sizeof job);
    es_chat_msg *msgs = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    es_status st;
    if (chat) {
        msgs = calloc(rq.n_msgs + 1, sizeof *msgs);
        if (!msgs) { rc = send_error(c, 500, NULL, "out of memory"); goto done; }
        for (size_t i = 0; i < rq.n_msgs; i++) msgs[i] = (es_chat_msg){rq.msgs[i].role, rq.msgs[i].content};
        st = es_chat_tokenize(S->m, msgs, rq.n_msgs, 1, &ids, &n_ids, err, sizeof err);
        job.think_open = S->o->reasoning && prompt_opens_think(S->m, msgs, rq.n_msgs);
    } else {
        st = es_tokenize(S->m, rq.prompt, strlen(rq.prompt), 1, 0, &ids, &n_ids, err, sizeof err);
    }
    if (st != ES_OK) { rc = send_error(c, 400, chat ? "messages" : "prompt", "%s", err); goto done; }
    int n_ctx = srv_sched_n_ctx(S->sched);
    if (n_ids == 0) { rc = send_error(c, 400, chat ? "messages" : "prompt", "the prompt is empty"); goto done; }
    if ((long)n_ids >= n_ctx) {
        rc = send_error(c, 400, chat ? "messages" : "prompt",
                        "the prompt is %zu tokens; a slot's context holds %d (prompt and at least one generated"
                        " token; see -c)", n_ids, n_ctx);
        goto done;
    }
    job.prompt = ids;
    job.n_prompt = (int)n_ids;
    job.sp = (es_sampler_params){.temperature = (float)rq.temperature, .top_k = rq.top_k, .top_p = (float)rq.top_p,
                                 .min_p = (float)rq.min_p};
    unsigned long long id = atomic_fetch_add(&S->next_id, 1);
    job.sp.seed = rq.has_seed ? rq.seed : (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ id;
    job.max_tokens = rq.max_tokens;
    job.stop = (const char *const *)rq.stop;
    job.n_stop = rq.n_stop;
    job.split_reasoning = chat && S->o->reasoning;
    job.progress = rq.stream;
    job.ignore_eos = rq.ignore_eos;
    job.deadline = srv_now() + S->o->request_timeout_s;
    if (srv_sched_submit(S->sched, &job) != 0) {
        rc = send_error(c, 503, NULL, atomic_load(&S->stopping) ? "the server is shutting down"
                                                                : "every slot is busy and the queue is full; retry later");
        goto done;
    }
    if (rq.stream) {
        rc = 200;
        int gone = stream_job(S, c, &job, chat, id, rq.include_usage, msgs, rq.n_msgs) != 0;
        if (gone) { /* the client went away: its slot is freed now */
            srv_sched_release(S->sched, &job);
            goto done;
        }
    } else {
        pthread_mutex_t *mu = srv_sched_lock(S->sched);
        pthread_mutex_lock(mu);
        while (job.state != SRV_JOB_DONE) srv_sched_wait(S->sched, &job, srv_now() + 3600);
        pthread_mutex_unlock(mu);
        after_turn(S, &job, msgs, rq.n_msgs);
        if (job.finish == SRV_FIN_ERROR) {
            rc = send_error(c, 500, NULL, "%s", job.err[0] ? job.err : "generation failed");
        } else {
            cJSON *e = envelope(S, chat, 0, id), *a = cJSON_AddArrayToObject(e, "choices");
            cJSON_AddItemToArray(a, choice(chat, 0, job.split_reasoning && job.reasoning.n ? job.reasoning.p : NULL,
                                           job.content.p ? job.content.p : "", finish_name(job.finish), 1));
            cJSON_AddItemToObject(e, "usage", usage_obj(S, &job));
            rc = send_json(c, 200, e, NULL);
        }
    }
    srv_sched_release(S->sched, &job);
done:
    free(ids);
    free(msgs);
    srv_request_free(&rq);
    return rc;
}

/* ---- slots ------------------------------------------------------------------------ */

/* GET /slots: each slot's id, context, whether it generates, and the
 * tokens its cache holds. */
static int h_slots(srv *S, struct mg_connection *c) {
    cJSON *a = cJSON_CreateArray();
    int busy, n;
    for (int i = 0; srv_sched_slot_info(S->sched, i, &busy, &n) == 0; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", i);
        cJSON_AddNumberToObject(o, "n_ctx", srv_sched_n_ctx(S->sched));
        cJSON_AddBoolToObject(o, "is_processing", busy);
        cJSON_AddNumberToObject(o, "n_tokens", n);
        cJSON_AddItemToArray(a, o);
    }
    return send_json(c, 200, a, NULL);
}

/* A file name a client may give: 1 to 200 of [A-Za-z0-9._-], not
 * beginning with a dot, so that it names a file in --slot-save-path and
 * nothing outside it (no separator, no "..", no hidden file). */
static int slot_name_ok(const char *f) {
    size_t n = strlen(f);
    if (n == 0 || n > 200 || f[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = f[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

/* POST /slots/{id}?action=save|restore|erase (llama-server's), the file
 * named by the body's "filename" in --slot-save-path. */
static int h_slot_action(srv *S, struct mg_connection *c, const char *id_text, const char *body, size_t len) {
    const struct mg_request_info *ri = mg_get_request_info(c);
    char act[16] = "", err[512];
    const char *q = ri->query_string ? ri->query_string : "";
    if (mg_get_var(q, strlen(q), "action", act, sizeof act) < 0) act[0] = 0;
    int action = !strcmp(act, "save") ? SRV_SLOT_SAVE : !strcmp(act, "restore") ? SRV_SLOT_RESTORE
                 : !strcmp(act, "erase") ? SRV_SLOT_ERASE : -1;
    if (action < 0) return send_error(c, 400, "action", "?action= must be save, restore or erase");
    char *end = NULL;
    long id = strtol(id_text, &end, 10);
    if (!*id_text || *end || id < 0 || id > 100000) return send_error(c, 400, "id_slot", "'%.40s' is not a slot number", id_text);
    char path[4096] = "", fname[256] = "";
    if (action != SRV_SLOT_ERASE) {
        if (!S->o->slot_save_path)
            return send_error(c, 501, NULL, "saving and restoring slots is off: start the server with --slot-save-path DIR");
        cJSON *j = cJSON_ParseWithLength(body, len);
        const cJSON *f = j ? cJSON_GetObjectItemCaseSensitive(j, "filename") : NULL;
        int ok = cJSON_IsString(f) && slot_name_ok(f->valuestring);
        if (ok) snprintf(fname, sizeof fname, "%s", f->valuestring);
        cJSON_Delete(j);
        if (!ok)
            return send_error(c, 400, "filename", "the body must be {\"filename\": NAME}, NAME of 1 to 200 letters, digits,"
                                                  " '.', '_' or '-', not beginning with '.'");
        snprintf(path, sizeof path, "%s/%s", S->o->slot_save_path, fname);
        struct stat sb;
        if (action == SRV_SLOT_RESTORE && lstat(path, &sb) != 0)
            return send_error(c, 404, "filename", "no file '%s' in the slot save directory", fname);
        if (action == SRV_SLOT_RESTORE && !S_ISREG(sb.st_mode))
            return send_error(c, 400, "filename", "'%s' is not a regular file", fname);
    }
    int n = 0;
    double t0 = srv_now();
    int st = srv_sched_slot_action(S->sched, (int)id, action, path, &n, err, sizeof err);
    double ms = (srv_now() - t0) * 1000.0;
    if (st != 200) {
        /* the library's messages name the path; the client knows the file by its name */
        char *at = path[0] ? strstr(err, path) : NULL;
        if (at) {
            size_t lp = strlen(path);
            memmove(at + strlen(fname), at + lp, strlen(at + lp) + 1);
            memcpy(at, fname, strlen(fname));
        }
        return send_error(c, st, st == 404 ? "id_slot" : NULL, "%s", err);
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "id_slot", (double)id);
    if (action == SRV_SLOT_ERASE) {
        cJSON_AddNumberToObject(r, "n_erased", n);
        return send_json(c, 200, r, NULL);
    }
    struct stat sb;
    double bytes = stat(path, &sb) == 0 ? (double)sb.st_size : 0;
    cJSON_AddStringToObject(r, "filename", fname);
    cJSON_AddNumberToObject(r, action == SRV_SLOT_SAVE ? "n_saved" : "n_restored", n);
    cJSON_AddNumberToObject(r, action == SRV_SLOT_SAVE ? "n_written" : "n_read", bytes);
    cJSON *t = cJSON_AddObjectToObject(r, "timings");
    cJSON_AddNumberToObject(t, action == SRV_SLOT_SAVE ? "save_ms" : "restore_ms", ms);
    return send_json(c, 200, r, NULL);
}

/* ---- dispatch ------------------------------------------------------------------- */

static int handler(struct mg_connection *c, void *cbdata) {
    srv *S = cbdata;
    const struct mg_request_info *ri = mg_get_request_info(c);
    /* the spare workers answer at once beyond --max-conn, so that a client
     * learns the server is full instead of waiting for a worker */
    if (atomic_load(&S->conns) > S->o->max_conn)
        return send_error(c, 503, NULL, "the server is serving its most connections at once (--max-conn %d); retry later",
                          S->o->max_conn);
    const char *u = ri->local_uri ? ri->local_uri : "";
    int get = !strcmp(ri->request_method, "GET"), post = !strcmp(ri->request_method, "POST");
    if (!strcmp(u, "/health")) {
        if (!get) return send_error(c, 405, NULL, "use GET");
        if (!atomic_load(&S->ready)) return send_error(c, 503, NULL, "loading the model");
        const char ok[] = "{\"status\":\"ok\"}";
        return send_body(c, 200, "application/json", ok, sizeof ok - 1, NULL);
    }
    if (!strcmp(u, "/") || !strcmp(u, "/index.html")) {
        if (!get) return send_error(c, 405, NULL, "use GET");
        return send_body(c, 200, "text/html; charset=utf-8", (const char *)srv_page_html, srv_page_html_len,
                         "Content-Security-Policy: default-src 'self'; style-src 'self' 'unsafe-inline'; "
                         "script-src 'self' 'unsafe-inline'\r\n");
    }
    if (!authorised(S, c)) return send_error(c, 401, NULL, "a valid API key is required (Authorization: Bearer KEY)");
    if (!atomic_load(&S->ready)) return send_error(c, 503, NULL, "loading the model");
    if (atomic_load(&S->stopping)) return send_error(c, 503, NULL, "the server is shutting down");
    static const char *const posts[] = {"/v1/chat/completions", "/chat/completions", "/v1/completions",
                                        "/completions", "/tokenize", "/detokenize"};
    int which = -1;
    for (int i = 0; i < 6; i++)
        if (!strcmp(u, posts[i])) which = i;
    if (which >= 0) {
        if (!post) return send_error(c, 405, NULL, "use POST");
        char *body;
        size_t len;
        if (read_body(S, c, &body, &len) != 0) return 400;
        int rc;
        atomic_fetch_add(&S->in_flight, 1);
        if (atomic_load(&S->stopping)) rc = send_error(c, 503, NULL, "the server is shutting down");
        else if (which <= 3) rc = h_generate(S, c, body, len, which <= 1);
        else if (which == 4) rc = h_tokenize(S, c, body, len);
        else rc = h_detokenize(S, c, body, len);
        atomic_fetch_sub(&S->in_flight, 1);
        free(body);
        return rc;
    }
    if (!strncmp(u, "/slots/", 7)) {
        if (!post) return send_error(c, 405, NULL, "use POST");
        char *body;
        size_t len;
        if (read_body(S, c, &body, &len) != 0) return 400;
        int rc = h_slot_action(S, c, u + 7, body, len);
        free(body);
        return rc;
    }
    if (!strcmp(u, "/slots")) return get ? h_slots(S, c) : send_error(c, 405, NULL, "use GET");
    if (!strcmp(u, "/v1/models") || !strcmp(u, "/models")) return get ? h_models(S, c) : send_error(c, 405, NULL, "use GET");
    if (!strcmp(u, "/metrics")) return get ? h_metrics(S, c) : send_error(c, 405, NULL, "use GET");
    return send_error(c, 404, NULL, "no such endpoint: %.200s", u);
}

/* Connections on a worker, counted from civetweb's callbacks. */
static int conn_open(const struct mg_connection *c, void **data) {
    srv *S = mg_get_user_data(mg_get_context(c));
    atomic_fetch_add(&S->conns, 1);
    *data = S;
    return 0;
}

static void conn_close(const struct mg_connection *c) {
    srv *S = mg_get_user_data(mg_get_context(c));
    atomic_fetch_sub(&S->conns, 1);
}

static int log_message(const struct mg_connection *c, const char *msg) {
    (void)c;
    fprintf(stderr, "edgeseek serve: %s\n", msg);
    return 1;
}

int srv_main(const srv_opts *o) {
    srv S;
    memset(&S, 0, sizeof S);
    srv_opts eff = *o; /* n_ctx is settled once the model is loaded */
    S.o = &eff;
    S.created = (long)time(NULL);
    atomic_init(&S.ready, 0);
    atomic_init(&S.stopping, 0);
    atomic_init(&S.next_id, 1);
    atomic_init(&S.in_flight, 0);
    atomic_init(&S.conns, 0);
    const char *base = o->alias ? o->alias : strrchr(o->model_path, '/');
    base = o->alias ? o->alias : base ? base + 1 : o->model_path;
    snprintf(S.model_name, sizeof S.model_name, "%s", base);

    /* signals go to sigwait below; every thread started from here on
     * inherits the mask */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    char port[300], threads[32], hdr[32], idle[32];
    int v6 = strchr(o->host, ':') != NULL;
    snprintf(port, sizeof port, v6 ? "[%s]:%d" : "%s:%d", o->host, o->port);
    snprintf(threads, sizeof threads, "%d", o->max_conn + SPARE_WORKERS);
    snprintf(hdr, sizeof hdr, "%d", o->max_header);
    snprintf(idle, sizeof idle, "%d", o->idle_timeout_ms);
    const char *copts[] = {"listening_ports", port, "num_threads", threads, "max_request_size", hdr,
                           "request_timeout_ms", idle, "enable_keep_alive", "no", "tcp_nodelay", "1",
                           "access_control_allow_origin", "", "decode_url", "yes", NULL};
    mg_init_library(v6 ? MG_FEATURES_IPV6 : 0);
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.log_message = log_message;
    cb.init_connection = conn_open;
    cb.connection_close = conn_close;
    struct mg_context *ctx = mg_start(&cb, &S, copts);
    if (!ctx) {
        fprintf(stderr, "edgeseek: cannot listen on %s (in use, or not an address of this machine)\n", port);
        mg_exit_library();
        return 1;
    }
    mg_set_request_handler(ctx, "/", handler, &S);
    struct mg_server_port sp[1];
    if (o->port == 0 && mg_get_server_ports(ctx, 1, sp) == 1) /* the port the system chose */
        snprintf(port, sizeof port, v6 ? "[%s]:%d" : "%s:%d", o->host, sp[0].port);
    fprintf(stderr, "edgeseek serve: listening on http://%s/ (loading %s)\n", port, o->model_path);

    int rc = 1;
    char err[768];
    if (o->load_ms > 0) nanosleep(&(struct timespec){o->load_ms / 1000, (long)(o->load_ms % 1000) * 1000000L}, NULL);
    es_load_params lp = o->lp;
    lp.n_ctx = o->n_ctx;
    lp.kv_type = o->kv_type;   /* the automatic budget leaves room for every slot's cache */
    lp.n_sessions = o->n_slots;
    if (es_model_load(o->model_path, &lp, &S.m, err, sizeof err) != ES_OK) {
        fprintf(stderr, "edgeseek: %s\n", err);
        goto out;
    }
    if (eff.n_ctx <= 0) eff.n_ctx = es_model_n_ctx_train(S.m) < 4096 ? es_model_n_ctx_train(S.m) : 4096;
    if (srv_sched_new(S.m, &eff, &S.sched, err, sizeof err) != ES_OK) {
        fprintf(stderr, "edgeseek: %s\n", err);
        goto out;
    }
    atomic_store(&S.ready, 1);
    fprintf(stderr, "edgeseek serve: ready: %d slots of %d tokens, KV cache %s (%zu bytes/token), model '%s'%s%s\n",
            eff.n_slots, eff.n_ctx, es_kv_type_name(eff.kv_type), es_model_kv_bytes_per_token_of(S.m, eff.kv_type),
            S.model_name, eff.mtp ? ", MTP drafts" : "", eff.api_key[0] ? ", API key required" : "");
    int sig = 0;
    while (sigwait(&sigs, &sig) != 0) {
    }
    fprintf(stderr, "edgeseek serve: %s: stopping (in-flight requests cancelled)\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    atomic_store(&S.stopping, 1);
    srv_sched_stop(S.sched);
    /* the cancelled requests send their last chunk and [DONE] before the
     * connections close (at most 10 s) */
    for (int i = 0; i < 1000 && atomic_load(&S.in_flight) > 0; i++) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    rc = 0;
out:
    mg_stop(ctx); /* waits for the handlers, whose jobs are all ending */
    mg_exit_library();
    srv_sched_free(S.sched);
    es_model_free(S.m);
    return rc;
}
