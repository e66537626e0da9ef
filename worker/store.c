/*
 * store: typed calls of the SQL API (sql/init.sql), over the db pool.
 *
 * Each call copies its parameters as text into a db call and keeps the
 * caller's callback in a small heap object (pend_t) until the result comes;
 * the result is parsed here, into the struct the caller gets.  The hot
 * calls (checkout begin and finish, webhook apply, order read) are batched
 * kinds: the pool sends whatever waits of one kind as one *_many call, and
 * each caller gets its own row.  Column numbers below are those of the
 * SELECT lists next to them; for a batched kind column 0 is the ordinal.
 */
#include "config.h"

#include "worker/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const db_batch_kind_t BEGIN_MANY = {
    "SELECT ord, result, order_id, response_status, response_body, lock_token, completed_at_ms"
    " FROM checkout_begin_many($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],"
    " $6::text[], $7::text[], $8::interval[], $9::interval[])", 9
};
static const db_batch_kind_t FINISH_MANY = {
    "SELECT ord, result, status, response_status, response_body, completed_at_ms, reversal"
    " FROM checkout_finish_many($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[],"
    " $6::bigint[])", 6
};
static const db_batch_kind_t APPLY_MANY = {
    "SELECT ord, result, order_status, conflict, reversal, amount_cents, currency"
    " FROM webhook_apply_many($1::text[], $2::uuid[], $3::text[], $4::text[])", 4
};
static const db_batch_kind_t ORDER_MANY = {
    "SELECT ord, body FROM order_get_many($1::uuid[])", 1
};
static const char SQL_LEDGER[] = "SELECT order_ledger($1::uuid)";
static const char SQL_PING[] = "SELECT 1";
static const char SQL_SETTLE[] = "SELECT reversal_settle($1::uuid, $2)";
static const char SQL_PURGE[] = "SELECT purge_expired_idempotency_keys($1::interval, $2::int)";
static const char SQL_CLAIM[] =
    "SELECT key, order_id, amount_cents, currency, lock_token"
    " FROM checkout_claim_stale($1::interval, $2::int)";
static const char SQL_DUE[] = "SELECT '', order_id, amount_cents, currency, '' FROM "
                              "pending_orders_due($1::interval, $2::int)";
static const char SQL_REVERSALS_DUE[] =
    "SELECT '', order_id, amount_cents, currency, '' FROM reversals_due($1::interval, $2::int)";

/* The caller's callback, until the result comes. */
typedef struct {
    union {
        store_begin_cb begin;
        store_finish_cb finish;
        store_apply_cb apply;
        store_json_cb json;
        store_done_cb done;
        store_settle_cb settle;
        store_items_cb items;
        store_count_cb count;
    } cb;
    void *arg;
} pend_t;

/* Queue sql (or a batched kind) with the callback in a pend_t. */
static int
pend_call(db_pool_t *db, const char *sql, const db_batch_kind_t *kind, int nparams,
          const char *const *params, db_cb_t done, const pend_t *pend)
{
    pend_t *p = malloc(sizeof(*p));
    int rc;

    if (p == NULL)
        return -1;
    *p = *pend;
    rc = kind != NULL ? db_call_batched(db, kind, params, done, p)
                      : db_call(db, sql, nparams, params, done, p);
    if (rc < 0)
        free(p);
    return rc;
}

/* The failure of a call, or NULL when it committed with a row to read. */
static const store_err_t *
failure(store_err_t *e, const PGresult *res, int row, const char *err)
{
    if (err == NULL && res != NULL && row < PQntuples(res))
        return NULL;
    e->transient = err != NULL ? db_error_is_transient(res) : 0;
    e->message = err != NULL ? err : "the database returned no row";
    return e;
}

static int
col_bool(const PGresult *res, int row, int col)
{
    return PQgetvalue(res, row, col)[0] == 't';
}

