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
    SHM_METRICS_ROUTE_HEALTHZ, SHM_METRICS_ROUTE_READYZ, SHM_METRICS_ROUTE_METRICS,
    SHM_METRICS_ROUTE_OPENAPI, SHM_METRICS_ROUTE_DOCS, SHM_METRICS_ROUTE_CHECKOUT,
    SHM_METRICS_ROUTE_ORDER, SHM_METRICS_ROUTE_ORDER_LEDGER, SHM_METRICS_ROUTE_WEBHOOK,
    SHM_METRICS_ROUTE_UNKNOWN,
    SHM_METRICS_ROUTES
} shm_metrics_route_t;

/* Status codes counted one by one; anything else is "other". */
#define SHM_METRICS_STATUS_CODES 15

/* Latency histogram upper bounds, in microseconds (+Inf is implied). */
#define SHM_METRICS_BUCKETS 12

/* Batch size histogram upper bounds, in calls per statement. */
#define SHM_METRICS_BATCH_BUCKETS 11

/* The request histogram's method label; methods evhttp lets through but no
 * route serves (PUT, DELETE, PATCH) are "other". */
typedef enum {
    SHM_METRICS_METHOD_GET, SHM_METRICS_METHOD_HEAD, SHM_METRICS_METHOD_POST,
    SHM_METRICS_METHOD_OPTIONS, SHM_METRICS_METHOD_OTHER,
    SHM_METRICS_METHODS
} shm_metrics_method_t;

/* Status classes 1xx..5xx; a status outside 100..599 counts as 5xx. */
#define SHM_METRICS_STATUS_CLASSES 5

/* Provider calls, for their latency histogram. */
typedef enum {
    SHM_METRICS_CALL_CHARGE, SHM_METRICS_CALL_GET, SHM_METRICS_CALL_CANCEL,
    SHM_METRICS_CALLS
} shm_metrics_call_t;

typedef enum {
    /* checkouts by what the client got */
    SHM_METRICS_CHECKOUT_PAID, SHM_METRICS_CHECKOUT_FAILED, SHM_METRICS_CHECKOUT_PENDING,
    SHM_METRICS_CHECKOUT_REPLAYED, SHM_METRICS_CHECKOUT_REUSED, SHM_METRICS_CHECKOUT_IN_USE,
    SHM_METRICS_CHECKOUT_INVALID, SHM_METRICS_CHECKOUT_UNAVAILABLE,
    /* idempotent replays by where the answer came from */
    SHM_METRICS_REPLAY_CACHE, SHM_METRICS_REPLAY_DB,
    /* shared-memory cache lookups */
    SHM_METRICS_CACHE_HIT, SHM_METRICS_CACHE_MISS,
    /* webhook results */
    SHM_METRICS_WEBHOOK_APPLIED, SHM_METRICS_WEBHOOK_NOT_APPLIED, SHM_METRICS_WEBHOOK_CONFLICT,
    SHM_METRICS_WEBHOOK_DUPLICATE, SHM_METRICS_WEBHOOK_NOT_FOUND,
    SHM_METRICS_WEBHOOK_SIGNATURE_INVALID, SHM_METRICS_WEBHOOK_SIGNATURE_EXPIRED,
    SHM_METRICS_WEBHOOK_INVALID, SHM_METRICS_WEBHOOK_UNAVAILABLE,
    /* provider calls by result, and calls the open breaker skipped */
    SHM_METRICS_PROVIDER_SUCCEEDED, SHM_METRICS_PROVIDER_DECLINED, SHM_METRICS_PROVIDER_UNAVAILABLE,
    SHM_METRICS_PROVIDER_SKIPPED,
    /* cancel-or-refund attempts, by the provider's answer */
    SHM_METRICS_REVERSAL_CANCELED, SHM_METRICS_REVERSAL_REFUNDED, SHM_METRICS_REVERSAL_DECLINED,
    SHM_METRICS_REVERSAL_NOT_FOUND, SHM_METRICS_REVERSAL_UNAVAILABLE,
    SHM_METRICS_REVERSAL_UNRECORDED,
    /* checkout_finish calls that did not commit (the key stays in progress) */
    SHM_METRICS_FINISH_FAILED,
    /* group commit: statements sent, and the calls they carried */
    SHM_METRICS_DB_STATEMENTS, SHM_METRICS_DB_CALLS,
    SHM_METRICS_COUNTERS
} shm_metrics_counter_t;

