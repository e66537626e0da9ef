/*
 * resolve: host names followed asynchronously with evdns.
 *
 * libpq (PQconnectStart) and evhttp without an evdns base resolve a host
 * name with a blocking getaddrinfo() on every connect, which would stall
 * a worker for as long as DNS takes.  So the database and the provider
 * connect by numeric address, and this module keeps that address fresh:
 * each followed name has a timer that runs evdns_getaddrinfo every
 * interval, one query at a time, and the answer (IPv4 first: "localhost"
 * often lists ::1 where only 127.0.0.1 listens) replaces the address
 * the owner reads for its next connection.
 *
 * A failed resolution keeps the last good address; the warning is logged
 * when the state changes (resolving -> failing), not on each attempt, and
 * the recovery once.  A name with no address at all is retried every
 * second rather than every interval.
 *
 * The owner hears of a change through an event activated on the loop, so
 * its callback never runs inside evdns_getaddrinfo (which answers names in
 * /etc/hosts at once) or inside resolve_name_new.  A name freed while its
 * query is in flight is left to the query's callback to free; evdns
 * always calls it, with an error when the evdns base is freed.
 *
 * Single-threaded: everything runs on the owner's loop.
 */
#include "config.h"

#include "common/resolve.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/dns.h>
#include <event2/event_struct.h>
#include <event2/util.h>

#include "common/clock.h"
#include "common/log.h"

#define RESOLVE_RETRY_MS 1000   /* the shortest gap between two queries for a name */

struct resolve {
    struct evdns_base *dns;
    struct event_base *base;
    int64_t interval_ms;
    int64_t retry_ms;           /* min(RESOLVE_RETRY_MS, interval_ms) */
};

struct resolve_name {
    resolve_t *r;
    char *host;
    char what[32];              /* "database", "provider": for log lines */
    char addr[64];              /* the latest good address, "" none yet */
    int answered;               /* the first resolution has ended */
    int failing;                /* the last resolution failed (warned) */
    int inflight;               /* a query is out */
    int orphan;                 /* freed by its owner: the query's callback frees it */
    int64_t started_ms;         /* when the last query went out */
    int64_t due_ms;             /* when the timer runs the next one */
    struct event timer;
    struct event notify;        /* runs cb from the loop */
    resolve_cb_t cb;
    void *arg;
};

static void name_query(resolve_name_t *n);

resolve_t *
resolve_new(struct event_base *base, const char *resolv_conf, int64_t interval_ms)
{
    resolve_t *r = calloc(1, sizeof(*r));
    int rc;

    if (r == NULL)
        return NULL;
    r->base = base;
    r->interval_ms = interval_ms;
    r->retry_ms = interval_ms < RESOLVE_RETRY_MS ? interval_ms : RESOLVE_RETRY_MS;
    /* Not EVDNS_BASE_INITIALIZE_NAMESERVERS: libevent 2.1 then fails the
     * whole base when resolv.conf lists no nameserver, and reads only
     * /etc/resolv.conf.  Inactive, the base holds no event on the loop. */
    r->dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (r->dns == NULL) {
        free(r);
        return NULL;
    }
    /* Nameservers, search domains, options, and /etc/hosts (HOSTSFILE:
     * "localhost" and local names resolve as getaddrinfo() would). */
    rc = evdns_base_resolv_conf_parse(r->dns, DNS_OPTIONS_ALL, resolv_conf);
    if (rc == 1)
        log_warn("resolver: %s: no such file: asking 127.0.0.1", resolv_conf);
    else if (rc == 6)
        log_warn("resolver: %s lists no nameserver: asking 127.0.0.1", resolv_conf);
    else if (rc != 0)
        log_warn("resolver: cannot read %s (evdns error %d)", resolv_conf, rc);
    if (evdns_base_count_nameservers(r->dns) == 0
        && evdns_base_nameserver_ip_add(r->dns, "127.0.0.1") != 0) {
        log_error("resolver: no nameserver, and 127.0.0.1 cannot be added");
        evdns_base_free(r->dns, 0);
        free(r);
        return NULL;
    }
    return r;
}

void
resolve_free(resolve_t *r)
{
    if (r == NULL)
        return;
    /* 1: queries still out (orphans) get their callback, with an error,
     * from the loop, and free their name there. */
    evdns_base_free(r->dns, 1);
    free(r);
}

void
resolve_settle(struct event_base *base)
{
    /* Nothing but deferred callbacks is left to run: every other event of
     * the owner is gone, so one pass that does not wait runs just those. */
    (void)event_base_loop(base, EVLOOP_NONBLOCK);
}

int
resolve_is_address(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return evutil_inet_pton(AF_INET, host, buf) == 1 || evutil_inet_pton(AF_INET6, host, buf) == 1;
}

static void
name_schedule(resolve_name_t *n, int64_t delay_ms)
{
    struct timeval tv = clock_tv(delay_ms);

    if (delay_ms < 0)
        delay_ms = 0;
    n->due_ms = clock_mono_ms() + delay_ms;
    evtimer_add(&n->timer, &tv);
}

/* The first IPv4 address of the answer, else its first address, as text
 * in buf; 0, or -1 when it holds none. */
