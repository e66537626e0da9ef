/*
 * checkout: POST /checkout.
 *
 *   validate -> checkout_begin() -> provider charge -> checkout_finish() -> reply
 *
 * Each database step is one SQL function call (one round trip, one
 * transaction); the provider is called in between with the order id as its
 * idempotency key.  Everything is asynchronous on the worker's loop.
 */
#ifndef PD_CHECKOUT_H
#define PD_CHECKOUT_H

#include "worker/http.h"

/* POST /checkout. */
void checkout_handle(http_req_t *r);

#endif
