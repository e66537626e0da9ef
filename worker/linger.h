/*
 * linger: close a connection after an error answer without resetting it
 * while its client is still sending (see linger.c).
 */
#ifndef PD_LINGER_H
#define PD_LINGER_H

#include <event2/event.h>

/* Take fd over: read and discard it until its client closes or a few
 * seconds pass, then close it.  fd is closed at once if that cannot start. */
void linger_start(struct event_base *base, int fd);

#endif
