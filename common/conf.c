/*
 * conf: paymentsd's key table and the checks that span several keys.
 *
 * The table is the single description of every key: its type, default,
 * limits and whether a reload may change it.  conf/paymentsd.conf documents
 * the same keys for operators; keep the two in step.
 */
#include "config.h"

#include "common/conf.h"

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/log.h"
#include "common/listen.h"
#include "common/whsig.h"

/* Each address parses, and no two of them would fight over a port: the
 * master would fail to bind the second at start, after -t had said yes. */
static int
check_listen(const void *field, char *err, size_t errlen)
{
    const cf_list_t *l = field;
    struct sockaddr_storage *addrs = calloc(l->n + 1, sizeof(*addrs));
    int rc = 0;

    if (addrs == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < l->n && rc == 0; i++) {
        rc = listen_parse(l->items[i], &addrs[i], err, errlen);
        for (size_t j = 0; j < i && rc == 0; j++) {
            int o = listen_overlap(&addrs[j], &addrs[i]);
            if (o == 0)
                continue;
            snprintf(err, errlen, "listen \"%.64s\" %s \"%.64s\": the port cannot be bound twice",
                     l->items[i], o == 2 ? "duplicates" : "overlaps", l->items[j]);
            rc = -1;
        }
    }
    free(addrs);
    return rc;
}

/* libpq parses the string the same way when it connects: a typo is caught
 * by -t rather than by every worker's first connection. */
static int
check_database(const void *field, char *err, size_t errlen)
{
    const char *s = *(char *const *)field;
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(s, &msg);

    if (opts == NULL) {
        size_t n;
        snprintf(err, errlen, "invalid database connection string: %s",
                 msg ? msg : "out of memory");
        n = strlen(err);
        if (n > 0 && err[n - 1] == '\n')
            err[n - 1] = '\0';
        PQfreemem(msg);
        return -1;
    }
    PQconninfoFree(opts);
    return 0;
}

static int
check_currencies(const void *field, char *err, size_t errlen)
{
    const cf_list_t *l = field;

    for (size_t i = 0; i < l->n; i++) {
        const char *c = l->items[i];
        if (strlen(c) != 3 || !isupper((unsigned char)c[0])
            || !isupper((unsigned char)c[1]) || !isupper((unsigned char)c[2])) {
            snprintf(err, errlen, "currency \"%.16s\" is not three upper-case letters", c);
            return -1;
        }
    }
    return 0;
}

/* Decoded the way the workers will decode it, so -t catches a bad secret. */
static int
check_secrets(const void *field, char *err, size_t errlen)
{
    const cf_list_t *l = field;
    whsig_key_t *key = malloc(sizeof(*key));
    int rc = 0;

    if (key == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < l->n && rc == 0; i++)
        rc = whsig_key_parse(l->items[i], key, err, errlen);
    OPENSSL_cleanse(key, sizeof(*key));
    free(key);
    return rc;
}

static int
check_log_level(const void *field, char *err, size_t errlen)
{
    const char *s = *(char *const *)field;

    if (log_level_parse(s) < 0) {
        snprintf(err, errlen, "log_level must be error, warn, info or debug");
        return -1;
    }
    return 0;
}

static int
check_url(const void *field, char *err, size_t errlen)
{
    const char *s = *(char *const *)field;

    if (!(strncmp(s, "http://", 7) == 0 && s[7] != '\0')
        && !(strncmp(s, "https://", 8) == 0 && s[8] != '\0')) {
        snprintf(err, errlen, "provider_url must be an http:// or https:// URL");
        return -1;
    }
    return 0;
}

/* The host of an origin: a name or IPv4 address of letters, digits, '.'
 * and '-' (no empty label), or a bracketed IPv6 address.  Returns its
 * length, 0 when there is none. */
static size_t
origin_host(const char *s)
{
    size_t n;

    if (s[0] == '[') {
        n = 1 + strspn(s + 1, "0123456789abcdefABCDEF:.");
        return n > 2 && s[n] == ']' ? n + 1 : 0;
    }
    n = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-");
    if (n == 0 || n > 253 || s[0] == '.' || s[0] == '-' || s[n - 1] == '.' || s[n - 1] == '-')
        return 0;
    for (size_t i = 1; i < n; i++) {
        if (s[i] == '.' && s[i - 1] == '.')
            return 0;
    }
    return n;
}

/*
 * cors_allow_origins: each an origin as a browser sends it in Origin,
 * scheme://host[:port] with scheme http or https, no path, no default
 * port (the browser never sends one, so it would never match); or "*"
 * alone, for any origin.
 */
