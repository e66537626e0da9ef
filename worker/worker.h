/*
 * worker: a paymentsd worker process.
 *
 * Serves HTTP on the listening sockets inherited from the master with one
 * libevent loop; everything it does (database, provider) is asynchronous on
 * that loop.  SIGQUIT drains it: stop accepting, finish what is in flight,
 * exit 0.  SIGTERM/SIGINT exit at once.  SIGUSR1 reopens the logs.  A
 * start-up that fails exits 1, or 2 when a restart cannot help
 * (common/exitcode.h).
 */
#ifndef PD_WORKER_H
#define PD_WORKER_H

#include <stddef.h>
#include <sys/types.h>

#include "common/conf.h"
#include "shm/breaker.h"
#include "shm/cache.h"
#include "shm/metrics.h"
#include "worker/db.h"
#include "worker/provider.h"

struct event;
struct event_base;

typedef struct worker worker_t;

/* What the master maps before forking and every worker shares; it lives as
 * long as the master and survives reloads. */
typedef struct worker_shared {
    shm_metrics_t *metrics;
    shm_cache_t *cache;         /* completed and in-progress idempotency keys */
    shm_breaker_t *breaker;     /* the provider's circuit breaker */
} worker_shared_t;

/* Run worker number index until it is told to stop; never returns.  Call in
 * the child right after fork(); master is the parent's pid. */
void worker_main(const conf_t *conf, const worker_shared_t *shared, const int *fds,
                 size_t nfds, int index, pid_t master) __attribute__((noreturn));

/* Accessors for request handlers. */
const conf_t *worker_conf(const worker_t *w);
db_pool_t *worker_db(worker_t *w);
provider_t *worker_provider(worker_t *w);
struct webhook_keys;
const struct webhook_keys *worker_webhook_keys(const worker_t *w);
const worker_shared_t *worker_shared(const worker_t *w);

/* Count one event in this worker's metrics slot. */
void worker_count(worker_t *w, shm_metrics_counter_t c);

/* Ask the provider to cancel-or-refund order_id's charge (the order is FAILED
 * and PostgreSQL opened its reversal), in the background: the reply has
 * gone already, and a graceful stop waits for it.  The housekeeper retries
 * whatever this attempt does not settle. */
void worker_start_reversal(worker_t *w, const char *order_id, int64_t amount_cents,
                           const char *currency, const char *request_id);

/* 1 once a graceful stop has begun: every answer then closes its
 * connection. */
int worker_draining(const worker_t *w);

/* A request was answered with status after dur_us: count it in the request
 * metrics (route, method as http_req_method names it, status class,
 * duration), publish the gauges, and restart a draining worker's quiet
 * period. */
void worker_answered(worker_t *w, shm_metrics_route_t route, const char *method, int status,
                     int64_t dur_us);

/* Publish this worker's database pool gauges to its metrics slot. */
void worker_update_gauges(worker_t *w);

/* Shared set-up of a child process: role in logs and ps, signals back to
 * their defaults but still blocked, exit when the master dies.  Returns 0,
 * or -1 when the master is already gone. */
int worker_child_init(const char *title, const char *role, pid_t master)
    __attribute__((warn_unused_result));

/* The signals a child handles in its loop: SIGQUIT, SIGTERM, SIGINT, SIGUSR1. */
#define WORKER_SIGNALS 4

/* A handler of one of them: libevent's event_callback_fn (evutil_socket_t
 * is an int on Linux), spelled out so this header needs no libevent one. */
typedef void (*worker_signal_fn)(int sig, short what, void *arg);

/* The start of a child's event loop: a new base, handler(sig, arg) added
 * for each of the WORKER_SIGNALS (the events into signals[]), the ignored
 * signals read in the loop (into *ignored: worker_ignore_signals), then the
 * signals unblocked (worker_signals_ready).  Returns the base, or NULL with
 * *what naming the step that failed (a lack of memory or descriptors). */
struct event_base *worker_loop_new(worker_signal_fn handler, void *arg,
                                   struct event *signals[WORKER_SIGNALS], struct event **ignored,
                                   const char **what) __attribute__((warn_unused_result));

/* The clients of a child's loop, set up from what conf names: the resolver,
 * then the database pool (appname, pool_size connections, up to queue_max
 * queries waiting) and the provider client, which both use it and connect
 * later.  Returns PD_EXIT_OK, or the code to exit with (common/exitcode.h),
 * *what naming the step that failed. */
int worker_clients_new(struct event_base *base, const conf_t *conf, const char *appname,
                       int pool_size, int queue_max, resolve_t **resolve, db_pool_t **db,
                       provider_t **provider, const char **what)
    __attribute__((warn_unused_result));

/* A child that cannot start: log which step failed and exit with code,
 * PD_EXIT_FATAL when a restart will not help. */
void worker_start_failed(const char *what, int code) __attribute__((noreturn));

/* A read event on a signalfd of the signals that a child gives no meaning
 * (common/signals.h, and SIGHUP): they stay blocked for the process's life,
 * and each one that arrives is logged and dropped in base's loop.  Returns
 * the event (free it with worker_ignore_signals_free), or NULL. */
struct event *worker_ignore_signals(struct event_base *base)
    __attribute__((warn_unused_result));
void worker_ignore_signals_free(struct event *ev);

/* SIGUSR1 in a child: reopen the logs (after a rotation) and say so. */
void worker_reopen_logs(void);

/* Unblock the signals once the loop's evsignal handlers are added; signals
 * that arrived meanwhile are delivered to them then. */
void worker_signals_ready(void);

/* Block them again once the loop has ended: a SIGUSR1 or SIGHUP meant for
 * a process that is tearing down (libevent has restored the default
 * dispositions) must not kill it. */
void worker_signals_done(void);

#endif
