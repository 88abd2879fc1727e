/* convert.h — `edgeseek convert`: a Hugging Face DeepSeek checkpoint (V2,
 * V2-Lite, V3, R1: config.json, safetensors shards in BF16/F16/F32 or FP8
 * e4m3 with 128x128 block scales, tokenizer.json) to a deepseek2 GGUF with
 * llama.cpp's tensor and metadata names, the MTP (next-n) layers kept.
 *
 * This room (convert/) parses JSON with cJSON, so only the CLI links it;
 * libedgeseek stays free of dependencies.  It writes through
 * format/gguf_writer.c and converts rows with format/quantize.c's rules and
 * row converters.
 */
#ifndef ES_CONVERT_H
#define ES_CONVERT_H

#include <stddef.h>
#include <stdio.h>

typedef struct es_convert_params {
    int n_threads;  /* 0: es_default_threads() */
    FILE *log;      /* a summary, warnings and the progress line; NULL: silent */
    int no_mtp;     /* 1: drop the next-n (MTP) layers */
    int vocab_only; /* 1: the tokenizer metadata only (no config.json weights read) */
} es_convert_params;

/* Converts the checkpoint in dir to out.  type: one of quantize's targets
 * (ES_QUANTIZE_TARGETS), or NULL for the source precision (BF16 stays
 * BF16, FP8 becomes Q8_0; norms, the router and the gate bias are F32
 * whatever the type).  0, or -1 with a one-line message naming the file and
 * the tensor; no output is left behind on failure. */
int es_convert_hf(const char *dir, const char *out, const char *type, const es_convert_params *p, char *err,
                  size_t errlen);

/* Lets every model path name a checkpoint directory too (hf_direct.c):
 * sets format/'s directory opener.  Call once, before loading models. */
void es_hf_direct_enable(void);

#endif
