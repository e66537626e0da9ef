/*
 * provider: HTTP client of the payment provider.
 *
 * A small free list of keep-alive evhttp connections: a call takes an idle
 * one or opens a new one, and gives it back when its exchange ended cleanly.
 * A connection that failed or timed out is dropped, never reused.  For an
 * https:// provider a connection comes from provider_tls (an OpenSSL
 * bufferevent under evhttp, one SSL_CTX per provider_t): libevent runs the
 * handshake asynchronously, like any other read or write, and redoes it
 * when evhttp reconnects a connection that the provider had closed while
 * it was idle.
 *
 * Each call has a deadline, provider_timeout for the whole exchange (connect,
 * TLS handshake, request, headers and body): an evtimer of its own.  The
 * connection's timeout is only an inactivity timeout, which a provider
 * trickling its answer a byte at a time never trips.  At the deadline the
 * request is cancelled (libevent then does not run its callback), the call
 * reports UNAVAILABLE itself, and the connection is dropped.
 *
 * Each call owns its request (evhttp_request_own), so that exactly one
 * place frees it, call_deliver, whichever way the call ended: libevent 2.1
 * frees its own requests on most failure paths but not all (a failed
 * evhttp_make_request unlinks the request and leaves it allocated).
 *
 * Every call ends in two steps.  call_conclude, wherever the outcome becomes
 * known (libevent's response callback, the deadline, a failed start), only
 * records it and activates the call's `done` event; call_deliver runs from
 * that event, in a later turn of the loop, and gives the caller its answer.
 * That keeps two promises libevent 2.1 makes hard to keep otherwise: the
 * caller's callback never runs inside provider_charge() (a connect can fail
 * inside evhttp_make_request), and a connection is freed outside its own
 * callbacks (evhttp_connection_free_on_completion is not honoured when a
 * connect fails, which leaked one connection per refused call).
 *
 * A provider named by a host name connects to the address the resolver
 * (common/resolve.c) last found for it.  Calls made before its first
 * answer wait for it, within their deadline.  When the address changes,
 * idle connections to the old one are dropped: the next call connects to
 * the new one.
 *
 * Single-threaded: everything runs on the owner's loop.
 */
#include "config.h"

#include "worker/provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/event_struct.h>
#include <event2/http.h>

#include "common/clock.h"
#include "common/log.h"
#include "worker/provider_answer.h"
#include "worker/provider_tls.h"

#define PROVIDER_IDLE_MAX 64    /* idle keep-alive connections kept */
#define ORDER_ID_MAX 64         /* order ids are UUIDs */

struct provider {
    struct event_base *base;
    char host[256];             /* as in the URL, an IPv6 address unbracketed */
    int port;
    char hostport[300];         /* the Host header: host[:port] as in the URL */
    resolve_name_t *name;       /* a host name, followed; NULL for an address */
    int64_t timeout_ms;
    provider_tls_t *tls;        /* https:// only, else NULL */
    struct evhttp_connection *idle[PROVIDER_IDLE_MAX];
    int nidle;
    TAILQ_HEAD(, call) waiting; /* calls waiting for the name's first address */
    provider_observe_fn observe;
    void *observe_arg;
};

typedef enum {
    CALL_CHARGE = PROVIDER_CALL_CHARGE,
    CALL_GET = PROVIDER_CALL_GET,
    CALL_CANCEL = PROVIDER_CALL_CANCEL
} call_kind_t;

static const char *const call_names[] = { "charge", "GET charge", "cancel" };

typedef struct call {
    provider_t *p;
    provider_call_t kind;
    struct evhttp_connection *conn;
    struct evhttp_request *req; /* ours (owned), freed by call_deliver */
    enum evhttp_cmd_type method;
    char path[sizeof("/v1/charges//cancel") + 3 * ORDER_ID_MAX];
    int waiting;                /* on p->waiting, not sent yet */
    TAILQ_ENTRY(call) wait;
    int concluded;              /* the outcome is known and `done` is active */
    int reusable;               /* the exchange ended cleanly: keep conn */
    provider_outcome_t out;
    char charge_id[PROVIDER_CHARGE_ID_MAX + 1];
    char order_id[ORDER_ID_MAX + 1];
    char request_id[129];       /* sent as X-Request-Id; "" for none */
    int64_t amount_cents;
    char currency[8];
    char tls_reason[PROVIDER_TLS_REASON_MAX];  /* why the certificate was refused, if it was */
    provider_cb_t cb;
    void *arg;
    struct event deadline;      /* provider_timeout after the call started */
    struct event done;          /* runs cb from the loop */
    int64_t start_us;           /* monotonic, for the observer */
} call_t;

