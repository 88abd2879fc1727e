/* fault.h — a file mapping whose file shrinks (or whose storage fails) under
 * a running process must not kill it.
 *
 * An access to a page of a MAP_SHARED file mapping that lies past the
 * file's new end, or that the kernel cannot read, raises SIGBUS in the
 * thread that made it: a pool worker, an I/O thread, the caller.  A watched
 * mapping (es_fault_watch) is covered by a SIGBUS handler, installed once
 * for the process on the first watch: a fault inside a watched range
 * records the first faulting offset, puts a page of zeros (read-only,
 * anonymous) over the faulting page and returns, so the access completes
 * and the thread carries on with zeros.  Whoever uses the mapping then asks
 * es_fault_hit — once per layer, once per tensor — and stops with an error:
 * the results computed since are meaningless, and the mapping stays
 * spoiled (its watch keeps reporting the fault).
 *
 * Why not siglongjmp to a recovery point: the faulting thread may be any
 * of several pools' threads, in the middle of a loop whose bookkeeping
 * (claim counters, locks, pins) a jump would skip; a recovery point per
 * work chunk would cost a setjmp in the decode path.  Patching the page
 * leaves every thread's control flow intact and costs nothing until a
 * fault happens.
 *
 * A SIGBUS outside every watched range goes to the handler that was
 * installed before (or, if that was the default, the process ends with
 * SIGBUS as it would have without this file).  An application that installs
 * its own SIGBUS handler after loading a model takes the faults over.
 */
#ifndef ES_FAULT_H
#define ES_FAULT_H

#include <stddef.h>
#include <stdint.h>

typedef struct es_fault_watch es_fault_watch;

/* Watches [base, base + len) (base page-aligned, a mapping of that many
 * bytes); NULL when the handler cannot be installed or too many mappings
 * are watched (faults then end the process as before).  es_fault_hit and
 * es_fault_unwatch accept NULL. */
es_fault_watch *es_fault_watch_new(const void *base, size_t len);
/* Stops watching: call before unmapping, once nothing reads the mapping. */
void es_fault_unwatch(es_fault_watch *w);
/* 1 when an access to the watched mapping faulted since es_fault_watch_new,
 * with *offset (if not NULL) the first faulting byte's offset; else 0. */
int es_fault_hit(const es_fault_watch *w, uint64_t *offset);

#endif
