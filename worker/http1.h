/*
 * http1: the syntax of an HTTP/1.1 request head (RFC 9112), checked over
 * bytes, without a server.  Each check returns 0, or the status to refuse
 * the request with (400, 413, 417, 501, 505) and *why, a message for it.
 */
#ifndef PD_HTTP1_H
#define PD_HTTP1_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HTTP1_ID_MAX 128        /* the longest X-Request-Id kept (SPEC.md) */

/* What a request head says about the request and how its body is framed. */
typedef struct {
    const char *method;         /* one the worker allows: "GET", "POST", ... */
    const char *target;         /* into the checked line; not NUL-terminated */
    size_t target_len;
    int minor;                  /* HTTP/1.minor */
    int head;                   /* a HEAD request: no body may follow */
    int64_t content_length;     /* -1: none; set it so before checking fields */
    int chunked;                /* Transfer-Encoding: chunked */
    int expect_continue;        /* Expect: 100-continue (HTTP/1.1) */
} http1_head_t;

/* The next line of [p, p + n) from *off, which it moves past the line's LF:
 * *line and its length without the CRLF or LF; -1 when no LF is left. */
ssize_t http1_next_line(const char *p, size_t n, size_t *off, const char **line);

/* A request line without its CRLF: method, origin-form target, version. */
int http1_request_line(const char *s, size_t n, http1_head_t *h, const char **why);

/* One field line; with h NULL (a trailer field) only its syntax. */
int http1_field(const char *s, size_t n, http1_head_t *h, const char **why);

/* A whole head [p, p + n), ending with its empty line: the request line,
 * every field, and the framing rules (not Content-Length with chunked, no
 * body on HEAD).  Limits on sizes are the caller's. */
int http1_head(const char *p, size_t n, http1_head_t *h, const char **why);

/* The last valid X-Request-Id among the whole lines of [p, p + n) into
 * out; out is left alone when there is none. */
void http1_request_id(const char *p, size_t n, char out[HTTP1_ID_MAX + 1]);

#endif
