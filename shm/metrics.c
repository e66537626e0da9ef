/*
 * shm_metrics: lock-free per-process counters in a shared mapping.
 *
 * Each slot is padded to whole cache lines and written by one process at a
 * time (the worker of that index; during a reload briefly also its draining
 * predecessor), always with relaxed atomic read-modify-write, so a scrape
 * never sees a torn counter and a process killed mid-update loses at most
 * that one update.  Reads for a scrape are relaxed loads: each counter is
 * exact, the set is not a single instant, which Prometheus does not need.
 * A histogram is its buckets (not cumulative) and a sum; its count is the
 * sum of its buckets, so count and buckets always agree, and a process
 * killed between a bucket and the sum leaves only the sum short.  A slot
 * is marked used when a process first takes it, and a scrape skips the
 * slots never used (most of them).  A slot is about 30 KB, mostly the
 * request histogram (route x method x status class); the mapping, 257
 * slots, is about 8 MB of address space, of which only the used slots'
 * pages are ever touched.
 */
#include "config.h"

#include "shm/metrics.h"

#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>

static const int status_codes[SHM_METRICS_STATUS_CODES] = {
    200, 201, 204, 400, 401, 404, 405, 409, 413, 415, 422, 431, 500, 503, 504
};

static const int64_t buckets_us[SHM_METRICS_BUCKETS] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000
};

static const int64_t batch_buckets[SHM_METRICS_BATCH_BUCKETS] = {
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000
};

typedef struct {
    _Atomic uint64_t buckets[SHM_METRICS_BUCKETS + 1];  /* not cumulative; last: +Inf */
    _Atomic uint64_t sum;
} hist_t;

struct shm_metrics_slot {
    _Atomic uint32_t used;
    _Atomic uint64_t requests[SHM_METRICS_ROUTES][SHM_METRICS_STATUS_CODES + 1];
    hist_t latency[SHM_METRICS_ROUTES][SHM_METRICS_METHODS][SHM_METRICS_STATUS_CLASSES];
    hist_t provider[SHM_METRICS_CALLS][2];
    hist_t db_call[2];
    hist_t db_batch;
    _Atomic uint64_t counters[SHM_METRICS_COUNTERS];
    _Atomic int64_t gauges[SHM_METRICS_GAUGES];
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
    atomic_store_explicit(&s->used, 1, memory_order_relaxed);
    for (int g = 0; g < SHM_METRICS_GAUGES; g++)
        atomic_store_explicit(&s->gauges[g], 0, memory_order_relaxed);
    return s;
}

/* Count value (>= 0) in the first bucket of bounds[0..n) that holds it. */
static void
hist_observe(hist_t *h, const int64_t *bounds, int n, int64_t value)
{
    int b = 0;

    if (value < 0)
        value = 0;
    while (b < n && value > bounds[b])
        b++;
    atomic_fetch_add_explicit(&h->buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, (uint64_t)value, memory_order_relaxed);
}

void
shm_metrics_request(shm_metrics_slot_t *s, shm_metrics_route_t route, shm_metrics_method_t method,
                    int status, int64_t dur_us)
{
    int code = SHM_METRICS_STATUS_CODES, cls = status / 100 - 1;

    if (s == NULL || route >= SHM_METRICS_ROUTES)
        return;
    if (method >= SHM_METRICS_METHODS)
        method = SHM_METRICS_METHOD_OTHER;
    if (cls < 0 || cls >= SHM_METRICS_STATUS_CLASSES)
        cls = SHM_METRICS_STATUS_CLASSES - 1;
    for (int i = 0; i < SHM_METRICS_STATUS_CODES; i++) {
        if (status_codes[i] == status) {
            code = i;
            break;
        }
    }
    atomic_fetch_add_explicit(&s->requests[route][code], 1, memory_order_relaxed);
    hist_observe(&s->latency[route][method][cls], buckets_us, SHM_METRICS_BUCKETS, dur_us);
}

void
shm_metrics_provider_call(shm_metrics_slot_t *s, shm_metrics_call_t call, int answered,
                          int64_t dur_us)
{
    if (s != NULL && call < SHM_METRICS_CALLS)
        hist_observe(&s->provider[call][answered != 0], buckets_us, SHM_METRICS_BUCKETS, dur_us);
}

void
shm_metrics_db_call(shm_metrics_slot_t *s, int committed, int64_t dur_us)
{
    if (s != NULL)
        hist_observe(&s->db_call[committed != 0], buckets_us, SHM_METRICS_BUCKETS, dur_us);
}

