/*
 * Unit tests of the shared circuit breaker (shm/breaker.c): opening after a
 * run of failures, denying while open, a single probe after the cooldown
 * (also when many processes race for it), closing and reopening on the
 * probe's result, and taking over a probe whose owner went silent.
 *
 * Times are passed explicitly; children report through a shared page.
 */
#include "config.h"

#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "shm/breaker.h"
#include "tests/unit/child.h"

#define THRESHOLD   5
#define COOLDOWN    1000
#define PROBE_TO    1600    /* 2 x a provider timeout of 800 ms */
#define T0          INT64_C(50000)

static int
setup(void **state)
{
    *state = shm_breaker_create();
    return *state == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
    shm_breaker_destroy(*state);
    return 0;
}

static void
fail_n(shm_breaker_t *b, int n, int64_t now)
{
    for (int i = 0; i < n; i++)
        shm_breaker_record(b, 0, now, THRESHOLD, COOLDOWN);
}

/* Open b at now: its cooldown ends at now + COOLDOWN. */
static void
open_at(shm_breaker_t *b, int64_t now)
{
    fail_n(b, THRESHOLD, now);
    assert_int_equal(shm_breaker_state(b), SHM_BREAKER_OPEN);
}

static void
test_opens_after_threshold(void **state)
{
    shm_breaker_t *b = *state;

    assert_int_equal(shm_breaker_state(b), SHM_BREAKER_CLOSED);
    assert_int_equal(shm_breaker_allow(b, T0, PROBE_TO), SHM_BREAKER_ALLOW);
    fail_n(b, THRESHOLD - 1, T0);
    assert_int_equal(shm_breaker_state(b), SHM_BREAKER_CLOSED);
    assert_int_equal(shm_breaker_allow(b, T0, PROBE_TO), SHM_BREAKER_ALLOW);
    fail_n(b, 1, T0);
    assert_int_equal(shm_breaker_state(b), SHM_BREAKER_OPEN);
    assert_int_equal(shm_breaker_transitions(b), 1);
    /* More failures while open change nothing. */
    fail_n(b, 3, T0 + 10);
    assert_int_equal(shm_breaker_transitions(b), 1);
}

static void
test_success_resets_count(void **state)
{
    shm_breaker_t *b = *state;

    fail_n(b, THRESHOLD - 1, T0);
    shm_breaker_record(b, 1, T0, THRESHOLD, COOLDOWN);
    fail_n(b, THRESHOLD - 1, T0);
    assert_int_equal(shm_breaker_state(b), SHM_BREAKER_CLOSED);
    fail_n(b, 1, T0);
    assert_int_equal(shm_breaker_state(b), SHM_BREAKER_OPEN);
}

static void
test_threshold_from_reloaded_conf(void **state)
{
    shm_breaker_t *b = *state;

    /* Threshold is an argument: a reload that lowers it applies at once. */
    fail_n(b, 2, T0);
    shm_breaker_record(b, 0, T0, 3, COOLDOWN);
    assert_int_equal(shm_breaker_state(b), SHM_BREAKER_OPEN);
}

static void
test_denies_while_open(void **state)
{
    shm_breaker_t *b = *state;

    open_at(b, T0);
    assert_int_equal(shm_breaker_allow(b, T0, PROBE_TO), SHM_BREAKER_DENY);
    assert_int_equal(shm_breaker_allow(b, T0 + COOLDOWN - 1, PROBE_TO), SHM_BREAKER_DENY);
    /* Late results of calls from before it opened are ignored. */
    shm_breaker_record(b, 1, T0 + 5, THRESHOLD, COOLDOWN);
    assert_int_equal(shm_breaker_state(b), SHM_BREAKER_OPEN);
    assert_int_equal(shm_breaker_allow(b, T0 + COOLDOWN - 1, PROBE_TO), SHM_BREAKER_DENY);
}

static void
test_one_probe_after_cooldown(void **state)
{
    shm_breaker_t *b = *state;

    open_at(b, T0);
    assert_int_equal(shm_breaker_allow(b, T0 + COOLDOWN, PROBE_TO), SHM_BREAKER_ALLOW_PROBE);
    assert_int_equal(shm_breaker_state(b), SHM_BREAKER_HALF_OPEN);
    for (int i = 0; i < 10; i++)
        assert_int_equal(shm_breaker_allow(b, T0 + COOLDOWN + i, PROBE_TO), SHM_BREAKER_DENY);
    assert_int_equal(shm_breaker_transitions(b), 2);
}

static void
test_probe_success_closes(void **state)
{
    shm_breaker_t *b = *state;

    open_at(b, T0);
    assert_int_equal(shm_breaker_allow(b, T0 + COOLDOWN, PROBE_TO), SHM_BREAKER_ALLOW_PROBE);
    shm_breaker_record(b, 1, T0 + COOLDOWN + 50, THRESHOLD, COOLDOWN);
    assert_int_equal(shm_breaker_state(b), SHM_BREAKER_CLOSED);
    assert_int_equal(shm_breaker_allow(b, T0 + COOLDOWN + 51, PROBE_TO), SHM_BREAKER_ALLOW);
    assert_int_equal(shm_breaker_transitions(b), 3);
    /* The count starts afresh: the failures before opening are forgotten. */
    fail_n(b, THRESHOLD - 1, T0 + COOLDOWN + 60);
    assert_int_equal(shm_breaker_state(b), SHM_BREAKER_CLOSED);
}

