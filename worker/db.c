/*
 * db: asynchronous libpq connection pool driven by libevent.
 *
 * Each connection is a small state machine:
 *
 *   DOWN --connect--> CONNECTING --PQconnectPoll ok--> IDLE <--> BUSY
 *     ^                    |                            |         |
 *     +---- back-off <-----+------------ error ---------+---------+
 *
 * IDLE connections stay watched for reading, so a server that goes away is
 * noticed at once rather than by the next request.  A call runs with
 * PQsendQueryParams; results are gathered with PQconsumeInput/PQgetResult
 * only when the socket is readable, so nothing here ever waits.
 *
 * Calls that find no idle connection wait in a FIFO queue.  When no
 * connection is up and the last attempt failed, db_call() refuses at once:
 * a request must get its 503 quickly rather than hang.
 *
 * Group commit.  A batched call (db_call_batched) has a kind; when a
 * connection frees and the head of the queue is such a call, every waiting
 * call of its kind (up to batch_max, in queue order) goes with it as one
 * statement: each parameter becomes an array with one element per call,
 * and the kind's SQL function returns one row per call, led by its 1-based
 * ordinal.  One round trip and one commit serve the whole batch; a batch is
 * whatever waits when a connection frees, so there is no timer and an idle
 * server adds no latency.  The calls of one statement succeed or fail
 * together: a failed COMMIT fails every one of them.  The pool runs one
 * statement at a time while it is young (DB_HOLD_MS): the calls that arrive
 * meanwhile wait for it, even with a connection idle, and go as the next
 * batch; the other connections take over only from a slow statement.
 */
#include "config.h"

#include "worker/db.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "common/clock.h"
#include "common/log.h"

/* Reconnect back-off.  The cap is short because every checkout gets 503
 * while no connection is up: a database that accepts connections again must
 * be serving within half a second, and a refused connect costs nothing. */
#define DB_BACKOFF_MIN_MS 50
#define DB_BACKOFF_MAX_MS 250

/* Entries of a host list that follow_hosts takes (libpq has no limit). */
#define DB_HOSTS_MAX 16

/* How long a running statement holds the waiting calls back (dispatch). */
#define DB_HOLD_MS 20

typedef struct db_call {
    TAILQ_ENTRY(db_call) next;  /* in the queue, then in its connection's flight */
    db_pool_t *pool;
    const char *sql;            /* plain calls */
    const db_batch_kind_t *kind; /* batched calls */
    int nparams;
    char **params;              /* one allocation with the call */
    db_cb_t cb;
    void *arg;
    int64_t deadline_ms;
    int64_t queued_us;          /* when db_call took it, for the observer */
    int answered;               /* its row was delivered */
} db_call_t;

TAILQ_HEAD(db_calls, db_call);

typedef enum { DB_DOWN, DB_CONNECTING, DB_IDLE, DB_BUSY } db_state_t;

/* One entry of the conninfo's host list (see follow_hosts). */
typedef struct db_host {
    char *host;                 /* as written: a name, an address or a socket directory */
    char *port;                 /* its port as written, or NULL for libpq's default */
    resolve_name_t *name;       /* followed when host is a name, else NULL */
} db_host_t;

typedef struct db_conn {
    db_pool_t *pool;
    PGconn *pg;
    db_state_t state;
    struct db_calls flight;     /* the running calls when BUSY (a batch, or one) */
    int nflight;
    PGresult *result;           /* their outcome so far, until the last result arrives */
    struct event io;
    struct event timer;         /* back-off when DOWN, deadline otherwise */
    int io_added;
    int64_t backoff_ms;
    int64_t sent_ms;            /* when the flight was sent (BUSY) */
    int index;
} db_conn_t;

struct db_pool {
    struct event_base *base;
    char *conninfo;
    char *application_name;
    char statement_timeout[64];
    db_host_t *hosts;           /* the host list when it names a host, or NULL (follow_hosts) */
    int nhosts;
    char *target[3];            /* host, hostaddr and port lists of the next connection */
    int64_t timeout_ms;
    int size;
    db_conn_t *conns;
    struct db_calls queue;
    int queued;
    int queue_max;
    int batch_max;              /* calls of one kind sent as one statement */
    uint64_t statements, calls; /* sent so far, for db_pool_stats */
    int up;                     /* connections IDLE or BUSY */
    int busy;
    int last_attempt_failed;
    int closing;                /* db_pool_free has begun: no new calls */
    struct event queue_timer;   /* expires the oldest waiting call */
    struct event hold_timer;    /* ends a hold (see dispatch) */
    db_observer_t observer;
};

