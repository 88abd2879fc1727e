/* request.c — owns the parsing of the OpenAI request bodies of
 * /v1/chat/completions and /v1/completions (request.h): field by field,
 * with a 400 message for a wrong type, a value out of range, n other than
 * 1, an empty message list or an option edgeseek does not implement.
 * Unknown fields are ignored, as OpenAI's own server does with fields newer
 * than a client. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "request.h"

typedef struct pctx {
    char *err;
    size_t errlen;
    const char **param;
} pctx;

static int fail(pctx *c, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    if (c->param) *c->param = param;
    return -1;
}

/* The field, or NULL when absent or null (optional fields may be null). */
static const cJSON *field(const cJSON *o, const char *name) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    return f && !cJSON_IsNull(f) ? f : NULL;
}

static int get_number(pctx *c, const cJSON *o, const char *name, double lo, double hi, double *out) {
    const cJSON *f = field(o, name);
    if (!f) return 0;
    if (!cJSON_IsNumber(f)) return fail(c, name, "'%s' must be a number", name);
    double v = f->valuedouble;
    if (!(v >= lo && v <= hi)) return fail(c, name, "'%s' must be between %g and %g, got %g", name, lo, hi, v);
    *out = v;
    return 0;
}

static int get_int(pctx *c, const cJSON *o, const char *name, double lo, double hi, int64_t *out, int *present) {
    const cJSON *f = field(o, name);
    if (!f) return 0;
    if (!cJSON_IsNumber(f) || f->valuedouble != floor(f->valuedouble))
        return fail(c, name, "'%s' must be an integer", name);
    double v = f->valuedouble;
    if (!(v >= lo && v <= hi)) return fail(c, name, "'%s' must be between %.0f and %.0f, got %.0f", name, lo, hi, v);
    *out = (int64_t)v;
    if (present) *present = 1;
    return 0;
}

static int get_bool(pctx *c, const cJSON *o, const char *name, int *out) {
    const cJSON *f = field(o, name);
    if (!f) return 0;
    if (!cJSON_IsBool(f)) return fail(c, name, "'%s' must be a boolean", name);
    *out = cJSON_IsTrue(f) ? 1 : 0;
    return 0;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

/* A message's content: a string, or a list of text parts (joined with a
 * newline); null only for an assistant turn. */
static int get_content(pctx *c, const cJSON *m, size_t i, const char *role, char **out) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (!f || cJSON_IsNull(f)) {
        if (strcmp(role, "assistant") != 0) return fail(c, "messages", "messages[%zu] has no content", i);
        *out = dup_str("");
        return *out ? 0 : fail(c, NULL, "out of memory");
    }
    if (cJSON_IsString(f)) {
        *out = dup_str(f->valuestring);
        return *out ? 0 : fail(c, NULL, "out of memory");
    }
    if (!cJSON_IsArray(f))
        return fail(c, "messages", "messages[%zu].content must be a string or a list of text parts", i);
    size_t total = 1;
    const cJSON *p;
    size_t k = 0;
    cJSON_ArrayForEach(p, f) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsObject(p) || !cJSON_IsString(type))
            return fail(c, "messages", "messages[%zu].content[%zu] must be an object with a 'type'", i, k);
        if (strcmp(type->valuestring, "text") != 0)
            return fail(c, "messages", "messages[%zu].content[%zu] is of type '%.40s'; only text parts are supported",
                        i, k, type->valuestring);
        if (!cJSON_IsString(text))
            return fail(c, "messages", "messages[%zu].content[%zu].text must be a string", i, k);
        total += strlen(text->valuestring) + 1;
        k++;
    }
    char *s = malloc(total);
    if (!s) return fail(c, NULL, "out of memory");
    size_t n = 0;
    k = 0;
    cJSON_ArrayForEach(p, f) {
        const char *t = cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring;
        if (k++) s[n++] = '\n';
        size_t l = strlen(t);
        memcpy(s + n, t, l);
        n += l;
    }
    s[n] = 0;
    *out = s;
    return 0;
}

