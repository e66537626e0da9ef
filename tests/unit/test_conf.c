/*
 * Unit tests of the configuration parser (common/cfparse.c) and of
 * paymentsd's key table (common/conf.c): every key, units, environment
 * overrides, and errors with their line numbers.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/conf.h"

static char path[64];

/* Write text to a fresh temporary file, remembered in path. */
static const char *
write_conf(const char *text)
{
    int fd;

    snprintf(path, sizeof(path), "/tmp/test_conf.XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static conf_t *
load_ok(const char *text)
{
    char err[1024] = "";
    conf_t *c = conf_load(write_conf(text), err, sizeof(err));

    if (c == NULL)
        fail_msg("unexpected error: %s", err);
    unlink(path);
    return c;
}

/* Expect an error whose text is "<file>:<suffix>". */
static void
load_fails(const char *text, const char *suffix)
{
    char err[1024] = "", want[1024];
    conf_t *c = conf_load(write_conf(text), err, sizeof(err));

    unlink(path);
    assert_null(c);
    snprintf(want, sizeof(want), "%s:%s", path, suffix);
    assert_string_equal(err, want);
}

static void
test_defaults(void **state)
{
    conf_t *c = load_ok("# nothing but a comment\n\n");

    (void)state;
    assert_int_equal(c->listen.n, 1);
    assert_string_equal(c->listen.items[0], "127.0.0.1:8000");
    assert_true(c->workers >= 1);
    assert_int_equal(c->db_pool_size, 2);
    assert_int_equal(c->provider_timeout_ms, 800);
    assert_string_equal(c->resolv_conf, "/etc/resolv.conf");
    assert_int_equal(c->resolve_interval_ms, 30000);
    assert_int_equal(c->db_timeout_ms, 5000);
    assert_int_equal(c->idempotency_lock_timeout_ms, 30000);
    assert_int_equal(c->outage_pending_cap_cents, 10000);
    assert_int_equal(c->webhook_tolerance_ms, 5 * 60 * 1000);
    assert_int_equal(c->idempotency_ttl_ms, 24LL * 3600 * 1000);
    assert_int_equal(c->max_body_size, 16384);
    assert_int_equal(c->currencies.n, 3);
    assert_int_equal(c->webhook_secrets.n, 0);
    assert_string_equal(c->log_level, "info");
    conf_free(c);
}

static void
test_every_key(void **state)
{
    conf_t *c = load_ok(
        "listen = 127.0.0.1:9000\n"
        "listen = [::1]:9001\n"
        "workers = 3\n"
        "worker_shutdown_timeout = 7s\n"
        "database = postgresql://u:p@127.0.0.1:5432/db\n"
        "db_pool_size = 8\n"
        "db_queue_size = 99\n"
        "db_timeout = 2s\n"
        "provider_url = http://127.0.0.1:9999\n"
        "provider_timeout = 1500ms\n"
        "breaker_threshold = 3\n"
        "breaker_cooldown = 2m\n"
        "outage_pending_cap_cents = 5000\n"
        "max_amount_cents = 700\n"
        "currencies = EUR, CHF\n"
        "webhook_secret = whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"
        "webhook_secret = whsec_c2VjcmV0Mg==   # rotation: both accepted\n"
        "webhook_tolerance = 1m\n"
        "idempotency_ttl = 2d\n"
        "idempotency_lock_timeout = 10s\n"
        "shm_cache_size = 1m\n"
        "housekeeper_interval = 250ms\n"
        "pending_reconcile_age = 1h\n"
        "max_body_size = 32k\n"
        "max_header_size = 4K\n"
        "client_timeout = 5s\n"
        "pid_file = /tmp/x.pid\n"
        "error_log = \"/tmp/error log.txt\"\n"
        "access_log = off\n"
        "log_level = debug\n");

    (void)state;
    assert_int_equal(c->listen.n, 2);
    assert_string_equal(c->listen.items[1], "[::1]:9001");
    assert_int_equal(c->workers, 3);
    assert_int_equal(c->worker_shutdown_timeout_ms, 7000);
    assert_string_equal(c->database, "postgresql://u:p@127.0.0.1:5432/db");
    assert_int_equal(c->db_pool_size, 8);
    assert_int_equal(c->db_queue_size, 99);
    assert_int_equal(c->db_timeout_ms, 2000);
    assert_string_equal(c->provider_url, "http://127.0.0.1:9999");
    assert_int_equal(c->provider_timeout_ms, 1500);
    assert_int_equal(c->breaker_threshold, 3);
    assert_int_equal(c->breaker_cooldown_ms, 120000);
    assert_int_equal(c->outage_pending_cap_cents, 5000);
    assert_int_equal(c->max_amount_cents, 700);
    assert_int_equal(c->currencies.n, 2);
    assert_string_equal(c->currencies.items[1], "CHF");
    assert_int_equal(c->webhook_secrets.n, 2);
    assert_string_equal(c->webhook_secrets.items[1], "whsec_c2VjcmV0Mg==");
    assert_int_equal(c->webhook_tolerance_ms, 60000);
    assert_int_equal(c->idempotency_ttl_ms, 2LL * 86400 * 1000);
    assert_int_equal(c->idempotency_lock_timeout_ms, 10000);
    assert_int_equal(c->shm_cache_size, 1048576);
    assert_int_equal(c->housekeeper_interval_ms, 250);
    assert_int_equal(c->pending_reconcile_age_ms, 3600000);
    assert_int_equal(c->max_body_size, 32768);
    assert_int_equal(c->max_header_size, 4096);
    assert_int_equal(c->client_timeout_ms, 5000);
    assert_string_equal(c->pid_file, "/tmp/x.pid");
    assert_string_equal(c->error_log, "/tmp/error log.txt");
    assert_string_equal(c->access_log, "off");
    assert_string_equal(c->log_level, "debug");
    conf_free(c);
}

static void
test_units(void **state)
{
    char err[256];
    int64_t v;

    (void)state;
    assert_int_equal(cf_parse_duration("800ms", &v, err, sizeof(err)), 0);
    assert_int_equal(v, 800);
    assert_int_equal(cf_parse_duration("5s", &v, err, sizeof(err)), 0);
    assert_int_equal(v, 5000);
    assert_int_equal(cf_parse_duration("5", &v, err, sizeof(err)), 0);
    assert_int_equal(v, 5000);
    assert_int_equal(cf_parse_duration("5m", &v, err, sizeof(err)), 0);
    assert_int_equal(v, 300000);
    assert_int_equal(cf_parse_duration("24h", &v, err, sizeof(err)), 0);
    assert_int_equal(v, 86400000);
    assert_int_equal(cf_parse_duration("1d", &v, err, sizeof(err)), 0);
    assert_int_equal(v, 86400000);
    assert_int_equal(cf_parse_duration("5 s", &v, err, sizeof(err)), -1);
    assert_int_equal(cf_parse_duration("-1s", &v, err, sizeof(err)), -1);
    assert_int_equal(cf_parse_duration("1.5s", &v, err, sizeof(err)), -1);
    assert_int_equal(cf_parse_duration("s", &v, err, sizeof(err)), -1);
    assert_int_equal(cf_parse_duration("5w", &v, err, sizeof(err)), -1);
    assert_int_equal(cf_parse_duration("99999999999999999999h", &v, err, sizeof(err)), -1);

    assert_int_equal(cf_parse_size("16k", &v, err, sizeof(err)), 0);
    assert_int_equal(v, 16384);
    assert_int_equal(cf_parse_size("64m", &v, err, sizeof(err)), 0);
    assert_int_equal(v, 64LL << 20);
    assert_int_equal(cf_parse_size("2G", &v, err, sizeof(err)), 0);
    assert_int_equal(v, 2LL << 30);
    assert_int_equal(cf_parse_size("100", &v, err, sizeof(err)), 0);
    assert_int_equal(v, 100);
    assert_int_equal(cf_parse_size("16kb", &v, err, sizeof(err)), -1);
    assert_int_equal(cf_parse_size("k", &v, err, sizeof(err)), -1);
    assert_int_equal(cf_parse_size("", &v, err, sizeof(err)), -1);
    assert_int_equal(cf_parse_size("9223372036854775807k", &v, err, sizeof(err)), -1);
}

static void
test_errors_have_line_numbers(void **state)
{
    (void)state;
    load_fails("workers = 2\nbogus = 1\n", "2: unknown key \"bogus\"");
    load_fails("\n\nworkers\n", "3: expected \"key = value\"");
    load_fails("= 3\n", "1: missing key before \"=\"");
    load_fails("workers =\n", "1: missing value for \"workers\"");
    load_fails("workers = 2\nworkers = 3\n", "2: duplicate key \"workers\"");
    load_fails("workers = two\n", "1: invalid number \"two\"");
    load_fails("workers = 0\n", "1: \"0\" is out of range for workers (1..512)");
    load_fails("provider_timeout = 5 parsecs\n",
               "1: invalid duration \"5 parsecs\" (use e.g. 800ms, 5s, 5m, 24h)");
    load_fails("max_body_size = lots\n", "1: invalid size \"lots\" (use e.g. 16k, 64m)");
    load_fails("currencies = EUR usd\n", "1: currency \"usd\" is not three upper-case letters");
    load_fails("webhook_secret = hunter2\n", "1: webhook secret must start with \"whsec_\"");
    load_fails("webhook_secret = whsec_!!!!\n",
               "1: webhook secret is not \"whsec_\" + padded base64");
    load_fails("webhook_secret = whsec_YQ\n",
               "1: webhook secret is not \"whsec_\" + padded base64");
    load_fails("log_level = loud\n", "1: log_level must be error, warn, info or debug");
    load_fails("provider_url = ftp://x\n", "1: provider_url must be an http:// or https:// URL");
    load_fails("provider_url = https://\n", "1: provider_url must be an http:// or https:// URL");
    load_fails("listen = 127.0.0.1:http\n",
               "1: invalid port in listen address \"127.0.0.1:http\"");
    load_fails("error_log = \"unterminated\n", "1: unterminated quoted value");
    load_fails("database = postgresql://h:5432/db?bogus=1\n",
               "1: invalid database connection string: invalid URI query parameter: \"bogus\"");
    load_fails("database = host=127.0.0.1 bogus=1\n",
               "1: invalid database connection string: invalid connection option \"bogus\"");
}

/* idempotency_lock_timeout must outlast a live checkout: checkout_begin,
 * the provider call and checkout_finish, provider_timeout + 2 * db_timeout. */
/* cors_allow_origins: empty by default; origins exactly as a browser sends
 * them in Origin (scheme://host[:port], no path, no default port), or "*"
 * alone; several per line or on several lines; from the environment too. */
static void
test_cors_origins(void **state)
{
    conf_t *c = load_ok("\n");

    (void)state;
    assert_int_equal(c->cors_allow_origins.n, 0);
    conf_free(c);
    c = load_ok(
        "cors_allow_origins = https://app.example.com, http://localhost:3000\n"
        "cors_allow_origins = http://[::1]:8080 http://127.0.0.1:65535 HTTPS://UI.Example\n");
    assert_int_equal(c->cors_allow_origins.n, 5);
    assert_string_equal(c->cors_allow_origins.items[0], "https://app.example.com");
    assert_string_equal(c->cors_allow_origins.items[2], "http://[::1]:8080");
    conf_free(c);
    c = load_ok("cors_allow_origins = *\n");
    assert_int_equal(c->cors_allow_origins.n, 1);
    conf_free(c);
    setenv("PAYMENTSD_CORS_ALLOW_ORIGINS", "https://env.example", 1);
    c = load_ok("cors_allow_origins = https://file.example\n");
    unsetenv("PAYMENTSD_CORS_ALLOW_ORIGINS");
    assert_int_equal(c->cors_allow_origins.n, 1);
    assert_string_equal(c->cors_allow_origins.items[0], "https://env.example");
    conf_free(c);

    load_fails("workers = 1\ncors_allow_origins = https://a.example/\n",
               "2: cors_allow_origins: \"https://a.example/\" is not an origin "
               "(http:// or https://, a host, an optional :port, nothing after)");
    load_fails("cors_allow_origins = https://a.example/app\n",
               "1: cors_allow_origins: \"https://a.example/app\" is not an origin "
               "(http:// or https://, a host, an optional :port, nothing after)");
    load_fails("cors_allow_origins = ftp://a.example\n",
               "1: cors_allow_origins: \"ftp://a.example\" is not an origin "
               "(http:// or https://, a host, an optional :port, nothing after)");
    load_fails("cors_allow_origins = a.example\n",
               "1: cors_allow_origins: \"a.example\" is not an origin "
               "(http:// or https://, a host, an optional :port, nothing after)");
    load_fails("cors_allow_origins = null\n",
               "1: cors_allow_origins: \"null\" is not an origin "
               "(http:// or https://, a host, an optional :port, nothing after)");
    load_fails("cors_allow_origins = https://\n",
               "1: cors_allow_origins: \"https://\" is not an origin "
               "(http:// or https://, a host, an optional :port, nothing after)");
    load_fails("cors_allow_origins = http://a..example\n",
               "1: cors_allow_origins: \"http://a..example\" is not an origin "
               "(http:// or https://, a host, an optional :port, nothing after)");
    load_fails("cors_allow_origins = http://user@a.example\n",
               "1: cors_allow_origins: \"http://user@a.example\" is not an origin "
               "(http:// or https://, a host, an optional :port, nothing after)");
    load_fails("cors_allow_origins = http://[::1\n",
               "1: cors_allow_origins: \"http://[::1\" is not an origin "
               "(http:// or https://, a host, an optional :port, nothing after)");
    load_fails("cors_allow_origins = http://a.example:0\n",
               "1: cors_allow_origins: invalid port in \"http://a.example:0\"");
    load_fails("cors_allow_origins = http://a.example:65536\n",
               "1: cors_allow_origins: invalid port in \"http://a.example:65536\"");
    load_fails("cors_allow_origins = http://a.example:08080\n",
               "1: cors_allow_origins: invalid port in \"http://a.example:08080\"");
    load_fails("cors_allow_origins = http://a.example:\n",
               "1: cors_allow_origins: invalid port in \"http://a.example:\"");
    load_fails("cors_allow_origins = https://a.example:443\n",
               "1: cors_allow_origins: \"https://a.example:443\": leave out the default "
               "port, as browsers do in Origin");
    load_fails("cors_allow_origins = http://a.example:80\n",
               "1: cors_allow_origins: \"http://a.example:80\": leave out the default "
               "port, as browsers do in Origin");
    load_fails("cors_allow_origins = https://a.example\ncors_allow_origins = *\n",
               "2: cors_allow_origins: \"*\" allows every origin: list it alone");
}

static void
test_cross_key_checks(void **state)
{
    (void)state;
    load_fails("provider_timeout = 10s\nidempotency_lock_timeout = 5s\n",
               " idempotency_lock_timeout (5000 ms) must be longer than "
               "provider_timeout + 2 * db_timeout (20000 ms)");
    /* Longer than provider_timeout alone is not enough any more. */
    load_fails("provider_timeout = 1s\ndb_timeout = 3s\nidempotency_lock_timeout = 5s\n",
               " idempotency_lock_timeout (5000 ms) must be longer than "
               "provider_timeout + 2 * db_timeout (7000 ms)");
    /* Equal is not longer. */
    load_fails("provider_timeout = 800ms\ndb_timeout = 5s\nidempotency_lock_timeout = 10800ms\n",
               " idempotency_lock_timeout (10800 ms) must be longer than "
               "provider_timeout + 2 * db_timeout (10800 ms)");
    conf_free(
        load_ok("provider_timeout = 800ms\ndb_timeout = 5s\nidempotency_lock_timeout = 10801ms\n"));
    conf_free(
        load_ok("provider_timeout = 500ms\ndb_timeout = 1s\nidempotency_lock_timeout = 3s\n"));
}

/* Floors (SPEC.md): idempotency_ttl at least a minute, since cached answers
 * expire a minute early for clock skew, and idempotency_lock_timeout at
 * least a second, whatever the other timeouts; less is refused with
 * file:line, also from the environment. */
static void
test_idempotency_floors(void **state)
{
    char err[1024];
    conf_t *c;

    (void)state;
    load_fails("workers = 2\nidempotency_ttl = 59s\n",
               "2: \"59s\" is out of range for idempotency_ttl (60000..31536000000 ms)");
    load_fails("idempotency_ttl = 2s\n",
               "1: \"2s\" is out of range for idempotency_ttl (60000..31536000000 ms)");
    c = load_ok("idempotency_ttl = 1m\n");
    assert_int_equal(c->idempotency_ttl_ms, 60000);
    conf_free(c);

    load_fails("provider_timeout = 1ms\ndb_timeout = 10ms\nidempotency_lock_timeout = 999ms\n",
               "3: \"999ms\" is out of range for idempotency_lock_timeout (1000..86400000 ms)");
    c = load_ok("provider_timeout = 1ms\ndb_timeout = 10ms\nidempotency_lock_timeout = 1s\n");
    assert_int_equal(c->idempotency_lock_timeout_ms, 1000);
    conf_free(c);

    setenv("PAYMENTSD_IDEMPOTENCY_TTL", "30s", 1);
    c = conf_load(NULL, err, sizeof(err));
    unsetenv("PAYMENTSD_IDEMPOTENCY_TTL");
    assert_null(c);
    assert_string_equal(err, "environment PAYMENTSD_IDEMPOTENCY_TTL: \"30s\" is out of range "
                             "for idempotency_ttl (60000..31536000000 ms)");
}

/* A reload must keep idempotency_lock_timeout above what the workers still
 * running (the old generation, draining) hold a key for with their own
 * provider_timeout and db_timeout, not only above the new conf's. */
static void
test_reload_check_uses_running_timeouts(void **state)
{
    conf_t *c =
        load_ok("provider_timeout = 500ms\ndb_timeout = 1s\nidempotency_lock_timeout = 3s\n");
    char err[1024] = "", want[1024];

    (void)state;
    assert_int_equal(conf_check_reload(c, 500, 1000, err, sizeof(err)), 0);
    assert_int_equal(conf_check_reload(c, 2000, 1000, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s: idempotency_lock_timeout (3000 ms) must be longer than "
             "provider_timeout + 2 * db_timeout of the running workers (2000 + 2 * 1000 = "
             "4000 ms)", c->path);
    assert_int_equal(strncmp(err, want, strlen(want)), 0);
    /* Equal is not longer. */
    assert_int_equal(conf_check_reload(c, 1000, 1000, err, sizeof(err)), -1);
    assert_int_equal(conf_check_reload(c, 999, 1000, err, sizeof(err)), 0);
    conf_free(c);
}

static void
test_missing_file(void **state)
{
    char err[1024];

    (void)state;
    assert_null(conf_load("/nonexistent/paymentsd.conf", err, sizeof(err)));
    assert_string_equal(err, "/nonexistent/paymentsd.conf: cannot open: No such file or directory");
}

static void
test_env_overrides(void **state)
{
    char err[1024];
    conf_t *c;

    (void)state;
    setenv("DATABASE_URL", "postgresql://env@127.0.0.1/x", 1);
    setenv("OUTAGE_PENDING_CAP_CENTS", "123", 1);
    setenv("PAYMENTSD_WORKERS", "5", 1);
    setenv("PAYMENTSD_WEBHOOK_SECRET", "whsec_YQ== whsec_Yg==", 1);
    c = load_ok("workers = 2\ndatabase = postgresql://file@127.0.0.1/y\n");
    assert_string_equal(c->database, "postgresql://env@127.0.0.1/x");
    assert_int_equal(c->outage_pending_cap_cents, 123);
    assert_int_equal(c->workers, 5);
    assert_int_equal(c->webhook_secrets.n, 2);
    conf_free(c);

    /* The prefixed name is the more specific one and wins over the alias. */
    setenv("PAYMENTSD_DATABASE", "postgresql://specific@127.0.0.1/z", 1);
    c = load_ok("");
    assert_string_equal(c->database, "postgresql://specific@127.0.0.1/z");
    conf_free(c);

    setenv("PAYMENTSD_WORKERS", "many", 1);
    c = conf_load(NULL, err, sizeof(err));
    assert_null(c);
    assert_string_equal(err, "environment PAYMENTSD_WORKERS: invalid number \"many\"");

    unsetenv("DATABASE_URL");
    unsetenv("OUTAGE_PENDING_CAP_CENTS");
    unsetenv("PAYMENTSD_WORKERS");
    unsetenv("PAYMENTSD_WEBHOOK_SECRET");
    unsetenv("PAYMENTSD_DATABASE");
}

/* auto: one per core, capped so that workers x db_pool_size <= 32 (a
 * reload's two generations stay under PostgreSQL's default 100
 * connections); a number is taken as written.  Regression (issue 12):
 * with big pools, auto opened one pool per core. */
static void
test_workers_auto(void **state)
{
    static const struct {
        const char *text;
        long cap;               /* the most workers: cores, or fewer */
    } cases[] = {
        { "workers = auto\n", 16 },
        { "workers = auto\ndb_pool_size = 16\n", 2 },
        { "workers = auto\ndb_pool_size = 32\n", 1 },
        { "workers = auto\ndb_pool_size = 256\n", 1 },
        { "workers = 40\ndb_pool_size = 32\n", 40 },
    };
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        conf_t *c = load_ok(cases[i].text);
        long want = strstr(cases[i].text, "auto") == NULL || ncpu > cases[i].cap ? cases[i].cap
                                                                                  : ncpu;

        assert_int_equal(c->workers, want);
        conf_free(c);
    }
}

static void
test_comments_and_quotes(void **state)
{
    conf_t *c = load_ok(
        "   # indented comment\n"
        "database = postgresql://a:b#c@127.0.0.1/d   # the # inside stays\n"
        "error_log = \"with # hash\"  # comment\n");

    (void)state;
    assert_string_equal(c->database, "postgresql://a:b#c@127.0.0.1/d");
    assert_string_equal(c->error_log, "/tmp/with # hash");   /* beside the conf file */
    conf_free(c);
}

/* Relative paths, from the file or the environment, are taken from the conf
 * file's directory or from the prefix (-p), never from the current
 * directory: "paymentsd -s reopen" run by logrotate from "/" must find the
 * master's pid file (issue 12, item 4). */
static void
test_relative_paths(void **state)
{
    const char *text = "pid_file = run/p.pid\nerror_log = logs/error.log\n"
                       "access_log = /abs/access.log\nresolv_conf = resolv.conf\n";
    char err[1024];
    conf_t *c;

    (void)state;
    assert_int_equal(chdir("/"), 0);
    c = load_ok(text);
    assert_string_equal(c->prefix, "/tmp");
    assert_string_equal(c->pid_file, "/tmp/run/p.pid");
    assert_string_equal(c->error_log, "/tmp/logs/error.log");
    assert_string_equal(c->access_log, "/abs/access.log");
    assert_string_equal(c->resolv_conf, "/tmp/resolv.conf");
    conf_free(c);

    c = conf_load_prefix(write_conf(text), "/srv/paymentsd/", err, sizeof(err));
    unlink(path);
    assert_non_null(c);
    assert_string_equal(c->prefix, "/srv/paymentsd/");
    assert_string_equal(c->pid_file, "/srv/paymentsd/run/p.pid");
    conf_free(c);

    /* the log keywords are not paths; the environment's paths are */
    setenv("PAYMENTSD_PID_FILE", "env.pid", 1);
    c = load_ok("error_log = stderr\naccess_log = stdout\n");
    assert_string_equal(c->error_log, "stderr");
    assert_string_equal(c->access_log, "stdout");
    assert_string_equal(c->pid_file, "/tmp/env.pid");
    conf_free(c);
    unsetenv("PAYMENTSD_PID_FILE");
    c = load_ok("access_log = off\n");
    assert_string_equal(c->access_log, "off");
    assert_string_equal(c->pid_file, "/tmp/var/paymentsd.pid");     /* the default */
    conf_free(c);
}

/* Two listen lines for one port passed -t, and the master then failed to
 * bind the second (issue 12, item 4). */
static void
test_duplicate_listen(void **state)
{
    conf_t *c;

    (void)state;
    load_fails("listen = 127.0.0.1:9000\nworkers = 1\nlisten = 127.0.0.1:9000\n",
               "3: listen \"127.0.0.1:9000\" duplicates \"127.0.0.1:9000\": "
               "the port cannot be bound twice");
    load_fails("listen = 9000\nlisten = 127.0.0.1:9000\n",
               "2: listen \"127.0.0.1:9000\" duplicates \"9000\": the port cannot be bound twice");
    load_fails("listen = 127.0.0.1:9000 0.0.0.0:9000\n",
               "1: listen \"0.0.0.0:9000\" overlaps \"127.0.0.1:9000\": "
               "the port cannot be bound twice");
    load_fails(
        "listen = [::]:9000\nlisten = 127.0.0.1:9000\n",
        "2: listen \"127.0.0.1:9000\" overlaps \"[::]:9000\": the port cannot be bound twice");
    c = load_ok("listen = 127.0.0.1:9000\nlisten = 127.0.0.1:9001\nlisten = 127.0.0.2:9000\n"
                "listen = [::1]:9000\n");
    assert_int_equal(c->listen.n, 4);
    conf_free(c);
}

/* conf_dump (-T) as text. */
static char *
dump(const conf_t *c)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    assert_non_null(f);
    conf_dump(c, f);
    fclose(f);
    return text;
}

/* -T writes every key in the file's syntax: loading what it wrote gives the
 * same conf again, and no secret is in it. */
static void
test_dump(void **state)
{
    conf_t *c = load_ok("listen = 127.0.0.1:9000\nlisten = 127.0.0.1:9001\n"
                        "database = postgresql://app:s3cret@db.example:5433/pay?sslmode=require\n"
                        "webhook_secret = whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n"
                        "max_body_size = 32768\nprovider_timeout = 1500ms\nidempotency_ttl = 48h\n"
                        "error_log = \"logs/my # error.log\"\n");
    conf_t *again;
    char *text, *text2, err[1024];

    (void)state;
    text = dump(c);
    assert_non_null(strstr(text, "listen = 127.0.0.1:9000\nlisten = 127.0.0.1:9001\n"));
    assert_non_null(strstr(text, "\nmax_body_size = 32k\n"));
    assert_non_null(strstr(text, "\nprovider_timeout = 1500ms\n"));
    assert_non_null(strstr(text, "\nidempotency_ttl = 2d\n"));
    assert_non_null(strstr(text, "\ncurrencies = EUR USD GBP\n"));
    assert_non_null(strstr(text, "\nerror_log = \"/tmp/logs/my # error.log\"\n"));
    assert_non_null(strstr(text, "\n# webhook_secret: 1 set, not shown\n"));
    assert_non_null(strstr(text, "password='********'"));
    assert_non_null(strstr(text, "host='db.example'"));
    assert_null(strstr(text, "s3cret"));
    assert_null(strstr(text, "whsec_"));

    again = conf_load(write_conf(text), err, sizeof(err));
    unlink(path);
    if (again == NULL)
        fail_msg("the dump does not load: %s", err);
    assert_int_equal(again->max_body_size, c->max_body_size);
    assert_string_equal(again->error_log, c->error_log);
    assert_int_equal(again->listen.n, 2);
    conf_free(again);
    conf_free(c);
    free(text);

    /* without secrets, the dump of the dump is the dump (but for the header,
     * which names the file) */
    c = load_ok("listen = 127.0.0.1:9000\nlisten = 9001\nworkers = 3\ndb_timeout = 2s\n"
                "access_log = off\nmax_header_size = 1000000\n");
    text = dump(c);
    again = conf_load(write_conf(text), err, sizeof(err));
    unlink(path);
    assert_non_null(again);
    text2 = dump(again);
    assert_string_equal(strstr(text2, "\nlisten = "), strstr(text, "\nlisten = "));
    free(text);
    free(text2);
    conf_free(again);
    conf_free(c);
}

static void
test_reload_keeps_restart_only_keys(void **state)
{
    conf_t *old = load_ok("listen = 127.0.0.1:9000\nshm_cache_size = 1m\nworkers = 2\n");
    conf_t *next = load_ok("listen = 127.0.0.1:9100\nshm_cache_size = 2m\nworkers = 4\n");

    (void)state;
    conf_keep_restart_only(next, old);
    assert_string_equal(next->listen.items[0], "127.0.0.1:9000");
    assert_int_equal(next->shm_cache_size, 1048576);
    assert_int_equal(next->workers, 4);     /* reloadable: the new value */
    conf_free(old);
    conf_free(next);
}

/* A CA certificate (self-signed, EC P-256), only ever parsed here. */
static const char ca_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBgzCCASmgAwIBAgIUAaiNlnTFTXlO0TvWRRNIpKZU1AwwCgYIKoZIzj0EAwIw\n"
    "FzEVMBMGA1UEAwwMdGVzdF9jb25mIENBMB4XDTI2MTIwMjA5MjA0MVoXDTM2MTEy\n"
    "OTA5MjA0MVowFzEVMBMGA1UEAwwMdGVzdF9jb25mIENBMFkwEwYHKoZIzj0CAQYI\n"
    "KoZIzj0DAQcDQgAEMUsi7ZlB1F7AW8Rzr6tkCiQ+LhjL2NL5MTxbFluiOK9E+p7c\n"
    "cm/wLXJc0T6fCxXX0oRgBevubbz9NbAeIVSlMaNTMFEwHQYDVR0OBBYEFBNZiyT1\n"
    "0W1k1ilPytszFSdweVw6MB8GA1UdIwQYMBaAFBNZiyT10W1k1ilPytszFSdweVw6\n"
    "MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAMMLJTA8T3L5/hz6\n"
    "gt4fpAfWRgDkNC2Ny7Sx4WhpKGs3AiBL/I7ObIGQqRgWfWcpyskjXeikGl5aYFj0\n"
    "ZTMmv26Xkg==\n"
    "-----END CERTIFICATE-----\n";

/* Write ca_pem to a fresh temporary file; its name goes in ca (64 bytes). */
static void
write_ca(char *ca)
{
    int fd;

    snprintf(ca, 64, "/tmp/test_conf_ca.XXXXXX");
    fd = mkstemp(ca);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, ca_pem, strlen(ca_pem)), (ssize_t)strlen(ca_pem));
    close(fd);
}

