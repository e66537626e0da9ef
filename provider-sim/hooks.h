/*
 * hooks: settling held charges and delivering their signed webhooks.
 *
 * A charge the client never got an answer for is settled webhook_delay
 * after it arrived (by the wall clock, so that a restarted sim keeps the
 * schedule); the sim then POSTs
 *
 *     {"event_id": "evt_...", "order_id": "...", "outcome": "PAID" | "FAILED"}
 *
 * to webhook_url, signed with whsig at each attempt (the timestamp moves),
 * and retries anything but a 2xx (a 404 too: the order may not exist yet)
 * with exponential back-off and seeded jitter, up to webhook_max_attempts.
 * A charge canceled before it settled gets no webhook at all (nothing was
 * captured, and the canceller already knows); nor does one refunded while
 * its webhook still waits for a retry.  The end of a delivery (delivered or
 * given up) is journaled, so a restart sends only the webhooks still owed.
 * Single-threaded: runs on the sim's event loop, never blocks it.
 */
#ifndef PD_SIM_HOOKS_H
#define PD_SIM_HOOKS_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "provider-sim/charges.h"
#include "provider-sim/conf.h"

typedef struct sim_hooks sim_hooks_t;

typedef struct {
    int64_t delivered;              /* webhooks answered 2xx */
    int64_t attempts;               /* POSTs tried, all webhooks together */
    int64_t failed;                 /* webhooks given up after the last attempt */
    int64_t pending;                /* webhooks waiting to settle, to retry or in flight */
    int64_t dropped;                /* not sent: the charge was canceled or refunded */
} sim_hooks_stats_t;

/*
 * A sender for conf's webhook_url on base.  A host name in the URL is
 * followed with evdns (resolv_conf, resolve_interval): one that does not
 * resolve yet only fails the attempts made meanwhile, which are retried.
 * Nothing blocks.  conf and charges must outlive it.  Returns NULL with a
 * message in err.
 */
sim_hooks_t *sim_hooks_new(struct event_base *base, const sim_conf_t *conf,
                           sim_charges_t *charges, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Settle c webhook_delay after its created_ms (at once if that is past),
 * then deliver its webhook; for a c already settled, just deliver it.
 * Returns 0, or -1 when out of memory (nothing is scheduled). */
int sim_hooks_settle_later(sim_hooks_t *h, sim_charge_t *c) __attribute__((warn_unused_result));

/* Copy the counters. */
void sim_hooks_stats(const sim_hooks_t *h, sim_hooks_stats_t *out);

/* Drop every pending delivery (logged), close connections in flight, free. */
void sim_hooks_free(sim_hooks_t *h);

#endif
