/* sched.c — owns the server's slots and its scheduler thread.
 *
 * -np slots share one model, each with its own es_session (KV cache) and
 * es_sampler.  One thread runs steps: the next token of every decoding slot
 * in one batched call, plus at most one chunk of one pending prompt's
 * prefill, so a long prompt never freezes the other streams.  A new request
 * goes to the idle slot holding the longest common token prefix and reuses
 * it (es_session_truncate); after a chat turn the slot's cache is rewritten
 * in idle steps to what the conversation's next request will begin with.
 * Generated tokens are detokenised, cut at stop strings and split into
 * reasoning and content here, into the job's buffers, under one lock.
 * Between two steps the thread also runs the slot actions (save to a
 * session file, restore from one, erase) that the HTTP side asks for.
 *
 * With --mtp every slot's session has its MTP block on and a decoding slot
 * is an es_spec generator: before a step each one drafts (es_spec_plan, on
 * its own session, outside the lock) and puts its pending token and the
 * draft into the step's pass (es_batch_eval_ext, every row's logits), then
 * es_spec_commit keeps the draft or not, exactly as `run --mtp` decides it,
 * the gate per slot; a kept draft gives a second token in the same step. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server.h"

double srv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void srv_buf_put(srv_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) { b->oom = 1; return; }
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void srv_buf_free(srv_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

typedef struct slot {
    es_session *s;
    es_sampler *smp;
    float *logits;
    int32_t *toks; /* what the KV cache holds */
    int n_toks;
    srv_job *job;
    uint64_t gen;  /* incremented at each assignment */
    int32_t next;  /* sampled, to be decoded next */
    int have_next;
    es_detok dt;
    es_reasoning rs;
    srv_buf raw;   /* generated text; [0, emitted) decided */
    size_t emitted;
    int32_t *rewrite; /* idle: tokens to hold for the next turn */
    int n_rewrite;
    es_spec *spec;    /* --mtp: the job's generator (from the prompt's logits on) */
    int32_t ver[2];   /* --mtp: the step's tokens, the pending one and the draft */
} slot;

/* A slot action (save, restore, erase) waiting for the scheduler's thread,
 * which runs it between two steps. */
typedef struct slot_op {
    int slot, action;
    const char *path;
    int done, status, n;
    char *err;
    size_t errlen;
} slot_op;

struct srv_sched {
    es_model *m;
    int n_slots, n_ctx, chunk, queue_max, nv, step_ms, mtp;
    slot *slots;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    srv_job **queue;
    int n_queue;
    int stopping, quit;
    int prefill_rr; /* round robin over prefilling slots */
    srv_stats st;
    double next_paging;
    slot_op *op;          /* the slot action to run before the next step */
    pthread_cond_t op_cv; /* an action ended, or the place for one is free */
};

static const int32_t *const *cast_tokens(int32_t **t) { return (const int32_t *const *)t; }

/* The one place the engine runs: session i evaluates n[i] tokens from its
 * position and logits[i] (when not NULL) gets its last position's logits,
 * all in one forward pass (each routed expert read once for every row that
 * chose it), bit-identical to each session alone. */
static es_status eval_batch(es_session **ss, int n, const int32_t *const *toks, const int *nt, float **logits,
                            const int *all, char *err, size_t errlen) {
    return es_batch_eval_ext(ss, n, toks, nt, logits, all, err, errlen);
}

static void job_done(srv_sched *S, slot *sl, int finish) {
    srv_job *j = sl->job;
    if (sl->spec) { /* --mtp: the job's drafts */
        es_spec_stats st;
        es_spec_get_stats(sl->spec, &st);
        j->n_drafted = (int)st.drafted;
        j->n_accepted = (int)st.accepted;
        S->st.mtp_drafted += (uint64_t)st.drafted;
        S->st.mtp_accepted += (uint64_t)st.accepted;
        es_spec_free(sl->spec);
        sl->spec = NULL;
    }
    j->finish = finish;
    j->state = SRV_JOB_DONE;
    pthread_cond_broadcast(&j->cv);
    sl->job = NULL;
    sl->have_next = 0;
}

