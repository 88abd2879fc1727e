/* imatrix.h — reading llama.cpp's importance matrix, GGUF form: per weight
 * tensor NAME, an F32 tensor NAME.in_sum2 [n_per_row, n_mat] (sums of the
 * squared activations each column met) and NAME.counts [1, n_mat] (how
 * many activations were summed, per expert for the 3-D expert tensors).
 * The importance of a column is in_sum2 / count (1 where the count is 0,
 * as llama.cpp's quantize does).  The legacy binary ".dat" form is refused
 * with a message.  Every size, type and value is checked: a hostile or
 * truncated file gives an error, never a crash.
 */
#ifndef ES_IMATRIX_H
#define ES_IMATRIX_H

#include <stddef.h>
#include <stdint.h>

typedef struct es_imatrix es_imatrix;

/* 0 and *out, or -1 and a message. */
int es_imatrix_load(const char *path, es_imatrix **out, char *err, size_t errlen);
/* The same over a buffer (tests, fuzzing); the buffer may go afterwards. */
int es_imatrix_parse(const void *buf, size_t size, es_imatrix **out, char *err, size_t errlen);
void es_imatrix_free(es_imatrix *im);

/* Entries (weight tensors) in the file. */
int64_t es_imatrix_count(const es_imatrix *im);

/* The importances of weight tensor `name`: n_per_row * n_mat floats, matrix
 * after matrix, or NULL if the file has no entry for it. */
const float *es_imatrix_find(const es_imatrix *im, const char *name, int64_t *n_per_row, int64_t *n_mat);

#endif
