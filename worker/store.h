/*
 * store: the SQL API of sql/init.sql as typed C calls.
 *
 * The only module that knows SQL text, parameter order, column numbers and
 * result strings: callers pass structs and get structs and enums back, from
 * the loop, exactly once per accepted call.  Calls of one kind that wait in
 * the pool's queue go out together (group commit: db_call_batched, with the
 * *_many SQL functions), so a caller never knows whether its call ran alone
 * or in a batch: either way it succeeds only if its transaction committed.
 *
 * Every function returns 0 when the call was accepted, or -1 without
 * calling back when the database is unreachable or the queue is full
 * (answer 503).  Results and their strings are valid during the callback
 * only.  Single-threaded: use from the loop that owns the pool.
 */
#ifndef PD_STORE_H
#define PD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "worker/db.h"

/* Why a call failed; NULL in a callback means it committed. */
typedef struct store_err {
    int transient;              /* retrying may help (connection, timeout, overload) */
    const char *message;
} store_err_t;

#define STORE_ID_LEN 36         /* a UUID's text */

/* ---- checkout_begin ---- */

typedef struct {
    const char *key, *fingerprint, *buyer_id, *seller_id, *currency, *buyer_trust;
    int64_t amount_cents;
    int64_t lock_timeout_ms, ttl_ms;
} store_begin_req_t;

typedef enum {
    STORE_BEGIN_NEW,            /* order created, key locked by us (token) */
    STORE_BEGIN_REPLAY,         /* the stored answer */
    STORE_BEGIN_REUSED,         /* the key belongs to another request */
    STORE_BEGIN_IN_PROGRESS,    /* the key's first request still runs */
    STORE_BEGIN_RECOVER         /* a stale key, now ours (token): ask the provider */
} store_begin_result_t;

typedef struct {
    store_begin_result_t result;
    char order_id[STORE_ID_LEN + 1];    /* "" for REUSED */
    char lock_token[STORE_ID_LEN + 1];  /* NEW and RECOVER */
    int response_status;                /* REPLAY */
    const char *body;                   /* REPLAY */
    size_t body_len;
    int64_t completed_at_ms;            /* REPLAY: when the answer was stored */
} store_begin_t;

typedef void (*store_begin_cb)(void *arg, const store_begin_t *res, const store_err_t *err);

int store_checkout_begin(db_pool_t *db, const store_begin_req_t *req, store_begin_cb cb, void *arg)
    __attribute__((warn_unused_result));

/* ---- checkout_finish ---- */

typedef enum {
    STORE_OUTCOME_SUCCEEDED, STORE_OUTCOME_DECLINED, STORE_OUTCOME_UNAVAILABLE,
    STORE_OUTCOME_NOT_CHARGED   /* never received, or canceled at the provider */
} store_outcome_t;

typedef enum {
    STORE_ORDER_PROCESSING, STORE_ORDER_PAID, STORE_ORDER_FAILED, STORE_ORDER_PENDING_PAYMENT
} store_order_status_t;

typedef struct {
    const char *order_id, *key, *lock_token;
    store_outcome_t outcome;
    const char *charge_id;      /* may be NULL */
    int64_t outage_cap_cents;
} store_finish_req_t;

typedef enum {
    STORE_FINISH_DONE,          /* finished now (or a webhook had): the answer below */
    STORE_FINISH_REPLAY,        /* finished before: the stored answer */
    STORE_FINISH_STALE          /* our lock was taken over: nothing changed */
} store_finish_result_t;

typedef struct {
    store_finish_result_t result;
    store_order_status_t status;
    int response_status;
    const char *body;
    size_t body_len;
    int64_t completed_at_ms;
    int reversal;               /* a cancel-or-refund is due at the provider */
} store_finish_t;

typedef void (*store_finish_cb)(void *arg, const store_finish_t *res, const store_err_t *err);

int store_checkout_finish(db_pool_t *db, const store_finish_req_t *req, store_finish_cb cb,
                          void *arg) __attribute__((warn_unused_result));

/* ---- webhook_apply ---- */

typedef struct {
    const char *event_id, *order_id, *payload;
    int paid;                   /* outcome PAID, else FAILED */
} store_apply_req_t;

