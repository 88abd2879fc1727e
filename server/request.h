/* request.h — the server's request parsing: an OpenAI request body (JSON)
 * to a plain struct, with every wrong type, range or unsupported option
 * refused with the message a 400 answer carries.  Needs cJSON; nothing here
 * touches the model, so the fuzz harness (fuzz/fuzz_request.c) and the
 * tests run it alone. */
#ifndef ES_SERVER_REQUEST_H
#define ES_SERVER_REQUEST_H

#include <stddef.h>
#include <stdint.h>

enum { SRV_REQ_CHAT = 0, SRV_REQ_COMPLETION = 1 };
#define SRV_MAX_STOP 16
#define SRV_MAX_STOP_LEN 256

typedef struct srv_msg {
    char *role;    /* system, user, assistant, tool ("developer" becomes system) */
    char *content; /* text parts joined; reasoning_content is dropped */
} srv_msg;

typedef struct srv_request {
    int kind;            /* SRV_REQ_* */
    srv_msg *msgs;       /* chat */
    size_t n_msgs;
    char *prompt;        /* completion */
    int64_t max_tokens;  /* -1: until the context is full */
    double temperature, top_p, min_p;
    int top_k;
    int has_seed;
    uint64_t seed;
    char *stop[SRV_MAX_STOP];
    int n_stop;
    int stream, include_usage;
    int ignore_eos;      /* generate past the end-of-sentence token (llama-server's field) */
} srv_request;

/* Parses body (len bytes, need not be NUL-terminated) as a request of kind.
 * 0, or -1 with a one-line message in err (what a 400 answer says; *param
 * names the field, or NULL).  On success free with srv_request_free. */
int srv_request_parse(const char *body, size_t len, int kind, srv_request *out, char *err, size_t errlen,
                      const char **param);
void srv_request_free(srv_request *r);

#endif
