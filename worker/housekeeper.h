/*
 * housekeeper: the background process the master forks next to the workers.
 *
 * Every housekeeper_interval it purges idempotency keys older than
 * idempotency_ttl, finishes checkouts whose worker died mid-way (asking the
 * provider what became of the charge, never charging anew), and reconciles
 * PENDING_PAYMENT orders older than pending_reconcile_age with the
 * provider, all in small batches.  Like a worker it runs one libevent loop
 * with an asynchronous database pool and provider client, finishes its
 * current step and exits on SIGQUIT, and exits at once on SIGTERM.
 */
#ifndef PD_HOUSEKEEPER_H
#define PD_HOUSEKEEPER_H

#include <sys/types.h>

#include "common/conf.h"
#include "worker/worker.h"

/* Run the housekeeper; never returns.  Call in the child right after fork(). */
void housekeeper_main(const conf_t *conf, const worker_shared_t *shared, pid_t master)
    __attribute__((noreturn));

#endif
