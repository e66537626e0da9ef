/*
 * Unit tests of common/clock.c: milliseconds to a timeval (the arithmetic
 * every timer used to write by hand), and the clocks agreeing with each
 * other and with the system's.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "common/clock.h"

static void
test_tv_of_ms(void **state)
{
    static const struct { int64_t ms; long sec, usec; } cases[] = {
        { 0, 0, 0 }, { 1, 0, 1000 }, { 999, 0, 999000 }, { 1000, 1, 0 }, { 1500, 1, 500000 },
        { 86400001, 86400, 1000 }, { -1, 0, 0 }, { INT64_C(-5000), 0, 0 },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct timeval tv = clock_tv(cases[i].ms);
        assert_int_equal(tv.tv_sec, cases[i].sec);
        assert_int_equal(tv.tv_usec, cases[i].usec);
    }
}

static void
test_monotonic_units_agree(void **state)
{
    int64_t ms = clock_mono_ms(), us = clock_mono_us(), ns = clock_mono_ns(), ms2;

    (void)state;
    /* Read in this order, each one is no earlier than the one before. */
    assert_true(us / 1000 >= ms);
    assert_true(ns / 1000 >= us);
    ms2 = clock_mono_ms();
    assert_true(ms2 >= ns / 1000000);
    assert_true(ms2 - ms < 1000);
}

static void
test_real_is_the_epoch_clock(void **state)
{
    int64_t before = (int64_t)time(NULL), ms = clock_real_ms(), after = (int64_t)time(NULL);

    (void)state;
    assert_true(ms / 1000 >= before && ms / 1000 <= after);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tv_of_ms),
        cmocka_unit_test(test_monotonic_units_agree),
        cmocka_unit_test(test_real_is_the_epoch_clock),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
