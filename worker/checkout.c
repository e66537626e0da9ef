/*
 * checkout: the idempotent checkout flow.
 *
 * PostgreSQL decides everything about money: whether a key is new, replayed,
 * reused, in progress or to be recovered (checkout_begin), and what the
 * provider's answer makes of the order, ledger included (checkout_finish).
 * This file validates, carries the state between the asynchronous steps,
 * and turns results into HTTP.  A checkout that loses the database half-way
 * leaves its key in progress; after idempotency_lock_timeout a retry with the
 * same key (or the housekeeper) finishes the same order with the same
 * provider key, so nothing is ever charged twice.
 *
 * The shared-memory cache (shm/cache) is a fast path in front of
 * checkout_begin: a completed response is replayed, a key running on this
 * host is answered 409, both without PostgreSQL.  It only ever holds what
 * PostgreSQL said (a completed response) or what this host is doing right
 * now (an in-progress marker, dropped when the request ends), and a cached
 * response expires no later than its key in the database: from the moment
 * the answer was stored in PostgreSQL (completed_at, kept as the entry's
 * start) plus idempotency_ttl, less a margin for clock skew.  So a miss, an
 * eviction or a wiped cache costs a round trip and never changes an answer.
 *
 * The circuit breaker (shm/breaker) is shared by all workers: while it is
 * open a new checkout takes the outage path at once instead of waiting for
 * provider_timeout.
 *
 * A recovered checkout (its first request died; this retry took the key
 * over after idempotency_lock_timeout) asks the provider what became of the
 * charge before anything else (GET): it charges again only when the provider
 * never saw the charge, and while the provider says pending or cannot be
 * reached the key stays in progress (409).  Each holder of a key carries the
 * lock token checkout_begin gave it; a finish under a token that was taken
 * over changes nothing.  A checkout_finish that did not commit answers 503
 * and caches nothing: the key stays in progress and is recovered.  An order
 * answered FAILED provider_unavailable gets a cancel-or-refund at the
 * provider (worker/reversal), since unavailable means unknown.
 */
#include "config.h"

#include "worker/checkout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "worker/provider.h"
#include "worker/replay.h"
#include "worker/store.h"
#include "worker/validate.h"
#include "worker/worker.h"

#define MAX_KEY_HEADERS 4

typedef struct {
    http_req_t *r;              /* until the reply, which frees this checkout_t */
    worker_t *worker;
    validate_checkout_t order;  /* the validated body */
    char key[VALIDATE_KEY_MAX + 1];
    size_t keylen;
    char order_id[37];
    char token[37];             /* our lock token for the key */
    int marked;                 /* our in-progress marker is in the cache */
    int probe;                  /* this charge is the breaker's probe */
} checkout_t;

typedef enum { KEY_IN_USE, KEY_REUSED } key_conflict_t;

/* The steps, in the order they run. */
static int answered_from_cache(checkout_t *c);
static void checkout_begin_done(void *arg, const store_begin_t *b, const store_err_t *err);
static void charge_done(void *arg, provider_outcome_t outcome, const char *charge_id);
static void recover_answered(void *arg, provider_outcome_t outcome, const char *charge_id);
static void run_checkout_finish(checkout_t *c, store_outcome_t outcome, const char *charge_id);
static void checkout_finish_done(void *arg, const store_finish_t *f, const store_err_t *err);
/* The replies, each of which ends the checkout. */
static void reply_order(checkout_t *c, int status, const char *body, size_t len, int replayed);
static void reply_conflict(checkout_t *c, key_conflict_t why);
static void reply_unavailable(checkout_t *c);
static void checkout_free(checkout_t *c);
/* The shared cache. */
static int64_t cache_expiry(checkout_t *c, int64_t completed_ms);
static void cache_store(checkout_t *c, int status, const char *body, size_t len,
                        int64_t completed_ms);

