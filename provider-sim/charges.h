/*
 * charges: the sim's charges, found by idempotency key or by order id, the
 * seeded decisions about each one, and their journal.
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
 * predict it.
 *
 * A charge's life:
 *
 *     PENDING --settle--> SUCCEEDED --cancel--> REFUNDED
 *        |                DECLINED   (cancel changes nothing)
 *        +----cancel----> CANCELED   (never captured)
 *     (none) --cancel--> TOMBSTONE   (refused if it ever arrives)
 *
 * Changes are made in memory and mark the charge dirty; sim_charges_sync()
 * writes every dirty charge as one journal line (the whole charge), so the
 * server syncs before it answers and a restart replays the latest line of
 * each charge.  Single-threaded: used from the sim's one event loop.
 */
#ifndef PD_SIM_CHARGES_H
#define PD_SIM_CHARGES_H

#include <stddef.h>
#include <stdint.h>

typedef struct sim_charges sim_charges_t;

typedef enum {
    SIM_CHARGE_PENDING,             /* received, outcome decided, not settled yet */
    SIM_CHARGE_SUCCEEDED,           /* captured: the provider holds the money */
    SIM_CHARGE_DECLINED,            /* refused: no money moved */
    SIM_CHARGE_CANCELED,            /* canceled while pending: never captured */
    SIM_CHARGE_REFUNDED,            /* captured, then given back in full */
    SIM_CHARGE_TOMBSTONE            /* canceled before it arrived: refused if it comes */
} sim_charge_state_t;

/* A charge; owned by the store, which never frees one before
 * sim_charges_free(), so other modules may keep pointers to it. */
typedef struct sim_charge {
    const char *key;                /* idempotency key (a tombstone's: its order id) */
    const char *order_id;
    const char *currency;           /* NULL for a tombstone */
    int64_t amount_cents;           /* 0 for a tombstone */
    char charge_id[28];             /* "ch_" + 24 hex */
    char event_id[29];              /* "evt_" + the same 24 hex */
    int declined;                   /* decided outcome: 0 succeeded, 1 declined */
    int timeout;                    /* decided: the first answer is held */
    int notify;                     /* the outcome is told by webhook (not answered in time) */
    int notified;                   /* ... and that webhook was delivered or given up */
    sim_charge_state_t state;
    int64_t attempts;               /* charge requests received for it */
    int64_t refunded_cents;
    int64_t created_ms;             /* wall clock, ms since the epoch */
} sim_charge_t;

typedef struct {
    int64_t charges;                /* tombstones not included */
    int64_t charge_requests;        /* sum of attempts, tombstones' included */
    int64_t succeeded;              /* charges by state */
    int64_t declined;
    int64_t pending;
    int64_t canceled;
    int64_t refunded;
    int64_t tombstones;
} sim_charges_stats_t;

/* An empty store deciding with these parameters, no journal; NULL when out
 * of memory. */
sim_charges_t *sim_charges_new(int64_t seed, double decline_rate, double timeout_rate)
    __attribute__((warn_unused_result));

/*
 * Replay the journal at path into the (empty) store and keep writing to it.
 * Returns 0, or -1 with a message in err.
 */
int sim_charges_journal(sim_charges_t *s, const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Free the store, every charge in it, and its journal. */
void sim_charges_free(sim_charges_t *s);

/* The charge of an idempotency key, or NULL. */
sim_charge_t *sim_charges_find(const sim_charges_t *s, const char *key);

/* The most recently created charge (or tombstone) of an order, or NULL. */
sim_charge_t *sim_charges_find_order(const sim_charges_t *s, const char *order_id);

/*
 * Create the charge of a new key (the caller has checked that it is new),
 * with its first attempt counted and its outcome and timeout decided.  When
 * neither hold (the sim is in an outage) nor a drawn timeout keeps it
 * waiting it is settled at once; else it is PENDING with notify set.
 * Returns it, or NULL when out of memory.
 */
sim_charge_t *sim_charges_add(sim_charges_t *s, const char *key, const char *order_id,
                              int64_t amount_cents, const char *currency, int hold,
                              int64_t now_ms) __attribute__((warn_unused_result));

/* Count one more request received for c. */
void sim_charges_attempt(sim_charges_t *s, sim_charge_t *c);

/* Make a PENDING c's outcome final; any other state is left alone. */
void sim_charges_settle(sim_charges_t *s, sim_charge_t *c);

/* Record that c's webhook is done with (delivered or given up). */
void sim_charges_notified(sim_charges_t *s, sim_charge_t *c);

/*
 * Cancel every charge of order_id: PENDING ones are CANCELED, SUCCEEDED ones
 * REFUNDED in full; without any charge a TOMBSTONE is recorded.  Returns the
 * order's newest charge (or the tombstone), which the answer describes, or
 * NULL when out of memory.
 */
sim_charge_t *sim_charges_cancel(sim_charges_t *s, const char *order_id, int64_t now_ms)
    __attribute__((warn_unused_result));

/*
 * Journal every charge changed since the last sync (nothing without a
 * journal).  Returns 0, or -1 (logged) when a line could not be written;
 * those charges stay dirty and are tried again at the next sync.
 */
int sim_charges_sync(sim_charges_t *s) __attribute__((warn_unused_result));

/* Call fn on every charge and tombstone, oldest first. */
void sim_charges_each(const sim_charges_t *s, void (*fn)(void *arg, sim_charge_t *c), void *arg);

/* "pending", "succeeded", "declined", "canceled" (tombstones too) or "refunded". */
const char *sim_charges_status(const sim_charge_t *c);

/* Whether a charge request for c is refused: canceled, refunded or a tombstone. */
int sim_charges_refuses(const sim_charge_t *c);

/* The money the provider holds for c: its amount once captured, less refunds. */
int64_t sim_charges_held_cents(const sim_charge_t *c);

/* Copy the counters. */
void sim_charges_stats(const sim_charges_t *s, sim_charges_stats_t *out);

/* u in [0, 1) for (seed, purpose, key) as described above. */
double sim_charges_uniform(int64_t seed, const char *purpose, const char *key);

#endif
