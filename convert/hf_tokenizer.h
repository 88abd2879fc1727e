/* hf_tokenizer.h — tokenizer.json + tokenizer_config.json to GGUF's
 * tokenizer.ggml.* metadata, laid out as llama.cpp's converter lays out
 * DeepSeek's byte-level BPE (see hf_tokenizer.c). */
#ifndef ES_HF_TOKENIZER_H
#define ES_HF_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "gguf_writer.h"

/* Adds the tokenizer keys of the checkpoint in dir to w.  vocab_size: the
 * model's (config.json), 0 for the tokenizer's own size; ids the tokenizer
 * leaves unused up to it become "[PAD<id>]" tokens of type UNUSED.  0, or -1
 * with a one-line message naming the file. */
int es_hf_tokenizer(es_gguf_writer *w, const char *dir, int64_t vocab_size, char *err, size_t errlen);

#endif
