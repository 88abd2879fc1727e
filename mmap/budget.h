/* budget.h — how much memory this process may use: the memory cgroup's
 * limit (v1 or v2, the tightest along the path to the root) less what the
 * group already holds that cannot be reclaimed, and MemAvailable; and the
 * size strings of --mem-budget. */
#ifndef ES_BUDGET_H
#define ES_BUDGET_H

#include <stdint.h>

typedef struct es_mem_info {
    int cgroup_version;     /* 0: no memory cgroup limit found; 1 or 2 */
    int64_t cgroup_limit;   /* bytes, -1: none */
    int64_t cgroup_usage;   /* bytes charged to that group, -1: unknown */
    int64_t cgroup_file;    /* of which page cache (reclaimable), -1: unknown */
    int64_t mem_available;  /* /proc/meminfo MemAvailable, -1: unknown */
    int64_t available;      /* what this process may still use, -1: unknown */
} es_mem_info;

void es_mem_probe(es_mem_info *mi);
/* The same with every path under sysroot ("" = this system): for tests. */
void es_mem_probe_at(es_mem_info *mi, const char *sysroot);

/* Parses "123", "4K", "512M", "4G", "1T" (binary multiples, optional "B"/"iB"
 * after the letter, a decimal fraction allowed with a suffix: "1.5G").
 * Returns 0, or -1 for anything else (negative, overflow, junk). */
int es_parse_bytes(const char *s, int64_t *out);

#endif
