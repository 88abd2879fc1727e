/* bench_attention.c — the MLA attention core (runtime/attention.c) alone,
 * absorbed against expanded form, on one layer of a real model file: for
 * each batch size T and start position pos0, the milliseconds one layer's
 * attention takes in each form (best of --reps) and their ratio.  This is
 * the measurement behind es_attn_pick's rule.  The cache and queries are
 * random (unit-scale latents, as after the RMS norm); the weights are the
 * file's own, in their stored format and kernels.
 *
 * With --kv-type LIST (f32,f16,bf16,q8_0) the cache is stored in each type
 * (the same random rows, written as forward.c writes them) and the rounds
 * interleave the types: each round times every type once, and the table
 * gives each type's median over the rounds.
 *
 * --decode N times whole decode steps instead (es_session_eval of one
 * token, every layer): for each position in --pos and each cache type, a
 * session whose cache rows 0..pos are filled with random unit-scale rows
 * (as the table's; a decode step's time does not depend on the values)
 * runs N tokens; rounds interleave the types; tokens/s, median of --reps.
 *
 * Usage: bench_attention -m MODEL [--layer L] [--threads N] [--reps N]
 *                        [-T LIST] [--pos LIST] [--kv-type LIST] [--no-expanded]
 *                        [--decode N]
 * defaults: layer 1, the default thread count, 3 reps, T = 1,2,4,8,16,32,64,
 * pos0 = 0,448,960,1984, f32 (best of the reps). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attention.h"
#include "kvcache.h"
#include "edgeseek.h"
#include "model.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int parse_list(const char *s, int *out, int cap) {
    int n = 0;
    while (*s && n < cap) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0) return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

static float frand(uint64_t *st) {
    *st = *st * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*st >> 40) & 0xffffff) / (float)0x1000000 * 2.0f - 1.0f;
}

static double time_ms(es_session *s, es_attn_scratch *a, enum es_attn_form form, const es_layer *ly,
                      const es_kv_view *kv, const float *q, int pos0, int T, float *o) {
    es_attn_set_form(a, form);
    double t0 = now_ms();
    es_attention_core(s, a, ly, kv, q, pos0, T, o);
    return now_ms() - t0;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* the best (one type) or the median (several) of v[n] */
static double summary(double *v, int n, int median) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return median ? (n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2) : v[0];
}

/* --decode: tokens/s of n decode steps at each position and cache type */
static int decode_steps(es_model *m, const int *pos, int np, const int *kvt, int nkv, int n, int reps, int threads) {
    const es_hparams *hp = &m->hp;
    const int R = hp->kv_lora, dr = hp->rope;
    char err[512];
    float *row = malloc(sizeof(float) * (size_t)(R + dr));
    double *tps = malloc(sizeof(double) * (size_t)reps * nkv);
    if (!row || !tps) return 1;
    printf("decode steps: %d tokens a run, median of %d rounds (types interleaved)\n", n, reps);
    printf("%8s %5s %14s %12s\n", "pos", "kv", "KV bytes/tok", "tokens/s");
    for (int ip = 0; ip < np; ip++) {
        es_session *ss[4] = {0};
        for (int k = 0; k < nkv; k++) {
            const es_session_params p = {.n_ctx = pos[ip] + n + 1, .kv_type = kvt[k], .n_threads = threads};
            if (es_session_new_ext(m, &p, &ss[k], err, sizeof err) != ES_OK) {
                fprintf(stderr, "bench_attention: %s\n", err);
                return 1;
            }
            uint64_t st = 42;
            for (int il = 0; il < hp->n_layers; il++) {
                const es_kv_view v = es_kv_layer(ss[k], il);
                for (int p0 = 0; p0 < pos[ip]; p0++) {
                    for (int i = 0; i < R + dr; i++) row[i] = frand(&st) * 1.7f;
                    es_kv_write(m->kern, &v, p0, row, R, dr);
                }
            }
            for (int p0 = 0; p0 < pos[ip]; p0++) ss[k]->tokens[p0] = 1;
        }
        for (int r = 0; r < reps; r++)
            for (int k = 0; k < nkv; k++) {
                ss[k]->pos = pos[ip];
                double t0 = now_ms();
                for (int t = 0; t < n; t++) {
                    int32_t tok = 1 + t;
                    if (es_session_eval(ss[k], &tok, 1, NULL, 0, err, sizeof err) != ES_OK) {
                        fprintf(stderr, "bench_attention: %s\n", err);
                        return 1;
                    }
                }
                tps[k * reps + r] = n / ((now_ms() - t0) / 1e3);
            }
        for (int k = 0; k < nkv; k++) {
            printf("%8d %5s %14zu %12.3f\n", pos[ip], es_kv_type_name(kvt[k]), es_session_kv_bytes_per_token(ss[k]),
                   summary(tps + k * reps, reps, 1));
            es_session_free(ss[k]);
        }
        fflush(stdout);
    }
    free(row), free(tps);
    return 0;
}

