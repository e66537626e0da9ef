/*
 * master: the paymentsd master process, as in nginx.
 *
 * Opens the listening sockets, forks the workers and the housekeeper, never
 * serves a request, and supervises: respawn on death (with back-off when a
 * child keeps dying), reload on SIGHUP, graceful stop on SIGQUIT, fast stop
 * on SIGTERM/SIGINT, log reopening on SIGUSR1.
 */
#ifndef PD_MASTER_H
#define PD_MASTER_H

#include "common/conf.h"

/* Run the master with conf (loaded from conf_path; ownership is taken):
 * its init, then its cycle until stopped.  Returns the process exit status
 * (common/exitcode.h). */
int master_run(const char *conf_path, conf_t *conf);

#endif
