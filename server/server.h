/* server.h — `edgeseek serve`, the OpenAI-compatible HTTP server: its
 * options (filled by cli/cmd_serve.c), the entry point, and the pieces the
 * server's files share: the scheduler of slots (sched.c) and the growing
 * text buffers the scheduler fills and the HTTP handlers (http.c) read.
 * The server is built on the public API (edgeseek.h) alone; it links
 * civetweb and cJSON, into the edgeseek binary only. */
#ifndef ES_SERVER_H
#define ES_SERVER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "edgeseek.h"

typedef struct srv_opts {
    const char *model_path;
    const char *host;           /* default 127.0.0.1 */
    int port;                   /* default 8080; 0: any free port (printed) */
    int n_slots;                /* -np, default 4 */
    int n_ctx;                  /* per slot; 0: min(training context, 4096) */
    int n_threads;              /* 0: physical cores */
    char api_key[512];          /* empty: no key */
    int reasoning;              /* 1: deepseek (split reasoning_content), 0: none */
    es_load_params lp;          /* paging flags, as `run` */
    long max_body;              /* bytes of a request body (413 beyond) */
    int max_header;             /* bytes of a request's headers */
    int max_conn;               /* connections served at once */
    int idle_timeout_ms;        /* a client silent this long is dropped */
    int request_timeout_s;      /* most time a request may generate */
    int queue;                  /* requests waiting for a slot (503 beyond) */
    int chunk;                  /* prompt tokens per prefill step */
    int keepalive_ms;           /* SSE comment after this long without output */
    const char *alias;          /* the model's name in answers (default: the file name) */
    int step_ms;                /* each scheduler step takes at least this long (tests:
                                   EDGESEEK_SERVE_STEP_MS) */
    int load_ms;                /* the model's load starts this late (tests: /health's 503
                                   while loading; EDGESEEK_SERVE_LOAD_MS) */
    int kv_type;                /* es_kv_type of every slot's cache (0: the default) */
    const char *slot_save_path; /* the directory of POST /slots/{id}?action=save|restore files;
                                   NULL: those actions are off */
    int mtp;                    /* --mtp: speculative decoding with the model's MTP block */
} srv_opts;

/* Sets the defaults above. */
void srv_opts_default(srv_opts *o);
/* Runs the server until SIGINT or SIGTERM; returns the exit status (0 after
 * a signal, 1 when the model or the port fails). */
int srv_main(const srv_opts *o);

/* ---- text buffers -------------------------------------------------------- */
typedef struct srv_buf {
    char *p;
    size_t n, cap;
    int oom;
} srv_buf;
void srv_buf_put(srv_buf *b, const char *s, size_t n);
void srv_buf_free(srv_buf *b);

/* ---- scheduler ----------------------------------------------------------- */
enum { SRV_FIN_NONE = 0, SRV_FIN_STOP, SRV_FIN_LENGTH, SRV_FIN_CANCELLED, SRV_FIN_ERROR };
enum { SRV_JOB_QUEUED = 0, SRV_JOB_RUNNING, SRV_JOB_DONE };

/* One request's generation.  The submitter fills the inputs; the scheduler
 * fills the outputs under the scheduler's lock and signals cv. */
typedef struct srv_job {
    /* inputs */
    int32_t *prompt;
    int n_prompt;
    es_sampler_params sp;
    int64_t max_tokens;          /* -1: until the context is full */
    const char *const *stop;
    int n_stop;
    int split_reasoning, think_open, ignore_eos;
    int progress;                /* the submitter takes the text as it comes (a stream): its cv is
                                    signalled at every token; else at the prompt's chunks and the end */
    double deadline;             /* monotonic seconds; generation ends there */
    /* outputs, under the lock */
    pthread_cond_t cv;
    int state, finish;
    int cancel;                  /* set by the submitter: stop at the next step */
    srv_buf reasoning, content;  /* decided text so far */
    int n_gen, n_cached, slot;
    uint64_t slot_gen;           /* which use of the slot (for srv_sched_rewrite) */
    int prefilled;               /* prompt tokens evaluated so far */
    int n_drafted, n_accepted;   /* --mtp: drafts verified, and kept */
    char err[256];
} srv_job;

typedef struct srv_sched srv_sched;

typedef struct srv_stats {
    uint64_t prompt_tokens, gen_tokens, requests, cached_tokens;
    double gen_seconds, prompt_seconds; /* busy time of decode and prefill steps */
    int busy, queued, n_slots;
    uint64_t kv_tokens;                 /* tokens the slots' caches hold together */
    double expert_hit;                  /* -1: no routed-expert paging figures */
    int mtp;                            /* the slots decode with --mtp */
    uint64_t mtp_drafted, mtp_accepted; /* drafts verified and kept, over the finished requests */
} srv_stats;

es_status srv_sched_new(es_model *m, const srv_opts *o, srv_sched **out, char *err, size_t errlen);
/* Cancels everything, stops the thread, frees. */
void srv_sched_free(srv_sched *s);
pthread_mutex_t *srv_sched_lock(srv_sched *s);
/* Queues job (its inputs set, the rest zeroed by the call); 0, or -1 when
 * the queue is full (answer 503) or the server is stopping. */
int srv_sched_submit(srv_sched *s, srv_job *job);
/* Under the lock: waits for news on job until deadline (monotonic s). */
void srv_sched_wait(srv_sched *s, srv_job *job, double until);
/* Takes a job out: cancels it if still queued or running, waits until the
 * scheduler has let it go; frees its buffers. */
void srv_sched_release(srv_sched *s, srv_job *job);
/* After a chat turn: the tokens the next request of that conversation will
 * begin with; the slot, if still idle since job, rewrites its cache to
 * them in idle steps.  Takes tokens (malloc'd). */
void srv_sched_rewrite(srv_sched *s, const srv_job *job, int32_t *tokens, int n);
/* Cancels every job, refuses new ones. */
void srv_sched_stop(srv_sched *s);
void srv_sched_stats(srv_sched *s, srv_stats *st);
/* A slot action, run by the scheduler's thread between two steps (waits for
 * it): SRV_SLOT_SAVE writes the slot's session to path (es_session_save),
 * SRV_SLOT_RESTORE loads it from path (es_session_load: a file of another
 * model or cache type is refused), SRV_SLOT_ERASE empties the slot.
 * Returns the HTTP status: 200, 404 (no such slot), 503 (the slot is
 * generating, or the server stops), 400 (a refused file), 500 (I/O); err
 * says why.  *n: the tokens saved, restored or erased. */
enum { SRV_SLOT_SAVE = 0, SRV_SLOT_RESTORE, SRV_SLOT_ERASE };
int srv_sched_slot_action(srv_sched *s, int slot, int action, const char *path, int *n, char *err, size_t errlen);
/* Whether the slot is generating and the tokens its cache holds; -1 when
 * there is no such slot. */
int srv_sched_slot_info(srv_sched *s, int slot, int *busy, int *n_tokens);
int srv_sched_n_ctx(const srv_sched *s);
double srv_now(void);

/* ---- the embedded page (generated from server/page.html) ---------------- */
extern const unsigned char srv_page_html[];
extern const size_t srv_page_html_len;

#endif
