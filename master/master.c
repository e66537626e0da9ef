/*
 * master: process supervision.
 *
 * Signals are blocked and read from a signalfd, so no code runs in a signal
 * handler at all.  Each turn of the loop first collects every pending signal
 * into flags and then acts in a fixed order: reap, terminate, quit, reload,
 * reopen, respawn.  The signals paymentsd gives no meaning (SIGUSR2,
 * SIGWINCH, ...: common/signals.h) come through the same signalfd and are
 * only logged; the children inherit them blocked.
 *
 * Children belong to a generation.  A reload starts the new generation first
 * and only then asks the old one to drain (SIGQUIT), so the listening sockets
 * never go without an accepting process and no request is refused.  Only
 * children of the current generation are respawned.  Each child remembers
 * the timeouts it runs with: a draining generation still holds idempotency
 * keys for up to provider_timeout + 2 * db_timeout of its own conf, which a
 * reload's idempotency_lock_timeout must outlast (conf_check_reload).
 */
#include "config.h"

#include "master/master.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/exitcode.h"
#include "common/listen.h"
#include "common/log.h"
#include "common/pidfile.h"
#include "common/proctitle.h"
#include "common/signals.h"
#include "worker/housekeeper.h"
#include "worker/worker.h"

#define MAX_CHILDREN 1024
#define HOUSEKEEPER_SLOT (-1)
#define QUICK_DEATH_MS 2000     /* a child that dies sooner is "failing" */
#define BACKOFF_MAX_MS 10000
#define FAST_STOP_WAIT_MS 3000

typedef struct {
    pid_t pid;
    int slot;                   /* worker number, or HOUSEKEEPER_SLOT */
    unsigned gen;
    int retiring;               /* told to drain: do not respawn */
    int64_t started_ms;
    int64_t provider_timeout_ms;    /* of the conf it runs with */
    int64_t db_timeout_ms;
} child_t;

typedef struct {
    int pending;                /* a respawn is due at respawn_ms */
    int64_t respawn_ms;
    int failures;               /* quick deaths in a row */
    int fatal;                  /* exited PD_EXIT_FATAL: not respawned (a reload
                                 * starts a new generation with new slots) */
} slot_t;

typedef struct {
    char *conf_path;
    conf_t *conf;
    worker_shared_t shared;
    int *fds;
    size_t nfds;
    int sfd;
    pid_t pid;
    unsigned gen;
    child_t children[MAX_CHILDREN];
    size_t nchildren;
    slot_t *slots;              /* per worker slot of the current generation */
    slot_t housekeeper;
    int quitting;
} master_t;

static slot_t *
slot_of(master_t *m, int slot)
{
    return slot == HOUSEKEEPER_SLOT ? &m->housekeeper : &m->slots[slot];
}

static int
spawn(master_t *m, int slot)
{
    pid_t pid;

    if (m->nchildren == MAX_CHILDREN) {
        log_error("too many children");
        return -1;
    }
    pid = fork();
    if (pid < 0) {
        log_error("fork failed: %m");
        return -1;
    }
    if (pid == 0) {
        close(m->sfd);
        if (slot == HOUSEKEEPER_SLOT)
            housekeeper_main(m->conf, &m->shared, m->pid);
        worker_main(m->conf, &m->shared, m->fds, m->nfds, slot, m->pid);
    }
    m->children[m->nchildren++] = (child_t){
        .pid = pid, .slot = slot, .gen = m->gen, .retiring = 0, .started_ms = clock_mono_ms(),
        .provider_timeout_ms = m->conf->provider_timeout_ms,
        .db_timeout_ms = m->conf->db_timeout_ms
    };
    slot_of(m, slot)->pending = 0;
    if (slot == HOUSEKEEPER_SLOT)
        log_info("started housekeeper process %ld", (long)pid);
    else
        log_info("started worker %d process %ld", slot, (long)pid);
    return 0;
}

/* Start a generation for m->conf: fresh slots, all workers, the housekeeper. */
static void
spawn_generation(master_t *m)
{
    free(m->slots);
    m->slots = calloc((size_t)m->conf->workers, sizeof(*m->slots));
    if (m->slots == NULL) {
        log_error("out of memory");
        exit(PD_EXIT_FAILURE);
    }
    memset(&m->housekeeper, 0, sizeof(m->housekeeper));
    for (int i = 0; i < m->conf->workers; i++) {
        if (spawn(m, i) < 0) {
            m->slots[i].pending = 1;
            m->slots[i].respawn_ms = clock_mono_ms() + 1000;
        }
    }
    if (spawn(m, HOUSEKEEPER_SLOT) < 0) {
        m->housekeeper.pending = 1;
        m->housekeeper.respawn_ms = clock_mono_ms() + 1000;
    }
}

