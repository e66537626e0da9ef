/*
 * metrics: render the shared counters in the Prometheus text format
 * (version 0.0.4).  A scrape reads every worker's slot, so any worker can
 * answer for the whole server; nothing here allocates per series.
 */
#include "config.h"

#include "worker/metrics.h"

#include <stdlib.h>

#include <event2/buffer.h>

#include "shm/metrics.h"
#include "worker/worker.h"

typedef struct {
    metrics_counter_t counter;
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
    { METRICS_CHECKOUT_PAID, "paid" }, { METRICS_CHECKOUT_FAILED, "failed" },
    { METRICS_CHECKOUT_PENDING, "pending_payment" }, { METRICS_CHECKOUT_REPLAYED, "replayed" },
    { METRICS_CHECKOUT_REUSED, "key_reused" }, { METRICS_CHECKOUT_IN_USE, "key_in_use" },
    { METRICS_CHECKOUT_INVALID, "invalid" }, { METRICS_CHECKOUT_UNAVAILABLE, "unavailable" },
};
static const series_t replays[] = {
    { METRICS_REPLAY_CACHE, "cache" }, { METRICS_REPLAY_DB, "db" },
};
static const series_t cache[] = {
    { METRICS_CACHE_HIT, "hit" }, { METRICS_CACHE_MISS, "miss" },
};
static const series_t webhooks[] = {
    { METRICS_WEBHOOK_APPLIED, "applied" }, { METRICS_WEBHOOK_NOT_APPLIED, "not_applied" },
    { METRICS_WEBHOOK_CONFLICT, "conflict" }, { METRICS_WEBHOOK_DUPLICATE, "duplicate" },
    { METRICS_WEBHOOK_NOT_FOUND, "order_not_found" },
    { METRICS_WEBHOOK_SIGNATURE_INVALID, "signature_invalid" },
    { METRICS_WEBHOOK_SIGNATURE_EXPIRED, "signature_expired" },
    { METRICS_WEBHOOK_INVALID, "invalid" }, { METRICS_WEBHOOK_UNAVAILABLE, "unavailable" },
};
static const series_t provider[] = {
    { METRICS_PROVIDER_SUCCEEDED, "succeeded" }, { METRICS_PROVIDER_DECLINED, "declined" },
    { METRICS_PROVIDER_UNAVAILABLE, "unavailable" }, { METRICS_PROVIDER_SKIPPED, "breaker_open" },
};

static const series_t reversals[] = {
    { METRICS_REVERSAL_CANCELED, "canceled" }, { METRICS_REVERSAL_REFUNDED, "refunded" },
    { METRICS_REVERSAL_DECLINED, "declined" }, { METRICS_REVERSAL_NOT_FOUND, "not_found" },
    { METRICS_REVERSAL_UNAVAILABLE, "unavailable" }, { METRICS_REVERSAL_UNRECORDED, "unrecorded" },
};
static const series_t finish_errors[] = {
    { METRICS_FINISH_FAILED, "not_committed" },
};

#define FAMILY(name, help, label, s) { name, help, label, s, sizeof(s) / sizeof(s[0]) }

static const family_t families[] = {
    FAMILY("paymentsd_checkouts_total", "Checkout requests by what the client got.", "outcome", checkouts),
    FAMILY("paymentsd_idempotent_replays_total", "Replayed checkout responses by source.", "source", replays),
    FAMILY("paymentsd_shm_cache_lookups_total",
           "Checkouts looked up in the shared-memory cache: hit = answered without PostgreSQL.",
           "result", cache),
    FAMILY("paymentsd_webhooks_total", "Provider webhooks by result.", "result", webhooks),
    FAMILY("paymentsd_provider_calls_total", "Provider charge calls by result.", "result", provider),
    FAMILY("paymentsd_reversals_total",
           "Cancel-or-refund attempts for FAILED orders, by the provider's answer "
           "(unrecorded: answered, but the database call failed).", "result", reversals),
    FAMILY("paymentsd_checkout_finish_errors_total",
           "checkout_finish calls that did not commit; the key stays in progress and is recovered.",
           "result", finish_errors),
};

