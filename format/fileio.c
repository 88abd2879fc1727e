/* fileio.c — the file rules every edgeseek program shares (edgeseek.h,
 * "files"):
 *
 *  - es_std_fds_guard: descriptors 0-2 are made valid before anything is
 *    opened, so a file opened later never becomes "standard error" by
 *    accident (a log line written into a model).
 *  - es_outfile_*: every file edgeseek writes is written to a temporary
 *    beside the target (".NAME.tmp.PID", same directory, so the same file
 *    system) and renamed over the target only once complete and synced.
 *    The target's old content survives any failure; the temporary is
 *    removed on failure, and on SIGINT, SIGTERM and SIGHUP by a handler that
 *    unlinks every registered temporary (unlink is async-signal-safe) and
 *    re-raises the signal with the action that was there before.
 *
 * A target that exists and is not a regular file (a device such as
 * /dev/null or /dev/full, a FIFO), and the names of descriptors
 * (/dev/stdout, /dev/fd/N, /proc/...), are written directly: they cannot be
 * replaced by renaming.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgeseek.h"

/* ---- standard descriptors ------------------------------------------------------ */

int es_std_fds_guard(void) {
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
        /* Opened the wrong way round on purpose: reading fd 0 or writing
         * fd 1 or 2 still fails with EBADF, as it did while closed. */
        int nfd = open("/dev/null", fd == 0 ? O_WRONLY : O_RDONLY);
        if (nfd < 0) return -1;
        if (nfd != fd) {
            int r = dup2(nfd, fd);
            close(nfd);
            if (r < 0) return -1;
        }
    }
    return 0;
}

/* ---- temporaries removed on a fatal signal ------------------------------------- */

#define MAX_TEMPS 16
static const int fatal_signals[] = {SIGINT, SIGTERM, SIGHUP};
#define N_FATAL (sizeof fatal_signals / sizeof fatal_signals[0])

/* Slots are never freed, only marked unused, so the handler never reads
 * freed memory. */
static char temp_path[MAX_TEMPS][PATH_MAX];
static volatile sig_atomic_t temp_used[MAX_TEMPS];
static struct sigaction old_action[N_FATAL];
static int handlers_installed;
static pthread_mutex_t temp_lock = PTHREAD_MUTEX_INITIALIZER;

static void on_fatal_signal(int sig) {
    int saved = errno;
    for (int i = 0; i < MAX_TEMPS; i++)
        if (temp_used[i]) unlink(temp_path[i]);
    /* the action there was before; the signal is blocked while this handler
     * runs, so it is delivered (to that action) as soon as we return */
    for (size_t k = 0; k < N_FATAL; k++)
        if (fatal_signals[k] == sig) sigaction(sig, &old_action[k], NULL);
    raise(sig);
    errno = saved;
}

static void install_handlers(void) {
    for (size_t k = 0; k < N_FATAL; k++) {
        struct sigaction cur;
        if (sigaction(fatal_signals[k], NULL, &cur) != 0) continue;
        if (cur.sa_handler == SIG_IGN) continue; /* nohup and the like: still ignored */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_fatal_signal;
        sigfillset(&sa.sa_mask);
        old_action[k] = cur;
        sigaction(fatal_signals[k], &sa, NULL);
    }
    handlers_installed = 1;
}

/* The slot of the registered path, or -1 when all are taken. */
static int register_temp(const char *path) {
    pthread_mutex_lock(&temp_lock);
    if (!handlers_installed) install_handlers();
    int slot = -1;
    for (int i = 0; i < MAX_TEMPS && slot < 0; i++)
        if (!temp_used[i]) {
            snprintf(temp_path[i], sizeof temp_path[i], "%s", path);
            temp_used[i] = 1;
            slot = i;
        }
    pthread_mutex_unlock(&temp_lock);
    return slot;
}

static void unregister_temp(int slot) {
    pthread_mutex_lock(&temp_lock);
    temp_used[slot] = 0;
    pthread_mutex_unlock(&temp_lock);
}

/* ---- atomic output ------------------------------------------------------------- */

struct es_outfile {
    int fd;
    int slot;     /* registered temporary, or -1 when written directly */
    char *target; /* the name the caller gave */
    char *final;  /* what is renamed over (the target, symbolic links resolved) */
    char *temp;   /* NULL when written directly */
};

