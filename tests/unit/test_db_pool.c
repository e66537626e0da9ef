/*
 * The pool's scheduling, against the test database (PAYMENTSD_TEST_DATABASE;
 * each test is skipped without it).
 *
 * Regression: the DB queue floor (d6ebb07, which came without a test).
 * A call that waited in the pool's queue until it had almost no time left
 * was still sent when a connection freed: it could only time out on the
 * wire, and a query timeout drops its connection, so one late call cost a
 * healthy connection and the reconnect that follows.  Now dispatch() fails
 * a call with less than the floor left (db_timeout / 10, at most 50 ms) at
 * once, and the connection stays.  Here a pool of one connection runs a
 * first call that sleeps until 25 ms before the second call's deadline; the
 * second call, queued behind it, is a 200 ms sleep.  It must fail as "timed
 * out waiting for a database connection", and the next call must run on
 * the same backend.  A round in which the loaded machine freed the
 * connection outside the floor's window proves nothing either way and is
 * played again.
 *
 * The hold: while a young statement runs (under 20 ms), the calls that
 * arrive wait for it even with a connection idle, and go as one batch; a
 * slow statement holds them back 20 ms at most, then an idle connection
 * serves them.
 *
 * Regression: a call made from a callback while db_pool_free ends the
 * running calls was accepted, and could be sent on a connection about to
 * be freed or arm the pool's timers after the pool was gone.
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
#define HOLD_MS 20              /* DB_HOLD_MS in worker/db.c */

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
pool_up(db_pool_t *p, int n)
{
    db_pool_stats_t st;

    db_pool_stats(p, &st);
    return st.connected == n;
}

/* Wait (at most 5 s) until the pool's n connections are up. */
static void
wait_up(db_pool_t *p, int n)
{
    for (int i = 0; i < 250 && !pool_up(p, n); i++) {
        int never = 0;

        run_until(&never, 20);
    }
    assert_true(pool_up(p, n));
}

static uint64_t
statements(db_pool_t *p)
{
    db_pool_stats_t st;

    db_pool_stats(p, &st);
    return st.statements;
}

/* The test database, or skip. */
static const char *
conninfo(void)
{
    const char *c = getenv("PAYMENTSD_TEST_DATABASE");

    if (c == NULL || c[0] == '\0') {
        print_message("no PAYMENTSD_TEST_DATABASE: nothing to run against\n");
        skip();
    }
    return c;
}

/* A new event base, and a pool on it to the test database (or skip) whose
 * calls the observer times. */
static db_pool_t *
pool_start(int size, int queue_max, int batch_max)
{
    static const db_observer_t observer = { NULL, observe_call, NULL };
    const char *db = conninfo();
    db_pool_t *p;

    base = event_base_new();
    assert_non_null(base);
    p = db_pool_new(base, NULL, db, "test_db_pool", size, queue_max, batch_max, TIMEOUT_MS);
    assert_non_null(p);
    db_pool_set_observer(p, &observer);
    return p;
}