static void conn_connect(db_conn_t *c);
static void conn_io_cb(evutil_socket_t fd, short what, void *arg);
static void dispatch(db_pool_t *p);
static int targets(db_pool_t *p);

/* libpq's message as one string without its final newline (into buf):
 * callers put it inside their own log lines.  Its inner newlines (DETAIL,
 * HINT, CONTEXT) stay; the log escapes them, so a line stays one line. */
static const char *
pq_message(char *buf, size_t len, const char *msg)
{
    size_t n;

    snprintf(buf, len, "%s", msg != NULL ? msg : "");
    n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    return buf;
}

/* libpq prints server notices (e.g. "terminating connection due to
 * administrator command") on stderr by default: route them to our log. */
static void
notice_processor(void *arg, const char *message)
{
    char buf[1024];

    (void)arg;
    log_warn("database: %s", pq_message(buf, sizeof(buf), message));
}

/* Give the call its answer (the observer hears of it first). */
static void
call_answer(db_call_t *call, const PGresult *res, int row, const char *err)
{
    const db_observer_t *o = &call->pool->observer;

    if (o->call != NULL)
        o->call(o->arg, err == NULL, clock_mono_us() - call->queued_us);
    call->cb(call->arg, res, row, err);
}

/* Give the call its answer now, then free it (the call is on no list). */
static void
call_answer_free(db_call_t *call, const PGresult *res, int row, const char *err)
{
    call_answer(call, res, row, err);
    free(call);
}

/* End every call of the connection's flight with err (res may be NULL). */
static void
flight_fail(struct db_calls *flight, const PGresult *res, const char *err)
{
    while (!TAILQ_EMPTY(flight)) {
        db_call_t *call = TAILQ_FIRST(flight);

        TAILQ_REMOVE(flight, call, next);
        call_answer_free(call, res, 0, err);
    }
}

/* (Re)watch the connection's socket; the socket may change while
 * connecting, so the event is assigned afresh each time. */
static void
conn_watch(db_conn_t *c, short what)
{
    if (c->io_added)
        event_del(&c->io);
    event_assign(&c->io, c->pool->base, PQsocket(c->pg), what | EV_PERSIST, conn_io_cb, c);
    event_add(&c->io, NULL);
    c->io_added = 1;
}

static void
conn_arm_timer(db_conn_t *c, int64_t ms)
{
    struct timeval tv = clock_tv(ms);

    evtimer_add(&c->timer, &tv);
}

/* Move the connection's running calls to *flight, for the caller to end,
 * and leave it none. */
static void
conn_take_flight(db_conn_t *c, struct db_calls *flight)
{
    TAILQ_INIT(flight);
    TAILQ_CONCAT(flight, &c->flight, next);
    c->nflight = 0;
}

/* Drop the connection, fail its call, and schedule a reconnect. */
static void
conn_fail(db_conn_t *c, const char *why)
{
    db_pool_t *p = c->pool;
    struct db_calls flight;
    int was_up = (c->state == DB_IDLE || c->state == DB_BUSY);
    char msg[1024];

    pq_message(msg, sizeof(msg), why);
    if (c->io_added) {
        event_del(&c->io);
        c->io_added = 0;
    }
    evtimer_del(&c->timer);
    if (c->pg != NULL) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    if (was_up)
        p->up--;
    if (c->state == DB_BUSY)
        p->busy--;
    if (c->state == DB_CONNECTING || !was_up)
        p->last_attempt_failed = 1;
    for (int i = 0; c->state == DB_CONNECTING && i < p->nhosts; i++) {
        if (p->hosts[i].name != NULL)
            resolve_name_retry(p->hosts[i].name);       /* the name may have moved */
    }
    if (c->result != NULL) {
        PQclear(c->result);
        c->result = NULL;
    }
    c->state = DB_DOWN;
    conn_take_flight(c, &flight);
    log_warn("database connection %d: %s; reconnecting in %lld ms",
             c->index, msg, (long long)c->backoff_ms);
    conn_arm_timer(c, c->backoff_ms);
    c->backoff_ms = c->backoff_ms * 2 > DB_BACKOFF_MAX_MS ? DB_BACKOFF_MAX_MS : c->backoff_ms * 2;

    flight_fail(&flight, NULL, msg);
    /* Nothing can serve the waiting calls soon: fail them now. */
    if (p->up == 0 && p->last_attempt_failed) {
        while (!TAILQ_EMPTY(&p->queue)) {
            db_call_t *q = TAILQ_FIRST(&p->queue);
            TAILQ_REMOVE(&p->queue, q, next);
            p->queued--;
            call_answer_free(q, NULL, 0, "database unavailable");
        }
    }
    dispatch(p);                /* the calls this flight held back */
}

