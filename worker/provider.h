/*
 * provider: the payment provider's HTTP API, called with libevent's HTTP
 * client from a worker's (or the housekeeper's) event loop.
 *
 * Every charge carries Idempotency-Key: <order_id>, so that a retried or
 * recovered checkout can never charge twice.  Connections are kept alive and
 * reused, over plain HTTP or TLS; each call has its own deadline
 * (provider_timeout) and nothing here ever blocks.
 *
 * An answer is believed only when it is about the order asked about: a
 * body naming another order or amount, a charge_id that is not 1..255
 * visible ASCII characters, or a status this client does not know, is
 * UNAVAILABLE and logged as a protocol error.  Never a guess, never a
 * truncated id.
 */
#ifndef PD_PROVIDER_H
#define PD_PROVIDER_H

#include <stdint.h>

#include "common/resolve.h"
#include "worker/provider_answer.h"

struct event_base;

typedef struct provider provider_t;

/* charge_id is NULL unless the provider named the charge (then 1..255
 * characters 0x21-0x7E); valid during the callback only. */
typedef void (*provider_cb_t)(void *arg, provider_outcome_t outcome, const char *charge_id);

/*
 * url is "http://host[:port]" or "https://host[:port]".  A host name is
 * followed with resolve (the process's resolver, kept by the caller until
 * provider_free; may be NULL when the host is an IP address): connections
 * go to its latest address, and calls made before its first answer wait
 * for it within their deadline.  For https, the provider's certificate
 * must chain to ca_file (a PEM file of trusted CAs) or, when ca_file is
 * NULL, to the system's default CAs, and must name the URL's host (SNI
 * too), whatever address the connection goes to.  Returns NULL (and logs
 * why) on a bad URL, an unreadable ca_file, a host name without a
 * resolver, or allocation failure.
 */
provider_t *provider_new(struct event_base *base, resolve_t *resolve, const char *url,
                         const char *ca_file, int64_t timeout_ms)
    __attribute__((warn_unused_result));

/* Free the provider and its idle connections.  Calls still running keep
 * their own connection and must have completed before this is called. */
void provider_free(provider_t *p);

/*
 * Every call sends request_id (the request it serves, 1..128 visible
 * characters; NULL for none) as X-Request-Id, so that the provider's logs
 * and ours name the same request.
 *
 * POST /v1/charges for order_id.  cb is called exactly once, from the loop
 * (never from inside this call), with SUCCEEDED or DECLINED (a 2xx answer
 * about this order and amount, or a 402: the provider refused the
 * payment), or UNAVAILABLE: no complete answer within the timeout, 5xx,
 * any 4xx but 402, or a body not to believe (see above).
 */
void provider_charge(provider_t *p, const char *order_id, int64_t amount_cents,
                     const char *currency, const char *request_id, provider_cb_t cb, void *arg);

/*
 * GET /v1/charges/{order_id}: what the provider knows of the order's charge,
 * for recovery and reconciliation.  cb is called exactly once, from the
 * loop, with SUCCEEDED, DECLINED, PENDING, CANCELED, REFUNDED, NOT_FOUND (a
 * 404 whose error code is charge_not_found, nothing else) or UNAVAILABLE
 * (any other answer, or none complete within the timeout).  An answer about
 * another order, amount or currency than the ones given is logged and
 * reported as UNAVAILABLE: an order is never settled on some other charge's
 * word.
 */
void provider_get_charge(provider_t *p, const char *order_id, int64_t amount_cents,
                         const char *currency, const char *request_id, provider_cb_t cb,
                         void *arg);

/*
 * POST /v1/charges/{order_id}/cancel: make sure the provider keeps no money
 * for the order (idempotent; safe to repeat until it is confirmed).  cb is
 * called exactly once, from the loop, with CANCELED (never captured),
 * REFUNDED (captured and given back in full), DECLINED, NOT_FOUND (the
 * provider will refuse the charge if it ever arrives), or UNAVAILABLE: no
 * 2xx answer within the timeout, or one about another order or amount.
 */
void provider_cancel(provider_t *p, const char *order_id, int64_t amount_cents,
                     const char *currency, const char *request_id, provider_cb_t cb, void *arg);

/* Told of every call as it ends, just before its callback: which call, its
 * outcome, and the time from the call to its outcome in microseconds. */
typedef void (*provider_observe_fn)(void *arg, provider_call_t call, provider_outcome_t outcome,
                                    int64_t dur_us);

/* Set (or, with NULL, clear) the observer of p's calls (for metrics). */
void provider_set_observer(provider_t *p, provider_observe_fn fn, void *arg);

#endif