static void
test_late_call_keeps_connection(void **state)
{
    int exercised = 0;
    db_pool_t *p;

    (void)state;
    p = pool_start(1, 8, 1);
    for (int round = 0; round < ROUNDS && !exercised; round++) {
        answer_t first = { 0 }, late = { 0 }, next = { 0 };
        char sleep_s[32];
        const char *params[1] = { sleep_s };
        int64_t left;

        wait_up(p, 1);
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
        assert_true(pool_up(p, 1));
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

/* A batch whose SQL echoes each call's parameter, led by its ordinal. */
static const db_batch_kind_t echo_kind = {
    "SELECT u.ord::int, u.v FROM unnest($1::text[]) WITH ORDINALITY AS u(v, ord)", 1
};

typedef struct {
    answer_t a;
    char sent[16];
    char got[16];
} echo_t;

static void
on_echo(void *arg, const PGresult *res, int row, const char *err)
{
    echo_t *e = arg;

    on_answer(&e->a, NULL, 0, err);
    if (err == NULL)
        snprintf(e->got, sizeof(e->got), "%s", PQgetvalue(res, row, 1));
}

/* Calls that arrive while a young statement runs wait for it, although the
 * pool's other connection is idle, and then go together as one batch. */
static void
test_calls_wait_for_young_statement(void **state)
{
    int exercised = 0;
    db_pool_t *p;

    (void)state;
    p = pool_start(2, 64, 64);
    for (int round = 0; round < ROUNDS && !exercised; round++) {
        answer_t first = { 0 };
        echo_t calls[5];
        uint64_t before;

        wait_up(p, 2);
        before = statements(p);
        assert_int_equal(db_call(p, "SELECT pg_sleep(0.005)", 0, NULL, on_answer, &first), 0);
        for (int i = 0; i < 5; i++) {
            const char *params[1] = { calls[i].sent };

            memset(&calls[i], 0, sizeof(calls[i]));
            snprintf(calls[i].sent, sizeof(calls[i].sent), "call %d", i);
            assert_int_equal(db_call_batched(p, &echo_kind, params, on_echo, &calls[i]), 0);
        }
        assert_true(run_until(&first.done, TIMEOUT_MS));
        for (int i = 0; i < 5; i++) {
            assert_true(run_until(&calls[i].a.done, TIMEOUT_MS));
            assert_string_equal(calls[i].a.err, "");
            assert_string_equal(calls[i].got, calls[i].sent);
        }
        if (first.took_ms >= HOLD_MS - 5) {
            print_message("round %d: the first statement took %lld ms: again\n", round,
                          (long long)first.took_ms);
            continue;           /* its hold ran out before it ended */
        }
        exercised = 1;
        /* The sleep, then the five as one batch; without the hold the
         * first of them goes at once on the idle connection. */
        assert_int_equal(statements(p) - before, 2);
    }
    db_pool_free(p);
    event_base_free(base);
    if (!exercised) {
        print_message("no round ended its first statement within the hold\n");
        skip();
    }
}

/* A slow statement holds the calls behind it for the hold, no longer: then
 * the idle connection serves them. */
static void
test_slow_statement_holds_for_the_hold_only(void **state)
{
    answer_t slow = { 0 }, next = { 0 };
    db_pool_t *p;

    (void)state;
    p = pool_start(2, 64, 64);
    wait_up(p, 2);
    assert_int_equal(db_call(p, "SELECT pg_backend_pid(), pg_sleep(0.5)", 0, NULL, on_answer,
                             &slow), 0);
    assert_int_equal(db_call(p, "SELECT pg_backend_pid()", 0, NULL, on_answer, &next), 0);
    assert_true(run_until(&next.done, TIMEOUT_MS));
    assert_false(slow.done);
    assert_string_equal(next.err, "");
    print_message("the call behind a slow statement took %lld ms\n", (long long)next.took_ms);
    assert_true(next.took_ms >= HOLD_MS / 2);   /* held ... */
    assert_true(next.took_ms < 400);            /* ... but not for the slow one */
    assert_true(run_until(&slow.done, TIMEOUT_MS));
    assert_string_equal(slow.err, "");
    assert_true(slow.pid != next.pid);
    db_pool_free(p);
    event_base_free(base);
}

typedef struct {
    db_pool_t *pool;
    answer_t a;
    int again;                  /* what db_call returned in the callback */
    answer_t again_answer;
} recall_t;

static void
on_answer_call_again(void *arg, const PGresult *res, int row, const char *err)
{
    recall_t *r = arg;

    on_answer(&r->a, res, row, err);
    r->again = db_call(r->pool, "SELECT 1", 0, NULL, on_answer, &r->again_answer);
}

/* db_pool_free ends the running call; the call its callback makes then is
 * refused, and nothing of the pool is left to fire after it is gone. */
static void
test_free_refuses_calls_from_callbacks(void **state)
{
    recall_t r = { 0 };
    int never = 0;

    (void)state;
    r.pool = pool_start(2, 64, 64);
    wait_up(r.pool, 2);
    assert_int_equal(db_call(r.pool, "SELECT pg_sleep(1)", 0, NULL, on_answer_call_again, &r),
                     0);
    run_until(&never, 5);       /* sent */
    db_pool_free(r.pool);
    assert_true(r.a.done);
    assert_string_equal(r.a.err, "shutting down");
    assert_int_equal(r.again, -1);
    assert_false(r.again_answer.done);
    run_until(&never, 3 * HOLD_MS);     /* a timer of the freed pool would fire here */
    assert_false(r.again_answer.done);
    event_base_free(base);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_late_call_keeps_connection),
        cmocka_unit_test(test_calls_wait_for_young_statement),
        cmocka_unit_test(test_slow_statement_holds_for_the_hold_only),
        cmocka_unit_test(test_free_refuses_calls_from_callbacks),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
