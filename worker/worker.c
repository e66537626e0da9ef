/*
 * worker: the event loop, the route table and the drain on SIGQUIT.
 *
 * Signals arrive through libevent (evsignal), so their handlers run in the
 * loop like any other callback; the ones without a meaning for a worker stay
 * blocked and are read, logged and dropped from a signalfd in the same loop
 * (worker_ignore_signals).  A request is "in flight" from the moment the
 * router sees it until its reply.  A draining worker has stopped accepting;
 * it exits once nothing is in flight (nor waits to be written: front.c's
 * own answers) and no request has arrived or been answered for
 * DRAIN_QUIET_MS, or when worker_shutdown_timeout says it has
 * waited long enough.  The quiet period matters: a connection this worker
 * accepted just before SIGQUIT may not have delivered its request yet, and
 * evhttp gives no way to tell such a connection from an idle keep-alive one.
 */
#include "config.h"

#include "worker/worker.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "common/clock.h"
#include "common/exitcode.h"
#include "common/httpd.h"
#include "common/log.h"
#include "common/proctitle.h"
#include "common/signals.h"
#include "worker/checkout.h"
#include "worker/cors.h"
#include "worker/docs.h"
#include "worker/front.h"
#include "worker/http.h"
#include "worker/metrics.h"
#include "worker/orders.h"
#include "worker/provider.h"
#include "worker/replay.h"
#include "worker/reversal.h"
#include "worker/store.h"
#include "worker/webhook.h"

#define DRAIN_QUIET_MS 1000
#define DRAIN_POLL_MS 100       /* while answers made by the front reader wait */

struct worker {
    const conf_t *conf;
    const worker_shared_t *shared;
    shm_metrics_slot_t *metrics;
    int index;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket **bound;
    size_t nbound;
    resolve_t *resolve;
    db_pool_t *db;
    provider_t *provider;
    webhook_keys_t *webhook_keys;
    docs_t *docs;
    int inflight;
    int background;             /* reversals started after their reply */
    uint64_t db_statements, db_calls;   /* the pool's counts last published */
    int draining;
    int64_t last_request_ms;
    struct event *drain_timer;
    struct event *quiet_timer;
    struct event *signals[WORKER_SIGNALS];
    struct event *ignored;
    front_limits_t front;       /* what every connection's front reader enforces */
};

typedef void (*handler_fn)(http_req_t *r);

typedef struct {
    const char *path;
    int prefix;                 /* path is a prefix: "/orders/" */
    unsigned methods;           /* EVHTTP_REQ_* allowed */
    const char *allow;          /* the Allow header for a 405 */
    shm_metrics_route_t id;         /* route in logs and metrics */
    handler_fn handler;
} route_t;

static void handle_healthz(http_req_t *r);
static void handle_readyz(http_req_t *r);
static void handle_docs(http_req_t *r);

#define GET_HEAD (EVHTTP_REQ_GET | EVHTTP_REQ_HEAD)

static const route_t routes[] = {
    { "/healthz", 0, GET_HEAD, "GET, HEAD", SHM_METRICS_ROUTE_HEALTHZ, handle_healthz },
    { "/readyz", 0, GET_HEAD, "GET, HEAD", SHM_METRICS_ROUTE_READYZ, handle_readyz },
    { "/metrics", 0, GET_HEAD, "GET, HEAD", SHM_METRICS_ROUTE_METRICS, metrics_handle },
    { "/openapi.json", 0, GET_HEAD, "GET, HEAD", SHM_METRICS_ROUTE_OPENAPI, docs_openapi_handle },
    { "/docs", 0, GET_HEAD, "GET, HEAD", SHM_METRICS_ROUTE_DOCS, handle_docs },
    { "/docs/", 1, GET_HEAD, "GET, HEAD", SHM_METRICS_ROUTE_DOCS, handle_docs },
    { "/checkout", 0, EVHTTP_REQ_POST, "POST", SHM_METRICS_ROUTE_CHECKOUT, checkout_handle },
    { "/webhooks/provider", 0, EVHTTP_REQ_POST, "POST", SHM_METRICS_ROUTE_WEBHOOK, webhook_handle },
    { "/orders/", 1, GET_HEAD, "GET, HEAD", SHM_METRICS_ROUTE_ORDER, orders_handle },
};

