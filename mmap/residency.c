/* residency.c — the expert residency manager (see residency.h): unit table,
 * budget, loads and evictions in the three modes, the request protocol the
 * forward pass drives (begin / next / release / end), prefetch and the
 * background I/O threads.  Statistics printing lives in stats.c. */
#include "residency_impl.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "budget.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

ssize_t (*es_res_pread_hook)(int fd, void *buf, size_t count, off_t offset);

double es_res_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- unit queues (ring buffers; a unit is at most once in each) ------------- */

static void uq_push(es_uq *q, int32_t u, int front) {
    if (q->n >= q->cap) return; /* cannot happen: a unit is queued once */
    if (front) {
        q->head = (q->head + q->cap - 1) % q->cap;
        q->buf[q->head] = u;
    } else {
        q->buf[(q->head + q->n) % q->cap] = u;
    }
    q->n++;
}

static int32_t uq_pop(es_uq *q) {
    if (!q->n) return -1;
    int32_t u = q->buf[q->head];
    q->head = (q->head + 1) % q->cap;
    q->n--;
    return u;
}

/* ---- addresses ----------------------------------------------------------------- */

static uint64_t rdown(uint64_t x, uint64_t a) { return x / a * a; }
static uint64_t rup(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* Pointers to the three matrices of unit u where the forward pass reads them. */
static void unit_ptrs(const es_res *r, int u, const uint8_t *ptr[3]) {
    for (int q = 0; q < 3; q++) {
        uint64_t off = r->off[(size_t)u * 3 + q];
        if (r->mode == ES_EXPERTS_PREAD && r->slot[u] >= 0) {
            uint8_t *s = r->slab + (size_t)r->slot[u] * r->slot_bytes + r->sofs[q];
            ptr[q] = s + (off - rdown(off, r->align));
        } else {
            ptr[q] = r->base + off;
        }
    }
}

/* ---- loading and evicting --------------------------------------------------------- */

/* mmap mode: the page range [lo, hi) of unit v's range q that may leave
 * memory.  A partial page at either end is shared with the neighbouring
 * expert of the same tensor (or another tensor): it goes only if the rest
 * of the page lies inside that neighbour and the neighbour is not in use. */
static int drop_range(const es_res *r, int v, int q, uint64_t *lo_out, uint64_t *hi_out) {
    const int l = v / r->E, e = v % r->E;
    const uint64_t P = r->page, off = r->off[(size_t)v * 3 + q], len = r->len[(size_t)l * 3 + q];
    const uint64_t end = off + len;
    uint64_t lo = rdown(off, P), hi = rup(end, P);
    int first_ok = lo == off || (e > 0 && lo + len >= off && r->state[v - 1] == ST_ABSENT);
    int last_ok = hi == end || (e + 1 < r->E && hi <= end + len && r->state[v + 1] == ST_ABSENT);
    if (!first_ok) lo += P;
    if (!last_ok) hi -= P;
    if (lo >= hi) return 0;
    *lo_out = lo;
    *hi_out = hi;
    return 1;
}

static void evict_io(es_res *r, const es_drop *d) {
    void *a = (void *)(r->base + d->lo);
    size_t n = (size_t)(d->hi - d->lo);
    if (d->locked) munlock(a, n);
    /* zap this process's page table entries, then drop the now unmapped
     * clean pages from the page cache, where a memory cgroup counts them */
    if (madvise(a, n, MADV_DONTNEED) != 0) madvise(a, n, MADV_COLD);
    if (r->fd >= 0) posix_fadvise(r->fd, (off_t)d->lo, (off_t)n, POSIX_FADV_DONTNEED);
}

/* The pager's first failure, kept: loads stop, es_res_next hands nothing
 * out, es_res_error reports it.  Called with r->mu held. */
static void set_failed(es_res *r, const char *why) {
    if (r->failed) return;
    snprintf(r->fail_msg, sizeof r->fail_msg, "%s", why);
    __atomic_store_n(&r->failed, 1, __ATOMIC_RELEASE);
}

/* Whether the file is still the one opened: size and modification time. */
static int file_unchanged(const es_res *r) {
    struct stat st;
    return fstat(r->fd, &st) != 0 || ((uint64_t)st.st_size == r->file_size && st.st_mtim.tv_sec == r->file_mtime.tv_sec &&
                                      st.st_mtim.tv_nsec == r->file_mtime.tv_nsec);
}

/* why = what went wrong reading [lo, hi) of the file (err: errno, 0 for
 * an early end of file). */
static void describe(const es_res *r, char *why, size_t n, uint64_t lo, uint64_t hi, int err) {
    if (!err || !file_unchanged(r))
        snprintf(why, n, "%s: model file changed or truncated while in use (bytes %llu..%llu could not be read)",
                 r->path, (unsigned long long)lo, (unsigned long long)hi);
    else
        snprintf(why, n, "%s: reading bytes %llu..%llu of the model file failed: %s", r->path, (unsigned long long)lo,
                 (unsigned long long)hi, strerror(err));
}

/* Reads unit u's three ranges into its cache slot, a short read continued
 * where it stopped.  0, or -1 on an I/O error or an early end of file
 * (why says which). */
static int pread_unit(es_res *r, int u, uint64_t *bytes, char *why, size_t whylen) {
    const int l = u / r->E;
    uint8_t *slot = r->slab + (size_t)r->slot[u] * r->slot_bytes;
    for (int q = 0; q < 3; q++) {
        uint64_t off = r->off[(size_t)u * 3 + q], len = r->len[(size_t)l * 3 + q];
        uint64_t aoff = rdown(off, r->align), aend = rup(off + len, r->align);
        uint64_t need = off + len - aoff, want = aend - aoff, got = 0;
        int fd = r->fd_direct >= 0 ? r->fd_direct : r->fd;
        while (got < need) {
            uint8_t *dst = slot + r->sofs[q] + got;
            size_t cnt = (size_t)(want - got);
            off_t at = (off_t)(aoff + got);
            ssize_t n = es_res_pread_hook ? es_res_pread_hook(fd, dst, cnt, at) : pread(fd, dst, cnt, at);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && fd == r->fd_direct && errno == EINVAL) {
                fd = r->fd; /* O_DIRECT refused here (filesystem, or a short read left got unaligned) */
                continue;
            }
            if (n <= 0) { /* an error, or the file ends early: never the mapping instead, it would fault */
                describe(r, why, whylen, aoff + got, off + len, n < 0 ? errno : 0);
                return -1;
            }
            got += (uint64_t)n;
        }
        *bytes += got;
        if (fd == r->fd) posix_fadvise(r->fd, (off_t)aoff, (off_t)want, POSIX_FADV_DONTNEED);
    }
    return 0;
}

