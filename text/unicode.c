/* unicode.c — lookups over the generated category and White_Space tables
 * (unicode_tables.c) and strict UTF-8 decoding/encoding.  See unicode.h.
 */
#include "unicode.h"

static unsigned class_search(uint32_t cp) {
    size_t lo = 0, hi = es_ucat_n; /* invariant: es_ucat_start[lo] <= cp */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (es_ucat_start[mid] <= cp) lo = mid;
        else hi = mid;
    }
    return es_ucat_class[lo];
}

unsigned es_uc_class(uint32_t cp) {
    if (cp < 128) return es_ucat_ascii[cp];
    if (cp > 0x10FFFF) return ES_UC_C;
    return class_search(cp);
}

int es_uc_is_space(uint32_t cp) {
    if (cp < 128) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
    for (size_t i = 0; i < es_uspace_n; i++) {
        if (cp < es_uspace_ranges[i][0]) return 0;
        if (cp <= es_uspace_ranges[i][1]) return 1;
    }
    return 0;
}

/* Expected length of a sequence from its first byte; 0 for a byte that can
 * never start one (continuation bytes, C0/C1 overlong leads, F5..FF). */
static size_t seq_len(unsigned char b) {
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) return 2;
    if (b >= 0xE0 && b <= 0xEF) return 3;
    if (b >= 0xF0 && b <= 0xF4) return 4;
    return 0;
}

/* Whether s[1] may follow lead byte s[0]: the allowed range of the second
 * byte is narrower for E0/ED/F0/F4, which is how overlongs, surrogates and
 * code points above U+10FFFF are excluded. */
static int second_ok(unsigned char lead, unsigned char b) {
    unsigned char lo = 0x80, hi = 0xBF;
    if (lead == 0xE0) lo = 0xA0;
    else if (lead == 0xED) hi = 0x9F;
    else if (lead == 0xF0) lo = 0x90;
    else if (lead == 0xF4) hi = 0x8F;
    return b >= lo && b <= hi;
}

size_t es_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    size_t len = seq_len(s[0]);
    if (len == 1) { *cp = s[0]; return 1; }
    if (len == 0 || n < len || !second_ok(s[0], s[1])) { *cp = ES_UCP_INVALID; return 1; }
    for (size_t i = 2; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) { *cp = ES_UCP_INVALID; return 1; }
    }
    uint32_t v = s[0] & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
    for (size_t i = 1; i < len; i++) v = (v << 6) | (s[i] & 0x3F);
    *cp = v;
    return len;
}

size_t es_utf8_encode(uint32_t cp, unsigned char out[4]) {
    if (cp < 0x80) { out[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    if (cp > 0x10FFFF) return 0;
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t es_utf8_complete_len(const unsigned char *s, size_t n) {
    /* Only the last three bytes can belong to an unfinished sequence: find
     * the lead byte among them and see whether what follows it is a valid
     * but short start of a sequence. */
    size_t back = n < 3 ? n : 3;
    for (size_t k = 1; k <= back; k++) {
        size_t start = n - k;
        unsigned char b = s[start];
        if ((b & 0xC0) == 0x80) continue; /* continuation: keep looking */
        size_t len = seq_len(b);
        if (len <= k) return n; /* ASCII, invalid lead, or already complete */
        if (k >= 2 && !second_ok(b, s[start + 1])) return n;
        for (size_t i = start + 2; i < n; i++) {
            if ((s[i] & 0xC0) != 0x80) return n;
        }
        return start;
    }
    return n;
}
