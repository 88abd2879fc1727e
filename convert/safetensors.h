/* safetensors.h — reading a Hugging Face checkpoint's safetensors shards.
 *
 * Owns: the shard format (an 8-byte little-endian header length, a JSON
 * header {name: {dtype, shape, data_offsets}} with an optional
 * __metadata__, then the data), the index (model.safetensors.index.json's
 * weight_map, or one model.safetensors), and the table of every tensor of
 * the checkpoint with its shard, dtype, shape and byte range, every entry
 * checked against the shard's size.  Data is read with pread, a range at a
 * time, so nothing but the headers stays in memory.
 *
 * Errors: -1 and one line in err naming the file (and the tensor).
 */
#ifndef ES_SAFETENSORS_H
#define ES_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

/* The header of a shard may not exceed this (the format's own limit). */
#define ES_ST_MAX_HEADER (100u << 20)
#define ES_ST_MAX_DIMS 4

enum es_st_dtype { ES_ST_F32, ES_ST_F16, ES_ST_BF16, ES_ST_F8_E4M3, ES_ST_OTHER };

typedef struct es_st_tensor {
    char *name;
    enum es_st_dtype dtype;
    char dtype_name[16]; /* as the header spells it */
    int n_dims;
    int64_t shape[ES_ST_MAX_DIMS]; /* safetensors order: shape[0] outermost */
    int shard;                     /* index into es_st_set.shards */
    uint64_t offset, nbytes;       /* absolute byte range in the shard */
    int used;                      /* set by the caller when it consumes the tensor */
} es_st_tensor;

typedef struct es_st_shard {
    char *path; /* directory + file name */
    char *file; /* file name as the index gives it */
    int fd;
    uint64_t size;
    uint64_t ahead; /* es_st_read has asked the kernel to read up to here */
} es_st_shard;

typedef struct es_st_set {
    es_st_shard *shards;
    int n_shards;
    es_st_tensor *tensors; /* sorted by name */
    size_t n_tensors;
    uint64_t data_bytes; /* sum of every tensor's bytes */
    const char *index_file; /* model.safetensors.index.json, or model.safetensors when alone */
} es_st_set;

/* Bytes per element of a dtype (0 for ES_ST_OTHER). */
size_t es_st_dtype_size(enum es_st_dtype d);

/* Opens the checkpoint in dir: the index and every shard it names (or
 * model.safetensors alone).  Checks that each shard exists, that its header
 * is well-formed and within ES_ST_MAX_HEADER, that every tensor's byte
 * range matches its dtype and shape and lies inside the file, that no
 * tensor appears twice, and that every tensor the index maps to a shard is
 * in that shard. */
int es_st_open(es_st_set *s, const char *dir, char *err, size_t errlen);
void es_st_close(es_st_set *s);

/* The tensor called name, or NULL. */
es_st_tensor *es_st_find(const es_st_set *s, const char *name);

/* Reads len bytes at offset off of tensor t's data into buf. */
int es_st_read(const es_st_set *s, const es_st_tensor *t, uint64_t off, void *buf, size_t len, char *err,
               size_t errlen);

/* Reads a whole small file (a JSON document) with a NUL after it; NULL and
 * a message when it is missing, unreadable or larger than max. */
char *es_st_slurp(const char *path, size_t max, size_t *len, char *err, size_t errlen);

/* Writes the message into err; returns -1 (the convert room's errors). */
int es_st_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