static int
pick_address(const struct evutil_addrinfo *res, char *buf, size_t len)
{
    const struct evutil_addrinfo *a = NULL;

    for (const struct evutil_addrinfo *i = res; i != NULL; i = i->ai_next) {
        if (i->ai_family == AF_INET) {
            a = i;
            break;
        }
        if (a == NULL && i->ai_family == AF_INET6)
            a = i;
    }
    if (a == NULL)
        return -1;
    if (a->ai_family == AF_INET)
        return evutil_inet_ntop(AF_INET, &((const struct sockaddr_in *)a->ai_addr)->sin_addr,
                                buf, len) != NULL ? 0 : -1;
    return evutil_inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)a->ai_addr)->sin6_addr,
                            buf, len) != NULL ? 0 : -1;
}

/* Why a resolution gave no address, for the log. */
static const char *
why_not(int err)
{
    switch (err) {
    case 0:
    case EVUTIL_EAI_NODATA:
        return "no address in the answer";
    case EVUTIL_EAI_NONAME:
        return "no such name";
    case EVUTIL_EAI_FAIL:       /* evdns: a timeout or a server failure */
        return "no answer, or a server failure";
    default:
        return evutil_gai_strerror(err);
    }
}

/* evdns's answer to the name's query. */
static void
on_answer(int err, struct evutil_addrinfo *res, void *arg)
{
    resolve_name_t *n = arg;
    char addr[sizeof(n->addr)];
    int changed = 0;

    n->inflight = 0;
    if (n->orphan) {
        /* Freed by its owner; the resolver may be gone too. */
        if (res != NULL)
            evutil_freeaddrinfo(res);
        free(n->host);
        free(n);
        return;
    }
    if (err == 0 && pick_address(res, addr, sizeof(addr)) == 0) {
        if (n->addr[0] == '\0')
            log_info("%s host %s resolves to %s", n->what, n->host, addr);
        else if (strcmp(addr, n->addr) != 0)
            log_info("%s host %s now resolves to %s (was %s)", n->what, n->host, addr, n->addr);
        else if (n->failing)
            log_info("%s host %s resolves again, to %s", n->what, n->host, addr);
        changed = !n->answered || strcmp(addr, n->addr) != 0;
        snprintf(n->addr, sizeof(n->addr), "%s", addr);
        n->failing = 0;
    } else {
        if (!n->failing && n->addr[0] != '\0')
            log_warn("%s host %s does not resolve now (%s): still connecting to %s",
                     n->what, n->host, why_not(err), n->addr);
        else if (!n->failing)
            log_warn("%s host %s does not resolve (%s): no address to connect to yet",
                     n->what, n->host, why_not(err));
        n->failing = 1;
        changed = !n->answered;     /* the owner's waiting connections must know */
    }
    if (res != NULL)
        evutil_freeaddrinfo(res);
    n->answered = 1;
    name_schedule(n, n->addr[0] != '\0' ? n->r->interval_ms : n->r->retry_ms);
    if (changed && n->cb != NULL)
        event_active(&n->notify, 0, 0);
}

static void
name_query(resolve_name_t *n)
{
    struct evutil_addrinfo hints;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    evtimer_del(&n->timer);
    n->inflight = 1;
    n->started_ms = clock_mono_ms();
    /* Always answers through on_answer: at once for an /etc/hosts entry or
     * an error, else later from the loop.  The request handle is not kept:
     * a query is never cancelled (see resolve_name_free). */
    (void)evdns_getaddrinfo(n->r->dns, n->host, NULL, &hints, on_answer, n);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    resolve_name_t *n = arg;

    (void)fd;
    (void)what;
    if (!n->inflight)
        name_query(n);
}

static void
notify_cb(evutil_socket_t fd, short what, void *arg)
{
    resolve_name_t *n = arg;

    (void)fd;
    (void)what;
    n->cb(n->arg);
}

resolve_name_t *
resolve_name_new(resolve_t *r, const char *host, const char *what, resolve_cb_t cb, void *arg)
{
    resolve_name_t *n = calloc(1, sizeof(*n));

    if (n == NULL || (n->host = strdup(host)) == NULL) {
        free(n);
        return NULL;
    }
    n->r = r;
    snprintf(n->what, sizeof(n->what), "%s", what);
    n->cb = cb;
    n->arg = arg;
    evtimer_assign(&n->timer, r->base, timer_cb, n);
    event_assign(&n->notify, r->base, -1, 0, notify_cb, n);
    name_query(n);
    return n;
}

void
resolve_name_free(resolve_name_t *n)
{
    if (n == NULL)
        return;
    evtimer_del(&n->timer);
    event_del(&n->notify);
    if (n->inflight) {
        n->orphan = 1;          /* on_answer frees it */
        return;
    }
    free(n->host);
    free(n);
}

const char *
resolve_name_addr(const resolve_name_t *n)
{
    return n->addr[0] != '\0' ? n->addr : NULL;
}

int
resolve_name_pending(const resolve_name_t *n)
{
    return !n->answered;
}

void
resolve_name_retry(resolve_name_t *n)
{
    int64_t due = n->started_ms + n->r->retry_ms;

    if (n->inflight || due >= n->due_ms)
        return;                 /* a query is out, or one is due sooner anyway */
    name_schedule(n, due - clock_mono_ms());
}
