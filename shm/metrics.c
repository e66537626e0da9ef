/*
 * shm_metrics: lock-free per-process counters in a shared mapping.
 *
 * Each slot is padded to whole cache lines and written by one process at a
 * time (the worker of that index; during a reload briefly also its draining
 * predecessor), always with relaxed atomic read-modify-write, so a scrape
 * never sees a torn counter and a process killed mid-update loses at most
 * that one update.  Reads for a scrape are relaxed loads: each counter is
 * exact, the set is not a single instant, which Prometheus does not need.
 */
#include "config.h"

#include "shm/metrics.h"

#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>

static const int status_codes[METRICS_STATUS_CODES] = {
    200, 201, 400, 401, 404, 405, 409, 413, 415, 422, 431, 500, 503, 504
};

static const int64_t buckets_us[METRICS_BUCKETS] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000
};

struct shm_metrics_slot {
    _Atomic uint64_t requests[METRICS_ROUTES][METRICS_STATUS_CODES + 1];
    _Atomic uint64_t latency_buckets[METRICS_ROUTES][METRICS_BUCKETS + 1];  /* not cumulative */
    _Atomic uint64_t latency_sum_us[METRICS_ROUTES];
    _Atomic uint64_t counters[METRICS_COUNTERS];
    _Atomic int64_t gauges[METRICS_GAUGES];
} __attribute__((aligned(64)));

struct shm_metrics {
    struct shm_metrics_slot slots[SHM_METRICS_SLOTS];
};

shm_metrics_t *
shm_metrics_create(void)
{
    void *p = mmap(NULL, sizeof(shm_metrics_t), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    return p == MAP_FAILED ? NULL : p;      /* anonymous pages start zeroed */
}

void
shm_metrics_destroy(shm_metrics_t *m)
{
    if (m != NULL)
        munmap(m, sizeof(*m));
}

shm_metrics_slot_t *
shm_metrics_slot(shm_metrics_t *m, int index)
{
    shm_metrics_slot_t *s;

    if (index < 0 || index >= SHM_METRICS_SLOTS)
        index = SHM_METRICS_HOUSEKEEPER - 1;
    s = &m->slots[index];
    for (int g = 0; g < METRICS_GAUGES; g++)
        atomic_store_explicit(&s->gauges[g], 0, memory_order_relaxed);
    return s;
}

void
shm_metrics_request(shm_metrics_slot_t *s, metrics_route_t route, int status, int64_t dur_us)
{
    int code = METRICS_STATUS_CODES, b = 0;

    if (s == NULL || route >= METRICS_ROUTES)
        return;
    for (int i = 0; i < METRICS_STATUS_CODES; i++) {
        if (status_codes[i] == status) {
            code = i;
            break;
        }
    }
    while (b < METRICS_BUCKETS && dur_us > buckets_us[b])
        b++;
    atomic_fetch_add_explicit(&s->requests[route][code], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->latency_buckets[route][b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->latency_sum_us[route], (uint64_t)(dur_us > 0 ? dur_us : 0),
                              memory_order_relaxed);
}

void
shm_metrics_add(shm_metrics_slot_t *s, metrics_counter_t c, uint64_t n)
{
    if (s != NULL && c < METRICS_COUNTERS)
        atomic_fetch_add_explicit(&s->counters[c], n, memory_order_relaxed);
}

void
shm_metrics_gauge(shm_metrics_slot_t *s, metrics_gauge_t g, int64_t value)
{
    if (s != NULL && g < METRICS_GAUGES)
        atomic_store_explicit(&s->gauges[g], value, memory_order_relaxed);
}

void
shm_metrics_snapshot(const shm_metrics_t *m, shm_metrics_snapshot_t *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < SHM_METRICS_SLOTS; i++) {
        /* atomic loads on a const object are fine; the cast drops const only */
        struct shm_metrics_slot *s = (struct shm_metrics_slot *)&m->slots[i];

        for (int r = 0; r < METRICS_ROUTES; r++) {
            uint64_t cum = 0;
            for (int c = 0; c <= METRICS_STATUS_CODES; c++)
                out->requests[r][c] += atomic_load_explicit(&s->requests[r][c], memory_order_relaxed);
            for (int b = 0; b <= METRICS_BUCKETS; b++) {
                cum += atomic_load_explicit(&s->latency_buckets[r][b], memory_order_relaxed);
                out->latency_buckets[r][b] += cum;
            }
            out->latency_count[r] += cum;
            out->latency_sum_us[r] += atomic_load_explicit(&s->latency_sum_us[r], memory_order_relaxed);
        }
        for (int c = 0; c < METRICS_COUNTERS; c++)
            out->counters[c] += atomic_load_explicit(&s->counters[c], memory_order_relaxed);
        for (int g = 0; g < METRICS_GAUGES; g++)
            out->gauges[g] += atomic_load_explicit(&s->gauges[g], memory_order_relaxed);
    }
}

const char *
shm_metrics_route_name(metrics_route_t r)
{
    static const char *const names[METRICS_ROUTES] = {
        "healthz", "readyz", "metrics", "openapi", "docs", "checkout",
        "order", "order_ledger", "webhook", "unknown"
    };

    return r < METRICS_ROUTES ? names[r] : "unknown";
}

int
shm_metrics_status_code(int i)
{
    return i >= 0 && i < METRICS_STATUS_CODES ? status_codes[i] : 0;
}

int64_t
shm_metrics_bucket_us(int i)
{
    return i >= 0 && i < METRICS_BUCKETS ? buckets_us[i] : -1;
}
