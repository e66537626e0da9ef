/*
 * clock: clock_gettime() read into integers, one place for the arithmetic
 * that every timer and duration of paymentsd used to repeat.
 */
#include "config.h"

#include "common/clock.h"

#include <time.h>

static struct timespec
now(clockid_t id)
{
    struct timespec ts;

    /* Cannot fail for these clocks on Linux: the arguments are valid. */
    (void)clock_gettime(id, &ts);
    return ts;
}

int64_t
clock_mono_ms(void)
{
    struct timespec ts = now(CLOCK_MONOTONIC);

    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
clock_mono_us(void)
{
    struct timespec ts = now(CLOCK_MONOTONIC);

    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t
clock_mono_ns(void)
{
    struct timespec ts = now(CLOCK_MONOTONIC);

    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t
clock_real_ms(void)
{
    struct timespec ts = now(CLOCK_REALTIME);

    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct timeval
clock_tv(int64_t ms)
{
    struct timeval tv;

    if (ms < 0)
        ms = 0;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    return tv;
}