/* https:// provider URLs, and provider_ca_file: resolved beside the conf
 * file when relative, and checked (readable, a PEM certificate) with the
 * line that set it. */
static void
test_provider_tls_keys(void **state)
{
    char ca[64], text[256], want[256], err[1024];
    const char *base;
    conf_t *c;

    (void)state;
    c = load_ok("provider_url = https://provider.example:8443\n");
    assert_string_equal(c->provider_url, "https://provider.example:8443");
    assert_null(c->provider_ca_file);
    conf_free(c);

    write_ca(ca);
    base = strrchr(ca, '/') + 1;

    /* relative: beside the conf file (both in /tmp), not in the cwd */
    snprintf(text, sizeof(text), "provider_url = https://p.example\nprovider_ca_file = %s\n", base);
    c = load_ok(text);
    assert_string_equal(c->provider_ca_file, ca);
    conf_free(c);
    snprintf(text, sizeof(text), "provider_ca_file = %s\n", ca);
    c = load_ok(text);
    assert_string_equal(c->provider_ca_file, ca);
    conf_free(c);

    load_fails("provider_url = https://p.example\n\nprovider_ca_file = /nonexistent/ca.pem\n",
               "3: provider_ca_file /nonexistent/ca.pem: No such file or directory");
    load_fails("  provider_ca_file=/nonexistent/ca.pem\n",
               "1: provider_ca_file /nonexistent/ca.pem: No such file or directory");
    load_fails("provider_ca_file = /etc/hostname\n",
               "1: provider_ca_file /etc/hostname: it holds no PEM certificate");

    setenv("PAYMENTSD_PROVIDER_CA_FILE", "/nonexistent/env.pem", 1);
    c = conf_load(write_conf(""), err, sizeof(err));
    unlink(path);
    assert_null(c);
    snprintf(want, sizeof(want),
             "environment PAYMENTSD_PROVIDER_CA_FILE: provider_ca_file /nonexistent/env.pem: "
             "No such file or directory");
    assert_string_equal(err, want);
    setenv("PAYMENTSD_PROVIDER_CA_FILE", "", 1);   /* empty: none */
    c = load_ok("provider_ca_file = /nonexistent/ca.pem\n");
    assert_null(c->provider_ca_file);
    conf_free(c);
    unsetenv("PAYMENTSD_PROVIDER_CA_FILE");
    unlink(ca);
}

