/*
 * Unit tests of the shared counters (shm/metrics.c): histogram buckets
 * (a value on a bound counts in that bound's bucket, as Prometheus' "le"
 * says), status classes and methods, the batch size histogram, sums over
 * slots written by other processes, one of them killed mid-run.
 */
#include "config.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "shm/metrics.h"
#include "tests/unit/child.h"

static int
setup(void **state)
{
    *state = shm_metrics_create();
    return *state == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
    shm_metrics_destroy(*state);
    return 0;
}

static shm_metrics_snapshot_t *
snap(shm_metrics_t *m)
{
    shm_metrics_snapshot_t *s = malloc(sizeof(*s));

    assert_non_null(s);
    shm_metrics_snapshot(m, s);
    return s;
}

static void
test_latency_buckets(void **state)
{
    shm_metrics_slot_t *slot = shm_metrics_slot(*state, 0);
    shm_metrics_snapshot_t *s;
    const shm_metrics_hist_t *h;

    const shm_metrics_route_t route = SHM_METRICS_ROUTE_CHECKOUT;
    const shm_metrics_method_t post = SHM_METRICS_METHOD_POST;

    shm_metrics_request(slot, route, post, 201, 1000);      /* on 1 ms */
    shm_metrics_request(slot, route, post, 201, 1001);
    shm_metrics_request(slot, route, post, 201, 9000000);   /* > 5 s */
    shm_metrics_request(slot, route, post, 201, -5);        /* clock step */
    s = snap(*state);
    h = &s->latency[route][post][1];
    assert_int_equal(shm_metrics_bucket_us(0), 1000);
    assert_int_equal(h->buckets[0], 2);                    /* -5 (as 0) and 1000 */
    assert_int_equal(h->buckets[1], 3);                    /* cumulative: + 1001 */
    assert_int_equal(h->buckets[SHM_METRICS_BUCKETS - 1], 3);
    assert_int_equal(h->buckets[SHM_METRICS_BUCKETS], 4);  /* +Inf: the count */
    assert_int_equal(h->sum, 1000 + 1001 + 9000000);
    assert_int_equal(s->requests[SHM_METRICS_ROUTE_CHECKOUT][1], 4);   /* status 201 */
    free(s);
}

/* How many requests s saw of route and method in status class cls (2xx: 1). */
static uint64_t
seen(const shm_metrics_snapshot_t *s, shm_metrics_route_t route, shm_metrics_method_t method,
     int cls)
{
    return s->latency[route][method][cls].buckets[SHM_METRICS_BUCKETS];
}

static void
test_classes_and_methods(void **state)
{
    shm_metrics_slot_t *slot = shm_metrics_slot(*state, 0);
    shm_metrics_snapshot_t *s;

    shm_metrics_request(slot, SHM_METRICS_ROUTE_CHECKOUT, SHM_METRICS_METHOD_OPTIONS, 204, 10);
    shm_metrics_request(slot, SHM_METRICS_ROUTE_HEALTHZ, SHM_METRICS_METHOD_HEAD, 200, 10);
    shm_metrics_request(slot, SHM_METRICS_ROUTE_UNKNOWN, SHM_METRICS_METHOD_OTHER, 404, 10);
    shm_metrics_request(slot, SHM_METRICS_ROUTE_READYZ, SHM_METRICS_METHOD_GET, 503, 10);
    shm_metrics_request(slot, SHM_METRICS_ROUTE_READYZ, SHM_METRICS_METHOD_GET, 99, 10);
    shm_metrics_request(slot, SHM_METRICS_ROUTE_READYZ, SHM_METRICS_METHODS + 3, 600, 10);
    s = snap(*state);
    assert_int_equal(seen(s, SHM_METRICS_ROUTE_CHECKOUT, SHM_METRICS_METHOD_OPTIONS, 1), 1);
    assert_int_equal(seen(s, SHM_METRICS_ROUTE_HEALTHZ, SHM_METRICS_METHOD_HEAD, 1), 1);
    assert_int_equal(seen(s, SHM_METRICS_ROUTE_UNKNOWN, SHM_METRICS_METHOD_OTHER, 3), 1);
    /* 503, and the impossible 99 and 600: 5xx; an unknown method: other */
    assert_int_equal(seen(s, SHM_METRICS_ROUTE_READYZ, SHM_METRICS_METHOD_GET, 4), 2);
    assert_int_equal(seen(s, SHM_METRICS_ROUTE_READYZ, SHM_METRICS_METHOD_OTHER, 4), 1);
    assert_int_equal(s->requests[SHM_METRICS_ROUTE_CHECKOUT][2], 1);  /* 204 is counted by itself */
    assert_int_equal(shm_metrics_status_code(2), 204);
    assert_string_equal(shm_metrics_method_name(SHM_METRICS_METHOD_OPTIONS), "OPTIONS");
    free(s);
}

