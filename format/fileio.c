/* fileio.c — the file rules every edgeseek program shares (edgeseek.h,
 * "files"):
 *
 *  - es_std_fds_guard: descriptors 0-2 are made valid before anything is
 *    opened, so a file opened later never becomes "standard error" by
 *    accident (a log line written into a model).
 */
#include <errno.h>
#include <fcntl.h>
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
