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

/* Open a non-blocking, close-on-exec listening socket bound to spec.  Returns
 * the descriptor, or -1 with e.g. "bind(127.0.0.1:8000) failed: Address in use"
 * in err. */
int listen_open(const char *spec, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