typedef enum {
    SHM_METRICS_GAUGE_DB_BUSY,      /* database calls running */
    SHM_METRICS_GAUGE_DB_QUEUED,    /* database calls waiting for a connection */
    SHM_METRICS_GAUGE_DB_CONNECTED, /* live database connections */
    SHM_METRICS_GAUGES
} shm_metrics_gauge_t;

typedef struct shm_metrics shm_metrics_t;
typedef struct shm_metrics_slot shm_metrics_slot_t;

/* One histogram of a scrape: buckets cumulative, buckets[SHM_METRICS_BUCKETS] is
 * +Inf and so the count (whatever the histogram's number of bounds); sum in
 * the unit observed (microseconds, or calls). */
typedef struct {
    uint64_t buckets[SHM_METRICS_BUCKETS + 1];
    uint64_t sum;
} shm_metrics_hist_t;

/* A scrape: every slot summed. */
typedef struct {
    uint64_t requests[SHM_METRICS_ROUTES][SHM_METRICS_STATUS_CODES + 1];
    /* request latency by route, method and status class (index status / 100 - 1) */
    shm_metrics_hist_t latency[SHM_METRICS_ROUTES][SHM_METRICS_METHODS][SHM_METRICS_STATUS_CLASSES];
    /* provider call latency by call and whether it was answered (1) or not (0) */
    shm_metrics_hist_t provider[SHM_METRICS_CALLS][2];
    /* database call latency, queueing included, by failed (0) or committed (1) */
    shm_metrics_hist_t db_call[2];
    /* calls per database statement (group commit; buckets SHM_METRICS_BATCH_BUCKETS + 1) */
    shm_metrics_hist_t db_batch;
    uint64_t counters[SHM_METRICS_COUNTERS];
    int64_t gauges[SHM_METRICS_GAUGES];
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
void shm_metrics_request(shm_metrics_slot_t *s, shm_metrics_route_t route,
                         shm_metrics_method_t method, int status, int64_t dur_us);
/* Observe a provider call that took dur_us; answered = 0 when it got no
 * answer to believe (timeout, refused, 5xx, protocol error). */
void shm_metrics_provider_call(shm_metrics_slot_t *s, shm_metrics_call_t call, int answered,
                               int64_t dur_us);
/* Observe a database call that took dur_us from db_call to its answer. */
void shm_metrics_db_call(shm_metrics_slot_t *s, int committed, int64_t dur_us);
/* Observe a database statement that carried ncalls calls. */
void shm_metrics_db_batch(shm_metrics_slot_t *s, int ncalls);
void shm_metrics_add(shm_metrics_slot_t *s, shm_metrics_counter_t c, uint64_t n);
void shm_metrics_gauge(shm_metrics_slot_t *s, shm_metrics_gauge_t g, int64_t value);

/* Sum every slot into *out. */
void shm_metrics_snapshot(const shm_metrics_t *m, shm_metrics_snapshot_t *out);

/* The route's name in logs and metric labels ("checkout", "order", ...). */
const char *shm_metrics_route_name(shm_metrics_route_t r);

/* The status code counted at index i (0 for "other"), and the bucket bounds
 * (-1 past the last). */
int shm_metrics_status_code(int i);
int64_t shm_metrics_bucket_us(int i);
int64_t shm_metrics_batch_bucket(int i);

/* Label values: "GET", ...; "charge", "get", "cancel". */
const char *shm_metrics_method_name(shm_metrics_method_t m);
const char *shm_metrics_call_name(shm_metrics_call_t c);

#endif