static int64_t
col_int(const PGresult *res, int row, int col)
{
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static void
col_copy(char *dst, size_t size, const PGresult *res, int row, int col)
{
    snprintf(dst, size, "%s", PQgetvalue(res, row, col));
}

static store_order_status_t
order_status(const char *s)
{
    return strcmp(s, "PAID") == 0 ? STORE_ORDER_PAID
         : strcmp(s, "FAILED") == 0 ? STORE_ORDER_FAILED
         : strcmp(s, "PENDING_PAYMENT") == 0 ? STORE_ORDER_PENDING_PAYMENT
         : STORE_ORDER_PROCESSING;
}

const char *
store_order_status_name(store_order_status_t s)
{
    switch (s) {
    case STORE_ORDER_PAID: return "PAID";
    case STORE_ORDER_FAILED: return "FAILED";
    case STORE_ORDER_PENDING_PAYMENT: return "PENDING_PAYMENT";
    case STORE_ORDER_PROCESSING: return "PROCESSING";
    }
    return "?";
}

const char *
store_reversal_name(store_reversal_t s)
{
    return s == STORE_REVERSAL_CANCELED ? "canceled"
         : s == STORE_REVERSAL_REFUNDED ? "refunded" : "pending";
}

/* Durations as PostgreSQL intervals. */
static void
interval(char *buf, size_t size, int64_t ms)
{
    snprintf(buf, size, "%lld milliseconds", (long long)ms);
}

/* ---- checkout_begin ---- */

static void
begin_done(void *arg, const PGresult *res, int row, const char *err)
{
    pend_t *p = arg;
    store_err_t e;
    const store_err_t *fail = failure(&e, res, row, err);
    store_begin_t b;
    const char *result;

    if (fail != NULL) {
        p->cb.begin(p->arg, NULL, fail);
        free(p);
        return;
    }
    memset(&b, 0, sizeof(b));
    result = PQgetvalue(res, row, 1);
    b.result = strcmp(result, "new") == 0 ? STORE_BEGIN_NEW
             : strcmp(result, "replay") == 0 ? STORE_BEGIN_REPLAY
             : strcmp(result, "reused") == 0 ? STORE_BEGIN_REUSED
             : strcmp(result, "recover") == 0 ? STORE_BEGIN_RECOVER
             : STORE_BEGIN_IN_PROGRESS;
    col_copy(b.order_id, sizeof(b.order_id), res, row, 2);
    b.response_status = (int)col_int(res, row, 3);
    b.body = PQgetvalue(res, row, 4);
    b.body_len = (size_t)PQgetlength(res, row, 4);
    col_copy(b.lock_token, sizeof(b.lock_token), res, row, 5);
    b.completed_at_ms = col_int(res, row, 6);
    p->cb.begin(p->arg, &b, NULL);
    free(p);
}

int
store_checkout_begin(db_pool_t *db, const store_begin_req_t *q, store_begin_cb cb, void *arg)
{
    char amount[24], lock[48], ttl[48];
    const char *params[9] = {
        q->key, q->fingerprint, q->buyer_id, q->seller_id, amount, q->currency, q->buyer_trust,
        lock, ttl
    };
    pend_t p = { .cb.begin = cb, .arg = arg };

    snprintf(amount, sizeof(amount), "%lld", (long long)q->amount_cents);
    interval(lock, sizeof(lock), q->lock_timeout_ms);
    interval(ttl, sizeof(ttl), q->ttl_ms);
    return pend_call(db, NULL, &BEGIN_MANY, 9, params, begin_done, &p);
}

/* ---- checkout_finish ---- */

static void
finish_done(void *arg, const PGresult *res, int row, const char *err)
{
    pend_t *p = arg;
    store_err_t e;
    const store_err_t *fail = failure(&e, res, row, err);
    store_finish_t f;
    const char *result;

    if (fail != NULL) {
        p->cb.finish(p->arg, NULL, fail);
        free(p);
        return;
    }
    memset(&f, 0, sizeof(f));
    result = PQgetvalue(res, row, 1);
    f.result = strcmp(result, "stale") == 0 ? STORE_FINISH_STALE
             : strcmp(result, "replay") == 0 ? STORE_FINISH_REPLAY : STORE_FINISH_DONE;
    f.status = order_status(PQgetvalue(res, row, 2));
    f.response_status = (int)col_int(res, row, 3);
    f.body = PQgetvalue(res, row, 4);
    f.body_len = (size_t)PQgetlength(res, row, 4);
    f.completed_at_ms = col_int(res, row, 5);
    f.reversal = col_bool(res, row, 6);
    p->cb.finish(p->arg, &f, NULL);
    free(p);
}

int
store_checkout_finish(db_pool_t *db, const store_finish_req_t *q, store_finish_cb cb, void *arg)
{
    static const char *const outcomes[] = {
        [STORE_OUTCOME_SUCCEEDED] = "succeeded", [STORE_OUTCOME_DECLINED] = "declined",
        [STORE_OUTCOME_UNAVAILABLE] = "unavailable", [STORE_OUTCOME_NOT_CHARGED] = "not_charged",
    };
    char cap[24];
    const char *params[6] = {
        q->order_id, q->key, q->lock_token, outcomes[q->outcome], q->charge_id, cap
    };
    pend_t p = { .cb.finish = cb, .arg = arg };

    snprintf(cap, sizeof(cap), "%lld", (long long)q->outage_cap_cents);
    return pend_call(db, NULL, &FINISH_MANY, 6, params, finish_done, &p);
}

/* ---- webhook_apply ---- */

static void
apply_done(void *arg, const PGresult *res, int row, const char *err)
{
    pend_t *p = arg;
    store_err_t e;
    const store_err_t *fail = failure(&e, res, row, err);
    store_apply_t a;
    const char *result;

    if (fail != NULL) {
        p->cb.apply(p->arg, NULL, fail);
        free(p);
        return;
    }
    memset(&a, 0, sizeof(a));
    result = PQgetvalue(res, row, 1);
    a.result = strcmp(result, "applied") == 0 ? STORE_APPLY_APPLIED
             : strcmp(result, "not_applied") == 0 ? STORE_APPLY_NOT_APPLIED
             : strcmp(result, "duplicate") == 0 ? STORE_APPLY_DUPLICATE : STORE_APPLY_NOT_FOUND;
    a.order_status = order_status(PQgetvalue(res, row, 2));
    a.conflict = col_bool(res, row, 3);
    a.reversal = col_bool(res, row, 4);
    a.amount_cents = col_int(res, row, 5);
    col_copy(a.currency, sizeof(a.currency), res, row, 6);
    p->cb.apply(p->arg, &a, NULL);
    free(p);
}

int
store_webhook_apply(db_pool_t *db, const store_apply_req_t *q, store_apply_cb cb, void *arg)
{
    const char *params[4] = { q->event_id, q->order_id, q->paid ? "PAID" : "FAILED", q->payload };
    pend_t p = { .cb.apply = cb, .arg = arg };

    return pend_call(db, NULL, &APPLY_MANY, 4, params, apply_done, &p);
}

/* ---- reads ---- */

/* One text column (col) of row, NULL meaning "no such order". */
static void
json_done(const pend_t *p, const PGresult *res, int row, int col, const char *err)
{
    store_err_t e;
    const store_err_t *fail = failure(&e, res, row, err);

    if (fail != NULL)
        p->cb.json(p->arg, NULL, 0, fail);
    else if (PQgetisnull(res, row, col))
        p->cb.json(p->arg, NULL, 0, NULL);
    else
        p->cb.json(p->arg, PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col), NULL);
}

