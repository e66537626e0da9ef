/*
 * provider: HTTP client of the payment provider.
 *
 * A small free list of keep-alive evhttp connections: a call takes an idle
 * one or opens a new one, and gives it back when its response is complete.
 * A call's deadline is enforced by the connection timeout; a connection that
 * failed or timed out is dropped, never reused.  Dropped connections are
 * freed on a later turn of the loop: libevent still uses a connection after
 * its request callback returns, and libevent 2.1 does not honour
 * evhttp_connection_free_on_completion() when the connect itself failed.
 * All callbacks run on the worker's loop.
 */
#include "config.h"

#include "worker/provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <json-c/json.h>

#include "common/log.h"

#define PROVIDER_IDLE_MAX 64    /* idle keep-alive connections kept */
#define PROVIDER_BODY_MAX 4096  /* a charge response is small */

struct provider {
    struct event_base *base;
    char host[256];
    int port;
    char hostport[300];
    int64_t timeout_ms;
    struct evhttp_connection *idle[PROVIDER_IDLE_MAX];
    int nidle;
    struct evhttp_connection **dead;    /* to free on the next turn */
    size_t ndead, dead_cap;
    struct event *reaper;
};

typedef struct {
    provider_t *p;
    struct evhttp_connection *conn;
    provider_cb_t cb;
    void *arg;
    struct event *defer;        /* reports a failure to start from the loop */
} charge_t;

const char *
provider_outcome_name(provider_outcome_t o)
{
    switch (o) {
    case PROVIDER_SUCCEEDED: return "succeeded";
    case PROVIDER_DECLINED: return "declined";
    case PROVIDER_UNAVAILABLE: return "unavailable";
    }
    return "unknown";
}

static void
reap_dead(evutil_socket_t fd, short what, void *arg)
{
    provider_t *p = arg;

    (void)fd;
    (void)what;
    for (size_t i = 0; i < p->ndead; i++)
        evhttp_connection_free(p->dead[i]);
    p->ndead = 0;
}

/* Drop a connection that failed: never reused, freed on the next turn. */
static void
conn_discard(provider_t *p, struct evhttp_connection *c)
{
    if (p->ndead == p->dead_cap) {
        size_t cap = p->dead_cap ? p->dead_cap * 2 : 16;
        struct evhttp_connection **d = realloc(p->dead, cap * sizeof(*d));
        if (d == NULL) {
            log_error("provider: out of memory: a connection is leaked");
            return;
        }
        p->dead = d;
        p->dead_cap = cap;
    }
    p->dead[p->ndead++] = c;
    event_active(p->reaper, 0, 0);
}

provider_t *
provider_new(struct event_base *base, const char *url, int64_t timeout_ms)
{
    struct evhttp_uri *uri = evhttp_uri_parse(url);
    provider_t *p;
    const char *host;

    if (uri == NULL)
        return NULL;
    host = evhttp_uri_get_host(uri);
    p = calloc(1, sizeof(*p));
    if (p == NULL || host == NULL || strlen(host) >= sizeof(p->host)) {
        free(p);
        evhttp_uri_free(uri);
        return NULL;
    }
    p->base = base;
    snprintf(p->host, sizeof(p->host), "%s", host);
    p->port = evhttp_uri_get_port(uri) > 0 ? evhttp_uri_get_port(uri) : 80;
    snprintf(p->hostport, sizeof(p->hostport), "%s:%d", p->host, p->port);
    p->timeout_ms = timeout_ms;
    evhttp_uri_free(uri);
    p->reaper = event_new(base, -1, 0, reap_dead, p);
    if (p->reaper == NULL) {
        free(p);
        return NULL;
    }
    return p;
}

void
provider_free(provider_t *p)
{
    if (p == NULL)
        return;
    for (int i = 0; i < p->nidle; i++)
        evhttp_connection_free(p->idle[i]);
    reap_dead(-1, 0, p);
    event_free(p->reaper);
    free(p->dead);
    free(p);
}

static struct evhttp_connection *
conn_take(provider_t *p)
{
    struct evhttp_connection *c;
    struct timeval tv;

    if (p->nidle > 0)
        return p->idle[--p->nidle];
    c = evhttp_connection_base_new(p->base, NULL, p->host, (unsigned short)p->port);
    if (c == NULL)
        return NULL;
    tv.tv_sec = (time_t)(p->timeout_ms / 1000);
    tv.tv_usec = (suseconds_t)((p->timeout_ms % 1000) * 1000);
    evhttp_connection_set_timeout_tv(c, &tv);
    /* One try: a retry must be the checkout's decision, not the transport's. */
    evhttp_connection_set_retries(c, 0);
    return c;
}

