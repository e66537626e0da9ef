/*
 * linger: the end of a connection whose last answer was an error, as
 * nginx's lingering_close.  The client may still be sending (a 1 MiB body):
 * closing then resets the connection, and its 413 may be lost.  So the
 * socket is read and discarded until the client closes, sends nothing for
 * LINGER_IDLE_MS, or LINGER_MS have passed, and only then closed.
 *
 * Runs on the worker's event loop.  Every lingering socket is on one list,
 * so that a leak checker at exit finds them all reachable.
 */
#include "config.h"

#include "worker/linger.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/clock.h"

#define LINGER_MS 5000          /* the longest a refused client is read */
#define LINGER_IDLE_MS 1000     /* ... or until it sends nothing for this long */

typedef struct lingerer {
    int fd;
    struct event *ev;
    int64_t until_ms;           /* monotonic */
    struct lingerer *prev, *next;
} linger_t;

static linger_t *lingering;

static void
linger_end(linger_t *l)
{
    event_free(l->ev);          /* first: its epoll registration goes with it */
    close(l->fd);
    if (l->prev != NULL)
        l->prev->next = l->next;
    else
        lingering = l->next;
    if (l->next != NULL)
        l->next->prev = l->prev;
    free(l);
}

static void
linger_cb(evutil_socket_t fd, short what, void *arg)
{
    linger_t *l = arg;
    char buf[16384];

    if ((what & EV_READ) && clock_mono_ms() < l->until_ms) {
        int i;

        for (i = 0; i < 64; i++) {
            ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

            if (n > 0)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                return;         /* read on when more comes */
            break;              /* EOF or error */
        }
        if (i == 64)
            return;             /* still sending: read on */
    }
    linger_end(l);
}

void
linger_start(struct event_base *base, int fd)
{
    linger_t *l = calloc(1, sizeof(*l));
    struct timeval idle = clock_tv(LINGER_IDLE_MS);

    if (l != NULL)
        l->ev = event_new(base, fd, EV_READ | EV_PERSIST, linger_cb, l);
    if (l == NULL || l->ev == NULL || event_add(l->ev, &idle) < 0) {
        if (l != NULL && l->ev != NULL)
            event_free(l->ev);
        free(l);
        close(fd);
        return;
    }
    l->fd = fd;
    l->until_ms = clock_mono_ms() + LINGER_MS;
    l->next = lingering;
    if (lingering != NULL)
        lingering->prev = l;
    lingering = l;
}
