/*
 * provider_tls: TLS for the provider client.
 *
 * One SSL_CTX per provider (trust store, TLS 1.2 minimum, verification
 * on) and one SSL per connection (the host to check, SNI).  The SSL lives
 * in an OpenSSL bufferevent that evhttp owns: freeing the connection frees
 * both.  When evhttp reconnects a connection that the provider had closed
 * while it was idle, libevent clears the SSL (SSL_clear keeps the host
 * and SNI settings) and handshakes again.
 *
 * A refused certificate is explained by OpenSSL only as "certificate
 * verify failed"; the verify callback records the real reason (hostname
 * mismatch, unknown issuer, expiry...) in the buffer of the call that
 * uses the connection, which the SSL's app data points to.
 */
#include "config.h"

#include "worker/provider_tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/log.h"
#include "common/resolve.h"

struct provider_tls {
    SSL_CTX *ctx;
    char host[256];
    int host_is_ip;     /* an address literal: no SNI, an IP SAN to match */
};

/* OpenSSL's first queued error, the cause of the others, as text, or ""
 * (and its queue emptied). */
static const char *
first_error(char *buf, size_t len)
{
    unsigned long e, first = 0;

    while ((e = ERR_get_error()) != 0) {
        if (first == 0)
            first = e;
    }
    buf[0] = '\0';
    if (first != 0)
        ERR_error_string_n(first, buf, len);
    return buf;
}

/* Run by OpenSSL for each certificate of the chain: it decides nothing
 * (ok is OpenSSL's verdict, host name included), it only records the first
 * reason for a refusal where the connection's current call reads it. */
static int
verify_cb(int ok, X509_STORE_CTX *store)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    char *reason = ssl != NULL ? SSL_get_app_data(ssl) : NULL;
    X509 *cert = X509_STORE_CTX_get_current_cert(store);
    char subject[160] = "?";

    if (ok || reason == NULL || reason[0] != '\0')
        return ok;
    if (cert != NULL)
        X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
    snprintf(reason, PROVIDER_TLS_REASON_MAX, "certificate refused: %s (depth %d, subject %s)",
             X509_verify_cert_error_string(X509_STORE_CTX_get_error(store)),
             X509_STORE_CTX_get_error_depth(store), subject);
    return ok;
}

provider_tls_t *
provider_tls_new(const char *host, const char *ca_file)
{
    provider_tls_t *t = calloc(1, sizeof(*t));
    const char *what;
    char why[256];

    what = "out of memory";
    if (t == NULL || strlen(host) >= sizeof(t->host))
        goto fail;
    snprintf(t->host, sizeof(t->host), "%s", host);
    t->host_is_ip = resolve_is_address(host);
    what = "SSL_CTX_new";
    if ((t->ctx = SSL_CTX_new(TLS_client_method())) == NULL)
        goto fail;
    what = "SSL_CTX_set_min_proto_version";
    if (SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION) != 1)
        goto fail;
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, verify_cb);
    what = ca_file != NULL ? ca_file : "the system's default CAs";
    if (ca_file != NULL ? SSL_CTX_load_verify_locations(t->ctx, ca_file, NULL) != 1
        : SSL_CTX_set_default_verify_paths(t->ctx) != 1)
        goto fail;
    return t;
fail:
    log_error("provider: TLS setup failed: %s: %s", what, first_error(why, sizeof(why)));
    provider_tls_free(t);
    return NULL;
}

void
provider_tls_free(provider_tls_t *t)
{
    if (t == NULL)
        return;
    SSL_CTX_free(t->ctx);   /* reference-counted: each connection's SSL keeps it */
    free(t);
}

struct evhttp_connection *
provider_tls_connect(provider_tls_t *t, struct event_base *base, const char *addr,
                     unsigned short port)
{
    SSL *ssl = SSL_new(t->ctx);
    struct bufferevent *bev;
    struct evhttp_connection *c;
    char why[256];
    int ok;

    if (ssl == NULL) {
        log_error("provider: SSL_new failed: %s", first_error(why, sizeof(why)));
        return NULL;
    }
    if (t->host_is_ip) {
        /* RFC 6066: no SNI for an address. */
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), t->host) == 1;
    } else {
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = SSL_set_tlsext_host_name(ssl, t->host) == 1 && SSL_set1_host(ssl, t->host) == 1;
    }
    if (!ok) {
        log_error("provider: cannot check TLS host %s: %s", t->host, first_error(why, sizeof(why)));
        SSL_free(ssl);
        return NULL;
    }
    bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                         BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (bev == NULL) {
        log_error("provider: bufferevent_openssl_socket_new failed");
        SSL_free(ssl);      /* not taken on failure */
        return NULL;
    }
    /* A server that closes without close_notify ends the body, as over
     * plain TCP; a truncated JSON body does not parse anyway. */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    c = evhttp_connection_base_bufferevent_new(base, NULL, bev, addr, port);
    if (c == NULL) {
        log_error("provider: evhttp_connection_base_bufferevent_new failed");
        bufferevent_free(bev);  /* frees ssl too */
    }
    return c;
}

void
provider_tls_report_to(struct evhttp_connection *conn, char *reason)
{
    SSL *ssl = bufferevent_openssl_get_ssl(evhttp_connection_get_bufferevent(conn));

    if (ssl != NULL)
        SSL_set_app_data(ssl, reason);
}

const char *
provider_tls_failure(struct evhttp_connection *conn, const char *reason, char *buf, size_t len)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(conn);
    unsigned long e, found = 0;
    size_t n;

    /* Popped newest first: the last one kept is the oldest, the cause.
     * The bare SSL_ERROR_* codes that libevent stores there too carry no
     * library and say nothing. */
    while ((e = bufferevent_get_openssl_error(bev)) != 0) {
        if (ERR_GET_LIB(e) != 0)
            found = e;
    }
    if (reason != NULL && reason[0] != '\0')
        return reason;
    if (found == 0)
        return NULL;
    n = (size_t)snprintf(buf, len, "TLS error: ");
    if (n < len)
        ERR_error_string_n(found, buf + n, len - n);
    return buf;
}
