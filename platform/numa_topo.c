/* numa_topo.c — see numa_topo.h.  Owns topology detection (libnuma / sysfs /
 * fake), thread pinning to a node, and the two memory-policy system calls
 * (mbind, move_pages) that weight placement (runtime/placement.c) uses.
 *
 * Built with libnuma (ES_HAVE_LIBNUMA, the Makefile's default when
 * <numa.h> is present) the topology comes from libnuma and mbind/move_pages
 * from its wrappers; without it the same calls go through syscall(2) and
 * the topology through /sys/devices/system/node. */
#include "numa_topo.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef ES_HAVE_LIBNUMA
#include <numa.h>
#include <numaif.h>
#elif defined(__linux__)
#include <sys/syscall.h>
#endif

/* ---- system calls ----------------------------------------------------------- */

long es_numa_mbind(void *addr, size_t len, int mode, const unsigned long *mask, unsigned long maxnode,
                   unsigned flags) {
#ifdef ES_HAVE_LIBNUMA
    return mbind(addr, len, mode, mask, maxnode, flags);
#elif defined(__linux__) && defined(SYS_mbind)
    return syscall(SYS_mbind, addr, len, mode, mask, maxnode, flags);
#else
    (void)addr; (void)len; (void)mode; (void)mask; (void)maxnode; (void)flags;
    errno = ENOSYS;
    return -1;
#endif
}

long es_numa_move_pages(unsigned long count, void **pages, const int *nodes, int *status, int flags) {
#ifdef ES_HAVE_LIBNUMA
    return move_pages(0, count, pages, nodes, status, flags);
#elif defined(__linux__) && defined(SYS_move_pages)
    return syscall(SYS_move_pages, 0, count, pages, nodes, status, flags);
#else
    (void)count; (void)pages; (void)nodes; (void)status; (void)flags;
    errno = ENOSYS;
    return -1;
#endif
}

int es_numa_page_node(const void *addr) {
    void *page = (void *)((uintptr_t)addr & ~(uintptr_t)(sysconf(_SC_PAGESIZE) - 1));
    int status = -1;
    if (es_numa_move_pages(1, &page, NULL, &status, 0) != 0) return -1;
    return status >= 0 ? status : -1;
}

/* ---- topology ---------------------------------------------------------------- */

/* Parses a sysfs cpulist ("0-3,8,10-11") into flags[cpu] = val. */
static void parse_cpulist(const char *s, int *flags, int n, int val) {
    while (*s) {
        char *end;
        long a = strtol(s, &end, 10), b;
        if (end == s) return;
        b = a;
        s = end;
        if (*s == '-') {
            b = strtol(s + 1, &end, 10);
            if (end == s + 1) return;
            s = end;
        }
        for (long c = a; c <= b && c < n; c++)
            if (c >= 0) flags[c] = val;
        while (*s == ',' || *s == '\n' || *s == ' ') s++;
    }
}

/* cpu_node[c] = kernel node of CPU c (-1 unknown); returns how many kernel
 * nodes exist (0: none found) and names the source. */
static int kernel_nodes(int *cpu_node, int n_cpu_ids, const char **source) {
    for (int c = 0; c < n_cpu_ids; c++) cpu_node[c] = -1;
#ifdef ES_HAVE_LIBNUMA
    if (numa_available() >= 0) {
        for (int c = 0; c < n_cpu_ids; c++) cpu_node[c] = numa_node_of_cpu(c);
        *source = "libnuma";
        int n = numa_num_configured_nodes();
        return n > 0 ? n : 1;
    }
#endif
    int found = 0;
    for (int node = 0; node < 4096 && found < ES_MAX_NODES * 4; node++) {
        char path[96], buf[4096];
        snprintf(path, sizeof path, "/sys/devices/system/node/node%d/cpulist", node);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t r = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[r] = 0;
        parse_cpulist(buf, cpu_node, n_cpu_ids, node);
        found++;
    }
    *source = found ? "sysfs" : "none";
    return found;
}

