/*
 * http: request lifetime, replies, request ids and the access log.
 *
 * Runs on the worker's event loop only.  Request ids that the client sends
 * are kept when they are 1..128 visible ASCII characters (0x21-0x7E) other
 * than '"' and '\\', so that the ids of HAProxy, nginx and cloud load
 * balancers pass through unchanged (SPEC.md); otherwise a
 * random 128-bit id is made from a per-process generator seeded with
 * getrandom(2) after fork, so two workers never share a sequence.
 *
 * Lifetime.  libevent keeps the evhttp request and frees it itself: after
 * the reply is written (evhttp_send_done), or with its connection when that
 * fails or is freed (evhttp_connection_free).  We do not take ownership
 * (evhttp_request_own): libevent 2.1 never frees an owned request on the
 * connection-failure path, so every client that reset its connection
 * before the reply leaked one (issue: reset leak).  The http_req_t is ours
 * and outlives the evhttp request when it must; the connection's close
 * callback, set for the whole request, tells us when the request goes:
 *
 *   reply written        on_complete: end r (libevent frees req next)
 *   closed while writing close cb after http_reply: end r (libevent
 *                        frees req with the connection)
 *   closed before reply  close cb before http_reply: r is cancelled and
 *                        lives on for the handler, whose async call may
 *                        still be running; its http_reply only ends r.
 *                        If libevent detached req from the connection
 *                        (a read failure), req is ours to free then;
 *                        else it goes with the connection (shutdown,
 *                        evhttp_free) and r forgets it.
 *
 * So the evhttp request is freed exactly once, and r once, by whichever of
 * http_reply and the end of the connection comes last.  The close callback
 * is cleared when a reply is written: the connection lives on (keep-alive)
 * and must not call back into a freed r.  A request counts as over (the
 * done callback, which a draining worker waits for) when both have
 * happened, so a cancelled checkout still finishes its database work
 * before its worker exits.
 */
#include "config.h"

#include "worker/http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/random.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "common/clock.h"
#include "common/httpd.h"
#include "common/log.h"

struct http_req {
    struct evhttp_request *req; /* NULL once libevent freed it (client gone) */
    worker_t *worker;
    shm_metrics_route_t route;      /* for logs and metrics */
    enum evhttp_cmd_type method;
    int64_t start_us;
    http_done_fn done;
    int status;                 /* set by the reply */
    int64_t dur_us;
    char request_id[HTTP_ID_SIZE];
    char *uri;                  /* copies, kept when req goes before the reply */
    char *user_agent, *xff;
    char client[64];            /* the peer's address (for the access log) */
    uint16_t client_port;
    unsigned replied : 1;       /* http_reply() was called */
    unsigned cancelled : 1;     /* the connection closed before the reply */
};

static uint64_t rng_state[2];

/* xorshift128+: fast, and unpredictable enough for ids (not for secrets). */
static uint64_t
rng_next(void)
{
    uint64_t s1 = rng_state[0];
    const uint64_t s0 = rng_state[1];

    if ((s0 | s1) == 0) {
        if (getrandom(rng_state, sizeof(rng_state), 0) != sizeof(rng_state)) {
            rng_state[0] = (uint64_t)clock_mono_us() ^ ((uint64_t)getpid() << 32);
            rng_state[1] = 0x9e3779b97f4a7c15ULL;
        }
        s1 = rng_state[0];
    }
    rng_state[0] = rng_state[1];
    s1 ^= s1 << 23;
    rng_state[1] = s1 ^ rng_state[0] ^ (s1 >> 17) ^ (rng_state[0] >> 26);
    return rng_state[1] + rng_state[0];
}

static int
request_id_valid(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x21 || s[i] > 0x7e || s[i] == '"' || s[i] == '\\')
            return 0;
    }
    return 1;
}

/* Without snprintf: its format parsing cost a cached replay more than
 * the rest of making its answer. */
void
http_request_id(const char *client_id, char out[HTTP_ID_SIZE])
{
    static const char hex[] = "0123456789abcdef";

    if (client_id != NULL && request_id_valid(client_id)) {
        memcpy(out, client_id, strlen(client_id) + 1); /* at most 128 + 1 */
        return;
    }
    /* 32 lower-case hex digits, as "%016llx%016llx" of two draws. */
    for (int half = 0; half < 2; half++) {
        uint64_t v = rng_next();

        for (int i = 15; i >= 0; i--, v >>= 4)
            out[16 * half + i] = hex[v & 15];
    }
    out[32] = '\0';
}

static void connection_closed(struct evhttp_connection *evcon, void *arg);

