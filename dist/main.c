/* main.c — edgeseek-mpi: the edgeseek commands run, logits, bench and eval
 * over several MPI ranks (expert parallelism; README "Several machines").
 *
 *   mpirun -np N edgeseek-mpi [--timeout S] [--traffic] COMMAND [options]
 *
 * Rank 0 runs the CLI's own command (cli/cmd_*.c, unchanged): it reads the
 * prompt, tokenises, samples and writes every output.  The model and
 * session calls those commands make are mirrored to the other ranks: the
 * program is linked with `-Wl,--wrap=` for each of them (see the
 * Makefile), so the CLI's call to es_model_load lands in
 * __wrap_es_model_load below, which loads rank 0's share
 * (es_model_load_share), broadcasts the call, and gathers every rank's
 * result; es_session_eval broadcasts the tokens before evaluating them.
 * The other ranks ("followers") wait for those operations and repeat them
 * on their own handles: they load the same path with rank 0's parameters
 * (and rank 0's SIMD path, so every rank computes the same bits), hold
 * their own share of the experts, and evaluate without logits.  Inside
 * each evaluation every rank meets the others once per MoE layer in
 * dist_moe_reduce (comm.c).
 *
 * (A follower calls the __real_ functions: its own calls would be wrapped
 * too.)  Every rank must see the model at the same path; --mem-budget, -t and the
 * paging options apply to each rank on its own. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "comm.h"
#include "edgeseek.h"

/* ---- the mirrored operations -------------------------------------------------------- */

enum { OP_QUIT, OP_LOAD, OP_MODEL_FREE, OP_SESSION_NEW, OP_SESSION_FREE, OP_THREADS, OP_RESET, OP_TRUNCATE, OP_EVAL };

typedef struct op {
    int32_t op, model, session, arg;
    int64_t payload; /* bytes broadcast after the op */
} op;

typedef struct load_msg {
    es_load_params lp; /* simd: NULL; the name follows */
    char simd[32];
    char path[4096];
} load_msg;

typedef struct result {
    int32_t status;
    char msg[500];
} result;

#define MAX_MODELS 8
#define MAX_SESSIONS 32
static es_model *models[MAX_MODELS];
static es_session *sessions[MAX_SESSIONS];

/* The wrapped library functions (the linker's --wrap): __real_X is the
 * library's X, __wrap_X (below) what every call of X in this program gets. */
#define WRAPPED(ret, name, params) ret __real_##name params; ret __wrap_##name params;
WRAPPED(es_status, es_model_load, (const char *path, const es_load_params *params, es_model **out, char *err,
                                   size_t errlen))
WRAPPED(void, es_model_free, (es_model *m))
WRAPPED(es_status, es_session_new, (es_model *m, int n_ctx, es_session **out, char *err, size_t errlen))
WRAPPED(es_status, es_session_new_ext, (es_model *m, const es_session_params *p, es_session **out, char *err,
                                         size_t errlen))
WRAPPED(void, es_session_free, (es_session *s))
WRAPPED(es_status, es_session_load, (es_session *s, const char *path, char *err, size_t errlen))
WRAPPED(es_status, es_session_set_threads, (es_session *s, int n_threads, char *err, size_t errlen))
WRAPPED(void, es_session_reset, (es_session *s))
WRAPPED(es_status, es_session_truncate, (es_session *s, int pos, char *err, size_t errlen))
WRAPPED(es_status, es_session_eval, (es_session *s, const int32_t *tokens, int n, float *logits, int all_positions,
                                     char *err, size_t errlen))
#undef WRAPPED

/* How each MoE layer's slots travel (--exchange; every rank parses it
 * alike): 1, MPI_Allgatherv of each rank's own slots; 0, MPI_Allreduce of
 * them all. */
static int g_gather = 1;

static void set_exchange(es_session *s) {
    if (g_gather) es_session_set_moe_exchange(s, dist_moe_exchange, NULL);
    else es_session_set_moe_reduce(s, dist_moe_reduce, NULL);
}

static int find_model(const es_model *m) {
    for (int i = 0; i < MAX_MODELS; i++)
        if (m && models[i] == m) return i;
    return -1;
}
static int find_session(const es_session *s) {
    for (int i = 0; i < MAX_SESSIONS; i++)
        if (s && sessions[i] == s) return i;
    return -1;
}