/* docs_root: installed Swagger UI by default, beside the conf file when
 * relative, and never empty (that would be the conf file's own folder). */
static void
test_docs_root(void **state)
{
    char err[1024];
    conf_t *c;

    (void)state;
    c = load_ok("");
    assert_string_equal(c->docs_root, PKGDATADIR "/swagger-ui");
    conf_free(c);
    c = load_ok("docs_root = ../vendor/swagger-ui\n");
    assert_string_equal(c->docs_root, "/tmp/../vendor/swagger-ui");
    conf_free(c);
    c = load_ok("docs_root = /srv/ui\n");
    assert_string_equal(c->docs_root, "/srv/ui");
    conf_free(c);
    setenv("PAYMENTSD_DOCS_ROOT", "", 1);
    c = conf_load(write_conf(""), err, sizeof(err));
    unlink(path);
    assert_null(c);
    assert_string_equal(err, "environment PAYMENTSD_DOCS_ROOT: docs_root must name a folder");
    unsetenv("PAYMENTSD_DOCS_ROOT");
}

static int warnings_seen;

static void
count_warning(const char *msg)
{
    (void)msg;
    warnings_seen++;
}

static void
test_warns_without_webhook_secret(void **state)
{
    conf_t *c = load_ok("");

    (void)state;
    warnings_seen = 0;
    assert_int_equal(conf_warnings(c, count_warning), 1);
    assert_int_equal(warnings_seen, 1);
    conf_free(c);
}

