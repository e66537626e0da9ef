/*
 * tls: SSL_CTX set-up and evhttp's bufferevent callback.
 *
 * Each connection gets its own SSL from the shared context; the
 * bufferevent owns it (BEV_OPT_CLOSE_ON_FREE frees the SSL and closes the
 * socket).  Clients that close without a TLS close_notify (curl, Python,
 * most HTTP/1.1 clients after a Connection: close answer) are normal, so
 * dirty shutdowns are allowed rather than logged as errors.
 */
#include "config.h"

#include "provider-sim/tls.h"

#include <stdio.h>
#include <stdlib.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "common/log.h"

struct sim_tls {
    SSL_CTX *ctx;
};

/* The reason of the last OpenSSL error, for one log line. */
static const char *
ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();

    if (e == 0)
        snprintf(buf, len, "unknown error");
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

sim_tls_t *
sim_tls_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    sim_tls_t *t = calloc(1, sizeof(*t));
    char why[256];

    if (t == NULL || (t->ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
        snprintf(err, errlen, "TLS: cannot create a context: %s", ssl_reason(why, sizeof(why)));
        goto fail;
    }
    SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(t->ctx, SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_use_certificate_chain_file(t->ctx, cert_file) != 1) {
        snprintf(err, errlen, "tls_cert %s: %s", cert_file, ssl_reason(why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(t->ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "tls_key %s: %s", key_file, ssl_reason(why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_check_private_key(t->ctx) != 1) {
        snprintf(err, errlen, "tls_key %s does not match tls_cert %s", key_file, cert_file);
        ERR_clear_error();
        goto fail;
    }
    return t;
fail:
    sim_tls_free(t);
    return NULL;
}

static struct bufferevent *
make_bev(struct event_base *base, void *arg)
{
    sim_tls_t *t = arg;
    SSL *ssl = SSL_new(t->ctx);
    struct bufferevent *bev;

    if (ssl == NULL) {
        log_error("TLS: SSL_new failed: out of memory");
        return NULL;
    }
    bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                         BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        SSL_free(ssl);
        log_error("TLS: cannot make a bufferevent for a connection");
        return NULL;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

void
sim_tls_serve(sim_tls_t *t, struct evhttp *http)
{
    evhttp_set_bevcb(http, make_bev, t);
}

void
sim_tls_free(sim_tls_t *t)
{
    if (t == NULL)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
}
