/*
 * clock: the process's clocks as integers, and milliseconds as a timeval.
 *
 * Monotonic time measures durations and schedules timers (it never jumps
 * back); real time is for what outlives the process or leaves it: expiry
 * stamps in the shared cache, created_at in an answer.  Both read
 * clock_gettime() (vDSO, no system call), so calling them per request is
 * cheap.  No state, no locking.
 */
#ifndef PD_CLOCK_H
#define PD_CLOCK_H

#include <stdint.h>
#include <sys/time.h>

/* CLOCK_MONOTONIC in milliseconds, microseconds and nanoseconds. */
int64_t clock_mono_ms(void);
int64_t clock_mono_us(void);
int64_t clock_mono_ns(void);

/* CLOCK_REALTIME in milliseconds since the epoch. */
int64_t clock_real_ms(void);

/* ms as a timeval for evtimer_add and friends; a negative ms is 0. */
struct timeval clock_tv(int64_t ms);

#endif