http_req_t *
http_req_new(struct evhttp_request *req, worker_t *w, http_done_fn done)
{
    http_req_t *r = calloc(1, sizeof(*r));
    const char *id;
    char *peer = NULL;

    if (r == NULL) {
        evhttp_send_error(req, 503, "Service Unavailable");
        return NULL;
    }
    r->req = req;
    r->worker = w;
    r->route = SHM_METRICS_ROUTE_UNKNOWN;
    r->done = done;
    r->method = evhttp_request_get_command(req);
    r->start_us = clock_mono_us();
    evhttp_connection_get_peer(evhttp_request_get_connection(req), &peer, &r->client_port);
    snprintf(r->client, sizeof(r->client), "%s", peer != NULL ? peer : "");
    id = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Request-Id");
    http_request_id(id, r->request_id);
    /* An evhttp server connection carries one request at a time, so the
     * connection's close callback is this request's until its reply is
     * written. */
    evhttp_connection_set_closecb(evhttp_request_get_connection(req), connection_closed, r);
    return r;
}

int
http_req_cancelled(const http_req_t *r)
{
    return r->cancelled;
}

worker_t *
http_req_worker(const http_req_t *r)
{
    return r->worker;
}

const char *
http_req_method(const http_req_t *r)
{
    static const char *const names[] = { "GET", "POST", "HEAD", "PUT", "DELETE",
                                         "OPTIONS", "TRACE", "CONNECT", "PATCH" };

    /* enum evhttp_cmd_type is one bit per method, in this order. */
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (r->method == (enum evhttp_cmd_type)(1 << i))
            return names[i];
    }
    return "OTHER";
}

const char *
http_req_path(const http_req_t *r)
{
    const struct evhttp_uri *uri = r->req != NULL ? evhttp_request_get_evhttp_uri(r->req) : NULL;
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;

    return path != NULL ? path : "";
}

const char *
http_req_id(const http_req_t *r)
{
    return r->request_id;
}

const char *
http_req_header(const http_req_t *r, const char *name)
{
    if (r->req == NULL)
        return NULL;
    return evhttp_find_header(evhttp_request_get_input_headers(r->req), name);
}

size_t
http_req_header_all(const http_req_t *r, const char *name, const char **values, size_t max)
{
    const struct evkeyval *kv;
    size_t n = 0;

    if (r->req == NULL)
        return 0;
    TAILQ_FOREACH(kv, evhttp_request_get_input_headers(r->req), next) {
        if (n < max && strcasecmp(kv->key, name) == 0)
            values[n++] = kv->value;
    }
    return n;
}

size_t
http_req_body_length(const http_req_t *r)
{
    return r->req != NULL ? evbuffer_get_length(evhttp_request_get_input_buffer(r->req)) : 0;
}

const char *
http_req_body(http_req_t *r, size_t *len)
{
    const char *body;

    *len = http_req_body_length(r);
    if (*len == 0)
        return "";
    body = (const char *)evbuffer_pullup(evhttp_request_get_input_buffer(r->req), -1);
    if (body == NULL)
        *len = 0;               /* out of memory making it contiguous */
    return body;
}

void
http_req_set_route(http_req_t *r, shm_metrics_route_t route)
{
    r->route = route;
}

shm_metrics_route_t
http_req_route(const http_req_t *r)
{
    return r->route;
}

const char *
http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Status";
    }
}

void
http_add_header(http_req_t *r, const char *name, const char *value)
{
    if (!r->cancelled)
        evhttp_add_header(evhttp_request_get_output_headers(r->req), name, value);
}

/* Append s to buf as the inside of a JSON string; stops at room. */
static size_t
json_escape(char *buf, size_t room, const char *s)
{
    size_t n = 0;

    for (; *s != '\0' && n + 7 < room; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            n += (size_t)snprintf(buf + n, room - n, "\\u%04x", c);
        } else {
            buf[n++] = (char)c;
        }
    }
    return n;
}

/* A header of the request as a JSON value in buf: its text escaped and
 * quoted (cut to fit), or null when the request did not send it. */
static const char *
json_header(char *buf, size_t room, const char *value)
{
    size_t n;

    if (value == NULL)
        return "null";
    buf[0] = '"';
    n = 1 + json_escape(buf + 1, room - 2, value);
    buf[n++] = '"';
    buf[n] = '\0';
    return buf;
}

/*
 * One JSON object per request, on one line, members in this order (README,
 * "Logs"): time, request_id, client (the peer's address) and client_port,
 * method, path, route, status, bytes (of the body sent), duration_ms,
 * user_agent and x_forwarded_for (null when not sent; as the client sent
 * them, so a proxy's XFF chain is kept whole), worker_pid.  Strings the
 * client chose are JSON-escaped (quotes, backslashes, control characters
 * and bytes over 0x7E as \u00XX) and cut to fit, so a hostile header can
 * neither break the line nor forge a member.
 */
void
http_access_log(const http_access_t *a)
{
    char line[3072], now[32], path[512], agent[512], xff[512];
    size_t plen;
    int n;

    plen = json_escape(path, sizeof(path), a->path ? a->path : "");
    path[plen] = '\0';
    log_time_iso(now, sizeof(now));
    n = snprintf(
        line, sizeof(line),
        "{\"time\":\"%s\",\"request_id\":\"%s\",\"client\":\"%s\",\"client_port\":%u,"
        "\"method\":\"%s\",\"path\":\"%s\",\"route\":\"%s\",\"status\":%d,\"bytes\":%zu,"
        "\"duration_ms\":%.3f,\"user_agent\":%s,\"x_forwarded_for\":%s,\"worker_pid\":%ld}",
        now, a->request_id, a->client, a->client_port, a->method, path,
        shm_metrics_route_name(a->route), a->status, a->bytes, (double)a->dur_us / 1000.0,
        json_header(agent, sizeof(agent), a->user_agent), json_header(xff, sizeof(xff), a->xff),
        (long)getpid());
    if (n > 0 && (size_t)n < sizeof(line))
        log_access(line, (size_t)n);
}

