/* tokenizer.h — byte-level BPE tokenizer built from GGUF metadata
 * (tokenizer.ggml.model = "gpt2"): tokens, merges, token types,
 * bos/eos/pad, the pre-tokenizer named by tokenizer.ggml.pre
 * ("deepseek-v3", "deepseek-llm"), special/user-defined tokens matched whole,
 * exact-byte decoding, and the DeepSeek chat format.
 */
#ifndef ES_TOKENIZER_H
#define ES_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>
#include "gguf.h"
#include "edgeseek.h"

typedef struct es_tokenizer es_tokenizer;

/* 0 on success, -1 with a message. */
int es_tokenizer_load(const es_gguf_ctx *g, es_tokenizer **out, char *err, size_t errlen);
void es_tokenizer_free(es_tokenizer *t);

int32_t es_tokenizer_n_vocab(const es_tokenizer *t);
int32_t es_tokenizer_bos(const es_tokenizer *t); /* -1 if none */
int32_t es_tokenizer_eos(const es_tokenizer *t);
int es_tokenizer_add_bos(const es_tokenizer *t); /* tokenizer.ggml.add_bos_token */
int es_tokenizer_is_eog(const es_tokenizer *t, int32_t id);

/* *ids malloc'd. 0 / -1 with a message. */
int es_tokenizer_encode(const es_tokenizer *t, const char *text, size_t len,
                        int add_bos, int parse_special,
                        int32_t **ids, size_t *n_ids, char *err, size_t errlen);
/* Exact bytes of token id; returns full length (writes at most cap), -1 bad id. */
int es_tokenizer_piece(const es_tokenizer *t, int32_t id, char *buf, size_t cap);

int es_tokenizer_chat(const es_tokenizer *t, const es_chat_msg *msgs, size_t n,
                      int add_generation_prompt, char **out, char *err, size_t errlen);
/* The chat rendered and tokenised in one go: the template's special tokens
 * are matched, the messages' contents are always ordinary text (a user
 * cannot write a control token).  Without a BOS beyond the template's.
 * *ids malloc'd. 0 / -1 with a message. */
int es_tokenizer_chat_encode(const es_tokenizer *t, const es_chat_msg *msgs, size_t n,
                             int add_generation_prompt, int32_t **ids, size_t *n_ids, char *err,
                             size_t errlen);

/* For streaming decoders: length of the longest prefix of s[0..n) that does
 * not end inside a UTF-8 sequence more bytes could still complete (bytes
 * that can never become valid UTF-8 count as complete). */
size_t es_utf8_complete_prefix(const unsigned char *s, size_t n);

#endif
