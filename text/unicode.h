/* unicode.h — the Unicode knowledge the tokenizer needs, and nothing more:
 * the major general category of a code point (L, M, N, P, S, Z, C), the
 * White_Space property (what regex \s matches), and strict UTF-8 decoding
 * and encoding.  The tables are generated (tools/gen_unicode.py) into
 * unicode_tables.c; the lookups are in unicode.c.
 */
#ifndef ES_UNICODE_H
#define ES_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* Major general categories, one bit each so a caller can test a set of them
 * with one mask (e.g. ES_UC_P | ES_UC_S for [\p{P}\p{S}]). */
enum {
    ES_UC_L = 1,   /* letters */
    ES_UC_M = 2,   /* marks */
    ES_UC_N = 4,   /* numbers */
    ES_UC_P = 8,   /* punctuation */
    ES_UC_S = 16,  /* symbols */
    ES_UC_Z = 32,  /* separators */
    ES_UC_C = 64   /* other: controls, format, surrogates, private, unassigned */
};

/* Stands in for a byte that is not part of valid UTF-8.  It is above
 * U+10FFFF, so it has class ES_UC_C and is never whitespace: such bytes are
 * carried through pre-tokenization unchanged and end up as byte tokens. */
#define ES_UCP_INVALID 0x110000u

unsigned es_uc_class(uint32_t cp);   /* one ES_UC_* value */
int es_uc_is_space(uint32_t cp);     /* Unicode White_Space */

/* Decodes one code point from s[0..n) (n >= 1).  Returns the bytes used
 * (1..4); a malformed, overlong, surrogate or truncated sequence uses one
 * byte and yields ES_UCP_INVALID. */
size_t es_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);

/* Writes cp as UTF-8; returns 1..4, or 0 for a surrogate or cp > U+10FFFF. */
size_t es_utf8_encode(uint32_t cp, unsigned char out[4]);

/* Length of the longest prefix of s[0..n) that does not end inside a UTF-8
 * sequence that more bytes could still complete.  Bytes that can never
 * become valid count as complete (holding them back would not help). */
size_t es_utf8_complete_len(const unsigned char *s, size_t n);

/* Generated tables (unicode_tables.c). */
extern const size_t es_ucat_n;
extern const uint32_t es_ucat_start[];
extern const uint8_t es_ucat_class[];
extern const uint8_t es_ucat_ascii[128];
extern const size_t es_uspace_n;
extern const uint32_t es_uspace_ranges[][2];

#endif
