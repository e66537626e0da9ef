/*
 * reversal: POST /v1/charges/{order_id}/cancel, then reversal_settle().
 *
 * Two asynchronous steps on the caller's loop (provider client, db pool),
 * with one small heap object carrying the order between them.  The
 * provider's cancel is idempotent and so is reversal_settle, so the worker
 * that answered FAILED and the housekeeper may both run one for the same
 * order: whichever records first settles it, the other changes nothing.
 */
#include "config.h"

#include "worker/reversal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "worker/store.h"

typedef struct {
    db_pool_t *db;
    shm_metrics_slot_t *metrics;
    char order_id[37];
    char request_id[129];       /* the request that started it, for log lines */
    provider_outcome_t said;
    reversal_cb_t cb;
    void *arg;
} reversal_t;

static void
reversal_end(reversal_t *rv, reversal_result_t result)
{
    if (rv->cb != NULL)
        rv->cb(rv->arg, result);
    free(rv);
}

static void
count(reversal_t *rv, shm_metrics_counter_t c)
{
    if (rv->metrics != NULL)
        shm_metrics_add(rv->metrics, c, 1);
}

static void
settled(void *arg, store_reversal_t status, const store_err_t *err)
{
    reversal_t *rv = arg;

    if (err != NULL) {
        log_req_warn(rv->request_id,
                     "reversal of order %s: the provider said %s, but recording it failed: %s",
                     rv->order_id, provider_outcome_name(rv->said), err->message);
        count(rv, SHM_METRICS_REVERSAL_UNRECORDED);
        reversal_end(rv, REVERSAL_UNSETTLED);
        return;
    }
    log_req_info(rv->request_id, "reversal of order %s: the provider says %s; the reversal is %s",
                 rv->order_id, provider_outcome_name(rv->said), store_reversal_name(status));
    reversal_end(rv, status == STORE_REVERSAL_REFUNDED ? REVERSAL_REFUNDED
                     : status == STORE_REVERSAL_CANCELED ? REVERSAL_CANCELED
                     : REVERSAL_UNSETTLED);
}

static void
answered(void *arg, provider_outcome_t outcome, const char *charge_id)
{
    reversal_t *rv = arg;
    store_cancel_answer_t answer;
    shm_metrics_counter_t c;

    (void)charge_id;
    rv->said = outcome;
    switch (outcome) {
    case PROVIDER_CANCELED:
        answer = STORE_ANSWER_CANCELED;
        c = SHM_METRICS_REVERSAL_CANCELED;
        break;
    case PROVIDER_REFUNDED:
        answer = STORE_ANSWER_REFUNDED;
        c = SHM_METRICS_REVERSAL_REFUNDED;
        break;
    case PROVIDER_DECLINED:
        answer = STORE_ANSWER_DECLINED;
        c = SHM_METRICS_REVERSAL_DECLINED;
        break;
    case PROVIDER_NOT_FOUND:
        answer = STORE_ANSWER_NOT_FOUND;
        c = SHM_METRICS_REVERSAL_NOT_FOUND;
        break;
    default:
        log_req_warn(rv->request_id,
                     "reversal of order %s: no answer from the provider (%s): "
                     "the housekeeper will try again",
                     rv->order_id, provider_outcome_name(outcome));
        count(rv, SHM_METRICS_REVERSAL_UNAVAILABLE);
        reversal_end(rv, REVERSAL_UNSETTLED);
        return;
    }
    count(rv, c);
    if (store_reversal_settle(rv->db, rv->order_id, answer, settled, rv) < 0) {
        store_err_t e = { 1, "the database is unavailable" };
        settled(rv, STORE_REVERSAL_PENDING, &e);
    }
}

void
reversal_start(provider_t *p, db_pool_t *db, shm_metrics_slot_t *metrics,
               const char *order_id, int64_t amount_cents, const char *currency,
               const char *request_id, reversal_cb_t cb, void *arg)
{
    reversal_t *rv = calloc(1, sizeof(*rv));

    if (rv == NULL) {
        log_req_error(request_id, "reversal of order %s: out of memory: the housekeeper will do it",
                      order_id);
        if (cb != NULL)
            cb(arg, REVERSAL_UNSETTLED);
        return;
    }
    rv->db = db;
    rv->metrics = metrics;
    rv->cb = cb;
    rv->arg = arg;
    snprintf(rv->order_id, sizeof(rv->order_id), "%s", order_id);
    snprintf(rv->request_id, sizeof(rv->request_id), "%s", request_id ? request_id : "");
    provider_cancel(p, rv->order_id, amount_cents, currency, request_id, answered, rv);
}
