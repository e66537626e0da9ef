/*
 * http: one HTTP request in a worker, from arrival to the reply.
 *
 * http_req_new() wraps an evhttp request in an http_req_t that stays valid
 * however long the asynchronous work takes, even if the client goes away
 * meanwhile; exactly one http_reply*() call ends it, writes the access-log
 * line and, once the reply is written or can no longer be, frees it.  A
 * reply to a client that has gone is dropped: handlers need not check.
 * Every reply is JSON unless said otherwise and carries X-Request-Id.
 *
 * http_req_t is opaque: a handler reads its request through the accessors
 * below and never sees libevent, which only the router (worker.c) and this
 * module touch.
 */
#ifndef PD_HTTP_H
#define PD_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "common/log.h"
#include "shm/metrics.h"

#define HTTP_ID_SIZE 129        /* a request id and its NUL */

typedef struct worker worker_t;
typedef struct http_req http_req_t;     /* opaque: worker/http.c */
struct evhttp_request;

/* Called when a request is over (its reply written, or its client gone),
 * with the status and the time until the reply was made. */
typedef void (*http_done_fn)(worker_t *w, const http_req_t *r, int status, int64_t dur_us);

/* Start handling req; returns NULL only when out of memory (the request has
 * then been answered 503 already). */
http_req_t *http_req_new(struct evhttp_request *req, worker_t *w, http_done_fn done)
    __attribute__((warn_unused_result));

/*
 * What a handler reads of its request.  Header values, the path and the
 * body belong to libevent's request: they stay valid until the reply or
 * until the client goes, whichever comes first, so a handler reads them
 * before its first asynchronous step (the client cannot have gone yet) and
 * copies what it keeps.  Once the client has gone (http_req_cancelled)
 * those accessors answer NULL, 0 or ""; the worker, method, id and route
 * stay until the reply.
 */
worker_t *http_req_worker(const http_req_t *r);

/* "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT",
 * "PATCH", or "OTHER". */
const char *http_req_method(const http_req_t *r);

/* The path of the target as sent (not percent-decoded), without the
 * query; "" when none. */
const char *http_req_path(const http_req_t *r);

/* The request id: the client's X-Request-Id when valid, else one made here
 * (SPEC.md).  It stays valid, cancelled or not, until the reply. */
const char *http_req_id(const http_req_t *r);

/* The first value of the request header name (any case), or NULL. */
const char *http_req_header(const http_req_t *r, const char *name);

/* Every value of the request header name (any case), in order: stores up to
 * max of them in values and returns how many it stored. */
size_t http_req_header_all(const http_req_t *r, const char *name, const char **values,
                           size_t max);

/* The length of the body, without touching it (to refuse a large one
 * before making it contiguous). */
size_t http_req_body_length(const http_req_t *r);

/* The whole body, made contiguous, and its length in *len; "" when empty.
 * Not NUL-terminated.  NULL (and 0) when out of memory: answer 503, not as
 * for an empty body. */
const char *http_req_body(http_req_t *r, size_t *len);

/* The route the router matched, for logs and metrics (set once it knows;
 * SHM_METRICS_ROUTE_UNKNOWN until then); a handler may narrow it. */
void http_req_set_route(http_req_t *r, shm_metrics_route_t route);
shm_metrics_route_t http_req_route(const http_req_t *r);

/* Log a line about r, tagged with its request id (pgbouncer's slog_*).
 * Work that outlives its request (a provider call, a reversal) keeps the
 * id and logs with common/log.h's log_req_* directly, which these wrap. */
#define req_log_error(r, ...) log_req_error(http_req_id(r), __VA_ARGS__)
#define req_log_warn(r, ...)  log_req_warn(http_req_id(r), __VA_ARGS__)
#define req_log_info(r, ...)  log_req_info(http_req_id(r), __VA_ARGS__)
#define req_log_debug(r, ...) log_req_debug(http_req_id(r), __VA_ARGS__)

/* Send status with body (may be NULL) of content_type.  Ends the request:
 * r must not be used afterwards.  When the client has gone (see
 * http_req_cancelled) nothing is sent and r is just freed. */
void http_reply(http_req_t *r, int status, const char *content_type,
                const char *body, size_t len);

/* Send a JSON object (the reference is taken over and released). */
void http_reply_json(http_req_t *r, int status, json_object *obj);

/* Send {"error": {"code", "message"[, "field"]}}; field may be NULL. */
void http_reply_error(http_req_t *r, int status, const char *code,
                      const char *message, const char *field);

/* Send 503 service_unavailable with Retry-After: 1 and message: a
 * dependency is down, and retrying soon may succeed. */
void http_reply_unavailable(http_req_t *r, const char *message);

/* Add a response header before replying (ignored once cancelled). */
void http_add_header(http_req_t *r, const char *name, const char *value);

/* 1 once the client's connection has closed before the reply: the reply
 * will be dropped (http_reply* must still be called, exactly once, to end
 * r).  A handler may use it to skip work that only serves the reply. */
int http_req_cancelled(const http_req_t *r);

/* The request id of a request whose first X-Request-Id is client_id (NULL:
 * none): client_id when valid (SPEC.md), else a new random one. */
void http_request_id(const char *client_id, char out[HTTP_ID_SIZE]);

/* What one access-log line says of a request (README, "Logs"). */
typedef struct {
    const char *request_id;
    const char *client;         /* the peer's address */
    unsigned client_port;
    const char *method;         /* "GET", ... or "OTHER" */
    const char *path;           /* the target as sent; NULL: "" */
    shm_metrics_route_t route;
    int status;
    size_t bytes;               /* of the body sent */
    int64_t dur_us;
    const char *user_agent;     /* as sent; NULL when not sent */
    const char *xff;            /* X-Forwarded-For, likewise */
} http_access_t;

/* Write a's line to the access log (check log_access_enabled() first).
 * For answers made without an http_req_t (worker/replay.c); a request's
 * own line is written by http_reply. */
void http_access_log(const http_access_t *a);

/* The reason phrase of a status code. */
const char *http_reason(int status);

#endif
