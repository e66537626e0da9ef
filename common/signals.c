/*
 * signals: which signals are ignored, and logging them.
 *
 * The master reads these signals from the same signalfd as the ones it
 * acts on; a worker or the housekeeper reads them from a signalfd of its own
 * in its event loop.  Either way they stay blocked, so there is no handler,
 * nothing runs in signal context, and a signal that arrives while a process
 * starts up or tears down waits, harmlessly, instead of killing it.
 */
#include "config.h"

#include "common/signals.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

void
signals_add_ignored(sigset_t *set)
{
    /* Default action "terminate" or "stop", and no meaning for us.  SIGURG
     * is ignored by default but logged like the rest.  SIGXFSZ: a log that
     * outgrows RLIMIT_FSIZE makes write() fail with EFBIG instead. */
    static const int sigs[] = {
        SIGUSR2, SIGWINCH, SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGPWR, SIGSTKFLT,
        SIGTTIN, SIGTTOU, SIGURG, SIGXFSZ, SIGPIPE
    };

    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaddset(set, sigs[i]);
    for (int s = SIGRTMIN; s <= SIGRTMAX; s++)
        sigaddset(set, s);
}

const char *
signals_name(int sig, char *buf, size_t len)
{
    /* glibc calls SIGIO by its System V name, SIGPOLL */
    const char *abbrev = sig == SIGIO ? "IO" : sig < SIGRTMIN ? sigabbrev_np(sig) : NULL;

    if (abbrev != NULL)
        snprintf(buf, len, "SIG%s", abbrev);
    else if (sig >= SIGRTMIN && sig <= SIGRTMAX)
        snprintf(buf, len, "SIGRTMIN+%d", sig - SIGRTMIN);
    else
        snprintf(buf, len, "signal %d", sig);
    return buf;
}

void
signals_log_ignored(const struct signalfd_siginfo *si)
{
    char name[32];

    if (si->ssi_signo == SIGPIPE && (pid_t)si->ssi_pid == getpid())
        return;
    signals_name((int)si->ssi_signo, name, sizeof(name));
    if (si->ssi_code == SI_USER || si->ssi_code == SI_QUEUE)
        log_warn("%s from pid %ld ignored: paymentsd gives it no meaning", name,
                 (long)si->ssi_pid);
    else
        log_warn("%s ignored: paymentsd gives it no meaning", name);
}

void
signals_drain_ignored(int fd)
{
    struct signalfd_siginfo si;

    while (read(fd, &si, sizeof(si)) == sizeof(si))
        signals_log_ignored(&si);
}
