/*
 * signals: the signals that paymentsd gives no meaning.
 *
 * A stray signal must never stop a payments server (SIGUSR2, sent by habit
 * for nginx's binary upgrade, used to kill the master and leave its pid
 * file behind).  Every process keeps these signals blocked from the
 * master's start to its own exit and reads them from a signalfd, so each
 * one is logged and ignored, whatever the process is doing meanwhile.
 */
#ifndef PD_SIGNALS_H
#define PD_SIGNALS_H

#include <signal.h>
#include <sys/signalfd.h>

/* Add the signals that no paymentsd process gives a meaning to set:
 * SIGUSR2, SIGWINCH, SIGALRM, SIGPIPE, SIGTTIN, SIGTTOU, SIGXFSZ, the
 * real-time signals and a few more.  Never SIGKILL, SIGSTOP, SIGTSTP,
 * SIGCONT, SIGXCPU or a fault (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT). */
void signals_add_ignored(sigset_t *set);

/* Log one ignored signal that si describes (who sent it), once per line.
 * A SIGPIPE the process raised itself, by writing to a connection that its
 * peer had closed, is not logged: that is not a stray signal. */
void signals_log_ignored(const struct signalfd_siginfo *si);

/* Read every pending signal from the non-blocking signalfd fd and log it
 * with signals_log_ignored(). */
void signals_drain_ignored(int fd);

/* "SIGUSR2", "SIGRTMIN+3" or "signal 77" for sig, into buf. */
const char *signals_name(int sig, char *buf, size_t len);

#endif