static void
order_done(void *arg, const PGresult *res, int row, const char *err)
{
    json_done(arg, res, row, 1, err);
    free(arg);
}

static void
ledger_done(void *arg, const PGresult *res, int row, const char *err)
{
    json_done(arg, res, row, 0, err);
    free(arg);
}

int
store_order_get(db_pool_t *db, const char *order_id, store_json_cb cb, void *arg)
{
    const char *params[1] = { order_id };
    pend_t p = { .cb.json = cb, .arg = arg };

    return pend_call(db, NULL, &ORDER_MANY, 1, params, order_done, &p);
}

int
store_order_ledger(db_pool_t *db, const char *order_id, store_json_cb cb, void *arg)
{
    const char *params[1] = { order_id };
    pend_t p = { .cb.json = cb, .arg = arg };

    return pend_call(db, SQL_LEDGER, NULL, 1, params, ledger_done, &p);
}

static void
ping_done(void *arg, const PGresult *res, int row, const char *err)
{
    pend_t *p = arg;
    store_err_t e;

    p->cb.done(p->arg, failure(&e, res, row, err));
    free(p);
}

int
store_ping(db_pool_t *db, store_done_cb cb, void *arg)
{
    pend_t p = { .cb.done = cb, .arg = arg };

    return pend_call(db, SQL_PING, NULL, 0, NULL, ping_done, &p);
}

/* ---- reversals ---- */