/* Decided text of the slot's job: reasoning and content, or all content. */
static void emit(slot *sl, const char *p, size_t n, int last) {
    srv_job *j = sl->job;
    if (!j->split_reasoning) {
        srv_buf_put(&j->content, p, n);
        return;
    }
    char rb[512 + ES_REASONING_HOLD], cb[512 + ES_REASONING_HOLD];
    size_t nr, nc;
    while (n > 0) {
        size_t k = n > 512 ? 512 : n;
        es_reasoning_feed(&sl->rs, p, k, rb, &nr, cb, &nc);
        srv_buf_put(&j->reasoning, rb, nr);
        srv_buf_put(&j->content, cb, nc);
        p += k;
        n -= k;
    }
    if (last) {
        es_reasoning_flush(&sl->rs, rb, &nr, cb, &nc);
        srv_buf_put(&j->reasoning, rb, nr);
        srv_buf_put(&j->content, cb, nc);
    }
}

/* How many bytes at the end of raw could begin a stop string. */
static size_t stop_hold(const srv_job *j, const char *raw, size_t n) {
    size_t hold = 0;
    for (int i = 0; i < j->n_stop; i++) {
        size_t l = strlen(j->stop[i]);
        for (size_t k = (l - 1 < n ? l - 1 : n); k > hold; k--)
            if (!memcmp(raw + n - k, j->stop[i], k)) { hold = k; break; }
    }
    return hold;
}

/* A token the slot's job generated: its text, then whether the job ends. */
static void take_token(srv_sched *S, slot *sl, int32_t tok) {
    srv_job *j = sl->job;
    j->n_gen++;
    S->st.gen_tokens++;
    int eog = es_model_is_eog(S->m, tok);
    if (eog && j->ignore_eos) {
        eog = 0; /* generation goes on; the token has no text */
    } else if (!eog) {
        char piece[256];
        size_t w = es_detok_push(&sl->dt, S->m, tok, piece, sizeof piece);
        if (w > sizeof piece) { /* a very long token */
            char *big = malloc(w);
            if (big) {
                w = es_detok_push(&sl->dt, S->m, tok, big, w);
                srv_buf_put(&sl->raw, big, w);
                free(big);
            }
        } else {
            srv_buf_put(&sl->raw, piece, w);
        }
    }
    int ended = eog || (j->max_tokens >= 0 && j->n_gen >= j->max_tokens) ||
                es_session_pos(sl->s) >= S->n_ctx || srv_now() >= j->deadline;
    if (ended) {
        char tail[16];
        size_t w = es_detok_flush(&sl->dt, tail, sizeof tail);
        srv_buf_put(&sl->raw, tail, w);
    }
    /* a stop string: the text ends before it */
    /* held text never holds a whole stop string, and emitted text never
     * begins one: the search starts where the undecided text does */
    size_t from = sl->emitted;
    size_t cut = sl->raw.n;
    int stopped = 0;
    for (int i = 0; i < j->n_stop; i++) {
        const char *hit = sl->raw.n > from ? memmem(sl->raw.p + from, sl->raw.n - from, j->stop[i],
                                                    strlen(j->stop[i])) : NULL;
        if (hit && (size_t)(hit - sl->raw.p) < cut) { cut = (size_t)(hit - sl->raw.p); stopped = 1; }
    }
    if (stopped) ended = 1;
    size_t upto = ended ? cut : sl->raw.n - stop_hold(j, sl->raw.p, sl->raw.n);
    if (upto < sl->emitted) upto = sl->emitted; /* held text never goes back */
    emit(sl, sl->raw.p + sl->emitted, upto - sl->emitted, ended);
    sl->emitted = upto;
    if (ended) {
        int fin = eog || stopped ? SRV_FIN_STOP : SRV_FIN_LENGTH;
        job_done(S, sl, fin);
    } else {
        sl->next = tok;
        sl->have_next = 1;
        /* a waiter for the whole answer is not woken for each token: with
         * several slots those wakes (a thread each, taking the lock the
         * scheduler needs next) cost more than a step of the default model */
        if (j->progress) pthread_cond_broadcast(&j->cv);
    }
}

