/*
 * httpd: what the HTTP servers of both daemons (paymentsd's workers,
 * provider-sim) share: an evhttp set up with its limits, and the JSON
 * error body of SPEC.md.
 */
#ifndef PD_HTTPD_H
#define PD_HTTPD_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

struct event_base;
struct evhttp;
struct evhttp_request;

/* A new evhttp on base taking the methods (EVHTTP_REQ_* bits), headers up to
 * max_headers bytes and bodies up to max_body, closing a connection idle for
 * timeout_ms, handing every request to cb(req, arg).  NULL on a lack of
 * memory; free with evhttp_free. */
struct evhttp *httpd_new(struct event_base *base, int methods, size_t max_headers,
                         size_t max_body, int64_t timeout_ms,
                         void (*cb)(struct evhttp_request *, void *), void *arg)
    __attribute__((warn_unused_result));

/* {"error":{"code":code,"message":message,"field":field}}, "field" only when
 * field is not NULL.  The caller owns the object. */
json_object *httpd_error_body(const char *code, const char *message, const char *field);

#endif