static void
settle_done(void *arg, const PGresult *res, int row, const char *err)
{
    pend_t *p = arg;
    store_err_t e;
    const store_err_t *fail = failure(&e, res, row, err);
    const char *s;

    if (fail != NULL) {
        p->cb.settle(p->arg, STORE_REVERSAL_PENDING, fail);
    } else {
        s = PQgetvalue(res, row, 0);
        p->cb.settle(p->arg, strcmp(s, "refunded") == 0 ? STORE_REVERSAL_REFUNDED
                             : strcmp(s, "canceled") == 0 ? STORE_REVERSAL_CANCELED
                             : STORE_REVERSAL_PENDING, NULL);
    }
    free(p);
}

int
store_reversal_settle(db_pool_t *db, const char *order_id, store_cancel_answer_t answer,
                      store_settle_cb cb, void *arg)
{
    static const char *const answers[] = {
        [STORE_ANSWER_CANCELED] = "canceled", [STORE_ANSWER_REFUNDED] = "refunded",
        [STORE_ANSWER_DECLINED] = "declined", [STORE_ANSWER_NOT_FOUND] = "not_found",
    };
    const char *params[2] = { order_id, answers[answer] };
    pend_t p = { .cb.settle = cb, .arg = arg };

    return pend_call(db, SQL_SETTLE, NULL, 2, params, settle_done, &p);
}

/* ---- housekeeper ---- */

static void
count_done(void *arg, const PGresult *res, int row, const char *err)
{
    pend_t *p = arg;
    store_err_t e;
    const store_err_t *fail = failure(&e, res, row, err);

    p->cb.count(p->arg, fail != NULL ? 0 : (int)col_int(res, row, 0), fail);
    free(p);
}

int
store_purge_expired(db_pool_t *db, int64_t ttl_ms, int limit, store_count_cb cb, void *arg)
{
    char ttl[48], lim[16];
    const char *params[2] = { ttl, lim };
    pend_t p = { .cb.count = cb, .arg = arg };

    interval(ttl, sizeof(ttl), ttl_ms);
    snprintf(lim, sizeof(lim), "%d", limit);
    return pend_call(db, SQL_PURGE, NULL, 2, params, count_done, &p);
}

/* Rows of (key, order_id, amount_cents, currency, lock_token). */
static void
items_done(void *arg, const PGresult *res, int row, const char *err)
{
    pend_t *p = arg;
    store_item_t *items = NULL;
    store_err_t e;
    int n;

    (void)row;
    if (err != NULL) {
        e.transient = db_error_is_transient(res);
        e.message = err;
        p->cb.items(p->arg, NULL, 0, &e);
        free(p);
        return;
    }
    n = PQntuples(res);
    if (n > 0 && (items = calloc((size_t)n, sizeof(*items))) == NULL) {
        e.transient = 1;
        e.message = "out of memory";
        p->cb.items(p->arg, NULL, 0, &e);
        free(p);
        return;
    }
    for (int i = 0; i < n; i++) {
        col_copy(items[i].key, sizeof(items[i].key), res, i, 0);
        col_copy(items[i].order_id, sizeof(items[i].order_id), res, i, 1);
        items[i].amount_cents = col_int(res, i, 2);
        col_copy(items[i].currency, sizeof(items[i].currency), res, i, 3);
        col_copy(items[i].lock_token, sizeof(items[i].lock_token), res, i, 4);
    }
    p->cb.items(p->arg, items, n, NULL);
    free(items);
    free(p);
}

static int
items_call(db_pool_t *db, const char *sql, int64_t ms, int limit, store_items_cb cb, void *arg)
{
    char iv[48], lim[16];
    const char *params[2] = { iv, lim };
    pend_t p = { .cb.items = cb, .arg = arg };

    interval(iv, sizeof(iv), ms);
    snprintf(lim, sizeof(lim), "%d", limit);
    return pend_call(db, sql, NULL, 2, params, items_done, &p);
}

int
store_claim_stale(db_pool_t *db, int64_t lock_timeout_ms, int limit, store_items_cb cb, void *arg)
{
    return items_call(db, SQL_CLAIM, lock_timeout_ms, limit, cb, arg);
}

int
store_pending_due(db_pool_t *db, int64_t age_ms, int limit, store_items_cb cb, void *arg)
{
    return items_call(db, SQL_DUE, age_ms, limit, cb, arg);
}

int
store_reversals_due(db_pool_t *db, int64_t retry_ms, int limit, store_items_cb cb, void *arg)
{
    return items_call(db, SQL_REVERSALS_DUE, retry_ms, limit, cb, arg);
}