/* Where a new connection goes: the URL's address, or the latest address
 * of its host name; NULL when the name has none yet. */
static const char *
provider_addr(const provider_t *p)
{
    return p->name != NULL ? resolve_name_addr(p->name) : p->host;
}

/* ---- provider_t ---- */

static void on_resolved(void *arg);

provider_t *
provider_new(struct event_base *base, resolve_t *resolve, const char *url, const char *ca_file,
             int64_t timeout_ms)
{
    struct evhttp_uri *uri = evhttp_uri_parse(url);
    const char *scheme, *host;
    provider_t *p = NULL;
    int https;

    if (uri == NULL)
        goto bad_url;
    scheme = evhttp_uri_get_scheme(uri);
    host = evhttp_uri_get_host(uri);
    if (scheme == NULL || (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)
        || host == NULL || host[0] == '\0' || strlen(host) >= sizeof(p->host))
        goto bad_url;
    https = strcasecmp(scheme, "https") == 0;
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        goto fail;
    p->base = base;
    TAILQ_INIT(&p->waiting);
    p->port = evhttp_uri_get_port(uri) > 0 ? evhttp_uri_get_port(uri) : https ? 443 : 80;
    snprintf(p->hostport, sizeof(p->hostport), "%s:%d", host, p->port);
    /* An IPv6 literal comes bracketed ("[::1]"): the address is inside. */
    if (host[0] == '[')
        snprintf(p->host, sizeof(p->host), "%.*s", (int)strlen(host) - 2, host + 1);
    else
        snprintf(p->host, sizeof(p->host), "%s", host);
    p->timeout_ms = timeout_ms;
    if (https && (p->tls = provider_tls_new(p->host, ca_file)) == NULL)
        goto fail;
    if (!resolve_is_address(p->host)) {
        if (resolve == NULL) {
            log_error("provider: %s names a host, and no resolver was given", url);
            goto fail;
        }
        if ((p->name = resolve_name_new(resolve, p->host, "provider", on_resolved, p)) == NULL)
            goto fail;
    }
    evhttp_uri_free(uri);
    return p;
bad_url:
    log_error("provider: %s is not an http:// or https:// URL with a host", url);
fail:
    if (p != NULL)
        provider_tls_free(p->tls);
    free(p);
    if (uri != NULL)
        evhttp_uri_free(uri);
    return NULL;
}

void
provider_free(provider_t *p)
{
    if (p == NULL)
        return;
    for (int i = 0; i < p->nidle; i++)
        evhttp_connection_free(p->idle[i]);
    resolve_name_free(p->name);
    provider_tls_free(p->tls);
    free(p);
}

/* An idle connection, else a new one to addr (numeric: evhttp never
 * resolves it). */
static struct evhttp_connection *
conn_take(provider_t *p, const char *addr)
{
    struct evhttp_connection *c;
    struct timeval tv = clock_tv(p->timeout_ms);

    if (p->nidle > 0)
        return p->idle[--p->nidle];
    if (p->tls != NULL)
        c = provider_tls_connect(p->tls, p->base, addr, (unsigned short)p->port);
    else
        c = evhttp_connection_base_new(p->base, NULL, addr, (unsigned short)p->port);
    if (c == NULL)
        return NULL;
    /* An inactivity timeout (it also closes idle keep-alive connections);
     * a call's deadline is its own timer, call_deadline. */
    evhttp_connection_set_timeout_tv(c, &tv);
    evhttp_connection_set_max_body_size(c, PROVIDER_ANSWER_MAX);
    /* One try: a retry must be the caller's decision, not the transport's. */
    evhttp_connection_set_retries(c, 0);
    return c;
}