void es_numa_detect(es_numa_topo *t, int fake_nodes) {
    memset(t, 0, sizeof *t);
    enum { MAXC = 1024 };
    static const int max_cpus = (int)(sizeof t->cpus / sizeof t->cpus[0]);
    int usable[MAXC], n_usable = 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        for (int c = 0; c < MAXC && c < CPU_SETSIZE && n_usable < max_cpus; c++)
            if (CPU_ISSET(c, &set)) usable[n_usable++] = c;
    }
    if (!n_usable) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        for (int c = 0; c < online && c < max_cpus; c++) usable[n_usable++] = c;
        if (!n_usable) usable[n_usable++] = 0;
    }
    int node_of[MAXC];
    int real = kernel_nodes(node_of, MAXC, &t->source);
    t->real_nodes = real > 0 ? real : 1;

    /* real nodes holding usable CPUs, in kernel id order; unknown → node 0 */
    int ids[ES_MAX_NODES], n_ids = 0;
    for (int i = 0; i < n_usable; i++) {
        int nd = node_of[usable[i]] < 0 ? 0 : node_of[usable[i]];
        int seen = 0;
        for (int j = 0; j < n_ids; j++) seen |= ids[j] == nd;
        if (!seen && n_ids < ES_MAX_NODES) ids[n_ids++] = nd;
    }
    for (int a = 1; a < n_ids; a++)
        for (int b = a; b > 0 && ids[b - 1] > ids[b]; b--) { int x = ids[b]; ids[b] = ids[b - 1]; ids[b - 1] = x; }
    /* node-major CPU list */
    int n = 0;
    for (int k = 0; k < n_ids; k++) {
        t->cpu_start[k] = n;
        for (int i = 0; i < n_usable; i++) {
            int nd = node_of[usable[i]] < 0 ? 0 : node_of[usable[i]];
            if (nd == ids[k]) t->cpus[n++] = usable[i];
        }
        t->real_id[k] = ids[k];
    }
    t->n_nodes = n_ids;
    t->cpu_start[n_ids] = n;
    t->n_cpus = n;

    if (fake_nodes >= 1 && fake_nodes <= ES_MAX_NODES) {
        /* split the usable CPUs evenly; with fewer CPUs than nodes they are
         * shared round-robin.  A fake node stands for its first CPU's node. */
        int cpus[1024], m = n;
        int real_of_cpu[1024];
        for (int i = 0; i < m; i++) {
            cpus[i] = t->cpus[i];
            int k = 0;
            while (k + 1 < n_ids && i >= t->cpu_start[k + 1]) k++;
            real_of_cpu[i] = t->real_id[k];
        }
        int N = fake_nodes, w = 0;
        for (int k = 0; k < N; k++) {
            t->cpu_start[k] = w;
            if (m >= N) {
                for (int i = k * m / N; i < (k + 1) * m / N; i++) t->cpus[w++] = cpus[i];
                t->real_id[k] = real_of_cpu[k * m / N];
            } else {
                t->cpus[w++] = cpus[k % m];
                t->real_id[k] = real_of_cpu[k % m];
            }
        }
        t->cpu_start[N] = w;
        t->n_cpus = w;
        t->n_nodes = N;
        t->fake = 1;
    }
}

static es_numa_topo g_topo;
static pthread_once_t g_topo_once = PTHREAD_ONCE_INIT;
static void topo_init(void) { es_numa_detect(&g_topo, 0); }

const es_numa_topo *es_numa_topo_get(void) {
    pthread_once(&g_topo_once, topo_init);
    return &g_topo;
}

int es_numa_pin_self(const es_numa_topo *t, int node) {
    if (!t || node < 0 || node >= t->n_nodes) return -1;
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int i = t->cpu_start[node]; i < t->cpu_start[node + 1]; i++)
        if (t->cpus[i] >= 0 && t->cpus[i] < CPU_SETSIZE) CPU_SET(t->cpus[i], &set);
    if (CPU_COUNT(&set) == 0) return -1;
    /* containers may forbid it: the caller just runs unpinned */
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0 ? 0 : -1;
}