/*
 * The parameters of a batch: parameter j of every call in the flight, in
 * order, as one array literal ({"a","b",NULL}; quotes and backslashes
 * escaped).  One allocation; NULL when out of memory.
 */
static char **
batch_params(const db_conn_t *c, int nparams)
{
    size_t need = (size_t)nparams * (sizeof(char *) + 3);
    db_call_t *call;
    char **out, *dst;

    TAILQ_FOREACH(call, &c->flight, next) {
        for (int j = 0; j < nparams; j++)
            need += call->params[j] ? 2 * strlen(call->params[j]) + 3 : 5;
    }
    out = malloc(need);
    if (out == NULL)
        return NULL;
    dst = (char *)(out + nparams);
    for (int j = 0; j < nparams; j++) {
        out[j] = dst;
        *dst++ = '{';
        TAILQ_FOREACH(call, &c->flight, next) {
            const char *v = call->params[j];

            if (call != TAILQ_FIRST(&c->flight))
                *dst++ = ',';
            if (v == NULL) {
                memcpy(dst, "NULL", 4);
                dst += 4;
                continue;
            }
            *dst++ = '"';
            for (; *v != '\0'; v++) {
                if (*v == '"' || *v == '\\')
                    *dst++ = '\\';
                *dst++ = *v;
            }
            *dst++ = '"';
        }
        *dst++ = '}';
        *dst++ = '\0';
    }
    return out;
}

/* Send the connection's flight: one plain call, or a batch of one kind. */
static void
conn_send(db_conn_t *c)
{
    db_pool_t *p = c->pool;
    db_call_t *first = TAILQ_FIRST(&c->flight), *call;
    int64_t deadline = first->deadline_ms;
    char **params = first->params;
    int rc, sent;

    c->state = DB_BUSY;
    c->sent_ms = clock_mono_ms();
    p->busy++;
    if (first->kind != NULL) {
        params = batch_params(c, first->kind->nparams);
        if (params == NULL) {
            conn_fail(c, "out of memory");
            return;
        }
    }
    sent = PQsendQueryParams(c->pg, first->kind ? first->kind->sql : first->sql, first->nparams,
                             NULL, (const char *const *)params, NULL, NULL, 0);
    if (params != first->params)
        free(params);           /* libpq has copied them */
    if (!sent) {
        conn_fail(c, PQerrorMessage(c->pg));
        return;
    }
    rc = PQflush(c->pg);
    if (rc < 0) {
        conn_fail(c, PQerrorMessage(c->pg));
        return;
    }
    conn_watch(c, rc == 1 ? EV_READ | EV_WRITE : EV_READ);
    p->statements++;
    p->calls += (uint64_t)c->nflight;
    if (p->observer.statement != NULL)
        p->observer.statement(p->observer.arg, c->nflight);
    TAILQ_FOREACH(call, &c->flight, next) {
        if (call->deadline_ms < deadline)
            deadline = call->deadline_ms;
    }
    conn_arm_timer(c, deadline - clock_mono_ms());
}

static int
result_is_error(const PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);

    return st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK;
}

static void
conn_became_idle(db_conn_t *c)
{
    c->state = DB_IDLE;
    evtimer_del(&c->timer);
    conn_watch(c, EV_READ);
    dispatch(c->pool);
}

/*
 * Read what the server sent for the running call; finish it when all of its
 * results are in.  A call is one statement in an implicit transaction: its
 * rows arrive before the COMMIT, and the COMMIT can still fail (a deferred
 * constraint trigger, a cancel, a serialization failure) with an error
 * result after them.  So the call's outcome is its rows only when no result
 * is an error; any error result replaces them: a call whose transaction did
 * not commit never reports success.
 */