void
checkout_handle(http_req_t *r)
{
    worker_t *w = http_req_worker(r);
    const conf_t *conf = worker_conf(w);
    const char *keys[MAX_KEY_HEADERS];
    const char *body;
    size_t nkeys, len;
    validate_error_t e;
    checkout_t *c;

    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        http_reply_error(r, 503, "service_unavailable", "out of memory", NULL);
        return;
    }
    c->r = r;
    c->worker = w;
    /* SPEC.md's order: the key, the content type, then the body (made
     * contiguous only once the headers passed). */
    nkeys = http_req_header_all(r, "Idempotency-Key", keys, MAX_KEY_HEADERS);
    if (validate_idempotency_key(keys, nkeys, c->key, &e) < 0
        || validate_content_type(http_req_header(r, "Content-Type"), &e) < 0)
        goto invalid;
    if ((body = http_req_body(r, &len)) == NULL) {
        worker_count(w, SHM_METRICS_CHECKOUT_UNAVAILABLE);
        http_reply_unavailable(r, "out of memory");
        checkout_free(c);
        return;
    }
    if (validate_checkout_body(body, len, conf, &c->order, &e) < 0)
        goto invalid;

    c->keylen = strlen(c->key);
    if (answered_from_cache(c))
        return;

    {
        store_begin_req_t q = {
            .key = c->key, .fingerprint = c->order.fingerprint, .buyer_id = c->order.buyer_id,
            .seller_id = c->order.seller_id, .currency = c->order.currency,
            .buyer_trust = c->order.buyer_trust, .amount_cents = c->order.amount_cents,
            .lock_timeout_ms = conf->idempotency_lock_timeout_ms,
            .ttl_ms = conf->idempotency_ttl_ms,
        };
        if (store_checkout_begin(worker_db(w), &q, checkout_begin_done, c) < 0)
            reply_unavailable(c);
    }
    return;
invalid:
    worker_count(w, SHM_METRICS_CHECKOUT_INVALID);
    http_reply_error(r, e.status, e.code, e.message, e.field[0] ? e.field : NULL);
    checkout_free(c);
}

/*
 * Answer from the shared cache when it knows: returns 1 when the request was
 * answered (and c freed).  Otherwise our in-progress marker is in (or the
 * cache could not take it) and the database decides.
 */
static int
answered_from_cache(checkout_t *c)
{
    const conf_t *conf = worker_conf(c->worker);
    shm_cache_t *cache = worker_shared(c->worker)->cache;
    int64_t now = clock_real_ms();
    shm_cache_entry_t entry, *e = &entry;    /* ~1.8 KiB: the stack, not malloc */
    shm_cache_result_t res;

    /* A completed answer is found without the set lock (a replay is the
     * common case, and many replays of one key all land on one set); only
     * a key not answered yet goes on to claim its marker. */
    if (replay_lookup(c->worker, c->key, c->keylen, now, e))
        res = SHM_CACHE_EXISTS;
    else
        res = shm_cache_claim(cache, c->key, c->keylen, c->order.fingerprint, getpid(), now,
                              now + conf->idempotency_lock_timeout_ms, e);
    if (res == SHM_CACHE_EXISTS && e->state == SHM_CACHE_COMPLETED
        && cache_expiry(c, e->start_ms) <= now)
        res = SHM_CACHE_NOT_CACHED;     /* expired under today's TTL: ask PostgreSQL */
    if (res != SHM_CACHE_EXISTS) {
        c->marked = (res == SHM_CACHE_CLAIMED);
        worker_count(c->worker, SHM_METRICS_CACHE_MISS);
        return 0;
    }
    worker_count(c->worker, SHM_METRICS_CACHE_HIT);
    if (strcmp(e->fingerprint, c->order.fingerprint) != 0) {
        reply_conflict(c, KEY_REUSED);
    } else if (e->state == SHM_CACHE_COMPLETED) {
        worker_count(c->worker, SHM_METRICS_CHECKOUT_REPLAYED);
        worker_count(c->worker, SHM_METRICS_REPLAY_CACHE);
        reply_order(c, e->status, (const char *)e->body, e->body_len, 1);
    } else {
        reply_conflict(c, KEY_IN_USE);
    }
    return 1;
}

