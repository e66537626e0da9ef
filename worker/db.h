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

#include <libpq-fe.h>

#include "common/resolve.h"

struct event_base;

typedef struct db_pool db_pool_t;

/*
 * Result of a call.  On success err is NULL and res holds the rows: all of
 * them for a plain call (row is 0), the call's own row `row` for a batched
 * call.  On failure err says why; res is the server's error result (read its
 * SQLSTATE with PQresultErrorField) or NULL when the connection failed or the
 * call timed out.  A call succeeds only if its transaction committed.  res
 * belongs to the pool and is cleared when the callback returns.  The callback
 * may issue further calls.
 */
typedef void (*db_cb_t)(void *arg, const PGresult *res, int row, const char *err);

/* The most calls one batch may hold (db_batch_max is capped to it). */
#define DB_BATCH_MAX_LIMIT 1000

/*
 * A kind of call that is sent in batches (group commit).  sql takes nparams
 * parameters, each an array holding that parameter of every call of the
 * batch in order (cast them: "$1::text[]"), runs them in one transaction and
 * returns one row per call whose first column is the call's 1-based ordinal.
 * A static constant: the pool compares kinds by address.
 */
typedef struct db_batch_kind {
    const char *sql;
    int nparams;
} db_batch_kind_t;

/*
 * Create a pool of size connections to conninfo (a libpq URI or key=value
 * string) and start connecting.  At most queue_max calls wait for a free
 * connection; at most batch_max calls of one kind go out as one batch; a
 * call that has not completed within timeout_ms fails (and its connection is
 * replaced).  Every host name in conninfo's host list (up to 16 hosts) is
 * followed with resolve (the process's resolver, kept by the caller until
 * db_pool_free): connections wait for the first answers and connect to the
 * latest addresses, skipping a name that resolves to nothing.  Returns NULL
 * on allocation failure, or when conninfo names a host and resolve is NULL
 * (or lists more than 16 hosts).
 */
db_pool_t *db_pool_new(struct event_base *base, resolve_t *resolve, const char *conninfo,
                       const char *application_name, int size, int queue_max,
                       int batch_max, int64_t timeout_ms) __attribute__((warn_unused_result));

/* Close every connection; calls still queued or running fail with
 * "shutting down" before this returns (a call their callbacks make is
 * refused). */
void db_pool_free(db_pool_t *pool);

/*
 * Run sql with nparams text parameters (NULL entries are SQL NULL; the
 * strings are copied).  sql must stay valid until the callback (a literal).
 * Returns 0 when the call was accepted: cb will be called exactly once.
 * Returns -1 without calling cb when the database is unreachable (no live
 * connection and the last attempt failed) or the queue is full: answer 503.
 * While a statement younger than 20 ms runs, a call waits for it even when
 * another connection is idle, to go in the next batch (see dispatch in
 * db.c).
 */
int db_call(db_pool_t *pool, const char *sql, int nparams,
            const char *const *params, db_cb_t cb, void *arg)
    __attribute__((warn_unused_result));

/*
 * Run a call of kind with kind->nparams text parameters (copied; NULL is SQL
 * NULL), in a batch with the other calls of its kind that wait when a
 * connection frees: one round trip and one transaction for all of them.
 * cb gets this call's row, or the batch's failure.  Returns as db_call.
 */
int db_call_batched(db_pool_t *pool, const db_batch_kind_t *kind, const char *const *params,
                    db_cb_t cb, void *arg) __attribute__((warn_unused_result));

/* Non-zero when a failed call may succeed if retried (connection lost,
 * timeout, server overloaded or shutting down, serialization failure): the
 * request deserves 503 rather than 500.  res is the call's result or NULL. */
int db_error_is_transient(const PGresult *res);

/* Load and work done, for /metrics. */
typedef struct {
    int busy;                   /* statements running */
    int queued;                 /* calls waiting */
    int connected;              /* live connections */
    uint64_t statements;        /* statements sent so far (a batch is one) */
    uint64_t calls;             /* calls they carried */
} db_pool_stats_t;

void db_pool_stats(const db_pool_t *pool, db_pool_stats_t *out);

/* Told of the pool's work as it happens (for metrics histograms): every
 * statement sent, with the number of calls it carries (1, or a batch), and
 * every call as it is answered, just before its callback, with whether it
 * committed and the microseconds since db_call (queueing included). */
typedef struct {
    void (*statement)(void *arg, int ncalls);
    void (*call)(void *arg, int committed, int64_t dur_us);
    void *arg;
} db_observer_t;

/* Set the pool's observer (copied); NULL clears it. */
void db_pool_set_observer(db_pool_t *pool, const db_observer_t *o);

#endif