static void
conn_read_results(db_conn_t *c)
{
    db_pool_t *p = c->pool;
    struct db_calls flight;
    db_call_t *call, *byord[DB_BATCH_MAX_LIMIT];
    PGresult *r;
    const char *err = NULL;
    char errbuf[2048];
    int n = 0;

    for (;;) {
        if (PQisBusy(c->pg))
            return;             /* the rest arrives with a later read */
        r = PQgetResult(c->pg);
        if (r == NULL)
            break;
        if (c->result == NULL) {
            c->result = r;
        } else if (result_is_error(r) && !result_is_error(c->result)) {
            PQclear(c->result);
            c->result = r;
        } else {
            PQclear(r);         /* the first error is the one that matters */
        }
    }
    r = c->result;
    c->result = NULL;
    conn_take_flight(c, &flight);
    p->busy--;
    if (r == NULL)
        err = "no result";
    else if (result_is_error(r))
        err = pq_message(errbuf, sizeof(errbuf), PQresultErrorMessage(r));
    conn_became_idle(c);        /* before the callbacks: they may call again */

    call = TAILQ_FIRST(&flight);
    if (err != NULL || call->kind == NULL) {
        /* A plain call gets its rows; a failed statement fails every call
         * in it, since none of them committed. */
        flight_fail(&flight, r, err);
        PQclear(r);
        return;
    }
    TAILQ_FOREACH(call, &flight, next)
        byord[n++] = call;
    /* A batch: row i belongs to the call whose ordinal it names. */
    for (int i = 0; i < PQntuples(r); i++) {
        long ord = strtol(PQgetvalue(r, i, 0), NULL, 10);

        if (ord < 1 || ord > n || byord[ord - 1]->answered)
            continue;
        byord[ord - 1]->answered = 1;
        call_answer(byord[ord - 1], r, i, NULL);
    }
    while (!TAILQ_EMPTY(&flight)) {
        call = TAILQ_FIRST(&flight);
        TAILQ_REMOVE(&flight, call, next);
        if (!call->answered)
            call_answer(call, NULL, 0, "the batch returned no row for this call");
        free(call);
    }
    PQclear(r);
}

static void
conn_io_cb(evutil_socket_t fd, short what, void *arg)
{
    db_conn_t *c = arg;

    (void)fd;
    if (c->state == DB_CONNECTING) {
        conn_connect(c);
        return;
    }
    if (what & EV_READ) {
        if (!PQconsumeInput(c->pg)) {
            conn_fail(c, PQerrorMessage(c->pg));
            return;
        }
    }
    if (c->state == DB_IDLE) {
        PGnotify *n;
        /* Unsolicited input while idle: notices, or the server closing. */
        while ((n = PQnotifies(c->pg)) != NULL)
            PQfreemem(n);
        if (PQstatus(c->pg) == CONNECTION_BAD)
            conn_fail(c, "server closed the connection");
        return;
    }
    if (c->state == DB_BUSY) {
        int rc = PQflush(c->pg);
        if (rc < 0) {
            conn_fail(c, PQerrorMessage(c->pg));
            return;
        }
        if (rc == 0 && (what & EV_WRITE))
            conn_watch(c, EV_READ);
        conn_read_results(c);
    }
}

static void
conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    db_conn_t *c = arg;

    (void)fd;
    (void)what;
    if (c->state == DB_DOWN)
        conn_connect(c);
    else if (c->state == DB_CONNECTING)
        conn_fail(c, "connect timed out");
    else if (c->state == DB_BUSY)
        conn_fail(c, "query timed out");
}

