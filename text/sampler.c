/* sampler.c — next-token choice: greedy, or temperature with top-k, top-p
 * (nucleus) and min-p filters, drawn with a seeded xoshiro256** generator so
 * the same seed gives the same output.
 *
 * Order of filters (as llama.cpp's default chain): top-k, then temperature
 * softmax, then top-p, then min-p (relative to the most likely token). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgeseek.h"

/* A candidate token with its logit: the sort reads nothing but its two
 * arguments, so samplers in different threads never share state. */
typedef struct es_cand {
    float logit;
    int32_t id;
} es_cand;

struct es_sampler {
    es_sampler_params p;
    uint64_t st[4];
    /* candidate buffer, grown to the vocabulary */
    es_cand *cand;
    float *prob;
    int cap;
};

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(es_sampler *s) {
    uint64_t *st = s->st;
    uint64_t r = rotl(st[1] * 5, 7) * 9, t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl(st[3], 45);
    return r;
}

/* uniform in [0, 1) with 53 bits */
static double next_unit(es_sampler *s) { return (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0); }

es_sampler_params es_sampler_defaults(void) {
    es_sampler_params p = {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f, .seed = 0};
    return p;
}

es_sampler *es_sampler_new(const es_sampler_params *p) {
    es_sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    uint64_t seed = p->seed;
    for (int i = 0; i < 4; i++) s->st[i] = splitmix64(&seed);
    return s;
}

void es_sampler_free(es_sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s->prob);
    free(s);
}

static int candidates(es_sampler *s, const float *logits, int n_vocab);

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* sort candidates by descending logit (ties: lower id first) */
static int cmp_desc(const void *a, const void *b) {
    const es_cand *ca = a, *cb = b;
    if (ca->logit > cb->logit) return -1;
    if (ca->logit < cb->logit) return 1;
    return ca->id < cb->id ? -1 : ca->id > cb->id;
}

/* Partial selection of the k largest into cand[0..k) (k small), else full sort. */
static void top_candidates(es_sampler *s, const float *logits, int n, int k) {
    for (int i = 0; i < n; i++) s->cand[i] = (es_cand){logits[i], i};
    if (k < n && k <= 256) {
        for (int i = 0; i < k; i++) {
            int best = i;
            for (int j = i + 1; j < n; j++)
                if (cmp_desc(&s->cand[j], &s->cand[best]) < 0) best = j;
            es_cand t = s->cand[i]; s->cand[i] = s->cand[best]; s->cand[best] = t;
        }
    } else {
        qsort(s->cand, (size_t)n, sizeof(es_cand), cmp_desc);
    }
}

double es_sampler_uniform(es_sampler *s) { return next_unit(s); }

void es_sampler_dist(es_sampler *s, const float *logits, int n_vocab, float *probs) {
    if (n_vocab <= 0) return;
    memset(probs, 0, sizeof(float) * (size_t)n_vocab);
    int n = s->p.temperature > 0.0f ? candidates(s, logits, n_vocab) : 0;
    if (n <= 0) { /* greedy, or out of memory as es_sampler_sample degrades */
        probs[argmax(logits, n_vocab)] = 1.0f;
        return;
    }
    double total = 0;
    for (int i = 0; i < n; i++) total += s->prob[i];
    for (int i = 0; i < n; i++) probs[s->cand[i].id] = (float)(s->prob[i] / total);
}

int32_t es_sampler_sample(es_sampler *s, const float *logits, int n_vocab) {
    if (n_vocab <= 0) return -1;
    if (s->p.temperature <= 0.0f) return argmax(logits, n_vocab);
    int n = candidates(s, logits, n_vocab);
    if (n <= 0) return argmax(logits, n_vocab); /* degrade, never crash */
    double total = 0;
    for (int i = 0; i < n; i++) total += s->prob[i];
    double r = next_unit(s) * total, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += s->prob[i];
        if (r < acc) return s->cand[i].id;
    }
    return s->cand[n - 1].id;
}

/* The candidates es_sampler_sample draws from: cand[0..n) by descending
 * logit with unnormalised prob[0..n) after top-k, temperature, top-p and
 * min-p; returns n, or 0 out of memory. */
static int candidates(es_sampler *s, const float *logits, int n_vocab) {
    if (s->cap < n_vocab) {
        es_cand *cand = realloc(s->cand, sizeof(es_cand) * (size_t)n_vocab);
        if (cand) s->cand = cand;
        float *prob = realloc(s->prob, sizeof(float) * (size_t)n_vocab);
        if (prob) s->prob = prob;
        if (!cand || !prob) return 0;
        s->cap = n_vocab;
    }
    int k = s->p.top_k > 0 && s->p.top_k < n_vocab ? s->p.top_k : n_vocab;
    top_candidates(s, logits, n_vocab, k);

    /* softmax at temperature over the k candidates (sorted descending) */
    double mx = s->cand[0].logit, sum = 0;
    for (int i = 0; i < k; i++) {
        s->prob[i] = (float)exp(((double)s->cand[i].logit - mx) / s->p.temperature);
        sum += s->prob[i];
    }
    for (int i = 0; i < k; i++) s->prob[i] = (float)(s->prob[i] / sum);

    int n = k;
    if (s->p.top_p > 0.0f && s->p.top_p < 1.0f) {
        double cum = 0;
        for (int i = 0; i < n; i++) {
            cum += s->prob[i];
            if (cum >= s->p.top_p) { n = i + 1; break; }
        }
    }
    if (s->p.min_p > 0.0f) {
        float floor_p = s->prob[0] * s->p.min_p;
        int m = 1;
        while (m < n && s->prob[m] >= floor_p) m++;
        n = m;
    }
    return n;
}
