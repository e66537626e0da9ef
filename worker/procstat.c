/*
 * procstat: process_* numbers of the master and its children, from /proc.
 *
 * Per process: /proc/PID/stat (CPU ticks, start, virtual size, RSS),
 * smaps_rollup (PSS), fd/ (open descriptors) and limits (their limit).
 * The children come from /proc/MASTER/task/MASTER/children (the master is
 * single-threaded).  A process that goes away while it is read is simply
 * left out, except for CPU time, which must never go down: see
 * procstat_read.
 */
#include "config.h"

#include "worker/procstat.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROCSTAT_CHILDREN_MAX 1024
#define PROCSTAT_TRIES 5

typedef struct {
    uint64_t utime, stime, cutime, cstime;     /* clock ticks */
    uint64_t starttime;                         /* ticks after boot */
    uint64_t vsize;                             /* bytes */
    uint64_t rss;                               /* pages */
} stat_t;

/* Read the first len - 1 bytes of path into buf; -1 when it cannot. */
static ssize_t
read_file(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    size_t n;

    if (f == NULL)
        return -1;
    n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = '\0';
    return (ssize_t)n;
}

/* /proc/PID/stat: the fields after "(comm)", which may hold anything. */
static int
read_stat(pid_t pid, stat_t *st)
{
    char path[64], buf[1024];
    const char *p;
    unsigned long long v[22];

    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    if (read_file(path, buf, sizeof(buf)) <= 0 || (p = strrchr(buf, ')')) == NULL)
        return -1;
    /* v[0] is field 4 (ppid), so field N is v[N - 4]; state is skipped */
    if (sscanf(p + 1, " %*c %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu "
                      "%llu %llu %llu %llu %llu %llu %llu %llu",
               &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10],
               &v[11], &v[12], &v[13], &v[14], &v[15], &v[16], &v[17], &v[18], &v[19],
               &v[20]) != 21)
        return -1;
    st->utime = v[14 - 4];
    st->stime = v[15 - 4];
    st->cutime = v[16 - 4];
    st->cstime = v[17 - 4];
    st->starttime = v[22 - 4];
    st->vsize = v[23 - 4];
    st->rss = v[24 - 4];
    return 0;
}

/* Children of master, at most max; their number. */
static size_t
read_children(pid_t master, pid_t *out, size_t max)
{
    char path[64], buf[PROCSTAT_CHILDREN_MAX * 8];
    char *p, *end;
    size_t n = 0;

    snprintf(path, sizeof(path), "/proc/%ld/task/%ld/children", (long)master, (long)master);
    if (read_file(path, buf, sizeof(buf)) < 0)
        return 0;
    for (p = buf; n < max; p = end) {
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        if (v > 0)
            out[n++] = (pid_t)v;
    }
    return n;
}

/* The value in kB of the line "name: N kB" of a /proc file, as bytes; -1
 * when absent. */
static int64_t
kb_field(const char *text, const char *name)
{
    const char *p = strstr(text, name);

    return p != NULL ? atoll(p + strlen(name)) * 1024 : -1;
}

static int64_t
pss_bytes(pid_t pid, const stat_t *st)
{
    char path[64], buf[4096];
    int64_t v = -1;

    snprintf(path, sizeof(path), "/proc/%ld/smaps_rollup", (long)pid);
    if (read_file(path, buf, sizeof(buf)) > 0)
        v = kb_field(buf, "\nPss:");
    /* No smaps_rollup (old kernel, no access): RSS, shared pages and all. */
    return v >= 0 ? v : (int64_t)st->rss * sysconf(_SC_PAGESIZE);
}

static int64_t
open_fds(pid_t pid)
{
    char path[64];
    DIR *d;
    struct dirent *e;
    int64_t n = 0;

    snprintf(path, sizeof(path), "/proc/%ld/fd", (long)pid);
    if ((d = opendir(path)) == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.')
            n++;
    }
    closedir(d);
    return n;
}

static int64_t
max_fds(pid_t pid)
{
    char path[64], buf[4096];
    const char *p;

    snprintf(path, sizeof(path), "/proc/%ld/limits", (long)pid);
    if (read_file(path, buf, sizeof(buf)) <= 0 || (p = strstr(buf, "Max open files")) == NULL)
        return -1;
    p += strlen("Max open files");
    return strncmp(p + strspn(p, " "), "unlimited", 9) == 0 ? INT64_MAX : atoll(p);
}

/* Add pid's memory and descriptors to out. */
static void
add_process(pid_t pid, const stat_t *st, procstat_t *out)
{
    int64_t open = open_fds(pid), max = max_fds(pid);

    out->resident_bytes += pss_bytes(pid, st);
    out->virtual_bytes += (int64_t)st->vsize;
    /* open / max the highest: compare open * out->max with out->open * max */
    if (open >= 0 && max > 0
        && (out->max_fds <= 0
            || (long double)open * out->max_fds > (long double)out->open_fds * max)) {
        out->open_fds = open;
        out->max_fds = max;
    }
}

/* When the machine booted, in seconds since the epoch: now less the time
 * since boot.  (/proc/stat's btime line comes after one number per
 * interrupt, and a fixed buffer may not reach it on a large host.) */
static double
boot_time(void)
{
    struct timespec real, boot;

    if (clock_gettime(CLOCK_REALTIME, &real) < 0 || clock_gettime(CLOCK_BOOTTIME, &boot) < 0)
        return 0;
    return (double)(real.tv_sec - boot.tv_sec) + (real.tv_nsec - boot.tv_nsec) / 1e9;
}

int
procstat_read(pid_t master, int what, procstat_t *out)
{
    static pid_t kids[PROCSTAT_CHILDREN_MAX];
    double tick = (double)sysconf(_SC_CLK_TCK);
    stat_t before, after, st;
    uint64_t ticks = 0;
    size_t n = 0;

    /* The master's cutime and cstime grow when it reaps a child: the same
     * before and after the children were read, no child moved from the
     * live ones to the reaped ones meanwhile. */
    for (int tries = 0; tries < PROCSTAT_TRIES; tries++) {
        if (read_stat(master, &before) < 0)
            return -1;
        n = read_children(master, kids, PROCSTAT_CHILDREN_MAX);
        if (!(what & PROCSTAT_CPU))
            break;
        ticks = before.utime + before.stime + before.cutime + before.cstime;
        for (size_t i = 0; i < n; i++) {
            if (read_stat(kids[i], &st) == 0)
                ticks += st.utime + st.stime;
        }
        if (read_stat(master, &after) < 0)
            return -1;
        if (after.cutime == before.cutime && after.cstime == before.cstime)
            break;
    }
    if (what & PROCSTAT_CPU) {
        out->cpu_seconds = (double)ticks / tick;
        out->start_time = boot_time() + (double)before.starttime / tick;
    }
    if (what & PROCSTAT_OTHER) {
        out->resident_bytes = out->virtual_bytes = out->open_fds = out->max_fds = 0;
        add_process(master, &before, out);
        for (size_t i = 0; i < n; i++) {
            if (read_stat(kids[i], &st) == 0)
                add_process(kids[i], &st, out);
        }
    }
    return 0;
}
