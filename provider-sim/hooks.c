/*
 * hooks: the webhook delivery queue.
 *
 * Each delivery is a charge, an attempt count and a one-shot timer; the
 * "queue of due deliveries" is libevent's timer heap, which wakes the loop
 * for the earliest one.  An attempt opens its own connection to the
 * receiver (Connection: close), with webhook_timeout for connect, write and
 * read.  A host name in webhook_url is followed by the resolver
 * (common/resolve.c: evdns, again every resolve_interval and soon after a
 * failed attempt), and each attempt connects to its latest address, so no
 * delivery ever calls a blocking resolver.  A name that does not resolve
 * yet (under docker compose, paymentsd's container may start after the
 * sim) is not an error at start: an attempt made while it has no address
 * fails like a refused connection and is retried with back-off.
 *
 * Connections are ours to free, never inside their own callback (libevent
 * still uses them when it returns), and not with free_on_completion either:
 * libevent 2.1 does not honour it when a connect fails, which leaked one
 * connection per refused attempt.  A connection whose request has ended
 * stays on its delivery and is freed in a later turn of the loop: by the
 * next attempt, or, once the delivery is finished, by the reaper event.
 *
 * libevent may run the response callback inside evhttp_make_request (a
 * refused loopback connect fails at once), so attempt() never touches its
 * delivery after starting the request.
 */
#include "config.h"

#include "provider-sim/hooks.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <json-c/json.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/resolve.h"
#include "common/whsig.h"

/* delivery_t.error when the attempt had no address to connect to. */
#define HOOK_NO_ADDRESS (-1)

typedef struct delivery {
    TAILQ_ENTRY(delivery) link;
    sim_hooks_t *h;
    sim_charge_t *c;
    struct event *timer;
    struct evhttp_connection *evcon;    /* the last attempt's, until freed */
    int attempts;
    int error;                          /* enum evhttp_request_error + 1, 0 = none */
    size_t len;
    char *body;
} delivery_t;

struct sim_hooks {
    struct event_base *base;
    const sim_conf_t *conf;
    sim_charges_t *charges;
    resolve_t *resolve;                 /* NULL when webhook_url names an address */
    resolve_name_t *name;               /* webhook_url's host name, followed */
    char host_header[NI_MAXHOST + 16];
    struct timeval timeout;
    TAILQ_HEAD(, delivery) list;        /* waiting, retrying or in flight */
    TAILQ_HEAD(, delivery) finished;    /* done: the reaper frees them */
    struct event *reaper;
    sim_hooks_stats_t stats;
    int stopping;
};

static void attempt(delivery_t *d);
static void reap(evutil_socket_t fd, short what, void *arg);

static const char *
error_name(int error)
{
    if (error == HOOK_NO_ADDRESS)
        return "the webhook_url host does not resolve";
    switch (error - 1) {
    case EVREQ_HTTP_TIMEOUT: return "timeout";
    case EVREQ_HTTP_EOF: return "connection closed or refused";
    case EVREQ_HTTP_INVALID_HEADER: return "invalid response header";
    case EVREQ_HTTP_BUFFER_ERROR: return "buffer error";
    case EVREQ_HTTP_REQUEST_CANCEL: return "cancelled";
    case EVREQ_HTTP_DATA_TOO_LONG: return "response too long";
    default: return "connection failed";
    }
}

