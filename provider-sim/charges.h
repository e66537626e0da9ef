/*
 * charges: the sim's in-memory charges, found by idempotency key or by
 * order id, and the seeded decisions about each one.
 *
 * Every decision (declined? held past the client's timeout? the charge id,
 * the jitter of a webhook retry) is a pure function of (seed, purpose, key):
 *
 *     u = first 8 bytes, big-endian, of SHA-256("<seed>:<purpose>:<key>")
 *         shifted right by 11, times 2^-53          (uniform in [0, 1))
 *     declined  iff u("decline") < decline_rate
 *     timed out iff u("timeout") < timeout_rate
 *     charge id = "ch_" + hex of the first 12 bytes of SHA-256("<seed>:charge:<key>")
 *
 * so a run is repeatable whatever order requests arrive in, and a test can
 * predict it.  Single-threaded: used from the sim's one event loop.
 */
#ifndef PD_SIM_CHARGES_H
#define PD_SIM_CHARGES_H

#include <stdint.h>

typedef struct sim_charges sim_charges_t;

/* A charge; owned by the store, which never frees one before
 * sim_charges_free(), so other modules may keep pointers to it. */
typedef struct sim_charge {
    const char *key;                /* idempotency key */
    const char *order_id;
    const char *currency;
    int64_t amount_cents;
    char charge_id[28];             /* "ch_" + 24 hex */
    char event_id[29];              /* "evt_" + the same 24 hex */
    int declined;                   /* decided outcome: 0 succeeded, 1 declined */
    int timeout;                    /* decided: the first answer is held */
    int settled;                    /* the outcome is final and may be told */
    int64_t attempts;               /* requests received for it */
} sim_charge_t;

typedef struct {
    int64_t charges;
    int64_t charge_requests;        /* sum of attempts */
    int64_t succeeded;              /* settled charges by outcome */
    int64_t declined;
    int64_t pending;                /* received, not yet settled */
} sim_charges_stats_t;

/* An empty store deciding with these parameters; NULL when out of memory. */
sim_charges_t *sim_charges_new(int64_t seed, double decline_rate, double timeout_rate)
    __attribute__((warn_unused_result));

/* Free the store and every charge in it. */
void sim_charges_free(sim_charges_t *s);

/* The charge of an idempotency key, or NULL. */
sim_charge_t *sim_charges_find(const sim_charges_t *s, const char *key);

/* The most recently created charge for an order, or NULL. */
sim_charge_t *sim_charges_find_order(const sim_charges_t *s, const char *order_id);

/*
 * Create the charge of a new key (the caller has checked that it is new),
 * unsettled and with no attempts, its outcome and timeout already decided.
 * Returns it, or NULL when out of memory.
 */
sim_charge_t *sim_charges_add(sim_charges_t *s, const char *key, const char *order_id,
                              int64_t amount_cents, const char *currency)
    __attribute__((warn_unused_result));

/* Count one request received for c. */
void sim_charges_attempt(sim_charges_t *s, sim_charge_t *c);

/* Make c's outcome final (once; later calls do nothing). */
void sim_charges_settle(sim_charges_t *s, sim_charge_t *c);

/* "pending" until settled, then "succeeded" or "declined". */
const char *sim_charges_status(const sim_charge_t *c);

/* Copy the counters. */
void sim_charges_stats(const sim_charges_t *s, sim_charges_stats_t *out);

/* u in [0, 1) for (seed, purpose, key) as described above. */
double sim_charges_uniform(int64_t seed, const char *purpose, const char *key);

#endif