int main(int argc, char **argv) {
    if (es_std_fds_guard() != 0) return 1; /* before anything is opened */
    const char *path = NULL;
    char err0[256] = "a list of f32, f16, bf16, q8_0";
    int layer = 1, threads = 0, reps = 3;
    int Ts[32] = {1, 2, 4, 8, 16, 32, 64}, nT = 7, pos[32] = {0, 448, 960, 1984}, np = 4;
    int kvt[4] = {ES_KV_F32}, nkv = 1, no_exp = 0; /* --no-expanded: time the absorbed form only (decode) */
    int decode = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "-m") && v) path = argv[++i];
        else if (!strcmp(argv[i], "--layer") && v) layer = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && v) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && v) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-T") && v) nT = parse_list(argv[++i], Ts, 32);
        else if (!strcmp(argv[i], "--pos") && v) np = parse_list(argv[++i], pos, 32);
        else if (!strcmp(argv[i], "--no-expanded")) no_exp = 1;
        else if (!strcmp(argv[i], "--decode") && v) decode = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--kv-type") && v) {
            char list[64], *save = NULL;
            snprintf(list, sizeof list, "%s", argv[++i]);
            nkv = 0;
            for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save))
                if (nkv == 4 || es_kv_type_parse(t, &kvt[nkv++], err0, sizeof err0) != ES_OK) nkv = -1;
            if (nkv <= 0) { fprintf(stderr, "bench_attention: --kv-type: %s\n", err0); return 2; }
        }
        else {
            fprintf(stderr, "usage: bench_attention -m MODEL [--layer L] [--threads N] [--reps N] [-T LIST] [--pos LIST]"
                            " [--kv-type LIST] [--no-expanded] [--decode N]\n");
            return 2;
        }
    }
    if (!path || nT <= 0 || np <= 0 || reps < 1) {
        fprintf(stderr, "bench_attention: -m MODEL is required; lists must be non-empty, reps >= 1\n");
        return 2;
    }
    char err[512];
    es_model *m = NULL;
    if (es_model_load(path, NULL, &m, err, sizeof err) != ES_OK) {
        fprintf(stderr, "bench_attention: %s\n", err);
        return 1;
    }
    const es_hparams *hp = &m->hp;
    if (decode > 0) {
        int rc = decode_steps(m, pos, np, kvt, nkv, decode, reps, threads);
        es_model_free(m);
        return rc;
    }
    if (layer < 0 || layer >= hp->n_layers) {
        fprintf(stderr, "bench_attention: layer %d out of range (0..%d)\n", layer, hp->n_layers - 1);
        es_model_free(m);
        return 2;
    }
    int maxT = 1, maxS = 1;
    for (int i = 0; i < nT; i++) maxT = Ts[i] > maxT ? Ts[i] : maxT;
    for (int i = 0; i < np; i++) maxS = pos[i] + maxT > maxS ? pos[i] + maxT : maxS;
    es_session *s = NULL;
    if (es_session_new(m, maxS, &s, err, sizeof err) != ES_OK ||
        es_session_set_threads(s, threads, err, sizeof err) != ES_OK) {
        fprintf(stderr, "bench_attention: %s\n", err);
        es_session_free(s);
        es_model_free(m);
        return 1;
    }
    const int H = hp->n_heads, R = hp->kv_lora, dn = hp->nope, dr = hp->rope, dv = hp->vdim, kvw = R + dr;
    es_attn_scratch *a = es_attn_scratch_new(m, maxS, maxT, es_session_threads(s));
    float *cache = malloc(sizeof(float) * (size_t)maxS * kvw);
    uint8_t *stored[4] = {0};
    es_kv_view views[4];
    float *q = malloc(sizeof(float) * (size_t)maxT * H * (dn + dr));
    float *o = malloc(sizeof(float) * (size_t)maxT * H * dv);
    if (!a || !cache || !q || !o) {
        fprintf(stderr, "bench_attention: out of memory\n");
        return 1;
    }
    uint64_t st = 42;
    for (size_t i = 0; i < (size_t)maxS * kvw; i++) cache[i] = frand(&st) * 1.7f;
    for (size_t i = 0; i < (size_t)maxT * H * (dn + dr); i++) q[i] = frand(&st);
    for (int k = 0; k < nkv; k++) { /* the rows in each type, as forward.c stores them */
        if (es_kv_layout(hp, kvt[k], &views[k], err, sizeof err) != ES_OK ||
            !(stored[k] = malloc(views[k].row_bytes * (size_t)maxS))) {
            fprintf(stderr, "bench_attention: %s\n", err);
            return 1;
        }
        views[k].base = stored[k];
        for (int p = 0; p < maxS; p++) es_kv_write(m->kern, &views[k], p, cache + (size_t)p * kvw, R, dr);
    }
    double *ta = malloc(sizeof(double) * (size_t)reps * nkv), *te = malloc(sizeof(double) * (size_t)reps * nkv);
    printf("model %s, layer %d, %d threads; H %d R %d dn %d dr %d dv %d\n", path, layer, es_session_threads(s), H, R,
           dn, dr, dv);
    printf("%6s %6s %5s %12s %12s %8s %10s\n", "T", "pos0", "kv", "absorbed ms", "expanded ms", "abs/exp", "auto picks");
    const es_layer *ly = &m->layers[layer];
    for (int ip = 0; ip < np; ip++)
        for (int it = 0; it < nT; it++) {
            int T = Ts[it], p0 = pos[ip];
            if (T < 1) continue;
            for (int r = 0; r < reps; r++) /* rounds interleave the types */
                for (int k = 0; k < nkv; k++) {
                    ta[k * reps + r] = time_ms(s, a, ES_ATTN_ABSORBED, ly, &views[k], q, p0, T, o);
                    te[k * reps + r] = no_exp ? NAN : time_ms(s, a, ES_ATTN_EXPANDED, ly, &views[k], q, p0, T, o);
                }
            for (int k = 0; k < nkv; k++) {
                const double xa = summary(ta + k * reps, reps, nkv > 1), xe = summary(te + k * reps, reps, nkv > 1);
                printf("%6d %6d %5s %12.3f %12.3f %8.2f %10s\n", T, p0, es_kv_type_name(kvt[k]), xa, xe, xa / xe,
                       es_attn_pick(hp, T, p0) == ES_ATTN_EXPANDED ? "expanded" : "absorbed");
            }
            fflush(stdout);
        }
    free(cache);
    for (int k = 0; k < nkv; k++) free(stored[k]);
    free(ta), free(te);
    free(q);
    free(o);
    es_attn_scratch_free(a);
    es_session_free(s);
    es_model_free(m);
    return 0;
}