sim_hooks_t *
sim_hooks_new(struct event_base *base, const sim_conf_t *conf, sim_charges_t *charges,
              char *err, size_t errlen)
{
    sim_hooks_t *h = calloc(1, sizeof(*h));

    if (h == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!resolve_is_address(conf->webhook_host)) {
        h->resolve = resolve_new(base, conf->resolv_conf, conf->resolve_interval_ms);
        if (h->resolve != NULL)
            h->name = resolve_name_new(h->resolve, conf->webhook_host, "webhook_url", NULL, NULL);
        if (h->name == NULL) {
            snprintf(err, errlen, "cannot start resolving webhook_url host \"%.128s\"",
                     conf->webhook_host);
            resolve_free(h->resolve);
            free(h);
            return NULL;
        }
    }
    if (strchr(conf->webhook_host, ':') != NULL)
        snprintf(h->host_header, sizeof(h->host_header), "[%s]:%d",
                 conf->webhook_host, conf->webhook_port);
    else
        snprintf(h->host_header, sizeof(h->host_header), "%s:%d",
                 conf->webhook_host, conf->webhook_port);
    h->base = base;
    h->conf = conf;
    h->charges = charges;
    h->timeout = clock_tv(conf->webhook_timeout_ms);
    TAILQ_INIT(&h->list);
    TAILQ_INIT(&h->finished);
    h->reaper = event_new(base, -1, 0, reap, h);
    if (h->reaper == NULL) {
        snprintf(err, errlen, "out of memory");
        resolve_name_free(h->name);
        resolve_free(h->resolve);
        free(h);
        return NULL;
    }
    return h;
}

/* Free a delivery that is in no list, and its connection: never call this
 * from inside that connection's callback. */
static void
delivery_free(delivery_t *d)
{
    if (d->evcon != NULL)
        evhttp_connection_free(d->evcon);
    if (d->timer != NULL)
        event_free(d->timer);
    free(d->body);
    free(d);
}

/* The delivery is over (delivered, given up or not to be sent): move it to
 * the reaper's list, which frees it in a later turn of the loop, outside any
 * callback of its connection. */
static void
delivery_retire(delivery_t *d)
{
    sim_hooks_t *h = d->h;

    TAILQ_REMOVE(&h->list, d, link);
    h->stats.pending--;
    TAILQ_INSERT_TAIL(&h->finished, d, link);
    event_active(h->reaper, 0, 0);
}

static void
reap(evutil_socket_t fd, short what, void *arg)
{
    sim_hooks_t *h = arg;

    (void)fd;
    (void)what;
    while (!TAILQ_EMPTY(&h->finished)) {
        delivery_t *d = TAILQ_FIRST(&h->finished);

        TAILQ_REMOVE(&h->finished, d, link);
        delivery_free(d);
    }
}

/* The n-th retry waits backoff * 2^(n-1), capped, then halved and given back
 * a seeded random half ("equal jitter"): spread out, never immediate. */
static int64_t
retry_delay_ms(const sim_hooks_t *h, const delivery_t *d)
{
    int64_t base = h->conf->webhook_backoff_ms;
    char purpose[32];
    double u;

    for (int i = 1; i < d->attempts && base < h->conf->webhook_backoff_max_ms; i++)
        base *= 2;
    if (base > h->conf->webhook_backoff_max_ms)
        base = h->conf->webhook_backoff_max_ms;
    snprintf(purpose, sizeof(purpose), "jitter:%d", d->attempts);
    u = sim_charges_uniform(h->conf->seed, purpose, d->c->key);
    return base / 2 + (int64_t)(u * (double)(base - base / 2)) + 1;
}

/* The delivery is over: journal its end, so a restart does not send it
 * again, and retire it. */
static void
delivery_conclude(delivery_t *d)
{
    sim_charges_notified(d->h->charges, d->c);
    if (sim_charges_sync(d->h->charges) < 0)
        log_error("webhook %s: its end is not journaled: a restart would send it again",
                  d->c->event_id);
    delivery_retire(d);
}

static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
    delivery_t *d = arg;
    sim_hooks_t *h = d->h;

    (void)fd;
    (void)what;
    /* The first firing is the settlement: only now may the outcome be told. */
    if (d->attempts == 0) {
        sim_charges_settle(h->charges, d->c);
        if (sim_charges_sync(h->charges) < 0)
            log_error("charge %s: its settlement is not journaled", d->c->charge_id);
    }
    if (sim_charges_refuses(d->c)) {
        h->stats.dropped++;
        log_info("webhook %s for order %s not sent: the charge was %s", d->c->event_id,
                 d->c->order_id, sim_charges_status(d->c));
        delivery_retire(d);
        return;
    }
    attempt(d);
}

