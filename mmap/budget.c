/* budget.c — memory available to this process (memory cgroup v1/v2 and
 * /proc/meminfo) and --mem-budget size strings.  See budget.h. */
#include "budget.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* First integer in a file, or -1 ("max" and unreadable files give -1). */
static int64_t read_int_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char buf[64];
    int64_t v = -1;
    if (fgets(buf, sizeof buf, f)) {
        char *end;
        errno = 0;
        long long x = strtoll(buf, &end, 10);
        if (!errno && end != buf && x >= 0) v = x;
    }
    fclose(f);
    return v;
}

/* Value of `key` (a line "key value") in a stat file such as memory.stat or
 * meminfo ("MemAvailable:  123 kB": mult 1024), or -1. */
static int64_t read_stat_key(const char *path, const char *key, int64_t mult) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    int64_t v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) != 0 || (line[kl] != ' ' && line[kl] != ':' && line[kl] != '\t')) continue;
        const char *p = line + kl;
        while (*p == ':' || *p == ' ' || *p == '\t') p++;
        long long x = strtoll(p, NULL, 10);
        if (x >= 0) v = (int64_t)x * mult;
        break;
    }
    fclose(f);
    return v;
}

/* This process's path in the hierarchy: the "N:memory:/path" line (v1,
 * version 1) or the "0::/path" line (v2, version 2). */
static int cgroup_path(const char *sysroot, int version, char *out, size_t cap) {
    char pc[4096];
    snprintf(pc, sizeof pc, "%s/proc/self/cgroup", sysroot);
    FILE *f = fopen(pc, "r");
    if (!f) return -1;
    char line[4096];
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c1 = 0; /* line: the hierarchy id; c1 + 1: the controllers; c2 + 1: the path */
        *c2 = 0;
        const char *ctl = c1 + 1;
        int match = 0;
        if (version == 2) {
            match = strcmp(line, "0") == 0 && *ctl == 0;
        } else {
            /* the controller list may be "memory" or e.g. "memory,foo" */
            char list[256];
            snprintf(list, sizeof list, ",%s,", ctl);
            match = strstr(list, ",memory,") != NULL;
        }
        if (match && strlen(c2 + 1) < cap) {
            snprintf(out, cap, "%s", c2 + 1);
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

/* Walks from the process's group up to the root of the hierarchy mounted at
 * root and keeps the tightest limit with that group's usage. */
static void probe_hierarchy(es_mem_info *mi, const char *sysroot, int version, const char *root) {
    char rel[2048];
    if (cgroup_path(sysroot, version, rel, sizeof rel) != 0) return;
    const char *limit_f = version == 1 ? "memory.limit_in_bytes" : "memory.max";
    const char *usage_f = version == 1 ? "memory.usage_in_bytes" : "memory.current";
    /* v1 memory.stat counts the group with its children as total_*; v2 always does */
    const char *active_k = version == 1 ? "total_active_file" : "active_file";
    const char *inactive_k = version == 1 ? "total_inactive_file" : "inactive_file";
    for (;;) {
        char dir[4096], path[4200];
        snprintf(dir, sizeof dir, "%s%s%s", sysroot, root, strcmp(rel, "/") ? rel : "");
        snprintf(path, sizeof path, "%s/%s", dir, limit_f);
        int64_t lim = read_int_file(path);
        /* v1 writes "no limit" as a huge page-rounded number */
        if (lim > 0 && lim < ((int64_t)1 << 60) && (mi->cgroup_limit < 0 || lim < mi->cgroup_limit)) {
            mi->cgroup_limit = lim;
            mi->cgroup_version = version;
            snprintf(path, sizeof path, "%s/%s", dir, usage_f);
            mi->cgroup_usage = read_int_file(path);
            snprintf(path, sizeof path, "%s/memory.stat", dir);
            int64_t a = read_stat_key(path, active_k, 1), i = read_stat_key(path, inactive_k, 1);
            mi->cgroup_file = a >= 0 && i >= 0 ? a + i : -1;
        }
        char *slash = strrchr(rel, '/');
        if (!slash || (slash == rel && rel[1] == 0)) break;
        if (slash == rel) rel[1] = 0;
        else *slash = 0;
    }
}

void es_mem_probe(es_mem_info *mi) { es_mem_probe_at(mi, ""); }

void es_mem_probe_at(es_mem_info *mi, const char *sysroot) {
    memset(mi, 0, sizeof *mi);
    mi->cgroup_limit = mi->cgroup_usage = mi->cgroup_file = -1;
    char path[4096];
    snprintf(path, sizeof path, "%s/proc/meminfo", sysroot);
    mi->mem_available = read_stat_key(path, "MemAvailable", 1024);
    snprintf(path, sizeof path, "%s/sys/fs/cgroup/memory/memory.limit_in_bytes", sysroot);
    FILE *f = fopen(path, "r");
    if (f) {
        fclose(f);
        probe_hierarchy(mi, sysroot, 1, "/sys/fs/cgroup/memory");
    }
    snprintf(path, sizeof path, "%s/sys/fs/cgroup/cgroup.controllers", sysroot);
    f = fopen(path, "r");
    if (f) {
        fclose(f);
        probe_hierarchy(mi, sysroot, 2, "/sys/fs/cgroup");
    }
    mi->available = mi->mem_available;
    if (mi->cgroup_limit >= 0) {
        /* page cache in the group is reclaimable; the rest is not */
        int64_t held = mi->cgroup_usage >= 0 ? mi->cgroup_usage - (mi->cgroup_file > 0 ? mi->cgroup_file : 0) : 0;
        if (held < 0) held = 0;
        int64_t cg = mi->cgroup_limit - held;
        if (cg < 0) cg = 0;
        if (mi->available < 0 || cg < mi->available) mi->available = cg;
    }
}

int es_parse_bytes(const char *s, int64_t *out) {
    if (!s) return -1;
    while (isspace((unsigned char)*s)) s++;
    if (!isdigit((unsigned char)*s)) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v >= 0)) return -1;
    double mult = 1;
    const char *p = end;
    switch (toupper((unsigned char)*p)) {
    case 'K': mult = 1024.0; p++; break;
    case 'M': mult = 1024.0 * 1024; p++; break;
    case 'G': mult = 1024.0 * 1024 * 1024; p++; break;
    case 'T': mult = 1024.0 * 1024 * 1024 * 1024; p++; break;
    default: break;
    }
    if (mult > 1 && (*p == 'i' || *p == 'I')) p++;
    if (*p == 'B' || *p == 'b') p++;
    if (*p) return -1;
    /* a fraction needs a unit: "1.5" bytes is not a size */
    if (mult == 1 && memchr(s, '.', (size_t)(end - s))) return -1;
    if (memchr(s, 'e', (size_t)(end - s)) || memchr(s, 'E', (size_t)(end - s)) ||
        memchr(s, 'x', (size_t)(end - s)) || memchr(s, 'X', (size_t)(end - s)))
        return -1;
    double b = v * mult;
    if (!(b < 9.0e18)) return -1;
    *out = (int64_t)b;
    return 0;
}
