/*
 * housekeeper: periodic chores off the request path, in their own process.
 *
 * A round runs four steps, one after the other, each on a batch:
 *
 *   purge    delete idempotency keys answered more than idempotency_ttl ago;
 *   stale    finish checkouts whose worker died mid-way: claim in-progress
 *            keys older than idempotency_lock_timeout (each claim carries a
 *            new lock token), ask the provider what became of each order's
 *            charge (GET, never a new POST: one charge per order) and finish
 *            the order with checkout_finish under that token;
 *   reverse  cancel-or-refund at the provider the charges of FAILED orders
 *            whose reversal is still pending (worker/reversal), retried
 *            every round until the provider answers;
 *   pending  reconcile PENDING_PAYMENT orders older than
 *            pending_reconcile_age whose webhook never came: ask the
 *            provider and apply its answer with webhook_apply under the
 *            event id "reconcile:<order_id>", so that it is recorded like a
 *            webhook and applied at most once.  A charge the provider never
 *            received is sent again with the same Idempotency-Key (the order
 *            id): the buyer was promised this payment, and the key makes a
 *            second charge impossible.
 *
 * Within a step the batch's orders are worked on concurrently, at most
 * HK_CONCURRENCY at a time (a work queue: the next starts when one ends);
 * the step ends when the last one is done.  A full batch of any step starts
 * the next round at once; otherwise it waits housekeeper_interval, so a
 * backlog (thousands of PENDING_PAYMENT orders after an outage) drains as
 * fast as the provider answers.  The pending step asks about the due orders
 * it asked least recently: an order the provider cannot settle yet stays due
 * (it is not locked or touched), so oldest-first alone would let a few such
 * orders block every newer one.
 *
 * Everything is asynchronous on the process's own loop (db pool, provider
 * client); the workers never wait for any of it.  Several housekeepers (on
 * several hosts) may run at once: the claims use SKIP LOCKED, and the
 * reconciliation is idempotent on the provider's side (same key) and on
 * ours (same event id).  SIGQUIT lets the current step finish, then exits;
 * SIGTERM exits at once (a claimed key is claimed again after another lock
 * timeout, a pending order is simply due again).
 */
#include "config.h"

#include "worker/housekeeper.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "common/clock.h"
#include "common/exitcode.h"
#include "common/log.h"
#include "worker/db.h"
#include "worker/metrics.h"
#include "worker/provider.h"
#include "worker/reversal.h"
#include "worker/store.h"
#include "worker/worker.h"

#define PURGE_BATCH 500
#define STALE_BATCH 100
#define REVERSE_BATCH 200
#define PENDING_BATCH 400       /* orders asked about per round */
#define PENDING_WINDOW 1000     /* due orders looked at to choose them */
#define HK_CONCURRENCY 32       /* provider calls of a step at once */
#define DB_POOL_SIZE 4
#define DB_QUEUE_MAX (4 * HK_CONCURRENCY)
#define WORK_MAX PENDING_BATCH  /* the largest batch of any step */

typedef enum { STEP_NONE, STEP_PURGE, STEP_STALE, STEP_REVERSE, STEP_PENDING } step_t;

/* What one step did, for its log line. */
typedef struct {
    int rows;                   /* checkouts claimed, pending orders asked about */
    int paid, failed;           /* orders this step made (or found) PAID / FAILED */
    int not_charged;            /* of failed: the provider never saw the charge */
    int canceled, refunded;     /* reversals settled */
    int resent;                 /* charges sent again */
    int already;                /* settled meanwhile by someone else */
    int left;                   /* the provider could not tell yet */
    int errors;
} tally_t;

/* When the provider was last asked about a pending order (0: never). */
typedef struct {
    char order_id[37];
    int64_t at_ms;
} asked_t;

typedef struct item item_t;

typedef struct {
    const conf_t *conf;
    struct event_base *base;
    resolve_t *resolve;
    db_pool_t *db;
    provider_t *provider;
    shm_metrics_slot_t *metrics;
    item_t *work[WORK_MAX];     /* the step's items, started in order */
    int nwork, nstarted;
    void (*start)(item_t *it);  /* how the current step starts an item */
    struct event *timer;
    step_t step;                /* STEP_NONE between rounds */
    int inflight;               /* orders of the current step still at work */
    int more;                   /* a full batch this round: next round at once */
    int quitting;
    int64_t pending_due_ms;     /* the pending step runs again from then on */
    int pending_full;           /* its last listing filled the window */
    int pending_more;           /* ... and settled some: go on at once */
    asked_t asked[PENDING_WINDOW];  /* when each order of the last window was asked */
    int nasked;
    tally_t tally;
    int64_t retry_after_ms;     /* reversals the workers did not settle */
} housekeeper_t;

