/*
 * housekeeper: periodic database chores, off the request path.
 *
 * One chore runs at a time; a purge that removed a full batch runs again at
 * once, otherwise the next round waits for the timer.  Several housekeepers
 * (several hosts) may run at once: the SQL functions lock with SKIP LOCKED.
 */
#include "config.h"

#include "worker/housekeeper.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "common/log.h"
#include "worker/db.h"
#include "worker/worker.h"

#define PURGE_BATCH "500"

typedef struct {
    const conf_t *conf;
    struct event_base *base;
    db_pool_t *db;
    struct event *timer;
    int busy;
    int quitting;
} housekeeper_t;

static void run_chores(housekeeper_t *h);

static void
schedule(housekeeper_t *h, int64_t ms)
{
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };

    evtimer_add(h->timer, &tv);
}

static void
purge_done(void *arg, const PGresult *res, const char *err)
{
    housekeeper_t *h = arg;
    int purged;

    h->busy = 0;
    if (h->quitting) {
        event_base_loopexit(h->base, NULL);
        return;
    }
    if (err != NULL) {
        log_warn("purging expired idempotency keys failed: %s", err);
        schedule(h, h->conf->housekeeper_interval_ms);
        return;
    }
    purged = atoi(PQgetvalue(res, 0, 0));
    if (purged > 0)
        log_info("purged %d expired idempotency keys", purged);
    /* A full batch means more are waiting. */
    schedule(h, purged == atoi(PURGE_BATCH) ? 0 : h->conf->housekeeper_interval_ms);
}

static void
run_chores(housekeeper_t *h)
{
    char ttl[64];
    const char *params[2] = { ttl, PURGE_BATCH };

    snprintf(ttl, sizeof(ttl), "%lld milliseconds", (long long)h->conf->idempotency_ttl_ms);
    if (db_call(h->db, "SELECT purge_expired_idempotency_keys($1::interval, $2::int)",
                2, params, purge_done, h) < 0) {
        schedule(h, h->conf->housekeeper_interval_ms);
        return;
    }
    h->busy = 1;
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    run_chores(arg);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
    housekeeper_t *h = arg;

    (void)what;
    if (sig == SIGUSR1) {
        if (log_reopen() < 0)
            log_error("reopening logs failed: %m");
        return;
    }
    if (sig == SIGQUIT) {
        /* Let a running chore finish its transaction's round trip. */
        h->quitting = 1;
        evtimer_del(h->timer);
        if (!h->busy)
            event_base_loopexit(h->base, NULL);
        return;
    }
    if (sig == SIGTERM || sig == SIGINT)
        exit(0);
}

void
housekeeper_main(const conf_t *conf, pid_t master)
{
    static const int sigs[] = { SIGQUIT, SIGTERM, SIGINT, SIGUSR1, SIGHUP };
    housekeeper_t h;

    if (worker_child_init("paymentsd: housekeeper process", "housekeeper", master) < 0)
        exit(0);
    memset(&h, 0, sizeof(h));
    h.conf = conf;
    h.base = event_base_new();
    if (h.base == NULL)
        exit(1);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        struct event *ev = evsignal_new(h.base, sigs[i], on_signal, &h);
        if (ev == NULL || evsignal_add(ev, NULL) < 0)
            exit(1);
    }
    h.db = db_pool_new(h.base, conf->database, "paymentsd housekeeper", 1, 16, conf->db_timeout_ms);
    h.timer = evtimer_new(h.base, timer_cb, &h);
    if (h.db == NULL || h.timer == NULL)
        exit(1);
    schedule(&h, conf->housekeeper_interval_ms);
    log_info("started");
    event_base_dispatch(h.base);
    db_pool_free(h.db);
    log_info("exiting");
    exit(0);
}
