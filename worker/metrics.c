/*
 * metrics: render the shared counters in the Prometheus text format
 * (version 0.0.4).  A scrape reads every worker's slot, so any worker can
 * answer for the whole server; nothing here allocates per series.
 */
#include "config.h"

#include "worker/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/clock.h"
#include "shm/metrics.h"
#include "worker/procstat.h"
#include "worker/worker.h"

typedef struct {
    shm_metrics_counter_t counter;
    const char *label;
} series_t;

typedef struct {
    const char *name;
    const char *help;
    const char *label;
    const series_t *series;
    size_t n;
} family_t;

static const series_t checkouts[] = {
    { SHM_METRICS_CHECKOUT_PAID, "paid" }, { SHM_METRICS_CHECKOUT_FAILED, "failed" },
    { SHM_METRICS_CHECKOUT_PENDING, "pending_payment" },
    { SHM_METRICS_CHECKOUT_REPLAYED, "replayed" },
    { SHM_METRICS_CHECKOUT_REUSED, "key_reused" }, { SHM_METRICS_CHECKOUT_IN_USE, "key_in_use" },
    { SHM_METRICS_CHECKOUT_INVALID, "invalid" },
    { SHM_METRICS_CHECKOUT_UNAVAILABLE, "unavailable" },
};
static const series_t replays[] = {
    { SHM_METRICS_REPLAY_CACHE, "cache" }, { SHM_METRICS_REPLAY_DB, "db" },
};
static const series_t cache[] = {
    { SHM_METRICS_CACHE_HIT, "hit" }, { SHM_METRICS_CACHE_MISS, "miss" },
};
static const series_t webhooks[] = {
    { SHM_METRICS_WEBHOOK_APPLIED, "applied" }, { SHM_METRICS_WEBHOOK_NOT_APPLIED, "not_applied" },
    { SHM_METRICS_WEBHOOK_CONFLICT, "conflict" }, { SHM_METRICS_WEBHOOK_DUPLICATE, "duplicate" },
    { SHM_METRICS_WEBHOOK_NOT_FOUND, "order_not_found" },
    { SHM_METRICS_WEBHOOK_SIGNATURE_INVALID, "signature_invalid" },
    { SHM_METRICS_WEBHOOK_SIGNATURE_EXPIRED, "signature_expired" },
    { SHM_METRICS_WEBHOOK_INVALID, "invalid" }, { SHM_METRICS_WEBHOOK_UNAVAILABLE, "unavailable" },
};
static const series_t provider[] = {
    { SHM_METRICS_PROVIDER_SUCCEEDED, "succeeded" }, { SHM_METRICS_PROVIDER_DECLINED, "declined" },
    { SHM_METRICS_PROVIDER_UNAVAILABLE, "unavailable" },
    { SHM_METRICS_PROVIDER_SKIPPED, "breaker_open" },
};

static const series_t reversals[] = {
    { SHM_METRICS_REVERSAL_CANCELED, "canceled" }, { SHM_METRICS_REVERSAL_REFUNDED, "refunded" },
    { SHM_METRICS_REVERSAL_DECLINED, "declined" }, { SHM_METRICS_REVERSAL_NOT_FOUND, "not_found" },
    { SHM_METRICS_REVERSAL_UNAVAILABLE, "unavailable" },
    { SHM_METRICS_REVERSAL_UNRECORDED, "unrecorded" },
};
static const series_t finish_errors[] = {
    { SHM_METRICS_FINISH_FAILED, "not_committed" },
};

#define FAMILY(name, help, label, s) { name, help, label, s, sizeof(s) / sizeof(s[0]) }

static const family_t families[] = {
    FAMILY("paymentsd_checkouts_total", "Checkout requests by what the client got.", "outcome",
           checkouts),
    FAMILY("paymentsd_idempotent_replays_total", "Replayed checkout responses by source.", "source",
           replays),
    FAMILY("paymentsd_shm_cache_lookups_total",
           "Checkouts looked up in the shared-memory cache: hit = answered without PostgreSQL.",
           "result", cache),
    FAMILY("paymentsd_webhooks_total", "Provider webhooks by result.", "result", webhooks),
    FAMILY("paymentsd_provider_calls_total", "Provider charge calls by result.", "result",
           provider),
    FAMILY("paymentsd_reversals_total",
           "Cancel-or-refund attempts for FAILED orders, by the provider's answer "
           "(unrecorded: answered, but the database call failed).",
           "result", reversals),
    FAMILY("paymentsd_checkout_finish_errors_total",
           "checkout_finish calls that did not commit; the key stays in progress and is recovered.",
           "result", finish_errors),
};

