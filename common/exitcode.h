/*
 * exitcode: what the exit status of a paymentsd process means, for the
 * process that waits for it.  The master reads its children's; a service
 * manager reads the master's (systemd: RestartPreventExitStatus=2).
 *
 * A child (worker, housekeeper):
 *   0  PD_EXIT_OK       it stopped as asked (SIGQUIT drained, SIGTERM), or
 *                       its master is gone.
 *   1  PD_EXIT_FAILURE  it failed for a reason that may pass: its start-up
 *                       found no memory or descriptors for the event loop,
 *                       its signals or the listeners.  Respawned, with a
 *                       back-off when it keeps dying.
 *   2  PD_EXIT_FATAL    it cannot start, and starting it again with the same
 *                       conf cannot help: what the conf names is wrong since
 *                       the master checked it (a provider_ca_file no longer
 *                       readable as certificates, too many database hosts),
 *                       so the provider client or the database pool cannot be
 *                       set up.  Not respawned until a reload starts a new
 *                       generation (fix, then paymentsd -s reload).  Those
 *                       set-ups also fail for lack of memory, which cannot be
 *                       told apart there; that counts as fatal too.
 *   A child killed by a signal (kill -9, a crash) is respawned.  The
 *   database or the provider being down is never a reason to exit: a child
 *   starts without them (connections are made from the loop) and answers
 *   503 until they are back.
 *
 * The master:
 *   0  stopped as asked (SIGQUIT, SIGTERM), or -t/-s/-v succeeded.
 *   1  a failure that may pass (memory, shared memory, signalfd), or -t/-s
 *      failed.
 *   2  fatal: the conf is invalid, a listen address cannot be bound, the
 *      pid file or a log cannot be written, or every child exited fatal.
 */
#ifndef PD_EXITCODE_H
#define PD_EXITCODE_H

#define PD_EXIT_OK 0
#define PD_EXIT_FAILURE 1
#define PD_EXIT_FATAL 2

#endif