static int lcp(const int32_t *a, int na, const int32_t *b, int nb) {
    int n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

/* Starts job on an idle slot: the longest cached prefix wins (ties: the
 * slot that holds the least, keeping longer histories for others). */
static void assign(srv_sched *S, srv_job *j) {
    int best = -1, best_l = -1;
    for (int i = 0; i < S->n_slots; i++) {
        slot *sl = &S->slots[i];
        if (sl->job) continue;
        int l = lcp(sl->toks, sl->n_toks, j->prompt, j->n_prompt);
        if (l > best_l || (l == best_l && sl->n_toks < S->slots[best].n_toks)) { best = i; best_l = l; }
    }
    slot *sl = &S->slots[best];
    int keep = best_l < j->n_prompt ? best_l : j->n_prompt - 1; /* the last prompt token makes the logits */
    char err[256];
    if (es_session_truncate(sl->s, keep, err, sizeof err) != ES_OK) {
        es_session_reset(sl->s);
        keep = 0;
    }
    sl->n_toks = keep;
    free(sl->rewrite);
    sl->rewrite = NULL;
    sl->n_rewrite = 0;
    sl->job = j;
    sl->gen++;
    sl->have_next = 0;
    memset(&sl->dt, 0, sizeof sl->dt);
    es_reasoning_init(&sl->rs, j->think_open);
    sl->raw.n = 0;
    sl->emitted = 0;
    es_sampler_free(sl->smp);
    sl->smp = es_sampler_new(&j->sp);
    j->state = SRV_JOB_RUNNING;
    j->slot = best;
    j->slot_gen = sl->gen;
    j->n_cached = keep;
    j->prefilled = keep;
    S->st.cached_tokens += (uint64_t)keep;
    if (!sl->smp) {
        snprintf(j->err, sizeof j->err, "out of memory");
        job_done(S, sl, SRV_FIN_ERROR);
    }
    pthread_cond_broadcast(&j->cv);
}

/* The work of one step, chosen under the lock. */
typedef struct step {
    int n;
    slot *sl[1024];
    int32_t *tok[1024];
    int nt[1024];
    int kind[1024]; /* 0 decode, 1 prefill, 2 rewrite, 3 the runner, idle (no tokens) */
} step;

/* Adds slot i's tokens to the step (slot 0 has its place first). */
static void put(step *w, slot *sl, int i, int32_t *t, int n, int kind) {
    int k = i == 0 ? 0 : w->n++;
    w->sl[k] = sl;
    w->tok[k] = t;
    w->nt[k] = n;
    w->kind[k] = kind;
}

/* The entries with tokens to run (0: nothing to do). */
static int busy(const step *w) {
    int n = 0;
    for (int i = 0; i < w->n; i++) n += w->nt[i] > 0;
    return n;
}

/* Under the lock: ends cancelled and late jobs, starts queued ones, picks
 * the step's work.  Returns the number of sessions with tokens to run. */
static int plan(srv_sched *S, step *w) {
    double now = srv_now();
    for (int i = 0; i < S->n_slots; i++) {
        slot *sl = &S->slots[i];
        if (!sl->job) continue;
        if (sl->job->cancel || S->stopping) job_done(S, sl, SRV_FIN_CANCELLED);
        else if (now >= sl->job->deadline) {
            emit(sl, sl->raw.p + sl->emitted, sl->raw.n - sl->emitted, 1);
            sl->emitted = sl->raw.n;
            job_done(S, sl, SRV_FIN_LENGTH);
        }
    }
    while (S->n_queue > 0) {
        int idle = 0;
        for (int i = 0; i < S->n_slots; i++) idle += !S->slots[i].job;
        if (!idle) break;
        srv_job *j = S->queue[0];
        memmove(S->queue, S->queue + 1, sizeof *S->queue * (size_t)--S->n_queue);
        assign(S, j);
    }
    /* slot 0's session comes first, with no tokens when it has no work: its
     * threads and buffers run every step (the other slots' sessions have no
     * worker threads of their own) */
    w->n = 1;
    w->sl[0] = &S->slots[0];
    w->tok[0] = NULL;
    w->nt[0] = 0;
    w->kind[0] = 3;
    for (int i = 0; i < S->n_slots; i++) {
        slot *sl = &S->slots[i];
        if (sl->job && sl->have_next) put(w, sl, i, &sl->next, 1, 0);
    }
    /* one chunk of one prompt, round robin among the prefilling slots */
    for (int k = 0; k < S->n_slots; k++) {
        int i = (S->prefill_rr + k) % S->n_slots;
        slot *sl = &S->slots[i];
        if (!sl->job || sl->have_next || sl->job->prefilled >= sl->job->n_prompt) continue;
        int n = sl->job->n_prompt - sl->job->prefilled;
        if (n > S->chunk) n = S->chunk;
        put(w, sl, i, sl->job->prompt + sl->job->prefilled, n, 1);
        S->prefill_rr = i + 1;
        return busy(w);
    }
    /* idle: a chunk of one slot's rewrite */
    for (int i = 0; i < S->n_slots; i++) {
        slot *sl = &S->slots[i];
        if (sl->job || !sl->rewrite) continue;
        int l = lcp(sl->toks, sl->n_toks, sl->rewrite, sl->n_rewrite);
        if (l < sl->n_toks) {
            char err[256];
            if (es_session_truncate(sl->s, l, err, sizeof err) != ES_OK) { es_session_reset(sl->s); l = 0; }
            sl->n_toks = l;
        }
        int n = sl->n_rewrite - l;
        if (n > S->chunk) n = S->chunk;
        if (n <= 0 || l + n >= S->n_ctx) {
            free(sl->rewrite);
            sl->rewrite = NULL;
            sl->n_rewrite = 0;
            continue;
        }
        put(w, sl, i, sl->rewrite + l, n, 2);
        return busy(w);
    }
    return busy(w);
}

static void record(slot *sl, const int32_t *t, int n) {
    memcpy(sl->toks + sl->n_toks, t, sizeof *t * (size_t)n);
    sl->n_toks += n;
}

/* The paging report's hit rate ("hit X%"), read through the public call. */
static double paging_hit(es_model *m) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return -1;
    es_model_print_paging_stats(m, f);
    fclose(f);
    double v = -1;
    const char *p = buf ? strstr(buf, ": hit ") : NULL;
    if (p) v = strtod(p + 6, NULL) / 100.0;
    free(buf);
    return v;
}