static void
requests(struct evbuffer *b, const shm_metrics_snapshot_t *s)
{
    evbuffer_add_printf(b,
                        "# HELP paymentsd_http_requests_total HTTP requests by route and status.\n"
                        "# TYPE paymentsd_http_requests_total counter\n");
    for (int r = 0; r < SHM_METRICS_ROUTES; r++) {
        for (int c = 0; c <= SHM_METRICS_STATUS_CODES; c++) {
            int code = shm_metrics_status_code(c);
            if (s->requests[r][c] == 0)
                continue;
            if (code != 0)
                evbuffer_add_printf(
                    b, "paymentsd_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                    shm_metrics_route_name(r), code, (unsigned long long)s->requests[r][c]);
            else
                evbuffer_add_printf(
                    b, "paymentsd_http_requests_total{route=\"%s\",status=\"other\"} %llu\n",
                    shm_metrics_route_name(r), (unsigned long long)s->requests[r][c]);
        }
    }
}

/* One histogram series (skipped when it has no observation); labels is
 * 'a="x",b="y"' or "".  Bounds come from bound(i) (-1 past the last),
 * divided by scale, which also scales the sum. */
static void
histogram(struct evbuffer *b, const char *name, const char *labels, const shm_metrics_hist_t *h,
          int64_t (*bound)(int), double scale)
{
    const char *sep = labels[0] != '\0' ? "," : "";
    uint64_t count = h->buckets[SHM_METRICS_BUCKETS];

    if (count == 0)
        return;
    for (int i = 0; bound(i) >= 0; i++)
        evbuffer_add_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep,
                            (double)bound(i) / scale, (unsigned long long)h->buckets[i]);
    evbuffer_add_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                        (unsigned long long)count);
    if (labels[0] != '\0')
        evbuffer_add_printf(b, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", name, labels,
                            (double)h->sum / scale, name, labels, (unsigned long long)count);
    else
        evbuffer_add_printf(b, "%s_sum %.6f\n%s_count %llu\n", name, (double)h->sum / scale,
                            name, (unsigned long long)count);
}