/* PostgreSQL's checkout_begin has decided what the key means. */
static void
checkout_begin_done(void *arg, const store_begin_t *b, const store_err_t *err)
{
    checkout_t *c = arg;

    if (err != NULL) {
        /* Not committed: no order, no key; the provider was not called. */
        if (err->transient) {
            req_log_warn(c->r, "database call failed: %s", err->message);
            reply_unavailable(c);
            return;
        }
        req_log_error(c->r, "database call failed: %s", err->message);
        http_reply_error(c->r, 500, "internal_error", "internal error", NULL);
        checkout_free(c);
        return;
    }
    snprintf(c->order_id, sizeof(c->order_id), "%s", b->order_id);
    snprintf(c->token, sizeof(c->token), "%s", b->lock_token);
    switch (b->result) {
    case STORE_BEGIN_NEW: {
        const conf_t *conf = worker_conf(c->worker);
        shm_breaker_verdict_t v = shm_breaker_allow(worker_shared(c->worker)->breaker,
                                                    clock_mono_ms(),
                                                    2 * conf->provider_timeout_ms);
        if (v == SHM_BREAKER_DENY) {
            worker_count(c->worker, SHM_METRICS_PROVIDER_SKIPPED);
            run_checkout_finish(c, STORE_OUTCOME_UNAVAILABLE, NULL);
            return;
        }
        c->probe = (v == SHM_BREAKER_ALLOW_PROBE);
        provider_charge(worker_provider(c->worker), c->order_id, c->order.amount_cents,
                        c->order.currency, http_req_id(c->r), charge_done, c);
        return;
    }
    case STORE_BEGIN_RECOVER:
        req_log_info(c->r, "recovering checkout of order %s: asking the provider", c->order_id);
        provider_get_charge(worker_provider(c->worker), c->order_id, c->order.amount_cents,
                            c->order.currency, http_req_id(c->r), recover_answered, c);
        return;
    case STORE_BEGIN_REPLAY:
        worker_count(c->worker, SHM_METRICS_CHECKOUT_REPLAYED);
        worker_count(c->worker, SHM_METRICS_REPLAY_DB);
        cache_store(c, b->response_status, b->body, b->body_len, b->completed_at_ms);
        reply_order(c, b->response_status, b->body, b->body_len, 1);
        return;
    case STORE_BEGIN_REUSED:
    case STORE_BEGIN_IN_PROGRESS:
        reply_conflict(c, b->result == STORE_BEGIN_REUSED ? KEY_REUSED : KEY_IN_USE);
        return;
    }
    /* Not reached: store.c maps every result checkout_begin has. */
    http_reply_error(c->r, 500, "internal_error", "internal error", NULL);
    checkout_free(c);
}

static const char *
breaker_name(shm_breaker_state_t s)
{
    return s == SHM_BREAKER_OPEN ? "open" : s == SHM_BREAKER_HALF_OPEN ? "half-open" : "closed";
}

/* The provider answered the charge (or did not, in time). */
static void
charge_done(void *arg, provider_outcome_t outcome, const char *charge_id)
{
    checkout_t *c = arg;
    const conf_t *conf = worker_conf(c->worker);
    shm_breaker_t *b = worker_shared(c->worker)->breaker;
    shm_breaker_state_t before = shm_breaker_state(b);

    worker_count(c->worker, outcome == PROVIDER_SUCCEEDED ? SHM_METRICS_PROVIDER_SUCCEEDED
                            : outcome == PROVIDER_DECLINED ? SHM_METRICS_PROVIDER_DECLINED
                            : SHM_METRICS_PROVIDER_UNAVAILABLE);
    shm_breaker_record(b, outcome != PROVIDER_UNAVAILABLE, clock_mono_ms(),
                       conf->breaker_threshold, conf->breaker_cooldown_ms);
    if (shm_breaker_state(b) != before)
        req_log_warn(c->r, "provider circuit breaker: %s -> %s%s", breaker_name(before),
                     breaker_name(shm_breaker_state(b)), c->probe ? " (probe)" : "");
    run_checkout_finish(c, outcome == PROVIDER_SUCCEEDED ? STORE_OUTCOME_SUCCEEDED
                           : outcome == PROVIDER_DECLINED ? STORE_OUTCOME_DECLINED
                           : STORE_OUTCOME_UNAVAILABLE, charge_id);
}