void
shm_metrics_db_batch(shm_metrics_slot_t *s, int ncalls)
{
    if (s != NULL)
        hist_observe(&s->db_batch, batch_buckets, SHM_METRICS_BATCH_BUCKETS, ncalls);
}

void
shm_metrics_add(shm_metrics_slot_t *s, shm_metrics_counter_t c, uint64_t n)
{
    if (s != NULL && c < SHM_METRICS_COUNTERS)
        atomic_fetch_add_explicit(&s->counters[c], n, memory_order_relaxed);
}

void
shm_metrics_gauge(shm_metrics_slot_t *s, shm_metrics_gauge_t g, int64_t value)
{
    if (s != NULL && g < SHM_METRICS_GAUGES)
        atomic_store_explicit(&s->gauges[g], value, memory_order_relaxed);
}

/* Add h to out, making the buckets cumulative. */
static void
hist_add(shm_metrics_hist_t *out, hist_t *h)
{
    uint64_t cum = 0;

    for (int b = 0; b <= SHM_METRICS_BUCKETS; b++) {
        cum += atomic_load_explicit(&h->buckets[b], memory_order_relaxed);
        out->buckets[b] += cum;
    }
    out->sum += atomic_load_explicit(&h->sum, memory_order_relaxed);
}

void
shm_metrics_snapshot(const shm_metrics_t *m, shm_metrics_snapshot_t *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < SHM_METRICS_SLOTS; i++) {
        /* atomic loads on a const object are fine; the cast drops const only */
        struct shm_metrics_slot *s = (struct shm_metrics_slot *)&m->slots[i];

        if (!atomic_load_explicit(&s->used, memory_order_relaxed))
            continue;
        for (int r = 0; r < SHM_METRICS_ROUTES; r++) {
            for (int c = 0; c <= SHM_METRICS_STATUS_CODES; c++)
                out->requests[r][c] +=
                    atomic_load_explicit(&s->requests[r][c], memory_order_relaxed);
            for (int me = 0; me < SHM_METRICS_METHODS; me++) {
                for (int c = 0; c < SHM_METRICS_STATUS_CLASSES; c++)
                    hist_add(&out->latency[r][me][c], &s->latency[r][me][c]);
            }
        }
        for (int c = 0; c < SHM_METRICS_CALLS; c++) {
            hist_add(&out->provider[c][0], &s->provider[c][0]);
            hist_add(&out->provider[c][1], &s->provider[c][1]);
        }
        hist_add(&out->db_call[0], &s->db_call[0]);
        hist_add(&out->db_call[1], &s->db_call[1]);
        hist_add(&out->db_batch, &s->db_batch);
        for (int c = 0; c < SHM_METRICS_COUNTERS; c++)
            out->counters[c] += atomic_load_explicit(&s->counters[c], memory_order_relaxed);
        for (int g = 0; g < SHM_METRICS_GAUGES; g++)
            out->gauges[g] += atomic_load_explicit(&s->gauges[g], memory_order_relaxed);
    }
}

const char *
shm_metrics_route_name(shm_metrics_route_t r)
{
    static const char *const names[SHM_METRICS_ROUTES] = {
        "healthz", "readyz", "metrics", "openapi", "docs", "checkout",
        "order", "order_ledger", "webhook", "unknown"
    };

    return r < SHM_METRICS_ROUTES ? names[r] : "unknown";
}

int
shm_metrics_status_code(int i)
{
    return i >= 0 && i < SHM_METRICS_STATUS_CODES ? status_codes[i] : 0;
}

int64_t
shm_metrics_bucket_us(int i)
{
    return i >= 0 && i < SHM_METRICS_BUCKETS ? buckets_us[i] : -1;
}

int64_t
shm_metrics_batch_bucket(int i)
{
    return i >= 0 && i < SHM_METRICS_BATCH_BUCKETS ? batch_buckets[i] : -1;
}

const char *
shm_metrics_method_name(shm_metrics_method_t m)
{
    static const char *const names[SHM_METRICS_METHODS] = {
        "GET", "HEAD", "POST", "OPTIONS", "other"
    };

    return m < SHM_METRICS_METHODS ? names[m] : "other";
}

const char *
shm_metrics_call_name(shm_metrics_call_t c)
{
    static const char *const names[SHM_METRICS_CALLS] = { "charge", "get", "cancel" };

    return c < SHM_METRICS_CALLS ? names[c] : "unknown";
}
