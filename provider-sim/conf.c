/*
 * conf: provider-sim's key table and the checks that span several keys.
 *
 * Built once at start-up and never changed afterwards (the sim has no
 * reload), so it is passed around as const sim_conf_t * with no locking.
 */
#include "config.h"

#include "provider-sim/conf.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>
#include <openssl/crypto.h>

#include "common/cfparse.h"
#include "common/listen.h"
#include "common/log.h"

static int
check_listen(const void *field, char *err, size_t errlen)
{
    return listen_parse(*(char *const *)field, NULL, err, errlen);
}

static int
check_secret(const void *field, char *err, size_t errlen)
{
    whsig_key_t key;
    int rc = whsig_key_parse(*(char *const *)field, &key, err, errlen);

    OPENSSL_cleanse(&key, sizeof(key));
    return rc;
}

static int
check_admin_allow(const void *field, char *err, size_t errlen)
{
    const cf_list_t *l = field;

    for (size_t i = 0; i < l->n; i++) {
        if (sim_acl_check(l->items[i], err, errlen) < 0)
            return -1;
    }
    return 0;
}

static int
check_log_level(const void *field, char *err, size_t errlen)
{
    if (log_level_parse(*(char *const *)field) < 0) {
        snprintf(err, errlen, "log_level must be error, warn, info or debug");
        return -1;
    }
    return 0;
}

/*
 * Split an http:// URL into host, port and path.  Only plain http: the sim
 * talks to paymentsd on loopback or a private network.  Returns 0, or -1
 * with a message.
 */