/* The slot's token record follows its session (after a load, or a load
 * that failed and left it empty); a pending rewrite or an old job's rewrite
 * no longer applies. */
static void resync(slot *sl) {
    sl->n_toks = es_session_pos(sl->s);
    memcpy(sl->toks, es_session_tokens(sl->s), sizeof *sl->toks * (size_t)sl->n_toks);
    free(sl->rewrite);
    sl->rewrite = NULL;
    sl->n_rewrite = 0;
    sl->gen++;
}

/* Under the lock, on the scheduler's thread (no step runs): the action on
 * an idle slot, through the library's saved sessions. */
static void run_op(srv_sched *S, slot_op *op) {
    slot *sl = op->slot >= 0 && op->slot < S->n_slots ? &S->slots[op->slot] : NULL;
    op->status = 200;
    if (!sl) {
        op->status = 404;
        snprintf(op->err, op->errlen, "no slot %d (this server has %d, from 0)", op->slot, S->n_slots);
        return;
    }
    if (sl->job) {
        op->status = 503;
        snprintf(op->err, op->errlen, "slot %d is generating; retry when it is idle", op->slot);
        return;
    }
    op->n = es_session_pos(sl->s);
    es_status st = ES_OK;
    if (op->action == SRV_SLOT_SAVE) {
        st = es_session_save(sl->s, op->path, op->err, op->errlen);
    } else if (op->action == SRV_SLOT_RESTORE) {
        st = es_session_load(sl->s, op->path, op->err, op->errlen);
        resync(sl);
        op->n = sl->n_toks;
    } else {
        es_session_reset(sl->s);
        resync(sl);
    }
    if (st != ES_OK) op->status = st == ES_ERR_IO || st == ES_ERR_NOMEM ? 500 : 400;
}

