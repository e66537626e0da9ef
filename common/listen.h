/*
 * listen: listening addresses, "host:port", "[v6]:port" or a bare port.
 *
 * The master opens the sockets once, before forking; workers inherit them and
 * so keep serving on the same sockets across reloads.
 */
#ifndef PD_LISTEN_H
#define PD_LISTEN_H

#include <stddef.h>
#include <sys/socket.h>

/* Resolve spec into *addr (may be NULL: only check it).  0, or -1 with a
 * message in err. */
int listen_parse(const char *spec, struct sockaddr_storage *addr,
                 char *err, size_t errlen) __attribute__((warn_unused_result));

/* Whether two parsed addresses cannot both be bound: 2 when they are the
 * same address and port, 1 when a wildcard address (0.0.0.0, [::], which
 * also takes IPv4) covers the other on the same port, else 0. */
int listen_overlap(const struct sockaddr_storage *a, const struct sockaddr_storage *b);

/* Open a non-blocking, close-on-exec listening socket bound to spec.  Returns
 * the descriptor, or -1 with e.g. "bind(127.0.0.1:8000) failed: Address in use"
 * in err. */
int listen_open(const char *spec, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