static void
requests(struct evbuffer *b, const shm_metrics_snapshot_t *s)
{
    evbuffer_add_printf(b, "# HELP paymentsd_http_requests_total HTTP requests by route and status.\n"
                           "# TYPE paymentsd_http_requests_total counter\n");
    for (int r = 0; r < METRICS_ROUTES; r++) {
        for (int c = 0; c <= METRICS_STATUS_CODES; c++) {
            int code = shm_metrics_status_code(c);
            if (s->requests[r][c] == 0)
                continue;
            if (code != 0)
                evbuffer_add_printf(b, "paymentsd_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                                    shm_metrics_route_name(r), code,
                                    (unsigned long long)s->requests[r][c]);
            else
                evbuffer_add_printf(b, "paymentsd_http_requests_total{route=\"%s\",status=\"other\"} %llu\n",
                                    shm_metrics_route_name(r), (unsigned long long)s->requests[r][c]);
        }
    }
    evbuffer_add_printf(b, "# HELP paymentsd_http_request_duration_seconds Time from request to reply.\n"
                           "# TYPE paymentsd_http_request_duration_seconds histogram\n");
    for (int r = 0; r < METRICS_ROUTES; r++) {
        const char *name = shm_metrics_route_name(r);
        if (s->latency_count[r] == 0)
            continue;
        for (int i = 0; i < METRICS_BUCKETS; i++)
            evbuffer_add_printf(b, "paymentsd_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                                name, (double)shm_metrics_bucket_us(i) / 1e6,
                                (unsigned long long)s->latency_buckets[r][i]);
        evbuffer_add_printf(b, "paymentsd_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n"
                               "paymentsd_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
                               "paymentsd_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
                            name, (unsigned long long)s->latency_count[r], name,
                            (double)s->latency_sum_us[r] / 1e6, name,
                            (unsigned long long)s->latency_count[r]);
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
    const worker_shared_t *shared = worker_shared(r->worker);
    struct evbuffer *b = evbuffer_new();
    shm_metrics_snapshot_t *s = malloc(sizeof(*s));

    if (b == NULL || s == NULL) {
        if (b != NULL)
            evbuffer_free(b);
        free(s);
        http_reply_error(r, 503, "service_unavailable", "out of memory", NULL);
        return;
    }
    worker_update_gauges(r->worker);
    shm_metrics_snapshot(shared->metrics, s);
    requests(b, s);
    for (size_t f = 0; f < sizeof(families) / sizeof(families[0]); f++) {
        const family_t *fam = &families[f];
        evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s counter\n", fam->name, fam->help, fam->name);
        for (size_t i = 0; i < fam->n; i++)
            evbuffer_add_printf(b, "%s{%s=\"%s\"} %llu\n", fam->name, fam->label, fam->series[i].label,
                                (unsigned long long)s->counters[fam->series[i].counter]);
    }
    {
        shm_cache_stats_t cs;
        shm_cache_stats(shared->cache, &cs);
        counter(b, "paymentsd_shm_cache_evictions_total", "Live entries pushed out of a full set.",
                cs.evictions);
        counter(b, "paymentsd_shm_cache_too_big_total", "Responses too large for a slot.", cs.too_big);
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
            s->counters[METRICS_DB_STATEMENTS]);
    counter(b, "paymentsd_db_calls_total", "Database calls made; calls / statements is the mean batch.",
            s->counters[METRICS_DB_CALLS]);
    gauge(b, "paymentsd_db_pool_busy", "Database calls running, all workers.",
          s->gauges[METRICS_GAUGE_DB_BUSY]);
    gauge(b, "paymentsd_db_pool_waiting", "Database calls waiting for a connection, all workers.",
          s->gauges[METRICS_GAUGE_DB_QUEUED]);
    gauge(b, "paymentsd_db_pool_connections", "Live database connections, all workers.",
          s->gauges[METRICS_GAUGE_DB_CONNECTED]);
    http_reply(r, 200, "text/plain; version=0.0.4; charset=utf-8",
               (const char *)evbuffer_pullup(b, -1), evbuffer_get_length(b));
    evbuffer_free(b);
    free(s);
}