/* Whether c goes to the provider's current address (not one its host name
 * has left since c was made). */
static int
conn_current(const provider_t *p, struct evhttp_connection *c)
{
    const char *addr = provider_addr(p);
    char *peer = NULL;
    ev_uint16_t port;

    if (p->name == NULL)
        return 1;
    evhttp_connection_get_peer(c, &peer, &port);
    return addr != NULL && peer != NULL && strcmp(peer, addr) == 0;
}

static void
conn_give_back(provider_t *p, struct evhttp_connection *c)
{
    if (p->nidle < PROVIDER_IDLE_MAX && conn_current(p, c))
        p->idle[p->nidle++] = c;
    else
        evhttp_connection_free(c);
}

/* ---- calls ---- */

/* Why the call's TLS connection failed, or NULL (plain HTTP, or no known
 * reason). */
static const char *
call_tls_failure(call_t *c, char *buf, size_t len)
{
    if (c->p->tls == NULL || c->conn == NULL)
        return NULL;
    return provider_tls_failure(c->conn, c->tls_reason, buf, len);
}

/* Record the outcome (the first one only) and have call_deliver give it to
 * the caller from the loop; nothing is freed here. */
static void
call_conclude(call_t *c, provider_outcome_t out, int reusable)
{
    if (c->concluded)
        return;
    c->concluded = 1;
    c->out = out;
    c->reusable = reusable;
    evtimer_del(&c->deadline);
    event_active(&c->done, 0, 0);
}

/* provider_timeout has passed and the answer is not complete. */
static void
call_deadline(evutil_socket_t fd, short what, void *arg)
{
    call_t *c = arg;
    char buf[256];
    const char *tls = call_tls_failure(c, buf, sizeof(buf));

    (void)fd;
    (void)what;
    if (c->waiting)
        tls = "no address for the host name yet";
    log_req_warn(c->request_id, "provider: %s of order %s: no complete answer within %lld ms%s%s",
                 call_names[c->kind], c->order_id, (long long)c->p->timeout_ms,
                 tls != NULL ? "; " : "", tls != NULL ? tls : "");
    if (c->waiting) {
        /* Never sent: no connection, the request is on no queue. */
        TAILQ_REMOVE(&c->p->waiting, c, wait);
        c->waiting = 0;
        call_conclude(c, PROVIDER_UNAVAILABLE, 0);
        return;
    }
    if (c->p->name != NULL)
        resolve_name_retry(c->p->name);
    /* The timer runs only while the request is queued on the connection
     * (call_conclude deletes it).  Cancelling resets the connection and does
     * not run on_response; the request stays ours.  This is our own
     * event, not a callback of the connection, so the connection can be
     * freed now, and then nothing of it can run later. */
    evhttp_cancel_request(c->req);
    evhttp_connection_free(c->conn);
    c->conn = NULL;
    call_conclude(c, PROVIDER_UNAVAILABLE, 0);
}

/* The `done` event: free the call's connection (or keep it idle) and
 * request, tell the observer, give the caller its answer, free the call. */
static void
call_deliver(evutil_socket_t fd, short what, void *arg)
{
    call_t *c = arg;

    (void)fd;
    (void)what;
    /* The connection no longer serves this call. */
    if (c->p->tls != NULL && c->conn != NULL)
        provider_tls_report_to(c->conn, NULL);
    /* A later turn than the connection's own callbacks: freeing is safe.
     * The connection goes first: were the request still queued on it,
     * evhttp_connection_free would unlink it (an owned request is not
     * freed there), where freeing the request first would leave a dangling
     * entry in the connection's queue. */
    if (c->conn != NULL) {
        if (c->reusable)
            conn_give_back(c->p, c->conn);
        else
            evhttp_connection_free(c->conn);
    }
    if (c->req != NULL)
        evhttp_request_free(c->req);
    if (c->p->observe != NULL)
        c->p->observe(c->p->observe_arg, (provider_call_t)c->kind, c->out,
                      clock_mono_us() - c->start_us);
    c->cb(c->arg, c->out,
          c->out != PROVIDER_UNAVAILABLE && c->charge_id[0] != '\0' ? c->charge_id : NULL);
    free(c);
}

