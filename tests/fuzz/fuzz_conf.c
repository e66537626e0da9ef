/*
 * fuzz_conf: a configuration file through the parsers of both daemons,
 * paymentsd's conf_load() (common/conf.c over common/cfparse.c) and
 * provider-sim's sim_conf_load(), as `paymentsd -t -c FILE` and the sim
 * read it: the input is written to a file in a scratch directory, which
 * the parsers open by name.  Its first line also goes through
 * cf_parse_duration() and cf_parse_size().  The environment is cleared
 * first, so that only the file counts.
 *
 * Listen addresses are resolved with getaddrinfo(); a fuzzer must not send
 * DNS queries for the names it makes up, so this program resolves numeric
 * addresses only (a name does not resolve, which the parsers report like
 * any unknown host).  A conf also names files that conf_load() opens
 * (provider_ca_file); inputs naming anything under /dev, /proc or /sys
 * are skipped, since reading those may block or never end.
 *
 * Properties: a refused file comes with a message; a loaded paymentsd
 * conf keeps the rules its table and conf_load() promise (listen
 * addresses, currencies, secrets that decode, limits, the lock timeout).
 */
#include "config.h"

#include <dlfcn.h>
#include <netdb.h>
#include <unistd.h>

#include "common/conf.h"
#include "common/whsig.h"
#include "provider-sim/conf.h"
#include "tests/fuzz/fuzz.h"

static char dir[200], path[256];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
            struct addrinfo **res)
{
    static int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
    struct addrinfo h;

    if (real == NULL)
        *(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
    FUZZ_ASSERT(real != NULL);
    memset(&h, 0, sizeof(h));
    if (hints != NULL)
        h = *hints;
    h.ai_flags |= AI_NUMERICHOST;
    return real(node, service, &h, res);
}

static void
cleanup(void)
{
    unlink(path);
    rmdir(dir);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *tmp = getenv("TMPDIR");

    (void)argc;
    (void)argv;
    snprintf(dir, sizeof(dir), "%s/fuzz_conf.XXXXXX", tmp != NULL ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        perror("fuzz_conf: mkdtemp");
        exit(1);
    }
    snprintf(path, sizeof(path), "%s/fuzz.conf", dir);
    atexit(cleanup);
    clearenv();
    return 0;
}

static void
check_loaded(const conf_t *c)
{
    whsig_key_t key;
    char err[256];

    FUZZ_ASSERT(c->listen.n >= 1 && c->currencies.n >= 1);
    for (size_t i = 0; i < c->currencies.n; i++) {
        const char *s = c->currencies.items[i];
        FUZZ_ASSERT(strlen(s) == 3 && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == 3);
    }
    for (size_t i = 0; i < c->webhook_secrets.n; i++)
        FUZZ_ASSERT(whsig_key_parse(c->webhook_secrets.items[i], &key, err, sizeof(err)) == 0);
    FUZZ_ASSERT(c->workers >= 1 && c->workers <= 512 && c->db_pool_size >= 1);
    FUZZ_ASSERT(c->max_body_size >= 64 && c->max_body_size <= 64 << 20);
    FUZZ_ASSERT(c->max_amount_cents >= 1 && c->outage_pending_cap_cents >= 0);
    FUZZ_ASSERT(c->webhook_tolerance_ms >= 1000 && c->idempotency_ttl_ms >= 60000);
    FUZZ_ASSERT(c->idempotency_lock_timeout_ms > c->provider_timeout_ms + 2 * c->db_timeout_ms);
    FUZZ_ASSERT(strncmp(c->provider_url, "http://", 7) == 0
                || strncmp(c->provider_url, "https://", 8) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *rest = data;
    size_t left = size;
    char *first = fuzz_line(&rest, &left), err[1024];
    int64_t v;
    conf_t *c;
    sim_conf_t *s;
    FILE *f;

    if (cf_parse_duration(first, &v, err, sizeof(err)) == 0)
        FUZZ_ASSERT(v >= 0);
    if (cf_parse_size(first, &v, err, sizeof(err)) == 0)
        FUZZ_ASSERT(v >= 0);
    free(first);
    if (memmem(data, size, "/dev", 4) != NULL || memmem(data, size, "/proc", 5) != NULL
        || memmem(data, size, "/sys", 4) != NULL)
        return 0;

    f = fopen(path, "w");
    FUZZ_ASSERT(f != NULL);
    FUZZ_ASSERT(fwrite(data, 1, size, f) == size && fclose(f) == 0);

    err[0] = '\0';
    c = conf_load(path, err, sizeof(err));
    if (c != NULL)
        check_loaded(c);
    else
        FUZZ_ASSERT(err[0] != '\0');
    conf_free(c);

    err[0] = '\0';
    s = sim_conf_load(path, err, sizeof(err));
    if (s == NULL)
        FUZZ_ASSERT(err[0] != '\0');
    sim_conf_free(s);
    return 0;
}
