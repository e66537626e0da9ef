/*
 * slow_getaddrinfo.so: a blocking system resolver that a test can see.
 *
 * Loaded with LD_PRELOAD into the processes a test starts: getaddrinfo()
 * of a name that ends with $SLOW_GETADDRINFO_SUFFIX takes a second, is
 * written to $SLOW_GETADDRINFO_LOG as one line "pid name", and resolves to
 * 127.0.0.1; every other name goes to the real getaddrinfo().  A worker
 * that resolves a name this way on each connect stalls for that second,
 * and the log says so (tests/e2e/test_regress_resolve_per_connect.py).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int (*getaddrinfo_fn)(const char *, const char *, const struct addrinfo *,
                              struct addrinfo **);

static int
is_slow(const char *node)
{
    const char *suffix = getenv("SLOW_GETADDRINFO_SUFFIX");
    size_t n, s;

    if (node == NULL || suffix == NULL || suffix[0] == '\0')
        return 0;
    n = strlen(node);
    s = strlen(suffix);
    return n >= s && strcmp(node + n - s, suffix) == 0;
}

int
getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
            struct addrinfo **res)
{
    getaddrinfo_fn real = (getaddrinfo_fn)dlsym(RTLD_NEXT, "getaddrinfo");
    const char *log = getenv("SLOW_GETADDRINFO_LOG");
    struct timespec second = { 1, 0 };

    if (real == NULL)
        return EAI_SYSTEM;
    if (!is_slow(node))
        return real(node, service, hints, res);
    if (log != NULL) {
        FILE *f = fopen(log, "a");

        if (f != NULL) {
            fprintf(f, "%ld %s\n", (long)getpid(), node);
            fclose(f);
        }
    }
    nanosleep(&second, NULL);
    return real("127.0.0.1", service, hints, res);
}