/* No complete answer came: refused, reset, TLS failure, inactivity. */
static void
call_failed(call_t *c)
{
    char buf[256];
    const char *tls = call_tls_failure(c, buf, sizeof(buf));

    if (tls != NULL)
        log_req_error(c->request_id, "provider: %s of order %s failed: %s: %s",
                      call_names[c->kind], c->order_id, c->p->hostport, tls);
    else
        log_req_warn(c->request_id,
                     "provider: %s of order %s failed: no response (timeout or connection error)",
                     call_names[c->kind], c->order_id);
    if (c->p->name != NULL)
        resolve_name_retry(c->p->name);     /* the name may have moved */
    call_conclude(c, PROVIDER_UNAVAILABLE, 0);
}

/* An answer that breaks the protocol: not believed, logged as an error
 * (someone must look: a provider or a proxy is wrong). */
static void
call_protocol_error(call_t *c, int code, const char *why)
{
    log_req_error(c->request_id, "provider: %s of order %s: protocol error in the HTTP %d answer: "
                  "%s: taking it as unavailable", call_names[c->kind], c->order_id, code, why);
    call_conclude(c, PROVIDER_UNAVAILABLE, 0);
}

/* The answer's body, made contiguous; its length in *len. */
static const char *
answer_body(struct evhttp_request *req, size_t *len)
{
    struct evbuffer *buf = evhttp_request_get_input_buffer(req);

    *len = evbuffer_get_length(buf);
    return (const char *)evbuffer_pullup(buf, -1);
}

/* A 2xx answer: believed only when it is about this call's charge and its
 * charge_id (if any) is whole (worker/provider_answer.c). */
static void
call_answered(call_t *c, struct evhttp_request *req, int code)
{
    provider_ask_t ask = { c->kind, c->order_id, c->amount_cents, c->currency };
    provider_outcome_t out;
    const char *body;
    char why[128];
    size_t len;

    body = answer_body(req, &len);
    out = provider_answer_parse(&ask, body, len, c->charge_id, why, sizeof(why));
    if (out == PROVIDER_UNAVAILABLE) {
        call_protocol_error(c, code, why);
        return;
    }
    /* Only a clean, complete exchange leaves a connection fit for reuse. */
    call_conclude(c, out, 1);
}

/*
 * A 4xx answer to a charge.  Only 402 (Payment Required) says the payment
 * itself was refused: declined.  Any other 4xx says nothing about the charge
 * (409: the same key is still being processed by a concurrent request, e.g.
 * two housekeepers; 401/403/404: a proxy, a wrong URL, a rotated API key):
 * taking it as declined could fail an order whose charge goes through, so
 * it is "unavailable", and logged as an error since someone must look.
 */
static void
charge_refused(call_t *c, struct evhttp_request *req, int code)
{
    char what[65];
    const char *body;
    size_t len;

    body = answer_body(req, &len);
    provider_answer_error_code(body, len, what, sizeof(what));
    log_req_error(c->request_id,
                  "provider: charge of order %s answered HTTP %d%s%s: taking it as %s", c->order_id,
                  code, what[0] != '\0' ? ", error code " : "", what,
                  code == 402 ? "declined" : "unavailable");
    call_conclude(c, code == 402 ? PROVIDER_DECLINED : PROVIDER_UNAVAILABLE, 0);
}

/* A GET answered 404: only the provider's own verdict (error code
 * charge_not_found) means "never received"; a 404 from anything else (a
 * proxy, a wrong path) must not fail an order. */
static void
get_not_found(call_t *c, struct evhttp_request *req)
{
    char code[65];
    const char *body;
    size_t len;

    body = answer_body(req, &len);
    provider_answer_error_code(body, len, code, sizeof(code));
    if (strcmp(code, "charge_not_found") == 0) {
        call_conclude(c, PROVIDER_NOT_FOUND, 1);
        return;
    }
    log_req_warn(c->request_id,
                 "provider: GET charge of order %s: HTTP 404 without charge_not_found",
                 c->order_id);
    call_conclude(c, PROVIDER_UNAVAILABLE, 1);
}