static void send_op(int code, int model, int session, int arg, const void *payload, size_t n) {
    op o = {code, model, session, arg, (int64_t)n};
    dist_bcast(&o, sizeof o, 1, "the broadcast of rank 0's next operation");
    if (n) dist_bcast((void *)payload, n, 1, "the broadcast of an operation's data");
}

/* Rank 0: every rank's result of the operation just mirrored; the first
 * failure goes to err as "rank R: ..." and its status is returned. */
static es_status gather_results(const result *mine, char *err, size_t errlen) {
    const int n = dist_size();
    result *all = calloc((size_t)n, sizeof *all);
    if (!all) dist_fail("out of memory for %d results", n);
    dist_gather(mine, all, sizeof *all, "the gathering of the ranks' results");
    es_status st = ES_OK;
    for (int r = 1; r < n && st == ES_OK; r++)
        if (all[r].status != ES_OK) {
            st = (es_status)all[r].status;
            if (err && errlen) snprintf(err, errlen, "rank %d: %s", r, all[r].msg);
        }
    free(all);
    return st;
}

es_status __wrap_es_model_load(const char *path, const es_load_params *params, es_model **out, char *err,
                               size_t errlen) {
    if (dist_size() == 1 || (params && params->vocab_only)) return __real_es_model_load(path, params, out, err, errlen);
    int id = find_model(NULL);
    for (int i = 0; i < MAX_MODELS && id < 0; i++)
        if (!models[i]) id = i;
    if (id < 0) {
        if (err && errlen) snprintf(err, errlen, "edgeseek-mpi holds at most %d models", MAX_MODELS);
        return ES_ERR_ARG;
    }
    load_msg *msg = calloc(1, sizeof *msg);
    if (!msg) dist_fail("out of memory");
    if (params) msg->lp = *params;
    msg->lp.simd = NULL;
    if (strlen(path) >= sizeof msg->path) {
        free(msg);
        if (err && errlen) snprintf(err, errlen, "model path longer than %zu bytes", sizeof msg->path - 1);
        return ES_ERR_ARG;
    }
    snprintf(msg->path, sizeof msg->path, "%s", path);
    es_status st = es_model_load_share(path, params, 0, dist_size(), out, err, errlen);
    if (st != ES_OK) {
        free(msg);
        return st;
    }
    /* every rank computes with rank 0's kernels: the same bits everywhere */
    snprintf(msg->simd, sizeof msg->simd, "%s", es_model_simd(*out));
    send_op(OP_LOAD, id, -1, 0, msg, sizeof *msg);
    free(msg);
    result mine = {ES_OK, ""};
    st = gather_results(&mine, err, errlen);
    models[id] = *out;
    if (st != ES_OK) {
        __wrap_es_model_free(*out);
        *out = NULL;
    }
    return st;
}

void __wrap_es_model_free(es_model *m) {
    int id = find_model(m);
    if (id >= 0) {
        send_op(OP_MODEL_FREE, id, -1, 0, NULL, 0);
        models[id] = NULL;
    }
    __real_es_model_free(m);
}

/* A session on rank 0 and its mirror on every other rank, with the same
 * parameters (the cache type included: every rank's rows must agree). */
es_status __wrap_es_session_new_ext(es_model *m, const es_session_params *p, es_session **out, char *err,
                                    size_t errlen) {
    es_status st = __real_es_session_new_ext(m, p, out, err, errlen);
    int mid = find_model(m);
    if (st != ES_OK || mid < 0) return st;
    int id = -1;
    for (int i = 0; i < MAX_SESSIONS && id < 0; i++)
        if (!sessions[i]) id = i;
    if (id < 0) {
        __real_es_session_free(*out);
        *out = NULL;
        if (err && errlen) snprintf(err, errlen, "edgeseek-mpi holds at most %d sessions", MAX_SESSIONS);
        return ES_ERR_ARG;
    }
    sessions[id] = *out;
    set_exchange(*out);
    const es_session_params none = {0};
    send_op(OP_SESSION_NEW, mid, id, 0, p ? p : &none, sizeof none);
    result mine = {ES_OK, ""};
    st = gather_results(&mine, err, errlen);
    if (st != ES_OK) {
        __wrap_es_session_free(*out);
        *out = NULL;
    }
    return st;
}