static void *sched_main(void *arg) {
    srv_sched *S = arg;
    step *w = malloc(sizeof *w);
    es_session **ss = malloc(sizeof *ss * (size_t)S->n_slots);
    float **lg = malloc(sizeof *lg * (size_t)S->n_slots);
    char err[sizeof ((srv_job *)0)->err];
    pthread_mutex_lock(&S->mu);
    if (!w || !ss || !lg) { /* nothing can run: every job fails */
        S->stopping = 1;
        S->quit = 1;
    }
    while (!S->quit) {
        if (S->op) {
            run_op(S, S->op);
            S->op->done = 1;
            S->op = NULL;
            pthread_cond_broadcast(&S->op_cv);
            continue;
        }
        if (plan(S, w) == 0) {
            double now = srv_now();
            if (now >= S->next_paging) {
                S->st.expert_hit = paging_hit(S->m);
                S->next_paging = now + 1.0;
            }
            pthread_cond_wait(&S->wake, &S->mu);
            continue;
        }
        int any_prefill = 0, n_dec = 0;
        int all[1024], perr[1024];
        for (int i = 0; i < w->n; i++) {
            ss[i] = w->sl[i]->s;
            lg[i] = w->sl[i]->logits;
            /* a prefill chunk needs logits only when it ends the prompt */
            if (w->kind[i] >= 2 || (w->kind[i] == 1 && w->sl[i]->job->prefilled + w->nt[i] < w->sl[i]->job->n_prompt))
                lg[i] = NULL;
            any_prefill |= w->kind[i] == 1 || w->kind[i] == 2;
            n_dec += w->kind[i] == 0;
            all[i] = perr[i] = 0;
        }
        pthread_mutex_unlock(&S->mu);
        double t0 = srv_now();
        char perr_msg[sizeof err] = "";
        int32_t sampled[1024];
        for (int i = 0; i < w->n; i++) /* --mtp: each decoding slot drafts, then verifies in the pass */
            if (w->kind[i] == 0 && w->sl[i]->spec) {
                slot *sl = w->sl[i];
                int n = 0;
                perr[i] = es_spec_plan(sl->spec, sl->ver, &n, &sampled[i], perr_msg, sizeof perr_msg) != ES_OK;
                w->tok[i] = sl->ver;
                w->nt[i] = perr[i] ? 0 : n; /* 0: a token decided without a pass (not expected here) */
                all[i] = 1;
            }
        es_status st = eval_batch(ss, w->n, cast_tokens(w->tok), w->nt, lg, all, err, sizeof err);
        for (int i = 0; i < w->n && st == ES_OK; i++) {
            slot *sl = w->sl[i];
            if (perr[i] || (sl->spec && w->kind[i] == 0 && w->nt[i] == 0)) continue;
            if (!lg[i]) sampled[i] = -1;
            else if (sl->spec && w->kind[i] == 0)
                perr[i] = es_spec_commit(sl->spec, lg[i], &sampled[i], perr_msg, sizeof perr_msg) != ES_OK;
            else if (S->mtp && w->kind[i] == 1) { /* the prompt is in: the job's generator starts */
                int n;
                es_spec_free(sl->spec);
                sl->spec = NULL;
                perr[i] = es_spec_new(sl->s, sl->smp, es_session_mtp(sl->s), lg[i], &sl->spec, perr_msg,
                                      sizeof perr_msg) != ES_OK ||
                          es_spec_plan(sl->spec, sl->ver, &n, &sampled[i], perr_msg, sizeof perr_msg) != ES_OK;
            } else sampled[i] = es_sampler_sample(sl->smp, lg[i], S->nv);
        }
        if (S->step_ms > 0) { /* a test's slow machine */
            double left = S->step_ms / 1000.0 - (srv_now() - t0);
            if (left > 0) {
                struct timespec ts = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
                nanosleep(&ts, NULL);
            }
        }
        double dt = srv_now() - t0;
        pthread_mutex_lock(&S->mu);
        if (any_prefill) S->st.prompt_seconds += dt;
        else S->st.gen_seconds += dt;
        for (int i = 0; i < w->n; i++) {
            slot *sl = w->sl[i];
            if (w->kind[i] == 3) continue; /* the idle runner */
            if (st != ES_OK || perr[i]) { /* the engine failed: the slots involved start over */
                es_session_reset(sl->s);
                sl->n_toks = 0;
                free(sl->rewrite);
                sl->rewrite = NULL;
                if (sl->job) {
                    snprintf(sl->job->err, sizeof sl->job->err, "%s", st != ES_OK ? err : perr_msg);
                    job_done(S, sl, SRV_FIN_ERROR);
                }
                continue;
            }
            record(sl, w->tok[i], w->nt[i]);
            if (sl->n_toks > es_session_pos(sl->s)) sl->n_toks = es_session_pos(sl->s); /* a draft dropped */
            if (w->kind[i] == 2) continue;
            if (w->kind[i] == 1) {
                sl->job->prefilled += w->nt[i];
                S->st.prompt_tokens += (uint64_t)w->nt[i];
                pthread_cond_broadcast(&sl->job->cv);
                if (sl->job->prefilled < sl->job->n_prompt) continue;
            }
            if (sl->job) take_token(S, sl, sampled[i]);
            /* a kept draft: the token after it is decided too, in this step */
            while (sl->job && sl->spec && es_spec_ready(sl->spec)) {
                int n;
                int32_t tok;
                if (es_spec_plan(sl->spec, sl->ver, &n, &tok, NULL, 0) != ES_OK || n) break;
                take_token(S, sl, tok);
            }
        }
        (void)n_dec;
    }
    /* stopping: every job still held ends cancelled */
    for (int i = 0; i < S->n_slots; i++)
        if (S->slots[i].job) job_done(S, &S->slots[i], SRV_FIN_CANCELLED);
    for (int i = 0; i < S->n_queue; i++) {
        S->queue[i]->finish = SRV_FIN_CANCELLED;
        S->queue[i]->state = SRV_JOB_DONE;
        pthread_cond_broadcast(&S->queue[i]->cv);
    }
    S->n_queue = 0;
    if (S->op) {
        S->op->status = 503;
        snprintf(S->op->err, S->op->errlen, "the server is shutting down");
        S->op->done = 1;
        S->op = NULL;
    }
    S->quit = 1; /* an action asked for from now on is refused */
    pthread_cond_broadcast(&S->op_cv);
    pthread_mutex_unlock(&S->mu);
    free(w);
    free(ss);
    free(lg);
    return NULL;
}

