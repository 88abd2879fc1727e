/* fault.c — the SIGBUS handler for watched file mappings (see fault.h). */
#include "fault.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAX_WATCHES 64

struct es_fault_watch {
    _Atomic uintptr_t lo, hi;      /* the range; lo 0: the slot is free */
    _Atomic uint64_t first;        /* first faulting offset, UINT64_MAX: none */
    atomic_int hit;
    int used;                      /* taken (under table_mu) */
};

static struct es_fault_watch table[MAX_WATCHES];
static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static int installed;
static struct sigaction previous;  /* the handler before ours */
static uintptr_t page_size;

/* The fault is not ours: the previous handler's turn, or the default
 * action (the access is not repeated for a sent signal, so raise it). */
static void chain(int sig, siginfo_t *si, void *uc) {
    if (previous.sa_flags & SA_SIGINFO) {
        if (previous.sa_sigaction) previous.sa_sigaction(sig, si, uc);
        return;
    }
    if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
        return;
    }
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    raise(sig);
}

/* Only async-signal-safe work: atomics, mmap (a system call), sigaction. */
static void on_sigbus(int sig, siginfo_t *si, void *uc) {
    int saved_errno = errno;
    uintptr_t a = (uintptr_t)si->si_addr;
    if (si->si_code > 0) /* raised by the kernel for an access, not sent */
        for (int i = 0; i < MAX_WATCHES; i++) {
            uintptr_t lo = atomic_load(&table[i].lo);
            if (!lo || a < lo || a >= atomic_load(&table[i].hi)) continue;
            uint64_t none = UINT64_MAX;
            atomic_compare_exchange_strong(&table[i].first, &none, (uint64_t)(a - lo));
            atomic_store(&table[i].hit, 1);
            void *pg = (void *)(a & ~(page_size - 1));
            if (mmap(pg, page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED) {
                errno = saved_errno;
                return; /* the access repeats and reads zeros */
            }
            break;
        }
    errno = saved_errno;
    chain(sig, si, uc);
}

static void install(void) {
    long ps = sysconf(_SC_PAGESIZE);
    page_size = ps > 0 ? (uintptr_t)ps : 4096;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    /* SA_NODEFER: a second fault (another page, another thread) while one
     * is handled is handled too, instead of killing the process */
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    installed = sigaction(SIGBUS, &sa, &previous) == 0;
}

es_fault_watch *es_fault_watch_new(const void *base, size_t len) {
    if (!base || !len) return NULL;
    pthread_once(&install_once, install);
    if (!installed) return NULL;
    es_fault_watch *w = NULL;
    pthread_mutex_lock(&table_mu);
    for (int i = 0; i < MAX_WATCHES && !w; i++)
        if (!table[i].used) {
            w = &table[i];
            w->used = 1;
            atomic_store(&w->first, UINT64_MAX);
            atomic_store(&w->hit, 0);
            atomic_store(&w->hi, (uintptr_t)base + len);
            atomic_store(&w->lo, (uintptr_t)base); /* published last */
        }
    pthread_mutex_unlock(&table_mu);
    return w;
}

void es_fault_unwatch(es_fault_watch *w) {
    if (!w) return;
    pthread_mutex_lock(&table_mu);
    atomic_store(&w->lo, 0);
    w->used = 0;
    pthread_mutex_unlock(&table_mu);
}

int es_fault_hit(const es_fault_watch *w, uint64_t *offset) {
    if (!w || !atomic_load_explicit(&w->hit, memory_order_relaxed)) return 0;
    if (offset) *offset = atomic_load(&w->first);
    return 1;
}
