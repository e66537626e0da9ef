/*
 * resolve: host names followed asynchronously with evdns, for the process
 * that owns the event loop (a worker, the housekeeper, provider-sim's
 * webhook sender).
 *
 * A name is resolved when it is first followed, then again every
 * resolve_interval, and sooner (at most once a second) after its owner
 * reports a failed connection.  Its owner reads the latest numeric address
 * before each new connection: nothing ever blocks on DNS, and a DNS change
 * is picked up without a reload.  A failed resolution keeps the last good
 * address.  Single-threaded: use from the loop given to resolve_new().
 */
#ifndef PD_RESOLVE_H
#define PD_RESOLVE_H

#include <stdint.h>

struct event_base;

typedef struct resolve resolve_t;
typedef struct resolve_name resolve_name_t;

/* Called from the loop (never from inside a resolve_ call) when a name's
 * first resolution has ended, with or without an address, and whenever
 * its address changes. */
typedef void (*resolve_cb_t)(void *arg);

/*
 * The process's resolver on base: one evdns base whose nameservers, search
 * domains and options come from resolv_conf (e.g. /etc/resolv.conf), and
 * whose host table comes from /etc/hosts, both read now, once.  Without a
 * nameserver there (no file, none listed) it asks 127.0.0.1, as the C
 * library does, and logs a warning.  Names are re-resolved every
 * interval_ms.  Returns NULL on allocation failure.
 */
resolve_t *resolve_new(struct event_base *base, const char *resolv_conf, int64_t interval_ms)
    __attribute__((warn_unused_result));

/* Free the resolver; every name must have been freed already.  A query
 * still out is failed: its name (and libevent's request) is freed when the
 * loop runs that answer, so a process that frees its event base next calls
 * resolve_settle first. */
void resolve_free(resolve_t *r);

/* Run what base still has deferred (the failed answers of resolve_free),
 * once and without waiting; only when every other event of base is gone,
 * just before event_base_free. */
void resolve_settle(struct event_base *base);

/* Non-zero when host is an IPv4 or IPv6 address literal (unbracketed),
 * which needs no resolving. */
int resolve_is_address(const char *host);

/*
 * Start following host (a name, not an address).  what says whose host it
 * is in log lines ("database", "provider").  cb (may be NULL) is called as
 * described above.  Returns NULL on allocation failure.
 */
resolve_name_t *resolve_name_new(resolve_t *r, const char *host, const char *what,
                                 resolve_cb_t cb, void *arg) __attribute__((warn_unused_result));

/* Stop following the name; cb is not called any more. */
void resolve_name_free(resolve_name_t *n);

/* The address to connect to now: the latest numeric address that host
 * resolved to (IPv4 preferred), or NULL when it has none yet.  Valid until
 * control returns to the loop. */
const char *resolve_name_addr(const resolve_name_t *n);

/* Non-zero until the first resolution has ended: a connection may wait for
 * it (cb says when) rather than fail. */
int resolve_name_pending(const resolve_name_t *n);

/* A connection to the address failed: resolve again soon, in case the name
 * has moved (at most once a second, never two queries at once). */
void resolve_name_retry(resolve_name_t *n);

#endif