static int
url_split(const char *url, char **host, int *port, char **path, char *err, size_t errlen)
{
    struct evhttp_uri *uri = evhttp_uri_parse(url);
    const char *scheme, *h, *p, *q;
    size_t len;

    *host = *path = NULL;
    if (uri == NULL) {
        snprintf(err, errlen, "webhook_url \"%.128s\" is not a URL", url);
        return -1;
    }
    scheme = evhttp_uri_get_scheme(uri);
    h = evhttp_uri_get_host(uri);
    if (scheme == NULL || strcmp(scheme, "http") != 0 || h == NULL || h[0] == '\0') {
        snprintf(err, errlen, "webhook_url must be an http://host[:port]/path URL");
        evhttp_uri_free(uri);
        return -1;
    }
    *port = evhttp_uri_get_port(uri) > 0 ? evhttp_uri_get_port(uri) : 80;
    p = evhttp_uri_get_path(uri);
    q = evhttp_uri_get_query(uri);
    if (p == NULL || p[0] == '\0')
        p = "/";
    /* evhttp keeps IPv6 hosts in brackets; the resolver wants them bare */
    len = strlen(h);
    if (h[0] == '[' && len > 2 && h[len - 1] == ']')
        *host = strndup(h + 1, len - 2);
    else
        *host = strdup(h);
    len = strlen(p) + (q ? strlen(q) + 1 : 0) + 1;
    *path = malloc(len);
    if (*path != NULL)
        snprintf(*path, len, "%s%s%s", p, q ? "?" : "", q ? q : "");
    evhttp_uri_free(uri);
    if (*host == NULL || *path == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

#define K(name, type, field, def, min, max, check) \
    { name, type, offsetof(sim_conf_t, field), def, min, max, 0, check }
#define MS_HOUR (3600LL * 1000)

static const cf_key_t keys[] = {
    K("listen", CF_STR, listen, "127.0.0.1:8001", 0, 0, check_listen),
    K("webhook_url", CF_STR, webhook_url, "http://127.0.0.1:8000/webhooks/provider", 0, 0, NULL),
    K("webhook_secret", CF_STR, webhook_secret,
      "whsec_c2ltdWxhdG9yLXNlY3JldC1mb3ItZGV2ZWxvcG1lbnQ=", 0, 0, check_secret),
    K("decline_rate", CF_FRACTION, decline_rate, "0.1", 0, 0, NULL),
    K("timeout_rate", CF_FRACTION, timeout_rate, "0", 0, 0, NULL),
    K("latency", CF_DURATION, latency_ms, "0", 0, 600000, NULL),
    K("seed", CF_INT, seed, "1", 0, 0, NULL),
    K("hold", CF_DURATION, hold_ms, "30s", 1, MS_HOUR, NULL),
    K("webhook_delay", CF_DURATION, webhook_delay_ms, "2s", 0, MS_HOUR, NULL),
    K("webhook_max_attempts", CF_INT, webhook_max_attempts, "8", 1, 1000, NULL),
    K("webhook_backoff", CF_DURATION, webhook_backoff_ms, "500ms", 1, MS_HOUR, NULL),
    K("webhook_backoff_max", CF_DURATION, webhook_backoff_max_ms, "30s", 1, 24 * MS_HOUR, NULL),
    K("webhook_timeout", CF_DURATION, webhook_timeout_ms, "5s", 1, MS_HOUR, NULL),
    K("resolv_conf", CF_STR, resolv_conf, "/etc/resolv.conf", 0, 0, NULL),
    K("resolve_interval", CF_DURATION, resolve_interval_ms, "30s", 100, 24 * MS_HOUR, NULL),
    K("outage", CF_BOOL, outage, "off", 0, 0, NULL),
    K("log_level", CF_STR, log_level, "info", 0, 0, check_log_level),
    K("error_log", CF_STR, error_log, "stderr", 0, 0, NULL),
    K("pid_file", CF_STR, pid_file, NULL, 0, 0, NULL),
    { "admin_allow", CF_LIST, offsetof(sim_conf_t, admin_allow), "127.0.0.0/8 ::1", 0, 0,
      CF_REPEAT, check_admin_allow },
    K("state_file", CF_STR, state_file, NULL, 0, 0, NULL),
    K("tls_cert", CF_STR, tls_cert, NULL, 0, 0, NULL),
    K("tls_key", CF_STR, tls_key, NULL, 0, 0, NULL),
};

/* An empty string means "unset" for the optional paths. */
static void
unset_if_empty(char **v)
{
    if (*v != NULL && (*v)[0] == '\0') {
        free(*v);
        *v = NULL;
    }
}

static const cf_schema_t schema = {
    keys, sizeof(keys) / sizeof(keys[0]), "PROVIDER_SIM_", NULL, 0
};

sim_conf_t *
sim_conf_load(const char *path, char *err, size_t errlen)
{
    sim_conf_t *conf = calloc(1, sizeof(*conf));
    const char *where = path ? path : "conf";
    char msg[512];

    if (conf == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (cf_load(&schema, conf, path, err, errlen) < 0)
        goto fail;
    if (path != NULL && (conf->path = strdup(path)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (whsig_key_parse(conf->webhook_secret, &conf->key, msg, sizeof(msg)) < 0) {
        snprintf(err, errlen, "%s: webhook_secret: %s", where, msg);
        goto fail;
    }
    if (url_split(conf->webhook_url, &conf->webhook_host, &conf->webhook_port,
                  &conf->webhook_path, msg, sizeof(msg)) < 0) {
        snprintf(err, errlen, "%s: %s", where, msg);
        goto fail;
    }
    if (conf->webhook_backoff_max_ms < conf->webhook_backoff_ms) {
        snprintf(err, errlen, "%s: webhook_backoff_max must not be shorter than webhook_backoff",
                 where);
        goto fail;
    }
    unset_if_empty(&conf->pid_file);
    unset_if_empty(&conf->state_file);
    unset_if_empty(&conf->tls_cert);
    unset_if_empty(&conf->tls_key);
    if ((conf->tls_cert == NULL) != (conf->tls_key == NULL)) {
        snprintf(err, errlen, "%s: tls_cert and tls_key go together: set both (HTTPS) or neither",
                 where);
        goto fail;
    }
    conf->admin_acl = sim_acl_new(conf->admin_allow.items, conf->admin_allow.n, msg, sizeof(msg));
    if (conf->admin_acl == NULL) {
        snprintf(err, errlen, "%s: %s", where, msg);
        goto fail;
    }
    return conf;
fail:
    sim_conf_free(conf);
    return NULL;
}

void
sim_conf_free(sim_conf_t *conf)
{
    if (conf == NULL)
        return;
    cf_free(&schema, conf);
    free(conf->path);
    free(conf->webhook_host);
    free(conf->webhook_path);
    sim_acl_free(conf->admin_acl);
    OPENSSL_cleanse(&conf->key, sizeof(conf->key));
    free(conf);
}