/* An attempt ended with status (0: no response): done, retry or give up. */
static void
attempt_done(delivery_t *d, int status)
{
    sim_hooks_t *h = d->h;
    const sim_charge_t *c = d->c;
    int64_t max = h->conf->webhook_max_attempts, delay;
    struct timeval tv;

    if (status >= 200 && status <= 299) {
        h->stats.delivered++;
        log_info("webhook %s for order %s delivered: attempt %d/%lld, HTTP %d",
                 c->event_id, c->order_id, d->attempts, (long long)max, status);
        delivery_conclude(d);
        return;
    }
    if (d->attempts >= max) {
        h->stats.failed++;
        if (status != 0)
            log_error("webhook %s for order %s failed: attempt %d/%lld, HTTP %d: giving up",
                      c->event_id, c->order_id, d->attempts, (long long)max, status);
        else
            log_error("webhook %s for order %s failed: attempt %d/%lld, %s: giving up",
                      c->event_id, c->order_id, d->attempts, (long long)max, error_name(d->error));
        delivery_conclude(d);
        return;
    }
    delay = retry_delay_ms(h, d);
    if (status != 0)
        log_warn("webhook %s for order %s: attempt %d/%lld, HTTP %d: retrying in %lld ms",
                 c->event_id, c->order_id, d->attempts, (long long)max, status, (long long)delay);
    else
        log_warn("webhook %s for order %s: attempt %d/%lld, %s: retrying in %lld ms",
                 c->event_id, c->order_id, d->attempts, (long long)max, error_name(d->error),
                 (long long)delay);
    tv = clock_tv(delay);
    if (evtimer_add(d->timer, &tv) < 0) {
        h->stats.failed++;
        log_error("webhook %s for order %s: cannot schedule a retry: giving up",
                  c->event_id, c->order_id);
        delivery_conclude(d);
    }
}

static void
on_error(enum evhttp_request_error error, void *arg)
{
    delivery_t *d = arg;

    d->error = (int)error + 1;
}

static void
on_response(struct evhttp_request *req, void *arg)
{
    delivery_t *d = arg;

    /* d->evcon stays: it is freed later, outside this callback. */
    if (d->h->stopping)
        return;
    if (req == NULL && d->h->name != NULL)
        resolve_name_retry(d->h->name);     /* the receiver may have moved */
    attempt_done(d, req != NULL ? evhttp_request_get_response_code(req) : 0);
}

