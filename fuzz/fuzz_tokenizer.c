/* fuzz_tokenizer.c — owns: the libFuzzer harness of the tokenizer.
 *
 * Input: the first byte picks a vocabulary and pre-tokenizer from
 * fuzz_vocab.c's table (byte % n) and whether a BOS is added (bit 7); the
 * rest is the text, arbitrary bytes.  Each text is encoded twice, with
 * special tokens matched whole and without, and checked beyond not
 * crashing:
 *   - encoding a vocabulary with every byte token never fails, and a
 *     failure always says why;
 *   - every id is in [0, n_vocab), and with a BOS asked for, the first id
 *     is the BOS;
 *   - the pieces of the ids, concatenated, give back the text byte for byte
 *     (byte-level BPE loses nothing, valid UTF-8 or not), in both modes;
 *   - es_tokenizer_piece with a short buffer returns the full length and
 *     writes at most cap bytes (the buffer is exactly cap bytes, so
 *     AddressSanitizer sees any write past it);
 *   - streaming the decoded bytes through es_utf8_complete_prefix emits
 *     everything once flushed and never more than it was given, and a text
 *     that is valid UTF-8 is complete as it stands;
 *   - UTF-8 decoding: a code point the decoder accepts encodes back to the
 *     same bytes.
 * Built and run by fuzz/run.sh tokenizer; not part of `make test`.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_vocab.h"
#include "tokenizer.h"
#include "unicode.h"

/* 1 if every code point of s decodes (strict UTF-8); checks encode(decode). */
static int check_utf8(const unsigned char *s, size_t n) {
    int valid = 1;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = es_utf8_decode(s + i, n - i, &cp);
        if (k < 1 || k > 4 || k > n - i) fuzz_fail(NULL, "es_utf8_decode used a bad byte count");
        if (cp == ES_UCP_INVALID) {
            if (k != 1) fuzz_fail(NULL, "an invalid sequence used more than one byte");
            valid = 0;
        } else {
            unsigned char u[4];
            if (es_utf8_encode(cp, u) != k || memcmp(u, s + i, k) != 0)
                fuzz_fail(NULL, "a decoded code point does not encode to its bytes");
        }
        i += k;
    }
    return valid;
}

/* Decodes ids (skipping the first `skip`) into a malloc'd buffer. */
static unsigned char *decode(const fuzz_vocab *v, const int32_t *ids, size_t n, size_t skip, size_t *len) {
    size_t cap = 64, used = 0;
    unsigned char *out = malloc(cap);
    if (!out) fuzz_fail(v, "out of memory");
    for (size_t i = skip; i < n; i++) {
        int r = es_tokenizer_piece(v->tok, ids[i], NULL, 0);
        if (r < 0) fuzz_fail(v, "es_tokenizer_piece refused an id encode returned");
        if (used + (size_t)r > cap) {
            while (used + (size_t)r > cap) cap *= 2;
            unsigned char *p = realloc(out, cap);
            if (!p) fuzz_fail(v, "out of memory");
            out = p;
        }
        if (es_tokenizer_piece(v->tok, ids[i], (char *)out + used, (size_t)r) != r)
            fuzz_fail(v, "es_tokenizer_piece gave two lengths for one id");
        if (r > 1) { /* a short buffer: full length back, nothing past cap */
            size_t cap_short = (size_t)r / 2;
            char *s = malloc(cap_short);
            if (!s) fuzz_fail(v, "out of memory");
            if (es_tokenizer_piece(v->tok, ids[i], s, cap_short) != r || memcmp(s, out + used, cap_short) != 0)
                fuzz_fail(v, "es_tokenizer_piece with a short buffer");
            free(s);
        }
        used += (size_t)r;
    }
    *len = used;
    return out;
}

/* Feeds the bytes through es_utf8_complete_prefix as a streaming decoder
 * would (in chunks of `step`); what it emits, plus the held tail at the
 * end, must be the input. */
static void check_stream(const fuzz_vocab *v, const unsigned char *s, size_t n, size_t step) {
    unsigned char pend[64];
    size_t n_pend = 0, emitted = 0;
    for (size_t i = 0; i < n; i += step) {
        size_t k = n - i < step ? n - i : step;
        unsigned char buf[64 + 16];
        if (n_pend + k > sizeof buf) fuzz_fail(v, "streaming: held back more than a sequence");
        memcpy(buf, pend, n_pend);
        memcpy(buf + n_pend, s + i, k);
        size_t total = n_pend + k;
        size_t ready = es_utf8_complete_prefix(buf, total);
        if (ready > total) fuzz_fail(v, "streaming: complete prefix longer than its input");
        if (total - ready > 3) fuzz_fail(v, "streaming: held back more than three bytes");
        if (memcmp(buf, s + emitted, ready) != 0) fuzz_fail(v, "streaming: emitted bytes differ");
        emitted += ready;
        n_pend = total - ready;
        memcpy(pend, buf + ready, n_pend);
    }
    if (emitted + n_pend != n) fuzz_fail(v, "streaming: bytes lost");
}

static void check_encode(const fuzz_vocab *v, const unsigned char *text, size_t len, int add_bos,
                         int parse_special) {
    int32_t *ids;
    size_t n;
    char err[256] = "";
    if (es_tokenizer_encode(v->tok, (const char *)text, len, add_bos, parse_special, &ids, &n, err,
                            sizeof err) != 0) {
        if (!err[0]) fuzz_fail(v, "encode failed without a message");
        if (v->lossless) fuzz_fail(v, "encode failed on a vocabulary with every byte");
        return;
    }
    int32_t n_vocab = es_tokenizer_n_vocab(v->tok), bos = es_tokenizer_bos(v->tok);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= n_vocab) fuzz_fail(v, "id out of range");
    size_t skip = add_bos && bos >= 0;
    if (skip && (n == 0 || ids[0] != bos)) fuzz_fail(v, "BOS asked for and not first");
    if (n - skip > len) fuzz_fail(v, "more tokens than bytes");
    if (v->lossless) {
        size_t dlen;
        unsigned char *d = decode(v, ids, n, skip, &dlen);
        if (dlen != len || memcmp(d, text, len) != 0)
            fuzz_fail(v, parse_special ? "decode(encode(text)) != text (special tokens on)"
                                       : "decode(encode(text)) != text (special tokens off)");
        free(d);
    }
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t nv;
    const fuzz_vocab *vs = fuzz_vocabs(&nv);
    if (size < 1) return 0;
    const fuzz_vocab *v = &vs[data[0] % nv];
    int add_bos = data[0] >> 7;
    /* an exactly-sized copy, so a read past the text is caught */
    size_t len = size - 1;
    unsigned char *text = malloc(len ? len : 1);
    if (!text) return 0;
    memcpy(text, data + 1, len);
    int valid = check_utf8(text, len);
    if (valid && es_utf8_complete_prefix(text, len) != len) fuzz_fail(NULL, "valid UTF-8 is not complete");
    check_stream(v, text, len, 1 + data[0] % 7);
    check_encode(v, text, len, add_bos, 0);
    check_encode(v, text, len, add_bos, 1);
    free(text);
    return 0;
}
