/*
 * server: routes, request validation, the outage switch and the lifetime of
 * the provider-sim process.
 *
 * How a charge request is answered:
 *
 *   new key, no timeout drawn, no outage   settle now, 200 after `latency`
 *   new key, timeout drawn or outage       hold: 503 after `hold`; settle
 *                                          `webhook_delay` after arrival and
 *                                          send a signed webhook
 *   known key, settled, no outage          the same 200 again
 *   known key, still pending, or outage    hold again (no new webhook)
 *   known key, other order/amount/currency 409 idempotency_key_reused
 *   the order was canceled (its charge     200 "declined": refused, no money
 *   canceled or refunded, or a tombstone)  taken (held in an outage)
 *
 * Every 200 names the order, its amount and currency besides charge_id and
 * status.  A cancel (POST /v1/charges/{order_id}/cancel) is answered 200
 * even in an outage: it is how paymentsd settles an unknown outcome, and
 * answering it is what the contract promises.  Every change to a charge is
 * journaled (sim_charges_sync) before the answer is queued.
 *
 * Everything runs on one libevent loop, signals included (evsignal), so no
 * state is shared with a handler and nothing needs a lock.  The outage flag
 * is the only state that changes at run time besides the charges.
 */
#include "config.h"

#include "provider-sim/server.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <json-c/json.h>

#include "common/clock.h"
#include "common/httpd.h"
#include "common/listen.h"
#include "common/log.h"
#include "common/pidfile.h"
#include "common/resolve.h"
#include "provider-sim/charges.h"
#include "provider-sim/hooks.h"
#include "provider-sim/reply.h"
#include "provider-sim/request.h"
#include "provider-sim/tls.h"

#define MAX_BODY (64 * 1024)
#define MAX_HEADERS (16 * 1024)
#define FIELD_MAX SIM_REQUEST_ID_MAX
#define STOP_FLUSH_MS 200       /* time given to the last replies to leave */
#define CHARGES_PREFIX "/v1/charges/"
#define CANCEL_SUFFIX "/cancel"

typedef struct sim {
    const sim_conf_t *conf;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    sim_tls_t *tls;
    sim_charges_t *charges;
    sim_hooks_t *hooks;
    sim_replies_t *replies;
    struct event *signals[5];
    int outage;
    int stopping;
    int rearm_failed;           /* out of memory re-arming a charge at start */
    int64_t timed_out;          /* charge requests held instead of answered */
    int64_t rejected;           /* charge requests refused with a 4xx */
    int64_t refused;            /* charge requests answered "declined" for a canceled order */
    int64_t cancels;            /* cancel requests answered */
} sim_t;

typedef void (*handler_fn)(sim_t *s, struct evhttp_request *req, const char *path);

typedef struct {
    const char *path;
    const char *suffix;         /* with prefix: the path also ends so ("/cancel") */
    int prefix;                 /* path is a prefix: "/v1/charges/" */
    int admin;                  /* admin_allow peers only */
    unsigned methods;
    const char *allow;
    handler_fn handler;
} route_t;

static void handle_charge_create(sim_t *s, struct evhttp_request *req, const char *path);
static void handle_charge_cancel(sim_t *s, struct evhttp_request *req, const char *path);
static void handle_charge_get(sim_t *s, struct evhttp_request *req, const char *path);
static void handle_outage(sim_t *s, struct evhttp_request *req, const char *path);
static void handle_stats(sim_t *s, struct evhttp_request *req, const char *path);
static void handle_admin_charges(sim_t *s, struct evhttp_request *req, const char *path);

/* First match wins: the cancel route comes before the GET of a charge. */
static const route_t routes[] = {
    { "/v1/charges", NULL, 0, 0, EVHTTP_REQ_POST, "POST", handle_charge_create },
    { CHARGES_PREFIX, CANCEL_SUFFIX, 1, 0, EVHTTP_REQ_POST, "POST", handle_charge_cancel },
    { CHARGES_PREFIX, NULL, 1, 0, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD, "GET, HEAD",
      handle_charge_get },
    { "/admin/outage", NULL, 0, 1, EVHTTP_REQ_GET | EVHTTP_REQ_POST, "GET, POST", handle_outage },
    { "/admin/stats", NULL, 0, 1, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD, "GET, HEAD", handle_stats },
    { "/admin/charges", NULL, 0, 1, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD, "GET, HEAD",
      handle_admin_charges },
};

/* ---- helpers ---- */