static void
on_response(struct evhttp_request *req, void *arg)
{
    call_t *c = arg;
    int code = req != NULL ? evhttp_request_get_response_code(req) : 0;

    if (code == 0)
        call_failed(c);
    else if (code >= 200 && code < 300)
        call_answered(c, req, code);
    else if (c->kind == PROVIDER_CALL_CHARGE && code >= 400 && code < 500 && code != 408 &&
             code != 429)
        charge_refused(c, req, code);
    else if (c->kind == PROVIDER_CALL_GET && code == 404)
        get_not_found(c, req);
    else {
        log_req_warn(c->request_id, "provider: %s of order %s answered HTTP %d",
                     call_names[c->kind], c->order_id, code);
        call_conclude(c, PROVIDER_UNAVAILABLE, 0);
    }
}

static call_t *
call_new(provider_t *p, provider_call_t kind, const char *order_id, int64_t amount_cents,
         const char *currency, const char *request_id, provider_cb_t cb, void *arg)
{
    call_t *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->p = p;
    c->kind = kind;
    c->start_us = clock_mono_us();
    c->cb = cb;
    c->arg = arg;
    c->amount_cents = amount_cents;
    snprintf(c->order_id, sizeof(c->order_id), "%s", order_id);
    snprintf(c->currency, sizeof(c->currency), "%s", currency);
    snprintf(c->request_id, sizeof(c->request_id), "%s", request_id ? request_id : "");
    evtimer_assign(&c->deadline, p->base, call_deadline, c);
    event_assign(&c->done, p->base, -1, 0, call_deliver, c);
    return c;
}

/* Send the call's request, made by call_start, to addr. */
static void
call_send(call_t *c, const char *addr)
{
    provider_t *p = c->p;

    c->conn = conn_take(p, addr);
    if (c->conn == NULL)
        goto fail;
    /* A handshake on this connection now reports to this call. */
    if (p->tls != NULL)
        provider_tls_report_to(c->conn, c->tls_reason);
    /* On failure req is no longer queued on the connection, and ours:
     * call_deliver frees both. */
    if (evhttp_make_request(c->conn, c->req, c->method, c->path) < 0)
        goto fail;
    return;     /* on_response may have run already (failed connect) */
fail:
    log_req_error(c->request_id, "provider: cannot start a request for order %s", c->order_id);
    call_conclude(c, PROVIDER_UNAVAILABLE, 0);
}

/* The provider's host name has no address: the call cannot be sent. */
static void
call_no_address(call_t *c)
{
    log_req_warn(c->request_id, "provider: %s of order %s: the host %s does not resolve",
                 call_names[c->kind], c->order_id, c->p->host);
    call_conclude(c, PROVIDER_UNAVAILABLE, 0);
}

/* The host name's first resolution ended, or its address changed: idle
 * connections to another address go, waiting calls are sent (or fail, when
 * the name has no address). */
static void
on_resolved(void *arg)
{
    provider_t *p = arg;
    const char *addr = provider_addr(p);
    int kept = 0;

    for (int i = 0; i < p->nidle; i++) {
        if (conn_current(p, p->idle[i]))
            p->idle[kept++] = p->idle[i];
        else
            evhttp_connection_free(p->idle[i]);     /* idle: none of its callbacks runs */
    }
    p->nidle = kept;
    while (!TAILQ_EMPTY(&p->waiting)) {
        call_t *c = TAILQ_FIRST(&p->waiting);

        TAILQ_REMOVE(&p->waiting, c, wait);
        c->waiting = 0;
        if (addr != NULL)
            call_send(c, addr);
        else
            call_no_address(c);
    }
}

/* Make the call's request and send it, or have it wait for the host name's
 * first address; on any failure the call still ends from the loop with
 * PROVIDER_UNAVAILABLE.  body: POST it as JSON. */