typedef enum {
    STORE_APPLY_APPLIED, STORE_APPLY_NOT_APPLIED, STORE_APPLY_DUPLICATE, STORE_APPLY_NOT_FOUND
} store_apply_result_t;

typedef struct {
    store_apply_result_t result;
    store_order_status_t order_status;  /* not for NOT_FOUND */
    int conflict;               /* NOT_APPLIED: final in the other state */
    int reversal;               /* a cancel-or-refund is due at the provider */
    int64_t amount_cents;       /* the order's, for that cancel */
    char currency[4];
} store_apply_t;

typedef void (*store_apply_cb)(void *arg, const store_apply_t *res, const store_err_t *err);

int store_webhook_apply(db_pool_t *db, const store_apply_req_t *req, store_apply_cb cb, void *arg)
    __attribute__((warn_unused_result));

/* ---- reads ---- */

/* body is the order's JSON (or its ledger's), NULL for an unknown order. */
typedef void (*store_json_cb)(void *arg, const char *body, size_t len, const store_err_t *err);

int store_order_get(db_pool_t *db, const char *order_id, store_json_cb cb, void *arg)
    __attribute__((warn_unused_result));
int store_order_ledger(db_pool_t *db, const char *order_id, store_json_cb cb, void *arg)
    __attribute__((warn_unused_result));

/* SELECT 1: the database answers.  err NULL when it does. */
typedef void (*store_done_cb)(void *arg, const store_err_t *err);

int store_ping(db_pool_t *db, store_done_cb cb, void *arg) __attribute__((warn_unused_result));

/* ---- reversals ---- */

typedef enum {
    STORE_ANSWER_CANCELED, STORE_ANSWER_REFUNDED, STORE_ANSWER_DECLINED, STORE_ANSWER_NOT_FOUND
} store_cancel_answer_t;

typedef enum {
    STORE_REVERSAL_PENDING,
    STORE_REVERSAL_CANCELED,
    STORE_REVERSAL_REFUNDED
} store_reversal_t;

typedef void (*store_settle_cb)(void *arg, store_reversal_t status, const store_err_t *err);

/* reversal_settle: record the provider's answer to a cancel. */
int store_reversal_settle(db_pool_t *db, const char *order_id, store_cancel_answer_t answer,
                          store_settle_cb cb, void *arg) __attribute__((warn_unused_result));

/* ---- housekeeper ---- */

/* An order to work on: what the housekeeper's listings return. */
typedef struct {
    char key[256];                      /* claim_stale only */
    char lock_token[STORE_ID_LEN + 1];  /* claim_stale only */
    char order_id[STORE_ID_LEN + 1];
    int64_t amount_cents;
    char currency[4];
} store_item_t;

/* rows (n of them) valid during the callback. */
typedef void (*store_items_cb)(void *arg, const store_item_t *rows, int n, const store_err_t *err);
typedef void (*store_count_cb)(void *arg, int n, const store_err_t *err);

/* Delete up to limit keys answered more than ttl_ms ago; n = how many. */
int store_purge_expired(db_pool_t *db, int64_t ttl_ms, int limit, store_count_cb cb, void *arg)
    __attribute__((warn_unused_result));
/* Claim up to limit stale in-progress keys (each with a new lock token). */
int store_claim_stale(db_pool_t *db, int64_t lock_timeout_ms, int limit, store_items_cb cb,
                      void *arg) __attribute__((warn_unused_result));
/* PENDING_PAYMENT orders unchanged for age_ms, oldest first. */
int store_pending_due(db_pool_t *db, int64_t age_ms, int limit, store_items_cb cb, void *arg)
    __attribute__((warn_unused_result));
/* Pending reversals last tried more than retry_ms ago (marked tried now). */
int store_reversals_due(db_pool_t *db, int64_t retry_ms, int limit, store_items_cb cb, void *arg)
    __attribute__((warn_unused_result));

/* Names for logs: "PAID", "FAILED", ...; "canceled", "refunded", ... */
const char *store_order_status_name(store_order_status_t s);
const char *store_reversal_name(store_reversal_t s);

#endif
