/* fuzz_vocab.h — owns: the vocabularies the tokenizer and chat harnesses
 * share: which files, with which pre-tokenizer and chat flavour, loaded once
 * per process.  See fuzz_vocab.c. */
#ifndef ES_FUZZ_VOCAB_H
#define ES_FUZZ_VOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

typedef struct fuzz_vocab {
    const char *name;   /* for messages: file and variant */
    es_tokenizer *tok;
    int lossless;       /* every single byte decodes back to itself: byte-level BPE */
    int chat_v2;        /* the chat template was set to the V2 ("User: ") flavour */
} fuzz_vocab;

/* The table, loaded on the first call (aborts with a message if a file is
 * missing: a harness without its vocabularies would fuzz nothing).  Files
 * are read relative to $ES_FUZZ_ROOT, default the current directory
 * (fuzz/run.sh runs from the repository root). */
const fuzz_vocab *fuzz_vocabs(size_t *n);

/* Prints "fuzz: what (vocab)" to stderr and aborts: an invariant broke. */
void fuzz_fail(const fuzz_vocab *v, const char *what);

#endif
