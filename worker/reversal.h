/*
 * reversal: cancel-or-refund of a charge the provider may hold for a FAILED
 * order.
 *
 * A provider timeout is unknown, not declined: the provider may capture the
 * charge after paymentsd answered FAILED provider_unavailable.  PostgreSQL
 * opens a pending reversal for such an order (checkout_finish, and
 * webhook_apply for a PAID event of a FAILED order); this module asks the
 * provider to cancel the charge (POST /v1/charges/{order_id}/cancel) and
 * records its answer with reversal_settle, which writes the late capture and
 * the refund to the ledger when money had moved.  An attempt that gets no
 * answer changes nothing: the housekeeper tries again until the provider
 * confirms.
 */
#ifndef PD_REVERSAL_H
#define PD_REVERSAL_H

#include <stdint.h>

#include "shm/metrics.h"
#include "worker/db.h"
#include "worker/provider.h"

typedef enum {
    REVERSAL_CANCELED,          /* settled: no money moved, none ever will */
    REVERSAL_REFUNDED,          /* settled: captured and given back (in the ledger) */
    REVERSAL_UNSETTLED          /* no answer from the provider or the database: retry later */
} reversal_result_t;

typedef void (*reversal_cb_t)(void *arg, reversal_result_t result);

/*
 * Cancel order_id's charge (amount_cents, currency: the order's) at provider
 * p and record the answer in db.  cb (may be NULL) is called exactly once,
 * from the loop, when both steps are over.  request_id (may be NULL) goes
 * to the provider as X-Request-Id and tags the log lines.  Each attempt is counted in
 * metrics (may be NULL) by the provider's answer.  Nothing is ever retried
 * here.
 */
void reversal_start(provider_t *p, db_pool_t *db, shm_metrics_slot_t *metrics,
                    const char *order_id, int64_t amount_cents, const char *currency,
                    const char *request_id, reversal_cb_t cb, void *arg);

#endif