/* Whether the peer's address is in admin_allow. */
static int
peer_is_admin(const sim_t *s, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    char *addr = NULL;
    ev_uint16_t port = 0;

    if (evcon == NULL)
        return 0;
    evhttp_connection_get_peer(evcon, &addr, &port);
    return sim_acl_allows(s->conf->admin_acl, addr);
}

/* ---- charges ---- */

/* The fields every answer about a charge carries; a tombstone has no
 * amount or currency to tell. */
static json_object *
charge_json(const sim_charge_t *c)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "charge_id", json_object_new_string(c->charge_id));
    json_object_object_add(o, "order_id", json_object_new_string(c->order_id));
    json_object_object_add(o, "status", json_object_new_string(sim_charges_status(c)));
    if (c->currency != NULL) {
        json_object_object_add(o, "amount_cents", json_object_new_int64(c->amount_cents));
        json_object_object_add(o, "currency", json_object_new_string(c->currency));
    }
    return o;
}

static void
answer_charge(sim_t *s, struct evhttp_request *req, const sim_charge_t *c)
{
    sim_reply_json(s->replies, req, 200, charge_json(c), s->conf->latency_ms);
}

/* A charge for a canceled order: "declined", no money taken, named as asked. */
static void
refuse_charge(sim_t *s, struct evhttp_request *req, const sim_charge_t *c, const char *order_id,
              int64_t amount, const char *currency)
{
    json_object *o = json_object_new_object();

    s->refused++;
    log_info("charge for order %s (attempt %lld): refused, the order was canceled (request %s)",
             order_id, (long long)c->attempts, sim_reply_request_id(s->replies, req));
    json_object_object_add(o, "charge_id", json_object_new_string(c->charge_id));
    json_object_object_add(o, "order_id", json_object_new_string(order_id));
    json_object_object_add(o, "status", json_object_new_string("declined"));
    json_object_object_add(o, "amount_cents", json_object_new_int64(amount));
    json_object_object_add(o, "currency", json_object_new_string(currency));
    sim_reply_json(s->replies, req, 200, o, s->conf->latency_ms);
}

/* Play the provider that does not answer in time: 503 only after `hold`,
 * long past any sensible client timeout. */
static void
hold_charge(sim_t *s, struct evhttp_request *req, const sim_charge_t *c)
{
    s->timed_out++;
    log_info("charge %s for order %s (attempt %lld): not answering for %lld ms (%s; request %s)",
             c->charge_id, c->order_id, (long long)c->attempts, (long long)s->conf->hold_ms,
             s->outage ? "outage" : "timeout drawn", sim_reply_request_id(s->replies, req));
    sim_reply_error(s->replies, req, 503, "service_unavailable",
                    "the provider did not answer in time", NULL, s->conf->hold_ms);
}

static void
reject(sim_t *s, struct evhttp_request *req, int status, const char *code,
       const char *message, const char *field)
{
    s->rejected++;
    sim_reply_error(s->replies, req, status, code, message, field, s->conf->latency_ms);
}

/* Journal what changed before answering; when that fails, answer 503 (the
 * change stays in memory and is written at the next sync) and return -1. */
static int
sync_or_503(sim_t *s, struct evhttp_request *req)
{
    if (sim_charges_sync(s->charges) == 0)
        return 0;
    sim_reply_error(s->replies, req, 503, "service_unavailable",
                    "the provider cannot record the charge now", NULL, 0);
    return -1;
}

/* Check the body's fields (sim_request_charge); returns 0, or -1 after
 * answering. */
static int
charge_fields(sim_t *s, struct evhttp_request *req, json_object *body,
              const char **order_id, int64_t *amount, const char **currency)
{
    sim_charge_req_t c;
    const char *field, *message;

    if (sim_request_charge(body, &c, &field, &message) < 0) {
        reject(s, req, 422, "validation_failed", message, field);
        return -1;
    }
    *order_id = c.order_id;
    *amount = c.amount_cents;
    *currency = c.currency;
    return 0;
}

/* One more request for a known charge c (its key, or a canceled order). */
static void
charge_again(sim_t *s, struct evhttp_request *req, sim_charge_t *c, const char *order_id,
             int64_t amount, const char *currency)
{
    sim_charges_attempt(s->charges, c);
    if (sync_or_503(s, req) < 0)
        return;
    log_debug("charge %s for order %s: retry %lld (request %s)", c->charge_id, c->order_id,
              (long long)c->attempts, sim_reply_request_id(s->replies, req));
    if (s->outage || c->state == SIM_CHARGE_PENDING)
        hold_charge(s, req, c);
    else if (sim_charges_refuses(c))
        refuse_charge(s, req, c, order_id, amount, currency);
    else
        answer_charge(s, req, c);
}