static int
check_cors_origins(const void *field, char *err, size_t errlen)
{
    const cf_list_t *l = field;

    for (size_t i = 0; i < l->n; i++) {
        const char *o = l->items[i], *p;
        size_t skip = strncasecmp(o, "https://", 8) == 0  ? 8
                      : strncasecmp(o, "http://", 7) == 0 ? 7
                                                          : 0;
        size_t host;

        if (strcmp(o, "*") == 0) {
            if (l->n == 1)
                continue;
            snprintf(err, errlen, "cors_allow_origins: \"*\" allows every origin: list it alone");
            return -1;
        }
        host = skip > 0 ? origin_host(o + skip) : 0;
        p = o + skip + host;
        if (host > 0 && *p == ':') {
            char *end;
            long port = (p[1] >= '1' && p[1] <= '9') ? strtol(p + 1, &end, 10) : 0;

            if (port < 1 || port > 65535 || *end != '\0') {
                snprintf(err, errlen, "cors_allow_origins: invalid port in \"%.200s\"", o);
                return -1;
            }
            if (port == (skip == 8 ? 443 : 80)) {
                snprintf(err, errlen, "cors_allow_origins: \"%.200s\": leave out the default "
                         "port, as browsers do in Origin", o);
                return -1;
            }
            continue;
        }
        if (host == 0 || *p != '\0') {
            snprintf(err, errlen, "cors_allow_origins: \"%.200s\" is not an origin "
                     "(http:// or https://, a host, an optional :port, nothing after)", o);
            return -1;
        }
    }
    return 0;
}

/*
 * Where provider_ca_file was set, for an error message: the environment
 * variable when it overrides the file, else "file:line" of the key's line
 * (cfparse keeps no positions; the key may appear once, and a line longer
 * than fgets' buffer was refused by cfparse already).
 */
static void
ca_file_origin(const char *path, char *where, size_t len)
{
    static const char key[] = "provider_ca_file";
    char line[4096];
    int lineno = 0;
    FILE *f;

    if (getenv("PAYMENTSD_PROVIDER_CA_FILE") != NULL || path == NULL) {
        snprintf(where, len, "environment PAYMENTSD_PROVIDER_CA_FILE");
        return;
    }
    snprintf(where, len, "%s", path);
    if ((f = fopen(path, "r")) == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL) {
        const char *s = line;

        lineno++;
        while (isspace((unsigned char)*s))
            s++;
        if (strncmp(s, key, sizeof(key) - 1) == 0
            && (s[sizeof(key) - 1] == '=' || isspace((unsigned char)s[sizeof(key) - 1]))) {
            snprintf(where, len, "%s:%d", path, lineno);
            break;
        }
    }
    fclose(f);
}

/* dir + "/" + rel as a new string, or NULL (out of memory). */
static char *
path_join(const char *dir, const char *rel)
{
    size_t n = strlen(dir);
    char *full = malloc(n + 1 + strlen(rel) + 1);

    if (full != NULL)
        sprintf(full, "%s%s%s", dir, n > 0 && dir[n - 1] == '/' ? "" : "/", rel);
    return full;
}

/* The absolute directory that relative paths are taken from: prefix (made
 * absolute), else the conf file's directory, else the current one. */
static char *
base_dir(const char *path, const char *prefix)
{
    char cwd[4096], *full, *slash, *real;
    const char *name = prefix != NULL ? prefix : path;

    if (name != NULL && name[0] == '/')
        full = strdup(name);
    else if (getcwd(cwd, sizeof(cwd)) == NULL)
        return NULL;
    else
        full = name != NULL ? path_join(cwd, name) : strdup(cwd);
    if (full != NULL && prefix == NULL && name != NULL) {
        slash = strrchr(full, '/');     /* the file's directory */
        if (slash == full)
            slash[1] = '\0';            /* "/" */
        else
            *slash = '\0';
    }
    /* "/srv/p/conf", not "/srv/p/build/../conf", where the directory exists */
    if (full != NULL && (real = realpath(full, NULL)) != NULL) {
        free(full);
        full = real;
    }
    return full;
}

/*
 * Make every relative CF_PATH value absolute from conf->prefix, so that
 * nothing depends on the directory paymentsd was started in: the master,
 * "paymentsd -s reopen" run by logrotate from "/", and a reload all name the
 * same files.  The log keywords (stderr, stdout, off) are not paths.  An
 * empty provider_ca_file (from the environment) means none.
 */