static void touch_pages(const uint8_t *p, size_t n, size_t page) {
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < n; i += page) sink ^= p[i];
    (void)sink;
}

/* mmap mode: brings unit u's pages in and maps them; returns bytes, 0 when
 * a range could not be read (why says which).  Without MADV_POPULATE_READ
 * the pages are touched, and a range past the file's end raises SIGBUS:
 * the runtime's handler (platform/fault.h) takes that. */
static uint64_t map_unit(es_res *r, int u, int *locked, char *why, size_t whylen) {
    const int l = u / r->E;
    uint64_t lo[3], hi[3], total = 0;
    for (int q = 0; q < 3; q++) {
        uint64_t off = r->off[(size_t)u * 3 + q];
        lo[q] = rdown(off, r->page);
        hi[q] = rup(off + r->len[(size_t)l * 3 + q], r->page);
        /* start all three reads before waiting on any */
        madvise((void *)(r->base + lo[q]), (size_t)(hi[q] - lo[q]), MADV_WILLNEED);
        total += hi[q] - lo[q];
    }
    *locked = 0;
    for (int q = 0; q < 3; q++) {
        void *a = (void *)(r->base + lo[q]);
        size_t n = (size_t)(hi[q] - lo[q]);
        if (r->mlock && mlock(a, n) == 0) {
            *locked = 1;
            continue;
        }
        if (r->populate) {
            if (madvise(a, n, MADV_POPULATE_READ) == 0) continue;
            if (errno == EFAULT || errno == EIO || errno == EHWPOISON) { /* a read would raise SIGBUS */
                describe(r, why, whylen, lo[q], hi[q], errno == EFAULT ? EIO : errno);
                return 0;
            }
        }
        touch_pages(a, n, r->page);
    }
    return total;
}

/* Makes room for and loads unit u, which is QUEUED.  Called and returns with
 * r->mu held; drops it during the I/O.  Returns 0, or -1 when every resident
 * unit is pinned (u stays QUEUED). */