static void
handle_charge_create(sim_t *s, struct evhttp_request *req, const char *path)
{
    const char *key = evhttp_find_header(evhttp_request_get_input_headers(req), "Idempotency-Key");
    const char *order_id, *currency;
    json_object *body = NULL;
    sim_charge_t *c;
    int64_t amount;

    (void)path;
    if (key == NULL) {
        reject(s, req, 400, "idempotency_key_missing", "the Idempotency-Key header is required",
               NULL);
        return;
    }
    if (!sim_request_key_valid(key)) {
        reject(s, req, 400, "idempotency_key_invalid",
               "Idempotency-Key must be 1..255 visible ASCII characters", NULL);
        return;
    }
    body = sim_request_body_json(req);
    if (body == NULL || !json_object_is_type(body, json_type_object)) {
        reject(s, req, 400, "invalid_json", "the body must be a JSON object", NULL);
        goto done;
    }
    if (charge_fields(s, req, body, &order_id, &amount, &currency) < 0)
        goto done;

    c = sim_charges_find(s->charges, key);
    if (c != NULL) {
        /* A tombstone knows only its order id. */
        if (strcmp(c->order_id, order_id) != 0
            || (c->currency != NULL
                && (c->amount_cents != amount || strcmp(c->currency, currency) != 0))) {
            reject(s, req, 409, "idempotency_key_reused",
                   "this Idempotency-Key was used with another order_id, amount_cents or currency",
                   NULL);
            goto done;
        }
        charge_again(s, req, c, order_id, amount, currency);
        goto done;
    }
    /* A new key for a canceled order is refused too: a cancel covers the order. */
    c = sim_charges_find_order(s->charges, order_id);
    if (c != NULL && sim_charges_refuses(c)) {
        charge_again(s, req, c, order_id, amount, currency);
        goto done;
    }

    c = sim_charges_add(s->charges, key, order_id, amount, currency, s->outage,
                        clock_real_ms());
    if (c == NULL) {
        log_error("out of memory recording a charge for order %s", order_id);
        sim_reply_error(s->replies, req, 503, "service_unavailable", "out of memory", NULL, 0);
        goto done;
    }
    if (c->state == SIM_CHARGE_PENDING && sim_hooks_settle_later(s->hooks, c) < 0) {
        /* Without a webhook the charge could never be learnt of: answer. */
        log_error("out of memory scheduling the webhook of %s: answering at once", c->charge_id);
        sim_charges_settle(s->charges, c);
        sim_charges_notified(s->charges, c);
    }
    if (sync_or_503(s, req) < 0)
        goto done;
    log_debug("charge %s for order %s: new, %lld %s, %s%s (request %s)", c->charge_id,
              c->order_id, (long long)amount, currency, c->declined ? "declined" : "succeeded",
              c->timeout ? ", timeout drawn" : "", sim_reply_request_id(s->replies, req));
    if (c->state == SIM_CHARGE_PENDING)
        hold_charge(s, req, c);
    else
        answer_charge(s, req, c);
done:
    json_object_put(body);
}

static void
handle_charge_get(sim_t *s, struct evhttp_request *req, const char *path)
{
    char *order_id;
    const sim_charge_t *c;
    json_object *o;

    if (s->outage) {
        sim_reply_error(s->replies, req, 503, "service_unavailable", "the provider is in an outage",
                        NULL, s->conf->latency_ms);
        return;
    }
    order_id = sim_request_path_id(path, strlen(CHARGES_PREFIX), 0, FIELD_MAX);
    c = order_id != NULL ? sim_charges_find_order(s->charges, order_id) : NULL;
    free(order_id);
    if (c == NULL) {
        sim_reply_error(s->replies, req, 404, "charge_not_found",
                        "no charge was received for this order", NULL, s->conf->latency_ms);
        return;
    }
    o = charge_json(c);
    json_object_object_add(o, "attempts", json_object_new_int64(c->attempts));
    json_object_object_add(o, "refunded_cents", json_object_new_int64(c->refunded_cents));
    sim_reply_json(s->replies, req, 200, o, s->conf->latency_ms);
}

/*
 * Cancel-or-refund, answered even in an outage.  The status says what became
 * of the order's charge: canceled (pending, now never captured), refunded
 * (captured, given back in full), declined (no money moved) or not_found
 * (never received: a tombstone now refuses it).  The states are final, so a
 * repeated cancel gets the same answer.
 */