static void
access_log_line(const http_req_t *r, int status, size_t bytes, int64_t dur_us)
{
    http_access_t a = {
        .request_id = r->request_id, .client = r->client, .client_port = r->client_port,
        .method = http_req_method(r),
        .path = r->req != NULL ? evhttp_request_get_uri(r->req) : r->uri,
        .route = r->route, .status = status, .bytes = bytes, .dur_us = dur_us,
        .user_agent = r->req != NULL ? http_req_header(r, "User-Agent") : r->user_agent,
        .xff = r->req != NULL ? http_req_header(r, "X-Forwarded-For") : r->xff,
    };

    http_access_log(&a);
}

/* The request is over: http_reply was called, and its reply was written or
 * its client has gone.  libevent has freed or will free req itself. */
static void
req_finish(http_req_t *r)
{
    if (r->done != NULL)
        r->done(r->worker, r, r->status, r->dur_us);
    free(r->uri);
    free(r->user_agent);
    free(r->xff);
    free(r);
}

static void
reply_written(struct evhttp_request *req, void *arg)
{
    /* The connection lives on (keep-alive): it must not call us later. */
    evhttp_connection_set_closecb(evhttp_request_get_connection(req), NULL, NULL);
    req_finish(arg);
}

/* The connection is being freed (it failed, or the server is going away);
 * the requests still on it are freed right after this returns. */
static void
connection_closed(struct evhttp_connection *evcon, void *arg)
{
    http_req_t *r = arg;

    (void)evcon;
    if (r->replied) {
        req_finish(r);          /* the reply was being written */
        return;
    }
    r->cancelled = 1;
    if (evhttp_request_get_connection(r->req) != NULL) {
        /* Still on the connection: libevent frees it with the connection.
         * Keep what the access log needs. */
        const char *uri = evhttp_request_get_uri(r->req);
        const char *agent = http_req_header(r, "User-Agent");
        const char *xff = http_req_header(r, "X-Forwarded-For");

        r->uri = uri != NULL ? strdup(uri) : NULL;
        r->user_agent = agent != NULL ? strdup(agent) : NULL;
        r->xff = xff != NULL ? strdup(xff) : NULL;
        r->req = NULL;
    }
    /* Else libevent has detached it (a failed read): ours, freed at reply. */
}

void
http_reply(http_req_t *r, int status, const char *content_type, const char *body, size_t len)
{
    struct evkeyvalq *h;

    r->status = status;
    r->dur_us = clock_mono_us() - r->start_us;
    r->replied = 1;
    if (log_access_enabled()) {
        int sent = body != NULL && !r->cancelled && r->method != EVHTTP_REQ_HEAD;

        access_log_line(r, status, sent ? len : 0, r->dur_us);
    }
    if (r->cancelled) {
        /* The client went away before the reply: nothing to send. */
        if (r->req != NULL)
            evhttp_request_free(r->req);
        req_finish(r);
        return;
    }
    h = evhttp_request_get_output_headers(r->req);
    if (content_type != NULL)
        evhttp_add_header(h, "Content-Type", content_type);
    evhttp_add_header(h, "X-Request-Id", r->request_id);
    if (r->method == EVHTTP_REQ_HEAD) {
        /* The GET answer's headers without its body: evhttp would send a
         * body given one, and adds no Content-Length to a HEAD answer. */
        char clen[24];

        snprintf(clen, sizeof(clen), "%zu", body != NULL ? len : 0);
        evhttp_add_header(h, "Content-Length", clen);
    } else if (body != NULL) {
        evbuffer_add(evhttp_request_get_output_buffer(r->req), body, len);
    }
    /* The request ends when the reply is on the wire (reply_written) or the
     * connection is gone (connection_closed), whichever comes first; both
     * come from the loop, never from inside evhttp_send_reply.  r must not
     * be touched after it. */
    evhttp_request_set_on_complete_cb(r->req, reply_written, r);
    evhttp_send_reply(r->req, status, http_reason(status), NULL);
}

void
http_reply_json(http_req_t *r, int status, json_object *obj)
{
    size_t len;
    const char *s = json_object_to_json_string_length(
        obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);

    http_reply(r, status, "application/json", s, len);
    json_object_put(obj);
}

void
http_reply_error(http_req_t *r, int status, const char *code, const char *message,
                 const char *field)
{
    http_reply_json(r, status, httpd_error_body(code, message, field));
}

void
http_reply_unavailable(http_req_t *r, const char *message)
{
    http_add_header(r, "Retry-After", "1");
    http_reply_error(r, 503, "service_unavailable", message, NULL);
}
