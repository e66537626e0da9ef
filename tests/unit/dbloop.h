/*
 * dbloop: the event loop and pool helpers of the unit tests that run the
 * db pool against the test database (PAYMENTSD_TEST_DATABASE).
 */
#ifndef PD_TESTS_DBLOOP_H
#define PD_TESTS_DBLOOP_H

#include <event2/event.h>

#include "worker/db.h"

/* Run base's loop until *done or ms have passed; returns *done. */
int dbloop_run_until(struct event_base *base, const int *done, int ms);

/* Whether exactly n of the pool's connections are up. */
int dbloop_pool_up(db_pool_t *p, int n);

/* Wait (at most 5 s) until n of the pool's connections are up; asserts. */
void dbloop_wait_up(struct event_base *base, db_pool_t *p, int n);

/* The test database's conninfo, or NULL (then the test skips). */
const char *dbloop_conninfo(void);

#endif