static es_status set_err(char *err, size_t errlen, es_status st, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

static void outfile_free(es_outfile *f) {
    free(f->target);
    free(f->final);
    free(f->temp);
    free(f);
}

/* A path that must be written in place rather than replaced. */
static int write_directly(const char *path) {
    struct stat st;
    if (!strncmp(path, "/dev/std", 8) || !strncmp(path, "/dev/fd/", 8) || !strncmp(path, "/proc/", 6)) return 1;
    return stat(path, &st) == 0 && !S_ISREG(st.st_mode);
}

es_status es_outfile_open(const char *path, es_outfile **out, char *err, size_t errlen) {
    *out = NULL;
    if (!path || !*path) return set_err(err, errlen, ES_ERR_ARG, "empty output path");
    es_outfile *f = calloc(1, sizeof *f);
    if (!f || !(f->target = strdup(path))) {
        free(f);
        return set_err(err, errlen, ES_ERR_NOMEM, "out of memory");
    }
    f->fd = -1;
    f->slot = -1;
    if (write_directly(path)) {
        f->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (f->fd < 0) {
            es_status st = set_err(err, errlen, ES_ERR_IO, "cannot create '%s': %s", path, strerror(errno));
            outfile_free(f);
            return st;
        }
        *out = f;
        return ES_OK;
    }
    /* a symbolic link stays one: the file it points to is replaced */
    struct stat lst, st;
    char *resolved = lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode) ? realpath(path, NULL) : NULL;
    f->final = resolved ? resolved : strdup(path);
    if (!f->final) { outfile_free(f); return set_err(err, errlen, ES_ERR_NOMEM, "out of memory"); }
    int had_target = stat(f->final, &st) == 0 && S_ISREG(st.st_mode);

    const char *slash = strrchr(f->final, '/');
    size_t dir_len = slash ? (size_t)(slash - f->final) + 1 : 0;
    const char *base = f->final + dir_len;
    size_t cap = strlen(f->final) + 48;
    f->temp = malloc(cap);
    if (!f->temp) { outfile_free(f); return set_err(err, errlen, ES_ERR_NOMEM, "out of memory"); }
    for (int attempt = 0; attempt < 100 && f->fd < 0; attempt++) {
        if (attempt == 0)
            snprintf(f->temp, cap, "%.*s.%s.tmp.%ld", (int)dir_len, f->final, base, (long)getpid());
        else
            snprintf(f->temp, cap, "%.*s.%s.tmp.%ld.%d", (int)dir_len, f->final, base, (long)getpid(), attempt);
        f->fd = open(f->temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (f->fd < 0 && errno != EEXIST) break;
    }
    if (f->fd < 0) {
        es_status st2 = set_err(err, errlen, ES_ERR_IO, "cannot create '%s' (temporary '%s'): %s", path, f->temp,
                                strerror(errno));
        outfile_free(f);
        return st2;
    }
    if (strlen(f->temp) >= PATH_MAX || (f->slot = register_temp(f->temp)) < 0) {
        close(f->fd);
        unlink(f->temp);
        outfile_free(f);
        return set_err(err, errlen, ES_ERR_IO, "cannot create '%s': too many output files at once", path);
    }
    if (had_target) (void)fchmod(f->fd, st.st_mode & 07777); /* the replaced file's permissions */
    *out = f;
    return ES_OK;
}

es_status es_outfile_write(es_outfile *f, const void *data, size_t n, char *err, size_t errlen) {
    const char *p = data;
    while (n) {
        ssize_t r = write(f->fd, p, n);
        if (r < 0) {
            if (errno == EINTR) continue;
            return set_err(err, errlen, ES_ERR_IO, "cannot write '%s': %s", f->target, strerror(errno));
        }
        if (r == 0) return set_err(err, errlen, ES_ERR_IO, "cannot write '%s': no progress", f->target);
        p += r;
        n -= (size_t)r;
    }
    return ES_OK;
}

/* Removes the temporary and frees f. */
static void outfile_drop(es_outfile *f) {
    if (f->temp) {
        unlink(f->temp);
        unregister_temp(f->slot);
    }
    outfile_free(f);
}

es_status es_outfile_commit(es_outfile *f, char *err, size_t errlen) {
    if (!f) return set_err(err, errlen, ES_ERR_ARG, "no output file");
    int fd = f->fd;
    f->fd = -1;
    if (!f->temp) { /* written directly */
        es_status st = close(fd) == 0 ? ES_OK
                                      : set_err(err, errlen, ES_ERR_IO, "cannot write '%s': %s", f->target,
                                                strerror(errno));
        outfile_free(f);
        return st;
    }
    if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
        es_status st = set_err(err, errlen, ES_ERR_IO, "cannot write '%s': %s", f->target, strerror(errno));
        close(fd);
        outfile_drop(f);
        return st;
    }
    if (close(fd) != 0) {
        es_status st = set_err(err, errlen, ES_ERR_IO, "cannot write '%s': %s", f->target, strerror(errno));
        outfile_drop(f);
        return st;
    }
    if (rename(f->temp, f->final) != 0) {
        es_status st = set_err(err, errlen, ES_ERR_IO, "cannot rename '%s' to '%s': %s", f->temp, f->final,
                               strerror(errno));
        outfile_drop(f);
        return st;
    }
    /* the rename itself on disk (best effort) */
    const char *slash = strrchr(f->final, '/');
    char *dir = slash ? strndup(f->final, (size_t)(slash - f->final) + 1) : NULL;
    int dfd = open(dir ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    free(dir);
    unregister_temp(f->slot); /* after the rename: a signal in between unlinks nothing */
    outfile_free(f);
    return ES_OK;
}

void es_outfile_discard(es_outfile *f) {
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    outfile_drop(f);
}
