/*
 * paymentsd: command line, as nginx's.
 *
 *   paymentsd [-p PREFIX] [-c FILE]       run (master in the foreground)
 *   paymentsd -t | -T [-c FILE]           test the configuration (-T: and print it)
 *   paymentsd -s reload|quit|stop|reopen  signal the running master
 *   paymentsd -v | -V                     version (-V: and build options)
 *
 * Relative paths in the conf are taken from PREFIX, else from the conf
 * file's directory (common/conf.h), so every command finds the same pid
 * file whatever its current directory.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <json-c/json_c_version.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <openssl/opensslv.h>

#include "common/conf.h"
#include "common/exitcode.h"
#include "common/log.h"
#include "common/pidfile.h"
#include "common/proctitle.h"
#include "master/master.h"

#define DEFAULT_CONF "conf/paymentsd.conf"

static void
usage(FILE *out)
{
    fprintf(out, "usage: paymentsd [-p PREFIX] [-c FILE] [-t | -T] [-s reload|quit|stop|reopen] "
                 "[-v | -V] [-h]\n"
                 "  -p PREFIX relative paths in the conf, and a relative -c FILE, are taken from\n"
                 "            PREFIX (default: the conf file's directory)\n"
                 "  -c FILE   configuration file (default " DEFAULT_CONF ", under PREFIX with -p)\n"
                 "  -t        test the configuration and exit\n"
                 "  -T        test the configuration, print the effective one and exit\n"
                 "  -s SIGNAL send a signal to the running master: reload (SIGHUP),\n"
                 "            quit (SIGQUIT, graceful), stop (SIGTERM, fast), reopen (SIGUSR1)\n"
                 "  -v        print the version and exit\n"
                 "  -V        print the version and the build options and exit\n"
                 "  -h        this help\n");
}

/* -V, as nginx -V: what was built, with what, and how. */
static void
print_build(void)
{
    printf("paymentsd version: paymentsd/%s\n", PACKAGE_VERSION);
#if defined(__clang__)
    printf("built by clang %s\n", __clang_version__);
#elif defined(__GNUC__)
    printf("built by gcc %s\n", __VERSION__);
#endif
    printf("built with libevent %s (running with %s)\n", LIBEVENT_VERSION, event_get_version());
    printf("built with json-c %s (running with %s)\n", JSON_C_VERSION, json_c_version());
    printf("built with %s (running with %s)\n", OPENSSL_VERSION_TEXT,
           OpenSSL_version(OPENSSL_VERSION));
    printf("running with libpq %d.%d\n", PQlibVersion() / 10000, PQlibVersion() % 10000);
    printf("sanitizers: %s\n", PD_SANITIZERS);
    printf("configure arguments:%s\n", PD_CONFIGURE_ARGS);
}

/* prefix + "/" + path for a relative path under -p, else a copy of path. */
static char *
under_prefix(const char *prefix, const char *path)
{
    char *full;

    if (prefix == NULL || path[0] == '/')
        return strdup(path);
    if ((full = malloc(strlen(prefix) + strlen(path) + 2)) != NULL)
        sprintf(full, "%s/%s", prefix, path);
    return full;
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
    pid_t pid;
    int sig = 0;

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(name, names[i].name) == 0)
            sig = names[i].sig;
    }
    if (sig == 0) {
        fprintf(stderr, "paymentsd: unknown signal \"%s\" (use reload, quit, stop or reopen)\n",
                name);
        return 1;
    }
    pid = pidfile_read(conf->pid_file);
    if (pid < 0 && errno == EINVAL) {
        fprintf(stderr, "paymentsd: %s holds no valid pid\n", conf->pid_file);
        return 1;
    }
    if (pid < 0) {
        fprintf(stderr, "paymentsd: open(%s) failed: %s (is paymentsd running?)\n",
                conf->pid_file, strerror(errno));
        return 1;
    }
    if (kill(pid, sig) < 0) {
        fprintf(stderr, "paymentsd: kill(%ld, %s) failed: %s%s\n", (long)pid, name, strerror(errno),
                errno == ESRCH ? " (a stale pid file: is paymentsd running?)" : "");
        return 1;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    char *conf_arg = NULL, *conf_path = NULL, *prefix = NULL, *signal_name = NULL, err[1024];
    int test_only = 0, dump = 0, info = 0, opt, rc;
    conf_t *conf;

    while ((opt = getopt(argc, argv, "c:p:tTs:vVh")) != -1) {
        switch (opt) {
        case 'c': free(conf_arg); conf_arg = strdup(optarg); break;
        case 'p': free(prefix); prefix = strdup(optarg); break;
        case 't': test_only = 1; break;
        case 'T': test_only = dump = 1; break;
        case 's': free(signal_name); signal_name = strdup(optarg); break;
        case 'v': case 'V': case 'h': info = opt; break;
        default: info = '?'; break;
        }
    }
    if (info == 0 && (optind < argc || (prefix != NULL && prefix[0] == '\0')))
        info = '?';
    if (info == 0)
        conf_path = under_prefix(prefix, conf_arg != NULL ? conf_arg : DEFAULT_CONF);
    free(conf_arg);
    if (info != 0 || conf_path == NULL) {
        if (info == 'v')
            printf("paymentsd %s\n", PACKAGE_VERSION);
        else if (info == 'V')
            print_build();
        else
            usage(info == 'h' ? stdout : stderr);
        rc = info == 'v' || info == 'V' || info == 'h' ? 0 : 1;
        goto done;
    }
    /* Options are copied: the title overwrites the argv area from here on. */
    proctitle_init(argc, argv);

    conf = conf_load_prefix(conf_path, prefix, err, sizeof(err));
    if (conf == NULL) {
        fprintf(stderr, "%s\n", err);
        if (test_only)
            fprintf(stderr, "paymentsd: configuration file %s test failed\n", conf_path);
        rc = test_only || signal_name != NULL ? 1 : PD_EXIT_FATAL;
        goto done;
    }
    if (test_only) {
        conf_warnings(conf, print_warning);
        if (dump)
            conf_dump(conf, stdout);
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
    free(prefix);
    free(signal_name);
    return rc;
}
