/*
 * db: a worker's pool of asynchronous PostgreSQL connections.
 *
 * The unit of work is a call (one SQL statement with its parameters) and a
 * callback, not a connection lent to a request: calls wait in a bounded FIFO
 * queue and run on whichever connection is free.  Every connection is
 * non-blocking and watched by the worker's event loop, so no call ever blocks
 * the worker.  Broken connections reconnect in the background with back-off.
 * Single-threaded: use from the event loop that owns the pool.
 */
#ifndef PD_DB_H
#define PD_DB_H

#include <stdint.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "worker/resolve.h"

typedef struct db_pool db_pool_t;

/*
 * Result of a call.  On success err is NULL and res holds the rows.  On
 * failure err says why; res is the server's error result (read its SQLSTATE
 * with PQresultErrorField) or NULL when the connection failed or the call
 * timed out.  res belongs to the pool and is cleared when the callback
 * returns.  The callback may issue further calls.
 */
typedef void (*db_cb_t)(void *arg, const PGresult *res, const char *err);

/*
 * Create a pool of size connections to conninfo (a libpq URI or key=value
 * string) and start connecting.  At most queue_max calls wait for a free
 * connection; a call that has not completed within timeout_ms fails (and its
 * connection is replaced).  A single host name in conninfo is followed with
 * resolve (the process's resolver, kept by the caller until db_pool_free):
 * connections wait for its first address and connect to its latest.
 * Returns NULL on allocation failure, or when conninfo names a host and
 * resolve is NULL.
 */
db_pool_t *db_pool_new(struct event_base *base, resolve_t *resolve, const char *conninfo,
                       const char *application_name, int size, int queue_max,
                       int64_t timeout_ms) __attribute__((warn_unused_result));

/* Close every connection; calls still queued or running fail with
 * "shutting down" before this returns. */
void db_pool_free(db_pool_t *pool);

/*
 * Run sql with nparams text parameters (NULL entries are SQL NULL; the
 * strings are copied).  sql must stay valid until the callback (a literal).
 * Returns 0 when the call was accepted: cb will be called exactly once.
 * Returns -1 without calling cb when the database is unreachable (no live
 * connection and the last attempt failed) or the queue is full: answer 503.
 */
int db_call(db_pool_t *pool, const char *sql, int nparams,
            const char *const *params, db_cb_t cb, void *arg)
    __attribute__((warn_unused_result));

/* Non-zero when a failed call may succeed if retried (connection lost,
 * timeout, server overloaded or shutting down, serialization failure): the
 * request deserves 503 rather than 500.  res is the call's result or NULL. */
int db_error_is_transient(const PGresult *res);

/* Current load, for /metrics: calls running, calls waiting, live
 * connections. */
void db_pool_stats(const db_pool_t *pool, int *busy, int *queued, int *connected);

#endif