static void
help(struct evbuffer *b, const char *name, const char *type, const char *text)
{
    evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

static void
histograms(struct evbuffer *b, const shm_metrics_snapshot_t *s)
{
    static const char *const classes[SHM_METRICS_STATUS_CLASSES] = {
        "1xx", "2xx", "3xx", "4xx", "5xx"
    };
    char labels[160];

    help(b, "paymentsd_http_request_duration_seconds", "histogram",
         "Time from request to reply, by route, method and status class.");
    for (int r = 0; r < SHM_METRICS_ROUTES; r++) {
        for (int m = 0; m < SHM_METRICS_METHODS; m++) {
            for (int c = 0; c < SHM_METRICS_STATUS_CLASSES; c++) {
                snprintf(labels, sizeof(labels), "route=\"%s\",method=\"%s\",status_class=\"%s\"",
                         shm_metrics_route_name(r), shm_metrics_method_name(m), classes[c]);
                histogram(b, "paymentsd_http_request_duration_seconds", labels,
                          &s->latency[r][m][c], shm_metrics_bucket_us, 1e6);
            }
        }
    }
    help(b, "paymentsd_provider_call_duration_seconds", "histogram",
         "Provider calls from start to outcome, by call and whether an answer came "
         "(answered=\"false\": timeout, refused, 5xx or not believed).");
    for (int c = 0; c < SHM_METRICS_CALLS; c++) {
        for (int a = 1; a >= 0; a--) {
            snprintf(labels, sizeof(labels), "call=\"%s\",answered=\"%s\"",
                     shm_metrics_call_name(c), a ? "true" : "false");
            histogram(b, "paymentsd_provider_call_duration_seconds", labels, &s->provider[c][a],
                      shm_metrics_bucket_us, 1e6);
        }
    }
    help(b, "paymentsd_db_call_duration_seconds", "histogram",
         "Database calls from the request to their answer, queueing included, "
         "by whether they committed.");
    histogram(b, "paymentsd_db_call_duration_seconds", "result=\"committed\"", &s->db_call[1],
              shm_metrics_bucket_us, 1e6);
    histogram(b, "paymentsd_db_call_duration_seconds", "result=\"failed\"", &s->db_call[0],
              shm_metrics_bucket_us, 1e6);
    help(b, "paymentsd_db_batch_calls", "histogram",
         "Calls carried by each database statement: group commit's batch sizes.");
    histogram(b, "paymentsd_db_batch_calls", "", &s->db_batch, shm_metrics_batch_bucket, 1);
}

/* The process_* series of the Prometheus client libraries, for the whole
 * instance (worker/procstat.h says how each one adds up).  CPU time is read
 * at every scrape, so that it never goes down from one scrape to the next,
 * whichever worker answers.  Memory and descriptors cost about 0.5 ms per
 * process (PSS walks the page tables), on this worker's loop: a scrape less
 * than PROCSTAT_REUSE_MS after this worker last read them reuses them, so
 * a client hammering /metrics cannot make the loop do it more than once a
 * second. */
#define PROCSTAT_REUSE_MS 1000

static void
process(struct evbuffer *b)
{
    static procstat_t ps;
    static int64_t read_ms = -1;
    int64_t now = clock_mono_ms();
    int what = PROCSTAT_CPU;

    if (read_ms < 0 || now - read_ms >= PROCSTAT_REUSE_MS)
        what |= PROCSTAT_OTHER;
    if (procstat_read(getppid(), what, &ps) < 0)
        return;
    if (what & PROCSTAT_OTHER)
        read_ms = now;
    help(b, "process_cpu_seconds_total", "counter",
         "User and system CPU time of the master and all its workers and housekeepers, "
         "exited ones included, in seconds.");
    evbuffer_add_printf(b, "process_cpu_seconds_total %.2f\n", ps.cpu_seconds);
    help(
        b, "process_resident_memory_bytes", "gauge",
        "Resident memory of the master and its children (sum of PSS: shared memory counted once).");
    evbuffer_add_printf(b, "process_resident_memory_bytes %lld\n", (long long)ps.resident_bytes);
    help(b, "process_virtual_memory_bytes", "gauge",
         "Virtual memory size of the master and its children, summed.");
    evbuffer_add_printf(b, "process_virtual_memory_bytes %lld\n", (long long)ps.virtual_bytes);
    help(b, "process_start_time_seconds", "gauge",
         "Start time of the master since the Unix epoch, in seconds.");
    evbuffer_add_printf(b, "process_start_time_seconds %.2f\n", ps.start_time);
    if (ps.max_fds > 0) {
        help(b, "process_open_fds", "gauge",
             "Open file descriptors of the process (master or child) closest to its limit.");
        evbuffer_add_printf(b, "process_open_fds %lld\n", (long long)ps.open_fds);
        help(b, "process_max_fds", "gauge", "That process's limit on open file descriptors.");
        evbuffer_add_printf(b, "process_max_fds %lld\n", (long long)ps.max_fds);
    }
}

static void
gauge(struct evbuffer *b, const char *name, const char *help, long long v)
{
    evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s gauge\n%s %lld\n", name, help, name, name, v);
}

static void
counter(struct evbuffer *b, const char *name, const char *help, uint64_t v)
{
    evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
                        (unsigned long long)v);
}

