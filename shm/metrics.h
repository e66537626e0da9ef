/*
 * shm_metrics: per-process counters in shared memory, for /metrics.
 *
 * The master creates the mapping before forking; each worker (and the
 * housekeeper) writes only to its own slot, one or more whole cache lines,
 * with relaxed atomic adds: no lock, no contention, and a process killed at
 * any instruction leaves every counter valid.  Counters survive worker
 * restarts and reloads (a new worker of the same index adds to its slot), so
 * they only ever grow, as Prometheus expects.  A scrape sums all slots into a
 * plain snapshot struct.
 */
#ifndef PD_SHM_METRICS_H
#define PD_SHM_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define SHM_METRICS_SLOTS 257           /* workers 0..255, then the housekeeper */
#define SHM_METRICS_HOUSEKEEPER 256

typedef enum {
    METRICS_ROUTE_HEALTHZ, METRICS_ROUTE_READYZ, METRICS_ROUTE_METRICS,
    METRICS_ROUTE_OPENAPI, METRICS_ROUTE_DOCS, METRICS_ROUTE_CHECKOUT,
    METRICS_ROUTE_ORDER, METRICS_ROUTE_ORDER_LEDGER, METRICS_ROUTE_WEBHOOK,
    METRICS_ROUTE_UNKNOWN,
    METRICS_ROUTES
} metrics_route_t;

/* Status codes counted one by one; anything else is "other". */
#define METRICS_STATUS_CODES 15

/* Latency histogram upper bounds, in microseconds (+Inf is implied). */
#define METRICS_BUCKETS 12

/* Batch size histogram upper bounds, in calls per statement. */
#define METRICS_BATCH_BUCKETS 11

/* The request histogram's method label; methods evhttp lets through but no
 * route serves (PUT, DELETE, PATCH) are "other". */
typedef enum {
    METRICS_METHOD_GET, METRICS_METHOD_HEAD, METRICS_METHOD_POST, METRICS_METHOD_OPTIONS,
    METRICS_METHOD_OTHER,
    METRICS_METHODS
} metrics_method_t;

/* Status classes 1xx..5xx; a status outside 100..599 counts as 5xx. */
#define METRICS_STATUS_CLASSES 5

/* Provider calls, for their latency histogram. */
typedef enum {
    METRICS_CALL_CHARGE, METRICS_CALL_GET, METRICS_CALL_CANCEL,
    METRICS_CALLS
} metrics_call_t;

typedef enum {
    /* checkouts by what the client got */
    METRICS_CHECKOUT_PAID, METRICS_CHECKOUT_FAILED, METRICS_CHECKOUT_PENDING,
    METRICS_CHECKOUT_REPLAYED, METRICS_CHECKOUT_REUSED, METRICS_CHECKOUT_IN_USE,
    METRICS_CHECKOUT_INVALID, METRICS_CHECKOUT_UNAVAILABLE,
    /* idempotent replays by where the answer came from */
    METRICS_REPLAY_CACHE, METRICS_REPLAY_DB,
    /* shared-memory cache lookups */
    METRICS_CACHE_HIT, METRICS_CACHE_MISS,
    /* webhook results */
    METRICS_WEBHOOK_APPLIED, METRICS_WEBHOOK_NOT_APPLIED, METRICS_WEBHOOK_CONFLICT,
    METRICS_WEBHOOK_DUPLICATE, METRICS_WEBHOOK_NOT_FOUND, METRICS_WEBHOOK_SIGNATURE_INVALID,
    METRICS_WEBHOOK_SIGNATURE_EXPIRED, METRICS_WEBHOOK_INVALID, METRICS_WEBHOOK_UNAVAILABLE,
    /* provider calls by result, and calls the open breaker skipped */
    METRICS_PROVIDER_SUCCEEDED, METRICS_PROVIDER_DECLINED, METRICS_PROVIDER_UNAVAILABLE,
    METRICS_PROVIDER_SKIPPED,
    /* cancel-or-refund attempts, by the provider's answer */
    METRICS_REVERSAL_CANCELED, METRICS_REVERSAL_REFUNDED, METRICS_REVERSAL_DECLINED,
    METRICS_REVERSAL_NOT_FOUND, METRICS_REVERSAL_UNAVAILABLE, METRICS_REVERSAL_UNRECORDED,
    /* checkout_finish calls that did not commit (the key stays in progress) */
    METRICS_FINISH_FAILED,
    /* group commit: statements sent, and the calls they carried */
    METRICS_DB_STATEMENTS, METRICS_DB_CALLS,
    METRICS_COUNTERS
} metrics_counter_t;

