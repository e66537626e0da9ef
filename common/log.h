/*
 * log: the one logging facility of both daemons.
 *
 * Each process logs to the error log (stderr or a file opened O_APPEND) with
 * one write(2) per line, so lines of several processes never interleave.
 * Every line carries a time, the level and the process role ("master",
 * "worker 3", "housekeeper"), and a line about a request its request id:
 *
 *   2026-01-02T03:04:05.678Z [warn] worker 1 (pid 42) request_id=abc: text
 *
 * A line is always one line: control characters in the text (the newlines
 * of a libpq message with its DETAIL and HINT, a hostile header) are
 * written escaped, \n, \r, \t or \xNN, and a backslash as \\.  Not
 * thread-safe: our processes are single threaded.
 */
#ifndef PD_LOG_H
#define PD_LOG_H

#include <stdarg.h>
#include <stddef.h>

typedef enum {
    LOG_LEVEL_ERROR = 0,
    LOG_LEVEL_WARN,
    LOG_LEVEL_INFO,
    LOG_LEVEL_DEBUG
} log_level_t;

/* The current threshold; read by the macros so that a skipped debug line
 * never evaluates its arguments. */
extern log_level_t log_threshold;

/* Write one line at level; request_id (NULL or "" for none) tags a line
 * about a request.  Use the macros below. */
void log_write(log_level_t level, const char *request_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void log_vwrite(log_level_t level, const char *request_id, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* A line at level, its arguments evaluated only when the level is on. */
#define log_at(level, rid, ...)                                                 \
    do {                                                                        \
        if (log_threshold >= (level))                                           \
            log_write((level), (rid), __VA_ARGS__);                             \
    } while (0)

#define log_error(...) log_write(LOG_LEVEL_ERROR, NULL, __VA_ARGS__)
#define log_warn(...)  log_at(LOG_LEVEL_WARN, NULL, __VA_ARGS__)
#define log_info(...)  log_at(LOG_LEVEL_INFO, NULL, __VA_ARGS__)
#define log_debug(...) log_at(LOG_LEVEL_DEBUG, NULL, __VA_ARGS__)

/* The same about a request: every error-log line about a request carries
 * its id (SPEC.md: X-Request-Id), so that the access log, the error log,
 * the load balancer's and the provider's logs can be matched.  A handler
 * holding the request writes req_log_*(r, ...) (worker/http.h), which
 * passes its id here; work that outlives its request (a provider call, a
 * reversal) keeps the id and passes it itself. */
#define log_req_error(rid, ...) log_write(LOG_LEVEL_ERROR, rid, __VA_ARGS__)
#define log_req_warn(rid, ...)  log_at(LOG_LEVEL_WARN, rid, __VA_ARGS__)
#define log_req_info(rid, ...)  log_at(LOG_LEVEL_INFO, rid, __VA_ARGS__)
#define log_req_debug(rid, ...) log_at(LOG_LEVEL_DEBUG, rid, __VA_ARGS__)

/* Parse "error", "warn", "info" or "debug"; -1 when unknown. */
int log_level_parse(const char *name);

/* Tag every following line with this role, e.g. "worker 2" (copied). */
void log_set_role(const char *role);

/*
 * Open (or reopen, on SIGUSR1) the error log and the access log.  NULL,
 * "stderr" or "" means stderr for the error log; NULL, "" or "off" disables
 * the access log, "stdout" writes it there.  On failure the old files stay in
 * use and -1 is returned with errno set.
 */
int log_open(const char *error_path, const char *access_path, log_level_t threshold)
    __attribute__((warn_unused_result));
int log_reopen(void) __attribute__((warn_unused_result));

/* Append one line (a newline is added) to the access log, if one is open. */
void log_access(const char *line, size_t len);
int log_access_enabled(void);

/* A libevent log callback (event_set_log_callback): libevent's own
 * messages go to the error log with the matching level. */
void log_libevent(int severity, const char *msg);

/* Format the current wall-clock time as ISO 8601 UTC with milliseconds into
 * buf (at least 32 bytes). */
void log_time_iso(char *buf, size_t len);

#endif
