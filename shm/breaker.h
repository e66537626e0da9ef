/*
 * shm_breaker: the payment provider's circuit breaker, shared by all workers
 * of a host so that they open, probe and close together.
 *
 *   CLOSED --threshold unavailable results in a row--> OPEN
 *   OPEN --cooldown elapsed, one caller claims the probe--> HALF_OPEN
 *   HALF_OPEN --probe succeeds--> CLOSED;  --probe fails--> OPEN again
 *
 * While OPEN, and while a probe is out, callers are denied and take the
 * outage path without calling the provider.  A probe claim older than
 * probe_timeout_ms (its owner died or hung) may be claimed again, so a dead
 * worker never wedges the breaker.
 *
 * Lock-free: C11 atomics in a small shared mapping made by the master before
 * fork.  Threshold and cooldown are arguments, not state, so a reload of the
 * configuration applies at once.  Times are milliseconds on one clock shared
 * by all processes: use CLOCK_MONOTONIC.
 */
#ifndef PD_SHM_BREAKER_H
#define PD_SHM_BREAKER_H

#include <stdint.h>

typedef struct shm_breaker shm_breaker_t;

typedef enum {
    SHM_BREAKER_CLOSED = 0,
    SHM_BREAKER_OPEN,
    SHM_BREAKER_HALF_OPEN
} shm_breaker_state_t;

typedef enum {
    SHM_BREAKER_DENY = 0,       /* do not call the provider: outage path */
    SHM_BREAKER_ALLOW,          /* call it */
    SHM_BREAKER_ALLOW_PROBE     /* call it: you are the probe, record the result */
} shm_breaker_verdict_t;

/* Map a closed breaker.  Call in the master before forking; children inherit
 * it.  Returns NULL with errno set. */
shm_breaker_t *shm_breaker_create(void) __attribute__((warn_unused_result));

/* Unmap this process's view.  NULL is ignored. */
void shm_breaker_destroy(shm_breaker_t *b);

/*
 * May this caller call the provider at now_ms?  ALLOW when CLOSED; DENY while
 * OPEN and cooling down or while a probe younger than probe_timeout_ms is out
 * (pass 2 x the provider timeout); else ALLOW_PROBE to exactly one caller.
 */
shm_breaker_verdict_t shm_breaker_allow(shm_breaker_t *b, int64_t now_ms,
                                        int64_t probe_timeout_ms)
    __attribute__((warn_unused_result));

/*
 * Record a provider call's outcome: ok is 0 for "unavailable" (timeout,
 * refused, 5xx), non-zero otherwise (a decline is ok: the provider answered).
 * CLOSED: threshold failures in a row open it for cooldown_ms.  HALF_OPEN:
 * the result closes it or reopens it.  OPEN: ignored (calls that started
 * before it opened).
 */
void shm_breaker_record(shm_breaker_t *b, int ok, int64_t now_ms, int64_t threshold,
                        int64_t cooldown_ms);

/* The current state, for /metrics. */
shm_breaker_state_t shm_breaker_state(shm_breaker_t *b);

/* How many state changes since creation, for /metrics. */
uint64_t shm_breaker_transitions(shm_breaker_t *b);

#endif
