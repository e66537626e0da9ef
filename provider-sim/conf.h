/*
 * conf: provider-sim's configuration, one immutable struct.
 *
 * Loaded with common/cfparse from the same "key = value" format as
 * paymentsd.conf, with PROVIDER_SIM_<KEY> environment overrides.  The
 * webhook secret and URL are checked and decoded at load, so a bad value is
 * reported by -t with its line rather than at the first delivery.
 * conf/provider-sim.conf documents the same keys; keep the two in step.
 */
#ifndef PD_SIM_CONF_H
#define PD_SIM_CONF_H

#include <stdint.h>

#include "common/cfparse.h"
#include "common/whsig.h"
#include "provider-sim/acl.h"

typedef struct sim_conf {
    char *path;                         /* the file it came from, or NULL */

    char *listen;                       /* "host:port" */
    char *webhook_url;                  /* http://host[:port]/path */
    char *webhook_secret;               /* whsec_... */
    double decline_rate;                /* 0..1 */
    double timeout_rate;                /* 0..1 */
    int64_t latency_ms;
    int64_t seed;
    int64_t hold_ms;                    /* how long an unanswered charge is held */
    int64_t webhook_delay_ms;
    int64_t webhook_max_attempts;
    int64_t webhook_backoff_ms;
    int64_t webhook_backoff_max_ms;
    int64_t webhook_timeout_ms;
    char *resolv_conf;                  /* nameservers for webhook_url's host (evdns) */
    int64_t resolve_interval_ms;        /* how often that host is resolved again */
    int outage;
    char *log_level;
    char *error_log;
    char *pid_file;                     /* NULL: none */
    cf_list_t admin_allow;              /* who may use /admin: addresses and CIDRs */
    char *state_file;                   /* the charges' journal; NULL: memory only */
    char *tls_cert;                     /* PEM certificate chain; NULL: plain HTTP */
    char *tls_key;                      /* PEM private key; set exactly when tls_cert is */

    /* Derived at load from the keys above. */
    whsig_key_t key;                    /* decoded webhook_secret */
    char *webhook_host;                 /* as written in the URL, no brackets */
    int webhook_port;
    char *webhook_path;                 /* path and query, at least "/" */
    sim_acl_t *admin_acl;               /* admin_allow, parsed */
} sim_conf_t;

/* Where the conf is read from when -c is not given and the file exists. */
#define SIM_CONF_DEFAULT_PATH "conf/provider-sim.conf"

/*
 * Load path (NULL: defaults and environment only).  Returns a new conf that
 * the caller frees with sim_conf_free(), or NULL with "file:line: message"
 * in err.
 */
sim_conf_t *sim_conf_load(const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Free a conf from sim_conf_load (NULL is fine); wipes the decoded key. */
void sim_conf_free(sim_conf_t *conf);

#endif