/* es_session_new inside the library calls es_session_new_ext directly, past
 * the wrap: this wrap gives it the same mirror (an F32 cache, as it makes). */
es_status __wrap_es_session_new(es_model *m, int n_ctx, es_session **out, char *err, size_t errlen) {
    const es_session_params p = {.n_ctx = n_ctx, .kv_type = ES_KV_F32};
    return __wrap_es_session_new_ext(m, &p, out, err, errlen);
}

/* A saved session would fill rank 0's cache alone: the other ranks, which
 * compute the attention of every token too, would go on without it. */
es_status __wrap_es_session_load(es_session *s, const char *path, char *err, size_t errlen) {
    if (dist_size() == 1) return __real_es_session_load(s, path, err, errlen);
    if (err && errlen)
        snprintf(err, errlen, "%s: saved sessions are not supported across %d ranks (every rank would need the cache)",
                 path, dist_size());
    return ES_ERR_IO;
}

void __wrap_es_session_free(es_session *s) {
    int id = find_session(s);
    if (id >= 0) {
        send_op(OP_SESSION_FREE, -1, id, 0, NULL, 0);
        sessions[id] = NULL;
    }
    __real_es_session_free(s);
}

es_status __wrap_es_session_set_threads(es_session *s, int n_threads, char *err, size_t errlen) {
    es_status st = __real_es_session_set_threads(s, n_threads, err, errlen);
    int id = find_session(s);
    if (st == ES_OK && id >= 0) send_op(OP_THREADS, -1, id, n_threads, NULL, 0);
    return st;
}

void __wrap_es_session_reset(es_session *s) {
    int id = find_session(s);
    if (id >= 0) send_op(OP_RESET, -1, id, 0, NULL, 0);
    __real_es_session_reset(s);
}

es_status __wrap_es_session_truncate(es_session *s, int pos, char *err, size_t errlen) {
    int id = find_session(s);
    if (id >= 0) send_op(OP_TRUNCATE, -1, id, pos, NULL, 0);
    return __real_es_session_truncate(s, pos, err, errlen);
}

es_status __wrap_es_session_eval(es_session *s, const int32_t *tokens, int n, float *logits, int all_positions,
                                 char *err, size_t errlen) {
    int id = find_session(s);
    if (id < 0 || n <= 0) return __real_es_session_eval(s, tokens, n, logits, all_positions, err, errlen);
    send_op(OP_EVAL, -1, id, n, tokens, sizeof(int32_t) * (size_t)n);
    dist_traffic_eval(n);
    es_status st = __real_es_session_eval(s, tokens, n, logits, all_positions, err, errlen);
    /* an I/O failure is this rank's alone (its file or pager): the others
     * wait in a reduce that will not come; every other error (context,
     * token ids, values) happens on every rank alike */
    if (st == ES_ERR_IO) dist_fail("%s", err && errlen ? err : "evaluation failed");
    return st;
}

/* ---- followers ------------------------------------------------------------------------ */

static es_model *follower_model(int id) {
    if (id < 0 || id >= MAX_MODELS) dist_fail("rank 0 named model %d, which does not exist", id);
    return models[id];
}
static es_session *follower_session(int id) {
    if (id < 0 || id >= MAX_SESSIONS) dist_fail("rank 0 named session %d, which does not exist", id);
    return sessions[id];
}

static void follower_load(const op *o, result *res) {
    load_msg *msg = calloc(1, sizeof *msg);
    if (!msg || o->payload != (int64_t)sizeof *msg) dist_fail("bad load message from rank 0");
    dist_bcast(msg, sizeof *msg, 1, "the broadcast of an operation's data");
    msg->simd[sizeof msg->simd - 1] = msg->path[sizeof msg->path - 1] = 0;
    msg->lp.simd = msg->simd;
    es_model *m = NULL;
    res->status = es_model_load_share(msg->path, &msg->lp, dist_rank(), dist_size(), &m, res->msg, sizeof res->msg);
    follower_model(o->model);
    models[o->model] = m;
    free(msg);
}