const conf_t *
worker_conf(const worker_t *w)
{
    return w->conf;
}

db_pool_t *
worker_db(worker_t *w)
{
    return w->db;
}

provider_t *
worker_provider(worker_t *w)
{
    return w->provider;
}

const webhook_keys_t *
worker_webhook_keys(const worker_t *w)
{
    return w->webhook_keys;
}

const worker_shared_t *
worker_shared(const worker_t *w)
{
    return w->shared;
}

void
worker_count(worker_t *w, shm_metrics_counter_t c)
{
    shm_metrics_add(w->metrics, c, 1);
}

static void drain_check(worker_t *w);

static void
reversal_done(void *arg, reversal_result_t result)
{
    worker_t *w = arg;

    (void)result;               /* counted and logged by the reversal itself */
    w->background--;
    drain_check(w);
}

void
worker_start_reversal(worker_t *w, const char *order_id, int64_t amount_cents,
                      const char *currency, const char *request_id)
{
    /* While the breaker is open the provider is known to be down: the cancel
     * would only wait out provider_timeout.  The housekeeper sends it. */
    if (shm_breaker_state(w->shared->breaker) == SHM_BREAKER_OPEN) {
        log_req_info(request_id, "reversal of order %s: the provider is down (breaker open): "
                     "left to the housekeeper", order_id);
        return;
    }
    w->background++;
    reversal_start(w->provider, w->db, w->metrics, order_id, amount_cents, currency, request_id,
                   reversal_done, w);
}

void
worker_update_gauges(worker_t *w)
{
    db_pool_stats_t st;

    db_pool_stats(w->db, &st);
    shm_metrics_gauge(w->metrics, SHM_METRICS_GAUGE_DB_BUSY, st.busy);
    shm_metrics_gauge(w->metrics, SHM_METRICS_GAUGE_DB_QUEUED, st.queued);
    shm_metrics_gauge(w->metrics, SHM_METRICS_GAUGE_DB_CONNECTED, st.connected);
    /* The pool counts from its start; the slot adds what is new. */
    shm_metrics_add(w->metrics, SHM_METRICS_DB_STATEMENTS, st.statements - w->db_statements);
    shm_metrics_add(w->metrics, SHM_METRICS_DB_CALLS, st.calls - w->db_calls);
    w->db_statements = st.statements;
    w->db_calls = st.calls;
}

static void
reply_ok(http_req_t *r)
{
    static const char body[] = "{\"ok\":true}";

    http_reply(r, 200, "application/json", body, sizeof(body) - 1);
}

static void
handle_healthz(http_req_t *r)
{
    reply_ok(r);
}

static void
handle_docs(http_req_t *r)
{
    docs_handle(http_req_worker(r)->docs, r);
}

static void
readyz_done(void *arg, const store_err_t *err)
{
    http_req_t *r = arg;

    if (err != NULL) {
        http_reply_unavailable(r, "the database does not answer");
        return;
    }
    reply_ok(r);
}

static void
handle_readyz(http_req_t *r)
{
    if (store_ping(http_req_worker(r)->db, readyz_done, r) < 0)
        http_reply_unavailable(r, "the database is unreachable");
}

static void
worker_exit(worker_t *w, int status)
{
    worker_signals_done();
    log_info("exiting");
    db_pool_free(w->db);
    provider_free(w->provider);
    resolve_free(w->resolve);
    webhook_keys_free(w->webhook_keys);
    worker_ignore_signals_free(w->ignored);
    docs_free(w->docs);
    exit(status);
}

/* While draining: exit when idle and quiet, else look again later. */
static void
drain_check(worker_t *w)
{
    int64_t quiet;
    struct timeval tv;

    if (!w->draining || w->inflight > 0 || w->background > 0)
        return;
    quiet = clock_mono_ms() - w->last_request_ms;
    if (quiet >= DRAIN_QUIET_MS && front_answers_waiting() == 0) {
        log_info("drained");
        event_base_loopexit(w->base, NULL);
        return;
    }
    /* A replay answered by the front reader is in no one's inflight while
     * it waits for a slow client's socket: looked at again until it is
     * written (or worker_shutdown_timeout). */
    tv = clock_tv(quiet < DRAIN_QUIET_MS ? DRAIN_QUIET_MS - quiet : DRAIN_POLL_MS);
    evtimer_add(w->quiet_timer, &tv);
}

