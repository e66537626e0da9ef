/*
 * orders: the order read endpoints.
 *
 * The path is checked here (a canonical UUID, then nothing or "/ledger");
 * PostgreSQL builds the JSON answer (order_get, order_ledger), which is sent
 * as it comes.  A read is never retried here: a failed one answers 503 when
 * retrying may help, else 500.
 */
#include "config.h"

#include "worker/orders.h"

#include <string.h>

#include "worker/store.h"
#include "worker/validate.h"
#include "worker/worker.h"

static void read_done(void *arg, const char *body, size_t len, const store_err_t *err);

void
orders_handle(http_req_t *r)
{
    const char *rest = http_req_path(r) + strlen("/orders/");
    char id[37];
    int ledger;

    if (strlen(rest) < 36)
        goto not_found;
    memcpy(id, rest, 36);
    id[36] = '\0';
    if (!validate_uuid(id))
        goto not_found;
    if (rest[36] == '\0') {
        ledger = 0;
    } else if (strcmp(rest + 36, "/ledger") == 0) {
        ledger = 1;
        http_req_set_route(r, SHM_METRICS_ROUTE_ORDER_LEDGER);
    } else {
        goto not_found;
    }
    if ((ledger ? store_order_ledger : store_order_get)(worker_db(http_req_worker(r)), id,
                                                        read_done, r) < 0)
        http_reply_unavailable(r, "the database is unavailable; retry later");
    return;
not_found:
    http_reply_error(r, 404, "order_not_found", "no such order", NULL);
}

static void
read_done(void *arg, const char *body, size_t len, const store_err_t *err)
{
    http_req_t *r = arg;

    if (err != NULL && err->transient) {
        req_log_warn(r, "database call failed: %s", err->message);
        http_reply_unavailable(r, "the database is unavailable; retry later");
    } else if (err != NULL) {
        req_log_error(r, "database call failed: %s", err->message);
        http_reply_error(r, 500, "internal_error", "internal error", NULL);
    } else if (body == NULL) {
        http_reply_error(r, 404, "order_not_found", "no such order", NULL);
    } else {
        http_reply(r, 200, "application/json", body, len);
    }
}