/* Start connecting, or advance a connection attempt. */
static void
conn_connect(db_conn_t *c)
{
    db_pool_t *p = c->pool;
    PostgresPollingStatusType st;

    if (c->state == DB_DOWN) {
        int ready = targets(p);
        const char *keys[] = { "dbname", "application_name", "options", "host", "hostaddr",
                               "port", NULL };
        const char *vals[] = { p->conninfo, p->application_name, p->statement_timeout,
                               p->target[0], p->target[1], p->target[2], NULL };

        if (ready == 0)
            return;             /* host_resolved connects it */
        if (ready < 0) {
            conn_fail(c, "no database host name resolves");
            return;
        }
        if (p->nhosts == 0 || p->target[2][0] == '\0')
            keys[p->nhosts == 0 ? 3 : 5] = NULL;        /* libpq's own, or its default port */
        c->pg = PQconnectStartParams(keys, vals, 1);
        c->state = DB_CONNECTING;
        if (c->pg == NULL) {
            conn_fail(c, "out of memory");
            return;
        }
        if (PQstatus(c->pg) == CONNECTION_BAD) {
            conn_fail(c, PQerrorMessage(c->pg));
            return;
        }
        if (PQsetnonblocking(c->pg, 1) != 0) {
            conn_fail(c, PQerrorMessage(c->pg));
            return;
        }
        PQsetNoticeProcessor(c->pg, notice_processor, NULL);
        conn_arm_timer(c, p->timeout_ms);
        st = PGRES_POLLING_WRITING;
    } else {
        st = PQconnectPoll(c->pg);
    }
    switch (st) {
    case PGRES_POLLING_READING:
        conn_watch(c, EV_READ);
        break;
    case PGRES_POLLING_WRITING:
        conn_watch(c, EV_WRITE);
        break;
    case PGRES_POLLING_OK:
        c->backoff_ms = DB_BACKOFF_MIN_MS;
        p->up++;
        p->last_attempt_failed = 0;
        log_debug("database connection %d ready", c->index);
        conn_became_idle(c);
        break;
    default:
        conn_fail(c, PQerrorMessage(c->pg));
        break;
    }
}

/* Until when a running statement holds the waiting calls back: the end of
 * the hold of the youngest BUSY connection, or 0 when none holds. */
static int64_t
hold_until(const db_pool_t *p, int64_t now)
{
    int64_t until = 0;

    for (int i = 0; i < p->size; i++) {
        const db_conn_t *c = &p->conns[i];
        int64_t end = c->sent_ms + DB_HOLD_MS;

        if (c->state == DB_BUSY && end > now && end > until)
            until = end;
    }
    return until;
}

static void
hold_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    dispatch(arg);
}

/* Hand waiting calls to an idle connection: the head of the queue, and with
 * a batched call every waiting call of its kind, up to batch_max.
 *
 * One statement at a time: while a statement younger than DB_HOLD_MS runs,
 * the waiting calls wait for it, even with a connection idle, so that they
 * go together as the next batch.  PostgreSQL's cost is mostly per statement,
 * so two half batches side by side cost it almost twice one whole batch.
 * The other connections serve only while every running statement is older
 * than the hold: a slow one (a lock wait, a stalled disk) stalls the rest
 * for DB_HOLD_MS at most. */
static void
dispatch(db_pool_t *p)
{
    /* A call with almost no time left would only time out on the wire and
     * cost a healthy connection (a query timeout drops it): fail it here. */
    int64_t floor_ms = p->timeout_ms / 10 < 50 ? p->timeout_ms / 10 : 50;

    for (int i = 0; i < p->size && !TAILQ_EMPTY(&p->queue); i++) {
        db_conn_t *c = &p->conns[i];
        db_call_t *call, *q, *tmp;
        int64_t now = clock_mono_ms(), hold;

        if (c->state != DB_IDLE)
            continue;
        hold = hold_until(p, now);
        if (hold != 0) {
            struct timeval tv = clock_tv(hold - now);

            evtimer_add(&p->hold_timer, &tv);
            break;
        }
        call = TAILQ_FIRST(&p->queue);
        TAILQ_REMOVE(&p->queue, call, next);
        p->queued--;
        if (call->deadline_ms - now < floor_ms) {
            call_answer_free(call, NULL, 0, "timed out waiting for a database connection");
            i--;                /* this connection is still idle */
            continue;
        }
        TAILQ_INSERT_TAIL(&c->flight, call, next);
        c->nflight = 1;
        for (q = TAILQ_FIRST(&p->queue); call->kind != NULL && q != NULL
             && c->nflight < p->batch_max; q = tmp) {
            tmp = TAILQ_NEXT(q, next);
            if (q->kind != call->kind || q->deadline_ms - now < floor_ms)
                continue;
            TAILQ_REMOVE(&p->queue, q, next);
            p->queued--;
            TAILQ_INSERT_TAIL(&c->flight, q, next);
            c->nflight++;
        }
        conn_send(c);
    }
    if (TAILQ_EMPTY(&p->queue))
        evtimer_del(&p->queue_timer);
}