static void follower_loop(void) {
    int32_t *tok = NULL;
    size_t tok_cap = 0;
    char err[512];
    /* rank 0 may take its time before its first load (reading a prompt);
     * after it, it sends its operations as fast as it computes, so a long
     * silence means it, or the network to it, is gone */
    int timed = 0;
    for (;;) {
        op o;
        dist_bcast(&o, sizeof o, timed, "waiting for rank 0's next operation");
        timed |= o.op == OP_LOAD;
        result res = {ES_OK, ""};
        switch (o.op) {
        case OP_QUIT: free(tok); return;
        case OP_LOAD:
            follower_load(&o, &res);
            dist_gather(&res, NULL, sizeof res, "the gathering of the ranks' results");
            break;
        case OP_MODEL_FREE:
            __real_es_model_free(follower_model(o.model));
            models[o.model] = NULL;
            break;
        case OP_SESSION_NEW: {
            es_model *m = follower_model(o.model);
            es_session *s = NULL;
            follower_session(o.session);
            es_session_params p = {0};
            if (o.payload == (int64_t)sizeof p) dist_bcast(&p, sizeof p, 1, "the broadcast of an operation's data");
            if (!m) {
                res.status = ES_ERR_ARG;
                snprintf(res.msg, sizeof res.msg, "no model loaded");
            } else {
                res.status = __real_es_session_new_ext(m, &p, &s, res.msg, sizeof res.msg);
                if (s) set_exchange(s);
            }
            sessions[o.session] = s;
            dist_gather(&res, NULL, sizeof res, "the gathering of the ranks' results");
            break;
        }
        case OP_SESSION_FREE:
            __real_es_session_free(follower_session(o.session));
            sessions[o.session] = NULL;
            break;
        case OP_THREADS:
            if (follower_session(o.session) &&
                __real_es_session_set_threads(sessions[o.session], o.arg, err, sizeof err) != ES_OK)
                fprintf(stderr, "edgeseek-mpi: rank %d: %s\n", dist_rank(), err);
            break;
        case OP_RESET:
            if (follower_session(o.session)) __real_es_session_reset(sessions[o.session]);
            break;
        case OP_TRUNCATE:
            if (follower_session(o.session)) __real_es_session_truncate(sessions[o.session], o.arg, err, sizeof err);
            break;
        case OP_EVAL: {
            if (o.payload != (int64_t)sizeof(int32_t) * o.arg || o.arg <= 0) dist_fail("bad evaluation from rank 0");
            if ((size_t)o.arg > tok_cap) {
                free(tok);
                tok_cap = (size_t)o.arg;
                tok = malloc(sizeof *tok * tok_cap);
                if (!tok) dist_fail("out of memory for %d tokens", o.arg);
            }
            dist_bcast(tok, (size_t)o.payload, 1, "the broadcast of an operation's data");
            es_session *s = follower_session(o.session);
            if (!s) dist_fail("rank 0 evaluates session %d, which this rank could not create", o.session);
            dist_traffic_eval(o.arg);
            es_status st = __real_es_session_eval(s, tok, o.arg, NULL, 0, err, sizeof err);
            if (st == ES_ERR_IO) dist_fail("%s", err);
            break;
        }
        default: dist_fail("unknown operation %d from rank 0", o.op);
        }
    }
}

/* ---- the command line ------------------------------------------------------------------ */

/* The commands rank 0 runs: the CLI's own. */
static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} commands[] = {{"run", cmd_run}, {"logits", cmd_logits}, {"bench", cmd_bench}, {"eval", cmd_eval}};

static void usage(FILE *f) {
    fputs("edgeseek-mpi — edgeseek over MPI ranks, each holding a share of the routed experts\n\n"
          "usage: mpirun -np N edgeseek-mpi [--timeout SECONDS] [--traffic] [--exchange gather|reduce]\n"
          "                                COMMAND [options]\n\n"
          "  --timeout S  end the run when one collective waits longer than S seconds\n"
          "               (default: EDGESEEK_MPI_TIMEOUT, else 120)\n"
          "  --traffic    print the bytes each rank sent per token at the end (stderr)\n"
          "  --exchange gather|reduce\n"
          "               how each MoE layer's expert outputs travel: MPI_Allgatherv of\n"
          "               each rank's own (default), or MPI_Allreduce of all of them\n\n"
          "COMMAND is run, logits, bench or eval, with the options of edgeseek's command of that\n"
          "name (edgeseek-mpi COMMAND --help); rank 0 reads the input and writes the output.\n",
          f);
}