/* One order being worked on in the stale, reverse or pending step. */
struct item {
    housekeeper_t *h;
    char key[256];              /* stale: the checkout's Idempotency-Key */
    char token[37];             /* stale: the claim's lock token */
    char order_id[37];
    int64_t amount_cents;
    char currency[8];
    provider_outcome_t said;    /* the provider's answer being applied */
    int resent;                 /* pending: its charge was sent again */
    char charge_id[256];
    char request_id[64];        /* for the provider's logs: housekeeper-<order_id> */
};

static void step_next(housekeeper_t *h);
static void reverse_done(void *arg, reversal_result_t result);

static void
schedule(housekeeper_t *h, int64_t ms)
{
    struct timeval tv = clock_tv(ms);

    evtimer_add(h->timer, &tv);
}

static void
step_log(housekeeper_t *h)
{
    const tally_t *t = &h->tally;
    int acted = t->paid + t->failed + t->already + t->errors;

    if (h->step == STEP_STALE && t->rows > 0) {
        /* A round where the provider still cannot tell is not news. */
        if (acted > 0)
            log_info("stale checkouts: %d claimed; finished %d PAID, %d FAILED (%d never reached "
                     "the provider); %d left for a later claim; %d errors",
                     t->rows, t->paid, t->failed, t->not_charged, t->left, t->errors);
        else
            log_debug("stale checkouts: %d claimed, all left for a later claim", t->rows);
    } else if (h->step == STEP_REVERSE && t->rows > 0) {
        log_info("reversals: asked the provider to cancel %d charges; %d canceled, %d refunded, "
                 "%d left for a later round", t->rows, t->canceled, t->refunded, t->left);
    } else if (h->step == STEP_PENDING && t->rows > 0) {
        if (acted > 0 || t->resent > 0)
            log_info("pending orders: asked about %d; %d PAID, %d FAILED, %d settled meanwhile, "
                     "%d charged again; %d left for a later round; %d errors",
                     t->rows, t->paid, t->failed, t->already, t->resent, t->left, t->errors);
        else
            log_debug("pending orders: asked about %d, all left for a later round", t->rows);
    }
}

/* The current step is over: log it and start the next one (or stop). */
static void
step_end(housekeeper_t *h)
{
    const tally_t *t = &h->tally;

    if (h->step == STEP_PENDING) {
        /* A backlog that the provider is settling: the next round at once.
         * One it cannot settle yet waits for the interval. */
        h->pending_more = h->pending_full && t->paid + t->failed + t->already > 0;
        h->more |= h->pending_more;
    }
    step_log(h);
    memset(&h->tally, 0, sizeof(h->tally));
    step_next(h);
}

/* Queue an order for the current step (started by work_run). */
static item_t *
item_new(housekeeper_t *h, const store_item_t *row)
{
    item_t *it;

    if (h->nwork == WORK_MAX)
        return NULL;            /* cannot happen: batches are at most WORK_MAX */
    it = calloc(1, sizeof(*it));
    if (it == NULL) {
        log_error("out of memory");
        h->tally.errors++;
        return NULL;
    }
    it->h = h;
    snprintf(it->key, sizeof(it->key), "%s", row->key);
    snprintf(it->token, sizeof(it->token), "%s", row->lock_token);
    snprintf(it->order_id, sizeof(it->order_id), "%s", row->order_id);
    snprintf(it->request_id, sizeof(it->request_id), "housekeeper-%s", row->order_id);
    it->amount_cents = row->amount_cents;
    snprintf(it->currency, sizeof(it->currency), "%s", row->currency);
    h->work[h->nwork++] = it;
    return it;
}

/* Start queued items while fewer than HK_CONCURRENCY run; end the step when
 * nothing runs and nothing waits.  The loop holds inflight itself, so that
 * an item that ends inside its own start cannot end the step early. */
static void
work_run(housekeeper_t *h)
{
    h->inflight++;
    while (h->nstarted < h->nwork && h->inflight <= HK_CONCURRENCY) {
        item_t *it = h->work[h->nstarted];

        h->work[h->nstarted++] = NULL;
        h->inflight++;
        h->start(it);
    }
    if (--h->inflight == 0 && h->nstarted == h->nwork) {
        h->nwork = h->nstarted = 0;
        step_end(h);
    }
}

