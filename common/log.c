/*
 * log: error and access logs, shared by every process of both daemons.
 *
 * A line is formatted into a stack buffer and written with a single write(2)
 * to a descriptor opened with O_APPEND, which keeps lines of concurrent
 * processes whole.  Reopening (log rotation) opens the new files first and
 * only then swaps the descriptors, so a failed reopen loses nothing.
 */
#include "config.h"

#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

log_level_t log_threshold = LOG_LEVEL_INFO;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

static int error_fd = STDERR_FILENO;
static int access_fd = -1;
static char role[32] = "paymentsd";
static char *error_path_saved;
static char *access_path_saved;

int
log_level_parse(const char *name)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0)
            return (int)i;
    }
    return -1;
}

void
log_set_role(const char *name)
{
    snprintf(role, sizeof(role), "%s", name);
}

void
log_time_iso(char *buf, size_t len)
{
    struct timeval tv;
    struct tm tm;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000));
}

/*
 * Append text to the line at *n (room: size), control characters and
 * backslashes escaped, so the line stays one line whatever text holds.
 * Stops where the next character would not fit.
 */
static void
append_escaped(char *line, size_t size, size_t *n, const char *text)
{
    for (; *text != '\0'; text++) {
        unsigned char c = (unsigned char)*text;
        char esc[5];
        size_t len;

        if (c == '\n' || c == '\r' || c == '\t' || c == '\\') {
            esc[0] = '\\';
            esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : '\\';
            len = 2;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\x%02x", c);
            len = 4;
        } else {
            esc[0] = (char)c;
            len = 1;
        }
        if (*n + len > size)
            return;
        memcpy(line + *n, esc, len);
        *n += len;
    }
}

void
log_vwrite(log_level_t level, const char *request_id, const char *fmt, va_list ap)
{
    char line[2048], text[2048];
    char now[32];
    size_t n;
    int m;

    if (vsnprintf(text, sizeof(text), fmt, ap) < 0)
        return;
    log_time_iso(now, sizeof(now));
    m = snprintf(line, sizeof(line), "%s [%s] %s (pid %ld)",
                 now, level_names[level], role, (long)getpid());
    if (m < 0 || (size_t)m >= sizeof(line))
        return;
    n = (size_t)m;
    if (request_id != NULL && request_id[0] != '\0') {
        append_escaped(line, 256, &n, " request_id=");
        append_escaped(line, 256, &n, request_id);
    }
    append_escaped(line, sizeof(line) - 1, &n, ": ");
    /* A message that ends its own line (libpq's do) ends here. */
    m = (int)strlen(text);
    while (m > 0 && (text[m - 1] == '\n' || text[m - 1] == '\r'))
        text[--m] = '\0';
    append_escaped(line, sizeof(line) - 1, &n, text);     /* truncated: keep the newline */
    line[n++] = '\n';
    /* A failed log write has nowhere better to be reported. */
    if (write(error_fd, line, n) < 0)
        errno = 0;
}

void
log_write(log_level_t level, const char *request_id, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vwrite(level, request_id, fmt, ap);
    va_end(ap);
}

static int
open_append(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

static int
is_stderr(const char *path)
{
    return path == NULL || path[0] == '\0' || strcmp(path, "stderr") == 0;
}

static int
is_off(const char *path)
{
    return path == NULL || path[0] == '\0' || strcmp(path, "off") == 0;
}

int
log_open(const char *error_path, const char *access_path, log_level_t threshold)
{
    int efd = STDERR_FILENO, afd = -1;
    char *esaved = NULL, *asaved = NULL;

    if (!is_stderr(error_path)) {
        efd = open_append(error_path);
        if (efd < 0)
            return -1;
        esaved = strdup(error_path);
    }
    if (strcmp(access_path ? access_path : "", "stdout") == 0) {
        afd = STDOUT_FILENO;
    } else if (!is_off(access_path)) {
        afd = open_append(access_path);
        if (afd < 0) {
            int saved = errno;
            if (efd != STDERR_FILENO)
                close(efd);
            free(esaved);
            errno = saved;
            return -1;
        }
        asaved = strdup(access_path);
    }

    if (error_fd != STDERR_FILENO)
        close(error_fd);
    if (access_fd > STDERR_FILENO)
        close(access_fd);
    free(error_path_saved);
    free(access_path_saved);
    error_fd = efd;
    access_fd = afd;
    error_path_saved = esaved;
    access_path_saved = asaved;
    if (afd == STDOUT_FILENO)
        access_path_saved = strdup("stdout");
    log_threshold = threshold;
    return 0;
}

int
log_reopen(void)
{
    char *e = error_path_saved ? strdup(error_path_saved) : NULL;
    char *a = access_path_saved ? strdup(access_path_saved) : NULL;
    int rc = log_open(e, a, log_threshold);

    free(e);
    free(a);
    return rc;
}

int
log_access_enabled(void)
{
    return access_fd >= 0;
}

void
log_access(const char *line, size_t len)
{
    char buf[4096];

    if (access_fd < 0 || len >= sizeof(buf))
        return;
    memcpy(buf, line, len);
    buf[len] = '\n';
    if (write(access_fd, buf, len + 1) < 0)
        errno = 0;
}

void
log_libevent(int severity, const char *msg)
{
    if (severity >= EVENT_LOG_ERR)
        log_error("libevent: %s", msg);
    else if (severity == EVENT_LOG_WARN)
        log_warn("libevent: %s", msg);
    else
        log_debug("libevent: %s", msg);
}
