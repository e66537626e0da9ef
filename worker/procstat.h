/*
 * procstat: the standard process_* metrics of a paymentsd instance, read
 * from /proc (Linux).
 *
 * An instance is the master and its children (workers, housekeeper), and
 * the numbers describe them as one unit, since no single process of it is
 * "the server": a scrape may land on any worker, and the master serves
 * nothing.  See procstat_read for what each number means.
 */
#ifndef PD_PROCSTAT_H
#define PD_PROCSTAT_H

#include <stdint.h>
#include <sys/types.h>

typedef struct {
    double cpu_seconds;         /* user + system, every process, exited ones included */
    int64_t resident_bytes;     /* sum of PSS: shared pages counted once */
    int64_t virtual_bytes;      /* sum of each process's size */
    int64_t open_fds;           /* of the process closest to its limit */
    int64_t max_fds;            /* that process's soft RLIMIT_NOFILE */
    double start_time;          /* the master's start, Unix seconds */
} procstat_t;

/* What procstat_read reads. */
#define PROCSTAT_CPU    1       /* cpu_seconds, start_time: a few small reads */
#define PROCSTAT_OTHER  2       /* memory and descriptors: PSS walks page tables */

/*
 * Read what (PROCSTAT_* or-ed) of the instance whose master is master into
 * out; the fields not asked for are left as they are.  cpu_seconds is the
 * master's own time, the time of the children it has reaped (cutime,
 * cstime) and that of its live children, read so that no child is missed
 * or counted twice when one exits meanwhile: it never goes down.  Only
 * /proc reads, which do not sleep on I/O.  Returns 0, or -1 when the
 * master's own /proc entry cannot be read.
 */
int procstat_read(pid_t master, int what, procstat_t *out) __attribute__((warn_unused_result));

#endif
