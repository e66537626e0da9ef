/*
 * tls: HTTPS for the sim's listener (tls_cert, tls_key).
 *
 * One SSL_CTX for the process, loaded at start-up; evhttp then wraps each
 * accepted connection in a libevent OpenSSL bufferevent that does the
 * server side of the handshake.  Single-threaded, like the rest of the sim.
 */
#ifndef PD_SIM_TLS_H
#define PD_SIM_TLS_H

#include <stddef.h>

#include <event2/http.h>

typedef struct sim_tls sim_tls_t;

/*
 * A server context for the PEM certificate chain and private key at these
 * paths (TLS 1.2 or later).  Returns it, or NULL with "tls_cert ...: reason"
 * in err.
 */
sim_tls_t *sim_tls_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Make http accept TLS only, with t (which must outlive http's connections). */
void sim_tls_serve(sim_tls_t *t, struct evhttp *http);

/* Free (NULL is fine). */
void sim_tls_free(sim_tls_t *t);

#endif
