/*
 * Regression: the DB queue floor (d6ebb07, which came without a test).
 *
 * A call that waited in the pool's queue until it had almost no time left
 * was still sent when a connection freed: it could only time out on the
 * wire, and a query timeout drops its connection, so one late call cost a
 * healthy connection and the reconnect that follows.  Now dispatch() fails
 * a call with less than the floor left (db_timeout / 10, at most 50 ms) at
 * once, and the connection stays.
 *
 * Here a pool of one connection to the test database (PAYMENTSD_TEST_DATABASE;
 * skipped without it) runs a first call that sleeps until 25 ms before the
 * second call's deadline; the second call, queued behind it, is a 200 ms
 * sleep.  It must fail as "timed out waiting for a database connection",
 * and the next call must run on the same backend.  A round in which the
 * loaded machine freed the connection outside the floor's window proves
 * nothing either way and is played again.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>

#include "worker/db.h"

#define TIMEOUT_MS 1000         /* the pool's call timeout: a floor of 50 ms */
#define FLOOR_MS 50
#define MARGIN_MS 25            /* left to the second call when the first ends */
#define ROUNDS 5

/* One call's answer. */
typedef struct {
    int done;
    int64_t took_ms;            /* from db_call to the answer, queueing included */
    char err[256];              /* "" on success */
    long pid;                   /* pg_backend_pid() when the call returned it */
} answer_t;

static struct event_base *base;
static int64_t last_took_us;    /* the observer's word on the call answered next */

/* The pool's observer times every call from db_call to its answer, just
 * before the call's callback: the test needs no clock of its own. */
static void
observe_call(void *arg, int committed, int64_t dur_us)
{
    (void)arg;
    (void)committed;
    last_took_us = dur_us;
}

static void
on_answer(void *arg, const PGresult *res, int row, const char *err)
{
    answer_t *a = arg;

    a->done = 1;
    a->took_ms = last_took_us / 1000;
    snprintf(a->err, sizeof(a->err), "%s", err != NULL ? err : "");
    if (err == NULL && PQnfields(res) > 0 && !PQgetisnull(res, row, 0))
        a->pid = strtol(PQgetvalue(res, row, 0), NULL, 10);
}

static void
on_expired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(int *)arg = 1;
}

/* Run the loop until *done or ms have passed; returns *done. */
static int
run_until(const int *done, int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    int expired = 0;
    struct event *timer = evtimer_new(base, on_expired, &expired);

    assert_non_null(timer);
    assert_int_equal(evtimer_add(timer, &tv), 0);
    while (!*done && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(timer);
    return *done;
}

static int
pool_up(db_pool_t *p)
{
    db_pool_stats_t st;

    db_pool_stats(p, &st);
    return st.connected == 1;
}

/* Wait (at most 5 s) until the pool's one connection is up. */
static void
wait_up(db_pool_t *p)
{
    for (int i = 0; i < 250 && !pool_up(p); i++) {
        int never = 0;

        run_until(&never, 20);
    }
    assert_true(pool_up(p));
}

static void
test_late_call_keeps_connection(void **state)
{
    const char *conninfo = getenv("PAYMENTSD_TEST_DATABASE");
    const db_observer_t observer = { NULL, observe_call, NULL };
    int exercised = 0;
    db_pool_t *p;

    (void)state;
    if (conninfo == NULL || conninfo[0] == '\0') {
        print_message("no PAYMENTSD_TEST_DATABASE: nothing to run against\n");
        skip();
    }
    base = event_base_new();
    assert_non_null(base);
    p = db_pool_new(base, NULL, conninfo, "test_db_queue_floor", 1, 8, 1, TIMEOUT_MS);
    assert_non_null(p);
    db_pool_set_observer(p, &observer);

    for (int round = 0; round < ROUNDS && !exercised; round++) {
        answer_t first = { 0 }, late = { 0 }, next = { 0 };
        char sleep_s[32];
        const char *params[1] = { sleep_s };
        int64_t left;

        wait_up(p);
        snprintf(sleep_s, sizeof(sleep_s), "%.3f", (TIMEOUT_MS - MARGIN_MS) / 1000.0);
        assert_int_equal(db_call(p, "SELECT pg_backend_pid(), pg_sleep($1::float8)", 1, params,
                                 on_answer, &first), 0);
        assert_int_equal(db_call(p, "SELECT pg_sleep(0.2)", 0, NULL, on_answer, &late), 0);
        assert_true(run_until(&first.done, TIMEOUT_MS + 500));
        /* The second call was queued just after the first: its time left
         * when the connection freed, give or take microseconds. */
        left = TIMEOUT_MS - first.took_ms;
        if (first.err[0] != '\0' || left <= 1 || left >= FLOOR_MS) {
            /* The first call timed out, or ended outside the window. */
            print_message("round %d: first call \"%s\", %lld ms left to the second: again\n",
                          round, first.err, (long long)left);
            run_until(&late.done, TIMEOUT_MS + 500);
            continue;
        }
        exercised = 1;
        assert_true(run_until(&late.done, TIMEOUT_MS + 500));
        print_message("the connection freed with %lld ms left to the queued call: \"%s\"\n",
                      (long long)left, late.err);
        assert_string_equal(late.err, "timed out waiting for a database connection");
        assert_true(late.took_ms < TIMEOUT_MS);     /* at once, not by the queue timer */
        /* The connection was kept: the next call runs on the same backend. */
        assert_true(pool_up(p));
        assert_int_equal(db_call(p, "SELECT pg_backend_pid()", 0, NULL, on_answer, &next), 0);
        assert_true(run_until(&next.done, TIMEOUT_MS + 500));
        assert_string_equal(next.err, "");
        assert_int_equal(next.pid, first.pid);
    }
    db_pool_free(p);
    event_base_free(base);
    if (!exercised) {
        print_message("no round freed the connection inside the floor's window\n");
        skip();
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_late_call_keeps_connection),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