static void
attempt(delivery_t *d)
{
    sim_hooks_t *h = d->h;
    char sig[WHSIG_SIGNATURE_SIZE], ts[24];
    int64_t now = (int64_t)time(NULL);
    struct evhttp_request *req;
    struct evkeyvalq *hd;
    const char *what, *addr;

    /* The previous attempt's connection ended in an earlier turn: free it. */
    if (d->evcon != NULL) {
        evhttp_connection_free(d->evcon);
        d->evcon = NULL;
    }
    d->attempts++;
    d->error = 0;
    h->stats.attempts++;
    what = "whsig_sign";
    if (whsig_sign(&h->conf->key, d->c->event_id, now, d->body, d->len, sig) < 0)
        goto fail;
    snprintf(ts, sizeof(ts), "%lld", (long long)now);
    addr = h->name != NULL ? resolve_name_addr(h->name) : h->conf->webhook_host;
    if (addr == NULL) {
        /* No address yet: a failed attempt, retried like a refused one. */
        d->error = HOOK_NO_ADDRESS;
        resolve_name_retry(h->name);
        attempt_done(d, 0);
        return;
    }
    what = "evhttp_connection_base_new";
    /* A numeric address: evhttp resolves nothing (no dns base). */
    d->evcon = evhttp_connection_base_new(h->base, NULL, addr,
                                          (unsigned short)h->conf->webhook_port);
    if (d->evcon == NULL)
        goto fail;
    evhttp_connection_set_timeout_tv(d->evcon, &h->timeout);
    evhttp_connection_set_retries(d->evcon, 0);
    what = "evhttp_request_new";
    req = evhttp_request_new(on_response, d);
    if (req == NULL)
        goto fail;
    evhttp_request_set_error_cb(req, on_error);
    hd = evhttp_request_get_output_headers(req);
    evhttp_add_header(hd, "Host", h->host_header);
    evhttp_add_header(hd, "Content-Type", "application/json");
    evhttp_add_header(hd, "Connection", "close");
    evhttp_add_header(hd, "User-Agent", "provider-sim/" PACKAGE_VERSION);
    evhttp_add_header(hd, "webhook-id", d->c->event_id);
    evhttp_add_header(hd, "webhook-timestamp", ts);
    evhttp_add_header(hd, "webhook-signature", sig);
    evbuffer_add(evhttp_request_get_output_buffer(req), d->body, d->len);
    log_debug("webhook %s for order %s: attempt %d to %s", d->c->event_id, d->c->order_id,
              d->attempts, h->conf->webhook_url);
    what = "evhttp_make_request";
    /* On failure libevent has freed req but not the connection. */
    if (evhttp_make_request(d->evcon, req, EVHTTP_REQ_POST, h->conf->webhook_path) < 0)
        goto fail;
    return;     /* d may be finished already: see the top of the file */
fail:
    log_error("webhook %s: %s failed", d->c->event_id, what);
    if (d->evcon != NULL) {
        evhttp_connection_free(d->evcon);
        d->evcon = NULL;
    }
    attempt_done(d, 0);
}

int
sim_hooks_settle_later(sim_hooks_t *h, sim_charge_t *c)
{
    delivery_t *d = calloc(1, sizeof(*d));
    json_object *o = json_object_new_object();
    int64_t due = c->created_ms + h->conf->webhook_delay_ms - clock_real_ms();
    struct timeval tv;
    const char *s;

    /* Due already (a restart), or the clock stepped back: keep within bounds. */
    if (due < 0 || c->state != SIM_CHARGE_PENDING)
        due = 0;
    else if (due > h->conf->webhook_delay_ms)
        due = h->conf->webhook_delay_ms;
    tv = clock_tv(due);

    if (d == NULL || o == NULL)
        goto fail;
    json_object_object_add(o, "event_id", json_object_new_string(c->event_id));
    json_object_object_add(o, "order_id", json_object_new_string(c->order_id));
    json_object_object_add(o, "outcome", json_object_new_string(c->declined ? "FAILED" : "PAID"));
    s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &d->len);
    d->body = s != NULL ? strdup(s) : NULL;
    d->timer = evtimer_new(h->base, on_timer, d);
    if (d->body == NULL || d->timer == NULL || evtimer_add(d->timer, &tv) < 0)
        goto fail;
    json_object_put(o);
    d->h = h;
    d->c = c;
    TAILQ_INSERT_TAIL(&h->list, d, link);
    h->stats.pending++;
    return 0;
fail:
    json_object_put(o);
    if (d != NULL) {
        if (d->timer != NULL)
            event_free(d->timer);
        free(d->body);
        free(d);
    }
    return -1;
}

void
sim_hooks_stats(const sim_hooks_t *h, sim_hooks_stats_t *out)
{
    *out = h->stats;
}

void
sim_hooks_free(sim_hooks_t *h)
{
    if (h == NULL)
        return;
    h->stopping = 1;
    if (h->stats.pending > 0)
        log_warn("stopping with %lld webhooks undelivered", (long long)h->stats.pending);
    while (!TAILQ_EMPTY(&h->list)) {
        delivery_t *d = TAILQ_FIRST(&h->list);

        TAILQ_REMOVE(&h->list, d, link);
        delivery_free(d);
    }
    reap(-1, 0, h);
    event_free(h->reaper);
    resolve_name_free(h->name);
    resolve_free(h->resolve);
    free(h);
}