static void
test_warns_of_unused_ca_file(void **state)
{
    char ca[64], text[256];
    conf_t *c;

    (void)state;
    write_ca(ca);
    snprintf(text, sizeof(text), "webhook_secret = whsec_c2VjcmV0Mg==\n"
             "provider_url = http://p.example\nprovider_ca_file = %s\n", ca);
    c = load_ok(text);
    unlink(ca);
    warnings_seen = 0;
    assert_int_equal(conf_warnings(c, count_warning), 1);
    conf_free(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_key),
        cmocka_unit_test(test_units),
        cmocka_unit_test(test_errors_have_line_numbers),
        cmocka_unit_test(test_cors_origins),
        cmocka_unit_test(test_cross_key_checks),
        cmocka_unit_test(test_idempotency_floors),
        cmocka_unit_test(test_reload_check_uses_running_timeouts),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_env_overrides),
        cmocka_unit_test(test_workers_auto),
        cmocka_unit_test(test_comments_and_quotes),
        cmocka_unit_test(test_relative_paths),
        cmocka_unit_test(test_duplicate_listen),
        cmocka_unit_test(test_dump),
        cmocka_unit_test(test_reload_keeps_restart_only_keys),
        cmocka_unit_test(test_warns_without_webhook_secret),
        cmocka_unit_test(test_provider_tls_keys),
        cmocka_unit_test(test_warns_of_unused_ca_file),
        cmocka_unit_test(test_docs_root),
    };

    return cmocka_run_group_tests_name("conf", tests, NULL, NULL);
}