typedef enum {
    METRICS_GAUGE_DB_BUSY,      /* database calls running */
    METRICS_GAUGE_DB_QUEUED,    /* database calls waiting for a connection */
    METRICS_GAUGE_DB_CONNECTED, /* live database connections */
    METRICS_GAUGES
} metrics_gauge_t;

typedef struct shm_metrics shm_metrics_t;
typedef struct shm_metrics_slot shm_metrics_slot_t;

/* One histogram of a scrape: buckets cumulative, buckets[METRICS_BUCKETS] is
 * +Inf and so the count (whatever the histogram's number of bounds); sum in
 * the unit observed (microseconds, or calls). */
typedef struct {
    uint64_t buckets[METRICS_BUCKETS + 1];
    uint64_t sum;
} shm_metrics_hist_t;

/* A scrape: every slot summed. */
typedef struct {
    uint64_t requests[METRICS_ROUTES][METRICS_STATUS_CODES + 1];
    /* request latency by route, method and status class (index status / 100 - 1) */
    shm_metrics_hist_t latency[METRICS_ROUTES][METRICS_METHODS][METRICS_STATUS_CLASSES];
    /* provider call latency by call and whether it was answered (1) or not (0) */
    shm_metrics_hist_t provider[METRICS_CALLS][2];
    /* database call latency, queueing included, by failed (0) or committed (1) */
    shm_metrics_hist_t db_call[2];
    /* calls per database statement (group commit; buckets METRICS_BATCH_BUCKETS + 1) */
    shm_metrics_hist_t db_batch;
    uint64_t counters[METRICS_COUNTERS];
    int64_t gauges[METRICS_GAUGES];
} shm_metrics_snapshot_t;

/* Map the counters (master, before fork).  NULL on failure. */
shm_metrics_t *shm_metrics_create(void) __attribute__((warn_unused_result));
void shm_metrics_destroy(shm_metrics_t *m);

/* The slot of worker index (or SHM_METRICS_HOUSEKEEPER); indexes past the
 * end share the last worker slot (still correct: adds are atomic).  A new
 * process of the index clears the slot's gauges, which were its
 * predecessor's. */
shm_metrics_slot_t *shm_metrics_slot(shm_metrics_t *m, int index);

/* Count a finished request of route and method with status, taking dur_us. */
void shm_metrics_request(shm_metrics_slot_t *s, metrics_route_t route, metrics_method_t method,
                         int status, int64_t dur_us);
/* Observe a provider call that took dur_us; answered = 0 when it got no
 * answer to believe (timeout, refused, 5xx, protocol error). */
void shm_metrics_provider_call(shm_metrics_slot_t *s, metrics_call_t call, int answered,
                               int64_t dur_us);
/* Observe a database call that took dur_us from db_call to its answer. */
void shm_metrics_db_call(shm_metrics_slot_t *s, int committed, int64_t dur_us);
/* Observe a database statement that carried ncalls calls. */
void shm_metrics_db_batch(shm_metrics_slot_t *s, int ncalls);
void shm_metrics_add(shm_metrics_slot_t *s, metrics_counter_t c, uint64_t n);
void shm_metrics_gauge(shm_metrics_slot_t *s, metrics_gauge_t g, int64_t value);

/* Sum every slot into *out. */
void shm_metrics_snapshot(const shm_metrics_t *m, shm_metrics_snapshot_t *out);

/* The route's name in logs and metric labels ("checkout", "order", ...). */
const char *shm_metrics_route_name(metrics_route_t r);

/* The status code counted at index i (0 for "other"), and the bucket bounds
 * (-1 past the last). */
int shm_metrics_status_code(int i);
int64_t shm_metrics_bucket_us(int i);
int64_t shm_metrics_batch_bucket(int i);

/* Label values: "GET", ...; "charge", "get", "cancel". */
const char *shm_metrics_method_name(metrics_method_t m);
const char *shm_metrics_call_name(metrics_call_t c);

#endif
