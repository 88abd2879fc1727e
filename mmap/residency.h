/* residency.h — the expert residency manager: which routed experts of which
 * layers are in memory, under a byte budget, and how they get there.
 *
 * The GGUF stays mapped read-only.  Attention, dense, shared-expert,
 * embedding and output weights are always hot.  Each routed expert of each
 * MoE layer is one unit: three byte ranges, its slices of ffn_gate_exps,
 * ffn_up_exps and ffn_down_exps ([E][F rows][D], [E][F rows][D],
 * [E][D rows][F]).  Modes:
 *
 *   mmap        experts read through the mapping: a unit is loaded with
 *               madvise(WILLNEED) + MADV_POPULATE_READ (or mlock), evicted
 *               with madvise(DONTNEED) + posix_fadvise(DONTNEED) so its
 *               pages leave the page cache (which a memory cgroup charges);
 *   pread       units read whole (O_DIRECT where the filesystem allows it,
 *               else buffered + fadvise(DONTNEED)) into a cache of budget
 *               bytes, and the forward pass gets pointers into the cache;
 *   mmap-plain  the baseline: no management, the kernel pages on demand.
 *
 * A layer's experts are requested before they run (es_res_begin), handed
 * out as they become resident (es_res_next: some may compute while others
 * still load, and a batch needing more than the budget runs in groups), and
 * released after they ran (es_res_release records the use for the policy,
 * policy.h).  I/O threads load demanded units first and predicted ones
 * (es_res_prefetch: the next layer's router applied to the current hidden
 * state, computed by forward.c) in the background.
 *
 * One request (begin .. end) runs at a time per model; sessions of one model
 * evaluating concurrently are serialised layer by layer.
 */
#ifndef ES_RESIDENCY_H
#define ES_RESIDENCY_H

#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "edgeseek.h"

typedef struct es_res es_res;

/* Where one routed-expert tensor of one MoE layer lies in the file: expert
 * e's matrix is the `bytes` bytes at file offset offset + e * stride. */
typedef struct es_res_range {
    uint64_t offset, stride, bytes;
} es_res_range;

/* How setup advises a tensor's pages (madvise, mlock). */
enum {
    ES_RES_HOT = 0,  /* always hot: read ahead, and locked under --mlock */
    ES_RES_RANDOM,   /* read a row at a time (the embedding): no readahead */
    ES_RES_EXPERTS,  /* routed experts, the pager's own: no readahead in mmap mode */
};
typedef struct es_res_region {
    uint64_t offset, bytes;
    int kind;
} es_res_region;

/* What the pager knows of a model: a plain description the runtime fills
 * (runtime/pager_desc.c) and es_res_new copies what it keeps from, so
 * nothing here reads the model's own structures. */
typedef struct es_res_layout {
    const char *path;        /* the model file, opened again for pread / fadvise */
    const uint8_t *base;     /* its read-only mapping (the whole file) */
    uint64_t map_size;       /* bytes mapped: the file's size when it was loaded */
    int first_moe, n_moe;    /* model layers first_moe .. first_moe + n_moe - 1 route experts */
    int n_experts, n_used;   /* E experts per layer, k of them per token */
    const es_res_range *ranges; /* [n_moe][3]: ffn_gate_exps, ffn_up_exps, ffn_down_exps */
    const uint8_t *owned;    /* [n_moe][n_experts]: 1 for the experts this process computes when it
                                holds a share of them (es_model_load_share), NULL: all.  Only those
                                count toward the budget's "every expert fits"; the others are never
                                requested */
    int64_t hot_bytes;       /* weights that stay resident: all but the routed experts */
    int64_t session_bytes;   /* one session's scratch and KV cache, for the automatic budget */
    const es_res_region *regions; /* every tensor's byte range, for the setup advice */
    size_t n_regions;
} es_res_layout;

/* Sets up paging for the model `lay` describes; p may be NULL (defaults);
 * err is a buffer of errlen bytes.  lay may go once this returns.  A model
 * without MoE layers (n_moe 0) gets *out = NULL and ES_OK. */
es_status es_res_new(const es_res_layout *lay, const es_load_params *p, es_res **out, char *err, size_t errlen);
void es_res_free(es_res *r);

/* Whether the forward pass should compute next-layer predictions. */
int es_res_wants_prediction(const es_res *r);
/* Requests the n experts `active` (ascending) of model layer il for a batch
 * of T tokens; row_start [E+1]: expert e got the batch's gathered rows
 * row_start[e] .. row_start[e+1] (its token count weighs the use). */
void es_res_begin(es_res *r, int il, const int32_t *active, int n, const int32_t *row_start, int T);
/* The next group of resident requested experts: their ids and, per expert,
 * pointers to its gate, up and down matrices.  Blocks while none is ready
 * (timed as I/O stall).  Returns the group size; 0 when all were handed out. */
int es_res_next(es_res *r, int32_t *ids, const uint8_t *(*ptr)[3]);
/* Whether a load failed: an I/O error, an early end of file, or the file's
 * size or modification time changed.  It stays failed: es_res_next hands
 * nothing more out, the I/O threads stop, and the forward pass stops. */
int es_res_failed(const es_res *r);
/* The failure's message (naming the file and the bytes), "" when none. */
void es_res_error(es_res *r, char *err, size_t errlen);
/* The group ran: the pointers may go. */
void es_res_release(es_res *r, const int32_t *ids, int n);
void es_res_end(es_res *r);
/* Predicted experts of model layer il (most likely first). */
void es_res_prefetch(es_res *r, int il, const int32_t *ids, int n);

/* --stats: configuration, per-layer hit rates, prefetch accuracy, bytes
 * read, page faults, I/O stall per token. */
void es_res_print_stats(es_res *r, FILE *f);

/* Counters for tests and the report. */
typedef struct es_res_counts {
    int64_t accesses, hits, prefetch_hits, misses;
    int64_t predicted, predicted_used, actual_predicted; /* precision tp/pred, recall tp/actual */
    int64_t loads, prefetch_loads, evictions, bytes_loaded;
    int64_t cap_units, resident_units, max_resident_units;
    int64_t io_errors;
    double stall_s;
    int64_t tokens;
} es_res_counts;
void es_res_get_counts(es_res *r, es_res_counts *c);
int es_res_mode(const es_res *r);

/* Test-only: when set, the pager's reads (pread mode) call it instead of
 * pread(2), with the same arguments and result, to inject errors, short
 * reads and slow reads.  NULL (the default) in every program but tests. */
extern ssize_t (*es_res_pread_hook)(int fd, void *buf, size_t count, off_t offset);

#endif
