/*
 * pidfile: write, read and remove a pid file.  Plain blocking file I/O:
 * only start-up, exit and the command line use it, never an event loop.
 */
#include "config.h"

#include "common/pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int
pidfile_write(const char *path, pid_t pid, char *err, size_t errlen)
{
    char dir[4096], buf[32];
    const char *what;
    int fd = -1, n;

    snprintf(dir, sizeof(dir), "%s", path);
    what = "mkdir";
    if (mkdir(dirname(dir), 0755) < 0 && errno != EEXIST) {
        path = dir;
        goto fail;
    }
    what = "open";
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        goto fail;
    what = "write";
    n = snprintf(buf, sizeof(buf), "%ld\n", (long)pid);
    errno = 0;
    if (write(fd, buf, (size_t)n) != n) {
        if (errno == 0)
            errno = ENOSPC;     /* a short write sets none */
        goto fail;
    }
    close(fd);
    return 0;
fail:
    snprintf(err, errlen, "%s(%.512s) failed: %s", what, path, strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

pid_t
pidfile_read(const char *path)
{
    FILE *f = fopen(path, "r");
    long pid;
    int n;

    if (f == NULL)
        return -1;
    n = fscanf(f, "%ld", &pid);
    fclose(f);
    if (n != 1 || pid <= 1 || (long)(pid_t)pid != pid) {
        errno = EINVAL;
        return -1;
    }
    return (pid_t)pid;
}

void
pidfile_remove(const char *path, pid_t pid)
{
    int saved = errno;

    if (pidfile_read(path) == pid)
        unlink(path);
    errno = saved;
}