static void
test_probe_failure_reopens(void **state)
{
    shm_breaker_t *b = *state;
    int64_t t = T0 + COOLDOWN + 100;

    open_at(b, T0);
    assert_int_equal(shm_breaker_allow(b, T0 + COOLDOWN, PROBE_TO), SHM_BREAKER_ALLOW_PROBE);
    shm_breaker_record(b, 0, t, THRESHOLD, COOLDOWN);
    assert_int_equal(shm_breaker_state(b), SHM_BREAKER_OPEN);
    /* A fresh cooldown, counted from the probe's failure. */
    assert_int_equal(shm_breaker_allow(b, t + COOLDOWN - 1, PROBE_TO), SHM_BREAKER_DENY);
    assert_int_equal(shm_breaker_allow(b, t + COOLDOWN, PROBE_TO), SHM_BREAKER_ALLOW_PROBE);
    assert_int_equal(shm_breaker_transitions(b), 4);
}

static void
test_stale_probe_taken_over(void **state)
{
    shm_breaker_t *b = *state;
    int64_t t = T0 + COOLDOWN;

    open_at(b, T0);
    assert_int_equal(shm_breaker_allow(b, t, PROBE_TO), SHM_BREAKER_ALLOW_PROBE);
    /* Its owner died: no result ever comes. */
    assert_int_equal(shm_breaker_allow(b, t + PROBE_TO - 1, PROBE_TO), SHM_BREAKER_DENY);
    assert_int_equal(shm_breaker_allow(b, t + PROBE_TO, PROBE_TO), SHM_BREAKER_ALLOW_PROBE);
    assert_int_equal(shm_breaker_allow(b, t + PROBE_TO + 1, PROBE_TO), SHM_BREAKER_DENY);
    assert_int_equal(shm_breaker_state(b), SHM_BREAKER_HALF_OPEN);
    shm_breaker_record(b, 1, t + PROBE_TO + 10, THRESHOLD, COOLDOWN);
    assert_int_equal(shm_breaker_state(b), SHM_BREAKER_CLOSED);
}

/* ---- many processes --------------------------------------------------- */

#define PROCS   8
#define ROUNDS  20
#define CALLS   2000

struct race {
    _Atomic int ready;
    _Atomic int go;
    _Atomic int probes;
    _Atomic int allows;
};

/* Fork PROCS children that wait for one start signal and then each run fn;
 * wait for them all. */
static void
race(shm_breaker_t *b, struct race *r, void (*fn)(shm_breaker_t *, struct race *, int))
{
    pid_t pids[PROCS];

    atomic_store(&r->ready, 0);
    atomic_store(&r->go, 0);
    for (int i = 0; i < PROCS; i++) {
        pids[i] = child_fork();
        if (pids[i] == 0) {
            atomic_fetch_add(&r->ready, 1);
            while (atomic_load(&r->go) == 0)
                sched_yield();
            fn(b, r, i);
            _exit(0);
        }
    }
    while (atomic_load(&r->ready) < PROCS)
        sched_yield();
    atomic_store(&r->go, 1);
    for (int i = 0; i < PROCS; i++)
        child_reap_ok(pids[i]);
}

static void
claim_probe(shm_breaker_t *b, struct race *r, int id)
{
    int64_t now = T0 + 10 * COOLDOWN;

    (void)id;
    for (int i = 0; i < CALLS; i++) {
        switch (shm_breaker_allow(b, now, PROBE_TO)) {
        case SHM_BREAKER_ALLOW_PROBE: atomic_fetch_add(&r->probes, 1); break;
        case SHM_BREAKER_ALLOW: atomic_fetch_add(&r->allows, 1); break;
        default: break;
        }
    }
}

static void
test_processes_race_for_probe(void **state)
{
    shm_breaker_t *b = *state;
    struct race *r = child_shared_new(sizeof(*r));

    for (int round = 0; round < ROUNDS; round++) {
        shm_breaker_record(b, 1, T0, THRESHOLD, COOLDOWN);  /* closes a HALF_OPEN */
        open_at(b, T0);
        atomic_store(&r->probes, 0);
        atomic_store(&r->allows, 0);
        race(b, r, claim_probe);
        assert_int_equal(atomic_load(&r->probes), 1);
        assert_int_equal(atomic_load(&r->allows), 0);
        assert_int_equal(shm_breaker_state(b), SHM_BREAKER_HALF_OPEN);
    }
    munmap(r, sizeof(*r));
}

static void
fail_once(shm_breaker_t *b, struct race *r, int id)
{
    (void)r;
    (void)id;
    shm_breaker_record(b, 0, T0, PROCS, COOLDOWN);
}

static void
test_processes_count_failures_together(void **state)
{
    shm_breaker_t *b = *state;
    struct race *r = child_shared_new(sizeof(*r));

    /* One failure in each of PROCS workers reaches a threshold of PROCS,
     * and the breaker opens once. */
    race(b, r, fail_once);
    assert_int_equal(shm_breaker_state(b), SHM_BREAKER_OPEN);
    assert_int_equal(shm_breaker_transitions(b), 1);
    munmap(r, sizeof(*r));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_opens_after_threshold, setup, teardown),
        cmocka_unit_test_setup_teardown(test_success_resets_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threshold_from_reloaded_conf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_denies_while_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_probe_after_cooldown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_probe_success_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_probe_failure_reopens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_probe_taken_over, setup, teardown),
        cmocka_unit_test_setup_teardown(test_processes_race_for_probe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_processes_count_failures_together, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