static void
quiet_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    drain_check(arg);
}

static shm_metrics_method_t
method_label(const char *m)
{
    return strcmp(m, "GET") == 0 ? SHM_METRICS_METHOD_GET
         : strcmp(m, "HEAD") == 0 ? SHM_METRICS_METHOD_HEAD
         : strcmp(m, "POST") == 0 ? SHM_METRICS_METHOD_POST
         : strcmp(m, "OPTIONS") == 0 ? SHM_METRICS_METHOD_OPTIONS
         : SHM_METRICS_METHOD_OTHER;
}

int
worker_draining(const worker_t *w)
{
    return w->draining;
}

void
worker_answered(worker_t *w, shm_metrics_route_t route, const char *method, int status,
                int64_t dur_us)
{
    shm_metrics_request(w->metrics, route, method_label(method), status, dur_us);
    worker_update_gauges(w);
    /* A replay answered by the front reader never reaches on_request: the
     * client it answered is as live as one that sent a request. */
    w->last_request_ms = clock_mono_ms();
}

static void
on_done(worker_t *w, const http_req_t *r, int status, int64_t dur_us)
{
    worker_answered(w, http_req_route(r), http_req_method(r), status, dur_us);
    w->inflight--;
    drain_check(w);
}

static void
on_request(struct evhttp_request *req, void *arg)
{
    worker_t *w = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    unsigned method = (unsigned)evhttp_request_get_command(req);
    const front_reject_t *reject = front_rejected(req);
    http_req_t *r = http_req_new(req, w, on_done);

    if (r == NULL)
        return;
    w->inflight++;
    w->last_request_ms = clock_mono_ms();
    if (w->draining || reject != NULL)
        http_add_header(r, "Connection", "close");
    if (reject != NULL) {
        /* A request the front reader refused (worker/front.c). */
        http_reply_error(r, reject->status, reject->code, reject->message, NULL);
        return;
    }
    if (path == NULL)
        path = "";
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const route_t *rt = &routes[i];
        int match = rt->prefix ? strncmp(path, rt->path, strlen(rt->path)) == 0
                               : strcmp(path, rt->path) == 0;
        if (!match)
            continue;
        http_req_set_route(r, rt->id);
        if (cors_handle(r, &w->conf->cors_allow_origins, rt->allow))
            return;
        if (!(method & rt->methods)) {
            http_add_header(r, "Allow", rt->allow);
            http_reply_error(r, 405, "method_not_allowed",
                             "this method is not allowed on this path", NULL);
            return;
        }
        rt->handler(r);
        return;
    }
    (void)cors_handle(r, &w->conf->cors_allow_origins, NULL);
    http_reply_error(r, 404, "not_found", "no such route", NULL);
}

static void
drain_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    worker_t *w = arg;

    (void)fd;
    (void)what;
    log_warn("worker_shutdown_timeout reached with %d requests in flight", w->inflight);
    worker_exit(w, 0);
}

static void
start_drain(worker_t *w)
{
    struct timeval tv;

    if (w->draining)
        return;
    w->draining = 1;
    log_info("graceful stop: no new connections, %d requests in flight", w->inflight);
    for (size_t i = 0; i < w->nbound; i++)
        evhttp_del_accept_socket(w->http, w->bound[i]);
    w->nbound = 0;
    tv = clock_tv(w->conf->worker_shutdown_timeout_ms);
    w->drain_timer = evtimer_new(w->base, drain_timeout_cb, w);
    w->quiet_timer = evtimer_new(w->base, quiet_timer_cb, w);
    if (w->drain_timer == NULL || w->quiet_timer == NULL) {
        log_error("evtimer_new failed: stopping now");
        worker_exit(w, 0);
    }
    evtimer_add(w->drain_timer, &tv);
    drain_check(w);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
    worker_t *w = arg;

    (void)what;
    switch (sig) {
    case SIGQUIT:
        start_drain(w);
        break;
    case SIGTERM:
    case SIGINT:
        log_info("fast stop");
        exit(0);
    case SIGUSR1:
        worker_reopen_logs();
        break;
    default:
        break;
    }
}