static void print_traffic(void) {
    const dist_traffic *t = dist_traffic_get();
    const char *x = g_gather ? "gathers" : "reduces";
    fprintf(stderr, "[mpi] %d ranks, %s; rank 0's payload:", dist_size(),
            g_gather ? "MPI_Allgatherv of each rank's own slots" : "MPI_Allreduce of the slots");
    if (t->decode_tokens)
        fprintf(stderr, " decode %llu tokens, %llu bytes in %llu %s (%.0f bytes per token)",
                (unsigned long long)t->decode_tokens, (unsigned long long)t->decode_bytes,
                (unsigned long long)t->decode_reduces, x, (double)t->decode_bytes / (double)t->decode_tokens);
    if (t->prefill_tokens)
        fprintf(stderr, "%s prefill %llu tokens, %llu bytes in %llu %s (%.0f bytes per token)",
                t->decode_tokens ? ";" : "", (unsigned long long)t->prefill_tokens,
                (unsigned long long)t->prefill_bytes, (unsigned long long)t->prefill_reduces, x,
                (double)t->prefill_bytes / (double)t->prefill_tokens);
    if (!t->decode_tokens && !t->prefill_tokens) fprintf(stderr, " nothing evaluated");
    fprintf(stderr, "\n");
}

/* Rank 0: the dist options, then the command; returns the exit status. */
static int run_leader(int argc, char **argv, int traffic) {
    if (argc < 1) { usage(stderr); return 2; }
    const char *cmd = argv[0];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) { usage(stdout); return 0; }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(cmd, commands[i].name)) {
            int rc = commands[i].run(argc, argv);
            if (traffic) print_traffic();
            return rc;
        }
    return cli_usage_error(usage, "edgeseek-mpi: unknown command '%s'\n\n", cmd);
}

int main(int argc, char **argv) {
    if (es_std_fds_guard() != 0) {
        fprintf(stderr, "edgeseek-mpi: cannot open /dev/null\n");
        return 1;
    }
    int provided = 0;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "edgeseek-mpi: MPI_Init_thread failed\n");
        return 1;
    }
    /* the dist options (every rank parses them alike) */
    double timeout = 0;
    int traffic = 0, a = 1, rc = 0;
    const char *env = getenv("EDGESEEK_MPI_TIMEOUT");
    if (env && *env && cli_parse_float("EDGESEEK_MPI_TIMEOUT", env, 0.1, 1e6, &timeout) != 0) rc = 2;
    for (; a < argc && !rc; a++) {
        if (!strcmp(argv[a], "--traffic")) traffic = 1;
        else if (!strcmp(argv[a], "--exchange") && a + 1 < argc) {
            const char *x = argv[++a];
            if (!strcmp(x, "gather")) g_gather = 1;
            else if (!strcmp(x, "reduce")) g_gather = 0;
            else {
                fprintf(stderr, "edgeseek-mpi: --exchange takes gather or reduce, not '%s'\n", x);
                rc = 2;
            }
        } else if (!strcmp(argv[a], "--timeout") && a + 1 < argc) {
            if (cli_parse_float("--timeout", argv[++a], 0.1, 1e6, &timeout) != 0) rc = 2;
        } else break;
    }
    if (rc || provided < MPI_THREAD_FUNNELED || dist_comm_start(timeout) != 0) {
        if (!rc) fprintf(stderr, "edgeseek-mpi: this MPI cannot give MPI_THREAD_FUNNELED\n");
        MPI_Finalize();
        return rc ? rc : 1;
    }
    if (dist_rank() == 0) {
        rc = run_leader(argc - a, argv + a, traffic);
        if (dist_size() > 1) send_op(OP_QUIT, -1, -1, 0, NULL, 0);
        rc = cli_close_stdout(rc);
    } else {
        follower_loop();
    }
    MPI_Finalize();
    return rc;
}
