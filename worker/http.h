/*
 * http: one HTTP request in a worker, from arrival to the reply.
 *
 * http_req_begin() wraps an evhttp request in an http_req_t that stays valid
 * however long the asynchronous work takes, even if the client goes away
 * meanwhile; exactly one http_reply*() call ends it, writes the access-log
 * line and, once the reply is written or can no longer be, frees it.  A
 * reply to a client that has gone is dropped: handlers need not check.
 * Every reply is JSON unless said otherwise and carries X-Request-Id.
 */
#ifndef PD_HTTP_H
#define PD_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <event2/http.h>
#include <json-c/json.h>

#include "shm/metrics.h"

typedef struct worker worker_t;
typedef struct http_req http_req_t;

/* Called when a request is over (its reply written, or its client gone),
 * with the status and the time until the reply was made. */
typedef void (*http_done_fn)(worker_t *w, const http_req_t *r, int status, int64_t dur_us);

struct http_req {
    struct evhttp_request *req; /* NULL once libevent freed it (client gone) */
    worker_t *worker;
    shm_metrics_route_t route;      /* for logs and metrics */
    enum evhttp_cmd_type method; /* for logs, metrics and CORS */
    int64_t start_us;
    http_done_fn done;
    int status;                 /* set by the reply */
    int64_t dur_us;
    char request_id[129];
    /* Private to http.c. */
    char *uri;                  /* copies, kept when req goes before the reply */
    char *user_agent, *xff;
    char client[64];            /* the peer's address (for the access log) */
    uint16_t client_port;
    unsigned replied : 1;       /* http_reply() was called */
    unsigned cancelled : 1;     /* the connection closed before the reply */
};

/* Start handling req; returns NULL only when out of memory (the request has
 * then been answered 503 already). */
http_req_t *http_req_begin(struct evhttp_request *req, worker_t *w, http_done_fn done)
    __attribute__((warn_unused_result));

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

/* Add a response header before replying (ignored once cancelled). */
void http_add_header(http_req_t *r, const char *name, const char *value);

/* 1 once the client's connection has closed before the reply: the reply
 * will be dropped (http_reply* must still be called, exactly once, to end
 * r).  A handler may use it to skip work that only serves the reply. */
int http_req_cancelled(const http_req_t *r);

/* The reason phrase of a status code. */
const char *http_reason(int status);

#endif
