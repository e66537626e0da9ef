/*
 * dbloop: see dbloop.h.
 */
#include "config.h"

#include "tests/unit/dbloop.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

static void
on_expired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(int *)arg = 1;
}

int
dbloop_run_until(struct event_base *base, const int *done, int ms)
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

int
dbloop_pool_up(db_pool_t *p, int n)
{
    db_pool_stats_t st;

    db_pool_stats(p, &st);
    return st.connected == n;
}

void
dbloop_wait_up(struct event_base *base, db_pool_t *p, int n)
{
    for (int i = 0; i < 250 && !dbloop_pool_up(p, n); i++) {
        int never = 0;

        dbloop_run_until(base, &never, 20);
    }
    assert_true(dbloop_pool_up(p, n));
}

const char *
dbloop_conninfo(void)
{
    const char *conninfo = getenv("PAYMENTSD_TEST_DATABASE");

    if (conninfo == NULL || conninfo[0] == '\0') {
        print_message("no PAYMENTSD_TEST_DATABASE: nothing to run against\n");
        return NULL;
    }
    return conninfo;
}
