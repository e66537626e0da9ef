/*
 * replay: a cached replay of POST /checkout, answered by the front reader
 * (worker/front.c) without evhttp, and what that answer shares with the
 * handler's (worker/checkout.c): which cache entries may be replayed, and
 * the Location of an order answer.
 */
#ifndef PD_REPLAY_H
#define PD_REPLAY_H

#include <stddef.h>
#include <stdint.h>

#include "common/conf.h"
#include "shm/cache.h"
#include "worker/validate.h"
#include "worker/worker.h"

/* Of worker/front.h, which checkout.c (no libevent there) need not see. */
struct front_request;
struct evbuffer;

#define REPLAY_LOCATION_SIZE 64

/* The front_answer_fn of a worker (arg): answers a request that the handler
 * would answer from the shared cache as a replay, with the same bytes, log
 * line and metrics; returns 0 for any other request. */
int replay_answer(void *arg, const struct front_request *rq, struct evbuffer *out);

/* When a key answered at completed_ms (Unix ms) expires in the database
 * under conf's idempotency_ttl, less a margin for clock skew. */
int64_t replay_expiry(const conf_t *conf, int64_t completed_ms);

/* 1 with a copy in *e when the shared cache holds a completed answer for key
 * that is still unexpired at now_ms (Unix ms) under today's TTL (a reload
 * may have shortened it), else 0.  Lock-free. */
int replay_lookup(worker_t *w, const char *key, size_t keylen, int64_t now_ms,
                  shm_cache_entry_t *e);

/* The note that a cached answer keeps of its request (shm_cache_store's
 * req), for replay_answer to take the same bytes again without parsing:
 * order, validated from body (len bytes).  Returns its length in out, or 0
 * when the body is too long to note (then no note is kept). */
size_t replay_note(const validate_checkout_t *order, const char *body, size_t len,
                   unsigned char out[SHM_CACHE_REQ_MAX]);

/* The Location of a 201 order answer into out: of order_id, or when that is
 * NULL or empty, of the "order_id" member of body (a cached answer).  1, or
 * 0 when there is no valid order id. */
int replay_location(const char *order_id, const char *body, size_t len,
                    char out[REPLAY_LOCATION_SIZE]);

#endif
