/*
 * paymentsd: command line.
 *
 *   paymentsd [-c FILE]                   run (master in the foreground)
 *   paymentsd -t [-c FILE]                test the configuration and exit
 *   paymentsd -s reload|quit|stop|reopen  signal the running master
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/conf.h"
#include "common/log.h"
#include "common/proctitle.h"
#include "master/master.h"

#define DEFAULT_CONF "conf/paymentsd.conf"

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: paymentsd [-c FILE] [-t] [-s reload|quit|stop|reopen] [-v] [-h]\n"
            "  -c FILE   configuration file (default " DEFAULT_CONF ")\n"
            "  -t        test the configuration and exit\n"
            "  -s SIGNAL send a signal to the running master: reload (SIGHUP),\n"
            "            quit (SIGQUIT, graceful), stop (SIGTERM, fast), reopen (SIGUSR1)\n"
            "  -v        print the version and exit\n"
            "  -h        this help\n");
}

static void
print_warning(const char *msg)
{
    fprintf(stderr, "paymentsd: warning: %s\n", msg);
}

static int
send_signal(const conf_t *conf, const char *name)
{
    static const struct { const char *name; int sig; } names[] = {
        { "reload", SIGHUP }, { "quit", SIGQUIT }, { "stop", SIGTERM }, { "reopen", SIGUSR1 }
    };
    FILE *f;
    long pid;
    int sig = 0;

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(name, names[i].name) == 0)
            sig = names[i].sig;
    }
    if (sig == 0) {
        fprintf(stderr, "paymentsd: unknown signal \"%s\" (use reload, quit, stop or reopen)\n", name);
        return 1;
    }
    f = fopen(conf->pid_file, "r");
    if (f == NULL) {
        fprintf(stderr, "paymentsd: open(%s) failed: %s (is paymentsd running?)\n",
                conf->pid_file, strerror(errno));
        return 1;
    }
    if (fscanf(f, "%ld", &pid) != 1 || pid <= 1) {
        fclose(f);
        fprintf(stderr, "paymentsd: %s holds no valid pid\n", conf->pid_file);
        return 1;
    }
    fclose(f);
    if (kill((pid_t)pid, sig) < 0) {
        fprintf(stderr, "paymentsd: kill(%ld, %s) failed: %s\n", pid, name, strerror(errno));
        return 1;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    char *conf_path = NULL, *signal_name = NULL, err[1024];
    int test_only = 0, opt, rc;
    conf_t *conf;

    while ((opt = getopt(argc, argv, "c:ts:vh")) != -1) {
        switch (opt) {
        case 'c': free(conf_path); conf_path = strdup(optarg); break;
        case 't': test_only = 1; break;
        case 's': free(signal_name); signal_name = strdup(optarg); break;
        case 'v': printf("paymentsd %s\n", PACKAGE_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 1;
    }
    if (conf_path == NULL)
        conf_path = strdup(DEFAULT_CONF);
    /* Options are copied: the title overwrites the argv area from here on. */
    proctitle_init(argc, argv);

    conf = conf_load(conf_path, err, sizeof(err));
    if (conf == NULL) {
        fprintf(stderr, "%s\n", err);
        if (test_only)
            fprintf(stderr, "paymentsd: configuration file %s test failed\n", conf_path);
        rc = 1;
        goto done;
    }
    if (test_only) {
        conf_warnings(conf, print_warning);
        fprintf(stderr, "paymentsd: configuration file %s test is successful\n", conf_path);
        conf_free(conf);
        rc = 0;
        goto done;
    }
    if (signal_name != NULL) {
        rc = send_signal(conf, signal_name);
        conf_free(conf);
        goto done;
    }
    if (log_open(conf->error_log, conf->access_log,
                 (log_level_t)log_level_parse(conf->log_level)) < 0) {
        fprintf(stderr, "paymentsd: cannot open the logs (%s, %s): %s\n",
                conf->error_log, conf->access_log, strerror(errno));
        conf_free(conf);
        rc = PD_EXIT_FATAL;
        goto done;
    }
    conf_warnings(conf, print_warning);
    rc = master_run(conf_path, conf);
done:
    free(conf_path);
    free(signal_name);
    return rc;
}
