/*
 * httpd: the evhttp set-up and the error body both daemons answer with.
 * Runs in the caller's loop; holds no state of its own.
 */
#include "config.h"

#include "common/httpd.h"

#include <event2/http.h>

#include "common/clock.h"

struct evhttp *
httpd_new(struct event_base *base, int methods, size_t max_headers, size_t max_body,
          int64_t timeout_ms, void (*cb)(struct evhttp_request *, void *), void *arg)
{
    struct evhttp *http = evhttp_new(base);
    struct timeval tv = clock_tv(timeout_ms);

    if (http == NULL)
        return NULL;
    evhttp_set_allowed_methods(http, (ev_uint16_t)methods);
    evhttp_set_max_headers_size(http, (ev_ssize_t)max_headers);
    evhttp_set_max_body_size(http, (ev_ssize_t)max_body);
    evhttp_set_timeout_tv(http, &tv);
    evhttp_set_gencb(http, cb, arg);
    return http;
}

json_object *
httpd_error_body(const char *code, const char *message, const char *field)
{
    json_object *err = json_object_new_object();
    json_object *root = json_object_new_object();

    json_object_object_add(err, "code", json_object_new_string(code));
    json_object_object_add(err, "message", json_object_new_string(message));
    if (field != NULL)
        json_object_object_add(err, "field", json_object_new_string(field));
    json_object_object_add(root, "error", err);
    return root;
}