static void
call_start(call_t *c, enum evhttp_cmd_type method, const char *path, const char *body)
{
    provider_t *p = c->p;
    const char *addr = provider_addr(p);
    struct evhttp_request *req;
    struct evkeyvalq *h;
    struct timeval tv = clock_tv(p->timeout_ms);

    c->method = method;
    snprintf(c->path, sizeof(c->path), "%s", path);
    req = evhttp_request_new(on_response, c);
    if (req == NULL)
        goto fail;
    evhttp_request_own(req);
    c->req = req;
    h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", p->hostport);
    if (c->request_id[0] != '\0')
        evhttp_add_header(h, "X-Request-Id", c->request_id);
    if (body != NULL) {
        evhttp_add_header(h, "Content-Type", "application/json");
        evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
    }
    /* The charge's key, on the charge only: a provider that keeps keys
     * across endpoints would answer a cancel sent under it with the
     * charge's stored answer.  A cancel is idempotent by its path. */
    if (c->kind == PROVIDER_CALL_CHARGE)
        evhttp_add_header(h, "Idempotency-Key", c->order_id);
    if (evtimer_add(&c->deadline, &tv) < 0)
        goto fail;
    if (addr != NULL) {
        call_send(c, addr);
    } else if (resolve_name_pending(p->name)) {
        TAILQ_INSERT_TAIL(&p->waiting, c, wait);    /* on_resolved sends it */
        c->waiting = 1;
    } else {
        call_no_address(c);
    }
    return;
fail:
    log_req_error(c->request_id, "provider: cannot start a request for order %s", c->order_id);
    call_conclude(c, PROVIDER_UNAVAILABLE, 0);
}

/* Start a call about the order's charge: POST /v1/charges (the charge),
 * GET /v1/charges/{order_id}, or POST /v1/charges/{order_id}/cancel. */
static void
charge_call(provider_t *p, provider_call_t kind, const char *order_id, int64_t amount_cents,
            const char *currency, const char *request_id, provider_cb_t cb, void *arg)
{
    call_t *c = call_new(p, kind, order_id, amount_cents, currency, request_id, cb, arg);
    char path[sizeof("/v1/charges//cancel") + 3 * ORDER_ID_MAX];
    char body[256];
    char *enc;

    if (c == NULL) {
        /* Nothing else can be done: break the "from the loop" promise
         * rather than lose the answer. */
        log_req_error(request_id, "provider: out of memory");
        cb(arg, PROVIDER_UNAVAILABLE, NULL);
        return;
    }
    if (kind == PROVIDER_CALL_CHARGE) {
        snprintf(body, sizeof(body),
                 "{\"order_id\":\"%s\",\"amount_cents\":%lld,\"currency\":\"%s\"}",
                 c->order_id, (long long)amount_cents, c->currency);
        call_start(c, EVHTTP_REQ_POST, "/v1/charges", body);
        return;
    }
    enc = evhttp_uriencode(c->order_id, -1, 0);
    if (enc == NULL) {
        call_conclude(c, PROVIDER_UNAVAILABLE, 0);
        return;
    }
    snprintf(path, sizeof(path), "/v1/charges/%s%s", enc,
             kind == PROVIDER_CALL_CANCEL ? "/cancel" : "");
    free(enc);
    if (kind == PROVIDER_CALL_CANCEL)
        call_start(c, EVHTTP_REQ_POST, path, "{}");
    else
        call_start(c, EVHTTP_REQ_GET, path, NULL);
}

void
provider_set_observer(provider_t *p, provider_observe_fn fn, void *arg)
{
    p->observe = fn;
    p->observe_arg = arg;
}

void
provider_charge(provider_t *p, const char *order_id, int64_t amount_cents,
                const char *currency, const char *request_id, provider_cb_t cb, void *arg)
{
    charge_call(p, PROVIDER_CALL_CHARGE, order_id, amount_cents, currency, request_id, cb, arg);
}

void
provider_get_charge(provider_t *p, const char *order_id, int64_t amount_cents,
                    const char *currency, const char *request_id, provider_cb_t cb, void *arg)
{
    charge_call(p, PROVIDER_CALL_GET, order_id, amount_cents, currency, request_id, cb, arg);
}

void
provider_cancel(provider_t *p, const char *order_id, int64_t amount_cents,
                const char *currency, const char *request_id, provider_cb_t cb, void *arg)
{
    charge_call(p, PROVIDER_CALL_CANCEL, order_id, amount_cents, currency, request_id, cb, arg);
}