static void
item_done(item_t *it)
{
    housekeeper_t *h = it->h;

    free(it);
    h->inflight--;
    work_run(h);
}

/* A step's first query was sent (rc 0) or not (rc -1: the pool is down or
 * full): then say what the step was doing and go on to the next one. */
static void
step_sent(housekeeper_t *h, int rc, const char *doing)
{
    if (rc < 0) {
        log_warn("%s: the database is unavailable", doing);
        step_next(h);
    }
}

/* ---- purge ---- */

static void
purge_done(void *arg, int purged, const store_err_t *err)
{
    housekeeper_t *h = arg;

    if (err != NULL) {
        log_warn("purging expired idempotency keys failed: %s", err->message);
        step_next(h);
        return;
    }
    if (purged > 0)
        log_info("purged %d expired idempotency keys", purged);
    if (purged == PURGE_BATCH)
        h->more = 1;            /* more are waiting */
    step_next(h);
}

static void
purge_start(housekeeper_t *h)
{
    step_sent(h, store_purge_expired(h->db, h->conf->idempotency_ttl_ms, PURGE_BATCH, purge_done,
                                     h), "purging expired idempotency keys");
}

/* ---- stale checkouts ---- */

static void
stale_finished(void *arg, const store_finish_t *f, const store_err_t *err)
{
    item_t *it = arg;
    housekeeper_t *h = it->h;

    if (err != NULL) {
        /* Not committed: the key stays claimed and is claimed again after
         * another lock timeout.  A cause a retry cannot fix is logged as
         * an error and counted, so it cannot loop unseen. */
        shm_metrics_add(h->metrics, SHM_METRICS_FINISH_FAILED, 1);
        if (err->transient)
            log_warn("finishing the stale checkout of order %s did not commit: %s", it->order_id,
                     err->message);
        else
            log_error("finishing the stale checkout of order %s did not commit: %s", it->order_id,
                      err->message);
        h->tally.errors++;
        item_done(it);
        return;
    }
    if (f->result == STORE_FINISH_STALE) {
        log_info("stale checkout of order %s: taken over by a client's retry meanwhile",
                 it->order_id);
        h->tally.already++;
        item_done(it);
        return;
    }
    log_info("stale checkout of order %s finished: the provider says %s, the order is %s",
             it->order_id, provider_outcome_name(it->said), store_order_status_name(f->status));
    if (f->status == STORE_ORDER_PAID) {
        h->tally.paid++;
    } else if (f->status == STORE_ORDER_FAILED) {
        h->tally.failed++;
        if (it->said == PROVIDER_NOT_FOUND)
            h->tally.not_charged++;
    }
    if (f->reversal) {
        /* FAILED provider_unavailable: cancel-or-refund now; the item
         * ends with it. */
        reversal_start(h->provider, h->db, h->metrics, it->order_id, it->amount_cents,
                       it->currency, it->request_id, reverse_done, it);
        return;
    }
    item_done(it);
}

static void
stale_answered(void *arg, provider_outcome_t outcome, const char *charge_id)
{
    item_t *it = arg;
    housekeeper_t *h = it->h;
    store_outcome_t o;

    it->said = outcome;
    switch (outcome) {
    case PROVIDER_SUCCEEDED: o = STORE_OUTCOME_SUCCEEDED; break;
    case PROVIDER_DECLINED: o = STORE_OUTCOME_DECLINED; break;
    case PROVIDER_NOT_FOUND:
    case PROVIDER_CANCELED:
    case PROVIDER_REFUNDED:
        /* Never received, or given up on at the provider: FAILED; its
         * reversal records any money that moved and came back. */
        o = STORE_OUTCOME_NOT_CHARGED;
        break;
    default:
        /* Pending or no answer: the claim holds the lock, and the key is
         * claimed again after another lock timeout. */
        log_debug("stale checkout of order %s: the provider says %s: left for later",
                  it->order_id, provider_outcome_name(outcome));
        h->tally.left++;
        item_done(it);
        return;
    }
    snprintf(it->charge_id, sizeof(it->charge_id), "%s", charge_id ? charge_id : "");
    {
        store_finish_req_t q = {
            .order_id = it->order_id, .key = it->key, .lock_token = it->token, .outcome = o,
            .charge_id = it->charge_id[0] ? it->charge_id : NULL,
            .outage_cap_cents = h->conf->outage_pending_cap_cents,
        };
        if (store_checkout_finish(h->db, &q, stale_finished, it) < 0) {
            store_err_t e = { 1, "the database is unavailable" };
            stale_finished(it, NULL, &e);
        }
    }
}

