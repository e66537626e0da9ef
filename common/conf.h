/*
 * conf: paymentsd's configuration, one immutable struct.
 *
 * conf_load() builds a fresh conf_t from defaults, the file and the
 * environment, and validates it as a whole.  Nothing changes a conf_t after
 * that: a reload builds a new one and hands it to new workers, the old one
 * stays with the old workers.  Pass it around as const conf_t *.
 */
#ifndef PD_CONF_H
#define PD_CONF_H

#include <stdint.h>
#include <stdio.h>

#include "common/cfparse.h"

typedef struct conf {
    char *path;                         /* the file it came from */
    char *prefix;                       /* absolute; relative paths were taken from it */

    cf_list_t listen;                   /* "host:port" each */
    int64_t workers;                    /* "auto" = one per core */
    int64_t worker_shutdown_timeout_ms;

    char *database;                     /* libpq URI or conninfo */
    int64_t db_pool_size;
    int64_t db_batch_max;
    int64_t db_queue_size;
    int64_t db_timeout_ms;

    char *provider_url;                 /* http:// or https:// */
    char *provider_ca_file;             /* https: trusted CAs (PEM); NULL = the system's */
    int64_t provider_timeout_ms;
    int64_t breaker_threshold;
    int64_t breaker_cooldown_ms;

    char *resolv_conf;                  /* nameservers for host names (evdns) */
    int64_t resolve_interval_ms;        /* how often host names are resolved again */

    int64_t outage_pending_cap_cents;
    int64_t max_amount_cents;
    cf_list_t currencies;

    cf_list_t webhook_secrets;
    int64_t webhook_tolerance_ms;

    int64_t idempotency_ttl_ms;
    int64_t idempotency_lock_timeout_ms;
    int64_t shm_cache_size;

    int64_t housekeeper_interval_ms;
    int64_t pending_reconcile_age_ms;

    int64_t max_body_size;
    int64_t max_header_size;
    int64_t client_timeout_ms;
    cf_list_t cors_allow_origins;       /* "scheme://host[:port]" each, or "*"; empty: no CORS */

    char *pid_file;
    char *error_log;
    char *access_log;
    char *log_level;

    char *docs_root;                    /* Swagger UI's files, served at /docs */
} conf_t;

/*
 * Load path (NULL: defaults and environment only).  Returns a new conf, or
 * NULL with "file:line: message" in err.  Relative paths are taken from the
 * directory of path.
 */
conf_t *conf_load(const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * conf_load, with relative paths in the conf (pid_file, logs, every key
 * marked CF_PATH, from the file or the environment) made absolute from
 * prefix (-p); NULL: from the conf file's directory (the current directory
 * when path is NULL).  Never from the current directory otherwise.
 */
conf_t *conf_load_prefix(const char *path, const char *prefix, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void conf_free(conf_t *conf);

/*
 * For a reload: give next the values of old for every key that a reload
 * cannot change, and log a warning for each one that was changed.
 */
void conf_keep_restart_only(conf_t *next, const conf_t *old);

/*
 * For a reload: may next replace a conf whose processes still run with
 * provider_timeout_ms and db_timeout_ms (the longest of every generation
 * still running or draining)?  Those finish their checkouts with their own
 * timeouts while next's workers and housekeeper take a key over as stale
 * after next's idempotency_lock_timeout, so that must be longer than their
 * provider_timeout + 2 * db_timeout too.  Returns 0, or -1 with
 * "file: message" in err.
 */
int conf_check_reload(const conf_t *next, int64_t provider_timeout_ms, int64_t db_timeout_ms,
                      char *err, size_t errlen) __attribute__((warn_unused_result));

/* Write conf to out as a conf file would say it (-T): every key with its
 * effective value.  Secrets are not written: the webhook secrets only as a
 * count, the database password as stars. */
void conf_dump(const conf_t *conf, FILE *out);

/* Warnings about a valid but risky conf (e.g. no webhook secret), one per
 * call of emit; returns how many. */
int conf_warnings(const conf_t *conf, void (*emit)(const char *msg));

#endif