es_status srv_sched_new(es_model *m, const srv_opts *o, srv_sched **out, char *err, size_t errlen) {
    *out = NULL;
    srv_sched *S = calloc(1, sizeof *S);
    if (!S) { snprintf(err, errlen, "out of memory"); return ES_ERR_NOMEM; }
    S->m = m;
    S->n_slots = o->n_slots;
    S->n_ctx = o->n_ctx;
    S->chunk = o->chunk;
    S->queue_max = o->queue;
    S->step_ms = o->step_ms;
    S->mtp = o->mtp;
    S->st.mtp = o->mtp;
    S->nv = es_model_n_vocab(m);
    S->st.expert_hit = -1;
    pthread_mutex_init(&S->mu, NULL);
    pthread_cond_init(&S->wake, NULL);
    pthread_cond_init(&S->op_cv, NULL);
    S->slots = calloc((size_t)S->n_slots, sizeof *S->slots);
    S->queue = calloc((size_t)(S->queue_max > 0 ? S->queue_max : 1), sizeof *S->queue);
    es_status st = ES_ERR_NOMEM;
    if (!S->slots || !S->queue) { snprintf(err, errlen, "out of memory"); goto fail; }
    for (int i = 0; i < S->n_slots; i++) {
        slot *sl = &S->slots[i];
        /* slot 0's session runs every step, with the worker threads; the
         * others' sessions have none of their own */
        const es_session_params sp = {.n_ctx = S->n_ctx, .kv_type = o->kv_type, .n_threads = i == 0 ? o->n_threads : 1};
        if ((st = es_session_new_ext(m, &sp, &sl->s, err, errlen)) != ES_OK) goto fail;
        if (o->mtp && (st = es_session_set_mtp(sl->s, 1, err, errlen)) != ES_OK) goto fail;
        /* --mtp: a verification's two rows */
        sl->logits = malloc(sizeof(float) * (size_t)S->nv * (o->mtp ? 2 : 1));
        sl->toks = malloc(sizeof(int32_t) * (size_t)(S->n_ctx + 1));
        st = ES_ERR_NOMEM;
        if (!sl->logits || !sl->toks) { snprintf(err, errlen, "out of memory"); goto fail; }
    }
    if (pthread_create(&S->thread, NULL, sched_main, S) != 0) {
        snprintf(err, errlen, "cannot start the scheduler thread");
        st = ES_ERR_NOMEM;
        goto fail;
    }
    S->thread_started = 1;
    *out = S;
    return ES_OK;
fail:
    srv_sched_free(S);
    return st;
}