static void
stale_start_item(item_t *it)
{
    log_info("checkout of order %s was left unfinished: asking the provider", it->order_id);
    provider_get_charge(it->h->provider, it->order_id, it->amount_cents, it->currency,
                        it->request_id, stale_answered, it);
}

static void
stale_claimed(void *arg, const store_item_t *rows, int n, const store_err_t *err)
{
    housekeeper_t *h = arg;

    if (err != NULL) {
        log_warn("claiming stale checkouts failed: %s", err->message);
        step_next(h);
        return;
    }
    h->tally.rows = n;
    if (n == STALE_BATCH)
        h->more = 1;            /* the claimed ones are locked again: others wait */
    for (int i = 0; i < n; i++)
        (void)item_new(h, &rows[i]);
    h->start = stale_start_item;
    work_run(h);
}

static void
stale_start(housekeeper_t *h)
{
    step_sent(h, store_claim_stale(h->db, h->conf->idempotency_lock_timeout_ms, STALE_BATCH,
                                   stale_claimed, h), "claiming stale checkouts");
}

/* ---- reversals ---- */

static void
reverse_done(void *arg, reversal_result_t result)
{
    item_t *it = arg;
    housekeeper_t *h = it->h;

    if (result == REVERSAL_CANCELED)
        h->tally.canceled++;
    else if (result == REVERSAL_REFUNDED)
        h->tally.refunded++;
    else
        h->tally.left++;
    item_done(it);
}

static void
reverse_start_item(item_t *it)
{
    reversal_start(it->h->provider, it->h->db, it->h->metrics, it->order_id, it->amount_cents,
                   it->currency, it->request_id, reverse_done, it);
}

static void
reverse_listed(void *arg, const store_item_t *rows, int n, const store_err_t *err)
{
    housekeeper_t *h = arg;

    if (err != NULL) {
        log_warn("listing pending reversals failed: %s", err->message);
        step_next(h);
        return;
    }
    h->tally.rows = n;
    if (n == REVERSE_BATCH)
        h->more = 1;
    for (int i = 0; i < n; i++)
        (void)item_new(h, &rows[i]);
    h->start = reverse_start_item;
    work_run(h);
}

static void
reverse_start(housekeeper_t *h)
{
    step_sent(h, store_reversals_due(h->db, h->retry_after_ms, REVERSE_BATCH, reverse_listed, h),
              "listing pending reversals");
}

/* ---- pending orders ---- */

static void
pending_applied(void *arg, const store_apply_t *a, const store_err_t *err)
{
    item_t *it = arg;
    housekeeper_t *h = it->h;

    if (err != NULL) {
        log_warn("reconciling order %s failed: %s", it->order_id, err->message);
        h->tally.errors++;
        item_done(it);
        return;
    }
    if (a->result == STORE_APPLY_APPLIED) {
        log_info("reconciled order %s: the provider says %s%s, the order is %s", it->order_id,
                 provider_outcome_name(it->said), it->resent ? " (charge sent again)" : "",
                 store_order_status_name(a->order_status));
        if (it->said == PROVIDER_SUCCEEDED)
            h->tally.paid++;
        else
            h->tally.failed++;
    } else if (a->result == STORE_APPLY_NOT_FOUND) {
        log_warn("reconciling order %s: the order is gone", it->order_id);
        h->tally.errors++;
    } else {
        /* duplicate or not_applied: a webhook or another housekeeper was
         * first; webhook_apply logged nothing, so say it here. */
        log_info("reconciling order %s: already settled (%s, order is %s)", it->order_id,
                 a->result == STORE_APPLY_DUPLICATE ? "duplicate" : "not_applied",
                 store_order_status_name(a->order_status));
        h->tally.already++;
    }
    item_done(it);
}

/* The payload recorded with the reconciliation "event": where it came from. */
static char *
reconcile_payload(const item_t *it, const char *outcome)
{
    json_object *o = json_object_new_object();
    char *s = NULL;

    if (o == NULL)
        return NULL;
    json_object_object_add(o, "source", json_object_new_string("reconciliation"));
    json_object_object_add(o, "order_id", json_object_new_string(it->order_id));
    json_object_object_add(o, "outcome", json_object_new_string(outcome));
    json_object_object_add(o, "provider_status",
                           json_object_new_string(provider_outcome_name(it->said)));
    if (it->charge_id[0] != '\0')
        json_object_object_add(o, "charge_id", json_object_new_string(it->charge_id));
    json_object_object_add(o, "charge_resent", json_object_new_boolean(it->resent));
    s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    return s;
}