static void
queue_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    db_pool_t *p = arg;
    int64_t now = clock_mono_ms();

    (void)fd;
    (void)what;
    while (!TAILQ_EMPTY(&p->queue) && TAILQ_FIRST(&p->queue)->deadline_ms <= now) {
        db_call_t *call = TAILQ_FIRST(&p->queue);
        TAILQ_REMOVE(&p->queue, call, next);
        p->queued--;
        call_answer_free(call, NULL, 0, "timed out waiting for a database connection");
    }
    if (!TAILQ_EMPTY(&p->queue)) {
        struct timeval tv = clock_tv(TAILQ_FIRST(&p->queue)->deadline_ms - now);
        evtimer_add(&p->queue_timer, &tv);
    }
}

/* The host name's first resolution ended, or its address changed:
 * connections waiting for an address connect now. */
static void
host_resolved(void *arg)
{
    db_pool_t *p = arg;

    for (int i = 0; i < p->size; i++) {
        db_conn_t *c = &p->conns[i];

        if (c->state == DB_DOWN && !evtimer_pending(&c->timer, NULL))
            conn_connect(c);
    }
}

/* Append item to the comma-separated list dst (its first item when first). */
static void
list_add(char *dst, const char *item, int first)
{
    if (!first)
        strcat(dst, ",");
    strcat(dst, item);
}

/*
 * The host, hostaddr and port lists of the next connection, in p->target:
 * every entry of the host list, a followed name with its latest address as
 * hostaddr, an address or a socket directory with an empty hostaddr (libpq
 * then uses the host itself, which needs no lookup).  A name that resolves
 * to nothing is left out, so the others are still tried.  1 when ready, 0
 * while a name waits for its first answer, -1 when no entry is left.
 */
static int
targets(db_pool_t *p)
{
    int kept = 0;

    if (p->nhosts == 0)
        return 1;
    p->target[0][0] = p->target[1][0] = p->target[2][0] = '\0';
    for (int i = 0; i < p->nhosts; i++) {
        const db_host_t *h = &p->hosts[i];
        const char *addr = h->name != NULL ? resolve_name_addr(h->name) : "";

        if (addr == NULL) {
            if (resolve_name_pending(h->name))
                return 0;
            continue;
        }
        list_add(p->target[0], h->host, kept == 0);
        list_add(p->target[1], addr, kept == 0);
        if (h->port != NULL)
            list_add(p->target[2], h->port, kept == 0);
        kept++;
    }
    return kept > 0 ? 1 : -1;
}

/* Split list at commas into at most max items (in place); their count. */
static int
list_split(char *list, char **items, int max)
{
    int n = 0;

    for (char *s = list; n < max; s++) {
        items[n++] = s;
        s = strchr(s, ',');
        if (s == NULL)
            break;
        *s = '\0';
    }
    return n;
}

/*
 * libpq resolves a host name with a blocking getaddrinfo() when it starts
 * or moves on to that host, on every reconnect, for each name of a host
 * list (host=a,b with target_session_attrs=read-write, for a failover
 * pair).  So every name of the host list is followed by the resolver
 * (common/resolve.c), and each connection is started with the lists that
 * targets() builds: libpq gets a numeric hostaddr for every name and still
 * uses the name for TLS and .pgpass.  Lists of addresses and socket
 * directories, a given hostaddr, or a port list that does not match the
 * hosts are left to libpq as written (it needs no lookup, or reports the
 * error).  0, or -1 when a name needs a resolver and none was given (or
 * allocation failed).
 */
