/*
 * housekeeper: the background process the master forks next to the workers.
 *
 * On a timer (housekeeper_interval) it purges idempotency keys older than
 * idempotency_ttl, in small batches.  Like a worker it runs one libevent loop
 * with an asynchronous database pool, drains on SIGQUIT and stops on SIGTERM.
 */
#ifndef PD_HOUSEKEEPER_H
#define PD_HOUSEKEEPER_H

#include <sys/types.h>

#include "common/conf.h"

/* Run the housekeeper; never returns.  Call in the child right after fork(). */
void housekeeper_main(const conf_t *conf, pid_t master) __attribute__((noreturn));

#endif