static void
signal_children(master_t *m, int sig, int only_old)
{
    for (size_t i = 0; i < m->nchildren; i++) {
        child_t *c = &m->children[i];
        if (only_old && c->gen == m->gen)
            continue;
        if (sig == SIGQUIT)
            c->retiring = 1;
        kill(c->pid, sig);
    }
}

static void
child_died(master_t *m, child_t *c, int status)
{
    int64_t lived = clock_mono_ms() - c->started_ms;
    char who[32];
    slot_t *s;
    int64_t delay;

    if (c->slot == HOUSEKEEPER_SLOT)
        snprintf(who, sizeof(who), "housekeeper");
    else
        snprintf(who, sizeof(who), "worker %d", c->slot);
    if (WIFSIGNALED(status))
        log_warn("%s (pid %ld) killed by signal %d%s", who, (long)c->pid,
                 WTERMSIG(status), WCOREDUMP(status) ? " (core dumped)" : "");
    else if (WEXITSTATUS(status) != 0 || !c->retiring)
        log_info("%s (pid %ld) exited with status %d", who, (long)c->pid, WEXITSTATUS(status));
    else
        log_info("%s (pid %ld) exited after draining", who, (long)c->pid);

    if (c->retiring || m->quitting || c->gen != m->gen)
        return;
    s = slot_of(m, c->slot);
    if (WIFEXITED(status) && WEXITSTATUS(status) == PD_EXIT_FATAL) {
        log_error("%s cannot start and a restart will not help: not respawning it until "
                  "a reload (its own lines above say why)", who);
        s->fatal = 1;
        return;
    }
    s->failures = lived < QUICK_DEATH_MS ? s->failures + 1 : 0;
    delay = s->failures == 0 ? 0 : 100LL << (s->failures > 7 ? 7 : s->failures - 1);
    if (delay > BACKOFF_MAX_MS)
        delay = BACKOFF_MAX_MS;
    if (delay > 0)
        log_warn("%s keeps dying: respawning in %lld ms", who, (long long)delay);
    s->pending = 1;
    s->respawn_ms = clock_mono_ms() + delay;
}

static void
reap(master_t *m)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (size_t i = 0; i < m->nchildren; i++) {
            if (m->children[i].pid != pid)
                continue;
            child_t c = m->children[i];
            m->children[i] = m->children[--m->nchildren];
            /* A worker killed mid-request may hold a cache set lock and
             * leaves in-progress markers: both are released now. */
            if (shm_cache_release_pid(m->shared.cache, pid) > 0)
                log_info("released the cache entries of process %ld", (long)pid);
            child_died(m, &c, status);
            break;
        }
    }
}

static void
respawn_due(master_t *m)
{
    int64_t now = clock_mono_ms();

    if (m->quitting)
        return;
    for (int i = -1; i < m->conf->workers; i++) {
        slot_t *s = slot_of(m, i);
        if (s->pending && !s->fatal && s->respawn_ms <= now && spawn(m, i) < 0)
            s->respawn_ms = now + 1000;
    }
}

/* Milliseconds until the next respawn is due, or -1 for none. */
static int
next_timeout(master_t *m)
{
    int64_t now = clock_mono_ms(), best = -1;

    if (m->quitting)
        return -1;
    for (int i = -1; i < m->conf->workers; i++) {
        slot_t *s = slot_of(m, i);
        if (s->pending && !s->fatal) {
            int64_t d = s->respawn_ms > now ? s->respawn_ms - now : 0;
            if (best < 0 || d < best)
                best = d;
        }
    }
    return (int)best;
}

/* The provider_timeout and db_timeout of the running conf or of a child
 * still running (a draining generation's), whichever hold a key longest. */
static void
running_timeouts(const master_t *m, int64_t *provider_ms, int64_t *db_ms)
{
    *provider_ms = m->conf->provider_timeout_ms;
    *db_ms = m->conf->db_timeout_ms;
    for (size_t i = 0; i < m->nchildren; i++) {
        const child_t *c = &m->children[i];
        if (c->provider_timeout_ms + 2 * c->db_timeout_ms > *provider_ms + 2 * *db_ms) {
            *provider_ms = c->provider_timeout_ms;
            *db_ms = c->db_timeout_ms;
        }
    }
}