static int
follow_hosts(db_pool_t *p, resolve_t *resolve)
{
    PQconninfoOption *opts = PQconninfoParse(p->conninfo, NULL), *o;
    char *host = NULL, *port = NULL, *hosts[DB_HOSTS_MAX], *ports[DB_HOSTS_MAX];
    const char *hostaddr = NULL;
    int nhost, nport = 0, names = 0, rc = -1;

    if (opts == NULL)
        return 0;               /* each connect reports the error */
    for (o = opts; o->keyword != NULL; o++) {
        if (strcmp(o->keyword, "host") == 0 && o->val != NULL && o->val[0] != '\0')
            host = strdup(o->val);
        else if (strcmp(o->keyword, "port") == 0 && o->val != NULL && o->val[0] != '\0')
            port = strdup(o->val);
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
    }
    if (host == NULL || (hostaddr != NULL && hostaddr[0] != '\0')) {
        rc = 0;
        goto done;
    }
    nhost = list_split(host, hosts, DB_HOSTS_MAX);
    if (port != NULL)
        nport = list_split(port, ports, DB_HOSTS_MAX);
    for (int i = 0; i < nhost; i++)
        names += hosts[i][0] != '/' && hosts[i][0] != '\0' && !resolve_is_address(hosts[i]);
    if (names == 0 || (nport > 1 && nport != nhost)) {
        rc = 0;                 /* nothing to look up, or libpq reports the error */
        goto done;
    }
    if (strchr(hosts[nhost - 1], ',') != NULL) {
        log_error("database: more than %d hosts in the host list", DB_HOSTS_MAX);
        goto done;
    }
    if (resolve == NULL) {
        log_error("database host %s is a name, and no resolver was given", host);
        goto done;
    }
    p->target[0] = malloc(3 * (strlen(p->conninfo) + (size_t)nhost * 48 + 1));
    p->hosts = calloc((size_t)nhost, sizeof(*p->hosts));
    if (p->target[0] == NULL || p->hosts == NULL)
        goto done;
    p->target[1] = p->target[0] + strlen(p->conninfo) + (size_t)nhost * 48 + 1;
    p->target[2] = p->target[1] + strlen(p->conninfo) + (size_t)nhost * 48 + 1;
    for (p->nhosts = 0; p->nhosts < nhost; p->nhosts++) {
        db_host_t *h = &p->hosts[p->nhosts];
        const char *hp = hosts[p->nhosts];

        h->host = strdup(hp);
        h->port = nport == 0 ? NULL : strdup(ports[nport == 1 ? 0 : p->nhosts]);
        if (hp[0] != '/' && hp[0] != '\0' && !resolve_is_address(hp))
            h->name = resolve_name_new(resolve, hp, "database", host_resolved, p);
        if (h->host == NULL || (nport > 0 && h->port == NULL)
            || (h->name == NULL && hp[0] != '/' && hp[0] != '\0' && !resolve_is_address(hp))) {
            p->nhosts++;
            goto done;
        }
    }
    rc = 0;
done:
    free(host);
    free(port);
    PQconninfoFree(opts);
    return rc;
}

/* Free what follow_hosts made. */
static void
hosts_free(db_pool_t *p)
{
    for (int i = 0; i < p->nhosts; i++) {
        resolve_name_free(p->hosts[i].name);
        free(p->hosts[i].host);
        free(p->hosts[i].port);
    }
    free(p->hosts);
    free(p->target[0]);
    p->hosts = NULL;
    p->nhosts = 0;
}

db_pool_t *
db_pool_new(struct event_base *base, resolve_t *resolve, const char *conninfo,
            const char *application_name, int size, int queue_max, int batch_max,
            int64_t timeout_ms)
{
    db_pool_t *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    p->base = base;
    p->size = size;
    p->queue_max = queue_max;
    p->batch_max = batch_max < 1 ? 1 : batch_max > DB_BATCH_MAX_LIMIT ? DB_BATCH_MAX_LIMIT
                                                                       : batch_max;
    p->timeout_ms = timeout_ms;
    TAILQ_INIT(&p->queue);
    /* The server stops a statement we gave up on, instead of running it on. */
    snprintf(p->statement_timeout, sizeof(p->statement_timeout),
             "-c statement_timeout=%lld", (long long)timeout_ms);
    p->conninfo = strdup(conninfo);
    p->application_name = strdup(application_name);
    p->conns = calloc((size_t)size, sizeof(*p->conns));
    if (p->conninfo == NULL || p->application_name == NULL || p->conns == NULL
        || follow_hosts(p, resolve) < 0) {
        hosts_free(p);
        free(p->conninfo);
        free(p->application_name);
        free(p->conns);
        free(p);
        return NULL;
    }
    evtimer_assign(&p->queue_timer, base, queue_timer_cb, p);
    evtimer_assign(&p->hold_timer, base, hold_timer_cb, p);
    for (int i = 0; i < size; i++) {
        db_conn_t *c = &p->conns[i];
        c->pool = p;
        c->index = i;
        TAILQ_INIT(&c->flight);
        c->state = DB_DOWN;
        c->backoff_ms = DB_BACKOFF_MIN_MS;
        evtimer_assign(&c->timer, base, conn_timer_cb, c);
        conn_connect(c);
    }
    return p;
}

