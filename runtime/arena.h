/* arena.h — a session's scratch buffers carved from one allocation.
 *
 * A layout function names each buffer once, as `p = es_arena_take(a,
 * bytes)`.  Run over an arena with no base it only adds up the bytes (the
 * size a caller can budget for); run again over an allocation of that size
 * it hands out the pointers.  So the size, the allocation, the
 * out-of-memory check and the free cannot drift apart.  Every buffer starts
 * on a 64-byte boundary (a cache line, the widest vector load).  Under
 * AddressSanitizer each buffer is followed by a poisoned guard, so an
 * overrun is still caught as it was with one allocation per buffer.
 * Internal to the runtime. */
#ifndef ES_ARENA_H
#define ES_ARENA_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__SANITIZE_ADDRESS__)
#define ES_ARENA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ES_ARENA_ASAN 1
#endif
#endif
#ifdef ES_ARENA_ASAN
#include <sanitizer/asan_interface.h>
#define ES_ARENA_GUARD 64
#else
#define ES_ARENA_GUARD 0
#endif

#define ES_ARENA_ALIGN 64

typedef struct es_arena {
    uint8_t *base; /* NULL: sizing pass */
    size_t used;   /* bytes handed out so far, a multiple of ES_ARENA_ALIGN */
} es_arena;

/* The next `bytes` of the arena (NULL in the sizing pass). */
static inline void *es_arena_take(es_arena *a, size_t bytes) {
    const size_t off = a->used, padded = (bytes + ES_ARENA_ALIGN - 1) / ES_ARENA_ALIGN * ES_ARENA_ALIGN;
    a->used += padded + ES_ARENA_GUARD;
    if (!a->base) return NULL;
#ifdef ES_ARENA_ASAN
    ASAN_POISON_MEMORY_REGION(a->base + off + bytes, padded - bytes + ES_ARENA_GUARD);
#endif
    return a->base + off;
}

/* An allocation for a sizing pass's total (NULL when out of memory);
 * release it with free(). */
static inline void *es_arena_alloc(size_t bytes) {
    return aligned_alloc(ES_ARENA_ALIGN, bytes ? bytes : ES_ARENA_ALIGN);
}

#endif