static void
handle_charge_cancel(sim_t *s, struct evhttp_request *req, const char *path)
{
    char *order_id =
        sim_request_path_id(path, strlen(CHARGES_PREFIX), strlen(CANCEL_SUFFIX), FIELD_MAX);
    const sim_charge_t *c;
    const char *status;
    json_object *o;

    if (order_id == NULL) {
        sim_reply_error(s->replies, req, 404, "charge_not_found", "not an order id",
                        NULL, s->conf->latency_ms);
        return;
    }
    c = sim_charges_cancel(s->charges, order_id, clock_real_ms());
    if (c == NULL) {
        log_error("out of memory canceling order %s", order_id);
        sim_reply_error(s->replies, req, 503, "service_unavailable", "out of memory", NULL, 0);
        free(order_id);
        return;
    }
    free(order_id);
    if (sync_or_503(s, req) < 0)
        return;
    s->cancels++;
    if (c->state == SIM_CHARGE_TOMBSTONE) {
        status = "not_found";
        o = json_object_new_object();
        json_object_object_add(o, "order_id", json_object_new_string(c->order_id));
    } else {
        status = sim_charges_status(c);
        o = charge_json(c);
    }
    json_object_object_add(o, "status", json_object_new_string(status));
    json_object_object_add(o, "refunded_cents", json_object_new_int64(c->refunded_cents));
    log_info("cancel of order %s: %s%s (request %s)", c->order_id, status,
             c->state == SIM_CHARGE_TOMBSTONE ? ", the charge will be refused if it comes" : "",
             sim_reply_request_id(s->replies, req));
    sim_reply_json(s->replies, req, 200, o, s->conf->latency_ms);
}

/* ---- admin ---- */

static void
reply_outage(sim_t *s, struct evhttp_request *req)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "outage", json_object_new_boolean(s->outage));
    sim_reply_json(s->replies, req, 200, o, 0);
}

static void
handle_outage(sim_t *s, struct evhttp_request *req, const char *path)
{
    json_object *body, *v;

    (void)path;
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        reply_outage(s, req);
        return;
    }
    body = sim_request_body_json(req);
    if (body == NULL || !json_object_is_type(body, json_type_object)) {
        sim_reply_error(s->replies, req, 400, "invalid_json", "the body must be a JSON object",
                        NULL, 0);
    } else if (!json_object_object_get_ex(body, "enabled", &v)
               || !json_object_is_type(v, json_type_boolean)) {
        sim_reply_error(s->replies, req, 422, "validation_failed", "enabled must be true or false",
                        "enabled", 0);
    } else {
        int on = json_object_get_boolean(v);

        if (on != s->outage) {
            if (on)
                log_warn("outage mode on: charges are recorded but not answered in time");
            else
                log_info("outage mode off");
        }
        s->outage = on;
        reply_outage(s, req);
    }
    json_object_put(body);
}

static void
add_count(json_object *o, const char *name, int64_t v)
{
    json_object_object_add(o, name, json_object_new_int64(v));
}

static void
handle_stats(sim_t *s, struct evhttp_request *req, const char *path)
{
    sim_charges_stats_t cs;
    sim_hooks_stats_t hs;
    json_object *o = json_object_new_object();

    (void)path;
    sim_charges_stats(s->charges, &cs);
    sim_hooks_stats(s->hooks, &hs);
    add_count(o, "charges", cs.charges);
    add_count(o, "charge_requests", cs.charge_requests);
    add_count(o, "succeeded", cs.succeeded);
    add_count(o, "declined", cs.declined);
    add_count(o, "pending", cs.pending);
    add_count(o, "canceled", cs.canceled);
    add_count(o, "refunded", cs.refunded);
    add_count(o, "tombstones", cs.tombstones);
    add_count(o, "cancel_requests", s->cancels);
    add_count(o, "refused_requests", s->refused);
    add_count(o, "timed_out", s->timed_out);
    add_count(o, "rejected_requests", s->rejected);
    add_count(o, "held_requests", (int64_t)sim_reply_pending(s->replies));
    add_count(o, "webhooks_delivered", hs.delivered);
    add_count(o, "webhook_attempts", hs.attempts);
    add_count(o, "webhooks_failed", hs.failed);
    add_count(o, "webhooks_pending", hs.pending);
    add_count(o, "webhooks_dropped", hs.dropped);
    json_object_object_add(o, "outage", json_object_new_boolean(s->outage));
    sim_reply_json(s->replies, req, 200, o, 0);
}