static int
resolve_paths(const cf_schema_t *schema, conf_t *conf, char *err, size_t errlen)
{
    static const char *const keywords[] = { "", "stderr", "stdout", "off" };

    if (conf->provider_ca_file != NULL && conf->provider_ca_file[0] == '\0') {
        free(conf->provider_ca_file);
        conf->provider_ca_file = NULL;
    }
    for (size_t i = 0; i < schema->nkeys; i++) {
        char **field = (char **)((char *)conf + schema->keys[i].offset);
        int keyword = 0;
        char *full;

        if (!(schema->keys[i].flags & CF_PATH) || *field == NULL || (*field)[0] == '/')
            continue;
        for (size_t k = 0; k < sizeof(keywords) / sizeof(keywords[0]); k++)
            keyword |= strcmp(*field, keywords[k]) == 0;
        if (keyword)
            continue;
        if ((full = path_join(conf->prefix, *field)) == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        free(*field);
        *field = full;
    }
    return 0;
}

/* An empty docs_root would name the conf file's own folder once resolved. */
static int
check_docs_root(const void *field, char *err, size_t errlen)
{
    if ((*(char *const *)field)[0] == '\0') {
        snprintf(err, errlen, "docs_root must name a folder");
        return -1;
    }
    return 0;
}

/* provider_ca_file is readable and holds a PEM certificate: caught by -t
 * rather than by every worker's start. */
static int
check_ca_file(const conf_t *conf, const char *path, char *err, size_t errlen)
{
    char where[1024];
    const char *why;
    X509 *cert = NULL;
    FILE *f;

    if (conf->provider_ca_file == NULL)
        return 0;
    if ((f = fopen(conf->provider_ca_file, "r")) == NULL) {
        why = strerror(errno);
    } else {
        cert = PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
        ERR_clear_error();
        why = "it holds no PEM certificate";
    }
    if (cert != NULL) {
        X509_free(cert);
        return 0;
    }
    ca_file_origin(path, where, sizeof(where));
    snprintf(err, errlen, "%s: provider_ca_file %s: %s", where, conf->provider_ca_file, why);
    return -1;
}

/*
 * workers = auto: one per core, but no more than keep one generation's
 * database connections (workers x db_pool_size) within this many.  A
 * reload briefly runs two generations, each with a housekeeper (4 more),
 * so auto stays under PostgreSQL's default max_connections of 100 on any
 * host (issue 12: 64 cores opened 130).  More workers than that would only
 * wait on the database, which bounds throughput.  A number in the conf is
 * taken as written.
 */
#define AUTO_DB_CONNECTIONS 32

#define K(name, type, field, def, min, max, flags, check) \
    { name, type, offsetof(conf_t, field), def, min, max, flags, check }
#define MS_DAY (86400LL * 1000)

static const cf_key_t keys[] = {
    K("listen", CF_LIST, listen, "127.0.0.1:8000", 0, 0, CF_REPEAT | CF_NO_RELOAD, check_listen),
    K("workers", CF_INT, workers, "auto", 1, 512, CF_AUTO, NULL),
    K("worker_shutdown_timeout", CF_DURATION, worker_shutdown_timeout_ms, "30s", 1, MS_DAY, 0,
      NULL),
    K("database", CF_STR, database, "postgresql://app:app@127.0.0.1:54320/payments", 0, 0, 0,
      check_database),
    K("db_pool_size", CF_INT, db_pool_size, "2", 1, 256, 0, NULL),
    K("db_batch_max", CF_INT, db_batch_max, "64", 1, 1000, 0, NULL),
    K("db_queue_size", CF_INT, db_queue_size, "1024", 1, 1000000, 0, NULL),
    K("db_timeout", CF_DURATION, db_timeout_ms, "5s", 10, 600000, 0, NULL),
    K("provider_url", CF_STR, provider_url, "http://127.0.0.1:8001", 0, 0, 0, check_url),
    K("provider_ca_file", CF_STR, provider_ca_file, NULL, 0, 0, CF_PATH, NULL),
    K("provider_timeout", CF_DURATION, provider_timeout_ms, "800ms", 1, 600000, 0, NULL),
    K("breaker_threshold", CF_INT, breaker_threshold, "5", 1, 1000000, 0, NULL),
    K("breaker_cooldown", CF_DURATION, breaker_cooldown_ms, "5s", 1, MS_DAY, 0, NULL),
    K("resolv_conf", CF_STR, resolv_conf, "/etc/resolv.conf", 0, 0, CF_PATH, NULL),
    K("resolve_interval", CF_DURATION, resolve_interval_ms, "30s", 100, MS_DAY, 0, NULL),
    K("outage_pending_cap_cents", CF_INT, outage_pending_cap_cents, "10000", 0, INT64_MAX, 0, NULL),
    K("max_amount_cents", CF_INT, max_amount_cents, "100000000", 1, INT64_MAX, 0, NULL),
    K("currencies", CF_LIST, currencies, "EUR USD GBP", 0, 0, 0, check_currencies),
    K("webhook_secret", CF_LIST, webhook_secrets, NULL, 0, 0, CF_REPEAT, check_secrets),
    K("webhook_tolerance", CF_DURATION, webhook_tolerance_ms, "5m", 1000, MS_DAY, 0, NULL),
    /* At least a minute: cached answers expire a minute early (clock skew). */
    K("idempotency_ttl", CF_DURATION, idempotency_ttl_ms, "24h", 60000, 365 * MS_DAY, 0, NULL),
    K("idempotency_lock_timeout", CF_DURATION, idempotency_lock_timeout_ms, "30s", 1000, MS_DAY, 0,
      NULL),
    K("shm_cache_size", CF_SIZE, shm_cache_size, "64m", 64 * 1024, 64LL << 30, CF_NO_RELOAD, NULL),
    K("housekeeper_interval", CF_DURATION, housekeeper_interval_ms, "5s", 10, MS_DAY, 0, NULL),
    K("pending_reconcile_age", CF_DURATION, pending_reconcile_age_ms, "10m", 1000, 365 * MS_DAY, 0,
      NULL),
    K("max_body_size", CF_SIZE, max_body_size, "16k", 64, 64 << 20, 0, NULL),
    K("max_header_size", CF_SIZE, max_header_size, "8k", 1024, 1 << 20, 0, NULL),
    K("cors_allow_origins", CF_LIST, cors_allow_origins, NULL, 0, 0, CF_REPEAT, check_cors_origins),
    K("client_timeout", CF_DURATION, client_timeout_ms, "30s", 1000, 3600000, 0, NULL),
    K("pid_file", CF_STR, pid_file, "var/paymentsd.pid", 0, 0, CF_NO_RELOAD | CF_PATH, NULL),
    K("error_log", CF_STR, error_log, "stderr", 0, 0, CF_PATH, NULL),
    K("access_log", CF_STR, access_log, "off", 0, 0, CF_PATH, NULL),
    K("log_level", CF_STR, log_level, "info", 0, 0, 0, check_log_level),
    /* Missing files are no error: /docs then says how to install them. */
    K("docs_root", CF_STR, docs_root, PKGDATADIR "/swagger-ui", 0, 0, CF_PATH, check_docs_root),
};

static const cf_alias_t aliases[] = {
    { "DATABASE_URL", "database" },
    { "OUTAGE_PENDING_CAP_CENTS", "outage_pending_cap_cents" },
};

static const cf_schema_t schema = {
    keys, sizeof(keys) / sizeof(keys[0]),
    "PAYMENTSD_", aliases, sizeof(aliases) / sizeof(aliases[0])
};

conf_t *
conf_load(const char *path, char *err, size_t errlen)
{
    return conf_load_prefix(path, NULL, err, errlen);
}

conf_t *
conf_load_prefix(const char *path, const char *prefix, char *err, size_t errlen)
{
    conf_t *conf = calloc(1, sizeof(*conf));

    if (conf == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (cf_load(&schema, conf, path, err, errlen) < 0)
        goto fail;
    if ((path != NULL && (conf->path = strdup(path)) == NULL)
        || (conf->prefix = base_dir(path, prefix)) == NULL) {
        snprintf(err, errlen, "%s: cannot make relative paths absolute: %s",
                 path ? path : "conf", strerror(errno));
        goto fail;
    }
    if (resolve_paths(&schema, conf, err, errlen) < 0 || check_ca_file(conf, path, err, errlen) < 0)
        goto fail;
    if (conf->workers == -1) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        long cap = AUTO_DB_CONNECTIONS / conf->db_pool_size;

        conf->workers = n < 1 ? 1 : n > cap ? (cap > 0 ? cap : 1) : n;
    }
    if (conf->listen.n == 0) {
        snprintf(err, errlen, "%s: no listen address", path ? path : "conf");
        goto fail;
    }
    if (conf->currencies.n == 0) {
        snprintf(err, errlen, "%s: currencies must name at least one currency",
                 path ? path : "conf");
        goto fail;
    }
    if (conf->idempotency_lock_timeout_ms
        <= conf->provider_timeout_ms + 2 * conf->db_timeout_ms) {
        /* A live checkout holds its key through checkout_begin (queue
         * included), the provider call and checkout_finish.  It must never
         * look stale meanwhile, or a retry would `recover` it and run a
         * second checkout of the same order. */
        snprintf(err, errlen, "%s: idempotency_lock_timeout (%lld ms) must be longer than "
                 "provider_timeout + 2 * db_timeout (%lld ms)", path ? path : "conf",
                 (long long)conf->idempotency_lock_timeout_ms,
                 (long long)(conf->provider_timeout_ms + 2 * conf->db_timeout_ms));
        goto fail;
    }
    return conf;
fail:
    conf_free(conf);
    return NULL;
}

void
conf_free(conf_t *conf)
{
    if (conf == NULL)
        return;
    cf_free(&schema, conf);
    free(conf->path);
    free(conf->prefix);
    free(conf);
}

/* The database line, with the password, if any, replaced by stars: then
 * written as the keyword='value' pairs that libpq parses from it. */
static void
dump_database(FILE *out, const char *conninfo)
{
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL), *o;
    int secret = 0, first = 1;

    for (o = opts; o != NULL && o->keyword != NULL; o++)
        secret |= o->val != NULL && strcmp(o->keyword, "password") == 0;
    if (!secret) {
        fprintf(out, "database = %s\n", conninfo);
        PQconninfoFree(opts);
        return;
    }
    fprintf(out, "database = \"");
    for (o = opts; o->keyword != NULL; o++) {
        const char *v = strcmp(o->keyword, "password") == 0 ? "********" : o->val;

        if (o->val == NULL)
            continue;
        fprintf(out, "%s%s='", first ? "" : " ", o->keyword);
        for (; *v != '\0'; v++)
            fprintf(out, "%s%c", *v == '\'' || *v == '\\' ? "\\" : "", *v);
        fprintf(out, "'");
        first = 0;
    }
    fprintf(out, "\"\n");
    PQconninfoFree(opts);
}