static void
conn_give_back(provider_t *p, struct evhttp_connection *c)
{
    if (p->nidle < PROVIDER_IDLE_MAX)
        p->idle[p->nidle++] = c;
    else
        evhttp_connection_free(c);
}

/* Read {"charge_id": "...", "status": "succeeded"|"declined"}.  The buffer
 * is not NUL-terminated: parse exactly its length. */
static provider_outcome_t
parse_charge(struct evbuffer *buf, char *charge_id, size_t idlen)
{
    size_t len = evbuffer_get_length(buf);
    struct json_tokener *tok;
    struct json_object *obj = NULL, *v;
    provider_outcome_t out = PROVIDER_UNAVAILABLE;
    const char *status;

    if (len == 0 || len > PROVIDER_BODY_MAX)
        return PROVIDER_UNAVAILABLE;
    tok = json_tokener_new();
    if (tok == NULL)
        return PROVIDER_UNAVAILABLE;
    obj = json_tokener_parse_ex(tok, (const char *)evbuffer_pullup(buf, -1), (int)len);
    json_tokener_free(tok);
    if (obj == NULL)
        return PROVIDER_UNAVAILABLE;
    if (json_object_object_get_ex(obj, "status", &v) && json_object_is_type(v, json_type_string)) {
        status = json_object_get_string(v);
        if (strcmp(status, "succeeded") == 0)
            out = PROVIDER_SUCCEEDED;
        else if (strcmp(status, "declined") == 0)
            out = PROVIDER_DECLINED;
    }
    if (json_object_object_get_ex(obj, "charge_id", &v) && json_object_is_type(v, json_type_string))
        snprintf(charge_id, idlen, "%s", json_object_get_string(v));
    json_object_put(obj);
    return out;
}

static void
charge_done(struct evhttp_request *req, void *arg)
{
    charge_t *ch = arg;
    provider_t *p = ch->p;
    char charge_id[128] = "";
    provider_outcome_t out = PROVIDER_UNAVAILABLE;
    int code = req ? evhttp_request_get_response_code(req) : 0;

    if (code == 200) {
        out = parse_charge(evhttp_request_get_input_buffer(req), charge_id, sizeof(charge_id));
        if (out == PROVIDER_UNAVAILABLE)
            log_warn("provider: unreadable charge response");
    } else if (code == 0) {
        log_warn("provider: charge failed: no response (timeout or connection error)");
    } else {
        log_warn("provider: charge answered HTTP %d", code);
    }
    /* Only a clean, complete exchange leaves a connection fit for reuse. */
    if (code == 200 && out != PROVIDER_UNAVAILABLE)
        conn_give_back(p, ch->conn);
    else
        conn_discard(p, ch->conn);
    ch->cb(ch->arg, out, charge_id[0] ? charge_id : NULL);
    free(ch);
}

static void
charge_failed_to_start(evutil_socket_t fd, short what, void *arg)
{
    charge_t *ch = arg;

    (void)fd;
    (void)what;
    event_free(ch->defer);
    ch->cb(ch->arg, PROVIDER_UNAVAILABLE, NULL);
    free(ch);
}

void
provider_charge(provider_t *p, const char *order_id, int64_t amount_cents,
                const char *currency, provider_cb_t cb, void *arg)
{
    charge_t *ch = calloc(1, sizeof(*ch));
    struct evhttp_request *req = NULL;
    struct evkeyvalq *h;
    char body[256];
    int n;

    if (ch == NULL)
        goto fail_nomem;
    ch->p = p;
    ch->cb = cb;
    ch->arg = arg;
    ch->conn = conn_take(p);
    if (ch->conn == NULL)
        goto fail;
    req = evhttp_request_new(charge_done, ch);
    if (req == NULL)
        goto fail;
    h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", p->hostport);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "Idempotency-Key", order_id);
    n = snprintf(body, sizeof(body),
                 "{\"order_id\":\"%s\",\"amount_cents\":%lld,\"currency\":\"%s\"}",
                 order_id, (long long)amount_cents, currency);
    evbuffer_add(evhttp_request_get_output_buffer(req), body, (size_t)n);
    if (evhttp_make_request(ch->conn, req, EVHTTP_REQ_POST, "/v1/charges") < 0) {
        req = NULL;             /* evhttp_make_request freed it */
        goto fail;
    }
    return;

fail:
    if (ch->conn != NULL)
        evhttp_connection_free(ch->conn);
    ch->conn = NULL;
    /* The contract is "called from the loop": defer the failure. */
    ch->defer = event_new(p->base, -1, 0, charge_failed_to_start, ch);
    if (ch->defer != NULL) {
        event_active(ch->defer, 0, 0);
        return;
    }
    free(ch);
fail_nomem:
    log_error("provider: out of memory");
    cb(arg, PROVIDER_UNAVAILABLE, NULL);
}
