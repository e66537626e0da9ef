/*
 * provider_tls: the TLS side of the provider client (worker/provider.c):
 * the provider's SSL_CTX, and for each connection an OpenSSL bufferevent
 * that evhttp connects, handshakes and reconnects like a plain socket.
 *
 * Peer verification is always on: TLS 1.2 or later, a certificate that
 * chains to the CA file (or the system's CAs) and names the URL's host (a
 * name, also sent as SNI, or an IP address).  libevent runs the handshake
 * asynchronously; nothing here blocks after provider_tls_new.
 * Single-threaded, like provider.c.
 */
#ifndef PD_PROVIDER_TLS_H
#define PD_PROVIDER_TLS_H

#include <stddef.h>

#include <event2/event.h>
#include <event2/http.h>

typedef struct provider_tls provider_tls_t;

/* Size of a buffer that provider_tls_report_to writes a reason into. */
#define PROVIDER_TLS_REASON_MAX 320

/* TLS towards host (the URL's host), trusting the PEM file ca_file or, when
 * it is NULL, the system's default CAs.  Returns NULL and logs why. */
provider_tls_t *provider_tls_new(const char *host, const char *ca_file)
    __attribute__((warn_unused_result));

/* Free it; connections already made hold their own reference. */
void provider_tls_free(provider_tls_t *t);

/* A new evhttp connection to addr:port (numeric) over TLS, not connected
 * yet.  Returns NULL and logs why. */
struct evhttp_connection *provider_tls_connect(provider_tls_t *t, struct event_base *base,
                                               const char *addr, unsigned short port)
    __attribute__((warn_unused_result));

/* From now on, a certificate that conn refuses is explained in reason (a
 * buffer of PROVIDER_TLS_REASON_MAX bytes, owned by the caller, "" until
 * then); NULL: explained nowhere.  Set it for the call that uses conn. */
void provider_tls_report_to(struct evhttp_connection *conn, char *reason);

/* Why conn's TLS failed, for a log line: reason when it holds a refusal,
 * else OpenSSL's first error on the connection, written in buf; NULL when
 * none is known.  Empties the connection's error queue. */
const char *provider_tls_failure(struct evhttp_connection *conn, const char *reason,
                                 char *buf, size_t len);

#endif
