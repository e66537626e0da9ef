/*
 * listen: parse listening addresses and open their sockets.
 */
#include "config.h"

#include "common/listen.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTEN_BACKLOG 4096

int
listen_parse(const char *spec, struct sockaddr_storage *addr, char *err, size_t errlen)
{
    char host[256];
    const char *port;
    struct addrinfo hints, *res = NULL;
    int rc;

    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - spec - 1) >= sizeof(host)) {
            snprintf(err, errlen, "invalid listen address \"%.64s\"", spec);
            return -1;
        }
        memcpy(host, spec + 1, (size_t)(close - spec - 1));
        host[close - spec - 1] = '\0';
        port = close + 2;
    } else if ((port = strrchr(spec, ':')) != NULL) {
        if ((size_t)(port - spec) >= sizeof(host)) {
            snprintf(err, errlen, "invalid listen address \"%.64s\"", spec);
            return -1;
        }
        memcpy(host, spec, (size_t)(port - spec));
        host[port - spec] = '\0';
        port++;
    } else {
        snprintf(host, sizeof(host), "127.0.0.1");
        port = spec;
    }
    if (port[0] == '\0' || strspn(port, "0123456789") != strlen(port) || strlen(port) > 5) {
        snprintf(err, errlen, "invalid port in listen address \"%.64s\"", spec);
        return -1;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve listen address \"%.64s\": %s", spec,
                 gai_strerror(rc));
        return -1;
    }
    if (addr != NULL) {
        memset(addr, 0, sizeof(*addr));
        memcpy(addr, res->ai_addr, res->ai_addrlen);
    }
    freeaddrinfo(res);
    return 0;
}

static int
is_wildcard(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr == htonl(INADDR_ANY);
    return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)a)->sin6_addr);
}

static in_port_t
port_of(const struct sockaddr_storage *a)
{
    return a->ss_family == AF_INET ? ((const struct sockaddr_in *)a)->sin_port
                                   : ((const struct sockaddr_in6 *)a)->sin6_port;
}

int
listen_overlap(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (port_of(a) != port_of(b))
        return 0;
    if (a->ss_family == b->ss_family) {
        if (a->ss_family == AF_INET
            ? ((const struct sockaddr_in *)a)->sin_addr.s_addr
              == ((const struct sockaddr_in *)b)->sin_addr.s_addr
            : IN6_ARE_ADDR_EQUAL(&((const struct sockaddr_in6 *)a)->sin6_addr,
                                 &((const struct sockaddr_in6 *)b)->sin6_addr))
            return 2;
        return is_wildcard(a) || is_wildcard(b);
    }
    /* [::] is dual-stack (net.ipv6.bindv6only = 0, Linux's default). */
    return (a->ss_family == AF_INET6 && is_wildcard(a))
           || (b->ss_family == AF_INET6 && is_wildcard(b));
}

int
listen_open(const char *spec, char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    socklen_t len;
    const char *what;
    int fd, one = 1;

    if (listen_parse(spec, &addr, err, errlen) < 0)
        return -1;
    len = addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    what = "socket";
    fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    what = "setsockopt(SO_REUSEADDR)";
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
        goto fail;
    what = "bind";
    if (bind(fd, (struct sockaddr *)&addr, len) < 0)
        goto fail;
    what = "listen";
    if (listen(fd, LISTEN_BACKLOG) < 0)
        goto fail;
    return fd;
fail:
    snprintf(err, errlen, "%s(%s) failed: %s", what, spec, strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}
