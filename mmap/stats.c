/* stats.c — the paging report (--stats) and counters of the residency
 * manager: configuration and budget, per-layer expert hit rates, prefetch
 * accuracy, bytes loaded and read from storage, major page faults and the
 * time the forward pass stalled on I/O. */
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "residency_impl.h"

int64_t es_res_proc_read_bytes(void) {
    FILE *f = fopen("/proc/self/io", "r");
    if (!f) return -1;
    char line[128];
    int64_t v = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "read_bytes:", 11)) {
            v = strtoll(line + 11, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static const char *gib(char *buf, size_t n, double b) {
    if (b >= 1024.0 * 1024 * 1024) snprintf(buf, n, "%.2f GiB", b / (1024.0 * 1024 * 1024));
    else if (b >= 1024.0 * 1024) snprintf(buf, n, "%.1f MiB", b / (1024.0 * 1024));
    else snprintf(buf, n, "%.1f KiB", b / 1024.0);
    return buf;
}

static double pct(int64_t a, int64_t b) { return b ? 100.0 * (double)a / (double)b : 0.0; }

void es_res_get_counts(es_res *r, es_res_counts *c) {
    memset(c, 0, sizeof *c);
    pthread_mutex_lock(&r->mu);
    for (int l = 0; l < r->L; l++) {
        const es_res_layer_stats *s = &r->lstats[l];
        c->accesses += s->accesses;
        c->hits += s->hits;
        c->prefetch_hits += s->pf_hits;
        c->misses += s->misses;
        c->predicted += s->predicted;
        c->predicted_used += s->pred_used;
        c->actual_predicted += s->pred_actual;
    }
    c->loads = r->n_loads + r->n_pf_loads;
    c->prefetch_loads = r->n_pf_loads;
    c->evictions = r->n_evictions;
    c->bytes_loaded = r->bytes_loaded;
    c->cap_units = r->pol->cap;
    c->resident_units = r->pol->n_resident;
    c->max_resident_units = r->max_resident;
    c->io_errors = r->n_io_errors;
    c->stall_s = r->stall_s;
    c->tokens = r->tokens;
    pthread_mutex_unlock(&r->mu);
}

static const char *mode_name(int mode) {
    return mode == ES_EXPERTS_PREAD ? "pread" : mode == ES_EXPERTS_MMAP_PLAIN ? "mmap-plain" : "mmap";
}

void es_res_print_stats(es_res *r, FILE *f) {
    es_res_counts c;
    es_res_get_counts(r, &c);
    char a[32], b[32], d[32], e[32], g[32];
    pthread_mutex_lock(&r->mu);
    const int plain = r->mode == ES_EXPERTS_MMAP_PLAIN;
    fprintf(f, "[paging] mode %s", mode_name(r->mode));
    if (r->mode == ES_EXPERTS_PREAD) fprintf(f, " (%s)", r->fd_direct >= 0 ? "O_DIRECT" : "buffered + fadvise");
    if (r->mode_auto)
        fprintf(f, " [default: the experts %s the budget]", r->mode == ES_EXPERTS_MMAP ? "fit in" : "do not fit in");
    if (!plain)
        fprintf(f, ", policy %s, prefetch %s (%d I/O threads), mlock %s", r->policy_kind == ES_POL_LFU ? "lfu" : "lru",
                r->prefetch ? "on" : "off", r->n_threads, r->mlock ? "on" : "off");
    fprintf(f, "\n");
    if (r->mlock_note[0]) fprintf(f, "[paging] %s\n", r->mlock_note);
    int64_t cost = r->mode == ES_EXPERTS_PREAD ? (int64_t)r->slot_bytes : r->unit_bytes;
    if (!plain) {
        fprintf(f, "[paging] budget %s for routed experts: %lld of %d experts (%.1f%%), %lld bytes each",
                gib(a, sizeof a, (double)r->pol->cap * (double)cost), (long long)r->pol->cap, r->U_owned,
                pct(r->pol->cap, r->U_owned), (long long)cost);
        if (r->mode == ES_EXPERTS_PREAD) /* the budget's unit, as its refusal (residency.c) words it */
            fprintf(f, " (a cache slot: the widest expert's %lld bytes, each range aligned for direct I/O)",
                    (long long)r->unit_bytes);
        if (r->budget_auto) {
            fprintf(f, "\n[paging]   = available %s", gib(a, sizeof a, (double)r->mem.available));
            if (r->mem.cgroup_version)
                fprintf(f, " (cgroup v%d limit %s)", r->mem.cgroup_version, gib(b, sizeof b, (double)r->mem.cgroup_limit));
            fprintf(f, " - always-hot weights %s - KV and scratch %s - margin %s",
                    gib(d, sizeof d, (double)r->hot_bytes), gib(e, sizeof e, (double)r->session_bytes),
                    gib(g, sizeof g, (double)r->margin));
        } else {
            fprintf(f, " (--mem-budget %s)", gib(a, sizeof a, (double)r->budget));
        }
        fprintf(f, "\n");
        if (r->budget_note[0]) fprintf(f, "[paging] %s\n", r->budget_note);
    }
    int64_t hits = c.hits + c.prefetch_hits;
    if (plain && !r->stats_plain)
        fprintf(f, "[paging] expert accesses %lld (hit rates: pass --stats at load)\n", (long long)c.accesses);
    else if (plain) /* nothing is loaded or prefetched: residency is all that was measured */
        fprintf(f, "[paging] expert accesses %lld: %.1f%% had every page in memory when used (mincore), %.1f%% did not\n",
                (long long)c.accesses, pct(c.hits, c.accesses), pct(c.misses, c.accesses));
    else
        fprintf(f, "[paging] expert accesses %lld: hit %.1f%% (already resident %.1f%%, prefetched %.1f%%), miss %.1f%%\n",
                (long long)c.accesses, pct(hits, c.accesses), pct(c.hits, c.accesses), pct(c.prefetch_hits, c.accesses),
                pct(c.misses, c.accesses));
    if (c.predicted)
        fprintf(f, "[paging] prefetch: %lld predicted, precision %.1f%%, recall %.1f%%; %lld prefetch loads, "
                   "%lld never used, %lld dropped unstarted, %lld miss bursts\n",
                (long long)c.predicted, pct(c.predicted_used, c.predicted), pct(c.predicted_used, c.actual_predicted),
                (long long)r->n_pf_loads, (long long)r->n_pf_wasted, (long long)r->n_pf_dropped, (long long)r->n_bursts);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    int64_t rb = es_res_proc_read_bytes();
    fprintf(f, "[paging] storage: expert bytes loaded %s; read by the process %s; major page faults %ld",
            gib(a, sizeof a, (double)c.bytes_loaded),
            rb >= 0 && r->read_bytes0 >= 0 ? gib(b, sizeof b, (double)(rb - r->read_bytes0)) : "n/a",
            ru.ru_majflt - r->majflt0);
    if (r->load_majflt) fprintf(f, " (%ld of them in expert loads)", r->load_majflt);
    if (!plain)
        fprintf(f, "; %lld loads, %lld evictions (%.2f s of CPU); peak resident %lld experts", (long long)c.loads,
                (long long)c.evictions, r->load_cpu_s, (long long)c.max_resident_units);
    if (c.io_errors) fprintf(f, "; %lld failed loads (the run stopped)", (long long)c.io_errors);
    fprintf(f, "\n");
    if (!plain) {
        int64_t prefill = r->tokens - r->tokens_decode;
        fprintf(f, "[paging] I/O stall %.3f s: prefill %.3f s over %lld tokens, decode %.3f s over %lld tokens (%.4f s/token)\n",
                r->stall_s, r->stall_s - r->stall_decode_s, (long long)prefill, r->stall_decode_s,
                (long long)r->tokens_decode, r->tokens_decode ? r->stall_decode_s / (double)r->tokens_decode : 0.0);
    }
    /* mmap-plain loads, prefetches and predicts nothing, and measures
     * residency only with --stats: its table has the columns it measured */
    if (plain) {
        fprintf(f, "[paging] layer  accesses%s\n", r->stats_plain ? "  resident%  not-resident%" : "");
        for (int l = 0; l < r->L; l++) {
            const es_res_layer_stats *s = &r->lstats[l];
            fprintf(f, "[paging] %5d  %8lld", r->first_moe + l, (long long)s->accesses);
            if (r->stats_plain)
                fprintf(f, "  %9.1f  %13.1f", pct(s->hits, s->accesses), pct(s->misses, s->accesses));
            fprintf(f, "\n");
        }
        pthread_mutex_unlock(&r->mu);
        return;
    }
    fprintf(f, "[paging] layer  accesses   hit%%  (prefetched%%)  miss%%  pred-precision%%  pred-recall%%  stall-s\n");
    for (int l = 0; l < r->L; l++) {
        const es_res_layer_stats *s = &r->lstats[l];
        fprintf(f, "[paging] %5d  %8lld  %5.1f  (%5.1f)        %5.1f  %6.1f           %6.1f        %.3f\n",
                r->first_moe + l, (long long)s->accesses, pct(s->hits + s->pf_hits, s->accesses),
                pct(s->pf_hits, s->accesses), pct(s->misses, s->accesses), pct(s->pred_used, s->predicted),
                pct(s->pred_used, s->pred_actual), s->stall_s);
    }
    pthread_mutex_unlock(&r->mu);
}