void
conf_dump(const conf_t *conf, FILE *out)
{
    char value[4096];

    fprintf(out,
            "# the effective configuration of %s: defaults, the file, the environment;\n"
            "# relative paths taken from %s\n",
            conf->path ? conf->path : "(no file)", conf->prefix);
    for (size_t i = 0; i < schema.nkeys; i++) {
        const cf_key_t *k = &keys[i];
        size_t n = cf_count(k, conf);

        if (k->offset == offsetof(conf_t, webhook_secrets)) {
            fprintf(out, "# webhook_secret: %zu set, not shown\n", n);
            continue;
        }
        if (n == 0)
            fprintf(out, "# %s: not set\n", k->name);
        for (size_t j = 0; j < n; j++) {
            cf_format(k, conf, j, value, sizeof(value));
            if (k->offset == offsetof(conf_t, database))
                dump_database(out, value);
            else if (value[0] == '\0' || value[0] == '"' || isspace((unsigned char)value[0])
                     || strchr(value, '#') != NULL)
                fprintf(out, "%s = \"%s\"\n", k->name, value);     /* as the syntax needs */
            else
                fprintf(out, "%s = %s\n", k->name, value);
        }
    }
}

void
conf_keep_restart_only(conf_t *next, const conf_t *old)
{
    for (size_t i = 0; i < schema.nkeys; i++) {
        const cf_key_t *k = &keys[i];

        if (!(k->flags & CF_NO_RELOAD) || !cf_differs(k, next, old))
            continue;
        log_warn("%s cannot change on reload: keeping the running value, restart to apply it",
                 k->name);
        cf_copy(k, next, old);
    }
}