static void
admin_charge_row(void *arg, sim_charge_t *c)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "order_id", json_object_new_string(c->order_id));
    json_object_object_add(o, "key", json_object_new_string(c->key));
    json_object_object_add(o, "charge_id", json_object_new_string(c->charge_id));
    json_object_object_add(o, "amount_cents", json_object_new_int64(c->amount_cents));
    json_object_object_add(o, "currency", c->currency ? json_object_new_string(c->currency) : NULL);
    json_object_object_add(o, "status", json_object_new_string(sim_charges_status(c)));
    json_object_object_add(o, "tombstone",
                           json_object_new_boolean(c->state == SIM_CHARGE_TOMBSTONE));
    json_object_object_add(o, "attempts", json_object_new_int64(c->attempts));
    json_object_object_add(o, "refunded_cents", json_object_new_int64(c->refunded_cents));
    json_object_object_add(o, "held_cents", json_object_new_int64(sim_charges_held_cents(c)));
    json_object_array_add(arg, o);
}

/* Every charge and tombstone, oldest first, with what the provider holds. */
static void
handle_admin_charges(sim_t *s, struct evhttp_request *req, const char *path)
{
    json_object *o = json_object_new_object(), *list = json_object_new_array();

    (void)path;
    sim_charges_each(s->charges, admin_charge_row, list);
    json_object_object_add(o, "charges", list);
    sim_reply_json(s->replies, req, 200, o, 0);
}

/* ---- routing and lifetime ---- */

static void
on_request(struct evhttp_request *req, void *arg)
{
    sim_t *s = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    unsigned method = (unsigned)evhttp_request_get_command(req);

    if (path == NULL)
        path = "";
    if (s->stopping)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const route_t *rt = &routes[i];
        size_t n = strlen(path), plen = strlen(rt->path);
        size_t slen = rt->suffix != NULL ? strlen(rt->suffix) : 0;
        /* An empty id ("/v1/charges//cancel") matches: the handler says 404. */
        int match = rt->prefix ? strncmp(path, rt->path, plen) == 0 && n >= plen + slen
                                 && n > plen
                                 && (slen == 0 || strcmp(path + n - slen, rt->suffix) == 0)
                               : strcmp(path, rt->path) == 0;

        if (!match)
            continue;
        if (rt->admin && !peer_is_admin(s, req)) {
            sim_reply_error(s->replies, req, 403, "forbidden",
                            "admin endpoints answer the addresses of admin_allow only", NULL, 0);
            return;
        }
        if (!(method & rt->methods)) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", rt->allow);
            sim_reply_error(s->replies, req, 405, "method_not_allowed",
                            "this method is not allowed on this path", NULL, 0);
            return;
        }
        rt->handler(s, req, path);
        return;
    }
    sim_reply_error(s->replies, req, 404, "not_found", "no such route", NULL, 0);
}

/* After a restart: settle the charges still pending on their schedule and
 * send the webhooks still owed. */
static void
rearm(void *arg, sim_charge_t *c)
{
    sim_t *s = arg;
    int owed = c->state == SIM_CHARGE_PENDING
        || (c->notify && !c->notified
            && (c->state == SIM_CHARGE_SUCCEEDED || c->state == SIM_CHARGE_DECLINED));

    if (!owed || s->rearm_failed)
        return;
    if (sim_hooks_settle_later(s->hooks, c) < 0) {
        s->rearm_failed = 1;
        return;
    }
    log_info("charge %s for order %s: %s", c->charge_id, c->order_id,
             c->state == SIM_CHARGE_PENDING ? "still pending, settling on schedule"
                                            : "its webhook is still owed, sending it");
}

static void
stop(sim_t *s, const char *why)
{
    struct timeval tv = clock_tv(STOP_FLUSH_MS);

    if (s->stopping)
        return;
    s->stopping = 1;
    log_info("stopping (%s): answering %zu held requests", why, sim_reply_pending(s->replies));
    if (s->bound != NULL) {
        evhttp_del_accept_socket(s->http, s->bound);
        s->bound = NULL;
    }
    sim_reply_flush(s->replies);
    event_base_loopexit(s->base, &tv);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
    sim_t *s = arg;

    (void)what;
    switch (sig) {
    case SIGTERM: stop(s, "SIGTERM"); break;
    case SIGINT: stop(s, "SIGINT"); break;
    case SIGQUIT: stop(s, "SIGQUIT"); break;
    case SIGUSR1:
        if (log_reopen() < 0)
            log_error("reopening the error log failed: %s", strerror(errno));
        break;
    case SIGHUP:
        log_warn("SIGHUP ignored: provider-sim has no reload, restart it to apply a new conf");
        break;
    default:
        break;
    }
}