void
worker_reopen_logs(void)
{
    if (log_reopen() < 0)
        log_error("reopening the logs failed, still writing to the old ones: %m");
    else
        log_info("logs reopened");
}

static void
ignored_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    (void)arg;
    signals_drain_ignored(fd);
}

struct event *
worker_ignore_signals(struct event_base *base)
{
    struct event *ev;
    sigset_t set;
    int fd;

    sigemptyset(&set);
    signals_add_ignored(&set);
    sigaddset(&set, SIGHUP);    /* the master's reload; a child has none */
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return NULL;
    fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return NULL;
    ev = event_new(base, fd, EV_READ | EV_PERSIST, ignored_cb, NULL);
    if (ev == NULL || event_add(ev, NULL) < 0) {
        if (ev != NULL)
            event_free(ev);
        close(fd);
        return NULL;
    }
    return ev;
}

void
worker_ignore_signals_free(struct event *ev)
{
    if (ev == NULL)
        return;
    close(event_get_fd(ev));
    event_free(ev);
}

int
worker_child_init(const char *title, const char *role, pid_t master)
{
    static const int sigs[] = { SIGHUP, SIGQUIT, SIGTERM, SIGINT, SIGUSR1, SIGCHLD };

    proctitle_set(title);
    log_set_role(role);
    /* The signals stay blocked, as the master had them, until the loop's
     * handlers exist (worker_signals_ready): a SIGUSR1 or SIGQUIT sent
     * during start-up waits for them instead of killing the process. */
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        signal(sigs[i], SIG_DFL);
    signal(SIGPIPE, SIG_IGN);
    /* A worker must not outlive its master (kill -9 of the master). */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != master)
        return -1;
    event_set_log_callback(log_libevent);
    return 0;
}

static const int loop_signals[WORKER_SIGNALS] = { SIGQUIT, SIGTERM, SIGINT, SIGUSR1 };

static void
signals_mask(int how)
{
    sigset_t set;

    sigemptyset(&set);
    for (size_t i = 0; i < WORKER_SIGNALS; i++)
        sigaddset(&set, loop_signals[i]);
    sigprocmask(how, &set, NULL);
}

void
worker_signals_ready(void)
{
    signals_mask(SIG_UNBLOCK);
}

void
worker_signals_done(void)
{
    signals_mask(SIG_BLOCK);
}

struct event_base *
worker_loop_new(worker_signal_fn handler, void *arg, struct event *signals[WORKER_SIGNALS],
                struct event **ignored, const char **what)
{
    struct event_config *cfg;
    struct event_base *base;

    /* With the changelist, epoll learns of a watch that is dropped and taken
     * again within one turn of the loop (evhttp's client does that around
     * every provider call, the database pool around every statement) as one
     * change, not two system calls.  Its caveat, a file descriptor shared
     * with dup(), does not arise: the worker dups none. */
    *what = "event_base_new";
    if ((cfg = event_config_new()) == NULL)
        return NULL;
    event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (base == NULL)
        return NULL;
    *what = "evsignal_new";
    for (size_t i = 0; i < WORKER_SIGNALS; i++) {
        signals[i] = evsignal_new(base, loop_signals[i], handler, arg);
        if (signals[i] == NULL || evsignal_add(signals[i], NULL) < 0)
            return NULL;        /* the process exits: nothing to unwind */
    }
    *what = "worker_ignore_signals";
    if ((*ignored = worker_ignore_signals(base)) == NULL)
        return NULL;
    worker_signals_ready();
    return base;
}

