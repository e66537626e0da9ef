/*
 * pidfile: the pid file of a daemon (paymentsd's master, provider-sim).
 *
 * Written once the process is ready to take signals, read by the command
 * line (-s), removed at exit only if it still names the writer: a
 * successor started meanwhile may own it.
 */
#ifndef PD_PIDFILE_H
#define PD_PIDFILE_H

#include <stddef.h>
#include <sys/types.h>

/* Write pid to path, creating path's directory (one level) if missing.
 * 0, or -1 with "what(path) failed: reason" in err. */
int pidfile_write(const char *path, pid_t pid, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The pid that path holds, or -1 with errno set (ENOENT and the like from
 * open, EINVAL for a file that holds no pid > 1). */
pid_t pidfile_read(const char *path) __attribute__((warn_unused_result));

/* Remove path if it holds pid; leave it alone otherwise. */
void pidfile_remove(const char *path, pid_t pid);

#endif