int
sim_server_run(const sim_conf_t *conf)
{
    static const int sigs[] = { SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGHUP };
    sim_t s;
    char err[1024] = "";
    const char *what;
    int fd = -1, rc = 1, pid_written = 0;

    memset(&s, 0, sizeof(s));
    s.conf = conf;
    s.outage = conf->outage;

    what = "event_base_new";
    s.base = event_base_new();
    if (s.base == NULL)
        goto cleanup;
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        what = "evsignal_new";
        s.signals[i] = evsignal_new(s.base, sigs[i], on_signal, &s);
        if (s.signals[i] == NULL || evsignal_add(s.signals[i], NULL) < 0)
            goto cleanup;
    }
    what = "sim_charges_new";
    s.charges = sim_charges_new(conf->seed, conf->decline_rate, conf->timeout_rate);
    if (s.charges == NULL)
        goto cleanup;
    what = "sim_reply_new";
    s.replies = sim_reply_new(s.base);
    if (s.replies == NULL)
        goto cleanup;
    if (conf->state_file != NULL) {
        what = "state_file";
        if (sim_charges_journal(s.charges, conf->state_file, err, sizeof(err)) < 0)
            goto cleanup;
    }
    what = "sim_hooks_new";
    s.hooks = sim_hooks_new(s.base, conf, s.charges, err, sizeof(err));
    if (s.hooks == NULL)
        goto cleanup;
    what = "rearm";
    sim_charges_each(s.charges, rearm, &s);
    if (s.rearm_failed)
        goto cleanup;

    what = "evhttp_new";
    /* Idle connections must not time out under a held request. */
    s.http = httpd_new(s.base, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT
                       | EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH, MAX_HEADERS, MAX_BODY,
                       conf->hold_ms + 60000, on_request, &s);
    if (s.http == NULL)
        goto cleanup;
    if (conf->tls_cert != NULL) {
        what = "tls";
        s.tls = sim_tls_new(conf->tls_cert, conf->tls_key, err, sizeof(err));
        if (s.tls == NULL)
            goto cleanup;
        sim_tls_serve(s.tls, s.http);
    }

    what = "listen";
    fd = listen_open(conf->listen, err, sizeof(err));
    if (fd < 0)
        goto cleanup;
    what = "evhttp_accept_socket_with_handle";
    s.bound = evhttp_accept_socket_with_handle(s.http, fd);
    if (s.bound == NULL)
        goto cleanup;
    fd = -1;                    /* the listener owns it now */

    if (conf->pid_file != NULL) {
        what = "pid_file";
        if (pidfile_write(conf->pid_file, getpid(), err, sizeof(err)) < 0)
            goto cleanup;
        pid_written = 1;
    }
    log_info("listening on %s (%s); webhooks to %s; seed %lld, decline_rate %g, timeout_rate %g, "
             "latency %lld ms%s%s",
             conf->listen, s.tls != NULL ? "https" : "http", conf->webhook_url,
             (long long)conf->seed, conf->decline_rate, conf->timeout_rate,
             (long long)conf->latency_ms, s.outage ? "; outage mode on" : "",
             conf->state_file != NULL ? "" : "; no state_file: charges are kept in memory only");
    if (event_base_dispatch(s.base) < 0) {
        what = "event_base_dispatch";
        goto cleanup;
    }
    rc = 0;
    log_info("stopped");

cleanup:
    if (rc != 0 && err[0] != '\0')
        log_error("cannot start: %s", err);
    else if (rc != 0)
        log_error("cannot start: %s failed", what);
    if (pid_written)
        pidfile_remove(conf->pid_file, getpid());
    if (fd >= 0)
        close(fd);
    sim_hooks_free(s.hooks);
    /* Answer anything still held before its connection goes away. */
    sim_reply_free(s.replies);
    if (s.http != NULL)
        evhttp_free(s.http);
    sim_tls_free(s.tls);
    sim_charges_free(s.charges);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        if (s.signals[i] != NULL)
            event_free(s.signals[i]);
    }
    if (s.base != NULL) {
        resolve_settle(s.base);
        event_base_free(s.base);
    }
    return rc;
}
