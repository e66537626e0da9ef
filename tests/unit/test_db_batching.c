/*
 * How the db pool forms batches (group commit), against the test database
 * (PAYMENTSD_TEST_DATABASE; skipped without it).
 *
 * - One batch of a kind at a time: while a batch runs, the calls of its
 *   kind wait for it even with a connection idle, and then go as one batch
 *   (before, each went out at once on the idle connection, in batches of
 *   one or two: PostgreSQL's cost is mostly per statement, so under load
 *   the batches stayed small).  A plain call still takes the idle
 *   connection at once, and so does a full batch.
 * - Calls made in one pass of the loop go as one batch: db_call queues and
 *   the dispatch runs later in the same pass (before, the first call went
 *   out alone from inside db_call).
 *
 * The pool's observer reports the size of every statement sent, in order;
 * the kind's SQL sleeps as long as the longest sleep its calls ask for and
 * returns each call's backend pid.
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

#include "tests/unit/dbloop.h"
#include "worker/db.h"

#define TIMEOUT_MS 5000
#define SIZES_MAX 16

static const db_batch_kind_t SLEEPY = {
    "SELECT u.ord::int, pg_backend_pid()"
    "  FROM unnest($1::text[]) WITH ORDINALITY AS u(s, ord),"
    "       pg_sleep((SELECT max(s::float8) FROM unnest($1::text[]) s))", 1
};

typedef struct {
    int done;
    char err[256];
    long pid;
    int seq;                    /* the order of the answers, from 1 */
} answer_t;

static struct event_base *base;
static int sizes[SIZES_MAX], nsizes, answered;

static void
observe_statement(void *arg, int ncalls)
{
    (void)arg;
    if (nsizes < SIZES_MAX)
        sizes[nsizes++] = ncalls;
}

static void
on_answer(void *arg, const PGresult *res, int row, const char *err)
{
    answer_t *a = arg;

    a->done = 1;
    a->seq = ++answered;
    snprintf(a->err, sizeof(a->err), "%s", err != NULL ? err : "");
    if (err == NULL)
        a->pid = strtol(PQgetvalue(res, row, 1), NULL, 10);
}

static void
sleepy(db_pool_t *p, const char *secs, answer_t *a)
{
    const char *params[1] = { secs };

    assert_int_equal(db_call_batched(p, &SLEEPY, params, on_answer, a), 0);
}

/* A pool of size connections, all up, with the statement observer. */
static db_pool_t *
pool_new(int size, int batch_max)
{
    const char *conninfo = dbloop_conninfo();
    const db_observer_t observer = { observe_statement, NULL, NULL };
    db_pool_t *p;

    if (conninfo == NULL)
        skip();
    base = event_base_new();
    assert_non_null(base);
    p = db_pool_new(base, NULL, conninfo, "test_db_batching", size, 64, batch_max, TIMEOUT_MS);
    assert_non_null(p);
    db_pool_set_observer(p, &observer);
    dbloop_wait_up(base, p, size);
    nsizes = 0;
    answered = 0;
    return p;
}

static void
pool_free(db_pool_t *p)
{
    db_pool_free(p);
    event_base_free(base);
}

/* Run the loop until the first statement has gone out. */
static void
wait_sent(int n)
{
    int sent = 0;

    for (int i = 0; i < 100 && !sent; i++) {
        int never = 0;

        dbloop_run_until(base, &never, 5);
        sent = nsizes >= n;
    }
    assert_true(sent);
}

static void
test_one_batch_of_a_kind_at_a_time(void **state)
{
    db_pool_t *p = pool_new(2, 64);
    answer_t first = { 0 }, later[3] = { { 0 } }, plain = { 0 };

    (void)state;
    sleepy(p, "0.5", &first);
    wait_sent(1);
    /* One at a time, each given the loop: before, each went out at once on
     * the idle second connection. */
    for (int i = 0; i < 3; i++) {
        int never = 0;

        sleepy(p, "0", &later[i]);
        dbloop_run_until(base, &never, 20);
    }
    /* A plain call is not held back: it runs beside the first batch. */
    assert_int_equal(db_call(p, "SELECT 1, pg_backend_pid()", 0, NULL, on_answer, &plain), 0);
    assert_true(dbloop_run_until(base, &plain.done, TIMEOUT_MS));
    assert_string_equal(plain.err, "");
    assert_int_equal(first.done, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(later[i].done, 0);

    assert_true(dbloop_run_until(base, &later[2].done, TIMEOUT_MS));
    assert_string_equal(first.err, "");
    for (int i = 0; i < 3; i++) {
        assert_string_equal(later[i].err, "");
        assert_true(later[i].seq > first.seq);
        assert_int_equal(later[i].pid, later[0].pid);
    }
    /* The first batch, the plain call, then the three as one batch. */
    assert_int_equal(nsizes, 3);
    assert_int_equal(sizes[0], 1);
    assert_int_equal(sizes[1], 1);
    assert_int_equal(sizes[2], 3);
    pool_free(p);
}

static void
test_full_batch_goes_at_once(void **state)
{
    db_pool_t *p = pool_new(2, 2);
    answer_t first = { 0 }, full[2] = { { 0 } };

    (void)state;
    sleepy(p, "0.5", &first);
    wait_sent(1);
    sleepy(p, "0", &full[0]);
    sleepy(p, "0", &full[1]);
    assert_true(dbloop_run_until(base, &full[1].done, TIMEOUT_MS));
    assert_int_equal(first.done, 0);     /* beside the first, not after it */
    assert_string_equal(full[0].err, "");
    assert_string_equal(full[1].err, "");
    assert_int_not_equal(full[0].pid, 0);
    assert_int_equal(nsizes, 2);
    assert_int_equal(sizes[1], 2);
    assert_true(dbloop_run_until(base, &first.done, TIMEOUT_MS));
    pool_free(p);
}

static void
test_calls_of_one_pass_go_together(void **state)
{
    db_pool_t *p = pool_new(2, 64);
    answer_t a[3] = { { 0 } };

    (void)state;
    for (int i = 0; i < 3; i++)
        sleepy(p, "0", &a[i]);
    assert_true(dbloop_run_until(base, &a[2].done, TIMEOUT_MS));
    for (int i = 0; i < 3; i++)
        assert_string_equal(a[i].err, "");
    assert_int_equal(nsizes, 1);
    assert_int_equal(sizes[0], 3);
    pool_free(p);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_batch_of_a_kind_at_a_time),
        cmocka_unit_test(test_full_batch_goes_at_once),
        cmocka_unit_test(test_calls_of_one_pass_go_together),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