void
db_pool_free(db_pool_t *p)
{
    if (p == NULL)
        return;
    p->closing = 1;             /* the callbacks below may call again */
    evtimer_del(&p->hold_timer);
    for (int i = 0; i < p->size; i++) {
        db_conn_t *c = &p->conns[i];
        struct db_calls flight;

        if (c->io_added)
            event_del(&c->io);
        evtimer_del(&c->timer);
        if (c->pg != NULL)
            PQfinish(c->pg);
        if (c->result != NULL)
            PQclear(c->result);
        c->pg = NULL;
        c->result = NULL;
        conn_take_flight(c, &flight);
        flight_fail(&flight, NULL, "shutting down");
    }
    evtimer_del(&p->queue_timer);
    while (!TAILQ_EMPTY(&p->queue)) {
        db_call_t *call = TAILQ_FIRST(&p->queue);
        TAILQ_REMOVE(&p->queue, call, next);
        call_answer_free(call, NULL, 0, "shutting down");
    }
    hosts_free(p);
    free(p->conns);
    free(p->conninfo);
    free(p->application_name);
    free(p);
}

/* Queue a call (plain: sql; batched: kind) with a copy of its parameters. */
static int
call_queue(db_pool_t *p, const char *sql, const db_batch_kind_t *kind, int nparams,
           const char *const *params, db_cb_t cb, void *arg)
{
    size_t need = sizeof(db_call_t) + (size_t)nparams * sizeof(char *);
    db_call_t *call;
    char *dst;

    if (p->closing || (p->up == 0 && p->last_attempt_failed))
        return -1;
    if (p->queued >= p->queue_max)
        return -1;
    for (int i = 0; i < nparams; i++)
        need += params[i] ? strlen(params[i]) + 1 : 0;
    call = malloc(need);
    if (call == NULL)
        return -1;
    call->pool = p;
    call->sql = sql;
    call->kind = kind;
    call->nparams = nparams;
    call->params = (char **)(call + 1);
    call->cb = cb;
    call->arg = arg;
    call->answered = 0;
    call->deadline_ms = clock_mono_ms() + p->timeout_ms;
    call->queued_us = clock_mono_us();
    dst = (char *)(call->params + nparams);
    for (int i = 0; i < nparams; i++) {
        if (params[i] == NULL) {
            call->params[i] = NULL;
            continue;
        }
        size_t len = strlen(params[i]) + 1;
        memcpy(dst, params[i], len);
        call->params[i] = dst;
        dst += len;
    }
    TAILQ_INSERT_TAIL(&p->queue, call, next);
    p->queued++;
    if (p->queued == 1) {
        struct timeval tv = clock_tv(p->timeout_ms);
        evtimer_add(&p->queue_timer, &tv);
    }
    dispatch(p);
    return 0;
}

int
db_call(db_pool_t *p, const char *sql, int nparams, const char *const *params,
        db_cb_t cb, void *arg)
{
    return call_queue(p, sql, NULL, nparams, params, cb, arg);
}

int
db_call_batched(db_pool_t *p, const db_batch_kind_t *kind, const char *const *params,
                db_cb_t cb, void *arg)
{
    return call_queue(p, NULL, kind, kind->nparams, params, cb, arg);
}

void
db_pool_stats(const db_pool_t *p, db_pool_stats_t *out)
{
    out->busy = p->busy;
    out->queued = p->queued;
    out->connected = p->up;
    out->statements = p->statements;
    out->calls = p->calls;
}

void
db_pool_set_observer(db_pool_t *p, const db_observer_t *o)
{
    if (o != NULL)
        p->observer = *o;
    else
        memset(&p->observer, 0, sizeof(p->observer));
}

int
db_error_is_transient(const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    if (state == NULL)
        return 1;               /* no server verdict: the connection failed */
    /* 08 connection, 40 rollback (serialization, deadlock), 53 resources,
     * 57 operator intervention (shutdown, statement_timeout = 57014). */
    return strncmp(state, "08", 2) == 0 || strncmp(state, "40", 2) == 0
        || strncmp(state, "53", 2) == 0 || strncmp(state, "57", 2) == 0;
}