void
metrics_handle(http_req_t *r)
{
    worker_t *w = http_req_worker(r);
    const worker_shared_t *shared = worker_shared(w);
    struct evbuffer *b = evbuffer_new();
    shm_metrics_snapshot_t *s = malloc(sizeof(*s));

    if (b == NULL || s == NULL) {
        if (b != NULL)
            evbuffer_free(b);
        free(s);
        http_reply_error(r, 503, "service_unavailable", "out of memory", NULL);
        return;
    }
    worker_update_gauges(w);
    shm_metrics_snapshot(shared->metrics, s);
    help(b, "paymentsd_build_info", "gauge", "Always 1; the labels say what is running.");
    evbuffer_add_printf(b, "paymentsd_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);
    requests(b, s);
    histograms(b, s);
    for (size_t f = 0; f < sizeof(families) / sizeof(families[0]); f++) {
        const family_t *fam = &families[f];
        evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s counter\n", fam->name, fam->help,
                            fam->name);
        for (size_t i = 0; i < fam->n; i++)
            evbuffer_add_printf(b, "%s{%s=\"%s\"} %llu\n", fam->name, fam->label,
                                fam->series[i].label,
                                (unsigned long long)s->counters[fam->series[i].counter]);
    }
    {
        shm_cache_stats_t cs;
        shm_cache_stats(shared->cache, &cs);
        counter(b, "paymentsd_shm_cache_evictions_total", "Live entries pushed out of a full set.",
                cs.evictions);
        counter(b, "paymentsd_shm_cache_too_big_total", "Responses too large for a slot.",
                cs.too_big);
        counter(b, "paymentsd_shm_cache_repairs_total", "Set locks taken over from a dead writer.",
                cs.repairs);
        gauge(b, "paymentsd_shm_cache_entries", "Cache slots in use.", (long long)cs.entries);
        gauge(b, "paymentsd_shm_cache_capacity", "Cache slots in all.", (long long)cs.capacity);
    }
    gauge(b, "paymentsd_provider_circuit_breaker_state",
          "Provider circuit breaker: 0 closed, 1 open, 2 half-open.",
          (long long)shm_breaker_state(shared->breaker));
    counter(b, "paymentsd_provider_circuit_breaker_transitions_total",
            "Circuit breaker state changes.", shm_breaker_transitions(shared->breaker));
    counter(b, "paymentsd_db_statements_total",
            "Database statements sent (a batch of calls is one statement, one commit).",
            s->counters[SHM_METRICS_DB_STATEMENTS]);
    counter(b, "paymentsd_db_calls_total",
            "Database calls made; calls / statements is the mean batch.",
            s->counters[SHM_METRICS_DB_CALLS]);
    gauge(b, "paymentsd_db_pool_busy", "Database calls running, all workers.",
          s->gauges[SHM_METRICS_GAUGE_DB_BUSY]);
    gauge(b, "paymentsd_db_pool_waiting", "Database calls waiting for a connection, all workers.",
          s->gauges[SHM_METRICS_GAUGE_DB_QUEUED]);
    gauge(b, "paymentsd_db_pool_connections", "Live database connections, all workers.",
          s->gauges[SHM_METRICS_GAUGE_DB_CONNECTED]);
    process(b);
    http_reply(r, 200, "text/plain; version=0.0.4; charset=utf-8",
               (const char *)evbuffer_pullup(b, -1), evbuffer_get_length(b));
    evbuffer_free(b);
    free(s);
}

static void
observe_statement(void *arg, int ncalls)
{
    shm_metrics_db_batch(arg, ncalls);
}

static void
observe_db_call(void *arg, int committed, int64_t dur_us)
{
    shm_metrics_db_call(arg, committed, dur_us);
}

static void
observe_provider(void *arg, provider_call_t call, provider_outcome_t outcome, int64_t dur_us)
{
    shm_metrics_call_t c = call == PROVIDER_CALL_CHARGE ? SHM_METRICS_CALL_CHARGE
                     : call == PROVIDER_CALL_GET ? SHM_METRICS_CALL_GET : SHM_METRICS_CALL_CANCEL;

    shm_metrics_provider_call(arg, c, outcome != PROVIDER_UNAVAILABLE, dur_us);
}

void
metrics_observe(shm_metrics_slot_t *slot, db_pool_t *db, provider_t *prov)
{
    const db_observer_t o = { observe_statement, observe_db_call, slot };

    db_pool_set_observer(db, &o);
    provider_set_observer(prov, observe_provider, slot);
}