/* A recovered checkout: what the provider knows of the first attempt's
 * charge decides, never a blind second charge. */
static void
recover_answered(void *arg, provider_outcome_t outcome, const char *charge_id)
{
    checkout_t *c = arg;

    switch (outcome) {
    case PROVIDER_SUCCEEDED:
        run_checkout_finish(c, STORE_OUTCOME_SUCCEEDED, charge_id);
        return;
    case PROVIDER_DECLINED:
        run_checkout_finish(c, STORE_OUTCOME_DECLINED, charge_id);
        return;
    case PROVIDER_NOT_FOUND:
        /* Never received: charge now, under the same provider key. */
        req_log_info(c->r, "recovering order %s: the provider never saw its charge: charging",
                     c->order_id);
        provider_charge(worker_provider(c->worker), c->order_id, c->order.amount_cents,
                        c->order.currency, http_req_id(c->r), charge_done, c);
        return;
    case PROVIDER_CANCELED:
    case PROVIDER_REFUNDED:
        /* Given up on and reversed at the provider: FAILED, and the
         * reversal that follows records any money that moved and came back. */
        run_checkout_finish(c, STORE_OUTCOME_NOT_CHARGED, NULL);
        return;
    default:
        /* Pending, or no answer: unknown.  The key stays ours until the lock
         * timeout, then a retry or the housekeeper asks again. */
        req_log_info(c->r, "recovering order %s: the provider says %s: the key stays in progress",
                     c->order_id, provider_outcome_name(outcome));
        reply_conflict(c, KEY_IN_USE);
        return;
    }
}

/* Record the provider's answer with SQL checkout_finish, which decides the
 * order's status (outage policy included) and writes the ledger. */
static void
run_checkout_finish(checkout_t *c, store_outcome_t outcome, const char *charge_id)
{
    store_finish_req_t q = {
        .order_id = c->order_id, .key = c->key, .lock_token = c->token, .outcome = outcome,
        .charge_id = charge_id,
        .outage_cap_cents = worker_conf(c->worker)->outage_pending_cap_cents,
    };

    if (store_checkout_finish(worker_db(c->worker), &q, checkout_finish_done, c) < 0) {
        /* The key stays in progress: a retry after the lock timeout
         * recovers this order with the same provider key. */
        worker_count(c->worker, SHM_METRICS_FINISH_FAILED);
        reply_unavailable(c);
    }
}

static void
checkout_finish_done(void *arg, const store_finish_t *f, const store_err_t *err)
{
    checkout_t *c = arg;

    if (err != NULL) {
        /* Not committed: nothing changed, the key stays in progress and a
         * retry after the lock timeout (or the housekeeper) recovers it.
         * So 503 whatever the cause, never a success, never cached; a
         * cause that retrying cannot fix is an error for the operator. */
        worker_count(c->worker, SHM_METRICS_FINISH_FAILED);
        if (err->transient)
            req_log_warn(c->r, "checkout_finish of order %s did not commit: %s",
                         c->order_id, err->message);
        else
            req_log_error(c->r, "checkout_finish of order %s did not commit: %s",
                          c->order_id, err->message);
        reply_unavailable(c);
        return;
    }
    if (f->result == STORE_FINISH_STALE) {
        /* A recovery took the key over while we waited: its holder
         * finishes the order; our provider answer changed nothing. */
        req_log_warn(c->r,
                     "order %s: the key was taken over by a recovery; leaving it to the new holder",
                     c->order_id);
        reply_conflict(c, KEY_IN_USE);
        return;
    }
    worker_count(c->worker, f->status == STORE_ORDER_PAID ? SHM_METRICS_CHECKOUT_PAID
                            : f->status == STORE_ORDER_FAILED ? SHM_METRICS_CHECKOUT_FAILED
                            : SHM_METRICS_CHECKOUT_PENDING);
    if (f->reversal)
        worker_start_reversal(c->worker, c->order_id, c->order.amount_cents, c->order.currency,
                              http_req_id(c->r));
    cache_store(c, f->response_status, f->body, f->body_len, f->completed_at_ms);
    reply_order(c, f->response_status, f->body, f->body_len, 0);
}