static int get_messages(pctx *c, const cJSON *root, srv_request *r) {
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!ms || cJSON_IsNull(ms)) return fail(c, "messages", "'messages' is required");
    if (!cJSON_IsArray(ms)) return fail(c, "messages", "'messages' must be a list");
    int n = cJSON_GetArraySize(ms);
    if (n <= 0) return fail(c, "messages", "'messages' must not be empty");
    r->msgs = calloc((size_t)n, sizeof *r->msgs);
    if (!r->msgs) return fail(c, NULL, "out of memory");
    const cJSON *m;
    cJSON_ArrayForEach(m, ms) {
        size_t i = r->n_msgs;
        if (!cJSON_IsObject(m)) return fail(c, "messages", "messages[%zu] must be an object", i);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role)) return fail(c, "messages", "messages[%zu].role must be a string", i);
        const char *rs = role->valuestring;
        if (!strcmp(rs, "developer")) rs = "system";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant") && strcmp(rs, "tool"))
            return fail(c, "messages", "messages[%zu].role '%.40s' is not one of system, developer, user, assistant,"
                        " tool", i, rs);
        /* earlier thoughts sent back are accepted and dropped, as DeepSeek's
         * template drops them; it must still be text when present */
        const cJSON *rc = field(m, "reasoning_content");
        if (rc && !cJSON_IsString(rc))
            return fail(c, "messages", "messages[%zu].reasoning_content must be a string", i);
        const cJSON *tc = field(m, "tool_calls");
        if (tc && (!cJSON_IsArray(tc) || cJSON_GetArraySize(tc) > 0))
            return fail(c, "messages", "messages[%zu].tool_calls: tool calls are not supported", i);
        r->msgs[i].role = dup_str(rs);
        r->n_msgs++;
        if (!r->msgs[i].role) return fail(c, NULL, "out of memory");
        if (get_content(c, m, i, rs, &r->msgs[i].content) != 0) return -1;
    }
    return 0;
}

static int get_prompt(pctx *c, const cJSON *root, srv_request *r) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (!p || cJSON_IsNull(p)) return fail(c, "prompt", "'prompt' is required");
    if (cJSON_IsArray(p)) { /* a list of one string */
        if (cJSON_GetArraySize(p) != 1 || !cJSON_IsString(cJSON_GetArrayItem(p, 0)))
            return fail(c, "prompt", "'prompt' must be a string (or a list of exactly one string)");
        p = cJSON_GetArrayItem(p, 0);
    }
    if (!cJSON_IsString(p)) return fail(c, "prompt", "'prompt' must be a string");
    r->prompt = dup_str(p->valuestring);
    return r->prompt ? 0 : fail(c, NULL, "out of memory");
}

static int add_stop(pctx *c, srv_request *r, const cJSON *s) {
    if (!cJSON_IsString(s)) return fail(c, "stop", "'stop' must be a string or a list of strings");
    size_t l = strlen(s->valuestring);
    if (l == 0) return fail(c, "stop", "a stop string must not be empty");
    if (l > SRV_MAX_STOP_LEN) return fail(c, "stop", "a stop string may have at most %d bytes", SRV_MAX_STOP_LEN);
    if (r->n_stop >= SRV_MAX_STOP) return fail(c, "stop", "at most %d stop strings", SRV_MAX_STOP);
    r->stop[r->n_stop] = dup_str(s->valuestring);
    if (!r->stop[r->n_stop]) return fail(c, NULL, "out of memory");
    r->n_stop++;
    return 0;
}

/* Options edgeseek does not implement: present with a value that would
 * change the answer is refused rather than ignored. */