static void
reload(master_t *m)
{
    char err[1024];
    conf_t *next = conf_load_prefix(m->conf_path, m->conf->prefix, err, sizeof(err));
    int64_t provider_ms, db_ms;

    if (next == NULL) {
        log_error("reload failed, still running the previous configuration: %s", err);
        return;
    }
    running_timeouts(m, &provider_ms, &db_ms);
    if (conf_check_reload(next, provider_ms, db_ms, err, sizeof(err)) < 0) {
        log_error("reload failed, still running the previous configuration: %s", err);
        conf_free(next);
        return;
    }
    conf_keep_restart_only(next, m->conf);
    if (log_open(next->error_log, next->access_log,
                 (log_level_t)log_level_parse(next->log_level)) < 0) {
        log_error("reload failed, cannot open the new logs (%m): still running the previous "
                  "configuration");
        conf_free(next);
        return;
    }
    conf_free(m->conf);
    m->conf = next;
    m->gen++;
    log_info("reloading: starting generation %u with %lld workers", m->gen,
             (long long)next->workers);
    spawn_generation(m);
    signal_children(m, SIGQUIT, 1);
}

/* SIGUSR1, after a log rotation: a line in the old file says where the
 * logs went, one in the new file that they came, and each child adds its
 * own when it has reopened (worker_reopen_logs). */
static void
reopen(master_t *m)
{
    log_info("reopening the logs (%s, %s)", m->conf->error_log, m->conf->access_log);
    if (log_reopen() < 0)
        log_error("reopening the logs failed, still writing to the old ones: %m");
    else
        log_info("logs reopened");
    signal_children(m, SIGUSR1, 0);
}

static void
fast_stop(master_t *m)
{
    int64_t deadline = clock_mono_ms() + FAST_STOP_WAIT_MS;

    log_info("fast stop");
    m->quitting = 1;
    signal_children(m, SIGTERM, 0);
    while (m->nchildren > 0 && clock_mono_ms() < deadline) {
        struct pollfd p = { .fd = m->sfd, .events = POLLIN };
        struct signalfd_siginfo si;

        if (poll(&p, 1, 50) > 0)
            while (read(m->sfd, &si, sizeof(si)) == sizeof(si))
                ;
        reap(m);
    }
    if (m->nchildren > 0) {
        log_warn("%zu children still running: killing them", m->nchildren);
        signal_children(m, SIGKILL, 0);
        while (m->nchildren > 0 && waitpid(-1, NULL, 0) > 0)
            reap(m);
    }
    pidfile_remove(m->conf->pid_file, m->pid);
    exit(PD_EXIT_OK);
}

static void
master_free(master_t *m)
{
    for (size_t i = 0; i < m->nfds; i++)
        close(m->fds[i]);
    if (m->sfd >= 0)
        close(m->sfd);
    conf_free(m->conf);
    shm_metrics_destroy(m->shared.metrics);
    shm_cache_destroy(m->shared.cache);
    shm_breaker_destroy(m->shared.breaker);
    free(m->fds);
    free(m->slots);
    free(m->conf_path);
    free(m);
}

/*
 * The master's init, as nginx's ngx_init_cycle: everything that must hold
 * before the first child is forked (shared memory mapped, listeners bound,
 * pid file written, signals routed to the signalfd).  Returns the master,
 * or NULL with the exit status in *status (common/exitcode.h): fatal for
 * what the conf names (a listen address, the pid file), a failure for the
 * rest.  conf is taken either way.
 */