/* The order's answer as PostgreSQL stored it (or the cache kept it). */
static void
reply_order(checkout_t *c, int status, const char *body, size_t len, int replayed)
{
    char location[REPLAY_LOCATION_SIZE];

    if (status == 201 && replay_location(c->order_id, body, len, location))
        http_add_header(c->r, "Location", location);
    if (replayed)
        http_add_header(c->r, "Idempotent-Replayed", "true");
    http_reply(c->r, status, "application/json", body, len);
    checkout_free(c);
}

/* 409: the key's first request still runs (KEY_IN_USE: retry soon), or the
 * key was used with another request (KEY_REUSED: never with this one). */
static void
reply_conflict(checkout_t *c, key_conflict_t why)
{
    int in_use = (why == KEY_IN_USE);

    worker_count(c->worker, in_use ? SHM_METRICS_CHECKOUT_IN_USE : SHM_METRICS_CHECKOUT_REUSED);
    if (in_use)
        http_add_header(c->r, "Retry-After", "1");
    http_reply_error(c->r, 409, in_use ? "idempotency_key_in_use" : "idempotency_key_reused",
                     in_use ? "a request with this Idempotency-Key is still being processed"
                            : "this Idempotency-Key was used with a different request", NULL);
    checkout_free(c);
}

static void
reply_unavailable(checkout_t *c)
{
    worker_count(c->worker, SHM_METRICS_CHECKOUT_UNAVAILABLE);
    http_reply_unavailable(c->r,
                           "the database is unavailable; retry with the same Idempotency-Key");
    checkout_free(c);
}

/* After the reply: a marker the checkout left in the cache goes with it. */
static void
checkout_free(checkout_t *c)
{
    if (c->marked)
        shm_cache_release(worker_shared(c->worker)->cache, c->key, c->keylen, getpid());
    free(c);
}

/* When a key answered at completed_ms (Unix ms) expires in the database
 * under the current idempotency_ttl, less the skew margin.  Asked again on
 * every cache hit, since a reload may have shortened the TTL. */
static int64_t
cache_expiry(checkout_t *c, int64_t completed_ms)
{
    return replay_expiry(worker_conf(c->worker), completed_ms);
}

/* Remember the response PostgreSQL holds for this key (stored there at
 * completed_ms), until the key's expiry in the database.  The entry's start
 * is the completion time, so that a hit can tell the expiry again. */
static void
cache_store(checkout_t *c, int status, const char *body, size_t len, int64_t completed_ms)
{
    int64_t expiry = cache_expiry(c, completed_ms);
    unsigned char note[SHM_CACHE_REQ_MAX];
    const char *req;
    size_t req_len, note_len = 0;

    if (completed_ms <= 0 || expiry <= clock_real_ms())
        return;                 /* the marker, if any, goes at checkout_free */
    /* The request body, still contiguous from the validation. */
    if ((req = http_req_body(c->r, &req_len)) != NULL)
        note_len = replay_note(&c->order, req, req_len, note);
    /* shm_cache_store replaces our marker; if it could not (a busy set),
     * the marker must still go at checkout_free. */
    if (shm_cache_store(worker_shared(c->worker)->cache, c->key, c->keylen, c->order.fingerprint,
                        status, body, len, note, note_len, completed_ms, expiry)
        == SHM_CACHE_STORED)
        c->marked = 0;
}