static void
pending_answered(void *arg, provider_outcome_t outcome, const char *charge_id)
{
    item_t *it = arg;
    housekeeper_t *h = it->h;
    const char *verdict;
    char event_id[64], *payload;

    switch (outcome) {
    case PROVIDER_SUCCEEDED: verdict = "PAID"; break;
    case PROVIDER_DECLINED: verdict = "FAILED"; break;
    case PROVIDER_NOT_FOUND:
        /* The checkout's charge never reached the provider (refused, lost,
         * or skipped by an open circuit breaker).  The order is one the
         * buyer expects to pay: send the charge now, under the same key, so
         * that at most one charge can ever exist.  (A POST never answers
         * "not found", so this happens once per order and round.) */
        log_info("order %s is PENDING_PAYMENT but the provider never received its charge: "
                 "sending it again", it->order_id);
        it->resent = 1;
        h->tally.resent++;
        provider_charge(h->provider, it->order_id, it->amount_cents, it->currency,
                        it->request_id, pending_answered, it);
        return;
    default:
        log_debug("pending order %s: the provider says %s: left for a later round",
                  it->order_id, provider_outcome_name(outcome));
        h->tally.left++;
        item_done(it);
        return;
    }
    it->said = outcome;
    snprintf(it->charge_id, sizeof(it->charge_id), "%s", charge_id ? charge_id : "");
    snprintf(event_id, sizeof(event_id), "reconcile:%s", it->order_id);
    payload = reconcile_payload(it, verdict);
    {
        store_apply_req_t q = {
            .event_id = event_id, .order_id = it->order_id, .payload = payload,
            .paid = outcome == PROVIDER_SUCCEEDED,
        };
        if (payload == NULL || store_webhook_apply(h->db, &q, pending_applied, it) < 0) {
            log_warn("reconciling order %s: the database is unavailable", it->order_id);
            h->tally.errors++;
            free(payload);
            item_done(it);
            return;
        }
    }
    free(payload);
}

static void
pending_start_item(item_t *it)
{
    provider_get_charge(it->h->provider, it->order_id, it->amount_cents, it->currency,
                        it->request_id, pending_answered, it);
}

/* A due order of the window, ranked for this round. */
typedef struct {
    int row;
    int64_t asked_ms;
} due_t;

static int
due_cmp(const void *a, const void *b)
{
    const due_t *x = a, *y = b;

    if (x->asked_ms != y->asked_ms)
        return x->asked_ms < y->asked_ms ? -1 : 1;
    return x->row - y->row;     /* then oldest first, as listed */
}

static int64_t
asked_at(const housekeeper_t *h, const char *order_id)
{
    for (int i = 0; i < h->nasked; i++) {
        if (strcmp(h->asked[i].order_id, order_id) == 0)
            return h->asked[i].at_ms;
    }
    return 0;
}

/*
 * The due orders, oldest first (up to PENDING_WINDOW).  The provider is
 * asked about PENDING_BATCH of them: those asked least recently, never-asked
 * first.  With few due orders that is all of them every round; with many,
 * the ones the provider cannot settle yet (still pending, or it is down) go
 * to the back instead of blocking the rest of the queue.
 */
static void
pending_listed(void *arg, const store_item_t *rows, int nrows, const store_err_t *err)
{
    housekeeper_t *h = arg;
    static due_t due[PENDING_WINDOW];
    static asked_t next[PENDING_WINDOW];
    int64_t now = clock_mono_ms();
    int n, pick;

    if (err != NULL) {
        log_warn("listing pending orders failed: %s", err->message);
        step_next(h);
        return;
    }
    n = nrows < PENDING_WINDOW ? nrows : PENDING_WINDOW;
    for (int i = 0; i < n; i++) {
        due[i].row = i;
        due[i].asked_ms = asked_at(h, rows[i].order_id);
    }
    qsort(due, (size_t)n, sizeof(due[0]), due_cmp);
    pick = n < PENDING_BATCH ? n : PENDING_BATCH;
    /* Remember the window only: an order that left it is settled (or will
     * be looked at afresh when it comes back into view). */
    for (int i = 0; i < n; i++) {
        snprintf(next[i].order_id, sizeof(next[i].order_id), "%s", rows[due[i].row].order_id);
        next[i].at_ms = i < pick ? now : due[i].asked_ms;
    }
    memcpy(h->asked, next, (size_t)n * sizeof(next[0]));
    h->nasked = n;

    h->tally.rows = pick;
    h->pending_full = (n == PENDING_WINDOW);
    for (int i = 0; i < pick; i++)
        (void)item_new(h, &rows[due[i].row]);
    h->start = pending_start_item;
    work_run(h);
}

