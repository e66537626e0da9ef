/*
 * provider-sim: command line.
 *
 *   provider-sim [-c FILE]        run the simulated payment provider
 *   provider-sim -t [-c FILE]     test the configuration and exit
 *   provider-sim sign --secret whsec_... --id ID [--timestamp T] < body
 *                                 print the three webhook-* headers for body
 *
 * Without -c, conf/provider-sim.conf is read when it exists, else the
 * built-in defaults (PROVIDER_SIM_<KEY> variables apply either way).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/crypto.h>

#include "common/log.h"
#include "common/whsig.h"
#include "provider-sim/conf.h"
#include "provider-sim/server.h"
#include "provider-sim/tls.h"

#define SIGN_BODY_MAX (64 * 1024 * 1024)

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: provider-sim [-c FILE] [-t] [-v] [-h]\n"
            "       provider-sim sign --secret whsec_... --id ID [--timestamp T] < body\n"
            "  -c FILE   configuration file (default " SIM_CONF_DEFAULT_PATH " if present)\n"
            "  -t        test the configuration and exit\n"
            "  -v        print the version and exit\n"
            "  -h        this help\n"
            "  sign      print webhook-id, webhook-timestamp and webhook-signature header\n"
            "            lines for the body read from standard input, as sent (use\n"
            "            curl --data-binary @file: the bytes signed must be the bytes sent)\n");
}

/* Read all of standard input; returns the bytes (caller frees) or NULL. */
static char *
read_stdin(size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);

    while (buf != NULL) {
        size_t got = fread(buf + n, 1, cap - n, stdin);

        n += got;
        if (got == 0) {
            if (ferror(stdin)) {
                free(buf);
                return NULL;
            }
            *len = n;
            return buf;
        }
        if (n == cap) {
            char *bigger = cap < SIGN_BODY_MAX ? realloc(buf, cap * 2) : NULL;

            if (bigger == NULL)
                free(buf);
            buf = bigger;
            cap *= 2;
        }
    }
    return NULL;
}

static int
sign_main(int argc, char **argv)
{
    static const struct option options[] = {
        { "secret", required_argument, NULL, 's' },
        { "id", required_argument, NULL, 'i' },
        { "timestamp", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    const char *secret = NULL, *id = NULL, *ts_arg = NULL;
    char err[256], sig[WHSIG_SIGNATURE_SIZE];
    whsig_key_t key;
    int64_t ts;
    size_t len = 0;
    char *body;
    int opt, rc;

    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (opt) {
        case 's': secret = optarg; break;
        case 'i': id = optarg; break;
        case 't': ts_arg = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (optind < argc || secret == NULL || id == NULL) {
        fprintf(stderr, "provider-sim sign: --secret and --id are required\n");
        usage(stderr);
        return 1;
    }
    if (ts_arg != NULL) {
        size_t n = strlen(ts_arg);

        if (n == 0 || n > WHSIG_TIMESTAMP_MAX || strspn(ts_arg, "0123456789") != n) {
            fprintf(stderr, "provider-sim sign: --timestamp must be Unix seconds (digits only)\n");
            return 1;
        }
        ts = strtoll(ts_arg, NULL, 10);
    } else {
        ts = (int64_t)time(NULL);
    }
    if (whsig_key_parse(secret, &key, err, sizeof(err)) < 0) {
        fprintf(stderr, "provider-sim sign: %s\n", err);
        return 1;
    }
    body = read_stdin(&len);
    if (body == NULL) {
        fprintf(stderr, "provider-sim sign: cannot read the body from standard input "
                "(at most %d bytes)\n", SIGN_BODY_MAX);
        OPENSSL_cleanse(&key, sizeof(key));
        return 1;
    }
    rc = whsig_sign(&key, id, ts, body, len, sig);
    OPENSSL_cleanse(&key, sizeof(key));
    free(body);
    if (rc < 0) {
        fprintf(stderr, "provider-sim sign: cannot sign: the id must be 1..%d characters "
                "without control characters\n", WHSIG_ID_MAX);
        return 1;
    }
    printf("webhook-id: %s\nwebhook-timestamp: %lld\nwebhook-signature: %s\n",
           id, (long long)ts, sig);
    return fflush(stdout) == 0 ? 0 : 1;
}

int
main(int argc, char **argv)
{
    const char *conf_path = NULL;
    char err[1024];
    int test_only = 0, opt, rc;
    sim_conf_t *conf;

    if (argc >= 2 && strcmp(argv[1], "sign") == 0)
        return sign_main(argc - 1, argv + 1);
    while ((opt = getopt(argc, argv, "c:tvh")) != -1) {
        switch (opt) {
        case 'c': conf_path = optarg; break;
        case 't': test_only = 1; break;
        case 'v': printf("provider-sim %s\n", PACKAGE_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 1;
    }
    if (conf_path == NULL && access(SIM_CONF_DEFAULT_PATH, F_OK) == 0)
        conf_path = SIM_CONF_DEFAULT_PATH;

    conf = sim_conf_load(conf_path, err, sizeof(err));
    if (conf == NULL) {
        fprintf(stderr, "%s\n", err);
        if (test_only)
            fprintf(stderr, "provider-sim: configuration %s test failed\n",
                    conf_path ? conf_path : "(defaults)");
        return 1;
    }
    if (test_only && conf->tls_cert != NULL) {
        /* Load the certificate and key too: -t then catches what start would. */
        sim_tls_t *tls = sim_tls_new(conf->tls_cert, conf->tls_key, err, sizeof(err));

        if (tls == NULL) {
            fprintf(stderr, "%s\nprovider-sim: configuration %s test failed\n", err,
                    conf_path ? conf_path : "(defaults)");
            sim_conf_free(conf);
            return 1;
        }
        sim_tls_free(tls);
    }
    if (test_only) {
        fprintf(stderr, "provider-sim: configuration %s test is successful\n",
                conf_path ? conf_path : "(defaults)");
        sim_conf_free(conf);
        return 0;
    }
    log_set_role("provider-sim");
    if (log_open(conf->error_log, NULL, (log_level_t)log_level_parse(conf->log_level)) < 0) {
        fprintf(stderr, "provider-sim: cannot open the error log %s: %s\n",
                conf->error_log, strerror(errno));
        sim_conf_free(conf);
        return 1;
    }
    /* A client that hangs up must not kill us with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    event_set_log_callback(log_libevent);
    rc = sim_server_run(conf);
    sim_conf_free(conf);
    return rc;
}