static void
test_provider_db_and_batches(void **state)
{
    shm_metrics_slot_t *slot = shm_metrics_slot(*state, 0);
    shm_metrics_snapshot_t *s;

    shm_metrics_provider_call(slot, SHM_METRICS_CALL_CHARGE, 1, 3000);
    shm_metrics_provider_call(slot, SHM_METRICS_CALL_CHARGE, 0, 800000);
    shm_metrics_provider_call(slot, SHM_METRICS_CALL_CANCEL, 7, 10);       /* non-zero: answered */
    shm_metrics_db_call(slot, 1, 2000);
    shm_metrics_db_call(slot, 0, 5000000);
    shm_metrics_db_batch(slot, 1);
    shm_metrics_db_batch(slot, 64);
    shm_metrics_db_batch(slot, 65);
    shm_metrics_db_batch(slot, 5000);
    s = snap(*state);
    assert_int_equal(s->provider[SHM_METRICS_CALL_CHARGE][1].buckets[SHM_METRICS_BUCKETS], 1);
    assert_int_equal(s->provider[SHM_METRICS_CALL_CHARGE][1].buckets[2], 1);   /* le 5 ms */
    assert_int_equal(s->provider[SHM_METRICS_CALL_CHARGE][0].sum, 800000);
    assert_int_equal(s->provider[SHM_METRICS_CALL_CANCEL][1].buckets[0], 1);
    assert_int_equal(s->provider[SHM_METRICS_CALL_GET][1].buckets[SHM_METRICS_BUCKETS], 0);
    assert_int_equal(s->db_call[1].buckets[1], 1);
    assert_int_equal(s->db_call[0].buckets[SHM_METRICS_BUCKETS - 1], 1);        /* le 5 s */
    assert_int_equal(shm_metrics_batch_bucket(6), 64);
    assert_int_equal(shm_metrics_batch_bucket(SHM_METRICS_BATCH_BUCKETS), -1);
    assert_int_equal(s->db_batch.buckets[0], 1);
    assert_int_equal(s->db_batch.buckets[6], 2);                            /* le 64 */
    assert_int_equal(s->db_batch.buckets[7], 3);                            /* le 128 */
    assert_int_equal(s->db_batch.buckets[SHM_METRICS_BATCH_BUCKETS - 1], 3);    /* le 1000 */
    assert_int_equal(s->db_batch.buckets[SHM_METRICS_BATCH_BUCKETS], 4);        /* +Inf */
    assert_int_equal(s->db_batch.buckets[SHM_METRICS_BUCKETS], 4);              /* the count */
    assert_int_equal(s->db_batch.sum, 1 + 64 + 65 + 5000);
    free(s);
}

/* Children write their own slots; one is killed while it writes.  The
 * sum holds every update of the ones that finished and a consistent part
 * of the killed one's: its count equals its +Inf bucket. */
static void
test_processes(void **state)
{
    shm_metrics_t *m = *state;
    shm_metrics_snapshot_t *s;
    pid_t pids[3];

    for (int i = 0; i < 3; i++) {
        pids[i] = child_fork();
        if (pids[i] == 0) {
            shm_metrics_slot_t *slot = shm_metrics_slot(m, i + 1);
            long n = i < 2 ? 1000 : -1;         /* the third runs until killed */

            for (long k = 0; n < 0 || k < n; k++) {
                shm_metrics_request(slot, SHM_METRICS_ROUTE_HEALTHZ, SHM_METRICS_METHOD_GET, 200,
                                    100);
                shm_metrics_db_batch(slot, 2);
            }
            _exit(0);
        }
    }
    for (int i = 0; i < 2; i++)
        child_reap_ok(pids[i]);
    /* Kill the third once it is writing (bounded: 5 s). */
    for (int tries = 0; tries < 500; tries++) {
        s = snap(m);
        if (s->requests[SHM_METRICS_ROUTE_HEALTHZ][0] > 2000 + 1000)
            tries = 500;
        free(s);
        usleep(10000);
    }
    child_kill(pids[2]);
    s = snap(m);
    {
        const shm_metrics_hist_t *h =
            &s->latency[SHM_METRICS_ROUTE_HEALTHZ][SHM_METRICS_METHOD_GET][1];
        uint64_t count = h->buckets[SHM_METRICS_BUCKETS];

        assert_true(count > 3000);
        assert_int_equal(h->buckets[0], count);        /* 100 us: all in le 1 ms */
        /* The kill may land between the bucket and the sum: at most one short. */
        assert_true(h->sum == 100 * count || h->sum == 100 * (count - 1));
        assert_true(s->requests[SHM_METRICS_ROUTE_HEALTHZ][0] >= count - 1
                    && s->requests[SHM_METRICS_ROUTE_HEALTHZ][0] <= count + 1);
    }
    free(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_latency_buckets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_classes_and_methods, setup, teardown),
        cmocka_unit_test_setup_teardown(test_provider_db_and_batches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_processes, setup, teardown),
    };

    return cmocka_run_group_tests_name("shm_metrics", tests, NULL, NULL);
}