static int load_unit(es_res *r, int u, int demand) {
    es_pol *p = r->pol;
    int64_t evictable = p->n_resident;
    for (int l = 0; l < p->L; l++) evictable -= p->n_pinned[l];
    if (!es_pol_has_room(p) && evictable < p->n_resident - p->cap + 1) return -1;
    es_drop drops[24];
    int nd = 0;
    while (!es_pol_has_room(p)) {
        int v = es_pol_victim(p, u / r->E);
        if (v < 0) break; /* counted above: cannot happen */
        es_pol_evict(p, v);
        r->state[v] = ST_ABSENT;
        r->n_evictions++;
        if (r->prefetched[v]) r->n_pf_wasted++; /* evicted before its layer ran */
        r->prefetched[v] = 0;
        if (r->mode == ES_EXPERTS_PREAD) {
            r->free_slot[r->n_free++] = r->slot[v];
            r->slot[v] = -1;
        } else {
            for (int q = 0; q < 3 && nd < (int)(sizeof drops / sizeof drops[0]); q++)
                if (drop_range(r, v, q, &drops[nd].lo, &drops[nd].hi)) drops[nd++].locked = r->locked[v];
            r->locked[v] = 0;
        }
    }
    r->state[u] = ST_LOADING;
    r->qkind[u] = 0;
    es_pol_pin(p, u);
    es_pol_insert(p, u);
    if (p->n_resident > r->max_resident) r->max_resident = p->n_resident;
    if (r->mode == ES_EXPERTS_PREAD) r->slot[u] = r->free_slot[--r->n_free];
    pthread_mutex_unlock(&r->mu);

    struct rusage ru0, ru1;
    getrusage(RUSAGE_THREAD, &ru0);
    for (int i = 0; i < nd; i++) evict_io(r, &drops[i]);
    uint64_t bytes = 0;
    int failed = 0, locked = 0;
    char why[sizeof r->fail_msg];
    if (r->mode == ES_EXPERTS_PREAD) failed = pread_unit(r, u, &bytes, why, sizeof why) != 0;
    else failed = (bytes = map_unit(r, u, &locked, why, sizeof why)) == 0;
    if (!failed && !file_unchanged(r)) { /* read, but maybe a mix of the old file and the new */
        failed = 1;
        snprintf(why, sizeof why, "%s: model file changed or truncated while in use (its size or modification time changed)",
                 r->path);
    }
    getrusage(RUSAGE_THREAD, &ru1);

    pthread_mutex_lock(&r->mu);
    r->load_majflt += ru1.ru_majflt - ru0.ru_majflt; /* faults the loads took, not the compute */
    r->load_cpu_s += (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                     (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) * 1e-6;
    r->state[u] = ST_RESIDENT;
    r->locked[u] = (uint8_t)locked;
    r->n_io_errors += failed;
    if (failed) set_failed(r, why); /* u stays resident in the books, never handed out */
    r->bytes_loaded += (int64_t)bytes;
    if (demand) r->n_loads++;
    else r->n_pf_loads++;
    r->prefetched[u] = !demand;
    /* a unit the running request needs keeps its pin as the reservation */
    if (!r->needed[u]) es_pol_unpin(p, u);
    pthread_cond_broadcast(&r->cv_done);
    return 0;
}

/* ---- I/O threads --------------------------------------------------------------------- */

static void *io_main(void *arg) {
    es_res *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        int u = -1, demand = 1;
        while (u < 0 && r->dq.n && !r->failed) {
            u = uq_pop(&r->dq);
            r->in_dq[u] = 0;
            if (r->state[u] != ST_QUEUED || r->qkind[u] != Q_DEMAND) u = -1;
        }
        if (u < 0) {
            demand = 0;
            while (u < 0 && r->pq.n && !r->failed) {
                u = uq_pop(&r->pq);
                r->in_pq[u] = 0;
                if (r->state[u] != ST_QUEUED || r->qkind[u] != Q_PREFETCH) u = -1;
            }
        }
        if (u < 0) {
            pthread_cond_wait(&r->cv_io, &r->mu);
            continue;
        }
        if (load_unit(r, u, demand) != 0) {
            if (demand) {
                /* everything is pinned: wait for the running group to finish */
                r->in_dq[u] = 1;
                uq_push(&r->dq, u, 1);
                pthread_cond_wait(&r->cv_done, &r->mu);
            } else {
                r->state[u] = ST_ABSENT; /* a prefetch never waits */
                r->qkind[u] = 0;
                r->n_pf_dropped++;
            }
        }
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ---- the request protocol (forward.c) ---------------------------------------------- */

int es_res_wants_prediction(const es_res *r) { return r && r->prefetch; }

/* mmap-plain with --stats: an expert counts as a hit when every page of its
 * three ranges is already in memory (mincore). */
static int plain_resident(es_res *r, int u) {
    const int l = u / r->E;
    for (int q = 0; q < 3; q++) {
        uint64_t off = r->off[(size_t)u * 3 + q];
        uint64_t lo = rdown(off, r->page), hi = rup(off + r->len[(size_t)l * 3 + q], r->page);
        size_t np = (size_t)((hi - lo) / r->page);
        if (np > r->mincore_cap) return 0;
        if (mincore((void *)(r->base + lo), (size_t)(hi - lo), r->mincore_vec) != 0) return 0;
        for (size_t i = 0; i < np; i++)
            if (!(r->mincore_vec[i] & 1)) return 0;
    }
    return 1;
}

void es_res_begin(es_res *r, int il, const int32_t *active, int n, const int32_t *row_start, int T) {
    pthread_mutex_lock(&r->req_mu);
    pthread_mutex_lock(&r->mu);
    const int l = il - r->first_moe, E = r->E;
    r->cur_layer = l;
    r->cur_T = T;
    r->n_pend = n;
    r->n_handed = 0;
    if (l == 0) {
        r->tokens += T;
        if (T == 1) r->tokens_decode++;
    }
    es_pol_layer_tick(r->pol, l);
    es_res_layer_stats *ls = &r->lstats[l];
    ls->accesses += n;
    if (r->pred_valid[l]) {
        int64_t tp = 0;
        for (int i = 0; i < n; i++) tp += r->pred[(size_t)l * E + active[i]];
        ls->pred_used += tp;
        ls->pred_actual += n;
        memset(r->pred + (size_t)l * E, 0, (size_t)E);
        r->pred_valid[l] = 0;
    }
    int misses = 0;
    for (int i = 0; i < n; i++) {
        int u = l * E + active[i];
        r->pend[i] = u;
        r->weight[u] = row_start[active[i] + 1] - row_start[active[i]];
        r->taken[u] = 0;
        if (r->mode == ES_EXPERTS_MMAP_PLAIN) {
            if (r->stats_plain && plain_resident(r, u)) ls->hits++;
            else misses++;
            continue;
        }
        r->needed[u] = 1;
        switch (r->state[u]) {
        case ST_RESIDENT:
            es_pol_pin(r->pol, u);
            if (r->prefetched[u]) ls->pf_hits++;
            else ls->hits++;
            break;
        case ST_LOADING:
            ls->pf_hits++; /* a prefetch in flight: part of its wait is saved */
            break;
        case ST_QUEUED: /* predicted, not started: now a demand */
            misses++;
            if (r->qkind[u] == Q_PREFETCH) {
                r->qkind[u] = Q_DEMAND;
                if (!r->in_dq[u]) { r->in_dq[u] = 1; uq_push(&r->dq, u, 0); }
            }
            break;
        default:
            misses++;
            r->state[u] = ST_QUEUED;
            r->qkind[u] = Q_DEMAND;
            if (!r->in_dq[u]) { r->in_dq[u] = 1; uq_push(&r->dq, u, 0); }
            break;
        }
    }
    ls->misses += misses;
    /* prefetched experts of this layer it did not use: the prediction missed */
    for (int e = 0; e < E; e++) {
        int u = l * E + e;
        if (r->prefetched[u] && !r->needed[u] && r->state[u] == ST_RESIDENT) {
            r->prefetched[u] = 0;
            r->n_pf_wasted++;
        }
    }
    /* predictions that did not come true and have not started: dropped */
    while (r->pq.n) {
        int u = uq_pop(&r->pq);
        r->in_pq[u] = 0;
        if (r->state[u] == ST_QUEUED && r->qkind[u] == Q_PREFETCH) {
            r->state[u] = ST_ABSENT;
            r->qkind[u] = 0;
            r->n_pf_dropped++;
        }
    }
    r->burst = misses >= r->burst_misses;
    if (r->burst) r->n_bursts++;
    if (r->dq.n) pthread_cond_broadcast(&r->cv_io);
    pthread_mutex_unlock(&r->mu);
}

int es_res_next(es_res *r, int32_t *ids, const uint8_t *(*ptr)[3]) {
    if (r->mode == ES_EXPERTS_MMAP_PLAIN) {
        int n = r->n_handed ? 0 : r->n_pend;
        for (int i = 0; i < n; i++) {
            ids[i] = r->pend[i] % r->E;
            unit_ptrs(r, r->pend[i], ptr[i]);
        }
        r->n_handed += n;
        return n;
    }
    pthread_mutex_lock(&r->mu);
    double t0 = 0;
    int n = 0;
    for (;;) {
        int left = 0, cand = -1;
        if (r->failed) { /* nothing more: the forward pass stops (es_res_failed) */
            n = 0;
            break;
        }
        for (int i = 0; i < r->n_pend; i++) {
            int u = r->pend[i];
            if (r->taken[u]) continue;
            left++;
            if (r->state[u] == ST_RESIDENT) {
                r->taken[u] = 1;
                ids[n] = u % r->E;
                unit_ptrs(r, u, ptr[n]);
                n++;
            } else if (r->state[u] == ST_QUEUED) {
                cand = u;
            }
        }
        if (n || !left) break;
        if (t0 == 0) t0 = es_res_now();
        /* nothing ready: load one ourselves (the I/O threads take the queue
         * from the front, this takes the last) or wait for them */
        if (cand >= 0 && load_unit(r, cand, 1) == 0) continue;
        pthread_cond_wait(&r->cv_done, &r->mu);
    }
    if (t0 != 0) {
        double dt = es_res_now() - t0;
        r->stall_s += dt;
        if (r->cur_T == 1) r->stall_decode_s += dt;
        r->lstats[r->cur_layer].stall_s += dt;
    }
    r->n_handed += n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

int es_res_failed(const es_res *r) { return r && __atomic_load_n(&r->failed, __ATOMIC_ACQUIRE); }

void es_res_error(es_res *r, char *err, size_t errlen) {
    pthread_mutex_lock(&r->mu);
    snprintf(err, errlen, "%s", r->failed ? r->fail_msg : "");
    pthread_mutex_unlock(&r->mu);
}

void es_res_release(es_res *r, const int32_t *ids, int n) {
    if (r->mode == ES_EXPERTS_MMAP_PLAIN) return;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < n; i++) {
        int u = r->cur_layer * r->E + ids[i];
        es_pol_use(r->pol, u, r->weight[u]);
        es_pol_unpin(r->pol, u);
        r->needed[u] = 0;
        r->prefetched[u] = 0;
    }
    pthread_cond_broadcast(&r->cv_done);
    pthread_mutex_unlock(&r->mu);
}

void es_res_end(es_res *r) {
    pthread_mutex_lock(&r->mu);
    r->n_pend = 0;
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_unlock(&r->req_mu);
}

void es_res_prefetch(es_res *r, int il, const int32_t *ids, int n) {
    if (!r->prefetch) return;
    pthread_mutex_lock(&r->mu);
    const int l = il - r->first_moe, E = r->E;
    if (l < 0 || l >= r->L) { pthread_mutex_unlock(&r->mu); return; }
    r->pred_valid[l] = 1;
    for (int i = 0; i < n; i++) r->pred[(size_t)l * E + ids[i]] = 1;
    r->lstats[l].predicted += n;
    /* on a miss burst (a batch that needed much of this layer) the whole next
     * layer, predicted experts first */
    int queued = 0, limit = (int)(r->pol->cap / 2 < E ? r->pol->cap / 2 : E);
    int total = r->burst ? n + E : n;
    for (int i = 0; i < total && queued < limit; i++) {
        int u = l * E + (i < n ? ids[i] : i - n);
        if (r->state[u] == ST_RESIDENT) {
            r->pol->u[u].fresh = 1; /* predicted: not a victim until its layer runs */
        } else if (r->state[u] == ST_ABSENT) {
            r->state[u] = ST_QUEUED;
            r->qkind[u] = Q_PREFETCH;
            if (!r->in_pq[u]) { r->in_pq[u] = 1; uq_push(&r->pq, u, 0); }
            queued++;
        }
    }
    if (queued) pthread_cond_broadcast(&r->cv_io);
    pthread_mutex_unlock(&r->mu);
}

/* ---- the state's arrays ------------------------------------------------------------ */

/* Every array es_res owns, named once: allocation, the out-of-memory check
 * and es_res_free all walk this table. */
enum { N_UNITS, N_UNIT_RANGES, N_LAYER_RANGES, N_LAYERS, N_EXPERTS, N_SLOTS, N_MINCORE };

static const struct res_array {
    size_t field;  /* where the pointer sits in es_res */
    size_t elem;   /* bytes per element */
    int count;     /* N_*: how many elements (none: left NULL) */
    int optional;  /* its absence only turns a report off */
} res_arrays[] = {
#define RES_ARRAY(f, elem, count, optional) {offsetof(es_res, f), elem, count, optional}
    RES_ARRAY(off, sizeof(uint64_t), N_UNIT_RANGES, 0),
    RES_ARRAY(len, sizeof(uint64_t), N_LAYER_RANGES, 0),
    RES_ARRAY(state, 1, N_UNITS, 0),
    RES_ARRAY(qkind, 1, N_UNITS, 0),
    RES_ARRAY(needed, 1, N_UNITS, 0),
    RES_ARRAY(taken, 1, N_UNITS, 0),
    RES_ARRAY(prefetched, 1, N_UNITS, 0),
    RES_ARRAY(pred, 1, N_UNITS, 0),
    RES_ARRAY(locked, 1, N_UNITS, 0),
    RES_ARRAY(in_dq, 1, N_UNITS, 0),
    RES_ARRAY(in_pq, 1, N_UNITS, 0),
    RES_ARRAY(weight, sizeof(int32_t), N_UNITS, 0),
    RES_ARRAY(slot, sizeof(int32_t), N_UNITS, 0),
    RES_ARRAY(pend, sizeof(int32_t), N_EXPERTS, 0),
    RES_ARRAY(pred_valid, 1, N_LAYERS, 0),
    RES_ARRAY(lstats, sizeof(es_res_layer_stats), N_LAYERS, 0),
    RES_ARRAY(dq.buf, sizeof(int32_t), N_UNITS, 0),
    RES_ARRAY(pq.buf, sizeof(int32_t), N_UNITS, 0),
    RES_ARRAY(free_slot, sizeof(int32_t), N_SLOTS, 0),
    RES_ARRAY(mincore_vec, 1, N_MINCORE, 1),
#undef RES_ARRAY
};

static size_t array_count(const es_res *r, int count) {
    switch (count) {
    case N_UNITS: return (size_t)r->U;
    case N_UNIT_RANGES: return (size_t)r->U * 3;
    case N_LAYER_RANGES: return (size_t)r->L * 3;
    case N_LAYERS: return (size_t)r->L;
    case N_EXPERTS: return (size_t)r->E;
    case N_SLOTS: return r->n_slots;
    default: return r->mincore_cap;
    }
}

/* The pointers are of several types: copied as bytes, not through a void **. */
static void *array_get(const es_res *r, const struct res_array *a) {
    void *v;
    memcpy(&v, (const char *)r + a->field, sizeof v);
    return v;
}

static void array_set(es_res *r, const struct res_array *a, void *v) { memcpy((char *)r + a->field, &v, sizeof v); }

/* Allocates (zeroed) every array with elements; -1 when a required one failed. */
static int alloc_arrays(es_res *r) {
    for (size_t i = 0; i < sizeof res_arrays / sizeof res_arrays[0]; i++) {
        const struct res_array *a = &res_arrays[i];
        size_t n = array_count(r, a->count);
        if (!n) continue;
        void *v = calloc(n, a->elem);
        if (!v && !a->optional) return -1;
        array_set(r, a, v);
    }
    return 0;
}

static void free_arrays(es_res *r) {
    for (size_t i = 0; i < sizeof res_arrays / sizeof res_arrays[0]; i++) free(array_get(r, &res_arrays[i]));
}

/* ---- setup, step by step (es_res_new) ------------------------------------------------ */

static int params_valid(const es_load_params *p) {
    return p->experts >= ES_EXPERTS_DEFAULT && p->experts <= ES_EXPERTS_PREAD && p->policy >= 0 &&
           p->policy <= ES_POLICY_LFU && p->mem_budget >= 0 && p->io_threads >= -1 && p->io_threads <= 64 &&
           p->n_ctx >= 0;
}

/* Owns the scalars the layout and parameters give, the locks, and the
 * counters' starting points (major faults, bytes read). */
static void init_state(es_res *r, const es_res_layout *lay, const es_load_params *p) {
    r->fd = r->fd_direct = -1;
    r->path = strdup(lay->path ? lay->path : "the model file");
    r->mode = p->experts;
    r->policy_kind = p->policy == ES_POLICY_LFU ? ES_POL_LFU : ES_POL_LRU;
    r->base = lay->base;
    r->first_moe = lay->first_moe;
    r->L = lay->n_moe;
    r->E = lay->n_experts;
    r->k = lay->n_used;
    r->U = r->L * r->E;
    r->page = (uint64_t)sysconf(_SC_PAGESIZE);
    r->align = r->page > 4096 ? r->page : 4096;
    r->mlock = p->mlock;
    r->stats_plain = p->stats;
    /* more misses than one token can cause: a batch (prefill) that needs much
     * of the layer, whose neighbour will need as much */
    r->burst_misses = r->E / 4 > r->k + 1 ? r->E / 4 : r->k + 1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->req_mu, NULL);
    pthread_cond_init(&r->cv_io, NULL);
    pthread_cond_init(&r->cv_done, NULL);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    r->majflt0 = ru.ru_majflt;
    r->read_bytes0 = es_res_proc_read_bytes();
}

/* Owns the sizes that follow from the unit ranges: all experts' bytes, the
 * widest unit (the budget's unit), a pread slot and where each range sits
 * in it, and the mincore vector mmap-plain --stats needs. */
static void size_units(es_res *r, const es_res_layout *lay) {
    uint64_t maxlen[3] = {0, 0, 0};
    for (int l = 0; l < r->L; l++) {
        uint64_t unit = 0;
        for (int q = 0; q < 3; q++) {
            uint64_t bytes = lay->ranges[(size_t)l * 3 + q].bytes;
            if (bytes > maxlen[q]) maxlen[q] = bytes;
            unit += bytes;
        }
        int n_owned = r->E;
        if (lay->owned) {
            n_owned = 0;
            for (int e = 0; e < r->E; e++) n_owned += lay->owned[(size_t)l * r->E + e] != 0;
        }
        r->U_owned += n_owned;
        r->expert_bytes_total += (int64_t)unit * n_owned;
        if ((int64_t)unit > r->unit_bytes) r->unit_bytes = (int64_t)unit;
    }
    /* a pread slot holds each range's aligned cover: at most len rounded up
     * plus one alignment unit */
    r->slot_bytes = 0;
    for (int q = 0; q < 3; q++) {
        r->sofs[q] = r->slot_bytes;
        r->slot_bytes += (size_t)(rup(maxlen[q], r->align) + r->align);
    }
    r->hot_bytes = lay->hot_bytes;
    if (r->mode == ES_EXPERTS_MMAP_PLAIN && r->stats_plain) {
        uint64_t widest = maxlen[0] > maxlen[1] ? maxlen[0] : maxlen[1];
        if (maxlen[2] > widest) widest = maxlen[2];
        r->mincore_cap = (size_t)(rup(widest, r->page) / r->page) + 2;
    }
}

/* Owns the budget: given (--mem-budget) or what memory is left after the
 * always-hot weights, a session and a margin; the mode when it was left to
 * the budget; and *cap, how many units fit. */
static es_status decide_budget(es_res *r, const es_res_layout *lay, const es_load_params *p, int64_t *cap,
                               char *err, size_t errlen) {
    es_mem_probe(&r->mem);
    r->session_bytes = lay->session_bytes;
    if (p->mem_budget > 0) {
        r->budget = p->mem_budget;
    } else {
        r->budget_auto = 1;
        int64_t avail = r->mem.available >= 0 ? r->mem.available : (int64_t)8 << 30;
        /* page tables, readahead in flight, the allocator's slack */
        r->margin = (32 << 20) + avail / 32;
        r->budget = avail - r->hot_bytes - r->session_bytes - r->margin;
    }
    /* The default (README "Paging", measured): when every expert fits, the
     * mapping as it is (no copy, and the page cache outlives the process);
     * when they do not, pread into a cache: O_DIRECT costs the two or so
     * cores a small machine has far less than the page cache's bookkeeping,
     * and the cache sits on huge pages. */
    if (r->mode == ES_EXPERTS_DEFAULT) {
        r->mode = r->budget >= r->expert_bytes_total ? ES_EXPERTS_MMAP : ES_EXPERTS_PREAD;
        r->mode_auto = 1;
    }
    if (!r->budget_auto && r->mode == ES_EXPERTS_MMAP_PLAIN) {
        snprintf(err, errlen, "a memory budget has no effect in mmap-plain mode (the kernel pages on demand); "
                              "choose mmap or pread to page the experts under one");
        return ES_ERR_ARG;
    }
    if (r->budget_auto && r->mode != ES_EXPERTS_MMAP_PLAIN && r->mem.available >= 0 &&
        r->mem.available < r->hot_bytes + r->session_bytes) {
        snprintf(err, errlen, "%lld bytes of memory are available, less than the always-hot weights (%lld bytes) and "
                              "a session (%lld bytes) need; an explicit memory budget pages the experts anyway",
                 (long long)r->mem.available, (long long)r->hot_bytes, (long long)r->session_bytes);
        return ES_ERR_NOMEM;
    }
    /* pread: an expert costs a cache slot (stats.c words it the same way) */
    int64_t cost = r->mode == ES_EXPERTS_PREAD ? (int64_t)r->slot_bytes : r->unit_bytes;
    if (!r->budget_auto && r->mode != ES_EXPERTS_MMAP_PLAIN && r->budget < cost) {
        if (r->mode == ES_EXPERTS_PREAD)
            snprintf(err, errlen,
                     "memory budget %lld bytes is smaller than one expert's cache slot (%lld bytes: the widest "
                     "expert's %lld bytes, each range aligned for direct I/O)",
                     (long long)r->budget, (long long)cost, (long long)r->unit_bytes);
        else
            snprintf(err, errlen, "memory budget %lld bytes is smaller than one expert (%lld bytes)",
                     (long long)r->budget, (long long)cost);
        return ES_ERR_ARG;
    }
    if (r->budget_auto) {
        if (r->budget < cost * r->k) {
            snprintf(r->budget_note, sizeof r->budget_note,
                     "only %lld bytes left for experts; using the minimum of one layer's %d experts",
                     (long long)r->budget, r->k);
            r->budget = cost * r->k;
        }
    }
    *cap = r->budget / cost;
    if (*cap > r->U_owned) *cap = r->U_owned;
    if (*cap < 1) *cap = 1;
    return ES_OK;
}

/* Owns the memory of the bookkeeping: the arrays (res_arrays), the unit
 * table's file offsets and lengths, and the replacement policy of cap units. */
static es_status alloc_state(es_res *r, const es_res_layout *lay, const es_load_params *p, int64_t cap, char *err,
                             size_t errlen) {
    if (r->mode == ES_EXPERTS_PREAD) r->n_slots = (size_t)cap;
    if (alloc_arrays(r) != 0) {
        snprintf(err, errlen, "out of memory for the expert table");
        return ES_ERR_NOMEM;
    }
    if (!r->mincore_vec) r->stats_plain = 0; /* mmap-plain reports hits only with it */
    const size_t U = (size_t)r->U;
    r->dq.cap = r->pq.cap = (int)U;
    for (size_t u = 0; u < U; u++) r->slot[u] = -1;
    for (int l = 0; l < r->L; l++)
        for (int q = 0; q < 3; q++) {
            const es_res_range *rg = &lay->ranges[(size_t)l * 3 + q];
            r->len[(size_t)l * 3 + q] = rg->bytes;
            for (int e = 0; e < r->E; e++) r->off[((size_t)l * r->E + e) * 3 + q] = rg->offset + (uint64_t)e * rg->stride;
        }
    double half_life = p->lfu_half_life > 0 ? p->lfu_half_life : p->lfu_half_life < 0 ? 0 : 32;
    r->pol = es_pol_new(r->policy_kind, r->L, r->E, cap, half_life);
    if (!r->pol) {
        snprintf(err, errlen, "out of memory for the expert table");
        return ES_ERR_NOMEM;
    }
    return ES_OK;
}

/* Owns the file descriptors: the model file opened again (fd, for fadvise
 * and buffered reads; fd_direct with O_DIRECT for pread, where allowed),
 * checked to be the file that was mapped. */
static es_status open_file(es_res *r, const es_res_layout *lay, const es_load_params *p, char *err, size_t errlen) {
    r->fd = open(lay->path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (r->fd < 0 || fstat(r->fd, &st) != 0 || (uint64_t)st.st_size != lay->map_size) {
        snprintf(err, errlen, "cannot reopen %s for expert paging: %s", lay->path,
                 r->fd < 0 ? strerror(errno) : "it changed");
        return ES_ERR_IO;
    }
    r->file_size = (uint64_t)st.st_size;
    r->file_mtime = st.st_mtim;
    if (r->mode == ES_EXPERTS_PREAD && !p->no_direct) r->fd_direct = open(lay->path, O_RDONLY | O_CLOEXEC | O_DIRECT);
    return ES_OK;
}

/* Owns the pread cache: n_slots slots of slot_bytes, all free. */
static es_status make_cache(es_res *r, char *err, size_t errlen) {
    r->slab_bytes = r->n_slots * r->slot_bytes;
    /* Plain pages: transparent huge pages (MADV_HUGEPAGE) were measured to
     * cost 4-5x the CPU per load in compaction when the cache first fills,
     * doubling the time to first token, for no clear decode gain. */
    uint8_t *slab = mmap(NULL, r->slab_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (slab == MAP_FAILED) {
        snprintf(err, errlen, "out of memory for a %lld-byte expert cache", (long long)r->slab_bytes);
        return ES_ERR_NOMEM;
    }
    r->slab = slab;
    for (size_t i = 0; i < r->n_slots; i++) r->free_slot[i] = (int32_t)(r->n_slots - 1 - i);
    r->n_free = r->n_slots;
    if (r->mlock && mlock2(r->slab, r->slab_bytes, MLOCK_ONFAULT) != 0)
        snprintf(r->mlock_note, sizeof r->mlock_note, "mlock of the expert cache failed: %s", strerror(errno));
    return ES_OK;
}

/* Owns the advice on the mapping.  The always-hot weights: read ahead (and
 * locked with mlock) in the managed modes, so the first token does not
 * fault them in 4 KiB at a time.  The embedding is read a row per token,
 * and in mmap mode stray faults on expert pages should not pull in their
 * neighbours: both get MADV_RANDOM, or each fault would read around it
 * (read_ahead_kb, often 128 KiB-8 MiB), all of it charged to the memory
 * budget.  Then whether loads can use MADV_POPULATE_READ. */
static void advise_mapping(es_res *r, const es_res_layout *lay) {
    int lock_failed = 0;
    for (size_t i = 0; i < lay->n_regions; i++) {
        const es_res_region *t = &lay->regions[i];
        if (!t->bytes) continue;
        uint64_t lo = rdown(t->offset, r->page), hi = rup(t->offset + t->bytes, r->page);
        void *a = (void *)(r->base + lo);
        size_t n = (size_t)(hi - lo);
        if (t->kind == ES_RES_RANDOM || (t->kind == ES_RES_EXPERTS && r->mode == ES_EXPERTS_MMAP)) {
            madvise(a, n, MADV_RANDOM);
            continue;
        }
        if (t->kind == ES_RES_EXPERTS) continue;
        madvise(a, n, MADV_WILLNEED);
        if (r->mlock && !lock_failed && mlock(a, n) != 0) {
            lock_failed = 1;
            snprintf(r->mlock_note, sizeof r->mlock_note, "mlock of the hot weights failed: %s", strerror(errno));
        }
    }
    /* MADV_POPULATE_READ came with Linux 5.14; before, loads touch each page */
    r->populate = madvise((void *)r->base, (size_t)r->page, MADV_POPULATE_READ) == 0;
}

/* Owns the I/O threads, and with them whether prefetching is on. */
static void start_io(es_res *r, const es_load_params *p) {
    /* 4 loaders: measured 12% faster decode than 2 with pread (more reads in
     * flight), no different with mmap */
    int nt = p->io_threads == 0 ? 4 : p->io_threads < 0 ? 0 : p->io_threads;
    r->threads = calloc((size_t)(nt ? nt : 1), sizeof(pthread_t));
    for (int i = 0; r->threads && i < nt; i++) {
        if (pthread_create(&r->threads[i], NULL, io_main, r) != 0) break;
        r->n_threads++;
    }
    r->prefetch = !p->no_prefetch && r->n_threads > 0;
}

es_status es_res_new(const es_res_layout *lay, const es_load_params *p, es_res **out, char *err, size_t errlen) {
    static const es_load_params defaults = {0};
    *out = NULL;
    if (!p) p = &defaults;
    if (lay->n_moe <= 0) return ES_OK; /* no routed experts */
    if (!params_valid(p)) {
        snprintf(err, errlen, "invalid paging parameters");
        return ES_ERR_ARG;
    }
    es_res *r = calloc(1, sizeof *r);
    if (!r) { snprintf(err, errlen, "out of memory"); return ES_ERR_NOMEM; }
    init_state(r, lay, p);
    size_units(r, lay);
    int64_t cap = 0;
    es_status st = decide_budget(r, lay, p, &cap, err, errlen);
    if (st == ES_OK) st = alloc_state(r, lay, p, cap, err, errlen);
    /* mmap-plain: no management, so no file, cache, advice or threads */
    const int managed = r->mode != ES_EXPERTS_MMAP_PLAIN;
    if (st == ES_OK && managed) st = open_file(r, lay, p, err, errlen);
    if (st == ES_OK && r->mode == ES_EXPERTS_PREAD) st = make_cache(r, err, errlen);
    if (st != ES_OK) {
        es_res_free(r);
        return st;
    }
    if (managed) {
        advise_mapping(r, lay);
        start_io(r, p);
    }
    *out = r;
    return ES_OK;
}

void es_res_free(es_res *r) {
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_broadcast(&r->cv_io);
    pthread_cond_broadcast(&r->cv_done);
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < r->n_threads; i++) pthread_join(r->threads[i], NULL);
    free(r->threads);
    if (r->slab) munmap(r->slab, r->slab_bytes);
    if (r->fd >= 0) close(r->fd);
    if (r->fd_direct >= 0) close(r->fd_direct);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->req_mu);
    pthread_cond_destroy(&r->cv_io);
    pthread_cond_destroy(&r->cv_done);
    free_arrays(r);
    es_pol_free(r->pol);
    free(r->path);
    free(r);
}

int es_res_mode(const es_res *r) { return r->mode; }
