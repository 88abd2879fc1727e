/* fuzz_request.c — owns: the libFuzzer harness of the server's request
 * parser (srv_request_parse, server/request.c).
 *
 * Input: the first byte's low bit picks the endpoint (chat or completions);
 * the rest is the request body, as bytes.  Checked beyond not crashing:
 * a parse either fails with a non-empty message or gives a request that
 * holds what the server relies on (a chat: at least one message, each with
 * a known role and a content; a completion: a prompt; at most SRV_MAX_STOP
 * non-empty stop strings; sampling values in their ranges).
 * Built and run by fuzz/run.sh request (needs cJSON); not part of `make test`.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int kind = data[0] & 1 ? SRV_REQ_COMPLETION : SRV_REQ_CHAT;
    srv_request r;
    char err[256];
    err[0] = 0;
    const char *param = NULL;
    if (srv_request_parse((const char *)data + 1, size - 1, kind, &r, err, sizeof err, &param) != 0) {
        if (!err[0]) abort();
        return 0;
    }
    if (kind == SRV_REQ_CHAT) {
        if (r.n_msgs == 0 || !r.msgs || r.prompt) abort();
        for (size_t i = 0; i < r.n_msgs; i++) {
            const char *ro = r.msgs[i].role;
            if (!ro || !r.msgs[i].content) abort();
            if (strcmp(ro, "system") && strcmp(ro, "user") && strcmp(ro, "assistant") && strcmp(ro, "tool")) abort();
        }
    } else if (!r.prompt || r.msgs) {
        abort();
    }
    if (r.n_stop < 0 || r.n_stop > SRV_MAX_STOP) abort();
    for (int i = 0; i < r.n_stop; i++)
        if (!r.stop[i] || !r.stop[i][0] || strlen(r.stop[i]) > SRV_MAX_STOP_LEN) abort();
    if (!(r.temperature >= 0 && r.temperature <= 2) || !(r.top_p >= 0 && r.top_p <= 1) ||
        !(r.min_p >= 0 && r.min_p <= 1) || r.top_k < 0 || (r.max_tokens != -1 && r.max_tokens < 1))
        abort();
    srv_request_free(&r);
    return 0;
}
