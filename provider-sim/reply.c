/*
 * reply: immediate and deferred JSON replies.
 *
 * Each deferred reply owns its serialised body and a one-shot timer, and
 * sits in a list so that shutdown can answer them all.  The evhttp request
 * is not user-owned: libevent keeps it alive until we reply, and detaches
 * it (instead of freeing it) when its client goes away first.
 */
#include "config.h"

#include "provider-sim/reply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

#include "common/clock.h"
#include "common/httpd.h"
#include "common/log.h"

#define REQUEST_ID_MAX 128

typedef struct deferred {
    TAILQ_ENTRY(deferred) link;
    sim_replies_t *q;
    struct evhttp_request *req;
    struct event *timer;
    int status;
    size_t len;
    char body[];
} deferred_t;

struct sim_replies {
    struct event_base *base;
    TAILQ_HEAD(, deferred) list;
    size_t n;
    unsigned long long ids;         /* request ids made here */
};

static const char *
reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 409: return "Conflict";
    case 422: return "Unprocessable Content";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
    }
}

static void
send_now(struct evhttp_request *req, int status, const char *body, size_t len)
{
    struct evbuffer *buf = evbuffer_new();

    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    if (buf != NULL)
        evbuffer_add(buf, body, len);
    evhttp_send_reply(req, status, reason(status), buf);
    if (buf != NULL)
        evbuffer_free(buf);
}

static void
deferred_send(deferred_t *d)
{
    TAILQ_REMOVE(&d->q->list, d, link);
    d->q->n--;
    send_now(d->req, d->status, d->body, d->len);
    event_free(d->timer);
    free(d);
}

static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    deferred_send(arg);
}

sim_replies_t *
sim_reply_new(struct event_base *base)
{
    sim_replies_t *q = calloc(1, sizeof(*q));

    if (q == NULL)
        return NULL;
    q->base = base;
    TAILQ_INIT(&q->list);
    return q;
}

void
sim_reply_flush(sim_replies_t *q)
{
    while (!TAILQ_EMPTY(&q->list))
        deferred_send(TAILQ_FIRST(&q->list));
}

void
sim_reply_free(sim_replies_t *q)
{
    if (q == NULL)
        return;
    sim_reply_flush(q);
    free(q);
}

static int
request_id_valid(const char *v)
{
    size_t n = strnlen(v, REQUEST_ID_MAX + 1);

    if (n == 0 || n > REQUEST_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < 0x21 || v[i] > 0x7e || v[i] == '"' || v[i] == '\\')
            return 0;
    }
    return 1;
}

const char *
sim_reply_request_id(sim_replies_t *q, struct evhttp_request *req)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    const char *id = evhttp_find_header(out, "X-Request-Id");
    char made[48];

    if (id != NULL)
        return id;
    id = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Request-Id");
    if (id == NULL || !request_id_valid(id)) {
        snprintf(made, sizeof(made), "sim-%lx-%llu", (unsigned long)getpid(), ++q->ids);
        id = made;
    }
    if (evhttp_add_header(out, "X-Request-Id", id) < 0)
        return "-";
    return evhttp_find_header(out, "X-Request-Id");
}

/* One line per answer, when it is decided. */
static void
log_answer(sim_replies_t *q, struct evhttp_request *req, int status, int64_t delay_ms)
{
    const char *id = sim_reply_request_id(q, req);
    const char *uri = evhttp_request_get_uri(req);
    const char *method;

    switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_GET: method = "GET"; break;
    case EVHTTP_REQ_POST: method = "POST"; break;
    case EVHTTP_REQ_HEAD: method = "HEAD"; break;
    case EVHTTP_REQ_PUT: method = "PUT"; break;
    case EVHTTP_REQ_DELETE: method = "DELETE"; break;
    case EVHTTP_REQ_PATCH: method = "PATCH"; break;
    default: method = "OTHER"; break;
    }
    if (uri == NULL)
        uri = "";
    if (status < 400 && strncmp(uri, "/admin/", 7) == 0)
        log_debug("%s %.200s -> %d (request %s)", method, uri, status, id);
    else if (delay_ms > 0)
        log_info("%s %.200s -> %d in %lld ms (request %s)", method, uri, status,
                 (long long)delay_ms, id);
    else
        log_info("%s %.200s -> %d (request %s)", method, uri, status, id);
}

size_t
sim_reply_pending(const sim_replies_t *q)
{
    return q->n;
}

void
sim_reply_json(sim_replies_t *q, struct evhttp_request *req, int status,
               json_object *obj, int64_t delay_ms)
{
    size_t len;
    const char *s = json_object_to_json_string_length(obj, JSON_C_TO_STRING_PLAIN, &len);
    deferred_t *d = NULL;
    struct timeval tv;

    log_answer(q, req, status, delay_ms);
    if (delay_ms > 0)
        d = malloc(sizeof(*d) + len + 1);
    if (d == NULL) {
        send_now(req, status, s, len);
        json_object_put(obj);
        return;
    }
    d->q = q;
    d->req = req;
    d->status = status;
    d->len = len;
    memcpy(d->body, s, len + 1);
    json_object_put(obj);
    d->timer = evtimer_new(q->base, on_timer, d);
    tv = clock_tv(delay_ms);
    if (d->timer == NULL || evtimer_add(d->timer, &tv) < 0) {
        send_now(req, status, d->body, d->len);
        if (d->timer != NULL)
            event_free(d->timer);
        free(d);
        return;
    }
    TAILQ_INSERT_TAIL(&q->list, d, link);
    q->n++;
}

void
sim_reply_error(sim_replies_t *q, struct evhttp_request *req, int status,
                const char *code, const char *message, const char *field, int64_t delay_ms)
{
    sim_reply_json(q, req, status, httpd_error_body(code, message, field), delay_ms);
}