void srv_sched_stop(srv_sched *S) {
    pthread_mutex_lock(&S->mu);
    S->stopping = 1;
    pthread_cond_broadcast(&S->wake);
    pthread_mutex_unlock(&S->mu);
}

void srv_sched_free(srv_sched *S) {
    if (!S) return;
    if (S->thread_started) {
        pthread_mutex_lock(&S->mu);
        S->stopping = 1;
        S->quit = 1;
        pthread_cond_broadcast(&S->wake);
        pthread_mutex_unlock(&S->mu);
        pthread_join(S->thread, NULL);
    }
    for (int i = 0; S->slots && i < S->n_slots; i++) {
        slot *sl = &S->slots[i];
        es_spec_free(sl->spec);
        es_session_free(sl->s);
        es_sampler_free(sl->smp);
        free(sl->logits);
        free(sl->toks);
        free(sl->rewrite);
        srv_buf_free(&sl->raw);
    }
    free(S->slots);
    free(S->queue);
    pthread_cond_destroy(&S->wake);
    pthread_cond_destroy(&S->op_cv);
    pthread_mutex_destroy(&S->mu);
    free(S);
}

pthread_mutex_t *srv_sched_lock(srv_sched *S) { return &S->mu; }
int srv_sched_n_ctx(const srv_sched *S) { return S->n_ctx; }

int srv_sched_submit(srv_sched *S, srv_job *j) {
    pthread_cond_init(&j->cv, NULL);
    j->state = SRV_JOB_QUEUED;
    j->finish = SRV_FIN_NONE;
    j->cancel = 0;
    j->n_gen = j->n_cached = j->prefilled = 0;
    j->slot = -1;
    j->err[0] = 0;
    memset(&j->reasoning, 0, sizeof j->reasoning);
    memset(&j->content, 0, sizeof j->content);
    pthread_mutex_lock(&S->mu);
    int idle = 0;
    for (int i = 0; i < S->n_slots; i++) idle += S->slots[i].job == NULL;
    /* the queue holds what waits beyond the idle slots (which take theirs at
     * the next step) */
    if (S->stopping || S->n_queue >= S->queue_max + idle) {
        pthread_mutex_unlock(&S->mu);
        pthread_cond_destroy(&j->cv);
        return -1;
    }
    S->queue[S->n_queue++] = j;
    S->st.requests++;
    pthread_cond_broadcast(&S->wake);
    pthread_mutex_unlock(&S->mu);
    return 0;
}

