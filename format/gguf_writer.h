/* gguf_writer.h — streaming GGUF v3 writer.
 *
 * Owns: building the metadata (every value type, arrays of every type, nested
 * arrays) and the tensor directory in memory, then writing the file in one
 * pass: header, metadata, tensor infos, padding to general.alignment, and the
 * tensor data streamed tensor by tensor in declaration order.  Only the
 * header is held in memory, never tensor data, so a 17 GB model is written
 * with a few MB of RAM.  Used by tools/gen_model and `edgeseek quantize`.
 *
 * Usage:
 *   es_gguf_writer *w = es_gguf_writer_new();
 *   es_gguf_w_str(w, "general.architecture", "deepseek2"); ...      metadata
 *   es_gguf_w_add_tensor(w, "token_embd.weight", 2, ne, ES_TYPE_Q8_0); ...
 *   es_gguf_w_open(w, path);               writes everything up to the data
 *   for each tensor, in the order added:
 *       es_gguf_w_write(w, bytes, n) or es_gguf_w_write_rows_f32(w, rows, n_rows)
 *   es_gguf_w_finish(w, err, errlen);      checks every byte arrived, closes
 *   es_gguf_writer_free(w);
 *
 * Errors are sticky: the first failure (bad argument, out of memory, disk
 * full) is recorded, that call and every later one returns -1, and
 * es_gguf_w_error() / es_gguf_w_finish() give the message.  Nothing aborts.
 *
 * The file is written atomically (es_outfile, edgeseek.h): the bytes go to a
 * temporary beside the path, which es_gguf_w_finish syncs and renames over
 * it.  Until then the path keeps its old content; es_gguf_writer_free of an
 * unfinished writer, and SIGINT/SIGTERM/SIGHUP, remove the temporary.
 *
 * Setting a key that already exists replaces its value in place (the key
 * keeps its position).  Setting "general.alignment" (it must be a power-of-two
 * uint32) also sets the data alignment; the default is 32 and the key is not
 * written unless set.  Host byte order must be little-endian, like GGUF.
 */
#ifndef ES_GGUF_WRITER_H
#define ES_GGUF_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

/* ggml's limit on tensor name length (GGML_MAX_NAME, including the NUL) */
#define GGUF_W_MAX_NAME 64

typedef struct es_gguf_writer es_gguf_writer;

es_gguf_writer *es_gguf_writer_new(void); /* NULL only when out of memory */
/* Closes the file if still open; removes its temporary unless
 * es_gguf_w_finish succeeded (the path is then untouched). */
void es_gguf_writer_free(es_gguf_writer *w);

/* The first error recorded, or "" if none. */
const char *es_gguf_w_error(const es_gguf_writer *w);

/* ---- metadata (before es_gguf_w_open) -------------------------------------- */
int es_gguf_w_u8(es_gguf_writer *w, const char *key, uint8_t v);
int es_gguf_w_i8(es_gguf_writer *w, const char *key, int8_t v);
int es_gguf_w_u16(es_gguf_writer *w, const char *key, uint16_t v);
int es_gguf_w_i16(es_gguf_writer *w, const char *key, int16_t v);
int es_gguf_w_u32(es_gguf_writer *w, const char *key, uint32_t v);
int es_gguf_w_i32(es_gguf_writer *w, const char *key, int32_t v);
int es_gguf_w_u64(es_gguf_writer *w, const char *key, uint64_t v);
int es_gguf_w_i64(es_gguf_writer *w, const char *key, int64_t v);
int es_gguf_w_f32(es_gguf_writer *w, const char *key, float v);
int es_gguf_w_f64(es_gguf_writer *w, const char *key, double v);
int es_gguf_w_bool(es_gguf_writer *w, const char *key, int v);
int es_gguf_w_str(es_gguf_writer *w, const char *key, const char *s);         /* NUL-terminated */
int es_gguf_w_strn(es_gguf_writer *w, const char *key, const char *s, size_t len);
/* Array of n fixed-size elements (elem_type not STRING/ARRAY); data holds
 * them packed in GGUF's encoding (bool = 1 byte). */
int es_gguf_w_arr(es_gguf_writer *w, const char *key, uint32_t elem_type, const void *data, uint64_t n);
/* Array of n NUL-terminated strings. */
int es_gguf_w_arr_str(es_gguf_writer *w, const char *key, const char *const *strs, uint64_t n);
/* Any value, in the reader's representation (gguf.h), including arrays of
 * strings and nested arrays: copies a key from a parsed file verbatim. */
int es_gguf_w_value(es_gguf_writer *w, const char *key, const es_gguf_value *v);
/* The metadata alone as a GGUF image in memory (no tensors, whatever was
 * added), for es_gguf_parse_buffer: *buf is malloc'd.  0, or -1 (sticky
 * error). */
int es_gguf_w_meta_buffer(es_gguf_writer *w, uint8_t **buf, size_t *len);
/* Removes a key if present (0 either way). */
int es_gguf_w_remove(es_gguf_writer *w, const char *key);

/* ---- tensor directory (before es_gguf_w_open) ------------------------------ */
/* ne[0] is the innermost (row) length; 1 <= n_dims <= GGUF_MAX_DIMS; every
 * ne[i] >= 1; ne[0] a multiple of the type's block size.  Names are unique
 * and shorter than GGUF_W_MAX_NAME. */
int es_gguf_w_add_tensor(es_gguf_writer *w, const char *name, uint32_t n_dims, const int64_t *ne, uint32_t type);
uint64_t es_gguf_w_n_tensors(const es_gguf_writer *w);
/* Bytes of the whole file once finished (header, padding and data). */
uint64_t es_gguf_w_file_size(const es_gguf_writer *w);

/* ---- output ------------------------------------------------------------- */
/* Creates the temporary for path and writes the header, metadata, tensor
 * infos and padding.  No metadata or tensors can be added afterwards. */
int es_gguf_w_open(es_gguf_writer *w, const char *path);
/* Appends n bytes to the current tensor.  A chunk may not run past the end
 * of the current tensor; when a tensor is complete its padding is written and
 * the next tensor becomes current. */
int es_gguf_w_write(es_gguf_writer *w, const void *data, size_t n);
/* Converts n_rows rows of ne[0] floats to the current tensor's type
 * (es_quant_row) and appends them. */
int es_gguf_w_write_rows_f32(es_gguf_writer *w, const float *src, int64_t n_rows);
/* The tensor that the next bytes belong to (NULL when all are written or
 * the file is not open), and how many of its bytes are still missing. */
const char *es_gguf_w_current_tensor(const es_gguf_writer *w, uint64_t *bytes_left);
/* Checks every tensor is complete, flushes, syncs and renames the
 * temporary over the path.  0 on success;
 * otherwise -1 and the (first) error message in err. */
int es_gguf_w_finish(es_gguf_writer *w, char *err, size_t errlen);

#endif