int
worker_clients_new(struct event_base *base, const conf_t *conf, const char *appname,
                   int pool_size, int queue_max, resolve_t **resolve, db_pool_t **db,
                   provider_t **provider, const char **what)
{
    *what = "resolve_new";
    if ((*resolve = resolve_new(base, conf->resolv_conf, conf->resolve_interval_ms)) == NULL)
        return PD_EXIT_FAILURE;
    /* The pool and the provider client are set up from what the conf names
     * (the database's host list, provider_ca_file): a failure there comes
     * back on every respawn, so it is fatal (common/exitcode.h).  Neither
     * connects yet: a database or provider that is down is not a failure. */
    *what = "db_pool_new";
    *db = db_pool_new(base, *resolve, conf->database, appname, pool_size, queue_max,
                      (int)conf->db_batch_max, conf->db_timeout_ms);
    if (*db == NULL)
        return PD_EXIT_FATAL;
    *what = "provider_new";
    *provider = provider_new(base, *resolve, conf->provider_url, conf->provider_ca_file,
                             conf->provider_timeout_ms);
    if (*provider == NULL)
        return PD_EXIT_FATAL;
    return PD_EXIT_OK;
}

void
worker_start_failed(const char *what, int code)
{
    if (code == PD_EXIT_FATAL)
        log_error("cannot start: %s failed, and a restart will not help", what);
    else
        log_error("cannot start: %s failed", what);
    exit(code);
}

void
worker_main(const conf_t *conf, const worker_shared_t *shared, const int *fds, size_t nfds,
            int index, pid_t master)
{
    worker_t w;
    char role[32], appname[64];
    const char *what;
    int code;

    snprintf(role, sizeof(role), "worker %d", index);
    if (worker_child_init("paymentsd: worker process", role, master) < 0)
        exit(0);
    memset(&w, 0, sizeof(w));
    w.conf = conf;
    w.shared = shared;
    w.metrics = shm_metrics_slot(shared->metrics, index);
    w.index = index;

    w.base = worker_loop_new(on_signal, &w, w.signals, &w.ignored, &what);
    if (w.base == NULL)
        goto fail;
    snprintf(appname, sizeof(appname), "paymentsd worker %d", index);
    code = worker_clients_new(w.base, conf, appname, (int)conf->db_pool_size,
                              (int)conf->db_queue_size, &w.resolve, &w.db, &w.provider, &what);
    if (code != PD_EXIT_OK)
        worker_start_failed(what, code);
    metrics_observe(w.metrics, w.db, w.provider);

    what = "webhook_keys_new";
    w.webhook_keys = webhook_keys_new(conf);
    if (w.webhook_keys == NULL)
        goto fail;

    what = "docs_new";
    w.docs = docs_new(conf->docs_root);
    if (w.docs == NULL)
        goto fail;

    /* Every connection is read by front.c first: it refuses, with a JSON
     * answer, what evhttp would refuse with an HTML page, so evhttp's own
     * limits only leave room for the requests it passes on.  Bodies are read
     * whole before a handler runs; up to the backstop the handler answers in
     * SPEC.md's order (a missing key before a large body), beyond it the
     * front reader answers 413 without buffering the body.  The stand-in of
     * a refused request repeats its target, and a chunked request gains a
     * Content-Length: hence evhttp's larger header limit. */
    w.front.max_header = (size_t)conf->max_header_size;
    w.front.max_body = conf->max_body_size;
    w.front.body_backstop = conf->max_body_size * 4 + 65536;
    w.front.answer = replay_answer;     /* cached replays, without evhttp */
    w.front.answer_arg = &w;
    what = "evhttp_new";
    w.http = httpd_new(w.base, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD
                       | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS
                       | EVHTTP_REQ_PATCH, (size_t)conf->max_header_size * 2 + 1024,
                       (size_t)w.front.body_backstop, conf->client_timeout_ms, on_request, &w);
    if (w.http == NULL)
        goto fail;
    evhttp_set_bevcb(w.http, front_bevcb, &w.front);
    evhttp_set_default_content_type(w.http, "application/json");

    what = "evhttp_accept_socket";
    w.bound = calloc(nfds, sizeof(*w.bound));
    if (w.bound == NULL)
        goto fail;
    for (size_t i = 0; i < nfds; i++) {
        w.bound[i] = evhttp_accept_socket_with_handle(w.http, fds[i]);
        if (w.bound[i] == NULL)
            goto fail;
        w.nbound++;
    }

    log_info("started");
    event_base_dispatch(w.base);
    worker_signals_done();
    evhttp_free(w.http);
    worker_exit(&w, PD_EXIT_OK);

fail:
    worker_start_failed(what, PD_EXIT_FAILURE);
}