void srv_sched_wait(srv_sched *S, srv_job *j, double until) {
    double now = srv_now();
    if (j->state == SRV_JOB_DONE || now >= until) return;
    /* the condition variables use the realtime clock: a relative wait */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double d = until - now;
    ts.tv_sec += (time_t)d;
    ts.tv_nsec += (long)((d - (double)(time_t)d) * 1e9);
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_cond_timedwait(&j->cv, &S->mu, &ts);
}

void srv_sched_release(srv_sched *S, srv_job *j) {
    pthread_mutex_lock(&S->mu);
    if (j->state == SRV_JOB_QUEUED) {
        for (int i = 0; i < S->n_queue; i++)
            if (S->queue[i] == j) {
                memmove(S->queue + i, S->queue + i + 1, sizeof *S->queue * (size_t)(S->n_queue - i - 1));
                S->n_queue--;
                break;
            }
        j->state = SRV_JOB_DONE;
        j->finish = SRV_FIN_CANCELLED;
    }
    if (j->state == SRV_JOB_RUNNING) {
        j->cancel = 1;
        pthread_cond_broadcast(&S->wake);
        while (j->state != SRV_JOB_DONE) pthread_cond_wait(&j->cv, &S->mu);
    }
    pthread_mutex_unlock(&S->mu);
    pthread_cond_destroy(&j->cv);
    srv_buf_free(&j->reasoning);
    srv_buf_free(&j->content);
}

void srv_sched_rewrite(srv_sched *S, const srv_job *j, int32_t *tokens, int n) {
    pthread_mutex_lock(&S->mu);
    slot *sl = j->slot >= 0 && j->slot < S->n_slots ? &S->slots[j->slot] : NULL;
    if (sl && !sl->job && sl->gen == j->slot_gen && n < S->n_ctx) {
        free(sl->rewrite);
        sl->rewrite = tokens;
        sl->n_rewrite = n;
        tokens = NULL;
        pthread_cond_broadcast(&S->wake);
    }
    pthread_mutex_unlock(&S->mu);
    free(tokens);
}

void srv_sched_stats(srv_sched *S, srv_stats *st) {
    pthread_mutex_lock(&S->mu);
    *st = S->st;
    st->busy = 0;
    st->kv_tokens = 0;
    for (int i = 0; i < S->n_slots; i++) {
        st->busy += S->slots[i].job != NULL;
        st->kv_tokens += (uint64_t)S->slots[i].n_toks;
    }
    st->queued = S->n_queue;
    st->n_slots = S->n_slots;
    pthread_mutex_unlock(&S->mu);
}

int srv_sched_slot_action(srv_sched *S, int slot, int action, const char *path, int *n, char *err, size_t errlen) {
    slot_op op = {.slot = slot, .action = action, .path = path, .err = err, .errlen = errlen};
    pthread_mutex_lock(&S->mu);
    while (S->op && !S->quit) pthread_cond_wait(&S->op_cv, &S->mu); /* one at a time */
    if (S->quit || S->stopping) {
        op.status = 503;
        snprintf(err, errlen, "the server is shutting down");
    } else {
        S->op = &op;
        pthread_cond_broadcast(&S->wake);
        while (!op.done) pthread_cond_wait(&S->op_cv, &S->mu);
    }
    pthread_mutex_unlock(&S->mu);
    *n = op.n;
    return op.status;
}

int srv_sched_slot_info(srv_sched *S, int slot, int *busy, int *n_tokens) {
    if (slot < 0 || slot >= S->n_slots) return -1;
    pthread_mutex_lock(&S->mu);
    *busy = S->slots[slot].job != NULL;
    *n_tokens = S->slots[slot].n_toks;
    pthread_mutex_unlock(&S->mu);
    return 0;
}
