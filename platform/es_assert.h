/* es_assert.h — ES_ASSERT(cond) for invariants that no input can break:
 * when cond is false the program has a bug, so the file, the line and the
 * condition go to stderr and the process aborts.  Active in every build
 * (NDEBUG does not remove it), so keep it off per-element inner loops.
 * Never use it on user input (a file, an argument, an environment
 * variable): those are checked and reported as errors. */
#ifndef ES_ASSERT_H
#define ES_ASSERT_H

#include <stdio.h>
#include <stdlib.h>

#define ES_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (__builtin_expect(!(cond), 0)) {                                                        \
            fprintf(stderr, "edgeseek: %s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