static master_t *
master_init(const char *conf_path, conf_t *conf, int *status)
{
    static const int handled[] = { SIGCHLD, SIGHUP, SIGQUIT, SIGTERM, SIGINT, SIGUSR1 };
    master_t *m = calloc(1, sizeof(*m));
    char err[1024];
    sigset_t set;
    const char *what;

    *status = PD_EXIT_FAILURE;
    if (m == NULL) {
        conf_free(conf);
        return NULL;
    }
    m->conf_path = strdup(conf_path);
    m->conf = conf;
    m->pid = getpid();
    m->gen = 1;
    m->sfd = -1;
    proctitle_set("paymentsd: master process");
    log_set_role("master");

    what = "allocating";
    m->fds = calloc(conf->listen.n, sizeof(*m->fds));
    if (m->fds == NULL || m->conf_path == NULL)
        goto fail;
    what = "mapping shared memory for metrics";
    m->shared.metrics = shm_metrics_create();
    if (m->shared.metrics == NULL)
        goto fail;
    what = "mapping shared memory for the idempotency cache (shm_cache_size)";
    m->shared.cache = shm_cache_create((size_t)conf->shm_cache_size);
    if (m->shared.cache == NULL)
        goto fail;
    what = "mapping shared memory for the circuit breaker";
    m->shared.breaker = shm_breaker_create();
    if (m->shared.breaker == NULL)
        goto fail;
    for (size_t i = 0; i < conf->listen.n; i++) {
        m->fds[i] = listen_open(conf->listen.items[i], err, sizeof(err));
        if (m->fds[i] < 0)
            goto fatal;
        m->nfds++;
    }
    if (pidfile_write(conf->pid_file, m->pid, err, sizeof(err)) < 0)
        goto fatal;

    sigemptyset(&set);
    for (size_t i = 0; i < sizeof(handled) / sizeof(handled[0]); i++)
        sigaddset(&set, handled[i]);
    signals_add_ignored(&set);
    what = "sigprocmask";
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        goto fail;
    what = "signalfd";
    m->sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (m->sfd < 0)
        goto fail;
    signal(SIGPIPE, SIG_IGN);
    return m;

fatal:
    log_error("%s", err);
    *status = PD_EXIT_FATAL;
    master_free(m);
    return NULL;
fail:
    log_error("%s failed: %s", what, strerror(errno));
    master_free(m);
    return NULL;
}

/*
 * The master's cycle, as nginx's ngx_master_process_cycle: start the
 * first generation, then wait for signals and act on them in a fixed order
 * until stopped.  Returns the exit status and frees m.
 */
static int
master_cycle(master_t *m)
{
    for (size_t i = 0; i < m->conf->listen.n; i++)
        log_info("listening on %s", m->conf->listen.items[i]);
    log_info("paymentsd %s started with %lld workers", PACKAGE_VERSION,
             (long long)m->conf->workers);
    spawn_generation(m);

    for (;;) {
        struct pollfd p = { .fd = m->sfd, .events = POLLIN };
        struct signalfd_siginfo si;
        int do_reap = 0, do_term = 0, do_quit = 0, do_reload = 0, do_reopen = 0;

        if (poll(&p, 1, next_timeout(m)) < 0 && errno != EINTR) {
            log_error("poll failed: %m");
            fast_stop(m);
        }
        while (read(m->sfd, &si, sizeof(si)) == sizeof(si)) {
            switch (si.ssi_signo) {
            case SIGCHLD: do_reap = 1; break;
            case SIGTERM: case SIGINT: do_term = 1; break;
            case SIGQUIT: do_quit = 1; break;
            case SIGHUP: do_reload = 1; break;
            case SIGUSR1: do_reopen = 1; break;
            default: signals_log_ignored(&si); break;
            }
        }
        if (do_reap)
            reap(m);
        if (do_term)
            fast_stop(m);
        if (do_quit && !m->quitting) {
            log_info("graceful stop: draining %zu children", m->nchildren);
            m->quitting = 1;
            signal_children(m, SIGQUIT, 0);
            for (size_t i = 0; i < m->nfds; i++)
                close(m->fds[i]);
            m->nfds = 0;
        }
        if (m->quitting && m->nchildren == 0) {
            log_info("stopped");
            pidfile_remove(m->conf->pid_file, m->pid);
            master_free(m);
            return PD_EXIT_OK;
        }
        if (do_reload && !m->quitting)
            reload(m);
        if (do_reopen)
            reopen(m);
        respawn_due(m);
        if (!m->quitting && m->nchildren == 0 && next_timeout(m) < 0) {
            /* Every slot exited fatal: say so to the service manager too. */
            log_error("no worker can run: exiting");
            pidfile_remove(m->conf->pid_file, m->pid);
            master_free(m);
            return PD_EXIT_FATAL;
        }
    }
}

int
master_run(const char *conf_path, conf_t *conf)
{
    int status;
    master_t *m = master_init(conf_path, conf, &status);

    return m != NULL ? master_cycle(m) : status;
}