static void
pending_start(housekeeper_t *h)
{
    step_sent(h, store_pending_due(h->db, h->conf->pending_reconcile_age_ms, PENDING_WINDOW,
                                   pending_listed, h), "listing pending orders");
}

/* ---- rounds ---- */

/* Start the step after the current one; after the last, wait for the next
 * round.  A SIGQUIT received meanwhile ends the process here, between
 * steps. */
static void
step_next(housekeeper_t *h)
{
    if (h->quitting) {
        h->step = STEP_NONE;
        event_base_loopexit(h->base, NULL);
        return;
    }
    switch (h->step) {
    case STEP_NONE:
        h->more = 0;
        h->step = STEP_PURGE;
        purge_start(h);
        return;
    case STEP_PURGE:
        h->step = STEP_STALE;
        stale_start(h);
        return;
    case STEP_STALE:
        h->step = STEP_REVERSE;
        reverse_start(h);
        return;
    case STEP_REVERSE:
        /* Reconciliation runs once per interval, or at once while a backlog
         * of due orders is being settled (pending_more). */
        if (clock_mono_ms() >= h->pending_due_ms || h->pending_more) {
            h->pending_due_ms = clock_mono_ms() + h->conf->housekeeper_interval_ms;
            h->step = STEP_PENDING;
            pending_start(h);
            return;
        }
        break;
    case STEP_PENDING:
        break;
    }
    h->step = STEP_NONE;
    schedule(h, h->more ? 0 : h->conf->housekeeper_interval_ms);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    step_next(arg);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
    housekeeper_t *h = arg;

    (void)what;
    if (sig == SIGUSR1) {
        worker_reopen_logs();
        return;
    }
    if (sig == SIGQUIT) {
        h->quitting = 1;
        evtimer_del(h->timer);
        if (h->step == STEP_NONE)
            event_base_loopexit(h->base, NULL);
        else
            log_info("finishing the current step before exiting");
        return;
    }
    if (sig == SIGTERM || sig == SIGINT)
        exit(0);
}

void
housekeeper_main(const conf_t *conf, const worker_shared_t *shared, pid_t master)
{
    struct event *signals[WORKER_SIGNALS] = { NULL };
    struct event *ignored = NULL;
    housekeeper_t h;
    const char *what;
    int code;

    if (worker_child_init("paymentsd: housekeeper process", "housekeeper", master) < 0)
        exit(0);
    memset(&h, 0, sizeof(h));
    h.conf = conf;
    /* A worker sends the first cancel as it answers; the housekeeper takes
     * over what is still pending after a provider call's worth of time. */
    h.retry_after_ms = 2 * conf->provider_timeout_ms + conf->db_timeout_ms;
    h.metrics = shm_metrics_slot(shared->metrics, SHM_METRICS_HOUSEKEEPER);

    h.base = worker_loop_new(on_signal, &h, signals, &ignored, &what);
    if (h.base == NULL)
        goto fail;
    code = worker_clients_new(h.base, conf, "paymentsd housekeeper", DB_POOL_SIZE, DB_QUEUE_MAX,
                              &h.resolve, &h.db, &h.provider, &what);
    if (code != PD_EXIT_OK)
        worker_start_failed(what, code);
    metrics_observe(h.metrics, h.db, h.provider);
    what = "evtimer_new";
    h.timer = evtimer_new(h.base, timer_cb, &h);
    if (h.timer == NULL)
        goto fail;

    schedule(&h, conf->housekeeper_interval_ms);
    log_info("started");
    event_base_dispatch(h.base);
    worker_signals_done();
    log_info("exiting");
    event_free(h.timer);
    provider_free(h.provider);
    db_pool_free(h.db);
    resolve_free(h.resolve);
    for (size_t i = 0; i < WORKER_SIGNALS; i++)
        event_free(signals[i]);
    worker_ignore_signals_free(ignored);
    resolve_settle(h.base);
    event_base_free(h.base);
    exit(PD_EXIT_OK);

fail:
    worker_start_failed(what, PD_EXIT_FAILURE);
}