static int unsupported(pctx *c, const cJSON *root) {
    static const char *const zero_numbers[] = {"frequency_penalty", "presence_penalty"};
    for (size_t i = 0; i < sizeof zero_numbers / sizeof *zero_numbers; i++) {
        double v = 0;
        if (get_number(c, root, zero_numbers[i], -2, 2, &v) != 0) return -1;
        if (v != 0) return fail(c, zero_numbers[i], "'%s' is not supported (only 0)", zero_numbers[i]);
    }
    int b = 0;
    if (get_bool(c, root, "logprobs", &b) != 0) return -1;
    if (b) return fail(c, "logprobs", "'logprobs' is not supported");
    const cJSON *t = field(root, "tools");
    if (t && (!cJSON_IsArray(t) || cJSON_GetArraySize(t) > 0)) return fail(c, "tools", "'tools' is not supported");
    const cJSON *rf = field(root, "response_format");
    if (rf) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rf, "type");
        if (!cJSON_IsObject(rf) || !cJSON_IsString(ty) || strcmp(ty->valuestring, "text") != 0)
            return fail(c, "response_format", "'response_format' other than {\"type\":\"text\"} is not supported");
    }
    return 0;
}

int srv_request_parse(const char *body, size_t len, int kind, srv_request *out, char *err, size_t errlen,
                      const char **param) {
    pctx c = {err, errlen, param};
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->max_tokens = -1;
    out->temperature = 0.8;
    out->top_p = 0.95;
    out->min_p = 0.05;
    out->top_k = 40;
    if (param) *param = NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root) return fail(&c, NULL, "the body is not valid JSON");
    int rc = -1;
    if (end) {
        while (end < body + len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t')) end++;
        if (end < body + len) { fail(&c, NULL, "the body is not valid JSON (text after the value)"); goto done; }
    }
    if (!cJSON_IsObject(root)) { fail(&c, NULL, "the body must be a JSON object"); goto done; }
    const cJSON *model = field(root, "model");
    if (model && !cJSON_IsString(model)) { fail(&c, "model", "'model' must be a string"); goto done; }
    int64_t n = 1, mt = -1, tk = 40, seed = 0;
    int have = 0;
    if (get_int(&c, root, "n", -1e18, 1e18, &n, NULL) != 0) goto done;
    if (n != 1) { fail(&c, "n", "'n' must be 1 (one choice per request), got %lld", (long long)n); goto done; }
    if (get_int(&c, root, "max_tokens", 1, 1e9, &mt, NULL) != 0) goto done;
    if (get_int(&c, root, "max_completion_tokens", 1, 1e9, &mt, NULL) != 0) goto done;
    out->max_tokens = mt;
    if (get_number(&c, root, "temperature", 0, 2, &out->temperature) != 0) goto done;
    if (get_number(&c, root, "top_p", 0, 1, &out->top_p) != 0) goto done;
    if (get_number(&c, root, "min_p", 0, 1, &out->min_p) != 0) goto done;
    if (get_int(&c, root, "top_k", 0, 1e9, &tk, NULL) != 0) goto done;
    out->top_k = (int)tk;
    if (get_int(&c, root, "seed", -9.2e18, 9.2e18, &seed, &have) != 0) goto done;
    out->has_seed = have;
    out->seed = (uint64_t)seed;
    if (get_bool(&c, root, "stream", &out->stream) != 0) goto done;
    if (get_bool(&c, root, "ignore_eos", &out->ignore_eos) != 0) goto done;
    const cJSON *so = field(root, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so)) { fail(&c, "stream_options", "'stream_options' must be an object"); goto done; }
        if (get_bool(&c, so, "include_usage", &out->include_usage) != 0) goto done;
    }
    const cJSON *stop = field(root, "stop");
    if (stop && cJSON_IsArray(stop)) {
        const cJSON *s;
        cJSON_ArrayForEach(s, stop) if (add_stop(&c, out, s) != 0) goto done;
    } else if (stop && add_stop(&c, out, stop) != 0) {
        goto done;
    }
    if (unsupported(&c, root) != 0) goto done;
    if (kind == SRV_REQ_CHAT ? get_messages(&c, root, out) : get_prompt(&c, root, out)) goto done;
    rc = 0;
done:
    cJSON_Delete(root);
    if (rc != 0) srv_request_free(out);
    return rc;
}

void srv_request_free(srv_request *r) {
    for (size_t i = 0; i < r->n_msgs; i++) {
        free(r->msgs[i].role);
        free(r->msgs[i].content);
    }
    free(r->msgs);
    free(r->prompt);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    memset(r, 0, sizeof *r);
}