int
conf_check_reload(const conf_t *next, int64_t provider_timeout_ms, int64_t db_timeout_ms,
                  char *err, size_t errlen)
{
    int64_t hold = provider_timeout_ms + 2 * db_timeout_ms;

    if (next->idempotency_lock_timeout_ms > hold)
        return 0;
    snprintf(err, errlen, "%s: idempotency_lock_timeout (%lld ms) must be longer than "
             "provider_timeout + 2 * db_timeout of the running workers (%lld + 2 * %lld = "
             "%lld ms), which finish their checkouts with those while the new ones would "
             "take their keys over; lower the timeouts first, and the lock timeout in a "
             "later reload once the old workers have exited",
             next->path ? next->path : "conf", (long long)next->idempotency_lock_timeout_ms,
             (long long)provider_timeout_ms, (long long)db_timeout_ms, (long long)hold);
    return -1;
}

int
conf_warnings(const conf_t *conf, void (*emit)(const char *msg))
{
    int n = 0;

    if (conf->webhook_secrets.n == 0) {
        emit("no webhook_secret is set: POST /webhooks/provider will refuse every webhook");
        n++;
    }
    if (conf->provider_ca_file != NULL && strncmp(conf->provider_url, "https://", 8) != 0) {
        emit("provider_ca_file is set but provider_url is not https://: it is not used");
        n++;
    }
    return n;
}
